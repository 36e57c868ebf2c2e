//! A linear probe on frozen features: multinomial logistic regression whose L2 strength is
//! chosen by cross-validation on the training rows only.
//!
//! The DUPN experiment uses it to ask how much of a user attribute (gender, age band,
//! occupation) an encoder's frozen representation holds. An unregularized probe on ~750 users
//! and an 80-wide representation overfits, most of all for occupation (21 classes, 1,700
//! weights): it then scores below always answering the most common class, and the comparison
//! between encoders measures the probe's variance more than the representation. Choosing the
//! strength by K-fold log loss on the training users (as scikit-learn's `LogisticRegressionCV`
//! does) keeps the test users out of every choice.

use anyhow::{Result, ensure};

/// The L2 strengths tried (on standardized inputs, with the loss a mean over rows).
pub const L2_GRID: [f32; 6] = [1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0];
/// Folds of the cross-validation.
pub const FOLDS: usize = 5;
/// Accelerated gradient steps per fit.
const STEPS: usize = 400;

/// A fitted probe's answers.
#[derive(Debug, Clone)]
pub struct Probe {
    /// The L2 strength the cross-validation chose.
    pub l2: f32,
    /// Class probabilities for each test row.
    pub probs: Vec<Vec<f32>>,
}

/// Fits the probe on `(x, y)` (labels in `0..classes`) and returns the class probabilities of
/// `test`. Inputs are standardized with the training rows' mean and deviation.
pub fn softmax_probe(
    x: &[Vec<f32>],
    y: &[usize],
    test: &[Vec<f32>],
    classes: usize,
) -> Result<Probe> {
    ensure!(
        x.len() >= FOLDS && x.len() == y.len(),
        "the probe needs at least {FOLDS} labelled rows, got {} rows and {} labels",
        x.len(),
        y.len()
    );
    ensure!(classes >= 2, "the probe needs at least 2 classes");
    if let Some(&bad) = y.iter().find(|&&c| c >= classes) {
        anyhow::bail!("probe label {bad} is not below the number of classes {classes}");
    }
    let d = x[0].len();
    ensure!(
        x.iter().chain(test).all(|r| r.len() == d),
        "probe rows differ in width"
    );
    let std = Standardizer::fit(x);
    let xs: Vec<Vec<f32>> = x.iter().map(|r| std.apply(r)).collect();
    // The folds' training and validation rows, split once for every strength tried.
    type Rows = (Vec<Vec<f32>>, Vec<usize>);
    let splits: Vec<(Rows, Rows)> = (0..FOLDS)
        .map(|fold| {
            let (mut t, mut v): (Rows, Rows) = Default::default();
            for (i, (r, &c)) in xs.iter().zip(y).enumerate() {
                let side = if i % FOLDS == fold { &mut v } else { &mut t };
                side.0.push(r.clone());
                side.1.push(c);
            }
            (t, v)
        })
        .collect();
    let mut best = (f64::INFINITY, L2_GRID[0]);
    for &l2 in &L2_GRID {
        let mut loss = 0.0;
        for ((xt, yt), (xv, yv)) in &splits {
            let w = fit(xt, yt, classes, l2);
            loss += xv
                .iter()
                .zip(yv)
                .map(|(r, &c)| -f64::from(probs(&w, r, classes)[c].max(1e-12)).ln())
                .sum::<f64>();
        }
        if loss < best.0 {
            best = (loss, l2);
        }
    }
    let l2 = best.1;
    let w = fit(&xs, y, classes, l2);
    let probs = test
        .iter()
        .map(|r| probs(&w, &std.apply(r), classes))
        .collect();
    Ok(Probe { l2, probs })
}

/// Predictions of a probe for every row, each from a probe that never saw that row.
#[derive(Debug, Clone)]
pub struct CrossFit {
    /// Class probabilities, row by row in the order of the inputs.
    pub probs: Vec<Vec<f32>>,
    /// The L2 strength chosen for each fold (by cross-validation inside the other folds).
    pub l2: Vec<f32>,
}

/// Cross-fitting: `folds` partition the rows of `(x, y)`; each fold is predicted by
/// [`softmax_probe`] fitted on the other folds. Scoring the pooled predictions uses every row
/// as a held-out row once, which has a fifth of the variance of scoring one 20% fold.
pub fn cross_fitted(
    x: &[Vec<f32>],
    y: &[usize],
    folds: &[Vec<usize>],
    classes: usize,
) -> Result<CrossFit> {
    ensure!(
        x.len() == y.len(),
        "{} probe rows but {} labels",
        x.len(),
        y.len()
    );
    let mut seen = vec![false; x.len()];
    for &i in folds.iter().flatten() {
        ensure!(
            i < x.len() && !seen[i],
            "probe folds must partition the rows (row {i})"
        );
        seen[i] = true;
    }
    ensure!(seen.iter().all(|&s| s), "probe folds must cover every row");
    let mut probs = vec![Vec::new(); x.len()];
    let mut l2 = Vec::with_capacity(folds.len());
    for (k, fold) in folds.iter().enumerate() {
        let (mut xt, mut yt) = (Vec::new(), Vec::new());
        for (j, other) in folds.iter().enumerate() {
            if j != k {
                xt.extend(other.iter().map(|&i| x[i].clone()));
                yt.extend(other.iter().map(|&i| y[i]));
            }
        }
        let test: Vec<Vec<f32>> = fold.iter().map(|&i| x[i].clone()).collect();
        let p = softmax_probe(&xt, &yt, &test, classes)?;
        for (&i, pi) in fold.iter().zip(p.probs) {
            probs[i] = pi;
        }
        l2.push(p.l2);
    }
    Ok(CrossFit { probs, l2 })
}

/// Per-column mean and standard deviation of the training rows.
struct Standardizer {
    mu: Vec<f32>,
    sd: Vec<f32>,
}

impl Standardizer {
    fn fit(x: &[Vec<f32>]) -> Self {
        let (n, d) = (x.len() as f64, x[0].len());
        let mut mu = vec![0f64; d];
        let mut var = vec![0f64; d];
        for r in x {
            for (m, v) in mu.iter_mut().zip(r) {
                *m += f64::from(*v) / n;
            }
        }
        for r in x {
            for ((s, v), m) in var.iter_mut().zip(r).zip(&mu) {
                *s += (f64::from(*v) - m).powi(2) / n;
            }
        }
        Self {
            mu: mu.iter().map(|&m| m as f32).collect(),
            sd: var.iter().map(|v| (v.sqrt() as f32).max(1e-6)).collect(),
        }
    }

    fn apply(&self, r: &[f32]) -> Vec<f32> {
        r.iter()
            .zip(&self.mu)
            .zip(&self.sd)
            .map(|((v, m), s)| (v - m) / s)
            .collect()
    }
}

/// Class probabilities of row `r` under weights `w` (`classes` blocks of `d` weights and a bias).
fn probs(w: &[f32], r: &[f32], classes: usize) -> Vec<f32> {
    let d = r.len();
    let mut s: Vec<f32> = w
        .chunks(d + 1)
        .take(classes)
        .map(|wc| wc[d] + r.iter().zip(wc).map(|(a, b)| a * b).sum::<f32>())
        .collect();
    let m = s.iter().copied().fold(f32::MIN, f32::max);
    let mut tot = 0.0;
    for v in &mut s {
        *v = (*v - m).exp();
        tot += *v;
    }
    s.iter().map(|v| v / tot).collect()
}

/// Gradient of the mean cross-entropy plus `l2 / 2 * |W|^2` (biases not penalized).
fn gradient(w: &[f32], x: &[Vec<f32>], y: &[usize], classes: usize, l2: f32) -> Vec<f32> {
    let d = x[0].len();
    let n = x.len() as f32;
    let mut g = vec![0f32; w.len()];
    for (r, &yi) in x.iter().zip(y) {
        let p = probs(w, r, classes);
        for (c, gc) in g.chunks_mut(d + 1).enumerate() {
            let e = (p[c] - if c == yi { 1.0 } else { 0.0 }) / n;
            for (gj, xj) in gc.iter_mut().zip(r) {
                *gj += e * xj;
            }
            gc[d] += e;
        }
    }
    for (k, (gk, wk)) in g.iter_mut().zip(w).enumerate() {
        if k % (d + 1) != d {
            *gk += l2 * wk;
        }
    }
    g
}

/// The largest eigenvalue of `X~^T X~ / n` (X~ = X with a column of ones), by power iteration.
fn gram_top_eigenvalue(x: &[Vec<f32>]) -> f32 {
    let d = x[0].len() + 1;
    let n = x.len() as f32;
    let mut v = vec![1f32 / (d as f32).sqrt(); d];
    let mut lambda = 0f32;
    for _ in 0..50 {
        let mut av = vec![0f32; d];
        for r in x {
            let dot: f32 = r.iter().zip(&v).map(|(a, b)| a * b).sum::<f32>() + v[d - 1];
            for (a, xj) in av.iter_mut().zip(r) {
                *a += dot * xj / n;
            }
            av[d - 1] += dot / n;
        }
        let norm = av.iter().map(|a| a * a).sum::<f32>().sqrt();
        if norm == 0.0 {
            break;
        }
        lambda = norm;
        v = av.iter().map(|a| a / norm).collect();
    }
    lambda
}

/// Minimizes the penalized mean cross-entropy by Nesterov's accelerated gradient with step
/// `1 / L`, `L = lambda_max(X~^T X~ / n) / 2 + l2` (Böhning's bound on the softmax Hessian),
/// so the step never overshoots whatever the scale of the features.
fn fit(x: &[Vec<f32>], y: &[usize], classes: usize, l2: f32) -> Vec<f32> {
    let d = x[0].len();
    let lr = 1.0 / (0.5 * gram_top_eigenvalue(x) + l2).max(1e-6);
    let mut w = vec![0f32; classes * (d + 1)];
    let mut prev = w.clone();
    for k in 0..STEPS {
        let beta = k as f32 / (k as f32 + 3.0);
        let look: Vec<f32> = w
            .iter()
            .zip(&prev)
            .map(|(a, b)| a + beta * (a - b))
            .collect();
        let g = gradient(&look, x, y, classes, l2);
        prev = std::mem::replace(
            &mut w,
            look.iter().zip(&g).map(|(a, b)| a - lr * b).collect(),
        );
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A seeded stream of numbers in [-0.5, 0.5) (a linear congruential generator).
    fn uniform(seed: u64) -> impl FnMut() -> f32 {
        let mut s = seed;
        move || {
            s = s
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            ((s >> 33) as f32 / (1u64 << 31) as f32) - 0.5
        }
    }

    fn objective(w: &[f32], x: &[Vec<f32>], y: &[usize], classes: usize, l2: f32) -> f64 {
        let d = x[0].len();
        let ce: f64 = x
            .iter()
            .zip(y)
            .map(|(r, &c)| -f64::from(probs(w, r, classes)[c]).ln())
            .sum::<f64>()
            / x.len() as f64;
        let pen: f64 = w
            .iter()
            .enumerate()
            .filter(|(k, _)| k % (d + 1) != d)
            .map(|(_, v)| f64::from(*v).powi(2))
            .sum();
        ce + 0.5 * f64::from(l2) * pen
    }

    #[test]
    fn separates_a_linearly_separable_attribute() {
        // Label = sign of the first coordinate; the second is noise.
        let x: Vec<Vec<f32>> = (0..200)
            .map(|i| vec![(i as f32 - 99.5) / 50.0, ((i * 37) % 11) as f32])
            .collect();
        let y: Vec<usize> = (0..200).map(|i| usize::from(i >= 100)).collect();
        let test = vec![vec![-1.0, 3.0], vec![1.0, 3.0]];
        let p = softmax_probe(&x, &y, &test, 2).unwrap();
        assert!(p.probs[0][0] > 0.9 && p.probs[1][1] > 0.9, "{p:?}");
        assert!((p.probs[0][0] + p.probs[0][1] - 1.0).abs() < 1e-5);
    }

    #[test]
    fn pure_noise_features_get_the_strongest_penalty_and_the_class_prior() {
        // 30 noise columns, 60 rows, labels unrelated to them (2 of 3 are class 0): held-out
        // log loss prefers shrinking the weights to nothing, which leaves the biases, i.e. the
        // training class frequencies.
        let mut noise = uniform(7);
        let x: Vec<Vec<f32>> = (0..60)
            .map(|_| (0..30).map(|_| noise()).collect())
            .collect();
        let y: Vec<usize> = (0..60).map(|i| usize::from(i % 3 == 2)).collect();
        let p = softmax_probe(&x, &y, &x[..5], 2).unwrap();
        assert_eq!(p.l2, *L2_GRID.last().unwrap(), "{p:?}");
        for r in &p.probs {
            assert!((r[0] - 2.0 / 3.0).abs() < 0.1, "{r:?}");
        }
    }

    #[test]
    fn a_strong_signal_gets_a_weak_penalty() {
        let x: Vec<Vec<f32>> = (0..300)
            .map(|i| vec![(i % 3) as f32 + 0.1 * ((i * 7) % 5) as f32, (i % 7) as f32])
            .collect();
        let y: Vec<usize> = (0..300).map(|i| i % 3).collect();
        let p = softmax_probe(&x, &y, &x[..3], 3).unwrap();
        assert!(p.l2 <= 1e-2, "{p:?}");
        for (i, r) in p.probs.iter().enumerate() {
            assert!(r[i] > 0.9, "row {i}: {r:?}");
        }
    }

    #[test]
    fn bad_labels_and_shapes_are_refused() {
        let x = vec![vec![0.0f32]; 10];
        let e = softmax_probe(&x, &[0, 1, 2, 0, 1, 0, 1, 0, 1, 0], &x, 2).unwrap_err();
        assert!(e.to_string().contains("label 2"), "{e}");
        assert!(softmax_probe(&x[..3], &[0, 1, 0], &x, 2).is_err());
        let wide = vec![vec![0.0f32, 1.0]];
        assert!(softmax_probe(&x, &[0; 10], &wide, 2).is_err());
    }

    #[test]
    fn cross_fitting_predicts_every_row_from_a_probe_that_did_not_see_it() {
        // Rows 0..40 carry the class in their feature; rows 40..50 are "mislabelled" copies of
        // class-0 features labelled 1. A probe that had seen a row could memorize it; each fold's
        // probe has not, so the mislabelled rows are predicted as class 0.
        let mut x: Vec<Vec<f32>> = (0..40).map(|i| vec![(i % 2) as f32 * 2.0 - 1.0]).collect();
        let mut y: Vec<usize> = (0..40).map(|i| i % 2).collect();
        x.extend((0..10).map(|_| vec![-1.0]));
        y.extend([1; 10]);
        let folds: Vec<Vec<usize>> = (0..5)
            .map(|k| (0..50).filter(|i| i % 5 == k).collect())
            .collect();
        let c = cross_fitted(&x, &y, &folds, 2).unwrap();
        assert_eq!(c.probs.len(), 50);
        assert_eq!(c.l2.len(), 5);
        for i in 40..50 {
            assert!(c.probs[i][0] > 0.5, "row {i}: {:?}", c.probs[i]);
        }
        for i in (1..40).step_by(2) {
            assert!(c.probs[i][1] > 0.9, "row {i}: {:?}", c.probs[i]);
        }
        let overlapping = vec![vec![0, 1], (1..50).collect()];
        assert!(cross_fitted(&x, &y, &overlapping, 2).is_err());
        assert!(cross_fitted(&x, &y, &folds[1..], 2).is_err());
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(24))]

        /// The gradient matches finite differences of the objective.
        #[test]
        fn gradient_matches_finite_differences(
            seed in 0u64..1000, l2 in 0.0f32..1.0, classes in 2usize..4,
        ) {
            let mut r = uniform(seed);
            let x: Vec<Vec<f32>> = (0..8).map(|_| (0..3).map(|_| 2.0 * r()).collect()).collect();
            let y: Vec<usize> = (0..8).map(|i| i % classes).collect();
            let w: Vec<f32> = (0..classes * 4).map(|_| r()).collect();
            let g = gradient(&w, &x, &y, classes, l2);
            let h = 1e-2f32;
            for k in 0..w.len() {
                let (mut a, mut b) = (w.clone(), w.clone());
                a[k] += h;
                b[k] -= h;
                let fd = (objective(&a, &x, &y, classes, l2) - objective(&b, &x, &y, classes, l2))
                    / (2.0 * f64::from(h));
                prop_assert!((fd - f64::from(g[k])).abs() < 2e-3, "k {k}: fd {fd} vs {}", g[k]);
            }
        }

        /// A fit lowers the objective below the zero start and is close to stationary, whatever
        /// the features' scale (the step follows the data's curvature).
        #[test]
        fn fit_converges_at_any_feature_scale(seed in 0u64..1000, scale in 0.01f32..100.0) {
            let mut r = uniform(seed);
            let x: Vec<Vec<f32>> = (0..40).map(|_| (0..4).map(|_| scale * r()).collect()).collect();
            let y: Vec<usize> = x.iter().map(|v| usize::from(v[0] + 0.3 * scale * r() > 0.0)).collect();
            let l2 = 0.1;
            let w = fit(&x, &y, 2, l2);
            let zero = vec![0f32; w.len()];
            prop_assert!(objective(&w, &x, &y, 2, l2) < objective(&zero, &x, &y, 2, l2));
            let g = gradient(&w, &x, &y, 2, l2);
            let gmax = g.iter().fold(0f32, |m, v| m.max(v.abs()));
            prop_assert!(gmax < 1e-3 * scale.max(1.0), "gradient {gmax} at scale {scale}");
        }
    }
}
