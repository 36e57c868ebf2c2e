//! The input layer every model of the crate shares: global field embeddings, and DIN-style
//! target attention over the behaviour sequence when the data have one.
//!
//! - Every field that is not a sequence field (the scenario field included, as an ordinary
//!   feature) gets a vector from [`FeatureEmbedding`]: categorical fields their row, multi-hot
//!   fields their pooled rows, dense fields a projection.
//! - A behaviour sequence is one aligned group of sequence fields (e.g. `hist_item_id` and
//!   `hist_category`). Each of its fields must share the vocabulary (and so the table) of a
//!   non-sequence *target* field (`item_id`, `category`): the behaviour `j` is the concatenation
//!   of its fields' vectors, the query is the concatenation of the target fields' vectors, and
//!   [`TargetAttention`] pools the behaviours: `score_j = MLP([q; k_j; q * k_j; q - k_j])`,
//!   softmax over the valid positions.
//!
//! Tables are named `emb.{field}`; the layer never knows which table kind it holds.

use candle_core::{Device, Result, Tensor};
use rec_data::{Batch, FieldKind, Schema};
use rec_nn::embedding::pooling::padded_lookup;
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};
use rec_nn::features::FeatureEmbedding;
use rec_nn::layers::{MlpConfig, TargetAttention};
use rec_nn::model::Ctx;

use crate::nn::{VarStore, join};

/// The behaviour sequence of a schema: its fields and the target fields they attend from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sequence {
    /// Name of the aligned group.
    pub group: String,
    /// The sequence fields, in schema order.
    pub fields: Vec<String>,
    /// For each sequence field, the non-sequence field whose table it shares (the query).
    pub targets: Vec<String>,
}

impl Sequence {
    /// The behaviour sequence of `schema`, if it has one. More than one group, or a sequence
    /// field without a target field, is an error that names the field.
    pub fn of_schema(schema: &Schema) -> Result<Option<Sequence>> {
        let seq: Vec<_> = schema
            .fields
            .iter()
            .filter(|f| f.kind == FieldKind::Sequence)
            .collect();
        let Some(first) = seq.first() else {
            return Ok(None);
        };
        let group = first.group.clone().unwrap_or_default();
        let mut fields = Vec::new();
        let mut targets = Vec::new();
        for f in seq {
            if f.group.as_deref() != Some(group.as_str()) {
                candle_core::bail!(
                    "the multi-scenario models attend over one behaviour sequence; field `{}` is in group `{}`, not `{group}`",
                    f.name,
                    f.group.as_deref().unwrap_or("")
                );
            }
            let target = f
                .shares_vocab_with
                .as_deref()
                .and_then(|t| schema.field(t))
                .filter(|t| t.kind != FieldKind::Sequence && t.kind != FieldKind::MultiHot)
                .filter(|t| !matches!(t.kind, FieldKind::Dense { .. }))
                .ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "sequence field `{}` must share the vocabulary of a categorical target field (e.g. `hist_item_id` shares `item_id`) to be attended from it",
                        f.name
                    ))
                })?;
            fields.push(f.name.clone());
            targets.push(target.name.clone());
        }
        Ok(Some(Sequence {
            group,
            fields,
            targets,
        }))
    }
}

/// What the input layer gives for a batch.
pub struct InputOutput {
    /// One `[n, dim]` vector per non-sequence field, in [`InputLayer::field_names`] order.
    pub fields: Vec<Tensor>,
    /// The query `[n, w]` (target fields' vectors), with a sequence.
    pub target: Option<Tensor>,
    /// The behaviours `[n, T, w]` and their mask `[n, T]`, with a sequence.
    pub behaviours: Option<(Tensor, Tensor)>,
    /// The attended behaviours `[n, w]` (global attention), with a sequence.
    pub attended: Option<Tensor>,
}

impl InputOutput {
    /// The field vectors and the attended behaviours concatenated: `[n, width]`.
    pub fn concat(&self) -> Result<Tensor> {
        self.concat_without(None)
    }

    /// As [`concat`](Self::concat) without field `skip` (an index into `fields`), if given.
    pub fn concat_without(&self, skip: Option<usize>) -> Result<Tensor> {
        let mut parts: Vec<&Tensor> = self
            .fields
            .iter()
            .enumerate()
            .filter(|(i, _)| Some(*i) != skip)
            .map(|(_, t)| t)
            .collect();
        parts.extend(self.attended.as_ref());
        Tensor::cat(&parts, 1)
    }
}

struct SeqPart {
    seq: Sequence,
    /// Position of each target field among the embedded fields.
    target_index: Vec<usize>,
    attention: TargetAttention,
}

/// See the [module documentation](self).
pub struct InputLayer {
    features: FeatureEmbedding,
    seq: Option<SeqPart>,
    dim: usize,
    max_history: Option<usize>,
    device: Device,
}

impl InputLayer {
    /// The input layer of `schema` with vectors of width `dim`. Variables and tables are
    /// created under `prefix` (`{prefix}.emb.*`, `{prefix}.attention.*`).
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        schema: &Schema,
        dim: usize,
        pooling: Pooling,
        attention: &MlpConfig,
        max_history: Option<usize>,
        prefix: &str,
        factory: &mut TableFactory<'_>,
        vs: &mut VarStore,
    ) -> Result<Self> {
        if max_history == Some(0) {
            // Padding keeps at least one position, so 0 would silently mean 1.
            candle_core::bail!(
                "max_history must be at least 1 (leave it out to keep whole histories)"
            );
        }
        let names: Vec<&str> = schema
            .fields
            .iter()
            .filter(|f| f.kind != FieldKind::Sequence)
            .map(|f| f.name.as_str())
            .collect();
        let features = FeatureEmbedding::new(
            schema,
            Some(&names),
            dim,
            pooling,
            None,
            prefix,
            factory,
            vs,
        )?;
        let seq = match Sequence::of_schema(schema)? {
            None => None,
            Some(seq) => {
                let target_index = seq
                    .targets
                    .iter()
                    .map(|t| {
                        names
                            .iter()
                            .position(|n| n == t)
                            .expect("targets are fields")
                    })
                    .collect();
                let width = dim * seq.fields.len();
                let attention =
                    TargetAttention::new(vs, &join(prefix, "attention"), width, attention)?;
                Some(SeqPart {
                    seq,
                    target_index,
                    attention,
                })
            }
        };
        Ok(Self {
            features,
            seq,
            dim,
            max_history,
            device: vs.device().clone(),
        })
    }

    /// Width of every field vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Names of the embedded (non-sequence) fields, in output order.
    pub fn field_names(&self) -> Vec<&str> {
        self.features.field_names()
    }

    /// The behaviour sequence, if the schema has one.
    pub fn sequence(&self) -> Option<&Sequence> {
        self.seq.as_ref().map(|s| &s.seq)
    }

    /// Width of a behaviour (and of the query): `dim` times the sequence fields; 0 without one.
    pub fn behaviour_width(&self) -> usize {
        self.seq
            .as_ref()
            .map_or(0, |s| self.dim * s.seq.fields.len())
    }

    /// Width of [`InputOutput::concat`].
    pub fn width(&self) -> usize {
        self.features.num_fields() * self.dim + self.behaviour_width()
    }

    /// The vectors of `batch` (lookups differentiable when `ctx.train`).
    pub fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<InputOutput> {
        let out = self.features.forward(batch, ctx.train)?;
        let fields = out.fields;
        let Some(sp) = &self.seq else {
            return Ok(InputOutput {
                fields,
                target: None,
                behaviours: None,
                attended: None,
            });
        };
        let target = Tensor::cat(
            &sp.target_index
                .iter()
                .map(|&i| &fields[i])
                .collect::<Vec<_>>(),
            1,
        )?;
        let mut parts = Vec::with_capacity(sp.seq.fields.len());
        let mut mask = None;
        for (f, t) in sp.seq.fields.iter().zip(&sp.seq.targets) {
            let padded = batch.padded(f, self.max_history).ok_or_else(|| {
                candle_core::Error::Msg(format!("batch has no sequence column `{f}`"))
            })?;
            let table = self.features.embeddings_mut().table_mut(t)?;
            let (e, m) = padded_lookup(table, &padded, ctx.train, &self.device)?;
            parts.push(e);
            mask.get_or_insert(m);
        }
        let behaviours = Tensor::cat(&parts, 2)?;
        let mask = mask.expect("a sequence has at least one field");
        let attended = sp
            .attention
            .forward(&target, &behaviours, &behaviours, &mask, ctx)?
            .output;
        Ok(InputOutput {
            fields,
            target: Some(target),
            behaviours: Some((behaviours, mask)),
            attended: Some(attended),
        })
    }

    /// The tables with their names, sorted by name.
    pub fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.features.tables()
    }

    /// The tables with their names, mutable, sorted by name.
    pub fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.features.tables_mut()
    }
}
