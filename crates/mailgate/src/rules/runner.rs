//! Running rules: one scan of a rule ([`Runner::scan`]), every rule once ([`Runner::run_once`],
//! for cron), or every rule at its interval until asked to stop ([`Runner::run`]). Also the
//! read-only preview `mailgate rules check` prints ([`plan`]).
//!
//! A scan: finish what a crashed run left ([`transfer::recover`]), list the source, wait out
//! files that are not yet stable, transfer the rest one by one (a failure is noted and the scan
//! goes on), then fire the events: On Success for every transferred file not yet reported
//! (including files of a run that died before it could mail), On Error for failures not yet
//! mailed, On No Files when the rule has been quiet for `after`.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Local};

use super::config::{host_name, Action, RuleConfig};
use super::events::{self, EventContext, EventKind, Failure, Transferred};
use super::notify::{Delivery, Notifier, NotifyError};
use super::scan::{self, Candidate, Readiness, Stability};
use super::state::{self, Inflight, RuleState, StateError, Status};
use super::transfer::{self, Job, Outcome, Progress, TransferError};

/// What one event mail came to.
#[derive(Debug)]
pub struct MailResult {
    pub kind: EventKind,
    pub to: Vec<String>,
    pub result: Result<Delivery, NotifyError>,
}

/// What one scan of a rule did.
#[derive(Debug)]
#[non_exhaustive]
pub struct ScanReport {
    pub rule: String,
    pub action: Action,
    /// The destination folder of this scan (placeholders expanded).
    pub destination: PathBuf,
    /// Files transferred by this scan.
    pub transferred: Vec<Transferred>,
    /// A transfer a crashed run left half done, completed now.
    pub recovered: Option<Transferred>,
    /// Files (and folders) that failed, with the OS error.
    pub failures: Vec<Failure>,
    /// `conflict = "skip"`: source files left alone because the destination has the name.
    pub skipped: Vec<(PathBuf, PathBuf)>,
    /// Files not taken yet because they changed within `min_age`.
    pub waiting: Vec<(PathBuf, Readiness)>,
    /// The event mails sent (or queued) at the end of the scan.
    pub mails: Vec<MailResult>,
    /// The run was asked to stop during the scan.
    pub interrupted: bool,
}

impl ScanReport {
    /// Whether any file failed.
    pub fn has_failures(&self) -> bool {
        !self.failures.is_empty()
    }
}

/// Runs rules against their state under `state_dir/rules/`.
pub struct Runner<'a> {
    rules: Vec<RuleConfig>,
    state_dir: PathBuf,
    notifier: &'a dyn Notifier,
    progress: &'a dyn Progress,
    stop: Arc<AtomicBool>,
    stability: HashMap<String, Stability>,
    host: String,
}

impl<'a> Runner<'a> {
    /// A runner for `rules`. `stop` ends [`Runner::run`] (and interrupts a copy in progress,
    /// leaving its source untouched) when set.
    pub fn new(
        rules: Vec<RuleConfig>,
        state_dir: &Path,
        notifier: &'a dyn Notifier,
        progress: &'a dyn Progress,
        stop: Arc<AtomicBool>,
    ) -> Runner<'a> {
        Runner {
            rules,
            state_dir: state_dir.to_path_buf(),
            notifier,
            progress,
            stop,
            stability: HashMap::new(),
            host: host_name(),
        }
    }

    /// The rules this runner runs.
    pub fn rules(&self) -> &[RuleConfig] {
        &self.rules
    }

    /// Scans every rule once, in name order. With `min_age`, files that are old enough but not
    /// yet watched are watched for `min_age` within the scan, so that one run takes them.
    pub fn run_once(&mut self) -> Vec<(String, Result<ScanReport, StateError>)> {
        let mut out = Vec::new();
        for i in 0..self.rules.len() {
            if self.stop.load(Ordering::Relaxed) {
                break;
            }
            let name = self.rules[i].name.clone();
            out.push((name, self.scan(i)));
        }
        out
    }

    /// Scans each rule at its interval until `stop` is set, handing every report to `report`.
    /// Where the file system reports changes (inotify, FSEvents, ReadDirectoryChangesW), a change
    /// in a source folder brings its rule's next scan forward; polling at `interval` goes on
    /// regardless (network shares often report nothing). Queued event mail is retried between
    /// scans.
    pub fn run(&mut self, mut report: impl FnMut(&str, Result<ScanReport, StateError>)) {
        let start = Instant::now();
        let mut due: Vec<Instant> = vec![start; self.rules.len()];
        let mut next_retry = start;
        let (changed_tx, changed) = std::sync::mpsc::channel::<usize>();
        let _watchers = watch_sources(&self.rules, &changed_tx);
        while !self.stop.load(Ordering::Relaxed) {
            let now = Instant::now();
            if now >= next_retry {
                self.notifier.retry_queued(false);
                next_retry = Instant::now() + Duration::from_secs(1);
            }
            for (i, next) in due.iter_mut().enumerate() {
                if self.stop.load(Ordering::Relaxed) {
                    break;
                }
                if Instant::now() >= *next {
                    let name = self.rules[i].name.clone();
                    let r = self.scan(i);
                    *next = Instant::now() + next_scan_in(&self.rules[i], r.as_ref().ok());
                    report(&name, r);
                }
            }
            // Sleep until the next scan or retry, waking early for a change in a source.
            let wake = due.iter().copied().min().unwrap_or(now).min(next_retry);
            loop {
                if self.stop.load(Ordering::Relaxed) {
                    return;
                }
                let now = Instant::now();
                if now >= wake {
                    break;
                }
                match changed.recv_timeout((wake - now).min(Duration::from_millis(100))) {
                    Ok(i) => {
                        // Let a burst of events (a file being written) settle before scanning.
                        due[i] = due[i].min(Instant::now() + CHANGE_DEBOUNCE);
                        if due[i] < wake {
                            break;
                        }
                    }
                    Err(_) => continue,
                }
            }
        }
    }

    /// Scans rule number `index` once.
    pub fn scan(&mut self, index: usize) -> Result<ScanReport, StateError> {
        let rule = self.rules[index].clone();
        let state = RuleState::open(&self.state_dir, &rule.name)?;
        let recovered = transfer::recover(&state)?;
        let started = Local::now();
        let destination = rule.destination_dir(&started);
        let mut report = ScanReport {
            rule: rule.name.clone(),
            action: rule.action,
            destination: destination.clone(),
            transferred: Vec::new(),
            recovered,
            failures: Vec::new(),
            skipped: Vec::new(),
            waiting: Vec::new(),
            mails: Vec::new(),
            interrupted: false,
        };

        let listing = scan::list(&rule);
        report.failures.extend(listing.failures.iter().cloned());
        let copied = match rule.action {
            Action::Copy => state.copied()?,
            Action::Move => HashMap::new(),
        };
        let candidates: Vec<Candidate> = listing
            .files
            .iter()
            .filter(|c| copied.get(&c.path) != Some(&c.stamp))
            .cloned()
            .collect();
        let ready = self.ready_files(&rule, candidates, &mut report);
        let mut transfer_failed = false;
        for c in ready {
            if self.stop.load(Ordering::Relaxed) {
                report.interrupted = true;
                break;
            }
            let dest_dir = match (rule.recursive, c.rel.parent()) {
                (true, Some(sub)) if !sub.as_os_str().is_empty() => destination.join(sub),
                _ => destination.clone(),
            };
            let Some(file_name) = c.path.file_name() else {
                continue;
            };
            let job = Job {
                rule: &rule.name,
                source: &c.path,
                dest_dir: &dest_dir,
                file_name,
                action: rule.action,
                conflict: rule.conflict,
                expected: c.stamp,
            };
            match transfer::transfer(&job, &state, self.progress, &self.stop) {
                Ok(Outcome::Done {
                    destination, size, ..
                }) => {
                    tracing::info!(
                        "rule {}: {} {} -> {}",
                        rule.name,
                        rule.action.past(),
                        c.path.display(),
                        destination.display()
                    );
                    report.transferred.push(Transferred {
                        source: c.path.clone(),
                        destination,
                        size,
                    });
                }
                Ok(Outcome::Skipped { existing }) => {
                    report.skipped.push((c.path.clone(), existing))
                }
                Err(TransferError::Interrupted { .. }) => {
                    report.interrupted = true;
                    break;
                }
                Err(TransferError::State(e)) => return Err(e),
                Err(e) => {
                    tracing::info!("rule {}: {}: {e}", rule.name, c.path.display());
                    transfer_failed = true;
                    report.failures.push(Failure {
                        path: c.path.clone(),
                        error: e.to_string(),
                    });
                }
            }
        }
        if let Some(stab) = self.stability.get_mut(&rule.name) {
            let taken: HashSet<&Path> = report
                .transferred
                .iter()
                .map(|t| t.source.as_path())
                .collect();
            stab.retain(|p| !taken.contains(p));
        }
        if rule.action == Action::Copy && listing.source_readable && listing.failures.is_empty() {
            // Forget copies of files that are gone from the source, so that the history does
            // not grow without end.
            let present: HashSet<&Path> = listing.files.iter().map(|c| c.path.as_path()).collect();
            let history = state.copied()?;
            if history.keys().any(|p| !present.contains(p.as_path())) {
                let kept = history
                    .into_iter()
                    .filter(|(p, _)| present.contains(p.as_path()))
                    .collect();
                state.rewrite_copied(&kept)?;
            }
        }
        if report.interrupted {
            // What was transferred stays pending and is reported by the next run.
            return Ok(report);
        }
        let activity = !report.transferred.is_empty()
            || report.recovered.is_some()
            || !report.waiting.is_empty()
            || transfer_failed;
        self.fire_events(&rule, &state, started, activity, &mut report)?;
        Ok(report)
    }

    /// Sorts candidates by readiness, watching "settling" files within the scan.
    fn ready_files(
        &mut self,
        rule: &RuleConfig,
        candidates: Vec<Candidate>,
        report: &mut ScanReport,
    ) -> Vec<Candidate> {
        let stab = self.stability.entry(rule.name.clone()).or_default();
        let listed: HashSet<PathBuf> = candidates.iter().map(|c| c.path.clone()).collect();
        stab.retain(|p| listed.contains(p));
        let mut ready = Vec::new();
        let mut settling = Vec::new();
        let (now, wall) = (Instant::now(), SystemTime::now());
        for c in candidates {
            match stab.assess(&c, rule.min_age, now, wall) {
                Readiness::Ready => ready.push(c),
                Readiness::Settling { remaining } => settling.push((c, remaining)),
                busy => report.waiting.push((c.path.clone(), busy)),
            }
        }
        if let Some(wait) = settling.iter().map(|(_, r)| *r).max() {
            sleep_until(Instant::now() + wait, &self.stop);
            let (now, wall) = (Instant::now(), SystemTime::now());
            for (c, _) in settling {
                let Some(c) = scan::restat(&c) else { continue };
                match stab.assess(&c, rule.min_age, now, wall) {
                    Readiness::Ready => ready.push(c),
                    other => report.waiting.push((c.path.clone(), other)),
                }
            }
        }
        ready.sort_by(|a, b| a.path.cmp(&b.path));
        ready
    }

    fn fire_events(
        &mut self,
        rule: &RuleConfig,
        state: &RuleState,
        started: DateTime<Local>,
        activity: bool,
        report: &mut ScanReport,
    ) -> Result<(), StateError> {
        let cx = EventContext {
            rule,
            time: started,
            host: self.host.clone(),
            destination: report.destination.clone(),
        };
        let now_ms = state::system_ms(SystemTime::now());
        let mut status: Status = state.status()?;
        let watching_since = *status.watching_since_ms.get_or_insert(now_ms);
        if activity {
            status.last_file_ms = Some(now_ms);
            status.no_files_mailed_ms = None;
        }

        // On Success: everything transferred and not yet reported, this scan's and any earlier
        // run's that ended before it could mail.
        let pending = state.pending()?;
        if !pending.is_empty() {
            match &rule.on_success {
                Some(action) => {
                    let mail = events::success_mail(&cx, action, &pending);
                    let result = self.notifier.notify(&mail);
                    if result.is_ok() {
                        state.clear_pending()?;
                    }
                    report.mails.push(MailResult {
                        kind: EventKind::Success,
                        to: action.to.clone(),
                        result,
                    });
                }
                None => state.clear_pending()?,
            }
        }

        // On Error: failures not mailed before (a file that keeps failing the same way is
        // mailed once; again only after it went away and came back).
        let current: BTreeMap<String, String> = report
            .failures
            .iter()
            .map(|f| (f.path.display().to_string(), f.error.clone()))
            .collect();
        let fresh: Vec<Failure> = report
            .failures
            .iter()
            .filter(|f| status.mailed_failures.get(&f.path.display().to_string()) != Some(&f.error))
            .cloned()
            .collect();
        let mut mailed: BTreeMap<String, String> = current
            .iter()
            .filter(|(p, e)| status.mailed_failures.get(*p) == Some(*e))
            .map(|(p, e)| (p.clone(), e.clone()))
            .collect();
        match &rule.on_error {
            Some(action) if !fresh.is_empty() => {
                let mail = events::error_mail(&cx, action, &fresh);
                let result = self.notifier.notify(&mail);
                if result.is_ok() {
                    for f in &fresh {
                        mailed.insert(f.path.display().to_string(), f.error.clone());
                    }
                }
                report.mails.push(MailResult {
                    kind: EventKind::Error,
                    to: action.to.clone(),
                    result,
                });
            }
            Some(_) => {}
            None => mailed = current,
        }
        status.mailed_failures = mailed;

        // On No Files: quiet for `after` since the last file (or since watching began); again
        // every `after` while it stays quiet.
        if let Some(nf) = &rule.on_no_files {
            let since_ms = status
                .last_file_ms
                .unwrap_or(watching_since)
                .max(watching_since);
            let quiet = Duration::from_millis(now_ms.saturating_sub(since_ms).max(0) as u64);
            let last_mail_ok = status.no_files_mailed_ms.is_none_or(|m| {
                Duration::from_millis(now_ms.saturating_sub(m).max(0) as u64) >= nf.after
            });
            if quiet >= nf.after && last_mail_ok {
                let since: DateTime<Local> = state::ms_time(since_ms).into();
                let mail = events::no_files_mail(&cx, nf, since);
                let result = self.notifier.notify(&mail);
                if result.is_ok() {
                    status.no_files_mailed_ms = Some(now_ms);
                }
                report.mails.push(MailResult {
                    kind: EventKind::NoFiles,
                    to: nf.mail.to.clone(),
                    result,
                });
            }
        }
        state.save_status(&status)
    }
}

/// How long after a change in a source folder its rule is scanned.
const CHANGE_DEBOUNCE: Duration = Duration::from_millis(300);

/// When to scan a rule next after `report`: at its interval, or earlier when a file was still
/// being written and becomes old enough sooner.
fn next_scan_in(rule: &RuleConfig, report: Option<&ScanReport>) -> Duration {
    let soonest_stable = report
        .into_iter()
        .flat_map(|r| r.waiting.iter())
        .filter_map(|(_, w)| match w {
            Readiness::Busy { ago } => Some(rule.min_age.saturating_sub(*ago)),
            Readiness::Settling { remaining } => Some(*remaining),
            Readiness::Ready => None,
        })
        .min();
    match soonest_stable {
        Some(d) => (d + Duration::from_millis(50)).min(rule.interval),
        None => rule.interval,
    }
}

/// Watches each rule's source folder; a change sends the rule's index. A folder that cannot be
/// watched (a network share, too many watches) is only polled.
fn watch_sources(
    rules: &[RuleConfig],
    changed: &std::sync::mpsc::Sender<usize>,
) -> Vec<::notify::RecommendedWatcher> {
    use ::notify::{RecursiveMode, Watcher};
    let mut watchers = Vec::new();
    for (i, rule) in rules.iter().enumerate() {
        let tx = changed.clone();
        let watcher =
            ::notify::recommended_watcher(move |event: ::notify::Result<::notify::Event>| {
                if event.is_ok_and(|e| !e.kind.is_access()) {
                    let _ = tx.send(i);
                }
            });
        let mut watcher = match watcher {
            Ok(w) => w,
            Err(e) => {
                tracing::debug!(
                    "rule {}: no file-system events ({e}); polling only",
                    rule.name
                );
                continue;
            }
        };
        let mode = if rule.recursive {
            RecursiveMode::Recursive
        } else {
            RecursiveMode::NonRecursive
        };
        match watcher.watch(&rule.source, mode) {
            Ok(()) => watchers.push(watcher),
            Err(e) => tracing::debug!(
                "rule {}: cannot watch {} ({e}); polling every {}",
                rule.name,
                rule.source.display(),
                events::format_duration(rule.interval)
            ),
        }
    }
    watchers
}

/// Sleeps until `deadline`, waking early when `stop` is set.
fn sleep_until(deadline: Instant, stop: &AtomicBool) {
    loop {
        if stop.load(Ordering::Relaxed) {
            return;
        }
        let now = Instant::now();
        if now >= deadline {
            return;
        }
        std::thread::sleep((deadline - now).min(Duration::from_millis(100)));
    }
}

/// What the next scan of a rule would do with one file.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum PlanItem {
    /// Transfer `source` to `target` (`renamed`: under a new name because of a conflict;
    /// `overwrite`: replacing an existing file).
    Take {
        source: PathBuf,
        target: PathBuf,
        size: u64,
        renamed: bool,
        overwrite: bool,
    },
    /// `conflict = "skip"` and the destination has the name.
    Skip { source: PathBuf, existing: PathBuf },
    /// Copied before and unchanged since.
    AlreadyCopied { source: PathBuf },
    /// Modified `ago` ago: left until unchanged for `min_age`.
    Wait { source: PathBuf, ago: Duration },
}

/// The read-only preview of a rule's next scan.
#[derive(Debug)]
#[non_exhaustive]
pub struct Plan {
    pub destination: PathBuf,
    pub items: Vec<PlanItem>,
    pub failures: Vec<Failure>,
    /// A transfer a crashed run left, which the next scan finishes or undoes first.
    pub unfinished: Option<Inflight>,
    /// What the rule remembers (On No Files timing, failures already mailed).
    pub status: Status,
    /// Transferred files not yet reported by On Success.
    pub unreported: usize,
}

/// What the next scan of `rule` would do, without creating, locking or changing anything.
pub fn plan(rule: &RuleConfig, state_dir: &Path) -> Result<Plan, StateError> {
    let dir = state::rule_dir(state_dir, &rule.name);
    let status = state::read_status(&dir)?;
    let copied = state::read_copied(&dir)?;
    let unfinished = std::fs::read(dir.join("inflight.json"))
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    let unreported = std::fs::read_to_string(dir.join("pending.jsonl"))
        .map(|s| s.lines().filter(|l| !l.trim().is_empty()).count())
        .unwrap_or(0);
    let destination = rule.destination_dir(&Local::now());
    let listing = scan::list(rule);
    let wall = SystemTime::now();
    let mut items = Vec::new();
    for c in &listing.files {
        if rule.action == Action::Copy && copied.get(&c.path) == Some(&c.stamp) {
            items.push(PlanItem::AlreadyCopied {
                source: c.path.clone(),
            });
            continue;
        }
        if let Ok(ago) = wall.duration_since(c.stamp.mtime()) {
            if ago < rule.min_age {
                items.push(PlanItem::Wait {
                    source: c.path.clone(),
                    ago,
                });
                continue;
            }
        }
        let dir = match (rule.recursive, c.rel.parent()) {
            (true, Some(sub)) if !sub.as_os_str().is_empty() => destination.join(sub),
            _ => destination.clone(),
        };
        let name = c.path.file_name().unwrap_or_default();
        let plain = dir.join(name);
        match transfer::free_name(&dir, name, rule.conflict) {
            Ok(Some(target)) => items.push(PlanItem::Take {
                source: c.path.clone(),
                renamed: target != plain,
                overwrite: target == plain && plain.symlink_metadata().is_ok(),
                target,
                size: c.stamp.size,
            }),
            Ok(None) => items.push(PlanItem::Skip {
                source: c.path.clone(),
                existing: plain,
            }),
            // The destination cannot even be looked at; the scan will report why.
            Err(_) => items.push(PlanItem::Take {
                source: c.path.clone(),
                target: plain,
                size: c.stamp.size,
                renamed: false,
                overwrite: false,
            }),
        }
    }
    Ok(Plan {
        destination,
        items,
        failures: listing.failures,
        unfinished,
        status,
        unreported,
    })
}
