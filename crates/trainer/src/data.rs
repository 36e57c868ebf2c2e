//! From the `[data]` section to a train/valid/test [`Split`].

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rec_data::{InteractionSchema, MovieLens100k, Protocol, Split, Vocabs};

use crate::config::DataConfig;

/// Loads the data set and cuts the protocol's split, fetching MovieLens-100k if needed.
///
/// - `ml-100k`: protocols `ctr`, `rating`, `cold`, `ms`, `seq`.
/// - `synthetic`: the seeded e-commerce generator ([`rec_data::synth`]), trained on days
///   0..D-2 and tested on day D-1 (days counted from 0); a seeded 10% of the training samples is held out for
///   validation. Protocols `ctr` (click), `rating` (the planted R = U (C S) plus noise), `ms`
///   (click, with the country as scenario field), `ecom` (the DUPN tasks ctr, l2r, ppp, fifp
///   mixed, each sample labelled for its own task). Options: `preset` (`tiny`, `small`
///   (default), `large`), `config` (a generator TOML file instead of a preset), `users`,
///   `items`, `days`, `seed` (of the generator; default the preset's), `history` (length of the
///   behaviour sequence of `ctr`/`ms`, default 0), `max_history` (`ecom`, default 50),
///   `train_from_day` (`ecom`: train on days `train_from_day..D-1` only, for the daily update
///   that fine-tunes yesterday's checkpoint on the new day; default 0).
/// - `csv`: options `path` (the file) and `schema` (an [`InteractionSchema`] TOML file);
///   a seeded random 80/10/10 split. The vocabularies (raw ID to index) are built from the
///   file; [`load_split_with`] encodes with given ones instead.
pub fn load_split(cfg: &DataConfig) -> Result<Split> {
    load_split_with(cfg, None)
}

/// [`load_split_with`] for a run's configuration: an error in `[data]` or `[data.options]`
/// also gives the file and line of the key it names (see [`crate::config::Origin`]).
pub fn load_split_for(cfg: &crate::Config, vocabs: Option<&Vocabs>) -> Result<Split> {
    load_split_with(&cfg.data, vocabs).map_err(|e| {
        let msg = e.to_string();
        let Some((section, rest)) = ["[data.options]", "[data]"]
            .into_iter()
            .find_map(|p| msg.strip_prefix(p).map(|r| (p, r)))
        else {
            return e;
        };
        if e.chain().count() > 1 {
            return e;
        }
        // The key is the first word after the section (`[data.options] history is ...`,
        // `[data] protocol ...`) or the first quoted one (`has unknown key `k``).
        let options = section == "[data.options]";
        let known = |k: &str| {
            if options {
                cfg.data.options.contains_key(k)
            } else {
                ["dataset", "protocol", "seed"].contains(&k)
            }
        };
        let first = rest.trim_start().split([' ', ':']).next().unwrap_or("");
        let quoted = rest.split('`').nth(1).unwrap_or("");
        let key = [first, quoted].into_iter().find(|k| known(k));
        let mut path = vec!["data"];
        if options {
            path.push("options");
        }
        path.extend(key);
        match cfg.origin.place(&path) {
            Some(place) => anyhow::anyhow!("{place}: {msg}"),
            None => e,
        }
    })
}

/// [`load_split`], with the `csv` data set encoded by `vocabs` when given (a checkpoint's,
/// see [`crate::train::carried_vocabs`]): every raw ID keeps the index it had when the
/// checkpoint was trained, IDs the checkpoint never saw map to the out-of-vocabulary index 0,
/// and an unknown scenario is an error naming file, line and value. The other data sets' vocabularies are fixed by the
/// data set and its seed, so `vocabs` does not apply to them.
pub fn load_split_with(cfg: &DataConfig, vocabs: Option<&Vocabs>) -> Result<Split> {
    let split = match cfg.dataset.as_str() {
        "ml-100k" => {
            if let Some(k) = cfg.options.keys().next() {
                bail!("[data.options] has unknown key `{k}`: the ml-100k dataset takes no options");
            }
            let protocol: Protocol = cfg
                .protocol
                .parse()
                .map_err(|e: String| anyhow::anyhow!("[data] protocol: {e}"))?;
            let ds = MovieLens100k::load_or_fetch()?;
            ds.protocol(protocol, cfg.seed)?
        }
        "csv" => {
            let get = |k: &str| -> Result<PathBuf> {
                let v = cfg
                    .options
                    .get(k)
                    .with_context(|| format!("[data.options] needs `{k}` for the csv dataset"))?;
                v.as_str().map(PathBuf::from).with_context(|| {
                    format!("[data.options] {k} must be a path as a string, got {v}")
                })
            };
            // The default protocol stands for "none": a CSV file is split at random.
            if cfg.protocol != "ctr" {
                bail!(
                    "[data] protocol `{}`: the csv data set has no protocols (its split is a \
                     seeded random 80/10/10 one, its tasks are the schema's); leave `protocol` \
                     out",
                    cfg.protocol
                );
            }
            let (path, schema_path) = (get("path")?, get("schema")?);
            for k in cfg.options.keys() {
                if k != "path" && k != "schema" {
                    bail!(
                        "[data.options] has unknown key `{k}` for the csv dataset (path, schema)"
                    );
                }
            }
            let schema = InteractionSchema::from_toml_file(&schema_path)?;
            let raw = schema.read_file(&path)?;
            if raw.is_empty() {
                bail!(
                    "{}: no data rows (only a header?); nothing to train on",
                    path.display()
                );
            }
            let table = raw.encode(vocabs)?;
            let split = table.random_split(&path.display().to_string(), cfg.seed, [0.8, 0.1, 0.1]);
            // A run on a part with no rows would report empty metrics as if it had tested.
            if let Some((part, _)) = split.parts().into_iter().find(|(_, b)| b.is_empty()) {
                bail!(
                    "{}: the random 80/10/10 split of its {} data rows leaves the {part} part \
                     empty; a file needs at least 8 rows",
                    path.display(),
                    table.batch.len()
                );
            }
            split
        }
        "synthetic" => synthetic_split(cfg)?,
        other => bail!("[data] dataset `{other}` is unknown (ml-100k, synthetic, csv)"),
    };
    let split = match &cfg.tasks {
        None => split,
        Some(tasks) => {
            let names: Vec<&str> = tasks.iter().map(String::as_str).collect();
            split
                .with_tasks(&names)
                .map_err(|e| anyhow::anyhow!("[data] tasks: {e}"))?
        }
    };
    with_evaluation_negatives(split, cfg.seed)
}

/// The task of P-SEQ whose rows are all positive (the item the user rated next).
pub const NEXT_ITEM: &str = "next_item";

/// Where a split's rows of [`NEXT_ITEM`] get their negatives (P-SEQ with that task): the item
/// table and the sampler of items each user never rated. Training draws one negative per row
/// in every step ([`crate::fit`]); the validation and test rows got theirs once, at loading.
pub struct NextItemSampling<'a> {
    items: &'a rec_data::split::ItemTable,
    sampler: &'a rec_data::ranking::NegativeSampler,
}

impl NextItemSampling<'_> {
    /// `batch` followed by one negative row per row, drawn from `seed` alone.
    pub fn add(&self, batch: &rec_data::Batch, seed: u64) -> Result<rec_data::Batch> {
        use rand::SeedableRng;
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        rec_data::ranking::with_negatives(batch, self.items, self.sampler, NEXT_ITEM, 1, &mut rng)
            .map_err(|e| anyhow::anyhow!("next_item negatives: {e}"))
    }
}

/// The [`NextItemSampling`] of `split`, if its rows of [`NEXT_ITEM`] need negatives.
pub fn next_item_sampling(split: &Split) -> Option<NextItemSampling<'_>> {
    split.schema.task_index(NEXT_ITEM)?;
    Some(NextItemSampling {
        items: split.items.as_ref()?,
        sampler: &split.seq.as_ref()?.sampler,
    })
}

/// One seeded negative per validation and test row of [`NEXT_ITEM`], so that its AUC and
/// LogLoss are those of the positive against a sampled unrated item (labels 0 there; the
/// negative rows have no label for the other tasks). Other splits are returned as they are.
fn with_evaluation_negatives(mut split: Split, seed: u64) -> Result<Split> {
    let Some(s) = next_item_sampling(&split) else {
        return Ok(split);
    };
    let mix = rec_data::mix_seed;
    let (valid, test) = (
        s.add(&split.valid, mix(seed, 0x4E56))?,
        s.add(&split.test, mix(seed, 0x4E54))?,
    );
    split.valid = valid;
    split.test = test;
    Ok(split)
}

const SYNTH_OPTIONS: [&str; 10] = [
    "preset",
    "config",
    "users",
    "items",
    "days",
    "seed",
    "history",
    "max_history",
    "negative_rate",
    "train_from_day",
];

fn synthetic_split(cfg: &DataConfig) -> Result<Split> {
    use rec_data::synth::{CtrOptions, CtrTarget, DupnOptions, SynthConfig, SynthLog};
    let opts = &cfg.options;
    for k in opts.keys() {
        if !SYNTH_OPTIONS.contains(&k.as_str()) {
            bail!(
                "[data.options] has unknown key `{k}` for the synthetic dataset ({})",
                SYNTH_OPTIONS.join(", ")
            );
        }
    }
    let int = |k: &str| -> Result<Option<u64>> {
        match opts.get(k) {
            None => Ok(None),
            Some(v) => v
                .as_integer()
                .filter(|i| *i >= 0)
                .map(|i| Some(i as u64))
                .with_context(|| format!("[data.options] {k} must be a non-negative integer")),
        }
    };
    if !["ctr", "rating", "ms", "ecom"].contains(&cfg.protocol.as_str()) {
        bail!(
            "[data] protocol `{}` is unknown for the synthetic dataset (ctr, rating, ms, ecom)",
            cfg.protocol
        );
    }
    // Each protocol's own history option: a key of the other one would be silently ignored.
    if cfg.protocol == "ecom" && opts.contains_key("history") {
        bail!(
            "[data.options] history is for the ctr, rating and ms protocols; `ecom` takes \
             max_history (default 50)"
        );
    }
    if cfg.protocol != "ecom" && opts.contains_key("max_history") {
        bail!(
            "[data.options] max_history is for the ecom protocol; `{}` takes history (default 0)",
            cfg.protocol
        );
    }
    if opts.contains_key("config") && opts.contains_key("preset") {
        bail!(
            "[data.options] has both config (a generator file) and preset: the file sets every \
             size itself, so give one of them"
        );
    }
    let mut gen_cfg = match (
        opts.get("config").and_then(toml::Value::as_str),
        opts.get("preset"),
    ) {
        (Some(path), _) => SynthConfig::from_toml_file(std::path::Path::new(path))?,
        (None, Some(p)) => SynthConfig::preset(
            p.as_str()
                .context("[data.options] preset must be a string")?,
        )?,
        (None, None) => SynthConfig::small(),
    };
    if let Some(u) = int("users")? {
        gen_cfg.users = u;
    }
    let int32 = |k: &str| -> Result<Option<u32>> {
        int(k)?
            .map(u32::try_from)
            .transpose()
            .with_context(|| format!("[data.options] {k} must be at most {}", u32::MAX))
    };
    if let Some(i) = int32("items")? {
        gen_cfg.items = i;
    }
    if let Some(d) = int32("days")? {
        gen_cfg.days = d;
    }
    if let Some(s) = int("seed")? {
        gen_cfg.seed = s;
    }
    let log = SynthLog::generate(&gen_cfg)?;
    let history = int("history")?.unwrap_or(0) as usize;
    let negative_rate = match opts.get("negative_rate") {
        None => 1.0,
        // An integer is a number too (`negative_rate = 1`).
        Some(v) => v
            .as_float()
            .or_else(|| v.as_integer().map(|i| i as f64))
            .filter(|f| (0.0..=1.0).contains(f) && *f > 0.0)
            .context("[data.options] negative_rate must be a number in (0, 1]")?
            as f32,
    };
    let train_from_day = int("train_from_day")?.unwrap_or(0);
    if opts.contains_key("train_from_day") {
        if cfg.protocol != "ecom" {
            bail!("[data.options] train_from_day applies to the `ecom` protocol only");
        }
        if train_from_day + 1 >= gen_cfg.days as u64 {
            bail!(
                "[data.options] train_from_day = {train_from_day} leaves no training day: days \
                 0..{} train and day {} is the test day",
                gen_cfg.days.saturating_sub(2),
                gen_cfg.days.saturating_sub(1)
            );
        }
    }
    let (name, schema, train, test) = match cfg.protocol.as_str() {
        "ctr" | "ms" | "rating" => {
            let target = if cfg.protocol == "rating" {
                CtrTarget::Rating
            } else {
                CtrTarget::Click
            };
            let s = log.ctr_split(&CtrOptions {
                target,
                history,
                negative_rate,
                seed: cfg.seed,
                ..CtrOptions::default()
            });
            let name = if cfg.protocol == "ms" {
                "P-MS (synthetic)"
            } else {
                "P-ECOM CTR"
            };
            (name, s.train.schema.clone(), s.train, s.test)
        }
        "ecom" => {
            let s = log.dupn_split(&DupnOptions {
                max_history: int("max_history")?.unwrap_or(50) as usize,
                ctr_negative_rate: negative_rate,
                seed: cfg.seed,
                train_from_day: train_from_day as u16,
                ..DupnOptions::default()
            });
            ("P-ECOM", s.schema.clone(), s.train.joint(), s.test.joint())
        }
        other => bail!(
            "[data] protocol `{other}` is unknown for the synthetic dataset (ctr, rating, ms, ecom)"
        ),
    };
    // Hold out a seeded 10% of the training samples for validation (early stopping).
    let order = rec_data::epoch_order(train.len(), cfg.seed, u64::MAX, true);
    let cut = train.len() / 10;
    let mut valid_rows = order[..cut].to_vec();
    let mut train_rows = order[cut..].to_vec();
    valid_rows.sort_unstable();
    train_rows.sort_unstable();
    Ok(Split {
        name: name.to_string(),
        seed: cfg.seed,
        schema,
        valid: train.gather(&valid_rows),
        train: train.gather(&train_rows),
        test,
        vocabs: Default::default(),
        scenario_names: Vec::new(),
        items: None,
        seq: None,
    })
}
