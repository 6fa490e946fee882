//! The token endpoint: client authentication, then the authorization_code, refresh_token,
//! client_credentials and device_code grants, with Entra's errors and response shape.

use std::collections::HashMap;
use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State as AxState};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use serde::Serialize;
use sha2::{Digest, Sha256};
use time::Duration;

use super::errors::{body_json, json_headers, trace_headers, Trace};
use super::scopes::{ResourceKind, Scopes};
use super::{now, param, parse_form, stable_guid, CodeExtras, Ctx, OAuthError};
use crate::directory::TenantRef;
use crate::tokens::{random_string, AccessToken, DeviceState, RefreshToken};
use crate::{App, Directory, Event, Mode};

/// The device code grant type.
pub(crate) const DEVICE_GRANT: &str = "urn:ietf:params:oauth:grant-type:device_code";

/// Authorization codes live ten minutes.
const CODE_LIFETIME: Duration = Duration::minutes(10);

/// A successful token response, in Microsoft's field order.
#[derive(Serialize)]
struct TokenResponse {
    token_type: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    scope: Option<String>,
    expires_in: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    ext_expires_in: Option<u64>,
    access_token: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    refresh_token: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    id_token: Option<String>,
}

/// What the event log records about a request besides its outcome.
#[derive(Default)]
struct Seen {
    pkce_verified: bool,
    user: Option<String>,
}

/// `POST /{tenant}/oauth2/v2.0/token`
pub(crate) async fn token(
    AxState(ctx): AxState<Arc<Ctx>>,
    Path(tenant): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&ctx, Some(&tenant), &headers, &body).await
}

/// `POST /token` (Gmail mode)
pub(crate) async fn token_gmail(
    AxState(ctx): AxState<Arc<Ctx>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    handle(&ctx, None, &headers, &body).await
}

async fn handle(ctx: &Ctx, tenant: Option<&str>, headers: &HeaderMap, body: &[u8]) -> Response {
    let form = parse_form(body);
    let basic = basic_credentials(headers);
    let grant_type = param(&form, "grant_type").unwrap_or_default().to_string();
    let client_id = basic
        .as_ref()
        .map(|(id, _)| id.clone())
        .or_else(|| param(&form, "client_id").map(str::to_string));
    let log = |outcome: String, seen: &Seen| {
        ctx.state.log(Event::TokenRequest {
            grant_type: grant_type.clone(),
            client_id: client_id.clone(),
            tenant: tenant.unwrap_or("google").to_string(),
            pkce_verified: seen.pkce_verified,
            user: seen.user.clone(),
            outcome,
        })
    };
    if let Some(resp) = ctx.endpoint_fault(|what| log(what, &Seen::default())).await {
        return resp;
    }
    let trace = Trace::new(headers);
    let mut seen = Seen::default();
    match grant(ctx, tenant, &form, basic, &grant_type, &mut seen) {
        Ok(body) => {
            log("ok".into(), &seen);
            let mut resp = (StatusCode::OK, json_headers(), body_json(&body)).into_response();
            if ctx.mode() == Mode::Microsoft {
                trace_headers(&mut resp, &trace);
            }
            resp
        }
        Err(e) => {
            log(e.outcome(ctx.mode()), &seen);
            e.json(ctx, &trace)
        }
    }
}

fn grant(
    ctx: &Ctx,
    tenant: Option<&str>,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
    grant_type: &str,
    seen: &mut Seen,
) -> Result<TokenResponse, OAuthError> {
    let dir = ctx.state.directory.read().unwrap().clone();
    let tenant_kind = match tenant {
        Some(t) => match dir.tenant_kind(t) {
            TenantRef::Unknown => return Err(OAuthError::tenant_not_found(t)),
            k => Some(k),
        },
        None => None,
    };
    if grant_type.is_empty() {
        return Err(OAuthError::missing("grant_type"));
    }
    let app = authenticate(&dir, form, basic)?;
    if tenant_kind == Some(TenantRef::Alias) {
        if tenant.is_some_and(|t| t.eq_ignore_ascii_case("consumers")) {
            return Err(OAuthError::consumers_not_allowed(&app));
        }
        if app.single_tenant {
            return Err(OAuthError::not_multi_tenant(&app));
        }
    }
    match grant_type {
        "authorization_code" => authorization_code(ctx, &dir, &app, form, seen),
        "refresh_token" => refresh_token(ctx, &dir, &app, form, seen),
        "client_credentials" if ctx.mode() == Mode::Microsoft => {
            client_credentials(ctx, &dir, &app, tenant_kind, form)
        }
        DEVICE_GRANT => device_code(ctx, &dir, &app, form, seen),
        other => Err(OAuthError::unsupported_grant(other)),
    }
}

/// Client authentication: `client_secret` in the form or HTTP Basic.
fn authenticate(
    dir: &Directory,
    form: &HashMap<String, String>,
    basic: Option<(String, String)>,
) -> Result<App, OAuthError> {
    let (client_id, secret) = match basic {
        Some((id, secret)) => (Some(id), Some(secret)),
        None => (
            param(form, "client_id").map(str::to_string),
            param(form, "client_secret").map(str::to_string),
        ),
    };
    let client_id = client_id.ok_or_else(|| OAuthError::missing("client_id"))?;
    let app = dir
        .app(&client_id)
        .ok_or_else(|| OAuthError::app_not_found(&client_id, &dir.tenant_domain))?
        .clone();
    match (app.public_client, secret) {
        (true, None) => Ok(app),
        (true, Some(_)) => Err(OAuthError::public_client_sent_secret()),
        (false, None) => Err(OAuthError::secret_missing()),
        (false, Some(s)) => {
            if app.secret_value.as_deref() != Some(s.as_str()) {
                // Also the Secret ID pasted in place of the Value: Entra's message says so.
                Err(OAuthError::secret_invalid(&app.client_id))
            } else if app.secret_expired {
                Err(OAuthError::secret_expired(&app.client_id))
            } else {
                Ok(app)
            }
        }
    }
}

fn parse_scopes(ctx: &Ctx, raw: &str, app: &App, dir: &Directory) -> Result<Scopes, OAuthError> {
    match ctx.mode() {
        Mode::Microsoft => Scopes::parse_microsoft(raw, app, &dir.tenant_domain),
        Mode::Gmail => Scopes::parse_google(raw),
    }
}

/// Faults that stop a user token (Microsoft mode): MFA, Conditional Access, missing consent.
fn user_faults(ctx: &Ctx, app: &App, scopes: &Scopes) -> Result<(), OAuthError> {
    if ctx.mode() == Mode::Gmail {
        return Ok(());
    }
    let f = ctx.state.faults();
    if f.mfa_required {
        return Err(OAuthError::mfa_required(scopes.resource.kind.app_id()));
    }
    if f.conditional_access_blocked {
        return Err(OAuthError::conditional_access_blocked());
    }
    if f.consent_required {
        return Err(OAuthError::consent_required_grant(app));
    }
    Ok(())
}

fn same_redirect(a: &str, b: &str) -> bool {
    match (url::Url::parse(a), url::Url::parse(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

fn pkce_matches(challenge: &str, method: Option<&str>, verifier: &str) -> bool {
    match method.unwrap_or("plain") {
        "S256" => URL_SAFE_NO_PAD.encode(Sha256::digest(verifier.as_bytes())) == challenge,
        _ => verifier == challenge,
    }
}

fn authorization_code(
    ctx: &Ctx,
    dir: &Directory,
    app: &App,
    form: &HashMap<String, String>,
    seen: &mut Seen,
) -> Result<TokenResponse, OAuthError> {
    let code = param(form, "code").ok_or_else(|| OAuthError::missing("code"))?;
    let c = ctx
        .state
        .tokens
        .lock()
        .unwrap()
        .codes
        .get(code)
        .cloned()
        .ok_or_else(OAuthError::malformed_grant)?;
    if !c.client_id.eq_ignore_ascii_case(&app.client_id) {
        return Err(OAuthError::grant_invalid(
            "The authorization code was issued to a different client.",
        ));
    }
    if c.redeemed {
        return Err(OAuthError::code_redeemed());
    }
    if now() - c.issued_at > CODE_LIFETIME {
        return Err(OAuthError::code_expired());
    }
    let redirect_uri =
        param(form, "redirect_uri").ok_or_else(|| OAuthError::missing("redirect_uri"))?;
    if !same_redirect(redirect_uri, &c.redirect_uri) {
        return Err(OAuthError::reply_address_mismatch(
            redirect_uri,
            &c.redirect_uri,
        ));
    }
    if let Some(challenge) = &c.code_challenge {
        let verifier =
            param(form, "code_verifier").ok_or_else(OAuthError::pkce_verifier_missing)?;
        if !pkce_matches(challenge, c.code_challenge_method.as_deref(), verifier) {
            return Err(OAuthError::pkce_mismatch());
        }
        seen.pkce_verified = true;
    }
    seen.user = Some(c.user.clone());
    let scopes = parse_scopes(ctx, &c.scopes.join(" "), app, dir)?;
    user_faults(ctx, app, &scopes)?;
    {
        let mut reg = ctx.state.tokens.lock().unwrap();
        match reg.codes.get_mut(code) {
            // Lost a race with a concurrent redemption of the same code.
            Some(stored) if stored.redeemed => return Err(OAuthError::code_redeemed()),
            Some(stored) => stored.redeemed = true,
            None => return Err(OAuthError::malformed_grant()),
        }
    }
    let extras = ctx
        .code_extras
        .lock()
        .unwrap()
        .remove(code)
        .unwrap_or_default();
    let refresh = match ctx.mode() {
        Mode::Microsoft => scopes.has("offline_access"),
        Mode::Gmail => extras.offline,
    };
    Ok(issue(
        ctx,
        dir,
        app,
        &c.user,
        &scopes,
        refresh.then(|| scopes.stored()),
        &extras,
    ))
}

fn refresh_token(
    ctx: &Ctx,
    dir: &Directory,
    app: &App,
    form: &HashMap<String, String>,
    seen: &mut Seen,
) -> Result<TokenResponse, OAuthError> {
    let rt = param(form, "refresh_token").ok_or_else(|| OAuthError::missing("refresh_token"))?;
    let record = ctx
        .state
        .tokens
        .lock()
        .unwrap()
        .refresh
        .get(rt)
        .cloned()
        .ok_or_else(OAuthError::malformed_grant)?;
    if !record.client_id.eq_ignore_ascii_case(&app.client_id) {
        return Err(OAuthError::grant_invalid(
            "The refresh token was issued to a different client.",
        ));
    }
    if record.revoked {
        return Err(if ctx.rotated.lock().unwrap().contains(rt) {
            OAuthError::refresh_token_rotated()
        } else {
            OAuthError::refresh_token_revoked()
        });
    }
    seen.user = Some(record.user.clone());
    if ctx.state.faults().refresh_token_expired {
        return Err(OAuthError::refresh_token_expired(record.issued_at));
    }
    let granted = parse_scopes(ctx, &record.scopes.join(" "), app, dir)?;
    let scopes = match param(form, "scope") {
        None => granted,
        Some(raw) => {
            let mut asked = parse_scopes(ctx, raw, app, dir)?;
            if ctx.mode() == Mode::Microsoft {
                if !asked.expand_default(app) || !asked.covered_by(&record.scopes, app) {
                    return Err(OAuthError::consent_required_grant(app));
                }
                // OIDC scopes carry over from the grant (offline_access above all).
                for o in &granted.oidc {
                    if !asked.oidc.contains(o) {
                        asked.oidc.push(o);
                    }
                }
            }
            asked
        }
    };
    user_faults(ctx, app, &scopes)?;
    match ctx.mode() {
        Mode::Microsoft => {
            let response = issue(
                ctx,
                dir,
                app,
                &record.user,
                &scopes,
                Some(record.scopes.clone()),
                &CodeExtras::default(),
            );
            if ctx.state.config.revoke_rotated_refresh_tokens {
                if let Some(old) = ctx.state.tokens.lock().unwrap().refresh.get_mut(rt) {
                    old.revoked = true;
                }
                ctx.rotated.lock().unwrap().insert(rt.to_string());
            }
            Ok(response)
        }
        // Google does not rotate: the response has no refresh_token and the old one stays.
        Mode::Gmail => Ok(issue(
            ctx,
            dir,
            app,
            &record.user,
            &scopes,
            None,
            &CodeExtras::default(),
        )),
    }
}

fn client_credentials(
    ctx: &Ctx,
    dir: &Directory,
    app: &App,
    tenant_kind: Option<TenantRef>,
    form: &HashMap<String, String>,
) -> Result<TokenResponse, OAuthError> {
    if app.public_client {
        return Err(OAuthError::secret_missing());
    }
    if tenant_kind != Some(TenantRef::Home) {
        return Err(OAuthError::no_tenant_for_app_only());
    }
    let raw = param(form, "scope").ok_or_else(|| OAuthError::missing("scope"))?;
    let parts: Vec<&str> = raw.split_whitespace().collect();
    if parts.len() != 1 || !parts[0].ends_with("/.default") {
        return Err(OAuthError::client_credentials_scope(raw));
    }
    let scopes = Scopes::parse_microsoft(raw, app, &dir.tenant_domain)?;
    if ctx.state.faults().conditional_access_blocked {
        return Err(OAuthError::conditional_access_blocked());
    }
    // App permissions in the directory are Exchange Online's (SMTP.SendAsApp...).
    let roles = match scopes.resource.kind {
        ResourceKind::Exchange => app.app_permissions.clone(),
        _ => Vec::new(),
    };
    let lifetime = ctx.state.config.access_token_lifetime_secs;
    let access_token = ctx.state.tokens.lock().unwrap().issue_access(
        AccessToken {
            client_id: app.client_id.clone(),
            user: None,
            audience: scopes.audience(),
            scopes: Vec::new(),
            roles,
            expires_at: now() + Duration::seconds(lifetime as i64),
        },
        &dir.tenant_id,
    );
    Ok(TokenResponse {
        token_type: "Bearer",
        scope: None,
        expires_in: lifetime,
        ext_expires_in: Some(lifetime),
        access_token,
        refresh_token: None,
        id_token: None,
    })
}

fn device_code(
    ctx: &Ctx,
    dir: &Directory,
    app: &App,
    form: &HashMap<String, String>,
    seen: &mut Seen,
) -> Result<TokenResponse, OAuthError> {
    let device_code = param(form, "device_code")
        .or_else(|| param(form, "code"))
        .ok_or_else(|| OAuthError::missing("device_code"))?;
    let t = now();
    let (user, stored_scopes) = {
        let mut reg = ctx.state.tokens.lock().unwrap();
        let d = reg
            .devices
            .get_mut(device_code)
            .filter(|d| d.client_id.eq_ignore_ascii_case(&app.client_id))
            .ok_or_else(OAuthError::bad_verification_code)?;
        if t > d.expires_at {
            return Err(OAuthError::device_code_expired());
        }
        match d.state.clone() {
            DeviceState::Redeemed => {
                return Err(OAuthError::grant_invalid(
                    "The device code was already redeemed.",
                ))
            }
            DeviceState::Declined => return Err(OAuthError::authorization_declined()),
            DeviceState::Pending => {
                let interval = Duration::seconds(d.interval_secs as i64);
                // A little slack for timer and network jitter of a client that waits exactly.
                let too_fast = d
                    .last_poll
                    .is_some_and(|last| t - last < interval - Duration::milliseconds(150));
                let first = d.last_poll.is_none();
                d.last_poll = Some(t);
                if too_fast {
                    return Err(OAuthError::slow_down(d.interval_secs));
                }
                if first && ctx.state.config.auto_approve {
                    if let Some(u) = dir.users.first() {
                        d.state = DeviceState::Approved {
                            user: u.address.clone(),
                        };
                    }
                }
                return Err(OAuthError::authorization_pending());
            }
            DeviceState::Approved { user } => (user, d.scopes.clone()),
        }
    };
    seen.user = Some(user.clone());
    let scopes = parse_scopes(ctx, &stored_scopes.join(" "), app, dir)?;
    user_faults(ctx, app, &scopes)?;
    if let Some(d) = ctx
        .state
        .tokens
        .lock()
        .unwrap()
        .devices
        .get_mut(device_code)
    {
        d.state = DeviceState::Redeemed;
    }
    let refresh = match ctx.mode() {
        Mode::Microsoft => scopes.has("offline_access"),
        Mode::Gmail => true,
    };
    Ok(issue(
        ctx,
        dir,
        app,
        &user,
        &scopes,
        refresh.then(|| scopes.stored()),
        &CodeExtras::default(),
    ))
}

/// Issues the tokens of a user grant. `refresh`: the scopes of a new refresh token, if one is
/// issued.
fn issue(
    ctx: &Ctx,
    dir: &Directory,
    app: &App,
    user: &str,
    scopes: &Scopes,
    refresh: Option<Vec<String>>,
    extras: &CodeExtras,
) -> TokenResponse {
    let lifetime = ctx.state.config.access_token_lifetime_secs;
    let access = AccessToken {
        client_id: app.client_id.clone(),
        user: Some(user.to_string()),
        audience: scopes.audience(),
        scopes: scopes.token_scopes(),
        roles: Vec::new(),
        expires_at: now() + Duration::seconds(lifetime as i64),
    };
    let id_token = scopes
        .has("openid")
        .then(|| id_token(ctx.mode(), dir, app, user, scopes, extras.nonce.as_deref()));
    let mut reg = ctx.state.tokens.lock().unwrap();
    match ctx.mode() {
        Mode::Microsoft => {
            let access_token = reg.issue_access(access, &dir.tenant_id);
            let refresh_token = refresh.map(|s| reg.issue_refresh(&app.client_id, user, &s));
            TokenResponse {
                token_type: "Bearer",
                scope: Some(scopes.response_scope()),
                expires_in: lifetime,
                ext_expires_in: Some(lifetime),
                access_token,
                refresh_token,
                id_token,
            }
        }
        Mode::Gmail => {
            // Google's tokens are opaque: `ya29.` access tokens, `1//` refresh tokens.
            let access_token = format!("ya29.a0{}", random_string(160));
            reg.access.insert(access_token.clone(), access);
            let refresh_token = refresh.map(|s| {
                let rt = format!("1//0{}", random_string(100));
                reg.refresh.insert(
                    rt.clone(),
                    RefreshToken {
                        client_id: app.client_id.clone(),
                        user: user.to_string(),
                        scopes: s,
                        issued_at: now(),
                        revoked: false,
                    },
                );
                rt
            });
            TokenResponse {
                token_type: "Bearer",
                scope: Some(scopes.response_scope()),
                expires_in: lifetime,
                ext_expires_in: None,
                access_token,
                refresh_token,
                id_token,
            }
        }
    }
}

/// An OpenID Connect id_token (a JWT; the simulator does not sign it for real).
fn id_token(
    mode: Mode,
    dir: &Directory,
    app: &App,
    user: &str,
    scopes: &Scopes,
    nonce: Option<&str>,
) -> String {
    let t = now().unix_timestamp();
    let name = dir.user(user).map(|u| u.display_name.clone());
    let mut claims = match mode {
        Mode::Microsoft => serde_json::json!({
            "aud": app.client_id,
            "iss": format!("https://login.microsoftonline.com/{}/v2.0", dir.tenant_id),
            "iat": t,
            "nbf": t,
            "exp": t + 3600,
            "name": name,
            "oid": stable_guid(user),
            "preferred_username": user,
            "sub": URL_SAFE_NO_PAD.encode(
                Sha256::digest(format!("{}|{}", user.to_ascii_lowercase(), app.client_id))
            ),
            "tid": dir.tenant_id,
            "ver": "2.0",
        }),
        Mode::Gmail => {
            let digest = Sha256::digest(user.to_ascii_lowercase().as_bytes());
            let sub: String = digest
                .iter()
                .take(10)
                .map(|b| (b'0' + b % 10) as char)
                .collect();
            serde_json::json!({
                "iss": "https://accounts.google.com",
                "azp": app.client_id,
                "aud": app.client_id,
                "sub": format!("1{sub}"),
                "email": user,
                "email_verified": true,
                "name": name,
                "iat": t,
                "exp": t + 3600,
            })
        }
    };
    if let Some(obj) = claims.as_object_mut() {
        if let Some(n) = nonce {
            obj.insert("nonce".into(), n.into());
        }
        if mode == Mode::Microsoft && scopes.has("email") {
            obj.insert("email".into(), user.into());
        }
    }
    let header = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"RS256","kid":"sim"}"#);
    let body = URL_SAFE_NO_PAD.encode(claims.to_string());
    format!("{header}.{body}.{}", random_string(86))
}

/// `Authorization: Basic` client credentials (each part form-encoded, as RFC 6749 2.3.1 asks).
fn basic_credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers
        .get(axum::http::header::AUTHORIZATION)?
        .to_str()
        .ok()?;
    let (scheme, rest) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = String::from_utf8(STANDARD.decode(rest.trim()).ok()?).ok()?;
    let (id, secret) = decoded.split_once(':')?;
    Some((percent_decode(id), percent_decode(secret)))
}

/// Decodes `%XX` escapes (and leaves everything else, `+` included, as it is).
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' && i + 2 < bytes.len() {
            let hex = |b: u8| (b as char).to_digit(16);
            if let (Some(h), Some(l)) = (hex(bytes[i + 1]), hex(bytes[i + 2])) {
                out.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pkce_s256_and_plain() {
        // BASE64URL(SHA256(verifier)), computed independently.
        let verifier = "dBjftJeZ4CVP-mJ92K27uhbUJU1p1r_wW1gFWFOEjXk";
        let challenge = "ngF5GsXcbwljx6u133FFr3Xht9xooA_DuaX_3QwODtc";
        assert!(pkce_matches(challenge, Some("S256"), verifier));
        assert!(!pkce_matches(challenge, Some("S256"), "wrong"));
        assert!(pkce_matches("abc", None, "abc"));
    }

    #[test]
    fn basic_credentials_are_percent_decoded() {
        let mut h = HeaderMap::new();
        let v = STANDARD.encode("id:a%7Eb~c");
        h.insert(
            axum::http::header::AUTHORIZATION,
            format!("Basic {v}").parse().unwrap(),
        );
        assert_eq!(basic_credentials(&h), Some(("id".into(), "a~b~c".into())));
        assert_eq!(percent_decode("100%"), "100%");
    }
}
