//! SASL payloads (XOAUTH2, OAUTHBEARER) and the checks a bearer token must pass.

use time::OffsetDateTime;

use crate::tokens::{AccessToken, GOOGLE_AUDIENCE, OUTLOOK_AUDIENCE};
use crate::{Mode, State};

/// The delegated permission SMTP AUTH needs.
const SMTP_SEND: &str = "SMTP.Send";
/// The application permission app-only SMTP AUTH needs.
const SMTP_SEND_AS_APP: &str = "SMTP.SendAsApp";

/// What a client sent in an OAuth SASL exchange. The token is never logged.
pub(super) struct BearerLogin {
    /// `user=` (XOAUTH2) or `a=` (OAUTHBEARER); OAUTHBEARER may leave it out.
    pub user: Option<String>,
    pub token: String,
}

/// Why a payload could not be read as XOAUTH2 / OAUTHBEARER.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub(super) enum PayloadError {
    #[error("the payload is not valid UTF-8")]
    NotUtf8,
    #[error("the payload has no `auth=Bearer <token>` field")]
    NoBearer,
    #[error("the OAUTHBEARER payload lacks the GS2 header (`n,a=user,`)")]
    NoGs2Header,
}

/// Decodes `user=ADDR\x01auth=Bearer TOKEN\x01\x01`.
pub(super) fn parse_xoauth2(payload: &[u8]) -> Result<BearerLogin, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    let mut user = None;
    let mut token = None;
    for field in text.split('\x01') {
        if let Some(u) = field.strip_prefix("user=") {
            user = Some(u.to_string());
        } else if let Some(t) = bearer(field) {
            token = Some(t);
        }
    }
    Ok(BearerLogin {
        user,
        token: token.ok_or(PayloadError::NoBearer)?,
    })
}

/// Decodes RFC 7628's `n,a=ADDR,\x01host=H\x01port=P\x01auth=Bearer TOKEN\x01\x01`.
pub(super) fn parse_oauthbearer(payload: &[u8]) -> Result<BearerLogin, PayloadError> {
    let text = std::str::from_utf8(payload).map_err(|_| PayloadError::NotUtf8)?;
    let (gs2, rest) = text.split_once('\x01').ok_or(PayloadError::NoGs2Header)?;
    // gs2-header = gs2-cb-flag "," [ authzid ] ","
    let mut parts = gs2.splitn(3, ',');
    let flag = parts.next().unwrap_or_default();
    if !matches!(flag.chars().next(), Some('n' | 'y' | 'p')) {
        return Err(PayloadError::NoGs2Header);
    }
    let authzid = parts.next().ok_or(PayloadError::NoGs2Header)?;
    let user = authzid
        .strip_prefix("a=")
        .filter(|a| !a.is_empty())
        .map(|a| a.replace("=2C", ",").replace("=3D", "="));
    let token = rest
        .split('\x01')
        .find_map(bearer)
        .ok_or(PayloadError::NoBearer)?;
    Ok(BearerLogin { user, token })
}

fn bearer(field: &str) -> Option<String> {
    let value = field.strip_prefix("auth=")?;
    let (scheme, token) = value.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("Bearer") && !token.trim().is_empty())
        .then(|| token.trim().to_string())
}

/// Who an accepted login is.
#[derive(Clone, Debug)]
pub(super) struct Identity {
    /// The mailbox of the login (`user=`), spelled as in the directory when it is there.
    pub mailbox: String,
    /// Whom Send As is checked for: the user, or the app's client id for app-only tokens.
    pub sender: String,
}

/// The outcome of checking a bearer login.
#[derive(Debug)]
pub(super) enum Verdict {
    Accepted(Identity),
    /// 535 5.7.3 (Microsoft) or Gmail's challenge; the reason is for the debug log only.
    Rejected(&'static str),
    /// 535 5.7.139, tenant-wide.
    DisabledForTenant,
    /// 535 5.7.139, for the mailbox.
    DisabledForMailbox,
}

/// Checks a bearer login as Exchange Online (or Gmail, in Gmail mode) would.
pub(super) fn verify(state: &State, login: &BearerLogin) -> Verdict {
    match state.config.mode {
        Mode::Microsoft => verify_microsoft(state, login),
        Mode::Gmail => verify_gmail(state, login),
    }
}

fn lookup(state: &State, token: &str) -> Option<AccessToken> {
    state.tokens.lock().unwrap().access.get(token).cloned()
}

fn verify_microsoft(state: &State, login: &BearerLogin) -> Verdict {
    // Never hold the directory lock while taking the token lock (the identity side may take
    // them in the other order).
    let token = lookup(state, &login.token);
    let dir = state.directory.read().unwrap();
    if !dir.smtp_auth_enabled {
        return Verdict::DisabledForTenant;
    }
    let Some(token) = token else {
        return Verdict::Rejected("unknown token");
    };
    if token.expires_at <= OffsetDateTime::now_utc() {
        return Verdict::Rejected("expired token");
    }
    if token.audience != OUTLOOK_AUDIENCE {
        return Verdict::Rejected("token audience is not Exchange Online");
    }
    let Some(user) = login.user.as_deref().filter(|u| !u.is_empty()) else {
        return Verdict::Rejected("no user= in the payload");
    };
    if dir.shared_mailbox(user).is_some() {
        return Verdict::Rejected("user= is a shared mailbox, which cannot sign in");
    }
    let Some(mailbox) = dir.user(user) else {
        return Verdict::Rejected("user= is not a mailbox of the tenant");
    };
    let sender = match &token.user {
        Some(signed_in) => {
            if !signed_in.eq_ignore_ascii_case(user) {
                return Verdict::Rejected("user= is not the account that signed in");
            }
            if !token
                .scopes
                .iter()
                .any(|s| s.eq_ignore_ascii_case(SMTP_SEND))
            {
                return Verdict::Rejected("token lacks the SMTP.Send scope");
            }
            mailbox.address.clone()
        }
        None => {
            if !token
                .roles
                .iter()
                .any(|r| r.eq_ignore_ascii_case(SMTP_SEND_AS_APP))
            {
                return Verdict::Rejected("app-only token lacks the SMTP.SendAsApp role");
            }
            let Some(app) = dir.app(&token.client_id) else {
                return Verdict::Rejected("app-only token of an unknown app");
            };
            if !app
                .mailbox_access
                .iter()
                .any(|m| m.eq_ignore_ascii_case(user))
            {
                return Verdict::Rejected("the app has no access to the user= mailbox");
            }
            app.client_id.clone()
        }
    };
    if !mailbox.smtp_auth_enabled {
        return Verdict::DisabledForMailbox;
    }
    Verdict::Accepted(Identity {
        mailbox: mailbox.address.clone(),
        sender,
    })
}

fn verify_gmail(state: &State, login: &BearerLogin) -> Verdict {
    let Some(token) = lookup(state, &login.token) else {
        return Verdict::Rejected("unknown token");
    };
    if token.expires_at <= OffsetDateTime::now_utc() {
        return Verdict::Rejected("expired token");
    }
    if token.audience != GOOGLE_AUDIENCE {
        return Verdict::Rejected("token is not for https://mail.google.com/");
    }
    let Some(signed_in) = token.user else {
        return Verdict::Rejected("Gmail has no app-only SMTP");
    };
    if let Some(user) = login.user.as_deref() {
        if !user.eq_ignore_ascii_case(&signed_in) {
            return Verdict::Rejected("user is not the account that signed in");
        }
    }
    Verdict::Accepted(Identity {
        mailbox: signed_in.clone(),
        sender: signed_in,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xoauth2_payload() {
        let l = parse_xoauth2(b"user=a@b.c\x01auth=Bearer tok.en\x01\x01").unwrap();
        assert_eq!(l.user.as_deref(), Some("a@b.c"));
        assert_eq!(l.token, "tok.en");
        assert_eq!(
            parse_xoauth2(b"user=a@b.c\x01\x01").err(),
            Some(PayloadError::NoBearer)
        );
    }

    #[test]
    fn oauthbearer_payload() {
        let l = parse_oauthbearer(
            b"n,a=a=2Cx@b.c,\x01host=smtp.gmail.com\x01port=587\x01auth=Bearer T\x01\x01",
        )
        .unwrap();
        assert_eq!(l.user.as_deref(), Some("a,x@b.c"));
        assert_eq!(l.token, "T");
        let l = parse_oauthbearer(b"n,,\x01auth=Bearer T\x01\x01").unwrap();
        assert_eq!(l.user, None);
        assert_eq!(
            parse_oauthbearer(b"user=x\x01auth=Bearer T\x01\x01").err(),
            Some(PayloadError::NoGs2Header)
        );
    }
}
