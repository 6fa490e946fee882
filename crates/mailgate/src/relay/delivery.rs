//! Delivery: queued messages go upstream through their account.
//!
//! A dispatcher learns of new messages from the server at once and looks at the spool every
//! `scan_interval` (for deferred messages coming due, and for changes made by `mailgate queue`
//! or other processes). Each account has a queue of ready message ids and up to
//! `max_connections` workers; a worker claims a message only when it is about to send it, keeps
//! its connection open while there is more to send (for `connection_idle`), and paces itself to
//! `messages_per_minute`.
//!
//! Outcomes: recipients accepted are done; recipients refused for good are bounced (to the
//! envelope sender, or to `notify`) with the diagnosis; temporary failures are retried with
//! exponential backoff until `max_age`. A failure that concerns the account rather than the
//! message (no token, server down) defers all of the account's ready mail and backs the account
//! off; an account that needs a new login is held: its mail waits, without aging, until the
//! keepalive sees a working token again.

use std::collections::{BTreeMap, HashSet, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use time::OffsetDateTime;
use tokio::sync::{mpsc, watch, Notify};
use tokio::time::Instant;

use super::config::RelayConfig;
use super::notice::{self, Notices};
use super::routing::Router;
use super::server::Queued;
use crate::config::Account;
use crate::oauth::Flow;
use crate::send::{AccountSender, SendError};
use crate::smtp::{Envelope as SmtpEnvelope, SendOutcome, SmtpClient, SmtpError};
use crate::spool::{Entry, RecipientStatus, Spool, SpoolError, State};
use crate::sysexits::HasSysexit;
use crate::tokens::TokenManager;
use crate::Sysexit;

/// Paces an account to `messages_per_minute`.
struct Pacer {
    interval: Option<Duration>,
    next: Mutex<Instant>,
}

impl Pacer {
    fn new(per_minute: u32) -> Pacer {
        Pacer {
            interval: (per_minute > 0).then(|| Duration::from_secs(60) / per_minute),
            next: Mutex::new(Instant::now()),
        }
    }

    async fn wait(&self) {
        let Some(interval) = self.interval else {
            return;
        };
        let at = {
            let mut next = self.next.lock().expect("pacer lock");
            let at = (*next).max(Instant::now());
            *next = at + interval;
            at
        };
        tokio::time::sleep_until(at).await;
    }
}

/// Why an account cannot send right now.
#[derive(Clone, Debug)]
pub(crate) struct Hold {
    /// What is wrong, for the log and `mailgate queue`.
    pub reason: String,
    /// What to do about it.
    pub fix: String,
}

#[derive(Default)]
struct AccountInner {
    ready: VecDeque<String>,
    workers: usize,
    /// Backed off after a failure that concerns the account: no worker starts before.
    retry_at: Option<Instant>,
    failures: u32,
    hold: Option<Hold>,
}

/// One account's delivery state.
pub(crate) struct AccountState {
    pub name: String,
    pub account: Account,
    pub sender: AccountSender,
    pub tokens: Arc<TokenManager>,
    max_connections: usize,
    pacer: Pacer,
    inner: Mutex<AccountInner>,
    more: Notify,
}

impl AccountState {
    pub fn new(account: Account, tokens: Arc<TokenManager>, hostname: &str) -> AccountState {
        let mut sender = AccountSender::with_tokens(account.clone(), tokens.clone());
        let mut settings = sender.settings().clone();
        settings.helo_name = hostname.to_string();
        settings.connect_timeout = Duration::from_secs(30);
        settings.read_timeout = Duration::from_secs(300);
        sender.set_settings(settings);
        AccountState {
            name: account.name.clone(),
            max_connections: account.max_connections.max(1) as usize,
            pacer: Pacer::new(account.messages_per_minute),
            account,
            sender,
            tokens,
            inner: Mutex::new(AccountInner::default()),
            more: Notify::new(),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, AccountInner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The hold on this account, if any.
    pub fn hold(&self) -> Option<Hold> {
        self.lock().hold.clone()
    }

    /// Whether the account signs in as a user (and so may need `mailgate login`).
    pub fn delegated(&self) -> bool {
        self.account.flow != Flow::ClientCredentials
    }
}

/// What the dispatcher, the workers and the keepalive share.
pub(crate) struct Shared {
    pub spool: Arc<Spool>,
    pub cfg: Arc<RelayConfig>,
    pub router: Router,
    pub accounts: BTreeMap<String, Arc<AccountState>>,
    /// Ids queued or being sent in this process.
    known: Mutex<HashSet<String>>,
    /// Asks the dispatcher to look at the spool now.
    pub rescan: Notify,
    pub shutdown: watch::Receiver<bool>,
    pub notices: Notices,
    /// Workers running, for a clean shutdown.
    workers: tokio::sync::Mutex<tokio::task::JoinSet<()>>,
}

impl Shared {
    pub fn new(
        spool: Arc<Spool>,
        cfg: Arc<RelayConfig>,
        router: Router,
        accounts: BTreeMap<String, Arc<AccountState>>,
        shutdown: watch::Receiver<bool>,
    ) -> Shared {
        Shared {
            notices: Notices::new(),
            spool,
            cfg,
            router,
            accounts,
            known: Mutex::new(HashSet::new()),
            rescan: Notify::new(),
            shutdown,
            workers: tokio::sync::Mutex::new(tokio::task::JoinSet::new()),
        }
    }

    fn stopping(&self) -> bool {
        *self.shutdown.borrow()
    }

    fn is_known(&self, id: &str) -> bool {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .contains(id)
    }

    fn forget(&self, id: &str) {
        self.known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
    }

    /// Puts `id` on `account`'s queue unless it is already queued or in flight here.
    fn submit(&self, account: &Arc<AccountState>, id: String) {
        if !self
            .known
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.clone())
        {
            return;
        }
        account.lock().ready.push_back(id);
        account.more.notify_one();
    }

    /// The account a queued entry goes through: the one recorded at queueing time if it still
    /// exists, else the route for its sender.
    fn account_for(&self, entry: &Entry) -> Option<Arc<AccountState>> {
        if let Some(a) = entry
            .envelope
            .account
            .as_ref()
            .and_then(|a| self.accounts.get(a))
        {
            return Some(a.clone());
        }
        self.router
            .route(&entry.envelope.sender)
            .and_then(|d| self.accounts.get(&d.account).cloned())
    }

    /// The next retry delay after `attempts` attempts.
    pub fn backoff(&self, attempts: u32) -> Duration {
        let exp = attempts.saturating_sub(1).min(30);
        self.cfg
            .retry_initial
            .saturating_mul(1u32 << exp)
            .min(self.cfg.retry_max)
    }

    /// Starts workers for accounts with ready mail, up to their connection limits. Returns when
    /// the dispatcher should look again (an account's backoff ending).
    async fn start_workers(self: &Arc<Self>) -> Option<Instant> {
        if self.stopping() {
            return None;
        }
        let now = Instant::now();
        let mut wake: Option<Instant> = None;
        let mut workers = self.workers.lock().await;
        // Reap finished workers so the set does not grow.
        while workers.try_join_next().is_some() {}
        for acct in self.accounts.values() {
            let start = {
                let mut inner = acct.lock();
                if inner.ready.is_empty() || inner.hold.is_some() {
                    0
                } else if let Some(at) = inner.retry_at.filter(|at| *at > now) {
                    wake = Some(wake.map_or(at, |w| w.min(at)));
                    0
                } else {
                    let n = acct
                        .max_connections
                        .saturating_sub(inner.workers)
                        .min(inner.ready.len());
                    inner.workers += n;
                    n
                }
            };
            for _ in 0..start {
                let shared = self.clone();
                let acct = acct.clone();
                workers.spawn(async move { worker(shared, acct).await });
            }
        }
        wake
    }

    /// Waits for the running workers to finish their current message.
    pub async fn join_workers(&self) {
        let mut workers = self.workers.lock().await;
        while workers.join_next().await.is_some() {}
    }
}

/// Looks at the spool: submits due messages, and returns the earliest next try of the others.
async fn scan(shared: &Arc<Shared>) -> Option<OffsetDateTime> {
    let s = shared.clone();
    let listed = tokio::task::spawn_blocking(move || {
        s.spool
            .list_states_except(&[State::New, State::Deferred], |id| s.is_known(id))
    })
    .await;
    let (entries, damaged) = match listed {
        Ok(Ok(x)) => x,
        Ok(Err(e)) => {
            tracing::error!("relay: cannot read the spool: {e}");
            return None;
        }
        Err(e) => {
            tracing::error!("relay: spool scan failed: {e}");
            return None;
        }
    };
    for d in damaged {
        tracing::error!("relay: {d}");
    }
    let now = OffsetDateTime::now_utc();
    let mut earliest: Option<OffsetDateTime> = None;
    for entry in entries {
        let due = entry.state == State::New || entry.next_try.is_none_or(|t| t <= now);
        if !due {
            if let Some(t) = entry.next_try {
                earliest = Some(earliest.map_or(t, |e: OffsetDateTime| e.min(t)));
            }
            continue;
        }
        match shared.account_for(&entry) {
            // Held mail waits for the keepalive to release its account.
            Some(acct) if entry.held.is_some() && acct.hold().is_some() => {}
            Some(acct) => shared.submit(&acct, entry.id),
            None => no_account(shared, entry).await,
        }
    }
    earliest
}

/// A queued message whose account is gone from the config and that no route takes.
async fn no_account(shared: &Arc<Shared>, entry: Entry) {
    let spool = shared.spool.clone();
    let id = entry.id.clone();
    let Ok(Ok(Some(mut entry))) = tokio::task::spawn_blocking(move || spool.claim(&id)).await
    else {
        return;
    };
    let reason = format!(
        "no account to send through: account {:?} is not in the config and no [[relay.routes]] \
         entry or default account takes mail from <{}>",
        entry.envelope.account.as_deref().unwrap_or(""),
        entry.envelope.sender
    );
    tracing::error!(id = %entry.id, "relay: {reason}");
    for r in entry.recipients.iter_mut() {
        if r.status == RecipientStatus::Pending {
            r.status = RecipientStatus::Failed;
            r.reply = Some(reason.clone());
        }
    }
    let spool = shared.spool.clone();
    let _ = tokio::task::spawn_blocking(move || spool.fail(&mut entry, &reason)).await;
}

/// The dispatcher: runs until shutdown.
pub(crate) async fn dispatch(shared: Arc<Shared>, mut queued: mpsc::UnboundedReceiver<Queued>) {
    let mut shutdown = shared.shutdown.clone();
    let mut next_scan = Instant::now();
    let mut account_wake: Option<Instant> = None;
    loop {
        if *shutdown.borrow() {
            break;
        }
        let wake = account_wake.map_or(next_scan, |a| a.min(next_scan));
        tokio::select! {
            q = queued.recv() => {
                let Some(q) = q else { break };
                let mut batch = vec![q];
                while let Ok(more) = queued.try_recv() {
                    batch.push(more);
                }
                for q in batch {
                    match shared.accounts.get(&q.account) {
                        Some(acct) => shared.submit(acct, q.id),
                        None => shared.rescan.notify_one(),
                    }
                }
            }
            _ = tokio::time::sleep_until(wake) => {
                if Instant::now() >= next_scan {
                    next_scan = next_scan_after(&shared, scan(&shared).await);
                }
            }
            _ = shared.rescan.notified() => {
                next_scan = next_scan_after(&shared, scan(&shared).await);
            }
            _ = shutdown.changed() => {}
        }
        account_wake = shared.start_workers().await;
        park_held(&shared).await;
    }
}

/// Mail that arrives for a held account is marked held at once, so that `mailgate queue` says
/// why it waits.
async fn park_held(shared: &Arc<Shared>) {
    for acct in shared.accounts.values() {
        let Some(hold) = acct.hold() else { continue };
        let waiting: Vec<String> = acct.lock().ready.drain(..).collect();
        for id in waiting {
            let spool = shared.spool.clone();
            let claim_id = id.clone();
            if let Ok(Ok(Some(entry))) =
                tokio::task::spawn_blocking(move || spool.claim(&claim_id)).await
            {
                let text = format!("{} {}", hold.reason, hold.fix);
                finish_attempt(shared, entry, Some(text), Some(&hold)).await;
            }
            shared.forget(&id);
        }
    }
}

fn next_scan_after(shared: &Shared, earliest: Option<OffsetDateTime>) -> Instant {
    let regular = Instant::now() + shared.cfg.scan_interval;
    match earliest {
        Some(t) => {
            let wait = (t - OffsetDateTime::now_utc())
                .try_into()
                .unwrap_or(Duration::ZERO);
            regular.min(Instant::now() + wait + Duration::from_millis(5))
        }
        None => regular,
    }
}

/// Takes the next ready id, waiting up to `connection_idle` for one.
async fn next_id(shared: &Shared, acct: &AccountState, idle: Duration) -> Option<String> {
    let deadline = Instant::now() + idle;
    let mut shutdown = shared.shutdown.clone();
    loop {
        if shared.stopping() {
            return None;
        }
        {
            let mut inner = acct.lock();
            if inner.hold.is_some() || inner.retry_at.is_some_and(|at| at > Instant::now()) {
                return None;
            }
            if let Some(id) = inner.ready.pop_front() {
                return Some(id);
            }
        }
        tokio::select! {
            _ = acct.more.notified() => {}
            _ = tokio::time::sleep_until(deadline) => return None,
            _ = shutdown.changed() => {}
        }
    }
}

/// One upstream connection's worth of work for an account.
async fn worker(shared: Arc<Shared>, acct: Arc<AccountState>) {
    let mut client: Option<SmtpClient> = None;
    while let Some(id) = next_id(&shared, &acct, shared.cfg.connection_idle).await {
        acct.pacer.wait().await;
        let spool = shared.spool.clone();
        let claim_id = id.clone();
        let claimed = tokio::task::spawn_blocking(move || {
            let Some(mut entry) = spool.claim(&claim_id)? else {
                return Ok(None);
            };
            match spool.message(&entry.id) {
                Ok(m) => Ok(Some((entry, m))),
                // Never sent: a message that does not match its checksum fails for good.
                Err(SpoolError::Corrupt { reason, .. }) => {
                    let why = format!("damaged in the spool: {reason}");
                    tracing::error!(id = %entry.id, "relay: {why}; moved to failed/");
                    spool.fail(&mut entry, &why)?;
                    Ok(None)
                }
                Err(e) => Err(e),
            }
        })
        .await;
        let (entry, message) = match claimed {
            Ok(Ok(Some(x))) => x,
            Ok(Ok(None)) => {
                shared.forget(&id);
                continue;
            }
            Ok(Err(e)) => {
                tracing::error!(id = %id, "relay: cannot take a message from the spool: {e}");
                shared.forget(&id);
                continue;
            }
            Err(_) => {
                shared.forget(&id);
                continue;
            }
        };
        if client.as_ref().is_none_or(|c| !c.is_usable()) {
            if let Some(old) = client.take() {
                old.quit().await;
            }
            acct.sender.transcript().clear();
            match acct.sender.connect().await {
                Ok((c, _)) => {
                    let mut inner = acct.lock();
                    inner.failures = 0;
                    inner.retry_at = None;
                    client = Some(c);
                }
                Err(e) => {
                    account_failure(&shared, &acct, entry, e).await;
                    shared.forget(&id);
                    break;
                }
            }
        }
        let c = client.as_mut().expect("connected above");
        let envelope = SmtpEnvelope::new(
            upstream_sender(&entry, &acct.account),
            entry
                .pending()
                .map(|r| r.address.clone())
                .collect::<Vec<_>>(),
        );
        let result = c.send(&envelope, &message).await;
        drop(message);
        if !c.is_usable() {
            if let Some(old) = client.take() {
                old.quit().await;
            }
        }
        settle(&shared, &acct, entry, result).await;
        shared.forget(&id);
    }
    if let Some(c) = client.take() {
        c.quit().await;
    }
    acct.lock().workers -= 1;
    // More may have arrived while this worker was closing.
    shared.rescan.notify_one();
}

/// `MAIL FROM` upstream: the rewritten sender, else the device's; a null sender becomes the
/// account's own address (providers refuse `<>` for submission).
fn upstream_sender(entry: &Entry, account: &Account) -> String {
    let s = entry.envelope.upstream_sender();
    if s.is_empty() {
        account.from.clone()
    } else {
        s.to_string()
    }
}

/// Whether an SMTP reply code or error is worth retrying.
fn transient_error(e: &SmtpError) -> bool {
    if let Some(r) = e.reply() {
        return (400..500).contains(&r.code);
    }
    match e.sysexit() {
        Sysexit::TempFail | Sysexit::Protocol | Sysexit::Config | Sysexit::Unavailable => true,
        _ => e.is_transient(),
    }
}

fn describe(e: &SmtpError) -> String {
    match e.diagnosis() {
        Some(d) => format!("{e}\n{d}"),
        None => e.to_string(),
    }
}

/// Records the outcome of one attempt and moves the message on.
async fn settle(
    shared: &Arc<Shared>,
    acct: &Arc<AccountState>,
    mut entry: Entry,
    result: Result<SendOutcome, SmtpError>,
) {
    let mut bounced: Vec<(String, String)> = Vec::new();
    let mut temporary: Option<String> = None;
    let refused_recipient = |entry: &mut Entry,
                             bounced: &mut Vec<(String, String)>,
                             temporary: &mut Option<String>,
                             r: &crate::smtp::RecipientFailure| {
        let text = format!("{}\n{}", r.reply, r.diagnosis);
        if (400..500).contains(&r.reply.code) {
            *temporary = Some(format!("{}: {}", r.address, r.reply));
            entry.set_recipient(
                &r.address,
                RecipientStatus::Pending,
                Some(r.reply.to_string()),
            );
        } else {
            entry.set_recipient(&r.address, RecipientStatus::Failed, Some(text.clone()));
            bounced.push((r.address.clone(), text));
        }
    };
    match &result {
        Ok(outcome) => {
            for a in &outcome.accepted {
                entry.set_recipient(
                    a,
                    RecipientStatus::Delivered,
                    Some(outcome.reply.to_string()),
                );
            }
            for r in &outcome.refused {
                refused_recipient(&mut entry, &mut bounced, &mut temporary, r);
            }
            tracing::info!(
                id = %entry.id,
                account = %acct.name,
                "relay: delivered to {} recipient(s): {}",
                outcome.accepted.len(),
                outcome.reply
            );
        }
        Err(SmtpError::AllRecipientsRefused { refused, .. }) => {
            for r in refused {
                refused_recipient(&mut entry, &mut bounced, &mut temporary, r);
            }
        }
        Err(e) if transient_error(e) => {
            temporary = Some(describe(e));
        }
        Err(e) => {
            let text = describe(e);
            let pending: Vec<String> = entry.pending().map(|r| r.address.clone()).collect();
            for a in pending {
                entry.set_recipient(&a, RecipientStatus::Failed, Some(text.clone()));
                bounced.push((a, text.clone()));
            }
        }
    }
    if !bounced.is_empty() {
        tracing::warn!(
            id = %entry.id,
            account = %acct.name,
            "relay: permanent failure for {} recipient(s): {}",
            bounced.len(),
            bounced[0].1.lines().next().unwrap_or("")
        );
        notice::bounce(shared, acct, &entry, &bounced).await;
    }
    finish_attempt(shared, entry, temporary, None).await;
}

/// Completes, fails, defers or expires a message after an attempt.
async fn finish_attempt(
    shared: &Arc<Shared>,
    mut entry: Entry,
    temporary: Option<String>,
    hold: Option<&Hold>,
) {
    let any_pending = entry.pending().next().is_some();
    let any_failed = entry
        .recipients
        .iter()
        .any(|r| r.status == RecipientStatus::Failed);
    let spool = shared.spool.clone();
    if !any_pending {
        let id = entry.id.clone();
        let result = if any_failed {
            let reason = "refused by the server for good (see each recipient); a bounce was sent";
            tokio::task::spawn_blocking(move || spool.fail(&mut entry, reason)).await
        } else {
            tokio::task::spawn_blocking(move || spool.complete(&entry.id)).await
        };
        if let Ok(Err(e)) = result {
            tracing::error!(id = %id, "relay: cannot update the spool: {e}");
        }
        return;
    }
    let error = temporary.unwrap_or_else(|| "temporary failure".into());
    let now = OffsetDateTime::now_utc();
    let age: Duration = (now - entry.age_from).try_into().unwrap_or(Duration::ZERO);
    if hold.is_none() && age >= shared.cfg.max_age {
        let reason = format!(
            "gave up after {} attempts over {}: {}",
            entry.attempts + 1,
            humantime::format_duration(Duration::from_secs(age.as_secs())),
            error
        );
        tracing::warn!(id = %entry.id, "relay: {}", reason.lines().next().unwrap_or(""));
        let pending: Vec<String> = entry.pending().map(|r| r.address.clone()).collect();
        let mut bounced = Vec::new();
        for a in pending {
            entry.set_recipient(&a, RecipientStatus::Failed, Some(reason.clone()));
            bounced.push((a, reason.clone()));
        }
        if let Some(acct) = shared.account_for(&entry) {
            notice::bounce(shared, &acct, &entry, &bounced).await;
        }
        let id = entry.id.clone();
        let result = tokio::task::spawn_blocking(move || spool.fail(&mut entry, &reason)).await;
        if let Ok(Err(e)) = result {
            tracing::error!(id = %id, "relay: cannot update the spool: {e}");
        }
        return;
    }
    let (next, held) = match hold {
        Some(h) => (
            now + shared.cfg.retry_max.min(Duration::from_secs(3600)),
            Some(format!("{} {}", h.reason, h.fix)),
        ),
        None => (now + shared.backoff(entry.attempts + 1), None),
    };
    tracing::info!(
        id = %entry.id,
        "relay: deferred until {}: {}",
        next.format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default(),
        error.lines().next().unwrap_or("")
    );
    let id = entry.id.clone();
    let result =
        tokio::task::spawn_blocking(move || spool.defer(&mut entry, next, &error, held.as_deref()))
            .await;
    if let Ok(Err(e)) = result {
        tracing::error!(id = %id, "relay: cannot update the spool: {e}");
    }
}

/// What a failure to open a session says about the account.
pub(crate) fn classify_account_error(acct: &AccountState, e: &SendError) -> (String, Option<Hold>) {
    let text = match e.diagnosis() {
        Some(d) => format!("{e}\n{d}"),
        None => {
            let mut s = e.to_string();
            let mut cur = std::error::Error::source(e);
            while let Some(c) = cur {
                s.push_str(&format!(": {c}"));
                cur = c.source();
            }
            s
        }
    };
    let needs_attention = match e {
        SendError::Token(t) => t.sysexit() != Sysexit::TempFail,
        SendError::Config(_) => true,
        _ => false,
    };
    if !needs_attention {
        return (text, None);
    }
    let (reason, fix) = if acct.delegated() {
        (
            format!("account {} needs a new login:", acct.name),
            format!("run `mailgate login {}` on the relay host.", acct.name),
        )
    } else {
        (
            format!("account {} cannot get a token:", acct.name),
            "fix its app registration or secret (see the diagnosis); mail is sent again then."
                .to_string(),
        )
    };
    (text, Some(Hold { reason, fix }))
}

/// A session could not be opened: defer this message and the account's other ready ones, and
/// back the account off (or hold it).
async fn account_failure(
    shared: &Arc<Shared>,
    acct: &Arc<AccountState>,
    entry: Entry,
    e: SendError,
) {
    let (text, hold) = classify_account_error(acct, &e);
    match &hold {
        Some(h) => self::hold(shared, acct, h.clone(), &text).await,
        None => {
            {
                let mut inner = acct.lock();
                inner.failures += 1;
                inner.retry_at = Some(Instant::now() + shared.backoff(inner.failures));
            }
            tracing::warn!(
            account = %acct.name,
            "relay: cannot open a session for account {}; retrying later: {}",
            acct.name,
                text.lines().next().unwrap_or("")
            )
        }
    }
    finish_attempt(shared, entry, Some(text.clone()), hold.as_ref()).await;
    // The other ready messages would fail the same way: record it on each now.
    let waiting: Vec<String> = acct.lock().ready.drain(..).collect();
    for id in waiting {
        let spool = shared.spool.clone();
        let claim_id = id.clone();
        if let Ok(Ok(Some(other))) =
            tokio::task::spawn_blocking(move || spool.claim(&claim_id)).await
        {
            finish_attempt(shared, other, Some(text.clone()), hold.as_ref()).await;
        }
        shared.forget(&id);
    }
}

/// Holds an account: its mail waits (without aging) until the keepalive sees a working token.
/// The first hold of an episode is logged with the fix and gets one notice.
pub(crate) async fn hold(shared: &Arc<Shared>, acct: &Arc<AccountState>, h: Hold, detail: &str) {
    let first = {
        let mut inner = acct.lock();
        let first = inner.hold.is_none();
        inner.hold = Some(h.clone());
        first
    };
    if first {
        tracing::error!(
            account = %acct.name,
            "relay: {} {} Its mail is held (not bounced) until then.\n{}",
            h.reason,
            h.fix,
            detail
        );
        notice::account_needs_attention(shared, acct, &h, detail).await;
    }
}

/// Lifts a hold: the account works again. Its held mail is made due now.
pub(crate) async fn release(shared: &Arc<Shared>, acct: &Arc<AccountState>) {
    let was = {
        let mut inner = acct.lock();
        inner.failures = 0;
        inner.retry_at = None;
        inner.hold.take()
    };
    let Some(was) = was else {
        return;
    };
    tracing::info!(
        account = %acct.name,
        "relay: account {} works again ({}); sending its held mail",
        acct.name,
        was.reason
    );
    shared.notices.clear(&acct.name);
    let spool = shared.spool.clone();
    let accounts: Vec<String> = shared.accounts.keys().cloned().collect();
    let name = acct.name.clone();
    let router = shared.router.clone();
    let _ = tokio::task::spawn_blocking(move || -> Result<usize, crate::spool::SpoolError> {
        let (entries, _) = spool.list_states(&[State::Deferred])?;
        let mut n = 0;
        for e in entries {
            let mine = match e.envelope.account.as_ref().filter(|a| accounts.contains(a)) {
                Some(a) => *a == name,
                None => router
                    .route(&e.envelope.sender)
                    .is_some_and(|d| d.account == name),
            };
            if mine && e.held.is_some() {
                spool.retry(&e.id)?;
                n += 1;
            }
        }
        Ok(n)
    })
    .await;
    shared.rescan.notify_one();
}

/// Lifts a backoff early (the keepalive got a token after token-endpoint trouble).
pub(crate) fn clear_backoff(acct: &AccountState) {
    let mut inner = acct.lock();
    inner.retry_at = None;
}
