//! Cost per sample of DUPN (default widths: item fields 16, property fields 8, LSTM 64,
//! attention 32, heads [64]; CTR and PPP tasks) with histories of 50 and 100 behaviours: one
//! full training step (forward, loss, backward, dense AdaGrad, row-wise AdaGrad on the tables)
//! and an inference batch (forward only), both on batches of 1024 samples. The batches are
//! `rec_benches::workloads::dupn_batch`, the data `cargo xtask bench --compare --model dupn`
//! gives the PyTorch reference. Serving (one user, many candidates) is `dupn_serving`.
//!
//! Run: `cargo xtask bench dupn` (or `cargo bench -p rec-benches --bench dupn`).

use std::time::Duration;

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_benches::workloads::dupn_batch;
use rec_data::Batch;
use rec_nn::embedding::DefaultTableFactory;
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_nn::{Ctx, Model};
use user_dupn::{Dupn, DupnConfig};

const BATCH: usize = 1024;

fn build(history: usize, data: &Batch) -> Dupn {
    let tables = rec_benches::workloads::dupn_tables();
    let mut f = DefaultTableFactory::new(tables, 1, &Device::Cpu);
    let mut factory = |spec: &rec_data::FieldSpec, dim: usize| f.build(spec, dim);
    let cfg = DupnConfig {
        max_history: history,
        ..DupnConfig::default()
    };
    Dupn::new(&data.schema, &cfg, &mut factory, &Device::Cpu, 1).expect("dupn")
}

fn bench(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    for history in [50usize, 100] {
        let batches: Vec<Batch> = (0..4).map(|s| dupn_batch(history, BATCH, s)).collect();
        let mut model = build(history, &batches[0]);
        let mut g = c.benchmark_group("dupn");
        g.throughput(Throughput::Elements(BATCH as u64));
        g.sample_size(10);
        g.warm_up_time(Duration::from_secs(2));
        g.measurement_time(Duration::from_secs(8));
        let mut opt =
            DenseOptimizer::new(OptimizerConfig::adagrad(0.05), model.dense_vars()).expect("opt");
        let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(1));
        let mut k = 0;
        g.bench_function(
            BenchmarkId::new("train_step", format!("history_{history}")),
            |b| {
                b.iter(|| {
                    k = (k + 1) % batches.len();
                    rec_nn::train_step(&mut model, &mut opt, &batches[k], &mut ctx).expect("step")
                })
            },
        );
        g.bench_function(
            BenchmarkId::new("infer", format!("history_{history}")),
            |b| {
                b.iter(|| {
                    k = (k + 1) % batches.len();
                    rec_nn::model::predict(&mut model, &batches[k]).expect("predict")
                })
            },
        );
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
