//! A masked, batched LSTM (Hochreiter & Schmidhuber 1997).

use candle_core::{Result, Tensor, Var};

use super::ops::split_steps;
use crate::init::{Init, VarStore, join};

/// Hidden states of an LSTM pass.
pub struct LstmOutput {
    /// Hidden state after every step, `[n, T, h]` (at a padded step, the state carried over
    /// from the last valid step).
    pub outputs: Tensor,
    /// Hidden state after the last valid step, `[n, h]` (zeros for an empty sequence).
    pub last: Tensor,
    /// Cell state after the last valid step, `[n, h]`.
    pub cell: Tensor,
}

/// A single-layer LSTM over `[n, T, in]` inputs with a `[n, T]` mask.
///
/// - The input projections of all time steps are one matmul (`[T n, in] x [in, 4h]`); the loop
///   over time does only the recurrent matmul and the gate arithmetic.
/// - At a masked step (mask 0) the state is carried over unchanged, so padding (anywhere, but
///   typically at the end) never changes the result.
/// - Gates in the order input, forget, cell, output. Weights `U(-1/sqrt(h), 1/sqrt(h))` as in
///   PyTorch; bias zero except the forget gate's, which starts at 1 (Jozefowicz et al. 2015).
///
/// Variables: `{prefix}.w_ih` `[4h, in]`, `{prefix}.w_hh` `[4h, h]`, `{prefix}.bias` `[4h]`.
pub struct Lstm {
    w_ih: Var,
    w_hh: Var,
    bias: Var,
    hidden: usize,
}

impl Lstm {
    /// An LSTM from width `input` to hidden width `hidden`.
    pub fn new(vs: &mut VarStore, prefix: &str, input: usize, hidden: usize) -> Result<Self> {
        let a = 1.0 / (hidden as f64).sqrt();
        let u = Init::Uniform { lo: -a, hi: a };
        let w_ih = vs.var(&join(prefix, "w_ih"), (4 * hidden, input), u)?;
        let w_hh = vs.var(&join(prefix, "w_hh"), (4 * hidden, hidden), u)?;
        let bias = vs.var(&join(prefix, "bias"), 4 * hidden, Init::Zeros)?;
        let mut b = vec![0f64; 4 * hidden];
        b[hidden..2 * hidden].fill(1.0);
        bias.set(&Tensor::from_vec(b, 4 * hidden, vs.device())?.to_dtype(vs.dtype())?)?;
        Ok(Self {
            w_ih,
            w_hh,
            bias,
            hidden,
        })
    }

    /// Hidden width.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Runs over `x: [n, T, in]` with `mask: [n, T]` (1 = valid, 0 = padding).
    pub fn forward(&self, x: &Tensor, mask: &Tensor) -> Result<LstmOutput> {
        let (n, t, input) = x.dims3()?;
        let h = self.hidden;
        if mask.dims() != [n, t] {
            candle_core::bail!("LSTM mask has shape {:?}, expected [{n}, {t}]", mask.dims());
        }
        let mask = mask.to_dtype(x.dtype())?;
        // All input projections at once, time-major so each step is a contiguous slice.
        let xt = x.transpose(0, 1)?.contiguous()?.reshape((t * n, input))?;
        let proj = xt
            .matmul(&self.w_ih.t()?)?
            .broadcast_add(self.bias.as_tensor())?
            .reshape((t, n, 4 * h))?;
        let steps = split_steps(&proj)?;
        let w_hh_t = self.w_hh.t()?;
        let mut hs = Tensor::zeros((n, h), x.dtype(), x.device())?;
        let mut c = Tensor::zeros((n, h), x.dtype(), x.device())?;
        let mut outs = Vec::with_capacity(t);
        for (s, xp) in steps.iter().enumerate() {
            let gates = (xp + hs.matmul(&w_hh_t)?)?;
            let sig = candle_nn::ops::sigmoid(&gates)?;
            let i = sig.narrow(1, 0, h)?;
            let f = sig.narrow(1, h, h)?;
            let o = sig.narrow(1, 3 * h, h)?;
            let g = gates.narrow(1, 2 * h, h)?.tanh()?;
            let c_new = ((f * &c)? + (i * g)?)?;
            let h_new = (o * c_new.tanh()?)?;
            let m = mask.narrow(1, s, 1)?;
            c = (&c + (c_new - &c)?.broadcast_mul(&m)?)?;
            hs = (&hs + (h_new - &hs)?.broadcast_mul(&m)?)?;
            outs.push(hs.clone());
        }
        let outputs = if outs.is_empty() {
            Tensor::zeros((n, 0, h), x.dtype(), x.device())?
        } else {
            Tensor::stack(&outs, 1)?
        };
        Ok(LstmOutput {
            outputs,
            last: hs,
            cell: c,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::weighted_sum;
    use crate::layers::test_util::{check_layer, input, store};
    use candle_core::{DType, Device};

    #[test]
    fn gradients_reach_weights_and_inputs() -> Result<()> {
        let mut vs = store();
        let lstm = Lstm::new(&mut vs, "lstm", 3, 4)?;
        let x = input(&[2, 5, 3], 1)?;
        let mask = Tensor::new(
            &[[1f64, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]],
            &Device::Cpu,
        )?;
        check_layer(&vs, &[("x", &x)], || {
            let o = lstm.forward(x.as_tensor(), &mask)?;
            (weighted_sum(&o.outputs, 1)? + weighted_sum(&o.last, 2)?)?.affine(1.0, 0.0)
        })
    }

    #[test]
    fn matches_a_scalar_reference_step() -> Result<()> {
        let mut vs = store();
        let lstm = Lstm::new(&mut vs, "lstm", 2, 1)?;
        let x = input(&[1, 1, 2], 3)?;
        let mask = Tensor::ones((1, 1), DType::F64, &Device::Cpu)?;
        let got = lstm.forward(x.as_tensor(), &mask)?.last.to_vec2::<f64>()?[0][0];
        let w = lstm.w_ih.as_tensor().to_vec2::<f64>()?;
        let xv = x.as_tensor().to_vec3::<f64>()?[0][0].clone();
        let pre = |g: usize| w[g][0] * xv[0] + w[g][1] * xv[1] + if g == 1 { 1.0 } else { 0.0 };
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let c = sig(pre(0)) * pre(2).tanh();
        let want = sig(pre(3)) * c.tanh();
        assert!((got - want).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn padding_does_not_change_the_state() -> Result<()> {
        let d = Device::Cpu;
        let mut vs = store();
        let lstm = Lstm::new(&mut vs, "lstm", 3, 4)?;
        let x = input(&[2, 3, 3], 1)?;
        let ones = Tensor::ones((2, 3), DType::F64, &d)?;
        let short = lstm.forward(x.as_tensor(), &ones)?;
        let garbage = input(&[2, 4, 3], 5)?.as_tensor().affine(50.0, 0.0)?;
        let long_x = Tensor::cat(&[x.as_tensor(), &garbage], 1)?;
        let long_m = Tensor::cat(&[&ones, &Tensor::zeros((2, 4), DType::F64, &d)?], 1)?;
        let long = lstm.forward(&long_x, &long_m)?;
        assert_eq!(short.last.to_vec2::<f64>()?, long.last.to_vec2::<f64>()?);
        assert_eq!(
            short.outputs.to_vec3::<f64>()?,
            long.outputs.narrow(1, 0, 3)?.to_vec3::<f64>()?
        );
        // A sample with no valid step keeps the zero state.
        let none = lstm.forward(x.as_tensor(), &Tensor::zeros((2, 3), DType::F64, &d)?)?;
        assert!(
            none.last
                .to_vec2::<f64>()?
                .iter()
                .flatten()
                .all(|&v| v == 0.0)
        );
        Ok(())
    }
}
