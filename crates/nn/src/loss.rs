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
    if let Some(w) = &batch.weights
        && w.len() != n
    {
        candle_core::bail!("the batch has {} sample weights for {n} samples", w.len());
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
/// multi-class label that is not a class index is an error.
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
}
