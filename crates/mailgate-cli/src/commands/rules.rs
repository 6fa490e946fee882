//! `mailgate rules run [--once] [RULE...]` and `mailgate rules check [RULE...]`: file-transfer
//! rules that mail On Success, On Error and On No Files.

use std::cell::RefCell;
use std::io::IsTerminal;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context as _;
use indicatif::{ProgressBar, ProgressStyle};
use mailgate::config::Config;
use mailgate::rules::events::{format_duration, format_time, human_bytes};
use mailgate::rules::runner::MailResult;
use mailgate::rules::state::ms_time;
use mailgate::rules::{
    plan, Delivery, MailNotifier, Notifier, PlanItem, Progress, RuleConfig, Runner, ScanReport,
    StateError,
};
use mailgate::Sysexit;

use crate::exit::fail;
use crate::Globals;

#[derive(clap::Args, Debug)]
pub struct Args {
    #[command(subcommand)]
    pub command: Sub,
}

#[derive(clap::Subcommand, Debug)]
pub enum Sub {
    /// Run the rules in the foreground, each at its interval, until Ctrl-C (or SIGTERM).
    Run {
        /// Scan each rule once and exit (for cron and timers).
        #[arg(long)]
        once: bool,
        /// Only these rules (default: all).
        #[arg(value_name = "RULE")]
        rules: Vec<String>,
    },
    /// Validate the rules and show what the next scan would do, touching nothing.
    Check {
        /// Only these rules (default: all).
        #[arg(value_name = "RULE")]
        rules: Vec<String>,
    },
}

pub fn run(args: Args, globals: &Globals) -> anyhow::Result<()> {
    let config = Config::load(globals.config.as_deref())?;
    match args.command {
        Sub::Run { once, rules } => run_rules(&config, &rules, once),
        Sub::Check { rules } => check(&config, &rules),
    }
}

/// The rules named on the command line (all when none is named).
fn selected(config: &Config, names: &[String]) -> anyhow::Result<Vec<RuleConfig>> {
    if config.rules.is_empty() {
        return Err(fail(
            Sysexit::Config,
            anyhow::anyhow!(
                "config {}: no rules; add a [rules.NAME] table (see `mailgate rules --help` and \
                 the README section \"File-transfer events\")",
                config.path.display()
            ),
        ));
    }
    if names.is_empty() {
        return Ok(config.rules.values().cloned().collect());
    }
    names
        .iter()
        .map(|n| {
            config.rules.get(n).cloned().ok_or_else(|| {
                fail(
                    Sysexit::Usage,
                    anyhow::anyhow!(
                        "no rule named {n:?} in {} (rules: {})",
                        config.path.display(),
                        config.rules.keys().cloned().collect::<Vec<_>>().join(", ")
                    ),
                )
            })
        })
        .collect()
}

fn run_rules(config: &Config, names: &[String], once: bool) -> anyhow::Result<()> {
    let rules = selected(config, names)?;
    let notifier = MailNotifier::new(config).context("cannot start the async runtime")?;
    let stop = Arc::new(AtomicBool::new(false));
    watch_signals(stop.clone());
    let progress = BarProgress::new();
    let mut runner = Runner::new(rules, &config.state_dir, &notifier, &progress, stop.clone());
    let mut outcome = Tally::default();

    if once {
        let queued = notifier.retry_queued(true);
        print_queue(&queued);
        for (name, result) in runner.run_once() {
            print_result(&name, result, true, &mut outcome);
        }
        return outcome.finish();
    }

    let list = runner
        .rules()
        .iter()
        .map(|r| format!("{} (every {})", r.name, format_duration(r.interval)))
        .collect::<Vec<_>>()
        .join(", ");
    eprintln!("mailgate: running {list}; Ctrl-C stops");
    let mut last_error: std::collections::HashMap<String, String> = Default::default();
    runner.run(|name, result| {
        if let Err(e) = &result {
            // A lasting problem (another process holds the rule) is said once, not every scan.
            if last_error.get(name) == Some(&e.to_string()) {
                return;
            }
            last_error.insert(name.to_string(), e.to_string());
        } else {
            last_error.remove(name);
        }
        print_result(name, result, false, &mut outcome);
    });
    eprintln!("mailgate: stopped");
    Ok(())
}

#[derive(Default)]
struct Tally {
    file_failures: usize,
    mail_failures: usize,
    locked: usize,
    state_errors: usize,
}

impl Tally {
    fn finish(self) -> anyhow::Result<()> {
        if self.state_errors > 0 {
            return Err(fail(
                Sysexit::CantCreat,
                anyhow::anyhow!(
                    "the state of {} rule(s) could not be kept (see above)",
                    self.state_errors
                ),
            ));
        }
        if self.mail_failures > 0 {
            return Err(fail(
                Sysexit::TempFail,
                anyhow::anyhow!(
                    "{} event mail(s) could be neither sent nor queued; the rule fires them again \
                     at its next run",
                    self.mail_failures
                ),
            ));
        }
        if self.locked > 0 {
            return Err(fail(
                Sysexit::TempFail,
                anyhow::anyhow!(
                    "{} rule(s) were skipped: another mailgate runs them",
                    self.locked
                ),
            ));
        }
        if self.file_failures > 0 {
            return Err(fail(
                Sysexit::IoErr,
                anyhow::anyhow!(
                    "{} file(s) could not be transferred (listed above); they are tried again at \
                     the next run",
                    self.file_failures
                ),
            ));
        }
        Ok(())
    }
}

fn print_queue(q: &mailgate::rules::QueueReport) {
    if !q.delivered.is_empty() {
        println!("delivered {} queued event mail(s)", q.delivered.len());
    }
    for (id, why) in &q.waiting {
        println!("queued event mail {id} still waiting: {why}");
    }
    for id in &q.failed {
        println!("queued event mail {id} given up (see `mailgate queue show {id}`)");
    }
}

fn print_result(
    name: &str,
    result: Result<ScanReport, StateError>,
    quiet_is_news: bool,
    tally: &mut Tally,
) {
    let r = match result {
        Ok(r) => r,
        Err(e @ StateError::Locked { .. }) => {
            tally.locked += 1;
            eprintln!("rule {name}: {e}");
            return;
        }
        Err(e) => {
            tally.state_errors += 1;
            eprintln!("rule {name}: {e}");
            return;
        }
    };
    tally.file_failures += r.failures.len();
    let news = !r.transferred.is_empty()
        || r.recovered.is_some()
        || !r.failures.is_empty()
        || !r.mails.is_empty();
    if !news && !quiet_is_news {
        return;
    }
    let bytes: u64 = r.transferred.iter().map(|t| t.size).sum();
    if r.transferred.is_empty() {
        println!("rule {}: no file {}", r.rule, r.action.past());
    } else {
        println!(
            "rule {}: {} {} file(s), {}, to {}",
            r.rule,
            r.action.past(),
            r.transferred.len(),
            human_bytes(bytes),
            r.destination.display()
        );
    }
    if let Some(t) = &r.recovered {
        println!(
            "  finished an interrupted transfer: {} -> {}",
            t.source.display(),
            t.destination.display()
        );
    }
    for t in &r.transferred {
        println!(
            "  {} -> {} ({})",
            t.source.display(),
            t.destination.display(),
            human_bytes(t.size)
        );
    }
    for (src, existing) in &r.skipped {
        println!(
            "  skipped {}: {} exists (conflict = \"skip\")",
            src.display(),
            existing.display()
        );
    }
    for (src, why) in &r.waiting {
        println!("  waiting {}: {}", src.display(), readiness(why));
    }
    for f in &r.failures {
        println!("  error {f}");
    }
    for m in &r.mails {
        print_mail(m, tally);
    }
    if r.interrupted {
        println!("  interrupted; what is left is taken at the next run");
    }
}

fn readiness(r: &mailgate::rules::scan::Readiness) -> String {
    use mailgate::rules::scan::Readiness;
    match r {
        Readiness::Busy { ago } => format!(
            "modified {} ago, still being written?",
            format_duration(Duration::from_secs(ago.as_secs()))
        ),
        Readiness::Settling { .. } => "changed while it was watched".into(),
        Readiness::Ready => "ready".into(),
    }
}

fn print_mail(m: &MailResult, tally: &mut Tally) {
    let to = m.to.join(", ");
    match &m.result {
        Ok(Delivery::Sent { queue_id, refused }) => {
            let id = queue_id
                .as_deref()
                .map(|q| format!(" ({q})"))
                .unwrap_or_default();
            println!("  {} mail to {to}: sent{id}", m.kind);
            for r in refused {
                println!("    refused: {r}");
            }
        }
        Ok(Delivery::Queued { id, reason }) => {
            println!(
                "  {} mail to {to}: queued as {id} (it cannot go out now: {reason}); it is \
                 retried until delivered",
                m.kind
            );
        }
        Err(e) => {
            tally.mail_failures += 1;
            println!("  {} mail to {to}: FAILED: {e}", m.kind);
        }
    }
}

fn check(config: &Config, names: &[String]) -> anyhow::Result<()> {
    let rules = selected(config, names)?;
    println!(
        "config {}: {} rule(s), valid",
        config.path.display(),
        rules.len()
    );
    for rule in &rules {
        println!();
        println!("{rule}");
        let p = plan(rule, &config.state_dir)?;
        println!("next scan (destination {}):", p.destination.display());
        if let Some(j) = &p.unfinished {
            println!(
                "  first finish or undo an interrupted transfer: {} -> {}",
                j.source.display(),
                j.destination.display()
            );
        }
        let verb = rule.action.as_str();
        for item in &p.items {
            match item {
                PlanItem::Take {
                    source,
                    target,
                    size,
                    renamed,
                    overwrite,
                } => {
                    let note = if *renamed {
                        "  [name taken: renamed]"
                    } else if *overwrite {
                        "  [replaces the existing file]"
                    } else {
                        ""
                    };
                    println!(
                        "  {verb} {} -> {} ({}){note}",
                        source.display(),
                        target.display(),
                        human_bytes(*size)
                    );
                }
                PlanItem::Skip { source, existing } => println!(
                    "  skip {}: {} exists (conflict = \"skip\")",
                    source.display(),
                    existing.display()
                ),
                PlanItem::AlreadyCopied { source } => {
                    println!(
                        "  leave {}: copied before, unchanged since",
                        source.display()
                    )
                }
                PlanItem::Wait { source, ago } => println!(
                    "  wait {}: modified {} ago (min_age {})",
                    source.display(),
                    format_duration(Duration::from_secs(ago.as_secs())),
                    format_duration(rule.min_age)
                ),
                other => println!("  {other:?}"),
            }
        }
        for f in &p.failures {
            println!("  error {f}");
        }
        if p.items.is_empty() && p.failures.is_empty() {
            println!("  no file to take in {}", rule.source.display());
        }
        if p.unreported > 0 {
            println!(
                "  {} transferred file(s) not yet reported by On Success",
                p.unreported
            );
        }
        if let Some(nf) = &rule.on_no_files {
            let since = p.status.last_file_ms.or(p.status.watching_since_ms);
            match since {
                Some(ms) => {
                    let t = ms_time(ms);
                    let quiet = std::time::SystemTime::now()
                        .duration_since(t)
                        .unwrap_or_default();
                    let when = if quiet >= nf.after {
                        "due".to_string()
                    } else {
                        format!(
                            "in {}",
                            format_duration(Duration::from_secs((nf.after - quiet).as_secs()))
                        )
                    };
                    println!(
                        "  On No Files: no file since {} ; mail {when}",
                        format_time(&t.into())
                    );
                }
                None => println!(
                    "  On No Files: counts from the first run (mail after {} without a file)",
                    format_duration(nf.after)
                ),
            }
        }
    }
    Ok(())
}

/// Sets `stop` on Ctrl-C or SIGTERM; a second signal exits at once (the journal makes that safe).
fn watch_signals(stop: Arc<AtomicBool>) {
    std::thread::spawn(move || {
        let Ok(rt) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        else {
            return;
        };
        rt.block_on(async move {
            #[cfg(unix)]
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
            loop {
                #[cfg(unix)]
                let got = async {
                    match term.as_mut() {
                        Some(t) => {
                            tokio::select! {
                                _ = tokio::signal::ctrl_c() => {}
                                _ = t.recv() => {}
                            }
                        }
                        None => {
                            let _ = tokio::signal::ctrl_c().await;
                        }
                    }
                };
                #[cfg(not(unix))]
                let got = async {
                    let _ = tokio::signal::ctrl_c().await;
                };
                got.await;
                if stop.swap(true, Ordering::SeqCst) {
                    std::process::exit(130);
                }
                eprintln!(
                    "mailgate: stopping; a copy in progress is abandoned and its source kept \
                     (Ctrl-C again stops at once)"
                );
            }
        });
    });
}

/// A progress bar on stderr for copies of large files, when stderr is a terminal.
struct BarProgress {
    enabled: bool,
    bar: RefCell<Option<ProgressBar>>,
}

/// Files smaller than this copy too fast for a bar to help.
const BAR_THRESHOLD: u64 = 16 * 1024 * 1024;

impl BarProgress {
    fn new() -> BarProgress {
        BarProgress {
            enabled: std::io::stderr().is_terminal(),
            bar: RefCell::new(None),
        }
    }
}

impl Progress for BarProgress {
    fn start(&self, source: &Path, size: u64) {
        if !self.enabled || size < BAR_THRESHOLD {
            return;
        }
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{msg} [{bar:30}] {decimal_bytes}/{decimal_total_bytes} {decimal_bytes_per_sec} eta {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(
            source
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
        );
        *self.bar.borrow_mut() = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(b) = self.bar.borrow().as_ref() {
            b.inc(bytes);
        }
    }

    fn finish(&self) {
        if let Some(b) = self.bar.borrow_mut().take() {
            b.finish_and_clear();
        }
    }
}
