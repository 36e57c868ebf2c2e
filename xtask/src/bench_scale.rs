//! `cargo xtask bench --scale` (P-SCALE): DeepFM trained with full and with CEL user and item
//! tables at growing vocabularies (10^4 ... 10^7 users and as many items), recording
//! throughput, the peak resident memory of the process and the bytes of the sparse tables.
//!
//! Every point runs in its own child process (this binary, re-invoked with the hidden
//! `--scale-point KIND:ROWS`), so its peak resident set (`VmHWM`, read by the child at its end,
//! or an earlier `VmRSS` reading where that is larger) belongs to that point alone. The child prints one JSON record on its last stdout line; the
//! parent collects the records and writes `scale.json`, `scale.csv` and four PNG plots.
//!
//! The data are generated directly: four categorical fields (user and item IDs drawn uniformly
//! from the vocabulary, the worst case for locality, plus a category of 1,000 and an hour of 24
//! values) and a label that depends on the user's and the item's residues, so the model has
//! something to learn. Every step draws fresh IDs (no batch is repeated), so at 10^7 rows a
//! step touches rows all over the table.

use std::fmt::Write as _;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use clap::Args;
use embedding_cel::{CelConfig, ClusteredEmbedding, Mode};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};
use rec_nn::embedding::{EmbeddingTable, FullTable, TableOptions};
use rec_nn::init::{Init, named_rng};
use rec_nn::model::{Ctx, train_step};
use rec_nn::models::{DeepFm, DeepFmConfig};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use serde_json::{Value, json};

/// Options of the P-SCALE run (flattened into `cargo xtask bench`).
#[derive(Args, Debug, Clone)]
pub struct ScaleArgs {
    /// P-SCALE: train DeepFM with full, CEL and CEL-Lite user/item tables at 10^min ... 10^max
    /// users and items, one child process per point, and write the records and plots (see
    /// docs/benchmarks.md). Build xtask with `--release` for representative figures.
    #[arg(long)]
    pub scale: bool,
    /// Smallest vocabulary exponent of `--scale`.
    #[arg(long, default_value_t = 4)]
    pub scale_min: u32,
    /// Largest vocabulary exponent of `--scale` (10^7: about 8 GB for the full tables at d = 32).
    #[arg(long, default_value_t = 7)]
    pub scale_max: u32,
    /// Timed training steps (batches of 1024) per point, after `--scale-warmup` steps.
    #[arg(long, default_value_t = 300)]
    pub scale_steps: usize,
    /// Untimed warm-up steps per point.
    #[arg(long, default_value_t = 20)]
    pub scale_warmup: usize,
    /// Width of the field vectors.
    #[arg(long, default_value_t = 32)]
    pub scale_dim: usize,
    /// Table kinds to run (comma-separated: full, cel, cel-lite).
    #[arg(long, default_value = "full,cel,cel-lite")]
    pub scale_kinds: String,
    /// Where `scale.json`, `scale.csv` and the plots go.
    #[arg(long, default_value = "docs/benchmarks")]
    pub scale_out: PathBuf,
    /// Redraw the plots and the CSV from the `scale.json` in `--scale-out`, without running.
    #[arg(long)]
    pub scale_replot: bool,
    /// Internal: run one point (`KIND:ROWS`) in this process and print its record.
    #[arg(long, hide = true)]
    pub scale_point: Option<String>,
}

/// Samples per training step.
pub const BATCH: usize = 1024;
const CATEGORIES: usize = 1000;
const HOURS: usize = 24;
const SEED: u64 = 17;

/// Table kinds of a point.
pub const KINDS: [&str; 3] = ["full", "cel", "cel-lite"];

/// Settings of one point.
#[derive(Debug, Clone, Copy)]
pub struct PointSpec<'a> {
    /// `full`, `cel` (offline CEL) or `cel-lite`.
    pub kind: &'a str,
    /// Users, and items.
    pub rows: usize,
    /// Vector width.
    pub dim: usize,
    /// Timed steps.
    pub steps: usize,
    /// Untimed steps first.
    pub warmup: usize,
}

/// Entry point from `cargo xtask bench`: a child's single point, or the whole sweep.
pub fn run(args: &ScaleArgs, threads: usize) -> Result<()> {
    if let Some(p) = &args.scale_point {
        let (kind, rows) = p
            .split_once(':')
            .with_context(|| format!("--scale-point `{p}`: expected KIND:ROWS"))?;
        let rows: usize = rows
            .parse()
            .with_context(|| format!("--scale-point `{p}`: bad row count"))?;
        let rec = run_point(&PointSpec {
            kind,
            rows,
            dim: args.scale_dim,
            steps: args.scale_steps,
            warmup: args.scale_warmup,
        })?;
        println!("{rec}");
        return Ok(());
    }
    let out = if args.scale_out.is_absolute() {
        args.scale_out.clone()
    } else {
        crate_root().join(&args.scale_out)
    };
    if args.scale_replot {
        let path = out.join("scale.json");
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let doc: Value =
            serde_json::from_str(&text).with_context(|| format!("{}: not JSON", path.display()))?;
        let records = doc["points"]
            .as_array()
            .with_context(|| format!("{}: no `points` array", path.display()))?;
        let threads = doc["threads"].as_u64().unwrap_or(threads as u64) as usize;
        return write_outputs(records, &out, threads);
    }
    let kinds = parse_kinds(&args.scale_kinds)?;
    if args.scale_min > args.scale_max || args.scale_max > 9 {
        bail!("--scale-min must not exceed --scale-max, and --scale-max is at most 9");
    }
    if args.scale_steps == 0 {
        bail!("--scale-steps must be at least 1");
    }
    let exe = std::env::current_exe().context("cannot find the xtask binary")?;
    let records = sweep(args, &kinds, |spec| {
        child_point(&exe, spec, threads)
            .with_context(|| format!("point {}:{}", spec.kind, spec.rows))
    })?;
    write_outputs(&records, &out, threads)?;
    print!("{}", table_text(&records));
    eprintln!("scale: records and plots in {}", out.display());
    Ok(())
}

fn crate_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// The kinds named in a comma-separated list, checked.
pub fn parse_kinds(s: &str) -> Result<Vec<String>> {
    let kinds: Vec<String> = s
        .split(',')
        .map(|k| k.trim().to_string())
        .filter(|k| !k.is_empty())
        .collect();
    if kinds.is_empty() {
        bail!("--scale-kinds: no table kind given");
    }
    for k in &kinds {
        if !KINDS.contains(&k.as_str()) {
            bail!("--scale-kinds: unknown kind `{k}` (expected one of {KINDS:?})");
        }
    }
    Ok(kinds)
}

/// Runs every (rows, kind) point of the sweep with `point`, smallest vocabulary first.
pub fn sweep(
    args: &ScaleArgs,
    kinds: &[String],
    mut point: impl FnMut(&PointSpec<'_>) -> Result<Value>,
) -> Result<Vec<Value>> {
    let mut records = Vec::new();
    for e in args.scale_min..=args.scale_max {
        let rows = 10usize.pow(e);
        for kind in kinds {
            let spec = PointSpec {
                kind,
                rows,
                dim: args.scale_dim,
                steps: args.scale_steps,
                warmup: args.scale_warmup,
            };
            let t = Instant::now();
            let rec = point(&spec)?;
            eprintln!(
                "scale: {kind:>8} {rows:>9} rows: {:>9.0} samples/s, peak RSS {:>7.1} MiB, \
                 tables {:>9.1} MiB ({:.1} s)",
                rec["samples_per_sec"].as_f64().unwrap_or(f64::NAN),
                rec["peak_rss_bytes"].as_f64().unwrap_or(f64::NAN) / MIB,
                rec["table_bytes"].as_f64().unwrap_or(f64::NAN) / MIB,
                t.elapsed().as_secs_f64()
            );
            records.push(rec);
        }
    }
    Ok(records)
}

const MIB: f64 = 1024.0 * 1024.0;

/// Runs one point in a child process and returns its record.
fn child_point(exe: &Path, spec: &PointSpec<'_>, threads: usize) -> Result<Value> {
    let t = threads.to_string();
    let out = Command::new(exe)
        .args(["bench", "--threads", &t, "--scale-point"])
        .arg(format!("{}:{}", spec.kind, spec.rows))
        .args(["--scale-dim", &spec.dim.to_string()])
        .args(["--scale-steps", &spec.steps.to_string()])
        .args(["--scale-warmup", &spec.warmup.to_string()])
        .env("CANDLE_NUM_THREADS", &t)
        .env("RAYON_NUM_THREADS", &t)
        .output()
        .with_context(|| format!("cannot start {}", exe.display()))?;
    if !out.status.success() {
        bail!(
            "the child failed ({}):\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().last().unwrap_or_default();
    let mut rec: Value = serde_json::from_str(line)
        .with_context(|| format!("unreadable record from the child: {line}"))?;
    rec["threads"] = json!(threads);
    Ok(rec)
}

/// Peak and current resident set of this process in bytes (`VmHWM`, `VmRSS` of
/// `/proc/self/status`; `None` where that file does not exist).
pub fn rss() -> Option<(u64, u64)> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let field = |name: &str| -> Option<u64> {
        let line = s.lines().find(|l| l.starts_with(name))?;
        let kb: u64 = line[name.len()..]
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb * 1024)
    };
    Some((field("VmHWM:")?, field("VmRSS:")?))
}

fn schema(rows: usize) -> Arc<Schema> {
    Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", rows),
            FieldSpec::categorical("item_id", rows),
            FieldSpec::categorical("category", CATEGORIES),
            FieldSpec::categorical("hour", HOURS),
        ],
        tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    })
}

/// User + system CPU seconds of this process so far (every thread), from `getrusage` (NaN
/// where it does not exist).
pub fn cpu_seconds() -> f64 {
    #[cfg(unix)]
    {
        // SAFETY: `getrusage` writes one `rusage` struct into the zeroed value we own and pass
        // by pointer; RUSAGE_SELF is a valid target. On failure the struct stays zeroed.
        let ru = unsafe {
            let mut ru: libc::rusage = std::mem::zeroed();
            libc::getrusage(libc::RUSAGE_SELF, &mut ru);
            ru
        };
        let tv = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 * 1e-6;
        tv(ru.ru_utime) + tv(ru.ru_stime)
    }
    #[cfg(not(unix))]
    {
        f64::NAN
    }
}

/// `n` batches of fresh uniform IDs; the click probability rises with the residues of user and
/// item modulo 10 (a planted signal the model can learn).
fn batches(schema: &Arc<Schema>, rows: usize, n: usize, rng: &mut ChaCha8Rng) -> Vec<Batch> {
    (0..n)
        .map(|_| {
            let u: Vec<u32> = (0..BATCH)
                .map(|_| rng.random_range(0..rows as u32))
                .collect();
            let i: Vec<u32> = (0..BATCH)
                .map(|_| rng.random_range(0..rows as u32))
                .collect();
            let c: Vec<u32> = (0..BATCH)
                .map(|_| rng.random_range(0..CATEGORIES as u32))
                .collect();
            let h: Vec<u32> = (0..BATCH)
                .map(|_| rng.random_range(0..HOURS as u32))
                .collect();
            let labels: Vec<f32> = u
                .iter()
                .zip(&i)
                .map(|(&u, &i)| {
                    let p = 0.1 + 0.8 * ((u % 10 + i % 10) as f64 / 18.0);
                    f32::from(rng.random::<f64>() < p)
                })
                .collect();
            Batch {
                schema: schema.clone(),
                columns: vec![
                    Column::Ids(u),
                    Column::Ids(i),
                    Column::Ids(c),
                    Column::Ids(h),
                ],
                labels: vec![labels],
                weights: None,
                slices: Vec::new(),
            }
        })
        .collect()
}

fn table_options() -> TableOptions {
    TableOptions::new(
        Init::Normal {
            mean: 0.0,
            std: 0.05,
        },
        OptimizerConfig::adam(0.001),
    )
}

fn cel_config(kind: &str) -> CelConfig {
    CelConfig {
        mode: if kind == "cel-lite" {
            Mode::Lite
        } else {
            Mode::Offline
        },
        ..Default::default()
    }
}

/// Bytes of one table: (parameters and ID map needed for serving, training-only state).
fn table_cost(t: &dyn EmbeddingTable) -> (usize, usize) {
    if let Some(c) = t.as_any().downcast_ref::<ClusteredEmbedding>() {
        let m = c.memory();
        return (m.serving_bytes, m.training_bytes);
    }
    if let Some(f) = t.as_any().downcast_ref::<FullTable>() {
        // Row-wise optimizer state: `slots` floats per value, plus Adam's per-row step count.
        let r = f.rows();
        let slots = r.config().slots();
        let counter = usize::from(slots == 2);
        return (t.bytes(), r.rows() * (r.dim() * slots + counter) * 4);
    }
    (t.bytes(), 0)
}

/// Trains DeepFM at one point in this process and returns its record.
pub fn run_point(spec: &PointSpec<'_>) -> Result<Value> {
    if !KINDS.contains(&spec.kind) {
        bail!("unknown table kind `{}`", spec.kind);
    }
    if spec.rows < 2 || spec.rows > u32::MAX as usize {
        bail!("{} rows: expected 2 ... 2^32 - 1", spec.rows);
    }
    let rss_start = rss();
    let schema = schema(spec.rows);
    let kind = spec.kind;
    let device = Device::Cpu;
    let mut factory = |f: &FieldSpec, dim: usize| -> candle_core::Result<Box<dyn EmbeddingTable>> {
        let mut rng = named_rng(SEED, &format!("scale/{}/{dim}", f.name));
        let opts = table_options();
        let big = f.name == "user_id" || f.name == "item_id";
        Ok(if big && kind != "full" {
            Box::new(ClusteredEmbedding::new(
                &f.name,
                f.vocab,
                dim,
                cel_config(kind),
                &opts,
                &mut rng,
                SEED,
                &device,
            )?)
        } else {
            Box::new(FullTable::new(f.vocab, dim, &opts, &mut rng, &device)?)
        })
    };
    let cfg = DeepFmConfig {
        dim: spec.dim,
        ..Default::default()
    };
    let t_build = Instant::now();
    let mut model = DeepFm::new(&schema, &cfg, &mut factory, &device, SEED)?;
    let build_s = t_build.elapsed().as_secs_f64();
    let mut opt = DenseOptimizer::new(
        OptimizerConfig::adam(0.001),
        rec_nn::Model::dense_vars(&model),
    )?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(SEED));
    let mut rng = ChaCha8Rng::seed_from_u64(SEED ^ spec.rows as u64);
    let warm = batches(&schema, spec.rows, spec.warmup, &mut rng);
    let timed = batches(&schema, spec.rows, spec.steps, &mut rng);
    let rss_built = rss();
    for b in &warm {
        train_step(&mut model, &mut opt, b, &mut ctx)?;
    }
    let mut losses = Vec::with_capacity(spec.steps);
    let cpu0 = cpu_seconds();
    let t = Instant::now();
    for b in &timed {
        losses.push(train_step(&mut model, &mut opt, b, &mut ctx)?);
    }
    let secs = t.elapsed().as_secs_f64();
    let cpu = cpu_seconds() - cpu0;
    // NaN without a CPU clock (`cpu_seconds`); `NaN.max(x)` would be `x`.
    let per_cpu_sec = if cpu.is_nan() {
        f64::NAN
    } else {
        (spec.steps * BATCH) as f64 / cpu.max(1e-9)
    };

    // The user and item tables (vectors and first-order weights).
    let (mut serving, mut training, mut user_emb, mut clusters) = (0usize, 0usize, 0usize, 0usize);
    for (name, t) in rec_nn::Model::tables(&model) {
        let user = name.contains("user_id");
        if !user && !name.contains("item_id") {
            continue;
        }
        let (s, tr) = table_cost(t);
        serving += s;
        training += tr;
        if user && t.dim() == spec.dim {
            user_emb = s;
            clusters = t
                .as_any()
                .downcast_ref::<ClusteredEmbedding>()
                .map_or(t.vocab(), |c| c.num_clusters());
        }
    }
    let tail = &losses[losses.len().saturating_sub(50)..];
    let end_loss = tail.iter().map(|&l| l as f64).sum::<f64>() / tail.len().max(1) as f64;
    // Linux updates the high-water mark lazily (on unmapping, not when reclaimed file pages
    // or per-CPU counter slack lower the count), so `VmHWM` read at the end can sit a little
    // below an earlier `VmRSS`: every reading is a lower bound of the true peak, keep the largest.
    // `null` where the platform gives no reading (no `/proc`), rather than a false 0.
    let peak = [rss_start, rss_built, rss()]
        .into_iter()
        .flatten()
        .map(|(hwm, now)| hwm.max(now))
        .max();
    Ok(json!({
        "kind": kind,
        "rows": spec.rows,
        "dim": spec.dim,
        "batch": BATCH,
        "steps": spec.steps,
        "warmup": spec.warmup,
        "release": !cfg!(debug_assertions),
        "samples_per_sec": (spec.steps * BATCH) as f64 / secs,
        "step_ms": secs * 1e3 / spec.steps as f64,
        // CPU time of the timed steps (all threads): on a shared machine the wall-clock rate
        // depends on the other jobs, this one much less.
        "cpu_s": cpu,
        "samples_per_cpu_sec": per_cpu_sec,
        "build_s": build_s,
        "peak_rss_bytes": peak,
        "rss_start_bytes": rss_start.map(|r| r.1),
        "rss_built_bytes": rss_built.map(|r| r.1),
        "table_serving_bytes": serving,
        "table_training_bytes": training,
        "table_bytes": serving + training,
        "user_table_bytes": user_emb,
        "user_full_equivalent_bytes": spec.rows * spec.dim * 4,
        "user_clusters": clusters,
        "end_loss": end_loss,
    }))
}

fn num(r: &Value, k: &str) -> f64 {
    r[k].as_f64().unwrap_or(f64::NAN)
}

/// The records as a Markdown table.
pub fn table_text(records: &[Value]) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "| tables | users = items | samples/s | samples per CPU-second | step (ms) | peak RSS (MiB) | table bytes, serving (MiB) | table bytes, training-only (MiB) | user vectors: full / this |"
    );
    let _ = writeln!(s, "|---|---|---|---|---|---|---|---|---|");
    for r in records {
        let ratio = num(r, "user_full_equivalent_bytes") / num(r, "user_table_bytes");
        let _ = writeln!(
            s,
            "| {} | {} | {:.0} | {:.0} | {:.2} | {:.0} | {:.2} | {:.2} | {:.1}x |",
            r["kind"].as_str().unwrap_or("?"),
            r["rows"],
            num(r, "samples_per_sec"),
            num(r, "samples_per_cpu_sec"),
            num(r, "step_ms"),
            num(r, "peak_rss_bytes") / MIB,
            num(r, "table_serving_bytes") / MIB,
            num(r, "table_training_bytes") / MIB,
            ratio
        );
    }
    s
}

/// Writes `scale.json`, `scale.csv` and the plots `scale_throughput.png`,
/// `scale_throughput_cpu.png`, `scale_memory.png`, `scale_table_bytes.png` into `dir`, each
/// file replaced atomically (the trainer's temporary-file, flush and rename).
pub fn write_outputs(records: &[Value], dir: &Path, threads: usize) -> Result<()> {
    use rec_trainer::checkpoint::write_atomic;
    use rec_trainer::plot::{LineChart, Series, line_chart};
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let doc = json!({"threads": threads, "batch": BATCH, "points": records});
    write_atomic(
        &dir.join("scale.json"),
        serde_json::to_string_pretty(&doc)?.as_bytes(),
    )?;
    let cols = [
        "kind",
        "rows",
        "dim",
        "steps",
        "samples_per_sec",
        "samples_per_cpu_sec",
        "step_ms",
        "peak_rss_bytes",
        "rss_built_bytes",
        "table_serving_bytes",
        "table_training_bytes",
        "table_bytes",
        "user_table_bytes",
        "user_full_equivalent_bytes",
        "user_clusters",
        "end_loss",
    ];
    let mut csv = cols.join(",");
    csv.push('\n');
    for r in records {
        let row: Vec<String> = cols
            .iter()
            .map(|c| match &r[*c] {
                Value::String(s) => s.clone(),
                // A reading this platform does not give.
                Value::Null => String::new(),
                v => v.to_string(),
            })
            .collect();
        csv.push_str(&row.join(","));
        csv.push('\n');
    }
    write_atomic(&dir.join("scale.csv"), csv.as_bytes())?;

    let mut kinds: Vec<&str> = records.iter().filter_map(|r| r["kind"].as_str()).collect();
    kinds.sort_unstable();
    kinds.dedup();
    let series = |f: &dyn Fn(&Value) -> f64| -> Vec<Series> {
        kinds
            .iter()
            .map(|k| {
                let pts = records
                    .iter()
                    .filter(|r| r["kind"].as_str() == Some(k))
                    .map(|r| (num(r, "rows"), f(r)))
                    .collect();
                Series::new(*k, pts)
            })
            .collect()
    };
    let x = "users = items (rows of each table, log scale)";
    // A measure this platform does not give (CPU time and resident memory come from Unix
    // interfaces) has no point to draw: its chart is left out with a note, not an error.
    let line_chart = |path: &Path, opts: &LineChart<'_>, series: &[Series]| -> Result<()> {
        if series
            .iter()
            .flat_map(|s| &s.points)
            .any(|(x, y)| x.is_finite() && y.is_finite())
        {
            return line_chart(path, opts, series);
        }
        eprintln!(
            "scale: {} not drawn: this platform gives no `{}` reading",
            path.display(),
            opts.y_label
        );
        Ok(())
    };
    line_chart(
        &dir.join("scale_throughput.png"),
        &LineChart {
            title: &format!("DeepFM training, batch {BATCH}, {threads} thread(s)"),
            x_label: x,
            y_label: "thousand samples per second (wall clock)",
            log_x: true,
        },
        &series(&|r| num(r, "samples_per_sec") / 1e3),
    )?;
    line_chart(
        &dir.join("scale_throughput_cpu.png"),
        &LineChart {
            title: &format!("DeepFM training, batch {BATCH}, {threads} thread(s), per CPU second"),
            x_label: x,
            y_label: "thousand samples per CPU-second",
            log_x: true,
        },
        &series(&|r| num(r, "samples_per_cpu_sec") / 1e3),
    )?;
    line_chart(
        &dir.join("scale_memory.png"),
        &LineChart {
            title: "Peak resident memory of the training process",
            x_label: x,
            y_label: "log10(peak RSS bytes)",
            log_x: true,
        },
        &series(&|r| num(r, "peak_rss_bytes").log10()),
    )?;
    line_chart(
        &dir.join("scale_table_bytes.png"),
        &LineChart {
            title: "User + item tables: parameters + optimizer state",
            x_label: x,
            y_label: "log10(table bytes)",
            log_x: true,
        },
        &series(&|r| num(r, "table_bytes").log10()),
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(dir: &Path) -> ScaleArgs {
        ScaleArgs {
            scale: true,
            scale_min: 3,
            scale_max: 4,
            scale_steps: 6,
            scale_warmup: 2,
            scale_dim: 8,
            scale_kinds: "full,cel,cel-lite".into(),
            scale_out: dir.to_path_buf(),
            scale_replot: false,
            scale_point: None,
        }
    }

    #[test]
    fn a_small_sweep_gives_sane_records_and_writes_its_files() {
        let dir = tempfile::tempdir().unwrap();
        let a = args(dir.path());
        let kinds = parse_kinds(&a.scale_kinds).unwrap();
        let recs = sweep(&a, &kinds, run_point).unwrap();
        assert_eq!(recs.len(), 6);
        for r in &recs {
            let rows = r["rows"].as_u64().unwrap() as usize;
            assert!(rows == 1000 || rows == 10_000);
            assert!(num(r, "samples_per_sec") > 0.0 && num(r, "samples_per_sec").is_finite());
            // CPU time comes from `getrusage`, which only Unix has (NaN elsewhere).
            if cfg!(unix) {
                assert!(num(r, "cpu_s") > 0.0 && num(r, "samples_per_cpu_sec").is_finite());
            } else {
                assert!(num(r, "cpu_s").is_nan() && num(r, "samples_per_cpu_sec").is_nan());
            }
            assert!(num(r, "end_loss").is_finite() && num(r, "end_loss") > 0.0);
            // Full tables: parameters (d + 1 per row, user and item) and Adam's two moments
            // plus a step counter per row.
            if r["kind"] == "full" {
                assert_eq!(r["table_serving_bytes"], json!(2 * rows * (8 + 1) * 4));
                assert_eq!(
                    r["table_training_bytes"],
                    json!(2 * (rows * (8 * 2 + 1) + rows * (2 + 1)) * 4)
                );
                assert_eq!(r["user_table_bytes"], json!(rows * 8 * 4));
            } else {
                // A CEL table serves a one-byte assignment per entity plus a few cluster rows.
                let user = r["user_table_bytes"].as_u64().unwrap() as usize;
                let k = r["user_clusters"].as_u64().unwrap() as usize;
                assert!((1..=50).contains(&k), "{k} clusters");
                assert_eq!(user, rows + k * 8 * 4);
                // Serving: two 1-byte assignments per entity and field against 9 floats.
                let full_serving = (2 * rows * 9 * 4) as f64;
                assert!(num(r, "table_serving_bytes") < 0.1 * full_serving);
                assert!(num(r, "table_serving_bytes") > (4 * rows) as f64);
                // Training state: counters (and offline CEL's split window of per-entity
                // gradients) against Adam state; CEL-Lite keeps no per-entity floats.
                let full_training = (2 * rows * (17 + 3) * 4) as f64;
                assert!(num(r, "table_training_bytes") < full_training);
                if r["kind"] == "cel-lite" {
                    assert!(num(r, "table_training_bytes") < 0.2 * full_training);
                }
            }
            if cfg!(target_os = "linux") {
                // The process holds its tables and training state, and under these sizes
                // nothing near a GiB.
                let (peak, built) = (num(r, "peak_rss_bytes"), num(r, "rss_built_bytes"));
                let tables = num(r, "table_bytes");
                assert!(built > 0.0 && peak >= built, "peak {peak}, built {built}");
                assert!(
                    peak > tables && peak < 1024.0 * MIB,
                    "peak {peak}, tables {tables}"
                );
            }
        }
        write_outputs(&recs, dir.path(), 1).unwrap();
        // CPU time comes from `getrusage` (Unix) and resident memory from `/proc` (Linux);
        // elsewhere their charts are left out.
        let drawn = |f: &str| {
            (f != "scale_throughput_cpu.png" || cfg!(unix))
                && (f != "scale_memory.png" || cfg!(target_os = "linux"))
        };
        for f in [
            "scale.json",
            "scale.csv",
            "scale_throughput.png",
            "scale_throughput_cpu.png",
            "scale_memory.png",
            "scale_table_bytes.png",
        ] {
            if !drawn(f) {
                continue;
            }
            let m = std::fs::metadata(dir.path().join(f)).unwrap();
            assert!(m.len() > 100, "{f} is nearly empty");
        }
        let csv = std::fs::read_to_string(dir.path().join("scale.csv")).unwrap();
        assert_eq!(csv.lines().count(), 7);
        assert!(csv.lines().nth(1).unwrap().starts_with("full,1000,8,6,"));
        assert_eq!(csv.lines().next().unwrap().split(',').count(), 16);
        let text = table_text(&recs);
        assert_eq!(text.lines().count(), 8);
        // --scale-replot redraws from scale.json alone.
        std::fs::remove_file(dir.path().join("scale_table_bytes.png")).unwrap();
        let replot = ScaleArgs {
            scale_replot: true,
            ..a.clone()
        };
        run(&replot, 1).unwrap();
        assert!(dir.path().join("scale_table_bytes.png").exists());
        let missing = tempfile::tempdir().unwrap();
        let bad = ScaleArgs {
            scale_out: missing.path().to_path_buf(),
            ..replot
        };
        assert!(run(&bad, 1).is_err());
    }

    #[test]
    fn bad_settings_are_errors() {
        assert!(parse_kinds("full,dense").is_err());
        assert!(parse_kinds(" ,").is_err());
        assert_eq!(parse_kinds("cel, full").unwrap(), vec!["cel", "full"]);
        let spec = PointSpec {
            kind: "hashed",
            rows: 100,
            dim: 4,
            steps: 1,
            warmup: 0,
        };
        assert!(run_point(&spec).is_err());
    }
}
