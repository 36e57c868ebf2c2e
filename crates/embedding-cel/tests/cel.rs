//! Behaviour of the clustered table: gradient averaging (checked against finite differences),
//! GPCA splits on planted gradient groups, exact reassignment, CEL-Lite, personalization,
//! save/load, and an end-to-end NMF run on planted clusters.

use candle_core::{Device, Result, Tensor};
use embedding_cel::exact::{reassign_due, reassign_exact, sample_losses};
use embedding_cel::planted::Planted;
use embedding_cel::{CelConfig, ClusteredEmbedding, Mode, Reassign, adjusted_rand_index};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rec_data::FieldSpec;
use rec_nn::embedding::{DefaultTableFactory, EmbeddingTable, TableOptions, TablesConfig};
use rec_nn::init::{Init, named_rng};
use rec_nn::model::{Ctx, Model, train_step};
use rec_nn::models::{MfConfig, Nmf};
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_nn::{TensorMap, embedding::rows::host_f32};

fn table(vocab: usize, dim: usize, cfg: CelConfig, opt: OptimizerConfig) -> ClusteredEmbedding {
    let opts = TableOptions::new(
        Init::Normal {
            mean: 0.0,
            std: 0.1,
        },
        opt,
    );
    let mut rng = named_rng(1, "t");
    ClusteredEmbedding::new("f", vocab, dim, cfg, &opts, &mut rng, 7, &Device::Cpu).unwrap()
}

fn rows(t: &ClusteredEmbedding) -> Vec<f32> {
    t.cluster_rows().weights()
}

/// One step of `sum ||x_id - target_id||^2` over the batch.
fn quad_step(t: &mut ClusteredEmbedding, ids: &[u32], targets: &[f32], step: u64) -> Result<()> {
    let d = t.dim();
    let x = t.lookup(ids, true)?;
    let y = Tensor::from_slice(targets, (ids.len(), d), &Device::Cpu)?;
    let g = (x - y)?.sqr()?.sum_all()?.backward()?;
    t.apply_gradients(&g)?;
    t.end_step(step)
}

#[test]
fn gradient_averaging_matches_finite_differences() -> Result<()> {
    let cfg = CelConfig {
        init_clusters: 2,
        max_clusters: 2,
        reassign: Reassign::None,
        ..Default::default()
    };
    let mut t = table(6, 3, cfg, OptimizerConfig::sgd(1.0));
    let ids = [0u32, 2, 2, 4, 1, 3, 3];
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let w: Vec<f64> = (0..ids.len() * 3)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let c0 = rows(&t);
    // Host loss as a function of per-entity vectors.
    let loss = |vecs: &[Vec<f64>]| -> f64 {
        ids.iter()
            .enumerate()
            .map(|(k, &e)| {
                (0..3)
                    .map(|j| vecs[e as usize][j].tanh() * w[k * 3 + j])
                    .sum::<f64>()
            })
            .sum()
    };
    let base: Vec<Vec<f64>> = (0..6)
        .map(|e| (0..3).map(|j| c0[(e % 2) * 3 + j] as f64).collect())
        .collect();
    let fd = |perturb: &dyn Fn(&mut Vec<Vec<f64>>, f64)| -> f64 {
        let h = 1e-5;
        let (mut a, mut b) = (base.clone(), base.clone());
        perturb(&mut a, h);
        perturb(&mut b, -h);
        (loss(&a) - loss(&b)) / (2.0 * h)
    };
    let x = t.lookup(&ids, true)?;
    let wt = Tensor::from_vec(
        w.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (7, 3),
        &Device::Cpu,
    )?;
    let l = (x.tanh()? * wt)?.sum_all()?;
    t.apply_gradients(&l.backward()?)?;
    let c1 = rows(&t);
    let mut gaps = [0f64; 3];
    for (c, members) in [(0usize, vec![0u32, 2, 4]), (1, vec![1, 3])] {
        for j in 0..3 {
            // Per-entity gradients by finite differences.
            let g: Vec<f64> = members
                .iter()
                .map(|&e| fd(&|v: &mut Vec<Vec<f64>>, h| v[e as usize][j] += h))
                .collect();
            // The library's update (SGD, lr 1) applies the mean of its members' gradients in
            // the batch (gradient averaging: distinct members, not occurrences).
            let sum = g.iter().sum::<f64>();
            let mean = sum / members.len() as f64;
            let delta = c1[c * 3 + j] as f64 - c0[c * 3 + j] as f64;
            assert!(
                (delta + mean).abs() < 1e-5,
                "cluster {c} dim {j}: {delta} vs {}",
                -mean
            );
            // The data tells the mean apart from the other plausible rules, so the check above
            // can fail: the cluster row's own gradient (the members' sum), the mean over
            // occurrences (entities 2 and 3 appear twice) and the mean over the whole cluster
            // (entity 5 of cluster 1 is not in the batch).
            let occurrences = ids.iter().filter(|&&e| members.contains(&e)).count() as f64;
            let cluster_size = (c..6).step_by(2).count() as f64;
            for (k, other) in [sum, sum / occurrences, sum / cluster_size]
                .into_iter()
                .enumerate()
            {
                gaps[k] = gaps[k].max((other - mean).abs());
            }
        }
    }
    assert!(gaps.iter().all(|&g| g > 1e-2), "{gaps:?}");
    Ok(())
}

/// Entities 1..=20 want +target, 21..=40 want -target.
fn planted_targets(d: usize) -> (Vec<u32>, Vec<f32>, Vec<u32>) {
    let ids: Vec<u32> = (1..=40).collect();
    let targets: Vec<f32> = ids
        .iter()
        .flat_map(|&e| {
            let s = if e <= 20 { 1.0 } else { -1.0 };
            (0..d).map(move |j| s * (1.0 + 0.1 * j as f32) + 0.01 * (e % 3) as f32)
        })
        .collect();
    let truth = ids.iter().map(|&e| u32::from(e > 20)).collect();
    (ids, targets, truth)
}

#[test]
fn a_gpca_split_separates_planted_gradient_groups_and_records_the_tree() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 2,
        split_every: 5,
        reassign: Reassign::None,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    let (ids, targets, truth) = planted_targets(d);
    for s in 1..=60 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    assert_eq!(t.num_clusters(), 2);
    let a: Vec<u32> = ids.iter().map(|&e| t.cluster_of(e)).collect();
    assert_eq!(adjusted_rand_index(&a, &truth), 1.0);
    assert_eq!(t.tree()[1].parent, Some(0));
    assert_eq!(t.tree()[1].born_step, 5);
    // Each cluster row converged to its group's mean target.
    let c = t.cluster_of(1) as usize;
    assert!((t.cluster_rows().row(c)[0] - 1.01).abs() < 0.05);
    // Introspection: sizes, mates, memory (2 rows of 4 floats + 1 byte per entity).
    assert_eq!(t.cluster_sizes().iter().sum::<u32>(), 41);
    assert!(t.cluster_mates(1, 100).iter().all(|&m| m == 0 || m <= 20));
    assert_eq!(t.bytes(), 2 * d * 4 + 41);
    assert_eq!(t.memory().full_bytes, 41 * d * 4);
    Ok(())
}

#[test]
fn approximate_reassignment_fixes_a_misplaced_entity() -> Result<()> {
    let d = 3;
    let cfg = CelConfig {
        init_clusters: 2,
        max_clusters: 2,
        reassign_every: 4,
        keep_prob: 0.0,
        reassign: Reassign::Approx { curvature: 2.0 },
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.02));
    // Entities start in `i % 2`: half of each planted group is misplaced. With curvature 2
    // (the true Hessian of the squared distance), the quadratic model is exact.
    let (ids, targets, truth) = planted_targets(d);
    for s in 1..=200 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    let a: Vec<u32> = ids.iter().map(|&e| t.cluster_of(e)).collect();
    assert_eq!(adjusted_rand_index(&a, &truth), 1.0, "{a:?}");
    assert!(t.moves() > 0);
    Ok(())
}

fn nmf_with_cel(schema: &rec_data::Schema, cfg: CelConfig, dim: usize, seed: u64) -> Nmf {
    let d = Device::Cpu;
    let opts = TableOptions::new(
        Init::Uniform { lo: 0.0, hi: 0.5 },
        OptimizerConfig::adam(0.05),
    );
    let mut full = DefaultTableFactory::new(
        TablesConfig {
            options: opts,
            ..Default::default()
        },
        seed,
        &d,
    );
    let mut factory = |f: &FieldSpec, dim: usize| -> Result<Box<dyn EmbeddingTable>> {
        if f.name == "item_id" && dim > 1 {
            let mut rng = named_rng(seed, &format!("cel/{dim}"));
            Ok(Box::new(ClusteredEmbedding::new(
                &f.name,
                f.vocab,
                dim,
                cfg.clone(),
                &opts,
                &mut rng,
                seed,
                &d,
            )?))
        } else {
            full.build(f, dim)
        }
    };
    let mc = MfConfig {
        dim,
        biases: false,
        global_bias: 0.0,
    };
    Nmf::new(schema, &mc, &mut factory, &d, seed).unwrap()
}

fn cel_table(model: &dyn Model) -> &ClusteredEmbedding {
    model
        .tables()
        .into_iter()
        .find(|(n, _)| n == "emb.item_id")
        .and_then(|(_, t)| t.as_any().downcast_ref::<ClusteredEmbedding>())
        .unwrap()
}

/// Small planted data (30 items in 3 clusters) and a 3-cluster table with exact reassignment
/// every `every` steps.
fn exact_setup(seed: u64, every: u64) -> (embedding_cel::planted::PlantedData, CelConfig) {
    let data = Planted {
        users: 40,
        items: 30,
        clusters: 3,
        rank: 3,
        per_user: 15,
        seed,
        ..Default::default()
    }
    .generate();
    let cfg = CelConfig {
        init_clusters: 3,
        max_clusters: 3,
        reassign_every: every,
        reassign: Reassign::Exact {
            candidates: 0,
            curvature: 1.0,
        },
        ..Default::default()
    };
    (data, cfg)
}

#[test]
fn exact_reassignment_moves_every_entity_to_its_best_cluster() -> Result<()> {
    let (data, cfg) = exact_setup(4, CelConfig::default().reassign_every);
    let split = &data.split;
    let cfg = CelConfig {
        keep_prob: 0.0,
        ..cfg
    };
    let mut model = nmf_with_cel(&split.schema, cfg, 3, 1);
    let mut opt = DenseOptimizer::new(OptimizerConfig::adam(0.01), model.dense_vars())?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    for _ in 0..5 {
        train_step(&mut model, &mut opt, &split.train, &mut ctx)?;
    }
    // Brute force: the loss of every item under every cluster.
    let ids = split.train.ids("item_id").unwrap().to_vec();
    let before = cel_table(&model).assignment();
    let mut cost = vec![[0f64; 3]; 31];
    for c in 0..3u32 {
        let t = model
            .tables_mut()
            .into_iter()
            .find(|(n, _)| n == "emb.item_id")
            .unwrap()
            .1;
        let cel = t
            .as_any_mut()
            .unwrap()
            .downcast_mut::<ClusteredEmbedding>()
            .unwrap();
        cel.set_probe(Some(vec![c; 31]))?;
        let l = sample_losses(&mut model, &split.train)?;
        for (k, &i) in ids.iter().enumerate() {
            cost[i as usize][c as usize] += l[k];
        }
        let t = model
            .tables_mut()
            .into_iter()
            .find(|(n, _)| n == "emb.item_id")
            .unwrap()
            .1;
        let cel = t
            .as_any_mut()
            .unwrap()
            .downcast_mut::<ClusteredEmbedding>()
            .unwrap();
        cel.set_probe(None)?;
    }
    let moved = reassign_exact(&mut model, "emb.item_id", &split.train, 64)?;
    let after = cel_table(&model).assignment();
    let mut changed = 0;
    for i in 1..31usize {
        if !ids.contains(&(i as u32)) {
            assert_eq!(after[i], before[i]);
            continue;
        }
        let best = (0..3)
            .min_by(|&a, &b| cost[i][a].total_cmp(&cost[i][b]))
            .unwrap();
        if after[i] != before[i] {
            changed += 1;
        }
        // Moved to the argmin, unless it was the last member of its cluster.
        if cost[i][best] < cost[i][before[i] as usize] - 1e-9 {
            assert!(
                after[i] as usize == best
                    || cel_table(&model).cluster_sizes()[before[i] as usize] == 1
            );
        } else {
            assert_eq!(after[i], before[i]);
        }
    }
    assert_eq!(changed, moved);
    assert!(moved > 0);
    Ok(())
}

#[test]
fn nmf_with_cel_recovers_planted_item_clusters_end_to_end() -> Result<()> {
    let data = Planted {
        users: 200,
        items: 80,
        clusters: 4,
        rank: 4,
        per_user: 30,
        noise: 0.05,
        seed: 11,
    }
    .generate();
    let split = &data.split;
    let cfg = CelConfig {
        max_clusters: 4,
        split_every: 20,
        reassign_every: 40,
        reassign: Reassign::Exact {
            candidates: 0,
            curvature: 1.0,
        },
        ..Default::default()
    };
    let mut model = nmf_with_cel(&split.schema, cfg, 4, 2);
    let mut opt = DenseOptimizer::new(OptimizerConfig::adam(0.01), model.dense_vars())?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    for epoch in 0..60 {
        for b in rec_data::BatchIter::new(&split.train, 256, 5, epoch, true) {
            train_step(&mut model, &mut opt, &b, &mut ctx)?;
            reassign_due(&mut model, &split.train, 4096)?;
        }
    }
    let t = cel_table(&model);
    assert_eq!(t.num_clusters(), 4);
    let a = t.assignment();
    let sizes = t.cluster_sizes().to_vec();
    let ari = adjusted_rand_index(&a[1..], &data.item_cluster[1..]);
    let preds = rec_nn::predict(&mut model, &split.test)?;
    let y = &split.test.labels[0];
    let mse: f64 = preds[0]
        .iter()
        .zip(y)
        .map(|(p, y)| ((p - y) as f64).powi(2))
        .sum::<f64>()
        / y.len() as f64;
    let var: f64 = {
        let m = y.iter().map(|&v| v as f64).sum::<f64>() / y.len() as f64;
        y.iter().map(|&v| (v as f64 - m).powi(2)).sum::<f64>() / y.len() as f64
    };
    assert!(ari >= 0.9, "ARI {ari}, sizes {sizes:?}");
    assert!(mse < 0.2 * var, "test MSE {mse} vs label variance {var}");
    Ok(())
}

fn saved(t: &dyn EmbeddingTable) -> (TensorMap, serde_json::Value) {
    let mut m = TensorMap::new();
    let meta = t.save("x/", &mut m).unwrap();
    (m, meta)
}

fn same(a: &dyn EmbeddingTable, b: &dyn EmbeddingTable) {
    let (ma, ja) = saved(a);
    let (mb, jb) = saved(b);
    assert_eq!(ja, jb);
    let mut keys: Vec<_> = ma.keys().collect();
    keys.sort();
    let mut kb: Vec<_> = mb.keys().collect();
    kb.sort();
    assert_eq!(keys, kb);
    for k in keys {
        assert_eq!(
            host_f32(&ma[k].to_dtype(candle_core::DType::F32).unwrap()).unwrap(),
            host_f32(&mb[k].to_dtype(candle_core::DType::F32).unwrap()).unwrap(),
            "{k}"
        );
    }
}

#[test]
fn save_and_load_resume_exactly_in_every_mode() -> Result<()> {
    let d = 4;
    // Saved at step 20: before personalization starts (30) and during it (10).
    for (mode, personalize_at) in [
        (Mode::Offline, None),
        (Mode::Lite, None),
        (Mode::Offline, Some(30)),
        (Mode::Offline, Some(10)),
    ] {
        let cfg = CelConfig {
            max_clusters: 4,
            split_every: 3,
            reassign_every: 2,
            keep_prob: 0.5,
            mode,
            personalize_at,
            reservoir: 8,
            ..Default::default()
        };
        let (ids, targets, _) = planted_targets(d);
        let mut a = table(41, d, cfg.clone(), OptimizerConfig::adam(0.05));
        let mut b = table(41, d, cfg.clone(), OptimizerConfig::adam(0.05));
        let mut rng = ChaCha8Rng::seed_from_u64(9);
        let batches: Vec<Vec<usize>> = (0..50)
            .map(|_| (0..16).map(|_| rng.random_range(0..40)).collect())
            .collect();
        let run = |t: &mut ClusteredEmbedding, from: usize, to: usize| {
            for (s, batch) in batches.iter().enumerate().take(to).skip(from) {
                let bi: Vec<u32> = batch.iter().map(|&k| ids[k]).collect();
                let bt: Vec<f32> = batch
                    .iter()
                    .flat_map(|&k| targets[k * d..(k + 1) * d].to_vec())
                    .collect();
                quad_step(t, &bi, &bt, s as u64 + 1).unwrap();
            }
        };
        run(&mut a, 0, 20);
        let (m, meta) = saved(&a);
        b.load("x/", &m, &meta)?;
        same(&a, &b);
        run(&mut a, 20, 50);
        run(&mut b, 20, 50);
        same(&a, &b);
        assert!(a.num_clusters() > 1, "{mode:?}");
        // A different configuration refuses the checkpoint.
        let refusal = |max_clusters: usize| {
            let cfg = CelConfig {
                max_clusters,
                ..cfg.clone()
            };
            let mut t = table(41, d, cfg, OptimizerConfig::adam(0.05));
            t.load("x/", &m, &meta).unwrap_err().to_string()
        };
        let e = refusal(2);
        assert!(e.contains("max_clusters 2"), "{e}");
        // More clusters allowed, but stored in wider cluster ids: refused, saying why.
        let e = refusal(300);
        assert!(e.contains("1 byte(s)") && e.contains("needs 2"), "{e}");
        let mut bad = m.clone();
        bad.insert(
            "x/assign".into(),
            Tensor::from_vec(vec![99u32; 41], 41, &Device::Cpu)?,
        );
        assert!(b.load("x/", &bad, &meta).is_err());
    }
    Ok(())
}

#[test]
fn cel_lite_splits_places_members_and_adds_unseen_ids() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 2,
        split_every: 5,
        mode: Mode::Lite,
        reassign: Reassign::None,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    let (ids, targets, truth) = planted_targets(d);
    for s in 1..=60 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    assert_eq!(t.num_clusters(), 2);
    let a: Vec<u32> = ids.iter().map(|&e| t.cluster_of(e)).collect();
    assert_eq!(adjusted_rand_index(&a, &truth), 1.0);
    // An ID beyond the vocabulary joins cluster 0 in training and is served cluster 0.
    let r0 = t.cluster_rows().row(0).to_vec();
    let x = t.lookup(&[50], false)?;
    assert_eq!(x.flatten_all()?.to_vec1::<f32>()?, r0);
    t.lookup(&[45], true)?;
    assert_eq!(t.vocab(), 46);
    assert_eq!(t.cluster_of(45), 0);
    t.clear_pending();
    assert_eq!(t.bytes(), 2 * d * 4 + 46);
    Ok(())
}

/// `memory().training_bytes` of a CEL-Lite table with SGD (no optimizer state): the counters,
/// the gradient window of the pending split (each kept member's id and gradient) and, while a
/// split is open, its direction, mean and evidence (24 bytes per member seen), all read from
/// what the table saves.
#[test]
fn cel_lite_training_bytes_count_the_window_and_open_splits() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 3,
        split_every: 5,
        mode: Mode::Lite,
        reassign: Reassign::None,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    let (ids, targets, _) = planted_targets(d);
    let len = |v: &serde_json::Value| v.as_array().map_or(0, Vec::len);
    let mut open_seen = 0;
    for s in 1..=40 {
        quad_step(&mut t, &ids, &targets, s)?;
        let mut tensors = TensorMap::new();
        let meta = t.save("", &mut tensors)?;
        let open: usize = meta["open"]
            .as_array()
            .unwrap()
            .iter()
            .map(|o| (len(&o["v"]) + len(&o["mean"])) * 8 + len(&o["evidence"]) * 24)
            .sum();
        let window = tensors.get("lite.ents").map_or(0, |e| e.elem_count());
        let expected = t.vocab() * 4 + window * (d * 4 + 4) + open;
        assert_eq!(t.memory().training_bytes, expected, "step {s}");
        open_seen += usize::from(open > 0);
    }
    assert!(open_seen > 0, "a split was open at some step");
    Ok(())
}

#[test]
fn personalization_gives_each_entity_its_vector_and_centroids_are_means() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 2,
        split_every: 5,
        reassign: Reassign::None,
        personalize_at: Some(20),
        lambda: 0.1,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    let (ids, targets, _) = planted_targets(d);
    for s in 1..=19 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    let bytes_clustered = t.bytes();
    for s in 20..=40 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    assert!(t.personalized());
    assert_eq!(t.bytes(), bytes_clustered + 41 * d * 4);
    let v = t.lookup(&[1, 2], false)?.to_vec2::<f32>()?;
    assert_ne!(v[0], v[1], "entities have their own vectors");
    // Every touched centroid is the mean of its members' personal vectors.
    let c = t.cluster_of(1) as usize;
    let members: Vec<u32> = (0..41).filter(|&e| t.cluster_of(e) as usize == c).collect();
    let all = t.lookup(&members, false)?.to_vec2::<f32>()?;
    for j in 0..d {
        let m = all.iter().map(|r| r[j] as f64).sum::<f64>() / members.len() as f64;
        assert!((t.cluster_rows().row(c)[j] as f64 - m).abs() < 1e-4);
    }
    Ok(())
}

/// Personalization trains each entity's own vector `e` on the model loss plus the pull
/// `lambda * |e - C[a(e)]|^2` (the centroid a constant) for every entity of the batch. With
/// SGD the step is minus the gradient the table applied, which must equal central finite
/// differences of that loss (computed on the host in `f64`).
#[test]
fn the_personalization_gradient_matches_finite_differences_of_its_loss() -> Result<()> {
    let (vocab, d, lambda, lr) = (6usize, 3usize, 0.8f64, 0.5f64);
    let cfg = CelConfig {
        init_clusters: 2,
        max_clusters: 2,
        reassign: Reassign::None,
        personalize_at: Some(1),
        lambda,
        ..Default::default()
    };
    let mut t = table(vocab, d, cfg, OptimizerConfig::sgd(lr));
    // Steps 1..=3: personalization starts after step 1; two personal steps towards targets
    // that differ within each cluster move the vectors away from their centroids.
    let all: Vec<u32> = (0..vocab as u32).collect();
    let targets: Vec<f32> = (0..vocab * d)
        .map(|k| ((k * 7) % 5) as f32 * 0.3 - 0.6)
        .collect();
    for s in 1..=3 {
        quad_step(&mut t, &all, &targets, s)?;
    }
    assert!(t.personalized());
    // The checked step: entity 5 is absent, 2 and 3 appear twice.
    let ids = [0u32, 2, 2, 4, 1, 3, 3];
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let w: Vec<f64> = (0..ids.len() * d)
        .map(|_| rng.random_range(-1.0..1.0))
        .collect();
    let host = |m: &[Vec<f32>]| -> Vec<Vec<f64>> {
        m.iter()
            .map(|r| r.iter().map(|&x| x as f64).collect())
            .collect()
    };
    let before = host(&t.lookup(&all, false)?.to_vec2::<f32>()?);
    let centroids: Vec<Vec<f64>> = all
        .iter()
        .map(|&e| {
            let r = t.cluster_rows().row(t.cluster_of(e) as usize);
            r.iter().map(|&x| x as f64).collect()
        })
        .collect();
    // The model loss, and the loss with the pull on the distinct entities of the batch.
    let model_loss = |v: &[Vec<f64>]| -> f64 {
        ids.iter()
            .enumerate()
            .map(|(k, &e)| {
                (0..d)
                    .map(|j| v[e as usize][j].tanh() * w[k * d + j])
                    .sum::<f64>()
            })
            .sum()
    };
    let in_batch = |e: usize| ids.contains(&(e as u32));
    let full_loss = |v: &[Vec<f64>]| -> f64 {
        let pull: f64 = (0..vocab)
            .filter(|&e| in_batch(e))
            .map(|e| {
                (0..d)
                    .map(|j| (v[e][j] - centroids[e][j]).powi(2))
                    .sum::<f64>()
            })
            .sum();
        model_loss(v) + lambda * pull
    };
    let fd = |f: &dyn Fn(&[Vec<f64>]) -> f64, e: usize, j: usize| -> f64 {
        let h = 1e-5;
        let (mut a, mut b) = (before.clone(), before.clone());
        a[e][j] += h;
        b[e][j] -= h;
        (f(&a) - f(&b)) / (2.0 * h)
    };
    let x = t.lookup(&ids, true)?;
    let wt = Tensor::from_vec(
        w.iter().map(|&v| v as f32).collect::<Vec<_>>(),
        (ids.len(), d),
        &Device::Cpu,
    )?;
    t.apply_gradients(&(x.tanh()? * wt)?.sum_all()?.backward()?)?;
    let after = host(&t.lookup(&all, false)?.to_vec2::<f32>()?);
    let mut pull_size = 0f64;
    for e in 0..vocab {
        for j in 0..d {
            // The gradient the table applied: SGD moved the vector by -lr * gradient.
            let applied = (before[e][j] - after[e][j]) / lr;
            if !in_batch(e) {
                assert_eq!(applied, 0.0, "entity {e} is not in the batch");
                continue;
            }
            let want = fd(&full_loss, e, j);
            assert!(
                (applied - want).abs() < 2e-5 * (1.0 + want.abs()),
                "entity {e} dim {j}: applied {applied}, finite difference {want}"
            );
            pull_size = pull_size.max((want - fd(&model_loss, e, j)).abs());
        }
    }
    // The pull's share of the gradient is far above the tolerance: a missing, halved or
    // sign-flipped pull fails the check.
    assert!(pull_size > 1e-2, "pull gradient at most {pull_size}");
    Ok(())
}

#[test]
fn lite_split_now_is_the_split_step_of_end_step() -> Result<()> {
    // Table `a` splits on its own every 5 steps; table `b` never reaches its own split step
    // and gets `lite_split_now` after the same steps: both must end in the same state.
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 6,
        split_every: 5,
        mode: Mode::Lite,
        keep_prob: 0.2,
        reservoir: 8,
        placement_steps: 7,
        ..Default::default()
    };
    let (ids, targets, _) = planted_targets(d);
    let mut a = table(41, d, cfg.clone(), OptimizerConfig::adam(0.05));
    let mut b = table(
        41,
        d,
        CelConfig {
            split_every: 1 << 40,
            ..cfg
        },
        OptimizerConfig::adam(0.05),
    );
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let mut splits = 0;
    for s in 1..=60u64 {
        let batch: Vec<usize> = (0..16).map(|_| rng.random_range(0..40)).collect();
        let bi: Vec<u32> = batch.iter().map(|&k| ids[k]).collect();
        let bt: Vec<f32> = batch
            .iter()
            .flat_map(|&k| targets[k * d..(k + 1) * d].to_vec())
            .collect();
        quad_step(&mut a, &bi, &bt, s)?;
        quad_step(&mut b, &bi, &bt, s)?;
        if s % 5 == 0 {
            splits += usize::from(b.lite_split_now()?.is_some());
        }
        assert_eq!(a.assignment(), b.assignment(), "step {s}");
    }
    assert_eq!(a.tree(), b.tree());
    assert_eq!(splits + 1, b.num_clusters());
    assert!(b.num_clusters() > 2);
    // Offline tables have no CEL-Lite split.
    let mut off = table(41, d, CelConfig::default(), OptimizerConfig::adam(0.05));
    assert!(off.lite_split_now().is_err());
    Ok(())
}

#[test]
fn lite_reassign_moves_an_entity_to_the_neighbour_its_gradient_points_at() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 2,
        split_every: 5,
        mode: Mode::Lite,
        reassign: Reassign::None,
        keep_prob: 0.0,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    let (ids, targets, _) = planted_targets(d);
    for s in 1..=60 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    assert_eq!(t.num_clusters(), 2);
    let e = 3u32;
    let (from, to) = (t.cluster_of(e), 1 - t.cluster_of(e));
    let (rf, rt) = (
        t.cluster_rows().row(from as usize).to_vec(),
        t.cluster_rows().row(to as usize).to_vec(),
    );
    // A gradient along (from - to): moving to `to` lowers the modelled loss.
    let away: Vec<f32> = rf.iter().zip(&rt).map(|(a, b)| 10.0 * (a - b)).collect();
    let g = rec_nn::embedding::rows::RowGrads::merge(d, &[e], &away, &[1])?;
    assert_eq!(t.lite_reassign(&g)?, 1);
    assert_eq!(t.cluster_of(e), to);
    // The same gradient does not send it back (moving back would go against it).
    let g = rec_nn::embedding::rows::RowGrads::merge(d, &[e], &away, &[1])?;
    assert_eq!(t.lite_reassign(&g)?, 0);
    assert_eq!(t.cluster_of(e), to);
    // Entities outside the vocabulary and gradients of the wrong width are errors.
    let g = rec_nn::embedding::rows::RowGrads::merge(d, &[41], &away, &[1])?;
    assert!(t.lite_reassign(&g).is_err());
    let g = rec_nn::embedding::rows::RowGrads::merge(2, &[1], &[0.0, 0.0], &[1])?;
    assert!(t.lite_reassign(&g).is_err());
    Ok(())
}

#[test]
fn reset_optimizer_state_zeroes_the_moments_of_clusters_and_personal_vectors() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 2,
        split_every: 5,
        reassign: Reassign::None,
        personalize_at: Some(10),
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::adam(0.05));
    let (ids, targets, _) = planted_targets(d);
    for s in 1..=15 {
        quad_step(&mut t, &ids, &targets, s)?;
    }
    assert!(t.personalized());
    let state = |n: &str| ["m", "v", "steps"].iter().any(|s| n.ends_with(s));
    let values = |m: &TensorMap, n: &str| {
        host_f32(&m[n].to_dtype(candle_core::DType::F32).unwrap()).unwrap()
    };
    let (before, _) = saved(&t);
    let moments: Vec<&String> = before.keys().filter(|n| state(n)).collect();
    // Cluster rows and personal vectors each have m, v and steps.
    assert_eq!(moments.len(), 6, "{moments:?}");
    assert!(
        moments
            .iter()
            .any(|n| values(&before, n).iter().any(|&x| x != 0.0))
    );
    t.reset_optimizer_state()?;
    let (after, _) = saved(&t);
    for n in after.keys() {
        let v = values(&after, n);
        if state(n) {
            assert!(v.iter().all(|&x| x == 0.0), "{n}");
        } else {
            assert_eq!(v, values(&before, n), "{n}");
        }
    }
    Ok(())
}

/// One step of [`quad_step`] on the planted entities `which` (indices into `ids`), each with
/// the target of the planted entity `target_of[k]`.
fn planted_step(
    t: &mut ClusteredEmbedding,
    which: &[usize],
    target_of: &[usize],
    step: u64,
) -> Result<()> {
    let d = t.dim();
    let (ids, targets, _) = planted_targets(d);
    let bi: Vec<u32> = which.iter().map(|&k| ids[k]).collect();
    let bt: Vec<f32> = target_of
        .iter()
        .flat_map(|&k| targets[k * d..(k + 1) * d].to_vec())
        .collect();
    quad_step(t, &bi, &bt, step)
}

#[test]
fn cel_lite_decides_each_member_once() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 2,
        split_every: 1 << 40,
        mode: Mode::Lite,
        reassign: Reassign::None,
        keep_prob: 0.0,
        reservoir: 8,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    // Open the window, fill it with four members of each planted group (entities 1-4 and
    // 21-24 are indices 0-3 and 20-23), and split.
    assert_eq!(t.lite_split_now()?, None);
    let kept = [0, 1, 2, 3, 20, 21, 22, 23];
    for s in 1..=5 {
        planted_step(&mut t, &kept, &kept, s)?;
    }
    assert_eq!(t.lite_split_now()?, Some(1));
    let (a, b) = (t.cluster_of(1), t.cluster_of(21));
    assert_ne!(a, b, "the split separates the planted groups");
    // The group left in the parent: its members stay when placed by their own gradients.
    let (stay, away) = if a == 0 { (9, 29) } else { (29, 9) };
    let (kept_stayer, _) = if a == 0 { (0, 20) } else { (20, 0) };
    let mut step = 6;
    for _ in 0..3 {
        planted_step(&mut t, &[stay], &[stay], step)?;
        step += 1;
    }
    assert_eq!(t.cluster_of(stay as u32 + 1), 0, "placed with its group");
    // Decided: gradients pointing to the other side afterwards do not move it, nor a member
    // the split placed at once.
    for _ in 0..6 {
        planted_step(&mut t, &[stay, kept_stayer], &[away, away], step)?;
        step += 1;
    }
    assert_eq!(t.cluster_of(stay as u32 + 1), 0, "decided once");
    assert_eq!(
        t.cluster_of(kept_stayer as u32 + 1),
        0,
        "placed at the split"
    );
    // An undecided member of the other group still goes by its evidence.
    for _ in 0..3 {
        planted_step(&mut t, &[away], &[away], step)?;
        step += 1;
    }
    assert_eq!(t.cluster_of(away as u32 + 1), 1);
    Ok(())
}

/// Training bytes of an offline table with exact reassignment (one cluster, a split window of
/// 10 steps, five new entities per step), read 9 steps into each window up to step `last`;
/// with `driver`, the reassignment the table asks for is applied after the step (no move), as
/// the exact driver does.
fn exact_window_bytes(driver: bool, last: u64) -> Result<std::collections::BTreeMap<u64, usize>> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 1,
        split_every: 10,
        reassign: Reassign::Exact {
            candidates: 0,
            curvature: 1.0,
        },
        ..Default::default()
    };
    let mut t = table(1000, d, cfg, OptimizerConfig::sgd(0.05));
    let mut window_bytes = std::collections::BTreeMap::new();
    for s in 1..=last {
        // Five new entities every step: the window holds what it has seen since its start.
        let ids: Vec<u32> = (0..5).map(|j| (s * 5 + j) as u32).collect();
        quad_step(&mut t, &ids, &vec![1.0f32; 5 * d], s)?;
        if s == 40 {
            assert!(t.reassign_due(), "a reassignment step asks for the driver");
        }
        if driver && t.reassign_due() {
            t.apply_moves(&[])?;
        }
        if s == 41 {
            assert!(
                !t.reassign_due(),
                "run or skipped, the reassignment is over"
            );
        }
        if s % 10 == 9 {
            window_bytes.insert(s, t.memory().training_bytes);
        }
    }
    Ok(window_bytes)
}

#[test]
fn an_exact_reassignment_no_driver_runs_does_not_keep_the_window_for_ever() -> Result<()> {
    let window_bytes = exact_window_bytes(false, 99)?;
    // The window ending at reassignment step 40 (or 80) is kept into the next one when no
    // driver runs; every other window is cleared at its end.
    let one = window_bytes[&9];
    for s in [19, 29, 39, 59, 69, 79, 99] {
        assert_eq!(window_bytes[&s], one, "step {s}: {window_bytes:?}");
    }
    assert!(window_bytes[&49] > one && window_bytes[&89] == window_bytes[&49]);
    Ok(())
}

#[test]
fn an_exact_reassignment_clears_the_window_it_kept() -> Result<()> {
    let window_bytes = exact_window_bytes(true, 49)?;
    // Step 40 was a reassignment step and a window end: the split at 50 sees steps 41-50.
    assert_eq!(window_bytes[&49], window_bytes[&9], "{window_bytes:?}");
    Ok(())
}

#[test]
fn personalization_starts_at_the_first_step_at_or_after_its_setting() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        personalize_at: Some(5),
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    let (ids, targets, _) = planted_targets(d);
    quad_step(&mut t, &ids, &targets, 4)?;
    assert!(!t.personalized());
    // A resumed run whose step counter is already past the setting (step 5 never ends here).
    quad_step(&mut t, &ids, &targets, 7)?;
    assert!(t.personalized());
    let zero = CelConfig {
        personalize_at: Some(0),
        ..Default::default()
    };
    assert!(zero.validate().unwrap_err().contains("personalize_at"));
    Ok(())
}

#[test]
fn settings_a_table_cannot_honour_are_refused() {
    let lite_exact = CelConfig {
        mode: Mode::Lite,
        reassign: Reassign::Exact {
            candidates: 0,
            curvature: 1.0,
        },
        ..Default::default()
    };
    assert!(lite_exact.validate().unwrap_err().contains("lite"));
    let one = CelConfig {
        reassign: Reassign::Exact {
            candidates: 1,
            curvature: 1.0,
        },
        ..Default::default()
    };
    assert!(one.validate().unwrap_err().contains("candidates"));
    let two = CelConfig {
        reassign: Reassign::Exact {
            candidates: 2,
            curvature: 1.0,
        },
        ..Default::default()
    };
    two.validate().unwrap();
}

#[test]
fn cel_lite_refuses_an_id_far_past_its_entities() -> Result<()> {
    let cfg = CelConfig {
        mode: Mode::Lite,
        ..Default::default()
    };
    let mut t = table(41, 4, cfg, OptimizerConfig::sgd(0.05));
    let e = t.lookup(&[3, u32::MAX - 1], true).unwrap_err().to_string();
    assert!(e.contains("dense indices"), "{e}");
    assert_eq!(t.vocab(), 41, "nothing was grown");
    t.clear_pending();
    t.lookup(&[100], true)?;
    assert_eq!(t.vocab(), 101);
    Ok(())
}

#[test]
fn the_loss_split_choice_waits_for_a_fresh_measurement_after_a_split() -> Result<()> {
    let d = 4;
    let cfg = CelConfig {
        max_clusters: 10,
        split_every: 1,
        split_choice: embedding_cel::SplitChoice::Loss,
        reassign: Reassign::None,
        ..Default::default()
    };
    let mut t = table(41, d, cfg, OptimizerConfig::sgd(0.05));
    // Scattered targets, so that every cluster of several members can be split.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let ids: Vec<u32> = (1..=40).collect();
    let targets: Vec<f32> = (0..40 * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    quad_step(&mut t, &ids, &targets, 1)?;
    assert_eq!(t.num_clusters(), 2);
    // Measured: the cluster with fewer interactions has the larger loss, and is split next.
    let inter = t.cluster_interactions().to_vec();
    let small = usize::from(inter[1] < inter[0]);
    let mut losses = vec![0.0; 2];
    losses[small] = 1e9;
    t.set_cluster_losses(losses);
    quad_step(&mut t, &ids, &targets, 2)?;
    assert_eq!(t.tree()[2].parent, Some(small as u32));
    // That split made the measurement stale: the next one goes by interactions, not by the
    // old loss of the (now even smaller) cluster.
    quad_step(&mut t, &ids, &targets, 3)?;
    let inter = t.cluster_interactions();
    let parent = t.tree()[3].parent.unwrap() as usize;
    assert_ne!(parent, small);
    assert_eq!(inter.len(), 4);
    Ok(())
}

#[test]
fn online_updates_one_batch_at_a_time_and_continues_a_step_count() -> Result<()> {
    let data = Planted {
        users: 60,
        items: 40,
        clusters: 2,
        rank: 4,
        per_user: 20,
        noise: 0.05,
        seed: 5,
    }
    .generate();
    let split = &data.split;
    let cfg = CelConfig {
        max_clusters: 4,
        split_every: 5,
        mode: Mode::Lite,
        ..Default::default()
    };
    let model = nmf_with_cel(&split.schema, cfg, 4, 3);
    let mut online =
        embedding_cel::online::Online::new(Box::new(model), OptimizerConfig::adam(0.01), 1)?
            .starting_at(100);
    let batch = split.train.range(0, 64);
    let before = online.predict(&batch)?;
    let loss = online.observe(&batch)?;
    assert!(loss.is_finite());
    assert_eq!(online.steps(), 101, "the count continues");
    let after = online.predict(&batch)?;
    assert_ne!(before, after, "the update changed the predictions");
    assert!(after[0].iter().all(|x| x.is_finite()));
    let t = cel_table(online.model());
    assert_eq!(
        t.interaction_counts()
            .iter()
            .map(|&n| n as usize)
            .sum::<usize>(),
        64
    );
    Ok(())
}

#[test]
fn a_table_with_more_initial_clusters_than_entities_is_refused() {
    let cfg = CelConfig {
        init_clusters: 5,
        max_clusters: 5,
        ..Default::default()
    };
    let opts = TableOptions::new(
        Init::Normal {
            mean: 0.0,
            std: 0.1,
        },
        OptimizerConfig::sgd(0.1),
    );
    let mut rng = named_rng(1, "t");
    let e = ClusteredEmbedding::new("f", 3, 4, cfg, &opts, &mut rng, 7, &Device::Cpu)
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("init_clusters (5) exceeds the vocabulary (3)"),
        "{e}"
    );
}

#[test]
fn exact_reassignment_without_its_driver_is_counted_as_skipped() -> Result<()> {
    let (data, cfg) = exact_setup(5, 2);
    let split = &data.split;
    // A plain loop: every due reassignment is skipped, and counted (the first is logged).
    let mut model = nmf_with_cel(&split.schema, cfg.clone(), 3, 1);
    let mut opt = DenseOptimizer::new(OptimizerConfig::adam(0.01), model.dense_vars())?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    for _ in 0..7 {
        train_step(&mut model, &mut opt, &split.train, &mut ctx)?;
    }
    let t = cel_table(&model);
    assert!(
        t.skipped_reassignments() >= 2,
        "{}",
        t.skipped_reassignments()
    );
    assert_eq!(t.moves(), 0);
    // With the driver after each step, none is skipped.
    let mut model = nmf_with_cel(&split.schema, cfg, 3, 1);
    let mut opt = DenseOptimizer::new(OptimizerConfig::adam(0.01), model.dense_vars())?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(0));
    for _ in 0..7 {
        train_step(&mut model, &mut opt, &split.train, &mut ctx)?;
        reassign_due(&mut model, &split.train, 64)?;
    }
    assert_eq!(cel_table(&model).skipped_reassignments(), 0);
    Ok(())
}
