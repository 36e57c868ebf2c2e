//! Multi-hot and sequence fields on top of any table's lookup.
//!
//! Only real IDs are looked up (padding never touches a row, so no optimizer state moves for
//! it); the vectors are then summed per sample with `index_add` ([`pooled_lookup`]) or laid out
//! as a padded `[n, T, dim]` tensor with a mask ([`padded_lookup`]).

use candle_core::{D, DType, Device, Result, Tensor};
use rec_data::{Column, Padded};
use serde::{Deserialize, Serialize};

use super::EmbeddingTable;

/// How the vectors of a bag are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pooling {
    /// Sum of the vectors (zero for an empty bag).
    Sum,
    /// Mean of the vectors (zero for an empty bag).
    #[default]
    Mean,
}

/// One `[n, dim]` vector per sample of `column`: the looked-up vector for a categorical column,
/// the pooled vectors of the bag for a ragged (multi-hot or sequence) column.
pub fn pooled_lookup(
    table: &mut dyn EmbeddingTable,
    column: &Column,
    pooling: Pooling,
    train: bool,
    device: &Device,
) -> Result<Tensor> {
    let (values, offsets) = match column {
        Column::Ids(ids) => return table.lookup(ids, train),
        Column::Ragged { values, offsets } => (values, offsets),
        Column::Dense { .. } => candle_core::bail!("a dense column has no IDs to look up"),
    };
    let n = offsets.len().saturating_sub(1);
    let dim = table.dim();
    if values.is_empty() {
        return Tensor::zeros((n, dim), DType::F32, device);
    }
    let mut segment = Vec::with_capacity(values.len());
    let mut scale = Vec::with_capacity(n);
    for i in 0..n {
        let len = offsets[i + 1].checked_sub(offsets[i]).ok_or_else(|| {
            candle_core::Error::Msg(format!("ragged column has decreasing offsets at row {i}"))
        })?;
        segment.extend(std::iter::repeat_n(i as u32, len as usize));
        scale.push(match pooling {
            Pooling::Sum => 1.0f32,
            Pooling::Mean => 1.0 / (len.max(1) as f32),
        });
    }
    if segment.len() != values.len() {
        candle_core::bail!(
            "ragged column has {} values but its offsets cover {}",
            values.len(),
            segment.len()
        );
    }
    let e = table.lookup(values, train)?;
    let seg = Tensor::from_vec(segment, values.len(), device)?;
    let sum = Tensor::zeros((n, dim), e.dtype(), device)?.index_add(&seg, &e, 0)?;
    match pooling {
        Pooling::Sum => Ok(sum),
        Pooling::Mean => {
            let s = Tensor::from_vec(scale, (n, 1), device)?.to_dtype(e.dtype())?;
            sum.broadcast_mul(&s)
        }
    }
}

/// The IDs of a padded sequence as a `[n, T, dim]` tensor (zeros at padding) and its
/// `[n, T]` mask (1 at real positions, 0 at padding).
pub fn padded_lookup(
    table: &mut dyn EmbeddingTable,
    padded: &Padded,
    train: bool,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let n = padded.lengths.len();
    let t = padded.max_len;
    let dim = table.dim();
    let mut real = Vec::new();
    let mut index = Vec::with_capacity(n * t);
    for (&id, &m) in padded.ids.iter().zip(&padded.mask) {
        if m != 0.0 {
            index.push(real.len() as u32);
            real.push(id);
        } else {
            index.push(u32::MAX);
        }
    }
    let mask = Tensor::from_slice(&padded.mask, (n, t), device)?;
    if real.is_empty() {
        return Ok((Tensor::zeros((n, t, dim), DType::F32, device)?, mask));
    }
    // Padding points at an extra zero row appended after the real vectors.
    let pad = real.len() as u32;
    index
        .iter_mut()
        .filter(|i| **i == u32::MAX)
        .for_each(|i| *i = pad);
    let e = table.lookup(&real, train)?;
    let e = Tensor::cat(&[&e, &Tensor::zeros((1, dim), e.dtype(), device)?], 0)?;
    let idx = Tensor::from_vec(index, n * t, device)?;
    Ok((e.index_select(&idx, 0)?.reshape((n, t, dim))?, mask))
}

/// Masked pooling of a padded `[n, T, dim]` tensor over `T` (`mask` is `[n, T]`, same dtype).
pub fn pool(x: &Tensor, mask: &Tensor, pooling: Pooling) -> Result<Tensor> {
    let m = mask.unsqueeze(D::Minus1)?;
    let sum = crate::layers::sum_middle(&x.broadcast_mul(&m)?)?;
    match pooling {
        Pooling::Sum => Ok(sum),
        Pooling::Mean => {
            let len = mask.sum_keepdim(1)?.clamp(1.0, f64::INFINITY)?;
            sum.broadcast_div(&len)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::{FullTable, TableOptions};
    use crate::init::{Init, named_rng};
    use crate::optim::OptimizerConfig;

    fn table() -> FullTable {
        let opts = TableOptions::new(
            Init::Normal {
                mean: 0.0,
                std: 1.0,
            },
            OptimizerConfig::sgd(1.0),
        );
        FullTable::new(10, 3, &opts, &mut named_rng(1, "p"), &Device::Cpu).unwrap()
    }

    fn row(t: &FullTable, r: usize) -> Vec<f32> {
        t.rows().row(r).to_vec()
    }

    #[test]
    fn sum_and_mean_pooling_with_empty_bags() -> Result<()> {
        let d = Device::Cpu;
        let mut t = table();
        let col = Column::Ragged {
            values: vec![1, 2, 3, 4],
            offsets: vec![0, 2, 2, 4],
        };
        let s = pooled_lookup(&mut t, &col, Pooling::Sum, false, &d)?.to_vec2::<f32>()?;
        let m = pooled_lookup(&mut t, &col, Pooling::Mean, false, &d)?.to_vec2::<f32>()?;
        for k in 0..3 {
            let a = row(&t, 1)[k] + row(&t, 2)[k];
            let b = row(&t, 3)[k] + row(&t, 4)[k];
            assert!((s[0][k] - a).abs() < 1e-6 && (s[2][k] - b).abs() < 1e-6);
            assert!((m[0][k] - a / 2.0).abs() < 1e-6 && (m[2][k] - b / 2.0).abs() < 1e-6);
            assert_eq!((s[1][k], m[1][k]), (0.0, 0.0));
        }
        Ok(())
    }

    #[test]
    fn mean_pooling_gradient_reaches_each_row_scaled() -> Result<()> {
        let d = Device::Cpu;
        let mut t = table();
        let before = [row(&t, 1), row(&t, 5)];
        let col = Column::Ragged {
            values: vec![1, 5, 5, 1],
            offsets: vec![0, 4],
        };
        let out = pooled_lookup(&mut t, &col, Pooling::Mean, true, &d)?;
        t.apply_gradients(&out.sum_all()?.backward()?)?;
        // Each of rows 1 and 5 appears twice in a bag of 4: gradient 2 * 1/4.
        for (r, b) in [1usize, 5].into_iter().zip(&before) {
            for (now, was) in row(&t, r).iter().zip(b) {
                assert!((now - (was - 0.5)).abs() < 1e-6);
            }
        }
        Ok(())
    }

    #[test]
    fn padded_lookup_zeroes_padding_and_touches_only_real_rows() -> Result<()> {
        let d = Device::Cpu;
        let mut t = table();
        let p = Padded {
            ids: vec![3, 4, 0, 0, 0, 0],
            mask: vec![1.0, 1.0, 0.0, 0.0, 0.0, 0.0],
            lengths: vec![2, 0],
            max_len: 3,
        };
        let w0 = row(&t, 0);
        let (x, mask) = padded_lookup(&mut t, &p, true, &d)?;
        assert_eq!(x.dims(), &[2, 3, 3]);
        let v = x.to_vec3::<f32>()?;
        assert_eq!(v[0][1], row(&t, 4));
        assert_eq!(v[0][2], vec![0.0; 3]);
        assert_eq!(v[1][0], vec![0.0; 3]);
        let pooled = pool(&x, &mask, Pooling::Mean)?;
        t.apply_gradients(&pooled.sum_all()?.backward()?)?;
        assert_eq!(row(&t, 0), w0, "the padding ID's row must not move");
        Ok(())
    }
}
