//! [`ClusteredEmbedding`]: the clustered table, offline (CEL) and streaming (CEL-Lite).

use std::any::Any;

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_nn::embedding::rows::{IdMap, RowGrads, SparseRows, dedup, host_f32};
use rec_nn::embedding::{EmbeddingTable, TableOptions, TensorMap};
use rec_nn::io::{meta_usize, take_tensor};
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::assign::Assignment;
use crate::config::{CelConfig, Mode, Reassign, SplitChoice};
use crate::pca::{principal_direction, project, split_sides};

/// One cluster in the split tree.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Node {
    /// The cluster it was split from (`None` for the initial clusters).
    pub parent: Option<u32>,
    /// The training step of the split (0 for the initial clusters).
    pub born_step: u64,
}

/// What a table costs, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemoryReport {
    /// Entities (vocabulary).
    pub entities: usize,
    /// Clusters.
    pub clusters: usize,
    /// Width of a vector.
    pub dim: usize,
    /// Cluster rows: `clusters * dim * 4`.
    pub cluster_bytes: usize,
    /// The assignment: `entities * width` (width 1, 2 or 4 bytes).
    pub assignment_bytes: usize,
    /// Personal vectors (personalization mode only): `entities * dim * 4`.
    pub personal_bytes: usize,
    /// What serving needs: the three above ([`EmbeddingTable::bytes`]).
    pub serving_bytes: usize,
    /// A full table of the same vocabulary and width: `entities * dim * 4`.
    pub full_bytes: usize,
    /// Training-only state not counted in `serving_bytes`: interaction counters (4 bytes per
    /// entity), optimizer state, the offline split window, CEL-Lite's gradient window and its
    /// open splits (direction, mean and the evidence of each member seen so far).
    pub training_bytes: usize,
}

impl MemoryReport {
    /// `full_bytes / serving_bytes`: how many times smaller than a full table.
    pub fn ratio(&self) -> f64 {
        self.full_bytes as f64 / self.serving_bytes.max(1) as f64
    }
}

/// Per-entity gradients gathered since the last split (offline CEL only).
#[derive(Debug, Clone, Default)]
struct Window {
    slot: IdMap<u32>,
    ents: Vec<u32>,
    grads: Vec<f32>,
    n: Vec<u32>,
}

impl Window {
    fn add(&mut self, e: u32, g: &[f32], n: u32) {
        let d = g.len();
        let next = self.ents.len() as u32;
        let s = *self.slot.entry(e).or_insert(next) as usize;
        if s == self.ents.len() {
            self.ents.push(e);
            self.grads.extend_from_slice(g);
            self.n.push(0);
        } else {
            self.grads[s * d..(s + 1) * d]
                .iter_mut()
                .zip(g)
                .for_each(|(a, b)| *a += b);
        }
        self.n[s] += n;
    }
    fn clear(&mut self) {
        *self = Window::default();
    }
}

/// CEL-Lite: the member gradients of the cluster whose split is pending: the first
/// `reservoir` distinct members seen in the window, each with its gradient summed over the
/// window (`O(reservoir x d)`, whatever the number of entities).
#[derive(Debug, Clone, Serialize, Deserialize)]
struct LiteWindow {
    cluster: u32,
    seen: u64,
    /// Occurrences of the kept members (summed into `grads`), to centre a batch's gradient
    /// on the same scale.
    #[serde(default)]
    kept_seen: u64,
    #[serde(skip)]
    ents: Vec<u32>,
    #[serde(skip)]
    grads: Vec<f32>,
    #[serde(skip)]
    slot: IdMap<u32>,
}

/// CEL-Lite: a split whose direction is stored so the parent's other members are placed
/// lazily: the projections of their gradients on the direction are summed while they appear
/// (`evidence`: only entities seen during the placement window), and a member moves when the
/// sum is negative after `PLACE_AFTER` appearances or when the window closes. Each member is
/// decided once: a decided one (and every member the split placed at once) stays in
/// `evidence` marked [`DECIDED`] until the window closes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct OpenSplit {
    parent: u32,
    child: u32,
    v: Vec<f64>,
    /// The kept members' mean gradient per occurrence (their window sums over their
    /// occurrences), so a batch's gradient of an entity is centred on its own scale.
    mean: Vec<f64>,
    until: u64,
    /// (entity, summed projection, appearances), in order of first appearance.
    evidence: Vec<(u32, f64, u32)>,
    /// Position of each entity in `evidence`.
    #[serde(skip)]
    index: IdMap<u32>,
}

impl OpenSplit {
    /// Bytes held while the split is open: its direction and mean, and per member seen its
    /// evidence entry and index slot (the map's own overhead is not counted).
    fn bytes(&self) -> usize {
        (self.v.len() + self.mean.len()) * std::mem::size_of::<f64>()
            + self.evidence.len()
                * (std::mem::size_of::<(u32, f64, u32)>() + 2 * std::mem::size_of::<u32>())
    }
}

/// Appearances after which a lazily placed member is decided.
const PLACE_AFTER: u32 = 3;

/// CEL-Lite: the most entities one lookup may add (IDs are dense indices, so new entities
/// arrive a few at a time).
pub const MAX_LITE_GROWTH: usize = 1 << 24;

/// The appearance count of an [`OpenSplit`] member that is decided.
const DECIDED: u32 = u32::MAX;

/// Personalization phase state.
struct Personal {
    rows: SparseRows,
    /// Sum of members' personal vectors per cluster (`clusters * dim`).
    sums: Vec<f64>,
}

struct Pending {
    ents: Vec<u32>,
    counts: Vec<u32>,
    leaf: Var,
}

/// An embedding table whose entities share cluster rows. See the [crate documentation](crate)
/// for the algorithm and [`CelConfig`] for every setting.
///
/// Unknown-ID rule: an ID at or above the vocabulary is served the row of cluster 0 (the
/// root's lineage: entities never observed stay there); in training, offline CEL treats it as
/// the out-of-vocabulary entity 0, and CEL-Lite adds it as a new entity in cluster 0, from
/// where reassignment moves it.
pub struct ClusteredEmbedding {
    cfg: CelConfig,
    field: String,
    vocab: usize,
    dim: usize,
    assign: Assignment,
    counts: Vec<u32>,
    rows: SparseRows,
    nodes: Vec<Node>,
    kids: Vec<Vec<u32>>,
    sizes: Vec<u32>,
    inter: Vec<u64>,
    window: Window,
    cl_grad: Vec<f32>,
    cl_loss: Vec<f64>,
    lite: Option<LiteWindow>,
    open: Vec<OpenSplit>,
    personal: Option<Personal>,
    probe: Option<Vec<u32>>,
    reassign_due: bool,
    /// Exact reassignments that came due and that no driver ran (not saved).
    skipped_exact: u64,
    rng: ChaCha8Rng,
    step: u64,
    moves: u64,
    pending: Vec<Pending>,
    device: Device,
}

impl ClusteredEmbedding {
    /// A clustered table for the `vocab` IDs of field `field`, vectors of width `dim`. The
    /// initial cluster rows come from `opts.init` drawn from `rng`; `seed` drives the
    /// table's own random choices (stabilizers, reservoir).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        field: &str,
        vocab: usize,
        dim: usize,
        cfg: CelConfig,
        opts: &TableOptions,
        rng: &mut impl Rng,
        seed: u64,
        device: &Device,
    ) -> Result<Self> {
        cfg.validate()
            .map_err(|e| candle_core::Error::Msg(format!("CEL table of `{field}`: {e}")))?;
        if vocab == 0 {
            candle_core::bail!("CEL table of `{field}`: empty vocabulary");
        }
        let k = cfg.init_clusters;
        if k > vocab {
            // A cluster without members would never be split or refilled in CEL-Lite.
            candle_core::bail!(
                "CEL table of `{field}`: init_clusters ({k}) exceeds the vocabulary ({vocab})"
            );
        }
        let rows = SparseRows::new(k, dim, opts.init, rng, opts.optimizer, device)?;
        let width = Assignment::width_for(cfg.max_clusters);
        let assign = Assignment::from_fn(vocab, width, |i| (i % k) as u32);
        let mut sizes = vec![0u32; k];
        for i in 0..vocab {
            sizes[i % k] += 1;
        }
        Ok(Self {
            field: field.to_string(),
            vocab,
            dim,
            assign,
            counts: vec![0; vocab],
            rows,
            nodes: vec![
                Node {
                    parent: None,
                    born_step: 0
                };
                k
            ],
            kids: vec![Vec::new(); k],
            sizes,
            inter: vec![0; k],
            window: Window::default(),
            cl_grad: vec![0.0; k * dim],
            cl_loss: Vec::new(),
            lite: None,
            open: Vec::new(),
            personal: None,
            probe: None,
            reassign_due: false,
            skipped_exact: 0,
            rng: ChaCha8Rng::seed_from_u64(seed),
            step: 0,
            moves: 0,
            pending: Vec::new(),
            device: device.clone(),
            cfg,
        })
    }

    // ---------------------------------------------------------------- introspection

    /// The settings.
    pub fn config(&self) -> &CelConfig {
        &self.cfg
    }

    /// The field whose IDs this table maps.
    pub fn field(&self) -> &str {
        &self.field
    }

    /// Number of clusters.
    pub fn num_clusters(&self) -> usize {
        self.rows.rows()
    }

    /// Members per cluster.
    pub fn cluster_sizes(&self) -> &[u32] {
        &self.sizes
    }

    /// Training interactions per cluster (sum of its members' counters).
    pub fn cluster_interactions(&self) -> &[u64] {
        &self.inter
    }

    /// The split tree: node `c` says which cluster `c` came from and when.
    pub fn tree(&self) -> &[Node] {
        &self.nodes
    }

    /// The cluster of `id` (IDs outside the vocabulary: cluster 0, see the unknown-ID rule).
    pub fn cluster_of(&self, id: u32) -> u32 {
        if (id as usize) < self.vocab {
            self.assign.get(id as usize)
        } else {
            0
        }
    }

    /// Up to `limit` other entities in the cluster of `id`, ascending (a scan of the
    /// assignment: for inspection, not for the training path).
    pub fn cluster_mates(&self, id: u32, limit: usize) -> Vec<u32> {
        let c = self.cluster_of(id);
        (0..self.vocab as u32)
            .filter(|&e| e != id && self.assign.get(e as usize) == c)
            .take(limit)
            .collect()
    }

    /// The cluster of every entity.
    pub fn assignment(&self) -> Vec<u32> {
        self.assign.to_vec()
    }

    /// Training interactions seen per entity.
    pub fn interaction_counts(&self) -> &[u32] {
        &self.counts
    }

    /// The cluster rows (centroids) and their optimizer state.
    pub fn cluster_rows(&self) -> &SparseRows {
        &self.rows
    }

    /// True in the personalization phase.
    pub fn personalized(&self) -> bool {
        self.personal.is_some()
    }

    /// Entities moved by reassignment so far (placements after a split are not counted).
    pub fn moves(&self) -> u64 {
        self.moves
    }

    /// Exact reassignments (`Reassign::Exact`) that came due and were skipped because no
    /// driver ran [`crate::exact::reassign_due`] before the next step, in this process. The
    /// first one is also logged as a warning: a training loop that never calls the driver
    /// trains without reassignment.
    pub fn skipped_reassignments(&self) -> u64 {
        self.skipped_exact
    }

    /// What the table costs (see [`MemoryReport`]).
    pub fn memory(&self) -> MemoryReport {
        let cluster_bytes = self.rows.bytes();
        let assignment_bytes = self.assign.bytes();
        let personal_bytes = self.personal.as_ref().map_or(0, |p| p.rows.bytes());
        let f = std::mem::size_of::<f32>();
        let slots = self.rows.config().slots();
        let opt = |rows: usize| rows * self.dim * slots * f;
        let training_bytes = self.counts.len() * 4
            + opt(self.rows.rows())
            + self.personal.as_ref().map_or(0, |p| opt(p.rows.rows()))
            + self.window.grads.len() * f
            + self.window.ents.len() * 12
            + self
                .lite
                .as_ref()
                .map_or(0, |l| l.grads.len() * f + l.ents.len() * 4)
            + self.open.iter().map(OpenSplit::bytes).sum::<usize>();
        MemoryReport {
            entities: self.vocab,
            clusters: self.num_clusters(),
            dim: self.dim,
            cluster_bytes,
            assignment_bytes,
            personal_bytes,
            serving_bytes: cluster_bytes + assignment_bytes + personal_bytes,
            full_bytes: self.vocab * self.dim * f,
            training_bytes,
        }
    }

    // ---------------------------------------------------------------- drivers

    /// True when a scheduled exact reassignment waits for [`crate::exact::reassign_due`].
    pub fn reassign_due(&self) -> bool {
        self.reassign_due
    }

    /// Lookups (evaluation only) serve entity `i` the row of cluster `probe[i]` instead of its
    /// own, until cleared with `None` (used to evaluate candidate assignments).
    pub fn set_probe(&mut self, probe: Option<Vec<u32>>) -> Result<()> {
        if let Some(p) = &probe {
            let k = self.num_clusters() as u32;
            if p.len() != self.vocab || p.iter().any(|&c| c >= k) {
                candle_core::bail!("a probe assignment needs one cluster below {k} per entity");
            }
        }
        self.probe = probe;
        Ok(())
    }

    /// Up to `k` candidate clusters for entity `e`: its own first, then the clusters nearest
    /// (Euclidean) to its second-order target `e - g / (curvature * n)` (its own vector when
    /// it has no gradient in the window). All clusters, own first, when `k == 0` or
    /// `k >= clusters`.
    pub fn candidates(&self, e: u32, k: usize, curvature: f64) -> Vec<u32> {
        let cur = self.assign.get(e as usize);
        let total = self.num_clusters();
        let mut out = vec![cur];
        if k == 0 || k >= total {
            out.extend((0..total as u32).filter(|&c| c != cur));
            return out;
        }
        let d = self.dim;
        let mut target: Vec<f64> = self
            .rows
            .row(cur as usize)
            .iter()
            .map(|&x| x as f64)
            .collect();
        if let Some(&s) = self.window.slot.get(&e) {
            let s = s as usize;
            let n = self.window.n[s].max(1) as f64;
            for (t, &g) in target
                .iter_mut()
                .zip(&self.window.grads[s * d..(s + 1) * d])
            {
                *t -= g as f64 / (curvature * n);
            }
        }
        let mut dist: Vec<(f64, u32)> = (0..total as u32)
            .filter(|&c| c != cur)
            .map(|c| {
                let r = self.rows.row(c as usize);
                (
                    r.iter()
                        .zip(&target)
                        .map(|(&a, &b)| (a as f64 - b).powi(2))
                        .sum(),
                    c,
                )
            })
            .collect();
        dist.sort_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)));
        out.extend(dist.iter().take(k - 1).map(|x| x.1));
        out
    }

    /// Records the total training loss of every cluster (for `split_choice = "loss"`).
    pub fn set_cluster_losses(&mut self, losses: Vec<f64>) {
        self.cl_loss = losses;
    }

    /// Moves entities to the clusters proposed in `moves` (`(entity, cluster)`), in order,
    /// with the stabilizers: an entity keeps its cluster with probability `keep_prob`, or when
    /// it is the last member; afterwards an empty cluster (should one exist) is refilled with a
    /// random half of the largest one. Returns how many entities moved. Clears the
    /// reassignment flag.
    pub fn apply_moves(&mut self, moves: &[(u32, u32)]) -> Result<usize> {
        let k = self.num_clusters() as u32;
        let mut moved = 0;
        for &(e, to) in moves {
            if e as usize >= self.vocab || to >= k {
                candle_core::bail!("move of entity {e} to cluster {to} is out of range");
            }
            let from = self.assign.get(e as usize);
            if from == to {
                continue;
            }
            if self.rng.random::<f64>() < self.cfg.keep_prob || self.sizes[from as usize] <= 1 {
                continue;
            }
            self.move_entity(e, to);
            moved += 1;
        }
        self.refill_empty();
        // The window an exact reassignment kept for its candidates ends here when this step
        // ends one: the next split sums the next window only.
        if self.reassign_due
            && self.cfg.mode == Mode::Offline
            && self.step.is_multiple_of(self.cfg.split_every)
        {
            self.end_window();
        }
        self.reassign_due = false;
        Ok(moved)
    }

    /// Ends the offline split window: its gradients and the per-cluster gradient sums.
    fn end_window(&mut self) {
        self.window.clear();
        self.cl_grad.iter_mut().for_each(|x| *x = 0.0);
    }

    fn move_entity(&mut self, e: u32, to: u32) {
        let from = self.assign.get(e as usize) as usize;
        let n = self.counts[e as usize] as u64;
        self.sizes[from] -= 1;
        self.inter[from] -= n.min(self.inter[from]);
        self.sizes[to as usize] += 1;
        self.inter[to as usize] += n;
        if let Some(p) = &mut self.personal {
            let d = self.dim;
            let v = p.rows.row(e as usize);
            let to = to as usize;
            for (j, &x) in v.iter().enumerate().take(d) {
                p.sums[from * d + j] -= x as f64;
                p.sums[to * d + j] += x as f64;
            }
        }
        self.assign.set(e as usize, to);
        self.moves += 1;
    }

    /// Refills empty clusters with a random half of the largest cluster's members (a scan of
    /// the assignment; only happens when some cluster is empty).
    fn refill_empty(&mut self) {
        while let Some(empty) = self.sizes.iter().position(|&s| s == 0) {
            let (big, &size) = self
                .sizes
                .iter()
                .enumerate()
                .max_by(|a, b| a.1.cmp(b.1).then(b.0.cmp(&a.0)))
                .expect("at least one cluster");
            if size < 2 {
                return;
            }
            let members: Vec<u32> = (0..self.vocab as u32)
                .filter(|&e| self.assign.get(e as usize) == big as u32)
                .collect();
            let mut moved = 0;
            for &e in &members {
                if self.rng.random::<bool>() && moved + 1 < members.len() {
                    self.move_entity(e, empty as u32);
                    moved += 1;
                }
            }
            if moved == 0 {
                self.move_entity(members[0], empty as u32);
            }
            let src = self.rows.row(big).to_vec();
            self.rows.row_mut(empty).copy_from_slice(&src);
        }
    }

    // ---------------------------------------------------------------- internals

    fn entity(&mut self, id: u32, train: bool) -> u32 {
        if (id as usize) < self.vocab {
            return id;
        }
        if train && self.cfg.mode == Mode::Lite {
            self.grow(id as usize + 1);
            id
        } else {
            0
        }
    }

    /// CEL-Lite: new entities up to `n`, in cluster 0.
    fn grow(&mut self, n: usize) {
        while self.vocab < n {
            self.assign.push(0);
            self.counts.push(0);
            self.sizes[0] += 1;
            if let Some(p) = &mut self.personal {
                let r = self.rows.row(0).to_vec();
                let _ = p.rows.push_row(&r);
                for (j, &x) in r.iter().enumerate() {
                    p.sums[j] += x as f64;
                }
            }
            self.vocab += 1;
        }
    }

    fn vector_rows(&self, ents: &[u32]) -> Result<Vec<f32>> {
        match &self.personal {
            Some(p) => p.rows.gather(ents),
            None => {
                let clusters: Vec<u32> =
                    ents.iter().map(|&e| self.assign.get(e as usize)).collect();
                self.rows.gather(&clusters)
            }
        }
    }

    fn eval_lookup(&self, ids: &[u32]) -> Result<Vec<f32>> {
        let d = self.dim;
        let mut out = Vec::with_capacity(ids.len() * d);
        for &id in ids {
            let i = id as usize;
            let row = if i < self.vocab {
                if let Some(p) = &self.probe {
                    self.rows.row(p[i] as usize)
                } else if let Some(p) = &self.personal {
                    p.rows.row(i)
                } else {
                    self.rows.row(self.assign.get(i) as usize)
                }
            } else {
                self.rows.row(0)
            };
            out.extend_from_slice(row);
        }
        Ok(out)
    }

    fn take_entity_grads(&mut self, grads: &GradStore) -> Result<RowGrads> {
        let pending = std::mem::take(&mut self.pending);
        let (mut ents, mut all, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for p in pending {
            if let Some(g) = grads.get(p.leaf.as_tensor()) {
                all.extend(host_f32(g)?);
                ents.extend_from_slice(&p.ents);
                counts.extend_from_slice(&p.counts);
            }
        }
        RowGrads::merge(self.dim, &ents, &all, &counts)
    }

    fn add_cluster(&mut self, parent: u32) -> Result<u32> {
        let v = self.rows.row(parent as usize).to_vec();
        let c = self.rows.push_row(&v)?;
        self.nodes.push(Node {
            parent: Some(parent),
            born_step: self.step,
        });
        self.kids.push(Vec::new());
        self.kids[parent as usize].push(c);
        self.sizes.push(0);
        self.inter.push(0);
        self.cl_grad.extend(std::iter::repeat_n(0.0, self.dim));
        // The measured losses describe the clusters before this split: stale for the parent
        // and missing for the child, so the `loss` choice waits for the next measurement.
        self.cl_loss.clear();
        Ok(c)
    }

    fn criterion(&self, c: usize) -> f64 {
        match self.cfg.split_choice {
            SplitChoice::Interactions => self.inter[c] as f64,
            SplitChoice::Members => self.sizes[c] as f64,
            SplitChoice::GradNorm => self.cl_grad[c * self.dim..(c + 1) * self.dim]
                .iter()
                .map(|&x| (x as f64) * (x as f64))
                .sum(),
            // Without a measurement since the last split, every cluster by interactions
            // (never a mix of the two units).
            SplitChoice::Loss => match self.cl_loss.get(c) {
                Some(&l) if self.cl_loss.len() == self.num_clusters() => l,
                _ => self.inter[c] as f64,
            },
        }
    }

    /// Clusters ordered by the split criterion, best first (ties: lower number first).
    fn split_order(&self) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.num_clusters())
            .filter(|&c| self.sizes[c] >= 2)
            .collect();
        let crit: Vec<f64> = (0..self.num_clusters())
            .map(|c| self.criterion(c))
            .collect();
        order.sort_by(|&a, &b| crit[b].total_cmp(&crit[a]).then(a.cmp(&b)));
        order
    }

    /// Offline GPCA split: the best cluster (by the criterion) whose observed members can be
    /// cut in two non-empty sides. Returns the new cluster.
    fn split_offline(&mut self) -> Result<Option<u32>> {
        let d = self.dim;
        for c in self.split_order() {
            let slots: Vec<usize> = (0..self.window.ents.len())
                .filter(|&s| self.assign.get(self.window.ents[s] as usize) == c as u32)
                .collect();
            if slots.len() < 2 {
                continue;
            }
            let g: Vec<f32> = slots
                .iter()
                .flat_map(|&s| self.window.grads[s * d..(s + 1) * d].iter().copied())
                .collect();
            let Some((v, mean)) = principal_direction(&g, d, self.cfg.power_iters) else {
                continue;
            };
            let proj: Vec<f64> = g.chunks_exact(d).map(|r| project(r, &mean, &v)).collect();
            let w: Vec<f64> = slots.iter().map(|&s| self.window.n[s] as f64).collect();
            let Some(stay) = split_sides(self.cfg.threshold, &proj, &w) else {
                continue;
            };
            // Unobserved members stay, so the parent keeps at least them or the stayers.
            let child = self.add_cluster(c as u32)?;
            for (k, &s) in slots.iter().enumerate() {
                if !stay[k] {
                    let e = self.window.ents[s];
                    self.move_entity(e, child);
                    self.moves -= 1;
                }
            }
            return Ok(Some(child));
        }
        Ok(None)
    }

    /// Offline approximate reassignment of every entity observed in the window.
    fn reassign_approx(&mut self, curvature: f64) -> Result<usize> {
        let d = self.dim;
        let k = self.num_clusters();
        let mut proposals = Vec::new();
        for s in 0..self.window.ents.len() {
            let e = self.window.ents[s];
            let g = &self.window.grads[s * d..(s + 1) * d];
            let n = self.window.n[s] as f64;
            let cur = self.assign.get(e as usize) as usize;
            let best = self.best_candidate(g, n, cur, 0..k, curvature);
            if best != cur {
                proposals.push((e, best as u32));
            }
        }
        self.apply_moves(&proposals)
    }

    /// The candidate minimising the second-order model of the entity's loss (strict
    /// improvement over staying, else `cur`).
    fn best_candidate(
        &self,
        g: &[f32],
        n: f64,
        cur: usize,
        cands: impl Iterator<Item = usize>,
        curvature: f64,
    ) -> usize {
        let e = self.rows.row(cur);
        let mut best = (0f64, cur);
        for c in cands {
            if c == cur {
                continue;
            }
            let r = self.rows.row(c);
            let (mut lin, mut sq) = (0f64, 0f64);
            for j in 0..self.dim {
                let dx = r[j] as f64 - e[j] as f64;
                lin += g[j] as f64 * dx;
                sq += dx * dx;
            }
            let cost = lin + 0.5 * curvature * n * sq;
            if cost < best.0 - 1e-12 {
                best = (cost, c);
            }
        }
        best.1
    }

    // ---------------------------------------------------------------- CEL-Lite

    fn lite_observe(&mut self, g: &RowGrads) -> Result<()> {
        let d = self.dim;
        let clustering = self.cfg.clustering_at(self.step + 1);
        let reassign_now = clustering
            && (self.step + 1).is_multiple_of(self.cfg.lite_reassign_every)
            && !matches!(self.cfg.reassign, Reassign::None);
        let curvature = match self.cfg.reassign {
            Reassign::Approx { curvature } | Reassign::Exact { curvature, .. } => curvature,
            Reassign::None => 1.0,
        };
        for i in 0..g.len() {
            let e = g.rows[i];
            let gi = g.grad(i);
            let cur = self.assign.get(e as usize);
            // Window sums of the pending split's sampled members.
            if let Some(w) = &mut self.lite
                && w.cluster == cur
            {
                w.seen += 1;
                match w.slot.get(&e) {
                    Some(&k) => {
                        let k = k as usize;
                        w.grads[k * d..(k + 1) * d]
                            .iter_mut()
                            .zip(gi)
                            .for_each(|(a, b)| *a += b);
                        w.kept_seen += u64::from(g.counts[i]);
                    }
                    None if w.ents.len() < self.cfg.reservoir => {
                        w.slot.insert(e, w.ents.len() as u32);
                        w.ents.push(e);
                        w.grads.extend_from_slice(gi);
                        w.kept_seen += u64::from(g.counts[i]);
                    }
                    None => {}
                }
            }
            // Lazy placement after an open split of its cluster: undecided members wait
            // (no reassignment) until decided; decided ones are reassigned as usual.
            if let Some(o) = self.open.iter_mut().find(|o| o.parent == cur) {
                let k = match o.index.get(&e) {
                    Some(&k) => k as usize,
                    None => {
                        o.index.insert(e, o.evidence.len() as u32);
                        o.evidence.push((e, 0.0, 0));
                        o.evidence.len() - 1
                    }
                };
                if o.evidence[k].2 != DECIDED {
                    // `gi` sums the entity's occurrences in the batch: centre on as many.
                    let n = f64::from(g.counts[i]);
                    let p: f64 = gi
                        .iter()
                        .zip(&o.mean)
                        .zip(&o.v)
                        .map(|((&x, &mu), &vi)| (f64::from(x) - n * mu) * vi)
                        .sum();
                    o.evidence[k].1 += p;
                    o.evidence[k].2 += 1;
                    if o.evidence[k].2 < PLACE_AFTER {
                        continue;
                    }
                    o.evidence[k].2 = DECIDED;
                    let (sum, child) = (o.evidence[k].1, o.child);
                    if sum < 0.0 && self.sizes[cur as usize] > 1 {
                        self.move_entity(e, child);
                        self.moves -= 1;
                    }
                    continue;
                }
            }
            if reassign_now {
                self.lite_reassign_one(e, gi, g.counts[i], curvature);
            }
        }
        Ok(())
    }

    /// CEL-Lite reassignment of entity `e` (gradient `gi` summed over `count` occurrences)
    /// among the tree neighbours of its cluster, with the stabilizers. Returns whether it moved.
    fn lite_reassign_one(&mut self, e: u32, gi: &[f32], count: u32, curvature: f64) -> bool {
        let cur = self.assign.get(e as usize) as usize;
        let node = self.nodes[cur];
        let mut cands: Vec<usize> = self.kids[cur].iter().map(|&c| c as usize).collect();
        if let Some(p) = node.parent {
            cands.push(p as usize);
            cands.extend(self.kids[p as usize].iter().map(|&c| c as usize));
        }
        cands.truncate(8);
        let best = self.best_candidate(gi, count as f64, cur, cands.into_iter(), curvature);
        if best != cur && self.sizes[cur] > 1 && self.rng.random::<f64>() >= self.cfg.keep_prob {
            self.move_entity(e, best as u32);
            return true;
        }
        false
    }

    /// CEL-Lite's reassignment pass alone, for one batch of entity gradients (`g`: distinct
    /// entities, each gradient summed over the batch, with its count): every entity moves to
    /// the tree neighbour (parent, children, siblings of its cluster) preferred by the
    /// second-order model, with the stabilizers. [`apply_gradients`] runs this same pass on
    /// every reassignment step, for the entities that are not being placed after a split; this
    /// method exists so its cost can be measured apart from the rest of a step. Its cost is
    /// `O(entities in g x 8 x d)`, whatever the vocabulary. Returns how many entities moved.
    ///
    /// [`apply_gradients`]: EmbeddingTable::apply_gradients
    pub fn lite_reassign(&mut self, g: &RowGrads) -> Result<usize> {
        if self.cfg.mode != Mode::Lite {
            candle_core::bail!(
                "CEL table of `{}`: lite_reassign needs mode lite",
                self.field
            );
        }
        if g.dim != self.dim {
            candle_core::bail!("gradients of width {}, table width {}", g.dim, self.dim);
        }
        if let Some(&e) = g.rows.iter().find(|&&e| e as usize >= self.vocab) {
            candle_core::bail!("entity {e} is outside the vocabulary of {}", self.vocab);
        }
        let curvature = match self.cfg.reassign {
            Reassign::Approx { curvature } | Reassign::Exact { curvature, .. } => curvature,
            Reassign::None => 1.0,
        };
        let mut moved = 0;
        for i in 0..g.len() {
            moved +=
                usize::from(self.lite_reassign_one(g.rows[i], g.grad(i), g.counts[i], curvature));
        }
        Ok(moved)
    }

    /// CEL-Lite's split step alone, as [`end_step`] runs it every `split_every` steps: the
    /// cluster whose reservoir has been filling since the previous split step is cut along the
    /// first principal direction of the sampled member gradients (sampled members are placed
    /// at once, the others lazily), then a reservoir is opened on the next cluster to split.
    /// Does nothing once `max_clusters` is reached or after the clustered phase. This method
    /// exists so the cost of a split can be measured apart from the rest of a step: it is
    /// `O(reservoir x d x power_iters + clusters)`, whatever the vocabulary. Returns the new
    /// cluster, if a split was made.
    ///
    /// [`end_step`]: EmbeddingTable::end_step
    pub fn lite_split_now(&mut self) -> Result<Option<u32>> {
        if self.cfg.mode != Mode::Lite {
            candle_core::bail!(
                "CEL table of `{}`: lite_split_now needs mode lite",
                self.field
            );
        }
        self.lite_split_step()
    }

    fn lite_end_step(&mut self) -> Result<()> {
        let step = self.step;
        // Close the placement windows that end now: undecided members go by their evidence.
        let (closing, open): (Vec<OpenSplit>, Vec<OpenSplit>) = std::mem::take(&mut self.open)
            .into_iter()
            .partition(|o| o.until <= step);
        self.open = open;
        for o in closing {
            for (e, sum, n) in o.evidence {
                if n != DECIDED
                    && sum < 0.0
                    && self.assign.get(e as usize) == o.parent
                    && self.sizes[o.parent as usize] > 1
                {
                    self.move_entity(e, o.child);
                    self.moves -= 1;
                }
            }
        }
        if !step.is_multiple_of(self.cfg.split_every) {
            return Ok(());
        }
        self.lite_split_step().map(|_| ())
    }

    /// The split step of CEL-Lite (see [`Self::lite_split_now`]).
    fn lite_split_step(&mut self) -> Result<Option<u32>> {
        let clustering = self.cfg.clustering_at(self.step);
        let mut child = None;
        if let Some(w) = self.lite.take()
            && clustering
            && self.num_clusters() < self.cfg.max_clusters
        {
            child = self.lite_split(w)?;
        }
        if clustering && self.num_clusters() < self.cfg.max_clusters {
            let open: Vec<u32> = self.open.iter().map(|o| o.parent).collect();
            if let Some(&c) = self
                .split_order()
                .iter()
                .find(|&&c| !open.contains(&(c as u32)))
            {
                self.lite = Some(LiteWindow {
                    cluster: c as u32,
                    seen: 0,
                    kept_seen: 0,
                    ents: Vec::new(),
                    grads: Vec::new(),
                    slot: IdMap::default(),
                });
            }
        }
        // The `grad_norm` choice averages over one window, as offline.
        self.cl_grad.iter_mut().for_each(|x| *x = 0.0);
        Ok(child)
    }

    fn lite_split(&mut self, w: LiteWindow) -> Result<Option<u32>> {
        let d = self.dim;
        let parent = w.cluster;
        let Some((v, mean)) = principal_direction(&w.grads, d, self.cfg.power_iters) else {
            return Ok(None);
        };
        let proj: Vec<f64> = w
            .grads
            .chunks_exact(d)
            .map(|r| project(r, &mean, &v))
            .collect();
        // The sampled members still in the parent are placed now, by their window sums.
        let go: Vec<u32> = w
            .ents
            .iter()
            .zip(&proj)
            .filter(|(e, p)| **p < 0.0 && self.assign.get(**e as usize) == parent)
            .map(|(e, _)| *e)
            .collect();
        if go.is_empty() || go.len() as u32 >= self.sizes[parent as usize] {
            return Ok(None);
        }
        let child = self.add_cluster(parent)?;
        for e in go {
            self.move_entity(e, child);
            self.moves -= 1;
        }
        // The kept members were placed now, by their window sums: decided.
        let evidence: Vec<(u32, f64, u32)> = w.ents.iter().map(|&e| (e, 0.0, DECIDED)).collect();
        let index = evidence
            .iter()
            .enumerate()
            .map(|(k, &(e, _, _))| (e, k as u32))
            .collect();
        // The mean of the window sums, per occurrence.
        let per = match w.kept_seen {
            0 => 1.0, // a window restored from a checkpoint that did not count them
            n => w.ents.len() as f64 / n as f64,
        };
        let mean = mean.iter().map(|m| m * per).collect();
        self.open.push(OpenSplit {
            parent,
            child,
            v,
            mean,
            until: self.step + self.cfg.placement_steps,
            evidence,
            index,
        });
        Ok(Some(child))
    }

    // ---------------------------------------------------------------- personalization

    fn start_personalization(&mut self) -> Result<()> {
        let d = self.dim;
        let mut w = Vec::with_capacity(self.vocab * d);
        let k = self.num_clusters();
        let mut sums = vec![0f64; k * d];
        for e in 0..self.vocab {
            let c = self.assign.get(e) as usize;
            let r = self.rows.row(c);
            w.extend_from_slice(r);
            for j in 0..d {
                sums[c * d + j] += r[j] as f64;
            }
        }
        let rows = SparseRows::from_weights(self.vocab, d, w, *self.rows.config(), &self.device)?;
        self.personal = Some(Personal { rows, sums });
        self.window.clear();
        self.lite = None;
        self.open.clear();
        Ok(())
    }

    fn personal_step(&mut self, mut g: RowGrads) -> Result<()> {
        let d = self.dim;
        let lambda = self.cfg.lambda as f32;
        let p = self.personal.as_mut().expect("personalization phase");
        let before: Vec<f32> = p.rows.gather(&g.rows)?;
        for i in 0..g.len() {
            let e = g.rows[i] as usize;
            let c = self.assign.get(e) as usize;
            let centroid = self.rows.row(c);
            let gi = g.grad_mut(i);
            for j in 0..d {
                gi[j] += 2.0 * lambda * (before[i * d + j] - centroid[j]);
            }
        }
        p.rows.update(&g)?;
        // Centroids follow their members' means; members move to the nearest centroid.
        let after = p.rows.gather(&g.rows)?;
        let mut touched = Vec::new();
        for i in 0..g.len() {
            let c = self.assign.get(g.rows[i] as usize) as usize;
            for j in 0..d {
                p.sums[c * d + j] += (after[i * d + j] - before[i * d + j]) as f64;
            }
            touched.push(c);
        }
        for i in 0..g.len() {
            let e = g.rows[i];
            let cur = self.assign.get(e as usize) as usize;
            let v = &after[i * d..(i + 1) * d];
            let mut best = (f64::INFINITY, cur);
            for c in 0..self.num_clusters() {
                let r = self.rows.row(c);
                let dist: f64 = r
                    .iter()
                    .zip(v)
                    .map(|(&a, &b)| ((a - b) as f64).powi(2))
                    .sum();
                if dist < best.0 - 1e-12 || (c == cur && dist <= best.0) {
                    best = (dist, c);
                }
            }
            if best.1 != cur && self.sizes[cur] > 1 {
                self.move_entity(e, best.1 as u32);
                touched.push(best.1);
            }
        }
        touched.sort_unstable();
        touched.dedup();
        let p = self.personal.as_ref().expect("personalization phase");
        for c in touched {
            let n = self.sizes[c].max(1) as f64;
            let mean: Vec<f32> = (0..d).map(|j| (p.sums[c * d + j] / n) as f32).collect();
            self.rows.row_mut(c).copy_from_slice(&mean);
        }
        Ok(())
    }

    fn rebuild_derived(&mut self) {
        let k = self.num_clusters();
        self.sizes = vec![0; k];
        self.inter = vec![0; k];
        for e in 0..self.vocab {
            let c = self.assign.get(e) as usize;
            self.sizes[c] += 1;
            self.inter[c] += self.counts[e] as u64;
        }
        self.kids = vec![Vec::new(); k];
        for (c, n) in self.nodes.iter().enumerate() {
            if let Some(p) = n.parent {
                self.kids[p as usize].push(c as u32);
            }
        }
        if let Some(p) = &mut self.personal {
            let d = self.dim;
            p.sums = vec![0f64; k * d];
            for e in 0..self.vocab {
                let c = self.assign.get(e) as usize;
                let r = p.rows.row(e);
                for (s, &x) in p.sums[c * d..(c + 1) * d].iter_mut().zip(r) {
                    *s += x as f64;
                }
            }
        }
    }
}

impl EmbeddingTable for ClusteredEmbedding {
    fn kind(&self) -> &'static str {
        "cel"
    }
    fn dim(&self) -> usize {
        self.dim
    }
    fn vocab(&self) -> usize {
        self.vocab
    }

    fn lookup(&mut self, ids: &[u32], train: bool) -> Result<Tensor> {
        if !train {
            let v = self.eval_lookup(ids)?;
            return Tensor::from_vec(v, (ids.len(), self.dim), &self.device);
        }
        if self.cfg.mode == Mode::Lite
            && let Some(&top) = ids.iter().max()
            && top as usize >= self.vocab.saturating_add(MAX_LITE_GROWTH)
        {
            // CEL-Lite grows densely up to the largest ID: a hashed or corrupt ID would
            // allocate billions of entities in one step.
            candle_core::bail!(
                "CEL table of `{}`: ID {top} is {} past its {} entities; CEL-Lite grows the \
                 table densely up to the largest ID, by at most {MAX_LITE_GROWTH} per lookup: \
                 map raw IDs to dense indices first (the data readers' vocabularies do)",
                self.field,
                top as usize - self.vocab,
                self.vocab
            );
        }
        let ents: Vec<u32> = ids.iter().map(|&id| self.entity(id, true)).collect();
        let dd = dedup(&ents);
        let v = self.vector_rows(&dd.unique)?;
        let leaf = Var::from_vec(v, (dd.unique.len(), self.dim), &self.device)?;
        let n = dd.inverse.len();
        let inverse = Tensor::from_vec(dd.inverse, n, &self.device)?;
        let out = leaf.as_tensor().index_select(&inverse, 0)?;
        self.pending.push(Pending {
            ents: dd.unique,
            counts: dd.counts,
            leaf,
        });
        Ok(out)
    }

    fn apply_gradients(&mut self, grads: &GradStore) -> Result<()> {
        let g = self.take_entity_grads(grads)?;
        if g.is_empty() {
            return Ok(());
        }
        for i in 0..g.len() {
            let e = g.rows[i] as usize;
            let n = g.counts[i];
            self.counts[e] = self.counts[e].saturating_add(n);
            self.inter[self.assign.get(e) as usize] += n as u64;
        }
        if self.personal.is_some() {
            return self.personal_step(g);
        }
        // Gradient averaging: a cluster row gets the mean of its members' gradients.
        let clusters: Vec<u32> = g
            .rows
            .iter()
            .map(|&e| self.assign.get(e as usize))
            .collect();
        let ones = vec![1u32; g.len()];
        let mut cg = RowGrads::merge(self.dim, &clusters, &g.grads, &ones)?;
        cg.average();
        self.rows.update(&cg)?;
        let d = self.dim;
        for (i, &c) in cg.rows.iter().enumerate() {
            self.cl_grad[c as usize * d..(c as usize + 1) * d]
                .iter_mut()
                .zip(cg.grad(i))
                .for_each(|(a, b)| *a += b);
        }
        match self.cfg.mode {
            Mode::Offline => {
                if self.cfg.clustering_at(self.step + 1) {
                    for i in 0..g.len() {
                        self.window.add(g.rows[i], g.grad(i), g.counts[i]);
                    }
                }
                Ok(())
            }
            Mode::Lite => self.lite_observe(&g),
        }
    }

    fn clear_pending(&mut self) {
        self.pending.clear();
    }

    fn num_params(&self) -> usize {
        self.rows.num_params() + self.personal.as_ref().map_or(0, |p| p.rows.num_params())
    }

    fn bytes(&self) -> usize {
        self.memory().serving_bytes
    }

    fn reset_optimizer_state(&mut self) -> Result<()> {
        self.rows.reset_state();
        if let Some(p) = &mut self.personal {
            p.rows.reset_state();
        }
        Ok(())
    }
    fn clamp_params(&mut self, min: f32, max: f32) -> Result<()> {
        self.rows.clamp(min, max);
        if let Some(p) = &mut self.personal {
            p.rows.clamp(min, max);
        }
        Ok(())
    }

    fn end_step(&mut self, step: u64) -> Result<()> {
        self.step = step;
        // An exact reassignment due at an earlier step that no driver ran is skipped, so the
        // window it kept is not kept for ever.
        if self.reassign_due {
            if self.skipped_exact == 0 {
                tracing::warn!(
                    table = %self.field,
                    step,
                    "an exact CEL reassignment came due and nothing ran it: call \
                     embedding_cel::exact::reassign_due after each training step (the trainer \
                     does), or use reassign = approx"
                );
            }
            self.skipped_exact += 1;
        }
        self.reassign_due = false;
        // `>=`, not `==`: a resumed run may set the start below the step it resumes at.
        if self.cfg.personalize_at.is_some_and(|p| step >= p) && self.personal.is_none() {
            return self.start_personalization();
        }
        if self.personal.is_some() {
            return Ok(());
        }
        if self.cfg.mode == Mode::Lite {
            return self.lite_end_step();
        }
        let clustering = self.cfg.clustering_at(step);
        let window_end = step.is_multiple_of(self.cfg.split_every);
        if clustering && window_end && self.num_clusters() < self.cfg.max_clusters {
            self.split_offline()?;
        }
        if clustering && self.cfg.is_reassign_step(step) {
            match self.cfg.reassign {
                Reassign::None => {}
                Reassign::Approx { curvature } => {
                    self.reassign_approx(curvature)?;
                }
                Reassign::Exact { .. } => self.reassign_due = true,
            }
        }
        if window_end && !self.reassign_due {
            self.end_window();
        }
        Ok(())
    }

    fn save(&self, prefix: &str, out: &mut TensorMap) -> Result<serde_json::Value> {
        let cpu = Device::Cpu;
        let d = self.dim;
        let rows = self.rows.save(&format!("{prefix}rows."), out)?;
        out.insert(
            format!("{prefix}assign"),
            Tensor::from_vec(self.assign.to_vec(), self.vocab, &cpu)?,
        );
        out.insert(
            format!("{prefix}counts"),
            Tensor::from_slice(&self.counts, self.vocab, &cpu)?,
        );
        let k = self.num_clusters();
        out.insert(
            format!("{prefix}cluster_grad"),
            Tensor::from_slice(&self.cl_grad, (k, d), &cpu)?,
        );
        let m = self.window.ents.len();
        if m > 0 {
            out.insert(
                format!("{prefix}window.ents"),
                Tensor::from_slice(&self.window.ents, m, &cpu)?,
            );
            out.insert(
                format!("{prefix}window.grads"),
                Tensor::from_slice(&self.window.grads, (m, d), &cpu)?,
            );
            out.insert(
                format!("{prefix}window.n"),
                Tensor::from_slice(&self.window.n, m, &cpu)?,
            );
        }
        let lite_len = self.lite.as_ref().map_or(0, |l| l.ents.len());
        if let Some(l) = &self.lite
            && lite_len > 0
        {
            out.insert(
                format!("{prefix}lite.ents"),
                Tensor::from_slice(&l.ents, lite_len, &cpu)?,
            );
            out.insert(
                format!("{prefix}lite.grads"),
                Tensor::from_slice(&l.grads, (lite_len, d), &cpu)?,
            );
        }
        let personal = match &self.personal {
            Some(p) => p.rows.save(&format!("{prefix}personal."), out)?,
            None => serde_json::Value::Null,
        };
        Ok(json!({
            "kind": "cel",
            "field": self.field,
            "vocab": self.vocab,
            "dim": d,
            "clusters": k,
            "width": self.assign.width(),
            "mode": self.cfg.mode,
            "rows": rows,
            "nodes": self.nodes,
            "window": m,
            "lite": self.lite,
            "lite_len": lite_len,
            "open": self.open,
            "cluster_loss": self.cl_loss,
            "personal": personal,
            "reassign_due": self.reassign_due,
            "step": self.step,
            "moves": self.moves,
            "rng": self.rng,
        }))
    }

    fn load(&mut self, prefix: &str, tensors: &TensorMap, meta: &serde_json::Value) -> Result<()> {
        let err = |what: &str| candle_core::Error::Msg(format!("`{prefix}`: {what}"));
        if meta.get("kind").and_then(|k| k.as_str()) != Some("cel") {
            return Err(err("saved table is not a CEL table"));
        }
        let vocab = meta_usize(meta, "vocab", prefix)?;
        let dim = meta_usize(meta, "dim", prefix)?;
        let k = meta_usize(meta, "clusters", prefix)?;
        if dim != self.dim {
            return Err(err(&format!("saved width {dim}, expected {}", self.dim)));
        }
        let mode: Mode =
            serde_json::from_value(meta["mode"].clone()).map_err(|_| err("unreadable `mode`"))?;
        if mode != self.cfg.mode {
            return Err(err(&format!(
                "saved in mode {mode:?}, this table is {:?}",
                self.cfg.mode
            )));
        }
        if vocab != self.vocab && !(mode == Mode::Lite && vocab > self.vocab) {
            return Err(err(&format!(
                "saved vocabulary {vocab}, expected {}",
                self.vocab
            )));
        }
        if k > self.cfg.max_clusters {
            return Err(err(&format!(
                "saved {k} clusters do not fit max_clusters {}",
                self.cfg.max_clusters
            )));
        }
        let width = meta_usize(meta, "width", prefix)?;
        if width != self.assign.width() {
            return Err(err(&format!(
                "saved cluster ids of {width} byte(s), this table's max_clusters {} needs {} \
                 (1 byte up to 256 clusters, 2 up to 65,536, else 4)",
                self.cfg.max_clusters,
                self.assign.width()
            )));
        }
        let nodes: Vec<Node> =
            serde_json::from_value(meta["nodes"].clone()).map_err(|_| err("unreadable `nodes`"))?;
        if nodes.len() != k
            || nodes
                .iter()
                .any(|n| n.parent.is_some_and(|p| p as usize >= k))
        {
            return Err(err("the split tree does not match the clusters"));
        }
        let mut rows =
            SparseRows::from_weights(0, self.dim, Vec::new(), *self.rows.config(), &self.device)?;
        rows.load(&format!("{prefix}rows."), tensors, &meta["rows"], Some(k))?;
        let assign = take_tensor(tensors, &format!("{prefix}assign"), &[vocab], DType::U32)?
            .to_vec1::<u32>()?;
        if assign.iter().any(|&c| c as usize >= k) {
            return Err(err("the assignment names a cluster that does not exist"));
        }
        let counts = take_tensor(tensors, &format!("{prefix}counts"), &[vocab], DType::U32)?
            .to_vec1::<u32>()?;
        let cl_grad = take_tensor(
            tensors,
            &format!("{prefix}cluster_grad"),
            &[k, dim],
            DType::F32,
        )?
        .flatten_all()?
        .to_vec1::<f32>()?;
        let m = meta_usize(meta, "window", prefix)?;
        let mut window = Window::default();
        if m > 0 {
            window.ents = take_tensor(tensors, &format!("{prefix}window.ents"), &[m], DType::U32)?
                .to_vec1::<u32>()?;
            window.grads = take_tensor(
                tensors,
                &format!("{prefix}window.grads"),
                &[m, dim],
                DType::F32,
            )?
            .flatten_all()?
            .to_vec1::<f32>()?;
            window.n = take_tensor(tensors, &format!("{prefix}window.n"), &[m], DType::U32)?
                .to_vec1::<u32>()?;
            if window.ents.iter().any(|&e| e as usize >= vocab) {
                return Err(err("the split window names an unknown entity"));
            }
            for (s, &e) in window.ents.iter().enumerate() {
                window.slot.insert(e, s as u32);
            }
        }
        let mut lite: Option<LiteWindow> =
            serde_json::from_value(meta["lite"].clone()).map_err(|_| err("unreadable `lite`"))?;
        let lite_len = meta_usize(meta, "lite_len", prefix)?;
        if let Some(l) = &mut lite
            && lite_len > 0
        {
            l.ents = take_tensor(
                tensors,
                &format!("{prefix}lite.ents"),
                &[lite_len],
                DType::U32,
            )?
            .to_vec1::<u32>()?;
            l.grads = take_tensor(
                tensors,
                &format!("{prefix}lite.grads"),
                &[lite_len, dim],
                DType::F32,
            )?
            .flatten_all()?
            .to_vec1::<f32>()?;
            if l.ents.iter().any(|&e| e as usize >= vocab) {
                return Err(err("the reservoir names an unknown entity"));
            }
            l.slot = l
                .ents
                .iter()
                .enumerate()
                .map(|(k, &e)| (e, k as u32))
                .collect();
        }
        let mut open: Vec<OpenSplit> =
            serde_json::from_value(meta["open"].clone()).map_err(|_| err("unreadable `open`"))?;
        for o in &mut open {
            if o.evidence.iter().any(|x| x.0 as usize >= vocab)
                || o.v.len() != dim
                || o.mean.len() != dim
                || o.parent as usize >= nodes.len()
                || o.child as usize >= nodes.len()
            {
                return Err(err(
                    "an open split names an unknown entity or has the wrong width",
                ));
            }
            o.index = o
                .evidence
                .iter()
                .enumerate()
                .map(|(k, x)| (x.0, k as u32))
                .collect();
        }
        let cl_loss: Vec<f64> = serde_json::from_value(meta["cluster_loss"].clone())
            .map_err(|_| err("unreadable `cluster_loss`"))?;
        let rng: ChaCha8Rng =
            serde_json::from_value(meta["rng"].clone()).map_err(|_| err("unreadable `rng`"))?;
        let personal = if meta["personal"].is_null() {
            None
        } else {
            let mut p =
                SparseRows::from_weights(0, dim, Vec::new(), *self.rows.config(), &self.device)?;
            p.load(
                &format!("{prefix}personal."),
                tensors,
                &meta["personal"],
                Some(vocab),
            )?;
            Some(Personal {
                rows: p,
                sums: Vec::new(),
            })
        };
        let width = self.assign.width();
        self.assign = Assignment::from_fn(vocab, width, |i| assign[i]);
        self.vocab = vocab;
        self.counts = counts;
        self.rows = rows;
        self.nodes = nodes;
        self.cl_grad = cl_grad;
        self.window = window;
        self.lite = lite;
        self.open = open;
        self.cl_loss = cl_loss;
        self.personal = personal;
        self.rng = rng;
        self.reassign_due = meta["reassign_due"].as_bool().unwrap_or(false);
        self.step = meta["step"].as_u64().unwrap_or(0);
        self.moves = meta["moves"].as_u64().unwrap_or(0);
        self.probe = None;
        self.pending.clear();
        self.rebuild_derived();
        Ok(())
    }

    fn as_any(&self) -> &dyn Any {
        self
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn Any> {
        Some(self)
    }
}
