//! `mailgate logout`: forgets the stored tokens of an account (in every store that may hold
//! them), under the account's lock so that a refresh running at the same time cannot put them
//! back.

use mailgate::config::{Config, Provider};
use mailgate::oauth::Flow;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The account (default: default_account, or the only account).
    #[arg(conflicts_with = "all")]
    pub account: Option<String>,
    /// Forget the tokens of every account.
    #[arg(long)]
    pub all: bool,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    let accounts = if args.all {
        config.accounts.values().collect()
    } else {
        vec![config.account(args.account.as_deref())?]
    };
    for account in accounts {
        let removed = mailgate::tokens::forget(&config, &account.name)?;
        if removed.is_empty() {
            println!(
                "{}: no tokens were stored; nothing to forget.",
                account.name
            );
            continue;
        }
        println!(
            "{}: forgot the tokens (removed from {}).",
            account.name,
            removed.join(" and ")
        );
        if account.flow == Flow::ClientCredentials {
            continue;
        }
        let revoke = match account.provider {
            Provider::Office365 => {
                "revoke the user's sessions (Entra admin center → Users → the user → Revoke \
                 sessions)"
            }
            Provider::Gmail => {
                "remove the app's access (Google Account → Security → Third-party apps with \
                 account access)"
            }
            _ => "revoke it at the provider",
        };
        println!(
            "  The provider still accepts the refresh token until it lapses; to revoke it at \
             once, {revoke}."
        );
    }
    Ok(())
}
