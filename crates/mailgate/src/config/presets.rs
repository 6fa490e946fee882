//! What each provider's preset fills in, so that an account needs only the values that are
//! really its own (tenant, client id, secret, user).

use crate::oauth::Flow;
use crate::smtp::{AuthMechanism, Security};

use super::Provider;

/// Microsoft's identity platform.
pub const MICROSOFT_LOGIN: &str = "https://login.microsoftonline.com";
/// The delegated scope for SMTP submission at Microsoft 365.
pub const OFFICE365_SMTP_SCOPE: &str = "https://outlook.office.com/SMTP.Send";
/// The app-only (client credentials) scope for Exchange Online.
pub const OFFICE365_APP_SCOPE: &str = "https://outlook.office365.com/.default";
/// The tenant used when an office365 account names none.
pub const DEFAULT_TENANT: &str = "organizations";
/// The redirect URI every preset uses (register it on the app as a "Mobile and desktop" or "Web"
/// platform redirect).
pub const DEFAULT_REDIRECT_URI: &str = "http://localhost:3017/";
/// The loopback port of [`DEFAULT_REDIRECT_URI`].
pub const DEFAULT_REDIRECT_PORT: u16 = 3017;
/// Google's mail scope (IMAP, POP and SMTP).
pub const GMAIL_SCOPE: &str = "https://mail.google.com/";

/// Values a provider implies. `None` means the provider has no default and the account must say.
#[derive(Clone, Debug)]
pub struct Preset {
    pub authorize_url: Option<String>,
    pub token_url: Option<String>,
    pub device_authorization_url: Option<String>,
    pub scopes: Option<Vec<String>>,
    pub smtp_host: Option<String>,
    pub smtp_port: u16,
    pub smtp_security: Security,
    pub smtp_auth: AuthMechanism,
    /// Concurrent SMTP connections the relay opens per account.
    pub max_connections: u32,
    /// Messages per minute the relay sends per account; 0 = no pacing.
    pub messages_per_minute: u32,
}

/// The preset of `provider` for `tenant` (office365 only) and `flow`.
pub fn preset(provider: Provider, tenant: &str, flow: Flow) -> Preset {
    match provider {
        Provider::Office365 => {
            let base = format!("{MICROSOFT_LOGIN}/{tenant}/oauth2/v2.0");
            let scopes = match flow {
                Flow::ClientCredentials => vec![OFFICE365_APP_SCOPE.to_string()],
                _ => ["offline_access", OFFICE365_SMTP_SCOPE, "openid", "profile"]
                    .map(String::from)
                    .to_vec(),
            };
            Preset {
                authorize_url: Some(format!("{base}/authorize")),
                token_url: Some(format!("{base}/token")),
                device_authorization_url: Some(format!("{base}/devicecode")),
                scopes: Some(scopes),
                smtp_host: Some("smtp.office365.com".into()),
                smtp_port: 587,
                smtp_security: Security::Starttls,
                smtp_auth: AuthMechanism::Xoauth2,
                // Exchange Online: 3 concurrent connections and 30 messages a minute per mailbox.
                max_connections: 3,
                messages_per_minute: 30,
            }
        }
        Provider::Gmail => Preset {
            authorize_url: Some("https://accounts.google.com/o/oauth2/v2/auth".into()),
            token_url: Some("https://oauth2.googleapis.com/token".into()),
            device_authorization_url: Some("https://oauth2.googleapis.com/device/code".into()),
            // openid + email give an id_token, so that login can say who signed in.
            scopes: Some(vec![
                "openid".into(),
                "email".into(),
                GMAIL_SCOPE.to_string(),
            ]),
            smtp_host: Some("smtp.gmail.com".into()),
            smtp_port: 587,
            smtp_security: Security::Starttls,
            smtp_auth: AuthMechanism::Xoauth2,
            max_connections: 3,
            messages_per_minute: 0,
        },
        Provider::Custom => Preset {
            authorize_url: None,
            token_url: None,
            device_authorization_url: None,
            scopes: None,
            smtp_host: None,
            smtp_port: 587,
            smtp_security: Security::Starttls,
            smtp_auth: AuthMechanism::Xoauth2,
            max_connections: 3,
            messages_per_minute: 0,
        },
    }
}
