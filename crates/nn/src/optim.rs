//! Optimizers. One configuration type, [`OptimizerConfig`], drives two engines:
//! [`DenseOptimizer`] for the dense candle [`Var`]s of a model (tensor ops, any device), and the
//! row-wise engine of [`crate::embedding::rows`] for embedding rows (host memory, lazy updates).
//!
//! The dense engine keeps its parameters sorted by name (candle's `VarMap::all_vars` comes from a
//! `HashMap`, whose order is not stable), so its state serializes and restores deterministically.
//!
//! Update rules, with gradient `g`, parameter `w`, learning rate `lr`, weight decay `wd`:
//! - `sgd`: `w -= lr * (g + wd * w)`.
//! - `adagrad`: `g' = g + wd * w`; `acc += g'^2`; `w -= lr * g' / (sqrt(acc) + eps)`.
//! - `adam` (L2 coupled into the gradient): `g' = g + wd * w`; `m = b1 m + (1 - b1) g'`;
//!   `v = b2 v + (1 - b2) g'^2`; `w -= lr * m_hat / (sqrt(v_hat) + eps)` with bias-corrected
//!   `m_hat = m / (1 - b1^t)`, `v_hat = v / (1 - b2^t)`.
//! - `adamw` (decoupled decay, Loshchilov & Hutter): `w -= lr * wd * w`, then Adam on `g`.

use candle_core::backprop::GradStore;
use candle_core::{Result, Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::embedding::TensorMap;
use crate::io::take_tensor;

fn d_eps() -> f64 {
    1e-8
}
fn d_adagrad_eps() -> f64 {
    1e-10
}
fn d_beta1() -> f64 {
    0.9
}
fn d_beta2() -> f64 {
    0.999
}
fn d_adamw_wd() -> f64 {
    0.01
}

/// Which optimizer, with its hyperparameters. Serialized with a `kind` tag, e.g.
/// `{ kind = "adam", lr = 0.001 }` in TOML; omitted fields take the documented defaults and
/// unknown fields are rejected.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
pub enum OptimizerConfig {
    /// Plain stochastic gradient descent (no momentum).
    Sgd {
        /// Learning rate.
        lr: f64,
        /// L2 coefficient added to the gradient (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdaGrad (Duchi et al. 2011), the optimizer of the DUPN paper.
    Adagrad {
        /// Learning rate.
        lr: f64,
        /// Added to the root of the accumulator (default 1e-10).
        #[serde(default = "d_adagrad_eps")]
        eps: f64,
        /// Starting value of the squared-gradient accumulator (default 0; TensorFlow uses 0.1).
        #[serde(default)]
        initial_accumulator: f64,
        /// L2 coefficient added to the gradient (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// Adam (Kingma & Ba 2015) with L2 regularization coupled into the gradient.
    Adam {
        /// Learning rate.
        lr: f64,
        /// First-moment decay (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// Second-moment decay (default 0.999).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// Added to the root of the second moment (default 1e-8).
        #[serde(default = "d_eps")]
        eps: f64,
        /// L2 coefficient added to the gradient (default 0).
        #[serde(default)]
        weight_decay: f64,
    },
    /// AdamW: Adam with decoupled weight decay.
    #[serde(rename = "adamw")]
    AdamW {
        /// Learning rate.
        lr: f64,
        /// First-moment decay (default 0.9).
        #[serde(default = "d_beta1")]
        beta1: f64,
        /// Second-moment decay (default 0.999).
        #[serde(default = "d_beta2")]
        beta2: f64,
        /// Added to the root of the second moment (default 1e-8).
        #[serde(default = "d_eps")]
        eps: f64,
        /// Decoupled decay coefficient (default 0.01, as in candle and PyTorch).
        #[serde(default = "d_adamw_wd")]
        weight_decay: f64,
    },
}

impl OptimizerConfig {
    /// SGD with learning rate `lr` and no weight decay.
    pub fn sgd(lr: f64) -> Self {
        Self::Sgd {
            lr,
            weight_decay: 0.0,
        }
    }

    /// AdaGrad with learning rate `lr` and the documented defaults.
    pub fn adagrad(lr: f64) -> Self {
        Self::Adagrad {
            lr,
            eps: d_adagrad_eps(),
            initial_accumulator: 0.0,
            weight_decay: 0.0,
        }
    }

    /// Adam with learning rate `lr` and the documented defaults (no L2).
    pub fn adam(lr: f64) -> Self {
        Self::Adam {
            lr,
            beta1: d_beta1(),
            beta2: d_beta2(),
            eps: d_eps(),
            weight_decay: 0.0,
        }
    }

    /// AdamW with learning rate `lr` and the documented defaults (decay 0.01).
    pub fn adamw(lr: f64) -> Self {
        Self::AdamW {
            lr,
            beta1: d_beta1(),
            beta2: d_beta2(),
            eps: d_eps(),
            weight_decay: d_adamw_wd(),
        }
    }

    /// The same optimizer with weight decay `wd`.
    pub fn with_weight_decay(mut self, wd: f64) -> Self {
        match &mut self {
            Self::Sgd { weight_decay, .. }
            | Self::Adagrad { weight_decay, .. }
            | Self::Adam { weight_decay, .. }
            | Self::AdamW { weight_decay, .. } => *weight_decay = wd,
        }
        self
    }

    /// Short name: `sgd`, `adagrad`, `adam` or `adamw`.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Sgd { .. } => "sgd",
            Self::Adagrad { .. } => "adagrad",
            Self::Adam { .. } => "adam",
            Self::AdamW { .. } => "adamw",
        }
    }

    /// The learning rate.
    pub fn lr(&self) -> f64 {
        match *self {
            Self::Sgd { lr, .. }
            | Self::Adagrad { lr, .. }
            | Self::Adam { lr, .. }
            | Self::AdamW { lr, .. } => lr,
        }
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, new_lr: f64) {
        match self {
            Self::Sgd { lr, .. }
            | Self::Adagrad { lr, .. }
            | Self::Adam { lr, .. }
            | Self::AdamW { lr, .. } => *lr = new_lr,
        }
    }

    /// Number of per-value state slots: 0 for SGD, 1 for AdaGrad, 2 for Adam(W).
    pub fn slots(&self) -> usize {
        match self {
            Self::Sgd { .. } => 0,
            Self::Adagrad { .. } => 1,
            Self::Adam { .. } | Self::AdamW { .. } => 2,
        }
    }

    /// Names of the state slots, used in checkpoints.
    pub fn slot_names(&self) -> &'static [&'static str] {
        match self {
            Self::Sgd { .. } => &[],
            Self::Adagrad { .. } => &["acc"],
            Self::Adam { .. } | Self::AdamW { .. } => &["m", "v"],
        }
    }

    /// Initial value of every state slot.
    pub(crate) fn slot_init(&self) -> f64 {
        match *self {
            Self::Adagrad {
                initial_accumulator,
                ..
            } => initial_accumulator,
            _ => 0.0,
        }
    }

    /// Checks that the hyperparameters are usable (finite, positive learning rate, betas in
    /// `[0, 1)`, non-negative eps and decay).
    pub fn validate(&self) -> Result<()> {
        let lr = self.lr();
        if !(lr.is_finite() && lr > 0.0) {
            candle_core::bail!("optimizer {}: lr must be positive, got {lr}", self.kind());
        }
        // Whether a zero `eps` can divide zero by zero (a zero gradient on a fresh state).
        let mut needs_eps = true;
        let (wd, eps, betas) = match *self {
            Self::Sgd { weight_decay, .. } => {
                needs_eps = false;
                (weight_decay, 0.0, None)
            }
            Self::Adagrad {
                weight_decay,
                eps,
                initial_accumulator,
                ..
            } => {
                if !(initial_accumulator >= 0.0 && initial_accumulator.is_finite()) {
                    candle_core::bail!(
                        "optimizer adagrad: initial_accumulator must be >= 0, got {initial_accumulator}"
                    );
                }
                needs_eps = initial_accumulator == 0.0;
                (weight_decay, eps, None)
            }
            Self::Adam {
                weight_decay,
                eps,
                beta1,
                beta2,
                ..
            }
            | Self::AdamW {
                weight_decay,
                eps,
                beta1,
                beta2,
                ..
            } => (weight_decay, eps, Some((beta1, beta2))),
        };
        if !(wd >= 0.0 && wd.is_finite()) {
            candle_core::bail!(
                "optimizer {}: weight_decay must be >= 0, got {wd}",
                self.kind()
            );
        }
        if !(eps >= 0.0 && eps.is_finite()) {
            candle_core::bail!("optimizer {}: eps must be >= 0, got {eps}", self.kind());
        }
        if needs_eps && eps == 0.0 {
            candle_core::bail!(
                "optimizer {}: eps must be > 0 (with eps = 0 a zero gradient on a fresh state \
                 divides 0 by 0 and makes the parameter NaN)",
                self.kind()
            );
        }
        if let Some((b1, b2)) = betas {
            for (n, b) in [("beta1", b1), ("beta2", b2)] {
                if !(0.0..1.0).contains(&b) {
                    candle_core::bail!("optimizer {}: {n} must be in [0, 1), got {b}", self.kind());
                }
            }
        }
        Ok(())
    }
}

/// An optimizer over named dense variables, kept sorted by name.
///
/// Variables without a gradient in a step are left alone (their state does not change).
/// Adam's bias correction uses each variable's own number of updates (as PyTorch does), so a
/// variable that first gets a gradient late (the head of a task absent from the first
/// batches) starts with a full-size step.
pub struct DenseOptimizer {
    config: OptimizerConfig,
    params: Vec<(String, Var)>,
    /// `state[i][s]`: slot `s` of parameter `i`.
    state: Vec<Vec<Tensor>>,
    /// Updates of each parameter (its Adam step count).
    updates: Vec<u64>,
    steps: u64,
}

impl DenseOptimizer {
    /// An optimizer for `params` (any order; sorted by name here). Duplicate names are an error.
    pub fn new(config: OptimizerConfig, mut params: Vec<(String, Var)>) -> Result<Self> {
        config.validate()?;
        params.sort_by(|a, b| a.0.cmp(&b.0));
        if let Some(w) = params.windows(2).find(|w| w[0].0 == w[1].0) {
            candle_core::bail!("dense optimizer: variable `{}` given twice", w[0].0);
        }
        let mut state = Vec::with_capacity(params.len());
        for (_, v) in &params {
            let mut slots = Vec::with_capacity(config.slots());
            for _ in 0..config.slots() {
                slots.push(v.as_tensor().ones_like()?.affine(config.slot_init(), 0.0)?);
            }
            state.push(slots);
        }
        Ok(Self {
            config,
            updates: vec![0; params.len()],
            params,
            state,
            steps: 0,
        })
    }

    /// The configuration (with the current learning rate).
    pub fn config(&self) -> &OptimizerConfig {
        &self.config
    }

    /// Current learning rate.
    pub fn lr(&self) -> f64 {
        self.config.lr()
    }

    /// Changes the learning rate (for schedules).
    pub fn set_lr(&mut self, lr: f64) {
        self.config.set_lr(lr)
    }

    /// Number of completed steps.
    pub fn steps(&self) -> u64 {
        self.steps
    }

    /// Names of the parameters, in update (name) order.
    pub fn names(&self) -> Vec<&str> {
        self.params.iter().map(|(n, _)| n.as_str()).collect()
    }

    /// One update of every parameter that has a gradient in `grads`.
    pub fn step(&mut self, grads: &GradStore) -> Result<()> {
        self.steps += 1;
        for (((_, var), slots), updates) in self
            .params
            .iter()
            .zip(self.state.iter_mut())
            .zip(self.updates.iter_mut())
        {
            let Some(g) = grads.get(var.as_tensor()) else {
                continue;
            };
            *updates += 1;
            let t = i32::try_from(*updates).unwrap_or(i32::MAX);
            let w = var.as_tensor();
            // Detached: candle leaves a variable's gradient attached to the backward graph
            // (for a matmul weight it references the layer's input activation, and through
            // it the whole forward pass). A state slot computed from it would keep that graph,
            // and each slot the previous one, so every step's activations would stay alive.
            let g = g.detach().to_dtype(w.dtype())?;
            match self.config {
                OptimizerConfig::Sgd { lr, weight_decay } => {
                    let g = add_decay(&g, w, weight_decay)?;
                    var.set(&(w - g.affine(lr, 0.0)?)?)?;
                }
                OptimizerConfig::Adagrad {
                    lr,
                    eps,
                    weight_decay,
                    ..
                } => {
                    let g = add_decay(&g, w, weight_decay)?;
                    let acc = (&slots[0] + g.sqr()?)?;
                    let denom = acc.sqrt()?.affine(1.0, eps)?;
                    var.set(&(w - (g / denom)?.affine(lr, 0.0)?)?)?;
                    slots[0] = acc;
                }
                OptimizerConfig::Adam {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let g = add_decay(&g, w, weight_decay)?;
                    let upd = adam_moments(slots, &g, beta1, beta2, eps, t)?;
                    var.set(&(w - upd.affine(lr, 0.0)?)?)?;
                }
                OptimizerConfig::AdamW {
                    lr,
                    beta1,
                    beta2,
                    eps,
                    weight_decay,
                } => {
                    let decayed = w.affine(1.0 - lr * weight_decay, 0.0)?;
                    let upd = adam_moments(slots, &g, beta1, beta2, eps, t)?;
                    var.set(&(decayed - upd.affine(lr, 0.0)?)?)?;
                }
            }
        }
        Ok(())
    }

    /// Backward pass of `loss` followed by [`step`](Self::step).
    pub fn backward_step(&mut self, loss: &Tensor) -> Result<GradStore> {
        let grads = loss.backward()?;
        self.step(&grads)?;
        Ok(grads)
    }

    /// Writes the state slots as `{prefix}{param}.{slot}` tensors and returns the JSON
    /// metadata (kind, step count, parameter names).
    pub fn save_state(&self, prefix: &str, out: &mut TensorMap) -> Result<serde_json::Value> {
        let names = self.config.slot_names();
        for ((n, _), slots) in self.params.iter().zip(&self.state) {
            for (s, t) in names.iter().zip(slots) {
                out.insert(format!("{prefix}{n}.{s}"), t.clone());
            }
        }
        Ok(serde_json::json!({
            "kind": self.config.kind(),
            "steps": self.steps,
            "params": self.params.iter().map(|(n, _)| n.clone()).collect::<Vec<_>>(),
            "updates": self.updates,
        }))
    }

    /// Restores what [`save_state`](Self::save_state) wrote. The optimizer kind and the
    /// parameter names must match; hyperparameters are those of the current configuration.
    pub fn load_state(
        &mut self,
        prefix: &str,
        tensors: &TensorMap,
        meta: &serde_json::Value,
    ) -> Result<()> {
        let kind = meta.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != self.config.kind() {
            candle_core::bail!(
                "optimizer state was saved by `{kind}`, this optimizer is `{}`",
                self.config.kind()
            );
        }
        let names: Vec<String> = meta
            .get("params")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .ok_or_else(|| candle_core::Error::Msg("optimizer state: no `params` list".into()))?;
        let mine: Vec<&str> = self.names();
        if names != mine {
            candle_core::bail!(
                "optimizer state holds parameters {names:?}, this optimizer has {mine:?}"
            );
        }
        let steps = meta
            .get("steps")
            .and_then(|s| s.as_u64())
            .ok_or_else(|| candle_core::Error::Msg("optimizer state: no `steps`".into()))?;
        let slot_names = self.config.slot_names();
        let mut new_state = Vec::with_capacity(self.params.len());
        for (n, v) in &self.params {
            let mut slots = Vec::new();
            for s in slot_names {
                let t = take_tensor(tensors, &format!("{prefix}{n}.{s}"), v.dims(), v.dtype())?;
                slots.push(t.to_device(v.device())?);
            }
            new_state.push(slots);
        }
        self.state = new_state;
        self.steps = steps;
        // A state saved before per-parameter counts: every parameter had `steps` updates.
        self.updates =
            saved_updates(meta, self.params.len())?.unwrap_or(vec![steps; self.params.len()]);
        Ok(())
    }
}

impl DenseOptimizer {
    /// Restores the state slots of the parameters that `keep` accepts and that
    /// [`save_state`](Self::save_state) wrote under the same name with the same shape (a
    /// partial load, e.g. a fine-tuned model continuing the optimizer state of the encoder it
    /// took from another model); the other parameters keep their fresh state and the step
    /// count stays this optimizer's. The saved optimizer kind must match. Returns the names
    /// loaded.
    pub fn load_state_matching(
        &mut self,
        prefix: &str,
        tensors: &TensorMap,
        meta: &serde_json::Value,
        keep: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>> {
        let kind = meta.get("kind").and_then(|k| k.as_str()).unwrap_or("");
        if kind != self.config.kind() {
            candle_core::bail!(
                "optimizer state was saved by `{kind}`, this optimizer is `{}`",
                self.config.kind()
            );
        }
        let slot_names = self.config.slot_names();
        // Each loaded parameter continues its saved update count (its moments' age).
        let saved_names: Vec<String> = meta
            .get("params")
            .and_then(|p| serde_json::from_value(p.clone()).ok())
            .unwrap_or_default();
        let saved_steps = meta.get("steps").and_then(|s| s.as_u64()).unwrap_or(0);
        let saved_counts = saved_updates(meta, saved_names.len())?;
        let mut loaded = Vec::new();
        for (((n, v), slots), updates) in self
            .params
            .iter()
            .zip(self.state.iter_mut())
            .zip(self.updates.iter_mut())
        {
            if !keep(n) {
                continue;
            }
            let saved: Option<Vec<&Tensor>> = slot_names
                .iter()
                .map(|s| tensors.get(&format!("{prefix}{n}.{s}")))
                .collect();
            let Some(saved) = saved else { continue };
            if saved.iter().any(|t| t.dims() != v.dims()) {
                continue;
            }
            for (slot, t) in slots.iter_mut().zip(saved) {
                *slot = t.to_dtype(v.dtype())?.to_device(v.device())?;
            }
            *updates = saved_names
                .iter()
                .position(|s| s == n)
                .and_then(|i| saved_counts.as_ref().map(|c| c[i]))
                .unwrap_or(saved_steps);
            loaded.push(n.clone());
        }
        Ok(loaded)
    }
}

/// The per-parameter update counts of a saved state (`None` when it predates them).
fn saved_updates(meta: &serde_json::Value, n: usize) -> Result<Option<Vec<u64>>> {
    let Some(u) = meta.get("updates") else {
        return Ok(None);
    };
    let u: Vec<u64> = serde_json::from_value(u.clone())
        .map_err(|_| candle_core::Error::Msg("optimizer state: unreadable `updates`".into()))?;
    if u.len() != n {
        candle_core::bail!(
            "optimizer state: {} update counts for {n} parameters",
            u.len()
        );
    }
    Ok(Some(u))
}

fn add_decay(g: &Tensor, w: &Tensor, wd: f64) -> Result<Tensor> {
    if wd == 0.0 {
        Ok(g.clone())
    } else {
        g + w.affine(wd, 0.0)?
    }
}

/// Updates Adam's moments in `slots` and returns `m_hat / (sqrt(v_hat) + eps)`.
fn adam_moments(
    slots: &mut [Tensor],
    g: &Tensor,
    beta1: f64,
    beta2: f64,
    eps: f64,
    t: i32,
) -> Result<Tensor> {
    let m = (slots[0].affine(beta1, 0.0)? + g.affine(1.0 - beta1, 0.0)?)?;
    let v = (slots[1].affine(beta2, 0.0)? + g.sqr()?.affine(1.0 - beta2, 0.0)?)?;
    let m_hat = m.affine(1.0 / (1.0 - beta1.powi(t)), 0.0)?;
    let v_hat = v.affine(1.0 / (1.0 - beta2.powi(t)), 0.0)?;
    let upd = (m_hat / v_hat.sqrt()?.affine(1.0, eps)?)?;
    slots[0] = m;
    slots[1] = v;
    Ok(upd)
}

/// The f32 arithmetic of one row-wise update, shared by every sparse table. `state` holds
/// `config.slots()` slices of the row's length; `step` is the row's update count after this
/// update (used by Adam's bias correction).
pub(crate) fn update_row(
    config: &OptimizerConfig,
    w: &mut [f32],
    g: &[f32],
    state: &mut [&mut [f32]],
    step: u32,
) {
    match *config {
        OptimizerConfig::Sgd { lr, weight_decay } => {
            let (lr, wd) = (lr as f32, weight_decay as f32);
            for (w, &g) in w.iter_mut().zip(g) {
                *w -= lr * (g + wd * *w);
            }
        }
        OptimizerConfig::Adagrad {
            lr,
            eps,
            weight_decay,
            ..
        } => {
            let (lr, wd, eps) = (lr as f32, weight_decay as f32, eps as f32);
            let acc = &mut *state[0];
            for ((w, &g), a) in w.iter_mut().zip(g).zip(acc.iter_mut()) {
                let g = g + wd * *w;
                *a += g * g;
                *w -= lr * g / (a.sqrt() + eps);
            }
        }
        OptimizerConfig::Adam {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        }
        | OptimizerConfig::AdamW {
            lr,
            beta1,
            beta2,
            eps,
            weight_decay,
        } => {
            let decoupled = matches!(config, OptimizerConfig::AdamW { .. });
            let c1 = (1.0 / (1.0 - beta1.powi(step as i32))) as f32;
            let c2 = (1.0 / (1.0 - beta2.powi(step as i32))) as f32;
            let (lr, wd, eps, b1, b2) = (
                lr as f32,
                weight_decay as f32,
                eps as f32,
                beta1 as f32,
                beta2 as f32,
            );
            let [m, v] = state else {
                unreachable!("adam keeps two state slots")
            };
            // One branch-free loop for both decay styles, so the compiler vectorizes it.
            let (decay, l2) = if decoupled {
                (1.0 - lr * wd, 0.0)
            } else {
                (1.0, wd)
            };
            let n = w.len();
            let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
            for i in 0..n {
                let gi = g[i] + l2 * w[i];
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                w[i] = decay * w[i] - lr * (m[i] * c1) / ((v[i] * c2).sqrt() + eps);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::Device;

    fn one_param(v: &[f32]) -> Var {
        Var::from_slice(v, v.len(), &Device::Cpu).unwrap()
    }

    /// Runs `steps` steps of `config` on `loss = sum(c * w)` (gradient `c`) and returns `w`.
    fn run(config: OptimizerConfig, w0: &[f32], c: &[f32], steps: usize) -> Vec<f32> {
        let w = one_param(w0);
        let mut opt = DenseOptimizer::new(config, vec![("w".into(), w.clone())]).unwrap();
        let c = Tensor::new(c, &Device::Cpu).unwrap();
        for _ in 0..steps {
            let loss = (w.as_tensor() * &c).unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        w.as_tensor().to_vec1().unwrap()
    }

    #[test]
    fn adam_counts_steps_per_parameter_and_keeps_the_counts_in_its_state() -> Result<()> {
        let (a, b) = (one_param(&[0.0]), one_param(&[0.0]));
        let params = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let mut opt = DenseOptimizer::new(OptimizerConfig::adam(0.1), params.clone())?;
        let c = Tensor::new(&[1f32], &Device::Cpu)?;
        // `b` gets its first gradient at step 11: its first update is a full lr step, as at
        // step 1 (with the global count it would be 0.48 lr).
        for _ in 0..10 {
            opt.backward_step(&(a.as_tensor() * &c)?.sum_all()?)?;
        }
        let loss = ((a.as_tensor() * &c)?.sum_all()? + (b.as_tensor() * &c)?.sum_all()?)?;
        opt.backward_step(&loss)?;
        let db = b.as_tensor().to_vec1::<f32>()?[0];
        assert!((db + 0.1).abs() < 1e-5, "{db}");
        // The counts travel with the state, and an older state without them reads as one
        // count for all.
        let mut m = TensorMap::new();
        let meta = opt.save_state("o/", &mut m)?;
        assert_eq!(meta["updates"], serde_json::json!([11, 1]));
        let mut other = DenseOptimizer::new(OptimizerConfig::adam(0.1), params.clone())?;
        other.load_state("o/", &m, &meta)?;
        assert_eq!(other.updates, [11, 1]);
        let mut old = meta.clone();
        old.as_object_mut().unwrap().remove("updates");
        other.load_state("o/", &m, &old)?;
        assert_eq!(other.updates, [11, 11]);
        let mut part = DenseOptimizer::new(OptimizerConfig::adam(0.1), params)?;
        part.load_state_matching("o/", &m, &meta, |n| n == "b")?;
        assert_eq!(part.updates, [0, 1]);
        Ok(())
    }

    /// The same rule applied through the row engine.
    fn run_rows(config: OptimizerConfig, w0: &[f32], c: &[f32], steps: usize) -> Vec<f32> {
        let mut w = w0.to_vec();
        let mut slots: Vec<Vec<f32>> = (0..config.slots())
            .map(|_| vec![config.slot_init() as f32; w.len()])
            .collect();
        for t in 1..=steps {
            let mut refs: Vec<&mut [f32]> = slots.iter_mut().map(|s| s.as_mut_slice()).collect();
            update_row(&config, &mut w, c, &mut refs, t as u32);
        }
        w
    }

    fn close(a: &[f32], b: &[f32]) {
        for (x, y) in a.iter().zip(b) {
            assert!((x - y).abs() < 1e-5, "{a:?} vs {b:?}");
        }
    }

    #[test]
    fn reference_values_of_each_rule() {
        let (w0, c) = ([1.0f32, -2.0], [0.5f32, -1.0]);
        // SGD with L2: w - lr (c + wd w).
        let got = run(OptimizerConfig::sgd(0.1).with_weight_decay(0.5), &w0, &c, 1);
        close(&got, &[1.0 - 0.1 * (0.5 + 0.5), -2.0 - 0.1 * (-1.0 - 1.0)]);
        // AdaGrad, one step: w - lr g / |g|.
        let got = run(OptimizerConfig::adagrad(0.1), &w0, &c, 1);
        close(&got, &[0.9, -1.9]);
        // AdaGrad two steps with constant g: second step lr g / (sqrt(2) |g|).
        let got = run(OptimizerConfig::adagrad(0.1), &w0, &c, 2);
        let s = 0.1 / 2f32.sqrt();
        close(&got, &[0.9 - s, -1.9 + s]);
        // Adam with constant gradient moves by lr * sign(g) per step (bias-corrected).
        let got = run(OptimizerConfig::adam(0.01), &w0, &c, 3);
        close(&got, &[1.0 - 0.03, -2.0 + 0.03]);
        // AdamW: decay first, then the Adam step.
        let got = run(
            OptimizerConfig::adamw(0.01).with_weight_decay(0.1),
            &w0,
            &c,
            1,
        );
        close(
            &got,
            &[1.0 * (1.0 - 0.001) - 0.01, -2.0 * (1.0 - 0.001) + 0.01],
        );
    }

    /// The rule of `config` in f64 on one parameter vector, written out from the papers'
    /// formulas (SGD and AdaGrad with L2 in the gradient; Adam with bias correction, L2 in the
    /// gradient; AdamW with the decay decoupled and applied first), one step per gradient.
    fn reference(config: OptimizerConfig, w0: &[f32], grads: &[Vec<f32>]) -> Vec<f64> {
        let mut w: Vec<f64> = w0.iter().map(|&x| x as f64).collect();
        let n = w.len();
        let (mut s1, mut s2) = (vec![0f64; n], vec![0f64; n]);
        if let OptimizerConfig::Adagrad {
            initial_accumulator,
            ..
        } = config
        {
            s1 = vec![initial_accumulator; n];
        }
        for (t, g) in grads.iter().enumerate() {
            let t = t as i32 + 1;
            for i in 0..n {
                let gi = g[i] as f64;
                match config {
                    OptimizerConfig::Sgd { lr, weight_decay } => {
                        w[i] -= lr * (gi + weight_decay * w[i]);
                    }
                    OptimizerConfig::Adagrad {
                        lr,
                        eps,
                        weight_decay,
                        ..
                    } => {
                        let gi = gi + weight_decay * w[i];
                        s1[i] += gi * gi;
                        w[i] -= lr * gi / (s1[i].sqrt() + eps);
                    }
                    OptimizerConfig::Adam {
                        lr,
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    }
                    | OptimizerConfig::AdamW {
                        lr,
                        beta1,
                        beta2,
                        eps,
                        weight_decay,
                    } => {
                        let adamw = matches!(config, OptimizerConfig::AdamW { .. });
                        let gi = if adamw { gi } else { gi + weight_decay * w[i] };
                        if adamw {
                            w[i] *= 1.0 - lr * weight_decay;
                        }
                        s1[i] = beta1 * s1[i] + (1.0 - beta1) * gi;
                        s2[i] = beta2 * s2[i] + (1.0 - beta2) * gi * gi;
                        let m_hat = s1[i] / (1.0 - beta1.powi(t));
                        let v_hat = s2[i] / (1.0 - beta2.powi(t));
                        w[i] -= lr * m_hat / (v_hat.sqrt() + eps);
                    }
                }
            }
        }
        w
    }

    /// Both engines on a gradient sequence (the dense engine through autograd of
    /// `sum(c_t * w)`).
    fn engines(config: OptimizerConfig, w0: &[f32], grads: &[Vec<f32>]) -> [Vec<f32>; 2] {
        let w = one_param(w0);
        let mut opt = DenseOptimizer::new(config, vec![("w".into(), w.clone())]).unwrap();
        for c in grads {
            let c = Tensor::new(c.as_slice(), &Device::Cpu).unwrap();
            let loss = (w.as_tensor() * &c).unwrap().sum_all().unwrap();
            opt.backward_step(&loss).unwrap();
        }
        let dense = w.as_tensor().to_vec1().unwrap();
        let mut rows = w0.to_vec();
        let mut slots: Vec<Vec<f32>> = (0..config.slots())
            .map(|_| vec![config.slot_init() as f32; rows.len()])
            .collect();
        for (t, c) in grads.iter().enumerate() {
            let mut refs: Vec<&mut [f32]> = slots.iter_mut().map(|s| s.as_mut_slice()).collect();
            update_row(&config, &mut rows, c, &mut refs, t as u32 + 1);
        }
        [dense, rows]
    }

    proptest::proptest! {
        /// With a gradient that changes every step (a constant one hides swapped betas: Adam
        /// then moves by lr * sign(g) whatever they are), both engines follow the f64
        /// reference of every rule.
        #[test]
        fn every_rule_matches_its_formula_on_varying_gradients(
            w0 in proptest::collection::vec(-2f32..2.0, 3),
            grads in proptest::collection::vec(proptest::collection::vec(-3f32..3.0, 3), 1..7),
            lr in 0.001f64..0.2,
            beta1 in 0.5f64..0.95,
            beta2 in 0.9f64..0.9999,
            eps in 1e-8f64..1e-2,
            wd in 0.0f64..0.2,
            acc in 0.0f64..0.5,
        ) {
            let configs = [
                OptimizerConfig::Sgd { lr, weight_decay: wd },
                OptimizerConfig::Adagrad { lr, eps, initial_accumulator: acc, weight_decay: wd },
                OptimizerConfig::Adam { lr, beta1, beta2, eps, weight_decay: wd },
                OptimizerConfig::AdamW { lr, beta1, beta2, eps, weight_decay: wd },
            ];
            for cfg in configs {
                let want = reference(cfg, &w0, &grads);
                for (engine, got) in ["dense", "rows"].iter().zip(engines(cfg, &w0, &grads)) {
                    for (g, w) in got.iter().zip(&want) {
                        proptest::prop_assert!(
                            (*g as f64 - w).abs() < 2e-4 * (1.0 + w.abs()),
                            "{engine} {cfg:?}: {got:?} vs {want:?}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dense_and_row_engines_agree() {
        let (w0, c) = ([0.3f32, -0.7, 1.5], [0.2f32, -0.4, 0.9]);
        for cfg in [
            OptimizerConfig::sgd(0.1).with_weight_decay(0.01),
            OptimizerConfig::adagrad(0.1).with_weight_decay(0.01),
            OptimizerConfig::Adagrad {
                lr: 0.1,
                eps: 1e-10,
                initial_accumulator: 0.1,
                weight_decay: 0.0,
            },
            OptimizerConfig::adam(0.05).with_weight_decay(0.01),
            OptimizerConfig::adamw(0.05).with_weight_decay(0.1),
        ] {
            close(&run(cfg, &w0, &c, 4), &run_rows(cfg, &w0, &c, 4));
        }
    }

    #[test]
    fn params_are_sorted_and_state_round_trips() -> Result<()> {
        let d = Device::Cpu;
        let a = Var::from_slice(&[1f32, 2.0], 2, &d)?;
        let b = Var::from_slice(&[3f32], 1, &d)?;
        let cfg = OptimizerConfig::adam(0.1);
        let mut opt =
            DenseOptimizer::new(cfg, vec![("z".into(), b.clone()), ("a".into(), a.clone())])?;
        assert_eq!(opt.names(), vec!["a", "z"]);
        let loss = |a: &Var, b: &Var| -> Result<Tensor> {
            (a.as_tensor().sqr()?.sum_all()? + b.as_tensor().sum_all()?)?.affine(1.0, 0.0)
        };
        opt.backward_step(&loss(&a, &b)?)?;
        let mut map = TensorMap::new();
        let meta = opt.save_state("opt.", &mut map)?;
        assert!(map.contains_key("opt.a.m") && map.contains_key("opt.z.v"));
        // Continue the original run and a restored copy side by side.
        let (a2, b2) = (
            Var::from_tensor(&a.as_tensor().copy()?)?,
            Var::from_tensor(&b.as_tensor().copy()?)?,
        );
        let mut opt2 = DenseOptimizer::new(
            cfg,
            vec![("a".into(), a2.clone()), ("z".into(), b2.clone())],
        )?;
        opt2.load_state("opt.", &map, &meta)?;
        assert_eq!(opt2.steps(), 1);
        for _ in 0..2 {
            opt.backward_step(&loss(&a, &b)?)?;
            opt2.backward_step(&loss(&a2, &b2)?)?;
        }
        assert_eq!(
            a.as_tensor().to_vec1::<f32>()?,
            a2.as_tensor().to_vec1::<f32>()?
        );
        assert_eq!(
            b.as_tensor().to_vec1::<f32>()?,
            b2.as_tensor().to_vec1::<f32>()?
        );
        // Mismatches are errors.
        let mut wrong = DenseOptimizer::new(OptimizerConfig::sgd(0.1), vec![("a".into(), a2)])?;
        assert!(wrong.load_state("opt.", &map, &meta).is_err());
        let mut fewer = DenseOptimizer::new(cfg, vec![("a".into(), b2)])?;
        assert!(fewer.load_state("opt.", &map, &meta).is_err());
        map.remove("opt.a.v");
        assert!(opt2.load_state("opt.", &map, &meta).is_err());
        Ok(())
    }

    #[test]
    fn partial_state_load_takes_matching_kept_parameters_only() -> Result<()> {
        let d = Device::Cpu;
        let cfg = OptimizerConfig::adagrad(0.1);
        let enc = Var::from_slice(&[1f32, 2.0], 2, &d)?;
        let old_head = Var::from_slice(&[3f32], 1, &d)?;
        let mut opt = DenseOptimizer::new(
            cfg,
            vec![
                ("enc.w".into(), enc.clone()),
                ("head.w".into(), old_head.clone()),
            ],
        )?;
        let loss = (enc.as_tensor().sqr()?.sum_all()? + old_head.as_tensor().sum_all()?)?;
        opt.backward_step(&loss)?;
        let mut map = TensorMap::new();
        let meta = opt.save_state("opt.", &mut map)?;
        // A new model: the same encoder, a head of another shape, a parameter never saved.
        let enc2 = Var::from_slice(&[1f32, 2.0], 2, &d)?;
        let head2 = Var::from_slice(&[0f32, 0.0], 2, &d)?;
        let extra = Var::from_slice(&[0f32], 1, &d)?;
        let mut next = DenseOptimizer::new(
            cfg,
            vec![
                ("enc.w".into(), enc2),
                ("head.w".into(), head2),
                ("new.w".into(), extra),
            ],
        )?;
        let fresh = next.state.clone();
        let loaded = next.load_state_matching("opt.", &map, &meta, |_| true)?;
        assert_eq!(loaded, ["enc.w"], "head: other shape; new: never saved");
        let acc = next.state[0][0].to_vec1::<f32>()?;
        assert_eq!(acc, map["opt.enc.w.acc"].to_vec1::<f32>()?);
        assert_ne!(acc, fresh[0][0].to_vec1::<f32>()?);
        assert_eq!(next.steps(), 0, "the step count stays this optimizer's");
        // `keep` filters; another optimizer kind is an error.
        let mut again = DenseOptimizer::new(cfg, vec![("enc.w".into(), enc.clone())])?;
        assert!(
            again
                .load_state_matching("opt.", &map, &meta, |n| n.starts_with("head."))?
                .is_empty()
        );
        let mut adam =
            DenseOptimizer::new(OptimizerConfig::adam(0.1), vec![("enc.w".into(), enc)])?;
        assert!(
            adam.load_state_matching("opt.", &map, &meta, |_| true)
                .is_err()
        );
        Ok(())
    }

    #[test]
    fn config_parses_with_defaults_and_rejects_unknown_fields() {
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind":"adam","lr":0.01}"#).unwrap();
        assert_eq!(c, OptimizerConfig::adam(0.01));
        let c: OptimizerConfig = serde_json::from_str(r#"{"kind":"adamw","lr":0.01}"#).unwrap();
        assert_eq!(c, OptimizerConfig::adamw(0.01));
        assert!(
            serde_json::from_str::<OptimizerConfig>(r#"{"kind":"sgd","lr":1,"mom":0.9}"#).is_err()
        );
        assert!(OptimizerConfig::sgd(-1.0).validate().is_err());
        assert!(
            OptimizerConfig::Adam {
                lr: 0.1,
                beta1: 1.0,
                beta2: 0.9,
                eps: 0.0,
                weight_decay: 0.0
            }
            .validate()
            .is_err()
        );
        // eps = 0 divides 0 by 0 on a zero gradient of a fresh state: refused where it can.
        let adam0 = OptimizerConfig::Adam {
            lr: 0.1,
            beta1: 0.9,
            beta2: 0.999,
            eps: 0.0,
            weight_decay: 0.0,
        };
        assert!(
            adam0
                .validate()
                .unwrap_err()
                .to_string()
                .contains("eps must be > 0")
        );
        let adagrad = |initial_accumulator: f64| OptimizerConfig::Adagrad {
            lr: 0.1,
            eps: 0.0,
            initial_accumulator,
            weight_decay: 0.0,
        };
        assert!(adagrad(0.0).validate().is_err());
        adagrad(0.1).validate().unwrap();
    }

    #[test]
    fn state_never_holds_the_backward_graph() -> Result<()> {
        // A weight whose gradient candle computes from a tracked activation (`h` depends on
        // the variable `x`), as for any layer behind another: the gradient references `h` and
        // through it the forward pass. The state slots must be plain values, or each step's
        // graph would stay alive through them (a leak that grew by megabytes per step).
        let d = Device::Cpu;
        for config in [
            OptimizerConfig::sgd(0.1),
            OptimizerConfig::adagrad(0.1),
            OptimizerConfig::adam(0.1),
            OptimizerConfig::AdamW {
                lr: 0.1,
                beta1: 0.9,
                beta2: 0.999,
                eps: 1e-8,
                weight_decay: 0.01,
            },
        ] {
            let x = Var::from_slice(&[1f32, -2.0, 3.0, 0.5, -1.0, 2.0], (3, 2), &d)?;
            let w = Var::from_slice(&[0.5f32, -0.25], (2, 1), &d)?;
            let mut opt = DenseOptimizer::new(
                config,
                vec![("x".into(), x.clone()), ("w".into(), w.clone())],
            )?;
            for _ in 0..3 {
                let h = x.as_tensor().relu()?;
                let loss = h.matmul(w.as_tensor())?.sqr()?.sum_all()?;
                let grads = loss.backward()?;
                assert!(
                    grads.get(w.as_tensor()).unwrap().sorted_nodes().len() > 1,
                    "the premise: candle's gradient of `w` carries a graph"
                );
                opt.step(&grads)?;
            }
            let mut map = TensorMap::new();
            opt.save_state("", &mut map)?;
            for (name, t) in &map {
                assert!(
                    t.sorted_nodes().len() <= 1,
                    "{}: state slot {name} holds a graph of {} nodes",
                    config.kind(),
                    t.sorted_nodes().len()
                );
            }
            for v in [&x, &w] {
                assert!(v.as_tensor().sorted_nodes().len() <= 1);
            }
        }
        Ok(())
    }

    #[test]
    fn variables_without_gradient_keep_their_state() -> Result<()> {
        let d = Device::Cpu;
        let a = Var::from_slice(&[1f32], 1, &d)?;
        let b = Var::from_slice(&[1f32], 1, &d)?;
        let mut opt = DenseOptimizer::new(
            OptimizerConfig::adam(0.1),
            vec![("a".into(), a.clone()), ("b".into(), b.clone())],
        )?;
        opt.backward_step(&a.as_tensor().sum_all()?)?;
        assert_eq!(b.as_tensor().to_vec1::<f32>()?, vec![1.0]);
        let mut map = TensorMap::new();
        opt.save_state("", &mut map)?;
        assert_eq!(map["b.m"].to_vec1::<f32>()?, vec![0.0]);
        Ok(())
    }
}
