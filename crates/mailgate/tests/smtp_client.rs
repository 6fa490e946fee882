//! The SMTP client against the simulator's SMTP side: STARTTLS and implicit TLS, XOAUTH2 and
//! OAUTHBEARER, Gmail's 334 challenge, per-recipient results, batches over one connection,
//! dot-stuffing, and the refusals the client must explain.

use std::path::PathBuf;
use std::time::Duration;

use m365_sim::contoso::{ALICE, BOB, SALES, SMTP_SCOPE, SUPPORT, WEB_APP_ID};
use m365_sim::{Event, SimConfig, Simulator};
use mailgate::message::{Draft, Mailbox};
use mailgate::smtp::{
    AuthMechanism, Envelope, Security, SmtpClient, SmtpError, SmtpSettings, Stage,
};
use mailgate::sysexits::HasSysexit;
use mailgate::{Secret, Sysexit};

const GMAIL_SCOPE: &str = "https://mail.google.com/";

struct Env {
    sim: Simulator,
    _dir: tempfile::TempDir,
    ca: PathBuf,
}

async fn start(config: SimConfig) -> Env {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(config).await.expect("simulator starts");
    let ca = dir.path().join("ca.pem");
    sim.write_ca_file(&ca).unwrap();
    Env { sim, _dir: dir, ca }
}

impl Env {
    fn settings(&self, security: Security, auth: AuthMechanism) -> SmtpSettings {
        let port = match security {
            Security::Tls => self.sim.smtps_addr().expect("smtps configured").port(),
            _ => self.sim.smtp_addr().port(),
        };
        let mut s = SmtpSettings::new("127.0.0.1", port, security, auth);
        s.ca_file = Some(self.ca.clone());
        s.helo_name = "mailgate-test".into();
        s.read_timeout = Duration::from_secs(20);
        s.connect_timeout = Duration::from_secs(10);
        s
    }

    fn token(&self, user: &str, scope: &str) -> Secret {
        Secret::new(self.sim.mint_access_token(
            WEB_APP_ID,
            Some(user),
            &[scope],
            Duration::from_secs(3600),
        ))
    }

    async fn alice(&self) -> SmtpClient {
        let mut c = SmtpClient::connect(&self.settings(Security::Starttls, AuthMechanism::Xoauth2))
            .await
            .expect("connects");
        c.authenticate(ALICE, &self.token(ALICE, SMTP_SCOPE))
            .await
            .expect("alice authenticates");
        c
    }

    fn auth_events(&self) -> Vec<(String, Option<String>, String)> {
        self.sim
            .events()
            .into_iter()
            .filter_map(|l| match l.event {
                Event::SmtpAuth {
                    mechanism,
                    user,
                    reply,
                    ..
                } => Some((mechanism, user, reply)),
                _ => None,
            })
            .collect()
    }
}

fn message(
    from: &str,
    to: &[&str],
    subject: &str,
    body: &str,
) -> mailgate::message::OutgoingMessage {
    Draft {
        from: Some(Mailbox::new(from)),
        to: to.iter().map(|t| Mailbox::new(*t)).collect(),
        subject: Some(subject.into()),
        text: Some(body.into()),
        ..Draft::default()
    }
    .build()
    .unwrap()
}

fn rejected(e: &SmtpError) -> (Stage, u16, String) {
    match e {
        SmtpError::Rejected { stage, reply, .. } => {
            (*stage, reply.code, reply.enhanced_or_default().to_string())
        }
        other => panic!("expected a refusal, got {other:?}"),
    }
}

#[tokio::test]
async fn starttls_xoauth2_delivers_and_redacts_the_token() {
    let env = start(SimConfig::default()).await;
    let settings = env.settings(Security::Starttls, AuthMechanism::Xoauth2);
    let token = env.token(ALICE, SMTP_SCOPE);
    let mut c = SmtpClient::connect(&settings).await.unwrap();
    let tls = c.info().tls.clone().expect("TLS after STARTTLS");
    assert!(
        tls.version == "TLSv1.3" || tls.version == "TLSv1.2",
        "{tls:?}"
    );
    assert_eq!(tls.subject.as_deref(), Some(env.sim.hostname()));
    assert!(c.capabilities().offers(AuthMechanism::Xoauth2));
    assert!(c.capabilities().pipelining());
    assert!(!c.capabilities().starttls(), "no STARTTLS once TLS is on");
    let reply = c.authenticate(ALICE, &token).await.unwrap();
    assert_eq!(reply.code, 235);

    let m = message(ALICE, &[BOB], "hello", "first line\nsecond line\n");
    let out = c.send(&m.envelope, &m.data).await.unwrap();
    assert_eq!(out.accepted, vec![BOB]);
    assert!(out.refused.is_empty());
    let transcript = c.transcript().to_string();
    c.quit().await;

    let stored = env.sim.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(out.queue_id.as_deref(), Some(stored[0].id.as_str()));
    assert_eq!(stored[0].auth_user, ALICE);
    assert_eq!(stored[0].mail_from, ALICE);
    assert!(stored[0].text().contains("first line\r\nsecond line"));

    assert!(
        transcript.contains("C: AUTH XOAUTH2 [redacted]"),
        "{transcript}"
    );
    assert!(!transcript.contains(token.expose()));
    assert!(transcript.contains("S: 235 2.7.0 Authentication successful"));
    assert!(transcript.contains("C: STARTTLS"));
}

#[tokio::test]
async fn implicit_tls() {
    let env = start(SimConfig::default().smtps_listen("127.0.0.1:0")).await;
    let mut c = SmtpClient::connect(&env.settings(Security::Tls, AuthMechanism::Xoauth2))
        .await
        .unwrap();
    assert!(c.info().tls.is_some());
    assert!(!c.transcript().to_string().contains("STARTTLS"));
    c.authenticate(ALICE, &env.token(ALICE, SMTP_SCOPE))
        .await
        .unwrap();
    let m = message(ALICE, &[BOB], "over 465", "x");
    c.send(&m.envelope, &m.data).await.unwrap();
    c.quit().await;
    assert_eq!(env.sim.messages().len(), 1);
}

#[tokio::test]
async fn oauthbearer_against_gmail() {
    let env = start(SimConfig::gmail()).await;
    let mut c = SmtpClient::connect(&env.settings(Security::Starttls, AuthMechanism::Oauthbearer))
        .await
        .unwrap();
    assert!(c.capabilities().offers(AuthMechanism::Oauthbearer));
    let reply = c
        .authenticate(ALICE, &env.token(ALICE, GMAIL_SCOPE))
        .await
        .unwrap();
    assert_eq!(reply.code, 235);
    let m = message(ALICE, &[BOB], "bearer", "x");
    let out = c.send(&m.envelope, &m.data).await.unwrap();
    assert!(out.queue_id.is_some());
    c.quit().await;
    let auth = env.auth_events();
    assert_eq!(auth.len(), 1);
    assert_eq!(auth[0].0, "OAUTHBEARER");
    assert_eq!(auth[0].1.as_deref(), Some(ALICE));
}

#[tokio::test]
async fn gmail_challenge_is_answered_and_reported() {
    let env = start(SimConfig::gmail()).await;
    for (mechanism, answer) in [
        (AuthMechanism::Xoauth2, "C: \n"),
        (AuthMechanism::Oauthbearer, "C: AQ==\n"),
    ] {
        let mut c = SmtpClient::connect(&env.settings(Security::Starttls, mechanism))
            .await
            .unwrap();
        // An expired token: Gmail answers 334 with its JSON, then 535 5.7.8.
        let expired = Secret::new(env.sim.mint_access_token(
            WEB_APP_ID,
            Some(ALICE),
            &[GMAIL_SCOPE],
            Duration::ZERO,
        ));
        let err = c.authenticate(ALICE, &expired).await.unwrap_err();
        assert_eq!(rejected(&err), (Stage::Auth, 535, "5.7.8".to_string()));
        let SmtpError::Rejected {
            challenge,
            diagnosis,
            ..
        } = &err
        else {
            unreachable!()
        };
        let challenge = challenge.as_ref().expect("the decoded challenge is kept");
        assert_eq!(challenge.status.as_deref(), Some("400"));
        assert_eq!(challenge.scope.as_deref(), Some(GMAIL_SCOPE));
        assert_eq!(diagnosis.code, "5.7.8");
        let text = diagnosis.to_string();
        assert!(
            text.contains(r#""scope":"https://mail.google.com/""#),
            "{text}"
        );
        assert!(text.contains("\"Testing\" publishing status"), "{text}");
        assert_eq!(err.sysexit(), Sysexit::NoPerm);
        let transcript = c.transcript().to_string();
        assert!(
            transcript.contains(answer),
            "{mechanism:?} must answer the challenge:\n{transcript}"
        );
        assert!(!transcript.contains(expired.expose()));
        // The session is still usable after the refusal.
        assert!(c.is_usable());
        c.quit().await;
    }
}

#[tokio::test]
async fn one_refused_recipient_does_not_stop_the_others() {
    let config = SimConfig {
        max_recipients_per_message: 2,
        ..SimConfig::default()
    };
    let env = start(config).await;
    let mut c = env.alice().await;
    let rcpt = ["bob@contoso.com", "carol@fabrikam.com", "dave@fabrikam.com"];
    let m = message(ALICE, &rcpt, "three", "x");
    let out = c.send(&m.envelope, &m.data).await.unwrap();
    c.quit().await;
    assert_eq!(out.accepted, &rcpt[..2]);
    assert_eq!(out.refused.len(), 1);
    let r = &out.refused[0];
    assert_eq!(r.address, "dave@fabrikam.com");
    assert_eq!(r.reply.code, 452);
    assert_eq!(r.diagnosis.code, "4.5.3");
    assert_eq!(r.diagnosis.sysexit, Sysexit::TempFail);
    let stored = env.sim.messages();
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0].rcpt_to, &rcpt[..2]);
}

#[tokio::test]
async fn every_recipient_refused_is_an_error_naming_them() {
    let config = SimConfig {
        max_recipients_per_message: 0,
        ..SimConfig::default()
    };
    let env = start(config).await;
    let mut c = env.alice().await;
    let m = message(ALICE, &[BOB], "none", "x");
    let err = c.send(&m.envelope, &m.data).await.unwrap_err();
    match &err {
        SmtpError::AllRecipientsRefused { refused, .. } => assert_eq!(refused[0].address, BOB),
        other => panic!("{other:?}"),
    }
    assert_eq!(err.sysexit(), Sysexit::TempFail);
    // The connection goes on: RSET, then the next message.
    assert!(c.is_usable());
    c.quit().await;
    assert!(env.sim.messages().is_empty());
}

#[tokio::test]
async fn a_batch_shares_one_connection_and_one_auth() {
    let env = start(SimConfig::default()).await;
    let mut c = env.alice().await;
    for i in 0..5 {
        let m = message(ALICE, &[BOB], &format!("batch {i}"), "x");
        let out = c.send(&m.envelope, &m.data).await.unwrap();
        assert!(out.queue_id.is_some());
    }
    // A refused message in the middle does not spoil the session.
    let m = message(SUPPORT, &[BOB], "as support", "x");
    let err = c.send(&m.envelope, &m.data).await.unwrap_err();
    assert_eq!(rejected(&err).2, "5.2.252");
    let m = message(SALES, &[BOB], "as sales", "x");
    c.send(&m.envelope, &m.data).await.unwrap();
    let transcript = c.transcript().to_string();
    c.quit().await;
    assert_eq!(env.sim.messages().len(), 6);
    assert_eq!(env.auth_events().len(), 1, "one AUTH for the whole batch");
    assert_eq!(
        transcript.matches("C: RSET").count(),
        6,
        "RSET between messages:\n{transcript}"
    );
    assert_eq!(
        transcript.matches("C: EHLO").count(),
        2,
        "EHLO before and after STARTTLS only"
    );
}

#[tokio::test]
async fn dot_stuffing_keeps_dot_lines() {
    let env = start(SimConfig::default()).await;
    let mut c = env.alice().await;
    let raw = b"From: alice@contoso.com\r\nTo: bob@contoso.com\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading dot\nbare LF line\n.\n";
    let out = c.send(&Envelope::new(ALICE, [BOB]), raw).await.unwrap();
    assert!(out.queue_id.is_some());
    let transcript = c.transcript().to_string();
    c.quit().await;
    let stored = env.sim.messages();
    assert_eq!(
        stored[0].data,
        b"From: alice@contoso.com\r\nTo: bob@contoso.com\r\nSubject: dots\r\n\r\n.\r\n..\r\n.leading dot\r\nbare LF line\r\n.\r\n"
    );
    assert!(
        transcript.contains("[message: "),
        "message data is summarised, not logged"
    );
}

#[tokio::test]
async fn eight_bit_and_utf8_parameters_when_offered_and_needed() {
    let env = start(SimConfig::default()).await;
    let mut c = env.alice().await;
    let raw = "From: alice@contoso.com\r\nTo: bob@contoso.com\r\nSubject: Grüße\r\n\r\nHällo\r\n"
        .as_bytes();
    c.send(&Envelope::new(ALICE, [BOB]), raw).await.unwrap();
    let m = message(ALICE, &[BOB], "ascii", "plain");
    c.send(&m.envelope, &m.data).await.unwrap();
    let transcript = c.transcript().to_string();
    c.quit().await;
    let mails: Vec<&str> = transcript
        .lines()
        .filter(|l| l.starts_with("C: MAIL FROM"))
        .collect();
    assert!(
        mails[0].contains("BODY=8BITMIME") && mails[0].contains("SMTPUTF8"),
        "{mails:?}"
    );
    assert!(mails[0].contains("SIZE="));
    assert!(
        !mails[1].contains("BODY=8BITMIME") && !mails[1].contains("SMTPUTF8"),
        "{mails:?}"
    );
}

#[tokio::test]
async fn size_is_checked_before_sending() {
    let env = start(SimConfig::gmail()).await;
    let mut c = SmtpClient::connect(&env.settings(Security::Starttls, AuthMechanism::Xoauth2))
        .await
        .unwrap();
    c.authenticate(ALICE, &env.token(ALICE, GMAIL_SCOPE))
        .await
        .unwrap();
    let limit = c.capabilities().size.expect("Gmail announces SIZE");
    let big = vec![b'x'; limit + 10];
    let err = c
        .send(&Envelope::new(ALICE, [BOB]), &big)
        .await
        .unwrap_err();
    assert!(
        matches!(err, SmtpError::MessageTooBig { size, .. } if size > limit),
        "{err:?}"
    );
    assert_eq!(err.sysexit(), Sysexit::DataErr);
    assert!(
        !c.transcript().to_string().contains("MAIL FROM"),
        "nothing sent"
    );
    c.quit().await;
}

#[tokio::test]
async fn send_as_denied_names_both_mailboxes() {
    let env = start(SimConfig::default()).await;
    let mut c = env.alice().await;
    let m = message(SUPPORT, &[BOB], "as support", "x");
    let err = c.send(&m.envelope, &m.data).await.unwrap_err();
    c.quit().await;
    assert_eq!(rejected(&err), (Stage::Message, 554, "5.2.252".into()));
    let d = err.diagnosis().unwrap();
    assert_eq!(
        d.title,
        format!("{ALICE} is not allowed to send as {SUPPORT} (missing \"Send As\")")
    );
    assert_eq!(err.sysexit(), Sysexit::NoPerm);
    assert!(env.sim.messages().is_empty());
}

#[tokio::test]
async fn auth_refusals_are_diagnosed() {
    let env = start(SimConfig::default()).await;
    let settings = env.settings(Security::Starttls, AuthMechanism::Xoauth2);
    // A shared mailbox as user=: 535 5.7.3.
    let mut c = SmtpClient::connect(&settings).await.unwrap();
    let err = c
        .authenticate(SALES, &env.token(ALICE, SMTP_SCOPE))
        .await
        .unwrap_err();
    assert_eq!(rejected(&err), (Stage::Auth, 535, "5.7.3".into()));
    assert!(err.is_auth_refused());
    assert!(err
        .diagnosis()
        .unwrap()
        .to_string()
        .contains("not a shared mailbox"));
    c.quit().await;
    // Authenticated SMTP off for the mailbox: 5.7.139.
    env.sim
        .with_directory(|d| d.user_mut(ALICE).unwrap().smtp_auth_enabled = false);
    let mut c = SmtpClient::connect(&settings).await.unwrap();
    let err = c
        .authenticate(ALICE, &env.token(ALICE, SMTP_SCOPE))
        .await
        .unwrap_err();
    assert_eq!(rejected(&err).2, "5.7.139");
    assert!(err
        .diagnosis()
        .unwrap()
        .title
        .contains("for the mailbox alice@contoso.com"));
    c.quit().await;
}

#[tokio::test]
async fn mail_without_auth_gets_5_7_57() {
    let env = start(SimConfig::default()).await;
    let mut c = SmtpClient::connect(&env.settings(Security::Starttls, AuthMechanism::Xoauth2))
        .await
        .unwrap();
    let m = message(ALICE, &[BOB], "no auth", "x");
    let err = c.send(&m.envelope, &m.data).await.unwrap_err();
    c.quit().await;
    assert_eq!(rejected(&err), (Stage::MailFrom, 530, "5.7.57".into()));
    assert_eq!(err.sysexit(), Sysexit::NoPerm);
}

#[tokio::test]
async fn thread_limit_is_transient() {
    let config = SimConfig {
        max_connections_per_mailbox: 1,
        ..SimConfig::default()
    };
    let env = start(config).await;
    let first = env.alice().await;
    let mut second = env.alice().await;
    let m = message(ALICE, &[BOB], "second", "x");
    let err = second.send(&m.envelope, &m.data).await.unwrap_err();
    assert_eq!(rejected(&err), (Stage::MailFrom, 432, "4.3.2".into()));
    assert_eq!(err.sysexit(), Sysexit::TempFail);
    second.quit().await;
    first.quit().await;
}

#[tokio::test]
async fn untrusted_certificates_and_plain_to_remote_hosts_are_refused() {
    let env = start(SimConfig::default()).await;
    let mut settings = env.settings(Security::Starttls, AuthMechanism::Xoauth2);
    settings.ca_file = None;
    let err = SmtpClient::connect(&settings).await.unwrap_err();
    assert!(matches!(err, SmtpError::Tls { .. }), "{err:?}");
    assert!(
        err.diagnosis().unwrap().title.contains("not trusted"),
        "{:?}",
        err.diagnosis()
    );
    assert!(err.diagnosis().unwrap().to_string().contains("ca_file"));

    let plain = SmtpSettings::new(
        "smtp.example.com",
        25,
        Security::Plain,
        AuthMechanism::Xoauth2,
    );
    let err = SmtpClient::connect(&plain).await.unwrap_err();
    assert!(matches!(err, SmtpError::PlainNotLoopback { .. }));
    assert_eq!(err.sysexit(), Sysexit::Config);
}

#[tokio::test]
async fn connection_refused_is_transient_with_a_diagnosis() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    drop(listener);
    let settings = SmtpSettings::new(
        "127.0.0.1",
        port,
        Security::Starttls,
        AuthMechanism::Xoauth2,
    );
    let err = SmtpClient::connect(&settings).await.unwrap_err();
    assert!(matches!(err, SmtpError::Connect { .. }), "{err:?}");
    assert_eq!(err.sysexit(), Sysexit::TempFail);
    assert!(err
        .diagnosis()
        .unwrap()
        .to_string()
        .contains("smtp.office365.com port 587"));
}
