//! rec-metrics throughput: exact AUC of 10 million scores (target: under 2 s on one core), and
//! the other metrics at the same scale.
//!
//! Run with `cargo bench -p rec-benches --bench metrics`. The data comes from the generator
//! below, which `benches/reference/auc_sklearn.py` reproduces bit for bit in NumPy to time
//! scikit-learn's `roc_auc_score` on the same scores and labels (see docs/benchmarks.md).

use std::hint::black_box;
use std::time::Duration;

use criterion::{Criterion, SamplingMode, Throughput, criterion_group, criterion_main};
use rec_metrics::{AucAccumulator, Queries, auc, gauc, logloss};

/// Samples in the headline benchmark.
const N: usize = 10_000_000;
/// Seed of the generator (the Python script uses the same).
const SEED: u64 = 42;
const GOLDEN: u64 = 0x9E37_79B9_7F4A_7C15;

/// SplitMix64 output number `k` (k = 1, 2, ...) of the stream started at `seed`
/// (Steele, Lea and Flood, "Fast splittable pseudorandom number generators", 2014).
fn splitmix64(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_mul(GOLDEN));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Sample i uses outputs 2i+1 and 2i+2: score = top 24 bits of the first / 2^24 (uniform on a
/// grid of 2^24 values in [0, 1), exact in f32, so 10^7 draws hold many ties); label = 1 when
/// the top 24 bits of the second are below those of the first (P(label = 1 | score) = score,
/// AUC about 5/6).
fn binary_data(n: usize, seed: u64) -> (Vec<f32>, Vec<f32>) {
    (0..n as u64)
        .map(|i| {
            let a = splitmix64(seed, 2 * i + 1) >> 40;
            let b = splitmix64(seed, 2 * i + 2) >> 40;
            (a as f32 / (1u32 << 24) as f32, (b < a) as u8 as f32)
        })
        .unzip()
}

fn bench_auc(c: &mut Criterion) {
    let (scores, labels) = binary_data(N, SEED);
    eprintln!(
        "auc of the {N} generated samples (seed {SEED}): {:.17}",
        auc(&scores, &labels).unwrap()
    );
    let mut g = c.benchmark_group("metrics");
    g.sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8))
        .throughput(Throughput::Elements(N as u64));

    g.bench_function("auc/10M", |b| {
        b.iter(|| auc(black_box(&scores), black_box(&labels)).unwrap())
    });

    // Baseline for the sort choice: a comparison sort of the same number of f32 keys alone.
    g.bench_function("sort_unstable_f32_total_cmp/10M", |b| {
        b.iter_batched_ref(
            || scores.clone(),
            |v| v.sort_unstable_by(f32::total_cmp),
            criterion::BatchSize::LargeInput,
        )
    });

    // The same AUC from 10 chunks merged, as an evaluation loop over batches would do.
    g.bench_function("auc_accumulator_10_chunks/10M", |b| {
        b.iter(|| {
            let mut acc = AucAccumulator::new();
            for (s, y) in scores.chunks(N / 10).zip(labels.chunks(N / 10)) {
                acc.push(s, y).unwrap();
            }
            acc.finish().unwrap()
        })
    });

    let users: Vec<u32> = (0..N as u64)
        .map(|i| (splitmix64(SEED ^ 1, i + 1) % 100_000) as u32)
        .collect();
    g.bench_function("gauc_100k_users/10M", |b| {
        b.iter(|| gauc(black_box(&scores), black_box(&labels), black_box(&users)).unwrap())
    });

    g.bench_function("logloss/10M", |b| {
        b.iter(|| logloss(black_box(&scores), black_box(&labels)).unwrap())
    });

    // P-SEQ shape: 99k users, 1 target + 100 sampled negatives each.
    let candidates = 101;
    let relevant: Vec<bool> = (0..(N / candidates) * candidates)
        .map(|i| i % candidates == 0)
        .collect();
    let seq_scores = &scores[..relevant.len()];
    g.throughput(Throughput::Elements(relevant.len() as u64));
    g.bench_function("ranking_hr_ndcg_mrr@10/99k_queries_x101", |b| {
        b.iter(|| {
            Queries::fixed(black_box(seq_scores), black_box(&relevant), candidates)
                .unwrap()
                .metrics(10)
                .unwrap()
        })
    });
    g.finish();
}

criterion_group!(benches, bench_auc);
criterion_main!(benches);
