//! `mailgate login`: signs an account in with its flow and stores the tokens.
//!
//! - authorization code: prints the URL on a line of its own (always, so that it can be copied
//!   from a headless session), opens the browser unless `--no-browser`, and waits for the
//!   redirect on the loopback listener;
//! - device code: prints the provider's message (URL and code) and polls;
//! - client credentials: gets an app token at once.
//!
//! Success prints who is authorized, the granted scopes and when the access token expires;
//! never a token or a secret.

use std::io::Write;
use std::time::Duration;

use anyhow::Context as _;
use mailgate::config::{Account, Config};
use mailgate::oauth::{AuthorizationOptions, Flow, OAuthClient, TokenResponse};
use mailgate::tokens::{TokenManager, TokenSet};
use mailgate::Sysexit;
use time::OffsetDateTime;

use crate::exit::fail;
use crate::Globals;

/// How long the browser sign-in may take by default.
const DEFAULT_TIMEOUT_SECS: u64 = 300;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The account to sign in (default: default_account, or the only account).
    pub account: Option<String>,
    /// Do not open a browser; only print the URL to open.
    #[arg(long)]
    pub no_browser: bool,
    /// How long to wait for the sign-in, in seconds (browser: 300; device code: until the code
    /// expires).
    #[arg(long, value_name = "SECS", value_parser = clap::value_parser!(u64).range(1..))]
    pub timeout: Option<u64>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    let account = config.account(args.account.as_deref())?;
    let endpoints = account.oauth_endpoints()?;
    let client = OAuthClient::new(endpoints)?.with_account(&account.name);
    // Opened before signing in, so that an unusable store fails before the user's effort.
    let manager = TokenManager::new(&config, account)?;
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    let tokens = runtime.block_on(async {
        let tokens = sign_in(&client, account, &args).await?;
        let set = TokenSet::from_response(account.flow, &account.client_id, &tokens);
        manager.save(&set).await?;
        anyhow::Ok(tokens)
    })?;
    report(account, &tokens, &manager.location());
    Ok(())
}

async fn sign_in(
    client: &OAuthClient,
    account: &Account,
    args: &Args,
) -> anyhow::Result<TokenResponse> {
    let mut out = std::io::stdout();
    match account.flow {
        Flow::AuthorizationCode => {
            let options = AuthorizationOptions::default()
                .with_login_hint((!account.user.is_empty()).then(|| account.user.clone()));
            let pending = client.start_authorization(&options).await?;
            let timeout = Duration::from_secs(args.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS));
            let _ = writeln!(
                out,
                "To sign in {} ({}), open this URL in a browser:\n\n{}\n",
                account.name,
                if account.user.is_empty() {
                    "any user"
                } else {
                    &account.user
                },
                pending.url()
            );
            if !args.no_browser {
                match mailgate::oauth::open_in_browser(pending.url()) {
                    Ok(()) => {
                        let _ = writeln!(out, "(A browser was opened with it.)");
                    }
                    Err(e) => {
                        let _ = writeln!(
                            out,
                            "(No browser could be opened: {e}. Open the URL yourself.)"
                        );
                    }
                }
            }
            let _ = writeln!(
                out,
                "Waiting up to {} for the sign-in to come back to {} ...",
                human_duration(timeout),
                pending.redirect_uri()
            );
            let _ = out.flush();
            Ok(pending.finish(timeout).await?)
        }
        Flow::DeviceCode => {
            let device = client.start_device().await?;
            let _ = writeln!(out, "{}", device.message);
            if let Some(complete) = &device.verification_uri_complete {
                let _ = writeln!(out, "(Or open {complete} where the code is filled in.)");
            }
            let _ = writeln!(out, "Waiting for the code to be entered ...");
            let _ = out.flush();
            match args.timeout {
                Some(secs) => {
                    match tokio::time::timeout(
                        Duration::from_secs(secs),
                        client.poll_device(&device),
                    )
                    .await
                    {
                        Ok(result) => Ok(result?),
                        Err(_) => Err(fail(
                            Sysexit::TempFail,
                            anyhow::anyhow!(
                                "nobody entered the device code {} within {secs}s (--timeout); \
                                 run `mailgate login {}` again",
                                device.user_code,
                                account.name
                            ),
                        )),
                    }
                }
                None => Ok(client.poll_device(&device).await?),
            }
        }
        Flow::ClientCredentials => Ok(client.client_credentials().await?),
    }
}

fn report(account: &Account, tokens: &TokenResponse, store: &str) {
    let who = match (&tokens.identity, account.flow) {
        (Some(id), _) => id.clone(),
        (None, Flow::ClientCredentials) => format!(
            "the app {} (app-only, acting for {})",
            account.client_id, account.user
        ),
        (None, _) => format!(
            "the account signed in in the browser (the provider did not name it; add the \
             `openid` scope to see who); SMTP logs in as {}",
            account.user
        ),
    };
    println!();
    println!("Signed in: {} is authorized as {who}.", account.name);
    println!("Scopes granted: {}", tokens.scopes.join(" "));
    println!(
        "Access token expires: {} ({}).",
        format_time(tokens.expires_at),
        until(tokens.expires_at)
    );
    match (&tokens.refresh_token, account.flow) {
        (Some(_), _) => println!(
            "A refresh token is stored: mailgate renews the access token by itself (sign in \
             again if it goes unused for 90 days)."
        ),
        (None, Flow::ClientCredentials) => {
            println!("App-only tokens have no refresh token: mailgate gets a new one when needed.")
        }
        (None, _) => println!(
            "No refresh token was granted (add the offline_access scope): you will have to sign \
             in again when the access token expires."
        ),
    }
    println!("Tokens stored in: {store}");
    if let Some(id) = &tokens.identity {
        if account.flow != Flow::ClientCredentials
            && !account.user.is_empty()
            && !id.eq_ignore_ascii_case(&account.user)
        {
            eprintln!(
                "mailgate: warning: signed in as {id}, but the account's user is {}; SMTP will \
                 refuse the token (535 5.7.3) unless user matches the signed-in mailbox. Sign in \
                 as {} or change user in {}.",
                account.user,
                account.user,
                account.section()
            );
        }
    }
}

fn format_time(t: OffsetDateTime) -> String {
    let fmt =
        time::macros::format_description!("[year]-[month]-[day] [hour]:[minute]:[second] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.to_string())
}

fn until(t: OffsetDateTime) -> String {
    let secs = (t - OffsetDateTime::now_utc()).whole_seconds();
    if secs <= 0 {
        "already expired".into()
    } else {
        format!("in {}", human_duration(Duration::from_secs(secs as u64)))
    }
}

fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        1 => "1 second".into(),
        0..=89 => format!("{s} seconds"),
        90..=5399 => format!("{} minutes", (s + 30) / 60),
        _ => format!("{:.1} hours", s as f64 / 3600.0),
    }
}
