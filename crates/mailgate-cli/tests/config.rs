//! The config file through the real binary: where it is found, how a bad one is reported (file,
//! account, key, what is allowed; exit 78), and `mailgate init` writing one that loads.

mod common;

use common::{assert_private_file, TestEnv};
use m365_sim::contoso;
use serde_json::Value;

/// The standard config with `extra` lines appended to `[accounts.work]`.
fn config_with(env: &TestEnv, extra: &[(&str, &str)]) -> String {
    format!(
        "token_store = \"file\"\ndefault_account = \"work\"\n\n{}",
        env.account_toml("work", extra)
    )
}

#[test]
fn a_bad_value_names_file_account_key_and_allowed_values_and_exits_78() {
    let env = TestEnv::new();
    env.write_config(&config_with(&env, &[("smtp_security", "\"ssl\"")]));
    for cmd in [&["status"][..], &["token"], &["logout"]] {
        let run = env.run(cmd);
        run.assert_code(78);
        run.assert_output_contains(&format!(
            "config {}: [accounts.work] smtp_security = \"ssl\": expected one of starttls, tls, plain",
            env.config_path.display()
        ));
        assert_eq!(run.stdout, "");
    }
}

#[test]
fn unknown_keys_are_refused() {
    let env = TestEnv::new();
    env.write_config(&config_with(&env, &[("smtp_securty", "\"tls\"")]));
    let run = env.run(&["status"]);
    run.assert_code(78);
    run.assert_output_contains(
        "[accounts.work] smtp_securty: unknown key (did you mean smtp_security?)",
    );

    env.write_config(&format!("colour = \"blue\"\n{}", config_with(&env, &[])));
    env.run(&["status"])
        .assert_code(78)
        .assert_output_contains("colour: unknown key");
}

#[test]
fn unsafe_settings_are_refused() {
    let env = TestEnv::new();
    env.write_config(&config_with(
        &env,
        &[(
            "token_url",
            "\"http://login.example.com/contoso/oauth2/v2.0/token\"",
        )],
    ));
    env.run(&["token"])
        .assert_code(78)
        .assert_output_contains("[accounts.work] token_url = \"http://login.example.com")
        .assert_output_contains("https://");

    env.write_config(&config_with(
        &env,
        &[
            ("smtp_security", "\"plain\""),
            ("smtp_host", "\"smtp.example.com\""),
        ],
    ));
    env.run(&["status"])
        .assert_code(78)
        .assert_output_contains("smtp_security = \"plain\"")
        .assert_output_contains("loopback");

    env.write_config(&config_with(
        &env,
        &[("flow", "\"client_credentials\""), ("tenant", "\"common\"")],
    ));
    env.run(&["status"])
        .assert_code(78)
        .assert_output_contains("[accounts.work] tenant = \"common\"")
        .assert_output_contains("client_credentials needs your own tenant");
}

#[test]
fn secrets_are_not_shown_in_config_errors() {
    let env = TestEnv::new();
    env.write_config(&config_with(
        &env,
        &[("client_secret_env", "\"MAILGATE_TEST_SECRET\"")],
    ));
    let run = env.run(&["status"]);
    run.assert_code(78);
    run.assert_output_contains("set at most one of client_secret, client_secret_env");
    run.assert_output_lacks(contoso::WEB_APP_SECRET);

    // A secret command that fails: a clear error, exit 78, its output (the secret) not shown.
    env.write_config(&config_with(
        &env,
        &[
            ("client_secret", ""),
            (
                "client_secret_command",
                "[\"sh\", \"-c\", \"printf 's3cr%s-output' 3t; echo vault locked >&2; exit 4\"]",
            ),
            ("flow", "\"client_credentials\""),
        ],
    ));
    let run = env.run(&["token"]);
    run.assert_code(78);
    run.assert_output_contains("client_secret_command");
    run.assert_output_contains("vault locked");
    run.assert_output_lacks("s3cr3t-output");
}

#[test]
fn missing_config_says_how_to_create_one() {
    let env = TestEnv::new();
    std::fs::remove_file(&env.config_path).unwrap();
    let run = env.run(&["status"]);
    run.assert_code(78);
    run.assert_output_contains(&env.config_path.display().to_string());
    run.assert_output_contains("mailgate init");
}

#[test]
fn config_location_flag_env_and_xdg() {
    let env = TestEnv::new();
    let text = std::fs::read_to_string(&env.config_path).unwrap();
    let elsewhere = env.path("elsewhere.toml");
    std::fs::write(
        &elsewhere,
        text.replace("default_account = \"work\"", "default_account = \"app\""),
    )
    .unwrap();
    let default_of = |run: common::Run| -> String {
        run.assert_success();
        let v: Value = serde_json::from_str(&run.stdout).unwrap();
        let accounts = v["accounts"].as_array().unwrap();
        accounts.iter().find(|a| a["default"] == true).unwrap()["account"]
            .as_str()
            .unwrap()
            .to_string()
    };
    // XDG_CONFIG_HOME
    assert_eq!(default_of(env.run(&["status", "--json"])), "work");
    // MAILGATE_CONFIG beats XDG
    let run = common::Run::from(
        env.cmd(&["status", "--json"])
            .env("MAILGATE_CONFIG", &elsewhere)
            .output()
            .unwrap(),
    );
    assert_eq!(default_of(run), "app");
    // --config beats MAILGATE_CONFIG
    let run = common::Run::from(
        env.cmd(&[
            "status",
            "--json",
            "--config",
            &env.config_path.display().to_string(),
        ])
        .env("MAILGATE_CONFIG", &elsewhere)
        .output()
        .unwrap(),
    );
    assert_eq!(default_of(run), "work");
}

#[test]
fn state_dir_setting_moves_the_tokens() {
    let env = TestEnv::new();
    let state = env.path("custom-state");
    env.write_config(&format!(
        "state_dir = \"{}\"\n{}",
        state.display(),
        config_with(&env, &[("flow", "\"client_credentials\"")])
    ));
    env.run(&["token"]).assert_success();
    let file = state.join("tokens").join("work.json");
    assert!(file.exists(), "no token file at {}", file.display());
    assert_private_file(&file);
    assert!(!env.state_dir().join("tokens").join("work.json").exists());
}

#[test]
fn init_non_interactive_writes_a_config_that_loads() {
    let env = TestEnv::new();
    let path = env.path("new/config.toml");
    let p = path.display().to_string();
    let run = env.run(&[
        "init",
        "--config",
        &p,
        "--non-interactive",
        "--name",
        "corp",
        "--provider",
        "office365",
        "--tenant",
        contoso::TENANT_DOMAIN,
        "--client-id",
        contoso::WEB_APP_ID,
        "--client-secret-env",
        "CORP_SECRET",
        "--user",
        contoso::ALICE,
    ]);
    run.assert_success();
    run.assert_output_contains("Wrote account corp");
    run.assert_output_contains("mailgate login corp");
    assert_private_file(&path);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[accounts.corp]"), "{text}");
    assert!(
        text.contains("client_secret_env = \"CORP_SECRET\""),
        "{text}"
    );
    assert!(text.contains("default_account = \"corp\""), "{text}");

    let status = env.run(&["status", "--config", &p, "--json"]);
    status.assert_success();
    let v: Value = serde_json::from_str(&status.stdout).unwrap();
    assert_eq!(v["accounts"][0]["account"], "corp");
    assert_eq!(v["accounts"][0]["provider"], "office365");
    assert_eq!(v["accounts"][0]["user"], contoso::ALICE);

    // A second account keeps the first one and the comments someone added.
    let with_comment = format!("# my notes\n{text}");
    std::fs::write(&path, with_comment).unwrap();
    let run = env.run_with_stdin(
        &[
            "init",
            "--config",
            &p,
            "--non-interactive",
            "--name",
            "home",
            "--provider",
            "gmail",
            "--client-id",
            "123-abc.apps.googleusercontent.com",
            "--client-secret-stdin",
            "--user",
            "me@gmail.com",
        ],
        b"GOCSPX-very-secret-value\n",
    );
    run.assert_success();
    run.assert_output_lacks("GOCSPX-very-secret-value");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("# my notes\n"), "{text}");
    assert!(
        text.contains("[accounts.corp]") && text.contains("[accounts.home]"),
        "{text}"
    );
    assert!(
        text.contains("client_secret = \"GOCSPX-very-secret-value\""),
        "{text}"
    );
    assert!(
        text.contains("default_account = \"corp\""),
        "the default stays: {text}"
    );
    assert_private_file(&path);

    // The same name again is refused without --force.
    let again = env.run(&[
        "init",
        "--config",
        &p,
        "--non-interactive",
        "--name",
        "home",
        "--client-id",
        "x",
        "--user",
        "a@b.c",
    ]);
    again.assert_code(64);
    again.assert_output_contains("--force");
}

#[test]
fn init_refuses_what_would_not_load_and_writes_nothing() {
    let env = TestEnv::new();
    let path = env.path("cc.toml");
    let p = path.display().to_string();
    let run = env.run(&[
        "init",
        "--config",
        &p,
        "--non-interactive",
        "--flow",
        "client_credentials",
        "--tenant",
        "organizations",
        "--client-id",
        contoso::WEB_APP_ID,
        "--client-secret-env",
        "X",
        "--user",
        contoso::ALICE,
    ]);
    run.assert_code(78);
    run.assert_output_contains("client_credentials needs your own tenant");
    assert!(!path.exists());

    let run = env.run(&[
        "init",
        "--config",
        &p,
        "--non-interactive",
        "--user",
        "a@b.c",
    ]);
    run.assert_code(64);
    run.assert_output_contains("--client-id");
}

#[test]
fn init_wizard_reads_answers_and_explains_each_field() {
    let env = TestEnv::new();
    let path = env.path("wizard.toml");
    let p = path.display().to_string();
    // name, provider, flow, tenant, client id, secret kind, secret value, user, sign in now?
    let answers = format!(
        "office\n\n\n{}\n{}\nvalue\n{}\n{}\nn\n",
        contoso::TENANT_DOMAIN,
        contoso::WEB_APP_ID,
        contoso::WEB_APP_SECRET,
        contoso::ALICE
    );
    let run = env.run_with_stdin(&["init", "--config", &p], answers.as_bytes());
    run.assert_success();
    run.assert_output_contains("the secret's Value");
    run.assert_output_contains("not the Secret ID");
    run.assert_output_contains("Application (client) ID");
    run.assert_output_contains("Next: mailgate login office");
    run.assert_output_lacks(contoso::WEB_APP_SECRET);
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains("[accounts.office]"), "{text}");
    assert!(
        text.contains(&format!("tenant = \"{}\"", contoso::TENANT_DOMAIN)),
        "{text}"
    );
    assert!(
        text.contains(&format!("client_secret = \"{}\"", contoso::WEB_APP_SECRET)),
        "{text}"
    );
    assert!(
        text.contains(&format!("user = \"{}\"", contoso::ALICE)),
        "{text}"
    );
    env.run(&["status", "--config", &p]).assert_success();

    // Running out of answers is a clear error, not a hang.
    let run = env.run_with_stdin(
        &[
            "init",
            "--config",
            &env.path("x.toml").display().to_string(),
        ],
        b"",
    );
    run.assert_code(64);
    run.assert_output_contains("--non-interactive");
}

#[test]
fn init_warns_about_a_pasted_secret_id() {
    let env = TestEnv::new();
    let path = env.path("id.toml");
    let p = path.display().to_string();
    // The Secret ID is refused on the first try ("n" to "use it anyway"), then the Value.
    let answers = format!(
        "work\noffice365\nauthorization_code\n{}\n{}\nvalue\n{}\nn\nvalue\n{}\n{}\nn\n",
        contoso::TENANT_DOMAIN,
        contoso::WEB_APP_ID,
        contoso::WEB_APP_SECRET_ID,
        contoso::WEB_APP_SECRET,
        contoso::ALICE
    );
    let run = env.run_with_stdin(&["init", "--config", &p], answers.as_bytes());
    run.assert_success();
    run.assert_output_contains("looks like a Secret ID");
    let text = std::fs::read_to_string(&path).unwrap();
    assert!(text.contains(contoso::WEB_APP_SECRET), "{text}");
    assert!(!text.contains(contoso::WEB_APP_SECRET_ID), "{text}");
}
