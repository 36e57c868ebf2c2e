//! Tests on the real MovieLens-100k. They need `cargo xtask data fetch ml-100k` to have run
//! (CI does it first) and fail, never pass, when the data is absent.

mod common;

use std::collections::HashSet;
use std::path::Path;

use common::{ml100k, write_atomic, write_grouplens};
use rec_data::movielens::{Layout, MovieLens100k, Protocol, age_band};

#[test]
fn figures_of_the_protocol_card() {
    let (ds, _) = ml100k();
    assert_eq!(ds.num_users(), 943);
    assert_eq!(ds.num_items(), 1682);
    assert_eq!(ds.num_ratings(), 100_000);
    assert_eq!(ds.positive_rate(4), 0.55375);
    let mut bands = [0usize; 3];
    for &u in &ds.ratings.user {
        bands[age_band(ds.users[u as usize].age) as usize] += 1;
    }
    assert_eq!(bands, [26_551, 35_444, 38_005]);
    let off = ds.user_offsets();
    assert!((0..943).all(|u| off[u + 1] - off[u] >= 20));
    assert_eq!(ds.item_counts().iter().filter(|&&c| c <= 5).count(), 384);
    // Normalisation details visible in the real data.
    let item = |id: u32| &ds.items[id as usize - 1];
    assert_eq!(
        (item(1).title.as_str(), item(1).year),
        ("Toy Story", Some(1995))
    );
    assert_eq!(
        (item(267).title.as_str(), item(267).year),
        ("unknown", None)
    );
    assert_eq!(item(1412).year, None);
    assert_eq!(ds.items.iter().filter(|i| i.year.is_none()).count(), 2);
}

#[test]
fn both_readers_give_identical_data_sets() {
    let (ds, layout) = ml100k();
    let root = rec_data::fetch::data_dir().unwrap();
    let dir = rec_data::movielens::dataset_dir(&root);
    let tmp = tempfile::tempdir().unwrap();
    // Read the fetched layout directly (not through the cache), write the other one from it,
    // read that back with the other reader.
    let (fetched, other) = match layout {
        Layout::Atomic => {
            let a = MovieLens100k::read_atomic(&dir, "ml-100k").unwrap();
            write_grouplens(&a, tmp.path());
            (a, MovieLens100k::read_grouplens(tmp.path()).unwrap())
        }
        Layout::GroupLens => {
            let g = MovieLens100k::read_grouplens(&dir).unwrap();
            write_atomic(&g, tmp.path(), "ml-100k");
            (
                g,
                MovieLens100k::read_atomic(tmp.path(), "ml-100k").unwrap(),
            )
        }
    };
    assert_eq!(fetched, other);
    assert_eq!(fetched, ds, "the binary cache must hold what the files say");
}

#[test]
fn the_writers_round_trip_the_fixtures() {
    let fixtures = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data");
    let ds = MovieLens100k::read_atomic(&fixtures.join("atomic"), "tiny").unwrap();
    let tmp = tempfile::tempdir().unwrap();
    write_grouplens(&ds, tmp.path());
    assert_eq!(MovieLens100k::read_grouplens(tmp.path()).unwrap(), ds);
    write_atomic(&ds, tmp.path(), "x");
    assert_eq!(MovieLens100k::read_atomic(tmp.path(), "x").unwrap(), ds);
}

#[test]
fn protocol_sizes() {
    let (ds, _) = ml100k();
    let seed = 42;
    for p in [Protocol::Ctr, Protocol::Rating, Protocol::MultiScenario] {
        let s = ds.protocol(p, seed).unwrap();
        assert_eq!(
            (s.train.len(), s.valid.len(), s.test.len()),
            (80_000, 10_000, 10_000),
            "{p}"
        );
    }
    let ms = ds.protocol(Protocol::MultiScenario, seed).unwrap();
    let mut per_scenario = [0usize; 3];
    for (_, b) in ms.parts() {
        for s in b.scenarios() {
            per_scenario[s as usize] += 1;
        }
    }
    assert_eq!(per_scenario, [26_551, 35_444, 38_005]);

    let cold = ds.protocol(Protocol::Cold, seed).unwrap();
    let cold_users: HashSet<u32> = ds.cold_users(seed).into_iter().collect();
    assert_eq!(cold_users.len(), 189);
    let off = ds.user_offsets();
    let cold_later: usize = cold_users
        .iter()
        .map(|&u| off[u as usize + 1] - off[u as usize] - 5)
        .sum();
    let count = |b: &rec_data::Batch, s: &str| b.slice(s).unwrap().iter().filter(|&&x| x).count();
    assert_eq!(count(&cold.test, "cold_users"), cold_later);
    assert_eq!(count(&cold.valid, "cold_users"), 0);
    assert_eq!(
        cold.train.len() + cold.valid.len() + cold.test.len(),
        100_000
    );
    // Figures printed by `cargo xtask data stats ml-100k` for seed 42.
    assert_eq!(
        (cold.train.len(), cold.valid.len(), cold.test.len()),
        (65_942, 8_101, 25_957)
    );
    assert_eq!(
        (count(&cold.test, "cold_items"), count(&cold.test, "warm")),
        (641, 8_037)
    );

    let seq = ds.protocol(Protocol::Seq, seed).unwrap();
    assert_eq!(
        (seq.train.len(), seq.valid.len(), seq.test.len()),
        (100_000 - 7 * 943, 943, 943)
    );
    let e = seq.seq.as_ref().unwrap();
    assert_eq!(e.ranking_test.len(), 943);
    assert_eq!(e.ranking_test.num_negatives, 100);
    assert_eq!(e.users.len(), 943);
    // Popularity classes are roughly balanced on training samples (ties allow some skew).
    let mut counts = [0usize; 7];
    for &c in seq.train.label("popularity").unwrap() {
        counts[c as usize] += 1;
    }
    let share = |c: usize| c as f64 / seq.train.len() as f64;
    assert!(
        counts.iter().all(|&c| share(c) > 0.10 && share(c) < 0.18),
        "{counts:?}"
    );
}

#[test]
fn same_seed_same_split_on_the_real_data() {
    let (ds, _) = ml100k();
    let a = ds.protocol(Protocol::Ctr, 7).unwrap();
    let b = ds.protocol(Protocol::Ctr, 7).unwrap();
    let c = ds.protocol(Protocol::Ctr, 8).unwrap();
    assert_eq!(a.test.columns, b.test.columns);
    assert_eq!(a.test.labels, b.test.labels);
    assert_ne!(a.test.columns, c.test.columns);
}
