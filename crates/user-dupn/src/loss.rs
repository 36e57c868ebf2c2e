//! DUPN's L2R loss, the weighted point-wise logistic loss (the task losses are combined in
//! `Dupn`'s `Model::loss`).

use candle_core::{Result, Tensor};

/// The L2R loss of the paper, `sum_i n_i log(1 + exp(-y_i s_i)) / sum_i n_i`, for scores `s`
/// (`[n]`), labels `y` in {0, 1} (mapped to {-1, +1}) and sample weights `n_i` (`[n]`, e.g. by
/// behaviour type: purchase > click). Normalised by the total weight so that its scale does not
/// depend on the batch; `log(1 + exp(-m))` is computed stably as `max(-m, 0) + log(1 +
/// exp(-|m|))`. A zero weight leaves a sample out.
pub fn weighted_pointwise_logistic(
    scores: &Tensor,
    labels01: &Tensor,
    weights: &Tensor,
) -> Result<Tensor> {
    let y = labels01.affine(2.0, -1.0)?;
    let m = (scores * y)?;
    let softplus = (m.neg()?.relu()? + (m.abs()?.neg()?.exp()? + 1.0)?.log()?)?;
    let total = weights.sum_all()?;
    (softplus * weights)?.sum_all()?.broadcast_div(&total)
}

#[cfg(test)]
mod tests {
    use super::*;
    use candle_core::{DType, Device};
    use rec_nn::gradcheck::{GradCheck, check_gradients, random_var};

    #[test]
    fn matches_the_formula_and_is_stable() -> Result<()> {
        let d = Device::Cpu;
        let s = Tensor::new(&[0.5f64, -1.5, 800.0, -800.0], &d)?;
        let y = Tensor::new(&[1f64, 0.0, 0.0, 0.0], &d)?;
        let w = Tensor::new(&[5f64, 1.0, 2.0, 3.0], &d)?;
        let got: f64 = weighted_pointwise_logistic(&s, &y, &w)?.to_scalar()?;
        let l = |yy: f64, ss: f64| (1.0 + (-yy * ss).exp()).ln();
        let want = (5.0 * l(1.0, 0.5) + l(-1.0, -1.5) + 2.0 * 800.0 + 3.0 * l(-1.0, -800.0)) / 11.0;
        assert!((got - want).abs() < 1e-9, "{got} vs {want}");
        Ok(())
    }

    #[test]
    fn equals_weighted_bce_of_the_score() -> Result<()> {
        let d = Device::Cpu;
        let s = random_var(&[7], DType::F64, 3.0, 1)?;
        let y = Tensor::new(&[1f64, 0.0, 1.0, 1.0, 0.0, 0.0, 1.0], &d)?;
        let w = Tensor::new(&[1f64, 2.0, 3.0, 5.0, 1.0, 0.0, 2.0], &d)?;
        let a: f64 = weighted_pointwise_logistic(s.as_tensor(), &y, &w)?.to_scalar()?;
        let b: f64 = rec_nn::loss::bce_with_logits(s.as_tensor(), &y, Some(&w))?.to_scalar()?;
        assert!((a - b).abs() < 1e-12);
        Ok(())
    }

    #[test]
    fn finite_differences_match() -> Result<()> {
        let d = Device::Cpu;
        let s = random_var(&[6], DType::F64, 4.0, 3)?;
        let y = Tensor::new(&[1f64, 0.0, 1.0, 0.0, 1.0, 0.0], &d)?;
        let w = Tensor::new(&[1f64, 1.0, 2.0, 3.0, 5.0, 0.0], &d)?;
        let p = vec![("s".to_string(), s.clone())];
        let r = check_gradients(
            &p,
            || weighted_pointwise_logistic(s.as_tensor(), &y, &w),
            &GradCheck::default(),
        )?;
        assert_eq!(r.checked, 6);
        Ok(())
    }
}
