//! The reusable machinery of every sparse table: rows in host memory, per-row optimizer state,
//! and the gather → leaf → update cycle.
//!
//! # Design: tables live in host memory, the dense network on its device
//! Like a parameter server, a [`SparseRows`] keeps its rows (and their optimizer state) in a
//! host `Vec<f32>`, whatever device the model runs on. A training lookup
//! 1. deduplicates the requested rows on the host ([`dedup`]),
//! 2. copies the unique rows into a small leaf [`Var`] of shape `[unique, dim]` created on the
//!    model's device,
//! 3. returns `leaf.index_select(inverse)`: autograd's gradient for the lookup is then the
//!    `[unique, dim]` gradient of the leaf, never a tensor as large as the table.
//!
//! After backward, [`SparseRows::take_gradients`] reads the gradients of every pending leaf,
//! merges them by row ([`RowGrads`]), and [`SparseRows::update`] applies the row-wise optimizer
//! to those rows only. Between the two, a caller may transform the gradients (CEL averages the
//! gradient of a cluster row over its members: [`RowGrads::average`]).
//!
//! The cost of a step is proportional to the rows the batch touches, not to the table size.
//! Rows that are not touched do not change at all: no decay, no optimizer-state change (Adam is
//! "lazy": each row counts its own updates for bias correction).
//!
//! A table whose rows are shared by many IDs and that needs per-ID gradients (CEL's clusters)
//! can skip [`SparseRows::lookup`] and do the same steps itself: [`dedup`] the IDs, copy their
//! rows with [`SparseRows::gather`] into its own leaf (one row per distinct ID), and after
//! backward turn the per-ID gradients into per-row ones with [`RowGrads::merge`] (then, e.g.,
//! [`RowGrads::average`]) before [`SparseRows::update`]. New rows come from
//! [`SparseRows::push_row`] with fresh optimizer state.
//!
//! ```
//! use candle_core::Device;
//! use rec_nn::embedding::rows::SparseRows;
//! use rec_nn::init::{named_rng, Init};
//! use rec_nn::optim::OptimizerConfig;
//! # fn main() -> candle_core::Result<()> {
//! let mut rng = named_rng(0, "demo");
//! let mut rows = SparseRows::new(1000, 4, Init::Normal { mean: 0.0, std: 0.1 }, &mut rng,
//!     OptimizerConfig::sgd(0.1), &Device::Cpu)?;
//! let before = rows.row(7).to_vec();
//! let e = rows.lookup(&[7, 7, 3], true)?;          // [3, 4], differentiable
//! let grads = e.sum_all()?.backward()?;
//! let g = rows.take_gradients(&grads)?;            // rows 7 and 3, merged
//! assert_eq!(g.rows, vec![7, 3]);
//! assert_eq!(g.counts, vec![2, 1]);
//! rows.update(&g)?;
//! assert!((rows.row(7)[0] - (before[0] - 0.1 * 2.0)).abs() < 1e-6);
//! # Ok(()) }
//! ```

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use candle_core::backprop::GradStore;
use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;

use crate::embedding::TensorMap;
use crate::init::{Init, Sampler};
use crate::io::{meta_usize, take_tensor};
use crate::optim::{OptimizerConfig, update_row};

/// A multiplicative hasher for `u32` keys (Fibonacci hashing): row deduplication runs on every
/// lookup, and SipHash would cost more than the gather itself. The product's well-mixed high
/// half is folded into the low bits, which the hash map takes its bucket from: without that,
/// IDs that are multiples of `2^k` would all share their low `k` bits and pile into few buckets.
/// The maps are only looked up, never iterated, so the hash never changes a result.
#[derive(Default, Clone, Copy)]
pub struct IdHasher(u64);

impl Hasher for IdHasher {
    fn finish(&self) -> u64 {
        self.0 ^ (self.0 >> 32)
    }
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0.rotate_left(8) ^ b as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        }
    }
    fn write_u32(&mut self, i: u32) {
        self.0 = (i as u64 ^ self.0).wrapping_mul(0x9E37_79B9_7F4A_7C15);
    }
}

/// A `HashMap` keyed by row or ID numbers.
pub type IdMap<V> = HashMap<u32, V, BuildHasherDefault<IdHasher>>;

/// The unique values of a list, in order of first occurrence, with the position of every
/// element among them and how often each occurs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Dedup {
    /// Distinct values, in order of first occurrence.
    pub unique: Vec<u32>,
    /// For every input element, its index in `unique`.
    pub inverse: Vec<u32>,
    /// For every unique value, how many input elements equal it.
    pub counts: Vec<u32>,
}

/// Deduplicates `ids` (see [`Dedup`]).
pub fn dedup(ids: &[u32]) -> Dedup {
    let mut pos: IdMap<u32> = IdMap::with_capacity_and_hasher(ids.len(), Default::default());
    let mut unique = Vec::with_capacity(ids.len());
    let mut counts = Vec::with_capacity(ids.len());
    let inverse = ids
        .iter()
        .map(|&id| {
            let next = unique.len() as u32;
            let p = *pos.entry(id).or_insert(next);
            if p == next {
                unique.push(id);
                counts.push(0);
            }
            counts[p as usize] += 1;
            p
        })
        .collect();
    Dedup {
        unique,
        inverse,
        counts,
    }
}

/// Gradients of the rows touched since the last update, merged by row.
#[derive(Debug, Clone, PartialEq)]
pub struct RowGrads {
    /// Width of a row.
    pub dim: usize,
    /// Distinct rows, in order of first lookup.
    pub rows: Vec<u32>,
    /// `rows.len() * dim` gradient values, row after row.
    pub grads: Vec<f32>,
    /// For every row, how many looked-up positions it served (summed over lookups).
    pub counts: Vec<u32>,
}

impl RowGrads {
    /// Merges per-item gradients into per-row gradients: item `k` (gradient
    /// `grads[k * dim..(k + 1) * dim]`, serving `counts[k]` positions) belongs to row `rows[k]`;
    /// items of the same row are summed, in order of first appearance. A clustered table uses
    /// this to turn per-entity gradients into per-cluster-row gradients.
    pub fn merge(dim: usize, rows: &[u32], grads: &[f32], counts: &[u32]) -> Result<Self> {
        if grads.len() != rows.len() * dim || counts.len() != rows.len() {
            candle_core::bail!(
                "{} rows with {} gradient values and {} counts (width {dim})",
                rows.len(),
                grads.len(),
                counts.len()
            );
        }
        let mut out = RowGrads {
            dim,
            rows: Vec::new(),
            grads: Vec::new(),
            counts: Vec::new(),
        };
        let mut pos: IdMap<usize> = IdMap::default();
        for (k, &r) in rows.iter().enumerate() {
            let g = &grads[k * dim..(k + 1) * dim];
            match pos.get(&r) {
                Some(&i) => {
                    out.counts[i] += counts[k];
                    out.grad_mut(i).iter_mut().zip(g).for_each(|(a, b)| *a += b);
                }
                None => {
                    pos.insert(r, out.rows.len());
                    out.rows.push(r);
                    out.counts.push(counts[k]);
                    out.grads.extend_from_slice(g);
                }
            }
        }
        Ok(out)
    }

    /// Number of rows.
    pub fn len(&self) -> usize {
        self.rows.len()
    }

    /// True when no row has a gradient.
    pub fn is_empty(&self) -> bool {
        self.rows.is_empty()
    }

    /// Gradient of the `i`-th row of the list.
    pub fn grad(&self, i: usize) -> &[f32] {
        &self.grads[i * self.dim..(i + 1) * self.dim]
    }

    /// Mutable gradient of the `i`-th row of the list.
    pub fn grad_mut(&mut self, i: usize) -> &mut [f32] {
        &mut self.grads[i * self.dim..(i + 1) * self.dim]
    }

    /// Divides every row's gradient by its count: the mean of the gradients of the positions a
    /// shared row served, instead of their sum (CEL's gradient averaging).
    pub fn average(&mut self) {
        for i in 0..self.rows.len() {
            let c = self.counts[i].max(1) as f32;
            self.grad_mut(i).iter_mut().for_each(|g| *g /= c);
        }
    }
}

struct Pending {
    rows: Vec<u32>,
    counts: Vec<u32>,
    leaf: Var,
}

/// Rows of floats in host memory with row-wise optimizer state and sparse, lazy updates.
/// See the [module documentation](self).
///
/// Memory layout: each row's values and its optimizer state are stored next to each other
/// (`[w | acc]` for AdaGrad, `[w | m | v | step count]` for Adam), so an update reads one
/// contiguous block per row. On large tables rows are far apart in memory and this layout makes an update cost
/// one memory stream per row instead of one per array.
pub struct SparseRows {
    rows: usize,
    dim: usize,
    /// Floats per row: `dim * (1 + slots)`, plus one for Adam's update count (stored as the
    /// bits of a `u32`).
    stride: usize,
    data: Vec<f32>,
    config: OptimizerConfig,
    pending: Vec<Pending>,
    device: Device,
    /// Rows updated since the last [`clamp`](Self::clamp); `None` until the first clamp.
    touched: Option<Vec<u32>>,
}

impl SparseRows {
    /// `rows` rows of width `dim`, filled by `init` from `rng` (row after row, as for a
    /// `[rows, dim]` tensor), with optimizer `config`; lookups return tensors on `device`.
    pub fn new(
        rows: usize,
        dim: usize,
        init: Init,
        rng: &mut impl Rng,
        config: OptimizerConfig,
        device: &Device,
    ) -> Result<Self> {
        let mut s = Self::empty(rows, dim, config, device)?;
        let sampler = init.sampler(dim, rows)?;
        if !matches!(sampler, Sampler::Const(v) if v == 0.0) {
            for r in 0..rows {
                for w in s.row_mut(r) {
                    *w = sampler.draw(rng) as f32;
                }
            }
        }
        Ok(s)
    }

    /// Rows with the given values (`rows * dim`, row after row) and fresh optimizer state.
    pub fn from_weights(
        rows: usize,
        dim: usize,
        weights: Vec<f32>,
        config: OptimizerConfig,
        device: &Device,
    ) -> Result<Self> {
        if weights.len() != rows * dim {
            candle_core::bail!(
                "{} values given for {rows} rows of width {dim}",
                weights.len()
            );
        }
        let mut s = Self::empty(rows, dim, config, device)?;
        for (r, w) in weights.chunks_exact(dim.max(1)).enumerate() {
            s.row_mut(r).copy_from_slice(w);
        }
        Ok(s)
    }

    /// Zero rows with fresh optimizer state.
    fn empty(rows: usize, dim: usize, config: OptimizerConfig, device: &Device) -> Result<Self> {
        config.validate()?;
        if dim == 0 {
            candle_core::bail!("embedding rows need a positive dimension");
        }
        if rows > u32::MAX as usize {
            candle_core::bail!("{rows} rows do not fit u32 row numbers");
        }
        let counted = usize::from(config.slots() == 2);
        let stride = dim * (1 + config.slots()) + counted;
        // A zeroed allocation: pages are committed when first written, as huge pages where
        // the system allows (see `crate::sys`).
        let mut data = vec![0f32; rows * stride];
        crate::sys::advise_huge_pages(&mut data);
        let init = config.slot_init() as f32;
        if init != 0.0 {
            data.chunks_exact_mut(stride)
                .for_each(|row| row[dim..stride - counted].fill(init));
        }
        Ok(Self {
            rows,
            dim,
            stride,
            data,
            config,
            pending: Vec::new(),
            device: device.clone(),
            touched: None,
        })
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Width of a row.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Device of the tensors that lookups return.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// The optimizer configuration.
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.set_lr(lr)
    }

    /// A copy of all values, row after row (`rows * dim`).
    pub fn weights(&self) -> Vec<f32> {
        self.slot_values(0)
    }

    /// Values of slot `k` of every row (0: the weights, then the optimizer state).
    fn slot_values(&self, k: usize) -> Vec<f32> {
        let (d, st) = (self.dim, self.stride);
        let mut out = Vec::with_capacity(self.rows * d);
        for row in self.data.chunks_exact(st) {
            out.extend_from_slice(&row[k * d..(k + 1) * d]);
        }
        out
    }

    /// Row `r`. Panics if `r` is out of range (use [`gather`](Self::gather) for checked access).
    pub fn row(&self, r: usize) -> &[f32] {
        let b = r * self.stride;
        &self.data[b..b + self.dim]
    }

    /// Mutable row `r` (optimizer state is not touched). Panics if `r` is out of range.
    pub fn row_mut(&mut self, r: usize) -> &mut [f32] {
        let b = r * self.stride;
        &mut self.data[b..b + self.dim]
    }

    /// Applies `f` to every row (e.g. to rescale or project a whole table).
    pub fn for_each_row_mut(&mut self, mut f: impl FnMut(usize, &mut [f32])) {
        let d = self.dim;
        for (r, row) in self.data.chunks_exact_mut(self.stride).enumerate() {
            f(r, &mut row[..d]);
        }
    }

    /// Update count of row `r` (Adam only; 0 otherwise).
    pub fn row_steps(&self, r: usize) -> u32 {
        if self.counted() {
            self.data[(r + 1) * self.stride - 1].to_bits()
        } else {
            0
        }
    }

    /// True when rows carry an update count (Adam).
    fn counted(&self) -> bool {
        self.config.slots() == 2
    }

    /// Optimizer state slot `slot` of row `r` (AdaGrad: 0 = accumulator; Adam: 0 = m, 1 = v).
    pub fn row_state(&self, slot: usize, r: usize) -> &[f32] {
        let b = r * self.stride + (slot + 1) * self.dim;
        &self.data[b..b + self.dim]
    }

    /// Restarts every row's optimizer state (AdaGrad's accumulator, Adam's moments and update
    /// count) at its initial value, keeping the values: the rows then train as if they had
    /// just been created with these values (e.g. fine-tuning a loaded table on a new task).
    /// Pending lookups are kept.
    pub fn reset_state(&mut self) {
        let (d, st, counted) = (self.dim, self.stride, self.counted());
        let init = self.config.slot_init() as f32;
        for row in self.data.chunks_exact_mut(st) {
            let end = st - usize::from(counted);
            row[d..end].fill(init);
            if counted {
                row[st - 1] = f32::from_bits(0);
            }
        }
    }

    /// Appends a row with `values` and fresh optimizer state; returns its number. (CEL creates
    /// a cluster row as a copy of its parent this way.)
    pub fn push_row(&mut self, values: &[f32]) -> Result<u32> {
        if values.len() != self.dim {
            candle_core::bail!(
                "row of width {} pushed into rows of width {}",
                values.len(),
                self.dim
            );
        }
        if self.rows >= u32::MAX as usize {
            candle_core::bail!("too many rows");
        }
        self.data.extend_from_slice(values);
        let init = self.config.slot_init() as f32;
        let state = self.dim * self.config.slots();
        self.data.extend(std::iter::repeat_n(init, state));
        if self.counted() {
            self.data.push(f32::from_bits(0));
        }
        self.rows += 1;
        Ok(self.rows as u32 - 1)
    }

    /// Copies `rows` into a host vector (`rows.len() * dim`), checking every row number.
    pub fn gather(&self, rows: &[u32]) -> Result<Vec<f32>> {
        if let Some(&r) = rows.iter().find(|&&r| r as usize >= self.rows) {
            candle_core::bail!("row {r} requested from a table of {} rows", self.rows);
        }
        prefetch_rows(&self.data, rows, self.stride, self.dim);
        let mut out = Vec::with_capacity(rows.len() * self.dim);
        for &r in rows {
            out.extend_from_slice(self.row(r as usize));
        }
        Ok(out)
    }

    /// The rows `rows` as a `[rows.len(), dim]` tensor on the device. With `train`, the result
    /// is differentiable through a pending leaf (see the module documentation).
    pub fn lookup(&mut self, rows: &[u32], train: bool) -> Result<Tensor> {
        if !train {
            let v = self.gather(rows)?;
            return Tensor::from_vec(v, (rows.len(), self.dim), &self.device);
        }
        let d = dedup(rows);
        let v = self.gather(&d.unique)?;
        let leaf = Var::from_vec(v, (d.unique.len(), self.dim), &self.device)?;
        let n = d.inverse.len();
        let inverse = Tensor::from_vec(d.inverse, n, &self.device)?;
        let out = leaf.as_tensor().index_select(&inverse, 0)?;
        self.pending.push(Pending {
            rows: d.unique,
            counts: d.counts,
            leaf,
        });
        Ok(out)
    }

    /// True when training lookups wait for an update.
    pub fn has_pending(&self) -> bool {
        !self.pending.is_empty()
    }

    /// The leaves of the pending training lookups with their rows, in lookup order (for tables
    /// that need per-lookup gradients, e.g. to collect per-entity statistics).
    pub fn pending_leaves(&self) -> Vec<(&[u32], &Var)> {
        self.pending
            .iter()
            .map(|p| (p.rows.as_slice(), &p.leaf))
            .collect()
    }

    /// Reads the gradients of every pending lookup from `grads`, merges them by row and forgets
    /// the lookups. Lookups whose result did not reach the loss have no gradient and are skipped.
    pub fn take_gradients(&mut self, grads: &GradStore) -> Result<RowGrads> {
        let pending = std::mem::take(&mut self.pending);
        let dim = self.dim;
        if pending.len() == 1 {
            // The common case: rows are already unique.
            let p = pending.into_iter().next().expect("one pending lookup");
            return Ok(match grads.get(p.leaf.as_tensor()) {
                Some(g) => RowGrads {
                    dim,
                    grads: host_f32(g)?,
                    rows: p.rows,
                    counts: p.counts,
                },
                None => RowGrads {
                    dim,
                    rows: Vec::new(),
                    grads: Vec::new(),
                    counts: Vec::new(),
                },
            });
        }
        let (mut rows, mut all, mut counts) = (Vec::new(), Vec::new(), Vec::new());
        for p in pending {
            if let Some(g) = grads.get(p.leaf.as_tensor()) {
                all.extend(host_f32(g)?);
                rows.extend_from_slice(&p.rows);
                counts.extend_from_slice(&p.counts);
            }
        }
        RowGrads::merge(dim, &rows, &all, &counts)
    }

    /// Applies one optimizer update to every row of `g` (rows must be distinct and in range).
    /// A repeated row would be updated twice (and Adam's step count advanced twice): the
    /// crate's own paths merge repeats first ([`RowGrads::merge`]); a hand-built `RowGrads` is
    /// checked for repeats in debug builds only (a set per step on the hot path).
    pub fn update(&mut self, g: &RowGrads) -> Result<()> {
        debug_assert!(
            {
                let mut seen = std::collections::HashSet::with_capacity(g.rows.len());
                g.rows.iter().all(|r| seen.insert(*r))
            },
            "row gradients with a repeated row"
        );
        if g.dim != self.dim || g.grads.len() != g.rows.len() * self.dim {
            candle_core::bail!(
                "row gradients of width {} ({} values for {} rows) for rows of width {}",
                g.dim,
                g.grads.len(),
                g.rows.len(),
                self.dim
            );
        }
        if let Some(&r) = g.rows.iter().find(|&&r| r as usize >= self.rows) {
            candle_core::bail!("gradient for row {r} of a table of {} rows", self.rows);
        }
        let (dim, stride) = (self.dim, self.stride);
        prefetch_rows(&self.data, &g.rows, stride, stride);
        for (i, &r) in g.rows.iter().enumerate() {
            let r = r as usize;
            let block = &mut self.data[r * stride..(r + 1) * stride];
            let (w, state) = block.split_at_mut(dim);
            let grad = g.grad(i);
            match self.config.slots() {
                0 => update_row(&self.config, w, grad, &mut [], 1),
                1 => update_row(&self.config, w, grad, &mut [state], 1),
                _ => {
                    let (m, rest) = state.split_at_mut(dim);
                    let (v, count) = rest.split_at_mut(dim);
                    let step = count[0].to_bits() + 1;
                    count[0] = f32::from_bits(step);
                    update_row(&self.config, w, grad, &mut [m, v], step);
                }
            }
        }
        if let Some(t) = &mut self.touched {
            t.extend_from_slice(&g.rows);
        }
        Ok(())
    }

    /// [`take_gradients`](Self::take_gradients) followed by [`update`](Self::update).
    pub fn apply_gradients(&mut self, grads: &GradStore) -> Result<()> {
        let g = self.take_gradients(grads)?;
        self.update(&g)
    }

    /// Forgets pending lookups without updating anything.
    pub fn clear_pending(&mut self) {
        self.pending.clear();
    }

    /// Clamps values into `[min, max]`: every row on the first call, then only the rows updated
    /// since the previous call (so a per-step clamp costs what the step touched). A clamp to
    /// `[0, 0]` is a one-off zeroing (`start_at_zero`), not a bound kept every step: it visits
    /// every row and leaves later updates untracked, or their list would grow for the whole run.
    pub fn clamp(&mut self, min: f32, max: f32) {
        let zeroing = min == 0.0 && max == 0.0;
        let clamp = |w: &mut [f32]| w.iter_mut().for_each(|w| *w = w.clamp(min, max));
        match self.touched.take() {
            Some(rows) if !zeroing => rows
                .into_iter()
                .for_each(|r| clamp(self.row_mut(r as usize))),
            _ => self.for_each_row_mut(|_, w| clamp(w)),
        }
        self.touched = (!zeroing).then(Vec::new);
    }

    /// Number of trainable floats.
    pub fn num_params(&self) -> usize {
        self.rows * self.dim
    }

    /// Bytes of the parameters (optimizer state excluded).
    pub fn bytes(&self) -> usize {
        self.num_params() * std::mem::size_of::<f32>()
    }

    /// Writes `{prefix}weight` (`[rows, dim]` f32), the optimizer slots `{prefix}{slot}`
    /// (`acc`, or `m` and `v`) and, for Adam, `{prefix}steps` (`[rows]` u32). Returns the
    /// metadata (`rows`, `dim`, `optimizer`).
    pub fn save(&self, prefix: &str, out: &mut TensorMap) -> Result<serde_json::Value> {
        let cpu = Device::Cpu;
        let shape = (self.rows, self.dim);
        let names = std::iter::once("weight").chain(self.config.slot_names().iter().copied());
        for (k, name) in names.enumerate() {
            out.insert(
                format!("{prefix}{name}"),
                Tensor::from_vec(self.slot_values(k), shape, &cpu)?,
            );
        }
        if self.counted() {
            let steps: Vec<u32> = (0..self.rows).map(|r| self.row_steps(r)).collect();
            out.insert(
                format!("{prefix}steps"),
                Tensor::from_vec(steps, self.rows, &cpu)?,
            );
        }
        Ok(serde_json::json!({
            "rows": self.rows,
            "dim": self.dim,
            "optimizer": self.config.kind(),
        }))
    }

    /// Restores what [`save`](Self::save) wrote. The width and optimizer kind must match, and
    /// the row count too when `expected_rows` is given (tables whose row count is fixed by their
    /// construction); hyperparameters stay those of the current configuration. Pending lookups
    /// are dropped. Nothing changes when an error is returned.
    pub fn load(
        &mut self,
        prefix: &str,
        tensors: &TensorMap,
        meta: &serde_json::Value,
        expected_rows: Option<usize>,
    ) -> Result<()> {
        let rows = meta_usize(meta, "rows", prefix)?;
        let dim = meta_usize(meta, "dim", prefix)?;
        if dim != self.dim {
            candle_core::bail!(
                "`{prefix}`: saved rows have width {dim}, expected {}",
                self.dim
            );
        }
        if let Some(e) = expected_rows
            && e != rows
        {
            candle_core::bail!("`{prefix}`: saved table has {rows} rows, expected {e}");
        }
        let opt = meta.get("optimizer").and_then(|o| o.as_str()).unwrap_or("");
        if opt != self.config.kind() {
            candle_core::bail!(
                "`{prefix}`: saved with optimizer `{opt}`, this table uses `{}`",
                self.config.kind()
            );
        }
        let names: Vec<&str> = std::iter::once("weight")
            .chain(self.config.slot_names().iter().copied())
            .collect();
        let parts = names
            .iter()
            .map(|n| {
                take_tensor(tensors, &format!("{prefix}{n}"), &[rows, dim], DType::F32)?
                    .flatten_all()?
                    .to_vec1::<f32>()
            })
            .collect::<Result<Vec<_>>>()?;
        let steps = if self.config.slots() == 2 {
            take_tensor(tensors, &format!("{prefix}steps"), &[rows], DType::U32)?
                .to_vec1::<u32>()?
        } else {
            Vec::new()
        };
        let stride = self.stride;
        let mut data = vec![0f32; rows * stride];
        crate::sys::advise_huge_pages(&mut data);
        for (r, block) in data.chunks_exact_mut(stride).enumerate() {
            for (k, part) in parts.iter().enumerate() {
                block[k * dim..(k + 1) * dim].copy_from_slice(&part[r * dim..(r + 1) * dim]);
            }
            if let Some(&n) = steps.get(r) {
                block[stride - 1] = f32::from_bits(n);
            }
        }
        self.rows = rows;
        self.data = data;
        self.pending.clear();
        self.touched = None;
        Ok(())
    }
}

/// Touches one value per 64-byte cache line of the first `len` values of each row's block, so
/// the memory loads of all rows are in flight together; the copy or update that follows then
/// finds the rows in cache. On large tables this overlaps what would otherwise be one memory
/// latency per row (a portable software prefetch: plain loads, no `unsafe`).
fn prefetch_rows(data: &[f32], rows: &[u32], stride: usize, len: usize) {
    const LINE: usize = 16;
    let mut acc = [0u32; 4];
    for (k, &r) in rows.iter().enumerate() {
        let b = r as usize * stride;
        if let Some(block) = data.get(b..b + len) {
            let mut x = 0u32;
            for v in block.iter().step_by(LINE) {
                x |= v.to_bits();
            }
            acc[k % 4] |= x;
        }
    }
    std::hint::black_box(acc);
}

/// A tensor's values as a host `Vec<f32>` (any device, any float dtype).
pub fn host_f32(t: &Tensor) -> Result<Vec<f32>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F32)?
        .flatten_all()?
        .to_vec1::<f32>()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::init::named_rng;
    use proptest::prelude::*;

    fn store(rows: usize, dim: usize, cfg: OptimizerConfig) -> SparseRows {
        let mut rng = named_rng(5, "t");
        SparseRows::new(
            rows,
            dim,
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
            &mut rng,
            cfg,
            &Device::Cpu,
        )
        .unwrap()
    }

    proptest! {
        #[test]
        fn dedup_reconstructs_and_counts(ids in proptest::collection::vec(0u32..20, 0..60)) {
            let d = dedup(&ids);
            let back: Vec<u32> = d.inverse.iter().map(|&i| d.unique[i as usize]).collect();
            prop_assert_eq!(&back, &ids);
            let mut u = d.unique.clone();
            u.sort();
            u.dedup();
            prop_assert_eq!(u.len(), d.unique.len());
            for (k, &x) in d.unique.iter().enumerate() {
                prop_assert_eq!(d.counts[k] as usize, ids.iter().filter(|&&y| y == x).count());
            }
        }
    }

    #[test]
    fn lookups_are_rows_and_gradients_merge_by_row() -> Result<()> {
        let mut s = store(10, 3, OptimizerConfig::sgd(1.0));
        let w0 = s.weights();
        let a = s.lookup(&[2, 5, 2], true)?;
        let b = s.lookup(&[5, 9], true)?;
        assert_eq!(a.to_vec2::<f32>()?[1], w0[15..18].to_vec());
        // loss = 1*sum(a) + 2*sum(b): row 2 gets 2, row 5 gets 1 + 2, row 9 gets 2.
        let loss = (a.sum_all()? + b.sum_all()?.affine(2.0, 0.0)?)?;
        let g = s.take_gradients(&loss.backward()?)?;
        assert_eq!(g.rows, vec![2, 5, 9]);
        assert_eq!(g.counts, vec![2, 2, 1]);
        assert_eq!(g.grad(0), &[2.0; 3]);
        assert_eq!(g.grad(1), &[3.0; 3]);
        s.update(&g)?;
        for r in 0..10 {
            let expect = match r {
                2 | 9 => 2.0,
                5 => 3.0,
                _ => 0.0,
            };
            for k in 0..3 {
                assert!((s.row(r)[k] - (w0[r * 3 + k] - expect)).abs() < 1e-6);
            }
        }
        assert!(!s.has_pending());
        Ok(())
    }

    #[test]
    fn autograd_sees_only_the_unique_rows() -> Result<()> {
        let mut s = store(100_000, 8, OptimizerConfig::sgd(0.1));
        let e = s.lookup(&[5, 99_999, 5], true)?;
        let grads = e.sum_all()?.backward()?;
        let leaves = s.pending_leaves();
        assert_eq!(leaves.len(), 1);
        assert_eq!(leaves[0].0, &[5, 99_999]);
        assert_eq!(grads.get(leaves[0].1.as_tensor()).unwrap().dims(), &[2, 8]);
        Ok(())
    }

    #[test]
    fn lazy_adam_counts_steps_per_row_and_leaves_others_alone() -> Result<()> {
        let mut s = store(6, 2, OptimizerConfig::adam(0.1));
        let w0 = s.weights();
        for step in 0..3 {
            let ids: &[u32] = if step == 1 { &[1, 4] } else { &[1] };
            let e = s.lookup(ids, true)?;
            let grads = e.sum_all()?.backward()?;
            s.apply_gradients(&grads)?;
        }
        assert_eq!(s.row_steps(1), 3);
        assert_eq!(s.row_steps(4), 1);
        assert_eq!(s.row_steps(0), 0);
        // Constant gradient 1: bias-corrected Adam moves by lr per update.
        assert!((s.row(1)[0] - (w0[2] - 0.3)).abs() < 1e-4);
        assert!((s.row(4)[1] - (w0[9] - 0.1)).abs() < 1e-4);
        for r in [0usize, 2, 3, 5] {
            assert_eq!(s.row(r), &w0[r * 2..r * 2 + 2]);
            assert_eq!(s.row_state(0, r), &[0.0, 0.0]);
        }
        Ok(())
    }

    #[test]
    fn a_transform_hook_can_average() -> Result<()> {
        let mut s = store(4, 2, OptimizerConfig::sgd(1.0));
        let w0 = s.weights();
        let e = s.lookup(&[3, 3, 3, 0], true)?;
        let mut g = s.take_gradients(&e.sum_all()?.backward()?)?;
        g.average();
        s.update(&g)?;
        assert!((s.row(3)[0] - (w0[6] - 1.0)).abs() < 1e-6);
        Ok(())
    }

    #[test]
    fn unused_lookups_and_cleared_lookups_change_nothing() -> Result<()> {
        let mut s = store(4, 2, OptimizerConfig::adagrad(0.5));
        let w0 = s.weights();
        let used = s.lookup(&[1], true)?;
        let _unused = s.lookup(&[2], true)?;
        s.apply_gradients(&used.sum_all()?.backward()?)?;
        assert_eq!(s.row(2), &w0[4..6]);
        assert_ne!(s.row(1), &w0[2..4]);
        let e = s.lookup(&[3], true)?;
        let grads = e.sum_all()?.backward()?;
        s.clear_pending();
        s.apply_gradients(&grads)?;
        assert_eq!(s.row(3), &w0[6..8]);
        Ok(())
    }

    #[test]
    fn merge_sums_items_of_the_same_row() -> Result<()> {
        let g = RowGrads::merge(2, &[4, 1, 4], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], &[1, 2, 3])?;
        assert_eq!(g.rows, vec![4, 1]);
        assert_eq!(g.grads, vec![6.0, 8.0, 3.0, 4.0]);
        assert_eq!(g.counts, vec![4, 2]);
        assert!(RowGrads::merge(2, &[4], &[1.0], &[1]).is_err());
        Ok(())
    }

    #[test]
    fn empty_lookups_work() -> Result<()> {
        let mut s = store(4, 2, OptimizerConfig::adam(0.1));
        let w0 = s.weights();
        assert_eq!(s.lookup(&[], false)?.dims(), &[0, 2]);
        let e = s.lookup(&[], true)?;
        assert_eq!(e.dims(), &[0, 2]);
        let x = s.lookup(&[1], true)?;
        s.apply_gradients(&(x.sum_all()? + e.sum_all()?)?.backward()?)?;
        assert_eq!(s.row(0), &w0[..2]);
        Ok(())
    }

    #[test]
    fn out_of_range_rows_are_errors() {
        let mut s = store(4, 2, OptimizerConfig::sgd(1.0));
        assert!(s.lookup(&[4], true).is_err());
        assert!(s.lookup(&[7], false).is_err());
        let g = RowGrads {
            dim: 2,
            rows: vec![9],
            grads: vec![0.0; 2],
            counts: vec![1],
        };
        assert!(s.update(&g).is_err());
    }

    #[test]
    fn clamp_visits_everything_once_then_only_touched_rows() -> Result<()> {
        let mut s = store(50, 2, OptimizerConfig::sgd(1.0));
        s.clamp(0.0, f32::INFINITY);
        assert!(s.weights().iter().all(|&w| w >= 0.0));
        let e = s.lookup(&[7], true)?;
        s.apply_gradients(&e.sum_all()?.affine(100.0, 0.0)?.backward()?)?;
        assert!(s.row(7).iter().all(|&w| w < 0.0));
        // Rows not touched are not visited: make one negative behind the store's back.
        s.row_mut(8)[0] = -1.0;
        s.clamp(0.0, f32::INFINITY);
        assert_eq!(s.row(7), &[0.0, 0.0]);
        assert_eq!(s.row(8)[0], -1.0);
        // Zeroing (a clamp to [0, 0]) is a one-off: later updates are not recorded.
        s.clamp(0.0, 0.0);
        assert!(s.weights().iter().all(|&w| w == 0.0));
        for _ in 0..3 {
            let e = s.lookup(&[1, 2, 2], true)?;
            s.apply_gradients(&e.sum_all()?.backward()?)?;
        }
        assert_eq!(s.touched, None, "updates after a zeroing are not tracked");
        Ok(())
    }

    #[test]
    fn save_load_round_trip_and_mismatches() -> Result<()> {
        let mut s = store(5, 3, OptimizerConfig::adam(0.1));
        let e = s.lookup(&[1, 2], true)?;
        s.apply_gradients(&e.sum_all()?.backward()?)?;
        let mut map = TensorMap::new();
        let meta = s.save("t.", &mut map)?;
        let mut r = store(5, 3, OptimizerConfig::adam(0.1));
        r.load("t.", &map, &meta, Some(5))?;
        assert_eq!(r.weights(), s.weights());
        assert_eq!(r.row_steps(2), 1);
        assert_eq!(r.row_state(1, 2), s.row_state(1, 2));
        assert!(r.load("t.", &map, &meta, Some(6)).is_err());
        let mut sgd = store(5, 3, OptimizerConfig::sgd(0.1));
        assert!(sgd.load("t.", &map, &meta, Some(5)).is_err());
        let mut bad = map.clone();
        bad.insert(
            "t.weight".into(),
            Tensor::zeros((5, 2), DType::F32, &Device::Cpu)?,
        );
        assert!(r.load("t.", &bad, &meta, Some(5)).is_err());
        let mut bad = map.clone();
        bad.insert(
            "t.m".into(),
            Tensor::zeros((5, 3), DType::F64, &Device::Cpu)?,
        );
        assert!(r.load("t.", &bad, &meta, Some(5)).is_err());
        let mut bad = map;
        bad.remove("t.steps");
        assert!(r.load("t.", &bad, &meta, Some(5)).is_err());
        Ok(())
    }

    #[test]
    fn push_row_adds_fresh_state() -> Result<()> {
        let mut s = store(2, 2, OptimizerConfig::adam(0.1));
        let r = s.push_row(&[0.5, 0.5])?;
        assert_eq!(r, 2);
        let e = s.lookup(&[2], true)?;
        s.apply_gradients(&e.sum_all()?.backward()?)?;
        assert_eq!(s.row_steps(2), 1);
        assert!(s.push_row(&[1.0]).is_err());
        Ok(())
    }

    /// IDs that are multiples of 1024 spread over the low bits of the hash (where the map
    /// picks its bucket) instead of all sharing ten zero bits; and they still deduplicate.
    #[test]
    fn strided_ids_spread_over_the_low_bits() {
        let hash = |id: u32| {
            let mut h = IdHasher::default();
            h.write_u32(id);
            h.finish()
        };
        let ids: Vec<u32> = (0..1024).map(|j| j * 1024).collect();
        let mut low: Vec<u64> = ids.iter().map(|&i| hash(i) & 1023).collect();
        low.sort_unstable();
        low.dedup();
        assert!(low.len() > 512, "{} distinct low-bit patterns", low.len());
        let mut twice = ids.clone();
        twice.extend(&ids);
        let d = dedup(&twice);
        assert_eq!(d.unique, ids);
        assert!(d.counts.iter().all(|&c| c == 2));
    }
}
