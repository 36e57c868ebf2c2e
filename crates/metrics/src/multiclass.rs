//! Multi-class classification: accuracy and macro precision/recall from a score matrix.
//!
//! Scores come as a row-major `[n, classes]` matrix (probabilities, logits: any monotone score
//! works); the predicted class of a row is its arg-max, **the lowest class index winning ties**.
//! A NaN score is an error. Labels are class ids in `0..classes`, as any [`ClassLabel`] type
//! (`u32`, `usize`, `i64`, or floats holding whole numbers, as rec-data stores them).

use crate::error::{MetricError, Result, check_len};

/// A type usable as a class label.
pub trait ClassLabel: Copy {
    /// The class id, or `None` when the value is not a non-negative whole number.
    fn class_id(self) -> Option<usize>;
    /// The value as f64, for error messages.
    fn as_f64(self) -> f64;
}

macro_rules! int_label {
    ($($t:ty),*) => {$(
        impl ClassLabel for $t {
            #[inline]
            fn class_id(self) -> Option<usize> {
                usize::try_from(self).ok()
            }
            fn as_f64(self) -> f64 {
                self as f64
            }
        }
    )*};
}
int_label!(u8, u16, u32, u64, usize, i32, i64);

impl ClassLabel for f32 {
    #[inline]
    fn class_id(self) -> Option<usize> {
        (self as f64).class_id()
    }
    fn as_f64(self) -> f64 {
        self as f64
    }
}

impl ClassLabel for f64 {
    #[inline]
    fn class_id(self) -> Option<usize> {
        (self >= 0.0 && self.fract() == 0.0 && self < 2f64.powi(53)).then_some(self as usize)
    }
    fn as_f64(self) -> f64 {
        self
    }
}

/// Fraction of rows whose arg-max class is the label.
///
/// ```
/// # use rec_metrics::accuracy;
/// // Two samples, three classes: predictions 1 and 0; labels 1 and 2.
/// let scores = [0.1, 0.7, 0.2, 0.5, 0.2, 0.3];
/// assert_eq!(accuracy(&scores, 3, &[1u32, 2]).unwrap(), 0.5);
/// ```
pub fn accuracy<L: ClassLabel>(scores: &[f32], classes: usize, labels: &[L]) -> Result<f64> {
    confusion(scores, classes, labels)?.accuracy()
}

/// Macro-averaged precision: the mean over classes of `TP_c / predicted_c`.
///
/// The mean runs over the classes that occur as a label or as a prediction (as scikit-learn's
/// `precision_score(average="macro")` does with its default labels); a class that occurs only as
/// a label, never predicted, has precision 0 (scikit-learn's `zero_division=0`).
pub fn macro_precision<L: ClassLabel>(scores: &[f32], classes: usize, labels: &[L]) -> Result<f64> {
    confusion(scores, classes, labels)?.macro_precision()
}

/// Macro-averaged recall: the mean over classes of `TP_c / support_c`, over the classes that
/// occur as a label or a prediction; a class that is only predicted has recall 0.
pub fn macro_recall<L: ClassLabel>(scores: &[f32], classes: usize, labels: &[L]) -> Result<f64> {
    confusion(scores, classes, labels)?.macro_recall()
}

fn confusion<L: ClassLabel>(
    scores: &[f32],
    classes: usize,
    labels: &[L],
) -> Result<ConfusionMatrix> {
    let mut m = ConfusionMatrix::new(classes)?;
    m.push(scores, labels)?;
    Ok(m)
}

/// A `classes × classes` confusion matrix: the streaming accumulator for multi-class metrics.
/// Counts are integers, so merging is exact.
///
/// ```
/// # use rec_metrics::ConfusionMatrix;
/// let mut m = ConfusionMatrix::new(2).unwrap();
/// m.push(&[0.9, 0.1, 0.4, 0.6, 0.3, 0.7], &[0u32, 0, 1]).unwrap();
/// assert_eq!(m.count(1, 1), 1); // label 1 predicted 1
/// assert_eq!(m.count(0, 1), 1); // label 0 predicted 1
/// assert_eq!(m.accuracy().unwrap(), 2.0 / 3.0);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfusionMatrix {
    classes: usize,
    /// Row = label, column = prediction.
    counts: Vec<u64>,
}

/// The largest number of classes a [`ConfusionMatrix`] takes: 8192 classes are 2^26
/// counters, 512 MiB.
pub const MAX_CLASSES: usize = 1 << 13;

impl ConfusionMatrix {
    /// An empty matrix for `classes` classes (at least 1, at most [`MAX_CLASSES`]: the matrix
    /// holds `classes²` counters).
    pub fn new(classes: usize) -> Result<Self> {
        if classes == 0 {
            return Err(MetricError::InvalidArgument(
                "a multi-class metric needs at least one class".into(),
            ));
        }
        if classes > MAX_CLASSES {
            return Err(MetricError::InvalidArgument(format!(
                "a confusion matrix of {classes} classes would hold {classes}² counters; at most \
                 {MAX_CLASSES} classes (for a large candidate set, use the ranking metrics)"
            )));
        }
        Ok(Self {
            classes,
            counts: vec![0; classes * classes],
        })
    }

    /// Number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// Adds the rows of a row-major `[labels.len(), classes]` score matrix. On error nothing of
    /// the chunk is kept.
    pub fn push<L: ClassLabel>(&mut self, scores: &[f32], labels: &[L]) -> Result<()> {
        let k = self.classes;
        check_len("scores", scores.len(), "labels × classes", labels.len() * k)?;
        let mut pairs = Vec::with_capacity(labels.len());
        for (i, (row, &label)) in scores.chunks_exact(k).zip(labels).enumerate() {
            let y = match label.class_id() {
                Some(y) if y < k => y,
                _ if label.as_f64().is_nan() => {
                    return Err(MetricError::NaN {
                        what: "labels",
                        index: i,
                    });
                }
                _ => {
                    return Err(MetricError::OutOfRange {
                        what: "labels",
                        index: i,
                        value: label.as_f64(),
                        expected: "a class id in 0..classes",
                    });
                }
            };
            let mut best = 0;
            for (c, &s) in row.iter().enumerate() {
                if s.is_nan() {
                    return Err(MetricError::NaN {
                        what: "scores",
                        index: i * k + c,
                    });
                }
                if s > row[best] {
                    best = c;
                }
            }
            pairs.push((y, best));
        }
        for (y, p) in pairs {
            self.counts[y * k + p] += 1;
        }
        Ok(())
    }

    /// Adds the counts of `other`. Errors when the class counts differ.
    pub fn merge(&mut self, other: ConfusionMatrix) -> Result<()> {
        if other.classes != self.classes {
            return Err(MetricError::InvalidArgument(format!(
                "cannot merge confusion matrices of {} and {} classes",
                self.classes, other.classes
            )));
        }
        for (a, b) in self.counts.iter_mut().zip(other.counts) {
            *a += b;
        }
        Ok(())
    }

    /// Number of samples with label `label` predicted as `predicted` (0 out of range).
    pub fn count(&self, label: usize, predicted: usize) -> u64 {
        if label < self.classes && predicted < self.classes {
            self.counts[label * self.classes + predicted]
        } else {
            0
        }
    }

    /// Total number of samples.
    pub fn total(&self) -> u64 {
        self.counts.iter().sum()
    }

    fn support(&self, c: usize) -> u64 {
        (0..self.classes).map(|p| self.count(c, p)).sum()
    }

    fn predicted(&self, c: usize) -> u64 {
        (0..self.classes).map(|y| self.count(y, c)).sum()
    }

    fn empty_check(&self, metric: &'static str) -> Result<()> {
        if self.total() == 0 {
            Err(MetricError::Empty { metric })
        } else {
            Ok(())
        }
    }

    /// Fraction of correct predictions.
    pub fn accuracy(&self) -> Result<f64> {
        self.empty_check("accuracy")?;
        let correct: u64 = (0..self.classes).map(|c| self.count(c, c)).sum();
        Ok(correct as f64 / self.total() as f64)
    }

    /// Macro precision, see [`macro_precision`].
    pub fn macro_precision(&self) -> Result<f64> {
        self.empty_check("macro precision")?;
        Ok(self.macro_mean(|c| self.predicted(c)))
    }

    /// Macro recall, see [`macro_recall`].
    pub fn macro_recall(&self) -> Result<f64> {
        self.empty_check("macro recall")?;
        Ok(self.macro_mean(|c| self.support(c)))
    }

    /// Mean of `TP_c / den(c)` over present classes (0 where `den(c) == 0`).
    fn macro_mean(&self, den: impl Fn(usize) -> u64) -> f64 {
        let (mut sum, mut present) = (0.0, 0u64);
        for c in 0..self.classes {
            if self.support(c) + self.predicted(c) == 0 {
                continue;
            }
            present += 1;
            let d = den(c);
            if d > 0 {
                sum += self.count(c, c) as f64 / d as f64;
            }
        }
        sum / present as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Scores that make `pred` the arg-max of a row of `k`.
    fn one_hot(preds: &[usize], k: usize) -> Vec<f32> {
        preds
            .iter()
            .flat_map(|&p| (0..k).map(move |c| if c == p { 0.9 } else { 0.05 }))
            .collect()
    }

    #[test]
    fn sklearn_documentation_case() {
        // scikit-learn's precision_score/recall_score example: y_true [0,1,2,0,1,2],
        // y_pred [0,2,1,0,0,1]: macro precision 0.2222..., macro recall 0.3333...
        let s = one_hot(&[0, 2, 1, 0, 0, 1], 3);
        let y = [0u32, 1, 2, 0, 1, 2];
        assert_eq!(accuracy(&s, 3, &y).unwrap(), 2.0 / 6.0);
        assert!((macro_precision(&s, 3, &y).unwrap() - 2.0 / 9.0).abs() < 1e-15);
        assert!((macro_recall(&s, 3, &y).unwrap() - 1.0 / 3.0).abs() < 1e-15);
    }

    #[test]
    fn absent_classes_are_left_out_of_the_mean() {
        // 4 classes, class 3 never occurs; class 2 is only predicted. scikit-learn
        // (zero_division=0) gives the same: precision 0.6667, recall 0.5556.
        let s = one_hot(&[0, 1, 2, 1], 4);
        let y = [0.0f32, 1.0, 1.0, 1.0];
        // precision: class0 1/1, class1 2/2, class2 0/1 -> mean over 3 classes.
        assert!((macro_precision(&s, 4, &y).unwrap() - 2.0 / 3.0).abs() < 1e-15);
        // recall: class0 1/1, class1 2/3, class2 0 (no support) -> (1 + 2/3 + 0) / 3.
        assert!((macro_recall(&s, 4, &y).unwrap() - (5.0 / 3.0) / 3.0).abs() < 1e-15);
    }

    #[test]
    fn ties_go_to_the_lowest_class() {
        assert_eq!(accuracy(&[0.5, 0.5, 0.2], 3, &[0u32]).unwrap(), 1.0);
        assert_eq!(accuracy(&[0.2, 0.5, 0.5], 3, &[1u32]).unwrap(), 1.0);
    }

    #[test]
    fn bad_input() {
        assert!(matches!(
            accuracy(&[0.5, 0.5], 2, &[2u32]),
            Err(MetricError::OutOfRange { what: "labels", .. })
        ));
        assert!(matches!(
            accuracy(&[0.5, 0.5], 2, &[0.5f32]),
            Err(MetricError::OutOfRange { what: "labels", .. })
        ));
        assert!(matches!(
            accuracy(&[0.5, 0.5], 2, &[-1i64]),
            Err(MetricError::OutOfRange { what: "labels", .. })
        ));
        assert!(matches!(
            accuracy(&[0.5, 0.5], 2, &[f32::NAN]),
            Err(MetricError::NaN {
                what: "labels",
                index: 0
            })
        ));
        assert!(matches!(
            accuracy(&[0.5, f32::NAN], 2, &[0u32]),
            Err(MetricError::NaN { index: 1, .. })
        ));
        assert!(matches!(
            accuracy(&[0.5, 0.5, 0.1], 2, &[0u32]),
            Err(MetricError::LengthMismatch { .. })
        ));
        assert!(matches!(
            accuracy::<u32>(&[], 2, &[]),
            Err(MetricError::Empty { .. })
        ));
        assert!(matches!(
            accuracy::<u32>(&[], 0, &[]),
            Err(MetricError::InvalidArgument(_))
        ));
    }

    #[test]
    fn too_many_classes_is_an_error_not_an_allocation() {
        assert!(ConfusionMatrix::new(MAX_CLASSES).is_ok());
        let e = ConfusionMatrix::new(200_000).unwrap_err().to_string();
        assert!(e.contains("200000 classes"), "{e}");
        assert!(ConfusionMatrix::new(usize::MAX).is_err());
    }
}
