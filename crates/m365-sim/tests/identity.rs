//! The identity platform over real HTTP: the authorize, token and device code endpoints behave
//! as Entra ID v2.0 does (statuses, `error`, `error_codes`, AADSTS codes), every identity fault
//! produces the error Microsoft sends, and Gmail mode answers on Google's paths in Google's words.

use std::collections::HashMap;
use std::time::Duration;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use m365_sim::contoso::*;
use m365_sim::{EndpointFault, Event, SimConfig, Simulator};
use reqwest::StatusCode;
use serde_json::Value;
use sha2::{Digest, Sha256};

const DESKTOP_REDIRECT: &str = "http://localhost:53682/";
const WEB_REDIRECT: &str = "http://localhost:3017/";
const SMTP_SCOPES: &str = "offline_access openid profile https://outlook.office.com/SMTP.Send";
const VERIFIER: &str = "pkce-verifier-that-is-long-enough-0123456789-abcdefghijklmnop";
const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

// ---------------------------------------------------------------------------------------------
// Helpers: a running simulator with an HTTP client that does not follow redirects.

struct Sim {
    sim: Simulator,
    http: reqwest::Client,
    tenant: String,
}

fn http_client() -> reqwest::Client {
    reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap()
}

impl Sim {
    async fn start(config: SimConfig) -> Sim {
        Sim {
            sim: Simulator::start(config).await.expect("simulator starts"),
            http: http_client(),
            tenant: TENANT_DOMAIN.into(),
        }
    }

    /// The contoso tenant, signing in at once (auto-approve), polling interval 1 s.
    async fn contoso() -> Sim {
        Sim::start(SimConfig::default().device_poll_interval_secs(1)).await
    }

    /// The contoso tenant with the sign-in page and device codes left to the user.
    async fn interactive() -> Sim {
        Sim::start(
            SimConfig::default()
                .auto_approve(false)
                .device_poll_interval_secs(1),
        )
        .await
    }

    async fn gmail() -> Sim {
        Sim::start(SimConfig::gmail().device_poll_interval_secs(1)).await
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.sim.http_base())
    }

    /// GET the authorize endpoint.
    async fn authorize(&self, req: &AuthRequest) -> reqwest::Response {
        let tenant = req.tenant.as_deref().unwrap_or(&self.tenant);
        self.http
            .get(self.sim.authorize_url(tenant))
            .query(&req.query())
            .send()
            .await
            .unwrap()
    }

    /// GET the authorize endpoint and follow nothing: the 302 back to the app.
    async fn sign_in(&self, req: &AuthRequest) -> Callback {
        Callback::from(self.authorize(req).await)
    }

    /// Signs in and returns the authorization code.
    async fn code(&self, req: &AuthRequest) -> String {
        let cb = self.sign_in(req).await;
        assert_eq!(cb.get("state"), req.state.as_deref(), "state is echoed");
        cb.get("code")
            .unwrap_or_else(|| panic!("no code in {}", cb.url))
            .to_string()
    }

    async fn post_form(&self, url: &str, form: &[(&str, &str)]) -> Reply {
        Reply::from(self.http.post(url).form(form).send().await.unwrap()).await
    }

    async fn token(&self, form: &[(&str, &str)]) -> Reply {
        self.token_at(&self.tenant.clone(), form).await
    }

    async fn token_at(&self, tenant: &str, form: &[(&str, &str)]) -> Reply {
        self.post_form(&self.sim.token_url(tenant), form).await
    }

    async fn token_basic(&self, client_id: &str, secret: &str, form: &[(&str, &str)]) -> Reply {
        let resp = self
            .http
            .post(self.sim.token_url(&self.tenant))
            .basic_auth(client_id, Some(secret))
            .form(form)
            .send()
            .await
            .unwrap();
        Reply::from(resp).await
    }

    /// Redeems `code` as the app of `req` would (secret for the web app, verifier if PKCE).
    async fn redeem(&self, req: &AuthRequest, code: &str) -> Reply {
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("client_id", req.client_id.as_str()),
            ("code", code),
            ("redirect_uri", req.redirect_uri.as_str()),
        ];
        if let Some((verifier, _)) = &req.pkce {
            form.push(("code_verifier", verifier.as_str()));
        }
        if req.client_id == WEB_APP_ID {
            form.push(("client_secret", WEB_APP_SECRET));
        }
        self.token(&form).await
    }

    /// Signs in and redeems the code: the token response.
    async fn login(&self, req: &AuthRequest) -> Value {
        let code = self.code(req).await;
        self.redeem(req, &code).await.ok()
    }

    async fn refresh(&self, client_id: &str, refresh_token: &str) -> Reply {
        self.token(&[
            ("grant_type", "refresh_token"),
            ("client_id", client_id),
            ("refresh_token", refresh_token),
        ])
        .await
    }

    async fn client_credentials(&self, tenant: &str, scope: &str) -> Reply {
        self.token_at(
            tenant,
            &[
                ("grant_type", "client_credentials"),
                ("client_id", WEB_APP_ID),
                ("client_secret", WEB_APP_SECRET),
                ("scope", scope),
            ],
        )
        .await
    }

    async fn device_code(&self, client_id: &str, scope: &str) -> Reply {
        let url = self.sim.devicecode_url(&self.tenant);
        self.post_form(&url, &[("client_id", client_id), ("scope", scope)])
            .await
    }

    async fn poll(&self, client_id: &str, device_code: &str) -> Reply {
        self.token(&[
            ("grant_type", DEVICE_GRANT),
            ("client_id", client_id),
            ("device_code", device_code),
        ])
        .await
    }

    /// (grant_type, outcome, pkce_verified, user) of every token request so far.
    fn token_requests(&self) -> Vec<(String, String, bool, Option<String>)> {
        self.sim
            .events()
            .into_iter()
            .filter_map(|l| match l.event {
                Event::TokenRequest {
                    grant_type,
                    outcome,
                    pkce_verified,
                    user,
                    ..
                } => Some((grant_type, outcome, pkce_verified, user)),
                _ => None,
            })
            .collect()
    }

    fn last_token_outcome(&self) -> String {
        self.token_requests()
            .last()
            .expect("a token request")
            .1
            .clone()
    }

    /// (outcome, user, pkce) of every authorize decision so far.
    fn authorizations(&self) -> Vec<(String, Option<String>, bool)> {
        self.sim
            .events()
            .into_iter()
            .filter_map(|l| match l.event {
                Event::Authorize {
                    outcome,
                    user,
                    pkce,
                    ..
                } => Some((outcome, user, pkce)),
                _ => None,
            })
            .collect()
    }
}

/// An authorize request, as an app builds it.
#[derive(Clone)]
struct AuthRequest {
    tenant: Option<String>,
    client_id: String,
    redirect_uri: String,
    scope: String,
    state: Option<String>,
    /// (verifier, method)
    pkce: Option<(String, &'static str)>,
    extra: Vec<(String, String)>,
}

impl AuthRequest {
    /// The desktop (public) app with PKCE S256, asking for SMTP with a refresh token.
    fn desktop() -> AuthRequest {
        AuthRequest {
            tenant: None,
            client_id: PUBLIC_APP_ID.into(),
            redirect_uri: DESKTOP_REDIRECT.into(),
            scope: SMTP_SCOPES.into(),
            state: Some("st-42".into()),
            pkce: Some((VERIFIER.into(), "S256")),
            extra: Vec::new(),
        }
    }

    /// The confidential web app on its registered redirect, without PKCE.
    fn web() -> AuthRequest {
        AuthRequest {
            client_id: WEB_APP_ID.into(),
            redirect_uri: WEB_REDIRECT.into(),
            pkce: None,
            ..AuthRequest::desktop()
        }
    }

    fn tenant(mut self, tenant: &str) -> Self {
        self.tenant = Some(tenant.into());
        self
    }

    fn client(mut self, client_id: &str) -> Self {
        self.client_id = client_id.into();
        self
    }

    fn redirect(mut self, uri: &str) -> Self {
        self.redirect_uri = uri.into();
        self
    }

    fn scope(mut self, scope: &str) -> Self {
        self.scope = scope.into();
        self
    }

    fn pkce(mut self, verifier: &str, method: &'static str) -> Self {
        self.pkce = Some((verifier.into(), method));
        self
    }

    fn with(mut self, key: &str, value: &str) -> Self {
        self.extra.push((key.into(), value.into()));
        self
    }

    fn query(&self) -> Vec<(String, String)> {
        let mut q = vec![
            ("client_id".to_string(), self.client_id.clone()),
            ("response_type".into(), "code".into()),
            ("redirect_uri".into(), self.redirect_uri.clone()),
            ("scope".into(), self.scope.clone()),
        ];
        if let Some(s) = &self.state {
            q.push(("state".into(), s.clone()));
        }
        if let Some((verifier, method)) = &self.pkce {
            let challenge = match *method {
                "S256" => s256(verifier),
                _ => verifier.clone(),
            };
            q.push(("code_challenge".into(), challenge));
            q.push(("code_challenge_method".into(), method.to_string()));
        }
        q.extend(self.extra.iter().cloned());
        q
    }
}

/// Where the browser is sent back to.
struct Callback {
    url: url::Url,
    params: HashMap<String, String>,
}

impl Callback {
    fn from(resp: reqwest::Response) -> Callback {
        assert_eq!(resp.status(), StatusCode::FOUND, "authorize redirects back");
        let location = resp
            .headers()
            .get("location")
            .expect("a Location header")
            .to_str()
            .unwrap();
        let url = url::Url::parse(location).unwrap();
        let params = url.query_pairs().into_owned().collect();
        Callback { url, params }
    }

    fn get(&self, key: &str) -> Option<&str> {
        self.params.get(key).map(String::as_str)
    }

    /// Asserts an Entra error redirect: `error`, and a description starting with the AADSTS code.
    fn assert_error(&self, error: &str, code: u32) {
        assert_eq!(self.get("error"), Some(error), "{}", self.url);
        let description = self.get("error_description").unwrap_or_default();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        assert!(self.get("code").is_none());
    }
}

/// A JSON reply of the token or device code endpoint.
struct Reply {
    status: StatusCode,
    body: Value,
    text: String,
}

impl Reply {
    async fn from(resp: reqwest::Response) -> Reply {
        let status = resp.status();
        let text = resp.text().await.unwrap();
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, body, text }
    }

    /// The body of a 200 reply.
    fn ok(self) -> Value {
        assert_eq!(self.status, StatusCode::OK, "{}", self.text);
        self.body
    }

    /// Asserts Entra's error shape: status, `error`, `error_codes`, the AADSTS code first in the
    /// description followed by the trace lines, and the trace fields.
    fn assert_error(&self, status: u16, error: &str, code: u32) {
        assert_eq!(self.status.as_u16(), status, "{}", self.text);
        assert_eq!(self.body["error"], error, "{}", self.text);
        assert_eq!(
            self.body["error_codes"],
            serde_json::json!([code]),
            "{}",
            self.text
        );
        let description = self.description();
        assert!(
            description.starts_with(&format!("AADSTS{code}: ")),
            "{description}"
        );
        for line in ["\r\nTrace ID: ", "\r\nCorrelation ID: ", "\r\nTimestamp: "] {
            assert!(description.contains(line), "{description}");
        }
        let trace_id = self.body["trace_id"].as_str().unwrap();
        assert!(uuid::Uuid::parse_str(trace_id).is_ok());
        assert!(description.contains(trace_id));
        assert!(self.body["correlation_id"].is_string());
        let timestamp = self.body["timestamp"].as_str().unwrap();
        assert!(
            timestamp.len() == 20 && timestamp.ends_with('Z'),
            "{timestamp}"
        );
        assert!(self.body["error_uri"]
            .as_str()
            .unwrap()
            .ends_with(&format!("/error?code={code}")));
    }

    fn description(&self) -> &str {
        self.body["error_description"].as_str().unwrap_or_default()
    }
}

fn s256(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes()))
}

/// The claims of a JWT (access or id token).
fn claims(jwt: &Value) -> Value {
    let jwt = jwt.as_str().expect("a JWT string");
    let parts: Vec<&str> = jwt.split('.').collect();
    assert_eq!(parts.len(), 3, "{jwt}");
    let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).unwrap()).unwrap();
    assert_eq!(header["alg"], "RS256");
    serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[1]).unwrap()).unwrap()
}

/// Pulls `attr="..."` following `marker` out of a page.
fn html_attr<'a>(html: &'a str, marker: &str, attr: &str) -> &'a str {
    let start = html
        .find(marker)
        .unwrap_or_else(|| panic!("{marker} in page"));
    let rest = &html[start..];
    let at = rest.find(&format!("{attr}=\"")).unwrap() + attr.len() + 2;
    let end = rest[at..].find('"').unwrap();
    &rest[at..at + end]
}

// ---------------------------------------------------------------------------------------------
// Authorization code flow.

#[tokio::test]
async fn sign_in_redirects_back_with_code_and_state() {
    let sim = Sim::contoso().await;
    let cb = sim.sign_in(&AuthRequest::desktop()).await;
    assert_eq!(cb.url.host_str(), Some("localhost"));
    assert_eq!(cb.url.port(), Some(53682));
    assert_eq!(cb.url.path(), "/");
    assert!(cb.get("code").is_some_and(|c| c.len() > 40));
    assert_eq!(cb.get("state"), Some("st-42"));
    assert_eq!(
        sim.authorizations(),
        vec![("approved".to_string(), Some(ALICE.to_string()), true)]
    );
}

#[tokio::test]
async fn code_redemption_with_pkce_gives_outlook_tokens_shaped_like_microsofts() {
    let sim = Sim::contoso().await;
    let tokens = sim.login(&AuthRequest::desktop()).await;

    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(
        tokens["scope"],
        "https://outlook.office.com/SMTP.Send openid profile"
    );
    assert_eq!(tokens["expires_in"], 3599);
    assert_eq!(tokens["ext_expires_in"], 3599);
    assert!(
        tokens["refresh_token"].is_string(),
        "offline_access gives one"
    );

    let at = claims(&tokens["access_token"]);
    assert_eq!(at["aud"], "https://outlook.office.com");
    assert_eq!(at["scp"], "SMTP.Send");
    assert_eq!(at["upn"], ALICE);
    assert_eq!(at["tid"], TENANT_ID);

    let id = claims(&tokens["id_token"]);
    assert_eq!(id["aud"], PUBLIC_APP_ID);
    assert_eq!(id["preferred_username"], ALICE);
    assert_eq!(id["name"], "Alice Larsen");
    assert_eq!(id["tid"], TENANT_ID);
    assert!(uuid::Uuid::parse_str(id["oid"].as_str().unwrap()).is_ok());

    assert_eq!(
        sim.token_requests(),
        vec![(
            "authorization_code".to_string(),
            "ok".to_string(),
            true,
            Some(ALICE.to_string())
        )]
    );
}

#[tokio::test]
async fn no_refresh_token_without_offline_access_and_no_id_token_without_openid() {
    let sim = Sim::contoso().await;
    let tokens = sim
        .login(&AuthRequest::desktop().scope("https://outlook.office.com/SMTP.Send"))
        .await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    assert_eq!(tokens["scope"], "https://outlook.office.com/SMTP.Send");
}

#[tokio::test]
async fn login_hint_picks_the_user_and_an_unknown_hint_falls_back_to_the_first() {
    let sim = Sim::contoso().await;
    let bob = sim
        .login(&AuthRequest::desktop().with("login_hint", BOB))
        .await;
    assert_eq!(claims(&bob["id_token"])["preferred_username"], BOB);
    let nobody = sim
        .login(&AuthRequest::desktop().with("login_hint", "nobody@contoso.com"))
        .await;
    assert_eq!(claims(&nobody["id_token"])["preferred_username"], ALICE);
}

#[tokio::test]
async fn nonce_is_carried_into_the_id_token() {
    let sim = Sim::contoso().await;
    let tokens = sim
        .login(&AuthRequest::desktop().with("nonce", "n-0S6_WzA2Mj"))
        .await;
    assert_eq!(claims(&tokens["id_token"])["nonce"], "n-0S6_WzA2Mj");
}

#[tokio::test]
async fn pkce_wrong_verifier_is_50148_and_missing_verifier_is_refused() {
    let sim = Sim::contoso().await;
    let req = AuthRequest::desktop();

    let code = sim.code(&req).await;
    let wrong = req.clone().pkce(
        "a-different-verifier-of-sufficient-length-0123456789",
        "S256",
    );
    sim.redeem(&wrong, &code)
        .await
        .assert_error(400, "invalid_grant", 50148);
    assert!(!sim.token_requests()[0].2, "pkce_verified stays false");

    let code = sim.code(&req).await;
    let mut without = req.clone();
    without.pkce = None;
    sim.redeem(&without, &code)
        .await
        .assert_error(400, "invalid_request", 900144);
    let outcomes: Vec<String> = sim.token_requests().into_iter().map(|t| t.1).collect();
    assert_eq!(
        outcomes,
        ["invalid_grant AADSTS50148", "invalid_request AADSTS900144"]
    );
}

#[tokio::test]
async fn pkce_plain_is_accepted() {
    let sim = Sim::contoso().await;
    let req = AuthRequest::desktop().pkce(VERIFIER, "plain");
    sim.login(&req).await;
    assert!(sim.token_requests()[0].2, "plain verifier checked");
}

#[tokio::test]
async fn pkce_challenge_of_bad_size_or_method_is_sent_back_as_invalid_request() {
    let sim = Sim::contoso().await;
    let short = sim
        .sign_in(&AuthRequest::desktop().pkce("too-short", "plain"))
        .await;
    short.assert_error("invalid_request", 501491);
    assert_eq!(short.get("state"), Some("st-42"));

    let mut req = AuthRequest::desktop();
    req.pkce = None;
    let bad = sim
        .sign_in(
            &req.with("code_challenge", &s256(VERIFIER))
                .with("code_challenge_method", "S512"),
        )
        .await;
    bad.assert_error("invalid_request", 9002313);
}

#[tokio::test]
async fn codes_are_single_use() {
    let sim = Sim::contoso().await;
    let req = AuthRequest::desktop();
    let code = sim.code(&req).await;
    sim.redeem(&req, &code).await.ok();
    sim.redeem(&req, &code)
        .await
        .assert_error(400, "invalid_grant", 54005);
    assert_eq!(sim.last_token_outcome(), "invalid_grant AADSTS54005");
}

#[tokio::test]
async fn garbled_and_expired_codes_are_refused() {
    let sim = Sim::contoso().await;
    let req = AuthRequest::desktop();
    let code = sim.code(&req).await;
    let truncated = &code[..code.len() - 5];
    sim.redeem(&req, truncated)
        .await
        .assert_error(400, "invalid_grant", 9002313);

    sim.sim.expire_authorization_codes();
    sim.redeem(&req, &code)
        .await
        .assert_error(400, "invalid_grant", 70008);
}

#[tokio::test]
async fn redeeming_needs_the_redirect_uri_and_the_client_of_the_authorize_request() {
    let sim = Sim::contoso().await;
    let req = AuthRequest::desktop();
    let code = sim.code(&req).await;
    let other_port = req.clone().redirect("http://localhost:9999/");
    let reply = sim.redeem(&other_port, &code).await;
    reply.assert_error(400, "invalid_grant", 500112);
    assert!(reply.description().contains("http://localhost:9999/"));

    // A code issued to the desktop app, redeemed by the web app.
    let code = sim.code(&req.clone().redirect(WEB_REDIRECT)).await;
    let as_web = AuthRequest::web();
    sim.redeem(&as_web, &code)
        .await
        .assert_error(400, "invalid_grant", 70000);
}

#[tokio::test]
async fn loopback_redirects_match_on_any_port_and_a_bare_host_gets_a_slash() {
    let sim = Sim::contoso().await;
    // The desktop app registered `http://localhost` (no port, no path).
    let cb = sim
        .sign_in(&AuthRequest::desktop().redirect("http://localhost:4321"))
        .await;
    assert!(
        cb.url.as_str().starts_with("http://localhost:4321/?code="),
        "{}",
        cb.url
    );
    // The web app registered `http://localhost:3017/`: another port is fine, another path is not.
    let cb = sim
        .sign_in(&AuthRequest::web().redirect("http://localhost:50001/"))
        .await;
    assert!(cb.get("code").is_some());
    let resp = sim
        .authorize(&AuthRequest::web().redirect("http://localhost:3017/callback"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn unregistered_redirect_uri_shows_the_50011_page_and_does_not_redirect() {
    let sim = Sim::contoso().await;
    for uri in ["https://evil.example/callback", "http://127.0.0.1:3017/"] {
        let resp = sim.authorize(&AuthRequest::web().redirect(uri)).await;
        assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
        assert!(resp.headers().get("location").is_none());
        assert!(resp
            .headers()
            .get("content-type")
            .unwrap()
            .to_str()
            .unwrap()
            .starts_with("text/html"));
        let html = resp.text().await.unwrap();
        assert!(html.contains("AADSTS50011"), "{html}");
        assert!(html.contains(uri), "{html}");
        assert!(html.contains(WEB_APP_ID));
    }
    assert_eq!(sim.authorizations()[0].0, "AADSTS50011");
}

#[tokio::test]
async fn unknown_client_shows_the_700016_page() {
    let sim = Sim::contoso().await;
    let resp = sim
        .authorize(&AuthRequest::desktop().client("11111111-2222-3333-4444-555555555555"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.headers().get("location").is_none());
    let html = resp.text().await.unwrap();
    assert!(html.contains("AADSTS700016"), "{html}");
    assert!(html.contains("11111111-2222-3333-4444-555555555555"));
}

#[tokio::test]
async fn scopes_of_two_resources_come_back_as_invalid_scope() {
    let sim = Sim::contoso().await;
    let cb = sim
        .sign_in(&AuthRequest::desktop().scope(
            "openid https://graph.microsoft.com/User.Read https://outlook.office.com/SMTP.Send",
        ))
        .await;
    cb.assert_error("invalid_scope", 70011);
    assert_eq!(cb.get("state"), Some("st-42"));
}

#[tokio::test]
async fn unknown_resource_and_unknown_permission_are_refused() {
    let sim = Sim::contoso().await;
    sim.sign_in(&AuthRequest::desktop().scope("https://smtp.example.com/SMTP.Send"))
        .await
        .assert_error("invalid_resource", 500011);
    sim.sign_in(&AuthRequest::desktop().scope("https://outlook.office.com/SMTP.Sned"))
        .await
        .assert_error("invalid_client", 650053);
}

#[tokio::test]
async fn the_office365_spelling_works_and_is_echoed() {
    let sim = Sim::contoso().await;
    let tokens = sim
        .login(
            &AuthRequest::desktop().scope("offline_access https://outlook.office365.com/SMTP.Send"),
        )
        .await;
    assert_eq!(tokens["scope"], "https://outlook.office365.com/SMTP.Send");
    assert_eq!(
        claims(&tokens["access_token"])["aud"],
        "https://outlook.office.com"
    );
}

#[tokio::test]
async fn a_bare_smtp_scope_gives_a_graph_token() {
    let sim = Sim::contoso().await;
    let tokens = sim
        .login(&AuthRequest::desktop().scope("SMTP.Send offline_access"))
        .await;
    assert_eq!(tokens["scope"], "SMTP.Send");
    assert_eq!(
        claims(&tokens["access_token"])["aud"],
        "https://graph.microsoft.com"
    );
}

#[tokio::test]
async fn tenant_segment_is_checked() {
    let sim = Sim::contoso().await;
    // Unknown tenant: page at authorize, JSON at the token endpoint.
    let resp = sim
        .authorize(&AuthRequest::desktop().tenant("fabrikam.onmicrosoft.com"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("AADSTS90002"));
    sim.token_at(
        "fabrikam.onmicrosoft.com",
        &[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_APP_ID),
        ],
    )
    .await
    .assert_error(400, "invalid_request", 90002);

    // The tenant id, a mail domain and `organizations` all work for a multi-tenant app.
    for tenant in [TENANT_ID, "contoso.com", "organizations", "common"] {
        let cb = sim.sign_in(&AuthRequest::desktop().tenant(tenant)).await;
        assert!(cb.get("code").is_some(), "{tenant}");
    }
}

#[tokio::test]
async fn single_tenant_app_cannot_use_common() {
    let sim = Sim::contoso().await;
    sim.sim
        .with_directory(|d| d.app_mut(PUBLIC_APP_ID).unwrap().single_tenant = true);
    let resp = sim
        .authorize(&AuthRequest::desktop().tenant("common"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("AADSTS50194"));

    let req = AuthRequest::desktop();
    let code = sim.code(&req).await;
    let reply = sim
        .token_at(
            "common",
            &[
                ("grant_type", "authorization_code"),
                ("client_id", PUBLIC_APP_ID),
                ("code", &code),
                ("redirect_uri", DESKTOP_REDIRECT),
                ("code_verifier", VERIFIER),
            ],
        )
        .await;
    reply.assert_error(400, "invalid_request", 50194);
    // The home tenant still works.
    sim.redeem(&req, &code).await.ok();
}

#[tokio::test]
async fn consent_required_fault_redirects_with_65001() {
    let sim = Sim::contoso().await;
    sim.sim.set_faults(|f| f.consent_required = true);
    let cb = sim.sign_in(&AuthRequest::desktop()).await;
    cb.assert_error("consent_required", 65001);
    assert_eq!(cb.get("state"), Some("st-42"));
}

#[tokio::test]
async fn unsupported_response_type_and_silent_sign_in_without_session() {
    let sim = Sim::interactive().await;
    let mut req = AuthRequest::desktop().with("prompt", "none");
    sim.sign_in(&req)
        .await
        .assert_error("login_required", 50058);
    req.extra.clear();
    let mut q = req.query();
    q[1].1 = "token".into();
    let resp = sim
        .http
        .get(sim.sim.authorize_url(TENANT_DOMAIN))
        .query(&q)
        .send()
        .await
        .unwrap();
    Callback::from(resp).assert_error("unsupported_response_type", 700051);
}

#[tokio::test]
async fn response_mode_form_post_posts_the_code_back() {
    let sim = Sim::contoso().await;
    let resp = sim
        .authorize(&AuthRequest::desktop().with("response_mode", "form_post"))
        .await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    assert!(
        html.contains("action=\"http://localhost:53682/\""),
        "{html}"
    );
    assert!(html.contains("name=\"code\""));
    assert!(html.contains("name=\"state\" value=\"st-42\""));
}

// ---------------------------------------------------------------------------------------------
// The sign-in and consent page.

#[tokio::test]
async fn sign_in_page_has_the_app_the_scopes_the_users_and_approve_deny_buttons() {
    let sim = Sim::interactive().await;
    let resp = sim.authorize(&AuthRequest::desktop()).await;
    assert_eq!(resp.status(), StatusCode::OK);
    let html = resp.text().await.unwrap();
    for needle in [
        "id=\"approve\"",
        "id=\"deny\"",
        "mailgate (desktop)",
        "https://outlook.office.com/SMTP.Send",
        ALICE,
        BOB,
    ] {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }
    assert!(sim.authorizations().is_empty(), "no decision yet");
}

#[tokio::test]
async fn approving_on_the_page_signs_in_the_picked_user() {
    let sim = Sim::interactive().await;
    let req = AuthRequest::desktop();
    let html = sim.authorize(&req).await.text().await.unwrap();
    let action = html_attr(&html, "<form", "action");
    let request = html_attr(&html, "name=\"request\"", "value");

    let resp = sim
        .http
        .post(sim.url(action))
        .form(&[("request", request), ("user", BOB), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    let cb = Callback::from(resp);
    assert_eq!(cb.get("state"), Some("st-42"));
    let tokens = sim.redeem(&req, cb.get("code").unwrap()).await.ok();
    assert_eq!(claims(&tokens["id_token"])["preferred_username"], BOB);
    assert_eq!(
        sim.authorizations(),
        vec![("approved".into(), Some(BOB.into()), true)]
    );

    // The request is used up.
    let again = sim
        .http
        .post(sim.url(action))
        .form(&[("request", request), ("user", BOB), ("decision", "approve")])
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn denying_on_the_page_redirects_with_access_denied_65004() {
    let sim = Sim::interactive().await;
    let html = sim
        .authorize(&AuthRequest::desktop())
        .await
        .text()
        .await
        .unwrap();
    let action = html_attr(&html, "<form", "action");
    let request = html_attr(&html, "name=\"request\"", "value");
    let resp = sim
        .http
        .post(sim.url(action))
        .form(&[("request", request), ("user", ALICE), ("decision", "deny")])
        .send()
        .await
        .unwrap();
    let cb = Callback::from(resp);
    cb.assert_error("access_denied", 65004);
    assert!(cb
        .get("error_description")
        .unwrap()
        .starts_with("AADSTS65004: User declined to consent to access the app."));
    assert_eq!(cb.get("state"), Some("st-42"));
    assert_eq!(sim.authorizations()[0].0, "denied");
}

// ---------------------------------------------------------------------------------------------
// Client authentication at the token endpoint.

#[tokio::test]
async fn unknown_client_is_unauthorized_client_700016() {
    let sim = Sim::contoso().await;
    sim.refresh("11111111-2222-3333-4444-555555555555", "rt")
        .await
        .assert_error(400, "unauthorized_client", 700016);
}

#[tokio::test]
async fn public_client_must_not_send_a_secret() {
    let sim = Sim::contoso().await;
    sim.token(&[
        ("grant_type", "refresh_token"),
        ("client_id", PUBLIC_APP_ID),
        ("client_secret", "anything"),
        ("refresh_token", "rt"),
    ])
    .await
    .assert_error(401, "invalid_client", 700025);
}

#[tokio::test]
async fn confidential_client_needs_its_secret_value() {
    let sim = Sim::contoso().await;
    let form = |secret: Option<&'static str>| {
        let mut f = vec![
            ("grant_type", "client_credentials"),
            ("client_id", WEB_APP_ID),
            ("scope", APP_ONLY_SCOPE),
        ];
        if let Some(s) = secret {
            f.push(("client_secret", s));
        }
        f
    };
    sim.token(&form(None))
        .await
        .assert_error(401, "invalid_client", 7000218);

    let secret_id = sim.token(&form(Some(WEB_APP_SECRET_ID))).await;
    secret_id.assert_error(401, "invalid_client", 7000215);
    assert!(secret_id.description().contains(
        "Ensure the secret being sent in the request is the client secret value, not the client \
         secret ID, for a secret added to app '0d5c7a43-6f0e-4b8e-9c1d-7e2a3b4c5d6e'."
    ));
    sim.token(&form(Some("not-the-secret")))
        .await
        .assert_error(401, "invalid_client", 7000215);

    sim.sim
        .with_directory(|d| d.app_mut(WEB_APP_ID).unwrap().secret_expired = true);
    sim.token(&form(Some(WEB_APP_SECRET)))
        .await
        .assert_error(401, "invalid_client", 7000222);
}

#[tokio::test]
async fn http_basic_client_authentication_works() {
    let sim = Sim::contoso().await;
    sim.token_basic(
        WEB_APP_ID,
        WEB_APP_SECRET,
        &[
            ("grant_type", "client_credentials"),
            ("scope", APP_ONLY_SCOPE),
        ],
    )
    .await
    .ok();
    sim.token_basic(
        WEB_APP_ID,
        WEB_APP_SECRET_ID,
        &[
            ("grant_type", "client_credentials"),
            ("scope", APP_ONLY_SCOPE),
        ],
    )
    .await
    .assert_error(401, "invalid_client", 7000215);
}

#[tokio::test]
async fn web_app_redeems_its_code_with_the_secret() {
    let sim = Sim::contoso().await;
    let tokens = sim.login(&AuthRequest::web()).await;
    assert_eq!(claims(&tokens["access_token"])["appid"], WEB_APP_ID);
}

#[tokio::test]
async fn missing_and_unsupported_grant_types() {
    let sim = Sim::contoso().await;
    sim.token(&[("client_id", PUBLIC_APP_ID)])
        .await
        .assert_error(400, "invalid_request", 900144);
    sim.token(&[("grant_type", "password"), ("client_id", PUBLIC_APP_ID)])
        .await
        .assert_error(400, "unsupported_grant_type", 70003);
}

#[tokio::test]
async fn correlation_id_follows_client_request_id() {
    let sim = Sim::contoso().await;
    let id = "5b0a1f6e-0000-4000-8000-00000000abcd";
    let resp = sim
        .http
        .post(sim.sim.token_url(TENANT_DOMAIN))
        .header("client-request-id", id)
        .form(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_APP_ID),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["client-request-id"], id);
    assert!(resp.headers().contains_key("x-ms-request-id"));
    let reply = Reply::from(resp).await;
    assert_eq!(reply.body["correlation_id"], id);
    assert!(reply
        .description()
        .contains(&format!("Correlation ID: {id}")));
}

// ---------------------------------------------------------------------------------------------
// Refresh tokens.

#[tokio::test]
async fn refresh_rotates_and_the_old_token_is_then_refused_with_70000() {
    let sim = Sim::contoso().await;
    let first = sim.login(&AuthRequest::desktop()).await;
    let old = first["refresh_token"].as_str().unwrap();

    let second = sim.refresh(PUBLIC_APP_ID, old).await.ok();
    let new = second["refresh_token"].as_str().unwrap();
    assert_ne!(new, old, "a new refresh token every time");
    assert_eq!(
        second["scope"], first["scope"],
        "scopes default to the grant's"
    );
    assert!(second["id_token"].is_string());

    sim.refresh(PUBLIC_APP_ID, old)
        .await
        .assert_error(400, "invalid_grant", 70000);
    sim.refresh(PUBLIC_APP_ID, new).await.ok();
}

#[tokio::test]
async fn without_revocation_the_rotated_token_keeps_working() {
    let sim = Sim::start(SimConfig {
        revoke_rotated_refresh_tokens: false,
        ..SimConfig::default()
    })
    .await;
    let tokens = sim.login(&AuthRequest::desktop()).await;
    let old = tokens["refresh_token"].as_str().unwrap();
    let new = sim.refresh(PUBLIC_APP_ID, old).await.ok();
    assert_ne!(new["refresh_token"].as_str().unwrap(), old);
    sim.refresh(PUBLIC_APP_ID, old).await.ok();
}

#[tokio::test]
async fn refresh_errors_unknown_revoked_expired() {
    let sim = Sim::contoso().await;
    sim.refresh(PUBLIC_APP_ID, "1.AQnot-a-token")
        .await
        .assert_error(400, "invalid_grant", 9002313);

    let rt = sim.login(&AuthRequest::desktop()).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    sim.sim.set_faults(|f| f.refresh_token_expired = true);
    let expired = sim.refresh(PUBLIC_APP_ID, &rt).await;
    expired.assert_error(400, "invalid_grant", 700082);
    assert_eq!(expired.body["suberror"], "bad_token");
    assert!(expired
        .description()
        .contains("The refresh token has expired due to inactivity."));
    assert_eq!(sim.last_token_outcome(), "invalid_grant AADSTS700082");

    sim.sim.set_faults(|f| f.refresh_token_expired = false);
    sim.sim.revoke_refresh_tokens();
    sim.refresh(PUBLIC_APP_ID, &rt)
        .await
        .assert_error(400, "invalid_grant", 50173);
}

#[tokio::test]
async fn refresh_token_of_another_client_is_refused() {
    let sim = Sim::contoso().await;
    let rt = sim.login(&AuthRequest::web()).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    sim.refresh(PUBLIC_APP_ID, &rt)
        .await
        .assert_error(400, "invalid_grant", 70000);
}

#[tokio::test]
async fn refresh_with_a_scope_parameter() {
    let sim = Sim::contoso().await;
    let rt = sim.login(&AuthRequest::desktop()).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    let office365 = sim
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_APP_ID),
            ("refresh_token", &rt),
            ("scope", "https://outlook.office365.com/SMTP.Send"),
        ])
        .await
        .ok();
    assert_eq!(
        office365["scope"],
        "https://outlook.office365.com/SMTP.Send openid profile"
    );
    let rt = office365["refresh_token"].as_str().unwrap();

    let not_consented = sim
        .token(&[
            ("grant_type", "refresh_token"),
            ("client_id", PUBLIC_APP_ID),
            ("refresh_token", rt),
            ("scope", "https://graph.microsoft.com/Mail.Send"),
        ])
        .await;
    not_consented.assert_error(400, "invalid_grant", 65001);
    assert_eq!(not_consented.body["suberror"], "consent_required");
}

#[tokio::test]
async fn mfa_conditional_access_and_consent_faults_stop_user_tokens() {
    let sim = Sim::contoso().await;
    let req = AuthRequest::desktop();
    let rt = sim.login(&req).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();

    sim.sim.set_faults(|f| f.mfa_required = true);
    let code = sim.code(&req).await;
    let mfa = sim.redeem(&req, &code).await;
    mfa.assert_error(400, "interaction_required", 50076);
    assert!(mfa
        .description()
        .contains("00000002-0000-0ff1-ce00-000000000000"));
    sim.refresh(PUBLIC_APP_ID, &rt)
        .await
        .assert_error(400, "interaction_required", 50076);

    sim.sim.set_faults(|f| {
        f.mfa_required = false;
        f.conditional_access_blocked = true;
    });
    let ca = sim.refresh(PUBLIC_APP_ID, &rt).await;
    ca.assert_error(400, "invalid_grant", 53003);
    assert!(ca
        .description()
        .contains("Access has been blocked by Conditional Access policies."));

    sim.sim.set_faults(|f| {
        f.conditional_access_blocked = false;
        f.consent_required = true;
    });
    let consent = sim.refresh(PUBLIC_APP_ID, &rt).await;
    consent.assert_error(400, "invalid_grant", 65001);
    assert_eq!(consent.body["suberror"], "consent_required");

    sim.sim.set_faults(|f| f.consent_required = false);
    sim.refresh(PUBLIC_APP_ID, &rt).await.ok();
}

// ---------------------------------------------------------------------------------------------
// Client credentials.

#[tokio::test]
async fn client_credentials_gives_an_app_only_token_with_roles_and_no_refresh_token() {
    let sim = Sim::contoso().await;
    let tokens = sim.client_credentials(TENANT_ID, APP_ONLY_SCOPE).await.ok();
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["expires_in"], 3599);
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    assert!(tokens.get("id_token").is_none(), "{tokens}");
    let at = claims(&tokens["access_token"]);
    assert_eq!(at["roles"], serde_json::json!(["SMTP.SendAsApp"]));
    assert_eq!(at["aud"], "https://outlook.office.com");
    assert!(at["upn"].is_null() && at["scp"].is_null(), "{at}");
    assert_eq!(
        sim.token_requests()[0],
        ("client_credentials".into(), "ok".into(), false, None)
    );
}

#[tokio::test]
async fn client_credentials_needs_a_tenant_a_default_scope_and_a_secret() {
    let sim = Sim::contoso().await;
    for alias in ["common", "organizations"] {
        sim.client_credentials(alias, APP_ONLY_SCOPE)
            .await
            .assert_error(400, "invalid_request", 50059);
    }
    sim.client_credentials(TENANT_DOMAIN, SMTP_SCOPE)
        .await
        .assert_error(400, "invalid_scope", 1002012);
    sim.token(&[
        ("grant_type", "client_credentials"),
        ("client_id", PUBLIC_APP_ID),
        ("scope", APP_ONLY_SCOPE),
    ])
    .await
    .assert_error(401, "invalid_client", 7000218);

    sim.sim.set_faults(|f| f.conditional_access_blocked = true);
    sim.client_credentials(TENANT_DOMAIN, APP_ONLY_SCOPE)
        .await
        .assert_error(400, "invalid_grant", 53003);
}

// ---------------------------------------------------------------------------------------------
// Device code flow.

#[tokio::test]
async fn device_code_response_tells_the_user_where_to_go() {
    let sim = Sim::interactive().await;
    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    let user_code = dc["user_code"].as_str().unwrap();
    let uri = format!("{}/devicelogin", sim.sim.http_base());
    assert_eq!(user_code.len(), 9);
    assert_eq!(dc["verification_uri"], uri.as_str());
    assert_eq!(dc["expires_in"], 900);
    assert_eq!(dc["interval"], 1);
    assert!(dc["device_code"].as_str().unwrap().len() > 40);
    assert_eq!(
        dc["message"],
        format!(
            "To sign in, use a web browser to open the page {uri} and enter the code \
             {user_code} to authenticate."
        )
    );
    assert!(sim.sim.events().iter().any(|l| matches!(
        &l.event,
        Event::DeviceCode { user_code: c, .. } if c == user_code
    )));
}

#[tokio::test]
async fn device_flow_pending_then_slow_down_then_approved() {
    let sim = Sim::interactive().await;
    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    let device_code = dc["device_code"].as_str().unwrap();

    sim.poll(PUBLIC_APP_ID, device_code)
        .await
        .assert_error(400, "authorization_pending", 70016);
    let fast = sim.poll(PUBLIC_APP_ID, device_code).await;
    assert_eq!(fast.status, StatusCode::BAD_REQUEST);
    assert_eq!(fast.body["error"], "slow_down");

    assert!(sim
        .sim
        .approve_device_code(dc["user_code"].as_str().unwrap(), BOB));
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = sim.poll(PUBLIC_APP_ID, device_code).await.ok();
    assert!(tokens["refresh_token"].is_string());
    assert_eq!(claims(&tokens["access_token"])["upn"], BOB);
    assert_eq!(claims(&tokens["id_token"])["preferred_username"], BOB);

    // A device code is good for one set of tokens.
    sim.poll(PUBLIC_APP_ID, device_code)
        .await
        .assert_error(400, "invalid_grant", 70000);
    let outcomes: Vec<String> = sim.token_requests().into_iter().map(|t| t.1).collect();
    assert_eq!(
        outcomes,
        vec![
            "authorization_pending AADSTS70016",
            "slow_down AADSTS70016",
            "ok",
            "invalid_grant AADSTS70000"
        ]
    );
}

#[tokio::test]
async fn device_flow_declined_expired_and_unknown_codes() {
    let sim = Sim::interactive().await;
    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    assert!(sim
        .sim
        .decline_device_code(dc["user_code"].as_str().unwrap()));
    sim.poll(PUBLIC_APP_ID, dc["device_code"].as_str().unwrap())
        .await
        .assert_error(400, "authorization_declined", 70000);

    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    sim.sim.expire_device_codes();
    sim.poll(PUBLIC_APP_ID, dc["device_code"].as_str().unwrap())
        .await
        .assert_error(400, "expired_token", 70020);

    sim.poll(PUBLIC_APP_ID, "DAQABIQEAAABnot-a-device-code")
        .await
        .assert_error(400, "bad_verification_code", 70000);
}

#[tokio::test]
async fn device_flow_auto_approves_after_one_pending_poll() {
    let sim = Sim::contoso().await;
    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    let device_code = dc["device_code"].as_str().unwrap();
    sim.poll(PUBLIC_APP_ID, device_code)
        .await
        .assert_error(400, "authorization_pending", 70016);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let tokens = sim.poll(PUBLIC_APP_ID, device_code).await.ok();
    assert_eq!(claims(&tokens["id_token"])["preferred_username"], ALICE);
}

#[tokio::test]
async fn device_flow_needs_a_public_client() {
    let sim = Sim::contoso().await;
    let dc = sim.device_code(WEB_APP_ID, SMTP_SCOPES).await.ok();
    sim.poll(WEB_APP_ID, dc["device_code"].as_str().unwrap())
        .await
        .assert_error(401, "invalid_client", 7000218);
}

#[tokio::test]
async fn devicecode_endpoint_checks_client_and_scopes() {
    let sim = Sim::contoso().await;
    sim.device_code("11111111-2222-3333-4444-555555555555", SMTP_SCOPES)
        .await
        .assert_error(400, "unauthorized_client", 700016);
    sim.device_code(
        PUBLIC_APP_ID,
        "https://graph.microsoft.com/Mail.Send https://outlook.office.com/SMTP.Send",
    )
    .await
    .assert_error(400, "invalid_scope", 70011);
}

#[tokio::test]
async fn device_login_page_approves_for_the_picked_user() {
    let sim = Sim::interactive().await;
    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    let user_code = dc["user_code"].as_str().unwrap();

    let page = sim
        .http
        .get(sim.sim.device_login_url())
        .send()
        .await
        .unwrap();
    assert_eq!(page.status(), StatusCode::OK);
    let html = page.text().await.unwrap();
    for needle in ["id=\"user_code\"", "id=\"approve\"", "id=\"deny\"", BOB] {
        assert!(html.contains(needle), "{needle} missing from {html}");
    }

    let wrong = sim
        .http
        .post(sim.sim.device_login_url())
        .form(&[
            ("user_code", "WRONGCODE"),
            ("user", BOB),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(wrong.status(), StatusCode::BAD_REQUEST);
    assert!(wrong
        .text()
        .await
        .unwrap()
        .contains("Check the code and try again."));

    let lower = user_code.to_ascii_lowercase();
    let done = sim
        .http
        .post(sim.sim.device_login_url())
        .form(&[
            ("user_code", lower.as_str()),
            ("user", BOB),
            ("decision", "approve"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(done.status(), StatusCode::OK);
    let html = done.text().await.unwrap();
    assert!(html.contains("You have signed in to the"), "{html}");
    assert!(html.contains("mailgate (desktop)"));

    let tokens = sim
        .poll(PUBLIC_APP_ID, dc["device_code"].as_str().unwrap())
        .await
        .ok();
    assert_eq!(claims(&tokens["access_token"])["upn"], BOB);
}

#[tokio::test]
async fn device_login_page_deny_declines_the_code() {
    let sim = Sim::interactive().await;
    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await.ok();
    let resp = sim
        .http
        .post(sim.sim.device_login_url())
        .form(&[
            ("user_code", dc["user_code"].as_str().unwrap()),
            ("user", ALICE),
            ("decision", "deny"),
        ])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    sim.poll(PUBLIC_APP_ID, dc["device_code"].as_str().unwrap())
        .await
        .assert_error(400, "authorization_declined", 70000);
}

// ---------------------------------------------------------------------------------------------
// Token endpoint faults.

#[tokio::test]
async fn status_fault_answers_with_that_status_and_html() {
    let sim = Sim::contoso().await;
    sim.sim
        .set_faults(|f| f.token_endpoint = EndpointFault::Status(503));
    let resp = sim
        .http
        .post(sim.sim.token_url(TENANT_DOMAIN))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
    assert!(resp.headers()["content-type"]
        .to_str()
        .unwrap()
        .starts_with("text/html"));
    assert!(resp.text().await.unwrap().contains("503"));
    assert_eq!(sim.last_token_outcome(), "http 503");

    let dc = sim.device_code(PUBLIC_APP_ID, SMTP_SCOPES).await;
    assert_eq!(dc.status, StatusCode::SERVICE_UNAVAILABLE);

    sim.sim
        .set_faults(|f| f.token_endpoint = EndpointFault::None);
    sim.client_credentials(TENANT_DOMAIN, APP_ONLY_SCOPE)
        .await
        .ok();
}

#[tokio::test]
async fn hang_fault_never_answers_until_shutdown() {
    let sim = Sim::contoso().await;
    sim.sim
        .set_faults(|f| f.token_endpoint = EndpointFault::Hang);
    let impatient = reqwest::Client::builder()
        .timeout(Duration::from_millis(300))
        .build()
        .unwrap();
    let err = impatient
        .post(sim.sim.token_url(TENANT_DOMAIN))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .expect_err("no answer");
    assert!(err.is_timeout(), "{err}");
    assert_eq!(sim.last_token_outcome(), "hang");
    // The authorize endpoint is not affected.
    assert!(sim
        .sign_in(&AuthRequest::desktop())
        .await
        .get("code")
        .is_some());
    tokio::time::timeout(Duration::from_secs(5), sim.sim.shutdown())
        .await
        .expect("shutdown is not held up by the hanging request");
}

// ---------------------------------------------------------------------------------------------
// Gmail mode.

impl AuthRequest {
    fn gmail() -> AuthRequest {
        AuthRequest {
            redirect_uri: "http://localhost:8080/".into(),
            scope: "https://mail.google.com/ openid email".into(),
            ..AuthRequest::desktop()
        }
    }
}

#[tokio::test]
async fn gmail_mode_serves_googles_paths_and_token_shape() {
    let sim = Sim::gmail().await;
    assert!(sim.sim.authorize_url("").ends_with("/o/oauth2/v2/auth"));
    let req = AuthRequest::gmail();
    let cb = sim.sign_in(&req).await;
    assert_eq!(
        cb.get("scope"),
        Some("https://mail.google.com/ openid email")
    );
    let code = cb.get("code").unwrap();
    let tokens = sim.redeem(&req, code).await.ok();
    assert!(tokens["access_token"]
        .as_str()
        .unwrap()
        .starts_with("ya29."));
    assert!(tokens["refresh_token"].as_str().unwrap().starts_with("1//"));
    assert!(tokens.get("ext_expires_in").is_none());
    assert_eq!(tokens["scope"], "https://mail.google.com/ openid email");
    let id = claims(&tokens["id_token"]);
    assert_eq!(id["iss"], "https://accounts.google.com");
    assert_eq!(id["email"], ALICE);

    // Google does not rotate refresh tokens.
    let rt = tokens["refresh_token"].as_str().unwrap();
    let refreshed = sim.refresh(PUBLIC_APP_ID, rt).await.ok();
    assert!(refreshed.get("refresh_token").is_none(), "{refreshed}");
    sim.refresh(PUBLIC_APP_ID, rt).await.ok();
}

#[tokio::test]
async fn gmail_errors_are_googles() {
    let sim = Sim::gmail().await;
    let req = AuthRequest::gmail();
    let rt = sim.login(&req).await["refresh_token"]
        .as_str()
        .unwrap()
        .to_string();
    sim.sim.revoke_refresh_tokens();
    let revoked = sim.refresh(PUBLIC_APP_ID, &rt).await;
    assert_eq!(revoked.status, StatusCode::BAD_REQUEST);
    assert_eq!(
        revoked.body,
        serde_json::json!({
            "error": "invalid_grant",
            "error_description": "Token has been expired or revoked."
        })
    );
    assert_eq!(sim.last_token_outcome(), "invalid_grant");

    let code = sim.code(&req).await;
    let reused = sim.redeem(&req, &code).await;
    reused.ok();
    let reused = sim.redeem(&req, &code).await;
    assert_eq!(reused.body["error"], "invalid_grant");
    assert!(reused.body.get("error_codes").is_none());

    // Microsoft-only scopes are refused on the consent screen.
    let resp = sim
        .authorize(&req.clone().scope("https://mail.google.com/ offline_access"))
        .await;
    assert_eq!(resp.status(), StatusCode::BAD_REQUEST);
    assert!(resp.text().await.unwrap().contains("invalid_scope"));

    // Google's device flow does not allow the Gmail scope.
    let dc = sim
        .post_form(
            &sim.sim.devicecode_url(""),
            &[
                ("client_id", PUBLIC_APP_ID),
                ("scope", "https://mail.google.com/"),
            ],
        )
        .await;
    assert_eq!(dc.status, StatusCode::BAD_REQUEST);
    assert_eq!(dc.body["error"], "invalid_scope");

    // Entra's paths do not exist here.
    let ms = sim
        .http
        .post(sim.url("/common/oauth2/v2.0/token"))
        .send()
        .await
        .unwrap();
    assert_eq!(ms.status(), StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn gmail_device_flow_for_sign_in_scopes() {
    let sim = Sim::gmail().await;
    let dc = sim
        .post_form(
            &sim.sim.devicecode_url(""),
            &[
                ("client_id", PUBLIC_APP_ID),
                (
                    "scope",
                    "openid email https://www.googleapis.com/auth/userinfo.email",
                ),
            ],
        )
        .await
        .ok();
    assert_eq!(dc["expires_in"], 1800);
    assert!(dc["verification_url"]
        .as_str()
        .unwrap()
        .ends_with("/devicelogin"));
    let pending = sim
        .poll(PUBLIC_APP_ID, dc["device_code"].as_str().unwrap())
        .await;
    assert_eq!(pending.status, StatusCode::PRECONDITION_REQUIRED);
    assert_eq!(pending.body["error"], "authorization_pending");
}
