//! Clustered Embedding Learning (CEL; "Clustered Embedding Learning for Recommender Systems",
//! WWW 2023) for any model of the workspace: one embedding table in which the entities of an
//! ID field share cluster rows, with clusters created top-down during training.
//!
//! [`ClusteredEmbedding`] is an [`EmbeddingTable`](rec_nn::EmbeddingTable), so every base
//! model takes it unchanged (the trainer builds it for `kind = "cel"` in `[embeddings]`).
//!
//! # The algorithm
//! Tags: \[paper\] stated by the paper, \[ref\] seen in the authors' public code, \[ours\] our
//! design.
//! - **Lookup and gradient averaging** \[ref\]: a training lookup gathers the batch's distinct
//!   entities into a leaf initialised with their cluster rows, so backward yields each
//!   entity's own gradient `g_i = dL/de_i`. A cluster row is updated with the *mean* of its
//!   members' gradients in the batch (not their sum) by the row-wise optimizer.
//! - **GPCA splits** \[paper\]\[ref\]: every `split_every` steps, while there are fewer than
//!   `max_clusters` clusters, the cluster chosen by [`SplitChoice`] is cut along the first
//!   principal direction of its members' centred gradients (summed over the window since the
//!   previous split): members with projection `>=` the [`Threshold`] stay, the rest move to a
//!   new cluster whose row starts as a copy of the parent's. Members without a gradient in the
//!   window stay. A split that would leave a side empty is not made (offline CEL then tries
//!   the next cluster in the criterion's order; CEL-Lite skips the split).
//! - **Reassignment** \[ref\] (the loss criterion; the loss approximations are \[ours\]) at steps `40 n` for n = 1 and prime n: each entity moves to the
//!   cluster minimising its loss; stabilizers: keep the old cluster with probability 0.3,
//!   never empty a cluster, refill an empty cluster with a random half of the largest. The
//!   loss is either modelled inside the table ([`Reassign::Approx`], second order) or measured
//!   on the model ([`Reassign::Exact`] with [`exact::reassign_due`]).
//! - **Personalization** \[ref\] (optional): see [`CelConfig::personalize_at`].
//! - **CEL-Lite** [ours; the paper's claim]: [`Mode::Lite`] keeps no per-entity floats. A
//!   split keeps the window-summed gradients of the first `reservoir` distinct members seen
//!   (not a random sample), places those members at once and the others lazily: a member's
//!   projections on the stored direction (centred per occurrence) are summed over its
//!   appearances, and the sign of the sum decides, once, after 3 appearances or, at the
//!   latest, when the placement window closes; reassignment happens when an entity appears, among its tree
//!   neighbours (parent, children, siblings), with the second-order model. Per step:
//!   `O(batch x d)` bookkeeping plus `O(reservoir x d)` per power iteration of a split; never
//!   a pass over all entities. [`online::Online::observe`] is the online API.
//!
//! # Memory
//! [`EmbeddingTable::bytes`](rec_nn::EmbeddingTable::bytes) counts what serving needs:
//! `clusters x d x 4` plus the assignment, stored in the narrowest width that holds
//! `max_clusters` (1 byte per entity up to 256 clusters; [`assign`]). Counters and optimizer
//! state are training state, reported by [`ClusteredEmbedding::memory`].
//!
//! ```
//! use candle_core::Device;
//! use embedding_cel::{CelConfig, ClusteredEmbedding};
//! use rec_nn::EmbeddingTable;
//! use rec_nn::embedding::TableOptions;
//! use rec_nn::init::named_rng;
//! # fn main() -> candle_core::Result<()> {
//! let cfg = CelConfig { max_clusters: 8, ..Default::default() };
//! let mut rng = named_rng(0, "items");
//! let t = ClusteredEmbedding::new("item_id", 10_000, 32, cfg, &TableOptions::default(),
//!     &mut rng, 0, &Device::Cpu)?;
//! assert_eq!(t.num_clusters(), 1);
//! assert_eq!(t.bytes(), 32 * 4 + 10_000); // one row plus a 1-byte assignment per entity
//! assert!(t.memory().ratio() > 120.0);
//! # Ok(()) }
//! ```
#![warn(missing_docs)]

pub mod ari;
pub mod assign;
pub mod config;
pub mod exact;
pub mod online;
pub mod pca;
pub mod planted;
mod table;

pub use ari::adjusted_rand_index;
pub use config::{CelConfig, Mode, Reassign, SplitChoice, Threshold};
pub use table::{ClusteredEmbedding, MAX_LITE_GROWTH, MemoryReport, Node};
