//! Quotient-remainder compositional embeddings (Shi et al., "Compositional Embeddings Using
//! Complementary Partitions for Memory-Efficient Recommendation Systems", KDD 2020).

use std::any::Any;

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rand::Rng;
use serde_json::json;

use super::rows::SparseRows;
use super::{EmbeddingTable, TableOptions, TensorMap, check_meta};
use crate::init::Init;

/// ID `i` is the elementwise product of row `i / c` of a quotient table (`ceil(vocab / c)`
/// rows) and row `i % c` of a remainder table (`c` rows), where `c` is the number of
/// collisions. Every ID below the vocabulary size gets a distinct pair of rows, so the table
/// is a compressed stand-in for a full table: `vocab / c + c` rows instead of `vocab`
/// (smallest at `c = sqrt(vocab)`).
///
/// Initialisation: the quotient table from the options' initialiser, the remainder table at 1
/// (the identity of the product), so the composed vectors start at the scale of a full table.
///
/// Unknown-ID rule: like the full table it stands in for, an ID at or above the vocabulary
/// size is looked up as the out-of-vocabulary ID 0.
pub struct QrTable {
    vocab: usize,
    collisions: usize,
    q: SparseRows,
    r: SparseRows,
}

impl QrTable {
    /// A QR table for `vocab` IDs with `collisions` remainder rows.
    pub fn new(
        vocab: usize,
        collisions: usize,
        dim: usize,
        opts: &TableOptions,
        rng: &mut impl Rng,
        device: &Device,
    ) -> Result<Self> {
        if vocab == 0 || collisions == 0 {
            candle_core::bail!("a QR table needs a non-empty vocabulary and collisions >= 1");
        }
        let q_rows = vocab.div_ceil(collisions);
        let q = SparseRows::new(q_rows, dim, opts.init, rng, opts.optimizer, device)?;
        let r = SparseRows::new(collisions, dim, Init::Ones, rng, opts.optimizer, device)?;
        Ok(Self {
            vocab,
            collisions,
            q,
            r,
        })
    }

    /// The quotient rows.
    pub fn quotient(&self) -> &SparseRows {
        &self.q
    }

    /// The remainder rows.
    pub fn remainder(&self) -> &SparseRows {
        &self.r
    }

    /// The (quotient, remainder) rows of every ID.
    pub fn rows_of(&self, ids: &[u32]) -> (Vec<u32>, Vec<u32>) {
        let c = self.collisions as u32;
        let v = self.vocab as u32;
        ids.iter()
            .map(|&i| {
                let i = if i < v { i } else { 0 };
                (i / c, i % c)
            })
            .unzip()
    }
}

impl EmbeddingTable for QrTable {
    fn kind(&self) -> &'static str {
        "qr"
    }
    fn dim(&self) -> usize {
        self.q.dim()
    }
    fn vocab(&self) -> usize {
        self.vocab
    }
    fn lookup(&mut self, ids: &[u32], train: bool) -> Result<Tensor> {
        let (qi, ri) = self.rows_of(ids);
        let q = self.q.lookup(&qi, train)?;
        let r = self.r.lookup(&ri, train)?;
        q * r
    }
    fn apply_gradients(&mut self, grads: &GradStore) -> Result<()> {
        self.q.apply_gradients(grads)?;
        self.r.apply_gradients(grads)
    }
    fn clear_pending(&mut self) {
        self.q.clear_pending();
        self.r.clear_pending();
    }
    fn num_params(&self) -> usize {
        self.q.num_params() + self.r.num_params()
    }
    fn bytes(&self) -> usize {
        self.q.bytes() + self.r.bytes()
    }
    fn start_at_zero(&mut self) -> Result<()> {
        candle_core::bail!(
            "a QR table cannot start at zero: its vectors are products of two rows, whose \
             gradients would then stay zero"
        )
    }
    fn reset_optimizer_state(&mut self) -> Result<()> {
        self.q.reset_state();
        self.r.reset_state();
        Ok(())
    }
    fn clamp_params(&mut self, min: f32, max: f32) -> Result<()> {
        self.q.clamp(min, max);
        self.r.clamp(min, max);
        Ok(())
    }
    fn save(&self, prefix: &str, out: &mut TensorMap) -> Result<serde_json::Value> {
        let q = self.q.save(&format!("{prefix}q."), out)?;
        let r = self.r.save(&format!("{prefix}r."), out)?;
        Ok(json!({
            "kind": "qr", "vocab": self.vocab, "dim": self.dim(),
            "collisions": self.collisions, "q": q, "r": r,
        }))
    }
    fn load(&mut self, prefix: &str, tensors: &TensorMap, meta: &serde_json::Value) -> Result<()> {
        check_meta(
            meta,
            prefix,
            &[
                ("kind", json!("qr")),
                ("vocab", json!(self.vocab)),
                ("dim", json!(self.dim())),
                ("collisions", json!(self.collisions)),
            ],
        )?;
        let (qn, rn) = (self.q.rows(), self.r.rows());
        // Check both halves before changing either.
        let qp = format!("{prefix}q.");
        let rp = format!("{prefix}r.");
        let mut q2 =
            SparseRows::from_weights(0, self.dim(), Vec::new(), *self.q.config(), self.q.device())?;
        q2.load(&qp, tensors, &meta["q"], Some(qn))?;
        self.r.load(&rp, tensors, &meta["r"], Some(rn))?;
        self.q = q2;
        Ok(())
    }
    fn as_any(&self) -> &dyn Any {
        self
    }
}
