//! The shared candle layer of the workspace: sparse embedding tables, dense layers, losses,
//! optimizers and the [`Model`] trait, plus the base models (MF, NMF, NeuMF, FM, DeepFM,
//! Wide&Deep) that the method crates build on or plug into.
//!
//! # Map
//! - [`embedding`]: the [`EmbeddingTable`] trait and its built-in kinds (full, hashed, QR,
//!   frequency-hybrid), the reusable sparse row store ([`embedding::rows`]), pooling of multi-hot
//!   and sequence fields, and the [`TableFactory`](embedding::TableFactory) hook through which
//!   models receive tables without knowing their kind.
//! - [`layers`]: Linear, MLP, LayerNorm, BatchNorm, FM interaction, DIN target attention, a
//!   masked LSTM, softmax and dropout, all from differentiable ops.
//! - [`features`]: per-field embeddings of a schema, the input layer every model composes.
//! - [`models`]: the base models.
//! - [`loss`], [`optim`] (dense SGD/AdaGrad/Adam/AdamW over named variables, and the row-wise
//!   rules of the tables), [`init`] (seeded initialisers and [`init::VarStore`]).
//! - [`gradcheck`]: finite-difference gradient checks for custom layers.
//! - [`io`]: checked tensor access, atomic files, whole-model save/load; [`model`]:
//!   [`train_step`] and [`predict`].
//! - [`sys`]: OS hints (huge pages, glibc malloc thresholds).
//!
//! # Invariants
//! - Embedding tables live in host memory like a parameter server; the dense network runs on
//!   its device. A training lookup hands autograd only a small `[unique rows, dim]` leaf, so the
//!   cost of a step is proportional to the rows it touches, never to the vocabulary.
//! - A model never knows which table kind it holds.
//! - Every random choice takes a seed: initial values come from per-name ChaCha8 streams, dropout
//!   masks from the [`Ctx`] generator. Variables and tables are listed sorted by name.
//! - No fused candle fast path without a backward pass is used (see [`layers`]).
#![warn(missing_docs)]

pub mod embedding;
pub mod features;
pub mod gradcheck;
pub mod init;
pub mod io;
pub mod layers;
pub mod loss;
pub mod model;
pub mod models;
pub mod optim;
pub mod sys;

pub use embedding::{EmbeddingTable, TensorMap};
pub use model::{Ctx, Model, predict, predict_in_chunks, train_step};
