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
    /// Answers one step of the SMTP dialogue with this exact reply instead of the usual one, for
    /// replies nothing above produces (`421 4.7.66` old TLS, `550 5.7.708` IP blocked, `550 5.7.60`
    /// Send As, `550 5.1.1` unknown recipient...). A `421` reply closes the connection.
    pub smtp_forced_reply: Option<ForcedReply>,
}

/// A reply [`Faults::smtp_forced_reply`] puts in place of the usual one.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct ForcedReply {
    /// Where in the dialogue.
    pub at: SmtpStep,
    /// The whole reply line(s), without the final CRLF (`550 5.7.708 Access denied...`).
    pub reply: String,
    /// For [`SmtpStep::RcptTo`]: only this recipient (any when `None`).
    #[serde(default)]
    pub recipient: Option<String>,
}

/// A step of the SMTP dialogue.
#[derive(Clone, Copy, Debug, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "snake_case")]
pub enum SmtpStep {
    /// EHLO once TLS is on.
    Ehlo,
    /// AUTH (the final reply).
    Auth,
    /// MAIL FROM.
    MailFrom,
    /// RCPT TO.
    RcptTo,
    /// The reply after the message data.
    Message,
}

impl Faults {
    /// The forced reply for `step` (and `recipient`, for RCPT TO), if one is set.
    pub fn forced_reply(&self, step: SmtpStep, recipient: Option<&str>) -> Option<String> {
        let f = self.smtp_forced_reply.as_ref()?;
        if f.at != step {
            return None;
        }
        match (&f.recipient, recipient) {
            (Some(want), Some(got)) if !want.eq_ignore_ascii_case(got) => None,
            _ => Some(f.reply.clone()),
        }
    }
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
