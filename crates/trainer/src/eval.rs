//! Evaluation of a model on a batch of samples, per task and per slice.

use std::collections::BTreeMap;

use anyhow::Result;
use rec_data::{Batch, Schema, TaskKind};
use rec_metrics::Report;
use rec_nn::Model;
use serde::{Deserialize, Serialize};

/// Metrics of every task: task name -> report (slice -> metrics).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Evaluation {
    /// One report per task, keyed by task name.
    pub tasks: BTreeMap<String, Report>,
}

impl Evaluation {
    /// The value of `metric` on the `all` slice of `task` (with `None`, the first task by name:
    /// the report does not keep the schema's order, so a caller that means the schema's first
    /// task names it, as early stopping does).
    pub fn get(&self, task: Option<&str>, metric: &str) -> Option<f64> {
        let report = match task {
            Some(t) => self.tasks.get(t)?,
            None => self.tasks.values().next()?,
        };
        report.get("all", metric)
    }

    /// The value of `metric` on slice `slice` of `task`.
    pub fn get_slice(&self, task: &str, slice: &str, metric: &str) -> Option<f64> {
        self.tasks.get(task)?.get(slice, metric)
    }
}

impl std::fmt::Display for Evaluation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        for (task, report) in &self.tasks {
            writeln!(f, "task `{task}`")?;
            write!(f, "{report}")?;
        }
        Ok(())
    }
}

/// Predictions of `model` on every sample of `data`, per task (probabilities for binary tasks,
/// values for regression, row-major class probabilities for multi-class), computed in chunks of
/// `batch_size`.
pub fn predict_all(
    model: &mut dyn Model,
    data: &Batch,
    batch_size: usize,
) -> Result<Vec<Vec<f32>>> {
    let tasks = model.schema().tasks.len();
    let mut out = vec![Vec::new(); tasks];
    let mut start = 0;
    while start < data.len() {
        let end = (start + batch_size).min(data.len());
        let chunk = data.range(start, end);
        let preds = rec_nn::predict(model, &chunk)?;
        for (o, p) in out.iter_mut().zip(preds) {
            o.extend(p);
        }
        start = end;
    }
    Ok(out)
}

/// Evaluates `model` on `data`: for every task, the standard metrics on all samples that carry
/// a label for it, on every named slice of the batch, and, when the schema has several
/// scenarios, on each scenario (slices `scenario_0`, `scenario_1`, ...).
///
/// GAUC groups samples by user; samples whose user is out of the vocabulary (ID
/// [`rec_data::OOV`], e.g. new users of a warm start on new data) are left out of it, since
/// they would otherwise all count as one user (see [`gauc_groups`]).
pub fn evaluate(model: &mut dyn Model, data: &Batch, batch_size: usize) -> Result<Evaluation> {
    let preds = predict_all(model, data, batch_size)?;
    evaluate_predictions(&model.schema().clone(), data, &preds)
}

/// [`evaluate`] on predictions already made ([`predict_all`] of a model whose schema is
/// `schema` on `data`).
pub fn evaluate_predictions(
    schema: &Schema,
    data: &Batch,
    preds: &[Vec<f32>],
) -> Result<Evaluation> {
    let users = data.users().map(<[u32]>::to_vec);
    let mut tasks = BTreeMap::new();
    for (t, task) in schema.tasks.iter().enumerate() {
        let labels = &data.labels[t];
        // Keep only samples labelled for this task.
        let keep: Vec<usize> = (0..labels.len()).filter(|&i| !labels[i].is_nan()).collect();
        if keep.is_empty() {
            continue;
        }
        let width = match task.kind {
            TaskKind::Multiclass { classes } => classes,
            _ => 1,
        };
        let all_kept = keep.len() == labels.len();
        let y: Vec<f32> = keep.iter().map(|&i| labels[i]).collect();
        let p: Vec<f32> = if all_kept {
            preds[t].clone()
        } else {
            keep.iter()
                .flat_map(|&i| preds[t][i * width..(i + 1) * width].iter().copied())
                .collect()
        };
        let groups: Option<Vec<u32>> = match &users {
            Some(u) => Some(gauc_groups(
                &keep.iter().map(|&i| u[i]).collect::<Vec<u32>>(),
            )?),
            None => None,
        };
        let mut slices: Vec<(String, Vec<bool>)> = data
            .slices
            .iter()
            .map(|s| (s.name.clone(), keep.iter().map(|&i| s.mask[i]).collect()))
            .collect();
        // With several scenarios, every metric is also reported per scenario.
        if schema.num_scenarios > 1 && schema.scenario_field.is_some() {
            let sc = data.scenarios();
            for s in 0..schema.num_scenarios as u32 {
                slices.push((
                    format!("scenario_{s}"),
                    keep.iter().map(|&i| sc[i] == s).collect(),
                ));
            }
        }
        let slice_refs: Vec<(&str, &[bool])> = slices
            .iter()
            .map(|(n, m)| (n.as_str(), m.as_slice()))
            .collect();
        let report = match task.kind {
            TaskKind::Binary => Report::binary(&p, &y, groups.as_deref(), &slice_refs)?,
            TaskKind::Regression => Report::regression(&p, &y, &slice_refs)?,
            // Labels stay floats: the metric refuses a fractional, negative or too large class
            // instead of truncating it into a valid one.
            TaskKind::Multiclass { classes } => Report::multiclass(&p, classes, &y, &slice_refs)?,
        };
        tasks.insert(task.name.clone(), report);
    }
    Ok(Evaluation { tasks })
}

/// GAUC groups from user IDs: every out-of-vocabulary sample ([`rec_data::OOV`]) gets a group
/// of its own, which has one class and so is skipped by GAUC, instead of all of them forming
/// one group that the average would weigh by its (large) sample count. The own groups count
/// down from `u32::MAX`; a known user ID in that range is an error.
pub fn gauc_groups(users: &[u32]) -> Result<Vec<u32>> {
    let unknown = users.iter().filter(|&&u| u == rec_data::OOV).count() as u64;
    if unknown == 0 {
        return Ok(users.to_vec());
    }
    let first_free = u64::from(u32::MAX) + 1 - unknown;
    if let Some(&u) = users.iter().find(|&&u| u64::from(u) >= first_free) {
        anyhow::bail!(
            "user ID {u} is too large to tell it from the {unknown} out-of-vocabulary users in GAUC"
        );
    }
    let mut next = u32::MAX;
    Ok(users
        .iter()
        .map(|&u| {
            if u == rec_data::OOV {
                next -= 1;
                next + 1
            } else {
                u
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn out_of_vocabulary_users_are_not_one_gauc_group() {
        // Four unknown users (ID 0) whose scores rank perfectly when pooled, and user 5, whose
        // scores rank backwards. Pooled as one group the unknown samples would weigh 4 of 6.
        let users = [0, 0, 0, 0, 5, 5];
        let probs = [0.9, 0.8, 0.2, 0.1, 0.3, 0.7];
        let labels = [1.0, 1.0, 0.0, 0.0, 1.0, 0.0];
        let pooled = rec_metrics::gauc(&probs, &labels, &users).unwrap();
        assert!((pooled - 4.0 / 6.0).abs() < 1e-12, "{pooled}");
        let groups = gauc_groups(&users).unwrap();
        assert_eq!(groups[4..], [5, 5]);
        let mut own = groups[..4].to_vec();
        own.sort_unstable();
        own.dedup();
        assert_eq!(own.len(), 4);
        assert_eq!(rec_metrics::gauc(&probs, &labels, &groups).unwrap(), 0.0);
        // Without unknown users the IDs are the groups; an ID among the own groups is refused.
        assert_eq!(gauc_groups(&[3, 4]).unwrap(), vec![3, 4]);
        assert!(gauc_groups(&[0, u32::MAX]).is_err());
    }
}
