//! DIN-style target attention (Zhou et al., "Deep Interest Network", KDD 2018) with masking.

use candle_core::{D, Result, Tensor};

use super::linear::Linear;
use super::mlp::{Mlp, MlpConfig};
use super::ops::masked_softmax;
use crate::init::{VarStore, join};
use crate::model::Ctx;

/// Result of an attention pass.
pub struct AttentionOutput {
    /// Weighted sum of the values, `[n, dv]`.
    pub output: Tensor,
    /// Attention weights, `[n, T]` (0 at padding; each row sums to 1, or 0 when the row has
    /// no valid position).
    pub weights: Tensor,
}

/// Scores every key `k_j` against the query `q` with an MLP on `[q; k_j; q * k_j; q - k_j]`
/// (DIN's activation unit), normalizes the scores with a softmax over the valid positions, and
/// returns the weighted sum of the values. Padding never changes the result.
///
/// Variables: `{prefix}.mlp.*` (hidden layers) and `{prefix}.score.*` (the scalar output).
pub struct TargetAttention {
    mlp: Mlp,
    score: Linear,
    dim: usize,
}

impl TargetAttention {
    /// Attention for queries and keys of width `dim`, with the scoring MLP `mlp`.
    pub fn new(vs: &mut VarStore, prefix: &str, dim: usize, mlp: &MlpConfig) -> Result<Self> {
        if mlp.norm == super::mlp::Norm::Batch {
            // Its statistics would mix the padded positions of the batch's histories in,
            // so padding would change the scores (layer norm is per position, and fine).
            candle_core::bail!(
                "attention `{prefix}`: norm = \"batch\" is not supported in an attention MLP \
                 (padding would enter its statistics); use \"layer\" or none"
            );
        }
        let m = Mlp::new(vs, &join(prefix, "mlp"), 4 * dim, mlp, None)?;
        let score = Linear::new(vs, &join(prefix, "score"), m.out_dim(), 1)?;
        Ok(Self { mlp: m, score, dim })
    }

    /// Unnormalized scores `[n, T]` of `keys: [n, T, d]` against `query: [n, d]`.
    pub fn scores(&self, query: &Tensor, keys: &Tensor, ctx: &mut Ctx) -> Result<Tensor> {
        let (n, t, d) = keys.dims3()?;
        if d != self.dim || query.dims() != [n, d] {
            candle_core::bail!(
                "attention of width {} got query {:?} and keys {:?}",
                self.dim,
                query.dims(),
                keys.dims()
            );
        }
        let q = query.unsqueeze(1)?.broadcast_as((n, t, d))?;
        let feats = Tensor::cat(&[&q, keys, &(&q * keys)?, &(&q - keys)?], D::Minus1)?;
        let h = self.mlp.forward(&feats.reshape((n * t, 4 * d))?, ctx)?;
        self.score.forward(&h)?.reshape((n, t))
    }

    /// Attends over `values: [n, T, dv]` (pass the keys again for DIN) with `mask: [n, T]`
    /// (1 = valid, 0 = padding, same dtype as the scores).
    pub fn forward(
        &self,
        query: &Tensor,
        keys: &Tensor,
        values: &Tensor,
        mask: &Tensor,
        ctx: &mut Ctx,
    ) -> Result<AttentionOutput> {
        let s = self.scores(query, keys, ctx)?;
        let weights = masked_softmax(&s, &mask.to_dtype(s.dtype())?)?;
        let output = super::sum_middle(&values.broadcast_mul(&weights.unsqueeze(D::Minus1)?)?)?;
        Ok(AttentionOutput { output, weights })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::gradcheck::weighted_sum;
    use crate::layers::test_util::{check_layer, input, store};
    use candle_core::{DType, Device};

    fn layer(vs: &mut VarStore) -> TargetAttention {
        TargetAttention::new(vs, "att", 3, &MlpConfig::new(&[8, 4])).unwrap()
    }

    #[test]
    fn gradients_reach_every_parameter_query_and_key() -> Result<()> {
        let mut vs = store();
        let att = layer(&mut vs);
        let q = input(&[2, 3], 1)?;
        let k = input(&[2, 4, 3], 2)?;
        let mask = Tensor::new(&[[1f64, 1.0, 1.0, 0.0], [1.0, 1.0, 0.0, 0.0]], &Device::Cpu)?;
        check_layer(&vs, &[("q", &q), ("k", &k)], || {
            let o = att.forward(
                q.as_tensor(),
                k.as_tensor(),
                k.as_tensor(),
                &mask,
                &mut Ctx::eval(),
            )?;
            weighted_sum(&o.output, 7)
        })
    }

    #[test]
    fn a_batch_norm_attention_mlp_is_refused() {
        let mut vs = store();
        let mut cfg = MlpConfig::new(&[8]);
        cfg.norm = super::super::mlp::Norm::Batch;
        let e = TargetAttention::new(&mut vs, "att", 3, &cfg)
            .err()
            .unwrap()
            .to_string();
        assert!(e.contains("padding"), "{e}");
        cfg.norm = super::super::mlp::Norm::Layer;
        TargetAttention::new(&mut vs, "att2", 3, &cfg).unwrap();
    }

    #[test]
    fn padding_does_not_change_the_result() -> Result<()> {
        let d = Device::Cpu;
        let mut vs = store();
        let att = layer(&mut vs);
        let q = input(&[2, 3], 1)?;
        let k = input(&[2, 2, 3], 2)?;
        let mask = Tensor::ones((2, 2), DType::F64, &d)?;
        let short = att.forward(
            q.as_tensor(),
            k.as_tensor(),
            k.as_tensor(),
            &mask,
            &mut Ctx::eval(),
        )?;
        // Three padded positions holding garbage.
        let garbage = input(&[2, 3, 3], 9)?.as_tensor().affine(100.0, 0.0)?;
        let long_k = Tensor::cat(&[k.as_tensor(), &garbage], 1)?;
        let long_mask = Tensor::cat(&[&mask, &Tensor::zeros((2, 3), DType::F64, &d)?], 1)?;
        let long = att.forward(
            q.as_tensor(),
            &long_k,
            &long_k,
            &long_mask,
            &mut Ctx::eval(),
        )?;
        let (a, b) = (
            short.output.to_vec2::<f64>()?,
            long.output.to_vec2::<f64>()?,
        );
        for (x, y) in a.iter().flatten().zip(b.iter().flatten()) {
            assert!((x - y).abs() < 1e-12);
        }
        let w = long.weights.to_vec2::<f64>()?;
        assert!(w.iter().all(|r| r[2..].iter().all(|&x| x == 0.0)));
        assert!(
            w.iter()
                .all(|r| (r.iter().sum::<f64>() - 1.0).abs() < 1e-12)
        );
        Ok(())
    }
}
