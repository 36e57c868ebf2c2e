//! The Shared and Separate baselines.
//!
//! - [`Shared`]: one network for every scenario; the scenario id is an ordinary feature (the
//!   scenario field gets an embedding like any other field).
//! - [`Separate`]: one network per scenario, each trained on its own scenario's samples only.
//!   It routes: the rows of each scenario are gathered into a sub-batch, scored by that
//!   scenario's network, and the logits are put back in the batch's order. No parameter is
//!   shared, so no gradient crosses scenarios; a scenario absent from a batch leaves its
//!   network untouched (the dense optimizer skips variables without a gradient, tables update
//!   only the rows they looked up). Its memory is `M` times Shared's.
//!
//! Both use the crate's [`InputLayer`] (field embeddings, DIN attention over a behaviour
//! sequence) and an MLP, with the same hidden widths as SAML's auxiliary network in
//! `cargo xtask experiment saml` (SAML's branches there are narrower, `branch_hidden`).

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};
use rec_nn::layers::{Mlp, MlpConfig};
use rec_nn::model::{Ctx, Model};
use serde::{Deserialize, Serialize};

use crate::input::InputLayer;
use crate::nn::{VarStore, join};
use crate::scenario::{check_schema, scenario_ids};

fn d_dim() -> usize {
    16
}
fn d_attention() -> MlpConfig {
    MlpConfig::new(&[32])
}

/// Hyperparameters of [`Shared`] and [`Separate`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DnnConfig {
    /// Width of every embedding vector (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
    /// The MLP (default hidden `[128, 64]`, ReLU, no dropout).
    #[serde(default)]
    pub mlp: MlpConfig,
    /// Scoring MLP of the attention over a behaviour sequence (default hidden `[32]`).
    #[serde(default = "d_attention")]
    pub attention: MlpConfig,
    /// Keep at most this many most recent behaviours (default: all the data has).
    #[serde(default)]
    pub max_history: Option<usize>,
}

impl Default for DnnConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
            mlp: MlpConfig::default(),
            attention: d_attention(),
            max_history: None,
        }
    }
}

/// Input layer and MLP: one logit per sample.
struct Dnn {
    input: InputLayer,
    mlp: Mlp,
}

impl Dnn {
    fn new(
        schema: &Schema,
        cfg: &DnnConfig,
        prefix: &str,
        factory: &mut TableFactory<'_>,
        vs: &mut VarStore,
    ) -> Result<Self> {
        let input = InputLayer::new(
            schema,
            cfg.dim,
            cfg.pooling,
            &cfg.attention,
            cfg.max_history,
            prefix,
            factory,
            vs,
        )?;
        let mlp = Mlp::new(vs, &join(prefix, "mlp"), input.width(), &cfg.mlp, Some(1))?;
        Ok(Self { input, mlp })
    }

    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Tensor> {
        let x = self.input.forward(batch, ctx)?.concat()?;
        self.mlp.forward(&x, ctx)?.squeeze(1)
    }
}

/// See the [module documentation](self).
pub struct Shared {
    schema: Schema,
    vs: VarStore,
    net: Dnn,
}

impl Shared {
    /// Builds the Shared baseline for `schema` (one binary task).
    pub fn new(
        schema: &Schema,
        cfg: &DnnConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        check_schema(schema, "shared")?;
        let mut vs = VarStore::new(seed, device);
        let net = Dnn::new(schema, cfg, "", factory, &mut vs)?;
        Ok(Self {
            schema: schema.clone(),
            vs,
            net,
        })
    }
}

impl Model for Shared {
    fn name(&self) -> String {
        "shared".into()
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn device(&self) -> &Device {
        self.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        Ok(vec![self.net.forward(batch, ctx)?])
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.vs.vars()
    }
    fn buffers(&self) -> Vec<(String, Var)> {
        self.vs.buffers()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.net.input.tables()
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.net.input.tables_mut()
    }
}

/// See the [module documentation](self). Network `m` has its variables and tables under
/// `s{m}.`.
pub struct Separate {
    schema: Schema,
    vs: VarStore,
    nets: Vec<Dnn>,
}

impl Separate {
    /// Builds one network per scenario of `schema` (one binary task).
    pub fn new(
        schema: &Schema,
        cfg: &DnnConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let m = check_schema(schema, "separate")?;
        let mut vs = VarStore::new(seed, device);
        let nets = (0..m)
            .map(|s| Dnn::new(schema, cfg, &format!("s{s}"), factory, &mut vs))
            .collect::<Result<Vec<_>>>()?;
        Ok(Self {
            schema: schema.clone(),
            vs,
            nets,
        })
    }
}

impl Model for Separate {
    fn name(&self) -> String {
        "separate".into()
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn device(&self) -> &Device {
        self.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let ids = scenario_ids(batch, self.nets.len())?;
        let mut rows: Vec<Vec<usize>> = vec![Vec::new(); self.nets.len()];
        for (i, &s) in ids.iter().enumerate() {
            rows[s as usize].push(i);
        }
        let mut parts = Vec::new();
        let mut order = Vec::with_capacity(ids.len());
        for (net, r) in self.nets.iter_mut().zip(&rows) {
            if r.is_empty() {
                continue;
            }
            parts.push(net.forward(&batch.gather(r), ctx)?);
            order.extend_from_slice(r);
        }
        if parts.is_empty() {
            return Ok(vec![Tensor::zeros(
                0,
                candle_core::DType::F32,
                self.device(),
            )?]);
        }
        // `order[j]` is the batch row of the j-th stacked logit; invert it.
        let mut inverse = vec![0u32; order.len()];
        for (j, &i) in order.iter().enumerate() {
            inverse[i] = j as u32;
        }
        let stacked = Tensor::cat(&parts, 0)?;
        let idx = Tensor::from_vec(inverse, order.len(), stacked.device())?;
        Ok(vec![stacked.index_select(&idx, 0)?])
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.vs.vars()
    }
    fn buffers(&self) -> Vec<(String, Var)> {
        self.vs.buffers()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        let mut v: Vec<_> = self.nets.iter().flat_map(|n| n.input.tables()).collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        let mut v: Vec<_> = self
            .nets
            .iter_mut()
            .flat_map(|n| n.input.tables_mut())
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}
