//! Measures a DUPN training step, prediction and the gated LSTM on synthetic data:
//! `cargo run -p user-dupn --example step_time -- [batch] [variant] [hidden]`.
use candle_core::Device;
use rand::SeedableRng;
use rec_data::BatchIter;
use rec_data::synth::{DupnOptions, SynthConfig, SynthLog};
use rec_nn::embedding::{DefaultTableFactory, TableOptions, TablesConfig};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_nn::{Ctx, Model};
use std::time::Instant;
use user_dupn::{Dupn, DupnConfig};

fn main() {
    rec_nn::sys::tune_malloc();
    let args: Vec<String> = std::env::args().collect();
    let bs: usize = args.get(1).map(|s| s.parse().unwrap()).unwrap_or(1024);
    let variant = args.get(2).cloned().unwrap_or("all".into());
    let hidden: usize = args.get(3).map(|s| s.parse().unwrap()).unwrap_or(64);
    let t0 = Instant::now();
    let log = SynthLog::generate(&SynthConfig::small()).unwrap();
    let s = log.dupn_split(&DupnOptions {
        max_history: 50,
        ctr_negative_rate: 1.0,
        ..Default::default()
    });
    println!(
        "data {:.2}s ctr {} l2r {} ppp {} fifp {} spp {}",
        t0.elapsed().as_secs_f64(),
        s.train.ctr.len(),
        s.train.l2r.len(),
        s.train.ppp.len(),
        s.train.fifp.len(),
        s.train.spp.len()
    );
    let joint = s.train.joint();
    let mut schema = (*s.schema).clone();
    schema.tasks.retain(|t| t.name != "spp");
    let b = rec_data::Batch {
        schema: std::sync::Arc::new(schema.clone()),
        columns: joint.columns.clone(),
        labels: joint.labels[..4].to_vec(),
        weights: joint.weights.clone(),
        slices: vec![],
    };
    let tc = TablesConfig {
        options: TableOptions::new(
            rec_nn::init::Init::Normal {
                mean: 0.0,
                std: 0.05,
            },
            OptimizerConfig::adagrad(0.05),
        ),
        ..Default::default()
    };
    let mut f = DefaultTableFactory::new(tc, 1, &Device::Cpu);
    let mut factory = |field: &rec_data::FieldSpec, dim: usize| f.build(field, dim);
    let cfg = DupnConfig {
        hidden,
        ..DupnConfig::default().variant(&variant).unwrap()
    };
    let mut m = Dupn::new(&schema, &cfg, &mut factory, &Device::Cpu, 1).unwrap();
    println!("params {}", m.num_params());
    let mut opt = DenseOptimizer::new(OptimizerConfig::adagrad(0.05), m.dense_vars()).unwrap();
    let mut ctx = Ctx::new(true, 0, rand_chacha::ChaCha8Rng::seed_from_u64(1));
    let mut times = vec![];
    for (k, batch) in BatchIter::new(&b, bs, 1, 0, true).enumerate() {
        let t = Instant::now();
        let l = rec_nn::train_step(&mut m, &mut opt, &batch, &mut ctx).unwrap();
        times.push(t.elapsed().as_secs_f64());
        if k % 5 == 0 {
            println!("step {k} loss {l:.4} {:.3}s", times.last().unwrap());
        }
        if k >= 20 {
            break;
        }
    }
    times.sort_by(|a, b| a.partial_cmp(b).unwrap());
    println!(
        "median step {:.3}s  -> epoch of {} samples ~ {:.0}s",
        times[times.len() / 2],
        b.len(),
        times[times.len() / 2] * (b.len() / bs) as f64
    );
    let t = Instant::now();
    let test = s.test.ctr.range(0, 4096);
    let test = rec_data::Batch {
        schema: std::sync::Arc::new(schema.clone()),
        columns: test.columns,
        labels: test.labels[..4].to_vec(),
        weights: None,
        slices: vec![],
    };
    let _ = rec_nn::predict(&mut m, &test).unwrap();
    println!("predict 4096: {:.3}s", t.elapsed().as_secs_f64());
    let one = test.range(0, 1024);
    for _ in 0..3 {
        let t = Instant::now();
        let e = m.encode(&one, false).unwrap();
        let te = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _ = m.forward(&one, &mut Ctx::eval()).unwrap();
        println!(
            "encode {:.3}s (T={}) forward {:.3}s",
            te,
            e.steps,
            t.elapsed().as_secs_f64()
        );
    }
    // Pure LSTM timing
    let e = candle_core::Tensor::randn(0f32, 1.0, (1024, 50, 80), &Device::Cpu).unwrap();
    let p = candle_core::Tensor::randn(0f32, 1.0, (1024, 50, 40), &Device::Cpu).unwrap();
    let mask =
        candle_core::Tensor::ones((1024, 50), candle_core::DType::F32, &Device::Cpu).unwrap();
    let mut vs = rec_nn::init::VarStore::new(1, &Device::Cpu);
    let l = user_dupn::PropertyGatedLstm::new(&mut vs, "l", 80, 40, hidden).unwrap();
    for _ in 0..3 {
        let t = Instant::now();
        let o = l.forward(&e, Some(&p), &mask).unwrap();
        let tf = t.elapsed().as_secs_f64();
        let t = Instant::now();
        let _g = o.outputs.sum_all().unwrap().backward().unwrap();
        println!("lstm fwd {:.3}s bwd {:.3}s", tf, t.elapsed().as_secs_f64());
    }
}
