//! Seeded synthetic batches shared by the criterion benchmarks and `cargo xtask bench
//! --compare` (which exports them for the PyTorch references), so that every figure of a model
//! is measured on the same inputs.
//!
//! - [`saml_batch`]: the multi-scenario workload of SAML (user, item, two side fields, the
//!   scenario field, and optionally a behaviour sequence of a fixed length sharing the item
//!   table), with any number of scenarios.
//! - [`dupn_batch`]: the behaviour-sequence workload of DUPN, shaped like the synthetic P-ECOM
//!   data (`rec_data::synth`'s DUPN schema, trimmed to the fields DUPN reads): profile, query,
//!   target item with four attributes, and a history of a fixed length whose every behaviour
//!   has five item fields and five property fields; tasks `ctr` (binary) and `ppp`
//!   (multi-class), every row labelled for both.
//!
//! IDs and labels are uniform random: the costs measured here do not depend on what the data
//! mean. Every history has exactly `history` behaviours (no padding).

use std::sync::Arc;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};

/// Users of the SAML workload.
pub const SAML_USERS: usize = 5000;
/// Items of the SAML workload.
pub const SAML_ITEMS: usize = 2000;

/// Schema of [`saml_batch`]: `user_id`, `item_id`, `genre`, `occupation`, `country` (the
/// scenario field, `scenarios` values) and, with `history > 0`, `hist_item_id` (a sequence
/// sharing `item_id`); one binary task `click`.
pub fn saml_schema(scenarios: usize, history: usize) -> Schema {
    let mut fields = vec![
        FieldSpec::categorical("user_id", SAML_USERS),
        FieldSpec::categorical("item_id", SAML_ITEMS),
        FieldSpec::categorical("genre", 20),
        FieldSpec::categorical("occupation", 21),
        FieldSpec::categorical("country", scenarios),
    ];
    if history > 0 {
        fields.push(FieldSpec::sequence("hist_item_id", SAML_ITEMS, "hist").sharing("item_id"));
    }
    Schema {
        fields,
        tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: Some("country".into()),
        num_scenarios: scenarios,
    }
}

/// `rows` seeded random samples of [`saml_schema`]`(scenarios, history)`.
pub fn saml_batch(scenarios: usize, history: usize, rows: usize, seed: u64) -> Batch {
    let schema = Arc::new(saml_schema(scenarios, history));
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut columns: Vec<Column> = schema
        .fields
        .iter()
        .filter(|f| f.group.is_none())
        .map(|f| Column::Ids(ids(&mut rng, rows, 0, f.vocab)))
        .collect();
    if history > 0 {
        columns.push(Column::Ragged {
            values: ids(&mut rng, rows * history, 0, SAML_ITEMS),
            offsets: (0..=rows).map(|i| (i * history) as u32).collect(),
        });
    }
    let labels = (0..rows)
        .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
        .collect();
    let b = Batch {
        schema,
        columns,
        labels: vec![labels],
        weights: None,
        slices: vec![],
    };
    b.validate().expect("a valid SAML batch");
    b
}

/// Classes of the DUPN workload's `ppp` task.
pub const DUPN_PPP_CLASSES: usize = 6;

/// The item fields of a DUPN target and, with `hist_` in front, of a behaviour.
pub const DUPN_ITEM_FIELDS: [&str; 5] = ["item_id", "brand", "shop", "category", "tags"];

/// The embedding tables of the DUPN workloads: the default initialisation (normal, std 0.05)
/// and row-wise AdaGrad at the learning rate DUPN trains with (0.05), as in the paper.
pub fn dupn_tables() -> rec_nn::embedding::TablesConfig {
    rec_nn::embedding::TablesConfig {
        options: rec_nn::embedding::TableOptions {
            optimizer: rec_nn::optim::OptimizerConfig::adagrad(0.05),
            ..Default::default()
        },
        ..Default::default()
    }
}

/// Schema of [`dupn_batch`]. Profile `user_id`, `country`, `age`, `gender`; `query` (multi-hot
/// terms); the target item `item_id`, `brand`, `shop`, `category`, `tags` (multi-hot); the
/// history group `hist`: `hist_item_id`, `hist_brand`, `hist_shop`, `hist_category`,
/// `hist_tag` (sharing the target fields' tables), `hist_behaviour`, `hist_channel`,
/// `hist_gap`, `hist_weekend`, `hist_hour` (the properties); tasks `ctr` (binary) and `ppp`
/// ([`DUPN_PPP_CLASSES`] classes).
pub fn dupn_schema() -> Schema {
    let seq = |name: &str, vocab: usize, share: Option<&str>| {
        let f = FieldSpec::sequence(name, vocab, "hist");
        match share {
            Some(s) => f.sharing(s),
            None => f,
        }
    };
    let (users, items, brands, shops, categories, tags, terms) =
        (50_000, 20_000, 2_000, 2_000, 200, 500, 2_000);
    Schema {
        fields: vec![
            FieldSpec::categorical("user_id", users),
            FieldSpec::categorical("country", 3),
            FieldSpec::categorical("age", 7),
            FieldSpec::categorical("gender", 3),
            FieldSpec::multi_hot("query", terms),
            FieldSpec::categorical("item_id", items),
            FieldSpec::categorical("brand", brands),
            FieldSpec::categorical("shop", shops),
            FieldSpec::categorical("category", categories),
            FieldSpec::multi_hot("tags", tags),
            seq("hist_item_id", items, Some("item_id")),
            seq("hist_brand", brands, Some("brand")),
            seq("hist_shop", shops, Some("shop")),
            seq("hist_category", categories, Some("category")),
            seq("hist_tag", tags, Some("tags")),
            seq("hist_behaviour", 5, None),
            seq("hist_channel", 4, None),
            seq("hist_gap", 10, None),
            seq("hist_weekend", 3, None),
            seq("hist_hour", 7, None),
        ],
        tasks: vec![
            TaskSpec::new("ctr", TaskKind::Binary),
            TaskSpec::new(
                "ppp",
                TaskKind::Multiclass {
                    classes: DUPN_PPP_CLASSES,
                },
            ),
        ],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: None,
        num_scenarios: 1,
    }
}

/// `rows` seeded random samples of [`dupn_schema`], each with exactly `history` behaviours.
/// IDs start at 1 (0 is the "unknown" ID of the real data); a query has 1 to 4 terms, a
/// target 1 to 3 tags.
pub fn dupn_batch(history: usize, rows: usize, seed: u64) -> Batch {
    let schema = Arc::new(dupn_schema());
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut columns = Vec::with_capacity(schema.fields.len());
    for f in &schema.fields {
        columns.push(match f.kind {
            rec_data::FieldKind::MultiHot => {
                let most = if f.name == "query" { 4 } else { 3 };
                let mut offsets = vec![0u32];
                let mut values = Vec::new();
                for _ in 0..rows {
                    let k = rng.random_range(1..=most);
                    values.extend(ids(&mut rng, k, 1, f.vocab));
                    offsets.push(values.len() as u32);
                }
                Column::Ragged { values, offsets }
            }
            rec_data::FieldKind::Sequence => Column::Ragged {
                values: ids(&mut rng, rows * history, 1, f.vocab),
                offsets: (0..=rows).map(|i| (i * history) as u32).collect(),
            },
            _ => Column::Ids(ids(&mut rng, rows, 1, f.vocab)),
        });
    }
    let ctr = (0..rows)
        .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
        .collect();
    let ppp = (0..rows)
        .map(|_| rng.random_range(0..DUPN_PPP_CLASSES) as f32)
        .collect();
    let b = Batch {
        schema,
        columns,
        labels: vec![ctr, ppp],
        weights: None,
        slices: vec![],
    };
    b.validate().expect("a valid DUPN batch");
    b
}

/// `n` uniform IDs in `lo..vocab` (`lo..lo + 1` when the vocabulary is smaller).
fn ids(rng: &mut ChaCha8Rng, n: usize, lo: usize, vocab: usize) -> Vec<u32> {
    let hi = vocab.max(lo + 1) as u32;
    (0..n).map(|_| rng.random_range(lo as u32..hi)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_are_valid_seeded_and_full_length() {
        let a = saml_batch(8, 10, 64, 3);
        let again = saml_batch(8, 10, 64, 3);
        assert_eq!((&a.columns, &a.labels), (&again.columns, &again.labels));
        assert_ne!(a.columns, saml_batch(8, 10, 64, 4).columns);
        assert!(a.scenarios().iter().all(|&s| s < 8));
        assert!(a.scenarios().contains(&7));
        let p = a.padded("hist_item_id", None).unwrap();
        assert_eq!(p.max_len, 10);
        assert!(p.mask.iter().all(|&m| m == 1.0));
        let d = dupn_batch(50, 32, 1);
        assert_eq!(d.len(), 32);
        let p = d.padded("hist_gap", None).unwrap();
        assert_eq!(p.max_len, 50);
        assert!(p.ids.iter().all(|&i| (1..10).contains(&i)));
        assert!(d.labels[1].iter().all(|&c| c < DUPN_PPP_CLASSES as f32));
        assert!(
            saml_batch(3, 0, 16, 0)
                .padded("hist_item_id", None)
                .is_none()
        );
    }
}
