//! `mailgate token`, `status` and `logout` through the real binary, against the simulator:
//! refresh with rotation, two processes refreshing at once, private files, no secret in output.

mod common;

use std::path::PathBuf;
use std::process::Stdio;

use common::{assert_private_file, TestEnv};
use m365_sim::contoso;
use serde_json::Value;

fn token_file(env: &TestEnv, account: &str) -> PathBuf {
    env.state_dir()
        .join("tokens")
        .join(format!("{account}.json"))
}

fn read_tokens(env: &TestEnv, account: &str) -> Value {
    let text = std::fs::read_to_string(token_file(env, account)).expect("token file exists");
    serde_json::from_str(&text).expect("token file is JSON")
}

fn write_tokens(env: &TestEnv, account: &str, v: &Value) {
    std::fs::write(
        token_file(env, account),
        serde_json::to_vec_pretty(v).unwrap(),
    )
    .unwrap();
}

fn s(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_string()
}

/// Makes the stored access token look expired, as if an hour had passed.
fn expire_stored_access_token(env: &TestEnv, account: &str) {
    let mut v = read_tokens(env, account);
    v["expires_at"] = Value::String("2020-01-01T00:00:00Z".into());
    write_tokens(env, account, &v);
}

/// Successful refresh-token grants the simulator served.
fn refreshes(env: &TestEnv) -> usize {
    env.sim
        .events()
        .iter()
        .filter(|l| {
            matches!(&l.event, m365_sim::Event::TokenRequest { grant_type, outcome, .. }
                if grant_type == "refresh_token" && outcome == "ok")
        })
        .count()
}

/// Asserts that none of `secrets` shows up in a run's output (stdout and stderr).
#[track_caller]
fn assert_no_secrets(run: &common::Run, secrets: &[&str]) {
    for secret in secrets.iter().filter(|s| !s.is_empty()) {
        run.assert_output_lacks(secret);
    }
}

#[test]
fn token_prints_the_stored_token_then_refreshes_and_saves_the_rotation() {
    let env = TestEnv::new();
    let login = env.login("work");
    let first = read_tokens(&env, "work");
    let (at1, rt1) = (s(&first, "access_token"), s(&first, "refresh_token"));
    assert!(
        !at1.is_empty() && !rt1.is_empty(),
        "login stored both tokens: {first}"
    );
    assert_no_secrets(&login, &[&at1, &rt1, contoso::WEB_APP_SECRET]);

    // Still valid: printed as stored, alone on stdout.
    let run = env.run(&["token", "work"]);
    run.assert_success();
    assert_eq!(run.stdout, format!("{at1}\n"));
    assert_eq!(run.stderr, "", "a private config: nothing on stderr");
    // A config that holds the client secret and that other users can read is worth a warning on
    // stderr, and the only thing there.
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let run = env.run(&["token", "work"]);
        assert_eq!(run.stdout, format!("{at1}\n"));
        assert!(run.stderr.contains("other users can read it"), "{run}");
        std::fs::set_permissions(&env.config_path, std::fs::Permissions::from_mode(0o600)).unwrap();
        let run = env.run(&["token", "work"]);
        assert_eq!(run.stdout, format!("{at1}\n"));
        assert_eq!(run.stderr, "", "a private config: nothing on stderr");
    }

    // Expired: refreshed; the rotated refresh token is saved.
    expire_stored_access_token(&env, "work");
    let run = env.run(&["token"]);
    run.assert_success();
    let second = read_tokens(&env, "work");
    let (at2, rt2) = (s(&second, "access_token"), s(&second, "refresh_token"));
    assert_eq!(run.stdout, format!("{at2}\n"), "prints the token it stored");
    assert_ne!(at2, at1, "a new access token");
    assert_ne!(
        rt2, rt1,
        "the refresh token rotated and the new one was stored"
    );
    assert_ne!(
        s(&second, "refresh_token_issued_at"),
        s(&first, "refresh_token_issued_at")
    );
    assert!(s(&second, "expires_at").as_str() > "2025");
    assert_no_secrets(&run, &[&rt1, &rt2, contoso::WEB_APP_SECRET]);
    assert_private_file(&token_file(&env, "work"));

    // The stored rotation works: another refresh succeeds.
    expire_stored_access_token(&env, "work");
    env.run(&["token", "work"]).assert_success();
    let third = read_tokens(&env, "work");
    assert_ne!(s(&third, "refresh_token"), rt2);

    // And a lost rotation fails visibly: the simulator revoked the replaced refresh token.
    let mut stale = third.clone();
    stale["refresh_token"] = Value::String(rt1.clone());
    stale["expires_at"] = Value::String("2020-01-01T00:00:00Z".into());
    write_tokens(&env, "work", &stale);
    let run = env.run(&["token", "work"]);
    run.assert_code(77);
    assert_eq!(run.stdout, "", "no token on failure");
    run.assert_output_contains("mailgate login work");
    assert_no_secrets(&run, &[&rt1, contoso::WEB_APP_SECRET]);
}

#[test]
fn min_valid_and_force_refresh() {
    let env = TestEnv::new();
    env.login("work");
    let at1 = s(&read_tokens(&env, "work"), "access_token");
    // The token lives about an hour: asking for two hours of validity refreshes it.
    let run = env.run(&["token", "--min-valid", "7200"]);
    run.assert_success();
    let at2 = s(&read_tokens(&env, "work"), "access_token");
    assert_ne!(at1, at2);
    assert_eq!(run.stdout.trim(), at2);
    let run = env.run(&["token", "--force"]);
    run.assert_success();
    let at3 = s(&read_tokens(&env, "work"), "access_token");
    assert_ne!(at3, at2);
    assert_eq!(run.stdout.trim(), at3);
}

#[test]
fn concurrent_token_processes_with_an_expired_token_both_succeed() {
    let env = TestEnv::new();
    env.login("work");
    for round in 0..3 {
        expire_stored_access_token(&env, "work");
        let before = s(&read_tokens(&env, "work"), "refresh_token");
        let children: Vec<_> = (0..4)
            .map(|_| {
                env.cmd(&["token", "work"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let runs: Vec<common::Run> = children
            .into_iter()
            .map(|c| common::Run::from(c.wait_with_output().unwrap()))
            .collect();
        for run in &runs {
            run.assert_success();
        }
        let stored = read_tokens(&env, "work");
        let at = s(&stored, "access_token");
        let rt = s(&stored, "refresh_token");
        assert_ne!(rt, before, "round {round}: rotated");
        // One process refreshed; the others waited for its lock and took its result.
        for run in &runs {
            assert_eq!(run.stdout, format!("{at}\n"), "round {round}: {run}");
        }
        // (Each round also ends with one refresh of its own, below.)
        assert_eq!(
            refreshes(&env),
            2 * round + 1,
            "exactly one refresh for the four"
        );
        // The store is consistent: the refresh token in it is the live one.
        expire_stored_access_token(&env, "work");
        env.run(&["token", "work"]).assert_success();
    }
}

#[cfg(unix)]
#[test]
fn token_files_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let env = TestEnv::new();
    env.login("work");
    let dir = env.state_dir().join("tokens");
    let mode = std::fs::metadata(&dir).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o700, "tokens dir");
    assert_private_file(&token_file(&env, "work"));
    assert_private_file(&dir.join("work.lock"));
    // No temporary file is left behind by the atomic writes.
    expire_stored_access_token(&env, "work");
    env.run(&["token"]).assert_success();
    assert_private_file(&token_file(&env, "work"));
    let stray: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(stray.is_empty(), "{stray:?}");
}

#[test]
fn token_without_login_says_to_log_in() {
    let env = TestEnv::new();
    let run = env.run(&["token", "work"]);
    run.assert_code(77);
    assert_eq!(run.stdout, "");
    run.assert_output_contains("mailgate login work");
}

#[test]
fn client_credentials_needs_no_login() {
    let env = TestEnv::new();
    let run = env.run(&["token", "app"]);
    run.assert_success();
    let stored = read_tokens(&env, "app");
    assert_eq!(stored["flow"], "client_credentials");
    assert_eq!(run.stdout, format!("{}\n", s(&stored, "access_token")));
    assert!(stored["refresh_token"].is_null());
    // Still valid: the same token again, no new grant.
    let again = env.run(&["token", "app"]);
    assert_eq!(again.stdout, run.stdout);
    // Expired: a new app token.
    expire_stored_access_token(&env, "app");
    let third = env.run(&["token", "app"]);
    third.assert_success();
    assert_ne!(third.stdout, run.stdout);
    assert_no_secrets(&third, &[contoso::WEB_APP_SECRET]);
}

#[test]
fn status_reports_each_account_without_secrets() {
    let env = TestEnv::new();
    let run = env.run(&["status", "--json"]);
    run.assert_success();
    let v: Value = serde_json::from_str(&run.stdout).expect("status --json is JSON");
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 2);
    let work = accounts.iter().find(|a| a["account"] == "work").unwrap();
    assert_eq!(work["logged_in"], false);
    assert_eq!(work["flow"], "authorization_code");
    assert_eq!(work["store"], "file");
    assert_eq!(work["default"], true);

    let text = env.run(&["status"]);
    text.assert_success();
    text.assert_output_contains("not signed in: run `mailgate login work`");

    env.login("work");
    let tokens = read_tokens(&env, "work");
    let secrets = [
        s(&tokens, "access_token"),
        s(&tokens, "refresh_token"),
        contoso::WEB_APP_SECRET.to_string(),
    ];
    let secrets: Vec<&str> = secrets.iter().map(String::as_str).collect();

    let run = env.run(&["status", "work", "--json"]);
    run.assert_success();
    assert_no_secrets(&run, &secrets);
    let v: Value = serde_json::from_str(&run.stdout).unwrap();
    let accounts = v["accounts"].as_array().unwrap();
    assert_eq!(accounts.len(), 1, "only the account asked for");
    let work = &accounts[0];
    assert_eq!(work["logged_in"], true);
    assert_eq!(
        work["identity"].as_str().unwrap().to_lowercase(),
        contoso::ALICE
    );
    assert_eq!(work["refresh_token_stored"], true);
    assert_eq!(work["refresh_token_age_days"], 0);
    assert_eq!(work["access_token_valid"], true);
    assert!(work["access_token_expires_at"].as_str().is_some());
    assert!(work["store_location"]
        .as_str()
        .unwrap()
        .contains(&token_file(&env, "work").display().to_string()));
    assert_eq!(work["warnings"].as_array().unwrap().len(), 0, "{work}");

    let text = env.run(&["status"]);
    text.assert_success();
    assert_no_secrets(&text, &secrets);
    text.assert_output_contains("tokens stored in:");
    text.assert_output_contains(&token_file(&env, "work").display().to_string());
    text.assert_output_contains("refresh token:");
    text.assert_output_contains("stored, issued today");
    text.assert_output_contains("valid until");
}

#[test]
fn status_warns_when_the_refresh_token_nears_its_lapse() {
    let env = TestEnv::new();
    env.login("work");
    let mut v = read_tokens(&env, "work");
    let old = time::OffsetDateTime::now_utc() - time::Duration::days(70);
    v["refresh_token_issued_at"] = Value::String(
        old.format(&time::format_description::well_known::Rfc3339)
            .unwrap(),
    );
    write_tokens(&env, "work", &v);
    let run = env.run(&["status", "--json"]);
    let j: Value = serde_json::from_str(&run.stdout).unwrap();
    let work = j["accounts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|a| a["account"] == "work")
        .unwrap()
        .clone();
    assert_eq!(work["refresh_token_age_days"], 70);
    let warning = work["warnings"][0].as_str().unwrap();
    assert!(
        warning.contains("70 days old") && warning.contains("90 days"),
        "{warning}"
    );
    env.run(&["status"])
        .assert_output_contains("warning:")
        .assert_output_contains("70 days old");

    // Using the account renews the refresh token and clears the warning.
    expire_stored_access_token(&env, "work");
    env.run(&["token"]).assert_success();
    let run = env.run(&["status", "work", "--json"]);
    let j: Value = serde_json::from_str(&run.stdout).unwrap();
    assert_eq!(j["accounts"][0]["refresh_token_age_days"], 0);
    assert_eq!(j["accounts"][0]["warnings"].as_array().unwrap().len(), 0);
}

#[test]
fn logout_forgets_the_tokens() {
    let env = TestEnv::new();
    env.login("work");
    let rt = s(&read_tokens(&env, "work"), "refresh_token");
    let run = env.run(&["logout", "work"]);
    run.assert_success();
    run.assert_output_contains("forgot the tokens");
    assert_no_secrets(&run, &[&rt]);
    assert!(!token_file(&env, "work").exists());
    env.run(&["token", "work"])
        .assert_code(77)
        .assert_output_contains("mailgate login work");
    env.run(&["logout"])
        .assert_success()
        .assert_output_contains("no tokens were stored");
    let j: Value = serde_json::from_str(&env.run(&["status", "work", "--json"]).stdout).unwrap();
    assert_eq!(j["accounts"][0]["logged_in"], false);
}

#[test]
fn tokens_of_another_app_are_not_used() {
    let env = TestEnv::new();
    env.login("work");
    let mut v = read_tokens(&env, "work");
    v["client_id"] = Value::String(contoso::PUBLIC_APP_ID.into());
    write_tokens(&env, "work", &v);
    let run = env.run(&["token", "work"]);
    run.assert_code(77);
    run.assert_output_contains("mailgate login work");
    run.assert_output_contains(contoso::PUBLIC_APP_ID);
}

#[test]
fn a_damaged_token_file_is_reported() {
    let env = TestEnv::new();
    env.login("work");
    std::fs::write(
        token_file(&env, "work"),
        b"{\"flow\": \"authorization_code\", trunc",
    )
    .unwrap();
    let run = env.run(&["token", "work"]);
    run.assert_code(77);
    run.assert_output_contains("damaged");
    run.assert_output_contains("mailgate login work");
}

#[cfg(target_os = "linux")]
#[test]
fn auto_store_uses_the_file_where_the_keyring_does_not_persist() {
    // Linux's kernel keyring (the only one this build has there) loses entries on reboot, so
    // `auto` must not pick it: the tokens go to the 0600 file, and status says so.
    let env = TestEnv::new();
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    env.write_config(&text.replace("token_store = \"file\"", "token_store = \"auto\""));
    env.run(&["token", "app"]).assert_success();
    assert_private_file(&token_file(&env, "app"));
    let j: Value = serde_json::from_str(&env.run(&["status", "app", "--json"]).stdout).unwrap();
    assert_eq!(j["token_store"], "auto");
    assert_eq!(j["accounts"][0]["store"], "file");
}

#[test]
fn status_fails_when_tokens_cannot_be_read() {
    let env = TestEnv::new();
    env.login("work");
    std::fs::write(token_file(&env, "work"), b"garbage").unwrap();
    let run = env.run(&["status"]);
    run.assert_code(77);
    run.assert_output_contains("damaged");
    // The other account is still reported.
    run.assert_output_contains("app (office365, client_credentials)");
}
