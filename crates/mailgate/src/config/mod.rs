//! Accounts, provider presets and where files live.
//!
//! The config is a TOML file (see [`paths::config_path`] for where it is looked for):
//!
//! ```toml
//! # state_dir = "/var/lib/mailgate"      # default: $XDG_STATE_HOME/mailgate
//! token_store = "auto"                   # auto | keyring | file
//! default_account = "work"
//!
//! [accounts.work]
//! provider = "office365"                 # office365 | gmail | custom
//! tenant = "contoso.onmicrosoft.com"
//! client_id = "0d5c7a43-6f0e-4b8e-9c1d-7e2a3b4c5d6e"
//! client_secret_env = "MAILGATE_SECRET"  # or client_secret / client_secret_command
//! user = "alice@contoso.com"
//! ```
//!
//! Provider presets ([`presets`]) fill in every endpoint, scope and SMTP setting the account does
//! not set. Loading validates everything at once and refuses what would be unsafe (plain `http://`
//! endpoints or `smtp_security = "plain"` to a non-loopback host) or cannot work (client
//! credentials against `common`); every error names the file, the section, the key and what is
//! allowed. [`edit::ConfigEditor`] changes the file while keeping its comments.
//!
//! Adding a top-level table (`[relay]`, `[rules.NAME]`): add a field to [`Config`], a name to
//! [`TOP_LEVEL_KEYS`] and an arm to the `match` in [`Config::parse`] that reads it with the
//! helpers of [`Section`].

pub mod edit;
pub mod paths;
pub mod presets;

use std::collections::BTreeMap;
use std::fmt;
use std::net::IpAddr;
use std::ops::Range;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;
use toml_edit::{Item, TableLike};

use crate::oauth::{Flow, OAuthEndpoints};
use crate::smtp::{AuthMechanism, Security, SmtpSettings};
use crate::sysexits::{HasSysexit, Sysexit};
use crate::Secret;

pub use presets::Preset;

/// Keys allowed at the top level of the config file.
pub const TOP_LEVEL_KEYS: &[&str] = &[
    "state_dir",
    "token_store",
    "default_account",
    "accounts",
    "rules",
    "relay",
];

/// Keys allowed in an `[accounts.NAME]` table.
pub const ACCOUNT_KEYS: &[&str] = &[
    "provider",
    "tenant",
    "client_id",
    "client_secret",
    "client_secret_env",
    "client_secret_command",
    "flow",
    "authorize_url",
    "token_url",
    "device_authorization_url",
    "scopes",
    "redirect_uri",
    "redirect_port",
    "user",
    "from",
    "smtp_host",
    "smtp_port",
    "smtp_security",
    "smtp_auth",
    "ca_file",
    "max_connections",
    "messages_per_minute",
];

const PROVIDERS: &[&str] = &["office365", "gmail", "custom"];
const FLOWS: &[&str] = &["authorization_code", "device_code", "client_credentials"];
const SECURITIES: &[&str] = &["starttls", "tls", "plain"];
const MECHANISMS: &[&str] = &["xoauth2", "oauthbearer"];
const TOKEN_STORES: &[&str] = &["auto", "keyring", "file"];

/// Why a config could not be found, read or accepted. Every variant exits 78 (`EX_CONFIG`).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// There is no config file where one was looked for.
    #[error(
        "no config file at {path}: run `mailgate init` to create one, or pass --config FILE \
         (or set MAILGATE_CONFIG)"
    )]
    NotFound { path: PathBuf },
    /// The file exists but cannot be read.
    #[error("config {path}: cannot read it: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The file is not valid TOML.
    #[error("config {path}: not valid TOML: {message}")]
    Syntax { path: PathBuf, message: String },
    /// A key has a value that is not allowed (or is not allowed at all).
    #[error("config {path}: {section}{what}: {problem}{}", line_suffix(*line))]
    Invalid {
        path: PathBuf,
        /// `[accounts.work] `, or empty at the top level.
        section: String,
        /// The key and its value as written (`smtp_security = "ssl"`), secrets left out.
        what: String,
        /// What is wrong and what is allowed.
        problem: String,
        line: Option<usize>,
    },
    /// A key the account needs is not set and no preset provides it.
    #[error("config {path}: {section}{key} is missing: {why}")]
    Missing {
        path: PathBuf,
        section: String,
        key: String,
        why: String,
    },
    /// A command names an account the config does not have.
    #[error("config {path}: no account named {name:?} (accounts: {known})")]
    UnknownAccount {
        path: PathBuf,
        name: String,
        known: String,
    },
    /// No account was named and the config has no `default_account` to fall back on.
    #[error("config {path}: which account? Name one (accounts: {known}) or set default_account")]
    NoDefaultAccount { path: PathBuf, known: String },
    /// The config has no accounts at all.
    #[error("config {path}: no accounts; run `mailgate init` to add one")]
    NoAccounts { path: PathBuf },
    /// The client secret could not be obtained from its environment variable or command.
    #[error("config {path}: [accounts.{account}] {key}: {problem}")]
    Secret {
        path: PathBuf,
        account: String,
        key: &'static str,
        problem: String,
    },
    /// No home directory to derive the default locations from.
    #[error("cannot find the {what}: no home directory; pass --config FILE and set state_dir")]
    NoHome { what: &'static str },
    /// Writing the config file failed.
    #[error("cannot write config {path}: {source}")]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

fn line_suffix(line: Option<usize>) -> String {
    line.map(|l| format!(" (line {l})")).unwrap_or_default()
}

impl HasSysexit for ConfigError {
    fn sysexit(&self) -> Sysexit {
        match self {
            ConfigError::Write { .. } => Sysexit::CantCreat,
            _ => Sysexit::Config,
        }
    }
}

/// Which kind of provider an account talks to; decides the preset.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Provider {
    /// Microsoft 365 / Exchange Online with Entra ID.
    #[default]
    #[serde(rename = "office365")]
    Office365,
    /// Google Workspace / Gmail.
    Gmail,
    /// Any OAuth2 server and SMTP server: endpoints, scopes and host must be given.
    Custom,
}

impl Provider {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            Provider::Office365 => "office365",
            Provider::Gmail => "gmail",
            Provider::Custom => "custom",
        }
    }
}

impl fmt::Display for Provider {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where tokens are kept (`token_store`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum TokenStoreKind {
    /// The OS keyring when one really works (and persists), else a 0600 file.
    #[default]
    Auto,
    /// The OS keyring; an error when there is none.
    Keyring,
    /// A 0600 file under the state directory.
    File,
}

impl TokenStoreKind {
    /// The name used in the config file.
    pub fn as_str(self) -> &'static str {
        match self {
            TokenStoreKind::Auto => "auto",
            TokenStoreKind::Keyring => "keyring",
            TokenStoreKind::File => "file",
        }
    }
}

/// Where an account's client secret comes from.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub enum SecretSource {
    /// A public client: no secret.
    #[default]
    None,
    /// `client_secret`: the Value, in the config file itself.
    Value(Secret),
    /// `client_secret_env`: the name of an environment variable holding the Value.
    Env(String),
    /// `client_secret_command`: a command whose standard output (trimmed) is the Value. A string
    /// runs through the shell (`sh -c`, `cmd /C` on Windows); an array runs as argv.
    Command(SecretCommand),
}

/// How `client_secret_command` is run.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretCommand {
    /// Run through the shell.
    Shell(String),
    /// Program and arguments, no shell.
    Argv(Vec<String>),
}

impl SecretSource {
    /// Whether the account has a secret configured at all (a confidential client).
    pub fn is_configured(&self) -> bool {
        !matches!(self, SecretSource::None)
    }

    /// The config key that sets it, for messages.
    pub fn key(&self) -> Option<&'static str> {
        match self {
            SecretSource::None => None,
            SecretSource::Value(_) => Some("client_secret"),
            SecretSource::Env(_) => Some("client_secret_env"),
            SecretSource::Command(_) => Some("client_secret_command"),
        }
    }
}

/// A loaded, validated config.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Config {
    /// The file it was loaded from (named in every error).
    pub path: PathBuf,
    /// Where tokens (and later the spool) live; `state_dir` or the platform default.
    pub state_dir: PathBuf,
    pub token_store: TokenStoreKind,
    pub default_account: Option<String>,
    /// Accounts by name, in name order.
    pub accounts: BTreeMap<String, Account>,
    /// File-transfer rules (`[rules.NAME]`) by name, validated against the accounts.
    pub rules: BTreeMap<String, crate::rules::RuleConfig>,
    /// The `[relay]` table, when the file has one (`mailgate relay` uses defaults otherwise).
    pub relay: Option<crate::relay::RelayConfig>,
}

/// One `[accounts.NAME]` table with the provider's preset applied: every field is final.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct Account {
    pub name: String,
    pub provider: Provider,
    /// The Entra tenant (office365 only): a domain, a GUID, `organizations` or `common`.
    pub tenant: Option<String>,
    pub client_id: String,
    pub client_secret: SecretSource,
    pub flow: Flow,
    pub authorize_url: String,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub scopes: Vec<String>,
    /// The redirect URI registered on the app. With `redirect_port = 0` the listener picks a free
    /// port and the URI's port is replaced by it (Entra ignores the port of loopback URIs).
    pub redirect_uri: String,
    pub redirect_port: u16,
    /// The SMTP login identity (the mailbox that signs in, or the mailbox an app token acts for).
    pub user: String,
    /// The default sender address; `user` unless set.
    pub from: String,
    pub smtp_host: String,
    pub smtp_port: u16,
    pub smtp_security: Security,
    pub smtp_auth: AuthMechanism,
    /// An extra trust anchor (PEM) for HTTPS and SMTP TLS.
    pub ca_file: Option<PathBuf>,
    /// Concurrent SMTP connections the relay opens for this account.
    pub max_connections: u32,
    /// Messages per minute the relay sends for this account; 0 = no pacing.
    pub messages_per_minute: u32,
    /// The config file it came from, for error messages.
    pub config_path: PathBuf,
}

impl Config {
    /// Finds (see [`paths::config_path`]) and loads the config.
    pub fn load(explicit: Option<&Path>) -> Result<Config, ConfigError> {
        let path = paths::config_path(explicit)?;
        Config::load_file(&path)
    }

    /// Loads the config at `path`.
    pub fn load_file(path: &Path) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(ConfigError::NotFound {
                    path: path.to_path_buf(),
                })
            }
            Err(source) => {
                return Err(ConfigError::Read {
                    path: path.to_path_buf(),
                    source,
                })
            }
        };
        let config = Config::parse(&text, path)?;
        warn_if_secret_readable(&config);
        Ok(config)
    }

    /// Parses and validates config text; `path` is used for messages and to resolve relative
    /// paths.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let doc =
            toml_edit::Document::parse(text.to_string()).map_err(|e| ConfigError::Syntax {
                path: path.to_path_buf(),
                message: syntax_message(&e, text),
            })?;
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        let top = Section::new(path, text, "");
        let mut state_dir = None;
        let mut token_store = TokenStoreKind::Auto;
        let mut default_account: Option<(String, Option<usize>)> = None;
        let mut accounts = BTreeMap::new();
        let mut rules_item = None;
        let mut relay = None;
        let root = doc.as_table();
        for (key, item) in root.iter() {
            let line = top.key_line(root, key);
            match key {
                "state_dir" => {
                    state_dir = Some(paths::resolve_path(&top.string(key, item, line)?, &base))
                }
                "token_store" => token_store = top.choice(key, item, line, TOKEN_STORES)?,
                "default_account" => default_account = Some((top.string(key, item, line)?, line)),
                "accounts" => {
                    let table = top.table(key, item, line)?;
                    for (name, item) in table.iter() {
                        let line = top.key_line(table, name);
                        let account = parse_account(path, text, &base, name, item, line)?;
                        accounts.insert(name.to_string(), account);
                    }
                }
                // Read after the loop: rules name accounts, which may come later in the file.
                "rules" => rules_item = Some((item, line)),
                "relay" => {
                    relay = Some(crate::relay::RelayConfig::parse(
                        path, text, &base, item, line,
                    )?)
                }
                other => return Err(top.unknown_key(other, item, line, TOP_LEVEL_KEYS)),
            }
        }
        let state_dir = match state_dir {
            Some(d) => d,
            None => paths::default_state_dir()?,
        };
        if let Some((name, line)) = &default_account {
            if !accounts.contains_key(name) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    section: String::new(),
                    what: format!("default_account = {name:?}"),
                    problem: format!("no such account (accounts: {})", names(&accounts)),
                    line: *line,
                });
            }
        }
        let rules = match rules_item {
            Some((item, line)) => crate::rules::config::parse_rules(
                &crate::rules::config::RulesContext {
                    path,
                    text,
                    base: &base,
                    accounts: &accounts,
                    default_account: default_account.as_ref().map(|(n, _)| n.as_str()),
                },
                item,
                line,
            )?,
            None => BTreeMap::new(),
        };
        if let Some(r) = &relay {
            r.check_accounts(
                path,
                &accounts,
                default_account.as_ref().map(|(n, _)| n.as_str()),
            )?;
        }
        Ok(Config {
            path: path.to_path_buf(),
            state_dir,
            token_store,
            default_account: default_account.map(|(n, _)| n),
            accounts,
            rules,
            relay,
        })
    }

    /// The account called `name`, or with `None` the default account (`default_account`, or the
    /// only account there is).
    pub fn account(&self, name: Option<&str>) -> Result<&Account, ConfigError> {
        if self.accounts.is_empty() {
            return Err(ConfigError::NoAccounts {
                path: self.path.clone(),
            });
        }
        let name = match name.or(self.default_account.as_deref()) {
            Some(n) => n,
            None if self.accounts.len() == 1 => {
                return Ok(self.accounts.values().next().expect("one account"))
            }
            None => {
                return Err(ConfigError::NoDefaultAccount {
                    path: self.path.clone(),
                    known: names(&self.accounts),
                })
            }
        };
        self.accounts
            .get(name)
            .ok_or_else(|| ConfigError::UnknownAccount {
                path: self.path.clone(),
                name: name.to_string(),
                known: names(&self.accounts),
            })
    }

    /// The accounts a command about "all accounts" works on: `name` alone when given, else all.
    pub fn accounts_named(&self, name: Option<&str>) -> Result<Vec<&Account>, ConfigError> {
        match name {
            Some(n) => Ok(vec![self.account(Some(n))?]),
            None => Ok(self.accounts.values().collect()),
        }
    }

    /// Where the tokens of all accounts live when stored in files.
    pub fn tokens_dir(&self) -> PathBuf {
        self.state_dir.join("tokens")
    }
}

fn names(accounts: &BTreeMap<String, Account>) -> String {
    if accounts.is_empty() {
        return "none".into();
    }
    accounts.keys().cloned().collect::<Vec<_>>().join(", ")
}

fn syntax_message(e: &toml_edit::TomlError, text: &str) -> String {
    let first = e.message().lines().next().unwrap_or("").trim().to_string();
    match e.span() {
        Some(span) => {
            let (line, col) = line_col(text, span.start);
            format!("line {line}, column {col}: {first}")
        }
        None => first,
    }
}

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rfind('\n').map(|i| offset - i).unwrap_or(offset + 1);
    (line, col)
}

#[cfg(unix)]
fn warn_if_secret_readable(config: &Config) {
    use std::os::unix::fs::PermissionsExt;
    let inline = config
        .accounts
        .values()
        .any(|a| matches!(a.client_secret, SecretSource::Value(_)));
    if !inline {
        return;
    }
    if let Ok(meta) = std::fs::metadata(&config.path) {
        if meta.permissions().mode() & 0o077 != 0 {
            tracing::warn!(
                "config {} holds a client_secret and other users can read it: run `chmod 600 {}` \
                 (or use client_secret_env / client_secret_command)",
                config.path.display(),
                config.path.display()
            );
        }
    }
}

#[cfg(not(unix))]
fn warn_if_secret_readable(_config: &Config) {}

/// Reads the keys of one section (a table) of the config file and builds errors that name the
/// file, the section, the key and the line. New top-level tables use it the same way accounts do.
pub struct Section<'a> {
    path: &'a Path,
    text: &'a str,
    /// `[accounts.work] ` (with the trailing space), or empty at the top level.
    label: String,
}

impl<'a> Section<'a> {
    /// A section named `name` (`accounts.work`), or the top level when `name` is empty.
    pub fn new(path: &'a Path, text: &'a str, name: &str) -> Section<'a> {
        let label = if name.is_empty() {
            String::new()
        } else {
            format!("[{name}] ")
        };
        Section { path, text, label }
    }

    /// The line of `key` in `table`, when the parser kept its position.
    pub fn key_line(&self, table: &dyn TableLike, key: &str) -> Option<usize> {
        let (k, item) = table.get_key_value(key)?;
        let span: Option<Range<usize>> = k.span().or_else(|| item.span());
        span.map(|s| line_col(self.text, s.start).0)
    }

    /// An "invalid value" error for `key`.
    pub fn invalid(
        &self,
        key: &str,
        item: &Item,
        line: Option<usize>,
        problem: impl Into<String>,
    ) -> ConfigError {
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            section: self.label.clone(),
            what: format!("{key} = {}", show(key, item)),
            problem: problem.into(),
            line,
        }
    }

    /// An "unknown key" error, with the closest allowed key as a suggestion.
    pub fn unknown_key(
        &self,
        key: &str,
        _item: &Item,
        line: Option<usize>,
        allowed: &[&str],
    ) -> ConfigError {
        let hint = allowed
            .iter()
            .map(|a| (edit_distance(key, a), *a))
            .filter(|(d, _)| *d <= 2)
            .min()
            .map(|(_, a)| format!(" (did you mean {a}?)"))
            .unwrap_or_default();
        ConfigError::Invalid {
            path: self.path.to_path_buf(),
            section: self.label.clone(),
            what: key.to_string(),
            problem: format!("unknown key{hint}; allowed keys: {}", allowed.join(", ")),
            line,
        }
    }

    /// A "missing key" error.
    pub fn missing(&self, key: &str, why: impl Into<String>) -> ConfigError {
        ConfigError::Missing {
            path: self.path.to_path_buf(),
            section: self.label.clone(),
            key: key.to_string(),
            why: why.into(),
        }
    }

    /// A string value.
    pub fn string(
        &self,
        key: &str,
        item: &Item,
        line: Option<usize>,
    ) -> Result<String, ConfigError> {
        match item.as_str() {
            Some(s) if !s.trim().is_empty() => Ok(s.trim().to_string()),
            Some(_) => Err(self.invalid(key, item, line, "must not be empty")),
            None => Err(self.invalid(key, item, line, "expected a string (in quotes)")),
        }
    }

    /// A duration: `"30s"`, `"2h"`, `"1h 30m"`, `"2d"`, `"500ms"`, or a non-negative number of
    /// seconds. Shared by every table with timing keys (`[relay]`, `[rules.*]`).
    pub fn duration(
        &self,
        key: &str,
        item: &Item,
        line: Option<usize>,
    ) -> Result<std::time::Duration, ConfigError> {
        const EXPECTED: &str =
            "expected a duration such as \"30s\", \"5m\", \"2h\", \"2d\" (or seconds as a number)";
        if let Some(n) = item.as_integer() {
            return u64::try_from(n)
                .map(std::time::Duration::from_secs)
                .map_err(|_| {
                    self.invalid(key, item, line, format!("must not be negative; {EXPECTED}"))
                });
        }
        if let Some(f) = item.as_float() {
            if f.is_finite() && f >= 0.0 {
                return Ok(std::time::Duration::from_secs_f64(f));
            }
            return Err(self.invalid(key, item, line, format!("must not be negative; {EXPECTED}")));
        }
        let Some(text) = item.as_str() else {
            return Err(self.invalid(key, item, line, EXPECTED));
        };
        humantime::parse_duration(text.trim())
            .map_err(|e| self.invalid(key, item, line, format!("{e}; {EXPECTED}")))
    }

    /// An integer in `0..=max`.
    pub fn integer(
        &self,
        key: &str,
        item: &Item,
        line: Option<usize>,
        max: i64,
    ) -> Result<i64, ConfigError> {
        match item.as_integer() {
            Some(n) if (0..=max).contains(&n) => Ok(n),
            Some(_) => Err(self.invalid(key, item, line, format!("expected 0 to {max}"))),
            None => Err(self.invalid(
                key,
                item,
                line,
                format!("expected a number from 0 to {max}"),
            )),
        }
    }

    /// One of the `allowed` words, turned into `T` through its serde names.
    pub fn choice<T: DeserializeOwned>(
        &self,
        key: &str,
        item: &Item,
        line: Option<usize>,
        allowed: &[&str],
    ) -> Result<T, ConfigError> {
        let expected = || format!("expected one of {}", allowed.join(", "));
        let s = item
            .as_str()
            .ok_or_else(|| self.invalid(key, item, line, expected()))?;
        if !allowed.contains(&s) {
            return Err(self.invalid(key, item, line, expected()));
        }
        let de = serde::de::value::StrDeserializer::<serde::de::value::Error>::new(s);
        T::deserialize(de).map_err(|_| self.invalid(key, item, line, expected()))
    }

    /// A list of strings: a TOML array, or one string of space-separated words.
    pub fn words(
        &self,
        key: &str,
        item: &Item,
        line: Option<usize>,
    ) -> Result<Vec<String>, ConfigError> {
        let words: Vec<String> = if let Some(s) = item.as_str() {
            s.split_whitespace().map(String::from).collect()
        } else if let Some(arr) = item.as_array() {
            let mut out = Vec::new();
            for v in arr.iter() {
                match v.as_str() {
                    Some(s) if !s.trim().is_empty() => out.push(s.trim().to_string()),
                    _ => {
                        return Err(self.invalid(key, item, line, "expected a list of strings"));
                    }
                }
            }
            out
        } else {
            return Err(self.invalid(
                key,
                item,
                line,
                "expected a list of strings, or one string of space-separated words",
            ));
        };
        if words.is_empty() {
            return Err(self.invalid(key, item, line, "must not be empty"));
        }
        Ok(words)
    }

    /// A sub-table (`[x]`, `[x.y]` or an inline table).
    pub fn table<'i>(
        &self,
        key: &str,
        item: &'i Item,
        line: Option<usize>,
    ) -> Result<&'i dyn TableLike, ConfigError> {
        item.as_table_like()
            .ok_or_else(|| self.invalid(key, item, line, "expected a table"))
    }
}

/// How a value is shown in an error: as written, except secrets.
fn show(key: &str, item: &Item) -> String {
    if key == "client_secret" {
        return "<secret, not shown>".into();
    }
    match item {
        Item::Value(v) => v.clone().decorated("", "").to_string(),
        Item::Table(_) | Item::ArrayOfTables(_) => "<table>".into(),
        Item::None => "<nothing>".into(),
    }
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}

/// An account table's values as written, before the preset is applied.
#[derive(Default)]
struct RawAccount {
    provider: Option<Provider>,
    tenant: Option<(String, Option<usize>)>,
    client_id: Option<String>,
    secrets: Vec<(&'static str, SecretSource, Option<usize>)>,
    flow: Option<Flow>,
    authorize_url: Option<(String, Option<usize>)>,
    token_url: Option<(String, Option<usize>)>,
    device_authorization_url: Option<(String, Option<usize>)>,
    scopes: Option<Vec<String>>,
    redirect_uri: Option<(String, Option<usize>)>,
    redirect_port: Option<(u16, Option<usize>)>,
    user: Option<(String, Option<usize>)>,
    from: Option<(String, Option<usize>)>,
    smtp_host: Option<(String, Option<usize>)>,
    smtp_port: Option<u16>,
    smtp_security: Option<(Security, Option<usize>)>,
    smtp_auth: Option<AuthMechanism>,
    ca_file: Option<(PathBuf, Option<usize>)>,
    max_connections: Option<u32>,
    messages_per_minute: Option<u32>,
}

fn valid_account_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_' || c == '.')
        && !name.starts_with('.')
}

fn parse_account(
    path: &Path,
    text: &str,
    base: &Path,
    name: &str,
    item: &Item,
    name_line: Option<usize>,
) -> Result<Account, ConfigError> {
    let accounts = Section::new(path, text, "accounts");
    if !valid_account_name(name) {
        return Err(ConfigError::Invalid {
            path: path.to_path_buf(),
            section: String::new(),
            what: format!("[accounts.{name}]"),
            problem: "an account name may only use letters, digits, '-', '_' and '.'".into(),
            line: name_line,
        });
    }
    let table = accounts.table(name, item, name_line)?;
    let s = Section::new(path, text, &format!("accounts.{name}"));
    let mut raw = RawAccount::default();
    for (key, item) in table.iter() {
        let line = s.key_line(table, key);
        let str_ = || s.string(key, item, line);
        match key {
            "provider" => raw.provider = Some(s.choice(key, item, line, PROVIDERS)?),
            "tenant" => {
                let t = str_()?;
                if !t
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '.' || c == '-')
                {
                    return Err(s.invalid(
                        key,
                        item,
                        line,
                        "expected a tenant domain (contoso.onmicrosoft.com), a tenant id (GUID), \
                         organizations or common",
                    ));
                }
                raw.tenant = Some((t, line));
            }
            "client_id" => raw.client_id = Some(str_()?),
            "client_secret" => {
                let v = item
                    .as_str()
                    .filter(|v| !v.trim().is_empty())
                    .ok_or_else(|| {
                        s.invalid(key, item, line, "expected the secret's Value as a string")
                    })?;
                raw.secrets.push((
                    "client_secret",
                    SecretSource::Value(Secret::new(v.trim())),
                    line,
                ));
            }
            "client_secret_env" => {
                let v = str_()?;
                if v.contains('=') || v.contains(char::is_whitespace) {
                    return Err(s.invalid(
                        key,
                        item,
                        line,
                        "expected the NAME of an environment variable (e.g. MAILGATE_SECRET), \
                         not its value",
                    ));
                }
                raw.secrets
                    .push(("client_secret_env", SecretSource::Env(v), line));
            }
            "client_secret_command" => {
                let cmd =
                    if let Some(arr) = item.as_array() {
                        let argv: Option<Vec<String>> =
                            arr.iter().map(|v| v.as_str().map(String::from)).collect();
                        match argv {
                            Some(a) if !a.is_empty() => SecretCommand::Argv(a),
                            _ => return Err(s.invalid(
                                key,
                                item,
                                line,
                                "expected a command line (string) or a program and its arguments \
                                 (array of strings)",
                            )),
                        }
                    } else {
                        SecretCommand::Shell(str_()?)
                    };
                raw.secrets
                    .push(("client_secret_command", SecretSource::Command(cmd), line));
            }
            "flow" => raw.flow = Some(s.choice(key, item, line, FLOWS)?),
            "authorize_url" => raw.authorize_url = Some((str_()?, line)),
            "token_url" => raw.token_url = Some((str_()?, line)),
            "device_authorization_url" => raw.device_authorization_url = Some((str_()?, line)),
            "scopes" => raw.scopes = Some(s.words(key, item, line)?),
            "redirect_uri" => raw.redirect_uri = Some((str_()?, line)),
            "redirect_port" => {
                raw.redirect_port = Some((s.integer(key, item, line, 65535)? as u16, line))
            }
            "user" => raw.user = Some((str_()?, line)),
            "from" => raw.from = Some((str_()?, line)),
            "smtp_host" => raw.smtp_host = Some((str_()?, line)),
            "smtp_port" => {
                let p = s.integer(key, item, line, 65535)? as u16;
                if p == 0 {
                    return Err(s.invalid(key, item, line, "expected a port from 1 to 65535"));
                }
                raw.smtp_port = Some(p);
            }
            "smtp_security" => {
                raw.smtp_security = Some((s.choice(key, item, line, SECURITIES)?, line))
            }
            "smtp_auth" => raw.smtp_auth = Some(s.choice(key, item, line, MECHANISMS)?),
            "ca_file" => {
                let p = paths::resolve_path(&str_()?, base);
                if !p.is_file() {
                    return Err(s.invalid(
                        key,
                        item,
                        line,
                        format!("no such file: {}", p.display()),
                    ));
                }
                raw.ca_file = Some((p, line));
            }
            "max_connections" => {
                let n = s.integer(key, item, line, 100)? as u32;
                if n == 0 {
                    return Err(s.invalid(key, item, line, "expected 1 to 100"));
                }
                raw.max_connections = Some(n);
            }
            "messages_per_minute" => {
                raw.messages_per_minute = Some(s.integer(key, item, line, 100_000)? as u32)
            }
            other => return Err(s.unknown_key(other, item, line, ACCOUNT_KEYS)),
        }
    }
    resolve_account(path, name, &s, raw)
}

/// Applies the preset to what the account says and checks the result as a whole.
fn resolve_account(
    path: &Path,
    name: &str,
    s: &Section<'_>,
    raw: RawAccount,
) -> Result<Account, ConfigError> {
    let provider = raw.provider.unwrap_or_default();
    let flow = raw.flow.unwrap_or_default();
    let invalid = |what: String, problem: String, line: Option<usize>| ConfigError::Invalid {
        path: path.to_path_buf(),
        section: s.label.clone(),
        what,
        problem,
        line,
    };

    // Tenant: office365 only.
    let tenant = match (provider, raw.tenant) {
        (Provider::Office365, Some((t, line))) => {
            if flow == Flow::ClientCredentials && is_multi_tenant_alias(&t) {
                return Err(invalid(
                    format!("tenant = {t:?}"),
                    format!(
                        "flow client_credentials needs your own tenant (its domain, e.g. \
                         contoso.onmicrosoft.com, or its tenant id): an app token is issued by \
                         one tenant, and Entra refuses {t} for it"
                    ),
                    line,
                ));
            }
            Some(t)
        }
        (Provider::Office365, None) if flow == Flow::ClientCredentials => {
            return Err(s.missing(
                "tenant",
                "flow client_credentials needs your own tenant (its domain, e.g. \
                 contoso.onmicrosoft.com, or its tenant id); the default, organizations, cannot \
                 issue app tokens",
            ))
        }
        (Provider::Office365, None) => Some(presets::DEFAULT_TENANT.to_string()),
        (_, Some((t, line))) => {
            return Err(invalid(
                format!("tenant = {t:?}"),
                format!("tenant only applies to provider office365 (this account is {provider})"),
                line,
            ))
        }
        (_, None) => None,
    };
    if provider == Provider::Gmail && flow == Flow::ClientCredentials {
        return Err(invalid(
            "flow = \"client_credentials\"".into(),
            "Gmail has no client credentials grant for SMTP; expected authorization_code or \
             device_code"
                .into(),
            None,
        ));
    }
    let preset = presets::preset(provider, tenant.as_deref().unwrap_or(""), flow);

    let client_id = raw.client_id.ok_or_else(|| {
        s.missing(
            "client_id",
            "the Application (client) ID of the app registration",
        )
    })?;

    let client_secret = match raw.secrets.len() {
        0 => SecretSource::None,
        1 => raw.secrets.into_iter().next().expect("one").1,
        _ => {
            let keys: Vec<&str> = raw.secrets.iter().map(|(k, _, _)| *k).collect();
            return Err(invalid(
                keys.join(" and "),
                "set at most one of client_secret, client_secret_env, client_secret_command".into(),
                raw.secrets[1].2,
            ));
        }
    };
    if flow == Flow::ClientCredentials && !client_secret.is_configured() {
        return Err(s.missing(
            "client_secret",
            "flow client_credentials authenticates the app itself: set client_secret, \
             client_secret_env or client_secret_command",
        ));
    }

    let endpoint = |key: &str,
                    given: Option<(String, Option<usize>)>,
                    default: Option<String>|
     -> Result<Option<String>, ConfigError> {
        match given {
            Some((u, line)) => {
                check_endpoint(&u).map_err(|p| invalid(format!("{key} = {u:?}"), p, line))?;
                Ok(Some(u))
            }
            None => Ok(default),
        }
    };
    let token_url = endpoint("token_url", raw.token_url, preset.token_url)?
        .ok_or_else(|| s.missing("token_url", "provider custom has no preset endpoints"))?;
    let authorize_url = endpoint("authorize_url", raw.authorize_url, preset.authorize_url)?;
    let device_authorization_url = endpoint(
        "device_authorization_url",
        raw.device_authorization_url,
        preset.device_authorization_url,
    )?;
    let authorize_url =
        match (flow, authorize_url) {
            (_, Some(u)) => u,
            (Flow::AuthorizationCode, None) => return Err(s.missing(
                "authorize_url",
                "flow authorization_code needs the authorization endpoint (provider custom has \
                 no preset)",
            )),
            (_, None) => String::new(),
        };
    if flow == Flow::DeviceCode && device_authorization_url.is_none() {
        return Err(s.missing(
            "device_authorization_url",
            "flow device_code needs the device authorization endpoint (provider custom has no \
             preset)",
        ));
    }
    let scopes = raw
        .scopes
        .or(preset.scopes)
        .ok_or_else(|| s.missing("scopes", "provider custom has no preset scopes"))?;

    let (redirect_uri, redirect_port) =
        resolve_redirect(raw.redirect_uri, raw.redirect_port, &invalid)?;

    let (user, user_line) = raw.user.ok_or_else(|| {
        s.missing(
            "user",
            "the mailbox that signs in to SMTP (for client_credentials: the mailbox the app \
             sends as), e.g. alice@contoso.com",
        )
    })?;
    if provider != Provider::Custom && !user.contains('@') {
        return Err(invalid(
            format!("user = {user:?}"),
            "expected the mailbox's address, e.g. alice@contoso.com".into(),
            user_line,
        ));
    }
    let from = match raw.from {
        Some((f, line)) => {
            if !f.contains('@') {
                return Err(invalid(
                    format!("from = {f:?}"),
                    "expected an email address, e.g. sales@contoso.com".into(),
                    line,
                ));
            }
            f
        }
        None => user.clone(),
    };

    let (smtp_host, host_line) = match raw.smtp_host {
        Some((h, line)) => (h, line),
        None => (
            preset
                .smtp_host
                .ok_or_else(|| s.missing("smtp_host", "provider custom has no preset SMTP host"))?,
            None,
        ),
    };
    let (smtp_security, security_line) = raw.smtp_security.unwrap_or((preset.smtp_security, None));
    if smtp_security == Security::Plain && !is_loopback_host(&smtp_host) {
        return Err(invalid(
            "smtp_security = \"plain\"".into(),
            format!(
                "plain SMTP would send the access token unencrypted; it is only allowed to a \
                 loopback host, not {smtp_host:?}: expected starttls or tls"
            ),
            security_line.or(host_line),
        ));
    }
    let smtp_port = raw.smtp_port.unwrap_or(match smtp_security {
        Security::Tls => 465,
        _ => preset.smtp_port,
    });

    Ok(Account {
        name: name.to_string(),
        provider,
        tenant,
        client_id,
        client_secret,
        flow,
        authorize_url,
        token_url,
        device_authorization_url,
        scopes,
        redirect_uri,
        redirect_port,
        user,
        from,
        smtp_host,
        smtp_port,
        smtp_security,
        smtp_auth: raw.smtp_auth.unwrap_or(preset.smtp_auth),
        ca_file: raw.ca_file.map(|(p, _)| p),
        max_connections: raw.max_connections.unwrap_or(preset.max_connections),
        messages_per_minute: raw
            .messages_per_minute
            .unwrap_or(preset.messages_per_minute),
        config_path: path.to_path_buf(),
    })
}

type InvalidFn<'f> = dyn Fn(String, String, Option<usize>) -> ConfigError + 'f;

/// The redirect URI and the port the listener binds. The port defaults to the URI's; a URI
/// defaults to `http://localhost:PORT/`.
fn resolve_redirect(
    uri: Option<(String, Option<usize>)>,
    port: Option<(u16, Option<usize>)>,
    invalid: &InvalidFn<'_>,
) -> Result<(String, u16), ConfigError> {
    match (uri, port) {
        (None, None) => Ok((
            presets::DEFAULT_REDIRECT_URI.to_string(),
            presets::DEFAULT_REDIRECT_PORT,
        )),
        (None, Some((p, _))) => Ok((format!("http://localhost:{p}/"), p)),
        (Some((u, line)), port) => {
            let what = || format!("redirect_uri = {u:?}");
            let parsed = url::Url::parse(&u).map_err(|e| {
                invalid(
                    what(),
                    format!("not a URL ({e}); expected e.g. http://localhost:3017/"),
                    line,
                )
            })?;
            let loopback = parsed.host_str().map(is_loopback_host).unwrap_or(false);
            if parsed.scheme() != "http" || !loopback {
                return Err(invalid(
                    what(),
                    "mailgate catches the redirect on this machine: expected an http:// loopback \
                     URI such as http://localhost:3017/ (registered on the app the same way)"
                        .into(),
                    line,
                ));
            }
            let uri_port = parsed.port_or_known_default().unwrap_or(80);
            match port {
                None => Ok((u, uri_port)),
                Some((0, _)) => Ok((u, 0)),
                Some((p, _)) if p == uri_port => Ok((u, p)),
                Some((p, pline)) => Err(invalid(
                    format!("redirect_port = {p}"),
                    format!(
                        "the browser is sent to the port of redirect_uri ({uri_port}), so \
                             the listener must use it too: expected {uri_port} (or 0 for any free \
                             port), or change redirect_uri"
                    ),
                    pline.or(line),
                )),
            }
        }
    }
}

fn is_multi_tenant_alias(tenant: &str) -> bool {
    ["common", "organizations", "consumers"]
        .iter()
        .any(|a| a.eq_ignore_ascii_case(tenant))
}

/// Whether `host` is this machine: `localhost`, 127.0.0.0/8 or ::1.
pub fn is_loopback_host(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    if h.eq_ignore_ascii_case("localhost") || h.to_ascii_lowercase().ends_with(".localhost") {
        return true;
    }
    h.parse::<IpAddr>()
        .map(|ip| ip.is_loopback())
        .unwrap_or(false)
}

/// Checks an OAuth endpoint: an https URL, or http to a loopback host.
fn check_endpoint(u: &str) -> Result<(), String> {
    let parsed = url::Url::parse(u).map_err(|e| format!("not a URL ({e})"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if parsed.host_str().map(is_loopback_host).unwrap_or(false) => Ok(()),
        "http" => Err(
            "plain http:// would send secrets and tokens unencrypted; expected an https:// URL \
             (http:// is only allowed to localhost)"
                .into(),
        ),
        other => Err(format!(
            "unsupported scheme {other}:; expected an https:// URL"
        )),
    }
}

impl Account {
    /// Everything the OAuth client needs, with the client secret fetched from where the config
    /// says (the value, an environment variable, or a command's output).
    pub fn oauth_endpoints(&self) -> Result<OAuthEndpoints, ConfigError> {
        let client_secret = self.resolve_secret()?;
        if let (Provider::Office365, Some(secret)) = (self.provider, &client_secret) {
            if looks_like_guid(secret.expose()) {
                tracing::warn!(
                    "[accounts.{}] the client secret looks like a Secret ID (a GUID); Entra \
                     wants the secret's Value (shown only right after the secret is created)",
                    self.name
                );
            }
        }
        Ok(OAuthEndpoints {
            authorize_url: self.authorize_url.clone(),
            token_url: self.token_url.clone(),
            device_authorization_url: self.device_authorization_url.clone(),
            client_id: self.client_id.clone(),
            client_secret,
            scopes: self.scopes.clone(),
            redirect_uri: self.redirect_uri.clone(),
            redirect_port: self.redirect_port,
            ca_file: self.ca_file.clone(),
        })
    }

    /// Where and how to connect for SMTP (usual timeouts, EHLO name from the host).
    pub fn smtp_settings(&self) -> SmtpSettings {
        let mut s = SmtpSettings::new(
            self.smtp_host.clone(),
            self.smtp_port,
            self.smtp_security,
            self.smtp_auth,
        );
        s.ca_file = self.ca_file.clone();
        s
    }

    /// The client secret's Value, or `None` for a public client.
    pub fn resolve_secret(&self) -> Result<Option<Secret>, ConfigError> {
        let err = |key: &'static str, problem: String| ConfigError::Secret {
            path: self.config_path.clone(),
            account: self.name.clone(),
            key,
            problem,
        };
        match &self.client_secret {
            SecretSource::None => Ok(None),
            SecretSource::Value(s) => Ok(Some(s.clone())),
            SecretSource::Env(var) => match std::env::var(var) {
                Ok(v) if !v.trim().is_empty() => Ok(Some(Secret::new(v.trim()))),
                Ok(_) => Err(err(
                    "client_secret_env",
                    format!("environment variable {var} is empty"),
                )),
                Err(std::env::VarError::NotPresent) => Err(err(
                    "client_secret_env",
                    format!("environment variable {var} is not set"),
                )),
                Err(std::env::VarError::NotUnicode(_)) => Err(err(
                    "client_secret_env",
                    format!("environment variable {var} is not valid UTF-8"),
                )),
            },
            SecretSource::Command(cmd) => run_secret_command(cmd)
                .map(|v| Some(Secret::new(v)))
                .map_err(|p| err("client_secret_command", p)),
        }
    }

    /// `[accounts.NAME]`, for messages.
    pub fn section(&self) -> String {
        format!("[accounts.{}]", self.name)
    }
}

/// Whether `s` has the shape of a GUID (`8-4-4-4-12` hex digits), as Entra's Secret IDs do: a
/// client secret of that shape is almost certainly the Secret ID pasted instead of the Value.
pub fn looks_like_guid(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() == 5
        && parts
            .iter()
            .zip([8, 4, 4, 4, 12])
            .all(|(p, n)| p.len() == n && p.chars().all(|c| c.is_ascii_hexdigit()))
}

/// Runs `client_secret_command`; the output is the secret, so it is never part of an error.
fn run_secret_command(cmd: &SecretCommand) -> Result<String, String> {
    let (mut command, shown) = match cmd {
        SecretCommand::Shell(line) => {
            #[cfg(not(windows))]
            let mut c = std::process::Command::new("sh");
            #[cfg(not(windows))]
            c.arg("-c").arg(line);
            #[cfg(windows)]
            let mut c = std::process::Command::new("cmd");
            #[cfg(windows)]
            c.arg("/C").arg(line);
            (c, line.clone())
        }
        SecretCommand::Argv(argv) => {
            let mut c = std::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            (c, argv.join(" "))
        }
    };
    command
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
    let out = command
        .output()
        .map_err(|e| format!("cannot run `{shown}`: {e}"))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stderr = stderr.trim();
        let detail = if stderr.is_empty() {
            String::new()
        } else {
            let first: String = stderr
                .lines()
                .next()
                .unwrap_or("")
                .chars()
                .take(200)
                .collect();
            format!(": {first}")
        };
        return Err(format!("`{shown}` failed ({}){detail}", out.status));
    }
    let value = String::from_utf8(out.stdout)
        .map_err(|_| format!("`{shown}` printed something that is not UTF-8"))?;
    let value = value.trim();
    if value.is_empty() {
        return Err(format!(
            "`{shown}` printed nothing; it must print the secret's Value"
        ));
    }
    Ok(value.to_string())
}

#[cfg(test)]
mod tests;
