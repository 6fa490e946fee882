//! Finding the files a rule takes, and deciding when each is safe to take.
//!
//! A file is taken only when it has not changed for `min_age`: its modification time is at least
//! `min_age` old, and its size and modification time were seen unchanged for `min_age`. The
//! second condition catches writers that give a file an old modification time while they are
//! still writing it (`cp -p`, unpackers, some upload servers set times early).

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant, SystemTime};

use super::config::RuleConfig;
use super::events::Failure;
use super::state::Stamp;
use super::transfer::TEMP_PREFIX;

/// A file the rule's patterns select.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Candidate {
    pub path: PathBuf,
    /// Relative to the source folder (its subfolders are recreated under the destination).
    pub rel: PathBuf,
    pub stamp: Stamp,
}

/// What a walk of the source folder found.
#[derive(Debug, Default)]
pub struct Listing {
    /// Files to consider, in path order.
    pub files: Vec<Candidate>,
    /// Folders that could not be read, broken links, FIFOs...: reported, never opened.
    pub failures: Vec<Failure>,
    /// Whether the source folder itself could be read (when not, nothing is known about it).
    pub source_readable: bool,
}

/// Lists the files `rule` selects.
pub fn list(rule: &RuleConfig) -> Listing {
    let mut listing = Listing::default();
    match fs::metadata(&rule.source) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            listing.failures.push(Failure {
                path: rule.source.clone(),
                error: "the source is not a folder".into(),
            });
            return listing;
        }
        Err(e) => {
            listing.failures.push(Failure {
                path: rule.source.clone(),
                error: format!("cannot read the source folder: {e}"),
            });
            return listing;
        }
    }
    listing.source_readable = walk(rule, &rule.source, Path::new(""), &mut listing);
    listing
}

/// Walks one folder; returns whether it could be read.
fn walk(rule: &RuleConfig, dir: &Path, rel_dir: &Path, out: &mut Listing) -> bool {
    let entries = match fs::read_dir(dir) {
        Ok(rd) => rd,
        Err(e) => {
            out.failures.push(Failure {
                path: dir.to_path_buf(),
                error: format!("cannot read the folder: {e}"),
            });
            return false;
        }
    };
    let mut entries: Vec<_> = entries
        .filter_map(|e| match e {
            Ok(e) => Some(e),
            Err(err) => {
                out.failures.push(Failure {
                    path: dir.to_path_buf(),
                    error: format!("cannot read the folder: {err}"),
                });
                None
            }
        })
        .collect();
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let name = entry.file_name();
        if name.to_string_lossy().starts_with(TEMP_PREFIX) {
            continue;
        }
        let path = entry.path();
        let rel = rel_dir.join(&name);
        let Ok(ft) = entry.file_type() else {
            continue;
        };
        if ft.is_dir() {
            if rule.recursive && rule.wants_dir(&rel) {
                walk(rule, &path, &rel, out);
            }
            continue;
        }
        if !rule.wants_file(&rel) {
            continue;
        }
        // Follows a symbolic link to the file it names; a link to a folder is not entered (no
        // loops), a broken link is a failure.
        match fs::metadata(&path) {
            Ok(m) if m.is_file() => out.files.push(Candidate {
                path,
                rel,
                stamp: Stamp::of(&m),
            }),
            Ok(m) if m.is_dir() => {}
            Ok(m) => out.failures.push(Failure {
                path,
                error: format!(
                    "it is not a regular file ({}); only regular files are transferred",
                    kind(&m)
                ),
            }),
            Err(e) if ft.is_symlink() => out.failures.push(Failure {
                path,
                error: format!("cannot read it (a link to a file that is not there): {e}"),
            }),
            Err(e) => out.failures.push(Failure {
                path,
                error: format!("cannot read it: {e}"),
            }),
        }
    }
    true
}

fn kind(m: &fs::Metadata) -> &'static str {
    #[cfg(unix)]
    {
        use std::os::unix::fs::FileTypeExt;
        let ft = m.file_type();
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
    let _ = m;
    "a special file"
}

/// Where a candidate stands with respect to `min_age`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Readiness {
    /// Unchanged long enough: take it.
    Ready,
    /// Modified `ago` ago, less than `min_age`: still being written.
    Busy { ago: Duration },
    /// Old enough by its modification time, but not yet seen unchanged for `min_age`: watch it
    /// for `remaining` more.
    Settling { remaining: Duration },
}

/// Remembers what each file looked like and since when, across the scans of one process.
#[derive(Debug, Default)]
pub struct Stability {
    seen: HashMap<PathBuf, (Stamp, Instant)>,
}

impl Stability {
    /// How ready `c` is at `now` (monotonic) / `wall` (the clock modification times use).
    pub fn assess(
        &mut self,
        c: &Candidate,
        min_age: Duration,
        now: Instant,
        wall: SystemTime,
    ) -> Readiness {
        let entry = self.seen.entry(c.path.clone()).or_insert((c.stamp, now));
        if entry.0 != c.stamp {
            *entry = (c.stamp, now);
        }
        if min_age.is_zero() {
            return Readiness::Ready;
        }
        // A modification time in the future (another machine's clock) says nothing: rely on
        // watching the file.
        if let Ok(ago) = wall.duration_since(c.stamp.mtime()) {
            if ago < min_age {
                return Readiness::Busy { ago };
            }
        }
        let watched = now.saturating_duration_since(entry.1);
        if watched >= min_age {
            Readiness::Ready
        } else {
            Readiness::Settling {
                remaining: min_age - watched,
            }
        }
    }

    /// Forgets files that are gone (or were taken).
    pub fn retain(&mut self, keep: impl Fn(&Path) -> bool) {
        self.seen.retain(|p, _| keep(p));
    }
}

/// The current stamp of `c`, or `None` when it is gone or no longer a regular file.
pub fn restat(c: &Candidate) -> Option<Candidate> {
    let m = fs::metadata(&c.path).ok().filter(|m| m.is_file())?;
    Some(Candidate {
        stamp: Stamp::of(&m),
        ..c.clone()
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(size: u64, mtime: SystemTime) -> Candidate {
        Candidate {
            path: "/in/a.pdf".into(),
            rel: "a.pdf".into(),
            stamp: Stamp {
                size,
                mtime_ns: super::super::state::system_ns(mtime),
            },
        }
    }

    #[test]
    fn a_recently_modified_file_is_busy() {
        let mut s = Stability::default();
        let wall = SystemTime::now();
        let c = cand(10, wall - Duration::from_secs(1));
        let r = s.assess(&c, Duration::from_secs(5), Instant::now(), wall);
        assert!(matches!(r, Readiness::Busy { .. }), "{r:?}");
    }

    #[test]
    fn an_old_file_must_still_be_watched_unchanged() {
        let mut s = Stability::default();
        let wall = SystemTime::now();
        let t0 = Instant::now();
        let min = Duration::from_secs(5);
        let c = cand(10, wall - Duration::from_secs(3600));
        assert!(matches!(
            s.assess(&c, min, t0, wall),
            Readiness::Settling { .. }
        ));
        // It grew (a writer that keeps an old modification time): the watch starts again.
        let grown = cand(20, wall - Duration::from_secs(3600));
        let r = s.assess(&grown, min, t0 + Duration::from_secs(4), wall);
        assert_eq!(r, Readiness::Settling { remaining: min });
        let r = s.assess(&grown, min, t0 + Duration::from_secs(9), wall);
        assert_eq!(r, Readiness::Ready);
    }

    #[test]
    fn zero_min_age_takes_everything() {
        let mut s = Stability::default();
        let wall = SystemTime::now();
        let c = cand(10, wall);
        assert_eq!(
            s.assess(&c, Duration::ZERO, Instant::now(), wall),
            Readiness::Ready
        );
    }
}
