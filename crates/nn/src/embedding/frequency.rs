//! Frequency-aware hybrid table: frequent IDs own rows, the rest share hashed rows.

use std::any::Any;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor};
use rand::Rng;
use serde_json::json;

use super::hashed::hash_bucket;
use super::rows::SparseRows;
use super::{EmbeddingTable, TableOptions, TensorMap, check_meta};
use crate::io::take_tensor;

/// The `top_k` most frequent IDs (by train-set counts; ties go to the smaller ID; IDs never
/// seen do not qualify) own one row each; every other ID shares one of `buckets` hashed rows.
///
/// Unknown-ID rule: an ID at or above the vocabulary size was not among the frequent IDs, so it
/// is hashed into the shared rows like every other infrequent ID.
///
/// The sorted list of frequent IDs is part of the table (counted by [`bytes`](Self::bytes),
/// saved with it).
pub struct FrequencyTable {
    vocab: usize,
    /// Frequent IDs, ascending; frequent ID `top[k]` owns row `k`.
    top: Vec<u32>,
    buckets: usize,
    hash_seed: u64,
    rows: SparseRows,
}

impl FrequencyTable {
    /// A table for `vocab` IDs with train-set `counts` (`counts[id]`; missing IDs count 0).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vocab: usize,
        dim: usize,
        counts: &[u64],
        top_k: usize,
        buckets: usize,
        hash_seed: u64,
        opts: &TableOptions,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        if buckets == 0 {
            candle_core::bail!("a frequency table needs at least one shared row");
        }
        if counts.len() > vocab {
            candle_core::bail!(
                "{} counts given for a vocabulary of {vocab} IDs",
                counts.len()
            );
        }
        let mut seen: Vec<u32> = (0..counts.len() as u32)
            .filter(|&i| counts[i as usize] > 0)
            .collect();
        seen.sort_by(|&a, &b| counts[b as usize].cmp(&counts[a as usize]).then(a.cmp(&b)));
        seen.truncate(top_k);
        seen.sort_unstable();
        let top = seen;
        let rows = SparseRows::new(
            top.len() + buckets,
            dim,
            opts.init,
            rng,
            opts.optimizer,
            device,
        )?;
        Ok(Self {
            vocab,
            top,
            buckets,
            hash_seed,
            rows,
        })
    }

    /// The frequent IDs, ascending.
    pub fn frequent_ids(&self) -> &[u32] {
        &self.top
    }

    /// The rows and their optimizer state.
    pub fn rows(&self) -> &SparseRows {
        &self.rows
    }

    /// The row of every ID.
    pub fn row_of(&self, ids: &[u32]) -> Vec<u32> {
        let k = self.top.len() as u32;
        ids.iter()
            .map(|&i| match self.top.binary_search(&i) {
                Ok(p) => p as u32,
                Err(_) => k + hash_bucket(i, self.hash_seed, self.buckets),
            })
            .collect()
    }
}

impl EmbeddingTable for FrequencyTable {
    fn kind(&self) -> &'static str {
        "frequency"
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
        self.rows.bytes() + self.top.len() * std::mem::size_of::<u32>()
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
        out.insert(
            format!("{prefix}frequent_ids"),
            Tensor::from_slice(&self.top, self.top.len(), &Device::Cpu)?,
        );
        Ok(json!({
            "kind": "frequency", "vocab": self.vocab, "dim": self.dim(),
            "top_k": self.top.len(), "buckets": self.buckets, "hash_seed": self.hash_seed,
            "rows": rows,
        }))
    }
    fn load(&mut self, prefix: &str, tensors: &TensorMap, meta: &serde_json::Value) -> Result<()> {
        check_meta(
            meta,
            prefix,
            &[
                ("kind", json!("frequency")),
                ("vocab", json!(self.vocab)),
                ("dim", json!(self.dim())),
                ("top_k", json!(self.top.len())),
                ("buckets", json!(self.buckets)),
                ("hash_seed", json!(self.hash_seed)),
            ],
        )?;
        let name = format!("{prefix}frequent_ids");
        let top = take_tensor(tensors, &name, &[self.top.len()], DType::U32)?.to_vec1::<u32>()?;
        if top.windows(2).any(|w| w[0] >= w[1]) {
            candle_core::bail!("tensor `{name}` is not strictly increasing");
        }
        self.rows.load(
            prefix,
            tensors,
            &meta["rows"],
            Some(self.top.len() + self.buckets),
        )?;
        self.top = top;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
