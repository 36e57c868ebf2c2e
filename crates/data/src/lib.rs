//! Data sets, evaluation protocols and batching for recommender models.
//!
//! The core works on plain columnar arrays and needs no tensor library; with the default
//! `candle` feature, batches also convert into candle tensors.
//!
//! - [`Schema`], [`Batch`]: what the columns mean, and the columns themselves.
//! - [`BatchIter`]: seeded, shuffled mini-batches.
//! - [`synth`]: synthetic e-commerce logs with planted ground truth (streaming, Parquet).
#![warn(missing_docs)]

pub mod batch;
pub mod iter;
pub mod parquet_io;
pub mod schema;
pub mod synth;
#[cfg(feature = "candle")]
pub mod tensors;

pub use batch::{Batch, Column, Padded, Slice};
pub use iter::{BatchIter, epoch_order, mix_seed};
pub use schema::{FieldKind, FieldSpec, OOV, Schema, TaskKind, TaskSpec};
