//! DeepFM (Guo et al., IJCAI 2017): FM and an MLP over shared field embeddings.

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use serde::{Deserialize, Serialize};

use super::{Parts, scalar_tasks, split_tasks};
use crate::embedding::{EmbeddingTable, Pooling, TableFactory};
use crate::features::FeatureEmbedding;
use crate::layers::{Mlp, MlpConfig, fm_interaction};
use crate::model::{Ctx, Model};

fn d_dim() -> usize {
    16
}

/// Hyperparameters of [`DeepFm`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeepFmConfig {
    /// Width of the field vectors (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot and sequence fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
    /// The deep part (default hidden `[128, 64]`, ReLU, no dropout).
    #[serde(default)]
    pub mlp: MlpConfig,
}

impl Default for DeepFmConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
            mlp: MlpConfig::default(),
        }
    }
}

/// `y = first-order + FM pairwise + MLP(concatenated field vectors)`; the MLP's output layer
/// has one unit per task (and carries the bias), the pairwise term is shared by the tasks.
pub struct DeepFm {
    parts: Parts,
    mlp: Mlp,
}

impl DeepFm {
    /// Builds DeepFM for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &DeepFmConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let tasks = scalar_tasks(schema, "deepfm")?;
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
        let mlp = Mlp::new(
            &mut parts.vs,
            "mlp",
            fe.num_fields() * cfg.dim,
            &cfg.mlp,
            Some(tasks),
        )?;
        parts.features.push(fe);
        Ok(Self { parts, mlp })
    }
}

impl Model for DeepFm {
    fn name(&self) -> String {
        "deepfm".into()
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
        let deep = self.mlp.forward(&out.concat()?, ctx)?;
        let lin = out.linear.expect("DeepFM has first-order terms");
        split_tasks(&(lin + deep)?.broadcast_add(&pair)?)
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.parts.dense_vars()
    }
    fn buffers(&self) -> Vec<(String, Var)> {
        self.parts.buffers()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.parts.tables()
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.parts.tables_mut()
    }
}
