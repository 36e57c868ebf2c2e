//! How models get their tables without knowing their kind.
//!
//! A model asks a [`TableFactory`] for one table per field and width. [`DefaultTableFactory`]
//! builds the built-in kinds from a [`TablesConfig`]; the trainer adds other kinds (CEL's
//! clustered table) by wrapping it in its own closure:
//!
//! ```
//! use candle_core::Device;
//! use rec_data::FieldSpec;
//! use rec_nn::embedding::{DefaultTableFactory, EmbeddingTable, TableConfig, TablesConfig};
//! # fn main() -> candle_core::Result<()> {
//! let mut built_in = DefaultTableFactory::new(TablesConfig::default(), 42, &Device::Cpu);
//! let mut factory = |field: &FieldSpec, dim: usize| -> candle_core::Result<Box<dyn EmbeddingTable>> {
//!     // e.g. `if field.name == "item_id" { return Ok(Box::new(my_clustered_table)) }`
//!     built_in.build(field, dim)
//! };
//! let table = factory(&FieldSpec::categorical("user_id", 100), 8)?;
//! assert_eq!((table.kind(), table.vocab(), table.dim()), ("full", 100, 8));
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, HashMap};

use candle_core::backprop::GradStore;
use candle_core::{Device, Result, Tensor};
use rec_data::{FieldKind, FieldSpec, Schema};
use serde::{Deserialize, Serialize};

use super::{EmbeddingTable, FrequencyTable, FullTable, HashedTable, QrTable, TableOptions};
use crate::init::{mix64, name_hash, named_rng};

/// Builds the table of `field` with vectors of width `dim`.
pub type TableFactory<'a> = dyn FnMut(&FieldSpec, usize) -> Result<Box<dyn EmbeddingTable>> + 'a;

/// Which built-in table to build. Serialized with a `kind` tag, e.g. `{ kind = "hashed",
/// rows = 10000 }`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(
    tag = "kind",
    rename_all = "snake_case",
    deny_unknown_fields,
    from = "TableConfigRepr"
)]
pub enum TableConfig {
    /// One row per ID ([`FullTable`]).
    #[default]
    Full,
    /// `rows` hashed rows ([`HashedTable`]).
    Hashed {
        /// Number of shared rows.
        rows: usize,
    },
    /// Quotient and remainder tables ([`QrTable`]).
    Qr {
        /// Rows of the remainder table; the quotient table has `ceil(vocab / collisions)`.
        collisions: usize,
    },
    /// The `top_k` most frequent IDs own rows, the rest share `rows` hashed rows
    /// ([`FrequencyTable`]); needs train-set counts.
    Frequency {
        /// Number of frequent IDs with their own row.
        top_k: usize,
        /// Number of shared hashed rows.
        rows: usize,
    },
}

/// What [`TableConfig`] is read from: the same with `full` as an empty struct variant, so that
/// a stray key next to `kind = "full"` (`rows = 10`) is refused like any unknown key; serde
/// lets unit variants of an internally tagged enum ignore the other keys.
#[derive(Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case", deny_unknown_fields)]
enum TableConfigRepr {
    Full {},
    Hashed { rows: usize },
    Qr { collisions: usize },
    Frequency { top_k: usize, rows: usize },
}

impl From<TableConfigRepr> for TableConfig {
    fn from(r: TableConfigRepr) -> Self {
        match r {
            TableConfigRepr::Full {} => Self::Full,
            TableConfigRepr::Hashed { rows } => Self::Hashed { rows },
            TableConfigRepr::Qr { collisions } => Self::Qr { collisions },
            TableConfigRepr::Frequency { top_k, rows } => Self::Frequency { top_k, rows },
        }
    }
}

/// Tables of a model: a default kind, per-field overrides, and the shared options.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TablesConfig {
    /// Kind of every table not listed in `fields` (default `full`).
    #[serde(default)]
    pub default: TableConfig,
    /// Kind per field name (the field that owns the vocabulary).
    #[serde(default)]
    pub fields: BTreeMap<String, TableConfig>,
    /// Initialisation and row optimizer of every table.
    #[serde(default)]
    pub options: TableOptions,
}

/// Builds built-in tables from a [`TablesConfig`]. Every table draws its initial values from
/// its own seeded stream (seed, field name, width), and hashed tables hash with a seed derived
/// from (seed, field name), so the same seed gives the same tables in any build order. A model
/// that asks twice for a table of the same field and width (NeuMF's GMF and MLP embeddings of
/// equal width) gets a second, distinct stream and hash seed for the second one: two copies of
/// one initialisation would make the two towers start identical.
pub struct DefaultTableFactory {
    config: TablesConfig,
    seed: u64,
    device: Device,
    counts: HashMap<String, Vec<u64>>,
    built: HashMap<(String, usize), u32>,
}

impl DefaultTableFactory {
    /// A factory for tables whose lookups return tensors on `device`.
    pub fn new(config: TablesConfig, seed: u64, device: &Device) -> Self {
        Self {
            config,
            seed,
            device: device.clone(),
            counts: HashMap::new(),
            built: HashMap::new(),
        }
    }

    /// Adds train-set ID counts per field (needed by frequency tables).
    pub fn with_counts(mut self, counts: HashMap<String, Vec<u64>>) -> Self {
        self.counts = counts;
        self
    }

    /// The kind configured for `field`.
    pub fn config_for(&self, field: &str) -> TableConfig {
        self.config
            .fields
            .get(field)
            .copied()
            .unwrap_or(self.config.default)
    }

    /// The fields of [`TablesConfig::fields`] no table was built for so far: after a model is
    /// built, entries it never asked for (a misspelt field, a dense one, one the model leaves
    /// out), which would otherwise be ignored with nothing said. The trainer refuses them.
    pub fn unused_fields(&self) -> Vec<String> {
        self.config
            .fields
            .keys()
            .filter(|f| !self.built.keys().any(|(n, _)| n == *f))
            .cloned()
            .collect()
    }

    /// Builds the table of `field` with width `dim`.
    pub fn build(&mut self, field: &FieldSpec, dim: usize) -> Result<Box<dyn EmbeddingTable>> {
        if matches!(field.kind, FieldKind::Dense { .. }) {
            candle_core::bail!("field `{}` is dense and has no embedding table", field.name);
        }
        let repeat = self.built.entry((field.name.clone(), dim)).or_insert(0);
        let n = *repeat;
        *repeat += 1;
        let opts = &self.config.options;
        let (stream, hashed) = match n {
            0 => (format!("table/{}/{dim}", field.name), field.name.clone()),
            n => (
                format!("table/{}/{dim}#{n}", field.name),
                format!("{}#{n}", field.name),
            ),
        };
        let mut rng = named_rng(self.seed, &stream);
        let hash_seed = mix64(self.seed, name_hash(&hashed));
        let vocab = field.vocab;
        let d = &self.device;
        let ctx = |e: candle_core::Error| {
            candle_core::Error::Msg(format!("table of field `{}`: {e}", field.name))
        };
        Ok(match self.config_for(&field.name) {
            TableConfig::Full => {
                Box::new(FullTable::new(vocab, dim, opts, &mut rng, d).map_err(ctx)?)
            }
            TableConfig::Hashed { rows } => Box::new(
                HashedTable::new(vocab, rows, dim, hash_seed, opts, &mut rng, d).map_err(ctx)?,
            ),
            TableConfig::Qr { collisions } => {
                Box::new(QrTable::new(vocab, collisions, dim, opts, &mut rng, d).map_err(ctx)?)
            }
            TableConfig::Frequency { top_k, rows } => {
                let counts = self.counts.get(&field.name).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "the frequency table of field `{}` needs train-set counts",
                        field.name
                    ))
                })?;
                Box::new(
                    FrequencyTable::new(
                        vocab, dim, counts, top_k, rows, hash_seed, opts, &mut rng, d,
                    )
                    .map_err(ctx)?,
                )
            }
        })
    }
}

/// The field whose table `field` uses: itself, or the end of its `shares_vocab_with` chain.
pub fn table_owner<'s>(schema: &'s Schema, field: &'s FieldSpec) -> Result<&'s FieldSpec> {
    let mut f = field;
    for _ in 0..=schema.fields.len() {
        match &f.shares_vocab_with {
            None => return Ok(f),
            Some(o) => {
                f = schema.field(o).ok_or_else(|| {
                    candle_core::Error::Msg(format!(
                        "field `{}` shares the vocabulary of `{o}`, which is not in the schema",
                        f.name
                    ))
                })?;
            }
        }
    }
    candle_core::bail!("field `{}` has a cycle of shared vocabularies", field.name)
}

/// The tables of some fields of a schema, all of width `dim`, named `{prefix}{owner field}`.
/// Fields that share a vocabulary share one table (built once, for the owner field).
pub struct TableSet {
    prefix: String,
    dim: usize,
    tables: BTreeMap<String, Box<dyn EmbeddingTable>>,
    owner: HashMap<String, String>,
}

/// Checks a table a [`TableFactory`] built for the field `name` of `vocab` IDs at width `dim`:
/// it must have that width, and room for every ID of the field (a smaller table would look the
/// IDs past its end up by its unknown-ID rule, silently sharing their rows). A larger one is
/// accepted (e.g. room for IDs to come).
pub fn check_built(t: &dyn EmbeddingTable, name: &str, vocab: usize, dim: usize) -> Result<()> {
    if t.dim() != dim {
        candle_core::bail!(
            "the factory built a table of width {} for `{name}`, expected {dim}",
            t.dim()
        );
    }
    if t.vocab() < vocab {
        candle_core::bail!(
            "the factory built a `{}` table of {} IDs for `{name}`, which has {vocab}: build it \
             with the vocabulary the factory is given",
            t.kind(),
            t.vocab()
        );
    }
    Ok(())
}

impl TableSet {
    /// Builds the tables of the fields named in `fields` (each must be a categorical, multi-hot
    /// or sequence field of `schema`).
    pub fn build<'f>(
        schema: &Schema,
        fields: impl IntoIterator<Item = &'f str>,
        dim: usize,
        prefix: &str,
        factory: &mut TableFactory<'_>,
    ) -> Result<Self> {
        let mut set = Self {
            prefix: prefix.to_string(),
            dim,
            tables: BTreeMap::new(),
            owner: HashMap::new(),
        };
        for name in fields {
            let field = schema.field(name).ok_or_else(|| {
                candle_core::Error::Msg(format!("field `{name}` is not in the schema"))
            })?;
            if matches!(field.kind, FieldKind::Dense { .. }) {
                candle_core::bail!("field `{name}` is dense and has no embedding table");
            }
            let owner = table_owner(schema, field)?;
            if !set.tables.contains_key(&owner.name) {
                let t = factory(owner, dim)?;
                check_built(t.as_ref(), &owner.name, owner.vocab, dim)?;
                set.tables.insert(owner.name.clone(), t);
            }
            set.owner.insert(field.name.clone(), owner.name.clone());
        }
        Ok(set)
    }

    /// Width of every table.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// True when `field` has a table here.
    pub fn contains(&self, field: &str) -> bool {
        self.owner.contains_key(field)
    }

    /// The table `field` uses.
    pub fn table(&self, field: &str) -> Result<&dyn EmbeddingTable> {
        let o = self.owner_of(field)?;
        Ok(self.tables[o].as_ref())
    }

    /// The table `field` uses, mutable.
    pub fn table_mut(&mut self, field: &str) -> Result<&mut dyn EmbeddingTable> {
        let o = self.owner_of(field)?.to_string();
        Ok(self.tables.get_mut(&o).expect("owner has a table").as_mut())
    }

    fn owner_of(&self, field: &str) -> Result<&str> {
        self.owner
            .get(field)
            .map(String::as_str)
            .ok_or_else(|| candle_core::Error::Msg(format!("no table for field `{field}`")))
    }

    /// Looks `ids` up in the table of `field` (see [`EmbeddingTable::lookup`]).
    pub fn lookup(&mut self, field: &str, ids: &[u32], train: bool) -> Result<Tensor> {
        self.table_mut(field)?.lookup(ids, train)
    }

    /// The tables with their names, sorted by name.
    pub fn named(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.tables
            .iter()
            .map(|(o, t)| (format!("{}{o}", self.prefix), t.as_ref()))
            .collect()
    }

    /// The tables with their names, mutable, sorted by name.
    pub fn named_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        let p = &self.prefix;
        self.tables
            .iter_mut()
            .map(|(o, t)| (format!("{p}{o}"), t.as_mut() as &mut dyn EmbeddingTable))
            .collect()
    }

    /// Applies the pending gradients of every table.
    pub fn apply_gradients(&mut self, grads: &GradStore) -> Result<()> {
        self.tables
            .values_mut()
            .try_for_each(|t| t.apply_gradients(grads))
    }
}

/// Merges the named tables of several sets, sorted by name (for [`crate::Model::tables`]).
pub fn sorted_tables<'a>(
    sets: impl IntoIterator<Item = &'a TableSet>,
) -> Vec<(String, &'a dyn EmbeddingTable)> {
    let mut v: Vec<_> = sets.into_iter().flat_map(|s| s.named()).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

/// Merges the named tables of several sets, mutable, sorted by name.
pub fn sorted_tables_mut<'a>(
    sets: impl IntoIterator<Item = &'a mut TableSet>,
) -> Vec<(String, &'a mut dyn EmbeddingTable)> {
    let mut v: Vec<_> = sets.into_iter().flat_map(|s| s.named_mut()).collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}
