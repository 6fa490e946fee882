//! The device authorization endpoint and the device login page where a user enters the code.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::json;
use time::Duration;

use super::errors::{body_json, json_headers, trace_headers, Trace};
use super::scopes::{record_consent, Scopes};
use super::{now, pages, param, parse_form, Ctx, OAuthError};
use crate::directory::TenantRef;
use crate::tokens::{random_string, user_code, DeviceAuth, DeviceState};
use crate::{Event, Mode};

/// Microsoft's device codes live 15 minutes, Google's 30.
fn lifetime(mode: Mode) -> u64 {
    match mode {
        Mode::Microsoft => 900,
        Mode::Gmail => 1800,
    }
}

/// Scopes Google allows in the device flow (not Gmail's: `https://mail.google.com/` is refused).
const GOOGLE_DEVICE_SCOPES: &[&str] = &[
    "https://www.googleapis.com/auth/userinfo.email",
    "https://www.googleapis.com/auth/userinfo.profile",
    "https://www.googleapis.com/auth/drive.appdata",
    "https://www.googleapis.com/auth/drive.file",
    "https://www.googleapis.com/auth/youtube",
    "https://www.googleapis.com/auth/youtube.readonly",
];

/// `POST /{tenant}/oauth2/v2.0/devicecode`
pub(crate) async fn devicecode(
    AxState(ctx): AxState<Arc<Ctx>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&ctx, Some(&tenant), &headers, &body).await
}

/// `POST /device/code` (Gmail mode)
pub(crate) async fn devicecode_gmail(
    AxState(ctx): AxState<Arc<Ctx>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&ctx, None, &headers, &body).await
}

async fn handle(ctx: &Ctx, tenant: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Response {
    if let Some(resp) = ctx.endpoint_fault(|_| {}).await {
        return resp;
    }
    let trace = Trace::new(headers);
    match create(ctx, tenant, &parse_form(body)) {
        Ok(value) => {
            let mut resp = (StatusCode::OK, json_headers(), body_json(&value)).into_response();
            if ctx.mode() == Mode::Microsoft {
                trace_headers(&mut resp, &trace);
            }
            resp
        }
        Err(e) => e.json(ctx, &trace),
    }
}

fn create(
    ctx: &Ctx,
    tenant: Option<&str>,
    form: &HashMap<String, String>,
) -> Result<serde_json::Value, OAuthError> {
    let mode = ctx.mode();
    let dir = ctx.state.directory.read().unwrap().clone();
    let tenant_kind = match tenant {
        Some(t) => match dir.tenant_kind(t) {
            TenantRef::Unknown => return Err(OAuthError::tenant_not_found(t)),
            k => Some(k),
        },
        None => None,
    };
    let client_id = param(form, "client_id").ok_or_else(|| OAuthError::missing("client_id"))?;
    let app = dir
        .app(client_id)
        .ok_or_else(|| OAuthError::app_not_found(client_id, &dir.tenant_domain))?;
    if tenant_kind == Some(TenantRef::Alias) {
        if tenant.is_some_and(|t| t.eq_ignore_ascii_case("consumers")) {
            return Err(OAuthError::consumers_not_allowed(app));
        }
        if app.single_tenant {
            return Err(OAuthError::not_multi_tenant(app));
        }
    }
    let raw = param(form, "scope").ok_or_else(|| OAuthError::missing("scope"))?;
    let scopes = match mode {
        Mode::Microsoft => {
            let mut s = Scopes::parse_microsoft(raw, app, &dir.tenant_domain)?;
            if !s.expand_default(app) {
                return Err(OAuthError::consent_required_grant(app));
            }
            s
        }
        Mode::Gmail => {
            let s = Scopes::parse_google(raw)?;
            if let Some(bad) = s
                .names
                .iter()
                .find(|n| !GOOGLE_DEVICE_SCOPES.contains(&n.as_str()))
            {
                return Err(OAuthError::google_device_scope(bad));
            }
            s
        }
    };
    let code = user_code();
    let device_code = match mode {
        Mode::Microsoft => format!("DAQABIQEAAAB{}", random_string(140)),
        Mode::Gmail => format!("AH-1Ng{}", random_string(90)),
    };
    let interval = ctx.state.config.device_poll_interval_secs;
    let expires_in = lifetime(mode);
    ctx.state.tokens.lock().unwrap().devices.insert(
        device_code.clone(),
        DeviceAuth {
            client_id: app.client_id.clone(),
            user_code: code.clone(),
            scopes: scopes.stored(),
            expires_at: now() + Duration::seconds(expires_in as i64),
            interval_secs: interval,
            last_poll: None,
            state: DeviceState::Pending,
        },
    );
    ctx.state.log(Event::DeviceCode {
        client_id: app.client_id.clone(),
        user_code: code.clone(),
        scopes: scopes.stored(),
    });
    let verification_uri = format!("{}/devicelogin", ctx.state.http_base);
    Ok(match mode {
        Mode::Microsoft => json!({
            "user_code": code,
            "device_code": device_code,
            "verification_uri": verification_uri,
            "expires_in": expires_in,
            "interval": interval,
            "message": format!(
                "To sign in, use a web browser to open the page {verification_uri} and enter the \
                 code {code} to authenticate."
            ),
        }),
        Mode::Gmail => json!({
            "device_code": device_code,
            "user_code": code,
            "expires_in": expires_in,
            "interval": interval,
            "verification_url": verification_uri,
        }),
    })
}

/// A pending, unexpired device authorization by its user code: (device code, client id, scopes).
fn find_pending(ctx: &Ctx, user_code: &str) -> Option<(String, String, Vec<String>)> {
    let wanted: String = user_code
        .chars()
        .filter(|c| c.is_ascii_alphanumeric())
        .collect();
    if wanted.is_empty() {
        return None;
    }
    let t = now();
    let reg = ctx.state.tokens.lock().unwrap();
    reg.devices
        .iter()
        .find(|(_, d)| {
            d.user_code.eq_ignore_ascii_case(&wanted)
                && d.state == DeviceState::Pending
                && t <= d.expires_at
        })
        .map(|(dc, d)| (dc.clone(), d.client_id.clone(), d.scopes.clone()))
}

/// The app's name and the scope descriptions, for the page.
fn describe(ctx: &Ctx, client_id: &str, scopes: &[String]) -> Option<(String, Scopes)> {
    let dir = ctx.state.directory.read().unwrap();
    let app = dir.app(client_id)?;
    let raw = scopes.join(" ");
    let parsed = match ctx.mode() {
        Mode::Microsoft => Scopes::parse_microsoft(&raw, app, &dir.tenant_domain).ok()?,
        Mode::Gmail => Scopes::parse_google(&raw).ok()?,
    };
    Some((app.name.clone(), parsed))
}

fn users(ctx: &Ctx) -> Vec<(String, String)> {
    ctx.state
        .directory
        .read()
        .unwrap()
        .users
        .iter()
        .map(|u| (u.address.clone(), u.display_name.clone()))
        .collect()
}

/// `GET /devicelogin` (`?otc=CODE` fills the code in).
pub(crate) async fn login_page(
    AxState(ctx): AxState<Arc<Ctx>>,
    RawQuery(query): RawQuery,
) -> Response {
    let q = parse_form(query.unwrap_or_default().as_bytes());
    let code = param(&q, "otc").unwrap_or_default();
    let known =
        find_pending(&ctx, code).and_then(|(_, client, scopes)| describe(&ctx, &client, &scopes));
    pages::device_page(&pages::DeviceView {
        mode: ctx.mode(),
        code,
        users: users(&ctx),
        selected: None,
        app: known
            .as_ref()
            .map(|(name, s)| (name.as_str(), s.descriptions())),
        error: None,
        status: StatusCode::OK,
    })
}

/// `POST /devicelogin`: `user_code`, `user` and `decision` (`approve` or `deny`). Without a
/// decision the page comes back showing which app the code belongs to.
pub(crate) async fn login_submit(AxState(ctx): AxState<Arc<Ctx>>, body: Bytes) -> Response {
    let form = parse_form(&body);
    let mode = ctx.mode();
    let code = param(&form, "user_code").unwrap_or_default();
    let chosen = param(&form, "user");
    let users = users(&ctx);
    let again = |error: &str, app: Option<(&str, Vec<(String, &'static str)>)>| {
        pages::device_page(&pages::DeviceView {
            mode,
            code,
            users: users.clone(),
            selected: chosen,
            app,
            error: Some(error),
            status: StatusCode::BAD_REQUEST,
        })
    };
    let Some((device_code, client_id, scopes)) = find_pending(&ctx, code) else {
        return again("That code didn't work. Check the code and try again.", None);
    };
    let Some((app_name, parsed)) = describe(&ctx, &client_id, &scopes) else {
        return again("That code didn't work. Check the code and try again.", None);
    };
    let new_state = match param(&form, "decision") {
        Some("approve") => {
            let user = chosen.and_then(|c| {
                users
                    .iter()
                    .find(|(a, _)| a.eq_ignore_ascii_case(c))
                    .map(|(a, _)| a.clone())
            });
            let Some(user) = user else {
                return again(
                    "Pick the account to sign in with.",
                    Some((&app_name, parsed.descriptions())),
                );
            };
            DeviceState::Approved { user }
        }
        Some("deny") => DeviceState::Declined,
        _ => {
            return pages::device_page(&pages::DeviceView {
                mode,
                code,
                users: users.clone(),
                selected: chosen,
                app: Some((&app_name, parsed.descriptions())),
                error: None,
                status: StatusCode::OK,
            })
        }
    };
    let approved = matches!(new_state, DeviceState::Approved { .. });
    let changed = match ctx
        .state
        .tokens
        .lock()
        .unwrap()
        .devices
        .get_mut(&device_code)
    {
        Some(d) if d.state == DeviceState::Pending => {
            d.state = new_state;
            true
        }
        _ => false,
    };
    if !changed {
        return again("That code didn't work. Check the code and try again.", None);
    }
    if approved {
        if let Some(app) = ctx.state.directory.write().unwrap().app_mut(&client_id) {
            record_consent(app, &parsed);
        }
    }
    pages::device_done_page(mode, &app_name, approved)
}
