//! Layer and batch normalization from differentiable ops (candle's fused `LayerNorm` path has
//! no backward pass).

use candle_core::{D, DType, Result, Tensor, Var};

use crate::init::{Init, VarStore, join};

/// Normalizes the last dimension to zero mean and unit variance, then scales and shifts:
/// `gamma * (x - mean) / sqrt(var + eps) + beta` (biased variance, `eps = 1e-5`).
#[derive(Clone)]
pub struct LayerNorm {
    gamma: Var,
    beta: Var,
    eps: f64,
}

impl LayerNorm {
    /// Variables `{prefix}.gamma` (ones) and `{prefix}.beta` (zeros) of width `dim`.
    pub fn new(vs: &mut VarStore, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            gamma: vs.var(&join(prefix, "gamma"), dim, Init::Ones)?,
            beta: vs.var(&join(prefix, "beta"), dim, Init::Zeros)?,
            eps: 1e-5,
        })
    }

    /// Normalizes `x: [..., dim]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let mean = x.mean_keepdim(D::Minus1)?;
        let xc = x.broadcast_sub(&mean)?;
        let var = xc.sqr()?.mean_keepdim(D::Minus1)?;
        let xhat = xc.broadcast_div(&var.affine(1.0, self.eps)?.sqrt()?)?;
        xhat.broadcast_mul(self.gamma.as_tensor())?
            .broadcast_add(self.beta.as_tensor())
    }
}

/// Batch normalization over every dimension but the last (Ioffe & Szegedy 2015).
///
/// Training uses the batch's mean and biased variance and updates the running statistics
/// `running = (1 - momentum) * running + momentum * batch` (unbiased variance, momentum 0.1);
/// evaluation uses the running statistics. A training batch of fewer than two rows (the last
/// batch of an epoch can be one row) has no variance to estimate: it is normalized with the
/// running statistics and leaves them unchanged (PyTorch refuses such a batch; a one-row batch
/// normalized by its own statistics would be all `beta`, and an empty one would turn the
/// running statistics into NaN). Non-finite batch statistics never reach the running ones. These are buffers (`{prefix}.running_mean`,
/// `{prefix}.running_var`): saved with the model, never optimized.
#[derive(Clone)]
pub struct BatchNorm {
    gamma: Var,
    beta: Var,
    running_mean: Var,
    running_var: Var,
    momentum: f64,
    eps: f64,
}

impl BatchNorm {
    /// Variables `{prefix}.gamma`, `{prefix}.beta` and buffers for width `dim`.
    pub fn new(vs: &mut VarStore, prefix: &str, dim: usize) -> Result<Self> {
        Ok(Self {
            gamma: vs.var(&join(prefix, "gamma"), dim, Init::Ones)?,
            beta: vs.var(&join(prefix, "beta"), dim, Init::Zeros)?,
            running_mean: vs.buffer(&join(prefix, "running_mean"), dim, Init::Zeros)?,
            running_var: vs.buffer(&join(prefix, "running_var"), dim, Init::Ones)?,
            momentum: 0.1,
            eps: 1e-5,
        })
    }

    /// The running mean and variance.
    pub fn running_stats(&self) -> (&Var, &Var) {
        (&self.running_mean, &self.running_var)
    }

    /// Normalizes `x: [..., dim]`; with `train`, from batch statistics (and updates the
    /// running ones).
    pub fn forward(&self, x: &Tensor, train: bool) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let dim = *dims
            .last()
            .ok_or_else(|| candle_core::Error::Msg("batch norm applied to a scalar".into()))?;
        let x2 = x.reshape(((), dim))?;
        let n = x2.dim(0)?;
        let (mean, var) = if train && n >= 2 {
            let mean = x2.mean_keepdim(0)?;
            let var = x2.broadcast_sub(&mean)?.sqr()?.mean_keepdim(0)?;
            let unbiased = n as f64 / (n - 1) as f64;
            let m = self.momentum;
            let rm = (self.running_mean.as_tensor().affine(1.0 - m, 0.0)?
                + mean.detach().squeeze(0)?.affine(m, 0.0)?)?;
            let rv = (self.running_var.as_tensor().affine(1.0 - m, 0.0)?
                + var.detach().squeeze(0)?.affine(m * unbiased, 0.0)?)?;
            let finite = |t: &Tensor| -> Result<bool> {
                Ok(t.to_dtype(DType::F64)?
                    .sum_all()?
                    .to_scalar::<f64>()?
                    .is_finite())
            };
            if finite(&rm)? && finite(&rv)? {
                self.running_mean.set(&rm)?;
                self.running_var.set(&rv)?;
            }
            (mean, var)
        } else {
            (
                self.running_mean.as_tensor().unsqueeze(0)?,
                self.running_var.as_tensor().unsqueeze(0)?,
            )
        };
        let xhat = x2
            .broadcast_sub(&mean)?
            .broadcast_div(&var.affine(1.0, self.eps)?.sqrt()?)?;
        xhat.broadcast_mul(self.gamma.as_tensor())?
            .broadcast_add(self.beta.as_tensor())?
            .reshape(dims)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::weighted_sum;
    use crate::layers::test_util::{check_layer, input, store};

    #[test]
    fn layer_norm_normalizes_and_has_gradients() -> Result<()> {
        let mut vs = store();
        let ln = LayerNorm::new(&mut vs, "ln", 5)?;
        let x = input(&[3, 5], 1)?;
        let y = ln
            .forward(&x.as_tensor().affine(4.0, 2.0)?)?
            .to_vec2::<f64>()?;
        for row in y {
            let m = row.iter().sum::<f64>() / 5.0;
            let v = row.iter().map(|a| (a - m) * (a - m)).sum::<f64>() / 5.0;
            assert!(m.abs() < 1e-9 && (v - 1.0).abs() < 1e-3);
        }
        let x3 = input(&[2, 3, 5], 2)?;
        check_layer(&vs, &[("x", &x3)], || {
            weighted_sum(&ln.forward(x3.as_tensor())?, 3)
        })
    }

    #[test]
    fn batch_norm_trains_on_batch_stats_and_evaluates_on_running_stats() -> Result<()> {
        let mut vs = store();
        let bn = BatchNorm::new(&mut vs, "bn", 3)?;
        let x = input(&[16, 3], 4)?;
        let shifted = x.as_tensor().affine(2.0, 5.0)?;
        let y = bn.forward(&shifted, true)?;
        let col_mean = y.mean_keepdim(0)?.flatten_all()?.to_vec1::<f64>()?;
        assert!(col_mean.iter().all(|m| m.abs() < 1e-9));
        // Running mean moved 10% of the way to the batch mean.
        let bm = shifted.mean_keepdim(0)?.flatten_all()?.to_vec1::<f64>()?;
        let rm = bn.running_stats().0.as_tensor().to_vec1::<f64>()?;
        for (a, b) in rm.iter().zip(&bm) {
            assert!((a - 0.1 * b).abs() < 1e-12);
        }
        // Evaluation is a fixed affine map per column given the running statistics.
        let e1 = bn.forward(&shifted, false)?.to_vec2::<f64>()?;
        let rv = bn.running_stats().1.as_tensor().to_vec1::<f64>()?;
        let s = shifted.to_vec2::<f64>()?;
        // Running variance: 0.9 * 1 + 0.1 * the unbiased batch variance.
        for c in 0..3 {
            let m = s.iter().map(|r| r[c]).sum::<f64>() / 16.0;
            let var = s.iter().map(|r| (r[c] - m).powi(2)).sum::<f64>() / 15.0;
            assert!(
                (rv[c] - (0.9 + 0.1 * var)).abs() < 1e-12,
                "{} vs {var}",
                rv[c]
            );
        }
        assert!((e1[0][1] - (s[0][1] - rm[1]) / (rv[1] + 1e-5).sqrt()).abs() < 1e-9);
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&bn.forward(x.as_tensor(), true)?, 1)
        })?;
        Ok(())
    }

    /// With a scale and shift other than 1 and 0 (which hide `(x̂ + beta) * gamma` and the like),
    /// both norms match a scalar reference, and the gradient checks hold there too.
    #[test]
    fn norms_apply_scale_then_shift_per_column() -> Result<()> {
        let gamma = [0.5f64, -1.5, 2.0];
        let beta = [0.25f64, 1.0, -3.0];
        let set = |g: &Var, b: &Var| -> Result<()> {
            g.set(&Tensor::new(&gamma, &candle_core::Device::Cpu)?)?;
            b.set(&Tensor::new(&beta, &candle_core::Device::Cpu)?)
        };
        let x = input(&[6, 3], 9)?;
        let s = x.as_tensor().to_vec2::<f64>()?;
        // LayerNorm: each row by its own mean and biased variance.
        let mut vs = store();
        let ln = LayerNorm::new(&mut vs, "ln", 3)?;
        set(&ln.gamma, &ln.beta)?;
        let y = ln.forward(x.as_tensor())?.to_vec2::<f64>()?;
        for (r, row) in s.iter().enumerate() {
            let m = row.iter().sum::<f64>() / 3.0;
            let v = row.iter().map(|a| (a - m).powi(2)).sum::<f64>() / 3.0;
            for c in 0..3 {
                let want = gamma[c] * (row[c] - m) / (v + 1e-5).sqrt() + beta[c];
                assert!(
                    (y[r][c] - want).abs() < 1e-9,
                    "ln [{r}][{c}]: {} vs {want}",
                    y[r][c]
                );
            }
        }
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&ln.forward(x.as_tensor())?, 5)
        })?;
        // BatchNorm in training: each column by the batch's mean and biased variance.
        let mut vs = store();
        let bn = BatchNorm::new(&mut vs, "bn", 3)?;
        set(&bn.gamma, &bn.beta)?;
        let y = bn.forward(x.as_tensor(), true)?.to_vec2::<f64>()?;
        for c in 0..3 {
            let m = s.iter().map(|r| r[c]).sum::<f64>() / 6.0;
            let v = s.iter().map(|r| (r[c] - m).powi(2)).sum::<f64>() / 6.0;
            for r in 0..6 {
                let want = gamma[c] * (s[r][c] - m) / (v + 1e-5).sqrt() + beta[c];
                assert!(
                    (y[r][c] - want).abs() < 1e-9,
                    "bn [{r}][{c}]: {} vs {want}",
                    y[r][c]
                );
            }
        }
        // ... and in evaluation by the running statistics.
        let (rm, rv) = (
            bn.running_stats().0.as_tensor().to_vec1::<f64>()?,
            bn.running_stats().1.as_tensor().to_vec1::<f64>()?,
        );
        let y = bn.forward(x.as_tensor(), false)?.to_vec2::<f64>()?;
        for c in 0..3 {
            for r in 0..6 {
                let want = gamma[c] * (s[r][c] - rm[c]) / (rv[c] + 1e-5).sqrt() + beta[c];
                assert!((y[r][c] - want).abs() < 1e-9, "bn eval [{r}][{c}]");
            }
        }
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&bn.forward(x.as_tensor(), true)?, 6)
        })
    }

    /// A training batch of one row is normalized with the running statistics (not to `beta`)
    /// and leaves them alone; an empty one neither fails nor turns them into NaN.
    #[test]
    fn batch_norm_of_one_or_no_row_uses_and_keeps_the_running_statistics() -> Result<()> {
        let mut vs = store();
        let bn = BatchNorm::new(&mut vs, "bn", 3)?;
        let x = input(&[16, 3], 4)?;
        bn.forward(&x.as_tensor().affine(2.0, 5.0)?, true)?;
        let before = (
            bn.running_stats().0.as_tensor().to_vec1::<f64>()?,
            bn.running_stats().1.as_tensor().to_vec1::<f64>()?,
        );
        let one = x.as_tensor().narrow(0, 0, 1)?;
        let train = bn.forward(&one, true)?.to_vec2::<f64>()?;
        let eval = bn.forward(&one, false)?.to_vec2::<f64>()?;
        assert_eq!(train, eval);
        assert!(train[0].iter().any(|v| v.abs() > 1e-6), "{train:?}");
        let empty = x.as_tensor().narrow(0, 0, 0)?;
        assert_eq!(bn.forward(&empty, true)?.dims(), &[0, 3]);
        let after = (
            bn.running_stats().0.as_tensor().to_vec1::<f64>()?,
            bn.running_stats().1.as_tensor().to_vec1::<f64>()?,
        );
        assert_eq!(before, after);
        // The one-row sample still trains the layer's scale and the input.
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&bn.forward(&x.as_tensor().narrow(0, 0, 1)?, true)?, 1)
        })?;
        Ok(())
    }
}
