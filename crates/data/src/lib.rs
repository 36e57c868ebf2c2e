//! Data sets, evaluation protocols and batching for recommender models.
//!
//! The core works on plain columnar arrays and needs no tensor library; with the default
//! `candle` feature, batches also convert into candle tensors.
//!
//! - [`Schema`], [`Batch`]: what the columns mean, and the columns themselves.
//! - [`BatchIter`]: seeded, shuffled mini-batches.
//! - [`movielens`]: MovieLens-100k (both published layouts, fetching, a binary cache) and the
//!   protocols P-CTR, P-RATING, P-COLD, P-MS and P-SEQ, each a seeded [`Split`].
//! - [`interactions`]: your own CSV/TSV interaction data, described by an [`InteractionSchema`].
//! - [`encode`]: vocabularies with a reserved out-of-vocabulary index, buckets, quantile bins.
//! - [`ranking`]: seeded negative sampling and fixed ranking candidates.
//! - [`fetch`]: the data directory, checksums, safe zip extraction, atomic writes.
//! - [`synth`]: synthetic e-commerce logs with planted ground truth (streaming, Parquet).
//!
//! ```no_run
//! use rec_data::movielens::{MovieLens100k, Protocol};
//! let ds = MovieLens100k::load_or_fetch()?;
//! let split = ds.protocol(Protocol::Ctr, 42)?;
//! for batch in rec_data::BatchIter::new(&split.train, 1024, 42, 0, true) {
//!     // train on `batch`
//! #   let _ = batch;
//! }
//! # Ok::<(), rec_data::DataError>(())
//! ```
#![warn(missing_docs)]

pub mod atomic;
pub mod batch;
pub mod encode;
pub mod error;
pub mod fetch;
pub mod interactions;
pub mod iter;
pub mod movielens;
pub mod parquet_io;
pub mod ranking;
pub mod schema;
pub mod split;
pub mod synth;
#[cfg(feature = "candle")]
pub mod tensors;
mod text;

pub use batch::{Batch, Column, Padded, Slice};
pub use error::{DataError, Result};
pub use interactions::{InteractionSchema, Vocabs};
pub use iter::{BatchIter, epoch_order, mix_seed};
pub use movielens::{MovieLens100k, Protocol};
pub use schema::{FieldKind, FieldSpec, OOV, Schema, TaskKind, TaskSpec};
pub use split::Split;
