//! Neural matrix factorization (He et al., "Neural Collaborative Filtering", WWW 2017).

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use serde::{Deserialize, Serialize};

use super::{Parts, scalar_tasks, split_tasks, user_item};
use crate::embedding::{EmbeddingTable, Pooling, TableFactory};
use crate::features::FeatureEmbedding;
use crate::layers::{Linear, Mlp, MlpConfig};
use crate::model::{Ctx, Model};

fn d_dim() -> usize {
    16
}
fn d_mlp() -> MlpConfig {
    MlpConfig::new(&[64, 32, 16])
}

/// Hyperparameters of [`NeuMf`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NeuMfConfig {
    /// Width of the GMF user/item vectors (default 16).
    #[serde(default = "d_dim")]
    pub gmf_dim: usize,
    /// Width of the MLP user/item vectors (default 16).
    #[serde(default = "d_dim")]
    pub mlp_dim: usize,
    /// The MLP tower (default hidden `[64, 32, 16]`, ReLU, no dropout).
    #[serde(default = "d_mlp")]
    pub mlp: MlpConfig,
}

impl Default for NeuMfConfig {
    fn default() -> Self {
        Self {
            gmf_dim: d_dim(),
            mlp_dim: d_dim(),
            mlp: d_mlp(),
        }
    }
}

/// GMF (`p_u * q_i`) and an MLP on `[p'_u; q'_i]`, with separate tables (`gmf.emb.*`,
/// `mlp.emb.*`), fused by a linear head with one output per task.
pub struct NeuMf {
    parts: Parts,
    mlp: Mlp,
    head: Linear,
}

impl NeuMf {
    /// Builds NeuMF for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &NeuMfConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let tasks = scalar_tasks(schema, "neumf")?;
        let fields = user_item(schema, "neumf")?;
        let mut parts = Parts::new(schema, device, seed);
        let vs = &mut parts.vs;
        let gmf = FeatureEmbedding::new(
            schema,
            Some(&fields),
            cfg.gmf_dim,
            Pooling::Mean,
            None,
            "gmf",
            factory,
            vs,
        )?;
        let mlp_emb = FeatureEmbedding::new(
            schema,
            Some(&fields),
            cfg.mlp_dim,
            Pooling::Mean,
            None,
            "mlp",
            factory,
            vs,
        )?;
        let mlp = Mlp::new(vs, "mlp.tower", 2 * cfg.mlp_dim, &cfg.mlp, None)?;
        let head = Linear::new(vs, "head", cfg.gmf_dim + mlp.out_dim(), tasks)?;
        parts.features = vec![gmf, mlp_emb];
        Ok(Self { parts, mlp, head })
    }
}

impl Model for NeuMf {
    fn name(&self) -> String {
        "neumf".into()
    }
    fn schema(&self) -> &Schema {
        &self.parts.schema
    }
    fn device(&self) -> &Device {
        self.parts.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let g = self.parts.features[0].forward(batch, ctx.train)?;
        let m = self.parts.features[1].forward(batch, ctx.train)?;
        let gmf = (&g.fields[0] * &g.fields[1])?;
        let tower = self.mlp.forward(&m.concat()?, ctx)?;
        split_tasks(&self.head.forward(&Tensor::cat(&[gmf, tower], 1)?)?)
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
