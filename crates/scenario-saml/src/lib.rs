//! Multi-scenario recommendation: SAML (Scenario-aware Mutual Learning) and the baselines it is
//! measured against, Shared, Separate, MMoE and STAR, on the shared candle layer (`rec-nn`).
//!
//! One model for many scenarios (countries, channels, pages, age groups) that beats both one
//! model for all and one model per scenario: SAML keeps a global representation of every
//! sample next to a scenario-specific one, models what all scenarios share in an auxiliary
//! network, gives each scenario its own branch fed layer by layer by the auxiliary network, and
//! lets each branch borrow from the others through a mutual unit whose learned scenario-affinity
//! matrix says which scenarios help which.
//!
//! # What is from the paper and what is ours
//! Source: "Scenario-aware and Mutual-based approach for Multi-scenario Recommendation in
//! E-Commerce" (ICDM Workshops 2020). No code is public, and only the abstract and secondary
//! descriptions could be read, so several parts are a reconstruction. Tags:
//! **\[paper\]** the part is described by the paper; **\[ours\]** the form is this crate's choice.
//! Every part is a switch of [`SamlConfig`] so that an ablation shows whether it earns its place.
//!
//! | part | status | where |
//! |---|---|---|
//! | scenario-aware embedding: a global and a per-scenario vector per field, kept apart | \[paper\] | [`ScenarioEmbedding`] |
//! | per-scenario tables as one table over virtual IDs `id * M + s`; per-field choice | \[ours\] | [`ScenarioEmbedding`] |
//! | scenario-aware attention: global and scenario attention over the behaviours, same values | \[paper\] | [`Saml`] |
//! | DIN scoring `MLP([q; k; q*k; q-k])`; scenario query/key projections `I + P[s]` | \[ours\] | [`Saml`], [`InputLayer`] |
//! | auxiliary network over the global representation, with its own loss | \[paper\] | [`Saml`] |
//! | one branch per scenario, layer `k` reading `[h_m^(k-1); h_aux^(k-1)]` | \[paper\] | [`Saml`] |
//! | branch `m` updated only by scenario `m`'s samples (its gradient; Adam's momentum still moves it on a batch without scenario `m`) | \[paper\] | SAML: [`routed::routed_matmul`] on a batch sorted by scenario; MMoE and the mutual unit: [`Routing::select_own`], [`MutualUnit`] |
//! | mutual unit: cosine + learned affinity gates, stop-gradient borrowing | [paper; equations ours] | [`MutualUnit`] |
//! | loss `BCE(y) + lambda_aux BCE(y_aux)`, `lambda_aux = 1` | [paper; weights ours] | [`Saml`] |
//! | optional mutual-learning term `mu KL(y \|\| stopgrad(y_aux))` (`mutual_kl`, off) | \[ours\] | [`SamlConfig::mutual_kl`] |
//! | the auxiliary logit added to every branch's output logit (`aux_in_output`, on) | \[ours\] | [`Saml`] |
//! | mini-batch L2 penalty on the scenario vectors (`scenario_l2 = 1`): a scenario vector survives only where its scenario's data support it | \[ours\] | [`Saml`] |
//! | branches narrower than the auxiliary network (`branch_hidden`, default as wide): each branch a scenario correction to the auxiliary network rather than a whole network | \[ours\] | [`SamlConfig::branch_hidden`] |
//! | stacked `[M, in, out]` weights; each sample through its own branch, the batch sorted by scenario | \[ours\] | [`BatchedLinear`], [`routed`] |
//!
//! # Models
//! - [`Saml`] ([`SamlConfig`]).
//! - [`Shared`]: one network, scenario id as a feature; [`Separate`]: one network per scenario,
//!   trained on its scenario only (both [`DnnConfig`]).
//! - [`Mmoe`]: MMoE with one gate and one tower per scenario ([`MmoeConfig`]).
//! - [`Star`]: STAR with partitioned normalization ([`PartitionedNorm`]) and an auxiliary
//!   network that alone reads the scenario indicator ([`StarConfig`]).
//!
//! Every model predicts one binary task, reads the scenario from the schema's scenario field
//! (`num_scenarios` of them), shares one input layer ([`InputLayer`]: field embeddings, and DIN
//! attention when the data carry a behaviour sequence), and works with any
//! [`EmbeddingTable`](rec_nn::EmbeddingTable) the [`TableFactory`](rec_nn::embedding::TableFactory)
//! hands it (full, hashed, QR, frequency, CEL's clustered table).
//!
//! # Cost and what to expect
//! - SAML sorts each batch by scenario and runs every sample through its own branch only,
//!   one matmul per scenario block with a hand-written backward ([`routed`]): the trained
//!   dense work is the auxiliary net plus one branch (whose layers read both the branch and the
//!   auxiliary net). The mutual unit also needs the other `M - 1` branches' outputs for every
//!   sample, as constants: a forward-only pass, up to the mutual layer. With equal hidden
//!   widths that is roughly `1 + 2 + 2(M - 1) / 3` networks' training work (a forward pass is
//!   about a third of a training step). Narrow branches ([`SamlConfig::branch_hidden`]) cut
//!   the `2 + 2(M - 1) / 3` part: `cargo xtask experiment saml` uses branches [32, 16] beside
//!   an auxiliary network of [128, 64]. `cargo bench -p rec-benches --bench saml` measures a
//!   full training step against [`Shared`]'s with 3 scenarios, at both branch widths;
//!   docs/benchmarks.md has the figures.
//! - With [`SamlConfig::tied_init`] (the default) all branches start equal, so at the very
//!   first step the mutual gates mix identical vectors and the affinity and `beta` get no
//!   gradient; they start to move once the branches have diverged by scenario.
//! - `cargo xtask experiment saml` (docs/results/saml.md) reports every model and ablation
//!   side by side, including where SAML does not win.
//!
//! # Invariants
//! - No per-sample loop on the hot path: per-scenario parts are stacked weights. MMoE and STAR
//!   run them as batched matmuls over a one-hot routing mask ([`Routing`]); SAML applies them
//!   block by block to a batch sorted by scenario (a loop over the `M` scenarios, one matmul
//!   each), which is cheaper than computing every branch for every sample as soon as `M > 1`.
//! - A scenario's own parameters (SAML's branch and head, MMoE's gate and tower, STAR's
//!   scenario weights, Separate's network) receive gradient only from that scenario's samples.
//! - A model never knows which table kind it holds.
//!
//! ```
//! use std::sync::Arc;
//! use candle_core::Device;
//! use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};
//! use rec_nn::embedding::{DefaultTableFactory, TablesConfig};
//! use rec_nn::{Ctx, Model};
//! use scenario_saml::{Saml, SamlConfig};
//! # fn main() -> candle_core::Result<()> {
//! let schema = Schema {
//!     fields: vec![
//!         FieldSpec::categorical("user_id", 10),
//!         FieldSpec::categorical("item_id", 20),
//!         FieldSpec::categorical("country", 3),
//!     ],
//!     tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
//!     scenario_field: Some("country".into()),
//!     num_scenarios: 3,
//!     ..Default::default()
//! };
//! let mut tables = DefaultTableFactory::new(TablesConfig::default(), 7, &Device::Cpu);
//! let mut factory = |f: &FieldSpec, d: usize| tables.build(f, d);
//! let mut saml = Saml::new(&schema, &SamlConfig::default(), &mut factory, &Device::Cpu, 7)?;
//! let batch = Batch {
//!     schema: Arc::new(schema),
//!     columns: vec![
//!         Column::Ids(vec![1, 2]),
//!         Column::Ids(vec![3, 4]),
//!         Column::Ids(vec![0, 2]),
//!     ],
//!     labels: vec![vec![1.0, 0.0]],
//!     weights: None,
//!     slices: vec![],
//! };
//! let logits = saml.forward(&batch, &mut Ctx::eval())?;
//! assert_eq!(logits[0].dims(), &[2]);
//! assert_eq!(saml.affinity()?.unwrap().len(), 3);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod batched;
pub mod input;
pub mod mmoe;
pub mod mutual;
pub mod routed;
pub mod saml;
pub mod scenario;
pub mod scenario_embedding;
pub mod shared;
pub mod star;

pub use batched::{BatchedLinear, BatchedMlp};
pub use input::{InputLayer, Sequence};
pub use mmoe::{Mmoe, MmoeConfig};
pub use mutual::MutualUnit;
pub use saml::{Saml, SamlConfig};
pub use scenario::Routing;
pub use scenario_embedding::ScenarioEmbedding;
pub use shared::{DnnConfig, Separate, Shared};
pub use star::{PartitionedNorm, Star, StarConfig};

/// The few `rec-nn` items every module uses, and the initialiser that suits an activation.
pub(crate) mod nn {
    pub use rec_nn::init::{Init, VarStore, join};
    pub use rec_nn::layers::Activation;

    /// He initialisation before a ReLU, Xavier otherwise (as `rec_nn`'s MLP does).
    pub fn activation_init(a: Activation) -> Init {
        match a {
            Activation::Relu => Init::HeUniform,
            _ => Init::XavierUniform,
        }
    }
}

#[cfg(test)]
pub(crate) mod testing;

#[cfg(test)]
mod tests;
