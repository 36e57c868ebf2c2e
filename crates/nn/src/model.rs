//! The `Model` trait: the only thing the trainer knows about a model.

use candle_core::{Device, Result, Tensor, Var};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Schema};

use crate::embedding::EmbeddingTable;

/// Per-call context of a forward pass.
pub struct Ctx {
    /// Training mode: dropout active, table lookups differentiable.
    pub train: bool,
    /// Global training step (number of optimizer updates so far).
    pub step: u64,
    /// Seeded source of randomness for dropout and sampling. Part of the checkpoint.
    pub rng: ChaCha8Rng,
}

impl Ctx {
    /// A context for training (`train == true`) or evaluation.
    pub fn new(train: bool, step: u64, rng: ChaCha8Rng) -> Self {
        Self { train, step, rng }
    }

    /// An evaluation context (no randomness is used in evaluation).
    pub fn eval() -> Self {
        use rand::SeedableRng;
        Self::new(false, 0, ChaCha8Rng::seed_from_u64(0))
    }
}

/// A recommender model: per-task outputs for a batch, its loss, and its parameters.
///
/// Dense parameters are candle [`Var`]s updated by a dense optimizer; embedding tables update
/// themselves sparsely (see [`EmbeddingTable`]).
pub trait Model: Send {
    /// Name shown in logs and reports, e.g. `deepfm`.
    fn name(&self) -> String;

    /// The schema the model was built for (its tasks define the outputs).
    fn schema(&self) -> &Schema;

    /// Device of the dense parameters.
    fn device(&self) -> &Device;

    /// One output per schema task, in schema order: `[n]` logits for binary tasks, `[n]`
    /// predictions for regression tasks, `[n, classes]` logits for multi-class tasks.
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>>;

    /// The training loss for `outputs` of `forward` on `batch`: by default the sum of the task
    /// losses (see [`crate::loss::task_loss`]) plus [`regularization`](Self::regularization).
    fn loss(&mut self, batch: &Batch, outputs: &[Tensor]) -> Result<Tensor> {
        let total = crate::loss::task_loss(self.schema(), batch, outputs)?;
        match self.regularization()? {
            Some(r) => total + r,
            None => Ok(total),
        }
    }

    /// Extra loss terms of the model (e.g. L2 on the tensors of this step). Default none.
    fn regularization(&mut self) -> Result<Option<Tensor>> {
        Ok(None)
    }

    /// Dense trainable variables, with stable names, sorted by name.
    fn dense_vars(&self) -> Vec<(String, Var)>;

    /// Non-trainable tensors that are part of the model's state (e.g. BatchNorm running
    /// statistics), with stable names, sorted by name. Saved with the model, never optimized.
    /// Default none.
    fn buffers(&self) -> Vec<(String, Var)> {
        Vec::new()
    }

    /// The embedding tables, with stable names, sorted by name.
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)>;

    /// The embedding tables, mutable, in the same order as [`tables`](Self::tables).
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)>;

    /// Number of trainable floats: the dense variables and the tables' parameters.
    fn num_params(&self) -> usize {
        self.dense_vars()
            .iter()
            .map(|(_, v)| v.elem_count())
            .sum::<usize>()
            + self
                .tables()
                .iter()
                .map(|(_, t)| t.num_params())
                .sum::<usize>()
    }

    /// Called after every optimizer step (e.g. NMF clips its factors here). Default nothing.
    fn after_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// Names this model was saved under before it got its current one: checkpoints saved
    /// under them still load. Default none.
    fn former_names(&self) -> &[&str] {
        &[]
    }

    /// Called after saved state replaced the model's parameters ([`crate::io::load_model_state`],
    /// and loaders of parts of a model such as DUPN's transfer). Default nothing; DUPN renews
    /// the tag of its user encodings here, as after every training step.
    fn after_load(&mut self) -> Result<()> {
        Ok(())
    }

    /// The model as [`std::any::Any`], for code that needs its concrete type: a DUPN restored
    /// from a checkpoint as `Box<dyn Model>` downcast to `user_dupn::Dupn` to serve it, a SAML
    /// model to read its affinity. `None` (the default) for models that do not offer it.
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        None
    }
}

/// One training step: forward in training mode, [`Model::loss`], backward, the dense
/// optimizer's step, every table's sparse update and [`EmbeddingTable::end_step`], then
/// [`Model::after_step`]. Increments `ctx.step` and returns the loss.
///
/// It guards the loss only: a non-finite loss is an error before any update. A finite loss
/// with non-finite gradients updates the parameters with them; `rec_trainer`'s loop also
/// checks every gradient before the updates and every dense parameter after them, and a program of
/// its own that needs that guard does the same. On any error, pending table lookups are
/// dropped so the next step starts clean (after a failed update the model may hold part of
/// the step: reload a checkpoint).
pub fn train_step(
    model: &mut dyn Model,
    opt: &mut crate::optim::DenseOptimizer,
    batch: &Batch,
    ctx: &mut Ctx,
) -> Result<f32> {
    ctx.train = true;
    let grads = (|| {
        let out = model.forward(batch, ctx)?;
        let loss = model.loss(batch, &out)?;
        let value = loss.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        if !value.is_finite() {
            candle_core::bail!("the loss is {value} at step {}", ctx.step);
        }
        Ok((loss.backward()?, value))
    })();
    let (grads, value) = match grads {
        Ok(g) => g,
        Err(e) => {
            for (_, t) in model.tables_mut() {
                t.clear_pending();
            }
            return Err(e);
        }
    };
    let updated = (|| {
        opt.step(&grads)?;
        for (_, t) in model.tables_mut() {
            t.apply_gradients(&grads)?;
        }
        Ok(())
    })();
    if let Err(e) = updated {
        for (_, t) in model.tables_mut() {
            t.clear_pending();
        }
        return Err(e);
    }
    ctx.step += 1;
    for (_, t) in model.tables_mut() {
        t.end_step(ctx.step)?;
    }
    model.after_step(ctx.step)?;
    Ok(value)
}

/// [`predict`] on `rows` samples at a time, the outputs concatenated: the same values (a
/// model's evaluation output for a sample does not depend on the other samples of its batch),
/// in memory bounded by the chunk instead of the whole batch. Use it for large evaluation
/// sets: candle keeps every intermediate tensor of a forward pass that reads the model's
/// variables alive until its output is dropped, so one pass over 10^5 samples through a
/// sequence encoder can take tens of GB.
pub fn predict_in_chunks(
    model: &mut dyn Model,
    batch: &Batch,
    rows: usize,
) -> Result<Vec<Vec<f32>>> {
    if rows == 0 {
        candle_core::bail!("predict_in_chunks: chunks of 0 rows");
    }
    let n = batch.len();
    if n <= rows {
        return predict(model, batch);
    }
    let mut out: Vec<Vec<f32>> = Vec::new();
    for start in (0..n).step_by(rows) {
        let part = predict(model, &batch.range(start, (start + rows).min(n)))?;
        if out.is_empty() {
            out = part;
        } else {
            for (acc, p) in out.iter_mut().zip(part) {
                acc.extend(p);
            }
        }
    }
    Ok(out)
}

/// Predictions of `model` on `batch`, one vector per schema task: probabilities (sigmoid) for
/// binary tasks, values for regression tasks, and for multi-class tasks the softmax rows,
/// flattened (`n * classes` values, sample after sample). One forward pass over the whole
/// batch; see [`predict_in_chunks`] for large ones.
pub fn predict(model: &mut dyn Model, batch: &Batch) -> Result<Vec<Vec<f32>>> {
    use rec_data::TaskKind;
    let kinds: Vec<TaskKind> = model.schema().tasks.iter().map(|t| t.kind).collect();
    let outs = model.forward(batch, &mut Ctx::eval())?;
    if outs.len() != kinds.len() {
        candle_core::bail!(
            "model returned {} outputs for {} tasks",
            outs.len(),
            kinds.len()
        );
    }
    kinds
        .iter()
        .zip(outs)
        .map(|(k, o)| {
            let o = o.to_dtype(candle_core::DType::F32)?;
            match k {
                TaskKind::Binary => candle_nn::ops::sigmoid(&o)?.flatten_all()?.to_vec1::<f32>(),
                TaskKind::Regression => o.flatten_all()?.to_vec1::<f32>(),
                TaskKind::Multiclass { .. } => crate::layers::softmax(&o, 1)?
                    .flatten_all()?
                    .to_vec1::<f32>(),
            }
        })
        .collect()
}
