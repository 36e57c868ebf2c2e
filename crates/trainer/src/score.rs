//! A trained model back from its checkpoint, and scores for the rows of a new file.
//!
//! [`restore`] rebuilds the model a checkpoint holds: it reads the run's configuration from the
//! checkpoint, loads the run's data as training did (a CSV run with the vocabularies of the
//! checkpoint; data that changed since is refused), builds the model and loads its state. It
//! is what `cargo xtask eval` and `cargo xtask predict` start with.
//!
//! [`score_file`] then scores the rows of another file of a CSV run, read with the run's
//! interaction schema: IDs never seen in training take each table's rule for unknown IDs, an
//! unknown scenario is an error naming its line, and label or rating columns may be left out
//! (with a header): when the file has the labels of every task the model predicts, it is also
//! evaluated.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use candle_core::Device;
use rec_data::interactions::{InteractionSchema, RawColumn, Vocabs};
use rec_data::{Batch, OOV, Split};
use rec_nn::Model;

use crate::{Config, Evaluation, checkpoint, registry, train};

/// A model restored from a checkpoint, with what it was trained on.
pub struct Restored {
    /// The checkpoint directory.
    pub dir: PathBuf,
    /// The run's configuration, as the checkpoint holds it.
    pub config: Config,
    /// The run's data, split as in training.
    pub split: Split,
    /// The vocabularies of a CSV run (`None` for the other data sets).
    pub vocabs: Option<Vocabs>,
    /// The model, with the checkpoint's parameters.
    pub model: Box<dyn Model>,
}

/// The checkpoint a path names: a checkpoint directory itself, or a run directory (or its
/// `checkpoints/`), whose `best` checkpoint is taken, else its `latest`, else (a run killed
/// before its first pointer was written) its newest complete one.
pub fn resolve(p: &Path) -> Result<PathBuf> {
    if p.join("manifest.json").exists() {
        return Ok(p.to_path_buf());
    }
    let root = if p.join("checkpoints").is_dir() {
        p.join("checkpoints")
    } else {
        p.to_path_buf()
    };
    for pointer in ["best", "latest"] {
        if let Some(d) = checkpoint::resolve_pointer(&root, pointer)? {
            return Ok(d);
        }
    }
    if let Some(d) = checkpoint::newest_complete(&root) {
        tracing::warn!(
            checkpoint = %d.display(),
            "no `best` or `latest` pointer: using the newest complete checkpoint"
        );
        return Ok(d);
    }
    // A directory of runs (the quickstart's `runs/quickstart` holds `full` and `cel`).
    let mut runs: Vec<String> = std::fs::read_dir(p)
        .into_iter()
        .flatten()
        .flatten()
        .filter(|e| e.path().join("checkpoints").is_dir())
        .map(|e| e.path().display().to_string())
        .collect();
    runs.sort();
    let hint = if runs.is_empty() {
        String::new()
    } else {
        format!(" (it holds the runs {})", runs.join(", "))
    };
    bail!(
        "{} is neither a checkpoint nor a run directory with checkpoints{hint}",
        p.display()
    )
}

/// Rebuilds the model of the checkpoint `dir` on the CPU (see the module docs).
pub fn restore(dir: &Path) -> Result<Restored> {
    let device = Device::Cpu;
    let (tensors, state) = checkpoint::read(dir, &device)?;
    let text = state["config"]
        .as_str()
        .with_context(|| format!("{} holds no configuration", dir.display()))?;
    let mut config = Config::from_saved_toml(text, &format!("in {}", dir.display()))?;
    // Its lines are those of a string inside the checkpoint's state file: no place to point at.
    config.origin = Default::default();
    // A csv run is rebuilt with the vocabularies it was trained with.
    let vocabs = train::vocabs_for(&config, &state, dir)?;
    let split = crate::data::load_split_for(&config, vocabs.as_ref())?;
    // Data that changed since training would rebuild another split (and other ID counts).
    train::check_data(&state, &train::data_fingerprint(&split), dir)?;
    let mut model = registry::rebuild_model(&config, &split.schema, &split.train, &device)?;
    train::load_training_state(model.as_mut(), None, &tensors, &state["state"])?;
    Ok(Restored {
        dir: dir.to_path_buf(),
        config,
        split,
        vocabs,
        model,
    })
}

/// The scores of a file's rows.
#[derive(Debug, Clone, PartialEq)]
pub struct Scores {
    /// The model's task names, one column of `values` each.
    pub tasks: Vec<String>,
    /// The line of the file each row came from.
    pub lines: Vec<u64>,
    /// `values[t][i]`: task `t` on row `i` (a probability for a binary task, the predicted
    /// value for a regression task).
    pub values: Vec<Vec<f32>>,
    /// Per ID field (user, item, categorical, multi-hot) with any, the number of rows with an
    /// ID outside the checkpoint's vocabulary (for a bag, any of its IDs).
    pub unknown_ids: Vec<(String, usize)>,
    /// The metrics on the file, when it has the labels of every task the model predicts.
    pub evaluation: Option<Evaluation>,
}

/// Scores the rows of `input` with a model [`restore`]d from a CSV run, reading the file with
/// `schema` (default: the run's own `[data.options] schema`). See the module docs.
pub fn score_file(r: &mut Restored, input: &Path, schema: Option<&Path>) -> Result<Scores> {
    if r.config.data.dataset != "csv" {
        bail!(
            "{} was trained on the `{}` data set: scoring a file needs a run on your own CSV data \
             (dataset = \"csv\"); `cargo xtask eval` evaluates this one on its own splits",
            r.dir.display(),
            r.config.data.dataset
        );
    }
    let Some(vocabs) = &r.vocabs else {
        bail!(
            "{} carries no vocabularies (a checkpoint of an older version): the file's IDs \
             cannot be matched to the model's rows",
            r.dir.display()
        );
    };
    let schema_path = match schema {
        Some(p) => p.to_path_buf(),
        None => r
            .config
            .data
            .options
            .get("schema")
            .and_then(|v| v.as_str())
            .map(PathBuf::from)
            .context("the run's configuration names no interaction schema: give one")?,
    };
    let full = InteractionSchema::from_toml_file(&schema_path).with_context(|| {
        if schema.is_none() && schema_path.is_relative() {
            format!(
                "the run's interaction schema {} (named by its configuration; a relative path is \
                 read from the current directory: run from where the run was trained, or give \
                 --schema)",
                schema_path.display()
            )
        } else {
            format!("the interaction schema {}", schema_path.display())
        }
    })?;
    let bytes = std::fs::read(input).with_context(|| format!("cannot read {}", input.display()))?;
    let names = full.header_names(&bytes, input)?;
    let (reading, labelled) = full.for_scoring(&names);
    let raw = reading.read_bytes(&bytes, input)?;
    if raw.is_empty() {
        bail!("{}: no data rows to score", input.display());
    }
    let enc = raw.encode(Some(vocabs))?;
    let model_schema = r.model.schema().clone();
    let fields = |s: &rec_data::Schema| -> Vec<(String, rec_data::FieldKind)> {
        s.fields.iter().map(|f| (f.name.clone(), f.kind)).collect()
    };
    let (file_fields, model_fields) = (fields(&enc.batch.schema), fields(&model_schema));
    if file_fields != model_fields {
        // The kinds as the configuration's roles write them (`"multi_hot"`, `{"dense":...}`).
        let show = |v: Vec<(String, rec_data::FieldKind)>| {
            v.iter()
                .map(|(n, k)| {
                    let k = serde_json::to_string(k).unwrap_or_default();
                    format!("{n} ({})", k.trim_matches('"'))
                })
                .collect::<Vec<_>>()
                .join(", ")
        };
        bail!(
            "{} read with {} gives the fields {}, but the model was trained on {}: score it with \
             the run's own schema",
            input.display(),
            schema_path.display(),
            show(file_fields),
            show(model_fields)
        );
    }
    let n = enc.batch.len();
    let tasks: Vec<String> = model_schema.tasks.iter().map(|t| t.name.clone()).collect();
    // Each model task's labels by name (a run may keep a subset of the file's tasks); a task
    // whose column the file lacks gets NaN, which no metric counts.
    let file_tasks = &enc.batch.schema;
    let labelled = labelled && tasks.iter().all(|t| file_tasks.task_index(t).is_some());
    let labels: Vec<Vec<f32>> = tasks
        .iter()
        .map(|t| match file_tasks.task_index(t) {
            Some(i) if labelled => enc.batch.labels[i].clone(),
            _ => vec![f32::NAN; n],
        })
        .collect();
    let batch = Batch {
        schema: Arc::new(model_schema),
        columns: enc.batch.columns.clone(),
        labels,
        weights: None,
        slices: Vec::new(),
    };
    batch.validate().map_err(|e| anyhow::anyhow!("{e}"))?;
    let bs = r.config.train.eval_batch_size;
    let values = crate::eval::predict_all(r.model.as_mut(), &batch, bs)?;
    let evaluation = if labelled {
        Some(crate::eval::evaluate_predictions(
            &batch.schema,
            &batch,
            &values,
        )?)
    } else {
        None
    };
    let mut unknown_ids = Vec::new();
    for (spec, col) in raw.described() {
        let Some(v) = vocabs.fields.get(&spec.name) else {
            continue;
        };
        let unseen = |s: &String| !s.is_empty() && v.get(s) == OOV;
        let k = match col {
            RawColumn::Tokens(t) => t.iter().filter(|s| unseen(s)).count(),
            // A bag counts once when any of its tokens is unseen.
            RawColumn::TokenLists { values, offsets } => offsets
                .windows(2)
                .filter(|w| values[w[0] as usize..w[1] as usize].iter().any(unseen))
                .count(),
            _ => 0,
        };
        if k > 0 {
            unknown_ids.push((spec.name.clone(), k));
        }
    }
    Ok(Scores {
        tasks,
        lines: raw.lines,
        values,
        unknown_ids,
        evaluation,
    })
}

impl Scores {
    /// The scores as CSV: a header `line,<task>...`, then one row per scored row.
    pub fn to_csv(&self) -> String {
        let mut out = String::from("line");
        for t in &self.tasks {
            out.push(',');
            // A task is named after its column, which may hold the delimiter or a quote.
            if t.contains([',', '"', '\n', '\r']) {
                out.push_str(&format!("\"{}\"", t.replace('"', "\"\"")));
            } else {
                out.push_str(t);
            }
        }
        out.push('\n');
        for (i, line) in self.lines.iter().enumerate() {
            out.push_str(&line.to_string());
            for v in &self.values {
                out.push(',');
                out.push_str(&v[i].to_string());
            }
            out.push('\n');
        }
        out
    }
}
