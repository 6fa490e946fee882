//! Every SMTP diagnosis the simulator can provoke, through the real binary: the words the user
//! reads and the exit status a script sees. And `mailgate test`'s checklist.

mod common;

use common::TestEnv;
use m365_sim::contoso::ALICE;
use m365_sim::{Event, SimConfig};

fn send(env: &TestEnv) -> common::Run {
    env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--subject",
        "diag",
        "--body",
        "x",
    ])
}

/// A Gmail-mode simulator with a `work` account for it (the gmail preset takes no tenant).
fn gmail_env(config: SimConfig) -> TestEnv {
    let env = TestEnv::with_sim(config);
    let text = format!(
        "token_store = \"file\"\ndefault_account = \"work\"\n\n{}",
        env.account_toml("work", &[("tenant", "")])
    );
    env.write_config(&text);
    env
}

/// Replaces the `work` account's SMTP login user (after login, so the token stays alice's).
fn set_user(env: &TestEnv, user: &str) {
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let text = text.replacen(
        &format!("user = \"{ALICE}\""),
        &format!("user = \"{user}\""),
        1,
    );
    env.write_config(&text);
}

#[test]
fn authenticated_smtp_disabled_for_the_tenant() {
    let env = TestEnv::new();
    env.login("work");
    env.sim.with_directory(|d| d.smtp_auth_enabled = false);
    send(&env)
        .assert_code(77)
        .assert_output_contains("5.7.139")
        .assert_output_contains("\"Authenticated SMTP\") is disabled for the tenant")
        .assert_output_contains("Set-TransportConfig -SmtpClientAuthenticationDisabled $false")
        .assert_output_contains(
            "Set-CASMailbox -Identity alice@contoso.com -SmtpClientAuthenticationDisabled $false",
        )
        .assert_output_contains("Security defaults")
        .assert_output_contains("SmtpClientAuthentication is disabled for the Tenant");
    // No refresh: a new token cannot cure a disabled protocol.
    let refreshes = env
        .sim
        .events()
        .iter()
        .filter(|l| matches!(&l.event, Event::TokenRequest { grant_type, .. } if grant_type == "refresh_token"))
        .count();
    assert_eq!(refreshes, 0);
}

#[test]
fn authenticated_smtp_disabled_for_the_mailbox() {
    let env = TestEnv::new();
    env.login("work");
    env.sim
        .with_directory(|d| d.user_mut(ALICE).unwrap().smtp_auth_enabled = false);
    send(&env)
        .assert_code(77)
        .assert_output_contains("disabled for the mailbox alice@contoso.com")
        .assert_output_contains("Users → Active users → alice@contoso.com → Mail → Manage email apps → tick \"Authenticated SMTP\"")
        .assert_output_contains("SmtpClientAuthentication is disabled for the Mailbox");
}

#[test]
fn token_refused_when_a_shared_mailbox_is_the_login() {
    let env = TestEnv::new();
    env.login("work");
    set_user(&env, "sales@contoso.com");
    let run = send(&env);
    run.assert_code(77)
        .assert_output_contains("535 5.7.3 Authentication unsuccessful")
        .assert_output_contains("https://outlook.office.com/SMTP.Send")
        .assert_output_contains(
            "user= must be the account that signed in (sales@contoso.com), not a shared mailbox",
        )
        .assert_output_contains("expired");
    // A cached token refused with 535 is refreshed once, and the login tried once more.
    let auths = env
        .sim
        .events()
        .iter()
        .filter(|l| matches!(l.event, Event::SmtpAuth { .. }))
        .count();
    assert_eq!(auths, 2);
}

#[test]
fn send_as_denied() {
    let env = TestEnv::new();
    env.login("work");
    env.run(&["send", "--from", "support@contoso.com", "--to", "bob@contoso.com", "--subject", "x", "--body", "x"])
        .assert_code(77)
        .assert_output_contains("alice@contoso.com is not allowed to send as support@contoso.com (missing \"Send As\")")
        .assert_output_contains("Exchange admin center → Recipients → Mailboxes → support@contoso.com → Delegation → Send As");
}

#[test]
fn sender_thread_limit() {
    let config = SimConfig {
        max_connections_per_mailbox: 0,
        ..SimConfig::default()
    };
    let env = TestEnv::with_sim(config);
    env.login("work");
    send(&env)
        .assert_code(75)
        .assert_output_contains("432 4.3.2 STOREDRV.ClientSubmit; sender thread limit exceeded")
        .assert_output_contains("Too many simultaneous connections for this mailbox")
        .assert_output_contains("Microsoft 365: 3");
}

#[test]
fn daily_quota() {
    let env = TestEnv::new();
    env.login("work");
    env.sim.set_faults(|f| f.quota_exceeded = true);
    send(&env)
        .assert_code(75)
        .assert_output_contains("SubmissionQuotaExceededException")
        .assert_output_contains("daily sending limit")
        .assert_output_contains("10,000 recipients");
}

#[test]
fn message_too_large_for_the_mailbox() {
    let config = SimConfig {
        max_message_size: 2000,
        ..SimConfig::default()
    };
    let env = TestEnv::with_sim(config);
    env.login("work");
    let big = "x".repeat(5000);
    env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--subject",
        "big",
        "--body",
        &big,
    ])
    .assert_code(65)
    .assert_output_contains("552 5.3.4")
    .assert_output_contains("The message is too large");
}

#[test]
fn server_unreachable() {
    let env = TestEnv::new();
    env.login("work");
    env.sim.set_faults(|f| f.smtp_reject_connections = true);
    send(&env)
        .assert_code(75)
        .assert_output_contains("the server closed the connection");
}

#[test]
fn gmail_refuses_the_token_with_its_334_challenge() {
    let env = gmail_env(SimConfig::gmail());
    env.login("work");
    set_user(&env, "bob@contoso.com");
    send(&env)
        .assert_code(77)
        .assert_output_contains("535 5.7.8")
        .assert_output_contains(
            r#"{"status":"400","schemes":"Bearer","scope":"https://mail.google.com/"}"#,
        )
        .assert_output_contains("\"Testing\" publishing status")
        .assert_output_contains("7 days");
}

#[test]
fn gmail_thread_limit_and_quota() {
    let config = SimConfig {
        max_connections_per_mailbox: 0,
        ..SimConfig::gmail()
    };
    let env = gmail_env(config);
    env.login("work");
    send(&env)
        .assert_code(75)
        .assert_output_contains("454 4.7.0 Too many concurrent SMTP connections");

    let env = gmail_env(SimConfig::gmail());
    env.login("work");
    env.sim.set_faults(|f| f.quota_exceeded = true);
    send(&env)
        .assert_code(75)
        .assert_output_contains("550 5.4.5 ")
        .assert_output_contains("daily sending limit");
}

#[test]
fn test_checklist_passes_every_step() {
    let env = TestEnv::new();
    env.login("work");
    let run = env.run(&["test", "--to", "bob@contoso.com"]);
    run.assert_success();
    for step in [
        "✓ Config",
        "✓ Access token",
        "✓ TCP connect",
        "✓ TLS",
        "✓ EHLO",
        "✓ AUTH",
        "✓ Sender (Send As)",
        "✓ Test message",
    ] {
        run.assert_output_contains(step);
    }
    run.assert_output_contains("SMTP.Send")
        .assert_output_contains("TLSv1.")
        .assert_output_contains("AUTH LOGIN XOAUTH2")
        .assert_output_contains("All checks passed");
    let m = &env.delivered()[0];
    run.assert_output_contains(&format!("queue id {}", m.id));
    assert_eq!(m.rcpt_to, vec!["bob@contoso.com"]);
}

#[test]
fn test_checklist_stops_at_the_first_failure() {
    let env = TestEnv::new();
    env.login("work");
    env.sim.with_directory(|d| d.smtp_auth_enabled = false);
    let run = env.run(&["test"]);
    run.assert_code(77)
        .assert_output_contains("✓ EHLO")
        .assert_output_contains("✗ AUTH")
        .assert_output_contains("· Sender (Send As)  not attempted")
        .assert_output_contains("· Test message      not attempted")
        .assert_output_contains("Authenticated SMTP");
    assert!(env.delivered().is_empty());

    env.sim.with_directory(|d| d.smtp_auth_enabled = true);
    let run = env.run(&["test", "--from", "support@contoso.com"]);
    run.assert_code(77)
        .assert_output_contains("✓ AUTH")
        .assert_output_contains("✗ Sender (Send As)")
        .assert_output_contains("· Test message      not attempted")
        .assert_output_contains("not allowed to send as support@contoso.com");

    // Not logged in: the token step fails and says how to fix it.
    let fresh = TestEnv::new();
    fresh
        .run(&["test"])
        .assert_code(77)
        .assert_output_contains("✗ Access token")
        .assert_output_contains("mailgate login");
}

/// Every entry of the library's catalogue, provoked through the simulator by making it answer
/// with the entry's sample reply at the step where the provider sends it: the user reads the
/// diagnosis (with its code) and the provider's exact words, and the exit status is the one the
/// catalogue promises.
#[test]
fn every_catalogue_entry_through_the_binary() {
    use m365_sim::{ForcedReply, SmtpStep};
    use mailgate::diagnose::smtp::CATALOGUE;
    use mailgate::smtp::Stage;

    let env = TestEnv::new();
    env.login("work");
    for entry in CATALOGUE {
        let at = match entry.stage {
            Stage::Ehlo => SmtpStep::Ehlo,
            Stage::Auth => SmtpStep::Auth,
            Stage::MailFrom => SmtpStep::MailFrom,
            Stage::RcptTo => SmtpStep::RcptTo,
            Stage::Message => SmtpStep::Message,
            other => panic!("no simulator step for {other:?}"),
        };
        let reply = entry.sample.replace('\n', "\r\n");
        env.sim.set_faults(|f| {
            f.smtp_forced_reply = Some(ForcedReply {
                at,
                reply,
                recipient: None,
            })
        });
        let run = send(&env);
        let first_line = entry.sample.lines().next().unwrap();
        assert_eq!(
            run.code,
            Some(entry.sysexit.code()),
            "{}\n{run}",
            entry.sample
        );
        run.assert_output_contains(&format!("({})\n", entry.code))
            .assert_output_contains(first_line)
            .assert_output_contains("  Fix:");
    }
    env.sim.set_faults(|f| f.smtp_forced_reply = None);
    assert!(env.delivered().is_empty());
}

#[test]
fn replies_only_a_forced_fault_produces() {
    use m365_sim::{ForcedReply, SmtpStep};
    let env = TestEnv::new();
    env.login("work");
    let force = |at, reply: &str, recipient: Option<&str>| {
        let (reply, recipient) = (reply.to_string(), recipient.map(str::to_string));
        env.sim.set_faults(move |f| {
            f.smtp_forced_reply = Some(ForcedReply {
                at,
                reply,
                recipient,
            })
        });
    };
    // Send As refused with Exchange's other wording: the names come from the session.
    force(
        SmtpStep::Message,
        "550 5.7.60 SMTP; Client does not have permissions to send as this sender",
        None,
    );
    env.run(&[
        "send",
        "--from",
        "sales@contoso.com",
        "--to",
        "bob@contoso.com",
        "--subject",
        "x",
        "--body",
        "x",
    ])
    .assert_code(77)
    .assert_output_contains(
        "alice@contoso.com is not allowed to send as sales@contoso.com (missing \"Send As\")",
    );
    // The same through sendmail, where only the From header names the shared mailbox.
    env.run_with_stdin(
        &["sendmail", "-t"],
        b"From: sales@contoso.com\nTo: bob@contoso.com\nSubject: x\n\nx\n",
    )
    .assert_code(77)
    .assert_output_contains(
        "alice@contoso.com is not allowed to send as sales@contoso.com (missing \"Send As\")",
    );
    // TLS 1.0/1.1 refused (a TLS-inspecting middlebox): 75, and what to do about it.
    force(SmtpStep::Ehlo, "421 4.7.66 TLS 1.0 and 1.1 are not supported. Please upgrade/update your client to support TLS 1.2. Visit https://aka.ms/smtp_auth_tls.", None);
    send(&env)
        .assert_code(75)
        .assert_output_contains("TLS-inspecting proxy");
    // Tenant/IP restriction.
    force(
        SmtpStep::MailFrom,
        "550 5.7.708 Service unavailable. Access denied, traffic not accepted from this IP.",
        None,
    );
    send(&env)
        .assert_code(77)
        .assert_output_contains("does not accept mail from this IP address");
    // One unknown recipient among two: the other gets the message, the exit status says 69.
    force(
        SmtpStep::RcptTo,
        "550 5.1.1 User unknown",
        Some("nobody@fabrikam.com"),
    );
    env.run(&[
        "send",
        "--to",
        "bob@contoso.com",
        "--to",
        "nobody@fabrikam.com",
        "--subject",
        "x",
        "--body",
        "x",
    ])
    .assert_code(69)
    .assert_output_contains("Sent to bob@contoso.com")
    .assert_output_contains("nobody@fabrikam.com: 550 5.1.1 User unknown")
    .assert_output_contains("The server refused the recipient nobody@fabrikam.com");
    assert_eq!(env.delivered().len(), 1);
    // A reply mailgate does not know: verbatim, with its enhanced code.
    force(
        SmtpStep::Message,
        "550 5.4.317 Message expired, cannot process",
        None,
    );
    send(&env)
        .assert_code(69)
        .assert_output_contains("(5.4.317)")
        .assert_output_contains("no explanation for this reply")
        .assert_output_contains("550 5.4.317 Message expired, cannot process");
}
