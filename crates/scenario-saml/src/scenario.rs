//! Scenario bookkeeping shared by every model of the crate: checked scenario ids, one-hot
//! routing masks, selecting each sample's own branch, and the task check.

use candle_core::{D, DType, Device, Result, Tensor};
use rec_data::{Batch, Schema, TaskKind};

use crate::routed::{Groups, routed_matmul};

/// The scenario of every sample of `batch`, checked against `num_scenarios` (a value out of
/// range is an error naming the sample and the value, never a panic). All 0 when the schema
/// has no scenario field.
pub fn scenario_ids(batch: &Batch, num_scenarios: usize) -> Result<Vec<u32>> {
    let ids = batch.scenarios();
    if let Some((i, s)) = ids
        .iter()
        .enumerate()
        .find(|(_, s)| **s as usize >= num_scenarios)
    {
        candle_core::bail!(
            "sample {i} has scenario {s}, but the model was built for {num_scenarios} scenarios (field `{}`)",
            batch.schema.scenario_field.as_deref().unwrap_or("<none>")
        );
    }
    Ok(ids)
}

/// How many of `ids` fall in each of the `m` scenarios (every id below `m`).
pub(crate) fn scenario_counts(ids: &[u32], m: usize) -> Vec<usize> {
    let mut counts = vec![0usize; m];
    for &s in ids {
        counts[s as usize] += 1;
    }
    counts
}

/// Routing of a batch to scenarios: the ids as a tensor and the `[n, M]` one-hot matrix.
#[derive(Clone)]
pub struct Routing {
    /// Number of scenarios `M`.
    pub num_scenarios: usize,
    /// Scenario of every sample, on the host.
    pub ids: Vec<u32>,
    /// Scenario of every sample, `[n]` u32.
    pub ids_tensor: Tensor,
    /// `[n, M]`, 1 at the sample's own scenario, 0 elsewhere (dtype of the model).
    pub one_hot: Tensor,
    /// The row blocks of the scenarios when the samples are sorted by scenario (then
    /// per-scenario parameters are applied block by block, see [`crate::routed`]).
    pub groups: Option<Groups>,
}

impl Routing {
    /// The routing of `ids` over `num_scenarios` scenarios.
    pub fn new(ids: Vec<u32>, num_scenarios: usize, dtype: DType, device: &Device) -> Result<Self> {
        let n = ids.len();
        let mut oh = vec![0f32; n * num_scenarios];
        for (i, &s) in ids.iter().enumerate() {
            if s as usize >= num_scenarios {
                candle_core::bail!("sample {i} has scenario {s} of {num_scenarios}");
            }
            oh[i * num_scenarios + s as usize] = 1.0;
        }
        let one_hot = Tensor::from_vec(oh, (n, num_scenarios), device)?.to_dtype(dtype)?;
        let ids_tensor = Tensor::from_slice(&ids, n, device)?;
        let groups = Groups::of_sorted(&ids, num_scenarios);
        Ok(Self {
            num_scenarios,
            ids,
            ids_tensor,
            one_hot,
            groups,
        })
    }

    /// The routing of a batch (see [`scenario_ids`]).
    pub fn of_batch(
        batch: &Batch,
        num_scenarios: usize,
        dtype: DType,
        device: &Device,
    ) -> Result<Self> {
        Self::new(
            scenario_ids(batch, num_scenarios)?,
            num_scenarios,
            dtype,
            device,
        )
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// True for an empty batch.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// Each sample's own branch out of `h: [M, n, d]` (branch-major), giving `[n, d]`.
    ///
    /// The selection is a masked sum, so the gradient reaches branch `m` only at the samples of
    /// scenario `m` (exactly zero elsewhere).
    pub fn select_own(&self, h: &Tensor) -> Result<Tensor> {
        let (m, n, _) = h.dims3()?;
        if m != self.num_scenarios || n != self.len() {
            candle_core::bail!(
                "select_own: branches {:?} for {} scenarios and {} samples",
                h.dims(),
                self.num_scenarios,
                self.len()
            );
        }
        let mask = self.one_hot.t()?.unsqueeze(D::Minus1)?; // [M, n, 1]
        h.broadcast_mul(&mask)?.sum(0)
    }

    /// `x[i] W[s_i]` for `x: [n, in]` and per-scenario matrices `w: [M, in, out]`: `[n, out]`.
    /// Block by block ([`routed_matmul`]) when the samples are sorted by scenario; otherwise
    /// every sample gathers its own matrix (`[n, in, out]`, a batched matmul).
    pub fn matmul_own(&self, x: &Tensor, w: &Tensor) -> Result<Tensor> {
        match &self.groups {
            Some(g) => routed_matmul(x, w, g),
            None => {
                let (n, i) = x.dims2()?;
                let ws = self.rows_of(w)?; // [n, in, out]
                x.reshape((n, 1, i))?.matmul(&ws)?.squeeze(1)
            }
        }
    }

    /// The rows of a per-scenario parameter `p: [M, ...]` for each sample: `[n, ...]`.
    pub fn rows_of(&self, p: &Tensor) -> Result<Tensor> {
        p.index_select(&self.ids_tensor, 0)
    }
}

/// Checks that `schema` has exactly one task and that it is binary (the models of this crate
/// predict a click-through rate), and returns the number of scenarios.
pub fn check_schema(schema: &Schema, model: &str) -> Result<usize> {
    schema
        .validate()
        .map_err(|e| candle_core::Error::Msg(format!("{model}: invalid schema: {e}")))?;
    match schema.tasks.as_slice() {
        [t] if t.kind == TaskKind::Binary => {}
        _ => candle_core::bail!(
            "{model} predicts one binary task; the schema has {} ({})",
            schema.tasks.len(),
            schema
                .tasks
                .iter()
                .map(|t| t.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    }
    if schema.num_scenarios > 1 {
        // Without a categorical scenario field every sample would read scenario 0, and the
        // other scenarios' parameters would never train.
        let field = schema
            .scenario_field
            .as_deref()
            .and_then(|f| schema.field(f));
        match field {
            Some(f) if f.kind == rec_data::FieldKind::Categorical => {}
            Some(f) => candle_core::bail!(
                "{model}: the scenario field `{}` must be categorical (one scenario per sample)",
                f.name
            ),
            None => candle_core::bail!(
                "{model}: the schema has {} scenarios but no scenario field",
                schema.num_scenarios
            ),
        }
    }
    Ok(schema.num_scenarios.max(1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn select_own_picks_the_right_branch_and_routes_gradient_only_there() -> Result<()> {
        let d = Device::Cpu;
        let r = Routing::new(vec![1, 0, 1], 2, DType::F64, &d)?;
        // h[m][i] = 10 m + i.
        let h = candle_core::Var::from_tensor(&Tensor::new(
            &[[[0f64], [1.0], [2.0]], [[10.0], [11.0], [12.0]]],
            &d,
        )?)?;
        let own = r.select_own(h.as_tensor())?;
        assert_eq!(own.flatten_all()?.to_vec1::<f64>()?, [10.0, 1.0, 12.0]);
        let g = own.sum_all()?.backward()?;
        let g = g
            .get(h.as_tensor())
            .unwrap()
            .flatten_all()?
            .to_vec1::<f64>()?;
        assert_eq!(g, [0.0, 1.0, 0.0, 1.0, 0.0, 1.0]);
        let p = Tensor::new(&[[1f64, 2.0], [3.0, 4.0]], &d)?;
        assert_eq!(
            r.rows_of(&p)?.to_vec2::<f64>()?,
            [[3.0, 4.0], [1.0, 2.0], [3.0, 4.0]]
        );
        assert!(Routing::new(vec![2], 2, DType::F64, &d).is_err());
        Ok(())
    }
}
