//! The training loop: steps, evaluation, early stopping, checkpoints, resume, logs.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, bail};
use candle_core::DType;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, BatchIter, Split, Vocabs, mix_seed};
use rec_nn::{Ctx, Model, TensorMap};
use serde::{Deserialize, Serialize};

use crate::checkpoint;
use crate::config::Config;
use crate::eval::{Evaluation, evaluate};
use rec_nn::optim::DenseOptimizer;

/// How a run starts.
#[derive(Debug, Clone, Default)]
pub enum Start {
    /// From freshly initialised parameters (the default).
    #[default]
    Fresh,
    /// Continue the interrupted run in the run directory from its `latest` checkpoint, exactly
    /// where it stopped (epoch, batch, optimizer and RNG state).
    Resume,
    /// Start a new schedule from the parameters and optimizer state of a checkpoint (e.g.
    /// yesterday's model fine-tuned on today's data).
    WarmStart(PathBuf),
}

/// What one epoch (or the final test) produced; written as one JSON line to `log.jsonl`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRecord {
    /// Epoch number, from 1.
    pub epoch: u64,
    /// Optimizer steps so far.
    pub step: u64,
    /// Mean training loss over the epoch's steps.
    pub train_loss: f64,
    /// Validation metrics at the end of the epoch.
    pub valid: Evaluation,
    /// Value of the early-stopping metric, if configured.
    pub watched: Option<f64>,
    /// Training throughput over the epoch (samples per second; not compared across resumes).
    pub samples_per_sec: f64,
}

/// Everything the loop needs to continue exactly where it stopped.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LoopState {
    step: u64,
    /// Epochs fully completed.
    epoch: u64,
    /// Batches completed inside the current epoch.
    batch_in_epoch: u64,
    /// Sum and count of losses in the current epoch so far.
    epoch_loss_sum: f64,
    epoch_loss_count: u64,
    rng: ChaCha8Rng,
    best: Option<Best>,
    bad_epochs: usize,
    history: Vec<EpochRecord>,
    /// The checkpoint a warm-started run started from (kept through resumes).
    #[serde(default)]
    warm_start: Option<PathBuf>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Best {
    value: f64,
    epoch: u64,
    checkpoint: String,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Outcome {
    /// Run directory (checkpoints, log, report).
    pub run_dir: PathBuf,
    /// Test metrics of the kept checkpoint (best validation, or last without early stopping).
    pub test: Evaluation,
    /// Validation metrics of the kept checkpoint.
    pub valid: Evaluation,
    /// Per-epoch records.
    pub history: Vec<EpochRecord>,
    /// Epoch of the kept checkpoint.
    pub best_epoch: u64,
    /// Optimizer steps taken.
    pub steps: u64,
    /// True when early stopping ended the run.
    pub stopped_early: bool,
    /// Wall-clock seconds spent in training steps (evaluation excluded).
    pub train_seconds: f64,
    /// Training samples processed per second.
    pub samples_per_sec: f64,
    /// The checkpoint the run was warm-started from (`--resume CHECKPOINT`), if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warm_start: Option<PathBuf>,
    /// What the kept model costs to serve, table by table (absent in results written before
    /// it was recorded).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<crate::size::ModelSize>,
}

impl Outcome {
    /// The training speed of this process in words: `1234 samples/s`, or, for a resumed run
    /// that had already ended (its budget spent, or stopped early), that no step was trained.
    pub fn speed(&self) -> String {
        if self.train_seconds > 0.0 {
            format!("{:.0} samples/s", self.samples_per_sec)
        } else if self.stopped_early {
            "no step trained (the run had stopped early; a larger train.early_stopping.patience continues it)".into()
        } else {
            "no step left to train (the budget was already spent; raise train.epochs or train.max_steps to continue)".into()
        }
    }

    /// What was kept and tested, in words: `epoch 3`, or, where a step budget ended the run
    /// inside an epoch without early stopping, `the state at step 130 (inside epoch 2)`.
    pub fn kept(&self) -> String {
        let last_epoch_step = self.history.last().map_or(0, |r| r.step);
        // With early stopping the best epoch's checkpoint is what was tested.
        let early_stopping = self.history.iter().any(|r| r.watched.is_some());
        if !early_stopping
            && !self.stopped_early
            && self.best_epoch as usize == self.history.len()
            && last_epoch_step != self.steps
        {
            format!(
                "the state at step {} (inside epoch {}, where the step budget ended)",
                self.steps,
                self.best_epoch + 1
            )
        } else {
            format!("epoch {}", self.best_epoch)
        }
    }
}

/// Every tensor of the model and (when given) of the dense optimizer, with their metadata.
pub fn training_state(
    model: &dyn Model,
    opt: Option<&DenseOptimizer>,
) -> Result<(TensorMap, serde_json::Value)> {
    let (mut tensors, meta) = rec_nn::io::model_state(model)?;
    let opt_meta = match opt {
        Some(o) => o.save_state("optim/", &mut tensors)?,
        None => serde_json::Value::Null,
    };
    Ok((
        tensors,
        serde_json::json!({ "model": meta, "optimizer": opt_meta }),
    ))
}

/// Restores what [`training_state`] saved: the model, and the optimizer when given.
pub fn load_training_state(
    model: &mut dyn Model,
    opt: Option<&mut DenseOptimizer>,
    tensors: &TensorMap,
    meta: &serde_json::Value,
) -> Result<()> {
    let model_tensors: TensorMap = tensors
        .iter()
        .filter(|(k, _)| !k.starts_with("optim/"))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    rec_nn::io::load_model_state(model, &model_tensors, &meta["model"])?;
    if let Some(o) = opt {
        o.load_state("optim/", tensors, &meta["optimizer"])?;
    }
    Ok(())
}

/// Trains `model` on `split` as `cfg` says, writing checkpoints, `log.jsonl` and the report into
/// the run directory, and returns the test metrics of the kept checkpoint.
///
/// A resumed run must have the configuration it was started with, except for the keys in
/// [`RESUME_MAY_CHANGE`] (how long it trains, how it checkpoints and shows progress): anything
/// else is refused with the differing keys named, since it would silently continue another
/// run (another split, another batch order) than the one that was interrupted.
pub fn fit(model: &mut dyn Model, split: &Split, cfg: &Config, start: Start) -> Result<Outcome> {
    // The run directory records `[model] name`, and a restore rebuilds that model: another
    // model's checkpoints could never be restored.
    let name = model.name();
    if name != cfg.model.name && !model.former_names().contains(&cfg.model.name.as_str()) {
        bail!(
            "the model given to fit is `{name}`, but the configuration's [model] name is `{}`: \
             set it to `{name}` (its registry name), so that the run's checkpoints can be \
             restored",
            cfg.model.name
        );
    }
    let run_dir = cfg.run_dir();
    let ckpt_root = run_dir.join("checkpoints");
    let resume_from = match &start {
        Start::Resume => Some(resume_point(cfg)?),
        _ => None,
    };
    let vocabs = carried_vocabs(split, cfg);
    let vocabs_json = vocabs.as_ref().map(serde_json::to_value).transpose()?;
    let data = data_fingerprint(split);
    let fields = field_kinds(&split.schema);
    if let Some(dir) = &resume_from {
        // Checked before anything in the run directory is touched: a refused resume writes
        // nothing.
        let state = checkpoint::read_state(dir)?;
        check_vocabs(&state, vocabs.as_ref(), dir)?;
        check_data(&state, &data, dir)?;
    }
    let mut opt = DenseOptimizer::new(cfg.optimizer.dense, model.dense_vars())?;
    if let Start::WarmStart(dir) = &start {
        // Also before the run directory is touched: a refused warm start leaves no directory.
        let (tensors, state) = checkpoint::read(dir, model.device())?;
        check_vocabs(&state, vocabs.as_ref(), dir)?;
        check_fields(&state, &fields, dir)?;
        load_training_state(model, Some(&mut opt), &tensors, &state["state"])
            .with_context(|| format!("warm start from {}", dir.display()))?;
        tracing::info!(checkpoint = %dir.display(), "warm start");
    }
    let writer = CheckpointWriter::new(&ckpt_root, cfg, vocabs_json, data, fields)?;
    // One process at a time: two trainings into one directory would overwrite each other's
    // checkpoints and interleave the log. Released when `fit` returns, also on an error.
    std::fs::create_dir_all(&run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    let _lock = lock_run(&run_dir)?;
    prepare_run_dir(&run_dir, &start)?;
    for p in checkpoint::remove_partial(&ckpt_root)? {
        tracing::info!(dir = %p.display(), "removed an interrupted checkpoint write");
    }
    check_space(&run_dir, free_bytes(&run_dir), parameter_bytes(model))?;
    checkpoint::write_atomic(&run_dir.join("config.toml"), cfg.to_toml()?.as_bytes())
        .with_context(|| format!("cannot write into {}", run_dir.display()))?;

    let mut st = LoopState {
        step: 0,
        epoch: 0,
        batch_in_epoch: 0,
        epoch_loss_sum: 0.0,
        epoch_loss_count: 0,
        rng: ChaCha8Rng::seed_from_u64(mix_seed(cfg.data.seed, 0xD409)),
        best: None,
        bad_epochs: 0,
        history: Vec::new(),
        warm_start: match &start {
            Start::WarmStart(dir) => Some(dir.clone()),
            _ => None,
        },
    };
    match &start {
        Start::Fresh => {}
        Start::Resume => {
            let dir = resume_from.expect("resolved above");
            let (tensors, state) = checkpoint::read(&dir, model.device())?;
            load_training_state(model, Some(&mut opt), &tensors, &state["state"])?;
            st = serde_json::from_value(state["loop"].clone())
                .with_context(|| format!("{} has an unreadable loop state", dir.display()))?;
            // A run killed between moving `latest` and `best` left `best` at the previous best
            // checkpoint, which is no longer protected from pruning: point it where the loop
            // state says.
            if let Some(b) = &st.best
                && ckpt_root.join(&b.checkpoint).is_dir()
            {
                checkpoint::set_pointer(&ckpt_root, "best", &b.checkpoint)?;
            }
            // The log holds exactly the epochs of the checkpoint: lines written after it by
            // the interrupted process are dropped (they will be written again).
            let mut text = String::new();
            for r in &st.history {
                text.push_str(&serde_json::to_string(r)?);
                text.push('\n');
            }
            checkpoint::write_atomic(&run_dir.join("log.jsonl"), text.as_bytes())?;
            tracing::info!(checkpoint = %dir.display(), step = st.step, epoch = st.epoch, "resuming");
        }
        // Loaded above.
        Start::WarmStart(_) => {}
    }

    let bs = cfg.train.batch_size;
    let negatives = crate::data::next_item_sampling(split);
    let negative_stream = mix_seed(cfg.data.seed, 0x4E47);
    let n_train = split.train.len();
    anyhow::ensure!(n_train > 0, "the training split is empty");
    let batches_per_epoch = n_train.div_ceil(bs) as u64;
    let es = cfg.train.early_stopping.clone();
    let mut train_seconds = 0.0;
    let mut samples_done = 0u64;
    // A run resumed from the checkpoint of the epoch that triggered early stopping (killed
    // before it wrote its results) has nothing left to train: it goes straight to the test,
    // as the uninterrupted run did.
    let mut stopped_early = matches!(start, Start::Resume)
        && st.batch_in_epoch == 0
        && es.as_ref().is_some_and(|e| st.bad_epochs >= e.patience);
    if es.is_some() && !matches!(start, Start::Resume) {
        // A misspelt metric or task is refused now, not after the first epoch's training
        // (evaluation changes nothing in the model).
        let valid = evaluate(model, &split.valid, cfg.train.eval_batch_size)
            .context("evaluating the validation split before training")?;
        watched_value(es.as_ref(), model, &valid)?;
    }
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(run_dir.join("log.jsonl"))
        .with_context(|| format!("cannot open {}", run_dir.join("log.jsonl").display()))?;

    'epochs: while !stopped_early && (st.epoch as usize) < cfg.train.epochs {
        let epoch = st.epoch;
        let bar = progress_bar(
            cfg.train.progress,
            batches_per_epoch,
            epoch + 1,
            cfg.train.epochs,
        );
        bar.set_position(st.batch_in_epoch);
        let epoch_start = Instant::now();
        let mut epoch_samples = 0u64;
        let iter = BatchIter::new(&split.train, bs, cfg.data.seed, epoch, true)
            .skip_batches(st.batch_in_epoch as usize);
        for batch in iter {
            if cfg.train.max_steps.is_some_and(|m| st.step >= m) {
                break;
            }
            let t0 = Instant::now();
            let rows = batch.len() as u64;
            // P-SEQ's next-item rows are all positive: each step adds one sampled unrated
            // item per row, drawn from the step number, so a resumed run draws the same.
            let batch = match &negatives {
                Some(s) => s.add(&batch, mix_seed(negative_stream, st.step))?,
                None => batch,
            };
            let loss = train_step(model, &mut opt, &batch, &mut st)?;
            // CEL tables with `reassign = { kind = "exact" }` ask for it after some steps
            // (nothing happens otherwise).
            // A fixed chunk, not `eval_batch_size` (which a resume may change): the chunking
            // must not change which cluster wins.
            embedding_cel::exact::reassign_due(model, &split.train, EXACT_CEL_CHUNK)
                .with_context(|| format!("exact CEL reassignment after step {}", st.step))?;
            train_seconds += t0.elapsed().as_secs_f64();
            // The data's rows, not the added negatives.
            samples_done += rows;
            epoch_samples += rows;
            st.epoch_loss_sum += loss as f64;
            st.epoch_loss_count += 1;
            st.batch_in_epoch += 1;
            bar.inc(1);
            if st.step.is_multiple_of(10) {
                let sps = epoch_samples as f64 / epoch_start.elapsed().as_secs_f64().max(1e-9);
                bar.set_message(format!(
                    "loss {:.4}  {:.0} samples/s",
                    st.epoch_loss_sum / st.epoch_loss_count as f64,
                    sps
                ));
            }
            if let Some(every) = cfg.train.checkpoint_every_steps
                && st.step.is_multiple_of(every)
                && st.batch_in_epoch < batches_per_epoch
            {
                writer.save(model, &opt, &st)?;
                prune_checkpoints(&ckpt_root, cfg.train.keep_checkpoints, &st)?;
            }
        }
        bar.finish_and_clear();
        if st.batch_in_epoch < batches_per_epoch {
            // The step budget ran out inside the epoch: save the position and stop; a resumed
            // run finishes the epoch.
            writer.save(model, &opt, &st)?;
            break 'epochs;
        }
        let epoch_secs = epoch_start.elapsed().as_secs_f64();

        // End of an epoch (or of the step budget): evaluate, log, checkpoint.
        let valid =
            evaluate(model, &split.valid, cfg.train.eval_batch_size).with_context(|| {
                format!("evaluating the validation split after epoch {}", epoch + 1)
            })?;
        let watched = watched_value(es.as_ref(), model, &valid)?;
        let record = EpochRecord {
            epoch: epoch + 1,
            step: st.step,
            train_loss: st.epoch_loss_sum / st.epoch_loss_count.max(1) as f64,
            valid: valid.clone(),
            watched,
            samples_per_sec: epoch_samples as f64 / epoch_secs.max(1e-9),
        };
        tracing::info!(
            epoch = record.epoch,
            step = record.step,
            train_loss = record.train_loss,
            watched = ?record.watched,
            "epoch done"
        );
        writeln!(log, "{}", serde_json::to_string(&record)?)
            .with_context(|| format!("cannot write {}", run_dir.join("log.jsonl").display()))?;
        st.history.push(record);
        st.epoch += 1;
        st.batch_in_epoch = 0;
        st.epoch_loss_sum = 0.0;
        st.epoch_loss_count = 0;

        let improved = match (&es, watched, &st.best) {
            (Some(_), Some(_), None) => true,
            (Some(e), Some(v), Some(b)) => {
                if e.maximize() {
                    v > b.value
                } else {
                    v < b.value
                }
            }
            _ => false,
        };
        if improved {
            st.bad_epochs = 0;
        } else if es.is_some() {
            st.bad_epochs += 1;
        }
        let name = checkpoint::step_name(st.step);
        if improved {
            st.best = Some(Best {
                value: watched.unwrap_or(f64::NAN),
                epoch: st.epoch,
                checkpoint: name.clone(),
            });
        }
        writer.save(model, &opt, &st)?;
        if improved {
            checkpoint::set_pointer(&ckpt_root, "best", &name)?;
        }
        prune_checkpoints(&ckpt_root, cfg.train.keep_checkpoints, &st)?;

        if let Some(e) = &es
            && st.bad_epochs >= e.patience
        {
            stopped_early = true;
            tracing::info!(epoch = st.epoch, "early stopping");
            break;
        }
    }

    // Keep the best checkpoint (or the last one without early stopping) and test it.
    let best_epoch = match &st.best {
        Some(b) => {
            let (tensors, state) =
                checkpoint::read(&ckpt_root.join(&b.checkpoint), model.device())?;
            load_training_state(model, None, &tensors, &state["state"])?;
            b.epoch
        }
        None => st.epoch,
    };
    let valid = match st.history.get(best_epoch.saturating_sub(1) as usize) {
        // Without a best checkpoint, a step budget that ended inside an epoch leaves the model
        // past the last epoch's validation: evaluate what is tested.
        Some(r) if st.best.is_some() || st.batch_in_epoch == 0 => r.valid.clone(),
        _ => evaluate(model, &split.valid, cfg.train.eval_batch_size)
            .context("evaluating the validation split of the kept checkpoint")?,
    };
    let test = evaluate(model, &split.test, cfg.train.eval_batch_size)
        .context("evaluating the test split of the kept checkpoint")?;
    let outcome = Outcome {
        run_dir: run_dir.clone(),
        test,
        valid,
        history: st.history.clone(),
        best_epoch,
        steps: st.step,
        stopped_early,
        train_seconds,
        samples_per_sec: samples_done as f64 / train_seconds.max(1e-9),
        warm_start: st.warm_start.clone(),
        size: Some(crate::size::ModelSize::of(model)),
    };
    checkpoint::write_atomic(
        &run_dir.join("results.json"),
        serde_json::to_string_pretty(&outcome)?.as_bytes(),
    )?;
    crate::report::write(&run_dir, cfg, &outcome)?;
    Ok(outcome)
}

/// One optimizer step, checked: the same sequence as [`rec_nn::model::train_step`] (forward,
/// loss, backward, the dense optimizer, each table's sparse update, `end_step`, `after_step`),
/// with three guards that stop the run at the step where something stops being finite:
///
/// 1. the loss (before any update): the message names the task output, label, weight or dense
///    feature of the batch that is not finite, else the parameter that already is;
/// 2. every gradient (before any update): a dense parameter is named; for the gradient of an
///    embedding table's rows, the table is found (its rows are updated with that gradient and
///    every table is scanned, which costs a full pass but happens only on this failure);
/// 3. every dense parameter after the update (e.g. an overflow with finite gradients).
///
/// Each error names the step, epoch and batch; nothing is saved after it, so the last good
/// checkpoint on disk is untouched. The model in memory may hold the failed step's values:
/// reload a checkpoint before using it again.
fn train_step(
    model: &mut dyn Model,
    opt: &mut DenseOptimizer,
    batch: &Batch,
    st: &mut LoopState,
) -> Result<f32> {
    let rng = std::mem::replace(&mut st.rng, ChaCha8Rng::seed_from_u64(0));
    let mut ctx = Ctx::new(true, st.step, rng);
    let result = checked_step(model, opt, batch, &mut ctx);
    st.rng = ctx.rng;
    match result {
        Ok(v) => {
            st.step = ctx.step;
            Ok(v)
        }
        Err(e) => bail!(
            "training stopped at step {}, epoch {}, batch {}: {e:#}. The last good checkpoint is untouched.",
            st.step + 1,
            st.epoch + 1,
            st.batch_in_epoch + 1
        ),
    }
}

fn checked_step(
    model: &mut dyn Model,
    opt: &mut DenseOptimizer,
    batch: &Batch,
    ctx: &mut Ctx,
) -> Result<f32> {
    ctx.train = true;
    let forward = (|| -> Result<(f32, candle_core::Tensor)> {
        let out = model.forward(batch, ctx)?;
        let loss = model.loss(batch, &out)?;
        let value = loss.to_dtype(DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            let culprit = non_finite_input(model, batch, &out)?;
            bail!("the loss is {value}{culprit}");
        }
        Ok((value, loss))
    })();
    let (value, loss) = match forward {
        Ok(v) => v,
        Err(e) => {
            clear_pending(model);
            return Err(e);
        }
    };
    let grads = match loss.backward() {
        Ok(g) => g,
        Err(e) => {
            clear_pending(model);
            return Err(e.into());
        }
    };
    // Gradients of dense parameters, then of anything else (the tables' per-batch leaves).
    let dense = model.dense_vars();
    let mut dense_ids = std::collections::HashSet::new();
    for (name, var) in &dense {
        dense_ids.insert(var.as_tensor().id());
        if let Some(g) = grads.get(var.as_tensor())
            && !all_finite(g)?
        {
            clear_pending(model);
            bail!("the gradient of parameter `{name}` is not finite (the loss was {value})");
        }
    }
    // The other gradients: the tables' per-batch leaves, but also constants (e.g. the masking
    // operand of a `where_cond`), which may be NaN where a whole row is masked and which no
    // update reads. Only a variable of the graph counts; the graph is walked to tell them apart
    // only when a non-finite gradient turns up, so the common step pays nothing for it.
    let mut bad = std::collections::HashSet::new();
    for id in grads.get_ids() {
        if !dense_ids.contains(id)
            && let Some(g) = grads.get_id(*id)
            && !all_finite(g)?
        {
            bad.insert(*id);
        }
    }
    let table_grad_ok = bad.is_empty()
        || !loss
            .sorted_nodes()
            .into_iter()
            .any(|t| t.is_variable() && bad.contains(&t.id()));
    if !table_grad_ok {
        // Find the table: apply the (bad) sparse updates, then scan every table.
        for (_, t) in model.tables_mut() {
            t.apply_gradients(&grads)?;
        }
        let which =
            non_finite_parameter(model)?.unwrap_or_else(|| "an embedding table".to_string());
        bail!(
            "the gradient of the rows of {which} looked up by this batch is not finite (the loss was {value})"
        );
    }
    opt.step(&grads)?;
    for (_, t) in model.tables_mut() {
        t.apply_gradients(&grads)?;
    }
    ctx.step += 1;
    for (_, t) in model.tables_mut() {
        t.end_step(ctx.step)?;
    }
    model.after_step(ctx.step)?;
    for (name, var) in model.dense_vars() {
        if !all_finite(var.as_tensor())? {
            bail!("parameter `{name}` is not finite after the update (the loss was {value})");
        }
    }
    Ok(value)
}

fn clear_pending(model: &mut dyn Model) {
    for (_, t) in model.tables_mut() {
        t.clear_pending();
    }
}

/// Why a loss is not finite, as far as the batch and the outputs tell: the first task output,
/// label, weight or dense feature value that is not finite, else the first parameter that is.
fn non_finite_input(
    model: &dyn Model,
    batch: &Batch,
    outputs: &[candle_core::Tensor],
) -> Result<String> {
    let schema = model.schema();
    let task = |t: usize| schema.tasks.get(t).map_or("?", |t| t.name.as_str());
    // A NaN label marks a missing label of a multi-task batch (the loss skips it): only an
    // infinite one is a culprit.
    for (t, labels) in batch.labels.iter().enumerate() {
        if let Some(r) = labels.iter().position(|x| x.is_infinite()) {
            return Ok(format!(
                "; the label of task `{}` at row {r} of the batch is {}",
                task(t),
                labels[r]
            ));
        }
    }
    if let Some(w) = &batch.weights
        && let Some(r) = w.iter().position(|x| !x.is_finite())
    {
        return Ok(format!(
            "; the sample weight at row {r} of the batch is {}",
            w[r]
        ));
    }
    for (f, c) in batch.schema.fields.iter().zip(&batch.columns) {
        if let rec_data::Column::Dense { values, dim } = c
            && let Some(k) = values.iter().position(|x| !x.is_finite())
        {
            return Ok(format!(
                "; the dense feature `{}` at row {} of the batch is {}",
                f.name,
                k / (*dim).max(1),
                values[k]
            ));
        }
    }
    if let Some(p) = non_finite_parameter(model)? {
        return Ok(format!("; parameter `{p}` holds non-finite values"));
    }
    for (t, out) in outputs.iter().enumerate() {
        if !all_finite(out)? {
            return Ok(format!(
                "; the output of task `{}` is not finite (finite inputs and parameters)",
                task(t)
            ));
        }
    }
    Ok(String::new())
}

/// True when no value of `t` is NaN or infinite. `x * 0` is 0 for every finite `x` and NaN for
/// NaN and the infinities, so the sum is 0 exactly when all values are finite (and cannot
/// overflow, unlike a plain sum). Integer tensors are always finite.
pub fn all_finite(t: &candle_core::Tensor) -> Result<bool> {
    if !t.dtype().is_float() {
        return Ok(true);
    }
    let s = t
        .affine(0.0, 0.0)?
        .sum_all()?
        .to_dtype(DType::F32)?
        .to_scalar::<f32>()?;
    Ok(s == 0.0)
}

/// The name of the first dense variable or embedding table holding a non-finite value.
fn non_finite_parameter(model: &dyn Model) -> Result<Option<String>> {
    for (name, var) in model.dense_vars() {
        if !all_finite(var.as_tensor())? {
            return Ok(Some(name));
        }
    }
    for (name, table) in model.tables() {
        let mut m = TensorMap::new();
        table.save("", &mut m)?;
        let mut keys: Vec<&String> = m.keys().collect();
        keys.sort();
        for k in keys {
            if !all_finite(&m[k])? {
                return Ok(Some(format!("table `{name}` (tensor `{k}`)")));
            }
        }
    }
    Ok(None)
}

/// The vocabularies a checkpoint of this run carries: the `csv` data set's, which are built
/// from the file and would otherwise be rebuilt, with other indices, from the next file a
/// warm start trains on. The other data sets' vocabularies are fixed by data set and seed.
pub fn carried_vocabs(split: &Split, cfg: &Config) -> Option<Vocabs> {
    (cfg.data.dataset == "csv").then(|| Vocabs {
        fields: split.vocabs.clone(),
        scenarios: split.scenario_names.clone(),
    })
}

/// The vocabularies saved in the checkpoint `dir` (see [`carried_vocabs`]), if it has any.
/// Reads and verifies the checkpoint's state only, not its tensors.
pub fn checkpoint_vocabs(dir: &Path) -> Result<Option<Vocabs>> {
    state_vocabs(&checkpoint::read_state(dir)?, dir)
}

/// The vocabularies to encode `cfg`'s data with when starting from (or evaluating) the
/// checkpoint `dir` whose state is `state`: its saved ones for a `csv` run, else none. A csv
/// run's checkpoint without them (an older checkpoint, or one of another data set) gets a
/// warning: the file's IDs are then indexed afresh, which matches the checkpoint's rows only
/// if the file is the one it was trained on.
pub fn vocabs_for(cfg: &Config, state: &serde_json::Value, dir: &Path) -> Result<Option<Vocabs>> {
    if cfg.data.dataset != "csv" {
        return Ok(None);
    }
    let v = state_vocabs(state, dir)?;
    if v.is_none() {
        tracing::warn!(
            checkpoint = %dir.display(),
            "the checkpoint carries no vocabularies (an older checkpoint, or not of a csv run): \
             the file's IDs are indexed afresh and match the checkpoint's rows only if the file \
             is the one it was trained on"
        );
    }
    Ok(v)
}

/// The vocabularies in a checkpoint's `state` (read from `dir`), if it has any.
pub fn state_vocabs(state: &serde_json::Value, dir: &Path) -> Result<Option<Vocabs>> {
    match state.get("vocabs") {
        None | Some(serde_json::Value::Null) => Ok(None),
        Some(v) => Vocabs::deserialize(v)
            .map(Some)
            .with_context(|| format!("{} has unreadable vocabularies", dir.display())),
    }
}

/// A fingerprint of the samples of a split: SHA-256 over the three parts' columns, labels,
/// weights and evaluation slices, and the item table ranking scores candidates with, in order.
/// Two splits with the same fingerprint feed a model the same batches, so a resumed run
/// continues the very run that was interrupted (a data file that changed under the same
/// configuration changes it: the random split reshuffles every row when one is added). P-SEQ's
/// ranking cases and user attributes are derived from the same MovieLens files and not hashed.
pub fn data_fingerprint(split: &Split) -> String {
    use sha2::{Digest, Sha256};
    /// Feeds little-endian words to the hash through a buffer (one `update` per word costs
    /// more than the hashing itself).
    struct Words {
        h: Sha256,
        buf: Vec<u8>,
    }
    impl Words {
        fn tag(&mut self, t: &[u8], n: usize) {
            self.buf.extend_from_slice(t);
            self.buf.extend_from_slice(&(n as u64).to_le_bytes());
        }
        fn words(&mut self, it: impl Iterator<Item = [u8; 4]>) {
            for w in it {
                self.buf.extend_from_slice(&w);
                if self.buf.len() >= 1 << 16 {
                    self.h.update(&self.buf);
                    self.buf.clear();
                }
            }
        }
        fn column(&mut self, c: &rec_data::Column) {
            match c {
                rec_data::Column::Ids(v) => {
                    self.tag(b"i", v.len());
                    self.words(v.iter().map(|x| x.to_le_bytes()));
                }
                rec_data::Column::Ragged { values, offsets } => {
                    self.tag(b"r", values.len());
                    self.words(values.iter().map(|x| x.to_le_bytes()));
                    self.tag(b"o", offsets.len());
                    self.words(offsets.iter().map(|x| x.to_le_bytes()));
                }
                rec_data::Column::Dense { values, dim } => {
                    self.tag(b"d", *dim);
                    self.tag(b"n", values.len());
                    self.words(values.iter().map(|x| x.to_bits().to_le_bytes()));
                }
            }
        }
        fn floats(&mut self, t: &[u8], v: &[f32]) {
            self.tag(t, v.len());
            self.words(v.iter().map(|x| x.to_bits().to_le_bytes()));
        }
    }
    let mut w = Words {
        h: Sha256::new(),
        buf: Vec::with_capacity((1 << 16) + 64),
    };
    for part in [&split.train, &split.valid, &split.test] {
        w.tag(b"part", part.len());
        part.columns.iter().for_each(|c| w.column(c));
        part.labels.iter().for_each(|l| w.floats(b"l", l));
        if let Some(weights) = &part.weights {
            w.floats(b"w", weights);
        }
        for s in &part.slices {
            w.tag(s.name.as_bytes(), s.mask.len());
            w.words(s.mask.iter().map(|&m| [m as u8, 0, 0, 0]));
        }
    }
    if let Some(items) = &split.items {
        for (name, c) in items.fields.iter().zip(&items.columns) {
            w.tag(name.as_bytes(), c.len());
            w.column(c);
        }
    }
    let Words { mut h, buf } = w;
    h.update(&buf);
    checkpoint::hex(&h.finalize())
}

/// Refuses a checkpoint whose data fingerprint (see [`data_fingerprint`]) differs from
/// `data`'s: resuming it would continue another run, and evaluating it would test on samples
/// that may have been its training samples. A checkpoint without one (older) is not checked.
pub fn check_data(state: &serde_json::Value, data: &str, dir: &Path) -> Result<()> {
    match state.get("data").and_then(|v| v.as_str()) {
        Some(saved) if saved != data => bail!(
            "{} was trained on other data than its configuration now gives (a data file \
             changed, or its generator or the protocol's sampling did, with a new version): \
             the split and the batch order differ, so it \
             cannot be resumed or evaluated as that run; to train on the new data, start a new \
             run from it (`cargo xtask train --config CONFIG --resume CHECKPOINT --out \
             NEW_RUN`)",
            dir.display()
        ),
        _ => Ok(()),
    }
}

/// Refuses to continue from a checkpoint whose vocabularies differ from the split's: the
/// split's raw IDs would then meet rows trained for other IDs. (`run` encodes the data with the
/// checkpoint's vocabularies; a caller of `fit` must do the same, with
/// [`crate::data::load_split_with`].) A checkpoint without vocabularies is not checked.
fn check_vocabs(state: &serde_json::Value, split: Option<&Vocabs>, dir: &Path) -> Result<()> {
    let (Some(saved), Some(split)) = (state_vocabs(state, dir)?, split) else {
        return Ok(());
    };
    if saved.scenarios != split.scenarios {
        bail!(
            "{} was trained with other scenarios than this data's; encode the data with the checkpoint's vocabularies (rec_trainer::data::load_split_with)",
            dir.display()
        );
    }
    for (field, v) in &saved.fields {
        if split.fields.get(field) != Some(v) {
            bail!(
                "{} was trained with another vocabulary of field `{field}` than this data's; encode the data with the checkpoint's vocabularies (rec_trainer::data::load_split_with)",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Each input field's kind (`categorical`, `multi_hot`, ...), by name: saved with every
/// checkpoint, so that a warm start on data whose columns changed role is refused.
fn field_kinds(schema: &rec_data::Schema) -> serde_json::Value {
    schema
        .fields
        .iter()
        .map(|f| Ok((f.name.clone(), serde_json::to_value(f.kind)?)))
        .collect::<serde_json::Result<serde_json::Map<_, _>>>()
        .map_or(serde_json::Value::Null, serde_json::Value::Object)
}

/// Refuses to continue from a checkpoint in which a field of the data had another kind (a
/// column that was multi-hot read as categorical, say): its table would meet IDs of another
/// meaning (every `a|b` bag an unknown token). A checkpoint without the kinds (older) is not
/// checked.
fn check_fields(state: &serde_json::Value, fields: &serde_json::Value, dir: &Path) -> Result<()> {
    let (Some(saved), Some(now)) = (
        state.get("fields").and_then(|v| v.as_object()),
        fields.as_object(),
    ) else {
        return Ok(());
    };
    for (name, kind) in saved {
        if let Some(k) = now.get(name)
            && k != kind
        {
            bail!(
                "{} was trained with field `{name}` as {kind}, and this data has it as {k}: \
                 the column's role (or a dense column's width) changed since, in the data's \
                 schema, so its values mean something else; give the column its former role, \
                 or train a new run from scratch",
                dir.display()
            );
        }
    }
    Ok(())
}

/// Writes the run's checkpoints under `root`: what does not change during a run (the
/// configuration, the vocabularies, the data fingerprint, the fields' kinds) is prepared once.
struct CheckpointWriter<'a> {
    root: &'a Path,
    fixed: serde_json::Map<String, serde_json::Value>,
}

impl<'a> CheckpointWriter<'a> {
    fn new(
        root: &'a Path,
        cfg: &Config,
        vocabs: Option<serde_json::Value>,
        data: String,
        fields: serde_json::Value,
    ) -> Result<Self> {
        let mut fixed = serde_json::Map::new();
        fixed.insert("config".into(), cfg.to_toml()?.into());
        if let Some(v) = vocabs {
            fixed.insert("vocabs".into(), v);
        }
        fixed.insert("data".into(), data.into());
        fixed.insert("fields".into(), fields);
        Ok(Self { root, fixed })
    }

    fn save(&self, model: &dyn Model, opt: &DenseOptimizer, st: &LoopState) -> Result<()> {
        let (tensors, meta) = training_state(model, Some(opt))?;
        let mut state = self.fixed.clone();
        state.insert("state".into(), meta);
        state.insert("loop".into(), serde_json::to_value(st)?);
        write_checkpoint(self.root, st.step, &tensors, &state.into())
    }
}

fn write_checkpoint(
    root: &Path,
    step: u64,
    tensors: &TensorMap,
    state: &serde_json::Value,
) -> Result<()> {
    let name = checkpoint::step_name(step);
    let dir = root.join(&name);
    if dir.exists() {
        if checkpoint::resolve_pointer(root, "latest")?.as_deref() == Some(dir.as_path()) {
            // This step is the latest checkpoint already (a step-budget end right after a
            // periodic save, or a resumed run whose budget is spent): no step was taken
            // since it was written, so it holds this very state. Rewriting it would mean
            // deleting the directory `latest` (and maybe `best`) names first.
            return Ok(());
        }
        // A directory no pointer names: written by a run killed before it moved `latest`.
        std::fs::remove_dir_all(&dir)
            .with_context(|| format!("cannot remove {}", dir.display()))?;
    }
    checkpoint::write(root, &name, tensors, state)?;
    checkpoint::set_pointer(root, "latest", &name)
}

/// The validation value early stopping watches (`None` without early stopping): its metric of
/// its task, by default the schema's first task (not the first by name).
fn watched_value(
    es: Option<&crate::config::EarlyStopping>,
    model: &dyn Model,
    valid: &Evaluation,
) -> Result<Option<f64>> {
    let Some(e) = es else { return Ok(None) };
    let task = match &e.task {
        Some(t) => t.clone(),
        None => model
            .schema()
            .tasks
            .first()
            .map(|t| t.name.clone())
            .context("early stopping: the schema has no task")?,
    };
    let value = valid.get(Some(&task), &e.metric).with_context(|| {
        let tasks: Vec<&str> = valid.tasks.keys().map(String::as_str).collect();
        format!(
            "early stopping watches `{}` of task `{task}`, which the validation report does \
             not contain (tasks with a report: {}; a task without labelled validation samples \
             has none)",
            e.metric,
            tasks.join(", ")
        )
    })?;
    Ok(Some(value))
}

/// The lock file in a run directory naming the process training into it.
pub const RUN_LOCK: &str = ".lock";

/// Takes the run lock of the existing directory `run_dir` ([`RUN_LOCK`]), or fails naming the
/// process that holds it: what [`fit`] does before it writes anything, and what anyone who
/// clears or replaces a run directory should do first.
pub fn lock_run(run_dir: &Path) -> Result<crate::lock::ProcessLock> {
    let lock_path = run_dir.join(RUN_LOCK);
    crate::lock::ProcessLock::take(&lock_path)?.with_context(|| {
        format!(
            "{} is in use: process {} is training into it (it holds the lock on {})",
            run_dir.display(),
            crate::lock::holder_name(&lock_path),
            lock_path.display()
        )
    })
}

/// Samples per forward pass of the exact CEL reassignment the loop runs.
const EXACT_CEL_CHUNK: usize = 16384;

/// Keys of the configuration a resumed run may change: how long it trains (epochs, step
/// budget, early-stopping patience), how it checkpoints, evaluates in batches and shows
/// progress, and how its directory is spelled.
pub const RESUME_MAY_CHANGE: [&str; 8] = [
    "train.epochs",
    "train.max_steps",
    "train.early_stopping.patience",
    "train.checkpoint_every_steps",
    "train.keep_checkpoints",
    "train.eval_batch_size",
    "train.progress",
    "output.dir",
];

/// The checkpoint `Start::Resume` continues from: the run directory's `latest`, after checking
/// that the run was started with `cfg` (up to [`RESUME_MAY_CHANGE`]). Reads only the
/// checkpoint's state file, so a caller can check before loading any data.
pub fn resume_point(cfg: &Config) -> Result<PathBuf> {
    resume_point_with(cfg, true)
}

/// [`resume_point`], saying (with `warn`) when it falls back to the newest complete checkpoint;
/// [`crate::run`] checks quietly before loading the data, and [`fit`] says it once.
pub(crate) fn resume_point_with(cfg: &Config, warn: bool) -> Result<PathBuf> {
    let ckpt_root = cfg.run_dir().join("checkpoints");
    let dir = match checkpoint::resolve_pointer(&ckpt_root, "latest")? {
        Some(dir) => dir,
        // A run killed after its first checkpoint was in place but before `latest` was
        // written: its newest complete checkpoint is where it stopped.
        None => {
            let found = checkpoint::newest_complete(&ckpt_root).with_context(|| {
                format!(
                    "nothing to resume: {} has no checkpoint (start the run without --resume)",
                    ckpt_root.display()
                )
            })?;
            if warn {
                tracing::warn!(
                    checkpoint = %found.display(),
                    "no `latest` pointer: resuming from the newest complete checkpoint"
                );
            }
            found
        }
    };
    let state = checkpoint::read_state(&dir)?;
    // A budget below what the checkpoint has already trained cannot be met: refused before the
    // run directory is touched (its config.toml would otherwise record the smaller budget).
    // An epoch begun counts: a checkpoint inside epoch 2 has trained into it.
    let begun = state["loop"]["batch_in_epoch"].as_u64().unwrap_or(0) > 0;
    let done_epochs = state["loop"]["epoch"].as_u64().unwrap_or(0) + u64::from(begun);
    let done_steps = state["loop"]["step"].as_u64().unwrap_or(0);
    if done_epochs > cfg.train.epochs as u64 {
        let trained = if begun {
            format!("has already trained into epoch {done_epochs}")
        } else {
            format!("has already trained {done_epochs} epochs")
        };
        bail!(
            "cannot resume {} with train.epochs = {}: its checkpoint {} {trained}; give \
             --epochs {} or more to train on (`cargo xtask eval --checkpoint {}` evaluates it \
             as it is)",
            cfg.run_dir().display(),
            cfg.train.epochs,
            dir.display(),
            done_epochs,
            cfg.run_dir().display()
        );
    }
    if let Some(m) = cfg.train.max_steps
        && done_steps > m
    {
        bail!(
            "cannot resume {} with train.max_steps = {m}: its checkpoint {} has already made {} \
             steps; set train.max_steps to {} or more, or remove it",
            cfg.run_dir().display(),
            dir.display(),
            done_steps,
            done_steps
        );
    }
    let Some(text) = state["config"].as_str() else {
        bail!("{} has no configuration in its state", dir.display());
    };
    let saved = match Config::from_saved_toml(text, &dir.display().to_string()) {
        Ok(c) => c,
        Err(e) => {
            // An older checkpoint whose configuration this version no longer reads.
            tracing::warn!(checkpoint = %dir.display(), "cannot compare configurations: {e:#}");
            return Ok(dir);
        }
    };
    let table = |c: &Config| -> Result<toml::Table> { Ok(toml::from_str(&c.to_toml()?)?) };
    let mut changed = Vec::new();
    config_changes(&table(&saved)?, &table(cfg)?, "", &mut changed);
    changed.retain(|(key, _)| !RESUME_MAY_CHANGE.contains(&key.as_str()));
    if !changed.is_empty() {
        let list: Vec<String> = changed.iter().map(|(k, d)| format!("{k} ({d})")).collect();
        bail!(
            "cannot resume {}: it was started with another configuration: {}; resume it with its \
             own settings (`cargo xtask train --out {} --resume` reads its config.toml) or start \
             a new run in another directory",
            cfg.run_dir().display(),
            list.join(", "),
            cfg.run_dir().display()
        );
    }
    Ok(dir)
}

/// The dotted keys whose values differ between two configurations, each with both values.
fn config_changes(
    saved: &toml::Table,
    now: &toml::Table,
    prefix: &str,
    out: &mut Vec<(String, String)>,
) {
    let keys: std::collections::BTreeSet<&String> = saved.keys().chain(now.keys()).collect();
    for k in keys {
        let key = format!("{prefix}{k}");
        match (saved.get(k), now.get(k)) {
            (Some(toml::Value::Table(a)), Some(toml::Value::Table(b))) => {
                config_changes(a, b, &format!("{key}."), out)
            }
            (a, b) if a != b => {
                let show =
                    |v: Option<&toml::Value>| v.map_or("unset".to_string(), |v| v.to_string());
                out.push((key, format!("{} in the run, {} now", show(a), show(b))));
            }
            _ => {}
        }
    }
}

/// Keeps the `keep` newest checkpoints, the best one and the latest (after every save, so
/// that periodic checkpoints inside an epoch do not pile up either).
fn prune_checkpoints(ckpt_root: &Path, keep: usize, st: &LoopState) -> Result<()> {
    let protect: Vec<PathBuf> = st
        .best
        .iter()
        .map(|b| ckpt_root.join(&b.checkpoint))
        .collect();
    checkpoint::prune(ckpt_root, keep.max(1), &protect)
}

/// Refuses a fresh or warm-started run in a directory that already holds checkpoints (a
/// `latest` pointer, or any `step-*` checkpoint: a new run's pruning would otherwise count
/// an old run's higher steps as newer than its own).
pub(crate) fn check_unused(run_dir: &Path, start: &Start) -> Result<()> {
    let ckpt = run_dir.join("checkpoints");
    if matches!(start, Start::Resume)
        || (!ckpt.join("latest").exists() && checkpoint::step_dirs(&ckpt)?.is_empty())
    {
        return Ok(());
    }
    if matches!(start, Start::WarmStart(_)) {
        bail!(
            "{} already holds a run; a run started from a checkpoint is a new run: choose \
             another output directory (--out; output.dir in code)",
            run_dir.display()
        );
    }
    bail!(
        "{} already holds a run; pass --resume to continue it (Start::Resume in code), or \
         choose another output directory (--out; output.dir in code)",
        run_dir.display()
    );
}

/// Creates the run directory and checks it is writable before any training starts. A fresh
/// or warm-started run refuses a directory that already holds checkpoints.
fn prepare_run_dir(run_dir: &Path, start: &Start) -> Result<()> {
    let resume = matches!(start, Start::Resume);
    std::fs::create_dir_all(run_dir)
        .with_context(|| format!("cannot create run directory {}", run_dir.display()))?;
    let probe = run_dir.join(".write-test");
    if let Err(e) = std::fs::write(&probe, vec![0u8; 1 << 20]) {
        // A partly written probe would keep the disk full.
        let _ = std::fs::remove_file(&probe);
        return Err(e).with_context(|| {
            format!(
                "run directory {} is not writable or the disk is full",
                run_dir.display()
            )
        });
    }
    std::fs::remove_file(&probe)?;
    check_unused(run_dir, start)?;
    if !resume {
        let _ = std::fs::remove_file(run_dir.join("log.jsonl"));
    }
    Ok(())
}

/// Bytes of the model's parameters: dense variables, buffers and tables (without optimizer
/// state). A checkpoint is at least this large.
pub fn parameter_bytes(model: &dyn Model) -> u64 {
    crate::size::ModelSize::of(model).total_bytes() as u64
}

/// Refuses to start when the file system of `run_dir` has less free space (`free`, if known)
/// than two checkpoints' worth of parameters (`param_bytes`): the one being written next to the
/// one kept. A run that passes may still fill the disk later (more checkpoints kept, optimizer
/// state, reports); a checkpoint write that fails stops the run with the error and leaves the
/// previous checkpoint intact.
pub fn check_space(run_dir: &Path, free: Option<u64>, param_bytes: u64) -> Result<()> {
    let need = param_bytes.saturating_mul(2);
    match free {
        Some(free) if free < need => bail!(
            "not enough free disk space for {}: {} MB free, but two checkpoints of this model need at least {} MB; free some space or choose another output directory",
            run_dir.display(),
            free / 1_000_000,
            need.div_ceil(1_000_000)
        ),
        _ => Ok(()),
    }
}

/// Free bytes for an unprivileged user on the file system holding `dir`, if the platform says.
#[cfg(unix)]
pub fn free_bytes(dir: &Path) -> Option<u64> {
    use std::os::unix::ffi::OsStrExt;
    let path = std::ffi::CString::new(dir.as_os_str().as_bytes()).ok()?;
    let mut out = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `path` is a valid NUL-terminated C string that outlives the call, and `out`
    // points to writable memory of the type statvfs(3) fills. Its contents are read only when
    // the call reports success (0), in which case statvfs has initialised the whole struct.
    let rc = unsafe { libc::statvfs(path.as_ptr(), out.as_mut_ptr()) };
    if rc != 0 {
        return None;
    }
    // SAFETY: initialised by the successful call above.
    let s = unsafe { out.assume_init() };
    #[allow(clippy::unnecessary_cast)] // the field types differ between platforms
    Some((s.f_bavail as u64).saturating_mul(s.f_frsize as u64))
}

/// Free bytes on the file system holding `dir`: unknown on this platform.
#[cfg(not(unix))]
pub fn free_bytes(_dir: &Path) -> Option<u64> {
    None
}

fn progress_bar(enabled: bool, len: u64, epoch: u64, epochs: usize) -> ProgressBar {
    if !enabled {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::with_draw_target(Some(len), ProgressDrawTarget::stderr());
    bar.set_style(
        ProgressStyle::with_template(&format!(
            "epoch {epoch}/{epochs} [{{bar:30}}] {{pos}}/{{len}} {{msg}} ({{elapsed}}<{{eta}})"
        ))
        .expect("valid progress template")
        .progress_chars("=> "),
    );
    bar
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh run refuses a directory holding checkpoints, with or without a `latest`
    /// pointer (stray `step-*` checkpoints of an earlier run would outnumber its own when
    /// pruning); a resume is judged by what it finds to resume.
    #[test]
    fn a_new_run_refuses_a_directory_with_checkpoints() {
        let dir = tempfile::tempdir().unwrap();
        let run = dir.path();
        check_unused(run, &Start::Fresh).unwrap();
        let stray = run.join("checkpoints").join(checkpoint::step_name(120));
        std::fs::create_dir_all(&stray).unwrap();
        let e = check_unused(run, &Start::Fresh).unwrap_err().to_string();
        assert!(e.contains("already holds a run"), "{e}");
        check_unused(run, &Start::Resume).unwrap();
        std::fs::remove_dir_all(&stray).unwrap();
        check_unused(run, &Start::Fresh).unwrap();
        checkpoint::set_pointer(&run.join("checkpoints"), "latest", "step-000000000001").unwrap();
        let e = check_unused(run, &Start::Fresh).unwrap_err().to_string();
        assert!(e.contains("already holds a run"), "{e}");
    }
}
