//! `mailgate token`.

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _globals: &Globals) -> anyhow::Result<()> {
    anyhow::bail!("`mailgate token` is not implemented yet")
}
