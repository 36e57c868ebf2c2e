//! Regression: MSE, RMSE and MAE, as functions and as a mergeable accumulator.
//!
//! Predictions and targets must be finite (NaN and ±inf are errors). Errors are computed in
//! `f64` and summed exactly, so the results do not depend on sample order or chunking.

use crate::error::{MetricError, Result, check_len, finite};
use crate::exact::ExactSum;

/// Mean squared error `mean((pred - target)^2)`.
///
/// ```
/// # use rec_metrics::mse;
/// assert_eq!(mse(&[1.0, 2.0], &[0.0, 4.0]).unwrap(), 2.5);
/// ```
pub fn mse(preds: &[f32], targets: &[f32]) -> Result<f64> {
    regression_metrics(preds, targets).map(|m| m.mse)
}

/// Root mean squared error `sqrt(mse)`.
pub fn rmse(preds: &[f32], targets: &[f32]) -> Result<f64> {
    regression_metrics(preds, targets).map(|m| m.rmse)
}

/// Mean absolute error `mean(|pred - target|)`.
///
/// ```
/// # use rec_metrics::mae;
/// assert_eq!(mae(&[1.0, 2.0], &[0.0, 4.0]).unwrap(), 1.5);
/// ```
pub fn mae(preds: &[f32], targets: &[f32]) -> Result<f64> {
    regression_metrics(preds, targets).map(|m| m.mae)
}

/// MSE, RMSE and MAE in one pass.
pub fn regression_metrics(preds: &[f32], targets: &[f32]) -> Result<RegressionMetrics> {
    let mut acc = RegressionAccumulator::new();
    acc.push(preds, targets)?;
    acc.finish()
}

/// The three regression metrics and the sample count.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RegressionMetrics {
    /// Number of samples.
    pub count: u64,
    /// Mean squared error.
    pub mse: f64,
    /// Root mean squared error.
    pub rmse: f64,
    /// Mean absolute error.
    pub mae: f64,
}

/// Streaming MSE/RMSE/MAE.
#[derive(Debug, Clone, Default)]
pub struct RegressionAccumulator {
    squared: ExactSum,
    absolute: ExactSum,
    n: u64,
}

impl RegressionAccumulator {
    /// An empty accumulator.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a chunk. On error nothing of the chunk is kept.
    pub fn push(&mut self, preds: &[f32], targets: &[f32]) -> Result<()> {
        check_len("preds", preds.len(), "targets", targets.len())?;
        for (i, (&p, &t)) in preds.iter().zip(targets).enumerate() {
            finite("preds", i, p)?;
            finite("targets", i, t)?;
        }
        for (&p, &t) in preds.iter().zip(targets) {
            let d = p as f64 - t as f64;
            self.squared.add(d * d);
            self.absolute.add(d.abs());
        }
        self.n += preds.len() as u64;
        Ok(())
    }

    /// Adds everything `other` holds.
    pub fn merge(&mut self, other: RegressionAccumulator) {
        self.squared.merge(&other.squared);
        self.absolute.merge(&other.absolute);
        self.n += other.n;
    }

    /// Number of samples pushed.
    pub fn count(&self) -> u64 {
        self.n
    }

    /// The metrics of everything pushed so far.
    pub fn finish(&self) -> Result<RegressionMetrics> {
        if self.n == 0 {
            return Err(MetricError::Empty {
                metric: "regression metrics",
            });
        }
        let n = self.n as f64;
        let mse = self.squared.value() / n;
        Ok(RegressionMetrics {
            count: self.n,
            mse,
            rmse: mse.sqrt(),
            mae: self.absolute.value() / n,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hand_cases() {
        let m = regression_metrics(&[3.0, -0.5, 2.0, 7.0], &[2.5, 0.0, 2.0, 8.0]).unwrap();
        // scikit-learn's documentation example: MSE 0.375, MAE 0.5.
        assert_eq!(m.mse, 0.375);
        assert_eq!(m.mae, 0.5);
        assert_eq!(m.rmse, 0.375f64.sqrt());
        assert_eq!(m.count, 4);
        assert_eq!(rmse(&[1.0], &[4.0]).unwrap(), 3.0);
    }

    #[test]
    fn errors() {
        assert!(matches!(mse(&[], &[]), Err(MetricError::Empty { .. })));
        assert!(matches!(
            mse(&[1.0, f32::NAN], &[1.0, 1.0]),
            Err(MetricError::NaN {
                what: "preds",
                index: 1
            })
        ));
        assert!(matches!(
            mae(&[1.0], &[f32::INFINITY]),
            Err(MetricError::OutOfRange {
                what: "targets",
                index: 0,
                ..
            })
        ));
        assert!(matches!(
            rmse(&[1.0], &[1.0, 2.0]),
            Err(MetricError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn extreme_values_stay_finite() {
        let m = regression_metrics(&[f32::MAX, -f32::MAX], &[-f32::MAX, f32::MAX]).unwrap();
        let d = 2.0 * f32::MAX as f64;
        assert_eq!(m.mse, d * d);
        assert_eq!(m.mae, d);
    }
}
