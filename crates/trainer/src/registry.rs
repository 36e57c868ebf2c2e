//! From a configuration to a model: the registry of model names and the embedding-table factory.

use std::collections::HashMap;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use rec_data::{Batch, Column, FieldKind, Schema};
use rec_nn::Model;
use rec_nn::embedding::{
    DefaultTableFactory, EmbeddingTable, TableConfig, TableOptions, TablesConfig,
};
use rec_nn::models::{DeepFm, Fm, Mf, NeuMf, Nmf, WideDeep};
use scenario_saml::{Mmoe, Saml, Separate, Shared, Star};
use serde::de::DeserializeOwned;

use crate::config::Config;

/// What a model builder receives.
pub struct BuildContext<'a> {
    /// Schema of the data.
    pub schema: &'a Schema,
    /// `[model.params]` of the configuration.
    pub params: &'a toml::Table,
    /// Builds the embedding table of a field as `[embeddings]` says.
    pub factory: &'a mut rec_nn::embedding::TableFactory<'a>,
    /// Device of the dense parameters.
    pub device: &'a Device,
    /// Seed of the run.
    pub seed: u64,
    /// Where the configuration was read from, for the line of a wrong `[model.params]` key.
    pub origin: &'a crate::config::Origin,
}

/// Builds a model.
pub type Builder = fn(&mut BuildContext<'_>) -> Result<Box<dyn Model>>;

/// One registered model.
pub struct Entry {
    /// Name used in `[model] name`.
    pub name: &'static str,
    /// One line for `--help` and errors.
    pub about: &'static str,
    /// The builder.
    pub build: Builder,
}

/// Parses `[model.params]` into a model's hyperparameter struct, naming the section in errors.
pub fn params<T: DeserializeOwned>(ctx: &BuildContext<'_>, model: &str) -> Result<T> {
    // Read from text, not from the table, so that a wrong value's error has a position and
    // its key can be named (the line is that of the table written back, so it is not given).
    let text = toml::to_string(&ctx.params)?;
    toml::from_str::<T>(&text).map_err(|e| {
        let key = e
            .span()
            .and_then(|s| crate::config::error_location(&text, s, e.message()).1)
            .or_else(|| unknown_field(e.message()).map(str::to_string));
        let mut path = vec!["model", "params"];
        path.extend(key.as_deref().into_iter().flat_map(|k| k.split('.')));
        let at = ctx.origin.at(&path);
        let key = key.map(|k| format!(", key `{k}`")).unwrap_or_default();
        anyhow::anyhow!(
            "invalid [model.params] for `{model}`{key}{at}: {}",
            e.message()
        )
    })
}

macro_rules! base {
    ($name:literal, $about:literal, |$c:ident| $body:expr) => {
        Entry {
            name: $name,
            about: $about,
            build: |$c| Ok(Box::new($body?)),
        }
    };
}

/// Every model the trainer can build.
pub fn models() -> Vec<Entry> {
    vec![
        base!("mf", "matrix factorisation with biases (rating)", |c| {
            Mf::new(c.schema, &params(c, "mf")?, c.factory, c.device, c.seed)
        }),
        base!("nmf", "non-negative matrix factorisation (rating)", |c| {
            Nmf::new(c.schema, &params(c, "nmf")?, c.factory, c.device, c.seed)
        }),
        base!(
            "neumf",
            "NeuMF: GMF + MLP (He et al. 2017)",
            |c| NeuMf::new(c.schema, &params(c, "neumf")?, c.factory, c.device, c.seed)
        ),
        base!("fm", "factorisation machine (Rendle 2010)", |c| Fm::new(
            c.schema,
            &params(c, "fm")?,
            c.factory,
            c.device,
            c.seed
        )),
        base!("deepfm", "DeepFM (Guo et al. 2017)", |c| DeepFm::new(
            c.schema,
            &params(c, "deepfm")?,
            c.factory,
            c.device,
            c.seed
        )),
        base!("widedeep", "Wide & Deep (Cheng et al. 2016)", |c| {
            WideDeep::new(
                c.schema,
                &params(c, "widedeep")?,
                c.factory,
                c.device,
                c.seed,
            )
        }),
        base!(
            "saml",
            "SAML: scenario-aware mutual learning, multi-scenario (scenario-saml)",
            |c| Saml::new(c.schema, &params(c, "saml")?, c.factory, c.device, c.seed)
        ),
        base!(
            "shared",
            "one network for all scenarios, scenario id as a feature (scenario-saml)",
            |c| Shared::new(c.schema, &params(c, "shared")?, c.factory, c.device, c.seed)
        ),
        base!(
            "separate",
            "one network per scenario, each trained on its own scenario (scenario-saml)",
            |c| Separate::new(
                c.schema,
                &params(c, "separate")?,
                c.factory,
                c.device,
                c.seed
            )
        ),
        base!(
            "mmoe",
            "MMoE with one gate and tower per scenario (scenario-saml)",
            |c| Mmoe::new(c.schema, &params(c, "mmoe")?, c.factory, c.device, c.seed)
        ),
        base!(
            "star",
            "STAR: star topology with partitioned normalization (scenario-saml)",
            |c| Star::new(c.schema, &params(c, "star")?, c.factory, c.device, c.seed)
        ),
        base!(
            "dupn",
            "DUPN: property-gated LSTM + attention, multi-task heads (Ni et al. 2018)",
            |c| user_dupn::Dupn::new(
                c.schema,
                &params::<user_dupn::DupnConfig>(c, "dupn")?,
                c.factory,
                c.device,
                c.seed
            )
        ),
        base!(
            "task_widedeep",
            "Wide & Deep with one output per task, multi-class included (DUPN's baseline)",
            |c| user_dupn::TaskWideDeep::new(
                c.schema,
                &params::<user_dupn::TaskWideDeepConfig>(c, "task_widedeep")?,
                c.factory,
                c.device,
                c.seed
            )
        ),
    ]
}

/// Names of every registered model.
pub fn model_names() -> Vec<&'static str> {
    models().iter().map(|e| e.name).collect()
}

/// Train-set occurrence counts of every categorical, multi-hot and sequence field (frequency
/// tables need them).
pub fn id_counts(schema: &Schema, train: &Batch) -> HashMap<String, Vec<u64>> {
    let mut out = HashMap::new();
    for (f, col) in schema.fields.iter().zip(&train.columns) {
        if matches!(f.kind, FieldKind::Dense { .. }) {
            continue;
        }
        let mut counts = vec![0u64; f.vocab];
        let ids: &[u32] = match col {
            Column::Ids(v) => v,
            Column::Ragged { values, .. } => values,
            Column::Dense { .. } => continue,
        };
        for &i in ids {
            if let Some(c) = counts.get_mut(i as usize) {
                *c += 1;
            }
        }
        out.insert(f.name.clone(), counts);
    }
    // A field that shares another's vocabulary adds its counts to the owner's.
    for f in &schema.fields {
        if let Some(owner) = &f.shares_vocab_with
            && let Some(extra) = out.get(&f.name).cloned()
            && let Some(own) = out.get_mut(owner)
        {
            for (a, b) in own.iter_mut().zip(extra) {
                *a += b;
            }
        }
    }
    out
}

/// The kinds an `[embeddings]` table may have.
const TABLE_KINDS: [&str; 5] = ["full", "hashed", "qr", "frequency", "cel"];

/// Where `[embeddings] what` (`default` or `fields.NAME`) is written, at its `key` when given,
/// as ` (FILE, line N)`; empty for a configuration made in code.
fn embeddings_at(cfg: &Config, what: &str, key: Option<&str>) -> String {
    let mut path = vec!["embeddings"];
    path.extend(what.splitn(2, '.'));
    path.extend(key);
    cfg.origin.at(&path)
}

/// The key serde's "unknown field" message names.
fn unknown_field(message: &str) -> Option<&str> {
    message
        .strip_prefix("unknown field `")
        .and_then(|r| r.split_once('`'))
        .map(|(k, _)| k)
}

/// A table of `[embeddings]` read as `T`, its error placed at the unknown key it names.
fn embeddings_table<T: DeserializeOwned>(
    cfg: &Config,
    what: &str,
    kind: &str,
    t: toml::Table,
) -> Result<T> {
    T::deserialize(toml::Value::Table(t)).map_err(|e| {
        let at = embeddings_at(cfg, what, unknown_field(e.message()));
        anyhow::Error::new(e).context(format!("[embeddings] {what}{at}: invalid table `{kind}`"))
    })
}

fn table_kind(t: &toml::Table) -> Result<&str> {
    t.get("kind")
        .and_then(toml::Value::as_str)
        .with_context(|| {
            format!(
                "an embedding table needs `kind` ({})",
                TABLE_KINDS.join(", ")
            )
        })
}

/// The CEL settings of an `[embeddings]` section: the default table's (if it is clustered) and
/// each field's (`None` for a field whose table is not clustered).
pub type CelConfigs = (
    Option<embedding_cel::CelConfig>,
    std::collections::BTreeMap<String, Option<embedding_cel::CelConfig>>,
);

/// The clustered (`kind = "cel"`) tables of the `[embeddings]` section: the default (if the
/// default kind is `cel`) and the per-field ones. Every other key of such a table is a
/// [`embedding_cel::CelConfig`] setting.
pub fn cel_configs(cfg: &Config) -> Result<CelConfigs> {
    let parse = |t: &toml::Table, what: &str| -> Result<Option<embedding_cel::CelConfig>> {
        let at = || embeddings_at(cfg, what, None);
        if table_kind(t).with_context(|| format!("[embeddings] {what}{}", at()))? != "cel" {
            return Ok(None);
        }
        let mut t = t.clone();
        t.remove("kind");
        let c: embedding_cel::CelConfig = embeddings_table(cfg, what, "cel", t)?;
        c.validate()
            .map_err(|e| anyhow::anyhow!("[embeddings] {what}{}: {e}", at()))?;
        Ok(Some(c))
    };
    let default = match &cfg.embeddings.default {
        Some(t) => parse(t, "default")?,
        None => None,
    };
    let mut fields = std::collections::BTreeMap::new();
    for (name, t) in &cfg.embeddings.fields {
        fields.insert(name.clone(), parse(t, &format!("fields.{name}"))?);
    }
    Ok((default, fields))
}

fn is_cel(t: &toml::Table) -> bool {
    t.get("kind").and_then(toml::Value::as_str) == Some("cel")
}

/// The built-in table configuration for the `[embeddings]` section, or an error naming the
/// field whose table is unknown or malformed.
pub fn tables_config(cfg: &Config) -> Result<TablesConfig> {
    let parse = |t: &toml::Table, what: &str| -> Result<TableConfig> {
        let kind = table_kind(t)
            .with_context(|| format!("[embeddings] {what}{}", embeddings_at(cfg, what, None)))?;
        if !TABLE_KINDS.contains(&kind) {
            bail!(
                "[embeddings] {what}{}: unknown table kind `{kind}` (one of {})",
                embeddings_at(cfg, what, Some("kind")),
                TABLE_KINDS.map(|k| format!("`{k}`")).join(", ")
            );
        }
        if is_cel(t) {
            // Built by the CEL factory in `build_model`; a full table stands in here.
            return Ok(TableConfig::Full);
        }
        embeddings_table(cfg, what, kind, t.clone())
    };
    let default = match &cfg.embeddings.default {
        Some(t) => parse(t, "default")?,
        None => TableConfig::Full,
    };
    let mut fields = std::collections::BTreeMap::new();
    for (name, t) in &cfg.embeddings.fields {
        fields.insert(name.clone(), parse(t, &format!("fields.{name}"))?);
    }
    let mut options = TableOptions {
        optimizer: cfg.optimizer.sparse,
        ..TableOptions::default()
    };
    if let Some(init) = cfg.embeddings.init {
        options.init = init;
    }
    Ok(TablesConfig {
        default,
        fields,
        options,
    })
}

/// The schema's field names, comma separated (for error messages).
fn field_names(schema: &Schema) -> String {
    schema
        .fields
        .iter()
        .map(|f| f.name.as_str())
        .collect::<Vec<_>>()
        .join(", ")
}

/// Builds the model named in `cfg` for `schema`, with the tables `[embeddings]` asks for. An
/// `[embeddings.fields]` entry for which the model builds no table is an error (it would be
/// ignored).
pub fn build_model(
    cfg: &Config,
    schema: &Schema,
    train: &Batch,
    device: &Device,
) -> Result<Box<dyn Model>> {
    build_model_with(cfg, schema, train, device, true)
}

/// [`build_model`] for a run that already exists (a resume, a restored checkpoint): an
/// `[embeddings.fields]` entry no table reads is a warning, so that a run trained before such
/// entries were refused can still be evaluated and continued.
pub fn rebuild_model(
    cfg: &Config,
    schema: &Schema,
    train: &Batch,
    device: &Device,
) -> Result<Box<dyn Model>> {
    build_model_with(cfg, schema, train, device, false)
}

fn build_model_with(
    cfg: &Config,
    schema: &Schema,
    train: &Batch,
    device: &Device,
    strict: bool,
) -> Result<Box<dyn Model>> {
    for name in cfg.embeddings.fields.keys() {
        let at = embeddings_at(cfg, &format!("fields.{name}"), None);
        // SAML builds a field's scenario tables under `{field}@scenario` (one table over
        // field x scenario), so they can get their own kind.
        if let Some(base) = name.strip_suffix(scenario_saml::scenario_embedding::SCENARIO_SUFFIX) {
            if cfg.model.name != "saml" {
                bail!(
                    "[embeddings.fields.\"{name}\"]{at}: only model `saml` has scenario tables \
                     (the model is `{}`)",
                    cfg.model.name
                );
            }
            let Some(field) = schema.field(base) else {
                bail!(
                    "[embeddings.fields.\"{name}\"]{at}: the data has no field `{base}` (fields: {})",
                    field_names(schema)
                );
            };
            // Fields sharing a vocabulary share their scenario table, named after the owner.
            if let Some(owner) = &field.shares_vocab_with {
                bail!(
                    "[embeddings.fields.\"{name}\"]{at}: `{base}` shares the vocabulary of \
                     `{owner}`, whose scenario table it uses; configure \"{owner}@scenario\""
                );
            }
            continue;
        }
        if schema.field(name).is_none() {
            bail!(
                "[embeddings.fields.{name}]{at}: the data has no field `{name}` (fields: {})",
                field_names(schema)
            );
        }
    }
    let tables = tables_config(cfg)?;
    let options = tables.options;
    let (cel_default, cel_fields) = cel_configs(cfg)?;
    let seed = cfg.data.seed;
    let mut default =
        DefaultTableFactory::new(tables, seed, device).with_counts(id_counts(schema, train));
    // The fields a table was built for: an `[embeddings.fields]` entry no table reads (a
    // dense field, the scenario field, a field the model leaves out) would be ignored.
    let built = std::cell::RefCell::new(std::collections::BTreeSet::new());
    let mut factory = |f: &rec_data::FieldSpec,
                       dim: usize|
     -> candle_core::Result<Box<dyn EmbeddingTable>> {
        built.borrow_mut().insert(f.name.clone());
        let cel = match cel_fields.get(&f.name) {
            Some(c) => c.clone(),
            None => cel_default.clone(),
        };
        match cel {
            Some(c) => {
                // Exact reassignment scores each entity on its rows of a categorical
                // column: on a bag (multi-hot) field it would fail at its first round.
                // (A SAML scenario table `X@scenario` has no column of its own.)
                let column = schema.field(&f.name).map(|s| s.kind);
                if matches!(c.reassign, embedding_cel::Reassign::Exact { .. })
                    && column != Some(rec_data::FieldKind::Categorical)
                {
                    let key = if cel_fields.contains_key(&f.name) {
                        format!("fields.{}", f.name)
                    } else {
                        "default".to_string()
                    };
                    let what = match column {
                        Some(k) => format!("{k:?}"),
                        None => "a table without a column of its own".to_string(),
                    };
                    let at = embeddings_at(cfg, &key, Some("reassign"));
                    candle_core::bail!(
                        "[embeddings] {key}{at}: exact CEL reassignment needs a categorical field, \
                             and `{}` is {what}; give it `reassign = {{ kind = \"approx\" }}` \
                             (or its own [embeddings.fields] entry)",
                        f.name
                    );
                }
                use rec_nn::init::{mix64, name_hash, named_rng};
                let name = format!("table/{}/{dim}", f.name);
                let mut rng = named_rng(seed, &name);
                let table_seed = mix64(seed, name_hash(&format!("cel/{}/{dim}", f.name)));
                Ok(Box::new(embedding_cel::ClusteredEmbedding::new(
                    &f.name, f.vocab, dim, c, &options, &mut rng, table_seed, device,
                )?))
            }
            None => default.build(f, dim),
        }
    };
    let entries = models();
    let entry = entries
        .iter()
        .find(|e| e.name == cfg.model.name)
        .with_context(|| {
            format!(
                "unknown model `{}`; known models: {}",
                cfg.model.name,
                model_names().join(", ")
            )
        })?;
    let mut ctx = BuildContext {
        schema,
        params: &cfg.model.params,
        factory: &mut factory,
        device,
        seed: cfg.data.seed,
        origin: &cfg.origin,
    };
    if ["saml", "shared", "separate", "mmoe", "star"].contains(&entry.name)
        && schema.scenario_field.is_none()
    {
        // Allowed (one scenario), but most likely a scenario column described with another
        // role.
        tracing::warn!(
            model = entry.name,
            "a multi-scenario model on data without a scenario field: every sample is scenario \
             0 (in your own CSV data, a column with role = \"scenario\" is one)"
        );
    }
    let model =
        (entry.build)(&mut ctx).with_context(|| format!("building model `{}`", cfg.model.name))?;
    let built = built.into_inner();
    if let Some(name) = cfg.embeddings.fields.keys().find(|n| !built.contains(*n)) {
        // A field that shares another's vocabulary is served by the owner's table.
        let owner = schema
            .field(name)
            .and_then(|f| f.shares_vocab_with.as_deref())
            .map(|o| format!("; `{name}` uses the table of `{o}`: configure that one"))
            .unwrap_or_default();
        let msg = format!(
            "[embeddings.fields.\"{name}\"]{}: model `{}` builds no table for `{name}` (its tables: \
             {}), so the entry would be ignored{owner}",
            embeddings_at(cfg, &format!("fields.{name}"), None),
            cfg.model.name,
            built.iter().cloned().collect::<Vec<_>>().join(", ")
        );
        if strict {
            bail!(msg);
        }
        tracing::warn!("{msg}");
    }
    Ok(model)
}
