//! Finite-difference gradient checks for custom layers, and a check that every parameter
//! receives a gradient (the test that catches candle's silent autograd holes).
//!
//! Build the layer in `f64` (`VarStore::with_dtype(.., DType::F64)`) where possible: central
//! differences are then accurate to ~1e-8 and the default tolerances are tight. For `f32`
//! layers use [`GradCheck::f32`], which uses a larger step and relative tolerances.
//!
//! ```
//! use candle_core::{DType, Device, Var};
//! use rec_nn::gradcheck::{GradCheck, check_gradients, weighted_sum};
//! # fn main() -> candle_core::Result<()> {
//! let x = Var::from_slice(&[0.3f64, -1.2, 2.0], 3, &Device::Cpu)?;
//! let params = vec![("x".to_string(), x.clone())];
//! // A scalar that depends on every output entry differently.
//! let report = check_gradients(&params, || weighted_sum(&x.as_tensor().tanh()?, 1), &GradCheck::default())?;
//! assert_eq!(report.checked, 3);
//! # Ok(()) }
//! ```

use candle_core::{DType, Device, Result, Tensor, Var};
use rand::Rng;
use rand::seq::index::sample;

use crate::init::named_rng;

/// Step and tolerances of a finite-difference check.
#[derive(Debug, Clone, Copy)]
pub struct GradCheck {
    /// Step of the central difference.
    pub eps: f64,
    /// Relative tolerance: an entry passes when `|a - n| <= atol + rtol * max(|a|, |n|)`.
    pub rtol: f64,
    /// Absolute tolerance.
    pub atol: f64,
    /// At most this many entries per tensor are checked (chosen at random, seeded); all of
    /// them when the tensor is smaller.
    pub max_entries: usize,
    /// Seed of the entry choice.
    pub seed: u64,
}

impl Default for GradCheck {
    /// Settings for `f64` computations.
    fn default() -> Self {
        Self {
            eps: 1e-6,
            rtol: 1e-5,
            atol: 1e-7,
            max_entries: 24,
            seed: 0,
        }
    }
}

impl GradCheck {
    /// Settings for `f32` computations (larger step, looser tolerances). The absolute
    /// tolerance (2e-3) means an entry whose true gradient is below about 2e-3 passes even if
    /// autograd returns 0: scale the function so its gradients are of order 1, or check in
    /// `f64` (the crate's own checks do).
    pub fn f32() -> Self {
        Self {
            eps: 1e-2,
            rtol: 2e-2,
            atol: 2e-3,
            max_entries: 24,
            seed: 0,
        }
    }

    /// Settings suited to `dtype`.
    pub fn for_dtype(dtype: DType) -> Self {
        if dtype == DType::F64 {
            Self::default()
        } else {
            Self::f32()
        }
    }
}

/// What a check compared.
#[derive(Debug, Clone, PartialEq)]
pub struct GradReport {
    /// Number of entries compared.
    pub checked: usize,
    /// Largest `|analytic - numeric|`.
    pub max_abs_err: f64,
    /// Largest `|analytic - numeric| / max(|analytic|, |numeric|, 1e-12)`.
    pub max_rel_err: f64,
}

fn to_host_f64(t: &Tensor) -> Result<Vec<f64>> {
    t.to_device(&Device::Cpu)?
        .to_dtype(DType::F64)?
        .flatten_all()?
        .to_vec1::<f64>()
}

fn scalar(t: &Tensor) -> Result<f64> {
    if t.elem_count() != 1 {
        candle_core::bail!(
            "the checked function must return a scalar, got shape {:?}",
            t.dims()
        );
    }
    Ok(to_host_f64(t)?[0])
}

fn set_host(var: &Var, values: &[f64]) -> Result<()> {
    let t = Tensor::from_slice(values, var.shape(), &Device::Cpu)?
        .to_dtype(var.dtype())?
        .to_device(var.device())?;
    var.set(&t)
}

/// Compares the autograd gradient of the scalar `f()` with respect to each of `params` with
/// central differences `(f(x + eps) - f(x - eps)) / (2 eps)`, entry by entry. `f` must be
/// deterministic (no dropout). The parameters are restored afterwards. A mismatch is an error
/// naming the parameter, the entry and both values.
pub fn check_gradients(
    params: &[(String, Var)],
    mut f: impl FnMut() -> Result<Tensor>,
    cfg: &GradCheck,
) -> Result<GradReport> {
    let loss = f()?;
    let grads = loss.backward()?;
    let mut report = GradReport {
        checked: 0,
        max_abs_err: 0.0,
        max_rel_err: 0.0,
    };
    for (name, var) in params {
        let analytic = match grads.get(var.as_tensor()) {
            Some(g) => to_host_f64(g)?,
            None => vec![0.0; var.elem_count()],
        };
        let orig = to_host_f64(var.as_tensor())?;
        let n = orig.len();
        let mut rng = named_rng(cfg.seed, name);
        let entries: Vec<usize> = if n <= cfg.max_entries {
            (0..n).collect()
        } else {
            sample(&mut rng, n, cfg.max_entries).into_vec()
        };
        let mut x = orig.clone();
        let mut result = Ok(());
        for &i in &entries {
            x[i] = orig[i] + cfg.eps;
            set_host(var, &x)?;
            let up = scalar(&f()?)?;
            x[i] = orig[i] - cfg.eps;
            set_host(var, &x)?;
            let down = scalar(&f()?)?;
            x[i] = orig[i];
            let numeric = (up - down) / (2.0 * cfg.eps);
            let a = analytic[i];
            let err = (a - numeric).abs();
            let scale = a.abs().max(numeric.abs());
            report.checked += 1;
            report.max_abs_err = report.max_abs_err.max(err);
            report.max_rel_err = report.max_rel_err.max(err / scale.max(1e-12));
            if err.is_nan() || err > cfg.atol + cfg.rtol * scale {
                result = Err(candle_core::Error::Msg(format!(
                    "gradient of `{name}` entry {i}: autograd {a:.8e}, finite difference {numeric:.8e}"
                )));
                break;
            }
        }
        set_host(var, &orig)?;
        result?;
    }
    Ok(report)
}

/// Checks that every parameter receives a gradient from `loss` that is not all zeros; the
/// error lists the parameters that do not.
pub fn check_all_params_get_gradient(params: &[(String, Var)], loss: &Tensor) -> Result<()> {
    let grads = loss.backward()?;
    let mut missing = Vec::new();
    for (name, var) in params {
        match grads.get(var.as_tensor()) {
            None => missing.push(format!("{name} (no gradient)")),
            Some(g) => {
                if to_host_f64(g)?.iter().all(|&x| x == 0.0) {
                    missing.push(format!("{name} (all-zero gradient)"));
                }
                if to_host_f64(g)?.iter().any(|x| !x.is_finite()) {
                    missing.push(format!("{name} (non-finite gradient)"));
                }
            }
        }
    }
    if missing.is_empty() {
        Ok(())
    } else {
        candle_core::bail!(
            "parameters without a useful gradient: {}",
            missing.join(", ")
        )
    }
}

/// `sum(t * R)` for a fixed random `R` drawn from `seed`: a scalar that depends on every entry
/// of `t` with a different weight (a plain sum hides errors, e.g. softmax rows always sum to 1).
pub fn weighted_sum(t: &Tensor, seed: u64) -> Result<Tensor> {
    let mut rng = named_rng(seed, "weighted_sum");
    let r: Vec<f64> = (0..t.elem_count())
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let r = Tensor::from_vec(r, t.shape(), &Device::Cpu)?
        .to_dtype(t.dtype())?
        .to_device(t.device())?;
    (t * r)?.sum_all()
}

/// A `Var` of `shape` and `dtype` with values drawn uniformly from `[-scale, scale)` (seeded):
/// handy inputs for gradient checks.
pub fn random_var(shape: &[usize], dtype: DType, scale: f64, seed: u64) -> Result<Var> {
    let mut rng = named_rng(seed, "random_var");
    let n: usize = shape.iter().product();
    let v: Vec<f64> = (0..n).map(|_| rng.random_range(-scale..scale)).collect();
    Var::from_tensor(&Tensor::from_vec(v, shape, &Device::Cpu)?.to_dtype(dtype)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catches_a_wrong_gradient() -> Result<()> {
        let x = random_var(&[4], DType::F64, 1.0, 1)?;
        let p = vec![("x".to_string(), x.clone())];
        // Correct: d/dx sum(r * x^2) = 2 r x.
        let ok = check_gradients(
            &p,
            || weighted_sum(&x.as_tensor().sqr()?, 3),
            &GradCheck::default(),
        )?;
        assert_eq!(ok.checked, 4);
        assert!(ok.max_rel_err < 1e-6);
        // Wrong: detach half of the computation, autograd misses a term.
        let bad = check_gradients(
            &p,
            || weighted_sum(&(x.as_tensor() * x.as_tensor().detach())?, 3),
            &GradCheck::default(),
        );
        assert!(bad.unwrap_err().to_string().contains("`x`"));
        // Parameters are restored.
        assert_eq!(
            x.as_tensor().to_vec1::<f64>()?,
            random_var(&[4], DType::F64, 1.0, 1)?
                .as_tensor()
                .to_vec1::<f64>()?
        );
        Ok(())
    }

    #[test]
    fn f32_settings_work_on_f32() -> Result<()> {
        let x = random_var(&[6], DType::F32, 1.0, 2)?;
        let p = vec![("x".to_string(), x.clone())];
        check_gradients(
            &p,
            || weighted_sum(&x.as_tensor().exp()?, 0),
            &GradCheck::f32(),
        )?;
        Ok(())
    }

    #[test]
    fn reports_parameters_without_gradient() -> Result<()> {
        let a = random_var(&[2], DType::F64, 1.0, 1)?;
        let b = random_var(&[2], DType::F64, 1.0, 2)?;
        let p = vec![("a".to_string(), a.clone()), ("b".to_string(), b.clone())];
        let e = check_all_params_get_gradient(&p, &a.as_tensor().sum_all()?).unwrap_err();
        assert!(e.to_string().contains("b (no gradient)"));
        let zero = (b.as_tensor() * b.as_tensor().zeros_like()?)?.sum_all()?;
        let loss = (a.as_tensor().sum_all()? + zero)?;
        let e = check_all_params_get_gradient(&p, &loss).unwrap_err();
        assert!(e.to_string().contains("b (all-zero"));
        Ok(())
    }
}
