//! Synthetic ratings with planted item clusters, `R = U (C S)` plus noise (the setting of the
//! paper's identifiability theorem): users have non-negative factors `U`, items of planted
//! cluster `k` all have the non-negative factor `C[:, k]` (`S` is the one-hot item -> cluster
//! map). Used by the tests and by the identifiability study of `cargo xtask experiment cel`.

use std::collections::BTreeMap;
use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, Split, TaskKind, TaskSpec};

/// Shape of a planted data set.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Planted {
    /// Users.
    pub users: usize,
    /// Items.
    pub items: usize,
    /// Planted item clusters.
    pub clusters: usize,
    /// Rank of the factors.
    pub rank: usize,
    /// Ratings per user.
    pub per_user: usize,
    /// Standard deviation of the rating noise.
    pub noise: f64,
    /// Seed of everything.
    pub seed: u64,
}

impl Default for Planted {
    fn default() -> Self {
        Self {
            users: 400,
            items: 300,
            clusters: 8,
            rank: 8,
            per_user: 60,
            noise: 0.1,
            seed: 0,
        }
    }
}

/// A generated data set.
pub struct PlantedData {
    /// Random 80/10/10 split of the ratings; fields `user_id`, `item_id` (IDs from 1; 0 is
    /// out of vocabulary), task `rating` (regression).
    pub split: Split,
    /// Planted cluster of every item ID (index 0, the unused OOV ID, is cluster 0).
    pub item_cluster: Vec<u32>,
}

impl Planted {
    /// Generates the data.
    pub fn generate(&self) -> PlantedData {
        let mut rng = ChaCha8Rng::seed_from_u64(self.seed);
        let r = self.rank;
        let normal = |rng: &mut ChaCha8Rng| -> f64 {
            // Box-Muller (keeps the dependency list short).
            let u1: f64 = rng.random::<f64>().max(1e-12);
            let u2: f64 = rng.random();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        };
        let scale = 1.0 / (r as f64).sqrt();
        let u: Vec<f64> = (0..self.users * r)
            .map(|_| normal(&mut rng).abs())
            .collect();
        let c: Vec<f64> = (0..self.clusters * r)
            .map(|_| 2.0 * scale * normal(&mut rng).abs())
            .collect();
        let mut item_cluster = vec![0u32; self.items + 1];
        for (i, ic) in item_cluster.iter_mut().enumerate().skip(1) {
            // Every cluster gets items; the rest at random.
            *ic = if i <= self.clusters {
                (i - 1) as u32
            } else {
                rng.random_range(0..self.clusters) as u32
            };
        }
        let (mut us, mut is, mut ys) = (Vec::new(), Vec::new(), Vec::new());
        for user in 0..self.users {
            for _ in 0..self.per_user.min(self.items) {
                let item = rng.random_range(1..=self.items);
                let k = item_cluster[item] as usize;
                let dot: f64 = (0..r).map(|j| u[user * r + j] * c[k * r + j]).sum();
                us.push(user as u32 + 1);
                is.push(item as u32);
                ys.push((dot + self.noise * normal(&mut rng)) as f32);
            }
        }
        // Shuffle the samples, then cut 80/10/10.
        let n = ys.len();
        let mut order: Vec<usize> = (0..n).collect();
        for i in (1..n).rev() {
            let j = rng.random_range(0..=i);
            order.swap(i, j);
        }
        let schema = Arc::new(Schema {
            fields: vec![
                FieldSpec::categorical("user_id", self.users + 1),
                FieldSpec::categorical("item_id", self.items + 1),
            ],
            tasks: vec![TaskSpec::new("rating", TaskKind::Regression)],
            user_field: Some("user_id".into()),
            item_field: Some("item_id".into()),
            scenario_field: None,
            num_scenarios: 1,
        });
        let all = Batch {
            schema: schema.clone(),
            columns: vec![
                Column::Ids(order.iter().map(|&k| us[k]).collect()),
                Column::Ids(order.iter().map(|&k| is[k]).collect()),
            ],
            labels: vec![order.iter().map(|&k| ys[k]).collect()],
            weights: None,
            slices: Vec::new(),
        };
        let (a, b) = (n * 8 / 10, n * 9 / 10);
        PlantedData {
            split: Split {
                name: "planted".into(),
                seed: self.seed,
                schema,
                train: all.range(0, a),
                valid: all.range(a, b),
                test: all.range(b, n),
                vocabs: BTreeMap::new(),
                scenario_names: Vec::new(),
                items: None,
                seq: None,
            },
            item_cluster,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_seed_same_data_and_every_cluster_is_used() {
        let p = Planted {
            users: 30,
            items: 20,
            clusters: 4,
            per_user: 10,
            ..Default::default()
        };
        let a = p.generate();
        let b = p.generate();
        assert_eq!(a.split.train.labels, b.split.train.labels);
        assert_eq!(
            a.split.train.len() + a.split.valid.len() + a.split.test.len(),
            300
        );
        for k in 0..4 {
            assert!(a.item_cluster[1..].contains(&k));
        }
        assert!(a.split.train.labels[0].iter().all(|y| y.is_finite()));
    }
}
