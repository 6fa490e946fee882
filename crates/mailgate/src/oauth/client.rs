//! [`OAuthClient`]: talks to the token endpoint (code exchange, refresh, client credentials) with
//! retries of transient failures, and turns refusals into diagnosed errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::engine::general_purpose::{URL_SAFE, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Deserialize;
use time::OffsetDateTime;

use super::error::{OAuthError, ProviderError, Step};
use super::OAuthEndpoints;
use crate::diagnose::aadsts;
use crate::Secret;

/// How transient failures (network errors, timeouts, HTTP 5xx, 429) are retried.
///
/// The default makes at most 4 attempts, waiting 1 s, 2 s, 4 s between them (or what a 429's
/// `Retry-After` asks, in seconds), and gives up once 30 s have gone by.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Attempts in all, the first included (at least 1).
    pub max_attempts: u32,
    /// The wait before the second attempt; it doubles for each further one.
    pub initial_delay: Duration,
    /// The longest wait between two attempts.
    pub max_delay: Duration,
    /// No new attempt starts when it would begin after this much time since the first.
    pub total_budget: Duration,
    /// How long one request may take, connection included.
    pub request_timeout: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            max_attempts: 4,
            initial_delay: Duration::from_secs(1),
            max_delay: Duration::from_secs(8),
            total_budget: Duration::from_secs(30),
            request_timeout: Duration::from_secs(15),
        }
    }
}

impl RetryPolicy {
    /// A single attempt, no retries.
    pub fn no_retries() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 1,
            ..RetryPolicy::default()
        }
    }
}

/// What the token endpoint granted.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct TokenResponse {
    /// The bearer token for SMTP.
    pub access_token: Secret,
    /// A refresh token, when one was granted (with `offline_access`). Refresh tokens rotate:
    /// store the new one before using the access token.
    pub refresh_token: Option<Secret>,
    /// When the access token expires (from `expires_in`).
    pub expires_at: OffsetDateTime,
    /// The scopes granted (the response's `scope`, else those requested).
    pub scopes: Vec<String>,
    /// Who signed in: `preferred_username` (or `email`) of the id_token, else `upn` of the access
    /// token; `None` for app-only tokens and opaque tokens without an id_token.
    pub identity: Option<String>,
}

impl TokenResponse {
    /// Builds a response by hand (for stores and tests).
    pub fn new(
        access_token: Secret,
        refresh_token: Option<Secret>,
        expires_at: OffsetDateTime,
        scopes: Vec<String>,
        identity: Option<String>,
    ) -> TokenResponse {
        TokenResponse {
            access_token,
            refresh_token,
            expires_at,
            scopes,
            identity,
        }
    }
}

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrString {
    Num(i64),
    Str(String),
}

#[derive(Deserialize)]
struct RawToken {
    access_token: String,
    #[serde(default)]
    token_type: Option<String>,
    #[serde(default)]
    expires_in: Option<NumOrString>,
    #[serde(default)]
    refresh_token: Option<String>,
    #[serde(default)]
    scope: Option<String>,
    #[serde(default)]
    id_token: Option<String>,
}

/// The claims of a JWT, decoded without checking the signature (we only read who signed in;
/// the token is the provider's to verify).
pub fn jwt_claims(token: &str) -> Option<serde_json::Value> {
    let mut parts = token.split('.');
    let (_header, payload, _sig) = (parts.next()?, parts.next()?, parts.next()?);
    let bytes = URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .or_else(|_| URL_SAFE.decode(payload))
        .ok()?;
    serde_json::from_slice(&bytes).ok()
}

fn claim(claims: &serde_json::Value, names: &[&str]) -> Option<String> {
    names.iter().find_map(|n| {
        claims
            .get(n)
            .and_then(|v| v.as_str())
            .filter(|s| !s.is_empty())
            .map(str::to_string)
    })
}

/// Who a token response says signed in.
fn identity_of(id_token: Option<&str>, access_token: &str) -> Option<String> {
    id_token
        .and_then(jwt_claims)
        .and_then(|c| claim(&c, &["preferred_username", "email", "upn"]))
        .or_else(|| {
            jwt_claims(access_token)
                .and_then(|c| claim(&c, &["upn", "unique_name", "preferred_username", "email"]))
        })
}

/// Form fields whose values never reach a log.
const SECRET_FIELDS: &[&str] = &[
    "client_secret",
    "refresh_token",
    "code",
    "code_verifier",
    "device_code",
    "client_assertion",
    "password",
];

/// Whether `host` is a loopback name or address.
pub(crate) fn is_loopback_host(host: &url::Host<&str>) -> bool {
    match host {
        url::Host::Domain(d) => d.eq_ignore_ascii_case("localhost"),
        url::Host::Ipv4(a) => a.is_loopback(),
        url::Host::Ipv6(a) => a.is_loopback(),
    }
}

/// Checks an endpoint: `https://`, or plain `http://` to a loopback host only.
pub(crate) fn check_endpoint(what: &'static str, raw: &str) -> Result<url::Url, OAuthError> {
    let invalid = |reason: String| OAuthError::InvalidEndpoint {
        what,
        url: raw.to_string(),
        reason,
    };
    let url = url::Url::parse(raw).map_err(|e| invalid(format!("not a URL ({e})")))?;
    let host = url.host().ok_or_else(|| invalid("it has no host".into()))?;
    match url.scheme() {
        "https" => Ok(url),
        "http" if is_loopback_host(&host) => Ok(url),
        "http" => Err(invalid(
            "plain http:// is allowed only to localhost; use https://".into(),
        )),
        other => Err(invalid(format!(
            "unsupported scheme `{other}`; use https://"
        ))),
    }
}

/// The `{tenant}` of an Entra ID endpoint URL (`/contoso.onmicrosoft.com/oauth2/v2.0/token`).
fn tenant_of(url: &url::Url) -> Option<String> {
    let segs: Vec<&str> = url.path_segments()?.collect();
    match segs.as_slice() {
        [tenant, "oauth2", ..] if !tenant.is_empty() => Some((*tenant).to_string()),
        _ => None,
    }
}

fn root_store(ca_file: Option<&std::path::Path>) -> Result<rustls::RootCertStore, OAuthError> {
    let mut roots = rustls::RootCertStore::empty();
    let native = rustls_native_certs::load_native_certs();
    roots.add_parsable_certificates(native.certs);
    if roots.is_empty() {
        roots.extend(webpki_roots::TLS_SERVER_ROOTS.iter().cloned());
    }
    if let Some(path) = ca_file {
        use rustls_pki_types::pem::PemObject;
        let ca_err = |reason: String| OAuthError::CaFile {
            path: path.to_owned(),
            reason,
        };
        let certs: Vec<_> = rustls_pki_types::CertificateDer::pem_file_iter(path)
            .map_err(|e| ca_err(e.to_string()))?
            .collect::<Result<_, _>>()
            .map_err(|e| ca_err(e.to_string()))?;
        if certs.is_empty() {
            return Err(ca_err("it holds no PEM certificate".into()));
        }
        for cert in certs {
            roots
                .add(cert)
                .map_err(|e| ca_err(format!("a certificate is not usable: {e}")))?;
        }
    }
    Ok(roots)
}

/// One answer of the token or device endpoint that was not a transient failure.
pub(crate) struct Answer {
    pub status: u16,
    pub body: Vec<u8>,
}

/// The OAuth2 client of one account: builds requests to its endpoints, retries transient
/// failures and diagnoses refusals. Cheap to clone.
#[derive(Clone, Debug)]
pub struct OAuthClient {
    pub(crate) endpoints: Arc<OAuthEndpoints>,
    pub(crate) token_url: url::Url,
    pub(crate) http: reqwest::Client,
    pub(crate) retry: RetryPolicy,
    pub(crate) context: aadsts::Context,
}

impl OAuthClient {
    /// A client for these endpoints. Checks every URL (HTTPS, or plain HTTP to loopback only)
    /// and trusts the system's roots plus `ca_file`.
    pub fn new(endpoints: OAuthEndpoints) -> Result<OAuthClient, OAuthError> {
        let token_url = check_endpoint("token_url", &endpoints.token_url)?;
        let authorize = check_endpoint("authorize_url", &endpoints.authorize_url)?;
        if let Some(d) = &endpoints.device_authorization_url {
            check_endpoint("device_authorization_url", d)?;
        }
        let roots = root_store(endpoints.ca_file.as_deref())?;
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OAuthError::HttpClient(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let mut builder = reqwest::Client::builder()
            .use_preconfigured_tls(tls)
            .connect_timeout(Duration::from_secs(10))
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("mailgate/", env!("CARGO_PKG_VERSION")));
        // A proxy from the environment must not see requests meant for this machine.
        if token_url.host().is_some_and(|h| is_loopback_host(&h)) {
            builder = builder.no_proxy();
        }
        let http = builder
            .build()
            .map_err(|e| OAuthError::HttpClient(e.to_string()))?;
        let context = aadsts::Context {
            account: None,
            client_id: Some(endpoints.client_id.clone()),
            tenant: tenant_of(&token_url).or_else(|| tenant_of(&authorize)),
            redirect_uri: Some(endpoints.redirect_uri.clone()),
        };
        Ok(OAuthClient {
            endpoints: Arc::new(endpoints),
            token_url,
            http,
            retry: RetryPolicy::default(),
            context,
        })
    }

    /// Names the account in diagnoses (`run mailgate login NAME`).
    pub fn with_account(mut self, name: impl Into<String>) -> OAuthClient {
        self.context.account = Some(name.into());
        self
    }

    /// Replaces the retry schedule.
    pub fn with_retry_policy(mut self, retry: RetryPolicy) -> OAuthClient {
        self.retry = retry;
        self
    }

    /// The endpoints this client talks to.
    pub fn endpoints(&self) -> &OAuthEndpoints {
        &self.endpoints
    }

    /// What diagnoses know about the account.
    pub fn diagnosis_context(&self) -> &aadsts::Context {
        &self.context
    }

    /// Gets a new access token (and usually a new refresh token, which replaces the old one)
    /// with a refresh token.
    pub async fn refresh(&self, refresh_token: &Secret) -> Result<TokenResponse, OAuthError> {
        let mut form = vec![
            ("grant_type", "refresh_token".to_string()),
            ("refresh_token", refresh_token.expose().to_string()),
        ];
        self.add_client_auth(&mut form);
        form.push(("scope", self.endpoints.scopes.join(" ")));
        self.token_request(Step::Refresh, form).await
    }

    /// Gets an app-only token with the client's own credentials (no user, no refresh token).
    pub async fn client_credentials(&self) -> Result<TokenResponse, OAuthError> {
        if self.endpoints.client_secret.is_none() {
            return Err(OAuthError::MissingSetting {
                step: Step::ClientCredentials,
                what: "the client credentials flow needs the app's client secret (its Value): \
                       set client_secret, client_secret_env or client_secret_command"
                    .into(),
            });
        }
        let mut form = vec![("grant_type", "client_credentials".to_string())];
        self.add_client_auth(&mut form);
        form.push(("scope", self.endpoints.scopes.join(" ")));
        self.token_request(Step::ClientCredentials, form).await
    }

    /// Redeems an authorization code (with its PKCE verifier and the same redirect URI).
    pub async fn exchange_code(
        &self,
        code: &Secret,
        code_verifier: &Secret,
        redirect_uri: &str,
    ) -> Result<TokenResponse, OAuthError> {
        let mut form = vec![
            ("grant_type", "authorization_code".to_string()),
            ("code", code.expose().to_string()),
            ("redirect_uri", redirect_uri.to_string()),
            ("code_verifier", code_verifier.expose().to_string()),
        ];
        self.add_client_auth(&mut form);
        form.push(("scope", self.endpoints.scopes.join(" ")));
        self.token_request(Step::CodeExchange, form).await
    }

    pub(crate) fn add_client_auth(&self, form: &mut Vec<(&'static str, String)>) {
        form.push(("client_id", self.endpoints.client_id.clone()));
        if let Some(secret) = &self.endpoints.client_secret {
            form.push(("client_secret", secret.expose().to_string()));
        }
    }

    /// POSTs to the token endpoint and reads a token response.
    pub(crate) async fn token_request(
        &self,
        step: Step,
        form: Vec<(&'static str, String)>,
    ) -> Result<TokenResponse, OAuthError> {
        let url = self.token_url.clone();
        let answer = self.post_form(step, &url, &form).await?;
        self.read_token(step, &url, answer, &form)
    }

    /// Turns an answer of the token endpoint into tokens or a diagnosed error.
    pub(crate) fn read_token(
        &self,
        step: Step,
        url: &url::Url,
        answer: Answer,
        form: &[(&'static str, String)],
    ) -> Result<TokenResponse, OAuthError> {
        if !(200..300).contains(&answer.status) {
            return Err(self.refusal(step, url, &answer, form));
        }
        let raw: RawToken =
            serde_json::from_slice(&answer.body).map_err(|e| OAuthError::UnexpectedResponse {
                step,
                url: url.to_string(),
                status: answer.status,
                detail: json_problem(&e),
            })?;
        if let Some(t) = &raw.token_type {
            if !t.eq_ignore_ascii_case("bearer") {
                return Err(OAuthError::UnexpectedResponse {
                    step,
                    url: url.to_string(),
                    status: answer.status,
                    detail: format!("token_type is `{t}`, not Bearer"),
                });
            }
        }
        let expires_in = match raw.expires_in {
            Some(NumOrString::Num(n)) => n,
            Some(NumOrString::Str(s)) => s.trim().parse().unwrap_or(3600),
            None => 3600,
        };
        let scopes = match raw.scope.as_deref().map(str::trim) {
            Some(s) if !s.is_empty() => s.split_whitespace().map(str::to_string).collect(),
            _ => self.endpoints.scopes.clone(),
        };
        let identity = identity_of(raw.id_token.as_deref(), &raw.access_token);
        tracing::debug!(
            %step,
            expires_in,
            scope = %scopes.join(" "),
            refresh_token = raw.refresh_token.is_some(),
            id_token = raw.id_token.is_some(),
            identity = identity.as_deref().unwrap_or("-"),
            "token response (tokens redacted)"
        );
        Ok(TokenResponse {
            access_token: Secret::new(raw.access_token),
            refresh_token: raw.refresh_token.filter(|r| !r.is_empty()).map(Secret::new),
            expires_at: OffsetDateTime::now_utc() + time::Duration::seconds(expires_in.max(0)),
            scopes,
            identity,
        })
    }

    /// The error for a non-2xx answer: a diagnosed refusal when the body is an OAuth error.
    pub(crate) fn refusal(
        &self,
        step: Step,
        url: &url::Url,
        answer: &Answer,
        form: &[(&'static str, String)],
    ) -> OAuthError {
        let secrets = secret_values(form, self);
        match ProviderError::from_json(Some(answer.status), &answer.body) {
            Some(p) => {
                let p = p.scrub(&secrets);
                self.refused(step, p)
            }
            None => OAuthError::UnexpectedResponse {
                step,
                url: url.to_string(),
                status: answer.status,
                detail: excerpt(&answer.body, &secrets),
            },
        }
    }

    /// A diagnosed refusal.
    pub(crate) fn refused(&self, step: Step, provider: ProviderError) -> OAuthError {
        let diagnosis = aadsts::diagnose(&provider, &self.context);
        OAuthError::Refused {
            step,
            provider: Box::new(provider),
            diagnosis: Box::new(diagnosis),
        }
    }

    /// POSTs a form, retrying transient failures per the [`RetryPolicy`]. Returns the first
    /// answer that is not transient; secrets in `form` never reach a log.
    pub(crate) async fn post_form(
        &self,
        step: Step,
        url: &url::Url,
        form: &[(&'static str, String)],
    ) -> Result<Answer, OAuthError> {
        let shown: Vec<String> = form
            .iter()
            .map(|(k, v)| {
                if SECRET_FIELDS.contains(k) {
                    format!("{k}=[redacted]")
                } else {
                    format!("{k}={v}")
                }
            })
            .collect();
        let secrets = secret_values(form, self);
        let started = Instant::now();
        let mut delay = self.retry.initial_delay;
        let mut attempt = 0u32;
        loop {
            attempt += 1;
            tracing::debug!(%step, %url, attempt, form = %shown.join("&"), "POST");
            let sent = self
                .http
                .post(url.clone())
                .header(reqwest::header::ACCEPT, "application/json")
                .form(form)
                .timeout(self.retry.request_timeout)
                .send()
                .await;
            let (failure, retry_after) = match sent {
                Ok(resp) => {
                    let status = resp.status();
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    match resp.bytes().await {
                        Ok(body) => {
                            let body = body.to_vec();
                            let provider = ProviderError::from_json(Some(status.as_u16()), &body);
                            tracing::debug!(
                                %step,
                                status = status.as_u16(),
                                error = %provider
                                    .clone()
                                    .map(|p| p.scrub(&secrets).to_string())
                                    .unwrap_or_default(),
                                "answer"
                            );
                            let transient = status.is_server_error()
                                || status == reqwest::StatusCode::TOO_MANY_REQUESTS
                                || provider.as_ref().is_some_and(ProviderError::is_transient);
                            if !transient {
                                return Ok(Answer {
                                    status: status.as_u16(),
                                    body,
                                });
                            }
                            let what = match provider {
                                Some(p) => format!("HTTP {}: {}", status, p.scrub(&secrets)),
                                None => format!("HTTP {status}"),
                            };
                            (what, retry_after)
                        }
                        Err(e) => (describe_reqwest(&e), None),
                    }
                }
                Err(e) => (describe_reqwest(&e), None),
            };
            let elapsed = started.elapsed();
            // A 429's Retry-After is honoured as asked, as long as it fits the budget.
            let wait = retry_after.unwrap_or(delay);
            tracing::debug!(%step, attempt, failure = %failure, "transient failure");
            if attempt >= self.retry.max_attempts.max(1) || elapsed + wait > self.retry.total_budget
            {
                let diagnosis = aadsts::unavailable(step, url.as_str(), &failure);
                return Err(OAuthError::Unavailable {
                    step,
                    url: url.to_string(),
                    attempts: attempt,
                    elapsed: started.elapsed(),
                    last_failure: failure,
                    diagnosis: Box::new(diagnosis),
                });
            }
            tokio::time::sleep(wait).await;
            delay = (delay * 2).min(self.retry.max_delay);
        }
    }
}

/// The secret values of a request, to scrub from anything the provider echoes.
fn secret_values<'a>(form: &'a [(&'static str, String)], client: &'a OAuthClient) -> Vec<&'a str> {
    let mut v: Vec<&str> = form
        .iter()
        .filter(|(k, _)| SECRET_FIELDS.contains(k))
        .map(|(_, v)| v.as_str())
        .collect();
    if let Some(s) = &client.endpoints.client_secret {
        v.push(s.expose());
    }
    v
}

/// A short, secret-free excerpt of a body that is not OAuth JSON.
fn excerpt(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let mut one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    for s in secrets.iter().filter(|s| s.len() >= 4) {
        one_line = one_line.replace(s, "[redacted]");
    }
    if one_line.is_empty() {
        return "empty body".into();
    }
    if one_line.chars().count() > 200 {
        one_line = one_line.chars().take(200).collect::<String>() + "…";
    }
    format!("the body is not an OAuth answer: {one_line}")
}

/// What is wrong with a token JSON, without quoting its values.
fn json_problem(e: &serde_json::Error) -> String {
    let msg = e.to_string();
    if msg.starts_with("missing field") {
        format!("the token response is incomplete: {msg}")
    } else {
        format!(
            "the token response is not the JSON expected ({:?} error at line {} column {})",
            e.classify(),
            e.line(),
            e.column()
        )
    }
}

/// A reqwest error with its causes ("connection refused", "operation timed out").
fn describe_reqwest(e: &reqwest::Error) -> String {
    let mut s = if e.is_timeout() {
        "timed out".to_string()
    } else if e.is_connect() {
        "cannot connect".to_string()
    } else {
        "request failed".to_string()
    };
    let mut source = std::error::Error::source(e);
    let mut last = String::new();
    while let Some(cause) = source {
        let text = cause.to_string();
        if text != last && !s.contains(&text) {
            s.push_str(": ");
            s.push_str(&text);
            last = text;
        }
        source = cause.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    fn jwt(claims: serde_json::Value) -> String {
        format!(
            "{}.{}.sig",
            URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#),
            URL_SAFE_NO_PAD.encode(claims.to_string())
        )
    }

    #[test]
    fn identity_prefers_the_id_token() {
        let id = jwt(serde_json::json!({"preferred_username": "alice@contoso.com"}));
        let at = jwt(serde_json::json!({"upn": "other@contoso.com"}));
        assert_eq!(
            identity_of(Some(&id), &at).as_deref(),
            Some("alice@contoso.com")
        );
        assert_eq!(identity_of(None, &at).as_deref(), Some("other@contoso.com"));
        assert_eq!(identity_of(None, "ya29.opaque"), None);
        let app_only = jwt(serde_json::json!({"appid": "x", "upn": null}));
        assert_eq!(identity_of(None, &app_only), None);
    }

    #[test]
    fn endpoints_must_be_https_unless_loopback() {
        assert!(check_endpoint(
            "token_url",
            "https://login.microsoftonline.com/x/oauth2/v2.0/token"
        )
        .is_ok());
        assert!(check_endpoint("token_url", "http://127.0.0.1:8080/t").is_ok());
        assert!(check_endpoint("token_url", "http://localhost/t").is_ok());
        assert!(check_endpoint("token_url", "http://[::1]:9/t").is_ok());
        let e = check_endpoint("token_url", "http://login.example.com/t").unwrap_err();
        assert!(e.to_string().contains("only to localhost"), "{e}");
        assert!(check_endpoint("token_url", "ftp://x/").is_err());
        assert!(check_endpoint("token_url", "not a url").is_err());
    }

    #[test]
    fn tenant_comes_from_the_path() {
        let u =
            url::Url::parse("https://login.microsoftonline.com/common/oauth2/v2.0/token").unwrap();
        assert_eq!(tenant_of(&u).as_deref(), Some("common"));
        let g = url::Url::parse("https://oauth2.googleapis.com/token").unwrap();
        assert_eq!(tenant_of(&g), None);
    }

    use crate::oauth::testserver::{Canned, TestServer};
    use crate::sysexits::HasSysexit;
    use crate::Sysexit;

    const SECRET: &str = "Qx58Q~the-secret-value";

    fn endpoints(base: &str) -> OAuthEndpoints {
        OAuthEndpoints {
            authorize_url: format!("{base}/contoso.com/oauth2/v2.0/authorize"),
            token_url: format!("{base}/contoso.com/oauth2/v2.0/token"),
            device_authorization_url: Some(format!("{base}/contoso.com/oauth2/v2.0/devicecode")),
            client_id: "client-1".into(),
            client_secret: Some(Secret::new(SECRET)),
            scopes: vec![
                "offline_access".into(),
                "https://outlook.office.com/SMTP.Send".into(),
            ],
            redirect_uri: "http://localhost:3017/".into(),
            redirect_port: 0,
            ca_file: None,
        }
    }

    fn fast() -> RetryPolicy {
        RetryPolicy {
            max_attempts: 3,
            initial_delay: Duration::from_millis(10),
            max_delay: Duration::from_millis(50),
            total_budget: Duration::from_secs(10),
            request_timeout: Duration::from_secs(5),
        }
    }

    fn token_json() -> serde_json::Value {
        serde_json::json!({
            "token_type": "Bearer",
            "scope": "https://outlook.office.com/SMTP.Send",
            "expires_in": 3599,
            "ext_expires_in": 3599,
            "access_token": jwt(serde_json::json!({"upn": "alice@contoso.com"})),
            "refresh_token": "1.AQnew-refresh-token",
        })
    }

    #[tokio::test]
    async fn refresh_sends_the_grant_and_reads_the_answer() {
        let server = TestServer::start(vec![Canned::json(200, token_json())]).await;
        let client = OAuthClient::new(endpoints(&server.base)).unwrap();
        let t = client.refresh(&Secret::new("1.AQold")).await.unwrap();
        assert_eq!(t.identity.as_deref(), Some("alice@contoso.com"));
        assert_eq!(t.refresh_token.unwrap().expose(), "1.AQnew-refresh-token");
        assert_eq!(t.scopes, vec!["https://outlook.office.com/SMTP.Send"]);
        let left = (t.expires_at - OffsetDateTime::now_utc()).whole_seconds();
        assert!((3590..=3599).contains(&left), "{left}");
        let r = &server.received()[0];
        assert_eq!(r.path, "/contoso.com/oauth2/v2.0/token");
        assert_eq!(r.param("grant_type"), Some("refresh_token"));
        assert_eq!(r.param("refresh_token"), Some("1.AQold"));
        assert_eq!(r.param("client_id"), Some("client-1"));
        assert_eq!(r.param("client_secret"), Some(SECRET));
        assert_eq!(
            r.param("scope"),
            Some("offline_access https://outlook.office.com/SMTP.Send")
        );
    }

    #[tokio::test]
    async fn transient_failures_are_retried() {
        let server = TestServer::start(vec![
            Canned::html(503, "<html>Service Unavailable</html>"),
            Canned::json(200, serde_json::json!({"error": "temporarily_unavailable"})),
            Canned::json(200, token_json()),
        ])
        .await;
        let client = OAuthClient::new(endpoints(&server.base))
            .unwrap()
            .with_retry_policy(fast());
        client.client_credentials().await.unwrap();
        assert_eq!(server.received().len(), 3);
    }

    #[tokio::test]
    async fn giving_up_is_a_temporary_failure() {
        let server = TestServer::start(vec![Canned::html(503, "busy")]).await;
        let client = OAuthClient::new(endpoints(&server.base))
            .unwrap()
            .with_retry_policy(fast());
        let e = client.client_credentials().await.unwrap_err();
        assert!(
            matches!(e, OAuthError::Unavailable { attempts: 3, .. }),
            "{e}"
        );
        assert_eq!(e.sysexit(), Sysexit::TempFail);
        assert!(e.to_string().contains("503"), "{e}");
        assert!(e.diagnosis().is_some());
        assert_eq!(server.received().len(), 3);

        // Nothing listening: connection errors are transient too.
        let dead = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            format!("http://{}", l.local_addr().unwrap())
        };
        let client = OAuthClient::new(endpoints(&dead))
            .unwrap()
            .with_retry_policy(fast());
        let e = client.refresh(&Secret::new("rt")).await.unwrap_err();
        assert_eq!(e.sysexit(), Sysexit::TempFail, "{e}");
    }

    #[tokio::test]
    async fn retry_after_is_honoured() {
        let server = TestServer::start(vec![
            Canned::html(429, "slow down").header("Retry-After", "1"),
            Canned::json(200, token_json()),
        ])
        .await;
        let client = OAuthClient::new(endpoints(&server.base))
            .unwrap()
            .with_retry_policy(fast());
        client.client_credentials().await.unwrap();
        let r = server.received();
        assert!(r[1].at - r[0].at >= Duration::from_millis(990));
    }

    #[tokio::test]
    async fn refusals_are_diagnosed_and_scrubbed() {
        let server = TestServer::start(vec![Canned::json(
            401,
            serde_json::json!({
                "error": "invalid_client",
                "error_description": format!("AADSTS7000215: Invalid client secret provided ({SECRET}).\r\nTrace ID: t1\r\nCorrelation ID: c1\r\nTimestamp: now"),
                "error_codes": [7000215],
                "trace_id": "t1",
                "correlation_id": "c1",
            }),
        )])
        .await;
        let client = OAuthClient::new(endpoints(&server.base))
            .unwrap()
            .with_account("work");
        let e = client.client_credentials().await.unwrap_err();
        assert_eq!(e.sysexit(), Sysexit::NoPerm);
        assert_eq!(server.received().len(), 1, "refusals are not retried");
        let d = e.diagnosis().unwrap();
        assert_eq!(d.code, "AADSTS7000215");
        let all = format!("{e} {e:?} {d}");
        assert!(!all.contains(SECRET), "{all}");
        assert!(all.contains("Secret ID") && all.contains("c1"), "{all}");
    }

    #[tokio::test]
    async fn non_oauth_answers_and_missing_settings() {
        let server = TestServer::start(vec![Canned::html(404, "<h1>Not Found</h1>")]).await;
        let client = OAuthClient::new(endpoints(&server.base)).unwrap();
        let e = client.refresh(&Secret::new("rt")).await.unwrap_err();
        assert!(
            matches!(e, OAuthError::UnexpectedResponse { status: 404, .. }),
            "{e}"
        );
        assert!(e.to_string().contains("Not Found"));

        let mut ep = endpoints(&server.base);
        ep.client_secret = None;
        let e = OAuthClient::new(ep)
            .unwrap()
            .client_credentials()
            .await
            .unwrap_err();
        assert_eq!(e.sysexit(), Sysexit::Config);
        assert!(e.to_string().contains("client_secret"), "{e}");
    }

    #[test]
    fn excerpts_hide_secrets() {
        let e = excerpt(b"<html>\n bad secret Qx58Q~abc </html>", &["Qx58Q~abc"]);
        assert!(!e.contains("Qx58Q~abc"));
        assert!(e.contains("<html> bad secret [redacted] </html>"));
    }
}
