//! The HTML the browser sees: sign-in and consent, device login, error pages. They work without
//! JavaScript (plain forms), so curl and a headless browser can drive them alike.

use axum::http::{header, HeaderName, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::errors::{trace_headers, OAuthError, Trace};
use crate::Mode;

/// Escapes text for HTML element content and quoted attribute values.
pub(crate) fn escape(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

pub(crate) fn html_headers() -> [(HeaderName, HeaderValue); 2] {
    [
        (
            header::CONTENT_TYPE,
            HeaderValue::from_static("text/html; charset=utf-8"),
        ),
        (header::CACHE_CONTROL, HeaderValue::from_static("no-store")),
    ]
}

const STYLE: &str = "body{font-family:'Segoe UI',Roboto,Arial,sans-serif;background:#f2f2f2;\
margin:0;color:#1b1b1b}main{max-width:440px;margin:48px auto;background:#fff;padding:44px;\
box-shadow:0 2px 6px rgba(0,0,0,.2)}.brand{font-weight:600;color:#737373;margin-bottom:16px}\
h1{font-size:24px;font-weight:600;margin:0 0 12px}h2{font-size:16px;font-weight:600}\
.app{font-weight:600}ul{padding-left:20px}li small{color:#666;display:block}\
label{display:block;margin:6px 0}fieldset{border:1px solid #ddd;margin:16px 0}\
input[type=text]{font-size:18px;width:100%;padding:6px;box-sizing:border-box;letter-spacing:2px}\
.buttons{display:flex;gap:8px;justify-content:flex-end;margin-top:24px}\
button{min-width:108px;padding:6px 12px;font-size:15px;border:1px solid #8a8a8a;background:#ccc}\
button#approve{background:#0067b8;color:#fff;border-color:#0067b8}\
.error{color:#e81123}.details{font-size:12px;color:#555}dt{font-weight:600}dd{margin:0 0 6px}\
.note{font-size:13px;color:#555}";

fn layout(mode: Mode, title: &str, body: &str) -> String {
    let brand = match mode {
        Mode::Microsoft => "Microsoft",
        Mode::Gmail => "Google",
    };
    format!(
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\
         <meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\
         <title>{title}</title><style>{STYLE}</style></head>\n<body><main>\
         <div class=\"brand\">{brand}</div>\n{body}\n</main></body></html>\n",
        title = escape(title)
    )
}

fn page(status: StatusCode, mode: Mode, title: &str, body: &str) -> Response {
    (status, html_headers(), layout(mode, title, body)).into_response()
}

/// Entra's "Sorry, but we're having trouble signing you in." page.
pub(crate) fn microsoft_error_page(err: &OAuthError, trace: &Trace) -> Response {
    let body = format!(
        "<h1>Sign in</h1>\n<h2>Sorry, but we’re having trouble signing you in.</h2>\n\
         <p id=\"error\" class=\"error\">{headline}</p>\n\
         <dl class=\"details\"><dt>Request Id</dt><dd>{trace_id}</dd>\
         <dt>Correlation Id</dt><dd>{corr}</dd><dt>Timestamp</dt><dd>{ts}</dd>\
         <dt>Message</dt><dd>{headline}</dd></dl>",
        headline = escape(&err.headline()),
        trace_id = escape(&trace.trace_id),
        corr = escape(&trace.correlation_id),
        ts = escape(&trace.timestamp()),
    );
    let mut resp = page(
        err.status,
        Mode::Microsoft,
        "Sign in to your account",
        &body,
    );
    trace_headers(&mut resp, trace);
    resp
}

/// Google's "Access blocked" / "Error 400: redirect_uri_mismatch" page.
pub(crate) fn google_error_page(
    status: StatusCode,
    error: &str,
    description: Option<&str>,
) -> Response {
    let body = format!(
        "<h1>Access blocked: This app’s request is invalid</h1>\n\
         <p id=\"error\" class=\"error\">Error {code}: {error}</p>\n<p>{desc}</p>",
        code = status.as_u16(),
        error = escape(error),
        desc = escape(description.unwrap_or_default()),
    );
    page(status, Mode::Gmail, "Sign in - Google Accounts", &body)
}

/// A plain page with a heading and a paragraph.
pub(crate) fn info_page(title_html: &str, text: &str) -> Response {
    let body = format!("<h1>{title_html}</h1>\n<p>{}</p>", escape(text));
    page(StatusCode::OK, Mode::Microsoft, "Error code lookup", &body)
}

/// What the sign-in and consent page shows.
pub(crate) struct SignInView<'a> {
    pub mode: Mode,
    /// Where the form posts the decision.
    pub action: &'a str,
    pub request_id: &'a str,
    pub app_name: &'a str,
    pub client_id: &'a str,
    pub redirect_uri: &'a str,
    /// (scope, description)
    pub scopes: Vec<(String, &'static str)>,
    /// Scopes the user is asked to consent to for the first time.
    pub new_consent: Vec<String>,
    /// (address, display name)
    pub users: Vec<(String, String)>,
    pub selected: Option<&'a str>,
}

fn user_picker(users: &[(String, String)], selected: Option<&str>) -> String {
    let first = users.first().map(|(a, _)| a.as_str());
    let selected = selected
        .filter(|s| users.iter().any(|(a, _)| a.eq_ignore_ascii_case(s)))
        .or(first);
    let mut out = String::from("<fieldset><legend>Pick an account</legend>\n");
    for (i, (address, name)) in users.iter().enumerate() {
        let checked = if selected.is_some_and(|s| s.eq_ignore_ascii_case(address)) {
            " checked"
        } else {
            ""
        };
        out.push_str(&format!(
            "<label><input type=\"radio\" name=\"user\" id=\"user-{i}\" value=\"{a}\"{checked}> \
             {n} &lt;{a}&gt;</label>\n",
            a = escape(address),
            n = escape(name),
        ));
    }
    out.push_str("</fieldset>\n");
    out
}

fn decision_buttons() -> &'static str {
    "<div class=\"buttons\">\
     <button type=\"submit\" id=\"approve\" name=\"decision\" value=\"approve\">Approve</button>\
     <button type=\"submit\" id=\"deny\" name=\"decision\" value=\"deny\">Deny</button></div>"
}

pub(crate) fn signin_page(view: &SignInView<'_>) -> Response {
    let mut scopes = String::new();
    for (scope, text) in &view.scopes {
        let new = if view.new_consent.contains(scope) {
            " <em>(new)</em>"
        } else {
            ""
        };
        scopes.push_str(&format!(
            "<li class=\"scope\" data-scope=\"{s}\">{t}{new}<small>{s}</small></li>\n",
            s = escape(scope),
            t = escape(text),
        ));
    }
    let body = format!(
        "<h1>Permissions requested</h1>\n\
         <p><span class=\"app\" id=\"app-name\">{app}</span><br><small>App id {id}</small></p>\n\
         <p>This app would like to:</p>\n<ul id=\"scopes\">\n{scopes}</ul>\n\
         <form method=\"post\" action=\"{action}\">\n\
         <input type=\"hidden\" name=\"request\" value=\"{req}\">\n{picker}\
         <p class=\"note\">Accepting will send you to {redirect}.</p>\n{buttons}\n</form>",
        app = escape(view.app_name),
        id = escape(view.client_id),
        action = escape(view.action),
        req = escape(view.request_id),
        picker = user_picker(&view.users, view.selected),
        redirect = escape(view.redirect_uri),
        buttons = decision_buttons(),
    );
    let title = match view.mode {
        Mode::Microsoft => "Sign in to your account",
        Mode::Gmail => "Sign in - Google Accounts",
    };
    page(StatusCode::OK, view.mode, title, &body)
}

/// The device login page: enter the code, pick an account, approve or deny.
pub(crate) struct DeviceView<'a> {
    pub mode: Mode,
    pub code: &'a str,
    pub users: Vec<(String, String)>,
    pub selected: Option<&'a str>,
    /// The app the code belongs to, once known: (name, scope descriptions).
    pub app: Option<(&'a str, Vec<(String, &'static str)>)>,
    pub error: Option<&'a str>,
    pub status: StatusCode,
}

pub(crate) fn device_page(view: &DeviceView<'_>) -> Response {
    let error = view
        .error
        .map(|e| format!("<p id=\"error\" class=\"error\">{}</p>\n", escape(e)))
        .unwrap_or_default();
    let app = match &view.app {
        Some((name, scopes)) => {
            let items: String = scopes
                .iter()
                .map(|(s, t)| format!("<li>{}<small>{}</small></li>", escape(t), escape(s)))
                .collect();
            format!(
                "<p>Are you trying to sign in to <span class=\"app\" id=\"app-name\">{}</span>?\
                 </p>\n<ul id=\"scopes\">{items}</ul>\n",
                escape(name)
            )
        }
        None => String::new(),
    };
    let body = format!(
        "<h1>Enter code</h1>\n{error}{app}<form method=\"post\" action=\"/devicelogin\">\n\
         <label for=\"user_code\">Enter the code displayed on your app or device.</label>\n\
         <input type=\"text\" id=\"user_code\" name=\"user_code\" value=\"{code}\" \
         autocomplete=\"off\" placeholder=\"Code\">\n{picker}{buttons}\n</form>",
        code = escape(view.code),
        picker = user_picker(&view.users, view.selected),
        buttons = decision_buttons(),
    );
    page(view.status, view.mode, "Enter code", &body)
}

pub(crate) fn device_done_page(mode: Mode, app_name: &str, approved: bool) -> Response {
    let body = if approved {
        format!(
            "<h1 id=\"result\">You're signed in</h1>\n<p>You have signed in to the \
             <span class=\"app\">{}</span> application on your device. You may now close this \
             window.</p>",
            escape(app_name)
        )
    } else {
        format!(
            "<h1 id=\"result\">Sign-in canceled</h1>\n<p>You declined to sign in to \
             <span class=\"app\">{}</span> on another device. You may now close this window.</p>",
            escape(app_name)
        )
    };
    page(StatusCode::OK, mode, "Enter code", &body)
}

/// `response_mode=form_post`: a page that posts the result to the redirect URI.
pub(crate) fn form_post_page(redirect_uri: &str, params: &[(String, String)]) -> Response {
    let inputs: String = params
        .iter()
        .map(|(k, v)| {
            format!(
                "<input type=\"hidden\" name=\"{}\" value=\"{}\">",
                escape(k),
                escape(v)
            )
        })
        .collect();
    let html = format!(
        "<!DOCTYPE html>\n<html><head><title>Working...</title></head>\
         <body onload=\"document.forms[0].submit()\"><form method=\"POST\" name=\"hiddenform\" \
         action=\"{}\">{inputs}<noscript><p>Script is disabled. Click Submit to continue.</p>\
         <input type=\"submit\" value=\"Submit\"></noscript></form></body></html>\n",
        escape(redirect_uri)
    );
    (StatusCode::OK, html_headers(), html).into_response()
}
