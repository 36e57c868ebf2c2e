//! From the `[data]` section to a train/valid/test [`Split`].

use std::path::PathBuf;

use anyhow::{Context, Result, bail};
use rec_data::{InteractionSchema, MovieLens100k, Protocol, Split};

use crate::config::DataConfig;

/// Loads the data set and cuts the protocol's split, fetching MovieLens-100k if needed.
///
/// - `ml-100k`: protocols `ctr`, `rating`, `cold`, `ms`, `seq`.
/// - `csv`: options `path` (the file) and `schema` (an [`InteractionSchema`] TOML file);
///   a seeded random 80/10/10 split.
pub fn load_split(cfg: &DataConfig) -> Result<Split> {
    let split = match cfg.dataset.as_str() {
        "ml-100k" => {
            let protocol: Protocol = cfg
                .protocol
                .parse()
                .map_err(|e: String| anyhow::anyhow!("[data] protocol: {e}"))?;
            let ds = MovieLens100k::load_or_fetch()?;
            ds.protocol(protocol, cfg.seed)?
        }
        "csv" => {
            let get = |k: &str| -> Result<PathBuf> {
                cfg.options
                    .get(k)
                    .and_then(toml::Value::as_str)
                    .map(PathBuf::from)
                    .with_context(|| format!("[data.options] needs `{k}` for the csv dataset"))
            };
            let (path, schema_path) = (get("path")?, get("schema")?);
            for k in cfg.options.keys() {
                if k != "path" && k != "schema" {
                    bail!(
                        "[data.options] has unknown key `{k}` for the csv dataset (path, schema)"
                    );
                }
            }
            let schema = InteractionSchema::from_toml_file(&schema_path)?;
            let table = schema.read_file(&path)?.encode(None)?;
            table.random_split(&path.display().to_string(), cfg.seed, [0.8, 0.1, 0.1])
        }
        other => bail!("[data] dataset `{other}` is unknown (ml-100k, csv)"),
    };
    match &cfg.tasks {
        None => Ok(split),
        Some(tasks) => {
            let names: Vec<&str> = tasks.iter().map(String::as_str).collect();
            split
                .with_tasks(&names)
                .map_err(|e| anyhow::anyhow!("[data] tasks: {e}"))
        }
    }
}
