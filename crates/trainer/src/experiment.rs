//! Aggregating experiment results over seeds: model -> slice -> metric -> mean and std.
//!
//! The experiment commands (`cargo xtask experiment ...`) collect one value per
//! (model, slice, metric, seed) here, print the aggregate as one JSON object on the last line of
//! their output (with `--json`), and render it as markdown tables for `docs/results/`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::eval::Evaluation;

/// Mean and sample standard deviation of the values of one cell over seeds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stat {
    /// Mean over seeds.
    pub mean: f64,
    /// Sample standard deviation over seeds (0 for a single seed).
    pub std: f64,
    /// Number of seeds.
    pub n: usize,
    /// The individual values, in the order they were added.
    pub values: Vec<f64>,
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

/// Values collected per model, slice, metric (and seed).
#[derive(Debug, Clone, Default)]
pub struct Results {
    cells: BTreeMap<String, BTreeMap<String, BTreeMap<String, Vec<f64>>>>,
    order: Vec<String>,
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
            .push(value);
    }

    /// Adds every metric of every slice of an evaluation. Slices are named `<slice>` when the
    /// evaluation has one task and `<task>/<slice>` otherwise.
    pub fn add_evaluation(&mut self, model: &str, eval: &Evaluation) {
        let single = eval.tasks.len() == 1;
        for (task, report) in &eval.tasks {
            for (slice, sr) in &report.slices {
                let key = if single {
                    slice.clone()
                } else {
                    format!("{task}/{slice}")
                };
                for (metric, &v) in &sr.metrics {
                    self.add(model, &key, metric, v);
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
                                    .map(|(k, v)| (k.clone(), Stat::from_values(v.clone())))
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
        Some(Stat::from_values(v.clone()))
    }

    /// The per-seed differences `a - b` of one cell, as a [`Stat`]: a paired comparison of two
    /// models trained on the same seeds. `None` unless both have the cell with the same number
    /// of values (values pair up in the order they were added, i.e. by seed).
    pub fn paired(&self, a: &str, b: &str, slice: &str, metric: &str) -> Option<Stat> {
        let va = self.cells.get(a)?.get(slice)?.get(metric)?;
        let vb = self.cells.get(b)?.get(slice)?.get(metric)?;
        if va.len() != vb.len() || va.is_empty() {
            return None;
        }
        Some(Stat::from_values(
            va.iter().zip(vb).map(|(x, y)| x - y).collect(),
        ))
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
}
