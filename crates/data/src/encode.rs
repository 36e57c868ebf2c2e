//! Feature encoding: vocabularies, bucketing and quantile bins.
//!
//! Every categorical value a model sees is a dense index into a vocabulary whose index 0 is the
//! reserved [`OOV`] slot: it stands for tokens that were not in the vocabulary when it was built,
//! and for missing values (an unknown release year, an empty cell). Known tokens are numbered
//! from 1.

use std::collections::HashMap;

use serde::{Deserialize, Serialize};

use crate::schema::OOV;

/// Raw token -> dense index, with index 0 reserved for out-of-vocabulary tokens.
///
/// ```
/// use rec_data::{OOV, encode::Vocab};
/// let v = Vocab::from_tokens(["M", "F"]);
/// assert_eq!(v.size(), 3); // OOV + 2 tokens
/// assert_eq!(v.get("M"), 1);
/// assert_eq!(v.get("X"), OOV);
/// assert_eq!(v.token(2), Some("F"));
/// ```
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(try_from = "Vec<String>", into = "Vec<String>")]
pub struct Vocab {
    /// `tokens[i]` has index `i + 1`.
    tokens: Vec<String>,
    index: HashMap<String, u32>,
}

impl PartialEq for Vocab {
    fn eq(&self, other: &Self) -> bool {
        self.tokens == other.tokens
    }
}

impl Eq for Vocab {}

/// A stored vocabulary (a checkpoint's token list) must hold each token once: a repeated token
/// would silently renumber every token after it.
impl TryFrom<Vec<String>> for Vocab {
    type Error = String;

    fn try_from(tokens: Vec<String>) -> Result<Self, String> {
        let mut seen = std::collections::HashSet::with_capacity(tokens.len());
        if let Some((k, dup)) = tokens
            .iter()
            .enumerate()
            .find(|(_, t)| !seen.insert(t.as_str()))
        {
            return Err(format!(
                "vocabulary token {dup:?} repeated at position {k}; each token must appear once"
            ));
        }
        Ok(Vocab::from_tokens(tokens))
    }
}

impl From<Vocab> for Vec<String> {
    fn from(v: Vocab) -> Self {
        v.tokens
    }
}

impl Vocab {
    /// An empty vocabulary (only the OOV slot).
    pub fn new() -> Self {
        Self::default()
    }

    /// A vocabulary holding `tokens` in the given order (index 1, 2, ...); repeated tokens keep
    /// their first index.
    pub fn from_tokens<I, S>(tokens: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut v = Vocab::new();
        for t in tokens {
            v.insert(t);
        }
        v
    }

    /// A vocabulary of the tokens seen at least `min_count` times, most frequent first (ties in
    /// token order), so that index order is frequency order.
    pub fn by_frequency<'a, I>(tokens: I, min_count: usize) -> Self
    where
        I: IntoIterator<Item = &'a str>,
    {
        let mut counts: HashMap<&str, usize> = HashMap::new();
        for t in tokens {
            *counts.entry(t).or_default() += 1;
        }
        let mut sorted: Vec<(&str, usize)> = counts
            .into_iter()
            .filter(|&(_, c)| c >= min_count.max(1))
            .collect();
        sorted.sort_unstable_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
        Vocab::from_tokens(sorted.into_iter().map(|(t, _)| t))
    }

    /// Adds `token` if absent; returns its index.
    pub fn insert(&mut self, token: impl Into<String>) -> u32 {
        let token = token.into();
        if let Some(&i) = self.index.get(&token) {
            return i;
        }
        self.tokens.push(token.clone());
        let i = self.tokens.len() as u32;
        self.index.insert(token, i);
        i
    }

    /// The index of `token`, or [`OOV`] when it is not in the vocabulary.
    pub fn get(&self, token: &str) -> u32 {
        self.lookup(token).unwrap_or(OOV)
    }

    /// The index of `token`, if it is in the vocabulary.
    pub fn lookup(&self, token: &str) -> Option<u32> {
        self.index.get(token).copied()
    }

    /// The token at `index` (`None` for [`OOV`] and out-of-range indices).
    pub fn token(&self, index: u32) -> Option<&str> {
        (index as usize)
            .checked_sub(1)
            .and_then(|i| self.tokens.get(i))
            .map(String::as_str)
    }

    /// The known tokens, in index order (index 1 first).
    pub fn tokens(&self) -> &[String] {
        &self.tokens
    }

    /// Vocabulary size as a [`FieldSpec`](crate::FieldSpec) counts it: known tokens + 1 (OOV).
    pub fn size(&self) -> usize {
        self.tokens.len() + 1
    }

    /// Number of known tokens.
    pub fn num_known(&self) -> usize {
        self.tokens.len()
    }
}

/// Right-open buckets over numbers: values below `edges[0]` fall in bucket 1, values in
/// `[edges[k-1], edges[k])` in bucket `k + 1`, values at or above the last edge in the last
/// bucket; bucket 0 is kept for missing values ([`OOV`]).
///
/// ```
/// use rec_data::encode::Buckets;
/// let b = Buckets::new(vec![25.0, 35.0]).unwrap();
/// assert_eq!((b.index(Some(24.0)), b.index(Some(25.0)), b.index(Some(60.0))), (1, 2, 3));
/// assert_eq!(b.index(None), 0);
/// assert_eq!(b.size(), 4);
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Buckets {
    edges: Vec<f64>,
}

impl Buckets {
    /// Buckets with the given strictly increasing, finite edges.
    pub fn new(edges: Vec<f64>) -> Result<Self, String> {
        if edges.iter().any(|e| !e.is_finite()) {
            return Err("bucket edges must be finite".into());
        }
        if edges.windows(2).any(|w| w[0] >= w[1]) {
            return Err(format!("bucket edges must increase strictly: {edges:?}"));
        }
        Ok(Self { edges })
    }

    /// The bucket of `value` (1-based), or 0 when the value is missing or NaN.
    pub fn index(&self, value: Option<f64>) -> u32 {
        match value {
            Some(x) if !x.is_nan() => 1 + self.edges.partition_point(|&e| e <= x) as u32,
            _ => OOV,
        }
    }

    /// The edges.
    pub fn edges(&self) -> &[f64] {
        &self.edges
    }

    /// Vocabulary size: one bucket more than edges, plus the missing-value slot.
    pub fn size(&self) -> usize {
        self.edges.len() + 2
    }
}

/// Splits values into `k` bins of (roughly) equal counts: the edges are the `j/k` quantiles of
/// the fitted values (`j = 1..k`), and a value's bin is the number of edges it reaches (0-based,
/// no missing slot: these are class labels, not features). Ties can make bins unequal.
///
/// ```
/// use rec_data::encode::QuantileBins;
/// let q = QuantileBins::fit(&[1, 2, 3, 4, 5, 6, 7, 8], 4).unwrap();
/// assert_eq!(q.edges(), &[3, 5, 7]);
/// assert_eq!((q.bin(1), q.bin(3), q.bin(8)), (0, 1, 3));
/// ```
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct QuantileBins {
    edges: Vec<u64>,
}

impl QuantileBins {
    /// Fits `k >= 1` bins to `values` (not necessarily sorted).
    pub fn fit(values: &[u64], k: usize) -> Result<Self, String> {
        if k == 0 {
            return Err("the number of quantile bins must be at least 1".into());
        }
        if values.is_empty() {
            return Err("cannot fit quantile bins to no values".into());
        }
        let mut sorted = values.to_vec();
        sorted.sort_unstable();
        let n = sorted.len();
        let edges = (1..k).map(|j| sorted[(j * n / k).min(n - 1)]).collect();
        Ok(Self { edges })
    }

    /// The bin of `value`, in `0..k`.
    pub fn bin(&self, value: u64) -> u32 {
        self.edges.partition_point(|&e| e <= value) as u32
    }

    /// The `k - 1` inner edges; bin `j` holds values in `[edges[j-1], edges[j])`.
    pub fn edges(&self) -> &[u64] {
        &self.edges
    }

    /// Number of bins.
    pub fn num_bins(&self) -> usize {
        self.edges.len() + 1
    }
}

/// Time features of Unix timestamps (seconds, UTC), each a small vocabulary with 0 = missing.
pub mod time {
    /// Upper bounds (seconds, exclusive) of the time-gap buckets 1..=6; bucket 7 is a year or more.
    pub const GAP_BOUNDS: [i64; 6] = [60, 3_600, 86_400, 7 * 86_400, 30 * 86_400, 365 * 86_400];
    /// Vocabulary size of [`gap_bucket`]: 7 buckets + the missing slot.
    pub const GAP_VOCAB: usize = GAP_BOUNDS.len() + 2;
    /// Vocabulary size of [`hour_band`]: 4 bands + the missing slot.
    pub const HOUR_VOCAB: usize = 5;
    /// Vocabulary size of [`weekend`]: weekday, weekend + the missing slot.
    pub const WEEKEND_VOCAB: usize = 3;

    /// Bucket of the gap `seconds >= 0` between a behaviour and the moment of prediction:
    /// 1: under a minute, 2: an hour, 3: a day, 4: a week, 5: 30 days, 6: a year, 7: longer.
    /// Negative gaps (clock skew) count as 0 seconds.
    pub fn gap_bucket(seconds: i64) -> u32 {
        1 + GAP_BOUNDS.partition_point(|&b| b <= seconds.max(0)) as u32
    }

    /// Band of the UTC hour of day: 1: 0-5 h, 2: 6-11 h, 3: 12-17 h, 4: 18-23 h.
    pub fn hour_band(ts: i64) -> u32 {
        1 + (ts.rem_euclid(86_400) / 21_600) as u32
    }

    /// 1 for Monday to Friday, 2 for Saturday and Sunday (UTC).
    pub fn weekend(ts: i64) -> u32 {
        // 1970-01-01 was a Thursday: day 0 -> weekday index 3 (Monday = 0).
        let weekday = (ts.div_euclid(86_400) + 3).rem_euclid(7);
        if weekday >= 5 { 2 } else { 1 }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn vocab_roundtrips_through_serde_and_keeps_oov() {
        let v = Vocab::from_tokens(["b", "a", "b", "c"]);
        assert_eq!(v.size(), 4);
        assert_eq!(v.get("b"), 1);
        assert_eq!(v.get("c"), 3);
        assert_eq!(v.get("zz"), OOV);
        assert_eq!(v.token(0), None);
        assert_eq!(v.token(4), None);
        let json = serde_json::to_string(&v).unwrap();
        assert_eq!(json, r#"["b","a","c"]"#);
        let back: Vocab = serde_json::from_str(&json).unwrap();
        assert_eq!(back, v);
        assert_eq!(back.get("a"), 2);
        // A stored list that repeats a token would renumber every token after it: refused.
        let e = serde_json::from_str::<Vocab>(r#"["a","b","a","c"]"#)
            .unwrap_err()
            .to_string();
        assert!(e.contains(r#"token "a" repeated at position 2"#), "{e}");
    }

    #[test]
    fn vocab_by_frequency_orders_and_filters() {
        let v = Vocab::by_frequency(["x", "y", "y", "z", "z", "z", "w"], 1);
        assert_eq!(v.tokens(), &["z", "y", "w", "x"]);
        let v = Vocab::by_frequency(["x", "y", "y", "z", "z", "z"], 2);
        assert_eq!(v.tokens(), &["z", "y"]);
    }

    #[test]
    fn time_features() {
        use time::*;
        assert_eq!(gap_bucket(0), 1);
        assert_eq!(gap_bucket(59), 1);
        assert_eq!(gap_bucket(60), 2);
        assert_eq!(gap_bucket(86_399), 3);
        assert_eq!(gap_bucket(400 * 86_400), 7);
        assert_eq!(gap_bucket(-5), 1);
        // 1998-04-22 23:10:00 UTC (Wednesday) and 1998-04-25 08:00:00 UTC (Saturday).
        assert_eq!((hour_band(893_286_200), weekend(893_286_200)), (4, 1));
        assert_eq!((hour_band(893_491_200), weekend(893_491_200)), (2, 2));
        assert_eq!(weekend(0), 1); // Thursday
        assert_eq!(weekend(2 * 86_400), 2); // Saturday
    }

    #[test]
    fn buckets_reject_bad_edges() {
        assert!(Buckets::new(vec![2.0, 1.0]).is_err());
        assert!(Buckets::new(vec![f64::NAN]).is_err());
        assert_eq!(Buckets::new(vec![]).unwrap().index(Some(3.0)), 1);
    }

    proptest! {
        #[test]
        fn buckets_are_monotone_and_in_range(
            mut edges in proptest::collection::vec(-1e3f64..1e3, 0..8),
            xs in proptest::collection::vec(-2e3f64..2e3, 1..50),
        ) {
            edges.sort_by(f64::total_cmp);
            edges.dedup();
            let b = Buckets::new(edges).unwrap();
            let mut xs = xs;
            xs.sort_by(f64::total_cmp);
            let idx: Vec<u32> = xs.iter().map(|&x| b.index(Some(x))).collect();
            prop_assert!(idx.windows(2).all(|w| w[0] <= w[1]));
            prop_assert!(idx.iter().all(|&i| i >= 1 && (i as usize) < b.size()));
        }

        #[test]
        fn quantile_bins_are_roughly_balanced(
            values in proptest::collection::hash_set(0u64..100_000, 50..400),
            k in 1usize..10,
        ) {
            // Distinct values: every bin holds n/k values, up to rounding.
            let values: Vec<u64> = values.into_iter().collect();
            let q = QuantileBins::fit(&values, k).unwrap();
            let mut counts = vec![0usize; k];
            for &v in &values {
                counts[q.bin(v) as usize] += 1;
            }
            let n = values.len();
            for c in counts {
                prop_assert!(c.abs_diff(n / k) <= 1, "count {} for n {} k {}", c, n, k);
            }
        }
    }
}
