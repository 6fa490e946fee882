//! `mailgate send` through the real binary against the simulator.

mod common;

use common::TestEnv;
use m365_sim::contoso::{ALICE, SALES, SUPPORT};
use m365_sim::{Event, SimConfig};

fn parsed(m: &m365_sim::DeliveredMessage) -> mailgate::message::ParsedMessage {
    mailgate::message::parse(&m.data).expect("the stored message parses")
}

#[test]
fn text_html_attachment_and_utf8_subject() {
    let env = TestEnv::new();
    env.login("work");
    let html = env.path("body.html");
    std::fs::write(&html, "<p>Le rapport est <b>prêt</b>.</p>").unwrap();
    let pdf = env.path("rapport-novembre.pdf");
    let pdf_bytes: Vec<u8> = b"%PDF-1.4\n"
        .iter()
        .copied()
        .chain((0..=255u8).cycle().take(3000))
        .collect();
    std::fs::write(&pdf, &pdf_bytes).unwrap();
    let csv = env.path("chiffres.csv");
    std::fs::write(&csv, "mois;total\nnovembre;42\n").unwrap();

    let run = env.run(&[
        "send",
        "--to",
        "Bob Okafor <bob@contoso.com>",
        "--cc",
        "carol@fabrikam.com",
        "--reply-to",
        "reports@contoso.com",
        "--subject",
        "Rapport de novembre — Grüße 月報",
        "--body",
        "Bonjour,\nle rapport est prêt.\n.\nAlice",
        "--html-file",
        html.to_str().unwrap(),
        "--attach",
        pdf.to_str().unwrap(),
        "--attach",
        csv.to_str().unwrap(),
    ]);
    run.assert_success();
    let stored = env.delivered();
    assert_eq!(stored.len(), 1);
    let m = &stored[0];
    run.assert_output_contains(&format!("queue id {}", m.id));
    run.assert_output_contains("Sent to bob@contoso.com, carol@fabrikam.com");
    assert_eq!(m.mail_from, ALICE);
    assert_eq!(m.auth_user, ALICE);
    assert_eq!(m.rcpt_to, vec!["bob@contoso.com", "carol@fabrikam.com"]);
    let raw = m.text();
    assert!(raw.is_ascii(), "non-ASCII is encoded (RFC 2047, QP/base64)");
    assert!(raw.contains("=?utf-8?"), "RFC 2047 subject:\n{raw}");
    let p = parsed(m);
    assert_eq!(
        p.subject.as_deref(),
        Some("Rapport de novembre — Grüße 月報")
    );
    assert_eq!(p.to[0].name.as_deref(), Some("Bob Okafor"));
    assert_eq!(p.reply_to[0].email, "reports@contoso.com");
    assert_eq!(p.from[0].email, ALICE);
    assert!(p.message_id.as_deref().unwrap().ends_with("@contoso.com"));
    assert!(p.date.is_some());
    assert_eq!(
        p.text.as_deref().map(|t| t.replace("\r\n", "\n")),
        Some("Bonjour,\nle rapport est prêt.\n.\nAlice".into())
    );
    assert!(p.html.unwrap().contains("<b>prêt</b>"));
    assert_eq!(p.attachments.len(), 2);
    assert_eq!(p.attachments[0].filename, "rapport-novembre.pdf");
    assert_eq!(p.attachments[0].content_type, "application/pdf");
    assert_eq!(p.attachments[0].data, pdf_bytes);
    assert_eq!(p.attachments[1].filename, "chiffres.csv");
    assert_eq!(p.attachments[1].content_type, "text/csv");
}

#[test]
fn body_from_stdin_and_bcc_kept_out_of_the_headers() {
    let env = TestEnv::new();
    env.login("work");
    let run = env.run_with_stdin(
        &[
            "send",
            "--to",
            "bob@contoso.com",
            "--bcc",
            "secret-auditor@fabrikam.com",
            "--subject",
            "stdin",
        ],
        b"from standard input\n",
    );
    run.assert_success();
    let m = &env.delivered()[0];
    assert_eq!(
        m.rcpt_to,
        vec!["bob@contoso.com", "secret-auditor@fabrikam.com"],
        "Bcc is delivered"
    );
    let raw = m.text();
    assert!(
        !raw.contains("secret-auditor"),
        "Bcc must not appear in the message:\n{raw}"
    );
    assert!(!raw.to_ascii_lowercase().contains("\nbcc:"));
    assert!(parsed(m).text.unwrap().contains("from standard input"));
}

#[test]
fn shared_mailbox_with_send_as() {
    let env = TestEnv::new();
    env.login("work");
    let run = env.run(&[
        "send",
        "--from",
        "Contoso Sales <sales@contoso.com>",
        "--to",
        "bob@contoso.com",
        "--subject",
        "from sales",
        "--body",
        "x",
    ]);
    run.assert_success();
    let m = &env.delivered()[0];
    assert_eq!(m.mail_from, SALES, "MAIL FROM carries the shared mailbox");
    assert_eq!(m.auth_user, ALICE, "user= stays the signed-in member");
    let p = parsed(m);
    assert_eq!(p.from[0].email, SALES);
    assert_eq!(p.from[0].name.as_deref(), Some("Contoso Sales"));
}

#[test]
fn shared_mailbox_without_send_as() {
    let env = TestEnv::new();
    env.login("work");
    let run = env.run(&[
        "send",
        "--from",
        SUPPORT,
        "--to",
        "bob@contoso.com",
        "--subject",
        "from support",
        "--body",
        "x",
    ]);
    run.assert_code(77)
        .assert_output_contains("alice@contoso.com is not allowed to send as support@contoso.com")
        .assert_output_contains("Send As")
        .assert_output_contains("Recipients → Mailboxes → support@contoso.com → Delegation → Send As")
        .assert_output_contains("Add-RecipientPermission -Identity support@contoso.com -Trustee alice@contoso.com -AccessRights SendAs")
        .assert_output_contains("554 5.2.252 SendAsDenied");
    assert!(env.delivered().is_empty());
}

#[test]
fn one_recipient_refused_the_others_delivered() {
    let config = SimConfig {
        max_recipients_per_message: 2,
        ..SimConfig::default()
    };
    let env = TestEnv::with_sim(config);
    env.login("work");
    let run = env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--to",
        "carol@fabrikam.com",
        "--cc",
        "dave@fabrikam.com",
        "--subject",
        "three",
        "--body",
        "x",
    ]);
    // Only a temporary refusal: 75, and the output says who got it and who did not.
    run.assert_code(75)
        .assert_output_contains("Sent to bob@contoso.com, carol@fabrikam.com")
        .assert_output_contains("dave@fabrikam.com: 452 4.5.3 Too many recipients")
        .assert_output_contains("Too many recipients for one message");
    assert_eq!(
        env.delivered()[0].rcpt_to,
        vec!["bob@contoso.com", "carol@fabrikam.com"]
    );
}

#[test]
fn refreshes_once_and_retries_when_the_server_refuses_the_stored_token() {
    let env = TestEnv::new();
    env.login("work");
    env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--subject",
        "one",
        "--body",
        "x",
    ])
    .assert_success();
    let refreshes = |env: &TestEnv| {
        env.sim
            .events()
            .iter()
            .filter(|l| matches!(&l.event, Event::TokenRequest { grant_type, outcome, .. } if grant_type == "refresh_token" && outcome == "ok"))
            .count()
    };
    assert_eq!(refreshes(&env), 0);
    // The server forgets the token (as when it is revoked early); mailgate still thinks it valid.
    env.sim.expire_access_tokens();
    let run = env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--subject",
        "two",
        "--body",
        "x",
    ]);
    run.assert_success().assert_output_contains("refreshed");
    assert_eq!(refreshes(&env), 1, "exactly one refresh");
    let auth: Vec<String> = env
        .sim
        .events()
        .into_iter()
        .filter_map(|l| match l.event {
            Event::SmtpAuth { reply, .. } => Some(reply),
            _ => None,
        })
        .collect();
    assert_eq!(auth.len(), 3, "{auth:?}");
    assert!(auth[1].starts_with("535 5.7.3"), "{auth:?}");
    assert!(auth[2].starts_with("235"), "{auth:?}");
    assert_eq!(env.delivered().len(), 2);
}

#[test]
fn dry_run_prints_the_message_and_sends_nothing() {
    let env = TestEnv::new();
    let run = env.run(&[
        "send",
        "--dry-run",
        "--to",
        "bob@contoso.com",
        "--bcc",
        "hidden@fabrikam.com",
        "--subject",
        "draft",
        "--body",
        "x",
    ]);
    run.assert_success()
        .assert_output_contains("RCPT TO:   <hidden@fabrikam.com>")
        .assert_output_contains("Subject: draft");
    assert!(
        !run.stdout.contains("hidden@"),
        "the message itself has no Bcc"
    );
    assert!(env.delivered().is_empty());
}

#[test]
fn header_injection_is_refused() {
    let env = TestEnv::new();
    let run = env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--subject",
        "hi\r\nBcc: eve@evil.example",
        "--body",
        "x",
    ]);
    run.assert_code(65).assert_output_contains("line break");
    let run = env.run(&[
        "send",
        "--to",
        "bob@contoso.com\nBcc: eve@evil.example",
        "--subject",
        "hi",
        "--body",
        "x",
    ]);
    run.assert_code(65).assert_output_contains("line break");
    assert!(env.delivered().is_empty());
}

#[test]
fn debug_prints_the_transcript_without_the_token() {
    let env = TestEnv::new();
    env.login("work");
    let token = env.run(&["token"]);
    token.assert_success();
    let token = token.stdout.trim().to_string();
    assert!(token.len() > 20);
    let run = env.run(&[
        "--debug",
        "send",
        "--to",
        "bob@contoso.com",
        "--subject",
        "debug",
        "--body",
        "x",
    ]);
    run.assert_success()
        .assert_output_contains("AUTH XOAUTH2 [redacted]")
        .assert_output_contains("235 2.7.0 Authentication successful")
        .assert_output_contains("STARTTLS");
    assert!(
        !run.all().contains(&token),
        "the token must never be printed"
    );
}
