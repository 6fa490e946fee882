//! Test harness: each test gets a temp dir with its own XDG directories, an in-process simulator
//! and a config pointing at it, and runs the real `mailgate` binary.
//!
//! ```ignore
//! let env = TestEnv::new();
//! env.login("work");
//! let out = env.run(&["send", "--to", "bob@contoso.com", "--subject", "hi", "--body", "x"]);
//! out.assert_success();
//! ```
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use m365_sim::{contoso, SimConfig, Simulator};

/// A temp dir, a running simulator and a config with accounts pointing at it.
pub struct TestEnv {
    pub dir: tempfile::TempDir,
    pub sim: Simulator,
    pub ca_file: PathBuf,
    pub config_path: PathBuf,
}

impl TestEnv {
    /// The standard Contoso simulator (auto-approve) and accounts `work` (delegated, alice,
    /// authorization code with the confidential app) and `app` (client credentials as alice).
    pub fn new() -> TestEnv {
        TestEnv::with_sim(SimConfig::default())
    }

    /// Like [`TestEnv::new`] with a simulator of your own.
    pub fn with_sim(config: SimConfig) -> TestEnv {
        let dir = tempfile::Builder::new()
            .prefix("mailgate-test-")
            .tempdir()
            .unwrap();
        for d in ["config", "state", "home", "mail"] {
            std::fs::create_dir_all(dir.path().join(d)).unwrap();
        }
        let config = if config.mail_dir.is_none() {
            config.mail_dir(dir.path().join("mail"))
        } else {
            config
        };
        let sim = Simulator::start_blocking(config).expect("simulator starts");
        let ca_file = dir.path().join("sim-ca.pem");
        sim.write_ca_file(&ca_file).unwrap();
        let config_path = dir
            .path()
            .join("config")
            .join("mailgate")
            .join("config.toml");
        std::fs::create_dir_all(config_path.parent().unwrap()).unwrap();
        let env = TestEnv {
            dir,
            sim,
            ca_file,
            config_path,
        };
        let text = format!(
            "token_store = \"file\"\ndefault_account = \"work\"\n\n{}\n{}",
            env.account_toml("work", &[]),
            env.account_toml(
                "app",
                &[
                    ("flow", "\"client_credentials\""),
                    ("tenant", &format!("\"{}\"", contoso::TENANT_DOMAIN)),
                ]
            ),
        );
        env.write_config(&text);
        env
    }

    /// The TOML of an account named `name` on this simulator (office365 preset, alice, the
    /// confidential app, redirect port 0), with `overrides` as `key = value` lines (value in TOML
    /// syntax) replacing the defaults.
    pub fn account_toml(&self, name: &str, overrides: &[(&str, &str)]) -> String {
        let tenant = overrides
            .iter()
            .find(|(k, _)| *k == "tenant")
            .map(|(_, v)| v.trim_matches('"').to_string())
            .unwrap_or_else(|| contoso::TENANT_DOMAIN.to_string());
        let smtp = self.sim.smtp_addr();
        let defaults: Vec<(&str, String)> = vec![
            (
                "provider",
                q(match self.sim.mode() {
                    m365_sim::Mode::Microsoft => "office365",
                    m365_sim::Mode::Gmail => "gmail",
                }),
            ),
            ("tenant", q(&tenant)),
            ("client_id", q(contoso::WEB_APP_ID)),
            ("client_secret", q(contoso::WEB_APP_SECRET)),
            ("user", q(contoso::ALICE)),
            ("authorize_url", q(&self.sim.authorize_url(&tenant))),
            ("token_url", q(&self.sim.token_url(&tenant))),
            (
                "device_authorization_url",
                q(&self.sim.devicecode_url(&tenant)),
            ),
            ("redirect_port", "0".into()),
            ("smtp_host", q("127.0.0.1")),
            ("smtp_port", smtp.port().to_string()),
            ("smtp_security", q("starttls")),
            ("ca_file", q(&self.ca_file.display().to_string())),
        ];
        let gmail = self.sim.mode() == m365_sim::Mode::Gmail;
        let mut out = format!("[accounts.{name}]\n");
        for (k, v) in &defaults {
            if gmail && *k == "tenant" {
                continue; // Google has no tenants; the config refuses the key for gmail.
            }
            match overrides.iter().find(|(ok, _)| ok == k) {
                Some((_, "")) => {} // "" removes the key
                Some((_, ov)) => out.push_str(&format!("{k} = {ov}\n")),
                None => out.push_str(&format!("{k} = {v}\n")),
            }
        }
        for (k, v) in overrides {
            if !defaults.iter().any(|(dk, _)| dk == k) && !v.is_empty() {
                out.push_str(&format!("{k} = {v}\n"));
            }
        }
        out
    }

    /// Replaces the config file (mode 0600, as a config holding a client secret should be).
    pub fn write_config(&self, text: &str) {
        std::fs::write(&self.config_path, text).unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&self.config_path, std::fs::Permissions::from_mode(0o600))
                .unwrap();
        }
    }

    pub fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// `$XDG_STATE_HOME/mailgate`, where tokens (and later the spool) live.
    pub fn state_dir(&self) -> PathBuf {
        self.dir.path().join("state").join("mailgate")
    }

    /// A `mailgate` command with this environment (XDG dirs and HOME in the temp dir).
    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_mailgate"));
        c.args(args)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("XDG_STATE_HOME", self.dir.path().join("state"))
            .env("HOME", self.dir.path().join("home"))
            .env_remove("MAILGATE_CONFIG")
            .env_remove("MAILGATE_LOG")
            .env_remove("RUST_LOG")
            .env("NO_COLOR", "1")
            .stdin(Stdio::null());
        c
    }

    /// Runs `mailgate ARGS` to completion.
    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("mailgate runs"))
    }

    /// Runs `mailgate ARGS` with `input` on stdin.
    pub fn run_with_stdin(&self, args: &[&str], input: &[u8]) -> Run {
        let mut child = self
            .cmd(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mailgate runs");
        child.stdin.take().unwrap().write_all(input).unwrap();
        Run::from(child.wait_with_output().unwrap())
    }

    /// Logs `account` in through the authorization code flow: runs `mailgate login ACCOUNT
    /// --no-browser`, reads the URL it prints and plays the browser (the simulator auto-approves
    /// and redirects to mailgate's loopback listener).
    pub fn login(&self, account: &str) -> Run {
        let (child, url) = self.start_login(account, &[]);
        play_browser(&url);
        let run = Run::from(child.wait_with_output().unwrap());
        run.assert_success();
        run
    }

    /// Starts `mailgate login ACCOUNT --no-browser EXTRA...` and returns it with the
    /// authorization URL it printed (the first stdout line that starts with `http`).
    // The child is handed to the caller inside a `DrainedChild`, whose `wait_with_output` reaps it.
    #[allow(clippy::zombie_processes)]
    pub fn start_login(&self, account: &str, extra: &[&str]) -> (Child, String) {
        let mut args = vec!["login", account, "--no-browser"];
        args.extend_from_slice(extra);
        let mut child = self
            .cmd(&args)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("mailgate login runs");
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut seen = String::new();
        loop {
            let mut line = String::new();
            if stdout.read_line(&mut line).unwrap() == 0 {
                let out = child.wait_with_output().unwrap();
                panic!(
                    "mailgate login printed no URL.\nstdout:\n{seen}\nstderr:\n{}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            seen.push_str(&line);
            let t = line.trim();
            if t.starts_with("http://") || t.starts_with("https://") {
                // Keep draining stdout in the background so the child never blocks on a full pipe,
                // and hand what it prints later back through a thread-joined buffer.
                let rest = std::thread::spawn(move || {
                    let mut s = String::new();
                    let _ = std::io::Read::read_to_string(&mut stdout, &mut s);
                    s
                });
                let child = DrainedChild::wrap(child, seen, rest);
                return (child, t.to_string());
            }
        }
    }

    /// The messages the simulator accepted.
    pub fn delivered(&self) -> Vec<m365_sim::DeliveredMessage> {
        self.sim.messages()
    }
}

/// Plays a browser: GETs `url` following redirects (to the loopback listener) and returns the
/// final page's text.
pub fn play_browser(url: &str) -> String {
    let client = reqwest::blocking::Client::builder()
        .timeout(Duration::from_secs(30))
        .build()
        .unwrap();
    let resp = client.get(url).send().expect("authorization URL answers");
    resp.text().unwrap_or_default()
}

fn q(s: &str) -> String {
    format!("\"{}\"", s.replace('\\', "\\\\").replace('"', "\\\""))
}

/// A finished run of the binary.
pub struct Run {
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code(),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    /// stdout and stderr together, for "the user sees X" assertions.
    pub fn all(&self) -> String {
        format!("{}{}", self.stdout, self.stderr)
    }

    #[track_caller]
    pub fn assert_success(&self) -> &Run {
        assert_eq!(self.code, Some(0), "expected success\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_code(&self, code: i32) -> &Run {
        assert_eq!(self.code, Some(code), "expected exit {code}\n{self}");
        self
    }

    #[track_caller]
    pub fn assert_output_contains(&self, needle: &str) -> &Run {
        assert!(
            self.all().contains(needle),
            "expected output to contain {needle:?}\n{self}"
        );
        self
    }

    #[track_caller]
    pub fn assert_output_lacks(&self, needle: &str) -> &Run {
        assert!(
            !self.all().contains(needle),
            "output must not contain {needle:?}\n{self}"
        );
        self
    }
}

impl std::fmt::Display for Run {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "exit: {:?}\n--- stdout ---\n{}\n--- stderr ---\n{}",
            self.code, self.stdout, self.stderr
        )
    }
}

/// A child whose stdout is being drained by a thread; `wait_with_output` puts the already-read
/// part and the drained rest back together.
pub struct DrainedChild {
    child: std::process::Child,
    head: String,
    rest: std::thread::JoinHandle<String>,
}

pub type Child = DrainedChild;

impl DrainedChild {
    fn wrap(
        child: std::process::Child,
        head: String,
        rest: std::thread::JoinHandle<String>,
    ) -> Self {
        DrainedChild { child, head, rest }
    }

    pub fn wait_with_output(self) -> std::io::Result<Output> {
        let DrainedChild { child, head, rest } = self;
        let mut out = child.wait_with_output()?;
        let mut stdout = head.into_bytes();
        stdout.extend_from_slice(rest.join().unwrap_or_default().as_bytes());
        out.stdout = stdout;
        Ok(out)
    }

    pub fn kill(&mut self) -> std::io::Result<()> {
        self.child.kill()
    }

    pub fn id(&self) -> u32 {
        self.child.id()
    }
}

/// Asserts that a file has mode 0600 (Unix).
#[track_caller]
pub fn assert_private_file(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600, "{} has mode {mode:o}", path.display());
    }
    #[cfg(not(unix))]
    let _ = path;
}
