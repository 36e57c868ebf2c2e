//! Base models: MF, NMF, NeuMF, FM, DeepFM and Wide&Deep.
//!
//! Every model is built from a [`Schema`], a hyperparameter struct (serde, documented defaults,
//! unknown fields rejected), a [`TableFactory`](crate::embedding::TableFactory), a device and a
//! seed. A model composes the shared layers ([`FeatureEmbedding`],
//! [`Mlp`](crate::layers::Mlp), [`fm_interaction`](crate::layers::fm_interaction)); its file
//! holds only what is specific to it. It never knows which table kind it holds.
//!
//! Tasks: every model predicts each binary or regression task of the schema (one logit or value
//! per task; multi-class tasks are rejected). MF, NMF and NeuMF use the schema's `user_field`
//! and `item_field`; FM, DeepFM and Wide&Deep use every field (categorical fields through
//! tables, multi-hot and sequence fields pooled, dense fields projected).

mod deepfm;
mod fm;
mod mf;
mod neumf;
mod nmf;
mod wide_deep;

pub use deepfm::{DeepFm, DeepFmConfig};
pub use fm::{Fm, FmConfig};
pub use mf::{Mf, MfConfig};
pub use neumf::{NeuMf, NeuMfConfig};
pub use nmf::Nmf;
pub use wide_deep::{WideDeep, WideDeepConfig};

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Schema, TaskKind};

use crate::embedding::EmbeddingTable;
use crate::features::FeatureEmbedding;
use crate::init::VarStore;

/// Number of tasks of `schema`, checking that each is binary or regression.
pub(crate) fn scalar_tasks(schema: &Schema, model: &str) -> Result<usize> {
    schema
        .validate()
        .map_err(|e| candle_core::Error::Msg(format!("{model}: invalid schema: {e}")))?;
    if schema.tasks.is_empty() {
        candle_core::bail!("{model}: the schema has no task to predict");
    }
    for t in &schema.tasks {
        if let TaskKind::Multiclass { .. } = t.kind {
            candle_core::bail!(
                "{model} predicts binary and regression tasks; task `{}` is multi-class",
                t.name
            );
        }
    }
    Ok(schema.tasks.len())
}

/// The user and item field names of `schema`.
pub(crate) fn user_item<'s>(schema: &'s Schema, model: &str) -> Result<[&'s str; 2]> {
    match (&schema.user_field, &schema.item_field) {
        (Some(u), Some(i)) => Ok([u.as_str(), i.as_str()]),
        _ => candle_core::bail!("{model} needs a schema with `user_field` and `item_field`"),
    }
}

/// Splits `[n, T]` into `T` tensors of shape `[n]`.
pub(crate) fn split_tasks(x: &Tensor) -> Result<Vec<Tensor>> {
    let t = x.dim(1)?;
    (0..t).map(|k| x.narrow(1, k, 1)?.squeeze(1)).collect()
}

/// What every base model holds: its schema, dense variables and feature layers.
pub(crate) struct Parts {
    pub schema: Schema,
    pub vs: VarStore,
    pub features: Vec<FeatureEmbedding>,
}

impl Parts {
    pub fn new(schema: &Schema, device: &Device, seed: u64) -> Self {
        Self {
            schema: schema.clone(),
            vs: VarStore::new(seed, device),
            features: Vec::new(),
        }
    }

    pub fn dense_vars(&self) -> Vec<(String, Var)> {
        self.vs.vars()
    }

    pub fn buffers(&self) -> Vec<(String, Var)> {
        self.vs.buffers()
    }

    pub fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        let mut v: Vec<_> = self.features.iter().flat_map(|f| f.tables()).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }

    pub fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        let mut v: Vec<_> = self
            .features
            .iter_mut()
            .flat_map(|f| f.tables_mut())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests;
