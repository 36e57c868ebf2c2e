//! Cost per sample of SAML against Shared with 3 and with 8 scenarios: one full training step
//! (forward, loss, backward, dense Adam, row-wise Adam on the tables) on a batch of 1024
//! samples, at the widths of `cargo xtask experiment saml` (d = 16, hidden [128, 64], SAML's
//! branches [32, 16], a [32] attention MLP), without and with a behaviour sequence of 10
//! items; and an inference batch of 1024 (forward only, behaviour sequence of 10 items). The
//! batches are `rec_benches::workloads::saml_batch`, the data `cargo xtask bench --compare
//! --model saml` gives the PyTorch reference.
//!
//! Variants: `shared` (one network, scenario id as a feature), `saml` (every part on, the
//! experiment's configuration), `saml_no_mutual` (the mutual unit off: the cost of the M
//! batched branches alone), `saml_full_branches` (every part on, branches as wide as the
//! auxiliary network, SAML's default `branch_hidden`). The target: SAML's step at most
//! 2.5x Shared's with 3 scenarios.
//!
//! Run: `cargo xtask bench saml` (or `cargo bench -p rec-benches --bench saml`).

use std::time::Duration;

use candle_core::Device;
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_benches::workloads::saml_batch;
use rec_data::{Batch, FieldSpec, Schema};
use rec_nn::embedding::{DefaultTableFactory, TableOptions, TablesConfig};
use rec_nn::layers::MlpConfig;
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_nn::{Ctx, Model};
use scenario_saml::{DnnConfig, Saml, SamlConfig, Shared};

const BATCH: usize = 1024;
/// SAML's branch widths in `cargo xtask experiment saml` (its auxiliary network has [128, 64];
/// keep equal to `BRANCH_HIDDEN` in xtask/src/experiment/saml.rs).
const BRANCH: Option<[usize; 2]> = Some([32, 16]);

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
    let saml = |mutual: bool, branch: Option<[usize; 2]>| SamlConfig {
        dim: 16,
        hidden: vec![128, 64],
        branch_hidden: branch.map(|b| b.to_vec()),
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
        "saml" => {
            Box::new(Saml::new(schema, &saml(true, BRANCH), &mut factory, &d, 1).expect("saml"))
        }
        "saml_no_mutual" => {
            Box::new(Saml::new(schema, &saml(false, BRANCH), &mut factory, &d, 1).expect("saml"))
        }
        "saml_full_branches" => {
            Box::new(Saml::new(schema, &saml(true, None), &mut factory, &d, 1).expect("saml"))
        }
        other => unreachable!("no variant {other}"),
    }
}

fn step(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("multi_scenario_step");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(2));
    g.measurement_time(Duration::from_secs(5));
    for scenarios in [3usize, 8] {
        for history in [0usize, 10] {
            let batches: Vec<Batch> = (0..8)
                .map(|s| saml_batch(scenarios, history, BATCH, s))
                .collect();
            for name in ["shared", "saml", "saml_no_mutual", "saml_full_branches"] {
                let mut model = build(name, &batches[0].schema);
                let mut opt = DenseOptimizer::new(OptimizerConfig::adam(1e-3), model.dense_vars())
                    .expect("opt");
                let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(1));
                let mut k = 0;
                let id = BenchmarkId::new(name, format!("{scenarios}scen_history_{history}"));
                g.bench_function(id, |b| {
                    b.iter(|| {
                        k = (k + 1) % batches.len();
                        rec_nn::train_step(model.as_mut(), &mut opt, &batches[k], &mut ctx)
                            .expect("step")
                    })
                });
            }
        }
    }
    g.finish();
}

fn infer(c: &mut Criterion) {
    rec_nn::sys::tune_malloc();
    let mut g = c.benchmark_group("multi_scenario_infer");
    g.throughput(Throughput::Elements(BATCH as u64));
    g.sample_size(20);
    g.warm_up_time(Duration::from_secs(1));
    g.measurement_time(Duration::from_secs(3));
    for scenarios in [3usize, 8] {
        let batches: Vec<Batch> = (0..8)
            .map(|s| saml_batch(scenarios, 10, BATCH, s))
            .collect();
        for name in ["shared", "saml"] {
            let mut model = build(name, &batches[0].schema);
            let mut k = 0;
            let id = BenchmarkId::new(name, format!("{scenarios}scen_history_10"));
            g.bench_function(id, |b| {
                b.iter(|| {
                    k = (k + 1) % batches.len();
                    rec_nn::model::predict(model.as_mut(), &batches[k]).expect("predict")
                })
            });
        }
    }
    g.finish();
}

criterion_group!(benches, step, infer);
criterion_main!(benches);
