//! `mailgate login` through the real binary against the simulator: every flow end to end, the
//! loopback listener's edge cases, and each identity-platform error with its diagnosis and exit
//! code. One test drives a real headless Chromium through the simulator's sign-in page.

mod common;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{assert_private_file, Run, TestEnv};
use m365_sim::{contoso, EndpointFault, SimConfig};

/// `"value"` as TOML.
fn q(s: &str) -> String {
    format!("\"{s}\"")
}

/// An HTTP client that does not follow redirects.
fn no_redirects() -> reqwest::blocking::Client {
    reqwest::blocking::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap()
}

/// The stored tokens of `account` (file store), as JSON.
fn stored(env: &TestEnv, account: &str) -> serde_json::Value {
    let path = token_file(env, account);
    serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap()
}

fn token_file(env: &TestEnv, account: &str) -> PathBuf {
    env.state_dir()
        .join("tokens")
        .join(format!("{account}.json"))
}

/// No secret of the app, and none of the stored tokens, appears in the output.
#[track_caller]
fn assert_no_secrets(env: &TestEnv, run: &Run, account: &str) {
    run.assert_output_lacks(contoso::WEB_APP_SECRET);
    if token_file(env, account).exists() {
        let t = stored(env, account);
        for key in ["access_token", "refresh_token"] {
            if let Some(v) = t[key].as_str() {
                run.assert_output_lacks(v);
                // Nor a recognisable piece of it.
                run.assert_output_lacks(&v[..v.len().min(24)]);
            }
        }
    }
}

/// Writes a config with one account `name` (the harness's defaults plus `overrides`).
fn config_with(env: &TestEnv, name: &str, overrides: &[(&str, &str)]) {
    env.write_config(&format!(
        "token_store = \"file\"\n\n{}",
        env.account_toml(name, overrides)
    ));
}

/// Runs `mailgate login ACCOUNT --no-browser --timeout SECS`, plays the browser on the URL
/// (following redirects, so the simulator's auto-approve lands on the loopback listener) and
/// returns the run and the page the browser ended on.
fn login_playing_browser(env: &TestEnv, account: &str, timeout: &str) -> (Run, String) {
    let (child, url) = env.start_login(account, &["--timeout", timeout]);
    let page = common::play_browser(&url);
    (Run::from(child.wait_with_output().unwrap()), page)
}

/// Asserts a refusal: exit 77, the AADSTS code, what to do, and no secret.
#[track_caller]
fn assert_refused(env: &TestEnv, run: &Run, account: &str, code: &str, needles: &[&str]) {
    run.assert_code(77);
    run.assert_output_contains(code);
    run.assert_output_contains("Fix:");
    for n in needles {
        run.assert_output_contains(n);
    }
    assert_no_secrets(env, run, account);
    assert!(
        !token_file(env, account).exists(),
        "nothing stored after a refusal"
    );
}

// ---------------------------------------------------------------------------------------------
// The flows, end to end.

#[test]
fn authorization_code_end_to_end() {
    let env = TestEnv::new();
    let (child, url) = env.start_login("work", &[]);
    let u = reqwest::Url::parse(&url).unwrap();
    let params: std::collections::HashMap<String, String> = u.query_pairs().into_owned().collect();
    assert_eq!(params["code_challenge_method"], "S256");
    assert!(params["state"].len() >= 22, "state has at least 128 bits");
    assert_eq!(params["login_hint"], contoso::ALICE);
    assert!(params["redirect_uri"].starts_with("http://localhost:"));
    assert!(!url.contains(contoso::WEB_APP_SECRET));

    let page = common::play_browser(&url);
    assert!(page.contains("Signed in"), "{page}");
    assert!(page.contains(contoso::ALICE), "{page}");
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_success();
    run.assert_output_contains(&format!("authorized as {}", contoso::ALICE));
    run.assert_output_contains("https://outlook.office.com/SMTP.Send");
    run.assert_output_contains("Access token expires");
    assert_no_secrets(&env, &run, "work");

    let t = stored(&env, "work");
    assert!(
        t["refresh_token"].as_str().is_some_and(|r| !r.is_empty()),
        "{t}"
    );
    assert_eq!(t["identity"], contoso::ALICE);
    assert_private_file(&token_file(&env, "work"));
    // The simulator saw PKCE.
    let pkce = env
        .sim
        .events()
        .iter()
        .any(|e| format!("{:?}", e.event).contains("pkce: true"));
    assert!(pkce, "the authorize request carried a PKCE challenge");
}

#[test]
fn the_url_is_printed_on_a_line_of_its_own() {
    let env = TestEnv::new();
    let (child, url) = env.start_login("work", &[]);
    common::play_browser(&url);
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_success();
    assert!(
        run.stdout.lines().any(|l| l == url),
        "the URL alone on a line:\n{run}"
    );
}

#[test]
fn device_code_end_to_end() {
    let env = TestEnv::with_sim(SimConfig::default().device_poll_interval_secs(1));
    config_with(
        &env,
        "dev",
        &[
            ("flow", &q("device_code")),
            ("client_id", &q(contoso::PUBLIC_APP_ID)),
            ("client_secret", ""),
        ],
    );
    let run = env.run(&["login", "dev"]);
    run.assert_success();
    // The provider's message, with its URL and code.
    run.assert_output_contains("/devicelogin");
    run.assert_output_contains("enter the code");
    run.assert_output_contains(&format!("authorized as {}", contoso::ALICE));
    assert_no_secrets(&env, &run, "dev");
    assert!(stored(&env, "dev")["refresh_token"].is_string());
}

/// Starts `mailgate login ACCOUNT` for a device code and returns it with the user code it showed.
// The child is handed to the caller, who waits for it.
#[allow(clippy::zombie_processes)]
fn start_device_login(env: &TestEnv, account: &str) -> (std::process::Child, String, String) {
    let mut child = env
        .cmd(&["login", account])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut seen = String::new();
    loop {
        let mut line = String::new();
        assert!(
            out.read_line(&mut line).unwrap() > 0,
            "no device message:\n{seen}"
        );
        seen.push_str(&line);
        if let Some(rest) = line.split("enter the code ").nth(1) {
            let code = rest.split_whitespace().next().unwrap().to_string();
            std::thread::spawn(move || {
                let mut s = String::new();
                let _ = std::io::Read::read_to_string(&mut out, &mut s);
            });
            return (child, code, seen);
        }
    }
}

#[test]
fn device_code_declined() {
    let env = TestEnv::with_sim(
        SimConfig::default()
            .device_poll_interval_secs(1)
            .auto_approve(false),
    );
    config_with(
        &env,
        "dev",
        &[
            ("flow", &q("device_code")),
            ("client_id", &q(contoso::PUBLIC_APP_ID)),
            ("client_secret", ""),
        ],
    );
    let (child, code, _) = start_device_login(&env, "dev");
    assert!(
        env.sim.decline_device_code(&code),
        "the simulator knows {code}"
    );
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(77), "{stderr}");
    assert!(stderr.contains("declined"), "{stderr}");
    assert!(stderr.contains("mailgate login dev"), "{stderr}");
}

#[test]
fn device_code_approved_on_the_page() {
    let env = TestEnv::with_sim(
        SimConfig::default()
            .device_poll_interval_secs(1)
            .auto_approve(false),
    );
    config_with(
        &env,
        "dev",
        &[
            ("flow", &q("device_code")),
            ("client_id", &q(contoso::PUBLIC_APP_ID)),
            ("client_secret", ""),
        ],
    );
    let (child, code, _) = start_device_login(&env, "dev");
    assert!(env.sim.approve_device_code(&code, contoso::BOB));
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stored(&env, "dev")["identity"], contoso::BOB, "{stdout}");
    // Signed in as bob for an account whose user is alice: a warning says SMTP will refuse.
    assert!(String::from_utf8_lossy(&out.stderr).contains("535 5.7.3"));
}

#[test]
fn client_credentials_end_to_end() {
    let env = TestEnv::new();
    let run = env.run(&["login", "app"]);
    run.assert_success();
    run.assert_output_contains("app-only");
    run.assert_output_contains(contoso::WEB_APP_ID);
    run.assert_output_contains("Access token expires");
    run.assert_output_contains("https://outlook.office365.com/.default");
    assert_no_secrets(&env, &run, "app");
    let t = stored(&env, "app");
    assert!(t["access_token"].is_string());
    assert!(t["refresh_token"].is_null());
}

#[test]
fn debug_output_redacts_secrets() {
    let env = TestEnv::new();
    let run = env.run(&["--debug", "login", "app"]);
    run.assert_success();
    run.assert_output_contains("client_secret=[redacted]");
    run.assert_output_contains("grant_type=client_credentials");
    assert_no_secrets(&env, &run, "app");
}

// ---------------------------------------------------------------------------------------------
// The loopback listener.

#[test]
fn a_wrong_state_is_rejected_without_using_the_code() {
    let env = TestEnv::new();
    let (child, url) = env.start_login("work", &["--timeout", "60"]);
    let http = no_redirects();
    let resp = http.get(&url).send().unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let back = resp.headers()["location"].to_str().unwrap().to_string();
    let mut forged = reqwest::Url::parse(&back).unwrap();
    let pairs: Vec<(String, String)> = forged
        .query_pairs()
        .into_owned()
        .map(|(k, v)| {
            if k == "state" {
                (k, "forged-state".into())
            } else {
                (k, v)
            }
        })
        .collect();
    forged.query_pairs_mut().clear().extend_pairs(pairs);

    // Probes and a forged redirect do not end the login.
    let mut base = reqwest::Url::parse(&back).unwrap();
    base.set_query(None);
    base.set_path("/favicon.ico");
    assert_eq!(
        http.get(base.as_str()).send().unwrap().status().as_u16(),
        404
    );
    let resp = http.get(forged.as_str()).send().unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    assert!(resp.text().unwrap().contains("does not belong"));

    // The same code, with the right state, still works: the forged request did not use it
    // (codes are single-use).
    let resp = http.get(&back).send().unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.text().unwrap().contains("Signed in"));
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_success();
    run.assert_output_contains("state does not belong to this login");
}

#[test]
fn access_denied_on_the_sign_in_page() {
    let env = TestEnv::with_sim(SimConfig::default().auto_approve(false));
    let (child, url) = env.start_login("work", &["--timeout", "60"]);
    let http = no_redirects();
    let page = http.get(&url).send().unwrap().text().unwrap();
    let action = attr_after(&page, "<form method=\"post\" action=\"");
    let request = attr_after(&page, "name=\"request\" value=\"");
    let action = format!("{}{}", env.sim.http_base(), action.replace("&amp;", "&"));
    let resp = http
        .post(&action)
        .form(&[
            ("request", request.as_str()),
            ("user", contoso::ALICE),
            ("decision", "deny"),
        ])
        .send()
        .unwrap();
    assert_eq!(resp.status().as_u16(), 302);
    let back = resp.headers()["location"].to_str().unwrap().to_string();
    assert!(back.contains("error=access_denied"), "{back}");
    let browser_page = http.get(&back).send().unwrap().text().unwrap();
    assert!(browser_page.contains("refused"), "{browser_page}");
    let run = Run::from(child.wait_with_output().unwrap());
    assert_refused(
        &env,
        &run,
        "work",
        "AADSTS65004",
        &["access_denied", "declined"],
    );
}

/// The text between `prefix` and the next `"`.
fn attr_after(html: &str, prefix: &str) -> String {
    let start = html
        .find(prefix)
        .unwrap_or_else(|| panic!("{prefix} in {html}"))
        + prefix.len();
    html[start..].split('"').next().unwrap().to_string()
}

#[test]
fn the_redirect_port_in_use_is_a_clear_error() {
    let env = TestEnv::new();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    config_with(&env, "work", &[("redirect_port", &port.to_string())]);
    let started = Instant::now();
    let run = env.run(&["login", "work", "--no-browser"]);
    assert!(started.elapsed() < Duration::from_secs(20), "no hang");
    run.assert_code(75);
    run.assert_output_contains("already in use");
    run.assert_output_contains(&port.to_string());
    run.assert_output_contains("redirect_port");
}

#[test]
fn a_timeout_explains_aadsts50011() {
    let env = TestEnv::new();
    let started = Instant::now();
    let run = env.run(&["login", "work", "--no-browser", "--timeout", "2"]);
    assert!(started.elapsed() < Duration::from_secs(20));
    run.assert_code(75);
    run.assert_output_contains("no sign-in redirect");
    run.assert_output_contains("AADSTS50011");
    run.assert_output_contains("Authentication");
    run.assert_output_contains("http://localhost:");
}

#[test]
fn an_unregistered_redirect_uri_shows_50011_in_the_browser_and_is_explained() {
    let env = TestEnv::new();
    config_with(
        &env,
        "work",
        &[("redirect_uri", &q("http://localhost:3017/callback"))],
    );
    let (run, page) = login_playing_browser(&env, "work", "3");
    assert!(page.contains("AADSTS50011"), "the browser shows it: {page}");
    run.assert_code(75);
    run.assert_output_contains("AADSTS50011");
    run.assert_output_contains("/callback");
}

// ---------------------------------------------------------------------------------------------
// The identity platform's refusals: each with its diagnosis and exit 77.

#[test]
fn aadsts7000215_secret_id_instead_of_value() {
    let env = TestEnv::new();
    config_with(
        &env,
        "app",
        &[
            ("flow", &q("client_credentials")),
            ("client_secret", &q(contoso::WEB_APP_SECRET_ID)),
        ],
    );
    let run = env.run(&["login", "app"]);
    assert_refused(
        &env,
        &run,
        "app",
        "AADSTS7000215",
        &["Secret ID", "Value", "right after"],
    );
    run.assert_output_lacks(contoso::WEB_APP_SECRET_ID);
}

#[test]
fn aadsts7000222_expired_secret() {
    let env = TestEnv::new();
    env.sim
        .with_directory(|d| d.app_mut(contoso::WEB_APP_ID).unwrap().secret_expired = true);
    let run = env.run(&["login", "app"]);
    assert_refused(
        &env,
        &run,
        "app",
        "AADSTS7000222",
        &["expired", "New client secret"],
    );
}

#[test]
fn aadsts7000218_missing_secret() {
    let env = TestEnv::new();
    config_with(&env, "work", &[("client_secret", "")]);
    let (run, page) = login_playing_browser(&env, "work", "60");
    assert!(
        page.contains("could not be completed"),
        "the browser is told: {page}"
    );
    assert_refused(
        &env,
        &run,
        "work",
        "AADSTS7000218",
        &["client_secret", "public client"],
    );
}

#[test]
fn aadsts700025_public_client_with_a_secret() {
    let env = TestEnv::new();
    config_with(&env, "work", &[("client_id", &q(contoso::PUBLIC_APP_ID))]);
    let (run, _) = login_playing_browser(&env, "work", "60");
    assert_refused(
        &env,
        &run,
        "work",
        "AADSTS700025",
        &["public client", "Remove client_secret"],
    );
}

#[test]
fn aadsts700016_unknown_client() {
    let env = TestEnv::new();
    config_with(
        &env,
        "app",
        &[
            ("flow", &q("client_credentials")),
            ("client_id", &q("11111111-2222-4333-8444-555555555555")),
        ],
    );
    let run = env.run(&["login", "app"]);
    assert_refused(
        &env,
        &run,
        "app",
        "AADSTS700016",
        &["Application (client) ID", "tenant"],
    );
}

#[test]
fn aadsts65001_consent_missing() {
    let env = TestEnv::new();
    env.sim.set_faults(|f| f.consent_required = true);
    let (run, _) = login_playing_browser(&env, "work", "60");
    assert_refused(
        &env,
        &run,
        "work",
        "AADSTS65001",
        &["consent", "Grant admin consent"],
    );
}

#[test]
fn aadsts50076_mfa_required() {
    let env = TestEnv::new();
    env.sim.set_faults(|f| f.mfa_required = true);
    let (run, _) = login_playing_browser(&env, "work", "60");
    assert_refused(&env, &run, "work", "AADSTS50076", &["MFA"]);
}

#[test]
fn aadsts53003_conditional_access() {
    let env = TestEnv::new();
    env.sim.set_faults(|f| f.conditional_access_blocked = true);
    let run = env.run(&["login", "app"]);
    assert_refused(
        &env,
        &run,
        "app",
        "AADSTS53003",
        &["Conditional Access", "Sign-in logs"],
    );
}

#[test]
fn aadsts50194_single_tenant_app_on_common() {
    // Signed in through /common while the app was multi-tenant; an admin then made it
    // single-tenant, and the next refresh through /common is refused.
    let env = TestEnv::new();
    config_with(&env, "work", &[("tenant", &q("common"))]);
    env.login("work");
    env.sim
        .with_directory(|d| d.app_mut(contoso::WEB_APP_ID).unwrap().single_tenant = true);
    expire_stored_access_token(&env, "work");
    let run = env.run(&["token", "work"]);
    run.assert_code(77);
    run.assert_output_contains("AADSTS50194");
    run.assert_output_contains("/common");
    run.assert_output_contains("Directory (tenant) ID");
    assert_no_secrets(&env, &run, "work");
}

/// Makes the stored access token of `account` look expired, so that `mailgate token` refreshes.
fn expire_stored_access_token(env: &TestEnv, account: &str) {
    let path = token_file(env, account);
    let mut t = stored(env, account);
    t["expires_at"] = serde_json::json!("2000-01-01T00:00:00Z");
    std::fs::write(&path, serde_json::to_vec(&t).unwrap()).unwrap();
}

#[test]
fn aadsts70011_mixed_resource_scopes() {
    let env = TestEnv::new();
    config_with(
        &env,
        "work",
        &[(
            "scopes",
            "[\"offline_access\", \"https://outlook.office.com/SMTP.Send\", \"https://graph.microsoft.com/Mail.Send\"]",
        )],
    );
    let (run, _) = login_playing_browser(&env, "work", "60");
    assert_refused(&env, &run, "work", "AADSTS70011", &["one resource"]);
}

#[test]
fn aadsts700082_expired_refresh_token_says_to_log_in_again() {
    let env = TestEnv::new();
    env.login("work");
    env.sim.expire_access_tokens();
    env.sim.set_faults(|f| f.refresh_token_expired = true);
    expire_stored_access_token(&env, "work");
    let t = stored(&env, "work");
    let run = env.run(&["token", "work"]);
    run.assert_code(77);
    run.assert_output_contains("AADSTS700082");
    run.assert_output_contains("mailgate login work");
    run.assert_output_lacks(contoso::WEB_APP_SECRET);
    run.assert_output_lacks(t["refresh_token"].as_str().unwrap());
}

#[test]
fn token_endpoint_unavailable_exits_75_after_retries() {
    let env = TestEnv::new();
    env.sim
        .set_faults(|f| f.token_endpoint = EndpointFault::Status(503));
    let started = Instant::now();
    let run = env.run(&["login", "app"]);
    let took = started.elapsed();
    run.assert_code(75);
    run.assert_output_contains("503");
    run.assert_output_contains("4 attempt(s)");
    assert!(
        took >= Duration::from_secs(6),
        "retried with backoff ({took:?})"
    );
    assert!(
        took < Duration::from_secs(40),
        "within the retry budget ({took:?})"
    );
    assert_no_secrets(&env, &run, "app");
    assert!(!token_file(&env, "app").exists());
}

// ---------------------------------------------------------------------------------------------
// A real browser.

/// Where a Chromium is, if any.
fn find_chromium() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("MAILGATE_CHROMIUM") {
        return Some(PathBuf::from(p));
    }
    let names = [
        "chromium",
        "chromium-browser",
        "google-chrome",
        "google-chrome-stable",
    ];
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .flat_map(|dir| names.iter().map(move |n| dir.join(n)))
        .find(|p| p.is_file())
}

/// A headless Chromium driven over the DevTools protocol (one page, one WebSocket).
struct Chromium {
    child: std::process::Child,
    _profile: tempfile::TempDir,
    ws: tungstenite::WebSocket<std::net::TcpStream>,
    next_id: u64,
}

impl Chromium {
    fn launch(binary: &Path) -> Chromium {
        let profile = tempfile::tempdir().unwrap();
        let child = Command::new(binary)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-dev-shm-usage",
                "--disable-quic",
                "--no-first-run",
                "--no-default-browser-check",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--disable-extensions",
                "--remote-debugging-address=127.0.0.1",
                "--remote-debugging-port=0",
            ])
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg("about:blank")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", binary.display()));
        // Chromium writes the port it chose to DevToolsActivePort in the profile.
        let port_file = profile.path().join("DevToolsActivePort");
        let deadline = Instant::now() + Duration::from_secs(60);
        let port: u16 = loop {
            if let Some(p) = std::fs::read_to_string(&port_file)
                .ok()
                .and_then(|s| s.lines().next().and_then(|l| l.trim().parse().ok()))
            {
                break p;
            }
            assert!(
                Instant::now() < deadline,
                "Chromium did not open its DevTools port"
            );
            std::thread::sleep(Duration::from_millis(100));
        };
        let http = reqwest::blocking::Client::new();
        let targets: serde_json::Value = loop {
            let list = http
                .get(format!("http://127.0.0.1:{port}/json/list"))
                .send()
                .and_then(|r| r.json::<serde_json::Value>());
            match list {
                Ok(v)
                    if v.as_array()
                        .is_some_and(|a| a.iter().any(|t| t["type"] == "page")) =>
                {
                    break v
                }
                _ => {
                    assert!(Instant::now() < deadline, "Chromium has no page");
                    std::thread::sleep(Duration::from_millis(100));
                }
            }
        };
        let ws_url = targets
            .as_array()
            .unwrap()
            .iter()
            .find(|t| t["type"] == "page")
            .and_then(|t| t["webSocketDebuggerUrl"].as_str())
            .unwrap()
            .to_string();
        let stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(30)))
            .unwrap();
        let (ws, _) = tungstenite::client(ws_url.as_str(), stream).unwrap();
        Chromium {
            child,
            _profile: profile,
            ws,
            next_id: 0,
        }
    }

    /// Sends a DevTools command and returns its result (events in between are skipped).
    fn call(&mut self, method: &str, params: serde_json::Value) -> serde_json::Value {
        self.next_id += 1;
        let id = self.next_id;
        let msg = serde_json::json!({"id": id, "method": method, "params": params});
        self.ws
            .send(tungstenite::Message::text(msg.to_string()))
            .unwrap();
        loop {
            let m = self.ws.read().expect("DevTools answers");
            let tungstenite::Message::Text(text) = m else {
                continue;
            };
            let v: serde_json::Value = serde_json::from_str(text.as_str()).unwrap();
            if v["id"] == id {
                assert!(v.get("error").is_none(), "{method}: {v}");
                return v["result"].clone();
            }
        }
    }

    /// Evaluates JavaScript in the page and returns its value.
    fn eval(&mut self, expression: &str) -> serde_json::Value {
        let r = self.call(
            "Runtime.evaluate",
            serde_json::json!({"expression": expression, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }

    /// Polls `expression` until it is a non-empty string or true.
    fn wait_for(&mut self, expression: &str, what: &str) -> serde_json::Value {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let v = self.eval(expression);
            if v == serde_json::Value::Bool(true) || v.as_str().is_some_and(|s| !s.is_empty()) {
                return v;
            }
            let page =
                self.eval("location.href + ' ' + (document.body ? document.body.textContent : '')");
            assert!(
                Instant::now() < deadline,
                "timed out waiting for {what}; page: {page}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

impl Drop for Chromium {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn a_real_browser_signs_in_through_the_sign_in_page() {
    let Some(chromium) = find_chromium() else {
        if std::env::var("MAILGATE_BROWSER_TESTS").as_deref() == Ok("1") {
            panic!(
                "MAILGATE_BROWSER_TESTS=1 but no Chromium was found on PATH (install Debian's \
                 `chromium` package, or set MAILGATE_CHROMIUM)"
            );
        }
        eprintln!(
            "skipped: no Chromium on PATH (install `chromium`; set MAILGATE_BROWSER_TESTS=1 to \
             make this a failure)"
        );
        return;
    };
    let env = TestEnv::with_sim(SimConfig::default().auto_approve(false));
    let (child, url) = env.start_login("work", &["--timeout", "120"]);
    let mut browser = Chromium::launch(&chromium);
    browser.call("Page.enable", serde_json::json!({}));
    browser.call("Page.navigate", serde_json::json!({"url": url}));
    browser.wait_for(
        "!!document.querySelector('#approve') && document.readyState === 'complete'",
        "the sign-in page",
    );
    let app = browser.eval("document.querySelector('#app-name').textContent");
    assert!(
        app.as_str().is_some_and(|s| s.contains("mailgate")),
        "{app}"
    );
    browser.eval("document.querySelector('#approve').click(); true");
    let landed = browser.wait_for(
        "location.href.startsWith('http://localhost:') && document.readyState === 'complete' \
         && document.querySelector('#result') ? location.href.split('?')[0] + ' | ' + document.body.textContent : ''",
        "the loopback listener's page",
    );
    let landed = landed.as_str().unwrap().to_string();
    assert!(landed.contains("Signed in"), "{landed}");
    assert!(landed.contains(contoso::ALICE), "{landed}");
    drop(browser);
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_success();
    run.assert_output_contains(&format!("authorized as {}", contoso::ALICE));
    assert_no_secrets(&env, &run, "work");
    assert!(stored(&env, "work")["refresh_token"].is_string());
}

#[test]
fn gmail_authorization_code_gets_a_refresh_token() {
    let env = TestEnv::with_sim(SimConfig::gmail());
    config_with(&env, "work", &[("tenant", "")]);
    let (child, url) = env.start_login("work", &[]);
    assert!(url.contains("access_type=offline"), "{url}");
    let page = common::play_browser(&url);
    assert!(page.contains("Signed in"), "{page}");
    let run = Run::from(child.wait_with_output().unwrap());
    run.assert_success();
    // The preset asks for openid + email, so the id_token names who signed in.
    run.assert_output_contains("alice@contoso.com");
    run.assert_output_contains("https://mail.google.com/");
    assert_no_secrets(&env, &run, "work");
    assert!(stored(&env, "work")["refresh_token"].is_string());
}

#[test]
fn device_code_wait_is_bounded_by_timeout() {
    let env = TestEnv::with_sim(
        SimConfig::default()
            .device_poll_interval_secs(1)
            .auto_approve(false),
    );
    config_with(
        &env,
        "dev",
        &[
            ("flow", &q("device_code")),
            ("client_id", &q(contoso::PUBLIC_APP_ID)),
            ("client_secret", ""),
        ],
    );
    let started = Instant::now();
    let run = env.run(&["login", "dev", "--timeout", "2"]);
    assert!(started.elapsed() < Duration::from_secs(15));
    run.assert_code(75);
    run.assert_output_contains("within 2s");
    run.assert_output_contains("mailgate login dev");
}
