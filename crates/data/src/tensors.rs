//! Conversion of batch columns into candle tensors (behind the default `candle` feature).

use candle_core::{Device, Result, Tensor};

use crate::batch::{Batch, Column, Padded};

/// A `[n]` u32 tensor of IDs.
pub fn ids_tensor(ids: &[u32], device: &Device) -> Result<Tensor> {
    Tensor::from_slice(ids, ids.len(), device)
}

impl Batch {
    /// The labels of task `task` (by position) as a `[n]` f32 tensor.
    pub fn label_tensor(&self, task: usize, device: &Device) -> Result<Tensor> {
        let l = &self.labels[task];
        Tensor::from_slice(l, l.len(), device)
    }

    /// The sample weights as a `[n]` tensor, or `None` when every weight is 1.
    pub fn weight_tensor(&self, device: &Device) -> Result<Option<Tensor>> {
        self.weights
            .as_ref()
            .map(|w| Tensor::from_slice(w, w.len(), device))
            .transpose()
    }

    /// The dense field `name` as a `[n, dim]` tensor.
    pub fn dense_tensor(&self, name: &str, device: &Device) -> Result<Tensor> {
        match self.column(name) {
            Some(Column::Dense { values, dim }) => {
                Tensor::from_slice(values, (values.len() / dim, *dim), device)
            }
            _ => candle_core::bail!("`{name}` is not a dense field of this batch"),
        }
    }
}

impl Padded {
    /// The padded IDs as a `[n, max_len]` u32 tensor and the mask as a `[n, max_len]` f32 tensor.
    pub fn to_tensors(&self, device: &Device) -> Result<(Tensor, Tensor)> {
        let n = self.lengths.len();
        Ok((
            Tensor::from_slice(&self.ids, (n, self.max_len), device)?,
            Tensor::from_slice(&self.mask, (n, self.max_len), device)?,
        ))
    }
}
