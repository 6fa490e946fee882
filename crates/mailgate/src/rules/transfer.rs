//! Moving and copying one file so that a crash at any moment leaves either the source or a
//! complete destination file: never a truncated file, never neither.
//!
//! - Same file system, `move`: the file is renamed (`overwrite`) or hard-linked under its new
//!   name and then unlinked (`skip`/`rename`, because a link never replaces an existing name, so
//!   two writers cannot both get `name (1).pdf`). Nothing is copied.
//! - Otherwise: the data is copied into `.mailgate-part-RULE-ID` in the destination folder,
//!   fsynced, checked against the source (size and modification time unchanged), given the
//!   source's modification time and permissions, renamed or linked to its final name, the folder
//!   is fsynced, and only then is the source removed.
//!
//! Before anything is touched the transfer is written to the rule's journal
//! ([`super::state::Inflight`]); [`recover`] finishes or undoes what a crash interrupted. A file
//! that vanished, is locked or cannot be read is a [`TransferError`] for this file only: the rule
//! goes on with the next one.

use std::ffi::{OsStr, OsString};
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use super::config::{Action, Conflict};
use super::events::Transferred;
use super::state::{sync_dir, Inflight, RuleState, Stamp, StateError};

/// The prefix of the temporary files a copy is written to; scans never take such a file.
pub const TEMP_PREFIX: &str = ".mailgate-part-";

const CHUNK: usize = 1 << 20;

/// Why one file could not be transferred. The file stays where it was.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TransferError {
    /// The file disappeared between the scan and the transfer.
    #[error("it vanished before it could be taken: {source}")]
    Vanished { path: PathBuf, source: io::Error },
    /// The file cannot be opened or read (permissions, a lock, a broken link, an I/O error).
    #[error("cannot read it: {source}")]
    Read { path: PathBuf, source: io::Error },
    /// Not a regular file (a FIFO, a socket, a device): never opened, because reading a FIFO
    /// would block the rule.
    #[error("it is not a regular file ({kind}); only regular files are transferred")]
    NotAFile { path: PathBuf, kind: &'static str },
    /// It was still being written: it changed while it was copied. Taken again when stable.
    #[error("it changed while it was being copied (still being written?); it is taken again when it is stable")]
    Changed { path: PathBuf },
    /// The destination folder cannot be created.
    #[error("cannot create the destination folder {dir}: {source}{hint}")]
    CreateDir {
        dir: PathBuf,
        source: io::Error,
        hint: String,
    },
    /// Writing the copy failed (disk full, permissions, I/O error).
    #[error("cannot write {path}: {source}")]
    Write { path: PathBuf, source: io::Error },
    /// The file could not be put under its final name.
    #[error("cannot put it at {path}: {source}")]
    Place { path: PathBuf, source: io::Error },
    /// The copy is complete but the source could not be removed.
    #[error("{done}, but the source cannot be removed: {source}")]
    RemoveSource {
        path: PathBuf,
        done: String,
        source: io::Error,
    },
    /// The run was asked to stop; the partial copy was removed and the source left alone.
    #[error("interrupted; the source is untouched")]
    Interrupted { path: PathBuf },
    /// The rule's journal could not be written, so the file was not touched.
    #[error(transparent)]
    State(#[from] StateError),
}

impl TransferError {
    /// Whether the whole rule should stop (its state folder is unusable), rather than only this
    /// file being skipped.
    pub fn is_fatal(&self) -> bool {
        matches!(
            self,
            TransferError::State(_) | TransferError::Interrupted { .. }
        )
    }
}

/// What happened to a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    /// It is at `destination` (its final name) now.
    Done {
        destination: PathBuf,
        size: u64,
        /// Renamed/linked within one file system, or copied.
        copied: bool,
    },
    /// `conflict = "skip"` and `existing` is already there: nothing was done.
    Skipped { existing: PathBuf },
}

/// Receives the progress of large copies (for a progress bar). Every method has a no-op default.
pub trait Progress {
    /// A copy of `size` bytes from `source` starts.
    fn start(&self, source: &Path, size: u64) {
        let _ = (source, size);
    }
    /// `bytes` more were copied.
    fn advance(&self, bytes: u64) {
        let _ = bytes;
    }
    /// The copy ended (done or not).
    fn finish(&self) {}
}

/// A [`Progress`] that shows nothing.
pub struct NoProgress;
impl Progress for NoProgress {}

/// One file to transfer.
#[derive(Clone, Debug)]
pub struct Job<'a> {
    /// The rule's name (part of temporary file names).
    pub rule: &'a str,
    pub source: &'a Path,
    /// The destination folder (created when missing).
    pub dest_dir: &'a Path,
    pub file_name: &'a OsStr,
    pub action: Action,
    pub conflict: Conflict,
    /// The size and modification time the scan found stable; a file that differs now is left
    /// for the next scan.
    pub expected: Stamp,
}

/// Transfers one file. On success the file is recorded in the rule's state (to be reported, and
/// for copies, not to be copied again) before the journal entry is removed.
pub fn transfer(
    job: &Job<'_>,
    state: &RuleState,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Outcome, TransferError> {
    let source = job.source;
    let meta = fs::metadata(source).map_err(|e| read_error(source, e))?;
    if !meta.is_file() {
        return Err(TransferError::NotAFile {
            path: source.to_path_buf(),
            kind: file_kind(&meta),
        });
    }
    let is_link = fs::symlink_metadata(source)
        .map(|m| m.file_type().is_symlink())
        .unwrap_or(false);
    let stamp = Stamp::of(&meta);
    if stamp != job.expected {
        return Err(TransferError::Changed {
            path: source.to_path_buf(),
        });
    }
    create_dest_dir(job.dest_dir)?;
    let Some(target) = free_name(job.dest_dir, job.file_name, job.conflict)
        .map_err(|e| place_error(job.dest_dir, e))?
    else {
        return Ok(Outcome::Skipped {
            existing: job.dest_dir.join(job.file_name),
        });
    };

    if job.action == Action::Move && !is_link {
        match move_in_place(job, state, stamp, target.clone())? {
            FastPath::Done(outcome) => return Ok(outcome),
            FastPath::NeedsCopy => {}
        }
    }
    copy_then_place(job, state, stamp, target, progress, stop)
}

enum FastPath {
    Done(Outcome),
    /// Another file system (or one without hard links): copy instead.
    NeedsCopy,
}

fn move_in_place(
    job: &Job<'_>,
    state: &RuleState,
    stamp: Stamp,
    mut target: PathBuf,
) -> Result<FastPath, TransferError> {
    let source = job.source;
    loop {
        state.begin(&Inflight {
            source: source.to_path_buf(),
            destination: target.clone(),
            temp: None,
            stamp,
            remove_source: true,
        })?;
        let placed = if job.conflict == Conflict::Overwrite {
            fs::rename(source, &target)
        } else {
            fs::hard_link(source, &target)
        };
        match placed {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                // Someone created the name since we looked: take the next one.
                state.end()?;
                match next_free(job, &target)? {
                    Some(t) => target = t,
                    None => return Ok(FastPath::Done(Outcome::Skipped { existing: target })),
                }
            }
            Err(e) if needs_copy(&e) => {
                state.end()?;
                return Ok(FastPath::NeedsCopy);
            }
            Err(e) => {
                state.end()?;
                return Err(classify_place_error(source, &target, e));
            }
        }
    }
    if job.conflict != Conflict::Overwrite {
        match fs::remove_file(source) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                // Undo the link: the file stays only in the source, as before.
                let _ = fs::remove_file(&target);
                state.end()?;
                return Err(TransferError::RemoveSource {
                    path: source.to_path_buf(),
                    done: "it was linked into the destination (now undone)".into(),
                    source: e,
                });
            }
        }
    }
    sync_dir(job.dest_dir).map_err(|e| place_error(&target, e))?;
    if let Some(parent) = source.parent() {
        let _ = sync_dir(parent);
    }
    finish(job, state, &target, stamp)?;
    Ok(FastPath::Done(Outcome::Done {
        destination: target,
        size: stamp.size,
        copied: false,
    }))
}

fn copy_then_place(
    job: &Job<'_>,
    state: &RuleState,
    stamp: Stamp,
    mut target: PathBuf,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<Outcome, TransferError> {
    let source = job.source;
    let temp = job.dest_dir.join(format!(
        "{TEMP_PREFIX}{}-{}",
        job.rule,
        uuid::Uuid::new_v4().simple()
    ));
    let journal = |target: &Path| Inflight {
        source: source.to_path_buf(),
        destination: target.to_path_buf(),
        temp: Some(temp.clone()),
        stamp,
        remove_source: job.action == Action::Move,
    };
    state.begin(&journal(&target))?;
    progress.start(source, stamp.size);
    let copied = copy_to_temp(source, &temp, stamp, progress, stop);
    progress.finish();
    if let Err(e) = copied {
        let _ = fs::remove_file(&temp);
        state.end()?;
        return Err(e);
    }
    // Place the complete, fsynced copy under its final name.
    loop {
        let placed = if job.conflict == Conflict::Overwrite {
            fs::rename(&temp, &target)
        } else {
            match fs::hard_link(&temp, &target) {
                Ok(()) => fs::remove_file(&temp),
                Err(e) if needs_copy(&e) => {
                    // No hard links here (FAT, some network shares): check, then rename. A
                    // writer racing us for the same name is the only (tiny) risk left.
                    if fs::symlink_metadata(&target).is_ok() {
                        Err(io::Error::from(io::ErrorKind::AlreadyExists))
                    } else {
                        fs::rename(&temp, &target)
                    }
                }
                Err(e) => Err(e),
            }
        };
        match placed {
            Ok(()) => break,
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => match next_free(job, &target)? {
                Some(t) => {
                    target = t;
                    state.begin(&journal(&target))?;
                }
                None => {
                    let _ = fs::remove_file(&temp);
                    state.end()?;
                    return Ok(Outcome::Skipped { existing: target });
                }
            },
            Err(e) => {
                let _ = fs::remove_file(&temp);
                state.end()?;
                return Err(classify_place_error(source, &target, e));
            }
        }
    }
    sync_dir(job.dest_dir).map_err(|e| place_error(&target, e))?;
    if job.action == Action::Move {
        match fs::remove_file(source) {
            Ok(()) => {
                if let Some(parent) = source.parent() {
                    let _ = sync_dir(parent);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => {
                let done = if job.conflict == Conflict::Overwrite {
                    // The old destination file is already replaced: keep the new copy; taking
                    // the source again later overwrites it with the same content.
                    format!("it was copied to {}", target.display())
                } else {
                    let _ = fs::remove_file(&target);
                    let _ = sync_dir(job.dest_dir);
                    "it was copied (the copy was removed again)".to_string()
                };
                state.end()?;
                return Err(TransferError::RemoveSource {
                    path: source.to_path_buf(),
                    done,
                    source: e,
                });
            }
        }
    }
    finish(job, state, &target, stamp)?;
    Ok(Outcome::Done {
        destination: target,
        size: stamp.size,
        copied: true,
    })
}

/// Records the transferred file, then closes the journal entry.
fn finish(job: &Job<'_>, state: &RuleState, target: &Path, stamp: Stamp) -> Result<(), StateError> {
    if job.action == Action::Copy {
        state.add_copied(job.source, stamp)?;
    }
    state.add_pending(&Transferred {
        source: job.source.to_path_buf(),
        destination: target.to_path_buf(),
        size: stamp.size,
    })?;
    state.end()
}

fn copy_to_temp(
    source: &Path,
    temp: &Path,
    stamp: Stamp,
    progress: &dyn Progress,
    stop: &AtomicBool,
) -> Result<(), TransferError> {
    let mut input = File::open(source).map_err(|e| read_error(source, e))?;
    let in_meta = input.metadata().map_err(|e| read_error(source, e))?;
    let write_err = |e| TransferError::Write {
        path: temp.to_path_buf(),
        source: e,
    };
    let mut output = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(temp)
        .map_err(write_err)?;
    let mut buf = vec![0u8; CHUNK];
    let mut total = 0u64;
    loop {
        if stop.load(Ordering::Relaxed) {
            return Err(TransferError::Interrupted {
                path: source.to_path_buf(),
            });
        }
        let n = match input.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(read_error(source, e)),
        };
        output.write_all(&buf[..n]).map_err(write_err)?;
        total += n as u64;
        progress.advance(n as u64);
    }
    // A writer still at work shows up as a size or time that moved under us.
    let now = input
        .metadata()
        .map(|m| Stamp::of(&m))
        .map_err(|e| read_error(source, e))?;
    if total != stamp.size || now != stamp {
        return Err(TransferError::Changed {
            path: source.to_path_buf(),
        });
    }
    output
        .set_permissions(in_meta.permissions())
        .map_err(write_err)?;
    output
        .set_times(fs::FileTimes::new().set_modified(stamp.mtime()))
        .map_err(write_err)?;
    output.sync_all().map_err(write_err)
}

/// Finishes or undoes the transfer a crashed run left in the journal. Returns the file when the
/// transfer turned out complete (it is then recorded as transferred).
pub fn recover(state: &RuleState) -> Result<Option<Transferred>, StateError> {
    let Some(j) = state.unfinished()? else {
        return Ok(None);
    };
    if let Some(temp) = &j.temp {
        match fs::remove_file(temp) {
            Ok(()) => {
                if let Some(dir) = temp.parent() {
                    let _ = sync_dir(dir);
                }
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!("cannot remove the partial copy {}: {e}", temp.display()),
        }
    }
    let source_there = fs::symlink_metadata(&j.source).is_ok();
    let dest_size = fs::metadata(&j.destination)
        .ok()
        .filter(|m| m.is_file())
        .map(|m| m.len());
    let done = match (source_there, dest_size) {
        // Both names exist: complete only when the destination holds the same bytes.
        (true, Some(_)) => same_content(&j.source, &j.destination).unwrap_or(false),
        // The source is gone: a move got as far as removing it. A final name only ever appears
        // with complete content, so the destination is the file.
        (false, Some(size)) => size == j.stamp.size,
        _ => false,
    };
    let mut recovered = None;
    if done {
        if j.remove_source && source_there {
            match fs::remove_file(&j.source) {
                Ok(()) => {
                    if let Some(parent) = j.source.parent() {
                        let _ = sync_dir(parent);
                    }
                }
                Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                Err(e) => {
                    // Leave both: the next scan takes the source again (no data is lost).
                    tracing::warn!(
                        "interrupted move of {}: the destination {} is complete but the source \
                         cannot be removed: {e}",
                        j.source.display(),
                        j.destination.display()
                    );
                    state.end()?;
                    return Ok(None);
                }
            }
        }
        if !j.remove_source {
            state.add_copied(&j.source, j.stamp)?;
        }
        let t = Transferred {
            source: j.source.clone(),
            destination: j.destination.clone(),
            size: j.stamp.size,
        };
        state.add_pending(&t)?;
        recovered = Some(t);
    }
    state.end()?;
    Ok(recovered)
}

fn same_content(a: &Path, b: &Path) -> io::Result<bool> {
    let (mut fa, mut fb) = (File::open(a)?, File::open(b)?);
    if fa.metadata()?.len() != fb.metadata()?.len() {
        return Ok(false);
    }
    let (mut ba, mut bb) = (vec![0u8; 64 * 1024], vec![0u8; 64 * 1024]);
    loop {
        let n = read_full(&mut fa, &mut ba)?;
        let m = read_full(&mut fb, &mut bb)?;
        if n != m || ba[..n] != bb[..m] {
            return Ok(false);
        }
        if n == 0 {
            return Ok(true);
        }
    }
}

fn read_full(f: &mut File, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match f.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// The name the file gets in `dir`: its own name when free (or when overwriting), else `None`
/// for `skip`, else the first free `name (N).ext`.
pub fn free_name(dir: &Path, name: &OsStr, conflict: Conflict) -> io::Result<Option<PathBuf>> {
    let target = dir.join(name);
    if !exists(&target)? || conflict == Conflict::Overwrite {
        return Ok(Some(target));
    }
    if conflict == Conflict::Skip {
        return Ok(None);
    }
    for n in 1u32.. {
        let candidate = dir.join(numbered(name, n));
        if !exists(&candidate)? {
            return Ok(Some(candidate));
        }
    }
    unreachable!("a free name exists")
}

/// The name to try after `taken` turned out to exist: none for `skip`, else the next free one.
fn next_free(job: &Job<'_>, taken: &Path) -> Result<Option<PathBuf>, TransferError> {
    if job.conflict != Conflict::Rename {
        // `overwrite` renames over the name and never finds it taken; `skip` leaves it.
        return Ok(None);
    }
    free_name(job.dest_dir, job.file_name, job.conflict).map_err(|e| place_error(taken, e))
}

/// `report.pdf` → `report (N).pdf`; `README` → `README (N)`; `.env` → `.env (N)`.
pub fn numbered(name: &OsStr, n: u32) -> OsString {
    let p = Path::new(name);
    match (p.file_stem(), p.extension()) {
        (Some(stem), Some(ext)) => {
            let mut s = stem.to_os_string();
            s.push(format!(" ({n})."));
            s.push(ext);
            s
        }
        _ => {
            let mut s = name.to_os_string();
            s.push(format!(" ({n})"));
            s
        }
    }
}

fn exists(p: &Path) -> io::Result<bool> {
    match fs::symlink_metadata(p) {
        Ok(_) => Ok(true),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(e),
    }
}

fn create_dest_dir(dir: &Path) -> Result<(), TransferError> {
    fs::create_dir_all(dir).map_err(|source| {
        // "File exists" / "Not a directory" mean a file sits where a folder must be: name it.
        let hint = dir
            .ancestors()
            .find(|a| fs::metadata(a).is_ok_and(|m| !m.is_dir()))
            .map(|a| format!(" ({} is a file, not a folder)", a.display()))
            .unwrap_or_default();
        TransferError::CreateDir {
            dir: dir.to_path_buf(),
            source,
            hint,
        }
    })
}

fn read_error(path: &Path, e: io::Error) -> TransferError {
    if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(path).is_err() {
        TransferError::Vanished {
            path: path.to_path_buf(),
            source: e,
        }
    } else {
        TransferError::Read {
            path: path.to_path_buf(),
            source: e,
        }
    }
}

fn place_error(path: &Path, e: io::Error) -> TransferError {
    TransferError::Place {
        path: path.to_path_buf(),
        source: e,
    }
}

fn classify_place_error(source: &Path, target: &Path, e: io::Error) -> TransferError {
    if e.kind() == io::ErrorKind::NotFound && fs::symlink_metadata(source).is_err() {
        return TransferError::Vanished {
            path: source.to_path_buf(),
            source: e,
        };
    }
    place_error(target, e)
}

/// Errors that mean "no rename or link across these two places": copy instead.
fn needs_copy(e: &io::Error) -> bool {
    if matches!(
        e.kind(),
        io::ErrorKind::CrossesDevices
            | io::ErrorKind::Unsupported
            | io::ErrorKind::PermissionDenied
    ) {
        return true;
    }
    #[cfg(unix)]
    {
        // EMLINK (too many links), EPERM (file systems without hard links report it).
        matches!(e.raw_os_error(), Some(31) | Some(1))
    }
    #[cfg(not(unix))]
    {
        false
    }
}

fn file_kind(meta: &fs::Metadata) -> &'static str {
    let ft = meta.file_type();
    if ft.is_dir() {
        return "a folder";
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        if ft.is_fifo() {
            return "a FIFO";
        }
        if ft.is_socket() {
            return "a socket";
        }
        if ft.is_block_device() || ft.is_char_device() {
            return "a device";
        }
    }
    "not a regular file"
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Fixture {
        _dir: tempfile::TempDir,
        src: PathBuf,
        out: PathBuf,
        state: RuleState,
    }

    fn fixture() -> Fixture {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path().join("in");
        let out = dir.path().join("out");
        fs::create_dir_all(&src).unwrap();
        let state = RuleState::open(&dir.path().join("state"), "t").unwrap();
        Fixture {
            src,
            out,
            state,
            _dir: dir,
        }
    }

    fn job<'a>(f: &'a Fixture, path: &'a Path, action: Action, conflict: Conflict) -> Job<'a> {
        Job {
            rule: "t",
            source: path,
            dest_dir: &f.out,
            file_name: path.file_name().unwrap(),
            action,
            conflict,
            expected: Stamp::of(&fs::metadata(path).unwrap()),
        }
    }

    #[test]
    fn numbered_names_keep_the_extension() {
        assert_eq!(numbered(OsStr::new("report.pdf"), 1), "report (1).pdf");
        assert_eq!(numbered(OsStr::new("a.tar.gz"), 2), "a.tar (2).gz");
        assert_eq!(numbered(OsStr::new("README"), 3), "README (3)");
        assert_eq!(numbered(OsStr::new(".env"), 1), ".env (1)");
    }

    #[test]
    fn move_renames_on_conflict_and_records_the_file() {
        let f = fixture();
        let p = f.src.join("a.pdf");
        fs::write(&p, "new").unwrap();
        fs::create_dir_all(&f.out).unwrap();
        fs::write(f.out.join("a.pdf"), "old").unwrap();
        let stop = AtomicBool::new(false);
        let out = transfer(
            &job(&f, &p, Action::Move, Conflict::Rename),
            &f.state,
            &NoProgress,
            &stop,
        )
        .unwrap();
        let dest = f.out.join("a (1).pdf");
        assert_eq!(
            out,
            Outcome::Done {
                destination: dest.clone(),
                size: 3,
                copied: false
            }
        );
        assert_eq!(fs::read_to_string(&dest).unwrap(), "new");
        assert_eq!(fs::read_to_string(f.out.join("a.pdf")).unwrap(), "old");
        assert!(!p.exists());
        assert_eq!(f.state.unfinished().unwrap(), None, "the journal is closed");
        assert_eq!(f.state.pending().unwrap()[0].destination, dest);
    }

    #[test]
    fn copy_goes_through_a_temporary_file_and_keeps_the_time() {
        let f = fixture();
        let p = f.src.join("a.pdf");
        fs::write(&p, vec![7u8; 3 * CHUNK + 5]).unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(86_400);
        File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        let stop = AtomicBool::new(false);
        let out = transfer(
            &job(&f, &p, Action::Copy, Conflict::Skip),
            &f.state,
            &NoProgress,
            &stop,
        )
        .unwrap();
        assert!(matches!(out, Outcome::Done { copied: true, .. }));
        assert_eq!(
            fs::read(f.out.join("a.pdf")).unwrap(),
            fs::read(&p).unwrap()
        );
        assert_eq!(
            fs::metadata(f.out.join("a.pdf"))
                .unwrap()
                .modified()
                .unwrap(),
            old
        );
        let names: Vec<_> = fs::read_dir(&f.out)
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            names,
            vec![OsString::from("a.pdf")],
            "no temporary file left"
        );
        assert!(f.state.copied().unwrap().contains_key(&p));
        // Skip: the same name again is left alone.
        let again = transfer(
            &job(&f, &p, Action::Copy, Conflict::Skip),
            &f.state,
            &NoProgress,
            &stop,
        )
        .unwrap();
        assert!(matches!(again, Outcome::Skipped { .. }));
    }

    #[test]
    fn a_vanished_file_is_an_error_not_a_panic() {
        let f = fixture();
        let p = f.src.join("a.pdf");
        fs::write(&p, "x").unwrap();
        let j = job(&f, &p, Action::Move, Conflict::Rename);
        fs::remove_file(&p).unwrap();
        let err = transfer(&j, &f.state, &NoProgress, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, TransferError::Vanished { .. }), "{err}");
        assert!(err.to_string().contains("os error 2"), "{err}");
    }

    #[test]
    fn a_file_that_changed_since_the_scan_is_left_for_later() {
        let f = fixture();
        let p = f.src.join("a.pdf");
        fs::write(&p, "x").unwrap();
        let j = job(&f, &p, Action::Move, Conflict::Rename);
        fs::write(&p, "xy").unwrap();
        let err = transfer(&j, &f.state, &NoProgress, &AtomicBool::new(false)).unwrap_err();
        assert!(matches!(err, TransferError::Changed { .. }), "{err}");
        assert!(p.exists());
    }

    #[test]
    fn a_stop_request_removes_the_partial_copy_and_leaves_the_source() {
        let f = fixture();
        let p = f.src.join("a.pdf");
        fs::write(&p, vec![1u8; 2 * CHUNK]).unwrap();
        let stop = AtomicBool::new(true);
        let err = transfer(
            &job(&f, &p, Action::Copy, Conflict::Rename),
            &f.state,
            &NoProgress,
            &stop,
        )
        .unwrap_err();
        assert!(matches!(err, TransferError::Interrupted { .. }));
        assert!(p.exists());
        assert_eq!(fs::read_dir(&f.out).unwrap().count(), 0);
        assert_eq!(f.state.unfinished().unwrap(), None);
    }

    fn journal(f: &Fixture, name: &str, remove_source: bool) -> Inflight {
        let src = f.src.join(name);
        Inflight {
            source: src.clone(),
            destination: f.out.join(name),
            temp: Some(f.out.join(format!("{TEMP_PREFIX}t-x"))),
            stamp: Stamp::of(&fs::metadata(&src).unwrap()),
            remove_source,
        }
    }

    #[test]
    fn recovery_after_a_crash_during_the_copy_removes_the_partial_file() {
        let f = fixture();
        fs::write(f.src.join("a.pdf"), "complete").unwrap();
        let j = journal(&f, "a.pdf", true);
        fs::create_dir_all(&f.out).unwrap();
        fs::write(j.temp.as_ref().unwrap(), "comp").unwrap();
        f.state.begin(&j).unwrap();
        assert_eq!(recover(&f.state).unwrap(), None);
        assert!(!j.temp.as_ref().unwrap().exists());
        assert!(j.source.exists(), "the source is kept: it is taken again");
        assert!(!j.destination.exists());
        assert_eq!(f.state.unfinished().unwrap(), None);
    }

    #[test]
    fn recovery_after_a_crash_between_rename_and_unlink_finishes_the_move() {
        let f = fixture();
        fs::write(f.src.join("a.pdf"), "complete").unwrap();
        let j = journal(&f, "a.pdf", true);
        fs::create_dir_all(&f.out).unwrap();
        fs::write(&j.destination, "complete").unwrap();
        f.state.begin(&j).unwrap();
        let t = recover(&f.state).unwrap().expect("completed");
        assert_eq!(t.destination, j.destination);
        assert!(
            !j.source.exists(),
            "the source of a finished move is removed"
        );
        assert_eq!(fs::read_to_string(&j.destination).unwrap(), "complete");
        assert_eq!(
            f.state.pending().unwrap(),
            vec![t],
            "reported by the next success mail"
        );
    }

    #[test]
    fn recovery_never_removes_a_source_whose_destination_differs() {
        let f = fixture();
        fs::write(f.src.join("a.pdf"), "the new file").unwrap();
        let j = journal(&f, "a.pdf", true);
        fs::create_dir_all(&f.out).unwrap();
        // An older file of the same name (overwrite crashed before its rename).
        fs::write(&j.destination, "an old file!").unwrap();
        f.state.begin(&j).unwrap();
        assert_eq!(recover(&f.state).unwrap(), None);
        assert_eq!(fs::read_to_string(&j.source).unwrap(), "the new file");
    }

    #[test]
    fn recovery_of_an_interrupted_copy_records_it_as_copied() {
        let f = fixture();
        fs::write(f.src.join("a.pdf"), "data").unwrap();
        let j = journal(&f, "a.pdf", false);
        fs::create_dir_all(&f.out).unwrap();
        fs::write(&j.destination, "data").unwrap();
        f.state.begin(&j).unwrap();
        assert!(recover(&f.state).unwrap().is_some());
        assert!(j.source.exists(), "a copy keeps its source");
        assert_eq!(f.state.copied().unwrap().get(&j.source), Some(&j.stamp));
    }
}
