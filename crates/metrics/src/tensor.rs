//! Candle `Tensor` inputs (default `candle` feature): thin wrappers that copy the tensor to host
//! memory and call the slice functions.
//!
//! Any shape is flattened in row-major order, except where a matrix is required (multi-class
//! scores, ranking lists). Float tensors of any dtype are converted to `f32`; integer tensors
//! (labels, groups) may have any dtype and must hold non-negative whole numbers.
//!
//! ```
//! # use candle_core::{Device, Tensor};
//! # use rec_metrics::tensor::auc_tensor;
//! let dev = Device::Cpu;
//! let scores = Tensor::new(&[[0.8f32], [0.4], [0.4], [0.1]], &dev).unwrap(); // [n, 1] logits
//! let labels = Tensor::new(&[1f32, 1.0, 0.0, 0.0], &dev).unwrap();
//! assert_eq!(auc_tensor(&scores, &labels).unwrap(), 3.5 / 4.0);
//! ```

use candle_core::{DType, Tensor};

use crate::error::{MetricError, Result};
use crate::multiclass::ConfusionMatrix;
use crate::ranking::{Queries, RankingMetrics};

/// The tensor's values, flattened, as `f32` on the host.
pub fn to_f32_vec(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(DType::F32)?.to_vec1::<f32>()?)
}

/// The tensor's values, flattened, as `u32` ids; `what` names the input in errors.
fn to_u32_vec(t: &Tensor, what: &'static str) -> Result<Vec<u32>> {
    let v = t.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?;
    v.iter()
        .enumerate()
        .map(|(index, &x)| {
            if x.is_nan() {
                Err(MetricError::NaN { what, index })
            } else if x >= 0.0 && x <= u32::MAX as f64 && x.fract() == 0.0 {
                Ok(x as u32)
            } else {
                Err(MetricError::OutOfRange {
                    what,
                    index,
                    value: x,
                    expected: "a whole number in 0..=u32::MAX",
                })
            }
        })
        .collect()
}

/// [`auc`](crate::auc) of a score tensor and a 0/1 label tensor with the same number of elements.
pub fn auc_tensor(scores: &Tensor, labels: &Tensor) -> Result<f64> {
    crate::auc(&to_f32_vec(scores)?, &to_f32_vec(labels)?)
}

/// [`gauc`](crate::gauc) with a group-id tensor (e.g. user ids, any integer dtype).
pub fn gauc_tensor(scores: &Tensor, labels: &Tensor, groups: &Tensor) -> Result<f64> {
    crate::gauc(
        &to_f32_vec(scores)?,
        &to_f32_vec(labels)?,
        &to_u32_vec(groups, "groups")?,
    )
}

/// [`logloss`](crate::logloss) of a probability tensor (apply the sigmoid first).
pub fn logloss_tensor(probs: &Tensor, labels: &Tensor) -> Result<f64> {
    crate::logloss(&to_f32_vec(probs)?, &to_f32_vec(labels)?)
}

/// [`mse`](crate::mse) of two tensors.
pub fn mse_tensor(preds: &Tensor, targets: &Tensor) -> Result<f64> {
    crate::mse(&to_f32_vec(preds)?, &to_f32_vec(targets)?)
}

/// [`rmse`](crate::rmse) of two tensors.
pub fn rmse_tensor(preds: &Tensor, targets: &Tensor) -> Result<f64> {
    crate::rmse(&to_f32_vec(preds)?, &to_f32_vec(targets)?)
}

/// [`mae`](crate::mae) of two tensors.
pub fn mae_tensor(preds: &Tensor, targets: &Tensor) -> Result<f64> {
    crate::mae(&to_f32_vec(preds)?, &to_f32_vec(targets)?)
}

/// The confusion matrix of a `[n, classes]` score tensor and `n` class labels.
pub fn confusion_tensor(scores: &Tensor, labels: &Tensor) -> Result<ConfusionMatrix> {
    let (_, classes) = scores.dims2()?;
    let mut m = ConfusionMatrix::new(classes)?;
    m.push(&to_f32_vec(scores)?, &to_u32_vec(labels, "labels")?)?;
    Ok(m)
}

/// [`accuracy`](crate::accuracy) of a `[n, classes]` score tensor.
pub fn accuracy_tensor(scores: &Tensor, labels: &Tensor) -> Result<f64> {
    confusion_tensor(scores, labels)?.accuracy()
}

/// [`macro_precision`](crate::macro_precision) of a `[n, classes]` score tensor.
pub fn macro_precision_tensor(scores: &Tensor, labels: &Tensor) -> Result<f64> {
    confusion_tensor(scores, labels)?.macro_precision()
}

/// [`macro_recall`](crate::macro_recall) of a `[n, classes]` score tensor.
pub fn macro_recall_tensor(scores: &Tensor, labels: &Tensor) -> Result<f64> {
    confusion_tensor(scores, labels)?.macro_recall()
}

/// Ranking metrics at cut-off `k` of `[queries, candidates]` scores and relevance (a value
/// greater than 0.5 is relevant, any dtype; NaN is an error). See [`ranking`](crate::ranking).
pub fn ranking_tensor(scores: &Tensor, relevant: &Tensor, k: usize) -> Result<RankingMetrics> {
    let (_, candidates) = scores.dims2()?;
    if relevant.dims() != scores.dims() {
        return Err(MetricError::InvalidArgument(format!(
            "relevance has shape {:?}, the scores {:?}: they must be the same [queries, candidates]",
            relevant.dims(),
            scores.dims()
        )));
    }
    let rel = to_f32_vec(relevant)?;
    if let Some(index) = rel.iter().position(|r| r.is_nan()) {
        return Err(MetricError::NaN {
            what: "relevance",
            index,
        });
    }
    let rel: Vec<bool> = rel.iter().map(|&r| r > 0.5).collect();
    let s = to_f32_vec(scores)?;
    Queries::fixed(&s, &rel, candidates)?.metrics(k)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    #[test]
    fn wrappers_match_slice_functions() -> Result<()> {
        let dev = Device::Cpu;
        let s = [0.9f32, 0.2, 0.6, 0.4, 0.6, 0.1];
        let y = [1f32, 0.0, 1.0, 0.0, 0.0, 1.0];
        let g = [3u32, 3, 5, 5, 5, 5];
        let st = Tensor::new(&s, &dev)?.to_dtype(DType::F64)?;
        let yt = Tensor::new(&y, &dev)?;
        let gt = Tensor::new(&g, &dev)?.to_dtype(DType::I64)?;
        assert_eq!(auc_tensor(&st, &yt)?, crate::auc(&s, &y)?);
        assert_eq!(gauc_tensor(&st, &yt, &gt)?, crate::gauc(&s, &y, &g)?);
        assert_eq!(logloss_tensor(&st, &yt)?, crate::logloss(&s, &y)?);
        assert_eq!(mse_tensor(&st, &yt)?, crate::mse(&s, &y)?);
        assert_eq!(rmse_tensor(&st, &yt)?, crate::rmse(&s, &y)?);
        assert_eq!(mae_tensor(&st, &yt)?, crate::mae(&s, &y)?);

        let m = Tensor::new(&s, &dev)?.reshape((3, 2))?;
        let labels = Tensor::new(&[0u32, 1, 1], &dev)?;
        // Rows (0.9, 0.2), (0.6, 0.4), (0.6, 0.1) all predict class 0; labels 0, 1, 1.
        assert_eq!(accuracy_tensor(&m, &labels)?, 1.0 / 3.0);
        assert_eq!(
            macro_precision_tensor(&m, &labels)?,
            crate::macro_precision(&s, 2, &[0u32, 1, 1])?
        );
        assert_eq!(
            macro_recall_tensor(&m, &labels)?,
            crate::macro_recall(&s, 2, &[0u32, 1, 1])?
        );

        let rel = Tensor::new(&[[1u8, 0, 0], [0, 1, 0]], &dev)?;
        let r = ranking_tensor(&m.reshape((2, 3))?, &rel, 1)?;
        let flags = [true, false, false, false, true, false];
        assert_eq!(r, Queries::fixed(&s, &flags, 3)?.metrics(1)?);
        Ok(())
    }

    #[test]
    fn bad_tensors_are_errors() -> Result<()> {
        let dev = Device::Cpu;
        let flat = Tensor::new(&[0.1f32, 0.9], &dev)?;
        assert!(matches!(
            accuracy_tensor(&flat, &Tensor::new(&[0u32], &dev)?),
            Err(MetricError::Tensor(_))
        ));
        let neg = Tensor::new(&[-1i64, 0], &dev)?;
        assert!(matches!(
            gauc_tensor(&flat, &flat, &neg),
            Err(MetricError::OutOfRange { what: "groups", .. })
        ));
        let scores = Tensor::new(&[[0.1f32, 0.9]], &dev)?;
        let rel = Tensor::new(&[[1.0f32, f32::NAN]], &dev)?;
        assert!(matches!(
            ranking_tensor(&scores, &rel, 1),
            Err(MetricError::NaN {
                what: "relevance",
                index: 1
            })
        ));
        Ok(())
    }

    #[test]
    fn ranking_refuses_relevance_of_another_shape() {
        let d = Device::Cpu;
        let scores = Tensor::new(&[[0.9f32, 0.1, 0.5], [0.2, 0.8, 0.4]], &d).unwrap();
        let rel = Tensor::new(&[[1f32, 0.0, 0.0], [0.0, 1.0, 0.0]], &d).unwrap();
        assert!(ranking_tensor(&scores, &rel, 2).is_ok());
        // Transposed: as many elements, but not the same queries and candidates.
        let e = ranking_tensor(&scores, &rel.t().unwrap(), 2).unwrap_err();
        assert!(e.to_string().contains("shape"), "{e}");
    }
}
