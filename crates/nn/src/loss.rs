//! Losses that are numerically stable and differentiable everywhere candle needs them to be.
//!
//! Labels equal to `NaN` mean "no label for this task" and are left out of the mean.

use candle_core::{D, Device, Result, Tensor};
use rec_data::{Batch, Schema, TaskKind};

/// Mean binary cross-entropy of `logits` against 0/1 `labels`, optionally weighted.
///
/// Uses the stable form `max(x, 0) - x*y + log(1 + exp(-|x|))`, which stays finite for any
/// logit (candle's `binary_cross_entropy_with_logit` overflows for large logits).
pub fn bce_with_logits(
    logits: &Tensor,
    labels: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let per = bce_with_logits_per_sample(logits, labels)?;
    weighted_mean(&per, weights)
}

/// Per-sample binary cross-entropy (stable form), same shape as `logits`.
pub fn bce_with_logits_per_sample(logits: &Tensor, labels: &Tensor) -> Result<Tensor> {
    let relu = logits.relu()?;
    let softplus_neg_abs = (logits.abs()?.neg()?.exp()? + 1.0)?.log()?;
    (relu - (logits * labels)?)? + softplus_neg_abs
}

/// Mean squared error, optionally weighted.
pub fn mse(pred: &Tensor, target: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    let per = (pred - target)?.sqr()?;
    weighted_mean(&per, weights)
}

/// Mean softmax cross-entropy of `[n, k]` logits against class indices (`[n]` u32).
pub fn softmax_cross_entropy(
    logits: &Tensor,
    classes: &Tensor,
    weights: Option<&Tensor>,
) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let lse = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&classes.unsqueeze(1)?, 1)?;
    let per = (lse - picked)?.squeeze(1)?;
    weighted_mean(&per, weights)
}

fn weighted_mean(per: &Tensor, weights: Option<&Tensor>) -> Result<Tensor> {
    match weights {
        None => per.mean_all(),
        Some(w) => {
            let total = w.sum_all()?;
            (per * w)?.sum_all()?.broadcast_div(&total)
        }
    }
}

/// Weights that drop unlabelled (`NaN`) samples of one task and apply the batch's sample
/// weights; `None` when every sample counts once. Also returns the labels with `NaN` replaced
/// by 0 and the number of labelled samples.
pub fn label_weights(
    labels: &[f32],
    sample_weights: Option<&[f32]>,
) -> (Vec<f32>, Option<Vec<f32>>, usize) {
    let clean: Vec<f32> = labels
        .iter()
        .map(|&y| if y.is_nan() { 0.0 } else { y })
        .collect();
    let any_missing = labels.iter().any(|y| y.is_nan());
    let labelled = labels.iter().filter(|y| !y.is_nan()).count();
    let weights = if any_missing || sample_weights.is_some() {
        Some(
            labels
                .iter()
                .enumerate()
                .map(|(i, y)| {
                    if y.is_nan() {
                        0.0
                    } else {
                        sample_weights.map_or(1.0, |w| w[i])
                    }
                })
                .collect(),
        )
    } else {
        None
    };
    (clean, weights, labelled)
}

/// Checks that `batch` fits `schema` and a model's `outputs` count: one output and one label
/// vector per task, as many labels and sample weights as samples. Every model's loss starts
/// with it (see [`task_loss`]); a mismatch is an error, never a panic.
pub fn check_batch(schema: &Schema, batch: &Batch, outputs: usize) -> Result<()> {
    if outputs != schema.tasks.len() {
        candle_core::bail!(
            "model returned {outputs} outputs for {} tasks",
            schema.tasks.len()
        );
    }
    if batch.labels.len() != schema.tasks.len() {
        candle_core::bail!(
            "the batch has {} label vectors for {} tasks",
            batch.labels.len(),
            schema.tasks.len()
        );
    }
    let n = batch.len();
    if let Some(w) = &batch.weights {
        if w.len() != n {
            candle_core::bail!("the batch has {} sample weights for {n} samples", w.len());
        }
        // A negative weight can cancel the others (a weight sum of 0 divides by 0) and turns
        // a loss into a reward.
        if let Some(i) = w.iter().position(|x| !(x.is_finite() && *x >= 0.0)) {
            candle_core::bail!(
                "sample {i} has weight {}: weights must be finite and not negative",
                w[i]
            );
        }
    }
    for (task, labels) in schema.tasks.iter().zip(&batch.labels) {
        if labels.len() != n {
            candle_core::bail!(
                "task `{}` has {} labels for {n} samples",
                task.name,
                labels.len()
            );
        }
    }
    Ok(())
}

/// A task's labels (missing ones as 0) and per-sample weights (`None`: all 1), see
/// [`task_targets`].
pub type TaskTargets = (Vec<f32>, Option<Vec<f32>>);

/// The labels (missing ones as 0) and weights (missing labels weigh 0) of task `t` of a batch
/// that passed [`check_batch`], or `None` when the task contributes nothing to the loss: no
/// labelled sample, or all its labelled samples weigh 0 (a weighted mean would be 0 / 0). A
/// multi-class label that is not a class index, a binary label outside [0, 1] and an infinite
/// regression label are errors.
pub fn task_targets(schema: &Schema, batch: &Batch, t: usize) -> Result<Option<TaskTargets>> {
    let task = &schema.tasks[t];
    let (clean, weights, labelled) = label_weights(&batch.labels[t], batch.weights.as_deref());
    if labelled == 0
        || weights
            .as_ref()
            .is_some_and(|w| w.iter().all(|&x| x == 0.0))
    {
        return Ok(None);
    }
    // Binary labels are 0/1 (or probabilities): a label of -1 (the +-1 convention) has a
    // cross-entropy without a lower bound, and an infinite one gives NaN.
    let labels = &batch.labels[t];
    match task.kind {
        TaskKind::Binary => {
            if let Some(i) = labels
                .iter()
                .position(|y| !(y.is_nan() || (0.0..=1.0).contains(y)))
            {
                candle_core::bail!(
                    "task `{}`: the label at row {i} of the batch is {}, not in [0, 1] (binary \
                     labels are 0 or 1; NaN = no label)",
                    task.name,
                    labels[i]
                );
            }
        }
        TaskKind::Regression => {
            if let Some(i) = labels.iter().position(|y| y.is_infinite()) {
                candle_core::bail!(
                    "task `{}`: the label at row {i} of the batch is {}, not finite",
                    task.name,
                    labels[i]
                );
            }
        }
        TaskKind::Multiclass { .. } => {}
    }
    if let TaskKind::Multiclass { classes } = task.kind
        && let Some(bad) = batch.labels[t].iter().find(|&&y| {
            let class = y.fract() == 0.0 && y >= 0.0 && y < classes as f32;
            !(y.is_nan() || class)
        })
    {
        candle_core::bail!(
            "task `{}`: label {bad} is not a class index in 0..{classes}",
            task.name
        );
    }
    Ok(Some((clean, weights)))
}

/// Sum over the schema's tasks of each task's mean loss on its labelled samples: BCE for
/// binary tasks, squared error for regression, softmax cross-entropy for multi-class.
/// A task with no labelled sample in the batch (or whose labelled samples all weigh 0)
/// contributes nothing. A batch whose labels or weights do not fit the schema, or a
/// multi-class label that is not a class index, is an error.
pub fn task_loss(schema: &Schema, batch: &Batch, outputs: &[Tensor]) -> Result<Tensor> {
    check_batch(schema, batch, outputs.len())?;
    let device: &Device = outputs.first().map(|o| o.device()).unwrap_or(&Device::Cpu);
    let mut total = Tensor::zeros((), candle_core::DType::F32, device)?;
    for (t, (task, out)) in schema.tasks.iter().zip(outputs).enumerate() {
        let Some((clean, weights)) = task_targets(schema, batch, t)? else {
            continue;
        };
        let n = clean.len();
        let w = weights
            .map(|w| Tensor::from_vec(w, n, device))
            .transpose()?;
        let l = match task.kind {
            TaskKind::Binary => {
                let y = Tensor::from_vec(clean, n, device)?;
                bce_with_logits(out, &y, w.as_ref())?
            }
            TaskKind::Regression => {
                let y = Tensor::from_vec(clean, n, device)?;
                mse(out, &y, w.as_ref())?
            }
            TaskKind::Multiclass { .. } => {
                let y: Vec<u32> = clean.iter().map(|&c| c as u32).collect();
                let y = Tensor::from_vec(y, n, device)?;
                softmax_cross_entropy(out, &y, w.as_ref())?
            }
        };
        total = (total + l)?;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bce_is_finite_for_huge_logits_and_matches_reference() -> Result<()> {
        let d = Device::Cpu;
        let x = Tensor::new(&[1000f32, -1000.0, 0.5, -2.0], &d)?;
        let y = Tensor::new(&[0f32, 1.0, 1.0, 0.0], &d)?;
        let per = bce_with_logits_per_sample(&x, &y)?.to_vec1::<f32>()?;
        assert!((per[0] - 1000.0).abs() < 1e-3 && (per[1] - 1000.0).abs() < 1e-3);
        let r = |x: f32, y: f32| {
            -(y * (1.0 / (1.0 + (-x).exp())).ln()
                + (1.0 - y) * (1.0 - 1.0 / (1.0 + (-x).exp())).ln())
        };
        assert!((per[2] - r(0.5, 1.0)).abs() < 1e-6);
        assert!((per[3] - r(-2.0, 0.0)).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn softmax_ce_matches_reference() -> Result<()> {
        let d = Device::Cpu;
        let x = Tensor::new(&[[1f32, 2.0, 3.0], [0.0, 0.0, 10.0]], &d)?;
        let c = Tensor::new(&[0u32, 2], &d)?;
        let l = softmax_cross_entropy(&x, &c, None)?.to_scalar::<f32>()?;
        let a = -(1f32.exp() / (1f32.exp() + 2f32.exp() + 3f32.exp())).ln();
        let b = -(10f32.exp() / (2.0 + 10f32.exp())).ln();
        assert!((l - (a + b) / 2.0).abs() < 1e-5);
        Ok(())
    }

    #[test]
    fn nan_labels_are_left_out() {
        let (clean, w, n) = label_weights(&[1.0, f32::NAN, 0.0], None);
        assert_eq!(clean, vec![1.0, 0.0, 0.0]);
        assert_eq!(w, Some(vec![1.0, 0.0, 1.0]));
        assert_eq!(n, 2);
        let (_, w, _) = label_weights(&[1.0, 0.0], None);
        assert_eq!(w, None);
    }

    #[test]
    fn losses_pass_finite_difference_checks() -> Result<()> {
        use crate::gradcheck::{GradCheck, check_gradients, random_var};
        let d = Device::Cpu;
        let x = random_var(&[6], candle_core::DType::F64, 4.0, 1)?;
        let y = Tensor::new(&[0f64, 1.0, 1.0, 0.0, 1.0, 0.0], &d)?;
        let w = Tensor::new(&[0.5f64, 1.0, 2.0, 0.0, 1.0, 3.0], &d)?;
        let p = vec![("x".to_string(), x.clone())];
        let cfg = GradCheck::default();
        check_gradients(&p, || bce_with_logits(x.as_tensor(), &y, None), &cfg)?;
        check_gradients(&p, || bce_with_logits(x.as_tensor(), &y, Some(&w)), &cfg)?;
        check_gradients(&p, || mse(x.as_tensor(), &y, Some(&w)), &cfg)?;
        let z = random_var(&[4, 3], candle_core::DType::F64, 3.0, 2)?;
        let c = Tensor::new(&[2u32, 0, 1, 1], &d)?;
        let wz = Tensor::new(&[1f64, 0.0, 2.0, 0.5], &d)?;
        let p = vec![("z".to_string(), z.clone())];
        check_gradients(&p, || softmax_cross_entropy(z.as_tensor(), &c, None), &cfg)?;
        check_gradients(
            &p,
            || softmax_cross_entropy(z.as_tensor(), &c, Some(&wz)),
            &cfg,
        )?;
        Ok(())
    }

    #[test]
    fn task_loss_refuses_batches_that_do_not_fit_and_skips_weightless_tasks() -> Result<()> {
        use rec_data::{Column, FieldSpec, TaskSpec};
        let d = Device::Cpu;
        let schema = Schema {
            fields: vec![FieldSpec::categorical("u", 3)],
            tasks: vec![
                TaskSpec::new("click", TaskKind::Binary),
                TaskSpec::new("price", TaskKind::Multiclass { classes: 3 }),
            ],
            ..Default::default()
        };
        let batch = |labels: Vec<Vec<f32>>, weights: Option<Vec<f32>>| Batch {
            schema: std::sync::Arc::new(schema.clone()),
            columns: vec![Column::Ids(vec![1, 2])],
            labels,
            weights,
            slices: Vec::new(),
        };
        let outs = [
            Tensor::new(&[0.3f32, -0.2], &d)?,
            Tensor::new(&[[0.1f32, 0.2, 0.3], [0.0, 0.5, -0.5]], &d)?,
        ];
        let good = vec![vec![1.0, 0.0], vec![2.0, f32::NAN]];
        assert!(
            task_loss(&schema, &batch(good.clone(), None), &outs)?
                .to_scalar::<f32>()?
                .is_finite()
        );
        let err = |b: Batch| task_loss(&schema, &b, &outs).unwrap_err().to_string();
        assert!(err(batch(vec![vec![1.0, 0.0]], None)).contains("1 label vectors for 2 tasks"));
        assert!(err(batch(vec![vec![1.0], vec![0.0, 1.0]], None)).contains("`click` has 1 labels"));
        assert!(err(batch(good.clone(), Some(vec![1.0]))).contains("1 sample weights"));
        for bad in [2.5f32, -1.0, 3.0, f32::INFINITY] {
            let e = err(batch(vec![vec![1.0, 0.0], vec![bad, 1.0]], None));
            assert!(e.contains("not a class index"), "{bad}: {e}");
        }
        // Binary labels outside [0, 1], and negative or non-finite weights, are errors; a
        // soft label inside is not.
        for bad in [-1.0f32, 1.5, f32::INFINITY] {
            let e = err(batch(vec![vec![bad, 0.0], vec![2.0, 1.0]], None));
            assert!(
                e.contains("`click`: the label at row 0") && e.contains("[0, 1]"),
                "{bad}: {e}"
            );
        }
        let soft = batch(vec![vec![0.25, 0.0], vec![2.0, 1.0]], None);
        assert!(
            task_loss(&schema, &soft, &outs)?
                .to_scalar::<f32>()?
                .is_finite()
        );
        for bad in [-1.0f32, f32::NAN, f32::INFINITY] {
            let e = err(batch(good.clone(), Some(vec![1.0, bad])));
            assert!(e.contains("sample 1 has weight"), "{bad}: {e}");
        }
        // A task whose labelled samples all weigh 0 adds nothing (not 0/0).
        let w = batch(
            vec![vec![1.0, 0.0], vec![f32::NAN, 1.0]],
            Some(vec![1.0, 0.0]),
        );
        let with = task_loss(&schema, &w, &outs)?.to_scalar::<f32>()?;
        let click_only = bce_with_logits(
            &outs[0],
            &Tensor::new(&[1f32, 0.0], &d)?,
            Some(&Tensor::new(&[1f32, 0.0], &d)?),
        )?
        .to_scalar::<f32>()?;
        assert_eq!(with, click_only);
        Ok(())
    }

    #[test]
    fn bce_gradient_is_finite_for_huge_logits() -> Result<()> {
        let d = Device::Cpu;
        let x = candle_core::Var::from_slice(&[1000f32, -1000.0, 80.0], 3, &d)?;
        let y = Tensor::new(&[0f32, 1.0, 1.0], &d)?;
        let g = bce_with_logits(x.as_tensor(), &y, None)?.backward()?;
        let g = g.get(x.as_tensor()).unwrap().to_vec1::<f32>()?;
        // d/dx = (sigmoid(x) - y) / n.
        assert!((g[0] - 1.0 / 3.0).abs() < 1e-6 && (g[1] + 1.0 / 3.0).abs() < 1e-6);
        assert!(g[2].abs() < 1e-6);
        Ok(())
    }

    // ---- Properties against f64 references. ----

    use candle_core::DType;
    use proptest::prelude::*;

    /// `-(y ln s + (1 - y) ln(1 - s))` with `s = sigmoid(x)`, from `ln sigmoid(z)` written
    /// without overflow (a derivation independent of the implementation's form).
    fn reference_bce(x: f64, y: f64) -> f64 {
        let log_sigmoid = |z: f64| {
            if z >= 0.0 {
                -(-z).exp().ln_1p()
            } else {
                z - z.exp().ln_1p()
            }
        };
        -(y * log_sigmoid(x) + (1.0 - y) * log_sigmoid(-x))
    }

    /// `logsumexp(row) - row[class]` in f64.
    fn reference_ce(row: &[f64], class: usize) -> f64 {
        let m = row.iter().copied().fold(f64::NEG_INFINITY, f64::max);
        m + row.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - row[class]
    }

    fn weighted_mean_ref(per: &[f64], w: Option<&[f64]>) -> f64 {
        match w {
            None => per.iter().sum::<f64>() / per.len() as f64,
            Some(w) => per.iter().zip(w).map(|(l, w)| l * w).sum::<f64>() / w.iter().sum::<f64>(),
        }
    }

    fn logit() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => -1e3f64..1e3,
            3 => -5f64..5.0,
            1 => Just(1e3),
            1 => Just(-1e3),
            1 => Just(0.0),
        ]
    }

    fn label() -> impl Strategy<Value = f64> {
        prop_oneof![2 => Just(0.0), 2 => Just(1.0), 1 => 0.0f64..=1.0]
    }

    /// Weights with zeros; at least one is positive.
    fn weights(n: usize) -> impl Strategy<Value = Vec<f64>> {
        prop::collection::vec(prop_oneof![Just(0.0), 0.0f64..3.0], n).prop_map(|mut w| {
            if w.iter().all(|&x| x == 0.0) {
                w[0] = 1.0;
            }
            w
        })
    }

    fn vec64(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    fn scalar64(t: &Tensor) -> f64 {
        t.to_dtype(DType::F64).unwrap().to_scalar::<f64>().unwrap()
    }

    /// The f32 rounding of `v`, back in f64.
    fn round32(v: &[f64]) -> Vec<f64> {
        v.iter().map(|&x| x as f32 as f64).collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Per-sample BCE, its mean and weighted mean equal the reference over logits in
        /// ±1e3 (hard and soft labels), in f64 and in f32; every value is finite and >= 0.
        #[test]
        fn bce_matches_reference(
            (x, y, w) in (1usize..12).prop_flat_map(|n| (
                prop::collection::vec(logit(), n),
                prop::collection::vec(label(), n),
                weights(n),
            )),
        ) {
            let d = Device::Cpu;
            let n = x.len();
            let tol = |x: f64, rel: f64| rel * (1.0 + x.abs());
            for dtype in [DType::F64, DType::F32] {
                let rel = if dtype == DType::F64 { 1e-13 } else { 2e-6 };
                let (xr, yr, wr) = if dtype == DType::F64 {
                    (x.clone(), y.clone(), w.clone())
                } else {
                    (round32(&x), round32(&y), round32(&w))
                };
                let xt = Tensor::from_vec(x.clone(), n, &d).unwrap().to_dtype(dtype).unwrap();
                let yt = Tensor::from_vec(y.clone(), n, &d).unwrap().to_dtype(dtype).unwrap();
                let wt = Tensor::from_vec(w.clone(), n, &d).unwrap().to_dtype(dtype).unwrap();
                let per = vec64(&bce_with_logits_per_sample(&xt, &yt).unwrap());
                let want: Vec<f64> = xr.iter().zip(&yr).map(|(&x, &y)| reference_bce(x, y)).collect();
                for i in 0..n {
                    prop_assert!(per[i].is_finite() && per[i] >= 0.0, "{:?}: bce({}, {}) = {}", dtype, xr[i], yr[i], per[i]);
                    prop_assert!((per[i] - want[i]).abs() <= tol(xr[i], rel),
                        "{:?}: bce({}, {}) = {}, reference {}", dtype, xr[i], yr[i], per[i], want[i]);
                }
                let big = xr.iter().fold(0.0f64, |m, x| m.max(x.abs()));
                let mean = scalar64(&bce_with_logits(&xt, &yt, None).unwrap());
                let mean_ref = weighted_mean_ref(&want, None);
                prop_assert!(mean >= 0.0 && (mean - mean_ref).abs() <= tol(big, rel), "{:?}: mean {} vs {}", dtype, mean, mean_ref);
                let wm = scalar64(&bce_with_logits(&xt, &yt, Some(&wt)).unwrap());
                let wm_ref = weighted_mean_ref(&want, Some(&wr));
                prop_assert!(wm >= 0.0 && (wm - wm_ref).abs() <= tol(big, rel), "{:?}: weighted {} vs {}", dtype, wm, wm_ref);
            }
        }

        /// Softmax cross-entropy (mean and weighted mean) equals logsumexp minus the picked
        /// logit over logits in ±1e3, in f64 and f32; finite and >= 0.
        #[test]
        fn softmax_cross_entropy_matches_reference(
            (k, x, c, w) in (1usize..6, 1usize..8).prop_flat_map(|(k, n)| (
                Just(k),
                prop::collection::vec(logit(), n * k),
                prop::collection::vec(0u32..k as u32, n),
                weights(n),
            )),
        ) {
            let d = Device::Cpu;
            let n = c.len();
            let ct = Tensor::from_vec(c.clone(), n, &d).unwrap();
            for dtype in [DType::F64, DType::F32] {
                let (xr, wr) = if dtype == DType::F64 { (x.clone(), w.clone()) } else { (round32(&x), round32(&w)) };
                let xt = Tensor::from_vec(x.clone(), (n, k), &d).unwrap().to_dtype(dtype).unwrap();
                let wt = Tensor::from_vec(w.clone(), n, &d).unwrap().to_dtype(dtype).unwrap();
                let per: Vec<f64> = (0..n).map(|i| reference_ce(&xr[i * k..(i + 1) * k], c[i] as usize)).collect();
                // Shifting by the row maximum costs up to an ulp of 2e3 in f32.
                let tol = |v: f64| if dtype == DType::F64 { 1e-12 * (1.0 + v.abs()) } else { 3e-4 + 1e-6 * v.abs() };
                // One sample at a time: the per-sample values.
                for i in 0..n {
                    let l = scalar64(&softmax_cross_entropy(&xt.narrow(0, i, 1).unwrap(), &ct.narrow(0, i, 1).unwrap(), None).unwrap());
                    prop_assert!(l.is_finite() && l >= 0.0, "{:?}: {} for {:?}", dtype, l, &xr[i * k..(i + 1) * k]);
                    prop_assert!((l - per[i]).abs() <= tol(per[i]), "{:?}: {} vs {} for {:?} class {}", dtype, l, per[i], &xr[i * k..(i + 1) * k], c[i]);
                }
                let mean = scalar64(&softmax_cross_entropy(&xt, &ct, None).unwrap());
                let mean_ref = weighted_mean_ref(&per, None);
                prop_assert!(mean >= 0.0 && (mean - mean_ref).abs() <= tol(mean_ref), "{:?}: mean {} vs {}", dtype, mean, mean_ref);
                let wm = scalar64(&softmax_cross_entropy(&xt, &ct, Some(&wt)).unwrap());
                let wm_ref = weighted_mean_ref(&per, Some(&wr));
                prop_assert!(wm >= 0.0 && (wm - wm_ref).abs() <= tol(wm_ref), "{:?}: weighted {} vs {}", dtype, wm, wm_ref);
            }
        }

        /// Unweighted and weighted MSE equal the f64 reference (f64 inputs).
        #[test]
        fn mse_matches_reference(
            (p, t, w) in (1usize..12).prop_flat_map(|n| (
                prop::collection::vec(logit(), n),
                prop::collection::vec(logit(), n),
                weights(n),
            )),
        ) {
            let d = Device::Cpu;
            let n = p.len();
            let pt = Tensor::from_vec(p.clone(), n, &d).unwrap();
            let tt = Tensor::from_vec(t.clone(), n, &d).unwrap();
            let wt = Tensor::from_vec(w.clone(), n, &d).unwrap();
            let per: Vec<f64> = p.iter().zip(&t).map(|(a, b)| (a - b) * (a - b)).collect();
            for (got, want) in [
                (scalar64(&mse(&pt, &tt, None).unwrap()), weighted_mean_ref(&per, None)),
                (scalar64(&mse(&pt, &tt, Some(&wt)).unwrap()), weighted_mean_ref(&per, Some(&w))),
            ] {
                prop_assert!(got >= 0.0 && (got - want).abs() <= 1e-12 * (1.0 + want), "{} vs {}", got, want);
            }
        }

        /// `task_loss` over a binary, a regression and a 3-class task with NaN labels and
        /// zero sample weights equals the sum over tasks of the weighted mean over labelled
        /// samples (tasks with no labelled weight skipped), and the outputs of samples that do
        /// not count (NaN label, or weight 0) can be anything: the loss keeps its bits.
        #[test]
        fn task_loss_leaves_out_unlabelled_and_weightless_samples(
            rows in prop::collection::vec((
                prop_oneof![Just(f32::NAN), Just(0.0f32), Just(1.0)],
                prop_oneof![Just(f32::NAN), -5.0f32..5.0],
                prop_oneof![Just(f32::NAN), Just(0.0f32), Just(1.0), Just(2.0)],
                prop_oneof![Just(0.0f32), 0.25f32..2.0],
                (-1e3f32..1e3, -10f32..10.0, prop::collection::vec(-1e3f32..1e3, 3)),
                (-1e3f32..1e3, -10f32..10.0, prop::collection::vec(-1e3f32..1e3, 3)),
            ), 1..10),
            weighted: bool,
        ) {
            use rec_data::{Column, FieldSpec, TaskSpec};
            let d = Device::Cpu;
            let n = rows.len();
            let schema = std::sync::Arc::new(Schema {
                fields: vec![FieldSpec::categorical("u", 3)],
                tasks: vec![
                    TaskSpec::new("click", TaskKind::Binary),
                    TaskSpec::new("price", TaskKind::Regression),
                    TaskSpec::new("grade", TaskKind::Multiclass { classes: 3 }),
                ],
                ..Default::default()
            });
            let labels: Vec<Vec<f32>> = vec![
                rows.iter().map(|r| r.0).collect(),
                rows.iter().map(|r| r.1).collect(),
                rows.iter().map(|r| r.2).collect(),
            ];
            let sw: Option<Vec<f32>> = weighted.then(|| rows.iter().map(|r| r.3).collect());
            let batch = Batch {
                schema: schema.clone(),
                columns: vec![Column::Ids(vec![1; n])],
                labels: labels.clone(),
                weights: sw.clone(),
                slices: Vec::new(),
            };
            let outputs = |pick_other: &dyn Fn(usize, usize) -> bool| -> Vec<Tensor> {
                let o = |t: usize, i: usize| if pick_other(t, i) { &rows[i].5 } else { &rows[i].4 };
                vec![
                    Tensor::from_vec((0..n).map(|i| o(0, i).0).collect::<Vec<_>>(), n, &d).unwrap(),
                    Tensor::from_vec((0..n).map(|i| o(1, i).1).collect::<Vec<_>>(), n, &d).unwrap(),
                    Tensor::from_vec((0..n).flat_map(|i| o(2, i).2.clone()).collect::<Vec<_>>(), (n, 3), &d).unwrap(),
                ]
            };
            // Weight of sample i in task t.
            let weight = |t: usize, i: usize| -> f64 {
                if labels[t][i].is_nan() { 0.0 } else { sw.as_ref().map_or(1.0, |w| w[i] as f64) }
            };
            let mut want = 0.0;
            for (t, task_labels) in labels.iter().enumerate() {
                let total: f64 = (0..n).map(|i| weight(t, i)).sum();
                if total == 0.0 {
                    continue;
                }
                let mut acc = 0.0;
                for (i, (&y, row)) in task_labels.iter().zip(&rows).enumerate() {
                    let w = weight(t, i);
                    if w == 0.0 {
                        continue;
                    }
                    let y = y as f64;
                    let (x, p, logits) = &row.4;
                    let l = match t {
                        0 => reference_bce(*x as f64, y),
                        1 => (*p as f64 - y).powi(2),
                        _ => {
                            let logits: Vec<f64> = logits.iter().map(|&v| v as f64).collect();
                            reference_ce(&logits, y as usize)
                        }
                    };
                    acc += w * l;
                }
                want += acc / total;
            }
            let got = task_loss(&schema, &batch, &outputs(&|_, _| false)).unwrap().to_scalar::<f32>().unwrap();
            prop_assert!(got.is_finite() && got >= 0.0);
            prop_assert!((got as f64 - want).abs() <= 1e-3 + 1e-5 * want, "{} vs {}", got, want);
            let other = task_loss(&schema, &batch, &outputs(&|t, i| weight(t, i) == 0.0)).unwrap().to_scalar::<f32>().unwrap();
            prop_assert_eq!(got.to_bits(), other.to_bits(), "{} vs {}", got, other);
        }
    }
}
