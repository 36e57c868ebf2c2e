//! Differentiable building blocks: softmax, masked softmax, seeded dropout, and a cheap way to
//! cut a tracked tensor into time steps.

use candle_core::{D, Device, Result, Tensor};
use rand::Rng;

use crate::model::Ctx;

/// Softmax over `dim`, from differentiable ops (candle's `softmax_last_dim` has no backward).
/// The row maximum is subtracted first (and treated as a constant) for stability.
pub fn softmax<Dm: candle_core::shape::Dim + Copy>(x: &Tensor, dim: Dm) -> Result<Tensor> {
    if x.elem_count() == 0 {
        // An empty batch: nothing to normalize (candle refuses to reduce an empty tensor).
        return x.affine(1.0, 0.0);
    }
    let m = x.max_keepdim(dim)?.detach();
    let e = x.broadcast_sub(&m)?.exp()?;
    e.broadcast_div(&e.sum_keepdim(dim)?)
}

/// Softmax over the last dimension restricted to positions where `mask` (same shape and dtype,
/// 1 = valid, 0 = padding) is 1. Padding gets weight exactly 0 whatever its score, so padded
/// positions never change the result; a row without valid positions gets all zeros.
pub fn masked_softmax(x: &Tensor, mask: &Tensor) -> Result<Tensor> {
    // The row maximum over valid positions only (padding replaced by -inf through
    // `where_cond`, so even an infinite or NaN score at padding cannot leak through); a row
    // without valid positions has maximum -inf, clamped to -1e30 so that nothing is NaN. A
    // finite padding constant instead became the maximum of a row whose valid scores were all
    // below it, and the row came out all zeros.
    if x.elem_count() == 0 {
        // No rows (an empty batch) or no positions: nothing to normalize (candle refuses to
        // reduce an empty tensor).
        return x.affine(1.0, 0.0);
    }
    let keep = mask.ne(0.0)?;
    let neg_inf = x.ones_like()?.affine(0.0, f64::NEG_INFINITY)?;
    let m = keep
        .where_cond(x, &neg_inf)?
        .max_keepdim(D::Minus1)?
        .maximum(-1e30)?
        .detach();
    // Padding takes the row maximum (exp(0) = 1, then zeroed by the mask).
    let s = keep.where_cond(x, &m.broadcast_as(x.shape())?)?;
    let e = (s.broadcast_sub(&m)?.exp()? * mask)?;
    let z = e.sum_keepdim(D::Minus1)?.affine(1.0, 1e-30)?;
    e.broadcast_div(&z)
}

/// Inverted dropout with a mask drawn from `ctx.rng` (candle's own dropout draws from an
/// unseedable generator). Identity when `ctx.train` is false or `p == 0`.
pub fn dropout(x: &Tensor, p: f64, ctx: &mut Ctx) -> Result<Tensor> {
    if !ctx.train || p <= 0.0 {
        return Ok(x.clone());
    }
    if p >= 1.0 {
        return x.zeros_like();
    }
    let mask = dropout_mask(&mut ctx.rng, x.elem_count(), p);
    let mask = Tensor::from_vec(mask, x.shape(), &Device::Cpu)?
        .to_dtype(x.dtype())?
        .to_device(x.device())?;
    x * mask
}

/// The inverted-dropout mask of `n` elements: `1 / (1 - p)` where the element is kept, 0 where
/// it is dropped. Element `i` is kept when the `i`-th uniform `f64` of `rng` is at least `p`,
/// exactly as `rng.random::<f64>() >= p` drawn `n` times would decide; the words are drawn in
/// one bulk fill and the uniform is compared without building it as a float per call, which
/// made mask generation the largest hot spot of our own code in a DeepFM step
/// (docs/benchmarks.md).
fn dropout_mask(rng: &mut impl Rng, n: usize, p: f64) -> Vec<f32> {
    let keep = (1.0 / (1.0 - p)) as f32;
    let mut words = vec![0u64; n];
    rng.fill(&mut words[..]);
    // `random::<f64>()` is `(w >> 11) * 2^-53`; `>= p` is `(w >> 11) >= ceil(p * 2^53)`
    // (both sides are exact: p * 2^53 only scales the exponent).
    let threshold = (p * (1u64 << 53) as f64).ceil() as u64;
    words
        .iter()
        .map(|&w| if (w >> 11) >= threshold { keep } else { 0.0 })
        .collect()
}

/// Cuts `x` (`[T, ...]`) into its `T` slices along dimension 0.
///
/// Candle's backward of `narrow` pads the slice's gradient to the full input shape, so taking
/// `T` slices directly costs `O(T * size(x))` in backward. Halving recursively costs
/// `O(size(x) * log T)` instead: each level of the tree pads only to its parent's size. The LSTM
/// uses this to read its precomputed input projections step by step.
pub fn split_steps(x: &Tensor) -> Result<Vec<Tensor>> {
    fn rec(x: &Tensor, out: &mut Vec<Tensor>) -> Result<()> {
        let t = x.dim(0)?;
        if t == 1 {
            out.push(x.squeeze(0)?);
            return Ok(());
        }
        let h = t / 2;
        rec(&x.narrow(0, 0, h)?, out)?;
        rec(&x.narrow(0, h, t - h)?, out)
    }
    let mut out = Vec::with_capacity(x.dim(0)?);
    if x.dim(0)? > 0 {
        rec(x, &mut out)?;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::{GradCheck, check_gradients, random_var, weighted_sum};
    use candle_core::DType;
    use rand::SeedableRng;

    /// The bulk mask decides exactly as one `random::<f64>() >= p` per element would, for
    /// any generator position (a word already consumed) and probabilities at the edges.
    #[test]
    fn bulk_dropout_mask_equals_the_per_element_draws() {
        for seed in 0..20u64 {
            for &p in &[0.0, 1e-9, 0.1, 0.3, 0.5, 0.999_999] {
                for &(skip, n) in &[(0, 1), (0, 17), (1, 64), (1, 1000), (3, 4099)] {
                    let mut a = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
                    let mut b = a.clone();
                    for _ in 0..skip {
                        let _ = a.random::<u32>();
                        let _ = b.random::<u32>();
                    }
                    let keep = (1.0 / (1.0 - p)) as f32;
                    let want: Vec<f32> = (0..n)
                        .map(|_| if a.random::<f64>() >= p { keep } else { 0.0 })
                        .collect();
                    assert_eq!(dropout_mask(&mut b, n, p), want, "seed {seed} p {p} n {n}");
                    // Both generators end at the same position.
                    assert_eq!(a.random::<u64>(), b.random::<u64>());
                }
            }
        }
    }

    #[test]
    fn softmax_matches_reference_and_has_gradients() -> Result<()> {
        let x = random_var(&[3, 5], DType::F64, 3.0, 1)?;
        let s = softmax(x.as_tensor(), D::Minus1)?.to_vec2::<f64>()?;
        let xv = x.as_tensor().to_vec2::<f64>()?;
        for (r, row) in xv.iter().enumerate() {
            let z: f64 = row.iter().map(|v| v.exp()).sum();
            for c in 0..5 {
                assert!((s[r][c] - row[c].exp() / z).abs() < 1e-12);
            }
        }
        let p = vec![("x".to_string(), x.clone())];
        check_gradients(
            &p,
            || weighted_sum(&softmax(x.as_tensor(), 1)?, 2),
            &GradCheck::default(),
        )?;
        check_gradients(
            &p,
            || weighted_sum(&softmax(x.as_tensor(), 0)?, 2),
            &GradCheck::default(),
        )?;
        Ok(())
    }

    #[test]
    fn masked_softmax_ignores_padding_and_has_gradients() -> Result<()> {
        let d = Device::Cpu;
        let x = random_var(&[2, 4], DType::F64, 2.0, 3)?;
        let mask = Tensor::new(&[[1f64, 1.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], &d)?;
        let w = masked_softmax(x.as_tensor(), &mask)?.to_vec2::<f64>()?;
        let xv = x.as_tensor().to_vec2::<f64>()?;
        let z = xv[0][0].exp() + xv[0][1].exp();
        assert!((w[0][0] - xv[0][0].exp() / z).abs() < 1e-12);
        assert_eq!((w[0][2], w[0][3]), (0.0, 0.0));
        assert_eq!(w[1], vec![0.0; 4]);
        // Huge, infinite or undefined scores at padding change nothing.
        let big = Tensor::new(
            &[[0f64, 0.0, f64::INFINITY, f64::NAN], [0.0, 1e6, 0.0, 0.0]],
            &d,
        )?;
        let w2 = masked_softmax(&(x.as_tensor() + big)?, &mask)?.to_vec2::<f64>()?;
        assert!((w2[0][0] - w[0][0]).abs() < 1e-12);
        assert_eq!(w2[0][2..], [0.0, 0.0]);
        assert_eq!(w2[1], vec![0.0; 4]);
        let p = vec![("x".to_string(), x.clone())];
        check_gradients(
            &p,
            || weighted_sum(&masked_softmax(x.as_tensor(), &mask)?, 4),
            &GradCheck::default(),
        )?;
        Ok(())
    }

    /// An empty batch (no rows) or rows without positions come back empty, not as candle's
    /// "empty tensor for reduce" error.
    #[test]
    fn softmaxes_of_empty_tensors_are_empty() -> Result<()> {
        for shape in [(0usize, 4usize), (3, 0)] {
            let x = Tensor::zeros(shape, DType::F32, &Device::Cpu)?;
            assert_eq!(softmax(&x, D::Minus1)?.dims(), x.dims());
            assert_eq!(masked_softmax(&x, &x)?.dims(), x.dims());
        }
        Ok(())
    }

    #[test]
    fn dropout_is_seeded_scaled_and_off_in_eval() -> Result<()> {
        let x = Tensor::ones((100, 100), DType::F32, &Device::Cpu)?;
        let run = |seed| -> Result<Vec<f32>> {
            let mut ctx = Ctx::new(true, 0, rand_chacha::ChaCha8Rng::seed_from_u64(seed));
            dropout(&x, 0.3, &mut ctx)?.flatten_all()?.to_vec1::<f32>()
        };
        let (a, b, c) = (run(1)?, run(1)?, run(2)?);
        assert_eq!(a, b);
        assert_ne!(a, c);
        let kept = a.iter().filter(|&&v| v > 0.0).count() as f64 / 1e4;
        assert!((kept - 0.7).abs() < 0.03, "kept {kept}");
        assert!(a.iter().all(|&v| v == 0.0 || (v - 1.0 / 0.7).abs() < 1e-5));
        let mut eval = Ctx::eval();
        assert_eq!(
            dropout(&x, 0.3, &mut eval)?.sum_all()?.to_scalar::<f32>()?,
            1e4
        );
        Ok(())
    }

    #[test]
    fn split_steps_gives_every_slice_and_gradient() -> Result<()> {
        for t in [1usize, 2, 5, 8] {
            let x = random_var(&[t, 3], DType::F64, 1.0, t as u64)?;
            let steps = split_steps(x.as_tensor())?;
            assert_eq!(steps.len(), t);
            for (i, s) in steps.iter().enumerate() {
                assert_eq!(s.to_vec1::<f64>()?, x.as_tensor().get(i)?.to_vec1::<f64>()?);
            }
            let p = vec![("x".to_string(), x.clone())];
            check_gradients(
                &p,
                || {
                    let s = split_steps(x.as_tensor())?;
                    let mut acc = s[0].sqr()?;
                    for (i, si) in s.iter().enumerate().skip(1) {
                        acc = (acc + si.affine(i as f64, 0.0)?)?;
                    }
                    weighted_sum(&acc, 1)
                },
                &GradCheck::default(),
            )?;
        }
        Ok(())
    }

    // ---- Properties of softmax and masked softmax against an f64 reference. ----

    // Not the prelude glob: it would bring a second `Rng` next to `super::*`'s.
    use proptest::prelude::{
        Just, ProptestConfig, Strategy, prop, prop_assert, prop_assert_eq, prop_oneof, proptest,
    };

    /// Softmax in f64 over the positions of `row` where `keep` is true; the others get 0, and
    /// a row without a kept position is all zeros (masked_softmax's documented behaviour).
    fn reference_softmax(row: &[f64], keep: &[bool]) -> Vec<f64> {
        let kept = || row.iter().zip(keep).filter(|(_, k)| **k).map(|(x, _)| *x);
        let Some(m) = kept().reduce(f64::max) else {
            return vec![0.0; row.len()];
        };
        let z: f64 = kept().map(|x| (x - m).exp()).sum();
        row.iter()
            .zip(keep)
            .map(|(x, k)| if *k { (x - m).exp() / z } else { 0.0 })
            .collect()
    }

    /// Logits spread over ±1e3 (so a row easily spans 2000), small ones, and the extremes.
    fn logit() -> impl Strategy<Value = f64> {
        prop_oneof![
            3 => -1e3f64..1e3,
            3 => -3f64..3.0,
            1 => Just(1e3),
            1 => Just(-1e3),
        ]
    }

    /// Scores for padded positions: anything, including non-finite values.
    fn junk() -> impl Strategy<Value = f64> {
        prop_oneof![
            logit(),
            Just(f64::INFINITY),
            Just(f64::NEG_INFINITY),
            Just(f64::NAN),
            Just(1e30),
            Just(-1e30),
        ]
    }

    #[derive(Debug, Clone)]
    struct Case {
        rows: usize,
        cols: usize,
        x: Vec<f64>,
        keep: Vec<bool>,
        shift: Vec<f64>,
        junk: Vec<f64>,
    }

    /// `[rows, cols]` logits, a mask (fully masked rows are common for small `cols`), a
    /// constant per row and replacement scores for the padded positions.
    fn case() -> impl Strategy<Value = Case> {
        (1usize..5, 1usize..9).prop_flat_map(|(rows, cols)| {
            let n = rows * cols;
            (
                prop::collection::vec(logit(), n),
                prop::collection::vec(prop::bool::weighted(0.65), n),
                prop::collection::vec(-1e3f64..1e3, rows),
                prop::collection::vec(junk(), n),
            )
                .prop_map(move |(x, keep, shift, junk)| Case {
                    rows,
                    cols,
                    x,
                    keep,
                    shift,
                    junk,
                })
        })
    }

    impl Case {
        fn tensor(&self, v: Vec<f64>) -> Tensor {
            Tensor::from_vec(v, (self.rows, self.cols), &Device::Cpu).unwrap()
        }
        fn row<'a, T>(&self, v: &'a [T], r: usize) -> &'a [T] {
            &v[r * self.cols..(r + 1) * self.cols]
        }
        fn shifted(&self) -> Vec<f64> {
            (0..self.x.len())
                .map(|i| self.x[i] + self.shift[i / self.cols])
                .collect()
        }
        fn mask(&self) -> Tensor {
            self.tensor(self.keep.iter().map(|&k| k as u8 as f64).collect())
        }
    }

    fn flat(t: &Tensor) -> Vec<f64> {
        t.to_dtype(DType::F64)
            .unwrap()
            .flatten_all()
            .unwrap()
            .to_vec1::<f64>()
            .unwrap()
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// Rows sum to 1, entries equal the f64 reference and lie in [0, 1] (no NaN even for
        /// rows spanning ±1e3), adding a constant per row changes nothing, the softmax over
        /// dimension 0 is the transposed softmax over dimension 1, and f32 agrees too.
        #[test]
        fn softmax_properties(c in case()) {
            let all = vec![true; c.cols];
            let s = flat(&softmax(&c.tensor(c.x.clone()), D::Minus1).unwrap());
            for r in 0..c.rows {
                let want = reference_softmax(c.row(&c.x, r), &all);
                let got = c.row(&s, r);
                prop_assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-12, "row {} {:?}", r, got);
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!((0.0..=1.0).contains(g), "{:?}", got);
                    prop_assert!((g - w).abs() < 1e-12, "{:?} vs {:?}", got, want);
                }
            }
            let s2 = flat(&softmax(&c.tensor(c.shifted()), D::Minus1).unwrap());
            for (a, b) in s.iter().zip(&s2) {
                prop_assert!((a - b).abs() < 1e-10, "shift changed {} to {}", a, b);
            }
            let t = flat(&softmax(&c.tensor(c.x.clone()).t().unwrap(), 0).unwrap().t().unwrap());
            for (a, b) in s.iter().zip(&t) {
                prop_assert!((a - b).abs() < 1e-12, "dim 0 {} vs dim 1 {}", b, a);
            }
            // f32: compared with the reference of the rounded inputs.
            let x32 = c.tensor(c.x.clone()).to_dtype(DType::F32).unwrap();
            let xr = flat(&x32);
            let s32 = flat(&softmax(&x32, D::Minus1).unwrap());
            for r in 0..c.rows {
                let want = reference_softmax(c.row(&xr, r), &all);
                let got = c.row(&s32, r);
                prop_assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-5, "f32 row {:?}", got);
                for (g, w) in got.iter().zip(&want) {
                    prop_assert!(g.is_finite() && (g - w).abs() < 1e-6, "f32 {:?} vs {:?}", got, want);
                }
            }
        }

        /// Padded positions get exactly 0 and no gradient; rows with a valid position sum to 1
        /// and equal the reference over the valid positions; a fully padded row is all zeros;
        /// replacing padded scores by anything (±inf, NaN, ±1e30) gives the same bits; adding a
        /// constant per row changes nothing; f32 gives no NaN.
        #[test]
        fn masked_softmax_properties(c in case()) {
            let mask = c.mask();
            let x = candle_core::Var::from_tensor(&c.tensor(c.x.clone())).unwrap();
            let wt = masked_softmax(x.as_tensor(), &mask).unwrap();
            let w = flat(&wt);
            for r in 0..c.rows {
                let keep = c.row(&c.keep, r);
                let want = reference_softmax(c.row(&c.x, r), keep);
                let got = c.row(&w, r);
                let sum: f64 = got.iter().sum();
                if keep.contains(&true) {
                    prop_assert!((sum - 1.0).abs() < 1e-12, "row {} {:?}", r, got);
                } else {
                    prop_assert!(got.iter().all(|&v| v == 0.0), "fully padded row {:?}", got);
                }
                for ((g, wv), k) in got.iter().zip(&want).zip(keep) {
                    if !k {
                        prop_assert!(*g == 0.0, "padding got {}", g);
                    }
                    prop_assert!((0.0..=1.0).contains(g) && (g - wv).abs() < 1e-12,
                        "{:?} vs {:?} (mask {:?})", got, want, keep);
                }
            }
            // The gradient with respect to padded scores is exactly 0 (and finite elsewhere).
            let g = weighted_sum(&wt, 5).unwrap().backward().unwrap();
            let g = flat(g.get(x.as_tensor()).unwrap());
            for (gi, k) in g.iter().zip(&c.keep) {
                prop_assert!(gi.is_finite() && (*k || *gi == 0.0), "gradient {:?}", g);
            }
            let replaced: Vec<f64> = (0..c.x.len())
                .map(|i| if c.keep[i] { c.x[i] } else { c.junk[i] })
                .collect();
            let w2 = flat(&masked_softmax(&c.tensor(replaced), &mask).unwrap());
            prop_assert_eq!(
                w.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
                w2.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
            );
            let w3 = flat(&masked_softmax(&c.tensor(c.shifted()), &mask).unwrap());
            for (a, b) in w.iter().zip(&w3) {
                prop_assert!((a - b).abs() < 1e-10, "shift changed {} to {}", a, b);
            }
            let x32 = c.tensor(c.x.clone()).to_dtype(DType::F32).unwrap();
            let w32 = flat(&masked_softmax(&x32, &mask.to_dtype(DType::F32).unwrap()).unwrap());
            for r in 0..c.rows {
                let keep = c.row(&c.keep, r);
                let got = c.row(&w32, r);
                prop_assert!(got.iter().all(|v| v.is_finite()), "f32 {:?}", got);
                prop_assert!(got.iter().zip(keep).all(|(v, k)| *k || *v == 0.0), "f32 {:?}", got);
                if keep.contains(&true) {
                    prop_assert!((got.iter().sum::<f64>() - 1.0).abs() < 1e-5, "f32 {:?}", got);
                }
            }
        }
    }

    /// Valid scores far below any finite padding constant (the old -1e9 became the row
    /// maximum and the row's weights vanished) still sum to 1.
    #[test]
    fn masked_softmax_handles_valid_scores_below_the_padding_constant() -> Result<()> {
        let d = Device::Cpu;
        let with_pad = masked_softmax(
            &Tensor::new(&[[-2e9f64, 0.0]], &d)?,
            &Tensor::new(&[[1f64, 0.0]], &d)?,
        )?
        .to_vec2::<f64>()?;
        let without = masked_softmax(
            &Tensor::new(&[[-2e9f64]], &d)?,
            &Tensor::new(&[[1f64]], &d)?,
        )?
        .to_vec2::<f64>()?;
        assert_eq!(without, [[1.0]]);
        assert_eq!(with_pad, [[1.0, 0.0]]);
        Ok(())
    }
}
