//! Exact loss-based reassignment: every entity moves to the candidate cluster under which the
//! model's own loss on the entity's training interactions is smallest. \[ref\] (the criterion)
//!
//! The loss of entity `i` under cluster `c` is measured, not modelled: the table serves every
//! entity its `j`-th candidate ([`ClusteredEmbedding::set_probe`]), the model predicts all
//! training samples, and each sample's loss (binary cross-entropy or squared error, summed over
//! the tasks it is labelled for) is added to the entity of the table's field in that sample.
//! One forward pass over the data per candidate rank, whatever the number of entities.
//!
//! Exact means: given every other parameter (the other tables, the dense network) as it is,
//! and for fields that appear once per sample. When a field's table also serves other fields
//! of the sample (a behaviour sequence sharing the item vocabulary), all their entities change
//! together in a pass, and the attribution is approximate.

use candle_core::Result;
use rec_data::{Batch, TaskKind};
use rec_nn::EmbeddingTable;
use rec_nn::model::{Ctx, Model};

use crate::config::Reassign;
use crate::table::ClusteredEmbedding;

/// Per-sample loss of every output: binary cross-entropy for binary tasks, squared error for
/// regression, times the sample's weight when the batch has weights (as in training);
/// unlabelled (NaN) entries add nothing.
pub fn sample_losses(model: &mut dyn Model, batch: &Batch) -> Result<Vec<f64>> {
    let kinds: Vec<TaskKind> = model.schema().tasks.iter().map(|t| t.kind).collect();
    let outs = model.forward(batch, &mut Ctx::eval())?;
    let mut loss = vec![0f64; batch.len()];
    for (t, (kind, out)) in kinds.iter().zip(outs).enumerate() {
        let o = out
            .to_dtype(candle_core::DType::F32)?
            .flatten_all()?
            .to_vec1::<f32>()?;
        let y = &batch.labels[t];
        for i in 0..batch.len() {
            if y[i].is_nan() {
                continue;
            }
            let (x, yi) = (o[i] as f64, y[i] as f64);
            loss[i] += match kind {
                TaskKind::Binary => x.max(0.0) - x * yi + (-x.abs()).exp().ln_1p(),
                TaskKind::Regression => (x - yi).powi(2),
                TaskKind::Multiclass { .. } => {
                    candle_core::bail!("exact reassignment supports binary and regression tasks")
                }
            };
        }
    }
    if let Some(w) = &batch.weights {
        for (l, &wi) in loss.iter_mut().zip(w) {
            *l *= f64::from(wi);
        }
    }
    Ok(loss)
}

fn cel_mut<'a>(model: &'a mut dyn Model, name: &str) -> Option<&'a mut ClusteredEmbedding> {
    model
        .tables_mut()
        .into_iter()
        .find(|(n, _)| n == name)
        .and_then(|(_, t)| t.as_any_mut())
        .and_then(|a| a.downcast_mut::<ClusteredEmbedding>())
}

/// Names of the model's clustered tables.
pub fn cel_tables(model: &dyn Model) -> Vec<String> {
    model
        .tables()
        .into_iter()
        .filter(|(_, t)| t.as_any().downcast_ref::<ClusteredEmbedding>().is_some())
        .map(|(n, _)| n)
        .collect()
}

/// Runs [`reassign_exact`] for every clustered table whose schedule asks for it (tables
/// configured with `reassign = { kind = "exact" }`). Call it after every training step; it
/// does nothing on other steps. Returns the number of entities moved.
pub fn reassign_due(model: &mut dyn Model, train: &Batch, batch_size: usize) -> Result<usize> {
    let mut moved = 0;
    for name in cel_tables(model) {
        let due = model
            .tables()
            .into_iter()
            .find(|(n, _)| *n == name)
            .and_then(|(_, t)| {
                t.as_any()
                    .downcast_ref::<ClusteredEmbedding>()
                    .map(|c| c.reassign_due())
            })
            .unwrap_or(false);
        if due {
            moved += reassign_exact(model, &name, train, batch_size)?;
        }
    }
    Ok(moved)
}

/// Exact reassignment of the clustered table `name` from the training samples `train`,
/// evaluated in chunks of `batch_size`. Candidates per entity as the table's configuration
/// says (all clusters by default). Moves go through the stabilizers
/// ([`ClusteredEmbedding::apply_moves`]). Also records each cluster's total loss (for the
/// `loss` split choice). Returns the number of entities moved.
pub fn reassign_exact(
    model: &mut dyn Model,
    name: &str,
    train: &Batch,
    batch_size: usize,
) -> Result<usize> {
    let not_cel = || candle_core::Error::Msg(format!("`{name}` is not a clustered table"));
    let (field, ncand, curvature, vocab, k) = {
        let t = cel_mut(model, name).ok_or_else(not_cel)?;
        let (c, curv) = match t.config().reassign {
            Reassign::Exact {
                candidates,
                curvature,
            } => (candidates, curvature),
            Reassign::Approx { curvature } => (0, curvature),
            Reassign::None => (0, 1.0),
        };
        (t.field().to_string(), c, curv, t.vocab(), t.num_clusters())
    };
    let ids = train
        .ids(&field)
        .ok_or_else(|| {
            candle_core::Error::Msg(format!(
                "exact reassignment of `{name}` needs the categorical column `{field}`"
            ))
        })?
        .to_vec();
    // Entities present in the data, and their candidate lists.
    let mut present = vec![false; vocab];
    for &i in &ids {
        if (i as usize) < vocab {
            present[i as usize] = true;
        }
    }
    let ents: Vec<u32> = (0..vocab as u32).filter(|&e| present[e as usize]).collect();
    let (cands, base): (Vec<Vec<u32>>, Vec<u32>) = {
        let t = cel_mut(model, name).ok_or_else(not_cel)?;
        (
            ents.iter()
                .map(|&e| t.candidates(e, ncand, curvature))
                .collect(),
            t.assignment(),
        )
    };
    let ranks = cands.iter().map(Vec::len).max().unwrap_or(0);
    let mut slot = vec![u32::MAX; vocab];
    for (s, &e) in ents.iter().enumerate() {
        slot[e as usize] = s as u32;
    }
    // cost[j][s]: summed loss of entity s's training samples with it in its j-th candidate.
    let mut cost = vec![vec![0f64; ents.len()]; ranks];
    let result = (|| -> Result<()> {
        for (j, cost_j) in cost.iter_mut().enumerate() {
            let mut probe = base.clone();
            for (s, &e) in ents.iter().enumerate() {
                probe[e as usize] = *cands[s].get(j).unwrap_or(&cands[s][0]);
            }
            cel_mut(model, name)
                .ok_or_else(not_cel)?
                .set_probe(Some(probe))?;
            let mut start = 0;
            while start < train.len() {
                let end = (start + batch_size).min(train.len());
                let chunk = train.range(start, end);
                let l = sample_losses(model, &chunk)?;
                for (k2, &li) in l.iter().enumerate() {
                    let e = ids[start + k2] as usize;
                    if e < vocab {
                        cost_j[slot[e] as usize] += li;
                    }
                }
                start = end;
            }
        }
        Ok(())
    })();
    let t = cel_mut(model, name).ok_or_else(not_cel)?;
    t.set_probe(None)?;
    result?;
    let mut cluster_loss = vec![0f64; k];
    let mut moves = Vec::new();
    for (s, &e) in ents.iter().enumerate() {
        cluster_loss[cands[s][0] as usize] += cost[0][s];
        let mut best = 0;
        for j in 1..cands[s].len() {
            if cost[j][s] < cost[best][s] - 1e-12 {
                best = j;
            }
        }
        if best != 0 {
            moves.push((e, cands[s][best]));
        }
    }
    t.set_cluster_losses(cluster_loss);
    t.apply_moves(&moves)
}
