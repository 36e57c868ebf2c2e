//! Sliced evaluation: the same metrics on the whole set ("all") and on named subsets.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::binary::{AucAccumulator, GaucAccumulator, LogLossAccumulator};
use crate::error::{MetricError, Result, check_len};
use crate::multiclass::{ClassLabel, ConfusionMatrix};
use crate::ranking::{Queries, RankingAccumulator};
use crate::regression::RegressionAccumulator;

/// Name of the slice that holds every sample.
pub const ALL: &str = "all";

/// Metrics per slice: slice name → (sample count, metric name → value), ordered by name.
///
/// - Built by [`Report::binary`], [`Report::regression`], [`Report::multiclass`] and
///   [`Report::ranking`] over the slice [`ALL`] and any number of named boolean masks.
/// - A metric that is **undefined on a slice** (an empty slice, AUC on a slice with one class,
///   GAUC when no group of the slice has both classes) is **left out of that slice**: its key is
///   absent, the other metrics are still there. Bad input (NaN, a length mismatch, a value out
///   of range) fails the whole report.
/// - Serializes (serde) as `{"all": {"count": 3, "metrics": {"auc": 0.5, ...}}, ...}`; every
///   stored value is finite, so the JSON round-trips.
/// - [`Display`](fmt::Display) prints an aligned table, "all" first, `-` where a metric is absent.
///
/// ```
/// # use rec_metrics::Report;
/// let probs = [0.9, 0.2, 0.6, 0.4, 0.7];
/// let labels = [1.0, 0.0, 1.0, 0.0, 1.0];
/// let cold = [false, false, true, true, true];
/// let warm: Vec<bool> = cold.iter().map(|c| !c).collect();
/// let r = Report::binary(&probs, &labels, None, &[("cold", &cold), ("warm", &warm)]).unwrap();
/// assert_eq!(r.get("all", "auc"), Some(1.0));
/// assert_eq!(r.count("cold"), Some(3));
/// assert!(r.get("warm", "logloss").is_some());
/// println!("{r}");
/// ```
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Report {
    /// The slices by name.
    pub slices: BTreeMap<String, SliceReport>,
}

/// The metrics of one slice.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SliceReport {
    /// Number of samples (for [`Report::ranking`]: queries) in the slice.
    pub count: u64,
    /// Metric name → value; only metrics defined on the slice.
    pub metrics: BTreeMap<String, f64>,
}

impl SliceReport {
    /// Stores `result` under `name` when it is a value; skips it when the metric is undefined
    /// ([`MetricError::is_undefined`]); passes other errors on.
    fn put(&mut self, name: impl Into<String>, result: Result<f64>) -> Result<()> {
        if let Some(v) = defined(result)? {
            debug_assert!(v.is_finite());
            self.metrics.insert(name.into(), v);
        }
        Ok(())
    }
}

/// The samples (or queries) of a slice: `None` is every one.
type Mask<'a> = Option<&'a [bool]>;

fn pick<'a, T: Copy>(values: &'a [T], mask: Mask<'_>) -> Cow<'a, [T]> {
    match mask {
        None => Cow::Borrowed(values),
        Some(m) => Cow::Owned(
            values
                .iter()
                .zip(m)
                .filter(|(_, k)| **k)
                .map(|(v, _)| *v)
                .collect(),
        ),
    }
}

impl Report {
    /// An empty report.
    pub fn new() -> Self {
        Self::default()
    }

    /// Evaluates `eval` on [`ALL`] (first, so that input errors surface there) and on every
    /// named mask of `n` flags.
    fn sliced(
        n: usize,
        slices: &[(&str, &[bool])],
        mut eval: impl FnMut(Mask<'_>) -> Result<SliceReport>,
    ) -> Result<Report> {
        let mut names = BTreeSet::new();
        for (name, mask) in slices {
            check_len("slice mask", mask.len(), "samples", n)?;
            if *name == ALL || !names.insert(*name) {
                return Err(MetricError::InvalidArgument(format!(
                    "slice name `{name}` is used twice (`{ALL}` is reserved)"
                )));
            }
        }
        let mut report = Report::new();
        report.slices.insert(ALL.to_string(), eval(None)?);
        for (name, mask) in slices {
            report.slices.insert(name.to_string(), eval(Some(mask))?);
        }
        Ok(report)
    }

    /// Binary task: `auc`, `gauc` (only when `groups` is given, e.g. user ids) and `logloss` on
    /// "all" and each slice. `probs` are probabilities in [0, 1] (apply the sigmoid first); see
    /// [`auc`](crate::auc), [`gauc`](crate::gauc), [`logloss`](crate::logloss).
    pub fn binary(
        probs: &[f32],
        labels: &[f32],
        groups: Option<&[u32]>,
        slices: &[(&str, &[bool])],
    ) -> Result<Report> {
        check_len("probs", probs.len(), "labels", labels.len())?;
        if let Some(g) = groups {
            check_len("probs", probs.len(), "groups", g.len())?;
        }
        Self::sliced(probs.len(), slices, |mask| {
            let (p, y) = (pick(probs, mask), pick(labels, mask));
            let mut s = SliceReport {
                count: p.len() as u64,
                ..Default::default()
            };
            let mut auc = AucAccumulator::new();
            auc.push(&p, &y)?;
            s.put("auc", auc.finish())?;
            if let Some(g) = groups {
                let mut gauc = GaucAccumulator::new();
                gauc.push(&p, &y, &pick(g, mask))?;
                s.put("gauc", gauc.finish())?;
            }
            let mut ll = LogLossAccumulator::new();
            ll.push(&p, &y)?;
            s.put("logloss", ll.finish())?;
            Ok(s)
        })
    }

    /// Regression task: `mse`, `rmse`, `mae` on "all" and each slice.
    pub fn regression(
        preds: &[f32],
        targets: &[f32],
        slices: &[(&str, &[bool])],
    ) -> Result<Report> {
        check_len("preds", preds.len(), "targets", targets.len())?;
        Self::sliced(preds.len(), slices, |mask| {
            let mut acc = RegressionAccumulator::new();
            acc.push(&pick(preds, mask), &pick(targets, mask))?;
            let mut s = SliceReport {
                count: acc.count(),
                ..Default::default()
            };
            if let Some(m) = defined(acc.finish())? {
                s.put("mse", Ok(m.mse))?;
                s.put("rmse", Ok(m.rmse))?;
                s.put("mae", Ok(m.mae))?;
            }
            Ok(s)
        })
    }

    /// Multi-class task: `accuracy`, `macro_precision`, `macro_recall` on "all" and each slice,
    /// from a row-major `[n, classes]` score matrix (see [`ConfusionMatrix`]).
    pub fn multiclass<L: ClassLabel>(
        scores: &[f32],
        classes: usize,
        labels: &[L],
        slices: &[(&str, &[bool])],
    ) -> Result<Report> {
        let mut full = ConfusionMatrix::new(classes)?;
        full.push(scores, labels)?; // validates everything once
        Self::sliced(labels.len(), slices, |mask| {
            let m = match mask {
                None => full.clone(),
                Some(mask) => {
                    let rows: Vec<f32> = scores
                        .chunks_exact(classes)
                        .zip(mask)
                        .filter(|(_, k)| **k)
                        .flat_map(|(r, _)| r.iter().copied())
                        .collect();
                    let mut m = ConfusionMatrix::new(classes)?;
                    m.push(&rows, &pick(labels, Some(mask)))?;
                    m
                }
            };
            let mut s = SliceReport {
                count: m.total(),
                ..Default::default()
            };
            s.put("accuracy", m.accuracy())?;
            s.put("macro_precision", m.macro_precision())?;
            s.put("macro_recall", m.macro_recall())?;
            Ok(s)
        })
    }

    /// Ranking task: `hr@k`, `ndcg@k`, `recall@k`, `mrr` and `auc` (mean per-query AUC) on "all"
    /// and each slice; slice masks have one flag per **query** and counts are query counts.
    pub fn ranking(queries: &Queries<'_>, k: usize, slices: &[(&str, &[bool])]) -> Result<Report> {
        RankingAccumulator::new(k)?;
        Self::sliced(queries.len(), slices, |mask| {
            let mut acc = RankingAccumulator::new(k)?;
            match mask {
                None => acc.push(queries)?,
                Some(mask) => acc.push(&queries.select(mask)?.as_queries()?)?,
            }
            let mut s = SliceReport::default();
            let Some(m) = defined(acc.finish())? else {
                return Ok(s);
            };
            s.count = m.queries;
            s.put(format!("hr@{k}"), Ok(m.hr))?;
            s.put(format!("ndcg@{k}"), Ok(m.ndcg))?;
            s.put(format!("recall@{k}"), Ok(m.recall))?;
            s.put("mrr", Ok(m.mrr))?;
            if let Some(a) = m.auc {
                s.put("auc", Ok(a))?;
            }
            Ok(s)
        })
    }

    /// The value of `metric` on `slice`, if present.
    pub fn get(&self, slice: &str, metric: &str) -> Option<f64> {
        self.slices.get(slice)?.metrics.get(metric).copied()
    }

    /// The sample count of `slice`, if the slice exists.
    pub fn count(&self, slice: &str) -> Option<u64> {
        self.slices.get(slice).map(|s| s.count)
    }

    /// Moves the slices of `other` into `self` as `"{prefix}/{slice}"`, e.g. to gather the
    /// reports of several tasks into one. Errors (and changes nothing) on a name clash.
    pub fn extend_prefixed(&mut self, prefix: &str, other: Report) -> Result<()> {
        let renamed: Vec<(String, SliceReport)> = other
            .slices
            .into_iter()
            .map(|(name, s)| (format!("{prefix}/{name}"), s))
            .collect();
        if let Some((name, _)) = renamed.iter().find(|(n, _)| self.slices.contains_key(n)) {
            return Err(MetricError::InvalidArgument(format!(
                "slice `{name}` is already in the report"
            )));
        }
        self.slices.extend(renamed);
        Ok(())
    }
}

/// `None` for an undefined metric, the error for bad input.
fn defined<T>(r: Result<T>) -> Result<Option<T>> {
    match r {
        Ok(v) => Ok(Some(v)),
        Err(e) if e.is_undefined() => Ok(None),
        Err(e) => Err(e),
    }
}

/// Formats a metric value for the table: 6 decimals in the usual range, scientific otherwise.
fn format_value(v: f64) -> String {
    if v == 0.0 || (1e-4..1e7).contains(&v.abs()) {
        format!("{v:.6}")
    } else {
        format!("{v:.4e}")
    }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let metrics: BTreeSet<&str> = self
            .slices
            .values()
            .flat_map(|s| s.metrics.keys().map(String::as_str))
            .collect();
        let mut header = vec!["slice".to_string(), "count".to_string()];
        header.extend(metrics.iter().map(|m| m.to_string()));
        let order = self
            .slices
            .get_key_value(ALL)
            .into_iter()
            .chain(self.slices.iter().filter(|(n, _)| n.as_str() != ALL));
        let mut rows = vec![header];
        for (name, s) in order {
            let mut row = vec![name.clone(), s.count.to_string()];
            row.extend(metrics.iter().map(|m| {
                s.metrics
                    .get(*m)
                    .map_or_else(|| "-".to_string(), |v| format_value(*v))
            }));
            rows.push(row);
        }
        let widths: Vec<usize> = (0..rows[0].len())
            .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
            .collect();
        for row in &rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c == 0 {
                    line.push_str(&format!("{cell:<w$}", w = widths[c]));
                } else {
                    line.push_str(&format!("  {cell:>w$}", w = widths[c]));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

/// Owned named masks, for slices computed at run time (e.g. one per scenario id). Pass
/// [`as_refs`](Self::as_refs) to the [`Report`] constructors.
///
/// ```
/// # use rec_metrics::{Report, Slices};
/// let scenario = [0u32, 2, 0, 2, 2];
/// let slices = Slices::by_id(&scenario, |id| format!("scenario={id}"));
/// let r = Report::regression(&[1.0; 5], &[1.0, 2.0, 1.0, 3.0, 1.0], &slices.as_refs()).unwrap();
/// assert_eq!(r.count("scenario=2"), Some(3));
/// assert_eq!(r.get("scenario=0", "mae"), Some(0.0));
/// ```
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Slices {
    entries: Vec<(String, Vec<bool>)>,
}

impl Slices {
    /// No slice.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds a named mask.
    pub fn add(&mut self, name: impl Into<String>, mask: Vec<bool>) -> &mut Self {
        self.entries.push((name.into(), mask));
        self
    }

    /// One slice per distinct id, in increasing id order, named by `name(id)`.
    pub fn by_id(ids: &[u32], name: impl Fn(u32) -> String) -> Self {
        let distinct: BTreeSet<u32> = ids.iter().copied().collect();
        let mut s = Self::new();
        for id in distinct {
            s.add(name(id), ids.iter().map(|&x| x == id).collect());
        }
        s
    }

    /// Borrowed `(name, mask)` pairs.
    pub fn as_refs(&self) -> Vec<(&str, &[bool])> {
        self.entries
            .iter()
            .map(|(n, m)| (n.as_str(), m.as_slice()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn binary_report_skips_undefined_metrics() {
        let probs = [0.9, 0.2, 0.6, 0.4, 0.7, 0.3];
        let labels = [1.0, 0.0, 1.0, 0.0, 1.0, 1.0];
        let users = [1, 1, 2, 2, 3, 3];
        let only_pos = [false, false, false, false, true, true];
        let none = [false; 6];
        let r = Report::binary(
            &probs,
            &labels,
            Some(&users),
            &[("positives", &only_pos), ("empty", &none)],
        )
        .unwrap();
        let all = &r.slices["all"];
        assert_eq!(all.count, 6);
        assert_eq!(
            all.metrics.keys().collect::<Vec<_>>(),
            ["auc", "gauc", "logloss"]
        );
        // positives 0.9 .6 .7 .3 vs negatives .2 .4: 7 of 8 pairs.
        assert_eq!(all.metrics["auc"], 7.0 / 8.0);
        assert_eq!(all.metrics["gauc"], 1.0);
        let pos = &r.slices["positives"];
        assert_eq!(pos.count, 2);
        assert_eq!(pos.metrics.keys().collect::<Vec<_>>(), ["logloss"]);
        assert_eq!(r.slices["empty"], SliceReport::default());
        // Input errors still fail the report.
        assert!(matches!(
            Report::binary(&[0.5, f32::NAN], &[1.0, 0.0], None, &[]),
            Err(MetricError::NaN { .. })
        ));
        assert!(matches!(
            Report::binary(&[0.5], &[1.0], None, &[("all", &[true])]),
            Err(MetricError::InvalidArgument(_))
        ));
        assert!(matches!(
            Report::binary(&[0.5], &[1.0], None, &[("x", &[true, false])]),
            Err(MetricError::LengthMismatch { .. })
        ));
    }

    #[test]
    fn json_round_trip_and_table() {
        let targets = [1.0, 2.0, 3.0, 4.0];
        let preds = [1.5, 2.0, 2.0, 4.0];
        let first = [true, true, false, false];
        let r = Report::regression(&preds, &targets, &[("first_half", &first)]).unwrap();
        assert_eq!(r.get("all", "mse"), Some(1.25 / 4.0));
        assert_eq!(r.get("first_half", "mae"), Some(0.25));
        let json = serde_json::to_string(&r).unwrap();
        assert!(
            json.starts_with(r#"{"all":{"count":4,"metrics":{"mae":"#),
            "{json}"
        );
        let back: Report = serde_json::from_str(&json).unwrap();
        assert_eq!(back, r);
        let table = r.to_string();
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3);
        assert!(lines[0].starts_with("slice       count"), "{table}");
        assert!(lines[1].starts_with("all"), "{table}");
        assert!(lines[2].starts_with("first_half"), "{table}");
        // Columns line up: every line has the same length.
        assert!(lines.iter().all(|l| l.len() == lines[0].len()), "{table}");
    }

    #[test]
    fn multiclass_and_ranking_reports() {
        let scores = [0.9, 0.1, 0.2, 0.8, 0.6, 0.4];
        let labels = [0u32, 1, 1];
        let r =
            Report::multiclass(&scores, 2, &labels, &[("last", &[false, false, true])]).unwrap();
        assert_eq!(r.get("all", "accuracy"), Some(2.0 / 3.0));
        assert_eq!(r.get("last", "accuracy"), Some(0.0));
        assert_eq!(r.count("last"), Some(1));

        let s = [0.9, 0.1, 0.5, 0.2, 0.8, 0.1];
        let rel = [true, false, false, true, false, false];
        let q = Queries::fixed(&s, &rel, 3).unwrap();
        let r =
            Report::ranking(&q, 1, &[("second", &[false, true]), ("none", &[false; 2])]).unwrap();
        assert_eq!(r.get("all", "hr@1"), Some(0.5));
        assert_eq!(r.get("second", "hr@1"), Some(0.0));
        assert_eq!(r.get("second", "mrr"), Some(0.5));
        assert_eq!(r.count("second"), Some(1));
        assert_eq!(r.slices["none"], SliceReport::default());
    }

    #[test]
    fn prefixes_and_slices_by_id() {
        let mut all = Report::new();
        let a = Report::regression(&[1.0], &[2.0], &[]).unwrap();
        all.extend_prefixed("rating", a.clone()).unwrap();
        assert_eq!(all.get("rating/all", "mse"), Some(1.0));
        assert!(all.extend_prefixed("rating", a).is_err());
        let s = Slices::by_id(&[3, 1, 3], |id| format!("s{id}"));
        assert_eq!(
            s.as_refs(),
            vec![
                ("s1", &[false, true, false][..]),
                ("s3", &[true, false, true][..])
            ]
        );
    }
}
