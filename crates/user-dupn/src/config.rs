//! Hyperparameters of [`Dupn`](crate::Dupn), with the roles of the schema's fields.
//!
//! Every key has a documented default and unknown keys are rejected, so the same struct reads
//! the trainer's `[model.params]` table. The defaults are this project's (small, for CPU
//! training on the synthetic and MovieLens protocols); [`DupnConfig::paper`] gives the
//! paper's widths.

use std::collections::BTreeMap;

use rec_data::{Schema, TaskKind};
use rec_nn::layers::{Activation, MlpConfig};
use serde::{Deserialize, Serialize};

/// Which sequence encoder turns the behaviour vectors into `rep_s`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EncoderKind {
    /// DUPN: the property-gated LSTM and the attention net (what `property` selects).
    #[default]
    GatedLstm,
    /// Baseline: a standard LSTM over `[e_t; p_t]`; `rep_s` is its last valid hidden state.
    Lstm,
    /// Baseline: `rep_s = tanh(W mean_t [e_t; p_t] + b)`, the masked mean of the behaviours.
    Mean,
    /// \[ours\] A standard LSTM over `[e_t; p_t]` (the property enters every gate *and* the
    /// cell candidate) followed by DUPN's attention net (which sees `p_t` as `property`
    /// selects): DUPN with the paper's gating replaced, to tell the gating's effect from the
    /// attention's.
    LstmAttention,
}

impl EncoderKind {
    /// True when the encoder pools with DUPN's attention net (and so reads the query).
    pub fn has_attention(self) -> bool {
        matches!(self, EncoderKind::GatedLstm | EncoderKind::LstmAttention)
    }
}

/// Where the behaviour property `p_t` enters the DUPN encoder (the paper's ablations).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PropertyUse {
    /// DUPN-all: in the LSTM gates and in the attention net.
    #[default]
    All,
    /// DUPN-bplstm: in the LSTM gates only.
    Lstm,
    /// DUPN-bpatt: in the attention net only.
    Attention,
    /// DUPN-nobp: nowhere.
    None,
}

impl PropertyUse {
    /// True when the gates see the property.
    pub fn in_lstm(self) -> bool {
        matches!(self, PropertyUse::All | PropertyUse::Lstm)
    }

    /// True when the attention net sees the property.
    pub fn in_attention(self) -> bool {
        matches!(self, PropertyUse::All | PropertyUse::Attention)
    }
}

/// How the task losses are combined.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LossWeighting {
    /// `sum_k L_k` (default).
    #[default]
    Equal,
    /// Homoscedastic uncertainty weighting (Kendall, Gal & Cipolla 2018): `sum_k exp(-s_k) L_k
    /// + s_k` with a learned `s_k = log sigma_k^2` per task.
    Uncertainty,
}

/// The head of one task. Serialized with a `kind` tag, e.g. `{ kind = "fields", fields =
/// ["icon_id"] }`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "HeadConfigRepr"
)]
pub enum HeadConfig {
    /// A shallow MLP on `[rep; e_item]`, the target item embedded with the tables of the
    /// behaviour sequence (CTR). Scores candidates in [`Dupn::score`](crate::Dupn::score).
    Item,
    /// A shallow MLP on `rep` alone (PPP): computed once per user when serving.
    Rep,
    /// L2R: `score = weight(rep)^T r` over the dense ranking features `r` of field `features`,
    /// trained with the weighted point-wise logistic loss.
    Rank {
        /// The dense field holding the ranking features.
        features: String,
        /// Also add an item term \[ours\]: `score = weight(rep)^T r + MLP([rep; e_item])`, the
        /// CTR head's form (default false: the paper's head, which sees the item only through
        /// its ranking features).
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        item: bool,
    },
    /// A shallow MLP on `[rep; embeddings of fields]` (FIFP: the icon's fields; SPP: the shop).
    Fields {
        /// Categorical or multi-hot fields describing the target (their tables are shared when
        /// the field shares a vocabulary with the behaviour sequence).
        fields: Vec<String>,
    },
}

/// What [`HeadConfig`] is read from: the same with `item` and `rep` as empty struct variants,
/// so that a stray key next to them is refused like any unknown key (serde lets unit variants
/// of an internally tagged enum ignore the other keys).
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum HeadConfigRepr {
    Item {},
    Rep {},
    Rank {
        features: String,
        #[serde(default)]
        item: bool,
    },
    Fields {
        fields: Vec<String>,
    },
}

impl From<HeadConfigRepr> for HeadConfig {
    fn from(r: HeadConfigRepr) -> Self {
        match r {
            HeadConfigRepr::Item {} => Self::Item,
            HeadConfigRepr::Rep {} => Self::Rep,
            HeadConfigRepr::Rank { features, item } => Self::Rank { features, item },
            HeadConfigRepr::Fields { fields } => Self::Fields { fields },
        }
    }
}

fn d_item_dim() -> usize {
    16
}
fn d_property_dim() -> usize {
    8
}
fn d_profile_dim() -> usize {
    16
}
fn d_query_dim() -> usize {
    16
}
fn d_context_dim() -> usize {
    16
}
fn d_hidden() -> usize {
    64
}
fn d_attention_hidden() -> usize {
    32
}
fn d_max_history() -> usize {
    50
}
fn d_group() -> String {
    "hist".into()
}
fn d_head() -> MlpConfig {
    MlpConfig {
        hidden: vec![64],
        activation: Activation::Relu,
        dropout: 0.2,
        norm: rec_nn::layers::Norm::None,
    }
}
/// The default `profile`: the synthetic generator's profile fields.
pub(crate) fn d_profile() -> Vec<String> {
    ["user_id", "age", "gender", "country"]
        .map(String::from)
        .to_vec()
}
/// The default `query` field name.
pub(crate) fn d_query() -> String {
    "query".into()
}

/// Hyperparameters of [`Dupn`](crate::Dupn) (and of its baselines, through `encoder` and
/// `property`).
///
/// Field roles come from the schema: the sequence fields of group `history_group` that share a
/// vocabulary with another field (`hist_item_id` shares `item_id`) are the **item part** of a
/// behaviour, embedded with the tables of the fields they share (so the target item and the
/// history use the same vectors); the other fields of the group (`hist_behaviour`,
/// `hist_channel`, `hist_gap`, ...) are the **property part**. `profile` names the user profile
/// fields and `query` the bag-of-terms query field. At their defaults, the fields a schema
/// lacks are skipped; a list or name set otherwise must be in the schema (an error names it).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DupnConfig {
    /// The sequence encoder (default `gated_lstm`, i.e. DUPN).
    #[serde(default)]
    pub encoder: EncoderKind,
    /// Where properties enter the DUPN encoder (default `all`; ignored by the baselines, which
    /// always see `[e_t; p_t]`).
    #[serde(default)]
    pub property: PropertyUse,
    /// Width of each item-part field's vectors (default 16; the paper: 32/24/24/16/28).
    #[serde(default = "d_item_dim")]
    pub item_dim: usize,
    /// Width of each property field's vectors (default 8; the paper: 48 in total).
    #[serde(default = "d_property_dim")]
    pub property_dim: usize,
    /// Width of each profile field's vectors (default 16).
    #[serde(default = "d_profile_dim")]
    pub profile_dim: usize,
    /// Width of the pooled query vector (default 16).
    #[serde(default = "d_query_dim")]
    pub query_dim: usize,
    /// Width of the vectors of head-only fields, e.g. the icon of FIFP (default 16).
    #[serde(default = "d_context_dim")]
    pub context_dim: usize,
    /// Hidden width of the LSTM, and of `rep_s` (default 64; the specification's 128 is its
    /// own choice: the paper fixes only `rep` at 256 floats).
    #[serde(default = "d_hidden")]
    pub hidden: usize,
    /// Hidden width of the attention net's two-layer MLP (default 32).
    #[serde(default = "d_attention_hidden")]
    pub attention_hidden: usize,
    /// The task heads' shallow MLP (default hidden `[64]`, ReLU, dropout 0.2 as in the paper;
    /// `norm` must stay `none`, see [`validate`](Self::validate)).
    #[serde(default = "d_head")]
    pub head: MlpConfig,
    /// The most recent behaviours kept (default 50).
    #[serde(default = "d_max_history")]
    pub max_history: usize,
    /// How task losses are combined (default `equal`).
    #[serde(default)]
    pub weighting: LossWeighting,
    /// Name of the aligned sequence group holding the behaviours (default `hist`).
    #[serde(default = "d_group")]
    pub history_group: String,
    /// User profile fields (default `user_id`, `age`, `gender`, `country`, of which those the
    /// schema lacks are skipped; any other list must name categorical fields of the schema).
    #[serde(default = "d_profile")]
    pub profile: Vec<String>,
    /// Bag-of-terms query field (default `query`, skipped when the schema has none; `""`: no
    /// query; another name must be a multi-hot field of the schema). It enters
    /// through the attention net, so the baseline encoders (no attention) do not use it.
    #[serde(default = "d_query")]
    pub query: String,
    /// Head per task name, overriding the defaults of [`DupnConfig::head_for`].
    #[serde(default)]
    pub heads: BTreeMap<String, HeadConfig>,
    /// Freeze the encoder (transfer mode RT): its variables become buffers, its tables stop
    /// learning, and `rep` is detached, so only the heads train. Default false.
    #[serde(default)]
    pub freeze_encoder: bool,
}

impl Default for DupnConfig {
    fn default() -> Self {
        Self {
            encoder: EncoderKind::default(),
            property: PropertyUse::default(),
            item_dim: d_item_dim(),
            property_dim: d_property_dim(),
            profile_dim: d_profile_dim(),
            query_dim: d_query_dim(),
            context_dim: d_context_dim(),
            hidden: d_hidden(),
            attention_hidden: d_attention_hidden(),
            head: d_head(),
            max_history: d_max_history(),
            weighting: LossWeighting::default(),
            history_group: d_group(),
            profile: d_profile(),
            query: d_query(),
            heads: BTreeMap::new(),
            freeze_encoder: false,
        }
    }
}

impl DupnConfig {
    /// The paper's widths: item fields 24 each (124 in the paper, split unevenly), property
    /// fields 10 each (48 in the paper), LSTM 128 (the specification's choice, giving the paper's
    /// 256-float `rep` with the profile), representation 128 + profile, 100 behaviours.
    pub fn paper() -> Self {
        Self {
            item_dim: 24,
            property_dim: 10,
            profile_dim: 32,
            query_dim: 32,
            context_dim: 32,
            hidden: 128,
            attention_hidden: 64,
            head: MlpConfig {
                hidden: vec![128],
                ..d_head()
            },
            max_history: 100,
            ..Self::default()
        }
    }

    /// A named ablation or baseline: `all`, `nobp`, `bplstm`, `bpatt` (DUPN variants), `lstm`
    /// (standard LSTM encoder), `mean` (mean-pooling encoder), `lstmatt` (a standard LSTM under
    /// DUPN's attention net \[ours\]).
    pub fn variant(mut self, name: &str) -> Result<Self, String> {
        let (encoder, property) = match name {
            "all" => (EncoderKind::GatedLstm, PropertyUse::All),
            "nobp" => (EncoderKind::GatedLstm, PropertyUse::None),
            "bplstm" => (EncoderKind::GatedLstm, PropertyUse::Lstm),
            "bpatt" => (EncoderKind::GatedLstm, PropertyUse::Attention),
            "lstm" => (EncoderKind::Lstm, PropertyUse::All),
            "mean" => (EncoderKind::Mean, PropertyUse::All),
            "lstmatt" => (EncoderKind::LstmAttention, PropertyUse::All),
            other => {
                return Err(format!(
                    "unknown DUPN variant `{other}` (all, nobp, bplstm, bpatt, lstm, mean, \
                     lstmatt)"
                ));
            }
        };
        self.encoder = encoder;
        self.property = property;
        Ok(self)
    }

    /// The head of `task` (kind `kind`): the configured one, else by name and kind:
    /// `l2r` → rank over `rank_features`; `fifp` → fields `icon_id`, `icon_category`,
    /// `icon_price`; `spp` → field `shop`; any other multi-class task → rep; any other task →
    /// item.
    pub fn head_for(&self, task: &str, kind: TaskKind) -> HeadConfig {
        if let Some(h) = self.heads.get(task) {
            return h.clone();
        }
        match (task, kind) {
            ("l2r", _) => HeadConfig::Rank {
                features: "rank_features".into(),
                item: false,
            },
            ("fifp", _) => HeadConfig::Fields {
                fields: ["icon_id", "icon_category", "icon_price"]
                    .map(String::from)
                    .to_vec(),
            },
            ("spp", _) => HeadConfig::Fields {
                fields: vec!["shop".into()],
            },
            (_, TaskKind::Multiclass { .. }) => HeadConfig::Rep,
            _ => HeadConfig::Item,
        }
    }

    /// Checks widths and the head table against `schema`.
    pub fn validate(&self, schema: &Schema) -> Result<(), String> {
        for (name, v) in [
            ("item_dim", self.item_dim),
            ("property_dim", self.property_dim),
            ("profile_dim", self.profile_dim),
            ("query_dim", self.query_dim),
            ("context_dim", self.context_dim),
            ("hidden", self.hidden),
            ("attention_hidden", self.attention_hidden),
            ("max_history", self.max_history),
        ] {
            if v == 0 {
                return Err(format!("dupn: `{name}` must be positive"));
            }
        }
        if self.head.norm != rec_nn::layers::Norm::None {
            return Err(
                "dupn: `head.norm` must be \"none\": a head's first layer is split into a \
                 per-user block and a per-candidate block for serving, with no norm between"
                    .into(),
            );
        }
        for task in self.heads.keys() {
            if schema.task_index(task).is_none() {
                return Err(format!(
                    "dupn: `heads.{task}` names a task the data does not have"
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    /// A stray key next to a head kind is refused, also for the kinds without parameters.
    #[test]
    fn head_kinds_refuse_stray_keys() {
        use serde_json::json;
        for head in [
            HeadConfig::Item,
            HeadConfig::Rep,
            HeadConfig::Rank {
                features: "r".into(),
                item: true,
            },
            HeadConfig::Fields {
                fields: vec!["shop".into()],
            },
        ] {
            let v = serde_json::to_value(&head).unwrap();
            assert_eq!(
                serde_json::from_value::<HeadConfig>(v.clone()).unwrap(),
                head
            );
            let mut stray = v.as_object().unwrap().clone();
            stray.insert("foo".into(), json!(1));
            let e = serde_json::from_value::<HeadConfig>(stray.into()).unwrap_err();
            assert!(
                e.to_string().contains("unknown field `foo`"),
                "{head:?}: {e}"
            );
        }
    }

    use super::*;

    #[test]
    fn defaults_and_variants() {
        let c: DupnConfig = serde_json::from_str("{}").unwrap();
        assert_eq!(c, DupnConfig::default());
        assert_eq!(c.head.dropout, 0.2);
        let v = DupnConfig::default().variant("bpatt").unwrap();
        assert!(!v.property.in_lstm() && v.property.in_attention());
        assert!(DupnConfig::default().variant("xyz").is_err());
        assert!(serde_json::from_str::<DupnConfig>(r#"{"hiden": 3}"#).is_err());
        let h: DupnConfig =
            serde_json::from_str(r#"{"heads": {"x": {"kind": "fields", "fields": ["a"]}}}"#)
                .unwrap();
        assert_eq!(
            h.head_for("x", TaskKind::Binary),
            HeadConfig::Fields {
                fields: vec!["a".into()]
            }
        );
        assert_eq!(
            c.head_for("ppp", TaskKind::Multiclass { classes: 7 }),
            HeadConfig::Rep
        );
        assert_eq!(c.head_for("ctr", TaskKind::Binary), HeadConfig::Item);
    }
}
