//! The `[relay]` table of the config file.
//!
//! ```toml
//! [relay]
//! listen = "127.0.0.1:2525"              # or a list; default 127.0.0.1:2525
//! # listen_tls = ["0.0.0.0:465"]          # implicit TLS (needs tls_cert and tls_key)
//! # tls_cert = "/etc/mailgate/relay.crt"  # enables STARTTLS on `listen`
//! # tls_key = "/etc/mailgate/relay.key"
//! allow_networks = ["127.0.0.0/8", "::1/128", "192.168.10.0/24"]  # may send without AUTH
//! max_message_size = "35MB"
//! max_recipients = 100
//! default_account = "work"               # default: the top-level default_account
//! notify = "it@contoso.com"              # bounces and notices go here instead of the sender
//! max_age = "2d"
//!
//! [relay.users]                          # AUTH PLAIN/LOGIN; `mailgate relay add-user NAME`
//! scanner = "$argon2id$v=19$m=19456,t=2,p=1$..."
//!
//! [[relay.routes]]
//! sender = "*@sales.contoso.com"         # envelope sender pattern (* and ?)
//! account = "sales"
//! rewrite_from = "sales@contoso.com"     # optional: send as this address instead
//! ```

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use std::time::Duration;

use ipnet::IpNet;
use toml_edit::{Item, TableLike};

use crate::config::{paths, Account, ConfigError, Section};

/// Keys allowed in `[relay]`.
pub const RELAY_KEYS: &[&str] = &[
    "listen",
    "listen_tls",
    "tls_cert",
    "tls_key",
    "hostname",
    "max_message_size",
    "max_recipients",
    "max_clients",
    "allow_networks",
    "users",
    "routes",
    "default_account",
    "notify",
    "notify_account",
    "notice_command",
    "max_age",
    "retry_initial",
    "retry_max",
    "scan_interval",
    "connection_idle",
    "refresh_ahead",
    "refresh_every",
    "spool_dir",
];

/// Keys allowed in a `[[relay.routes]]` entry.
pub const ROUTE_KEYS: &[&str] = &["sender", "account", "rewrite_from"];

/// The relay's default listen address: loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:2525";

/// One `[[relay.routes]]` entry: mail from senders matching `sender` goes through `account`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Route {
    /// An address pattern: `*` matches any run of characters, `?` one; case-insensitive.
    pub sender: String,
    pub account: String,
    /// Send as this address (envelope and `From:` header) instead of the device's own.
    pub rewrite_from: Option<String>,
    line: Option<usize>,
}

impl Route {
    /// A route (for code that builds configs without a file).
    pub fn new(sender: impl Into<String>, account: impl Into<String>) -> Route {
        Route {
            sender: sender.into(),
            account: account.into(),
            rewrite_from: None,
            line: None,
        }
    }
}

/// A command run to tell someone that an account needs attention (a new login). It gets
/// `MAILGATE_ACCOUNT`, `MAILGATE_REASON` and `MAILGATE_FIX` in its environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum NoticeCommand {
    /// Run through the shell (`sh -c`, `cmd /C` on Windows).
    Shell(String),
    /// Program and arguments, no shell.
    Argv(Vec<String>),
}

/// The validated `[relay]` table.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RelayConfig {
    /// Plain listeners (STARTTLS offered when a certificate is configured).
    pub listen: Vec<SocketAddr>,
    /// Implicit-TLS listeners.
    pub listen_tls: Vec<SocketAddr>,
    pub tls_cert: Option<PathBuf>,
    pub tls_key: Option<PathBuf>,
    /// The name in the greeting, EHLO reply and Received header.
    pub hostname: String,
    pub max_message_size: usize,
    pub max_recipients: usize,
    /// Concurrent client sessions; more wait to be accepted.
    pub max_clients: usize,
    /// Clients from these networks may send without AUTH.
    pub allow_networks: Vec<IpNet>,
    /// User name → argon2 PHC hash.
    pub users: BTreeMap<String, String>,
    pub routes: Vec<Route>,
    /// The account for senders no route matches.
    pub default_account: Option<String>,
    /// Bounces and notices go here instead of to the envelope sender.
    pub notify: Option<String>,
    /// The account that sends notices (default: the default account).
    pub notify_account: Option<String>,
    pub notice_command: Option<NoticeCommand>,
    /// Temporary failures are retried until a message is this old; then it bounces.
    pub max_age: Duration,
    /// The first retry delay; it doubles with each attempt up to `retry_max`.
    pub retry_initial: Duration,
    pub retry_max: Duration,
    /// How often the spool is looked at for mail queued by other processes or released by
    /// `mailgate queue flush|retry`.
    pub scan_interval: Duration,
    /// How long an upstream connection stays open with nothing to send.
    pub connection_idle: Duration,
    /// Access tokens are refreshed when they expire within this.
    pub refresh_ahead: Duration,
    /// A refresh token unused for this long is used anyway (keeps it from lapsing).
    pub refresh_every: Duration,
    /// Where the spool lives; default `STATE_DIR/spool`.
    pub spool_dir: Option<PathBuf>,
    default_account_line: Option<usize>,
    notify_account_line: Option<usize>,
}

impl Default for RelayConfig {
    fn default() -> Self {
        RelayConfig {
            listen: vec![DEFAULT_LISTEN.parse().expect("valid default")],
            listen_tls: Vec::new(),
            tls_cert: None,
            tls_key: None,
            hostname: default_hostname(),
            max_message_size: 35 * 1000 * 1000,
            max_recipients: 100,
            max_clients: 2000,
            allow_networks: vec![
                "127.0.0.0/8".parse().expect("valid"),
                "::1/128".parse().expect("valid"),
            ],
            users: BTreeMap::new(),
            routes: Vec::new(),
            default_account: None,
            notify: None,
            notify_account: None,
            notice_command: None,
            max_age: Duration::from_secs(2 * 24 * 3600),
            retry_initial: Duration::from_secs(60),
            retry_max: Duration::from_secs(3600),
            scan_interval: Duration::from_secs(5),
            connection_idle: Duration::from_secs(5),
            refresh_ahead: Duration::from_secs(10 * 60),
            refresh_every: Duration::from_secs(7 * 24 * 3600),
            spool_dir: None,
            default_account_line: None,
            notify_account_line: None,
        }
    }
}

/// This machine's name for the greeting, or `localhost`.
pub fn default_hostname() -> String {
    let name = std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/etc/hostname").ok())
        .unwrap_or_default();
    let name = name.trim();
    if !name.is_empty()
        && name.len() <= 253
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
    {
        name.to_string()
    } else {
        "localhost".into()
    }
}

impl RelayConfig {
    /// Whether `ip` is in `allow_networks` (IPv4-mapped IPv6 addresses count as IPv4).
    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = canonical_ip(ip);
        self.allow_networks.iter().any(|n| n.contains(&ip))
    }

    /// The spool directory for a config whose state directory is `state_dir`.
    pub fn spool_dir(&self, state_dir: &Path) -> PathBuf {
        self.spool_dir
            .clone()
            .unwrap_or_else(|| state_dir.join("spool"))
    }

    /// Reads the `[relay]` table (`item`, found at `line` of the file at `path` whose text is
    /// `text`; `base` resolves relative paths).
    pub fn parse(
        path: &Path,
        text: &str,
        base: &Path,
        item: &Item,
        line: Option<usize>,
    ) -> Result<RelayConfig, ConfigError> {
        let top = Section::new(path, text, "");
        let table = top.table("relay", item, line)?;
        let s = Section::new(path, text, "relay");
        let mut c = RelayConfig::default();
        for (key, item) in table.iter() {
            let line = s.key_line(table, key);
            match key {
                "listen" => c.listen = addresses(&s, key, item, line)?,
                "listen_tls" => c.listen_tls = addresses(&s, key, item, line)?,
                "tls_cert" | "tls_key" => {
                    let p = paths::resolve_path(&s.string(key, item, line)?, base);
                    if !p.is_file() {
                        return Err(s.invalid(
                            key,
                            item,
                            line,
                            format!("no such file: {}", p.display()),
                        ));
                    }
                    if key == "tls_cert" {
                        c.tls_cert = Some(p);
                    } else {
                        c.tls_key = Some(p);
                    }
                }
                "hostname" => {
                    let h = s.string(key, item, line)?;
                    if !h
                        .chars()
                        .all(|ch| ch.is_ascii_alphanumeric() || ch == '-' || ch == '.')
                    {
                        return Err(s.invalid(
                            key,
                            item,
                            line,
                            "expected a host name (letters, digits, '-' and '.')",
                        ));
                    }
                    c.hostname = h;
                }
                "max_message_size" => c.max_message_size = size(&s, key, item, line)?,
                "max_recipients" => {
                    c.max_recipients = s.integer(key, item, line, 100_000)? as usize;
                    if c.max_recipients == 0 {
                        return Err(s.invalid(key, item, line, "expected 1 to 100000"));
                    }
                }
                "max_clients" => {
                    c.max_clients = s.integer(key, item, line, 1_000_000)? as usize;
                    if c.max_clients == 0 {
                        return Err(s.invalid(key, item, line, "expected 1 to 1000000"));
                    }
                }
                "allow_networks" => c.allow_networks = networks(&s, key, item, line)?,
                "users" => c.users = users(path, text, &s, key, item, line)?,
                "routes" => c.routes = routes(path, text, &s, key, item, line)?,
                "default_account" => {
                    c.default_account = Some(s.string(key, item, line)?);
                    c.default_account_line = line;
                }
                "notify" => c.notify = Some(address(&s, key, item, line)?),
                "notify_account" => {
                    c.notify_account = Some(s.string(key, item, line)?);
                    c.notify_account_line = line;
                }
                "notice_command" => c.notice_command = Some(command(&s, key, item, line)?),
                "max_age" => c.max_age = s.duration(key, item, line)?,
                "retry_initial" => c.retry_initial = s.duration(key, item, line)?,
                "retry_max" => c.retry_max = s.duration(key, item, line)?,
                "scan_interval" => c.scan_interval = s.duration(key, item, line)?,
                "connection_idle" => c.connection_idle = s.duration(key, item, line)?,
                "refresh_ahead" => c.refresh_ahead = s.duration(key, item, line)?,
                "refresh_every" => c.refresh_every = s.duration(key, item, line)?,
                "spool_dir" => {
                    c.spool_dir = Some(paths::resolve_path(&s.string(key, item, line)?, base))
                }
                other => return Err(s.unknown_key(other, item, line, RELAY_KEYS)),
            }
        }
        match (&c.tls_cert, &c.tls_key) {
            (Some(_), None) => {
                return Err(s.missing("tls_key", "tls_cert is set: give its private key (PEM) too"))
            }
            (None, Some(_)) => {
                return Err(s.missing("tls_cert", "tls_key is set: give its certificate (PEM) too"))
            }
            (None, None) if !c.listen_tls.is_empty() => {
                return Err(s.missing(
                    "tls_cert",
                    "listen_tls needs a certificate and key (tls_cert, tls_key)",
                ))
            }
            _ => {}
        }
        if c.listen.is_empty() && c.listen_tls.is_empty() {
            return Err(s.missing(
                "listen",
                "the relay needs at least one address to listen on",
            ));
        }
        if c.retry_initial.is_zero() {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                section: "[relay] ".into(),
                what: "retry_initial".into(),
                problem: "must be more than 0 seconds".into(),
                line: None,
            });
        }
        if c.retry_max < c.retry_initial {
            c.retry_max = c.retry_initial;
        }
        Ok(c)
    }

    /// Checks that every account the relay names exists. Call once the accounts are known.
    pub fn check_accounts(
        &self,
        path: &Path,
        accounts: &BTreeMap<String, Account>,
        default_account: Option<&str>,
    ) -> Result<(), ConfigError> {
        let known = || {
            if accounts.is_empty() {
                "none".to_string()
            } else {
                accounts.keys().cloned().collect::<Vec<_>>().join(", ")
            }
        };
        let invalid = |what: String, line: Option<usize>| ConfigError::Invalid {
            path: path.to_path_buf(),
            section: "[relay] ".into(),
            what,
            problem: format!("no such account (accounts: {})", known()),
            line,
        };
        for r in &self.routes {
            if !accounts.contains_key(&r.account) {
                return Err(ConfigError::Invalid {
                    path: path.to_path_buf(),
                    section: "[[relay.routes]] ".into(),
                    what: format!("account = {:?}", r.account),
                    problem: format!("no such account (accounts: {})", known()),
                    line: r.line,
                });
            }
        }
        if let Some(a) = &self.default_account {
            if !accounts.contains_key(a) {
                return Err(invalid(
                    format!("default_account = {a:?}"),
                    self.default_account_line,
                ));
            }
        }
        if let Some(a) = &self.notify_account {
            if !accounts.contains_key(a) {
                return Err(invalid(
                    format!("notify_account = {a:?}"),
                    self.notify_account_line,
                ));
            }
        }
        let has_default =
            self.default_account.is_some() || default_account.is_some() || accounts.len() == 1;
        if !has_default && self.routes.iter().all(|r| r.sender != "*") {
            tracing::debug!(
                "config {}: [relay] has no default account: senders no route matches are refused",
                path.display()
            );
        }
        Ok(())
    }
}

/// `::ffff:1.2.3.4` as `1.2.3.4`, so that IPv4 networks match dual-stack listeners.
pub fn canonical_ip(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    }
}

fn string_list(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<Vec<String>, ConfigError> {
    if let Some(v) = item.as_str() {
        return Ok(vec![v.trim().to_string()]);
    }
    let Some(arr) = item.as_array() else {
        return Err(s.invalid(key, item, line, "expected a string or a list of strings"));
    };
    arr.iter()
        .map(|v| {
            v.as_str()
                .map(|v| v.trim().to_string())
                .ok_or_else(|| s.invalid(key, item, line, "expected a list of strings"))
        })
        .collect()
}

fn addresses(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<Vec<SocketAddr>, ConfigError> {
    string_list(s, key, item, line)?
        .iter()
        .map(|a| {
            a.parse::<SocketAddr>().map_err(|_| {
                s.invalid(
                    key,
                    item,
                    line,
                    format!(
                        "{a:?} is not an address:port; expected e.g. \"127.0.0.1:2525\", \
                         \"0.0.0.0:25\" or \"[::1]:2525\""
                    ),
                )
            })
        })
        .collect()
}

fn networks(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<Vec<IpNet>, ConfigError> {
    let mut out = Vec::new();
    for n in string_list(s, key, item, line)? {
        let net = match n.parse::<IpNet>() {
            Ok(net) => net,
            Err(_) => match n.parse::<IpAddr>() {
                Ok(ip) => IpNet::from(ip),
                Err(_) => {
                    return Err(s.invalid(
                        key,
                        item,
                        line,
                        format!(
                            "{n:?} is not a network; expected CIDR notation such as \
                             \"192.168.10.0/24\", or one address"
                        ),
                    ))
                }
            },
        };
        if net.prefix_len() == 0 {
            return Err(s.invalid(
                key,
                item,
                line,
                format!(
                    "{n} would let every address on the Internet send through your mailbox \
                     (an open relay); list your own networks, and use [relay.users] with AUTH for \
                     clients elsewhere"
                ),
            ));
        }
        out.push(net.trunc());
    }
    Ok(out)
}

fn address(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<String, ConfigError> {
    let a = s.string(key, item, line)?;
    if !looks_like_address(&a) {
        return Err(s.invalid(key, item, line, "expected an email address (name@domain)"));
    }
    Ok(a)
}

/// `local@domain` with no spaces or angle brackets.
pub(crate) fn looks_like_address(a: &str) -> bool {
    match a.rsplit_once('@') {
        Some((local, domain)) => {
            !local.is_empty()
                && !domain.is_empty()
                && !a
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '<' || c == '>')
        }
        None => false,
    }
}

fn size(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<usize, ConfigError> {
    const EXPECTED: &str =
        "expected a size in bytes, or with a unit: \"25MB\", \"10MiB\", \"512KB\"";
    let n = if let Some(n) = item.as_integer() {
        u64::try_from(n).ok()
    } else if let Some(text) = item.as_str() {
        parse_size(text)
    } else {
        None
    };
    match n {
        Some(n) if (1024..=1 << 32).contains(&n) => Ok(n as usize),
        Some(_) => Err(s.invalid(key, item, line, "expected 1KB to 4GiB")),
        None => Err(s.invalid(key, item, line, EXPECTED)),
    }
}

/// `"35MB"`, `"10 MiB"`, `"512k"`, `"1000"` → bytes.
pub fn parse_size(text: &str) -> Option<u64> {
    let t = text.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: u64 = num.parse().ok()?;
    let mult: u64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" => 1000,
        "kib" => 1024,
        "m" | "mb" => 1000 * 1000,
        "mib" => 1024 * 1024,
        "g" | "gb" => 1000 * 1000 * 1000,
        "gib" => 1024 * 1024 * 1024,
        _ => return None,
    };
    n.checked_mul(mult)
}

fn command(
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<NoticeCommand, ConfigError> {
    if let Some(arr) = item.as_array() {
        let argv: Option<Vec<String>> = arr.iter().map(|v| v.as_str().map(String::from)).collect();
        return match argv {
            Some(a) if !a.is_empty() => Ok(NoticeCommand::Argv(a)),
            _ => Err(s.invalid(
                key,
                item,
                line,
                "expected a command line (string) or a program and its arguments (array)",
            )),
        };
    }
    Ok(NoticeCommand::Shell(s.string(key, item, line)?))
}

fn users(
    path: &Path,
    text: &str,
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<BTreeMap<String, String>, ConfigError> {
    let table = s.table(key, item, line)?;
    let us = Section::new(path, text, "relay.users");
    let mut out = BTreeMap::new();
    for (name, item) in table.iter() {
        let line = us.key_line(table, name);
        if !valid_user_name(name) {
            return Err(us.invalid(
                name,
                item,
                line,
                "a user name may use letters, digits, '-', '_', '.' and '@' (up to 64)",
            ));
        }
        // The value is never shown: someone may have put a password here by mistake.
        let hash = item.as_str().map(str::trim).unwrap_or_default();
        if !super::auth::is_password_hash(hash) {
            return Err(ConfigError::Invalid {
                path: path.to_path_buf(),
                section: "[relay.users] ".into(),
                what: format!("{name} = <not shown>"),
                problem: format!(
                    "expected an argon2 password hash ($argon2id$...), not a password; create \
                     one with `mailgate relay add-user {name}`"
                ),
                line,
            });
        }
        out.insert(name.to_string(), hash.to_string());
    }
    Ok(out)
}

/// Names `mailgate relay add-user` accepts.
pub fn valid_user_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '@'))
}

fn routes(
    path: &Path,
    text: &str,
    s: &Section<'_>,
    key: &str,
    item: &Item,
    line: Option<usize>,
) -> Result<Vec<Route>, ConfigError> {
    let tables: Vec<(&dyn TableLike, Option<usize>)> = if let Some(aot) = item.as_array_of_tables()
    {
        aot.iter()
            .map(|t| {
                let l = t
                    .span()
                    .map(|sp| text[..sp.start.min(text.len())].matches('\n').count() + 1);
                (t as &dyn TableLike, l)
            })
            .collect()
    } else if let Some(arr) = item.as_array() {
        let mut out = Vec::new();
        for v in arr.iter() {
            match v.as_inline_table() {
                Some(t) => out.push((t as &dyn TableLike, line)),
                None => {
                    return Err(s.invalid(
                        key,
                        item,
                        line,
                        "expected [[relay.routes]] tables with sender and account",
                    ))
                }
            }
        }
        out
    } else {
        return Err(s.invalid(
            key,
            item,
            line,
            "expected [[relay.routes]] tables with sender and account",
        ));
    };
    let rs = Section::new(path, text, "[relay.routes]");
    let mut out = Vec::new();
    for (table, tline) in tables {
        let mut sender = None;
        let mut account = None;
        let mut rewrite_from = None;
        for (k, item) in table.iter() {
            let line = rs.key_line(table, k).or(tline);
            match k {
                "sender" => {
                    let p = rs.string(k, item, line)?;
                    if p.chars().any(|c| c.is_whitespace() || c == '<' || c == '>') {
                        return Err(rs.invalid(
                            k,
                            item,
                            line,
                            "expected an address pattern such as \"*@contoso.com\" or \
                             \"scanner@contoso.com\"",
                        ));
                    }
                    sender = Some(p);
                }
                "account" => account = Some(rs.string(k, item, line)?),
                "rewrite_from" => rewrite_from = Some(address(&rs, k, item, line)?),
                other => return Err(rs.unknown_key(other, item, line, ROUTE_KEYS)),
            }
        }
        let sender = sender.ok_or_else(|| {
            rs.missing(
                "sender",
                "each route needs a sender pattern, e.g. \"*@contoso.com\"",
            )
        })?;
        let account = account
            .ok_or_else(|| rs.missing("account", "each route names the account to send through"))?;
        out.push(Route {
            sender,
            account,
            rewrite_from,
            line: tline,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<RelayConfig, ConfigError> {
        let doc = text.parse::<toml_edit::DocumentMut>().unwrap();
        let item = doc.get("relay").unwrap();
        RelayConfig::parse(
            Path::new("/etc/mailgate/config.toml"),
            text,
            Path::new("/etc"),
            item,
            Some(1),
        )
    }

    #[test]
    fn defaults_are_loopback_only() {
        let c = parse("[relay]\n").unwrap();
        assert_eq!(
            c.listen,
            vec!["127.0.0.1:2525".parse::<SocketAddr>().unwrap()]
        );
        assert!(c.allows("127.0.0.1".parse().unwrap()));
        assert!(c.allows("::1".parse().unwrap()));
        assert!(c.allows("::ffff:127.0.0.5".parse().unwrap()));
        assert!(!c.allows("192.168.1.10".parse().unwrap()));
        assert_eq!(c.max_age, Duration::from_secs(172_800));
    }

    #[test]
    fn values_and_routes() {
        let c = parse(
            "[relay]\nlisten = [\"0.0.0.0:2525\"]\nallow_networks = [\"192.168.10.0/24\", \"10.1.2.3\"]\n\
             max_message_size = \"10MB\"\nmax_age = \"3s\"\nretry_initial = 1\n\
             [[relay.routes]]\nsender = \"*@sales.contoso.com\"\naccount = \"sales\"\nrewrite_from = \"sales@contoso.com\"\n",
        )
        .unwrap();
        assert_eq!(c.max_message_size, 10_000_000);
        assert_eq!(c.max_age, Duration::from_secs(3));
        assert!(c.allows("192.168.10.77".parse().unwrap()));
        assert!(c.allows("10.1.2.3".parse().unwrap()));
        assert!(!c.allows("127.0.0.1".parse().unwrap()));
        assert_eq!(
            c.routes[0].rewrite_from.as_deref(),
            Some("sales@contoso.com")
        );
    }

    #[test]
    fn refuses_an_open_relay_and_names_the_key() {
        let e = parse("[relay]\nallow_networks = [\"0.0.0.0/0\"]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("/etc/mailgate/config.toml"), "{e}");
        assert!(e.contains("[relay] allow_networks"), "{e}");
        assert!(e.contains("open relay"), "{e}");
        let e = parse("[relay]\nlisten = \"localhost\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("address:port"), "{e}");
        let e = parse("[relay]\nlisten_port = 25\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("unknown key"), "{e}");
        let e = parse("[relay.users]\nscanner = \"hunter2\"\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("mailgate relay add-user scanner"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
    }

    #[test]
    fn sizes() {
        assert_eq!(parse_size("35MB"), Some(35_000_000));
        assert_eq!(parse_size("10 MiB"), Some(10 * 1024 * 1024));
        assert_eq!(parse_size("4096"), Some(4096));
        assert_eq!(parse_size("12 parsecs"), None);
    }
}
