//! Sending through an account: the one path every command (and the relay) uses.
//!
//! [`AccountSender`] ties an [`Account`], its [`TokenManager`] and the SMTP client together: it
//! gets an access token valid for at least five minutes, connects, authenticates as the
//! account's `user` (which stays the signed-in member even when the message is sent as a shared
//! mailbox: only `MAIL FROM` and `From:` carry the shared address), and sends. When the server
//! refuses a cached token with 535, the token is refreshed once and the login tried once more.

use std::sync::Arc;

use time::OffsetDateTime;

use crate::config::{Account, Config, ConfigError};
use crate::diagnose::Diagnosis;
use crate::message::{MessageError, OutgoingMessage};
use crate::smtp::{SendOutcome, SessionInfo, SmtpClient, SmtpError, SmtpSettings, Transcript};
use crate::sysexits::HasSysexit;
use crate::tokens::{TokenError, TokenManager, DEFAULT_MIN_VALID};
use crate::{Secret, Sysexit};

/// Why a message could not be sent through an account.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SendError {
    /// The account's configuration is unusable.
    #[error(transparent)]
    Config(Box<ConfigError>),
    /// No access token could be had (not logged in, refresh refused...).
    #[error(transparent)]
    Token(Box<TokenError>),
    /// The message could not be built.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The SMTP session failed.
    #[error(transparent)]
    Smtp(#[from] SmtpError),
}

impl From<ConfigError> for SendError {
    fn from(e: ConfigError) -> SendError {
        SendError::Config(Box::new(e))
    }
}

impl From<TokenError> for SendError {
    fn from(e: TokenError) -> SendError {
        SendError::Token(Box::new(e))
    }
}

impl HasSysexit for SendError {
    fn sysexit(&self) -> Sysexit {
        match self {
            SendError::Config(e) => e.sysexit(),
            SendError::Token(e) => e.sysexit(),
            SendError::Message(e) => e.sysexit(),
            SendError::Smtp(e) => e.sysexit(),
        }
    }
}

impl SendError {
    /// The diagnosis of the failure, when the library has one.
    pub fn diagnosis(&self) -> Option<&Diagnosis> {
        match self {
            SendError::Smtp(e) => e.diagnosis(),
            SendError::Token(e) => {
                let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e.as_ref());
                while let Some(err) = cur {
                    if let Some(d) = crate::diagnose::of_error(err) {
                        return Some(d);
                    }
                    cur = err.source();
                }
                None
            }
            _ => None,
        }
    }
}

/// A delivered message.
#[derive(Clone, Debug)]
pub struct SendReport {
    /// Per-recipient results, the final reply and the server's queue id.
    pub outcome: SendOutcome,
    /// The message's Message-ID.
    pub message_id: String,
    /// How the session was set up.
    pub session: SessionInfo,
    /// Whether the token had to be refreshed after the server refused it.
    pub refreshed_after_535: bool,
}

/// Sends mail through one account.
#[derive(Debug, Clone)]
pub struct AccountSender {
    account: Account,
    tokens: Arc<TokenManager>,
    settings: SmtpSettings,
    transcript: Transcript,
}

/// Whether a 535 might be cured by a fresh token. A disabled SMTP AUTH (5.7.139) or a refused
/// basic login (5.7.30) would be refused again.
fn token_may_be_stale(err: &SmtpError) -> bool {
    if !err.is_auth_refused() {
        return false;
    }
    let code = err.reply().and_then(|r| r.enhanced).map(|e| e.to_string());
    !matches!(code.as_deref(), Some("5.7.139") | Some("5.7.30"))
}

impl AccountSender {
    /// A sender for `account` with its token manager from `config`.
    pub fn new(config: &Config, account: &Account) -> Result<AccountSender, SendError> {
        let tokens = TokenManager::new(config, account)?;
        Ok(AccountSender::with_tokens(
            account.clone(),
            Arc::new(tokens),
        ))
    }

    /// A sender using an existing token manager (shared with other senders of the account).
    pub fn with_tokens(account: Account, tokens: Arc<TokenManager>) -> AccountSender {
        AccountSender {
            settings: account.smtp_settings(),
            account,
            tokens,
            transcript: Transcript::new(),
        }
    }

    /// Changes the SMTP settings (timeouts, EHLO name) used from now on.
    pub fn set_settings(&mut self, settings: SmtpSettings) {
        self.settings = settings;
    }

    /// The account this sender sends through.
    pub fn account(&self) -> &Account {
        &self.account
    }

    /// The account's token manager.
    pub fn tokens(&self) -> &Arc<TokenManager> {
        &self.tokens
    }

    /// The SMTP settings in use.
    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// The transcript of every session this sender opened (AUTH payloads redacted).
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// An access token valid for at least five minutes, and whether it was already stored
    /// before this call (a cached token, which a 535 may prove stale).
    pub async fn token(&self) -> Result<(Secret, bool), SendError> {
        let asked_at = OffsetDateTime::now_utc();
        let token = self.tokens.access_token(DEFAULT_MIN_VALID).await?;
        let cached = match self.tokens.load() {
            Ok(Some(set)) => set.updated_at < asked_at,
            _ => true,
        };
        Ok((token, cached))
    }

    /// Connects and authenticates as the account's user. Returns the session and whether the
    /// token was refreshed after the server refused the cached one.
    pub async fn connect(&self) -> Result<(SmtpClient, bool), SendError> {
        let (token, cached) = self.token().await?;
        let client =
            SmtpClient::connect_with_transcript(&self.settings, self.transcript.clone()).await?;
        self.login(client, &token, cached).await
    }

    /// Authenticates an open session as the account's user with `token`. When the server
    /// refuses a `cached` token with 535 (and the reply is not one a new token cannot cure), the
    /// token is refreshed once and the login tried once more on a new connection; the returned
    /// flag says so.
    pub async fn login(
        &self,
        mut client: SmtpClient,
        token: &Secret,
        cached: bool,
    ) -> Result<(SmtpClient, bool), SendError> {
        match client.authenticate(&self.account.user, token).await {
            Ok(_) => Ok((client, false)),
            Err(e) if cached && token_may_be_stale(&e) => {
                tracing::info!(
                    "account {}: the server refused the stored access token ({}); refreshing it and trying once more",
                    self.account.name,
                    e.reply().map(|r| r.to_string()).unwrap_or_default()
                );
                self.transcript.note(
                    "the server refused the stored token: refreshing it and trying once more",
                );
                client.quit().await;
                let token = self.tokens.force_refresh().await?;
                let mut client =
                    SmtpClient::connect_with_transcript(&self.settings, self.transcript.clone())
                        .await?;
                client.authenticate(&self.account.user, &token).await?;
                Ok((client, true))
            }
            Err(e) => Err(e.into()),
        }
    }

    /// Sends one message over a new session, then closes it.
    pub async fn send(&self, message: &OutgoingMessage) -> Result<SendReport, SendError> {
        let (mut client, refreshed) = self.connect().await?;
        let result = client.send(&message.envelope, &message.data).await;
        let session = client.info().clone();
        client.quit().await;
        Ok(SendReport {
            outcome: result?,
            message_id: message.message_id.clone(),
            session,
            refreshed_after_535: refreshed,
        })
    }

    /// Sends many messages over one session (RSET between them), so that a batch pays for one
    /// TLS handshake and one AUTH. `results[i]` is the result of `messages[i]`; a refused
    /// message does not stop the others. A broken connection is reopened (with a new login);
    /// when that fails, the batch stops there: the last result is that failure and the messages
    /// after it were not attempted (`results` is shorter than `messages`). Fails as a whole only
    /// when the first session cannot be opened, before anything was sent.
    pub async fn send_batch(
        &self,
        messages: &[OutgoingMessage],
    ) -> Result<Vec<Result<SendOutcome, SendError>>, SendError> {
        let mut results = Vec::with_capacity(messages.len());
        if messages.is_empty() {
            return Ok(results);
        }
        let (mut client, _) = self.connect().await?;
        for message in messages {
            if !client.is_usable() {
                client.quit().await;
                client = match self.connect().await {
                    Ok((c, _)) => c,
                    Err(e) => {
                        results.push(Err(e));
                        return Ok(results);
                    }
                };
            }
            results.push(
                client
                    .send(&message.envelope, &message.data)
                    .await
                    .map_err(SendError::from),
            );
        }
        client.quit().await;
        Ok(results)
    }
}
