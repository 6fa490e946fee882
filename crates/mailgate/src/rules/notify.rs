//! Getting event mail out: build it ([`crate::message`]), try to send it now through its account
//! ([`crate::send`]), and when that fails, put it in the durable spool ([`crate::spool`]) under
//! the state directory, where the relay (if it runs) or the next `mailgate rules run` delivers
//! it. A mail is never dropped: it is sent, or on disk in the spool, or the call fails and the
//! rule keeps the event to fire again at its next scan.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::Duration;

use time::OffsetDateTime;

use super::events::{EventKind, EventMail};
use crate::config::{Config, ConfigError};
use crate::message::{Attachment, Draft, Mailbox, MessageError, OutgoingMessage};
use crate::send::{AccountSender, SendError};
use crate::smtp::Envelope as SmtpEnvelope;
use crate::spool::{self, RecipientStatus, Spool, SpoolError, State};
use crate::sysexits::{HasSysexit, Sysexit};

/// The `origin` of spool entries made by rules; only those are delivered by `rules run`.
pub const ORIGIN_PREFIX: &str = "mailgate rules";

/// Queued event mail older than this is given up (moved to the spool's failed area).
pub const MAX_AGE: Duration = Duration::from_secs(2 * 24 * 3600);

/// How an event mail went out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Delivery {
    /// The server accepted it (`refused` lists recipients it turned down).
    Sent {
        queue_id: Option<String>,
        refused: Vec<String>,
    },
    /// It could not go out now and waits in the spool as `id`.
    Queued { id: String, reason: String },
}

/// Why an event mail could neither be sent nor queued.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum NotifyError {
    /// The mail itself is wrong (an address the message builder refuses).
    #[error("cannot build the {kind} mail of rule {rule}: {source}")]
    Message {
        rule: String,
        kind: EventKind,
        source: MessageError,
    },
    /// The account is gone from the config.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// Sending failed and the spool could not take it either; the rule fires the event again.
    #[error("the {kind} mail of rule {rule} could not be sent ({reason}) nor queued: {source}")]
    Spool {
        rule: String,
        kind: EventKind,
        reason: String,
        source: SpoolError,
    },
}

impl HasSysexit for NotifyError {
    fn sysexit(&self) -> Sysexit {
        match self {
            NotifyError::Message { source, .. } => source.sysexit(),
            NotifyError::Config(e) => e.sysexit(),
            NotifyError::Spool { source, .. } => source.sysexit(),
        }
    }
}

/// What retrying queued mail did.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct QueueReport {
    /// Ids delivered now.
    pub delivered: Vec<String>,
    /// Event mails still waiting, with the last error.
    pub waiting: Vec<(String, String)>,
    /// Ids given up (too old, or every recipient refused for good).
    pub failed: Vec<String>,
    /// Another process (the relay) delivers from the spool: left to it.
    pub left_to_relay: bool,
}

/// Sends event mail. [`MailNotifier`] is the real one; tests use their own.
pub trait Notifier {
    /// Sends `mail` now or queues it durably; an error means it is neither sent nor queued.
    fn notify(&self, mail: &EventMail) -> Result<Delivery, NotifyError>;

    /// Tries again the event mail waiting in the spool: with `all`, every one of them; else only
    /// those whose next try has come.
    fn retry_queued(&self, all: bool) -> QueueReport {
        let _ = all;
        QueueReport::default()
    }
}

/// Sends through the config's accounts, queueing in the spool what cannot go out now.
pub struct MailNotifier {
    config: Config,
    spool_dir: PathBuf,
    runtime: tokio::runtime::Runtime,
    senders: Mutex<HashMap<String, AccountSender>>,
    recovered: Mutex<bool>,
}

impl std::fmt::Debug for MailNotifier {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MailNotifier")
            .field("spool_dir", &self.spool_dir)
            .finish_non_exhaustive()
    }
}

/// The spool rules queue into: the relay's (`[relay] spool_dir`, else `STATE_DIR/spool`), so
/// that a running relay delivers it.
pub fn spool_dir(config: &Config) -> PathBuf {
    match &config.relay {
        Some(relay) => relay.spool_dir(&config.state_dir),
        None => config.state_dir.join("spool"),
    }
}

impl MailNotifier {
    /// A notifier for `config`'s accounts.
    pub fn new(config: &Config) -> std::io::Result<MailNotifier> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok(MailNotifier {
            spool_dir: spool_dir(config),
            config: config.clone(),
            runtime,
            senders: Mutex::new(HashMap::new()),
            recovered: Mutex::new(false),
        })
    }

    /// The spool used for mail that cannot go out now.
    pub fn spool_dir(&self) -> &std::path::Path {
        &self.spool_dir
    }

    fn build(&self, mail: &EventMail) -> Result<OutgoingMessage, NotifyError> {
        let account = self.config.account(Some(&mail.account))?;
        let bad = |source| NotifyError::Message {
            rule: mail.rule.clone(),
            kind: mail.kind,
            source,
        };
        let from = mail.from.clone().unwrap_or_else(|| account.from.clone());
        let mut body = mail.body.clone();
        let mut attachments = Vec::new();
        for path in &mail.attachments {
            match Attachment::from_path(path) {
                Ok(a) => attachments.push(a),
                // The file was moved on since: say so rather than lose the whole mail.
                Err(e) => body.push_str(&format!("\nNot attached: {e}\n")),
            }
        }
        let draft = Draft {
            from: Some(Mailbox::with_name(
                format!("mailgate ({})", mail.rule),
                from,
            )),
            to: mail.to.iter().map(Mailbox::new).collect(),
            cc: mail.cc.iter().map(Mailbox::new).collect(),
            subject: Some(mail.subject.clone()),
            text: Some(body),
            attachments,
            headers: vec![
                ("Auto-Submitted".into(), "auto-generated".into()),
                ("X-Mailgate-Rule".into(), mail.rule.clone()),
                ("X-Mailgate-Event".into(), event_header(mail.kind).into()),
            ],
            ..Draft::default()
        };
        draft.build().map_err(bad)
    }

    fn with_sender<T>(
        &self,
        account: &str,
        f: impl FnOnce(&AccountSender) -> T,
    ) -> Result<T, Box<SendError>> {
        let mut senders = self.senders.lock().unwrap_or_else(|p| p.into_inner());
        if !senders.contains_key(account) {
            let acc = self
                .config
                .account(Some(account))
                .map_err(|e| Box::new(SendError::from(e)))?;
            let mut sender = AccountSender::new(&self.config, acc).map_err(Box::new)?;
            let mut settings = sender.settings().clone();
            // A rule must not hang on a dead server: the spool takes over instead.
            settings.connect_timeout = Duration::from_secs(15);
            settings.read_timeout = Duration::from_secs(60);
            sender.set_settings(settings);
            senders.insert(account.to_string(), sender);
        }
        Ok(f(senders.get(account).expect("inserted above")))
    }

    /// Sends over a new session (the error is boxed: a `SendError` is large).
    fn send_now(
        &self,
        account: &str,
        message: &OutgoingMessage,
    ) -> Result<Delivery, Box<SendError>> {
        let report = self.with_sender(account, |s| {
            self.runtime.block_on(async {
                match tokio::time::timeout(Duration::from_secs(180), s.send(message)).await {
                    Ok(r) => r.map_err(Box::new),
                    Err(_) => Err(Box::new(SendError::Smtp(crate::smtp::SmtpError::Timeout {
                        host: s.settings().host.clone(),
                        stage: crate::smtp::Stage::Data,
                        after: Duration::from_secs(180),
                    }))),
                }
            })
        })??;
        Ok(Delivery::Sent {
            queue_id: report.outcome.queue_id.clone(),
            refused: report
                .outcome
                .refused
                .iter()
                .map(|r| r.to_string())
                .collect(),
        })
    }

    fn open_spool(&self) -> Result<Spool, SpoolError> {
        Spool::open(&self.spool_dir)
    }
}

fn event_header(kind: EventKind) -> &'static str {
    match kind {
        EventKind::Success => "on_success",
        EventKind::Error => "on_error",
        EventKind::NoFiles => "on_no_files",
    }
}

/// A send failure in one line, with the diagnosis title when the library has one.
fn describe(e: &SendError) -> String {
    match e.diagnosis() {
        Some(d) if !e.to_string().contains(&d.title) => format!("{e} ({}: {})", d.code, d.title),
        _ => e.to_string(),
    }
}

impl Notifier for MailNotifier {
    fn notify(&self, mail: &EventMail) -> Result<Delivery, NotifyError> {
        let message = self.build(mail)?;
        let err = match self.send_now(&mail.account, &message) {
            Ok(d) => return Ok(d),
            Err(e) => e,
        };
        let reason = describe(&err);
        tracing::info!(
            "rule {}: the {} mail cannot be sent now: {reason}; queueing it",
            mail.rule,
            mail.kind
        );
        let envelope = spool::Envelope {
            sender: message.envelope.mail_from.clone(),
            recipients: message.envelope.rcpt_to.clone(),
            account: Some(mail.account.clone()),
            origin: format!("{ORIGIN_PREFIX} {} {}", mail.rule, event_header(mail.kind)),
            generated: true,
            ..spool::Envelope::default()
        };
        let queued = self
            .open_spool()
            .and_then(|s| s.enqueue(&envelope, &message.data));
        match queued {
            Ok(id) => Ok(Delivery::Queued { id, reason }),
            Err(source) => Err(NotifyError::Spool {
                rule: mail.rule.clone(),
                kind: mail.kind,
                reason,
                source,
            }),
        }
    }

    fn retry_queued(&self, all: bool) -> QueueReport {
        let mut report = QueueReport::default();
        if !self.spool_dir.join("new").is_dir() {
            return report;
        }
        let spool = match self.open_spool() {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("cannot open the spool {}: {e}", self.spool_dir.display());
                return report;
            }
        };
        let now = OffsetDateTime::now_utc();
        let ours = |e: &spool::Entry| e.envelope.origin.starts_with(ORIGIN_PREFIX);
        let candidates: Vec<spool::Entry> = match if all {
            spool
                .list_states(&[State::New, State::Deferred])
                .map(|(e, _)| e)
        } else {
            spool.due(now)
        } {
            Ok(list) => list.into_iter().filter(|e| ours(e)).collect(),
            Err(e) => {
                tracing::warn!("cannot list the spool {}: {e}", self.spool_dir.display());
                return report;
            }
        };
        if candidates.is_empty() {
            return report;
        }
        // One process delivers from a spool at a time; when the relay runs, it delivers these.
        let lock = match spool.lock() {
            Ok(l) => l,
            Err(SpoolError::Locked { .. }) => {
                report.left_to_relay = true;
                return report;
            }
            Err(e) => {
                tracing::warn!("cannot lock the spool {}: {e}", self.spool_dir.display());
                return report;
            }
        };
        {
            let mut recovered = self.recovered.lock().unwrap_or_else(|p| p.into_inner());
            if !*recovered {
                if let Err(e) = spool.recover(&lock) {
                    tracing::warn!("spool recovery: {e}");
                }
                *recovered = true;
            }
        }
        for entry in candidates {
            match self.deliver_one(&spool, &entry.id) {
                Ok(Some(Outcome::Delivered)) => report.delivered.push(entry.id),
                Ok(Some(Outcome::Waiting(why))) => report.waiting.push((entry.id, why)),
                Ok(Some(Outcome::Failed)) => report.failed.push(entry.id),
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!("spool message {}: {e}", entry.id);
                    report.waiting.push((entry.id, e.to_string()));
                }
            }
        }
        drop(lock);
        report
    }
}

enum Outcome {
    Delivered,
    Waiting(String),
    Failed,
}

impl MailNotifier {
    fn deliver_one(&self, spool: &Spool, id: &str) -> Result<Option<Outcome>, SpoolError> {
        let Some(mut entry) = spool.claim(id)? else {
            return Ok(None);
        };
        let data = spool.message(id)?;
        let pending: Vec<String> = entry.pending().map(|r| r.address.clone()).collect();
        let account = entry.envelope.account.clone().unwrap_or_default();
        let envelope = SmtpEnvelope::new(entry.envelope.upstream_sender(), pending);
        let message = OutgoingMessage {
            envelope,
            data,
            message_id: String::new(),
        };
        let now = OffsetDateTime::now_utc();
        match self.send_now(&account, &message) {
            Ok(Delivery::Sent { refused, .. }) => {
                for r in &message.envelope.rcpt_to {
                    let refusal = refused.iter().find(|x| x.starts_with(&format!("{r}:")));
                    match refusal {
                        Some(why) => {
                            entry.set_recipient(r, RecipientStatus::Failed, Some(why.clone()))
                        }
                        None => entry.set_recipient(r, RecipientStatus::Delivered, None),
                    }
                }
                if refused.is_empty() {
                    spool.complete(id)?;
                    Ok(Some(Outcome::Delivered))
                } else {
                    spool.fail(&mut entry, &format!("refused: {}", refused.join("; ")))?;
                    Ok(Some(Outcome::Failed))
                }
            }
            Ok(Delivery::Queued { .. }) => unreachable!("send_now never queues"),
            Err(e) => {
                let why = describe(&e);
                let age = now - entry.age_from;
                if age.unsigned_abs() > MAX_AGE {
                    spool.fail(
                        &mut entry,
                        &format!(
                            "gave up after {}: {why}",
                            humantime::format_duration(MAX_AGE)
                        ),
                    )?;
                    return Ok(Some(Outcome::Failed));
                }
                let backoff = Duration::from_secs(5u64.saturating_mul(1 << entry.attempts.min(6)))
                    .min(Duration::from_secs(300));
                let held = matches!(e.sysexit(), Sysexit::NoPerm)
                    .then_some("the account needs attention (a new login?)");
                spool.defer(&mut entry, now + backoff, &why, held)?;
                Ok(Some(Outcome::Waiting(why)))
            }
        }
    }
}
