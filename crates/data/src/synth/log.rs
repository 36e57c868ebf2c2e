//! A whole synthetic log in memory (for the small presets): items, users, events, ground truth.

use std::sync::Arc;

use super::SynthError;
use super::config::SynthConfig;
use super::stream::generate_users;
use super::table::{Chunk, Events, ItemTable, UserTable};
use super::truth::GroundTruth;
use super::world::World;

/// A synthetic log held in memory: what [`write_dataset`](super::write_dataset) writes and
/// [`SynthLog::read`] reads back, and what the sample builders
/// ([`ctr_split`](SynthLog::ctr_split), [`dupn_split`](SynthLog::dupn_split)) consume.
#[derive(Debug, Clone, PartialEq)]
pub struct SynthLog {
    /// The planted truth (and the configuration).
    pub truth: Arc<GroundTruth>,
    /// The item catalogue (shared by the chunks of a dataset).
    pub items: Arc<ItemTable>,
    /// All users, in ID order.
    pub users: UserTable,
    /// All events, user after user, in time order.
    pub events: Events,
}

impl SynthLog {
    /// Generates every user of `cfg` in memory (use the streaming
    /// [`Generator`](super::Generator) or [`write_dataset`](super::write_dataset) for large
    /// configurations).
    pub fn generate(cfg: &SynthConfig) -> Result<Self, SynthError> {
        let threads = std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let world = World::new(cfg)?;
        Ok(Self::from_world(&world, threads))
    }

    /// Generates every user of `world` in memory on `threads` threads.
    pub fn from_world(world: &World, threads: usize) -> Self {
        let chunk = generate_users(world, 0..world.cfg.users, threads);
        Self::from_chunk(world, chunk)
    }

    /// Wraps already generated users of `world`.
    pub fn from_chunk(world: &World, chunk: Chunk) -> Self {
        Self {
            truth: Arc::new(world.ground_truth()),
            items: Arc::new(world.items.clone()),
            users: chunk.users,
            events: chunk.events,
        }
    }

    /// The configuration that generated the log.
    pub fn config(&self) -> &SynthConfig {
        &self.truth.config
    }

    /// Number of days; the last one (`days - 1`, 0-based) is the test day.
    pub fn days(&self) -> u32 {
        self.truth.config.days
    }
}
