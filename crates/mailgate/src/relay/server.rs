//! The SMTP server side of the relay: one task per client session.
//!
//! Commands are framed into lines here (at most [`MAX_LINE`] bytes, so that a parse error can
//! never leave the parser in the middle of a line) and parsed with `smtp-proto`'s
//! `Request::parse`; message data goes through its `DataReceiver` (dot-unstuffing, only
//! `CRLF.CRLF` ends a message) and `BdatReceiver`. Replies are buffered and written when no
//! further pipelined command is waiting, so a pipelining client gets its replies in one write.
//!
//! Who may send: a client from `allow_networks` without AUTH, anyone else only after AUTH
//! PLAIN/LOGIN, which is offered over TLS or from loopback only. A client that can do neither is
//! refused at once with 554. Every refusal is answered with a proper reply and logged.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use smtp_proto::request::receiver::{BdatReceiver, DataReceiver, DummyDataReceiver};
use smtp_proto::{Error as ProtoError, Request};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch};
use tokio_rustls::TlsAcceptor;

use super::auth::{decode_line, decode_plain, Credentials, Users};
use super::config::{canonical_ip, RelayConfig};
use super::routing::{rewrite_from_header, Router};
use crate::spool::{Envelope, Spool};
use crate::Secret;

/// The longest command line accepted, CRLF included (RFC 5321 asks for 512; AUTH lines with
/// long initial responses need more).
pub const MAX_LINE: usize = 4096;
/// Errors (unknown commands, bad syntax) a session may make before it is closed.
pub const MAX_ERRORS: u32 = 20;
/// Failed AUTH attempts before the session is closed.
pub const MAX_AUTH_FAILURES: u32 = 3;
/// Bytes read at a time while waiting for commands.
const COMMAND_CHUNK: usize = 1024;
/// Bytes read at a time during DATA and BDAT.
const DATA_CHUNK: usize = 32 * 1024;
/// Sessions write their messages into the spool at most this many at a time. Each write waits
/// for its disk sync on a thread of its own; in `bench/relay.sh` 50 at once accepted no faster
/// than 16 (2 and 4 were slower), only with more threads contending for the spool's directory
/// locks. 16 still share each directory sync.
static SPOOL_WRITERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(16);
/// How long the server waits for a command.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(300);
/// How long the server waits for the next piece of message data.
const DATA_TIMEOUT: Duration = Duration::from_secs(600);

/// A message that was queued, for the delivery side.
#[derive(Clone, Debug)]
pub struct Queued {
    pub id: String,
    pub account: String,
}

/// What every session shares.
pub struct ServerCtx {
    pub cfg: Arc<RelayConfig>,
    pub users: Users,
    pub router: Router,
    pub spool: Arc<Spool>,
    pub queued: mpsc::UnboundedSender<Queued>,
    pub tls: Option<TlsAcceptor>,
    pub shutdown: watch::Receiver<bool>,
}

/// How a session ended.
#[derive(Debug, PartialEq, Eq)]
enum End {
    Quit,
    StartTls,
    Closed,
    Shutdown,
    Dropped,
    /// Waiting for the next command with nothing buffered (plain TCP): the caller waits for
    /// input outside the session's future (see [`wait_for_command`]).
    Idle,
}

/// Waits until a stream has input, without a buffer to read it into.
type PollReady<S> = fn(&S, &mut Context<'_>) -> Poll<io::Result<()>>;

/// Ready when a TCP stream has input (or has ended), without consuming it. `poll_read_ready`
/// will not do: tokio reports a newly accepted socket ready at once, data or not, so every idle
/// session would allocate its read buffer and keep it. A one-byte peek clears that readiness.
fn tcp_input_ready(stream: &TcpStream, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
    let mut byte = [0u8; 1];
    let mut buf = tokio::io::ReadBuf::new(&mut byte);
    stream.poll_peek(cx, &mut buf).map_ok(|_| ())
}

/// Buffered reading and writing over a stream.
struct Io<S> {
    stream: S,
    buf: Vec<u8>,
    pos: usize,
    out: Vec<u8>,
    /// When set (plain TCP), a session waiting for its next command holds no buffers: they are
    /// allocated once input has arrived. Most sessions of a relay are idle most of the time.
    ready: Option<PollReady<S>>,
    /// The stream was seen readable while the session was idle: read, do not yield again.
    input_ready: bool,
}

enum Line {
    /// A full line, LF included.
    Text(Vec<u8>),
    /// A line longer than the limit (discarded up to its LF).
    TooLong,
}

enum ReadEnd {
    /// Nothing buffered and no input yet, with `yield_idle` (see [`End::Idle`]).
    Idle,
    Eof,
    Timeout,
    Shutdown,
    Io(io::Error),
}

impl<S: AsyncRead + AsyncWrite + Unpin> Io<S> {
    fn new(stream: S) -> Io<S> {
        Io {
            stream,
            buf: Vec::new(),
            pos: 0,
            out: Vec::new(),
            ready: None,
            input_ready: false,
        }
    }

    /// An [`Io`] over a stream that can report readiness (see [`Io::ready`]).
    fn with_ready(stream: S, ready: PollReady<S>) -> Io<S> {
        Io {
            ready: Some(ready),
            ..Io::new(stream)
        }
    }

    fn pending(&self) -> &[u8] {
        &self.buf[self.pos..]
    }

    fn reply(&mut self, line: &str) {
        self.out.extend_from_slice(line.as_bytes());
        self.out.extend_from_slice(b"\r\n");
    }

    async fn flush(&mut self) -> io::Result<()> {
        if !self.out.is_empty() {
            self.stream.write_all(&self.out).await?;
            self.stream.flush().await?;
            self.out.clear();
        }
        Ok(())
    }

    /// Reads more input. Flushes pending replies first: the client may be waiting for them.
    /// With `shutdown`, returns [`ReadEnd::Shutdown`] when the relay is stopping.
    /// Reads at most `chunk` more bytes: small reads for commands keep an idle session small,
    /// large ones for message data keep DATA fast. With `yield_idle`, a plain-TCP session with
    /// nothing to read returns [`ReadEnd::Idle`] instead of waiting.
    async fn fill(
        &mut self,
        timeout: Duration,
        shutdown: Option<&mut watch::Receiver<bool>>,
        chunk: usize,
        yield_idle: bool,
    ) -> Result<(), ReadEnd> {
        self.flush().await.map_err(ReadEnd::Io)?;
        if self.pos > 0 {
            self.buf.drain(..self.pos);
            self.pos = 0;
        }
        let wait_first = self.buf.is_empty() && chunk <= COMMAND_CHUNK && self.ready.is_some();
        if wait_first || (self.buf.is_empty() && self.buf.capacity() > chunk) {
            // Give back the buffer (a large DATA one in any case) while the session waits for
            // its next command.
            self.buf = Vec::new();
        }
        if wait_first || self.out.capacity() > 4096 {
            self.out = Vec::new();
        }
        if wait_first && yield_idle && !self.input_ready {
            return Err(ReadEnd::Idle);
        }
        self.input_ready = false;
        let start = self.buf.len();
        let ready = if wait_first { self.ready } else { None };
        let result = {
            let (stream, buf) = (&mut self.stream, &mut self.buf);
            let input = async move {
                if let Some(ready) = ready {
                    std::future::poll_fn(|cx| ready(stream, cx)).await?;
                }
                buf.resize(start + chunk, 0);
                stream.read(&mut buf[start..]).await
            };
            match within(input, timeout, shutdown).await {
                Ok(0) => Err(ReadEnd::Eof),
                other => other,
            }
        };
        match result {
            Ok(n) => {
                self.buf.truncate(start + n);
                Ok(())
            }
            Err(e) => {
                self.buf.truncate(start);
                Err(e)
            }
        }
    }

    /// The next command line. Lines longer than [`MAX_LINE`] are skipped up to their end and
    /// reported as [`Line::TooLong`].
    async fn read_line(
        &mut self,
        mut shutdown: Option<&mut watch::Receiver<bool>>,
        yield_idle: bool,
    ) -> Result<Line, ReadEnd> {
        let mut skipping = false;
        loop {
            let pending = self.pending();
            match pending.iter().position(|&b| b == b'\n') {
                Some(i) if skipping => {
                    self.pos += i + 1;
                    return Ok(Line::TooLong);
                }
                Some(i) if i < MAX_LINE => {
                    let line = pending[..=i].to_vec();
                    self.pos += i + 1;
                    return Ok(Line::Text(line));
                }
                Some(i) => {
                    self.pos += i + 1;
                    return Ok(Line::TooLong);
                }
                None if pending.len() >= MAX_LINE || skipping => {
                    skipping = true;
                    self.pos = self.buf.len();
                }
                None => {}
            }
            self.fill(
                COMMAND_TIMEOUT,
                shutdown.as_deref_mut(),
                COMMAND_CHUNK,
                yield_idle && !skipping,
            )
            .await?;
        }
    }
}

/// Per-session state.
struct Session {
    peer: SocketAddr,
    ip: IpAddr,
    allowed_network: bool,
    loopback: bool,
    tls: bool,
    helo: Option<String>,
    esmtp: bool,
    user: Option<String>,
    tx: Option<Transaction>,
    errors: u32,
    auth_failures: u32,
}

impl Session {
    /// A new session with a client at `peer`.
    fn new(ctx: &ServerCtx, peer: SocketAddr) -> Session {
        let ip = canonical_ip(peer.ip());
        Session {
            peer,
            ip,
            allowed_network: ctx.cfg.allows(ip),
            loopback: ip.is_loopback(),
            tls: false,
            helo: None,
            esmtp: false,
            user: None,
            tx: None,
            errors: 0,
            auth_failures: 0,
        }
    }
}

/// A mail transaction in progress (after MAIL FROM).
struct Transaction {
    sender: String,
    account: String,
    rewrite_from: Option<String>,
    recipients: Vec<String>,
    eight_bit: bool,
    smtputf8: bool,
    /// BDAT chunks so far.
    chunks: Vec<u8>,
    /// A BDAT chunk went over the size limit: the rest is discarded and the message refused.
    chunks_too_big: bool,
}

/// Serves one accepted connection until it ends.
pub async fn handle_connection(
    ctx: Arc<ServerCtx>,
    tcp: TcpStream,
    peer: SocketAddr,
    implicit_tls: bool,
) {
    let _ = tcp.set_nodelay(true);
    let mut session = Session::new(&ctx, peer);
    if !session.allowed_network && ctx.users.is_empty() {
        refuse(ctx.as_ref(), tcp, &session).await;
        return;
    }
    if implicit_tls {
        // TLS sessions are boxed: the state of a plain session, most of them idle, stays small.
        Box::pin(tls_session(ctx, tcp, session, true)).await;
        return;
    }
    let mut io = Io::with_ready(tcp, tcp_input_ready);
    // The session's future is on the heap only while it has input to handle; an idle session
    // is this future, waiting in `wait_for_command`. A relay holds many idle sessions.
    io.reply(&greeting(&ctx));
    let end = loop {
        if let Some(end) = wait_for_command(&ctx, &mut io, &session).await {
            break end;
        }
        let end = Box::pin(serve(&ctx, &mut io, &mut session, false)).await;
        if end != End::Idle {
            break end;
        }
    };
    if end != End::StartTls {
        let _ = io.stream.shutdown().await;
        return;
    }
    // Anything the client sent after STARTTLS in the clear is dropped (CVE-2011-0411).
    let Io { stream, .. } = io;
    // RFC 3207: what the client said before TLS is forgotten, its login included.
    session.helo = None;
    session.esmtp = false;
    session.tx = None;
    session.user = None;
    Box::pin(tls_session(ctx, stream, session, false)).await;
}

/// The TLS handshake on `tcp`, then the session over TLS (`greet`: implicit TLS, where the
/// greeting comes after the handshake).
async fn tls_session(ctx: Arc<ServerCtx>, tcp: TcpStream, mut session: Session, greet: bool) {
    let Some(acceptor) = ctx.tls.clone() else {
        return;
    };
    let peer = session.peer;
    match tokio::time::timeout(Duration::from_secs(30), acceptor.accept(tcp)).await {
        Ok(Ok(stream)) => {
            session.tls = true;
            let mut io = Io::new(stream);
            let _ = serve(&ctx, &mut io, &mut session, greet).await;
            let _ = io.stream.shutdown().await;
        }
        Ok(Err(e)) => tracing::info!(client = %peer, "relay: TLS handshake failed: {e}"),
        Err(_) => tracing::info!(client = %peer, "relay: TLS handshake timed out"),
    }
}

/// Refuses a client that may not send at all (outside `allow_networks`, and no users to log in
/// as) with 554 and a log line.
async fn refuse<S: AsyncRead + AsyncWrite + Unpin>(ctx: &ServerCtx, stream: S, s: &Session) {
    tracing::warn!(
        client = %s.peer,
        "relay: refused a connection from {}: not in [relay] allow_networks, and no \
         [relay.users] are configured to log in with",
        s.ip
    );
    let mut io = Io::new(stream);
    io.reply(&format!(
        "554 5.7.1 {} Access denied: {} may not use this relay",
        ctx.cfg.hostname, s.ip
    ));
    let _ = io.flush().await;
    let _ = io.stream.shutdown().await;
}

/// Awaits `input` for at most `timeout`; with `shutdown`, ends early with
/// [`ReadEnd::Shutdown`] when the relay stops (at once if it already has).
async fn within<T>(
    input: impl std::future::Future<Output = io::Result<T>>,
    timeout: Duration,
    shutdown: Option<&mut watch::Receiver<bool>>,
) -> Result<T, ReadEnd> {
    let bounded = async {
        match tokio::time::timeout(timeout, input).await {
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ReadEnd::Io(e)),
            Err(_) => Err(ReadEnd::Timeout),
        }
    };
    match shutdown {
        Some(rx) if *rx.borrow() => Err(ReadEnd::Shutdown),
        Some(rx) => {
            tokio::select! {
                r = bounded => r,
                _ = rx.wait_for(|stop| *stop) => Err(ReadEnd::Shutdown),
            }
        }
        None => bounded.await,
    }
}

fn greeting(ctx: &ServerCtx) -> String {
    format!("220 {} ESMTP mailgate relay ready", ctx.cfg.hostname)
}

/// Waits, holding nothing but this small future, until an idle plain-TCP session has input,
/// after sending what is pending. `Some(end)` when the session ends instead: a timeout, the
/// relay stopping (between transactions only), or a connection error.
async fn wait_for_command(ctx: &ServerCtx, io: &mut Io<TcpStream>, s: &Session) -> Option<End> {
    if io.flush().await.is_err() {
        return Some(End::Closed);
    }
    io.out = Vec::new();
    let mut shutdown = ctx.shutdown.clone();
    let between_transactions = s.tx.is_none();
    let waited = {
        let stream = &io.stream;
        let input = std::future::poll_fn(|cx| tcp_input_ready(stream, cx));
        within(
            input,
            COMMAND_TIMEOUT,
            between_transactions.then_some(&mut shutdown),
        )
        .await
    };
    match waited {
        Ok(()) => {
            io.input_ready = true;
            None
        }
        Err(e) => Some(Box::pin(end_session(io, s, e)).await),
    }
}

/// Runs the command loop over `io`. Errors on the connection end the session quietly.
async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    greet: bool,
) -> End {
    match serve_inner(ctx, io, s, greet).await {
        Ok(end) => end,
        Err(e) => end_session(io, s, e).await,
    }
}

/// How a session ends when reading stops with `e`: timeouts and shutdowns are told why.
async fn end_session<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    s: &Session,
    e: ReadEnd,
) -> End {
    match e {
        ReadEnd::Idle => End::Idle,
        ReadEnd::Eof => End::Closed,
        ReadEnd::Io(e) => {
            tracing::debug!(client = %s.peer, "relay: connection error: {e}");
            End::Closed
        }
        ReadEnd::Timeout => {
            io.reply("421 4.4.2 Timeout waiting for the client; closing");
            let _ = io.flush().await;
            End::Dropped
        }
        ReadEnd::Shutdown => {
            io.reply("421 4.3.2 Relay shutting down; try again shortly");
            let _ = io.flush().await;
            End::Shutdown
        }
    }
}

fn io_end(e: io::Error) -> ReadEnd {
    ReadEnd::Io(e)
}

async fn serve_inner<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    greet: bool,
) -> Result<End, ReadEnd> {
    let mut shutdown = ctx.shutdown.clone();
    if greet {
        io.reply(&greeting(ctx));
    }
    loop {
        if s.errors >= MAX_ERRORS {
            tracing::warn!(client = %s.peer, "relay: too many errors; closing the session");
            io.reply("421 4.7.0 Too many errors; closing");
            io.flush().await.map_err(io_end)?;
            return Ok(End::Dropped);
        }
        // Between transactions the session may be ended by a shutdown; during one it goes on
        // until the message is queued.
        let idle = s.tx.is_none();
        if idle && *shutdown.borrow() {
            return Err(ReadEnd::Shutdown);
        }
        // The command is handled in a future of its own, on the heap while it runs: the
        // session's future, which an idle session holds while it waits for input, stays small.
        let next = {
            let line = match io
                .read_line(if idle { Some(&mut shutdown) } else { None }, true)
                .await?
            {
                Line::Text(l) => l,
                Line::TooLong => {
                    s.errors += 1;
                    io.reply("500 5.5.2 Line too long");
                    continue;
                }
            };
            match Request::parse(&mut line.iter()).map(|r| r.into_owned()) {
                Ok(request) => Box::pin(command(ctx, io, s, request)),
                Err(e) => {
                    s.errors += 1;
                    io.reply(&parse_error_reply(&e, &line));
                    continue;
                }
            }
        };
        if let Some(end) = next.await? {
            return Ok(end);
        }
    }
}

/// Handles one command. Returns an end when the session must close.
async fn command<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    request: Request<String>,
) -> Result<Option<End>, ReadEnd> {
    let host = ctx.cfg.hostname.as_str();
    match request {
        Request::Ehlo { host: client } => {
            s.helo = Some(sanitize(&client, 255));
            s.esmtp = true;
            s.tx = None;
            let mut lines = vec![
                format!("{host} Hello {} [{}]", sanitize(&client, 64), s.ip),
                format!("SIZE {}", ctx.cfg.max_message_size),
                "8BITMIME".into(),
                "SMTPUTF8".into(),
                "PIPELINING".into(),
                "CHUNKING".into(),
                "ENHANCEDSTATUSCODES".into(),
            ];
            if ctx.tls.is_some() && !s.tls {
                lines.push("STARTTLS".into());
            }
            if auth_offered(ctx, s) {
                lines.push("AUTH PLAIN LOGIN".into());
            }
            lines.push("HELP".into());
            let last = lines.len() - 1;
            for (i, l) in lines.iter().enumerate() {
                io.reply(&format!("250{}{l}", if i == last { ' ' } else { '-' }));
            }
        }
        Request::Helo { host: client } => {
            s.helo = Some(sanitize(&client, 255));
            s.esmtp = false;
            s.tx = None;
            io.reply(&format!("250 {host} Hello {} [{}]", sanitize(&client, 64), s.ip));
        }
        Request::Lhlo { .. } => {
            s.errors += 1;
            io.reply("500 5.5.1 This is an SMTP server, not LMTP");
        }
        Request::StartTls => {
            if s.tls {
                io.reply("503 5.5.1 TLS is already active");
            } else if ctx.tls.is_none() {
                io.reply("502 5.5.1 STARTTLS is not available: the relay has no certificate");
            } else {
                io.reply("220 2.0.0 Ready to start TLS");
                io.flush().await.map_err(io_end)?;
                return Ok(Some(End::StartTls));
            }
        }
        Request::Auth {
            mechanism,
            initial_response,
        } => {
            if let Some(end) = Box::pin(auth(ctx, io, s, mechanism, initial_response)).await? {
                return Ok(Some(end));
            }
        }
        Request::Mail { from } => mail_from(ctx, io, s, from),
        Request::Rcpt { to } => rcpt_to(ctx, io, s, to),
        Request::Data => {
            if let Some(reply) = data_refusal(s) {
                io.reply(reply);
                return Ok(None);
            }
            io.reply("354 Start mail input; end with <CRLF>.<CRLF>");
            let (message, too_big) =
                Box::pin(read_data(io, ctx.cfg.max_message_size)).await?;
            if too_big {
                refuse_oversize(ctx, io, s);
            } else {
                Box::pin(finish(ctx, io, s, message)).await;
            }
        }
        Request::Bdat {
            chunk_size,
            is_last,
        } => Box::pin(bdat(ctx, io, s, chunk_size, is_last)).await?,
        Request::Rset => {
            s.tx = None;
            io.reply("250 2.0.0 Reset OK");
        }
        Request::Noop { .. } => io.reply("250 2.0.0 OK"),
        Request::Vrfy { .. } => io.reply("252 2.5.2 Cannot VRFY user, but will take the message"),
        Request::Expn { .. } => io.reply("502 5.5.1 EXPN is not available"),
        Request::Help { .. } => io.reply(
            "214 2.0.0 mailgate relay: EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, BDAT, RSET, NOOP, QUIT",
        ),
        Request::Etrn { .. } | Request::Atrn { .. } | Request::Burl { .. } => {
            io.reply("502 5.5.1 Command not implemented")
        }
        Request::Quit => {
            io.reply(&format!("221 2.0.0 {host} closing connection"));
            io.flush().await.map_err(io_end)?;
            return Ok(Some(End::Quit));
        }
    }
    Ok(None)
}

fn auth_offered(ctx: &ServerCtx, s: &Session) -> bool {
    !ctx.users.is_empty() && (s.tls || s.loopback)
}

/// Printable ASCII only, at most `max` characters: safe to echo and to log.
fn sanitize(text: &str, max: usize) -> String {
    text.chars()
        .filter(|c| c.is_ascii_graphic() || *c == ' ')
        .take(max)
        .collect()
}

fn parse_error_reply(e: &ProtoError, line: &[u8]) -> String {
    match e {
        ProtoError::UnknownCommand => {
            let verb: String = String::from_utf8_lossy(line)
                .split_whitespace()
                .next()
                .map(|v| sanitize(v, 16))
                .unwrap_or_default();
            if verb.is_empty() {
                "500 5.5.2 Empty command".into()
            } else {
                format!("500 5.5.1 Command {verb} not recognized")
            }
        }
        ProtoError::InvalidSenderAddress => "501 5.1.7 Bad sender address syntax".into(),
        ProtoError::InvalidRecipientAddress => "501 5.1.3 Bad recipient address syntax".into(),
        ProtoError::SyntaxError { syntax } => format!("501 5.5.4 Syntax: {syntax}"),
        ProtoError::InvalidParameter { param } => format!("501 5.5.4 Invalid {param} parameter"),
        ProtoError::UnsupportedParameter { param } => {
            format!("555 5.5.4 Unsupported parameter {}", sanitize(param, 32))
        }
        ProtoError::ResponseTooLong => "500 5.5.2 Line too long".into(),
        ProtoError::NeedsMoreData { .. } | ProtoError::InvalidResponse { .. } => {
            "500 5.5.2 Syntax error".into()
        }
    }
}

async fn read_auth_line<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    challenge: &str,
) -> Result<Option<String>, ReadEnd> {
    io.reply(challenge);
    match io.read_line(None, false).await? {
        Line::Text(l) => {
            let text = String::from_utf8_lossy(&l).trim_end().to_string();
            if text == "*" {
                Ok(None)
            } else {
                Ok(Some(text))
            }
        }
        Line::TooLong => Ok(None),
    }
}

/// AUTH PLAIN / LOGIN. Returns an end when the session must close.
async fn auth<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    mechanism: u64,
    initial: String,
) -> Result<Option<End>, ReadEnd> {
    if ctx.users.is_empty() {
        io.reply("502 5.5.1 AUTH is not available: the relay has no users");
        return Ok(None);
    }
    if s.user.is_some() {
        io.reply("503 5.5.1 Already authenticated");
        return Ok(None);
    }
    if s.tx.is_some() {
        io.reply("503 5.5.1 AUTH is not allowed during a mail transaction");
        return Ok(None);
    }
    if !(s.tls || s.loopback) {
        tracing::warn!(
            client = %s.peer,
            "relay: refused AUTH from {} without TLS (passwords are only taken over TLS or from \
             loopback)",
            s.ip
        );
        io.reply("538 5.7.11 Encryption required for requested authentication mechanism");
        return Ok(None);
    }
    let initial = if initial.is_empty() {
        None
    } else {
        Some(initial)
    };
    let creds: Option<Credentials> = if mechanism == smtp_proto::AUTH_PLAIN {
        let response = match initial {
            Some(r) => Some(r),
            None => read_auth_line(io, "334 ").await?,
        };
        match response {
            None => {
                io.reply("501 5.0.0 Authentication cancelled");
                return Ok(None);
            }
            Some(r) => decode_plain(if r == "=" { "" } else { &r }),
        }
    } else if mechanism == smtp_proto::AUTH_LOGIN {
        let user = match initial {
            Some(u) => Some(u),
            None => read_auth_line(io, "334 VXNlcm5hbWU6").await?,
        };
        let Some(user) = user else {
            io.reply("501 5.0.0 Authentication cancelled");
            return Ok(None);
        };
        let Some(pass) = read_auth_line(io, "334 UGFzc3dvcmQ6").await? else {
            io.reply("501 5.0.0 Authentication cancelled");
            return Ok(None);
        };
        match (decode_line(&user), decode_line(&pass)) {
            (Some(user), Some(pass)) if !user.is_empty() => Some(Credentials {
                user,
                password: Secret::new(pass),
            }),
            _ => None,
        }
    } else {
        io.reply("504 5.5.4 Unrecognized authentication type; use PLAIN or LOGIN");
        return Ok(None);
    };
    let Some(creds) = creds else {
        s.errors += 1;
        io.reply("501 5.5.2 Cannot decode the authentication response (base64 expected)");
        return Ok(None);
    };
    let users = ctx.users.clone();
    let user = creds.user.clone();
    let ok = tokio::task::spawn_blocking(move || users.verify(&creds.user, &creds.password))
        .await
        .unwrap_or(false);
    if ok {
        tracing::info!(client = %s.peer, user = %sanitize(&user, 64), "relay: client authenticated");
        s.user = Some(user);
        io.reply("235 2.7.0 Authentication successful");
        return Ok(None);
    }
    s.auth_failures += 1;
    tracing::warn!(
        client = %s.peer,
        user = %sanitize(&user, 64),
        "relay: failed login ({} of {MAX_AUTH_FAILURES})",
        s.auth_failures
    );
    // Slows down guessing.
    tokio::time::sleep(Duration::from_millis(300)).await;
    if s.auth_failures >= MAX_AUTH_FAILURES {
        io.reply("421 4.7.0 Too many failed logins; closing");
        io.flush().await.map_err(io_end)?;
        return Ok(Some(End::Dropped));
    }
    io.reply("535 5.7.8 Authentication credentials invalid");
    Ok(None)
}

fn mail_from<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    from: smtp_proto::MailFrom<String>,
) {
    if s.tx.is_some() {
        io.reply("503 5.5.1 Nested MAIL command");
        return;
    }
    if !s.allowed_network && s.user.is_none() {
        tracing::warn!(
            client = %s.peer,
            "relay: refused MAIL FROM:<{}> from {}: not in [relay] allow_networks and not \
             authenticated",
            sanitize(&from.address, 256),
            s.ip
        );
        io.reply("530 5.7.0 Authentication required");
        return;
    }
    if from.flags & smtp_proto::MAIL_BODY_BINARYMIME != 0 {
        io.reply("555 5.5.4 BODY=BINARYMIME is not supported");
        return;
    }
    if from.size > ctx.cfg.max_message_size {
        tracing::info!(
            client = %s.peer,
            "relay: refused a {} byte message (max_message_size is {})",
            from.size,
            ctx.cfg.max_message_size
        );
        io.reply(&format!(
            "552 5.3.4 Message size exceeds fixed maximum message size ({} bytes)",
            ctx.cfg.max_message_size
        ));
        return;
    }
    let smtputf8 = from.flags & smtp_proto::MAIL_SMTPUTF8 != 0;
    let sender = from.address.trim().to_string();
    if !sender.is_ascii() && !smtputf8 {
        io.reply("553 5.6.7 A non-ASCII address needs the SMTPUTF8 parameter");
        return;
    }
    let Some(route) = ctx.router.route(&sender) else {
        tracing::warn!(
            client = %s.peer,
            "relay: refused MAIL FROM:<{}>: no [[relay.routes]] entry matches and there is no \
             default account",
            sanitize(&sender, 256)
        );
        io.reply("550 5.7.1 Sender not allowed: no account routes mail from this address");
        return;
    };
    io.reply(&format!("250 2.1.0 Sender <{}> OK", sanitize(&sender, 256)));
    s.tx = Some(Transaction {
        sender,
        account: route.account,
        rewrite_from: route.rewrite_from,
        recipients: Vec::new(),
        eight_bit: from.flags & smtp_proto::MAIL_BODY_8BITMIME != 0,
        smtputf8,
        chunks: Vec::new(),
        chunks_too_big: false,
    });
}

fn rcpt_to<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    to: smtp_proto::RcptTo<String>,
) {
    let Some(tx) = s.tx.as_mut() else {
        io.reply("503 5.5.1 Need MAIL before RCPT");
        return;
    };
    if tx.recipients.len() >= ctx.cfg.max_recipients {
        tracing::info!(
            client = %s.peer,
            "relay: refused recipient {} of a message (max_recipients is {})",
            tx.recipients.len() + 1,
            ctx.cfg.max_recipients
        );
        io.reply(&format!(
            "452 4.5.3 Too many recipients (at most {} per message)",
            ctx.cfg.max_recipients
        ));
        return;
    }
    let address = to.address.trim().to_string();
    if !super::config::looks_like_address(&address) {
        io.reply("501 5.1.3 Bad recipient address syntax");
        return;
    }
    if !address.is_ascii() && !tx.smtputf8 {
        io.reply("553 5.6.7 A non-ASCII address needs the SMTPUTF8 parameter on MAIL FROM");
        return;
    }
    io.reply(&format!(
        "250 2.1.5 Recipient <{}> OK",
        sanitize(&address, 256)
    ));
    tx.recipients.push(address);
}

fn data_refusal(s: &Session) -> Option<&'static str> {
    match &s.tx {
        None => Some("503 5.5.1 Need MAIL and RCPT before DATA"),
        Some(tx) if tx.recipients.is_empty() => Some("554 5.5.1 No valid recipients"),
        Some(tx) if !tx.chunks.is_empty() || tx.chunks_too_big => {
            Some("503 5.5.1 DATA cannot follow BDAT in one transaction")
        }
        Some(_) => None,
    }
}

/// Reads message data up to `CRLF.CRLF`. Returns the message (without the final dot line) and
/// whether it went over `max` (then it is read to its end and discarded).
async fn read_data<S: AsyncRead + AsyncWrite + Unpin>(
    io: &mut Io<S>,
    max: usize,
) -> Result<(Vec<u8>, bool), ReadEnd> {
    let mut receiver = DataReceiver::new();
    // The receiver recognises a dot line only after a CRLF it has seen; the CRLF that ended the
    // DATA command counts, so feed it one (and drop it from the message).
    let mut message = Vec::new();
    receiver.ingest(&mut b"\r\n".iter(), &mut message);
    message.clear();
    let mut discard: Option<DummyDataReceiver> = None;
    loop {
        let pending = &io.buf[io.pos..];
        let mut it = pending.iter();
        let done = match discard.as_mut() {
            Some(d) => d.ingest(&mut it),
            None => receiver.ingest(&mut it, &mut message),
        };
        let consumed = pending.len() - it.as_slice().len();
        io.pos += consumed;
        if discard.is_none() && message.len() > max {
            discard = Some(DummyDataReceiver::new_data(&receiver));
            message = Vec::new();
        }
        if done {
            return Ok((message, discard.is_some()));
        }
        io.fill(DATA_TIMEOUT, None, DATA_CHUNK, false).await?;
    }
}

fn refuse_oversize<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
) {
    tracing::info!(
        client = %s.peer,
        "relay: refused a message over max_message_size ({} bytes)",
        ctx.cfg.max_message_size
    );
    io.reply(&format!(
        "552 5.3.4 Message size exceeds fixed maximum message size ({} bytes)",
        ctx.cfg.max_message_size
    ));
    s.tx = None;
}

async fn bdat<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    size: usize,
    last: bool,
) -> Result<(), ReadEnd> {
    let refusal = match &s.tx {
        None => Some("503 5.5.1 Need MAIL and RCPT before BDAT"),
        Some(tx) if tx.recipients.is_empty() => Some("554 5.5.1 No valid recipients"),
        Some(_) => None,
    };
    let max = ctx.cfg.max_message_size;
    let keep = refusal.is_none()
        && s.tx
            .as_ref()
            .is_some_and(|tx| !tx.chunks_too_big && tx.chunks.len().saturating_add(size) <= max);
    // The chunk is read in any case: it is part of the command.
    let mut receiver = BdatReceiver::new(size, last);
    let mut chunk = Vec::new();
    let mut remaining = size;
    while remaining > 0 {
        if io.pos == io.buf.len() {
            io.fill(DATA_TIMEOUT, None, DATA_CHUNK, false).await?;
        }
        let pending = &io.buf[io.pos..];
        let take = pending.len().min(remaining);
        if keep {
            let mut it = pending[..take].iter();
            receiver.ingest(&mut it, &mut chunk);
        }
        io.pos += take;
        remaining -= take;
    }
    if let Some(r) = refusal {
        io.reply(r);
        return Ok(());
    }
    let tx = s.tx.as_mut().expect("checked above");
    if keep {
        tx.chunks.extend_from_slice(&chunk);
    } else {
        tx.chunks_too_big = true;
        tx.chunks = Vec::new();
    }
    if !last {
        io.reply(&format!("250 2.0.0 {size} octets received"));
        return Ok(());
    }
    if tx.chunks_too_big {
        refuse_oversize(ctx, io, s);
        return Ok(());
    }
    let message = std::mem::take(&mut tx.chunks);
    finish(ctx, io, s, message).await;
    Ok(())
}

/// Queues a complete message and answers 250 only once it is on disk.
async fn finish<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    io: &mut Io<S>,
    s: &mut Session,
    message: Vec<u8>,
) {
    let tx = s.tx.take().expect("a transaction");
    let protocol = match (s.esmtp, s.tls, s.user.is_some()) {
        (false, _, _) => "SMTP",
        (true, false, false) => "ESMTP",
        (true, true, false) => "ESMTPS",
        (true, false, true) => "ESMTPA",
        (true, true, true) => "ESMTPSA",
    };
    let date = time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc2822)
        .unwrap_or_default();
    let received = format!(
        "Received: from {} ([{}])\r\n\tby {} (mailgate relay) with {protocol};\r\n\t{date}\r\n",
        s.helo.as_deref().unwrap_or("unknown"),
        s.ip,
        ctx.cfg.hostname,
    );
    let mut data = Vec::with_capacity(received.len() + message.len());
    data.extend_from_slice(received.as_bytes());
    data.extend_from_slice(&message);
    drop(message);
    if let Some(new_from) = &tx.rewrite_from {
        data = rewrite_from_header(&data, new_from);
    }
    let origin = match &s.user {
        Some(u) => format!("relay client {} user {}", s.peer, sanitize(u, 64)),
        None => format!("relay client {}", s.peer),
    };
    let envelope = Envelope {
        sender: tx.sender.clone(),
        recipients: tx.recipients.clone(),
        account: Some(tx.account.clone()),
        upstream_sender: tx.rewrite_from.clone(),
        eight_bit: tx.eight_bit || !data.is_ascii(),
        smtputf8: tx.smtputf8,
        origin,
        generated: false,
    };
    let size = data.len();
    let spool = ctx.spool.clone();
    let _writer = SPOOL_WRITERS.acquire().await;
    let result = tokio::task::spawn_blocking(move || spool.enqueue(&envelope, &data)).await;
    match result {
        Ok(Ok(id)) => {
            tracing::info!(
                client = %s.peer,
                id = %id,
                "relay: queued a message from <{}> to {} recipient(s), {size} bytes, for account {}",
                sanitize(&tx.sender, 256),
                tx.recipients.len(),
                tx.account
            );
            io.reply(&format!("250 2.0.0 Ok: queued as {id}"));
            let _ = ctx.queued.send(Queued {
                id,
                account: tx.account,
            });
        }
        Ok(Err(e)) => {
            tracing::error!(client = %s.peer, "relay: cannot queue a message: {e}");
            io.reply("451 4.3.0 Cannot queue the message right now; try again later");
        }
        Err(e) => {
            tracing::error!(client = %s.peer, "relay: queueing task failed: {e}");
            io.reply("451 4.3.0 Cannot queue the message right now; try again later");
        }
    }
}

/// Drives one session over an in-memory stream: for the fuzz tests.
#[doc(hidden)]
pub async fn serve_stream<S: AsyncRead + AsyncWrite + Unpin>(
    ctx: &ServerCtx,
    stream: S,
    peer: SocketAddr,
) {
    let mut session = Session::new(ctx, peer);
    if !session.allowed_network && ctx.users.is_empty() {
        refuse(ctx, stream, &session).await;
        return;
    }
    let mut io = Io::new(stream);
    let _ = serve(ctx, &mut io, &mut session, true).await;
    let _ = io.stream.shutdown().await;
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    /// An idle session must not wake (and allocate its buffers) before its client says
    /// something: tokio reports a new socket read-ready at once, data or not.
    #[tokio::test]
    async fn a_new_connection_is_not_ready_before_it_sends() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut client = TcpStream::connect(listener.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = listener.accept().await.unwrap();
        let wait = || std::future::poll_fn(|cx| tcp_input_ready(&server, cx));
        assert!(
            tokio::time::timeout(Duration::from_millis(200), wait())
                .await
                .is_err(),
            "ready without input"
        );
        client.write_all(b"EHLO x\r\n").await.unwrap();
        tokio::time::timeout(Duration::from_secs(5), wait())
            .await
            .expect("ready once the client has sent")
            .unwrap();
        // Nothing was consumed.
        let mut line = [0u8; 8];
        server.try_read(&mut line).unwrap();
        assert_eq!(&line, b"EHLO x\r\n");
    }
}
