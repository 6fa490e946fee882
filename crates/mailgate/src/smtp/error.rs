//! [`SmtpError`]: why a session or a message failed, with the server's reply and a diagnosis.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::diagnose::{self, Diagnosis};
use crate::sysexits::HasSysexit;
use crate::Sysexit;

use super::reply::Reply;
use super::sasl::OAuthChallenge;
use super::AuthMechanism;

/// What the client was doing when something failed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Stage {
    /// Opening the TCP connection.
    Connect,
    /// Waiting for the server's `220` greeting.
    Greeting,
    /// `EHLO`.
    Ehlo,
    /// `STARTTLS`.
    Starttls,
    /// The TLS handshake.
    TlsHandshake,
    /// `AUTH`.
    Auth,
    /// `RSET` between two messages.
    Rset,
    /// `MAIL FROM`.
    MailFrom,
    /// `RCPT TO`.
    RcptTo,
    /// `DATA` (before the message is sent).
    Data,
    /// The reply to the message itself (after the final `.`).
    Message,
    /// `QUIT`.
    Quit,
}

impl fmt::Display for Stage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Stage::Connect => "connect",
            Stage::Greeting => "the greeting",
            Stage::Ehlo => "EHLO",
            Stage::Starttls => "STARTTLS",
            Stage::TlsHandshake => "the TLS handshake",
            Stage::Auth => "AUTH",
            Stage::Rset => "RSET",
            Stage::MailFrom => "MAIL FROM",
            Stage::RcptTo => "RCPT TO",
            Stage::Data => "DATA",
            Stage::Message => "the message",
            Stage::Quit => "QUIT",
        })
    }
}

/// A recipient the server refused, and why.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RecipientFailure {
    pub address: String,
    /// The reply to `RCPT TO`.
    pub reply: Reply,
    pub diagnosis: Diagnosis,
}

impl fmt::Display for RecipientFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.address, self.reply)
    }
}

/// Why an SMTP session or message failed. Tokens never appear in it.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SmtpError {
    /// The TCP connection could not be opened (refused, unreachable, name not found).
    #[error("cannot connect to {host}:{port}: {error}")]
    Connect {
        host: String,
        port: u16,
        error: std::io::Error,
        diagnosis: Box<Diagnosis>,
    },
    /// The TCP connection (or the TLS handshake) did not complete in time.
    #[error("connecting to {host}:{port} timed out after {}s", after.as_secs())]
    ConnectTimeout {
        host: String,
        port: u16,
        after: Duration,
        diagnosis: Box<Diagnosis>,
    },
    /// The server did not answer in time.
    #[error("{host} did not answer {stage} within {}s", after.as_secs())]
    Timeout {
        host: String,
        stage: Stage,
        after: Duration,
    },
    /// The connection broke (or the server closed it) during a stage.
    #[error("the connection to {host} was lost during {stage}: {error}")]
    Io {
        host: String,
        stage: Stage,
        error: std::io::Error,
    },
    /// The TLS handshake failed (an untrusted or mismatched certificate, no common protocol).
    #[error("TLS with {host} failed: {message}")]
    Tls {
        host: String,
        message: String,
        diagnosis: Box<Diagnosis>,
    },
    /// The account's `ca_file` could not be read or holds no certificate.
    #[error("cannot use the CA file {}: {message}", path.display())]
    CaFile { path: PathBuf, message: String },
    /// `security = "plain"` was asked for a host that is not on this machine.
    #[error(
        "refusing to connect to {host} without TLS: security \"plain\" is only allowed to loopback hosts (127.0.0.1, ::1, localhost)"
    )]
    PlainNotLoopback { host: String },
    /// The server does not offer `STARTTLS`, so the token would travel in clear.
    #[error("{host} does not offer STARTTLS; refusing to send a token without TLS")]
    StarttlsNotOffered { host: String },
    /// The server does not offer the SASL mechanism the account uses.
    #[error("{host} does not offer AUTH {} (it offers: {})", super::sasl::mechanism_name(*wanted), if offered.is_empty() { "no AUTH at all".to_string() } else { offered.join(" ") })]
    MechanismNotOffered {
        host: String,
        wanted: AuthMechanism,
        offered: Vec<String>,
        diagnosis: Box<Diagnosis>,
    },
    /// The server refused a command, or the message.
    #[error("{host} refused {stage}: {}", short(&reply.to_string()))]
    Rejected {
        host: String,
        stage: Stage,
        reply: Reply,
        /// The decoded 334 error challenge, when the server sent one before refusing AUTH.
        challenge: Option<Box<OAuthChallenge>>,
        diagnosis: Box<Diagnosis>,
    },
    /// Every recipient was refused; nothing was sent.
    #[error("{host} refused every recipient: {}", refused.iter().map(|r| r.to_string()).collect::<Vec<_>>().join("; "))]
    AllRecipientsRefused {
        host: String,
        refused: Vec<RecipientFailure>,
    },
    /// The message is larger than the server's announced SIZE.
    #[error("the message is {size} bytes; {host} accepts at most {limit} bytes")]
    MessageTooBig {
        host: String,
        size: usize,
        limit: usize,
    },
    /// An envelope address is not usable (control characters, angle brackets, empty).
    #[error("invalid address {address:?}: {reason}")]
    InvalidAddress {
        address: String,
        reason: &'static str,
    },
    /// A non-ASCII address needs SMTPUTF8, which the server does not offer.
    #[error("{host} does not offer SMTPUTF8, which the address {address} needs")]
    Utf8NotOffered { host: String, address: String },
    /// The message has no recipients.
    #[error("the message has no recipients")]
    NoRecipients,
    /// The server sent something that is not SMTP.
    #[error("{host} broke the SMTP protocol during {stage}: {detail}")]
    Protocol {
        host: String,
        stage: Stage,
        detail: String,
    },
}

impl SmtpError {
    /// The stage that failed, when the failure belongs to one.
    pub fn stage(&self) -> Option<Stage> {
        match self {
            SmtpError::Connect { .. } | SmtpError::ConnectTimeout { .. } => Some(Stage::Connect),
            SmtpError::Timeout { stage, .. }
            | SmtpError::Io { stage, .. }
            | SmtpError::Rejected { stage, .. }
            | SmtpError::Protocol { stage, .. } => Some(*stage),
            SmtpError::Tls { .. } | SmtpError::CaFile { .. } => Some(Stage::TlsHandshake),
            SmtpError::StarttlsNotOffered { .. } => Some(Stage::Starttls),
            SmtpError::MechanismNotOffered { .. } => Some(Stage::Auth),
            SmtpError::AllRecipientsRefused { .. } => Some(Stage::RcptTo),
            SmtpError::MessageTooBig { .. } | SmtpError::Utf8NotOffered { .. } => {
                Some(Stage::MailFrom)
            }
            SmtpError::PlainNotLoopback { .. }
            | SmtpError::InvalidAddress { .. }
            | SmtpError::NoRecipients => None,
        }
    }

    /// The server's reply that caused the failure, if one did.
    pub fn reply(&self) -> Option<&Reply> {
        match self {
            SmtpError::Rejected { reply, .. } => Some(reply),
            SmtpError::AllRecipientsRefused { refused, .. } => refused.first().map(|r| &r.reply),
            _ => None,
        }
    }

    /// The plain-language diagnosis, when there is one.
    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        match self {
            SmtpError::Connect { diagnosis, .. }
            | SmtpError::ConnectTimeout { diagnosis, .. }
            | SmtpError::Tls { diagnosis, .. }
            | SmtpError::MechanismNotOffered { diagnosis, .. }
            | SmtpError::Rejected { diagnosis, .. } => Some(diagnosis),
            SmtpError::AllRecipientsRefused { refused, .. } => {
                refused.first().map(|r| &r.diagnosis)
            }
            _ => None,
        }
    }

    /// Whether this is a `535` to AUTH: the token was refused (and a fresh one may help).
    pub fn is_auth_refused(&self) -> bool {
        matches!(self, SmtpError::Rejected { stage: Stage::Auth, reply, .. } if reply.code == 535)
    }

    /// Whether retrying later may succeed (exit status 75).
    pub fn is_transient(&self) -> bool {
        self.sysexit() == Sysexit::TempFail
    }
}

impl HasSysexit for SmtpError {
    fn sysexit(&self) -> Sysexit {
        match self {
            SmtpError::Connect { .. }
            | SmtpError::ConnectTimeout { .. }
            | SmtpError::Timeout { .. }
            | SmtpError::Io { .. } => Sysexit::TempFail,
            SmtpError::Rejected { diagnosis, .. } => diagnosis.sysexit,
            SmtpError::AllRecipientsRefused { refused, .. } => worst_status(refused),
            SmtpError::Tls { diagnosis, .. } | SmtpError::MechanismNotOffered { diagnosis, .. } => {
                diagnosis.sysexit
            }
            SmtpError::CaFile { .. } | SmtpError::PlainNotLoopback { .. } => Sysexit::Config,
            SmtpError::StarttlsNotOffered { .. } => Sysexit::Unavailable,
            SmtpError::MessageTooBig { .. }
            | SmtpError::InvalidAddress { .. }
            | SmtpError::Utf8NotOffered { .. } => Sysexit::DataErr,
            SmtpError::NoRecipients => Sysexit::Usage,
            SmtpError::Protocol { .. } => Sysexit::Protocol,
        }
    }
}

/// A long reply cut for the one-line error message (the diagnosis shows it whole).
fn short(text: &str) -> String {
    const MAX: usize = 160;
    if text.len() <= MAX {
        return text.to_string();
    }
    let mut end = MAX;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}...", &text[..end])
}

/// The status for a set of refused recipients: transient only when every refusal is transient,
/// so that a caller retrying later has a chance to succeed.
pub fn worst_status(refused: &[RecipientFailure]) -> Sysexit {
    if refused.is_empty() {
        return Sysexit::Ok;
    }
    if refused
        .iter()
        .all(|r| r.diagnosis.sysexit == Sysexit::TempFail)
    {
        return Sysexit::TempFail;
    }
    refused
        .iter()
        .map(|r| r.diagnosis.sysexit)
        .find(|s| *s != Sysexit::TempFail)
        .unwrap_or(Sysexit::Unavailable)
}

impl SmtpError {
    pub(crate) fn connect(host: &str, port: u16, error: std::io::Error) -> SmtpError {
        let diagnosis = diagnose::smtp::connect_failure(host, port, &error);
        SmtpError::Connect {
            host: host.into(),
            port,
            error,
            diagnosis: Box::new(diagnosis),
        }
    }

    pub(crate) fn connect_timeout(host: &str, port: u16, after: Duration) -> SmtpError {
        SmtpError::ConnectTimeout {
            host: host.into(),
            port,
            after,
            diagnosis: Box::new(diagnose::smtp::connect_timeout(host, port, after)),
        }
    }

    pub(crate) fn tls(host: &str, message: String) -> SmtpError {
        SmtpError::Tls {
            host: host.into(),
            diagnosis: Box::new(diagnose::smtp::tls_failure(host, &message)),
            message,
        }
    }
}
