//! SMTP throughput against the embedded simulator on loopback.
//!
//! Prints, from one run:
//! 1. messages per second for a batch of small messages over one connection (one TLS handshake,
//!    one AUTH, RSET between messages) versus one `mailgate sendmail` process per message, and
//!    the ratio;
//! 2. one message through `mailgate sendmail` versus Debian's `msmtp` (auth xoauth2, with
//!    `passwordeval` returning the same cached token through `mailgate token`), median
//!    wall-clock time of each and the ratio.
//!
//! Run it with `bench/run.sh` (or `cargo bench -p mailgate-cli --bench smtp -- [--messages N]
//! [--processes N] [--rounds N]`). It is a benchmark, not a test: it asserts only that every
//! message was delivered.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use m365_sim::contoso::{ALICE, TENANT_DOMAIN, WEB_APP_ID, WEB_APP_SECRET};
use m365_sim::{SimConfig, Simulator};
use mailgate::config::Config;
use mailgate::message::{Draft, Mailbox};
use mailgate::send::AccountSender;

const MAILGATE: &str = env!("CARGO_BIN_EXE_mailgate");

struct Options {
    messages: usize,
    processes: usize,
    rounds: usize,
}

fn options() -> Options {
    let mut o = Options {
        messages: 1000,
        processes: 1000,
        rounds: 20,
    };
    let args: Vec<String> = std::env::args().skip(1).collect();
    let mut i = 0;
    while i < args.len() {
        let value = || {
            args.get(i + 1)
                .and_then(|v| v.parse().ok())
                .unwrap_or_else(|| panic!("{} needs a number", args[i]))
        };
        match args[i].as_str() {
            "--messages" => o.messages = value(),
            "--processes" => o.processes = value(),
            "--rounds" => o.rounds = value(),
            _ => {
                // `cargo bench` passes `--bench`; ignore it and anything else.
                i += 1;
                continue;
            }
        }
        i += 2;
    }
    o
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.1} ms", d.as_secs_f64() * 1000.0)
}

fn write_config(dir: &Path, sim: &Simulator, ca: &Path) -> PathBuf {
    let path = dir.join("config.toml");
    let text = format!(
        r#"token_store = "file"
state_dir = "{state}"
default_account = "app"

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
smtp_security = "starttls"
ca_file = "{ca}"
"#,
        state = dir.join("state").display(),
        token_url = sim.token_url(TENANT_DOMAIN),
        authorize_url = sim.authorize_url(TENANT_DOMAIN),
        port = sim.smtp_addr().port(),
        ca = ca.display(),
    );
    std::fs::write(&path, text).unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    path
}

/// Runs `program args` with `input` on stdin and returns how long it took; panics on failure.
fn timed(cmd: &mut Command, input: &[u8]) -> Duration {
    let start = Instant::now();
    let mut child = cmd
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the program starts");
    child.stdin.take().unwrap().write_all(input).unwrap();
    let out = child.wait_with_output().unwrap();
    let took = start.elapsed();
    assert!(
        out.status.success(),
        "{cmd:?} failed ({:?}): {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
    took
}

fn main() {
    let opts = options();
    let dir = tempfile::Builder::new()
        .prefix("mailgate-bench-")
        .tempdir()
        .unwrap();
    let mut sim_config = SimConfig::default().mail_dir(dir.path().join("mail"));
    sim_config.daily_recipient_limit = usize::MAX / 2;
    let sim = Simulator::start_blocking(sim_config).expect("simulator starts");
    let ca = dir.path().join("ca.pem");
    sim.write_ca_file(&ca).unwrap();
    let config_path = write_config(dir.path(), &sim, &ca);
    let profile = if cfg!(debug_assertions) {
        "debug"
    } else {
        "optimised"
    };
    println!(
        "mailgate SMTP benchmark: simulator on 127.0.0.1, STARTTLS + XOAUTH2, {profile} build"
    );

    // Get the app token once, so that every variant below uses the same cached token.
    let token = Command::new(MAILGATE)
        .args(["--config", config_path.to_str().unwrap(), "token", "app"])
        .output()
        .unwrap();
    assert!(
        token.status.success(),
        "{}",
        String::from_utf8_lossy(&token.stderr)
    );

    // 1. A batch over one connection, through the library (what the relay does).
    let config = Config::load(Some(&config_path)).unwrap();
    let account = config.account(Some("app")).unwrap();
    let sender = AccountSender::new(&config, account).unwrap();
    let messages: Vec<_> = (0..opts.messages)
        .map(|i| {
            Draft {
                from: Some(Mailbox::new(ALICE)),
                to: vec![Mailbox::new("bob@contoso.com")],
                subject: Some(format!("batch message {i}")),
                text: Some("A small message.\n".into()),
                ..Draft::default()
            }
            .build()
            .unwrap()
        })
        .collect();
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let before = sim.messages().len();
    let start = Instant::now();
    let results = runtime.block_on(sender.send_batch(&messages)).unwrap();
    let batch = start.elapsed();
    let failed = results.iter().filter(|r| r.is_err()).count();
    assert_eq!(
        failed,
        0,
        "batch messages failed: {:?}",
        results.iter().find(|r| r.is_err())
    );
    assert_eq!(sim.messages().len() - before, opts.messages);
    let batch_rate = opts.messages as f64 / batch.as_secs_f64();

    // 2. One process per message.
    let sendmail = |cmd: &mut Command| {
        cmd.args([
            "--config",
            config_path.to_str().unwrap(),
            "sendmail",
            "--account",
            "app",
            "bob@contoso.com",
        ])
        .env("HOME", dir.path());
    };
    let before = sim.messages().len();
    let start = Instant::now();
    for i in 0..opts.processes {
        let mut cmd = Command::new(MAILGATE);
        sendmail(&mut cmd);
        timed(
            &mut cmd,
            format!("Subject: process message {i}\n\nA small message.\n").as_bytes(),
        );
    }
    let per_process = start.elapsed();
    assert_eq!(sim.messages().len() - before, opts.processes);
    let process_rate = opts.processes as f64 / per_process.as_secs_f64();

    println!();
    println!(
        "batch, one connection:    {:>5} messages in {:>7.2} s = {:>8.1} messages/s",
        opts.messages,
        batch.as_secs_f64(),
        batch_rate
    );
    println!(
        "one process per message:  {:>5} messages in {:>7.2} s = {:>8.1} messages/s",
        opts.processes,
        per_process.as_secs_f64(),
        process_rate
    );
    println!(
        "ratio: one connection sends {:.1}x as many messages per second",
        batch_rate / process_rate
    );

    // 3. mailgate sendmail versus msmtp, one message each, alternating.
    let msmtp = which("msmtp");
    let Some(msmtp) = msmtp else {
        println!(
            "\nmsmtp not found (Debian: apt-get install msmtp): mailgate sendmail vs msmtp skipped"
        );
        return;
    };
    let msmtprc = dir.path().join("msmtprc");
    std::fs::write(
        &msmtprc,
        format!(
            "defaults\ntls on\ntls_starttls on\ntls_trust_file {ca}\nlogfile -\n\naccount sim\nhost 127.0.0.1\nport {port}\nauth xoauth2\nuser {ALICE}\nfrom {ALICE}\npasswordeval \"{MAILGATE} --config {cfg} token app\"\n\naccount default : sim\n",
            ca = ca.display(),
            port = sim.smtp_addr().port(),
            cfg = config_path.display(),
        ),
    )
    .unwrap();
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(&msmtprc, std::fs::Permissions::from_mode(0o600)).unwrap();
    }
    let input = b"Subject: one message\n\nA small message.\n";
    let (mut ours, mut theirs) = (Vec::new(), Vec::new());
    let before = sim.messages().len();
    for _ in 0..opts.rounds {
        let mut cmd = Command::new(MAILGATE);
        sendmail(&mut cmd);
        ours.push(timed(&mut cmd, input));
        let mut cmd = Command::new(&msmtp);
        cmd.args(["-C", msmtprc.to_str().unwrap(), "bob@contoso.com"])
            .env("HOME", dir.path());
        theirs.push(timed(&mut cmd, input));
    }
    assert_eq!(sim.messages().len() - before, 2 * opts.rounds);
    let (ours, theirs) = (median(ours), median(theirs));
    println!();
    println!("one message, median of {} runs each:", opts.rounds);
    println!(
        "  mailgate sendmail:                              {:>10}",
        ms(ours)
    );
    println!(
        "  msmtp (passwordeval `mailgate token`, xoauth2): {:>10}",
        ms(theirs)
    );
    println!(
        "ratio: msmtp takes {:.2}x the time of mailgate sendmail",
        theirs.as_secs_f64() / ours.as_secs_f64()
    );
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(program))
        .find(|p| p.is_file())
}
