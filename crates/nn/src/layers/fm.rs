//! Factorization-machine second-order interactions (Rendle 2010).

use candle_core::{Result, Tensor};

/// The pairwise interactions `sum_{i<j} <v_i, v_j>` of field embeddings `x: [n, F, d]`,
/// computed in `O(F d)` as `0.5 * sum_d((sum_i v_i)^2 - sum_i v_i^2)`. Returns `[n]`.
pub fn fm_interaction(x: &Tensor) -> Result<Tensor> {
    fm_interaction_vector(x)?.sum(1)
}

/// The bi-interaction vector `0.5 * ((sum_i v_i)^2 - sum_i v_i^2)`, `[n, d]` (the FM term
/// before summing over `d`; NFM's bi-interaction pooling).
pub fn fm_interaction_vector(x: &Tensor) -> Result<Tensor> {
    let s = super::sum_middle(x)?;
    let sq = super::sum_middle(&x.sqr()?)?;
    (s.sqr()? - sq)?.affine(0.5, 0.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{
        GradCheck, check_all_params_get_gradient, check_gradients, weighted_sum,
    };
    use crate::layers::test_util::input;

    #[test]
    fn matches_the_pairwise_sum_and_has_gradients() -> Result<()> {
        let x = input(&[2, 4, 3], 1)?;
        let got = fm_interaction(x.as_tensor())?.to_vec1::<f64>()?;
        let v = x.as_tensor().to_vec3::<f64>()?;
        for (s, sample) in v.iter().enumerate() {
            let mut want = 0.0;
            for i in 0..4 {
                for j in i + 1..4 {
                    want += (0..3).map(|k| sample[i][k] * sample[j][k]).sum::<f64>();
                }
            }
            assert!((got[s] - want).abs() < 1e-12);
        }
        let p = vec![("x".to_string(), x.clone())];
        check_gradients(
            &p,
            || weighted_sum(&fm_interaction(x.as_tensor())?, 1),
            &GradCheck::default(),
        )?;
        check_all_params_get_gradient(&p, &weighted_sum(&fm_interaction(x.as_tensor())?, 1)?)
    }
}
