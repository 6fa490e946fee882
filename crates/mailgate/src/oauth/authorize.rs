//! The authorization code flow: PKCE S256, a random `state`, a loopback listener, the
//! authorization URL, and the code exchange.
//!
//! It comes in two halves so that a caller can show (or fetch) the URL before waiting. The
//! browser's request to the loopback listener is answered only once the code has been exchanged
//! (so that the page can say whether the login worked): a caller that fetches the URL itself must
//! do so while `finish` runs, e.g. with `finish` spawned on a task.
//!
//! ```no_run
//! # async fn example(client: mailgate::oauth::OAuthClient) -> Result<(), mailgate::oauth::OAuthError> {
//! use mailgate::oauth::AuthorizationOptions;
//! let pending = client.start_authorization(&AuthorizationOptions::default()).await?;
//! println!("{}", pending.url()); // or open a browser, or fetch it
//! let tokens = pending.finish(std::time::Duration::from_secs(300)).await?;
//! # Ok(()) }
//! ```

use std::time::Duration;

use super::client::{OAuthClient, TokenResponse};
use super::error::{OAuthError, Step};
use super::loopback::{Callback, LoopbackListener};
use super::pkce::{new_state, Pkce};
use crate::Secret;

/// Options of the authorization request.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct AuthorizationOptions {
    /// Pre-fills the sign-in page with this account (`login_hint`), usually the SMTP user.
    pub login_hint: Option<String>,
    /// `prompt`: `select_account`, `login` or `consent`; `None` lets the provider choose.
    pub prompt: Option<String>,
}

impl AuthorizationOptions {
    /// Options with a `login_hint`.
    pub fn with_login_hint(mut self, hint: Option<impl Into<String>>) -> Self {
        self.login_hint = hint.map(Into::into);
        self
    }

    /// Options with a `prompt`.
    pub fn with_prompt(mut self, prompt: Option<impl Into<String>>) -> Self {
        self.prompt = prompt.map(Into::into);
        self
    }
}

/// A sign-in in progress: the listener is bound and the URL is ready.
#[derive(Debug)]
pub struct PendingAuthorization {
    client: OAuthClient,
    url: String,
    listener: LoopbackListener,
    redirect_uri: String,
    state: Secret,
    pkce: Pkce,
}

/// An authorization code received on the loopback listener, not yet exchanged.
#[derive(Debug)]
pub struct ReceivedCode {
    /// The code.
    pub code: Secret,
    /// The PKCE verifier that goes with it.
    pub code_verifier: Secret,
    /// The redirect URI the code was issued for (it must be sent again).
    pub redirect_uri: String,
    /// The browser, waiting for the outcome.
    pub reply: super::loopback::BrowserReply,
}

/// Opens `url` in the user's web browser (`$BROWSER`, else the platform's default). Fails when
/// there is none, as on a server: the caller should have printed the URL anyway.
pub fn open_in_browser(url: &str) -> std::io::Result<()> {
    let mut options = webbrowser::BrowserOptions::new();
    options.with_suppress_output(true);
    webbrowser::open_browser_with_options(webbrowser::Browser::Default, url, &options)
}

/// Google wants `access_type=offline` to issue a refresh token; Entra ID uses `offline_access`.
fn is_google(url: &url::Url) -> bool {
    url.host_str() == Some("accounts.google.com") || url.path().ends_with("/o/oauth2/v2/auth")
}

impl OAuthClient {
    /// Binds the loopback listener (the account's `redirect_port`; 0 picks a free port) and
    /// builds the authorization URL with PKCE S256 and a fresh 256-bit `state`.
    pub async fn start_authorization(
        &self,
        options: &AuthorizationOptions,
    ) -> Result<PendingAuthorization, OAuthError> {
        let endpoints = self.endpoints();
        let listener =
            LoopbackListener::bind(&endpoints.redirect_uri, endpoints.redirect_port).await?;
        let redirect_uri = listener.redirect_uri().to_string();
        let state = new_state();
        let pkce = Pkce::generate();
        let mut url = super::client::check_endpoint("authorize_url", &endpoints.authorize_url)?;
        {
            let mut q = url.query_pairs_mut();
            q.append_pair("client_id", &endpoints.client_id)
                .append_pair("response_type", "code")
                .append_pair("redirect_uri", &redirect_uri)
                .append_pair("scope", &endpoints.scopes.join(" "))
                .append_pair("state", state.expose())
                .append_pair("code_challenge", &pkce.challenge)
                .append_pair("code_challenge_method", pkce.method());
            if let Some(hint) = options.login_hint.as_deref().filter(|h| !h.is_empty()) {
                q.append_pair("login_hint", hint);
            }
            if let Some(prompt) = options.prompt.as_deref().filter(|p| !p.is_empty()) {
                q.append_pair("prompt", prompt);
            }
        }
        if is_google(&url) {
            url.query_pairs_mut().append_pair("access_type", "offline");
        }
        // Diagnoses keep naming the configured redirect URI: it is the one to register (the
        // port of a loopback URI does not matter to the provider).
        Ok(PendingAuthorization {
            client: self.clone(),
            url: url.to_string(),
            listener,
            redirect_uri,
            state,
            pkce,
        })
    }
}

impl PendingAuthorization {
    /// The URL to open in a browser. It holds no secret (the state and the PKCE challenge are
    /// meant to travel through the browser).
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The redirect URI in use, with the bound port.
    pub fn redirect_uri(&self) -> &str {
        &self.redirect_uri
    }

    /// Waits for the browser to come back with a code (or an error), up to `timeout`.
    pub async fn wait_for_code(self, timeout: Duration) -> Result<ReceivedCode, OAuthError> {
        let ctx = self.client.context.clone();
        match self.listener.wait(&self.state, timeout, &ctx).await? {
            Callback::Code { code, reply } => Ok(ReceivedCode {
                code,
                code_verifier: self.pkce.verifier,
                redirect_uri: self.redirect_uri,
                reply,
            }),
            Callback::Error(provider) => Err(self.client.refused(Step::Authorize, provider)),
        }
    }

    /// Waits for the code, exchanges it, and tells the browser whether it worked.
    pub async fn finish(self, timeout: Duration) -> Result<TokenResponse, OAuthError> {
        let client = self.client.clone();
        let received = self.wait_for_code(timeout).await?;
        let result = client
            .exchange_code(
                &received.code,
                &received.code_verifier,
                &received.redirect_uri,
            )
            .await;
        match &result {
            Ok(tokens) => {
                let who = match &tokens.identity {
                    Some(id) => format!("mailgate is now authorized to send as {id}."),
                    None => "mailgate is now authorized.".to_string(),
                };
                received.reply.success(&who).await;
            }
            Err(e) => {
                let what = match e.diagnosis() {
                    Some(d) => format!("{} ({}).", d.title, d.code),
                    None => e.to_string(),
                };
                received
                    .reply
                    .failure(&format!("The sign-in could not be completed: {what}"))
                    .await;
            }
        }
        result
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::OAuthEndpoints;

    fn endpoints(authorize: &str) -> OAuthEndpoints {
        OAuthEndpoints {
            authorize_url: authorize.into(),
            token_url: "http://127.0.0.1:9/tenant/oauth2/v2.0/token".into(),
            device_authorization_url: None,
            client_id: "client-1".into(),
            client_secret: Some(Secret::new("the-secret-value")),
            scopes: vec![
                "offline_access".into(),
                "https://outlook.office.com/SMTP.Send".into(),
            ],
            redirect_uri: "http://localhost:3017/".into(),
            redirect_port: 0,
            ca_file: None,
        }
    }

    #[tokio::test]
    async fn the_url_carries_pkce_state_and_the_bound_port() {
        let client = OAuthClient::new(endpoints(
            "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/authorize",
        ))
        .unwrap();
        let opts = AuthorizationOptions::default()
            .with_login_hint(Some("alice@contoso.com"))
            .with_prompt(Some("select_account"));
        let pending = client.start_authorization(&opts).await.unwrap();
        let url = url::Url::parse(pending.url()).unwrap();
        let q: std::collections::HashMap<_, _> = url.query_pairs().into_owned().collect();
        assert_eq!(q["response_type"], "code");
        assert_eq!(q["client_id"], "client-1");
        assert_eq!(q["code_challenge_method"], "S256");
        assert_eq!(q["code_challenge"].len(), 43);
        assert!(q["state"].len() >= 22);
        assert_eq!(q["login_hint"], "alice@contoso.com");
        assert_eq!(q["prompt"], "select_account");
        assert_eq!(
            q["scope"],
            "offline_access https://outlook.office.com/SMTP.Send"
        );
        assert_eq!(q["redirect_uri"], pending.redirect_uri());
        assert!(pending.redirect_uri().starts_with("http://localhost:"));
        assert_ne!(pending.redirect_uri(), "http://localhost:3017/");
        assert!(!q.contains_key("access_type"));
        assert!(!pending.url().contains("the-secret-value"));
    }

    #[tokio::test]
    async fn google_gets_offline_access_type() {
        let client =
            OAuthClient::new(endpoints("https://accounts.google.com/o/oauth2/v2/auth")).unwrap();
        let pending = client
            .start_authorization(&AuthorizationOptions::default())
            .await
            .unwrap();
        assert!(pending.url().contains("access_type=offline"));
    }
}
