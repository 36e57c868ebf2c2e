//! Property tests of sliced reports: every slice of a [`Report`] holds exactly the metrics the
//! plain functions give on that subset (a metric undefined there is absent, its count is the
//! subset's size), and multi-class scores with infinities follow the documented arg-max rule.

use proptest::prelude::*;
use proptest::test_runner::TestCaseError;
use rec_metrics::{
    ALL, ConfusionMatrix, MetricError, Queries, Report, accuracy, auc, gauc, logloss,
    macro_precision, macro_recall, regression_metrics,
};

type Check = Result<(), TestCaseError>;

/// The slice `slice` of `r` has `metric` equal (same bits) to `direct` when that is a value,
/// and lacks it when `direct` says the metric is undefined.
fn same(r: &Report, slice: &str, metric: &str, direct: Result<f64, MetricError>) -> Check {
    match direct {
        Ok(v) => prop_assert_eq!(
            r.get(slice, metric).map(f64::to_bits),
            Some(v.to_bits()),
            "{} {}: report {:?}, direct {}",
            slice,
            metric,
            r.get(slice, metric),
            v
        ),
        Err(e) if e.is_undefined() => prop_assert_eq!(
            r.get(slice, metric),
            None,
            "{} {} should be absent ({})",
            slice,
            metric,
            e
        ),
        Err(e) => prop_assert!(false, "{} {}: bad input {}", slice, metric, e),
    }
    Ok(())
}

fn pick<T: Copy>(v: &[T], mask: &[bool]) -> Vec<T> {
    v.iter()
        .zip(mask)
        .filter(|(_, k)| **k)
        .map(|(x, _)| *x)
        .collect()
}

/// `n` items and up to three random masks (sometimes all true or all false), with names.
fn masks(n: usize) -> impl Strategy<Value = Vec<(String, Vec<bool>)>> {
    let mask = prop_oneof![
        4 => prop::collection::vec(any::<bool>(), n),
        1 => Just(vec![true; n]),
        1 => Just(vec![false; n]),
        2 => prop::collection::vec(prop::bool::weighted(0.15), n),
    ];
    prop::collection::vec(mask, 0..4).prop_map(|ms| {
        ms.into_iter()
            .enumerate()
            .map(|(i, m)| (format!("s{i}"), m))
            .collect()
    })
}

/// "all" (every item) and the named masks.
fn every_slice(slices: &[(String, Vec<bool>)], n: usize) -> Vec<(String, Vec<bool>)> {
    std::iter::once((ALL.to_string(), vec![true; n]))
        .chain(slices.iter().cloned())
        .collect()
}

fn refs(slices: &[(String, Vec<bool>)]) -> Vec<(&str, &[bool])> {
    slices
        .iter()
        .map(|(n, m)| (n.as_str(), m.as_slice()))
        .collect()
}

/// Scores for multi-class rows: few values (ties), infinities and arbitrary finite floats.
fn class_score() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => (0u8..4).prop_map(|v| v as f32),
        2 => Just(f32::INFINITY),
        2 => Just(f32::NEG_INFINITY),
        1 => Just(f32::MAX),
        1 => Just(f32::MIN),
        1 => -1e30f32..1e30,
    ]
}

/// The documented prediction of a row: the first class holding the row's maximum (so
/// `+inf` beats everything, ties, infinite ones included, go to the lowest class, and a row
/// of `-inf` predicts class 0).
fn argmax(row: &[f32]) -> usize {
    let m = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    row.iter().position(|&v| v == m).unwrap()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn binary_slices_equal_the_metrics_of_their_subsets(
        (s, slices, with_groups) in (0usize..50).prop_flat_map(|n| (
            prop::collection::vec((
                prop_oneof![(0u8..5).prop_map(|v| v as f32 / 4.0), 0.0f32..=1.0],
                prop_oneof![4 => Just(0.0f32), 4 => Just(1.0f32), 1 => 0.0f32..=1.0],
                0u32..4,
            ), n),
            masks(n),
            any::<bool>(),
        )),
    ) {
        let n = s.len();
        let probs: Vec<f32> = s.iter().map(|x| x.0).collect();
        let labels: Vec<f32> = s.iter().map(|x| x.1).collect();
        let groups: Vec<u32> = s.iter().map(|x| x.2).collect();
        let g = with_groups.then_some(groups.as_slice());
        let r = Report::binary(&probs, &labels, g, &refs(&slices)).unwrap();
        prop_assert_eq!(r.slices.len(), slices.len() + 1);
        for (name, mask) in every_slice(&slices, n) {
            let (p, y, gr) = (pick(&probs, &mask), pick(&labels, &mask), pick(&groups, &mask));
            prop_assert_eq!(r.count(&name), Some(p.len() as u64));
            same(&r, &name, "auc", auc(&p, &y))?;
            same(&r, &name, "logloss", logloss(&p, &y))?;
            if with_groups {
                same(&r, &name, "gauc", gauc(&p, &y, &gr))?;
            } else {
                prop_assert_eq!(r.get(&name, "gauc"), None);
            }
        }
    }

    #[test]
    fn regression_slices_equal_the_metrics_of_their_subsets(
        (s, slices) in (0usize..50).prop_flat_map(|n| (
            prop::collection::vec((
                prop_oneof![(0u8..4).prop_map(|v| v as f32), -1e3f32..1e3],
                prop_oneof![(0u8..4).prop_map(|v| v as f32), -1e3f32..1e3],
            ), n),
            masks(n),
        )),
    ) {
        let n = s.len();
        let preds: Vec<f32> = s.iter().map(|x| x.0).collect();
        let targets: Vec<f32> = s.iter().map(|x| x.1).collect();
        let r = Report::regression(&preds, &targets, &refs(&slices)).unwrap();
        for (name, mask) in every_slice(&slices, n) {
            let (p, t) = (pick(&preds, &mask), pick(&targets, &mask));
            prop_assert_eq!(r.count(&name), Some(p.len() as u64));
            let m = || regression_metrics(&p, &t);
            same(&r, &name, "mse", m().map(|m| m.mse))?;
            same(&r, &name, "rmse", m().map(|m| m.rmse))?;
            same(&r, &name, "mae", m().map(|m| m.mae))?;
        }
    }

    /// Slices of a multi-class report with infinite scores equal the plain functions on the
    /// subset, and accuracy equals the documented arg-max rule computed here.
    #[test]
    fn multiclass_slices_equal_the_metrics_of_their_subsets(
        (k, s, slices) in (1usize..5, 0usize..40).prop_flat_map(|(k, n)| (
            Just(k),
            prop::collection::vec((prop::collection::vec(class_score(), k), 0u32..k as u32), n),
            masks(n),
        )),
    ) {
        let n = s.len();
        let scores: Vec<f32> = s.iter().flat_map(|(r, _)| r.iter().copied()).collect();
        let labels: Vec<u32> = s.iter().map(|(_, y)| *y).collect();
        let r = Report::multiclass(&scores, k, &labels, &refs(&slices)).unwrap();
        for (name, mask) in every_slice(&slices, n) {
            let rows: Vec<f32> = s.iter().zip(&mask).filter(|(_, m)| **m).flat_map(|((r, _), _)| r.iter().copied()).collect();
            let y = pick(&labels, &mask);
            prop_assert_eq!(r.count(&name), Some(y.len() as u64));
            same(&r, &name, "accuracy", accuracy(&rows, k, &y))?;
            same(&r, &name, "macro_precision", macro_precision(&rows, k, &y))?;
            same(&r, &name, "macro_recall", macro_recall(&rows, k, &y))?;
            if !y.is_empty() {
                let correct = s.iter().zip(&mask).filter(|(_, m)| **m)
                    .filter(|((row, y), _)| argmax(row) == *y as usize).count();
                prop_assert_eq!(r.get(&name, "accuracy"), Some(correct as f64 / y.len() as f64));
            }
        }
    }

    /// The confusion matrix of rows with infinite (and extreme finite) scores counts each row
    /// at (label, documented arg-max).
    #[test]
    fn infinite_scores_follow_the_argmax_rule(
        (k, s) in (1usize..6).prop_flat_map(|k| (
            Just(k),
            prop::collection::vec((prop::collection::vec(class_score(), k), 0u32..k as u32), 1..40),
        )),
    ) {
        let scores: Vec<f32> = s.iter().flat_map(|(r, _)| r.iter().copied()).collect();
        let labels: Vec<u32> = s.iter().map(|(_, y)| *y).collect();
        let mut m = ConfusionMatrix::new(k).unwrap();
        m.push(&scores, &labels).unwrap();
        let mut want = vec![0u64; k * k];
        for (row, y) in &s {
            want[*y as usize * k + argmax(row)] += 1;
        }
        for y in 0..k {
            for p in 0..k {
                prop_assert_eq!(m.count(y, p), want[y * k + p], "label {} predicted {}", y, p);
            }
        }
    }

    /// Ranking slices (one flag per query) equal the metrics of the selected queries, built
    /// here directly from their candidates.
    #[test]
    fn ranking_slices_equal_the_metrics_of_their_subsets(
        (qs, slices, k) in (0usize..12).prop_flat_map(|n| (
            prop::collection::vec(
                prop::collection::vec(((0u8..4).prop_map(|v| v as f32 / 4.0), any::<bool>()), 1..6)
                    .prop_map(|mut q| { q[0].1 = true; q }),
                n,
            ),
            masks(n),
            1usize..5,
        )),
    ) {
        let n = qs.len();
        let scores: Vec<f32> = qs.iter().flatten().map(|x| x.0).collect();
        let relevant: Vec<bool> = qs.iter().flatten().map(|x| x.1).collect();
        let mut offsets = vec![0];
        for q in &qs {
            offsets.push(offsets.last().unwrap() + q.len());
        }
        let all = Queries::with_offsets(&scores, &relevant, &offsets).unwrap();
        let r = Report::ranking(&all, k, &refs(&slices)).unwrap();
        for (name, mask) in every_slice(&slices, n) {
            let chosen: Vec<&Vec<(f32, bool)>> = pick(&qs.iter().collect::<Vec<_>>(), &mask);
            let s: Vec<f32> = chosen.iter().copied().flatten().map(|x| x.0).collect();
            let rel: Vec<bool> = chosen.iter().copied().flatten().map(|x| x.1).collect();
            let mut off = vec![0];
            for q in &chosen {
                off.push(off.last().unwrap() + q.len());
            }
            let direct = Queries::with_offsets(&s, &rel, &off).unwrap().metrics(k);
            match direct {
                Ok(m) => {
                    prop_assert_eq!(r.count(&name), Some(chosen.len() as u64));
                    same(&r, &name, &format!("hr@{k}"), Ok(m.hr))?;
                    same(&r, &name, &format!("ndcg@{k}"), Ok(m.ndcg))?;
                    same(&r, &name, &format!("recall@{k}"), Ok(m.recall))?;
                    same(&r, &name, "mrr", Ok(m.mrr))?;
                    prop_assert_eq!(r.get(&name, "auc"), m.auc);
                }
                Err(e) => {
                    prop_assert!(e.is_undefined() && chosen.is_empty(), "{}", e);
                    prop_assert_eq!(r.count(&name), Some(0));
                    prop_assert!(r.slices[&name].metrics.is_empty());
                }
            }
        }
    }
}
