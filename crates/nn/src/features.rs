//! Per-field embeddings from a schema: the shared input layer every model composes (FuxiCTR's
//! `FeatureEmbedding`).
//!
//! For each selected field:
//! - categorical: its table's vector;
//! - multi-hot and sequence: the pooled vectors of the bag ([`Pooling`], default mean);
//! - dense (`k` floats): a linear projection `k -> dim` without bias.
//!
//! With `linear_width = Some(w)`, the layer also computes first-order terms: one width-`w`
//! table per categorical/bag field (pooled the same way) and a `k -> w` projection per dense
//! field, summed over fields (`w` is 1 for a single task; one column per task otherwise).
//!
//! Tables are named `{prefix}.emb.{field}` and `{prefix}.lin.{field}` (`emb.{field}` with an
//! empty prefix; the owner field for
//! fields that share a vocabulary); the layer never knows which table kinds it holds.

use candle_core::{Device, Result, Tensor};
use rec_data::{Batch, Column, FieldKind, Schema};

use crate::embedding::factory::{sorted_tables, sorted_tables_mut};
use crate::embedding::pooling::pooled_lookup;
use crate::embedding::{EmbeddingTable, Pooling, TableFactory, TableSet};
use crate::init::{Init, VarStore, join};
use crate::layers::Linear;

/// The vectors of a batch.
pub struct FeatureOutput {
    /// One `[n, dim]` tensor per field, in the layer's field order.
    pub fields: Vec<Tensor>,
    /// Sum of the first-order terms, `[n, linear_width]`, when the layer has them.
    pub linear: Option<Tensor>,
}

impl FeatureOutput {
    /// The field vectors stacked as `[n, F, dim]`.
    pub fn stacked(&self) -> Result<Tensor> {
        Tensor::stack(&self.fields, 1)
    }

    /// The field vectors concatenated as `[n, F * dim]`.
    pub fn concat(&self) -> Result<Tensor> {
        Tensor::cat(&self.fields, 1)
    }
}

enum Source {
    Table,
    Dense { proj: Linear, lin: Option<Linear> },
}

struct Field {
    name: String,
    index: usize,
    source: Source,
}

/// See the [module documentation](self).
pub struct FeatureEmbedding {
    fields: Vec<Field>,
    emb: TableSet,
    lin: Option<TableSet>,
    pooling: Pooling,
    dim: usize,
    linear_width: Option<usize>,
    device: Device,
}

impl FeatureEmbedding {
    /// The layer for the fields named in `fields` (all fields of the schema, in schema order,
    /// when `None`), with vectors of width `dim`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        schema: &Schema,
        fields: Option<&[&str]>,
        dim: usize,
        pooling: Pooling,
        linear_width: Option<usize>,
        prefix: &str,
        factory: &mut TableFactory<'_>,
        vs: &mut VarStore,
    ) -> Result<Self> {
        let names: Vec<&str> = match fields {
            Some(f) => f.to_vec(),
            None => schema.fields.iter().map(|f| f.name.as_str()).collect(),
        };
        if names.is_empty() {
            candle_core::bail!("a feature embedding needs at least one field");
        }
        let table_fields: Vec<&str> = names
            .iter()
            .copied()
            .filter(|n| {
                schema
                    .field(n)
                    .is_some_and(|f| !matches!(f.kind, FieldKind::Dense { .. }))
            })
            .collect();
        let p = |s: &str| format!("{}.", join(prefix, s));
        let emb = TableSet::build(
            schema,
            table_fields.iter().copied(),
            dim,
            &p("emb"),
            factory,
        )?;
        let lin = match linear_width {
            Some(w) => Some(TableSet::build(
                schema,
                table_fields.iter().copied(),
                w,
                &p("lin"),
                factory,
            )?),
            None => None,
        };
        let mut out = Vec::with_capacity(names.len());
        for name in names {
            let index = schema.field_index(name).ok_or_else(|| {
                candle_core::Error::Msg(format!("field `{name}` is not in the schema"))
            })?;
            let source = match schema.fields[index].kind {
                FieldKind::Dense { dim: k } => {
                    let base = join(prefix, &format!("dense.{name}"));
                    let proj = Linear::with_init(
                        vs,
                        &join(&base, "proj"),
                        k,
                        dim,
                        false,
                        Init::XavierUniform,
                    )?;
                    let lin = match linear_width {
                        Some(w) => Some(Linear::with_init(
                            vs,
                            &join(&base, "lin"),
                            k,
                            w,
                            false,
                            Init::Zeros,
                        )?),
                        None => None,
                    };
                    Source::Dense { proj, lin }
                }
                _ => Source::Table,
            };
            out.push(Field {
                name: name.to_string(),
                index,
                source,
            });
        }
        Ok(Self {
            fields: out,
            emb,
            lin,
            pooling,
            dim,
            linear_width,
            device: vs.device().clone(),
        })
    }

    /// Number of fields.
    pub fn num_fields(&self) -> usize {
        self.fields.len()
    }

    /// Width of the field vectors.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// Names of the fields, in output order.
    pub fn field_names(&self) -> Vec<&str> {
        self.fields.iter().map(|f| f.name.as_str()).collect()
    }

    /// Width of the first-order term, if the layer has one.
    pub fn linear_width(&self) -> Option<usize> {
        self.linear_width
    }

    /// The field vectors (and first-order terms) of `batch`; lookups are differentiable when
    /// `train`.
    pub fn forward(&mut self, batch: &Batch, train: bool) -> Result<FeatureOutput> {
        let n = batch.len();
        let mut fields = Vec::with_capacity(self.fields.len());
        let mut linear: Option<Tensor> = None;
        let mut add = |t: Tensor| -> Result<()> {
            linear = Some(match linear.take() {
                None => t,
                Some(l) => (l + t)?,
            });
            Ok(())
        };
        for f in &self.fields {
            let col = batch.columns.get(f.index).ok_or_else(|| {
                candle_core::Error::Msg(format!("batch has no column for field `{}`", f.name))
            })?;
            match &f.source {
                Source::Table => {
                    let t = self.emb.table_mut(&f.name)?;
                    fields.push(pooled_lookup(t, col, self.pooling, train, &self.device)?);
                    if let Some(lin) = &mut self.lin {
                        let t = lin.table_mut(&f.name)?;
                        add(pooled_lookup(t, col, self.pooling, train, &self.device)?)?;
                    }
                }
                Source::Dense { proj, lin } => {
                    let Column::Dense { values, dim } = col else {
                        candle_core::bail!("column of field `{}` is not dense", f.name);
                    };
                    let x = Tensor::from_slice(values, (n, *dim), &self.device)?;
                    fields.push(proj.forward(&x)?);
                    if let Some(l) = lin {
                        add(l.forward(&x)?)?;
                    }
                }
            }
        }
        Ok(FeatureOutput { fields, linear })
    }

    /// The table sets of the layer (embeddings, then first-order terms).
    pub fn table_sets(&self) -> Vec<&TableSet> {
        std::iter::once(&self.emb)
            .chain(self.lin.as_ref())
            .collect()
    }

    /// The table sets, mutable.
    pub fn table_sets_mut(&mut self) -> Vec<&mut TableSet> {
        std::iter::once(&mut self.emb)
            .chain(self.lin.as_mut())
            .collect()
    }

    /// The embedding tables (not the first-order ones).
    pub fn embeddings_mut(&mut self) -> &mut TableSet {
        &mut self.emb
    }

    /// All tables with their names, sorted by name.
    pub fn tables(&self) -> Vec<(String, &dyn EmbeddingTable)> {
        sorted_tables(self.table_sets())
    }

    /// All tables with their names, mutable, sorted by name.
    pub fn tables_mut(&mut self) -> Vec<(String, &mut dyn EmbeddingTable)> {
        sorted_tables_mut(self.table_sets_mut())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::embedding::{DefaultTableFactory, TablesConfig};
    use rec_data::{FieldSpec, TaskKind, TaskSpec};
    use std::sync::Arc;

    fn schema() -> Arc<Schema> {
        Arc::new(Schema {
            fields: vec![
                FieldSpec::categorical("user_id", 5),
                FieldSpec::categorical("item_id", 6),
                FieldSpec::multi_hot("tags", 4),
                FieldSpec::sequence("hist", 6, "h").sharing("item_id"),
                FieldSpec::dense("x", 2),
            ],
            tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
            num_scenarios: 1,
            ..Default::default()
        })
    }

    fn batch(s: Arc<Schema>) -> Batch {
        Batch {
            schema: s,
            columns: vec![
                Column::Ids(vec![1, 2, 3]),
                Column::Ids(vec![4, 5, 1]),
                Column::Ragged {
                    values: vec![1, 2, 3],
                    offsets: vec![0, 2, 2, 3],
                },
                Column::Ragged {
                    values: vec![1, 1, 2],
                    offsets: vec![0, 1, 3, 3],
                },
                Column::Dense {
                    values: vec![0.5, -1.0, 0.0, 2.0, 1.0, 1.0],
                    dim: 2,
                },
            ],
            labels: vec![vec![1.0, 0.0, 1.0]],
            weights: None,
            slices: vec![],
        }
    }

    #[test]
    fn every_field_gets_a_vector_and_gradients_flow_to_everything() -> Result<()> {
        let s = schema();
        let d = Device::Cpu;
        let mut f = DefaultTableFactory::new(TablesConfig::default(), 3, &d);
        let mut factory = |field: &rec_data::FieldSpec, dim: usize| f.build(field, dim);
        let mut vs = VarStore::new(1, &d);
        let mut fe = FeatureEmbedding::new(
            &s,
            None,
            4,
            Pooling::Mean,
            Some(1),
            "",
            &mut factory,
            &mut vs,
        )?;
        let names: Vec<String> = fe.tables().into_iter().map(|(n, _)| n).collect();
        assert_eq!(
            names,
            [
                "emb.item_id",
                "emb.tags",
                "emb.user_id",
                "lin.item_id",
                "lin.tags",
                "lin.user_id"
            ]
        );
        assert_eq!(
            vs.vars().len(),
            2,
            "dense projection and its first-order term"
        );
        let b = batch(s);
        let out = fe.forward(&b, true)?;
        assert_eq!(out.stacked()?.dims(), &[3, 5, 4]);
        assert_eq!(out.concat()?.dims(), &[3, 20]);
        assert_eq!(out.linear.as_ref().unwrap().dims(), &[3, 1]);
        // hist uses item_id's table: its single-element bag equals the item lookup of ID 1.
        let v = out.stacked()?.to_vec3::<f32>()?;
        assert_eq!(v[0][3], v[2][1]);
        let loss = (crate::gradcheck::weighted_sum(&out.stacked()?, 1)?
            + out.linear.unwrap().sum_all()?)?;
        let grads = loss.backward()?;
        for (name, v) in vs.vars() {
            assert!(grads.get(v.as_tensor()).is_some(), "{name}");
        }
        let weights = |t: &dyn EmbeddingTable| -> Result<Vec<f32>> {
            let mut m = crate::TensorMap::new();
            t.save("", &mut m)?;
            crate::embedding::rows::host_f32(&m["weight"])
        };
        let before = fe
            .tables()
            .into_iter()
            .map(|(_, t)| weights(t))
            .collect::<Result<Vec<_>>>()?;
        for (_, t) in fe.tables_mut() {
            t.apply_gradients(&grads)?;
        }
        for ((name, t), b) in fe.tables().into_iter().zip(before) {
            assert_ne!(weights(t)?, b, "{name} did not move");
        }
        Ok(())
    }

    // The quadratic loss of the table gradient checks (central differences exact up to
    // rounding for a lookup linear in the table).
    use crate::embedding::tests::quadratic_loss;

    /// Every output of the layer in one vector: the field vectors, then the first-order terms.
    fn everything(out: &FeatureOutput) -> Result<Tensor> {
        let mut parts = vec![out.stacked()?.flatten_all()?];
        if let Some(l) = &out.linear {
            parts.push(l.flatten_all()?);
        }
        Tensor::cat(&parts, 0)
    }

    /// The whole layer against central differences of a quadratic loss of all its outputs:
    /// the dense projections (VarStore variables) through `check_gradients`, and every table
    /// value through the update SGD at learning rate 1 applies (weights before minus after one
    /// `apply_gradients` is the gradient). This covers the field that reads another field's
    /// table (`hist` uses `item_id`'s: item 2 occurs only in `hist`), a hashed table whose IDs
    /// collide, a QR table (a product of two rows), multi-hot and sequence pooling with an
    /// empty bag, and a two-column first-order term.
    #[test]
    fn gradients_of_every_table_and_projection_match_central_differences() -> Result<()> {
        use crate::embedding::{TableConfig, TableOptions, TensorMap};
        use crate::gradcheck::{GradCheck, check_all_params_get_gradient, check_gradients};
        use crate::optim::OptimizerConfig;
        let s = schema();
        let d = Device::Cpu;
        let b = batch(s.clone());
        for pooling in [Pooling::Mean, Pooling::Sum] {
            let mut config = TablesConfig {
                options: TableOptions::new(
                    Init::Normal {
                        mean: 0.0,
                        std: 0.5,
                    },
                    OptimizerConfig::sgd(1.0),
                ),
                ..Default::default()
            };
            config
                .fields
                .insert("user_id".into(), TableConfig::Hashed { rows: 2 });
            config
                .fields
                .insert("tags".into(), TableConfig::Qr { collisions: 2 });
            let mut f = DefaultTableFactory::new(config, 3, &d);
            let mut factory = |field: &rec_data::FieldSpec, dim: usize| f.build(field, dim);
            let mut vs = VarStore::new(1, &d);
            let mut fe =
                FeatureEmbedding::new(&s, None, 4, pooling, Some(2), "", &mut factory, &mut vs)?;
            let kinds: Vec<(String, &str)> = fe
                .tables()
                .into_iter()
                .map(|(n, t)| (n, t.kind()))
                .collect();
            assert_eq!(kinds[0], ("emb.item_id".to_string(), "full"));
            assert_eq!(kinds[1], ("emb.tags".to_string(), "qr"));
            assert_eq!(kinds[2], ("emb.user_id".to_string(), "hashed"));
            let eval_loss = |fe: &mut FeatureEmbedding| -> Result<f64> {
                Ok(quadratic_loss(&everything(&fe.forward(&b, false)?)?)?.1)
            };

            // Dense projections: plain variables (lookups not differentiable here).
            let params = vs.vars();
            assert_eq!(params.len(), 2);
            check_gradients(
                &params,
                || Ok(quadratic_loss(&everything(&fe.forward(&b, false)?)?)?.0),
                &GradCheck::f32(),
            )?;
            let loss = quadratic_loss(&everything(&fe.forward(&b, false)?)?)?.0;
            check_all_params_get_gradient(&params, &loss)?;

            // Tables: one SGD step at learning rate 1.
            let save = |t: &dyn EmbeddingTable| -> Result<(TensorMap, serde_json::Value)> {
                let mut m = TensorMap::new();
                let meta = t.save("", &mut m)?;
                Ok((m, meta))
            };
            let before = fe
                .tables()
                .into_iter()
                .map(|(_, t)| save(t))
                .collect::<Result<Vec<_>>>()?;
            let (loss, _) = quadratic_loss(&everything(&fe.forward(&b, true)?)?)?;
            let grads = loss.backward()?;
            for (_, t) in fe.tables_mut() {
                t.apply_gradients(&grads)?;
            }
            let after = fe
                .tables()
                .into_iter()
                .map(|(_, t)| Ok(save(t)?.0))
                .collect::<Result<Vec<_>>>()?;
            for ((_, t), (m, meta)) in fe.tables_mut().into_iter().zip(&before) {
                t.load("", m, meta)?;
            }
            let base = eval_loss(&mut fe)?;
            let eps = 1e-2f32;
            for (ti, (name, _)) in kinds.iter().enumerate() {
                let (m0, meta) = &before[ti];
                let mut keys: Vec<&String> = m0.keys().filter(|k| k.ends_with("weight")).collect();
                keys.sort();
                assert!(!keys.is_empty(), "{name}: no weights saved");
                let (mut checked, mut moved) = (0, 0);
                for key in keys {
                    let w0 = m0[key].flatten_all()?.to_vec1::<f32>()?;
                    let w1 = after[ti][key].flatten_all()?.to_vec1::<f32>()?;
                    for k in 0..w0.len() {
                        let mut at = |x: f32| -> Result<f64> {
                            let mut w = w0.clone();
                            w[k] = x;
                            let mut m = m0.clone();
                            m.insert(key.clone(), Tensor::from_vec(w, m0[key].shape(), &d)?);
                            fe.tables_mut()[ti].1.load("", &m, meta)?;
                            eval_loss(&mut fe)
                        };
                        let fd = (at(w0[k] + eps)? - at(w0[k] - eps)?) / (2.0 * eps as f64);
                        let applied = (w0[k] - w1[k]) as f64;
                        assert!(
                            (fd - applied).abs() < 2e-3 * (1.0 + fd.abs()),
                            "{pooling:?} {name} {key}[{k}]: applied gradient {applied}, \
                             central difference {fd}"
                        );
                        checked += 1;
                        moved += usize::from(applied != 0.0);
                    }
                }
                fe.tables_mut()[ti].1.load("", m0, meta)?;
                assert!(moved > 0, "{pooling:?} {name}: nothing moved");
                if name == "emb.item_id" || name == "lin.item_id" {
                    // IDs 1, 2, 4, 5 are read (2 only through hist); rows 0 and 3 are not.
                    let width = if name == "emb.item_id" { 4 } else { 2 };
                    assert_eq!(moved, 4 * width, "{pooling:?} {name}: {moved} of {checked}");
                    let w0 = m0["weight"].to_vec2::<f32>()?;
                    let w1 = after[ti]["weight"].to_vec2::<f32>()?;
                    assert_ne!(w0[2], w1[2], "{pooling:?} {name}: hist's row did not move");
                    assert_eq!((&w0[0], &w0[3]), (&w1[0], &w1[3]));
                }
            }
            // Every table was restored.
            assert_eq!(eval_loss(&mut fe)?, base);
        }
        Ok(())
    }
}
