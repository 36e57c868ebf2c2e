//! Wide & Deep with one output per task, multi-class tasks included: the per-task baseline of
//! DUPN's Table 2 (rec-nn's Wide&Deep predicts binary and regression tasks only).

use candle_core::{Device, Result, Tensor, Var};
use rec_data::{Batch, Schema, TaskKind};
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};
use rec_nn::features::FeatureEmbedding;
use rec_nn::init::VarStore;
use rec_nn::layers::{Mlp, MlpConfig};
use rec_nn::{Ctx, Model};
use serde::{Deserialize, Serialize};

fn d_dim() -> usize {
    16
}

fn d_mlp() -> MlpConfig {
    MlpConfig {
        hidden: vec![128, 64],
        dropout: 0.2,
        ..MlpConfig::default()
    }
}

/// Hyperparameters of [`TaskWideDeep`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TaskWideDeepConfig {
    /// Width of every field vector (default 16, DUPN's `item_dim`).
    #[serde(default = "d_dim")]
    pub dim: usize,
    /// The deep part (default hidden `[128, 64]`, ReLU, dropout 0.2).
    #[serde(default = "d_mlp")]
    pub mlp: MlpConfig,
    /// Fields to use (default: every field; sequence and multi-hot fields are mean-pooled).
    #[serde(default)]
    pub fields: Option<Vec<String>>,
}

impl Default for TaskWideDeepConfig {
    fn default() -> Self {
        Self {
            dim: d_dim(),
            mlp: d_mlp(),
            fields: None,
        }
    }
}

/// `y = wide (first-order terms of every field) + deep (MLP on the concatenated field
/// vectors)`, with one logit per binary/regression task and one per class of a multi-class
/// task. Behaviour sequences enter as mean-pooled bags (each history field separately), which
/// is what a model without a sequence encoder can do with them.
pub struct TaskWideDeep {
    schema: Schema,
    vs: VarStore,
    features: FeatureEmbedding,
    mlp: Mlp,
    widths: Vec<usize>,
}

impl TaskWideDeep {
    /// Builds the model for `schema`.
    pub fn new(
        schema: &Schema,
        cfg: &TaskWideDeepConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        schema
            .validate()
            .map_err(|e| candle_core::Error::Msg(format!("task_widedeep: invalid schema: {e}")))?;
        if schema.tasks.is_empty() {
            candle_core::bail!("task_widedeep: the schema has no task to predict");
        }
        let widths: Vec<usize> = schema
            .tasks
            .iter()
            .map(|t| match t.kind {
                TaskKind::Multiclass { classes } => classes,
                _ => 1,
            })
            .collect();
        let total: usize = widths.iter().sum();
        let mut vs = VarStore::new(seed, device);
        let names: Option<Vec<&str>> = cfg
            .fields
            .as_ref()
            .map(|f| f.iter().map(String::as_str).collect());
        let features = FeatureEmbedding::new(
            schema,
            names.as_deref(),
            cfg.dim,
            Pooling::Mean,
            Some(total),
            "",
            factory,
            &mut vs,
        )?;
        let mlp = Mlp::new(
            &mut vs,
            "mlp",
            features.num_fields() * cfg.dim,
            &cfg.mlp,
            Some(total),
        )?;
        Ok(Self {
            schema: schema.clone(),
            vs,
            features,
            mlp,
            widths,
        })
    }
}

impl Model for TaskWideDeep {
    fn name(&self) -> String {
        "task_widedeep".into()
    }

    fn former_names(&self) -> &[&str] {
        &["task_wide_deep"]
    }

    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn device(&self) -> &Device {
        self.vs.device()
    }

    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let out = self.features.forward(batch, ctx.train)?;
        let deep = self.mlp.forward(&out.concat()?, ctx)?;
        let wide = out.linear.expect("first-order terms are configured");
        let y = (wide + deep)?;
        let mut at = 0;
        let mut outs = Vec::with_capacity(self.widths.len());
        for (t, &w) in self.widths.iter().enumerate() {
            let part = y.narrow(1, at, w)?;
            at += w;
            outs.push(match self.schema.tasks[t].kind {
                TaskKind::Multiclass { .. } => part,
                _ => part.squeeze(1)?,
            });
        }
        Ok(outs)
    }

    fn dense_vars(&self) -> Vec<(String, Var)> {
        self.vs.vars()
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        self.vs.buffers()
    }

    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.features.tables()
    }

    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.features.tables_mut()
    }
}
