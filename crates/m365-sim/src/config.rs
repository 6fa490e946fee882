//! How a simulator is set up: from a TOML file (`mailgate sim --config`) or [`SimConfig`]'s
//! builder methods in tests.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::{Directory, Faults, SimError};

/// Which provider the simulator imitates.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Entra ID + smtp.office365.com.
    #[default]
    Microsoft,
    /// Google's token endpoint + smtp.gmail.com (XOAUTH2/OAUTHBEARER with the 334 JSON challenge).
    Gmail,
}

/// Everything a simulator needs to start.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SimConfig {
    pub mode: Mode,
    /// Listen address of the identity platform (HTTP); port 0 picks a free port.
    pub http_listen: String,
    /// Listen address of SMTP submission (STARTTLS); port 0 picks a free port.
    pub smtp_listen: String,
    /// Listen address of an implicit-TLS SMTP port (like Gmail's 465); `None`: not started.
    pub smtps_listen: Option<String>,
    /// The host name in the banner, EHLO and replies.
    pub hostname: String,
    /// Sign-in requests are approved at once as the `login_hint` user (or the first user), and
    /// device codes after their first poll, with no page shown.
    pub auto_approve: bool,
    pub access_token_lifetime_secs: u64,
    /// Device code polling interval announced to clients.
    pub device_poll_interval_secs: u64,
    /// A used refresh token is revoked at once. Microsoft keeps old ones valid for a while; this
    /// stricter default makes a client that loses a rotation fail visibly.
    pub revoke_rotated_refresh_tokens: bool,
    /// Concurrent SMTP connections per mailbox before 432 4.3.2.
    pub max_connections_per_mailbox: usize,
    /// Recipients per mailbox per day before 554 5.2.0.
    pub daily_recipient_limit: usize,
    /// Recipients per message before 452 4.5.3.
    pub max_recipients_per_message: usize,
    /// Per-mailbox message size limit, in bytes (Exchange's default 35 MB).
    pub max_message_size: usize,
    /// Seconds an SMTP connection may sit idle (no command, no data) before `421 4.4.1`
    /// (Exchange's receive connectors default to five minutes).
    pub smtp_idle_timeout_secs: u64,
    /// Where delivered messages are written (one `.eml` and one `.json` per message);
    /// `None`: a temporary directory removed when the simulator stops.
    pub mail_dir: Option<PathBuf>,
    pub directory: Directory,
    pub faults: Faults,
}

impl Default for SimConfig {
    fn default() -> Self {
        SimConfig {
            mode: Mode::Microsoft,
            http_listen: "127.0.0.1:0".into(),
            smtp_listen: "127.0.0.1:0".into(),
            smtps_listen: None,
            hostname: "AM0PR02CA0134.outlook.office365.com".into(),
            auto_approve: true,
            access_token_lifetime_secs: 3599,
            device_poll_interval_secs: 5,
            revoke_rotated_refresh_tokens: true,
            max_connections_per_mailbox: 3,
            daily_recipient_limit: 10_000,
            max_recipients_per_message: 500,
            max_message_size: 35 * 1024 * 1024,
            smtp_idle_timeout_secs: 300,
            mail_dir: None,
            directory: Directory::contoso(),
            faults: Faults::default(),
        }
    }
}

impl SimConfig {
    /// Reads a TOML file; unknown keys are errors that name the key.
    pub fn from_file(path: &Path) -> Result<SimConfig, SimError> {
        let text = std::fs::read_to_string(path).map_err(|e| SimError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })?;
        toml::from_str(&text).map_err(|e| SimError::Config {
            path: path.to_owned(),
            message: e.to_string(),
        })
    }

    /// A Gmail-mode simulator (host name `smtp.gmail.com`, 334 JSON challenges).
    pub fn gmail() -> SimConfig {
        SimConfig {
            mode: Mode::Gmail,
            hostname: "smtp.gmail.com".into(),
            ..SimConfig::default()
        }
    }

    pub fn auto_approve(mut self, yes: bool) -> Self {
        self.auto_approve = yes;
        self
    }

    pub fn access_token_lifetime_secs(mut self, secs: u64) -> Self {
        self.access_token_lifetime_secs = secs;
        self
    }

    pub fn device_poll_interval_secs(mut self, secs: u64) -> Self {
        self.device_poll_interval_secs = secs;
        self
    }

    pub fn mail_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.mail_dir = Some(dir.into());
        self
    }

    pub fn smtp_listen(mut self, addr: impl Into<String>) -> Self {
        self.smtp_listen = addr.into();
        self
    }

    pub fn http_listen(mut self, addr: impl Into<String>) -> Self {
        self.http_listen = addr.into();
        self
    }

    pub fn smtps_listen(mut self, addr: impl Into<String>) -> Self {
        self.smtps_listen = Some(addr.into());
        self
    }

    pub fn smtp_idle_timeout_secs(mut self, secs: u64) -> Self {
        self.smtp_idle_timeout_secs = secs;
        self
    }

    pub fn faults(mut self, faults: Faults) -> Self {
        self.faults = faults;
        self
    }

    /// Changes the directory in place (disable a mailbox's SMTP AUTH, revoke a grant...).
    pub fn directory_with(mut self, change: impl FnOnce(&mut Directory)) -> Self {
        change(&mut self.directory);
        self
    }
}
