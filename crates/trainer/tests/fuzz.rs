//! Property-based fuzzing of what the trainer reads: the run configuration, checkpoints
//! (`checkpoint::read` plus restoring the state into a model) and saved models
//! (`rec_nn::io::load_model`). Random and mutated bytes never cause a panic; files whose
//! checksums were forged to match (a hostile writer, not an accident) still go through the
//! shape, dtype, name and metadata checks, and a changed shape, dtype or name is refused.
//!
//! Every property runs `CASES` cases (or `REC_FUZZ_CASES` from the environment) and counts
//! them; `cargo test -p rec-trainer --test fuzz -- --nocapture` prints the counts.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use candle_core::{DType, Device, Tensor};
use proptest::prelude::*;
use proptest::test_runner::{Config as PConfig, TestRunner};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, Split, TaskKind, TaskSpec};
use rec_nn::optim::DenseOptimizer;
use rec_nn::{Model, TensorMap};
use rec_trainer::train::{load_training_state, training_state};
use rec_trainer::{Config, checkpoint, registry};
use sha2::{Digest, Sha256};

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

fn fuzz<S: Strategy>(name: &str, strategy: S, check: impl Fn(S::Value)) -> u64
where
    S::Value: std::fmt::Debug,
{
    let n = AtomicU64::new(0);
    let mut runner = TestRunner::new_with_rng(
        PConfig {
            cases: cases(),
            failure_persistence: None,
            ..PConfig::default()
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

/// Byte edits: flips, insertions, deletions, truncation; or random bytes (one case in five).
fn mutated(valid: Vec<u8>) -> impl Strategy<Value = Vec<u8>> {
    let edits = prop::collection::vec((0u8..4, any::<usize>(), any::<u8>()), 1..8);
    prop_oneof![
        4 => edits.prop_map(move |ed| {
            let mut v = valid.clone();
            for (op, p, b) in ed {
                let n = v.len();
                match op {
                    0 if n > 0 => v[p % n] = b,
                    1 => v.insert(p % (n + 1), b),
                    2 if n > 0 => { v.remove(p % n); }
                    3 => v.truncate(p % (n + 1)),
                    _ => {}
                }
            }
            v
        }),
        1 => prop::collection::vec(any::<u8>(), 0..400),
    ]
}

// ---------------------------------------------------------------------------------------------
// A small model with all four built-in table kinds.

fn split() -> Split {
    let (users, items, n) = (30usize, 20usize, 600usize);
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", users + 1),
            FieldSpec::categorical("item_id", items + 1),
            FieldSpec::categorical("city", 9),
            FieldSpec::categorical("brand", 12),
        ],
        tasks: vec![TaskSpec::new("like", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    });
    let ids = |rng: &mut ChaCha8Rng, k: usize| -> Vec<u32> {
        (0..n).map(|_| rng.random_range(1..k as u32)).collect()
    };
    let cols = vec![
        Column::Ids(ids(&mut rng, users + 1)),
        Column::Ids(ids(&mut rng, items + 1)),
        Column::Ids(ids(&mut rng, 9)),
        Column::Ids(ids(&mut rng, 12)),
    ];
    let y: Vec<f32> = (0..n).map(|_| f32::from(rng.random::<bool>())).collect();
    let all = Batch {
        schema: schema.clone(),
        columns: cols,
        labels: vec![y],
        weights: None,
        slices: Vec::new(),
    };
    Split {
        name: "fuzz".into(),
        seed: 1,
        schema,
        train: all.range(0, 400),
        valid: all.range(400, 500),
        test: all.range(500, 600),
        vocabs: BTreeMap::new(),
        scenario_names: Vec::new(),
        items: None,
        seq: None,
    }
}

fn config() -> Config {
    let text = r#"
[model]
name = "deepfm"
[model.params]
dim = 4
mlp = { hidden = [8] }
[embeddings.default]
kind = "full"
[embeddings.fields.item_id]
kind = "hashed"
rows = 7
[embeddings.fields.city]
kind = "qr"
collisions = 3
[embeddings.fields.brand]
kind = "frequency"
top_k = 4
rows = 3
"#;
    Config::from_toml(text, "fuzz").unwrap()
}

fn model(split: &Split, cfg: &Config) -> Box<dyn Model> {
    registry::build_model(cfg, &split.schema, &split.train, &Device::Cpu).unwrap()
}

/// Trains a few steps so that optimizer state is non-trivial.
fn trained(split: &Split, cfg: &Config) -> (Box<dyn Model>, DenseOptimizer) {
    let mut m = model(split, cfg);
    let mut opt = DenseOptimizer::new(cfg.optimizer.dense, m.dense_vars()).unwrap();
    let mut ctx = rec_nn::Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(2));
    for b in rec_data::BatchIter::new(&split.train, 100, 1, 0, true) {
        rec_nn::train_step(m.as_mut(), &mut opt, &b, &mut ctx).unwrap();
    }
    (m, opt)
}

fn manifest(dir: &Path) {
    let mut files = serde_json::Map::new();
    for f in ["tensors.safetensors", "state.json"] {
        let bytes = std::fs::read(dir.join(f)).unwrap();
        let sha: String = Sha256::digest(&bytes)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        files.insert(
            f.into(),
            serde_json::json!({ "sha256": sha, "bytes": bytes.len() }),
        );
    }
    let m = serde_json::json!({ "format_version": checkpoint::FORMAT_VERSION, "files": files });
    std::fs::write(dir.join("manifest.json"), m.to_string()).unwrap();
}

/// Reads the checkpoint in `dir` and restores it into a fresh model and optimizer: Ok or Err,
/// never a panic.
fn restore(dir: &Path, split: &Split, cfg: &Config) -> anyhow::Result<()> {
    let (tensors, state) = checkpoint::read(dir, &Device::Cpu)?;
    let mut m = model(split, cfg);
    let mut opt = DenseOptimizer::new(cfg.optimizer.dense, m.dense_vars())?;
    load_training_state(m.as_mut(), Some(&mut opt), &tensors, &state["state"])
}

#[test]
fn configs_never_panic() {
    let shipped = std::fs::read(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/deepfm-ml100k-ctr.toml"),
    )
    .unwrap();
    let n = fuzz("trainer config", mutated(shipped), |bytes| {
        let text = String::from_utf8_lossy(&bytes);
        if let Err(e) = Config::from_toml(&text, "fuzz.toml") {
            assert!(format!("{e:#}").contains("fuzz.toml"), "{e:#}");
        }
    });
    assert_eq!(n, u64::from(cases()));
}

#[test]
fn checkpoints_never_panic_and_forged_ones_are_still_checked() {
    let split = split();
    let cfg = config();
    let (m, opt) = trained(&split, &cfg);
    let (tensors, meta) = training_state(m.as_ref(), Some(&opt)).unwrap();
    let state = serde_json::json!({ "state": meta, "loop": {}, "config": "" });
    let root = tempfile::tempdir().unwrap();
    let good = checkpoint::write(root.path(), "good", &tensors, &state).unwrap();
    restore(&good, &split, &cfg).unwrap();
    let scratch = root.path().join("scratch");
    std::fs::create_dir_all(&scratch).unwrap();
    let reset = || {
        for f in ["tensors.safetensors", "state.json", "manifest.json"] {
            std::fs::copy(good.join(f), scratch.join(f)).unwrap();
        }
    };

    // 1. Raw bytes of any of the three files, manifest unchanged: refused unless unchanged.
    let mut total = 0;
    for f in ["tensors.safetensors", "state.json", "manifest.json"] {
        let valid = std::fs::read(good.join(f)).unwrap();
        total += fuzz(
            &format!("checkpoint {f}"),
            mutated(valid.clone()),
            |bytes| {
                reset();
                std::fs::write(scratch.join(f), &bytes).unwrap();
                let r = restore(&scratch, &split, &cfg);
                if f != "manifest.json" && bytes != valid {
                    assert!(r.is_err(), "a changed {f} was accepted");
                }
            },
        );
    }

    // 2. Forged: the tensors or state bytes changed and the manifest recomputed to match.
    for f in ["tensors.safetensors", "state.json"] {
        let valid = std::fs::read(good.join(f)).unwrap();
        total += fuzz(&format!("forged checkpoint {f}"), mutated(valid), |bytes| {
            reset();
            std::fs::write(scratch.join(f), &bytes).unwrap();
            manifest(&scratch);
            let _ = restore(&scratch, &split, &cfg);
        });
    }

    // 3. Forged with a valid container: one tensor renamed, reshaped, resized, retyped,
    //    dropped or added, then written as a correct checkpoint: always refused.
    let names: Vec<String> = {
        let mut n: Vec<String> = tensors.keys().cloned().collect();
        n.sort();
        n
    };
    let n_forged = fuzz(
        "forged checkpoint tensor",
        (0usize..names.len(), 0u8..6),
        |(i, op)| {
            let mut t = tensors.clone();
            let name = &names[i];
            if let Some(why) = forge(&mut t, name, op) {
                let dir = root.path().join(format!("forged-{i}-{op}"));
                if !dir.exists() {
                    checkpoint::write(root.path(), &format!("forged-{i}-{op}"), &t, &state)
                        .unwrap();
                }
                let r = restore(&dir, &split, &cfg);
                assert!(r.is_err(), "tensor `{name}` {why}: accepted");
            }
        },
    );
    total += n_forged;
    assert_eq!(total, 6 * u64::from(cases()));
}

/// Changes tensor `name` of `t` by `op`; returns what was done (None when `op` does not apply).
fn forge(t: &mut TensorMap, name: &str, op: u8) -> Option<&'static str> {
    let x = t[name].clone();
    match op {
        0 => {
            t.remove(name);
            Some("removed")
        }
        1 => {
            t.remove(name);
            t.insert(format!("{name}.renamed"), x);
            Some("renamed")
        }
        2 => {
            let mut dims = vec![1];
            dims.extend_from_slice(x.dims());
            t.insert(name.into(), x.reshape(dims).unwrap());
            Some("reshaped")
        }
        3 => {
            let mut dims = x.dims().to_vec();
            if dims.is_empty() {
                return None;
            }
            dims[0] += 1;
            t.insert(
                name.into(),
                Tensor::zeros(dims, x.dtype(), x.device()).unwrap(),
            );
            Some("grown by a row")
        }
        4 => {
            let to = if x.dtype() == DType::F32 {
                DType::F64
            } else {
                DType::F32
            };
            t.insert(name.into(), x.to_dtype(to).unwrap());
            Some("retyped")
        }
        _ => {
            t.insert("extra/junk".into(), x);
            Some("joined by an unknown tensor")
        }
    }
}

#[test]
fn saved_models_never_panic_and_forged_ones_are_still_checked() {
    let split = split();
    let cfg = config();
    let (m, _) = trained(&split, &cfg);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    rec_nn::io::save_model(m.as_ref(), &path).unwrap();
    let meta_path = rec_nn::io::meta_path(&path);
    let valid_tensors = std::fs::read(&path).unwrap();
    let valid_meta = std::fs::read(&meta_path).unwrap();
    let load_into = |fresh: &mut dyn Model| rec_nn::io::load_model(fresh, &path);
    let load = || load_into(model(&split, &cfg).as_mut());
    load().unwrap();
    let original = rec_nn::io::checksum(&rec_nn::io::model_state(m.as_ref()).unwrap().0).unwrap();

    // A changed tensors file is refused, or (a change that the format ignores, such as
    // whitespace in the header) loads exactly the saved parameters.
    let mut total = fuzz("model tensors", mutated(valid_tensors), |bytes| {
        std::fs::write(&path, &bytes).unwrap();
        std::fs::write(&meta_path, &valid_meta).unwrap();
        let mut fresh = model(&split, &cfg);
        if load_into(fresh.as_mut()).is_ok() {
            let (t, _) = rec_nn::io::model_state(fresh.as_ref()).unwrap();
            assert_eq!(
                rec_nn::io::checksum(&t).unwrap(),
                original,
                "changed tensors loaded"
            );
        }
    });
    total += fuzz("model metadata", mutated(valid_meta.clone()), |bytes| {
        rec_nn::io::save_model(m.as_ref(), &path).unwrap();
        std::fs::write(&meta_path, &bytes).unwrap();
        let _ = load();
    });

    // Forged: a changed tensor map saved with a matching checksum in both files.
    let (tensors, meta) = rec_nn::io::model_state(m.as_ref()).unwrap();
    let names: Vec<String> = {
        let mut n: Vec<String> = tensors.keys().cloned().collect();
        n.sort();
        n
    };
    total += fuzz(
        "forged model tensor",
        (0usize..names.len(), 0u8..6),
        |(i, op)| {
            let mut t = tensors.clone();
            if let Some(why) = forge(&mut t, &names[i], op) {
                let sum = format!("{:016x}", rec_nn::io::checksum(&t).unwrap());
                let mut meta = meta.clone();
                meta["format"] = serde_json::json!("rec-nn-model/1");
                meta["checksum"] = serde_json::json!(sum);
                let header = std::collections::HashMap::from([
                    ("format".to_string(), "rec-nn-model/1".to_string()),
                    ("checksum".to_string(), sum),
                ]);
                rec_nn::io::save_safetensors_atomic(&path, &t, header).unwrap();
                std::fs::write(&meta_path, meta.to_string()).unwrap();
                assert!(load().is_err(), "tensor `{}` {why}: accepted", names[i]);
            }
        },
    );
    // Forged metadata: one number, string or key of the JSON changed, checksum intact.
    let leaves = json_paths(&meta);
    total += fuzz(
        "forged model metadata",
        (0usize..leaves.len(), 0u8..5),
        |(i, op)| {
            let mut meta = meta.clone();
            meta["format"] = serde_json::json!("rec-nn-model/1");
            meta["checksum"] =
                serde_json::json!(format!("{:016x}", rec_nn::io::checksum(&tensors).unwrap()));
            edit_json(&mut meta, &leaves[i], op);
            rec_nn::io::save_model(m.as_ref(), &path).unwrap();
            std::fs::write(&meta_path, meta.to_string()).unwrap();
            let _ = load();
        },
    );
    assert_eq!(total, 4 * u64::from(cases()));
}

/// Paths (object keys and array indices) of every leaf of `v`.
fn json_paths(v: &serde_json::Value) -> Vec<Vec<String>> {
    let mut out = Vec::new();
    fn walk(v: &serde_json::Value, path: &mut Vec<String>, out: &mut Vec<Vec<String>>) {
        match v {
            serde_json::Value::Object(m) => {
                for (k, x) in m {
                    path.push(k.clone());
                    walk(x, path, out);
                    path.pop();
                }
            }
            serde_json::Value::Array(a) => {
                for (i, x) in a.iter().enumerate() {
                    path.push(i.to_string());
                    walk(x, path, out);
                    path.pop();
                }
            }
            _ => out.push(path.clone()),
        }
    }
    walk(v, &mut Vec::new(), &mut out);
    out
}

/// Replaces the leaf at `path` by 0, -1, a huge number, a string, or removes it.
fn edit_json(v: &mut serde_json::Value, path: &[String], op: u8) {
    let (last, parents) = path.split_last().unwrap();
    let mut cur = v;
    for p in parents {
        cur = match cur {
            serde_json::Value::Object(m) => m.get_mut(p).unwrap(),
            serde_json::Value::Array(a) => &mut a[p.parse::<usize>().unwrap()],
            _ => unreachable!(),
        };
    }
    let new = match op {
        0 => serde_json::json!(0),
        1 => serde_json::json!(-1),
        2 => serde_json::json!(1u64 << 40),
        3 => serde_json::json!("x"),
        _ => serde_json::Value::Null,
    };
    match cur {
        serde_json::Value::Object(m) if op == 4 => {
            m.remove(last);
        }
        serde_json::Value::Object(m) => {
            m.insert(last.clone(), new);
        }
        serde_json::Value::Array(a) => a[last.parse::<usize>().unwrap()] = new,
        _ => unreachable!(),
    }
}
