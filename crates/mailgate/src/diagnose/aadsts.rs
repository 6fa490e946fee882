//! Diagnoses of identity platform (Entra ID / Google) errors.
//!
//! [`diagnose`] turns a token-endpoint or redirect error into what happened, why it usually
//! happens and what to do, for every AADSTS code people actually hit (see [`CATALOGUED`]), the
//! device-code errors, and the plain OAuth errors Google and other providers send. The other
//! functions explain failures that happen on our side of the flow: the sign-in redirect never
//! arriving (often AADSTS50011, which only the browser sees), the loopback port being taken, and
//! the provider being unreachable.

use std::time::Duration;

use crate::oauth::{ProviderError, Step};
use crate::{Diagnosis, Sysexit};

/// What a diagnosis may say about the account it concerns, so that fixes name the real values.
#[derive(Clone, Debug, Default)]
#[non_exhaustive]
pub struct Context {
    /// The account's name in the config (`mailgate login NAME`).
    pub account: Option<String>,
    /// The app's client id.
    pub client_id: Option<String>,
    /// The tenant the request went to (`common`, a domain or a GUID), when the endpoint says.
    pub tenant: Option<String>,
    /// The account's configured redirect URI (the one to register; the port of a loopback URI
    /// does not matter to the provider).
    pub redirect_uri: Option<String>,
}

impl Context {
    /// `mailgate login NAME`, or `mailgate login ACCOUNT` when the name is unknown.
    pub fn login_command(&self) -> String {
        format!(
            "mailgate login {}",
            self.account.as_deref().unwrap_or("ACCOUNT")
        )
    }

    fn app(&self) -> String {
        match &self.client_id {
            Some(id) => format!("the app registration with Application (client) ID {id}"),
            None => "the app registration".into(),
        }
    }

    fn redirect(&self) -> String {
        self.redirect_uri
            .clone()
            .unwrap_or_else(|| "http://localhost:PORT/".into())
    }
}

/// Every AADSTS code with an entry of its own in this catalogue.
pub const CATALOGUED: &[u32] = &[
    7000215, 7000222, 500112, 7000218, 700025, 50011, 65001, 65004, 70008, 700082, 50173, 700016,
    50076, 50079, 53003, 54005, 70011, 700022, 50194, 9002313, 90002, 500011, 50105, 7000112,
    70000, 70016, 70019, 70020, 1002012, 650053, 50034, 50058, 50059,
];

struct Entry {
    title: String,
    explanation: String,
    fix: Vec<String>,
    sysexit: Sysexit,
}

fn entry(title: impl Into<String>, explanation: impl Into<String>, fix: Vec<String>) -> Entry {
    Entry {
        title: title.into(),
        explanation: explanation.into(),
        fix,
        sysexit: Sysexit::NoPerm,
    }
}

const ENTRA_APP_PATH: &str =
    "Entra admin center (entra.microsoft.com) → Identity → Applications → App registrations";

fn by_aadsts(code: u32, ctx: &Context) -> Option<Entry> {
    let login = ctx.login_command();
    let app = ctx.app();
    let e = match code {
        7000215 => entry(
            "The client secret is wrong",
            "Entra ID did not accept the client secret mailgate sent. The most common cause is \
             pasting the Secret ID instead of the secret Value: Certificates & secrets shows both \
             columns, and the Value is visible only right after the secret is created.",
            vec![
                format!(
                    "{ENTRA_APP_PATH} → {app} → Certificates & secrets: if you no longer have the \
                     Value, create a New client secret and copy its Value column (not the Secret ID) \
                     right away"
                ),
                "Put the Value in the account's client_secret (or client_secret_env / \
                 client_secret_command)"
                    .into(),
                format!("Run `{login}` again"),
            ],
        ),
        7000222 => entry(
            "The client secret has expired",
            "Client secrets have an expiry date (at most 24 months); this one has passed it.",
            vec![
                format!(
                    "{ENTRA_APP_PATH} → {app} → Certificates & secrets → New client secret; copy \
                     its Value (not the Secret ID)"
                ),
                "Replace the account's client_secret with the new Value and note the new expiry \
                 date"
                    .into(),
                format!("Run `{login}` again"),
            ],
        ),
        7000218 => entry(
            "The app requires a client secret, and none was sent",
            "The app is registered as a confidential client (a \"Web\" platform), so the token \
             endpoint wants a client secret or certificate; the account has no client secret.",
            vec![
                "Set the account's client_secret (or client_secret_env / client_secret_command) \
                 to the secret's Value"
                    .into(),
                format!(
                    "Or, to sign in without a secret: {ENTRA_APP_PATH} → {app} → Authentication → \
                     Advanced settings → Allow public client flows = Yes, and add the platform \
                     \"Mobile and desktop applications\" with http://localhost"
                ),
            ],
        ),
        700025 => entry(
            "A public client must not send a client secret",
            "The app is registered as a public client (\"Allow public client flows\" or a \
             \"Mobile and desktop applications\" platform), and mailgate sent a client secret.",
            vec![
                "Remove client_secret (and client_secret_env / client_secret_command) from the \
                 account"
                    .into(),
                format!(
                    "Or, if the app should be confidential: {ENTRA_APP_PATH} → {app} → \
                     Authentication → Allow public client flows = No, with a \"Web\" redirect URI"
                ),
            ],
        ),
        50011 => entry(
            "The redirect URI is not registered on the app",
            format!(
                "Entra ID sends the browser back only to a redirect URI registered on the app; \
                 `{}` is not one of them. The browser shows AADSTS50011 and never reaches mailgate.",
                ctx.redirect()
            ),
            vec![
                format!(
                    "{ENTRA_APP_PATH} → {app} → Authentication → Add a platform (\"Mobile and \
                     desktop applications\" for a public client, \"Web\" for one with a secret) → \
                     add `{}` exactly (for http://localhost the port may differ, but the path and \
                     the trailing slash must match)",
                    ctx.redirect()
                ),
                format!("Run `{login}` again"),
            ],
        ),
        500112 => entry(
            "The redirect URI of the code exchange differs from the sign-in's",
            format!(
                "An authorization code can only be redeemed with the exact redirect URI the \
                 sign-in used (`{}`); the token request named another one, so Entra ID refused it.",
                ctx.redirect()
            ),
            vec![
                "Check that nothing rewrites the account's redirect_uri between the sign-in and \
                 the code exchange (a proxy, or a redirect_uri that differs only in its trailing \
                 slash or host: localhost and 127.0.0.1 are different URIs)"
                    .into(),
                format!("Run `{login}` again"),
            ],
        ),
        65001 => entry(
            "Consent to the app's permissions is missing",
            "Neither the user nor an administrator has consented to the permissions mailgate asks \
             for (SMTP.Send, offline_access), or the tenant does not let users consent.",
            vec![
                format!("Run `{login}` and accept the consent prompt in the browser"),
                format!(
                    "If users may not consent in your tenant, an administrator grants it: \
                     {ENTRA_APP_PATH} → {app} → API permissions → Grant admin consent"
                ),
                "Check that the app has the delegated permission Office 365 Exchange Online → \
                 SMTP.Send (API permissions → Add a permission → APIs my organization uses)"
                    .into(),
            ],
        ),
        65004 => entry(
            "The consent prompt was declined",
            "The person signing in declined to consent to the app's permissions.",
            vec![
                format!("Run `{login}` again and accept the permissions"),
                "Or have an administrator grant consent for the tenant (API permissions → Grant \
                 admin consent)"
                    .into(),
            ],
        ),
        70008 | 700082 => entry(
            "The refresh token has expired",
            "A refresh token lapses after 90 days without use, and is revoked by a password \
             change or by an administrator. mailgate cannot renew it on its own.",
            vec![
                format!("Run `{login}` to sign in again"),
                "To keep it alive, use the account (send, `mailgate token`) at least every few \
                 weeks"
                    .into(),
            ],
        ),
        50173 => entry(
            "The sign-in was revoked",
            "The stored grant was revoked, usually because the user changed or reset their \
             password, or an administrator revoked the sessions.",
            vec![format!("Run `{login}` to sign in again")],
        ),
        700016 => entry(
            "The app was not found in the tenant",
            format!(
                "No app with client id {} is registered in the tenant the request went to{}. \
                 Either the client id or the tenant is wrong.",
                ctx.client_id.as_deref().unwrap_or("(unknown)"),
                ctx.tenant.as_deref().map(|t| format!(" ({t})")).unwrap_or_default()
            ),
            vec![
                "Set client_id to the Application (client) ID from the app's Overview page (not \
                 its Object ID)"
                    .into(),
                "Set tenant to the directory the app is registered in (its domain, e.g. \
                 contoso.onmicrosoft.com, or the Directory (tenant) ID)"
                    .into(),
                "An app registered in another tenant must be multi-tenant and consented in yours"
                    .into(),
            ],
        ),
        50076 => entry(
            "Multi-factor authentication is required",
            "A policy requires MFA for this sign-in; a refresh or non-interactive request \
             cannot perform it.",
            vec![format!("Run `{login}` and complete MFA in the browser")],
        ),
        50079 => entry(
            "The user must register for multi-factor authentication",
            "The tenant requires MFA and this user has not enrolled a method yet.",
            vec![format!(
                "Run `{login}` and follow the MFA enrolment in the browser (or enrol at \
                 https://aka.ms/mfasetup first)"
            )],
        ),
        53003 => entry(
            "Conditional Access blocked the sign-in",
            "A Conditional Access policy of the tenant refused this sign-in (location, device \
             compliance or client app conditions).",
            vec![
                "An administrator looks up the sign-in in the Entra admin center → Monitoring & \
                 health → Sign-in logs (search the correlation ID below): it names the policy"
                    .into(),
                "The administrator must allow this app or these conditions (for example a named \
                 location for the server running mailgate)"
                    .into(),
            ],
        ),
        54005 => entry(
            "The authorization code was already redeemed",
            "An authorization code works once; this one had been used already.",
            vec![format!("Start the sign-in again: `{login}`")],
        ),
        70011 | 700022 => entry(
            "The requested scopes are invalid",
            "A scope is misspelt, or scopes of two resources were mixed in one request (for \
             example Microsoft Graph and Outlook): all non-OpenID scopes of one request must \
             belong to one resource.",
            vec![
                "For delegated SMTP use `openid profile offline_access \
                 https://outlook.office.com/SMTP.Send`"
                    .into(),
                "For client credentials use `https://outlook.office365.com/.default` alone".into(),
                "Remove Microsoft Graph scopes (https://graph.microsoft.com/...) from the \
                 account's scopes"
                    .into(),
            ],
        ),
        50194 => entry(
            "A single-tenant app was used with a multi-tenant endpoint",
            format!(
                "The app is registered for \"Accounts in this organizational directory only\", \
                 but the request went to {} instead of the app's own tenant.",
                ctx.tenant.as_deref().map(|t| format!("/{t}")).unwrap_or_else(|| "/common or /organizations".into())
            ),
            vec![
                "Set the account's tenant to your tenant's domain (e.g. contoso.onmicrosoft.com) \
                 or its Directory (tenant) ID"
                    .into(),
                format!(
                    "Or make the app multi-tenant: {ENTRA_APP_PATH} → {app} → Authentication → \
                     Supported account types"
                ),
            ],
        ),
        9002313 => entry(
            "The request was malformed",
            "Usually an authorization code or refresh token that was cut or altered (copy and \
             paste, shell quoting) or a stored token that was damaged.",
            vec![
                format!("Run `{login}` again"),
                "If it persists, run with --debug and check the account's token_url".into(),
            ],
        ),
        90002 => entry(
            "The tenant does not exist",
            format!(
                "No Entra ID tenant matches {}.",
                ctx.tenant.as_deref().unwrap_or("the tenant in the endpoint URL")
            ),
            vec![
                "Set tenant to your tenant's domain (e.g. contoso.onmicrosoft.com) or its \
                 Directory (tenant) ID (Entra admin center → Overview)"
                    .into(),
            ],
        ),
        500011 => entry(
            "The resource of the requested scope does not exist in the tenant",
            "The scope names a resource (such as Office 365 Exchange Online) that the tenant \
             does not have: usually a typo in the scope, or a tenant without Exchange Online.",
            vec![
                "Check the scopes: `https://outlook.office.com/SMTP.Send` (delegated) or \
                 `https://outlook.office365.com/.default` (app-only)"
                    .into(),
                "Check that the tenant has Exchange Online licences".into(),
            ],
        ),
        50105 => entry(
            "The user is not assigned to the app",
            "The app requires user assignment, and this user is not assigned.",
            vec!["An administrator adds the user: Entra admin center → Enterprise applications \
                  → the app → Users and groups → Add user/group"
                .into()],
        ),
        7000112 => entry(
            "The app is disabled",
            "An administrator disabled the app (or its service principal) in the tenant.",
            vec!["An administrator enables it: Enterprise applications → the app → Properties → \
                  Enabled for users to sign-in = Yes"
                .into()],
        ),
        70000 => entry(
            "The grant is invalid",
            "The authorization code or refresh token is invalid, expired, or was issued to \
             another app or for other scopes.",
            vec![format!("Run `{login}` again")],
        ),
        70016 => entry(
            "The device code has not been entered yet",
            "The user has not finished signing in on the device login page.",
            vec!["Open the page shown and enter the code".into()],
        ),
        70019 | 70020 => device_expired(&login),
        1002012 => entry(
            "Client credentials need a `/.default` scope",
            "An app-only token is requested for a whole resource: the scope must be the \
             resource followed by /.default, not a delegated permission such as SMTP.Send.",
            vec![
                "Set the account's scopes to `https://outlook.office365.com/.default` alone"
                    .into(),
            ],
        ),
        650053 => entry(
            "The requested permission does not exist on the resource",
            "A scope names a permission the resource does not define (a typo, or a permission \
             of another API).",
            vec![
                "For delegated SMTP use `https://outlook.office.com/SMTP.Send`; for app-only \
                 `https://outlook.office365.com/.default`"
                    .into(),
            ],
        ),
        50034 => entry(
            "The user does not exist in the tenant",
            "The account signing in is not a user of this tenant (a typo in the address, or a \
             user of another tenant).",
            vec![
                "Sign in with a user of the tenant; check the account's user and tenant".into(),
                format!("Run `{login}` again"),
            ],
        ),
        50058 => entry(
            "A silent sign-in found no session",
            "The provider needs the user to sign in interactively.",
            vec![format!("Run `{login}` and sign in in the browser")],
        ),
        50059 => entry(
            "The request names no tenant",
            "App-only (client credentials) requests must go to the tenant itself, never to \
             /common or /organizations.",
            vec![
                "Set the account's tenant to your tenant's domain (e.g. \
                 contoso.onmicrosoft.com) or its Directory (tenant) ID"
                    .into(),
            ],
        ),
        _ => return None,
    };
    Some(e)
}

fn device_expired(login: &str) -> Entry {
    entry(
        "The device code expired",
        "Nobody entered the code on the device login page before it expired (15 minutes at \
         Microsoft).",
        vec![format!(
            "Run `{login}` again and enter the new code promptly"
        )],
    )
}

fn by_error(error: &str, provider: &ProviderError, ctx: &Context) -> Entry {
    let login = ctx.login_command();
    match error {
        "authorization_declined" => entry(
            "The sign-in was declined on the device login page",
            "The person who entered the device code chose not to allow the sign-in.",
            vec![format!("Run `{login}` again and approve the request")],
        ),
        "expired_token" => device_expired(&login),
        "bad_verification_code" => entry(
            "The device code was not recognised",
            "The provider does not know the device code mailgate polled with (it may have been \
             used already or issued to another app).",
            vec![format!("Run `{login}` again")],
        ),
        "access_denied" => entry(
            "The sign-in was refused",
            "The person signing in cancelled or declined, or the tenant does not allow this app \
             for them.",
            vec![
                format!("Run `{login}` again and accept the permissions"),
                "If the browser showed that an administrator must approve the app, ask one to \
                 grant admin consent (API permissions → Grant admin consent)"
                    .into(),
            ],
        ),
        "invalid_grant" => entry(
            "The refresh token or code is no longer valid",
            "It expired or was revoked (a password change, the user removing the app's access, \
             or an administrator). Google expires the refresh tokens of apps left in \"Testing\" \
             publishing status after 7 days.",
            vec![
                format!("Run `{login}` to sign in again"),
                "Google: set the OAuth consent screen's publishing status to \"In production\" so \
                 refresh tokens stop lapsing after 7 days"
                    .into(),
            ],
        ),
        "invalid_client" => entry(
            "The client id or client secret is wrong",
            "The provider does not recognise the client id, or the secret does not belong to it.",
            vec![
                "Check client_id and client_secret against the provider's console (Google: APIs & \
                 Services → Credentials)"
                    .into(),
                format!("Run `{login}` again"),
            ],
        ),
        "unauthorized_client" => entry(
            "The app may not use this sign-in method",
            "The client is not allowed to use this grant type (Google's device flow needs a \
             \"TVs and Limited Input devices\" client; loopback sign-in needs a \"Desktop app\" \
             client).",
            vec!["Use a client of the right type, or change the account's flow".into()],
        ),
        "invalid_scope" => entry(
            "The requested scopes are invalid",
            "A scope is misspelt or not allowed for this app.",
            vec!["Check the account's scopes (Gmail: `https://mail.google.com/`)".into()],
        ),
        "redirect_uri_mismatch" => entry(
            "The redirect URI is not registered for the client",
            format!(
                "The provider refused the redirect URI `{}`.",
                ctx.redirect()
            ),
            vec![
                "Use a \"Desktop app\" client (loopback redirects on any port are allowed) or \
                 register the URI exactly"
                    .into(),
            ],
        ),
        "interaction_required" | "consent_required" | "login_required" => entry(
            "The provider needs an interactive sign-in",
            "A refresh or non-interactive request cannot satisfy what the provider now asks \
             (MFA, consent or a fresh sign-in).",
            vec![format!(
                "Run `{login}` and complete the sign-in in the browser"
            )],
        ),
        "temporarily_unavailable" | "server_error" => Entry {
            sysexit: Sysexit::TempFail,
            ..entry(
                "The identity provider had a temporary failure",
                "The provider reported an internal or temporary error.",
                vec!["Try again later; mailgate exits 75 so that callers retry".into()],
            )
        },
        _ => entry(
            format!("The identity provider refused ({})", provider.error),
            "The provider's own words below say why.",
            vec![
                "Run the command again with --debug to see the exchange (secrets are redacted)"
                    .into(),
            ],
        ),
    }
}

/// The diagnosis of an error the identity provider reported, at the token endpoint, the device
/// endpoint or in a redirect.
pub fn diagnose(provider: &ProviderError, ctx: &Context) -> Diagnosis {
    // The device-code errors say more than the AADSTS number Entra attaches to them (it sends
    // 70000, "invalid grant", with `authorization_declined` and `bad_verification_code`).
    let device_error = matches!(
        provider.error.as_str(),
        "authorization_declined" | "expired_token" | "bad_verification_code"
    );
    let entry = provider
        .aadsts
        .filter(|_| !device_error)
        .and_then(|c| by_aadsts(c, ctx))
        .unwrap_or_else(|| by_error(&provider.error, provider, ctx));
    Diagnosis {
        code: provider.code(),
        title: entry.title,
        explanation: entry.explanation,
        fix: entry.fix,
        provider_says: provider.provider_says(),
        sysexit: entry.sysexit,
    }
}

/// No redirect reached the loopback listener before the login timed out.
pub fn login_timeout(
    redirect_uri: &str,
    waited: Duration,
    rejected: usize,
    ctx: &Context,
) -> Diagnosis {
    let mut ctx = ctx.clone();
    ctx.redirect_uri
        .get_or_insert_with(|| redirect_uri.to_string());
    let mut explanation = format!(
        "mailgate waited {}s for the browser to come back to {redirect_uri}. If the browser shows \
         AADSTS50011 (\"The redirect URI ... does not match the redirect URIs configured for the \
         application\"), the redirect URI is not registered on the app, so Entra ID never sends \
         the browser back. Otherwise the sign-in was not finished in time, or the browser runs \
         on another machine and cannot reach this one's localhost.",
        waited.as_secs()
    );
    if rejected > 0 {
        explanation.push_str(&format!(
            " {rejected} redirect(s) arrived with a state that does not belong to this login (an \
             old browser tab, or a forged request) and were ignored."
        ));
    }
    Diagnosis {
        code: "login-timeout".into(),
        title: "No sign-in redirect came back".into(),
        explanation,
        fix: vec![
            format!(
                "If the browser shows AADSTS50011: {ENTRA_APP_PATH} → {} → Authentication → add \
                 `{}` exactly as the redirect URI (platform \"Mobile and desktop applications\", \
                 or \"Web\" for an app with a secret; for http://localhost the port may differ)",
                ctx.app(),
                ctx.redirect()
            ),
            "If the browser shows another code: AADSTS700016 means a wrong client_id or \
             tenant; AADSTS50194 a single-tenant app used with common or organizations (set \
             tenant to your tenant's domain or ID); AADSTS90002 an unknown tenant"
                .into(),
            format!(
                "On a machine without a browser, use `flow = \"device_code\"`, or open the URL on \
                 this machine; then run `{}` again (--timeout SECS waits longer)",
                ctx.login_command()
            ),
        ],
        provider_says: String::new(),
        sysexit: Sysexit::TempFail,
    }
}

/// The loopback port for the redirect is taken by another program.
pub fn port_in_use(addr: &str) -> Diagnosis {
    Diagnosis {
        code: "port-in-use".into(),
        title: "The redirect port is taken".into(),
        explanation: format!(
            "Another program (or another `mailgate login`) is listening on {addr}, where the \
             browser will be sent after sign-in."
        ),
        fix: vec![
            "Stop the other program (`ss -ltnp` shows which one), then try again".into(),
            "Or set the account's redirect_port to another port, or to 0 for any free port \
             (Entra ID ignores the port of http://localhost redirect URIs)"
                .into(),
        ],
        provider_says: String::new(),
        sysexit: Sysexit::TempFail,
    }
}

/// The provider could not be reached (or kept failing) through every retry.
pub fn unavailable(step: Step, url: &str, last_failure: &str) -> Diagnosis {
    Diagnosis {
        code: "unavailable".into(),
        title: "The identity provider could not be reached".into(),
        explanation: format!(
            "While {step}, {url} failed repeatedly ({last_failure}). This is usually temporary: a \
             network problem, a proxy, or an outage of the provider."
        ),
        fix: vec![
            "Try again later; mailgate exits 75 so that queues and cron jobs retry".into(),
            "Check the network and proxy settings, and the provider's status page".into(),
        ],
        provider_says: String::new(),
        sysexit: Sysexit::TempFail,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(code: u32, error: &str) -> ProviderError {
        let body = serde_json::json!({
            "error": error,
            "error_description": format!("AADSTS{code}: Provider text.\r\nTrace ID: t\r\nCorrelation ID: c\r\nTimestamp: x"),
            "error_codes": [code],
        });
        ProviderError::from_json(Some(400), body.to_string().as_bytes()).unwrap()
    }

    fn ctx() -> Context {
        Context {
            account: Some("work".into()),
            client_id: Some("0d5c".into()),
            tenant: Some("common".into()),
            redirect_uri: Some("http://localhost:3017/".into()),
        }
    }

    #[test]
    fn every_reference_code_has_its_own_entry() {
        for code in [
            7000215, 7000222, 500112, 7000218, 700025, 50011, 65001, 70008, 700082, 700016, 50076,
            50079, 53003, 54005, 70011, 700022, 50194, 9002313,
        ] {
            assert!(CATALOGUED.contains(&code), "{code}");
            let d = diagnose(&ms(code, "invalid_grant"), &ctx());
            assert_eq!(d.code, format!("AADSTS{code}"));
            assert!(
                !d.title.starts_with("The identity provider refused"),
                "{code}: {}",
                d.title
            );
            assert!(!d.fix.is_empty(), "{code}");
            assert_eq!(d.sysexit, Sysexit::NoPerm);
            assert!(d.provider_says.contains("Correlation ID: c"));
        }
    }

    #[test]
    fn secret_id_confusion_is_named() {
        let d = diagnose(&ms(7000215, "invalid_client"), &ctx());
        let text = d.to_string();
        assert!(
            text.contains("Secret ID") && text.contains("Value"),
            "{text}"
        );
        assert!(text.contains("right after"), "{text}");
    }

    #[test]
    fn fixes_name_the_account_and_redirect() {
        let d = diagnose(&ms(700082, "invalid_grant"), &ctx());
        assert!(d.fix.iter().any(|f| f.contains("mailgate login work")));
        let d = diagnose(&ms(50011, "invalid_request"), &ctx());
        assert!(d.to_string().contains("http://localhost:3017/"));
        assert!(d.to_string().contains("Authentication"));
    }

    #[test]
    fn device_and_google_errors() {
        for (error, words) in [
            ("authorization_declined", "declined"),
            ("expired_token", "expired"),
            ("bad_verification_code", "not recognised"),
            ("invalid_grant", "Testing"),
        ] {
            let p = ProviderError::local(error, "x");
            let d = diagnose(&p, &ctx());
            assert_eq!(d.code, error);
            assert!(d.to_string().contains(words), "{error}: {d}");
            assert_eq!(d.sysexit, Sysexit::NoPerm);
        }
        let d = diagnose(
            &ProviderError::local("temporarily_unavailable", "x"),
            &ctx(),
        );
        assert_eq!(d.sysexit, Sysexit::TempFail);
    }

    #[test]
    fn timeout_explains_50011() {
        let d = login_timeout(
            "http://localhost:3017/",
            Duration::from_secs(300),
            0,
            &ctx(),
        );
        let text = d.to_string();
        assert!(
            text.contains("AADSTS50011") && text.contains("http://localhost:3017/"),
            "{text}"
        );
        assert_eq!(d.sysexit, Sysexit::TempFail);
    }
}
