//! Negative sampling for ranking: a seeded sampler of items a user has not interacted with, and
//! the fixed candidate lists (target + sampled negatives) a ranking evaluation scores.

use std::ops::Range;

use rand::Rng;
use rand::seq::SliceRandom;

use crate::batch::{Batch, Slice};
use crate::split::ItemTable;

/// Samples, for a user, items the user has not interacted with.
///
/// Items are dense indices `1..num_items` (index 0 is the out-of-vocabulary item and is never
/// drawn). Sampling is uniform without replacement; the result depends only on the RNG state,
/// so a seeded RNG gives the same negatives every time.
///
/// ```
/// use rand::SeedableRng;
/// use rec_data::ranking::NegativeSampler;
/// // Two users over items 1..=5: user 0 rated 1 and 2, user 1 rated 5.
/// let s = NegativeSampler::new(vec![vec![1, 2], vec![5]], 6);
/// let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
/// let neg = s.sample(0, 3, &mut rng);
/// assert_eq!(neg.len(), 3);
/// assert!(neg.iter().all(|i| (3..=5).contains(i)));
/// ```
#[derive(Debug, Clone)]
pub struct NegativeSampler {
    /// CSR of each user's interacted items, sorted and unique.
    offsets: Vec<usize>,
    items: Vec<u32>,
    num_items: u32,
}

impl NegativeSampler {
    /// A sampler over items `1..num_items` (`num_items` is the item vocabulary size, OOV
    /// included) where `interacted[u]` lists the items user `u` has interacted with.
    pub fn new(interacted: Vec<Vec<u32>>, num_items: usize) -> Self {
        let mut offsets = Vec::with_capacity(interacted.len() + 1);
        offsets.push(0);
        let mut items = Vec::new();
        for mut v in interacted {
            v.sort_unstable();
            v.dedup();
            items.extend(v);
            offsets.push(items.len());
        }
        Self {
            offsets,
            items,
            num_items: num_items as u32,
        }
    }

    /// Number of users.
    pub fn num_users(&self) -> usize {
        self.offsets.len() - 1
    }

    /// The items user `user` interacted with, sorted.
    pub fn interacted(&self, user: usize) -> &[u32] {
        &self.items[self.offsets[user]..self.offsets[user + 1]]
    }

    /// Number of items the user has not interacted with (the most [`sample`](Self::sample) can
    /// return).
    pub fn num_candidates(&self, user: usize) -> usize {
        let seen = self
            .interacted(user)
            .iter()
            .filter(|&&i| i >= 1 && i < self.num_items)
            .count();
        (self.num_items as usize).saturating_sub(1) - seen
    }

    /// `k` distinct items that `user` has not interacted with, in draw order; fewer when fewer
    /// exist. Rejection sampling while the user's items are a small share of all items,
    /// otherwise a shuffle of the complement.
    pub fn sample(&self, user: usize, k: usize, rng: &mut impl Rng) -> Vec<u32> {
        let seen = self.interacted(user);
        let avail = self.num_candidates(user);
        let k = k.min(avail);
        if k == 0 {
            return Vec::new();
        }
        if k * 4 <= avail {
            let mut out: Vec<u32> = Vec::with_capacity(k);
            while out.len() < k {
                let i = rng.random_range(1..self.num_items);
                if seen.binary_search(&i).is_err() && !out.contains(&i) {
                    out.push(i);
                }
            }
            out
        } else {
            let mut all: Vec<u32> = (1..self.num_items)
                .filter(|i| seen.binary_search(i).is_err())
                .collect();
            let (chosen, _) = all.partial_shuffle(rng, k);
            chosen.to_vec()
        }
    }
}

/// Fixed ranking candidates: for each case (a row of a validation or test batch), the target
/// item followed by `num_negatives` sampled items the user never interacted with. A model scores
/// all `1 + num_negatives` candidates; AUC, HR@10 and NDCG@10 come from the target's rank.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RankingSet {
    /// Row of each case in its batch.
    pub rows: Vec<u32>,
    /// Negatives per case.
    pub num_negatives: usize,
    /// Case `c` owns `items[c * (1 + num_negatives)..(c + 1) * (1 + num_negatives)]`: the
    /// target first, then the negatives.
    pub items: Vec<u32>,
}

impl RankingSet {
    /// Number of cases.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when there is no case.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Candidates per case (target included).
    pub fn width(&self) -> usize {
        1 + self.num_negatives
    }

    /// The target and the negatives of case `c`.
    pub fn case(&self, c: usize) -> (u32, &[u32]) {
        let w = self.width();
        let s = &self.items[c * w..(c + 1) * w];
        (s[0], &s[1..])
    }

    /// A batch scoring the candidates of cases `cases`: case after case, `width()` rows each,
    /// the target first; each row is the case's row of `batch` with the candidate's item-side
    /// fields from `table`. Labels are `NaN`.
    pub fn candidate_batch(&self, batch: &Batch, table: &ItemTable, cases: Range<usize>) -> Batch {
        let w = self.width();
        let rows: Vec<usize> = cases
            .clone()
            .flat_map(|c| std::iter::repeat_n(self.rows[c] as usize, w))
            .collect();
        table.candidates(batch, &rows, &self.items[cases.start * w..cases.end * w])
    }
}

/// `batch` followed by `k` negative rows per row: row `r`'s user and context with an item the
/// user never interacted with (from `sampler`, indexed by the batch's user IDs) in the item-side
/// fields of `table`. Negative rows have label 0 for the binary task `task` and `NaN` (no label)
/// for every other task; they are `false` in every slice. Users with fewer than `k` unrated
/// items get fewer negatives. The negatives depend only on `rng`'s state.
///
/// Fails when the schema has no user field or no task `task`.
pub fn with_negatives(
    batch: &Batch,
    table: &ItemTable,
    sampler: &NegativeSampler,
    task: &str,
    k: usize,
    rng: &mut impl Rng,
) -> Result<Batch, String> {
    let users = batch.users().ok_or("the batch has no user field")?;
    let t = batch
        .schema
        .task_index(task)
        .ok_or_else(|| format!("the batch has no task `{task}`"))?;
    let mut rows = Vec::with_capacity(batch.len() * k);
    let mut items = Vec::with_capacity(batch.len() * k);
    for (r, &u) in users.iter().enumerate() {
        let u = u as usize;
        let neg = if u < sampler.num_users() {
            sampler.sample(u, k, rng)
        } else {
            Vec::new()
        };
        rows.extend(std::iter::repeat_n(r, neg.len()));
        items.extend(neg);
    }
    let mut neg = table.candidates(batch, &rows, &items);
    neg.labels[t].fill(0.0);
    let mut out = batch.clone();
    for (c, n) in out.columns.iter_mut().zip(&neg.columns) {
        c.extend(n)?;
    }
    for (l, n) in out.labels.iter_mut().zip(&neg.labels) {
        l.extend_from_slice(n);
    }
    if let Some(w) = &mut out.weights {
        w.extend(std::iter::repeat_n(1.0, rows.len()));
    }
    for Slice { mask, .. } in &mut out.slices {
        mask.extend(std::iter::repeat_n(false, rows.len()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    proptest! {
        #[test]
        fn negatives_are_unrated_distinct_and_seeded(
            rated in proptest::collection::vec(proptest::collection::vec(1u32..60, 0..55), 1..6),
            k in 0usize..80,
            seed: u64,
        ) {
            let s = NegativeSampler::new(rated.clone(), 60);
            for (u, r) in rated.iter().enumerate() {
                let a = s.sample(u, k, &mut ChaCha8Rng::seed_from_u64(seed));
                let b = s.sample(u, k, &mut ChaCha8Rng::seed_from_u64(seed));
                prop_assert_eq!(&a, &b);
                prop_assert_eq!(a.len(), k.min(s.num_candidates(u)));
                let mut d = a.clone();
                d.sort_unstable();
                d.dedup();
                prop_assert_eq!(d.len(), a.len());
                prop_assert!(a.iter().all(|i| !r.contains(i) && (1..60).contains(i)));
            }
        }
    }

    #[test]
    fn different_seeds_draw_different_negatives() {
        let s = NegativeSampler::new(vec![vec![3, 4]], 1000);
        let a = s.sample(0, 20, &mut ChaCha8Rng::seed_from_u64(1));
        let b = s.sample(0, 20, &mut ChaCha8Rng::seed_from_u64(2));
        assert_ne!(a, b);
    }
}
