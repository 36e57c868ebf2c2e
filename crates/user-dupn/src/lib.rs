//! Deep User Perception Network (DUPN; Ni, Ou, Liu et al., "Perceive Your Users in Depth:
//! Learning Universal User Representations from Multiple E-commerce Tasks", KDD 2018) and its
//! baselines, on the shared candle layer of `rec-nn`.
//!
//! A user's behaviour sequence, each behaviour an item and a property (type, scenario, time),
//! goes through a [property-gated LSTM](gated_lstm) and an [attention net](attention) into one
//! user representation that several task heads share (CTR, L2R, price preference, fashion-icon
//! following); the representation transfers to new tasks ([`transfer`]), the model is updated
//! incrementally (warm start from yesterday's checkpoint), and serving encodes the user once and
//! scores thousands of candidates with the shallow heads ([`serving`]).
//!
//! - [`Dupn`]: the model (a [`rec_nn::Model`]); [`DupnConfig`] its hyperparameters, including
//!   the ablations (`property`: all, lstm, attention, none) and the baseline encoders
//!   (`encoder`: mean pooling, standard LSTM; and `lstm_attention` \[ours\], a standard LSTM
//!   under DUPN's attention net, which separates the paper's gating from its attention).
//! - [`TaskWideDeep`]: Wide & Deep with one output per task, multi-class tasks included (the
//!   per-task baseline of the paper's Table 2).
//! - [`loss::weighted_pointwise_logistic`]: the L2R loss.
//!
//! # Daily incremental updating
//!
//! The paper trains on days 1..D and then, every day, fine-tunes yesterday's model on the new
//! day's data instead of retraining from scratch. With the trainer (model `dupn` in
//! `[model] name`, hyperparameters in `[model.params]` = [`DupnConfig`]):
//!
//! ```text
//! # day D: train from scratch (configs/dupn-synth-ecom.toml: synthetic P-ECOM, the last
//! # day for testing and the days before it for training) and keep the run directory
//! cargo xtask train --config configs/dupn-synth-ecom.toml --out runs/dupn-day-D
//! # day D+1: the same configuration with `days` raised by one and `train_from_day` set to
//! # the new day in [data.options] (any data source with the same fields and vocabularies),
//! # warm-started from the run of day D: parameters, embedding tables and their row-wise
//! # AdaGrad state
//! cargo xtask train --config next-day.toml --out runs/dupn-day-D1 --resume runs/dupn-day-D
//! ```
//!
//! `--resume CHECKPOINT` (a checkpoint directory, or a run directory whose best else latest
//! checkpoint is taken) starts a *new* run from the saved parameters and optimizer state; the
//! step counter, early stopping and the new run's checkpoints are its own. `--resume` without a
//! value instead continues an interrupted run exactly where it stopped. Keep the model widths
//! and the vocabularies of day D: a table or variable whose shape changed is an error naming it.
//! With the synthetic generator, `train_from_day` (protocol `ecom` only) keeps the training
//! split to the new day's samples, as a production source would hand them; histories still
//! reach back into the earlier days.
//! For a new task on top of a trained encoder (transfer) use [`transfer::load_matching`], which
//! loads the parts whose names the saved state also has (a shape mismatch there is an error),
//! with the tables' optimizer state fresh
//! ([`transfer::TableState::Fresh`]) so that the pretrained rows fine-tune at full step size.
//!
//! # Invariants
//! - Padding never changes a result: the gated LSTM carries its state over masked steps and the
//!   attention gives them weight exactly zero (tested with garbage at padded positions).
//! - The target item and the history's items use the same tables, so the item part of a
//!   behaviour and a candidate item live in one space.
//! - The model never knows which embedding table kind it holds.
#![warn(missing_docs)]

pub mod attention;
pub mod config;
pub mod gated_lstm;
pub mod loss;
mod model;
pub mod serving;
pub mod transfer;
mod widedeep;

pub use attention::BehaviourAttention;
pub use config::{DupnConfig, EncoderKind, HeadConfig, LossWeighting, PropertyUse};
pub use gated_lstm::PropertyGatedLstm;
pub use model::{Dupn, Encoded, Roles};
pub use widedeep::{TaskWideDeep, TaskWideDeepConfig};

#[cfg(test)]
pub(crate) mod test_util {
    use candle_core::{DType, Device, Result, Tensor, Var};
    use rec_nn::gradcheck::{
        GradCheck, check_all_params_get_gradient, check_gradients, random_var,
    };
    use rec_nn::init::VarStore;

    /// An `f64` store for gradient checks.
    pub fn store() -> VarStore {
        VarStore::with_dtype(11, &Device::Cpu, DType::F64)
    }

    /// A seeded f64 input variable.
    pub fn input(shape: &[usize], seed: u64) -> Result<Var> {
        random_var(shape, DType::F64, 1.0, seed)
    }

    /// Finite differences and every-parameter-gets-a-gradient for `vs`'s variables and
    /// `inputs`.
    pub fn check_layer(
        vs: &VarStore,
        inputs: &[(&str, &Var)],
        mut f: impl FnMut() -> Result<Tensor>,
    ) -> Result<()> {
        let mut params = vs.vars();
        params.extend(inputs.iter().map(|(n, v)| (n.to_string(), (*v).clone())));
        check_gradients(&params, &mut f, &GradCheck::default())?;
        let loss = f()?;
        check_all_params_get_gradient(&params, &loss)
    }
}
