//! The TOML configuration of a training run.
//!
//! Every key except `[model] name` (and an early-stopping `metric`) has a documented default,
//! so a typo never silently falls back to one: unknown keys in the typed sections are rejected
//! with the file, line and key named; the free-form tables (`[model.params]`, `[data.options]`,
//! `[embeddings]`) are checked by the model, data set or table they configure when the run is
//! built, with an error naming the section and the key, and the file and line where the
//! configuration came from a file ([`Origin`]).
//!
//! ```toml
//! [data]
//! dataset = "ml-100k"    # ml-100k | synthetic | csv
//! protocol = "ctr"       # ml-100k: ctr | rating | cold | ms | seq; synthetic: ctr | rating | ms | ecom
//! seed = 42
//!
//! [model]
//! name = "deepfm"
//! [model.params]         # model-specific hyperparameters (see each model's docs)
//! dim = 16
//!
//! [embeddings.default]   # table used for every ID field unless overridden
//! kind = "full"
//! [embeddings.fields.item_id]
//! kind = "hashed"
//! rows = 200
//!
//! [optimizer.dense]
//! kind = "adam"
//! lr = 0.001
//!
//! [train]
//! epochs = 20
//! batch_size = 2048
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

/// A whole run: data, model, embeddings, optimizers, loop and output.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Which data set and protocol (default: ml-100k, ctr, seed 42).
    #[serde(default)]
    pub data: DataConfig,
    /// Which model, with its hyperparameters.
    pub model: ModelConfig,
    /// Which embedding table each ID field gets.
    #[serde(default)]
    pub embeddings: EmbeddingsConfig,
    /// Optimizers of dense parameters and of embedding rows.
    #[serde(default)]
    pub optimizer: OptimizerConfig,
    /// The training loop.
    #[serde(default)]
    pub train: TrainConfig,
    /// Where results go.
    #[serde(default)]
    pub output: OutputConfig,
    /// Where this configuration was read from, to give a file and line to the errors found
    /// after parsing (`[model.params]` and `[embeddings]` are read when the model is built).
    #[serde(skip)]
    pub origin: Origin,
}

/// The file (or other source) and text a [`Config`] was parsed from. Not part of what the
/// configuration says: it is not saved, and any two compare equal.
#[derive(Debug, Clone, Default)]
pub struct Origin(Option<std::sync::Arc<(String, String)>>);

impl PartialEq for Origin {
    fn eq(&self, _: &Origin) -> bool {
        true
    }
}

impl Origin {
    /// The source `name` (e.g. a file's path) of the TOML `text`.
    pub fn new(name: &str, text: &str) -> Origin {
        Origin(Some(std::sync::Arc::new((name.into(), text.into()))))
    }

    /// Where the key at `path` (e.g. `["model", "params", "dim"]`) is written, as
    /// ` (FILE, line N)`; where the text lacks the whole path, the line of its deepest part
    /// that it has (e.g. the `[model.params]` header for a missing key). Empty for a
    /// configuration made in code.
    pub fn at(&self, path: &[&str]) -> String {
        self.place(path)
            .map(|p| format!(" ({p})"))
            .unwrap_or_default()
    }

    /// [`at`](Self::at) without the parentheses: `FILE, line N` (or `FILE`), `None` for a
    /// configuration made in code.
    pub fn place(&self, path: &[&str]) -> Option<String> {
        let (name, text) = self.0.as_deref()?;
        Some(match key_line(text, path) {
            Some(line) => format!("{name}, line {line}"),
            None => name.clone(),
        })
    }
}

/// The line (from 1) of the deepest key of `path` written in the TOML `text`.
fn key_line(text: &str, path: &[&str]) -> Option<usize> {
    use toml::de::{DeTable, DeValue};
    let doc = DeTable::parse(text).ok()?;
    let mut table = doc.get_ref();
    let mut found = None;
    for part in path {
        let Some((key, value)) = table.get_key_value(*part) else {
            break;
        };
        found = Some(key.span().start);
        match value.get_ref() {
            DeValue::Table(t) => table = t,
            _ => break,
        }
    }
    found.map(|at| text[..at.min(text.len())].matches('\n').count() + 1)
}

/// Data set and evaluation protocol.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DataConfig {
    /// `ml-100k` (default), `synthetic` or `csv`.
    #[serde(default = "default_dataset")]
    pub dataset: String,
    /// Protocol name: `ctr` (default), `rating`, `cold`, `ms`, `seq` (ml-100k); `ctr`,
    /// `rating`, `ms`, `ecom` (synthetic); ignored for `csv`.
    #[serde(default = "default_protocol")]
    pub protocol: String,
    /// Seed of the split, the shuffling, the initialisation and dropout. Default 42.
    #[serde(default = "default_seed")]
    pub seed: u64,
    /// Keep only these tasks of the protocol, in this order (e.g. `["like"]`). Default: all.
    #[serde(default)]
    pub tasks: Option<Vec<String>>,
    /// Data-set-specific options (e.g. the synthetic preset, or the CSV path and its schema).
    #[serde(default)]
    pub options: toml::Table,
}

impl Default for DataConfig {
    fn default() -> Self {
        Self {
            dataset: default_dataset(),
            protocol: default_protocol(),
            seed: default_seed(),
            tasks: None,
            options: toml::Table::new(),
        }
    }
}

/// Model name and hyperparameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelConfig {
    /// Registered model name, e.g. `deepfm` (see `cargo xtask train --list-models`).
    pub name: String,
    /// Model-specific hyperparameters; each model rejects keys it does not know.
    #[serde(default)]
    pub params: toml::Table,
}

/// Embedding table per ID field.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbeddingsConfig {
    /// Table for every field not listed in `fields`. Default `{ kind = "full" }`.
    #[serde(default)]
    pub default: Option<toml::Table>,
    /// Per-field overrides, keyed by schema field name; with model `saml`, also
    /// `"{field}@scenario"` for that field's scenario tables (e.g.
    /// `[embeddings.fields."item_id@scenario"] kind = "hashed"`).
    #[serde(default)]
    pub fields: BTreeMap<String, toml::Table>,
    /// Initial values of every table row. Default `{ kind = "normal", mean = 0, std = 0.05 }`.
    #[serde(default)]
    pub init: Option<rec_nn::init::Init>,
}

/// Optimizers, each `{ kind = "sgd" | "adagrad" | "adam" | "adamw", lr = ..., ... }` (see
/// [`rec_nn::optim::OptimizerConfig`] for every key and default).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OptimizerConfig {
    /// Optimizer of dense parameters. Default Adam, lr 0.001.
    #[serde(default = "default_opt")]
    pub dense: rec_nn::optim::OptimizerConfig,
    /// Row-wise optimizer of embedding tables. Default Adam, lr 0.001.
    #[serde(default = "default_opt")]
    pub sparse: rec_nn::optim::OptimizerConfig,
}

impl Default for OptimizerConfig {
    fn default() -> Self {
        Self {
            dense: default_opt(),
            sparse: default_opt(),
        }
    }
}

fn default_opt() -> rec_nn::optim::OptimizerConfig {
    rec_nn::optim::OptimizerConfig::adam(1e-3)
}

/// Which validation metric decides early stopping and the best checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EarlyStopping {
    /// Metric name as it appears in the report, e.g. `auc`, `rmse`, `logloss`.
    pub metric: String,
    /// Task whose metric is watched. Default: the first task of the schema.
    #[serde(default)]
    pub task: Option<String>,
    /// Epochs without improvement before stopping. Default 3.
    #[serde(default = "default_patience")]
    pub patience: usize,
    /// `max` or `min`. Default: `min` for loss-like metrics (logloss, mse, rmse, mae), else `max`.
    #[serde(default)]
    pub mode: Option<String>,
}

impl EarlyStopping {
    /// True when larger values of the watched metric are better.
    pub fn maximize(&self) -> bool {
        match self.mode.as_deref() {
            Some("max") => true,
            Some(_) => false,
            None => !matches!(
                self.metric.as_str(),
                "logloss" | "mse" | "rmse" | "mae" | "loss"
            ),
        }
    }
}

/// The training loop.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainConfig {
    /// Passes over the training set. Default 10.
    #[serde(default = "default_epochs")]
    pub epochs: usize,
    /// Samples per training step. Default 2048.
    #[serde(default = "default_batch")]
    pub batch_size: usize,
    /// Samples per evaluation batch. Default 16384.
    #[serde(default = "default_eval_batch")]
    pub eval_batch_size: usize,
    /// Early stopping on a validation metric; `None` trains all epochs and keeps the last.
    #[serde(default)]
    pub early_stopping: Option<EarlyStopping>,
    /// Also write a checkpoint every this many steps inside an epoch (one is always written at
    /// the end of every epoch). Default: only at epoch ends.
    #[serde(default)]
    pub checkpoint_every_steps: Option<u64>,
    /// Stop after this many steps (for quick runs and tests). Default: no limit.
    #[serde(default)]
    pub max_steps: Option<u64>,
    /// How many of the newest checkpoints to keep (at least 1); the best one is kept as well
    /// when it is older. Default 2.
    #[serde(default = "default_keep")]
    pub keep_checkpoints: usize,
    /// Show a progress bar on a terminal. Default true.
    #[serde(default = "yes")]
    pub progress: bool,
}

impl Default for TrainConfig {
    fn default() -> Self {
        Self {
            epochs: default_epochs(),
            batch_size: default_batch(),
            eval_batch_size: default_eval_batch(),
            early_stopping: None,
            checkpoint_every_steps: None,
            max_steps: None,
            keep_checkpoints: default_keep(),
            progress: true,
        }
    }
}

/// Where the run writes its checkpoints, logs and report.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputConfig {
    /// Run directory. Default `runs/<model>-<dataset>-<protocol>-seed<seed>`.
    #[serde(default)]
    pub dir: Option<PathBuf>,
}

fn default_dataset() -> String {
    "ml-100k".into()
}
fn default_protocol() -> String {
    "ctr".into()
}
fn default_seed() -> u64 {
    42
}
fn default_patience() -> usize {
    3
}
fn default_epochs() -> usize {
    10
}
fn default_batch() -> usize {
    2048
}
fn default_eval_batch() -> usize {
    16384
}
fn default_keep() -> usize {
    2
}
fn yes() -> bool {
    true
}

/// The line (from 1) and, where it can be told, the key of a TOML error in `text`.
///
/// A wrong value's message names the type, not the key: the key is read from the line. A
/// value inside a table that is read as a whole (a tagged table such as `[optimizer.dense]`, or
/// an inline table) gets the table's span (a table's header, an inline table's braces): the
/// key is then the one line of that table whose value is the one the message quotes, when
/// exactly one is.
pub(crate) fn error_location(
    text: &str,
    span: std::ops::Range<usize>,
    message: &str,
) -> (usize, Option<String>) {
    let start = span.start.min(text.len());
    let line = text[..start].matches('\n').count() + 1;
    let quoted = quoted_value(message);
    if let Some(q) = &quoted {
        let end = span.end.clamp(start, text.len());
        let first = line - 1;
        let header = text
            .lines()
            .nth(first)
            .is_some_and(|l| l.trim_start().starts_with('['));
        // A table's span is its header alone: its body runs to the next header.
        let last = if header {
            text.lines()
                .enumerate()
                .skip(first + 1)
                .find(|(_, l)| l.trim_start().starts_with('['))
                .map_or(usize::MAX - 1, |(i, _)| i - 1)
        } else {
            text[..end].matches('\n').count()
        };
        let mut hits = Vec::new();
        for (i, l) in text.lines().enumerate().take(last + 1).skip(first) {
            let l = l.trim();
            if l.starts_with('#') || l.starts_with('[') {
                continue;
            }
            let Some((k, v)) = l.split_once('=') else {
                continue;
            };
            let Ok(t) = toml::from_str::<toml::Table>(&format!("v = {}", v.trim())) else {
                continue;
            };
            let mut keys = Vec::new();
            leaf_keys(&t["v"], q, k.trim(), &mut keys);
            hits.extend(keys.into_iter().map(|k| (i + 1, k)));
        }
        if let [(l, k)] = hits.as_slice()
            && (*l != line || text.lines().nth(line - 1).is_some_and(|t| t.contains('{')))
        {
            return (*l, Some(format!("{}{k}", table_prefix(text, *l))));
        }
    }
    let key = text
        .lines()
        .nth(line - 1)
        .map(str::trim)
        // Not a comment, a table header or an inline table (whose outer key would not be the
        // one at fault).
        .filter(|l| !l.starts_with('#') && !l.starts_with('[') && !l.contains('{'))
        .and_then(|l| l.split_once('='))
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && !message.contains(&format!("`{k}`")));
    (
        line,
        key.map(|k| format!("{}{k}", table_prefix(text, line))),
    )
}

/// "a.b." for a line (from 1) under the table header `[a.b]` (or `[[a.b]]`), "" at the root.
fn table_prefix(text: &str, line: usize) -> String {
    text.lines()
        .take(line)
        .map(str::trim)
        .filter(|l| l.starts_with('['))
        .last()
        .map(|h| {
            let name = h
                .split(']')
                .next()
                .unwrap_or("")
                .trim_start_matches('[')
                .trim();
            format!("{name}.")
        })
        .unwrap_or_default()
}

/// The value serde's "invalid type" or "invalid value" message quotes, as a TOML value.
fn quoted_value(message: &str) -> Option<toml::Value> {
    let rest = message
        .strip_prefix("invalid type: ")
        .or_else(|| message.strip_prefix("invalid value: "))?;
    if let Some(r) = rest.strip_prefix("string ") {
        // serde writes the string as Rust's debug form, which TOML reads back for plain text.
        let end = r.rfind(", expected")?;
        let t = toml::from_str::<toml::Table>(&format!("v = {}", &r[..end])).ok()?;
        return t.get("v").cloned();
    }
    for (prefix, kind) in [("integer `", 0), ("floating point `", 1), ("boolean `", 2)] {
        if let Some(r) = rest.strip_prefix(prefix) {
            let v = &r[..r.find('`')?];
            return match kind {
                0 => v.parse().ok().map(toml::Value::Integer),
                1 => v.parse().ok().map(toml::Value::Float),
                _ => v.parse().ok().map(toml::Value::Boolean),
            };
        }
    }
    None
}

/// The dotted keys under `key` (itself included) whose value is `target`.
fn leaf_keys(v: &toml::Value, target: &toml::Value, key: &str, out: &mut Vec<String>) {
    match v {
        toml::Value::Table(t) => {
            for (k, x) in t {
                leaf_keys(x, target, &format!("{key}.{k}"), out);
            }
        }
        toml::Value::Array(a) => {
            for x in a {
                leaf_keys(x, target, key, out);
            }
        }
        x if x == target => out.push(key.to_string()),
        _ => {}
    }
}

impl Config {
    /// Parses a configuration from TOML text and checks its value ranges
    /// ([`validate`](Self::validate)); `origin` names the source in errors.
    pub fn from_toml(text: &str, origin: &str) -> Result<Config> {
        let cfg = Self::from_saved_toml(text, origin)?;
        cfg.validate()
            .with_context(|| format!("invalid configuration {origin}"))?;
        Ok(cfg)
    }

    /// Parses the configuration a checkpoint was trained with, without checking value ranges
    /// again: a range refused since (e.g. `patience = 0`) must not make an old run impossible
    /// to evaluate or to compare with before a resume. Unknown keys and wrong types are still
    /// errors.
    pub fn from_saved_toml(text: &str, origin: &str) -> Result<Config> {
        let mut cfg: Config = toml::from_str(text).map_err(|e| {
            let pos = e
                .span()
                .map(|s| match error_location(text, s, e.message()) {
                    (line, Some(k)) => format!(", line {line}, key `{k}`"),
                    (line, None) => format!(", line {line}"),
                })
                .unwrap_or_default();
            anyhow::anyhow!("invalid configuration {origin}{pos}: {}", e.message())
        })?;
        cfg.origin = Origin::new(origin, text);
        Ok(cfg)
    }

    /// Reads and parses a TOML file.
    pub fn from_file(path: &Path) -> Result<Config> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read configuration {}", path.display()))?;
        Self::from_toml(&text, &path.display().to_string())
    }

    /// A configuration with every default, for `model` on `dataset`/`protocol`.
    pub fn new(model: &str, dataset: &str, protocol: &str) -> Config {
        Config {
            data: DataConfig {
                dataset: dataset.into(),
                protocol: protocol.into(),
                ..DataConfig::default()
            },
            model: ModelConfig {
                name: model.into(),
                params: toml::Table::new(),
            },
            embeddings: EmbeddingsConfig::default(),
            optimizer: OptimizerConfig::default(),
            train: TrainConfig::default(),
            output: OutputConfig::default(),
            origin: Origin::default(),
        }
    }

    /// Checks value ranges that serde cannot express.
    pub fn validate(&self) -> Result<()> {
        anyhow::ensure!(self.train.epochs > 0, "train.epochs must be at least 1");
        anyhow::ensure!(
            self.train.max_steps != Some(0),
            "train.max_steps must be at least 1 (leave it out for no limit)"
        );
        anyhow::ensure!(
            self.train.checkpoint_every_steps != Some(0),
            "train.checkpoint_every_steps must be at least 1 (leave it out to checkpoint at \
             epoch ends only)"
        );
        anyhow::ensure!(
            self.train.batch_size > 0,
            "train.batch_size must be positive"
        );
        anyhow::ensure!(
            self.train.eval_batch_size > 0,
            "train.eval_batch_size must be positive"
        );
        for (name, o) in [
            ("optimizer.dense", &self.optimizer.dense),
            ("optimizer.sparse", &self.optimizer.sparse),
        ] {
            o.validate().with_context(|| name.to_string())?;
        }
        anyhow::ensure!(
            self.train.keep_checkpoints > 0,
            "train.keep_checkpoints must be at least 1 (the latest checkpoint is what a resume \
             continues from)"
        );
        if let Some(es) = &self.train.early_stopping {
            anyhow::ensure!(
                es.patience > 0,
                "train.early_stopping.patience must be at least 1 (the number of epochs without \
                 improvement before training stops)"
            );
            anyhow::ensure!(
                matches!(es.mode.as_deref(), None | Some("max") | Some("min")),
                "train.early_stopping.mode must be `max` or `min`"
            );
        }
        Ok(())
    }

    /// The run directory: `output.dir`, or `runs/<model>-<dataset>-<protocol>-seed<seed>`.
    pub fn run_dir(&self) -> PathBuf {
        self.output.dir.clone().unwrap_or_else(|| {
            PathBuf::from("runs").join(format!(
                "{}-{}-{}-seed{}",
                self.model.name, self.data.dataset, self.data.protocol, self.data.seed
            ))
        })
    }

    /// The configuration as TOML text (saved in every run directory and checkpoint).
    pub fn to_toml(&self) -> Result<String> {
        Ok(toml::to_string(self)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example at the top of this module is a configuration that loads, with model
    /// parameters DeepFM accepts.
    #[test]
    fn the_module_example_loads() {
        let src = include_str!("config.rs");
        let example: String = src
            .lines()
            .map_while(|l| l.strip_prefix("//!"))
            .skip_while(|l| l.trim() != "```toml")
            .skip(1)
            .take_while(|l| l.trim() != "```")
            .map(|l| format!("{}\n", l.strip_prefix(' ').unwrap_or(l)))
            .collect();
        assert!(example.contains("[model.params]"), "{example}");
        let c = Config::from_toml(&example, "module example").unwrap();
        assert_eq!((c.model.name.as_str(), c.train.epochs), ("deepfm", 20));
        let p: rec_nn::models::DeepFmConfig = toml::Value::Table(c.model.params.clone())
            .try_into()
            .unwrap();
        assert_eq!(p.dim, 16);
    }

    #[test]
    fn minimal_config_gets_documented_defaults() {
        let c = Config::from_toml("[model]\nname = \"deepfm\"\n", "test").unwrap();
        assert_eq!(c.data.dataset, "ml-100k");
        assert_eq!(c.data.protocol, "ctr");
        assert_eq!(c.data.seed, 42);
        assert_eq!(c.train.batch_size, 2048);
        assert_eq!(c.optimizer.dense.kind(), "adam");
        assert_eq!(c.run_dir(), PathBuf::from("runs/deepfm-ml-100k-ctr-seed42"));
    }

    #[test]
    fn unknown_key_is_rejected_with_line_and_name() {
        let text = "[model]\nname = \"fm\"\n\n[train]\nepochs = 3\nbatchsize = 10\n";
        let e = Config::from_toml(text, "run.toml").unwrap_err().to_string();
        assert!(e.contains("run.toml"), "{e}");
        assert!(e.contains("line 6"), "{e}");
        assert!(e.contains("batchsize"), "{e}");
    }

    #[test]
    fn zero_epochs_steps_or_checkpoint_interval_are_refused_by_name() {
        for (key, table) in [
            ("train.epochs", "epochs = 0"),
            ("train.max_steps", "max_steps = 0"),
            ("train.checkpoint_every_steps", "checkpoint_every_steps = 0"),
            ("train.keep_checkpoints", "keep_checkpoints = 0"),
            (
                "train.early_stopping.patience",
                "[train.early_stopping]\nmetric = \"auc\"\npatience = 0",
            ),
        ] {
            let text = format!("[model]\nname = \"fm\"\n[train]\n{table}\n");
            let e = format!("{:#}", Config::from_toml(&text, "x.toml").unwrap_err());
            assert!(e.contains(key) && e.contains("x.toml"), "{e}");
        }
        let ok = "[model]\nname = \"fm\"\n[train]\nepochs = 1\nmax_steps = 1\ncheckpoint_every_steps = 1\n";
        Config::from_toml(ok, "x.toml").unwrap();
        // A checkpoint's own configuration is read as saved, even with a range refused since.
        let old = "[model]\nname = \"fm\"\n[train]\nkeep_checkpoints = 0\n";
        assert!(Config::from_toml(old, "x.toml").is_err());
        assert_eq!(
            Config::from_saved_toml(old, "x.toml")
                .unwrap()
                .train
                .keep_checkpoints,
            0
        );
        assert!(Config::from_saved_toml("[model]\nname = 1\n", "x.toml").is_err());
    }

    #[test]
    fn wrong_type_is_rejected() {
        let e = Config::from_toml("[model]\nname = \"fm\"\n[train]\nepochs = \"many\"\n", "x")
            .unwrap_err()
            .to_string();
        assert!(e.contains("line 4"), "{e}");
        assert!(e.contains("key `train.epochs`"), "{e}");
        // No key is guessed from a comment (a root-level error points at line 1), nor the
        // outer key of an inline table.
        let e = Config::from_toml("# a = comment\n[train]\nepochs = 3\n", "x")
            .unwrap_err()
            .to_string();
        assert!(!e.contains("key `"), "{e}");
        let e = Config::from_toml(
            "[model]\nname = \"fm\"\n[optimizer]\ndense = { kind = \"adam\", lr = \"x\" }\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 4") && !e.contains("key `dense`"), "{e}");
        // Inside the inline table, the value the message quotes names its key.
        assert!(e.contains("key `optimizer.dense.lr`"), "{e}");
        // A tagged table is read as a whole, so the error's span is the table's: the line and
        // key are those of the one value the message quotes.
        let e = Config::from_toml(
            "[model]\nname = \"fm\"\n[optimizer.dense]\nkind = \"adam\"\nlr = \"fast\"\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 5, key `optimizer.dense.lr`"), "{e}");
        let e = Config::from_toml(
            "[model]\nname = \"fm\"\n[optimizer.dense]\nkind = \"adam\"\nlr = true\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 5, key `optimizer.dense.lr`"), "{e}");
        // Two lines holding the quoted value: no guess, the table's line.
        let e = Config::from_toml(
            "[model]\nname = \"fm\"\n[optimizer.dense]\nkind = \"adam\"\nlr = \"x\"\nweight_decay = \"x\"\n",
            "x",
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("line 3") && !e.contains("key `"), "{e}");
        let e = Config::from_toml(
            "[model]\nname = \"fm\"\n[optimizer.dense]\nkind = \"adamax\"\nlr = 0.1\n",
            "x",
        )
        .unwrap_err();
        assert!(format!("{e:#}").contains("adamax"), "{e:#}");
    }

    #[test]
    fn round_trips_through_toml() {
        let mut c = Config::new("mf", "ml-100k", "rating");
        c.train.early_stopping = Some(EarlyStopping {
            metric: "rmse".into(),
            task: None,
            patience: 2,
            mode: None,
        });
        let back = Config::from_toml(&c.to_toml().unwrap(), "round trip").unwrap();
        assert_eq!(back, c);
        assert!(!back.train.early_stopping.unwrap().maximize());
    }
}
