//! OAuth2 against Entra ID (and Google, and any RFC 6749 server): authorization code with PKCE and
//! a loopback redirect, device code, client credentials, and refresh.

mod authorize;
mod client;
mod device;
mod error;
mod loopback;
pub mod pkce;
#[cfg(test)]
mod testserver;

pub use authorize::{open_in_browser, AuthorizationOptions, PendingAuthorization, ReceivedCode};
pub use client::{jwt_claims, OAuthClient, RetryPolicy, TokenResponse};
pub use device::DeviceAuthorization;
pub use error::{OAuthError, ProviderError, Step};
pub use loopback::{BrowserReply, Callback, LoopbackListener};

use crate::Secret;

/// Which grant an account signs in with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize, Default)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Browser sign-in, redirect caught on a loopback listener; PKCE S256.
    #[default]
    AuthorizationCode,
    /// A code typed on another device (headless machines).
    DeviceCode,
    /// App-only: the app's own credentials, no user, no refresh token.
    ClientCredentials,
}

/// What the OAuth client needs to know about an account: endpoints, client and scopes.
#[derive(Clone, Debug)]
pub struct OAuthEndpoints {
    pub authorize_url: String,
    pub token_url: String,
    pub device_authorization_url: Option<String>,
    pub client_id: String,
    /// The client secret's Value; `None` for public clients.
    pub client_secret: Option<Secret>,
    pub scopes: Vec<String>,
    /// The redirect URI registered on the app, e.g. `http://localhost:3017/`.
    pub redirect_uri: String,
    /// The port the loopback listener binds; 0 picks a free one (Entra ignores loopback ports).
    pub redirect_port: u16,
    /// An extra trust anchor (PEM) for HTTPS.
    pub ca_file: Option<std::path::PathBuf>,
}
