//! The arithmetic of a GPCA split: the first principal direction of a set of gradients by
//! power iteration, the projections, and the three thresholds. \[paper\]\[ref\]

use crate::config::Threshold;

/// First principal direction of the rows of `g` (`m` rows of width `d`, row after row) after
/// centring, by power iteration on the covariance without forming it (`O(m d)` per
/// iteration). Returns the unit direction and the mean row. The start vector is the centred
/// row of largest norm (deterministic); the sign is fixed so that the largest-magnitude
/// component is positive (ties: the first). Returns `None` for fewer than two rows or when
/// every centred row is zero (no direction to split along).
pub fn principal_direction(g: &[f32], d: usize, iters: usize) -> Option<(Vec<f64>, Vec<f64>)> {
    if d == 0 || !g.len().is_multiple_of(d) {
        return None;
    }
    let m = g.len() / d;
    if m < 2 {
        return None;
    }
    let mut mean = vec![0f64; d];
    for row in g.chunks_exact(d) {
        mean.iter_mut().zip(row).for_each(|(a, &b)| *a += b as f64);
    }
    mean.iter_mut().for_each(|a| *a /= m as f64);
    let centred: Vec<f64> = g
        .chunks_exact(d)
        .flat_map(|row| row.iter().zip(&mean).map(|(&x, &mu)| x as f64 - mu))
        .collect();
    let (mut best, mut best_norm) = (0usize, 0f64);
    for (i, row) in centred.chunks_exact(d).enumerate() {
        let n: f64 = row.iter().map(|x| x * x).sum();
        if n > best_norm {
            best = i;
            best_norm = n;
        }
    }
    if best_norm <= 0.0 || !best_norm.is_finite() {
        return None;
    }
    let mut v: Vec<f64> = centred[best * d..(best + 1) * d].to_vec();
    normalize(&mut v)?;
    let mut w = vec![0f64; d];
    for _ in 0..iters.max(1) {
        // w = X^T (X v)
        w.iter_mut().for_each(|x| *x = 0.0);
        for row in centred.chunks_exact(d) {
            let p: f64 = row.iter().zip(&v).map(|(a, b)| a * b).sum();
            w.iter_mut().zip(row).for_each(|(a, &b)| *a += p * b);
        }
        if normalize(&mut w).is_none() {
            break;
        }
        let diff: f64 = w.iter().zip(&v).map(|(a, b)| (a - b).abs()).sum();
        std::mem::swap(&mut v, &mut w);
        if diff < 1e-10 {
            break;
        }
    }
    let lead = v
        .iter()
        .enumerate()
        .fold((0usize, 0f64), |acc, (i, &x)| {
            if x.abs() > acc.1 { (i, x.abs()) } else { acc }
        })
        .0;
    if v[lead] < 0.0 {
        v.iter_mut().for_each(|x| *x = -*x);
    }
    Some((v, mean))
}

fn normalize(v: &mut [f64]) -> Option<()> {
    let n = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if n > 0.0 && n.is_finite() {
        v.iter_mut().for_each(|x| *x /= n);
        Some(())
    } else {
        None
    }
}

/// `(g - mean) . v` for one gradient.
pub fn project(g: &[f32], mean: &[f64], v: &[f64]) -> f64 {
    g.iter()
        .zip(mean)
        .zip(v)
        .map(|((&x, &mu), &vi)| (x as f64 - mu) * vi)
        .sum()
}

/// The cut of a split: members with projection `>= threshold` stay, the others move.
/// `weights` (interactions per member) are used by [`Threshold::Data`].
pub fn threshold(mode: Threshold, proj: &[f64], weights: &[f64]) -> f64 {
    match mode {
        Threshold::Zero => 0.0,
        Threshold::Median => {
            let mut p = proj.to_vec();
            p.sort_by(f64::total_cmp);
            let m = p.len();
            if m == 0 {
                0.0
            } else if m % 2 == 1 {
                p[m / 2]
            } else {
                // The upper median: stays are `>=`, so the halves are as equal as possible.
                p[m / 2]
            }
        }
        Threshold::Data => {
            // The smallest cut whose "stay" side (>= cut) holds at most half of the weight.
            let mut idx: Vec<usize> = (0..proj.len()).collect();
            idx.sort_by(|&a, &b| proj[b].total_cmp(&proj[a]));
            let total: f64 = weights.iter().sum();
            let mut acc = 0.0;
            let mut cut = proj.iter().copied().fold(f64::INFINITY, f64::min);
            for &i in &idx {
                if acc + weights[i] > total / 2.0 && acc > 0.0 {
                    break;
                }
                acc += weights[i];
                cut = proj[i];
            }
            cut
        }
    }
}

/// Splits members by their projections: `true` = stays. `None` when one side would be empty
/// (a split never creates an empty cluster).
pub fn split_sides(mode: Threshold, proj: &[f64], weights: &[f64]) -> Option<Vec<bool>> {
    let t = threshold(mode, proj, weights);
    let stay: Vec<bool> = proj.iter().map(|&p| p >= t).collect();
    let n_stay = stay.iter().filter(|&&s| s).count();
    (n_stay > 0 && n_stay < stay.len()).then_some(stay)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn eigen_check(g: &[f32], d: usize, v: &[f64], mean: &[f64]) -> (f64, f64) {
        // Rayleigh quotient of v and the largest over random unit vectors' quotients.
        let cov = |u: &[f64]| -> f64 {
            g.chunks_exact(d)
                .map(|row| {
                    let p: f64 = row
                        .iter()
                        .zip(mean)
                        .zip(u)
                        .map(|((&x, &m), &ui)| (x as f64 - m) * ui)
                        .sum();
                    p * p
                })
                .sum()
        };
        let rv = cov(v);
        let mut best_other = 0f64;
        for k in 0..d {
            let mut e = vec![0f64; d];
            e[k] = 1.0;
            best_other = best_other.max(cov(&e));
        }
        (rv, best_other)
    }

    proptest! {
        #[test]
        fn direction_is_a_unit_top_eigenvector(
            m in 2usize..30, d in 1usize..6,
            vals in proptest::collection::vec(-3.0f32..3.0, 180),
        ) {
            let g = &vals[..m * d];
            if let Some((v, mean)) = principal_direction(g, d, 500) {
                let norm: f64 = v.iter().map(|x| x * x).sum::<f64>().sqrt();
                prop_assert!((norm - 1.0).abs() < 1e-9);
                // Mean is the column mean.
                for k in 0..d {
                    let mk: f64 = g.chunks_exact(d).map(|r| r[k] as f64).sum::<f64>() / m as f64;
                    prop_assert!((mk - mean[k]).abs() < 1e-9);
                }
                // The variance along v is at least that along every axis (top eigenvector).
                let (rv, axis) = eigen_check(g, d, &v, &mean);
                prop_assert!(rv >= axis * (1.0 - 1e-4) - 1e-9, "{} < {}", rv, axis);
                // Centred projections sum to zero, so a zero cut leaves both sides non-empty
                // unless all projections vanish.
                let s: f64 = g.chunks_exact(d).map(|r| project(r, &mean, &v)).sum();
                prop_assert!(s.abs() < 1e-6 * (1.0 + rv.sqrt()) * m as f64);
            }
        }

        #[test]
        fn thresholds_split_into_nonempty_sides(
            proj in proptest::collection::vec(-5.0f64..5.0, 2..40),
            w in proptest::collection::vec(1.0f64..10.0, 40),
        ) {
            let weights = &w[..proj.len()];
            for mode in [Threshold::Zero, Threshold::Median, Threshold::Data] {
                if let Some(stay) = split_sides(mode, &proj, weights) {
                    let t = threshold(mode, &proj, weights);
                    for (p, s) in proj.iter().zip(&stay) {
                        prop_assert_eq!(*s, *p >= t);
                    }
                    prop_assert!(stay.iter().any(|&s| s) && stay.iter().any(|&s| !s));
                }
            }
            // The median halves by count (within ties).
            let mut distinct = proj.clone();
            distinct.sort_by(f64::total_cmp);
            distinct.dedup();
            if distinct.len() == proj.len() {
                let stay = split_sides(Threshold::Median, &proj, weights).unwrap();
                let n = stay.iter().filter(|&&s| s).count();
                prop_assert!(n == proj.len() / 2 || n == proj.len().div_ceil(2));
                // The data threshold leaves at most half of the weight (plus one member) on the stay side.
                if let Some(stay) = split_sides(Threshold::Data, &proj, weights) {
                    let total: f64 = weights.iter().sum();
                    let kept: f64 = weights.iter().zip(&stay).filter(|(_, s)| **s).map(|(w, _)| w).sum();
                    prop_assert!(kept <= total / 2.0 + 10.0);
                }
            }
        }
    }

    #[test]
    fn separates_two_planted_groups() {
        // Two groups of gradients along +x and -x with noise in y: the split recovers them.
        let mut g = Vec::new();
        for i in 0..20 {
            let s = if i < 10 { 1.0 } else { -1.0 };
            g.extend_from_slice(&[s * 3.0 + 0.01 * i as f32, 0.1 * ((i % 3) as f32 - 1.0)]);
        }
        let (v, mean) = principal_direction(&g, 2, 100).unwrap();
        assert!(v[0].abs() > 0.99);
        let proj: Vec<f64> = g.chunks_exact(2).map(|r| project(r, &mean, &v)).collect();
        let stay = split_sides(Threshold::Zero, &proj, &[1.0; 20]).unwrap();
        assert!(stay[..10].iter().all(|&s| s == stay[0]));
        assert!(stay[10..].iter().all(|&s| s != stay[0]));
        assert!(principal_direction(&[1.0, 1.0, 1.0, 1.0], 2, 10).is_none());
        assert!(principal_direction(&[1.0, 2.0], 2, 10).is_none());
    }
}
