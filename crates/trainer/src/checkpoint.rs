//! Checkpoints that are written atomically and verified before they are trusted.
//!
//! A checkpoint is a directory `<root>/<name>/` holding
//! - `tensors.safetensors`: every tensor (model parameters, embedding rows, optimizer state);
//! - `state.json`: everything else (step, epoch, RNG state, configuration, table metadata, ...);
//! - `manifest.json`: the SHA-256 and size of the two files above.
//!
//! It is first written to `<root>/.tmp-<name>/`, flushed to disk, then renamed into place, and
//! only then does the pointer file `<root>/latest` (or `best`) move to it, itself by
//! write-then-rename. A crash at any moment leaves the previous checkpoint and pointer intact.
//! Loading recomputes both digests and refuses a checkpoint that does not match its manifest,
//! so a truncated or corrupted file is reported, never loaded. Only safetensors and JSON are
//! read: nothing in a checkpoint can execute code.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use candle_core::Device;
use rec_nn::TensorMap;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

const TENSORS: &str = "tensors.safetensors";
const STATE: &str = "state.json";
const MANIFEST: &str = "manifest.json";
/// Version of the checkpoint layout; a checkpoint of another version is refused.
pub const FORMAT_VERSION: u32 = 1;

#[derive(Debug, Serialize, Deserialize)]
struct Manifest {
    format_version: u32,
    files: BTreeMap<String, FileEntry>,
}

#[derive(Debug, Serialize, Deserialize)]
struct FileEntry {
    sha256: String,
    bytes: u64,
}

/// SHA-256 and length of a file, read in blocks (a checkpoint may be larger than memory
/// allows twice).
fn sha256_file(path: &Path) -> Result<(String, u64)> {
    use std::io::Read;
    let mut f = File::open(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    let mut n = 0u64;
    loop {
        let k = f
            .read(&mut buf)
            .with_context(|| format!("cannot read {}", path.display()))?;
        if k == 0 {
            break;
        }
        h.update(&buf[..k]);
        n += k as u64;
    }
    Ok((hex(&h.finalize()), n))
}

/// Largest manifest read (a real one is a few hundred bytes).
const MAX_MANIFEST_BYTES: u64 = 1 << 20;

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Writes `contents` to `path` atomically: a temporary file in the same directory, flushed to
/// disk, then renamed over `path` ([`rec_data::atomic`]).
pub fn write_atomic(path: &Path, contents: &[u8]) -> Result<()> {
    Ok(rec_data::atomic::write_atomic(path, contents)?)
}

/// Atomic write for writers that need a path (e.g. an image encoder): `write` fills a
/// temporary file next to `path` (its name ends with `path`'s, so the extension is kept),
/// which is then flushed and renamed over `path`. On any failure the temporary file is
/// removed and `path` is untouched.
pub fn write_atomic_with(path: &Path, write: impl FnOnce(&Path) -> Result<()>) -> Result<()> {
    rec_data::atomic::write_atomic_with(path, write)
}

fn sync_dir(dir: &Path) {
    // Persisting the directory entry is best effort: not every file system supports it.
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Test hook for crash-safety tests (a fault-injection point, inert in normal use): when the
/// environment variable of this name holds the name of the checkpoint being written (e.g.
/// `step-000000000012`), [`write()`](fn@write) stops after the tensors file is on disk and before the
/// state, the manifest and the rename, creates an empty file `PAUSED` in the temporary
/// directory `<root>/.tmp-<name>/`, and sleeps for up to a minute, so that a test can kill the
/// process in the middle of a checkpoint at a known point. Unset, it costs one environment
/// lookup per checkpoint.
pub const PAUSE_ENV: &str = "REC_TEST_CHECKPOINT_PAUSE";

fn pause_for_tests(tmp: &Path, name: &str) {
    if std::env::var_os(PAUSE_ENV).is_some_and(|v| v == name) {
        let _ = File::create(tmp.join("PAUSED"));
        std::thread::sleep(std::time::Duration::from_secs(60));
    }
}

/// Writes a checkpoint called `name` under `root` and returns its directory.
///
/// Fails if a checkpoint of that name already exists: names are unique (e.g. by step).
pub fn write(
    root: &Path,
    name: &str,
    tensors: &TensorMap,
    state: &serde_json::Value,
) -> Result<PathBuf> {
    fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let final_dir = root.join(name);
    if final_dir.exists() {
        bail!("checkpoint {} already exists", final_dir.display());
    }
    let tmp = root.join(format!(".tmp-{name}"));
    if tmp.exists() {
        fs::remove_dir_all(&tmp)
            .with_context(|| format!("cannot remove stale {}", tmp.display()))?;
    }
    fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    let written = write_into(&tmp, name, tensors, state).and_then(|()| {
        fs::rename(&tmp, &final_dir)
            .with_context(|| format!("cannot move checkpoint into {}", final_dir.display()))
    });
    if let Err(e) = written {
        // A partial checkpoint is as large as a whole one: do not leave it on a full disk.
        let _ = fs::remove_dir_all(&tmp);
        return Err(e);
    }
    sync_dir(root);
    Ok(final_dir)
}

/// Writes the files of a checkpoint into the temporary directory `tmp`.
fn write_into(
    tmp: &Path,
    name: &str,
    tensors: &TensorMap,
    state: &serde_json::Value,
) -> Result<()> {
    let tensors_path = tmp.join(TENSORS);
    candle_core::safetensors::save(tensors, &tensors_path)
        .with_context(|| format!("cannot write {}", tensors_path.display()))?;
    rec_data::atomic::sync_file(&tensors_path)
        .with_context(|| format!("cannot write {}", tensors_path.display()))?;
    pause_for_tests(tmp, name);
    let state_text = serde_json::to_vec_pretty(state)?;
    write_atomic(&tmp.join(STATE), &state_text)?;
    // safetensors writes through a temporary file, created readable by its owner only: give
    // the tensors the permissions of the checkpoint's other files (the user's umask).
    if let Ok(m) = fs::metadata(tmp.join(STATE)) {
        fs::set_permissions(&tensors_path, m.permissions())
            .with_context(|| format!("cannot set the permissions of {}", tensors_path.display()))?;
    }
    let mut files = BTreeMap::new();
    for f in [TENSORS, STATE] {
        let (sha256, bytes) = sha256_file(&tmp.join(f))?;
        files.insert(f.to_string(), FileEntry { sha256, bytes });
    }
    let manifest = Manifest {
        format_version: FORMAT_VERSION,
        files,
    };
    write_atomic(&tmp.join(MANIFEST), &serde_json::to_vec_pretty(&manifest)?)?;
    sync_dir(tmp);
    Ok(())
}

/// Removes the temporary directories (`.tmp-*`) of checkpoints whose writing was interrupted
/// (a killed process) under `root`, and returns them. Only one process trains into a run
/// directory at a time (it holds the run's lock, see [`crate::train::RUN_LOCK`]), so none of
/// them is still being written.
pub fn remove_partial(root: &Path) -> Result<Vec<PathBuf>> {
    let Ok(entries) = fs::read_dir(root) else {
        return Ok(Vec::new());
    };
    let mut removed = Vec::new();
    for e in entries.filter_map(|e| e.ok()) {
        let p = e.path();
        if p.is_dir() && e.file_name().to_string_lossy().starts_with(".tmp-") {
            fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
            removed.push(p);
        }
    }
    Ok(removed)
}

/// Points `<root>/<pointer>` (e.g. `latest`, `best`) at the checkpoint called `name`.
pub fn set_pointer(root: &Path, pointer: &str, name: &str) -> Result<()> {
    write_atomic(&root.join(pointer), format!("{name}\n").as_bytes())
}

/// The checkpoint directory that `<root>/<pointer>` names, if the pointer exists.
pub fn resolve_pointer(root: &Path, pointer: &str) -> Result<Option<PathBuf>> {
    let p = root.join(pointer);
    if !p.exists() {
        return Ok(None);
    }
    let name = fs::read_to_string(&p).with_context(|| format!("cannot read {}", p.display()))?;
    let name = name.trim();
    if name.is_empty() || name.contains('/') || name.contains("..") {
        bail!("{} holds an invalid checkpoint name {name:?}", p.display());
    }
    Ok(Some(root.join(name)))
}

/// Checks a checkpoint directory's manifest (its version) and, for each of `files`, its size
/// and SHA-256 against the manifest. Any mismatch is an error naming the file.
fn verify(dir: &Path, files: &[&str]) -> Result<()> {
    let manifest_path = dir.join(MANIFEST);
    if let Ok(m) = fs::metadata(&manifest_path)
        && m.len() > MAX_MANIFEST_BYTES
    {
        bail!(
            "{} is {} bytes, not a checkpoint manifest; refusing to load it",
            manifest_path.display(),
            m.len()
        );
    }
    let text = fs::read_to_string(&manifest_path).with_context(|| {
        format!(
            "{} is not a complete checkpoint (no readable {MANIFEST})",
            dir.display()
        )
    })?;
    let manifest: Manifest = serde_json::from_str(&text)
        .with_context(|| format!("{} is corrupt", manifest_path.display()))?;
    if manifest.format_version != FORMAT_VERSION {
        bail!(
            "{} has checkpoint format {}, this version reads format {FORMAT_VERSION}",
            dir.display(),
            manifest.format_version
        );
    }
    for &f in files {
        let entry = manifest
            .files
            .get(f)
            .with_context(|| format!("{} lists no {f}", manifest_path.display()))?;
        let path = dir.join(f);
        // The size first: a file of the wrong size is refused without reading it.
        let size = fs::metadata(&path)
            .with_context(|| format!("checkpoint file {} is missing", path.display()))?
            .len();
        let (sha, bytes) = if size == entry.bytes {
            sha256_file(&path)?
        } else {
            (String::new(), size)
        };
        if bytes != entry.bytes {
            bail!(
                "checkpoint file {} has {bytes} bytes, its manifest says {}: truncated or altered; refusing to load it",
                path.display(),
                entry.bytes
            );
        }
        if sha != entry.sha256 {
            bail!(
                "checkpoint file {} does not match its SHA-256 in the manifest: corrupted or altered; refusing to load it",
                path.display()
            );
        }
    }
    Ok(())
}

/// Reads and verifies a checkpoint directory: the manifest's version, then each file's size and
/// SHA-256, then the contents. Any mismatch is an error naming the file.
pub fn read(dir: &Path, device: &Device) -> Result<(TensorMap, serde_json::Value)> {
    verify(dir, &[TENSORS, STATE])?;
    let tensors = candle_core::safetensors::load(dir.join(TENSORS), device)
        .with_context(|| format!("cannot read {}", dir.join(TENSORS).display()))?;
    Ok((tensors, read_state_file(dir)?))
}

fn read_state_file(dir: &Path) -> Result<serde_json::Value> {
    let p = dir.join(STATE);
    let bytes = fs::read(&p).with_context(|| format!("cannot read {}", p.display()))?;
    serde_json::from_slice(&bytes).with_context(|| format!("{} is not valid JSON", p.display()))
}

/// Reads and verifies only the JSON state of a checkpoint (configuration, loop and optimizer
/// metadata, vocabularies), without loading its tensors.
pub fn read_state(dir: &Path) -> Result<serde_json::Value> {
    verify(dir, &[STATE])?;
    read_state_file(dir)
}

/// Deletes checkpoints under `root` except the `keep` newest (by name order, which is step
/// order for the names the trainer uses), those named in `protect`, and the one `latest`
/// names (which is what a resume reads, even when stray checkpoints of higher steps are
/// present).
pub fn prune(root: &Path, keep: usize, protect: &[PathBuf]) -> Result<()> {
    let latest = resolve_pointer(root, "latest")?;
    let names = step_dirs(root)?;
    let n = names.len();
    for p in names.into_iter().take(n.saturating_sub(keep)) {
        if !protect.contains(&p) && latest.as_ref() != Some(&p) {
            fs::remove_dir_all(&p).with_context(|| format!("cannot remove {}", p.display()))?;
        }
    }
    Ok(())
}

/// The newest `step-*` checkpoint under `root` whose state reads and verifies, if any (used
/// when no `latest` pointer names one).
pub fn newest_complete(root: &Path) -> Option<PathBuf> {
    step_dirs(root)
        .ok()?
        .into_iter()
        .rev()
        .find(|p| read_state(p).is_ok())
}

/// The `step-*` checkpoint directories under `root`, oldest first (name order is step order);
/// none when `root` does not exist.
pub fn step_dirs(root: &Path) -> Result<Vec<PathBuf>> {
    if !root.exists() {
        return Ok(Vec::new());
    }
    let mut dirs: Vec<PathBuf> = fs::read_dir(root)
        .with_context(|| format!("cannot list {}", root.display()))?
        .filter_map(|e| e.ok())
        .map(|e| e.path())
        .filter(|p| {
            p.is_dir()
                && p.file_name()
                    .is_some_and(|n| n.to_string_lossy().starts_with("step-"))
        })
        .collect();
    dirs.sort();
    Ok(dirs)
}

/// The checkpoint name of a step: `step-000000001234`, so that name order is step order.
pub fn step_name(step: u64) -> String {
    format!("step-{step:012}")
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Tensor;

    fn sample() -> (TensorMap, serde_json::Value) {
        let mut m = TensorMap::new();
        m.insert(
            "w".into(),
            Tensor::new(&[1f32, 2.0, 3.0], &Device::Cpu).unwrap(),
        );
        (m, serde_json::json!({"step": 7}))
    }

    #[cfg(unix)]
    #[test]
    fn every_file_of_a_checkpoint_has_the_same_permissions() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let (t, s) = sample();
        let ck = write(dir.path(), "step-1", &t, &s).unwrap();
        let mode = |f: &str| fs::metadata(ck.join(f)).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(TENSORS), mode(STATE));
        assert_eq!(mode(MANIFEST), mode(STATE));
    }

    #[test]
    fn write_then_read_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let (m, s) = sample();
        let p = write(dir.path(), &step_name(7), &m, &s).unwrap();
        set_pointer(dir.path(), "latest", &step_name(7)).unwrap();
        assert_eq!(resolve_pointer(dir.path(), "latest").unwrap().unwrap(), p);
        let (m2, s2) = read(&p, &Device::Cpu).unwrap();
        assert_eq!(s2, s);
        assert_eq!(m2["w"].to_vec1::<f32>().unwrap(), vec![1.0, 2.0, 3.0]);
        assert!(
            write(dir.path(), &step_name(7), &m, &s).is_err(),
            "names are unique"
        );
    }

    #[test]
    fn corrupted_or_truncated_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let (m, s) = sample();
        let p = write(dir.path(), "step-1", &m, &s).unwrap();
        let t = p.join(TENSORS);
        let mut bytes = fs::read(&t).unwrap();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        fs::write(&t, &bytes).unwrap();
        let e = read(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("SHA-256"), "{e}");
        bytes.truncate(bytes.len() / 2);
        fs::write(&t, &bytes).unwrap();
        let e = read(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("truncated"), "{e}");
        fs::remove_file(p.join(MANIFEST)).unwrap();
        let e = read(&p, &Device::Cpu).unwrap_err().to_string();
        assert!(e.contains("not a complete checkpoint"), "{e}");
    }

    #[test]
    fn the_state_alone_is_read_and_verified_without_the_tensors() {
        let dir = tempfile::tempdir().unwrap();
        let (m, s) = sample();
        let p = write(dir.path(), "step-1", &m, &s).unwrap();
        assert_eq!(read_state(&p).unwrap(), s);
        // A damaged tensors file does not stop the state from being read (it is not loaded)...
        let t = p.join(TENSORS);
        let mut bytes = fs::read(&t).unwrap();
        bytes[0] ^= 0xff;
        fs::write(&t, &bytes).unwrap();
        assert_eq!(read_state(&p).unwrap(), s);
        assert!(read(&p, &Device::Cpu).is_err());
        // ...but a damaged state file is refused, named.
        let st = p.join(STATE);
        let mut bytes = fs::read(&st).unwrap();
        bytes[2] ^= 0x01;
        fs::write(&st, &bytes).unwrap();
        let e = read_state(&p).unwrap_err().to_string();
        assert!(e.contains("SHA-256") && e.contains(STATE), "{e}");
    }

    #[test]
    fn a_half_written_checkpoint_leaves_the_pointer_on_the_previous_one() {
        let dir = tempfile::tempdir().unwrap();
        let (m, s) = sample();
        write(dir.path(), "step-1", &m, &s).unwrap();
        set_pointer(dir.path(), "latest", "step-1").unwrap();
        // A crash while writing step-2: only its temporary directory exists.
        fs::create_dir_all(dir.path().join(".tmp-step-2")).unwrap();
        fs::write(dir.path().join(".tmp-step-2").join(TENSORS), b"partial").unwrap();
        let latest = resolve_pointer(dir.path(), "latest").unwrap().unwrap();
        assert!(read(&latest, &Device::Cpu).is_ok());
        // Writing step-2 again replaces the stale temporary directory.
        write(dir.path(), "step-2", &m, &s).unwrap();
        assert!(read(&dir.path().join("step-2"), &Device::Cpu).is_ok());
    }

    #[test]
    fn prune_keeps_newest_and_protected() {
        let dir = tempfile::tempdir().unwrap();
        let (m, s) = sample();
        for i in 1..=5 {
            write(dir.path(), &step_name(i), &m, &s).unwrap();
        }
        let best = dir.path().join(step_name(1));
        prune(dir.path(), 2, std::slice::from_ref(&best)).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        left.sort();
        assert_eq!(left, vec![step_name(1), step_name(4), step_name(5)]);
    }

    /// The checkpoint `latest` names survives pruning even when newer-named ones exist (stray
    /// checkpoints of higher steps from an earlier run).
    #[test]
    fn prune_keeps_the_latest_pointer_target() {
        let dir = tempfile::tempdir().unwrap();
        let (m, s) = sample();
        for i in [120, 140, 144, 48] {
            write(dir.path(), &step_name(i), &m, &s).unwrap();
        }
        set_pointer(dir.path(), "latest", &step_name(48)).unwrap();
        prune(dir.path(), 2, &[]).unwrap();
        let mut left: Vec<String> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .filter(|n| n.starts_with("step-"))
            .collect();
        left.sort();
        assert_eq!(left, vec![step_name(48), step_name(140), step_name(144)]);
        let latest = resolve_pointer(dir.path(), "latest").unwrap().unwrap();
        assert!(read(&latest, &Device::Cpu).is_ok());
    }

    #[test]
    fn pointer_with_path_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("latest"), "../../etc\n").unwrap();
        assert!(resolve_pointer(dir.path(), "latest").is_err());
    }
}
