//! The DUPN model: behaviour embedding, sequence encoder, representation and task heads.

use candle_core::{DType, Device, Result, Tensor, Var};
use rec_data::{Batch, Column, FieldKind, Schema, TaskKind};
use rec_nn::embedding::factory::{sorted_tables, sorted_tables_mut, table_owner};
use rec_nn::embedding::pooling::{padded_lookup, pool, pooled_lookup};
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory, TableSet};
use rec_nn::init::{Init, VarStore, join};
use rec_nn::layers::{Activation, Linear, Lstm, Mlp, MlpConfig, dropout};
use rec_nn::{Ctx, Model};

use crate::attention::BehaviourAttention;
use crate::config::{DupnConfig, EncoderKind, HeadConfig, LossWeighting};
use crate::gated_lstm::PropertyGatedLstm;
use crate::loss::weighted_pointwise_logistic;

/// Which schema fields play which role (see [`DupnConfig`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Roles {
    /// Item part of a behaviour: history fields sharing a vocabulary, in schema order.
    pub item_history: Vec<String>,
    /// For each item-part history field, the target-side field whose table it uses (the
    /// target item's features, in the same order).
    pub item_target: Vec<String>,
    /// Property part of a behaviour: the other history fields, in schema order.
    pub property_history: Vec<String>,
    /// User profile fields present in the schema.
    pub profile: Vec<String>,
    /// The query field, if the schema has it.
    pub query: Option<String>,
}

impl Roles {
    /// The roles of `schema`'s fields under `cfg`.
    pub fn of(schema: &Schema, cfg: &DupnConfig) -> Result<Roles> {
        let mut r = Roles {
            item_history: Vec::new(),
            item_target: Vec::new(),
            property_history: Vec::new(),
            profile: Vec::new(),
            query: None,
        };
        for f in &schema.fields {
            if f.kind != FieldKind::Sequence || f.group.as_deref() != Some(&cfg.history_group) {
                continue;
            }
            if f.shares_vocab_with.is_some() {
                r.item_history.push(f.name.clone());
                r.item_target.push(table_owner(schema, f)?.name.clone());
            } else {
                r.property_history.push(f.name.clone());
            }
        }
        if r.item_history.is_empty() {
            candle_core::bail!(
                "dupn: the schema has no history field of group `{}` that shares an item \
                 vocabulary (e.g. `hist_item_id` sharing `item_id`)",
                cfg.history_group
            );
        }
        // The defaults name the fields of the synthetic generator's schema and are skipped
        // where a schema lacks them; a name the configuration sets must be in the schema, so
        // that a typo is an error rather than a model without that input.
        let named = |kind: FieldKind| {
            schema
                .fields
                .iter()
                .filter(|f| f.kind == kind)
                .map(|f| format!("`{}`", f.name))
                .collect::<Vec<_>>()
                .join(", ")
        };
        let default_profile = cfg.profile == crate::config::d_profile();
        for p in &cfg.profile {
            match schema.field(p) {
                Some(f) if f.kind == FieldKind::Categorical => r.profile.push(p.clone()),
                Some(_) => candle_core::bail!("dupn: profile field `{p}` is not categorical"),
                None if default_profile => {}
                None => candle_core::bail!(
                    "dupn: profile field `{p}` is not in the schema (its categorical fields: {})",
                    named(FieldKind::Categorical)
                ),
            }
        }
        r.query = match schema.field(&cfg.query) {
            _ if cfg.query.is_empty() => None,
            Some(f) if f.kind == FieldKind::MultiHot => Some(f.name.clone()),
            Some(_) => candle_core::bail!("dupn: query field `{}` is not multi-hot", cfg.query),
            None if cfg.query == crate::config::d_query() => None,
            None => candle_core::bail!(
                "dupn: query field `{}` is not in the schema (its multi-hot fields: {})",
                cfg.query,
                named(FieldKind::MultiHot)
            ),
        };
        Ok(r)
    }
}

/// A shallow MLP on `[rep; x]` whose first layer is split into a `rep` block and an `x` block,
/// so that the `rep` block can be computed once per user and reused for many `x` (network
/// disassembly). Same function as an MLP on the concatenation.
pub(crate) struct SplitMlp {
    rep: Linear,
    x: Option<Linear>,
    activation: Activation,
    dropout: f64,
    rest: Option<Mlp>,
}

impl SplitMlp {
    fn new(
        vs: &mut VarStore,
        prefix: &str,
        rep: usize,
        x: usize,
        cfg: &MlpConfig,
        out: usize,
    ) -> Result<Self> {
        let first = cfg.hidden.first().copied().unwrap_or(out);
        let init = if cfg.hidden.is_empty() {
            Init::XavierUniform
        } else if cfg.activation == Activation::Relu {
            Init::HeUniform
        } else {
            Init::XavierUniform
        };
        let rep_l = Linear::with_init(vs, &join(prefix, "rep"), rep, first, true, init)?;
        let x_l = (x > 0)
            .then(|| Linear::with_init(vs, &join(prefix, "x"), x, first, false, init))
            .transpose()?;
        let rest = if cfg.hidden.is_empty() {
            None
        } else {
            let rc = MlpConfig {
                hidden: cfg.hidden[1..].to_vec(),
                ..cfg.clone()
            };
            Some(Mlp::new(vs, &join(prefix, "rest"), first, &rc, Some(out))?)
        };
        Ok(Self {
            rep: rep_l,
            x: x_l,
            activation: cfg.activation,
            dropout: cfg.dropout,
            rest,
        })
    }

    /// The `rep` block of the first layer, `[n, first]`.
    pub(crate) fn rep_part(&self, rep: &Tensor) -> Result<Tensor> {
        self.rep.forward(rep)
    }

    /// The output for a precomputed `rep` block (`[n, first]` or `[1, first]`, broadcast) and
    /// `x: [n, x]`.
    pub(crate) fn forward_parts(
        &self,
        rep_part: &Tensor,
        x: Option<&Tensor>,
        ctx: &mut Ctx,
    ) -> Result<Tensor> {
        let z = match (&self.x, x) {
            (Some(l), Some(x)) => l.forward(x)?.broadcast_add(rep_part)?,
            (None, None) => rep_part.clone(),
            _ => candle_core::bail!("head input does not match the head"),
        };
        match &self.rest {
            None => Ok(z),
            Some(rest) => {
                let z = dropout(&self.activation.apply(&z)?, self.dropout, ctx)?;
                rest.forward(&z, ctx)
            }
        }
    }

    fn forward(&self, rep: &Tensor, x: Option<&Tensor>, ctx: &mut Ctx) -> Result<Tensor> {
        self.forward_parts(&self.rep_part(rep)?, x, ctx)
    }
}

pub(crate) enum HeadKind {
    Item(SplitMlp),
    Rep(SplitMlp),
    Rank {
        features: String,
        weight: Linear,
        /// The optional item term `MLP([rep; e_item])` \[ours\].
        item: Option<SplitMlp>,
    },
    Fields {
        fields: Vec<String>,
        mlp: SplitMlp,
    },
}

pub(crate) struct Head {
    pub(crate) task: String,
    pub(crate) task_kind: TaskKind,
    pub(crate) kind: HeadKind,
}

enum Encoder {
    Dupn {
        lstm: PropertyGatedLstm,
        attention: BehaviourAttention,
    },
    Lstm(Lstm),
    Mean(Linear),
}

/// What the encoder computed for a batch.
pub struct Encoded {
    /// The user representation `[rep_s; u]`, `[n, rep_width]`.
    pub rep: Tensor,
    /// The attention weights `[n, T]` (DUPN encoders only).
    pub attention: Option<Tensor>,
    /// The mask of the behaviour steps `[n, T]` (1 = valid).
    pub mask: Tensor,
    /// Width `T` of the padded history (the most recent behaviours, oldest first).
    pub steps: usize,
}

/// Deep User Perception Network (Ni et al., KDD 2018) and, through
/// [`DupnConfig::encoder`]/[`DupnConfig::property`], its ablations and baselines.
///
/// - Behaviour `t` of the history is `[e_t; p_t]`: the item part `e_t` concatenates the
///   item-field vectors (ID, brand, shop, category, tag; tables shared with the target item),
///   the property part `p_t` the property-field vectors (behaviour type, scenario, time gap,
///   weekday, hour band).
/// - The [`PropertyGatedLstm`] runs over the history, the [`BehaviourAttention`] weights its
///   states with the query `q` and profile `u`, and `rep = [sum_t a_t h_t; u]`.
/// - One head per schema task ([`DupnConfig::head_for`]): item heads (CTR), rep-only heads
///   (PPP), the rank head (L2R, weighted point-wise logistic loss) and field heads (FIFP, SPP).
///   A multi-class task gets one logit per class.
/// - Loss: the sum of the task losses on each task's labelled samples (NaN labels are left
///   out), or uncertainty-weighted ([`LossWeighting`]).
///
/// Dense variables are named `encoder.*`, `head.<task>.*` and `loss.log_var.<task>`; tables
/// `item.<field>`, `property.<field>`, `profile.<field>`, `query.<field>` (the encoder's) and
/// `context.<field>` (head-only fields such as the icon of FIFP).
pub struct Dupn {
    schema: Schema,
    cfg: DupnConfig,
    roles: Roles,
    vs: VarStore,
    item: TableSet,
    property: Option<TableSet>,
    profile: Option<TableSet>,
    query: Option<TableSet>,
    context: Option<TableSet>,
    encoder: Encoder,
    pub(crate) heads: Vec<Head>,
    log_vars: Vec<Option<Var>>,
    rep_width: usize,
    /// Unique within the process: tags the user encodings this model makes, so that scoring
    /// refuses another model's encoding, and renewed after every training step and every load
    /// of saved state, so that it refuses an encoding this model made before it changed.
    pub(crate) serving_id: u64,
}

/// The next [`Dupn::serving_id`].
static NEXT_SERVING_ID: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

fn next_serving_id() -> u64 {
    NEXT_SERVING_ID.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

impl Dupn {
    /// Builds the model for `schema` (one head per task) with tables from `factory`.
    pub fn new(
        schema: &Schema,
        cfg: &DupnConfig,
        factory: &mut TableFactory<'_>,
        device: &Device,
        seed: u64,
    ) -> Result<Self> {
        schema
            .validate()
            .map_err(|e| candle_core::Error::Msg(format!("dupn: invalid schema: {e}")))?;
        cfg.validate(schema).map_err(candle_core::Error::Msg)?;
        if schema.tasks.is_empty() {
            candle_core::bail!("dupn: the schema has no task to predict");
        }
        let mut roles = Roles::of(schema, cfg)?;
        let mut vs = VarStore::new(seed, device);

        let uses_property = !roles.property_history.is_empty()
            && (cfg.encoder != EncoderKind::GatedLstm
                || cfg.property.in_lstm()
                || cfg.property.in_attention());
        let mut item_fields: Vec<&str> = roles.item_target.iter().map(String::as_str).collect();
        item_fields.extend(roles.item_history.iter().map(String::as_str));
        let item = TableSet::build(schema, item_fields, cfg.item_dim, "item.", factory)?;
        let property = uses_property
            .then(|| {
                TableSet::build(
                    schema,
                    roles.property_history.iter().map(String::as_str),
                    cfg.property_dim,
                    "property.",
                    factory,
                )
            })
            .transpose()?;
        let profile = (!roles.profile.is_empty())
            .then(|| {
                TableSet::build(
                    schema,
                    roles.profile.iter().map(String::as_str),
                    cfg.profile_dim,
                    "profile.",
                    factory,
                )
            })
            .transpose()?;
        // The query enters through the attention net only: the baselines without one skip it.
        if !cfg.encoder.has_attention() {
            roles.query = None;
        }
        let query = roles
            .query
            .as_deref()
            .map(|q| TableSet::build(schema, [q], cfg.query_dim, "query.", factory))
            .transpose()?;

        let de = roles.item_history.len() * cfg.item_dim;
        let dp = if uses_property {
            roles.property_history.len() * cfg.property_dim
        } else {
            0
        };
        let du = roles.profile.len() * cfg.profile_dim;
        let dq = if roles.query.is_some() {
            cfg.query_dim
        } else {
            0
        };
        let h = cfg.hidden;
        let encoder = match cfg.encoder {
            EncoderKind::GatedLstm | EncoderKind::LstmAttention => {
                // LstmAttention: property width 0, i.e. a standard LSTM fed `[e_t; p_t]` as
                // its item input.
                let (item_in, lp) = match cfg.encoder {
                    EncoderKind::GatedLstm if cfg.property.in_lstm() => (de, dp),
                    EncoderKind::GatedLstm => (de, 0),
                    _ => (de + dp, 0),
                };
                let ap = if cfg.property.in_attention() { dp } else { 0 };
                Encoder::Dupn {
                    lstm: PropertyGatedLstm::new(&mut vs, "encoder.lstm", item_in, lp, h)?,
                    attention: BehaviourAttention::new(
                        &mut vs,
                        "encoder.attention",
                        h,
                        dq + du,
                        ap,
                        cfg.attention_hidden,
                    )?,
                }
            }
            EncoderKind::Lstm => Encoder::Lstm(Lstm::new(&mut vs, "encoder.lstm", de + dp, h)?),
            EncoderKind::Mean => Encoder::Mean(Linear::new(&mut vs, "encoder.mean", de + dp, h)?),
        };
        let rep_width = h + du;

        // Heads, and the tables of head-only fields.
        let mut context_fields: Vec<String> = Vec::new();
        let mut specs = Vec::new();
        for t in &schema.tasks {
            let spec = cfg.head_for(&t.name, t.kind);
            if let HeadConfig::Fields { fields } = &spec {
                if fields.is_empty() {
                    candle_core::bail!("dupn: the head of task `{}` lists no field", t.name);
                }
                for f in fields {
                    let fs = schema.field(f).ok_or_else(|| {
                        candle_core::Error::Msg(format!(
                            "dupn: the head of task `{}` uses field `{f}`, which the data lacks",
                            t.name
                        ))
                    })?;
                    if matches!(fs.kind, FieldKind::Dense { .. } | FieldKind::Sequence) {
                        candle_core::bail!(
                            "dupn: head field `{f}` of task `{}` must be categorical or multi-hot",
                            t.name
                        );
                    }
                    let owner = table_owner(schema, fs)?;
                    if !item.contains(&owner.name) && !context_fields.contains(f) {
                        context_fields.push(f.clone());
                    }
                }
            }
            specs.push(spec);
        }
        let context = (!context_fields.is_empty())
            .then(|| {
                TableSet::build(
                    schema,
                    context_fields.iter().map(String::as_str),
                    cfg.context_dim,
                    "context.",
                    factory,
                )
            })
            .transpose()?;
        let mut heads = Vec::new();
        let mut log_vars = Vec::new();
        for (t, spec) in schema.tasks.iter().zip(specs) {
            let out = match t.kind {
                TaskKind::Multiclass { classes } => classes,
                _ => 1,
            };
            let p = format!("head.{}", t.name);
            let kind = match spec {
                HeadConfig::Item => {
                    HeadKind::Item(SplitMlp::new(&mut vs, &p, rep_width, de, &cfg.head, out)?)
                }
                HeadConfig::Rep => {
                    HeadKind::Rep(SplitMlp::new(&mut vs, &p, rep_width, 0, &cfg.head, out)?)
                }
                HeadConfig::Rank { features, item } => {
                    let k = match schema.field(&features).map(|f| f.kind) {
                        Some(FieldKind::Dense { dim }) => dim,
                        _ => candle_core::bail!(
                            "dupn: the rank head of task `{}` needs a dense field `{features}`",
                            t.name
                        ),
                    };
                    if t.kind != TaskKind::Binary {
                        candle_core::bail!("dupn: rank task `{}` must be binary", t.name);
                    }
                    let weight = Linear::new(&mut vs, &join(&p, "weight"), rep_width, k)?;
                    let item = if item {
                        Some(SplitMlp::new(
                            &mut vs,
                            &join(&p, "item"),
                            rep_width,
                            de,
                            &cfg.head,
                            1,
                        )?)
                    } else {
                        None
                    };
                    HeadKind::Rank {
                        features,
                        weight,
                        item,
                    }
                }
                HeadConfig::Fields { fields } => {
                    let width: usize = fields
                        .iter()
                        .map(|f| {
                            if item.contains(&table_owner(schema, schema.field(f).unwrap())?.name) {
                                Ok(cfg.item_dim)
                            } else {
                                Ok(cfg.context_dim)
                            }
                        })
                        .sum::<Result<usize>>()?;
                    let mlp = SplitMlp::new(&mut vs, &p, rep_width, width, &cfg.head, out)?;
                    HeadKind::Fields { fields, mlp }
                }
            };
            heads.push(Head {
                task: t.name.clone(),
                task_kind: t.kind,
                kind,
            });
            log_vars.push(match cfg.weighting {
                LossWeighting::Equal => None,
                LossWeighting::Uncertainty => {
                    Some(vs.var(&format!("loss.log_var.{}", t.name), (), Init::Zeros)?)
                }
            });
        }
        Ok(Self {
            schema: schema.clone(),
            cfg: cfg.clone(),
            roles,
            vs,
            item,
            property,
            profile,
            query,
            context,
            encoder,
            heads,
            log_vars,
            rep_width,
            serving_id: next_serving_id(),
        })
    }

    /// The configuration.
    pub fn config(&self) -> &DupnConfig {
        &self.cfg
    }

    /// The roles of the schema's fields.
    pub fn roles(&self) -> &Roles {
        &self.roles
    }

    /// Width of the user representation `rep`.
    pub fn rep_width(&self) -> usize {
        self.rep_width
    }

    fn table_sets(&self) -> Vec<&TableSet> {
        [
            Some(&self.item),
            self.property.as_ref(),
            self.profile.as_ref(),
            self.query.as_ref(),
            self.context.as_ref(),
        ]
        .into_iter()
        .flatten()
        .collect()
    }

    /// Width `T` of the padded history of `batch`: the longest history, at most `max_history`,
    /// at least 1.
    fn steps(&self, batch: &Batch) -> Result<usize> {
        let col = column(batch, &self.roles.item_history[0])?;
        let Column::Ragged { offsets, .. } = col else {
            candle_core::bail!(
                "history field `{}` is not ragged",
                self.roles.item_history[0]
            );
        };
        let longest = offsets.windows(2).map(|w| (w[1] - w[0]) as usize).max();
        Ok(longest.unwrap_or(0).min(self.cfg.max_history).max(1))
    }

    /// The user representation of every sample of `batch` (see [`Encoded`]). Lookups are
    /// differentiable when `train` and the encoder is not frozen.
    pub fn encode(&mut self, batch: &Batch, train: bool) -> Result<Encoded> {
        let train = train && !self.cfg.freeze_encoder;
        let steps = self.steps(batch)?;
        let dev = self.vs.device().clone();
        let r = &self.roles;
        let (e, mask) = history(&mut self.item, batch, &r.item_history, steps, train, &dev)?;
        let p = match &mut self.property {
            Some(set) => Some(history(set, batch, &r.property_history, steps, train, &dev)?.0),
            None => None,
        };
        let u = match &mut self.profile {
            Some(set) => Some(lookup_fields(set, batch, &r.profile, train, &dev)?),
            None => None,
        };
        let q = match (&mut self.query, &r.query) {
            (Some(set), Some(name)) => Some(lookup_fields(
                set,
                batch,
                std::slice::from_ref(name),
                train,
                &dev,
            )?),
            _ => None,
        };
        let (rep_s, attention) = match &self.encoder {
            Encoder::Dupn { lstm, attention } => {
                let h = if self.cfg.encoder == EncoderKind::LstmAttention {
                    let x = match &p {
                        Some(p) => Tensor::cat(&[&e, p], 2)?,
                        None => e.clone(),
                    };
                    lstm.forward(&x, None, &mask)?.outputs
                } else {
                    let lp = if lstm.property_width() > 0 {
                        p.as_ref()
                    } else {
                        None
                    };
                    lstm.forward(&e, lp, &mask)?.outputs
                };
                let ctx = match (&q, &u) {
                    (Some(q), Some(u)) => Some(Tensor::cat(&[q, u], 1)?),
                    (Some(q), None) => Some(q.clone()),
                    (None, Some(u)) => Some(u.clone()),
                    (None, None) => None,
                };
                let ap = if self.cfg.property.in_attention() {
                    p.as_ref()
                } else {
                    None
                };
                let (rep_s, a) = attention.forward(&h, ctx.as_ref(), ap, &mask)?;
                (rep_s, Some(a))
            }
            Encoder::Lstm(lstm) => {
                let x = match &p {
                    Some(p) => Tensor::cat(&[&e, p], 2)?,
                    None => e.clone(),
                };
                (lstm.forward(&x, &mask)?.last, None)
            }
            Encoder::Mean(lin) => {
                let x = match &p {
                    Some(p) => Tensor::cat(&[&e, p], 2)?,
                    None => e.clone(),
                };
                (lin.forward(&pool(&x, &mask, Pooling::Mean)?)?.tanh()?, None)
            }
        };
        let mut rep = match &u {
            Some(u) => Tensor::cat(&[&rep_s, u], 1)?,
            None => rep_s,
        };
        if self.cfg.freeze_encoder {
            rep = rep.detach();
        }
        Ok(Encoded {
            rep,
            attention,
            mask,
            steps,
        })
    }

    /// The target item's vectors `[n, item width]` from the target-side columns of `batch`,
    /// laid out like `e_t`.
    pub(crate) fn target_items(&mut self, batch: &Batch, train: bool) -> Result<Tensor> {
        let train = train && !self.cfg.freeze_encoder;
        let dev = self.vs.device().clone();
        lookup_fields(&mut self.item, batch, &self.roles.item_target, train, &dev)
    }

    fn field_vectors(&mut self, batch: &Batch, fields: &[String], train: bool) -> Result<Tensor> {
        let dev = self.vs.device().clone();
        let mut parts = Vec::with_capacity(fields.len());
        for f in fields {
            let col = column(batch, f)?;
            let spec = self
                .schema
                .field(f)
                .ok_or_else(|| candle_core::Error::Msg(format!("the schema has no field `{f}`")))?;
            let owner = table_owner(&self.schema, spec)?.name.clone();
            let (table, tr) = if self.item.contains(&owner) {
                (
                    self.item.table_mut(&owner)?,
                    train && !self.cfg.freeze_encoder,
                )
            } else {
                match self.context.as_mut() {
                    Some(c) => (c.table_mut(f)?, train),
                    None => candle_core::bail!("no table for head field `{f}`"),
                }
            };
            parts.push(pooled_lookup(table, col, Pooling::Mean, tr, &dev)?);
        }
        Tensor::cat(&parts, 1)
    }

    /// Outputs of every head on `batch` given the representation `rep`.
    fn heads_forward(&mut self, batch: &Batch, rep: &Tensor, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let needs_item = self.heads.iter().any(|h| {
            matches!(
                h.kind,
                HeadKind::Item(_) | HeadKind::Rank { item: Some(_), .. }
            )
        });
        let e_item = if needs_item {
            Some(self.target_items(batch, ctx.train)?)
        } else {
            None
        };
        let n = batch.len();
        let mut out = Vec::with_capacity(self.heads.len());
        for k in 0..self.heads.len() {
            let fields = match &self.heads[k].kind {
                HeadKind::Fields { fields, .. } => Some(fields.clone()),
                _ => None,
            };
            let fx = match fields {
                Some(f) => Some(self.field_vectors(batch, &f, ctx.train)?),
                None => None,
            };
            let head = &self.heads[k];
            let y = match &head.kind {
                HeadKind::Item(m) => m.forward(rep, e_item.as_ref(), ctx)?,
                HeadKind::Rep(m) => m.forward(rep, None, ctx)?,
                HeadKind::Fields { mlp, .. } => mlp.forward(rep, fx.as_ref(), ctx)?,
                HeadKind::Rank {
                    features,
                    weight,
                    item,
                } => {
                    let Some(Column::Dense { values, dim }) = batch.column(features) else {
                        candle_core::bail!("the batch has no dense field `{features}`");
                    };
                    let r = Tensor::from_slice(values, (n, *dim), self.vs.device())?;
                    let score = (weight.forward(rep)? * r)?.sum_keepdim(1)?;
                    match item {
                        Some(m) => (score + m.forward(rep, e_item.as_ref(), ctx)?)?,
                        None => score,
                    }
                }
            };
            out.push(match head.task_kind {
                TaskKind::Multiclass { .. } => y,
                _ => y.squeeze(1)?,
            });
        }
        Ok(out)
    }

    /// The item-part table that `field` uses.
    pub(crate) fn item_table_mut(&mut self, field: &str) -> Result<&mut dyn EmbeddingTable> {
        self.item.table_mut(field)
    }

    /// True when the dense variable or table called `name` belongs to the encoder (what the
    /// transfer modes RT and FT take from a trained model): variables `encoder.*`, tables
    /// `item.*`, `property.*`, `profile.*`, `query.*`.
    pub fn is_encoder_part(name: &str) -> bool {
        ["encoder.", "item.", "property.", "profile.", "query."]
            .iter()
            .any(|p| name.starts_with(p))
    }

    /// The attention weights `[n, T]` and mask of `batch` (evaluation mode), or `None` for the
    /// baseline encoders.
    pub fn attention(&mut self, batch: &Batch) -> Result<Option<(Tensor, Tensor)>> {
        let enc = self.encode(batch, false)?;
        Ok(enc.attention.map(|a| (a, enc.mask)))
    }

    fn is_encoder_var(name: &str) -> bool {
        name.starts_with("encoder.")
    }
}

fn column<'b>(batch: &'b Batch, field: &str) -> Result<&'b Column> {
    batch
        .column(field)
        .ok_or_else(|| candle_core::Error::Msg(format!("the batch has no field `{field}`")))
}

/// `[n, T, width]` vectors of the history fields `fields` (concatenated) and the `[n, T]` mask.
fn history(
    set: &mut TableSet,
    batch: &Batch,
    fields: &[String],
    steps: usize,
    train: bool,
    device: &Device,
) -> Result<(Tensor, Tensor)> {
    let mut parts = Vec::with_capacity(fields.len());
    let mut mask = None;
    for f in fields {
        let padded = batch.padded(f, Some(steps)).ok_or_else(|| {
            candle_core::Error::Msg(format!("history field `{f}` is missing or not ragged"))
        })?;
        let (x, m) = padded_lookup(set.table_mut(f)?, &padded, train, device)?;
        parts.push(x);
        mask.get_or_insert(m);
    }
    Ok((Tensor::cat(&parts, 2)?, mask.expect("at least one field")))
}

/// Vectors `[n, dim * fields]` of categorical or multi-hot fields (bags mean-pooled).
fn lookup_fields(
    set: &mut TableSet,
    batch: &Batch,
    fields: &[String],
    train: bool,
    device: &Device,
) -> Result<Tensor> {
    let mut parts = Vec::with_capacity(fields.len());
    for f in fields {
        let col = column(batch, f)?;
        parts.push(pooled_lookup(
            set.table_mut(f)?,
            col,
            Pooling::Mean,
            train,
            device,
        )?);
    }
    Tensor::cat(&parts, 1)
}

impl Model for Dupn {
    fn name(&self) -> String {
        "dupn".into()
    }

    fn as_any_mut(&mut self) -> Option<&mut dyn std::any::Any> {
        Some(self)
    }

    // A new serving id: the encodings made before no longer score.
    fn after_step(&mut self, _step: u64) -> Result<()> {
        self.serving_id = next_serving_id();
        Ok(())
    }

    fn after_load(&mut self) -> Result<()> {
        self.serving_id = next_serving_id();
        Ok(())
    }

    fn schema(&self) -> &Schema {
        &self.schema
    }

    fn device(&self) -> &Device {
        self.vs.device()
    }

    fn forward(&mut self, batch: &Batch, ctx: &mut Ctx) -> Result<Vec<Tensor>> {
        let enc = self.encode(batch, ctx.train)?;
        self.heads_forward(batch, &enc.rep, ctx)
    }

    fn loss(&mut self, batch: &Batch, outputs: &[Tensor]) -> Result<Tensor> {
        if outputs.len() != self.heads.len() {
            candle_core::bail!(
                "dupn: {} outputs for {} tasks",
                outputs.len(),
                self.heads.len()
            );
        }
        // The shared checks: labels and weights fit the batch, a task whose labelled samples
        // all weigh 0 (e.g. L2R weight 0 for a behaviour) is skipped rather than 0 / 0, and a
        // multi-class label must be a class index.
        rec_nn::loss::check_batch(&self.schema, batch, outputs.len())
            .map_err(|e| candle_core::Error::Msg(format!("dupn: {e}")))?;
        let dev = self.vs.device().clone();
        let mut total = Tensor::zeros((), DType::F32, &dev)?;
        for (t, (head, out)) in self.heads.iter().zip(outputs).enumerate() {
            let Some((clean, weights)) = rec_nn::loss::task_targets(&self.schema, batch, t)
                .map_err(|e| candle_core::Error::Msg(format!("dupn: {e}")))?
            else {
                continue;
            };
            let n = clean.len();
            let w = weights.map(|w| Tensor::from_vec(w, n, &dev)).transpose()?;
            let l = match (&head.kind, head.task_kind) {
                (HeadKind::Rank { .. }, _) => {
                    let y = Tensor::from_vec(clean, n, &dev)?;
                    let w = match w {
                        Some(w) => w,
                        None => Tensor::ones(n, DType::F32, &dev)?,
                    };
                    weighted_pointwise_logistic(out, &y, &w)?
                }
                (_, TaskKind::Binary) => {
                    let y = Tensor::from_vec(clean, n, &dev)?;
                    rec_nn::loss::bce_with_logits(out, &y, w.as_ref())?
                }
                (_, TaskKind::Regression) => {
                    let y = Tensor::from_vec(clean, n, &dev)?;
                    rec_nn::loss::mse(out, &y, w.as_ref())?
                }
                (_, TaskKind::Multiclass { .. }) => {
                    let y: Vec<u32> = clean.iter().map(|&c| c as u32).collect();
                    let y = Tensor::from_vec(y, n, &dev)?;
                    rec_nn::loss::softmax_cross_entropy(out, &y, w.as_ref())?
                }
            };
            total = match &self.log_vars[t] {
                None => (total + l)?,
                Some(s) => {
                    let s = s.as_tensor();
                    ((total + (s.neg()?.exp()? * l)?)? + s)?
                }
            };
        }
        Ok(total)
    }

    fn dense_vars(&self) -> Vec<(String, Var)> {
        let frozen = self.cfg.freeze_encoder;
        self.vs
            .vars()
            .into_iter()
            .filter(|(n, _)| !(frozen && Self::is_encoder_var(n)))
            .collect()
    }

    fn buffers(&self) -> Vec<(String, Var)> {
        // Running statistics (a batch-normalized layer's), and the frozen encoder's variables.
        let mut b = self.vs.buffers();
        if self.cfg.freeze_encoder {
            b.extend(
                self.vs
                    .vars()
                    .into_iter()
                    .filter(|(n, _)| Self::is_encoder_var(n)),
            );
        }
        b
    }

    fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        sorted_tables(self.table_sets())
    }

    fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        sorted_tables_mut(
            [
                Some(&mut self.item),
                self.property.as_mut(),
                self.profile.as_mut(),
                self.query.as_mut(),
                self.context.as_mut(),
            ]
            .into_iter()
            .flatten(),
        )
    }
}
