//! MMoE (Ma et al., "Modeling Task Relationships in Multi-task Learning with Multi-gate
//! Mixture-of-Experts", KDD 2018) with one gate and one tower per scenario.
//!
//! `K` expert MLPs read the shared input; scenario `s`'s gate is a softmax over the experts
//! computed from the input; its tower reads the gated mixture of the experts' outputs and gives
//! the logit. Experts and towers run as batched matmuls ([`BatchedMlp`]); a sample uses its own
//! scenario's gate and tower, so gate and tower `s` are trained by scenario `s` only, the
//! experts by everyone.

use candle_core::{D, DType, Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};
use rec_nn::layers::{Activation, Linear, MlpConfig, softmax};
use rec_nn::model::{Ctx, Model};
use serde::{Deserialize, Serialize};

use crate::batched::BatchedMlp;
use crate::input::InputLayer;
use crate::nn::VarStore;
use crate::scenario::{Routing, check_schema};

fn d_dim() -> usize {
    16
}
fn d_experts() -> usize {
    4
}
fn d_expert_hidden() -> Vec<usize> {
    vec![128, 64]
}
fn d_tower_hidden() -> Vec<usize> {
    vec![32]
}
fn d_attention() -> MlpConfig {
    MlpConfig::new(&[32])
}

/// Hyperparameters of [`Mmoe`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MmoeConfig {
    /// Width of every embedding vector (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
    /// Number of experts (default 4).
    #[serde(default = "d_experts")]
    pub experts: usize,
    /// Hidden widths of every expert (default `[128, 64]`).
    #[serde(default = "d_expert_hidden")]
    pub expert_hidden: Vec<usize>,
    /// Hidden widths of every tower (default `[32]`).
    #[serde(default = "d_tower_hidden")]
    pub tower_hidden: Vec<usize>,
    /// Activation (default `relu`).
    #[serde(default)]
    pub activation: Activation,
    /// Dropout after every hidden layer (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Scoring MLP of the attention over a behaviour sequence (default hidden `[32]`).
    #[serde(default = "d_attention")]
    pub attention: MlpConfig,
    /// Keep at most this many most recent behaviours (default: all the data has).
    #[serde(default)]
    pub max_history: Option<usize>,
}

impl Default for MmoeConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
            experts: d_experts(),
            expert_hidden: d_expert_hidden(),
            tower_hidden: d_tower_hidden(),
            activation: Activation::Relu,
            dropout: 0.0,
            attention: d_attention(),
            max_history: None,
        }
    }
}

/// See the [module documentation](self).
pub struct Mmoe {
    schema: Schema,
    m: usize,
    k: usize,
    vs: VarStore,
    input: InputLayer,
    experts: BatchedMlp,
    gates: Linear,
    towers: BatchedMlp,
}

impl Mmoe {
    /// Builds MMoE for `schema` (one binary task), one gate and tower per scenario.
    pub fn new(
        schema: &Schema,
        cfg: &MmoeConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let m = check_schema(schema, "mmoe")?;
        if cfg.experts == 0 || cfg.expert_hidden.is_empty() {
            candle_core::bail!("mmoe needs at least one expert with a hidden layer");
        }
        let mut vs = VarStore::new(seed, device);
        let input = InputLayer::new(
            schema,
            cfg.dim,
            cfg.pooling,
            &cfg.attention,
            cfg.max_history,
            "",
            factory,
            &mut vs,
        )?;
        let w = input.width();
        let experts = BatchedMlp::new(
            &mut vs,
            "experts",
            cfg.experts,
            w,
            &cfg.expert_hidden,
            cfg.activation,
            cfg.dropout,
            None,
        )?;
        let gates = Linear::new(&mut vs, "gates", w, m * cfg.experts)?;
        let towers = BatchedMlp::new(
            &mut vs,
            "towers",
            m,
            experts.out_dim(),
            &cfg.tower_hidden,
            cfg.activation,
            cfg.dropout,
            Some(1),
        )?;
        Ok(Self {
            schema: schema.clone(),
            m,
            k: cfg.experts,
            vs,
            input,
            experts,
            gates,
            towers,
        })
    }
}

/// The experts, the own scenario's gate over them and the own scenario's tower: MMoE after
/// the input layer (a separate function so that it can be checked in `f64`).
struct MixtureParts<'a> {
    experts: &'a BatchedMlp,
    gates: &'a Linear,
    towers: &'a BatchedMlp,
    k: usize,
}

impl MixtureParts<'_> {
    /// The logit `[n]` of every sample of `x: [n, w]`.
    fn forward(&self, x: &Tensor, routing: &Routing, ctx: &mut Ctx) -> Result<Tensor> {
        let (n, m) = (routing.len(), routing.num_scenarios);
        let e = self.experts.forward_shared(x, ctx)?; // [K, n, h]
        // The own scenario's gate logits: [n, M, K] -> [n, K].
        let g = self.gates.forward(x)?.reshape((n, m, self.k))?;
        let g = g
            .broadcast_mul(&routing.one_hot.unsqueeze(D::Minus1)?)?
            .sum(1)?;
        let g = softmax(&g, D::Minus1)?; // [n, K]
        let mixed = e.broadcast_mul(&g.t()?.unsqueeze(D::Minus1)?)?.sum(0)?; // [n, h]
        let t = self.towers.forward_shared(&mixed, ctx)?; // [M, n, 1]
        routing.select_own(&t)?.squeeze(1)
    }
}

impl Model for Mmoe {
    fn name(&self) -> String {
        "mmoe".into()
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn device(&self) -> &Device {
        self.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let routing = Routing::of_batch(batch, self.m, DType::F32, self.vs.device())?;
        let x = self.input.forward(batch, ctx)?.concat()?;
        let parts = MixtureParts {
            experts: &self.experts,
            gates: &self.gates,
            towers: &self.towers,
            k: self.k,
        };
        Ok(vec![parts.forward(&x, &routing, ctx)?])
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.vs.vars()
    }
    fn buffers(&self) -> Vec<(String, Var)> {
        self.vs.buffers()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.input.tables()
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.input.tables_mut()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_layer, input, store};
    use rec_nn::gradcheck::weighted_sum;

    /// Experts, gates and towers in `f64` (3 scenarios, 2 experts: a swapped `[M, K]` axis
    /// cannot pass; input width 4) with every parameter random, so that the gate biases and
    /// tower biases matter too.
    fn parts(vs: &mut VarStore) -> Result<(BatchedMlp, Linear, BatchedMlp)> {
        let (m, k, w) = (3, 2, 4);
        let experts = BatchedMlp::new(vs, "experts", k, w, &[5], Activation::Tanh, 0.0, None)?;
        let gates = Linear::new(vs, "gates", w, m * k)?;
        let towers = BatchedMlp::new(vs, "towers", m, 5, &[2], Activation::Tanh, 0.0, Some(1))?;
        for (i, (_, v)) in vs.vars().into_iter().enumerate() {
            v.set(input(v.dims(), 40 + i as u64)?.as_tensor())?;
        }
        Ok((experts, gates, towers))
    }

    #[test]
    fn gated_mixture_is_each_samples_own_gate_and_tower() -> Result<()> {
        let mut vs = store();
        let (experts, gates, towers) = parts(&mut vs)?;
        let p = MixtureParts {
            experts: &experts,
            gates: &gates,
            towers: &towers,
            k: 2,
        };
        let ids = vec![2u32, 0, 1, 0, 2, 1];
        let r = Routing::new(ids.clone(), 3, DType::F64, &Device::Cpu)?;
        let x = input(&[6, 4], 1)?;
        let y = p
            .forward(x.as_tensor(), &r, &mut Ctx::eval())?
            .to_vec1::<f64>()?;
        // Sample by sample: softmax of the own scenario's K gate logits, the experts mixed by
        // it, then the own scenario's tower.
        for (i, &s) in ids.iter().enumerate() {
            let s = s as usize;
            let xi = x.as_tensor().narrow(0, i, 1)?;
            let logits = gates.forward(&xi)?.flatten_all()?.to_vec1::<f64>()?;
            let own = &logits[s * 2..s * 2 + 2];
            let z: f64 = own.iter().map(|l| l.exp()).sum();
            let e = experts.forward_shared(&xi, &mut Ctx::eval())?; // [K, 1, h]
            let mut mixed: Option<Tensor> = None;
            for (k, l) in own.iter().enumerate() {
                let term = e.get(k)?.affine(l.exp() / z, 0.0)?;
                mixed = Some(match mixed {
                    None => term,
                    Some(m) => (m + term)?,
                });
            }
            let t = towers.forward_shared(&mixed.unwrap(), &mut Ctx::eval())?;
            let expect = t.get(s)?.flatten_all()?.to_vec1::<f64>()?[0];
            assert!(
                (y[i] - expect).abs() < 1e-12,
                "sample {i}: {} vs {expect}",
                y[i]
            );
        }
        Ok(())
    }

    #[test]
    fn gated_mixture_finite_difference_gradients() -> Result<()> {
        let mut vs = store();
        let (experts, gates, towers) = parts(&mut vs)?;
        let p = MixtureParts {
            experts: &experts,
            gates: &gates,
            towers: &towers,
            k: 2,
        };
        // Every scenario present, unsorted (the model's routing is never sorted).
        let r = Routing::new(vec![2, 0, 1, 0, 2, 1], 3, DType::F64, &Device::Cpu)?;
        let x = input(&[6, 4], 1)?;
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&p.forward(x.as_tensor(), &r, &mut Ctx::eval())?, 3)
        })
    }
}
