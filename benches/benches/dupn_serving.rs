//! DUPN serving by network disassembly (the paper's deployment section).
//!
//! - `dupn_serving/encode_and_score_10000`: one request, a history of 100 behaviours and the
//!   paper's widths (LSTM 128, [`DupnConfig::paper`]), encoded once with
//!   [`Dupn::encode_user`], then 10,000 candidate items scored with [`Dupn::score`].
//! - `dupn_serving/full_model_1000`: the same request scored the naive way, the whole model
//!   (embedding, gated LSTM, attention, head) run on one row per candidate, for 1,000
//!   candidates (10,000 would take minutes per iteration on a small machine; the cost is
//!   linear in the number of rows, so the per-candidate ratio is what is reported).
//!
//! After criterion's own report, each benchmark prints p50 and p99 of its iterations (criterion
//! reports means and medians only), and the run ends with the per-candidate cost ratio.
//! The p50/p99 figures count every timed iteration, warm-up included.
//!
//! Measured once (2026-11, a shared 2-vCPU machine under load, one thread): encode + score
//! 10,000 p50 21.2 ms, p99 37.6 ms (criterion mean 21.7 ms); full model on 1,000 candidates
//! p50 2.41 s; per candidate 2.1 us against 2.4 ms, about 1,100x.
//! Run on one core: `CANDLE_NUM_THREADS=1 RAYON_NUM_THREADS=1 cargo bench -p rec-benches --bench
//! dupn_serving`.

use std::hint::black_box;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use candle_core::Device;
use criterion::{Criterion, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::synth::{DupnOptions, SynthConfig, SynthLog};
use rec_data::{Batch, Column, FieldKind, Schema};
use rec_nn::embedding::DefaultTableFactory;
use rec_nn::model::{Ctx, Model};
use user_dupn::serving::Candidates;
use user_dupn::{Dupn, DupnConfig};

const HISTORY: usize = 100;
const CANDIDATES: usize = 10_000;
const FULL_CANDIDATES: usize = 1_000;
const ITEM_FIELDS: [&str; 5] = ["item_id", "brand", "shop", "category", "tags"];

static TIMES: Mutex<Vec<(String, f64, f64, usize)>> = Mutex::new(Vec::new());

struct Setup {
    model: Dupn,
    /// One request row with a history of `HISTORY` behaviours.
    request: Batch,
    history: Vec<(String, Vec<u32>)>,
    query: Vec<u32>,
    profile: Vec<(String, u32)>,
    candidates: Candidates,
    candidate_columns: Vec<(String, Column)>,
}

fn vocab(schema: &Schema, name: &str) -> usize {
    schema.fields[schema.field_index(name).unwrap()].vocab
}

fn setup() -> Setup {
    let log = SynthLog::generate(&SynthConfig::tiny()).unwrap();
    let split = log.dupn_split(&DupnOptions {
        max_history: HISTORY,
        ..DupnOptions::default()
    });
    let mut schema = (*split.schema).clone();
    schema.tasks.retain(|t| t.name == "ctr" || t.name == "ppp");
    let schema = std::sync::Arc::new(schema);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    // One request: the first CTR test row, its history replaced by 100 random behaviours.
    let base = split.test.ctr.range(0, 1);
    let mut columns = base.columns.clone();
    let mut history = Vec::new();
    for (i, f) in schema.fields.iter().enumerate() {
        if f.group.as_deref() == Some("hist") {
            let v = vocab(&schema, &f.name).max(2);
            let ids: Vec<u32> = (0..HISTORY)
                .map(|_| rng.random_range(1..v as u32))
                .collect();
            columns[i] = Column::Ragged {
                values: ids.clone(),
                offsets: vec![0, HISTORY as u32],
            };
            history.push((f.name.clone(), ids));
        }
    }
    let request = Batch {
        schema: schema.clone(),
        columns,
        labels: vec![vec![f32::NAN]; schema.tasks.len()],
        weights: None,
        slices: vec![],
    };
    let query = request
        .column("query")
        .and_then(|c| c.ragged_row(0).map(<[u32]>::to_vec))
        .unwrap_or_default();
    let profile: Vec<(String, u32)> = ["user_id", "age", "gender", "country"]
        .iter()
        .filter_map(|f| request.ids(f).map(|v| (f.to_string(), v[0])))
        .collect();
    // Candidates: random items (IDs and attributes drawn independently; costs do not care).
    let cand_cols: Vec<(String, Column)> = ITEM_FIELDS
        .iter()
        .map(|&f| {
            let v = vocab(&schema, f).max(2) as u32;
            let spec = &schema.fields[schema.field_index(f).unwrap()];
            let col = match spec.kind {
                FieldKind::MultiHot => Column::Ragged {
                    values: (0..CANDIDATES).map(|_| rng.random_range(1..v)).collect(),
                    offsets: (0..=CANDIDATES as u32).collect(),
                },
                _ => Column::Ids((0..CANDIDATES).map(|_| rng.random_range(1..v)).collect()),
            };
            (f.to_string(), col)
        })
        .collect();
    let candidates = Candidates::new(cand_cols.clone()).unwrap();
    let cfg = DupnConfig::paper();
    let tables = rec_benches::workloads::dupn_tables();
    let mut f = DefaultTableFactory::new(tables, 1, &Device::Cpu);
    let mut factory = |field: &rec_data::FieldSpec, dim: usize| f.build(field, dim);
    let model = Dupn::new(&schema, &cfg, &mut factory, &Device::Cpu, 1).unwrap();
    Setup {
        model,
        request,
        history,
        query,
        profile,
        candidates,
        candidate_columns: cand_cols,
    }
}

/// The request repeated once per candidate, with the candidates' item fields.
fn full_batch(s: &Setup, k: usize) -> Batch {
    let mut b = s.request.gather(&vec![0; k]);
    let rows: Vec<usize> = (0..k).collect();
    for (f, col) in &s.candidate_columns {
        let i = b.schema.field_index(f).unwrap();
        b.columns[i] = col.gather(&rows);
    }
    b
}

fn percentiles(name: &str, mut times: Vec<f64>, per: usize) {
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    let (p50, p99) = (q(0.5), q(0.99));
    println!(
        "{name}: p50 {:.2} ms, p99 {:.2} ms over {} iterations",
        p50 * 1e3,
        p99 * 1e3,
        times.len()
    );
    TIMES
        .lock()
        .unwrap()
        .push((name.to_string(), p50, p99, per));
}

fn bench(c: &mut Criterion) {
    let mut s = setup();
    let mut g = c.benchmark_group("dupn_serving");
    g.sample_size(20).measurement_time(Duration::from_secs(10));
    let mut times = Vec::new();
    g.bench_function("encode_and_score_10000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let hist: Vec<(&str, &[u32])> = s
                    .history
                    .iter()
                    .map(|(n, v)| (n.as_str(), v.as_slice()))
                    .collect();
                let prof: Vec<(&str, u32)> =
                    s.profile.iter().map(|(n, v)| (n.as_str(), *v)).collect();
                let user = s.model.encode_user(&hist, &s.query, &prof).unwrap();
                let scores = s.model.score(&user, &s.candidates).unwrap();
                black_box(scores);
                let d = t.elapsed();
                times.push(d.as_secs_f64());
                total += d;
            }
            total
        })
    });
    percentiles(
        "encode_and_score_10000",
        std::mem::take(&mut times),
        CANDIDATES,
    );
    let full = full_batch(&s, FULL_CANDIDATES);
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    g.bench_function("full_model_1000", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let t = Instant::now();
                let out = s.model.forward(&full, &mut Ctx::eval()).unwrap();
                black_box(out);
                let d = t.elapsed();
                times.push(d.as_secs_f64());
                total += d;
            }
            total
        })
    });
    percentiles("full_model_1000", times, FULL_CANDIDATES);
    g.finish();
    let t = TIMES.lock().unwrap();
    if let [(_, fast, _, nf), (_, slow, _, ns)] = t.as_slice() {
        let ratio = (slow / *ns as f64) / (fast / *nf as f64);
        println!(
            "per-candidate cost (p50): disassembled {:.2} us, full model {:.2} us: {ratio:.0}x",
            fast / *nf as f64 * 1e6,
            slow / *ns as f64 * 1e6
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
