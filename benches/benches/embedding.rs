//! One embedding training step (lookup of 1024 IDs, dim 64 -> small loss -> backward ->
//! update) of rec-nn's sparse full table against candle's dense `Embedding` with candle's own
//! SGD and AdamW, at growing table sizes.
//!
//! The sparse step should cost the same at any size (it touches only the batch's rows); the
//! dense step grows with the table (its gradient and optimizer pass cover every row). Dense
//! sizes stop at 10^6 rows: at 10^7 a single dense step takes seconds to tens of seconds.
//!
//! Both sides run with `rec_nn::sys::tune_malloc()` (as a training program should) and, through
//! the workspace's `.cargo/config.toml`, `CANDLE_NUM_THREADS=1`.
//!
//! Run: `cargo bench -p rec-benches --bench embedding`.

use std::hint::black_box;
use std::time::Duration;

use candle_core::{DType, Device, Tensor, Var};
use candle_nn::{AdamW, Embedding, Module, Optimizer, ParamsAdamW, SGD};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_nn::embedding::{EmbeddingTable, FullTable, TableOptions};
use rec_nn::init::{Init, named_rng};
use rec_nn::optim::OptimizerConfig;

const BATCH: usize = 1024;
const DIM: usize = 64;

/// Pre-drawn batches of uniformly random IDs (uniform is the worst case for caches).
///
/// 4096 batches (16 MiB of IDs): the timed loop runs about as many steps as there are
/// batches, so a row is rarely met twice while still in cache, and at 10^7 rows the batches
/// touch about 3.4 million distinct rows (over 800 MB with SGD), far beyond any last-level
/// cache. (With 64 batches, 65,536 rows, a good part of the working set stayed cached.)
const ID_BATCHES: usize = 4096;

fn id_batches(rows: usize) -> Vec<Vec<u32>> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..ID_BATCHES)
        .map(|_| {
            (0..BATCH)
                .map(|_| rng.random_range(0..rows as u32))
                .collect()
        })
        .collect()
}

/// Optimizer state is allocated zeroed and the OS commits its pages on first write, so the
/// first update of a row in a never-touched page pays a page fault. Touch every row once
/// (a zero-gradient update) so the benchmark measures the steady state of a long run.
fn touch_state(table: &mut FullTable, rows: usize) {
    let all: Vec<u32> = (0..rows as u32).collect();
    for chunk in all.chunks(1 << 16) {
        let e = table.lookup(chunk, true).unwrap();
        let zero = (e.clone() * e.zeros_like().unwrap())
            .unwrap()
            .sum_all()
            .unwrap();
        table.apply_gradients(&zero.backward().unwrap()).unwrap();
    }
}

fn sparse(c: &mut Criterion) {
    // What a training program does at start (see `rec_nn::sys`): without it glibc returns the
    // step's temporaries to the OS after every step and the candle part runs ~10x slower.
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("embedding_step");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(30);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for rows in [10_000usize, 1_000_000, 10_000_000] {
        let batches = id_batches(rows);
        for (name, opt) in [
            ("sparse_sgd", OptimizerConfig::sgd(0.01)),
            ("sparse_adam", OptimizerConfig::adam(0.001)),
        ] {
            let opts = TableOptions::new(
                Init::Normal {
                    mean: 0.0,
                    std: 0.05,
                },
                opt,
            );
            let mut table =
                FullTable::new(rows, DIM, &opts, &mut named_rng(1, "bench"), &Device::Cpu)
                    .expect("table");
            if opt.slots() > 0 {
                touch_state(&mut table, rows);
            }
            let mut k = 0;
            g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                b.iter(|| {
                    let ids = &batches[k % batches.len()];
                    k += 1;
                    let e = table.lookup(ids, true).unwrap();
                    let loss = e.sqr().unwrap().mean_all().unwrap();
                    let grads = loss.backward().unwrap();
                    table.apply_gradients(&grads).unwrap();
                    black_box(loss)
                })
            });
        }
    }
    g.finish();
}

fn dense(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("embedding_step");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(10);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(5));
    for rows in [10_000usize, 1_000_000] {
        let batches: Vec<Tensor> = id_batches(rows)
            .into_iter()
            .map(|ids| Tensor::from_vec(ids, BATCH, &Device::Cpu).unwrap())
            .collect();
        for name in ["dense_sgd", "dense_adamw"] {
            let w = Var::from_tensor(
                &(Tensor::randn(0f32, 1.0, (rows, DIM), &Device::Cpu).unwrap() * 0.05).unwrap(),
            )
            .unwrap();
            let emb = Embedding::new(w.as_tensor().clone(), DIM);
            let mut opt: Box<dyn FnMut(&Tensor)> = if name == "dense_sgd" {
                let mut o = SGD::new(vec![w.clone()], 0.01).unwrap();
                Box::new(move |l: &Tensor| o.backward_step(l).unwrap())
            } else {
                let p = ParamsAdamW {
                    lr: 0.001,
                    ..Default::default()
                };
                let mut o = AdamW::new(vec![w.clone()], p).unwrap();
                Box::new(move |l: &Tensor| o.backward_step(l).unwrap())
            };
            let mut k = 0;
            g.bench_with_input(BenchmarkId::new(name, rows), &rows, |b, _| {
                b.iter(|| {
                    let ids = &batches[k % batches.len()];
                    k += 1;
                    let e = emb.forward(ids).unwrap();
                    let loss = e.sqr().unwrap().mean_all().unwrap();
                    opt(&loss);
                    black_box(loss)
                })
            });
            drop(opt);
            assert_eq!(w.dtype(), DType::F32);
        }
    }
    g.finish();
}

criterion_group!(benches, sparse, dense);
criterion_main!(benches);
