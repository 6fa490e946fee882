//! Everything the identity side issues and the SMTP side checks: authorization codes, device
//! codes, access tokens and refresh tokens.

use std::collections::HashMap;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use rand::distr::{Alphanumeric, SampleString};
use time::{Duration, OffsetDateTime};

/// An access token the identity side issued.
#[derive(Clone, Debug)]
pub struct AccessToken {
    pub client_id: String,
    /// The signed-in user; `None` for app-only (client credentials) tokens.
    pub user: Option<String>,
    /// The resource the token is for, e.g. `https://outlook.office.com`.
    pub audience: String,
    /// Delegated scopes (`scp`), without the resource prefix, e.g. `SMTP.Send`.
    pub scopes: Vec<String>,
    /// App permissions (`roles`) of app-only tokens, e.g. `SMTP.SendAsApp`.
    pub roles: Vec<String>,
    pub expires_at: OffsetDateTime,
}

/// A refresh token; replaced on every use.
#[derive(Clone, Debug)]
pub struct RefreshToken {
    pub client_id: String,
    pub user: String,
    /// The full scopes granted (with resource prefixes), reused on refresh.
    pub scopes: Vec<String>,
    pub issued_at: OffsetDateTime,
    /// Set when it was used (and so replaced) or revoked.
    pub revoked: bool,
}

/// An authorization code, valid ten minutes, once.
#[derive(Clone, Debug)]
pub struct AuthCode {
    pub client_id: String,
    pub user: String,
    pub redirect_uri: String,
    pub scopes: Vec<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub issued_at: OffsetDateTime,
    pub redeemed: bool,
}

/// A pending device authorization.
#[derive(Clone, Debug)]
pub struct DeviceAuth {
    pub client_id: String,
    pub user_code: String,
    pub scopes: Vec<String>,
    pub expires_at: OffsetDateTime,
    pub interval_secs: u64,
    pub last_poll: Option<OffsetDateTime>,
    pub state: DeviceState,
}

/// Where a device authorization stands.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum DeviceState {
    Pending,
    Approved {
        user: String,
    },
    Declined,
    /// Tokens were issued; the device code cannot be used again.
    Redeemed,
}

/// All issued credentials, keyed by their opaque string.
#[derive(Debug, Default)]
pub struct TokenRegistry {
    pub access: HashMap<String, AccessToken>,
    pub refresh: HashMap<String, RefreshToken>,
    pub codes: HashMap<String, AuthCode>,
    /// Keyed by device_code.
    pub devices: HashMap<String, DeviceAuth>,
}

impl TokenRegistry {
    /// Issues an access token shaped like Microsoft's (a JWT whose claims say who it is for);
    /// the simulator validates it by lookup, not by signature.
    pub fn issue_access(&mut self, token: AccessToken, tenant_id: &str) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"sim"}"#);
        let claims = serde_json::json!({
            "aud": token.audience,
            "iss": format!("https://sts.windows.net/{tenant_id}/"),
            "appid": token.client_id,
            "upn": token.user,
            "scp": (!token.scopes.is_empty()).then(|| token.scopes.join(" ")),
            "roles": (!token.roles.is_empty()).then(|| token.roles.clone()),
            "exp": token.expires_at.unix_timestamp(),
            "tid": tenant_id,
        });
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let sig = random_string(43);
        let jwt = format!("{header}.{body}.{sig}");
        self.access.insert(jwt.clone(), token);
        jwt
    }

    /// Issues a refresh token (opaque, like Microsoft's).
    pub fn issue_refresh(&mut self, client_id: &str, user: &str, scopes: &[String]) -> String {
        let rt = format!("1.AQ{}", random_string(120));
        self.refresh.insert(
            rt.clone(),
            RefreshToken {
                client_id: client_id.into(),
                user: user.into(),
                scopes: scopes.to_vec(),
                issued_at: OffsetDateTime::now_utc(),
                revoked: false,
            },
        );
        rt
    }

    /// Issues an authorization code.
    pub fn issue_code(&mut self, code: AuthCode) -> String {
        let c = format!("0.AQ{}", random_string(80));
        self.codes.insert(c.clone(), code);
        c
    }

    /// Expires every access token now (to provoke 535 5.7.3 and refresh-and-retry).
    pub fn expire_access_tokens(&mut self) {
        let past = OffsetDateTime::now_utc() - Duration::seconds(1);
        for t in self.access.values_mut() {
            t.expires_at = past;
        }
    }

    /// Ages every authorization code past its ten-minute lifetime (AADSTS70008 on redemption).
    pub fn expire_codes(&mut self) {
        for c in self.codes.values_mut() {
            c.issued_at -= Duration::minutes(11);
        }
    }

    /// Expires every device code now (`expired_token` on the next poll).
    pub fn expire_device_codes(&mut self) {
        let past = OffsetDateTime::now_utc() - Duration::seconds(1);
        for d in self.devices.values_mut() {
            d.expires_at = past;
        }
    }
}

/// A random alphanumeric string.
pub fn random_string(len: usize) -> String {
    Alphanumeric.sample_string(&mut rand::rng(), len)
}

/// A user code as Microsoft shows them: nine upper-case letters and digits.
pub fn user_code() -> String {
    const ALPHABET: &[u8] = b"ABCDEFGHJKLMNPQRSTUVWXYZ23456789";
    use rand::Rng;
    let mut rng = rand::rng();
    (0..9)
        .map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char)
        .collect()
}

/// The audience (`aud`) of tokens for Exchange Online (SMTP, IMAP, POP), whichever of the
/// `outlook.office.com` / `outlook.office365.com` scope spellings was requested.
pub const OUTLOOK_AUDIENCE: &str = "https://outlook.office.com";
/// The audience of Microsoft Graph tokens; also what a scope without a resource prefix
/// (`SMTP.Send`, `Mail.Send`) is taken to mean, as at Microsoft.
pub const GRAPH_AUDIENCE: &str = "https://graph.microsoft.com";
/// The audience (and the one scope) of Google mail tokens.
pub const GOOGLE_AUDIENCE: &str = "https://mail.google.com/";

/// OpenID Connect scopes: they name no resource and never decide a token's audience.
pub const OIDC_SCOPES: [&str; 4] = ["openid", "profile", "email", "offline_access"];

/// What an access token issued for a set of requested scopes is for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ScopeTarget {
    /// The token's audience, e.g. [`OUTLOOK_AUDIENCE`].
    pub audience: String,
    /// The resource's scopes in short form (`SMTP.Send`), as they appear in the token's `scp`;
    /// for Google, the full scope URL. Excludes `.default` and OpenID Connect scopes.
    pub scopes: Vec<String>,
    /// `{resource}/.default` was requested: all consented delegated scopes, or for client
    /// credentials the app's application permissions (`roles`).
    pub default_scope: bool,
    /// The OpenID Connect scopes that were requested (`openid`, `offline_access`...).
    pub oidc: Vec<String>,
}

/// Why a set of scopes cannot be turned into one token.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// Scopes of more than one resource in one request (AADSTS70011 / AADSTS700022).
    #[error("the scopes name more than one resource: {}", resources.join(", "))]
    MixedResources { resources: Vec<String> },
    /// No scope at all.
    #[error("no scope was requested")]
    Empty,
}

/// Splits one requested scope into its token audience and short name; `None` for an OpenID
/// Connect scope. `https://outlook.office365.com/SMTP.Send` → (`https://outlook.office.com`,
/// `SMTP.Send`); `Mail.Send` → (Graph, `Mail.Send`); `https://mail.google.com/` → (Google, the URL).
pub fn split_scope(scope: &str) -> Option<(String, String)> {
    if OIDC_SCOPES.iter().any(|s| s.eq_ignore_ascii_case(scope)) {
        return None;
    }
    if scope.eq_ignore_ascii_case(GOOGLE_AUDIENCE)
        || scope.eq_ignore_ascii_case(GOOGLE_AUDIENCE.trim_end_matches('/'))
    {
        return Some((GOOGLE_AUDIENCE.into(), GOOGLE_AUDIENCE.into()));
    }
    let Some((scheme, rest)) = scope.split_once("://") else {
        return Some((GRAPH_AUDIENCE.into(), scope.into()));
    };
    let (host, name) = match rest.split_once('/') {
        Some((host, name)) => (host, name),
        None => (rest, ""),
    };
    let resource = format!(
        "{}://{}",
        scheme.to_ascii_lowercase(),
        host.to_ascii_lowercase()
    );
    let audience = match resource.as_str() {
        "https://outlook.office.com" | "https://outlook.office365.com" => OUTLOOK_AUDIENCE.into(),
        "https://graph.microsoft.com" => GRAPH_AUDIENCE.into(),
        _ => resource,
    };
    Some((audience, name.into()))
}

/// Works out the audience and `scp` of the token a request for `scopes` gets, as Entra ID does:
/// all non-OpenID scopes must belong to one resource; only OpenID scopes give a Graph token.
pub fn scope_target<S: AsRef<str>>(scopes: &[S]) -> Result<ScopeTarget, ScopeError> {
    if scopes.is_empty() {
        return Err(ScopeError::Empty);
    }
    let mut audience: Option<String> = None;
    let mut target = ScopeTarget {
        audience: String::new(),
        scopes: Vec::new(),
        default_scope: false,
        oidc: Vec::new(),
    };
    let mut resources: Vec<String> = Vec::new();
    for scope in scopes.iter().map(AsRef::as_ref).filter(|s| !s.is_empty()) {
        match split_scope(scope) {
            None => target.oidc.push(scope.to_ascii_lowercase()),
            Some((aud, name)) => {
                if !resources.contains(&aud) {
                    resources.push(aud.clone());
                }
                audience.get_or_insert(aud);
                if name == ".default" {
                    target.default_scope = true;
                } else if !name.is_empty() && !target.scopes.contains(&name) {
                    target.scopes.push(name);
                }
            }
        }
    }
    if resources.len() > 1 {
        return Err(ScopeError::MixedResources { resources });
    }
    if audience.is_none() && target.oidc.is_empty() {
        return Err(ScopeError::Empty);
    }
    target.audience = audience.unwrap_or_else(|| GRAPH_AUDIENCE.into());
    Ok(target)
}

#[cfg(test)]
mod scope_tests {
    use super::*;

    #[test]
    fn outlook_spellings_share_one_audience() {
        let a = scope_target(&["https://outlook.office.com/SMTP.Send", "offline_access"]).unwrap();
        let b = scope_target(&["https://outlook.office365.com/SMTP.Send"]).unwrap();
        assert_eq!(a.audience, OUTLOOK_AUDIENCE);
        assert_eq!(b.audience, OUTLOOK_AUDIENCE);
        assert_eq!(a.scopes, vec!["SMTP.Send"]);
        assert_eq!(a.oidc, vec!["offline_access"]);
    }

    #[test]
    fn bare_scopes_mean_graph_and_mixing_is_refused() {
        assert_eq!(
            scope_target(&["SMTP.Send"]).unwrap().audience,
            GRAPH_AUDIENCE
        );
        assert_eq!(scope_target(&["openid"]).unwrap().audience, GRAPH_AUDIENCE);
        let err = scope_target(&["https://graph.microsoft.com/Mail.Send", SMTP]).unwrap_err();
        assert!(matches!(err, ScopeError::MixedResources { .. }));
        assert_eq!(scope_target::<&str>(&[]), Err(ScopeError::Empty));
    }

    #[test]
    fn default_and_google() {
        let t = scope_target(&["https://outlook.office365.com/.default"]).unwrap();
        assert!(t.default_scope);
        assert!(t.scopes.is_empty());
        assert_eq!(t.audience, OUTLOOK_AUDIENCE);
        let g = scope_target(&["https://mail.google.com/"]).unwrap();
        assert_eq!(g.audience, GOOGLE_AUDIENCE);
        assert_eq!(g.scopes, vec![GOOGLE_AUDIENCE]);
    }

    const SMTP: &str = "https://outlook.office.com/SMTP.Send";
}
