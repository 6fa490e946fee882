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
    Approved { user: String },
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
    (0..9).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}
