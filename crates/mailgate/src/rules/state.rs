//! What a rule remembers between scans and across restarts, under `STATE_DIR/rules/NAME/`:
//!
//! - `lock`: held (advisory lock) while a process runs the rule, so that a cron job and a
//!   foreground `mailgate rules run` never move the same file twice;
//! - `inflight.json`: the transfer in progress (written before a file is touched, removed when
//!   it is done), so that after a crash the next run can finish or undo it;
//! - `pending.jsonl`: files transferred but not yet reported in an On Success mail;
//! - `copied.jsonl`: for `action = "copy"`, the files already copied (size and modification
//!   time), so that a file is copied again only when it changes;
//! - `status.json`: when the rule last took a file (for On No Files) and which failures were
//!   already mailed.
//!
//! Every file that matters is written with fsync (and renamed into place when it is replaced).

use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use super::events::Transferred;
use crate::sysexits::{HasSysexit, Sysexit};

/// Why a rule's state could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StateError {
    #[error("rule state {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "rule {rule} is being run by another mailgate process (lock {path}); it is skipped this time"
    )]
    Locked { rule: String, path: PathBuf },
    #[error("rule state {path} is damaged ({message}); move it away to start the rule afresh")]
    Corrupt { path: PathBuf, message: String },
}

impl HasSysexit for StateError {
    fn sysexit(&self) -> Sysexit {
        match self {
            StateError::Locked { .. } => Sysexit::TempFail,
            StateError::Io { .. } => Sysexit::CantCreat,
            StateError::Corrupt { .. } => Sysexit::DataErr,
        }
    }
}

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> StateError + '_ {
    move |source| StateError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// A file's size and modification time: a copied file is copied again when this changes, and a
/// file is stable when this stays the same for `min_age`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Stamp {
    pub size: u64,
    /// Modification time in nanoseconds since the Unix epoch.
    pub mtime_ns: i64,
}

impl Stamp {
    /// The stamp of `meta`.
    pub fn of(meta: &std::fs::Metadata) -> Stamp {
        Stamp {
            size: meta.len(),
            mtime_ns: meta.modified().map(system_ns).unwrap_or(0),
        }
    }

    /// The modification time.
    pub fn mtime(&self) -> SystemTime {
        if self.mtime_ns >= 0 {
            UNIX_EPOCH + Duration::from_nanos(self.mtime_ns as u64)
        } else {
            UNIX_EPOCH - Duration::from_nanos(self.mtime_ns.unsigned_abs())
        }
    }
}

/// `t` in nanoseconds since the Unix epoch (saturating).
pub fn system_ns(t: SystemTime) -> i64 {
    match t.duration_since(UNIX_EPOCH) {
        Ok(d) => i64::try_from(d.as_nanos()).unwrap_or(i64::MAX),
        Err(e) => -i64::try_from(e.duration().as_nanos()).unwrap_or(i64::MAX),
    }
}

/// The transfer in progress, as recorded before the source is touched.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Inflight {
    pub source: PathBuf,
    /// The final destination name.
    pub destination: PathBuf,
    /// The temporary file a copy is written to, when copying.
    pub temp: Option<PathBuf>,
    pub stamp: Stamp,
    /// `true` for move, `false` for copy.
    pub remove_source: bool,
}

/// What `status.json` holds.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Status {
    /// When the rule was first run (ms since the epoch): On No Files counts from here until a file
    /// is taken.
    pub watching_since_ms: Option<i64>,
    /// When the rule last took a file.
    pub last_file_ms: Option<i64>,
    /// When On No Files last mailed.
    pub no_files_mailed_ms: Option<i64>,
    /// Failures already mailed (path → error), so that a file that keeps failing the same way is
    /// mailed once, not at every scan. A failure is mailed again after it went away.
    pub mailed_failures: BTreeMap<String, String>,
}

/// Milliseconds since the epoch for `t`.
pub fn system_ms(t: SystemTime) -> i64 {
    system_ns(t) / 1_000_000
}

/// `ms` since the epoch as a time.
pub fn ms_time(ms: i64) -> SystemTime {
    if ms >= 0 {
        UNIX_EPOCH + Duration::from_millis(ms as u64)
    } else {
        UNIX_EPOCH - Duration::from_millis(ms.unsigned_abs())
    }
}

/// The state folder of rule `rule` under `state_dir`.
pub fn rule_dir(state_dir: &Path, rule: &str) -> PathBuf {
    state_dir.join("rules").join(rule)
}

/// One rule's state folder, locked for this process while the value lives.
#[derive(Debug)]
pub struct RuleState {
    dir: PathBuf,
    _lock: File,
}

impl RuleState {
    /// Creates (if needed) and locks the state folder of `rule`. Fails with
    /// [`StateError::Locked`] when another process holds it.
    pub fn open(state_dir: &Path, rule: &str) -> Result<RuleState, StateError> {
        let dir = rule_dir(state_dir, rule);
        std::fs::create_dir_all(&dir).map_err(io(&dir))?;
        let lock_path = dir.join("lock");
        let lock = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(io(&lock_path))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                return Err(StateError::Locked {
                    rule: rule.to_string(),
                    path: lock_path,
                })
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(io(&lock_path)(e)),
        }
        Ok(RuleState { dir, _lock: lock })
    }

    /// The folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Reads `status.json` (empty when there is none yet).
    pub fn status(&self) -> Result<Status, StateError> {
        read_status(&self.dir)
    }

    /// Replaces `status.json`.
    pub fn save_status(&self, status: &Status) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(status).expect("status serializes");
        write_atomic(&self.dir.join("status.json"), &bytes)
    }

    /// Records the transfer about to start.
    pub fn begin(&self, inflight: &Inflight) -> Result<(), StateError> {
        let bytes = serde_json::to_vec_pretty(inflight).expect("journal serializes");
        write_atomic(&self.dir.join("inflight.json"), &bytes)
    }

    /// The transfer a previous run left unfinished, if any.
    pub fn unfinished(&self) -> Result<Option<Inflight>, StateError> {
        let path = self.dir.join("inflight.json");
        match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice(&bytes)
                    .map(Some)
                    .map_err(|e| StateError::Corrupt {
                        path,
                        message: e.to_string(),
                    })
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Forgets the transfer in progress: it is complete (or undone).
    pub fn end(&self) -> Result<(), StateError> {
        let path = self.dir.join("inflight.json");
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(io(&self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Adds a transferred file to the ones the next On Success mail reports.
    pub fn add_pending(&self, t: &Transferred) -> Result<(), StateError> {
        append_line(&self.dir.join("pending.jsonl"), t)
    }

    /// The transferred files not yet reported (each destination once).
    pub fn pending(&self) -> Result<Vec<Transferred>, StateError> {
        let mut seen = std::collections::HashSet::new();
        let all: Vec<Transferred> = read_lines(&self.dir.join("pending.jsonl"))?;
        Ok(all
            .into_iter()
            .filter(|t| seen.insert(t.destination.clone()))
            .collect())
    }

    /// Forgets the reported files.
    pub fn clear_pending(&self) -> Result<(), StateError> {
        let path = self.dir.join("pending.jsonl");
        match std::fs::remove_file(&path) {
            Ok(()) => sync_dir(&self.dir).map_err(io(&self.dir)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(io(&path)(e)),
        }
    }

    /// Files already copied (copy rules), by source path.
    pub fn copied(&self) -> Result<HashMap<PathBuf, Stamp>, StateError> {
        read_copied(&self.dir)
    }

    /// Records that `source` was copied as it was at `stamp`.
    pub fn add_copied(&self, source: &Path, stamp: Stamp) -> Result<(), StateError> {
        append_line(
            &self.dir.join("copied.jsonl"),
            &CopiedEntry {
                source: source.to_path_buf(),
                stamp,
            },
        )
    }

    /// Rewrites the copy history with `entries` only (sources that still exist).
    pub fn rewrite_copied(&self, entries: &HashMap<PathBuf, Stamp>) -> Result<(), StateError> {
        let mut sorted: Vec<_> = entries.iter().collect();
        sorted.sort_by(|a, b| a.0.cmp(b.0));
        let mut out = Vec::new();
        for (source, stamp) in sorted {
            let line = serde_json::to_string(&CopiedEntry {
                source: source.clone(),
                stamp: *stamp,
            })
            .expect("entry serializes");
            out.extend_from_slice(line.as_bytes());
            out.push(b'\n');
        }
        write_atomic(&self.dir.join("copied.jsonl"), &out)
    }
}

#[derive(Serialize, Deserialize)]
struct CopiedEntry {
    source: PathBuf,
    stamp: Stamp,
}

/// Reads a rule's `status.json` without locking or creating anything (for `rules check`).
pub fn read_status(dir: &Path) -> Result<Status, StateError> {
    let path = dir.join("status.json");
    match std::fs::read(&path) {
        Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Corrupt {
            path,
            message: e.to_string(),
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Status::default()),
        Err(e) => Err(io(&path)(e)),
    }
}

/// Reads a rule's copy history without locking or creating anything.
pub fn read_copied(dir: &Path) -> Result<HashMap<PathBuf, Stamp>, StateError> {
    let entries: Vec<CopiedEntry> = read_lines(&dir.join("copied.jsonl"))?;
    Ok(entries.into_iter().map(|e| (e.source, e.stamp)).collect())
}

/// Reads JSON lines; a damaged last line (a crash while appending) is ignored, a damaged line in
/// the middle is an error.
fn read_lines<T: serde::de::DeserializeOwned>(path: &Path) -> Result<Vec<T>, StateError> {
    let file = match File::open(path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(io(path)(e)),
    };
    let lines: Vec<String> = BufReader::new(file)
        .lines()
        .collect::<Result<_, _>>()
        .map_err(io(path))?;
    let mut out = Vec::new();
    let last = lines.len().saturating_sub(1);
    for (i, line) in lines.iter().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        match serde_json::from_str(line) {
            Ok(v) => out.push(v),
            Err(_) if i == last => {}
            Err(e) => {
                return Err(StateError::Corrupt {
                    path: path.to_path_buf(),
                    message: format!("line {}: {e}", i + 1),
                })
            }
        }
    }
    Ok(out)
}

fn append_line<T: Serialize>(path: &Path, value: &T) -> Result<(), StateError> {
    let mut line = serde_json::to_string(value).expect("state serializes");
    line.push('\n');
    let mut f = OpenOptions::new()
        .create(true)
        .append(true)
        .read(true)
        .open(path)
        .map_err(io(path))?;
    drop_torn_tail(&mut f).map_err(io(path))?;
    f.write_all(line.as_bytes()).map_err(io(path))?;
    f.sync_data().map_err(io(path))
}

/// A crash while appending may have left a partial last line: cut it off, so that the next line
/// starts clean (the partial record was never acted upon).
fn drop_torn_tail(f: &mut File) -> std::io::Result<()> {
    use std::io::{Read, Seek, SeekFrom};
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(());
    }
    let mut last = [0u8; 1];
    f.seek(SeekFrom::Start(len - 1))?;
    f.read_exact(&mut last)?;
    if last[0] == b'\n' {
        return Ok(());
    }
    let mut content = Vec::new();
    f.seek(SeekFrom::Start(0))?;
    f.read_to_end(&mut content)?;
    let keep = content
        .iter()
        .rposition(|b| *b == b'\n')
        .map_or(0, |i| i + 1);
    f.set_len(keep as u64)
}

/// Writes `bytes` to `path` so that a crash leaves the old or the new content: a temporary file
/// in the same folder, fsync, rename, fsync of the folder.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StateError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    let tmp = dir.join(format!(
        ".{}.tmp-{}",
        path.file_name()
            .map(|n| n.to_string_lossy())
            .unwrap_or_default(),
        std::process::id()
    ));
    let write = || -> std::io::Result<()> {
        let mut f = File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        sync_dir(dir)
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        io(path)(e)
    })
}

/// Makes a folder's entries (a rename, a new or removed file) durable. A no-op where folders
/// cannot be opened (Windows, where NTFS journals metadata).
pub fn sync_dir(dir: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        File::open(dir)?.sync_all()
    }
    #[cfg(not(unix))]
    {
        let _ = dir;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_process_cannot_take_the_rule() {
        let dir = tempfile::tempdir().unwrap();
        let first = RuleState::open(dir.path(), "r").unwrap();
        let err = RuleState::open(dir.path(), "r").unwrap_err();
        assert!(matches!(err, StateError::Locked { .. }), "{err}");
        drop(first);
        RuleState::open(dir.path(), "r").unwrap();
    }

    #[test]
    fn pending_survives_a_torn_last_line() {
        let dir = tempfile::tempdir().unwrap();
        let st = RuleState::open(dir.path(), "r").unwrap();
        let t = Transferred {
            source: "/in/a.pdf".into(),
            destination: "/out/a.pdf".into(),
            size: 3,
        };
        st.add_pending(&t).unwrap();
        // A crash in the middle of the next append.
        let path = st.dir().join("pending.jsonl");
        let mut f = OpenOptions::new().append(true).open(&path).unwrap();
        f.write_all(b"{\"source\":\"/in/b").unwrap();
        assert_eq!(st.pending().unwrap(), vec![t.clone()]);
        let t2 = Transferred {
            destination: "/out/b.pdf".into(),
            ..t.clone()
        };
        st.add_pending(&t2).unwrap();
        st.add_pending(&t2).unwrap();
        assert_eq!(st.pending().unwrap(), vec![t, t2]);
        st.clear_pending().unwrap();
        assert!(st.pending().unwrap().is_empty());
    }

    #[test]
    fn journal_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        let st = RuleState::open(dir.path(), "r").unwrap();
        assert_eq!(st.unfinished().unwrap(), None);
        let j = Inflight {
            source: "/in/a".into(),
            destination: "/out/a".into(),
            temp: Some("/out/.tmp".into()),
            stamp: Stamp {
                size: 1,
                mtime_ns: -5,
            },
            remove_source: true,
        };
        st.begin(&j).unwrap();
        assert_eq!(st.unfinished().unwrap(), Some(j));
        st.end().unwrap();
        assert_eq!(st.unfinished().unwrap(), None);
    }
}
