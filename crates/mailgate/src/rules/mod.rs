//! File-transfer rules with mail events: a rule moves or copies files from a source folder to a
//! destination, and mails someone On Success (what arrived), On Error (what failed, with the OS
//! error) and On No Files (the expected delivery never came).
//!
//! - [`config`]: the `[rules.NAME]` tables, validated when the config is loaded;
//! - [`template`]: `{placeholder}` templates for destinations and mail;
//! - [`scan`]: finding candidate files and deciding when each is stable;
//! - [`transfer`]: the crash-safe move/copy of one file, and recovery after a crash;
//! - [`state`]: what a rule remembers between runs (journal, unreported files, copy history);
//! - [`events`]: a scan's results as mail;
//! - [`notify`]: sending that mail now, or queueing it in the spool;
//! - [`runner`]: scanning rules once or at their intervals, and the `rules check` preview.

pub mod config;
pub mod events;
pub mod notify;
pub mod runner;
pub mod scan;
pub mod state;
pub mod template;
pub mod transfer;

pub use config::{Action, Conflict, MailAction, NoFilesAction, RuleConfig};
pub use events::{EventKind, EventMail, Failure, Transferred};
pub use notify::{Delivery, MailNotifier, Notifier, NotifyError, QueueReport};
pub use runner::{plan, Plan, PlanItem, Runner, ScanReport};
pub use state::StateError;
pub use transfer::{NoProgress, Progress, TransferError};
