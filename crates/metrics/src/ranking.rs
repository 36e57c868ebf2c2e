//! Ranking: HR@K, NDCG@K, MRR, Recall@K and per-query AUC over lists of scored candidates.
//!
//! # Input
//! A [`Queries`] value: the scores of every candidate of every query, laid out one query after
//! another, with a parallel flag saying which candidates are relevant. Queries either all have
//! the same number of candidates ([`Queries::fixed`], e.g. the P-SEQ protocol: 1 target + 100
//! sampled negatives per user, a `[users, 101]` score matrix) or have their own lengths
//! ([`Queries::with_offsets`], CSR-style offsets). Every query needs at least one relevant
//! candidate; NaN scores are errors.
//!
//! # Definitions (binary relevance; R = number of relevant candidates of a query)
//! - HR@K (hit rate): 1 if at least one relevant candidate is in the top K, else 0.
//! - Recall@K: (relevant candidates in the top K) / R.
//! - NDCG@K: DCG@K / IDCG@K with DCG@K = Σ over relevant candidates at rank r ≤ K of
//!   1 / log2(r + 1), and IDCG@K the DCG of a perfect ranking (min(R, K) leading hits).
//! - MRR: 1 / (rank of the first relevant candidate), over the whole list (no cut-off).
//! - AUC (per query): the fraction of (relevant, non-relevant) pairs ordered correctly, ties
//!   one half; averaged over the queries that have a non-relevant candidate.
//!
//! Each metric is averaged over queries (every query weighs the same).
//!
//! # Ties
//! Tied scores are resolved **in expectation**: every value is the average of the metric over all
//! orderings of tied candidates, each equally likely (the same convention as AUC's "ties count
//! one half"). So a model that outputs a constant gets HR@10 = 10/101 on 1-vs-100 lists, not the
//! 1 an optimistic tie-break would give, nor the 0 of a pessimistic one.

use crate::error::{MetricError, Result, check_len};
use crate::exact::{ExactSum, f32_key, ratio};

/// Ranking queries: candidate scores and relevance flags, query after query. See the
/// [module docs](self).
///
/// ```
/// # use rec_metrics::ranking::Queries;
/// // Two users, 1 target (first column) + 3 sampled negatives each.
/// let scores = [0.9, 0.1, 0.5, 0.3, /* user 2 */ 0.2, 0.8, 0.1, 0.4];
/// let relevant = [true, false, false, false].repeat(2);
/// let q = Queries::fixed(&scores, &relevant, 4).unwrap();
/// let m = q.metrics(1).unwrap();
/// assert_eq!(m.hr, 0.5); // user 1's target is first, user 2's is third
/// assert_eq!(m.mrr, (1.0 + 1.0 / 3.0) / 2.0);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Queries<'a> {
    scores: &'a [f32],
    relevant: &'a [bool],
    layout: Layout<'a>,
}

#[derive(Debug, Clone, Copy)]
enum Layout<'a> {
    Fixed(usize),
    Offsets(&'a [usize]),
}

impl<'a> Queries<'a> {
    /// Queries of `candidates` candidates each: `scores` and `relevant` are row-major
    /// `[queries, candidates]` matrices.
    pub fn fixed(scores: &'a [f32], relevant: &'a [bool], candidates: usize) -> Result<Self> {
        check_len("scores", scores.len(), "relevant", relevant.len())?;
        if candidates == 0 || !scores.len().is_multiple_of(candidates) {
            return Err(MetricError::InvalidArgument(format!(
                "{} scores do not split into queries of {candidates} candidates",
                scores.len()
            )));
        }
        Self::validated(scores, relevant, Layout::Fixed(candidates))
    }

    /// Queries of varying lengths: query `q` holds candidates `offsets[q]..offsets[q + 1]`, so
    /// `offsets` starts with 0, never decreases and ends with `scores.len()`.
    pub fn with_offsets(
        scores: &'a [f32],
        relevant: &'a [bool],
        offsets: &'a [usize],
    ) -> Result<Self> {
        check_len("scores", scores.len(), "relevant", relevant.len())?;
        let ok = offsets.first() == Some(&0)
            && offsets.last() == Some(&scores.len())
            && offsets.windows(2).all(|w| w[0] <= w[1]);
        if !ok {
            return Err(MetricError::InvalidArgument(format!(
                "offsets must start at 0, never decrease and end at {} (the number of scores)",
                scores.len()
            )));
        }
        Self::validated(scores, relevant, Layout::Offsets(offsets))
    }

    fn validated(scores: &'a [f32], relevant: &'a [bool], layout: Layout<'a>) -> Result<Self> {
        if let Some(index) = scores.iter().position(|s| s.is_nan()) {
            return Err(MetricError::NaN {
                what: "scores",
                index,
            });
        }
        let q = Self {
            scores,
            relevant,
            layout,
        };
        for i in 0..q.len() {
            if !q.query(i).1.contains(&true) {
                return Err(MetricError::NoRelevant { query: i });
            }
        }
        Ok(q)
    }

    /// Number of queries.
    pub fn len(&self) -> usize {
        match self.layout {
            Layout::Fixed(c) => self.scores.len() / c,
            Layout::Offsets(o) => o.len() - 1,
        }
    }

    /// True when there is no query.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Scores and relevance flags of query `i` (panics when `i >= len()`).
    pub fn query(&self, i: usize) -> (&'a [f32], &'a [bool]) {
        let (a, b) = match self.layout {
            Layout::Fixed(c) => (i * c, (i + 1) * c),
            Layout::Offsets(o) => (o[i], o[i + 1]),
        };
        (&self.scores[a..b], &self.relevant[a..b])
    }

    /// The queries whose flag in `keep` is true (one flag per query), as an owned copy.
    pub fn select(&self, keep: &[bool]) -> Result<OwnedQueries> {
        check_len("queries", self.len(), "slice mask", keep.len())?;
        let mut out = OwnedQueries::default();
        out.offsets.push(0);
        for (i, _) in keep.iter().enumerate().filter(|(_, k)| **k) {
            let (s, r) = self.query(i);
            out.scores.extend_from_slice(s);
            out.relevant.extend_from_slice(r);
            out.offsets.push(out.scores.len());
        }
        Ok(out)
    }

    /// All ranking metrics at cut-off `k` (see [`RankingAccumulator`]).
    pub fn metrics(&self, k: usize) -> Result<RankingMetrics> {
        let mut acc = RankingAccumulator::new(k)?;
        acc.push(self)?;
        acc.finish()
    }
}

/// Owned query data, as returned by [`Queries::select`]; borrow it with
/// [`as_queries`](Self::as_queries).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct OwnedQueries {
    /// Candidate scores, query after query.
    pub scores: Vec<f32>,
    /// Relevance flags aligned with `scores`.
    pub relevant: Vec<bool>,
    /// Query boundaries (see [`Queries::with_offsets`]).
    pub offsets: Vec<usize>,
}

impl OwnedQueries {
    /// A borrowed view.
    pub fn as_queries(&self) -> Result<Queries<'_>> {
        Queries::with_offsets(&self.scores, &self.relevant, &self.offsets)
    }
}

/// Mean ranking metrics over a set of queries.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RankingMetrics {
    /// The cut-off used for HR, NDCG and recall.
    pub k: usize,
    /// Number of queries.
    pub queries: u64,
    /// Mean HR@k.
    pub hr: f64,
    /// Mean NDCG@k.
    pub ndcg: f64,
    /// Mean reciprocal rank (no cut-off).
    pub mrr: f64,
    /// Mean Recall@k.
    pub recall: f64,
    /// Mean per-query AUC over the queries that have a non-relevant candidate; `None` when no
    /// query has one.
    pub auc: Option<f64>,
}

/// HR@k: the mean over queries of "a relevant candidate is in the top k" (ties in expectation).
///
/// ```
/// # use rec_metrics::ranking::{Queries, hr_at_k};
/// // The target (first) ties with one negative for rank 1: a hit at k = 1 half of the time.
/// let q = Queries::fixed(&[0.5, 0.5, 0.1], &[true, false, false], 3).unwrap();
/// assert_eq!(hr_at_k(&q, 1).unwrap(), 0.5);
/// assert_eq!(hr_at_k(&q, 2).unwrap(), 1.0);
/// ```
pub fn hr_at_k(queries: &Queries<'_>, k: usize) -> Result<f64> {
    queries.metrics(k).map(|m| m.hr)
}

/// NDCG@k averaged over queries (binary relevance, ties in expectation).
///
/// ```
/// # use rec_metrics::ranking::{Queries, ndcg_at_k};
/// // The only relevant candidate ranks third: DCG = 1/log2(4) = 0.5, IDCG = 1.
/// let q = Queries::fixed(&[0.9, 0.8, 0.7, 0.6], &[false, false, true, false], 4).unwrap();
/// assert_eq!(ndcg_at_k(&q, 3).unwrap(), 0.5);
/// assert_eq!(ndcg_at_k(&q, 2).unwrap(), 0.0);
/// ```
pub fn ndcg_at_k(queries: &Queries<'_>, k: usize) -> Result<f64> {
    queries.metrics(k).map(|m| m.ndcg)
}

/// Mean reciprocal rank of the first relevant candidate (whole list, ties in expectation).
pub fn mrr(queries: &Queries<'_>) -> Result<f64> {
    queries.metrics(1).map(|m| m.mrr)
}

/// Recall@k averaged over queries: the share of a query's relevant candidates in its top k.
pub fn recall_at_k(queries: &Queries<'_>, k: usize) -> Result<f64> {
    queries.metrics(k).map(|m| m.recall)
}

/// Streaming ranking metrics at a fixed cut-off k: push query batches, merge, finish. Per-query
/// values are summed exactly, so the result does not depend on batching.
#[derive(Debug, Clone)]
pub struct RankingAccumulator {
    k: usize,
    queries: u64,
    hr: ExactSum,
    ndcg: ExactSum,
    rr: ExactSum,
    recall: ExactSum,
    auc: ExactSum,
    auc_queries: u64,
    /// `discount[r - 1]` = 1 / log2(r + 1) for rank r, grown on demand up to min(k, list length).
    discount: Vec<f64>,
    /// Queries with more relevant candidates than this sort their negatives.
    scan_max: usize,
    pos: Vec<u32>,
    neg: Vec<u32>,
}

/// With more relevant candidates than this, negatives are sorted and binary-searched instead of
/// scanned once per relevant score.
const SCAN_MAX_RELEVANT: usize = 8;

impl RankingAccumulator {
    /// An empty accumulator for cut-off `k` (at least 1).
    pub fn new(k: usize) -> Result<Self> {
        if k == 0 {
            return Err(MetricError::InvalidArgument(
                "the ranking cut-off k must be at least 1".into(),
            ));
        }
        Ok(Self {
            k,
            queries: 0,
            hr: ExactSum::default(),
            ndcg: ExactSum::default(),
            rr: ExactSum::default(),
            recall: ExactSum::default(),
            auc: ExactSum::default(),
            auc_queries: 0,
            discount: Vec::new(),
            scan_max: SCAN_MAX_RELEVANT,
            pos: Vec::new(),
            neg: Vec::new(),
        })
    }

    /// Adds every query of `queries` (already validated when `queries` was built).
    pub fn push(&mut self, queries: &Queries<'_>) -> Result<()> {
        for i in 0..queries.len() {
            let (s, r) = queries.query(i);
            self.push_query(s, r);
        }
        Ok(())
    }

    /// Adds everything `other` holds. Errors when the cut-offs differ.
    pub fn merge(&mut self, other: RankingAccumulator) -> Result<()> {
        if other.k != self.k {
            return Err(MetricError::InvalidArgument(format!(
                "cannot merge ranking metrics at k = {} and k = {}",
                self.k, other.k
            )));
        }
        self.queries += other.queries;
        self.hr.merge(&other.hr);
        self.ndcg.merge(&other.ndcg);
        self.rr.merge(&other.rr);
        self.recall.merge(&other.recall);
        self.auc.merge(&other.auc);
        self.auc_queries += other.auc_queries;
        Ok(())
    }

    /// Mean metrics over all queries pushed.
    pub fn finish(&self) -> Result<RankingMetrics> {
        if self.queries == 0 {
            return Err(MetricError::Empty {
                metric: "ranking metrics",
            });
        }
        let n = self.queries as f64;
        Ok(RankingMetrics {
            k: self.k,
            queries: self.queries,
            hr: self.hr.value() / n,
            ndcg: self.ndcg.value() / n,
            mrr: self.rr.value() / n,
            recall: self.recall.value() / n,
            auc: (self.auc_queries > 0).then(|| self.auc.value() / self.auc_queries as f64),
        })
    }

    fn grow_discount(&mut self, upto: usize) {
        while self.discount.len() < upto {
            let rank = self.discount.len() + 1;
            self.discount.push(1.0 / ((rank + 1) as f64).log2());
        }
    }

    /// One query with at least one relevant candidate and no NaN score.
    fn push_query(&mut self, scores: &[f32], relevant: &[bool]) {
        let k = self.k;
        self.grow_discount(k.min(scores.len()));
        self.pos.clear();
        self.neg.clear();
        for (&s, &r) in scores.iter().zip(relevant) {
            if r {
                self.pos.push(f32_key(s));
            } else {
                self.neg.push(f32_key(s));
            }
        }
        let (pos, neg, disc) = (&mut self.pos, &mut self.neg, &self.discount);
        pos.sort_unstable();
        let sorted_neg = pos.len() > self.scan_max;
        if sorted_neg {
            neg.sort_unstable();
        }
        let (n_rel, n_neg) = (pos.len(), neg.len());
        let mut miss = 1.0f64; // P(no relevant candidate in the top k)
        let mut dcg = 0.0f64; // E[DCG@k]
        let mut hits = 0.0f64; // E[relevant candidates in the top k]
        let mut rr = None; // E[1 / rank of the first relevant]
        let mut twice_u: u128 = 0;
        // Walk the distinct relevant scores from the highest down.
        let mut end = n_rel;
        while end > 0 {
            let key = pos[end - 1];
            let start = pos[..end].partition_point(|&x| x < key);
            let m = end - start; // relevant candidates with this score
            let (neg_above, neg_tied) = if sorted_neg {
                let lo = neg.partition_point(|&x| x < key);
                let hi = neg.partition_point(|&x| x <= key);
                (n_neg - hi, hi - lo)
            } else {
                neg.iter().fold((0, 0), |(g, e), &x| {
                    (g + (x > key) as usize, e + (x == key) as usize)
                })
            };
            let neg_below = n_neg - neg_above - neg_tied;
            twice_u += m as u128 * (2 * neg_below + neg_tied) as u128;
            // The tie group occupies ranks above+1 ..= above+tied; each of its members is equally
            // likely to be at any of them.
            let above = (n_rel - end) + neg_above;
            let tied = m + neg_tied;
            let top = (above + tied).min(k);
            if top > above {
                let share = m as f64 / tied as f64;
                hits += share * (top - above) as f64;
                dcg += share * disc[above..top].iter().sum::<f64>();
            }
            miss *= prob_none_in_top(tied, m, k.saturating_sub(above).min(tied));
            if rr.is_none() {
                rr = Some(expected_first_reciprocal(above, tied, m));
            }
            end = start;
        }
        self.queries += 1;
        self.hr.add(1.0 - miss);
        let idcg: f64 = self.discount[..n_rel.min(k)].iter().sum();
        self.ndcg.add(dcg / idcg);
        self.rr.add(rr.unwrap_or(0.0));
        self.recall.add(hits / n_rel as f64);
        if n_neg > 0 {
            self.auc
                .add(ratio(twice_u, 2 * n_rel as u128 * n_neg as u128));
            self.auc_queries += 1;
        }
    }
}

/// Probability that none of `m` marked items lands in the first `slots` of `t` positions when
/// the `t` items are shuffled uniformly: C(t - m, slots) / C(t, slots).
fn prob_none_in_top(t: usize, m: usize, slots: usize) -> f64 {
    if slots > t - m {
        return 0.0;
    }
    (0..slots).fold(1.0, |p, q| p * (t - m - q) as f64 / (t - q) as f64)
}

/// E[1 / (above + J)], J the first position of `m` marked items among `t` shuffled positions:
/// P(J = 1) = m / t, P(J = j + 1) = P(J = j) (t - j - m + 1) / (t - j).
fn expected_first_reciprocal(above: usize, t: usize, m: usize) -> f64 {
    let mut p = m as f64 / t as f64;
    let mut e = 0.0;
    let last = t - m + 1;
    for j in 1..=last {
        e += p / (above + j) as f64;
        if j < last {
            p *= (t + 1 - j - m) as f64 / (t - j) as f64;
        }
    }
    e
}

#[cfg(test)]
mod tests {
    use super::*;

    fn single(scores: &[f32], relevant: &[bool], k: usize) -> RankingMetrics {
        Queries::fixed(scores, relevant, scores.len())
            .unwrap()
            .metrics(k)
            .unwrap()
    }

    fn close(a: f64, b: f64) {
        assert!((a - b).abs() < 1e-12, "{a} != {b}");
    }

    #[test]
    fn strict_ranking_hand_cases() {
        // Relevant candidate at rank 3 of 4.
        let s = [0.9, 0.8, 0.7, 0.6];
        let r = [false, false, true, false];
        let m = single(&s, &r, 2);
        assert_eq!((m.hr, m.ndcg, m.recall), (0.0, 0.0, 0.0));
        close(m.mrr, 1.0 / 3.0);
        close(m.auc.unwrap(), 1.0 / 3.0);
        let m = single(&s, &r, 3);
        assert_eq!((m.hr, m.recall), (1.0, 1.0));
        close(m.ndcg, 0.5);
        // Two relevant at ranks 2 and 4 of 5.
        let s = [0.9, 0.8, 0.7, 0.6, 0.5];
        let r = [false, true, false, true, false];
        let m = single(&s, &r, 5);
        let l2 = |x: f64| x.log2();
        close(
            m.ndcg,
            (1.0 / l2(3.0) + 1.0 / l2(5.0)) / (1.0 + 1.0 / l2(3.0)),
        );
        close(m.mrr, 0.5);
        assert_eq!((m.hr, m.recall), (1.0, 1.0));
        let m = single(&s, &r, 3);
        close(m.recall, 0.5);
        close(m.ndcg, (1.0 / l2(3.0)) / (1.0 + 1.0 / l2(3.0)));
        // AUC: pairs (0.8 vs 0.9, 0.7, 0.5) = 2 of 3; (0.6 vs ...) = 1 of 3.
        close(m.auc.unwrap(), 3.0 / 6.0);
    }

    #[test]
    fn ties_in_expectation_hand_cases() {
        // Relevant ties with two others for ranks 1..3.
        let m = single(&[0.5, 0.5, 0.5, 0.1], &[true, false, false, false], 1);
        close(m.hr, 1.0 / 3.0);
        close(m.mrr, (1.0 + 0.5 + 1.0 / 3.0) / 3.0);
        close(m.ndcg, 1.0 / 3.0);
        close(m.auc.unwrap(), (0.5 + 0.5 + 1.0) / 3.0);
        let m = single(&[0.5, 0.5, 0.5, 0.1], &[true, false, false, false], 10);
        close(m.ndcg, (1.0 + 1.0 / 3f64.log2() + 0.5) / 3.0);
        // A constant model on 1 target + 100 negatives.
        let s = [0.3f32; 101];
        let mut r = [false; 101];
        r[0] = true;
        let m = single(&s, &r, 10);
        close(m.hr, 10.0 / 101.0);
        close(m.recall, 10.0 / 101.0);
        close(m.auc.unwrap(), 0.5);
        // Two relevant in a group of 4 tied at the top, k = 1: P(hit) = 1 - (2/4) = 0.5;
        // first relevant: P(J=1) = 1/2, P(J=2) = 1/3, P(J=3) = 1/6.
        let m = single(&[0.5, 0.5, 0.5, 0.5], &[true, true, false, false], 1);
        close(m.hr, 0.5);
        close(m.mrr, 0.5 + (1.0 / 3.0) / 2.0 + (1.0 / 6.0) / 3.0);
    }

    #[test]
    fn all_relevant_has_no_auc() {
        let m = single(&[0.5, 0.1], &[true, true], 1);
        assert_eq!(m.auc, None);
        assert_eq!(m.hr, 1.0);
        close(m.recall, 0.5);
        close(m.ndcg, 1.0);
    }

    #[test]
    fn layout_errors() {
        assert!(matches!(
            Queries::fixed(&[0.1, 0.2, 0.3], &[true, false, false], 2),
            Err(MetricError::InvalidArgument(_))
        ));
        assert!(matches!(
            Queries::fixed(&[0.1, 0.2], &[true, false], 0),
            Err(MetricError::InvalidArgument(_))
        ));
        assert!(matches!(
            Queries::fixed(&[0.1, 0.2, 0.3, 0.4], &[true, false, false, false], 2),
            Err(MetricError::NoRelevant { query: 1 })
        ));
        assert!(matches!(
            Queries::fixed(&[0.1, f32::NAN], &[true, false], 2),
            Err(MetricError::NaN { index: 1, .. })
        ));
        assert!(matches!(
            Queries::with_offsets(&[0.1, 0.2], &[true, true], &[0, 2, 1]),
            Err(MetricError::InvalidArgument(_))
        ));
        assert!(matches!(
            Queries::with_offsets(&[0.1, 0.2], &[true, true], &[0, 1, 1, 2]),
            Err(MetricError::NoRelevant { query: 1 })
        ));
        let empty = Queries::fixed(&[], &[], 3).unwrap();
        assert!(empty.is_empty());
        assert!(matches!(empty.metrics(10), Err(MetricError::Empty { .. })));
        assert!(matches!(
            RankingAccumulator::new(0),
            Err(MetricError::InvalidArgument(_))
        ));
    }

    proptest::proptest! {
        #[test]
        fn scan_and_search_paths_agree(
            list in proptest::collection::vec((0u8..6, proptest::bool::ANY), 1..60),
            k in 1usize..20,
        ) {
            let scores: Vec<f32> = list.iter().map(|(s, _)| *s as f32 / 5.0).collect();
            let mut relevant: Vec<bool> = list.iter().map(|(_, r)| *r).collect();
            relevant[0] = true;
            let mut scan = RankingAccumulator::new(k).unwrap();
            scan.scan_max = usize::MAX;
            scan.push_query(&scores, &relevant);
            let mut search = RankingAccumulator::new(k).unwrap();
            search.scan_max = 0;
            search.push_query(&scores, &relevant);
            proptest::prop_assert_eq!(scan.finish().unwrap(), search.finish().unwrap());
        }
    }
}
