//! The simulated tenant: users, shared mailboxes, app registrations and their settings.
//!
//! [`Directory::contoso`] is the standard directory every test and the demo start from; its names
//! are exported in [`crate::contoso`] so that tests read as scenarios ("alice sends as sales").

use serde::{Deserialize, Serialize};

/// A tenant with its mailboxes and app registrations.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Directory {
    /// The tenant's initial domain, e.g. `contoso.onmicrosoft.com`.
    pub tenant_domain: String,
    /// The tenant id (a GUID); accepted in URLs like the domain.
    pub tenant_id: String,
    /// Tenant-wide "SMTP AUTH" switch (`Set-TransportConfig -SmtpClientAuthenticationDisabled`).
    #[serde(default = "yes")]
    pub smtp_auth_enabled: bool,
    #[serde(default)]
    pub users: Vec<User>,
    #[serde(default)]
    pub shared_mailboxes: Vec<SharedMailbox>,
    #[serde(default)]
    pub apps: Vec<App>,
}

fn yes() -> bool {
    true
}

/// A licensed user with a mailbox.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct User {
    pub address: String,
    pub display_name: String,
    /// Per-mailbox "Authenticated SMTP" (`Set-CASMailbox -SmtpClientAuthenticationDisabled`).
    #[serde(default = "yes")]
    pub smtp_auth_enabled: bool,
}

/// A shared mailbox: it has no password and cannot sign in; members send as it.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SharedMailbox {
    pub address: String,
    pub display_name: String,
    /// Users with Full Access.
    #[serde(default)]
    pub members: Vec<String>,
    /// Users (or app ids, for app-only senders) holding the Send As right.
    #[serde(default)]
    pub send_as: Vec<String>,
}

/// An Entra ID app registration.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct App {
    pub client_id: String,
    pub name: String,
    /// The client secret's Value (shown once in the portal). `None`: the app has no secret.
    #[serde(default)]
    pub secret_value: Option<String>,
    /// The client secret's ID, which people paste by mistake.
    #[serde(default)]
    pub secret_id: Option<String>,
    /// The secret's expiry has passed (AADSTS7000222).
    #[serde(default)]
    pub secret_expired: bool,
    /// "Allow public client flows" / a "Mobile and desktop" platform: must not send a secret.
    #[serde(default)]
    pub public_client: bool,
    /// Only the home tenant may be used in URLs (`/common` gives AADSTS50194).
    #[serde(default)]
    pub single_tenant: bool,
    /// Registered redirect URIs. Loopback URIs match on any port, as at Microsoft.
    #[serde(default)]
    pub redirect_uris: Vec<String>,
    /// Delegated scopes consented for the tenant.
    #[serde(default)]
    pub consented_scopes: Vec<String>,
    /// Application permissions with admin consent, e.g. `SMTP.SendAsApp`.
    #[serde(default)]
    pub app_permissions: Vec<String>,
    /// Mailboxes the app's service principal may send from with an app-only token
    /// (`Add-MailboxPermission ... -AccessRights FullAccess`).
    #[serde(default)]
    pub mailbox_access: Vec<String>,
}

impl Directory {
    /// The standard simulated tenant; see [`crate::contoso`] for its names.
    pub fn contoso() -> Directory {
        use crate::contoso::*;
        let all_delegated = vec![
            "openid".into(),
            "profile".into(),
            "email".into(),
            "offline_access".into(),
            "https://outlook.office.com/SMTP.Send".into(),
        ];
        Directory {
            tenant_domain: TENANT_DOMAIN.into(),
            tenant_id: TENANT_ID.into(),
            smtp_auth_enabled: true,
            users: vec![
                User {
                    address: ALICE.into(),
                    display_name: "Alice Larsen".into(),
                    smtp_auth_enabled: true,
                },
                User {
                    address: BOB.into(),
                    display_name: "Bob Okafor".into(),
                    smtp_auth_enabled: true,
                },
            ],
            shared_mailboxes: vec![
                SharedMailbox {
                    address: SALES.into(),
                    display_name: "Contoso Sales".into(),
                    members: vec![ALICE.into()],
                    send_as: vec![ALICE.into()],
                },
                SharedMailbox {
                    address: SUPPORT.into(),
                    display_name: "Contoso Support".into(),
                    members: vec![ALICE.into()],
                    send_as: vec![],
                },
            ],
            apps: vec![
                App {
                    client_id: WEB_APP_ID.into(),
                    name: "mailgate (web)".into(),
                    secret_value: Some(WEB_APP_SECRET.into()),
                    secret_id: Some(WEB_APP_SECRET_ID.into()),
                    secret_expired: false,
                    public_client: false,
                    single_tenant: false,
                    redirect_uris: vec!["http://localhost:3017/".into()],
                    consented_scopes: all_delegated.clone(),
                    app_permissions: vec!["SMTP.SendAsApp".into()],
                    mailbox_access: vec![ALICE.into(), SALES.into()],
                },
                App {
                    client_id: PUBLIC_APP_ID.into(),
                    name: "mailgate (desktop)".into(),
                    secret_value: None,
                    secret_id: None,
                    secret_expired: false,
                    public_client: true,
                    single_tenant: false,
                    redirect_uris: vec!["http://localhost".into()],
                    consented_scopes: all_delegated,
                    app_permissions: vec![],
                    mailbox_access: vec![],
                },
            ],
        }
    }

    /// Whether `tenant` (as it appears in a URL) names this tenant or a multi-tenant alias.
    pub fn tenant_kind(&self, tenant: &str) -> TenantRef {
        let t = tenant.to_ascii_lowercase();
        match t.as_str() {
            "common" | "organizations" | "consumers" => TenantRef::Alias,
            _ if t == self.tenant_domain.to_ascii_lowercase()
                || t == self.tenant_id.to_ascii_lowercase()
                || self.owns_domain(&t) =>
            {
                TenantRef::Home
            }
            _ => TenantRef::Unknown,
        }
    }

    fn owns_domain(&self, domain: &str) -> bool {
        self.users
            .iter()
            .map(|u| &u.address)
            .chain(self.shared_mailboxes.iter().map(|m| &m.address))
            .any(|a| {
                a.rsplit('@')
                    .next()
                    .is_some_and(|d| d.eq_ignore_ascii_case(domain))
            })
    }

    pub fn app(&self, client_id: &str) -> Option<&App> {
        self.apps
            .iter()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    pub fn app_mut(&mut self, client_id: &str) -> Option<&mut App> {
        self.apps
            .iter_mut()
            .find(|a| a.client_id.eq_ignore_ascii_case(client_id))
    }

    pub fn user(&self, address: &str) -> Option<&User> {
        self.users
            .iter()
            .find(|u| u.address.eq_ignore_ascii_case(address))
    }

    pub fn user_mut(&mut self, address: &str) -> Option<&mut User> {
        self.users
            .iter_mut()
            .find(|u| u.address.eq_ignore_ascii_case(address))
    }

    pub fn shared_mailbox(&self, address: &str) -> Option<&SharedMailbox> {
        self.shared_mailboxes
            .iter()
            .find(|m| m.address.eq_ignore_ascii_case(address))
    }

    pub fn shared_mailbox_mut(&mut self, address: &str) -> Option<&mut SharedMailbox> {
        self.shared_mailboxes
            .iter_mut()
            .find(|m| m.address.eq_ignore_ascii_case(address))
    }

    /// May `sender` (a user address, or an app's client id for app-only tokens) put `from` in
    /// MAIL FROM and the From header?
    pub fn may_send_as(&self, sender: &str, from: &str) -> bool {
        if sender.eq_ignore_ascii_case(from) {
            return true;
        }
        if let Some(app) = self.app(sender) {
            return app
                .mailbox_access
                .iter()
                .any(|m| m.eq_ignore_ascii_case(from));
        }
        self.shared_mailbox(from)
            .is_some_and(|m| m.send_as.iter().any(|u| u.eq_ignore_ascii_case(sender)))
    }
}

/// How a `{tenant}` path segment relates to the directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TenantRef {
    /// The tenant's domain, one of its mail domains, or its id.
    Home,
    /// `common`, `organizations` or `consumers`.
    Alias,
    /// Any other tenant: the simulator has only one.
    Unknown,
}

/// Whether a redirect URI sent by a client matches a registered one, as Entra ID matches them:
/// exact, except that for `http://localhost` and `http://127.0.0.1` the port is ignored, and a URI
/// with no path is treated as having `/`.
pub fn redirect_uri_matches(registered: &str, sent: &str) -> bool {
    let (Ok(r), Ok(s)) = (url::Url::parse(registered), url::Url::parse(sent)) else {
        return false;
    };
    let loopback = |u: &url::Url| {
        u.scheme() == "http"
            && matches!(
                u.host_str(),
                Some("localhost") | Some("127.0.0.1") | Some("[::1]")
            )
    };
    if loopback(&r) && loopback(&s) {
        r.host_str() == s.host_str() && r.path() == s.path() && r.query() == s.query()
    } else {
        r == s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_redirects_ignore_the_port_only() {
        assert!(redirect_uri_matches(
            "http://localhost:3017/",
            "http://localhost:4000/"
        ));
        assert!(redirect_uri_matches(
            "http://localhost",
            "http://localhost:3017/"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/cb",
            "http://localhost:3017/"
        ));
        assert!(!redirect_uri_matches(
            "http://localhost/",
            "http://127.0.0.1:3017/"
        ));
        assert!(redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example/cb"
        ));
        assert!(!redirect_uri_matches(
            "https://app.example/cb",
            "https://app.example:444/cb"
        ));
    }

    #[test]
    fn send_as_follows_grants() {
        let d = Directory::contoso();
        use crate::contoso::*;
        assert!(d.may_send_as(ALICE, ALICE));
        assert!(d.may_send_as(ALICE, SALES));
        assert!(!d.may_send_as(ALICE, SUPPORT));
        assert!(!d.may_send_as(BOB, SALES));
        assert!(d.may_send_as(WEB_APP_ID, SALES));
        assert!(!d.may_send_as(WEB_APP_ID, BOB));
    }
}
