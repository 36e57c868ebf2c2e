//! The property-gated LSTM of DUPN: the behaviour property decides how much a behaviour counts
//! (it drives the input, forget and output gates); only the item is content (the cell
//! candidate never sees the property).
//!
//! ```text
//! i_t = sigmoid(W_ei e_t + W_pi p_t + W_hi h_(t-1) + b_i)
//! f_t = sigmoid(W_ef e_t + W_pf p_t + W_hf h_(t-1) + b_f)
//! o_t = sigmoid(W_eo e_t + W_po p_t + W_ho h_(t-1) + b_o)
//! c_t = f_t * c_(t-1) + i_t * tanh(W_ec e_t + W_hc h_(t-1) + b_c)
//! h_t = o_t * tanh(c_t)
//! ```
//!
//! Without a property input (`property = 0`) it is a standard LSTM over the item part (the
//! DUPN-nobp and DUPN-bpatt ablations).

use candle_core::{Result, Tensor, Var};
use rec_nn::init::{Init, VarStore, join};
use rec_nn::layers::split_steps;

/// See the [module documentation](self).
///
/// - Batched and masked: inputs `[n, T, .]`, mask `[n, T]` (1 valid, 0 padding). At a masked
///   step the state is carried over unchanged, so padding (anywhere) never changes a result.
/// - The input projections of every step (item and property parts) are one matmul; the loop
///   over time does the recurrent matmul and the gate arithmetic only.
/// - Gates are stored in the order input, forget, output, cell (the three sigmoid gates are
///   contiguous). Weights `U(-1/sqrt(h), 1/sqrt(h))`; biases zero except the forget gate's,
///   which starts at 1.
///
/// Variables: `{prefix}.w_e` `[4h, item]`, `{prefix}.w_p` `[3h, property]` (absent without a
/// property), `{prefix}.w_hh` `[4h, h]`, `{prefix}.bias` `[4h]`.
pub struct PropertyGatedLstm {
    w_e: Var,
    w_p: Option<Var>,
    w_hh: Var,
    bias: Var,
    hidden: usize,
}

/// Hidden states of a [`PropertyGatedLstm`] pass.
pub struct GatedLstmOutput {
    /// Hidden state after every step, `[n, T, h]` (at a padded step: the state carried over).
    pub outputs: Tensor,
    /// Hidden state after the last valid step, `[n, h]` (zeros for an empty sequence).
    pub last: Tensor,
}

impl PropertyGatedLstm {
    /// A layer from item width `item` and property width `property` (0 = no property) to
    /// hidden width `hidden`.
    pub fn new(
        vs: &mut VarStore,
        prefix: &str,
        item: usize,
        property: usize,
        hidden: usize,
    ) -> Result<Self> {
        if item == 0 || hidden == 0 {
            candle_core::bail!("gated LSTM `{prefix}`: item and hidden widths must be positive");
        }
        let a = 1.0 / (hidden as f64).sqrt();
        let u = Init::Uniform { lo: -a, hi: a };
        let w_e = vs.var(&join(prefix, "w_e"), (4 * hidden, item), u)?;
        let w_p = if property > 0 {
            Some(vs.var(&join(prefix, "w_p"), (3 * hidden, property), u)?)
        } else {
            None
        };
        let w_hh = vs.var(&join(prefix, "w_hh"), (4 * hidden, hidden), u)?;
        let bias = vs.var(&join(prefix, "bias"), 4 * hidden, Init::Zeros)?;
        let mut b = vec![0f64; 4 * hidden];
        b[hidden..2 * hidden].fill(1.0);
        bias.set(&Tensor::from_vec(b, 4 * hidden, vs.device())?.to_dtype(vs.dtype())?)?;
        Ok(Self {
            w_e,
            w_p,
            w_hh,
            bias,
            hidden,
        })
    }

    /// Hidden width.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Property width (0 when the gates see no property).
    pub fn property_width(&self) -> usize {
        self.w_p.as_ref().map_or(0, |w| w.dims()[1])
    }

    /// The weight applied to `[e_t; p_t]`, `[4h, item + property]`: the property columns of
    /// the cell-candidate rows are structurally zero (a constant, not a parameter).
    fn input_weight(&self) -> Result<Tensor> {
        let Some(w_p) = &self.w_p else {
            return Ok(self.w_e.as_tensor().clone());
        };
        let h = self.hidden;
        let w_p = w_p.as_tensor();
        let zeros = Tensor::zeros((h, w_p.dim(1)?), w_p.dtype(), w_p.device())?;
        let w_p4 = Tensor::cat(&[w_p, &zeros], 0)?;
        Tensor::cat(&[self.w_e.as_tensor(), &w_p4], 1)
    }

    /// Runs over the item part `e: [n, T, item]` and the property part `p: [n, T, property]`
    /// (required exactly when the layer has a property width) with `mask: [n, T]`.
    pub fn forward(
        &self,
        e: &Tensor,
        p: Option<&Tensor>,
        mask: &Tensor,
    ) -> Result<GatedLstmOutput> {
        let (n, t, item) = e.dims3()?;
        let h = self.hidden;
        if item != self.w_e.dims()[1] {
            candle_core::bail!(
                "gated LSTM expects item width {}, got {item}",
                self.w_e.dims()[1]
            );
        }
        if mask.dims() != [n, t] {
            candle_core::bail!(
                "gated LSTM mask has shape {:?}, expected [{n}, {t}]",
                mask.dims()
            );
        }
        let x = match (p, &self.w_p) {
            (Some(p), Some(w)) => {
                if p.dims() != [n, t, w.dims()[1]] {
                    candle_core::bail!(
                        "gated LSTM property has shape {:?}, expected [{n}, {t}, {}]",
                        p.dims(),
                        w.dims()[1]
                    );
                }
                Tensor::cat(&[e, p], 2)?
            }
            (None, None) => e.clone(),
            (Some(_), None) => candle_core::bail!("this gated LSTM has no property input"),
            (None, Some(_)) => candle_core::bail!("this gated LSTM needs the property input"),
        };
        let width = x.dim(2)?;
        let mask = mask.to_dtype(e.dtype())?;
        // All input projections at once, time-major so that each step is a contiguous slice.
        let xt = x.transpose(0, 1)?.contiguous()?.reshape((t * n, width))?;
        let proj = xt
            .matmul(&self.input_weight()?.t()?)?
            .broadcast_add(self.bias.as_tensor())?
            .reshape((t, n, 4 * h))?;
        let steps = split_steps(&proj)?;
        let w_hh_t = self.w_hh.t()?;
        let mut hs = Tensor::zeros((n, h), e.dtype(), e.device())?;
        let mut c = hs.clone();
        let mut outs = Vec::with_capacity(t);
        for (s, xp) in steps.iter().enumerate() {
            let gates = (xp + hs.matmul(&w_hh_t)?)?;
            let sig = candle_nn::ops::sigmoid(&gates.narrow(1, 0, 3 * h)?)?;
            let i = sig.narrow(1, 0, h)?;
            let f = sig.narrow(1, h, h)?;
            let o = sig.narrow(1, 2 * h, h)?;
            let g = gates.narrow(1, 3 * h, h)?.tanh()?;
            let c_new = ((f * &c)? + (i * g)?)?;
            let h_new = (o * c_new.tanh()?)?;
            let m = mask.narrow(1, s, 1)?;
            c = (&c + (c_new - &c)?.broadcast_mul(&m)?)?;
            hs = (&hs + (h_new - &hs)?.broadcast_mul(&m)?)?;
            outs.push(hs.clone());
        }
        let outputs = if outs.is_empty() {
            Tensor::zeros((n, 0, h), e.dtype(), e.device())?
        } else {
            Tensor::stack(&outs, 1)?
        };
        Ok(GatedLstmOutput { outputs, last: hs })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_layer, input, store};
    use candle_core::{DType, Device};
    use rec_nn::gradcheck::weighted_sum;

    fn mask2() -> Result<Tensor> {
        Tensor::new(
            &[[1f64, 1.0, 1.0, 1.0, 1.0], [1.0, 1.0, 1.0, 0.0, 0.0]],
            &Device::Cpu,
        )
    }

    #[test]
    fn finite_differences_match_and_every_parameter_learns() -> Result<()> {
        let mut vs = store();
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 3, 2, 4)?;
        let e = input(&[2, 5, 3], 1)?;
        let p = input(&[2, 5, 2], 2)?;
        let mask = mask2()?;
        check_layer(&vs, &[("e", &e), ("p", &p)], || {
            let o = lstm.forward(e.as_tensor(), Some(p.as_tensor()), &mask)?;
            weighted_sum(&o.outputs, 1)? + weighted_sum(&o.last, 2)?
        })
    }

    #[test]
    fn without_property_it_is_an_lstm_with_gradients() -> Result<()> {
        let mut vs = store();
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 3, 0, 4)?;
        assert_eq!(lstm.property_width(), 0);
        let e = input(&[2, 5, 3], 1)?;
        let mask = mask2()?;
        check_layer(&vs, &[("e", &e)], || {
            weighted_sum(&lstm.forward(e.as_tensor(), None, &mask)?.outputs, 3)
        })?;
        assert!(
            lstm.forward(e.as_tensor(), Some(e.as_tensor()), &mask)
                .is_err()
        );
        Ok(())
    }

    /// A scalar reference of one step, written from the paper's equations.
    #[test]
    fn matches_the_paper_equations_on_two_steps() -> Result<()> {
        let mut vs = store();
        let (h, de, dp) = (2usize, 3usize, 2usize);
        let lstm = PropertyGatedLstm::new(&mut vs, "g", de, dp, h)?;
        // Non-trivial biases.
        lstm.bias.set(&input(&[4 * h], 9)?.as_tensor().clone())?;
        let e = input(&[1, 2, de], 4)?;
        let p = input(&[1, 2, dp], 5)?;
        let mask = Tensor::ones((1, 2), DType::F64, &Device::Cpu)?;
        let got = lstm.forward(e.as_tensor(), Some(p.as_tensor()), &mask)?;
        let we = lstm.w_e.as_tensor().to_vec2::<f64>()?;
        let wp = lstm.w_p.as_ref().unwrap().as_tensor().to_vec2::<f64>()?;
        let wh = lstm.w_hh.as_tensor().to_vec2::<f64>()?;
        let b = lstm.bias.as_tensor().to_vec1::<f64>()?;
        let ev = e.as_tensor().to_vec3::<f64>()?[0].clone();
        let pv = p.as_tensor().to_vec3::<f64>()?[0].clone();
        let sig = |v: f64| 1.0 / (1.0 + (-v).exp());
        let dot = |w: &[f64], x: &[f64]| w.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        let (mut hp, mut cp) = (vec![0.0; h], vec![0.0; h]);
        for t in 0..2 {
            let mut hn = vec![0.0; h];
            let mut cn = vec![0.0; h];
            for k in 0..h {
                // Rows: gate g of unit k is row g*h + k; property rows skip the cell gate.
                let pre = |g: usize, with_p: bool| {
                    let r = g * h + k;
                    let mut v = dot(&we[r], &ev[t]) + dot(&wh[r], &hp) + b[r];
                    if with_p {
                        v += dot(&wp[g * h + k], &pv[t]);
                    }
                    v
                };
                let i = sig(pre(0, true));
                let f = sig(pre(1, true));
                let o = sig(pre(2, true));
                let g = pre(3, false).tanh();
                cn[k] = f * cp[k] + i * g;
                hn[k] = o * cn[k].tanh();
            }
            hp = hn;
            cp = cn;
            let out = got.outputs.to_vec3::<f64>()?[0][t].clone();
            for k in 0..h {
                assert!((out[k] - hp[k]).abs() < 1e-12, "step {t} unit {k}");
            }
        }
        Ok(())
    }

    #[test]
    fn property_never_enters_the_cell_candidate() -> Result<()> {
        // With the sigmoid gates saturated open (huge biases), the cell is the sum of the
        // candidates, which must not depend on the property.
        let mut vs = store();
        let h = 3;
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 2, 2, h)?;
        let mut b = vec![40f64; 4 * h];
        b[3 * h..].fill(0.0);
        lstm.bias.set(&Tensor::from_vec(b, 4 * h, &Device::Cpu)?)?;
        let e = input(&[1, 3, 2], 1)?;
        let mask = Tensor::ones((1, 3), DType::F64, &Device::Cpu)?;
        let a = lstm.forward(
            e.as_tensor(),
            Some(input(&[1, 3, 2], 2)?.as_tensor()),
            &mask,
        )?;
        let b = lstm.forward(
            e.as_tensor(),
            Some(input(&[1, 3, 2], 3)?.as_tensor()),
            &mask,
        )?;
        let (a, b) = (a.outputs.to_vec3::<f64>()?, b.outputs.to_vec3::<f64>()?);
        for (x, y) in a[0].iter().flatten().zip(b[0].iter().flatten()) {
            assert!((x - y).abs() < 1e-9);
        }
        Ok(())
    }

    #[test]
    fn padding_never_changes_a_result() -> Result<()> {
        let d = Device::Cpu;
        let mut vs = store();
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 3, 2, 4)?;
        let e = input(&[2, 3, 3], 1)?;
        let p = input(&[2, 3, 2], 2)?;
        let ones = Tensor::ones((2, 3), DType::F64, &d)?;
        let short = lstm.forward(e.as_tensor(), Some(p.as_tensor()), &ones)?;
        // Garbage (large values) at padded steps, at the end and in the middle.
        let ge = input(&[2, 4, 3], 5)?.as_tensor().affine(50.0, 0.0)?;
        let gp = input(&[2, 4, 2], 6)?.as_tensor().affine(50.0, 0.0)?;
        let zeros = Tensor::zeros((2, 4), DType::F64, &d)?;
        let long = lstm.forward(
            &Tensor::cat(&[e.as_tensor(), &ge], 1)?,
            Some(&Tensor::cat(&[p.as_tensor(), &gp], 1)?),
            &Tensor::cat(&[&ones, &zeros], 1)?,
        )?;
        assert_eq!(short.last.to_vec2::<f64>()?, long.last.to_vec2::<f64>()?);
        assert_eq!(
            short.outputs.to_vec3::<f64>()?,
            long.outputs.narrow(1, 0, 3)?.to_vec3::<f64>()?
        );
        let mid_e = Tensor::cat(
            &[
                &e.as_tensor().narrow(1, 0, 1)?,
                &ge,
                &e.as_tensor().narrow(1, 1, 2)?,
            ],
            1,
        )?;
        let mid_p = Tensor::cat(
            &[
                &p.as_tensor().narrow(1, 0, 1)?,
                &gp,
                &p.as_tensor().narrow(1, 1, 2)?,
            ],
            1,
        )?;
        let mid_m = Tensor::cat(&[&ones.narrow(1, 0, 1)?, &zeros, &ones.narrow(1, 1, 2)?], 1)?;
        let mid = lstm.forward(&mid_e, Some(&mid_p), &mid_m)?;
        let (a, b) = (short.last.to_vec2::<f64>()?, mid.last.to_vec2::<f64>()?);
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-12);
        }
        Ok(())
    }
}
