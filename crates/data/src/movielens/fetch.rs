//! Obtaining ml-100k (`cargo xtask data fetch ml-100k`) and loading it through the binary cache.
//!
//! Sources, tried in order:
//! 0. `ml-100k.zip` already in the data set directory (put there by hand on an offline machine);
//! 1. the GroupLens zip, downloaded with `curl` (short connect timeout; skipped when curl is
//!    absent or the host unreachable);
//! 2. the PyPI wheel of RecBole 1.2.1 (`python3 -m pip download --no-deps recbole==1.2.1`),
//!    whose `recbole/dataset_example/ml-100k/` holds the atomic files;
//! 3. otherwise an error that says what to do. There is no silent fallback to other data.
//!
//! What is verified:
//! - the GroupLens zip against its SHA-256 ([`GROUPLENS_ZIP_SHA256`], as pinned by TensorFlow
//!   Datasets' checksum list; GroupLens itself publishes an MD5). The extracted `u.*` files are
//!   then recorded in a local manifest, `grouplens.sha256`, with the zip's digest, and checked
//!   against it later (a manifest that names another zip digest than the expected one is not
//!   trusted);
//! - the three atomic files taken from the wheel against digests pinned here
//!   ([`RECBOLE_SHA256`], computed once from the recbole 1.2.1 wheel), both when extracted and
//!   whenever the directory is checked again.
//!
//! A fetch is idempotent: when a verified copy is present it does nothing. Members are read
//! into memory at most [`MEMBER_LIMIT_BYTES`] each, before their digests are checked.
//! Temporary `.download-*` directories that an interrupted fetch left behind are removed by
//! the next fetch once they are a day old (a younger one may belong to a fetch still running).

use std::ffi::OsString;
use std::fs;
use std::path::{Path, PathBuf};

use super::cache::{self, CACHE_FILE};
use super::{Layout, MovieLens100k};
use crate::error::{DataError, Result};
use crate::fetch::{
    curl_download, pip_download_wheel, read_zip_members, sha256_file, sha256_hex, verify_sha256,
    write_atomic,
};

/// Where GroupLens publishes ml-100k.
pub const GROUPLENS_URL: &str = "https://files.grouplens.org/datasets/movielens/ml-100k.zip";
/// SHA-256 of `ml-100k.zip` (4,924,029 bytes; MD5 0e33842e24a9c977be4e0107933c0723).
pub const GROUPLENS_ZIP_SHA256: &str =
    "50d2a982c66986937beb9ffb3aa76efe955bf3d5c6b761f4e3a7cd717c6a3229";
/// The PyPI package that ships the atomic files.
pub const RECBOLE_REQUIREMENT: &str = "recbole==1.2.1";
/// SHA-256 of the atomic files in the recbole 1.2.1 wheel.
pub const RECBOLE_SHA256: [(&str, &str); 3] = [
    (
        "ml-100k.user",
        "4f670007d9cfbeb9807e757209af1555b9bcc186bde25e767f67cb67c6dd5972",
    ),
    (
        "ml-100k.item",
        "51d7cdf777ce5c0f5b32c1d947a4a81fe07d75e78abbe761e0cd4d0756064532",
    ),
    (
        "ml-100k.inter",
        "4edb74e2a81178c2ba9ff381495f754f996c4aea351b1272ca36b43da0935eff",
    ),
];
const WHEEL_DIR: &str = "recbole/dataset_example/ml-100k/";
const ZIP_FILE: &str = "ml-100k.zip";
const ZIP_DIR: &str = "ml-100k/";
const MANIFEST: &str = "grouplens.sha256";
/// The manifest's first line, before the zip's digest (`ZIP_FILE` is the zip's name).
const MANIFEST_ZIP_PREFIX: &str = "# extracted from ml-100k.zip with SHA-256 ";
const DOWNLOAD_PREFIX: &str = ".download-";
/// How old a `.download-*` directory must be before a fetch removes it as abandoned.
const STALE_DOWNLOAD: std::time::Duration = std::time::Duration::from_secs(24 * 3600);
/// The most bytes read from one archive member: the largest ml-100k file, `u.data` or
/// `ml-100k.inter`, is under 2 MB in both sources.
pub const MEMBER_LIMIT_BYTES: u64 = 4 << 20;

/// File names and their SHA-256 digests (lower-case hex).
pub type FileDigests = Vec<(String, String)>;

/// The directory of ml-100k under the data root.
pub fn dataset_dir(root: &Path) -> PathBuf {
    root.join("ml-100k")
}

/// How [`fetch`] reaches its sources. The defaults are the real ones; tests point them
/// elsewhere.
#[derive(Debug, Clone)]
pub struct FetchOptions {
    /// URL of the GroupLens zip.
    pub grouplens_url: String,
    /// Expected SHA-256 of the GroupLens zip.
    pub grouplens_sha256: String,
    /// The curl program (`curl`).
    pub curl: OsString,
    /// Seconds curl may spend connecting.
    pub connect_timeout_s: u32,
    /// Seconds curl may spend in all.
    pub max_time_s: u32,
    /// The Python interpreter used for `-m pip download` (`python3`).
    pub python: OsString,
    /// The requirement pip downloads.
    pub recbole_requirement: String,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            grouplens_url: GROUPLENS_URL.into(),
            grouplens_sha256: GROUPLENS_ZIP_SHA256.into(),
            curl: "curl".into(),
            connect_timeout_s: 5,
            max_time_s: 120,
            python: "python3".into(),
            recbole_requirement: RECBOLE_REQUIREMENT.into(),
        }
    }
}

/// Where the files came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Obtained {
    /// A verified copy was already there; nothing was done.
    AlreadyPresent,
    /// From an `ml-100k.zip` found in the directory.
    LocalZip,
    /// Downloaded from GroupLens.
    GroupLens,
    /// Extracted from the RecBole wheel on PyPI.
    RecBoleWheel,
}

/// What [`fetch`] did.
#[derive(Debug, Clone)]
pub struct FetchReport {
    /// The data set directory.
    pub dir: PathBuf,
    /// The layout now present.
    pub layout: Layout,
    /// Where it came from.
    pub obtained: Obtained,
    /// Sources tried before the one that worked, with the reason each failed.
    pub skipped: Vec<String>,
    /// The files and their verified SHA-256 digests.
    pub verified: FileDigests,
}

/// A verified copy of ml-100k in `dir`, if there is one: its layout and its files' digests.
/// GroupLens files are checked against the manifest written when their zip was verified, and
/// only if that manifest records `grouplens_zip_sha256` (normally [`GROUPLENS_ZIP_SHA256`]) as
/// the zip's digest; atomic files against the pinned digests.
pub fn find_verified(
    dir: &Path,
    grouplens_zip_sha256: &str,
) -> Result<Option<(Layout, FileDigests)>> {
    if let Some((zip_digest, manifest)) = read_manifest(dir)?
        && zip_digest.as_deref() == Some(grouplens_zip_sha256)
    {
        let mut ok = true;
        let mut digests = Vec::new();
        for name in Layout::GroupLens.files() {
            let p = dir.join(name);
            let expected = manifest.iter().find(|(n, _)| n == name).map(|(_, d)| d);
            match (p.is_file(), expected) {
                (true, Some(d)) => {
                    let actual = sha256_file(&p)?;
                    ok &= &actual == d;
                    digests.push((name.to_string(), actual));
                }
                _ => ok = false,
            }
        }
        if ok {
            return Ok(Some((Layout::GroupLens, digests)));
        }
    }
    let mut digests = Vec::new();
    for (name, expected) in RECBOLE_SHA256 {
        let p = dir.join(name);
        if !p.is_file() {
            return Ok(None);
        }
        let actual = sha256_file(&p)?;
        if actual != expected {
            return Ok(None);
        }
        digests.push((name.to_string(), actual));
    }
    Ok(Some((Layout::Atomic, digests)))
}

/// The manifest's recorded zip digest (from its first line) and its file digests.
fn read_manifest(dir: &Path) -> Result<Option<(Option<String>, FileDigests)>> {
    let p = dir.join(MANIFEST);
    if !p.is_file() {
        return Ok(None);
    }
    let text = fs::read_to_string(&p).map_err(|e| DataError::io(&p, e))?;
    let zip_digest = text
        .lines()
        .next()
        .and_then(|l| l.strip_prefix(MANIFEST_ZIP_PREFIX))
        .map(|d| d.trim().to_string());
    let files = text
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once("  "))
        .map(|(d, n)| (n.trim().to_string(), d.trim().to_string()))
        .collect();
    Ok(Some((zip_digest, files)))
}

/// Removes the `.download-*` directories in `dir` older than `min_age` (left by fetches that
/// were killed); younger ones may belong to a fetch still running. Returns what it removed.
/// Failures are ignored: an abandoned directory only costs disk space.
fn remove_stale_downloads(dir: &Path, min_age: std::time::Duration) -> Vec<PathBuf> {
    let Ok(entries) = fs::read_dir(dir) else {
        return Vec::new();
    };
    let now = std::time::SystemTime::now();
    entries
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(DOWNLOAD_PREFIX))
        .filter(|e| {
            e.metadata().is_ok_and(|m| {
                m.is_dir()
                    && m.modified()
                        .is_ok_and(|t| now.duration_since(t).is_ok_and(|age| age >= min_age))
            })
        })
        .map(|e| e.path())
        .filter(|p| fs::remove_dir_all(p).is_ok())
        .collect()
}

/// Makes sure a verified copy of ml-100k is in `dataset_dir(root)`, trying the sources in
/// order (see the module documentation). Does nothing when one is already there.
pub fn fetch(root: &Path, opts: &FetchOptions) -> Result<FetchReport> {
    let dir = dataset_dir(root);
    fs::create_dir_all(&dir).map_err(|e| DataError::io(&dir, e))?;
    let report = |layout, obtained, skipped, verified| FetchReport {
        dir: dir.clone(),
        layout,
        obtained,
        skipped,
        verified,
    };
    // Swept on every fetch, also one that finds a verified copy: a fetch killed and rerun at
    // once leaves a young folder that only a later fetch can recognise as abandoned.
    remove_stale_downloads(&dir, STALE_DOWNLOAD);
    if let Some((layout, verified)) = find_verified(&dir, &opts.grouplens_sha256)? {
        return Ok(report(layout, Obtained::AlreadyPresent, vec![], verified));
    }
    let mut skipped = Vec::new();

    // 0. A zip placed in the directory by hand.
    let local = dir.join(ZIP_FILE);
    if local.is_file() {
        match install_grouplens_zip(&local, &opts.grouplens_sha256, &dir) {
            Ok(v) => return Ok(report(Layout::GroupLens, Obtained::LocalZip, skipped, v)),
            Err(e) => skipped.push(format!("{}: {e}", local.display())),
        }
    }

    // 1. The GroupLens zip over the network.
    let tmp = tempfile::Builder::new()
        .prefix(DOWNLOAD_PREFIX)
        .tempdir_in(&dir)
        .map_err(|e| DataError::io(&dir, e))?;
    let part = tmp.path().join(ZIP_FILE);
    match curl_download(
        &opts.curl,
        &opts.grouplens_url,
        &part,
        opts.connect_timeout_s,
        opts.max_time_s,
    ) {
        Ok(()) => match install_grouplens_zip(&part, &opts.grouplens_sha256, &dir) {
            Ok(v) => return Ok(report(Layout::GroupLens, Obtained::GroupLens, skipped, v)),
            Err(e) => skipped.push(format!("GroupLens zip: {e}")),
        },
        Err(e) => skipped.push(format!("GroupLens zip: {e}")),
    }

    // 2. The RecBole wheel from PyPI.
    match pip_download_wheel(&opts.python, &opts.recbole_requirement, tmp.path()) {
        Ok(wheel) => match install_wheel(&wheel, &dir) {
            Ok(v) => return Ok(report(Layout::Atomic, Obtained::RecBoleWheel, skipped, v)),
            Err(e) => skipped.push(format!("{}: {e}", opts.recbole_requirement)),
        },
        Err(e) => skipped.push(format!("{}: {e}", opts.recbole_requirement)),
    }

    // 3. Nothing worked: say what to do.
    Err(DataError::Fetch(format!(
        "could not obtain MovieLens-100k into {}:\n  - {}\nTo fix it, do one of:\n  \
         - connect to the internet (files.grouplens.org, or PyPI through pip) and run \
         `cargo xtask data fetch ml-100k` again;\n  \
         - download {} elsewhere and put it at {} (it is checked against SHA-256 {}), then rerun;\n  \
         - run `python3 -m pip download --no-deps {} -d <dir>` where PyPI is reachable and copy \
         the files {}ml-100k.{{user,item,inter}} out of the wheel (a zip) into {}.\n\
         Set {} to use another data directory.",
        dir.display(),
        skipped.join("\n  - "),
        GROUPLENS_URL,
        local.display(),
        GROUPLENS_ZIP_SHA256,
        RECBOLE_REQUIREMENT,
        WHEEL_DIR,
        dir.display(),
        crate::fetch::DATA_DIR_ENV,
    )))
}

/// Verifies the GroupLens zip, extracts `u.user`, `u.item`, `u.data` into `dir` and writes the
/// manifest of their digests.
pub(crate) fn install_grouplens_zip(
    zip: &Path,
    expected_sha256: &str,
    dir: &Path,
) -> Result<FileDigests> {
    let actual = sha256_file(zip)?;
    if actual != expected_sha256 {
        return Err(DataError::Checksum {
            file: zip.into(),
            expected: expected_sha256.into(),
            actual,
        });
    }
    let names = Layout::GroupLens.files();
    let members: Vec<String> = names.iter().map(|n| format!("{ZIP_DIR}{n}")).collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let contents = read_zip_members(zip, &refs, MEMBER_LIMIT_BYTES)?;
    let mut verified = Vec::new();
    let mut manifest = format!("{MANIFEST_ZIP_PREFIX}{actual}\n");
    for (name, bytes) in names.iter().zip(&contents) {
        write_atomic(&dir.join(name), bytes)?;
        let d = sha256_hex(bytes);
        manifest.push_str(&format!("{d}  {name}\n"));
        verified.push((name.to_string(), d));
    }
    write_atomic(&dir.join(MANIFEST), manifest.as_bytes())?;
    Ok(verified)
}

/// Reads the three atomic files out of the RecBole wheel, verifies them against the pinned
/// digests and writes them into `dir`. Nothing is written unless all three verify.
pub(crate) fn install_wheel(wheel: &Path, dir: &Path) -> Result<FileDigests> {
    let members: Vec<String> = RECBOLE_SHA256
        .iter()
        .map(|(n, _)| format!("{WHEEL_DIR}{n}"))
        .collect();
    let refs: Vec<&str> = members.iter().map(String::as_str).collect();
    let contents = read_zip_members(wheel, &refs, MEMBER_LIMIT_BYTES)?;
    for ((member, (_, expected)), bytes) in members.iter().zip(RECBOLE_SHA256).zip(&contents) {
        verify_sha256(wheel.join(member), bytes, expected)?;
    }
    for ((name, _), bytes) in RECBOLE_SHA256.iter().zip(&contents) {
        write_atomic(&dir.join(name), bytes)?;
    }
    Ok(RECBOLE_SHA256
        .iter()
        .map(|(n, d)| (n.to_string(), d.to_string()))
        .collect())
}

/// How [`load`] got the data set.
#[derive(Debug, Clone)]
pub struct LoadReport {
    /// The data set directory.
    pub dir: PathBuf,
    /// The layout read (or whose cache was read).
    pub layout: Layout,
    /// True when the binary cache was used.
    pub from_cache: bool,
    /// Why the cache was not used, or could not be written, if so.
    pub cache_note: Option<String>,
    /// What a fetch did, when one ran.
    pub fetch: Option<FetchReport>,
}

/// Loads ml-100k from `dataset_dir(root)`: verifies the source files, then reads the binary
/// cache if it is valid for them, else parses the files and rewrites the cache (a cache that
/// cannot be written is reported, not fatal). With `fetch_opts`, a missing or unverified copy
/// is fetched first (and GroupLens files verify against its `grouplens_sha256`); without, it
/// is an error that says how to fetch it (and the pinned [`GROUPLENS_ZIP_SHA256`] applies).
pub fn load(root: &Path, fetch_opts: Option<&FetchOptions>) -> Result<(MovieLens100k, LoadReport)> {
    let dir = dataset_dir(root);
    let mut fetched = None;
    let zip_sha256 = fetch_opts.map_or(GROUPLENS_ZIP_SHA256, |o| o.grouplens_sha256.as_str());
    let (layout, digests) = match find_verified(&dir, zip_sha256)? {
        Some(v) => v,
        None => match fetch_opts {
            Some(opts) => {
                let r = fetch(root, opts)?;
                let v = (r.layout, r.verified.clone());
                fetched = Some(r);
                v
            }
            None => {
                return Err(DataError::Missing(format!(
                    "MovieLens-100k is not in {} (or does not verify): run \
                     `cargo xtask data fetch ml-100k` first (set {} to use another directory)",
                    dir.display(),
                    crate::fetch::DATA_DIR_ENV
                )));
            }
        },
    };
    let source = format!(
        "{}:{}",
        layout.name(),
        digests
            .iter()
            .map(|(n, d)| format!("{n}={d}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    let cache_path = dir.join(CACHE_FILE);
    let mut report = LoadReport {
        dir: dir.clone(),
        layout,
        from_cache: false,
        cache_note: None,
        fetch: fetched,
    };
    match cache::load(&cache_path, &source) {
        Ok(ds) => {
            report.from_cache = true;
            Ok((ds, report))
        }
        Err(why) => {
            let ds = MovieLens100k::read_layout(&dir, layout)?;
            let mut note = format!("cache rebuilt: {why}");
            if let Err(e) = cache::save(&cache_path, &ds, &source) {
                note.push_str(&format!("; could not write it: {e}"));
            }
            report.cache_note = Some(note);
            Ok((ds, report))
        }
    }
}

pub(super) fn load_or_fetch_in(
    root: &Path,
    opts: &FetchOptions,
) -> Result<(MovieLens100k, LoadReport)> {
    load(root, Some(opts))
}

pub(super) fn load_in(root: &Path) -> Result<(MovieLens100k, LoadReport)> {
    load(root, None)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A directory opened so that its times can be set: Windows opens a directory only with
    /// `FILE_FLAG_BACKUP_SEMANTICS`, and sets times only with `FILE_WRITE_ATTRIBUTES`.
    fn open_dir_for_times(dir: &Path) -> fs::File {
        #[cfg(windows)]
        {
            use std::os::windows::fs::OpenOptionsExt as _;
            fs::OpenOptions::new()
                .access_mode(0x0100) // FILE_WRITE_ATTRIBUTES
                .custom_flags(0x0200_0000) // FILE_FLAG_BACKUP_SEMANTICS
                .open(dir)
                .unwrap()
        }
        #[cfg(not(windows))]
        {
            fs::File::open(dir).unwrap()
        }
    }
    use std::io::Write;

    fn offline() -> FetchOptions {
        FetchOptions {
            grouplens_url: "http://127.0.0.1:9/ml-100k.zip".into(),
            curl: "no-such-curl-for-tests".into(),
            python: "no-such-python-for-tests".into(),
            connect_timeout_s: 1,
            max_time_s: 2,
            ..FetchOptions::default()
        }
    }

    #[test]
    fn all_sources_failing_gives_an_actionable_error() {
        let root = tempfile::tempdir().unwrap();
        let err = fetch(root.path(), &offline()).unwrap_err().to_string();
        assert!(err.contains("could not obtain MovieLens-100k"), "{err}");
        assert!(err.contains("GroupLens zip"), "{err}");
        assert!(err.contains("recbole==1.2.1"), "{err}");
        assert!(err.contains("cargo xtask data fetch ml-100k"), "{err}");
        assert!(err.contains("REC_DATA_DIR"), "{err}");
        // And loading without fetching says how to fetch.
        let err = MovieLens100k::load_in(root.path()).unwrap_err().to_string();
        assert!(err.contains("cargo xtask data fetch ml-100k"), "{err}");
    }

    fn grouplens_zip(path: &Path, files: &[(&str, &[u8])]) {
        let mut w = zip::ZipWriter::new(fs::File::create(path).unwrap());
        let o = zip::write::SimpleFileOptions::default();
        for (n, b) in files {
            w.start_file(format!("ml-100k/{n}"), o).unwrap();
            w.write_all(b).unwrap();
        }
        w.finish().unwrap();
    }

    #[test]
    fn local_zip_is_verified_installed_and_then_left_alone() {
        let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/grouplens");
        let read = |n: &str| fs::read(fixtures.join(n)).unwrap();
        let (u, i, d) = (read("u.user"), read("u.item"), read("u.data"));
        let root = tempfile::tempdir().unwrap();
        let dir = dataset_dir(root.path());
        fs::create_dir_all(&dir).unwrap();
        let zip = dir.join(ZIP_FILE);
        grouplens_zip(&zip, &[("u.user", &u), ("u.item", &i), ("u.data", &d)]);

        // The fixture zip is not the real one: refused by the real digest...
        let err = fetch(root.path(), &offline()).unwrap_err().to_string();
        assert!(err.contains("SHA-256"), "{err}");
        assert!(!dir.join("u.data").exists());
        // ...accepted by its own.
        let opts = FetchOptions {
            grouplens_sha256: sha256_file(&zip).unwrap(),
            ..offline()
        };
        let r = fetch(root.path(), &opts).unwrap();
        assert_eq!(
            (r.layout, r.obtained),
            (Layout::GroupLens, Obtained::LocalZip)
        );
        assert_eq!(fs::read(dir.join("u.data")).unwrap(), d);
        // Idempotent; and it sweeps a day-old abandoned download folder even then.
        let stale = dir.join(".download-killed");
        fs::create_dir(&stale).unwrap();
        let two_days = std::time::SystemTime::now() - 2 * STALE_DOWNLOAD;
        open_dir_for_times(&stale).set_modified(two_days).unwrap();
        let r = fetch(root.path(), &opts).unwrap();
        assert_eq!(r.obtained, Obtained::AlreadyPresent);
        assert!(!stale.exists());
        // Its manifest records the fixture zip's digest, so the pinned digest does not trust it.
        assert!(find_verified(&dir, GROUPLENS_ZIP_SHA256).unwrap().is_none());
        assert!(
            find_verified(&dir, &opts.grouplens_sha256)
                .unwrap()
                .is_some()
        );
        let err = load(root.path(), None).unwrap_err().to_string();
        assert!(err.contains("does not verify"), "{err}");
        // Loading parses once, then uses the cache; an edited source invalidates everything.
        let load = |root: &Path| load(root, Some(&opts));
        let (a, rep) = load(root.path()).unwrap();
        assert!(!rep.from_cache);
        assert!(rep.fetch.is_none());
        let (b, rep) = load(root.path()).unwrap();
        assert!(rep.from_cache, "{:?}", rep.cache_note);
        assert_eq!(a, b);
        assert_eq!(a, MovieLens100k::read_grouplens(&fixtures).unwrap());
        // A corrupt cache is never trusted: it is rebuilt from the files.
        let cache = dir.join(CACHE_FILE);
        let mut bytes = fs::read(&cache).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0x01;
        fs::write(&cache, &bytes).unwrap();
        let (c, rep) = load(root.path()).unwrap();
        assert!(!rep.from_cache);
        assert!(rep.cache_note.unwrap().contains("checksum"));
        assert_eq!(c, a);
        assert!(load(root.path()).unwrap().1.from_cache);
        let mut edited = d.clone();
        edited.extend_from_slice(b"1\t1\t5\t900000000\n");
        fs::write(dir.join("u.data"), edited).unwrap();
        assert!(
            find_verified(&dir, &opts.grouplens_sha256)
                .unwrap()
                .is_none()
        );
        // Loading with a fetch restores the file from the zip still in the directory.
        let (e, rep) = load(root.path()).unwrap();
        assert_eq!(rep.fetch.unwrap().obtained, Obtained::LocalZip);
        assert_eq!(fs::read(dir.join("u.data")).unwrap(), d);
        assert_eq!(e, a);
    }

    #[test]
    fn abandoned_download_directories_are_removed_once_old() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        for n in [".download-a", ".download-b", "other"] {
            fs::create_dir(d.join(n)).unwrap();
        }
        fs::write(d.join(".download-a").join(ZIP_FILE), b"partial").unwrap();
        fs::write(d.join(".download-file"), b"not a directory").unwrap();
        // Young directories may belong to a running fetch: kept.
        let hour = std::time::Duration::from_secs(3600);
        assert!(remove_stale_downloads(d, hour).is_empty());
        assert!(d.join(".download-a").is_dir());
        // Old enough (here: any age), they go, with their contents; nothing else does.
        let mut removed = remove_stale_downloads(d, std::time::Duration::ZERO);
        removed.sort();
        assert_eq!(removed, vec![d.join(".download-a"), d.join(".download-b")]);
        assert!(d.join("other").is_dir());
        assert!(d.join(".download-file").is_file());
    }

    #[test]
    fn wheel_members_are_checked_against_pinned_digests() {
        let root = tempfile::tempdir().unwrap();
        let wheel = root.path().join("fake.whl");
        // A wheel whose three atomic files all hold `content`.
        let write_wheel = |content: &[u8]| {
            let mut w = zip::ZipWriter::new(fs::File::create(&wheel).unwrap());
            for (n, _) in RECBOLE_SHA256 {
                w.start_file(
                    format!("{WHEEL_DIR}{n}"),
                    zip::write::SimpleFileOptions::default(),
                )
                .unwrap();
                w.write_all(content).unwrap();
            }
            w.finish().unwrap();
        };
        write_wheel(b"not the real file");
        let err = install_wheel(&wheel, root.path()).unwrap_err();
        assert!(matches!(err, DataError::Checksum { .. }), "{err}");
        assert!(!root.path().join("ml-100k.user").exists());

        // A member larger than any ml-100k file is refused before it is read whole.
        write_wheel(&vec![b'x'; MEMBER_LIMIT_BYTES as usize + 1]);
        let err = install_wheel(&wheel, root.path()).unwrap_err().to_string();
        assert!(err.contains("larger than"), "{err}");
        assert!(!root.path().join("ml-100k.user").exists());
    }
}
