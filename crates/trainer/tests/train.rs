//! End-to-end tests of the training loop on a small planted data set built here (no files).

use std::collections::BTreeMap;
use std::sync::Arc;

use candle_core::Device;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, Slice, Split, TaskKind, TaskSpec};
use rec_trainer::config::EarlyStopping;
use rec_trainer::{Config, Start, fit, registry};

/// Users and items with planted 4-d factors; like = (u . v + noise > 0).
fn planted_split(seed: u64) -> Split {
    let (users, items, n) = (60usize, 40usize, 6000usize);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let uf: Vec<[f32; 4]> = (0..users)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let vf: Vec<[f32; 4]> = (0..items)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", users + 1),
            FieldSpec::categorical("item_id", items + 1),
        ],
        tasks: vec![TaskSpec::new("like", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    });
    let mut u = Vec::new();
    let mut i = Vec::new();
    let mut y = Vec::new();
    for _ in 0..n {
        let a = rng.random_range(0..users);
        let b = rng.random_range(0..items);
        let s: f32 = (0..4).map(|k| uf[a][k] * vf[b][k]).sum::<f32>() + rng.random_range(-0.3..0.3);
        u.push(a as u32 + 1);
        i.push(b as u32 + 1);
        y.push(if s > 0.0 { 1.0 } else { 0.0 });
    }
    let all = Batch {
        schema: schema.clone(),
        columns: vec![Column::Ids(u), Column::Ids(i)],
        labels: vec![y],
        weights: None,
        slices: Vec::new(),
    };
    let mut test = all.range(5400, 6000);
    let cold: Vec<bool> = test
        .ids("user_id")
        .unwrap()
        .iter()
        .map(|&u| u <= 10)
        .collect();
    test.slices.push(Slice {
        name: "first_users".into(),
        mask: cold,
    });
    Split {
        name: "planted".into(),
        seed,
        schema,
        train: all.range(0, 4800),
        valid: all.range(4800, 5400),
        test,
        vocabs: BTreeMap::new(),
        scenario_names: Vec::new(),
        items: None,
        seq: None,
    }
}

fn config(dir: &std::path::Path, model: &str) -> Config {
    let mut cfg = Config::new(model, "planted", "none");
    cfg.train.epochs = 6;
    cfg.train.batch_size = 256;
    cfg.train.progress = false;
    cfg.optimizer.dense = rec_nn::optim::OptimizerConfig::adam(0.01);
    cfg.optimizer.sparse = rec_nn::optim::OptimizerConfig::adam(0.03);
    cfg.train.early_stopping = Some(EarlyStopping {
        metric: "auc".into(),
        task: None,
        patience: 2,
        mode: None,
    });
    cfg.output.dir = Some(dir.to_path_buf());
    cfg
}

fn train(cfg: &Config, split: &Split, start: Start) -> rec_trainer::Outcome {
    let mut model = registry::build_model(cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    fit(model.as_mut(), split, cfg, start).unwrap()
}

#[test]
fn fm_learns_the_planted_preferences_and_writes_a_report() {
    let dir = tempfile::tempdir().unwrap();
    let split = planted_split(1);
    let cfg = config(dir.path(), "fm");
    let out = train(&cfg, &split, Start::Fresh);
    let auc = out.test.get(None, "auc").unwrap();
    assert!(auc > 0.75, "test AUC {auc}");
    assert!(out.test.get_slice("like", "first_users", "auc").is_some());
    for f in [
        "report.md",
        "loss.png",
        "valid.png",
        "log.jsonl",
        "results.json",
        "config.toml",
    ] {
        assert!(dir.path().join(f).exists(), "{f} missing");
    }
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), out.history.len());
    // The speed in the report comes with the thread settings it was measured under.
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains(" samples/s ("), "{report}");
    // What the kept model costs: full tables are as large as full tables, and the parts add
    // up to the model's parameter count.
    let size = out.size.as_ref().unwrap();
    assert!(!size.tables.is_empty());
    for t in &size.tables {
        assert_eq!((t.kind.as_str(), t.bytes), ("full", t.full_bytes), "{t:?}");
        assert_eq!(t.params, t.vocab * t.dim, "{t:?}");
        assert_eq!(t.clusters, None);
    }
    let model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let params: usize = size.tables.iter().map(|t| t.params).sum();
    assert_eq!(size.dense_params + params, model.num_params());
    assert!(report.contains("## Model size"), "{report}");
    assert!(report.contains(&format!("| table `{}` | full |", size.tables[0].name)));
    let results = std::fs::read_to_string(dir.path().join("results.json")).unwrap();
    let saved: rec_trainer::Outcome = serde_json::from_str(&results).unwrap();
    assert_eq!(saved.size.as_ref(), Some(size));
    for var in ["CANDLE_NUM_THREADS", "RAYON_NUM_THREADS"] {
        let want = match std::env::var(var) {
            Ok(v) => format!("{var}={v} "),
            Err(_) => format!("{var} unset "),
        };
        assert!(report.contains(&want), "{want:?} not in {report}");
    }
    // The kept checkpoint is the best validation epoch.
    let best = out
        .history
        .iter()
        .map(|r| r.watched.unwrap())
        .fold(f64::MIN, f64::max);
    assert_eq!(
        out.history[out.best_epoch as usize - 1].watched.unwrap(),
        best
    );
}

#[test]
fn resumed_run_ends_with_exactly_the_same_metrics() {
    let split = planted_split(2);
    let a = tempfile::tempdir().unwrap();
    let full = train(&config(a.path(), "deepfm"), &split, Start::Fresh);

    let b = tempfile::tempdir().unwrap();
    let mut first = config(b.path(), "deepfm");
    first.train.epochs = 2;
    train(&first, &split, Start::Fresh);
    let resumed = train(&config(b.path(), "deepfm"), &split, Start::Resume);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(resumed.best_epoch, full.best_epoch);
    assert_eq!(resumed.test, full.test);
    assert!(
        resumed.speed().ends_with("samples/s"),
        "{}",
        resumed.speed()
    );
    // Resuming a run whose budget is spent trains nothing and says so, instead of a speed
    // of 0 samples/s.
    let again = train(&config(b.path(), "deepfm"), &split, Start::Resume);
    assert_eq!(again.test, full.test);
    assert!(
        !again.stopped_early,
        "the budget, not early stopping, ended this run"
    );
    assert!(again.speed().contains("no step left"), "{}", again.speed());
    let (h1, h2): (Vec<_>, Vec<_>) = (
        full.history
            .iter()
            .map(|r| (r.epoch, r.train_loss, r.valid.clone()))
            .collect(),
        resumed
            .history
            .iter()
            .map(|r| (r.epoch, r.train_loss, r.valid.clone()))
            .collect(),
    );
    assert_eq!(h1, h2);
}

#[test]
fn a_resume_on_changed_data_is_refused_and_best_is_repaired() {
    let split = planted_split(2);
    let dir = tempfile::tempdir().unwrap();
    let mut first = config(dir.path(), "deepfm");
    first.train.epochs = 2;
    let out = train(&first, &split, Start::Fresh);
    let root = dir.path().join("checkpoints");
    let best = rec_trainer::checkpoint::resolve_pointer(&root, "best")
        .unwrap()
        .unwrap();
    let best_name = |o: &rec_trainer::Outcome| {
        rec_trainer::checkpoint::step_name(o.history[o.best_epoch as usize - 1].step)
    };
    assert_eq!(
        best,
        root.join(best_name(&out)),
        "best names the kept checkpoint"
    );

    // The same configuration on data with one label flipped (a file edited under the same
    // path): another run, refused by name.
    let mut changed = split.clone();
    changed.train.labels[0][17] = 1.0 - changed.train.labels[0][17];
    let mut model =
        registry::build_model(&first, &changed.schema, &changed.train, &Device::Cpu).unwrap();
    let err = fit(
        model.as_mut(),
        &changed,
        &config(dir.path(), "deepfm"),
        Start::Resume,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("other data"), "{err}");

    // The refused resume wrote nothing: the run's configuration is still the 2-epoch one.
    let saved = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    assert_eq!(saved, first.to_toml().unwrap());

    // A kill between `latest` and `best`: best left at a checkpoint that is not the loop's.
    // A leftover partial checkpoint write is removed too. The resume trains no further epoch
    // (the run has its 2), so only the repair can point `best` right again.
    rec_trainer::checkpoint::set_pointer(&root, "best", "step-000000000000").unwrap();
    std::fs::create_dir_all(root.join(".tmp-step-000000099999")).unwrap();
    let resumed = train(&first, &split, Start::Resume);
    assert_eq!(resumed.steps, out.steps, "no step after the checkpoint");
    let best = rec_trainer::checkpoint::resolve_pointer(&root, "best")
        .unwrap()
        .unwrap();
    assert_eq!(best, root.join(best_name(&resumed)));
    assert!(best.is_dir());
    assert!(!root.join(".tmp-step-000000099999").exists());
}

#[test]
fn a_run_directory_in_use_by_a_live_process_is_refused() {
    let split = planted_split(4);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.epochs = 1;
    // Held (by a handle of this process, as by another process).
    let lock = dir.path().join(rec_trainer::train::RUN_LOCK);
    let held = rec_trainer::lock::ProcessLock::take(&lock)
        .unwrap()
        .unwrap();
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let e = format!(
        "{:#}",
        fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap_err()
    );
    assert!(
        e.contains("is in use")
            && e.contains(".lock")
            && e.contains(&format!("process {}", std::process::id())),
        "{e}"
    );
    assert!(
        !dir.path().join("checkpoints").exists(),
        "nothing was written"
    );
    // Released: free again. A file left by a process that ended without removing it (killed)
    // is free too, whatever it names; the run takes it and removes it at the end.
    drop(held);
    std::fs::write(&lock, i32::MAX.to_string()).unwrap();
    train(&cfg, &split, Start::Fresh);
    assert!(!lock.exists());
}

#[test]
fn resume_inside_an_epoch_is_exact_too() {
    let split = planted_split(3);
    let a = tempfile::tempdir().unwrap();
    let mut cfg = config(a.path(), "widedeep");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    let full = train(&cfg, &split, Start::Fresh);

    let b = tempfile::tempdir().unwrap();
    let mut part = cfg.clone();
    part.output.dir = Some(b.path().to_path_buf());
    part.train.checkpoint_every_steps = Some(5);
    part.train.max_steps = Some(27);
    train(&part, &split, Start::Fresh);
    let mut rest = part.clone();
    rest.train.max_steps = None;
    let resumed = train(&rest, &split, Start::Resume);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(resumed.test, full.test);
}

#[test]
fn a_run_killed_after_its_early_stopping_checkpoint_resumes_to_the_same_end() {
    let split = planted_split(5);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "deepfm");
    cfg.train.epochs = 30;
    cfg.train.early_stopping.as_mut().unwrap().patience = 1;
    let full = train(&cfg, &split, Start::Fresh);
    assert!(full.stopped_early && full.history.len() < 30, "{full:?}");
    // A kill after the stopping epoch's checkpoint and before the results: the checkpoint
    // is the one the run ended on, and nothing after it was written.
    std::fs::remove_file(dir.path().join("results.json")).unwrap();
    let resumed = train(&cfg, &split, Start::Resume);
    assert!(resumed.stopped_early);
    assert_eq!(
        resumed.steps, full.steps,
        "no epoch is trained after the stop"
    );
    assert_eq!(resumed.history.len(), full.history.len());
    assert_eq!(resumed.best_epoch, full.best_epoch);
    assert_eq!(resumed.test, full.test);
    // Nothing trained, and the run says why, with the setting that would continue it.
    assert!(
        resumed.speed().contains("the run had stopped early")
            && resumed.speed().contains("train.early_stopping.patience"),
        "{}",
        resumed.speed()
    );
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    assert_eq!(log.lines().count(), full.history.len());
}

#[test]
fn resaving_the_latest_step_leaves_its_checkpoint_in_place() {
    let split = planted_split(6);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "widedeep");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    cfg.train.checkpoint_every_steps = Some(5);
    // The budget ends right after a periodic save, inside the first epoch.
    cfg.train.max_steps = Some(10);
    let first = train(&cfg, &split, Start::Fresh);
    assert_eq!(first.steps, 10);
    let root = dir.path().join("checkpoints");
    let step10 = root.join(rec_trainer::checkpoint::step_name(10));
    let latest = || {
        rec_trainer::checkpoint::resolve_pointer(&root, "latest")
            .unwrap()
            .unwrap()
    };
    assert_eq!(latest(), step10);
    // Resuming with the budget spent saves step 10 again: that must not delete and rewrite
    // the directory `latest` names (a crash in between would leave `latest` dangling).
    let marker = step10.join("kept");
    std::fs::write(&marker, b"").unwrap();
    let again = train(&cfg, &split, Start::Resume);
    assert_eq!(again.steps, 10);
    assert!(marker.exists(), "the latest checkpoint was rewritten");
    assert_eq!(latest(), step10);
    std::fs::remove_file(&marker).unwrap();
    // And the run still finishes from it.
    let mut rest = cfg.clone();
    rest.train.max_steps = None;
    let done = train(&rest, &split, Start::Resume);
    assert!(done.steps > 10 && done.history.len() == 2, "{done:?}");
}

/// `keep_checkpoints` bounds the periodic checkpoints inside an epoch too, not only the
/// epoch-end ones: a small disk does not fill with them.
#[test]
fn keep_checkpoints_bounds_periodic_checkpoints() {
    let split = planted_split(6);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "widedeep");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 1;
    cfg.train.keep_checkpoints = 2;
    cfg.train.checkpoint_every_steps = Some(1);
    cfg.train.max_steps = Some(12);
    let out = train(&cfg, &split, Start::Fresh);
    assert_eq!(out.steps, 12);
    let root = dir.path().join("checkpoints");
    let mut steps: Vec<String> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("step-"))
        .collect();
    steps.sort();
    let name = rec_trainer::checkpoint::step_name;
    assert_eq!(steps, [name(11), name(12)]);
    let latest = rec_trainer::checkpoint::resolve_pointer(&root, "latest").unwrap();
    assert_eq!(latest, Some(root.join(name(12))));
}

/// A run killed after its checkpoint was in place but before `latest` named it: a fresh run
/// there is refused (its pruning would mix two runs' steps), and `--resume` continues from the
/// newest complete checkpoint, to the same result as an uninterrupted run.
#[test]
fn a_run_without_a_latest_pointer_resumes_from_its_newest_checkpoint() {
    let split = planted_split(6);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "widedeep");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    let full = train(&cfg, &split, Start::Fresh);

    let dir2 = tempfile::tempdir().unwrap();
    let mut part = config(dir2.path(), "widedeep");
    part.train.early_stopping = None;
    part.train.epochs = 2;
    part.train.max_steps = Some(7);
    part.train.checkpoint_every_steps = Some(5);
    train(&part, &split, Start::Fresh);
    let root = dir2.path().join("checkpoints");
    std::fs::remove_file(root.join("latest")).unwrap();
    let _ = std::fs::remove_file(root.join("best"));

    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let mut rest = part.clone();
    rest.train.max_steps = None;
    let e = format!(
        "{:#}",
        fit(model.as_mut(), &split, &rest, Start::Fresh).unwrap_err()
    );
    assert!(e.contains("already holds a run"), "{e}");
    let resumed = train(&rest, &split, Start::Resume);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(resumed.test, full.test);
}

#[test]
fn early_stopping_watches_the_schemas_first_task_not_the_first_by_name() {
    // A second task `a_noise` (random labels) sorts before `like` by name.
    let mut split = planted_split(7);
    let mut schema = (*split.schema).clone();
    schema
        .tasks
        .push(TaskSpec::new("a_noise", TaskKind::Binary));
    let schema = Arc::new(schema);
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    for b in [&mut split.train, &mut split.valid, &mut split.test] {
        b.schema = schema.clone();
        let noise = (0..b.len())
            .map(|_| f32::from(rng.random_bool(0.5)))
            .collect();
        b.labels.push(noise);
    }
    split.schema = schema;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.epochs = 2;
    let out = train(&cfg, &split, Start::Fresh);
    for r in &out.history {
        let like = r.valid.get(Some("like"), "auc").unwrap();
        let noise = r.valid.get(Some("a_noise"), "auc").unwrap();
        assert_ne!(like, noise);
        assert_eq!(r.watched, Some(like), "epoch {}", r.epoch);
    }
}

#[test]
fn a_fresh_run_refuses_a_used_directory_and_resume_needs_a_checkpoint() {
    let split = planted_split(4);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.epochs = 1;
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let e = fit(model.as_mut(), &split, &cfg, Start::Resume).unwrap_err();
    assert!(e.to_string().contains("nothing to resume"), "{e}");
    // Refused before anything is written into the directory.
    assert!(!dir.path().join("config.toml").exists());
    fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap();
    let e = fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap_err();
    assert!(e.to_string().contains("--resume"), "{e}");
    // A run started from a checkpoint is a new run: resuming this one is the wrong advice.
    let latest =
        rec_trainer::checkpoint::resolve_pointer(&dir.path().join("checkpoints"), "latest")
            .unwrap()
            .unwrap();
    let e = fit(model.as_mut(), &split, &cfg, Start::WarmStart(latest)).unwrap_err();
    assert!(
        e.to_string().contains("--out") && !e.to_string().contains("--resume"),
        "{e}"
    );
}

#[test]
fn a_resume_with_another_configuration_is_refused_naming_the_keys() {
    let split = planted_split(8);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    cfg.train.max_steps = Some(7);
    train(&cfg, &split, Start::Fresh);
    let saved = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();

    // Another seed (another split and batch order) and another batch size (another position
    // in the epoch) would continue a different run than the interrupted one.
    let mut other = cfg.clone();
    other.data.seed += 1;
    other.train.batch_size = 128;
    other.train.max_steps = None;
    let mut model =
        registry::build_model(&other, &split.schema, &split.train, &Device::Cpu).unwrap();
    let e = fit(model.as_mut(), &split, &other, Start::Resume)
        .unwrap_err()
        .to_string();
    assert!(e.contains("data.seed (42 in the run, 43 now)"), "{e}");
    assert!(
        e.contains("train.batch_size (256 in the run, 128 now)"),
        "{e}"
    );
    assert!(!e.contains("max_steps"), "the step budget may change: {e}");
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.toml")).unwrap(),
        saved,
        "the run's own configuration is kept"
    );
    // Only the budget, epochs, checkpointing and progress changed: it resumes.
    let mut rest = cfg.clone();
    rest.train.max_steps = None;
    rest.train.epochs = 3;
    rest.train.checkpoint_every_steps = Some(50);
    let done = train(&rest, &split, Start::Resume);
    assert_eq!(done.history.len(), 3);
}

/// A small DUPN on P-SEQ's next-item task alone (MovieLens-100k), into `dir`.
fn p_seq_config(dir: &std::path::Path) -> Config {
    let mut cfg = Config::new("dupn", "ml-100k", "seq");
    cfg.data.seed = 1;
    cfg.data.tasks = Some(vec!["next_item".into()]);
    cfg.model.params = toml::from_str(
        "item_dim = 8\nproperty_dim = 4\nprofile_dim = 4\nhidden = 16\nattention_hidden = 8\n\
         max_history = 20\nprofile = [\"user_id\"]\nhead = { hidden = [16] }\n",
    )
    .unwrap();
    cfg.optimizer.dense = rec_nn::optim::OptimizerConfig::adam(0.01);
    cfg.optimizer.sparse = rec_nn::optim::OptimizerConfig::adam(0.02);
    cfg.train.epochs = 1;
    cfg.train.max_steps = Some(60);
    cfg.train.batch_size = 256;
    cfg.train.progress = false;
    cfg.train.early_stopping = None;
    cfg.output.dir = Some(dir.join("run"));
    cfg
}

/// The next-item negatives are drawn from the seed and the step: a run stopped and resumed
/// draws the same ones and ends as the uninterrupted run. Needs MovieLens-100k.
#[test]
fn a_resumed_p_seq_run_draws_the_same_negatives() {
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let mut whole = p_seq_config(a.path());
    whole.train.max_steps = Some(24);
    let full = rec_trainer::run(&whole, Start::Fresh).unwrap();
    let mut first = p_seq_config(b.path());
    first.train.max_steps = Some(11);
    rec_trainer::run(&first, Start::Fresh).unwrap();
    let mut rest = p_seq_config(b.path());
    rest.train.max_steps = Some(24);
    let resumed = rec_trainer::run(&rest, Start::Resume).unwrap();
    assert_eq!(resumed.steps, 24);
    assert_eq!(resumed.test, full.test);
    assert_eq!(resumed.valid, full.valid);
}

/// P-SEQ's next-item rows are all positive (the item rated next): the trainer adds one sampled
/// unrated item per row, in every training step and once in the validation and test parts, so
/// the task learns something and its AUC means something. Needs MovieLens-100k (CI fetches
/// it first).
#[test]
fn p_seq_next_item_trains_against_sampled_negatives_and_learns() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = p_seq_config(dir.path());

    let split = rec_trainer::data::load_split(&cfg.data).unwrap();
    let t = split.schema.task_index("next_item").unwrap();
    for part in [&split.valid, &split.test] {
        let ones = part.labels[t].iter().filter(|&&l| l == 1.0).count();
        let zeros = part.labels[t].iter().filter(|&&l| l == 0.0).count();
        assert_eq!((ones, zeros), (943, 943), "one negative per user's row");
    }
    let out = rec_trainer::run(&cfg, Start::Fresh).unwrap();
    let auc = out.test.get(Some("next_item"), "auc").unwrap();
    assert!(auc > 0.75, "next-item AUC against sampled items {auc}");
}

/// `[embeddings]` mistakes that used to pass: an entry for a dense field (no table reads it),
/// exact CEL reassignment on a multi-hot field (it failed at its first round, mid-training),
/// and an unknown kind (whose message left out `cel`).
#[test]
fn embedding_entries_no_table_uses_or_cannot_serve_are_refused_before_training() {
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", 11),
            FieldSpec::categorical("item_id", 9),
            FieldSpec::multi_hot("tags", 5),
            FieldSpec::dense("price", 1),
        ],
        tasks: vec![TaskSpec::new("like", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    });
    let train = Batch::empty(schema.clone());
    let dir = tempfile::tempdir().unwrap();
    let build = |entries: &[(&str, &str)]| {
        let mut cfg = config(dir.path(), "deepfm");
        for (field, table) in entries {
            cfg.embeddings
                .fields
                .insert(field.to_string(), toml::from_str(table).unwrap());
        }
        registry::build_model(&cfg, &schema, &train, &Device::Cpu)
            .err()
            .map(|e| format!("{e:#}"))
    };
    let cel = "kind = \"cel\"\nmax_clusters = 2\n";
    assert_eq!(build(&[("tags", cel), ("item_id", cel)]), None);
    let e = build(&[("price", cel)]).unwrap();
    assert!(e.contains("builds no table for `price`"), "{e}");
    let exact = "kind = \"cel\"\nmax_clusters = 2\nreassign = { kind = \"exact\" }\n";
    assert_eq!(build(&[("item_id", exact)]), None);
    let e = build(&[("tags", exact)]).unwrap();
    assert!(
        e.contains("fields.tags") && e.contains("exact CEL reassignment needs a categorical"),
        "{e}"
    );
    let e = build(&[("item_id", "kind = \"clustered\"\n")]).unwrap();
    assert!(
        e.contains("unknown table kind `clustered`") && e.contains("`cel`"),
        "{e}"
    );
    // A run that exists is rebuilt with such an entry, warned about, not refused: it was
    // accepted (and the entry ignored) when it started.
    let mut old = config(dir.path(), "deepfm");
    old.embeddings
        .fields
        .insert("price".into(), toml::from_str(cel).unwrap());
    registry::rebuild_model(&old, &schema, &train, &Device::Cpu).unwrap();
    // A field sharing another's vocabulary is served by the owner's table: the error says so.
    let mut shared = (*schema).clone();
    shared
        .fields
        .push(FieldSpec::categorical("prev_item", 9).sharing("item_id"));
    let shared = Arc::new(shared);
    let mut cfg = config(dir.path(), "deepfm");
    cfg.embeddings
        .fields
        .insert("prev_item".into(), toml::from_str(cel).unwrap());
    let e = registry::build_model(&cfg, &shared, &Batch::empty(shared.clone()), &Device::Cpu)
        .err()
        .map(|e| format!("{e:#}"))
        .unwrap();
    assert!(e.contains("uses the table of `item_id`"), "{e}");
}

#[test]
fn a_wrong_model_parameter_is_named_by_its_key() {
    let split = planted_split(3);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "deepfm");
    for (params, key) in [
        ("dim = \"wide\"", "key `dim`"),
        (
            "mlp = { hidden = [8], dropout = \"x\" }",
            "key `mlp.dropout`",
        ),
    ] {
        cfg.model.params = toml::from_str(params).unwrap();
        let e = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu)
            .err()
            .expect("refused");
        let e = format!("{e:#}");
        assert!(
            e.contains("invalid [model.params] for `deepfm`, ") && e.contains(key),
            "{e}"
        );
        // Made in code, the configuration has no file to point into.
        assert!(!e.contains("line"), "{e}");
    }
    // Read from a file, `[model.params]` and `[embeddings]` (read when the model is built)
    // are wrong at a file and line: at the key, else at the table that lacks it.
    let head = "[data]\ndataset = \"planted\"\nprotocol = \"none\"\n\n[model]\nname = \"deepfm\"\n";
    for (rest, want) in [
        (
            "\n[model.params]\ndim = 8\ndimm = 3\n",
            "key `dimm` (run.toml, line 10)",
        ),
        (
            "params = { dim = 8, mlp = { hidden = [8,\n \"a\"] } }\n",
            "key `mlp.hidden` (run.toml, line 7)",
        ),
        (
            "\n[embeddings.fields.item_id]\nkind = \"cel\"\n\nmax_clusterz = 3\n",
            "fields.item_id (run.toml, line 11): invalid table `cel`",
        ),
        (
            "\n[embeddings.fields.item_id]\nkind = \"hashed\"\nbuckets = 0\n",
            "fields.item_id (run.toml, line 10): invalid table `hashed`",
        ),
        (
            "\n[embeddings.fields.itme_id]\nkind = \"full\"\n",
            "[embeddings.fields.itme_id] (run.toml, line 8): the data has no field",
        ),
        (
            "\n[embeddings.default]\nkind = \"fancy\"\n",
            "default (run.toml, line 9): unknown table kind `fancy`",
        ),
    ] {
        let mut cfg = rec_trainer::Config::from_toml(&format!("{head}{rest}"), "run.toml").unwrap();
        cfg.output.dir = Some(dir.path().to_path_buf());
        let e = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu)
            .err()
            .expect("refused");
        let e = format!("{e:#}");
        assert!(e.contains(want), "{want:?} not in {e}");
    }
}

#[test]
fn a_resume_with_a_budget_below_what_was_trained_is_refused_and_writes_nothing() {
    let split = planted_split(8);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    let full = train(&cfg, &split, Start::Fresh);
    let saved = std::fs::read_to_string(dir.path().join("config.toml")).unwrap();
    let log = std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap();
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();

    let mut fewer = cfg.clone();
    fewer.train.epochs = 1;
    let e = fit(model.as_mut(), &split, &fewer, Start::Resume)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("train.epochs = 1") && e.contains("already trained 2 epochs"),
        "{e}"
    );
    let mut short = cfg.clone();
    short.train.max_steps = Some(full.steps - 1);
    let e = fit(model.as_mut(), &split, &short, Start::Resume)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains(&format!("already made {} steps", full.steps)),
        "{e}"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("config.toml")).unwrap(),
        saved,
        "a refused resume leaves the run's configuration as it was"
    );
    assert_eq!(
        std::fs::read_to_string(dir.path().join("log.jsonl")).unwrap(),
        log
    );
    // The budget it has already met: nothing left to train, the same test result.
    let again = train(&cfg, &split, Start::Resume);
    assert_eq!(again.steps, full.steps);
    assert_eq!(again.test, full.test);

    // A checkpoint inside epoch 2 (a step budget ended there) has trained into it: one epoch
    // is below that too.
    let mid = tempfile::tempdir().unwrap();
    let mut part = config(mid.path(), "fm");
    part.train.early_stopping = None;
    part.train.epochs = 2;
    part.train.max_steps = Some(full.steps / 2 + 3);
    train(&part, &split, Start::Fresh);
    let mut one = part.clone();
    one.train.max_steps = None;
    one.train.epochs = 1;
    let e = fit(model.as_mut(), &split, &one, Start::Resume)
        .unwrap_err()
        .to_string();
    assert!(e.contains("has already trained into epoch 2"), "{e}");
}

#[test]
fn a_misspelt_early_stopping_metric_is_refused_before_any_training() {
    let split = planted_split(9);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.checkpoint_every_steps = Some(1);
    cfg.train.early_stopping.as_mut().unwrap().metric = "aucc".into();
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let e = fit(model.as_mut(), &split, &cfg, Start::Fresh)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`aucc`") && e.contains("like"), "{e}");
    assert!(
        !dir.path().join("checkpoints").exists(),
        "no step was trained, so no checkpoint is written"
    );
}

#[test]
fn a_step_budget_inside_an_epoch_reports_the_state_it_tests() {
    let split = planted_split(10);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    let per_epoch = split.train.len().div_ceil(cfg.train.batch_size) as u64;
    cfg.train.max_steps = Some(per_epoch + 3);
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let out = fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap();
    assert_eq!((out.steps, out.history.len()), (per_epoch + 3, 1));
    // The model in memory is the one tested: its validation metrics are the reported ones,
    // not those of the end of epoch 1.
    let valid = rec_trainer::evaluate(model.as_mut(), &split.valid, 4096).unwrap();
    assert_eq!(out.valid, valid);
    assert_ne!(out.valid, out.history[0].valid);
    assert!(
        out.kept().contains(&format!("step {}", per_epoch + 3)),
        "{}",
        out.kept()
    );
    let report = std::fs::read_to_string(dir.path().join("report.md")).unwrap();
    assert!(report.contains("inside epoch 2"), "{report}");

    // With early stopping the best epoch's checkpoint is tested, and named.
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.epochs = 3;
    cfg.train.max_steps = Some(2 * per_epoch + 3);
    let out = train(&cfg, &split, Start::Fresh);
    assert_eq!(out.history.len(), 2);
    assert_eq!(out.kept(), format!("epoch {}", out.best_epoch));
    assert_eq!(out.valid, out.history[out.best_epoch as usize - 1].valid);
}

#[test]
fn non_finite_loss_stops_with_step_and_keeps_the_last_checkpoint() {
    // One poisoned label: the loss becomes NaN at the step whose batch holds it. (The data is
    // poisoned from the start: a resume on changed data would be refused before any step.)
    let mut split = planted_split(5);
    split.train.labels[0][100] = f32::INFINITY;
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.train.early_stopping = None;
    cfg.train.epochs = 2;
    cfg.train.checkpoint_every_steps = Some(1);
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let e = fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap_err();
    let msg = format!("{e:#}");
    let root = dir.path().join("checkpoints");
    let latest = rec_trainer::checkpoint::resolve_pointer(&root, "latest")
        .unwrap()
        .expect("the poisoned batch is not the first one of this seed");
    // The last good checkpoint is the step before the one named, and it loads.
    let saved: u64 = latest.file_name().unwrap().to_string_lossy()["step-".len()..]
        .parse()
        .unwrap();
    assert!(
        msg.contains(&format!(
            "training stopped at step {}, epoch 1, batch",
            saved + 1
        )),
        "{msg}"
    );
    assert!(rec_trainer::checkpoint::read(&latest, &Device::Cpu).is_ok());
}

#[test]
fn unknown_model_and_unknown_embedding_field_are_clear_errors() {
    let split = planted_split(6);
    let dir = tempfile::tempdir().unwrap();
    let cfg = config(dir.path(), "deepfmm");
    let e = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("unknown model `deepfmm`") && e.contains("deepfm"),
        "{e}"
    );
    let mut cfg = config(dir.path(), "fm");
    cfg.embeddings
        .fields
        .insert("itemid".into(), toml::Table::new());
    let e = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("itemid") && e.contains("item_id"), "{e}");
    let mut cfg = config(dir.path(), "fm");
    cfg.model
        .params
        .insert("dimm".into(), toml::Value::Integer(4));
    let e = format!(
        "{:#}",
        registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains("dimm"), "{e}");
}

#[test]
fn every_shipped_config_parses_and_names_a_registered_model() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let p = entry.unwrap().path();
        if p.extension().is_some_and(|e| e == "toml") {
            let cfg = Config::from_file(&p).unwrap_or_else(|e| panic!("{}: {e:#}", p.display()));
            assert!(
                registry::model_names().contains(&cfg.model.name.as_str()),
                "{}: unknown model {}",
                p.display(),
                cfg.model.name
            );
            registry::tables_config(&cfg).unwrap();
            n += 1;
        }
    }
    assert!(n >= 2, "no configs found in {}", dir.display());
}

fn with_cel(mut cfg: Config, mode: &str) -> Config {
    let t: toml::Table = toml::from_str(&format!(
        "kind = \"cel\"\nmax_clusters = 6\nsplit_every = 4\nreassign_every = 3\nmode = \"{mode}\"\nreservoir = 16\n"
    ))
    .unwrap();
    cfg.embeddings.fields.insert("item_id".into(), t.clone());
    cfg.embeddings.fields.insert("user_id".into(), t);
    cfg
}

#[test]
fn cel_tables_train_and_resume_exactly() {
    for mode in ["offline", "lite"] {
        let split = planted_split(7);
        let a = tempfile::tempdir().unwrap();
        let mut cfg = with_cel(config(a.path(), "deepfm"), mode);
        cfg.train.early_stopping = None;
        cfg.train.epochs = 2;
        let full = train(&cfg, &split, Start::Fresh);
        let model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
        let kinds: Vec<&str> = model.tables().iter().map(|(_, t)| t.kind()).collect();
        assert_eq!(kinds, ["cel", "cel", "cel", "cel"], "{mode}");

        let b = tempfile::tempdir().unwrap();
        let mut part = cfg.clone();
        part.output.dir = Some(b.path().to_path_buf());
        part.train.checkpoint_every_steps = Some(5);
        part.train.max_steps = Some(27);
        train(&part, &split, Start::Fresh);
        let mut rest = part.clone();
        rest.train.max_steps = None;
        let resumed = train(&rest, &split, Start::Resume);
        assert_eq!(resumed.steps, full.steps, "{mode}");
        assert_eq!(resumed.test, full.test, "{mode}");
        // The run reports the clusters its tables ended with, and bytes to match: one row per
        // cluster plus the assignment, well below a full table.
        let size = full.size.as_ref().unwrap();
        assert_eq!(resumed.size.as_ref(), Some(size), "{mode}");
        for t in &size.tables {
            let c = t.clusters.unwrap_or_else(|| panic!("{mode}: {t:?}"));
            assert!((2..=6).contains(&c), "{mode}: {t:?}");
            assert_eq!(t.params, c * t.dim, "{mode}: {t:?}");
            assert!(t.bytes < t.full_bytes, "{mode}: {t:?}");
        }
        assert!(
            size.summary().contains("smaller than full tables"),
            "{mode}"
        );
    }
    // A malformed CEL table is a clear error naming the field and key.
    let split = planted_split(8);
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "fm");
    cfg.embeddings.fields.insert(
        "item_id".into(),
        toml::from_str("kind = \"cel\"\nmax_clusterz = 3\n").unwrap(),
    );
    let e = format!(
        "{:#}",
        registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("fields.item_id") && e.contains("max_clusterz"),
        "{e}"
    );
}

#[test]
fn exact_cel_reassignment_runs_in_the_trainers_loop_and_resumes_exactly() {
    let split = planted_split(11);
    let a = tempfile::tempdir().unwrap();
    let mut cfg = config(a.path(), "deepfm");
    let t: toml::Table = toml::from_str(
        "kind = \"cel\"\nmax_clusters = 6\nsplit_every = 4\nreassign_every = 3\n\
         keep_prob = 0.0\nreassign = { kind = \"exact\", candidates = 3 }\n",
    )
    .unwrap();
    cfg.embeddings.fields.insert("item_id".into(), t.clone());
    cfg.embeddings.fields.insert("user_id".into(), t);
    cfg.train.early_stopping = None;
    cfg.train.epochs = 3;
    let mut model = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
    let full = fit(model.as_mut(), &split, &cfg, Start::Fresh).unwrap();
    // Exact reassignment moves entities only when a driver runs it: the loop did.
    let moves: u64 = model
        .tables()
        .iter()
        .filter_map(|(_, t)| {
            t.as_any()
                .downcast_ref::<embedding_cel::ClusteredEmbedding>()
        })
        .map(|c| c.moves())
        .sum();
    assert!(moves > 0, "no entity was reassigned");

    let b = tempfile::tempdir().unwrap();
    let mut part = cfg.clone();
    part.output.dir = Some(b.path().to_path_buf());
    part.train.checkpoint_every_steps = Some(5);
    part.train.max_steps = Some(22);
    train(&part, &split, Start::Fresh);
    let mut rest = part.clone();
    rest.train.max_steps = None;
    let resumed = train(&rest, &split, Start::Resume);
    assert_eq!(resumed.steps, full.steps);
    assert_eq!(resumed.test, full.test);
}

/// The shipped DUPN configuration trains through the trainer on the tiny synthetic preset
/// (every task evaluated), and the daily update warm-starts the next day from it.
#[test]
fn dupn_config_trains_and_warm_starts_the_next_day() {
    let path =
        std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../configs/dupn-synth-ecom.toml");
    let mut cfg = Config::from_file(&path).unwrap();
    cfg.data.options.insert("preset".into(), "tiny".into());
    cfg.data.options.insert("users".into(), 200.into());
    cfg.data.options.insert("days".into(), 4.into());
    cfg.train.epochs = 1;
    cfg.train.progress = false;
    let day1 = tempfile::tempdir().unwrap();
    cfg.output.dir = Some(day1.path().to_path_buf());
    let first = rec_trainer::run(&cfg, Start::Fresh).unwrap();
    assert!(first.steps > 0);
    // Every task is evaluated; CTR and FIFP have learned (measured 0.633 and 0.677), L2R is
    // evaluated but at chance on 200 users after one epoch (measured 0.470), so only its
    // presence is checked.
    let auc = |r: &rec_trainer::Outcome, task: &str| r.test.get_slice(task, "all", "auc").unwrap();
    for (task, floor) in [("ctr", 0.55), ("fifp", 0.6)] {
        let a = auc(&first, task);
        assert!(a > floor, "{task}: {a}");
    }
    assert!(auc(&first, "l2r").is_finite());

    let mut next = cfg.clone();
    next.data.options.insert("days".into(), 5.into());
    let day2 = tempfile::tempdir().unwrap();
    next.output.dir = Some(day2.path().to_path_buf());
    let ckpt = rec_trainer::checkpoint::resolve_pointer(&day1.path().join("checkpoints"), "latest")
        .unwrap()
        .unwrap();
    let second = rec_trainer::run(&next, Start::WarmStart(ckpt.clone())).unwrap();
    // Starting from yesterday's model, the first epoch's loss is below yesterday's first.
    let (a, b) = (first.history[0].train_loss, second.history[0].train_loss);
    assert!(b.is_finite() && b < a, "warm start {b} vs fresh {a}");

    // The daily update proper: fine-tune on the new day only (day 3 of 0..=4; day 4 is
    // the test day). Far fewer steps than retraining on every day, and still a warm start.
    let mut new_day = next.clone();
    new_day
        .data
        .options
        .insert("train_from_day".into(), 3.into());
    let day2b = tempfile::tempdir().unwrap();
    new_day.output.dir = Some(day2b.path().to_path_buf());
    let third = rec_trainer::run(&new_day, Start::WarmStart(ckpt)).unwrap();
    assert!(
        third.steps > 0 && third.steps * 2 < second.steps,
        "new day only: {} steps vs {} on every day",
        third.steps,
        second.steps
    );
    let c = third.history[0].train_loss;
    assert!(
        c.is_finite() && c < a,
        "new-day warm start {c} vs fresh {a}"
    );
    // Evaluated on the same test day as the full retraining (the CTR head, the strongest on
    // this tiny data, is clearly better than chance after one day of fine-tuning).
    let ctr = third.test.get_slice("ctr", "all", "auc").unwrap();
    assert!(ctr.is_finite() && ctr > 0.55, "ctr: {ctr}");
    let fifp = auc(&third, "fifp");
    assert!(fifp > 0.58, "fifp: {fifp}"); // measured 0.647
    assert!(auc(&third, "l2r").is_finite());

    // A day that leaves nothing to train on, or the option on another protocol: clear errors.
    let mut bad = next.clone();
    bad.data.options.insert("train_from_day".into(), 4.into());
    let err = format!("{:#}", rec_trainer::run(&bad, Start::Fresh).unwrap_err());
    assert!(
        err.contains("train_from_day = 4 leaves no training day"),
        "{err}"
    );
}

/// SAML's scenario tables can get their own kind through `[embeddings.fields."{field}@scenario"]`
/// (the name the scenario embedding builds them under); other models refuse such a name.
#[test]
fn saml_scenario_tables_take_their_own_kind() {
    let schema = Arc::new(Schema {
        fields: vec![
            FieldSpec::categorical("user_id", 11),
            FieldSpec::categorical("item_id", 9),
            FieldSpec::categorical("country", 3),
        ],
        tasks: vec![TaskSpec::new("like", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: Some("country".into()),
        num_scenarios: 3,
    });
    let n = 12u32;
    let train = Batch {
        schema: schema.clone(),
        columns: vec![
            Column::Ids((0..n).map(|k| k % 10 + 1).collect()),
            Column::Ids((0..n).map(|k| k % 8 + 1).collect()),
            Column::Ids((0..n).map(|k| k % 3).collect()),
        ],
        labels: vec![(0..n).map(|k| (k % 2) as f32).collect()],
        weights: None,
        slices: Vec::new(),
    };
    let dir = tempfile::tempdir().unwrap();
    let mut cfg = config(dir.path(), "saml");
    cfg.embeddings.fields.insert(
        "item_id@scenario".into(),
        toml::from_str("kind = \"hashed\"\nrows = 5\n").unwrap(),
    );
    let model = registry::build_model(&cfg, &schema, &train, &Device::Cpu).unwrap();
    let kinds: BTreeMap<String, &str> = model
        .tables()
        .into_iter()
        .map(|(name, t)| (name, t.kind()))
        .collect();
    assert_eq!(kinds.get("scen.item_id"), Some(&"hashed"), "{kinds:?}");
    assert_eq!(kinds.get("scen.user_id"), Some(&"full"), "{kinds:?}");
    // A scenario table of a field the data lack, or for a model without scenario tables, is
    // a clear error.
    let mut bad = cfg.clone();
    bad.embeddings.fields.clear();
    bad.embeddings.fields.insert(
        "price@scenario".into(),
        toml::from_str("kind = \"full\"\n").unwrap(),
    );
    let e = format!(
        "{:#}",
        registry::build_model(&bad, &schema, &train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("price@scenario") && e.contains("no field `price`"),
        "{e}"
    );
    // An entry for a table the model never builds (a scenario table of the scenario field
    // itself) would be ignored: refused, naming it.
    let name = "country@scenario";
    let mut unused = cfg.clone();
    unused.embeddings.fields.clear();
    unused
        .embeddings
        .fields
        .insert(name.into(), toml::from_str("kind = \"full\"\n").unwrap());
    let e = format!(
        "{:#}",
        registry::build_model(&unused, &schema, &train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains(&format!("builds no table for `{name}`")), "{e}");
    // Exact CEL reassignment needs a column of the table's own: a scenario table has none.
    let mut exact = cfg.clone();
    exact.embeddings.fields.clear();
    exact.embeddings.fields.insert(
        "item_id@scenario".into(),
        toml::from_str("kind = \"cel\"\nmax_clusters = 2\nreassign = { kind = \"exact\" }\n")
            .unwrap(),
    );
    let e = format!(
        "{:#}",
        registry::build_model(&exact, &schema, &train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(
        e.contains("exact CEL reassignment") && e.contains("item_id@scenario"),
        "{e}"
    );
    // A field that shares another's vocabulary uses the owner's scenario table.
    let mut shared_vocab = (*schema).clone();
    shared_vocab
        .fields
        .push(FieldSpec::categorical("prev_item", 9).sharing("item_id"));
    let mut via = cfg.clone();
    via.embeddings.fields.clear();
    via.embeddings.fields.insert(
        "prev_item@scenario".into(),
        toml::from_str("kind = \"full\"\n").unwrap(),
    );
    let e = format!(
        "{:#}",
        registry::build_model(&via, &shared_vocab, &train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains("\"item_id@scenario\""), "{e}");
    let mut other = cfg.clone();
    other.model.name = "shared".into();
    let e = format!(
        "{:#}",
        registry::build_model(&other, &schema, &train, &Device::Cpu)
            .err()
            .unwrap()
    );
    assert!(e.contains("only model `saml`"), "{e}");
}

#[test]
fn data_section_errors_name_the_file_and_line() {
    for (text, want) in [
        (
            "[data]\ndataset = \"synthetic\"\nprotocol = \"ctr\"\n\n[data.options]\nusers = 100\nhist = 5\n\n[model]\nname = \"fm\"\n",
            "run.toml, line 7: [data.options] has unknown key `hist`",
        ),
        (
            "[data]\ndataset = \"synthetic\"\nprotocol = \"ctr\"\noptions = { users = -1 }\n\n[model]\nname = \"fm\"\n",
            "run.toml, line 4: [data.options] users must be a non-negative integer",
        ),
        (
            "[model]\nname = \"fm\"\n\n[data]\ndataset = \"synthetic\"\nprotocol = \"seq\"\n",
            "run.toml, line 6: [data] protocol `seq` is unknown",
        ),
        (
            "[data]\ndataset = \"ml-100k\"\n[data.options]\npath = \"x.csv\"\n[model]\nname = \"fm\"\n",
            "run.toml, line 4: [data.options] has unknown key `path`",
        ),
    ] {
        let cfg = rec_trainer::Config::from_toml(text, "run.toml").unwrap();
        let e = format!(
            "{:#}",
            rec_trainer::data::load_split_for(&cfg, None).err().unwrap()
        );
        assert!(e.starts_with(want), "{want:?} not at the start of {e}");
        // Made in code, the same configuration names no file.
        let mut bare = cfg.clone();
        bare.origin = Default::default();
        let e = format!(
            "{:#}",
            rec_trainer::data::load_split_for(&bare, None)
                .err()
                .unwrap()
        );
        assert!(e.starts_with("[data"), "{e}");
    }
}

#[test]
fn fit_refuses_a_model_the_configuration_does_not_name() {
    let split = planted_split(4);
    let dir = tempfile::tempdir().unwrap();
    let built = config(dir.path(), "fm");
    let mut model =
        registry::build_model(&built, &split.schema, &split.train, &Device::Cpu).unwrap();
    // The run would record `deepfm`, and a restore would rebuild a DeepFM for an FM's state.
    let cfg = config(dir.path(), "deepfm");
    let e = fit(model.as_mut(), &split, &cfg, Start::Fresh)
        .unwrap_err()
        .to_string();
    assert!(e.contains("`fm`") && e.contains("`deepfm`"), "{e}");
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "nothing written"
    );
    // Every registered model's name is its registry name, so a built model always fits.
    // (Those this data can build: the rating, scenario and sequence models need other data.)
    let mut checked = Vec::new();
    for name in registry::model_names() {
        let cfg = config(dir.path(), name);
        if let Ok(m) = registry::build_model(&cfg, &split.schema, &split.train, &Device::Cpu) {
            assert_eq!(m.name(), name);
            checked.push(name);
        }
    }
    assert!(
        checked.contains(&"widedeep") && checked.len() >= 4,
        "{checked:?}"
    );
}
