//! `mailgate relay` and `mailgate queue` through the real binary, against the simulator: devices
//! without OAuth2 hand their mail to the relay, which spools it and sends it upstream.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use common::TestEnv;
use m365_sim::{contoso, EndpointFault};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

/// Timings short enough for tests: retries within a second.
const FAST: &str = "listen = \"127.0.0.1:0\"\nretry_initial = \"300ms\"\nretry_max = \"1s\"\n\
                    scan_interval = \"200ms\"\nconnection_idle = \"300ms\"\n";

/// An environment whose config has `work` (delegated, not logged in), `app` (client credentials
/// as alice) and `bobapp` (client credentials as bob, who the app is given access to), no
/// pacing, and the `[relay]` table `relay` (after the fast timings).
fn as_refs<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

fn relay_env(default_account: &str, relay: &str) -> TestEnv {
    let env = TestEnv::new();
    let cc = |user: &str| -> Vec<(&'static str, String)> {
        vec![
            ("flow", "\"client_credentials\"".to_string()),
            ("tenant", format!("\"{}\"", contoso::TENANT_DOMAIN)),
            ("user", format!("\"{user}\"")),
            ("messages_per_minute", "0".to_string()),
        ]
    };
    let (app, bob) = (cc(contoso::ALICE), cc(contoso::BOB));
    env.sim.with_directory(|d| {
        let web = d
            .apps
            .iter_mut()
            .find(|a| a.client_id == contoso::WEB_APP_ID)
            .unwrap();
        web.mailbox_access.push(contoso::BOB.into());
    });
    let text = format!(
        "token_store = \"file\"\ndefault_account = \"{default_account}\"\n\n{}\n{}\n{}\n[relay]\n{FAST}{relay}\n",
        env.account_toml("work", &[("messages_per_minute", "0")]),
        env.account_toml("app", &as_refs(&app)),
        env.account_toml("bobapp", &as_refs(&bob)),
    );
    env.write_config(&text);
    env
}

/// A running `mailgate relay`; killed when dropped.
struct RelayProc {
    child: Child,
    addr: SocketAddr,
    /// The implicit-TLS listener, when `listen_tls` is set.
    tls_addr: Option<SocketAddr>,
    log: PathBuf,
    stdout: Arc<Mutex<String>>,
}

impl RelayProc {
    fn start(env: &TestEnv) -> RelayProc {
        let log = env.path(&format!("relay-{}.log", rand_suffix()));
        let log_file = std::fs::File::create(&log).unwrap();
        let mut child = env
            .cmd(&["relay"])
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log_file))
            .spawn()
            .expect("mailgate relay starts");
        let mut reader = BufReader::new(child.stdout.take().unwrap());
        let mut addr = None;
        let mut tls_addr = None;
        let mut seen = String::new();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let mut line = String::new();
            if reader.read_line(&mut line).unwrap_or(0) == 0 || Instant::now() > deadline {
                let _ = child.kill();
                panic!(
                    "relay did not start.\nstdout:\n{seen}\nlog:\n{}",
                    std::fs::read_to_string(&log).unwrap_or_default()
                );
            }
            seen.push_str(&line);
            if let Some(rest) = line.trim().strip_prefix("mailgate relay: listening on ") {
                let a: SocketAddr = rest.split_whitespace().next().unwrap().parse().unwrap();
                if rest.ends_with("(TLS)") {
                    tls_addr = Some(a);
                } else {
                    addr = Some(a);
                }
            }
            if line.contains("mailgate relay: spool ") {
                break;
            }
        }
        let stdout = Arc::new(Mutex::new(seen));
        let sink = stdout.clone();
        std::thread::spawn(move || {
            let mut rest = String::new();
            let _ = reader.read_to_string(&mut rest);
            sink.lock().unwrap().push_str(&rest);
        });
        RelayProc {
            child,
            addr: addr.expect("a plain listener"),
            tls_addr,
            log,
            stdout,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// Like [`wait_for`], showing the relay's log on timeout.
    #[track_caller]
    fn wait_for(&self, secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(secs);
        while !cond() {
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}\n--- relay log ---\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// SIGTERM, then waits for the exit status.
    #[cfg(unix)]
    fn terminate(mut self) -> (Option<i32>, String) {
        let pid = self.child.id().to_string();
        let ok = std::process::Command::new("kill")
            .args(["-TERM", &pid])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -TERM {pid}");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                std::thread::sleep(Duration::from_millis(100));
                let out = self.stdout.lock().unwrap().clone();
                return (status.code(), out);
            }
            assert!(
                Instant::now() < deadline,
                "relay did not stop after SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// kill -9.
    fn kill9(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for RelayProc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn rand_suffix() -> String {
    use std::sync::atomic::AtomicU64;
    static N: AtomicU64 = AtomicU64::new(0);
    format!(
        "{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

/// Waits until `cond` holds, or panics with `what` after `secs`.
#[track_caller]
fn wait_for(secs: u64, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

enum Stream {
    Plain(TcpStream),
    Tls(Box<rustls::StreamOwned<rustls::ClientConnection, TcpStream>>),
}

impl Read for Stream {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.read(buf),
            Stream::Tls(s) => s.read(buf),
        }
    }
}

impl Write for Stream {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        match self {
            Stream::Plain(s) => s.write(buf),
            Stream::Tls(s) => s.write(buf),
        }
    }
    fn flush(&mut self) -> std::io::Result<()> {
        match self {
            Stream::Plain(s) => s.flush(),
            Stream::Tls(s) => s.flush(),
        }
    }
}

/// A reply: its code and its lines' text.
#[derive(Debug)]
struct Reply {
    code: u16,
    lines: Vec<String>,
}

impl Reply {
    fn text(&self) -> String {
        self.lines.join("\n")
    }
}

/// A small blocking SMTP client, as a printer would be.
struct Smtp {
    stream: Stream,
    buf: Vec<u8>,
}

impl Smtp {
    fn connect(addr: SocketAddr) -> (Smtp, Reply) {
        let tcp = TcpStream::connect(addr).unwrap();
        Smtp::over(tcp)
    }

    /// Connects from a given local address (e.g. 127.0.0.2, "outside").
    fn connect_from(local: &str, addr: SocketAddr) -> (Smtp, Reply) {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let std = rt.block_on(async {
            let s = tokio::net::TcpSocket::new_v4().unwrap();
            s.bind(format!("{local}:0").parse().unwrap()).unwrap();
            s.connect(addr).await.unwrap().into_std().unwrap()
        });
        std.set_nonblocking(false).unwrap();
        Smtp::over(std)
    }

    fn over(tcp: TcpStream) -> (Smtp, Reply) {
        tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
        let mut s = Smtp {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        };
        let greeting = s.read_reply();
        (s, greeting)
    }

    fn read_reply(&mut self) -> Reply {
        let mut lines = Vec::new();
        loop {
            let line = loop {
                if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                    let l: Vec<u8> = self.buf.drain(..=i).collect();
                    break String::from_utf8_lossy(&l).trim_end().to_string();
                }
                let mut chunk = [0u8; 4096];
                let n = self.stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    return Reply {
                        code: 0,
                        lines: vec!["<connection closed>".into()],
                    };
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            let code: u16 = line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0);
            let last = line.as_bytes().get(3) != Some(&b'-');
            lines.push(line.get(4..).unwrap_or("").to_string());
            if last {
                return Reply { code, lines };
            }
        }
    }

    /// Writes raw bytes; a closed connection shows as the next reply's code 0.
    fn send_raw(&mut self, data: &[u8]) {
        let _ = self
            .stream
            .write_all(data)
            .and_then(|()| self.stream.flush());
    }

    fn cmd(&mut self, line: &str) -> Reply {
        self.send_raw(format!("{line}\r\n").as_bytes());
        self.read_reply()
    }

    fn starttls(self, ca_pem: &str) -> Smtp {
        let Smtp { stream, .. } = self;
        let Stream::Plain(tcp) = stream else {
            panic!("already TLS")
        };
        let mut roots = rustls::RootCertStore::empty();
        for c in CertificateDer::pem_slice_iter(ca_pem.as_bytes()) {
            roots.add(c.unwrap()).unwrap();
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .unwrap()
            .with_root_certificates(roots)
            .with_no_client_auth();
        let conn = rustls::ClientConnection::new(
            Arc::new(config),
            ServerName::try_from("localhost").unwrap(),
        )
        .unwrap();
        Smtp {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
            buf: Vec::new(),
        }
    }

    /// MAIL, RCPTs and DATA, one command at a time. Returns the final reply (or the first
    /// refusal of MAIL or DATA).
    fn send(&mut self, from: &str, to: &[&str], message: &str) -> Reply {
        let r = self.cmd(&format!("MAIL FROM:<{from}>"));
        if r.code != 250 {
            return r;
        }
        for t in to {
            self.cmd(&format!("RCPT TO:<{t}>"));
        }
        let r = self.cmd("DATA");
        if r.code != 354 {
            return r;
        }
        let mut data = message.replace("\r\n", "\n").replace('\n', "\r\n");
        if !data.ends_with("\r\n") {
            data.push_str("\r\n");
        }
        data.push_str(".\r\n");
        self.send_raw(data.as_bytes());
        self.read_reply()
    }
}

fn message(from: &str, to: &str, subject: &str) -> String {
    format!(
        "From: {from}\r\nTo: {to}\r\nSubject: {subject}\r\nMessage-ID: <{subject}@test.invalid>\r\n\r\nScanned page attached.\r\n.hidden dot line\r\n"
    )
}

fn delivered_with(env: &TestEnv, subject: &str) -> Vec<m365_sim::DeliveredMessage> {
    env.delivered()
        .into_iter()
        .filter(|m| m.text().contains(&format!("Subject: {subject}\r\n")))
        .collect()
}

/// A self-signed certificate for localhost, written as PEM files; returns (cert, key) paths and
/// the certificate's PEM.
fn relay_cert(env: &TestEnv) -> (PathBuf, PathBuf, String) {
    let ck =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string(), "127.0.0.1".to_string()])
            .unwrap();
    let cert = env.path("relay.crt");
    let key = env.path("relay.key");
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.key_pair.serialize_pem()).unwrap();
    (cert, key, ck.cert.pem())
}

#[test]
fn loopback_client_without_auth_is_relayed_with_pipelining() {
    let env = relay_env("app", "");
    let relay = RelayProc::start(&env);
    let (mut c, greeting) = Smtp::connect(relay.addr);
    assert_eq!(greeting.code, 220, "{greeting:?}");
    let ehlo = c.cmd("EHLO printer.lan");
    assert_eq!(ehlo.code, 250);
    for ext in [
        "PIPELINING",
        "8BITMIME",
        "SMTPUTF8",
        "ENHANCEDSTATUSCODES",
        "CHUNKING",
    ] {
        assert!(ehlo.lines.iter().any(|l| l == ext), "{ext} in {ehlo:?}");
    }
    assert!(
        ehlo.lines.iter().any(|l| l.starts_with("SIZE ")),
        "{ehlo:?}"
    );
    // No users configured: AUTH is not offered; no certificate: no STARTTLS.
    assert!(
        !ehlo.lines.iter().any(|l| l.starts_with("AUTH")),
        "{ehlo:?}"
    );
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");

    // The whole transaction pipelined in one write; 8-bit body passed through.
    let body = "From: alice@contoso.com\r\nTo: bob@contoso.com\r\nSubject: pipelined\r\n\r\nBl\u{e5}b\u{e6}rgr\u{f8}d \u{2713}\r\n..leading dot\r\n.\r\n";
    let batch = "MAIL FROM:<alice@contoso.com> BODY=8BITMIME\r\nRCPT TO:<bob@contoso.com>\r\n\
                 RCPT TO:<carol@contoso.com>\r\nDATA\r\n";
    c.send_raw(batch.as_bytes());
    let replies: Vec<Reply> = (0..4).map(|_| c.read_reply()).collect();
    assert_eq!(
        replies.iter().map(|r| r.code).collect::<Vec<_>>(),
        vec![250, 250, 250, 354],
        "{replies:?}"
    );
    c.send_raw(body.as_bytes());
    let done = c.read_reply();
    assert_eq!(done.code, 250, "{done:?}");
    assert!(done.text().contains("queued as"), "{done:?}");
    assert_eq!(c.cmd("QUIT").code, 221);

    wait_for(20, "the message upstream", || {
        !delivered_with(&env, "pipelined").is_empty()
    });
    let m = &delivered_with(&env, "pipelined")[0];
    assert_eq!(m.mail_from, contoso::ALICE);
    assert_eq!(m.rcpt_to, vec!["bob@contoso.com", "carol@contoso.com"]);
    assert_eq!(m.auth_user, contoso::ALICE);
    let text = m.text();
    assert!(
        text.starts_with("Received: from printer.lan ([127.0.0.1])"),
        "{text}"
    );
    assert!(
        text.contains("Bl\u{e5}b\u{e6}rgr\u{f8}d \u{2713}"),
        "8-bit body intact: {text}"
    );
    assert!(
        text.contains("\r\n.leading dot\r\n"),
        "dot-unstuffed once: {text}"
    );
    assert!(
        relay
            .log()
            .contains("queued a message from <alice@contoso.com>"),
        "{}",
        relay.log()
    );
    // Delivered messages leave the spool.
    wait_for(10, "an empty queue", || {
        env.run(&["queue", "list"])
            .stdout
            .contains("The queue is empty")
    });
}

#[test]
fn auth_plain_over_starttls_and_add_user() {
    let env = relay_env("app", "");
    let (cert, key, ca_pem) = relay_cert(&env);
    // Loopback is not in allow_networks here: only logged-in clients may send.
    let text = std::fs::read_to_string(&env.config_path).unwrap().replace(
        "[relay]\n",
        &format!(
            "# the relay for the scanners\n[relay]\nallow_networks = [\"10.99.0.0/16\"]\ntls_cert = \"{}\"\ntls_key = \"{}\"\nlisten_tls = [\"127.0.0.1:0\"]\n",
            cert.display(),
            key.display()
        ),
    );
    env.write_config(&text);
    let add = env.run_with_stdin(
        &["relay", "add-user", "scanner", "--password-stdin"],
        b"correct horse battery\n",
    );
    add.assert_success()
        .assert_output_contains("Added relay user scanner");
    add.assert_output_lacks("correct horse");
    let config = std::fs::read_to_string(&env.config_path).unwrap();
    assert!(
        config.contains("# the relay for the scanners"),
        "comments kept:\n{config}"
    );
    assert!(
        config.contains("[relay.users]\nscanner = \"$argon2id$"),
        "{config}"
    );
    assert!(!config.contains("correct horse"), "{config}");

    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    let ehlo = c.cmd("EHLO scanner");
    assert!(ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    let refused = c.cmd("MAIL FROM:<alice@contoso.com>");
    assert_eq!(refused.code, 530, "{refused:?}");
    assert_eq!(c.cmd("STARTTLS").code, 220);
    let mut c = c.starttls(&ca_pem);
    let ehlo = c.cmd("EHLO scanner");
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    let b64 = |s: &[u8]| base64::engine::general_purpose::STANDARD.encode(s);
    let wrong = c.cmd(&format!("AUTH PLAIN {}", b64(b"\0scanner\0wrong password")));
    assert_eq!(wrong.code, 535, "{wrong:?}");
    let ok = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(b"\0scanner\0correct horse battery")
    ));
    assert_eq!(ok.code, 235, "{ok:?}");
    let done = c.send(
        "alice@contoso.com",
        &["bob@contoso.com"],
        &message("alice@contoso.com", "bob@contoso.com", "over-starttls"),
    );
    assert_eq!(done.code, 250, "{done:?}");
    c.cmd("QUIT");
    wait_for(20, "the message upstream", || {
        !delivered_with(&env, "over-starttls").is_empty()
    });
    let text = delivered_with(&env, "over-starttls")[0].text();
    assert!(text.contains("with ESMTPSA"), "{text}");

    // Implicit TLS: the greeting comes over TLS; AUTH is offered, STARTTLS is not.
    let tcp = TcpStream::connect(relay.tls_addr.expect("a TLS listener")).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut c = Smtp {
        stream: Stream::Plain(tcp),
        buf: Vec::new(),
    }
    .starttls(&ca_pem);
    assert_eq!(c.read_reply().code, 220);
    let ehlo = c.cmd("EHLO scanner");
    assert!(
        ehlo.lines.iter().any(|l| l == "AUTH PLAIN LOGIN"),
        "{ehlo:?}"
    );
    assert!(!ehlo.lines.iter().any(|l| l == "STARTTLS"), "{ehlo:?}");
    let ok = c.cmd(&format!(
        "AUTH PLAIN {}",
        b64(b"\0scanner\0correct horse battery")
    ));
    assert_eq!(ok.code, 235, "{ok:?}");
    c.cmd("QUIT");

    // AUTH LOGIN works too (from loopback even without TLS).
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO scanner");
    assert_eq!(c.cmd("AUTH LOGIN").code, 334);
    assert_eq!(c.cmd(&b64(b"scanner")).code, 334);
    assert_eq!(c.cmd(&b64(b"correct horse battery")).code, 235);
    let log = relay.log();
    assert!(log.contains("failed login"), "{log}");
    assert!(
        !log.contains("correct horse") && !log.contains("wrong password"),
        "{log}"
    );
}

#[test]
fn refused_client_outside_allow_networks() {
    let env = relay_env("app", "allow_networks = [\"127.0.0.1/32\"]\n");
    let relay = RelayProc::start(&env);
    // 127.0.0.2 is "outside": only 127.0.0.1 is allowed, and there are no users to log in as.
    let (mut c, greeting) = Smtp::connect_from("127.0.0.2", relay.addr);
    assert_eq!(greeting.code, 554, "{greeting:?}");
    assert!(
        greeting.text().contains("127.0.0.2 may not use this relay"),
        "{greeting:?}"
    );
    assert_eq!(c.read_reply().code, 0, "connection closed");
    // 127.0.0.1 is inside.
    let (mut c, greeting) = Smtp::connect_from("127.0.0.1", relay.addr);
    assert_eq!(greeting.code, 220);
    c.cmd("EHLO inside");
    assert_eq!(c.cmd("MAIL FROM:<alice@contoso.com>").code, 250);
    wait_for(5, "the refusal in the log", || {
        relay.log().contains("refused a connection from 127.0.0.2")
    });
}

#[test]
fn routes_by_sender_and_rewrites_from() {
    let env = relay_env(
        "app",
        "\n[[relay.routes]]\nsender = \"bob@*\"\naccount = \"bobapp\"\n\n\
         [[relay.routes]]\nsender = \"scanner@printer.lan\"\naccount = \"app\"\nrewrite_from = \"alice@contoso.com\"\n",
    );
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO printer.lan");
    let r = c.send(
        contoso::BOB,
        &["carol@contoso.com"],
        &message("Bob <bob@contoso.com>", "carol@contoso.com", "routed-bob"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.send(
        "alice@contoso.com",
        &["bob@contoso.com"],
        &message("alice@contoso.com", "bob@contoso.com", "routed-default"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    let r = c.send(
        "scanner@printer.lan",
        &["bob@contoso.com"],
        &message(
            "\"Scanner 3rd floor\" <scanner@printer.lan>",
            "bob@contoso.com",
            "rewritten",
        ),
    );
    assert_eq!(r.code, 250, "{r:?}");
    relay.wait_for(20, "three messages upstream", || {
        ["routed-bob", "routed-default", "rewritten"]
            .iter()
            .all(|s| !delivered_with(&env, s).is_empty())
    });
    let bob = &delivered_with(&env, "routed-bob")[0];
    assert_eq!(
        bob.auth_user,
        contoso::BOB,
        "sent through the bobapp account"
    );
    let default = &delivered_with(&env, "routed-default")[0];
    assert_eq!(
        default.auth_user,
        contoso::ALICE,
        "sent through the default account"
    );
    // Without the rewrite the simulator would refuse scanner@printer.lan (SendAsDenied).
    let rewritten = &delivered_with(&env, "rewritten")[0];
    assert_eq!(rewritten.mail_from, contoso::ALICE);
    let text = rewritten.text();
    assert!(
        text.contains("From: \"Scanner 3rd floor\" <alice@contoso.com>\r\n"),
        "{text}"
    );
    assert!(text.contains("Reply-To: scanner@printer.lan\r\n"), "{text}");
    drop(relay);
}

#[test]
fn oversize_and_too_many_recipients() {
    let env = relay_env("app", "max_message_size = \"2KB\"\nmax_recipients = 2\n");
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    let ehlo = c.cmd("EHLO printer.lan");
    assert!(ehlo.lines.iter().any(|l| l == "SIZE 2000"), "{ehlo:?}");
    // Declared too big.
    let r = c.cmd("MAIL FROM:<alice@contoso.com> SIZE=5000");
    assert_eq!(r.code, 552, "{r:?}");
    // Too big without SIZE: read to its end, then refused.
    let big = format!(
        "{}{}",
        message("alice@contoso.com", "bob@contoso.com", "too-big"),
        format!("{}\r\n", "x".repeat(70)).repeat(40)
    );
    let r = c.send("alice@contoso.com", &["bob@contoso.com"], &big);
    assert_eq!(r.code, 552, "{r:?}");
    // The session goes on; a third recipient is refused, the message goes to the first two.
    assert_eq!(c.cmd("MAIL FROM:<alice@contoso.com>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<bob@contoso.com>").code, 250);
    assert_eq!(c.cmd("RCPT TO:<carol@contoso.com>").code, 250);
    let third = c.cmd("RCPT TO:<dave@contoso.com>");
    assert_eq!(third.code, 452, "{third:?}");
    assert!(third.text().contains("4.5.3"), "{third:?}");
    assert_eq!(c.cmd("DATA").code, 354);
    c.send_raw(message("alice@contoso.com", "bob@contoso.com", "two-recipients").as_bytes());
    c.send_raw(b".\r\n");
    assert_eq!(c.read_reply().code, 250);
    // A line over the limit is refused, and the session survives it.
    let long = c.cmd(&format!("NOOP {}", "a".repeat(10_000)));
    assert_eq!(long.code, 500, "{long:?}");
    assert_eq!(c.cmd("NOOP").code, 250);
    wait_for(20, "the message upstream", || {
        !delivered_with(&env, "two-recipients").is_empty()
    });
    assert_eq!(
        delivered_with(&env, "two-recipients")[0].rcpt_to,
        vec!["bob@contoso.com", "carol@contoso.com"]
    );
    assert!(delivered_with(&env, "too-big").is_empty());
    drop(relay);
}

#[test]
fn upstream_down_then_up_delivers_everything() {
    let env = relay_env("app", "");
    env.sim.set_faults(|f| f.smtp_reject_connections = true);
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO printer.lan");
    for i in 0..5 {
        let r = c.send(
            "alice@contoso.com",
            &["bob@contoso.com"],
            &message("alice@contoso.com", "bob@contoso.com", &format!("down-{i}")),
        );
        assert_eq!(r.code, 250, "accepted while upstream is down: {r:?}");
    }
    c.cmd("QUIT");
    wait_for(20, "deferred messages", || {
        let out = env.run(&["queue", "list"]).stdout;
        out.contains("deferred") && out.contains("5 message(s)")
    });
    let list = env.run(&["queue", "list"]);
    list.assert_success();
    assert!(env.delivered().is_empty());
    // Each deferred message says how often it was tried and why it waits.
    wait_for(20, "a deferred message with its error", || {
        env.run(&["queue", "list", "--json"])
            .stdout
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
            .any(|e| {
                e["state"] == "deferred"
                    && e["attempts"].as_u64().unwrap_or(0) >= 1
                    && !e["last_error"].as_str().unwrap_or("").is_empty()
            })
    });

    env.sim.set_faults(|f| f.smtp_reject_connections = false);
    wait_for(30, "all five delivered", || {
        (0..5).all(|i| delivered_with(&env, &format!("down-{i}")).len() == 1)
    });
    wait_for(10, "an empty queue", || {
        env.run(&["queue", "list"])
            .stdout
            .contains("The queue is empty")
    });
    assert!(relay.log().contains("retrying later"), "{}", relay.log());
}

#[test]
fn token_endpoint_failing_then_recovering() {
    let env = relay_env("app", "");
    env.sim
        .set_faults(|f| f.token_endpoint = EndpointFault::Status(503));
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO printer.lan");
    let r = c.send(
        "alice@contoso.com",
        &["bob@contoso.com"],
        &message("alice@contoso.com", "bob@contoso.com", "token-down"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    wait_for(20, "a deferral", || {
        env.run(&["queue", "list"]).stdout.contains("deferred")
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(env.delivered().is_empty());
    env.sim
        .set_faults(|f| f.token_endpoint = EndpointFault::None);
    wait_for(30, "the message upstream", || {
        delivered_with(&env, "token-down").len() == 1
    });
    let log = relay.log();
    assert!(
        !log.contains("cannot get a token"),
        "a 503 is temporary, not a hold: {log}"
    );
    drop(relay);
}

#[test]
fn account_needing_login_holds_mail_then_sends_it() {
    // `work` has never logged in. Notices go to admin@ through another account.
    let env = relay_env(
        "work",
        "notify = \"admin@contoso.com\"\nnotify_account = \"app\"\n",
    );
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO printer.lan");
    for i in 0..3 {
        let r = c.send(
            "alice@contoso.com",
            &["bob@contoso.com"],
            &message("alice@contoso.com", "bob@contoso.com", &format!("held-{i}")),
        );
        assert_eq!(r.code, 250, "{r:?}");
    }
    c.cmd("QUIT");
    wait_for(20, "held messages", || {
        env.run(&["queue", "list"]).stdout.contains("3 held")
    });
    let list = env.run(&["queue", "list"]).stdout;
    assert!(list.contains("mailgate login work"), "{list}");
    wait_for(10, "the login command in the log", || {
        relay
            .log()
            .contains("needs a new login: run `mailgate login work`")
    });
    // One notice, no bounce.
    wait_for(20, "the notice", || {
        env.delivered()
            .iter()
            .any(|m| m.text().contains("account work needs attention"))
    });
    std::thread::sleep(Duration::from_secs(2));
    let notices: Vec<_> = env
        .delivered()
        .into_iter()
        .filter(|m| m.text().contains("needs attention"))
        .collect();
    assert_eq!(notices.len(), 1, "one notice");
    assert_eq!(notices[0].rcpt_to, vec!["admin@contoso.com"]);
    assert!(notices[0].text().contains("mailgate login work"));
    assert!(
        !env.delivered()
            .iter()
            .any(|m| m.text().contains("Undelivered")),
        "held mail is not bounced"
    );
    assert!(env
        .delivered()
        .iter()
        .all(|m| !m.text().contains("Subject: held-")));

    env.login("work");
    wait_for(30, "the held mail upstream", || {
        (0..3).all(|i| delivered_with(&env, &format!("held-{i}")).len() == 1)
    });
    assert!(relay.log().contains("works again"), "{}", relay.log());
}

#[test]
fn permanent_failure_bounces_with_the_diagnosis() {
    let env = relay_env("app", "");
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO printer.lan");
    // alice is a member of support@ but has no Send As on it.
    let r = c.send(
        contoso::SUPPORT,
        &["bob@contoso.com"],
        &message(contoso::SUPPORT, "bob@contoso.com", "not-allowed"),
    );
    assert_eq!(r.code, 250, "{r:?}");
    wait_for(30, "the bounce", || {
        env.delivered()
            .iter()
            .any(|m| m.text().contains("Undelivered Mail Returned to Sender"))
    });
    let bounce = env
        .delivered()
        .into_iter()
        .find(|m| m.text().contains("Undelivered Mail Returned to Sender"))
        .unwrap();
    assert_eq!(
        bounce.rcpt_to,
        vec![contoso::SUPPORT.to_string()],
        "to the envelope sender"
    );
    let text = bounce.text();
    assert!(text.contains("5.2.252"), "{text}");
    assert!(text.contains("Send As"), "the diagnosis: {text}");
    assert!(
        text.contains("Subject: not-allowed"),
        "the original header: {text}"
    );
    assert!(delivered_with(&env, "not-allowed")
        .iter()
        .all(|m| m.text().contains("Undelivered")));
    let list = env.run(&["queue", "list"]);
    list.assert_success();
    assert!(list.stdout.contains("failed"), "{}", list.stdout);
    let id = list
        .stdout
        .lines()
        .find(|l| l.contains("failed") && !l.contains("message(s)"))
        .and_then(|l| l.split_whitespace().next())
        .unwrap()
        .to_string();
    let show = env.run(&["queue", "show", &id[..14]]);
    show.assert_success()
        .assert_output_contains("5.2.252")
        .assert_output_contains("failed    <bob@contoso.com>");
    // Delete it.
    env.run(&["queue", "delete", &id]).assert_success();
    assert!(env
        .run(&["queue", "list"])
        .stdout
        .contains("The queue is empty"));
    drop(relay);
}

#[test]
fn queue_commands_without_a_relay() {
    let env = relay_env("app", "");
    let empty = env.run(&["queue"]);
    empty
        .assert_success()
        .assert_output_contains("The queue is empty");
    env.run(&["queue", "show", "0123"])
        .assert_code(66)
        .assert_output_contains("no message 0123");
    // Queue two messages with the upstream down, then stop the relay.
    env.sim.set_faults(|f| f.smtp_reject_connections = true);
    let relay = RelayProc::start(&env);
    let (mut c, _) = Smtp::connect(relay.addr);
    c.cmd("EHLO printer.lan");
    for s in ["keep-me", "delete-me"] {
        let r = c.send(
            "alice@contoso.com",
            &["bob@contoso.com"],
            &message("alice@contoso.com", "bob@contoso.com", s),
        );
        assert_eq!(r.code, 250);
    }
    c.cmd("QUIT");
    wait_for(20, "two deferred", || {
        env.run(&["queue", "list"]).stdout.contains("2 deferred")
    });
    relay.kill9();
    let list = env.run(&["queue", "list", "--json"]).stdout;
    let entries: Vec<serde_json::Value> = list
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let id_of = |subject: &str| {
        entries
            .iter()
            .find(|e| {
                let id = e["id"].as_str().unwrap();
                env.run(&["queue", "show", id, "--message"])
                    .stdout
                    .contains(&format!("Subject: {subject}"))
            })
            .map(|e| e["id"].as_str().unwrap().to_string())
            .unwrap()
    };
    let delete = id_of("delete-me");
    let keep = id_of("keep-me");
    env.run(&["queue", "delete", &delete])
        .assert_success()
        .assert_output_contains("deleted");
    let flush = env.run(&["queue", "flush"]);
    flush
        .assert_success()
        .assert_output_contains("1 deferred message(s)")
        .assert_output_contains("No relay is running");
    env.run(&["queue", "retry", &keep]).assert_success();
    env.sim.set_faults(|f| f.smtp_reject_connections = false);
    let _relay = RelayProc::start(&env);
    wait_for(30, "keep-me upstream", || {
        delivered_with(&env, "keep-me").len() == 1
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(delivered_with(&env, "delete-me").is_empty());
}

#[cfg(unix)]
#[test]
fn sigterm_finishes_the_transaction_in_progress() {
    let env = relay_env("app", "");
    let relay = RelayProc::start(&env);
    let (mut busy, _) = Smtp::connect(relay.addr);
    busy.cmd("EHLO printer.lan");
    let (mut idle, _) = Smtp::connect(relay.addr);
    idle.cmd("EHLO idle");
    assert_eq!(busy.cmd("MAIL FROM:<alice@contoso.com>").code, 250);
    assert_eq!(busy.cmd("RCPT TO:<bob@contoso.com>").code, 250);
    let addr = relay.addr;
    let pid = relay.child.id();
    let stopper = std::thread::spawn(move || relay.terminate());
    std::thread::sleep(Duration::from_millis(500));
    // The idle session is told the relay is going away.
    let bye = idle.read_reply();
    assert_eq!(bye.code, 421, "{bye:?}");
    // The transaction in progress completes.
    assert_eq!(busy.cmd("DATA").code, 354);
    busy.send_raw(message("alice@contoso.com", "bob@contoso.com", "during-shutdown").as_bytes());
    busy.send_raw(b".\r\n");
    let done = busy.read_reply();
    assert_eq!(done.code, 250, "{done:?}");
    let (code, stdout) = stopper.join().unwrap();
    assert_eq!(code, Some(0), "clean exit of {pid}:\n{stdout}");
    assert!(stdout.contains("mailgate relay: stopped"), "{stdout}");
    assert!(TcpStream::connect(addr).is_err(), "no longer listening");
    // Sent before it stopped, or at the next start: not lost.
    let _relay = RelayProc::start(&env);
    wait_for(30, "the message upstream", || {
        delivered_with(&env, "during-shutdown").len() == 1
    });
}

/// The crash test: the real binary under load from several clients, `kill -9` in the middle,
/// restart: every message that got 250 is delivered. Reports the duplicates.
#[test]
fn kill_9_under_load_loses_nothing_that_got_250() {
    let env = relay_env("app", "");
    let relay = RelayProc::start(&env);
    let addr = relay.addr;
    let acked: Arc<Mutex<Vec<String>>> = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let clients: Vec<_> = (0..6)
        .map(|t| {
            let acked = acked.clone();
            let stop = stop.clone();
            std::thread::spawn(move || {
                let (mut c, g) = Smtp::connect(addr);
                if g.code != 220 {
                    return;
                }
                c.cmd("EHLO loadgen");
                for i in 0..10_000 {
                    if stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let subject = format!("crash-{t}-{i}");
                    let r = c.send(
                        "alice@contoso.com",
                        &["bob@contoso.com"],
                        &message("alice@contoso.com", "bob@contoso.com", &subject),
                    );
                    if r.code == 250 {
                        acked.lock().unwrap().push(subject);
                    } else {
                        break;
                    }
                }
            })
        })
        .collect();
    // Let the load run and deliveries get going, then kill mid-stream.
    wait_for(60, "load", || acked.lock().unwrap().len() >= 150);
    std::thread::sleep(Duration::from_millis(300));
    relay.kill9();
    stop.store(true, Ordering::Relaxed);
    for c in clients {
        c.join().unwrap();
    }
    let acked = acked.lock().unwrap().clone();
    let delivered_before = env.delivered().len();
    let relay = RelayProc::start(&env);
    let requeued = relay
        .log()
        .lines()
        .find(|l| l.contains("were being sent when the relay last stopped"))
        .map(|l| l.to_string());
    wait_for(120, "every acknowledged message upstream", || {
        let subjects: std::collections::HashSet<String> = env
            .delivered()
            .iter()
            .filter_map(|m| {
                m.text()
                    .lines()
                    .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
            })
            .collect();
        acked.iter().all(|s| subjects.contains(s))
    });
    let mut counts = std::collections::HashMap::<String, usize>::new();
    for m in env.delivered() {
        if let Some(s) = m
            .text()
            .lines()
            .find_map(|l| l.strip_prefix("Subject: ").map(str::to_string))
        {
            *counts.entry(s).or_default() += 1;
        }
    }
    let duplicates: Vec<_> = counts.iter().filter(|(_, n)| **n > 1).collect();
    println!(
        "crash test: {} messages acknowledged with 250 before kill -9, {} delivered before the \
         kill, all {} delivered after restart; {} duplicate(s): {:?}; recovery: {}",
        acked.len(),
        delivered_before,
        acked.len(),
        duplicates.len(),
        duplicates,
        requeued.unwrap_or_else(|| "nothing was in flight".into())
    );
    // At most one message in flight per upstream connection (max_connections = 3).
    assert!(duplicates.len() <= 3, "{duplicates:?}");
    drop(relay);
}
