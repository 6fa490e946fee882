//! The SMTP client session: connect (STARTTLS or implicit TLS), EHLO, AUTH with an OAuth2 token,
//! then any number of messages over the same connection, each with per-recipient results.

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

use crate::diagnose::smtp::{diagnose_reply, mechanism_not_offered, ReplyContext};
use crate::Secret;

use super::error::{RecipientFailure, SmtpError, Stage};
use super::reply::{Reply, ReplyParser};
use super::sasl::{self, OAuthChallenge};
use super::tls::{self, TlsInfo};
use super::transcript::Transcript;
use super::{AuthMechanism, Security, SmtpSettings};

/// Who a message is from and to, as told to the server (`MAIL FROM` and `RCPT TO`). It is
/// independent of the headers: Bcc recipients are here and not in the message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Envelope {
    /// The envelope sender; empty for a null reverse path (`<>`).
    pub mail_from: String,
    pub rcpt_to: Vec<String>,
}

impl Envelope {
    /// An envelope from a sender and recipients.
    pub fn new(
        mail_from: impl Into<String>,
        rcpt_to: impl IntoIterator<Item = impl Into<String>>,
    ) -> Envelope {
        Envelope {
            mail_from: mail_from.into(),
            rcpt_to: rcpt_to.into_iter().map(Into::into).collect(),
        }
    }
}

/// The result of a message the server accepted (for at least one recipient).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SendOutcome {
    /// Recipients the server accepted: they get the message.
    pub accepted: Vec<String>,
    /// Recipients the server refused, each with its reply and diagnosis.
    pub refused: Vec<RecipientFailure>,
    /// The server's final reply (`250 2.0.0 OK <id> [Hostname=...]`).
    pub reply: Reply,
    /// The server's id for the message, when its reply names one.
    pub queue_id: Option<String>,
}

impl SendOutcome {
    /// Whether every recipient was accepted.
    pub fn all_accepted(&self) -> bool {
        self.refused.is_empty()
    }
}

/// What the server announced in its EHLO reply.
#[derive(Clone, Debug, Default)]
pub struct Capabilities {
    /// The server's name (first word of the first EHLO line).
    pub server_name: String,
    /// The extension lines, verbatim (`SIZE 157286400`, `AUTH LOGIN XOAUTH2`...).
    pub extensions: Vec<String>,
    /// The SASL mechanisms offered, upper-case.
    pub auth: Vec<String>,
    /// The SIZE limit in bytes; `None` when SIZE is not offered or has no limit.
    pub size: Option<usize>,
    flags: u32,
}

impl Capabilities {
    /// Reads an EHLO reply (with `smtp-proto`'s parser, which knows the extension keywords).
    pub fn from_reply(reply: &Reply) -> Capabilities {
        let n = reply.lines.len();
        let mut raw = String::new();
        for (i, line) in reply.lines.iter().enumerate() {
            raw.push_str(if i + 1 == n { "250 " } else { "250-" });
            raw.push_str(line);
            raw.push_str("\r\n");
        }
        let parsed = smtp_proto::EhloResponse::parse(&mut raw.as_bytes().iter()).ok();
        let extensions: Vec<String> = reply.lines.iter().skip(1).cloned().collect();
        let auth = extensions
            .iter()
            .filter_map(|l| {
                let mut words = l.split_whitespace();
                let kw = words.next()?;
                (kw.eq_ignore_ascii_case("AUTH") || kw.eq_ignore_ascii_case("AUTH="))
                    .then(|| words.map(|w| w.to_ascii_uppercase()).collect::<Vec<_>>())
            })
            .flatten()
            .fold(Vec::<String>::new(), |mut acc, m| {
                if !acc.contains(&m) {
                    acc.push(m);
                }
                acc
            });
        let size_word = extensions.iter().find_map(|l| {
            let mut w = l.split_whitespace();
            w.next()
                .filter(|k| k.eq_ignore_ascii_case("SIZE"))
                .map(|_| w.next().and_then(|n| n.parse::<usize>().ok()))
        });
        Capabilities {
            server_name: reply
                .lines
                .first()
                .and_then(|l| l.split_whitespace().next())
                .unwrap_or_default()
                .to_string(),
            size: match (&parsed, size_word) {
                (Some(p), _) if p.size > 0 => Some(p.size),
                (_, Some(Some(n))) if n > 0 => Some(n),
                _ => None,
            },
            flags: parsed
                .as_ref()
                .map(|p| p.capabilities)
                .unwrap_or_else(|| fallback_flags(&extensions)),
            auth,
            extensions,
        }
    }

    fn has(&self, flag: u32) -> bool {
        self.flags & flag != 0
    }

    /// `STARTTLS` is offered (before TLS only).
    pub fn starttls(&self) -> bool {
        self.has(smtp_proto::EXT_START_TLS)
    }

    /// `PIPELINING`: commands may be sent in groups (RFC 2920).
    pub fn pipelining(&self) -> bool {
        self.has(smtp_proto::EXT_PIPELINING)
    }

    /// `8BITMIME`: 8-bit message data is accepted with `BODY=8BITMIME`.
    pub fn eight_bit_mime(&self) -> bool {
        self.has(smtp_proto::EXT_8BIT_MIME)
    }

    /// `SMTPUTF8`: UTF-8 addresses and headers are accepted (RFC 6531).
    pub fn smtputf8(&self) -> bool {
        self.has(smtp_proto::EXT_SMTP_UTF8)
    }

    /// Whether SIZE is announced (with or without a limit).
    pub fn size_extension(&self) -> bool {
        self.has(smtp_proto::EXT_SIZE)
    }

    /// `ENHANCEDSTATUSCODES`: replies carry RFC 3463 codes.
    pub fn enhanced_status_codes(&self) -> bool {
        self.has(smtp_proto::EXT_ENHANCED_STATUS_CODES)
    }

    /// Whether `mechanism` is offered.
    pub fn offers(&self, mechanism: AuthMechanism) -> bool {
        let name = sasl::mechanism_name(mechanism);
        self.auth.iter().any(|m| m == name)
    }
}

fn fallback_flags(extensions: &[String]) -> u32 {
    let mut flags = 0;
    for l in extensions {
        let kw = l
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        flags |= match kw.as_str() {
            "STARTTLS" => smtp_proto::EXT_START_TLS,
            "PIPELINING" => smtp_proto::EXT_PIPELINING,
            "8BITMIME" => smtp_proto::EXT_8BIT_MIME,
            "SMTPUTF8" => smtp_proto::EXT_SMTP_UTF8,
            "SIZE" => smtp_proto::EXT_SIZE,
            "ENHANCEDSTATUSCODES" => smtp_proto::EXT_ENHANCED_STATUS_CODES,
            "AUTH" => smtp_proto::EXT_AUTH,
            _ => 0,
        };
    }
    flags
}

/// How the session was set up, for `mailgate test` and `--debug`.
#[derive(Clone, Debug)]
pub struct SessionInfo {
    /// The address connected to.
    pub peer: SocketAddr,
    /// How long the TCP connection took.
    pub connect_time: Duration,
    /// The `220` greeting.
    pub greeting: Reply,
    /// The TLS session; `None` for `security = "plain"`.
    pub tls: Option<TlsInfo>,
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
    Closed,
}

impl Stream {
    async fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf).await,
            Stream::Tls(s) => s.read(buf).await,
            Stream::Closed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            )),
        }
    }

    async fn write_all(&mut self, data: &[u8]) -> io::Result<()> {
        match self {
            Stream::Plain(s) => s.write_all(data).await,
            Stream::Tls(s) => {
                s.write_all(data).await?;
                s.flush().await
            }
            Stream::Closed => Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "connection closed",
            )),
        }
    }

    async fn shutdown(&mut self) {
        match self {
            Stream::Plain(s) => {
                let _ = s.shutdown().await;
            }
            Stream::Tls(s) => {
                let _ = s.shutdown().await;
            }
            Stream::Closed => {}
        }
        *self = Stream::Closed;
    }
}

/// Lines longer than this are a protocol error (RFC 5321 allows 512 for replies; servers send
/// longer ones, but not this long).
const MAX_LINE: usize = 64 * 1024;
/// Commands written at once when pipelining.
const PIPELINE_CHUNK: usize = 100;

/// An SMTP session with one server. Open it with [`SmtpClient::connect`], authenticate with
/// [`SmtpClient::authenticate`], send messages with [`SmtpClient::send`], end it with
/// [`SmtpClient::quit`].
pub struct SmtpClient {
    stream: Stream,
    rbuf: Vec<u8>,
    settings: SmtpSettings,
    capabilities: Capabilities,
    info: SessionInfo,
    transcript: Transcript,
    auth_user: Option<String>,
    mail_from: Option<String>,
    /// A transaction was started since the last RSET: the next one begins with RSET.
    needs_reset: bool,
    /// The connection is no longer usable (I/O error, timeout, protocol error, 421).
    broken: bool,
}

impl std::fmt::Debug for SmtpClient {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmtpClient")
            .field("host", &self.settings.host)
            .field("port", &self.settings.port)
            .field("peer", &self.info.peer)
            .field("auth_user", &self.auth_user)
            .finish_non_exhaustive()
    }
}

/// Whether `host` is this machine (the only place `security = "plain"` may go).
pub fn is_loopback(host: &str) -> bool {
    let h = host.trim_start_matches('[').trim_end_matches(']');
    h.eq_ignore_ascii_case("localhost")
        || h.parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

impl SmtpClient {
    /// Connects, secures the connection (implicit TLS, or STARTTLS after the first EHLO) and
    /// reads the server's capabilities. The session is not authenticated yet.
    pub async fn connect(settings: &SmtpSettings) -> Result<SmtpClient, SmtpError> {
        SmtpClient::connect_with_transcript(settings, Transcript::new()).await
    }

    /// [`SmtpClient::connect`], recording the session into `transcript`.
    pub async fn connect_with_transcript(
        settings: &SmtpSettings,
        transcript: Transcript,
    ) -> Result<SmtpClient, SmtpError> {
        let host = settings.host.as_str();
        let port = settings.port;
        if settings.security == Security::Plain && !is_loopback(host) {
            return Err(SmtpError::PlainNotLoopback { host: host.into() });
        }
        let tls_config = match settings.security {
            Security::Plain => None,
            _ => Some(tls::client_config(settings.ca_file.as_deref())?),
        };
        let started = Instant::now();
        let tcp = match timeout(settings.connect_timeout, connect_tcp(host, port)).await {
            Err(_) => {
                return Err(SmtpError::connect_timeout(
                    host,
                    port,
                    settings.connect_timeout,
                ))
            }
            Ok(Err(e)) => return Err(SmtpError::connect(host, port, e)),
            Ok(Ok(s)) => s,
        };
        let connect_time = started.elapsed();
        let peer = tcp
            .peer_addr()
            .map_err(|e| SmtpError::connect(host, port, e))?;
        let _ = tcp.set_nodelay(true);
        transcript.note(format!("connected to {host}:{port} ({peer})"));
        let mut client = SmtpClient {
            stream: Stream::Plain(tcp),
            rbuf: Vec::with_capacity(4096),
            settings: settings.clone(),
            capabilities: Capabilities::default(),
            info: SessionInfo {
                peer,
                connect_time,
                greeting: Reply::new(220, None, ""),
                tls: None,
            },
            transcript,
            auth_user: None,
            mail_from: None,
            needs_reset: false,
            broken: false,
        };
        if settings.security == Security::Tls {
            client
                .handshake(tls_config.clone().expect("TLS config"))
                .await?;
        }
        let greeting = client.read_reply(Stage::Greeting).await?;
        if greeting.code != 220 {
            return Err(client.rejected(Stage::Greeting, greeting, None, None));
        }
        client.info.greeting = greeting;
        client.ehlo().await?;
        if settings.security == Security::Starttls {
            if !client.capabilities.starttls() {
                return Err(SmtpError::StarttlsNotOffered { host: host.into() });
            }
            client.write_line("STARTTLS", Stage::Starttls).await?;
            let reply = client.read_reply(Stage::Starttls).await?;
            if reply.code != 220 {
                return Err(client.rejected(Stage::Starttls, reply, None, None));
            }
            if !client.rbuf.is_empty() {
                // Bytes that arrived before the handshake could have been injected by an attacker.
                return Err(SmtpError::Protocol {
                    host: host.into(),
                    stage: Stage::Starttls,
                    detail:
                        "the server sent data after its STARTTLS reply, before the TLS handshake"
                            .into(),
                });
            }
            client.handshake(tls_config.expect("TLS config")).await?;
            client.ehlo().await?;
        }
        Ok(client)
    }

    async fn handshake(&mut self, config: Arc<rustls::ClientConfig>) -> Result<(), SmtpError> {
        let host = self.settings.host.clone();
        let name = ServerName::try_from(
            host.trim_start_matches('[')
                .trim_end_matches(']')
                .to_string(),
        )
        .map_err(|e| SmtpError::tls(&host, format!("{host:?} is not a valid server name: {e}")))?;
        let Stream::Plain(tcp) = std::mem::replace(&mut self.stream, Stream::Closed) else {
            return Err(SmtpError::Protocol {
                host,
                stage: Stage::TlsHandshake,
                detail: "TLS requested twice".into(),
            });
        };
        let connector = tokio_rustls::TlsConnector::from(config);
        let tls = match timeout(self.settings.connect_timeout, connector.connect(name, tcp)).await {
            Err(_) => {
                self.broken = true;
                return Err(SmtpError::Timeout {
                    host,
                    stage: Stage::TlsHandshake,
                    after: self.settings.connect_timeout,
                });
            }
            Ok(Err(e)) => {
                self.broken = true;
                let rustls_error = e
                    .get_ref()
                    .and_then(|i| i.downcast_ref::<rustls::Error>())
                    .map(|r| r.to_string());
                return Err(match rustls_error {
                    Some(message) => SmtpError::tls(&host, message),
                    None => SmtpError::Io {
                        host,
                        stage: Stage::TlsHandshake,
                        error: e,
                    },
                });
            }
            Ok(Ok(s)) => s,
        };
        let info = tls::describe(tls.get_ref().1);
        self.transcript.note(format!(
            "TLS established: {} {}, certificate {}",
            info.version,
            info.cipher,
            info.subject.as_deref().unwrap_or("(no subject)")
        ));
        self.info.tls = Some(info);
        self.stream = Stream::Tls(Box::new(tls));
        Ok(())
    }

    async fn ehlo(&mut self) -> Result<(), SmtpError> {
        let line = format!("EHLO {}", self.settings.helo_name);
        self.write_line(&line, Stage::Ehlo).await?;
        let reply = self.read_reply(Stage::Ehlo).await?;
        if reply.code != 250 {
            return Err(self.rejected(Stage::Ehlo, reply, None, None));
        }
        self.capabilities = Capabilities::from_reply(&reply);
        Ok(())
    }

    /// The settings this session was opened with.
    pub fn settings(&self) -> &SmtpSettings {
        &self.settings
    }

    /// What the server offered after the last EHLO (after TLS).
    pub fn capabilities(&self) -> &Capabilities {
        &self.capabilities
    }

    /// How the session was set up.
    pub fn info(&self) -> &SessionInfo {
        &self.info
    }

    /// The session transcript (shared: later lines appear in it too).
    pub fn transcript(&self) -> &Transcript {
        &self.transcript
    }

    /// The user this session authenticated as.
    pub fn authenticated_as(&self) -> Option<&str> {
        self.auth_user.as_deref()
    }

    /// Whether the connection can still be used: no I/O error, timeout or closing reply so far.
    pub fn is_usable(&self) -> bool {
        !self.broken && !matches!(self.stream, Stream::Closed)
    }

    /// Authenticates as `user` with an OAuth2 access token, using the settings' mechanism.
    ///
    /// When the server answers with a 334 error challenge (Gmail, OAUTHBEARER servers) the client
    /// answers as the mechanism requires and the error carries the decoded challenge with the
    /// final reply.
    pub async fn authenticate(&mut self, user: &str, token: &Secret) -> Result<Reply, SmtpError> {
        let mechanism = self.settings.auth;
        if !self.capabilities.offers(mechanism) {
            let offered = self.capabilities.auth.clone();
            return Err(SmtpError::MechanismNotOffered {
                host: self.settings.host.clone(),
                wanted: mechanism,
                diagnosis: Box::new(mechanism_not_offered(
                    &self.settings.host,
                    mechanism,
                    &offered,
                )),
                offered,
            });
        }
        self.auth_user = Some(user.to_string());
        let initial = sasl::initial_response(
            mechanism,
            user,
            &self.settings.host,
            self.settings.port,
            token,
        );
        let command = Secret::new(format!(
            "AUTH {} {}",
            sasl::mechanism_name(mechanism),
            initial.expose()
        ));
        self.write_line(command.expose(), Stage::Auth).await?;
        let reply = self.read_reply(Stage::Auth).await?;
        match reply.code {
            235 => Ok(reply),
            334 => {
                let challenge = OAuthChallenge::decode(&reply.text());
                if let Some(c) = &challenge {
                    self.transcript
                        .note(format!("(challenge decoded: {})", c.raw.trim()));
                }
                self.write_line(sasl::challenge_answer(mechanism), Stage::Auth)
                    .await?;
                let last = self.read_reply(Stage::Auth).await?;
                if last.code == 235 {
                    return Ok(last);
                }
                let challenge = challenge.or_else(|| {
                    Some(OAuthChallenge {
                        raw: reply.text(),
                        status: None,
                        schemes: None,
                        scope: None,
                        openid_configuration: None,
                    })
                });
                Err(self.rejected(Stage::Auth, last, challenge, None))
            }
            _ => Err(self.rejected(Stage::Auth, reply, None, None)),
        }
    }

    /// Sends one message. Recipients are tried one by one: the message goes to those accepted,
    /// and the outcome lists those refused with their reply and diagnosis. Fails when the
    /// server refuses the sender, every recipient, or the message itself.
    ///
    /// The message is dot-stuffed here and its line endings normalised to CRLF; pass it as built.
    pub async fn send(
        &mut self,
        envelope: &Envelope,
        message: &[u8],
    ) -> Result<SendOutcome, SmtpError> {
        let host = self.settings.host.clone();
        if envelope.rcpt_to.is_empty() {
            return Err(SmtpError::NoRecipients);
        }
        if !envelope.mail_from.is_empty() {
            check_address(&envelope.mail_from)?;
        }
        for r in &envelope.rcpt_to {
            check_address(r)?;
        }
        let data = dot_stuff(message);
        if let Some(limit) = self.capabilities.size {
            if data.len() > limit {
                return Err(SmtpError::MessageTooBig {
                    host,
                    size: data.len(),
                    limit,
                });
            }
        }
        let non_ascii_address = std::iter::once(&envelope.mail_from)
            .chain(&envelope.rcpt_to)
            .find(|a| !a.is_ascii());
        if let Some(a) = non_ascii_address {
            if !self.capabilities.smtputf8() {
                return Err(SmtpError::Utf8NotOffered {
                    host,
                    address: a.clone(),
                });
            }
        }
        let eight_bit = !message.is_ascii();
        let mut params = String::new();
        if self.capabilities.size_extension() {
            params.push_str(&format!(" SIZE={}", data.len()));
        }
        if eight_bit && self.capabilities.eight_bit_mime() {
            params.push_str(" BODY=8BITMIME");
        }
        if (non_ascii_address.is_some() || (eight_bit && headers_have_utf8(message)))
            && self.capabilities.smtputf8()
        {
            params.push_str(" SMTPUTF8");
        }

        let mut commands: Vec<(Stage, String)> = Vec::with_capacity(envelope.rcpt_to.len() + 2);
        if self.needs_reset {
            commands.push((Stage::Rset, "RSET".into()));
        }
        commands.push((
            Stage::MailFrom,
            format!("MAIL FROM:<{}>{params}", envelope.mail_from),
        ));
        for r in &envelope.rcpt_to {
            commands.push((Stage::RcptTo, format!("RCPT TO:<{r}>")));
        }
        // Send As applies to the From header as well as MAIL FROM; name the one that differs
        // from the login when explaining a refusal.
        let header_from = crate::message::header_from(message);
        self.mail_from = match (header_from, self.auth_user.as_deref()) {
            (Some(h), Some(user)) if !h.eq_ignore_ascii_case(user) => Some(h),
            _ => Some(envelope.mail_from.clone()),
        };

        let mut replies: Vec<Reply> = Vec::with_capacity(commands.len());
        if self.capabilities.pipelining() {
            for chunk in commands.chunks(PIPELINE_CHUNK) {
                let mut batch = String::new();
                for (_, line) in chunk {
                    self.transcript.client(line);
                    batch.push_str(line);
                    batch.push_str("\r\n");
                }
                self.write_raw(batch.as_bytes(), chunk[0].0).await?;
                for (stage, _) in chunk {
                    if *stage == Stage::MailFrom {
                        self.needs_reset = true;
                    }
                    replies.push(self.read_reply(*stage).await?);
                }
            }
        } else {
            for (stage, line) in &commands {
                self.write_line(line, *stage).await?;
                if *stage == Stage::MailFrom {
                    self.needs_reset = true;
                }
                let reply = self.read_reply(*stage).await?;
                let stop = !reply.is_positive() && *stage != Stage::RcptTo;
                replies.push(reply);
                if stop {
                    break;
                }
            }
        }

        let mut replies = replies.into_iter();
        for (stage, _) in &commands {
            if *stage == Stage::RcptTo {
                break;
            }
            let reply = replies.next().expect("a reply per command sent");
            if *stage == Stage::Rset && reply.is_positive() {
                // needs_reset stays set: the MAIL FROM that followed starts a new transaction.
                continue;
            }
            if !reply.is_positive() {
                return Err(self.rejected(*stage, reply, None, None));
            }
        }
        let mut accepted = Vec::new();
        let mut refused = Vec::new();
        for (address, reply) in envelope.rcpt_to.iter().zip(replies) {
            if reply.is_positive() {
                accepted.push(address.clone());
            } else {
                let ctx = self.context(Stage::RcptTo, Some(address), None);
                let diagnosis = diagnose_reply(&reply, &ctx);
                refused.push(RecipientFailure {
                    address: address.clone(),
                    reply,
                    diagnosis,
                });
            }
        }
        if accepted.is_empty() {
            return Err(SmtpError::AllRecipientsRefused { host, refused });
        }

        self.write_line("DATA", Stage::Data).await?;
        let reply = self.read_reply(Stage::Data).await?;
        if reply.code != 354 {
            return Err(self.rejected(Stage::Data, reply, None, None));
        }
        self.transcript.note(format!(
            "[message: {} bytes, {} lines]",
            data.len(),
            data.split(|b| *b == b'\n').count().saturating_sub(1)
        ));
        self.write_raw(&data, Stage::Message).await?;
        self.transcript.client(".");
        self.write_raw(b".\r\n", Stage::Message).await?;
        let reply = self.read_reply(Stage::Message).await?;
        if !reply.is_positive() {
            return Err(self.rejected(Stage::Message, reply, None, None));
        }
        Ok(SendOutcome {
            accepted,
            refused,
            queue_id: queue_id(&reply),
            reply,
        })
    }

    /// `NOOP`: checks that the session is alive.
    pub async fn noop(&mut self) -> Result<Reply, SmtpError> {
        self.write_line("NOOP", Stage::Rset).await?;
        let reply = self.read_reply(Stage::Rset).await?;
        if reply.is_positive() {
            Ok(reply)
        } else {
            Err(self.rejected(Stage::Rset, reply, None, None))
        }
    }

    /// Ends the session politely (`QUIT`) and closes the connection.
    pub async fn quit(mut self) {
        if self.is_usable() && self.write_line("QUIT", Stage::Quit).await.is_ok() {
            let _ = self.read_reply(Stage::Quit).await;
        }
        self.stream.shutdown().await;
    }

    fn context<'a>(
        &'a self,
        stage: Stage,
        recipient: Option<&'a str>,
        challenge: Option<&'a OAuthChallenge>,
    ) -> ReplyContext<'a> {
        ReplyContext {
            stage,
            host: &self.settings.host,
            auth_user: self.auth_user.as_deref(),
            mail_from: self.mail_from.as_deref(),
            recipient,
            mechanism: Some(self.settings.auth),
            challenge,
        }
    }

    fn rejected(
        &mut self,
        stage: Stage,
        reply: Reply,
        challenge: Option<OAuthChallenge>,
        recipient: Option<&str>,
    ) -> SmtpError {
        if reply.code == 421 {
            // 421: the server is closing the connection.
            self.broken = true;
        }
        let diagnosis = diagnose_reply(&reply, &self.context(stage, recipient, challenge.as_ref()));
        SmtpError::Rejected {
            host: self.settings.host.clone(),
            stage,
            reply,
            challenge: challenge.map(Box::new),
            diagnosis: Box::new(diagnosis),
        }
    }

    async fn write_line(&mut self, line: &str, stage: Stage) -> Result<(), SmtpError> {
        self.transcript.client(line);
        let mut buf = Vec::with_capacity(line.len() + 2);
        buf.extend_from_slice(line.as_bytes());
        buf.extend_from_slice(b"\r\n");
        self.write_raw(&buf, stage).await
    }

    async fn write_raw(&mut self, data: &[u8], stage: Stage) -> Result<(), SmtpError> {
        match timeout(self.settings.read_timeout, self.stream.write_all(data)).await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(error)) => {
                self.broken = true;
                Err(SmtpError::Io {
                    host: self.settings.host.clone(),
                    stage,
                    error,
                })
            }
            Err(_) => {
                self.broken = true;
                Err(SmtpError::Timeout {
                    host: self.settings.host.clone(),
                    stage,
                    after: self.settings.read_timeout,
                })
            }
        }
    }

    async fn read_line(&mut self, stage: Stage) -> Result<String, SmtpError> {
        let mut scanned = 0;
        loop {
            if let Some(pos) = self.rbuf[scanned..].iter().position(|b| *b == b'\n') {
                let end = scanned + pos + 1;
                let line = String::from_utf8_lossy(&self.rbuf[..end]).into_owned();
                self.rbuf.drain(..end);
                return Ok(line);
            }
            scanned = self.rbuf.len();
            if self.rbuf.len() > MAX_LINE {
                self.broken = true;
                return Err(SmtpError::Protocol {
                    host: self.settings.host.clone(),
                    stage,
                    detail: format!("a reply line longer than {MAX_LINE} bytes"),
                });
            }
            let mut chunk = [0u8; 8192];
            let n = match timeout(self.settings.read_timeout, self.stream.read(&mut chunk)).await {
                Err(_) => {
                    self.broken = true;
                    return Err(SmtpError::Timeout {
                        host: self.settings.host.clone(),
                        stage,
                        after: self.settings.read_timeout,
                    });
                }
                Ok(Err(error)) => {
                    self.broken = true;
                    return Err(SmtpError::Io {
                        host: self.settings.host.clone(),
                        stage,
                        error,
                    });
                }
                Ok(Ok(n)) => n,
            };
            if n == 0 {
                self.broken = true;
                return Err(SmtpError::Io {
                    host: self.settings.host.clone(),
                    stage,
                    error: io::Error::new(
                        io::ErrorKind::UnexpectedEof,
                        "the server closed the connection",
                    ),
                });
            }
            self.rbuf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn read_reply(&mut self, stage: Stage) -> Result<Reply, SmtpError> {
        let mut parser = ReplyParser::default();
        loop {
            let line = self.read_line(stage).await?;
            self.transcript.server(&line);
            match parser.push_line(&line) {
                Ok(Some(reply)) => return Ok(reply),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(SmtpError::Protocol {
                        host: self.settings.host.clone(),
                        stage,
                        detail: e.to_string(),
                    });
                }
            }
        }
    }
}

async fn connect_tcp(host: &str, port: u16) -> io::Result<TcpStream> {
    let host = host.trim_start_matches('[').trim_end_matches(']');
    let mut last = None;
    for addr in tokio::net::lookup_host((host, port)).await? {
        match TcpStream::connect(addr).await {
            Ok(s) => return Ok(s),
            Err(e) => last = Some(e),
        }
    }
    Err(last.unwrap_or_else(|| {
        io::Error::new(io::ErrorKind::NotFound, format!("{host} has no address"))
    }))
}

/// Refuses addresses that would break the command line or smuggle another command.
fn check_address(address: &str) -> Result<(), SmtpError> {
    let bad = |reason| {
        Err(SmtpError::InvalidAddress {
            address: address.into(),
            reason,
        })
    };
    if address.is_empty() {
        return bad("it is empty");
    }
    if address.len() > 320 {
        return bad("it is longer than 320 characters");
    }
    if address.chars().any(|c| c.is_control()) {
        return bad("it contains a control character (CR, LF...)");
    }
    if address.contains(['<', '>']) || address.chars().any(char::is_whitespace) {
        return bad(
            "it contains spaces or angle brackets; give the bare address (user@example.com)",
        );
    }
    if !address.contains('@') {
        return bad("it has no @domain");
    }
    Ok(())
}

/// Whether the header section of a message holds raw (unencoded) UTF-8.
fn headers_have_utf8(message: &[u8]) -> bool {
    let end = message
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .or_else(|| message.windows(2).position(|w| w == b"\n\n"))
        .unwrap_or(message.len());
    !message[..end].is_ascii()
}

/// Normalises line endings to CRLF, doubles a leading `.` on every line (RFC 5321 4.5.2) and
/// makes sure the data ends with CRLF. The final `.` line is not included.
pub fn dot_stuff(message: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(message.len() + message.len() / 50 + 8);
    let mut at_line_start = true;
    let mut i = 0;
    while i < message.len() {
        let b = message[i];
        if at_line_start && b == b'.' {
            out.push(b'.');
        }
        match b {
            b'\r' => {
                out.extend_from_slice(b"\r\n");
                if message.get(i + 1) == Some(&b'\n') {
                    i += 1;
                }
                at_line_start = true;
            }
            b'\n' => {
                out.extend_from_slice(b"\r\n");
                at_line_start = true;
            }
            _ => {
                out.push(b);
                at_line_start = false;
            }
        }
        i += 1;
    }
    if !out.is_empty() && !out.ends_with(b"\r\n") {
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// The server's id for an accepted message: `250 2.0.0 OK <id> [Hostname=...]` (Microsoft),
/// `250 2.0.0 Ok: queued as ID` (Postfix), `250 2.0.0 OK  1720698402 id - gsmtp` (Google).
pub fn queue_id(reply: &Reply) -> Option<String> {
    let text = reply.text();
    if let (Some(a), Some(b)) = (text.find('<'), text.find('>')) {
        if a < b && b > a + 1 {
            return Some(text[a + 1..b].to_string());
        }
    }
    let lower = text.to_ascii_lowercase();
    if let Some(p) = lower.find("queued as ") {
        return text[p + 10..].split_whitespace().next().map(str::to_owned);
    }
    let mut words = text.split_whitespace();
    match words.next() {
        Some(w) if w.eq_ignore_ascii_case("ok") || w.eq_ignore_ascii_case("ok:") => {
            let rest: Vec<&str> = words
                .take_while(|w| !w.starts_with('[') && *w != "-")
                .collect();
            rest.last().map(|s| s.to_string())
        }
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dot_stuffing_and_line_endings() {
        assert_eq!(dot_stuff(b"a\n.b\r\n..c\rd"), b"a\r\n..b\r\n...c\r\nd\r\n");
        assert_eq!(dot_stuff(b".\r\n"), b"..\r\n");
        assert_eq!(dot_stuff(b"x.\r\n.y"), b"x.\r\n..y\r\n");
        assert_eq!(dot_stuff(b""), b"");
    }

    #[test]
    fn queue_ids() {
        let id = |s: &str| queue_id(&Reply::parse(s).unwrap());
        assert_eq!(
            id("250 2.0.0 OK <AM0PR02MB1234.eurprd02.prod.outlook.com> [Hostname=AM0PR02MB1234.eurprd02.prod.outlook.com]").as_deref(),
            Some("AM0PR02MB1234.eurprd02.prod.outlook.com")
        );
        assert_eq!(
            id("250 2.0.0 Ok: queued as 4F3B2C1A").as_deref(),
            Some("4F3B2C1A")
        );
        assert_eq!(
            id("250 2.0.0 OK  1720698402 d9443c01a7336-1fb - gsmtp").as_deref(),
            Some("d9443c01a7336-1fb")
        );
        assert_eq!(id("250 Accepted"), None);
    }

    #[test]
    fn capabilities_of_the_microsoft_session() {
        let reply = Reply::parse(
            "250-AM0PR02CA0134.outlook.office365.com Hello [212.52.200.46]\r\n250-SIZE 157286400\r\n250-PIPELINING\r\n250-DSN\r\n250-ENHANCEDSTATUSCODES\r\n250-AUTH LOGIN XOAUTH2\r\n250-8BITMIME\r\n250-BINARYMIME\r\n250-CHUNKING\r\n250 SMTPUTF8\r\n",
        )
        .unwrap();
        let c = Capabilities::from_reply(&reply);
        assert_eq!(c.server_name, "AM0PR02CA0134.outlook.office365.com");
        assert_eq!(c.size, Some(157286400));
        assert!(c.pipelining() && c.eight_bit_mime() && c.smtputf8() && c.enhanced_status_codes());
        assert!(!c.starttls());
        assert_eq!(c.auth, vec!["LOGIN", "XOAUTH2"]);
        assert!(c.offers(AuthMechanism::Xoauth2));
        assert!(!c.offers(AuthMechanism::Oauthbearer));
    }

    #[test]
    fn addresses_that_could_inject_commands_are_refused() {
        assert!(check_address("a@b.example").is_ok());
        assert!(check_address("a@b\r\nRCPT TO:<x@y>").is_err());
        assert!(check_address("<a@b>").is_err());
        assert!(check_address("nobody").is_err());
        assert!(is_loopback("127.0.0.1") && is_loopback("localhost") && is_loopback("[::1]"));
        assert!(!is_loopback("smtp.office365.com") && !is_loopback("10.0.0.1"));
    }
}
