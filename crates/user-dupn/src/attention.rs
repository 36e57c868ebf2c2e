//! DUPN's attention net over the behaviour sequence.
//!
//! `a_t = softmax over valid t of v^T tanh(W [h_t; q; u; p_t] + b)`: a two-layer MLP scores
//! each step from its hidden state, the request (query `q` and profile `u`) and its property
//! `p_t`; the weights are a masked softmax over the valid steps, so padding gets weight exactly
//! zero. The first layer is applied blockwise (`W_h h_t + W_p p_t + W_c [q; u]`), which is the
//! same function as the MLP on the concatenation without broadcasting `[q; u]` over time.

use candle_core::{D, Result, Tensor};
use rec_nn::init::{Init, VarStore, join};
use rec_nn::layers::{Linear, masked_softmax};

/// See the [module documentation](self).
///
/// Variables: `{prefix}.h.weight`, `{prefix}.h.bias` (the hidden-state block and the bias),
/// `{prefix}.p.weight` (property block, if any), `{prefix}.c.weight` (request block, if any),
/// `{prefix}.v.weight` (second layer, one output).
pub struct BehaviourAttention {
    w_h: Linear,
    w_p: Option<Linear>,
    w_c: Option<Linear>,
    v: Linear,
}

impl BehaviourAttention {
    /// Attention over hidden states of width `hidden`, with a property of width `property`
    /// and a request context of width `context` (0 = absent), through `width` hidden units.
    pub fn new(
        vs: &mut VarStore,
        prefix: &str,
        hidden: usize,
        context: usize,
        property: usize,
        width: usize,
    ) -> Result<Self> {
        let lin = |vs: &mut VarStore, name: &str, d: usize, bias: bool| {
            Linear::with_init(vs, &join(prefix, name), d, width, bias, Init::XavierUniform)
        };
        let w_h = lin(vs, "h", hidden, true)?;
        let w_p = (property > 0)
            .then(|| lin(vs, "p", property, false))
            .transpose()?;
        let w_c = (context > 0)
            .then(|| lin(vs, "c", context, false))
            .transpose()?;
        let v = Linear::with_init(vs, &join(prefix, "v"), width, 1, false, Init::XavierUniform)?;
        Ok(Self { w_h, w_p, w_c, v })
    }

    /// The unnormalised scores `[n, T]` of hidden states `h: [n, T, hidden]`, request context
    /// `ctx: [n, context]` and properties `p: [n, T, property]`.
    pub fn scores(&self, h: &Tensor, ctx: Option<&Tensor>, p: Option<&Tensor>) -> Result<Tensor> {
        let mut z = self.w_h.forward(h)?;
        match (&self.w_p, p) {
            (Some(w), Some(p)) => z = (z + w.forward(p)?)?,
            (None, None) => {}
            _ => candle_core::bail!("attention: the property input does not match the layer"),
        }
        match (&self.w_c, ctx) {
            (Some(w), Some(c)) => z = z.broadcast_add(&w.forward(c)?.unsqueeze(1)?)?,
            (None, None) => {}
            _ => candle_core::bail!("attention: the request context does not match the layer"),
        }
        self.v.forward(&z.tanh()?)?.squeeze(D::Minus1)
    }

    /// The attention weights `[n, T]` (each row sums to 1 over its valid steps; zeros for a
    /// sample without valid steps). `mask` is `[n, T]`, 1 = valid.
    pub fn weights(
        &self,
        h: &Tensor,
        ctx: Option<&Tensor>,
        p: Option<&Tensor>,
        mask: &Tensor,
    ) -> Result<Tensor> {
        masked_softmax(&self.scores(h, ctx, p)?, &mask.to_dtype(h.dtype())?)
    }

    /// `rep_s = sum_t a_t h_t`, `[n, hidden]`, and the weights `[n, T]`.
    pub fn forward(
        &self,
        h: &Tensor,
        ctx: Option<&Tensor>,
        p: Option<&Tensor>,
        mask: &Tensor,
    ) -> Result<(Tensor, Tensor)> {
        let a = self.weights(h, ctx, p, mask)?;
        let rep = a.unsqueeze(1)?.matmul(h)?.squeeze(1)?;
        Ok((rep, a))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_layer, input, store};
    use candle_core::{DType, Device};
    use rec_nn::gradcheck::weighted_sum;

    #[test]
    fn gradients_match_finite_differences_and_reach_every_parameter() -> Result<()> {
        let mut vs = store();
        let att = BehaviourAttention::new(&mut vs, "att", 4, 3, 2, 5)?;
        let h = input(&[2, 4, 4], 1)?;
        let c = input(&[2, 3], 2)?;
        let p = input(&[2, 4, 2], 3)?;
        let mask = Tensor::new(&[[1f64, 1.0, 1.0, 0.0], [1.0, 1.0, 1.0, 1.0]], &Device::Cpu)?;
        check_layer(&vs, &[("h", &h), ("c", &c), ("p", &p)], || {
            let (rep, a) = att.forward(
                h.as_tensor(),
                Some(c.as_tensor()),
                Some(p.as_tensor()),
                &mask,
            )?;
            weighted_sum(&rep, 1)? + weighted_sum(&a, 2)?
        })
    }

    #[test]
    fn equals_the_mlp_on_the_concatenation() -> Result<()> {
        let mut vs = store();
        let att = BehaviourAttention::new(&mut vs, "att", 4, 3, 2, 5)?;
        let h = input(&[2, 4, 4], 1)?.as_tensor().clone();
        let c = input(&[2, 3], 2)?.as_tensor().clone();
        let p = input(&[2, 4, 2], 3)?.as_tensor().clone();
        let got = att.scores(&h, Some(&c), Some(&p))?.to_vec2::<f64>()?;
        // The explicit MLP on [h_t; q u; p_t].
        let w = Tensor::cat(
            &[
                att.w_h.weight().as_tensor(),
                att.w_c.as_ref().unwrap().weight().as_tensor(),
                att.w_p.as_ref().unwrap().weight().as_tensor(),
            ],
            1,
        )?;
        let cb = c.unsqueeze(1)?.broadcast_as((2, 4, 3))?;
        let x = Tensor::cat(&[&h, &cb.contiguous()?, &p], 2)?.reshape((8, 9))?;
        let z = x
            .matmul(&w.t()?)?
            .broadcast_add(att.w_h.bias().unwrap().as_tensor())?
            .tanh()?;
        let want = z
            .matmul(&att.v.weight().as_tensor().t()?)?
            .reshape((2, 4))?
            .to_vec2::<f64>()?;
        for (a, b) in got.iter().flatten().zip(want.iter().flatten()) {
            assert!((a - b).abs() < 1e-12);
        }
        Ok(())
    }

    #[test]
    fn padding_gets_no_weight_and_changes_nothing() -> Result<()> {
        let d = Device::Cpu;
        let mut vs = store();
        let att = BehaviourAttention::new(&mut vs, "att", 4, 0, 2, 5)?;
        let h = input(&[1, 3, 4], 1)?.as_tensor().clone();
        let p = input(&[1, 3, 2], 2)?.as_tensor().clone();
        let ones = Tensor::ones((1, 3), DType::F64, &d)?;
        let (rep, a) = att.forward(&h, None, Some(&p), &ones)?;
        let s: f64 = a.sum_all()?.to_scalar()?;
        assert!((s - 1.0).abs() < 1e-12);
        let gh = input(&[1, 2, 4], 7)?.as_tensor().affine(1e3, 0.0)?;
        let gp = input(&[1, 2, 2], 8)?.as_tensor().affine(1e3, 0.0)?;
        let mask = Tensor::cat(&[&ones, &Tensor::zeros((1, 2), DType::F64, &d)?], 1)?;
        let (rep2, a2) = att.forward(
            &Tensor::cat(&[&h, &gh], 1)?,
            None,
            Some(&Tensor::cat(&[&p, &gp], 1)?),
            &mask,
        )?;
        let (r1, r2) = (rep.to_vec2::<f64>()?, rep2.to_vec2::<f64>()?);
        for (x, y) in r1[0].iter().zip(&r2[0]) {
            assert!((x - y).abs() < 1e-12);
        }
        assert_eq!(a2.to_vec2::<f64>()?[0][3..], [0.0, 0.0]);
        Ok(())
    }
}
