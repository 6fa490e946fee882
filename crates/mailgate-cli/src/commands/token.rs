//! `mailgate token`: prints a valid access token, alone, on stdout, for other tools
//! (`msmtp`: `passwordeval "mailgate token work"`). Refreshes it first when it expires within
//! five minutes (or `--min-valid`); the rotated refresh token is saved before it is printed.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use mailgate::config::Config;
use mailgate::tokens::TokenManager;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The account (default: default_account, or the only account).
    pub account: Option<String>,
    /// Refresh first when the token expires within this many seconds.
    #[arg(long, value_name = "SECS", default_value_t = 300)]
    pub min_valid: u64,
    /// Get a new access token even though the stored one is still valid.
    #[arg(long)]
    pub force: bool,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    let account = config.account(args.account.as_deref())?;
    let manager = TokenManager::new(&config, account)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let token = runtime.block_on(async {
        if args.force {
            manager.force_refresh().await
        } else {
            manager
                .access_token(Duration::from_secs(args.min_valid))
                .await
        }
    })?;
    let mut out = std::io::stdout().lock();
    writeln!(out, "{}", token.expose())
        .and_then(|()| out.flush())
        .context("cannot write the token to standard output")?;
    Ok(())
}
