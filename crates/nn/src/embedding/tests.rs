//! Behaviour shared by every built-in table, and each table's own rules.

use candle_core::{DType, Device, Result, Tensor};
use rec_data::FieldSpec;

use super::*;
use crate::init::named_rng;

fn opts(optimizer: OptimizerConfig) -> TableOptions {
    TableOptions::new(
        Init::Normal {
            mean: 0.0,
            std: 1.0,
        },
        optimizer,
    )
}

/// One table of every kind over a vocabulary of 100 IDs, width 4.
fn all_kinds(optimizer: OptimizerConfig, seed: u64) -> Vec<Box<dyn EmbeddingTable>> {
    let o = opts(optimizer);
    let d = Device::Cpu;
    let mut rng = named_rng(seed, "tables");
    let counts: Vec<u64> = (0..100)
        .map(|i| if i % 10 == 3 { 50 + i } else { 1 })
        .collect();
    vec![
        Box::new(FullTable::new(100, 4, &o, &mut rng, &d).unwrap()),
        Box::new(HashedTable::new(100, 16, 4, 99, &o, &mut rng, &d).unwrap()),
        Box::new(QrTable::new(100, 10, 4, &o, &mut rng, &d).unwrap()),
        Box::new(FrequencyTable::new(100, 4, &counts, 5, 8, 99, &o, &mut rng, &d).unwrap()),
    ]
}

fn rows_of(t: &mut dyn EmbeddingTable, ids: &[u32]) -> Vec<Vec<f32>> {
    t.lookup(ids, false).unwrap().to_vec2::<f32>().unwrap()
}

#[test]
fn eval_and_train_lookups_agree_and_have_the_right_shape() -> Result<()> {
    for mut t in all_kinds(OptimizerConfig::sgd(0.1), 1) {
        let ids = [5u32, 17, 5, 99, 0];
        let a = t.lookup(&ids, false)?;
        let b = t.lookup(&ids, true)?;
        assert_eq!(a.dims(), &[5, 4], "{}", t.kind());
        assert_eq!(a.to_vec2::<f32>()?, b.to_vec2::<f32>()?, "{}", t.kind());
        let r = a.to_vec2::<f32>()?;
        assert_eq!(r[0], r[2]);
        t.clear_pending();
    }
    Ok(())
}

#[test]
fn a_step_changes_only_the_looked_up_ids() -> Result<()> {
    for mut t in all_kinds(OptimizerConfig::adam(0.01), 2) {
        let all: Vec<u32> = (0..100).collect();
        let before = rows_of(t.as_mut(), &all);
        // Two lookups in one step, the second repeating an ID of the first.
        let a = t.lookup(&[3, 40], true)?;
        let b = t.lookup(&[40], true)?;
        let loss = (a.sqr()?.sum_all()? + b.sum_all()?)?;
        t.apply_gradients(&loss.backward()?)?;
        let after = rows_of(t.as_mut(), &all);
        assert_ne!(before[3], after[3], "{}", t.kind());
        assert_ne!(before[40], after[40], "{}", t.kind());
        // IDs sharing no row with 3 or 40 are unchanged.
        let changed: Vec<usize> = (0..100).filter(|&i| before[i] != after[i]).collect();
        let shares = |i: u32| -> bool {
            let any = t.as_any();
            if let Some(h) = any.downcast_ref::<HashedTable>() {
                let r = h.row_of(&[i, 3, 40]);
                r[0] == r[1] || r[0] == r[2]
            } else if let Some(q) = any.downcast_ref::<QrTable>() {
                let (qq, rr) = q.rows_of(&[i, 3, 40]);
                qq[0] == qq[1] || qq[0] == qq[2] || rr[0] == rr[1] || rr[0] == rr[2]
            } else if let Some(f) = any.downcast_ref::<FrequencyTable>() {
                let r = f.row_of(&[i, 3, 40]);
                r[0] == r[1] || r[0] == r[2]
            } else {
                i == 3 || i == 40
            }
        };
        for i in changed {
            assert!(shares(i as u32), "{}: ID {i} changed", t.kind());
        }
    }
    Ok(())
}

#[test]
fn several_lookups_merge_into_one_update_per_row() -> Result<()> {
    // With AdaGrad the result of one update with the summed gradient differs from two updates.
    let o = opts(OptimizerConfig::adagrad(0.1));
    let mut a = FullTable::new(10, 2, &o, &mut named_rng(1, "m"), &Device::Cpu)?;
    let mut b = FullTable::new(10, 2, &o, &mut named_rng(1, "m"), &Device::Cpu)?;
    let x1 = a.lookup(&[4], true)?;
    let x2 = a.lookup(&[4], true)?;
    a.apply_gradients(&(x1.sum_all()? + x2.sum_all()?.affine(3.0, 0.0)?)?.backward()?)?;
    let y = b.lookup(&[4], true)?;
    b.apply_gradients(&y.sum_all()?.affine(4.0, 0.0)?.backward()?)?;
    assert_eq!(a.rows().row(4), b.rows().row(4));
    assert_eq!(a.rows().row_state(0, 4), &[16.0, 16.0]);
    Ok(())
}

#[test]
fn unknown_id_rules() -> Result<()> {
    let mut tables = all_kinds(OptimizerConfig::sgd(0.1), 3);
    // full: OOV row 0.
    let r = rows_of(tables[0].as_mut(), &[0, 100, 12345]);
    assert_eq!((r[0].clone(), r[0].clone()), (r[1].clone(), r[2].clone()));
    // hashed: its own bucket, stable.
    let h = tables[1].as_any().downcast_ref::<HashedTable>().unwrap();
    assert_eq!(h.row_of(&[12345])[0], hashed::hash_bucket(12345, 99, 16));
    let r = rows_of(tables[1].as_mut(), &[12345, 12345]);
    assert_eq!(r[0], r[1]);
    // qr: like the full table it compresses, OOV ID 0.
    let r = rows_of(tables[2].as_mut(), &[0, 100, 5000]);
    assert_eq!((r[0].clone(), r[0].clone()), (r[1].clone(), r[2].clone()));
    // frequency: hashed into the shared rows.
    let f = tables[3].as_any().downcast_ref::<FrequencyTable>().unwrap();
    let k = f.frequent_ids().len() as u32;
    assert_eq!(f.row_of(&[12345])[0], k + hashed::hash_bucket(12345, 99, 8));
    Ok(())
}

#[test]
fn qr_composes_quotient_and_remainder() -> Result<()> {
    let mut t = QrTable::new(
        100,
        10,
        3,
        &opts(OptimizerConfig::sgd(0.1)),
        &mut named_rng(1, "q"),
        &Device::Cpu,
    )?;
    assert_eq!((t.quotient().rows(), t.remainder().rows()), (10, 10));
    // Remainder rows start at 1, so 37 and 31 share quotient row 3 at the start.
    let r = rows_of(&mut t, &[37, 31, 47]);
    assert_eq!(r[0], r[1]);
    assert_eq!(r[0], t.quotient().row(3));
    assert_ne!(r[0], r[2]);
    // After an update through ID 37, its remainder row 7 changes, so 37 and 31 differ.
    let (q3, r7) = (t.quotient().row(3).to_vec(), t.remainder().row(7).to_vec());
    let e = t.lookup(&[37], true)?;
    t.apply_gradients(&e.sum_all()?.backward()?)?;
    let r = rows_of(&mut t, &[37, 31]);
    assert_ne!(r[0], r[1]);
    // The product rule, with SGD 0.1 on sum(q3 * r7): q3 -= 0.1 r7 and r7 -= 0.1 q3.
    for k in 0..3 {
        let (q, rr) = (t.quotient().row(3)[k], t.remainder().row(7)[k]);
        assert!(
            (q - (q3[k] - 0.1 * r7[k])).abs() < 1e-6,
            "quotient[{k}] {q}"
        );
        assert!(
            (rr - (r7[k] - 0.1 * q3[k])).abs() < 1e-6,
            "remainder[{k}] {rr}"
        );
    }
    let want: Vec<f32> = (0..3)
        .map(|k| t.quotient().row(3)[k] * t.remainder().row(7)[k])
        .collect();
    assert_eq!(r[0], want);
    Ok(())
}

#[test]
fn frequency_table_picks_the_most_frequent_ids() -> Result<()> {
    let counts = [0u64, 9, 3, 9, 0, 7, 1];
    let t = FrequencyTable::new(
        8,
        2,
        &counts,
        3,
        4,
        1,
        &opts(OptimizerConfig::sgd(0.1)),
        &mut named_rng(1, "f"),
        &Device::Cpu,
    )?;
    // 1 and 3 (9 each), then 5 (7); ties broken by the smaller ID.
    assert_eq!(t.frequent_ids(), &[1, 3, 5]);
    assert_eq!(t.row_of(&[1, 3, 5]), vec![0, 1, 2]);
    assert!(
        t.row_of(&[0, 2, 4, 6, 7])
            .iter()
            .all(|&r| (3..7).contains(&r))
    );
    assert_eq!(t.num_params(), 7 * 2);
    assert_eq!(t.bytes(), 7 * 2 * 4 + 3 * 4);
    // Never-seen IDs do not qualify even when top_k is large.
    let t = FrequencyTable::new(
        8,
        2,
        &counts,
        100,
        4,
        1,
        &opts(OptimizerConfig::sgd(0.1)),
        &mut named_rng(1, "f"),
        &Device::Cpu,
    )?;
    assert_eq!(t.frequent_ids(), &[1, 2, 3, 5, 6]);
    assert!(
        FrequencyTable::new(
            3,
            2,
            &counts,
            1,
            4,
            1,
            &opts(OptimizerConfig::sgd(0.1)),
            &mut named_rng(1, "f"),
            &Device::Cpu
        )
        .is_err()
    );
    Ok(())
}

#[test]
fn sizes_are_reported() {
    let t = all_kinds(OptimizerConfig::sgd(0.1), 4);
    let sizes: Vec<(usize, usize)> = t.iter().map(|t| (t.num_params(), t.bytes())).collect();
    assert_eq!(sizes[0], (400, 1600));
    assert_eq!(sizes[1], (64, 256));
    assert_eq!(sizes[2], ((10 + 10) * 4, 80 * 4));
    // 10 IDs have count > 1; top 5 own rows, 8 shared rows.
    assert_eq!(sizes[3], ((5 + 8) * 4, (5 + 8) * 16 + 5 * 4));
}

#[test]
fn same_seed_same_tables() {
    let mut a = all_kinds(OptimizerConfig::sgd(0.1), 7);
    let mut b = all_kinds(OptimizerConfig::sgd(0.1), 7);
    let mut c = all_kinds(OptimizerConfig::sgd(0.1), 8);
    let ids: Vec<u32> = (0..100).collect();
    for k in 0..4 {
        assert_eq!(rows_of(a[k].as_mut(), &ids), rows_of(b[k].as_mut(), &ids));
        assert_ne!(rows_of(a[k].as_mut(), &ids), rows_of(c[k].as_mut(), &ids));
    }
}

#[test]
fn save_load_round_trip_continues_identically() -> Result<()> {
    let train = |t: &mut dyn EmbeddingTable, ids: &[u32]| -> Result<()> {
        let e = t.lookup(ids, true)?;
        t.apply_gradients(&e.sqr()?.sum_all()?.backward()?)
    };
    let mut a = all_kinds(OptimizerConfig::adam(0.05), 9);
    let mut b = all_kinds(OptimizerConfig::adam(0.05), 10);
    for (ta, tb) in a.iter_mut().zip(b.iter_mut()) {
        train(ta.as_mut(), &[1, 2, 3, 13])?;
        let mut map = TensorMap::new();
        let meta = ta.save("x/", &mut map)?;
        tb.load("x/", &map, &meta)?;
        train(ta.as_mut(), &[3, 4])?;
        train(tb.as_mut(), &[3, 4])?;
        let ids: Vec<u32> = (0..100).collect();
        assert_eq!(
            rows_of(ta.as_mut(), &ids),
            rows_of(tb.as_mut(), &ids),
            "{}",
            ta.kind()
        );
    }
    Ok(())
}

#[test]
fn loading_mismatched_state_is_an_error() -> Result<()> {
    let a = all_kinds(OptimizerConfig::adam(0.05), 9);
    let mut b = all_kinds(OptimizerConfig::adam(0.05), 9);
    let mut sgd = all_kinds(OptimizerConfig::sgd(0.05), 9);
    let mut metas = Vec::new();
    let mut map = TensorMap::new();
    for t in &a {
        metas.push(t.save(&format!("{}/", t.kind()), &mut map)?);
    }
    for k in 0..4 {
        let p = format!("{}/", a[k].kind());
        // The wrong kind of table.
        let other = (k + 1) % 4;
        assert!(b[other].load(&p, &map, &metas[k]).is_err());
        // Another optimizer.
        assert!(sgd[k].load(&p, &map, &metas[k]).is_err());
        // Tampered metadata and tensors.
        let mut meta = metas[k].clone();
        meta["vocab"] = serde_json::json!(99);
        assert!(b[k].load(&p, &map, &meta).is_err());
        let weight = map
            .keys()
            .find(|n| n.starts_with(&p) && n.ends_with("weight"))
            .unwrap()
            .clone();
        let mut bad = map.clone();
        let shape = bad[&weight].dims().to_vec();
        bad.insert(
            weight.clone(),
            Tensor::zeros((shape[0] + 1, shape[1]), DType::F32, &Device::Cpu)?,
        );
        assert!(b[k].load(&p, &bad, &metas[k]).is_err(), "{weight}");
        let mut bad = map.clone();
        bad.insert(weight.clone(), bad[&weight].to_dtype(DType::F64)?);
        assert!(b[k].load(&p, &bad, &metas[k]).is_err());
        let mut bad = map.clone();
        bad.remove(&weight);
        let e = b[k].load(&p, &bad, &metas[k]).unwrap_err().to_string();
        assert!(e.contains(&weight), "{e}");
        // And the table still works after the failed loads.
        b[k].lookup(&[1], false)?;
    }
    Ok(())
}

#[test]
fn reset_optimizer_state_restarts_the_state_and_keeps_the_values() -> Result<()> {
    let state = |n: &str| ["acc", "m", "v", "steps"].iter().any(|s| n.ends_with(s));
    let saved = |t: &dyn EmbeddingTable| -> Result<TensorMap> {
        let mut map = TensorMap::new();
        t.save("x/", &mut map)?;
        Ok(map)
    };
    let same = |a: &Tensor, b: &Tensor| -> Result<bool> {
        Ok(a.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?
            == b.flatten_all()?.to_dtype(DType::F64)?.to_vec1::<f64>()?)
    };
    for opt in [OptimizerConfig::adagrad(0.1), OptimizerConfig::adam(0.05)] {
        let fresh = all_kinds(opt, 12);
        for (mut t, f) in all_kinds(opt, 12).into_iter().zip(&fresh) {
            for ids in [[1u32, 2, 3, 13], [3, 4, 40, 41]] {
                let e = t.lookup(&ids, true)?;
                t.apply_gradients(&e.sqr()?.sum_all()?.backward()?)?;
            }
            let (kind, f0) = (t.kind(), saved(f.as_ref())?);
            let before = saved(t.as_ref())?;
            let names: Vec<&String> = before.keys().filter(|n| state(n)).collect();
            assert!(!names.is_empty(), "{kind}");
            // Training moved the state away from a fresh table's, so the check below can fail.
            assert!(
                !names.iter().all(|n| same(&before[*n], &f0[*n]).unwrap()),
                "{kind}"
            );
            t.reset_optimizer_state()?;
            let after = saved(t.as_ref())?;
            for (n, v) in &after {
                let want = if state(n) { &f0[n] } else { &before[n] };
                assert!(same(v, want)?, "{kind} {n}");
            }
        }
    }
    Ok(())
}

#[test]
fn clamp_params_works_for_every_kind() -> Result<()> {
    for mut t in all_kinds(OptimizerConfig::sgd(1.0), 11) {
        t.clamp_params(0.0, 0.5)?;
        let ids: Vec<u32> = (0..100).collect();
        let r = rows_of(t.as_mut(), &ids);
        assert!(
            r.iter().flatten().all(|&v| (0.0..=0.5).contains(&v)),
            "{}",
            t.kind()
        );
    }
    Ok(())
}

#[test]
fn the_default_factory_builds_each_kind_and_table_sets_share() -> Result<()> {
    use std::collections::HashMap;
    let cfg: TablesConfig = serde_json::from_value(serde_json::json!({
        "default": { "kind": "hashed", "rows": 7 },
        "fields": {
            "item_id": { "kind": "qr", "collisions": 4 },
            "cat": { "kind": "frequency", "top_k": 2, "rows": 3 },
            "user_id": { "kind": "full" }
        },
        "options": { "optimizer": { "kind": "adagrad", "lr": 0.1 } }
    }))
    .map_err(|e| candle_core::Error::Msg(e.to_string()))?;
    assert!(serde_json::from_value::<TablesConfig>(serde_json::json!({"defaults": {}})).is_err());
    let mut f = DefaultTableFactory::new(cfg, 1, &Device::Cpu)
        .with_counts(HashMap::from([("cat".to_string(), vec![0, 5, 1, 7])]));
    let schema = rec_data::Schema {
        fields: vec![
            FieldSpec::categorical("user_id", 10),
            FieldSpec::categorical("item_id", 20),
            FieldSpec::sequence("hist", 20, "h").sharing("item_id"),
            FieldSpec::categorical("cat", 4),
            FieldSpec::multi_hot("tags", 6),
            FieldSpec::dense("x", 2),
        ],
        num_scenarios: 1,
        ..Default::default()
    };
    let mut calls = 0;
    let mut factory = |field: &FieldSpec, dim: usize| {
        calls += 1;
        f.build(field, dim)
    };
    let mut set = TableSet::build(
        &schema,
        ["user_id", "item_id", "hist", "cat", "tags"],
        3,
        "emb.",
        &mut factory,
    )?;
    assert_eq!(calls, 4, "hist shares the table of item_id");
    assert!(f.unused_fields().is_empty(), "{:?}", f.unused_fields());
    let kinds: Vec<(String, &str)> = set
        .named()
        .into_iter()
        .map(|(n, t)| (n, t.kind()))
        .collect();
    assert_eq!(
        kinds,
        vec![
            ("emb.cat".to_string(), "frequency"),
            ("emb.item_id".to_string(), "qr"),
            ("emb.tags".to_string(), "hashed"),
            ("emb.user_id".to_string(), "full"),
        ]
    );
    let a = set.lookup("hist", &[5], false)?.to_vec2::<f32>()?;
    let b = set.lookup("item_id", &[5], false)?.to_vec2::<f32>()?;
    assert_eq!(a, b);
    assert!(set.lookup("x", &[0], false).is_err());
    // An entry no table was built for is reported (a misspelt field would be ignored).
    let mut typo = DefaultTableFactory::new(
        TablesConfig {
            fields: [("itemid".to_string(), TableConfig::Hashed { rows: 10 })].into(),
            ..Default::default()
        },
        1,
        &Device::Cpu,
    );
    typo.build(&schema.fields[1], 3)?;
    assert_eq!(typo.unused_fields(), ["itemid"]);
    // Dense fields and unknown fields are errors.
    let mut f2 = DefaultTableFactory::new(TablesConfig::default(), 1, &Device::Cpu);
    let mut factory2 = |field: &FieldSpec, dim: usize| f2.build(field, dim);
    assert!(TableSet::build(&schema, ["x"], 3, "", &mut factory2).is_err());
    assert!(TableSet::build(&schema, ["nope"], 3, "", &mut factory2).is_err());
    // A frequency table without counts is an error.
    let mut f3 = DefaultTableFactory::new(
        TablesConfig {
            default: TableConfig::Frequency { top_k: 1, rows: 1 },
            ..Default::default()
        },
        1,
        &Device::Cpu,
    );
    let e = f3.build(&schema.fields[0], 3).err().expect("no counts");
    assert!(e.to_string().contains("counts"));
    // A factory's table of another width, or with room for fewer IDs than the field has (IDs
    // past its end would silently share the unknown-ID row), is refused; a larger one is not.
    let o = opts(OptimizerConfig::sgd(0.1));
    for (vocab, dim, refused) in [
        (10, 4, Some("width 4")),
        (9, 3, Some("of 9 IDs")),
        (12, 3, None),
    ] {
        let mut rng = named_rng(1, "t");
        let mut built = |_: &FieldSpec, _: usize| -> Result<Box<dyn EmbeddingTable>> {
            Ok(Box::new(FullTable::new(
                vocab,
                dim,
                &o,
                &mut rng,
                &Device::Cpu,
            )?))
        };
        let got = TableSet::build(&schema, ["user_id"], 3, "", &mut built);
        match refused {
            Some(want) => {
                let e = got.err().expect("refused").to_string();
                assert!(e.contains(want) && e.contains("`user_id`"), "{e}");
            }
            None => assert!(got.is_ok()),
        }
    }
    Ok(())
}

/// A loss that is quadratic in every table value (so central differences are exact up to
/// rounding): `sum(a * x + 0.5 * b * x^2)` over the output `x`, with fixed `a` and `b` per
/// position. Returns the candle loss (for autograd) and the host loss in f64 (for differences).
pub(crate) fn quadratic_loss(x: &Tensor) -> Result<(Tensor, f64)> {
    let n = x.elem_count();
    let a: Vec<f32> = (0..n).map(|k| ((k * 7 % 11) as f32 - 5.0) / 5.0).collect();
    let b: Vec<f32> = (0..n).map(|k| 0.5 + (k * 3 % 5) as f32 / 4.0).collect();
    let (at, bt) = (
        Tensor::from_vec(a.clone(), x.shape(), x.device())?,
        Tensor::from_vec(b.clone(), x.shape(), x.device())?,
    );
    let loss = ((x * &at)? + (x.sqr()? * &bt)?.affine(0.5, 0.0)?)?.sum_all()?;
    let host = x.flatten_all()?.to_vec1::<f32>()?;
    let l = host
        .iter()
        .zip(a.iter().zip(&b))
        .map(|(&x, (&a, &b))| {
            let x = x as f64;
            a as f64 * x + 0.5 * b as f64 * x * x
        })
        .sum();
    Ok((loss, l))
}

/// Checks the sparse gradient `table` applies against central differences of `forward`'s loss
/// in every stored weight: with SGD at learning rate 1, one `apply_gradients` moves each value
/// by minus its gradient, so the move must equal the difference quotient (and be zero for
/// values no looked-up ID uses).
fn check_table_gradients(
    name: &str,
    table: &mut dyn EmbeddingTable,
    mut forward: impl FnMut(&mut dyn EmbeddingTable, bool) -> Result<Tensor>,
) -> Result<()> {
    let mut before = TensorMap::new();
    let meta = table.save("", &mut before)?;
    let (loss, _) = quadratic_loss(&forward(table, true)?)?;
    table.apply_gradients(&loss.backward()?)?;
    let mut after = TensorMap::new();
    table.save("", &mut after)?;
    let eps = 1e-2f32;
    let mut checked = 0;
    let mut moved = 0;
    let keys: Vec<String> = before
        .keys()
        .filter(|k| k.ends_with("weight"))
        .cloned()
        .collect();
    assert!(!keys.is_empty(), "{name}: no weights saved");
    for key in keys {
        let w0 = before[&key].flatten_all()?.to_vec1::<f32>()?;
        let w1 = after[&key].flatten_all()?.to_vec1::<f32>()?;
        for k in 0..w0.len() {
            let mut at = |x: f32| -> Result<f64> {
                let mut w = w0.clone();
                w[k] = x;
                let mut m = before.clone();
                m.insert(
                    key.clone(),
                    Tensor::from_vec(w, before[&key].shape(), &Device::Cpu)?,
                );
                table.load("", &m, &meta)?;
                Ok(quadratic_loss(&forward(table, false)?)?.1)
            };
            let fd = (at(w0[k] + eps)? - at(w0[k] - eps)?) / (2.0 * (eps as f64));
            let analytic = (w0[k] - w1[k]) as f64;
            assert!(
                (fd - analytic).abs() < 2e-3 * (1.0 + fd.abs()),
                "{name} {key}[{k}]: applied gradient {analytic}, central difference {fd}"
            );
            checked += 1;
            moved += usize::from(analytic != 0.0);
        }
    }
    table.load("", &before, &meta)?;
    assert!(
        moved > 0 && moved < checked,
        "{name}: {moved} of {checked} values moved"
    );
    Ok(())
}

#[test]
fn every_kind_applies_the_gradient_of_its_lookup() -> Result<()> {
    // Repeated IDs (their gradients add), IDs that collide in the compressed kinds, and an
    // out-of-vocabulary ID.
    let ids = [3u32, 17, 3, 42, 0, 99, 13, 23, 150];
    for mut t in all_kinds(OptimizerConfig::sgd(1.0), 5) {
        let name = t.kind();
        check_table_gradients(name, t.as_mut(), |t, train| t.lookup(&ids, train))?;
    }
    Ok(())
}

#[test]
fn pooling_passes_the_gradient_of_each_bag_to_its_rows() -> Result<()> {
    use super::pooling::{Pooling, padded_lookup, pool, pooled_lookup};
    use rec_data::{Column, Padded};
    // Bags with a repeated ID, an empty bag and a single ID.
    let column = Column::Ragged {
        values: vec![3, 17, 3, 42, 5, 5, 5, 8],
        offsets: vec![0, 3, 3, 4, 8],
    };
    let padded = Padded {
        ids: vec![3, 17, 3, 0, 0, 0, 42, 0, 0, 5, 5, 8],
        mask: vec![1., 1., 1., 0., 0., 0., 1., 0., 0., 1., 1., 1.],
        lengths: vec![3, 0, 1, 3],
        max_len: 3,
    };
    for pooling in [Pooling::Sum, Pooling::Mean] {
        for mut t in all_kinds(OptimizerConfig::sgd(1.0), 6) {
            let name = format!("{} {pooling:?}", t.kind());
            check_table_gradients(&name, t.as_mut(), |t, train| {
                pooled_lookup(t, &column, pooling, train, &Device::Cpu)
            })?;
            check_table_gradients(&format!("{name} padded"), t.as_mut(), |t, train| {
                let (x, mask) = padded_lookup(t, &padded, train, &Device::Cpu)?;
                pool(&x, &mask, pooling)
            })?;
        }
    }
    Ok(())
}
