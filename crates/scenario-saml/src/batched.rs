//! `M` linear layers run as one batched computation: weights stacked `[M, in, out]`.
//!
//! This is how MMoE's experts and towers and STAR's scenario-specific layers run without a
//! per-sample or per-scenario loop. SAML's branches do not use the shared-input form
//! ([`BatchedLinear::forward_shared`]; its tests' dense reference does): each sample's own
//! branch goes block by block over a batch sorted by scenario ([`crate::routed`]: a loop over
//! the `M` scenarios, one matmul each), which is cheaper once `M > 1`, and the other branches
//! run forward-only on detached inputs.
//! Activations are laid out branch-major, `[M, n, d]`, so a layer is one batched matmul
//! `[M, n, in] x [M, in, out]`; when every branch reads the same input `[n, in]`, the `M`
//! weight matrices are laid side by side and the layer is a single `[n, in] x [in, M * out]`
//! matmul ([`BatchedLinear::forward_shared`]).

use candle_core::{Result, Tensor, Var};

use crate::nn::{Activation, Init, VarStore, join};
use crate::scenario::Routing;

/// A stacked `[M, in, out]` weight, each of the `M` matrices drawn from `init` with the
/// fan-in and fan-out of one `in -> out` layer (not of the stack), from the store's seeded
/// stream for `name`. With `tied`, one matrix is drawn and every branch starts from it.
pub fn stacked_var(
    vs: &mut VarStore,
    name: &str,
    shape: (usize, usize, usize),
    init: Init,
    tied: bool,
) -> Result<Var> {
    let (m, i, o) = shape;
    let var = vs.var(name, shape, Init::Zeros)?;
    let mut rng = vs.rng(name);
    let sampler = init.sampler(i, o)?;
    let values: Vec<f64> = if tied {
        let one: Vec<f64> = (0..i * o).map(|_| sampler.draw(&mut rng)).collect();
        one.iter().copied().cycle().take(m * i * o).collect()
    } else {
        (0..m * i * o).map(|_| sampler.draw(&mut rng)).collect()
    };
    let t = Tensor::from_vec(values, shape, &candle_core::Device::Cpu)?
        .to_dtype(vs.dtype())?
        .to_device(vs.device())?;
    var.set(&t)?;
    Ok(var)
}

/// `M` independent linear layers `y_m = x_m W_m + b_m` with `W: [M, in, out]`, `b: [M, 1, out]`.
/// Variables `{prefix}.weight` and `{prefix}.bias`.
///
/// With a shared factor ([`with_shared_factor`](Self::with_shared_factor), STAR's form) branch
/// `m`'s weight is `W_m * W` (elementwise) and its bias `b_m + b`, with `W: [in, out]` and `b`
/// shared by every branch (variables `{prefix}.shared_weight` and `{prefix}.shared_bias`).
#[derive(Clone)]
pub struct BatchedLinear {
    weight: Var,
    bias: Option<Var>,
    shared: Option<SharedFactor>,
}

/// The shared part of a factored [`BatchedLinear`]: `W: [1, in, out]`, `b: [1, 1, out]`.
#[derive(Clone)]
struct SharedFactor {
    weight: Var,
    bias: Option<Var>,
}

impl BatchedLinear {
    /// `m` layers `in_dim -> out_dim`, weights from `init`, zero biases when `bias`.
    pub fn new(
        vs: &mut VarStore,
        prefix: &str,
        m: usize,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        Self::with_tied_init(vs, prefix, m, in_dim, out_dim, bias, init, false)
    }

    /// Like [`new`](Self::new); with `tied`, every branch starts from the same weights (they
    /// then diverge as each branch learns from its own samples).
    #[allow(clippy::too_many_arguments)]
    pub fn with_tied_init(
        vs: &mut VarStore,
        prefix: &str,
        m: usize,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: Init,
        tied: bool,
    ) -> Result<Self> {
        let weight = stacked_var(
            vs,
            &join(prefix, "weight"),
            (m, in_dim, out_dim),
            init,
            tied,
        )?;
        let bias = if bias {
            Some(vs.var(&join(prefix, "bias"), (m, 1, out_dim), Init::Zeros)?)
        } else {
            None
        };
        Ok(Self {
            weight,
            bias,
            shared: None,
        })
    }

    /// `m` layers factored as STAR's are: branch `m`'s weight is `W_m * W` (elementwise), its
    /// bias `b_m + b`. The shared `W` is drawn from `init`; every `W_m` starts at 1 and every
    /// bias at 0, so the branches start as one layer. `W` and `b` are trained by every
    /// branch's samples, `W_m` and `b_m` by branch `m`'s only.
    pub fn with_shared_factor(
        vs: &mut VarStore,
        prefix: &str,
        m: usize,
        in_dim: usize,
        out_dim: usize,
        bias: bool,
        init: Init,
    ) -> Result<Self> {
        let shared_weight = stacked_var(
            vs,
            &join(prefix, "shared_weight"),
            (1, in_dim, out_dim),
            init,
            false,
        )?;
        let weight = vs.var(&join(prefix, "weight"), (m, in_dim, out_dim), Init::Ones)?;
        let (bias, shared_bias) = if bias {
            (
                Some(vs.var(&join(prefix, "bias"), (m, 1, out_dim), Init::Zeros)?),
                Some(vs.var(&join(prefix, "shared_bias"), (1, 1, out_dim), Init::Zeros)?),
            )
        } else {
            (None, None)
        };
        Ok(Self {
            weight,
            bias,
            shared: Some(SharedFactor {
                weight: shared_weight,
                bias: shared_bias,
            }),
        })
    }

    /// A layer from an existing stacked weight (e.g. STAR's shared-times-specific product).
    pub fn from_parts(weight: Var, bias: Option<Var>) -> Self {
        Self {
            weight,
            bias,
            shared: None,
        }
    }

    /// Every branch's effective weight `[M, in, out]` and bias `[M, 1, out]`: the variables
    /// themselves, or with a shared factor `W_m * W` and `b_m + b`.
    pub fn effective(&self) -> Result<(Tensor, Option<Tensor>)> {
        let (w, b) = (
            self.weight.as_tensor(),
            self.bias.as_ref().map(Var::as_tensor),
        );
        match &self.shared {
            None => Ok((w.clone(), b.cloned())),
            Some(s) => {
                let w = w.broadcast_mul(s.weight.as_tensor())?;
                let b = match (b, &s.bias) {
                    (Some(b), Some(sb)) => Some(b.broadcast_add(sb.as_tensor())?),
                    (b, _) => b.cloned(),
                };
                Ok((w, b))
            }
        }
    }

    /// Number of branches `M`.
    pub fn branches(&self) -> usize {
        self.weight.dims()[0]
    }

    /// Input width.
    pub fn in_dim(&self) -> usize {
        self.weight.dims()[1]
    }

    /// Output width.
    pub fn out_dim(&self) -> usize {
        self.weight.dims()[2]
    }

    /// The stacked weight `[M, in, out]` (with a shared factor: the branch-specific factor).
    pub fn weight(&self) -> &Var {
        &self.weight
    }

    /// The stacked bias `[M, 1, out]`, if any (with a shared factor: the branch-specific term).
    pub fn bias(&self) -> Option<&Var> {
        self.bias.as_ref()
    }

    /// Applies branch `m` to `x[m]`: `x: [M, n, in]` gives `[M, n, out]`.
    pub fn forward(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = self.effective()?;
        apply(x, &w, b.as_ref())
    }

    /// Applies every branch to the same input `x: [n, in]`, giving `[M, n, out]`, with one
    /// `[n, in] x [in, M * out]` matmul.
    pub fn forward_shared(&self, x: &Tensor) -> Result<Tensor> {
        let (w, b) = self.effective()?;
        apply_shared(x, &w, b.as_ref())
    }

    /// Applies to each sample of `x: [n, in]` its own scenario's branch only, giving
    /// `[n, out]`: what [`forward_shared`](Self::forward_shared) followed by
    /// [`Routing::select_own`] gives, at the cost of one branch (see [`crate::routed`]).
    pub fn forward_own(&self, x: &Tensor, routing: &Routing) -> Result<Tensor> {
        let (w, b) = self.effective()?;
        let y = routing.matmul_own(x, &w)?;
        match b {
            Some(b) => {
                let (m, _, o) = b.dims3()?;
                y + routing.rows_of(&b.reshape((m, o))?)?
            }
            None => Ok(y),
        }
    }

    /// Branch `m` alone on `x: [k, in]`, parameters treated as constants: `[k, out]`. Only
    /// branch `m`'s weight is formed (the mutual unit calls this once per other branch).
    pub fn forward_one_detached(&self, m: usize, x: &Tensor) -> Result<Tensor> {
        let mut w = self.weight.as_tensor().detach().get(m)?;
        let mut b = self
            .bias
            .as_ref()
            .map(|b| b.as_tensor().detach().get(m))
            .transpose()?;
        if let Some(s) = &self.shared {
            w = (w * s.weight.as_tensor().detach().get(0)?)?;
            if let (Some(bm), Some(sb)) = (&b, &s.bias) {
                b = Some((bm + sb.as_tensor().detach().get(0)?)?);
            }
        }
        let y = x.matmul(&w)?;
        match b {
            Some(b) => y.broadcast_add(&b),
            None => Ok(y),
        }
    }
}

/// `x: [M, n, in]` times `w: [M, in, out]` plus `b: [M, 1, out]`.
pub fn apply(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (m, _, i) = x.dims3()?;
    let (wm, wi, _) = w.dims3()?;
    if (m, i) != (wm, wi) {
        candle_core::bail!(
            "batched linear layer {:?} applied to input {:?}",
            w.dims(),
            x.dims()
        );
    }
    let y = x.contiguous()?.matmul(w)?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `x: [n, in]` through every `w[m]: [in, out]` (plus `b: [M, 1, out]`), giving `[M, n, out]`.
pub fn apply_shared(x: &Tensor, w: &Tensor, b: Option<&Tensor>) -> Result<Tensor> {
    let (n, i) = x.dims2()?;
    let (m, wi, o) = w.dims3()?;
    if i != wi {
        candle_core::bail!(
            "batched linear layer {:?} applied to shared input {:?}",
            w.dims(),
            x.dims()
        );
    }
    // [M, in, out] -> [in, M, out] -> [in, M * out]: the M matrices side by side.
    let wide = w.transpose(0, 1)?.contiguous()?.reshape((i, m * o))?;
    let y = x
        .contiguous()?
        .matmul(&wide)?
        .reshape((n, m, o))?
        .transpose(0, 1)?
        .contiguous()?;
    match b {
        Some(b) => y.broadcast_add(b),
        None => Ok(y),
    }
}

/// `M` MLPs run side by side: hidden layers `linear -> activation -> dropout`, then an optional
/// linear output layer. The first layer reads a shared `[n, in]` input; the result is
/// `[M, n, out]`. Variables `{prefix}.{i}.*` and `{prefix}.out.*`.
pub struct BatchedMlp {
    layers: Vec<BatchedLinear>,
    out: Option<BatchedLinear>,
    activation: Activation,
    dropout: f64,
}

impl BatchedMlp {
    /// `m` MLPs `in_dim -> hidden... (-> out_dim)`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        vs: &mut VarStore,
        prefix: &str,
        m: usize,
        in_dim: usize,
        hidden: &[usize],
        activation: Activation,
        dropout: f64,
        out_dim: Option<usize>,
    ) -> Result<Self> {
        if !(0.0..1.0).contains(&dropout) {
            candle_core::bail!("dropout must be in [0, 1), got {dropout}");
        }
        let mut layers = Vec::new();
        let mut width = in_dim;
        for (k, &h) in hidden.iter().enumerate() {
            layers.push(BatchedLinear::new(
                vs,
                &join(prefix, &k.to_string()),
                m,
                width,
                h,
                true,
                crate::nn::activation_init(activation),
            )?);
            width = h;
        }
        let out = match out_dim {
            Some(o) => Some(BatchedLinear::new(
                vs,
                &join(prefix, "out"),
                m,
                width,
                o,
                true,
                Init::XavierUniform,
            )?),
            None => None,
        };
        if layers.is_empty() && out.is_none() {
            candle_core::bail!("a batched MLP needs a hidden layer or an output layer");
        }
        Ok(Self {
            layers,
            out,
            activation,
            dropout,
        })
    }

    /// Width of the output.
    pub fn out_dim(&self) -> usize {
        match (&self.out, self.layers.last()) {
            (Some(o), _) => o.out_dim(),
            (None, Some(l)) => l.out_dim(),
            (None, None) => 0,
        }
    }

    /// Every MLP applied to the shared input `x: [n, in]`: `[M, n, out]`.
    pub fn forward_shared(&self, x: &Tensor, ctx: &mut rec_nn::Ctx) -> Result<Tensor> {
        let mut h: Option<Tensor> = None;
        for l in &self.layers {
            let y = match &h {
                None => l.forward_shared(x)?,
                Some(h) => l.forward(h)?,
            };
            let y = self.activation.apply(&y)?;
            h = Some(rec_nn::layers::dropout(&y, self.dropout, ctx)?);
        }
        match (&self.out, h) {
            (Some(o), None) => o.forward_shared(x),
            (Some(o), Some(h)) => o.forward(&h),
            (None, Some(h)) => Ok(h),
            (None, None) => unreachable!("checked in new"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_layer, input, store};
    use rec_nn::gradcheck::weighted_sum;

    #[test]
    fn batched_equals_one_layer_per_branch() -> Result<()> {
        let mut vs = store();
        let l = BatchedLinear::new(&mut vs, "b", 3, 4, 2, true, Init::XavierUniform)?;
        // A non-zero bias, to see it added per branch.
        l.bias()
            .unwrap()
            .set(&input(&[3, 1, 2], 5)?.as_tensor().clone())?;
        let x = input(&[3, 5, 4], 1)?;
        let y = l.forward(x.as_tensor())?;
        let shared_x = input(&[5, 4], 2)?;
        let ys = l.forward_shared(shared_x.as_tensor())?;
        assert_eq!(y.dims(), &[3, 5, 2]);
        assert_eq!(ys.dims(), &[3, 5, 2]);
        for m in 0..3 {
            let w = l.weight().as_tensor().get(m)?;
            let b = l.bias().unwrap().as_tensor().get(m)?;
            let one = x.as_tensor().get(m)?.matmul(&w)?.broadcast_add(&b)?;
            let shared = shared_x.as_tensor().matmul(&w)?.broadcast_add(&b)?;
            for (a, e) in [(y.get(m)?, one), (ys.get(m)?, shared)] {
                let (a, e) = (a.to_vec2::<f64>()?, e.to_vec2::<f64>()?);
                for (p, q) in a.iter().flatten().zip(e.iter().flatten()) {
                    assert!((p - q).abs() < 1e-12);
                }
            }
        }
        Ok(())
    }

    #[test]
    fn gradients_of_both_forms() -> Result<()> {
        let mut vs = store();
        let l = BatchedLinear::new(&mut vs, "b", 3, 4, 2, true, Init::HeUniform)?;
        let x = input(&[3, 5, 4], 1)?;
        check_layer(&vs, &[("x", &x)], || {
            weighted_sum(&l.forward(x.as_tensor())?, 1)
        })?;
        let xs = input(&[5, 4], 2)?;
        check_layer(&vs, &[("x", &xs)], || {
            weighted_sum(&l.forward_shared(xs.as_tensor())?, 2)
        })
    }

    /// `forward_own` on both of its paths: an unsorted batch (each sample gathers its own
    /// matrix) and sorted ones ([`crate::routed::routed_matmul`]); with and without a bias.
    #[test]
    fn forward_own_values_and_finite_difference_gradients() -> Result<()> {
        use candle_core::{DType, Device};
        // (scenarios of 4, sorted): unsorted; sorted with scenario 3 absent and a single
        // sample of scenario 0; sorted with scenarios 2 and 3 absent.
        let layouts: [(&[u32], bool); 3] = [
            (&[2, 0, 1, 0, 2, 1], false),
            (&[0, 1, 1, 1, 2, 2], true),
            (&[0, 1, 1, 1], true),
        ];
        for (ids, sorted) in layouts {
            for bias in [true, false] {
                let mut vs = store();
                let l = BatchedLinear::new(&mut vs, "b", 4, 3, 2, bias, Init::XavierUniform)?;
                if let Some(b) = l.bias() {
                    b.set(input(&[4, 1, 2], 5)?.as_tensor())?;
                }
                let r = Routing::new(ids.to_vec(), 4, DType::F64, &Device::Cpu)?;
                assert_eq!(r.groups.is_some(), sorted, "{ids:?}");
                let x = input(&[ids.len(), 3], 1)?;
                let y = l.forward_own(x.as_tensor(), &r)?.to_vec2::<f64>()?;
                for (i, &s) in ids.iter().enumerate() {
                    let s = s as usize;
                    let mut e = x
                        .as_tensor()
                        .narrow(0, i, 1)?
                        .matmul(&l.weight().as_tensor().get(s)?)?;
                    if let Some(b) = l.bias() {
                        e = e.broadcast_add(&b.as_tensor().get(s)?)?;
                    }
                    for (a, b) in y[i].iter().zip(&e.flatten_all()?.to_vec1::<f64>()?) {
                        assert!((a - b).abs() < 1e-12, "{ids:?}, bias {bias}, sample {i}");
                    }
                }
                check_layer(&vs, &[("x", &x)], || {
                    weighted_sum(&l.forward_own(x.as_tensor(), &r)?, 6)
                })?;
            }
        }
        Ok(())
    }

    /// STAR's factored form: branch `m` is `x (W_m * W) + b_m + b`; the branches start as one
    /// layer; the gradients of both factors by finite differences on the three differentiated
    /// paths; none through the forward-only one.
    #[test]
    fn shared_factor_values_start_and_finite_difference_gradients() -> Result<()> {
        use candle_core::{DType, Device};
        let mut vs = store();
        let l =
            BatchedLinear::with_shared_factor(&mut vs, "f", 3, 4, 2, true, Init::XavierUniform)?;
        let names: Vec<String> = vs.vars().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            ["f.bias", "f.shared_bias", "f.shared_weight", "f.weight"]
        );
        // At the start every branch is the shared layer.
        let x = input(&[5, 4], 2)?;
        let ys = l.forward_shared(x.as_tensor())?;
        let shared_w = vs.get("f.shared_weight").unwrap().as_tensor().get(0)?;
        let one = x.as_tensor().matmul(&shared_w)?.to_vec2::<f64>()?;
        for m in 0..3 {
            assert_eq!(ys.get(m)?.to_vec2::<f64>()?, one, "branch {m}");
        }
        // Move every factor off its start, then compare with the product written out.
        l.weight().set(input(&[3, 4, 2], 7)?.as_tensor())?;
        l.bias().unwrap().set(input(&[3, 1, 2], 8)?.as_tensor())?;
        let sb = vs.get("f.shared_bias").unwrap().clone();
        sb.set(input(&[1, 1, 2], 9)?.as_tensor())?;
        let ids = [2u32, 0, 1, 0, 2];
        let r = Routing::new(ids.to_vec(), 3, DType::F64, &Device::Cpu)?;
        let y = l.forward_own(x.as_tensor(), &r)?.to_vec2::<f64>()?;
        for (i, &s) in ids.iter().enumerate() {
            let s = s as usize;
            let w = (l.weight().as_tensor().get(s)? * &shared_w)?;
            let b = (l.bias().unwrap().as_tensor().get(s)? + sb.as_tensor().get(0)?)?;
            let e = x
                .as_tensor()
                .narrow(0, i, 1)?
                .matmul(&w)?
                .broadcast_add(&b)?;
            for (a, b) in y[i].iter().zip(&e.flatten_all()?.to_vec1::<f64>()?) {
                assert!((a - b).abs() < 1e-12, "sample {i}");
            }
            let d = l.forward_one_detached(s, &x.as_tensor().narrow(0, i, 1)?)?;
            assert_eq!(
                d.flatten_all()?.to_vec1::<f64>()?,
                e.flatten_all()?.to_vec1::<f64>()?
            );
        }
        let xm = input(&[3, 5, 4], 1)?;
        check_layer(&vs, &[("x", &x), ("xm", &xm)], || {
            let a = weighted_sum(&l.forward_own(x.as_tensor(), &r)?, 6)?;
            let b = weighted_sum(&l.forward(xm.as_tensor())?, 3)?;
            let c = weighted_sum(&l.forward_shared(x.as_tensor())?, 4)?;
            (a + b)? + c
        })?;
        // The forward-only path treats every parameter as a constant.
        let grads = weighted_sum(&l.forward_one_detached(1, x.as_tensor())?, 5)?.backward()?;
        for (n, v) in vs.vars() {
            assert!(grads.get(v.as_tensor()).is_none(), "{n} got a gradient");
        }
        Ok(())
    }

    #[test]
    fn stacked_init_uses_the_fan_of_one_layer() -> Result<()> {
        let mut vs = store();
        let w = stacked_var(&mut vs, "w", (4, 50, 30), Init::XavierUniform, false)?;
        let a = (6.0f64 / 80.0).sqrt();
        let v = w.as_tensor().flatten_all()?.to_vec1::<f64>()?;
        assert!(v.iter().all(|x| x.abs() <= a));
        // Close to the bound somewhere: the scale is that of a 50 -> 30 layer.
        assert!(v.iter().any(|x| x.abs() > 0.9 * a));
        // Same seed and name, same values.
        let mut vs2 = store();
        let w2 = stacked_var(&mut vs2, "w", (4, 50, 30), Init::XavierUniform, false)?;
        assert_eq!(v, w2.as_tensor().flatten_all()?.to_vec1::<f64>()?);
        // Untied branches differ, tied ones are copies.
        let w = w.as_tensor();
        assert_ne!(w.get(0)?.to_vec2::<f64>()?, w.get(1)?.to_vec2::<f64>()?);
        let t = stacked_var(&mut vs2, "t", (3, 5, 2), Init::XavierUniform, true)?;
        let t = t.as_tensor();
        assert_eq!(t.get(0)?.to_vec2::<f64>()?, t.get(2)?.to_vec2::<f64>()?);
        Ok(())
    }

    #[test]
    fn batched_mlp_shapes_and_gradients() -> Result<()> {
        let mut vs = store();
        let mlp = BatchedMlp::new(
            &mut vs,
            "mlp",
            2,
            3,
            &[5, 4],
            Activation::Tanh,
            0.0,
            Some(1),
        )?;
        assert_eq!(mlp.out_dim(), 1);
        let x = input(&[6, 3], 3)?;
        check_layer(&vs, &[("x", &x)], || {
            let y = mlp.forward_shared(x.as_tensor(), &mut rec_nn::Ctx::eval())?;
            assert_eq!(y.dims(), &[2, 6, 1]);
            weighted_sum(&y, 4)
        })
    }
}
