//! A fast sum over the middle axis of `[n, k, d]` tensors on the CPU.
//!
//! Candle 0.11 sums a contiguous tensor over a non-last axis element by element, with two
//! integer divisions per element to find the output slot. FM's field sums, masked pooling of
//! multi-hot and sequence fields, and attention pooling all reduce the middle axis of an
//! `[n, k, d]` tensor; in DeepFM inference that path was 44% of the time (perf, see
//! docs/benchmarks.md). [`sum_middle`] does the same additions in the same order (each output
//! starts at zero and adds `x[i, 0, :]`, `x[i, 1, :]`, ... in turn), so its results are
//! bit-identical to `x.sum(1)`, with the gradient candle would give (the output gradient
//! broadcast over the summed axis).

use candle_core::{CpuStorage, CustomOp1, DType, Layout, Result, Shape, Tensor};

/// `x.sum(1)` for a rank-3 `x`, bit-identical, faster on the CPU for f32 and f64. Other ranks,
/// dtypes and devices fall back to candle's own reduction.
pub fn sum_middle(x: &Tensor) -> Result<Tensor> {
    if x.rank() != 3 || !x.device().is_cpu() || !matches!(x.dtype(), DType::F32 | DType::F64) {
        return x.sum(1);
    }
    x.contiguous()?.apply_op1(SumMiddle)
}

struct SumMiddle;

/// Sums `src` (`[n, k, d]`, contiguous) over `k`, adding the rows of each block in order.
fn sum_blocks<T: Copy + Default + std::ops::AddAssign>(
    src: &[T],
    n: usize,
    k: usize,
    d: usize,
) -> Vec<T> {
    let mut out = vec![T::default(); n * d];
    if d == 0 || k == 0 {
        return out;
    }
    for (o, block) in out.chunks_exact_mut(d).zip(src.chunks_exact(k * d)) {
        for row in block.chunks_exact(d) {
            for (a, &b) in o.iter_mut().zip(row) {
                *a += b;
            }
        }
    }
    out
}

impl CustomOp1 for SumMiddle {
    fn name(&self) -> &'static str {
        "sum-middle"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> Result<(CpuStorage, Shape)> {
        let (n, k, d) = layout.shape().dims3()?;
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("sum-middle: the input must be contiguous");
        };
        let shape = Shape::from((n, d));
        match storage {
            CpuStorage::F32(v) => Ok((CpuStorage::F32(sum_blocks(&v[start..end], n, k, d)), shape)),
            CpuStorage::F64(v) => Ok((CpuStorage::F64(sum_blocks(&v[start..end], n, k, d)), shape)),
            _ => candle_core::bail!("sum-middle: only f32 and f64 are supported"),
        }
    }

    fn bwd(&self, arg: &Tensor, _res: &Tensor, grad_res: &Tensor) -> Result<Option<Tensor>> {
        Ok(Some(grad_res.unsqueeze(1)?.broadcast_as(arg.shape())?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{GradCheck, check_gradients, weighted_sum};
    use crate::layers::test_util::input;
    use candle_core::{Device, Var};
    use proptest::prelude::*;

    fn bits(t: &Tensor) -> Vec<u32> {
        t.flatten_all()
            .unwrap()
            .to_vec1::<f32>()
            .unwrap()
            .iter()
            .map(|x| x.to_bits())
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(64))]

        /// Same bits as candle's reduction, forward and backward, for any shape (including
        /// empty axes) and for a non-contiguous input.
        #[test]
        fn bit_identical_to_candle_sum(
            n in 0usize..6, k in 0usize..9, d in 0usize..20, seed in any::<u64>(), transposed: bool
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let vals: Vec<f32> = (0..n * k * d).map(|_| rng.random_range(-1e3f32..1e3)).collect();
            let x = if transposed {
                // Logical [n, k, d] from a [n, d, k] buffer: not contiguous.
                Var::from_tensor(&Tensor::from_vec(vals, (n, d, k), &Device::Cpu).unwrap())
                    .unwrap()
            } else {
                Var::from_tensor(&Tensor::from_vec(vals, (n, k, d), &Device::Cpu).unwrap())
                    .unwrap()
            };
            let xt = if transposed { x.as_tensor().transpose(1, 2).unwrap() } else { x.as_tensor().clone() };
            let w: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1f32..1.0)).collect();
            let w = Tensor::from_vec(w, (n, d), &Device::Cpu).unwrap();
            let ours = sum_middle(&xt).unwrap();
            let theirs = xt.sum(1).unwrap();
            prop_assert_eq!(ours.dims(), theirs.dims());
            prop_assert_eq!(bits(&ours), bits(&theirs));
            let g1 = (ours * &w).unwrap().sum_all().unwrap().backward().unwrap();
            let g2 = (theirs * &w).unwrap().sum_all().unwrap().backward().unwrap();
            match (g1.get(x.as_tensor()), g2.get(x.as_tensor())) {
                (Some(a), Some(b)) => prop_assert_eq!(bits(a), bits(b)),
                (None, None) => {}
                _ => prop_assert!(false, "one side has no gradient"),
            }
        }
    }

    #[test]
    fn finite_difference_gradient() -> Result<()> {
        let x = input(&[3, 5, 4], 7)?;
        let p = vec![("x".to_string(), x.clone())];
        check_gradients(
            &p,
            || weighted_sum(&sum_middle(x.as_tensor())?, 1),
            &GradCheck::default(),
        )?;
        Ok(())
    }

    #[test]
    fn other_ranks_fall_back() -> Result<()> {
        let x = Tensor::arange(0f32, 6.0, &Device::Cpu)?.reshape((2, 3))?;
        assert_eq!(sum_middle(&x)?.to_vec1::<f32>()?, vec![3.0, 12.0]);
        Ok(())
    }
}
