//! Training cost per sample of SAML against Shared with 3 scenarios: one full training step
//! (forward, loss, backward, dense Adam, row-wise Adam on the tables) on a batch of 1024
//! samples, at the widths of `cargo xtask experiment saml` (d = 16, hidden [128, 64], a [32]
//! attention MLP), without and with a behaviour sequence of 10 items.
//!
//! Variants: `shared` (one network, scenario id as a feature), `saml` (every part on),
//! `saml_no_mutual` (the mutual unit off: the cost of the M batched branches alone). The issue's
//! target: SAML's step at most 2.5x Shared's with 3 scenarios.
//!
//! Run: `cargo bench -p rec-benches --bench saml`.

use std::sync::Arc;
use std::time::Duration;

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::{Batch, Column, FieldSpec, Schema, TaskKind, TaskSpec};
use rec_nn::embedding::{DefaultTableFactory, TableOptions, TablesConfig};
use rec_nn::layers::MlpConfig;
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_nn::{Ctx, Model};
use scenario_saml::{DnnConfig, Saml, SamlConfig, Shared};

const BATCH: usize = 1024;
const SCENARIOS: usize = 3;
const USERS: usize = 5000;
const ITEMS: usize = 2000;

/// A seeded random batch: user, item, two side fields, the scenario, and with `history > 0`
/// a behaviour sequence of `history` items (sharing the item table).
fn batch(history: usize, seed: u64) -> Batch {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut fields = vec![
        FieldSpec::categorical("user_id", USERS),
        FieldSpec::categorical("item_id", ITEMS),
        FieldSpec::categorical("genre", 20),
        FieldSpec::categorical("occupation", 21),
        FieldSpec::categorical("country", SCENARIOS),
    ];
    if history > 0 {
        fields.push(FieldSpec::sequence("hist_item_id", ITEMS, "hist").sharing("item_id"));
    }
    let schema = Arc::new(Schema {
        fields,
        tasks: vec![TaskSpec::new("click", TaskKind::Binary)],
        user_field: Some("user_id".into()),
        item_field: Some("item_id".into()),
        scenario_field: Some("country".into()),
        num_scenarios: SCENARIOS,
    });
    let mut ids =
        |n: usize| -> Vec<u32> { (0..BATCH).map(|_| rng.random_range(0..n as u32)).collect() };
    let mut columns = vec![
        Column::Ids(ids(USERS)),
        Column::Ids(ids(ITEMS)),
        Column::Ids(ids(20)),
        Column::Ids(ids(21)),
        Column::Ids(ids(SCENARIOS)),
    ];
    if history > 0 {
        let values = ids(ITEMS)
            .into_iter()
            .chain((1..history).flat_map(|_| ids(ITEMS)))
            .collect::<Vec<_>>();
        let offsets = (0..=BATCH).map(|i| (i * history) as u32).collect();
        columns.push(Column::Ragged { values, offsets });
    }
    let labels = (0..BATCH)
        .map(|_| if rng.random::<bool>() { 1.0 } else { 0.0 })
        .collect();
    let b = Batch {
        schema,
        columns,
        labels: vec![labels],
        weights: None,
        slices: vec![],
    };
    b.validate().expect("a valid batch");
    b
}

fn build(name: &str, schema: &Schema) -> Box<dyn Model> {
    let d = Device::Cpu;
    let tables = TablesConfig {
        options: TableOptions {
            optimizer: OptimizerConfig::adam(1e-3),
            ..Default::default()
        },
        ..TablesConfig::default()
    };
    let mut f = DefaultTableFactory::new(tables, 1, &d);
    let mut factory = |spec: &FieldSpec, dim: usize| f.build(spec, dim);
    let saml = |mutual: bool| SamlConfig {
        dim: 16,
        hidden: vec![128, 64],
        mutual,
        ..SamlConfig::default()
    };
    match name {
        "shared" => Box::new(
            Shared::new(
                schema,
                &DnnConfig {
                    dim: 16,
                    mlp: MlpConfig::new(&[128, 64]),
                    ..DnnConfig::default()
                },
                &mut factory,
                &d,
                1,
            )
            .expect("shared"),
        ),
        "saml" => Box::new(Saml::new(schema, &saml(true), &mut factory, &d, 1).expect("saml")),
        _ => Box::new(Saml::new(schema, &saml(false), &mut factory, &d, 1).expect("saml")),
    }
}

fn step(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("multi_scenario_step");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(5));
    for history in [0usize, 10] {
        let batches: Vec<Batch> = (0..8).map(|s| batch(history, s)).collect();
        for name in ["shared", "saml", "saml_no_mutual"] {
            let mut model = build(name, &batches[0].schema);
            let mut opt =
                DenseOptimizer::new(OptimizerConfig::adam(1e-3), model.dense_vars()).expect("opt");
            let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(1));
            let mut k = 0;
            g.bench_function(BenchmarkId::new(name, format!("history_{history}")), |b| {
                b.iter(|| {
                    k = (k + 1) % batches.len();
                    rec_nn::train_step(model.as_mut(), &mut opt, &batches[k], &mut ctx)
                        .expect("step")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, step);
criterion_main!(benches);
