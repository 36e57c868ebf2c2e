//! Factorization machine (Rendle, ICDM 2010) over every field of the schema.

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use serde::{Deserialize, Serialize};

use super::{Parts, scalar_tasks, split_tasks};
use crate::embedding::{EmbeddingTable, Pooling, TableFactory};
use crate::features::FeatureEmbedding;
use crate::init::Init;
use crate::layers::fm_interaction;
use crate::model::{Ctx, Model};

fn d_dim() -> usize {
    16
}

/// Hyperparameters of [`Fm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FmConfig {
    /// Width of the field vectors (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot and sequence fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
}

impl Default for FmConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
        }
    }
}

/// `y = b + sum_i w_i + sum_{i<j} <v_i, v_j>`; the pairwise term is shared by the tasks, the
/// bias and first-order terms have one column per task.
pub struct Fm {
    parts: Parts,
    bias: Var,
}

impl Fm {
    /// Builds FM for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &FmConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let tasks = scalar_tasks(schema, "fm")?;
        let mut parts = Parts::new(schema, device, seed);
        let fe = FeatureEmbedding::new(
            schema,
            None,
            cfg.dim,
            cfg.pooling,
            Some(tasks),
            "",
            factory,
            &mut parts.vs,
        )?;
        parts.features.push(fe);
        let bias = parts.vs.var("bias", tasks, Init::Zeros)?;
        Ok(Self { parts, bias })
    }
}

impl Model for Fm {
    fn name(&self) -> String {
        "fm".into()
    }
    fn schema(&self) -> &Schema {
        &self.parts.schema
    }
    fn device(&self) -> &Device {
        self.parts.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let out = self.parts.features[0].forward(batch, ctx.train)?;
        let pair = fm_interaction(&out.stacked()?)?.unsqueeze(1)?;
        let lin = out.linear.expect("FM has first-order terms");
        split_tasks(
            &(lin
                .broadcast_add(&pair)?
                .broadcast_add(self.bias.as_tensor()))?,
        )
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.parts.dense_vars()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.parts.tables()
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.parts.tables_mut()
    }
}
