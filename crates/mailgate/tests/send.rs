//! `mailgate::send::AccountSender` against the simulator: the one path every command uses.

use std::path::Path;

use m365_sim::contoso::{ALICE, BOB, SALES, SUPPORT, TENANT_DOMAIN, WEB_APP_ID, WEB_APP_SECRET};
use m365_sim::{Event, SimConfig, Simulator};
use mailgate::config::Config;
use mailgate::message::{Draft, Mailbox, OutgoingMessage};
use mailgate::send::{AccountSender, SendError};
use mailgate::smtp::SmtpError;

/// A config with one app-only account (client credentials as alice): no browser needed.
fn config(dir: &Path, sim: &Simulator) -> Config {
    let ca = dir.join("ca.pem");
    sim.write_ca_file(&ca).unwrap();
    let text = format!(
        r#"token_store = "file"
state_dir = "{state}"

[accounts.app]
provider = "office365"
flow = "client_credentials"
tenant = "{TENANT_DOMAIN}"
client_id = "{WEB_APP_ID}"
client_secret = "{WEB_APP_SECRET}"
user = "{ALICE}"
token_url = "{token_url}"
authorize_url = "{authorize_url}"
smtp_host = "127.0.0.1"
smtp_port = {port}
ca_file = "{ca}"
"#,
        state = dir.join("state").display(),
        token_url = sim.token_url(TENANT_DOMAIN),
        authorize_url = sim.authorize_url(TENANT_DOMAIN),
        port = sim.smtp_addr().port(),
        ca = ca.display(),
    );
    Config::parse(&text, &dir.join("config.toml")).unwrap()
}

fn message(from: &str, subject: &str) -> OutgoingMessage {
    Draft {
        from: Some(Mailbox::new(from)),
        to: vec![Mailbox::new(BOB)],
        subject: Some(subject.into()),
        text: Some("x".into()),
        ..Draft::default()
    }
    .build()
    .unwrap()
}

fn count(sim: &Simulator, f: impl Fn(&Event) -> bool) -> usize {
    sim.events().iter().filter(|l| f(&l.event)).count()
}

#[tokio::test]
async fn batch_over_one_session_with_a_refused_message_in_the_middle() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let config = config(dir.path(), &sim);
    let sender = AccountSender::new(&config, config.account(Some("app")).unwrap()).unwrap();
    let batch = [
        message(ALICE, "one"),
        message(SUPPORT, "two"),
        message(SALES, "three"),
    ];
    let results = sender.send_batch(&batch).await.unwrap();
    assert_eq!(results.len(), 3);
    assert!(results[0].is_ok() && results[2].is_ok(), "{results:?}");
    match &results[1] {
        Err(SendError::Smtp(e @ SmtpError::Rejected { .. })) => {
            assert_eq!(e.reply().unwrap().enhanced.unwrap().to_string(), "5.2.252")
        }
        other => panic!("{other:?}"),
    }
    assert_eq!(sim.messages().len(), 2);
    assert_eq!(count(&sim, |e| matches!(e, Event::SmtpAuth { .. })), 1);
    // The app token was fetched once (client credentials) and reused.
    assert_eq!(count(&sim, |e| matches!(e, Event::TokenRequest { .. })), 1);
}

#[tokio::test]
async fn a_refused_cached_token_is_refreshed_once() {
    let dir = tempfile::tempdir().unwrap();
    let sim = Simulator::start(SimConfig::default()).await.unwrap();
    let config = config(dir.path(), &sim);
    let account = config.account(Some("app")).unwrap();
    let sender = AccountSender::new(&config, account).unwrap();
    let first = sender.send(&message(ALICE, "first")).await.unwrap();
    assert!(!first.refreshed_after_535);

    sim.expire_access_tokens();
    // A new sender, as a new process would have: the token comes from the store, looks valid,
    // and the server refuses it.
    let sender = AccountSender::new(&config, account).unwrap();
    let second = sender.send(&message(ALICE, "second")).await.unwrap();
    assert!(second.refreshed_after_535);
    assert!(second.outcome.queue_id.is_some());
    assert_eq!(count(&sim, |e| matches!(e, Event::TokenRequest { .. })), 2);
    let transcript = sender.transcript().to_string();
    assert!(
        transcript.contains("refreshing it and trying once more"),
        "{transcript}"
    );

    // SMTP AUTH disabled: a new token would not help, so none is fetched.
    sim.with_directory(|d| d.smtp_auth_enabled = false);
    let err = sender.send(&message(ALICE, "third")).await.unwrap_err();
    assert!(
        matches!(&err, SendError::Smtp(e) if e.is_auth_refused()),
        "{err:?}"
    );
    assert_eq!(err.diagnosis().unwrap().code, "5.7.139");
    assert_eq!(count(&sim, |e| matches!(e, Event::TokenRequest { .. })), 2);
}
