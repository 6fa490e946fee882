//! The device code flow (RFC 8628): for machines without a browser, the user enters a short code
//! on another device while mailgate polls the token endpoint.

use std::time::Duration;

use serde::Deserialize;
use time::OffsetDateTime;

use super::client::{check_endpoint, Answer, OAuthClient, TokenResponse};
use super::error::{OAuthError, ProviderError, Step};
use crate::Secret;

/// What the device authorization endpoint handed out.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct DeviceAuthorization {
    /// Polled with; never shown.
    pub device_code: Secret,
    /// The code the user types, e.g. `GH7K2M9PQ`.
    pub user_code: String,
    /// Where to type it (`https://microsoft.com/devicelogin`).
    pub verification_uri: String,
    /// The same page with the code filled in, when the provider gives one.
    pub verification_uri_complete: Option<String>,
    /// When the code stops working.
    pub expires_at: OffsetDateTime,
    /// How long to wait between polls.
    pub interval: Duration,
    /// The provider's instructions to show the user (Entra ID's `message`, or one built from
    /// the URI and the code).
    pub message: String,
}

#[derive(Deserialize)]
struct RawDevice {
    device_code: String,
    user_code: String,
    #[serde(alias = "verification_url")]
    verification_uri: String,
    #[serde(default)]
    verification_uri_complete: Option<String>,
    #[serde(default)]
    expires_in: Option<u64>,
    #[serde(default)]
    interval: Option<u64>,
    #[serde(default)]
    message: Option<String>,
}

/// RFC 8628's default polling interval.
const DEFAULT_INTERVAL: Duration = Duration::from_secs(5);
/// What RFC 8628 says to add on `slow_down`.
const SLOW_DOWN_STEP: Duration = Duration::from_secs(5);

impl OAuthClient {
    /// Asks for a device code. Show [`DeviceAuthorization::message`] to the user, then call
    /// [`OAuthClient::poll_device`].
    pub async fn start_device(&self) -> Result<DeviceAuthorization, OAuthError> {
        let raw_url = self
            .endpoints()
            .device_authorization_url
            .clone()
            .ok_or_else(|| OAuthError::MissingSetting {
                step: Step::DeviceAuthorization,
                what: "the account has no device_authorization_url (the device code endpoint)"
                    .into(),
            })?;
        let url = check_endpoint("device_authorization_url", &raw_url)?;
        let form = vec![
            ("client_id", self.endpoints().client_id.clone()),
            ("scope", self.endpoints().scopes.join(" ")),
        ];
        let answer = self
            .post_form(Step::DeviceAuthorization, &url, &form)
            .await?;
        if !(200..300).contains(&answer.status) {
            return Err(self.refusal(Step::DeviceAuthorization, &url, &answer, &form));
        }
        let raw: RawDevice =
            serde_json::from_slice(&answer.body).map_err(|e| OAuthError::UnexpectedResponse {
                step: Step::DeviceAuthorization,
                url: url.to_string(),
                status: answer.status,
                detail: format!("the device code response is not the JSON expected: {}", {
                    let m = e.to_string();
                    if m.starts_with("missing field") {
                        m
                    } else {
                        format!("line {} column {}", e.line(), e.column())
                    }
                }),
            })?;
        let expires_in = raw.expires_in.unwrap_or(900);
        let message = raw
            .message
            .filter(|m| !m.trim().is_empty())
            .unwrap_or_else(|| {
                format!(
                    "To sign in, use a web browser to open the page {} and enter the code {} to \
                 authenticate.",
                    raw.verification_uri, raw.user_code
                )
            });
        tracing::debug!(
            user_code = %raw.user_code,
            verification_uri = %raw.verification_uri,
            expires_in,
            interval = raw.interval,
            "device code issued"
        );
        Ok(DeviceAuthorization {
            device_code: Secret::new(raw.device_code),
            user_code: raw.user_code,
            verification_uri: raw.verification_uri,
            verification_uri_complete: raw.verification_uri_complete,
            expires_at: OffsetDateTime::now_utc() + time::Duration::seconds(expires_in as i64),
            interval: raw
                .interval
                .map(Duration::from_secs)
                .filter(|i| !i.is_zero())
                .unwrap_or(DEFAULT_INTERVAL),
            message,
        })
    }

    /// Polls the token endpoint at the given interval until the user has entered the code (or
    /// declined, or the code expired). `slow_down` adds 5 s to the interval, as RFC 8628 says.
    pub async fn poll_device(
        &self,
        device: &DeviceAuthorization,
    ) -> Result<TokenResponse, OAuthError> {
        let step = Step::DevicePolling;
        let mut interval = device.interval;
        let mut form = vec![
            (
                "grant_type",
                "urn:ietf:params:oauth:grant-type:device_code".to_string(),
            ),
            ("device_code", device.device_code.expose().to_string()),
        ];
        self.add_client_auth(&mut form);
        let url = self.token_url.clone();
        loop {
            tokio::time::sleep(interval).await;
            if OffsetDateTime::now_utc() >= device.expires_at {
                return Err(self.refused(
                    step,
                    ProviderError::local(
                        "expired_token",
                        "The device code expired before the sign-in was completed.",
                    ),
                ));
            }
            let answer: Answer = self.post_form(step, &url, &form).await?;
            if (200..300).contains(&answer.status) {
                return self.read_token(step, &url, answer, &form);
            }
            match ProviderError::from_json(Some(answer.status), &answer.body) {
                Some(p) if p.error == "authorization_pending" => {
                    tracing::debug!("device code: authorization pending");
                }
                Some(p) if p.error == "slow_down" => {
                    interval += SLOW_DOWN_STEP;
                    tracing::debug!(interval = interval.as_secs(), "device code: slow_down");
                }
                _ => return Err(self.refusal(step, &url, &answer, &form)),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::testserver::{Canned, TestServer};
    use crate::oauth::OAuthEndpoints;
    use crate::sysexits::HasSysexit;
    use crate::Sysexit;

    fn client(base: &str) -> OAuthClient {
        OAuthClient::new(OAuthEndpoints {
            authorize_url: format!("{base}/t/oauth2/v2.0/authorize"),
            token_url: format!("{base}/t/oauth2/v2.0/token"),
            device_authorization_url: Some(format!("{base}/t/oauth2/v2.0/devicecode")),
            client_id: "public-1".into(),
            client_secret: None,
            scopes: vec!["offline_access".into()],
            redirect_uri: "http://localhost/".into(),
            redirect_port: 0,
            ca_file: None,
        })
        .unwrap()
        .with_account("dev")
    }

    fn device_json(interval: u64) -> serde_json::Value {
        serde_json::json!({
            "device_code": "DAQABAAEAAAD-device-code",
            "user_code": "GH7K2M9PQ",
            "verification_uri": "https://microsoft.com/devicelogin",
            "expires_in": 900,
            "interval": interval,
            "message": "To sign in, use a web browser to open the page https://microsoft.com/devicelogin and enter the code GH7K2M9PQ to authenticate.",
        })
    }

    fn err(error: &str, code: u32) -> Canned {
        Canned::json(
            400,
            serde_json::json!({
                "error": error,
                "error_description": format!("AADSTS{code}: {error}.\r\nTrace ID: t"),
                "error_codes": [code],
            }),
        )
    }

    #[tokio::test]
    async fn polls_honouring_slow_down() {
        let server = TestServer::start(vec![
            Canned::json(200, device_json(1)),
            err("authorization_pending", 70016),
            err("slow_down", 70016),
            Canned::json(
                200,
                serde_json::json!({"token_type": "Bearer", "access_token": "at", "refresh_token": "rt", "expires_in": 3599, "scope": "offline_access"}),
            ),
        ])
        .await;
        let c = client(&server.base);
        let d = c.start_device().await.unwrap();
        assert!(d.message.contains("GH7K2M9PQ"));
        assert_eq!(d.interval, Duration::from_secs(1));
        let t = c.poll_device(&d).await.unwrap();
        assert_eq!(t.refresh_token.unwrap().expose(), "rt");
        let r = server.received();
        assert_eq!(r[0].param("client_id"), Some("public-1"));
        assert_eq!(
            r[1].param("grant_type"),
            Some("urn:ietf:params:oauth:grant-type:device_code")
        );
        assert_eq!(r[1].param("device_code"), Some("DAQABAAEAAAD-device-code"));
        assert!(r[2].at - r[1].at >= Duration::from_millis(990));
        // After slow_down the interval is 1 + 5 seconds.
        assert!(
            r[3].at - r[2].at >= Duration::from_millis(5990),
            "{:?}",
            r[3].at - r[2].at
        );
    }

    #[tokio::test]
    async fn declined_and_expired_codes_are_diagnosed() {
        for (error, code, words) in [
            ("authorization_declined", 70000, "declined"),
            ("expired_token", 70020, "expired"),
            ("bad_verification_code", 70000, "not recognised"),
        ] {
            let server =
                TestServer::start(vec![Canned::json(200, device_json(1)), err(error, code)]).await;
            let c = client(&server.base);
            let d = c.start_device().await.unwrap();
            let e = c.poll_device(&d).await.unwrap_err();
            assert_eq!(e.sysexit(), Sysexit::NoPerm);
            let diag = e.diagnosis().unwrap();
            assert!(diag.title.contains(words), "{error}: {diag}");
            assert!(
                diag.fix.iter().any(|f| f.contains("mailgate login dev")),
                "{diag}"
            );
        }
    }

    #[tokio::test]
    async fn google_style_device_answers() {
        let server = TestServer::start(vec![Canned::json(
            200,
            serde_json::json!({"device_code": "dc", "user_code": "ABC-DEF", "verification_url": "https://www.google.com/device", "expires_in": 1800, "interval": 5}),
        )])
        .await;
        let d = client(&server.base).start_device().await.unwrap();
        assert_eq!(d.verification_uri, "https://www.google.com/device");
        assert!(
            d.message.contains("https://www.google.com/device") && d.message.contains("ABC-DEF")
        );
    }
}
