//! `mailgate sendmail` and the `sendmail` link: sendmail's own argument syntax.

use std::ffi::OsString;

use crate::Globals;

/// Everything after `mailgate sendmail`, parsed by [`run_argv`] with sendmail's rules.
#[derive(clap::Args, Debug)]
pub struct Args {
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    pub argv: Vec<OsString>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    run_argv(&args.argv, globals)
}

/// Runs with sendmail's argument syntax (`-t -i -f FROM -F NAME -oi -bm RCPT...`).
pub fn run_argv(_argv: &[OsString], _globals: &Globals) -> anyhow::Result<()> {
    anyhow::bail!("`mailgate sendmail` is not implemented yet")
}
