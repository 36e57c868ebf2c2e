//! Configuration of the synthetic e-commerce generator (TOML, serde, documented defaults).
//!
//! Every field has a default (the [`SynthConfig::small`] preset), unknown keys are rejected, and
//! [`SynthConfig::validate`] explains what is wrong with a bad value. Two presets are built in:
//! [`SynthConfig::small`] (model tests: seconds to generate) and [`SynthConfig::large`] (scale
//! benchmarks: 10^7 users, 10^6 items), plus [`SynthConfig::tiny`] for this crate's unit tests.
//!
//! ```
//! use rec_data::synth::SynthConfig;
//! let cfg = SynthConfig::from_toml_str("users = 500\n[behaviour]\nfav_given_click = 0.2").unwrap();
//! assert_eq!(cfg.users, 500);
//! assert_eq!(cfg.items, SynthConfig::small().items);
//! assert!(SynthConfig::from_toml_str("userz = 5").is_err());
//! ```

use serde::{Deserialize, Serialize};

use super::SynthError;

/// Number of price levels (the paper's PPP task predicts one of 7).
pub const PRICE_LEVELS: usize = 7;
/// Number of behaviour channels (search, recommend, ads).
pub const CHANNELS: usize = 3;
/// Number of behaviour types (click, fav, cart, purchase).
pub const BEHAVIOURS: usize = 4;

/// The most icons one user draws to choose its follows from (`user.follow_candidates`).
pub const MAX_FOLLOW_CANDIDATES: u32 = 10_000;

/// Everything the generator needs. The world (items, clusters, scenarios, icons, calibration)
/// depends on every field except `users` and `chunk_users`; user `u`'s log depends only on the
/// world, `seed` and `u`, so the first users of a larger run equal a smaller run's users.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct SynthConfig {
    /// Master seed; every random choice derives from it.
    pub seed: u64,
    /// Number of users.
    pub users: u64,
    /// Number of items.
    pub items: u32,
    /// Number of item categories (each has its own query terms).
    pub categories: u32,
    /// Number of brands (each belongs to a category and a price tier).
    pub brands: u32,
    /// Number of shops (each leans to one latent item cluster).
    pub shops: u32,
    /// Number of item tags.
    pub tags: u32,
    /// Number of fashion icons users can follow (FIFP task).
    pub icons: u32,
    /// Number of days of logs (the last one is the test day of P-ECOM / P-MS).
    pub days: u32,
    /// Unix time (seconds, UTC) of the start of day 0. The default is Monday 2024-01-01.
    pub start_ts: i64,
    /// Users generated per chunk when streaming (bounds the memory; does not change the output).
    pub chunk_users: u32,
    /// Users simulated (in a separate random stream) to calibrate the intercepts of the
    /// behaviour probabilities so that the configured rates hold.
    pub pilot_users: u32,
    /// Latent taste structure: R = U (C S).
    pub latent: LatentConfig,
    /// Scenarios (countries) and their planted similarity.
    pub scenarios: ScenarioConfig,
    /// Sessions, impressions and activity.
    pub activity: ActivityConfig,
    /// Weights of the utility of an item to a user.
    pub utility: UtilityConfig,
    /// Behaviour types and their informativeness.
    pub behaviour: BehaviourConfig,
    /// Per-user planted attributes: price level, favourite shops, followed icons.
    pub user: UserConfig,
    /// The noisy rating derived from R = U (C S) (for the NMF identifiability study).
    pub rating: RatingConfig,
}

/// Latent taste structure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LatentConfig {
    /// Dimension r of the user and cluster factors.
    pub dim: u32,
    /// Number K of planted item clusters; every item of a cluster shares the factor row S_k.
    pub item_clusters: u32,
    /// Number of planted user clusters (user factor = |centroid + noise|).
    pub user_clusters: u32,
    /// Standard deviation of the noise around a user's cluster centroid.
    pub user_noise: f32,
    /// Gamma shape of the factor entries (smaller = sparser, more distinct clusters).
    pub factor_shape: f32,
    /// Exponent of the skew of cluster sizes: cluster k gets weight (k+1)^-skew.
    pub cluster_size_skew: f32,
    /// Categories each cluster concentrates on.
    pub categories_per_cluster: u32,
    /// Probability that an item's category is one of its cluster's categories.
    pub category_affinity: f32,
    /// Probability that an item's shop is one of the shops leaning to its cluster.
    pub shop_affinity: f32,
}

/// Scenarios (countries).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ScenarioConfig {
    /// Share of users in each scenario (normalised; its length is the number of scenarios).
    pub sizes: Vec<f32>,
    /// Planted group of each scenario: scenarios of one group get close taste modulations
    /// (high planted similarity), scenarios of different groups do not.
    pub groups: Vec<u32>,
    /// Target click-through rate of each scenario (intercepts are calibrated to hit it).
    pub ctr: Vec<f32>,
    /// Noise of a scenario's modulation vector around its group's (smaller = more similar).
    pub modulation_noise: f32,
    /// Standard deviation of the per-group scenario x cluster bias.
    pub cluster_bias: f32,
    /// Noise of a scenario's cluster bias around its group's.
    pub cluster_bias_noise: f32,
}

/// Activity, sessions, impressions.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ActivityConfig {
    /// Pareto tail index of user activity (smaller = heavier tail, more cold users).
    pub pareto_alpha: f32,
    /// Probability that a user of activity 1 (the least active) is active on a given day.
    pub active_day_prob: f32,
    /// Cap of the daily activity probability.
    pub max_active_day_prob: f32,
    /// Mean number of sessions on an active day for a user of activity 1 (grows with activity).
    pub sessions_per_active_day: f32,
    /// Cap of the mean number of sessions per active day.
    pub max_sessions_per_day: f32,
    /// Impressions per session in the search, recommend and ads channels.
    pub impressions_per_session: [u32; CHANNELS],
    /// Share of sessions in the search, recommend and ads channels.
    pub channel_mix: [f32; CHANNELS],
    /// Probability that a session follows the user's interest of the day (a cluster drawn once
    /// per day) instead of a fresh draw from the user's taste: recent behaviour says more.
    pub daily_focus: f32,
    /// Query terms per category (the term vocabulary has categories x this many terms).
    pub terms_per_category: u32,
    /// Most terms in one query (at least one).
    pub max_query_terms: u32,
    /// Relative weight of each hour of the day for session starts (24 values).
    pub hour_weights: Vec<f32>,
}

/// Utility of item i to user u in scenario s, the sum of: `taste * z(u, c(i), s)`,
/// `scenario_bias * B[s, c(i)]`, `popularity * pop(i)`, `quality * q(i)`,
/// `-price * |price(i) - price(u)|`, `shop` if the item's shop is a favourite, and `icon` if a
/// followed icon endorses the item (same cluster and price level). z standardises
/// `(u * m_s) . S_c` over the clusters for that user.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UtilityConfig {
    /// Weight of the planted taste term.
    pub taste: f32,
    /// Weight of the scenario x cluster bias.
    pub scenario_bias: f32,
    /// Weight of the standardised log-popularity of the item.
    pub popularity: f32,
    /// Weight of the item's hidden quality.
    pub quality: f32,
    /// Penalty per price level between the item and the user's level.
    pub price: f32,
    /// Bonus of the user's favourite shops.
    pub shop: f32,
    /// Bonus of items endorsed by an icon the user follows.
    pub icon: f32,
    /// Zipf exponent of item popularity (weight of the item of rank k is k^-exponent).
    pub popularity_zipf: f32,
}

/// Behaviour types. A click happens with probability
/// `sigmoid(sharpness[0] * (utility + noise[0] * e) + intercept)`; fav and cart follow a click,
/// purchase follows a cart, each with its own sharpness and noise on the same utility (and
/// purchase with an extra price penalty). Rising sharpness and falling noise make the order of
/// informativeness purchase > cart > fav > click, which the ground truth records.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct BehaviourConfig {
    /// Target P(fav | click).
    pub fav_given_click: f32,
    /// Target P(cart | click).
    pub cart_given_click: f32,
    /// Target P(purchase | cart).
    pub purchase_given_cart: f32,
    /// Slope on the utility of click, fav, cart, purchase.
    pub sharpness: [f32; BEHAVIOURS],
    /// Standard deviation of the noise added to the utility for click, fav, cart, purchase.
    pub noise: [f32; BEHAVIOURS],
    /// Extra penalty per price level between item and user at purchase time.
    pub purchase_price: f32,
    /// Logit offset of clicks in the search, recommend and ads channels (ads are clicked less).
    pub channel_offset: [f32; CHANNELS],
}

/// Per-user planted attributes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct UserConfig {
    /// Share of users at each of the 7 price levels.
    pub price_level_probs: [f32; PRICE_LEVELS],
    /// Favourite shops per user.
    pub favourite_shops: u32,
    /// Most icons a user follows.
    pub max_follows: u32,
    /// Probability of each of the `max_follows` follow slots being used.
    pub follow_prob: f32,
    /// Candidate icons a user considers when choosing whom to follow.
    pub follow_candidates: u32,
}

/// The rating target: `scale * R[u, i] + noise * e` with R = U (C S).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RatingConfig {
    /// Scale of R.
    pub scale: f32,
    /// Standard deviation of the Gaussian noise.
    pub noise: f32,
}

/// Overwrites `base` with `over`, table by table (nested tables merge, other values replace).
fn merge_tables(base: &mut toml::Table, over: toml::Table) {
    for (k, v) in over {
        match (base.get_mut(&k), v) {
            (Some(toml::Value::Table(b)), toml::Value::Table(o)) => merge_tables(b, o),
            (_, v) => {
                base.insert(k, v);
            }
        }
    }
}

impl Default for SynthConfig {
    fn default() -> Self {
        Self::small()
    }
}

impl Default for LatentConfig {
    fn default() -> Self {
        Self {
            dim: 8,
            item_clusters: 12,
            user_clusters: 8,
            user_noise: 0.25,
            factor_shape: 0.5,
            cluster_size_skew: 0.3,
            categories_per_cluster: 2,
            category_affinity: 0.85,
            shop_affinity: 0.85,
        }
    }
}

impl Default for ScenarioConfig {
    fn default() -> Self {
        Self {
            sizes: vec![0.50, 0.25, 0.15, 0.07, 0.03],
            groups: vec![0, 0, 1, 1, 2],
            ctr: vec![0.16, 0.13, 0.11, 0.09, 0.07],
            modulation_noise: 0.1,
            cluster_bias: 0.8,
            cluster_bias_noise: 0.2,
        }
    }
}

impl Default for ActivityConfig {
    fn default() -> Self {
        Self {
            pareto_alpha: 1.5,
            active_day_prob: 0.3,
            max_active_day_prob: 0.95,
            sessions_per_active_day: 1.5,
            max_sessions_per_day: 6.0,
            impressions_per_session: [10, 8, 4],
            channel_mix: [0.5, 0.35, 0.15],
            daily_focus: 0.5,
            terms_per_category: 4,
            max_query_terms: 3,
            hour_weights: vec![
                1.0, 0.6, 0.4, 0.3, 0.3, 0.4, 0.8, 1.5, 2.0, 2.2, 2.2, 2.4, 2.6, 2.4, 2.2, 2.2,
                2.3, 2.5, 2.8, 3.2, 3.6, 3.6, 3.0, 2.0,
            ],
        }
    }
}

impl Default for UtilityConfig {
    fn default() -> Self {
        Self {
            taste: 1.2,
            scenario_bias: 0.5,
            popularity: 0.3,
            quality: 0.3,
            price: 0.3,
            shop: 0.8,
            icon: 0.6,
            popularity_zipf: 1.0,
        }
    }
}

impl Default for BehaviourConfig {
    fn default() -> Self {
        Self {
            fav_given_click: 0.15,
            cart_given_click: 0.25,
            purchase_given_cart: 0.5,
            sharpness: [1.0, 1.2, 2.5, 3.0],
            noise: [1.0, 0.9, 0.5, 0.4],
            purchase_price: 0.8,
            channel_offset: [0.0, 0.0, -0.7],
        }
    }
}

impl Default for UserConfig {
    fn default() -> Self {
        Self {
            price_level_probs: [0.06, 0.12, 0.20, 0.24, 0.20, 0.12, 0.06],
            favourite_shops: 3,
            max_follows: 3,
            follow_prob: 0.5,
            follow_candidates: 12,
        }
    }
}

impl Default for RatingConfig {
    fn default() -> Self {
        Self {
            scale: 2.5,
            noise: 0.25,
        }
    }
}

impl SynthConfig {
    /// The preset for model tests: 2,000 users, 2,000 items, 11 days (~176k impressions,
    /// generated in well under a second in release).
    pub fn small() -> Self {
        Self {
            seed: 42,
            users: 2_000,
            items: 2_000,
            categories: 24,
            brands: 120,
            shops: 96,
            tags: 60,
            icons: 24,
            days: 11,
            start_ts: 1_704_067_200,
            chunk_users: 16_384,
            pilot_users: 2_000,
            latent: LatentConfig::default(),
            scenarios: ScenarioConfig::default(),
            activity: ActivityConfig {
                active_day_prob: 0.15,
                ..ActivityConfig::default()
            },
            utility: UtilityConfig::default(),
            behaviour: BehaviourConfig::default(),
            user: UserConfig::default(),
            rating: RatingConfig::default(),
        }
    }

    /// A few hundred users and items over 5 days, for fast unit tests.
    pub fn tiny() -> Self {
        Self {
            users: 400,
            items: 600,
            categories: 12,
            brands: 40,
            shops: 30,
            tags: 24,
            icons: 10,
            days: 5,
            pilot_users: 800,
            latent: LatentConfig {
                item_clusters: 6,
                user_clusters: 4,
                ..LatentConfig::default()
            },
            ..Self::small()
        }
    }

    /// The preset for scale benchmarks: 10^7 users, 10^6 items, 11 days, long-tailed activity
    /// (most users are cold). Pass `users` on the command line to scale it.
    pub fn large() -> Self {
        Self {
            users: 10_000_000,
            items: 1_000_000,
            categories: 2_000,
            brands: 20_000,
            shops: 50_000,
            tags: 5_000,
            icons: 2_000,
            latent: LatentConfig {
                dim: 16,
                item_clusters: 100,
                user_clusters: 50,
                categories_per_cluster: 20,
                ..LatentConfig::default()
            },
            activity: ActivityConfig {
                active_day_prob: 0.08,
                ..ActivityConfig::default()
            },
            ..Self::small()
        }
    }

    /// The preset called `name` (`tiny`, `small`, `large`).
    pub fn preset(name: &str) -> Result<Self, SynthError> {
        match name {
            "tiny" => Ok(Self::tiny()),
            "small" => Ok(Self::small()),
            "large" => Ok(Self::large()),
            _ => Err(SynthError::Config(format!(
                "unknown preset `{name}` (known: tiny, small, large)"
            ))),
        }
    }

    /// Parses a TOML document; fields not given keep the [`small`](Self::small) defaults, also
    /// inside a table that is given (`[activity]` with one key keeps the small preset's other
    /// activity values, not the table type's own defaults).
    pub fn from_toml_str(text: &str) -> Result<Self, SynthError> {
        let bad = |e: toml::de::Error| SynthError::Config(e.to_string());
        // Parsed once as written, for errors that point at the user's line and key.
        let _: SynthConfig = toml::from_str(text).map_err(bad)?;
        let given: toml::Table = toml::from_str(text).map_err(bad)?;
        let mut merged: toml::Table = toml::from_str(&Self::small().to_toml_string())
            .expect("the small preset serialises to a TOML table");
        merge_tables(&mut merged, given);
        let cfg: SynthConfig = toml::Value::Table(merged)
            .try_into()
            .map_err(|e: toml::de::Error| SynthError::Config(e.to_string()))?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and validates a TOML file.
    pub fn from_toml_file(path: &std::path::Path) -> Result<Self, SynthError> {
        let text = std::fs::read_to_string(path).map_err(|e| SynthError::io(path, e))?;
        Self::from_toml_str(&text).map_err(|e| match e {
            // The message without its "synthetic data configuration: " prefix, which the
            // wrapping error adds again.
            SynthError::Config(m) => SynthError::Config(format!("{}: {m}", path.display())),
            other => SynthError::Config(format!("{}: {other}", path.display())),
        })
    }

    /// The configuration as a TOML document.
    pub fn to_toml_string(&self) -> String {
        toml::to_string(self).expect("the configuration always serialises")
    }

    /// Number of scenarios (countries).
    pub fn num_scenarios(&self) -> usize {
        self.scenarios.sizes.len()
    }

    /// Size of the query-term vocabulary (without the OOV slot).
    pub fn num_query_terms(&self) -> u32 {
        self.categories * self.activity.terms_per_category
    }

    /// Every real-valued setting, by its TOML key.
    fn real_values(&self) -> Vec<(&'static str, &[f32])> {
        use std::slice::from_ref as one;
        let (l, s, a) = (&self.latent, &self.scenarios, &self.activity);
        let (u, b, n) = (&self.utility, &self.behaviour, &self.user);
        vec![
            ("latent.user_noise", one(&l.user_noise)),
            ("latent.factor_shape", one(&l.factor_shape)),
            ("latent.cluster_size_skew", one(&l.cluster_size_skew)),
            ("latent.category_affinity", one(&l.category_affinity)),
            ("latent.shop_affinity", one(&l.shop_affinity)),
            ("scenarios.sizes", &s.sizes),
            ("scenarios.ctr", &s.ctr),
            ("scenarios.modulation_noise", one(&s.modulation_noise)),
            ("scenarios.cluster_bias", one(&s.cluster_bias)),
            ("scenarios.cluster_bias_noise", one(&s.cluster_bias_noise)),
            ("activity.pareto_alpha", one(&a.pareto_alpha)),
            ("activity.active_day_prob", one(&a.active_day_prob)),
            ("activity.max_active_day_prob", one(&a.max_active_day_prob)),
            (
                "activity.sessions_per_active_day",
                one(&a.sessions_per_active_day),
            ),
            (
                "activity.max_sessions_per_day",
                one(&a.max_sessions_per_day),
            ),
            ("activity.channel_mix", &a.channel_mix),
            ("activity.daily_focus", one(&a.daily_focus)),
            ("activity.hour_weights", &a.hour_weights),
            ("utility.taste", one(&u.taste)),
            ("utility.scenario_bias", one(&u.scenario_bias)),
            ("utility.popularity", one(&u.popularity)),
            ("utility.quality", one(&u.quality)),
            ("utility.price", one(&u.price)),
            ("utility.shop", one(&u.shop)),
            ("utility.icon", one(&u.icon)),
            ("utility.popularity_zipf", one(&u.popularity_zipf)),
            ("behaviour.fav_given_click", one(&b.fav_given_click)),
            ("behaviour.cart_given_click", one(&b.cart_given_click)),
            ("behaviour.purchase_given_cart", one(&b.purchase_given_cart)),
            ("behaviour.sharpness", &b.sharpness),
            ("behaviour.noise", &b.noise),
            ("behaviour.purchase_price", one(&b.purchase_price)),
            ("behaviour.channel_offset", &b.channel_offset),
            ("user.price_level_probs", &n.price_level_probs),
            ("user.follow_prob", one(&n.follow_prob)),
            ("rating.scale", one(&self.rating.scale)),
            ("rating.noise", one(&self.rating.noise)),
        ]
    }

    /// Checks every value and says which one is wrong.
    pub fn validate(&self) -> Result<(), SynthError> {
        let err = |m: String| Err(SynthError::Config(m));
        // Every real number first: NaN passes no range check below, and an infinite weight
        // would make a sampler return its last entry forever.
        for (name, v) in self.real_values() {
            if let Some((k, x)) = v.iter().enumerate().find(|(_, x)| !x.is_finite()) {
                let at = if v.len() > 1 {
                    format!("[{k}]")
                } else {
                    String::new()
                };
                return err(format!("`{name}{at}` = {x} must be a finite number"));
            }
        }
        let positive: [(&str, u64); 10] = [
            ("users", self.users),
            ("items", self.items as u64),
            ("categories", self.categories as u64),
            ("brands", self.brands as u64),
            ("shops", self.shops as u64),
            ("tags", self.tags as u64),
            ("icons", self.icons as u64),
            ("chunk_users", self.chunk_users as u64),
            ("pilot_users", self.pilot_users as u64),
            ("latent.dim", self.latent.dim as u64),
        ];
        for (name, v) in positive {
            if v == 0 {
                return err(format!("`{name}` must be at least 1"));
            }
        }
        if self.users > u32::MAX as u64 - 1 {
            return err(format!("`users` = {} does not fit a u32 ID", self.users));
        }
        if self.days < 2 {
            return err(format!(
                "`days` = {} must be at least 2 (train days and a test day)",
                self.days
            ));
        }
        if self.days > 366 {
            return err(format!("`days` = {} must be at most 366", self.days));
        }
        // Timestamps are stored and read back as non-negative seconds.
        if self.start_ts < 0 || self.start_ts > i64::MAX / 2 {
            return err(format!(
                "`start_ts` = {} must be a non-negative Unix time in seconds",
                self.start_ts
            ));
        }
        let l = &self.latent;
        if l.item_clusters == 0 || l.user_clusters == 0 || l.categories_per_cluster == 0 {
            return err("`latent.item_clusters`, `latent.user_clusters` and \
                        `latent.categories_per_cluster` must be at least 1"
                .into());
        }
        if l.item_clusters > self.items {
            return err(format!(
                "`latent.item_clusters` = {} exceeds `items` = {}",
                l.item_clusters, self.items
            ));
        }
        for (name, v) in [
            ("latent.category_affinity", l.category_affinity),
            ("latent.shop_affinity", l.shop_affinity),
            ("activity.active_day_prob", self.activity.active_day_prob),
            (
                "activity.max_active_day_prob",
                self.activity.max_active_day_prob,
            ),
            ("activity.daily_focus", self.activity.daily_focus),
            ("user.follow_prob", self.user.follow_prob),
        ] {
            if !(0.0..=1.0).contains(&v) {
                return err(format!("`{name}` = {v} must be in [0, 1]"));
            }
        }
        for (name, v) in [
            ("behaviour.fav_given_click", self.behaviour.fav_given_click),
            (
                "behaviour.cart_given_click",
                self.behaviour.cart_given_click,
            ),
            (
                "behaviour.purchase_given_cart",
                self.behaviour.purchase_given_cart,
            ),
        ] {
            if !open01(v) {
                return err(format!("`{name}` = {v} must be in (0, 1)"));
            }
        }
        if !pos(l.factor_shape) || !nonneg(l.user_noise) {
            return err("`latent.factor_shape` must be > 0 and `latent.user_noise` >= 0".into());
        }
        let s = &self.scenarios;
        let m = s.sizes.len();
        if m == 0 || m > 255 {
            return err(format!(
                "`scenarios.sizes` has {m} entries; 1 to 255 scenarios are supported"
            ));
        }
        if s.groups.len() != m || s.ctr.len() != m {
            return err(format!(
                "`scenarios.groups` ({}) and `scenarios.ctr` ({}) need one entry per scenario ({m})",
                s.groups.len(),
                s.ctr.len()
            ));
        }
        // Group IDs name groups among the scenarios (each group gets its own base vectors).
        if let Some(g) = s.groups.iter().find(|&&g| g as usize >= m) {
            return err(format!(
                "`scenarios.groups` value {g} must be below the number of scenarios ({m})"
            ));
        }
        // Pilot user j calibrates scenario j % m: every scenario needs at least one.
        if (self.pilot_users as usize) < m {
            return err(format!(
                "`pilot_users` = {} must be at least the number of scenarios ({m})",
                self.pilot_users
            ));
        }
        if s.sizes.iter().any(|&x| !nonneg(x)) || s.sizes.iter().sum::<f32>() <= 0.0 {
            return err("`scenarios.sizes` must be non-negative with a positive sum".into());
        }
        if let Some(c) = s.ctr.iter().find(|&&c| !open01(c)) {
            return err(format!("`scenarios.ctr` value {c} must be in (0, 1)"));
        }
        let a = &self.activity;
        if !pos(a.pareto_alpha) {
            return err("`activity.pareto_alpha` must be > 0".into());
        }
        if !(a.sessions_per_active_day >= 1.0 && a.max_sessions_per_day >= 1.0) {
            return err(
                "`activity.sessions_per_active_day` and `activity.max_sessions_per_day` must be >= 1"
                    .into(),
            );
        }
        if a.impressions_per_session.contains(&0)
            || a.impressions_per_session.iter().any(|&n| n > 200)
        {
            return err("`activity.impressions_per_session` values must be in 1..=200".into());
        }
        if a.channel_mix.iter().any(|&x| !nonneg(x)) || a.channel_mix.iter().sum::<f32>() <= 0.0 {
            return err("`activity.channel_mix` must be non-negative with a positive sum".into());
        }
        if a.terms_per_category == 0 || a.max_query_terms == 0 {
            return err(
                "`activity.terms_per_category` and `activity.max_query_terms` must be >= 1".into(),
            );
        }
        // Query term IDs are u32 (`num_query_terms`).
        if self.categories.checked_mul(a.terms_per_category).is_none() {
            return err(format!(
                "`categories` = {} times `activity.terms_per_category` = {} query terms do not \
                 fit a u32 ID",
                self.categories, a.terms_per_category
            ));
        }
        if a.hour_weights.len() != 24
            || a.hour_weights.iter().any(|&x| !nonneg(x))
            || a.hour_weights.iter().sum::<f32>() <= 0.0
        {
            return err(
                "`activity.hour_weights` needs 24 non-negative values with a positive sum".into(),
            );
        }
        let b = &self.behaviour;
        if b.sharpness.iter().any(|&x| !pos(x)) || b.noise.iter().any(|&x| !nonneg(x)) {
            return err("`behaviour.sharpness` must be > 0 and `behaviour.noise` >= 0".into());
        }
        let u = &self.user;
        if u.price_level_probs.iter().any(|&x| !nonneg(x))
            || u.price_level_probs.iter().sum::<f32>() <= 0.0
        {
            return err("`user.price_level_probs` must be non-negative with a positive sum".into());
        }
        if u.favourite_shops > self.shops {
            return err(format!(
                "`user.favourite_shops` = {} exceeds `shops` = {}",
                u.favourite_shops, self.shops
            ));
        }
        // Each user draws `follow_candidates` icons to choose from.
        if u.follow_candidates > MAX_FOLLOW_CANDIDATES {
            return err(format!(
                "`user.follow_candidates` = {} must be at most {MAX_FOLLOW_CANDIDATES}",
                u.follow_candidates
            ));
        }
        if u.max_follows > self.icons || u.follow_candidates < u.max_follows {
            return err(format!(
                "`user.max_follows` = {} must be <= `icons` = {} and <= `user.follow_candidates` = {}",
                u.max_follows, self.icons, u.follow_candidates
            ));
        }
        Ok(())
    }
}

/// True for positive numbers (false for NaN).
fn pos(x: f32) -> bool {
    x > 0.0
}

/// True for non-negative numbers (false for NaN).
fn nonneg(x: f32) -> bool {
    x >= 0.0
}

/// True inside (0, 1) (false for NaN).
fn open01(x: f32) -> bool {
    x > 0.0 && x < 1.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_validate_and_round_trip_through_toml() {
        for cfg in [
            SynthConfig::tiny(),
            SynthConfig::small(),
            SynthConfig::large(),
        ] {
            cfg.validate().unwrap();
            let back = SynthConfig::from_toml_str(&cfg.to_toml_string()).unwrap();
            assert_eq!(back, cfg);
        }
    }

    #[test]
    fn bad_values_are_explained() {
        let e = SynthConfig::from_toml_str("days = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("days"), "{e}");
        let e = SynthConfig::from_toml_str("[scenarios]\nsizes = [0.5, 0.5]")
            .unwrap_err()
            .to_string();
        assert!(e.contains("scenarios.groups"), "{e}");
        let e = SynthConfig::from_toml_str("[behaviour]\ncart_given_click = 1.5")
            .unwrap_err()
            .to_string();
        assert!(e.contains("cart_given_click"), "{e}");
        let e = SynthConfig::from_toml_str("[latent]\nbogus = 1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("bogus"), "{e}");
        let e = SynthConfig::from_toml_str("start_ts = -1")
            .unwrap_err()
            .to_string();
        assert!(e.contains("start_ts"), "{e}");
        assert!(SynthConfig::preset("huge").is_err());
    }

    #[test]
    fn non_finite_and_unbounded_values_are_refused_by_name() {
        let bad = |toml: &str, needle: &str| {
            let e = SynthConfig::from_toml_str(toml).unwrap_err().to_string();
            assert!(e.contains(needle), "{toml}: {e}");
        };
        // NaN passed `x < 1.0`-style checks, and these two had none at all.
        bad(
            "[activity]\nmax_sessions_per_day = nan",
            "`activity.max_sessions_per_day` = NaN must be a finite number",
        );
        bad(
            "[latent]\ncluster_size_skew = nan",
            "`latent.cluster_size_skew` = NaN",
        );
        bad(
            "[behaviour]\nchannel_offset = [0.0, nan, 0.0]",
            "`behaviour.channel_offset[1]` = NaN",
        );
        // An infinite weight made the hour sampler return its last hour for every session.
        let mut hours = vec!["1.0".to_string(); 24];
        hours[3] = "inf".into();
        bad(
            &format!("[activity]\nhour_weights = [{}]", hours.join(", ")),
            "`activity.hour_weights[3]` = inf",
        );
        // A group ID allocated `group * dim` floats.
        bad(
            "[scenarios]\ngroups = [0, 0, 1, 1, 4294967295]",
            "`scenarios.groups` value 4294967295 must be below the number of scenarios (5)",
        );
        bad(
            "[user]\nfollow_candidates = 4000000000",
            "`user.follow_candidates` = 4000000000 must be at most 10000",
        );
        // u32 query-term IDs wrapped.
        bad(
            "categories = 70000\n[activity]\nterms_per_category = 70000",
            "query terms do not fit a u32 ID",
        );
        // Fewer pilot users than scenarios left a scenario's click rate uncalibrated.
        bad("pilot_users = 3", "`pilot_users` = 3 must be at least");
        // The limits themselves are accepted.
        let ok = SynthConfig::from_toml_str(
            "pilot_users = 5\n[scenarios]\ngroups = [0, 1, 2, 3, 4]\n[user]\nfollow_candidates = 10000",
        );
        ok.unwrap();
    }

    #[test]
    fn a_partial_table_keeps_the_small_presets_other_values() {
        let small = SynthConfig::small();
        // The small preset's activity differs from ActivityConfig::default().
        assert_ne!(
            small.activity.active_day_prob,
            ActivityConfig::default().active_day_prob
        );
        let cfg = SynthConfig::from_toml_str("users = 50\n[activity]\ndaily_focus = 0.7").unwrap();
        assert_eq!(cfg.users, 50);
        assert_eq!(cfg.activity.daily_focus, 0.7);
        assert_eq!(cfg.activity.active_day_prob, small.activity.active_day_prob);
        assert_eq!(cfg.behaviour, small.behaviour);
    }
}
