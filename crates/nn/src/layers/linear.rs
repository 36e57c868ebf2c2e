//! Fully connected layer.

use candle_core::{Result, Tensor, Var};

use crate::init::{Init, VarStore, join};

/// `y = x W^T + b` with `W: [out, in]`, applied to the last dimension of `x`.
#[derive(Clone)]
pub struct Linear {
    weight: Var,
    bias: Option<Var>,
}

impl Linear {
    /// A layer with Xavier-uniform weights `{prefix}.weight` and a zero bias `{prefix}.bias`.
    pub fn new(vs: &mut VarStore, prefix: &str, in_dim: usize, out_dim: usize) -> Result<Self> {
        Self::with_init(vs, prefix, in_dim, out_dim, true, Init::XavierUniform)
    }

    /// A layer with the given weight initialiser, with or without bias.
    pub fn with_init(
        vs: &mut VarStore,
        prefix: &str,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        let weight = vs.var(&join(prefix, "weight"), (out_dim, in_dim), init)?;
        let bias = if bias {
            Some(vs.var(&join(prefix, "bias"), out_dim, Init::Zeros)?)
        } else {
            None
        };
        Ok(Self { weight, bias })
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[0]
    }

    /// The weight `[out, in]`.
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The bias `[out]`, if any.
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// Applies the layer to `x: [..., in]`, giving `[..., out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let dims = x.dims().to_vec();
        let (last, lead) = dims
            .split_last()
            .ok_or_else(|| candle_core::Error::Msg("linear layer applied to a scalar".into()))?;
        if *last != self.in_dim() {
            candle_core::bail!("linear layer expects width {}, got {last}", self.in_dim());
        }
        let rows: usize = lead.iter().product();
        let x2 = if dims.len() == 2 {
            x.clone()
        } else {
            x.reshape((rows, *last))?
        };
        let mut y = x2.matmul(&self.weight.t()?)?;
        if let Some(b) = &self.bias {
            y = y.broadcast_add(b.as_tensor())?;
        }
        if dims.len() == 2 {
            Ok(y)
        } else {
            let mut out = lead.to_vec();
            out.push(self.out_dim());
            y.reshape(out)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::weighted_sum;
    use crate::layers::test_util::{check_layer, input, store};

    #[test]
    fn gradients_2d_and_3d() -> Result<()> {
        let mut vs = store();
        let l = Linear::new(&mut vs, "l", 4, 3)?;
        let x = input(&[5, 4], 1)?;
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&l.forward(x.as_tensor())?, 1)
        })?;
        let x3 = input(&[2, 3, 4], 2)?;
        let y = l.forward(x3.as_tensor())?;
        assert_eq!(y.dims(), &[2, 3, 3]);
        let flat = l
            .forward(&x3.as_tensor().reshape((6, 4))?)?
            .reshape((2, 3, 3))?;
        assert_eq!(y.to_vec3::<f64>()?, flat.to_vec3::<f64>()?);
        check_layer(&vs, &[("x", &x3)], || {
            weighted_sum(&l.forward(x3.as_tensor())?, 2)
        })
    }

    #[test]
    fn wrong_width_is_an_error() -> Result<()> {
        let mut vs = store();
        let l = Linear::new(&mut vs, "l", 4, 3)?;
        assert!(l.forward(input(&[2, 5], 1)?.as_tensor()).is_err());
        Ok(())
    }
}
