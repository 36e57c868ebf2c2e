//! The protocols' invariants, on a small random data set in the MovieLens shape.

use std::collections::{HashMap, HashSet};

use proptest::prelude::*;

use super::testutil::tiny;
use super::*;
use crate::batch::{Batch, Column};
use crate::iter::BatchIter;

/// (user, item) -> rating-row of the data set; tiny() has no repeated pair.
fn row_of(ds: &MovieLens100k) -> HashMap<(u32, u32), usize> {
    (0..ds.num_ratings())
        .map(|r| ((ds.ratings.user[r] + 1, ds.ratings.item[r] + 1), r))
        .collect()
}

/// The data-set rows of a rating-protocol batch.
fn rows(ds: &MovieLens100k, b: &Batch) -> Vec<usize> {
    let m = row_of(ds);
    let u = b.ids("user_id").unwrap();
    let i = b.ids("item_id").unwrap();
    u.iter().zip(i).map(|(&u, &i)| m[&(u, i)]).collect()
}

fn same_batch(a: &Batch, b: &Batch) -> bool {
    a.columns == b.columns
        && a.labels.iter().zip(&b.labels).all(|(x, y)| {
            x.len() == y.len() && x.iter().zip(y).all(|(p, q)| p.to_bits() == q.to_bits())
        })
        && a.slices == b.slices
}

#[test]
fn ctr_is_a_seeded_80_10_10_partition_with_correct_features() {
    let ds = tiny(1);
    let s = ds.protocol(Protocol::Ctr, 5).unwrap();
    s.schema.validate().unwrap();
    let n = ds.num_ratings();
    let sizes = [s.train.len(), s.valid.len(), s.test.len()];
    assert_eq!(sizes[0], (n as f64 * 0.8).round() as usize);
    assert_eq!(sizes.iter().sum::<usize>(), n);
    let mut all: Vec<usize> = s.parts().iter().flat_map(|(_, b)| rows(&ds, b)).collect();
    all.sort_unstable();
    assert_eq!(all, (0..n).collect::<Vec<_>>());

    for (_, b) in s.parts() {
        b.validate().unwrap();
        for (k, &r) in rows(&ds, b).iter().enumerate() {
            let user = &ds.users[ds.ratings.user[r] as usize];
            let item = &ds.items[ds.ratings.item[r] as usize];
            let like = (ds.ratings.rating[r] >= 4) as u8 as f32;
            assert_eq!(b.label("like").unwrap()[k], like);
            assert_eq!(b.ids("age_band").unwrap()[k], age_band(user.age) + 1);
            assert_eq!(b.ids("year_bucket").unwrap()[k], year_bucket(item.year));
            let g = s.vocabs["gender"].token(b.ids("gender").unwrap()[k]);
            assert_eq!(g, Some(user.gender.code()));
            let o = s.vocabs["occupation"].token(b.ids("occupation").unwrap()[k]);
            assert_eq!(o, Some(user.occupation.as_str()));
            let genres: Vec<&str> = b
                .column("genres")
                .unwrap()
                .ragged_row(k)
                .unwrap()
                .iter()
                .map(|&x| s.vocabs["genres"].token(x).unwrap())
                .collect();
            let expected: Vec<&str> = item.genre_indices().map(|x| GENRES[x as usize]).collect();
            assert_eq!(genres, expected);
        }
    }

    // Same seed, same split and same mini-batches; another seed, another split.
    let again = ds.protocol(Protocol::Ctr, 5).unwrap();
    for ((_, a), (_, b)) in s.parts().iter().zip(again.parts()) {
        assert!(same_batch(a, b));
    }
    let x: Vec<Batch> = BatchIter::new(&s.train, 64, 9, 2, true).collect();
    let y: Vec<Batch> = BatchIter::new(&again.train, 64, 9, 2, true).collect();
    assert_eq!(x.len(), y.len());
    assert!(x.iter().zip(&y).all(|(a, b)| same_batch(a, b)));
    let other = ds.protocol(Protocol::Ctr, 6).unwrap();
    assert!(!same_batch(&s.train, &other.train));
}

#[test]
fn rating_and_ms_share_the_ctr_split() {
    let ds = tiny(2);
    let ctr = ds.protocol(Protocol::Ctr, 11).unwrap();
    let rating = ds.protocol(Protocol::Rating, 11).unwrap();
    let ms = ds.protocol(Protocol::MultiScenario, 11).unwrap();
    for ((_, a), ((_, b), (_, c))) in ctr
        .parts()
        .iter()
        .zip(rating.parts().iter().zip(ms.parts()))
    {
        assert_eq!(rows(&ds, a), rows(&ds, b));
        assert_eq!(rows(&ds, a), rows(&ds, c));
        for (k, &r) in rows(&ds, b).iter().enumerate() {
            assert_eq!(b.label("rating").unwrap()[k], ds.ratings.rating[r] as f32);
        }
        // The scenario is the age band, 0-based, and replaces the age-band field.
        let scen = c.scenarios();
        let bands = a.ids("age_band").unwrap();
        assert!(scen.iter().zip(bands).all(|(&s, &b)| s + 1 == b));
        assert_eq!(c.label("like"), a.label("like"));
        c.validate().unwrap();
    }
    assert_eq!(ms.schema.num_scenarios, 3);
    assert_eq!(ms.schema.scenario_field.as_deref(), Some("scenario"));
    assert!(ms.schema.field("age_band").is_none());
    assert_eq!(ms.scenario_names, ["<25", "25-34", ">=35"]);
    assert_eq!(rating.schema.tasks[0].kind, crate::TaskKind::Regression);
}

/// Checks every P-COLD rule for one seed.
fn check_cold(ds: &MovieLens100k, seed: u64) {
    let s = ds.protocol(Protocol::Cold, seed).unwrap();
    let ctr = ds.protocol(Protocol::Ctr, seed).unwrap();
    let cold: HashSet<u32> = ds.cold_users(seed).into_iter().collect();
    assert_eq!(cold.len(), (ds.num_users() as f64 * 0.2).round() as usize);
    let part_of = |b: &Batch| -> HashSet<usize> { rows(ds, b).into_iter().collect() };
    let (tr, va, te) = (part_of(&s.train), part_of(&s.valid), part_of(&s.test));
    let (ctr_tr, ctr_va, ctr_te) = (part_of(&ctr.train), part_of(&ctr.valid), part_of(&ctr.test));
    let off = ds.user_offsets();
    for u in 0..ds.num_users() {
        let user_rows: Vec<usize> = (off[u]..off[u + 1]).collect();
        if cold.contains(&(u as u32)) {
            // The 5 earliest in train, the rest in test, nothing in validation.
            let (early, late) = user_rows.split_at(COLD_K);
            assert!(early.iter().all(|r| tr.contains(r)));
            assert!(late.iter().all(|r| te.contains(r)));
            let last_early = early
                .iter()
                .map(|&r| ds.ratings.timestamp[r])
                .max()
                .unwrap();
            assert!(late.iter().all(|&r| ds.ratings.timestamp[r] >= last_early));
        } else {
            for r in user_rows {
                assert_eq!(tr.contains(&r), ctr_tr.contains(&r));
                assert_eq!(va.contains(&r), ctr_va.contains(&r));
                assert_eq!(te.contains(&r), ctr_te.contains(&r));
            }
        }
    }
    assert_eq!(tr.len() + va.len() + te.len(), ds.num_ratings());
    let mut train_count = vec![0usize; ds.num_items()];
    for &r in &tr {
        train_count[ds.ratings.item[r] as usize] += 1;
    }
    for b in [&s.valid, &s.test] {
        b.validate().unwrap();
        let (cu, ci, warm) = (
            b.slice("cold_users").unwrap(),
            b.slice("cold_items").unwrap(),
            b.slice("warm").unwrap(),
        );
        for (k, &r) in rows(ds, b).iter().enumerate() {
            assert_eq!(cu[k], cold.contains(&ds.ratings.user[r]));
            assert_eq!(ci[k], train_count[ds.ratings.item[r] as usize] <= COLD_K);
            assert_eq!(warm[k], !cu[k] && !ci[k]);
        }
    }
    assert!(s.valid.slice("cold_users").unwrap().iter().all(|&c| !c));
    assert_eq!(s.schema.tasks.len(), 2);
}

#[test]
fn cold_follows_the_card() {
    let ds = tiny(3);
    check_cold(&ds, 0);
    let only_rating = ds
        .protocol(Protocol::Cold, 0)
        .unwrap()
        .with_tasks(&["rating"])
        .unwrap();
    assert_eq!(only_rating.schema.tasks.len(), 1);
    assert_eq!(only_rating.test.labels.len(), 1);
    only_rating.test.validate().unwrap();
    assert_ne!(ds.cold_users(0), ds.cold_users(1));
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6, ..ProptestConfig::default() })]
    #[test]
    fn cold_invariants_hold_for_any_seed(seed: u64, data_seed in 0u64..4) {
        check_cold(&tiny(data_seed), seed);
    }
}

#[test]
fn seq_samples_histories_and_tasks() {
    let ds = tiny(4);
    let s = ds.protocol(Protocol::Seq, 8).unwrap();
    s.schema.validate().unwrap();
    let extras = s.seq.as_ref().unwrap();
    let off = ds.user_offsets();
    let n_user = |u: usize| off[u + 1] - off[u];
    let expected_train: usize = (0..ds.num_users()).map(|u| n_user(u) - 7).sum();
    assert_eq!(s.train.len(), expected_train);
    assert_eq!(s.valid.len(), ds.num_users());
    assert_eq!(s.test.len(), ds.num_users());

    // Every sample: history = the (up to 50) ratings right before the target, in time order.
    let hist_item = |b: &Batch, k: usize| {
        b.column("hist_item_id")
            .unwrap()
            .ragged_row(k)
            .unwrap()
            .to_vec()
    };
    for (name, b) in s.parts() {
        b.validate().unwrap();
        let users = b.ids("user_id").unwrap();
        let items = b.ids("item_id").unwrap();
        let mut k = 0;
        while k < b.len() {
            let u = users[k] as usize - 1;
            let urows: Vec<usize> = (off[u]..off[u + 1]).collect();
            let t = urows
                .iter()
                .position(|&r| ds.ratings.item[r] + 1 == items[k])
                .unwrap();
            match name {
                "valid" => assert_eq!(t, urows.len() - 2),
                "test" => assert_eq!(t, urows.len() - 1),
                _ => assert!(t >= MIN_HISTORY && t < urows.len() - 2),
            }
            let want: Vec<u32> = urows[t.saturating_sub(HISTORY_LEN)..t]
                .iter()
                .map(|&r| ds.ratings.item[r] + 1)
                .collect();
            assert_eq!(hist_item(b, k), want);
            let ratings = b.column("hist_rating").unwrap().ragged_row(k).unwrap();
            let want: Vec<u32> = urows[t.saturating_sub(HISTORY_LEN)..t]
                .iter()
                .map(|&r| ds.ratings.rating[r] as u32)
                .collect();
            assert_eq!(ratings, want.as_slice());
            let like = (ds.ratings.rating[urows[t]] >= 4) as u8 as f32;
            assert_eq!(b.label("like").unwrap()[k], like);
            k += 1;
        }
        // One aligned group: every hist_* column has the same offsets.
        let offs: Vec<&Vec<u32>> = s
            .schema
            .fields
            .iter()
            .filter(|f| f.group.as_deref() == Some("hist"))
            .map(|f| match b.column(&f.name).unwrap() {
                Column::Ragged { offsets, .. } => offsets,
                _ => unreachable!(),
            })
            .collect();
        assert_eq!(offs.len(), 6);
        assert!(offs.windows(2).all(|w| w[0] == w[1]));
        assert!(b.label("next_item").unwrap().iter().all(|&x| x == 1.0));
        assert!(
            b.label("popularity")
                .unwrap()
                .iter()
                .all(|&x| (0.0..7.0).contains(&x) && x.fract() == 0.0)
        );
    }
    // Held-out attributes are not inputs.
    for f in ["gender", "age_band", "occupation"] {
        assert!(s.schema.field(f).is_none());
    }

    // Popularity classes are roughly balanced on the training samples.
    let mut counts = [0usize; 7];
    for &c in s.train.label("popularity").unwrap() {
        counts[c as usize] += 1;
    }
    assert!(counts.iter().filter(|&&c| c > 0).count() >= 4, "{counts:?}");

    // Ranking candidates: the target first, then 100 distinct items the user never rated.
    for (rk, b) in [
        (&extras.ranking_valid, &s.valid),
        (&extras.ranking_test, &s.test),
    ] {
        assert_eq!(rk.len(), b.len());
        for c in 0..rk.len() {
            let (target, neg) = rk.case(c);
            let row = rk.rows[c] as usize;
            assert_eq!(target, b.ids("item_id").unwrap()[row]);
            assert_eq!(neg.len(), NUM_NEGATIVES);
            let u = b.ids("user_id").unwrap()[row] as usize - 1;
            let rated: HashSet<u32> = (off[u]..off[u + 1])
                .map(|r| ds.ratings.item[r] + 1)
                .collect();
            assert!(neg.iter().all(|i| !rated.contains(i) && *i >= 1));
            assert_eq!(neg.iter().collect::<HashSet<_>>().len(), NUM_NEGATIVES);
        }
        // The candidate batch puts each candidate's item features in the sample's row.
        let cb = rk.candidate_batch(b, s.items.as_ref().unwrap(), 0..2);
        assert_eq!(cb.len(), 2 * rk.width());
        assert_eq!(
            &cb.ids("item_id").unwrap()[..rk.width()],
            &rk.items[..rk.width()]
        );
        assert_eq!(cb.ids("user_id").unwrap()[1], b.ids("user_id").unwrap()[0]);
        let neg = rk.case(0).1[0] as usize;
        assert_eq!(
            cb.ids("year_bucket").unwrap()[1],
            year_bucket(ds.items[neg - 1].year)
        );
        assert_eq!(
            cb.column("hist_item_id").unwrap().ragged_row(1),
            Some(hist_item(b, 0).as_slice())
        );
        cb.validate().unwrap();
    }

    // Transfer table: one row per user, aligned with the valid/test rows, probe split 80/20.
    let a = &extras.users;
    assert_eq!(a.len(), ds.num_users());
    for k in 0..a.len() {
        assert_eq!(s.test.ids("user_id").unwrap()[a.row[k] as usize], a.user[k]);
        let user = &ds.users[a.user[k] as usize - 1];
        assert_eq!(a.gender[k], (user.gender == Gender::Male) as u32);
        assert_eq!(a.age_band[k], age_band(user.age));
        assert_eq!(a.occupations[a.occupation[k] as usize], user.occupation);
    }
    assert_eq!(a.probe_train.len(), 32);
    assert_eq!(a.probe_train.len() + a.probe_test.len(), a.len());
}

#[test]
fn seq_is_seeded_only_where_it_samples() {
    let ds = tiny(5);
    let a = ds.protocol(Protocol::Seq, 1).unwrap();
    let b = ds.protocol(Protocol::Seq, 1).unwrap();
    let c = ds.protocol(Protocol::Seq, 2).unwrap();
    let (ea, eb, ec) = (a.seq.unwrap(), b.seq.unwrap(), c.seq.unwrap());
    assert_eq!(ea.ranking_test, eb.ranking_test);
    assert_eq!(ea.users, eb.users);
    assert_ne!(ea.ranking_test.items, ec.ranking_test.items);
    assert_ne!(ea.users.probe_test, ec.users.probe_test);
    // The samples themselves follow time order, not the seed.
    assert!(same_batch(&a.train, &c.train));
    assert!(same_batch(&a.test, &c.test));
}

#[test]
fn training_negatives_for_next_item() {
    use crate::ranking::with_negatives;
    let ds = tiny(6);
    let s = ds.protocol(Protocol::Seq, 3).unwrap();
    let e = s.seq.as_ref().unwrap();
    let table = s.items.as_ref().unwrap();
    let batch = s.train.range(0, 50);
    let k = 4;
    let out = with_negatives(
        &batch,
        table,
        &e.sampler,
        "next_item",
        k,
        &mut crate::iter::rng(1, 2),
    )
    .unwrap();
    out.validate().unwrap();
    assert_eq!(out.len(), batch.len() * (1 + k));
    let again = with_negatives(
        &batch,
        table,
        &e.sampler,
        "next_item",
        k,
        &mut crate::iter::rng(1, 2),
    )
    .unwrap();
    assert!(same_batch(&out, &again));
    let other = with_negatives(
        &batch,
        table,
        &e.sampler,
        "next_item",
        k,
        &mut crate::iter::rng(1, 3),
    )
    .unwrap();
    assert!(!same_batch(&out, &other));

    let n = batch.len();
    let next = out.label("next_item").unwrap();
    let like = out.label("like").unwrap();
    assert!(next[..n].iter().all(|&x| x == 1.0) && next[n..].iter().all(|&x| x == 0.0));
    assert!(like[n..].iter().all(|x| x.is_nan()));
    assert_eq!(&like[..n], batch.label("like").unwrap());
    let off = ds.user_offsets();
    let users = out.ids("user_id").unwrap();
    let items = out.ids("item_id").unwrap();
    for r in n..out.len() {
        let u = users[r] as usize - 1;
        let rated: HashSet<u32> = (off[u]..off[u + 1])
            .map(|x| ds.ratings.item[x] + 1)
            .collect();
        assert!(!rated.contains(&items[r]));
        // The negative row keeps its source row's history.
        let src = (r - n) / k;
        assert_eq!(users[r], users[src]);
        assert_eq!(
            out.column("hist_item_id").unwrap().ragged_row(r),
            batch.column("hist_item_id").unwrap().ragged_row(src)
        );
    }
    assert!(
        with_negatives(
            &batch,
            table,
            &e.sampler,
            "nope",
            1,
            &mut crate::iter::rng(0, 0)
        )
        .is_err()
    );
}
