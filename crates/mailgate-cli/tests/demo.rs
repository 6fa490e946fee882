//! `mailgate demo` and `mailgate sim`: the README's first command and the standalone simulator.

mod common;

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::TestEnv;

#[test]
fn demo_signs_in_sends_and_diagnoses_without_any_setup() {
    let env = TestEnv::new();
    let run = env.run(&["demo"]);
    run.assert_success()
        .assert_output_contains("Signed in as alice@contoso.com")
        .assert_output_contains("Delivered to bob@contoso.com")
        // The mailbox's copy, with the attachment.
        .assert_output_contains("filename=\"report.csv\"")
        // The transcript, with the token redacted.
        .assert_output_contains("C: AUTH XOAUTH2 [redacted]")
        .assert_output_contains("S: 235 2.7.0 Authentication successful")
        // The two diagnosed failures.
        .assert_output_contains("5.7.139")
        .assert_output_contains("Authenticated SMTP")
        .assert_output_contains("Set-CASMailbox -Identity alice@contoso.com")
        .assert_output_contains("5.2.252")
        .assert_output_contains("Send As")
        .assert_output_contains("support@contoso.com")
        // No secret and no token anywhere.
        .assert_output_lacks(m365_sim::contoso::WEB_APP_SECRET)
        .assert_output_lacks("eyJ0eXAi")
        .assert_output_lacks("WARN");
}

#[test]
fn sim_prints_endpoints_and_a_config_and_serves_until_stopped() {
    let env = TestEnv::new();
    let ca = env.path("standalone-ca.pem");
    let mut child = env
        .cmd(&["sim", "--ca-out", ca.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut text = String::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    // The banner ends with the second account's ca_file line.
    while !text
        .split("[accounts.sim-app]")
        .nth(1)
        .is_some_and(|app| app.contains("ca_file ="))
    {
        let mut line = String::new();
        if out.read_line(&mut line).unwrap() == 0 || Instant::now() > deadline {
            break;
        }
        text.push_str(&line);
    }
    for needle in [
        "/oauth2/v2.0/token",
        "/oauth2/v2.0/authorize",
        "SMTP (STARTTLS)",
        "[accounts.sim]",
        "CA file",
    ] {
        assert!(
            text.contains(needle),
            "sim output lacks {needle:?}:\n{text}"
        );
    }
    assert!(std::fs::read_to_string(&ca)
        .unwrap()
        .contains("BEGIN CERTIFICATE"));

    // The printed token endpoint answers a client-credentials request.
    let token_url = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("token").map(|u| u.trim().to_string()))
        .expect("token endpoint line");
    let resp = reqwest::blocking::Client::new()
        .post(&token_url)
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", m365_sim::contoso::WEB_APP_ID),
            ("client_secret", m365_sim::contoso::WEB_APP_SECRET),
            ("scope", m365_sim::contoso::APP_ONLY_SCOPE),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status(), 200);
    let body: serde_json::Value = resp.json().unwrap();
    assert_eq!(body["token_type"], "Bearer");
    assert!(body.get("refresh_token").is_none());

    // Still up after the request; stops when killed.
    assert!(child.try_wait().unwrap().is_none(), "sim exited early");
    child.kill().unwrap();
    child.wait().unwrap();
}
