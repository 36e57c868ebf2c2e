//! Embedding tables with sparse, row-wise updates.
//!
//! Candle's autograd turns the gradient of an `index_select` on a table into a dense tensor as
//! large as the whole table. Tables here never put their storage behind autograd: a training
//! lookup gathers the batch's unique rows into a small leaf [`Var`](candle_core::Var), the model
//! back-propagates into it, and [`EmbeddingTable::apply_gradients`] updates only those rows with
//! row-wise optimizer state. The cost of a step is proportional to the rows a batch touches, never
//! to the vocabulary.
//!
//! Tables live in host memory, like a parameter server; only the small per-batch leaves are
//! created on the model's device (see [`rows`] for the design). Implementations here:
//! [`FullTable`], [`HashedTable`], [`QrTable`], [`FrequencyTable`]; the clustered table of
//! `embedding-cel` builds on the public [`rows::SparseRows`] machinery. A model receives its
//! tables from a [`TableFactory`] and never knows which kind it holds; [`TableSet`] builds the
//! tables of a set of schema fields (sharing tables between fields that share a vocabulary) and
//! [`pooling`] turns multi-hot and sequence fields into vectors.

use std::any::Any;
use std::collections::HashMap;

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor};
use serde::{Deserialize, Serialize};

use crate::init::Init;
use crate::optim::OptimizerConfig;

pub mod factory;
pub mod frequency;
pub mod full;
pub mod hashed;
pub mod pooling;
pub mod qr;
pub mod rows;

pub use factory::{DefaultTableFactory, TableConfig, TableFactory, TableSet, TablesConfig};
pub use frequency::FrequencyTable;
pub use full::FullTable;
pub use hashed::HashedTable;
pub use pooling::Pooling;
pub use qr::QrTable;

/// Named tensors, as written to and read from a safetensors file.
pub type TensorMap = HashMap<String, Tensor>;

/// A table that maps IDs to vectors and updates itself from the gradients of its lookups.
///
/// A model never knows which implementation it holds: full, hashed, QR, frequency-hybrid (this
/// crate) or clustered (`embedding-cel`).
pub trait EmbeddingTable: Send {
    /// Short name of the implementation: `full`, `hashed`, `qr`, `frequency`, `cel`, ...
    fn kind(&self) -> &'static str;

    /// Width of every vector.
    fn dim(&self) -> usize;

    /// Number of IDs of the field (vocabulary size, the out-of-vocabulary index 0 included).
    /// IDs at or above it are looked up by the table's documented unknown-ID rule.
    fn vocab(&self) -> usize;

    /// The vectors of `ids`, as a `[ids.len(), dim]` tensor.
    ///
    /// With `train == true` the result is differentiable: it is computed from a fresh leaf
    /// variable holding the rows this lookup touches, which the table keeps until
    /// [`apply_gradients`](Self::apply_gradients). Several training lookups may happen before one
    /// update (e.g. the target item and the items of a behaviour sequence).
    fn lookup(&mut self, ids: &[u32], train: bool) -> Result<Tensor>;

    /// Updates the rows touched by every training lookup since the last call, reading their
    /// gradients from `grads`, then forgets those lookups. Rows that were not looked up do not
    /// change (no decay, no optimizer-state change).
    fn apply_gradients(&mut self, grads: &GradStore) -> Result<()>;

    /// Forgets pending training lookups without updating anything.
    fn clear_pending(&mut self);

    /// Number of trainable floats.
    fn num_params(&self) -> usize;

    /// Bytes needed to serve the table: parameters plus any ID-to-row map (e.g. CEL's
    /// assignment array). Optimizer state is not included.
    fn bytes(&self) -> usize;

    /// Clamps every trainable value into `[min, max]` (e.g. NMF's non-negativity, called from
    /// the model's `after_step`). Implementations may visit only the rows changed since the
    /// previous call (the first call visits every row), so a per-step clamp costs what the step
    /// touched. The default returns an error: a table that cannot honour it says so.
    fn clamp_params(&mut self, _min: f32, _max: f32) -> Result<()> {
        candle_core::bail!(
            "the `{}` table does not support clamping its values",
            self.kind()
        )
    }

    /// Sets every learnable value to zero, for a table that must start neutral (e.g. SAML's
    /// scenario tables, read next to a global vector). The default zeroes through
    /// [`clamp_params`](Self::clamp_params); a table whose lookup would then never learn (a
    /// product of rows) refuses.
    fn start_at_zero(&mut self) -> Result<()> {
        self.clamp_params(0.0, 0.0)
    }

    /// Restarts the table's optimizer state (every row's, e.g. AdaGrad's accumulators) at its
    /// initial value, keeping the learned values, so that a loaded table is fine-tuned like a
    /// new one at full step size. The default returns an error: a table that cannot honour it
    /// says so.
    fn reset_optimizer_state(&mut self) -> Result<()> {
        candle_core::bail!(
            "the `{}` table cannot restart its optimizer state",
            self.kind()
        )
    }

    /// Called once after every training step, after `apply_gradients` (CEL splits and
    /// reassigns here). The default does nothing.
    fn end_step(&mut self, _step: u64) -> Result<()> {
        Ok(())
    }

    /// Writes parameters and optimizer state into `out` under names starting with `prefix`,
    /// and returns the non-tensor state (JSON) needed to restore the table exactly.
    fn save(&self, prefix: &str, out: &mut TensorMap) -> Result<serde_json::Value>;

    /// Restores what [`save`](Self::save) wrote. Shapes, dtypes and metadata are checked; a
    /// mismatch is an error naming the tensor, never a panic.
    fn load(&mut self, prefix: &str, tensors: &TensorMap, meta: &serde_json::Value) -> Result<()>;

    /// For introspection of a concrete type (e.g. CEL's cluster tree).
    fn as_any(&self) -> &dyn Any;

    /// Mutable access to a concrete type, for drivers that act on a table between steps (e.g.
    /// CEL's exact loss-based reassignment, which evaluates the model under candidate
    /// assignments). The default is `None`: built-in tables need no such driver.
    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        None
    }
}

/// How a built-in table initialises and updates its rows.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TableOptions {
    /// Initial values (default `{ kind = "normal", mean = 0, std = 0.05 }`).
    #[serde(default = "default_table_init")]
    pub init: Init,
    /// Row-wise optimizer (default `{ kind = "adam", lr = 0.001 }`, lazy per-row Adam).
    #[serde(default = "default_table_optimizer")]
    pub optimizer: OptimizerConfig,
}

fn default_table_init() -> Init {
    Init::Normal {
        mean: 0.0,
        std: 0.05,
    }
}

fn default_table_optimizer() -> OptimizerConfig {
    OptimizerConfig::adam(1e-3)
}

impl Default for TableOptions {
    fn default() -> Self {
        Self {
            init: default_table_init(),
            optimizer: default_table_optimizer(),
        }
    }
}

impl TableOptions {
    /// Options with the given initialiser and optimizer.
    pub fn new(init: Init, optimizer: OptimizerConfig) -> Self {
        Self { init, optimizer }
    }
}

/// Checks the saved metadata `meta` of the table at `prefix` against `expected` key/value pairs.
pub fn check_meta(
    meta: &serde_json::Value,
    prefix: &str,
    expected: &[(&str, serde_json::Value)],
) -> Result<()> {
    for (k, v) in expected {
        crate::io::expect_meta(meta, k, v, prefix)?;
    }
    Ok(())
}

#[cfg(test)]
pub(crate) mod tests;
