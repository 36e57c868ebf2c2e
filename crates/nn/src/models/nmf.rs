//! Non-negative matrix factorization: MF whose factors are clipped at zero after every step
//! (the base model of the CEL paper's rating experiments).

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema};

use super::mf::{Mf, MfConfig};
use crate::embedding::{EmbeddingTable, TableFactory};
use crate::model::{Ctx, Model};

/// [`Mf`] with non-negative factors: the factor tables are clamped to `[0, inf)` when the
/// model is built and in every [`after_step`](Model::after_step) (tables clamp only the rows the
/// step touched). Biases are not constrained. A non-negative initialiser for the tables (e.g.
/// uniform on `[0, 0.1)`) avoids starting with half the factors at zero.
pub struct Nmf(Mf);

impl Nmf {
    /// Builds NMF for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &MfConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        Ok(Self(Mf::build(schema, cfg, factory, device, seed, true)?))
    }
}

impl Model for Nmf {
    fn name(&self) -> String {
        self.0.name()
    }
    fn schema(&self) -> &Schema {
        self.0.schema()
    }
    fn device(&self) -> &Device {
        self.0.device()
    }
    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        self.0.forward(batch, ctx)
    }
    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.0.dense_vars()
    }
    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.0.tables()
    }
    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.0.tables_mut()
    }
    fn after_step(&mut self, step: u64) -> Result<()> {
        self.0.after_step(step)
    }
}
