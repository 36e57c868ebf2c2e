//! What the columns of a [`Batch`](crate::Batch) mean: fields, tasks and roles.
//!
//! A [`Schema`] is shared (behind an `Arc`) by a whole data set and every batch cut from it, so a
//! model can be built from the schema alone: it knows each field's vocabulary size and kind, and
//! each task's kind, before it sees any data.

use serde::{Deserialize, Serialize};

/// Index 0 of every vocabulary is reserved for IDs that were not seen when the vocabulary was
/// built (out of vocabulary). Known IDs are numbered from 1.
pub const OOV: u32 = 0;

/// What kind of values a field holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum FieldKind {
    /// One categorical ID per sample (user, item, gender, age band, ...).
    Categorical,
    /// A bag of categorical IDs per sample, order irrelevant (genres, tags, query terms).
    MultiHot,
    /// An ordered list of categorical IDs per sample, oldest first (a behaviour sequence).
    /// Sequence fields with the same `group` are aligned: they have identical offsets.
    Sequence,
    /// A fixed-width vector of floats per sample.
    Dense {
        /// Number of floats per sample.
        dim: usize,
    },
}

/// One input field.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldSpec {
    /// Unique name, e.g. `user_id`, `genres`, `hist_item_id`.
    pub name: String,
    /// Kind of values.
    pub kind: FieldKind,
    /// Vocabulary size including the reserved [`OOV`] index 0 (0 for dense fields).
    pub vocab: usize,
    /// For sequence fields: the name of the aligned group (all fields of one behaviour
    /// sequence share it). `None` for other kinds.
    #[serde(default)]
    pub group: Option<String>,
    /// Name of the field whose vocabulary (and so embedding table) this field shares, if any;
    /// e.g. `hist_item_id` shares `item_id`. `None` means it has its own.
    #[serde(default)]
    pub shares_vocab_with: Option<String>,
}

impl FieldSpec {
    /// A categorical field with `vocab` entries (OOV included).
    pub fn categorical(name: impl Into<String>, vocab: usize) -> Self {
        Self::new(name, FieldKind::Categorical, vocab)
    }

    /// A multi-hot field with `vocab` entries (OOV included).
    pub fn multi_hot(name: impl Into<String>, vocab: usize) -> Self {
        Self::new(name, FieldKind::MultiHot, vocab)
    }

    /// A sequence field in the aligned group `group`.
    pub fn sequence(name: impl Into<String>, vocab: usize, group: impl Into<String>) -> Self {
        let mut f = Self::new(name, FieldKind::Sequence, vocab);
        f.group = Some(group.into());
        f
    }

    /// A dense field of `dim` floats per sample.
    pub fn dense(name: impl Into<String>, dim: usize) -> Self {
        Self::new(name, FieldKind::Dense { dim }, 0)
    }

    /// Declares that this field looks its IDs up in the vocabulary of `other`.
    pub fn sharing(mut self, other: impl Into<String>) -> Self {
        self.shares_vocab_with = Some(other.into());
        self
    }

    fn new(name: impl Into<String>, kind: FieldKind, vocab: usize) -> Self {
        Self {
            name: name.into(),
            kind,
            vocab,
            group: None,
            shares_vocab_with: None,
        }
    }
}

/// What a task predicts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskKind {
    /// Labels in {0, 1}; the model outputs a logit; loss is binary cross-entropy.
    Binary,
    /// Real-valued labels; the model outputs the prediction; loss is squared error.
    Regression,
    /// Labels in 0..classes stored as floats; the model outputs `classes` logits.
    Multiclass {
        /// Number of classes.
        classes: usize,
    },
}

/// One prediction task.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskSpec {
    /// Unique name, e.g. `click`, `rating`, `price_level`.
    pub name: String,
    /// Kind of labels.
    pub kind: TaskKind,
}

impl TaskSpec {
    /// A task.
    pub fn new(name: impl Into<String>, kind: TaskKind) -> Self {
        Self {
            name: name.into(),
            kind,
        }
    }
}

/// Fields, tasks and the special roles some fields play.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Schema {
    /// Input fields, in column order.
    pub fields: Vec<FieldSpec>,
    /// Tasks, in label order.
    pub tasks: Vec<TaskSpec>,
    /// Name of the user-ID field (used for GAUC and per-user slices), if any.
    #[serde(default)]
    pub user_field: Option<String>,
    /// Name of the item-ID field, if any.
    #[serde(default)]
    pub item_field: Option<String>,
    /// Name of the scenario field (values in `0..num_scenarios`, no OOV), if any.
    #[serde(default)]
    pub scenario_field: Option<String>,
    /// Number of scenarios (1 when there is no scenario field).
    #[serde(default = "one")]
    pub num_scenarios: usize,
}

fn one() -> usize {
    1
}

impl Schema {
    /// Position of the field called `name`.
    pub fn field_index(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The field called `name`.
    pub fn field(&self, name: &str) -> Option<&FieldSpec> {
        self.fields.iter().find(|f| f.name == name)
    }

    /// Position of the task called `name`.
    pub fn task_index(&self, name: &str) -> Option<usize> {
        self.tasks.iter().position(|t| t.name == name)
    }

    /// Indices of the fields of the given kind.
    pub fn fields_of(&self, pred: impl Fn(&FieldKind) -> bool) -> Vec<usize> {
        self.fields
            .iter()
            .enumerate()
            .filter(|(_, f)| pred(&f.kind))
            .map(|(i, _)| i)
            .collect()
    }

    /// Checks internal consistency: unique names, roles that name existing fields, sequence
    /// fields with a group, shared vocabularies of equal size.
    pub fn validate(&self) -> Result<(), String> {
        let mut names = std::collections::HashSet::new();
        for f in &self.fields {
            if !names.insert(f.name.as_str()) {
                return Err(format!("field `{}` appears twice in the schema", f.name));
            }
            match f.kind {
                FieldKind::Sequence if f.group.is_none() => {
                    return Err(format!("sequence field `{}` has no group", f.name));
                }
                FieldKind::Dense { dim: 0 } => {
                    return Err(format!("dense field `{}` has dimension 0", f.name));
                }
                FieldKind::Dense { .. } => {}
                _ if f.vocab == 0 => {
                    return Err(format!("field `{}` has an empty vocabulary", f.name));
                }
                _ => {}
            }
            if let Some(other) = &f.shares_vocab_with {
                match self.field(other) {
                    None => {
                        return Err(format!(
                            "field `{}` shares the vocabulary of `{other}`, which does not exist",
                            f.name
                        ));
                    }
                    Some(o) if o.vocab != f.vocab => {
                        return Err(format!(
                            "field `{}` (vocab {}) shares the vocabulary of `{other}` (vocab {})",
                            f.name, f.vocab, o.vocab
                        ));
                    }
                    _ => {}
                }
            }
        }
        let mut tasks = std::collections::HashSet::new();
        for t in &self.tasks {
            if !tasks.insert(t.name.as_str()) {
                return Err(format!("task `{}` appears twice in the schema", t.name));
            }
        }
        for (role, name) in [
            ("user_field", &self.user_field),
            ("item_field", &self.item_field),
            ("scenario_field", &self.scenario_field),
        ] {
            if let Some(n) = name
                && self.field(n).is_none()
            {
                return Err(format!("{role} names `{n}`, which is not a field"));
            }
        }
        if self.num_scenarios == 0 {
            return Err("num_scenarios must be at least 1".into());
        }
        // Scenario ids are the field's values, 0..num_scenarios with no OOV slot.
        if let Some(f) = self.scenario_field.as_deref().and_then(|n| self.field(n))
            && f.kind == FieldKind::Categorical
            && f.vocab != self.num_scenarios
        {
            return Err(format!(
                "the scenario field `{}` has a vocabulary of {} but num_scenarios is {}; \
                 they must be equal (scenario ids are 0..num_scenarios)",
                f.name, f.vocab, self.num_scenarios
            ));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validate_rejects_duplicates_and_dangling_roles() {
        let mut s = Schema {
            fields: vec![
                FieldSpec::categorical("user_id", 10),
                FieldSpec::categorical("user_id", 10),
            ],
            num_scenarios: 1,
            ..Default::default()
        };
        assert!(s.validate().unwrap_err().contains("twice"));
        s.fields.pop();
        s.item_field = Some("item_id".into());
        assert!(s.validate().unwrap_err().contains("item_id"));
        s.item_field = None;
        assert!(s.validate().is_ok());
        s.fields
            .push(FieldSpec::sequence("hist", 5, "h").sharing("user_id"));
        assert!(s.validate().unwrap_err().contains("vocab"));
        s.fields.pop();
        // The scenario field's vocabulary is the number of scenarios.
        s.fields.push(FieldSpec::categorical("country", 3));
        s.scenario_field = Some("country".into());
        let e = s.validate().unwrap_err();
        assert!(
            e.contains("`country`") && e.contains("num_scenarios is 1"),
            "{e}"
        );
        s.num_scenarios = 3;
        assert!(s.validate().is_ok());
    }
}
