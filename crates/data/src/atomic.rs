//! Atomic file replacement, the one mechanism behind every file the workspace writes in place
//! (data caches, checkpoints, saved models, reports, plots, results pages).
//!
//! A writer fills a temporary file in the target's directory; the file is flushed to disk and
//! renamed over the target, and the directory entry is flushed too (best effort). A reader sees
//! the old file or the new one, never part of one; on any failure the temporary file is removed
//! and the target is untouched.

use std::fs::File;
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// A fresh temporary path next to `path`: `.tmp-<process>-<n>-<file name>`, so the extension is
/// kept (for writers that choose a format by it) and neither two processes nor two threads of
/// one process share a temporary file.
pub fn temp_path(path: &Path) -> io::Result<PathBuf> {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let name = path.file_name().ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("{}: an atomic write needs a file name", path.display()),
        )
    })?;
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    Ok(path.with_file_name(format!(
        ".tmp-{}-{n}-{}",
        std::process::id(),
        name.to_string_lossy()
    )))
}

/// Flushes the file at `path` to disk. It is opened for writing (nothing is truncated):
/// Windows refuses to flush a file opened read-only.
pub fn sync_file(path: &Path) -> io::Result<()> {
    std::fs::OpenOptions::new()
        .write(true)
        .open(path)?
        .sync_all()
}

/// Replaces `path` atomically with what `write` puts into the temporary path it is given.
/// Errors of the flush and the rename name the file; `write`'s own errors pass through.
pub fn write_atomic_with<E: From<io::Error>>(
    path: &Path,
    write: impl FnOnce(&Path) -> Result<(), E>,
) -> Result<(), E> {
    let tmp = temp_path(path)?;
    let named = |what: &str, p: &Path, e: io::Error| {
        io::Error::new(e.kind(), format!("cannot {what} {}: {e}", p.display()))
    };
    let written = write(&tmp).and_then(|()| {
        sync_file(&tmp).map_err(|e| named("flush", &tmp, e))?;
        std::fs::rename(&tmp, path).map_err(|e| E::from(named("replace", path, e)))
    });
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    } else if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Persisting the directory entry is best effort: not every file system supports it.
        if let Ok(d) = File::open(dir) {
            let _ = d.sync_all();
        }
    }
    written
}

/// Replaces `path` atomically with `bytes`.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> io::Result<()> {
    write_atomic_with(path, |tmp| {
        File::create(tmp)
            .and_then(|mut f| f.write_all(bytes))
            .map_err(|e| io::Error::new(e.kind(), format!("cannot write {}: {e}", tmp.display())))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leftovers(dir: &Path) -> Vec<String> {
        std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with(".tmp-"))
            .collect()
    }

    #[test]
    fn a_write_replaces_the_file_and_a_failed_one_keeps_the_old() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("report.md");
        write_atomic(&p, b"one").unwrap();
        write_atomic(&p, b"two").unwrap();
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        // A writer that fails half-way through its temporary file.
        let e = write_atomic_with(&p, |tmp| {
            std::fs::write(tmp, b"half")?;
            Err(io::Error::other("drawing failed"))
        })
        .unwrap_err();
        assert!(e.to_string().contains("drawing failed"), "{e}");
        assert_eq!(std::fs::read(&p).unwrap(), b"two");
        assert!(leftovers(dir.path()).is_empty());
        // The temporary file keeps the extension, and each one is fresh.
        let (a, b) = (temp_path(&p).unwrap(), temp_path(&p).unwrap());
        assert_ne!(a, b);
        assert!(a.to_string_lossy().ends_with("report.md"));
        // A target in a missing directory: an error naming the file, nothing left behind.
        let e = write_atomic(&dir.path().join("no/such.md"), b"x").unwrap_err();
        assert!(e.to_string().contains("such.md"), "{e}");
        assert!(temp_path(Path::new("/")).is_err());
    }
}
