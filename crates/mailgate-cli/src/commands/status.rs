//! `mailgate status`: per account, its flow, who is signed in, where the tokens are stored,
//! whether a refresh token is stored, when the access token expires, how old the refresh token
//! is, and a warning when it nears the provider's inactivity lapse. Never a token.

use anyhow::Context as _;
use mailgate::config::{Account, Config};
use mailgate::oauth::Flow;
use mailgate::sysexits::HasSysexit;
use mailgate::tokens::{StoreKind, TokenManager, TokenSet};
use mailgate::Sysexit;
use serde::Serialize;
use time::OffsetDateTime;

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Only this account (default: all accounts).
    pub account: Option<String>,
    /// Print JSON (`{"accounts": [...]}`) instead of text.
    #[arg(long)]
    pub json: bool,
}

/// What `status --json` prints for one account.
#[derive(Serialize, Debug)]
struct AccountStatus {
    account: String,
    provider: String,
    flow: Flow,
    user: String,
    default: bool,
    /// `keyring` or `file`; null when the store could not be opened.
    store: Option<StoreKind>,
    store_location: Option<String>,
    logged_in: bool,
    identity: Option<String>,
    scopes: Vec<String>,
    refresh_token_stored: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    refresh_token_issued_at: Option<OffsetDateTime>,
    refresh_token_age_days: Option<i64>,
    #[serde(with = "time::serde::rfc3339::option")]
    access_token_expires_at: Option<OffsetDateTime>,
    access_token_valid: bool,
    #[serde(with = "time::serde::rfc3339::option")]
    logged_in_at: Option<OffsetDateTime>,
    warnings: Vec<String>,
    /// Why the tokens could not be read, when they could not.
    error: Option<String>,
    /// The exit status that error deserves.
    #[serde(skip)]
    error_status: Option<Sysexit>,
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    let accounts = config.accounts_named(args.account.as_deref())?;
    let default = config.account(None).ok().map(|a| a.name.clone());
    let statuses: Vec<AccountStatus> = accounts
        .into_iter()
        .map(|a| status_of(&config, a, default.as_deref() == Some(a.name.as_str())))
        .collect();
    if args.json {
        let out = serde_json::json!({
            "config": config.path,
            "state_dir": config.state_dir,
            "token_store": config.token_store.as_str(),
            "accounts": statuses,
        });
        println!(
            "{}",
            serde_json::to_string_pretty(&out).context("cannot format the status as JSON")?
        );
    } else {
        print_text(&config, &statuses);
    }
    let failed: Vec<&AccountStatus> = statuses.iter().filter(|s| s.error.is_some()).collect();
    match failed.first() {
        None => Ok(()),
        Some(first) => Err(fail(
            first.error_status.unwrap_or(Sysexit::Software),
            anyhow::anyhow!(
                "the tokens of {} could not be read (see above)",
                failed
                    .iter()
                    .map(|s| s.account.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        )),
    }
}

fn status_of(config: &Config, account: &Account, default: bool) -> AccountStatus {
    let mut s = AccountStatus {
        account: account.name.clone(),
        provider: account.provider.to_string(),
        flow: account.flow,
        user: account.user.clone(),
        default,
        store: None,
        store_location: None,
        logged_in: false,
        identity: None,
        scopes: Vec::new(),
        refresh_token_stored: false,
        refresh_token_issued_at: None,
        refresh_token_age_days: None,
        access_token_expires_at: None,
        access_token_valid: false,
        logged_in_at: None,
        warnings: Vec::new(),
        error: None,
        error_status: None,
    };
    let manager = match TokenManager::new(config, account) {
        Ok(m) => m,
        Err(e) => {
            s.error_status = Some(e.sysexit());
            s.error = Some(format!("{:#}", anyhow::Error::new(e)));
            return s;
        }
    };
    s.store = Some(manager.store().kind());
    s.store_location = Some(manager.location());
    let tokens = match manager.load() {
        Ok(t) => t,
        Err(e) => {
            s.error_status = Some(e.sysexit());
            s.error = Some(format!("{:#}", anyhow::Error::new(e)));
            return s;
        }
    };
    let Some(t) = tokens else {
        return s;
    };
    fill(&mut s, account, &t);
    s
}

fn fill(s: &mut AccountStatus, account: &Account, t: &TokenSet) {
    let now = OffsetDateTime::now_utc();
    s.logged_in = true;
    s.identity = t.identity.clone();
    s.scopes = t.scopes.clone();
    s.refresh_token_stored = t.refresh_token.is_some();
    if s.refresh_token_stored {
        s.refresh_token_issued_at = Some(t.refresh_token_issued_at.unwrap_or(t.obtained_at));
        s.refresh_token_age_days = t.refresh_token_age().map(|a| a.whole_days());
    }
    s.access_token_expires_at = t.expires_at;
    s.access_token_valid = t.access_token.is_some() && t.expires_at.is_some_and(|e| e > now);
    s.logged_in_at = Some(t.obtained_at);
    if let Some(w) = t.lapse_warning(account.provider, &account.name) {
        s.warnings.push(w);
    }
    if t.client_id != account.client_id {
        s.warnings.push(format!(
            "the tokens were issued to client {}, but the account now uses {}: run `mailgate \
             login {}`",
            t.client_id, account.client_id, account.name
        ));
    }
    if account.flow != Flow::ClientCredentials && !s.refresh_token_stored {
        s.warnings.push(format!(
            "no refresh token is stored (the login did not grant offline_access): once the \
             access token expires, run `mailgate login {}` again",
            account.name
        ));
    }
    if let Some(id) = &t.identity {
        if account.flow != Flow::ClientCredentials && !id.eq_ignore_ascii_case(&account.user) {
            s.warnings.push(format!(
                "signed in as {id}, but user is {}: SMTP refuses a token of another mailbox \
                 (535 5.7.3)",
                account.user
            ));
        }
    }
}

fn print_text(config: &Config, statuses: &[AccountStatus]) {
    println!("Config: {}", config.path.display());
    if statuses.is_empty() {
        println!("No accounts: run `mailgate init` to add one.");
    }
    for s in statuses {
        println!();
        println!(
            "{}{} ({}, {})",
            s.account,
            if s.default { " [default]" } else { "" },
            s.provider,
            flow_name(s.flow)
        );
        line("user", &s.user);
        if let Some(loc) = &s.store_location {
            line("tokens stored in", loc);
        }
        if let Some(e) = &s.error {
            line("error", e);
            continue;
        }
        if !s.logged_in {
            if s.flow == Flow::ClientCredentials {
                line(
                    "status",
                    "no app token yet (one is fetched on first use, or run `mailgate login`)",
                );
            } else {
                line(
                    "status",
                    &format!("not signed in: run `mailgate login {}`", s.account),
                );
            }
            continue;
        }
        match &s.identity {
            Some(id) => line("signed in as", id),
            None if s.flow == Flow::ClientCredentials => line("signed in as", "the app (app-only)"),
            None => line("signed in as", "(the provider did not say)"),
        }
        if s.flow != Flow::ClientCredentials {
            let rt = match (s.refresh_token_stored, s.refresh_token_age_days) {
                (true, Some(days)) => format!(
                    "stored, issued {} ({})",
                    days_ago(days),
                    s.refresh_token_issued_at
                        .map(format_time)
                        .unwrap_or_default()
                ),
                (true, None) => "stored".into(),
                (false, _) => "none".into(),
            };
            line("refresh token", &rt);
        }
        let at = match s.access_token_expires_at {
            Some(exp) if s.access_token_valid => {
                format!("valid until {} ({})", format_time(exp), relative(exp))
            }
            Some(exp) => format!(
                "expired {} ({}); renewed on next use",
                format_time(exp),
                relative(exp)
            ),
            None => "none".into(),
        };
        line("access token", &at);
        if !s.scopes.is_empty() {
            line("scopes", &s.scopes.join(" "));
        }
        for w in &s.warnings {
            line("warning", w);
        }
    }
}

fn line(label: &str, value: &str) {
    println!("  {:<17} {value}", format!("{label}:"));
}

fn flow_name(flow: Flow) -> &'static str {
    match flow {
        Flow::AuthorizationCode => "authorization_code",
        Flow::DeviceCode => "device_code",
        Flow::ClientCredentials => "client_credentials",
    }
}

fn days_ago(days: i64) -> String {
    match days {
        0 => "today".into(),
        1 => "1 day ago".into(),
        d => format!("{d} days ago"),
    }
}

fn format_time(t: OffsetDateTime) -> String {
    let fmt = time::macros::format_description!("[year]-[month]-[day] [hour]:[minute] UTC");
    t.to_offset(time::UtcOffset::UTC)
        .format(&fmt)
        .unwrap_or_else(|_| t.to_string())
}

fn relative(t: OffsetDateTime) -> String {
    let secs = (t - OffsetDateTime::now_utc()).whole_seconds();
    let span = |s: i64| match s {
        0..=89 => format!("{s} seconds"),
        90..=5399 => format!("{} minutes", (s + 30) / 60),
        5400..=172_799 => format!("{} hours", (s + 1800) / 3600),
        _ => format!("{} days", s / 86_400),
    };
    if secs >= 0 {
        format!("in {}", span(secs))
    } else {
        format!("{} ago", span(-secs))
    }
}
