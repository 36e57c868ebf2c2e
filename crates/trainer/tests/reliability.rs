//! Reliability of the training loop: the non-finite guard names the step, batch and culprit
//! and leaves the last good checkpoint intact; an unusable output directory is refused before
//! training; unknown IDs at inference have a defined result for every built-in table kind.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use candle_core::{DType, Device, Result as CResult, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, Split, TaskKind, TaskSpec};
use rec_nn::{Ctx, EmbeddingTable, Model};
use rec_trainer::checkpoint;
use rec_trainer::train::{all_finite, check_space, free_bytes};
use rec_trainer::{Config, Start, fit, registry};

// ---------------------------------------------------------------------------------------------
// A one-feature model whose gradient can be NaN while its loss is finite.

/// logit = sqrt(w^2 x) + sqrt(z |e_u|^2) + b on two dense features x, z >= 0 and the
/// embedding e_u of a categorical field `u`. At x = 0 the loss is finite but the gradient of
/// `w` is 0 * inf = NaN; at z = 0 the same happens to the gradient of e_u's row: the failures
/// the gradient guard exists for.
struct SqrtModel {
    schema: Schema,
    w: Var,
    b: Var,
    table: rec_nn::embedding::FullTable,
    device: Device,
    /// After this step, `after_step` sets `w` to infinity (a broken update).
    poison_after: Option<u64>,
}

impl SqrtModel {
    fn new(schema: Schema) -> Self {
        let device = Device::Cpu;
        let opts = rec_nn::embedding::TableOptions::default();
        let mut rng = ChaCha8Rng::seed_from_u64(4);
        Self {
            schema,
            w: Var::from_tensor(&Tensor::new(&[1f32], &device).unwrap()).unwrap(),
            b: Var::from_tensor(&Tensor::new(&[-1f32], &device).unwrap()).unwrap(),
            table: rec_nn::embedding::FullTable::new(11, 2, &opts, &mut rng, &device).unwrap(),
            device,
            poison_after: None,
        }
    }
}

fn dense(batch: &Batch, k: usize) -> &[f32] {
    match &batch.columns[k] {
        Column::Dense { values, .. } => values,
        _ => panic!("column {k} is not dense"),
    }
}

impl Model for SqrtModel {
    fn name(&self) -> String {
        "sqrt".into()
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn device(&self) -> &Device {
        &self.device
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> CResult<Vec<Tensor>> {
        let x = Tensor::new(dense(batch, 0), &self.device)?;
        let z = Tensor::new(dense(batch, 1), &self.device)?;
        let e = self
            .table
            .lookup(batch.columns[2].ids().unwrap(), ctx.train)?;
        let e2 = e.sqr()?.sum(1)?;
        let w2 = self.w.as_tensor().sqr()?;
        let out = (x.broadcast_mul(&w2)?.sqrt()? + (z * e2)?.sqrt()?)?
            .broadcast_add(self.b.as_tensor())?;
        Ok(vec![out])
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        vec![("b".into(), self.b.clone()), ("w".into(), self.w.clone())]
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        vec![("u".into(), &self.table)]
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        vec![("u".into(), &mut self.table)]
    }
    fn after_step(&mut self, step: u64) -> CResult<()> {
        if self.poison_after == Some(step) {
            self.w.set(&Tensor::new(&[f32::INFINITY], &self.device)?)?;
        }
        Ok(())
    }
}

const N: usize = 1000;
const BS: usize = 50;
const SEED: u64 = 11;

/// x, z in [0.2, 2), u in 1..=10, like = x > 1; 800 train rows (16 batches of 50), 100
/// valid, 100 test.
fn dense_split() -> Split {
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::dense("x", 1),
            FieldSpec::dense("z", 1),
            FieldSpec::categorical("u", 11),
        ],
        tasks: vec![TaskSpec::new("like", TaskKind::Binary)],
        user_field: None,
        item_field: None,
        scenario_field: None,
        num_scenarios: 1,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let x: Vec<f32> = (0..N).map(|_| rng.random_range(0.2..2.0)).collect();
    let z: Vec<f32> = (0..N).map(|_| rng.random_range(0.2..2.0)).collect();
    let u: Vec<u32> = (0..N).map(|_| rng.random_range(1..11)).collect();
    let y: Vec<f32> = x.iter().map(|&v| f32::from(u8::from(v > 1.0))).collect();
    let all = Batch {
        schema: schema.clone(),
        columns: vec![
            Column::Dense { values: x, dim: 1 },
            Column::Dense { values: z, dim: 1 },
            Column::Ids(u),
        ],
        labels: vec![y],
        weights: None,
        slices: Vec::new(),
    };
    Split {
        name: "dense".into(),
        seed: SEED,
        schema,
        train: all.range(0, 800),
        valid: all.range(800, 900),
        test: all.range(900, 1000),
        vocabs: BTreeMap::new(),
        scenario_names: Vec::new(),
        items: None,
        seq: None,
    }
}

fn dense_config(dir: &Path) -> Config {
    let mut cfg = Config::new("sqrt", "dense", "none");
    cfg.data.seed = SEED;
    cfg.train.epochs = 2;
    cfg.train.batch_size = BS;
    cfg.train.progress = false;
    cfg.train.checkpoint_every_steps = Some(4);
    cfg.optimizer.dense = rec_nn::optim::OptimizerConfig::adam(0.01);
    cfg.output.dir = Some(dir.to_path_buf());
    cfg
}

/// The training row that batch `batch` (0-based) of the first epoch sees at position `pos`.
fn row_of_batch(batch: usize, pos: usize) -> usize {
    rec_data::epoch_order(800, SEED, 0, true)[batch * BS + pos]
}

/// The checkpoint `latest` points at, verified, with every tensor finite.
fn latest_is_good(dir: &Path) -> std::path::PathBuf {
    let root = dir.join("checkpoints");
    let latest = checkpoint::resolve_pointer(&root, "latest")
        .unwrap()
        .unwrap();
    let (tensors, _) = checkpoint::read(&latest, &Device::Cpu).unwrap();
    assert!(!tensors.is_empty());
    for (k, t) in &tensors {
        assert!(
            all_finite(t).unwrap(),
            "{k} is not finite in {}",
            latest.display()
        );
    }
    latest
}

/// The checkpoint directories under the run directory, by name.
fn checkpoints(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    v.sort();
    v
}

#[test]
fn a_nan_gradient_stops_at_its_step_naming_the_parameter() {
    let mut split = dense_split();
    // Batch 7 (0-based 6) of epoch 1 holds a zero feature: finite loss, NaN gradient of `w`.
    let row = row_of_batch(6, 10);
    let Column::Dense { values, .. } = &mut split.train.columns[0] else {
        unreachable!()
    };
    values[row] = 0.0;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dense_config(dir.path());
    let mut model = SqrtModel::new((*split.schema).clone());
    let e = format!(
        "{:#}",
        fit(&mut model, &split, &cfg, Start::Fresh).unwrap_err()
    );
    assert!(e.contains("step 7, epoch 1, batch 7"), "{e}");
    assert!(e.contains("gradient of parameter `w` is not finite"), "{e}");
    assert!(e.contains("last good checkpoint is untouched"), "{e}");
    // The checkpoint of step 4 is the latest, intact and finite; nothing was saved after it.
    let latest = latest_is_good(dir.path());
    assert_eq!(latest.file_name().unwrap(), "step-000000000004");
    assert_eq!(checkpoints(dir.path()), ["step-000000000004"]);
    assert!(!dir.path().join("results.json").exists());

    // The same for the rows of an embedding table: z = 0 in batch 6 makes only their gradient
    // NaN; the table is named.
    let mut split = dense_split();
    let row = row_of_batch(5, 3);
    let Column::Dense { values, .. } = &mut split.train.columns[1] else {
        unreachable!()
    };
    values[row] = 0.0;
    let dir = tempfile::tempdir().unwrap();
    let mut model = SqrtModel::new((*split.schema).clone());
    let e = format!(
        "{:#}",
        fit(&mut model, &split, &dense_config(dir.path()), Start::Fresh).unwrap_err()
    );
    assert!(e.contains("step 6, epoch 1, batch 6"), "{e}");
    assert!(
        e.contains("the gradient of the rows of table `u`") && e.contains("is not finite"),
        "{e}"
    );
    let latest = latest_is_good(dir.path());
    assert_eq!(latest.file_name().unwrap(), "step-000000000004");
}

#[test]
fn an_infinite_label_and_a_broken_update_are_named_too() {
    // An infinite label in batch 3 (NaN would mark a missing label, which the loss skips):
    // the loss refuses it, naming the label, its task and its row.
    let mut split = dense_split();
    let row = row_of_batch(2, 1);
    split.train.labels[0][row] = f32::INFINITY;
    let dir = tempfile::tempdir().unwrap();
    let cfg = dense_config(dir.path());
    let mut model = SqrtModel::new((*split.schema).clone());
    let e = format!(
        "{:#}",
        fit(&mut model, &split, &cfg, Start::Fresh).unwrap_err()
    );
    assert!(e.contains("step 3, epoch 1, batch 3"), "{e}");
    assert!(
        e.contains("task `like`: the label at row 1 of the batch is inf"),
        "{e}"
    );
    assert!(!dir.path().join("checkpoints/latest").exists());

    // A parameter that an update makes infinite is caught at that step (here 6), not later.
    let split = dense_split();
    let dir = tempfile::tempdir().unwrap();
    let cfg = dense_config(dir.path());
    let mut model = SqrtModel::new((*split.schema).clone());
    model.poison_after = Some(6);
    let e = format!(
        "{:#}",
        fit(&mut model, &split, &cfg, Start::Fresh).unwrap_err()
    );
    assert!(e.contains("step 6, epoch 1, batch 6"), "{e}");
    assert!(
        e.contains("parameter `w` is not finite after the update"),
        "{e}"
    );
    let latest = latest_is_good(dir.path());
    assert_eq!(latest.file_name().unwrap(), "step-000000000004");

    // The same data without poison trains to the end.
    let dir = tempfile::tempdir().unwrap();
    let cfg = dense_config(dir.path());
    let mut model = SqrtModel::new((*split.schema).clone());
    let out = fit(&mut model, &split, &cfg, Start::Fresh).unwrap();
    assert_eq!(out.steps, 32);
}

#[test]
fn finiteness_check_sees_nan_and_both_infinities_and_never_overflows() {
    let d = Device::Cpu;
    let ok = Tensor::new(&[f32::MAX, f32::MAX, -f32::MAX, 0.0, -0.0], &d).unwrap();
    assert!(all_finite(&ok).unwrap(), "a sum would overflow here");
    for bad in [f32::NAN, f32::INFINITY, f32::NEG_INFINITY] {
        let t = Tensor::new(&[1f32, bad, 2.0], &d).unwrap();
        assert!(!all_finite(&t).unwrap(), "{bad}");
        assert!(
            !all_finite(&t.to_dtype(DType::F64).unwrap()).unwrap(),
            "{bad}"
        );
    }
    assert!(all_finite(&Tensor::new(&[7u32], &d).unwrap()).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Output directory problems are reported before training.

#[test]
fn an_unusable_run_directory_is_refused_before_training() {
    let split = dense_split();
    let tmp = tempfile::tempdir().unwrap();
    // The run directory's parent is a regular file (permission bits do not stop root).
    let file = tmp.path().join("not-a-directory");
    std::fs::write(&file, b"x").unwrap();
    let cfg = dense_config(&file.join("run"));
    let mut model = SqrtModel::new((*split.schema).clone());
    let e = format!(
        "{:#}",
        fit(&mut model, &split, &cfg, Start::Fresh).unwrap_err()
    );
    assert!(
        e.contains("cannot create run directory") && e.contains("not-a-directory"),
        "{e}"
    );
    // Nothing trained: the model is as built.
    assert_eq!(
        model.w.as_tensor().to_vec1::<f32>().unwrap(),
        [1.0],
        "the model must be untouched"
    );

    // Too little free space for two checkpoints is refused with the numbers.
    let e = check_space(Path::new("runs/x"), Some(3_000_000), 2_000_000)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("runs/x") && e.contains("3 MB free") && e.contains("at least 4 MB"),
        "{e}"
    );
    assert!(check_space(Path::new("runs/x"), Some(4_000_000), 2_000_000).is_ok());
    assert!(check_space(Path::new("runs/x"), None, u64::MAX).is_ok());
    // The free space of a real directory is known on this platform.
    if cfg!(unix) {
        assert!(free_bytes(tmp.path()).unwrap() > 0);
        assert!(free_bytes(&tmp.path().join("missing")).is_none());
    }
}

// ---------------------------------------------------------------------------------------------
// Unknown IDs at inference.

/// 30 users and 20 items with planted factors (vocabularies 31 and 21: index 0 is OOV).
fn id_split() -> Split {
    let (users, items, n) = (30usize, 20usize, 3000usize);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let uf: Vec<[f32; 2]> = (0..users)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let vf: Vec<[f32; 2]> = (0..items)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", users + 1),
            FieldSpec::categorical("item_id", items + 1),
        ],
        tasks: vec![TaskSpec::new("like", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    });
    let (mut u, mut i, mut y) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..n {
        let a = rng.random_range(0..users);
        let b = rng.random_range(0..items);
        let s = uf[a][0] * vf[b][0] + uf[a][1] * vf[b][1];
        u.push(a as u32 + 1);
        i.push(b as u32 + 1);
        y.push(f32::from(u8::from(s > 0.0)));
    }
    let all = Batch {
        schema: schema.clone(),
        columns: vec![Column::Ids(u), Column::Ids(i)],
        labels: vec![y],
        weights: None,
        slices: Vec::new(),
    };
    Split {
        name: "ids".into(),
        seed: 3,
        schema,
        train: all.range(0, 2400),
        valid: all.range(2400, 2700),
        test: all.range(2700, 3000),
        vocabs: BTreeMap::new(),
        scenario_names: Vec::new(),
        items: None,
        seq: None,
    }
}

/// A batch of (user, item) pairs; user IDs may lie outside the vocabulary (a raw batch, as a
/// serving system would build it, not one that went through `Batch::validate`).
fn pairs(schema: &Arc<Schema>, pairs: &[(u32, u32)]) -> Batch {
    Batch {
        schema: schema.clone(),
        columns: vec![
            Column::Ids(pairs.iter().map(|p| p.0).collect()),
            Column::Ids(pairs.iter().map(|p| p.1).collect()),
        ],
        labels: vec![vec![0.0; pairs.len()]],
        weights: None,
        slices: Vec::new(),
    }
}

/// The row of the user table that `id` uses, for the table kinds whose rule is a row mapping.
fn user_row(model: &dyn Model, id: u32) -> Option<u32> {
    let tables = model.tables();
    let (_, t) = tables.iter().find(|(n, _)| n.contains("user"))?;
    let any = t.as_any();
    if let Some(h) = any.downcast_ref::<rec_nn::embedding::HashedTable>() {
        return Some(h.row_of(&[id])[0]);
    }
    if let Some(f) = any.downcast_ref::<rec_nn::embedding::FrequencyTable>() {
        return Some(f.row_of(&[id])[0]);
    }
    if let Some(c) = any.downcast_ref::<embedding_cel::ClusteredEmbedding>() {
        return Some(c.cluster_of(id));
    }
    None
}

#[test]
fn unknown_ids_at_inference_follow_each_tables_rule() {
    let split = id_split();
    let vocab = split.schema.field("user_id").unwrap().vocab as u32;
    let kinds: [(&str, &str); 6] = [
        ("full", r#"kind = "full""#),
        (
            "hashed",
            r#"kind = "hashed"
rows = 8"#,
        ),
        (
            "qr",
            r#"kind = "qr"
collisions = 4"#,
        ),
        (
            "frequency",
            r#"kind = "frequency"
top_k = 10
rows = 6"#,
        ),
        (
            "cel",
            r#"kind = "cel"
max_clusters = 4
split_every = 3"#,
        ),
        (
            "cel-lite",
            r#"kind = "cel"
mode = "lite"
max_clusters = 4
split_every = 3
reservoir = 16"#,
        ),
    ];
    for (kind, table) in kinds {
        let dir = tempfile::tempdir().unwrap();
        let mut cfg = Config::new("fm", "ids", "none");
        cfg.train.epochs = 1;
        cfg.train.batch_size = 256;
        cfg.train.progress = false;
        cfg.optimizer.sparse = rec_nn::optim::OptimizerConfig::adam(0.05);
        cfg.embeddings.default = Some(toml::from_str(table).unwrap());
        cfg.output.dir = Some(dir.path().to_path_buf());
        let mut model =
            registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
        fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap();
        if kind.starts_with("cel") {
            // The rule is tested on a table that did split: cluster 0 is one of several.
            let tables = model.tables();
            let (_, t) = tables.iter().find(|(n, _)| n.contains("user")).unwrap();
            let c = t
                .as_any()
                .downcast_ref::<embedding_cel::ClusteredEmbedding>()
                .unwrap();
            assert!(c.num_clusters() > 1, "{kind}: no split happened");
        }

        // Unknown users just past the vocabulary and far beyond it, each with items 1..=3.
        let unknown = [vocab, vocab + 7, 1_000_003, u32::MAX];
        let mut asked = Vec::new();
        for &u in &unknown {
            for item in 1..=3 {
                asked.push((u, item));
            }
        }
        let p = rec_nn::model::predict(model.as_mut(), &pairs(&split.schema, &asked)).unwrap();
        assert!(p[0].iter().all(|x| x.is_finite()), "{kind}: {:?}", p[0]);

        // The known ID each unknown one must behave like.
        let twin = |u: u32| -> u32 {
            match kind {
                // full and QR: the out-of-vocabulary row of ID 0.
                "full" | "qr" => 0,
                // hashed and frequency: an in-vocabulary ID that uses the same row; CEL: an
                // in-vocabulary ID of cluster 0 (at least ID 0, never observed in training).
                _ => {
                    let row = user_row(model.as_ref(), u).unwrap();
                    (0..vocab)
                        .find(|&k| user_row(model.as_ref(), k) == Some(row))
                        .unwrap_or_else(|| panic!("{kind}: no known ID shares row {row}"))
                }
            }
        };
        let twins: Vec<(u32, u32)> = asked.iter().map(|&(u, i)| (twin(u), i)).collect();
        let q = rec_nn::model::predict(model.as_mut(), &pairs(&split.schema, &twins)).unwrap();
        assert_eq!(p, q, "{kind}: unknown IDs do not follow the table's rule");

        // The rule survives a save and a load into a freshly built model.
        let path = dir.path().join("model.safetensors");
        rec_nn::io::save_model(model.as_ref(), &path).unwrap();
        let mut fresh =
            registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
        rec_nn::io::load_model(fresh.as_mut(), &path).unwrap();
        let r = rec_nn::model::predict(fresh.as_mut(), &pairs(&split.schema, &asked)).unwrap();
        assert_eq!(p, r, "{kind}: predictions changed through save/load");
    }
}

#[test]
fn options_a_dataset_does_not_take_are_refused_by_name() {
    let mut cfg = rec_trainer::config::DataConfig::default();
    assert_eq!(cfg.dataset, "ml-100k");
    cfg.options.insert("preset".into(), "small".into());
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(e.contains("`preset`") && e.contains("ml-100k"), "{e}");
    cfg.dataset = "synthetic".into();
    cfg.options.insert("presets".into(), "small".into());
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(e.contains("`presets`"), "{e}");
    // A generator size beyond 32 bits is refused, not wrapped (2^32 + 1 items would be 1).
    cfg.options.remove("presets");
    cfg.options
        .insert("items".into(), toml::Value::Integer((1 << 32) + 1));
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(e.contains("items must be at most"), "{e}");
    // A generator file and a preset: the preset would be ignored.
    cfg.options.remove("items");
    cfg.options.insert("config".into(), "gen.toml".into());
    cfg.options.insert("preset".into(), "large".into());
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(e.contains("both config") && e.contains("preset"), "{e}");
    cfg.options.remove("config");
    cfg.options.remove("preset");
    // Each protocol's history option, not the other's (which it would ignore).
    cfg.options.remove("items");
    cfg.protocol = "ecom".into();
    cfg.options.insert("history".into(), 5.into());
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(
        e.contains("history is for") && e.contains("max_history"),
        "{e}"
    );
    cfg.protocol = "ctr".into();
    cfg.options.remove("history");
    cfg.options.insert("max_history".into(), 5.into());
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(
        e.contains("max_history is for") && e.contains("`ctr`"),
        "{e}"
    );
}

/// Writes an interaction schema of columns user, item and click into `dir`.
fn click_schema(dir: &Path) -> std::path::PathBuf {
    let schema = dir.join("schema.toml");
    std::fs::write(
        &schema,
        "[[columns]]\nname = \"user\"\nrole = \"user\"\n\
         [[columns]]\nname = \"item\"\nrole = \"item\"\n\
         [[columns]]\nname = \"click\"\nrole = \"label\"\n",
    )
    .unwrap();
    schema
}

#[test]
fn a_csv_with_only_a_header_is_refused_before_training() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = click_schema(tmp.path());
    let csv = tmp.path().join("clicks.csv");
    std::fs::write(&csv, "user,item,click\n").unwrap();
    let mut cfg = rec_trainer::config::DataConfig {
        dataset: "csv".into(),
        ..Default::default()
    };
    cfg.options
        .insert("path".into(), csv.display().to_string().into());
    cfg.options
        .insert("schema".into(), schema.display().to_string().into());
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(
        e.contains("clicks.csv") && e.contains("no data rows"),
        "{e}"
    );
    // One row leaves the validation and test parts empty: refused, not trained and
    // "tested" on nothing; ten rows load.
    std::fs::write(&csv, "user,item,click\nu1,i1,1\n").unwrap();
    let e = format!("{:#}", rec_trainer::data::load_split(&cfg).unwrap_err());
    assert!(
        e.contains("of its 1 data rows leaves the") && e.contains("empty"),
        "{e}"
    );
    let ten: String = (0..10).map(|k| format!("u{k},i{k},{}\n", k % 2)).collect();
    std::fs::write(&csv, format!("user,item,click\n{ten}")).unwrap();
    rec_trainer::data::load_split(&cfg).unwrap();
    // A protocol means nothing for a CSV file (it used to be accepted and printed in reports).
    let mut seq = cfg.clone();
    seq.protocol = "seq".into();
    let e = format!("{:#}", rec_trainer::data::load_split(&seq).unwrap_err());
    assert!(
        e.contains("protocol `seq`") && e.contains("no protocols"),
        "{e}"
    );
    // A path that is not a string is named as such (not as missing).
    let mut bad = cfg.clone();
    bad.options.insert("path".into(), 5.into());
    let e = format!("{:#}", rec_trainer::data::load_split(&bad).unwrap_err());
    assert!(e.contains("path must be a path as a string, got 5"), "{e}");
    bad.options.remove("path");
    let e = format!("{:#}", rec_trainer::data::load_split(&bad).unwrap_err());
    assert!(e.contains("needs `path`"), "{e}");
}

/// A one-epoch FM run on the CSV `csv` read with `schema`, into `out`.
fn csv_fm_config(csv: &Path, schema: &Path, out: &Path) -> Config {
    let text = format!(
        "[data]\ndataset = \"csv\"\n[data.options]\npath = {:?}\nschema = {:?}\n\
         [model]\nname = \"fm\"\n[model.params]\ndim = 4\n\
         [train]\nepochs = 1\nbatch_size = 32\nprogress = false\n[output]\ndir = {:?}\n",
        csv.display().to_string(),
        schema.display().to_string(),
        out.display().to_string(),
    );
    Config::from_toml(&text, "csv run").unwrap()
}

/// A warm start on data in which a column changed role (multi-hot tags read as one
/// categorical token) is refused, naming the field and both kinds, and writes nothing.
#[test]
fn a_warm_start_refuses_a_column_whose_role_changed() {
    let tmp = tempfile::tempdir().unwrap();
    let mut text = String::from("user,item,tags,click\n");
    for r in 0..120 {
        text.push_str(&format!(
            "u{},i{},t{}|t{},{}\n",
            r % 7,
            r % 5,
            r % 3,
            r % 4,
            (r / 3) % 2
        ));
    }
    let csv = tmp.path().join("day.csv");
    std::fs::write(&csv, text).unwrap();
    let schema = |name: &str, tags: &str| {
        let p = tmp.path().join(name);
        std::fs::write(
            &p,
            format!(
                "[[columns]]\nname = \"user\"\nrole = \"user\"\n\
                 [[columns]]\nname = \"item\"\nrole = \"item\"\n\
                 [[columns]]\nname = \"tags\"\n{tags}\n\
                 [[columns]]\nname = \"click\"\nrole = \"label\"\n"
            ),
        )
        .unwrap();
        p
    };
    let bags = schema("bags.toml", "role = \"multi_hot\"\nseparator = \"|\"");
    let tokens = schema("tokens.toml", "role = \"categorical\"");
    let config = |schema: &Path, out: &str| csv_fm_config(&csv, schema, &tmp.path().join(out));
    rec_trainer::run(&config(&bags, "first"), Start::Fresh).unwrap();
    let ck = checkpoint::resolve_pointer(&tmp.path().join("first/checkpoints"), "latest")
        .unwrap()
        .unwrap();
    let e = format!(
        "{:#}",
        rec_trainer::run(&config(&tokens, "second"), Start::WarmStart(ck.clone())).unwrap_err()
    );
    assert!(
        e.contains("field `tags` as \"multi_hot\"") && e.contains("as \"categorical\""),
        "{e}"
    );
    assert!(!tmp.path().join("second").exists());
    // The same role is accepted.
    rec_trainer::run(&config(&bags, "third"), Start::WarmStart(ck)).unwrap();
}

/// The daily update on your own CSV files: the next day's file is encoded with the vocabularies
/// of the checkpoint it warm-starts from (saved in the checkpoint), not with vocabularies built
/// afresh from the new file, which would give known IDs other rows. An interrupted run whose
/// file changed is not resumed: that would be another run.
#[test]
fn a_warm_start_on_a_new_csv_keeps_the_checkpoints_vocabularies() {
    let tmp = tempfile::tempdir().unwrap();
    let schema = click_schema(tmp.path());
    let write_day = |name: &str, items: &[&str]| {
        let mut text = String::from("user,item,click\n");
        for r in 0..120 {
            let item = items[r % items.len()];
            text.push_str(&format!("u{},{item},{}\n", r % 7, (r / 3) % 2));
        }
        let p = tmp.path().join(name);
        std::fs::write(&p, text).unwrap();
        p
    };
    // Day 2 lacks i1 and has a new item i0: built afresh, its vocabulary would differ.
    let day1 = write_day("day1.csv", &["i1", "i2", "i3", "i4", "i5"]);
    let day2 = write_day("day2.csv", &["i0", "i2", "i3", "i4", "i5"]);
    let config = |csv: &Path, out: &str| csv_fm_config(csv, &schema, &tmp.path().join(out));
    let (c1, c2) = (config(&day1, "day1"), config(&day2, "day2"));
    rec_trainer::run(&c1, Start::Fresh).unwrap();
    let ck1 = checkpoint::resolve_pointer(&tmp.path().join("day1/checkpoints"), "latest")
        .unwrap()
        .unwrap();
    let ck1_path = ck1.clone();
    let v1 = rec_trainer::train::checkpoint_vocabs(&ck1)
        .unwrap()
        .expect("a csv run's checkpoint carries its vocabularies");
    let items1 = &v1.fields["item"];
    assert_eq!(
        rec_trainer::data::load_split(&c1.data).unwrap().vocabs,
        v1.fields
    );
    let fresh = rec_trainer::data::load_split(&c2.data).unwrap();
    assert_ne!(
        &fresh.vocabs["item"], items1,
        "the test needs a changed vocabulary"
    );

    // `fit` on data encoded afresh refuses the checkpoint, naming the field.
    let mut model = registry::build_model(&c2, &fresh.schema, &fresh.train, &Device::Cpu).unwrap();
    let e = format!(
        "{:#}",
        fit(model.as_mut(), &fresh, &c2, Start::WarmStart(ck1.clone())).unwrap_err()
    );
    assert!(e.contains("vocabulary of field `item`"), "{e}");
    // Refused before the run directory is made.
    assert!(!tmp.path().join("day2").exists());

    let day2_out = rec_trainer::run(&c2, Start::WarmStart(ck1.clone())).unwrap();
    // The run records where it started, in results.json and report.md, also after a resume.
    assert_eq!(day2_out.warm_start.as_ref(), Some(&ck1));
    let report = std::fs::read_to_string(tmp.path().join("day2/report.md")).unwrap();
    assert!(
        report.contains(&format!(
            "Warm-started from the checkpoint {}",
            ck1.display()
        )),
        "{report}"
    );
    let mut longer = c2.clone();
    longer.train.epochs = 2;
    let resumed = rec_trainer::run(&longer, Start::Resume).unwrap();
    assert_eq!(resumed.warm_start.as_ref(), Some(&ck1));
    let ck2 = checkpoint::resolve_pointer(&tmp.path().join("day2/checkpoints"), "latest")
        .unwrap()
        .unwrap();
    let v2 = rec_trainer::train::checkpoint_vocabs(&ck2)
        .unwrap()
        .unwrap();
    assert_eq!(v2, v1, "day 2 trained and saved with day 1's vocabularies");
    // Known items keep their day-1 index; the new one is out of vocabulary.
    let split = rec_trainer::data::load_split_with(&c2.data, Some(&v1)).unwrap();
    assert_eq!(&split.vocabs["item"], items1);
    assert_eq!(items1.get("i0"), 0);
    assert_ne!(items1.get("i2"), 0);
    let item = split.schema.item_field.clone().expect("item field");
    let ids = split.train.ids(&item).expect("item ids");
    assert!(ids.contains(&0), "i0 maps to the out-of-vocabulary row");
    assert!(ids.contains(&items1.get("i2")));

    // `--resume` of day 1's run (one more epoch) after its file changed on disk: the split
    // and the batch order would not be the interrupted run's, so it is refused (day 2's data
    // is trained by a warm start, as above), and nothing is written.
    std::fs::copy(&day2, &day1).unwrap();
    let mut more = c1.clone();
    more.train.epochs = 2;
    let e = format!("{:#}", rec_trainer::run(&more, Start::Resume).unwrap_err());
    assert!(e.contains("other data"), "{e}");
    let latest = checkpoint::resolve_pointer(&tmp.path().join("day1/checkpoints"), "latest")
        .unwrap()
        .unwrap();
    assert_eq!(latest, ck1_path, "the refused resume saved nothing");
}
