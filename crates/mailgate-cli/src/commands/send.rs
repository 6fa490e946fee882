//! `mailgate send`: builds a message from options and sends it through an account.
//!
//! The body comes from `--body`, `--body-file` or standard input; `--html-file` adds an HTML
//! alternative and `--attach` files (MIME type from the extension). Without `--from` the
//! account's `from` is the sender; a shared mailbox given with `--from` is sent as while
//! authenticating as the account's user. `--dry-run` prints the message instead of sending it.

use std::io::{IsTerminal, Read, Write};
use std::path::PathBuf;

use anyhow::Context as _;
use mailgate::config::Config;
use mailgate::message::{Attachment, Draft, Mailbox, OutgoingMessage};
use mailgate::send::{AccountSender, SendReport};
use mailgate::smtp::error::worst_status;
use mailgate::Sysexit;

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// The account to send through (default: default_account, or the only account).
    #[arg(long, short = 'a')]
    pub account: Option<String>,
    /// A recipient (repeat, or separate with commas): `bob@contoso.com`, `"Bob" <bob@contoso.com>`.
    #[arg(long, value_name = "ADDRESS", required_unless_present_any = ["cc", "bcc"])]
    pub to: Vec<String>,
    /// A copy recipient (repeatable).
    #[arg(long, value_name = "ADDRESS")]
    pub cc: Vec<String>,
    /// A blind copy recipient (repeatable): gets the message, never appears in it.
    #[arg(long, value_name = "ADDRESS")]
    pub bcc: Vec<String>,
    /// The sender (default: the account's `from`): a shared mailbox the account's user may send
    /// as, optionally with a name (`"Contoso Sales" <sales@contoso.com>`).
    #[arg(long, value_name = "ADDRESS")]
    pub from: Option<String>,
    /// Where replies should go.
    #[arg(long, value_name = "ADDRESS")]
    pub reply_to: Vec<String>,
    /// The subject (any language: non-ASCII is encoded as RFC 2047 requires).
    #[arg(long, short = 's')]
    pub subject: Option<String>,
    /// The text body (without --body or --body-file, it is read from standard input).
    #[arg(long, value_name = "TEXT", conflicts_with = "body_file")]
    pub body: Option<String>,
    /// Read the text body from a file (`-` for standard input).
    #[arg(long, value_name = "FILE")]
    pub body_file: Option<PathBuf>,
    /// An HTML body (sent as an alternative to the text body).
    #[arg(long, value_name = "FILE")]
    pub html_file: Option<PathBuf>,
    /// Attach a file (repeatable).
    #[arg(long, value_name = "FILE")]
    pub attach: Vec<PathBuf>,
    /// Print the message and its envelope instead of sending it.
    #[arg(long)]
    pub dry_run: bool,
}

/// Reads `--to`-style values (repeatable, comma-separated) into addresses.
pub(crate) fn addresses(values: &[String], field: &str) -> anyhow::Result<Vec<Mailbox>> {
    let mut out = Vec::new();
    for v in values {
        if v.trim().is_empty() {
            continue;
        }
        out.extend(Mailbox::parse_list(v, field)?);
    }
    Ok(out)
}

/// A runtime for the async library on this thread.
pub(crate) fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
}

fn read_file(path: &PathBuf, what: &str) -> anyhow::Result<String> {
    if path.as_os_str() == "-" {
        let mut s = String::new();
        std::io::stdin()
            .read_to_string(&mut s)
            .context("cannot read the body from standard input")?;
        return Ok(s);
    }
    std::fs::read_to_string(path).map_err(|e| {
        fail(
            Sysexit::NoInput,
            anyhow::anyhow!("cannot read the {what} {}: {e}", path.display()),
        )
    })
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    let account = config.account(args.account.as_deref())?;

    let from = match &args.from {
        Some(f) => Mailbox::parse(f, "--from")?,
        None => Mailbox::new(account.from.clone()),
    };
    let text = match (&args.body, &args.body_file) {
        (Some(b), _) => Some(b.clone()),
        (None, Some(f)) => Some(read_file(f, "body file")?),
        (None, None) => {
            let stdin = std::io::stdin();
            if stdin.is_terminal() {
                eprintln!("Type the message body; end with Ctrl-D on a line of its own.");
            }
            let mut s = String::new();
            stdin
                .lock()
                .read_to_string(&mut s)
                .context("cannot read the body from standard input")?;
            Some(s)
        }
    };
    let html = match &args.html_file {
        Some(f) => Some(read_file(f, "HTML file")?),
        None => None,
    };
    // With only an HTML file and nothing on stdin, send the HTML alone.
    let text = text.filter(|t| html.is_none() || !t.is_empty());
    let attachments = args
        .attach
        .iter()
        .map(|p| Attachment::from_path(p))
        .collect::<Result<Vec<_>, _>>()?;
    let draft = Draft {
        from: Some(from),
        to: addresses(&args.to, "--to")?,
        cc: addresses(&args.cc, "--cc")?,
        bcc: addresses(&args.bcc, "--bcc")?,
        reply_to: addresses(&args.reply_to, "--reply-to")?,
        subject: args.subject.clone().filter(|s| !s.is_empty()),
        text,
        html,
        attachments,
        headers: vec![(
            "X-Mailer".into(),
            format!("mailgate {}", env!("CARGO_PKG_VERSION")),
        )],
    };
    let message = draft.build()?;

    if args.dry_run {
        print_dry_run(&message, &account.user)?;
        return Ok(());
    }
    let sender = AccountSender::new(&config, account)?;
    let report = runtime()?.block_on(sender.send(&message))?;
    finish_report(&report)
}

fn print_dry_run(message: &OutgoingMessage, user: &str) -> anyhow::Result<()> {
    eprintln!("Dry run: nothing is sent.");
    eprintln!("AUTH as:   {user}");
    eprintln!("MAIL FROM: <{}>", message.envelope.mail_from);
    for r in &message.envelope.rcpt_to {
        eprintln!("RCPT TO:   <{r}>");
    }
    eprintln!();
    let mut out = std::io::stdout().lock();
    out.write_all(&message.data)
        .and_then(|()| out.flush())
        .context("cannot write the message to standard output")?;
    Ok(())
}

/// Prints what happened to a sent message; refused recipients make the command fail with the
/// status their refusals deserve (75 only when every refusal is temporary).
pub(crate) fn finish_report(report: &SendReport) -> anyhow::Result<()> {
    let o = &report.outcome;
    if report.refreshed_after_535 {
        println!("(the server refused the stored token; it was refreshed and the login retried)");
    }
    println!(
        "Sent to {} (queue id {}, Message-ID <{}>)",
        o.accepted.join(", "),
        o.queue_id.as_deref().unwrap_or("not given"),
        report.message_id
    );
    if o.refused.is_empty() {
        return Ok(());
    }
    eprintln!(
        "Not delivered to {} of {} recipients:",
        o.refused.len(),
        o.refused.len() + o.accepted.len()
    );
    for r in &o.refused {
        eprintln!("\n  {r}");
        eprintln!("{}", indent(&r.diagnosis.to_string(), "  "));
    }
    let refused: Vec<&str> = o.refused.iter().map(|r| r.address.as_str()).collect();
    Err(fail(
        worst_status(&o.refused),
        anyhow::anyhow!(
            "the server refused {} (the other recipients got the message)",
            refused.join(", ")
        ),
    ))
}

pub(crate) fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}
