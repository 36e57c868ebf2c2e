//! The error type shared by every metric.

use thiserror::Error;

/// Why a metric could not be computed.
///
/// Two kinds of failure are distinguished (see [`MetricError::is_undefined`]):
/// - **bad input** (length mismatch, NaN, a value out of range, an invalid argument): the caller
///   made a mistake; [`Report`](crate::Report) fails as a whole;
/// - **undefined metric** ([`Empty`](MetricError::Empty), [`OneClass`](MetricError::OneClass)):
///   the input is valid but the metric has no value on it; [`Report`](crate::Report) then
///   leaves that metric out of the slice instead of failing.
///
/// Indices in errors are positions inside the slice that was passed to the failing call.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum MetricError {
    /// No sample (or no query) to compute `metric` on.
    #[error("{metric} is undefined on empty input")]
    Empty {
        /// The metric that was asked for.
        metric: &'static str,
    },
    /// Two inputs that must be aligned have different lengths.
    #[error("length mismatch: {left} has {left_len} values but {right} has {right_len}")]
    LengthMismatch {
        /// Name of the first input.
        left: &'static str,
        /// Its length.
        left_len: usize,
        /// Name of the second input.
        right: &'static str,
        /// Its length.
        right_len: usize,
    },
    /// A NaN where a number is required.
    #[error("{what}[{index}] is NaN")]
    NaN {
        /// Name of the input.
        what: &'static str,
        /// Position of the NaN in that input.
        index: usize,
    },
    /// A value outside the range the metric accepts (an infinite regression target, a label
    /// outside [0, 1], a probability outside [0, 1], a class id that is not an integer...).
    #[error("{what}[{index}] = {value} is out of range: expected {expected}")]
    OutOfRange {
        /// Name of the input.
        what: &'static str,
        /// Position of the value in that input.
        index: usize,
        /// The offending value.
        value: f64,
        /// What was expected instead.
        expected: &'static str,
    },
    /// AUC needs at least one positive and one negative; for GAUC, at least one group that has
    /// both.
    #[error(
        "{metric} is undefined with only one class: {positives} positives, {negatives} negatives"
    )]
    OneClass {
        /// `"auc"` or `"gauc"`.
        metric: &'static str,
        /// Number of positive samples seen (for GAUC: in all groups together).
        positives: u64,
        /// Number of negative samples seen (for GAUC: in all groups together).
        negatives: u64,
    },
    /// A ranking query without any relevant candidate: HR, NDCG, MRR and recall are undefined
    /// for it. Filter such queries out before evaluation.
    #[error("query {query} has no relevant candidate")]
    NoRelevant {
        /// Position of the query.
        query: usize,
    },
    /// An argument that does not make sense (k = 0, zero classes, bad offsets, a repeated slice
    /// name...).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// Converting a candle tensor failed (wrong dtype, shape or device).
    #[cfg(feature = "candle")]
    #[error("tensor conversion failed: {0}")]
    Tensor(#[from] candle_core::Error),
}

impl MetricError {
    /// True when the input was valid but the metric has no value on it (empty input, or only
    /// one class for AUC/GAUC). [`Report`](crate::Report) skips such metrics on a slice.
    pub fn is_undefined(&self) -> bool {
        matches!(self, Self::Empty { .. } | Self::OneClass { .. })
    }
}

/// Shorthand for `Result<T, MetricError>`.
pub type Result<T, E = MetricError> = std::result::Result<T, E>;

pub(crate) fn check_len(
    left: &'static str,
    left_len: usize,
    right: &'static str,
    right_len: usize,
) -> Result<()> {
    if left_len == right_len {
        Ok(())
    } else {
        Err(MetricError::LengthMismatch {
            left,
            left_len,
            right,
            right_len,
        })
    }
}

/// Checks a binary label: NaN is an error, anything outside [0, 1] too; returns whether it is
/// positive (> 0.5).
#[inline]
pub(crate) fn binary_label(what: &'static str, index: usize, y: f32) -> Result<bool> {
    if y.is_nan() {
        return Err(MetricError::NaN { what, index });
    }
    if !(0.0..=1.0).contains(&y) {
        return Err(MetricError::OutOfRange {
            what,
            index,
            value: y as f64,
            expected: "a label in [0, 1]",
        });
    }
    Ok(y > 0.5)
}

/// Checks a value that must be finite (NaN gets its own error).
#[inline]
pub(crate) fn finite(what: &'static str, index: usize, x: f32) -> Result<f64> {
    if x.is_finite() {
        Ok(x as f64)
    } else if x.is_nan() {
        Err(MetricError::NaN { what, index })
    } else {
        Err(MetricError::OutOfRange {
            what,
            index,
            value: x as f64,
            expected: "a finite number",
        })
    }
}
