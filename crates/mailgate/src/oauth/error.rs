//! What can go wrong in an OAuth flow, and the provider's own error reports.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use crate::sysexits::HasSysexit;
use crate::{Diagnosis, Sysexit};

/// The step of a flow that failed; it heads every error message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum Step {
    /// The browser sign-in (authorize endpoint and the redirect back).
    Authorize,
    /// Redeeming the authorization code at the token endpoint.
    CodeExchange,
    /// Refreshing the access token with the refresh token.
    Refresh,
    /// Getting an app-only token with the client credentials grant.
    ClientCredentials,
    /// Asking for a device code.
    DeviceAuthorization,
    /// Polling the token endpoint while the user enters the device code.
    DevicePolling,
}

impl fmt::Display for Step {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Step::Authorize => "signing in",
            Step::CodeExchange => "redeeming the authorization code",
            Step::Refresh => "refreshing the access token",
            Step::ClientCredentials => "getting an app-only token (client credentials)",
            Step::DeviceAuthorization => "requesting a device code",
            Step::DevicePolling => "waiting for the device code to be entered",
        })
    }
}

/// An error report from the identity provider: the token endpoint's JSON (Entra ID or Google) or
/// the `error` parameters of a redirect.
///
/// Entra ID's `error_description` reads `AADSTS7000215: Invalid client secret provided. ...`
/// followed by `Trace ID:`, `Correlation ID:` and `Timestamp:` lines; Google's is one sentence.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ProviderError {
    /// The HTTP status of the answer (`None` for a redirect).
    pub http_status: Option<u16>,
    /// The OAuth error code: `invalid_client`, `invalid_grant`, `access_denied`...
    pub error: String,
    /// The full `error_description`, with secrets we sent removed.
    pub description: Option<String>,
    /// The AADSTS number, from `error_codes` or the description's `AADSTSnnnn:` prefix.
    pub aadsts: Option<u32>,
    /// Entra ID's `suberror` (`bad_token`, `consent_required`, `basic_action`...).
    pub suberror: Option<String>,
    /// Entra ID's trace id, for Microsoft support.
    pub trace_id: Option<String>,
    /// Entra ID's correlation id, for Microsoft support.
    pub correlation_id: Option<String>,
    /// When the provider says the error happened.
    pub timestamp: Option<String>,
}

#[derive(serde::Deserialize)]
struct RawError {
    error: String,
    #[serde(default)]
    error_description: Option<String>,
    #[serde(default)]
    error_codes: Vec<u32>,
    #[serde(default)]
    suberror: Option<String>,
    #[serde(default)]
    trace_id: Option<String>,
    #[serde(default)]
    correlation_id: Option<String>,
    #[serde(default)]
    timestamp: Option<String>,
}

impl ProviderError {
    /// Parses an error body of the token or device endpoint. `None` when the body is not an
    /// OAuth error JSON (an HTML error page, say).
    pub fn from_json(http_status: Option<u16>, body: &[u8]) -> Option<ProviderError> {
        let raw: RawError = serde_json::from_slice(body).ok()?;
        if raw.error.trim().is_empty() {
            return None;
        }
        Some(ProviderError::build(
            http_status,
            raw.error,
            raw.error_description,
            raw.error_codes.first().copied(),
            raw.suberror,
            raw.trace_id,
            raw.correlation_id,
            raw.timestamp,
        ))
    }

    /// Builds the error of a redirect that came back with `error=...&error_description=...`
    /// (query parameters, already decoded).
    pub fn from_redirect<'a>(
        params: impl IntoIterator<Item = (&'a str, &'a str)>,
    ) -> ProviderError {
        let mut error = String::new();
        let mut description = None;
        let mut codes = None;
        let mut suberror = None;
        for (k, v) in params {
            match k {
                "error" => error = v.to_string(),
                "error_description" => description = Some(v.to_string()),
                "error_codes" | "error_code" => {
                    codes = v.split([',', ' ']).find_map(|c| c.trim().parse().ok())
                }
                "error_subcode" | "suberror" => suberror = Some(v.to_string()),
                _ => {}
            }
        }
        ProviderError::build(None, error, description, codes, suberror, None, None, None)
    }

    /// A provider-shaped error for a condition detected locally (a device code that expired
    /// before the provider said so).
    pub fn local(error: &str, description: &str) -> ProviderError {
        ProviderError::build(
            None,
            error.into(),
            Some(description.into()),
            None,
            None,
            None,
            None,
            None,
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn build(
        http_status: Option<u16>,
        error: String,
        description: Option<String>,
        code: Option<u32>,
        suberror: Option<String>,
        trace_id: Option<String>,
        correlation_id: Option<String>,
        timestamp: Option<String>,
    ) -> ProviderError {
        let description = description.filter(|d| !d.trim().is_empty());
        let from_text = |prefix: &str| -> Option<String> {
            description.as_deref().and_then(|d| {
                d.lines()
                    .find_map(|l| l.trim().strip_prefix(prefix).map(|v| v.trim().to_string()))
                    .filter(|v| !v.is_empty())
            })
        };
        let aadsts = code.or_else(|| description.as_deref().and_then(aadsts_prefix));
        ProviderError {
            http_status,
            aadsts,
            suberror: suberror.filter(|s| !s.is_empty()),
            trace_id: trace_id
                .filter(|s| !s.is_empty())
                .or_else(|| from_text("Trace ID:")),
            correlation_id: correlation_id
                .filter(|s| !s.is_empty())
                .or_else(|| from_text("Correlation ID:")),
            timestamp: timestamp
                .filter(|s| !s.is_empty())
                .or_else(|| from_text("Timestamp:")),
            error,
            description,
        }
    }

    /// The first line of the description (the provider's own words), else the error code.
    pub fn summary(&self) -> &str {
        self.description
            .as_deref()
            .and_then(|d| d.lines().map(str::trim).find(|l| !l.is_empty()))
            .unwrap_or(&self.error)
    }

    /// `AADSTS7000215` when Entra ID gave a number, else the OAuth error (`invalid_grant`).
    pub fn code(&self) -> String {
        match self.aadsts {
            Some(n) => format!("AADSTS{n}"),
            None => self.error.clone(),
        }
    }

    /// The provider's words for a diagnosis: the summary line plus the ids Microsoft support
    /// asks for.
    pub fn provider_says(&self) -> String {
        let mut s = self.summary().to_string();
        if !self.error.is_empty() && !s.contains(&self.error) {
            s = format!("{} ({})", s, self.error);
        }
        let ids: Vec<String> = [
            ("Trace ID", &self.trace_id),
            ("Correlation ID", &self.correlation_id),
            ("Timestamp", &self.timestamp),
        ]
        .iter()
        .filter_map(|(k, v)| v.as_ref().map(|v| format!("{k}: {v}")))
        .collect();
        if !ids.is_empty() {
            s = format!("{s} [{}]", ids.join("; "));
        }
        s
    }

    /// Removes every occurrence of the given secret values from the texts (providers sometimes
    /// echo what they were sent).
    pub(crate) fn scrub(mut self, secrets: &[&str]) -> ProviderError {
        let clean = |s: &mut String| {
            for secret in secrets.iter().filter(|s| s.len() >= 4) {
                if s.contains(secret) {
                    *s = s.replace(secret, "[redacted]");
                }
            }
        };
        clean(&mut self.error);
        if let Some(d) = self.description.as_mut() {
            clean(d);
        }
        self
    }

    /// Whether the provider says to try again later (`temporarily_unavailable`, `server_error`).
    pub fn is_transient(&self) -> bool {
        matches!(
            self.error.as_str(),
            "temporarily_unavailable" | "server_error"
        )
    }
}

/// `7000215` from `AADSTS7000215: ...`.
fn aadsts_prefix(description: &str) -> Option<u32> {
    let rest = description.trim_start().strip_prefix("AADSTS")?;
    let digits: String = rest.chars().take_while(char::is_ascii_digit).collect();
    digits.parse().ok()
}

impl fmt::Display for ProviderError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let summary = self.summary();
        if summary == self.error {
            f.write_str(summary)?;
        } else {
            write!(f, "{}: {}", self.error, summary)?;
        }
        if let Some(t) = &self.trace_id {
            write!(f, " (trace ID {t}")?;
            if let Some(c) = &self.correlation_id {
                write!(f, ", correlation ID {c}")?;
            }
            f.write_str(")")?;
        } else if let Some(c) = &self.correlation_id {
            write!(f, " (correlation ID {c})")?;
        }
        Ok(())
    }
}

/// Why an OAuth flow failed. Every variant names what the user needs to act; the ones that
/// come with a plain-language explanation expose it through [`OAuthError::diagnosis`].
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum OAuthError {
    /// An endpoint or redirect URI cannot be used (bad URL, plain `http://` to a remote host...).
    #[error("{what} `{url}` cannot be used: {reason}")]
    InvalidEndpoint {
        what: &'static str,
        url: String,
        reason: String,
    },
    /// A setting the flow needs is missing (a client secret for client credentials...).
    #[error("{step}: {what}")]
    MissingSetting { step: Step, what: String },
    /// The extra CA file cannot be read or holds no certificate.
    #[error("cannot use the CA file {}: {reason}", path.display())]
    CaFile { path: PathBuf, reason: String },
    /// The HTTPS client could not be set up.
    #[error("cannot set up the HTTPS client: {0}")]
    HttpClient(String),
    /// The identity provider refused (bad secret, expired refresh token, consent missing, user
    /// declined...). Final: retrying gives the same answer until something is fixed.
    #[error("{step}: the identity provider refused: {provider}")]
    Refused {
        step: Step,
        provider: Box<ProviderError>,
        diagnosis: Box<Diagnosis>,
    },
    /// The provider could not be reached, or kept answering 5xx/429, through every retry.
    #[error(
        "{step}: {url} did not answer usefully after {attempts} attempt(s) over {}s: {last_failure}",
        elapsed.as_secs()
    )]
    Unavailable {
        step: Step,
        url: String,
        attempts: u32,
        elapsed: Duration,
        last_failure: String,
        diagnosis: Box<Diagnosis>,
    },
    /// The provider answered something that is not OAuth (an HTML page, a malformed JSON).
    #[error("{step}: unexpected answer from {url} (HTTP {status}): {detail}")]
    UnexpectedResponse {
        step: Step,
        url: String,
        status: u16,
        detail: String,
    },
    /// The loopback port for the sign-in redirect is taken by another program.
    #[error("cannot listen for the sign-in redirect on {addr}: the port is already in use")]
    PortInUse {
        addr: String,
        diagnosis: Box<Diagnosis>,
    },
    /// The loopback listener could not be started for another reason.
    #[error("cannot listen for the sign-in redirect on {addr}: {source}")]
    Listen {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    /// No usable redirect reached the loopback listener in time.
    #[error(
        "no sign-in redirect reached {redirect_uri} within {}s{}",
        waited.as_secs(),
        if *rejected > 0 { format!(" ({rejected} redirect(s) with a wrong state were rejected)") } else { String::new() }
    )]
    Timeout {
        redirect_uri: String,
        waited: Duration,
        /// Redirects that arrived with a wrong `state` and were ignored.
        rejected: usize,
        diagnosis: Box<Diagnosis>,
    },
}

impl OAuthError {
    /// The plain-language explanation of this failure, when there is one.
    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        match self {
            OAuthError::Refused { diagnosis, .. }
            | OAuthError::Unavailable { diagnosis, .. }
            | OAuthError::PortInUse { diagnosis, .. }
            | OAuthError::Timeout { diagnosis, .. } => Some(diagnosis),
            _ => None,
        }
    }

    /// The provider's error report, when the provider refused.
    pub fn provider_error(&self) -> Option<&ProviderError> {
        match self {
            OAuthError::Refused { provider, .. } => Some(provider),
            _ => None,
        }
    }

    /// Whether retrying later may succeed without changing anything (exit status 75).
    pub fn is_transient(&self) -> bool {
        self.sysexit() == Sysexit::TempFail
    }
}

impl HasSysexit for OAuthError {
    fn sysexit(&self) -> Sysexit {
        match self {
            OAuthError::InvalidEndpoint { .. }
            | OAuthError::MissingSetting { .. }
            | OAuthError::CaFile { .. } => Sysexit::Config,
            OAuthError::HttpClient(_) => Sysexit::Software,
            OAuthError::Refused { diagnosis, .. } => diagnosis.sysexit,
            OAuthError::Unavailable { .. } | OAuthError::Timeout { .. } => Sysexit::TempFail,
            OAuthError::PortInUse { .. } | OAuthError::Listen { .. } => Sysexit::TempFail,
            OAuthError::UnexpectedResponse { .. } => Sysexit::Protocol,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MS_BODY: &str = r#"{"error":"invalid_client","error_description":"AADSTS7000215: Invalid client secret provided. Ensure the secret being sent in the request is the client secret value, not the client secret ID, for a secret added to app '0d5c7a43'.\r\nTrace ID: 0a1b2c3d-0000-4000-8000-000000000001\r\nCorrelation ID: 5e6f7a8b-0000-4000-8000-000000000002\r\nTimestamp: 2024-07-11 11:46:42Z","error_codes":[7000215],"timestamp":"2024-07-11 11:46:42Z","trace_id":"0a1b2c3d-0000-4000-8000-000000000001","correlation_id":"5e6f7a8b-0000-4000-8000-000000000002","error_uri":"https://login.microsoftonline.com/error?code=7000215"}"#;

    #[test]
    fn parses_entra_errors() {
        let e = ProviderError::from_json(Some(401), MS_BODY.as_bytes()).unwrap();
        assert_eq!(e.error, "invalid_client");
        assert_eq!(e.aadsts, Some(7000215));
        assert_eq!(e.code(), "AADSTS7000215");
        assert!(e
            .summary()
            .starts_with("AADSTS7000215: Invalid client secret provided."));
        assert!(!e.summary().contains("Trace ID"));
        assert_eq!(
            e.trace_id.as_deref(),
            Some("0a1b2c3d-0000-4000-8000-000000000001")
        );
        let says = e.provider_says();
        assert!(
            says.contains("Correlation ID: 5e6f7a8b-0000-4000-8000-000000000002"),
            "{says}"
        );
        assert!(e.to_string().starts_with("invalid_client: AADSTS7000215"));
    }

    #[test]
    fn takes_ids_from_the_description_when_fields_are_missing() {
        let body = r#"{"error":"invalid_grant","error_description":"AADSTS700082: The refresh token has expired due to inactivity.\r\nTrace ID: t-1\r\nCorrelation ID: c-1\r\nTimestamp: now"}"#;
        let e = ProviderError::from_json(Some(400), body.as_bytes()).unwrap();
        assert_eq!(e.aadsts, Some(700082));
        assert_eq!(e.trace_id.as_deref(), Some("t-1"));
        assert_eq!(e.correlation_id.as_deref(), Some("c-1"));
    }

    #[test]
    fn parses_google_errors() {
        let body =
            r#"{"error":"invalid_grant","error_description":"Token has been expired or revoked."}"#;
        let e = ProviderError::from_json(Some(400), body.as_bytes()).unwrap();
        assert_eq!(e.aadsts, None);
        assert_eq!(e.code(), "invalid_grant");
        assert_eq!(
            e.to_string(),
            "invalid_grant: Token has been expired or revoked."
        );
        assert!(ProviderError::from_json(Some(502), b"<html>Bad gateway</html>").is_none());
    }

    #[test]
    fn parses_redirect_errors() {
        let e = ProviderError::from_redirect([
            ("error", "access_denied"),
            (
                "error_description",
                "AADSTS65004: User declined to consent to access the app.",
            ),
            ("state", "x"),
        ]);
        assert_eq!(e.aadsts, Some(65004));
        assert_eq!(e.http_status, None);
    }

    #[test]
    fn scrubs_echoed_secrets() {
        let e = ProviderError::local("invalid_grant", "bad token 1.AQsecretsecret given")
            .scrub(&["1.AQsecretsecret"]);
        assert!(!e.summary().contains("secretsecret"));
    }
}
