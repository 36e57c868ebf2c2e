//! A result cache for long experiments: every finished unit of work (one training run, one
//! seed of a section) is stored as a JSON file keyed by everything that determines it, so an
//! interrupted `cargo xtask experiment ...` continues where it stopped instead of starting
//! over. The full protocols take hours on a 2-core machine; without this, a stopped run loses
//! all of them.
//!
//! Files: `<target dir>/experiments/<experiment>/<hash>.json`, each holding the key, the git
//! commit that produced it, and the value. A file is written atomically (temporary file +
//! rename) after its unit finishes, so a killed run never leaves a half-written entry. A file
//! whose key differs from the one asked for (a hash collision, or a changed format) is ignored
//! and recomputed.
//!
//! The key holds the configuration, the seed and a format version, not the code: after
//! changing a model or the experiment, run with `--fresh` (recompute everything), or put a
//! revision of the changed model in its keys (the SAML experiment's `revision`) so that only
//! its units are recomputed. The results
//! page lists the commits its numbers come from. `--verify PERCENT` recomputes a sample of the
//! reused units with the code as it is now and reports how far their stored numbers are from
//! the new ones (the page keeps the stored ones), so a page built from units of older commits
//! can say whether those commits still compute the same thing.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;

use anyhow::{Context, Result};
use rec_trainer::lock::ProcessLock;
use serde::Serialize;
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// The cache of one experiment.
#[derive(Debug)]
pub struct RunCache {
    dir: Option<PathBuf>,
    fresh: bool,
    commit: String,
    seen: Mutex<Seen>,
    /// Every unit this run has loaded or computed, by key: asked again (an experiment that
    /// first claims units, then collects them all), it is returned as it was, also with
    /// `fresh`, and counted once.
    memo: Mutex<HashMap<String, Value>>,
    /// Percentage of the units read from disk to recompute and compare ([`Self::verifying`]).
    verify_percent: u32,
}

/// What a run of the cache has used so far.
#[derive(Debug, Default)]
struct Seen {
    /// Commits of the entries used or written.
    commits: BTreeSet<String>,
    /// Units read from disk.
    reused: usize,
    /// Units computed by this run.
    computed: usize,
    /// Units read from disk that another code state (commit, or uncommitted diff) produced,
    /// by that state.
    foreign: BTreeMap<String, usize>,
    /// Units read from disk and recomputed to check them: label, stored commit, difference.
    checked: Vec<(String, String, Difference)>,
}

/// How far a stored unit is from the same unit recomputed now.
#[derive(Debug, Clone, PartialEq)]
enum Difference {
    /// The largest absolute difference between two numbers at the same place (0: equal).
    Largest(f64),
    /// The two do not have the same structure (where, in words).
    Shape(String),
}

/// The largest absolute difference between the numbers of `a` and `b` at the same places, or
/// where their structure differs. Object members whose name ends in `_secs` are wall-clock
/// times and are skipped; a number against `null` (a NaN stored as JSON `null`) or two
/// different strings or booleans count as a difference in structure.
fn difference(a: &Value, b: &Value, at: &str) -> Difference {
    use Difference::*;
    let worse = |x: Difference, y: Difference| match (x, y) {
        (Shape(w), _) | (_, Shape(w)) => Shape(w),
        (Largest(p), Largest(q)) => Largest(p.max(q)),
    };
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            let d = (x - y).abs();
            if d.is_nan() {
                Shape(format!("{at}: {x} vs {y}"))
            } else {
                Largest(d)
            }
        }
        (Value::Array(x), Value::Array(y)) if x.len() == y.len() => x
            .iter()
            .zip(y)
            .enumerate()
            .map(|(i, (p, q))| difference(p, q, &format!("{at}[{i}]")))
            .fold(Largest(0.0), worse),
        (Value::Object(x), Value::Object(y))
            if x.keys()
                .filter(|k| !k.ends_with("_secs"))
                .eq(y.keys().filter(|k| !k.ends_with("_secs"))) =>
        {
            x.iter()
                .filter(|(k, _)| !k.ends_with("_secs"))
                .map(|(k, p)| difference(p, &y[k], &format!("{at}.{k}")))
                .fold(Largest(0.0), worse)
        }
        _ if a == b => Largest(0.0),
        _ => Shape(format!("{at} differs")),
    }
}

/// FNV-1a, 64 bits: a stable hash for file names (the key itself is checked on load).
fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// The commit of the working tree (with `+dirty` when it has uncommitted changes), or
/// "unknown" outside a git checkout.
fn current_commit() -> String {
    let out = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    match out(&["rev-parse", "--short=12", "HEAD"]) {
        Some(c) if !c.is_empty() => {
            let dirty = out(&["status", "--porcelain", "--untracked-files=no"])
                .is_some_and(|s| !s.is_empty());
            // Two different uncommitted states of one commit are two code states: the hash
            // of the diff tells them apart (see `foreign_warning`).
            match out(&["diff", "HEAD", "--no-ext-diff"]).filter(|_| dirty) {
                Some(d) => format!("{c}+dirty.{:08x}", fnv1a(d.as_bytes()) as u32),
                None if dirty => format!("{c}+dirty"),
                None => c,
            }
        }
        _ => "unknown".into(),
    }
}

/// The target directory cargo uses here (`CARGO_TARGET_DIR` or `target`).
fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("target"))
}

impl RunCache {
    /// The cache of `experiment` under the target directory. With `fresh`, nothing is read
    /// (every unit is recomputed) but results are still written.
    pub fn new(experiment: &str, fresh: bool) -> Self {
        Self::at(
            Some(target_dir().join("experiments").join(experiment)),
            fresh,
        )
    }

    /// A cache in `dir`, or none at all (`None`: every unit is computed and nothing stored).
    pub fn at(dir: Option<PathBuf>, fresh: bool) -> Self {
        RunCache {
            dir,
            fresh,
            commit: current_commit(),
            seen: Mutex::new(Seen::default()),
            memo: Mutex::new(HashMap::new()),
            verify_percent: 0,
        }
    }

    /// Also recompute about `percent` % of the units read from disk (a fixed sample: those whose
    /// key hashes into it) and compare them with their stored values; the stored values are
    /// still the ones returned. [`Self::verification`] says what the comparison found.
    pub fn verifying(mut self, percent: u32) -> Self {
        self.verify_percent = percent.min(100);
        self
    }

    /// Whether the unit of `key` is in the verification sample.
    fn in_sample(&self, key: &Value) -> bool {
        // Another hash than the file name's, so the sample is not the files' order.
        let h = fnv1a(format!("verify {key}").as_bytes());
        (h % 100) < u64::from(self.verify_percent)
    }

    fn path(&self, key: &Value) -> Option<PathBuf> {
        let text = key.to_string();
        self.dir
            .as_ref()
            .map(|d| d.join(format!("{:016x}.json", fnv1a(text.as_bytes()))))
    }

    fn note(&self, commit: &str, from_disk: bool) {
        let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        s.commits.insert(commit.to_string());
        if from_disk {
            s.reused += 1;
            if commit != self.commit {
                *s.foreign.entry(commit.to_string()).or_default() += 1;
            }
        } else {
            s.computed += 1;
        }
    }

    /// The stored value for `key`, if there is a readable entry with exactly this key.
    fn load<T: DeserializeOwned>(&self, path: &Path, key: &Value) -> Option<(T, String)> {
        let text = std::fs::read_to_string(path).ok()?;
        let entry: Value = serde_json::from_str(&text).ok()?;
        if entry.get("key")? != key {
            return None;
        }
        let commit = entry.get("commit")?.as_str()?.to_string();
        let value = serde_json::from_value(entry.get("value")?.clone()).ok()?;
        Some((value, commit))
    }

    /// The value of the unit `key`: from the cache when a previous run stored it, otherwise
    /// computed by `run` and stored. When another process is computing the same unit right
    /// now, waits for its result. `label` names the unit in the progress output.
    pub fn get_or_run<T, F>(&self, label: &str, key: &Value, mut run: F) -> Result<T>
    where
        T: Serialize + DeserializeOwned,
        F: FnMut() -> Result<T>,
    {
        let mut said = false;
        loop {
            if let Some(v) = self.try_get_or_run(label, key, &mut run)? {
                return Ok(v);
            }
            if !said {
                eprintln!("  {label}: another process is computing it; waiting");
                said = true;
            }
            std::thread::sleep(std::time::Duration::from_secs(2));
        }
    }

    /// Like [`get_or_run`](Self::get_or_run), but returns `None` at once when another process
    /// holds the unit (the lock of its `<hash>.lock` file, which names that process). Two invocations of
    /// the same experiment sharing the target directory thus split the work between them: each
    /// first takes the units nobody holds, then waits for the rest.
    pub fn try_get_or_run<T, F>(&self, label: &str, key: &Value, run: F) -> Result<Option<T>>
    where
        T: Serialize + DeserializeOwned,
        F: FnOnce() -> Result<T>,
    {
        let memo_key = key.to_string();
        let remember = |v: &T| {
            if let Ok(j) = serde_json::to_value(v) {
                let mut m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
                m.insert(memo_key.clone(), j);
            }
        };
        let earlier = {
            let m = self.memo.lock().unwrap_or_else(|e| e.into_inner());
            m.get(&memo_key).cloned()
        };
        if let Some(v) = earlier.and_then(|j| serde_json::from_value::<T>(j).ok()) {
            return Ok(Some(v));
        }
        let Some(path) = self.path(key) else {
            let v = run()?;
            remember(&v);
            return Ok(Some(v));
        };
        if !self.fresh
            && let Some((v, commit)) = self.load::<T>(&path, key)
        {
            eprintln!(
                "  {label}: from the cache ({}, commit {commit})",
                path.display()
            );
            if self.in_sample(key) {
                eprintln!("  {label}: recomputing it to check the stored result (--verify)");
                let again = serde_json::to_value(run()?).context("unit to JSON")?;
                let stored = serde_json::to_value(&v).context("cache entry to JSON")?;
                let d = difference(&stored, &again, "");
                eprintln!("  {label}: checked, {d:?}");
                let mut s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
                s.checked.push((label.to_string(), commit.clone(), d));
            }
            self.note(&commit, true);
            remember(&v);
            return Ok(Some(v));
        }
        let dir = path.parent().context("cache path has a directory")?;
        std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
        // `<hash>.lock` names the process computing the unit (rec_trainer::lock).
        let Some(_lock) = ProcessLock::take(&path.with_extension("lock"))? else {
            return Ok(None);
        };
        // Another process may have finished the unit between the look-up and the lock.
        if !self.fresh
            && let Some((v, commit)) = self.load(&path, key)
        {
            self.note(&commit, true);
            remember(&v);
            return Ok(Some(v));
        }
        let value = run()?;
        let stored = serde_json::to_value(&value).context("cache entry to JSON")?;
        // JSON has no NaN: a value holding one comes back as null and would not load.
        if serde_json::from_value::<T>(stored.clone()).is_err() {
            eprintln!("  {label}: not cached (its result holds a number JSON cannot store)");
            self.note(&self.commit, false);
            return Ok(Some(value));
        }
        let entry = json!({ "key": key, "commit": self.commit, "value": stored });
        rec_trainer::checkpoint::write_atomic(&path, entry.to_string().as_bytes())
            .with_context(|| format!("cannot write the cache entry {}", path.display()))?;
        self.note(&self.commit, false);
        remember(&value);
        Ok(Some(value))
    }

    /// One sentence for a results page: how many units were computed now and how many came
    /// from earlier runs, and the commits that produced them.
    pub fn provenance(&self) -> String {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let commits: Vec<&str> = s.commits.iter().map(String::as_str).collect();
        format!(
            "Units of work: {} computed in this run, {} reused from earlier runs of the same \
             configuration (the experiment's result cache; `--fresh` recomputes everything); \
             commits: {}.",
            s.computed,
            s.reused,
            if commits.is_empty() {
                "none".to_string()
            } else {
                commits.join(", ")
            }
        )
    }
}

impl RunCache {
    /// What a results page says about its units: [`Self::provenance`], then in bold the
    /// [`Self::foreign_warning`] if any, then the [`Self::verification`] if any.
    pub fn page_note(&self) -> String {
        let mut s = self.provenance();
        if let Some(w) = self.foreign_warning() {
            s.push_str(&format!(" **{}**", w.trim_start_matches("warning: ")));
        }
        if let Some(v) = self.verification() {
            s.push_str(&format!(" {v}"));
        }
        s
    }

    /// Prints the warning and the verification, if any, at the end of a run, each line
    /// starting with `prefix`.
    pub fn report_end(&self, prefix: &str) {
        for line in [self.foreign_warning(), self.verification()]
            .into_iter()
            .flatten()
        {
            eprintln!("{prefix}{line}");
        }
    }

    /// One sentence for a results page on what `--verify` found, or `None` when it checked
    /// nothing.
    pub fn verification(&self) -> Option<String> {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if s.checked.is_empty() {
            return None;
        }
        let n = s.checked.len();
        let shapes: Vec<String> = s
            .checked
            .iter()
            .filter_map(|(l, _, d)| match d {
                Difference::Shape(w) => Some(format!("{l} ({w})")),
                Difference::Largest(_) => None,
            })
            .collect();
        let largest = s
            .checked
            .iter()
            .filter_map(|(l, c, d)| match d {
                Difference::Largest(x) => Some((*x, l, c)),
                Difference::Shape(_) => None,
            })
            .max_by(|a, b| a.0.total_cmp(&b.0));
        let foreign = s
            .checked
            .iter()
            .filter(|(_, c, _)| *c != self.commit)
            .count();
        let mut out = format!(
            "Spot check (`--verify {}`): {n} of the {} reused units, a fixed sample by key, \
             were recomputed with this code state ({foreign} of them stored by another one) and \
             compared with their stored results (wall-clock times left out): ",
            self.verify_percent, s.reused
        );
        match largest {
            Some((0.0, _, _)) => out.push_str("every stored number came out the same"),
            Some((x, l, c)) => out.push_str(&format!(
                "the largest difference in a stored number is {x:.3e} (in {l}, stored by {c})"
            )),
            None => out.push_str("none could be compared number by number"),
        }
        if !shapes.is_empty() {
            out.push_str(&format!(
                "; {} differ in structure or in a non-numeric value: {}",
                shapes.len(),
                shapes.join(", ")
            ));
        }
        out.push_str(". The page shows the stored results.");
        Some(out)
    }

    /// A warning for the end of a run that reused units another code state produced (another
    /// commit, or other uncommitted changes): the key holds the configuration, not the code,
    /// so after a change to a model, the data or the experiment those units are stale and
    /// only `--fresh` recomputes them. `None` when every reused unit comes from this state.
    pub fn foreign_warning(&self) -> Option<String> {
        let s = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        let n: usize = s.foreign.values().sum();
        (n > 0).then(|| {
            let by: Vec<String> = s
                .foreign
                .iter()
                .map(|(c, k)| format!("{k} from {c}"))
                .collect();
            format!(
                "warning: {n} of the {} units reused from the cache were computed by another \
                 code state than this one ({}; this is {}). If a model, the data or the \
                 experiment changed since, their numbers are stale: rerun with --fresh.",
                s.reused,
                by.join(", "),
                self.commit
            )
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;

    #[test]
    fn a_stored_unit_is_reused_and_a_different_key_is_recomputed() {
        let dir = tempfile::tempdir().unwrap();
        let calls = Cell::new(0);
        let run = |v: f64| {
            calls.set(calls.get() + 1);
            Ok(vec![v, v + 1.0])
        };
        let key = json!({"model": "saml", "seed": 1});
        let c = RunCache::at(Some(dir.path().to_path_buf()), false);
        let a: Vec<f64> = c.get_or_run("a", &key, || run(0.25)).unwrap();
        assert_eq!((a, calls.get()), (vec![0.25, 1.25], 1));
        // A second cache over the same directory (a later invocation) reads it back.
        let c2 = RunCache::at(Some(dir.path().to_path_buf()), false);
        let b: Vec<f64> = c2.get_or_run("a", &key, || run(9.0)).unwrap();
        assert_eq!((b, calls.get()), (vec![0.25, 1.25], 1));
        assert!(c2.provenance().contains("0 computed in this run, 1 reused"));
        // Another key is another unit.
        let other = json!({"model": "saml", "seed": 2});
        let d: Vec<f64> = c2.get_or_run("b", &other, || run(3.0)).unwrap();
        assert_eq!((d, calls.get()), (vec![3.0, 4.0], 2));
        // --fresh recomputes and overwrites.
        let f = RunCache::at(Some(dir.path().to_path_buf()), true);
        let e: Vec<f64> = f.get_or_run("a", &key, || run(5.0)).unwrap();
        assert_eq!((e, calls.get()), (vec![5.0, 6.0], 3));
        let c3 = RunCache::at(Some(dir.path().to_path_buf()), false);
        let g: Vec<f64> = c3.get_or_run("a", &key, || run(7.0)).unwrap();
        assert_eq!((g, calls.get()), (vec![5.0, 6.0], 3));
        // Within one run, a unit asked again is the one this run already has (as the first
        // pass of a two-pass experiment left it), also under --fresh, and counted once.
        let h: Vec<f64> = f.get_or_run("a", &key, || run(8.0)).unwrap();
        assert_eq!((h, calls.get()), (vec![5.0, 6.0], 3));
        assert!(f.provenance().contains("1 computed in this run, 0 reused"));
        let i: Vec<f64> = c.try_get_or_run("a", &key, || run(8.0)).unwrap().unwrap();
        assert_eq!((i, calls.get()), (vec![0.25, 1.25], 3));
        assert!(c.provenance().contains("1 computed in this run, 0 reused"));
    }

    /// `--verify 100` recomputes every reused unit, returns the stored value all the same,
    /// and reports the largest difference, wall-clock times left out; a changed structure is
    /// named; `--verify 0` recomputes nothing.
    #[test]
    fn verify_recomputes_reused_units_and_reports_how_far_they_moved() {
        let dir = tempfile::tempdir().unwrap();
        let at = || Some(dir.path().to_path_buf());
        let calls = Cell::new(0);
        let run = |auc: f64, secs: f64| {
            calls.set(calls.get() + 1);
            Ok(json!({"auc": auc, "curve": [1.0, auc], "train_secs": secs}))
        };
        let (k1, k2) = (json!({"seed": 1}), json!({"seed": 2}));
        let c = RunCache::at(at(), false);
        c.get_or_run("one", &k1, || run(0.75, 3.0)).unwrap();
        c.get_or_run("two", &k2, || run(0.5, 3.0)).unwrap();
        assert_eq!(c.verification(), None, "nothing reused, nothing checked");

        // The same numbers, another wall-clock time: equal.
        let v = RunCache::at(at(), false).verifying(100);
        let got: Value = v.get_or_run("one", &k1, || run(0.75, 9.0)).unwrap();
        assert_eq!((got["train_secs"].as_f64(), calls.get()), (Some(3.0), 3));
        let said = v.verification().unwrap();
        assert!(said.contains("1 of the 1 reused units"), "{said}");
        assert!(
            said.contains("every stored number came out the same"),
            "{said}"
        );

        // A moved number: reported with its unit, and the stored value is still returned.
        let got: Value = v.get_or_run("two", &k2, || run(0.5 + 1e-3, 9.0)).unwrap();
        assert_eq!(got["auc"].as_f64(), Some(0.5));
        let said = v.verification().unwrap();
        assert!(said.contains("2 of the 2 reused units"), "{said}");
        // The page gets the provenance, then the warning (these units came from this code
        // state: none), then the spot check.
        let note = v.page_note();
        assert!(
            note.starts_with(&v.provenance()) && note.ends_with(&said),
            "{note}"
        );
        assert!(!note.contains("**"), "{note}");
        assert!(
            said.contains("largest difference in a stored number is 1.000e-3 (in two"),
            "{said}"
        );

        // A changed structure is named.
        let w = RunCache::at(at(), false).verifying(100);
        let _: Value = w
            .get_or_run("one", &k1, || {
                Ok(json!({"auc": 0.75, "curve": [1.0], "train_secs": 1.0}))
            })
            .unwrap();
        let said = w.verification().unwrap();
        assert!(
            said.contains("1 differ in structure") && said.contains("one (.curve differs)"),
            "{said}"
        );

        // No sample: nothing recomputed.
        let n = RunCache::at(at(), false).verifying(0);
        let _: Value = n.get_or_run("one", &k1, || run(0.0, 0.0)).unwrap();
        assert_eq!((n.verification(), calls.get()), (None, 4));
    }

    /// The sample is a fixed share of the keys: about `percent` % of many, the same each time.
    #[test]
    fn the_verification_sample_is_a_fixed_share_of_the_keys() {
        let c = RunCache::at(None, false).verifying(10);
        let keys: Vec<Value> = (0..2000).map(|i| json!({"seed": i})).collect();
        let picked: Vec<bool> = keys.iter().map(|k| c.in_sample(k)).collect();
        let n = picked.iter().filter(|&&p| p).count();
        assert!((140..=260).contains(&n), "{n} of 2000 picked at 10%");
        let again: Vec<bool> = keys.iter().map(|k| c.in_sample(k)).collect();
        assert_eq!(picked, again);
        assert!(
            keys.iter()
                .all(|k| RunCache::at(None, false).verifying(100).in_sample(k))
        );
        assert!(!keys.iter().any(|k| RunCache::at(None, false).in_sample(k)));
    }

    #[test]
    fn difference_compares_numbers_place_by_place() {
        let d = |a: Value, b: Value| difference(&a, &b, "");
        assert_eq!(
            d(json!({"a": [1, 2.5]}), json!({"a": [1, 2.0]})),
            Difference::Largest(0.5)
        );
        assert_eq!(
            d(json!({"a": 1, "x_secs": 4}), json!({"a": 1, "x_secs": 5})),
            Difference::Largest(0.0)
        );
        assert_eq!(
            d(json!({"a": 1, "x_secs": 4}), json!({"a": 1})),
            Difference::Largest(0.0)
        );
        assert_eq!(
            d(json!({"a": null}), json!({"a": 0.5})),
            Difference::Shape(".a differs".into())
        );
        assert_eq!(
            d(json!({"a": 1}), json!({"b": 1})),
            Difference::Shape(" differs".into())
        );
        assert_eq!(
            d(json!(["x"]), json!(["y"])),
            Difference::Shape("[0] differs".into())
        );
        assert_eq!(
            d(json!(["x", 1]), json!(["x", 1])),
            Difference::Largest(0.0)
        );
    }

    #[test]
    fn units_reused_from_another_code_state_are_warned_about() {
        let dir = tempfile::tempdir().unwrap();
        let at = |commit: &str| {
            let mut c = RunCache::at(Some(dir.path().to_path_buf()), false);
            c.commit = commit.into();
            c
        };
        let (k1, k2) = (json!({"seed": 1}), json!({"seed": 2}));
        let a = at("abc+dirty.0000000a");
        let _: u32 = a.get_or_run("1", &k1, || Ok(1)).unwrap();
        assert_eq!(a.foreign_warning(), None, "computed units are never stale");
        // The same code state reads its own unit back without a warning.
        let a2 = at("abc+dirty.0000000a");
        let _: u32 = a2.get_or_run("1", &k1, || Ok(9)).unwrap();
        assert_eq!(a2.foreign_warning(), None);
        // Other uncommitted changes on the same commit are another state.
        let b = at("abc+dirty.0000000b");
        let v: u32 = b.get_or_run("1", &k1, || Ok(9)).unwrap();
        let _: u32 = b.get_or_run("2", &k2, || Ok(2)).unwrap();
        assert_eq!(v, 1);
        let w = b.foreign_warning().expect("a reused foreign unit warns");
        assert!(w.contains("1 of the 1 units"), "{w}");
        assert!(w.contains("1 from abc+dirty.0000000a"), "{w}");
        assert!(w.contains("--fresh"), "{w}");
    }

    #[test]
    fn a_corrupt_or_foreign_entry_is_recomputed_not_trusted() {
        let dir = tempfile::tempdir().unwrap();
        let key = json!({"k": 1});
        let c = RunCache::at(Some(dir.path().to_path_buf()), false);
        let p = c.path(&key).unwrap();
        std::fs::write(&p, b"{\"key\": {\"k\": 1}, \"commit\": \"x\", \"val").unwrap();
        let v: u32 = c.get_or_run("k", &key, || Ok(7)).unwrap();
        assert_eq!(v, 7);
        // An entry stored under this file name for another key (a collision) is not used.
        std::fs::write(
            &p,
            json!({"key": {"k": 2}, "commit": "x", "value": 1}).to_string(),
        )
        .unwrap();
        let c2 = RunCache::at(Some(dir.path().to_path_buf()), false);
        let v: u32 = c2.get_or_run("k", &key, || Ok(8)).unwrap();
        assert_eq!(v, 8);
        // A failed unit stores nothing.
        let other = json!({"k": 3});
        assert!(
            c.get_or_run::<u32, _>("k", &other, || anyhow::bail!("no"))
                .is_err()
        );
        assert!(!c.path(&other).unwrap().exists());
    }

    #[test]
    fn a_value_json_cannot_hold_is_returned_but_not_stored() {
        let dir = tempfile::tempdir().unwrap();
        let c = RunCache::at(Some(dir.path().to_path_buf()), false);
        let key = json!("nan");
        let v: f64 = c.get_or_run("n", &key, || Ok(f64::NAN)).unwrap();
        assert!(v.is_nan());
        assert!(!c.path(&key).unwrap().exists());
    }

    #[test]
    fn a_unit_held_by_another_process_is_skipped_and_a_left_over_lock_file_taken() {
        let dir = tempfile::tempdir().unwrap();
        let c = RunCache::at(Some(dir.path().to_path_buf()), false);
        let key = json!({"unit": 1});
        let lock = c.path(&key).unwrap().with_extension("lock");
        // Held by another process (here another handle of this one): not computed here.
        std::fs::create_dir_all(lock.parent().unwrap()).unwrap();
        let held = ProcessLock::take(&lock).unwrap().unwrap();
        let v: Option<u32> = c.try_get_or_run("u", &key, || Ok(5)).unwrap();
        assert_eq!(v, None);
        // The other process finishes: its entry is read, and waiting returns it.
        let other = RunCache::at(Some(dir.path().to_path_buf()), false);
        drop(held);
        let w: u32 = other.get_or_run("u", &key, || Ok(9)).unwrap();
        assert_eq!(w, 9);
        let held = ProcessLock::take(&lock).unwrap().unwrap();
        let r: u32 = c.get_or_run("u", &key, || Ok(5)).unwrap();
        assert_eq!(r, 9);
        drop(held);
        // A lock file left by a process that ended without removing it (killed) is free,
        // whatever it names: taken, and removed after.
        let key2 = json!({"unit": 2});
        let lock2 = c.path(&key2).unwrap().with_extension("lock");
        std::fs::write(&lock2, format!("{}", i32::MAX)).unwrap();
        let v: Option<u32> = c.try_get_or_run("u", &key2, || Ok(6)).unwrap();
        assert_eq!(v, Some(6));
        assert!(!lock2.exists());
        // A failing unit releases its lock too.
        let key3 = json!({"unit": 3});
        assert!(
            c.try_get_or_run::<u32, _>("u", &key3, || anyhow::bail!("no"))
                .is_err()
        );
        assert!(!c.path(&key3).unwrap().with_extension("lock").exists());
    }

    #[test]
    fn without_a_directory_nothing_outlives_the_run() {
        let c = RunCache::at(None, false);
        let key = json!(1);
        let a: u32 = c.get_or_run("x", &key, || Ok(1)).unwrap();
        let b: u32 = c.get_or_run("x", &key, || Ok(2)).unwrap();
        assert_eq!((a, b), (1, 1));
        let c2 = RunCache::at(None, false);
        let d: u32 = c2.get_or_run("x", &key, || Ok(3)).unwrap();
        assert_eq!(d, 3);
    }
}
