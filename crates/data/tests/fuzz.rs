//! Property-based fuzzing of every reader of the data crate: random bytes and mutated valid
//! files never make a reader panic; each returns a data set or an error.
//!
//! Every property runs a fixed number of cases (`CASES`, or `REC_FUZZ_CASES` from the
//! environment for a longer local run) and counts them: the test asserts the count, and
//! `cargo test -p rec-data --test fuzz -- --nocapture` prints it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use proptest::prelude::*;
use proptest::test_runner::{Config, TestRunner};
use rec_data::interactions::InteractionSchema;
use rec_data::movielens::MovieLens100k;
use rec_data::synth::SynthConfig;

/// Cases per property by default (proptest's own default is 256).
const CASES: u32 = 256;

fn cases() -> u32 {
    std::env::var("REC_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(CASES)
}

/// The inputs are seeded, so a CI failure reproduces; `REC_FUZZ_SEED` explores other inputs.
fn rng() -> proptest::test_runner::TestRng {
    let seed: u64 = std::env::var("REC_FUZZ_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(0);
    let mut bytes = [0u8; 32];
    bytes[..8].copy_from_slice(&seed.to_le_bytes());
    proptest::test_runner::TestRng::from_seed(proptest::test_runner::RngAlgorithm::ChaCha, &bytes)
}

fn data() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data")
}

/// One edit of a byte string: bytes that matter to the readers are over-represented.
#[derive(Debug, Clone)]
enum Edit {
    Flip(usize, u8),
    Insert(usize, u8),
    Delete(usize),
    Truncate(usize),
    Duplicate(usize, usize),
}

fn interesting_byte() -> impl Strategy<Value = u8> {
    prop_oneof![
        3 => prop::sample::select(
            b"\t|\n\r,\"-.0159:eE \xff\xe9\xc3\x00\x92".to_vec()
        ),
        1 => any::<u8>(),
    ]
}

fn edit() -> impl Strategy<Value = Edit> {
    prop_oneof![
        4 => (any::<usize>(), interesting_byte()).prop_map(|(p, b)| Edit::Flip(p, b)),
        3 => (any::<usize>(), interesting_byte()).prop_map(|(p, b)| Edit::Insert(p, b)),
        2 => any::<usize>().prop_map(Edit::Delete),
        1 => any::<usize>().prop_map(Edit::Truncate),
        1 => (any::<usize>(), 1usize..40).prop_map(|(p, n)| Edit::Duplicate(p, n)),
    ]
}

fn apply(mut v: Vec<u8>, edits: &[Edit]) -> Vec<u8> {
    for e in edits {
        let n = v.len();
        match *e {
            Edit::Flip(p, b) if n > 0 => v[p % n] = b,
            Edit::Insert(p, b) => v.insert(p % (n + 1), b),
            Edit::Delete(p) if n > 0 => {
                v.remove(p % n);
            }
            Edit::Truncate(p) => v.truncate(p % (n + 1)),
            Edit::Duplicate(p, len) if n > 0 => {
                let s = p % n;
                let chunk: Vec<u8> = v[s..(s + len).min(n)].to_vec();
                v.splice(s..s, chunk);
            }
            _ => {}
        }
    }
    v
}

/// A valid file, mutated by 1 to 8 edits; or random bytes (one case in five).
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        4 => prop::collection::vec(edit(), 1..8).prop_map(move |e| apply(valid.clone(), &e)),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ]
}

/// Runs `check` on `cases()` inputs from `strategy`; returns the number of cases run.
fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value)) -> u64
where
    S::Value: std::fmt::Debug,
{
    let n = AtomicU64::new(0);
    let mut runner = TestRunner::new_with_rng(
        Config {
            cases: cases(),
            failure_persistence: None,
            ..Config::default()
        },
        rng(),
    );
    runner
        .run(&strategy, |v| {
            n.fetch_add(1, Ordering::Relaxed);
            check(v);
            Ok(())
        })
        .unwrap_or_else(|e| panic!("{name}: {e}"));
    let n = n.into_inner();
    eprintln!("fuzz {name}: {n} cases, no panic");
    n
}

/// A temporary copy of a fixture directory, one of whose files each case replaces.
struct Scratch {
    dir: tempfile::TempDir,
}

impl Scratch {
    fn new(fixture: &str) -> Self {
        let dir = tempfile::tempdir().unwrap();
        for e in std::fs::read_dir(data().join(fixture)).unwrap() {
            let p = e.unwrap().path();
            std::fs::copy(&p, dir.path().join(p.file_name().unwrap())).unwrap();
        }
        Self { dir }
    }

    /// Writes `bytes` as `file`, runs `f`, and puts the fixture's file back.
    fn with<T>(&self, fixture: &str, file: &str, bytes: &[u8], f: impl FnOnce(&Path) -> T) -> T {
        let p = self.dir.path().join(file);
        std::fs::write(&p, bytes).unwrap();
        let r = f(self.dir.path());
        std::fs::copy(data().join(fixture).join(file), &p).unwrap();
        r
    }
}

/// A data set that a reader accepted is internally consistent.
fn consistent(ds: &MovieLens100k) {
    let r = &ds.ratings;
    assert!(!r.user.is_empty());
    assert!(r.user.iter().all(|&u| (u as usize) < ds.users.len()));
    assert!(r.item.iter().all(|&i| (i as usize) < ds.items.len()));
    assert!(r.rating.iter().all(|x| (1..=5).contains(x)));
    // No pair is rated twice (a duplicated line is refused, not split into train and test).
    let mut pairs: Vec<(u32, u32)> = r.user.iter().copied().zip(r.item.iter().copied()).collect();
    pairs.sort_unstable();
    assert!(pairs.windows(2).all(|w| w[0] != w[1]));
}

#[test]
fn movielens_readers_never_panic() {
    let mut total = 0;
    let gl = Scratch::new("grouplens");
    for file in ["u.data", "u.user", "u.item"] {
        let valid = std::fs::read(data().join("grouplens").join(file)).unwrap();
        total += fuzz(&format!("grouplens {file}"), mutated(valid), |bytes| {
            if let Ok(ds) = gl.with("grouplens", file, &bytes, MovieLens100k::read_grouplens) {
                consistent(&ds);
            }
        });
    }
    let at = Scratch::new("atomic");
    for file in ["tiny.inter", "tiny.user", "tiny.item"] {
        let valid = std::fs::read(data().join("atomic").join(file)).unwrap();
        total += fuzz(&format!("atomic {file}"), mutated(valid), |bytes| {
            if let Ok(ds) = at.with("atomic", file, &bytes, |d| {
                MovieLens100k::read_atomic(d, "tiny")
            }) {
                consistent(&ds);
            }
        });
    }
    assert_eq!(total, 6 * u64::from(cases()));
}

#[test]
fn csv_reader_and_schemas_never_panic() {
    let schema_text = std::fs::read(data().join("interactions.toml")).unwrap();
    let schema =
        InteractionSchema::from_toml_str(std::str::from_utf8(&schema_text).unwrap()).unwrap();
    let csv = std::fs::read(data().join("interactions.csv")).unwrap();
    let mut total = fuzz("csv", mutated(csv.clone()), |bytes| {
        if let Ok(raw) = schema.read_bytes(&bytes, "fuzz.csv") {
            // Whatever was read encodes into a valid batch.
            let enc = raw.encode(None).unwrap();
            enc.batch.validate().unwrap();
        }
    });
    total += fuzz("interaction schema", mutated(schema_text), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Ok(s) = InteractionSchema::from_toml_str(&text) {
            // A schema that validates reads the example file without panicking.
            if let Ok(raw) = s.read_bytes(&csv, "fuzz.csv") {
                let _ = raw.encode(None);
            }
        }
    });
    let synth = SynthConfig::tiny().to_toml_string().into_bytes();
    total += fuzz("synthetic generator config", mutated(synth), |bytes| {
        let _ = SynthConfig::from_toml_str(&String::from_utf8_lossy(&bytes));
    });
    assert_eq!(total, 3 * u64::from(cases()));
}

#[test]
fn parquet_reader_never_panics() {
    use arrow_array::{Float32Array, Int64Array, RecordBatch, StringArray};
    use arrow_schema::{DataType, Field};
    use std::sync::Arc;
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.parquet");
    let schema = rec_data::parquet_io::schema_of(vec![
        Field::new("id", DataType::Int64, false),
        Field::new("x", DataType::Float32, false),
        Field::new("name", DataType::Utf8, false),
    ]);
    let batch = RecordBatch::try_new(
        schema,
        vec![
            Arc::new(Int64Array::from((0..50).collect::<Vec<i64>>())),
            Arc::new(Float32Array::from(
                (0..50).map(|i| i as f32 * 0.5).collect::<Vec<f32>>(),
            )),
            Arc::new(StringArray::from(
                (0..50).map(|i| format!("n{i}")).collect::<Vec<_>>(),
            )),
        ],
    )
    .unwrap();
    rec_data::parquet_io::write_batch(&good, &batch).unwrap();
    let valid = std::fs::read(&good).unwrap();
    let p = dir.path().join("fuzz.parquet");
    let n = fuzz("parquet", mutated(valid), |bytes| {
        std::fs::write(&p, &bytes).unwrap();
        if let Ok(t) = rec_data::parquet_io::read_table(&p, None) {
            assert!(t.columns.iter().all(|c| c.len() == t.rows));
        }
    });
    assert_eq!(n, u64::from(cases()));
}
