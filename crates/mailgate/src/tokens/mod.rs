//! Token storage (OS keyring or a 0600 file) and handing out valid access tokens.
//!
//! - [`TokenSet`]: what is stored per account (access token and expiry, refresh token and when it
//!   was issued, granted scopes, identity, flow), as JSON;
//! - [`TokenStore`]: where it is stored ([`FileStore`], [`KeyringStore`]), chosen by
//!   [`open_store`] from `token_store`;
//! - [`TokenManager`]: hands out an access token valid for at least a given time, refreshing it
//!   first when needed, under an exclusive per-account lock shared by every mailgate process, and
//!   saving the rotated refresh token before the access token is handed out.

pub mod file;
pub mod keyring;
mod manager;
pub mod store;

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::config::{ConfigError, Provider};
use crate::oauth::{Flow, OAuthError, TokenResponse};
use crate::sysexits::{HasSysexit, Sysexit};
use crate::Secret;

pub use file::{FileStore, TokenLock};
pub use keyring::KeyringStore;
pub use manager::{forget, lock_path, TokenManager};
pub use store::{all_stores, open_store, StoreKind, TokenStore};

/// How long before expiry `mailgate token` (and SMTP sends) refresh an access token.
pub const DEFAULT_MIN_VALID: Duration = Duration::from_secs(5 * 60);

/// Days of inactivity after which Microsoft refresh tokens lapse.
pub const REFRESH_TOKEN_LIFETIME_DAYS: i64 = 90;
/// From this age on, `status` warns that the refresh token nears its lapse.
pub const REFRESH_TOKEN_WARN_DAYS: i64 = 60;
/// Refresh tokens of Google apps in "Testing" publishing status lapse after 7 days.
pub const GMAIL_TESTING_LIFETIME_DAYS: i64 = 7;

/// Everything stored for one account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct TokenSet {
    /// Format version of the stored JSON.
    #[serde(default = "format_version")]
    pub version: u32,
    /// The flow that obtained the tokens.
    pub flow: Flow,
    /// The app the tokens were issued to (a token of another app cannot be refreshed).
    pub client_id: String,
    pub access_token: Option<Secret>,
    /// When the access token expires.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub expires_at: Option<OffsetDateTime>,
    pub refresh_token: Option<Secret>,
    /// When the current refresh token was issued (at login, then at every rotation): its age
    /// is the inactivity that counts towards the provider's lapse.
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub refresh_token_issued_at: Option<OffsetDateTime>,
    /// The scopes the provider granted.
    #[serde(default)]
    pub scopes: Vec<String>,
    /// Who signed in (`None` for app-only tokens).
    #[serde(default)]
    pub identity: Option<String>,
    /// When the login (or, for client credentials, the first app token) happened.
    #[serde(with = "time::serde::rfc3339")]
    pub obtained_at: OffsetDateTime,
    /// When the tokens last changed.
    #[serde(with = "time::serde::rfc3339")]
    pub updated_at: OffsetDateTime,
}

fn format_version() -> u32 {
    1
}

impl TokenSet {
    /// An empty set for `client_id`, obtained now.
    pub fn new(flow: Flow, client_id: impl Into<String>) -> TokenSet {
        let now = OffsetDateTime::now_utc();
        TokenSet {
            version: format_version(),
            flow,
            client_id: client_id.into(),
            access_token: None,
            expires_at: None,
            refresh_token: None,
            refresh_token_issued_at: None,
            scopes: Vec::new(),
            identity: None,
            obtained_at: now,
            updated_at: now,
        }
    }

    /// The tokens a login (or a client credentials grant) obtained.
    pub fn from_response(
        flow: Flow,
        client_id: impl Into<String>,
        resp: &TokenResponse,
    ) -> TokenSet {
        let mut t = TokenSet::new(flow, client_id);
        t.apply(resp);
        t
    }

    /// Takes in a token response: a new access token, and the rotated refresh token when the
    /// provider sent one (Google usually does not; the old one stays valid then).
    pub fn apply(&mut self, resp: &TokenResponse) {
        let now = OffsetDateTime::now_utc();
        self.access_token = Some(resp.access_token.clone());
        self.expires_at = Some(resp.expires_at);
        if let Some(rt) = &resp.refresh_token {
            self.refresh_token = Some(rt.clone());
            self.refresh_token_issued_at = Some(now);
        }
        if !resp.scopes.is_empty() {
            self.scopes = resp.scopes.clone();
        }
        if resp.identity.is_some() {
            self.identity = resp.identity.clone();
        }
        self.updated_at = now;
    }

    /// The access token, when it stays valid for at least `min_valid` from now.
    pub fn access_token_valid_for(&self, min_valid: Duration) -> Option<&Secret> {
        let at = self.access_token.as_ref()?;
        let expires = self.expires_at?;
        let min = time::Duration::try_from(min_valid).unwrap_or(time::Duration::MAX);
        (expires - OffsetDateTime::now_utc() >= min).then_some(at)
    }

    /// How long ago the refresh token was issued.
    pub fn refresh_token_age(&self) -> Option<time::Duration> {
        self.refresh_token.as_ref()?;
        let issued = self.refresh_token_issued_at.unwrap_or(self.obtained_at);
        Some(OffsetDateTime::now_utc() - issued)
    }

    /// A warning when the refresh token nears the provider's inactivity lapse (Microsoft: 90
    /// days, warned from 60; Google apps in "Testing" status: 7 days).
    pub fn lapse_warning(&self, provider: Provider, account: &str) -> Option<String> {
        let age = self.refresh_token_age()?.whole_days();
        if age >= REFRESH_TOKEN_LIFETIME_DAYS {
            return Some(format!(
                "the refresh token is {age} days old: providers let refresh tokens lapse after \
                 {REFRESH_TOKEN_LIFETIME_DAYS} days without use, so it has probably expired; run \
                 `mailgate login {account}`"
            ));
        }
        if age >= REFRESH_TOKEN_WARN_DAYS {
            return Some(format!(
                "the refresh token is {age} days old and lapses after \
                 {REFRESH_TOKEN_LIFETIME_DAYS} days without use: run `mailgate token {account}` \
                 (or send a message) to renew it, or `mailgate login {account}`"
            ));
        }
        if provider == Provider::Gmail && age >= GMAIL_TESTING_LIFETIME_DAYS - 2 {
            return Some(format!(
                "the refresh token is {age} days old: if the Google app is in \"Testing\" \
                 publishing status its refresh tokens lapse after {GMAIL_TESTING_LIFETIME_DAYS} \
                 days (publish the app to avoid this)"
            ));
        }
        None
    }

    /// The stored form.
    pub fn to_json(&self) -> Vec<u8> {
        serde_json::to_vec_pretty(self).expect("a TokenSet always serialises")
    }

    /// Reads the stored form; the error says what is wrong (never the content).
    pub fn from_json(bytes: &[u8]) -> Result<TokenSet, String> {
        serde_json::from_slice(bytes).map_err(|e| {
            // serde_json's messages name positions and field names, not values.
            format!("not a mailgate token set ({e})")
        })
    }
}

/// Why tokens could not be stored, found or refreshed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TokenError {
    /// Nothing is stored for the account.
    #[error(
        "account {account} is not logged in (no stored tokens): run `mailgate login {account}`"
    )]
    NotLoggedIn { account: String },
    /// The access token has expired and there is no refresh token to get a new one.
    #[error(
        "the access token of account {account} has expired and no refresh token is stored (the \
         login did not grant offline_access): run `mailgate login {account}`"
    )]
    NoRefreshToken { account: String },
    /// The stored tokens belong to another app registration than the one configured now.
    #[error(
        "the stored tokens of account {account} were issued to client {stored}, but the account \
         now uses client {configured}: run `mailgate login {account}`"
    )]
    ClientChanged {
        account: String,
        stored: String,
        configured: String,
    },
    /// The stored tokens cannot be read back.
    #[error(
        "the stored tokens of account {account} ({location}) are damaged: {problem}; run \
         `mailgate login {account}` to replace them"
    )]
    Corrupt {
        account: String,
        location: String,
        problem: String,
    },
    /// A file operation on the token store failed.
    #[error("cannot {action} {}: {source}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    /// Another process held the account's lock for too long.
    #[error(
        "another mailgate process has held the token lock {} for {}s; try again, or remove the \
         lock file if no mailgate is running",
        path.display(),
        waited.as_secs()
    )]
    LockTimeout { path: PathBuf, waited: Duration },
    /// The OS keyring refused an operation.
    #[error("OS keyring: cannot {action} the tokens of account {account}: {message}")]
    Keyring {
        account: String,
        action: &'static str,
        /// The keyring is locked or access was denied (may work later).
        locked: bool,
        message: String,
    },
    /// `token_store = "keyring"` but there is no working keyring.
    #[error(
        "config {}: token_store = \"keyring\", but the OS keyring cannot be used: {reason}; set \
         token_store = \"file\" (or \"auto\")",
        config_path.display()
    )]
    KeyringUnavailable {
        config_path: PathBuf,
        reason: String,
    },
    /// The account's config could not be used (the client secret could not be fetched...).
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The provider refused (or could not be reached for) a refresh.
    #[error("cannot refresh the access token of account {account}")]
    Refresh {
        account: String,
        #[source]
        source: OAuthError,
    },
    /// The provider refused (or could not be reached for) an app-only token.
    #[error("cannot get an app token (client credentials) for account {account}")]
    AppToken {
        account: String,
        #[source]
        source: OAuthError,
    },
    /// The OAuth client could not be set up for the account (bad endpoint, CA file...).
    #[error("account {account}: cannot set up the OAuth client")]
    Client {
        account: String,
        #[source]
        source: OAuthError,
    },
}

impl HasSysexit for TokenError {
    fn sysexit(&self) -> Sysexit {
        match self {
            TokenError::NotLoggedIn { .. }
            | TokenError::NoRefreshToken { .. }
            | TokenError::ClientChanged { .. }
            | TokenError::Corrupt { .. } => Sysexit::NoPerm,
            TokenError::Io { .. } => Sysexit::IoErr,
            TokenError::LockTimeout { .. } => Sysexit::TempFail,
            TokenError::Keyring { locked: true, .. } => Sysexit::TempFail,
            TokenError::Keyring { .. } => Sysexit::IoErr,
            TokenError::KeyringUnavailable { .. } => Sysexit::Config,
            TokenError::Config(e) => e.sysexit(),
            TokenError::Refresh { source, .. }
            | TokenError::AppToken { source, .. }
            | TokenError::Client { source, .. } => source.sysexit(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn json_round_trip_and_no_secret_in_debug() {
        let mut t = TokenSet::new(Flow::DeviceCode, "c");
        t.access_token = Some(Secret::new("AT-SECRET"));
        t.refresh_token = Some(Secret::new("RT-SECRET"));
        t.expires_at = Some(OffsetDateTime::now_utc() + time::Duration::hours(1));
        let back = TokenSet::from_json(&t.to_json()).unwrap();
        assert_eq!(back, t);
        let debug = format!("{t:?}");
        assert!(
            !debug.contains("AT-SECRET") && !debug.contains("RT-SECRET"),
            "{debug}"
        );
        let json = String::from_utf8(t.to_json()).unwrap();
        assert!(json.contains("\"flow\": \"device_code\""), "{json}");
    }

    #[test]
    fn validity_window() {
        let mut t = TokenSet::new(Flow::AuthorizationCode, "c");
        assert!(t.access_token_valid_for(Duration::ZERO).is_none());
        t.access_token = Some(Secret::new("x"));
        t.expires_at = Some(OffsetDateTime::now_utc() + time::Duration::minutes(4));
        assert!(t.access_token_valid_for(Duration::from_secs(60)).is_some());
        assert!(t.access_token_valid_for(DEFAULT_MIN_VALID).is_none());
    }

    #[test]
    fn rotation_is_recorded_only_when_a_new_refresh_token_comes() {
        let mut t = TokenSet::new(Flow::AuthorizationCode, "c");
        let long_ago = OffsetDateTime::now_utc() - time::Duration::days(61);
        t.refresh_token = Some(Secret::new("rt-old"));
        t.refresh_token_issued_at = Some(long_ago);
        assert!(t
            .lapse_warning(Provider::Office365, "work")
            .unwrap()
            .contains("61 days"));
        let exp = OffsetDateTime::now_utc() + time::Duration::hours(1);
        // No refresh token in the response (Google): the old one and its age stay.
        t.apply(&TokenResponse::new(
            Secret::new("at"),
            None,
            exp,
            vec![],
            None,
        ));
        assert_eq!(t.refresh_token.as_ref().unwrap().expose(), "rt-old");
        assert_eq!(t.refresh_token_issued_at, Some(long_ago));
        // A rotated one replaces it and resets the age.
        t.apply(&TokenResponse::new(
            Secret::new("at2"),
            Some(Secret::new("rt-new")),
            exp,
            vec!["SMTP.Send".into()],
            Some("alice@contoso.com".into()),
        ));
        assert_eq!(t.refresh_token.as_ref().unwrap().expose(), "rt-new");
        assert_eq!(t.refresh_token_age().unwrap().whole_days(), 0);
        assert!(t.lapse_warning(Provider::Office365, "work").is_none());
        assert_eq!(t.identity.as_deref(), Some("alice@contoso.com"));
    }
}
