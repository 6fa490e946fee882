//! The relay's SMTP session over an in-memory stream: protocol details that need no network,
//! and a property test that throws arbitrary input at the session parser: it never panics,
//! never hangs, answers only with well-formed replies, and what it acknowledges is queued.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use argon2::password_hash::{PasswordHasher, SaltString};
use base64::Engine;
use mailgate::relay::auth::Users;
use mailgate::relay::routing::Router;
use mailgate::relay::server::{serve_stream, ServerCtx};
use mailgate::relay::{RelayConfig, Route};
use mailgate::spool::Spool;
use proptest::prelude::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, watch};

/// A cheap argon2 hash (the real default takes long in debug builds) of "secret".
fn cheap_hash() -> String {
    let params = argon2::Params::new(8, 1, 1, None).unwrap();
    let a = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let salt = SaltString::encode_b64(b"saltsaltsalt").unwrap();
    a.hash_password(b"secret", &salt).unwrap().to_string()
}

struct Fixture {
    _dir: tempfile::TempDir,
    ctx: Arc<ServerCtx>,
    spool: Arc<Spool>,
    _queued: mpsc::UnboundedReceiver<mailgate::relay::server::Queued>,
    _stop: watch::Sender<bool>,
}

fn fixture(with_users: bool, max_size: usize) -> Fixture {
    let dir = tempfile::tempdir().unwrap();
    let spool = Arc::new(Spool::open(dir.path().join("spool")).unwrap());
    let mut cfg = RelayConfig::default();
    cfg.hostname = "relay.test".into();
    cfg.max_message_size = max_size;
    cfg.max_recipients = 3;
    let mut users = BTreeMap::new();
    if with_users {
        users.insert("scanner".to_string(), cheap_hash());
    }
    let (tx, rx) = mpsc::unbounded_channel();
    let (stop, stopped) = watch::channel(false);
    let ctx = Arc::new(ServerCtx {
        cfg: Arc::new(cfg),
        users: Users::new(users),
        router: Router::new(vec![Route::new("nobody@*", "other")], Some("work".into())),
        spool: spool.clone(),
        queued: tx,
        tls: None,
        shutdown: stopped,
    });
    Fixture {
        _dir: dir,
        ctx,
        spool,
        _queued: rx,
        _stop: stop,
    }
}

/// Runs a session from `peer`, feeding `input` then closing; returns everything the server said.
async fn session(ctx: Arc<ServerCtx>, peer: &str, input: Vec<u8>) -> String {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let peer: SocketAddr = peer.parse().unwrap();
    let task = tokio::spawn(async move { serve_stream(&ctx, server, peer).await });
    let (mut read, mut write) = tokio::io::split(client);
    let writer = tokio::spawn(async move {
        let _ = write.write_all(&input).await;
        let _ = write.shutdown().await;
    });
    let mut out = Vec::new();
    let _ = read.read_to_end(&mut out).await;
    let _ = writer.await;
    task.await.expect("the session must not panic");
    String::from_utf8(out).expect("replies are UTF-8")
}

fn run(ctx: Arc<ServerCtx>, peer: &str, input: &[u8]) -> String {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        tokio::time::timeout(Duration::from_secs(20), session(ctx, peer, input.to_vec()))
            .await
            .expect("the session ends when the client closes")
    })
}

fn codes(out: &str) -> Vec<u16> {
    out.lines()
        .filter(|l| l.as_bytes().get(3) != Some(&b'-'))
        .map(|l| l[..3].parse().unwrap())
        .collect()
}

#[test]
fn data_edge_cases_and_bdat() {
    let f = fixture(false, 100_000);
    let out = run(
        f.ctx.clone(),
        "127.0.0.1:5000",
        b"HELO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n.first line dot\r\nbody\r\n.\r\n\
          MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\n.\r\n\
          MAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nBDAT 5\r\nHelloBDAT 8 LAST\r\n world\r\n\
          QUIT\r\n",
    );
    assert_eq!(
        codes(&out),
        vec![220, 250, 250, 250, 354, 250, 250, 250, 354, 250, 250, 250, 250, 250, 221],
        "{out}"
    );
    let list = f.spool.list().unwrap();
    assert_eq!(list.len(), 3);
    let bodies: Vec<String> = list
        .iter()
        .map(|e| String::from_utf8(f.spool.message(&e.id).unwrap()).unwrap())
        .collect();
    assert!(
        bodies[0].ends_with("\r\nfirst line dot\r\nbody\r\n"),
        "{}",
        bodies[0]
    );
    assert!(
        bodies[1].starts_with("Received: ") && bodies[1].ends_with("\r\n"),
        "{}",
        bodies[1]
    );
    assert!(bodies[2].ends_with("\r\nHello world\r\n"), "{}", bodies[2]);
    assert_eq!(list[0].envelope.account.as_deref(), Some("work"));
}

#[test]
fn smuggling_needs_crlf_dot_crlf() {
    let f = fixture(false, 100_000);
    // A bare-LF dot does not end the message: the MAIL inside stays message text.
    let out = run(
        f.ctx.clone(),
        "127.0.0.1:5000",
        b"EHLO x\r\nMAIL FROM:<a@x>\r\nRCPT TO:<b@x>\r\nDATA\r\nhi\n.\nMAIL FROM:<evil@x>\r\nRCPT TO:<c@x>\r\nDATA\r\nsmuggled\r\n.\r\nQUIT\r\n",
    );
    assert_eq!(f.spool.list().unwrap().len(), 1, "{out}");
    let e = &f.spool.list().unwrap()[0];
    assert_eq!(e.envelope.recipients, vec!["b@x".to_string()]);
    let body = String::from_utf8(f.spool.message(&e.id).unwrap()).unwrap();
    assert!(body.contains("MAIL FROM:<evil@x>"), "{body}");
}

#[test]
fn passwords_need_tls_away_from_loopback() {
    let f = fixture(true, 100_000);
    let plain = base64::engine::general_purpose::STANDARD.encode(b"\0scanner\0secret");
    // 192.0.2.10 is neither loopback nor in allow_networks.
    let out = run(
        f.ctx.clone(),
        "192.0.2.10:4000",
        format!("EHLO x\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<a@x>\r\nQUIT\r\n").as_bytes(),
    );
    assert!(
        !out.contains("AUTH PLAIN LOGIN"),
        "AUTH not offered in the clear: {out}"
    );
    assert!(out.contains("538 5.7.11"), "{out}");
    assert!(out.contains("530 5.7.0 Authentication required"), "{out}");
    // From loopback it works, and the user then may send.
    let out = run(
        f.ctx.clone(),
        "127.0.0.1:4000",
        format!("EHLO x\r\nAUTH PLAIN {plain}\r\nMAIL FROM:<a@x>\r\nQUIT\r\n").as_bytes(),
    );
    assert!(out.contains("250-AUTH PLAIN LOGIN"), "{out}");
    assert!(out.contains("235 2.7.0"), "{out}");
}

#[test]
fn no_users_and_outside_means_refused_at_once() {
    let f = fixture(false, 100_000);
    let out = run(f.ctx.clone(), "192.0.2.10:4000", b"EHLO x\r\nQUIT\r\n");
    assert!(
        out.starts_with("554 5.7.1 relay.test Access denied"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1, "{out}");
}

#[test]
fn limits_and_errors() {
    let f = fixture(false, 2_000);
    let mut input = b"EHLO x\r\nMAIL FROM:<a@x> SIZE=99999\r\nMAIL FROM:<a@x>\r\n".to_vec();
    input
        .extend_from_slice(b"RCPT TO:<1@x>\r\nRCPT TO:<2@x>\r\nRCPT TO:<3@x>\r\nRCPT TO:<4@x>\r\n");
    input.extend_from_slice(b"DATA\r\n");
    input.extend_from_slice("y".repeat(5_000).as_bytes());
    input.extend_from_slice(b"\r\n.\r\nRCPT TO:<1@x>\r\nFOO bar\r\nNOOP ");
    input.extend_from_slice("z".repeat(9_000).as_bytes());
    input.extend_from_slice(b"\r\nMAIL FROM:<\xc3\xa9@x>\r\nRSET\r\nQUIT\r\n");
    let out = run(f.ctx.clone(), "127.0.0.1:5000", &input);
    assert_eq!(
        codes(&out),
        vec![220, 250, 552, 250, 250, 250, 250, 452, 354, 552, 503, 500, 500, 553, 250, 221],
        "{out}"
    );
    assert!(f.spool.list().unwrap().is_empty());
}

#[test]
fn too_many_errors_end_the_session() {
    let f = fixture(false, 2_000);
    let input = "BOGUS\r\n".repeat(50);
    let out = run(f.ctx.clone(), "127.0.0.1:5000", input.as_bytes());
    assert!(
        out.trim_end()
            .ends_with("421 4.7.0 Too many errors; closing"),
        "{out}"
    );
    assert_eq!(out.lines().count(), 1 + 20 + 1, "{out}");
}

/// Pieces of plausible and implausible SMTP input.
fn fragment() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        Just(b"EHLO client\r\n".to_vec()),
        Just(b"HELO client\r\n".to_vec()),
        Just(b"MAIL FROM:<a@x>\r\n".to_vec()),
        Just(b"MAIL FROM:<a@x> BODY=8BITMIME SMTPUTF8 SIZE=100\r\n".to_vec()),
        Just(b"MAIL FROM:<>\r\n".to_vec()),
        Just(b"RCPT TO:<b@x>\r\n".to_vec()),
        Just(b"RCPT TO:<nobody>\r\n".to_vec()),
        Just(b"DATA\r\n".to_vec()),
        Just(b"\r\n.\r\n".to_vec()),
        Just(b".\r\n".to_vec()),
        Just(b"BDAT 5\r\n".to_vec()),
        Just(b"BDAT 3 LAST\r\n".to_vec()),
        Just(b"BDAT 99999999999999999999\r\n".to_vec()),
        Just(b"AUTH PLAIN\r\n".to_vec()),
        Just(b"AUTH PLAIN AHNjYW5uZXIAc2VjcmV0\r\n".to_vec()),
        Just(b"AUTH LOGIN\r\n".to_vec()),
        Just(b"AUTH CRAM-MD5\r\n".to_vec()),
        Just(b"*\r\n".to_vec()),
        Just(b"STARTTLS\r\n".to_vec()),
        Just(b"RSET\r\n".to_vec()),
        Just(b"NOOP\r\n".to_vec()),
        Just(b"VRFY x\r\n".to_vec()),
        Just(b"QUIT\r\n".to_vec()),
        "[ -~]{0,80}\r\n".prop_map(|s| s.into_bytes()),
        proptest::collection::vec(any::<u8>(), 0..200),
        proptest::collection::vec(
            prop_oneof![Just(b'\r'), Just(b'\n'), Just(b'.'), Just(b'a')],
            0..40
        ),
        (0usize..6000).prop_map(|n| vec![b'A'; n]),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn the_session_survives_anything(parts in proptest::collection::vec(fragment(), 0..30), outside in any::<bool>()) {
        let f = fixture(true, 4_000);
        let input: Vec<u8> = parts.concat();
        let peer = if outside { "192.0.2.7:1234" } else { "127.0.0.1:1234" };
        let out = run(f.ctx.clone(), peer, &input);
        for line in out.lines() {
            let ok = line.len() >= 3
                && line.as_bytes()[..3].iter().all(u8::is_ascii_digit)
                && matches!(line.as_bytes().get(3), None | Some(b' ') | Some(b'-'));
            prop_assert!(ok, "malformed reply line {:?} in {:?}", line, out);
        }
        // Everything acknowledged as queued is in the spool, and nothing else.
        let acked = out.lines().filter(|l| l.starts_with("250 2.0.0 Ok: queued as ")).count();
        prop_assert_eq!(acked, f.spool.list().unwrap().len());
    }
}
