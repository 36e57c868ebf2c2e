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

    /// The bi-interaction vector's gradient, with a different weight per dimension (the plain
    /// FM sum weighs every dimension alike and could hide a per-dimension mistake).
    #[test]
    fn interaction_vector_has_correct_gradients() -> Result<()> {
        let x = input(&[3, 5, 4], 2)?;
        let p = vec![("x".to_string(), x.clone())];
        let f = || weighted_sum(&fm_interaction_vector(x.as_tensor())?, 3);
        check_gradients(&p, f, &GradCheck::default())?;
        check_all_params_get_gradient(&p, &f()?)
    }

    use candle_core::{DType, Device};
    use proptest::prelude::*;

    /// `sum_{i<j} v_i[k] v_j[k]` for every sample and dimension `k`: the O(F^2) definition.
    fn pairwise(v: &[Vec<Vec<f64>>]) -> Vec<Vec<f64>> {
        v.iter()
            .map(|fields| {
                let d = fields[0].len();
                (0..d)
                    .map(|k| {
                        let mut acc = 0.0;
                        for i in 0..fields.len() {
                            for j in i + 1..fields.len() {
                                acc += fields[i][k] * fields[j][k];
                            }
                        }
                        acc
                    })
                    .collect()
            })
            .collect()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Both functions equal the pairwise definition for random `[n, F, d]` shapes (F = 1
        /// included: exactly 0), contiguous or not. The tolerance scales with
        /// `(sum_i |v_i[k]|)^2`, the size of the terms that cancel in the O(F d) form.
        #[test]
        fn equal_the_pairwise_sum_of_dot_products(
            n in 1usize..5, f in 1usize..8, d in 1usize..6,
            scale in prop_oneof![Just(1.0f64), Just(100.0)],
            seed in any::<u64>(), transposed: bool,
        ) {
            use rand::{Rng, SeedableRng};
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
            let v: Vec<Vec<Vec<f64>>> = (0..n)
                .map(|_| (0..f).map(|_| (0..d).map(|_| rng.random_range(-scale..scale)).collect()).collect())
                .collect();
            let flat: Vec<f64> = v.iter().flatten().flatten().copied().collect();
            let x = if transposed {
                // The same logical [n, F, d] tensor over a [n, d, F] buffer.
                let mut buf = vec![0.0; n * f * d];
                for s in 0..n {
                    for i in 0..f {
                        for k in 0..d {
                            buf[(s * d + k) * f + i] = v[s][i][k];
                        }
                    }
                }
                Tensor::from_vec(buf, (n, d, f), &Device::Cpu).unwrap().transpose(1, 2).unwrap()
            } else {
                Tensor::from_vec(flat, (n, f, d), &Device::Cpu).unwrap()
            };
            prop_assert_eq!(x.dtype(), DType::F64);
            let want = pairwise(&v);
            let vec = fm_interaction_vector(&x).unwrap().to_vec2::<f64>().unwrap();
            let sum = fm_interaction(&x).unwrap().to_vec1::<f64>().unwrap();
            prop_assert_eq!(vec.len(), n);
            prop_assert_eq!(sum.len(), n);
            for s in 0..n {
                prop_assert_eq!(vec[s].len(), d);
                let mut total_scale = 0.0;
                for k in 0..d {
                    let size: f64 = v[s].iter().map(|field| field[k].abs()).sum::<f64>().powi(2);
                    total_scale += size;
                    if f == 1 {
                        prop_assert_eq!(vec[s][k], 0.0);
                    }
                    prop_assert!((vec[s][k] - want[s][k]).abs() <= 1e-13 * (1.0 + size),
                        "sample {} dim {}: {} vs {}", s, k, vec[s][k], want[s][k]);
                }
                let w: f64 = want[s].iter().sum();
                prop_assert!((sum[s] - w).abs() <= 1e-13 * (1.0 + total_scale),
                    "sample {}: {} vs {}", s, sum[s], w);
            }
        }
    }
}
