//! P-SEQ: ml-100k as behaviour sequences (for DUPN and its baselines).
//!
//! Each user's ratings in time order (ties by item id) are positions `0..n`. Position `n - 1`
//! is the user's test sample, `n - 2` the validation sample, and every position `5 <= t < n - 2`
//! a training sample; a sample at position `t` has the history of the (at most
//! [`HISTORY_LEN`]) ratings before it, oldest first, so it sees at least [`MIN_HISTORY`] of
//! them. Users with fewer than `MIN_HISTORY + 2` ratings give no sample (none in ml-100k: every
//! user has 20 or more). Validation and test hold one sample per user, users in order, so row
//! `k` of both is the same user.
//!
//! Fields:
//! - `user_id`; target item `item_id`, `year_bucket`, `genres` (the P-CTR encodings);
//! - one aligned sequence group `hist`: `hist_item_id` (shares `item_id`), `hist_year_bucket`
//!   (shares `year_bucket`), `hist_rating` (the behaviour type: rating 1-5 as index 1-5),
//!   `hist_gap` (time from that rating to the target's, bucketed by
//!   [`crate::encode::time::gap_bucket`]), `hist_hour` (UTC hour band) and `hist_weekend`.
//!   Gender, age and occupation are deliberately absent: they are the held-out attributes of
//!   the transfer task.
//!
//! Tasks:
//! - `like` (binary): the target's rating >= 4;
//! - `next_item` (binary): 1 for every observed target. Training negatives are made on the fly
//!   by [`crate::ranking::with_negatives`] with [`SeqExtras::sampler`] (label 0, other tasks
//!   `NaN`, fresh negatives each epoch from the trainer's seeded RNG);
//!   validation and test rank the target against [`NUM_NEGATIVES`] fixed sampled items
//!   ([`SeqExtras::ranking_valid`], [`SeqExtras::ranking_test`]);
//! - `popularity` (multiclass, [`POPULARITY_BINS`]): the popularity level of the target, i.e.
//!   the quantile bin of its rating count over the training part (every rating but each
//!   user's last two, which are the validation and test targets of every user with samples;
//!   a user too short for samples also leaves out its last two), with bin edges at the 1/7..6/7 quantiles of the training
//!   samples' target counts, so the classes are roughly balanced on training data.
//!
//! Transfer: [`UserAttributes`] holds gender, age band and occupation of every user with a
//! sample, plus a seeded 80/20 split of those users for training and testing a probe on a frozen
//! user representation.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::{Deserialize, Serialize};

use super::protocols::{AGE_BAND_NAMES, Encoded, LIKE_THRESHOLD, Protocol, age_band};
use super::{Gender, MovieLens100k};
use crate::batch::{Batch, Column};
use crate::encode::{QuantileBins, Vocab, time};
use crate::error::{DataError, Result};
use crate::iter::{mix_seed, rng};
use crate::ranking::{NegativeSampler, RankingSet};
use crate::schema::{FieldSpec, Schema, TaskKind, TaskSpec};
use crate::split::{Split, random_split};

/// Longest history of a sample.
pub const HISTORY_LEN: usize = 50;
/// Shortest history of a sample (the first sample of a user is at position 5).
pub const MIN_HISTORY: usize = 5;
/// Sampled negatives per validation/test case of the next-item ranking.
pub const NUM_NEGATIVES: usize = 100;
/// Classes of the popularity task.
pub const POPULARITY_BINS: usize = 7;

const STREAM_RANK_VALID: u64 = 0x5241_4e4b_5641_4c49;
const STREAM_RANK_TEST: u64 = 0x5241_4e4b_5445_5354;
const STREAM_PROBE: u64 = 0x5052_4f42_4553_504c;

/// Held-out user attributes for the transfer task, one row per user with a P-SEQ sample, users
/// in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserAttributes {
    /// The user's `user_id` index.
    pub user: Vec<u32>,
    /// Row of the user's sample in the validation and in the test batch.
    pub row: Vec<u32>,
    /// 0 = female, 1 = male (binary: AUC).
    pub gender: Vec<u32>,
    /// Age band 0..3 (`<25`, `25-34`, `>=35`; accuracy).
    pub age_band: Vec<u32>,
    /// Occupation 0..[`occupations`](Self::occupations)`.len()` (accuracy).
    pub occupation: Vec<u32>,
    /// Occupation names, by occupation index (sorted).
    pub occupations: Vec<String>,
    /// Table rows (not user ids) to train the probe on: 80% of the users, seeded.
    pub probe_train: Vec<u32>,
    /// Table rows to test the probe on: the other 20%.
    pub probe_test: Vec<u32>,
}

impl UserAttributes {
    /// Number of users.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// True when there is no user.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

/// What P-SEQ adds to a [`Split`].
#[derive(Debug, Clone)]
pub struct SeqExtras {
    /// Next-item ranking cases over the validation batch (one per row).
    pub ranking_valid: RankingSet,
    /// Next-item ranking cases over the test batch (one per row).
    pub ranking_test: RankingSet,
    /// Items each user rated anywhere in the data set, indexed by `user_id` index; samples
    /// training negatives (see [`crate::ranking::with_negatives`]).
    pub sampler: NegativeSampler,
    /// The transfer task's user attributes.
    pub users: UserAttributes,
    /// Training rating count of each item index (the popularity the bins are cut from).
    pub item_popularity: Vec<u32>,
    /// The popularity bins.
    pub popularity_bins: QuantileBins,
}

/// One sample: user position and the range of the user's rating rows before the target.
struct Sample {
    target: usize,
    hist: std::ops::Range<usize>,
}

impl MovieLens100k {
    pub(super) fn seq_protocol(&self, seed: u64) -> Result<Split> {
        let enc = Encoded::new(self);
        let r = &self.ratings;
        let off = self.user_offsets();
        let mut train = Vec::new();
        let mut valid = Vec::new();
        let mut test = Vec::new();
        let mut users_with_samples = Vec::new();
        let mut item_pop = vec![0u32; self.num_items() + 1];
        for u in 0..self.num_users() {
            let (s, e) = (off[u], off[u + 1]);
            let n = e - s;
            let sample = |t: usize| Sample {
                target: s + t,
                hist: s + t.saturating_sub(HISTORY_LEN)..s + t,
            };
            // Popularity counts every rating but the user's last two (its validation and
            // test targets; also left out for a user too short to have samples).
            for row in s..e.saturating_sub(2).max(s) {
                item_pop[r.item[row] as usize + 1] += 1;
            }
            if n < MIN_HISTORY + 2 {
                continue;
            }
            train.extend((MIN_HISTORY..n - 2).map(sample));
            valid.push(sample(n - 2));
            test.push(sample(n - 1));
            users_with_samples.push(u);
        }
        if train.is_empty() {
            return Err(DataError::Invalid(format!(
                "P-SEQ needs users with at least {} ratings",
                MIN_HISTORY + 3
            )));
        }
        let train_pop: Vec<u64> = train
            .iter()
            .map(|s| item_pop[r.item[s.target] as usize + 1] as u64)
            .collect();
        let bins = QuantileBins::fit(&train_pop, POPULARITY_BINS).map_err(DataError::Invalid)?;

        let schema = Arc::new(seq_schema(&enc));
        let build = |samples: &[Sample]| self.seq_batch(&enc, &schema, samples, &item_pop, &bins);
        let (train_b, valid_b, test_b) = (build(&train), build(&valid), build(&test));

        let item_vocab = enc.size("item_id");
        // Indexed by `user_id` index: row 0 is the (empty) out-of-vocabulary user.
        let interacted = std::iter::once(Vec::new())
            .chain(
                (0..self.num_users())
                    .map(|u| (off[u]..off[u + 1]).map(|x| r.item[x] + 1).collect()),
            )
            .collect();
        let sampler = NegativeSampler::new(interacted, item_vocab);
        let ranking = |samples: &[Sample], stream: u64| {
            let mut items = Vec::with_capacity(samples.len() * (1 + NUM_NEGATIVES));
            for s in samples {
                let u = r.user[s.target] as usize;
                items.push(r.item[s.target] + 1);
                let mut g = rng(mix_seed(seed, stream), u as u64);
                let neg = sampler.sample(u + 1, NUM_NEGATIVES, &mut g);
                if neg.len() < NUM_NEGATIVES {
                    return Err(DataError::Invalid(format!(
                        "user {} has rated all but {} items; P-SEQ needs {NUM_NEGATIVES} unrated",
                        self.users[u].id,
                        neg.len()
                    )));
                }
                items.extend(neg);
            }
            Ok(RankingSet {
                rows: (0..samples.len() as u32).collect(),
                num_negatives: NUM_NEGATIVES,
                items,
            })
        };
        let ranking_valid = ranking(&valid, STREAM_RANK_VALID)?;
        let ranking_test = ranking(&test, STREAM_RANK_TEST)?;

        let occupations = enc.vocabs["occupation"].tokens().to_vec();
        let [p_train, p_valid, p_test] = random_split(
            users_with_samples.len(),
            mix_seed(seed, STREAM_PROBE),
            [0.8, 0.0, 0.2],
        );
        debug_assert!(p_valid.is_empty());
        let users = UserAttributes {
            user: users_with_samples.iter().map(|&u| u as u32 + 1).collect(),
            row: (0..users_with_samples.len() as u32).collect(),
            gender: users_with_samples
                .iter()
                .map(|&u| u32::from(self.users[u].gender == Gender::Male))
                .collect(),
            age_band: users_with_samples
                .iter()
                .map(|&u| age_band(self.users[u].age))
                .collect(),
            occupation: users_with_samples
                .iter()
                .map(|&u| enc.user_occupation[u] - 1)
                .collect(),
            occupations,
            probe_train: p_train.iter().map(|&x| x as u32).collect(),
            probe_test: p_test.iter().map(|&x| x as u32).collect(),
        };

        let mut vocabs: BTreeMap<String, Vocab> = enc.vocabs.clone();
        for k in ["gender", "age_band", "occupation"] {
            vocabs.remove(k);
        }
        vocabs.insert(
            "hist_rating".into(),
            Vocab::from_tokens(["1", "2", "3", "4", "5"]),
        );
        debug_assert_eq!(AGE_BAND_NAMES.len(), 3);
        Ok(Split {
            name: Protocol::Seq.name().into(),
            seed,
            schema,
            train: train_b,
            valid: valid_b,
            test: test_b,
            vocabs,
            scenario_names: Vec::new(),
            items: Some(enc.item_table()),
            seq: Some(SeqExtras {
                ranking_valid,
                ranking_test,
                sampler,
                users,
                item_popularity: item_pop,
                popularity_bins: bins,
            }),
        })
    }

    fn seq_batch(
        &self,
        enc: &Encoded,
        schema: &Arc<Schema>,
        samples: &[Sample],
        item_pop: &[u32],
        bins: &QuantileBins,
    ) -> Batch {
        let r = &self.ratings;
        let n = samples.len();
        let total: usize = samples.iter().map(|s| s.hist.len()).sum();
        let mut offsets = Vec::with_capacity(n + 1);
        offsets.push(0u32);
        let mut h = [(); 6].map(|_| Vec::with_capacity(total));
        for s in samples {
            let t = r.timestamp[s.target];
            for x in s.hist.clone() {
                let ts = r.timestamp[x];
                h[0].push(r.item[x] + 1);
                h[1].push(enc.item_year[r.item[x] as usize]);
                h[2].push(u32::from(r.rating[x]));
                h[3].push(time::gap_bucket(t - ts));
                h[4].push(time::hour_band(ts));
                h[5].push(time::weekend(ts));
            }
            offsets.push(h[0].len() as u32);
        }
        let [hi, hy, hr, hg, hh, hw] = h;
        let ragged = |values: Vec<u32>| Column::Ragged {
            values,
            offsets: offsets.clone(),
        };
        let target_item = |s: &Sample| r.item[s.target] as usize;
        let mut gv = Vec::new();
        let mut go = vec![0u32];
        for s in samples {
            gv.extend_from_slice(&enc.item_genres[target_item(s)]);
            go.push(gv.len() as u32);
        }
        let columns = vec![
            Column::Ids(samples.iter().map(|s| r.user[s.target] + 1).collect()),
            Column::Ids(samples.iter().map(|s| target_item(s) as u32 + 1).collect()),
            Column::Ids(
                samples
                    .iter()
                    .map(|s| enc.item_year[target_item(s)])
                    .collect(),
            ),
            Column::Ragged {
                values: gv,
                offsets: go,
            },
            ragged(hi),
            ragged(hy),
            ragged(hr),
            ragged(hg),
            ragged(hh),
            ragged(hw),
        ];
        let labels = vec![
            samples
                .iter()
                .map(|s| f32::from(u8::from(r.rating[s.target] >= LIKE_THRESHOLD)))
                .collect(),
            vec![1.0; n],
            samples
                .iter()
                .map(|s| bins.bin(item_pop[target_item(s) + 1] as u64) as f32)
                .collect(),
        ];
        Batch {
            schema: schema.clone(),
            columns,
            labels,
            weights: None,
            slices: Vec::new(),
        }
    }
}

fn seq_schema(enc: &Encoded) -> Schema {
    let items = enc.size("item_id");
    let years = enc.size("year_bucket");
    Schema {
        fields: vec![
            FieldSpec::categorical("user_id", enc.size("user_id")),
            FieldSpec::categorical("item_id", items),
            FieldSpec::categorical("year_bucket", years),
            FieldSpec::multi_hot("genres", enc.size("genres")),
            FieldSpec::sequence("hist_item_id", items, "hist").sharing("item_id"),
            FieldSpec::sequence("hist_year_bucket", years, "hist").sharing("year_bucket"),
            FieldSpec::sequence("hist_rating", 6, "hist"),
            FieldSpec::sequence("hist_gap", time::GAP_VOCAB, "hist"),
            FieldSpec::sequence("hist_hour", time::HOUR_VOCAB, "hist"),
            FieldSpec::sequence("hist_weekend", time::WEEKEND_VOCAB, "hist"),
        ],
        tasks: vec![
            TaskSpec::new("like", TaskKind::Binary),
            TaskSpec::new("next_item", TaskKind::Binary),
            TaskSpec::new(
                "popularity",
                TaskKind::Multiclass {
                    classes: POPULARITY_BINS,
                },
            ),
        ],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    }
}
