//! Routed computation: each sample through its own scenario's parameters only.
//!
//! SAML's branches, heads and scenario projections are stacks of `M` per-scenario parameters
//! `W: [M, ...]`, and a sample of scenario `s` uses `W[s]` only. Computing every branch for every
//! sample and keeping the own one (a masked sum over `[M, n, d]`) costs `M` times the work in
//! the forward pass and, worse, in the backward pass, where every branch's matmul gradient is
//! computed over all `n` rows (mostly zeros).
//!
//! When the batch is sorted by scenario, scenario `m`'s samples are one block of rows
//! (`start..start + len`, see [`Groups`]), and `y = x W[s]` is one matmul per block:
//! [`routed_matmul`]. Its gradient is written by hand (a custom op), because taking row blocks
//! with `narrow` would make candle's backward pad every block's gradient to the full `[n, in]`
//! and add them up (`2M` full-size passes per layer): here `dx` is again one matmul per block,
//! `dx_m = dy_m W[m]^T`, and `dW[m] = x_m^T dy_m`. Only the summation order differs from the
//! dense form.

use candle_core::backend::BackendStorage;
use candle_core::{CpuStorage, CustomOp3, Layout, Result, Shape, Tensor};

/// The row blocks of a batch sorted by scenario: scenario `m`'s samples are rows
/// `starts[m]..starts[m] + lens[m]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Groups {
    starts: Vec<usize>,
    lens: Vec<usize>,
}

impl Groups {
    /// The blocks of `ids` over `m` scenarios, if `ids` is sorted (non-decreasing) and every
    /// id is below `m`; `None` otherwise.
    pub fn of_sorted(ids: &[u32], m: usize) -> Option<Self> {
        if ids.windows(2).any(|w| w[0] > w[1]) || ids.last().is_some_and(|&s| s as usize >= m) {
            return None;
        }
        let lens = crate::scenario::scenario_counts(ids, m);
        let mut starts = Vec::with_capacity(m);
        let mut at = 0;
        for &l in &lens {
            starts.push(at);
            at += l;
        }
        Some(Self { starts, lens })
    }

    /// Number of scenarios `M`.
    pub fn num_scenarios(&self) -> usize {
        self.lens.len()
    }

    /// `(start, len)` of scenario `m`'s block (`len` 0 when absent).
    pub fn block(&self, m: usize) -> (usize, usize) {
        (self.starts[m], self.lens[m])
    }

    /// Number of samples.
    pub fn total(&self) -> usize {
        self.lens.iter().sum()
    }

    /// `(scenario, start, len)` of every non-empty block, in row order.
    pub fn blocks(&self) -> impl Iterator<Item = (usize, usize, usize)> + '_ {
        self.starts
            .iter()
            .zip(&self.lens)
            .enumerate()
            .filter(|(_, (_, l))| **l > 0)
            .map(|(m, (s, l))| (m, *s, *l))
    }

    /// The blocks of the same batch with every sample expanded to `k` consecutive rows (e.g.
    /// `[n, T, w]` viewed as `[n * T, w]`).
    pub fn repeated(&self, k: usize) -> Self {
        Self {
            starts: self.starts.iter().map(|s| s * k).collect(),
            lens: self.lens.iter().map(|l| l * k).collect(),
        }
    }
}

/// `y[i] = x[i] W[s_i]` for `x: [n, in]` sorted by scenario (blocks `groups`) and
/// `w: [M, in, out]`: `[n, out]`, one matmul per non-empty block. Differentiable in `x` and
/// `w`; a scenario absent from the batch gets an exactly zero weight gradient.
pub fn routed_matmul(x: &Tensor, w: &Tensor, groups: &Groups) -> Result<Tensor> {
    let (n, i) = x.dims2()?;
    let (m, wi, _) = w.dims3()?;
    if wi != i || m != groups.num_scenarios() || n != groups.total() {
        candle_core::bail!(
            "routed matmul: input {:?}, weights {:?}, {} scenarios over {} samples",
            x.dims(),
            w.dims(),
            groups.num_scenarios(),
            groups.total()
        );
    }
    let y = blockwise(&x.detach(), &w.detach(), groups)?;
    if !x.device().is_cpu() {
        // The custom op has a CPU forward only (a copy); elsewhere the blocks are cut with
        // `narrow`, whose gradient is correct but pads each block to the full size.
        return blockwise(x, w, groups);
    }
    x.apply_op3(
        w,
        &y,
        RoutedMatmul {
            groups: groups.clone(),
        },
    )
}

/// The plain computation: one matmul per block, concatenated.
fn blockwise(x: &Tensor, w: &Tensor, groups: &Groups) -> Result<Tensor> {
    let x = x.contiguous()?;
    let parts = groups
        .blocks()
        .map(|(m, s, l)| x.narrow(0, s, l)?.matmul(&w.get(m)?))
        .collect::<Result<Vec<_>>>()?;
    if parts.is_empty() {
        let out = w.dim(2)?;
        return Tensor::zeros((0, out), x.dtype(), x.device());
    }
    Tensor::cat(&parts, 0)
}

/// The custom op behind [`routed_matmul`]: its forward returns the product computed outside
/// (argument 3), its backward the block-wise gradients.
struct RoutedMatmul {
    groups: Groups,
}

impl CustomOp3 for RoutedMatmul {
    fn name(&self) -> &'static str {
        "routed-matmul"
    }

    fn cpu_fwd(
        &self,
        _: &CpuStorage,
        _: &Layout,
        _: &CpuStorage,
        _: &Layout,
        y: &CpuStorage,
        ly: &Layout,
    ) -> Result<(CpuStorage, Shape)> {
        copy_contiguous(y, ly)
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (x, w, dy) = (x.detach(), w.detach(), dy.detach().contiguous()?);
        let dx = blockwise(&dy, &w.transpose(1, 2)?, &self.groups)?;
        let (m, i, o) = w.dims3()?;
        let x = x.contiguous()?;
        let mut dw = Vec::with_capacity(m);
        let mut blocks = self.groups.blocks().peekable();
        for k in 0..m {
            match blocks.peek() {
                Some(&(b, s, l)) if b == k => {
                    dw.push(x.narrow(0, s, l)?.t()?.matmul(&dy.narrow(0, s, l)?)?);
                    blocks.next();
                }
                _ => dw.push(Tensor::zeros((i, o), w.dtype(), w.device())?),
            }
        }
        Ok((Some(dx), Some(Tensor::stack(&dw, 0)?), None))
    }
}

/// A copy of the contiguous storage `y` (the forward of the ops whose value is computed
/// outside and whose backward is written by hand).
pub(crate) fn copy_contiguous(y: &CpuStorage, ly: &Layout) -> Result<(CpuStorage, Shape)> {
    let Some((a, b)) = ly.contiguous_offsets() else {
        candle_core::bail!("custom op: the precomputed value is not contiguous");
    };
    let out = match y {
        CpuStorage::F32(v) => CpuStorage::F32(v[a..b].to_vec()),
        CpuStorage::F64(v) => CpuStorage::F64(v[a..b].to_vec()),
        CpuStorage::BF16(v) => CpuStorage::BF16(v[a..b].to_vec()),
        CpuStorage::F16(v) => CpuStorage::F16(v[a..b].to_vec()),
        other => candle_core::bail!("custom op: unsupported dtype {:?}", other.dtype()),
    };
    Ok((out, ly.shape().clone()))
}

/// A stable order of the samples by scenario (a counting sort), or `None` when `ids` is
/// already sorted; an error names the first sample whose scenario is not below `m`.
pub fn scenario_order(ids: &[u32], m: usize) -> Result<Option<Vec<usize>>> {
    if let Some((i, s)) = ids.iter().enumerate().find(|(_, s)| **s as usize >= m) {
        candle_core::bail!("sample {i} has scenario {s} of {m}");
    }
    if ids.windows(2).all(|w| w[0] <= w[1]) {
        return Ok(None);
    }
    let mut buckets: Vec<Vec<usize>> = vec![Vec::new(); m];
    for (i, &s) in ids.iter().enumerate() {
        buckets[s as usize].push(i);
    }
    Ok(Some(buckets.concat()))
}

/// The inverse of a permutation `order` as a `u32` index tensor: `t.index_select(inv, 0)`
/// puts rows computed in `order` back in the original order.
pub fn inverse_index(order: &[usize], device: &candle_core::Device) -> Result<Tensor> {
    let mut inv = vec![0u32; order.len()];
    for (j, &i) in order.iter().enumerate() {
        inv[i] = j as u32;
    }
    Tensor::from_vec(inv, order.len(), device)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_layer, input, store};
    use rec_nn::gradcheck::weighted_sum;

    #[test]
    fn groups_of_sorted_ids() {
        let g = Groups::of_sorted(&[0, 0, 2, 2, 2], 4).unwrap();
        assert_eq!(g.blocks().collect::<Vec<_>>(), [(0, 0, 2), (2, 2, 3)]);
        assert_eq!(g.total(), 5);
        assert_eq!(
            g.repeated(2).blocks().collect::<Vec<_>>(),
            [(0, 0, 4), (2, 4, 6)]
        );
        assert!(Groups::of_sorted(&[1, 0], 2).is_none());
        assert_eq!(
            scenario_order(&[1, 0, 1, 0], 2).unwrap(),
            Some(vec![1, 3, 0, 2])
        );
        assert_eq!(scenario_order(&[0, 1, 1], 2).unwrap(), None);
        // Out-of-range scenarios: an error or no groups, never a panic.
        let e = scenario_order(&[0, 2, 1], 2).unwrap_err().to_string();
        assert!(e.contains("sample 1 has scenario 2 of 2"), "{e}");
        assert!(Groups::of_sorted(&[0, 1, 5], 2).is_none());
    }

    #[test]
    fn routed_matmul_equals_per_sample_products_and_has_exact_gradients() -> Result<()> {
        let ids = [0u32, 0, 2, 2, 2];
        let g = Groups::of_sorted(&ids, 3).unwrap();
        let x = input(&[5, 4], 1)?;
        let w = input(&[3, 4, 2], 2)?;
        let y = routed_matmul(x.as_tensor(), w.as_tensor(), &g)?;
        for (i, &s) in ids.iter().enumerate() {
            let e = x
                .as_tensor()
                .get(i)?
                .unsqueeze(0)?
                .matmul(&w.as_tensor().get(s as usize)?)?;
            let diff = (y.get(i)?.unsqueeze(0)? - e)?.abs()?.max_all()?;
            assert!(diff.to_scalar::<f64>()? < 1e-12);
        }
        // Scenario 1 has no sample: its weights get an exactly zero gradient.
        let grads = weighted_sum(&y, 3)?.backward()?;
        let gw = grads.get(w.as_tensor()).unwrap().get(1)?;
        assert_eq!(gw.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0);
        let vs = store();
        check_layer(&vs, &[("x", &x), ("w", &w)], || {
            weighted_sum(&routed_matmul(x.as_tensor(), w.as_tensor(), &g)?, 3)
        })
    }

    /// Layouts beyond [`routed_matmul_equals_per_sample_products_and_has_exact_gradients`]'s:
    /// the first, the last, or both end scenarios absent, single-sample scenarios at the
    /// start, in the middle and at the end, a batch of one sample, and an empty batch.
    #[test]
    fn routed_matmul_with_absent_end_scenarios_and_single_samples() -> Result<()> {
        let layouts: [&[u32]; 6] = [
            &[1, 1, 2, 2],
            &[0, 0, 1],
            &[1, 1, 1],
            &[0, 1, 2, 2],
            &[0, 0, 1, 2],
            &[2],
        ];
        for (k, ids) in layouts.into_iter().enumerate() {
            let g = Groups::of_sorted(ids, 3).unwrap();
            let x = input(&[ids.len(), 4], 10 + k as u64)?;
            let w = input(&[3, 4, 2], 20 + k as u64)?;
            let y = routed_matmul(x.as_tensor(), w.as_tensor(), &g)?;
            assert_eq!(y.dims(), &[ids.len(), 2]);
            for (i, &s) in ids.iter().enumerate() {
                let e = x
                    .as_tensor()
                    .get(i)?
                    .unsqueeze(0)?
                    .matmul(&w.as_tensor().get(s as usize)?)?;
                let diff = (y.get(i)?.unsqueeze(0)? - e)?.abs()?.max_all()?;
                assert!(diff.to_scalar::<f64>()? < 1e-12, "{ids:?} sample {i}");
            }
            // Exactly zero weight gradient for the absent scenarios, some for the others.
            let grads = weighted_sum(&y, 3)?.backward()?;
            let gw = grads.get(w.as_tensor()).unwrap();
            for s in 0..3u32 {
                let norm = gw.get(s as usize)?.abs()?.sum_all()?.to_scalar::<f64>()?;
                assert_eq!(norm > 0.0, ids.contains(&s), "{ids:?} scenario {s}: {norm}");
            }
            let vs = store();
            check_layer(&vs, &[("x", &x), ("w", &w)], || {
                weighted_sum(&routed_matmul(x.as_tensor(), w.as_tensor(), &g)?, 3)
            })
            .map_err(|e| candle_core::Error::Msg(format!("{ids:?}: {e}")))?;
        }
        // An empty batch: an empty product and an all-zero weight gradient.
        let g = Groups::of_sorted(&[], 3).unwrap();
        let empty = Tensor::zeros((0, 4), candle_core::DType::F64, &candle_core::Device::Cpu)?;
        let x = candle_core::Var::from_tensor(&empty)?;
        let w = input(&[3, 4, 2], 2)?;
        let y = routed_matmul(x.as_tensor(), w.as_tensor(), &g)?;
        assert_eq!(y.dims(), &[0, 2]);
        let grads = y.sum_all()?.backward()?;
        let gw = grads.get(w.as_tensor()).unwrap();
        assert_eq!(gw.abs()?.sum_all()?.to_scalar::<f64>()?, 0.0);
        Ok(())
    }
}
