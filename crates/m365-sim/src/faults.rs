//! Failures the simulator produces on demand, so that diagnoses can be proven against it.
//!
//! Faults that follow from the directory (a secret ID sent instead of the Value, an unregistered
//! redirect URI, Authenticated SMTP off, a missing Send As grant) need no switch here: set up the
//! directory that way. The switches below cover what the directory cannot express.

use serde::{Deserialize, Serialize};

/// Switchable faults; change them at run time with [`crate::Simulator::set_faults`].
#[derive(Clone, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(default, deny_unknown_fields)]
pub struct Faults {
    /// How the token endpoint (and the device code endpoint) misbehaves.
    pub token_endpoint: EndpointFault,
    /// Every refresh token has lapsed (AADSTS700082).
    pub refresh_token_expired: bool,
    /// Refresh and code redemption need MFA (AADSTS50076, `interaction_required`).
    pub mfa_required: bool,
    /// Conditional Access blocks every token request (AADSTS53003).
    pub conditional_access_blocked: bool,
    /// Admin consent is missing: the sign-in page and refresh give AADSTS65001.
    pub consent_required: bool,
    /// The mailbox's daily recipient quota is used up (554 5.2.0 SubmissionQuotaExceeded).
    pub quota_exceeded: bool,
    /// Every SMTP connection is closed right after it is accepted, as when a firewall drops them.
    pub smtp_reject_connections: bool,
}

/// A token endpoint fault.
#[derive(Clone, Copy, Debug, Default, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum EndpointFault {
    /// Works normally.
    #[default]
    None,
    /// Answers every request with this HTTP status (500, 503, 429...) and a short HTML body.
    Status(u16),
    /// Accepts the connection and never answers.
    Hang,
}
