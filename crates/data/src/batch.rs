//! Columnar samples: a whole split, or a mini-batch gathered from one.
//!
//! A [`Batch`] stores one [`Column`] per schema field, one label vector per task, optional
//! sample weights and named boolean slices used only for evaluation (cold users, warm items...).
//! Categorical values are dense vocabulary indices (0 = out of vocabulary); multi-hot and
//! sequence fields are ragged arrays with offsets.

use std::sync::Arc;

use crate::schema::{FieldKind, Schema};

/// The values of one field for every sample of a batch.
#[derive(Debug, Clone, PartialEq)]
pub enum Column {
    /// One ID per sample.
    Ids(Vec<u32>),
    /// A variable number of IDs per sample: sample `i` owns `values[offsets[i]..offsets[i+1]]`.
    /// `offsets.len() == len + 1` and `offsets[0] == 0`.
    Ragged {
        /// All IDs, sample after sample.
        values: Vec<u32>,
        /// Start of each sample in `values`, plus the end.
        offsets: Vec<u32>,
    },
    /// `dim` floats per sample, row-major.
    Dense {
        /// `len * dim` values.
        values: Vec<f32>,
        /// Floats per sample.
        dim: usize,
    },
}

impl Column {
    /// Number of samples in the column.
    pub fn len(&self) -> usize {
        match self {
            Column::Ids(v) => v.len(),
            Column::Ragged { offsets, .. } => offsets.len().saturating_sub(1),
            Column::Dense { values, dim } => values.len() / (*dim).max(1),
        }
    }

    /// True when the column holds no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// An empty column of the kind that stores `kind`.
    pub fn empty_for(kind: &FieldKind) -> Column {
        match kind {
            FieldKind::Categorical => Column::Ids(Vec::new()),
            FieldKind::MultiHot | FieldKind::Sequence => Column::Ragged {
                values: Vec::new(),
                offsets: vec![0],
            },
            FieldKind::Dense { dim } => Column::Dense {
                values: Vec::new(),
                dim: *dim,
            },
        }
    }

    /// The IDs of a categorical column.
    pub fn ids(&self) -> Option<&[u32]> {
        match self {
            Column::Ids(v) => Some(v),
            _ => None,
        }
    }

    /// The IDs of sample `i` in a ragged column.
    pub fn ragged_row(&self, i: usize) -> Option<&[u32]> {
        match self {
            Column::Ragged { values, offsets } => {
                Some(&values[offsets[i] as usize..offsets[i + 1] as usize])
            }
            _ => None,
        }
    }

    /// Copies the rows `rows` (in that order) into a new column.
    pub fn gather(&self, rows: &[usize]) -> Column {
        match self {
            Column::Ids(v) => Column::Ids(rows.iter().map(|&r| v[r]).collect()),
            Column::Ragged { values, offsets } => {
                let mut out_off = Vec::with_capacity(rows.len() + 1);
                out_off.push(0u32);
                let total: usize = rows
                    .iter()
                    .map(|&r| (offsets[r + 1] - offsets[r]) as usize)
                    .sum();
                let mut out_val = Vec::with_capacity(total);
                for &r in rows {
                    out_val
                        .extend_from_slice(&values[offsets[r] as usize..offsets[r + 1] as usize]);
                    out_off.push(out_val.len() as u32);
                }
                Column::Ragged {
                    values: out_val,
                    offsets: out_off,
                }
            }
            Column::Dense { values, dim } => {
                let d = *dim;
                let mut out = Vec::with_capacity(rows.len() * d);
                for &r in rows {
                    out.extend_from_slice(&values[r * d..(r + 1) * d]);
                }
                Column::Dense {
                    values: out,
                    dim: d,
                }
            }
        }
    }

    /// Appends all rows of `other` (same kind) to `self`.
    pub fn extend(&mut self, other: &Column) -> Result<(), String> {
        match (self, other) {
            (Column::Ids(a), Column::Ids(b)) => a.extend_from_slice(b),
            (
                Column::Ragged { values, offsets },
                Column::Ragged {
                    values: v2,
                    offsets: o2,
                },
            ) => {
                let base = *offsets.last().unwrap_or(&0);
                values.extend_from_slice(v2);
                offsets.extend(o2.iter().skip(1).map(|o| o + base));
            }
            (
                Column::Dense { values, dim },
                Column::Dense {
                    values: v2,
                    dim: d2,
                },
            ) if dim == d2 => values.extend_from_slice(v2),
            _ => return Err("cannot append columns of different kinds".into()),
        }
        Ok(())
    }
}

/// A ragged column laid out as a dense `[len, max_len]` matrix, oldest first, padded at the end.
#[derive(Debug, Clone, PartialEq)]
pub struct Padded {
    /// `len * max_len` IDs; padding positions hold 0.
    pub ids: Vec<u32>,
    /// `len * max_len` flags; 1.0 where a real value sits, 0.0 at padding.
    pub mask: Vec<f32>,
    /// Number of real values per sample (at most `max_len`).
    pub lengths: Vec<u32>,
    /// Columns of the matrix.
    pub max_len: usize,
}

/// A named boolean mask over the samples, used to report metrics on a slice (e.g. cold users).
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// Name of the slice, e.g. `cold_users`.
    pub name: String,
    /// One flag per sample.
    pub mask: Vec<bool>,
}

/// Columnar samples: one column per schema field, one label vector per task.
///
/// A label of `NaN` means "this sample carries no label for this task" (used when several
/// tasks have their own sample streams); losses and metrics skip such entries.
#[derive(Debug, Clone)]
pub struct Batch {
    /// Meaning of the columns and labels.
    pub schema: Arc<Schema>,
    /// One column per field of the schema, in the same order.
    pub columns: Vec<Column>,
    /// One label vector per task of the schema, in the same order.
    pub labels: Vec<Vec<f32>>,
    /// Optional per-sample loss weights (1.0 when absent).
    pub weights: Option<Vec<f32>>,
    /// Named slices for evaluation; not model inputs.
    pub slices: Vec<Slice>,
}

impl Batch {
    /// An empty batch for `schema`.
    pub fn empty(schema: Arc<Schema>) -> Batch {
        let columns = schema
            .fields
            .iter()
            .map(|f| Column::empty_for(&f.kind))
            .collect();
        let labels = vec![Vec::new(); schema.tasks.len()];
        Batch {
            schema,
            columns,
            labels,
            weights: None,
            slices: Vec::new(),
        }
    }

    /// Number of samples.
    pub fn len(&self) -> usize {
        self.columns
            .first()
            .map(Column::len)
            .or_else(|| self.labels.first().map(Vec::len))
            .unwrap_or(0)
    }

    /// True when there is no sample.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The column of the field called `name`.
    pub fn column(&self, name: &str) -> Option<&Column> {
        self.schema.field_index(name).map(|i| &self.columns[i])
    }

    /// The IDs of the categorical field called `name`.
    pub fn ids(&self, name: &str) -> Option<&[u32]> {
        self.column(name).and_then(Column::ids)
    }

    /// The labels of the task called `name`.
    pub fn label(&self, name: &str) -> Option<&[f32]> {
        self.schema
            .task_index(name)
            .map(|i| self.labels[i].as_slice())
    }

    /// The IDs of the user field, if the schema names one.
    pub fn users(&self) -> Option<&[u32]> {
        self.schema.user_field.as_deref().and_then(|n| self.ids(n))
    }

    /// The scenario of every sample (all 0 when the schema has no scenario field).
    pub fn scenarios(&self) -> Vec<u32> {
        match self
            .schema
            .scenario_field
            .as_deref()
            .and_then(|n| self.ids(n))
        {
            Some(s) => s.to_vec(),
            None => vec![0; self.len()],
        }
    }

    /// The slice called `name`.
    pub fn slice(&self, name: &str) -> Option<&[bool]> {
        self.slices
            .iter()
            .find(|s| s.name == name)
            .map(|s| s.mask.as_slice())
    }

    /// Copies the samples `rows` (in that order) into a new batch.
    pub fn gather(&self, rows: &[usize]) -> Batch {
        Batch {
            schema: self.schema.clone(),
            columns: self.columns.iter().map(|c| c.gather(rows)).collect(),
            labels: self
                .labels
                .iter()
                .map(|l| rows.iter().map(|&r| l[r]).collect())
                .collect(),
            weights: self
                .weights
                .as_ref()
                .map(|w| rows.iter().map(|&r| w[r]).collect()),
            slices: self
                .slices
                .iter()
                .map(|s| Slice {
                    name: s.name.clone(),
                    mask: rows.iter().map(|&r| s.mask[r]).collect(),
                })
                .collect(),
        }
    }

    /// The samples `start..end` as a new batch.
    pub fn range(&self, start: usize, end: usize) -> Batch {
        let rows: Vec<usize> = (start..end.min(self.len())).collect();
        self.gather(&rows)
    }

    /// Lays the ragged field `name` out as a padded matrix of width `max_len` (or the longest
    /// row when `None`). Longer rows keep their last (most recent) `max_len` values.
    pub fn padded(&self, name: &str, max_len: Option<usize>) -> Option<Padded> {
        let Column::Ragged { values, offsets } = self.column(name)? else {
            return None;
        };
        let n = offsets.len() - 1;
        let longest = (0..n)
            .map(|i| (offsets[i + 1] - offsets[i]) as usize)
            .max()
            .unwrap_or(0);
        let t = max_len.unwrap_or(longest).max(1);
        let mut ids = vec![0u32; n * t];
        let mut mask = vec![0f32; n * t];
        let mut lengths = Vec::with_capacity(n);
        for i in 0..n {
            let row = &values[offsets[i] as usize..offsets[i + 1] as usize];
            let row = &row[row.len().saturating_sub(t)..];
            ids[i * t..i * t + row.len()].copy_from_slice(row);
            mask[i * t..i * t + row.len()].fill(1.0);
            lengths.push(row.len() as u32);
        }
        Some(Padded {
            ids,
            mask,
            lengths,
            max_len: t,
        })
    }

    /// Checks that every column and label vector has one entry per sample, that columns match
    /// their field kinds, and that IDs are inside their vocabularies.
    pub fn validate(&self) -> Result<(), String> {
        let n = self.len();
        if self.columns.len() != self.schema.fields.len() {
            return Err(format!(
                "batch has {} columns for {} fields",
                self.columns.len(),
                self.schema.fields.len()
            ));
        }
        for (f, c) in self.schema.fields.iter().zip(&self.columns) {
            let ok_kind = matches!(
                (&f.kind, c),
                (FieldKind::Categorical, Column::Ids(_))
                    | (
                        FieldKind::MultiHot | FieldKind::Sequence,
                        Column::Ragged { .. }
                    )
            ) || matches!((&f.kind, c), (FieldKind::Dense { dim }, Column::Dense { dim: d, .. }) if dim == d);
            if !ok_kind {
                return Err(format!(
                    "column of field `{}` does not match its kind",
                    f.name
                ));
            }
            if c.len() != n {
                return Err(format!(
                    "field `{}` has {} rows, expected {n}",
                    f.name,
                    c.len()
                ));
            }
            let bad = match c {
                Column::Ids(v) => v.iter().find(|&&x| x as usize >= f.vocab),
                Column::Ragged { values, offsets } => {
                    if offsets.first() != Some(&0)
                        || offsets.windows(2).any(|w| w[0] > w[1])
                        || *offsets.last().unwrap() as usize != values.len()
                    {
                        return Err(format!("field `{}` has malformed offsets", f.name));
                    }
                    values.iter().find(|&&x| x as usize >= f.vocab)
                }
                Column::Dense { values, dim } => {
                    if *dim == 0 || !values.len().is_multiple_of(*dim) {
                        return Err(format!(
                            "dense field `{}` holds {} values, not a whole number of rows of {dim}",
                            f.name,
                            values.len()
                        ));
                    }
                    None
                }
            };
            if let Some(b) = bad {
                return Err(format!(
                    "field `{}` holds ID {b}, outside its vocabulary of {}",
                    f.name, f.vocab
                ));
            }
        }
        // Sequence fields of one group describe the same behaviours: identical offsets.
        let mut groups: Vec<(&str, &str, &[u32])> = Vec::new();
        for (f, c) in self.schema.fields.iter().zip(&self.columns) {
            if let (FieldKind::Sequence, Some(g), Column::Ragged { offsets, .. }) =
                (&f.kind, &f.group, c)
            {
                match groups.iter().find(|(name, _, _)| name == g) {
                    Some((_, first, o)) if *o != offsets.as_slice() => {
                        return Err(format!(
                            "sequence fields `{first}` and `{}` of group `{g}` are not aligned \
                             (their rows hold different numbers of behaviours)",
                            f.name
                        ));
                    }
                    Some(_) => {}
                    None => groups.push((g, &f.name, offsets)),
                }
            }
        }
        if self.labels.len() != self.schema.tasks.len() {
            return Err(format!(
                "batch has {} label vectors for {} tasks",
                self.labels.len(),
                self.schema.tasks.len()
            ));
        }
        for (t, l) in self.schema.tasks.iter().zip(&self.labels) {
            if l.len() != n {
                return Err(format!(
                    "task `{}` has {} labels, expected {n}",
                    t.name,
                    l.len()
                ));
            }
        }
        if let Some(w) = &self.weights
            && w.len() != n
        {
            return Err(format!("{} weights for {n} samples", w.len()));
        }
        for s in &self.slices {
            if s.mask.len() != n {
                return Err(format!(
                    "slice `{}` has {} flags for {n} samples",
                    s.name,
                    s.mask.len()
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::schema::{FieldSpec, TaskKind, TaskSpec};

    fn toy() -> Batch {
        let schema = Arc::new(Schema {
            fields: vec![
                FieldSpec::categorical("user_id", 4),
                FieldSpec::multi_hot("genres", 5),
                FieldSpec::dense("x", 2),
            ],
            tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
            user_field: Some("user_id".into()),
            num_scenarios: 1,
            ..Default::default()
        });
        Batch {
            schema,
            columns: vec![
                Column::Ids(vec![1, 2, 3]),
                Column::Ragged {
                    values: vec![1, 2, 3, 4],
                    offsets: vec![0, 2, 2, 4],
                },
                Column::Dense {
                    values: vec![0.0, 0.1, 1.0, 1.1, 2.0, 2.1],
                    dim: 2,
                },
            ],
            labels: vec![vec![1.0, 0.0, 1.0]],
            weights: None,
            slices: vec![Slice {
                name: "cold".into(),
                mask: vec![true, false, false],
            }],
        }
    }

    #[test]
    fn gather_keeps_rows_aligned() {
        let b = toy();
        b.validate().unwrap();
        let g = b.gather(&[2, 0]);
        g.validate().unwrap();
        assert_eq!(g.ids("user_id").unwrap(), &[3, 1]);
        assert_eq!(g.column("genres").unwrap().ragged_row(0).unwrap(), &[3, 4]);
        assert_eq!(g.column("genres").unwrap().ragged_row(1).unwrap(), &[1, 2]);
        assert_eq!(
            g.column("x").unwrap(),
            &Column::Dense {
                values: vec![2.0, 2.1, 0.0, 0.1],
                dim: 2
            }
        );
        assert_eq!(g.label("click").unwrap(), &[1.0, 1.0]);
        assert_eq!(g.slice("cold").unwrap(), &[false, true]);
    }

    #[test]
    fn padded_keeps_most_recent() {
        let b = toy();
        let p = b.padded("genres", Some(1)).unwrap();
        assert_eq!(p.ids, vec![2, 0, 4]);
        assert_eq!(p.mask, vec![1.0, 0.0, 1.0]);
        assert_eq!(p.lengths, vec![1, 0, 1]);
        let p = b.padded("genres", None).unwrap();
        assert_eq!(p.max_len, 2);
        assert_eq!(p.ids, vec![1, 2, 0, 0, 3, 4]);
    }

    #[test]
    fn validate_catches_out_of_vocab_and_length() {
        let mut b = toy();
        b.columns[0] = Column::Ids(vec![1, 2, 9]);
        assert!(b.validate().unwrap_err().contains("outside"));
        let mut b = toy();
        b.labels[0].pop();
        assert!(b.validate().unwrap_err().contains("labels"));
        // Seven values are three rows of two and half a row: refused, not floored to three.
        let mut b = toy();
        b.validate().unwrap();
        if let Column::Dense { values, .. } = &mut b.columns[2] {
            values.push(3.0);
        }
        assert!(
            b.validate().unwrap_err().contains("whole number"),
            "{:?}",
            b.validate()
        );
    }

    #[test]
    fn validate_refuses_a_sequence_group_whose_fields_are_not_aligned() {
        let schema = Arc::new(Schema {
            fields: vec![
                FieldSpec::sequence("hist_item", 5, "hist"),
                FieldSpec::sequence("hist_behaviour", 5, "hist"),
            ],
            tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
            num_scenarios: 1,
            ..Default::default()
        });
        let ragged = |offsets: Vec<u32>| Column::Ragged {
            values: vec![1; *offsets.last().unwrap() as usize],
            offsets,
        };
        let mut b = Batch {
            schema,
            columns: vec![ragged(vec![0, 2, 3]), ragged(vec![0, 2, 3])],
            labels: vec![vec![1.0, 0.0]],
            weights: None,
            slices: Vec::new(),
        };
        b.validate().unwrap();
        b.columns[1] = ragged(vec![0, 1, 3]);
        let e = b.validate().unwrap_err();
        assert!(
            e.contains("not aligned") && e.contains("hist_behaviour"),
            "{e}"
        );
    }

    #[test]
    fn extend_appends_ragged_with_shifted_offsets() {
        let b = toy();
        let mut c = b.columns[1].clone();
        c.extend(&b.columns[1]).unwrap();
        assert_eq!(c.len(), 6);
        assert_eq!(c.ragged_row(5).unwrap(), &[3, 4]);
    }
}
