//! Test helpers: f64 stores and inputs for gradient checks, and a small planted multi-scenario
//! data set.

use std::sync::Arc;

use candle_core::{DType, Device, Result};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};
use rec_nn::gradcheck::{GradCheck, check_all_params_get_gradient, check_gradients, random_var};
use rec_nn::init::VarStore;

/// An `f64` store for gradient checks.
pub fn store() -> VarStore {
    VarStore::with_dtype(11, &Device::Cpu, DType::F64)
}

/// A seeded f64 input variable with values in `[-1, 1)`.
pub fn input(shape: &[usize], seed: u64) -> Result<candle_core::Var> {
    random_var(shape, DType::F64, 1.0, seed)
}

/// Finite-difference check and every-parameter-gets-gradient check for the parameters of `vs`
/// plus `inputs`.
pub fn check_layer(
    vs: &VarStore,
    inputs: &[(&str, &candle_core::Var)],
    mut f: impl FnMut() -> Result<candle_core::Tensor>,
) -> Result<()> {
    let mut params = vs.vars();
    params.extend(inputs.iter().map(|(n, v)| (n.to_string(), (*v).clone())));
    check_gradients(&params, &mut f, &GradCheck::default())?;
    let loss = f()?;
    check_all_params_get_gradient(&params, &loss)
}

/// Planted multi-scenario click data.
///
/// `M` scenarios in `groups` (scenarios of one group share their item preferences, other groups
/// have their own), sizes `sizes` (samples per scenario). Users belong to one scenario. A click
/// depends on the user (a 3-d factor `u`), the item's factor `v`, and mostly on a
/// scenario-group-specific item term: `logit = u_0 + 0.5 (u . v) + 2.5 bias[group][item] - 0.3 +
/// noise`. Fields `user_id`, `item_id`,
/// `country` (the scenario). With `history > 0` also `hist_item_id` (the user's earlier
/// positively-labelled items, sharing `item_id`).
pub struct Planted {
    /// The samples, shuffled.
    pub data: Batch,
    /// The true click probability of every sample (the Bayes-optimal score).
    pub truth: Vec<f32>,
}

/// Builds [`Planted`] data.
pub fn planted(sizes: &[usize], groups: &[usize], history: usize, seed: u64) -> Planted {
    let m = sizes.len();
    let (users_per_scenario, items) = (30usize, 40usize);
    let n_groups = groups.iter().max().map_or(1, |g| g + 1);
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let users = users_per_scenario * m;
    let uf: Vec<[f32; 3]> = (0..users)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let vf: Vec<[f32; 3]> = (0..items)
        .map(|_| std::array::from_fn(|_| rng.random_range(-1.0..1.0)))
        .collect();
    let bias: Vec<Vec<f32>> = (0..n_groups)
        .map(|_| (0..items).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let mut fields = vec![
        FieldSpec::categorical("user_id", users + 1),
        FieldSpec::categorical("item_id", items + 1),
        FieldSpec::categorical("country", m),
    ];
    if history > 0 {
        fields.push(FieldSpec::sequence("hist_item_id", items + 1, "hist").sharing("item_id"));
    }
    let schema = Arc::new(Schema {
        fields,
        tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: Some("country".into()),
        num_scenarios: m,
    });
    let mut rows: Vec<(u32, u32, u32, Vec<u32>, f32, f32)> = Vec::new();
    let mut liked: Vec<Vec<u32>> = vec![Vec::new(); users];
    for (s, &size) in sizes.iter().enumerate() {
        for _ in 0..size {
            let u = s * users_per_scenario + rng.random_range(0..users_per_scenario);
            let i = rng.random_range(0..items);
            let dot: f32 = (0..3).map(|k| uf[u][k] * vf[i][k]).sum();
            let logit = uf[u][0] + 0.5 * dot + 2.5 * bias[groups[s]][i] - 0.3
                + rng.random_range(-0.5f32..0.5);
            let p = 1.0 / (1.0 + (-logit).exp());
            let y = if rng.random::<f32>() < p { 1.0 } else { 0.0 };
            let h = liked[u][liked[u].len().saturating_sub(history)..].to_vec();
            rows.push((u as u32 + 1, i as u32 + 1, s as u32, h, y, p));
            if y > 0.0 {
                liked[u].push(i as u32 + 1);
            }
        }
    }
    // Shuffle (seeded) so that batches mix scenarios.
    for k in (1..rows.len()).rev() {
        let j = rng.random_range(0..=k);
        rows.swap(k, j);
    }
    let mut columns = vec![
        Column::Ids(rows.iter().map(|r| r.0).collect()),
        Column::Ids(rows.iter().map(|r| r.1).collect()),
        Column::Ids(rows.iter().map(|r| r.2).collect()),
    ];
    if history > 0 {
        let mut values = Vec::new();
        let mut offsets = vec![0u32];
        for r in &rows {
            values.extend_from_slice(&r.3);
            offsets.push(values.len() as u32);
        }
        columns.push(Column::Ragged { values, offsets });
    }
    let data = Batch {
        schema,
        columns,
        labels: vec![rows.iter().map(|r| r.4).collect()],
        weights: None,
        slices: vec![],
    };
    data.validate().expect("planted data are valid");
    Planted {
        data,
        truth: rows.iter().map(|r| r.5).collect(),
    }
}
