//! The planted ground truth, as written to `ground_truth.json`.

use serde::{Deserialize, Serialize};

use super::SynthError;
use super::config::{PRICE_LEVELS, SynthConfig};
use super::world::{Calibration, Icon, World};

/// What the generator planted, for tests and analyses that check a model learned it.
///
/// Per-item truth (the cluster) is here and in `items.parquet`; per-user truth (cluster, price
/// level, taste factor, favourite shops) is in `users.parquet`, since it grows with the users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GroundTruth {
    /// Format tag.
    pub format: String,
    /// The configuration that generated the data.
    pub config: SynthConfig,
    /// How IDs in the files relate to vocabulary indices of batches.
    pub id_convention: String,
    /// Number K of planted item clusters.
    pub num_item_clusters: usize,
    /// Number of planted user clusters.
    pub num_user_clusters: usize,
    /// Dimension of the latent factors.
    pub dim: usize,
    /// S: the factor row shared by all items of each cluster (`K x dim`, non-negative).
    pub cluster_factors: Vec<Vec<f32>>,
    /// Centroids of the user clusters (`user_clusters x dim`, non-negative).
    pub user_centroids: Vec<Vec<f32>>,
    /// Planted cluster of every item (by raw item ID): C in R = U (C S).
    pub item_cluster: Vec<u32>,
    /// Home categories of every cluster.
    pub cluster_categories: Vec<Vec<u32>>,
    /// Number of scenarios (countries).
    pub num_scenarios: usize,
    /// Share of users in each scenario (normalised).
    pub scenario_sizes: Vec<f32>,
    /// Planted group of each scenario.
    pub scenario_groups: Vec<u32>,
    /// m_s: the taste modulation of each scenario (`M x dim`, non-negative).
    pub scenario_modulation: Vec<Vec<f32>>,
    /// Planted scenario similarity: cos(m_s, m_t).
    pub scenario_similarity: Vec<Vec<f32>>,
    /// B: the scenario x cluster preference bias (`M x K`).
    pub scenario_cluster_bias: Vec<Vec<f32>>,
    /// Configured click-through rate of each scenario.
    pub scenario_ctr: Vec<f32>,
    /// Number of price levels.
    pub price_levels: usize,
    /// The behaviour types, how they are drawn, and how informative they are.
    pub behaviours: Vec<BehaviourTruth>,
    /// Behaviour types from the most to the least informative about the user's taste.
    pub informativeness_order: Vec<String>,
    /// Calibrated intercepts and pilot measurements.
    pub calibration: Calibration,
    /// The fashion icons (style cluster, price level, category).
    pub icons: Vec<Icon>,
}

/// One behaviour type in the ground truth.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct BehaviourTruth {
    /// `click`, `fav`, `cart` or `purchase`.
    pub name: String,
    /// What it follows: `impression`, `click` or `cart`.
    pub given: String,
    /// Configured rate given that event (scenario-dependent for clicks: see `scenario_ctr`).
    pub rate: Option<f32>,
    /// Slope on the utility.
    pub sharpness: f32,
    /// Noise added to the utility.
    pub noise: f32,
    /// Expected standardised planted taste z of items that received this behaviour (pilot);
    /// impressions average about `calibration.mean_taste[0]`.
    pub mean_taste: f32,
    /// 1 = most informative.
    pub informativeness_rank: usize,
}

fn rows(v: &[f32], width: usize) -> Vec<Vec<f32>> {
    v.chunks(width.max(1)).map(<[f32]>::to_vec).collect()
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let na = a.iter().map(|x| x * x).sum::<f32>().sqrt();
    let nb = b.iter().map(|x| x * x).sum::<f32>().sqrt();
    dot / (na * nb).max(1e-12)
}

impl GroundTruth {
    pub(crate) fn from_world(w: &World) -> Self {
        let cfg = &w.cfg;
        let m = cfg.num_scenarios();
        let modulation = rows(&w.modulation, w.dim);
        let similarity = (0..m)
            .map(|s| {
                (0..m)
                    .map(|t| cosine(&modulation[s], &modulation[t]))
                    .collect()
            })
            .collect();
        let b = &cfg.behaviour;
        let given = ["impression", "click", "click", "cart"];
        let rates = [
            None,
            Some(b.fav_given_click),
            Some(b.cart_given_click),
            Some(b.purchase_given_cart),
        ];
        let mut order: Vec<usize> = (0..4).collect();
        order.sort_by(|&x, &y| {
            w.calib.mean_taste[y + 1]
                .total_cmp(&w.calib.mean_taste[x + 1])
                .then(y.cmp(&x))
        });
        let names = super::table::behaviour::NAMES;
        let behaviours = (0..4)
            .map(|t| BehaviourTruth {
                name: names[t].to_string(),
                given: given[t].to_string(),
                rate: rates[t],
                sharpness: b.sharpness[t],
                noise: b.noise[t],
                mean_taste: w.calib.mean_taste[t + 1],
                informativeness_rank: order.iter().position(|&o| o == t).unwrap() + 1,
            })
            .collect();
        let total: f32 = cfg.scenarios.sizes.iter().sum();
        GroundTruth {
            format: "rec-data synthetic e-commerce ground truth, version 1".into(),
            config: cfg.clone(),
            id_convention: "IDs in the files are 0-based; in batches every categorical value is \
                            the file ID + 1 (0 = out of vocabulary), except the scenario field, \
                            which keeps 0..num_scenarios"
                .into(),
            num_item_clusters: w.k,
            num_user_clusters: cfg.latent.user_clusters as usize,
            dim: w.dim,
            cluster_factors: rows(&w.cluster_factors, w.dim),
            user_centroids: rows(&w.user_centroids, w.dim),
            item_cluster: w.items.cluster.clone(),
            cluster_categories: w
                .cluster_categories
                .chunks(w.cpc())
                .map(<[u32]>::to_vec)
                .collect(),
            num_scenarios: m,
            scenario_sizes: cfg.scenarios.sizes.iter().map(|x| x / total).collect(),
            scenario_groups: cfg.scenarios.groups.clone(),
            scenario_modulation: modulation,
            scenario_similarity: similarity,
            scenario_cluster_bias: rows(&w.scenario_cluster_bias, w.k),
            scenario_ctr: cfg.scenarios.ctr.clone(),
            price_levels: PRICE_LEVELS,
            behaviours,
            informativeness_order: order.iter().map(|&t| names[t].to_string()).collect(),
            calibration: w.calib.clone(),
            icons: w.icons.clone(),
        }
    }

    /// Planted cluster of the item with vocabulary index `id` (file ID + 1); `None` for OOV.
    pub fn cluster_of_item_vocab(&self, id: u32) -> Option<u32> {
        id.checked_sub(1)
            .and_then(|i| self.item_cluster.get(i as usize).copied())
    }

    /// The planted R[u, i] = (u * m_s) . S_c(i) for a user factor, scenario and item ID.
    pub fn planted_r(&self, user_factor: &[f32], scenario: usize, item: u32) -> f32 {
        let s = &self.cluster_factors[self.item_cluster[item as usize] as usize];
        let m = &self.scenario_modulation[scenario];
        (0..self.dim).map(|j| user_factor[j] * m[j] * s[j]).sum()
    }

    /// Writes the ground truth as pretty JSON, atomically.
    pub fn write_json(&self, path: &std::path::Path) -> Result<(), SynthError> {
        let text = serde_json::to_string_pretty(self)
            .map_err(|e| SynthError::Format(format!("ground truth: {e}")))?;
        crate::atomic::write_atomic(path, text.as_bytes()).map_err(|e| SynthError::io(path, e))
    }

    /// Reads `ground_truth.json`; the configuration it embeds is validated like a fresh one
    /// (the samples derived from it assume it, e.g. at least two days).
    pub fn read_json(path: &std::path::Path) -> Result<Self, SynthError> {
        let text = std::fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
        let truth: Self = serde_json::from_str(&text)
            .map_err(|e| SynthError::Format(format!("{}: {e}", path.display())))?;
        truth.config.validate().map_err(|e| {
            SynthError::Format(format!("{}: embedded configuration: {e}", path.display()))
        })?;
        Ok(truth)
    }
}
