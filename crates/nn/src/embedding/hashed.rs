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

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// Bucket counts from 1 to beyond `u32::MAX`.
    fn rows() -> impl Strategy<Value = usize> {
        prop_oneof![
            Just(1usize),
            1usize..=64,
            1usize..=1 << 20,
            Just(u32::MAX as usize),
            Just(u32::MAX as usize + 1),
            1usize..=1 << 40,
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Always a valid bucket, and the same one on every call.
        #[test]
        fn bucket_is_in_range_and_deterministic(id: u32, seed: u64, rows in rows()) {
            let b = hash_bucket(id, seed, rows);
            prop_assert!((b as usize) < rows, "bucket {} of {}", b, rows);
            prop_assert_eq!(b, hash_bucket(id, seed, rows));
            if rows == 1 {
                prop_assert_eq!(b, 0);
            }
        }

        /// The seed matters: two seeds do not map 32 IDs to the same buckets among 2^20.
        #[test]
        fn different_seeds_give_different_maps(a: u64, b: u64, first: u32) {
            prop_assume!(a != b);
            let map = |s| (0..32u32).map(|i| hash_bucket(first.wrapping_add(i), s, 1 << 20)).collect::<Vec<_>>();
            prop_assert_ne!(map(a), map(b));
        }
    }

    /// A table uses exactly `hash_bucket` with its own seed, for IDs inside and beyond the
    /// vocabulary.
    #[test]
    fn the_table_rows_are_the_buckets() -> Result<()> {
        let mut rng = crate::init::named_rng(1, "t");
        let opts = TableOptions::default();
        let t = HashedTable::new(10, 7, 2, 12345, &opts, &mut rng, &Device::Cpu)?;
        let ids: Vec<u32> = (0..200).chain([u32::MAX]).collect();
        let want: Vec<u32> = ids.iter().map(|&i| hash_bucket(i, 12345, 7)).collect();
        assert_eq!(t.row_of(&ids), want);
        assert!(want.iter().all(|&r| r < 7));
        Ok(())
    }

    /// Buckets are close to uniform: 16 000 consecutive IDs into 16 buckets, each bucket within
    /// ±15% of 1000 (about 5 standard deviations), for a few fixed seeds.
    #[test]
    fn buckets_are_close_to_uniform() {
        for seed in [0u64, 1, 0xDEAD_BEEF, u64::MAX] {
            let mut counts = [0u32; 16];
            for id in 0..16_000u32 {
                counts[hash_bucket(id, seed, 16) as usize] += 1;
            }
            assert!(
                counts.iter().all(|&c| (850..=1150).contains(&c)),
                "seed {seed}: {counts:?}"
            );
        }
    }

    /// The hash is part of the saved-model format (a table saves only its seed): these values
    /// must not change between versions.
    #[test]
    fn buckets_are_pinned() {
        let got: Vec<u32> = [
            (0u32, 0u64, 1000usize),
            (1, 0, 1000),
            (42, 7, 1 << 20),
            (u32::MAX, u64::MAX, 3),
            (123_456, 99, 97),
        ]
        .iter()
        .map(|&(i, s, r)| hash_bucket(i, s, r))
        .collect();
        // Also computed by a separate Python transcription of the SplitMix64 finaliser.
        assert_eq!(got, [535, 700, 940_015, 0, 24]);
    }
}
