//! MovieLens-100k: 943 users, 1682 movies, 100,000 ratings 1-5 with timestamps, and the
//! evaluation protocols built on it.
//!
//! ```no_run
//! use rec_data::movielens::{MovieLens100k, Protocol};
//! let ds = MovieLens100k::load_or_fetch()?; // fetches once, then reloads a binary cache
//! let split = ds.protocol(Protocol::Ctr, 42)?;
//! assert_eq!(split.train.len(), 80_000);
//! # Ok::<(), rec_data::DataError>(())
//! ```
//!
//! # Two layouts, one data set
//! The data set is published in two layouts, and both readers produce the same
//! [`MovieLens100k`] value, normalised to what both layouts carry:
//!
//! | normalised      | GroupLens (`u.user`, `u.item`, `u.data`; latin-1) | RecBole atomic (`ml-100k.*`; UTF-8) |
//! |-----------------|--------------------------------------------------|-------------------------------------|
//! | user id, age, gender, occupation, zip | `u.user` columns 1-5       | `user_id`, `age`, `gender`, `occupation`, `zip_code` |
//! | item id         | movie id                                          | `item_id`                           |
//! | title           | movie title without its last parenthesised group (`"Toy Story (1995)"` -> `"Toy Story"`) | `movie_title` |
//! | release year    | that last group, if it is a 4-digit year          | `release_year`, if a 4-digit year   |
//! | genres          | the 19 genre flags                                | `class` tokens (same 19 names)      |
//! | rating, timestamp | `u.data` columns 3-4                            | `rating`, `timestamp`               |
//!
//! Dropped because only GroupLens has them: the release date, the video release date and the
//! IMDb URL. The release year comes from the title in both layouts because that is where
//! RecBole took it from: its file says `V` for item 1412, whose GroupLens title ends in
//! `(1995) (V)` while its release date is 1995; such non-years (and item 267, titled
//! `unknown`, spelled `unkonwn` by RecBole) have no year. Ratings are stored sorted by
//! (user, timestamp, item), so the data set and every protocol split are the same whichever
//! layout and row order they were read from.

mod atomic;
mod cache;
mod fetch;
mod grouplens;
mod protocols;
mod seq;

use std::collections::HashMap;
use std::path::Path;

pub use cache::{CACHE_FILE, CACHE_VERSION};
pub use fetch::{
    FetchOptions, FetchReport, FileDigests, GROUPLENS_URL, GROUPLENS_ZIP_SHA256, LoadReport,
    Obtained, RECBOLE_REQUIREMENT, RECBOLE_SHA256, dataset_dir, fetch, find_verified, load,
};
pub use protocols::{
    AGE_BAND_EDGES, AGE_BAND_NAMES, COLD_K, COLD_USER_SHARE, DEFAULT_SEED, LIKE_THRESHOLD,
    Protocol, YEAR_EDGES, age_band, year_bucket, year_bucket_names,
};
pub use seq::{
    HISTORY_LEN, MIN_HISTORY, NUM_NEGATIVES, POPULARITY_BINS, SeqExtras, UserAttributes,
};

use crate::error::{DataError, Result};

/// The 19 genres, in the order of the GroupLens flags; bit `g` of [`Item::genres`] is
/// `GENRES[g]`.
pub const GENRES: [&str; 19] = [
    "unknown",
    "Action",
    "Adventure",
    "Animation",
    "Children's",
    "Comedy",
    "Crime",
    "Documentary",
    "Drama",
    "Fantasy",
    "Film-Noir",
    "Horror",
    "Musical",
    "Mystery",
    "Romance",
    "Sci-Fi",
    "Thriller",
    "War",
    "Western",
];

/// A user's gender as MovieLens records it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Gender {
    /// `F`.
    Female,
    /// `M`.
    Male,
}

impl Gender {
    /// `"F"` or `"M"`.
    pub fn code(self) -> &'static str {
        match self {
            Gender::Female => "F",
            Gender::Male => "M",
        }
    }

    fn parse(s: &str) -> Option<Gender> {
        match s {
            "F" => Some(Gender::Female),
            "M" => Some(Gender::Male),
            _ => None,
        }
    }
}

/// One user.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct User {
    /// Raw user id.
    pub id: u32,
    /// Age in years.
    pub age: u8,
    /// Gender.
    pub gender: Gender,
    /// Occupation, e.g. `student`.
    pub occupation: String,
    /// Zip code (not always numeric).
    pub zip: String,
}

/// One movie.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Item {
    /// Raw item id.
    pub id: u32,
    /// Title without the trailing year group.
    pub title: String,
    /// Release year, when the title carries one.
    pub year: Option<u16>,
    /// Genre bitmask: bit `g` set when the movie has genre [`GENRES`]`[g]`.
    pub genres: u32,
}

impl Item {
    /// Indices into [`GENRES`] of this movie's genres, ascending.
    pub fn genre_indices(&self) -> impl Iterator<Item = u32> + '_ {
        (0..GENRES.len() as u32).filter(|g| self.genres & (1 << g) != 0)
    }
}

/// The ratings, columnar, sorted by (user, timestamp, item).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Ratings {
    /// Position of the user in [`MovieLens100k::users`].
    pub user: Vec<u32>,
    /// Position of the item in [`MovieLens100k::items`].
    pub item: Vec<u32>,
    /// Rating 1..=5.
    pub rating: Vec<u8>,
    /// Unix time in seconds.
    pub timestamp: Vec<i64>,
}

impl Ratings {
    /// Number of ratings.
    pub fn len(&self) -> usize {
        self.user.len()
    }

    /// True when there is no rating.
    pub fn is_empty(&self) -> bool {
        self.user.is_empty()
    }
}

/// Which published layout a directory holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// GroupLens's original files `u.user`, `u.item`, `u.data`.
    GroupLens,
    /// RecBole's atomic files `ml-100k.user`, `ml-100k.item`, `ml-100k.inter`.
    Atomic,
}

impl Layout {
    /// The three files of this layout (users, items, ratings), for the ml-100k file names.
    pub fn files(self) -> [&'static str; 3] {
        match self {
            Layout::GroupLens => ["u.user", "u.item", "u.data"],
            Layout::Atomic => ["ml-100k.user", "ml-100k.item", "ml-100k.inter"],
        }
    }

    /// A short name for messages.
    pub fn name(self) -> &'static str {
        match self {
            Layout::GroupLens => "GroupLens",
            Layout::Atomic => "RecBole atomic",
        }
    }
}

/// MovieLens-100k in memory: users and items sorted by raw id, ratings columnar.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MovieLens100k {
    /// Users, sorted by id.
    pub users: Vec<User>,
    /// Items, sorted by id.
    pub items: Vec<Item>,
    /// Ratings, sorted by (user, timestamp, item).
    pub ratings: Ratings,
}

/// One parsed rating row with raw ids, before it is linked to the user and item tables.
pub(crate) struct RawRating {
    pub user: u32,
    pub item: u32,
    pub rating: u8,
    pub timestamp: i64,
}

impl MovieLens100k {
    /// Loads ml-100k from the data directory ([`crate::fetch::data_dir`]), fetching it first
    /// if it is absent, and keeping a binary cache that makes later loads take milliseconds.
    pub fn load_or_fetch() -> Result<Self> {
        Self::load_or_fetch_in(&crate::fetch::data_dir()?)
    }

    /// As [`load_or_fetch`](Self::load_or_fetch), under the data root `root`
    /// (the files live in `root/ml-100k`).
    pub fn load_or_fetch_in(root: &Path) -> Result<Self> {
        fetch::load_or_fetch_in(root, &FetchOptions::default()).map(|(ds, _)| ds)
    }

    /// Loads ml-100k from `root/ml-100k` if it is there and verified (binary cache first);
    /// never downloads. Fails with a message saying how to fetch it when it is absent.
    pub fn load_in(root: &Path) -> Result<Self> {
        fetch::load_in(root).map(|(ds, _)| ds)
    }

    /// Reads the GroupLens files `u.user`, `u.item`, `u.data` in `dir`.
    pub fn read_grouplens(dir: &Path) -> Result<Self> {
        grouplens::read(dir)
    }

    /// Reads the RecBole atomic files `<stem>.user`, `<stem>.item`, `<stem>.inter` in `dir`
    /// (`stem` is `ml-100k` for the real data set).
    pub fn read_atomic(dir: &Path, stem: &str) -> Result<Self> {
        atomic::read(dir, stem)
    }

    /// Reads `dir` in the given layout (ml-100k file names).
    pub fn read_layout(dir: &Path, layout: Layout) -> Result<Self> {
        match layout {
            Layout::GroupLens => Self::read_grouplens(dir),
            Layout::Atomic => Self::read_atomic(dir, "ml-100k"),
        }
    }

    /// Links raw ratings to the tables and sorts everything into canonical order.
    /// `users`/`items` must have unique ids and ratings must reference them (the readers check
    /// both with file positions; this is the last line of defence).
    pub(crate) fn assemble(
        mut users: Vec<User>,
        mut items: Vec<Item>,
        raw: Vec<RawRating>,
    ) -> Result<Self> {
        users.sort_by_key(|u| u.id);
        items.sort_by_key(|i| i.id);
        let upos: HashMap<u32, u32> = users
            .iter()
            .enumerate()
            .map(|(i, u)| (u.id, i as u32))
            .collect();
        let ipos: HashMap<u32, u32> = items
            .iter()
            .enumerate()
            .map(|(i, it)| (it.id, i as u32))
            .collect();
        if upos.len() != users.len() || ipos.len() != items.len() {
            return Err(DataError::Invalid("duplicate user or item ids".into()));
        }
        let mut rows: Vec<(u32, i64, u32, u8)> = Vec::with_capacity(raw.len());
        for r in &raw {
            let (Some(&u), Some(&i)) = (upos.get(&r.user), ipos.get(&r.item)) else {
                return Err(DataError::Invalid(format!(
                    "rating of user {} for item {} names an unknown user or item",
                    r.user, r.item
                )));
            };
            rows.push((u, r.timestamp, i, r.rating));
        }
        rows.sort_unstable();
        let mut ratings = Ratings::default();
        for (u, t, i, r) in rows {
            ratings.user.push(u);
            ratings.item.push(i);
            ratings.rating.push(r);
            ratings.timestamp.push(t);
        }
        Ok(Self {
            users,
            items,
            ratings,
        })
    }

    /// Number of users.
    pub fn num_users(&self) -> usize {
        self.users.len()
    }

    /// Number of items.
    pub fn num_items(&self) -> usize {
        self.items.len()
    }

    /// Number of ratings.
    pub fn num_ratings(&self) -> usize {
        self.ratings.len()
    }

    /// Share of ratings `>= threshold`.
    pub fn positive_rate(&self, threshold: u8) -> f64 {
        let pos = self
            .ratings
            .rating
            .iter()
            .filter(|&&r| r >= threshold)
            .count();
        pos as f64 / self.num_ratings().max(1) as f64
    }

    /// `offsets[u]..offsets[u + 1]` are the rating rows of user `u` (by position), which are
    /// contiguous and in time order because ratings are sorted by (user, timestamp, item).
    pub fn user_offsets(&self) -> Vec<usize> {
        let mut off = vec![0usize; self.users.len() + 1];
        for &u in &self.ratings.user {
            off[u as usize + 1] += 1;
        }
        for i in 0..self.users.len() {
            off[i + 1] += off[i];
        }
        off
    }

    /// Number of ratings of each item (by position).
    pub fn item_counts(&self) -> Vec<u32> {
        let mut c = vec![0u32; self.items.len()];
        for &i in &self.ratings.item {
            c[i as usize] += 1;
        }
        c
    }
}

/// Splits a GroupLens title into the title proper and the year in its last parenthesised group
/// (`"Richard III (1995)"` -> `("Richard III", Some(1995))`). A last group that is not a year
/// (`"... (1995) (V)"`) is removed but gives no year; a title without a group is kept whole.
pub fn split_title_year(raw: &str) -> (String, Option<u16>) {
    let t = raw.trim();
    if let (true, Some(open)) = (t.ends_with(')'), t.rfind('(')) {
        let inner = &t[open + 1..t.len() - 1];
        let title = t[..open].trim_end().to_string();
        return (title, parse_year(inner));
    }
    (t.to_string(), None)
}

/// A 4-digit year, or `None`.
pub(crate) fn parse_year(s: &str) -> Option<u16> {
    // Year 0 is no year (and the binary cache stores an unknown year as 0).
    (s.len() == 4 && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
        .filter(|&y| y != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn titles_split_like_recbole() {
        assert_eq!(
            split_title_year("Toy Story (1995)"),
            ("Toy Story".into(), Some(1995))
        );
        assert_eq!(
            split_title_year("Shanghai Triad (Yao a yao yao dao waipo qiao) (1995) "),
            (
                "Shanghai Triad (Yao a yao yao dao waipo qiao)".into(),
                Some(1995)
            )
        );
        assert_eq!(
            split_title_year("Land Before Time III (1995) (V)"),
            ("Land Before Time III (1995)".into(), None)
        );
        assert_eq!(split_title_year("unknown"), ("unknown".into(), None));
        assert_eq!(parse_year("V"), None);
        assert_eq!(parse_year("19951"), None);
        // Year 0 is no year: the binary cache could not tell it from an unknown one.
        assert_eq!(parse_year("0000"), None);
        assert_eq!(split_title_year("X (0000)"), ("X".into(), None));
    }
}

#[cfg(test)]
pub(crate) mod testutil {
    //! A small random data set in the MovieLens shape, for tests that must not need the real one.
    use super::*;
    use rand::{Rng, SeedableRng};

    /// 40 users with 12..40 ratings each over 300 items, timestamps with ties.
    pub fn tiny(seed: u64) -> MovieLens100k {
        let mut g = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let occupations = ["artist", "doctor", "student", "writer"];
        let users: Vec<User> = (1..=40)
            .map(|id| User {
                id,
                age: g.random_range(10..70),
                gender: if g.random_bool(0.5) {
                    Gender::Male
                } else {
                    Gender::Female
                },
                occupation: occupations[g.random_range(0..4)].to_string(),
                zip: format!("{:05}", g.random_range(0..99999)),
            })
            .collect();
        let items: Vec<Item> = (1..=300)
            .map(|id| Item {
                id,
                title: format!("Movie {id}"),
                year: (id % 17 != 0).then(|| 1930 + (id as u16 * 7) % 69),
                genres: g.random_range(0..(1 << GENRES.len())),
            })
            .collect();
        let mut raw = Vec::new();
        for u in 1..=40u32 {
            let n = g.random_range(12..40);
            let mut seen = std::collections::HashSet::new();
            let mut t = 880_000_000 + g.random_range(0..1_000_000i64);
            while seen.len() < n {
                // Popular items are drawn more often (items 1..30 twice as likely).
                let i = if g.random_bool(0.4) {
                    g.random_range(1..=30)
                } else {
                    g.random_range(1..=300)
                };
                if seen.insert(i) {
                    if g.random_bool(0.7) {
                        t += g.random_range(0..200_000);
                    }
                    raw.push(RawRating {
                        user: u,
                        item: i,
                        rating: g.random_range(1..=5),
                        timestamp: t,
                    });
                }
            }
        }
        MovieLens100k::assemble(users, items, raw).unwrap()
    }
}

#[cfg(test)]
mod protocol_tests;
