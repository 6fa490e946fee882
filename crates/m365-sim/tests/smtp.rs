//! The simulator's SMTP submission side, driven by a small SMTP client over real TLS that
//! trusts only the simulator's CA.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use m365_sim::contoso::*;
use m365_sim::{Event, SimConfig, Simulator};
use rustls::{ClientConfig, RootCertStore};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;
use tokio_rustls::TlsConnector;

const HOST: &str = "AM0PR02CA0134.outlook.office365.com";
const HOUR: Duration = Duration::from_secs(3600);
const GOOGLE_SCOPE: &str = "https://mail.google.com/";

// ---------------------------------------------------------------------------------------------
// A small SMTP client.

enum Conn {
    Plain(TcpStream),
    Tls(Box<TlsStream<TcpStream>>),
    /// Only while upgrading.
    Gone,
}

impl AsyncRead for Conn {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
            Conn::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }
}

impl AsyncWrite for Conn {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
            Conn::Gone => Poll::Ready(Err(io::ErrorKind::NotConnected.into())),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_flush(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Conn::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Conn::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
            Conn::Gone => Poll::Ready(Ok(())),
        }
    }
}

/// One reply: its code and its lines.
#[derive(Debug)]
struct Reply {
    code: u16,
    /// The lines as received, without CRLF.
    lines: Vec<String>,
}

impl Reply {
    /// All lines joined with CRLF, as the server sent them.
    fn text(&self) -> String {
        self.lines.join("\r\n")
    }

    fn last(&self) -> &str {
        self.lines.last().map(String::as_str).unwrap_or_default()
    }
}

struct Client {
    conn: Conn,
    buf: Vec<u8>,
    ca_pem: String,
}

fn tls_connector(ca_pem: &str) -> TlsConnector {
    let mut roots = RootCertStore::empty();
    for cert in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
        roots
            .add(cert.expect("CA PEM parses"))
            .expect("CA is usable");
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .expect("TLS versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
    TlsConnector::from(Arc::new(config))
}

async fn tls_handshake(ca_pem: &str, tcp: TcpStream) -> TlsStream<TcpStream> {
    tls_connector(ca_pem)
        .connect(ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .expect("TLS handshake with the simulator's certificate")
}

impl Client {
    /// Connects to the STARTTLS port and reads the banner.
    async fn connect(sim: &Simulator) -> (Client, Reply) {
        let tcp = TcpStream::connect(sim.smtp_addr()).await.unwrap();
        let mut c = Client {
            conn: Conn::Plain(tcp),
            buf: Vec::new(),
            ca_pem: sim.ca_pem().to_string(),
        };
        let banner = c.reply().await;
        (c, banner)
    }

    /// Connects to the implicit-TLS port and reads the banner.
    async fn connect_implicit(sim: &Simulator, addr: SocketAddr) -> (Client, Reply) {
        let tcp = TcpStream::connect(addr).await.unwrap();
        let tls = tls_handshake(sim.ca_pem(), tcp).await;
        let mut c = Client {
            conn: Conn::Tls(Box::new(tls)),
            buf: Vec::new(),
            ca_pem: sim.ca_pem().to_string(),
        };
        let banner = c.reply().await;
        (c, banner)
    }

    async fn write(&mut self, bytes: &[u8]) {
        self.conn.write_all(bytes).await.unwrap();
        self.conn.flush().await.unwrap();
    }

    /// Sends one command line and reads the reply.
    async fn cmd(&mut self, line: &str) -> Reply {
        self.write(format!("{line}\r\n").as_bytes()).await;
        self.reply().await
    }

    /// Reads one (possibly multi-line) reply.
    async fn reply(&mut self) -> Reply {
        self.try_reply()
            .await
            .expect("the server closed the connection")
    }

    async fn try_reply(&mut self) -> Option<Reply> {
        let mut lines = Vec::new();
        loop {
            let line = self.line().await?;
            let done = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line);
            if done {
                break;
            }
        }
        let code = lines[0][..3].parse().expect("reply code");
        Some(Reply { code, lines })
    }

    async fn line(&mut self) -> Option<String> {
        loop {
            if let Some(pos) = self.buf.windows(2).position(|w| w == b"\r\n") {
                let line: Vec<u8> = self.buf.drain(..pos + 2).collect();
                return Some(String::from_utf8(line[..pos].to_vec()).unwrap());
            }
            let mut chunk = [0u8; 4096];
            let n = tokio::time::timeout(Duration::from_secs(10), self.conn.read(&mut chunk))
                .await
                .expect("the server answers within 10 s")
                .unwrap_or(0);
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// True when the server has closed the connection (EOF or reset) with nothing more to say.
    async fn closed(&mut self) -> bool {
        let mut chunk = [0u8; 64];
        matches!(
            tokio::time::timeout(Duration::from_secs(10), self.conn.read(&mut chunk)).await,
            Ok(Ok(0)) | Ok(Err(_))
        )
    }

    async fn starttls(&mut self) -> Reply {
        let reply = self.cmd("STARTTLS").await;
        assert_eq!(reply.text(), "220 2.0.0 SMTP server ready");
        self.upgrade().await;
        reply
    }

    async fn upgrade(&mut self) {
        let Conn::Plain(tcp) = std::mem::replace(&mut self.conn, Conn::Gone) else {
            panic!("already TLS");
        };
        self.conn = Conn::Tls(Box::new(tls_handshake(&self.ca_pem, tcp).await));
    }

    async fn auth_xoauth2(&mut self, user: &str, token: &str) -> Reply {
        self.cmd(&format!("AUTH XOAUTH2 {}", xoauth2(user, token)))
            .await
    }

    /// MAIL, RCPT..., DATA with dot-stuffing; returns the first refusal or the final reply.
    async fn send_mail(&mut self, from: &str, rcpts: &[&str], message: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>")).await;
        if r.code != 250 {
            return r;
        }
        for rcpt in rcpts {
            let r = self.cmd(&format!("RCPT TO:<{rcpt}>")).await;
            if r.code != 250 {
                return r;
            }
        }
        let r = self.cmd("DATA").await;
        if r.code != 354 {
            return r;
        }
        assert_eq!(r.text(), "354 Start mail input; end with <CRLF>.<CRLF>");
        self.write(&dot_stuff(message)).await;
        self.reply().await
    }
}

fn xoauth2(user: &str, token: &str) -> String {
    STANDARD.encode(format!("user={user}\x01auth=Bearer {token}\x01\x01"))
}

fn oauthbearer(user: &str, token: &str) -> String {
    STANDARD.encode(format!(
        "n,a={user},\x01host=smtp.gmail.com\x01port=587\x01auth=Bearer {token}\x01\x01"
    ))
}

fn dot_stuff(message: &str) -> Vec<u8> {
    let mut out = String::new();
    for line in message.split_inclusive("\r\n") {
        if line.starts_with('.') {
            out.push('.');
        }
        out.push_str(line);
    }
    if !out.ends_with("\r\n") {
        out.push_str("\r\n");
    }
    out.push_str(".\r\n");
    out.into_bytes()
}

fn message(from: &str, to: &str, id: &str, body: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: test\r\nMessage-ID: <{id}>\r\n\
         Date: Thu, 11 Jul 2024 11:46:42 +0000\r\n\r\n{body}"
    )
}

fn alice_token(sim: &Simulator) -> String {
    sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &[SMTP_SCOPE], HOUR)
}

/// Connects, EHLO, STARTTLS, EHLO, AUTH XOAUTH2 as `user` with `token`; asserts 235.
async fn authed(sim: &Simulator, user: &str, token: &str) -> Client {
    let (mut c, _) = Client::connect(sim).await;
    c.cmd("EHLO client").await;
    c.starttls().await;
    c.cmd("EHLO client").await;
    let r = c.auth_xoauth2(user, token).await;
    assert_eq!(r.text(), "235 2.7.0 Authentication successful");
    c
}

/// Connects and gets as far as the AUTH reply, for refusals.
async fn auth_reply(sim: &Simulator, user: &str, token: &str) -> Reply {
    let (mut c, _) = Client::connect(sim).await;
    c.cmd("EHLO client").await;
    c.starttls().await;
    c.cmd("EHLO client").await;
    c.auth_xoauth2(user, token).await
}

async fn start(config: SimConfig) -> Simulator {
    Simulator::start(config).await.expect("simulator starts")
}

fn assert_535_573(reply: &Reply) {
    let line = reply.text();
    let prefix = format!("535 5.7.3 Authentication unsuccessful [{HOST} ");
    assert!(line.starts_with(&prefix), "{line}");
    let inner = line[prefix.len()..].strip_suffix(']').expect("ends with ]");
    let (ts, diag) = inner.split_once(' ').expect("timestamp and id");
    time::OffsetDateTime::parse(ts, &time::format_description::well_known::Rfc3339)
        .unwrap_or_else(|e| panic!("{ts}: {e}"));
    assert_eq!(diag.len(), 16, "{diag}");
    assert!(diag.chars().all(|c| c.is_ascii_hexdigit()), "{diag}");
}

// ---------------------------------------------------------------------------------------------
// Microsoft mode.

#[tokio::test]
async fn banner_and_ehlo_lines_are_exchange_s() {
    let sim = start(SimConfig::default()).await;
    let (mut c, banner) = Client::connect(&sim).await;
    let prefix = format!("220 {HOST} Microsoft ESMTP MAIL Service ready at ");
    let banner = banner.text();
    assert!(banner.starts_with(&prefix), "{banner}");
    time::OffsetDateTime::parse(
        &banner[prefix.len()..],
        &time::format_description::well_known::Rfc2822,
    )
    .expect("RFC 2822 date");

    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(
        ehlo.lines,
        vec![
            format!("250-{HOST} Hello [127.0.0.1]"),
            "250-SIZE 157286400".into(),
            "250-PIPELINING".into(),
            "250-DSN".into(),
            "250-ENHANCEDSTATUSCODES".into(),
            "250-STARTTLS".into(),
            "250-8BITMIME".into(),
            "250-BINARYMIME".into(),
            "250-CHUNKING".into(),
            "250 SMTPUTF8".into(),
        ]
    );
    c.starttls().await;
    let ehlo = c.cmd("EHLO client.example").await;
    assert_eq!(
        ehlo.lines,
        vec![
            format!("250-{HOST} Hello [127.0.0.1]"),
            "250-SIZE 157286400".into(),
            "250-PIPELINING".into(),
            "250-DSN".into(),
            "250-ENHANCEDSTATUSCODES".into(),
            "250-AUTH LOGIN XOAUTH2".into(),
            "250-8BITMIME".into(),
            "250-BINARYMIME".into(),
            "250-CHUNKING".into(),
            "250 SMTPUTF8".into(),
        ]
    );
    assert_eq!(
        c.cmd("HELO client").await.text(),
        format!("250 {HOST} Hello [127.0.0.1]")
    );
    assert_eq!(c.cmd("NOOP").await.text(), "250 2.0.0 OK");
    assert_eq!(c.cmd("RSET").await.code, 250);
    assert_eq!(
        c.cmd("FROB me").await.text(),
        "500 5.3.3 Unrecognized command"
    );
    assert_eq!(
        c.cmd("VRFY alice").await.text(),
        "500 5.3.3 Unrecognized command"
    );
    assert_eq!(
        c.cmd("QUIT").await.text(),
        "221 2.0.0 Service closing transmission channel"
    );
    assert!(c.closed().await);
}

#[tokio::test]
async fn no_auth_before_tls() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let (mut c, _) = Client::connect(&sim).await;
    c.cmd("EHLO client").await;
    let r = c.auth_xoauth2(ALICE, &token).await;
    assert_eq!(r.text(), "504 5.7.4 Unrecognized authentication type");
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
    assert_eq!(
        r.text(),
        format!("530 5.7.57 Client not authenticated to send mail. [{HOST}]")
    );
    let auth = sim
        .events()
        .into_iter()
        .find_map(|e| match e.event {
            Event::SmtpAuth { tls, reply, .. } => Some((tls, reply)),
            _ => None,
        })
        .expect("the AUTH attempt is logged");
    assert_eq!(
        auth,
        (
            false,
            "504 5.7.4 Unrecognized authentication type".to_string()
        )
    );
}

#[tokio::test]
async fn xoauth2_login_sends_and_stores_the_message() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let msg = message(
        ALICE,
        "partner@fabrikam.example",
        "m1@contoso.com",
        "Hello.\r\n",
    );
    let r = c
        .send_mail(ALICE, &["partner@fabrikam.example"], &msg)
        .await;
    assert_eq!(
        r.text(),
        format!("250 2.0.0 OK <m1@contoso.com> [Hostname={HOST}]")
    );

    let stored = sim.messages();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m.id, "m1@contoso.com");
    assert_eq!(m.mail_from, ALICE);
    assert_eq!(m.rcpt_to, vec!["partner@fabrikam.example"]);
    assert_eq!(m.auth_user, ALICE);
    assert_eq!(m.text(), msg);
    assert_eq!(std::fs::read_to_string(&m.path).unwrap(), msg);
    assert!(m.path.with_extension("json").exists());
}

#[tokio::test]
async fn xoauth2_after_an_empty_challenge() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let (mut c, _) = Client::connect(&sim).await;
    c.cmd("EHLO client").await;
    c.starttls().await;
    c.cmd("EHLO client").await;
    let r = c.cmd("AUTH XOAUTH2").await;
    assert_eq!(r.text(), "334 ");
    let r = c.cmd(&xoauth2(ALICE, &token)).await;
    assert_eq!(r.text(), "235 2.7.0 Authentication successful");
    let r = c.cmd("AUTH XOAUTH2").await;
    assert_eq!(r.code, 503, "{}", r.text());
}

#[tokio::test]
async fn rejected_tokens_get_535_5_7_3_without_a_challenge() {
    let sim = start(SimConfig::default()).await;
    let expired = sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &[SMTP_SCOPE], Duration::ZERO);
    assert_535_573(&auth_reply(&sim, ALICE, &expired).await);

    let graph = sim.mint_access_token(
        PUBLIC_APP_ID,
        Some(ALICE),
        &["https://graph.microsoft.com/Mail.Send"],
        HOUR,
    );
    assert_535_573(&auth_reply(&sim, ALICE, &graph).await);
    // A scope without a resource is a Graph scope too.
    let bare = sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &["SMTP.Send"], HOUR);
    assert_535_573(&auth_reply(&sim, ALICE, &bare).await);

    let token = alice_token(&sim);
    assert_535_573(&auth_reply(&sim, BOB, &token).await);
    assert_535_573(&auth_reply(&sim, SALES, &token).await);
    assert_535_573(&auth_reply(&sim, ALICE, "not-a-token-the-simulator-issued").await);

    // The same token with the right user works: the refusals above were about the token's fit.
    let c = authed(&sim, ALICE, &token).await;
    drop(c);
    let expire_later = alice_token(&sim);
    sim.expire_access_tokens();
    assert_535_573(&auth_reply(&sim, ALICE, &expire_later).await);
}

#[tokio::test]
async fn authenticated_smtp_disabled_gives_5_7_139() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    sim.with_directory(|d| d.smtp_auth_enabled = false);
    assert_eq!(
        auth_reply(&sim, ALICE, &token).await.text(),
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the \
         Tenant. Visit https://aka.ms/smtp_auth_disabled for more information."
    );
    sim.with_directory(|d| {
        d.smtp_auth_enabled = true;
        d.user_mut(ALICE).unwrap().smtp_auth_enabled = false;
    });
    assert_eq!(
        auth_reply(&sim, ALICE, &token).await.text(),
        "535 5.7.139 Authentication unsuccessful, SmtpClientAuthentication is disabled for the \
         Mailbox. Visit https://aka.ms/smtp_auth_disabled for more information."
    );
    sim.with_directory(|d| d.user_mut(ALICE).unwrap().smtp_auth_enabled = true);
    authed(&sim, ALICE, &token).await;
}

#[tokio::test]
async fn basic_auth_and_other_mechanisms_are_refused() {
    let sim = start(SimConfig::default()).await;
    let (mut c, _) = Client::connect(&sim).await;
    c.cmd("EHLO client").await;
    c.starttls().await;
    c.cmd("EHLO client").await;
    assert_eq!(c.cmd("AUTH LOGIN").await.text(), "334 VXNlcm5hbWU6");
    assert_eq!(
        c.cmd(&STANDARD.encode(ALICE)).await.text(),
        "334 UGFzc3dvcmQ6"
    );
    assert_eq!(
        c.cmd(&STANDARD.encode("hunter2")).await.text(),
        "535 5.7.139 Authentication unsuccessful, basic authentication is disabled."
    );
    let plain = STANDARD.encode(format!("\0{ALICE}\0hunter2"));
    assert_eq!(
        c.cmd(&format!("AUTH PLAIN {plain}")).await.text(),
        "504 5.7.4 Unrecognized authentication type"
    );
    let token = alice_token(&sim);
    assert_eq!(
        c.cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(ALICE, &token)))
            .await
            .text(),
        "504 5.7.4 Unrecognized authentication type"
    );
    // Still usable, and the password never reached the event log.
    assert_eq!(c.auth_xoauth2(ALICE, &token).await.code, 235);
    let log = format!("{:?}", sim.events());
    assert!(!log.contains("hunter2") && !log.contains(&token));
    assert!(log.contains("basic authentication is disabled"));
}

#[tokio::test]
async fn mail_without_auth_is_530_5_7_57() {
    let sim = start(SimConfig::default()).await;
    let (mut c, _) = Client::connect(&sim).await;
    c.cmd("EHLO client").await;
    c.starttls().await;
    c.cmd("EHLO client").await;
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
    assert_eq!(
        r.text(),
        format!("530 5.7.57 Client not authenticated to send mail. [{HOST}]")
    );
    assert_eq!(
        c.cmd("RCPT TO:<x@y.example>").await.text(),
        "503 5.5.2 Need mail command"
    );
    assert!(sim.events().iter().any(|e| matches!(&e.event,
        Event::SmtpTransaction { auth_user: None, reply, .. } if reply.starts_with("530 5.7.57"))));
}

#[tokio::test]
async fn send_as_follows_the_grants() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;

    let msg = message(
        SALES,
        "x@fabrikam.example",
        "sales1@contoso.com",
        "From sales.\r\n",
    );
    let r = c.send_mail(SALES, &["x@fabrikam.example"], &msg).await;
    assert_eq!(r.code, 250, "{}", r.text());
    assert_eq!(sim.messages()[0].mail_from, SALES);
    assert_eq!(sim.messages()[0].auth_user, ALICE);

    let msg = message(
        SUPPORT,
        "x@fabrikam.example",
        "support1@contoso.com",
        "Hi.\r\n",
    );
    let r = c.send_mail(SUPPORT, &["x@fabrikam.example"], &msg).await;
    let line = r.text();
    assert!(
        line.starts_with(&format!(
            "554 5.2.252 SendAsDenied; {ALICE} not allowed to send as {SUPPORT}; \
             STOREDRV.Submission.Exception:SendAsDeniedException.MapiExceptionSendAsDenied;"
        )),
        "{line}"
    );
    assert!(
        line.ends_with(&format!("[EndDiagnosticData] [Hostname={HOST}]")),
        "{line}"
    );

    // The envelope is allowed, the From header is not: still refused.
    let msg = message(
        SUPPORT,
        "x@fabrikam.example",
        "support2@contoso.com",
        "Hi.\r\n",
    );
    let r = c.send_mail(ALICE, &["x@fabrikam.example"], &msg).await;
    assert!(r
        .text()
        .contains(&format!("{ALICE} not allowed to send as {SUPPORT}")));
    assert_eq!(sim.messages().len(), 1);

    // A grant made while running takes effect.
    sim.with_directory(|d| {
        d.shared_mailbox_mut(SUPPORT)
            .unwrap()
            .send_as
            .push(ALICE.into())
    });
    let r = c.send_mail(SUPPORT, &["x@fabrikam.example"], &msg).await;
    assert_eq!(r.code, 250, "{}", r.text());
}

#[tokio::test]
async fn app_only_tokens_send_for_the_mailboxes_the_app_may_use() {
    let sim = start(SimConfig::default()).await;
    let token = sim.mint_access_token(WEB_APP_ID, None, &[APP_ONLY_SCOPE], HOUR);
    let mut c = authed(&sim, ALICE, &token).await;
    let msg = message(
        ALICE,
        "x@fabrikam.example",
        "app1@contoso.com",
        "From the app.\r\n",
    );
    assert_eq!(
        c.send_mail(ALICE, &["x@fabrikam.example"], &msg).await.code,
        250
    );
    let msg = message(
        SALES,
        "x@fabrikam.example",
        "app2@contoso.com",
        "From the app.\r\n",
    );
    assert_eq!(
        c.send_mail(SALES, &["x@fabrikam.example"], &msg).await.code,
        250
    );
    let msg = message(
        BOB,
        "x@fabrikam.example",
        "app3@contoso.com",
        "Not allowed.\r\n",
    );
    let r = c.send_mail(BOB, &["x@fabrikam.example"], &msg).await;
    assert!(
        r.text().starts_with("554 5.2.252 SendAsDenied;"),
        "{}",
        r.text()
    );
    let stored: Vec<_> = sim.messages().iter().map(|m| m.mail_from.clone()).collect();
    assert_eq!(stored, vec![ALICE, SALES]);
    assert!(sim.messages().iter().all(|m| m.auth_user == ALICE));

    // The app has no access to bob's mailbox; an app without SMTP.SendAsApp gets nothing.
    assert_535_573(&auth_reply(&sim, BOB, &token).await);
    let no_role = sim.mint_access_token(PUBLIC_APP_ID, None, &[APP_ONLY_SCOPE], HOUR);
    assert_535_573(&auth_reply(&sim, ALICE, &no_role).await);
}

#[tokio::test]
async fn quota_fault_and_daily_recipient_limit() {
    let sim = start(SimConfig {
        daily_recipient_limit: 3,
        ..SimConfig::default()
    })
    .await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let quota = format!(
        "554 5.2.0 STOREDRV.Submission.Exception:SubmissionQuotaExceededException; Failed to \
         process message due to a permanent exception with message [BeginDiagnosticData]Cannot \
         submit message.[EndDiagnosticData] [Hostname={HOST}]"
    );

    sim.set_faults(|f| f.quota_exceeded = true);
    let msg = message(ALICE, "a@fabrikam.example", "q1@contoso.com", "1\r\n");
    assert_eq!(
        c.send_mail(ALICE, &["a@fabrikam.example"], &msg)
            .await
            .text(),
        quota
    );
    sim.set_faults(|f| f.quota_exceeded = false);

    let rcpts = ["a@fabrikam.example", "b@fabrikam.example"];
    let msg = message(ALICE, "a@fabrikam.example", "q2@contoso.com", "2\r\n");
    assert_eq!(c.send_mail(ALICE, &rcpts, &msg).await.code, 250);
    let msg = message(ALICE, "a@fabrikam.example", "q3@contoso.com", "3\r\n");
    assert_eq!(c.send_mail(ALICE, &rcpts, &msg).await.text(), quota);
    // One more recipient still fits the day's three.
    assert_eq!(c.send_mail(ALICE, &rcpts[..1], &msg).await.code, 250);
    assert_eq!(sim.messages().len(), 2);
}

#[tokio::test]
async fn a_fourth_concurrent_connection_gets_432() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut clients = Vec::new();
    for _ in 0..4 {
        clients.push(authed(&sim, ALICE, &token).await);
    }
    for c in clients.iter_mut().take(3) {
        assert_eq!(c.cmd(&format!("MAIL FROM:<{ALICE}>")).await.code, 250);
    }
    let limit =
        format!("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded [Hostname={HOST}]");
    let mut fourth = clients.pop().unwrap();
    assert_eq!(
        fourth.cmd(&format!("MAIL FROM:<{ALICE}>")).await.text(),
        limit
    );
    // Bob is not affected by alice's connections.
    let bob = sim.mint_access_token(PUBLIC_APP_ID, Some(BOB), &[SMTP_SCOPE], HOUR);
    let mut b = authed(&sim, BOB, &bob).await;
    assert_eq!(b.cmd(&format!("MAIL FROM:<{BOB}>")).await.code, 250);

    // Once one of the first three leaves, the fourth may send.
    let mut first = clients.remove(0);
    assert_eq!(first.cmd("QUIT").await.code, 221);
    assert!(first.closed().await);
    let mut reply = String::new();
    for _ in 0..50 {
        reply = fourth.cmd(&format!("MAIL FROM:<{ALICE}>")).await.text();
        if reply.starts_with("250") {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(reply, "250 2.1.0 Sender OK");
}

#[tokio::test]
async fn too_many_recipients_is_452() {
    let sim = start(SimConfig {
        max_recipients_per_message: 2,
        ..SimConfig::default()
    })
    .await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{ALICE}>")).await.text(),
        "250 2.1.0 Sender OK"
    );
    assert_eq!(
        c.cmd("RCPT TO:<a@fabrikam.example>").await.text(),
        "250 2.1.5 Recipient OK"
    );
    assert_eq!(c.cmd("RCPT TO:<b@fabrikam.example>").await.code, 250);
    assert_eq!(
        c.cmd("RCPT TO:<c@fabrikam.example>").await.text(),
        "452 4.5.3 Too many recipients"
    );
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.write(&dot_stuff(&message(
        ALICE,
        "a@fabrikam.example",
        "r@contoso.com",
        "x\r\n",
    )))
    .await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(
        sim.messages()[0].rcpt_to,
        vec!["a@fabrikam.example", "b@fabrikam.example"]
    );
}

#[tokio::test]
async fn oversize_messages_are_552() {
    let sim = start(SimConfig {
        max_message_size: 1000,
        ..SimConfig::default()
    })
    .await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let too_big = "552 5.3.4 Message size exceeds fixed maximum message size";
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{ALICE}> SIZE=5000"))
            .await
            .text(),
        too_big
    );
    let big = message(
        ALICE,
        "a@fabrikam.example",
        "big@contoso.com",
        &"x".repeat(78).repeat(40),
    );
    let big = big.replace(&"x".repeat(78), &format!("{}\r\n", "x".repeat(76)));
    assert_eq!(
        c.send_mail(ALICE, &["a@fabrikam.example"], &big)
            .await
            .text(),
        too_big
    );
    // The connection is still in step.
    assert_eq!(c.cmd("NOOP").await.text(), "250 2.0.0 OK");
    let small = message(ALICE, "a@fabrikam.example", "small@contoso.com", "ok\r\n");
    assert_eq!(
        c.send_mail(ALICE, &["a@fabrikam.example"], &small)
            .await
            .code,
        250
    );
    assert_eq!(sim.messages().len(), 1);
}

#[tokio::test]
async fn dot_stuffing_round_trips_and_two_messages_share_a_connection() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let body = ".leading dot\r\n.\r\n..two dots\r\nend\r\n";
    let first = message(ALICE, "a@fabrikam.example", "d1@contoso.com", body);
    assert_eq!(
        c.send_mail(ALICE, &["a@fabrikam.example"], &first)
            .await
            .code,
        250
    );
    let second = message(ALICE, "b@fabrikam.example", "d2@contoso.com", "second\r\n");
    assert_eq!(
        c.send_mail(ALICE, &["b@fabrikam.example"], &second)
            .await
            .code,
        250
    );
    let stored = sim.messages();
    assert_eq!(stored.len(), 2);
    assert_eq!(stored[0].text(), first);
    assert!(stored[0].text().ends_with(body));
    assert_eq!(stored[1].text(), second);
    assert_eq!(stored[1].rcpt_to, vec!["b@fabrikam.example"]);
}

#[tokio::test]
async fn pipelined_commands_are_answered_in_order() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let msg = message(ALICE, "a@fabrikam.example", "p@contoso.com", "piped\r\n");
    let mut batch =
        format!("MAIL FROM:<{ALICE}>\r\nRCPT TO:<a@fabrikam.example>\r\nDATA\r\n").into_bytes();
    c.write(&batch).await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.code, 354);
    batch = dot_stuff(&msg);
    batch.extend_from_slice(b"NOOP\r\nQUIT\r\n");
    c.write(&batch).await;
    assert_eq!(c.reply().await.code, 250);
    assert_eq!(c.reply().await.text(), "250 2.0.0 OK");
    assert_eq!(c.reply().await.code, 221);
    assert_eq!(sim.messages()[0].text(), msg);
}

#[tokio::test]
async fn bdat_chunks_make_one_message() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let msg = message(
        ALICE,
        "a@fabrikam.example",
        "bdat@contoso.com",
        ".no stuffing\r\nin BDAT\r\n",
    );
    let (one, two) = msg.as_bytes().split_at(40);
    assert_eq!(
        c.cmd(&format!("MAIL FROM:<{ALICE}> BODY=BINARYMIME"))
            .await
            .code,
        250
    );
    assert_eq!(c.cmd("RCPT TO:<a@fabrikam.example>").await.code, 250);
    c.write(format!("BDAT {}\r\n", one.len()).as_bytes()).await;
    c.write(one).await;
    assert_eq!(c.reply().await.text(), "250 2.0.0 40 bytes received");
    c.write(format!("BDAT {} LAST\r\n", two.len()).as_bytes())
        .await;
    c.write(two).await;
    assert_eq!(
        c.reply().await.text(),
        format!("250 2.0.0 OK <bdat@contoso.com> [Hostname={HOST}]")
    );
    assert_eq!(sim.messages()[0].text(), msg);
    // BDAT outside a transaction: its bytes are still consumed.
    c.write(b"BDAT 5 LAST\r\nhello").await;
    assert_eq!(c.reply().await.text(), "503 5.5.2 Need mail command");
    assert_eq!(c.cmd("NOOP").await.code, 250);
}

#[tokio::test]
async fn long_lines_are_refused_and_the_session_goes_on() {
    let sim = start(SimConfig::default()).await;
    let (mut c, _) = Client::connect(&sim).await;
    let r = c.cmd(&format!("EHLO {}", "a".repeat(5000))).await;
    assert_eq!(r.text(), "500 5.5.6 Line too long");
    let r = c.cmd(&format!("NOOP {}", "b".repeat(20000))).await;
    assert_eq!(r.text(), "500 5.5.6 Line too long");
    assert_eq!(c.cmd("NOOP").await.text(), "250 2.0.0 OK");
}

#[tokio::test]
async fn idle_connections_time_out() {
    let sim = start(SimConfig::default().smtp_idle_timeout_secs(1)).await;
    let (mut c, _) = Client::connect(&sim).await;
    c.cmd("EHLO client").await;
    let r = c.reply().await;
    assert_eq!(r.text(), "421 4.4.1 Connection timed out");
    assert!(c.closed().await);
}

#[tokio::test]
async fn reject_connections_fault_closes_at_once() {
    let sim = start(SimConfig::default()).await;
    sim.set_faults(|f| f.smtp_reject_connections = true);
    let tcp = TcpStream::connect(sim.smtp_addr()).await.unwrap();
    let mut c = Client {
        conn: Conn::Plain(tcp),
        buf: Vec::new(),
        ca_pem: sim.ca_pem().to_string(),
    };
    assert!(c.try_reply().await.is_none());
    sim.set_faults(|f| f.smtp_reject_connections = false);
    let (_, banner) = Client::connect(&sim).await;
    assert_eq!(banner.code, 220);
}

#[tokio::test]
async fn implicit_tls_port_speaks_tls_first() {
    let sim = start(SimConfig::default().smtps_listen("127.0.0.1:0")).await;
    let addr = sim.smtps_addr().expect("implicit TLS port");
    let (mut c, banner) = Client::connect_implicit(&sim, addr).await;
    assert!(banner
        .text()
        .starts_with(&format!("220 {HOST} Microsoft ESMTP")));
    let ehlo = c.cmd("EHLO client").await;
    assert!(ehlo.lines.contains(&"250-AUTH LOGIN XOAUTH2".to_string()));
    assert!(!ehlo.text().contains("STARTTLS"));
    assert_eq!(c.cmd("STARTTLS").await.code, 503);
    let token = alice_token(&sim);
    assert_eq!(c.auth_xoauth2(ALICE, &token).await.code, 235);
    let msg = message(ALICE, "a@fabrikam.example", "tls@contoso.com", "x\r\n");
    assert_eq!(
        c.send_mail(ALICE, &["a@fabrikam.example"], &msg).await.code,
        250
    );
}

#[tokio::test]
async fn auth_and_transactions_are_logged() {
    let sim = start(SimConfig::default()).await;
    let token = alice_token(&sim);
    let mut c = authed(&sim, ALICE, &token).await;
    let msg = message(ALICE, "a@fabrikam.example", "ev@contoso.com", "x\r\n");
    c.send_mail(ALICE, &["a@fabrikam.example"], &msg).await;
    assert_535_573(&auth_reply(&sim, BOB, &token).await);

    let events: Vec<Event> = sim.events().into_iter().map(|l| l.event).collect();
    let auths: Vec<_> = events
        .iter()
        .filter_map(|e| match e {
            Event::SmtpAuth {
                mechanism,
                user,
                tls,
                reply,
            } => Some((mechanism.as_str(), user.as_deref(), *tls, reply.as_str())),
            _ => None,
        })
        .collect();
    assert_eq!(auths.len(), 2);
    assert_eq!(
        auths[0],
        (
            "XOAUTH2",
            Some(ALICE),
            true,
            "235 2.7.0 Authentication successful"
        )
    );
    assert_eq!(auths[1].1, Some(BOB));
    assert!(auths[1].3.starts_with("535 5.7.3"));
    let tx = events
        .iter()
        .find_map(|e| match e {
            Event::SmtpTransaction {
                auth_user,
                mail_from,
                rcpt_to,
                reply,
                message_id,
            } => Some((
                auth_user.clone(),
                mail_from.clone(),
                rcpt_to.clone(),
                reply.clone(),
                message_id.clone(),
            )),
            _ => None,
        })
        .expect("a transaction event");
    assert_eq!(tx.0.as_deref(), Some(ALICE));
    assert_eq!(tx.1, ALICE);
    assert_eq!(tx.2, vec!["a@fabrikam.example"]);
    assert!(tx.3.starts_with("250 2.0.0 OK <ev@contoso.com>"));
    assert_eq!(tx.4.as_deref(), Some("ev@contoso.com"));
    assert!(
        !format!("{events:?}").contains(&token),
        "tokens never reach the log"
    );
}

// ---------------------------------------------------------------------------------------------
// Gmail mode.

async fn gmail_tls_client(sim: &Simulator) -> (Client, String) {
    let (mut c, banner) = Client::connect(sim).await;
    let banner = banner.text();
    let id = banner
        .strip_prefix("220 smtp.gmail.com ESMTP ")
        .and_then(|r| r.strip_suffix(" - gsmtp"))
        .unwrap_or_else(|| panic!("{banner}"))
        .to_string();
    let ehlo = c.cmd("EHLO client").await;
    assert_eq!(
        ehlo.lines,
        vec![
            "250-smtp.gmail.com at your service, [127.0.0.1]",
            "250-SIZE 35882577",
            "250-8BITMIME",
            "250-STARTTLS",
            "250-ENHANCEDSTATUSCODES",
            "250-PIPELINING",
            "250-CHUNKING",
            "250 SMTPUTF8",
        ]
    );
    let r = c.cmd("STARTTLS").await;
    assert_eq!(r.text(), "220 2.0.0 Ready to start TLS");
    c.upgrade().await;
    let ehlo = c.cmd("EHLO client").await;
    assert_eq!(
        ehlo.lines,
        vec![
            "250-smtp.gmail.com at your service, [127.0.0.1]",
            "250-SIZE 35882577",
            "250-8BITMIME",
            "250-AUTH LOGIN PLAIN XOAUTH2 PLAIN-CLIENTTOKEN OAUTHBEARER XOAUTH",
            "250-ENHANCEDSTATUSCODES",
            "250-PIPELINING",
            "250-CHUNKING",
            "250 SMTPUTF8",
        ]
    );
    (c, id)
}

#[tokio::test]
async fn gmail_xoauth2_and_oauthbearer_succeed() {
    let sim = start(SimConfig::gmail()).await;
    let token = sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &[GOOGLE_SCOPE], HOUR);

    let (mut c, id) = gmail_tls_client(&sim).await;
    assert_eq!(
        c.auth_xoauth2(ALICE, &token).await.text(),
        "235 2.7.0 Accepted"
    );
    let msg = message(ALICE, "a@fabrikam.example", "g1@gmail.example", "hi\r\n");
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
    assert_eq!(r.text(), format!("250 2.1.0 OK {id} - gsmtp"));
    assert_eq!(c.cmd("RCPT TO:<a@fabrikam.example>").await.code, 250);
    assert_eq!(c.cmd("DATA").await.code, 354);
    c.write(&dot_stuff(&msg)).await;
    let r = c.reply().await.text();
    let rest = r
        .strip_prefix("250 2.0.0 OK  ")
        .unwrap_or_else(|| panic!("{r}"));
    let (ts, tail) = rest.split_once(' ').unwrap();
    assert!(ts.parse::<i64>().unwrap() > 1_700_000_000);
    let stored = sim.messages();
    assert_eq!(tail, format!("{} - gsmtp", stored[0].id));
    assert_eq!(stored[0].text(), msg);

    let (mut c, _) = gmail_tls_client(&sim).await;
    let r = c
        .cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(ALICE, &token)))
        .await;
    assert_eq!(r.text(), "235 2.7.0 Accepted");

    // The initial response may also come after a 334.
    let (mut c, _) = gmail_tls_client(&sim).await;
    assert_eq!(c.cmd("AUTH OAUTHBEARER").await.text(), "334 ");
    assert_eq!(
        c.cmd(&oauthbearer(ALICE, &token)).await.text(),
        "235 2.7.0 Accepted"
    );
}

#[tokio::test]
async fn gmail_bad_token_gets_the_json_challenge_then_535() {
    let sim = start(SimConfig::gmail()).await;
    // An Outlook token is no good at Gmail.
    let outlook = sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &[SMTP_SCOPE], HOUR);
    let bad = "535-5.7.8 Username and Password not accepted. For more information, go to\r\n\
               535 5.7.8  https://support.google.com/mail/?p=BadCredentials";

    let (mut c, id) = gmail_tls_client(&sim).await;
    let r = c.auth_xoauth2(ALICE, &outlook).await;
    let challenge = r.text();
    let json = challenge
        .strip_prefix("334 ")
        .unwrap_or_else(|| panic!("{challenge}"));
    let json: serde_json::Value = serde_json::from_slice(&STANDARD.decode(json).unwrap()).unwrap();
    assert_eq!(
        json,
        serde_json::json!({"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"})
    );
    let r = c.cmd("").await;
    assert_eq!(r.code, 535);
    assert_eq!(r.text(), format!("{bad} {id} - gsmtp"));

    let (mut c, id) = gmail_tls_client(&sim).await;
    let r = c
        .cmd(&format!("AUTH OAUTHBEARER {}", oauthbearer(ALICE, "bogus")))
        .await;
    assert!(r.text().starts_with("334 eyJ"), "{}", r.text());
    assert_eq!(c.cmd("AQ==").await.text(), format!("{bad} {id} - gsmtp"));

    // Expired Google token: same dance.
    let expired =
        sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &[GOOGLE_SCOPE], Duration::ZERO);
    let (mut c, _) = gmail_tls_client(&sim).await;
    assert_eq!(c.auth_xoauth2(ALICE, &expired).await.code, 334);
    assert_eq!(c.cmd("").await.code, 535);
}

#[tokio::test]
async fn gmail_refuses_auth_before_tls_and_mail_before_auth() {
    let sim = start(SimConfig::gmail()).await;
    let (mut c, banner) = Client::connect(&sim).await;
    let id = banner.text().split(' ').nth(3).unwrap().to_string();
    c.cmd("EHLO client").await;
    let token = sim.mint_access_token(PUBLIC_APP_ID, Some(ALICE), &[GOOGLE_SCOPE], HOUR);
    assert_eq!(
        c.auth_xoauth2(ALICE, &token).await.text(),
        format!("530 5.7.0 Must issue a STARTTLS command first. {id} - gsmtp")
    );
    let r = c.cmd(&format!("MAIL FROM:<{ALICE}>")).await;
    assert_eq!(r.code, 530);
    assert!(
        r.last().ends_with(&format!("WantAuthError {id} - gsmtp")),
        "{}",
        r.text()
    );
}
