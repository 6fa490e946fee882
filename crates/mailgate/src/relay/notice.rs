//! Mail the relay writes itself: bounces (a message refused for good, with the diagnosis) and
//! notices (an account needs a new login), and the `notice_command` hook.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use super::config::NoticeCommand;
use super::delivery::{AccountState, Hold, Shared};
use crate::message::{Draft, Mailbox};
use crate::spool::{Entry, Envelope};

/// Remembers which accounts were already the subject of a notice, so that each hold gets one.
pub(crate) struct Notices {
    sent: Mutex<HashSet<String>>,
}

impl Notices {
    pub fn new() -> Notices {
        Notices {
            sent: Mutex::new(HashSet::new()),
        }
    }

    /// True the first time for `account` (until [`Notices::clear`]).
    fn first(&self, account: &str) -> bool {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(account.to_string())
    }

    /// The account works again: a later hold gets a new notice.
    pub fn clear(&self, account: &str) {
        self.sent
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(account);
    }
}

/// The first lines of the original message's header, for the bounce.
fn original_headers(message: &[u8]) -> String {
    let text = String::from_utf8_lossy(&message[..message.len().min(16 * 1024)]).into_owned();
    let head = match text.find("\r\n\r\n") {
        Some(i) => &text[..i],
        None => match text.find("\n\n") {
            Some(i) => &text[..i],
            None => text.as_str(),
        },
    };
    head.lines().take(60).collect::<Vec<_>>().join("\n")
}

fn subject_of(headers: &str) -> Option<String> {
    headers
        .lines()
        .find_map(|l| {
            l.strip_prefix("Subject:")
                .or_else(|| l.strip_prefix("subject:"))
        })
        .map(|s| s.trim().chars().take(120).collect())
}

/// Queues mail made by the relay (`generated`, so it is never bounced in turn) through `via`.
async fn queue_generated(
    shared: &Arc<Shared>,
    via: &Arc<AccountState>,
    draft: Draft,
    origin: String,
) {
    let built = match draft.build() {
        Ok(m) => m,
        Err(e) => {
            tracing::error!("relay: cannot build {origin}: {e}");
            return;
        }
    };
    let envelope = Envelope {
        sender: built.envelope.mail_from.clone(),
        recipients: built.envelope.rcpt_to.clone(),
        account: Some(via.name.clone()),
        upstream_sender: None,
        eight_bit: !built.data.is_ascii(),
        smtputf8: false,
        origin: origin.clone(),
        generated: true,
    };
    let spool = shared.spool.clone();
    match tokio::task::spawn_blocking(move || spool.enqueue(&envelope, &built.data)).await {
        Ok(Ok(id)) => {
            tracing::info!(id = %id, "relay: queued {origin}");
            shared.rescan.notify_one();
        }
        Ok(Err(e)) => tracing::error!("relay: cannot queue {origin}: {e}"),
        Err(e) => tracing::error!("relay: cannot queue {origin}: {e}"),
    }
}

/// Sends a bounce for `failed` (address, reason with diagnosis) of `entry` to `notify` or the
/// envelope sender, through `notify_account` or the message's own account.
pub(crate) async fn bounce(
    shared: &Arc<Shared>,
    acct: &Arc<AccountState>,
    entry: &Entry,
    failed: &[(String, String)],
) {
    if entry.envelope.generated {
        tracing::error!(
            id = %entry.id,
            "relay: a message mailgate wrote itself ({}) could not be delivered; it is not \
             bounced in turn: {}",
            entry.envelope.origin,
            failed.first().map(|f| f.1.lines().next().unwrap_or("")).unwrap_or("")
        );
        return;
    }
    let to = shared
        .cfg
        .notify
        .clone()
        .or_else(|| Some(entry.envelope.sender.clone()).filter(|s| !s.is_empty()));
    let Some(to) = to else {
        tracing::warn!(id = %entry.id, "relay: no one to bounce to (null sender and no notify)");
        return;
    };
    let via = shared
        .cfg
        .notify_account
        .as_ref()
        .and_then(|a| shared.accounts.get(a))
        .filter(|a| a.hold().is_none())
        .unwrap_or(acct)
        .clone();
    let spool = shared.spool.clone();
    let id = entry.id.clone();
    let message = tokio::task::spawn_blocking(move || spool.message(&id))
        .await
        .ok()
        .and_then(Result::ok)
        .unwrap_or_default();
    let headers = original_headers(&message);
    let subject = subject_of(&headers).unwrap_or_else(|| "(no subject)".into());
    let mut text = format!(
        "This is the mailgate relay on {host}.\n\n\
         A message from <{sender}> could not be delivered to {n} recipient(s). The mail server \
         of account {account} refused it for good, so it will not be tried again.\n\n",
        host = shared.cfg.hostname,
        sender = entry.envelope.sender,
        n = failed.len(),
        account = acct.name,
    );
    for (address, reason) in failed {
        text.push_str(&format!("Recipient: {address}\n"));
        for line in reason.lines() {
            text.push_str(&format!("  {line}\n"));
        }
        text.push('\n');
    }
    text.push_str(&format!(
        "Queue id: {id} (see `mailgate queue show {id}` on the relay host; after fixing the \
         cause, `mailgate queue retry {id}` sends it again).\n\n\
         --- Header of the original message ---\n{headers}\n",
        id = entry.id
    ));
    let draft = Draft {
        from: Some(Mailbox::with_name(
            "Mail Delivery System",
            via.account.from.clone(),
        )),
        to: vec![Mailbox::new(to)],
        subject: Some(format!("Undelivered Mail Returned to Sender: {subject}")),
        text: Some(text),
        headers: vec![
            ("Auto-Submitted".into(), "auto-replied".into()),
            ("X-Mailgate-Bounce-Of".into(), entry.id.clone()),
        ],
        ..Draft::default()
    };
    queue_generated(shared, &via, draft, format!("bounce of {}", entry.id)).await;
}

/// Tells someone, once per hold, that `acct` needs attention: runs `notice_command` and mails
/// `notify` through another account.
pub(crate) async fn account_needs_attention(
    shared: &Arc<Shared>,
    acct: &Arc<AccountState>,
    hold: &Hold,
    detail: &str,
) {
    if !shared.notices.first(&acct.name) {
        return;
    }
    if let Some(cmd) = &shared.cfg.notice_command {
        run_notice_command(cmd, &acct.name, &hold.reason, &hold.fix).await;
    }
    let Some(to) = shared.cfg.notify.clone() else {
        if shared.cfg.notice_command.is_none() {
            tracing::info!(
                "relay: set [relay] notify (an address) or notice_command to be told when an \
                 account needs a new login"
            );
        }
        return;
    };
    let usable = |a: &&Arc<AccountState>| a.name != acct.name && a.hold().is_none();
    let via = shared
        .cfg
        .notify_account
        .as_ref()
        .and_then(|a| shared.accounts.get(a))
        .filter(usable)
        .or_else(|| {
            shared
                .router
                .default_account()
                .and_then(|a| shared.accounts.get(a))
                .filter(usable)
        })
        .or_else(|| shared.accounts.values().find(usable));
    let Some(via) = via.cloned() else {
        tracing::warn!(
            "relay: cannot mail the notice about account {} to {to}: no other account can send it",
            acct.name
        );
        return;
    };
    let text = format!(
        "This is the mailgate relay on {host}.\n\n{reason} {fix}\n\n\
         Mail for account {name} is held, not bounced: it is sent as soon as the account works \
         again.\n\nDetails:\n{detail}\n",
        host = shared.cfg.hostname,
        reason = hold.reason,
        fix = hold.fix,
        name = acct.name,
    );
    let draft = Draft {
        from: Some(Mailbox::with_name(
            "mailgate relay",
            via.account.from.clone(),
        )),
        to: vec![Mailbox::new(to)],
        subject: Some(format!(
            "mailgate relay: account {} needs attention",
            acct.name
        )),
        text: Some(text),
        headers: vec![("Auto-Submitted".into(), "auto-generated".into())],
        ..Draft::default()
    };
    queue_generated(
        shared,
        &via,
        draft,
        format!("notice about account {}", acct.name),
    )
    .await;
}

async fn run_notice_command(cmd: &NoticeCommand, account: &str, reason: &str, fix: &str) {
    let mut command = match cmd {
        NoticeCommand::Argv(argv) => {
            let mut c = tokio::process::Command::new(&argv[0]);
            c.args(&argv[1..]);
            c
        }
        NoticeCommand::Shell(line) => {
            #[cfg(windows)]
            {
                let mut c = tokio::process::Command::new("cmd");
                c.arg("/C").arg(line);
                c
            }
            #[cfg(not(windows))]
            {
                let mut c = tokio::process::Command::new("sh");
                c.arg("-c").arg(line);
                c
            }
        }
    };
    command
        .env("MAILGATE_ACCOUNT", account)
        .env("MAILGATE_REASON", reason)
        .env("MAILGATE_FIX", fix)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true);
    match command.spawn() {
        Ok(mut child) => match tokio::time::timeout(Duration::from_secs(60), child.wait()).await {
            Ok(Ok(status)) if status.success() => {
                tracing::info!("relay: notice_command ran for account {account}")
            }
            Ok(Ok(status)) => tracing::warn!("relay: notice_command failed ({status})"),
            Ok(Err(e)) => tracing::warn!("relay: notice_command: {e}"),
            Err(_) => tracing::warn!("relay: notice_command did not finish within 60 s; killed"),
        },
        Err(e) => tracing::warn!("relay: cannot run notice_command: {e}"),
    }
}
