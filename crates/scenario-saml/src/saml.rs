//! SAML, Scenario-aware Mutual Learning (the ICDM Workshops 2020 paper "Scenario-aware and
//! Mutual-based approach for Multi-scenario Recommendation in E-Commerce").
//!
//! Only the abstract of the paper and secondary descriptions could be read; parts marked \[ours\] are this crate's
//! reconstruction and each is a switch of [`SamlConfig`], so an ablation can show what it earns.
//!
//! For a sample of scenario `s` with global field vectors `e_g`, scenario field vectors `e_s`
//! ([`ScenarioEmbedding`]), and, with a behaviour sequence, the global and scenario attention
//! outputs `a_g`, `a_s`:
//!
//! 1. auxiliary network \[paper\]: `h_aux^(0) = [e_g; a_g]`, `h_aux^(k) = act(A_k h_aux^(k-1))`,
//!    its own head `y_aux = sigmoid(w_aux . h_aux^(L))` and its own loss. With `scenario_norm`
//!    \[ours, after STAR\], `[e_g; a_g]` is first normalized with its scenario's statistics
//!    (STAR's [`PartitionedNorm`]), for the auxiliary network and every branch alike;
//! 2. multi-branch network \[paper\]: `M` branches; layer `k` of branch `m` reads
//!    `[h_m^(k-1); h_aux^(k-1)]` with `h_m^(0) = [e_s; a_s]` (the same input for every branch:
//!    the sample's own scenario representation). A sample is run (and differentiated) through
//!    its own branch only: the batch is sorted by scenario and each scenario's block of rows
//!    meets its branch's weights in one matmul ([`crate::routed`]). With `shared_branches`
//!    \[ours, after STAR\] a branch layer's weight is a shared weight times a per-branch one
//!    (elementwise), the shared factor trained by every scenario. With `scenario_branches =
//!    false` (an ablation) one branch and one head serve every scenario;
//! 3. mutual unit [paper; equations ours] at a chosen hidden layer ([`MutualUnit`]): the own
//!    branch borrows from the others, whose outputs are stop-gradient, so branch `m` is trained
//!    by scenario `m`'s samples only. Those outputs are computed in a forward-only pass of every
//!    branch over the other scenarios' samples, up to the mutual layer;
//! 4. output [paper; weights ours]: `y = sigmoid(w_s . h~_s + b_s [+ z_aux])` with a head per
//!    scenario, where `z_aux = w_aux . h_aux^(L)` is the auxiliary logit, added by default
//!    (`aux_in_output`, \[ours\]);
//!    `L = BCE(y) + lambda_aux * BCE(y_aux) [+ mu * KL(y || stopgrad(y_aux))]
//!    + scenario_l2 * mean_batch sum_f ||e_s,f||^2` (the KL term \[ours\], off by default; the
//!    last term \[ours\], `scenario_l2 = 1`).
//!
//! Scenario-aware attention [paper; form ours]: a global DIN attention (in [`InputLayer`]) and a
//! scenario attention over the same values (the global behaviour vectors), differing in the
//! query and key projections: the scenario attention scores `q_s = q (I + P_q[s])` against
//! `k_sj = k_j (I + P_k[s])` with per-scenario matrices `P` (initialised to 0) and its own
//! scoring MLP.

use candle_core::{DType, Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};
use rec_nn::layers::{Activation, Linear, MlpConfig, TargetAttention, dropout};
use rec_nn::model::{Ctx, Model};
use serde::{Deserialize, Serialize};

use crate::batched::{BatchedLinear, stacked_var};
use crate::input::InputLayer;
use crate::mutual::MutualUnit;
use crate::nn::{Init, VarStore, activation_init, join};
use crate::routed::{Groups, inverse_index, routed_matmul, scenario_order};
use crate::scenario::{Routing, check_schema, scenario_ids};
use crate::scenario_embedding::{ScenarioEmbedding, default_scenario_fields};
use crate::star::PartitionedNorm;

fn d_dim() -> usize {
    16
}
fn d_hidden() -> Vec<usize> {
    vec![128, 64]
}
fn d_attention() -> MlpConfig {
    MlpConfig::new(&[32])
}
fn yes() -> bool {
    true
}
fn one() -> f64 {
    1.0
}

/// Hyperparameters and switches of [`Saml`]. Every switch defaults to the full model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SamlConfig {
    /// Width of every embedding vector (default 16).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// Pooling of multi-hot fields (default `mean`).
    #[serde(default)]
    pub pooling: Pooling,
    /// Hidden widths of the auxiliary network, and of every branch unless `branch_hidden` is
    /// set (default `[128, 64]`).
    #[serde(default = "d_hidden")]
    pub hidden: Vec<usize>,
    /// Hidden widths of the branches \[ours\] (default: `hidden`). As many layers as `hidden`
    /// (layer `k` of the auxiliary network feeds layer `k + 1` of every branch). Narrow
    /// branches make each branch a scenario correction to the auxiliary network (whose logit
    /// is in the output, `aux_in_output`) rather than a whole network, and cut the cost of the
    /// branches, which a sample pays `M` times with the mutual unit (its own branch trained,
    /// the others forward). `cargo xtask experiment saml` uses `[32, 16]` with
    /// `hidden = [128, 64]`: test AUC within the seed noise of full-width branches on both of
    /// its data sets, at about half the training step (docs/results/saml.md,
    /// docs/benchmarks.md). Not serialized when unset, so configurations written before it
    /// keep their form.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch_hidden: Option<Vec<usize>>,
    /// Activation of the hidden layers (default `relu`).
    #[serde(default)]
    pub activation: Activation,
    /// Dropout after every hidden layer (default 0).
    #[serde(default)]
    pub dropout: f64,
    /// Every branch (and head) starts from the same weights \[ours\] (default true): the mutual
    /// unit adds other branches' hidden vectors to the own one, which only means something
    /// when the branches' hidden spaces are comparable; copies that diverge by scenario keep
    /// them so. `false` draws each branch independently.
    #[serde(default = "yes")]
    pub tied_init: bool,
    /// Scoring MLP of both attentions (default hidden `[32]`).
    #[serde(default = "d_attention")]
    pub attention: MlpConfig,
    /// Keep at most this many most recent behaviours (default: all the data has).
    #[serde(default)]
    pub max_history: Option<usize>,
    /// Scenario-aware embedding \[paper\] (default true). `false` is the "no scenario
    /// embedding" ablation.
    #[serde(default = "yes")]
    pub scenario_embedding: bool,
    /// Fields with scenario tables [ours: per-field choice] (default: every categorical and
    /// multi-hot field but the scenario field).
    #[serde(default)]
    pub scenario_fields: Option<Vec<String>>,
    /// Scenario-aware attention \[paper\] when the data have a behaviour sequence (default true).
    #[serde(default = "yes")]
    pub scenario_attention: bool,
    /// `lambda_aux`, weight of the auxiliary network's loss (default 1; 0 is the "no auxiliary
    /// loss" ablation: the network still feeds the branches).
    #[serde(default = "one")]
    pub aux_loss_weight: f64,
    /// The mutual unit \[paper\] (default true; `false`: `h~_s = h_s`).
    #[serde(default = "yes")]
    pub mutual: bool,
    /// Hidden layer (0-based) after which the mutual unit runs (default the last).
    #[serde(default)]
    pub mutual_layer: Option<usize>,
    /// `mu`, weight of the optional mutual-learning term `KL(y || stopgrad(y_aux))` (default 0,
    /// off) \[ours\].
    #[serde(default)]
    pub mutual_kl: f64,
    /// Add the auxiliary network's logit to every branch's output logit \[ours\]
    /// (default true): `y = sigmoid(w_s . h~_s + b_s + w_aux . h_aux^(L))`, so the branches
    /// learn their scenario's correction to the network every scenario trains (as STAR's
    /// auxiliary network does). `false`: `y = sigmoid(w_s . h~_s + b_s)`.
    #[serde(default = "yes")]
    pub aux_in_output: bool,
    /// Weight of a mini-batch L2 penalty on the scenario vectors \[ours\] (default 1; 0 is off):
    /// `scenario_l2 * mean over the batch of sum_f ||e_s,f||^2`. The branches also read the
    /// global vectors, so shrinking a scenario vector to 0 falls back on the global one: the
    /// scenario part survives where its scenario's data support it.
    #[serde(default = "one")]
    pub scenario_l2: f64,
    /// Scenario tables start at zero \[ours\] (default false: they start like every table, at
    /// small random values). An (ID, scenario) pair that training never reaches keeps its
    /// initial row, which the branch then reads at test time; at zero it falls back on the
    /// global vector, as `scenario_l2` intends for pairs with little data. Not serialized when
    /// false, so configurations written before it keep their form.
    #[serde(default, skip_serializing_if = "is_false")]
    pub scenario_zero_init: bool,
    /// Branch layers factored as STAR's are \[ours, after STAR (CIKM 2021)\] (default false):
    /// layer `k` of branch `m` has weights `W_m,k * W_k` (elementwise) and bias
    /// `b_m,k + b_k`, where `W_k`, `b_k` are shared by every branch and trained by every
    /// scenario's samples, and `W_m,k` (starting at 1) and `b_m,k` by scenario `m`'s only.
    /// A small scenario's branch then starts from, and keeps following, what all scenarios
    /// learn, instead of being trained by its few samples alone. The heads stay per branch;
    /// `tied_init` has no effect on the factored layers (they start equal). Not serialized
    /// when false, so configurations written before it keep their form.
    #[serde(default, skip_serializing_if = "is_false")]
    pub shared_branches: bool,
    /// With `aux_in_output`, the output reads the auxiliary network's last hidden layer
    /// through a head per scenario \[ours\] (default false): `y = sigmoid(w_s . h~_s + b_s +
    /// v_s . h_aux^(L))`, where `v_s` starts as a copy of one draw for every scenario and is
    /// trained by scenario `s`'s samples only, instead of adding the auxiliary head's logit
    /// `w_aux . h_aux^(L)`, which the auxiliary loss fits to every scenario at once. The
    /// auxiliary loss still trains the network and its own head. Needs `aux_in_output`. Not
    /// serialized when false, so configurations written before it keep their form.
    #[serde(default, skip_serializing_if = "is_false")]
    pub aux_head_per_scenario: bool,
    /// Partitioned normalization of the global input \[ours, after STAR (CIKM 2021)\]
    /// (default false): `x = [e_g; a_g]`, which feeds the auxiliary network and every branch,
    /// is batch-normalized with its scenario's statistics and scaled and shifted by
    /// `gamma * gamma_s`, `beta + beta_s` (STAR's [`PartitionedNorm`],
    /// running statistics per scenario in evaluation). A per-scenario scale of each global
    /// embedding dimension costs `2 * M` vectors of the input's width, so a small scenario can
    /// afford it where it cannot afford scenario embeddings. The scenario embeddings and the
    /// scenario attention's output are not normalized. Not serialized when false, so
    /// configurations written before it keep their form.
    #[serde(default, skip_serializing_if = "is_false")]
    pub scenario_norm: bool,
    /// One branch per scenario \[paper\] (default true). `false` is the "no per-scenario
    /// branches" ablation: one branch (and one head) that every scenario's samples train,
    /// still fed layer by layer by the auxiliary network and still reading the scenario
    /// embeddings and the scenario attention, which stay per scenario. Needs `mutual = false`
    /// (the mutual unit mixes branches). Not serialized when true, so configurations written
    /// before it keep their form.
    #[serde(default = "yes", skip_serializing_if = "is_true")]
    pub scenario_branches: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_true(b: &bool) -> bool {
    *b
}

impl Default for SamlConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            pooling: Pooling::Mean,
            hidden: d_hidden(),
            branch_hidden: None,
            activation: Activation::Relu,
            dropout: 0.0,
            tied_init: true,
            attention: d_attention(),
            max_history: None,
            scenario_embedding: true,
            scenario_fields: None,
            scenario_attention: true,
            aux_loss_weight: 1.0,
            mutual: true,
            mutual_layer: None,
            mutual_kl: 0.0,
            aux_in_output: true,
            scenario_l2: 1.0,
            scenario_zero_init: false,
            shared_branches: false,
            aux_head_per_scenario: false,
            scenario_norm: false,
            scenario_branches: true,
        }
    }
}

/// Scenario attention: per-scenario query/key projections and its own scoring MLP.
struct ScenarioAttention {
    proj_q: Var,
    proj_k: Var,
    attention: TargetAttention,
    width: usize,
}

impl ScenarioAttention {
    fn new(vs: &mut VarStore, m: usize, width: usize, mlp: &MlpConfig) -> Result<Self> {
        Ok(Self {
            proj_q: vs.var("scen_attention.proj_q", (m, width * width), Init::Zeros)?,
            proj_k: vs.var("scen_attention.proj_k", (m, width * width), Init::Zeros)?,
            attention: TargetAttention::new(vs, "scen_attention", width, mlp)?,
            width,
        })
    }

    /// `x (I + P[s])` for every sample: `x: [n, w]` or `[n, T, w]`.
    fn project(&self, x: &Tensor, p: &Var, routing: &Routing) -> Result<Tensor> {
        let w = self.width;
        let n = routing.len();
        let m = routing.num_scenarios;
        let p3 = p.as_tensor().reshape((m, w, w))?;
        match (x.rank(), &routing.groups) {
            (2, _) => x + routing.matmul_own(x, &p3)?,
            (_, Some(g)) => {
                // [n, T, w] as [n T, w]: every sample's T rows stay in its scenario's block.
                let (_, t, _) = x.dims3()?;
                let flat = x.contiguous()?.reshape((n * t, w))?;
                x + routed_matmul(&flat, &p3, &g.repeated(t))?.reshape((n, t, w))?
            }
            _ => {
                let ps = routing.rows_of(p.as_tensor())?.reshape((n, w, w))?;
                x + x.contiguous()?.matmul(&ps)?
            }
        }
    }

    fn forward(
        &self,
        target: &Tensor,
        behaviours: &Tensor,
        mask: &Tensor,
        routing: &Routing,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let q = self.project(target, &self.proj_q, routing)?;
        let k = self.project(behaviours, &self.proj_k, routing)?;
        Ok(self
            .attention
            .forward(&q, &k, behaviours, mask, ctx)?
            .output)
    }
}

/// One hidden layer of the branches: `own` reads the branch's previous layer (or, in the first
/// layer, the shared input `[e_s; a_s; h_aux^(0)]`), `fed` the auxiliary net's previous layer.
struct BranchLayer {
    own: BatchedLinear,
    fed: Option<BatchedLinear>,
}

/// Outputs of SAML's sub-networks on the last batch, kept for the loss and for analysis.
#[derive(Clone)]
pub struct SamlInternals {
    /// The auxiliary network's logit `[n]`.
    pub aux_logit: Tensor,
    /// The mutual unit's gates `[n, M]` (with the mutual unit on).
    pub gates: Option<Tensor>,
    /// `mean over the batch of sum_f ||e_s,f||^2` (training with `scenario_l2 > 0` only).
    pub scenario_sq: Option<Tensor>,
}

/// See the [module documentation](self).
pub struct Saml {
    schema: Schema,
    cfg: SamlConfig,
    m: usize,
    vs: VarStore,
    input: InputLayer,
    /// Partitioned normalization of the global input (`scenario_norm`).
    input_norm: Option<PartitionedNorm>,
    scen_emb: Option<ScenarioEmbedding>,
    scen_att: Option<ScenarioAttention>,
    aux: Vec<Linear>,
    aux_head: Linear,
    branches: Vec<BranchLayer>,
    mutual: Option<MutualUnit>,
    mutual_layer: usize,
    head_w: Var,
    head_b: Var,
    /// `v_s`, the per-scenario heads on the auxiliary network `[M, h_aux, 1]`
    /// (`aux_head_per_scenario`).
    aux_out_w: Option<Var>,
    last: Option<SamlInternals>,
}

impl Saml {
    /// Builds SAML for `schema` (one binary task; the scenario field and `num_scenarios` of the
    /// schema define the branches).
    pub fn new(
        schema: &Schema,
        cfg: &SamlConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        let m = check_schema(schema, "saml")?;
        if cfg.hidden.is_empty() {
            candle_core::bail!("saml needs at least one hidden layer");
        }
        if !(0.0..1.0).contains(&cfg.dropout) {
            candle_core::bail!("saml: dropout must be in [0, 1), got {}", cfg.dropout);
        }
        let weight_ok = |x: f64| x >= 0.0 && x.is_finite();
        if !(weight_ok(cfg.aux_loss_weight)
            && weight_ok(cfg.mutual_kl)
            && weight_ok(cfg.scenario_l2))
        {
            candle_core::bail!(
                "saml: aux_loss_weight, mutual_kl and scenario_l2 must be finite and >= 0, got {}, {}, {}",
                cfg.aux_loss_weight,
                cfg.mutual_kl,
                cfg.scenario_l2
            );
        }
        if cfg.aux_head_per_scenario && !cfg.aux_in_output {
            candle_core::bail!(
                "saml: aux_head_per_scenario reads the auxiliary network into the output, \
                 which aux_in_output = false leaves out; set aux_in_output = true or drop it"
            );
        }
        if !cfg.scenario_branches && cfg.mutual {
            candle_core::bail!(
                "saml: the mutual unit mixes the per-scenario branches, which \
                 scenario_branches = false replaces by one; set mutual = false too"
            );
        }
        if cfg.hidden.contains(&0) {
            candle_core::bail!("saml: hidden {:?} has a layer of width 0", cfg.hidden);
        }
        if let Some(b) = &cfg.branch_hidden
            && (b.len() != cfg.hidden.len() || b.contains(&0))
        {
            candle_core::bail!(
                "saml: branch_hidden {b:?} needs one nonzero width per layer of hidden {:?} \
                 (layer k of the auxiliary network feeds layer k + 1 of the branches)",
                cfg.hidden
            );
        }
        let branch_hidden = cfg.branch_hidden.as_ref().unwrap_or(&cfg.hidden);
        let mutual_layer = cfg.mutual_layer.unwrap_or(cfg.hidden.len() - 1);
        if mutual_layer >= cfg.hidden.len() {
            candle_core::bail!(
                "saml: mutual_layer {mutual_layer} is not a hidden layer (0..{})",
                cfg.hidden.len()
            );
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
        let scen_emb = if cfg.scenario_embedding {
            let fields = cfg
                .scenario_fields
                .clone()
                .unwrap_or_else(|| default_scenario_fields(schema));
            Some(ScenarioEmbedding::new(
                schema,
                &fields,
                m,
                cfg.dim,
                cfg.pooling,
                cfg.scenario_zero_init,
                factory,
                device,
            )?)
            .filter(|s| s.num_fields() > 0)
        } else {
            None
        };
        let bw = input.behaviour_width();
        let scen_att = if cfg.scenario_attention && bw > 0 {
            Some(ScenarioAttention::new(&mut vs, m, bw, &cfg.attention)?)
        } else {
            None
        };
        let aux_in = input.width();
        let input_norm = if cfg.scenario_norm {
            Some(PartitionedNorm::new(&mut vs, "input_norm", m, aux_in)?)
        } else {
            None
        };
        let branch_in = scen_emb.as_ref().map_or(0, |s| s.num_fields() * s.dim())
            + scen_att.as_ref().map_or(0, |_| bw);
        let init = activation_init(cfg.activation);
        // Number of branches (and heads): one per scenario, or one for all.
        let mb = if cfg.scenario_branches { m } else { 1 };
        let mut aux = Vec::new();
        let mut branches = Vec::new();
        let (mut wa, mut wb) = (aux_in, branch_in);
        for (k, (&h, &hb)) in cfg.hidden.iter().zip(branch_hidden).enumerate() {
            aux.push(Linear::with_init(
                &mut vs,
                &format!("aux.{k}"),
                wa,
                h,
                true,
                init,
            )?);
            let p = format!("branch.{k}");
            let mut branch_linear = |name: &str, i: usize, bias: bool| {
                if cfg.shared_branches {
                    BatchedLinear::with_shared_factor(&mut vs, name, mb, i, hb, bias, init)
                } else {
                    BatchedLinear::with_tied_init(
                        &mut vs,
                        name,
                        mb,
                        i,
                        hb,
                        bias,
                        init,
                        cfg.tied_init,
                    )
                }
            };
            let layer = if k == 0 {
                BranchLayer {
                    own: branch_linear(&p, wb + wa, true)?,
                    fed: None,
                }
            } else {
                BranchLayer {
                    own: branch_linear(&join(&p, "own"), wb, true)?,
                    fed: Some(branch_linear(&join(&p, "fed"), wa, false)?),
                }
            };
            branches.push(layer);
            wa = h;
            wb = hb;
        }
        let aux_head = Linear::new(&mut vs, "aux.out", wa, 1)?;
        let mutual = if cfg.mutual {
            Some(MutualUnit::new(&mut vs, "mutual", m)?)
        } else {
            None
        };
        let head_w = stacked_var(
            &mut vs,
            "head.weight",
            (mb, wb, 1),
            Init::XavierUniform,
            cfg.tied_init,
        )?;
        let head_b = vs.var("head.bias", mb, Init::Zeros)?;
        let aux_out_w = if cfg.aux_head_per_scenario {
            Some(stacked_var(
                &mut vs,
                "aux.out_per_scenario.weight",
                (m, wa, 1),
                Init::XavierUniform,
                true,
            )?)
        } else {
            None
        };
        Ok(Self {
            schema: schema.clone(),
            cfg: cfg.clone(),
            m,
            vs,
            input,
            input_norm,
            scen_emb,
            scen_att,
            aux,
            aux_head,
            branches,
            mutual,
            mutual_layer,
            head_w,
            head_b,
            aux_out_w,
            last: None,
        })
    }

    /// The hyperparameters.
    pub fn config(&self) -> &SamlConfig {
        &self.cfg
    }

    /// Number of scenarios (and of branches, unless `scenario_branches` is false).
    pub fn num_scenarios(&self) -> usize {
        self.m
    }

    /// The mutual unit, when on (its [`MutualUnit::affinity`] is the learned affinity).
    pub fn mutual_unit(&self) -> Option<&MutualUnit> {
        self.mutual.as_ref()
    }

    /// The learned scenario-affinity matrix `c` as rows (with the mutual unit on). With two
    /// scenarios it is not learned: the softmax over the other scenario has one entry, every
    /// gate is 1 whatever `c` is, and `c` keeps its initial zeros.
    pub fn affinity(&self) -> Result<Option<Vec<Vec<f32>>>> {
        self.mutual
            .as_ref()
            .map(|u| {
                u.affinity()
                    .as_tensor()
                    .to_dtype(DType::F32)?
                    .to_vec2::<f32>()
            })
            .transpose()
    }

    /// Sub-network outputs of the last forward pass (auxiliary logit, mutual gates).
    pub fn internals(&self) -> Option<&SamlInternals> {
        self.last.as_ref()
    }

    /// Mean mutual gate per (own scenario, other scenario) over `data` (evaluated in chunks
    /// of 4096 samples; rows of scenarios absent from `data` are `NaN`): how much each scenario
    /// borrows from each other one. `None` with the mutual unit off.
    pub fn mean_gates(&mut self, data: &Batch) -> Result<Option<Vec<Vec<f64>>>> {
        if self.mutual.is_none() {
            return Ok(None);
        }
        let mut sum = vec![vec![0.0; self.m]; self.m];
        let mut count = vec![0usize; self.m];
        let mut start = 0;
        while start < data.len() {
            let chunk = data.range(start, (start + 4096).min(data.len()));
            start += chunk.len();
            self.logits(&chunk, &mut Ctx::eval())?;
            let gates = self.last.as_ref().and_then(|l| l.gates.clone());
            let Some(g) = gates else { return Ok(None) };
            let g = g.to_dtype(DType::F64)?.to_vec2::<f64>()?;
            for (row, s) in g.iter().zip(chunk.scenarios()) {
                count[s as usize] += 1;
                for (acc, v) in sum[s as usize].iter_mut().zip(row) {
                    *acc += v;
                }
            }
        }
        Ok(Some(
            sum.into_iter()
                .zip(count)
                .map(|(r, c)| {
                    r.into_iter()
                        .map(|v| if c == 0 { f64::NAN } else { v / c as f64 })
                        .collect()
                })
                .collect(),
        ))
    }

    /// The branches' input `[e_s; a_s; x_aux]` and the auxiliary net's input `x_aux` for a
    /// batch, in the batch's order.
    fn inputs(
        &mut self,
        batch: &Batch,
        routing: &Routing,
        ctx: &mut Ctx,
    ) -> Result<(Tensor, Tensor, Option<Tensor>)> {
        let inp = self.input.forward(batch, ctx)?;
        let mut x_aux = inp.concat()?;
        if let Some(pn) = &self.input_norm {
            x_aux = pn.forward(&x_aux, routing, ctx.train)?;
        }
        let mut branch_parts = Vec::new();
        let mut scenario_sq = None;
        if let Some(se) = &mut self.scen_emb {
            let vs = se.forward(batch, &routing.ids, ctx.train)?;
            // An empty batch has no mean (0/0 would stop training on a NaN loss).
            if ctx.train && self.cfg.scenario_l2 > 0.0 && !routing.ids.is_empty() {
                let sq = Tensor::cat(&vs, 1)?.sqr()?.sum(1)?.mean(0)?;
                scenario_sq = Some(sq);
            }
            branch_parts.extend(vs);
        }
        if let (Some(sa), Some(target), Some((beh, mask))) =
            (&self.scen_att, &inp.target, &inp.behaviours)
        {
            branch_parts.push(sa.forward(target, beh, mask, routing, ctx)?);
        }
        branch_parts.push(x_aux.clone());
        Ok((Tensor::cat(&branch_parts, 1)?, x_aux, scenario_sq))
    }

    /// The logits (and [`SamlInternals`]) of a batch.
    ///
    /// The samples are first sorted by scenario (a stable counting sort of the batch), so
    /// that every per-scenario parameter (branch layers, heads, scenario projections) is
    /// applied block by block to its own scenario's samples ([`crate::routed`]); the outputs
    /// are put back in the batch's order at the end. The own branch is the only one that is
    /// differentiated: the other branches' outputs, which the mutual unit reads as
    /// stop-gradient values, are computed in a forward-only pass over detached inputs and
    /// parameters (`[M, n, h]`, up to the mutual layer only). The result is the dense
    /// formulation's (every branch on every sample, the own one picked by a mask) up to the
    /// order of floating-point sums; with dropout, the masks fall on other positions. In that
    /// forward-only pass, branch `m` runs on the samples of the other scenarios only: its
    /// value at its own scenario's samples is never used (the own branch's gate is 0).
    fn logits(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Tensor> {
        let device = self.vs.device().clone();
        let ids = scenario_ids(batch, self.m)?;
        let order = scenario_order(&ids, self.m)?;
        let sorted;
        let batch = match &order {
            Some(o) => {
                sorted = batch.gather(o);
                &sorted
            }
            None => batch,
        };
        let routing = Routing::of_batch(batch, self.m, DType::F32, &device)?;
        let (x_branch, x_aux, scenario_sq) = self.inputs(batch, &routing, ctx)?;
        let branch_routing = self.branch_routing(&routing)?;
        let branch_routing = branch_routing.as_ref().unwrap_or(&routing);

        let act = self.cfg.activation;
        let p = self.cfg.dropout;
        let mut h_aux = x_aux;
        // The own branch `[n, h]`, and (with the mutual unit, up to its layer) every branch
        // as constants `[M, n, h]`.
        let mut own = x_branch;
        // With the mutual unit, up to its layer: branch `m`'s activations (constants) on the
        // samples outside scenario `m` (`complement[m]`, rows of the sorted batch).
        let groups = routing
            .groups
            .clone()
            .expect("the batch was sorted by scenario");
        let complement = match &self.mutual {
            Some(_) => complements(&groups, &device)?,
            None => Vec::new(),
        };
        let mut others: Option<Vec<Option<Tensor>>> = None;
        let mut gates = None;
        for (k, (layer, aux)) in self.branches.iter().zip(&self.aux).enumerate() {
            let r = branch_routing;
            let pre = match &layer.fed {
                None => layer.own.forward_own(&own, r)?,
                Some(fed) => (layer.own.forward_own(&own, r)? + fed.forward_own(&h_aux, r)?)?,
            };
            let mut h = dropout(&act.apply(&pre)?, p, ctx)?;
            if let Some(mu) = self.mutual.as_ref().filter(|_| k <= self.mutual_layer) {
                let (x_const, aux_const) = (own.detach(), h_aux.detach());
                let mut next = Vec::with_capacity(self.m);
                for (j, rows) in complement.iter().enumerate() {
                    let Some(rows) = rows else {
                        next.push(None);
                        continue;
                    };
                    let input = match &others {
                        None => x_const.index_select(rows, 0)?,
                        Some(prev) => prev[j].clone().expect("same rows as the layer before"),
                    };
                    let mut pre = layer.own.forward_one_detached(j, &input)?;
                    if let Some(fed) = &layer.fed {
                        let a = aux_const.index_select(rows, 0)?;
                        pre = (pre + fed.forward_one_detached(j, &a)?)?;
                    }
                    next.push(Some(dropout(&act.apply(&pre)?, p, ctx)?));
                }
                if k == self.mutual_layer {
                    let all = assemble(&next, &groups, h.dim(1)?, &h)?;
                    let out = mu.combine_with_constants(&h, &all, &routing)?;
                    gates = Some(out.gates);
                    h = out.output;
                } else {
                    others = Some(next);
                }
            }
            h_aux = dropout(&act.apply(&aux.forward(&h_aux)?)?, p, ctx)?;
            own = h;
        }
        let mut logit = (branch_routing
            .matmul_own(&own, self.head_w.as_tensor())?
            .squeeze(1)?
            + branch_routing.rows_of(self.head_b.as_tensor())?)?;
        let mut aux_logit = self.aux_head.forward(&h_aux)?.squeeze(1)?;
        if let Some(v) = &self.aux_out_w {
            logit = (logit + routing.matmul_own(&h_aux, v.as_tensor())?.squeeze(1)?)?;
        } else if self.cfg.aux_in_output {
            logit = (logit + &aux_logit)?;
        }
        if let Some(o) = &order {
            let inv = inverse_index(o, &device)?;
            logit = logit.index_select(&inv, 0)?;
            aux_logit = aux_logit.index_select(&inv, 0)?;
            gates = gates.map(|g| g.index_select(&inv, 0)).transpose()?;
        }
        self.last = Some(SamlInternals {
            aux_logit,
            gates,
            scenario_sq,
        });
        Ok(logit)
    }

    /// With `scenario_branches = false`, the routing of every sample to the one branch
    /// (`None`: the branches are the scenarios', routed like the rest).
    fn branch_routing(&self, routing: &Routing) -> Result<Option<Routing>> {
        if self.cfg.scenario_branches {
            return Ok(None);
        }
        let dtype = routing.one_hot.dtype();
        Routing::new(
            vec![0; routing.len()],
            1,
            dtype,
            routing.ids_tensor.device(),
        )
        .map(Some)
    }

    /// The first implementation, kept as the reference of the routed one: every branch on
    /// every sample (`[M, n, h]`), the own branch picked by a masked sum.
    #[cfg(test)]
    fn logits_dense(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Tensor> {
        let device = self.vs.device().clone();
        let routing = Routing::of_batch(batch, self.m, DType::F32, &device)?;
        let (x_branch, x_aux, scenario_sq) = self.inputs(batch, &routing, ctx)?;
        let branch_routing = self.branch_routing(&routing)?;
        let br = branch_routing.as_ref().unwrap_or(&routing);

        let act = self.cfg.activation;
        let p = self.cfg.dropout;
        let mut h_aux = x_aux;
        // Branch activations: all M branches ([M, n, h]) up to the mutual unit, then the own
        // branch only ([n, h]).
        let mut all: Option<Tensor> = None;
        let mut own: Option<Tensor> = None;
        let mut gates = None;
        for (k, (layer, aux)) in self.branches.iter().zip(&self.aux).enumerate() {
            let pre = match (&all, &own, &layer.fed) {
                (None, None, _) => layer.own.forward_shared(&x_branch)?,
                (Some(h), _, Some(fed)) => (layer.own.forward(h)? + fed.forward_shared(&h_aux)?)?,
                (None, Some(h), Some(fed)) => {
                    // After the mutual unit: every branch's layer on the own representation,
                    // then the own branch is kept (the others get no gradient).
                    (layer.own.forward_shared(h)? + fed.forward_shared(&h_aux)?)?
                }
                _ => unreachable!("only the first layer has no feed from the auxiliary net"),
            };
            let h = dropout(&act.apply(&pre)?, p, ctx)?;
            let next_aux = dropout(&act.apply(&aux.forward(&h_aux)?)?, p, ctx)?;
            if own.is_some() {
                own = Some(br.select_own(&h)?);
            } else if k == self.mutual_layer {
                own = Some(match &self.mutual {
                    Some(mu) => {
                        let out = mu.forward(&h, &routing)?;
                        gates = Some(out.gates);
                        out.output
                    }
                    None => br.select_own(&h)?,
                });
                all = None;
            } else {
                all = Some(h);
            }
            h_aux = next_aux;
        }
        let h = own.expect("the mutual layer is a hidden layer");
        let n = routing.len();
        let w = br.rows_of(self.head_w.as_tensor())?.reshape((n, ()))?;
        let b = br.rows_of(self.head_b.as_tensor())?;
        let mut logit = ((h * w)?.sum(candle_core::D::Minus1)? + b)?;
        let aux_logit = self.aux_head.forward(&h_aux)?.squeeze(1)?;
        if let Some(v) = &self.aux_out_w {
            let v = routing.rows_of(v.as_tensor())?.reshape((n, ()))?;
            logit = (logit + (&h_aux * v)?.sum(candle_core::D::Minus1)?)?;
        } else if self.cfg.aux_in_output {
            logit = (logit + &aux_logit)?;
        }
        self.last = Some(SamlInternals {
            aux_logit,
            gates,
            scenario_sq,
        });
        Ok(logit)
    }
}

/// For each scenario `m` of a sorted batch, the rows outside its block as an index tensor
/// (`None` when every sample is of scenario `m`).
fn complements(groups: &Groups, device: &Device) -> Result<Vec<Option<Tensor>>> {
    let n = groups.total();
    (0..groups.num_scenarios())
        .map(|m| {
            let (s, l) = groups.block(m);
            if l == n {
                return Ok(None);
            }
            let rows: Vec<u32> = (0..s).chain(s + l..n).map(|i| i as u32).collect();
            Tensor::from_vec(rows, n - l, device).map(Some)
        })
        .collect()
}

/// Every branch's activations `[M, n, d]` from the compacted ones of [`complements`]: branch
/// `m` at the rows of scenario `m` is 0 (the mutual unit gives those entries a zero gate and
/// reads the own branch from the differentiable path instead).
fn assemble(parts: &[Option<Tensor>], groups: &Groups, d: usize, like: &Tensor) -> Result<Tensor> {
    let n = groups.total();
    let zeros = |rows: usize| Tensor::zeros((rows, d), like.dtype(), like.device());
    let branches = parts
        .iter()
        .enumerate()
        .map(|(m, h)| {
            let Some(h) = h else { return zeros(n) };
            let (s, l) = groups.block(m);
            let mut pieces = Vec::with_capacity(3);
            if s > 0 {
                pieces.push(h.narrow(0, 0, s)?);
            }
            if l > 0 {
                pieces.push(zeros(l)?);
            }
            if n - s - l > 0 {
                pieces.push(h.narrow(0, s, n - s - l)?);
            }
            Tensor::cat(&pieces, 0)
        })
        .collect::<Result<Vec<_>>>()?;
    Tensor::stack(&branches, 0)
}

/// `KL(Bernoulli(sigmoid(z)) || Bernoulli(sigmoid(za)))` per sample, stable in the logits.
pub fn bernoulli_kl(z: &Tensor, za: &Tensor) -> Result<Tensor> {
    // log sigmoid(x) = -softplus(-x); log(1 - sigmoid(x)) = -softplus(x).
    let softplus =
        |x: &Tensor| -> Result<Tensor> { x.relu()? + (x.abs()?.neg()?.exp()? + 1.0)?.log()? };
    let p = (z.neg()?.exp()? + 1.0)?.recip()?;
    let log_p = softplus(&z.neg()?)?.neg()?;
    let log_1p = softplus(z)?.neg()?;
    let log_q = softplus(&za.neg()?)?.neg()?;
    let log_1q = softplus(za)?.neg()?;
    let a = (&p * (log_p - log_q)?)?;
    let b = (p.affine(-1.0, 1.0)? * (log_1p - log_1q)?)?;
    a + b
}

impl Model for Saml {
    fn name(&self) -> String {
        "saml".into()
    }
    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }
    fn schema(&self) -> &Schema {
        &self.schema
    }
    fn device(&self) -> &Device {
        self.vs.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        Ok(vec![self.logits(batch, ctx)?])
    }
    fn loss(&mut self, batch: &Batch, outputs: &[Tensor]) -> Result<Tensor> {
        let main = rec_nn::loss::task_loss(&self.schema, batch, outputs)?;
        let Some(last) = &self.last else {
            candle_core::bail!("saml: loss called before forward");
        };
        let mut total = main;
        if self.cfg.aux_loss_weight > 0.0 {
            let aux = rec_nn::loss::task_loss(
                &self.schema,
                batch,
                std::slice::from_ref(&last.aux_logit),
            )?;
            total = (total + aux.affine(self.cfg.aux_loss_weight, 0.0)?)?;
        }
        if self.cfg.mutual_kl > 0.0 {
            let kl = bernoulli_kl(&outputs[0], &last.aux_logit.detach())?;
            let (_, w, _) = rec_nn::loss::label_weights(&batch.labels[0], batch.weights.as_deref());
            let kl = match w {
                None if kl.dims1()? == 0 => None,
                None => Some(kl.mean_all()?),
                // No labelled sample with weight: nothing to average (not 0/0).
                Some(w) if w.iter().all(|&x| x == 0.0) => None,
                Some(w) => {
                    let w = Tensor::from_vec(w, kl.dims1()?, kl.device())?;
                    Some((kl * &w)?.sum_all()?.broadcast_div(&w.sum_all()?)?)
                }
            };
            if let Some(kl) = kl {
                total = (total + kl.affine(self.cfg.mutual_kl, 0.0)?)?;
            }
        }
        if let Some(sq) = &last.scenario_sq {
            total = (total + sq.affine(self.cfg.scenario_l2, 0.0)?)?;
        }
        Ok(total)
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.vs.vars()
    }
    fn buffers(&self) -> Vec<(String, Var)> {
        self.vs.buffers()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        let mut v = self.input.tables();
        if let Some(s) = &self.scen_emb {
            v.extend(s.tables());
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        let mut v = self.input.tables_mut();
        if let Some(s) = &mut self.scen_emb {
            v.extend(s.tables_mut());
        }
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn later_switches_are_serialized_only_when_on() {
        // Experiment cache keys hold the serialized configuration: the default must keep the
        // form it had before the switches existed.
        let off = serde_json::to_value(SamlConfig::default()).unwrap();
        for key in [
            "scenario_zero_init",
            "shared_branches",
            "aux_head_per_scenario",
            "scenario_norm",
        ] {
            assert!(off.get(key).is_none(), "{off}");
        }
        let ons = [
            SamlConfig {
                scenario_zero_init: true,
                ..SamlConfig::default()
            },
            SamlConfig {
                shared_branches: true,
                ..SamlConfig::default()
            },
            SamlConfig {
                aux_head_per_scenario: true,
                ..SamlConfig::default()
            },
            SamlConfig {
                scenario_norm: true,
                ..SamlConfig::default()
            },
        ];
        let keys = [
            "scenario_zero_init",
            "shared_branches",
            "aux_head_per_scenario",
            "scenario_norm",
        ];
        for (on, key) in ons.iter().zip(keys) {
            let v = serde_json::to_value(on).unwrap();
            assert_eq!(v[key], serde_json::json!(true));
            let back: SamlConfig = serde_json::from_value(v).unwrap();
            assert_eq!(&back, on);
        }
        // On by default: serialized only when off.
        assert!(off.get("scenario_branches").is_none(), "{off}");
        let one = SamlConfig {
            scenario_branches: false,
            mutual: false,
            ..SamlConfig::default()
        };
        let v = serde_json::to_value(&one).unwrap();
        assert_eq!(v["scenario_branches"], serde_json::json!(false));
        assert_eq!(serde_json::from_value::<SamlConfig>(v).unwrap(), one);
    }
    use super::*;
    use crate::testing::{input, store};
    use rec_nn::gradcheck::{
        GradCheck, check_all_params_get_gradient, check_gradients, weighted_sum,
    };

    /// A scenario attention over width 4 with non-zero projections (they start at 0, which
    /// would leave the scenario terms out of the check), and its inputs.
    struct Case {
        vs: VarStore,
        att: ScenarioAttention,
        routing: Routing,
        target: Var,
        behaviours: Var,
        mask: Tensor,
    }

    fn case(ids: Vec<u32>) -> Result<Case> {
        let mut vs = store();
        let att = ScenarioAttention::new(&mut vs, 3, 4, &MlpConfig::new(&[6]))?;
        att.proj_q
            .set(&input(&[3, 16], 21)?.as_tensor().affine(0.5, 0.0)?)?;
        att.proj_k
            .set(&input(&[3, 16], 22)?.as_tensor().affine(0.5, 0.0)?)?;
        let n = ids.len();
        let routing = Routing::new(ids, 3, DType::F64, &Device::Cpu)?;
        let mask: Vec<f64> = (0..n * 5)
            .map(|i| if i % 5 <= (i / 5) % 5 { 1.0 } else { 0.0 })
            .collect();
        Ok(Case {
            vs,
            att,
            routing,
            target: input(&[n, 4], 1)?,
            behaviours: input(&[n, 5, 4], 2)?,
            mask: Tensor::from_vec(mask, (n, 5), &Device::Cpu)?,
        })
    }

    impl Case {
        fn loss(&self) -> Result<Tensor> {
            let out = self.att.forward(
                self.target.as_tensor(),
                self.behaviours.as_tensor(),
                &self.mask,
                &self.routing,
                &mut Ctx::eval(),
            )?;
            weighted_sum(&out, 3)
        }
    }

    /// SAML with random dense parameters (so that untied branches, non-zero projections and
    /// a non-zero affinity all matter) and SGD tables, built twice from the same seed.
    fn random_saml(schema: &Schema, cfg: &SamlConfig) -> Result<Saml> {
        use rec_nn::embedding::{DefaultTableFactory, TableOptions, TablesConfig};
        use rec_nn::optim::OptimizerConfig;
        let d = Device::Cpu;
        let tables = TablesConfig {
            options: TableOptions {
                optimizer: OptimizerConfig::sgd(1.0),
                ..Default::default()
            },
            ..TablesConfig::default()
        };
        let mut f = DefaultTableFactory::new(tables, 3, &d);
        let mut factory = |spec: &rec_data::FieldSpec, dim: usize| f.build(spec, dim);
        let model = Saml::new(schema, cfg, &mut factory, &d, 3)?;
        for (k, (_, v)) in model.vs.vars().into_iter().enumerate() {
            let r = input(v.dims(), 100 + k as u64)?
                .as_tensor()
                .to_dtype(v.dtype())?;
            v.set(&r.affine(0.6, 0.0)?)?;
        }
        Ok(model)
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> Result<f32> {
        (a - b)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()
    }

    #[test]
    fn routed_computation_equals_the_dense_one_with_its_gradients() -> Result<()> {
        use crate::testing::planted;
        use rec_nn::model::Model as _;
        // Unsorted scenarios, a behaviour sequence (scenario attention), the mutual unit at
        // the first and at the last layer, and without it.
        let p = planted(&[30, 20, 14], &[0, 0, 1], 3, 7);
        let all = p.data.range(0, 48);
        assert!(all.scenarios().windows(2).any(|w| w[0] > w[1]));
        // Also a batch without scenario 2 and a batch of scenario 0 alone (the mutual unit's
        // constant inputs over all rows / over none).
        let rows_where = |keep: &dyn Fn(u32) -> bool| -> Vec<usize> {
            let sc = p.data.scenarios();
            (0..sc.len().min(60)).filter(|&i| keep(sc[i])).collect()
        };
        let absent = p.data.gather(&rows_where(&|s| s != 2));
        let alone = p.data.gather(&rows_where(&|s| s == 0));
        assert!(!absent.is_empty() && !alone.is_empty());
        // Branches as wide as the auxiliary net, narrower, and of mixed widths.
        // The last two: branch layers factored as STAR's (`shared_branches`).
        let variants = [
            (true, None, true, None, false),
            (true, Some(0), true, None, false),
            (false, None, true, None, false),
            (true, None, false, None, false),
            (true, None, true, Some([3, 2, 2]), false),
            (true, Some(1), true, Some([5, 9, 1]), false),
            (true, Some(1), true, Some([5, 9, 1]), true),
            (false, None, true, None, true),
        ];
        // The same, with the auxiliary network read through a head per scenario; and with
        // the global input normalized by scenario (`scenario_norm`). The last three: one
        // branch for every scenario (`scenario_branches = false`, the mutual unit off), with
        // the per-scenario parts that stay routed by scenario.
        let variants: Vec<_> = variants
            .into_iter()
            .map(|v| (v, false, false, false))
            .chain([
                ((true, None, true, None, false), true, false, false),
                (
                    (true, Some(1), true, Some([5, 9, 1]), true),
                    true,
                    false,
                    false,
                ),
                ((true, None, true, None, false), false, true, false),
                (
                    (true, Some(1), true, Some([5, 9, 1]), true),
                    true,
                    true,
                    false,
                ),
                ((false, None, true, None, false), false, false, true),
                (
                    (false, None, true, Some([5, 9, 1]), false),
                    true,
                    true,
                    true,
                ),
                ((false, None, false, None, true), false, true, true),
            ])
            .collect();
        for (batch, ((mutual, layer, aux_in_output, branch, shared), aux_head, norm, one)) in
            [&all, &absent, &alone]
                .into_iter()
                .flat_map(|b| variants.iter().map(move |&v| (b, v)))
        {
            let cfg = SamlConfig {
                dim: 4,
                hidden: vec![8, 6, 5],
                branch_hidden: branch.map(|b| b.to_vec()),
                tied_init: false,
                mutual,
                mutual_layer: layer,
                mutual_kl: 0.3,
                aux_in_output,
                scenario_l2: 0.7,
                shared_branches: shared,
                aux_head_per_scenario: aux_head,
                scenario_norm: norm,
                scenario_branches: !one,
                ..SamlConfig::default()
            };
            let what = format!(
                "mutual {mutual}, layer {layer:?}, aux in output {aux_in_output}, branches \
                 {branch:?}, shared {shared}, aux head per scenario {aux_head}, scenario norm \
                 {norm}, one branch {one}, scenarios {:?}",
                batch
                    .scenarios()
                    .iter()
                    .collect::<std::collections::BTreeSet<_>>()
            );
            let mut routed = random_saml(&batch.schema, &cfg)?;
            let mut dense = random_saml(&batch.schema, &cfg)?;
            let mut ctx = Ctx::eval();
            ctx.train = true;
            let zr = routed.logits(batch, &mut ctx)?;
            let zd = dense.logits_dense(batch, &mut ctx)?;
            assert!(max_diff(&zr, &zd)? < 1e-5, "{what}: logits");
            let (lr, ld) = (routed.last.clone().unwrap(), dense.last.clone().unwrap());
            assert!(max_diff(&lr.aux_logit, &ld.aux_logit)? < 1e-5, "{what}");
            let (sr, sd) = (lr.scenario_sq.unwrap(), ld.scenario_sq.unwrap());
            assert!(max_diff(&sr, &sd)? < 1e-5, "{what}: scenario penalty");
            assert_eq!(lr.gates.is_some(), mutual);
            if let (Some(a), Some(b)) = (&lr.gates, &ld.gates) {
                assert!(max_diff(a, b)? < 1e-5, "{what}: gates");
            }
            let loss_r = routed.loss(batch, &[zr])?;
            let loss_d = dense.loss(batch, &[zd])?;
            assert!(max_diff(&loss_r, &loss_d)? < 1e-5, "{what}: loss");
            let (gr, gd) = (loss_r.backward()?, loss_d.backward()?);
            let vars_d = dense.vs.vars();
            for ((name, vr), (_, vd)) in routed.vs.vars().iter().zip(&vars_d) {
                match (gr.get(vr.as_tensor()), gd.get(vd.as_tensor())) {
                    (Some(a), Some(b)) => {
                        let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
                        let diff = max_diff(a, b)?;
                        assert!(diff <= 1e-5 * scale.max(1.0), "{what}: {name}: {diff}");
                    }
                    (a, b) => assert_eq!(a.is_some(), b.is_some(), "{what}: {name}"),
                }
            }
            // Table gradients, through one SGD step (lr 1) of every table.
            for (model, g) in [(&mut routed, &gr), (&mut dense, &gd)] {
                for (_, t) in model.tables_mut() {
                    t.apply_gradients(g)?;
                }
            }
            for ((name, a), (_, b)) in routed.tables().iter().zip(dense.tables()) {
                let (mut ma, mut mb) = (rec_nn::TensorMap::new(), rec_nn::TensorMap::new());
                a.save("", &mut ma)?;
                b.save("", &mut mb)?;
                for (k, ta) in &ma {
                    let diff = max_diff(ta, &mb[k])?;
                    assert!(diff < 1e-5, "{what}: table {name} {k}: {diff}");
                }
            }
        }
        Ok(())
    }

    /// `scenario_branches = false` is SAML whose per-scenario branches and heads are all one:
    /// its logits equal those of SAML with `M` copies of its branch, and the gradient of its
    /// branch is the sum of the copies' gradients (each copy is trained by its scenario's
    /// samples). The scenario embeddings, attention and auxiliary network are the same.
    #[test]
    fn one_branch_is_every_scenario_sharing_the_same_branch() -> Result<()> {
        use crate::testing::planted;
        let p = planted(&[30, 20, 14], &[0, 0, 1], 3, 7);
        let batch = p.data.range(0, 48);
        // With the per-scenario parts that stay routed by scenario: scenario embeddings and
        // attention (on by default), a head per scenario on the auxiliary network and the
        // input normalized by scenario.
        let base = SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            branch_hidden: Some(vec![5, 3]),
            mutual: false,
            aux_head_per_scenario: true,
            scenario_norm: true,
            ..SamlConfig::default()
        };
        let one_cfg = SamlConfig {
            scenario_branches: false,
            ..base.clone()
        };
        let mut one = random_saml(&batch.schema, &one_cfg)?;
        let mut many = random_saml(&batch.schema, &base)?;
        let m = many.num_scenarios();
        assert_eq!(m, 3);
        let one_vars: std::collections::BTreeMap<String, Var> = one.vs.vars().into_iter().collect();
        let mut stacked = Vec::new();
        for (name, v) in many.vs.vars() {
            let src = one_vars
                .get(&name)
                .unwrap_or_else(|| panic!("{name} missing"));
            if src.dims() == v.dims() {
                v.set(src.as_tensor())?;
            } else {
                // One branch `[1, ...]` against `M` of them `[M, ...]`.
                assert_eq!((src.dims()[0], v.dims()[0]), (1, m), "{name}");
                assert_eq!(src.dims()[1..], v.dims()[1..], "{name}");
                v.set(&Tensor::cat(&vec![src.as_tensor(); m], 0)?)?;
                stacked.push(name);
            }
        }
        // Every branch layer and both head parameters.
        assert_eq!(stacked.len(), 2 + 3 + 2, "{stacked:?}");
        let mut ctx = Ctx::eval();
        ctx.train = true;
        let z1 = one.logits(&batch, &mut ctx)?;
        let zm = many.logits(&batch, &mut ctx)?;
        assert!(max_diff(&z1, &zm)? < 1e-5);
        let (g1, gm) = (
            one.loss(&batch, &[z1])?.backward()?,
            many.loss(&batch, &[zm])?.backward()?,
        );
        for (name, v) in many.vs.vars() {
            let src = &one_vars[&name];
            let (a, b) = (g1.get(src.as_tensor()), gm.get(v.as_tensor()));
            let (Some(a), Some(b)) = (a, b) else {
                assert_eq!(a.is_some(), b.is_some(), "{name}");
                continue;
            };
            let b = if stacked.contains(&name) {
                // Every copy got a gradient from its own scenario's samples.
                for k in 0..m {
                    let part = b.narrow(0, k, 1)?.abs()?.flatten_all()?.max(0)?;
                    assert!(part.to_scalar::<f32>()? > 0.0, "{name}: copy {k}");
                }
                b.sum_keepdim(0)?
            } else {
                b.clone()
            };
            let scale = b.abs()?.flatten_all()?.max(0)?.to_scalar::<f32>()?;
            assert!(max_diff(a, &b)? <= 1e-5 * scale.max(1.0), "{name}");
        }
        Ok(())
    }

    #[test]
    fn one_branch_needs_the_mutual_unit_off() {
        use crate::testing::planted;
        let p = planted(&[30, 20, 14], &[0, 0, 1], 3, 7);
        let cfg = SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            scenario_branches: false,
            ..SamlConfig::default()
        };
        let err = random_saml(&p.data.schema, &cfg)
            .err()
            .expect("mutual is on");
        assert!(err.to_string().contains("mutual = false"), "{err}");
    }

    /// `scenario_norm`: the input normalization's running statistics are buffers (saved
    /// with the model) that move in training and not in evaluation; its scenario rows learn
    /// from their own scenario's samples only, its shared scale and shift from every sample.
    #[test]
    fn scenario_norm_normalizes_the_global_input_by_scenario() -> Result<()> {
        use crate::testing::planted;
        use rec_nn::model::Model as _;
        let p = planted(&[30, 20, 14], &[0, 0, 1], 3, 7);
        let batch = p.data.range(0, 48);
        let cfg = SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            scenario_norm: true,
            ..SamlConfig::default()
        };
        let mut model = random_saml(&batch.schema, &cfg)?;
        let stats = |m: &Saml| -> Result<Vec<f32>> {
            let (mean, var) = m.input_norm.as_ref().expect("on").running_stats();
            let mut v = mean.as_tensor().flatten_all()?.to_vec1::<f32>()?;
            v.extend(var.as_tensor().flatten_all()?.to_vec1::<f32>()?);
            Ok(v)
        };
        let buffers: Vec<String> = model.buffers().into_iter().map(|(n, _)| n).collect();
        assert!(
            buffers.contains(&"input_norm.running_mean".to_string()),
            "{buffers:?}"
        );
        let start = stats(&model)?;
        model.forward(&batch, &mut Ctx::eval())?;
        assert_eq!(
            stats(&model)?,
            start,
            "evaluation moved the running statistics"
        );
        let mut train = Ctx::eval();
        train.train = true;
        model.forward(&batch, &mut train)?;
        assert_ne!(
            stats(&model)?,
            start,
            "training left the running statistics"
        );

        let rows: Vec<usize> = (0..batch.len())
            .filter(|&i| batch.scenarios()[i] == 0)
            .collect();
        let only0 = batch.gather(&rows);
        let out = model.forward(&only0, &mut train)?;
        let grads = model.loss(&only0, &out)?.backward()?;
        let grad = |name: &str| -> Tensor {
            let (_, v) = model
                .vs
                .vars()
                .into_iter()
                .find(|(n, _)| n == name)
                .unwrap_or_else(|| panic!("no variable {name}"));
            grads.get(v.as_tensor()).expect("a gradient").clone()
        };
        for name in ["input_norm.gamma_s", "input_norm.beta_s"] {
            let g = grad(name);
            for s in 0..3 {
                let n = g.get(s)?.abs()?.sum_all()?.to_scalar::<f32>()?;
                assert_eq!(n > 0.0, s == 0, "{name} row {s}: {n}");
            }
        }
        for name in ["input_norm.gamma", "input_norm.beta"] {
            assert!(
                grad(name).abs()?.sum_all()?.to_scalar::<f32>()? > 0.0,
                "{name}"
            );
        }
        Ok(())
    }

    #[test]
    fn branch_widths_shape_the_branches_and_heads_only() -> Result<()> {
        use crate::testing::planted;
        let p = planted(&[20, 12, 9], &[0, 0, 1], 3, 5);
        let cfg = |branch: Option<Vec<usize>>| SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            branch_hidden: branch,
            ..SamlConfig::default()
        };
        let shape = |m: &Saml, name: &str| -> Vec<usize> {
            let vars = m.vs.vars();
            let v = vars.iter().find(|(n, _)| n == name).expect(name);
            v.1.as_tensor().dims().to_vec()
        };
        let wide = random_saml(&p.data.schema, &cfg(None))?;
        let narrow = random_saml(&p.data.schema, &cfg(Some(vec![3, 2])))?;
        // The auxiliary network keeps `hidden`; branch layers, the feed from the auxiliary
        // network and the heads take `branch_hidden`.
        assert_eq!(shape(&wide, "aux.1.weight"), shape(&narrow, "aux.1.weight"));
        let first = shape(&wide, "branch.0.weight");
        assert_eq!(first[2], 8);
        assert_eq!(shape(&narrow, "branch.0.weight"), vec![3, first[1], 3]);
        assert_eq!(shape(&narrow, "branch.1.own.weight"), vec![3, 3, 2]);
        assert_eq!(shape(&narrow, "branch.1.fed.weight"), vec![3, 8, 2]);
        assert_eq!(shape(&narrow, "head.weight"), vec![3, 2, 1]);
        let mut narrow = narrow;
        let z = narrow.logits(&p.data, &mut Ctx::eval())?;
        assert_eq!(z.dims(), &[p.data.len()]);
        // `hidden` written out as `branch_hidden` is the default model, draw for draw.
        let mut same = random_saml(&p.data.schema, &cfg(Some(vec![8, 6])))?;
        let mut wide = wide;
        let (a, b) = (
            same.logits(&p.data, &mut Ctx::eval())?,
            wide.logits(&p.data, &mut Ctx::eval())?,
        );
        assert_eq!(max_diff(&a, &b)?, 0.0);
        for bad in [vec![3], vec![3, 2, 2], vec![3, 0]] {
            let err = random_saml(&p.data.schema, &cfg(Some(bad.clone())))
                .err()
                .unwrap_or_else(|| panic!("{bad:?} was accepted"))
                .to_string();
            assert!(err.contains("branch_hidden"), "{bad:?}: {err}");
        }
        Ok(())
    }

    /// With `shared_branches`, a batch of one scenario trains the shared factors and that
    /// scenario's own factors, and no other branch's; the factored branches start equal.
    #[test]
    fn shared_branch_factors_learn_from_every_scenario_own_ones_from_theirs() -> Result<()> {
        use crate::testing::planted;
        use rec_nn::model::Model as _;
        let p = planted(&[20, 12, 9], &[0, 0, 1], 0, 5);
        let cfg = SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            branch_hidden: Some(vec![4, 3]),
            shared_branches: true,
            ..SamlConfig::default()
        };
        let mut f = rec_nn::embedding::DefaultTableFactory::new(
            rec_nn::embedding::TablesConfig::default(),
            3,
            &Device::Cpu,
        );
        let mut factory = |spec: &rec_data::FieldSpec, dim: usize| f.build(spec, dim);
        let fresh = Saml::new(&p.data.schema, &cfg, &mut factory, &Device::Cpu, 3)?;
        let vars = fresh.vs.vars();
        let get = |name: &str| vars.iter().find(|(n, _)| n == name).expect(name).1.clone();
        for name in [
            "branch.0.weight",
            "branch.1.own.weight",
            "branch.1.fed.weight",
        ] {
            let v = get(name).as_tensor().flatten_all()?.to_vec1::<f32>()?;
            assert!(v.iter().all(|&x| x == 1.0), "{name} starts at 1");
        }
        assert_eq!(get("branch.1.fed.shared_weight").dims(), &[1, 8, 3]);
        let mut model = random_saml(&p.data.schema, &cfg)?;
        let sc = p.data.scenarios();
        for s in 0..3u32 {
            let rows: Vec<usize> = (0..sc.len()).filter(|&i| sc[i] == s).collect();
            let batch = p.data.gather(&rows);
            let mut ctx = Ctx::eval();
            ctx.train = true;
            let z = model.logits(&batch, &mut ctx)?;
            let grads = model.loss(&batch, &[z])?.backward()?;
            for (name, v) in model.vs.vars() {
                if !name.starts_with("branch.") {
                    continue;
                }
                let g = grads.get(v.as_tensor()).expect(&name);
                let norm = |t: &Tensor| -> Result<f32> {
                    t.sqr()?.sum_all()?.to_dtype(DType::F32)?.to_scalar::<f32>()
                };
                if name.contains("shared_") {
                    assert!(norm(g)? > 0.0, "scenario {s}: {name}");
                } else {
                    for m in 0..3 {
                        let own = norm(&g.get(m)?)?;
                        assert_eq!(own > 0.0, m == s as usize, "scenario {s}: {name}[{m}]");
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn the_output_adds_the_auxiliary_logit_when_asked() -> Result<()> {
        use crate::testing::planted;
        let p = planted(&[20, 12, 9], &[0, 0, 1], 3, 5);
        let batch = p.data.range(0, 41);
        let cfg = |aux_in_output| SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            tied_init: false,
            aux_in_output,
            ..SamlConfig::default()
        };
        let mut with = random_saml(&batch.schema, &cfg(true))?;
        let mut without = random_saml(&batch.schema, &cfg(false))?;
        let zw = with.logits(&batch, &mut Ctx::eval())?;
        let zo = without.logits(&batch, &mut Ctx::eval())?;
        let aux = without.last.clone().unwrap().aux_logit;
        assert!(max_diff(&aux, &with.last.clone().unwrap().aux_logit)? < 1e-6);
        assert!(max_diff(&zw, &(zo + &aux)?)? < 1e-5);
        assert!(
            aux.abs()?.sum_all()?.to_scalar::<f32>()? > 1e-3,
            "aux logits are not all 0"
        );
        Ok(())
    }

    /// A head per scenario on the auxiliary network: with every `v_s` equal to the auxiliary
    /// head (bias 0), the logits are those of the shared auxiliary logit; changing `v_1` moves
    /// scenario 1's samples only; and it is refused without `aux_in_output`.
    #[test]
    fn a_per_scenario_aux_head_reads_the_auxiliary_network_per_scenario() -> Result<()> {
        use crate::testing::planted;
        let p = planted(&[20, 12, 9], &[0, 0, 1], 3, 5);
        let batch = p.data.range(0, 41);
        let cfg = |per_scenario| SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            tied_init: false,
            aux_head_per_scenario: per_scenario,
            ..SamlConfig::default()
        };
        let mut per = random_saml(&batch.schema, &cfg(true))?;
        let mut plain = random_saml(&batch.schema, &cfg(false))?;
        let per_vars = per.vs.vars();
        for (name, v) in plain.vs.vars() {
            let (_, src) = per_vars.iter().find(|(n, _)| *n == name).expect(&name);
            v.set(src.as_tensor())?;
        }
        let aux_w = per.aux_head.weight().as_tensor().clone(); // [1, 6]
        for m in [&per, &plain] {
            let b = m.aux_head.bias().unwrap();
            b.set(&b.as_tensor().zeros_like()?)?;
        }
        let v = per.aux_out_w.clone().unwrap(); // [3, 6, 1]
        let copies = aux_w.t()?.unsqueeze(0)?.repeat((3, 1, 1))?;
        v.set(&copies)?;
        let zp = per.logits(&batch, &mut Ctx::eval())?;
        let zs = plain.logits(&batch, &mut Ctx::eval())?;
        assert!(max_diff(&zp, &zs)? < 1e-5);
        let moved = Tensor::cat(
            &[
                copies.get(0)?.unsqueeze(0)?,
                (copies.get(1)? + 0.5)?.unsqueeze(0)?,
                copies.get(2)?.unsqueeze(0)?,
            ],
            0,
        )?;
        v.set(&moved)?;
        let z2 = per.logits(&batch, &mut Ctx::eval())?;
        let d = (z2 - &zp)?.abs()?.to_vec1::<f32>()?;
        for (i, s) in batch.scenarios().iter().enumerate() {
            assert_eq!(d[i] > 1e-6, *s == 1, "sample {i} of scenario {s}: {}", d[i]);
        }
        let bad = SamlConfig {
            aux_in_output: false,
            ..cfg(true)
        };
        let err = random_saml(&batch.schema, &bad).err().expect("refused");
        assert!(err.to_string().contains("aux_in_output"), "{err}");
        Ok(())
    }

    #[test]
    fn the_scenario_penalty_is_the_mean_squared_norm_and_only_in_training() -> Result<()> {
        use crate::testing::planted;
        use rec_nn::model::Model as _;
        let p = planted(&[20, 12, 9], &[0, 0, 1], 3, 5);
        let batch = p.data.range(0, 41);
        let cfg = |scenario_l2| SamlConfig {
            dim: 4,
            hidden: vec![8, 6],
            scenario_l2,
            ..SamlConfig::default()
        };
        let mut ctx = Ctx::eval();
        ctx.train = true;
        let mut on = random_saml(&batch.schema, &cfg(0.5))?;
        let mut off = random_saml(&batch.schema, &cfg(0.0))?;
        // With dropout 0, training and evaluation compute the same logits.
        let z_on = on.logits(&batch, &mut ctx)?;
        let z_off = off.logits(&batch, &mut ctx)?;
        assert!(off.last.as_ref().unwrap().scenario_sq.is_none());
        // The penalty by hand: every scenario vector of every sample.
        let routing = Routing::of_batch(&batch, 3, DType::F32, &Device::Cpu)?;
        let vs = on
            .scen_emb
            .as_mut()
            .unwrap()
            .forward(&batch, &routing.ids, false)?;
        let mut by_hand = 0.0f64;
        for v in &vs {
            by_hand += v.sqr()?.sum_all()?.to_scalar::<f32>()? as f64;
        }
        by_hand /= batch.len() as f64;
        assert!(by_hand > 1e-3);
        let l_on = on.loss(&batch, &[z_on])?.to_scalar::<f32>()? as f64;
        let l_off = off.loss(&batch, &[z_off])?.to_scalar::<f32>()? as f64;
        assert!(
            (l_on - l_off - 0.5 * by_hand).abs() < 1e-4 * (1.0 + l_on.abs()),
            "{l_on} - {l_off} != 0.5 * {by_hand}"
        );
        // Not in evaluation.
        on.logits(&batch, &mut Ctx::eval())?;
        assert!(on.last.as_ref().unwrap().scenario_sq.is_none());
        Ok(())
    }

    #[test]
    fn scenario_attention_finite_difference_gradients() -> Result<()> {
        let c = case(vec![0, 2, 1, 2, 0])?;
        let mut params = c.vs.vars();
        params.push(("target".into(), c.target.clone()));
        params.push(("behaviours".into(), c.behaviours.clone()));
        let report = check_gradients(&params, || c.loss(), &GradCheck::default())?;
        assert!(report.checked > 50, "{} entries checked", report.checked);
        // Every parameter but the score bias (a softmax over positions cancels a shift of
        // every score) receives a gradient.
        params.retain(|(n, _)| !n.ends_with("score.bias"));
        check_all_params_get_gradient(&params, &c.loss()?)
    }

    #[test]
    fn scenario_projections_learn_only_from_their_scenario() -> Result<()> {
        // No sample of scenario 1: its projection rows get exactly zero gradient.
        let c = case(vec![0, 2, 2, 0])?;
        let grads = c.loss()?.backward()?;
        for p in [&c.att.proj_q, &c.att.proj_k] {
            let g = grads
                .get(p.as_tensor())
                .expect("projections get a gradient");
            let rows = g.sqr()?.sum(1)?.to_vec1::<f64>()?;
            assert!(rows[0] > 0.0 && rows[2] > 0.0 && rows[1] == 0.0, "{rows:?}");
        }
        Ok(())
    }

    #[test]
    fn zero_projections_score_like_a_plain_attention() -> Result<()> {
        // With P = 0 the scenario attention is a DIN attention over (target, behaviours) with
        // its own scoring MLP: the same for every scenario.
        let c = case(vec![0, 1, 2])?;
        c.att.proj_q.set(&c.att.proj_q.zeros_like()?)?;
        c.att.proj_k.set(&c.att.proj_k.zeros_like()?)?;
        let (t, b) = (c.target.as_tensor(), c.behaviours.as_tensor());
        let scen = c.att.forward(t, b, &c.mask, &c.routing, &mut Ctx::eval())?;
        let plain = c
            .att
            .attention
            .forward(t, b, b, &c.mask, &mut Ctx::eval())?
            .output;
        let diff = (scen - plain)?.abs()?.max_all()?.to_scalar::<f64>()?;
        assert!(diff < 1e-12, "{diff}");
        Ok(())
    }
}
