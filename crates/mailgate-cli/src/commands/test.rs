//! `mailgate test`: checks an account step by step, the way a "Test" button should, but
//! explaining: config, token (with its scopes), TCP connect, TLS (version and certificate),
//! EHLO (AUTH mechanisms offered), AUTH, sender accepted (Send As), and a test message
//! delivered with the server's queue id. The first failing step shows its diagnosis; nothing
//! after it is attempted.

use std::fmt::Write as _;

use mailgate::config::{Account, Config};
use mailgate::message::{Draft, Mailbox};
use mailgate::send::{AccountSender, SendError};
use mailgate::smtp::{SmtpClient, SmtpError, Stage};
use time::OffsetDateTime;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The account to test (default: default_account, or the only account).
    pub account: Option<String>,
    /// Where to send the test message (default: the account's own address).
    #[arg(long, value_name = "ADDRESS")]
    pub to: Option<String>,
    /// Send the test message as this address (default: the account's `from`).
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
}

/// The checklist steps, in order.
const STEPS: &[&str] = &[
    "Config",
    "Access token",
    "TCP connect",
    "TLS",
    "EHLO",
    "AUTH",
    "Sender (Send As)",
    "Test message",
];

struct Checklist {
    done: usize,
}

impl Checklist {
    fn ok(&mut self, detail: impl AsRef<str>) {
        println!("  ✓ {:<17} {}", STEPS[self.done], detail.as_ref());
        self.done += 1;
    }

    /// Marks the step `step` as failed (earlier ones not yet printed pass without detail), lists
    /// the remaining steps as not attempted, and returns the error for the exit status and
    /// diagnosis.
    fn fail(&mut self, step: usize, summary: &str, err: anyhow::Error) -> anyhow::Error {
        while self.done < step {
            self.ok("");
        }
        println!("  ✗ {:<17} {}", STEPS[step], summary);
        for s in &STEPS[step + 1..] {
            println!("  · {s:<17} not attempted");
        }
        self.done = STEPS.len();
        err
    }
}

/// Which checklist step an SMTP failure belongs to.
fn step_of(err: &SmtpError) -> usize {
    let send_as = err
        .diagnosis()
        .is_some_and(|d| d.title.contains("\"Send As\""));
    match err.stage() {
        Some(Stage::Connect) | Some(Stage::Greeting) => 2,
        Some(Stage::Starttls) | Some(Stage::TlsHandshake) => 3,
        Some(Stage::Ehlo) => 4,
        Some(Stage::Auth) => 5,
        Some(Stage::Rset) | Some(Stage::MailFrom) => 6,
        Some(Stage::Message) if send_as => 6,
        _ => 7,
    }
}

/// The one-line summary of a failed step: the diagnosis title when the library has one, else
/// the error's first line.
fn first_line(err: &anyhow::Error) -> String {
    if let Some(d) = err.chain().find_map(mailgate::diagnose::of_error) {
        return d.title.clone();
    }
    let s = format!("{err:#}");
    s.lines().next().unwrap_or("").to_string()
}

fn security_name(s: mailgate::smtp::Security) -> &'static str {
    match s {
        mailgate::smtp::Security::Starttls => "STARTTLS",
        mailgate::smtp::Security::Tls => "TLS",
        mailgate::smtp::Security::Plain => "no TLS",
    }
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let mut list = Checklist { done: 0 };
    println!(
        "Testing mailgate account{}:",
        args.account
            .as_deref()
            .map(|a| format!(" {a}"))
            .unwrap_or_default()
    );
    let config = match Config::load(globals.config.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            let e = anyhow::Error::new(e);
            return Err(list.fail(0, &first_line(&e), e));
        }
    };
    let account = match config.account(args.account.as_deref()) {
        Ok(a) => a.clone(),
        Err(e) => {
            let e = anyhow::Error::new(e);
            return Err(list.fail(0, &first_line(&e), e));
        }
    };
    let from = match &args.from {
        Some(f) => match Mailbox::parse(f, "--from") {
            Ok(m) => m,
            Err(e) => {
                let e = anyhow::Error::new(e);
                return Err(list.fail(0, &first_line(&e), e));
            }
        },
        None => Mailbox::new(account.from.clone()),
    };
    let to = match &args.to {
        Some(t) => match Mailbox::parse(t, "--to") {
            Ok(m) => m,
            Err(e) => {
                let e = anyhow::Error::new(e);
                return Err(list.fail(0, &first_line(&e), e));
            }
        },
        None => Mailbox::new(account.from.clone()),
    };
    list.ok(format!(
        "{} — account {} ({}), user {}, {}:{} with {} and {}",
        config.path.display(),
        account.name,
        account.provider,
        account.user,
        account.smtp_host,
        account.smtp_port,
        security_name(account.smtp_security),
        mailgate::smtp::sasl::mechanism_name(account.smtp_auth)
    ));
    let sender = match AccountSender::new(&config, &account) {
        Ok(s) => s,
        Err(e) => {
            let e = anyhow::Error::new(e);
            return Err(list.fail(1, &first_line(&e), e));
        }
    };
    super::send::runtime()?.block_on(check(&mut list, &sender, &account, from, to))
}

async fn check(
    list: &mut Checklist,
    sender: &AccountSender,
    account: &Account,
    from: Mailbox,
    to: Mailbox,
) -> anyhow::Result<()> {
    let (token, cached) = match sender.token().await {
        Ok(t) => t,
        Err(e) => {
            let e = anyhow::Error::new(e);
            return Err(list.fail(1, &first_line(&e), e));
        }
    };
    let mut detail = String::from(if cached {
        "stored token, still valid"
    } else {
        "obtained now"
    });
    if let Ok(Some(set)) = sender.tokens().load() {
        if let Some(exp) = set.expires_at {
            let mins = (exp - OffsetDateTime::now_utc()).whole_minutes();
            let _ = write!(detail, ", expires in {mins} min");
        }
        if let Some(id) = &set.identity {
            let _ = write!(detail, ", signed in as {id}");
        }
        if !set.scopes.is_empty() {
            let _ = write!(detail, "; scopes: {}", set.scopes.join(" "));
        }
    }
    list.ok(detail);

    let client =
        match SmtpClient::connect_with_transcript(sender.settings(), sender.transcript().clone())
            .await
        {
            Ok(c) => c,
            Err(e) => {
                let step = step_of(&e);
                let e = anyhow::Error::new(e);
                return Err(list.fail(step, &first_line(&e), e));
            }
        };
    let info = client.info().clone();
    let target = format!("{}:{}", sender.settings().host, sender.settings().port);
    let peer = info.peer.to_string();
    list.ok(format!(
        "{target}{} in {} ms",
        if peer == target {
            String::new()
        } else {
            format!(" ({peer})")
        },
        info.connect_time.as_millis()
    ));
    match &info.tls {
        Some(tls) => list.ok(format!(
            "{} ({}), certificate {} issued by {}{}",
            tls.version,
            tls.cipher,
            tls.subject.as_deref().unwrap_or("(no name)"),
            tls.issuer.as_deref().unwrap_or("(unknown)"),
            tls.not_after
                .as_deref()
                .map(|d| format!(", valid until {d}"))
                .unwrap_or_default()
        )),
        None => {
            list.ok("none: security = \"plain\" (allowed because the server is on this machine)")
        }
    }
    let caps = client.capabilities();
    let mut ehlo = format!(
        "{}; AUTH {}",
        caps.server_name,
        if caps.auth.is_empty() {
            "(none offered)".to_string()
        } else {
            caps.auth.join(" ")
        }
    );
    if let Some(size) = caps.size {
        let _ = write!(ehlo, "; SIZE {} MB", size / 1_000_000);
    }
    for (flag, name) in [
        (caps.pipelining(), "PIPELINING"),
        (caps.smtputf8(), "SMTPUTF8"),
        (caps.eight_bit_mime(), "8BITMIME"),
    ] {
        if flag {
            let _ = write!(ehlo, " {name}");
        }
    }
    list.ok(ehlo);

    let (mut client, refreshed) = match sender.login(client, &token, cached).await {
        Ok(c) => c,
        Err(e) => {
            let step = match &e {
                SendError::Smtp(s) => step_of(s),
                _ => 5,
            };
            let e = anyhow::Error::new(e);
            return Err(list.fail(step, &first_line(&e), e));
        }
    };
    list.ok(format!(
        "accepted as {} ({}){}",
        account.user,
        mailgate::smtp::sasl::mechanism_name(sender.settings().auth),
        if refreshed {
            " after refreshing the token the server had refused"
        } else {
            ""
        }
    ));

    let now = OffsetDateTime::now_utc();
    let draft = Draft {
        from: Some(from.clone()),
        to: vec![to.clone()],
        subject: Some(format!("mailgate test message ({})", account.name)),
        text: Some(format!(
            "This is a test message sent by `mailgate test` through account {} (user {}) at {} UTC.\n\nIf you can read it, sending works.\n",
            account.name,
            account.user,
            now.replace_nanosecond(0).unwrap_or(now)
        )),
        headers: vec![("X-Mailer".into(), format!("mailgate {} (test)", env!("CARGO_PKG_VERSION")))],
        ..Draft::default()
    };
    let message = match draft.build() {
        Ok(m) => m,
        Err(e) => {
            let e = anyhow::Error::new(e);
            return Err(list.fail(6, &first_line(&e), e));
        }
    };
    let result = client.send(&message.envelope, &message.data).await;
    client.quit().await;
    match result {
        Ok(outcome) if outcome.refused.is_empty() => {
            let as_whom = if from.email.eq_ignore_ascii_case(&account.user) {
                format!("{} (the account's own address)", from.email)
            } else {
                format!("{} as {}", account.user, from.email)
            };
            list.ok(format!("{as_whom}: MAIL FROM and the message accepted"));
            list.ok(format!(
                "delivered to {} — queue id {}",
                to.email,
                outcome.queue_id.as_deref().unwrap_or("(not given)")
            ));
            println!("\nAll checks passed.");
            Ok(())
        }
        Ok(outcome) => {
            let r = &outcome.refused[0];
            let summary = format!("{}: {}", r.address, r.reply);
            let d = r.diagnosis.clone();
            let status = d.sysexit;
            let err = crate::exit::fail(
                status,
                anyhow::anyhow!("the test recipient was refused: {summary}\n\n{d}"),
            );
            Err(list.fail(7, &summary, err))
        }
        Err(e) => {
            let step = step_of(&e);
            let e = anyhow::Error::new(e);
            Err(list.fail(step, &first_line(&e), e))
        }
    }
}
