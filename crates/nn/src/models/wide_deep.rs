//! Wide & Deep (Cheng et al., DLRS 2016).

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use serde::{Deserialize, Serialize};

use super::{Parts, scalar_tasks, split_tasks};
use crate::embedding::{EmbeddingTable, Pooling, TableFactory};
use crate::features::FeatureEmbedding;
use crate::layers::{Mlp, MlpConfig};
use crate::model::{Ctx, Model};

fn d_dim() -> usize {
    16
}

/// Hyperparameters of [`WideDeep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct WideDeepConfig {
    /// Width of the field vectors of the deep part (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot and sequence fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
    /// The deep part (default hidden `[128, 64]`, ReLU, no dropout).
    #[serde(default)]
    pub mlp: MlpConfig,
}

impl Default for WideDeepConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
            mlp: MlpConfig::default(),
        }
    }
}

/// `y = wide (first-order terms of every field) + deep (MLP on the concatenated field
/// vectors)`, one output per task.
pub struct WideDeep {
    parts: Parts,
    mlp: Mlp,
}

impl WideDeep {
    /// Builds Wide&Deep for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &WideDeepConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let tasks = scalar_tasks(schema, "wide_deep")?;
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

impl Model for WideDeep {
    fn name(&self) -> String {
        "widedeep".into()
    }
    /// Checkpoints saved before the name became the registry's still load.
    fn former_names(&self) -> &[&str] {
        &["wide_deep"]
    }
    fn schema(&self) -> &Schema {
        &self.parts.schema
    }
    fn device(&self) -> &Device {
        self.parts.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let out = self.parts.features[0].forward(batch, ctx.train)?;
        let deep = self.mlp.forward(&out.concat()?, ctx)?;
        let wide = out.linear.expect("Wide&Deep has first-order terms");
        split_tasks(&(wide + deep)?)
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
