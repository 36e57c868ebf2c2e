//! Training step and inference batch of the base models on the real MovieLens-100k P-CTR
//! features (every field of the shipped DeepFM configuration), with full tables and with CEL
//! user and item tables.
//!
//! - `train_step/{model}-{tables}`: one optimizer step (forward, loss, backward, dense Adam,
//!   sparse row updates) on a batch of 1024 samples, cycling through the training set.
//! - `infer_1024/{model}-{tables}`: scoring a batch of 1024 samples.
//!
//! Needs MovieLens-100k (`cargo xtask data fetch ml-100k`). Run:
//! `cargo xtask bench models` (one thread) or `cargo bench -p rec-benches --bench models`.

use std::hint::black_box;
use std::path::Path;
use std::time::Duration;

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Split};
use rec_nn::model::{Ctx, predict, train_step};
use rec_nn::optim::DenseOptimizer;
use rec_trainer::Config;

const BATCH: usize = 1024;

fn config(model: &str) -> Config {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/deepfm-ml100k-ctr.toml");
    let mut cfg = Config::from_file(&path).expect("the shipped DeepFM configuration");
    cfg.model.name = model.into();
    if model == "fm" {
        // FM has no deep part; the same field width.
        cfg.model.params.remove("mlp");
    }
    cfg
}

fn with_cel(mut cfg: Config) -> Config {
    let t: toml::Table = toml::from_str("kind = \"cel\"\nmax_clusters = 50\n").unwrap();
    for f in ["user_id", "item_id"] {
        cfg.embeddings.fields.insert(f.into(), t.clone());
    }
    cfg
}

fn batches(split: &Split) -> Vec<Batch> {
    let n = split.train.len() / BATCH;
    (0..n)
        .map(|i| split.train.range(i * BATCH, (i + 1) * BATCH))
        .collect()
}

fn models(c: &mut Criterion) {
    let base = config("deepfm");
    let split = rec_trainer::data::load_split(&base.data).expect("MovieLens-100k P-CTR");
    let batches = batches(&split);
    let device = Device::Cpu;
    let variants: Vec<(String, Config)> = ["deepfm", "fm", "widedeep"]
        .iter()
        .flat_map(|m| {
            let full = config(m);
            let cel = with_cel(full.clone());
            [(format!("{m}-full"), full), (format!("{m}-cel"), cel)]
        })
        .collect();

    let mut g = c.benchmark_group("train_step");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30);
    g.warm_up_time(Duration::from_secs(2));
    for (name, cfg) in &variants {
        let mut model =
            rec_trainer::registry::build_model(cfg, &split.schema, &split.train, &device).unwrap();
        let mut opt = DenseOptimizer::new(cfg.optimizer.dense, model.dense_vars()).unwrap();
        let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let batch = &batches[i % batches.len()];
                i += 1;
                black_box(train_step(model.as_mut(), &mut opt, batch, &mut ctx).unwrap())
            })
        });
    }
    g.finish();

    let mut g = c.benchmark_group("infer_1024");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30);
    for (name, cfg) in &variants {
        let mut model =
            rec_trainer::registry::build_model(cfg, &split.schema, &split.train, &device).unwrap();
        let mut i = 0usize;
        g.bench_function(BenchmarkId::from_parameter(name), |b| {
            b.iter(|| {
                let batch = &batches[i % batches.len()];
                i += 1;
                black_box(predict(model.as_mut(), batch).unwrap())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, models);
criterion_main!(benches);
