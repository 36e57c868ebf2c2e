//! Aggregating experiment results over seeds: model -> slice -> metric -> mean and std.
//!
//! The experiment commands (`cargo xtask experiment ...`) collect one value per
//! (model, slice, metric, seed) here, print the aggregate as one JSON object on the last line of
//! their output (with `--json`), and render it as markdown tables for `docs/results/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::eval::Evaluation;

/// Mean and sample standard deviation of the values of one cell over seeds. In JSON a value
/// that is not a number (an undefined metric) is written as `null` and read back as NaN.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean over seeds.
    #[serde(deserialize_with = "nan_if_null")]
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for a single seed).
    #[serde(deserialize_with = "nan_if_null")]
    pub std: f64,
    /// Number of seeds.
    pub n: usize,
    /// The individual values, in the order they were added.
    #[serde(deserialize_with = "nans_if_null")]
    pub values: Vec<f64>,
}

/// serde_json writes NaN as `null`; this reads it back as NaN.
fn nan_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    Ok(Option::<f64>::deserialize(d)?.unwrap_or(f64::NAN))
}

fn nans_if_null<'de, D: serde::Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
    Ok(Vec::<Option<f64>>::deserialize(d)?
        .into_iter()
        .map(|v| v.unwrap_or(f64::NAN))
        .collect())
}

impl Stat {
    fn from_values(values: Vec<f64>) -> Stat {
        let n = values.len();
        let mean = values.iter().sum::<f64>() / n.max(1) as f64;
        let var = if n > 1 {
            values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
        } else {
            0.0
        };
        Stat {
            mean,
            std: var.sqrt(),
            n,
            values,
        }
    }
}

/// One value and the seed it came from, when the caller named it.
type Seeded = (Option<u64>, f64);

/// Values collected per model, slice, metric (and seed, when the caller names it).
#[derive(Debug, Clone, Default)]
pub struct Results {
    cells: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<Seeded>>>>,
    order: Vec<String>,
}

fn values(v: &[Seeded]) -> Vec<f64> {
    v.iter().map(|&(_, x)| x).collect()
}

/// The aggregate: model -> slice -> metric -> [`Stat`].
pub type Table = BTreeMap<String, BTreeMap<String, BTreeMap<String, Stat>>>;

impl Results {
    /// An empty collection.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds one value (one seed) for `model`, `slice`, `metric`.
    pub fn add(&mut self, model: &str, slice: &str, metric: &str, value: f64) {
        self.push(model, slice, metric, None, value);
    }

    /// As [`add`](Self::add), naming the seed: [`paired`](Self::paired) then pairs values by
    /// seed, not by position.
    pub fn add_seeded(&mut self, model: &str, slice: &str, metric: &str, seed: u64, value: f64) {
        self.push(model, slice, metric, Some(seed), value);
    }

    fn push(&mut self, model: &str, slice: &str, metric: &str, seed: Option<u64>, value: f64) {
        if !self.order.iter().any(|m| m == model) {
            self.order.push(model.to_string());
        }
        self.cells
            .entry(model.to_string())
            .or_default()
            .entry(slice.to_string())
            .or_default()
            .entry(metric.to_string())
            .or_default()
            .push((seed, value));
    }

    /// Adds every metric of every slice of an evaluation. Slices are named `<slice>` when the
    /// evaluation has one task and `<task>/<slice>` otherwise.
    pub fn add_evaluation(&mut self, model: &str, eval: &Evaluation) {
        self.add_evaluation_inner(model, None, eval);
    }

    /// As [`add_evaluation`](Self::add_evaluation), naming the seed (see
    /// [`add_seeded`](Self::add_seeded)).
    pub fn add_evaluation_seeded(&mut self, model: &str, seed: u64, eval: &Evaluation) {
        self.add_evaluation_inner(model, Some(seed), eval);
    }

    fn add_evaluation_inner(&mut self, model: &str, seed: Option<u64>, eval: &Evaluation) {
        let single = eval.tasks.len() == 1;
        for (task, report) in &eval.tasks {
            for (slice, sr) in &report.slices {
                let key = if single {
                    slice.clone()
                } else {
                    format!("{task}/{slice}")
                };
                for (metric, &v) in &sr.metrics {
                    self.push(model, &key, metric, seed, v);
                }
            }
        }
    }

    /// Models in the order they were first added.
    pub fn models(&self) -> &[String] {
        &self.order
    }

    /// Mean and std of every cell.
    pub fn table(&self) -> Table {
        self.cells
            .iter()
            .map(|(m, slices)| {
                (
                    m.clone(),
                    slices
                        .iter()
                        .map(|(s, metrics)| {
                            (
                                s.clone(),
                                metrics
                                    .iter()
                                    .map(|(k, v)| (k.clone(), Stat::from_values(values(v))))
                                    .collect(),
                            )
                        })
                        .collect(),
                )
            })
            .collect()
    }

    /// The statistic of one cell.
    pub fn stat(&self, model: &str, slice: &str, metric: &str) -> Option<Stat> {
        let v = self.cells.get(model)?.get(slice)?.get(metric)?;
        Some(Stat::from_values(values(v)))
    }

    /// The per-seed differences `a - b` of one cell, as a [`Stat`]: a paired comparison of two
    /// models trained on the same seeds. When every value of both cells was added with its seed
    /// ([`add_seeded`](Self::add_seeded)), values pair by seed, over the seeds both have (a
    /// seed whose metric one model lacks is left out, never paired with another seed); `None`
    /// when they share none. Otherwise both must have the same number of values, which pair up
    /// in the order they were added.
    pub fn paired(&self, a: &str, b: &str, slice: &str, metric: &str) -> Option<Stat> {
        let va = self.cells.get(a)?.get(slice)?.get(metric)?;
        let vb = self.cells.get(b)?.get(slice)?.get(metric)?;
        let seeded = |v: &[Seeded]| v.iter().all(|(s, _)| s.is_some());
        let diffs: Vec<f64> = if seeded(va) && seeded(vb) {
            va.iter()
                .filter_map(|(s, x)| {
                    let (_, y) = vb.iter().find(|(t, _)| t == s)?;
                    Some(x - y)
                })
                .collect()
        } else {
            if va.len() != vb.len() {
                return None;
            }
            va.iter().zip(vb).map(|((_, x), (_, y))| x - y).collect()
        };
        if diffs.is_empty() {
            return None;
        }
        Some(Stat::from_values(diffs))
    }

    /// The aggregate as one line of JSON.
    pub fn to_json_line(&self) -> String {
        serde_json::to_string(&self.table()).expect("a table of numbers serializes")
    }

    /// A markdown table: one row per model (in insertion order), one column per
    /// (slice, metric) pair, cells `mean ± std`. `digits` decimals.
    pub fn markdown(&self, columns: &[(&str, &str)], digits: usize) -> String {
        let mut s = String::new();
        let _ = write!(s, "| model |");
        for (slice, metric) in columns {
            let _ = write!(s, " {metric} ({slice}) |");
        }
        let _ = write!(s, "\n|---|");
        for _ in columns {
            let _ = write!(s, "---|");
        }
        s.push('\n');
        for m in &self.order {
            let _ = write!(s, "| {m} |");
            for (slice, metric) in columns {
                match self.stat(m, slice, metric) {
                    Some(st) if st.n > 1 => {
                        let _ = write!(s, " {:.*} ± {:.*} |", digits, st.mean, digits, st.std);
                    }
                    Some(st) => {
                        let _ = write!(s, " {:.*} |", digits, st.mean);
                    }
                    None => {
                        let _ = write!(s, " – |");
                    }
                }
            }
            s.push('\n');
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mean_and_sample_std_over_seeds() {
        let mut r = Results::new();
        for v in [0.70, 0.72, 0.74] {
            r.add("cel", "all", "auc", v);
        }
        r.add("full", "all", "auc", 0.71);
        let s = r.stat("cel", "all", "auc").unwrap();
        assert!((s.mean - 0.72).abs() < 1e-12);
        assert!((s.std - 0.02).abs() < 1e-12);
        assert_eq!(r.stat("full", "all", "auc").unwrap().std, 0.0);
        let json: Table = serde_json::from_str(&r.to_json_line()).unwrap();
        assert_eq!(json["cel"]["all"]["auc"].n, 3);
        let md = r.markdown(&[("all", "auc"), ("cold", "auc")], 3);
        assert!(md.contains("| cel | 0.720 ± 0.020 | – |"), "{md}");
        assert_eq!(r.models(), &["cel".to_string(), "full".to_string()]);
    }

    #[test]
    fn an_undefined_metric_survives_a_json_round_trip_as_nan() {
        let mut r = Results::new();
        r.add("m", "all", "auc", 0.7);
        r.add("m", "all", "auc", f64::NAN);
        let json = r.to_json_line();
        assert!(json.contains("null"), "{json}");
        let back: Table = serde_json::from_str(&json).unwrap();
        let s = &back["m"]["all"]["auc"];
        assert!(s.mean.is_nan() && s.std.is_nan() && s.n == 2);
        assert_eq!(s.values[0], 0.7);
        assert!(s.values[1].is_nan());
    }

    #[test]
    fn paired_differences_follow_seed_order() {
        let mut r = Results::new();
        for (a, b) in [(0.70, 0.69), (0.80, 0.78), (0.60, 0.57)] {
            r.add("a", "all", "auc", a);
            r.add("b", "all", "auc", b);
        }
        // Differences 0.01, 0.02, 0.03: mean 0.02, std 0.01, although the unpaired stds
        // (0.10 and 0.105) are ten times larger.
        let d = r.paired("a", "b", "all", "auc").unwrap();
        assert!((d.mean - 0.02).abs() < 1e-12, "{d:?}");
        assert!((d.std - 0.01).abs() < 1e-12, "{d:?}");
        assert!(r.stat("a", "all", "auc").unwrap().std > 0.09);
        let back = r.paired("b", "a", "all", "auc").unwrap();
        assert!((back.mean + 0.02).abs() < 1e-12);
        // A missing cell or a different number of seeds pairs nothing.
        assert!(r.paired("a", "c", "all", "auc").is_none());
        r.add("c", "all", "auc", 0.5);
        assert!(r.paired("a", "c", "all", "auc").is_none());
    }

    #[test]
    fn seeded_values_pair_by_seed_not_by_position() {
        let mut r = Results::new();
        // Model a lacks seed 2's value, model b lacks seed 3's: position would pair a's seed 3
        // with b's seed 2.
        r.add_seeded("a", "s", "auc", 1, 0.70);
        r.add_seeded("a", "s", "auc", 3, 0.90);
        r.add_seeded("b", "s", "auc", 1, 0.60);
        r.add_seeded("b", "s", "auc", 2, 0.10);
        let d = r.paired("a", "b", "s", "auc").unwrap();
        assert_eq!(d.n, 1);
        assert!((d.mean - 0.10).abs() < 1e-12, "{d:?}");
        // No common seed: nothing to pair.
        r.add_seeded("c", "s", "auc", 7, 0.5);
        assert!(r.paired("a", "c", "s", "auc").is_none());
        // The statistics of a cell do not depend on the seeds.
        assert!((r.stat("a", "s", "auc").unwrap().mean - 0.80).abs() < 1e-12);
    }
}
