//! Matrix factorization (Koren, Bell & Volinsky 2009) with user, item and global biases.

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use serde::{Deserialize, Serialize};

use super::{Parts, scalar_tasks, split_tasks, user_item};
use crate::embedding::{EmbeddingTable, Pooling, TableFactory};
use crate::features::FeatureEmbedding;
use crate::init::Init;
use crate::model::{Ctx, Model};

fn d_dim() -> usize {
    32
}
fn d_true() -> bool {
    true
}

/// Hyperparameters of [`Mf`] (and [`Nmf`](super::Nmf)).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MfConfig {
    /// Width of the user and item factors (default 32).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Learn a bias per user and per item (default true).
    #[serde(default = "d_true")]
    pub biases: bool,
    /// Starting value of the global bias (default 0; the mean training rating is a good start
    /// for rating prediction).
    #[serde(default)]
    pub global_bias: f64,
}

impl Default for MfConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            biases: true,
            global_bias: 0.0,
        }
    }
}

/// `r(u, i) = <p_u, q_i> + b_u + b_i + b`. The factor tables are `emb.{user}` and
/// `emb.{item}`, the bias tables `lin.{user}` and `lin.{item}` (one column per task), the
/// global bias the dense variable `bias`.
pub struct Mf {
    parts: Parts,
    bias: Var,
    non_negative: bool,
}

impl Mf {
    /// Builds MF for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &MfConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Self::build(schema, cfg, factory, device, seed, false)
    }

    pub(super) fn build(
        schema: &Schema,
        cfg: &MfConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
        non_negative: bool,
    ) -> Result<Self> {
        let name = if non_negative { "nmf" } else { "mf" };
        if !cfg.global_bias.is_finite() {
            candle_core::bail!(
                "{name}: `global_bias` must be a finite number, got {}",
                cfg.global_bias
            );
        }
        let tasks = scalar_tasks(schema, name)?;
        let fields = user_item(schema, name)?;
        let mut parts = Parts::new(schema, device, seed);
        let linear = cfg.biases.then_some(tasks);
        let fe = FeatureEmbedding::new(
            schema,
            Some(&fields),
            cfg.dim,
            Pooling::Mean,
            linear,
            "",
            factory,
            &mut parts.vs,
        )?;
        parts.features.push(fe);
        let bias = parts.vs.var(
            "bias",
            tasks,
            Init::Const {
                value: cfg.global_bias,
            },
        )?;
        let mut mf = Self {
            parts,
            bias,
            non_negative,
        };
        mf.clamp_factors()?;
        Ok(mf)
    }

    /// Projects the factor tables onto the non-negative orthant (NMF only).
    fn clamp_factors(&mut self) -> Result<()> {
        if self.non_negative {
            for (_, t) in self.parts.features[0].embeddings_mut().named_mut() {
                t.clamp_params(0.0, f32::INFINITY)?;
            }
        }
        Ok(())
    }
}

impl Model for Mf {
    fn name(&self) -> String {
        if self.non_negative { "nmf" } else { "mf" }.to_string()
    }
    fn schema(&self) -> &Schema {
        &self.parts.schema
    }
    fn device(&self) -> &Device {
        self.parts.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let out = self.parts.features[0].forward(batch, ctx.train)?;
        let dot = (&out.fields[0] * &out.fields[1])?.sum_keepdim(1)?;
        let mut score = dot.broadcast_add(self.bias.as_tensor())?;
        if let Some(l) = out.linear {
            score = (score + l)?;
        }
        split_tasks(&score)
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
    fn after_step(&mut self, _step: u64) -> Result<()> {
        self.clamp_factors()
    }
}
