//! Property tests against slow, obviously-correct references.

use proptest::prelude::*;
use rec_metrics::{
    AucAccumulator, ConfusionMatrix, GaucAccumulator, LogLossAccumulator, MetricError, Queries,
    RankingAccumulator, RegressionAccumulator, accuracy, auc, gauc, logloss, macro_precision,
    macro_recall, mae, mse,
};

/// Scores with many ties: a few common values, signed zeros, infinities and arbitrary floats.
fn score() -> impl Strategy<Value = f32> {
    prop_oneof![
        6 => (0u8..8).prop_map(|v| v as f32 / 8.0),
        1 => Just(-0.0f32),
        1 => Just(0.0f32),
        1 => Just(f32::INFINITY),
        1 => Just(f32::NEG_INFINITY),
        2 => any::<f32>().prop_filter("not NaN", |x| !x.is_nan()),
    ]
}

/// Labels in [0, 1], mostly 0/1, sometimes fractional (> 0.5 is positive).
fn label() -> impl Strategy<Value = f32> {
    prop_oneof![
        4 => Just(0.0f32),
        4 => Just(1.0f32),
        1 => Just(0.5f32),
        1 => 0.0f32..=1.0,
    ]
}

fn samples(max: usize) -> impl Strategy<Value = Vec<(f32, f32)>> {
    prop::collection::vec((score(), label()), 0..max)
}

/// Twice the pairwise U statistic, O(n^2): the definition of AUC.
fn pairwise_twice_u(scores: &[f32], labels: &[f32]) -> (u64, u64, u64) {
    let (mut u2, mut p, mut n) = (0u64, 0u64, 0u64);
    for (i, &si) in scores.iter().enumerate() {
        if labels[i] > 0.5 {
            p += 1;
            for (j, &sj) in scores.iter().enumerate() {
                if labels[j] <= 0.5 {
                    // -0.0 == 0.0 in IEEE comparison, as it should.
                    u2 += if si > sj { 2 } else { (si == sj) as u64 };
                }
            }
        } else {
            n += 1;
        }
    }
    (u2, p, n)
}

fn reference_auc(scores: &[f32], labels: &[f32]) -> Option<f64> {
    let (u2, p, n) = pairwise_twice_u(scores, labels);
    (p > 0 && n > 0).then(|| u2 as f64 / (2 * p * n) as f64)
}

fn unzip(s: &[(f32, f32)]) -> (Vec<f32>, Vec<f32>) {
    s.iter().copied().unzip()
}

/// Cuts `0..n` at the given points (sorted, deduplicated, clamped).
fn chunks(n: usize, cuts: &[usize]) -> Vec<std::ops::Range<usize>> {
    let mut c: Vec<usize> = cuts.iter().map(|&x| x % (n + 1)).collect();
    c.push(0);
    c.push(n);
    c.sort_unstable();
    c.dedup();
    c.windows(2).map(|w| w[0]..w[1]).collect()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn auc_equals_pairwise_reference(s in samples(200)) {
        let (scores, labels) = unzip(&s);
        match (auc(&scores, &labels), reference_auc(&scores, &labels)) {
            (Ok(a), Some(r)) => prop_assert_eq!(a.to_bits(), r.to_bits(), "{} vs {}", a, r),
            (Err(MetricError::OneClass { .. }), None) if !s.is_empty() => {}
            (Err(MetricError::Empty { .. }), None) if s.is_empty() => {}
            (a, r) => prop_assert!(false, "auc {:?} vs reference {:?}", a, r),
        }
    }

    #[test]
    fn gauc_equals_per_group_reference(
        s in samples(150),
        groups in prop::collection::vec(prop_oneof![0u32..6, Just(u32::MAX)], 150),
    ) {
        let (scores, labels) = unzip(&s);
        let groups = &groups[..s.len()];
        let mut ids: Vec<u32> = groups.to_vec();
        ids.sort_unstable();
        ids.dedup();
        let (mut num, mut den) = (0.0f64, 0u64);
        for g in ids {
            let idx: Vec<usize> = (0..s.len()).filter(|&i| groups[i] == g).collect();
            let gs: Vec<f32> = idx.iter().map(|&i| scores[i]).collect();
            let gl: Vec<f32> = idx.iter().map(|&i| labels[i]).collect();
            if let Some(a) = reference_auc(&gs, &gl) {
                num += a * idx.len() as f64;
                den += idx.len() as u64;
            }
        }
        match gauc(&scores, &labels, groups) {
            Ok(v) => {
                prop_assert!(den > 0);
                let r = num / den as f64;
                prop_assert!((v - r).abs() <= 1e-12, "{} vs {}", v, r);
            }
            Err(MetricError::OneClass { .. }) => prop_assert!(den == 0 && !s.is_empty()),
            Err(MetricError::Empty { .. }) => prop_assert!(s.is_empty()),
            Err(e) => prop_assert!(false, "{}", e),
        }
    }

    #[test]
    fn merged_accumulators_equal_one_shot(
        s in samples(300),
        groups in prop::collection::vec(0u32..10, 300),
        cuts in prop::collection::vec(0usize..400, 0..6),
        reverse in any::<bool>(),
    ) {
        let (scores, labels) = unzip(&s);
        let probs: Vec<f32> = scores.iter().map(|x| if x.is_finite() { x.abs().fract() } else { 0.5 }).collect();
        let preds: Vec<f32> = scores.iter().map(|x| if x.is_finite() { x.clamp(-1e30, 1e30) } else { 1.0 }).collect();
        let groups = &groups[..s.len()];
        let mut parts: Vec<_> = chunks(s.len(), &cuts);
        if reverse {
            parts.reverse();
        }
        // One accumulator per chunk, then merged left to right.
        let mut a = AucAccumulator::new();
        let mut g = GaucAccumulator::new();
        let mut l = LogLossAccumulator::new();
        let mut r = RegressionAccumulator::new();
        for p in &parts {
            let mut a2 = AucAccumulator::new();
            a2.push(&scores[p.clone()], &labels[p.clone()]).unwrap();
            a.merge(a2);
            let mut g2 = GaucAccumulator::new();
            g2.push(&scores[p.clone()], &labels[p.clone()], &groups[p.clone()]).unwrap();
            g.merge(g2);
            let mut l2 = LogLossAccumulator::new();
            l2.push(&probs[p.clone()], &labels[p.clone()]).unwrap();
            l.merge(l2);
            let mut r2 = RegressionAccumulator::new();
            r2.push(&preds[p.clone()], &labels[p.clone()]).unwrap();
            r.merge(r2);
        }
        let same = |x: Result<f64, MetricError>, y: Result<f64, MetricError>| match (x, y) {
            (Ok(x), Ok(y)) => x.to_bits() == y.to_bits(),
            (Err(x), Err(y)) => x.to_string() == y.to_string(),
            _ => false,
        };
        prop_assert!(same(a.finish(), auc(&scores, &labels)));
        prop_assert!(same(g.finish(), gauc(&scores, &labels, groups)));
        prop_assert!(same(l.finish(), logloss(&probs, &labels)));
        prop_assert!(same(r.finish().map(|m| m.mse), mse(&preds, &labels)));
        prop_assert!(same(r.finish().map(|m| m.mae), mae(&preds, &labels)));
    }

    #[test]
    fn regression_and_logloss_match_naive_sums(s in prop::collection::vec((-1e3f32..1e3, -1e3f32..1e3, 0.0f32..=1.0, label()), 1..200)) {
        let p: Vec<f32> = s.iter().map(|x| x.0).collect();
        let t: Vec<f32> = s.iter().map(|x| x.1).collect();
        let n = s.len() as f64;
        let naive_mse = s.iter().map(|x| (x.0 as f64 - x.1 as f64).powi(2)).sum::<f64>() / n;
        let naive_mae = s.iter().map(|x| (x.0 as f64 - x.1 as f64).abs()).sum::<f64>() / n;
        prop_assert!((mse(&p, &t).unwrap() - naive_mse).abs() <= 1e-9 * naive_mse.max(1.0));
        prop_assert!((mae(&p, &t).unwrap() - naive_mae).abs() <= 1e-9 * naive_mae.max(1.0));
        let probs: Vec<f32> = s.iter().map(|x| x.2).collect();
        let y: Vec<f32> = s.iter().map(|x| x.3).collect();
        let naive_ll = s.iter().map(|x| {
            let q = (x.2 as f64).clamp(1e-7, 1.0 - 1e-7);
            let y = x.3 as f64;
            -(y * q.ln() + (1.0 - y) * (1.0 - q).ln())
        }).sum::<f64>() / n;
        prop_assert!((logloss(&probs, &y).unwrap() - naive_ll).abs() <= 1e-12 * naive_ll.max(1.0));
    }

    #[test]
    fn multiclass_matches_definitions(
        rows in prop::collection::vec((prop::collection::vec(0u8..4, 4), 0u32..4), 1..80),
        cuts in prop::collection::vec(0usize..100, 0..4),
    ) {
        let k = 4;
        let scores: Vec<f32> = rows.iter().flat_map(|(r, _)| r.iter().map(|&v| v as f32)).collect();
        let labels: Vec<u32> = rows.iter().map(|(_, y)| *y).collect();
        // First index of the maximum.
        let preds: Vec<usize> = rows.iter().map(|(r, _)| {
            let m = *r.iter().max().unwrap();
            r.iter().position(|&v| v == m).unwrap()
        }).collect();
        let n = rows.len();
        let correct = (0..n).filter(|&i| preds[i] == labels[i] as usize).count();
        prop_assert_eq!(accuracy(&scores, k, &labels).unwrap(), correct as f64 / n as f64);
        let (mut ps, mut rs, mut present) = (0.0, 0.0, 0);
        for c in 0..k {
            let tp = (0..n).filter(|&i| preds[i] == c && labels[i] as usize == c).count() as f64;
            let predicted = preds.iter().filter(|&&p| p == c).count() as f64;
            let support = labels.iter().filter(|&&y| y as usize == c).count() as f64;
            if predicted + support == 0.0 { continue; }
            present += 1;
            if predicted > 0.0 { ps += tp / predicted; }
            if support > 0.0 { rs += tp / support; }
        }
        prop_assert!((macro_precision(&scores, k, &labels).unwrap() - ps / present as f64).abs() < 1e-12);
        prop_assert!((macro_recall(&scores, k, &labels).unwrap() - rs / present as f64).abs() < 1e-12);
        let mut merged = ConfusionMatrix::new(k).unwrap();
        for p in chunks(n, &cuts) {
            let mut m = ConfusionMatrix::new(k).unwrap();
            m.push(&scores[p.start * k..p.end * k], &labels[p]).unwrap();
            merged.merge(m).unwrap();
        }
        let mut whole = ConfusionMatrix::new(k).unwrap();
        whole.push(&scores, &labels).unwrap();
        prop_assert_eq!(merged, whole);
    }
}

// Larger inputs, most of which go through the radix sort (>= 1024 keys per class list; a
// class list below that takes the comparison sort, which is checked the same way).
proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    #[test]
    fn auc_equals_pairwise_reference_on_radix_path(
        s in prop::collection::vec((score(), prop_oneof![Just(0.0f32), Just(1.0f32)]), 2100..2600),
    ) {
        let (scores, labels) = unzip(&s);
        let r = reference_auc(&scores, &labels);
        let a = auc(&scores, &labels).ok();
        prop_assert_eq!(a.map(f64::to_bits), r.map(f64::to_bits));
    }
}

// ---- Ranking: brute force over every ordering of tied candidates. ----

/// Average over all orderings consistent with the scores (ties in any order, each ordering
/// equally likely) of (hr, ndcg, rr, recall) at cut-off k.
fn brute_force_ranking(scores: &[f32], relevant: &[bool], k: usize) -> [f64; 4] {
    fn permute(rest: &mut Vec<usize>, cur: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if rest.is_empty() {
            out.push(cur.clone());
        }
        for i in 0..rest.len() {
            let x = rest.remove(i);
            cur.push(x);
            permute(rest, cur, out);
            cur.pop();
            rest.insert(i, x);
        }
    }
    let mut all = Vec::new();
    permute(&mut (0..scores.len()).collect(), &mut Vec::new(), &mut all);
    let consistent: Vec<_> = all
        .into_iter()
        .filter(|p| p.windows(2).all(|w| scores[w[0]] >= scores[w[1]]))
        .collect();
    let r_total = relevant.iter().filter(|r| **r).count();
    let idcg: f64 = (1..=r_total.min(k))
        .map(|r| 1.0 / ((r + 1) as f64).log2())
        .sum();
    let mut acc = [0.0; 4];
    for p in &consistent {
        let ranks: Vec<usize> = (1..=p.len()).filter(|&r| relevant[p[r - 1]]).collect();
        let in_top = ranks.iter().filter(|&&r| r <= k).count();
        acc[0] += (in_top > 0) as u8 as f64;
        acc[1] += ranks
            .iter()
            .filter(|&&r| r <= k)
            .map(|&r| 1.0 / ((r + 1) as f64).log2())
            .sum::<f64>()
            / idcg;
        acc[2] += 1.0 / ranks[0] as f64;
        acc[3] += in_top as f64 / r_total as f64;
    }
    acc.map(|v| v / consistent.len() as f64)
}

fn query() -> impl Strategy<Value = Vec<(f32, bool)>> {
    prop::collection::vec(
        ((0u8..4).prop_map(|v| v as f32 / 4.0), any::<bool>()),
        1..=7,
    )
    .prop_map(|mut q| {
        q[0].1 = true;
        q
    })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn ranking_equals_brute_force_over_tie_orderings(q in query(), k in 1usize..9) {
        let scores: Vec<f32> = q.iter().map(|x| x.0).collect();
        let relevant: Vec<bool> = q.iter().map(|x| x.1).collect();
        let m = Queries::fixed(&scores, &relevant, scores.len()).unwrap().metrics(k).unwrap();
        let want = brute_force_ranking(&scores, &relevant, k);
        let got = [m.hr, m.ndcg, m.mrr, m.recall];
        for (name, (g, w)) in ["hr", "ndcg", "mrr", "recall"].iter().zip(got.iter().zip(want)) {
            prop_assert!((g - w).abs() < 1e-12, "{}: {} vs {}", name, g, w);
        }
        prop_assert_eq!(m.auc, reference_auc(&scores, &relevant.iter().map(|&r| r as u8 as f32).collect::<Vec<_>>()));
    }

    #[test]
    fn ranking_accumulators_merge_exactly(
        qs in prop::collection::vec(query(), 1..20),
        cuts in prop::collection::vec(0usize..25, 0..4),
        k in 1usize..6,
    ) {
        let scores: Vec<f32> = qs.iter().flatten().map(|x| x.0).collect();
        let relevant: Vec<bool> = qs.iter().flatten().map(|x| x.1).collect();
        let mut offsets = vec![0];
        for q in &qs {
            offsets.push(offsets.last().unwrap() + q.len());
        }
        let whole = Queries::with_offsets(&scores, &relevant, &offsets).unwrap().metrics(k).unwrap();
        let mut merged = RankingAccumulator::new(k).unwrap();
        for p in chunks(qs.len(), &cuts).into_iter().rev() {
            let (a, b) = (offsets[p.start], offsets[p.end]);
            let local: Vec<usize> = offsets[p.start..=p.end].iter().map(|o| o - a).collect();
            let part = Queries::with_offsets(&scores[a..b], &relevant[a..b], &local).unwrap();
            let mut acc = RankingAccumulator::new(k).unwrap();
            acc.push(&part).unwrap();
            merged.merge(acc).unwrap();
        }
        prop_assert_eq!(merged.finish().unwrap(), whole);
    }
}
