//! Settings of a clustered table ([`CelConfig`]), as written in a run configuration:
//!
//! ```toml
//! [embeddings.fields.item_id]
//! kind = "cel"
//! max_clusters = 50
//! split_every = 10
//! reassign = { kind = "approx", curvature = 1.0 }
//! ```
//!
//! Every key has a documented default; unknown keys are rejected.

use serde::{Deserialize, Serialize};

/// Which cluster a GPCA split divides. \[paper\]\[ref\]
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SplitChoice {
    /// The cluster whose members had the most training interactions so far (the reference's
    /// `data_number`; default).
    #[default]
    Interactions,
    /// The cluster whose averaged gradient over the window has the largest norm.
    GradNorm,
    /// The cluster with the most members.
    Members,
    /// The cluster with the largest total training loss, as last measured by the exact
    /// reassignment driver ([`crate::exact`]); before any measurement, and from a split until
    /// the next measurement (the split makes the measured losses stale), as `interactions`.
    Loss,
}

/// Where a GPCA split cuts the members' projections on the first principal direction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Threshold {
    /// At zero (the centred projections' sign; default, as the reference).
    #[default]
    Zero,
    /// At the median projection (halves by member count).
    Median,
    /// At the interaction-weighted median (halves by training interactions).
    Data,
}

/// Offline CEL or the streaming CEL-Lite.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// CEL: per-entity gradients of the split window are kept (memory grows with the entities
    /// seen in a window); scheduled reassignment of the entities seen in the window (`approx`)
    /// or of every entity (`exact`) (default).
    #[default]
    Offline,
    /// CEL-Lite: no per-entity float state; splits from the gradients of the first
    /// `reservoir` members seen in a window, and lazy placement of the others; reassignment among a few tree neighbours when an entity
    /// appears. Per-step cost O(batch x d), independent of the number of entities.
    Lite,
}

/// How entities move between clusters after splits. \[ref\] (the loss criterion), \[ours\] (the
/// approximations).
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "ReassignRepr"
)]
pub enum Reassign {
    /// Never.
    None,
    /// Inside the table: each entity's loss under a candidate vector `c` is modelled by the
    /// second-order expansion around its current vector `e`,
    /// `g . (c - e) + curvature * n / 2 * |c - e|^2`, with `g` its gradient summed over its `n`
    /// interactions in the window. Exact when the loss is quadratic in the entity's vector with
    /// Hessian `curvature * n * I`; an approximation otherwise. Works under any training loop.
    Approx {
        /// Curvature per interaction (default 1).
        #[serde(default = "d_curvature")]
        curvature: f64,
    },
    /// The model's own loss, evaluated on every training interaction of the entity for each
    /// candidate cluster (exact, for any model, given the other parameters). Needs a loop that
    /// calls [`crate::exact::reassign_due`] after each step (the CEL experiment driver and the
    /// trainer's loop do; a due reassignment no driver runs before the next step is skipped).
    /// Offline mode only.
    Exact {
        /// Candidate clusters per entity: its own plus the nearest others (0 = all clusters,
        /// the default; then the choice is the exact argmin).
        #[serde(default)]
        candidates: usize,
        /// Curvature used to rank the nearest candidates (default 1).
        #[serde(default = "d_curvature")]
        curvature: f64,
    },
}

/// What [`Reassign`] is read from: the same with `none` as an empty struct variant, so that a
/// stray key next to `kind = "none"` is refused like any unknown key (serde lets unit variants
/// of an internally tagged enum ignore the other keys).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum ReassignRepr {
    None {},
    Approx {
        #[serde(default = "d_curvature")]
        curvature: f64,
    },
    Exact {
        #[serde(default)]
        candidates: usize,
        #[serde(default = "d_curvature")]
        curvature: f64,
    },
}

impl From<ReassignRepr> for Reassign {
    fn from(r: ReassignRepr) -> Self {
        match r {
            ReassignRepr::None {} => Self::None,
            ReassignRepr::Approx { curvature } => Self::Approx { curvature },
            ReassignRepr::Exact {
                candidates,
                curvature,
            } => Self::Exact {
                candidates,
                curvature,
            },
        }
    }
}

impl Default for Reassign {
    fn default() -> Self {
        Reassign::Approx {
            curvature: d_curvature(),
        }
    }
}

fn d_curvature() -> f64 {
    1.0
}
fn d_max() -> usize {
    50
}
fn d_one() -> usize {
    1
}
fn d_split_every() -> u64 {
    10
}
fn d_reassign_every() -> u64 {
    40
}
fn d_keep() -> f64 {
    0.3
}
fn d_lambda() -> f64 {
    0.01
}
fn d_iters() -> usize {
    100
}
fn d_reservoir() -> usize {
    256
}
fn d_placement() -> u64 {
    200
}
fn d_lite_reassign() -> u64 {
    1
}

/// Settings of one clustered table. Defaults follow the reference's MovieLens demo where it
/// has one (50 clusters, start from 1, split every 10 steps, reassignment at steps 40n for
/// n = 1 and prime n, keep-probability 0.3).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CelConfig {
    /// Clusters are split until there are this many (default 50).
    #[serde(default = "d_max")]
    pub max_clusters: usize,
    /// Clusters at the start; entity `i` starts in cluster `i % init_clusters` (default 1).
    #[serde(default = "d_one")]
    pub init_clusters: usize,
    /// A split every this many steps while clusters < `max_clusters` (`t2`, default 10).
    #[serde(default = "d_split_every")]
    pub split_every: u64,
    /// End of the clustered phase: no split or scheduled reassignment after this step
    /// (default: none, clusters keep growing to `max_clusters`).
    #[serde(default)]
    pub cluster_until: Option<u64>,
    /// Which cluster a split divides (default `interactions`).
    #[serde(default)]
    pub split_choice: SplitChoice,
    /// Where the split cuts (default `zero`).
    #[serde(default)]
    pub threshold: Threshold,
    /// How entities are reassigned (default `{ kind = "approx", curvature = 1 }`).
    #[serde(default)]
    pub reassign: Reassign,
    /// Offline CEL: reassignment at steps `reassign_every * n` for n = 1 and prime n
    /// (default 40). CEL-Lite uses [`lite_reassign_every`](Self::lite_reassign_every).
    #[serde(default = "d_reassign_every")]
    pub reassign_every: u64,
    /// Probability that an entity keeps its cluster although another is better (default
    /// 0.3, the reference's `P(randn < -0.5)`).
    #[serde(default = "d_keep")]
    pub keep_prob: f64,
    /// `offline` (default) or `lite`.
    #[serde(default)]
    pub mode: Mode,
    /// Personalization phase [ref, journal extension]: from this step on, every entity has
    /// its own vector, initialised at its centroid and pulled towards it by
    /// `lambda * |e - C[a(e)]|^2` per step it appears in; centroids are the members' means and
    /// entities move to the nearest centroid. Gives up the memory saving. Default off.
    #[serde(default)]
    pub personalize_at: Option<u64>,
    /// Weight of the personalization pull (default 0.01; our losses are batch means, so this
    /// is not the reference's 50, which multiplies an unnormalised sum).
    #[serde(default = "d_lambda")]
    pub lambda: f64,
    /// Power-iteration steps of a split (default 100; stops earlier when converged).
    #[serde(default = "d_iters")]
    pub power_iters: usize,
    /// CEL-Lite: members whose window-summed gradients are kept for one split: the first ones
    /// seen in the window, not a random sample (default 256).
    #[serde(default = "d_reservoir")]
    pub reservoir: usize,
    /// CEL-Lite: steps after a split during which members of the parent that appear are
    /// placed by their projection (default 200).
    #[serde(default = "d_placement")]
    pub placement_steps: u64,
    /// CEL-Lite: entities of a batch are reassigned among their tree neighbours every this
    /// many steps (default 1: every step).
    #[serde(default = "d_lite_reassign")]
    pub lite_reassign_every: u64,
}

impl Default for CelConfig {
    fn default() -> Self {
        Self {
            max_clusters: d_max(),
            init_clusters: d_one(),
            split_every: d_split_every(),
            cluster_until: None,
            split_choice: SplitChoice::default(),
            threshold: Threshold::default(),
            reassign: Reassign::default(),
            reassign_every: d_reassign_every(),
            keep_prob: d_keep(),
            mode: Mode::default(),
            personalize_at: None,
            lambda: d_lambda(),
            power_iters: d_iters(),
            reservoir: d_reservoir(),
            placement_steps: d_placement(),
            lite_reassign_every: d_lite_reassign(),
        }
    }
}

impl CelConfig {
    /// Checks value ranges that serde cannot express.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_clusters == 0 || self.init_clusters == 0 {
            return Err("max_clusters and init_clusters must be at least 1".into());
        }
        if self.init_clusters > self.max_clusters {
            return Err(format!(
                "init_clusters ({}) exceeds max_clusters ({})",
                self.init_clusters, self.max_clusters
            ));
        }
        if self.max_clusters > u32::MAX as usize {
            return Err("max_clusters does not fit in 32 bits".into());
        }
        if self.split_every == 0 || self.reassign_every == 0 || self.lite_reassign_every == 0 {
            return Err(
                "split_every, reassign_every and lite_reassign_every must be positive".into(),
            );
        }
        if !(0.0..=1.0).contains(&self.keep_prob) {
            return Err(format!("keep_prob {} is not in [0, 1]", self.keep_prob));
        }
        if self.lambda.is_nan() || self.lambda < 0.0 {
            return Err(format!("lambda {} must be >= 0", self.lambda));
        }
        if self.reservoir < 2 {
            return Err("reservoir must hold at least 2 gradients".into());
        }
        if self.personalize_at == Some(0) {
            return Err("personalize_at must be at least 1 (steps count from 1)".into());
        }
        match self.reassign {
            Reassign::Exact { .. } if self.mode == Mode::Lite => {
                return Err(
                    "mode lite reassigns inside the table among tree neighbours: use \
                            reassign kind approx (or none), not exact"
                        .into(),
                );
            }
            Reassign::Exact { candidates: 1, .. } => {
                return Err(
                    "reassign candidates = 1 tries only the entity's own cluster: use \
                            0 (all clusters) or at least 2"
                        .into(),
                );
            }
            _ => {}
        }
        match self.reassign {
            Reassign::Approx { curvature } | Reassign::Exact { curvature, .. }
                if curvature.is_nan() || curvature <= 0.0 =>
            {
                Err(format!("reassign curvature {curvature} must be positive"))
            }
            _ => Ok(()),
        }
    }

    /// True when the step is a scheduled reassignment step of offline CEL: `every * n` for
    /// n = 1 or prime n. \[ref\]
    pub fn is_reassign_step(&self, step: u64) -> bool {
        if step == 0 || !step.is_multiple_of(self.reassign_every) {
            return false;
        }
        let n = step / self.reassign_every;
        n == 1 || is_prime(n)
    }

    /// True while clusters may still be split and reassigned (before `cluster_until` and the
    /// personalization phase).
    pub fn clustering_at(&self, step: u64) -> bool {
        self.cluster_until.is_none_or(|u| step <= u) && self.personalize_at.is_none_or(|p| step < p)
    }
}

/// Trial division (the schedule only needs small numbers).
pub fn is_prime(n: u64) -> bool {
    if n < 2 {
        return false;
    }
    let mut d = 2;
    while d * d <= n {
        if n.is_multiple_of(d) {
            return false;
        }
        d += 1;
    }
    true
}

#[cfg(test)]
mod tests {
    /// A stray key next to a reassignment kind is refused, also next to `none`.
    #[test]
    fn reassign_kinds_refuse_stray_keys() {
        use serde_json::json;
        for r in [
            Reassign::None,
            Reassign::Approx { curvature: 2.0 },
            Reassign::Exact {
                candidates: 3,
                curvature: 1.0,
            },
        ] {
            let v = serde_json::to_value(r).unwrap();
            assert_eq!(serde_json::from_value::<Reassign>(v.clone()).unwrap(), r);
            let mut stray = v.as_object().unwrap().clone();
            stray.insert("foo".into(), json!(1));
            let e = serde_json::from_value::<Reassign>(stray.into()).unwrap_err();
            assert!(e.to_string().contains("unknown field `foo`"), "{r:?}: {e}");
        }
        // Defaults still fill in.
        let r: Reassign = serde_json::from_value(json!({"kind": "approx"})).unwrap();
        assert_eq!(r, Reassign::Approx { curvature: 1.0 });
    }

    use super::*;

    #[test]
    fn defaults_parse_and_unknown_keys_are_rejected() {
        let c: CelConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, CelConfig::default());
        assert!(c.validate().is_ok());
        let c: CelConfig =
            serde_json::from_str(r#"{"max_clusters": 7, "reassign": {"kind": "exact"}}"#).unwrap();
        assert_eq!(c.max_clusters, 7);
        assert!(matches!(c.reassign, Reassign::Exact { candidates: 0, .. }));
        assert!(serde_json::from_str::<CelConfig>(r#"{"max_cluster": 7}"#).is_err());
        let bad = CelConfig {
            init_clusters: 9,
            max_clusters: 3,
            ..Default::default()
        };
        assert!(bad.validate().unwrap_err().contains("init_clusters"));
    }

    #[test]
    fn reassignment_schedule_is_40n_for_one_and_primes() {
        let c = CelConfig::default();
        let steps: Vec<u64> = (1..=600).filter(|&s| c.is_reassign_step(s)).collect();
        assert_eq!(steps, vec![40, 80, 120, 200, 280, 440, 520]);
        let c = CelConfig {
            cluster_until: Some(100),
            ..Default::default()
        };
        assert!(c.clustering_at(100) && !c.clustering_at(101));
    }
}
