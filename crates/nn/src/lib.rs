//! The shared candle layer of the workspace: sparse embedding tables, dense layers, losses,
//! optimizers and the [`Model`] trait, plus the base models (MF, NMF, NeuMF, FM, DeepFM,
//! Wide&Deep) that the method crates build on or plug into.
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
pub use model::{Ctx, Model, predict, train_step};
