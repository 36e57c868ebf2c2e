//! The planted world: cluster factors, scenarios, the item catalogue, icons, and how a user's
//! hidden attributes are drawn. Everything here depends on the configuration and seed only, never
//! on the number of users, so user `u` is the same user in every run with the same world.

use rand::Rng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, Exp1, Gamma, StandardNormal};

use super::SynthError;
use super::config::{PRICE_LEVELS, SynthConfig};
use super::table::ItemTable;
use crate::iter::rng;

/// Random-stream domains (mixed with the seed), one per independent part of the world.
pub(crate) mod stream {
    pub const FACTORS: u64 = 0x4641_4354;
    pub const SCENARIOS: u64 = 0x5343_454E;
    pub const ITEMS: u64 = 0x4954_454D;
    pub const ICONS: u64 = 0x4943_4F4E;
    pub const PILOT: u64 = 0x5049_4C54_0000_0000;
    pub const PILOT_NOISE: u64 = 0x504E_4F49;
    /// Users live in the range `USERS + u`.
    pub const USERS: u64 = 0x5553_4552_0000_0000;
}

/// Cumulative weights of a categorical distribution; draws by binary search.
#[derive(Debug, Clone, Default)]
pub(crate) struct Cumulative(pub Vec<f64>);

impl Cumulative {
    pub fn new(weights: impl IntoIterator<Item = f64>) -> Self {
        let mut acc = 0.0;
        Self(
            weights
                .into_iter()
                .map(|w| {
                    acc += w.max(0.0);
                    acc
                })
                .collect(),
        )
    }

    /// Index drawn with probability proportional to its weight (the last one if all are 0).
    pub fn sample(&self, rng: &mut ChaCha8Rng) -> usize {
        sample_cum(&self.0, rng)
    }
}

/// Draws an index from a slice of cumulative weights.
pub(crate) fn sample_cum(cum: &[f64], rng: &mut ChaCha8Rng) -> usize {
    let total = cum.last().copied().unwrap_or(0.0);
    let x = rng.random::<f64>() * total;
    cum.partition_point(|&c| c <= x).min(cum.len() - 1)
}

/// Items grouped by a key (category or cluster), each group with popularity-weighted sampling
/// in O(1) by Walker/Vose alias tables (one uniform slot, one coin).
#[derive(Debug, Clone, Default)]
pub(crate) struct GroupSampler {
    /// `offsets[g]..offsets[g+1]` are the slots of group `g`.
    offsets: Vec<usize>,
    /// Per slot: its item, the probability of keeping it, and the alias item otherwise.
    slots: Vec<Slot>,
}

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    item: u32,
    alias: u32,
    keep: f32,
}

impl GroupSampler {
    pub fn new(groups: usize, keys: &[u32], weight: &[f32]) -> Self {
        let mut counts = vec![0usize; groups + 1];
        for &k in keys {
            counts[k as usize + 1] += 1;
        }
        for g in 0..groups {
            counts[g + 1] += counts[g];
        }
        let offsets = counts;
        let mut fill = offsets.clone();
        let mut slots = vec![Slot::default(); keys.len()];
        for (i, &k) in keys.iter().enumerate() {
            slots[fill[k as usize]].item = i as u32;
            fill[k as usize] += 1;
        }
        let mut small = Vec::new();
        let mut large = Vec::new();
        for g in 0..groups {
            let group = &mut slots[offsets[g]..offsets[g + 1]];
            let n = group.len();
            let total: f64 = group
                .iter()
                .map(|s| weight[s.item as usize].max(0.0) as f64)
                .sum();
            let mut p: Vec<f64> = group
                .iter()
                .map(|s| {
                    if total > 0.0 {
                        weight[s.item as usize].max(0.0) as f64 * n as f64 / total
                    } else {
                        1.0
                    }
                })
                .collect();
            small.clear();
            large.clear();
            for (j, &x) in p.iter().enumerate() {
                if x < 1.0 {
                    small.push(j)
                } else {
                    large.push(j)
                }
            }
            while let (Some(&sm), Some(&lg)) = (small.last(), large.last()) {
                small.pop();
                group[sm].keep = p[sm] as f32;
                group[sm].alias = group[lg].item;
                p[lg] -= 1.0 - p[sm];
                if p[lg] < 1.0 {
                    large.pop();
                    small.push(lg);
                }
            }
            for &j in large.iter().chain(small.iter()) {
                group[j].keep = 1.0;
                group[j].alias = group[j].item;
            }
        }
        Self { offsets, slots }
    }

    pub fn is_empty(&self, g: usize) -> bool {
        self.offsets[g] == self.offsets[g + 1]
    }

    /// A popularity-weighted item of group `g` (which must not be empty).
    pub fn sample(&self, g: usize, rng: &mut ChaCha8Rng) -> u32 {
        let (a, b) = (self.offsets[g], self.offsets[g + 1]);
        let s = self.slots[rng.random_range(a..b)];
        if rng.random::<f32>() < s.keep {
            s.item
        } else {
            s.alias
        }
    }
}

/// The attributes of an item the utility needs, packed in one cache line's quarter.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct HotItem {
    pub cluster: u32,
    pub shop: u32,
    /// popularity * pop_z + quality * q: the user-independent part of the utility.
    pub base: f32,
    pub price: u8,
}

/// A fashion icon: a style (latent cluster and price level) users can follow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Icon {
    /// Planted item cluster of the icon's style.
    pub cluster: u32,
    /// Price level (0..7) of the icon's style.
    pub price_level: u8,
    /// The category the icon is known for (an observable feature).
    pub category: u32,
}

/// The planted world shared by all users.
#[derive(Debug, Clone)]
pub struct World {
    pub(crate) cfg: SynthConfig,
    pub(crate) dim: usize,
    pub(crate) k: usize,
    /// S: `k x dim`, non-negative, unit rows.
    pub(crate) cluster_factors: Vec<f32>,
    /// User cluster centroids: `user_clusters x dim`, non-negative, unit rows.
    pub(crate) user_centroids: Vec<f32>,
    /// m_s: `scenarios x dim`, non-negative.
    pub(crate) modulation: Vec<f32>,
    /// B: `scenarios x k`.
    pub(crate) scenario_cluster_bias: Vec<f32>,
    pub(crate) scenario_cum: Cumulative,
    /// Home categories of each cluster: `k x categories_per_cluster`.
    pub(crate) cluster_categories: Vec<u32>,
    /// The catalogue.
    pub(crate) items: ItemTable,
    /// Standardised log popularity of every item.
    pub(crate) hot: Vec<HotItem>,
    pub(crate) by_category: GroupSampler,
    pub(crate) by_cluster: GroupSampler,
    /// All items in one group.
    pub(crate) global: GroupSampler,
    pub(crate) icons: Vec<Icon>,
    pub(crate) hour_cum: Cumulative,
    pub(crate) channel_cum: Cumulative,
    pub(crate) price_cum: Cumulative,
    /// Calibrated intercepts (filled by [`super::sim::calibrate`]).
    pub(crate) calib: Calibration,
}

/// Intercepts of the behaviour probabilities, calibrated on pilot users so that the configured
/// rates hold, and what the pilot measured about informativeness.
#[derive(Debug, Clone, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Calibration {
    /// Click intercept of each scenario.
    pub click: Vec<f32>,
    /// Intercepts of fav, cart, purchase.
    pub fav: f32,
    /// Cart intercept.
    pub cart: f32,
    /// Purchase intercept.
    pub purchase: f32,
    /// Expected standardised planted taste z of the items that received an impression, click,
    /// fav, cart and purchase (pilot estimate): the larger, the more a behaviour of that type
    /// says about the user's taste.
    pub mean_taste: [f32; 5],
}

/// A user's hidden and observable attributes (everything but the log).
#[derive(Debug, Clone, PartialEq)]
pub struct UserTruth {
    /// Scenario (country), `0..num_scenarios`.
    pub scenario: u8,
    /// Planted user cluster.
    pub cluster: u32,
    /// Non-negative taste factor (length `latent.dim`), unit norm.
    pub factor: Vec<f32>,
    /// Planted price level, `0..7`.
    pub price_level: u8,
    /// Observable age band, `0..6` (correlated with the price level).
    pub age: u8,
    /// Observable gender, `0..2` (correlated with the user cluster).
    pub gender: u8,
    /// Activity multiplier (Pareto, >= 1).
    pub activity: f32,
    /// Favourite shops.
    pub favourite_shops: Vec<u32>,
    /// Followed icons with the time of the follow (sorted by time).
    pub follows: Vec<(u32, i64)>,
}

/// Per-user values derived from the truth that the simulation needs.
pub(crate) struct UserState {
    pub truth: UserTruth,
    /// Standardised taste of each cluster (z over clusters, for this user and scenario).
    pub taste_z: Vec<f32>,
    /// Planted preference of each cluster: taste * z + scenario_bias * B[s, k].
    pub pref: Vec<f32>,
    /// Raw (u * m_s) . S_k of each cluster: R = U (C S).
    pub r: Vec<f32>,
    /// Softmax sampler over clusters by `pref`.
    pub cluster_cum: Cumulative,
    /// (cluster, price level) styles of followed icons.
    pub icon_styles: Vec<(u32, u8)>,
}

fn unit_gamma_rows(rows: usize, dim: usize, shape: f32, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let g = Gamma::new(shape, 1.0).expect("shape validated > 0");
    let mut out = Vec::with_capacity(rows * dim);
    for _ in 0..rows {
        let mut row: Vec<f32> = (0..dim).map(|_| g.sample(rng)).collect();
        normalize(&mut row);
        out.extend(row);
    }
    out
}

/// Scales to unit L2 norm (a zero vector becomes uniform).
pub(crate) fn normalize(v: &mut [f32]) {
    let n = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if n > 1e-12 {
        v.iter_mut().for_each(|x| *x /= n);
    } else {
        let c = 1.0 / (v.len() as f32).sqrt();
        v.iter_mut().for_each(|x| *x = c);
    }
}

pub(crate) fn normal(rng: &mut ChaCha8Rng) -> f32 {
    StandardNormal.sample(rng)
}

impl World {
    /// Builds the world of `cfg` (items, clusters, scenarios, icons) and calibrates the behaviour
    /// intercepts on pilot users.
    pub fn new(cfg: &SynthConfig) -> Result<World, SynthError> {
        cfg.validate()?;
        let mut w = Self::build(cfg);
        w.calib = super::sim::calibrate(&w)?;
        Ok(w)
    }

    /// The configuration of this world.
    pub fn config(&self) -> &SynthConfig {
        &self.cfg
    }

    /// The item catalogue (features and planted clusters).
    pub fn items(&self) -> &ItemTable {
        &self.items
    }

    /// The fashion icons.
    pub fn icons(&self) -> &[Icon] {
        &self.icons
    }

    /// The calibrated intercepts.
    pub fn calibration(&self) -> &Calibration {
        &self.calib
    }

    fn build(cfg: &SynthConfig) -> World {
        let dim = cfg.latent.dim as usize;
        let k = cfg.latent.item_clusters as usize;
        let m = cfg.num_scenarios();
        let n_items = cfg.items as usize;
        let cats = cfg.categories as usize;

        // Latent factors.
        let mut r = rng(cfg.seed, stream::FACTORS);
        let cluster_factors = unit_gamma_rows(k, dim, cfg.latent.factor_shape, &mut r);
        let user_centroids = unit_gamma_rows(
            cfg.latent.user_clusters as usize,
            dim,
            cfg.latent.factor_shape,
            &mut r,
        );
        let cpc = (cfg.latent.categories_per_cluster as usize).min(cats);
        let mut cluster_categories = Vec::with_capacity(k * cpc);
        let all_cats: Vec<u32> = (0..cfg.categories).collect();
        for _ in 0..k {
            let picked: Vec<u32> = all_cats.choose_multiple(&mut r, cpc).copied().collect();
            cluster_categories.extend(picked);
        }

        // Scenarios: modulation m_s around its group's base; cluster bias B around its group's.
        let mut r = rng(cfg.seed, stream::SCENARIOS);
        let groups = cfg.scenarios.groups.iter().copied().max().unwrap_or(0) as usize + 1;
        // Group bases 0.25 + Exp(1): independent groups have cosine ~0.65-0.9, members of one
        // group (noise `modulation_noise` around the base) ~0.98 (the small preset's values).
        let group_base: Vec<f32> = (0..groups * dim)
            .map(|_| 0.25 + Distribution::<f32>::sample(&Exp1, &mut r))
            .collect();
        let group_bias: Vec<f32> = (0..groups * k)
            .map(|_| normal(&mut r) * cfg.scenarios.cluster_bias)
            .collect();
        let mut modulation = Vec::with_capacity(m * dim);
        let mut scenario_cluster_bias = Vec::with_capacity(m * k);
        for s in 0..m {
            let g = cfg.scenarios.groups[s] as usize;
            for j in 0..dim {
                let v = group_base[g * dim + j] + normal(&mut r) * cfg.scenarios.modulation_noise;
                modulation.push(v.abs());
            }
            for c in 0..k {
                scenario_cluster_bias.push(
                    group_bias[g * k + c] + normal(&mut r) * cfg.scenarios.cluster_bias_noise,
                );
            }
        }
        let scenario_cum = Cumulative::new(cfg.scenarios.sizes.iter().map(|&x| x as f64));

        // Items.
        let mut r = rng(cfg.seed, stream::ITEMS);
        let cluster_w = Cumulative::new(
            (0..k).map(|c| ((c + 1) as f64).powf(-cfg.latent.cluster_size_skew as f64)),
        );
        let brand_tier: Vec<u8> = (0..cfg.brands)
            .map(|_| r.random_range(0..PRICE_LEVELS as u8))
            .collect();
        let mut ranks: Vec<u32> = (1..=cfg.items).collect();
        ranks.shuffle(&mut r);
        let mut items = ItemTable::with_capacity(n_items);
        let zipf = cfg.utility.popularity_zipf as f64;
        let norm: f64 = (1..=n_items).map(|k| (k as f64).powf(-zipf)).sum();
        for (i, &rank) in ranks.iter().enumerate() {
            // Every cluster gets at least one item; the rest follow the skewed cluster sizes.
            let c = if i < k { i } else { cluster_w.sample(&mut r) };
            let cat = if r.random::<f32>() < cfg.latent.category_affinity {
                cluster_categories[c * cpc + r.random_range(0..cpc)]
            } else {
                r.random_range(0..cfg.categories)
            };
            // Brand b belongs to category b % categories.
            let brand = members_of(cat as usize, cats, cfg.brands as usize, &mut r);
            let tier = brand_tier[brand as usize] as i32;
            let price = (tier + r.random_range(-1i32..=1)).clamp(0, PRICE_LEVELS as i32 - 1) as u8;
            // Shop s leans to cluster s % k.
            let shop = if r.random::<f32>() < cfg.latent.shop_affinity {
                members_of(c, k, cfg.shops as usize, &mut r)
            } else {
                r.random_range(0..cfg.shops)
            };
            // Primary tag from the cluster's tags (t % k == c), plus up to two random tags.
            let mut tags = vec![members_of(c, k, cfg.tags as usize, &mut r)];
            let extra = r.random_range(0..=2usize).min(cfg.tags as usize - 1);
            while tags.len() < 1 + extra {
                let t = r.random_range(0..cfg.tags);
                if !tags.contains(&t) {
                    tags.push(t);
                }
            }
            let popularity = ((rank as f64).powf(-zipf) / norm) as f32;
            let quality = normal(&mut r);
            let rating = (3.6 + 0.6 * quality + 0.3 * normal(&mut r)).clamp(1.0, 5.0);
            let sales = (popularity as f64
                * n_items as f64
                * 30.0
                * (0.3 * quality as f64).exp()
                * r.random_range(0.8..1.2))
            .floor() as u32;
            items.push(
                cat, brand, shop, price, &tags, c as u32, popularity, quality, rating, sales,
            );
        }
        let logp: Vec<f64> = items.popularity.iter().map(|&p| (p as f64).ln()).collect();
        let mean = logp.iter().sum::<f64>() / n_items as f64;
        let sd = (logp.iter().map(|x| (x - mean).powi(2)).sum::<f64>() / n_items as f64)
            .sqrt()
            .max(1e-9);
        let pop_z: Vec<f32> = logp.iter().map(|x| ((x - mean) / sd) as f32).collect();
        let by_category = GroupSampler::new(cats, &items.category, &items.popularity);
        let by_cluster = GroupSampler::new(k, &items.cluster, &items.popularity);
        let global = GroupSampler::new(1, &vec![0; n_items], &items.popularity);
        let hot = (0..n_items)
            .map(|i| HotItem {
                cluster: items.cluster[i],
                shop: items.shop[i],
                base: cfg.utility.popularity * pop_z[i] + cfg.utility.quality * items.quality[i],
                price: items.price[i],
            })
            .collect();

        // Icons.
        let mut r = rng(cfg.seed, stream::ICONS);
        let price_cum = Cumulative::new(cfg.user.price_level_probs.iter().map(|&x| x as f64));
        let icons = (0..cfg.icons)
            .map(|_| {
                let c = r.random_range(0..k);
                Icon {
                    cluster: c as u32,
                    price_level: price_cum.sample(&mut r) as u8,
                    category: cluster_categories[c * cpc],
                }
            })
            .collect();

        World {
            dim,
            k,
            cluster_factors,
            user_centroids,
            modulation,
            scenario_cluster_bias,
            scenario_cum,
            cluster_categories,
            items,
            hot,
            by_category,
            by_cluster,
            global,
            icons,
            hour_cum: Cumulative::new(cfg.activity.hour_weights.iter().map(|&x| x as f64)),
            channel_cum: Cumulative::new(cfg.activity.channel_mix.iter().map(|&x| x as f64)),
            price_cum,
            calib: Calibration::default(),
            cfg: cfg.clone(),
        }
    }

    /// Number of home categories per cluster.
    pub(crate) fn cpc(&self) -> usize {
        self.cluster_categories.len() / self.k
    }

    /// A category for a session driven by cluster `c`.
    pub(crate) fn category_of_cluster(&self, c: usize, rng: &mut ChaCha8Rng) -> u32 {
        if rng.random::<f32>() < self.cfg.latent.category_affinity {
            let cpc = self.cpc();
            self.cluster_categories[c * cpc + rng.random_range(0..cpc)]
        } else {
            rng.random_range(0..self.cfg.categories)
        }
    }

    /// Draws the hidden and observable attributes of a user from its random stream.
    /// `scenario` forces the scenario (used by the calibration pilot).
    pub(crate) fn draw_user(&self, rng: &mut ChaCha8Rng, scenario: Option<u8>) -> UserState {
        let cfg = &self.cfg;
        let dim = self.dim;
        let k = self.k;
        let drawn = self.scenario_cum.sample(rng) as u8;
        let s = scenario.unwrap_or(drawn);
        let cluster = rng.random_range(0..cfg.latent.user_clusters);
        let centroid = &self.user_centroids[cluster as usize * dim..(cluster as usize + 1) * dim];
        let mut factor: Vec<f32> = centroid
            .iter()
            .map(|&c| (c + cfg.latent.user_noise * normal(rng)).abs())
            .collect();
        normalize(&mut factor);
        let price_level = self.price_cum.sample(rng) as u8;
        let age = (price_level as f32 * 5.0 / 6.0 + normal(rng))
            .round()
            .clamp(0.0, 5.0) as u8;
        let gender = u8::from(rng.random::<f32>() < if cluster % 2 == 0 { 0.75 } else { 0.25 });
        let u01: f32 = rng.random::<f32>();
        let activity = (1.0 - u01).max(1e-6).powf(-1.0 / cfg.activity.pareto_alpha);

        // Taste of every cluster in this scenario: r_k = (u * m_s) . S_k.
        let ms = &self.modulation[s as usize * dim..(s as usize + 1) * dim];
        let r: Vec<f32> = (0..k)
            .map(|c| {
                let sk = &self.cluster_factors[c * dim..(c + 1) * dim];
                (0..dim).map(|j| factor[j] * ms[j] * sk[j]).sum()
            })
            .collect();
        let mean = r.iter().sum::<f32>() / k as f32;
        let sd = (r.iter().map(|x| (x - mean).powi(2)).sum::<f32>() / k as f32)
            .sqrt()
            .max(1e-6);
        let taste_z: Vec<f32> = r.iter().map(|x| (x - mean) / sd).collect();
        let bias = &self.scenario_cluster_bias[s as usize * k..(s as usize + 1) * k];
        let pref: Vec<f32> = (0..k)
            .map(|c| cfg.utility.taste * taste_z[c] + cfg.utility.scenario_bias * bias[c])
            .collect();
        let pmax = pref.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let cluster_cum = Cumulative::new(pref.iter().map(|&p| ((p - pmax) as f64).exp()));

        // Favourite shops: shops leaning to clusters the user likes.
        let nshops = cfg.shops as usize;
        let mut favourite_shops: Vec<u32> = Vec::new();
        let want = cfg.user.favourite_shops as usize;
        let mut tries = 0;
        while favourite_shops.len() < want {
            tries += 1;
            let shop = if tries < 8 * want + 8 {
                let c = cluster_cum.sample(rng);
                members_of(c, k, nshops, rng)
            } else {
                rng.random_range(0..cfg.shops)
            };
            if !favourite_shops.contains(&shop) {
                favourite_shops.push(shop);
            }
        }

        // Followed icons: among a few candidates, those whose style fits the user's taste.
        let mut slots = 0;
        for _ in 0..cfg.user.max_follows {
            if rng.random::<f32>() < cfg.user.follow_prob {
                slots += 1;
            }
        }
        let mut cands: Vec<(f32, u32)> = (0..cfg.user.follow_candidates)
            .map(|_| {
                let j = rng.random_range(0..cfg.icons);
                let ic = &self.icons[j as usize];
                let gumbel = -(-(rng.random::<f32>().max(1e-12)).ln()).ln();
                let score = 2.0 * taste_z[ic.cluster as usize]
                    - 0.7 * (ic.price_level as f32 - price_level as f32).abs()
                    + gumbel;
                (score, j)
            })
            .collect();
        cands.sort_by(|a, b| b.0.total_cmp(&a.0).then(a.1.cmp(&b.1)));
        let span = cfg.days as i64 * 86_400;
        let mut follows: Vec<(u32, i64)> = Vec::new();
        for (_, j) in cands {
            if follows.len() >= slots {
                break;
            }
            if follows.iter().all(|f| f.0 != j) {
                follows.push((j, cfg.start_ts + rng.random_range(0..span)));
            }
        }
        follows.sort_by_key(|f| (f.1, f.0));
        let icon_styles = follows
            .iter()
            .map(|&(j, _)| {
                let ic = &self.icons[j as usize];
                (ic.cluster, ic.price_level)
            })
            .collect();

        UserState {
            truth: UserTruth {
                scenario: s,
                cluster,
                factor,
                price_level,
                age,
                gender,
                activity,
                favourite_shops,
                follows,
            },
            taste_z,
            pref,
            r,
            cluster_cum,
            icon_styles,
        }
    }

    /// Planted utility of item `i` to a user (without noise).
    pub(crate) fn utility(&self, st: &UserState, i: usize) -> f32 {
        let u = &self.cfg.utility;
        let h = self.hot[i];
        let c = h.cluster as usize;
        let mut x =
            st.pref[c] + h.base - u.price * (h.price as f32 - st.truth.price_level as f32).abs();
        if st.truth.favourite_shops.contains(&h.shop) {
            x += u.shop;
        }
        if st
            .icon_styles
            .iter()
            .any(|&(ic, p)| ic as usize == c && p == h.price)
        {
            x += u.icon;
        }
        x
    }

    /// Ground truth of the world, for the JSON file.
    pub fn ground_truth(&self) -> super::truth::GroundTruth {
        super::truth::GroundTruth::from_world(self)
    }
}

/// A uniformly drawn member of group `g` when `n` things are split into `groups` groups by
/// `index % groups`; any thing when group `g` is empty.
pub(crate) fn members_of(g: usize, groups: usize, n: usize, rng: &mut ChaCha8Rng) -> u32 {
    if g < n {
        let count = (n - g).div_ceil(groups);
        (g + groups * rng.random_range(0..count)) as u32
    } else {
        rng.random_range(0..n as u32)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use rand::SeedableRng;

    proptest! {
        #[test]
        fn members_of_stays_in_its_group(g in 0usize..50, groups in 1usize..20, n in 1usize..200, seed: u64) {
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            let g = g % groups;
            for _ in 0..20 {
                let x = members_of(g, groups, n, &mut r) as usize;
                prop_assert!(x < n);
                if g < n {
                    prop_assert_eq!(x % groups, g);
                }
            }
        }

        #[test]
        fn cumulative_sampling_never_picks_zero_weight(w in proptest::collection::vec(0u8..4, 1..20), seed: u64) {
            prop_assume!(w.iter().any(|&x| x > 0));
            let c = Cumulative::new(w.iter().map(|&x| x as f64));
            let mut r = ChaCha8Rng::seed_from_u64(seed);
            for _ in 0..50 {
                let i = c.sample(&mut r);
                prop_assert!(w[i] > 0, "picked index {} of weight 0", i);
            }
        }
    }

    #[test]
    fn group_sampler_follows_popularity() {
        let keys = [0u32, 1, 0, 1, 0];
        let w = [1.0f32, 1.0, 3.0, 1.0, 0.0];
        let s = GroupSampler::new(3, &keys, &w);
        assert!(s.is_empty(2));
        let mut r = ChaCha8Rng::seed_from_u64(1);
        let mut counts = [0usize; 5];
        for _ in 0..8000 {
            counts[s.sample(0, &mut r) as usize] += 1;
        }
        assert_eq!(counts[1] + counts[3] + counts[4], 0);
        let ratio = counts[2] as f64 / counts[0] as f64;
        assert!((2.6..3.4).contains(&ratio), "{counts:?}");
        let b: Vec<usize> = (0..2000).map(|_| s.sample(1, &mut r) as usize).collect();
        assert!(b.iter().all(|&i| i == 1 || i == 3));
    }

    proptest! {
        #[test]
        fn alias_tables_reproduce_the_weights(w in proptest::collection::vec(0u8..5, 1..12)) {
            prop_assume!(w.iter().any(|&x| x > 0));
            let keys = vec![0u32; w.len()];
            let wf: Vec<f32> = w.iter().map(|&x| x as f32).collect();
            let s = GroupSampler::new(1, &keys, &wf);
            // The exact probability of each item implied by the table.
            let n = w.len() as f64;
            let mut p = vec![0f64; w.len()];
            for slot in &s.slots {
                p[slot.item as usize] += slot.keep as f64 / n;
                p[slot.alias as usize] += (1.0 - slot.keep as f64) / n;
            }
            let total: f64 = wf.iter().map(|&x| x as f64).sum();
            for i in 0..w.len() {
                prop_assert!((p[i] - wf[i] as f64 / total).abs() < 1e-5, "{:?} vs {:?}", p, w);
            }
        }
    }
}
