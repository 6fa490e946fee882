//! Scopes: which resource a request is for, which of its permissions, and the OIDC extras.
//!
//! Entra ID rules imitated here: every non-OIDC scope of one request belongs to one resource; a
//! scope without a resource prefix is a Microsoft Graph scope (so a bare `SMTP.Send` yields a
//! Graph token, which SMTP then refuses); `outlook.office.com` and `outlook.office365.com` both
//! name Exchange Online; `<resource>/.default` means "everything consented for that resource".

use super::OAuthError;
use crate::{tokens, App};

/// The resources the simulated tenant knows.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum ResourceKind {
    /// Office 365 Exchange Online (`https://outlook.office.com`, `https://outlook.office365.com`).
    Exchange,
    /// Microsoft Graph.
    Graph,
    /// Gmail mode: Google APIs (scopes are whole URLs, no resource split).
    Google,
}

const EXCHANGE_APP_ID: &str = "00000002-0000-0ff1-ce00-000000000000";
const GRAPH_APP_ID: &str = "00000003-0000-0000-c000-000000000000";
const GRAPH_URI: &str = "https://graph.microsoft.com";
const GOOGLE_MAIL: &str = "https://mail.google.com/";

const EXCHANGE_SCOPES: &[&str] = &[
    "SMTP.Send",
    "IMAP.AccessAsUser.All",
    "POP.AccessAsUser.All",
    "EWS.AccessAsUser.All",
    "Mail.Send",
    "Mail.Read",
    "Mail.ReadWrite",
    "User.Read",
    ".default",
];

const GRAPH_SCOPES: &[&str] = &[
    "User.Read",
    "Mail.Send",
    "Mail.Send.Shared",
    "Mail.Read",
    "Mail.ReadWrite",
    "SMTP.Send",
    "IMAP.AccessAsUser.All",
    "POP.AccessAsUser.All",
    ".default",
];

const OIDC: &[&str] = &["openid", "profile", "email", "offline_access"];
const GOOGLE_OIDC: &[&str] = &["openid", "profile", "email"];

impl ResourceKind {
    /// The resource's application id, as Entra names it in messages.
    pub fn app_id(self) -> &'static str {
        match self {
            ResourceKind::Exchange => EXCHANGE_APP_ID,
            ResourceKind::Graph => GRAPH_APP_ID,
            ResourceKind::Google => "",
        }
    }

    fn known(self) -> &'static [&'static str] {
        match self {
            ResourceKind::Exchange => EXCHANGE_SCOPES,
            ResourceKind::Graph => GRAPH_SCOPES,
            ResourceKind::Google => &[],
        }
    }
}

/// The resource of a request.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Resource {
    /// The identifier URI as requested (lower-case, no trailing slash), e.g.
    /// `https://outlook.office365.com`; scopes are echoed in this spelling.
    pub uri: String,
    pub kind: ResourceKind,
}

/// A parsed `scope` parameter.
#[derive(Clone, Debug)]
pub(crate) struct Scopes {
    /// OIDC scopes, canonical lower case.
    pub oidc: Vec<&'static str>,
    pub resource: Resource,
    /// Canonical short names (`SMTP.Send`, `.default`); whole URLs in Gmail mode.
    pub names: Vec<String>,
}

/// The resource named by a scope's prefix (`https://outlook.office.com`, a resource app id).
fn resource_of(prefix: &str) -> Option<Resource> {
    let p = prefix.trim_end_matches('/').to_ascii_lowercase();
    let kind = match p.as_str() {
        "https://outlook.office.com" | "https://outlook.office365.com" => ResourceKind::Exchange,
        EXCHANGE_APP_ID => {
            return Some(Resource {
                uri: "https://outlook.office.com".into(),
                kind: ResourceKind::Exchange,
            })
        }
        GRAPH_URI => ResourceKind::Graph,
        GRAPH_APP_ID => {
            return Some(Resource {
                uri: GRAPH_URI.into(),
                kind: ResourceKind::Graph,
            })
        }
        _ => return None,
    };
    Some(Resource { uri: p, kind })
}

/// Splits `https://outlook.office.com/SMTP.Send` into resource and name; a bare name is Graph's.
fn split(scope: &str) -> (Option<&str>, &str) {
    if scope.contains("://") || scope.contains('/') {
        match scope.rfind('/') {
            Some(i) => (Some(&scope[..i]), &scope[i + 1..]),
            None => (None, scope),
        }
    } else {
        (None, scope)
    }
}

/// Whether `scope` (as stored in an app's consented scopes) is `name` on a resource of `kind`.
fn same_permission(scope: &str, kind: ResourceKind, name: &str) -> bool {
    let (prefix, n) = split(scope);
    let k = match prefix {
        Some(p) => match resource_of(p) {
            Some(r) => r.kind,
            None => return false,
        },
        None => ResourceKind::Graph,
    };
    k == kind && n.eq_ignore_ascii_case(name)
}

impl Scopes {
    /// Parses a Microsoft `scope` parameter for `app`.
    pub fn parse_microsoft(
        raw: &str,
        app: &App,
        tenant_domain: &str,
    ) -> Result<Scopes, OAuthError> {
        let mut oidc = Vec::new();
        let mut resource: Option<Resource> = None;
        let mut names: Vec<String> = Vec::new();
        for scope in raw.split_whitespace() {
            if let Some(o) = OIDC.iter().find(|o| o.eq_ignore_ascii_case(scope)) {
                if !oidc.contains(o) {
                    oidc.push(*o);
                }
                continue;
            }
            let (prefix, name) = split(scope);
            let this = match prefix {
                Some(p) => resource_of(p)
                    .ok_or_else(|| OAuthError::resource_not_found(p, tenant_domain))?,
                None => Resource {
                    uri: GRAPH_URI.into(),
                    kind: ResourceKind::Graph,
                },
            };
            if name.is_empty() {
                return Err(OAuthError::scope_not_valid(&format!(
                    "The scope '{scope}' does not name a permission."
                )));
            }
            let canonical = this
                .kind
                .known()
                .iter()
                .find(|k| k.eq_ignore_ascii_case(name))
                .ok_or_else(|| {
                    OAuthError::scope_not_on_resource(&app.name, name, this.kind.app_id())
                })?;
            match &resource {
                Some(r) if r.kind != this.kind => {
                    return Err(OAuthError::scope_not_valid(&format!(
                        "The scope '{raw}' contains scopes of more than one resource ({} and {}). \
                         Request the scopes of one resource at a time.",
                        r.uri, this.uri
                    )));
                }
                Some(_) => {}
                None => resource = Some(this),
            }
            if !names.iter().any(|n| n == canonical) {
                names.push((*canonical).to_string());
            }
        }
        if names.len() > 1 && names.iter().any(|n| n == ".default") {
            return Err(OAuthError::scope_not_valid(
                "The '.default' scope can't be combined with other scopes of the same resource.",
            ));
        }
        let resource = resource.unwrap_or_else(|| Resource {
            uri: GRAPH_URI.into(),
            kind: ResourceKind::Graph,
        });
        if names.is_empty() {
            // Sign-in only: Entra issues a Graph token for the basic profile.
            names.push("User.Read".into());
        }
        Ok(Scopes {
            oidc,
            resource,
            names,
        })
    }

    /// Parses a Google `scope` parameter.
    pub fn parse_google(raw: &str) -> Result<Scopes, OAuthError> {
        let mut oidc = Vec::new();
        let mut names: Vec<String> = Vec::new();
        let mut invalid = Vec::new();
        for scope in raw.split_whitespace() {
            if let Some(o) = GOOGLE_OIDC.iter().find(|o| o.eq_ignore_ascii_case(scope)) {
                if !oidc.contains(o) {
                    oidc.push(*o);
                }
            } else if scope == GOOGLE_MAIL || scope.starts_with("https://www.googleapis.com/auth/")
            {
                if !names.iter().any(|n| n == scope) {
                    names.push(scope.to_string());
                }
            } else {
                invalid.push(scope.to_string());
            }
        }
        if !invalid.is_empty() {
            let valid: Vec<String> = oidc
                .iter()
                .map(|s| s.to_string())
                .chain(names.iter().cloned())
                .collect();
            return Err(OAuthError::google_invalid_scope(&valid, &invalid));
        }
        Ok(Scopes {
            oidc,
            resource: Resource {
                uri: "https://www.googleapis.com".into(),
                kind: ResourceKind::Google,
            },
            names,
        })
    }

    /// The audience of the access token, the same for both Exchange spellings (the SMTP side
    /// checks it against [`crate::tokens::OUTLOOK_AUDIENCE`] and friends).
    pub fn audience(&self) -> String {
        match self.resource.kind {
            ResourceKind::Exchange => tokens::OUTLOOK_AUDIENCE.into(),
            ResourceKind::Graph => tokens::GRAPH_AUDIENCE.into(),
            ResourceKind::Google if self.names.iter().any(|n| n == GOOGLE_MAIL) => {
                tokens::GOOGLE_AUDIENCE.into()
            }
            ResourceKind::Google => "https://www.googleapis.com/".into(),
        }
    }

    pub fn has(&self, oidc: &str) -> bool {
        self.oidc.contains(&oidc)
    }

    pub fn is_default(&self) -> bool {
        self.names.iter().any(|n| n == ".default")
    }

    fn full(&self, name: &str) -> String {
        match self.resource.kind {
            ResourceKind::Google => name.to_string(),
            _ => format!("{}/{name}", self.resource.uri),
        }
    }

    /// The scopes as stored on codes and refresh tokens (full URIs, then OIDC), and as shown.
    pub fn stored(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|n| self.full(n))
            .chain(self.oidc.iter().map(|o| o.to_string()))
            .collect()
    }

    /// The `scope` of a token response: Graph scopes in short form, other resources' in full URI
    /// form, followed by the OIDC scopes granted (offline_access is implied by the refresh token).
    pub fn response_scope(&self) -> String {
        let names = self.names.iter().map(|n| match self.resource.kind {
            ResourceKind::Graph => n.clone(),
            _ => self.full(n),
        });
        names
            .chain(
                self.oidc
                    .iter()
                    .filter(|o| **o != "offline_access")
                    .map(|o| o.to_string()),
            )
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Replaces `<resource>/.default` by what `app` has consented on that resource. Returns false
    /// when nothing is consented there.
    pub fn expand_default(&mut self, app: &App) -> bool {
        if !self.is_default() {
            return true;
        }
        let kind = self.resource.kind;
        let consented: Vec<String> = kind
            .known()
            .iter()
            .filter(|k| **k != ".default")
            .filter(|k| {
                app.consented_scopes
                    .iter()
                    .any(|c| same_permission(c, kind, k))
            })
            .map(|k| k.to_string())
            .collect();
        if consented.is_empty() {
            return false;
        }
        self.names = consented;
        true
    }

    /// The permissions of this request that `app` has no consent for yet (full form).
    pub fn not_consented(&self, app: &App) -> Vec<String> {
        if self.resource.kind == ResourceKind::Google {
            return Vec::new();
        }
        let kind = self.resource.kind;
        self.names
            .iter()
            .filter(|n| *n != ".default")
            .filter(|n| {
                !app.consented_scopes
                    .iter()
                    .any(|c| same_permission(c, kind, n))
            })
            .map(|n| self.full(n))
            .collect()
    }

    /// Whether every permission of this request is among `granted` (full-form scopes of a
    /// refresh token) or consented for `app`.
    pub fn covered_by(&self, granted: &[String], app: &App) -> bool {
        let kind = self.resource.kind;
        self.names.iter().all(|n| {
            n == ".default"
                || granted.iter().any(|g| same_permission(g, kind, n))
                || app
                    .consented_scopes
                    .iter()
                    .any(|c| same_permission(c, kind, n))
        })
    }

    /// The `scp` short names of an access token.
    pub fn token_scopes(&self) -> Vec<String> {
        self.names.clone()
    }

    /// Granted permissions in the words of the consent page.
    pub fn descriptions(&self) -> Vec<(String, &'static str)> {
        let mut out: Vec<(String, &'static str)> = self
            .names
            .iter()
            .map(|n| (self.full(n), describe(self.resource.kind, n)))
            .collect();
        for o in &self.oidc {
            let text = match *o {
                "openid" => "Sign you in",
                "profile" => "View your basic profile",
                "email" => "View your email address",
                _ => "Maintain access to data you have given it access to",
            };
            out.push((o.to_string(), text));
        }
        out
    }
}

fn describe(kind: ResourceKind, name: &str) -> &'static str {
    match (kind, name) {
        (ResourceKind::Google, GOOGLE_MAIL) => {
            "Read, compose, send and permanently delete all your email from Gmail"
        }
        (ResourceKind::Google, _) => "Access your Google Account data",
        (_, "SMTP.Send") => "Send emails from mailboxes using SMTP AUTH.",
        (_, "IMAP.AccessAsUser.All") => "Read and write access to mailboxes via IMAP.",
        (_, "POP.AccessAsUser.All") => "Read and write access to mailboxes via POP.",
        (_, "EWS.AccessAsUser.All") => {
            "Access mailboxes as the signed-in user via Exchange Web Services."
        }
        (_, "Mail.Send") => "Send mail as you",
        (_, "Mail.Send.Shared") => "Send mail on behalf of others",
        (_, "Mail.Read") => "Read your mail",
        (_, "Mail.ReadWrite") => "Read and write access to your mail",
        (_, "User.Read") => "Sign you in and read your profile",
        (_, ".default") => "All the permissions the app has been granted",
        _ => "Access your data",
    }
}

/// Records user consent for `scopes` on `app`.
pub(crate) fn record_consent(app: &mut App, scopes: &Scopes) {
    for s in scopes.not_consented(app) {
        app.consented_scopes.push(s);
    }
    for o in &scopes.oidc {
        if !app
            .consented_scopes
            .iter()
            .any(|c| c.eq_ignore_ascii_case(o))
        {
            app.consented_scopes.push(o.to_string());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Directory;

    fn app() -> App {
        Directory::contoso().apps[1].clone()
    }

    #[test]
    fn outlook_scopes_keep_their_resource_and_full_form() {
        let s = Scopes::parse_microsoft(
            "offline_access https://outlook.office365.com/smtp.send openid",
            &app(),
            "contoso.onmicrosoft.com",
        )
        .unwrap();
        assert_eq!(s.resource.uri, "https://outlook.office365.com");
        assert_eq!(s.audience(), tokens::OUTLOOK_AUDIENCE);
        assert_eq!(s.token_scopes(), vec!["SMTP.Send"]);
        assert_eq!(
            s.response_scope(),
            "https://outlook.office365.com/SMTP.Send openid"
        );
        assert!(s.has("offline_access"));
        assert!(
            s.not_consented(&app()).is_empty(),
            "office365 form is the same permission"
        );
    }

    #[test]
    fn bare_names_are_graph_and_mixing_resources_fails() {
        let s = Scopes::parse_microsoft("SMTP.Send", &app(), "t").unwrap();
        assert_eq!(s.resource.kind, ResourceKind::Graph);
        let e = Scopes::parse_microsoft(
            "https://graph.microsoft.com/User.Read https://outlook.office.com/SMTP.Send",
            &app(),
            "t",
        )
        .unwrap_err();
        assert_eq!((e.error, e.code), ("invalid_scope", 70011));
        let e = Scopes::parse_microsoft("https://example.com/X", &app(), "t").unwrap_err();
        assert_eq!(e.code, 500011);
        let e =
            Scopes::parse_microsoft("https://outlook.office.com/Nope", &app(), "t").unwrap_err();
        assert_eq!(e.code, 650053);
    }

    #[test]
    fn default_expands_to_consented_permissions() {
        let mut s =
            Scopes::parse_microsoft("https://outlook.office.com/.default", &app(), "t").unwrap();
        assert!(s.expand_default(&app()));
        assert_eq!(s.names, vec!["SMTP.Send"]);
    }

    #[test]
    fn google_rejects_microsoft_only_scopes() {
        let e = Scopes::parse_google("https://mail.google.com/ offline_access").unwrap_err();
        assert_eq!(e.google.unwrap().error, "invalid_scope");
        let s = Scopes::parse_google("https://mail.google.com/").unwrap();
        assert_eq!(s.audience(), tokens::GOOGLE_AUDIENCE);
    }
}
