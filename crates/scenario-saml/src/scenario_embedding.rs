//! SAML's scenario-aware embedding \[paper\]: besides its global table, a field has one table per
//! scenario, and a sample of scenario `s` reads its IDs from table `s`. The two vectors (global
//! `e_g`, scenario `e_s`) are kept apart, not summed.
//!
//! Layout \[ours\]: the `M` per-scenario tables of a field are one table over `vocab * M`
//! *virtual IDs*, `id * M + s`, built by the same [`TableFactory`] as every other table (under
//! the name `{field}@scenario`, so a configuration can give it its own kind; it gets the
//! default kind otherwise). One lookup serves the whole batch, whatever its scenario mix, and
//! any [`EmbeddingTable`] works: hashed or clustered (CEL) tables bound the memory, and a
//! full table costs `M` times the field's global table (rows of scenarios in which an ID never
//! occurs are allocated but never touched: a user of one country only trains its own row).
//! Which fields get scenario tables is a per-field choice \[ours\] (default: every categorical and
//! multi-hot field but the scenario field itself, whose scenario table would hold one
//! useful row per scenario).
//!
//! Fields that share a vocabulary share their scenario table too. Tables are named
//! `scen.{owner field}`.

use std::collections::{BTreeMap, HashMap};

use candle_core::{Device, Result, Tensor};
use rec_data::{Batch, Column, FieldKind, FieldSpec, Schema};
use rec_nn::embedding::factory::table_owner;
use rec_nn::embedding::pooling::pooled_lookup;
use rec_nn::embedding::{EmbeddingTable, Pooling, TableFactory};

/// Suffix of the virtual field a scenario table is built for.
pub const SCENARIO_SUFFIX: &str = "@scenario";

/// The fields that get scenario tables by default: categorical and multi-hot fields except the
/// scenario field.
pub fn default_scenario_fields(schema: &Schema) -> Vec<String> {
    schema
        .fields
        .iter()
        .filter(|f| matches!(f.kind, FieldKind::Categorical | FieldKind::MultiHot))
        .filter(|f| Some(&f.name) != schema.scenario_field.as_ref())
        .map(|f| f.name.clone())
        .collect()
}

/// See the [module documentation](self).
pub struct ScenarioEmbedding {
    /// (field, column index, owner field) in output order.
    fields: Vec<(String, usize, String)>,
    tables: BTreeMap<String, Box<dyn EmbeddingTable>>,
    m: usize,
    dim: usize,
    pooling: Pooling,
    device: Device,
}

impl ScenarioEmbedding {
    /// Scenario tables of width `dim` for `fields` (categorical or multi-hot fields of `schema`)
    /// over `m` scenarios; with `zero_init` every table starts at zero
    /// ([`EmbeddingTable::start_at_zero`]), so an (ID, scenario) pair never trained reads a
    /// zero vector instead of its random initial row.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        schema: &Schema,
        fields: &[String],
        m: usize,
        dim: usize,
        pooling: Pooling,
        zero_init: bool,
        factory: &mut TableFactory<'_>,
        device: &Device,
    ) -> Result<Self> {
        let mut out = Vec::new();
        let mut tables: BTreeMap<String, Box<dyn EmbeddingTable>> = BTreeMap::new();
        let mut seen = HashMap::new();
        for name in fields {
            let index = schema.field_index(name).ok_or_else(|| {
                candle_core::Error::Msg(format!(
                    "scenario embedding (`scenario_fields`): field `{name}` is not in the schema \
                     (its categorical and multi-hot fields: {})",
                    default_scenario_fields(schema).join(", ")
                ))
            })?;
            let field = &schema.fields[index];
            if !matches!(field.kind, FieldKind::Categorical | FieldKind::MultiHot) {
                candle_core::bail!(
                    "scenario embedding (`scenario_fields`): field `{name}` is {:?}; only categorical and multi-hot fields get scenario tables",
                    field.kind
                );
            }
            if seen.insert(name.clone(), ()).is_some() {
                candle_core::bail!(
                    "scenario embedding (`scenario_fields`): field `{name}` is listed twice"
                );
            }
            let owner = table_owner(schema, field)?;
            let virtual_vocab = owner
                .vocab
                .checked_mul(m)
                .filter(|v| *v <= u32::MAX as usize);
            let Some(vocab) = virtual_vocab else {
                candle_core::bail!(
                    "scenario embedding: field `{}` has {} IDs; times {m} scenarios they do not fit in u32",
                    owner.name,
                    owner.vocab
                );
            };
            if !tables.contains_key(&owner.name) {
                let mut spec = FieldSpec {
                    name: format!("{}{SCENARIO_SUFFIX}", owner.name),
                    vocab,
                    group: None,
                    shares_vocab_with: None,
                    kind: owner.kind,
                };
                if spec.kind == FieldKind::Sequence {
                    spec.kind = FieldKind::MultiHot;
                }
                let mut t = factory(&spec, dim)?;
                if zero_init {
                    t.start_at_zero().map_err(|e| {
                        candle_core::Error::Msg(format!(
                            "scenario table `{}`: {e} (set scenario_zero_init = false)",
                            spec.name
                        ))
                    })?;
                }
                rec_nn::embedding::factory::check_built(t.as_ref(), &spec.name, vocab, dim)?;
                tables.insert(owner.name.clone(), t);
            }
            out.push((name.clone(), index, owner.name.clone()));
        }
        Ok(Self {
            fields: out,
            tables,
            m,
            dim,
            pooling,
            device: device.clone(),
        })
    }

    /// Number of fields with scenario tables.
    pub fn num_fields(&self) -> usize {
        self.fields.len()
    }

    /// Width of every vector.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Names of the fields, in output order.
    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|(n, _, _)| n.as_str()).collect()
    }

    /// One `[n, dim]` vector per field: the sample's IDs read from its own scenario's table.
    pub fn forward(
        &mut self,
        batch: &Batch,
        scenarios: &[u32],
        train: bool,
    ) -> Result<Vec<Tensor>> {
        let m = self.m as u32;
        let mut out = Vec::with_capacity(self.fields.len());
        for (name, index, owner) in &self.fields {
            let col = batch.columns.get(*index).ok_or_else(|| {
                candle_core::Error::Msg(format!("batch has no column for field `{name}`"))
            })?;
            let virt = virtual_column(col, scenarios, m).map_err(|e| {
                candle_core::Error::Msg(format!("scenario embedding of `{name}`: {e}"))
            })?;
            let table = self.tables.get_mut(owner).expect("built in new").as_mut();
            out.push(pooled_lookup(
                table,
                &virt,
                self.pooling,
                train,
                &self.device,
            )?);
        }
        Ok(out)
    }

    /// The tables with their names (`scen.{owner}`), sorted by name.
    pub fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        self.tables
            .iter()
            .map(|(o, t)| (format!("scen.{o}"), t.as_ref()))
            .collect()
    }

    /// The tables with their names, mutable, sorted by name.
    pub fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        self.tables
            .iter_mut()
            .map(|(o, t)| (format!("scen.{o}"), t.as_mut() as &mut dyn EmbeddingTable))
            .collect()
    }
}

/// The column with every ID replaced by its virtual ID `id * m + scenario`.
pub fn virtual_column(
    col: &Column,
    scenarios: &[u32],
    m: u32,
) -> std::result::Result<Column, String> {
    if col.len() != scenarios.len() {
        return Err(format!(
            "column has {} samples, scenarios {}",
            col.len(),
            scenarios.len()
        ));
    }
    let map = |id: u32, s: u32| -> std::result::Result<u32, String> {
        id.checked_mul(m)
            .and_then(|v| v.checked_add(s))
            .ok_or_else(|| format!("ID {id} times {m} scenarios overflows u32"))
    };
    Ok(match col {
        Column::Ids(ids) => Column::Ids(
            ids.iter()
                .zip(scenarios)
                .map(|(&i, &s)| map(i, s))
                .collect::<std::result::Result<_, _>>()?,
        ),
        Column::Ragged { values, offsets } => {
            let mut v = Vec::with_capacity(values.len());
            for (r, &s) in scenarios.iter().enumerate() {
                for &id in &values[offsets[r] as usize..offsets[r + 1] as usize] {
                    v.push(map(id, s)?);
                }
            }
            Column::Ragged {
                values: v,
                offsets: offsets.clone(),
            }
        }
        Column::Dense { .. } => return Err("a dense column has no IDs".into()),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use rec_nn::embedding::{DefaultTableFactory, TableConfig, TablesConfig};
    use std::sync::Arc;

    #[test]
    fn virtual_ids_interleave_scenarios() {
        let c = virtual_column(&Column::Ids(vec![0, 1, 2]), &[1, 0, 2], 3).unwrap();
        assert_eq!(c, Column::Ids(vec![1, 3, 8]));
        let r = Column::Ragged {
            values: vec![1, 2, 5],
            offsets: vec![0, 2, 2, 3],
        };
        let c = virtual_column(&r, &[1, 0, 1], 2).unwrap();
        assert_eq!(
            c,
            Column::Ragged {
                values: vec![3, 5, 11],
                offsets: vec![0, 2, 2, 3]
            }
        );
        assert!(virtual_column(&Column::Ids(vec![u32::MAX]), &[0], 2).is_err());
        assert!(virtual_column(&Column::Ids(vec![1]), &[0, 1], 2).is_err());
    }

    #[test]
    fn same_id_in_two_scenarios_reads_two_rows_and_updates_only_its_own() -> Result<()> {
        let schema = Arc::new(Schema {
            fields: vec![
                FieldSpec::categorical("item_id", 4),
                FieldSpec::multi_hot("tags", 3),
                FieldSpec::categorical("country", 2),
            ],
            tasks: vec![],
            scenario_field: Some("country".into()),
            num_scenarios: 2,
            ..Default::default()
        });
        assert_eq!(default_scenario_fields(&schema), ["item_id", "tags"]);
        let d = Device::Cpu;
        let mut f = DefaultTableFactory::new(TablesConfig::default(), 1, &d);
        let mut built = Vec::new();
        let mut factory = |spec: &FieldSpec, dim: usize| {
            built.push((spec.name.clone(), spec.vocab));
            f.build(spec, dim)
        };
        let mut se = ScenarioEmbedding::new(
            &schema,
            &default_scenario_fields(&schema),
            2,
            3,
            Pooling::Mean,
            false,
            &mut factory,
            &d,
        )?;
        assert_eq!(
            built,
            [
                ("item_id@scenario".to_string(), 8),
                ("tags@scenario".to_string(), 6)
            ]
        );
        let batch = Batch {
            schema: schema.clone(),
            columns: vec![
                Column::Ids(vec![2, 2]),
                Column::Ragged {
                    values: vec![1, 1],
                    offsets: vec![0, 1, 2],
                },
                Column::Ids(vec![0, 1]),
            ],
            labels: vec![],
            weights: None,
            slices: vec![],
        };
        let out = se.forward(&batch, &[0, 1], true)?;
        let items = out[0].to_vec2::<f32>()?;
        assert_ne!(items[0], items[1], "scenario 0 and 1 read different rows");
        // Back-propagate only through sample 0 (scenario 0): the row of (2, scenario 1) must not move.
        let loss = out[0].get(0)?.sum_all()?;
        let grads = loss.backward()?;
        for (_, t) in se.tables_mut() {
            t.apply_gradients(&grads)?;
        }
        let after = se.forward(&batch, &[0, 1], false)?[0].to_vec2::<f32>()?;
        assert_ne!(after[0], items[0]);
        assert_eq!(after[1], items[1]);
        let names: Vec<String> = se.tables().into_iter().map(|(n, _)| n).collect();
        assert_eq!(names, ["scen.item_id", "scen.tags"]);
        Ok(())
    }

    #[test]
    fn zero_init_reads_zero_until_trained_and_then_learns() -> Result<()> {
        let schema = Arc::new(Schema {
            fields: vec![
                FieldSpec::categorical("item_id", 4),
                FieldSpec::categorical("country", 2),
            ],
            tasks: vec![],
            scenario_field: Some("country".into()),
            num_scenarios: 2,
            ..Default::default()
        });
        let d = Device::Cpu;
        let fields = default_scenario_fields(&schema);
        let batch = Batch {
            schema: schema.clone(),
            columns: vec![Column::Ids(vec![2, 2]), Column::Ids(vec![0, 1])],
            labels: vec![],
            weights: None,
            slices: vec![],
        };
        let build = |zero: bool, kind: TableConfig| -> Result<ScenarioEmbedding> {
            let cfg = TablesConfig {
                default: kind,
                ..TablesConfig::default()
            };
            let mut f = DefaultTableFactory::new(cfg, 1, &d);
            let mut factory = |spec: &FieldSpec, dim: usize| f.build(spec, dim);
            ScenarioEmbedding::new(
                &schema,
                &fields,
                2,
                3,
                Pooling::Mean,
                zero,
                &mut factory,
                &d,
            )
        };
        // Random start: both rows non-zero.
        let mut random = build(false, TableConfig::Full)?;
        let r = random.forward(&batch, &[0, 1], false)?[0].to_vec2::<f32>()?;
        assert!(r.iter().all(|row| row.iter().any(|v| *v != 0.0)), "{r:?}");
        // Zero start: both rows zero; training scenario 0's row moves it, scenario 1's stays 0.
        let mut se = build(true, TableConfig::Full)?;
        let out = se.forward(&batch, &[0, 1], true)?;
        assert!(out[0].to_vec2::<f32>()?.iter().flatten().all(|v| *v == 0.0));
        let grads = out[0].get(0)?.sum_all()?.backward()?;
        for (_, t) in se.tables_mut() {
            t.apply_gradients(&grads)?;
        }
        let after = se.forward(&batch, &[0, 1], false)?[0].to_vec2::<f32>()?;
        assert!(after[0].iter().all(|v| *v != 0.0), "{after:?}");
        assert!(after[1].iter().all(|v| *v == 0.0), "{after:?}");
        // Hashed tables start at zero too; QR tables refuse (a product of zero rows never learns).
        let mut hashed = build(true, TableConfig::Hashed { rows: 3 })?;
        let h = hashed.forward(&batch, &[0, 1], false)?[0].to_vec2::<f32>()?;
        assert!(h.iter().flatten().all(|v| *v == 0.0));
        let err = build(true, TableConfig::Qr { collisions: 2 })
            .err()
            .expect("QR refuses");
        assert!(err.to_string().contains("scenario_zero_init"), "{err}");
        Ok(())
    }
}
