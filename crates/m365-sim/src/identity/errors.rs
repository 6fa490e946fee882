//! OAuth errors as Entra ID words them (AADSTS codes, trace lines, JSON shape), with the Google
//! rendering used in Gmail mode.

use axum::extract::RawQuery;
use axum::http::{HeaderMap, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use time::macros::format_description;
use time::OffsetDateTime;

use super::{correlation_id, now, pages, parse_form, Ctx};
use crate::{App, Mode};

/// How the same failure looks at Google.
#[derive(Clone, Debug)]
pub(crate) struct GoogleError {
    pub status: StatusCode,
    pub error: &'static str,
    /// `None`: Google sends no `error_description`.
    pub description: Option<String>,
}

/// An error of the authorize, token or device code endpoint.
#[derive(Clone, Debug)]
pub(crate) struct OAuthError {
    pub status: StatusCode,
    /// The OAuth `error` value, e.g. `invalid_grant`.
    pub error: &'static str,
    /// The AADSTS number.
    pub code: u32,
    /// The text after `AADSTSnnnn: `.
    pub message: String,
    pub suberror: Option<&'static str>,
    /// The Gmail-mode rendering; `None`: the same error and message without the AADSTS code.
    pub google: Option<GoogleError>,
}

/// The ids and time Entra appends to every error.
#[derive(Clone, Debug)]
pub(crate) struct Trace {
    pub trace_id: String,
    pub correlation_id: String,
    pub at: OffsetDateTime,
}

impl Trace {
    pub fn new(headers: &HeaderMap) -> Trace {
        Trace {
            trace_id: uuid::Uuid::new_v4().to_string(),
            correlation_id: correlation_id(headers),
            at: now(),
        }
    }

    /// `2024-07-11 11:46:49Z`, Entra's error timestamp format.
    pub fn timestamp(&self) -> String {
        self.at
            .format(format_description!(
                "[year]-[month]-[day] [hour]:[minute]:[second]Z"
            ))
            .unwrap_or_default()
    }
}

#[derive(Serialize)]
struct MicrosoftErrorBody<'a> {
    error: &'a str,
    error_description: String,
    error_codes: [u32; 1],
    timestamp: String,
    trace_id: &'a str,
    correlation_id: &'a str,
    error_uri: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    suberror: Option<&'a str>,
}

#[derive(Serialize)]
struct GoogleErrorBody<'a> {
    error: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    error_description: Option<&'a str>,
}

impl OAuthError {
    pub fn new(
        status: StatusCode,
        error: &'static str,
        code: u32,
        message: impl Into<String>,
    ) -> OAuthError {
        OAuthError {
            status,
            error,
            code,
            message: message.into(),
            suberror: None,
            google: None,
        }
    }

    /// HTTP 400 with `error`.
    pub fn bad(error: &'static str, code: u32, message: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::BAD_REQUEST, error, code, message)
    }

    /// HTTP 401 `invalid_client`.
    fn invalid_client(code: u32, message: impl Into<String>) -> OAuthError {
        OAuthError::new(StatusCode::UNAUTHORIZED, "invalid_client", code, message)
    }

    pub fn with_suberror(mut self, suberror: &'static str) -> OAuthError {
        self.suberror = Some(suberror);
        self
    }

    pub fn with_google(
        mut self,
        status: StatusCode,
        error: &'static str,
        description: Option<&str>,
    ) -> OAuthError {
        self.google = Some(GoogleError {
            status,
            error,
            description: description.map(str::to_string),
        });
        self
    }

    fn google_view(&self) -> GoogleError {
        self.google.clone().unwrap_or_else(|| GoogleError {
            status: self.status,
            error: self.error,
            description: Some(self.message.clone()),
        })
    }

    /// `AADSTS65004: User declined to consent to access the app.`
    pub fn headline(&self) -> String {
        format!("AADSTS{}: {}", self.code, self.message)
    }

    /// The full `error_description`, with Entra's trace lines.
    pub fn description(&self, trace: &Trace) -> String {
        format!(
            "{}\r\nTrace ID: {}\r\nCorrelation ID: {}\r\nTimestamp: {}",
            self.headline(),
            trace.trace_id,
            trace.correlation_id,
            trace.timestamp()
        )
    }

    /// What the event log records: `invalid_grant AADSTS700082` (Gmail mode: `invalid_grant`).
    pub fn outcome(&self, mode: Mode) -> String {
        match mode {
            Mode::Microsoft => format!("{} AADSTS{}", self.error, self.code),
            Mode::Gmail => self.google_view().error.to_string(),
        }
    }

    /// The JSON error response of the token and device code endpoints.
    pub fn json(&self, ctx: &Ctx, trace: &Trace) -> Response {
        match ctx.mode() {
            Mode::Microsoft => {
                let body = MicrosoftErrorBody {
                    error: self.error,
                    error_description: self.description(trace),
                    error_codes: [self.code],
                    timestamp: trace.timestamp(),
                    trace_id: &trace.trace_id,
                    correlation_id: &trace.correlation_id,
                    error_uri: format!("{}/error?code={}", ctx.state.http_base, self.code),
                    suberror: self.suberror,
                };
                let mut resp = (self.status, json_headers(), body_json(&body)).into_response();
                trace_headers(&mut resp, trace);
                resp
            }
            Mode::Gmail => {
                let g = self.google_view();
                let body = GoogleErrorBody {
                    error: g.error,
                    error_description: g.description.as_deref(),
                };
                (g.status, json_headers(), body_json(&body)).into_response()
            }
        }
    }

    /// The query parameters of an error redirect to the client's redirect URI.
    pub fn redirect_params(&self, mode: Mode, trace: &Trace) -> Vec<(String, String)> {
        match mode {
            Mode::Microsoft => vec![
                ("error".into(), self.error.into()),
                ("error_description".into(), self.description(trace)),
            ],
            Mode::Gmail => vec![("error".into(), self.google_view().error.into())],
        }
    }

    /// The page the browser shows when the error cannot be sent back to the app.
    pub fn page(&self, mode: Mode, trace: &Trace) -> Response {
        match mode {
            Mode::Microsoft => pages::microsoft_error_page(self, trace),
            Mode::Gmail => {
                let g = self.google_view();
                pages::google_error_page(g.status, g.error, g.description.as_deref())
            }
        }
    }
}

pub(crate) fn json_headers() -> [(axum::http::HeaderName, HeaderValue); 3] {
    use axum::http::header;
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/json; charset=utf-8"),
        ),
        (
            header::CACHE_CONTROL,
            HeaderValue::from_static("no-store, no-cache"),
        ),
        (header::PRAGMA, HeaderValue::from_static("no-cache")),
    ]
}

pub(crate) fn body_json(body: &impl Serialize) -> String {
    serde_json::to_string(body).unwrap_or_else(|_| "{}".into())
}

/// `x-ms-request-id` and `client-request-id`, as Entra sends them.
pub(crate) fn trace_headers(resp: &mut Response, trace: &Trace) {
    let h = resp.headers_mut();
    if let Ok(v) = HeaderValue::from_str(&trace.trace_id) {
        h.insert("x-ms-request-id", v);
    }
    if let Ok(v) = HeaderValue::from_str(&trace.correlation_id) {
        h.insert("client-request-id", v);
    }
}

// The catalogue: one constructor per failure, worded like Entra ID (and Google in Gmail mode).
impl OAuthError {
    pub fn missing(param: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            900144,
            format!("The request body must contain the following parameter: '{param}'."),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(&format!("Missing required parameter: {param}")),
        )
    }

    pub fn tenant_not_found(tenant: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            90002,
            format!(
                "Tenant '{tenant}' not found. Check to make sure you have the correct tenant ID \
                 and are signing into the correct cloud. Check with your subscription \
                 administrator, this may happen if there are no active subscriptions for the \
                 tenant."
            ),
        )
    }

    pub fn not_multi_tenant(app: &App) -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            50194,
            format!(
                "Application '{}'({}) is not configured as a multi-tenant application. Usage of \
                 the /common endpoint is not supported for such applications created after \
                 '10/15/2018'. Use a tenant-specific endpoint or configure the application to be \
                 multi-tenant.",
                app.client_id, app.name
            ),
        )
    }

    pub fn consumers_not_allowed(app: &App) -> OAuthError {
        OAuthError::bad(
            "unauthorized_client",
            9002331,
            format!(
                "Application '{}'({}) is configured for use by Azure Active Directory users only. \
                 Please do not use the /consumers endpoint to serve this request.",
                app.client_id, app.name
            ),
        )
    }

    pub fn no_tenant_for_app_only() -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            50059,
            "No tenant-identifying information found in either the request or implied by any \
             provided credentials.",
        )
    }

    pub fn app_not_found(client_id: &str, directory_name: &str) -> OAuthError {
        OAuthError::bad(
            "unauthorized_client",
            700016,
            format!(
                "Application with identifier '{client_id}' was not found in the directory \
                 '{directory_name}'. This can happen if the application has not been installed \
                 by the administrator of the tenant or consented to by any user in the tenant. \
                 You may have sent your authentication request to the wrong tenant."
            ),
        )
        .with_google(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some("The OAuth client was not found."),
        )
    }

    pub fn public_client_sent_secret() -> OAuthError {
        OAuthError::invalid_client(
            700025,
            "Client is public so neither 'client_assertion' nor 'client_secret' should be \
             presented.",
        )
        .with_google(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some("Unauthorized"),
        )
    }

    pub fn secret_missing() -> OAuthError {
        OAuthError::invalid_client(
            7000218,
            "The request body must contain the following parameter: 'client_assertion' or \
             'client_secret'.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("client_secret is missing."),
        )
    }

    pub fn secret_invalid(client_id: &str) -> OAuthError {
        OAuthError::invalid_client(
            7000215,
            format!(
                "Invalid client secret provided. Ensure the secret being sent in the request is \
                 the client secret value, not the client secret ID, for a secret added to app \
                 '{client_id}'."
            ),
        )
        .with_google(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some("Unauthorized"),
        )
    }

    pub fn secret_expired(client_id: &str) -> OAuthError {
        OAuthError::invalid_client(
            7000222,
            format!(
                "The provided client secret keys for app '{client_id}' are expired. Visit the \
                 Azure portal to create new keys for your app: https://aka.ms/NewClientSecret, or \
                 consider using certificate credentials for added security: \
                 https://aka.ms/certCreds."
            ),
        )
        .with_google(
            StatusCode::UNAUTHORIZED,
            "invalid_client",
            Some("Unauthorized"),
        )
    }

    pub fn unsupported_grant(grant_type: &str) -> OAuthError {
        OAuthError::bad(
            "unsupported_grant_type",
            70003,
            format!("The app requested an unsupported grant type '{grant_type}'."),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            Some(&format!("Invalid grant_type: {grant_type}")),
        )
    }

    /// A code or refresh token that was never issued or is mangled.
    pub fn malformed_grant() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            9002313,
            "Invalid request. Request is malformed or invalid.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Malformed auth code."),
        )
    }

    pub fn code_redeemed() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            54005,
            "OAuth2 Authorization code was already redeemed, please retry with a new valid code \
             or use an existing refresh token.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Bad Request"),
        )
    }

    pub fn code_expired() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            70008,
            "The provided authorization code or refresh token has expired due to inactivity. \
             Send a new interactive authorization request for this user and resource.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Bad Request"),
        )
    }

    /// A grant issued to another client, or used in a way it cannot be.
    pub fn grant_invalid(detail: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            70000,
            format!("Provided grant is invalid or malformed. {detail}"),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Bad Request"),
        )
    }

    pub fn reply_address_mismatch(sent: &str, original: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            500112,
            format!(
                "The reply address '{sent}' does not match the reply address '{original}' \
                 provided when requesting Authorization code."
            ),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            Some("Bad Request"),
        )
    }

    pub fn pkce_verifier_missing() -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            900144,
            "The request body must contain the following parameter: 'code_verifier'.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Missing code verifier."),
        )
    }

    pub fn pkce_mismatch() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            50148,
            "The code_verifier does not match the code_challenge supplied in the authorization \
             request for PKCE.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Invalid code verifier."),
        )
    }

    pub fn mfa_required(resource_app_id: &str) -> OAuthError {
        OAuthError::bad(
            "interaction_required",
            50076,
            format!(
                "Due to a configuration change made by your administrator, or because you moved \
                 to a new location, you must use multi-factor authentication to access \
                 '{resource_app_id}'."
            ),
        )
    }

    pub fn conditional_access_blocked() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            53003,
            "Access has been blocked by Conditional Access policies. The access policy does not \
             allow token issuance.",
        )
        .with_suberror("message_only")
    }

    fn consent_text(app: &App) -> String {
        format!(
            "The user or administrator has not consented to use the application with ID '{}' \
             named '{}'. Send an interactive authorization request for this user and resource.",
            app.client_id, app.name
        )
    }

    /// At the token endpoint.
    pub fn consent_required_grant(app: &App) -> OAuthError {
        OAuthError::bad("invalid_grant", 65001, OAuthError::consent_text(app))
            .with_suberror("consent_required")
    }

    /// In an authorize redirect.
    pub fn consent_required_authorize(app: &App) -> OAuthError {
        OAuthError::bad("consent_required", 65001, OAuthError::consent_text(app))
    }

    pub fn refresh_token_expired(issued: OffsetDateTime) -> OAuthError {
        let issued = issued
            .format(format_description!(
                "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:7]Z"
            ))
            .unwrap_or_default();
        OAuthError::bad(
            "invalid_grant",
            700082,
            format!(
                "The refresh token has expired due to inactivity. The token was issued on \
                 {issued} and was inactive for 90.00:00:00."
            ),
        )
        .with_suberror("bad_token")
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Token has been expired or revoked."),
        )
    }

    /// Revoked by an admin or a password change.
    pub fn refresh_token_revoked() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            50173,
            "The provided grant has expired due to it being revoked, a fresh auth token is \
             needed. The user might have changed or reset their password. The grant was issued \
             on a date before the user's last password change or reset.",
        )
        .with_suberror("bad_token")
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Token has been expired or revoked."),
        )
    }

    /// Already used once and replaced by rotation.
    pub fn refresh_token_rotated() -> OAuthError {
        OAuthError::bad(
            "invalid_grant",
            70000,
            "Provided grant is invalid or malformed. The refresh token was already used and has \
             been replaced; use the refresh token returned with it.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Token has been expired or revoked."),
        )
    }

    pub fn client_credentials_scope(scope: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_scope",
            1002012,
            format!(
                "The provided value for scope {scope} is not valid. Client credential flows must \
                 have a scope value with /.default suffixed to the resource identifier \
                 (application ID URI)."
            ),
        )
    }

    pub fn scope_not_valid(detail: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_scope",
            70011,
            format!("The provided value for the input parameter 'scope' is not valid. {detail}"),
        )
    }

    pub fn resource_not_found(resource: &str, tenant_domain: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_resource",
            500011,
            format!(
                "The resource principal named {resource} was not found in the tenant named \
                 {tenant_domain}. This can happen if the application has not been installed by \
                 the administrator of the tenant or consented to by any user in the tenant. You \
                 might have sent your authentication request to the wrong tenant."
            ),
        )
    }

    pub fn scope_not_on_resource(app_name: &str, scope: &str, resource_app_id: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_client",
            650053,
            format!(
                "The application '{app_name}' asked for scope '{scope}' that doesn't exist on \
                 the resource '{resource_app_id}'. Contact the app vendor."
            ),
        )
    }

    pub fn google_invalid_scope(valid: &[String], invalid: &[String]) -> OAuthError {
        let text = format!(
            "Some requested scopes were invalid. {{valid=[{}], invalid=[{}]}}",
            valid.join(", "),
            invalid.join(", ")
        );
        OAuthError::bad("invalid_scope", 70011, text.clone()).with_google(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            Some(&text),
        )
    }

    pub fn google_device_scope(scope: &str) -> OAuthError {
        let text = format!("Invalid device flow scope: {scope}");
        OAuthError::bad("invalid_scope", 70011, text.clone()).with_google(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            Some(&text),
        )
    }

    pub fn redirect_uri_not_registered(uri: &str, client_id: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            50011,
            format!(
                "The redirect URI '{uri}' specified in the request does not match the redirect \
                 URIs configured for the application '{client_id}'. Make sure the redirect URI \
                 sent in the request matches one added to your application in the Azure portal. \
                 Navigate to https://aka.ms/redirectUriMismatchError to learn more about how to \
                 fix this."
            ),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "redirect_uri_mismatch",
            Some(&format!(
                "You can't sign in to this app because it doesn't comply with Google's OAuth 2.0 \
                 policy. If you're the app developer, register the redirect URI in the Google \
                 Cloud Console. Request details: redirect_uri={uri}"
            )),
        )
    }

    pub fn unsupported_response_type(response_type: &str) -> OAuthError {
        OAuthError::bad(
            "unsupported_response_type",
            700051,
            format!("response_type '{response_type}' is not enabled for the application."),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "unsupported_response_type",
            Some(&format!("Invalid response_type: {response_type}")),
        )
    }

    pub fn code_challenge_size() -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            501491,
            "Invalid size of Code_Challenge parameter.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some("Invalid code_challenge."),
        )
    }

    pub fn code_challenge_method(method: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            9002313,
            format!(
                "Invalid request. Request is malformed or invalid. - The code_challenge_method \
                 '{method}' is not supported; use 'S256' or 'plain'."
            ),
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            Some(&format!("Invalid code_challenge_method: {method}")),
        )
    }

    pub fn user_declined() -> OAuthError {
        OAuthError::bad(
            "access_denied",
            65004,
            "User declined to consent to access the app.",
        )
        .with_google(StatusCode::BAD_REQUEST, "access_denied", None)
    }

    pub fn login_required() -> OAuthError {
        OAuthError::bad(
            "login_required",
            50058,
            "A silent sign-in request was sent but no user is signed in.",
        )
        .with_google(StatusCode::BAD_REQUEST, "login_required", None)
    }

    pub fn user_not_found(user: &str, tenant_domain: &str) -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            50034,
            format!(
                "The user account {user} does not exist in the {tenant_domain} directory. To sign \
                 into this application, the account must be added to the directory."
            ),
        )
    }

    pub fn signin_request_unknown() -> OAuthError {
        OAuthError::bad(
            "invalid_request",
            90014,
            "The sign-in request was not found: it was already completed or has expired. Start \
             the sign-in again from the application.",
        )
    }

    pub fn authorization_pending() -> OAuthError {
        OAuthError::bad(
            "authorization_pending",
            70016,
            "OAuth 2.0 device flow error. Authorization is pending. Continue polling.",
        )
        .with_google(
            StatusCode::PRECONDITION_REQUIRED,
            "authorization_pending",
            Some("Precondition Required."),
        )
    }

    pub fn slow_down(interval: u64) -> OAuthError {
        OAuthError::bad(
            "slow_down",
            70016,
            format!(
                "OAuth 2.0 device flow error. Authorization is pending. Polling too fast: wait \
                 at least {interval} seconds between requests."
            ),
        )
        .with_google(StatusCode::FORBIDDEN, "slow_down", Some("Forbidden"))
    }

    pub fn authorization_declined() -> OAuthError {
        OAuthError::bad(
            "authorization_declined",
            70000,
            "The user declined the authorization request on the device login page.",
        )
        .with_google(StatusCode::FORBIDDEN, "access_denied", Some("Forbidden"))
    }

    pub fn device_code_expired() -> OAuthError {
        OAuthError::bad(
            "expired_token",
            70020,
            "The provided value for the input parameter 'device_code' is not valid. This device \
             code has expired.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "expired_token",
            Some("Bad Request"),
        )
    }

    pub fn bad_verification_code() -> OAuthError {
        OAuthError::bad(
            "bad_verification_code",
            70000,
            "The provided value for the input parameter 'device_code' is not valid.",
        )
        .with_google(
            StatusCode::BAD_REQUEST,
            "invalid_grant",
            Some("Malformed auth code."),
        )
    }
}

/// `GET /error?code=N`: what Entra's error lookup page says about a code.
pub(crate) async fn error_info_page(RawQuery(query): RawQuery) -> Response {
    let q = parse_form(query.unwrap_or_default().as_bytes());
    let code = q.get("code").cloned().unwrap_or_default();
    let meaning = explain(code.trim().parse().unwrap_or(0));
    pages::info_page(
        &format!("Error code AADSTS{}", pages::escape(&code)),
        meaning.unwrap_or("No description is available for this code."),
    )
}

/// Short explanations of the codes the simulator produces, as on Entra's error lookup page.
fn explain(code: u32) -> Option<&'static str> {
    Some(match code {
        50011 => "InvalidReplyTo - The reply address is missing, misconfigured, or doesn't match reply addresses configured for the app.",
        50034 => "UserAccountNotFound - The user account doesn't exist in the directory.",
        50058 => "UserInformationNotProvided - Session information isn't sufficient for single-sign-on.",
        50059 => "MissingTenantRealmAndNoUserInformationProvided - Tenant-identifying information was not found in either the request or implied by any provided credentials.",
        50076 => "UserStrongAuthClientAuthNRequired - Due to a configuration change made by the admin, or because the user moved to a new location, the user must use multifactor authentication.",
        50148 => "The code_verifier doesn't match the code_challenge supplied in the authorization request.",
        50173 => "FreshTokenNeeded - The provided grant has expired due to it being revoked, and a fresh auth token is needed.",
        50194 => "Application is not configured as a multitenant application.",
        53003 => "BlockedByConditionalAccess - Access has been blocked by Conditional Access policies.",
        54005 => "OAuth2 Authorization code was already redeemed.",
        65001 => "DelegationDoesNotExist - The user or administrator has not consented to use the application.",
        65004 => "UserDeclinedConsent - User declined to consent to access the app.",
        70000 => "InvalidGrant - Authentication failed. The refresh token isn't valid.",
        70003 => "UnsupportedGrantType - The app returned an unsupported grant type.",
        70008 => "ExpiredOrRevokedGrant - The refresh token has expired due to inactivity.",
        70011 => "InvalidScope - The scope requested by the app is invalid.",
        70016 => "AuthorizationPending - OAuth 2.0 device flow error. Authorization is pending.",
        70020 => "ExpiredToken - The device code has expired.",
        90002 => "InvalidTenantName - The tenant name wasn't found in the data store.",
        500011 => "InvalidResourceServicePrincipalNotFound - The resource principal was not found in the tenant.",
        500112 => "The reply address does not match the reply address provided when requesting the authorization code.",
        501491 => "InvalidCodeChallenge - Invalid size of the code_challenge parameter.",
        650053 => "The application asked for a scope that doesn't exist on the resource.",
        700016 => "UnauthorizedClient_DoesNotMatchRequest - The application wasn't found in the directory/tenant.",
        700025 => "InvalidClientPublicClientWithCredential - Client is public so neither 'client_assertion' nor 'client_secret' should be presented.",
        700051 => "InvalidrequestBadRealm - response_type is not enabled for the application.",
        700082 => "ExpiredOrRevokedGrantInactiveToken - The refresh token has expired due to inactivity.",
        1002012 => "The provided value for scope is not valid. Client credential flows must have a scope value with /.default suffixed to the resource identifier.",
        7000215 => "InvalidClientSecretProvided - Invalid client secret is provided.",
        7000218 => "InvalidClientCredential - The request body must contain client_assertion or client_secret.",
        7000222 => "InvalidClientSecretExpiredKeysProvided - The provided client secret keys are expired.",
        9002313 => "Invalid request. Request is malformed or invalid.",
        9002331 => "Application is configured for use by Microsoft Entra users only; the /consumers endpoint can't be used.",
        _ => return None,
    })
}
