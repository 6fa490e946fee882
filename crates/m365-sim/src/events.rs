//! What the simulator saw, for tests to assert on.

use serde::Serialize;
use time::OffsetDateTime;

/// One thing that happened at the simulator.
#[derive(Clone, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
#[non_exhaustive]
pub enum Event {
    /// A request to the authorize endpoint, and what the user (or auto-approve) decided.
    Authorize {
        client_id: String,
        redirect_uri: String,
        scopes: Vec<String>,
        /// `approved`, `denied`, or an AADSTS error such as `AADSTS50011`.
        outcome: String,
        user: Option<String>,
        pkce: bool,
    },
    /// A device code was issued.
    DeviceCode {
        client_id: String,
        user_code: String,
        scopes: Vec<String>,
    },
    /// A request to the token endpoint.
    TokenRequest {
        grant_type: String,
        client_id: Option<String>,
        tenant: String,
        /// `true` when a PKCE code_verifier was checked and matched.
        pkce_verified: bool,
        /// The signed-in user or, for app-only tokens, `None`.
        user: Option<String>,
        /// `ok`, or the OAuth error code followed by the AADSTS code (`invalid_grant AADSTS700082`).
        outcome: String,
    },
    /// An SMTP AUTH attempt.
    SmtpAuth {
        mechanism: String,
        user: Option<String>,
        tls: bool,
        /// The reply line sent.
        reply: String,
    },
    /// An SMTP transaction that reached a final reply (or was refused at MAIL/RCPT/DATA).
    SmtpTransaction {
        auth_user: Option<String>,
        mail_from: String,
        rcpt_to: Vec<String>,
        /// The final reply line sent.
        reply: String,
        /// Id of the stored message when it was accepted.
        message_id: Option<String>,
    },
}

/// An [`Event`] with the time it happened.
#[derive(Clone, Debug, Serialize)]
pub struct Logged {
    #[serde(with = "time::serde::rfc3339")]
    pub at: OffsetDateTime,
    #[serde(flatten)]
    pub event: Event,
}
