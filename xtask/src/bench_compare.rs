//! `cargo xtask bench --compare --model deepfm|saml|dupn|all`: each model trained here and by
//! its PyTorch reference (benches/reference/*_torch.py) on the same exported batches, in the
//! same order, with the same thread count; one line per model and variant with both
//! throughputs and the ratio, then DUPN's serving latency side by side.
//!
//! Variants: DeepFM on ml-100k P-CTR (see `bench::compare`); SAML with 3 and 8 scenarios
//! (behaviour sequence of 10 items, so both attentions run); DUPN with histories of 50 and 100
//! behaviours (default widths). Serving: DUPN at the paper's widths ([`DupnConfig::paper`]),
//! one user with 100 behaviours encoded, then 10,000 candidates scored, p50/p99 over
//! [`SERVE_REPS`] requests.
//!
//! Both sides build the same architecture with the same hyperparameters; the Rust side writes
//! its parameter count into the export's `meta.json` and each script checks its own count
//! against it before timing anything.

use std::fmt::Write as _;
use std::path::Path;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::ValueEnum;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_benches::workloads::{self, DUPN_ITEM_FIELDS};
use rec_data::{Batch, Column, FieldKind, TaskKind};
use rec_nn::embedding::{DefaultTableFactory, TableOptions, TablesConfig};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_nn::{Ctx, Model};
use scenario_saml::{Saml, SamlConfig};
use serde_json::{Value, json};
use user_dupn::serving::Candidates;
use user_dupn::{Dupn, DupnConfig};

use crate::bench::{BATCH, BenchArgs, WARMUP, f32_bytes, root, u32_bytes, write_npy};

/// Which models `--compare` runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum CompareModel {
    /// DeepFM, SAML and DUPN.
    All,
    /// DeepFM on ml-100k P-CTR.
    Deepfm,
    /// SAML with 3 and 8 scenarios.
    Saml,
    /// DUPN with histories 50 and 100, and DUPN serving.
    Dupn,
    /// DUPN serving only.
    DupnServing,
}

/// Batches per variant: the timed steps cycle over them.
const BATCHES: usize = 8;
/// Behaviours in a SAML sample's sequence.
const SAML_HISTORY: usize = 10;
/// Requests timed in the serving comparison (after [`WARMUP`] untimed ones).
pub const SERVE_REPS: usize = 200;
/// Candidates scored per serving request.
const CANDIDATES: usize = 10_000;
/// Behaviours of the serving request.
const SERVE_HISTORY: usize = 100;

/// One model and setting of the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Variant {
    /// SAML with this many scenarios.
    Saml(usize),
    /// DUPN with this history length.
    Dupn(usize),
}

impl Variant {
    fn name(self) -> String {
        match self {
            Variant::Saml(m) => format!("saml-{m}scen"),
            Variant::Dupn(h) => format!("dupn-h{h}"),
        }
    }

    fn data(self, rows: usize) -> Batch {
        match self {
            Variant::Saml(m) => workloads::saml_batch(m, SAML_HISTORY, rows, 11),
            Variant::Dupn(h) => workloads::dupn_batch(h, rows, 12),
        }
    }

    fn script(self) -> &'static str {
        match self {
            Variant::Saml(_) => "benches/reference/saml_torch.py",
            Variant::Dupn(_) => "benches/reference/dupn_torch.py",
        }
    }
}

/// The model of `variant` with the hyperparameters the comparison uses (also written to
/// `meta.json` by [`model_meta`]), and its dense optimizer's configuration.
pub fn build(variant: Variant, data: &Batch) -> Result<(Box<dyn Model>, OptimizerConfig)> {
    let d = Device::Cpu;
    Ok(match variant {
        Variant::Saml(_) => {
            let mut f = DefaultTableFactory::new(saml_tables(), 1, &d);
            let mut factory = |spec: &rec_data::FieldSpec, dim: usize| f.build(spec, dim);
            let m = Saml::new(&data.schema, &saml_config(), &mut factory, &d, 1)?;
            (Box::new(m) as Box<dyn Model>, OptimizerConfig::adam(1e-3))
        }
        Variant::Dupn(h) => {
            let m = dupn_model(data, &dupn_config(h))?;
            (
                Box::new(m) as Box<dyn Model>,
                OptimizerConfig::adagrad(0.05),
            )
        }
    })
}

fn saml_config() -> SamlConfig {
    SamlConfig {
        dim: 16,
        hidden: vec![128, 64],
        ..SamlConfig::default()
    }
}

fn saml_tables() -> TablesConfig {
    TablesConfig {
        options: TableOptions {
            optimizer: OptimizerConfig::adam(1e-3),
            ..Default::default()
        },
        ..TablesConfig::default()
    }
}

fn dupn_config(history: usize) -> DupnConfig {
    DupnConfig {
        max_history: history,
        ..DupnConfig::default()
    }
}

fn dupn_model(data: &Batch, cfg: &DupnConfig) -> Result<Dupn> {
    let tables = workloads::dupn_tables();
    let mut f = DefaultTableFactory::new(tables, 1, &Device::Cpu);
    let mut factory = |spec: &rec_data::FieldSpec, dim: usize| f.build(spec, dim);
    Ok(Dupn::new(&data.schema, cfg, &mut factory, &Device::Cpu, 1)?)
}

/// The hyperparameters the reference script builds its model from.
fn model_meta(variant: Variant) -> Value {
    match variant {
        Variant::Saml(m) => {
            let c = saml_config();
            json!({
                "model": "saml", "scenarios": m, "dim": c.dim, "hidden": c.hidden,
                "attention_hidden": c.attention.hidden, "dropout": c.dropout,
                "aux_loss_weight": c.aux_loss_weight, "tied_init": c.tied_init,
                "aux_in_output": c.aux_in_output, "scenario_l2": c.scenario_l2,
                "dense_optimizer": {"kind": "adam", "lr": 1e-3},
                "sparse_optimizer": {"kind": "adam", "lr": 1e-3},
            })
        }
        Variant::Dupn(h) => dupn_meta(&dupn_config(h)),
    }
}

fn dupn_meta(c: &DupnConfig) -> Value {
    json!({
        "model": "dupn", "item_dim": c.item_dim, "property_dim": c.property_dim,
        "profile_dim": c.profile_dim, "query_dim": c.query_dim, "hidden": c.hidden,
        "attention_hidden": c.attention_hidden, "head_hidden": c.head.hidden,
        "head_dropout": c.head.dropout, "max_history": c.max_history,
        "profile": c.profile, "query": c.query,
        "dense_optimizer": {"kind": "adagrad", "lr": 0.05},
        "sparse_optimizer": {"kind": "adagrad", "lr": 0.05},
    })
}

/// Writes every column and label of `data` under `dir` as `.npy` files plus `meta.json`
/// (fields with kind, vocabulary and shared table, tasks, rows, `params`, and `model`).
///
/// Kinds: `ids` (`[rows]` u32), `bag` (multi-hot: `.values`/`.offsets`), `seq` (a sequence
/// field whose rows all have the same length `T`: `[rows, T]` u32). Labels: `labels.{task}.npy`
/// (`[rows]` f32; class index for a multi-class task).
pub fn export(data: &Batch, dir: &Path, model: Value, params: usize) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // meta.json goes last: a run stopped half-way leaves no description beside a mix of new
    // and old arrays, so the reference script fails instead of reading the mix.
    match std::fs::remove_file(dir.join("meta.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}/meta.json", dir.display()));
        }
        _ => {}
    }
    let schema = &data.schema;
    let mut fields = Vec::new();
    for (f, col) in schema.fields.iter().zip(&data.columns) {
        let n = &f.name;
        let mut entry = json!({"name": n, "vocab": f.vocab, "shares": f.shares_vocab_with,
                               "group": f.group});
        let kind = match (col, f.kind) {
            (Column::Ids(v), _) => {
                write_npy(
                    &dir.join(format!("{n}.npy")),
                    "<u4",
                    &[v.len()],
                    &u32_bytes(v),
                )?;
                "ids"
            }
            (Column::Ragged { values, offsets }, FieldKind::Sequence) => {
                let rows = offsets.len() - 1;
                let t = values.len().checked_div(rows).unwrap_or(0);
                if offsets
                    .iter()
                    .enumerate()
                    .any(|(i, &o)| o as usize != i * t)
                {
                    bail!("field `{n}`: the export needs sequences of one length");
                }
                write_npy(
                    &dir.join(format!("{n}.npy")),
                    "<u4",
                    &[rows, t],
                    &u32_bytes(values),
                )?;
                entry["len"] = json!(t);
                "seq"
            }
            (Column::Ragged { values, offsets }, _) => {
                let vp = dir.join(format!("{n}.values.npy"));
                write_npy(&vp, "<u4", &[values.len()], &u32_bytes(values))?;
                let op = dir.join(format!("{n}.offsets.npy"));
                write_npy(&op, "<u4", &[offsets.len()], &u32_bytes(offsets))?;
                "bag"
            }
            (Column::Dense { .. }, _) => bail!("field `{n}`: dense fields are not exported"),
        };
        entry["kind"] = json!(kind);
        fields.push(entry);
    }
    let mut tasks = Vec::new();
    for (t, labels) in schema.tasks.iter().zip(&data.labels) {
        let file = dir.join(format!("labels.{}.npy", t.name));
        write_npy(&file, "<f4", &[labels.len()], &f32_bytes(labels))?;
        tasks.push(match t.kind {
            TaskKind::Binary => json!({"name": t.name, "kind": "binary"}),
            TaskKind::Multiclass { classes } => {
                json!({"name": t.name, "kind": "multiclass", "classes": classes})
            }
            TaskKind::Regression => json!({"name": t.name, "kind": "regression"}),
        });
    }
    let meta = json!({
        "fields": fields, "tasks": tasks, "rows": data.len(), "params": params,
        "scenario_field": schema.scenario_field, "num_scenarios": schema.num_scenarios,
        "model": model,
    });
    rec_trainer::checkpoint::write_atomic(
        &dir.join("meta.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )
}

/// Throughputs of one side of one variant.
#[derive(Debug, Clone, Copy)]
struct Figures {
    train: f64,
    infer: f64,
}

/// Refuses to start when `python` cannot import what the PyTorch references need.
fn check_python(python: &str) -> Result<()> {
    let out = std::process::Command::new(python)
        .args(["-c", "import torch, numpy"])
        .output()
        .with_context(|| format!("cannot run {python} (the PyTorch references need it)"))?;
    if !out.status.success() {
        anyhow::bail!(
            "{python} cannot import torch and numpy, which the PyTorch references need \
             (`pip install torch numpy`, or name another interpreter with --python):\n{}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}

/// Runs the comparison `args.model` asks for.
pub fn run(args: &BenchArgs) -> Result<()> {
    let threads = args.threads.to_string();
    // SAFETY: set before any thread of this process is started (candle and rayon read them
    // when their pools start, which has not happened yet in this command).
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", &threads);
        std::env::set_var("RAYON_NUM_THREADS", &threads);
    }
    // Before any timing: a missing package would otherwise fail after the rec-rs side has
    // run, and its figures would be lost.
    check_python(&args.python)?;
    let model = args.model;
    if matches!(model, CompareModel::All | CompareModel::Deepfm) {
        crate::bench::compare(args)?;
    }
    let mut variants = Vec::new();
    if matches!(model, CompareModel::All | CompareModel::Saml) {
        variants.extend([Variant::Saml(3), Variant::Saml(8)]);
    }
    if matches!(model, CompareModel::All | CompareModel::Dupn) {
        variants.extend([Variant::Dupn(50), Variant::Dupn(100)]);
    }
    let release = !cfg!(debug_assertions);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "batch {BATCH}, {threads} thread(s), {} timed steps, xtask built {}",
        args.steps,
        if release {
            "--release"
        } else {
            "in the dev profile (not representative)"
        }
    );
    let _ = writeln!(
        table,
        "{:<12} {:>12} {:>12} {:>6}   {:>12} {:>12} {:>6}   (samples/s)",
        "model", "train ours", "train torch", "ratio", "infer ours", "infer torch", "ratio"
    );
    let mut records = Vec::new();
    for v in variants {
        let (ours, torch, fw) = compare_variant(v, args)?;
        let _ = writeln!(
            table,
            "{:<12} {:>12.0} {:>12.0} {:>6.2}   {:>12.0} {:>12.0} {:>6.2}",
            v.name(),
            ours.train,
            torch.train,
            ours.train / torch.train,
            ours.infer,
            torch.infer,
            ours.infer / torch.infer
        );
        records.push(json!({
            "model": v.name(), "threads": args.threads, "batch": BATCH, "steps": args.steps,
            "release": release, "framework": fw,
            "ours": {"train_samples_per_sec": ours.train, "infer_samples_per_sec": ours.infer},
            "torch": {"train_samples_per_sec": torch.train, "infer_samples_per_sec": torch.infer},
        }));
    }
    if matches!(
        model,
        CompareModel::All | CompareModel::Dupn | CompareModel::DupnServing
    ) {
        let (ours, torch) = compare_serving(args)?;
        let _ = writeln!(
            table,
            "DUPN serving (paper widths, {SERVE_HISTORY} behaviours, {CANDIDATES} candidates, \
             {SERVE_REPS} requests): ours p50 {:.2} ms p99 {:.2} ms, torch p50 {:.2} ms p99 \
             {:.2} ms, p50 ratio (torch / ours) {:.2}",
            ours.0 * 1e3,
            ours.1 * 1e3,
            torch.0 * 1e3,
            torch.1 * 1e3,
            torch.0 / ours.0
        );
        records.push(json!({
            "model": "dupn-serving", "threads": args.threads, "reps": SERVE_REPS,
            "candidates": CANDIDATES, "history": SERVE_HISTORY, "release": release,
            "ours": {"p50_ms": ours.0 * 1e3, "p99_ms": ours.1 * 1e3},
            "torch": {"p50_ms": torch.0 * 1e3, "p99_ms": torch.1 * 1e3},
        }));
    }
    if !records.is_empty() {
        print!("{table}");
        for r in records {
            println!("{r}");
        }
    }
    Ok(())
}

/// Exports `variant`'s data, times this side, runs the reference on the export.
fn compare_variant(v: Variant, args: &BenchArgs) -> Result<(Figures, Figures, String)> {
    let data = v.data(BATCHES * BATCH);
    let batches: Vec<Batch> = (0..BATCHES)
        .map(|i| data.range(i * BATCH, (i + 1) * BATCH))
        .collect();
    let (mut model, dense) = build(v, &data)?;
    let params = model.num_params();
    let dir = root().join("target/bench-compare").join(v.name());
    export(&data, &dir, model_meta(v), params)?;
    eprintln!("compare {}: {params} parameters, timing rec-rs", v.name());
    let ours = time_ours(model.as_mut(), dense, &batches, args.steps)?;
    eprintln!("compare {}: timing PyTorch", v.name());
    let out = reference(args, v.script(), &dir, &[])?;
    let torch = Figures {
        train: out["train_samples_per_sec"].as_f64().unwrap_or(f64::NAN),
        infer: out["infer_samples_per_sec"].as_f64().unwrap_or(f64::NAN),
    };
    let fw = out["framework"].as_str().unwrap_or("pytorch").to_string();
    Ok((ours, torch, fw))
}

fn time_ours(
    model: &mut dyn Model,
    dense: OptimizerConfig,
    batches: &[Batch],
    steps: usize,
) -> Result<Figures> {
    let nb = batches.len();
    let mut opt = DenseOptimizer::new(dense, model.dense_vars())?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    for i in 0..WARMUP {
        rec_nn::model::train_step(model, &mut opt, &batches[i % nb], &mut ctx)?;
    }
    let t = Instant::now();
    for i in 0..steps {
        rec_nn::model::train_step(model, &mut opt, &batches[(WARMUP + i) % nb], &mut ctx)?;
    }
    let train = (steps * BATCH) as f64 / t.elapsed().as_secs_f64();
    for b in batches.iter().cycle().take(WARMUP) {
        rec_nn::model::predict(model, b)?;
    }
    let t = Instant::now();
    for i in 0..steps {
        rec_nn::model::predict(model, &batches[i % nb])?;
    }
    let infer = (steps * BATCH) as f64 / t.elapsed().as_secs_f64();
    Ok(Figures { train, infer })
}

/// Runs a reference script on `dir` with the thread count, steps, warm-up and batch of
/// `args`; its last output line is a JSON object.
fn reference(args: &BenchArgs, script: &str, dir: &Path, extra: &[&str]) -> Result<Value> {
    let threads = args.threads.to_string();
    let script = root().join(script);
    let out = Command::new(&args.python)
        .arg(&script)
        .arg(dir)
        .args(["--threads", &threads, "--steps", &args.steps.to_string()])
        .args([
            "--warmup",
            &WARMUP.to_string(),
            "--batch",
            &BATCH.to_string(),
        ])
        .args(extra)
        .env("OMP_NUM_THREADS", &threads)
        // PyTorch runs with glibc's default allocator settings whichever way xtask was
        // started (`cargo xtask` sets GLIBC_TUNABLES from .cargo/config.toml, the binary
        // alone does not), as in the published runs (docs/benchmarks.md).
        .env_remove("GLIBC_TUNABLES")
        .output()
        .with_context(|| format!("cannot run {} {}", args.python, script.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch reference {} failed (is PyTorch installed? `pip install torch`):\n{}",
            script.display(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    serde_json::from_str(line)
        .with_context(|| format!("unreadable output of {}: {line}", script.display()))
}

/// The serving request and candidates: the first row of a DUPN workload with
/// [`SERVE_HISTORY`] behaviours, and [`CANDIDATES`] random items (one tag each).
pub fn serving_data() -> (Batch, Vec<(String, Column)>) {
    let request = workloads::dupn_batch(SERVE_HISTORY, 1, 21);
    let cands = workloads::dupn_batch(1, CANDIDATES, 22);
    let columns = DUPN_ITEM_FIELDS
        .iter()
        .map(|&f| {
            let col = match cands.column(f).expect("an item field") {
                // One tag per candidate (the first), as in the serving benchmark.
                Column::Ragged { values, offsets } => Column::Ragged {
                    values: offsets[..CANDIDATES]
                        .iter()
                        .map(|&o| values[o as usize])
                        .collect(),
                    offsets: (0..=CANDIDATES as u32).collect(),
                },
                c => c.clone(),
            };
            (f.to_string(), col)
        })
        .collect();
    (request, columns)
}

/// p50 and p99 (seconds) of DUPN serving, this side and PyTorch's.
fn compare_serving(args: &BenchArgs) -> Result<((f64, f64), (f64, f64))> {
    let (request, cand_cols) = serving_data();
    let cfg = DupnConfig {
        max_history: SERVE_HISTORY,
        ..DupnConfig::paper()
    };
    let mut model = dupn_model(&request, &cfg)?;
    let params = model.num_params();
    let dir = root().join("target/bench-compare/dupn-serving");
    export(&request, &dir, dupn_meta(&cfg), params)?;
    for (f, col) in &cand_cols {
        let p = dir.join(format!("candidates.{f}.npy"));
        match col {
            Column::Ids(v) => write_npy(&p, "<u4", &[v.len()], &u32_bytes(v))?,
            Column::Ragged { values, .. } => {
                write_npy(&p, "<u4", &[values.len()], &u32_bytes(values))?
            }
            Column::Dense { .. } => bail!("candidate field `{f}` is dense"),
        }
    }
    eprintln!("compare dupn-serving: {params} parameters, timing rec-rs");
    let candidates = Candidates::new(cand_cols)?;
    let history: Vec<(String, Vec<u32>)> = request
        .schema
        .fields
        .iter()
        .filter(|f| f.group.as_deref() == Some("hist"))
        .map(|f| {
            let v = request.column(&f.name).and_then(|c| c.ragged_row(0));
            (f.name.clone(), v.map(<[u32]>::to_vec).unwrap_or_default())
        })
        .collect();
    let query = request
        .column("query")
        .and_then(|c| c.ragged_row(0).map(<[u32]>::to_vec))
        .unwrap_or_default();
    let profile: Vec<(String, u32)> = cfg
        .profile
        .iter()
        .filter_map(|f| request.ids(f).map(|v| (f.clone(), v[0])))
        .collect();
    let hist: Vec<(&str, &[u32])> = history
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_slice()))
        .collect();
    let prof: Vec<(&str, u32)> = profile.iter().map(|(n, v)| (n.as_str(), *v)).collect();
    let mut times = Vec::with_capacity(SERVE_REPS);
    for rep in 0..WARMUP + SERVE_REPS {
        let t = Instant::now();
        let user = model.encode_user(&hist, &query, &prof)?;
        let scores = model.score(&user, &candidates)?;
        std::hint::black_box(scores);
        if rep >= WARMUP {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    let ours = percentiles(times);
    eprintln!("compare dupn-serving: timing PyTorch");
    let out = reference(
        args,
        "benches/reference/dupn_torch.py",
        &dir,
        &["--serve", "--reps", &SERVE_REPS.to_string()],
    )?;
    let torch = (
        out["p50_ms"].as_f64().unwrap_or(f64::NAN) / 1e3,
        out["p99_ms"].as_f64().unwrap_or(f64::NAN) / 1e3,
    );
    Ok((ours, torch))
}

/// p50 and p99 of `times` (nearest rank).
fn percentiles(mut times: Vec<f64>) -> (f64, f64) {
    times.sort_by(f64::total_cmp);
    let q = |p: f64| times[((times.len() - 1) as f64 * p).round() as usize];
    (q(0.5), q(0.99))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_comparison_refuses_to_start_without_its_python_packages() {
        let e = check_python("no-such-python-interpreter").unwrap_err();
        assert!(
            format!("{e:#}").contains("cannot run no-such-python-interpreter"),
            "{e:#}"
        );
        // An interpreter that fails the import (Unix `false` fails whatever it is given).
        if cfg!(unix) {
            let e = check_python("false").unwrap_err().to_string();
            assert!(e.contains("pip install torch numpy"), "{e}");
        }
    }

    /// Reads a little-endian `.npy` file written by `write_npy`: (descr, shape, payload).
    fn read_npy(path: &Path) -> (String, Vec<usize>, Vec<u8>) {
        let bytes = std::fs::read(path).unwrap();
        assert_eq!(&bytes[..8], b"\x93NUMPY\x01\x00");
        let len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + len) % 64, 0, "header padded to 64 bytes");
        let header = std::str::from_utf8(&bytes[10..10 + len]).unwrap();
        let descr = header.split('\'').nth(3).unwrap().to_string();
        let shape = header
            .split("'shape': (")
            .nth(1)
            .unwrap()
            .split(')')
            .next()
            .unwrap()
            .split(',')
            .filter(|s| !s.trim().is_empty())
            .map(|s| s.trim().parse().unwrap())
            .collect();
        (descr, shape, bytes[10 + len..].to_vec())
    }

    fn u32s(b: &[u8]) -> Vec<u32> {
        b.chunks(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    #[test]
    fn exports_match_the_batches_and_meta() -> Result<()> {
        let dir = tempfile::tempdir()?;
        for v in [Variant::Saml(8), Variant::Dupn(5)] {
            let data = match v {
                Variant::Saml(m) => workloads::saml_batch(m, 4, 40, 1),
                Variant::Dupn(h) => workloads::dupn_batch(h, 40, 1),
            };
            let d = dir.path().join(v.name());
            export(&data, &d, model_meta(v), 123)?;
            let meta: Value = serde_json::from_str(&std::fs::read_to_string(d.join("meta.json"))?)?;
            assert_eq!(meta["rows"], 40);
            assert_eq!(meta["params"], 123);
            let fields = meta["fields"].as_array().unwrap();
            assert_eq!(fields.len(), data.schema.fields.len());
            for (f, col) in fields.iter().zip(&data.columns) {
                let n = f["name"].as_str().unwrap();
                match (f["kind"].as_str().unwrap(), col) {
                    ("ids", Column::Ids(v)) => {
                        let (descr, shape, payload) = read_npy(&d.join(format!("{n}.npy")));
                        assert_eq!((descr.as_str(), shape), ("<u4", vec![40]));
                        assert_eq!(&u32s(&payload), v);
                    }
                    ("seq", Column::Ragged { values, .. }) => {
                        let (_, shape, payload) = read_npy(&d.join(format!("{n}.npy")));
                        let t = f["len"].as_u64().unwrap() as usize;
                        assert_eq!(shape, vec![40, t]);
                        assert_eq!(&u32s(&payload), values);
                        assert!(f["shares"].is_null() || f["shares"].is_string());
                    }
                    ("bag", Column::Ragged { values, offsets }) => {
                        let (_, s, p) = read_npy(&d.join(format!("{n}.values.npy")));
                        assert_eq!((s, u32s(&p)), (vec![values.len()], values.clone()));
                        let (_, s, p) = read_npy(&d.join(format!("{n}.offsets.npy")));
                        assert_eq!((s, u32s(&p)), (vec![41], offsets.clone()));
                    }
                    (k, c) => panic!("field `{n}` exported as {k} from {c:?}"),
                }
            }
            for (t, labels) in meta["tasks"].as_array().unwrap().iter().zip(&data.labels) {
                let name = t["name"].as_str().unwrap();
                let (descr, shape, p) = read_npy(&d.join(format!("labels.{name}.npy")));
                assert_eq!((descr.as_str(), shape), ("<f4", vec![40]));
                let back: Vec<f32> = p
                    .chunks(4)
                    .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                    .collect();
                assert_eq!(&back, labels);
            }
        }
        Ok(())
    }

    #[test]
    fn models_build_on_their_workloads_and_count_parameters() -> Result<()> {
        // The counts the reference scripts must reproduce (they assert it): the tables are
        // the largest part, so check them against the vocabularies by hand.
        let data = workloads::saml_batch(3, 4, 8, 1);
        let (model, _) = build(Variant::Saml(3), &data)?;
        let tables: usize = model.tables().iter().map(|(_, t)| t.num_params()).sum();
        let global = 5000 + 2000 + 20 + 21 + 3;
        let scenario = 3 * (5000 + 2000 + 20 + 21);
        assert_eq!(tables, 16 * (global + scenario));
        assert!(model.num_params() > tables);
        let data = workloads::dupn_batch(3, 8, 1);
        let (model, _) = build(Variant::Dupn(3), &data)?;
        let tables: usize = model.tables().iter().map(|(_, t)| t.num_params()).sum();
        let items = 16 * (20_000 + 2_000 + 2_000 + 200 + 500);
        let props = 8 * (5 + 4 + 10 + 3 + 7);
        let profile = 16 * (50_000 + 3 + 7 + 3);
        assert_eq!(tables, items + props + profile + 16 * 2_000);
        Ok(())
    }

    #[test]
    fn the_model_choice_parses_and_defaults_to_all() {
        use clap::Parser;
        #[derive(Parser)]
        struct Cli {
            #[command(flatten)]
            bench: BenchArgs,
        }
        let c = Cli::try_parse_from(["x", "--compare", "--model", "dupn", "--steps", "3"]).unwrap();
        assert_eq!((c.bench.model, c.bench.steps), (CompareModel::Dupn, 3));
        let c = Cli::try_parse_from(["x", "--compare"]).unwrap();
        assert_eq!(c.bench.model, CompareModel::All);
        assert!(Cli::try_parse_from(["x", "--compare", "--model", "xyz"]).is_err());
    }

    #[test]
    fn serving_candidates_have_one_tag_each() {
        let (request, cols) = serving_data();
        assert_eq!(request.len(), 1);
        assert_eq!(cols.len(), DUPN_ITEM_FIELDS.len());
        for (_, c) in &cols {
            assert_eq!(c.len(), CANDIDATES);
            if let Column::Ragged { values, .. } = c {
                assert_eq!(values.len(), CANDIDATES);
            }
        }
    }
}
