//! The full table: one row per ID of the vocabulary.

use std::any::Any;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand::Rng;
use serde_json::json;

use super::rows::SparseRows;
use super::{EmbeddingTable, TableOptions, TensorMap, check_meta};

/// One row per ID. Unknown-ID rule: an ID at or above the vocabulary size is looked up as the
/// out-of-vocabulary row 0.
pub struct FullTable {
    vocab: usize,
    rows: SparseRows,
}

impl FullTable {
    /// A table of `vocab` rows of width `dim`, initialised from `rng`.
    pub fn new(
        vocab: usize,
        dim: usize,
        opts: &TableOptions,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        if vocab == 0 {
            candle_core::bail!("a full table needs a non-empty vocabulary");
        }
        let rows = SparseRows::new(vocab, dim, opts.init, rng, opts.optimizer, device)?;
        Ok(Self { vocab, rows })
    }

    /// The rows and their optimizer state.
    pub fn rows(&self) -> &SparseRows {
        &self.rows
    }

    /// The rows, mutable.
    pub fn rows_mut(&mut self) -> &mut SparseRows {
        &mut self.rows
    }

    /// The row of every ID.
    pub fn row_of(&self, ids: &[u32]) -> Vec<u32> {
        let v = self.vocab as u32;
        ids.iter().map(|&i| if i < v { i } else { 0 }).collect()
    }
}

impl EmbeddingTable for FullTable {
    fn kind(&self) -> &'static str {
        "full"
    }
    fn dim(&self) -> usize {
        self.rows.dim()
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn lookup(&mut self, ids: &[u32], train: bool) -> Result<Tensor> {
        let rows = self.row_of(ids);
        self.rows.lookup(&rows, train)
    }
    fn apply_gradients(&mut self, grads: &GradStore) -> Result<()> {
        self.rows.apply_gradients(grads)
    }
    fn clear_pending(&mut self) {
        self.rows.clear_pending()
    }
    fn num_params(&self) -> usize {
        self.rows.num_params()
    }
    fn bytes(&self) -> usize {
        self.rows.bytes()
    }
    fn reset_optimizer_state(&mut self) -> Result<()> {
        self.rows.reset_state();
        Ok(())
    }
    fn clamp_params(&mut self, min: f32, max: f32) -> Result<()> {
        self.rows.clamp(min, max);
        Ok(())
    }
    fn save(&self, prefix: &str, out: &mut TensorMap) -> Result<serde_json::Value> {
        let rows = self.rows.save(prefix, out)?;
        Ok(json!({ "kind": "full", "vocab": self.vocab, "dim": self.dim(), "rows": rows }))
    }
    fn load(&mut self, prefix: &str, tensors: &TensorMap, meta: &serde_json::Value) -> Result<()> {
        check_meta(
            meta,
            prefix,
            &[
                ("kind", json!("full")),
                ("vocab", json!(self.vocab)),
                ("dim", json!(self.dim())),
            ],
        )?;
        self.rows
            .load(prefix, tensors, &meta["rows"], Some(self.vocab))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
