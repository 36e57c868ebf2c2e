//! Synthetic e-commerce logs with planted ground truth, streaming to 10 million users.
//!
//! MovieLens has no scenarios, shops, brands, prices, queries or behaviour types. This seeded
//! generator gives every model of the workspace its native input at any scale, with the truth
//! planted so that tests can check a model learned what is there:
//!
//! - a [`World`] (built from a [`SynthConfig`]): items with category, brand, shop, price level,
//!   tags, long-tailed popularity and a planted latent cluster; non-negative cluster factors S
//!   (R = U (C S)); scenarios (countries) with taste modulations m_s whose cosine is the planted
//!   scenario similarity; fashion icons;
//! - users drawn from their own random stream (seed, user index): country, cluster, taste factor,
//!   price level, favourite shops, followed icons, long-tailed activity;
//! - their days: sessions in the search, recommend and ads channels (search sessions carry a
//!   query of category terms), impressions, and click / fav / cart / purchase drawn from the
//!   planted utility, with intercepts calibrated so the configured rates hold and with
//!   behaviour types ordered by informativeness (purchase > cart > fav > click);
//! - a streaming [`Generator`] (users in chunks, bounded memory, output independent of chunk size
//!   and threads), Parquet output and input ([`write_dataset`], [`SynthLog::read`]), the
//!   [`GroundTruth`] as JSON;
//! - sample builders for the three models ([`SynthLog::ctr_split`], [`SynthLog::dupn_split`]):
//!   `rec_data::Batch`es split by day (train on days 0..D-2, test on day D-1; days counted from 0).
//!
//! docs/synthetic-data.md describes the model, the files, the presets and measured speeds.
//!
//! ```
//! use rec_data::synth::{SynthConfig, SynthLog, CtrOptions};
//! let log = SynthLog::generate(&SynthConfig::tiny()).unwrap();
//! let split = log.ctr_split(&CtrOptions::default());
//! assert!(split.train.len() > split.test.len());
//! split.train.validate().unwrap();
//! ```

mod config;
mod log;
mod parquet;
mod samples;
mod sim;
mod stream;
mod table;
mod truth;
mod world;

use std::path::{Path, PathBuf};

pub use config::{
    ActivityConfig, BEHAVIOURS, BehaviourConfig, CHANNELS, LatentConfig, PRICE_LEVELS,
    RatingConfig, ScenarioConfig, SynthConfig, UserConfig, UtilityConfig,
};
pub use log::SynthLog;
pub use parquet::{SynthChunks, WriteSummary, read_items, write_dataset};
pub use samples::{
    CtrOptions, CtrTarget, DUPN_JOINT_TASKS, DupnOptions, DupnSplit, DupnTasks, Split, concat,
    time_gap_bucket,
};
pub use stream::{Generator, generate_users};
pub use table::{Chunk, Events, ItemTable, Ragged, UserTable, behaviour, channel};
pub use truth::{BehaviourTruth, GroundTruth};
pub use world::{Calibration, Icon, UserTruth, World};

/// What can go wrong when generating, writing or reading synthetic data.
#[derive(Debug, thiserror::Error)]
pub enum SynthError {
    /// A configuration value is invalid.
    #[error("synthetic data configuration: {0}")]
    Config(String),
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// A file does not hold what it should.
    #[error("{0}")]
    Format(String),
}

impl SynthError {
    pub(crate) fn io(path: &Path, source: std::io::Error) -> Self {
        SynthError::Io {
            path: path.to_path_buf(),
            source,
        }
    }

    pub(crate) fn format(path: &Path, msg: impl std::fmt::Display) -> Self {
        SynthError::Format(format!("{}: {msg}", path.display()))
    }
}
