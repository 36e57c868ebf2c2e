//! `cargo xtask bench`: the criterion benchmarks of `benches/` (package `rec-benches`), run in
//! the release profile with the thread count pinned, so that a figure comes with its settings;
//! and `--compare`, the side-by-side run against the PyTorch reference.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldKind};

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Benchmark targets to run (`metrics`, `embedding`, `cel`, ...); all when none is given.
    pub benches: Vec<String>,
    /// Only benchmarks whose name contains this (criterion's filter).
    #[arg(long)]
    pub filter: Option<String>,
    /// Shorter measurement (criterion `--quick`): rougher figures in a fraction of the time.
    #[arg(long)]
    pub quick: bool,
    /// Threads for candle's element-wise kernels and the matmuls (`CANDLE_NUM_THREADS` and
    /// `RAYON_NUM_THREADS`); the figures in docs/benchmarks.md say which they used.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
    /// Instead of criterion: train the models of `--model` here and with their PyTorch
    /// references (benches/reference/*_torch.py) on the same batches, in the same order, with
    /// the same thread count, and print both throughputs and the ratio (DeepFM: the shipped
    /// ml-100k P-CTR configuration; see xtask/src/bench_compare.rs for the others).
    /// Run it with `--release`-built xtask for representative figures (`cargo run --release
    /// -p xtask -- bench --compare`).
    #[arg(long)]
    pub compare: bool,
    /// Models of `--compare`: `deepfm`, `saml` (3 and 8 scenarios), `dupn` (histories 50 and
    /// 100, and serving), `dupn-serving`, or `all`.
    #[arg(long, value_enum, default_value = "all")]
    pub model: crate::bench_compare::CompareModel,
    /// Timed steps per side in `--compare` (after 10 warm-up steps).
    #[arg(long, default_value_t = 200)]
    pub steps: usize,
    /// Python interpreter with PyTorch for `--compare`.
    #[arg(long, default_value = "python3")]
    pub python: String,
    /// P-SCALE options (`--scale`, see xtask/src/bench_scale.rs).
    #[command(flatten)]
    pub scale: crate::bench_scale::ScaleArgs,
}

/// Whether the invocation is P-SCALE's: `--scale`, `--scale-point`, or `--scale-replot` alone
/// (which used to fall through to every criterion benchmark).
pub fn wants_scale(args: &BenchArgs) -> bool {
    args.scale.scale || args.scale.scale_replot || args.scale.scale_point.is_some()
}

/// Runs `cargo bench -p rec-benches` with the chosen targets, filter and thread count.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    if args.compare {
        return crate::bench_compare::run(&args);
    }
    if wants_scale(&args) {
        return crate::bench_scale::run(&args.scale, args.threads);
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "rec-benches"]);
    for b in &args.benches {
        cmd.args(["--bench", b]);
    }
    cmd.arg("--");
    if args.quick {
        cmd.arg("--quick");
    }
    if let Some(f) = &args.filter {
        cmd.arg(f);
    }
    let threads = args.threads.to_string();
    cmd.env("CANDLE_NUM_THREADS", &threads)
        .env("RAYON_NUM_THREADS", &threads);
    eprintln!("bench: {threads} thread(s): {cmd:?}");
    let started = std::time::SystemTime::now();
    let status = cmd.status().context("cannot start cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    // Where criterion writes: CRITERION_HOME, else `criterion` in cargo's target directory.
    let criterion = std::env::var_os("CRITERION_HOME").map_or_else(
        || {
            ["CARGO_TARGET_DIR", "CARGO_BUILD_TARGET_DIR"]
                .iter()
                .find_map(std::env::var_os)
                .map_or_else(|| root().join("target"), PathBuf::from)
                .join("criterion")
        },
        PathBuf::from,
    );
    let report = target_report(&criterion, started);
    if !report.is_empty() {
        eprintln!("\n{report}");
    }
    Ok(())
}

/// A speed target checked by a criterion benchmark: `subject`'s time at most `max` times
/// `reference`'s, or, without a reference, at most `max` seconds (benchmark ids as criterion
/// names its directories, `group/function/parameter`).
struct Target {
    what: &'static str,
    subject: &'static str,
    reference: Option<&'static str>,
    max: f64,
}

/// The issues' speed targets that a benchmark of `benches/` measures.
const TARGETS: [Target; 5] = [
    Target {
        what: "SAML training step vs Shared's, 3 scenarios, no behaviour sequence",
        subject: "multi_scenario_step/saml/3scen_history_0",
        reference: Some("multi_scenario_step/shared/3scen_history_0"),
        max: 2.5,
    },
    Target {
        what: "SAML training step vs Shared's, 3 scenarios, 10 behaviours",
        subject: "multi_scenario_step/saml/3scen_history_10",
        reference: Some("multi_scenario_step/shared/3scen_history_10"),
        max: 2.5,
    },
    Target {
        what: "sparse table step (SGD), 10^7 rows vs 10^4",
        subject: "embedding_step/sparse_sgd/10000000",
        reference: Some("embedding_step/sparse_sgd/10000"),
        max: 1.5,
    },
    Target {
        what: "sparse table step (Adam), 10^7 rows vs 10^4",
        subject: "embedding_step/sparse_adam/10000000",
        reference: Some("embedding_step/sparse_adam/10000"),
        max: 1.5,
    },
    Target {
        what: "exact AUC of 10^7 scores",
        subject: "metrics/auc_10M",
        reference: None,
        max: 2.0,
    },
];

/// Criterion's estimate of one benchmark's time in nanoseconds (the figure it prints: the
/// slope of its linear sampling, else the mean), if that benchmark ran after `since`.
fn estimate(criterion: &Path, id: &str, since: std::time::SystemTime) -> Result<Option<f64>> {
    let path = criterion.join(id).join("new/estimates.json");
    let Ok(meta) = std::fs::metadata(&path) else {
        return Ok(None);
    };
    if meta.modified().is_ok_and(|m| m < since) {
        return Ok(None);
    }
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("cannot read {}", path.display()))?;
    let v: serde_json::Value = serde_json::from_str(&text)
        .with_context(|| format!("{}: not criterion's estimates", path.display()))?;
    let point = |k: &str| v.get(k)?.get("point_estimate")?.as_f64();
    match point("slope").or_else(|| point("mean")) {
        Some(ns) => Ok(Some(ns)),
        None => bail!("{}: no slope or mean estimate", path.display()),
    }
}

/// Milliseconds with three significant digits or more.
fn ms(ns: f64) -> String {
    let ms = ns / 1e6;
    if ms >= 100.0 {
        format!("{ms:.0} ms")
    } else if ms >= 1.0 {
        format!("{ms:.2} ms")
    } else {
        format!("{:.1} µs", ns / 1e3)
    }
}

/// The targets whose benchmarks all ran after `since`, one line each with the measured value
/// and whether it is met (or why it could not be checked); empty when none ran.
fn target_report(criterion: &Path, since: std::time::SystemTime) -> String {
    let mut out = String::new();
    for t in &TARGETS {
        let ids = [Some(t.subject), t.reference];
        let times: Result<Vec<Option<f64>>> = ids
            .iter()
            .flatten()
            .map(|id| estimate(criterion, id, since))
            .collect();
        let times = match times {
            Ok(v) => v,
            Err(e) => {
                out.push_str(&format!("target: {}: cannot check: {e:#}\n", t.what));
                continue;
            }
        };
        let Some(times) = times.into_iter().collect::<Option<Vec<f64>>>() else {
            continue;
        };
        let a = times[0];
        let (value, shown, bound) = match times.get(1) {
            Some(&b) => {
                let ratio = a / b;
                (
                    ratio,
                    format!("{} / {} = {ratio:.2}x", ms(a), ms(b)),
                    format!("{}x", t.max),
                )
            }
            None => (a / 1e9, ms(a), format!("{} s", t.max)),
        };
        let verdict = if value <= t.max { "met" } else { "NOT met" };
        out.push_str(&format!(
            "target: {}: {shown} (at most {bound}): {verdict}\n",
            t.what
        ));
    }
    out
}

pub(crate) const BATCH: usize = 1024;
pub(crate) const WARMUP: usize = 10;

pub(crate) fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Writes a one-dimensional (or `[n, dim]`) little-endian array in NumPy's `.npy` format.
pub(crate) fn write_npy(path: &Path, descr: &str, shape: &[usize], bytes: &[u8]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|d| d.to_string()).collect();
    let shape = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape}, }}");
    // Magic (6) + version (2) + length (2) + header + newline, padded to a multiple of 64.
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + bytes.len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(bytes);
    rec_trainer::checkpoint::write_atomic(path, &out)
}

pub(crate) fn u32_bytes(v: &[u32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

pub(crate) fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// What `benches/reference/deepfm_torch.py` builds, read from the DeepFM configuration the
/// comparison trains here: embedding width, MLP widths and dropout, the two learning rates.
/// Other model parameters, optimizers other than Adam with PyTorch's default betas and eps,
/// dense weight decay and table kinds other than full are refused, so the two sides cannot
/// silently train different models. Known differences, which change the numbers learned but
/// not the work per step: the sparse tables' L2 term (PyTorch's SparseAdam has none) and the
/// tables' initial values (the script draws them with std 0.01).
fn reference_deepfm(cfg: &rec_trainer::Config) -> Result<serde_json::Value> {
    use rec_nn::optim::OptimizerConfig as O;
    if cfg.model.name != "deepfm" {
        bail!(
            "the comparison's reference is DeepFM, the config has `{}`",
            cfg.model.name
        );
    }
    let p = &cfg.model.params;
    if let Some(k) = p.keys().find(|k| !["dim", "mlp"].contains(&k.as_str())) {
        bail!("[model.params] `{k}`: the PyTorch reference implements only dim and mlp");
    }
    let mlp = p.get("mlp").and_then(|m| m.as_table());
    if let Some(k) = mlp.and_then(|m| {
        m.keys()
            .find(|k| !["hidden", "dropout"].contains(&k.as_str()))
    }) {
        bail!("[model.params.mlp] `{k}`: the PyTorch reference implements only hidden and dropout");
    }
    let dim = p.get("dim").and_then(|v| v.as_integer()).unwrap_or(16);
    let hidden: Vec<i64> = match mlp.and_then(|m| m.get("hidden")) {
        Some(h) => h
            .as_array()
            .and_then(|a| a.iter().map(|v| v.as_integer()).collect())
            .context("mlp.hidden must be a list of integers")?,
        None => vec![128, 64],
    };
    let dropout = mlp
        .and_then(|m| m.get("dropout"))
        .map(|v| v.as_float().context("mlp.dropout must be a number"))
        .transpose()?
        .unwrap_or(0.0);
    let (
        O::Adam {
            lr: dense_lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        },
        O::Adam {
            lr: sparse_lr,
            beta1: sb1,
            beta2: sb2,
            eps: seps,
            ..
        },
    ) = (cfg.optimizer.dense, cfg.optimizer.sparse)
    else {
        bail!(
            "the PyTorch reference uses Adam for the dense parameters and SparseAdam for the tables"
        );
    };
    // PyTorch's defaults, which the script uses; the sparse L2 term is the documented exception.
    if (beta1, beta2, eps, weight_decay) != (0.9, 0.999, 1e-8, 0.0)
        || (sb1, sb2, seps) != (0.9, 0.999, 1e-8)
    {
        bail!(
            "the PyTorch reference uses Adam's default betas and eps and no dense weight decay; \
             the config sets others"
        );
    }
    let full =
        |t: &toml::Table| t.len() == 1 && t.get("kind").and_then(|k| k.as_str()) == Some("full");
    if !cfg.embeddings.fields.is_empty()
        || cfg.embeddings.default.as_ref().is_some_and(|t| !full(t))
    {
        bail!(
            "the PyTorch reference uses full embedding tables; the config's [embeddings] sets others"
        );
    }
    Ok(serde_json::json!({
        "dim": dim,
        "hidden": hidden,
        "dropout": dropout,
        "dense_lr": dense_lr,
        "sparse_lr": sparse_lr,
    }))
}

/// Exports the columns and the first task's labels of `data` for the Python reference, with
/// the model settings it is to build (`model`, see [`reference_deepfm`]).
fn export(data: &Batch, dir: &Path, model: serde_json::Value) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    // meta.json goes last: a run stopped half-way leaves no description beside a mix of new
    // and old arrays, so the reference script fails instead of reading the mix.
    match std::fs::remove_file(dir.join("meta.json")) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
            return Err(e).with_context(|| format!("cannot remove {}/meta.json", dir.display()));
        }
        _ => {}
    }
    let mut fields = Vec::new();
    for (f, col) in data.schema.fields.iter().zip(&data.columns) {
        let n = &f.name;
        let vocab = match &f.shares_vocab_with {
            Some(owner) => data.schema.field(owner).map_or(f.vocab, |o| o.vocab),
            None => f.vocab,
        };
        match (col, &f.kind) {
            (Column::Ids(v), _) => {
                write_npy(
                    &dir.join(format!("{n}.npy")),
                    "<u4",
                    &[v.len()],
                    &u32_bytes(v),
                )?;
                fields.push(serde_json::json!({"name": n, "kind": "ids", "vocab": vocab}));
            }
            (Column::Ragged { values, offsets }, FieldKind::MultiHot) => {
                let vp = dir.join(format!("{n}.values.npy"));
                write_npy(&vp, "<u4", &[values.len()], &u32_bytes(values))?;
                let op = dir.join(format!("{n}.offsets.npy"));
                write_npy(&op, "<u4", &[offsets.len()], &u32_bytes(offsets))?;
                fields.push(serde_json::json!({"name": n, "kind": "bag", "vocab": vocab}));
            }
            (Column::Dense { values, dim }, _) => {
                let p = dir.join(format!("{n}.npy"));
                write_npy(&p, "<f4", &[values.len() / dim, *dim], &f32_bytes(values))?;
                fields.push(serde_json::json!({"name": n, "kind": "dense", "dim": dim}));
            }
            _ => bail!("field `{n}`: sequence fields are not part of the DeepFM comparison"),
        }
    }
    write_npy(
        &dir.join("labels.npy"),
        "<f4",
        &[data.len()],
        &f32_bytes(&data.labels[0]),
    )?;
    let meta = serde_json::json!({"fields": fields, "rows": data.len(), "model": model});
    rec_trainer::checkpoint::write_atomic(
        &dir.join("meta.json"),
        serde_json::to_string_pretty(&meta)?.as_bytes(),
    )?;
    Ok(())
}

/// Trains DeepFM here and with PyTorch on the same batches and prints the throughputs.
pub(crate) fn compare(args: &BenchArgs) -> Result<()> {
    let threads = args.threads.to_string();
    // SAFETY: set before any thread of this process is started (candle and rayon read them
    // when their pools start, which has not happened yet in this command).
    unsafe {
        std::env::set_var("CANDLE_NUM_THREADS", &threads);
        std::env::set_var("RAYON_NUM_THREADS", &threads);
    }
    let release = !cfg!(debug_assertions);
    let cfg_path = root().join("configs/deepfm-ml100k-ctr.toml");
    let cfg = rec_trainer::Config::from_file(&cfg_path)?;
    let reference = reference_deepfm(&cfg).with_context(|| format!("{}", cfg_path.display()))?;
    crate::data::fetch_ml100k()?;
    let split = rec_trainer::data::load_split(&cfg.data)?;
    let nb = split.train.len() / BATCH;
    if nb == 0 {
        bail!("the training set has fewer than {BATCH} samples");
    }
    let batches: Vec<Batch> = (0..nb)
        .map(|i| split.train.range(i * BATCH, (i + 1) * BATCH))
        .collect();
    let dir = root().join("target/bench-compare");
    export(&split.train.range(0, nb * BATCH), &dir, reference)?;

    // This side.
    let device = candle_core::Device::Cpu;
    let mut model = rec_trainer::registry::build_model(&cfg, &split.schema, &split.train, &device)?;
    let mut opt = rec_nn::optim::DenseOptimizer::new(cfg.optimizer.dense, model.dense_vars())?;
    let mut ctx = rec_nn::Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    for i in 0..WARMUP {
        rec_nn::model::train_step(model.as_mut(), &mut opt, &batches[i % nb], &mut ctx)?;
    }
    let t = Instant::now();
    for i in 0..args.steps {
        let b = &batches[(WARMUP + i) % nb];
        rec_nn::model::train_step(model.as_mut(), &mut opt, b, &mut ctx)?;
    }
    let ours_train = (args.steps * BATCH) as f64 / t.elapsed().as_secs_f64();
    for b in batches.iter().take(WARMUP) {
        rec_nn::model::predict(model.as_mut(), b)?;
    }
    let t = Instant::now();
    for i in 0..args.steps {
        rec_nn::model::predict(model.as_mut(), &batches[i % nb])?;
    }
    let ours_infer = (args.steps * BATCH) as f64 / t.elapsed().as_secs_f64();

    // PyTorch.
    let script = root().join("benches/reference/deepfm_torch.py");
    let out = Command::new(&args.python)
        .arg(&script)
        .arg(&dir)
        .args(["--threads", &threads, "--steps", &args.steps.to_string()])
        .args([
            "--warmup",
            &WARMUP.to_string(),
            "--batch",
            &BATCH.to_string(),
        ])
        .env("OMP_NUM_THREADS", &threads)
        // PyTorch runs with glibc's default allocator settings whichever way xtask was
        // started (`cargo xtask` sets GLIBC_TUNABLES from .cargo/config.toml, the binary
        // alone does not), as in the published runs (docs/benchmarks.md).
        .env_remove("GLIBC_TUNABLES")
        .output()
        .with_context(|| format!("cannot run {} {}", args.python, script.display()))?;
    if !out.status.success() {
        bail!(
            "the PyTorch reference failed (is PyTorch installed? `pip install torch`):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let torch: serde_json::Value = serde_json::from_str(line)
        .with_context(|| format!("unreadable output of the PyTorch reference: {line}"))?;
    let tt = torch["train_samples_per_sec"].as_f64().unwrap_or(f64::NAN);
    let ti = torch["infer_samples_per_sec"].as_f64().unwrap_or(f64::NAN);
    let mut table = String::new();
    let _ = writeln!(
        table,
        "DeepFM, ml-100k P-CTR features, batch {BATCH}, {threads} thread(s), {} timed steps, \
         xtask built {}",
        args.steps,
        if release {
            "--release"
        } else {
            "in the dev profile (not representative)"
        }
    );
    let _ = writeln!(
        table,
        "{:<22} {:>14} {:>14}",
        "", "train samples/s", "infer samples/s"
    );
    let _ = writeln!(
        table,
        "{:<22} {:>14.0} {:>14.0}",
        "rec-rs (candle)", ours_train, ours_infer
    );
    let fw = torch["framework"].as_str().unwrap_or("pytorch");
    let _ = writeln!(table, "{fw:<22} {tt:>14.0} {ti:>14.0}");
    let _ = writeln!(
        table,
        "{:<22} {:>14.2} {:>14.2}",
        "ratio (ours / torch)",
        ours_train / tt,
        ours_infer / ti
    );
    print!("{table}");
    println!(
        "{}",
        serde_json::json!({
            "model": "deepfm", "threads": args.threads, "batch": BATCH, "steps": args.steps,
            "release": release,
            "ours": {"train_samples_per_sec": ours_train, "infer_samples_per_sec": ours_infer},
            "torch": torch,
        })
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::{Duration, SystemTime};

    fn write(dir: &Path, id: &str, json: &str) {
        let d = dir.join(id).join("new");
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("estimates.json"), json).unwrap();
    }

    fn point(ns: f64) -> String {
        format!("{{\"point_estimate\": {ns}, \"standard_error\": 1.0}}")
    }

    #[test]
    fn the_target_report_reads_criterions_estimates() {
        let dir = tempfile::tempdir().unwrap();
        let c = dir.path();
        let before = SystemTime::now() - Duration::from_secs(60);
        assert_eq!(target_report(c, before), "");
        // The slope when criterion has one, else the mean; 6.8 / 3.0 is met, 8 / 3 is not.
        let (t0, t1) = (&TARGETS[0], &TARGETS[1]);
        write(
            c,
            t0.subject,
            &format!("{{\"slope\": {}, \"mean\": {}}}", point(6.8e6), point(1.0)),
        );
        write(
            c,
            t0.reference.unwrap(),
            &format!("{{\"mean\": {}}}", point(3.0e6)),
        );
        write(c, t1.subject, &format!("{{\"mean\": {}}}", point(8.0e6)));
        write(
            c,
            t1.reference.unwrap(),
            &format!("{{\"mean\": {}}}", point(3.0e6)),
        );
        // An absolute target: the AUC of 10^7 scores in at most 2 s.
        let auc = TARGETS.iter().find(|t| t.reference.is_none()).unwrap();
        write(c, auc.subject, &format!("{{\"mean\": {}}}", point(2.5e9)));
        let report = target_report(c, before);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 3, "{report}");
        assert!(
            lines[2].contains("2500 ms (at most 2 s): NOT met"),
            "{report}"
        );
        assert!(lines[0].contains("6.80 ms / 3.00 ms = 2.27x") && lines[0].ends_with(": met"));
        assert!(lines[1].contains("= 2.67x") && lines[1].ends_with("NOT met"));
        // Results older than the run are not reported as this run's.
        let later = SystemTime::now() + Duration::from_secs(3600);
        assert_eq!(target_report(c, later), "");
        // A file that is not criterion's estimates is reported by name, the other targets
        // still checked.
        write(c, t0.reference.unwrap(), "{\"median\": 3}");
        let report = target_report(c, before);
        let lines: Vec<&str> = report.lines().collect();
        assert_eq!(lines.len(), 3, "{report}");
        assert!(
            lines[0].contains("cannot check") && lines[0].contains("estimates.json"),
            "{report}"
        );
        assert!(lines[1].ends_with("NOT met"), "{report}");
    }

    /// The PyTorch DeepFM is built from the configuration the comparison trains: the shipped
    /// one gives the script's published settings, and a setting the script cannot express is
    /// refused rather than silently compared against another model.
    #[test]
    fn the_reference_deepfm_follows_the_config_and_refuses_what_it_cannot_build() {
        let path = root().join("configs/deepfm-ml100k-ctr.toml");
        let cfg = rec_trainer::Config::from_file(&path).unwrap();
        let m = reference_deepfm(&cfg).unwrap();
        assert_eq!(
            m,
            serde_json::json!({"dim": 16, "hidden": [128, 64], "dropout": 0.3,
                "dense_lr": 0.001, "sparse_lr": 0.003})
        );
        let mut wide = cfg.clone();
        wide.model.params.insert("dim".into(), 32.into());
        assert_eq!(reference_deepfm(&wide).unwrap()["dim"], 32);
        let mut extra = cfg.clone();
        extra
            .model
            .params
            .insert("first_order".into(), false.into());
        let e = reference_deepfm(&extra).unwrap_err().to_string();
        assert!(e.contains("first_order"), "{e}");
        let mut sgd = cfg.clone();
        sgd.optimizer.dense = rec_nn::optim::OptimizerConfig::sgd(0.1);
        assert!(reference_deepfm(&sgd).is_err());
        let mut decay = cfg.clone();
        if let rec_nn::optim::OptimizerConfig::Adam { weight_decay, .. } =
            &mut decay.optimizer.dense
        {
            *weight_decay = 1e-4;
        }
        assert!(reference_deepfm(&decay).is_err());
        let mut hashed = cfg.clone();
        let mut t = toml::Table::new();
        t.insert("kind".into(), "hashed".into());
        hashed.embeddings.default = Some(t);
        assert!(reference_deepfm(&hashed).is_err());
    }
}
