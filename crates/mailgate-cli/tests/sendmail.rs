//! `mailgate sendmail` (and the `sendmail` link) with what cron, `git send-email` and PHP's
//! `mail()` really write to sendmail, invoked the way they invoke it.

mod common;

use common::TestEnv;
use m365_sim::contoso::{ALICE, SALES};

fn fixture(name: &str) -> Vec<u8> {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn headers(raw: &str) -> &str {
    raw.split("\r\n\r\n").next().unwrap()
}

#[test]
fn cron_output_as_cronie_sends_it() {
    let env = TestEnv::new();
    env.login("work");
    let run = env.run_with_stdin(
        &[
            "sendmail",
            "-FCronDaemon",
            "-i",
            "-odi",
            "-oem",
            "-oi",
            "-t",
            "-f",
            "root",
        ],
        &fixture("cron.eml"),
    );
    run.assert_success();
    let stored = env.delivered();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    assert_eq!(m.rcpt_to, vec![ALICE]);
    assert_eq!(
        m.mail_from, ALICE,
        "-f root is not an address a provider accepts"
    );
    let raw = m.text();
    let h = headers(&raw);
    assert!(
        h.contains("From: \"(Cron Daemon)\" <alice@contoso.com>"),
        "{h}"
    );
    assert!(h.contains("Subject: Cron <root@backup01> /usr/local/bin/nightly-backup.sh"));
    assert!(h.contains("X-Cron-Env: <SHELL=/bin/sh>"));
    assert!(
        h.contains("Message-ID: <") && h.contains("Date: "),
        "added when missing:\n{h}"
    );
    // -i: the lone dot does not end the message; the body arrives byte for byte (CRLF).
    assert!(raw.contains("Sauvegarde terminée : 12 Go"));
    assert!(raw.contains("\r\n.config/mailgate skipped (excluded)\r\n.\r\nrsync: 3 files vanished"));
    assert!(raw.ends_with("nightly-backup: done (exit 24)\r\n"));
}

#[test]
fn cron_without_t_stops_at_a_lone_dot_like_sendmail() {
    let env = TestEnv::new();
    env.login("work");
    // Debian's cron passes the recipient as an argument; without -i a lone "." ends the input.
    let run = env.run_with_stdin(
        &["sendmail", "-FCronDaemon", "-B8BITMIME", "-oem", ALICE],
        &fixture("cron.eml"),
    );
    run.assert_success();
    let raw = env.delivered()[0].text();
    assert!(raw.contains(".config/mailgate skipped"));
    assert!(
        !raw.contains("rsync: 3 files vanished"),
        "input ends at the lone dot"
    );
}

#[test]
fn git_send_email() {
    let env = TestEnv::new();
    env.login("work");
    let input = fixture("git-send-email.eml");
    let run = env.run_with_stdin(
        &["sendmail", "-i", "bob@contoso.com", "carol@fabrikam.com"],
        &input,
    );
    run.assert_success();
    let m = &env.delivered()[0];
    assert_eq!(m.rcpt_to, vec!["bob@contoso.com", "carol@fabrikam.com"]);
    assert_eq!(m.auth_user, ALICE);
    // Headers kept as git wrote them (its Message-ID is the id the server reports).
    assert_eq!(m.id, "20261129091500.48213-1-alice@contoso.com");
    run.assert_output_contains("20261129091500.48213-1-alice@contoso.com");
    let expected = String::from_utf8(input).unwrap().replace('\n', "\r\n");
    assert_eq!(
        m.text(),
        expected,
        "the patch arrives unchanged (dot lines included)"
    );

    // The same with -t, as some setups configure it: recipients from To/Cc too, no duplicates.
    let run = env.run_with_stdin(
        &["sendmail", "-t", "-i", "bob@contoso.com"],
        &fixture("git-send-email.eml"),
    );
    run.assert_success();
    assert_eq!(
        env.delivered()[1].rcpt_to,
        vec!["bob@contoso.com", "carol@fabrikam.com"]
    );
}

#[test]
fn php_mail_with_bcc_and_a_shared_mailbox_sender() {
    let env = TestEnv::new();
    env.login("work");
    let run = env.run_with_stdin(&["sendmail", "-t", "-i"], &fixture("php-mail.eml"));
    run.assert_success();
    let m = &env.delivered()[0];
    assert_eq!(
        m.rcpt_to,
        vec!["bob@contoso.com", "audit@contoso.com"],
        "Bcc is delivered"
    );
    assert_eq!(m.auth_user, ALICE);
    let raw = m.text();
    assert!(
        !raw.contains("audit@contoso.com"),
        "Bcc removed from what is sent:\n{raw}"
    );
    assert!(!raw.contains("Bcc:"));
    assert!(raw.contains("From: Contoso Sales <sales@contoso.com>\r\n"));
    assert!(
        raw.contains("X-PHP-Originating-Script: 33:order.php\r\n"),
        "mixed line endings normalised"
    );
    assert!(raw.contains("Total : 42,00 €"));
    let p = mailgate::message::parse(&m.data).unwrap();
    assert_eq!(p.subject.as_deref(), Some("Commande n°1042 confirmée"));
    assert_eq!(p.from[0].email, SALES);
}

#[test]
fn invoked_through_a_link_named_sendmail() {
    let env = TestEnv::new();
    env.login("work");
    let link = env.path("sendmail");
    #[cfg(unix)]
    std::os::unix::fs::symlink(env!("CARGO_BIN_EXE_mailgate"), &link).unwrap();
    #[cfg(not(unix))]
    std::fs::copy(env!("CARGO_BIN_EXE_mailgate"), &link).unwrap();
    // The same environment as `env.cmd` (XDG dirs in the temp dir), but argv[0] is the link.
    let template = env.cmd(&[]);
    let mut linked = std::process::Command::new(&link);
    for (k, v) in template.get_envs() {
        match v {
            Some(v) => linked.env(k, v),
            None => linked.env_remove(k),
        };
    }
    let out = linked
        .args(["-t", "-oi", "--config", env.config_path.to_str().unwrap()])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child
                .stdin
                .take()
                .unwrap()
                .write_all(b"To: bob@contoso.com\nSubject: via link\n\nhello\n")?;
            child.wait_with_output()
        })
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(env.delivered()[0].rcpt_to, vec!["bob@contoso.com"]);
}

#[test]
fn exit_codes_follow_sysexits() {
    let env = TestEnv::new();
    env.login("work");
    // No recipients: 64, like sendmail.
    env.run_with_stdin(&["sendmail"], b"Subject: x\n\nbody\n")
        .assert_code(64);
    env.run_with_stdin(&["sendmail", "-t"], b"Subject: x\n\nbody\n")
        .assert_code(64);
    // An unsupported mode: 64.
    env.run_with_stdin(&["sendmail", "-bp"], b"")
        .assert_code(64)
        .assert_output_contains("-bp");
    // The server cannot be reached: 75, worth retrying.
    env.sim.set_faults(|f| f.smtp_reject_connections = true);
    env.run_with_stdin(&["sendmail", "bob@contoso.com"], b"Subject: x\n\nbody\n")
        .assert_code(75);
    env.sim.set_faults(|f| f.smtp_reject_connections = false);
    // Send As missing: 77, and the message names who and what.
    env.run_with_stdin(
        &["sendmail", "-t"],
        b"From: support@contoso.com\nTo: bob@contoso.com\n\nx\n",
    )
    .assert_code(77)
    .assert_output_contains("Send As");
    // -v shows the session, token redacted.
    env.run_with_stdin(&["sendmail", "-v", "bob@contoso.com"], b"Subject: v\n\nx\n")
        .assert_success()
        .assert_output_contains("C: AUTH XOAUTH2 [redacted]")
        .assert_output_contains("S: 250 2.0.0 OK <");
}
