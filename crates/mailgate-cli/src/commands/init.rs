//! `mailgate init`.

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {}

pub fn run(_args: Args, _globals: &Globals) -> anyhow::Result<()> {
    anyhow::bail!("`mailgate init` is not implemented yet")
}
