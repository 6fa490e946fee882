//! SASL framing for OAuth2 tokens: Google's and Microsoft's `XOAUTH2` and RFC 7628
//! `OAUTHBEARER`, and the JSON error challenge servers send back when they refuse a token.

use base64::engine::general_purpose::STANDARD as B64;
use base64::Engine;

use crate::Secret;

use super::AuthMechanism;

/// The base64 initial response of `XOAUTH2`:
/// `user={user}\x01auth=Bearer {token}\x01\x01`.
pub fn xoauth2_initial_response(user: &str, token: &Secret) -> Secret {
    let raw = format!("user={user}\x01auth=Bearer {}\x01\x01", token.expose());
    Secret::new(B64.encode(raw))
}

/// The base64 initial response of `OAUTHBEARER` (RFC 7628 section 3.1):
/// `n,a={user},\x01host={host}\x01port={port}\x01auth=Bearer {token}\x01\x01`.
///
/// The GS2 header's authzid escapes `,` as `=2C` and `=` as `=3D` (RFC 5801).
pub fn oauthbearer_initial_response(user: &str, host: &str, port: u16, token: &Secret) -> Secret {
    let authzid = user.replace('=', "=3D").replace(',', "=2C");
    let raw = format!(
        "n,a={authzid},\x01host={host}\x01port={port}\x01auth=Bearer {}\x01\x01",
        token.expose()
    );
    Secret::new(B64.encode(raw))
}

/// The initial response for `mechanism`.
pub fn initial_response(
    mechanism: AuthMechanism,
    user: &str,
    host: &str,
    port: u16,
    token: &Secret,
) -> Secret {
    match mechanism {
        AuthMechanism::Xoauth2 => xoauth2_initial_response(user, token),
        AuthMechanism::Oauthbearer => oauthbearer_initial_response(user, host, port, token),
    }
}

/// The mechanism's name as sent after `AUTH`.
pub fn mechanism_name(mechanism: AuthMechanism) -> &'static str {
    match mechanism {
        AuthMechanism::Xoauth2 => "XOAUTH2",
        AuthMechanism::Oauthbearer => "OAUTHBEARER",
    }
}

/// What the client answers to a 334 error challenge before the server sends its final reply:
/// an empty line for `XOAUTH2`, a single `\x01` (base64 `AQ==`) for `OAUTHBEARER`.
pub fn challenge_answer(mechanism: AuthMechanism) -> &'static str {
    match mechanism {
        AuthMechanism::Xoauth2 => "",
        AuthMechanism::Oauthbearer => "AQ==",
    }
}

/// The server's 334 error challenge, decoded: a JSON object such as
/// `{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OAuthChallenge {
    /// The decoded text (JSON when the server follows RFC 7628; shown verbatim otherwise).
    pub raw: String,
    /// `status`: an HTTP-like status (`400` bad token, `401` expired or revoked).
    pub status: Option<String>,
    /// `schemes`: the token types accepted (`Bearer`).
    pub schemes: Option<String>,
    /// `scope`: the scope the server needs the token to carry.
    pub scope: Option<String>,
    /// `openid-configuration`: where the server's authorization server is described.
    pub openid_configuration: Option<String>,
}

impl OAuthChallenge {
    /// Decodes the text after `334 `. Returns `None` when it is not base64 of UTF-8 text.
    pub fn decode(base64_text: &str) -> Option<OAuthChallenge> {
        let bytes = B64.decode(base64_text.trim()).ok()?;
        let raw = String::from_utf8(bytes).ok()?;
        let json: Option<serde_json::Map<String, serde_json::Value>> =
            serde_json::from_str(&raw).ok();
        let field = |name: &str| {
            json.as_ref().and_then(|m| m.get(name)).map(|v| match v {
                serde_json::Value::String(s) => s.clone(),
                other => other.to_string(),
            })
        };
        Some(OAuthChallenge {
            status: field("status"),
            schemes: field("schemes"),
            scope: field("scope"),
            openid_configuration: field("openid-configuration"),
            raw,
        })
    }

    /// What the status means, in words.
    pub fn status_meaning(&self) -> Option<&'static str> {
        match self.status.as_deref()? {
            "400" => Some("the token was malformed or not valid for this server"),
            "401" => Some("the token has expired or been revoked"),
            "403" => Some("the token lacks the scope the server requires"),
            _ => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn decoded(s: &Secret) -> String {
        String::from_utf8(B64.decode(s.expose()).unwrap()).unwrap()
    }

    #[test]
    fn xoauth2_framing() {
        let r = xoauth2_initial_response("alice@contoso.com", &Secret::new("tok123"));
        assert_eq!(
            decoded(&r),
            "user=alice@contoso.com\x01auth=Bearer tok123\x01\x01"
        );
        assert!(!format!("{r:?}").contains("tok123"));
    }

    #[test]
    fn oauthbearer_framing_follows_rfc7628() {
        let r = oauthbearer_initial_response(
            "user@example.com",
            "server.example.com",
            587,
            &Secret::new("vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg=="),
        );
        assert_eq!(
            decoded(&r),
            "n,a=user@example.com,\x01host=server.example.com\x01port=587\x01auth=Bearer vF9dft4qmTc2Nvb3RlckBhbHRhdmlzdGEuY29tCg==\x01\x01"
        );
        let odd = oauthbearer_initial_response("a,b=c@x", "h", 465, &Secret::new("t"));
        assert!(decoded(&odd).starts_with("n,a=a=2Cb=3Dc@x,\x01host=h\x01port=465"));
    }

    #[test]
    fn decodes_gmail_challenge() {
        let b64 =
            B64.encode(r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#);
        let c = OAuthChallenge::decode(&b64).unwrap();
        assert_eq!(c.status.as_deref(), Some("400"));
        assert_eq!(c.scope.as_deref(), Some("https://mail.google.com/"));
        assert_eq!(c.schemes.as_deref(), Some("Bearer"));
        assert!(c.status_meaning().is_some());
        assert!(OAuthChallenge::decode("!!!").is_none());
        assert_eq!(
            challenge_answer(AuthMechanism::Oauthbearer),
            B64.encode("\x01")
        );
        assert_eq!(challenge_answer(AuthMechanism::Xoauth2), "");
    }
}
