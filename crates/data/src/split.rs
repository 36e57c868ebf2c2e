//! Train/validation/test splits: the [`Split`] every protocol produces, the seeded random
//! split, and the per-item feature table used to score candidate items.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::seq::SliceRandom;

use crate::batch::{Batch, Column};
use crate::encode::Vocab;
use crate::iter::rng;
use crate::movielens::SeqExtras;
use crate::schema::Schema;

/// Random-number stream of [`random_split`] (mixed with the seed).
const STREAM_RANDOM_SPLIT: u64 = 0x5350_4c49_5452_4e44;

/// The three parts of a data set under one protocol, over one [`Schema`].
#[derive(Debug, Clone)]
pub struct Split {
    /// Name of the protocol, e.g. `P-CTR`.
    pub name: String,
    /// The seed the split was drawn with.
    pub seed: u64,
    /// Fields and tasks shared by the three batches.
    pub schema: Arc<Schema>,
    /// Training samples.
    pub train: Batch,
    /// Validation samples (early stopping, model selection).
    pub valid: Batch,
    /// Test samples (reported once, with the best validation checkpoint).
    pub test: Batch,
    /// Raw token -> index for the categorical and multi-hot fields that have one, by field name
    /// (fields that share a vocabulary are listed under the field they share).
    pub vocabs: BTreeMap<String, Vocab>,
    /// Names of the scenarios, by scenario index (empty without a scenario field).
    pub scenario_names: Vec<String>,
    /// Item-side feature rows, to score items other than the sample's own (ranking).
    pub items: Option<ItemTable>,
    /// P-SEQ only: ranking candidates and the user attribute table of the transfer task.
    pub seq: Option<SeqExtras>,
}

impl Split {
    /// The three parts, by name, in order.
    pub fn parts(&self) -> [(&'static str, &Batch); 3] {
        [
            ("train", &self.train),
            ("valid", &self.valid),
            ("test", &self.test),
        ]
    }

    /// The same split with only the tasks `names` (in that order): the schema and the label
    /// vectors are narrowed; everything else is kept. Fails on an unknown task name.
    pub fn with_tasks(&self, names: &[&str]) -> Result<Split, String> {
        let idx = names
            .iter()
            .map(|n| {
                self.schema
                    .task_index(n)
                    .ok_or_else(|| format!("{} has no task `{n}`", self.name))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let mut schema = (*self.schema).clone();
        schema.tasks = idx.iter().map(|&i| self.schema.tasks[i].clone()).collect();
        let schema = Arc::new(schema);
        let narrow = |b: &Batch| Batch {
            schema: schema.clone(),
            columns: b.columns.clone(),
            labels: idx.iter().map(|&i| b.labels[i].clone()).collect(),
            weights: b.weights.clone(),
            slices: b.slices.clone(),
        };
        Ok(Split {
            train: narrow(&self.train),
            valid: narrow(&self.valid),
            test: narrow(&self.test),
            schema,
            ..self.clone()
        })
    }
}

/// Splits `0..n` at random into parts of the given fractions (the last part takes the rest),
/// seeded. Each part is returned in ascending order.
///
/// ```
/// let [a, b, c] = rec_data::split::random_split(10, 7, [0.8, 0.1, 0.1]);
/// assert_eq!((a.len(), b.len(), c.len()), (8, 1, 1));
/// ```
pub fn random_split(n: usize, seed: u64, fractions: [f64; 3]) -> [Vec<usize>; 3] {
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut rng(seed, STREAM_RANDOM_SPLIT));
    let n0 = ((n as f64 * fractions[0]).round() as usize).min(n);
    let n1 = ((n as f64 * fractions[1]).round() as usize).min(n - n0);
    let mut parts = [
        order[..n0].to_vec(),
        order[n0..n0 + n1].to_vec(),
        order[n0 + n1..].to_vec(),
    ];
    for p in &mut parts {
        p.sort_unstable();
    }
    parts
}

/// The item-side fields of a schema, with one row per item index (row 0 is the
/// out-of-vocabulary item). Used to score candidate items for a sample: keep the sample's user
/// and context columns, put the candidate's item columns in place of its own.
#[derive(Debug, Clone, PartialEq)]
pub struct ItemTable {
    /// Names of the item-side fields (e.g. `item_id`, `genres`, `year_bucket`).
    pub fields: Vec<String>,
    /// One column per field in `fields`; row `i` describes item index `i`.
    pub columns: Vec<Column>,
}

impl ItemTable {
    /// Number of item rows (the item vocabulary size).
    pub fn len(&self) -> usize {
        self.columns.first().map_or(0, Column::len)
    }

    /// True when the table has no row.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Copies the rows `rows` of `batch` (in that order) and puts item `items[k]` into the
    /// item-side fields of output row `k`. Labels of the result are `NaN` (unknown) and its
    /// slices are dropped: this batch is for scoring, not for a loss.
    pub fn candidates(&self, batch: &Batch, rows: &[usize], items: &[u32]) -> Batch {
        assert_eq!(rows.len(), items.len(), "one candidate item per row");
        let mut out = batch.gather(rows);
        let item_rows: Vec<usize> = items.iter().map(|&i| i as usize).collect();
        for (name, col) in self.fields.iter().zip(&self.columns) {
            if let Some(i) = out.schema.field_index(name) {
                out.columns[i] = col.gather(&item_rows);
            }
        }
        for l in &mut out.labels {
            l.fill(f32::NAN);
        }
        out.slices.clear();
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn random_split_partitions_and_is_seeded(n in 0usize..3000, seed: u64) {
            let parts = random_split(n, seed, [0.8, 0.1, 0.1]);
            let mut all: Vec<usize> = parts.iter().flatten().copied().collect();
            all.sort_unstable();
            prop_assert_eq!(all, (0..n).collect::<Vec<_>>());
            prop_assert_eq!(parts[0].len(), (n as f64 * 0.8).round() as usize);
            prop_assert_eq!(&parts, &random_split(n, seed, [0.8, 0.1, 0.1]));
            if n >= 50 {
                prop_assert_ne!(&parts, &random_split(n, seed ^ 1, [0.8, 0.1, 0.1]));
            }
        }
    }
}
