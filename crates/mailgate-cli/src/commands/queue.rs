//! `mailgate queue`: what the relay's spool holds, and what to do with it (`list`, `show ID`,
//! `flush`, `retry ID`, `delete ID`). Works whether the relay runs or not; a running relay picks
//! up the changes within its `scan_interval`.

use std::path::PathBuf;

use mailgate::config::Config;
use mailgate::spool::{Entry, RecipientStatus, Spool, SpoolError, State};
use time::OffsetDateTime;

use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Option<Sub>,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// List queued, deferred and failed messages (the default).
    List {
        /// Print JSON (one object per message) for scripts.
        #[arg(long)]
        json: bool,
    },
    /// Show one message: envelope, each recipient's status, attempts, errors and its header.
    Show {
        /// The id (or a unique beginning of it).
        id: String,
        /// Print the whole message as queued.
        #[arg(long)]
        message: bool,
    },
    /// Try every deferred message now (held ones too).
    Flush,
    /// Try a deferred or failed message again now; failed recipients are tried again.
    Retry {
        /// The id (or a unique beginning of it).
        id: String,
    },
    /// Remove a message from the queue without sending it.
    Delete {
        /// The id (or a unique beginning of it).
        id: String,
    },
}

fn open_spool(globals: &Globals) -> anyhow::Result<Spool> {
    let config = Config::load(globals.config.as_deref())?;
    let dir: PathBuf = match &config.relay {
        Some(r) => r.spool_dir(&config.state_dir),
        None => config.state_dir.join("spool"),
    };
    Ok(Spool::open(dir)?)
}

/// Whether a relay holds the spool's delivery lock right now.
fn relay_running(spool: &Spool) -> bool {
    matches!(spool.lock(), Err(SpoolError::Locked { .. }))
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let spool = open_spool(globals)?;
    match args.command.unwrap_or(Sub::List { json: false }) {
        Sub::List { json } => list(&spool, json),
        Sub::Show { id, message } => show(&spool, &id, message),
        Sub::Flush => {
            let n = spool.flush()?;
            println!("{n} deferred message(s) will be tried now.");
            note_relay(&spool);
            Ok(())
        }
        Sub::Retry { id } => {
            let id = spool.retry(&id)?;
            println!("Message {id} will be tried now.");
            note_relay(&spool);
            Ok(())
        }
        Sub::Delete { id } => {
            let id = spool.delete(&id)?;
            println!("Message {id} deleted; it will not be sent.");
            Ok(())
        }
    }
}

fn note_relay(spool: &Spool) {
    if !relay_running(spool) {
        println!("No relay is running on this spool: it is sent when `mailgate relay` starts.");
    }
}

fn ago(t: OffsetDateTime) -> String {
    let secs = (OffsetDateTime::now_utc() - t).whole_seconds().max(0) as u64;
    short_duration(secs)
}

fn short_duration(secs: u64) -> String {
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86400 => format!("{}h{:02}m", s / 3600, (s % 3600) / 60),
        s => format!("{}d{:02}h", s / 86400, (s % 86400) / 3600),
    }
}

fn when(t: Option<OffsetDateTime>) -> String {
    match t {
        None => "now".into(),
        Some(t) => {
            let secs = (t - OffsetDateTime::now_utc()).whole_seconds();
            if secs <= 0 {
                "now".into()
            } else {
                format!("in {}", short_duration(secs as u64))
            }
        }
    }
}

fn status(e: &Entry) -> String {
    match e.state {
        State::Deferred if e.held.is_some() => "held".into(),
        s => s.to_string(),
    }
}

fn first_line(s: &str, max: usize) -> String {
    let line = s.lines().next().unwrap_or("");
    if line.chars().count() > max {
        format!("{}…", line.chars().take(max).collect::<String>())
    } else {
        line.to_string()
    }
}

fn list(spool: &Spool, json: bool) -> anyhow::Result<()> {
    let (entries, damaged) = spool.list_states(&State::ALL)?;
    if json {
        for e in &entries {
            let mut v = serde_json::to_value(e)?;
            v["state"] = serde_json::Value::String(status(e));
            println!("{v}");
        }
        return Ok(());
    }
    for d in &damaged {
        eprintln!("mailgate: {d}");
    }
    if entries.is_empty() {
        println!("The queue is empty ({}).", spool.dir().display());
        return Ok(());
    }
    println!(
        "{:<16}  {:<8}  {:>6}  {:>3}  {:<9}  {:<28}  {:<6}  LAST ERROR",
        "ID", "STATUS", "AGE", "TRY", "NEXT", "FROM", "RCPTS"
    );
    for e in &entries {
        let next = match e.state {
            State::Deferred => when(e.next_try),
            State::New => "now".into(),
            State::Active => "sending".into(),
            State::Failed => "-".into(),
        };
        let error = e
            .failed_reason
            .as_deref()
            .or(e.held.as_deref())
            .or(e.last_error.as_deref())
            .unwrap_or("");
        let done = e
            .recipients
            .iter()
            .filter(|r| r.status != RecipientStatus::Pending)
            .count();
        println!(
            "{:<16}  {:<8}  {:>6}  {:>3}  {:<9}  {:<28}  {:<6}  {}",
            e.id,
            status(e),
            ago(e.received_at),
            e.attempts,
            next,
            first_line(&format!("<{}>", e.envelope.sender), 28),
            format!("{done}/{}", e.recipients.len()),
            first_line(error, 70)
        );
    }
    let count = |s: &str| entries.iter().filter(|e| status(e) == s).count();
    println!(
        "{} message(s): {} new, {} sending, {} deferred, {} held, {} failed",
        entries.len(),
        count("new"),
        count("active"),
        count("deferred"),
        count("held"),
        count("failed")
    );
    Ok(())
}

fn show(spool: &Spool, id: &str, full: bool) -> anyhow::Result<()> {
    let e = spool.find(id)?;
    let message = spool.message(&e.id).unwrap_or_default();
    if full {
        use std::io::Write as _;
        std::io::stdout().write_all(&message)?;
        return Ok(());
    }
    let rfc3339 = |t: OffsetDateTime| {
        t.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    };
    println!("Message {}", e.id);
    println!("  status:    {}", status(&e));
    println!(
        "  received:  {} ({} ago)",
        rfc3339(e.received_at),
        ago(e.received_at)
    );
    println!("  from:      <{}>", e.envelope.sender);
    if let Some(u) = &e.envelope.upstream_sender {
        println!("  sent as:   <{u}> (rewrite_from)");
    }
    println!(
        "  account:   {}",
        e.envelope
            .account
            .as_deref()
            .unwrap_or("(routed by sender)")
    );
    println!("  origin:    {}", e.envelope.origin);
    println!("  size:      {} bytes", e.size);
    println!("  attempts:  {}", e.attempts);
    if e.state == State::Deferred {
        println!("  next try:  {}", when(e.next_try));
    }
    println!("  recipients:");
    for r in &e.recipients {
        let st = match r.status {
            RecipientStatus::Pending => "pending",
            RecipientStatus::Delivered => "delivered",
            RecipientStatus::Failed => "failed",
        };
        println!("    {:<9} <{}>", st, r.address);
        if let Some(reply) = &r.reply {
            for line in reply.lines() {
                println!("              {line}");
            }
        }
    }
    if let Some(h) = &e.held {
        println!("  held:      {h}");
    }
    if let Some(err) = &e.last_error {
        println!("  last error:");
        for line in err.lines() {
            println!("    {line}");
        }
    }
    if let Some(r) = &e.failed_reason {
        println!("  failed:    {r}");
    }
    let text = String::from_utf8_lossy(&message);
    let head = text.split("\r\n\r\n").next().unwrap_or("");
    println!("  header:");
    for line in head.lines().take(40) {
        println!("    {line}");
    }
    Ok(())
}
