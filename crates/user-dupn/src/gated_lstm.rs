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

use candle_core::{DType, Result, Tensor, Var};
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
    ///
    /// On the CPU the gate arithmetic of a step is one fused operation with a hand-written
    /// backward pass ([`fused`]); elsewhere it is composed of candle operations
    /// ([`forward_unfused`](Self::forward_unfused)). Both compute the same function.
    pub fn forward(
        &self,
        e: &Tensor,
        p: Option<&Tensor>,
        mask: &Tensor,
    ) -> Result<GatedLstmOutput> {
        if e.device().is_cpu() && matches!(e.dtype(), DType::F32 | DType::F64) {
            self.run(e, p, mask, true)
        } else {
            self.run(e, p, mask, false)
        }
    }

    /// [`forward`](Self::forward) with the gate arithmetic composed of candle operations (the
    /// reference the fused cell is tested against; used on devices without the fused cell).
    pub fn forward_unfused(
        &self,
        e: &Tensor,
        p: Option<&Tensor>,
        mask: &Tensor,
    ) -> Result<GatedLstmOutput> {
        self.run(e, p, mask, false)
    }

    /// The input projections of every step, time-major: `[T, n, 4h]`.
    fn projections(&self, e: &Tensor, p: Option<&Tensor>, mask: &Tensor) -> Result<Tensor> {
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
        // All input projections at once, time-major so that each step is a contiguous slice.
        let xt = x.transpose(0, 1)?.contiguous()?.reshape((t * n, width))?;
        xt.matmul(&self.input_weight()?.t()?)?
            .broadcast_add(self.bias.as_tensor())?
            .reshape((t, n, 4 * h))
    }

    fn run(
        &self,
        e: &Tensor,
        p: Option<&Tensor>,
        mask: &Tensor,
        fused: bool,
    ) -> Result<GatedLstmOutput> {
        let (n, t, _) = e.dims3()?;
        let h = self.hidden;
        let proj = self.projections(e, p, mask)?;
        let mask = mask.to_dtype(e.dtype())?;
        if t == 0 {
            return Ok(GatedLstmOutput {
                outputs: Tensor::zeros((n, 0, h), e.dtype(), e.device())?,
                last: Tensor::zeros((n, h), e.dtype(), e.device())?,
            });
        }
        if fused {
            let mask_t = mask.t()?.contiguous()?;
            let hidden =
                proj.apply_op3(self.w_hh.as_tensor(), &mask_t, fused::Sequence { t, n, h })?;
            return Ok(GatedLstmOutput {
                last: hidden.get(t - 1)?,
                outputs: hidden.transpose(0, 1)?.contiguous()?,
            });
        }
        let steps = split_steps(&proj)?;
        let w_hh_t = self.w_hh.t()?;
        let mut outs = Vec::with_capacity(t);
        let mut hs = Tensor::zeros((n, h), e.dtype(), e.device())?;
        let mut c = hs.clone();
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
        Ok(GatedLstmOutput {
            outputs: stack_steps(outs, n, h, e)?,
            last: hs,
        })
    }
}

fn stack_steps(outs: Vec<Tensor>, n: usize, h: usize, like: &Tensor) -> Result<Tensor> {
    if outs.is_empty() {
        Tensor::zeros((n, 0, h), like.dtype(), like.device())
    } else {
        Tensor::stack(&outs, 1)
    }
}

pub mod fused {
    //! The whole recurrence as one CPU operation with a hand-written backward pass
    //! (backpropagation through time).
    //!
    //! Composed of candle operations, a step costs a dozen element-wise operations (each
    //! allocating its output), and the backward pass of slicing the precomputed projections step
    //! by step pads every slice's gradient; on a CPU that dominates the cost of a small
    //! recurrent model. Here the forward pass loops over time with one matrix product per step
    //! and scalar gate arithmetic; the backward pass recomputes the gates, walks back in time
    //! (one product per step), and gets the recurrent weight's gradient from one product over all
    //! steps.
    //!
    //! Inputs: the projections `x_t W^T + b` of every step, time-major `[T, n, 4h]` (gates in the
    //! order input, forget, output, cell), the recurrent weight `W_hh: [4h, h]` and the mask
    //! `[T, n]` (0 = padding: the row keeps its state); output: the hidden states `[T, n, h]`.
    //! Sigmoid and tanh are computed from `exp` (`tanh(x) = 2 sigmoid(2x) - 1`).

    use candle_core::{
        CpuStorage, CustomOp3, DType, Device, Layout, Result, Shape, Tensor, WithDType,
    };

    /// The fused recurrence over `t` steps of `n` rows of width `h`.
    #[derive(Debug, Clone, Copy)]
    pub struct Sequence {
        /// Steps.
        pub t: usize,
        /// Rows.
        pub n: usize,
        /// Hidden width.
        pub h: usize,
    }

    trait Real:
        WithDType
        + std::ops::Add<Output = Self>
        + std::ops::Sub<Output = Self>
        + std::ops::Mul<Output = Self>
        + std::ops::Div<Output = Self>
        + std::ops::Neg<Output = Self>
    {
        const ZERO: Self;
        const ONE: Self;
        const TWO: Self;
        fn exp(self) -> Self;
    }

    impl Real for f32 {
        const ZERO: Self = 0.0;
        const ONE: Self = 1.0;
        const TWO: Self = 2.0;
        fn exp(self) -> Self {
            f32::exp(self)
        }
    }

    impl Real for f64 {
        const ZERO: Self = 0.0;
        const ONE: Self = 1.0;
        const TWO: Self = 2.0;
        fn exp(self) -> Self {
            f64::exp(self)
        }
    }

    #[inline]
    fn sigmoid<T: Real>(x: T) -> T {
        T::ONE / (T::ONE + (-x).exp())
    }

    #[inline]
    fn tanh<T: Real>(x: T) -> T {
        T::TWO * sigmoid(T::TWO * x) - T::ONE
    }

    /// `a [rows, k] x b^T` where `b` is `[m, k]`: `[rows, m]`, through candle's matmul.
    fn matmul_t<T: Real>(a: &[T], rows: usize, b: &Tensor) -> Result<Vec<T>> {
        let k = b.dim(1)?;
        let a = Tensor::from_slice(a, (rows, k), &Device::Cpu)?;
        a.matmul(&b.t()?)?.flatten_all()?.to_vec1::<T>()
    }

    /// `a [rows, k] x b` where `b` is `[k, m]`.
    fn matmul<T: Real>(a: &[T], rows: usize, b: &Tensor) -> Result<Vec<T>> {
        let k = b.dim(0)?;
        let a = Tensor::from_slice(a, (rows, k), &Device::Cpu)?;
        a.matmul(b)?.flatten_all()?.to_vec1::<T>()
    }

    /// What the backward pass needs from the forward pass.
    struct Trace<T> {
        /// Hidden states `[T, n, h]`.
        hidden: Vec<T>,
        /// Cell states `[T, n, h]` (only when traced).
        cells: Vec<T>,
        /// Activated gates `[T, n, 4h]`: sigmoid(i), sigmoid(f), sigmoid(o), tanh(g) (only when
        /// traced).
        acts: Vec<T>,
    }

    fn run_forward<T: Real>(
        proj: &[T],
        w_hh: &Tensor,
        mask: &[T],
        (steps, n, h): (usize, usize, usize),
        trace: bool,
    ) -> Result<Trace<T>> {
        let mut hidden = vec![T::ZERO; steps * n * h];
        let mut cells = if trace {
            vec![T::ZERO; steps * n * h]
        } else {
            Vec::new()
        };
        let mut acts = if trace {
            vec![T::ZERO; steps * n * 4 * h]
        } else {
            Vec::new()
        };
        let mut h_prev = vec![T::ZERO; n * h];
        let mut c_prev = vec![T::ZERO; n * h];
        let mut c_new = vec![T::ZERO; n * h];
        for s in 0..steps {
            let rec = matmul_t(&h_prev, n, w_hh)?;
            let out = &mut hidden[s * n * h..(s + 1) * n * h];
            for r in 0..n {
                let row = r * h..(r + 1) * h;
                if mask[s * n + r] == T::ZERO {
                    out[row.clone()].copy_from_slice(&h_prev[row.clone()]);
                    c_new[row.clone()].copy_from_slice(&c_prev[row]);
                    continue;
                }
                let p = &proj[(s * n + r) * 4 * h..(s * n + r + 1) * 4 * h];
                let q = &rec[r * 4 * h..(r + 1) * 4 * h];
                for k in 0..h {
                    let i = sigmoid(p[k] + q[k]);
                    let f = sigmoid(p[h + k] + q[h + k]);
                    let o = sigmoid(p[2 * h + k] + q[2 * h + k]);
                    let g = tanh(p[3 * h + k] + q[3 * h + k]);
                    let c = f * c_prev[r * h + k] + i * g;
                    c_new[r * h + k] = c;
                    out[r * h + k] = o * tanh(c);
                    if trace {
                        let a = &mut acts[(s * n + r) * 4 * h..(s * n + r + 1) * 4 * h];
                        a[k] = i;
                        a[h + k] = f;
                        a[2 * h + k] = o;
                        a[3 * h + k] = g;
                    }
                }
            }
            h_prev.copy_from_slice(out);
            std::mem::swap(&mut c_prev, &mut c_new);
            if trace {
                cells[s * n * h..(s + 1) * n * h].copy_from_slice(&c_prev);
            }
        }
        Ok(Trace {
            hidden,
            cells,
            acts,
        })
    }

    /// Gradients of the projections `[T, n, 4h]` and of `W_hh` `[4h, h]` given the gradient
    /// of the hidden states `grad: [T, n, h]`.
    fn run_backward<T: Real>(
        proj: &[T],
        w_hh: &Tensor,
        mask: &[T],
        grad: &[T],
        dims: (usize, usize, usize),
    ) -> Result<(Vec<T>, Tensor)> {
        let (steps, n, h) = dims;
        let tr = run_forward(proj, w_hh, mask, dims, true)?;
        let mut d_proj = vec![T::ZERO; steps * n * 4 * h];
        let mut dh_next = vec![T::ZERO; n * h];
        let mut dc_next = vec![T::ZERO; n * h];
        let zeros = vec![T::ZERO; n * h];
        for s in (0..steps).rev() {
            let c_prev = if s == 0 {
                &zeros[..]
            } else {
                &tr.cells[(s - 1) * n * h..s * n * h]
            };
            let cells = &tr.cells[s * n * h..(s + 1) * n * h];
            let g_out = &grad[s * n * h..(s + 1) * n * h];
            let mut pass = vec![T::ZERO; n * h];
            for r in 0..n {
                let m = mask[s * n + r] != T::ZERO;
                let d = &mut d_proj[(s * n + r) * 4 * h..(s * n + r + 1) * 4 * h];
                let a = &tr.acts[(s * n + r) * 4 * h..(s * n + r + 1) * 4 * h];
                for k in 0..h {
                    let j = r * h + k;
                    let dh = g_out[j] + dh_next[j];
                    if !m {
                        // The state was carried over: its gradient goes straight back.
                        pass[j] = dh;
                        continue;
                    }
                    let (i, f, o, g) = (a[k], a[h + k], a[2 * h + k], a[3 * h + k]);
                    let tc = tanh(cells[j]);
                    let dc = dc_next[j] + dh * o * (T::ONE - tc * tc);
                    d[k] = dc * g * i * (T::ONE - i);
                    d[h + k] = dc * c_prev[j] * f * (T::ONE - f);
                    d[2 * h + k] = dh * tc * o * (T::ONE - o);
                    d[3 * h + k] = dc * i * (T::ONE - g * g);
                    dc_next[j] = dc * f;
                }
            }
            // dh_(t-1) = d_gates W_hh for rows that ran the cell, the carried gradient else.
            let back = matmul(&d_proj[s * n * 4 * h..(s + 1) * n * 4 * h], n, w_hh)?;
            for j in 0..n * h {
                dh_next[j] = back[j] + pass[j];
            }
        }
        // dW_hh = sum_t d_gates_t^T h_(t-1), one product over every step.
        let mut h_prev = vec![T::ZERO; steps * n * h];
        if steps > 1 {
            h_prev[n * h..].copy_from_slice(&tr.hidden[..(steps - 1) * n * h]);
        }
        let dg = Tensor::from_vec(d_proj.clone(), (steps * n, 4 * h), &Device::Cpu)?;
        let hp = Tensor::from_vec(h_prev, (steps * n, h), &Device::Cpu)?;
        let d_w = dg.t()?.matmul(&hp)?;
        Ok((d_proj, d_w))
    }

    fn contiguous<'a, T>(v: &'a [T], l: &Layout, what: &str) -> Result<&'a [T]> {
        match l.contiguous_offsets() {
            Some((a, b)) => Ok(&v[a..b]),
            None => candle_core::bail!("fused LSTM: the {what} must be contiguous"),
        }
    }

    impl Sequence {
        fn dims(&self) -> (usize, usize, usize) {
            (self.t, self.n, self.h)
        }

        fn check(&self, p: &[usize], w: &[usize], m: &[usize]) -> Result<()> {
            let (t, n, h) = self.dims();
            if p != [t, n, 4 * h] || w != [4 * h, h] || m != [t, n] {
                candle_core::bail!(
                    "fused LSTM: projections {p:?}, weight {w:?}, mask {m:?} for T = {t}, n = {n}, h = {h}"
                );
            }
            Ok(())
        }

        fn fwd<T: Real>(&self, p: &[T], w: &[T], m: &[T]) -> Result<Vec<T>> {
            let w = Tensor::from_slice(w, (4 * self.h, self.h), &Device::Cpu)?;
            Ok(run_forward(p, &w, m, self.dims(), false)?.hidden)
        }
    }

    impl CustomOp3 for Sequence {
        fn name(&self) -> &'static str {
            "fused-lstm"
        }

        fn cpu_fwd(
            &self,
            s1: &CpuStorage,
            l1: &Layout,
            s2: &CpuStorage,
            l2: &Layout,
            s3: &CpuStorage,
            l3: &Layout,
        ) -> Result<(CpuStorage, Shape)> {
            self.check(l1.dims(), l2.dims(), l3.dims())?;
            let shape = Shape::from((self.t, self.n, self.h));
            match (s1, s2, s3) {
                (CpuStorage::F32(p), CpuStorage::F32(w), CpuStorage::F32(m)) => {
                    let out = self.fwd(
                        contiguous(p, l1, "projections")?,
                        contiguous(w, l2, "weight")?,
                        contiguous(m, l3, "mask")?,
                    )?;
                    Ok((CpuStorage::F32(out), shape))
                }
                (CpuStorage::F64(p), CpuStorage::F64(w), CpuStorage::F64(m)) => {
                    let out = self.fwd(
                        contiguous(p, l1, "projections")?,
                        contiguous(w, l2, "weight")?,
                        contiguous(m, l3, "mask")?,
                    )?;
                    Ok((CpuStorage::F64(out), shape))
                }
                _ => candle_core::bail!("fused LSTM: inputs must all be f32 or all f64"),
            }
        }

        fn bwd(
            &self,
            proj: &Tensor,
            w_hh: &Tensor,
            mask: &Tensor,
            _res: &Tensor,
            grad: &Tensor,
        ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
            let (t, n, h) = self.dims();
            let dev = proj.device();
            let w = w_hh.to_device(&Device::Cpu)?.contiguous()?;
            macro_rules! host {
                ($ty:ty) => {{
                    let v = |x: &Tensor| x.to_device(&Device::Cpu)?.flatten_all()?.to_vec1::<$ty>();
                    let (dp, dw) = run_backward(&v(proj)?, &w, &v(mask)?, &v(grad)?, self.dims())?;
                    (
                        Tensor::from_vec(dp, (t, n, 4 * h), dev)?,
                        dw.to_device(dev)?,
                    )
                }};
            }
            let (dp, dw) = match proj.dtype() {
                DType::F32 => host!(f32),
                DType::F64 => host!(f64),
                d => candle_core::bail!("fused LSTM: unsupported dtype {d:?}"),
            };
            Ok((Some(dp), Some(dw), None))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_util::{check_layer, input, store};
    use candle_core::{DType, Device};
    use rec_nn::gradcheck::{GradCheck, check_gradients, weighted_sum};

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

    /// Rows of every kind: no padding, padding at the end, no valid step at all, and gaps
    /// (padding first, in the middle, and a valid step after the gaps).
    fn mixed_mask() -> Result<Tensor> {
        Tensor::new(
            &[
                [1f64, 1.0, 1.0, 1.0, 1.0],
                [1.0, 1.0, 1.0, 0.0, 0.0],
                [0.0, 0.0, 0.0, 0.0, 0.0],
                [0.0, 1.0, 0.0, 0.0, 1.0],
                [1.0, 0.0, 1.0, 1.0, 0.0],
            ],
            &Device::Cpu,
        )
    }

    #[test]
    fn finite_differences_match_with_an_empty_row_and_gaps() -> Result<()> {
        let mut vs = store();
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 3, 2, 4)?;
        let e = input(&[5, 5, 3], 1)?;
        let p = input(&[5, 5, 2], 2)?;
        let mask = mixed_mask()?;
        let mut params = vs.vars();
        params.push(("e".into(), e.clone()));
        params.push(("p".into(), p.clone()));
        // Every entry: those at padded steps and in the empty row included.
        let cfg = GradCheck {
            max_entries: usize::MAX,
            ..GradCheck::default()
        };
        for fused in [true, false] {
            let f = || {
                let o = if fused {
                    lstm.forward(e.as_tensor(), Some(p.as_tensor()), &mask)?
                } else {
                    lstm.forward_unfused(e.as_tensor(), Some(p.as_tensor()), &mask)?
                };
                weighted_sum(&o.outputs, 1)? + weighted_sum(&o.last, 2)?
            };
            let r = check_gradients(&params, f, &cfg)?;
            assert_eq!(
                r.checked,
                16 * 3 + 12 * 2 + 16 * 4 + 16 + 75 + 50,
                "fused {fused}"
            );
            // The inputs of padded steps get exactly zero gradient.
            let grads = f()?.backward()?;
            let m = mask.to_vec2::<f64>()?;
            for (name, v) in [("e", &e), ("p", &p)] {
                let g = grads.get(v.as_tensor()).unwrap().to_vec3::<f64>()?;
                for (r, row) in g.iter().enumerate() {
                    for (t, step) in row.iter().enumerate() {
                        let zero = step.iter().all(|&x| x == 0.0);
                        assert_eq!(
                            zero,
                            m[r][t] == 0.0,
                            "fused {fused}: gradient of `{name}` row {r} step {t}: {step:?}"
                        );
                    }
                }
            }
        }
        Ok(())
    }

    #[test]
    fn padding_never_changes_a_valid_rows_outputs() -> Result<()> {
        // Each row of a batch with mixed padding (none, at the end, everywhere, in gaps), with
        // garbage at its padded steps, against the same row alone with its valid steps only:
        // the output at a valid step is the alone output, at a padded step the state carried
        // over (zeros before the first valid step), and `last` the alone `last` (zeros for a
        // row without a valid step).
        let d = Device::Cpu;
        let mut vs = store();
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 3, 2, 4)?;
        let h = 4;
        let mask = mixed_mask()?;
        let m = mask.to_vec2::<f64>()?;
        let clean_e = input(&[5, 5, 3], 1)?;
        let clean_p = input(&[5, 5, 2], 2)?;
        // Large garbage where the mask is 0.
        let pad = (1.0 - &mask)?.unsqueeze(2)?;
        let valid = mask.unsqueeze(2)?;
        let garbage = |x: &Tensor, seed: u64| -> Result<Tensor> {
            let g = input(x.dims(), seed)?.as_tensor().affine(50.0, 0.0)?;
            x.broadcast_mul(&valid)? + g.broadcast_mul(&pad)?
        };
        let e = garbage(clean_e.as_tensor(), 5)?;
        let p = garbage(clean_p.as_tensor(), 6)?;
        for fused in [true, false] {
            let run = |e: &Tensor, p: &Tensor, mask: &Tensor| {
                if fused {
                    lstm.forward(e, Some(p), mask)
                } else {
                    lstm.forward_unfused(e, Some(p), mask)
                }
            };
            let batch = run(&e, &p, &mask)?;
            let outputs = batch.outputs.to_vec3::<f64>()?;
            let last = batch.last.to_vec2::<f64>()?;
            for (r, mrow) in m.iter().enumerate() {
                let steps: Vec<u32> = (0..5u32).filter(|&t| mrow[t as usize] == 1.0).collect();
                let idx = Tensor::new(steps.as_slice(), &d)?;
                let pick = |x: &Tensor| x.get(r)?.index_select(&idx, 0)?.unsqueeze(0);
                let alone = run(
                    &pick(clean_e.as_tensor())?,
                    &pick(clean_p.as_tensor())?,
                    &Tensor::ones((1, steps.len()), DType::F64, &d)?,
                )?;
                let a_out = alone.outputs.to_vec3::<f64>()?.remove(0);
                let a_last = alone.last.to_vec2::<f64>()?.remove(0);
                let close = |x: &[f64], y: &[f64], what: &str| {
                    assert_eq!(x.len(), y.len());
                    for (u, w) in x.iter().zip(y) {
                        assert!(
                            (u - w).abs() < 1e-12,
                            "fused {fused} row {r} {what}: {x:?} vs {y:?}"
                        );
                    }
                };
                let mut carried = vec![0f64; h];
                let mut k = 0;
                for t in 0..5 {
                    if mrow[t] == 1.0 {
                        carried = a_out[k].clone();
                        k += 1;
                    }
                    close(&outputs[r][t], &carried, &format!("step {t}"));
                }
                close(&last[r], &a_last, "last");
                if steps.is_empty() {
                    assert!(last[r].iter().all(|&x| x == 0.0));
                } else {
                    assert!(last[r].iter().any(|&x| x != 0.0));
                }
            }
        }
        Ok(())
    }

    #[test]
    fn fused_cell_equals_the_composed_operations_with_gradients() -> Result<()> {
        let mut vs = store();
        let lstm = PropertyGatedLstm::new(&mut vs, "g", 3, 2, 4)?;
        let e = input(&[2, 5, 3], 1)?;
        let p = input(&[2, 5, 2], 2)?;
        let mask = mask2()?;
        let mut params = vs.vars();
        params.push(("e".into(), e.clone()));
        params.push(("p".into(), p.clone()));
        let loss = |o: GatedLstmOutput| weighted_sum(&o.outputs, 1)? + weighted_sum(&o.last, 2)?;
        let a = loss(lstm.forward(e.as_tensor(), Some(p.as_tensor()), &mask)?)?;
        let b = loss(lstm.forward_unfused(e.as_tensor(), Some(p.as_tensor()), &mask)?)?;
        assert!((a.to_scalar::<f64>()? - b.to_scalar::<f64>()?).abs() < 1e-12);
        let (ga, gb) = (a.backward()?, b.backward()?);
        for (name, v) in &params {
            let x = ga
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f64>()?;
            let y = gb
                .get(v.as_tensor())
                .unwrap()
                .flatten_all()?
                .to_vec1::<f64>()?;
            for (u, w) in x.iter().zip(&y) {
                assert!((u - w).abs() < 1e-10, "{name}: {u} vs {w}");
            }
        }
        Ok(())
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
