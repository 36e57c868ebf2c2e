//! Online learning with CEL-Lite: [`Online::observe`] takes one batch of fresh interactions
//! and updates the model incrementally (vectors, assignments, splits); [`Online::predict`]
//! serves. IDs never seen before are handled by the tables' unknown-ID rules (a CEL-Lite table
//! adds them to cluster 0, from where reassignment moves them).

use candle_core::Result;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_data::Batch;
use rec_nn::model::{Ctx, Model, predict, train_step};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};

/// A model with its dense optimizer and step counter, updated one batch at a time.
pub struct Online {
    model: Box<dyn Model>,
    opt: DenseOptimizer,
    ctx: Ctx,
}

impl Online {
    /// Wraps `model`; dense parameters are updated with `dense`, tables with their own
    /// row-wise optimizers. `seed` drives dropout.
    pub fn new(model: Box<dyn Model>, dense: OptimizerConfig, seed: u64) -> Result<Self> {
        let opt = DenseOptimizer::new(dense, model.dense_vars())?;
        Ok(Self {
            model,
            opt,
            ctx: Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(seed)),
        })
    }

    /// One incremental update from `batch`; returns its training loss.
    pub fn observe(&mut self, batch: &Batch) -> Result<f32> {
        train_step(self.model.as_mut(), &mut self.opt, batch, &mut self.ctx)
    }

    /// Predictions for `batch` (probabilities for binary tasks, values for regression).
    pub fn predict(&mut self, batch: &Batch) -> Result<Vec<Vec<f32>>> {
        predict(self.model.as_mut(), batch)
    }

    /// Steps taken so far.
    pub fn steps(&self) -> u64 {
        self.ctx.step
    }

    /// Continues the step count at `step` (the steps the wrapped model was trained for, e.g.
    /// restored from a checkpoint), so the tables' split, placement and reassignment
    /// schedules go on where they were instead of restarting at 0.
    pub fn starting_at(mut self, step: u64) -> Self {
        self.ctx.step = step;
        self
    }

    /// The model.
    pub fn model(&self) -> &dyn Model {
        self.model.as_ref()
    }

    /// The model, mutable.
    pub fn model_mut(&mut self) -> &mut dyn Model {
        self.model.as_mut()
    }
}
