//! Streaming generation: users in chunks, so memory stays bounded whatever the number of users.

use std::ops::Range;
use std::sync::Arc;

use super::sim::simulate_user;
use super::table::Chunk;
use super::world::World;

/// Generates the users `users` of `world` on `threads` threads. The result does not depend on
/// the number of threads: every user has its own random stream and the pieces are joined in
/// user order.
pub fn generate_users(world: &World, users: Range<u64>, threads: usize) -> Chunk {
    let n = users.end.saturating_sub(users.start);
    let threads = (threads.max(1) as u64).min(n.max(1));
    if threads <= 1 {
        let mut out = Chunk::new(world.dim);
        for u in users {
            simulate_user(world, u, &mut out);
        }
        return out;
    }
    let per = n.div_ceil(threads);
    let mut parts: Vec<Chunk> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let a = users.start + t * per;
                let b = (a + per).min(users.end);
                scope.spawn(move || {
                    let mut out = Chunk::new(world.dim);
                    for u in a..b {
                        simulate_user(world, u, &mut out);
                    }
                    out
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().expect("a generator thread panicked"))
            .collect()
    });
    // Grow the first part and free the others as they are appended: one chunk's worth of
    // memory in flight, not two.
    let mut rest = parts.split_off(1);
    let mut out = parts.pop().expect("at least one part");
    for p in rest.drain(..) {
        out.append(&p);
    }
    out
}

/// An iterator over chunks of users: `chunk_users` users at a time, in user order.
///
/// ```
/// use std::sync::Arc;
/// use rec_data::synth::{Generator, SynthConfig, World};
/// let mut cfg = SynthConfig::tiny();
/// cfg.users = 50;
/// let world = Arc::new(World::new(&cfg).unwrap());
/// let chunks: Vec<_> = Generator::new(world).chunk_users(20).collect();
/// assert_eq!(chunks.len(), 3);
/// assert_eq!(chunks[2].users.user, (40..50).collect::<Vec<u32>>());
/// ```
pub struct Generator {
    world: Arc<World>,
    next: u64,
    end: u64,
    chunk: u64,
    threads: usize,
}

impl Generator {
    /// All users of the world's configuration, in chunks of `chunk_users`, on one thread.
    pub fn new(world: Arc<World>) -> Self {
        let end = world.cfg.users;
        let chunk = world.cfg.chunk_users as u64;
        Self {
            world,
            next: 0,
            end,
            chunk,
            threads: 1,
        }
    }

    /// Generates only the users `users` (clamped to the configured number).
    pub fn users(mut self, users: Range<u64>) -> Self {
        self.end = users.end.min(self.world.cfg.users);
        self.next = users.start.min(self.end);
        self
    }

    /// Users per chunk (at least 1).
    pub fn chunk_users(mut self, n: u64) -> Self {
        self.chunk = n.max(1);
        self
    }

    /// Threads used inside each chunk.
    pub fn threads(mut self, n: usize) -> Self {
        self.threads = n.max(1);
        self
    }

    /// The world the users live in.
    pub fn world(&self) -> &Arc<World> {
        &self.world
    }

    /// Number of chunks still to come.
    pub fn chunks_left(&self) -> u64 {
        (self.end - self.next).div_ceil(self.chunk)
    }
}

impl Iterator for Generator {
    type Item = Chunk;

    fn next(&mut self) -> Option<Chunk> {
        if self.next >= self.end {
            return None;
        }
        let b = (self.next + self.chunk).min(self.end);
        let out = generate_users(&self.world, self.next..b, self.threads);
        self.next = b;
        Some(out)
    }
}
