//! The SMTP client: STARTTLS or implicit TLS with rustls, SASL XOAUTH2 or OAUTHBEARER, replies
//! with their enhanced status codes, and per-recipient results.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// How the connection is secured.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Security {
    /// Plain connect, then `STARTTLS` (port 587).
    #[default]
    Starttls,
    /// TLS from the first byte (port 465).
    Tls,
    /// No TLS at all: only allowed to a loopback host.
    Plain,
}

/// The SASL mechanism used to present the OAuth2 token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum AuthMechanism {
    /// Google's and Microsoft's `XOAUTH2`.
    #[default]
    Xoauth2,
    /// RFC 7628 `OAUTHBEARER`.
    Oauthbearer,
}

/// Where and how to connect.
#[derive(Clone, Debug)]
pub struct SmtpSettings {
    pub host: String,
    pub port: u16,
    pub security: Security,
    pub auth: AuthMechanism,
    /// An extra trust anchor (PEM) besides the system roots.
    pub ca_file: Option<PathBuf>,
    /// The name sent in EHLO.
    pub helo_name: String,
    pub connect_timeout: Duration,
    /// Applies to each reply the client waits for.
    pub read_timeout: Duration,
}

impl SmtpSettings {
    /// Settings with the usual timeouts (30 s connect, 5 min per reply as RFC 5321 suggests for DATA).
    pub fn new(
        host: impl Into<String>,
        port: u16,
        security: Security,
        auth: AuthMechanism,
    ) -> SmtpSettings {
        SmtpSettings {
            host: host.into(),
            port,
            security,
            auth,
            ca_file: None,
            helo_name: default_helo_name(),
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(300),
        }
    }
}

/// The local host name for EHLO, or `localhost` when it cannot be found.
pub fn default_helo_name() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| {
            !h.is_empty()
                && h.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '.')
        })
        .unwrap_or_else(|| "localhost".into())
}

/// The session: connect, TLS, EHLO, AUTH, messages with per-recipient results.
pub mod client;
/// [`SmtpError`] and the stages of a session.
pub mod error;
/// Replies with their enhanced status codes.
pub mod reply;
/// XOAUTH2 and OAUTHBEARER framing, and the 334 error challenge.
pub mod sasl;
/// rustls configuration and what the TLS session looks like.
pub mod tls;
/// The session transcript, with AUTH payloads redacted.
pub mod transcript;

pub use client::{Capabilities, Envelope, SendOutcome, SessionInfo, SmtpClient};
pub use error::{RecipientFailure, SmtpError, Stage};
pub use reply::{EnhancedCode, Reply};
pub use sasl::OAuthChallenge;
pub use tls::TlsInfo;
pub use transcript::Transcript;
