//! The identity platform over HTTP: authorize (sign-in and consent page), token and device code
//! endpoints, imitating Entra ID v2.0 (or Google's OAuth endpoints in [`Mode::Gmail`]).
//!
//! Routes in Microsoft mode:
//! - `GET  /{tenant}/oauth2/v2.0/authorize` and `POST /{tenant}/oauth2/v2.0/authorize/decision`
//! - `POST /{tenant}/oauth2/v2.0/token`
//! - `POST /{tenant}/oauth2/v2.0/devicecode`
//!
//! In Gmail mode: `GET /o/oauth2/v2/auth` (+ `/o/oauth2/v2/auth/decision`), `POST /token` and
//! `POST /device/code`. Both modes serve `GET|POST /devicelogin` and `GET /error`.

mod authorize;
mod device;
mod errors;
mod pages;
mod scopes;
mod token;

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use time::OffsetDateTime;
use tokio::net::TcpListener;
use tokio::sync::watch;

use crate::{EndpointFault, Mode, State};

pub(crate) use errors::OAuthError;

/// Runs the identity platform until `stop` turns true.
pub(crate) async fn serve(listener: TcpListener, state: Arc<State>, stop: watch::Receiver<bool>) {
    let ctx = Arc::new(Ctx {
        state,
        stop: stop.clone(),
        signins: Mutex::default(),
        code_extras: Mutex::default(),
        rotated: Mutex::default(),
    });
    let router = router(ctx);
    let mut stop = stop;
    let shutdown = async move {
        while !*stop.borrow_and_update() {
            if stop.changed().await.is_err() {
                break;
            }
        }
    };
    if let Err(e) = axum::serve(listener, router)
        .with_graceful_shutdown(shutdown)
        .await
    {
        tracing::error!(error = %e, "identity platform stopped");
    }
}

fn router(ctx: Arc<Ctx>) -> Router {
    let common = Router::new()
        .route(
            "/devicelogin",
            get(device::login_page).post(device::login_submit),
        )
        .route("/error", get(errors::error_info_page));
    let flows = match ctx.state.config.mode {
        Mode::Microsoft => Router::new()
            .route("/{tenant}/oauth2/v2.0/authorize", get(authorize::authorize))
            .route(
                "/{tenant}/oauth2/v2.0/authorize/decision",
                post(authorize::decision),
            )
            .route("/{tenant}/oauth2/v2.0/token", post(token::token))
            .route("/{tenant}/oauth2/v2.0/devicecode", post(device::devicecode)),
        Mode::Gmail => Router::new()
            .route("/o/oauth2/v2/auth", get(authorize::authorize_gmail))
            .route(
                "/o/oauth2/v2/auth/decision",
                post(authorize::decision_gmail),
            )
            .route("/token", post(token::token_gmail))
            .route("/device/code", post(device::devicecode_gmail)),
    };
    common.merge(flows).with_state(ctx)
}

/// The identity side's own state next to the shared [`State`].
pub(crate) struct Ctx {
    pub state: Arc<State>,
    pub stop: watch::Receiver<bool>,
    /// Sign-in requests waiting for the user's decision on the sign-in page, by request id.
    pub signins: Mutex<HashMap<String, authorize::PendingSignIn>>,
    /// What an authorization code carries besides [`crate::tokens::AuthCode`], by code.
    pub code_extras: Mutex<HashMap<String, CodeExtras>>,
    /// Refresh tokens that were replaced by rotation (as opposed to revoked by an admin).
    pub rotated: Mutex<HashSet<String>>,
}

/// OIDC and Google details of an authorization code.
#[derive(Clone, Debug, Default)]
pub(crate) struct CodeExtras {
    pub nonce: Option<String>,
    /// Gmail mode: a refresh token is issued with the code (`access_type=offline` or an installed
    /// app).
    pub offline: bool,
}

impl Ctx {
    pub fn mode(&self) -> Mode {
        self.state.config.mode
    }

    /// Applies the `token_endpoint` fault: `Some(response)` when the request must not be served
    /// normally (`note` is told what happened first). `Hang` waits until the simulator stops.
    pub async fn endpoint_fault(&self, note: impl FnOnce(String)) -> Option<Response> {
        match self.state.faults().token_endpoint {
            EndpointFault::None => None,
            EndpointFault::Status(n) => {
                note(format!("http {n}"));
                Some(status_page(n))
            }
            EndpointFault::Hang => {
                note("hang".into());
                let mut stop = self.stop.clone();
                while !*stop.borrow_and_update() {
                    if stop.changed().await.is_err() {
                        break;
                    }
                }
                Some(StatusCode::SERVICE_UNAVAILABLE.into_response())
            }
        }
    }
}

/// What the `Status(n)` fault answers: the status and a small HTML body, like a load balancer's.
fn status_page(n: u16) -> Response {
    let status = StatusCode::from_u16(n).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let reason = status.canonical_reason().unwrap_or("Error");
    let body = format!(
        "<!DOCTYPE html>\n<html><head><title>{code} {reason}</title></head>\
         <body><h1>{code} {reason}</h1><p>The service is temporarily unavailable. \
         Please try again later.</p></body></html>\n",
        code = status.as_u16()
    );
    let mut resp = (status, pages::html_headers(), body).into_response();
    if status == StatusCode::TOO_MANY_REQUESTS {
        resp.headers_mut()
            .insert("retry-after", HeaderValue::from_static("1"));
    }
    resp
}

/// Parses `application/x-www-form-urlencoded` text (a body or a query string); the first value
/// of a repeated key wins.
pub(crate) fn parse_form(text: &[u8]) -> HashMap<String, String> {
    let mut map = HashMap::new();
    for (k, v) in form_urlencoded::parse(text) {
        map.entry(k.into_owned()).or_insert_with(|| v.into_owned());
    }
    map
}

/// A parameter, treating an empty value as absent (as Entra does).
pub(crate) fn param<'a>(map: &'a HashMap<String, String>, key: &str) -> Option<&'a str> {
    map.get(key)
        .map(String::as_str)
        .filter(|v| !v.trim().is_empty())
}

/// The correlation id of a request: the client's `client-request-id` when it sent a GUID.
pub(crate) fn correlation_id(headers: &HeaderMap) -> String {
    headers
        .get("client-request-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| uuid::Uuid::parse_str(v).ok())
        .unwrap_or_else(uuid::Uuid::new_v4)
        .to_string()
}

pub(crate) fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// A stable GUID derived from `seed` (object ids, subjects).
pub(crate) fn stable_guid(seed: &str) -> String {
    use sha2::{Digest, Sha256};
    let digest = Sha256::digest(seed.to_ascii_lowercase().as_bytes());
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&digest[..16]);
    uuid::Builder::from_random_bytes(bytes)
        .into_uuid()
        .to_string()
}
