//! Exact, fast evaluation metrics for recommender models.
//!
//! The core works on plain slices (`&[f32]` scores, `&[f32]` labels) and needs no tensor
//! library; with the default `candle` feature, [`tensor`] takes candle `Tensor`s too.
//!
//! | task | functions | streaming accumulator |
//! |---|---|---|
//! | binary | [`auc`], [`gauc`], [`logloss`] | [`AucAccumulator`], [`GaucAccumulator`], [`LogLossAccumulator`] |
//! | regression | [`mse`], [`rmse`], [`mae`], [`regression_metrics`] | [`RegressionAccumulator`] |
//! | multi-class | [`accuracy`], [`macro_precision`], [`macro_recall`] | [`ConfusionMatrix`] |
//! | ranking | [`ranking::hr_at_k`], [`ranking::ndcg_at_k`], [`ranking::mrr`], [`ranking::recall_at_k`] | [`ranking::RankingAccumulator`] |
//!
//! [`Report`] evaluates a task's standard metric set on all samples and on named slices (cold
//! users, scenarios, tasks...), serializes to JSON and prints as a table.
//!
//! # Conventions
//! - **Exact.** AUC counts tied scores as half a pair, with an exact integer pair count; ranking
//!   metrics resolve ties in expectation (the average over all orderings of tied candidates).
//!   Sums are exact (rounded once), so accumulators give bit-identical results however the data
//!   is chunked or merged.
//! - **Binary labels** are `f32` in [0, 1]; **label > 0.5 is positive**. Log loss uses the label
//!   value itself (soft labels allowed).
//! - **Errors, not NaN** ([`MetricError`]): empty input, NaN anywhere, length mismatch, labels
//!   or probabilities out of range are errors. AUC with one class only is an error
//!   ([`MetricError::OneClass`]); [`MetricError::is_undefined`] tells "undefined here" from
//!   "bad input", and [`Report`] leaves undefined metrics out of a slice.
//! - **Fast.** AUC radix-sorts the float bit patterns: 10 million scores take well under a second
//!   on one core (see the project's docs/benchmarks.md).
//!
//! # Example
//! ```
//! use rec_metrics::{auc, gauc, AucAccumulator, Report};
//!
//! let probs = [0.9, 0.3, 0.6, 0.6, 0.2, 0.8];
//! let labels = [1.0, 0.0, 1.0, 0.0, 0.0, 1.0];
//! let users = [1, 1, 2, 2, 2, 3];
//!
//! // 9 (positive, negative) pairs: 8 ordered correctly, one tie (0.6 vs 0.6).
//! assert_eq!(auc(&probs, &labels)?, 8.5 / 9.0);
//! // Users 1 (2 samples, AUC 1) and 2 (3 samples, AUC 0.75); user 3 has one class.
//! assert_eq!(gauc(&probs, &labels, &users)?, (2.0 * 1.0 + 3.0 * 0.75) / 5.0);
//!
//! // The same AUC from two chunks.
//! let mut acc = AucAccumulator::new();
//! acc.push(&probs[..4], &labels[..4])?;
//! acc.push(&probs[4..], &labels[4..])?;
//! assert_eq!(acc.finish()?, 8.5 / 9.0);
//!
//! // A sliced report.
//! let new_user = [false, false, false, false, false, true];
//! let report = Report::binary(&probs, &labels, Some(&users), &[("new_users", &new_user)])?;
//! assert_eq!(report.get("all", "auc"), Some(8.5 / 9.0));
//! assert_eq!(report.get("new_users", "auc"), None); // one class: left out
//! println!("{report}");
//! # Ok::<(), rec_metrics::MetricError>(())
//! ```
#![warn(missing_docs)]

pub mod binary;
mod error;
mod exact;
pub mod multiclass;
pub mod ranking;
pub mod regression;
pub mod report;
#[cfg(feature = "candle")]
pub mod tensor;

pub use binary::{
    AucAccumulator, GaucAccumulator, GaucSummary, LOGLOSS_EPS, LogLossAccumulator, auc, gauc,
    logloss,
};
pub use error::{MetricError, Result};
pub use multiclass::{
    ClassLabel, ConfusionMatrix, MAX_CLASSES, accuracy, macro_precision, macro_recall,
};
pub use ranking::{
    Queries, RankingAccumulator, RankingMetrics, hr_at_k, mrr, ndcg_at_k, recall_at_k,
};
pub use regression::{
    RegressionAccumulator, RegressionMetrics, mae, mse, regression_metrics, rmse,
};
pub use report::{ALL, Report, SliceReport, Slices};
