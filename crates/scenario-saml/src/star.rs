//! STAR (Sheng et al., "One Model to Serve All: Star Topology Adaptive Recommender for
//! Multi-Domain CTR Prediction", CIKM 2021).
//!
//! - Star topology fully-connected network: layer `k` of scenario `s` has the weight
//!   `W_k * W_k^s` (elementwise) and the bias `b_k + b_k^s`; the shared `W_k` carries what all
//!   scenarios have in common. Initialisation [ours; the paper does not say]: the shared
//!   weights as an ordinary layer, the scenario weights at 1 and biases at 0, so training starts
//!   from one shared network. `star_topology = false` [ours, an ablation] leaves the
//!   per-scenario factors out: plain shared layers.
//! - Partitioned normalization ([`PartitionedNorm`]): batch normalization whose statistics are
//!   computed per scenario (running statistics per scenario for evaluation), with
//!   `gamma * gamma_s` and `beta + beta_s`. Applied to the input and after every hidden linear
//!   layer (before the activation).
//! - Auxiliary network: a small MLP over the scenario indicator's embedding whose logit is added
//!   to the main logit (the paper also feeds "features depicting the domain"; the data here have
//!   none besides the indicator).
//! - The scenario indicator feeds the auxiliary network only, not the star network, whenever
//!   there is an auxiliary network or partitioned normalization (the paper's figure feeds it to
//!   the auxiliary network). Under partitioned normalization it could not enter the star network
//!   anyway: within one scenario its vector is a constant, which the per-scenario batch
//!   statistics map to exactly 0 in training, while in evaluation the running statistics (a
//!   variance decayed towards 0, a mean lagging the trained vector) would turn it into a large
//!   offset multiplied by first-layer weights that never got a gradient.
//!
//! The pitfalls of public re-implementations are avoided: the output logit has no ReLU, the
//! normalization statistics are per scenario (and running ones are used in evaluation), and the
//! trainer evaluates the best validation checkpoint, not the last.
//!
//! Every scenario's layer is computed for every sample as one batched matmul, and each sample
//! keeps its own scenario's result (`M` times the work of one layer; simple and loop-free for the
//! few scenarios of a multi-scenario setting).

use candle_core::{D, DType, Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};
use rec_nn::layers::{Activation, Mlp, MlpConfig, dropout};
use rec_nn::model::{Ctx, Model};
use serde::{Deserialize, Serialize};

use crate::batched::{apply_shared, stacked_var};
use crate::input::InputLayer;
use crate::nn::{Init, VarStore, activation_init, join};
use crate::scenario::{Routing, check_schema};

/// Batch normalization with per-scenario statistics and per-scenario scale and shift.
///
/// Training: each sample is normalized with the mean and (biased) variance of its scenario's
/// samples in the batch, and the running statistics of the scenarios present (with at least two
/// samples) move by `momentum` (unbiased variance). A scenario with a single sample in the
/// batch [ours; the paper does not say] is normalized with its running statistics instead: its
/// batch statistics would map the sample to `beta + beta_s` whatever it is, and give it no
/// gradient below the normalization (with many scenarios and small batches that drops many
/// samples). Evaluation uses the running statistics of the sample's scenario. Output
/// `(gamma * gamma_s) * x_hat + (beta + beta_s)`.
/// Variables `{prefix}.gamma`, `.beta`, `.gamma_s`, `.beta_s`; buffers `.running_mean`,
/// `.running_var` (`[M, dim]`).
pub struct PartitionedNorm {
    gamma: Var,
    beta: Var,
    gamma_s: Var,
    beta_s: Var,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

impl PartitionedNorm {
    /// A partitioned normalization of width `dim` over `m` scenarios.
    pub fn new(vs: &mut VarStore, prefix: &str, m: usize, dim: usize) -> Result<Self> {
        Ok(Self {
            gamma: vs.var(&join(prefix, "gamma"), dim, Init::Ones)?,
            beta: vs.var(&join(prefix, "beta"), dim, Init::Zeros)?,
            gamma_s: vs.var(&join(prefix, "gamma_s"), (m, dim), Init::Ones)?,
            beta_s: vs.var(&join(prefix, "beta_s"), (m, dim), Init::Zeros)?,
            running_mean: vs.buffer(&join(prefix, "running_mean"), (m, dim), Init::Zeros)?,
            running_var: vs.buffer(&join(prefix, "running_var"), (m, dim), Init::Ones)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// The running means and variances, `[M, dim]` each.
    pub fn running_stats(&self) -> (&Var, &Var) {
        (&self.running_mean, &self.running_var)
    }

    /// Normalizes `x: [n, dim]` by scenario.
    pub fn forward(&self, x: &Tensor, routing: &Routing, train: bool) -> Result<Tensor> {
        let oh = &routing.one_hot; // [n, M]
        let (mean_i, var_i) = if train {
            let count = crate::scenario::scenario_counts(&routing.ids, oh.dim(1)?);
            let denom: Vec<f64> = count.iter().map(|&c| c.max(1) as f64).collect();
            let denom =
                Tensor::from_vec(denom, (count.len(), 1), x.device())?.to_dtype(x.dtype())?;
            let mean = oh.t()?.matmul(x)?.broadcast_div(&denom)?; // [M, dim]
            let mean_i = oh.matmul(&mean)?; // [n, dim]
            let xc = (x - &mean_i)?;
            let var = oh.t()?.matmul(&xc.sqr()?)?.broadcast_div(&denom)?; // [M, dim]
            self.update_running(&mean, &var, &count)?;
            if count.iter().all(|&c| c != 1) {
                (mean_i, oh.matmul(&var)?)
            } else {
                // Per scenario, the batch's statistics (two samples or more) or the running
                // ones, which the update above left as they were for a lone sample.
                let own: Vec<f64> = count.iter().map(|&c| (c >= 2) as u8 as f64).collect();
                let own =
                    Tensor::from_vec(own, (count.len(), 1), x.device())?.to_dtype(x.dtype())?;
                let other = own.affine(-1.0, 1.0)?;
                let mix = |batch: &Tensor, running: &Var| -> Result<Tensor> {
                    let running = running.as_tensor().detach();
                    oh.matmul(&(batch.broadcast_mul(&own)? + running.broadcast_mul(&other)?)?)
                };
                (
                    mix(&mean, &self.running_mean)?,
                    mix(&var, &self.running_var)?,
                )
            }
        } else {
            (
                oh.matmul(self.running_mean.as_tensor())?,
                oh.matmul(self.running_var.as_tensor())?,
            )
        };
        let xhat = (x - mean_i)?.div(&var_i.affine(1.0, self.eps)?.sqrt()?)?;
        let gamma = oh
            .matmul(self.gamma_s.as_tensor())?
            .broadcast_mul(self.gamma.as_tensor())?;
        let beta = oh
            .matmul(self.beta_s.as_tensor())?
            .broadcast_add(self.beta.as_tensor())?;
        (xhat * gamma)? + beta
    }

    fn update_running(&self, mean: &Tensor, var: &Tensor, count: &[usize]) -> Result<()> {
        let (m, _) = mean.dims2()?;
        // Per-scenario momentum (0 for scenarios with fewer than two samples) and Bessel factor.
        let mom: Vec<f64> = count
            .iter()
            .map(|&c| if c >= 2 { self.momentum } else { 0.0 })
            .collect();
        let bessel: Vec<f64> = count
            .iter()
            .map(|&c| {
                if c >= 2 {
                    c as f64 / (c - 1) as f64
                } else {
                    1.0
                }
            })
            .collect();
        let dev = mean.device();
        let dt = mean.dtype();
        let mom = Tensor::from_vec(mom, (m, 1), dev)?.to_dtype(dt)?;
        let bessel = Tensor::from_vec(bessel, (m, 1), dev)?.to_dtype(dt)?;
        let rm = self.running_mean.as_tensor();
        let rv = self.running_var.as_tensor();
        let new_mean = (rm + (mean.detach() - rm)?.broadcast_mul(&mom)?)?;
        let target_var = var.detach().broadcast_mul(&bessel)?;
        let new_var = (rv + (target_var - rv)?.broadcast_mul(&mom)?)?;
        self.running_mean.set(&new_mean)?;
        self.running_var.set(&new_var)
    }
}

fn d_dim() -> usize {
    16
}
fn d_hidden() -> Vec<usize> {
    vec![128, 64]
}
fn d_aux_hidden() -> Vec<usize> {
    vec![32]
}
fn d_attention() -> MlpConfig {
    MlpConfig::new(&[32])
}
fn yes() -> bool {
    true
}
fn is_true(b: &bool) -> bool {
    *b
}

/// Hyperparameters of [`Star`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StarConfig {
    /// Width of every embedding vector (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
    /// Hidden widths of the star network (default `[128, 64]`).
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Activation (default `relu`).
    #[serde(default)]
    pub activation: Activation,
    /// Dropout after every hidden layer (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Partitioned normalization of the input and hidden layers (default true).
    #[serde(default = "yes")]
    pub partitioned_norm: bool,
    /// Star-topology layers (default true): every layer of the star network is the shared
    /// weight times a per-scenario weight, plus a shared and a per-scenario bias. False: plain
    /// shared layers, for the ablation that asks what the topology itself adds. Not serialized
    /// when true, so configurations written before it keep their form.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub star_topology: bool,
    /// Hidden widths of the auxiliary network (default `[32]`; empty: no auxiliary network).
    #[serde(default = "d_aux_hidden")]
    pub aux_hidden: Vec<usize>,
    /// Scoring MLP of the attention over a behaviour sequence (default hidden `[32]`).
    #[serde(default = "d_attention")]
    pub attention: MlpConfig,
    /// Keep at most this many most recent behaviours (default: all the data has).
    #[serde(default)]
    pub max_history: Option<usize>,
}

impl Default for StarConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
            hidden: d_hidden(),
            activation: Activation::Relu,
            dropout: 0.0,
            partitioned_norm: true,
            star_topology: true,
            aux_hidden: d_aux_hidden(),
            attention: d_attention(),
            max_history: None,
        }
    }
}

/// One star-topology layer: shared `W [in, out]`, `b [out]`; per scenario `W_s [M, in, out]`,
/// `b_s [M, 1, out]` (none when the layer is a plain shared one, `star_topology = false`).
struct StarLayer {
    w: Var,
    b: Var,
    /// `(W_s, b_s)`.
    specific: Option<(Var, Var)>,
}

impl StarLayer {
    fn new(
        vs: &mut VarStore,
        prefix: &str,
        m: usize,
        i: usize,
        o: usize,
        init: Init,
        star: bool,
    ) -> Result<Self> {
        let w = stacked_var(vs, &join(prefix, "weight"), (1, i, o), init, false)?;
        let b = vs.var(&join(prefix, "bias"), (1, 1, o), Init::Zeros)?;
        let specific = if star {
            Some((
                vs.var(&join(prefix, "weight_s"), (m, i, o), Init::Ones)?,
                vs.var(&join(prefix, "bias_s"), (m, 1, o), Init::Zeros)?,
            ))
        } else {
            None
        };
        Ok(Self { w, b, specific })
    }

    /// Every scenario's layer on `x: [n, in]`, each sample keeping its own: `[n, out]` (the
    /// shared layer alone without scenario factors).
    fn forward(&self, x: &Tensor, routing: &Routing) -> Result<Tensor> {
        match &self.specific {
            Some((w_s, b_s)) => {
                let w = w_s.as_tensor().broadcast_mul(self.w.as_tensor())?;
                let b = b_s.as_tensor().broadcast_add(self.b.as_tensor())?;
                routing.select_own(&apply_shared(x, &w, Some(&b))?)
            }
            None => apply_shared(x, self.w.as_tensor(), Some(self.b.as_tensor()))?.squeeze(0),
        }
    }
}

/// See the [module documentation](self).
pub struct Star {
    schema: Schema,
    m: usize,
    vs: VarStore,
    input: InputLayer,
    scenario_index: Option<usize>,
    /// The field the star network leaves out (the scenario indicator; see the module docs).
    star_skips: Option<usize>,
    input_norm: Option<PartitionedNorm>,
    layers: Vec<(StarLayer, Option<PartitionedNorm>)>,
    out: StarLayer,
    aux: Option<Mlp>,
    activation: Activation,
    dropout: f64,
}

impl Star {
    /// Builds STAR for `schema` (one binary task), one domain per scenario.
    pub fn new(
        schema: &Schema,
        cfg: &StarConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let m = check_schema(schema, "star")?;
        if !(0.0..1.0).contains(&cfg.dropout) {
            candle_core::bail!("star: dropout must be in [0, 1), got {}", cfg.dropout);
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
        let scenario_index = schema
            .scenario_field
            .as_ref()
            .and_then(|s| input.field_names().iter().position(|n| n == s));
        let has_aux = scenario_index.is_some() && !cfg.aux_hidden.is_empty();
        // The indicator's vector is `dim` wide (the scenario field is categorical).
        let star_skips = scenario_index.filter(|_| has_aux || cfg.partitioned_norm);
        let w = input.width() - if star_skips.is_some() { cfg.dim } else { 0 };
        let pn = |vs: &mut VarStore, p: &str, d: usize| -> Result<Option<PartitionedNorm>> {
            if cfg.partitioned_norm {
                Ok(Some(PartitionedNorm::new(vs, p, m, d)?))
            } else {
                Ok(None)
            }
        };
        let input_norm = pn(&mut vs, "input_norm", w)?;
        let mut layers = Vec::new();
        let mut width = w;
        for (k, &h) in cfg.hidden.iter().enumerate() {
            let p = format!("star.{k}");
            let layer = StarLayer::new(
                &mut vs,
                &p,
                m,
                width,
                h,
                activation_init(cfg.activation),
                cfg.star_topology,
            )?;
            layers.push((layer, pn(&mut vs, &join(&p, "norm"), h)?));
            width = h;
        }
        let out = StarLayer::new(
            &mut vs,
            "star.out",
            m,
            width,
            1,
            Init::XavierUniform,
            cfg.star_topology,
        )?;
        let aux = if has_aux {
            Some(Mlp::new(
                &mut vs,
                "aux",
                cfg.dim,
                &MlpConfig {
                    hidden: cfg.aux_hidden.clone(),
                    activation: cfg.activation,
                    ..MlpConfig::default()
                },
                Some(1),
            )?)
        } else {
            None
        };
        Ok(Self {
            schema: schema.clone(),
            m,
            vs,
            input,
            scenario_index,
            star_skips,
            input_norm,
            layers,
            out,
            aux,
            activation: cfg.activation,
            dropout: cfg.dropout,
        })
    }
}

impl Model for Star {
    fn name(&self) -> String {
        "star".into()
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn device(&self) -> &Device {
        self.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let routing = Routing::of_batch(batch, self.m, DType::F32, self.vs.device())?;
        let inp = self.input.forward(batch, ctx)?;
        let mut h = inp.concat_without(self.star_skips)?;
        if let Some(n) = &self.input_norm {
            h = n.forward(&h, &routing, ctx.train)?;
        }
        for (layer, norm) in &self.layers {
            h = layer.forward(&h, &routing)?;
            if let Some(n) = norm {
                h = n.forward(&h, &routing, ctx.train)?;
            }
            h = dropout(&self.activation.apply(&h)?, self.dropout, ctx)?;
        }
        // No activation on the logit.
        let mut logit = self.out.forward(&h, &routing)?;
        if let (Some(aux), Some(i)) = (&self.aux, self.scenario_index) {
            logit = (logit + aux.forward(&inp.fields[i], ctx)?)?;
        }
        Ok(vec![logit.squeeze(D::Minus1)?])
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

    fn routing() -> Routing {
        Routing::new(vec![0, 1, 0, 1, 1, 0, 2], 3, DType::F64, &Device::Cpu).unwrap()
    }

    #[test]
    fn partitioned_norm_uses_each_scenarios_own_statistics() -> Result<()> {
        let mut vs = store();
        let pn = PartitionedNorm::new(&mut vs, "pn", 3, 2)?;
        let r = routing();
        let x = input(&[7, 2], 1)?;
        // Shift scenario 1 far away: its samples are still normalized among themselves.
        let shift: Vec<f64> = r
            .ids
            .iter()
            .flat_map(|&s| if s == 1 { [50.0, -20.0] } else { [0.0, 0.0] })
            .collect();
        let xs = (x.as_tensor() + Tensor::from_vec(shift, (7, 2), &Device::Cpu)?)?;
        let y = pn.forward(&xs, &r, true)?.to_vec2::<f64>()?;
        for s in [0u32, 1] {
            let rows: Vec<&Vec<f64>> = r
                .ids
                .iter()
                .zip(&y)
                .filter(|(i, _)| **i == s)
                .map(|(_, v)| v)
                .collect();
            for c in 0..2 {
                let mean = rows.iter().map(|v| v[c]).sum::<f64>() / rows.len() as f64;
                let var =
                    rows.iter().map(|v| (v[c] - mean).powi(2)).sum::<f64>() / rows.len() as f64;
                assert!(mean.abs() < 1e-9, "scenario {s} mean {mean}");
                assert!((var - 1.0).abs() < 1e-3, "scenario {s} var {var}");
            }
        }
        // Scenario 2 has one sample: its running statistics (still 0 and 1) normalize it, and
        // they do not move.
        let xv = xs.to_vec2::<f64>()?;
        for c in 0..2 {
            assert!((y[6][c] - xv[6][c] / (1.0f64 + 1e-5).sqrt()).abs() < 1e-12);
        }
        let (rm, rv) = pn.running_stats();
        let rm = rm.as_tensor().to_vec2::<f64>()?;
        let rv = rv.as_tensor().to_vec2::<f64>()?;
        assert_eq!((rm[2].clone(), rv[2].clone()), (vec![0.0; 2], vec![1.0; 2]));
        // Scenario 1's running mean moved 10% of the way to its batch mean (about 50, -20).
        assert!((rm[1][0] - 5.0).abs() < 0.2 && (rm[1][1] + 2.0).abs() < 0.2);
        // Evaluation: a fixed affine map with the sample's own scenario's running statistics.
        let e = pn.forward(&xs, &r, false)?.to_vec2::<f64>()?;
        assert!((e[1][0] - (xv[1][0] - rm[1][0]) / (rv[1][0] + 1e-5).sqrt()).abs() < 1e-9);
        assert!((e[0][1] - (xv[0][1] - rm[0][1]) / (rv[0][1] + 1e-5).sqrt()).abs() < 1e-9);
        Ok(())
    }

    #[test]
    fn partitioned_norm_gradients() -> Result<()> {
        let mut vs = store();
        let pn = PartitionedNorm::new(&mut vs, "pn", 3, 2)?;
        // Non-trivial scenario scales and shifts.
        pn.gamma_s
            .set(&input(&[3, 2], 8)?.as_tensor().affine(1.0, 1.5)?)?;
        pn.beta_s.set(&input(&[3, 2], 9)?.as_tensor().clone())?;
        let r = Routing::new(vec![0, 1, 0, 1, 1, 0], 3, DType::F64, &Device::Cpu)?;
        let x = input(&[6, 2], 1)?;
        // Scenario 2 is absent (that its rows of gamma_s and beta_s then get exactly no gradient
        // is checked on the whole model in tests.rs, `scenario_parameters_learn_only_...`).
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&pn.forward(x.as_tensor(), &r, true)?, 3)
        })
    }

    /// A scenario with a single sample in the batch: normalized with its scenario's running
    /// statistics, it still passes a gradient to its row of `x` and to that scenario's
    /// `gamma_s` (its batch statistics would map it to `beta + beta_s` whatever it is), and
    /// the running statistics take none; finite-difference gradients hold everywhere, with
    /// running statistics away from their start. The rows of the other scenarios do not
    /// change with the lone sample. STAR's layers keep their own rows with the same masked sum whether or not the batch
    /// is sorted (they never take [`Routing::groups`]' block-wise path), so one routing
    /// covers both.
    #[test]
    fn partitioned_norm_and_star_layer_gradients_with_a_single_sample_scenario() -> Result<()> {
        let r = routing(); // Scenario 2: sample 6 alone.
        let mut vs = store();
        let pn = PartitionedNorm::new(&mut vs, "pn", 3, 2)?;
        pn.gamma_s
            .set(&input(&[3, 2], 8)?.as_tensor().affine(1.0, 1.5)?)?;
        pn.beta_s.set(input(&[3, 2], 9)?.as_tensor())?;
        pn.running_mean.set(input(&[3, 2], 10)?.as_tensor())?;
        pn.running_var
            .set(&input(&[3, 2], 11)?.as_tensor().sqr()?.affine(1.0, 0.5)?)?;
        let x = input(&[7, 2], 1)?;
        let loss = || weighted_sum(&pn.forward(x.as_tensor(), &r, true)?, 3);
        check_layer(&vs, &[("x", &x)], loss)?;
        let grads = loss()?.backward()?;
        let gx = grads.get(x.as_tensor()).unwrap().to_vec2::<f64>()?;
        assert!(gx.iter().flatten().all(|g| g.is_finite() && *g != 0.0));
        let gg = grads
            .get(pn.gamma_s.as_tensor())
            .unwrap()
            .to_vec2::<f64>()?;
        assert!(gg[2].iter().all(|g| *g != 0.0));
        let gb = grads.get(pn.beta_s.as_tensor()).unwrap().to_vec2::<f64>()?;
        assert!(gb[2].iter().all(|g| *g != 0.0));
        assert!(grads.get(pn.running_mean.as_tensor()).is_none());
        assert!(grads.get(pn.running_var.as_tensor()).is_none());
        // The lone sample: (x - running mean) / sqrt(running var + eps), then scale and shift.
        let y = pn.forward(x.as_tensor(), &r, true)?.to_vec2::<f64>()?;
        let (xv, rm, rv) = (
            x.as_tensor().to_vec2::<f64>()?,
            pn.running_mean.as_tensor().to_vec2::<f64>()?,
            pn.running_var.as_tensor().to_vec2::<f64>()?,
        );
        let (gs, bs) = (
            pn.gamma_s.as_tensor().to_vec2::<f64>()?,
            pn.beta_s.as_tensor().to_vec2::<f64>()?,
        );
        for c in 0..2 {
            let xhat = (xv[6][c] - rm[2][c]) / (rv[2][c] + 1e-5).sqrt();
            assert!((y[6][c] - (gs[2][c] * xhat + bs[2][c])).abs() < 1e-12);
        }
        // Without the lone sample the other rows are the same.
        let r6 = Routing::new(r.ids[..6].to_vec(), 3, DType::F64, &Device::Cpu)?;
        let y6 = pn
            .forward(&x.as_tensor().narrow(0, 0, 6)?, &r6, true)?
            .to_vec2::<f64>()?;
        for (a, b) in y6.iter().flatten().zip(y[..6].iter().flatten()) {
            assert!((a - b).abs() < 1e-12);
        }

        let mut vs = store();
        let l = StarLayer::new(&mut vs, "l", 3, 3, 2, Init::XavierUniform, true)?;
        let (w_s, b_s) = l.specific.as_ref().unwrap();
        w_s.set(input(&[3, 3, 2], 4)?.as_tensor())?;
        b_s.set(input(&[3, 1, 2], 5)?.as_tensor())?;
        let x = input(&[7, 3], 6)?;
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&l.forward(x.as_tensor(), &r)?, 2)
        })
    }

    #[test]
    fn star_layer_is_shared_times_specific() -> Result<()> {
        let mut vs = store();
        let l = StarLayer::new(&mut vs, "l", 2, 3, 2, Init::XavierUniform, true)?;
        let (w_s, b_s) = l.specific.as_ref().unwrap();
        w_s.set(input(&[2, 3, 2], 4)?.as_tensor())?;
        b_s.set(input(&[2, 1, 2], 5)?.as_tensor())?;
        let r = Routing::new(vec![1, 0, 1], 2, DType::F64, &Device::Cpu)?;
        let x = input(&[3, 3], 6)?;
        let y = l.forward(x.as_tensor(), &r)?.to_vec2::<f64>()?;
        let w = l.w.as_tensor().get(0)?;
        for (i, &s) in r.ids.iter().enumerate() {
            let ws = (w_s.as_tensor().get(s as usize)? * &w)?;
            let b = (b_s.as_tensor().get(s as usize)? + l.b.as_tensor().get(0)?)?;
            let e = x
                .as_tensor()
                .get(i)?
                .unsqueeze(0)?
                .matmul(&ws)?
                .broadcast_add(&b)?
                .flatten_all()?
                .to_vec1::<f64>()?;
            for (a, b) in y[i].iter().zip(&e) {
                assert!((a - b).abs() < 1e-12);
            }
        }
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&l.forward(x.as_tensor(), &r)?, 2)
        })
    }

    /// Without the star topology a layer is one shared linear map: no scenario variables, and
    /// every sample gets `x W + b` whatever its scenario.
    #[test]
    fn plain_star_layer_is_one_shared_linear_map() -> Result<()> {
        let mut vs = store();
        let l = StarLayer::new(&mut vs, "l", 2, 3, 2, Init::XavierUniform, false)?;
        let names: Vec<String> = vs.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2, "{names:?}");
        assert!(names.iter().all(|n| !n.ends_with("_s")), "{names:?}");
        l.b.set(input(&[1, 1, 2], 5)?.as_tensor())?;
        let r = Routing::new(vec![1, 0, 1], 2, DType::F64, &Device::Cpu)?;
        let x = input(&[3, 3], 6)?;
        let y = l.forward(x.as_tensor(), &r)?.to_vec2::<f64>()?;
        let e = x
            .as_tensor()
            .matmul(&l.w.as_tensor().get(0)?)?
            .broadcast_add(&l.b.as_tensor().get(0)?)?
            .to_vec2::<f64>()?;
        for (a, b) in y.iter().flatten().zip(e.iter().flatten()) {
            assert!((a - b).abs() < 1e-12);
        }
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&l.forward(x.as_tensor(), &r)?, 2)
        })
    }

    /// `star_topology` is written only when off, so STAR's configurations (and the experiment's
    /// cache keys) written before it keep their form; off, it round-trips.
    #[test]
    fn star_topology_is_serialized_only_when_off() {
        let on = serde_json::to_value(StarConfig::default()).unwrap();
        assert!(on.get("star_topology").is_none(), "{on}");
        let off = StarConfig {
            star_topology: false,
            ..StarConfig::default()
        };
        let v = serde_json::to_value(&off).unwrap();
        assert_eq!(v["star_topology"], false);
        assert_eq!(serde_json::from_value::<StarConfig>(v).unwrap(), off);
    }
}
