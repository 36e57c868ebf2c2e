//! Training, evaluation, checkpoints and reports for any model that implements
//! [`rec_nn::Model`].
//!
//! A run is described by a TOML [`Config`]; [`run`] loads the data, builds the model and its
//! embedding tables, and calls [`fit`], which trains with a progress bar, evaluates on the
//! validation split after every epoch, stops early, writes atomic checkpoints (and resumes from
//! them), logs JSON lines and writes a report with plots into the run directory.
//!
//! ```no_run
//! use rec_trainer::{Config, Start, run};
//! let mut cfg = Config::new("deepfm", "ml-100k", "ctr");
//! cfg.train.epochs = 3;
//! let outcome = run(&cfg, Start::Fresh)?;
//! println!("{}", outcome.test);
//! # Ok::<(), anyhow::Error>(())
//! ```
#![warn(missing_docs)]

pub mod checkpoint;
pub mod config;
pub mod data;
pub mod eval;
pub mod experiment;
pub mod lock;
pub mod plot;
pub mod registry;
pub mod report;
pub mod score;
pub mod size;
pub mod train;

pub use config::Config;

/// The README's examples, compiled and run as doc tests so they stay true.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
pub use eval::{Evaluation, evaluate};
pub use train::{Outcome, RESUME_MAY_CHANGE, Start, fit, resume_point};

use anyhow::Result;
use candle_core::Device;

/// Loads the data of `cfg`, builds its model on the CPU, and trains it. A resumed or
/// warm-started run encodes a `csv` data set with the vocabularies of the checkpoint it starts
/// from, so every raw ID keeps its row (see [`data::load_split_with`]).
pub fn run(cfg: &Config, start: Start) -> Result<Outcome> {
    let from = match &start {
        Start::Fresh => None,
        // Checked before any data is loaded, and before the run directory is touched.
        Start::Resume => Some(train::resume_point_with(cfg, false)?),
        Start::WarmStart(dir) => {
            // Refused before any data is loaded, as `fit` would.
            train::check_unused(&cfg.run_dir(), &start)?;
            Some(dir.clone())
        }
    };
    let vocabs = match &from {
        Some(dir) if cfg.data.dataset == "csv" => {
            train::vocabs_for(cfg, &checkpoint::read_state(dir)?, dir)?
        }
        _ => None,
    };
    let split = data::load_split_for(cfg, vocabs.as_ref())?;
    let device = Device::Cpu;
    let mut model = match start {
        // The run exists: what its configuration says was accepted when it started.
        Start::Resume => registry::rebuild_model(cfg, &split.schema, &split.train, &device)?,
        _ => registry::build_model(cfg, &split.schema, &split.train, &device)?,
    };
    fit(model.as_mut(), &split, cfg, start)
}
