//! `mailgate relay` under load, against the embedded simulator on loopback.
//!
//! One run prints, for the same load (by default 50 concurrent clients sending 2,000 messages of
//! 10 KB, each client over one connection, one command at a time as a printer would):
//!
//! 1. mailgate relay (durable spool, fsync before 250): messages per second accepted, p50/p99
//!    accept latency, and the time until all are delivered upstream (messages_per_minute = 0,
//!    the office365 preset's 3 connections);
//! 2. the same load straight to the simulator (STARTTLS + XOAUTH2 per client): the limit of
//!    this machine. 1 and 2 run interleaved, `--rounds` times (3 by default), and each side's
//!    median round is compared: this machine's speed drifts too much for one run of each;
//! 3. the same load through email-oauth2-proxy (`emailproxy`, headless, client_credentials
//!    against the simulator's token endpoint, STARTTLS upstream trusting the simulator's CA via
//!    SSL_CERT_FILE), when it is installed (`pip install emailproxy`; `--emailproxy PATH`);
//! 4. resident memory of the relay and of emailproxy with 1,000 idle client connections open;
//!
//! and the ratios between them. Run it with `bench/relay.sh`. It is a benchmark, not a test: it
//! checks only that every message arrived.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use m365_sim::contoso::{ALICE, APP_ONLY_SCOPE, TENANT_DOMAIN, WEB_APP_ID, WEB_APP_SECRET};
use m365_sim::{SimConfig, Simulator};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};

const MAILGATE: &str = env!("CARGO_BIN_EXE_mailgate");

/// Connections to emailproxy that got no greeting and were tried again.
static PROXY_RETRIES: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

struct Options {
    clients: usize,
    messages: usize,
    size: usize,
    idle: usize,
    rounds: usize,
    emailproxy: Option<PathBuf>,
}

fn options() -> Options {
    let mut o = Options {
        clients: 50,
        messages: 2000,
        size: 10 * 1024,
        idle: 1000,
        rounds: 3,
        emailproxy: find_in_path("emailproxy"),
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let num = |i: usize| -> usize {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--clients" => o.clients = num(i),
            "--messages" => o.messages = num(i),
            "--size" => o.size = num(i),
            "--idle" => o.idle = num(i),
            "--rounds" => o.rounds = num(i).max(1),
            "--emailproxy" => {
                o.emailproxy = Some(PathBuf::from(args.get(i + 1).expect("--emailproxy PATH")))
            }
            "--no-emailproxy" => {
                o.emailproxy = None;
                i += 1;
                continue;
            }
            "--bench" => {
                i += 1;
                continue;
            }
            other => panic!("unknown option {other}"),
        }
        i += 2;
    }
    o
}

fn find_in_path(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|p| {
        std::env::split_paths(&p)
            .map(|d| d.join(name))
            .find(|f| f.is_file())
    })
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

/// A minimal blocking SMTP client.
struct Client {
    stream: Stream,
    buf: Vec<u8>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        Client::try_connect(addr, Duration::from_secs(120)).expect("a greeting")
    }

    /// Connects and reads the greeting, waiting at most `greeting` for it.
    fn try_connect(addr: SocketAddr, greeting: Duration) -> Option<Client> {
        let tcp = TcpStream::connect(addr).ok()?;
        tcp.set_nodelay(true).unwrap();
        tcp.set_read_timeout(Some(greeting)).unwrap();
        // A server that stops reading must fail the client, not hang the benchmark.
        tcp.set_write_timeout(Some(Duration::from_secs(120)))
            .unwrap();
        let mut c = Client {
            stream: Stream::Plain(tcp),
            buf: Vec::new(),
        };
        let g = c.reply();
        if g.0 != 220 {
            return None;
        }
        if let Stream::Plain(tcp) = &c.stream {
            tcp.set_read_timeout(Some(Duration::from_secs(120)))
                .unwrap();
        }
        Some(c)
    }

    fn reply(&mut self) -> (u16, String) {
        let mut text = String::new();
        loop {
            let line = loop {
                if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                    let l: Vec<u8> = self.buf.drain(..=i).collect();
                    break String::from_utf8_lossy(&l).trim_end().to_string();
                }
                let mut chunk = [0u8; 8192];
                let n = self.stream.read(&mut chunk).unwrap_or(0);
                if n == 0 {
                    return (0, format!("{text}<closed>"));
                }
                self.buf.extend_from_slice(&chunk[..n]);
            };
            text.push_str(&line);
            text.push('\n');
            if line.as_bytes().get(3) != Some(&b'-') {
                return (
                    line.get(..3).and_then(|c| c.parse().ok()).unwrap_or(0),
                    text,
                );
            }
        }
    }

    fn cmd(&mut self, line: &str) -> (u16, String) {
        self.stream.write_all(line.as_bytes()).unwrap();
        self.stream.write_all(b"\r\n").unwrap();
        self.stream.flush().unwrap();
        self.reply()
    }

    fn expect(&mut self, line: &str, code: u16) {
        let r = self.cmd(line);
        assert_eq!(r.0, code, "{line} -> {}", r.1);
    }

    fn starttls(mut self, ca_pem: &str) -> Client {
        self.expect("STARTTLS", 220);
        let Stream::Plain(tcp) = self.stream else {
            unreachable!()
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
        Client {
            stream: Stream::Tls(Box::new(rustls::StreamOwned::new(conn, tcp))),
            buf: Vec::new(),
        }
    }

    /// One message, one command at a time; returns the final reply.
    fn send(&mut self, data: &[u8]) -> (u16, String) {
        self.expect(&format!("MAIL FROM:<{ALICE}>"), 250);
        self.expect("RCPT TO:<bob@contoso.com>", 250);
        self.expect("DATA", 354);
        self.stream.write_all(data).unwrap();
        self.stream.write_all(b".\r\n").unwrap();
        self.stream.flush().unwrap();
        self.reply()
    }
}

/// How a load client reaches its server.
#[derive(Clone)]
enum Target {
    /// The relay: plain, no AUTH (loopback is allowed).
    Relay(SocketAddr),
    /// The simulator: STARTTLS, AUTH XOAUTH2.
    Direct {
        addr: SocketAddr,
        ca_pem: String,
        token: String,
    },
    /// emailproxy: plain, AUTH PLAIN with any password.
    Proxy(SocketAddr),
}

fn open(target: &Target) -> Client {
    match target {
        Target::Relay(a) => {
            let mut c = Client::connect(*a);
            c.expect("EHLO loadgen", 250);
            c
        }
        Target::Direct {
            addr,
            ca_pem,
            token,
        } => {
            let mut c = Client::connect(*addr);
            c.expect("EHLO loadgen", 250);
            let mut c = c.starttls(ca_pem);
            c.expect("EHLO loadgen", 250);
            let sasl = base64::engine::general_purpose::STANDARD
                .encode(format!("user={ALICE}\x01auth=Bearer {token}\x01\x01"));
            c.expect(&format!("AUTH XOAUTH2 {sasl}"), 235);
            c
        }
        Target::Proxy(a) => {
            // emailproxy leaves some of a burst of simultaneous connections unanswered; a
            // client that gets no greeting within 5 s tries again, as a device would.
            let give_up = Instant::now() + Duration::from_secs(60);
            let mut c = loop {
                if let Some(c) = Client::try_connect(*a, Duration::from_secs(5)) {
                    break c;
                }
                PROXY_RETRIES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                assert!(Instant::now() < give_up, "emailproxy never greeted");
            };
            c.expect("EHLO loadgen", 250);
            let plain = base64::engine::general_purpose::STANDARD
                .encode(format!("\0{ALICE}\0bench-password"));
            c.expect(&format!("AUTH PLAIN {plain}"), 235);
            c
        }
    }
}

fn message(n: usize, size: usize, tag: &str) -> Vec<u8> {
    let mut m = format!(
        "From: {ALICE}\r\nTo: bob@contoso.com\r\nSubject: {tag} {n}\r\nMessage-ID: <{tag}-{n}@bench.invalid>\r\n\r\n"
    )
    .into_bytes();
    let line = b"The quick brown fox jumps over the lazy dog; 0123456789 abcdefghijklmnopq\r\n";
    while m.len() + line.len() <= size {
        m.extend_from_slice(line);
    }
    m
}

#[derive(Clone)]
struct Load {
    /// Clients that gave up (a timeout or a refused message); their messages are not counted.
    failed_clients: usize,
    wall: Duration,
    latencies: Vec<Duration>,
    started: Instant,
}

impl Load {
    fn rate(&self) -> f64 {
        self.latencies.len() as f64 / self.wall.as_secs_f64()
    }
    fn pct(&self, p: f64) -> f64 {
        let mut l = self.latencies.clone();
        l.sort();
        let i = ((l.len() as f64 * p).ceil() as usize).clamp(1, l.len()) - 1;
        l[i].as_secs_f64() * 1000.0
    }
}

/// `clients` connections sending `messages` in total; latency = MAIL FROM to the final 250.
fn run_load(target: &Target, clients: usize, messages: usize, size: usize, tag: &str) -> Load {
    let per = messages.div_ceil(clients);
    let started = Instant::now();
    let handles: Vec<_> = (0..clients)
        .map(|c| {
            let target = target.clone();
            let tag = tag.to_string();
            std::thread::spawn(move || {
                let mut client = open(&target);
                let mut lat = Vec::with_capacity(per);
                for i in 0..per {
                    let n = c * per + i;
                    if n >= messages {
                        break;
                    }
                    let data = message(n, size, &tag);
                    let t = Instant::now();
                    let r = client.send(&data);
                    assert_eq!(r.0, 250, "message {n}: {}", r.1);
                    lat.push(t.elapsed());
                }
                let _ = client.cmd("QUIT");
                lat
            })
        })
        .collect();
    let mut latencies = Vec::new();
    let mut failed_clients = 0;
    for h in handles {
        match h.join() {
            Ok(l) => latencies.extend(l),
            Err(_) => failed_clients += 1,
        }
    }
    Load {
        wall: started.elapsed(),
        latencies,
        started,
        failed_clients,
    }
}

/// One line of the results table.
fn row(name: &str, l: &Load, all_upstream_s: f64) {
    println!(
        "{:<34} {:>10.0} {:>9.1} {:>9.1} {:>14.2}",
        name,
        l.rate(),
        l.pct(0.5),
        l.pct(0.99),
        all_upstream_s
    );
}

/// The round whose accept rate is the median of `rounds`.
fn median_by_rate<T: Clone>(rounds: &[T], load: impl Fn(&T) -> &Load) -> T {
    let mut sorted: Vec<&T> = rounds.iter().collect();
    sorted.sort_by(|a, b| load(a).rate().total_cmp(&load(b).rate()));
    sorted[sorted.len() / 2].clone()
}

fn delivered_with(sim: &Simulator, tag: &str) -> usize {
    let needle = format!("Subject: {tag} ");
    sim.messages()
        .iter()
        .filter(|m| {
            let head = &m.data[..m.data.len().min(400)];
            String::from_utf8_lossy(head).contains(&needle)
        })
        .count()
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Opens `n` idle connections, reads each one's greeting (within 10 s in all) and returns the
/// process's RSS before and after, and how many connections were greeted.
fn idle_rss(addr: SocketAddr, n: usize, pid: u32) -> (u64, u64, usize) {
    let before = rss_kib(pid);
    let mut conns = Vec::with_capacity(n);
    for _ in 0..n {
        match TcpStream::connect(addr) {
            Ok(s) => conns.push(s),
            Err(_) => break,
        }
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut greeted = 0;
    for s in &mut conns {
        let left = deadline
            .saturating_duration_since(Instant::now())
            .max(Duration::from_millis(10));
        s.set_read_timeout(Some(left)).unwrap();
        let mut line = String::new();
        if BufReader::new(&*s).read_line(&mut line).is_ok() && line.starts_with("220") {
            greeted += 1;
        }
    }
    std::thread::sleep(Duration::from_secs(1));
    let after = rss_kib(pid);
    drop(conns);
    (before, after, greeted)
}

/// Kills a child process when dropped (also when the benchmark panics).
struct KillOnDrop(Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// Starts `mailgate relay`; it is killed if the benchmark panics.
fn spawn_relay(config: &Path, dir: &Path) -> (KillOnDrop, SocketAddr) {
    let mut child = Command::new(MAILGATE)
        .args(["--config", &config.display().to_string(), "relay"])
        .env("MAILGATE_LOG", "warn")
        .env("XDG_STATE_HOME", dir.join("state"))
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("mailgate relay starts");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut addr = None;
    loop {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 {
            panic!("relay exited");
        }
        if let Some(rest) = line.trim().strip_prefix("mailgate relay: listening on ") {
            addr = rest.split_whitespace().next().and_then(|a| a.parse().ok());
        }
        if line.contains("mailgate relay: spool") {
            break;
        }
    }
    std::thread::spawn(move || {
        let mut sink = String::new();
        let _ = out.read_to_string(&mut sink);
    });
    (KillOnDrop(child), addr.expect("relay address"))
}

fn stop(mut relay: KillOnDrop) {
    let child = &mut relay.0;
    let _ = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status();
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        if child.try_wait().ok().flatten().is_some() {
            return;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}

fn wait_port(addr: SocketAddr, secs: u64) -> bool {
    let deadline = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < deadline {
        if TcpStream::connect(addr).is_ok() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    false
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn main() {
    let o = options();
    let dir = tempfile::Builder::new()
        .prefix("mailgate-bench-relay-")
        .tempdir()
        .unwrap();
    // The simulator stands in for Microsoft's servers, whose mailboxes are not on this disk:
    // it keeps what it receives in memory (/dev/shm) when it can, so that its writes do not
    // compete with the relay's fsyncs.
    let sim_mail = Path::new("/dev/shm")
        .is_dir()
        .then(|| {
            tempfile::Builder::new()
                .prefix("mailgate-bench-sim-")
                .tempdir_in("/dev/shm")
                .ok()
        })
        .flatten();
    let sim_config = SimConfig {
        max_connections_per_mailbox: 100_000,
        daily_recipient_limit: 100_000_000,
        mail_dir: sim_mail.as_ref().map(|d| d.path().to_path_buf()),
        ..SimConfig::default()
    };
    let sim = Simulator::start_blocking(sim_config).expect("simulator");
    let ca = dir.path().join("sim-ca.pem");
    sim.write_ca_file(&ca).unwrap();
    let config = dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "token_store = \"file\"\nstate_dir = \"{state}\"\ndefault_account = \"app\"\n\n\
             [accounts.app]\nprovider = \"office365\"\nflow = \"client_credentials\"\n\
             tenant = \"{TENANT_DOMAIN}\"\nclient_id = \"{WEB_APP_ID}\"\nclient_secret = \"{WEB_APP_SECRET}\"\n\
             user = \"{ALICE}\"\ntoken_url = \"{token_url}\"\nauthorize_url = \"{authorize_url}\"\n\
             smtp_host = \"127.0.0.1\"\nsmtp_port = {smtp_port}\nsmtp_security = \"starttls\"\n\
             ca_file = \"{ca}\"\nmessages_per_minute = 0\n\n\
             [relay]\nlisten = \"127.0.0.1:0\"\nmax_clients = {max_clients}\nscan_interval = \"1s\"\n",
            state = dir.path().join("state").display(),
            token_url = sim.token_url(TENANT_DOMAIN),
            authorize_url = sim.authorize_url(TENANT_DOMAIN),
            smtp_port = sim.smtp_addr().port(),
            ca = ca.display(),
            max_clients = o.idle + o.clients + 100,
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&config, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    println!(
        "load: {} clients, {} messages of {} bytes, one command at a time; simulator on {} \
         (its mailboxes in {})",
        o.clients,
        o.messages,
        o.size,
        sim.smtp_addr(),
        sim.mail_dir().display()
    );

    // 1 and 2, interleaved: the relay, then the same load straight to the simulator, `rounds`
    // times; each side's median round is reported. A shared machine's speed drifts by a factor
    // of two or three within minutes, so one short run of each compares two different machines.
    let (relay, relay_addr) = spawn_relay(&config, dir.path());
    let relay_pid = relay.0.id();
    let token = String::from_utf8(
        Command::new(MAILGATE)
            .args(["--config", &config.display().to_string(), "token", "app"])
            .env("XDG_STATE_HOME", dir.path().join("state"))
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap()
    .trim()
    .to_string();
    assert!(!token.is_empty(), "mailgate token app");
    let direct_target = Target::Direct {
        addr: sim.smtp_addr(),
        ca_pem: sim.ca_pem().to_string(),
        token,
    };
    let mut relay_rounds = Vec::new();
    let mut direct_rounds = Vec::new();
    for round in 0..o.rounds {
        eprintln!("bench: round {}: mailgate relay ...", round + 1);
        let tag = format!("relay{round}");
        let r = run_load(
            &Target::Relay(relay_addr),
            o.clients,
            o.messages,
            o.size,
            &tag,
        );
        assert_eq!(r.failed_clients, 0, "relay load clients failed");
        let deadline = Instant::now() + Duration::from_secs(600);
        while delivered_with(&sim, &tag) < o.messages {
            assert!(
                Instant::now() < deadline,
                "relay did not deliver everything in 10 minutes"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        let all_delivered = r.started.elapsed();
        relay_rounds.push((r, all_delivered));
        eprintln!("bench: round {}: straight to the simulator ...", round + 1);
        let tag = format!("direct{round}");
        let d = run_load(&direct_target, o.clients, o.messages, o.size, &tag);
        assert_eq!(d.failed_clients, 0, "direct load clients failed");
        assert_eq!(delivered_with(&sim, &tag), o.messages);
        direct_rounds.push(d);
    }
    // Memory after the load, then in a fresh process (as emailproxy is measured).
    let (_, relay_rss_after_load, _) = idle_rss(relay_addr, o.idle, relay_pid);
    stop(relay);
    let (relay, relay_addr) = spawn_relay(&config, dir.path());
    let (relay_rss_before, relay_rss_idle, relay_greeted) =
        idle_rss(relay_addr, o.idle, relay.0.id());
    stop(relay);

    // 3. email-oauth2-proxy.
    eprintln!("bench: email-oauth2-proxy ...");
    let mut proxy_figures = None;
    if let Some(emailproxy) = &o.emailproxy {
        let port = free_port();
        let pconf = dir.path().join("emailproxy.config");
        std::fs::write(
            &pconf,
            format!(
                "[SMTP-{port}]\nlocal_address = 127.0.0.1\nserver_address = 127.0.0.1\n\
                 server_port = {smtp}\nserver_starttls = True\n\n\
                 [{ALICE}]\ntoken_url = {token_url}\noauth2_scope = {APP_ONLY_SCOPE}\n\
                 oauth2_flow = client_credentials\nclient_id = {WEB_APP_ID}\nclient_secret = {WEB_APP_SECRET}\n",
                smtp = sim.smtp_addr().port(),
                token_url = sim.token_url(TENANT_DOMAIN),
            ),
        )
        .unwrap();
        let log = dir.path().join("emailproxy.log");
        let start = || {
            KillOnDrop(
                Command::new(emailproxy)
                    .args([
                        "--no-gui",
                        "--config-file",
                        &pconf.display().to_string(),
                        "--log-file",
                        &log.display().to_string(),
                    ])
                    .env("SSL_CERT_FILE", &ca)
                    .stdout(Stdio::null())
                    .stderr(Stdio::null())
                    .spawn()
                    .expect("emailproxy starts"),
            )
        };
        let addr: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let child = start();
        if wait_port(addr, 30) {
            let p = run_load(&Target::Proxy(addr), o.clients, o.messages, o.size, "proxy");
            if p.failed_clients > 0 {
                println!(
                    "email-oauth2-proxy: {} of {} clients gave up (no reply in 120 s); {} of {} \
                     messages were delivered",
                    p.failed_clients,
                    o.clients,
                    delivered_with(&sim, "proxy"),
                    o.messages
                );
            }
            drop(child);
            std::thread::sleep(Duration::from_millis(500));
            let child = start();
            assert!(wait_port(addr, 30), "emailproxy restarts");
            let (_, proxy_rss_idle, greeted) = idle_rss(addr, o.idle, child.0.id());
            proxy_figures = Some((p, proxy_rss_idle, greeted));
        } else {
            println!("emailproxy did not start; see {}", log.display());
        }
    }

    println!();
    println!(
        "{:<34} {:>10} {:>9} {:>9} {:>14}",
        "", "msg/s", "p50 ms", "p99 ms", "all upstream s"
    );
    for (i, ((r, all), d)) in relay_rounds.iter().zip(&direct_rounds).enumerate() {
        let round = i + 1;
        row(
            &format!("round {round}: mailgate relay"),
            r,
            all.as_secs_f64(),
        );
        row(
            &format!("round {round}: straight to the sim"),
            d,
            d.wall.as_secs_f64(),
        );
    }
    if o.rounds > 1 {
        println!("median rounds:");
    }
    let (r, all_delivered) = median_by_rate(&relay_rounds, |x| &x.0);
    let direct = median_by_rate(&direct_rounds, |x| x);
    row(
        "mailgate relay (durable spool)",
        &r,
        all_delivered.as_secs_f64(),
    );
    row(
        "straight to the simulator",
        &direct,
        direct.wall.as_secs_f64(),
    );
    if let Some((p, _, _)) = &proxy_figures {
        row("email-oauth2-proxy", p, p.wall.as_secs_f64());
        let retries = PROXY_RETRIES.load(std::sync::atomic::Ordering::Relaxed);
        if retries > 0 {
            println!(
                "  (emailproxy left {retries} connection(s) without a greeting for 5 s; those \
                 clients connected again)"
            );
        }
    }
    println!();
    println!(
        "resident memory with {} idle connections: mailgate relay {:.1} MiB (before: {:.1} MiB; \
         {relay_greeted} greeted; a fresh process)",
        o.idle,
        relay_rss_idle as f64 / 1024.0,
        relay_rss_before as f64 / 1024.0
    );
    println!(
        "resident memory with {} idle connections: mailgate relay {:.1} MiB right after the load",
        o.idle,
        relay_rss_after_load as f64 / 1024.0
    );
    if let Some((_, rss, greeted)) = &proxy_figures {
        println!(
            "resident memory with {} idle connections: email-oauth2-proxy {:.1} MiB ({greeted} \
             greeted; a fresh process)",
            o.idle,
            *rss as f64 / 1024.0
        );
    }
    println!();
    println!(
        "ratio relay / direct accept rate:       {:.2}",
        r.rate() / direct.rate()
    );
    if let Some((p, rss, _)) = &proxy_figures {
        println!(
            "ratio relay / emailproxy accept rate:   {:.1}",
            r.rate() / p.rate()
        );
        println!(
            "ratio relay / emailproxy memory:        {:.2}",
            relay_rss_idle as f64 / *rss as f64
        );
    } else {
        println!("(emailproxy not found: pip install emailproxy, or pass --emailproxy PATH)");
    }
}
