//! A lock file naming the process that holds it: a run directory being trained into, or a
//! unit of an experiment being computed.
//!
//! The lock is the operating system's lock on the open file (`flock` on Unix, through
//! [`std::fs::File::try_lock`]), so it ends with the process that holds it, however that process
//! ends: a lock left by a killed process is free at once, two processes cannot both take it, and
//! a reused process id changes nothing. The process id written into the file is only for
//! messages ([`holder`]). A holder removes the file before it lets go of the lock (on Unix only
//! if the file at the path is still its own); a taker that opened the old file and locked it after
//! that release, or found it busy just before, sees that the file is gone from its path and
//! tries again with the new one.
//!
//! These guarantees are those of `flock` on a local file system. On NFS they depend on the
//! mount's lock support (a mount without it fails with `cannot lock ...`), and deleting a held
//! lock file by hand lets a second process take a new one. Windows locks are mandatory, so
//! there the holder's process id cannot be read while it holds the lock.

use std::fs::{File, TryLockError};
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// A held lock file (see the module documentation). Dropping it removes the file and releases
/// the lock, also when the holder returns with an error.
#[derive(Debug)]
pub struct ProcessLock {
    path: PathBuf,
    /// The open file the lock belongs to; closing it releases the lock.
    _file: File,
}

impl ProcessLock {
    /// Takes the lock at `path`, or returns `None` when another process, or another handle in
    /// this process, holds it. A file left behind by a process that ended without removing it
    /// (killed) is free and taken.
    pub fn take(path: &Path) -> Result<Option<Self>> {
        // Each retry follows a holder that released the lock between our open and our lock;
        // a few in a row mean the lock is busy.
        for _ in 0..8 {
            let file = File::options()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(path)
                .with_context(|| format!("cannot create {}", path.display()))?;
            match Self::attempt(file, path)? {
                Attempt::Taken(lock) => return Ok(Some(lock)),
                Attempt::Busy => return Ok(None),
                Attempt::Gone => continue,
            }
        }
        Ok(None)
    }

    /// One try at the lock of `file`, opened on `path` a moment ago.
    fn attempt(mut file: File, path: &Path) -> Result<Attempt> {
        match file.try_lock() {
            Ok(()) => {}
            // Busy, unless its holder has just removed it and is letting go.
            Err(TryLockError::WouldBlock) if still_at(&file, path) => return Ok(Attempt::Busy),
            Err(TryLockError::WouldBlock) => return Ok(Attempt::Gone),
            Err(TryLockError::Error(e)) => {
                return Err(e).with_context(|| format!("cannot lock {}", path.display()));
            }
        }
        // Locked, but its holder removed it from the path before letting go: the lock of a
        // file nobody else can open guards nothing.
        if !still_at(&file, path) {
            return Ok(Attempt::Gone);
        }
        file.set_len(0)
            .and_then(|()| write!(file, "{}", std::process::id()))
            .with_context(|| format!("cannot write {}", path.display()))?;
        Ok(Attempt::Taken(ProcessLock {
            path: path.to_path_buf(),
            _file: file,
        }))
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ProcessLock {
    fn drop(&mut self) {
        // Removed while still locked (the file closes after this body), so that nobody can take
        // the lock of a file that is no longer at the path; and only our own file: if ours was
        // deleted by hand, the one there now may be another holder's. (A deletion by hand and a
        // new holder between the check and the removal still lose that holder's file: deleting
        // a held lock file is outside what the lock guards against.)
        if still_at(&self._file, &self.path) {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

/// The outcome of [`ProcessLock::attempt`].
#[derive(Debug)]
enum Attempt {
    Taken(ProcessLock),
    /// Another holder has it.
    Busy,
    /// The file opened is no longer the one at the path: open the path again.
    Gone,
}

/// Whether `path` still names the file `file` is open on (it does not once its holder has
/// removed it, or after someone created a new one there).
#[cfg(unix)]
fn still_at(file: &File, path: &Path) -> bool {
    use std::os::unix::fs::MetadataExt as _;
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(open), Ok(named)) => open.dev() == named.dev() && open.ino() == named.ino(),
        _ => false,
    }
}

/// Elsewhere the file's identity is not compared: a locked file counts as the one at its path
/// while a file exists there.
#[cfg(not(unix))]
fn still_at(_file: &File, path: &Path) -> bool {
    path.exists()
}

/// The process id a lock file names, if it can be read (for messages: whether the lock is held
/// is decided by the lock itself). Right after a new holder took the lock and before it wrote
/// its id, the file is empty (`None`) or still names a process that ended.
pub fn holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
}

/// [`holder`] as text for a refusal message: the process id, or `(unknown)`.
pub fn holder_name(path: &Path) -> String {
    holder(path).map_or_else(|| "(unknown)".into(), |p| p.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    #[test]
    fn held_refused_left_over_file_taken_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = ProcessLock::take(&p).unwrap().expect("free");
        assert_eq!(a.path(), p);
        assert_eq!(holder(&p), Some(std::process::id()));
        // Held (by another handle, as by another process): refused, and the holder's file is
        // left as it was.
        assert!(ProcessLock::take(&p).unwrap().is_none());
        assert_eq!(holder(&p), Some(std::process::id()));
        drop(a);
        assert!(!p.exists());
        // A file that nobody holds, whatever it names (a killed process, a reused id, nothing
        // yet, or garbage), is free.
        for left in [format!("{}", i32::MAX), String::new(), "not a pid".into()] {
            std::fs::write(&p, left).unwrap();
            let b = ProcessLock::take(&p)
                .unwrap()
                .expect("a left-over file is free");
            assert_eq!(holder(&p), Some(std::process::id()));
            drop(b);
            assert!(!p.exists());
        }
    }

    /// A held lock file deleted by hand lets a second holder in (documented); the first one's
    /// release must then leave the second's file and lock alone (Unix: elsewhere the file's
    /// identity is not compared).
    #[cfg(unix)]
    #[test]
    fn a_release_removes_only_its_own_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = ProcessLock::take(&p).unwrap().unwrap();
        std::fs::remove_file(&p).unwrap();
        let b = ProcessLock::take(&p).unwrap().expect("a new file");
        drop(a);
        assert!(p.exists(), "the second holder's file was removed");
        assert!(ProcessLock::take(&p).unwrap().is_none(), "still held");
        drop(b);
        assert!(!p.exists());
    }

    /// The two moments at which a taker's open file stops being the lock: its holder removed
    /// it and still holds it (busy, but gone from the path), or removed it and let go (free,
    /// but gone). Either way the taker must open the path again, never report the lock busy
    /// or take the lock of a file nobody else can open.
    #[cfg(unix)]
    #[test]
    fn a_file_removed_by_its_holder_is_tried_again_from_the_path() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let open = || File::options().read(true).write(true).open(&p).unwrap();
        let is_gone = |a: Attempt| matches!(a, Attempt::Gone);

        // The holder's release has removed the file but not yet unlocked it.
        let a = ProcessLock::take(&p).unwrap().unwrap();
        let late = open();
        assert!(matches!(
            ProcessLock::attempt(open(), &p).unwrap(),
            Attempt::Busy
        ));
        std::fs::remove_file(&p).unwrap();
        assert!(is_gone(ProcessLock::attempt(late, &p).unwrap()));
        drop(a);

        // The holder has removed the file and unlocked it.
        let a = ProcessLock::take(&p).unwrap().unwrap();
        let late = open();
        drop(a);
        assert!(!p.exists());
        assert!(is_gone(ProcessLock::attempt(late, &p).unwrap()));
        // Nothing was written where the lock should be, and the path is free.
        assert!(!p.exists());
        let b = ProcessLock::take(&p).unwrap().expect("free");
        drop(b);
    }

    #[test]
    fn a_directory_that_cannot_hold_the_file_is_an_error_naming_it() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("missing").join("x.lock");
        let e = format!("{:#}", ProcessLock::take(&p).unwrap_err());
        assert!(e.contains("cannot create") && e.contains("x.lock"), "{e}");
    }

    /// Many threads taking and releasing one lock as fast as they can: never two holders at
    /// once, and every thread gets it at least once.
    #[test]
    fn never_two_holders_at_once() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let inside = AtomicUsize::new(0);
        let most = AtomicUsize::new(0);
        let taken = AtomicUsize::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let mut mine = 0;
                    while mine < 50 {
                        if let Some(lock) = ProcessLock::take(&p).unwrap() {
                            let n = inside.fetch_add(1, Ordering::SeqCst) + 1;
                            most.fetch_max(n, Ordering::SeqCst);
                            std::thread::yield_now();
                            inside.fetch_sub(1, Ordering::SeqCst);
                            drop(lock);
                            mine += 1;
                            taken.fetch_add(1, Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(most.load(Ordering::SeqCst), 1, "two holders at once");
        assert_eq!(taken.load(Ordering::SeqCst), 8 * 50);
        assert!(!p.exists());
    }
}
