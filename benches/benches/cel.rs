//! Step costs of CEL-Lite and offline CEL against the full table.
//!
//! - `cel_table_step`: one table step (lookup of 1024 IDs, d = 64 -> loss -> backward ->
//!   update -> `end_step`, which splits every 10 steps) for the full table, CEL-Lite and
//!   offline CEL, at 10^4 ... 10^7 entities. The CEL-Lite cost must not grow with the number
//!   of entities (splits, placement and reassignment touch only the batch).
//! - `cel_lite_batch`: the CEL-Lite step at 10^6 entities for batches of 256 ... 4096 IDs:
//!   its cost grows with the batch.
//! - `cel_model_step`: a whole DeepFM training step (user and item fields of 10^6 IDs, d = 64,
//!   batch 1024) with full tables against CEL-Lite tables: the overhead a model sees.
//!
//! - `cel_lite_split/{batch}/{entities}`: one CEL-Lite split alone
//!   ([`ClusteredEmbedding::lite_split_now`]) after one untimed table step of `batch` IDs has
//!   filled its reservoir, at 10^4 ... 10^7 entities and batches of 256, 1024, 4096.
//! - `cel_lite_reassign/{batch}/{entities}`: one CEL-Lite reassignment pass alone
//!   ([`ClusteredEmbedding::lite_reassign`]) over the distinct entities of a batch, on a table
//!   trained for 200 steps (about 20 clusters), same grid.
//!
//! Splits keep happening during the measurement (`max_clusters` is large), so the figures
//! include them, amortised. Run: `cargo bench -p rec-benches --bench cel`.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use candle_core::{Device, Result, Tensor};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use embedding_cel::{CelConfig, ClusteredEmbedding, Mode, Reassign};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};
use rec_nn::embedding::rows::{RowGrads, dedup};
use rec_nn::embedding::{EmbeddingTable, FullTable, TableOptions};
use rec_nn::init::{Init, named_rng};
use rec_nn::model::{Ctx, train_step};
use rec_nn::models::{DeepFm, DeepFmConfig};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};

const DIM: usize = 64;

fn opts() -> TableOptions {
    TableOptions::new(
        Init::Normal {
            mean: 0.0,
            std: 0.05,
        },
        OptimizerConfig::adam(0.001),
    )
}

fn cel_config(mode: Mode) -> CelConfig {
    CelConfig {
        max_clusters: 60_000,
        split_every: 10,
        mode,
        lite_reassign_every: 1,
        reassign: Reassign::Approx { curvature: 1.0 },
        ..Default::default()
    }
}

fn table(kind: &str, rows: usize) -> Box<dyn EmbeddingTable> {
    let mut rng = named_rng(1, "bench");
    let d = Device::Cpu;
    match kind {
        "full" => Box::new(FullTable::new(rows, DIM, &opts(), &mut rng, &d).unwrap()),
        "cel_lite" => Box::new(
            ClusteredEmbedding::new(
                "f",
                rows,
                DIM,
                cel_config(Mode::Lite),
                &opts(),
                &mut rng,
                1,
                &d,
            )
            .unwrap(),
        ),
        _ => Box::new(
            ClusteredEmbedding::new(
                "f",
                rows,
                DIM,
                cel_config(Mode::Offline),
                &opts(),
                &mut rng,
                1,
                &d,
            )
            .unwrap(),
        ),
    }
}

fn id_batches(rows: usize, batch: usize) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..64)
        .map(|_| {
            (0..batch)
                .map(|_| rng.random_range(0..rows as u32))
                .collect()
        })
        .collect()
}

fn step(t: &mut dyn EmbeddingTable, ids: &[u32], w: &Tensor, step: u64) -> Result<()> {
    let e = t.lookup(ids, true)?;
    let loss = (e.tanh()? * w)?.sum_all()?;
    t.apply_gradients(&loss.backward()?)?;
    t.end_step(step)
}

fn table_steps(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("cel_table_step");
    g.throughput(Throughput::Elements(1024));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let w = Tensor::randn(0f32, 1.0, (1024, DIM), &Device::Cpu).unwrap();
    for rows in [10_000usize, 100_000, 1_000_000, 10_000_000] {
        let batches = id_batches(rows, 1024);
        for kind in ["full", "cel_lite", "cel_offline"] {
            if kind == "full" && rows > 1_000_000 {
                continue; // 10^7 x 64 floats with Adam state: 7.7 GB; see the `embedding` bench.
            }
            let mut t = table(kind, rows);
            let mut s = 0u64;
            g.bench_with_input(BenchmarkId::new(kind, rows), &rows, |b, _| {
                b.iter(|| {
                    s += 1;
                    step(t.as_mut(), &batches[s as usize % batches.len()], &w, s).unwrap();
                    black_box(());
                })
            });
        }
    }
    g.finish();
}

fn lite_batches(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("cel_lite_batch");
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    let rows = 1_000_000;
    for batch in [256usize, 1024, 4096] {
        g.throughput(Throughput::Elements(batch as u64));
        let w = Tensor::randn(0f32, 1.0, (batch, DIM), &Device::Cpu).unwrap();
        let batches = id_batches(rows, batch);
        let mut t = table("cel_lite", rows);
        let mut s = 0u64;
        g.bench_with_input(BenchmarkId::new("cel_lite", batch), &batch, |b, _| {
            b.iter(|| {
                s += 1;
                step(t.as_mut(), &batches[s as usize % batches.len()], &w, s).unwrap();
            })
        });
    }
    g.finish();
}

fn model_steps(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("cel_model_step");
    g.throughput(Throughput::Elements(1024));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(4));
    let rows = 1_000_000;
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", rows),
            FieldSpec::categorical("item_id", rows),
        ],
        tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    });
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let batches: Vec<Batch> = (0..32)
        .map(|_| Batch {
            schema: schema.clone(),
            columns: vec![
                Column::Ids(
                    (0..1024)
                        .map(|_| rng.random_range(0..rows as u32))
                        .collect(),
                ),
                Column::Ids(
                    (0..1024)
                        .map(|_| rng.random_range(0..rows as u32))
                        .collect(),
                ),
            ],
            labels: vec![(0..1024).map(|_| rng.random_range(0..2) as f32).collect()],
            weights: None,
            slices: Vec::new(),
        })
        .collect();
    for kind in ["full", "cel_lite"] {
        let mut factory = |f: &FieldSpec, dim: usize| -> Result<Box<dyn EmbeddingTable>> {
            let mut r = named_rng(1, &f.name);
            let d = Device::Cpu;
            Ok(match kind {
                "full" => Box::new(FullTable::new(f.vocab, dim, &opts(), &mut r, &d)?),
                _ => Box::new(ClusteredEmbedding::new(
                    &f.name,
                    f.vocab,
                    dim,
                    cel_config(Mode::Lite),
                    &opts(),
                    &mut r,
                    1,
                    &d,
                )?),
            })
        };
        let cfg = DeepFmConfig {
            dim: DIM,
            ..Default::default()
        };
        let mut model = DeepFm::new(&schema, &cfg, &mut factory, &Device::Cpu, 1).unwrap();
        let mut opt = DenseOptimizer::new(
            OptimizerConfig::adam(0.001),
            rec_nn::Model::dense_vars(&model),
        )
        .unwrap();
        let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
        let mut s = 0usize;
        g.bench_function(BenchmarkId::new(kind, rows), |b| {
            b.iter(|| {
                s += 1;
                train_step(&mut model, &mut opt, &batches[s % batches.len()], &mut ctx).unwrap();
            })
        });
    }
    g.finish();
}

/// A CEL-Lite table of `rows` entities that only splits when told to.
///
/// Lazy placement windows last one step: a cluster with an open window is not split again, and
/// with the default 200-step windows at 10^7 entities the only clusters left to split are
/// children too small to appear in a batch, so most split calls would find nothing to do.
fn manual_lite(rows: usize) -> ClusteredEmbedding {
    let mut rng = named_rng(1, "bench");
    let cfg = CelConfig {
        split_every: 1 << 40,
        placement_steps: 1,
        ..cel_config(Mode::Lite)
    };
    ClusteredEmbedding::new("f", rows, DIM, cfg, &opts(), &mut rng, 1, &Device::Cpu).unwrap()
}

const GRID_ROWS: [usize; 4] = [10_000, 100_000, 1_000_000, 10_000_000];
const GRID_BATCH: [usize; 3] = [256, 1024, 4096];

fn lite_split(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("cel_lite_split");
    // Only the split is timed, but every timed split needs an untimed table step before it.
    g.sample_size(10);
    g.warm_up_time(Duration::from_millis(100));
    g.measurement_time(Duration::from_millis(500));
    for batch in GRID_BATCH {
        let w = Tensor::randn(0f32, 1.0, (batch, DIM), &Device::Cpu).unwrap();
        for rows in GRID_ROWS {
            let batches = id_batches(rows, batch);
            let mut t = manual_lite(rows);
            t.lite_split_now().unwrap(); // opens the first reservoir
            let (mut s, mut calls, mut made) = (0u64, 0u64, 0u64);
            g.bench_with_input(BenchmarkId::new(batch.to_string(), rows), &rows, |b, _| {
                // One timed split per iteration: table steps (untimed) fill the reservoir until
                // a split is made (at most 20 tries; a try that splits nothing counts then).
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        for attempt in 0..20 {
                            s += 1;
                            let ids = &batches[s as usize % batches.len()];
                            step(&mut t, ids, &w, s).unwrap();
                            let t0 = std::time::Instant::now();
                            let child = black_box(t.lite_split_now().unwrap());
                            let dt = t0.elapsed();
                            calls += 1;
                            if child.is_some() || attempt == 19 {
                                made += u64::from(child.is_some());
                                total += dt;
                                break;
                            }
                        }
                    }
                    total
                })
            });
            eprintln!(
                "cel_lite_split {batch}/{rows}: {made} splits in {calls} calls, {} clusters",
                t.num_clusters()
            );
        }
    }
    g.finish();
}

fn lite_reassign(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("cel_lite_reassign");
    g.sample_size(20);
    g.warm_up_time(Duration::from_millis(300));
    g.measurement_time(Duration::from_secs(1));
    for batch in GRID_BATCH {
        let w = Tensor::randn(0f32, 1.0, (batch, DIM), &Device::Cpu).unwrap();
        for rows in GRID_ROWS {
            let batches = id_batches(rows, batch);
            let mut t = table("cel_lite", rows);
            for s in 1..=200u64 {
                step(t.as_mut(), &batches[s as usize % batches.len()], &w, s).unwrap();
            }
            let t = t
                .as_any_mut()
                .and_then(|a| a.downcast_mut::<ClusteredEmbedding>())
                .unwrap();
            // The distinct entities of one batch with random gradients.
            let dd = dedup(&batches[0]);
            let mut rng = ChaCha8Rng::seed_from_u64(11);
            let grads: Vec<f32> = (0..dd.unique.len() * DIM)
                .map(|_| rng.random_range(-0.01f32..0.01))
                .collect();
            let rg = RowGrads::merge(DIM, &dd.unique, &grads, &dd.counts).unwrap();
            g.throughput(Throughput::Elements(rg.len() as u64));
            g.bench_with_input(BenchmarkId::new(batch.to_string(), rows), &rows, |b, _| {
                b.iter(|| black_box(t.lite_reassign(&rg).unwrap()))
            });
            eprintln!(
                "cel_lite_reassign {batch}/{rows}: {} clusters, {} distinct entities",
                t.num_clusters(),
                rg.len()
            );
        }
    }
    g.finish();
}

criterion_group!(
    benches,
    table_steps,
    lite_batches,
    model_steps,
    lite_split,
    lite_reassign
);
criterion_main!(benches);
