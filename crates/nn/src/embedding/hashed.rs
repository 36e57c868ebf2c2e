//! The hashing trick: IDs hashed into a fixed number of shared rows.

use std::any::Any;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand::Rng;
use serde_json::json;

use super::rows::SparseRows;
use super::{EmbeddingTable, TableOptions, TensorMap, check_meta};
use crate::init::mix64;

/// The bucket of `id` among `rows` buckets under `seed` (SplitMix64 finaliser of the pair).
pub fn hash_bucket(id: u32, seed: u64, rows: usize) -> u32 {
    (mix64(seed, id as u64) % rows as u64) as u32
}

/// `rows` shared rows; ID `i` uses row [`hash_bucket`]`(i, hash_seed, rows)`. Unknown-ID rule:
/// an ID at or above the vocabulary size is hashed like any other (it gets its bucket).
pub struct HashedTable {
    vocab: usize,
    hash_seed: u64,
    rows: SparseRows,
}

impl HashedTable {
    /// A table of `rows` buckets of width `dim` for a vocabulary of `vocab` IDs.
    pub fn new(
        vocab: usize,
        rows: usize,
        dim: usize,
        hash_seed: u64,
        opts: &TableOptions,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        if rows == 0 {
            candle_core::bail!("a hashed table needs at least one row");
        }
        let rows = SparseRows::new(rows, dim, opts.init, rng, opts.optimizer, device)?;
        Ok(Self {
            vocab,
            hash_seed,
            rows,
        })
    }

    /// The rows and their optimizer state.
    pub fn rows(&self) -> &SparseRows {
        &self.rows
    }

    /// The seed of the hash function.
    pub fn hash_seed(&self) -> u64 {
        self.hash_seed
    }

    /// The row of every ID.
    pub fn row_of(&self, ids: &[u32]) -> Vec<u32> {
        let m = self.rows.rows();
        ids.iter()
            .map(|&i| hash_bucket(i, self.hash_seed, m))
            .collect()
    }
}

impl EmbeddingTable for HashedTable {
    fn kind(&self) -> &'static str {
        "hashed"
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
        Ok(json!({
            "kind": "hashed", "vocab": self.vocab, "dim": self.dim(),
            "buckets": self.rows.rows(), "hash_seed": self.hash_seed, "rows": rows,
        }))
    }
    fn load(&mut self, prefix: &str, tensors: &TensorMap, meta: &serde_json::Value) -> Result<()> {
        let m = self.rows.rows();
        check_meta(
            meta,
            prefix,
            &[
                ("kind", json!("hashed")),
                ("vocab", json!(self.vocab)),
                ("dim", json!(self.dim())),
                ("buckets", json!(m)),
                ("hash_seed", json!(self.hash_seed)),
            ],
        )?;
        self.rows.load(prefix, tensors, &meta["rows"], Some(m))
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
