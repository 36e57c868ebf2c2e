//! `cargo xtask train` and `cargo xtask eval`.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, bail};
use clap::Args;
use rec_trainer::lock::{ProcessLock, holder_name};
use rec_trainer::{Config, Start};

/// Options of `cargo xtask train`.
#[derive(Args, Debug, Default)]
pub struct TrainArgs {
    /// A TOML run configuration (see crates/trainer/src/config.rs and configs/). Flags below
    /// override its values.
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Model name (see `--list-models`).
    #[arg(long)]
    pub model: Option<String>,
    /// Data set: ml-100k, synthetic or csv (the last two take their options from a --config file).
    #[arg(long)]
    pub dataset: Option<String>,
    /// Protocol: ctr, rating, cold, ms, seq (ml-100k); ctr, rating, ms, ecom (synthetic).
    #[arg(long)]
    pub protocol: Option<String>,
    /// Seed of the split, initialisation, shuffling and dropout.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Number of epochs.
    #[arg(long)]
    pub epochs: Option<usize>,
    /// Training batch size.
    #[arg(long)]
    pub batch_size: Option<usize>,
    /// Run directory (default `runs/{model}-{dataset}-{protocol}-seed{seed}`; the quickstart's
    /// is `runs/quickstart`, holding its two runs `full` and `cel`).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Without a value: continue the interrupted run in the run directory from its latest
    /// checkpoint, exactly where it stopped (`--out DIR --resume` alone reads DIR/config.toml;
    /// only the epochs, step budget, early-stopping patience, checkpointing, evaluation batch
    /// size, progress bar and output path may differ from the run's own settings). With a
    /// checkpoint (or run) directory: start a new
    /// run from its parameters and optimizer state, e.g. the daily incremental update
    /// (yesterday's model fine-tuned on today's data).
    #[arg(long, num_args = 0..=1, value_name = "CHECKPOINT")]
    pub resume: Option<Option<PathBuf>>,
    /// Print the final test metrics as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// List the registered models and exit.
    #[arg(long)]
    pub list_models: bool,
}

impl TrainArgs {
    fn is_quickstart(&self) -> bool {
        self.config.is_none()
            && self.model.is_none()
            && self.dataset.is_none()
            && self.protocol.is_none()
    }
}

/// The configuration `cargo xtask train` runs with no argument, with full tables: DeepFM with
/// all features on MovieLens-100k P-COLD (task `like`, so the test report has the `cold_users`
/// and `cold_items` slices), early stopping on validation AUC. The quickstart trains it and
/// [`quickstart_cel`] side by side.
pub fn quickstart_config() -> Config {
    let mut cfg = Config::new("deepfm", "ml-100k", "cold");
    cfg.data.tasks = Some(vec!["like".into()]);
    cfg.train.epochs = 20;
    cfg.train.batch_size = 2048;
    cfg.train.early_stopping = Some(rec_trainer::config::EarlyStopping {
        metric: "auc".into(),
        task: None,
        patience: 2,
        mode: None,
    });
    cfg
}

/// The quickstart's second run: `cfg` with the user and item tables replaced by CEL tables of
/// at most 50 clusters each.
pub fn quickstart_cel(cfg: &Config) -> Config {
    let mut c = cfg.clone();
    let table: toml::Table =
        toml::from_str("kind = \"cel\"\nmax_clusters = 50\n").expect("valid table");
    for f in ["user_id", "item_id"] {
        c.embeddings.fields.insert(f.into(), table.clone());
    }
    c
}

/// Removes the run directory `dir` whose run lock `held` is ours. On Unix the directory goes
/// while the lock is held (the lock file with it), so that nobody can start training into it
/// meanwhile. On Windows a file deleted while open can stay in its directory until it is
/// closed (without POSIX delete semantics, as under Wine), so the directory could not be
/// removed while the lock is held: there everything but the lock file goes first, then the
/// lock is let go and the rest removed. A process that took the run's lock in that short
/// window could lose its files; the quickstart's own lock keeps other quickstarts out of it.
fn clear_run_dir(dir: &Path, held: ProcessLock) -> Result<()> {
    let context = || format!("cannot clear {}", dir.display());
    if cfg!(windows) {
        for entry in std::fs::read_dir(dir).with_context(context)? {
            let path = entry.with_context(context)?.path();
            if path == held.path() {
                continue;
            }
            if path.is_dir() {
                std::fs::remove_dir_all(&path)
            } else {
                std::fs::remove_file(&path)
            }
            .with_context(context)?;
        }
        drop(held);
        return std::fs::remove_dir_all(dir).with_context(context);
    }
    std::fs::remove_dir_all(dir).with_context(context)?;
    drop(held);
    Ok(())
}

/// Takes the quickstart's lock on `root` (one quickstart at a time per directory) and, when
/// `clear` (the default directory, which belongs to the quickstart), removes the previous runs
/// `full` and `cel` under it, each only while holding its run lock, so that a run another
/// process is training there (e.g. resumed with `--out runs/quickstart/full --resume`) is
/// refused instead of deleted.
fn prepare_quickstart(root: &Path, clear: bool) -> Result<ProcessLock> {
    std::fs::create_dir_all(root).with_context(|| format!("cannot create {}", root.display()))?;
    let lock_path = root.join(".quickstart.lock");
    let lock = ProcessLock::take(&lock_path)?.with_context(|| {
        format!(
            "another quickstart is running into {} (process {})",
            root.display(),
            holder_name(&lock_path)
        )
    })?;
    if !clear {
        return Ok(lock);
    }
    // Both run locks first, so that a refusal clears nothing.
    let mut previous = Vec::new();
    for name in ["full", "cel"] {
        let dir = root.join(name);
        if !dir.join("checkpoints").exists() {
            continue;
        }
        let held = rec_trainer::train::lock_run(&dir)?;
        previous.push((dir, held));
    }
    for (dir, held) in previous {
        eprintln!(
            "quickstart: replacing the previous run in {}",
            dir.display()
        );
        clear_run_dir(&dir, held)?;
    }
    Ok(lock)
}

/// Trains the quickstart pair (full tables, then CEL tables) and prints AUC on all samples,
/// cold users and cold items, with the bytes of the user and item tables.
fn quickstart(args: &TrainArgs, cfg: Config) -> Result<()> {
    let cel = quickstart_cel(&cfg);
    let root = args
        .out
        .clone()
        .unwrap_or_else(|| PathBuf::from("runs/quickstart"));
    eprintln!(
        "quickstart: {} on {} ({}, task like), seed {}, full tables vs CEL user and item tables; \
         see `cargo xtask train --help` for options",
        cfg.model.name, cfg.data.dataset, cfg.data.protocol, cfg.data.seed
    );
    let _lock = prepare_quickstart(&root, args.out.is_none())?;
    let split = rec_trainer::data::load_split_for(&cfg, None)?;
    let device = candle_core::Device::Cpu;
    let mut rows = Vec::new();
    for (name, mut c) in [("full", cfg), ("cel", cel)] {
        let dir = root.join(name);
        c.output.dir = Some(dir);
        let mut model =
            rec_trainer::registry::build_model(&c, &split.schema, &split.train, &device)?;
        let out = rec_trainer::fit(model.as_mut(), &split, &c, Start::Fresh)?;
        let bytes: usize = model
            .tables()
            .iter()
            .filter(|(n, _)| n.ends_with(".user_id") || n.ends_with(".item_id"))
            .map(|(_, t)| t.bytes())
            .sum();
        let auc = |s: &str| out.test.get_slice("like", s, "auc").unwrap_or(f64::NAN);
        rows.push((
            name,
            auc("all"),
            auc("cold_users"),
            auc("cold_items"),
            bytes,
            out.run_dir,
        ));
    }
    println!(
        "\nDeepFM on MovieLens-100k P-COLD, test AUC (seed {}):",
        split.seed
    );
    println!(
        "{:<6} {:>9} {:>11} {:>11} {:>17}",
        "tables", "AUC all", "cold users", "cold items", "user+item bytes"
    );
    for (name, a, u, i, b, _) in &rows {
        println!("{name:<6} {a:>9.4} {u:>11.4} {i:>11.4} {b:>17}");
    }
    println!(
        "CEL tables are {:.1}x smaller; reports: {}",
        rows[0].4 as f64 / rows[1].4.max(1) as f64,
        rows.iter()
            .map(|r| r.5.join("report.md").display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    );
    if args.json {
        let j: serde_json::Map<String, serde_json::Value> = rows
            .iter()
            .map(|(n, a, u, i, b, _)| {
                (
                    n.to_string(),
                    serde_json::json!({"auc": a, "auc_cold_users": u, "auc_cold_items": i, "bytes": b}),
                )
            })
            .collect();
        println!("{}", serde_json::Value::Object(j));
    }
    Ok(())
}

fn build_config(args: &TrainArgs) -> Result<Config> {
    let mut cfg = match &args.config {
        Some(p) => Config::from_file(p)?,
        // Continuing a run named by its directory: its own configuration.
        None if args.is_quickstart() && matches!(args.resume, Some(None)) => {
            let dir = args.out.as_ref().context(
                "--resume continues a run: name its directory with --out (or give the --config \
                 it was started with); the quickstart's runs are runs/quickstart/full and \
                 runs/quickstart/cel",
            )?;
            let file = dir.join("config.toml");
            if !file.exists() {
                let hint = if dir.join("full").join("config.toml").exists() {
                    format!(
                        " ({} holds the quickstart's two runs: resume {} or {})",
                        dir.display(),
                        dir.join("full").display(),
                        dir.join("cel").display()
                    )
                } else {
                    String::new()
                };
                bail!(
                    "nothing to resume: {} has no config.toml{hint}",
                    dir.display()
                );
            }
            Config::from_file(&file)?
        }
        // Starting a new run from a checkpoint: its configuration (the next day's data, say)
        // must be given; the quickstart's would be a different model.
        None if args.is_quickstart() && matches!(args.resume, Some(Some(_))) => bail!(
            "--resume CHECKPOINT starts a new run from that checkpoint: give the new run's \
             configuration with --config (e.g. the run's config.toml with the next day in \
             [data.options]) or --model, and its directory with --out; to continue an \
             interrupted run instead, pass --resume alone with --out RUN_DIR"
        ),
        None if args.is_quickstart() => quickstart_config(),
        None => Config::new(
            args.model
                .as_deref()
                .context("--model is required without --config")?,
            args.dataset.as_deref().unwrap_or("ml-100k"),
            args.protocol.as_deref().unwrap_or("ctr"),
        ),
    };
    if let Some(m) = &args.model {
        cfg.model.name = m.clone();
    }
    if let Some(d) = &args.dataset {
        cfg.data.dataset = d.clone();
    }
    if let Some(p) = &args.protocol {
        cfg.data.protocol = p.clone();
    }
    if let Some(s) = args.seed {
        cfg.data.seed = s;
    }
    if let Some(e) = args.epochs {
        cfg.train.epochs = e;
    }
    if let Some(b) = args.batch_size {
        cfg.train.batch_size = b;
    }
    if let Some(o) = &args.out {
        cfg.output.dir = Some(o.clone());
    }
    cfg.validate()?;
    Ok(cfg)
}

/// Runs `cargo xtask train`.
pub fn run(args: TrainArgs) -> Result<()> {
    if args.list_models {
        let models = rec_trainer::registry::models();
        let width = models.iter().map(|e| e.name.len()).max().unwrap_or(0);
        for e in models {
            println!("{:<width$}  {}", e.name, e.about);
        }
        return Ok(());
    }
    let cfg = build_config(&args)?;
    if let (Some(given), false) = (&args.config, matches!(args.resume, Some(None))) {
        refuse_overwriting(given, &cfg.run_dir())?;
    }
    if args.is_quickstart() && args.resume.is_none() {
        return quickstart(&args, cfg);
    }
    let start = match &args.resume {
        None => Start::Fresh,
        Some(None) => Start::Resume,
        Some(Some(p)) => Start::WarmStart(rec_trainer::score::resolve(p)?),
    };
    if matches!(start, Start::Resume) {
        eprintln!(
            "resuming {}: {} on {} ({}), seed {}",
            cfg.run_dir().display(),
            cfg.model.name,
            cfg.data.dataset,
            cfg.data.protocol,
            cfg.data.seed
        );
    }
    let outcome = rec_trainer::run(&cfg, start)?;
    println!(
        "\n{} on {} ({}): kept {}; {} epochs evaluated, {} steps, {}",
        cfg.model.name,
        cfg.data.dataset,
        cfg.data.protocol,
        outcome.kept(),
        outcome.history.len(),
        outcome.steps,
        outcome.speed()
    );
    if let Some(size) = &outcome.size {
        println!("{}", size.summary());
    }
    println!("test metrics:\n{}", outcome.test);
    println!("report: {}", outcome.run_dir.join("report.md").display());
    if args.json {
        println!("{}", serde_json::to_string(&outcome.test)?);
    }
    Ok(())
}

/// Whether two paths name one existing file (by another path, `..` or a link included).
fn same_file(a: &std::path::Path, b: &std::path::Path) -> bool {
    matches!((a.canonicalize(), b.canonicalize()), (Ok(x), Ok(y)) if x == y)
}

/// A new run writes its own `config.toml` into its directory: refused when that is the file
/// the configuration was read from, which would lose its comments and layout (a resume reads
/// and rewrites the run's own file, as it should).
fn refuse_overwriting(config: &std::path::Path, run_dir: &std::path::Path) -> Result<()> {
    let target = run_dir.join("config.toml");
    if same_file(config, &target) {
        anyhow::bail!(
            "{} is where the run writes its own config.toml: keep your configuration outside \
             the run directory {} (or resume that run with --out {} --resume)",
            config.display(),
            run_dir.display(),
            run_dir.display()
        );
    }
    Ok(())
}

/// Options of `cargo xtask eval`.
#[derive(Args, Debug)]
pub struct EvalArgs {
    /// A checkpoint directory (e.g. runs/NAME/checkpoints/step-000000000120), or a run
    /// directory, whose best (else latest, else newest complete) checkpoint is used.
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// Print the metrics as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
}

/// Runs `cargo xtask eval`: rebuilds the model of a checkpoint and evaluates it on the
/// validation and test splits of its configuration.
pub fn eval(args: EvalArgs) -> Result<()> {
    let dir = rec_trainer::score::resolve(&args.checkpoint)?;
    let rec_trainer::score::Restored {
        config: cfg,
        split,
        mut model,
        ..
    } = rec_trainer::score::restore(&dir)?;
    let bs = cfg.train.eval_batch_size;
    let valid = rec_trainer::evaluate(model.as_mut(), &split.valid, bs)?;
    let test = rec_trainer::evaluate(model.as_mut(), &split.test, bs)?;
    println!("checkpoint {}", dir.display());
    println!(
        "{}",
        rec_trainer::size::ModelSize::of(model.as_ref()).summary()
    );
    println!("validation:\n{valid}");
    println!("test:\n{test}");
    if args.json {
        println!(
            "{}",
            serde_json::to_string(&serde_json::json!({ "valid": valid, "test": test }))?
        );
    }
    Ok(())
}

/// Options of `cargo xtask predict`.
#[derive(Args, Debug)]
pub struct PredictArgs {
    /// A checkpoint directory, or a run directory, whose best (else latest, else newest) checkpoint is
    /// used. The run must be on your own CSV data (`dataset = "csv"`); its training file must
    /// still be where its configuration says (the model is rebuilt from it, as by `eval`).
    #[arg(long)]
    pub checkpoint: PathBuf,
    /// The file to score, in the run's format. With a header, its label and rating columns
    /// may be left out; when it has those of every task the run kept, the metrics on the file
    /// are printed too.
    #[arg(long)]
    pub input: PathBuf,
    /// Where to write the scores (CSV: `line` of the input, then one column per task:
    /// a probability for a binary task, the value for a rating). Default: standard output.
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Interaction schema to read the file with (default: the run's `[data.options] schema`).
    #[arg(long)]
    pub schema: Option<PathBuf>,
}

/// Runs `cargo xtask predict`: scores the rows of a file with a trained model.
pub fn predict(args: PredictArgs) -> Result<()> {
    if let Some(out) = &args.out
        && same_file(out, &args.input)
    {
        anyhow::bail!(
            "--out {} is the input file: the scores would replace the rows they score",
            out.display()
        );
    }
    let dir = rec_trainer::score::resolve(&args.checkpoint)?;
    let mut restored = rec_trainer::score::restore(&dir)?;
    let scores =
        rec_trainer::score::score_file(&mut restored, &args.input, args.schema.as_deref())?;
    let n = scores.lines.len();
    let rows = if n == 1 { "row" } else { "rows" };
    eprintln!(
        "scored {n} {rows} of {} with `{}` from {}",
        args.input.display(),
        restored.config.model.name,
        dir.display()
    );
    for (field, k) in &scores.unknown_ids {
        eprintln!(
            "  {field}: {k} of {n} {rows} ({:.1}%) with an ID outside the checkpoint's \
             vocabulary (scored with the table's rule for unknown IDs)",
            100.0 * *k as f64 / n as f64
        );
    }
    if let Some(e) = &scores.evaluation {
        eprintln!("metrics on {}:\n{e}", args.input.display());
    }
    let csv = scores.to_csv();
    match &args.out {
        Some(out) => {
            rec_trainer::checkpoint::write_atomic(out, csv.as_bytes())
                .with_context(|| format!("cannot write {}", out.display()))?;
            eprintln!("wrote {}", out.display());
        }
        None => {
            use std::io::Write;
            std::io::stdout().write_all(csv.as_bytes())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A second quickstart into the same directory is refused, and so is clearing previous runs
    /// while another process trains into one of them (nothing is cleared then); previous runs
    /// nobody holds are cleared.
    #[test]
    fn a_quickstart_clears_only_runs_nobody_is_training() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        for name in ["full", "cel"] {
            std::fs::create_dir_all(root.join(name).join("checkpoints")).unwrap();
        }
        let pid = format!("process {}", std::process::id());
        // Another quickstart holds the directory (one with `--out`, which clears nothing):
        // refused, nothing cleared.
        let other = prepare_quickstart(root, false).unwrap();
        let e = format!("{:#}", prepare_quickstart(root, true).unwrap_err());
        assert!(
            e.contains("another quickstart is running") && e.contains(&pid),
            "{e}"
        );
        assert!(root.join("full/checkpoints").exists() && root.join("cel/checkpoints").exists());
        drop(other);
        // A process trains into `cel` (resumed there by hand): refused, both runs kept.
        let training = ProcessLock::take(&root.join("cel").join(rec_trainer::train::RUN_LOCK))
            .unwrap()
            .unwrap();
        let e = format!("{:#}", prepare_quickstart(root, true).unwrap_err());
        assert!(e.contains("is in use") && e.contains(&pid), "{e}");
        assert!(root.join("full/checkpoints").exists(), "nothing cleared");
        assert!(
            root.join("cel/checkpoints").exists(),
            "the held run is kept"
        );
        drop(training);
        // Nobody holds them any more: both cleared. With `--out` (no clearing) nothing is
        // touched.
        drop(prepare_quickstart(root, true).unwrap());
        assert!(!root.join("full").exists() && !root.join("cel").exists());
        std::fs::create_dir_all(root.join("full/checkpoints")).unwrap();
        drop(prepare_quickstart(root, false).unwrap());
        assert!(root.join("full/checkpoints").exists());
    }

    #[test]
    fn flags_override_the_config_and_quickstart_is_the_default() {
        let q = build_config(&TrainArgs::default()).unwrap();
        assert_eq!(q.model.name, "deepfm");
        assert_eq!(q.data.protocol, "cold");
        let cel = quickstart_cel(&q);
        assert_eq!(cel.embeddings.fields.len(), 2);
        assert!(rec_trainer::registry::cel_configs(&cel).unwrap().1["item_id"].is_some());
        let a = TrainArgs {
            model: Some("mf".into()),
            protocol: Some("rating".into()),
            epochs: Some(3),
            seed: Some(7),
            ..Default::default()
        };
        let c = build_config(&a).unwrap();
        assert_eq!(
            (c.model.name.as_str(), c.data.protocol.as_str()),
            ("mf", "rating")
        );
        assert_eq!((c.train.epochs, c.data.seed), (3, 7));
        let bad = TrainArgs {
            dataset: Some("ml-100k".into()),
            ..Default::default()
        };
        assert!(
            build_config(&bad)
                .unwrap_err()
                .to_string()
                .contains("--model")
        );
    }

    #[test]
    fn predict_refuses_to_write_its_scores_over_its_input() {
        let tmp = tempfile::tempdir().unwrap();
        let input = tmp.path().join("new.csv");
        std::fs::write(&input, "user,item\nu1,i1\n").unwrap();
        let e = predict(PredictArgs {
            checkpoint: tmp.path().join("no-run"),
            input: input.clone(),
            out: Some(tmp.path().join(".").join("new.csv")),
            schema: None,
        })
        .unwrap_err()
        .to_string();
        assert!(e.contains("is the input file"), "{e}");
        assert_eq!(
            std::fs::read_to_string(&input).unwrap(),
            "user,item\nu1,i1\n"
        );
    }

    #[test]
    fn a_new_run_refuses_to_overwrite_the_configuration_it_was_given() {
        let tmp = tempfile::tempdir().unwrap();
        let run = tmp.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        let mine = run.join("config.toml");
        std::fs::write(&mine, "# my notes\n").unwrap();
        let e = refuse_overwriting(&mine, &run).unwrap_err().to_string();
        assert!(
            e.contains("where the run writes its own config.toml"),
            "{e}"
        );
        // The same file by another path is the same file.
        let e = refuse_overwriting(&run.join("../run/config.toml"), &run).unwrap_err();
        assert!(e.to_string().contains("outside"), "{e}");
        // Elsewhere, or into a directory that does not exist yet, is fine.
        let other = tmp.path().join("mine.toml");
        std::fs::write(&other, "").unwrap();
        refuse_overwriting(&other, &run).unwrap();
        refuse_overwriting(&mine, &tmp.path().join("new")).unwrap();
    }

    #[test]
    fn resume_by_directory_reads_the_runs_own_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let mut saved = Config::new("widedeep", "ml-100k", "ctr");
        saved.data.seed = 5;
        saved.train.batch_size = 64;
        let run = dir.path().join("run");
        std::fs::create_dir_all(&run).unwrap();
        std::fs::write(run.join("config.toml"), saved.to_toml().unwrap()).unwrap();
        let resume = |out: Option<PathBuf>, epochs: Option<usize>| TrainArgs {
            out,
            epochs,
            resume: Some(None),
            ..Default::default()
        };
        // Not the quickstart's configuration: the run's, with the flags on top.
        let c = build_config(&resume(Some(run.clone()), Some(30))).unwrap();
        assert_eq!(
            (
                c.model.name.as_str(),
                c.data.seed,
                c.train.batch_size,
                c.train.epochs
            ),
            ("widedeep", 5, 64, 30)
        );
        assert_eq!(c.run_dir(), run);
        // Without a directory there is no run to read.
        let e = build_config(&resume(None, None)).unwrap_err().to_string();
        assert!(e.contains("--out"), "{e}");
        // A quickstart root holds two runs: say which.
        let q = dir.path().join("quick");
        std::fs::create_dir_all(q.join("full")).unwrap();
        std::fs::write(q.join("full/config.toml"), saved.to_toml().unwrap()).unwrap();
        let e = build_config(&resume(Some(q.clone()), None))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nothing to resume") && e.contains("full"), "{e}");
        // Starting from a checkpoint without a configuration is not the quickstart.
        let warm = TrainArgs {
            out: Some(dir.path().join("next")),
            resume: Some(Some(run.join("checkpoints"))),
            ..Default::default()
        };
        let e = build_config(&warm).unwrap_err().to_string();
        assert!(e.contains("--config"), "{e}");
    }

    #[test]
    fn eval_refuses_a_checkpoint_whose_data_changed() {
        let tmp = tempfile::tempdir().unwrap();
        let schema = tmp.path().join("schema.toml");
        std::fs::write(
            &schema,
            "[[columns]]\nname = \"user\"\nrole = \"user\"\n\
             [[columns]]\nname = \"item\"\nrole = \"item\"\n\
             [[columns]]\nname = \"click\"\nrole = \"label\"\n",
        )
        .unwrap();
        let csv = tmp.path().join("clicks.csv");
        let rows = |n: usize| -> String {
            (0..n)
                .map(|r| format!("u{},i{},{}\n", r % 7, r % 5, (r / 3) % 2))
                .collect()
        };
        std::fs::write(&csv, format!("user,item,click\n{}", rows(120))).unwrap();
        let run = tmp.path().join("run");
        let text = format!(
            "[data]\ndataset = \"csv\"\n[data.options]\npath = {:?}\nschema = {:?}\n\
             [model]\nname = \"fm\"\n[model.params]\ndim = 4\n\
             [train]\nepochs = 1\nbatch_size = 32\nprogress = false\n[output]\ndir = {:?}\n",
            csv.display().to_string(),
            schema.display().to_string(),
            run.display().to_string(),
        );
        let cfg = Config::from_toml(&text, "test").unwrap();
        rec_trainer::run(&cfg, Start::Fresh).unwrap();
        let args = || EvalArgs {
            checkpoint: run.clone(),
            json: false,
        };
        // The same file: the fingerprint matches and the checkpoint is evaluated.
        eval(args()).unwrap();
        // One more row reshuffles the split: refused.
        std::fs::write(&csv, format!("user,item,click\n{}", rows(121))).unwrap();
        let e = format!("{:#}", eval(args()).unwrap_err());
        assert!(e.contains("other data"), "{e}");
    }
}
