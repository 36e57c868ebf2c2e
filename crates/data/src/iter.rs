//! Seeded, shuffled mini-batch iteration over a columnar [`Batch`].
//!
//! The order of epoch `e` depends only on `(seed, e)`, so a run resumed at epoch `e` sees exactly
//! the batches an uninterrupted run would have seen, without storing any RNG state.

use rand::SeedableRng;
use rand::seq::SliceRandom;
use rand_chacha::ChaCha8Rng;

use crate::batch::Batch;

/// Mixes a seed and a stream number into a new seed (SplitMix64 finaliser).
pub fn mix_seed(seed: u64, stream: u64) -> u64 {
    let mut z = seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15);
    z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A seeded RNG for stream `stream` of `seed`.
pub fn rng(seed: u64, stream: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(mix_seed(seed, stream))
}

/// The row order of one epoch: a seeded permutation of `0..n`, or `0..n` when not shuffling.
pub fn epoch_order(n: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut order: Vec<usize> = (0..n).collect();
    if shuffle {
        order.shuffle(&mut rng(seed, 0x5348_5546 ^ epoch));
    }
    order
}

/// Mini-batches of one epoch over `data`, in the order given by [`epoch_order`].
///
/// ```
/// # use rec_data::{Batch, BatchIter};
/// # fn demo(train: &Batch) {
/// for batch in BatchIter::new(train, 1024, 42, 0, true) {
///     assert!(batch.len() <= 1024);
/// }
/// # }
/// ```
pub struct BatchIter<'a> {
    data: &'a Batch,
    order: Vec<usize>,
    batch_size: usize,
    pos: usize,
}

impl<'a> BatchIter<'a> {
    /// Iterates over `data` in batches of `batch_size` (the last may be smaller).
    ///
    /// # Panics
    ///
    /// When `batch_size` is 0 (as `slice::chunks` does).
    pub fn new(data: &'a Batch, batch_size: usize, seed: u64, epoch: u64, shuffle: bool) -> Self {
        assert!(batch_size > 0, "batch_size must be positive");
        Self {
            order: epoch_order(data.len(), seed, epoch, shuffle),
            data,
            batch_size,
            pos: 0,
        }
    }

    /// Skips the first `batches` batches (used when resuming inside an epoch).
    pub fn skip_batches(mut self, batches: usize) -> Self {
        self.pos = batches
            .saturating_mul(self.batch_size)
            .min(self.order.len());
        self
    }

    /// Number of batches in the epoch.
    pub fn num_batches(&self) -> usize {
        self.order.len().div_ceil(self.batch_size)
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.pos >= self.order.len() {
            return None;
        }
        let end = (self.pos + self.batch_size).min(self.order.len());
        let b = self.data.gather(&self.order[self.pos..end]);
        self.pos = end;
        Some(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn order_is_a_permutation_and_seeded(n in 0usize..500, seed: u64, epoch in 0u64..5) {
            let a = epoch_order(n, seed, epoch, true);
            let mut s = a.clone();
            s.sort_unstable();
            prop_assert_eq!(s, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(&a, &epoch_order(n, seed, epoch, true));
            if n > 20 {
                prop_assert_ne!(&a, &epoch_order(n, seed.wrapping_add(1), epoch, true));
                prop_assert_ne!(&a, &epoch_order(n, seed, epoch + 1, true));
            }
        }
    }
}
