//! The authorize endpoint: validates the request as Entra does, then either signs in at once
//! (`auto_approve`) or shows the sign-in and consent page whose decision comes back to
//! [`decision`].

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use time::OffsetDateTime;

use super::errors::Trace;
use super::scopes::{record_consent, Scopes};
use super::{now, pages, param, parse_form, CodeExtras, Ctx, OAuthError};
use crate::directory::{redirect_uri_matches, TenantRef};
use crate::tokens::{random_string, AuthCode};
use crate::{App, Directory, Event, Mode};

/// How long the sign-in page may stay open before its request is forgotten.
const SIGNIN_LIFETIME: time::Duration = time::Duration::hours(1);

/// A sign-in request waiting for the user's decision on the sign-in page.
#[derive(Clone, Debug)]
pub(crate) struct PendingSignIn {
    pub client_id: String,
    pub redirect_uri: String,
    pub scopes: Scopes,
    pub state: Option<String>,
    pub nonce: Option<String>,
    pub code_challenge: Option<String>,
    pub code_challenge_method: Option<String>,
    pub response_mode: ResponseMode,
    /// Gmail mode: issue a refresh token with the code.
    pub offline: bool,
    pub created: OffsetDateTime,
}

/// How the result goes back to the app.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResponseMode {
    Query,
    Fragment,
    FormPost,
}

/// `GET /{tenant}/oauth2/v2.0/authorize`
pub(crate) async fn authorize(
    AxState(ctx): AxState<Arc<Ctx>>,
    Path(tenant): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    start(&ctx, Some(&tenant), query, &headers)
}

/// `GET /o/oauth2/v2/auth` (Gmail mode)
pub(crate) async fn authorize_gmail(
    AxState(ctx): AxState<Arc<Ctx>>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
) -> Response {
    start(&ctx, None, query, &headers)
}

/// `POST /{tenant}/oauth2/v2.0/authorize/decision`: the sign-in page's form.
pub(crate) async fn decision(
    AxState(ctx): AxState<Arc<Ctx>>,
    Path(_tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&ctx, &headers, &body)
}

/// `POST /o/oauth2/v2/auth/decision` (Gmail mode)
pub(crate) async fn decision_gmail(
    AxState(ctx): AxState<Arc<Ctx>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    decide(&ctx, &headers, &body)
}

/// Where the sign-in page posts its decision.
fn decision_path(mode: Mode, tenant: Option<&str>) -> String {
    match mode {
        Mode::Microsoft => format!(
            "/{}/oauth2/v2.0/authorize/decision",
            form_urlencoded::byte_serialize(tenant.unwrap_or("common").as_bytes())
                .collect::<String>()
        ),
        Mode::Gmail => "/o/oauth2/v2/auth/decision".into(),
    }
}

/// The checks whose failure cannot be sent to the app: the browser shows an error page.
fn check_app(
    dir: &Directory,
    tenant: Option<&str>,
    q: &std::collections::HashMap<String, String>,
) -> Result<(App, String), OAuthError> {
    let tenant_kind = match tenant {
        Some(t) => match dir.tenant_kind(t) {
            TenantRef::Unknown => return Err(OAuthError::tenant_not_found(t)),
            k => Some(k),
        },
        None => None,
    };
    let client_id = param(q, "client_id").ok_or_else(|| OAuthError::missing("client_id"))?;
    let app = dir
        .app(client_id)
        .ok_or_else(|| OAuthError::app_not_found(client_id, &dir.tenant_domain))?
        .clone();
    if tenant_kind == Some(TenantRef::Alias) {
        if tenant.is_some_and(|t| t.eq_ignore_ascii_case("consumers")) {
            return Err(OAuthError::consumers_not_allowed(&app));
        }
        if app.single_tenant {
            return Err(OAuthError::not_multi_tenant(&app));
        }
    }
    let redirect_uri =
        param(q, "redirect_uri").ok_or_else(|| OAuthError::missing("redirect_uri"))?;
    if !app
        .redirect_uris
        .iter()
        .any(|r| redirect_uri_matches(r, redirect_uri))
    {
        return Err(OAuthError::redirect_uri_not_registered(
            redirect_uri,
            &app.client_id,
        ));
    }
    Ok((app, redirect_uri.to_string()))
}

/// The checks whose failure goes back to the app in an error redirect.
fn check_request(
    ctx: &Ctx,
    dir: &Directory,
    app: &App,
    q: &std::collections::HashMap<String, String>,
) -> Result<Scopes, OAuthError> {
    let response_type =
        param(q, "response_type").ok_or_else(|| OAuthError::missing("response_type"))?;
    if response_type.trim() != "code" {
        return Err(OAuthError::unsupported_response_type(response_type));
    }
    let raw_scope = param(q, "scope").ok_or_else(|| OAuthError::missing("scope"))?;
    let mut scopes = match ctx.mode() {
        Mode::Microsoft => Scopes::parse_microsoft(raw_scope, app, &dir.tenant_domain)?,
        Mode::Gmail => Scopes::parse_google(raw_scope)?,
    };
    if let Some(challenge) = param(q, "code_challenge") {
        let method = param(q, "code_challenge_method").unwrap_or("plain");
        if method != "S256" && method != "plain" {
            return Err(OAuthError::code_challenge_method(method));
        }
        if !(43..=128).contains(&challenge.len()) {
            return Err(OAuthError::code_challenge_size());
        }
    }
    if ctx.mode() == Mode::Microsoft {
        if ctx.state.faults().consent_required {
            return Err(OAuthError::consent_required_authorize(app));
        }
        if !scopes.expand_default(app) {
            return Err(OAuthError::consent_required_authorize(app));
        }
    }
    if param(q, "prompt") == Some("none") && !ctx.state.config.auto_approve {
        return Err(OAuthError::login_required());
    }
    Ok(scopes)
}

fn start(ctx: &Ctx, tenant: Option<&str>, query: Option<String>, headers: &HeaderMap) -> Response {
    let trace = Trace::new(headers);
    let mode = ctx.mode();
    let q = parse_form(query.unwrap_or_default().as_bytes());
    let dir = ctx.state.directory.read().unwrap().clone();
    let log = |outcome: String, user: Option<String>, scopes: Vec<String>| {
        ctx.state.log(Event::Authorize {
            client_id: q.get("client_id").cloned().unwrap_or_default(),
            redirect_uri: q.get("redirect_uri").cloned().unwrap_or_default(),
            scopes,
            outcome,
            user,
            pkce: param(&q, "code_challenge").is_some(),
        })
    };
    let raw_scopes = || {
        q.get("scope")
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    };

    let (app, redirect_uri) = match check_app(&dir, tenant, &q) {
        Ok(v) => v,
        Err(e) => {
            log(format!("AADSTS{}", e.code), None, raw_scopes());
            return e.page(mode, &trace);
        }
    };
    let response_mode = match param(&q, "response_mode") {
        Some("fragment") => ResponseMode::Fragment,
        Some("form_post") => ResponseMode::FormPost,
        _ => ResponseMode::Query,
    };
    let state = param(&q, "state").map(str::to_string);
    let scopes = match check_request(ctx, &dir, &app, &q) {
        Ok(s) => s,
        Err(e) => {
            log(format!("AADSTS{}", e.code), None, raw_scopes());
            // Google shows its request errors in the browser; Entra sends them to the app.
            return match mode {
                Mode::Gmail => e.page(mode, &trace),
                Mode::Microsoft => {
                    let mut params = e.redirect_params(mode, &trace);
                    push_state(&mut params, &state);
                    redirect(&redirect_uri, response_mode, params)
                }
            };
        }
    };
    let pending = PendingSignIn {
        client_id: app.client_id.clone(),
        redirect_uri: redirect_uri.clone(),
        scopes,
        state,
        nonce: param(&q, "nonce").map(str::to_string),
        code_challenge: param(&q, "code_challenge").map(str::to_string),
        code_challenge_method: param(&q, "code_challenge").map(|_| {
            param(&q, "code_challenge_method")
                .unwrap_or("plain")
                .to_string()
        }),
        response_mode,
        offline: app.public_client || param(&q, "access_type") == Some("offline"),
        created: now(),
    };
    let login_hint = param(&q, "login_hint");

    if ctx.state.config.auto_approve {
        let user = login_hint
            .and_then(|h| dir.user(h))
            .or_else(|| dir.users.first())
            .map(|u| u.address.clone());
        let Some(user) = user else {
            let e = OAuthError::user_not_found(login_hint.unwrap_or("(none)"), &dir.tenant_domain);
            log(format!("AADSTS{}", e.code), None, pending.scopes.stored());
            return e.page(mode, &trace);
        };
        log(
            "approved".into(),
            Some(user.clone()),
            pending.scopes.stored(),
        );
        return approve(ctx, &pending, &user);
    }

    let request_id = random_string(32);
    let new_consent = pending.scopes.not_consented(&app);
    let descriptions = pending.scopes.descriptions();
    let action = decision_path(mode, tenant);
    let users: Vec<(String, String)> = dir
        .users
        .iter()
        .map(|u| (u.address.clone(), u.display_name.clone()))
        .collect();
    let view = pages::SignInView {
        mode,
        action: &action,
        request_id: &request_id,
        app_name: &app.name,
        client_id: &app.client_id,
        redirect_uri: &redirect_uri,
        scopes: descriptions,
        new_consent,
        users,
        selected: login_hint,
    };
    let resp = pages::signin_page(&view);
    ctx.signins.lock().unwrap().insert(request_id, pending);
    resp
}

fn decide(ctx: &Ctx, headers: &HeaderMap, body: &[u8]) -> Response {
    let trace = Trace::new(headers);
    let mode = ctx.mode();
    let form = parse_form(body);
    let pending = param(&form, "request")
        .and_then(|id| ctx.signins.lock().unwrap().remove(id))
        .filter(|p| now() - p.created < SIGNIN_LIFETIME);
    let Some(pending) = pending else {
        return OAuthError::signin_request_unknown().page(mode, &trace);
    };
    let log = |outcome: &str, user: Option<String>| {
        ctx.state.log(Event::Authorize {
            client_id: pending.client_id.clone(),
            redirect_uri: pending.redirect_uri.clone(),
            scopes: pending.scopes.stored(),
            outcome: outcome.into(),
            user,
            pkce: pending.code_challenge.is_some(),
        })
    };
    match param(&form, "decision") {
        Some("approve") => {
            let dir = ctx.state.directory.read().unwrap().clone();
            let chosen = param(&form, "user").unwrap_or_default();
            let Some(user) = dir.user(chosen).map(|u| u.address.clone()) else {
                let e = OAuthError::user_not_found(chosen, &dir.tenant_domain);
                log(&format!("AADSTS{}", e.code), None);
                return e.page(mode, &trace);
            };
            log("approved", Some(user.clone()));
            approve(ctx, &pending, &user)
        }
        Some("deny") => {
            log("denied", param(&form, "user").map(str::to_string));
            let mut params = OAuthError::user_declined().redirect_params(mode, &trace);
            push_state(&mut params, &pending.state);
            redirect(&pending.redirect_uri, pending.response_mode, params)
        }
        _ => {
            // Unknown decision: put the request back so the page can be submitted again.
            ctx.signins
                .lock()
                .unwrap()
                .insert(param(&form, "request").unwrap_or_default().into(), pending);
            OAuthError::missing("decision").page(mode, &trace)
        }
    }
}

/// Records consent, issues the code and sends the browser back to the app.
fn approve(ctx: &Ctx, p: &PendingSignIn, user: &str) -> Response {
    if let Some(app) = ctx.state.directory.write().unwrap().app_mut(&p.client_id) {
        record_consent(app, &p.scopes);
    }
    let code = ctx.state.tokens.lock().unwrap().issue_code(AuthCode {
        client_id: p.client_id.clone(),
        user: user.to_string(),
        redirect_uri: p.redirect_uri.clone(),
        scopes: p.scopes.stored(),
        code_challenge: p.code_challenge.clone(),
        code_challenge_method: p.code_challenge_method.clone(),
        issued_at: now(),
        redeemed: false,
    });
    ctx.code_extras.lock().unwrap().insert(
        code.clone(),
        CodeExtras {
            nonce: p.nonce.clone(),
            offline: p.offline,
        },
    );
    let mut params = vec![("code".to_string(), code)];
    push_state(&mut params, &p.state);
    match ctx.mode() {
        Mode::Microsoft => {
            params.push(("session_state".into(), uuid::Uuid::new_v4().to_string()));
        }
        Mode::Gmail => {
            params.push(("scope".into(), p.scopes.stored().join(" ")));
        }
    }
    redirect(&p.redirect_uri, p.response_mode, params)
}

fn push_state(params: &mut Vec<(String, String)>, state: &Option<String>) {
    if let Some(s) = state {
        params.push(("state".into(), s.clone()));
    }
}

/// Sends the result to the redirect URI. A URI without a path gets `/`, as at Entra.
fn redirect(uri: &str, mode: ResponseMode, params: Vec<(String, String)>) -> Response {
    let Ok(mut url) = url::Url::parse(uri) else {
        return (StatusCode::BAD_REQUEST, "invalid redirect_uri").into_response();
    };
    match mode {
        ResponseMode::FormPost => return pages::form_post_page(url.as_str(), &params),
        ResponseMode::Query => {
            let mut pairs = url.query_pairs_mut();
            for (k, v) in &params {
                pairs.append_pair(k, v);
            }
        }
        ResponseMode::Fragment => {
            let fragment = form_urlencoded::Serializer::new(String::new())
                .extend_pairs(params.iter())
                .finish();
            url.set_fragment(Some(&fragment));
        }
    }
    let mut resp = StatusCode::FOUND.into_response();
    if let Ok(v) = HeaderValue::from_str(url.as_str()) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp
}
