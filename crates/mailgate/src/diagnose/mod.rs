//! Plain-language explanations of what providers answer: every AADSTS error and SMTP reply in
//! the reference maps to what happened, why it usually happens and how to fix it.
//!
//! The catalogue is split by where the failure comes from: [`aadsts`] for the identity platform
//! (token endpoint and sign-in page), [`smtp`] for SMTP replies.

pub mod aadsts;
pub mod smtp;

use std::fmt;

use crate::Sysexit;

/// What went wrong and what to do about it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnosis {
    /// The code that identifies the failure: `AADSTS7000215`, `5.7.139`, ...
    pub code: String,
    /// What failed, in one line.
    pub title: String,
    /// Why it usually happens.
    pub explanation: String,
    /// What to do, step by step (admin-center paths, PowerShell lines, mailgate commands).
    pub fix: Vec<String>,
    /// The provider's own words, verbatim (with secrets removed).
    pub provider_says: String,
    /// The exit status this failure deserves.
    pub sysexit: Sysexit,
}

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "{} ({})", self.title, self.code)?;
        if !self.explanation.is_empty() {
            writeln!(f, "  Why: {}", self.explanation)?;
        }
        if !self.fix.is_empty() {
            writeln!(f, "  Fix:")?;
            for step in &self.fix {
                writeln!(f, "    - {step}")?;
            }
        }
        if !self.provider_says.is_empty() {
            write!(f, "  Provider said: {}", self.provider_says.trim_end())?;
        }
        Ok(())
    }
}

/// The diagnosis carried by a library error in an error chain, if it has one. Each module's error
/// type that carries a [`Diagnosis`] is added here as the module lands.
pub fn of_error<'a>(err: &'a (dyn std::error::Error + 'static)) -> Option<&'a Diagnosis> {
    if let Some(e) = err.downcast_ref::<crate::oauth::OAuthError>() {
        return e.diagnosis();
    }
    if let Some(e) = err.downcast_ref::<crate::smtp::SmtpError>() {
        return e.diagnosis();
    }
    if let Some(e) = err.downcast_ref::<crate::send::SendError>() {
        return e.diagnosis();
    }
    None
}
