//! Tokens in files: `{state_dir}/tokens/{account}.json`, directory 0700, file 0600, written
//! atomically, and the per-account lock file that serialises refreshes between processes.
//!
//! Threat model: a 0600 file protects the tokens from other (non-root) users of the machine. It
//! does not protect them from root, from malware running as the same user, or from someone who
//! gets the disk (use disk encryption, or the OS keyring where there is one). On Windows the
//! files inherit the ACL of the per-user profile directory they live in.

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::store::{StoreKind, TokenStore};
use super::{TokenError, TokenSet};

/// Tokens stored as JSON files in one directory.
#[derive(Clone, Debug)]
pub struct FileStore {
    dir: PathBuf,
}

impl FileStore {
    /// A store in `dir` (usually `{state_dir}/tokens`); created on the first save.
    pub fn new(dir: impl Into<PathBuf>) -> FileStore {
        FileStore { dir: dir.into() }
    }

    /// The directory holding the token files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The token file of `account`.
    pub fn path_for(&self, account: &str) -> PathBuf {
        self.dir.join(format!("{account}.json"))
    }
}

impl TokenStore for FileStore {
    fn kind(&self) -> StoreKind {
        StoreKind::File
    }

    fn location(&self, account: &str) -> String {
        format!("file {}", self.path_for(account).display())
    }

    fn load(&self, account: &str) -> Result<Option<TokenSet>, TokenError> {
        let path = self.path_for(account);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(source) => {
                return Err(TokenError::Io {
                    action: "read",
                    path,
                    source,
                })
            }
        };
        tighten_permissions(&path);
        TokenSet::from_json(&bytes)
            .map(Some)
            .map_err(|problem| TokenError::Corrupt {
                account: account.to_string(),
                location: self.location(account),
                problem,
            })
    }

    fn save(&self, account: &str, tokens: &TokenSet) -> Result<(), TokenError> {
        let io_err = |action, path: &Path| {
            let path = path.to_path_buf();
            move |source| TokenError::Io {
                action,
                path,
                source,
            }
        };
        ensure_private_dir(&self.dir).map_err(io_err("create", &self.dir))?;
        let path = self.path_for(account);
        write_private_atomic(&path, &tokens.to_json()).map_err(io_err("write", &path))
    }

    fn delete(&self, account: &str) -> Result<bool, TokenError> {
        let path = self.path_for(account);
        match std::fs::remove_file(&path) {
            Ok(()) => {
                sync_dir(&self.dir).ok();
                Ok(true)
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(TokenError::Io {
                action: "delete",
                path,
                source,
            }),
        }
    }
}

/// Creates `dir` (and its parents) readable by its owner only (0700 on Unix).
pub fn create_private_dir(dir: &Path) -> io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
    }
    #[cfg(not(unix))]
    {
        std::fs::create_dir_all(dir)
    }
}

/// Makes sure `dir` exists and is 0700 (it holds secrets, so an existing directory with wider
/// permissions is tightened).
pub fn ensure_private_dir(dir: &Path) -> io::Result<()> {
    create_private_dir(dir)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(dir)?.permissions().mode() & 0o777;
        if mode != 0o700 {
            std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
        }
    }
    Ok(())
}

/// Writes `data` to `path` atomically: a temporary file in the same directory (0600 from the
/// start), write, fsync, rename over `path`, fsync the directory. A reader sees the old content
/// or the new, never a mix; a crash leaves at worst a stray temporary file.
pub fn write_private_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "no file name"))?
        .to_string_lossy()
        .into_owned();
    let tmp = dir.join(format!(
        ".{name}.{}.{}.tmp",
        std::process::id(),
        uuid::Uuid::new_v4().simple()
    ));
    let result = (|| {
        let mut options = OpenOptions::new();
        options.write(true).create_new(true);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut file = options.open(&tmp)?;
        file.write_all(data)?;
        file.sync_all()?;
        drop(file);
        std::fs::rename(&tmp, path)?;
        sync_dir(&dir)
    })();
    if result.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    result
}

/// Flushes a directory entry change (a rename) to disk. Windows has no equivalent; NTFS
/// journals the rename.
fn sync_dir(dir: &Path) -> io::Result<()> {
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

/// A token file someone made readable by others is put back to 0600 (with a warning).
fn tighten_permissions(path: &Path) {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(meta) = std::fs::metadata(path) {
            let mode = meta.permissions().mode() & 0o777;
            if mode & 0o077 != 0 {
                tracing::warn!(
                    "token file {} had mode {mode:o}; setting it to 600",
                    path.display()
                );
                let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
            }
        }
    }
    #[cfg(not(unix))]
    let _ = path;
}

/// An exclusive lock on one account's tokens, held while they are refreshed or replaced so that
/// two processes never both use (and so burn) the same refresh token. Released on drop.
#[derive(Debug)]
pub struct TokenLock {
    file: File,
    path: PathBuf,
}

/// How long to wait for another process to finish its refresh before giving up.
pub const LOCK_TIMEOUT: Duration = Duration::from_secs(120);

impl TokenLock {
    fn open(path: &Path) -> Result<File, TokenError> {
        let io_err = |action| {
            let path = path.to_path_buf();
            move |source| TokenError::Io {
                action,
                path,
                source,
            }
        };
        if let Some(dir) = path.parent() {
            ensure_private_dir(dir).map_err(io_err("create"))?;
        }
        let mut options = OpenOptions::new();
        options.read(true).write(true).create(true).truncate(false);
        #[cfg(unix)]
        {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        options.open(path).map_err(io_err("open"))
    }

    /// Tries once; `Ok(false)` when another holder has it.
    fn try_acquire(path: &Path, file: &File) -> Result<bool, TokenError> {
        match file.try_lock() {
            Ok(()) => Ok(true),
            Err(std::fs::TryLockError::WouldBlock) => Ok(false),
            Err(std::fs::TryLockError::Error(source)) => Err(TokenError::Io {
                action: "lock",
                path: path.to_path_buf(),
                source,
            }),
        }
    }

    fn timeout(path: &Path) -> TokenError {
        TokenError::LockTimeout {
            path: path.to_path_buf(),
            waited: LOCK_TIMEOUT,
        }
    }

    /// Takes the lock at `path`, waiting (blocking the thread) while another process holds it.
    pub fn acquire_blocking(path: &Path) -> Result<TokenLock, TokenError> {
        let file = Self::open(path)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if Self::try_acquire(path, &file)? {
                return Ok(TokenLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
            if start.elapsed() > LOCK_TIMEOUT {
                return Err(Self::timeout(path));
            }
            std::thread::sleep(pause);
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// Takes the lock at `path`, waiting without blocking the async runtime.
    pub async fn acquire(path: &Path) -> Result<TokenLock, TokenError> {
        let file = Self::open(path)?;
        let start = Instant::now();
        let mut pause = Duration::from_millis(5);
        loop {
            if Self::try_acquire(path, &file)? {
                return Ok(TokenLock {
                    file,
                    path: path.to_path_buf(),
                });
            }
            if start.elapsed() > LOCK_TIMEOUT {
                return Err(Self::timeout(path));
            }
            tokio::time::sleep(pause).await;
            pause = (pause * 2).min(Duration::from_millis(100));
        }
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for TokenLock {
    fn drop(&mut self) {
        let _ = self.file.unlock();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::oauth::Flow;
    use crate::Secret;

    fn sample() -> TokenSet {
        let mut t = TokenSet::new(Flow::AuthorizationCode, "client-1");
        t.access_token = Some(Secret::new("at-1"));
        t.refresh_token = Some(Secret::new("rt-1"));
        t.identity = Some("alice@contoso.com".into());
        t
    }

    #[test]
    fn saves_loads_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().join("tokens"));
        assert!(store.load("work").unwrap().is_none());
        store.save("work", &sample()).unwrap();
        let back = store.load("work").unwrap().unwrap();
        assert_eq!(back.refresh_token.unwrap().expose(), "rt-1");
        assert_eq!(back.identity.as_deref(), Some("alice@contoso.com"));
        assert!(store.delete("work").unwrap());
        assert!(!store.delete("work").unwrap());
        assert!(store.load("work").unwrap().is_none());
    }

    #[cfg(unix)]
    #[test]
    fn file_is_0600_and_dir_0700() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let tokens = dir.path().join("state").join("tokens");
        let store = FileStore::new(&tokens);
        store.save("work", &sample()).unwrap();
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&store.path_for("work")), 0o600);
        assert_eq!(mode(&tokens), 0o700);
        // A directory someone opened up is tightened again on the next save.
        std::fs::set_permissions(&tokens, std::fs::Permissions::from_mode(0o755)).unwrap();
        store.save("work", &sample()).unwrap();
        assert_eq!(mode(&tokens), 0o700);
    }

    #[test]
    fn atomic_write_replaces_and_leaves_no_temporary_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_private_atomic(&path, b"old").unwrap();
        write_private_atomic(&path, b"new content").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new content");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec!["f.json".to_string()]);
    }

    #[test]
    fn atomic_write_failure_keeps_the_old_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.json");
        write_private_atomic(&path, b"old").unwrap();
        // Renaming a file over a non-empty directory fails: the old content must survive and
        // the temporary file must be cleaned up.
        let blocked = dir.path().join("sub");
        std::fs::create_dir(&blocked).unwrap();
        std::fs::write(blocked.join("x"), b"x").unwrap();
        assert!(write_private_atomic(&blocked, b"new").is_err());
        assert_eq!(std::fs::read(&path).unwrap(), b"old");
        let stray = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .ends_with(".tmp")
            })
            .count();
        assert_eq!(stray, 0);
    }

    #[test]
    fn a_damaged_file_is_an_error_that_says_to_log_in() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path());
        std::fs::write(store.path_for("work"), b"{not json").unwrap();
        let err = store.load("work").unwrap_err().to_string();
        assert!(err.contains("mailgate login work"), "{err}");
    }

    #[test]
    fn lock_excludes_a_second_holder_until_dropped() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("work.lock");
        let first = TokenLock::acquire_blocking(&path).unwrap();
        // A second handle (as another process would have) cannot take it...
        let other = TokenLock::open(&path).unwrap();
        assert!(!TokenLock::try_acquire(&path, &other).unwrap());
        // ...and a waiter gets it as soon as the first is released.
        let waiter = {
            let path = path.clone();
            std::thread::spawn(move || {
                let start = Instant::now();
                let _l = TokenLock::acquire_blocking(&path).unwrap();
                start.elapsed()
            })
        };
        std::thread::sleep(Duration::from_millis(200));
        drop(first);
        let waited = waiter.join().unwrap();
        assert!(waited >= Duration::from_millis(150), "waited {waited:?}");
        assert!(TokenLock::try_acquire(&path, &other).unwrap());
    }
}
