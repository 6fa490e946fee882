//! One SMTP connection: the command loop, the AUTH exchanges, DATA and BDAT, and the checks
//! Exchange Online makes when a message is submitted.

use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, PoisonError};
use std::time::Duration;

use base64::alphabet;
use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::Engine;
use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use smtp_proto::{MailFrom, RcptTo, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::watch;
use tokio_rustls::server::TlsStream;
use tokio_rustls::TlsAcceptor;

use super::auth::{self, Identity, Verdict};
use super::message::header_facts;
use super::replies::Replies;
use crate::faults::SmtpStep;
use crate::{Event, Mode, State};

/// Longest command line accepted, without its CRLF.
const MAX_COMMAND_LINE: usize = 4096;
/// RFC 4954 §4: an AUTH command and a SASL response may be up to 12288 octets (OAuth tokens
/// are long).
const MAX_AUTH_LINE: usize = 12288;

/// base64 as clients send it: padding optional.
const BASE64: GeneralPurpose = GeneralPurpose::new(
    &alphabet::STANDARD,
    GeneralPurposeConfig::new().with_decode_padding_mode(DecodePaddingMode::Indifferent),
);

/// Why the dialogue stopped before QUIT.
enum Stop {
    Io(io::Error),
    /// The client closed the connection.
    Eof,
    /// Nothing arrived within the idle timeout.
    Timeout,
    /// The simulator is shutting down.
    Shutdown,
}

impl From<io::Error> for Stop {
    fn from(e: io::Error) -> Self {
        Stop::Io(e)
    }
}

/// What the command loop does after a command.
enum Flow {
    Continue,
    Quit,
    StartTls,
}

/// What happens to the connection after [`Session::run`].
enum Next {
    Close,
    StartTls,
}

/// A line read from the client.
enum Line {
    Text(Vec<u8>),
    TooLong,
}

/// A SASL response line.
enum Sasl {
    Response(String),
    Cancelled,
    TooLong,
}

/// Which OAuth SASL mechanism is in use.
#[derive(Clone, Copy)]
enum Bearer {
    XOauth2,
    OAuthBearer,
}

/// Counts an authenticated connection against its mailbox until dropped, panics included.
struct ConnectionGuard {
    state: Arc<State>,
    key: String,
    /// Within the per-mailbox limit; once true it stays true for the connection.
    admitted: bool,
}

impl ConnectionGuard {
    fn new(state: Arc<State>, mailbox: &str) -> ConnectionGuard {
        let key = mailbox.to_ascii_lowercase();
        let count = {
            let mut map = state.smtp_connections.lock().unwrap();
            let n = map.entry(key.clone()).or_insert(0);
            *n += 1;
            *n
        };
        let admitted = count <= state.config.max_connections_per_mailbox;
        ConnectionGuard {
            state,
            key,
            admitted,
        }
    }

    /// Whether this connection may submit: it came within the limit, or enough others have
    /// closed since.
    fn admit(&mut self) -> bool {
        if !self.admitted {
            let open = self
                .state
                .smtp_connections
                .lock()
                .unwrap()
                .get(&self.key)
                .copied()
                .unwrap_or(0);
            self.admitted = open <= self.state.config.max_connections_per_mailbox;
        }
        self.admitted
    }
}

impl Drop for ConnectionGuard {
    fn drop(&mut self) {
        let mut map = self
            .state
            .smtp_connections
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(n) = map.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                map.remove(&self.key);
            }
        }
    }
}

struct Authenticated {
    identity: Identity,
    guard: ConnectionGuard,
}

/// An open mail transaction.
struct Transaction {
    mail_from: String,
    rcpt_to: Vec<String>,
    /// The message so far (BDAT chunks accumulate here).
    body: Vec<u8>,
    /// The message outgrew the size limit; its bytes were discarded.
    oversize: bool,
    /// BDAT was used; DATA may not follow.
    chunked: bool,
}

/// Serves one accepted connection to its end.
pub(super) async fn handle(
    socket: TcpStream,
    peer: SocketAddr,
    state: Arc<State>,
    acceptor: TlsAcceptor,
    implicit_tls: bool,
    stop: watch::Receiver<bool>,
) {
    let mut session = Session::new(state, peer, stop);
    let result: io::Result<()> = async {
        if implicit_tls {
            if let Some(mut tls) = session.handshake(&acceptor, socket).await {
                session.tls = true;
                session.run(&mut tls, true).await?;
            }
            return Ok(());
        }
        let mut socket = socket;
        if let Next::StartTls = session.run(&mut socket, true).await? {
            if let Some(mut tls) = session.handshake(&acceptor, socket).await {
                session.tls = true;
                session.run(&mut tls, false).await?;
            }
        }
        Ok(())
    }
    .await;
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "smtp connection ended with an error");
    }
}

struct Session {
    state: Arc<State>,
    peer: SocketAddr,
    stop: watch::Receiver<bool>,
    replies: Replies,
    inbuf: Vec<u8>,
    tls: bool,
    greeted: bool,
    auth: Option<Authenticated>,
    txn: Option<Transaction>,
}

impl Session {
    fn new(state: Arc<State>, peer: SocketAddr, stop: watch::Receiver<bool>) -> Session {
        let replies = Replies::new(state.config.mode, &state.config.hostname);
        Session {
            state,
            peer,
            stop,
            replies,
            inbuf: Vec::with_capacity(8192),
            tls: false,
            greeted: false,
            auth: None,
            txn: None,
        }
    }

    /// The reply [`crate::Faults::smtp_forced_reply`] sets for `step`, if any.
    fn forced(&self, step: SmtpStep, recipient: Option<&str>) -> Option<String> {
        self.state.faults().forced_reply(step, recipient)
    }

    fn gmail(&self) -> bool {
        self.state.config.mode == Mode::Gmail
    }

    fn idle(&self) -> Duration {
        Duration::from_secs(self.state.config.smtp_idle_timeout_secs.max(1))
    }

    async fn handshake(
        &self,
        acceptor: &TlsAcceptor,
        socket: TcpStream,
    ) -> Option<TlsStream<TcpStream>> {
        match tokio::time::timeout(self.idle(), acceptor.accept(socket)).await {
            Ok(Ok(tls)) => Some(tls),
            Ok(Err(e)) => {
                tracing::debug!(peer = %self.peer, error = %e, "smtp TLS handshake failed");
                None
            }
            Err(_) => None,
        }
    }

    /// Runs the dialogue on `io` until QUIT, STARTTLS, the client leaving, a timeout or shutdown.
    async fn run<S>(&mut self, io: &mut S, greet: bool) -> io::Result<Next>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let end = match self.dialogue(io, greet).await {
            Ok(Flow::StartTls) => return Ok(Next::StartTls),
            Ok(_) => None,
            Err(Stop::Timeout) => Some(self.replies.timeout()),
            Err(Stop::Shutdown) => Some(self.replies.shutting_down()),
            Err(Stop::Eof) => None,
            Err(Stop::Io(e)) => return Err(e),
        };
        if let Some(reply) = end {
            let _ = self.send(io, &reply).await;
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), io.shutdown()).await;
        Ok(Next::Close)
    }

    async fn dialogue<S>(&mut self, io: &mut S, greet: bool) -> Result<Flow, Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if greet {
            let banner = self.replies.banner();
            self.send(io, &banner).await?;
        }
        loop {
            let line = match self.read_line(io, MAX_AUTH_LINE).await? {
                Line::Text(l) => l,
                Line::TooLong => {
                    let r = self.replies.line_too_long();
                    self.send(io, &r).await?;
                    continue;
                }
            };
            let is_auth = line.len() >= 5 && line[..5].eq_ignore_ascii_case(b"AUTH ");
            if !is_auth && trim_crlf(&line).len() > MAX_COMMAND_LINE {
                let r = self.replies.line_too_long();
                self.send(io, &r).await?;
                continue;
            }
            match self.command(io, &line).await? {
                Flow::Continue => {}
                other => return Ok(other),
            }
        }
    }

    async fn command<S>(&mut self, io: &mut S, line: &[u8]) -> Result<Flow, Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let request = match Request::parse(&mut line.iter()) {
            Ok(r) => r.into_owned(),
            Err(e) => {
                let r = match e {
                    smtp_proto::Error::UnknownCommand => self.replies.unrecognized(),
                    smtp_proto::Error::InvalidSenderAddress => self.replies.invalid_address(false),
                    smtp_proto::Error::InvalidRecipientAddress => {
                        self.replies.invalid_address(true)
                    }
                    smtp_proto::Error::UnsupportedParameter { .. } => {
                        self.replies.unsupported_parameter()
                    }
                    _ => self.replies.syntax_error(),
                };
                self.send(io, &r).await?;
                return Ok(Flow::Continue);
            }
        };
        let reply = match request {
            Request::Ehlo { .. } => {
                self.greeted = true;
                self.txn = None;
                match self.forced(SmtpStep::Ehlo, None).filter(|_| self.tls) {
                    Some(r) if r.starts_with("421") => {
                        self.send(io, &r).await?;
                        return Ok(Flow::Quit);
                    }
                    Some(r) => r,
                    None => self.replies.ehlo(self.peer.ip(), self.tls),
                }
            }
            Request::Helo { .. } => {
                self.greeted = true;
                self.txn = None;
                self.replies.helo(self.peer.ip())
            }
            Request::StartTls => {
                if self.tls {
                    self.replies.tls_already_active()
                } else {
                    let r = self.replies.starttls_ready();
                    self.send(io, &r).await?;
                    // RFC 3207: anything pipelined after STARTTLS is discarded, and the
                    // session starts over.
                    self.inbuf.clear();
                    self.greeted = false;
                    self.txn = None;
                    return Ok(Flow::StartTls);
                }
            }
            Request::Auth {
                mechanism,
                initial_response,
            } => {
                let name = String::from_utf8_lossy(line)
                    .split_whitespace()
                    .nth(1)
                    .unwrap_or_default()
                    .to_ascii_uppercase();
                self.auth(io, &name, mechanism, initial_response).await?;
                return Ok(Flow::Continue);
            }
            Request::Mail { from } => self.mail(from),
            Request::Rcpt { to } => self.rcpt(to),
            Request::Data => {
                self.data(io).await?;
                return Ok(Flow::Continue);
            }
            Request::Bdat {
                chunk_size,
                is_last,
            } => {
                self.bdat(io, chunk_size, is_last).await?;
                return Ok(Flow::Continue);
            }
            Request::Rset => {
                self.txn = None;
                self.replies.reset()
            }
            Request::Noop { .. } => self.replies.noop(),
            Request::Quit => {
                let r = self.replies.quit();
                self.send(io, &r).await?;
                return Ok(Flow::Quit);
            }
            _ => self.replies.unrecognized(),
        };
        self.send(io, &reply).await?;
        Ok(Flow::Continue)
    }

    // ---- AUTH ----

    async fn auth<S>(
        &mut self,
        io: &mut S,
        name: &str,
        mechanism: u64,
        initial: String,
    ) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let refusal = if !self.greeted {
            Some(self.replies.send_hello_first())
        } else if !self.tls {
            Some(self.replies.auth_needs_tls())
        } else if self.auth.is_some() {
            Some(self.replies.already_authenticated())
        } else {
            None
        };
        if let Some(r) = refusal.or_else(|| self.forced(SmtpStep::Auth, None)) {
            return self.auth_done(io, name, None, r).await;
        }
        // RFC 4954: "=" is an empty initial response; no argument means "ask for it".
        let initial = match initial.as_str() {
            "" => None,
            "=" => Some(String::new()),
            _ => Some(initial),
        };
        let gmail = self.gmail();
        match mechanism {
            smtp_proto::AUTH_XOAUTH2 => self.auth_bearer(io, name, initial, Bearer::XOauth2).await,
            smtp_proto::AUTH_OAUTHBEARER if gmail => {
                self.auth_bearer(io, name, initial, Bearer::OAuthBearer)
                    .await
            }
            smtp_proto::AUTH_LOGIN => self.auth_login(io, name, initial).await,
            smtp_proto::AUTH_PLAIN if gmail => self.auth_plain(io, name, initial).await,
            _ => {
                let r = self.replies.mechanism_unsupported();
                self.auth_done(io, name, None, r).await
            }
        }
    }

    /// Sends the final reply of an AUTH exchange and logs it.
    async fn auth_done<S>(
        &mut self,
        io: &mut S,
        mechanism: &str,
        user: Option<String>,
        reply: String,
    ) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        self.send(io, &reply).await?;
        self.state.log(Event::SmtpAuth {
            mechanism: mechanism.to_string(),
            user,
            tls: self.tls,
            reply,
        });
        Ok(())
    }

    /// The initial response, or the answer to a `334 {challenge}`. `Err(reply)` when the
    /// exchange ends here.
    async fn sasl_step<S>(
        &mut self,
        io: &mut S,
        initial: Option<String>,
        challenge: &str,
    ) -> Result<Result<String, String>, Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        if let Some(i) = initial {
            return Ok(Ok(i));
        }
        self.send(io, &format!("334 {challenge}")).await?;
        Ok(match self.read_sasl(io).await? {
            Sasl::Response(r) => Ok(r),
            Sasl::Cancelled => Err(self.replies.auth_cancelled()),
            Sasl::TooLong => Err(self.replies.cannot_decode()),
        })
    }

    async fn auth_bearer<S>(
        &mut self,
        io: &mut S,
        name: &str,
        initial: Option<String>,
        kind: Bearer,
    ) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let encoded = match self.sasl_step(io, initial, "").await? {
            Ok(e) => e,
            Err(reply) => return self.auth_done(io, name, None, reply).await,
        };
        let Ok(payload) = BASE64.decode(encoded.trim()) else {
            let r = self.replies.cannot_decode();
            return self.auth_done(io, name, None, r).await;
        };
        let login = match kind {
            Bearer::XOauth2 => auth::parse_xoauth2(&payload),
            Bearer::OAuthBearer => auth::parse_oauthbearer(&payload),
        };
        let (user, verdict) = match login {
            Ok(login) => (login.user.clone(), auth::verify(&self.state, &login)),
            Err(e) => {
                tracing::debug!(peer = %self.peer, error = %e, "malformed SASL payload");
                (None, Verdict::Rejected("malformed payload"))
            }
        };
        let reply = match verdict {
            Verdict::Accepted(identity) => {
                let guard = ConnectionGuard::new(self.state.clone(), &identity.mailbox);
                self.auth = Some(Authenticated { identity, guard });
                self.replies.auth_success()
            }
            Verdict::Rejected(why) => {
                tracing::debug!(peer = %self.peer, ?user, why, "smtp token rejected");
                if self.gmail() {
                    // Gmail answers with an error challenge; the client must reply (an empty
                    // line, or ^A for OAUTHBEARER) before it gets the 535.
                    let challenge = self.replies.gmail_challenge();
                    self.send(io, &challenge).await?;
                    let _ = self.read_sasl(io).await?;
                    self.replies.gmail_bad_credentials()
                } else {
                    self.replies.auth_rejected()
                }
            }
            Verdict::DisabledForTenant => self.replies.smtp_auth_disabled(true),
            Verdict::DisabledForMailbox => self.replies.smtp_auth_disabled(false),
        };
        self.auth_done(io, name, user, reply).await
    }

    /// AUTH LOGIN: both prompts are answered, then basic authentication is refused (Microsoft
    /// has turned it off; the simulator knows no passwords in Gmail mode either).
    async fn auth_login<S>(
        &mut self,
        io: &mut S,
        name: &str,
        initial: Option<String>,
    ) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let username = match self.sasl_step(io, initial, "VXNlcm5hbWU6").await? {
            Ok(u) => u,
            Err(reply) => return self.auth_done(io, name, None, reply).await,
        };
        let user = BASE64
            .decode(username.trim())
            .ok()
            .map(|u| String::from_utf8_lossy(&u).into_owned());
        if let Err(reply) = self.sasl_step(io, None, "UGFzc3dvcmQ6").await? {
            return self.auth_done(io, name, user, reply).await;
        }
        let reply = if self.gmail() {
            self.replies.gmail_bad_credentials()
        } else {
            self.replies.basic_auth_disabled()
        };
        self.auth_done(io, name, user, reply).await
    }

    /// AUTH PLAIN (Gmail only): read, then refused like LOGIN.
    async fn auth_plain<S>(
        &mut self,
        io: &mut S,
        name: &str,
        initial: Option<String>,
    ) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let encoded = match self.sasl_step(io, initial, "").await? {
            Ok(e) => e,
            Err(reply) => return self.auth_done(io, name, None, reply).await,
        };
        let user = BASE64.decode(encoded.trim()).ok().and_then(|p| {
            p.split(|&b| b == 0)
                .nth(1)
                .map(|u| String::from_utf8_lossy(u).into_owned())
        });
        let r = self.replies.gmail_bad_credentials();
        self.auth_done(io, name, user, r).await
    }

    // ---- the mail transaction ----

    fn log_transaction(
        &self,
        mail_from: &str,
        rcpt_to: &[String],
        reply: &str,
        id: Option<String>,
    ) {
        self.state.log(Event::SmtpTransaction {
            auth_user: self.auth.as_ref().map(|a| a.identity.mailbox.clone()),
            mail_from: mail_from.to_string(),
            rcpt_to: rcpt_to.to_vec(),
            reply: reply.to_string(),
            message_id: id,
        });
    }

    fn mail(&mut self, from: MailFrom<String>) -> String {
        if !self.greeted {
            return self.replies.send_hello_first();
        }
        let refusal = match self.auth.as_mut().map(|a| a.guard.admit()) {
            None => Some(self.replies.not_authenticated()),
            Some(_) if self.txn.is_some() => return self.replies.sender_already_specified(),
            Some(false) => Some(self.replies.thread_limit()),
            Some(true) if from.size > self.state.config.max_message_size => {
                Some(self.replies.size_exceeded())
            }
            Some(true) => self.forced(SmtpStep::MailFrom, None),
        };
        if let Some(r) = refusal {
            self.log_transaction(&from.address, &[], &r, None);
            return r;
        }
        self.txn = Some(Transaction {
            mail_from: from.address,
            rcpt_to: Vec::new(),
            body: Vec::new(),
            oversize: false,
            chunked: false,
        });
        self.replies.sender_ok()
    }

    fn rcpt(&mut self, to: RcptTo<String>) -> String {
        let max = self.state.config.max_recipients_per_message;
        let Some(txn) = self.txn.as_mut() else {
            return self.replies.need_mail();
        };
        let forced = self
            .state
            .faults()
            .forced_reply(SmtpStep::RcptTo, Some(&to.address));
        if txn.rcpt_to.len() >= max || forced.is_some() {
            let r = forced.unwrap_or_else(|| self.replies.too_many_recipients());
            let (from, rcpts) = (txn.mail_from.clone(), txn.rcpt_to.clone());
            self.log_transaction(&from, &rcpts, &r, None);
            return r;
        }
        txn.rcpt_to.push(to.address);
        self.replies.recipient_ok()
    }

    /// `Some(reply)` when the transaction cannot take message data now.
    fn data_refusal(&self) -> Option<String> {
        match &self.txn {
            None => Some(self.replies.need_mail()),
            Some(t) if t.rcpt_to.is_empty() => Some(self.replies.need_rcpt()),
            _ => None,
        }
    }

    async fn data<S>(&mut self, io: &mut S) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let refusal = self.data_refusal().or_else(|| {
            self.txn
                .as_ref()
                .is_some_and(|t| t.chunked)
                .then(|| self.replies.need_mail())
        });
        if let Some(r) = refusal {
            return self.send(io, &r).await;
        }
        let start = self.replies.start_data();
        self.send(io, &start).await?;

        let max = self.state.config.max_message_size;
        let mut rx = DataReceiver::new();
        // The receiver only sees "\r\n." as the end; prime it with the CRLF of the DATA line
        // so that a message that is just ".\r\n", or starts with a stuffed dot, is read right.
        rx.ingest(&mut b"\r\n".iter(), &mut Vec::new());
        let mut body = Vec::new();
        let mut discard: Option<DummyDataReceiver> = None;
        loop {
            let mut input = self.inbuf.iter();
            let done = match discard.as_mut() {
                Some(d) => d.ingest(&mut input),
                None => rx.ingest(&mut input, &mut body),
            };
            let consumed = self.inbuf.len() - input.as_slice().len();
            self.inbuf.drain(..consumed);
            if discard.is_none() && body.len() > max {
                discard = Some(DummyDataReceiver::new_data(&rx));
                body = Vec::new();
            }
            if done {
                break;
            }
            self.fill(io).await?;
        }
        let Some(mut txn) = self.txn.take() else {
            return Ok(());
        };
        txn.oversize = discard.is_some();
        txn.body = body;
        self.finish_message(io, txn).await
    }

    async fn bdat<S>(&mut self, io: &mut S, size: usize, last: bool) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        // The chunk follows the command whatever the state: take it off the wire first.
        let refusal = self.data_refusal();
        let max = self.state.config.max_message_size;
        let keep = match (&refusal, &self.txn) {
            (None, Some(t)) => !t.oversize && t.body.len().saturating_add(size) <= max,
            _ => false,
        };
        let mut chunk = Vec::new();
        if keep {
            let mut rx = BdatReceiver::new(size, last);
            while !self.take_from_inbuf(|input| rx.ingest(input, &mut chunk)) {
                self.fill(io).await?;
            }
        } else {
            let mut rx = DummyDataReceiver::new_bdat(size);
            while size > 0 && !self.take_from_inbuf(|input| rx.ingest(input)) {
                self.fill(io).await?;
            }
        }
        if let Some(r) = refusal {
            return self.send(io, &r).await;
        }
        let Some(txn) = self.txn.as_mut() else {
            return Ok(());
        };
        txn.chunked = true;
        if keep {
            txn.body.extend_from_slice(&chunk);
        } else {
            txn.oversize = true;
            txn.body = Vec::new();
        }
        if !last {
            let r = self.replies.chunk_received(size);
            return self.send(io, &r).await;
        }
        let Some(txn) = self.txn.take() else {
            return Ok(());
        };
        self.finish_message(io, txn).await
    }

    /// Runs a receiver over the buffered input and drops what it consumed; true when done.
    fn take_from_inbuf(
        &mut self,
        ingest: impl FnOnce(&mut std::slice::Iter<'_, u8>) -> bool,
    ) -> bool {
        let mut input = self.inbuf.iter();
        let done = ingest(&mut input);
        let consumed = self.inbuf.len() - input.as_slice().len();
        self.inbuf.drain(..consumed);
        done
    }

    async fn finish_message<S>(&mut self, io: &mut S, txn: Transaction) -> Result<(), Stop>
    where
        S: AsyncRead + AsyncWrite + Unpin,
    {
        let (reply, id) = self.submit(&txn);
        self.send(io, &reply).await?;
        self.log_transaction(&txn.mail_from, &txn.rcpt_to, &reply, id);
        Ok(())
    }

    /// The checks Exchange makes once it has the whole message, and the storing.
    fn submit(&self, txn: &Transaction) -> (String, Option<String>) {
        let Some(auth) = &self.auth else {
            return (self.replies.not_authenticated(), None);
        };
        let identity = &auth.identity;
        if let Some(r) = self.forced(SmtpStep::Message, None) {
            return (r, None);
        }
        if txn.oversize {
            return (self.replies.size_exceeded(), None);
        }
        let facts = header_facts(&txn.body);
        // Gmail does not refuse an unverified From; it rewrites it. The simulator stores the
        // message as sent there, and checks Send As only in Microsoft mode.
        if !self.gmail() {
            let dir = self.state.directory.read().unwrap();
            let envelope = Some(txn.mail_from.as_str()).filter(|f| !f.is_empty());
            let denied = envelope
                .into_iter()
                .chain(facts.from.iter().map(String::as_str))
                .find(|from| !dir.may_send_as(&identity.sender, from));
            if let Some(from) = denied {
                return (self.replies.send_as_denied(&identity.mailbox, from), None);
            }
        }
        // Recipients count against the authenticated mailbox for the simulator's lifetime
        // (its "day").
        let key = identity.mailbox.to_ascii_lowercase();
        let n = txn.rcpt_to.len();
        {
            let mut today = self.state.recipients_today.lock().unwrap();
            let used = today.get(&key).copied().unwrap_or(0);
            if self.state.faults().quota_exceeded
                || used + n > self.state.config.daily_recipient_limit
            {
                return (self.replies.quota_exceeded(), None);
            }
            today.insert(key.clone(), used + n);
        }
        let id = if self.gmail() {
            self.replies.new_gmail_message_id()
        } else {
            facts.message_id.unwrap_or_else(|| {
                format!(
                    "{}@{}",
                    crate::tokens::random_string(32).to_ascii_uppercase(),
                    self.state.config.hostname
                )
            })
        };
        match self.state.mailbox.store(
            &id,
            &txn.mail_from,
            &txn.rcpt_to,
            &identity.mailbox,
            txn.body.clone(),
        ) {
            Ok(msg) => (self.replies.queued(&msg.id), Some(msg.id)),
            Err(e) => {
                tracing::warn!(error = %e, dir = %self.state.mailbox.dir().display(),
                    "the simulator cannot store a message");
                if let Some(used) = self.state.recipients_today.lock().unwrap().get_mut(&key) {
                    *used = used.saturating_sub(n);
                }
                (self.replies.local_error(), None)
            }
        }
    }

    // ---- input and output ----

    async fn send<S>(&mut self, io: &mut S, reply: &str) -> Result<(), Stop>
    where
        S: AsyncWrite + Unpin,
    {
        let mut bytes = Vec::with_capacity(reply.len() + 2);
        bytes.extend_from_slice(reply.as_bytes());
        bytes.extend_from_slice(b"\r\n");
        let write = async {
            io.write_all(&bytes).await?;
            io.flush().await
        };
        match tokio::time::timeout(self.idle(), write).await {
            Ok(r) => r.map_err(Stop::Io),
            Err(_) => Err(Stop::Timeout),
        }
    }

    /// Reads more input into the buffer.
    async fn fill<S>(&mut self, io: &mut S) -> Result<(), Stop>
    where
        S: AsyncRead + Unpin,
    {
        if *self.stop.borrow() {
            return Err(Stop::Shutdown);
        }
        let idle = self.idle();
        self.inbuf.reserve(8192);
        tokio::select! {
            read = tokio::time::timeout(idle, io.read_buf(&mut self.inbuf)) => match read {
                Err(_) => Err(Stop::Timeout),
                Ok(Ok(0)) => Err(Stop::Eof),
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(Stop::Io(e)),
            },
            _ = self.stop.changed() => Err(Stop::Shutdown),
        }
    }

    /// The next line (with its line ending), or `TooLong` once an over-long line has been
    /// skipped.
    async fn read_line<S>(&mut self, io: &mut S, limit: usize) -> Result<Line, Stop>
    where
        S: AsyncRead + Unpin,
    {
        let mut skipping = false;
        loop {
            if let Some(pos) = self.inbuf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.inbuf.drain(..=pos).collect();
                if skipping || trim_crlf(&line).len() > limit {
                    return Ok(Line::TooLong);
                }
                return Ok(Line::Text(line));
            }
            if self.inbuf.len() > limit + 2 {
                self.inbuf.clear();
                skipping = true;
            }
            self.fill(io).await?;
        }
    }

    async fn read_sasl<S>(&mut self, io: &mut S) -> Result<Sasl, Stop>
    where
        S: AsyncRead + Unpin,
    {
        Ok(match self.read_line(io, MAX_AUTH_LINE).await? {
            Line::TooLong => Sasl::TooLong,
            Line::Text(l) => {
                let text = String::from_utf8_lossy(trim_crlf(&l)).trim().to_string();
                if text == "*" {
                    Sasl::Cancelled
                } else {
                    Sasl::Response(text)
                }
            }
        })
    }
}

fn trim_crlf(line: &[u8]) -> &[u8] {
    let line = line.strip_suffix(b"\n").unwrap_or(line);
    line.strip_suffix(b"\r").unwrap_or(line)
}
