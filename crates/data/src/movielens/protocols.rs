//! The rating-based protocols of the project's protocol card on ml-100k: P-CTR, P-RATING,
//! P-COLD and P-MS (P-SEQ lives in `seq.rs`).
//!
//! Shared by the four:
//! - fields: `user_id`, `item_id`, `gender`, `age_band`, `occupation`, `year_bucket`
//!   (categorical) and `genres` (multi-hot); P-MS replaces `age_band` by the scenario field.
//!   Every vocabulary reserves index 0 ([`crate::OOV`]) and is built from the whole user and
//!   item tables (so every known user and item has its own row even if absent from training);
//!   `year_bucket` 0 means "no release year";
//! - the label `like` = rating >= 4 ([`LIKE_THRESHOLD`]); the target `rating` is the rating 1-5;
//! - the random 80/10/10 split of the ratings, drawn from the seed ([`crate::split::random_split`]).
//!   P-CTR, P-RATING and P-MS use the same split for the same seed.

use std::collections::BTreeMap;
use std::str::FromStr;
use std::sync::Arc;

use rand::seq::SliceRandom;
use serde::{Deserialize, Serialize};

use super::{GENRES, Gender, MovieLens100k};
use crate::batch::{Batch, Column, Slice};
use crate::encode::Vocab;
use crate::error::{DataError, Result};
use crate::iter::rng;
use crate::schema::{FieldSpec, Schema, TaskKind, TaskSpec};
use crate::split::{ItemTable, Split, random_split};

/// Ratings at or above this are positives (`like` = 1).
pub const LIKE_THRESHOLD: u8 = 4;
/// The seed used when none is given (`cargo xtask data stats`).
pub const DEFAULT_SEED: u64 = 42;
/// Age bands: `< 25`, `25..35`, `>= 35` (the P-MS scenarios).
pub const AGE_BAND_EDGES: [u8; 2] = [25, 35];
/// Names of the age bands, by band index.
pub const AGE_BAND_NAMES: [&str; 3] = ["<25", "25-34", ">=35"];
/// Lower edges of the release-year buckets 2..=13; bucket 1 is before 1940, 0 is unknown.
/// Decades until 1990, then single years where most movies are (1993-1998).
pub const YEAR_EDGES: [u16; 12] = [
    1940, 1950, 1960, 1970, 1980, 1990, 1993, 1994, 1995, 1996, 1997, 1998,
];
/// Share of users made cold in P-COLD.
pub const COLD_USER_SHARE: f64 = 0.2;
/// Ratings a cold user keeps in training (the earliest ones), and the rating count at or below
/// which an item is cold.
pub const COLD_K: usize = 5;

const STREAM_COLD_USERS: u64 = 0x434f_4c44_5553_4552;

/// Age band 0..3 of an age (see [`AGE_BAND_EDGES`]).
pub fn age_band(age: u8) -> u32 {
    AGE_BAND_EDGES.partition_point(|&e| e <= age) as u32
}

/// Release-year bucket: 0 for an unknown year, else 1..=13 (see [`YEAR_EDGES`]).
pub fn year_bucket(year: Option<u16>) -> u32 {
    year.map_or(0, |y| 1 + YEAR_EDGES.partition_point(|&e| e <= y) as u32)
}

/// Names of the release-year buckets 1..=13 (for the `year_bucket` vocabulary).
pub fn year_bucket_names() -> Vec<String> {
    let mut names = vec![format!("<{}", YEAR_EDGES[0])];
    for w in YEAR_EDGES.windows(2) {
        names.push(if w[1] == w[0] + 1 {
            w[0].to_string()
        } else {
            format!("{}-{}", w[0], w[1] - 1)
        });
    }
    names.push(format!(">={}", YEAR_EDGES[YEAR_EDGES.len() - 1]));
    names
}

/// The evaluation protocols on ml-100k.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Protocol {
    /// P-CTR: like = rating >= 4, all features, random 80/10/10.
    Ctr,
    /// P-RATING: the P-CTR split with the rating as a regression target.
    Rating,
    /// P-COLD: 20% of users keep only their 5 earliest ratings in training; slices
    /// `cold_users`, `cold_items`, `warm`.
    Cold,
    /// P-MS: P-CTR with the user's age band as the scenario (3 scenarios).
    MultiScenario,
    /// P-SEQ: time-ordered sequences, leave-last-two-out; tasks like, next item, popularity.
    Seq,
}

impl Protocol {
    /// Every protocol, in card order.
    pub const ALL: [Protocol; 5] = [
        Protocol::Ctr,
        Protocol::Rating,
        Protocol::Cold,
        Protocol::MultiScenario,
        Protocol::Seq,
    ];

    /// The card's name, e.g. `P-CTR`.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Ctr => "P-CTR",
            Protocol::Rating => "P-RATING",
            Protocol::Cold => "P-COLD",
            Protocol::MultiScenario => "P-MS",
            Protocol::Seq => "P-SEQ",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Protocol {
    type Err = String;

    /// Accepts the card's names and short forms, in any case: `P-CTR`, `ctr`, `ms`,
    /// `multi-scenario`, ...
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let l = s.to_ascii_lowercase();
        let l = l.strip_prefix("p-").unwrap_or(&l);
        Ok(match l {
            "ctr" => Protocol::Ctr,
            "rating" => Protocol::Rating,
            "cold" => Protocol::Cold,
            "ms" | "multi-scenario" | "multiscenario" => Protocol::MultiScenario,
            "seq" => Protocol::Seq,
            _ => {
                return Err(format!(
                    "unknown protocol `{s}` (ctr, rating, cold, ms, seq)"
                ));
            }
        })
    }
}

impl MovieLens100k {
    /// The split of `protocol`, drawn from `seed` (same seed, same split).
    pub fn protocol(&self, protocol: Protocol, seed: u64) -> Result<Split> {
        if self.ratings.is_empty() {
            return Err(DataError::Invalid("the data set has no rating".into()));
        }
        match protocol {
            Protocol::Ctr => Ok(self.rating_protocol(protocol, seed)),
            Protocol::Rating => Ok(self.rating_protocol(protocol, seed)),
            Protocol::MultiScenario => Ok(self.rating_protocol(protocol, seed)),
            Protocol::Cold => Ok(self.cold_protocol(seed)),
            Protocol::Seq => self.seq_protocol(seed),
        }
    }

    fn rating_protocol(&self, protocol: Protocol, seed: u64) -> Split {
        let enc = Encoded::new(self);
        let tasks = match protocol {
            Protocol::Rating => vec![TaskSpec::new("rating", TaskKind::Regression)],
            _ => vec![TaskSpec::new("like", TaskKind::Binary)],
        };
        let scenario = protocol == Protocol::MultiScenario;
        let schema = Arc::new(enc.schema(tasks, scenario));
        let [tr, va, te] = random_split(self.num_ratings(), seed, [0.8, 0.1, 0.1]);
        enc.split(self, protocol, seed, schema, [&tr, &va, &te], scenario)
    }

    /// Which users P-COLD makes cold: `round(20%)` of the users, drawn from the seed; sorted
    /// positions.
    pub fn cold_users(&self, seed: u64) -> Vec<u32> {
        let mut users: Vec<u32> = (0..self.num_users() as u32).collect();
        users.shuffle(&mut rng(seed, STREAM_COLD_USERS));
        let m = (self.num_users() as f64 * COLD_USER_SHARE).round() as usize;
        let mut cold = users[..m].to_vec();
        cold.sort_unstable();
        cold
    }

    /// P-COLD. Warm users' ratings go where P-CTR (same seed) puts them; a cold user's earliest
    /// [`COLD_K`] ratings (by timestamp, ties by item id) are in train and the rest in test.
    /// Cold items are items with at most [`COLD_K`] ratings in train. Validation and test carry
    /// the slices `cold_users` (the sample's user is cold), `cold_items` (its item is cold) and
    /// `warm` (neither); "all" is the whole batch. Validation holds warm users only (cold users
    /// have no validation ratings) but can hold cold items. Tasks: `like` and `rating`; use
    /// [`Split::with_tasks`] to keep one.
    fn cold_protocol(&self, seed: u64) -> Split {
        let n = self.num_ratings();
        let [tr, va, _] = random_split(n, seed, [0.8, 0.1, 0.1]);
        let mut part = vec![2u8; n];
        tr.iter().for_each(|&r| part[r] = 0);
        va.iter().for_each(|&r| part[r] = 1);
        let cold = self.cold_users(seed);
        let mut is_cold_user = vec![false; self.num_users()];
        let off = self.user_offsets();
        for &u in &cold {
            is_cold_user[u as usize] = true;
            // Ratings are sorted by (user, timestamp, item): a user's rows are in time order.
            for (k, r) in (off[u as usize]..off[u as usize + 1]).enumerate() {
                part[r] = if k < COLD_K { 0 } else { 2 };
            }
        }
        let rows = |p: u8| -> Vec<usize> { (0..n).filter(|&r| part[r] == p).collect() };
        let (tr, va, te) = (rows(0), rows(1), rows(2));
        let mut train_count = vec![0usize; self.num_items()];
        for &r in &tr {
            train_count[self.ratings.item[r] as usize] += 1;
        }
        let enc = Encoded::new(self);
        let schema = Arc::new(enc.schema(
            vec![
                TaskSpec::new("like", TaskKind::Binary),
                TaskSpec::new("rating", TaskKind::Regression),
            ],
            false,
        ));
        let mut split = enc.split(self, Protocol::Cold, seed, schema, [&tr, &va, &te], false);
        for (batch, rows) in [(&mut split.valid, &va), (&mut split.test, &te)] {
            let cu: Vec<bool> = rows
                .iter()
                .map(|&r| is_cold_user[self.ratings.user[r] as usize])
                .collect();
            let ci: Vec<bool> = rows
                .iter()
                .map(|&r| train_count[self.ratings.item[r] as usize] <= COLD_K)
                .collect();
            let warm = cu.iter().zip(&ci).map(|(&a, &b)| !a && !b).collect();
            batch.slices = vec![
                Slice {
                    name: "cold_users".into(),
                    mask: cu,
                },
                Slice {
                    name: "cold_items".into(),
                    mask: ci,
                },
                Slice {
                    name: "warm".into(),
                    mask: warm,
                },
            ];
        }
        split
    }
}

/// Per-user and per-item encodings shared by the protocols.
pub(super) struct Encoded {
    pub user_gender: Vec<u32>,
    pub user_age_band: Vec<u32>,
    pub user_occupation: Vec<u32>,
    pub item_year: Vec<u32>,
    pub item_genres: Vec<Vec<u32>>,
    pub vocabs: BTreeMap<String, Vocab>,
}

impl Encoded {
    pub fn new(ds: &MovieLens100k) -> Self {
        let user_vocab = Vocab::from_tokens(ds.users.iter().map(|u| u.id.to_string()));
        let item_vocab = Vocab::from_tokens(ds.items.iter().map(|i| i.id.to_string()));
        let gender = Vocab::from_tokens([Gender::Female.code(), Gender::Male.code()]);
        let age = Vocab::from_tokens(AGE_BAND_NAMES);
        let mut occ: Vec<&str> = ds.users.iter().map(|u| u.occupation.as_str()).collect();
        occ.sort_unstable();
        occ.dedup();
        let occupation = Vocab::from_tokens(occ);
        let years = Vocab::from_tokens(year_bucket_names());
        let genres = Vocab::from_tokens(GENRES);
        let enc = Self {
            user_gender: ds
                .users
                .iter()
                .map(|u| gender.get(u.gender.code()))
                .collect(),
            user_age_band: ds.users.iter().map(|u| age_band(u.age) + 1).collect(),
            user_occupation: ds
                .users
                .iter()
                .map(|u| occupation.get(&u.occupation))
                .collect(),
            item_year: ds.items.iter().map(|i| year_bucket(i.year)).collect(),
            item_genres: ds
                .items
                .iter()
                .map(|i| i.genre_indices().map(|g| g + 1).collect())
                .collect(),
            vocabs: BTreeMap::from([
                ("user_id".to_string(), user_vocab),
                ("item_id".to_string(), item_vocab),
                ("gender".to_string(), gender),
                ("age_band".to_string(), age),
                ("occupation".to_string(), occupation),
                ("year_bucket".to_string(), years),
                ("genres".to_string(), genres),
            ]),
        };
        debug_assert_eq!(enc.vocabs["user_id"].get(&ds.users[0].id.to_string()), 1);
        enc
    }

    pub fn size(&self, name: &str) -> usize {
        self.vocabs[name].size()
    }

    /// The fields of the rating protocols (P-MS: the scenario instead of the age band).
    pub fn schema(&self, tasks: Vec<TaskSpec>, scenario: bool) -> Schema {
        let mut fields = vec![
            FieldSpec::categorical("user_id", self.size("user_id")),
            FieldSpec::categorical("item_id", self.size("item_id")),
            FieldSpec::categorical("gender", self.size("gender")),
        ];
        if scenario {
            // Every user has an age, so every sample has a scenario: indices 0..3, no OOV slot.
            fields.push(FieldSpec::categorical("scenario", AGE_BAND_NAMES.len()));
        } else {
            fields.push(FieldSpec::categorical("age_band", self.size("age_band")));
        }
        fields.extend([
            FieldSpec::categorical("occupation", self.size("occupation")),
            FieldSpec::categorical("year_bucket", self.size("year_bucket")),
            FieldSpec::multi_hot("genres", self.size("genres")),
        ]);
        Schema {
            fields,
            tasks,
            user_field: Some("user_id".into()),
            item_field: Some("item_id".into()),
            scenario_field: scenario.then(|| "scenario".into()),
            num_scenarios: if scenario { AGE_BAND_NAMES.len() } else { 1 },
        }
    }

    /// The item-side rows (`item_id`, `year_bucket`, `genres`) for every item index.
    pub fn item_table(&self) -> ItemTable {
        let n = self.item_year.len();
        let mut values = Vec::new();
        let mut offsets = vec![0u32, 0];
        for g in &self.item_genres {
            values.extend_from_slice(g);
            offsets.push(values.len() as u32);
        }
        ItemTable {
            fields: vec!["item_id".into(), "year_bucket".into(), "genres".into()],
            columns: vec![
                Column::Ids((0..=n as u32).collect()),
                Column::Ids(
                    std::iter::once(0)
                        .chain(self.item_year.iter().copied())
                        .collect(),
                ),
                Column::Ragged { values, offsets },
            ],
        }
    }

    /// A batch of the rating rows `rows` for `schema`.
    pub fn batch(&self, ds: &MovieLens100k, schema: &Arc<Schema>, rows: &[usize]) -> Batch {
        let r = &ds.ratings;
        let user = |row: usize| r.user[row] as usize;
        let item = |row: usize| r.item[row] as usize;
        let columns = schema
            .fields
            .iter()
            .map(|f| {
                let ids =
                    |g: &dyn Fn(usize) -> u32| Column::Ids(rows.iter().map(|&x| g(x)).collect());
                match f.name.as_str() {
                    "user_id" => ids(&|x| user(x) as u32 + 1),
                    "item_id" => ids(&|x| item(x) as u32 + 1),
                    "gender" => ids(&|x| self.user_gender[user(x)]),
                    "age_band" => ids(&|x| self.user_age_band[user(x)]),
                    "scenario" => ids(&|x| self.user_age_band[user(x)] - 1),
                    "occupation" => ids(&|x| self.user_occupation[user(x)]),
                    "year_bucket" => ids(&|x| self.item_year[item(x)]),
                    "genres" => {
                        let mut values = Vec::new();
                        let mut offsets = Vec::with_capacity(rows.len() + 1);
                        offsets.push(0u32);
                        for &x in rows {
                            values.extend_from_slice(&self.item_genres[item(x)]);
                            offsets.push(values.len() as u32);
                        }
                        Column::Ragged { values, offsets }
                    }
                    other => unreachable!("no rating-protocol field `{other}`"),
                }
            })
            .collect();
        let labels = schema
            .tasks
            .iter()
            .map(|t| match t.name.as_str() {
                "like" => rows
                    .iter()
                    .map(|&x| f32::from(u8::from(r.rating[x] >= LIKE_THRESHOLD)))
                    .collect(),
                "rating" => rows.iter().map(|&x| f32::from(r.rating[x])).collect(),
                other => unreachable!("no rating-protocol task `{other}`"),
            })
            .collect();
        Batch {
            schema: schema.clone(),
            columns,
            labels,
            weights: None,
            slices: Vec::new(),
        }
    }

    pub fn split(
        &self,
        ds: &MovieLens100k,
        protocol: Protocol,
        seed: u64,
        schema: Arc<Schema>,
        parts: [&[usize]; 3],
        scenario: bool,
    ) -> Split {
        let mut vocabs = self.vocabs.clone();
        if scenario {
            vocabs.remove("age_band");
        }
        Split {
            name: protocol.name().into(),
            seed,
            train: self.batch(ds, &schema, parts[0]),
            valid: self.batch(ds, &schema, parts[1]),
            test: self.batch(ds, &schema, parts[2]),
            schema,
            vocabs,
            scenario_names: if scenario {
                AGE_BAND_NAMES.iter().map(|s| s.to_string()).collect()
            } else {
                Vec::new()
            },
            items: Some(self.item_table()),
            seq: None,
        }
    }
}
