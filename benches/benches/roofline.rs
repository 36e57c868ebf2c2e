//! Roofline-style estimate: this machine's limits next to what DeepFM's hot kernels reach.
//!
//! Prints, for the thread count in `RAYON_NUM_THREADS` (candle's matmul threads; run it once
//! with 1 and once with 2):
//! - peak f32 matmul GFLOP/s (candle, square matrices of 512, 1024 and 2048);
//! - memory bandwidth: a streaming copy and a triad `a = b + s * c` over arrays of 128 MiB
//!   (plain Rust, split over the same number of threads);
//! - DeepFM's dense part in a training step (4 fields of width 16, MLP 64 -> 128 -> 64 -> 1,
//!   batch 1024; synthetic IDs): FLOPs counted per step (matmuls: forward x 3 for
//!   forward + backward; the FM term), divided by the time of a whole training step and by the
//!   time of the MLP's forward + backward alone;
//! - the embedding gathers: bytes of the rows a batch touches divided by the time of the gather
//!   (`SparseRows::gather`, 1024 random rows of a 10^6-row table) and of the row-wise Adam
//!   update (read and write of each touched row with its optimizer state).
//!
//! Run: `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 cargo bench -p rec-benches --bench roofline`
//! (then with `RAYON_NUM_THREADS=2`). Not a criterion benchmark: it prints one table and a
//! JSON line: the best of several repetitions for the matmul peak and the bandwidth, the mean
//! over 300-2,000 calls for DeepFM's step, the MLP and the gathers.

use std::hint::black_box;
use std::sync::Arc;
use std::time::Instant;

use candle_core::{D, DType, Device, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};
use rec_nn::embedding::rows::{RowGrads, SparseRows, dedup};
use rec_nn::embedding::{EmbeddingTable, FullTable, TableOptions};
use rec_nn::init::{Init, named_rng};
use rec_nn::model::{Ctx, train_step};
use rec_nn::models::{DeepFm, DeepFmConfig};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};

const BATCH: usize = 1024;
const DIM: usize = 16;
const FIELDS: usize = 4;
const HIDDEN: [usize; 2] = [128, 64];

/// Best (smallest) seconds per call of `f` over `reps` timed calls, after one warm-up call.
fn best_of(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min)
}

/// Mean seconds per call of `f` over `n` calls (after `n / 10` warm-up calls).
fn mean_of(n: usize, mut f: impl FnMut()) -> f64 {
    for _ in 0..n / 10 {
        f();
    }
    let t = Instant::now();
    for _ in 0..n {
        f();
    }
    t.elapsed().as_secs_f64() / n as f64
}

fn matmul_gflops(n: usize) -> f64 {
    let d = Device::Cpu;
    let a = Tensor::randn(0f32, 1.0, (n, n), &d).unwrap();
    let b = Tensor::randn(0f32, 1.0, (n, n), &d).unwrap();
    let reps = if n >= 2048 { 5 } else { 20 };
    let s = best_of(reps, || {
        black_box(a.matmul(&b).unwrap());
    });
    2.0 * (n as f64).powi(3) / s / 1e9
}

/// Runs `f(chunk_index, range)` over `n` elements split into `threads` contiguous chunks.
fn split(n: usize, threads: usize, f: impl Fn(std::ops::Range<usize>) + Sync) {
    let per = n.div_ceil(threads);
    std::thread::scope(|s| {
        for t in 0..threads {
            let f = &f;
            let r = t * per..((t + 1) * per).min(n);
            s.spawn(move || f(r));
        }
    });
}

/// (copy GB/s, triad GB/s) over arrays of `n` floats, bytes counted as read + written.
fn bandwidth(n: usize, threads: usize) -> (f64, f64) {
    let mut a = vec![0f32; n];
    let b: Vec<f32> = (0..n).map(|i| i as f32).collect();
    let c: Vec<f32> = (0..n).map(|i| (n - i) as f32).collect();
    let ptr = SendPtr(a.as_mut_ptr());
    let copy = best_of(5, || {
        split(n, threads, |r| {
            // SAFETY: the chunks given by `split` are disjoint ranges inside `a`, which
            // outlives the scope, so each thread writes a region no other thread touches.
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(r.start), r.len()) };
            dst.copy_from_slice(&b[r]);
        })
    });
    let triad = best_of(5, || {
        split(n, threads, |r| {
            // SAFETY: as above: disjoint chunks of `a`.
            let dst = unsafe { std::slice::from_raw_parts_mut(ptr.get().add(r.start), r.len()) };
            for ((x, &y), &z) in dst.iter_mut().zip(&b[r.clone()]).zip(&c[r]) {
                *x = y + 3.0 * z;
            }
        })
    });
    black_box(&a);
    let bytes = (n * 4) as f64;
    (2.0 * bytes / copy / 1e9, 3.0 * bytes / triad / 1e9)
}

#[derive(Clone, Copy)]
struct SendPtr(*mut f32);
// SAFETY: only used to hand disjoint sub-slices of one buffer to scoped threads (see `bandwidth`).
unsafe impl Send for SendPtr {}
// SAFETY: as above; the pointer itself is only copied, never written through concurrently
// at the same place.
unsafe impl Sync for SendPtr {}
impl SendPtr {
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// FLOPs of DeepFM's dense part for one training step: the MLP's matmuls (2 x batch x in x
/// out forward, x 3 with the two backward matmuls) and the FM pairwise term (sum over fields,
/// squares, sum of squares, difference, sum over the width: about 4 F d + 2 d per sample
/// forward, x 2 for backward).
fn dense_flops() -> (f64, f64) {
    let mut widths = vec![FIELDS * DIM];
    widths.extend(HIDDEN);
    widths.push(1);
    let macs: usize = widths.windows(2).map(|w| w[0] * w[1]).sum();
    let mlp = 3.0 * 2.0 * (BATCH * macs) as f64;
    let fm = 3.0 * (BATCH * (4 * FIELDS * DIM + 2 * DIM)) as f64;
    (mlp, fm)
}

fn schema(rows: usize) -> Arc<Schema> {
    Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", rows),
            FieldSpec::categorical("item_id", rows),
            FieldSpec::categorical("category", 1000),
            FieldSpec::categorical("hour", 24),
        ],
        tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    })
}

fn batch(schema: &Arc<Schema>, rng: &mut ChaCha8Rng) -> Batch {
    let mut col =
        |n: usize| Column::Ids((0..BATCH).map(|_| rng.random_range(0..n as u32)).collect());
    let rows = schema.fields[0].vocab;
    let columns = vec![col(rows), col(rows), col(1000), col(24)];
    let labels = (0..BATCH)
        .map(|_| f32::from(rng.random::<bool>()))
        .collect();
    Batch {
        schema: schema.clone(),
        columns,
        labels: vec![labels],
        weights: None,
        slices: Vec::new(),
    }
}

fn opts() -> TableOptions {
    TableOptions::new(
        Init::Normal {
            mean: 0.0,
            std: 0.05,
        },
        OptimizerConfig::adam(0.001),
    )
}

/// Seconds per DeepFM training step (10^5 users and items, random IDs from 64 batches drawn
/// once and cycled).
fn deepfm_step() -> f64 {
    let schema = schema(100_000);
    let d = Device::Cpu;
    let mut factory = |f: &FieldSpec, dim: usize| -> candle_core::Result<Box<dyn EmbeddingTable>> {
        let mut r = named_rng(1, &f.name);
        Ok(Box::new(FullTable::new(f.vocab, dim, &opts(), &mut r, &d)?))
    };
    let cfg = DeepFmConfig {
        dim: DIM,
        ..Default::default()
    };
    let mut model = DeepFm::new(&schema, &cfg, &mut factory, &d, 1).unwrap();
    let mut opt = DenseOptimizer::new(
        OptimizerConfig::adam(0.001),
        rec_nn::Model::dense_vars(&model),
    )
    .unwrap();
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let batches: Vec<Batch> = (0..64).map(|_| batch(&schema, &mut rng)).collect();
    let mut i = 0;
    mean_of(300, || {
        i += 1;
        black_box(train_step(&mut model, &mut opt, &batches[i % batches.len()], &mut ctx).unwrap());
    })
}

/// Seconds of the MLP's forward and backward alone (same shapes, ReLU, sum as the loss).
fn mlp_alone() -> f64 {
    let d = Device::Cpu;
    let mut widths = vec![FIELDS * DIM];
    widths.extend(HIDDEN);
    widths.push(1);
    let x = Tensor::randn(0f32, 1.0, (BATCH, FIELDS * DIM), &d).unwrap();
    let ws: Vec<(Var, Var)> = widths
        .windows(2)
        .map(|w| {
            (
                Var::randn(0f32, 0.1, (w[0], w[1]), &d).unwrap(),
                Var::zeros(w[1], DType::F32, &d).unwrap(),
            )
        })
        .collect();
    mean_of(300, || {
        let mut h = x.clone();
        for (k, (w, b)) in ws.iter().enumerate() {
            h = h
                .matmul(w.as_tensor())
                .unwrap()
                .broadcast_add(b.as_tensor())
                .unwrap();
            if k + 1 < ws.len() {
                h = h.relu().unwrap();
            }
        }
        let loss = h.sum(D::Minus1).unwrap().sum_all().unwrap();
        black_box(loss.backward().unwrap());
    })
}

/// (gather GB/s, update GB/s): 1024 random rows of a 10^6-row table of width 16 with Adam state.
fn gathers() -> (f64, f64) {
    let rows = 1_000_000;
    let mut rng = named_rng(3, "gather");
    let mut t = SparseRows::new(
        rows,
        DIM,
        opts().init,
        &mut rng,
        OptimizerConfig::adam(0.001),
        &Device::Cpu,
    )
    .unwrap();
    let mut r = ChaCha8Rng::seed_from_u64(9);
    let ids: Vec<Vec<u32>> = (0..256)
        .map(|_| (0..BATCH).map(|_| r.random_range(0..rows as u32)).collect())
        .collect();
    let mut i = 0;
    let gather = mean_of(2000, || {
        i += 1;
        black_box(t.gather(&ids[i % ids.len()]).unwrap());
    });
    let gather_bytes = (BATCH * DIM * 4) as f64;
    let grads: Vec<RowGrads> = ids
        .iter()
        .map(|b| {
            let dd = dedup(b);
            let g = vec![0.01f32; dd.unique.len() * DIM];
            RowGrads::merge(DIM, &dd.unique, &g, &dd.counts).unwrap()
        })
        .collect();
    let touched = grads.iter().map(RowGrads::len).sum::<usize>() as f64 / grads.len() as f64;
    let mut i = 0;
    let update = mean_of(2000, || {
        i += 1;
        t.update(&grads[i % grads.len()]).unwrap();
    });
    // Each touched row: weights and the two moments (and a step count) read and written.
    let update_bytes = touched * ((3 * DIM + 1) * 4 * 2) as f64;
    (gather_bytes / gather / 1e9, update_bytes / update / 1e9)
}

fn main() {
    // Criterion-style arguments (`--bench`, a filter) are ignored.
    rec_nn::sys::tune_malloc();
    let threads = candle_core::utils::get_num_threads();
    let mm: Vec<(usize, f64)> = [512, 1024, 2048]
        .iter()
        .map(|&n| (n, matmul_gflops(n)))
        .collect();
    let peak = mm.iter().map(|x| x.1).fold(0.0, f64::max);
    let (copy, triad) = bandwidth(32 << 20, threads);
    let bw = copy.max(triad);
    let (mlp_flops, fm_flops) = dense_flops();
    let step = deepfm_step();
    let mlp = mlp_alone();
    let (gather, update) = gathers();
    let dense_gf = (mlp_flops + fm_flops) / step / 1e9;
    let mlp_gf = mlp_flops / mlp / 1e9;
    println!(
        "roofline, {threads} thread(s) (RAYON_NUM_THREADS; candle element-wise pool: CANDLE_NUM_THREADS)"
    );
    for (n, g) in &mm {
        println!("  matmul {n}x{n}x{n} f32: {g:.1} GFLOP/s");
    }
    println!("  stream copy: {copy:.1} GB/s, triad: {triad:.1} GB/s (128 MiB arrays)");
    println!(
        "  DeepFM step (batch {BATCH}, {FIELDS} fields x {DIM}, MLP {:?}): {:.2} ms; dense FLOPs {:.1} M (MLP {:.1} M, FM {:.2} M) -> {dense_gf:.2} GFLOP/s = {:.1}% of peak",
        HIDDEN,
        step * 1e3,
        (mlp_flops + fm_flops) / 1e6,
        mlp_flops / 1e6,
        fm_flops / 1e6,
        100.0 * dense_gf / peak
    );
    println!(
        "  MLP forward + backward alone: {:.3} ms -> {mlp_gf:.2} GFLOP/s = {:.1}% of peak; the MLP's matmuls would take {:.3} ms at peak",
        mlp * 1e3,
        100.0 * mlp_gf / peak,
        mlp_flops / peak / 1e6
    );
    println!(
        "  gather of 1024 random rows (d = {DIM}) from 10^6: {gather:.2} GB/s = {:.1}% of stream bandwidth; row-wise Adam update: {update:.2} GB/s = {:.1}%",
        100.0 * gather / bw,
        100.0 * update / bw
    );
    println!(
        "{{\"threads\":{threads},\"matmul_gflops\":[{}],\"peak_gflops\":{peak:.2},\"copy_gbs\":{copy:.2},\"triad_gbs\":{triad:.2},\"deepfm_step_ms\":{:.4},\"dense_mflop_per_step\":{:.2},\"dense_gflops\":{dense_gf:.3},\"mlp_alone_ms\":{:.4},\"mlp_gflops\":{mlp_gf:.3},\"gather_gbs\":{gather:.3},\"update_gbs\":{update:.3}}}",
        mm.iter()
            .map(|x| format!("[{},{:.2}]", x.0, x.1))
            .collect::<Vec<_>>()
            .join(","),
        step * 1e3,
        (mlp_flops + fm_flops) / 1e6,
        mlp * 1e3
    );
}
