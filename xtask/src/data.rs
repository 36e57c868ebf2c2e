//! `cargo xtask data ...`: fetch data sets and print their statistics.

use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Subcommand, ValueEnum};
use rec_data::Split;
use rec_data::fetch::data_dir;
use rec_data::movielens::{
    self, AGE_BAND_NAMES, DEFAULT_SEED, FetchOptions, LIKE_THRESHOLD, Obtained, Protocol, age_band,
};
use serde_json::{Value, json};

/// A data set the project knows how to obtain.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum Dataset {
    /// MovieLens-100k (GroupLens zip, else the RecBole 1.2.1 wheel from PyPI).
    #[value(name = "ml-100k")]
    Ml100k,
}

/// Data commands.
#[derive(Subcommand)]
pub enum DataCommand {
    /// Download and verify a data set into the data directory (REC_DATA_DIR, an absolute path;
    /// else $XDG_CACHE_HOME/rec-rs; else ~/.cache/rec-rs). Does nothing when a verified copy is
    /// already there.
    Fetch {
        /// The data set.
        dataset: Dataset,
    },
    /// Print users, items, ratings, positive rate and the split sizes of every protocol
    /// (fetching the data set first if needed).
    Stats {
        /// The data set.
        dataset: Dataset,
        /// Seed of the protocol splits.
        #[arg(long, default_value_t = DEFAULT_SEED)]
        seed: u64,
        /// Also print everything as one JSON object on the last line.
        #[arg(long)]
        json: bool,
    },
    /// Generate synthetic e-commerce logs with planted ground truth (Parquet + ground-truth
    /// JSON); see docs/synthetic-data.md.
    Synth(crate::synth::Args),
}

/// Runs a data command.
pub fn run(cmd: DataCommand) -> Result<()> {
    match cmd {
        DataCommand::Fetch {
            dataset: Dataset::Ml100k,
        } => fetch_ml100k(),
        DataCommand::Stats {
            dataset: Dataset::Ml100k,
            seed,
            json,
        } => stats_ml100k(seed, json),
        DataCommand::Synth(args) => crate::synth::run(args),
    }
}

pub fn fetch_ml100k() -> Result<()> {
    let root = data_dir()?;
    let t = Instant::now();
    let r = movielens::fetch(&root, &FetchOptions::default())?;
    let secs = t.elapsed().as_secs_f64();
    for s in &r.skipped {
        println!("skipped: {s}");
    }
    let how = match r.obtained {
        Obtained::AlreadyPresent => "already present and verified; nothing to do",
        Obtained::LocalZip => "extracted from the ml-100k.zip found there",
        Obtained::GroupLens => "downloaded from GroupLens",
        Obtained::RecBoleWheel => "extracted from the recbole 1.2.1 wheel (PyPI)",
    };
    println!(
        "ml-100k ({} layout) in {}: {how} ({secs:.1} s)",
        r.layout.name(),
        r.dir.display()
    );
    for (file, sha) in &r.verified {
        println!("  sha256 {sha}  {file}");
    }
    Ok(())
}

fn stats_ml100k(seed: u64, json_out: bool) -> Result<()> {
    let root = data_dir()?;
    let t = Instant::now();
    let (ds, report) =
        movielens::load(&root, Some(&FetchOptions::default())).context("loading MovieLens-100k")?;
    let load_ms = t.elapsed().as_secs_f64() * 1e3;
    if let Some(f) = &report.fetch {
        eprintln!("fetched ml-100k first ({:?})", f.obtained);
    }
    println!(
        "ml-100k ({} layout, {}): loaded {} in {load_ms:.1} ms",
        report.layout.name(),
        report.dir.display(),
        if report.from_cache {
            "from the binary cache"
        } else {
            "by parsing the text files"
        }
    );
    if let Some(note) = &report.cache_note {
        println!("  {note}");
    }
    let mut bands = [0usize; 3];
    for &u in &ds.ratings.user {
        bands[age_band(ds.users[u as usize].age) as usize] += 1;
    }
    let pos = ds.positive_rate(LIKE_THRESHOLD);
    println!("users          {}", ds.num_users());
    println!("items          {}", ds.num_items());
    println!("ratings        {}", ds.num_ratings());
    println!("positive rate  {pos} (rating >= {LIKE_THRESHOLD})");
    println!(
        "age bands      {} ratings ({})",
        join(&bands, " / "),
        AGE_BAND_NAMES.join(" / ")
    );
    println!("protocols (seed {seed}):");
    let mut protocols = serde_json::Map::new();
    for p in Protocol::ALL {
        let s = ds.protocol(p, seed)?;
        let mut obj = json!({
            "train": s.train.len(), "valid": s.valid.len(), "test": s.test.len(),
        });
        let mut line = format!(
            "  {:<9} train {:>6}  valid {:>5}  test {:>5}",
            s.name,
            s.train.len(),
            s.valid.len(),
            s.test.len()
        );
        match p {
            Protocol::Cold => {
                let cold = ds.cold_users(seed).len();
                obj["cold_users"] = json!(cold);
                line += &format!("  cold users {cold}");
                for (name, b) in [("valid", &s.valid), ("test", &s.test)] {
                    let sl = slice_counts(b);
                    line += &format!(
                        "\n            {name} slices: cold_users {} cold_items {} warm {}",
                        sl["cold_users"], sl["cold_items"], sl["warm"]
                    );
                    obj[format!("{name}_slices")] = sl;
                }
            }
            Protocol::MultiScenario => {
                let mut sc = serde_json::Map::new();
                for (name, b) in s.parts() {
                    let c = scenario_counts(&s, b);
                    line += &format!(
                        "\n            {name} by scenario ({}): {}",
                        s.scenario_names.join(" / "),
                        join(&c, " / ")
                    );
                    sc.insert(name.into(), json!(c));
                }
                obj["scenarios"] = Value::Object(sc);
                obj["scenario_names"] = json!(s.scenario_names);
            }
            Protocol::Seq => {
                let e = s.seq.as_ref().expect("P-SEQ has extras");
                line += &format!(
                    "\n            ranking: target + {} negatives per valid/test sample; \
                     transfer probe users {} train / {} test",
                    e.ranking_test.num_negatives,
                    e.users.probe_train.len(),
                    e.users.probe_test.len()
                );
                obj["ranking_negatives"] = json!(e.ranking_test.num_negatives);
                obj["probe_users"] = json!([e.users.probe_train.len(), e.users.probe_test.len()]);
            }
            _ => {}
        }
        println!("{line}");
        protocols.insert(s.name.clone(), obj);
    }
    if json_out {
        let out = json!({
            "dataset": "ml-100k",
            "layout": report.layout.name(),
            "from_cache": report.from_cache,
            "load_ms": load_ms,
            "users": ds.num_users(),
            "items": ds.num_items(),
            "ratings": ds.num_ratings(),
            "positive_rate": pos,
            "age_band_ratings": bands,
            "seed": seed,
            "protocols": protocols,
        });
        println!("{out}");
    }
    Ok(())
}

fn slice_counts(b: &rec_data::Batch) -> Value {
    let mut m = serde_json::Map::new();
    for s in &b.slices {
        m.insert(s.name.clone(), json!(s.mask.iter().filter(|&&x| x).count()));
    }
    Value::Object(m)
}

fn scenario_counts(s: &Split, b: &rec_data::Batch) -> Vec<usize> {
    let mut c = vec![0usize; s.schema.num_scenarios];
    for x in b.scenarios() {
        c[x as usize] += 1;
    }
    c
}

fn join(xs: &[usize], sep: &str) -> String {
    xs.iter()
        .map(|x| x.to_string())
        .collect::<Vec<_>>()
        .join(sep)
}
