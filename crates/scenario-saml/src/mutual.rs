//! SAML's mutual unit [paper; equations ours]: a sample of scenario `s` has been run through
//! every branch; its own branch's representation `h_s` borrows from the others:
//!
//! ```text
//! r_sm = cos(h_s, h_m)
//! g_sm = softmax over m != s of (beta * r_sm + c_sm)
//! h~_s = h_s + sum over m != s of g_sm * stopgrad(h_m)
//! ```
//!
//! `beta` (a scalar) and the `M x M` scenario-affinity matrix `c` are learned. The stop-gradient
//! covers every use of another branch's output (the cosine too), so branch `m` is trained by the
//! samples of scenario `m` only. Row `s` of `c` is the learned prior of scenario `s` for
//! borrowing from each other scenario; its diagonal is never used (and never moves).

use candle_core::{D, Result, Tensor, Var};

use crate::nn::{Init, VarStore, join};
use crate::scenario::Routing;

/// Output of the mutual unit.
pub struct MutualOutput {
    /// `h~_s` for every sample, `[n, d]`.
    pub output: Tensor,
    /// The gates `g_sm`, `[n, M]` (0 at the sample's own scenario).
    pub gates: Tensor,
}

/// See the [module documentation](self). Variables `{prefix}.beta` (init 1) and
/// `{prefix}.affinity` (`[M, M]`, init 0).
pub struct MutualUnit {
    beta: Var,
    affinity: Var,
}

const COS_EPS: f64 = 1e-8;

impl MutualUnit {
    /// A mutual unit over `m` scenarios.
    pub fn new(vs: &mut VarStore, prefix: &str, m: usize) -> Result<Self> {
        Ok(Self {
            beta: vs.var(&join(prefix, "beta"), 1, Init::Ones)?,
            affinity: vs.var(&join(prefix, "affinity"), (m, m), Init::Zeros)?,
        })
    }

    /// The learned scenario-affinity matrix `c` (`[M, M]`).
    pub fn affinity(&self) -> &Var {
        &self.affinity
    }

    /// The learned scale `beta` of the cosine term.
    pub fn beta(&self) -> &Var {
        &self.beta
    }

    /// Runs the unit on the outputs of all branches `h: [M, n, d]`: each sample's own branch,
    /// plus the gated, stop-gradient outputs of the other branches.
    pub fn forward(&self, h: &Tensor, routing: &Routing) -> Result<MutualOutput> {
        let own = routing.select_own(h)?;
        self.combine_with_constants(&own, h, routing)
    }

    /// [`combine`](Self::combine) with `others` treated as constants (detached), which is how
    /// the model uses it: the two contractions with `others` (the cosines and the borrowed
    /// sum) are then ops whose backward computes the gradient of the own side only, instead
    /// of also forming the (discarded) gradient of the `[M, n, d]` constants.
    pub fn combine_with_constants(
        &self,
        own: &Tensor,
        others: &Tensor,
        routing: &Routing,
    ) -> Result<MutualOutput> {
        self.combine_impl(own, &others.detach(), routing, true)
    }

    /// The unit's formula with the two roles given separately: `own: [n, d]` (the sample's
    /// own branch) and `others: [M, n, d]` (every branch; the caller detaches it). Every
    /// input is differentiable here, so this is what the gradient check exercises.
    pub fn combine(
        &self,
        own: &Tensor,
        others: &Tensor,
        routing: &Routing,
    ) -> Result<MutualOutput> {
        self.combine_impl(own, others, routing, false)
    }

    fn combine_impl(
        &self,
        own: &Tensor,
        others: &Tensor,
        routing: &Routing,
        constant: bool,
    ) -> Result<MutualOutput> {
        let (m, n, d) = others.dims3()?;
        if own.dims() != [n, d] || m != routing.num_scenarios || n != routing.len() {
            candle_core::bail!(
                "mutual unit: own {:?}, others {:?}, {} scenarios, {} samples",
                own.dims(),
                others.dims(),
                routing.num_scenarios,
                routing.len()
            );
        }
        // Cosine of the own representation with every branch's: [n, M].
        let norm = |x: &Tensor| -> Result<Tensor> {
            x.sqr()?
                .sum_keepdim(D::Minus1)?
                .affine(1.0, COS_EPS)?
                .sqrt()
        };
        let own_unit = own.broadcast_div(&norm(own)?)?; // [n, d]
        let others_unit = others.broadcast_div(&norm(others)?)?; // [M, n, d]
        let cos = if constant {
            dot_with_constant(&own_unit, &others_unit)?
        } else {
            others_unit
                .broadcast_mul(&own_unit.unsqueeze(0)?)?
                .sum(D::Minus1)? // [M, n]
                .t()? // [n, M]
        };
        let prior = routing.rows_of(self.affinity.as_tensor())?; // [n, M]
        let logits = (cos.broadcast_mul(self.beta.as_tensor())? + prior)?;
        let not_own = routing.one_hot.affine(-1.0, 1.0)?;
        let gates = rec_nn::layers::masked_softmax(&logits, &not_own)?; // [n, M]
        let borrowed = if constant {
            mix_constant(&gates, others)?
        } else {
            others
                .broadcast_mul(&gates.t()?.unsqueeze(D::Minus1)?)?
                .sum(0)? // [n, d]
        };
        Ok(MutualOutput {
            output: (own + borrowed)?,
            gates,
        })
    }
}

/// `y[i, m] = sum_k a[i, k] c[m, i, k]` for `a: [n, d]` and a constant `c: [M, n, d]`.
fn dot(a: &Tensor, c: &Tensor) -> Result<Tensor> {
    c.broadcast_mul(&a.unsqueeze(0)?)?
        .sum(D::Minus1)?
        .t()?
        .contiguous()
}

/// `y[i, k] = sum_m g[i, m] c[m, i, k]` for `g: [n, M]` and a constant `c: [M, n, d]`.
fn mix(g: &Tensor, c: &Tensor) -> Result<Tensor> {
    // A sum of M `[n, d]` terms: a broadcast product over `[M, n, d]` with a transposed `g`
    // and a sum over the leading axis both take candle's slow strided paths.
    let gt = g.t()?.contiguous()?; // [M, n]
    let mut acc: Option<Tensor> = None;
    for m in 0..c.dim(0)? {
        let term = c.get(m)?.broadcast_mul(&gt.get(m)?.unsqueeze(1)?)?;
        acc = Some(match acc {
            None => term,
            Some(a) => (a + term)?,
        });
    }
    match acc {
        Some(a) => Ok(a),
        None => Tensor::zeros((g.dim(0)?, c.dim(2)?), c.dtype(), c.device()),
    }
}

/// [`dot`] differentiable in `a` only.
fn dot_with_constant(a: &Tensor, c: &Tensor) -> Result<Tensor> {
    let y = dot(&a.detach(), c)?;
    with_constant(a, c, y, Contraction::Dot)
}

/// [`mix`] differentiable in `g` only.
fn mix_constant(g: &Tensor, c: &Tensor) -> Result<Tensor> {
    let y = mix(&g.detach(), c)?;
    with_constant(g, c, y, Contraction::Mix)
}

fn with_constant(x: &Tensor, c: &Tensor, y: Tensor, kind: Contraction) -> Result<Tensor> {
    if !x.device().is_cpu() {
        // The op's forward is a CPU copy; elsewhere the plain ops (their backward also forms
        // the constant's gradient, which is then dropped).
        return match kind {
            Contraction::Dot => dot(x, c),
            Contraction::Mix => mix(x, c),
        };
    }
    x.apply_op3(c, &y, kind)
}

/// The two contractions of the mutual unit with its constant `[M, n, d]` operand; each is the
/// other's gradient. The forward returns the value computed outside (argument 3).
#[derive(Clone, Copy)]
enum Contraction {
    Dot,
    Mix,
}

impl candle_core::CustomOp3 for Contraction {
    fn name(&self) -> &'static str {
        match self {
            Contraction::Dot => "mutual-dot",
            Contraction::Mix => "mutual-mix",
        }
    }

    fn cpu_fwd(
        &self,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        _: &candle_core::CpuStorage,
        _: &candle_core::Layout,
        y: &candle_core::CpuStorage,
        ly: &candle_core::Layout,
    ) -> Result<(candle_core::CpuStorage, candle_core::Shape)> {
        crate::routed::copy_contiguous(y, ly)
    }

    fn bwd(
        &self,
        _: &Tensor,
        c: &Tensor,
        _: &Tensor,
        _: &Tensor,
        dy: &Tensor,
    ) -> Result<(Option<Tensor>, Option<Tensor>, Option<Tensor>)> {
        let (c, dy) = (c.detach(), dy.detach());
        let dx = match self {
            Contraction::Dot => mix(&dy, &c)?,
            Contraction::Mix => dot(&dy, &c)?,
        };
        Ok((Some(dx), None, None))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::{check_layer, input, store};
    use candle_core::{DType, Device};
    use rec_nn::gradcheck::weighted_sum;

    fn routing() -> Routing {
        Routing::new(vec![0, 2, 1, 2, 0], 3, DType::F64, &Device::Cpu).unwrap()
    }

    fn unit(vs: &mut VarStore) -> MutualUnit {
        let u = MutualUnit::new(vs, "mu", 3).unwrap();
        // A non-trivial affinity and beta, so every term of the gradient is exercised.
        u.affinity
            .set(&input(&[3, 3], 7).unwrap().as_tensor().clone())
            .unwrap();
        u.beta
            .set(&Tensor::new(&[0.7f64], &Device::Cpu).unwrap())
            .unwrap();
        u
    }

    #[test]
    fn matches_the_formula() -> Result<()> {
        let mut vs = store();
        let u = unit(&mut vs);
        let r = routing();
        let h = input(&[3, 5, 4], 1)?;
        let out = u.forward(h.as_tensor(), &r)?;
        let hv = h.as_tensor().to_vec3::<f64>()?;
        let c = u.affinity.as_tensor().to_vec2::<f64>()?;
        let o = out.output.to_vec2::<f64>()?;
        let g = out.gates.to_vec2::<f64>()?;
        for (i, &s) in r.ids.iter().enumerate() {
            let s = s as usize;
            let cos = |a: &[f64], b: &[f64]| {
                let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
                let na = (a.iter().map(|x| x * x).sum::<f64>() + COS_EPS).sqrt();
                let nb = (b.iter().map(|x| x * x).sum::<f64>() + COS_EPS).sqrt();
                dot / (na * nb)
            };
            let logits: Vec<f64> = (0..3)
                .map(|m| 0.7 * cos(&hv[s][i], &hv[m][i]) + c[s][m])
                .collect();
            let z: f64 = (0..3).filter(|&m| m != s).map(|m| logits[m].exp()).sum();
            let mut expect = hv[s][i].clone();
            for m in (0..3).filter(|&m| m != s) {
                let gate = logits[m].exp() / z;
                assert!((g[i][m] - gate).abs() < 1e-12);
                for (e, x) in expect.iter_mut().zip(&hv[m][i]) {
                    *e += gate * x;
                }
            }
            assert_eq!(g[i][s], 0.0);
            for (a, b) in o[i].iter().zip(&expect) {
                assert!((a - b).abs() < 1e-12);
            }
        }
        Ok(())
    }

    #[test]
    fn finite_difference_gradients_of_the_formula() -> Result<()> {
        let mut vs = store();
        let u = unit(&mut vs);
        let r = routing();
        let own = input(&[5, 4], 2)?;
        let others = input(&[3, 5, 4], 3)?;
        check_layer(&vs, &[("own", &own), ("others", &others)], || {
            weighted_sum(
                &u.combine(own.as_tensor(), others.as_tensor(), &r)?.output,
                5,
            )
        })
    }

    #[test]
    fn constant_form_has_the_values_and_own_side_gradients_of_the_formula() -> Result<()> {
        let mut vs = store();
        let u = unit(&mut vs);
        let r = routing();
        let own = input(&[5, 4], 2)?;
        let others = input(&[3, 5, 4], 3)?;
        let run = |constant: bool| -> Result<(Tensor, Vec<Tensor>)> {
            let out = if constant {
                u.combine_with_constants(own.as_tensor(), others.as_tensor(), &r)?
            } else {
                u.combine(own.as_tensor(), &others.as_tensor().detach(), &r)?
            };
            let loss = (weighted_sum(&out.output, 5)? + weighted_sum(&out.gates, 6)?)?;
            let g = loss.backward()?;
            let grads = [own.as_tensor(), u.beta.as_tensor(), u.affinity.as_tensor()]
                .iter()
                .map(|t| g.get(t).cloned().expect("a gradient"))
                .collect();
            Ok((out.output, grads))
        };
        let (a, ga) = run(true)?;
        let (b, gb) = run(false)?;
        let close = |x: &Tensor, y: &Tensor| -> Result<bool> {
            Ok((x - y)?.abs()?.flatten_all()?.max(0)?.to_scalar::<f64>()? < 1e-12)
        };
        assert!(close(&a, &b)?);
        for (x, y) in ga.iter().zip(&gb) {
            assert!(close(x, y)?);
        }
        Ok(())
    }

    /// The custom op [`Contraction`] itself: both kinds against a loop, their gradient in the
    /// differentiable operand against finite differences, and none for the constant
    /// operand. `M = 3`, `n = 5`, `d = 4`, all different, so a swapped axis cannot pass; the
    /// constant also as a strided (transposed) view.
    #[test]
    fn contraction_op_finite_difference_gradients() -> Result<()> {
        use rec_nn::gradcheck::{GradCheck, check_gradients};
        let contiguous = input(&[3, 5, 4], 3)?.as_tensor().detach();
        let strided = input(&[5, 3, 4], 4)?.as_tensor().detach().transpose(0, 1)?;
        assert!(!strided.is_contiguous());
        for c in [contiguous, strided] {
            let cv = c.to_vec3::<f64>()?;
            let a = input(&[5, 4], 1)?; // dot: [n, d] -> [n, M]
            let g = input(&[5, 3], 2)?; // mix: [n, M] -> [n, d]
            // Values: y[i, m] = sum_k a[i, k] c[m, i, k]; y[i, k] = sum_m g[i, m] c[m, i, k].
            let yd = dot_with_constant(a.as_tensor(), &c)?.to_vec2::<f64>()?;
            let ym = mix_constant(g.as_tensor(), &c)?.to_vec2::<f64>()?;
            let (av, gv) = (
                a.as_tensor().to_vec2::<f64>()?,
                g.as_tensor().to_vec2::<f64>()?,
            );
            for i in 0..5 {
                for m in 0..3 {
                    let e: f64 = (0..4).map(|k| av[i][k] * cv[m][i][k]).sum();
                    assert!((yd[i][m] - e).abs() < 1e-12);
                }
                for k in 0..4 {
                    let e: f64 = (0..3).map(|m| gv[i][m] * cv[m][i][k]).sum();
                    assert!((ym[i][k] - e).abs() < 1e-12);
                }
            }
            // Gradients in the differentiable operand.
            let cfg = GradCheck::default();
            let report = check_gradients(
                &[("a".into(), a.clone())],
                || weighted_sum(&dot_with_constant(a.as_tensor(), &c)?, 1),
                &cfg,
            )?;
            assert_eq!(report.checked, 20);
            let report = check_gradients(
                &[("g".into(), g.clone())],
                || weighted_sum(&mix_constant(g.as_tensor(), &c)?, 2),
                &cfg,
            )?;
            assert_eq!(report.checked, 15);
            // The `[M, n, d]` operand is a constant of the op: no gradient reaches it even when
            // it is a variable. (The constant and the precomputed value must not be computed
            // from a tracked tensor: candle's backward panics on an op argument that is
            // tracked, not a variable, and gets no gradient. The model detaches them.)
            let cvar = candle_core::Var::from_tensor(&c)?;
            for (kind, x) in [(Contraction::Dot, &a), (Contraction::Mix, &g)] {
                let x = x.as_tensor();
                let y = match kind {
                    Contraction::Dot => dot(&x.detach(), &c)?,
                    Contraction::Mix => mix(&x.detach(), &c)?,
                };
                let out = with_constant(x, cvar.as_tensor(), y, kind)?;
                let grads = weighted_sum(&out, 3)?.backward()?;
                assert!(grads.get(cvar.as_tensor()).is_none());
                assert!(grads.get(x).is_some());
            }
        }
        Ok(())
    }

    #[test]
    fn other_branches_get_no_gradient() -> Result<()> {
        let mut vs = store();
        let u = unit(&mut vs);
        let r = routing();
        let h = input(&[3, 5, 4], 1)?;
        let loss = weighted_sum(&u.forward(h.as_tensor(), &r)?.output, 5)?;
        let grads = loss.backward()?;
        let g = grads.get(h.as_tensor()).unwrap().to_vec3::<f64>()?;
        for (i, &s) in r.ids.iter().enumerate() {
            for (m, branch) in g.iter().enumerate() {
                let nonzero = branch[i].iter().any(|x| *x != 0.0);
                assert_eq!(nonzero, m == s as usize, "sample {i}, branch {m}");
            }
        }
        // The diagonal of the affinity is never used.
        let ga = grads
            .get(u.affinity.as_tensor())
            .unwrap()
            .to_vec2::<f64>()?;
        assert!((0..3).all(|k| ga[k][k] == 0.0));
        assert!(ga.iter().flatten().any(|x| *x != 0.0));
        Ok(())
    }

    #[test]
    fn a_single_scenario_is_left_alone() -> Result<()> {
        let mut vs = store();
        let u = MutualUnit::new(&mut vs, "mu", 1)?;
        let r = Routing::new(vec![0, 0], 1, DType::F64, &Device::Cpu)?;
        let h = input(&[1, 2, 3], 1)?;
        let out = u.forward(h.as_tensor(), &r)?;
        assert_eq!(
            out.output.to_vec2::<f64>()?,
            h.as_tensor().get(0)?.to_vec2::<f64>()?
        );
        Ok(())
    }

    /// Two scenarios: the softmax over the other scenario has one entry, so every gate is 1,
    /// each sample adds the other branch in full, and beta and the affinity learn nothing (the
    /// docs say the affinity is a result only from three scenarios on).
    #[test]
    fn two_scenarios_borrow_in_full_and_cannot_learn_an_affinity() -> Result<()> {
        let mut vs = store();
        let u = MutualUnit::new(&mut vs, "mu", 2)?;
        u.affinity.set(&input(&[2, 2], 3)?.as_tensor().clone())?;
        let r = Routing::new(vec![0, 1, 1], 2, DType::F64, &Device::Cpu)?;
        let h = input(&[2, 3, 4], 1)?;
        let out = u.forward(h.as_tensor(), &r)?;
        let gates = out.gates.to_vec2::<f64>()?;
        for (i, &s) in r.ids.iter().enumerate() {
            let other = 1 - s as usize;
            assert_eq!(gates[i][s as usize], 0.0);
            assert!((gates[i][other] - 1.0).abs() < 1e-12);
        }
        let grads = weighted_sum(&out.output, 5)?.backward()?;
        for v in [&u.beta, &u.affinity] {
            if let Some(g) = grads.get(v.as_tensor()) {
                let g = g.flatten_all()?.to_vec1::<f64>()?;
                assert!(g.iter().all(|x| x.abs() < 1e-20), "{g:?}");
            }
        }
        Ok(())
    }
}
