//! Binary classification: AUC, GAUC and LogLoss, as functions and as mergeable accumulators.
//!
//! Labels are `f32` in [0, 1]; a label counts as **positive when it is greater than 0.5** (so
//! 0/1 labels work as expected, and 0.5 is negative). A NaN label or one outside [0, 1] is an
//! error (rec-data marks "no label" with NaN: filter those samples out first).

use crate::error::{MetricError, Result, binary_label, check_len};
use crate::exact::{ExactSum, f32_key, radix_sort, ratio, twice_u};

/// Exact area under the ROC curve, with tied scores counted as half a correctly ordered pair.
///
/// Equals the Mann-Whitney U statistic divided by (positives × negatives): the probability that
/// a random positive scores higher than a random negative, ties counting one half (scikit-learn's
/// `roc_auc_score` up to its last bit: it rounds along its trapezoids). Scores may be any non-NaN `f32`, including
/// infinities; `-0.0 == 0.0`. The pair count is an exact integer; the only rounding is the
/// final division. O(n) memory and O(n) time (radix sort on the float bit patterns).
///
/// Errors: [`MetricError::Empty`] on empty input; [`MetricError::OneClass`] when all labels
/// are of one class; [`MetricError::NaN`] for a NaN score or label;
/// [`MetricError::LengthMismatch`]; [`MetricError::OutOfRange`] for a label outside [0, 1].
///
/// ```
/// # use rec_metrics::auc;
/// // Positive scores 0.8 and 0.4; negatives 0.4 and 0.1: pairs (0.8>0.4, 0.8>0.1, 0.4=0.4, 0.4>0.1).
/// let a = auc(&[0.8, 0.4, 0.4, 0.1], &[1.0, 1.0, 0.0, 0.0]).unwrap();
/// assert_eq!(a, 3.5 / 4.0);
/// ```
pub fn auc(scores: &[f32], labels: &[f32]) -> Result<f64> {
    let mut acc = AucAccumulator::new();
    acc.push(scores, labels)?;
    acc.finish()
}

/// Streaming exact AUC: push chunks, merge accumulators from other threads, finish.
///
/// It keeps one 32-bit key per sample (4 bytes per sample), so the result is exactly
/// [`auc`] of all pushed samples, whatever the chunking or merge order.
///
/// ```
/// # use rec_metrics::{auc, AucAccumulator};
/// let (s, y) = ([0.9, 0.1, 0.5, 0.5, 0.3], [1.0, 0.0, 1.0, 0.0, 0.0]);
/// let mut a = AucAccumulator::new();
/// a.push(&s[..2], &y[..2]).unwrap();
/// let mut b = AucAccumulator::new();
/// b.push(&s[2..], &y[2..]).unwrap();
/// a.merge(b);
/// assert_eq!(a.finish().unwrap(), auc(&s, &y).unwrap());
/// ```
#[derive(Debug, Clone, Default)]
pub struct AucAccumulator {
    pos: Vec<u32>,
    neg: Vec<u32>,
    sorted: bool,
}

impl AucAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk of samples. On error nothing of the chunk is kept.
    pub fn push(&mut self, scores: &[f32], labels: &[f32]) -> Result<()> {
        check_len("scores", scores.len(), "labels", labels.len())?;
        let mut n_pos = 0;
        for (i, (&s, &y)) in scores.iter().zip(labels).enumerate() {
            if s.is_nan() {
                return Err(MetricError::NaN {
                    what: "scores",
                    index: i,
                });
            }
            n_pos += binary_label("labels", i, y)? as usize;
        }
        self.pos.reserve(n_pos);
        self.neg.reserve(scores.len() - n_pos);
        for (&s, &y) in scores.iter().zip(labels) {
            if y > 0.5 {
                self.pos.push(f32_key(s));
            } else {
                self.neg.push(f32_key(s));
            }
        }
        self.sorted = scores.is_empty() && self.sorted;
        Ok(())
    }

    /// Adds every sample `other` holds.
    pub fn merge(&mut self, other: AucAccumulator) {
        if other.pos.is_empty() && other.neg.is_empty() {
            return;
        }
        self.pos.extend_from_slice(&other.pos);
        self.neg.extend_from_slice(&other.neg);
        self.sorted = false;
    }

    /// Number of positive and negative samples pushed so far.
    pub fn counts(&self) -> (u64, u64) {
        (self.pos.len() as u64, self.neg.len() as u64)
    }

    /// The exact AUC of everything pushed so far. Sorts the stored keys in place (so it takes
    /// `&mut self`); the accumulator stays usable and a second call without new data is cheap.
    pub fn finish(&mut self) -> Result<f64> {
        let (p, n) = self.counts();
        if p + n == 0 {
            return Err(MetricError::Empty { metric: "auc" });
        }
        if p == 0 || n == 0 {
            return Err(MetricError::OneClass {
                metric: "auc",
                positives: p,
                negatives: n,
            });
        }
        if !self.sorted {
            radix_sort(&mut self.pos);
            radix_sort(&mut self.neg);
            self.sorted = true;
        }
        Ok(ratio(
            twice_u(&self.pos, &self.neg),
            2 * p as u128 * n as u128,
        ))
    }
}

/// Group AUC: the AUC of each group (usually a user), averaged with each group weighted by its
/// number of samples (impressions).
///
/// `GAUC = Σ_g n_g · AUC_g / Σ_g n_g`, where the sums run over the groups that have at least one
/// positive and one negative sample, and `n_g` counts all samples of group `g`. Groups with a
/// single class have no AUC and are skipped (they contribute to neither sum); see
/// [`GaucAccumulator::summary`] for how many were used. Each `AUC_g` is exact as in [`auc`];
/// the weighted sum is summed exactly, so the value does not depend on the sample order.
/// With groups of equal size (e.g. one query of 1 positive + 100 negatives per user) this is
/// the plain mean of per-group AUC.
///
/// Errors: as [`auc`]; [`MetricError::OneClass`] when no group has both classes.
///
/// ```
/// # use rec_metrics::gauc;
/// let scores = [0.9, 0.1, 0.2, 0.8, 0.7, 0.5];
/// let labels = [1.0, 0.0, 1.0, 0.0, 0.0, 0.0];
/// let users = [7, 7, 8, 8, 8, 9];
/// // user 7: AUC 1 on 2 samples; user 8: AUC 0 on 3 samples; user 9: one class, skipped.
/// assert_eq!(gauc(&scores, &labels, &users).unwrap(), 2.0 / 5.0);
/// ```
pub fn gauc(scores: &[f32], labels: &[f32], groups: &[u32]) -> Result<f64> {
    let mut acc = GaucAccumulator::new();
    acc.push(scores, labels, groups)?;
    acc.finish()
}

/// What a GAUC computation used: see [`GaucAccumulator::summary`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GaucSummary {
    /// The GAUC value.
    pub gauc: f64,
    /// Groups that had both classes and entered the average.
    pub groups_used: u64,
    /// Groups with a single class, skipped.
    pub groups_skipped: u64,
    /// Samples of the groups used (the sum of the weights).
    pub samples_used: u64,
}

/// Streaming exact GAUC (see [`gauc`]). Keeps one 64-bit key (group, score) per sample.
#[derive(Debug, Clone, Default)]
pub struct GaucAccumulator {
    pos: Vec<u64>,
    neg: Vec<u64>,
    sorted: bool,
}

impl GaucAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk of samples with their group ids. On error nothing of the chunk is kept.
    pub fn push(&mut self, scores: &[f32], labels: &[f32], groups: &[u32]) -> Result<()> {
        check_len("scores", scores.len(), "labels", labels.len())?;
        check_len("scores", scores.len(), "groups", groups.len())?;
        for (i, (&s, &y)) in scores.iter().zip(labels).enumerate() {
            if s.is_nan() {
                return Err(MetricError::NaN {
                    what: "scores",
                    index: i,
                });
            }
            binary_label("labels", i, y)?;
        }
        for ((&s, &y), &g) in scores.iter().zip(labels).zip(groups) {
            let key = ((g as u64) << 32) | f32_key(s) as u64;
            if y > 0.5 {
                self.pos.push(key);
            } else {
                self.neg.push(key);
            }
        }
        self.sorted = scores.is_empty() && self.sorted;
        Ok(())
    }

    /// Adds every sample `other` holds.
    pub fn merge(&mut self, other: GaucAccumulator) {
        if other.pos.is_empty() && other.neg.is_empty() {
            return;
        }
        self.pos.extend_from_slice(&other.pos);
        self.neg.extend_from_slice(&other.neg);
        self.sorted = false;
    }

    /// The GAUC of everything pushed so far (see [`gauc`]).
    pub fn finish(&mut self) -> Result<f64> {
        self.summary().map(|s| s.gauc)
    }

    /// The GAUC with the number of groups used and skipped. Sorts the stored keys in place.
    pub fn summary(&mut self) -> Result<GaucSummary> {
        let (p, n) = (self.pos.len() as u64, self.neg.len() as u64);
        if p + n == 0 {
            return Err(MetricError::Empty { metric: "gauc" });
        }
        if !self.sorted {
            radix_sort(&mut self.pos);
            radix_sort(&mut self.neg);
            self.sorted = true;
        }
        let group = |k: u64| k >> 32;
        let (pos, neg) = (&self.pos[..], &self.neg[..]);
        let (mut i, mut j) = (0, 0);
        let mut weighted = ExactSum::default();
        let (mut used, mut skipped, mut samples) = (0u64, 0u64, 0u64);
        while i < pos.len() || j < neg.len() {
            let g = match (pos.get(i), neg.get(j)) {
                (Some(&a), Some(&b)) => group(a).min(group(b)),
                (Some(&a), None) => group(a),
                (None, Some(&b)) => group(b),
                (None, None) => unreachable!(),
            };
            let i_end = i + pos[i..].partition_point(|&k| group(k) == g);
            let j_end = j + neg[j..].partition_point(|&k| group(k) == g);
            let (gp, gn) = ((i_end - i) as u64, (j_end - j) as u64);
            if gp > 0 && gn > 0 {
                // Within one group the high 32 bits agree, so comparing u64 keys compares scores.
                let a = ratio(
                    twice_u(&pos[i..i_end], &neg[j..j_end]),
                    2 * gp as u128 * gn as u128,
                );
                weighted.add(a * (gp + gn) as f64);
                used += 1;
                samples += gp + gn;
            } else {
                skipped += 1;
            }
            (i, j) = (i_end, j_end);
        }
        if used == 0 {
            return Err(MetricError::OneClass {
                metric: "gauc",
                positives: p,
                negatives: n,
            });
        }
        Ok(GaucSummary {
            gauc: weighted.value() / samples as f64,
            groups_used: used,
            groups_skipped: skipped,
            samples_used: samples,
        })
    }
}

/// Probabilities are clipped to `[LOGLOSS_EPS, 1 - LOGLOSS_EPS]` before taking logarithms, so a
/// confident mistake costs at most `-ln(1e-7) ≈ 16.1` instead of infinity.
pub const LOGLOSS_EPS: f64 = 1e-7;

/// Mean binary cross-entropy `-(y ln p + (1 - y) ln(1 - p))` of probabilities `probs`.
///
/// `p` is clipped to `[LOGLOSS_EPS, 1 - LOGLOSS_EPS]` ([`LOGLOSS_EPS`] = 1e-7), computed in
/// `f64`. Labels are used as they are (soft labels in [0, 1] are allowed; 0/1 labels give the
/// usual log loss). The mean is summed exactly (chunking-independent).
///
/// Errors: [`MetricError::Empty`]; [`MetricError::NaN`]; [`MetricError::OutOfRange`] for a
/// probability or label outside [0, 1] (pass probabilities, not logits);
/// [`MetricError::LengthMismatch`].
///
/// ```
/// # use rec_metrics::logloss;
/// let l = logloss(&[0.8, 0.4], &[1.0, 0.0]).unwrap();
/// assert!((l - (-(0.8f64.ln()) - 0.6f64.ln()) / 2.0).abs() < 1e-7);
/// ```
pub fn logloss(probs: &[f32], labels: &[f32]) -> Result<f64> {
    let mut acc = LogLossAccumulator::new();
    acc.push(probs, labels)?;
    acc.finish()
}

/// Streaming [`logloss`].
#[derive(Debug, Clone, Default)]
pub struct LogLossAccumulator {
    sum: ExactSum,
    n: u64,
}

impl LogLossAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk. On error nothing of the chunk is kept.
    pub fn push(&mut self, probs: &[f32], labels: &[f32]) -> Result<()> {
        check_len("probs", probs.len(), "labels", labels.len())?;
        for (i, (&p, &y)) in probs.iter().zip(labels).enumerate() {
            if p.is_nan() {
                return Err(MetricError::NaN {
                    what: "probs",
                    index: i,
                });
            }
            if !(0.0..=1.0).contains(&p) {
                return Err(MetricError::OutOfRange {
                    what: "probs",
                    index: i,
                    value: p as f64,
                    expected: "a probability in [0, 1]",
                });
            }
            binary_label("labels", i, y)?;
        }
        for (&p, &y) in probs.iter().zip(labels) {
            let p = (p as f64).clamp(LOGLOSS_EPS, 1.0 - LOGLOSS_EPS);
            // The general formula gives the same bits for y = 0 or 1; skip the unused logarithm.
            let term = if y == 1.0 {
                -p.ln()
            } else if y == 0.0 {
                -(1.0 - p).ln()
            } else {
                let y = y as f64;
                -(y * p.ln() + (1.0 - y) * (1.0 - p).ln())
            };
            self.sum.add(term);
        }
        self.n += probs.len() as u64;
        Ok(())
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: LogLossAccumulator) {
        self.sum.merge(&other.sum);
        self.n += other.n;
    }

    /// Number of samples pushed.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The mean log loss.
    pub fn finish(&self) -> Result<f64> {
        if self.n == 0 {
            return Err(MetricError::Empty { metric: "logloss" });
        }
        Ok(self.sum.value() / self.n as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auc_hand_cases() {
        assert_eq!(auc(&[0.1, 0.9], &[0.0, 1.0]).unwrap(), 1.0);
        assert_eq!(auc(&[0.9, 0.1], &[0.0, 1.0]).unwrap(), 0.0);
        // All tied: every pair counts one half.
        assert_eq!(auc(&[0.3; 5], &[1.0, 0.0, 1.0, 0.0, 0.0]).unwrap(), 0.5);
        // -0.0 and 0.0 tie; infinities are ordered.
        assert_eq!(auc(&[-0.0, 0.0], &[1.0, 0.0]).unwrap(), 0.5);
        assert_eq!(
            auc(&[f32::NEG_INFINITY, f32::INFINITY], &[0.0, 1.0]).unwrap(),
            1.0
        );
        // 0.5 is negative, 0.51 positive.
        assert_eq!(auc(&[0.2, 0.7], &[0.51, 0.5]).unwrap(), 0.0);
        // Positives .35, .8, .4 vs negatives .1, .4, .4: 1 + 3 + (1 + 0.5 + 0.5) = 6 of 9 pairs
        // scikit-learn's roc_auc_score gives 0.6666666666666667 (its trapezoids round once
        // more); 6/9 correctly rounded is 0.6666666666666666.
        let a = auc(
            &[0.1, 0.4, 0.35, 0.8, 0.4, 0.4],
            &[0.0, 0.0, 1.0, 1.0, 0.0, 1.0],
        )
        .unwrap();
        assert_eq!(a, 6.0 / 9.0);
    }

    #[test]
    fn auc_edge_cases_are_errors() {
        assert!(matches!(
            auc(&[], &[]),
            Err(MetricError::Empty { metric: "auc" })
        ));
        assert!(matches!(
            auc(&[0.1, 0.2], &[1.0, 1.0]),
            Err(MetricError::OneClass {
                positives: 2,
                negatives: 0,
                ..
            })
        ));
        assert!(matches!(
            auc(&[0.1, f32::NAN], &[1.0, 0.0]),
            Err(MetricError::NaN {
                what: "scores",
                index: 1
            })
        ));
        assert!(matches!(
            auc(&[0.1, 0.2], &[1.0, f32::NAN]),
            Err(MetricError::NaN {
                what: "labels",
                index: 1
            })
        ));
        assert!(matches!(
            auc(&[0.1, 0.2], &[1.0, 2.0]),
            Err(MetricError::OutOfRange { index: 1, .. })
        ));
        assert!(matches!(
            auc(&[0.1], &[1.0, 0.0]),
            Err(MetricError::LengthMismatch {
                left_len: 1,
                right_len: 2,
                ..
            })
        ));
    }

    #[test]
    fn failed_push_keeps_nothing() {
        let mut a = AucAccumulator::new();
        a.push(&[0.1, 0.2], &[0.0, 1.0]).unwrap();
        assert!(a.push(&[0.3, f32::NAN], &[1.0, 0.0]).is_err());
        assert_eq!(a.counts(), (1, 1));
        assert_eq!(a.finish().unwrap(), 1.0);
        // Pushing after finish keeps working.
        a.push(&[0.0], &[1.0]).unwrap();
        assert_eq!(a.finish().unwrap(), 0.5);
    }

    #[test]
    fn auc_large_input_uses_radix_path() {
        // 5000 samples: score ((7919 i) mod 1000) / 1000 (many ties) with label = (i % 3 == 0);
        // compare with the pairwise count.
        let n = 5000;
        let scores: Vec<f32> = (0..n)
            .map(|i| ((i * 7919) % 1000) as f32 / 1000.0)
            .collect();
        let labels: Vec<f32> = (0..n).map(|i| (i % 3 == 0) as u8 as f32).collect();
        let (mut u2, mut p, mut q) = (0u64, 0u64, 0u64);
        for i in 0..n {
            if labels[i] == 1.0 {
                p += 1;
                for j in 0..n {
                    if labels[j] == 0.0 {
                        u2 += if scores[i] > scores[j] {
                            2
                        } else {
                            (scores[i] == scores[j]) as u64
                        };
                    }
                }
            } else {
                q += 1;
            }
        }
        assert_eq!(
            auc(&scores, &labels).unwrap(),
            u2 as f64 / (2 * p * q) as f64
        );
    }

    #[test]
    fn gauc_edge_cases() {
        assert!(matches!(
            gauc(&[0.1, 0.2], &[1.0, 0.0], &[1, 2]),
            Err(MetricError::OneClass { metric: "gauc", .. })
        ));
        assert!(matches!(
            gauc(&[], &[], &[]),
            Err(MetricError::Empty { .. })
        ));
        assert!(matches!(
            gauc(&[0.1], &[1.0], &[1, 2]),
            Err(MetricError::LengthMismatch { .. })
        ));
        let mut g = GaucAccumulator::new();
        g.push(
            &[0.9, 0.1, 0.2, 0.8, 0.7, 0.5, 0.4],
            &[1.0, 0.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            &[u32::MAX, u32::MAX, 0, 0, 0, 9, 9],
        )
        .unwrap();
        let s = g.summary().unwrap();
        assert_eq!(s.groups_used, 2);
        assert_eq!(s.groups_skipped, 1);
        assert_eq!(s.samples_used, 5);
        assert_eq!(s.gauc, 2.0 / 5.0);
    }

    #[test]
    fn logloss_clips_and_rejects_logits() {
        let l = logloss(&[1.0, 0.0], &[0.0, 1.0]).unwrap();
        assert!((l + LOGLOSS_EPS.ln()).abs() < 1e-9, "{l}");
        assert_eq!(
            logloss(&[1.0, 0.0], &[1.0, 0.0]).unwrap(),
            -(1.0f64 - 1e-7).ln()
        );
        assert!(matches!(
            logloss(&[1.5], &[1.0]),
            Err(MetricError::OutOfRange { what: "probs", .. })
        ));
        assert!(matches!(logloss(&[], &[]), Err(MetricError::Empty { .. })));
        // Soft labels: y = 0.5, p = 0.5 gives ln 2.
        assert!((logloss(&[0.5], &[0.5]).unwrap() - 2f64.ln()).abs() < 1e-15);
    }
}
