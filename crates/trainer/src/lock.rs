//! A lock file naming the process that holds it: a run directory being trained into, or a
//! unit of an experiment being computed. The file is created exclusively and removed when the
//! guard is dropped (also on an error); one whose process is gone (killed) is stale and taken
//! over, and so is one that has named no process for [`UNNAMED_GRACE`] (its taker died
//! between creating and writing it). A process id reused by an unrelated process after a kill
//! keeps the lock held until that process ends or the file is removed by hand.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

/// How long a lock file may name no process before it counts as abandoned: its taker writes
/// the id right after creating it.
pub const UNNAMED_GRACE: std::time::Duration = std::time::Duration::from_secs(60);

/// A held lock file (see the module documentation).
#[derive(Debug)]
pub struct ProcessLock(PathBuf);

impl ProcessLock {
    /// Takes the lock at `path`, or returns `None` when a live process holds it. A file that
    /// names no process yet (being written by its taker) counts as held for [`UNNAMED_GRACE`]
    /// after it was last modified.
    pub fn take(path: &Path) -> Result<Option<Self>> {
        for _ in 0..2 {
            match std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
            {
                Ok(mut f) => {
                    use std::io::Write as _;
                    write!(f, "{}", std::process::id())
                        .with_context(|| format!("cannot write {}", path.display()))?;
                    return Ok(Some(ProcessLock(path.to_path_buf())));
                }
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
                    let held = match holder(path) {
                        Some(pid) => process_alive(pid),
                        None => !abandoned(path),
                    };
                    if held {
                        return Ok(None);
                    }
                    let _ = std::fs::remove_file(path);
                }
                Err(e) => {
                    return Err(e).with_context(|| format!("cannot create {}", path.display()));
                }
            }
        }
        Ok(None)
    }

    /// The lock file.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for ProcessLock {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// Whether a lock file that names no process was last modified over [`UNNAMED_GRACE`] ago (a
/// file that cannot be inspected counts as not abandoned).
fn abandoned(path: &Path) -> bool {
    std::fs::metadata(path)
        .and_then(|m| m.modified())
        .ok()
        .and_then(|t| t.elapsed().ok())
        .is_some_and(|age| age > UNNAMED_GRACE)
}

/// The process id a lock file names, if it can be read.
pub fn holder(path: &Path) -> Option<u32> {
    std::fs::read_to_string(path)
        .ok()
        .and_then(|t| t.trim().parse::<u32>().ok())
}

/// Whether process `pid` exists (signal 0 checks without sending anything). This process
/// counts as alive.
#[cfg(unix)]
pub fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    let Ok(pid) = libc::pid_t::try_from(pid) else {
        return false;
    };
    // SAFETY: kill with signal 0 only checks that the process exists and may be signalled.
    let rc = unsafe { libc::kill(pid, 0) };
    rc == 0 || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
}

/// Whether process `pid` exists: unknown on this platform, so every holder counts as alive
/// (a stale lock must be removed by hand; the error that meets it names the file).
#[cfg(not(unix))]
pub fn process_alive(_pid: u32) -> bool {
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_by_a_live_process_refused_stale_taken_over_released_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("x.lock");
        let a = ProcessLock::take(&p).unwrap().expect("free");
        assert_eq!(holder(&p), Some(std::process::id()));
        // Held by this (live) process: refused, also to this process.
        assert!(ProcessLock::take(&p).unwrap().is_none());
        drop(a);
        assert!(!p.exists());
        // A file still being written (no id) counts as held ...
        std::fs::write(&p, "").unwrap();
        assert!(ProcessLock::take(&p).unwrap().is_none());
        // ... but not forever: one left unnamed for over the grace period was abandoned by a
        // taker that died before writing its id.
        let old = std::time::SystemTime::now() - UNNAMED_GRACE * 2;
        std::fs::File::options()
            .write(true)
            .open(&p)
            .unwrap()
            .set_modified(old)
            .unwrap();
        drop(
            ProcessLock::take(&p)
                .unwrap()
                .expect("abandoned lock taken over"),
        );
        assert!(!p.exists());
        // A process that cannot exist: stale, taken over.
        std::fs::write(&p, format!("{}", i32::MAX)).unwrap();
        let b = ProcessLock::take(&p)
            .unwrap()
            .expect("stale lock taken over");
        assert_eq!(b.path(), p);
        assert_eq!(holder(&p), Some(std::process::id()));
    }
}
