//! The durable queue: messages waiting to be sent, on disk before anyone is told they were
//! accepted.
//!
//! Layout under the spool directory:
//!
//! ```text
//! data/ID.eml          the message as received, after a header (immutable)
//! new/ID.json          control record of a message waiting for its first attempt (a hard
//!                      link to data/ID.eml, whose header holds it)
//! active/ID.json       ... being delivered right now
//! deferred/ID.json     ... waiting for a retry after a temporary failure
//! failed/ID.json       ... given up (permanent failure or too old), kept for `mailgate queue`
//! tmp/                 files being written; old ones removed at recovery
//! free/                emptied message files of delivered messages, reused by new ones
//! lock                 held by the process that delivers (the relay)
//! ```
//!
//! A control record holds the envelope, each recipient's status, the attempts, the next try and
//! the last error. Its directory is its state. The message file starts with a copy of the
//! message's first control record and the message's checksum (see [`Spool::enqueue`]), so the
//! message file alone is the commit point: [`Spool::enqueue`] writes it in `tmp/`, renames it
//! into `data/`, fsyncs it and `data/` (the two disk flushes overlap), links the control record
//! into `new/` (not synced: it can be rebuilt from the message file) and returns. From then on a
//! crash cannot lose the message. Sessions that enqueue at the same moment share the directory
//! fsync (group commit: whoever arrives while no sync runs syncs for everyone waiting), so a
//! message costs one file fsync. A file whose name reached the disk before its content (a crash
//! before the syncs, so never acknowledged) fails its checksum: recovery removes it, and a
//! delivery never sends it.
//!
//! A state change that also changes the record (a deferral, a failure) writes the new record with
//! a higher `version` into the target directory and then removes the old one; a crash in
//! between leaves two records, and recovery keeps the newer one. A message that was being
//! delivered when the process died goes back to `new/` at recovery, so it is sent again: the only
//! duplicates a crash can cause are the messages in flight at that moment.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Condvar, Mutex};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::sysexits::HasSysexit;
use crate::Sysexit;

/// Orphaned message files (no control record) younger than this may belong to an enqueue in
/// progress in another process, and are left alone by recovery.
const ORPHAN_GRACE: Duration = Duration::from_secs(600);

/// First bytes of a message file: `mailgate-spool-1 LEN CRC\n`, then LEN bytes of the
/// message's first control record (JSON) and a newline, then the message, whose CRC-32 is CRC
/// (8 hex digits). The checksum catches a file whose name reached the disk before its content
/// (a message that was never acknowledged). Files without this header (written by earlier
/// versions) are the bare message.
const HEADER_MAGIC: &[u8] = b"mailgate-spool-1 ";

/// Emptied message files kept for reuse, at most.
const MAX_FREE_FILES: usize = 4096;

/// Whether finished message files are reused: only where a rename can refuse to replace its
/// target, so that two processes never take the same file.
const RECYCLE: bool = cfg!(target_os = "linux");

/// Renames `from` to `to`, failing with `AlreadyExists` when `to` exists (Linux), or replacing
/// it (elsewhere; ids are unique within a spool, so the target never exists in practice).
fn rename_noreplace(from: &Path, to: &Path) -> io::Result<()> {
    #[cfg(target_os = "linux")]
    {
        use std::ffi::CString;
        use std::os::unix::ffi::OsStrExt;
        let c = |p: &Path| {
            CString::new(p.as_os_str().as_bytes())
                .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))
        };
        let (from_c, to_c) = (c(from)?, c(to)?);
        // SAFETY: both paths are valid NUL-terminated strings that outlive the call.
        let rc = unsafe {
            libc::renameat2(
                libc::AT_FDCWD,
                from_c.as_ptr(),
                libc::AT_FDCWD,
                to_c.as_ptr(),
                libc::RENAME_NOREPLACE,
            )
        };
        if rc == 0 {
            return Ok(());
        }
        let e = io::Error::last_os_error();
        // Filesystems without RENAME_NOREPLACE: an ordinary rename.
        if e.raw_os_error() != Some(libc::EINVAL) {
            return Err(e);
        }
    }
    fs::rename(from, to)
}

/// The longest first line of a header: the magic, a length, a checksum and the newline.
const FIRST_LINE_MAX: usize = 64;

/// The header of a message file holding `entry` and `message`.
fn file_header(entry: &Entry, message: &[u8]) -> Vec<u8> {
    let json = serde_json::to_vec(entry).expect("entries serialize");
    let mut header = Vec::with_capacity(json.len() + FIRST_LINE_MAX);
    header.extend_from_slice(HEADER_MAGIC);
    let crc = crc32fast::hash(message);
    header.extend_from_slice(format!("{} {crc:08x}\n", json.len()).as_bytes());
    header.extend_from_slice(&json);
    header.push(b'\n');
    header
}

/// The first line of a message file's header.
struct FirstLine {
    /// Bytes of the line, newline included.
    len: usize,
    json_len: usize,
    crc: u32,
}

/// Reads the first line of a header from the start of a message file; `None` for a file
/// without a header.
fn first_line(start: &[u8]) -> Result<Option<FirstLine>, String> {
    let Some(rest) = start.strip_prefix(HEADER_MAGIC) else {
        return Ok(None);
    };
    let eol = rest
        .iter()
        .take(FIRST_LINE_MAX - HEADER_MAGIC.len())
        .position(|&b| b == b'\n')
        .ok_or("the header's first line is cut short")?;
    let line = std::str::from_utf8(&rest[..eol]).map_err(|_| "the header is not text")?;
    let (len, crc) = line.split_once(' ').ok_or("the header has no checksum")?;
    Ok(Some(FirstLine {
        len: HEADER_MAGIC.len() + eol + 1,
        json_len: len
            .parse()
            .map_err(|_| "the header's length is not a number")?,
        crc: u32::from_str_radix(crc, 16).map_err(|_| "the header's checksum is not hex")?,
    }))
}

/// Splits a message file into its header's control record (JSON; `None` for a file without a
/// header) and the message, checking the message against the header's checksum.
fn split_file(bytes: &[u8]) -> Result<(Option<&[u8]>, &[u8]), String> {
    let Some(first) = first_line(bytes)? else {
        return Ok((None, bytes));
    };
    let json_end = first
        .len
        .checked_add(first.json_len)
        .filter(|&end| end < bytes.len() && bytes[end] == b'\n')
        .ok_or("the header is cut short")?;
    let message = &bytes[json_end + 1..];
    if crc32fast::hash(message) != first.crc {
        return Err(format!(
            "the message ({} bytes) does not match its checksum: it was cut short or damaged",
            message.len()
        ));
    }
    Ok((Some(&bytes[first.len..json_end]), message))
}

/// The start of a spool file.
enum Head {
    /// A message file with a header: the record in it, and the message's length.
    Message { json: Vec<u8>, message_len: u64 },
    /// Anything else (a JSON control record, a message file of an earlier version): all of it.
    Other(Vec<u8>),
}

/// Reads a spool file's head: of a message file, only the header.
fn read_head(path: &Path) -> io::Result<Head> {
    use std::io::Read;
    let mut file = File::open(path)?;
    let file_len = file.metadata()?.len();
    let invalid = |reason: String| io::Error::new(io::ErrorKind::InvalidData, reason);
    let mut start = vec![0u8; FIRST_LINE_MAX];
    let mut got = 0;
    while got < start.len() {
        match file.read(&mut start[got..])? {
            0 => break,
            n => got += n,
        }
    }
    start.truncate(got);
    let Some(first) = first_line(&start).map_err(invalid)? else {
        file.read_to_end(&mut start)?;
        return Ok(Head::Other(start));
    };
    let header_len = (first.len + first.json_len + 1) as u64;
    if header_len > file_len {
        return Err(invalid("the header is cut short".into()));
    }
    let mut json = vec![0u8; first.json_len];
    let already = (got - first.len).min(json.len());
    json[..already].copy_from_slice(&start[first.len..first.len + already]);
    file.read_exact(&mut json[already..])?;
    Ok(Head::Message {
        json,
        message_len: file_len - header_len,
    })
}

/// Why a spool operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SpoolError {
    /// A file or directory of the spool could not be read or written.
    #[error("spool: cannot {action} {path}: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        source: io::Error,
    },
    /// No message has this id (or id prefix).
    #[error("no message {id} in the spool {dir}")]
    NotFound { id: String, dir: PathBuf },
    /// An id prefix matches several messages.
    #[error("{prefix} matches {count} messages; give more of the id")]
    Ambiguous { prefix: String, count: usize },
    /// The message is being delivered right now.
    #[error("message {id} is being delivered right now; try again in a moment")]
    Busy { id: String },
    /// A control record could not be understood.
    #[error("spool: control record {path} is damaged: {reason}")]
    Corrupt { path: PathBuf, reason: String },
    /// Another process (a running relay) delivers from this spool.
    #[error("the spool {dir} is in use by another mailgate relay (pid {pid}); stop it first")]
    Locked { dir: PathBuf, pid: String },
    /// An fsync failed earlier; the spool no longer promises durability.
    #[error(
        "spool: a disk sync failed ({reason}); no more mail is accepted until mailgate restarts"
    )]
    Poisoned { reason: String },
    /// A message with no recipient cannot be queued.
    #[error("a message needs at least one recipient")]
    NoRecipients,
}

impl HasSysexit for SpoolError {
    fn sysexit(&self) -> Sysexit {
        match self {
            SpoolError::Io { .. } | SpoolError::Poisoned { .. } => Sysexit::IoErr,
            SpoolError::NotFound { .. } => Sysexit::NoInput,
            SpoolError::Ambiguous { .. } => Sysexit::Usage,
            SpoolError::Busy { .. } | SpoolError::Locked { .. } => Sysexit::TempFail,
            SpoolError::Corrupt { .. } => Sysexit::DataErr,
            SpoolError::NoRecipients => Sysexit::DataErr,
        }
    }
}

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> SpoolError + 'a {
    move |source| SpoolError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

/// Who a message is from and to, and how it must be sent.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Envelope {
    /// The reverse path from `MAIL FROM` (empty for a null sender). Bounces go here.
    pub sender: String,
    /// The forward paths from `RCPT TO`, in order.
    pub recipients: Vec<String>,
    /// The account to send through; `None`: route by sender when delivering.
    pub account: Option<String>,
    /// The `MAIL FROM` to use upstream when it differs from `sender` (a route's
    /// `rewrite_from`).
    pub upstream_sender: Option<String>,
    /// The client asked for `BODY=8BITMIME`.
    pub eight_bit: bool,
    /// The client asked for `SMTPUTF8`.
    pub smtputf8: bool,
    /// Where the message came from, for `mailgate queue show` and the logs, e.g.
    /// `relay 127.0.0.1:50312 user scanner`.
    pub origin: String,
    /// Made by mailgate itself (a bounce or a notice): never bounced in turn.
    pub generated: bool,
}

impl Envelope {
    /// An envelope from `sender` to `recipients`, everything else default.
    pub fn new(sender: impl Into<String>, recipients: Vec<String>) -> Envelope {
        Envelope {
            sender: sender.into(),
            recipients,
            ..Envelope::default()
        }
    }

    /// The `MAIL FROM` to use upstream.
    pub fn upstream_sender(&self) -> &str {
        self.upstream_sender.as_deref().unwrap_or(&self.sender)
    }
}

/// Where a message is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum State {
    /// Waiting for its first attempt (or a retry asked for by hand).
    New,
    /// Being delivered.
    Active,
    /// Waiting for its next try after a temporary failure.
    Deferred,
    /// Given up; kept until deleted or retried by hand.
    Failed,
}

impl State {
    /// Every state, in the order of a message's life.
    pub const ALL: [State; 4] = [State::New, State::Active, State::Deferred, State::Failed];

    /// The directory of this state under the spool.
    pub fn dir_name(self) -> &'static str {
        match self {
            State::New => "new",
            State::Active => "active",
            State::Deferred => "deferred",
            State::Failed => "failed",
        }
    }
}

impl std::fmt::Display for State {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.dir_name())
    }
}

/// How far one recipient got.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum RecipientStatus {
    /// Still to be sent.
    Pending,
    /// The server accepted the message for this recipient.
    Delivered,
    /// The server refused this recipient for good.
    Failed,
}

/// One recipient of a queued message and its outcome so far.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Recipient {
    pub address: String,
    pub status: RecipientStatus,
    /// The server's last reply about this recipient (or the reason it failed).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reply: Option<String>,
}

/// A queued message's control record: its envelope and delivery status.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Entry {
    pub id: String,
    /// Grows with each rewrite of the record; recovery keeps the highest.
    pub version: u64,
    /// Not stored: the directory the record was found in.
    #[serde(skip, default = "state_new")]
    pub state: State,
    pub envelope: Envelope,
    pub recipients: Vec<Recipient>,
    /// The message's size in bytes.
    pub size: u64,
    #[serde(with = "time::serde::rfc3339")]
    pub received_at: OffsetDateTime,
    /// When the maximum-age clock started (`received_at`, or the last retry by hand).
    #[serde(with = "time::serde::rfc3339")]
    pub age_from: OffsetDateTime,
    /// Delivery attempts so far.
    pub attempts: u32,
    /// Not before this time (deferred messages).
    #[serde(default, with = "time::serde::rfc3339::option")]
    pub next_try: Option<OffsetDateTime>,
    /// The last temporary error, as the user should read it.
    #[serde(default)]
    pub last_error: Option<String>,
    /// Held (not counted against the maximum age) because the account needs attention,
    /// e.g. a new login.
    #[serde(default)]
    pub held: Option<String>,
    /// Why the message failed for good.
    #[serde(default)]
    pub failed_reason: Option<String>,
}

fn state_new() -> State {
    State::New
}

impl Entry {
    /// The recipients still to be sent to.
    pub fn pending(&self) -> impl Iterator<Item = &Recipient> {
        self.recipients
            .iter()
            .filter(|r| r.status == RecipientStatus::Pending)
    }

    /// Marks `address` (first pending match, case-insensitive) with `status` and `reply`.
    pub fn set_recipient(&mut self, address: &str, status: RecipientStatus, reply: Option<String>) {
        if let Some(r) = self.recipients.iter_mut().find(|r| {
            r.status == RecipientStatus::Pending && r.address.eq_ignore_ascii_case(address)
        }) {
            r.status = status;
            r.reply = reply;
        }
    }
}

/// Leader/follower group commit of directory fsyncs: a caller that finds no sync running syncs
/// for everyone who asked before it started; callers that arrive meanwhile wait for the next one.
struct GroupSync {
    inner: Mutex<GroupInner>,
    done: Condvar,
}

#[derive(Default)]
struct GroupInner {
    requested: u64,
    completed: u64,
    syncing: bool,
    poisoned: Option<String>,
    /// How many syncs actually ran (for tests and the benchmark).
    rounds: u64,
}

impl GroupSync {
    fn new() -> GroupSync {
        GroupSync {
            inner: Mutex::new(GroupInner::default()),
            done: Condvar::new(),
        }
    }

    /// A ticket for a sync of changes made before this call; see [`GroupSync::wait`].
    fn request(&self) -> u64 {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        g.requested += 1;
        g.requested
    }

    /// Returns once a sync of `dirs` that started after `ticket` was requested has finished,
    /// running one itself when none is running.
    fn wait(&self, ticket: u64, dirs: &[&Path]) -> Result<(), SpoolError> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        loop {
            if let Some(reason) = &g.poisoned {
                return Err(SpoolError::Poisoned {
                    reason: reason.clone(),
                });
            }
            if g.completed >= ticket {
                return Ok(());
            }
            if !g.syncing {
                g.syncing = true;
                let target = g.requested;
                drop(g);
                let result = dirs.iter().try_for_each(|d| sync_dir(d));
                g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
                g.syncing = false;
                g.rounds += 1;
                match result {
                    Ok(()) => g.completed = target,
                    Err(e) => g.poisoned = Some(e.to_string()),
                }
                self.done.notify_all();
                continue;
            }
            g = self.done.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn rounds(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|e| e.into_inner()).rounds
    }
}

#[cfg(unix)]
fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

#[cfg(not(unix))]
fn sync_dir(_dir: &Path) -> io::Result<()> {
    // Windows has no directory fsync; NTFS journals renames itself.
    Ok(())
}

/// Held while a process delivers from the spool (see [`Spool::lock`]).
#[derive(Debug)]
pub struct SpoolLock {
    _file: File,
}

/// The durable queue. Cheap to share behind an `Arc`; every method is blocking (run it on a
/// blocking thread from async code).
pub struct Spool {
    root: PathBuf,
    data: PathBuf,
    tmp: PathBuf,
    /// Emptied message files of delivered messages, for reuse (see [`Spool::take_file`]).
    free: PathBuf,
    free_names: Mutex<Vec<String>>,
    sync: GroupSync,
    counter: AtomicU64,
}

impl std::fmt::Debug for Spool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Spool").field("root", &self.root).finish()
    }
}

/// Summary counts of a spool, by state.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub new: usize,
    pub active: usize,
    pub deferred: usize,
    pub failed: usize,
}

impl Spool {
    /// Opens (creating when needed) the spool in `dir`. Opening does not recover: a process that
    /// delivers calls [`Spool::lock`] then [`Spool::recover`]; others (`mailgate queue`, code
    /// that only enqueues) may use the spool alongside it.
    pub fn open(dir: impl Into<PathBuf>) -> Result<Spool, SpoolError> {
        let root = dir.into();
        create_private_dir(&root)?;
        for sub in ["data", "tmp", "free", "new", "active", "deferred", "failed"] {
            create_private_dir(&root.join(sub))?;
        }
        let free = root.join("free");
        let free_names = fs::read_dir(&free)
            .map_err(io_err("list", &free))?
            .filter_map(|item| item.ok()?.file_name().into_string().ok())
            .take(MAX_FREE_FILES)
            .collect();
        Ok(Spool {
            data: root.join("data"),
            tmp: root.join("tmp"),
            free,
            free_names: Mutex::new(free_names),
            root,
            sync: GroupSync::new(),
            counter: AtomicU64::new(rand::random::<u64>()),
        })
    }

    /// The spool's directory.
    pub fn dir(&self) -> &Path {
        &self.root
    }

    fn state_dir(&self, state: State) -> PathBuf {
        self.root.join(state.dir_name())
    }

    fn control_path(&self, state: State, id: &str) -> PathBuf {
        self.state_dir(state).join(format!("{id}.json"))
    }

    fn data_path(&self, id: &str) -> PathBuf {
        self.data.join(format!("{id}.eml"))
    }

    /// Takes the delivery lock: one process at a time delivers from a spool. Fails with
    /// [`SpoolError::Locked`] when another holds it.
    pub fn lock(&self) -> Result<SpoolLock, SpoolError> {
        let path = self.root.join("lock");
        let mut file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)
            .map_err(io_err("open", &path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => {
                let pid = fs::read_to_string(&path)
                    .unwrap_or_default()
                    .trim()
                    .to_string();
                return Err(SpoolError::Locked {
                    dir: self.root.clone(),
                    pid: if pid.is_empty() {
                        "unknown".into()
                    } else {
                        pid
                    },
                });
            }
            Err(fs::TryLockError::Error(e)) => return Err(io_err("lock", &path)(e)),
        }
        file.set_len(0).map_err(io_err("write", &path))?;
        write!(file, "{}", std::process::id()).map_err(io_err("write", &path))?;
        Ok(SpoolLock { _file: file })
    }

    /// A new message id: milliseconds since the epoch and a sequence number, in hex, so that ids
    /// sort by arrival. The sequence starts at a random point per process: within a process ids
    /// never repeat (short of a million messages in a millisecond), and two processes that
    /// enqueue in the same millisecond almost never meet (when they do, the one that comes second
    /// finds the id taken: [`Spool::enqueue`] picks another or fails without losing anything).
    fn new_id(&self) -> String {
        let millis = (OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000) as u64;
        let seq = self.counter.fetch_add(1, Ordering::Relaxed) & 0xf_ffff;
        format!("{millis:011x}{seq:05x}")
    }

    /// Queues `message` for `envelope.recipients`. When this returns `Ok`, the message and its
    /// envelope are on disk and fsynced: a crash cannot lose it.
    pub fn enqueue(&self, envelope: &Envelope, message: &[u8]) -> Result<String, SpoolError> {
        if envelope.recipients.is_empty() {
            return Err(SpoolError::NoRecipients);
        }
        let now = OffsetDateTime::now_utc();
        let mut entry = Entry {
            id: String::new(),
            version: 1,
            state: State::New,
            recipients: envelope
                .recipients
                .iter()
                .map(|a| Recipient {
                    address: a.clone(),
                    status: RecipientStatus::Pending,
                    reply: None,
                })
                .collect(),
            envelope: envelope.clone(),
            size: message.len() as u64,
            received_at: now,
            age_from: now,
            attempts: 0,
            next_try: None,
            last_error: None,
            held: None,
            failed_reason: None,
        };
        // The message file appears in data/ whole; its checksum tells recovery whether its
        // content reached the disk when a crash came before the syncs below.
        let (mut file, tmp) = loop {
            entry.id = self.new_id();
            if self.data_path(&entry.id).exists() {
                continue;
            }
            match self.take_file(&entry.id) {
                Ok(taken) => break taken,
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(io_err("create", &self.tmp)(e)),
            }
        };
        let written = file
            .write_all(&file_header(&entry, message))
            .and_then(|()| file.write_all(message));
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("write", &tmp)(e));
        }
        let data_path = self.data_path(&entry.id);
        if let Err(e) = rename_noreplace(&tmp, &data_path) {
            let _ = fs::remove_file(&tmp);
            return Err(io_err("rename into", &data_path)(e));
        }
        // Ask for the directory sync before syncing the file: a round that starts meanwhile
        // covers this rename, so the two disk flushes overlap instead of following each other.
        let ticket = self.sync.request();
        let result = file
            .sync_data()
            .map_err(io_err("sync", &data_path))
            .and_then(|()| self.link_new_record(&entry, &data_path))
            .and_then(|()| self.sync.wait(ticket, &[&self.data]));
        if let Err(e) = result {
            let _ = fs::remove_file(self.control_path(State::New, &entry.id));
            let _ = fs::remove_file(&data_path);
            return Err(e);
        }
        Ok(entry.id)
    }

    /// An empty file `tmp/ID.eml` to write a new message into: a recycled one when there is one
    /// (creating files is the slow part of an enqueue on some filesystems: ext4 without a
    /// journal searches for an inode it has not freed recently), else a new one.
    fn take_file(&self, id: &str) -> io::Result<(File, PathBuf)> {
        let tmp = self.tmp.join(format!("{id}.eml"));
        loop {
            let name = self
                .free_names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .pop();
            let Some(name) = name else { break };
            // The rename makes the file ours: another process taking the same one fails.
            if rename_noreplace(&self.free.join(&name), &tmp).is_ok() {
                match OpenOptions::new().write(true).truncate(true).open(&tmp) {
                    Ok(f) => return Ok((f, tmp)),
                    Err(_) => {
                        let _ = fs::remove_file(&tmp);
                    }
                }
            }
        }
        let f = OpenOptions::new().write(true).create_new(true).open(&tmp)?;
        Ok((f, tmp))
    }

    /// Keeps the message file of a finished message for reuse, emptied, or removes it.
    fn recycle(&self, id: &str, data: &Path) -> io::Result<()> {
        let free_count = || {
            self.free_names
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .len()
        };
        if !RECYCLE || free_count() >= MAX_FREE_FILES {
            return fs::remove_file(data);
        }
        let file = OpenOptions::new().write(true).open(data)?;
        // Only a file nothing else links to (no control record left) may be reused.
        #[cfg(unix)]
        {
            use std::os::unix::fs::MetadataExt;
            if file.metadata()?.nlink() != 1 {
                return fs::remove_file(data);
            }
        }
        // The list is locked only to look and to add: enqueues take from it meanwhile.
        let free = self.free.join(id);
        fs::rename(data, &free)?;
        file.set_len(0)?;
        let mut names = self.free_names.lock().unwrap_or_else(|e| e.into_inner());
        if names.len() < MAX_FREE_FILES {
            names.push(id.to_string());
            return Ok(());
        }
        drop(names);
        fs::remove_file(&free)
    }

    /// A new message's control record: a hard link to its message file, whose header holds the
    /// record (no second file to create: creating files is the slow part on some filesystems).
    /// Where links are not possible, a JSON file. Neither is synced: recovery rebuilds a lost
    /// one from the message file.
    fn link_new_record(&self, entry: &Entry, data_path: &Path) -> Result<(), SpoolError> {
        let record = self.control_path(State::New, &entry.id);
        match fs::hard_link(data_path, &record) {
            Ok(()) => Ok(()),
            Err(_) => self.write_control(entry, State::New, false),
        }
    }

    /// How many directory syncs have run (each may have covered many enqueues).
    pub fn sync_rounds(&self) -> u64 {
        self.sync.rounds()
    }

    /// Writes `entry` into `state`'s directory through `tmp/` and a rename.
    fn write_control(&self, entry: &Entry, state: State, fsync: bool) -> Result<(), SpoolError> {
        let json = serde_json::to_vec_pretty(entry).expect("entries serialize");
        let tmp = self
            .tmp
            .join(format!("{}.{}.json", entry.id, entry.version));
        let mut f = File::create(&tmp).map_err(io_err("create", &tmp))?;
        f.write_all(&json).map_err(io_err("write", &tmp))?;
        if fsync {
            f.sync_data().map_err(io_err("sync", &tmp))?;
        }
        drop(f);
        let dest = self.control_path(state, &entry.id);
        fs::rename(&tmp, &dest).map_err(|e| {
            let _ = fs::remove_file(&tmp);
            io_err("rename into", &dest)(e)
        })
    }

    /// Reads a control record: a JSON file, or (a new message's record, a hard link to its
    /// message file) the record in a message file's header.
    fn read_control(&self, path: &Path, state: State) -> Result<Entry, SpoolError> {
        let bytes = match read_head(path) {
            Ok(Head::Message { json, .. }) => json,
            Ok(Head::Other(bytes)) => bytes,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                return Err(SpoolError::Corrupt {
                    path: path.to_path_buf(),
                    reason: e.to_string(),
                })
            }
            Err(e) => return Err(io_err("read", path)(e)),
        };
        let mut entry: Entry = serde_json::from_slice(&bytes).map_err(|e| SpoolError::Corrupt {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })?;
        entry.state = state;
        Ok(entry)
    }

    /// Ids of the control records in one state directory.
    fn ids_in(&self, state: State) -> Result<Vec<String>, SpoolError> {
        let dir = self.state_dir(state);
        let mut ids = Vec::new();
        for item in fs::read_dir(&dir).map_err(io_err("list", &dir))? {
            let item = item.map_err(io_err("list", &dir))?;
            let name = item.file_name();
            if let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".json")) {
                ids.push(id.to_string());
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Entries in `states`, oldest first. Records that vanish while being read (delivered
    /// meanwhile) are skipped; damaged ones are reported in the second list.
    pub fn list_states(
        &self,
        states: &[State],
    ) -> Result<(Vec<Entry>, Vec<SpoolError>), SpoolError> {
        self.list_states_except(states, |_| false)
    }

    /// [`Spool::list_states`] without reading the records whose id `skip` picks (a deliverer
    /// skips what it already has in hand: its scans cost what is new, not the queue's length).
    pub fn list_states_except(
        &self,
        states: &[State],
        skip: impl Fn(&str) -> bool,
    ) -> Result<(Vec<Entry>, Vec<SpoolError>), SpoolError> {
        let mut entries = Vec::new();
        let mut damaged = Vec::new();
        for &state in states {
            for id in self.ids_in(state)?.into_iter().filter(|id| !skip(id)) {
                match self.read_control(&self.control_path(state, &id), state) {
                    Ok(e) => entries.push(e),
                    Err(SpoolError::Io { source, .. })
                        if source.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => damaged.push(e),
                }
            }
        }
        entries.sort_by(|a, b| a.id.cmp(&b.id));
        Ok((entries, damaged))
    }

    /// Every message in the spool, oldest first.
    pub fn list(&self) -> Result<Vec<Entry>, SpoolError> {
        Ok(self.list_states(&State::ALL)?.0)
    }

    /// Counts by state.
    pub fn counts(&self) -> Result<Counts, SpoolError> {
        Ok(Counts {
            new: self.ids_in(State::New)?.len(),
            active: self.ids_in(State::Active)?.len(),
            deferred: self.ids_in(State::Deferred)?.len(),
            failed: self.ids_in(State::Failed)?.len(),
        })
    }

    /// Messages ready to be sent at `now`: new ones, and deferred ones whose next try has come
    /// and that are not held.
    pub fn due(&self, now: OffsetDateTime) -> Result<Vec<Entry>, SpoolError> {
        let (entries, _) = self.list_states(&[State::New, State::Deferred])?;
        Ok(entries
            .into_iter()
            .filter(|e| e.state == State::New || e.next_try.is_none_or(|t| t <= now))
            .collect())
    }

    /// Finds the entry whose id is `id` or starts with `id`.
    pub fn find(&self, id: &str) -> Result<Entry, SpoolError> {
        let mut found = Vec::new();
        for state in State::ALL {
            for other in self.ids_in(state)? {
                if other == id {
                    return self.read_control(&self.control_path(state, &other), state);
                }
                if !id.is_empty() && other.starts_with(id) {
                    found.push((state, other));
                }
            }
        }
        found.dedup_by(|a, b| a.1 == b.1);
        match found.len() {
            0 => Err(SpoolError::NotFound {
                id: id.to_string(),
                dir: self.root.clone(),
            }),
            1 => {
                let (state, full) = &found[0];
                self.read_control(&self.control_path(*state, full), *state)
            }
            count => Err(SpoolError::Ambiguous {
                prefix: id.to_string(),
                count,
            }),
        }
    }

    /// The message bytes of `id` (a full id).
    pub fn message(&self, id: &str) -> Result<Vec<u8>, SpoolError> {
        let path = self.data_path(id);
        let mut bytes = fs::read(&path).map_err(|e| {
            if e.kind() == io::ErrorKind::NotFound {
                SpoolError::NotFound {
                    id: id.to_string(),
                    dir: self.root.clone(),
                }
            } else {
                io_err("read", &path)(e)
            }
        })?;
        let header = match split_file(&bytes) {
            Ok((_, message)) => bytes.len() - message.len(),
            Err(reason) => return Err(SpoolError::Corrupt { path, reason }),
        };
        bytes.drain(..header);
        Ok(bytes)
    }

    /// The length of the message in `id`'s file. Reads the header only.
    fn message_len(&self, id: &str) -> io::Result<u64> {
        match read_head(&self.data_path(id))? {
            Head::Message { message_len, .. } => Ok(message_len),
            Head::Other(bytes) => Ok(bytes.len() as u64),
        }
    }

    /// Moves a new or deferred message to `active` for delivery. `Ok(None)` when it is no longer
    /// there (delivered, deleted or claimed meanwhile).
    pub fn claim(&self, id: &str) -> Result<Option<Entry>, SpoolError> {
        let active = self.control_path(State::Active, id);
        for from in [State::New, State::Deferred] {
            let src = self.control_path(from, id);
            match fs::rename(&src, &active) {
                Ok(()) => {
                    return match self.read_control(&active, State::Active) {
                        Ok(e) => Ok(Some(e)),
                        Err(e) => {
                            let _ = self.quarantine(id, &e.to_string());
                            Err(e)
                        }
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io_err("rename", &src)(e)),
            }
        }
        Ok(None)
    }

    /// A delivered message (every recipient done): removes it.
    pub fn complete(&self, id: &str) -> Result<(), SpoolError> {
        // The control record first: a crash after it leaves a message file without a record,
        // which recovery queues again (a duplicate, as for any message in flight at a crash),
        // rather than a record without its message. A message has one record at a time once
        // recovery has run; the states are tried in the order a delivery finds it.
        for state in [State::Active, State::New, State::Deferred, State::Failed] {
            let p = self.control_path(state, id);
            match fs::remove_file(&p) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &p)(e)),
            }
        }
        let data = self.data_path(id);
        match self.recycle(id, &data) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io_err("remove", &data)(e)),
        }
    }

    /// Rewrites `entry` (changed by the caller) into state `to`, removing it from its current
    /// state. Does nothing when the record was deleted meanwhile (`mailgate queue delete`).
    fn transition(&self, entry: &mut Entry, to: State) -> Result<bool, SpoolError> {
        let from = entry.state;
        let old = self.control_path(from, &entry.id);
        if !old.exists() {
            return Ok(false);
        }
        entry.version += 1;
        self.write_control(entry, to, true)?;
        if from != to {
            match fs::remove_file(&old) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => return Err(io_err("remove", &old)(e)),
            }
        }
        entry.state = to;
        Ok(true)
    }

    /// Saves an active message's progress (per-recipient results) without changing its state.
    pub fn update(&self, entry: &mut Entry) -> Result<(), SpoolError> {
        let to = entry.state;
        self.transition(entry, to).map(|_| ())
    }

    /// Puts an active message back for a retry at `next_try` after a temporary failure.
    /// `held` marks a hold (the account needs attention) that does not count against the
    /// maximum age.
    pub fn defer(
        &self,
        entry: &mut Entry,
        next_try: OffsetDateTime,
        error: &str,
        held: Option<&str>,
    ) -> Result<(), SpoolError> {
        if held.is_none() {
            entry.attempts += 1;
        }
        entry.next_try = Some(next_try);
        entry.last_error = Some(error.to_string());
        entry.held = held.map(str::to_string);
        self.transition(entry, State::Deferred).map(|_| ())
    }

    /// Gives up on a message: it moves to `failed/` with `reason`.
    pub fn fail(&self, entry: &mut Entry, reason: &str) -> Result<(), SpoolError> {
        entry.failed_reason = Some(reason.to_string());
        entry.next_try = None;
        self.transition(entry, State::Failed).map(|_| ())
    }

    /// Moves a message whose record cannot be read to `failed/` as it is.
    fn quarantine(&self, id: &str, reason: &str) -> Result<(), SpoolError> {
        tracing::error!(id, reason, "spool: damaged control record moved to failed/");
        for state in [State::New, State::Active, State::Deferred] {
            let p = self.control_path(state, id);
            if p.exists() {
                let dest = self.control_path(State::Failed, id);
                return fs::rename(&p, &dest).map_err(io_err("rename", &p));
            }
        }
        Ok(())
    }

    /// Sends a deferred or failed message (`id` or a unique prefix) again now; failed recipients
    /// become pending again. Returns the full id.
    pub fn retry(&self, id: &str) -> Result<String, SpoolError> {
        let mut entry = self.find(id)?;
        match entry.state {
            State::Active => return Err(SpoolError::Busy { id: entry.id }),
            State::New => return Ok(entry.id),
            State::Deferred | State::Failed => {}
        }
        if entry.state == State::Failed {
            for r in &mut entry.recipients {
                if r.status == RecipientStatus::Failed {
                    r.status = RecipientStatus::Pending;
                }
            }
            entry.age_from = OffsetDateTime::now_utc();
            entry.failed_reason = None;
        }
        entry.next_try = None;
        entry.held = None;
        self.transition(&mut entry, State::New)?;
        Ok(entry.id)
    }

    /// Makes every deferred message due now (held ones too). Returns how many.
    pub fn flush(&self) -> Result<usize, SpoolError> {
        let (entries, _) = self.list_states(&[State::Deferred])?;
        let mut n = 0;
        for mut e in entries {
            e.next_try = None;
            e.held = None;
            if self.transition(&mut e, State::New)? {
                n += 1;
            }
        }
        Ok(n)
    }

    /// Removes a message (`id` or a unique prefix) whatever its state. Returns the full id.
    pub fn delete(&self, id: &str) -> Result<String, SpoolError> {
        let entry = self.find(id)?;
        self.complete(&entry.id)?;
        Ok(entry.id)
    }

    /// Puts the spool in order after a crash; call with the lock held, before delivering.
    /// Active messages go back to `new/` (they will be sent again), old leftovers in `tmp/` are
    /// removed, a message found in two states keeps its newest record, a record whose message
    /// file is missing or short moves to `failed/`, a message file whose record was lost gets
    /// it back from its header, and old message files that have neither are removed. Returns
    /// what was done, for the log.
    pub fn recover(&self, _lock: &SpoolLock) -> Result<Recovery, SpoolError> {
        let mut report = Recovery::default();
        let now = std::time::SystemTime::now();
        let is_old = |item: &fs::DirEntry| {
            item.metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| now.duration_since(t).ok())
                .is_some_and(|age| age >= ORPHAN_GRACE)
        };
        // Young files in tmp/ may be an enqueue in progress in another process.
        for item in fs::read_dir(&self.tmp).map_err(io_err("list", &self.tmp))? {
            let item = item.map_err(io_err("list", &self.tmp))?;
            if is_old(&item) {
                let _ = fs::remove_file(item.path());
            }
        }
        // Newest record of each id across states.
        let mut seen: HashMap<String, Entry> = HashMap::new();
        for state in State::ALL {
            for id in self.ids_in(state)? {
                let path = self.control_path(state, &id);
                let entry = match self.read_control(&path, state) {
                    Ok(e) => e,
                    Err(SpoolError::Corrupt { reason, .. }) => {
                        // A record is fsynced before it is renamed into place, so a damaged one
                        // was never acknowledged... unless the disk lies. Keep it in failed/.
                        report.damaged.push(format!("{id}: {reason}"));
                        if state != State::Failed {
                            let _ = self.quarantine(&id, &reason);
                        }
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                match seen.get(&id) {
                    Some(other) if other.version >= entry.version => {
                        let _ = fs::remove_file(&path);
                        report.duplicates_resolved += 1;
                    }
                    Some(other) => {
                        let _ = fs::remove_file(self.control_path(other.state, &id));
                        report.duplicates_resolved += 1;
                        seen.insert(id, entry);
                    }
                    None => {
                        seen.insert(id, entry);
                    }
                }
            }
        }
        for (id, entry) in seen.iter_mut() {
            let state = entry.state;
            let path = self.control_path(state, id);
            let data = self.message_len(id);
            let intact = matches!(&data, Ok(n) if *n == entry.size);
            if !intact && state != State::Failed {
                let why = match data {
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {
                        "its message file is missing".to_string()
                    }
                    Err(e) => format!("its message file cannot be read: {e}"),
                    Ok(n) => format!("its message file has {n} bytes, {} expected", entry.size),
                };
                tracing::error!(id = %id, "spool: {why}; moved to failed/");
                entry.failed_reason = Some(format!("damaged in the spool: {why}"));
                self.transition(entry, State::Failed)?;
                report.damaged.push(format!("{id}: {why}"));
                continue;
            }
            if state == State::Active {
                fs::rename(&path, self.control_path(State::New, id))
                    .map_err(io_err("rename", &path))?;
                report.requeued.push(id.clone());
            }
        }
        report.requeued.sort();
        // Message files with no record: the record of a message that was acknowledged but whose
        // record had not reached the disk (rebuilt from the file's header), or a file of an
        // earlier version whose enqueue died before its commit point (removed when old).
        for item in fs::read_dir(&self.data).map_err(io_err("list", &self.data))? {
            let item = item.map_err(io_err("list", &self.data))?;
            let name = item.file_name();
            let Some(id) = name.to_str().and_then(|n| n.strip_suffix(".eml")) else {
                continue;
            };
            if seen.contains_key(id) {
                continue;
            }
            let path = item.path();
            let bytes = fs::read(&path).map_err(io_err("read", &path))?;
            match split_file(&bytes) {
                Ok((Some(json), message)) => match serde_json::from_slice::<Entry>(json) {
                    Ok(mut entry) if entry.id == id && entry.size == message.len() as u64 => {
                        entry.state = State::New;
                        self.write_control(&entry, State::New, true)?;
                        report.restored.push(id.to_string());
                    }
                    _ => {
                        tracing::error!(id, "spool: a message file with a damaged header");
                        report.damaged.push(format!("{id}: its header is damaged"));
                    }
                },
                // Written by an earlier version whose enqueue died before its commit point,
                // or by one in progress in another process when it is young.
                Ok((None, _)) => {
                    if is_old(&item) {
                        let _ = fs::remove_file(&path);
                        report.orphans_removed += 1;
                    }
                }
                // Cut short or not matching its checksum: its syncs never finished, so it was
                // never acknowledged.
                Err(reason) => {
                    tracing::info!(
                        id,
                        "spool: removed a message that was never accepted: {reason}"
                    );
                    let _ = fs::remove_file(&path);
                    report.orphans_removed += 1;
                }
            }
        }
        report.restored.sort();
        sync_dir(&self.state_dir(State::New)).map_err(io_err("sync", &self.root))?;
        Ok(report)
    }
}

/// What [`Spool::recover`] did.
#[derive(Clone, Debug, Default)]
pub struct Recovery {
    /// Messages that were being delivered when the last process stopped; they are sent again.
    pub requeued: Vec<String>,
    /// Messages whose record had not reached the disk, queued again from their message file.
    pub restored: Vec<String>,
    /// Records found in two states (a crash between two steps of a state change).
    pub duplicates_resolved: usize,
    /// Damaged records or missing message files (moved to `failed/`).
    pub damaged: Vec<String>,
    /// Old message files without a record or header removed (enqueues of an earlier version
    /// that never completed).
    pub orphans_removed: usize,
}

fn create_private_dir(dir: &Path) -> Result<(), SpoolError> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        match fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
        {
            Ok(()) => Ok(()),
            Err(e) => Err(io_err("create directory", dir)(e)),
        }
    }
    #[cfg(not(unix))]
    {
        fs::create_dir_all(dir).map_err(io_err("create directory", dir))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env() -> Envelope {
        Envelope::new("scanner@contoso.com", vec!["bob@contoso.com".into()])
    }

    #[test]
    fn ids_are_unique_and_sorted_by_time() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let a = spool.enqueue(&env(), b"a").unwrap();
        std::thread::sleep(Duration::from_millis(2));
        let b = spool.enqueue(&env(), b"b").unwrap();
        assert!(a < b, "{a} < {b}");
        assert_eq!(a.len(), 16);
    }

    #[test]
    fn ids_do_not_repeat_within_a_millisecond() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let ids: std::collections::HashSet<String> = (0..100_000).map(|_| spool.new_id()).collect();
        assert_eq!(ids.len(), 100_000);
    }

    #[test]
    fn message_file_headers_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let id = spool.enqueue(&env(), b"Subject: x\r\n\r\nbody").unwrap();
        let file = fs::read(spool.data_path(&id)).unwrap();
        assert!(file.starts_with(HEADER_MAGIC));
        let (json, message) = split_file(&file).unwrap();
        assert_eq!(message, b"Subject: x\r\n\r\nbody");
        let entry: Entry = serde_json::from_slice(json.unwrap()).unwrap();
        assert_eq!(entry.id, id);
        assert_eq!(spool.message_len(&id).unwrap(), message.len() as u64);
        // Any cut inside the header is noticed, never read as a message.
        let header_len = file.len() - message.len();
        for cut in HEADER_MAGIC.len()..header_len {
            assert!(split_file(&file[..cut]).is_err(), "cut at {cut}");
        }
        assert!(split_file(b"mailgate-spool-1 x\n{}\n").is_err());
        assert!(split_file(b"mailgate-spool-1 99 00000000\n{}\nbody").is_err());
        // A message cut short, or whose bytes changed, does not match its checksum.
        assert!(split_file(&file[..file.len() - 1]).is_err());
        let mut damaged = file.clone();
        let last = damaged.len() - 1;
        damaged[last] ^= 0x20;
        let err = split_file(&damaged).unwrap_err();
        assert!(err.contains("checksum"), "{err}");
        fs::write(spool.data_path(&id), &damaged).unwrap();
        assert!(matches!(
            spool.message(&id),
            Err(SpoolError::Corrupt { .. })
        ));
    }

    #[test]
    fn defer_then_claim_keeps_progress() {
        let dir = tempfile::tempdir().unwrap();
        let spool = Spool::open(dir.path()).unwrap();
        let mut e = Envelope::new("a@x", vec!["b@x".into(), "c@x".into()]);
        e.account = Some("work".into());
        let id = spool.enqueue(&e, b"hello").unwrap();
        let mut entry = spool.claim(&id).unwrap().unwrap();
        entry.set_recipient("B@x", RecipientStatus::Delivered, Some("250 ok".into()));
        spool
            .defer(&mut entry, OffsetDateTime::now_utc(), "451 try later", None)
            .unwrap();
        let again = spool.claim(&id).unwrap().unwrap();
        assert_eq!(again.attempts, 1);
        assert_eq!(
            again
                .pending()
                .map(|r| r.address.as_str())
                .collect::<Vec<_>>(),
            ["c@x"]
        );
        assert_eq!(again.version, 2);
    }
}
