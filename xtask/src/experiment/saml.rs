//! `cargo xtask experiment saml`: SAML and the multi-scenario baselines.
//!
//! Data: ml-100k P-MS (scenario = age band, 3 scenarios) and the synthetic multi-country logs
//! (small preset, 5 countries of 50/25/15/7/3 % of the users with a planted scenario
//! similarity, behaviour sequences of up to 20 items; trained on days 0..D-2, tested on day D-1, days counted from 0).
//!
//! Models: Shared, Separate, MMoE, STAR and SAML, with the same embedding width, hidden widths
//! (SAML's auxiliary network; its branches are narrower, [`BRANCH_HIDDEN`]), optimizer (Adam for dense and sparse parameters), batch size, epoch budget and early
//! stopping on validation AUC (the best validation epoch is tested). Every model is tuned on the
//! same small grid (learning rate x dropout) on seed 1's validation AUC; the chosen point is then
//! trained with seeds 1..=n. The SAML ablations use SAML's chosen point; the full-width SAML
//! variant, the variant with branch layers factored as STAR's and the one with a head per
//! scenario on the auxiliary network are tuned like SAML. Opt-in models, trained only when
//! `--models` names them: the STAR ablations (at STAR's chosen point), SAML with its
//! global input normalized by scenario (`saml-scenario-norm`, tuned like SAML) and SAML with
//! one branch for every scenario (`saml-one-branch`, at SAML's point).
//!
//! Outputs: docs/results/saml.md (tables, claims with their numbers, cost), the learned and the
//! planted scenario-affinity heat maps (PNG), and with `--json` one JSON object on the last line:
//! `{"results": {dataset: {model: {slice: {metric: {mean, std, n, values}}}}}, "affinity": ...,
//! "claims": ...}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Context, Result};
use candle_core::Device;
use clap::Args;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rec_data::{BatchIter, Split, mix_seed};
use rec_nn::Ctx;
use rec_nn::embedding::DefaultTableFactory;
use rec_nn::optim::{DenseOptimizer, OptimizerConfig};
use rec_trainer::config::DataConfig;
use rec_trainer::experiment::{Results, Stat};
use rec_trainer::plot::heat_map;
use rec_trainer::registry::{build_model, id_counts, tables_config};
use rec_trainer::{Config, Evaluation, evaluate};
use scenario_saml::{Saml, SamlConfig};
use serde_json::json;

use super::cache::RunCache;

/// Options of `cargo xtask experiment saml`.
#[derive(Args, Debug, Default)]
pub struct SamlArgs {
    /// A reduced version (one seed, the tiny synthetic preset, few epochs, no tuning grid) that
    /// runs in minutes.
    #[arg(long)]
    pub quick: bool,
    /// Print the result tables as one JSON object on the last line.
    #[arg(long)]
    pub json: bool,
    /// Number of seeds (default 3; 1 with --quick).
    #[arg(long)]
    pub seeds: Option<usize>,
    /// Where the results page and plots go (with --quick left at docs/results, they go to
    /// target/quick-results instead, so the full runs' pages stay).
    #[arg(long, default_value = "docs/results")]
    pub out: PathBuf,
    /// Run only these data sets: ml-100k, synthetic (comma separated).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Recompute every training run instead of reusing the ones an earlier (interrupted) run
    /// of the same configuration stored in `target/experiments/saml/`.
    #[arg(long)]
    pub fresh: bool,
    /// Recompute about this percentage of the units reused from the cache (a fixed sample by
    /// key) with the code as it is now, and report on the page how far their stored results
    /// are from the new ones (the page still shows the stored ones).
    #[arg(long, default_value_t = 0, value_parser = clap::value_parser!(u32).range(0..=100))]
    pub verify: u32,
    /// Generate the synthetic log with this generator seed instead of the preset's and train
    /// and test every seed on it, each model keeping the learning rate and dropout its grid
    /// chose on the preset's log (a check on a log the choices never saw). Needs --out.
    #[arg(long)]
    pub synthetic_seed: Option<u64>,
    /// Train only these models (labels as on the page, comma separated; an ablation needs the
    /// model whose chosen point it uses: `saml` for SAML's, `star` for STAR's). Also the way
    /// to train the opt-in models (`star-no-partitioned-norm`, `star-no-aux-net`,
    /// `star-plain-layers`, `star-no-scenario-parts`, `saml-scenario-norm`,
    /// `saml-one-branch`). Needs --out.
    #[arg(long, value_delimiter = ',')]
    pub models: Vec<String>,
}

const DATASETS: [&str; 2] = ["ml-100k", "synthetic"];
const BASELINES: [&str; 4] = ["shared", "separate", "mmoe", "star"];

/// Embedding width and hidden widths every model shares.
const DIM: usize = 16;
const HIDDEN: [usize; 2] = [128, 64];
/// SAML's branch widths (`branch_hidden`): the widest halving of [`HIDDEN`] that keeps SAML's
/// training step within 2.5x Shared's with 3 scenarios (`cargo bench -p rec-benches --bench
/// saml`, no behaviour sequence: [64, 32] 2.54x, above the bound; [32, 16] 2.2x). The
/// auxiliary network keeps [`HIDDEN`]. `benches/benches/saml.rs` measures the same widths.
const BRANCH_HIDDEN: [usize; 2] = [32, 16];

/// One point of the tuning grid.
#[derive(Debug, Clone, Copy, PartialEq)]
struct Point {
    lr: f64,
    dropout: f64,
}

fn grid(quick: bool) -> Vec<Point> {
    if quick {
        return vec![Point {
            lr: 2e-3,
            dropout: 0.0,
        }];
    }
    let mut g = Vec::new();
    for lr in [1e-3, 3e-3] {
        for dropout in [0.0, 0.2] {
            g.push(Point { lr, dropout });
        }
    }
    g
}

/// A data set of the experiment.
struct Dataset {
    key: &'static str,
    title: &'static str,
    data: DataConfig,
    epochs: usize,
    batch: usize,
    patience: usize,
    /// Planted scenario groups and similarity (synthetic only).
    truth: Option<(Vec<u32>, Vec<Vec<f32>>)>,
    scenario_labels: Vec<String>,
    /// The data the grid is run on, when it is not `data` (`--synthetic-seed`: the preset's
    /// log, so that the tuning units are the main page's).
    tune_data: Option<DataConfig>,
}

fn datasets(args: &SamlArgs) -> Result<Vec<Dataset>> {
    let mut out = Vec::new();
    let wanted = |k: &str| args.only.is_empty() || args.only.iter().any(|o| o == k);
    // A partial run would replace the full page (and its plots) with one data set.
    anyhow::ensure!(
        args.only.is_empty() || !super::is_default_results_dir(&args.out),
        "--only writes a page with only those data sets: pass --out DIR so that it does not \
         replace docs/results/saml.md"
    );
    anyhow::ensure!(
        (args.synthetic_seed.is_none() && args.models.is_empty())
            || !super::is_default_results_dir(&args.out),
        "--synthetic-seed and --models write a page that is not the experiment's: pass --out DIR \
         so that it does not replace docs/results/saml.md"
    );
    for o in &args.only {
        anyhow::ensure!(
            DATASETS.contains(&o.as_str()),
            "--only: unknown data set `{o}` (known: {})",
            DATASETS.join(", ")
        );
    }
    let epochs = if args.quick { 3 } else { 30 };
    if wanted("ml-100k") {
        out.push(Dataset {
            key: "ml-100k",
            title: "MovieLens-100k P-MS (scenario = age band)",
            data: DataConfig {
                dataset: "ml-100k".into(),
                protocol: "ms".into(),
                ..DataConfig::default()
            },
            epochs,
            batch: 1024,
            patience: 2,
            truth: None,
            scenario_labels: vec!["<25".into(), "25-34".into(), ">=35".into()],
            tune_data: None,
        });
    }
    if wanted("synthetic") {
        let preset = if args.quick { "tiny" } else { "small" };
        let history = if args.quick { 10 } else { 20 };
        let mut gen_cfg = rec_data::synth::SynthConfig::preset(preset)?;
        if let Some(seed) = args.synthetic_seed {
            gen_cfg.seed = seed;
        }
        let log = rec_data::synth::SynthLog::generate(&gen_cfg)?;
        let truth = &log.truth;
        let labels = truth
            .scenario_sizes
            .iter()
            .enumerate()
            .map(|(s, share)| format!("c{s} ({:.0}%)", 100.0 * share))
            .collect();
        let mut options = toml::Table::new();
        options.insert("preset".into(), preset.into());
        options.insert("history".into(), (history as i64).into());
        let preset_data = DataConfig {
            dataset: "synthetic".into(),
            protocol: "ms".into(),
            options: options.clone(),
            ..DataConfig::default()
        };
        let (title, data, tune_data) = match args.synthetic_seed {
            None => (
                "Synthetic multi-country logs (scenario = country)",
                preset_data,
                None,
            ),
            Some(seed) => {
                options.insert(
                    "seed".into(),
                    i64::try_from(seed)
                        .context("--synthetic-seed must fit in an i64")?
                        .into(),
                );
                (
                    "Synthetic multi-country logs (scenario = country), a log of another \
                     generator seed; learning rate and dropout chosen on the preset's log",
                    DataConfig {
                        options,
                        ..preset_data.clone()
                    },
                    Some(preset_data),
                )
            }
        };
        out.push(Dataset {
            key: "synthetic",
            title,
            data,
            epochs,
            batch: 1024,
            patience: 2,
            truth: Some((
                truth.scenario_groups.clone(),
                truth.scenario_similarity.clone(),
            )),
            scenario_labels: labels,
            tune_data,
        });
    }
    Ok(out)
}

/// One model of the comparison: a registry name and its `[model.params]`.
#[derive(Debug, Clone)]
struct Spec {
    label: &'static str,
    model: &'static str,
    params: toml::Table,
    /// Tuned on the grid (baselines, SAML, and the variants that change its architecture) or
    /// using the point chosen for `point_of` (ablations and the other variants).
    tuned: bool,
    /// A variant that adds something to SAML rather than removing a part: reported in the
    /// ablation table, not checked as "costs AUC".
    variant: bool,
    /// The tuned spec whose chosen point an untuned spec uses (`saml` for SAML's ablations,
    /// `star` for STAR's).
    point_of: &'static str,
    /// Left out of the default run; trained only when `--models` names it (the STAR
    /// ablations, a question about a baseline rather than part of the comparison).
    opt_in: bool,
    about: &'static str,
}

fn hidden() -> toml::Value {
    widths(&HIDDEN)
}

fn widths(w: &[usize]) -> toml::Value {
    toml::Value::Array(w.iter().map(|&h| (h as i64).into()).collect())
}

fn base_params(model: &str, dim: usize) -> toml::Table {
    let mut p = toml::Table::new();
    p.insert("dim".into(), (dim as i64).into());
    match model {
        "shared" | "separate" => {
            let mut mlp = toml::Table::new();
            mlp.insert("hidden".into(), hidden());
            p.insert("mlp".into(), mlp.into());
        }
        "mmoe" => {
            p.insert("experts".into(), 4.into());
            p.insert("expert_hidden".into(), hidden());
            p.insert("tower_hidden".into(), toml::Value::Array(vec![32.into()]));
        }
        "saml" => {
            p.insert("hidden".into(), hidden());
            p.insert("branch_hidden".into(), widths(&BRANCH_HIDDEN));
        }
        _ => {
            p.insert("hidden".into(), hidden());
        }
    }
    p
}

fn with_dropout(model: &str, mut p: toml::Table, dropout: f64) -> toml::Table {
    match model {
        "shared" | "separate" => {
            if let Some(toml::Value::Table(mlp)) = p.get_mut("mlp") {
                mlp.insert("dropout".into(), dropout.into());
            }
        }
        _ => {
            p.insert("dropout".into(), dropout.into());
        }
    }
    p
}

fn specs(has_sequence: bool) -> Vec<Spec> {
    let mut v: Vec<Spec> = BASELINES
        .iter()
        .map(|&m| Spec {
            label: m,
            model: m,
            params: base_params(m, DIM),
            tuned: true,
            variant: false,
            point_of: m,
            opt_in: false,
            about: match m {
                "shared" => "one network, scenario id as a feature",
                "separate" => "one network per scenario, trained on its scenario only",
                "mmoe" => "MMoE, 4 experts, one gate and tower per scenario",
                _ => "STAR, partitioned normalization, auxiliary network",
            },
        })
        .collect();
    v.push(Spec {
        label: "saml",
        model: "saml",
        params: base_params("saml", DIM),
        tuned: true,
        variant: false,
        point_of: "saml",
        opt_in: false,
        about: "SAML, every part on",
    });
    // A variant of SAML tuned on the grid like SAML (its own point), reported beside it,
    // outside the claims.
    let tuned_variant = |label, about, opt_in, edit: &dyn Fn(&mut toml::Table)| {
        let mut p = base_params("saml", DIM);
        edit(&mut p);
        Spec {
            label,
            model: "saml",
            params: p,
            tuned: true,
            variant: true,
            point_of: label,
            opt_in,
            about,
        }
    };
    // SAML as first run here: branches as wide as the auxiliary network.
    v.push(tuned_variant(
        "saml-full-branches",
        "variant: branches as wide as the auxiliary network (branch_hidden = hidden), tuned on the grid",
        false,
        &|p| {
            p.remove("branch_hidden");
        },
    ));
    // Branch layers factored as STAR's (shared weights times per-branch ones), for the small
    // scenarios that STAR serves better.
    v.push(tuned_variant(
        "saml-shared-branches",
        "variant: branch layers factored as STAR's, shared weights times per-branch ones (shared_branches = true), tuned on the grid",
        false,
        &|p| {
            p.insert("shared_branches".into(), true.into());
        },
    ));
    // The output reads the auxiliary network through a head per scenario instead of the
    // auxiliary loss's own head. Chosen after the test table had shown the smallest country
    // better without the auxiliary loss or its logit in the output; the page says so.
    v.push(tuned_variant(
        "saml-aux-head-per-scenario",
        "variant, designed after reading this page's test tables: the output reads the auxiliary network through a head per scenario (aux_head_per_scenario = true), tuned on the grid",
        false,
        &|p| {
            p.insert("aux_head_per_scenario".into(), true.into());
        },
    ));
    let ablation = |label, about, edit: &dyn Fn(&mut toml::Table)| {
        let mut p = base_params("saml", DIM);
        edit(&mut p);
        Spec {
            label,
            model: "saml",
            params: p,
            tuned: false,
            variant: false,
            point_of: "saml",
            opt_in: false,
            about,
        }
    };
    v.push(ablation(
        "saml-no-scenario-emb",
        "without scenario embeddings",
        &|p| {
            p.insert("scenario_embedding".into(), false.into());
        },
    ));
    if has_sequence {
        v.push(ablation(
            "saml-no-scenario-att",
            "without scenario attention",
            &|p| {
                p.insert("scenario_attention".into(), false.into());
            },
        ));
    }
    v.push(ablation(
        "saml-no-aux-loss",
        "without the auxiliary loss (lambda_aux = 0)",
        &|p| {
            p.insert("aux_loss_weight".into(), 0.0.into());
        },
    ));
    v.push(ablation(
        "saml-no-mutual",
        "without the mutual unit",
        &|p| {
            p.insert("mutual".into(), false.into());
        },
    ));
    v.push(ablation(
        "saml-no-scenario-l2",
        "without the L2 penalty on scenario vectors (scenario_l2 = 0)",
        &|p| {
            p.insert("scenario_l2".into(), 0.0.into());
        },
    ));
    v.push(ablation(
        "saml-no-aux-output",
        "without the auxiliary logit in the output (aux_in_output = false)",
        &|p| {
            p.insert("aux_in_output".into(), false.into());
        },
    ));
    v.push(ablation(
        "saml-untied-init",
        "without tied initialization (tied_init = false: branches start independently)",
        &|p| {
            p.insert("tied_init".into(), false.into());
        },
    ));
    v.push(ablation(
        "saml-bigger-emb",
        "no scenario embeddings, global width doubled (d = 32)",
        &|p| {
            p.insert("scenario_embedding".into(), false.into());
            p.insert("dim".into(), ((2 * DIM) as i64).into());
        },
    ));
    let mut zero = ablation(
        "saml-zero-scenario-init",
        "variant: scenario tables start at zero (scenario_zero_init = true)",
        &|p| {
            p.insert("scenario_zero_init".into(), true.into());
        },
    );
    zero.variant = true;
    v.push(zero);
    // One branch for every scenario (opt-in: `--models saml,saml-no-mutual,saml-one-branch`):
    // whether the per-scenario branches are what costs the smallest scenario. The mutual unit
    // mixes branches, so it goes too; `saml-no-mutual` is the run that isolates the branches.
    let mut one_branch = ablation(
        "saml-one-branch",
        "one branch and head for every scenario, without the mutual unit (scenario_branches = false, mutual = false)",
        &|p| {
            p.insert("scenario_branches".into(), false.into());
            p.insert("mutual".into(), false.into());
        },
    );
    one_branch.opt_in = true;
    v.push(one_branch);
    // STAR's partitioned normalization on SAML's global input, tuned on the grid like SAML.
    // Opt-in (`--models saml-scenario-norm`): designed after the main page's tables had shown
    // STAR ahead on the smallest country, and run on the logs of `--synthetic-seed` as well.
    v.push(tuned_variant(
        "saml-scenario-norm",
        "variant, designed after reading this page's test tables: the global input normalized by scenario as STAR's partitioned normalization (scenario_norm = true), tuned on the grid",
        true,
        &|p| {
            p.insert("scenario_norm".into(), true.into());
        },
    ));
    // Which part of STAR serves the smallest scenario (opt-in: `--models star,star-no-...`).
    // Untuned, at STAR's chosen point.
    let star_ablation = |label, about, off: &[(&str, toml::Value)]| {
        let mut p = base_params("star", DIM);
        for (key, value) in off {
            p.insert((*key).into(), value.clone());
        }
        Spec {
            label,
            model: "star",
            params: p,
            tuned: false,
            variant: false,
            point_of: "star",
            opt_in: true,
            about,
        }
    };
    let no_norm = ("partitioned_norm", toml::Value::from(false));
    let no_aux = ("aux_hidden", toml::Value::Array(Vec::new()));
    let plain = ("star_topology", toml::Value::from(false));
    v.push(star_ablation(
        "star-no-partitioned-norm",
        "STAR without partitioned normalization (partitioned_norm = false)",
        std::slice::from_ref(&no_norm),
    ));
    v.push(star_ablation(
        "star-no-aux-net",
        "STAR without the auxiliary network over the scenario indicator (aux_hidden = [])",
        std::slice::from_ref(&no_aux),
    ));
    v.push(star_ablation(
        "star-plain-layers",
        "STAR with plain shared layers, without the per-scenario weights and biases of the star topology (star_topology = false)",
        std::slice::from_ref(&plain),
    ));
    // All three off: one MLP with the scenario indicator among its inputs (the indicator
    // enters the network once neither partitioned normalization nor the auxiliary network
    // takes it), Shared's form at STAR's point.
    v.push(star_ablation(
        "star-no-scenario-parts",
        "STAR with all three parts off (partitioned_norm = false, aux_hidden = [], star_topology = false): one MLP with the scenario indicator as an input",
        &[no_norm, no_aux, plain],
    ));
    v
}

/// The specs `--models` keeps (without it, every spec but the opt-in ones), in the
/// experiment's order; an unknown label is an error, and so is an untuned spec without the
/// spec whose chosen point it uses (`saml` for SAML's ablations, `star` for STAR's).
fn chosen_specs(all: Vec<Spec>, models: &[String]) -> Result<Vec<Spec>> {
    if models.is_empty() {
        return Ok(all.into_iter().filter(|s| !s.opt_in).collect());
    }
    for m in models {
        anyhow::ensure!(
            all.iter().any(|s| s.label == m),
            "--models: unknown model `{m}` (known: {})",
            all.iter().map(|s| s.label).collect::<Vec<_>>().join(", ")
        );
    }
    let kept: Vec<Spec> = all
        .into_iter()
        .filter(|s| models.iter().any(|m| m == s.label))
        .collect();
    for s in kept.iter().filter(|s| !s.tuned) {
        anyhow::ensure!(
            kept.iter().any(|k| k.label == s.point_of),
            "--models: `{}` uses {}'s chosen point; add `{}`",
            s.label,
            s.point_of,
            s.point_of
        );
    }
    Ok(kept)
}

fn config(ds: &Dataset, spec: &Spec, point: Point, seed: u64) -> Result<Config> {
    let mut cfg = Config::new(spec.model, &ds.data.dataset, &ds.data.protocol);
    cfg.data = ds.data.clone();
    cfg.data.seed = seed;
    cfg.model.params = with_dropout(spec.model, spec.params.clone(), point.dropout);
    cfg.optimizer.dense = OptimizerConfig::adam(point.lr);
    cfg.optimizer.sparse = OptimizerConfig::adam(point.lr);
    cfg.train.batch_size = ds.batch;
    cfg.train.epochs = ds.epochs;
    cfg.train.progress = false;
    cfg.validate()?;
    Ok(cfg)
}

/// What one training run produced.
#[derive(serde::Serialize, serde::Deserialize)]
struct RunOut {
    valid_auc: f64,
    test: Evaluation,
    /// Seconds spent in training steps (evaluation excluded), and samples trained.
    train_secs: f64,
    samples: u64,
    best_epoch: usize,
    params: usize,
    /// Learned affinity `c` and mean gates on test (SAML with the mutual unit).
    affinity: Option<Vec<Vec<f64>>>,
    gates: Option<Vec<Vec<f64>>>,
}

/// A deep copy of the model's state: its dense tensors share storage with the live variables,
/// which later steps update in place.
fn state_copy(model: &dyn rec_nn::Model) -> Result<(rec_nn::TensorMap, serde_json::Value)> {
    let (t, m) = rec_nn::io::model_state(model)?;
    let t = t
        .into_iter()
        .map(|(k, v)| Ok((k, v.copy()?)))
        .collect::<candle_core::Result<rec_nn::TensorMap>>()?;
    Ok((t, m))
}

/// Replaces in `state` everything of Separate's network `s` (variables, buffers and tables
/// under `s{s}.`) by its values in `from`.
fn take_network(
    state: &mut (rec_nn::TensorMap, serde_json::Value),
    from: &(rec_nn::TensorMap, serde_json::Value),
    s: usize,
) -> Result<()> {
    let p = format!("s{s}.");
    let ours = |k: &str| {
        ["dense/", "buffer/", "table/"]
            .iter()
            .any(|kind| k.strip_prefix(kind).is_some_and(|n| n.starts_with(&p)))
    };
    state.0.retain(|k, _| !ours(k));
    for (k, v) in &from.0 {
        if ours(k) {
            state.0.insert(k.clone(), v.clone());
        }
    }
    let tables = from.1["tables"]
        .as_object()
        .context("a model state without tables")?;
    for (name, t) in tables {
        if name.starts_with(&p) {
            state.1["tables"][name] = t.clone();
        }
    }
    Ok(())
}

/// Trains the model of `cfg` on `split`: the trainer's training step and evaluation, early
/// stopping on validation AUC with the best epoch's state kept in memory (no checkpoint files),
/// then the test metrics of that state.
///
/// Separate is one network per scenario, each trained on its scenario alone: each network
/// keeps its own best epoch by its scenario's validation AUC, and training stops once every
/// network has gone `patience` epochs without a better one (a joint stop on the overall AUC
/// would stop a small scenario's network at whatever epoch suits the mixture). Its
/// `best_epoch` is the latest of the networks' best epochs.
fn fit(cfg: &Config, split: &Split, patience: usize) -> Result<RunOut> {
    let device = Device::Cpu;
    let seed = cfg.data.seed;
    let mut model = build_model(cfg, &split.schema, &split.train, &device)?;
    let params = model.num_params();
    let mut opt = DenseOptimizer::new(cfg.optimizer.dense, model.dense_vars())?;
    let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(mix_seed(seed, 0xD409)));
    let m = split.schema.num_scenarios;
    let per_network = cfg.model.name == "separate" && m > 1;
    let task = split
        .schema
        .tasks
        .first()
        .map(|t| t.name.clone())
        .context("a schema without tasks")?;
    type State = (rec_nn::TensorMap, serde_json::Value);
    let mut best: Option<(f64, usize, State)> = None;
    // Separate: per network, its best (scenario validation AUC, epoch, state) and epochs since.
    let mut best_s: Vec<Option<(f64, usize, State)>> = (0..m).map(|_| None).collect();
    let mut bad_s = vec![0usize; m];
    let (mut bad, mut train_secs, mut samples) = (0, 0.0, 0u64);
    for epoch in 0..cfg.train.epochs {
        let t0 = Instant::now();
        for b in BatchIter::new(&split.train, cfg.train.batch_size, seed, epoch as u64, true) {
            rec_nn::train_step(model.as_mut(), &mut opt, &b, &mut ctx)?;
            samples += b.len() as u64;
        }
        train_secs += t0.elapsed().as_secs_f64();
        let v = evaluate(model.as_mut(), &split.valid, 16384)?;
        if per_network {
            let mut state: Option<State> = None;
            for s in 0..m {
                // A scenario whose validation slice has one class has no AUC: such an epoch
                // counts as no improvement, and a network that never had one keeps its last
                // state.
                let auc = v.get_slice(&task, &format!("scenario_{s}"), "auc");
                match auc {
                    Some(a) if best_s[s].as_ref().is_none_or(|b| a > b.0) => {
                        if state.is_none() {
                            state = Some(state_copy(model.as_ref())?);
                        }
                        let st = state.clone().expect("just set");
                        best_s[s] = Some((a, epoch + 1, st));
                        bad_s[s] = 0;
                    }
                    _ => bad_s[s] += 1,
                }
            }
            if bad_s.iter().all(|&b| b >= patience) {
                break;
            }
            continue;
        }
        let auc = v.get(None, "auc").context("validation has no AUC")?;
        if best.as_ref().is_none_or(|b| auc > b.0) {
            best = Some((auc, epoch + 1, state_copy(model.as_ref())?));
            bad = 0;
        } else {
            bad += 1;
            if bad >= patience {
                break;
            }
        }
    }
    if per_network {
        let mut state = state_copy(model.as_ref())?;
        let mut last = 0;
        for (s, b) in best_s.iter().enumerate() {
            if let Some((_, e, from)) = b {
                take_network(&mut state, from, s)?;
                last = last.max(*e);
            }
        }
        rec_nn::io::load_model_state(model.as_mut(), &state.0, &state.1)?;
        let v = evaluate(model.as_mut(), &split.valid, 16384)?;
        let auc = v.get(None, "auc").context("validation has no AUC")?;
        best = Some((auc, last.max(1), state));
    }
    let (valid_auc, best_epoch, (tensors, meta)) = best.context("no epoch was trained")?;
    rec_nn::io::load_model_state(model.as_mut(), &tensors, &meta)?;
    let test = evaluate(model.as_mut(), &split.test, 16384)?;
    let (mut affinity, mut gates) = (None, None);
    if cfg.model.name == "saml" {
        let mut saml = concrete_saml(cfg, split, &device)?;
        rec_nn::io::load_model_state(&mut saml, &tensors, &meta)?;
        affinity = saml.affinity()?.map(|a| {
            a.iter()
                .map(|r| r.iter().map(|&x| x as f64).collect())
                .collect()
        });
        gates = saml.mean_gates(&split.test)?;
    }
    Ok(RunOut {
        valid_auc,
        test,
        train_secs,
        samples,
        best_epoch,
        params,
        affinity,
        gates,
    })
}

/// The SAML of `cfg` as its concrete type (for its affinity and gates), built like the
/// registry builds it.
fn concrete_saml(cfg: &Config, split: &Split, device: &Device) -> Result<Saml> {
    let params: SamlConfig = toml::Value::Table(cfg.model.params.clone()).try_into()?;
    let mut tables = DefaultTableFactory::new(tables_config(cfg)?, cfg.data.seed, device)
        .with_counts(id_counts(&split.schema, &split.train));
    let mut factory = |f: &rec_data::FieldSpec, d: usize| tables.build(f, d);
    Ok(Saml::new(
        &split.schema,
        &params,
        &mut factory,
        device,
        cfg.data.seed,
    )?)
}

/// Everything measured on one data set.
struct DatasetResult {
    results: Results,
    /// Per model: the grid with each point's validation AUC (seed 1), and the chosen point.
    tuning: BTreeMap<String, (Vec<(Point, f64)>, Point)>,
    /// Per model: best epochs, parameters, training microseconds per sample (per seed).
    best_epochs: BTreeMap<String, Vec<usize>>,
    params: BTreeMap<String, usize>,
    us_per_sample: BTreeMap<String, Vec<f64>>,
    affinity: Vec<Vec<Vec<f64>>>,
    gates: Vec<Vec<Vec<f64>>>,
    specs: Vec<Spec>,
    scenario_labels: Vec<String>,
    num_scenarios: usize,
    sizes: Vec<[usize; 3]>,
    /// The data have a behaviour sequence (so SAML has a scenario attention to ablate).
    has_sequence: bool,
}

impl DatasetResult {
    /// The scenario with the fewest training samples.
    fn smallest_scenario(&self) -> usize {
        self.sizes
            .iter()
            .enumerate()
            .min_by_key(|(_, s)| s[0])
            .map_or(0, |(i, _)| i)
    }

    /// No results yet, for `sizes.len()` scenarios.
    fn new(specs: Vec<Spec>, scenario_labels: Vec<String>, sizes: Vec<[usize; 3]>) -> Self {
        DatasetResult {
            results: Results::new(),
            tuning: BTreeMap::new(),
            best_epochs: BTreeMap::new(),
            params: BTreeMap::new(),
            us_per_sample: BTreeMap::new(),
            affinity: Vec::new(),
            gates: Vec::new(),
            specs,
            scenario_labels,
            num_scenarios: sizes.len(),
            sizes,
            has_sequence: false,
        }
    }
}

/// One training run of the experiment: model label, grid point, progress label, configuration.
type Unit = (&'static str, Point, String, Config);

/// Changes of a model's code that change its numbers, by model name: a new revision is a new
/// key for that model's runs only, so they are trained again and every other model's cached
/// runs are kept. Models without an entry have the keys they had before revisions existed.
fn revision(model: &str) -> Option<u32> {
    match model {
        // 2: STAR's partitioned normalization normalizes a scenario's lone sample in a
        // training batch with its running statistics (before: mapped to `beta + beta_s`).
        "star" => Some(2),
        _ => None,
    }
}

/// The cache key of a training run: the configuration as written, the model's code revision
/// when it has one ([`revision`]), and for SAML also its configuration with every default
/// filled in, so that a change of SAML's defaults is a change of key (the baselines' keys stay
/// as they were).
fn key(cfg: &Config, patience: usize) -> Result<serde_json::Value> {
    let mut k = json!({ "format": "saml-fit-2", "config": cfg, "patience": patience });
    if let Some(r) = revision(&cfg.model.name) {
        k["revision"] = json!(r);
    }
    if cfg.model.name == "saml" {
        let resolved: SamlConfig = cfg
            .model
            .params
            .clone()
            .try_into()
            .context("SAML's [model.params]")?;
        k["saml"] = json!(resolved);
    }
    Ok(k)
}

/// Runs `units` through the cache in two passes (see [`RunCache::try_get_or_run`]): those no
/// other process holds, then the rest, waiting for them. Results in the order of `units`.
fn run_units<'a>(
    cache: &RunCache,
    units: &[Unit],
    split: impl Fn(&Config) -> &'a Split,
    patience: usize,
) -> Result<Vec<RunOut>> {
    let mut out: Vec<Option<RunOut>> = Vec::with_capacity(units.len());
    for (_, _, label, cfg) in units {
        out.push(cache.try_get_or_run(label, &key(cfg, patience)?, || {
            fit(cfg, split(cfg), patience)
        })?);
    }
    units
        .iter()
        .zip(out)
        .map(|((_, _, label, cfg), r)| match r {
            Some(r) => Ok(r),
            None => cache.get_or_run(label, &key(cfg, patience)?, || {
                fit(cfg, split(cfg), patience)
            }),
        })
        .collect()
}

fn run_dataset(
    ds: &Dataset,
    seeds: &[u64],
    quick: bool,
    models: &[String],
    cache: &RunCache,
) -> Result<DatasetResult> {
    let split1 = rec_trainer::data::load_split(&DataConfig {
        seed: seeds[0],
        ..ds.data.clone()
    })?;
    // The grid's data: the same split, or (`--synthetic-seed`) seed 1's split of another log.
    let tune_split = match &ds.tune_data {
        Some(d) => Some(rec_trainer::data::load_split(&DataConfig {
            seed: seeds[0],
            ..d.clone()
        })?),
        None => None,
    };
    let m = split1.schema.num_scenarios;
    let has_sequence = split1
        .schema
        .fields
        .iter()
        .any(|f| f.kind == rec_data::FieldKind::Sequence);
    let count = |b: &rec_data::Batch| {
        let mut c = vec![0usize; m];
        for s in b.scenarios() {
            c[s as usize] += 1;
        }
        c
    };
    let (tr, va, te) = (
        count(&split1.train),
        count(&split1.valid),
        count(&split1.test),
    );
    let sizes = (0..m).map(|s| [tr[s], va[s], te[s]]).collect();
    let specs = chosen_specs(specs(has_sequence), models)?;
    let mut out = DatasetResult::new(specs.clone(), ds.scenario_labels.clone(), sizes);
    out.has_sequence = has_sequence;
    // Tuning on seed 1's validation AUC. Every unit goes through the result cache in two
    // passes: first the units no other process holds, then (waiting if need be) the rest, so
    // that several invocations sharing the target directory split the work.
    let points = grid(quick);
    let mut tune_units = Vec::new();
    if points.len() > 1 {
        for spec in specs.iter().filter(|s| s.tuned) {
            for &p in &points {
                let label = format!(
                    "{} tune {} lr {} dropout {}",
                    ds.key, spec.label, p.lr, p.dropout
                );
                let mut cfg = config(ds, spec, p, seeds[0])?;
                if let Some(d) = &ds.tune_data {
                    cfg.data = DataConfig {
                        seed: seeds[0],
                        ..d.clone()
                    };
                }
                tune_units.push((spec.label, p, label, cfg));
            }
        }
    }
    let tune_on = tune_split.as_ref().unwrap_or(&split1);
    let tuned = run_units(cache, &tune_units, |_| tune_on, ds.patience)?;
    for spec in specs.iter().filter(|s| s.tuned) {
        let mut scored = Vec::new();
        for &p in &points {
            let v = tune_units
                .iter()
                .zip(&tuned)
                .find(|((l, q, _, _), _)| *l == spec.label && *q == p)
                .map_or(f64::NAN, |(_, r)| r.valid_auc);
            if !v.is_nan() {
                eprintln!(
                    "[saml] {} tune {} lr {} dropout {}: valid AUC {v:.4}",
                    ds.key, spec.label, p.lr, p.dropout
                );
            }
            scored.push((p, v));
        }
        let best = scored
            .iter()
            .filter(|(_, v)| !v.is_nan())
            .max_by(|a, b| a.1.total_cmp(&b.1))
            .map_or(points[0], |(p, _)| *p);
        out.tuning.insert(spec.label.to_string(), (scored, best));
    }
    let mut splits = vec![split1];
    for &seed in &seeds[1..] {
        splits.push(rec_trainer::data::load_split(&DataConfig {
            seed,
            ..ds.data.clone()
        })?);
    }
    let mut final_units = Vec::new();
    for &seed in seeds {
        for spec in &specs {
            let point = out
                .tuning
                .get(spec.point_of)
                .map(|t| t.1)
                .with_context(|| {
                    format!("{}: no tuned point of `{}`", spec.label, spec.point_of)
                })?;
            let label = format!("{} seed {seed} {}", ds.key, spec.label);
            final_units.push((spec.label, point, label, config(ds, spec, point, seed)?));
        }
    }
    let seed_index = |cfg: &Config| seeds.iter().position(|&s| s == cfg.data.seed).unwrap_or(0);
    let finals = run_units(
        cache,
        &final_units,
        |cfg| &splits[seed_index(cfg)],
        ds.patience,
    )?;
    for ((spec_label, _, label, cfg), r) in final_units.iter().zip(finals) {
        let auc = r.test.get(None, "auc").unwrap_or(f64::NAN);
        eprintln!(
            "[saml] {label}: test AUC {auc:.4} (best epoch {}, {:.0} s of training)",
            r.best_epoch, r.train_secs
        );
        let spec_label: &str = spec_label;
        out.results
            .add_evaluation_seeded(spec_label, cfg.data.seed, &r.test);
        out.results.add(spec_label, "valid", "auc", r.valid_auc);
        let us = 1e6 * r.train_secs / r.samples.max(1) as f64;
        out.results.add(spec_label, "cost", "us_per_sample", us);
        out.us_per_sample
            .entry(spec_label.into())
            .or_default()
            .push(us);
        out.best_epochs
            .entry(spec_label.into())
            .or_default()
            .push(r.best_epoch);
        out.params.insert(spec_label.into(), r.params);
        if spec_label == "saml" {
            out.affinity.extend(r.affinity);
            out.gates.extend(r.gates);
        }
    }
    Ok(out)
}

// ------------------------------------------------------------------ analysis

/// Mean of matrices.
fn mean_matrix(ms: &[Vec<Vec<f64>>]) -> Option<Vec<Vec<f64>>> {
    let first = ms.first()?;
    let mut acc = vec![vec![0.0; first[0].len()]; first.len()];
    for m in ms {
        for (a, r) in acc.iter_mut().zip(m) {
            for (x, v) in a.iter_mut().zip(r) {
                *x += v / ms.len() as f64;
            }
        }
    }
    Some(acc)
}

/// How well `a` (an affinity matrix, symmetrized) ranks the planted similar pairs (same group)
/// above the dissimilar ones: the fraction of (similar, dissimilar) pair comparisons won (ties
/// count half). 1 means every similar pair is above every dissimilar pair.
fn pair_auc(a: &[Vec<f64>], groups: &[u32]) -> Option<f64> {
    let m = groups.len();
    let (mut sim, mut dis) = (Vec::new(), Vec::new());
    for s in 0..m {
        for t in s + 1..m {
            let v = 0.5 * (a[s][t] + a[t][s]);
            if groups[s] == groups[t] {
                sim.push(v);
            } else {
                dis.push(v);
            }
        }
    }
    if sim.is_empty() || dis.is_empty() {
        return None;
    }
    let mut won = 0.0;
    for x in &sim {
        for y in &dis {
            won += if x > y {
                1.0
            } else if x == y {
                0.5
            } else {
                0.0
            };
        }
    }
    Some(won / (sim.len() * dis.len()) as f64)
}

/// Spearman rank correlation of the off-diagonal (symmetrized) entries of two matrices.
fn spearman_offdiag(a: &[Vec<f64>], b: &[Vec<f32>]) -> f64 {
    let m = a.len();
    let (mut x, mut y) = (Vec::new(), Vec::new());
    for s in 0..m {
        for t in s + 1..m {
            x.push(0.5 * (a[s][t] + a[t][s]));
            y.push(0.5 * (b[s][t] as f64 + b[t][s] as f64));
        }
    }
    let rank = |v: &[f64]| -> Vec<f64> {
        let mut idx: Vec<usize> = (0..v.len()).collect();
        idx.sort_by(|&i, &j| v[i].total_cmp(&v[j]));
        let mut r = vec![0.0; v.len()];
        let mut k = 0;
        while k < idx.len() {
            let mut e = k;
            while e + 1 < idx.len() && v[idx[e + 1]] == v[idx[k]] {
                e += 1;
            }
            for &i in &idx[k..=e] {
                r[i] = (k + e) as f64 / 2.0;
            }
            k = e + 1;
        }
        r
    };
    let (rx, ry) = (rank(&x), rank(&y));
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len() as f64;
    let (mx, my) = (mean(&rx), mean(&ry));
    let cov: f64 = rx.iter().zip(&ry).map(|(a, b)| (a - mx) * (b - my)).sum();
    let vx: f64 = rx.iter().map(|a| (a - mx).powi(2)).sum();
    let vy: f64 = ry.iter().map(|b| (b - my).powi(2)).sum();
    cov / (vx * vy).sqrt().max(1e-12)
}

fn stat(r: &Results, model: &str, slice: &str, metric: &str) -> Option<Stat> {
    r.stat(model, slice, metric)
}

fn fmt_stat(s: Option<Stat>, digits: usize) -> String {
    match s {
        Some(s) if s.n > 1 => format!("{:.*} ± {:.*}", digits, s.mean, digits, s.std),
        Some(s) => format!("{:.*}", digits, s.mean),
        None => "–".into(),
    }
}

/// The header of a table with one row per model and the columns `all`, one per scenario and
/// optionally `last`: the names line and the separator line, each ending in a newline.
fn scenario_header(corner: &str, labels: &[String], last: Option<&str>) -> String {
    let names: Vec<&str> = std::iter::once("all")
        .chain(labels.iter().map(String::as_str))
        .chain(last)
        .collect();
    format!(
        "| {corner} | {} |\n|---|{}\n",
        names.join(" | "),
        "---|".repeat(names.len())
    )
}

/// The test-AUC difference `a - b` paired per seed: `mean ± std`, `*` when the mean is larger
/// than the std; `–` when the two do not pair.
fn fmt_paired(r: &Results, a: &str, b: &str, slice: &str) -> String {
    match r.paired(a, b, slice, "auc") {
        Some(d) if d.n > 1 => format!(
            "{:+.4} ± {:.4}{}",
            d.mean,
            d.std,
            if d.mean.abs() > d.std { "*" } else { "" }
        ),
        Some(d) => format!("{:+.4}", d.mean),
        None => "–".into(),
    }
}

/// One claim with its verdict and the numbers behind it.
struct Claim {
    dataset: &'static str,
    text: String,
    holds: bool,
    detail: String,
}

fn claims(ds: &Dataset, r: &DatasetResult) -> Vec<Claim> {
    let res = &r.results;
    let auc = |m: &str, slice: &str| stat(res, m, slice, "auc");
    let mut out = Vec::new();
    let Some(saml) = auc("saml", "all") else {
        // Without SAML's own result no claim can hold; say so rather than drop them.
        out.push(Claim {
            dataset: ds.key,
            text: "SAML's claims on this data set".into(),
            holds: false,
            detail: "INCOMPLETE: no SAML result".into(),
        });
        return out;
    };
    // A cell that is missing (an undefined metric) or has fewer seeds than SAML's cannot
    // support a claim: the claim then does not hold, and its detail says which cells.
    let missing: std::cell::RefCell<Vec<String>> = Default::default();
    let cell = |m: &str, slice: &str| match auc(m, slice) {
        Some(s) if s.n >= saml.n => Some(s),
        _ => {
            missing.borrow_mut().push(format!("{m}/{slice}"));
            None
        }
    };
    let all_present = || missing.borrow().is_empty();
    let incomplete = || -> String {
        let cells: Vec<String> = missing.borrow_mut().drain(..).collect();
        if cells.is_empty() {
            String::new()
        } else {
            format!("; INCOMPLETE, no full result for {}", cells.join(", "))
        }
    };
    // Best overall AUC among the models of the zoo.
    let others: Vec<(String, f64)> = BASELINES
        .iter()
        .filter_map(|&b| cell(b, "all").map(|s| (b.to_string(), s.mean)))
        .collect();
    let best_other = others.iter().max_by(|a, b| a.1.total_cmp(&b.1)).cloned();
    let complete = all_present();
    out.push(Claim {
        dataset: ds.key,
        text: "SAML has the best overall test AUC of Shared, Separate, MMoE, STAR and SAML".into(),
        holds: complete && best_other.as_ref().is_some_and(|b| saml.mean > b.1),
        detail: match &best_other {
            Some((name, auc)) => format!(
                "SAML {:.4}; best other {name} {auc:.4} (difference {:+.4}){}",
                saml.mean,
                saml.mean - auc,
                incomplete()
            ),
            None => format!(
                "SAML {:.4}; no baseline to compare{}",
                saml.mean,
                incomplete()
            ),
        },
    });
    if ds.key == "ml-100k" {
        let mut worst = (String::new(), f64::INFINITY, 0.0);
        let mut holds = true;
        for s in 0..r.num_scenarios {
            let slice = format!("scenario_{s}");
            let Some(a) = cell("saml", &slice) else {
                continue;
            };
            for b in ["shared", "separate"] {
                let Some(o) = cell(b, &slice) else { continue };
                let margin = a.std.max(o.std);
                let diff = a.mean - o.mean;
                if diff < -margin {
                    holds = false;
                }
                if diff + margin < worst.1 {
                    worst = (
                        format!("{} vs {b}", r.scenario_labels[s]),
                        diff + margin,
                        diff,
                    );
                }
            }
        }
        let complete = all_present();
        out.push(Claim {
            dataset: ds.key,
            text: "in no scenario is SAML's AUC below Shared's or Separate's by more than the seed std (the larger of the two)".into(),
            holds: complete && holds,
            detail: format!(
                "closest case: {} (difference {:+.4}, slack {:+.4}){}",
                worst.0,
                worst.2,
                worst.1,
                incomplete()
            ),
        });
    }
    if ds.key == "ml-100k" {
        // The spec's "the smallest scenario gains most over Separate": SAML minus Separate,
        // paired per seed, is largest on the scenario with the fewest training samples.
        let smallest = r.smallest_scenario();
        let gains: Vec<Option<f64>> = (0..r.num_scenarios)
            .map(|s| {
                res.paired("saml", "separate", &format!("scenario_{s}"), "auc")
                    .filter(|d| d.n >= saml.n)
                    .map(|d| d.mean)
            })
            .collect();
        let complete = gains.iter().all(Option::is_some);
        let g = |s: usize| gains[s].unwrap_or(f64::NAN);
        let holds = complete && (0..r.num_scenarios).all(|s| s == smallest || g(smallest) >= g(s));
        out.push(Claim {
            dataset: ds.key,
            text: format!(
                "the smallest scenario ({}) gains most over Separate (SAML minus Separate, paired per seed)",
                r.scenario_labels[smallest]
            ),
            holds,
            detail: (0..r.num_scenarios)
                .map(|s| match gains[s] {
                    Some(v) => format!("{} {v:+.4}", r.scenario_labels[s]),
                    None => format!("{} INCOMPLETE", r.scenario_labels[s]),
                })
                .collect::<Vec<_>>()
                .join(", "),
        });
    }
    if ds.key == "synthetic" {
        let smallest = r.smallest_scenario();
        let slice = format!("scenario_{smallest}");
        let text = format!(
            "SAML beats every baseline on the smallest scenario ({})",
            r.scenario_labels[smallest]
        );
        let saml_small = cell("saml", &slice);
        if saml_small.is_none() {
            out.push(Claim {
                dataset: ds.key,
                text: text.clone(),
                holds: false,
                detail: incomplete().trim_start_matches("; ").to_string(),
            });
        }
        if let Some(a) = saml_small {
            let mut holds = true;
            let mut parts = vec![format!("SAML {:.4}", a.mean)];
            for b in BASELINES {
                if let Some(o) = cell(b, &slice) {
                    holds &= a.mean > o.mean;
                    parts.push(format!("{b} {:.4}", o.mean));
                }
            }
            let complete = all_present();
            out.push(Claim {
                dataset: ds.key,
                text,
                holds: complete && holds,
                detail: format!("{}{}", parts.join(", "), incomplete()),
            });
        }
        if let (Some((groups, _)), Some(c)) = (&ds.truth, mean_matrix(&r.affinity))
            && let Some(p) = pair_auc(&c, groups)
        {
            out.push(Claim {
                dataset: ds.key,
                text: "the learned affinity c (mean over seeds) ranks every planted similar pair above every dissimilar pair".into(),
                holds: p >= 1.0,
                detail: format!(
                    "pair AUC {p:.3} (1 = all similar pairs first, 0.5 = chance); per seed: {}",
                    r.affinity
                        .iter()
                        .filter_map(|a| pair_auc(a, groups))
                        .map(|v| format!("{v:.3}"))
                        .collect::<Vec<_>>()
                        .join(", ")
                ),
            });
        }
        // Every seed's synthetic test day is the same log, so an ablation is compared with
        // SAML seed by seed (as the page's paired table): it costs AUC when the paired
        // difference is negative by more than its std. A missing ablation is a claim that
        // does not hold.
        for spec in r
            .specs
            .iter()
            .filter(|s| s.model == "saml" && !s.tuned && !s.variant)
        {
            let text = format!(
                "{} costs AUC (the ablation minus SAML, paired by seed, is below zero by more \
                 than its std)",
                spec.about
            );
            let (a, d) = (
                auc(spec.label, "all").filter(|a| a.n >= saml.n),
                res.paired(spec.label, "saml", "all", "auc")
                    .filter(|d| d.n >= saml.n),
            );
            out.push(match (a, d) {
                (Some(a), Some(d)) => Claim {
                    dataset: ds.key,
                    text,
                    // One seed gives no noise estimate: nothing can be confirmed.
                    holds: d.n >= 2 && d.mean < 0.0 && d.mean < -d.std,
                    detail: format!(
                        "{} {:.4} ± {:.4} vs SAML {:.4} ± {:.4}; paired {:+.4} ± {:.4}{}",
                        spec.label,
                        a.mean,
                        a.std,
                        saml.mean,
                        saml.std,
                        d.mean,
                        d.std,
                        if d.n < 2 {
                            " (one seed: no noise estimate)"
                        } else {
                            ""
                        }
                    ),
                },
                _ => Claim {
                    dataset: ds.key,
                    text,
                    holds: false,
                    detail: format!("INCOMPLETE: no full result for {}", spec.label),
                },
            });
        }
    }
    out
}

// ------------------------------------------------------------------ report

fn write_page(
    args: &SamlArgs,
    seeds: &[u64],
    sets: &[(Dataset, DatasetResult)],
    claims: &[Claim],
    plots: &[(String, String)],
    provenance: &str,
) -> Result<String> {
    let mut s = String::new();
    let mut cmd = String::from("cargo xtask experiment saml");
    if args.quick {
        cmd.push_str(" --quick");
    }
    if let Some(n) = args.seeds {
        cmd.push_str(&format!(" --seeds {n}"));
    }
    if !args.only.is_empty() {
        cmd.push_str(&format!(" --only {}", args.only.join(",")));
    }
    if let Some(seed) = args.synthetic_seed {
        cmd.push_str(&format!(" --synthetic-seed {seed}"));
    }
    if !args.models.is_empty() {
        cmd.push_str(&format!(" --models {}", args.models.join(",")));
    }
    if !super::is_default_results_dir(&args.out) {
        cmd.push_str(&format!(" --out {}", args.out.display()));
    }
    writeln!(
        s,
        "# Multi-scenario recommendation: SAML and the baselines\n"
    )?;
    writeln!(
        s,
        "Produced by `{cmd}` (crate `scenario-saml`, experiment `xtask/src/experiment/saml.rs`). \
         Seeds {}; cells are mean ± sample std over the seeds, on the test split, at the best \
         validation epoch. The model and which of its parts are reconstructed: the crate docs of \
         `scenario-saml` (`cargo doc -p scenario-saml --open`). {provenance}\n",
        seeds
            .iter()
            .map(|s| s.to_string())
            .collect::<Vec<_>>()
            .join(", ")
    )?;
    if args.quick {
        writeln!(
            s,
            "**Quick mode**: {} seed(s), at most {} epochs, the tiny synthetic preset, no tuning \
             grid. These numbers are indicative only; the full protocol (3 seeds, 30 epochs, the \
             small preset, a 4-point grid per model) is `cargo xtask experiment saml`.\n",
            seeds.len(),
            sets.first().map_or(0, |d| d.0.epochs)
        )?;
    }
    writeln!(s, "## Setup\n")?;
    writeln!(
        s,
        "- Every model: embedding width d = {DIM}, hidden widths {HIDDEN:?} (SAML: the auxiliary \
         network, and branches {BRANCH_HIDDEN:?}, the widest halving of {HIDDEN:?} that keeps \
         SAML's training step within 2.5x Shared's in the criterion benchmark; \
         saml-full-branches: branches {HIDDEN:?} too; saml-shared-branches: branches \
         {BRANCH_HIDDEN:?} whose layers are a weight shared by every branch times a per-branch \
         one, as STAR's are; saml-aux-head-per-scenario: SAML whose output adds the auxiliary \
         network's last layer through a head per scenario; saml-scenario-norm (opt-in): SAML \
         whose global input is normalized with its scenario's statistics, as by STAR's \
         partitioned normalization; MMoE: every expert, towers [32]; STAR: \
         the star network), \
         DIN attention with a [32] scoring MLP over the behaviour sequence when the data have one, \
         Adam for dense parameters and row-wise Adam for the embeddings, batch 1024, at most {} \
         epochs, early stopping after {} epochs without a better validation AUC (the best epoch \
         is tested; Separate: each scenario's network keeps its own best epoch by its \
         scenario's validation AUC, and training stops when none has improved for that many \
         epochs; its \"best epochs\" below are the latest of its networks'). STAR's scenario \
         indicator feeds its auxiliary network only, except with partitioned normalization and \
         the auxiliary network both off (star-no-scenario-parts), where it is an input of the \
         network (crate docs of `scenario_saml::star`).",
        sets.first().map_or(0, |d| d.0.epochs),
        sets.first().map_or(0, |d| d.0.patience)
    )?;
    let g = grid(args.quick);
    writeln!(
        s,
        "- Tuning: the same grid for every model, {} points (learning rate x dropout: {}), \
         chosen on seed {}'s validation AUC; the SAML ablations use SAML's point{}.",
        g.len(),
        g.iter()
            .map(|p| format!("({}, {})", p.lr, p.dropout))
            .collect::<Vec<_>>()
            .join(", "),
        seeds[0],
        if sets
            .iter()
            .any(|d| d.1.specs.iter().any(|sp| sp.model == "star" && !sp.tuned))
        {
            " and the STAR ablations (trained only when `--models` names them) STAR's"
        } else {
            ""
        }
    )?;
    if let Some(seed) = args.synthetic_seed {
        writeln!(
            s,
            "- Another synthetic log (`--synthetic-seed {seed}`): the generator's seed is {seed} \
             instead of the preset's, with the preset's sizes and structure. Every model keeps \
             the learning rate and dropout its grid chose on the preset's log (the grid below \
             is that log's: the main page's runs, or for an opt-in model its own runs on that \
             log); only the seeds' runs train and test on this log, which no choice of the \
             experiment has seen."
        )?;
    }
    if !args.models.is_empty() {
        writeln!(
            s,
            "- Models: only {} (`--models`); claims about models left out do not hold.",
            args.models.join(", ")
        )?;
    }
    let generator = match args.synthetic_seed {
        Some(seed) => format!("{seed}"),
        None => "the preset's".into(),
    };
    writeln!(
        s,
        "- Scenario sizes (train / valid / test samples) are listed under each data set.\n\
         - Seeds: on ml-100k each seed draws its own random 80/10/10 split; the synthetic log \
         and its test day are the same for every seed (the generator's seed is {generator}), \
         so there the seed changes only the validation hold-out (10% of the training days' \
         rows), the initialization, the batch order and the dropout masks, and its std is \
         training noise alone.\n"
    )?;
    writeln!(s, "## Claims\n")?;
    writeln!(s, "| data | claim | holds | numbers |\n|---|---|---|---|")?;
    for c in claims {
        writeln!(
            s,
            "| {} | {} | {} | {} |",
            c.dataset,
            c.text,
            if c.holds { "yes" } else { "**no**" },
            c.detail
        )?;
    }
    writeln!(s)?;
    for (ds, r) in sets {
        writeln!(s, "## {}\n", ds.title)?;
        writeln!(s, "| scenario | train | valid | test |\n|---|---|---|---|")?;
        for (l, z) in r.scenario_labels.iter().zip(&r.sizes) {
            writeln!(s, "| {l} | {} | {} | {} |", z[0], z[1], z[2])?;
        }
        writeln!(s)?;
        for metric in ["auc", "logloss"] {
            writeln!(
                s,
                "Test {} (overall and per scenario):\n",
                if metric == "auc" { "AUC" } else { "LogLoss" }
            )?;
            s.push_str(&scenario_header("model", &r.scenario_labels, None));
            for spec in r.specs.iter().filter(|sp| sp.tuned) {
                write!(
                    s,
                    "| {} | {} |",
                    spec.label,
                    fmt_stat(stat(&r.results, spec.label, "all", metric), 4)
                )?;
                for k in 0..r.num_scenarios {
                    write!(
                        s,
                        " {} |",
                        fmt_stat(
                            stat(&r.results, spec.label, &format!("scenario_{k}"), metric),
                            4
                        )
                    )?;
                }
                writeln!(s)?;
            }
            writeln!(s)?;
        }
        // Tables of SAML and its variants only when the page has them (`--models`), against
        // the baselines the page has.
        let has_saml = r.specs.iter().any(|sp| sp.label == "saml");
        let baselines: Vec<&str> = BASELINES
            .into_iter()
            .filter(|b| r.specs.iter().any(|sp| sp.label == *b))
            .collect();
        if has_saml && !baselines.is_empty() {
            writeln!(
                s,
                "SAML minus each baseline, test AUC paired per seed (both trained and tested on \
                 the same seed's split): mean ± std of the differences; `*` where the mean is \
                 larger than its std (with 3 seeds, a rough guide to which gaps are beyond seed \
                 noise):\n"
            )?;
            s.push_str(&scenario_header("SAML minus", &r.scenario_labels, None));
        }
        let paired_row = |s: &mut String, label: &str, a: &str, b: &str| -> Result<()> {
            write!(s, "| {label} | {} |", fmt_paired(&r.results, a, b, "all"))?;
            for k in 0..r.num_scenarios {
                write!(
                    s,
                    " {} |",
                    fmt_paired(&r.results, a, b, &format!("scenario_{k}"))
                )?;
            }
            writeln!(s)?;
            Ok(())
        };
        if has_saml && !baselines.is_empty() {
            for b in &baselines {
                paired_row(&mut s, b, "saml", b)?;
            }
            writeln!(s)?;
        }
        // The variants tuned on the grid like SAML (outside the claims), against the same
        // baselines.
        let tuned_variants: Vec<&str> = r
            .specs
            .iter()
            .filter(|sp| sp.model == "saml" && sp.tuned && sp.variant)
            .map(|sp| sp.label)
            .collect();
        if !tuned_variants.is_empty() && !baselines.is_empty() {
            writeln!(
                s,
                "The variants of SAML tuned on the grid (outside the claims; see the ablation \
                 table) minus each baseline, test AUC paired per seed: mean ± std of the \
                 differences, `*` where the mean is larger than its std:\n"
            )?;
            s.push_str(&scenario_header("variant minus", &r.scenario_labels, None));
            for v in &tuned_variants {
                for b in &baselines {
                    paired_row(&mut s, &format!("{v} minus {b}"), v, b)?;
                }
            }
            writeln!(s)?;
        }
        let saml_specs: Vec<&Spec> = if has_saml {
            r.specs.iter().filter(|sp| sp.model == "saml").collect()
        } else {
            Vec::new()
        };
        if !saml_specs.is_empty() {
            writeln!(
                s,
                "Ablations of SAML (test AUC; in the last column the difference to full SAML, \
                 paired per seed as above):\n"
            )?;
            s.push_str(&scenario_header(
                "variant",
                &r.scenario_labels,
                Some("Δ all"),
            ));
        }
        // A spec's test AUC, overall and per scenario, as a table row (without its end).
        let auc_row = |s: &mut String, spec: &Spec| -> Result<()> {
            write!(
                s,
                "| {} ({}) | {} |",
                spec.label,
                spec.about,
                fmt_stat(stat(&r.results, spec.label, "all", "auc"), 4)
            )?;
            for k in 0..r.num_scenarios {
                write!(
                    s,
                    " {} |",
                    fmt_stat(
                        stat(&r.results, spec.label, &format!("scenario_{k}"), "auc"),
                        4
                    )
                )?;
            }
            Ok(())
        };
        let full = stat(&r.results, "saml", "all", "auc").map_or(f64::NAN, |s| s.mean);
        for spec in saml_specs.iter().copied() {
            auc_row(&mut s, spec)?;
            let a = stat(&r.results, spec.label, "all", "auc").map_or(f64::NAN, |s| s.mean);
            match r.results.paired(spec.label, "saml", "all", "auc") {
                Some(_) => writeln!(
                    s,
                    " {} |",
                    fmt_paired(&r.results, spec.label, "saml", "all")
                )?,
                None => writeln!(s, " {:+.4} |", a - full)?,
            }
        }
        // Each ablation minus the model it ablates, paired per seed and scenario.
        let paired_table =
            |s: &mut String, header: &str, ablations: &[&Spec], base: &str| -> Result<()> {
                s.push_str(&scenario_header(header, &r.scenario_labels, None));
                for spec in ablations {
                    paired_row(s, spec.label, spec.label, base)?;
                }
                Ok(())
            };
        // SAML's ablations per scenario, each minus SAML paired per seed: which part costs or
        // serves which scenario.
        let saml_ablations: Vec<&Spec> =
            saml_specs.iter().copied().filter(|sp| !sp.tuned).collect();
        if !saml_ablations.is_empty() {
            writeln!(
                s,
                "\nEach ablation minus SAML, per scenario, paired per seed (mean ± std of the \
                 differences, `*` where the mean is larger than its std):\n"
            )?;
            paired_table(&mut s, "ablation minus SAML", &saml_ablations, "saml")?;
        }
        // The per-scenario branches alone: `saml-one-branch` also drops the mutual unit, so
        // its difference to SAML mixes two parts; against `saml-no-mutual` only the branches
        // differ.
        let on_page = |label: &str| r.specs.iter().any(|sp| sp.label == label);
        if on_page("saml-one-branch") && on_page("saml-no-mutual") {
            writeln!(
                s,
                "
The per-scenario branches alone: saml-one-branch minus saml-no-mutual (neither \
                 has the mutual unit; they differ only in one branch for every scenario against \
                 one per scenario), paired per seed:\n"
            )?;
            s.push_str(&scenario_header(
                "saml-one-branch minus",
                &r.scenario_labels,
                None,
            ));
            paired_row(
                &mut s,
                "saml-no-mutual",
                "saml-one-branch",
                "saml-no-mutual",
            )?;
        }
        // STAR's ablations (opt-in), each minus STAR paired per seed and slice: which part
        // of STAR serves which scenario.
        let star_ablations: Vec<&Spec> = r
            .specs
            .iter()
            .filter(|sp| sp.model == "star" && !sp.tuned)
            .collect();
        if !star_ablations.is_empty() {
            writeln!(
                s,
                "\nAblations of STAR, at STAR's chosen point (test AUC; then each minus STAR, paired \
                 per seed: mean ± std of the differences, `*` where the mean is larger than its \
                 std):\n"
            )?;
            s.push_str(&scenario_header("variant", &r.scenario_labels, None));
            for spec in r
                .specs
                .iter()
                .filter(|sp| sp.label == "star")
                .chain(star_ablations.iter().copied())
            {
                auc_row(&mut s, spec)?;
                writeln!(s)?;
            }
            writeln!(s)?;
            paired_table(&mut s, "ablation minus STAR", &star_ablations, "star")?;
        }
        if has_saml && !r.has_sequence {
            writeln!(
                s,
                "\n(No behaviour sequence in these data, so there is no scenario attention to ablate.)"
            )?;
        }
        writeln!(s)?;
        writeln!(s, "Cost, size and tuning:\n")?;
        writeln!(
            s,
            "| model | parameters | train µs / sample | relative to Shared | best epochs | grid (lr, dropout: valid AUC) | chosen |\n|---|---|---|---|---|---|---|"
        )?;
        let shared_us = r
            .us_per_sample
            .get("shared")
            .map(|v| v.iter().sum::<f64>() / v.len() as f64);
        for spec in &r.specs {
            let us = r.us_per_sample.get(spec.label);
            let mean_us = us.map(|v| v.iter().sum::<f64>() / v.len() as f64);
            let rel = match (mean_us, shared_us) {
                (Some(a), Some(b)) => format!("{:.2}x", a / b),
                _ => "–".into(),
            };
            let (grid_txt, chosen) = match r.tuning.get(spec.label) {
                Some((pts, c)) => (
                    pts.iter()
                        .map(|(p, v)| format!("{}, {}: {:.4}", p.lr, p.dropout, v))
                        .collect::<Vec<_>>()
                        .join("; "),
                    format!("{}, {}", c.lr, c.dropout),
                ),
                None => (
                    match spec.point_of {
                        "saml" => "(SAML's point)".into(),
                        "star" => "(STAR's point)".into(),
                        p => format!("({p}'s point)"),
                    },
                    String::new(),
                ),
            };
            writeln!(
                s,
                "| {} | {} | {} | {} | {} | {} | {} |",
                spec.label,
                r.params.get(spec.label).copied().unwrap_or(0),
                mean_us.map_or("–".into(), |u| format!("{u:.1}")),
                rel,
                r.best_epochs
                    .get(spec.label)
                    .map(|v| format!("{v:?}"))
                    .unwrap_or_default(),
                grid_txt,
                chosen
            )?;
        }
        writeln!(s)?;
        writeln!(
            s,
            "Training time is wall-clock time of the training steps on a shared 2-core machine \
             (other jobs were running), so the ratios are indicative; the criterion benchmark \
             `cargo bench -p rec-benches --bench saml` measures steps in isolation.\n"
        )?;
        if let Some(c) = mean_matrix(&r.affinity) {
            writeln!(s, "### Learned scenario affinity\n")?;
            writeln!(
                s,
                "The mutual unit's affinity matrix `c` (row = the scenario that borrows, column = \
                 the scenario it borrows from; the diagonal is never used), mean over the seeds, \
                 and the mean gate `g_sm` over the test samples of each scenario (the cosine term \
                 included).\n"
            )?;
            for (key, file) in plots.iter().filter(|(k, _)| k.starts_with(ds.key)) {
                writeln!(s, "![{key}]({file})")?;
            }
            writeln!(s)?;
            write_matrix(&mut s, "c (mean over seeds)", &c, &r.scenario_labels)?;
            if let Some(g) = mean_matrix(&r.gates) {
                write_matrix(&mut s, "mean gate on test", &g, &r.scenario_labels)?;
            }
            if let Some((groups, sim)) = &ds.truth {
                let simf: Vec<Vec<f64>> = sim
                    .iter()
                    .map(|r| r.iter().map(|&x| x as f64).collect())
                    .collect();
                write_matrix(
                    &mut s,
                    "planted similarity cos(m_s, m_t)",
                    &simf,
                    &r.scenario_labels,
                )?;
                writeln!(s, "Planted groups: {groups:?}.\n")?;
                let g = mean_matrix(&r.gates);
                writeln!(
                    s,
                    "| matrix | pair AUC (similar above dissimilar) | Spearman with the planted similarity |\n|---|---|---|"
                )?;
                for (name, m) in [("c", Some(c.clone())), ("mean gate", g)] {
                    if let Some(m) = m {
                        writeln!(
                            s,
                            "| {name} | {} | {:.3} |",
                            pair_auc(&m, groups).map_or("–".into(), |v| format!("{v:.3}")),
                            spearman_offdiag(&m, sim)
                        )?;
                    }
                }
                writeln!(s)?;
            }
        }
    }
    writeln!(s, "## Reproduce\n")?;
    writeln!(
        s,
        "```\n{cmd}            # this page and its PNGs\n{cmd} --json     # plus the tables as one JSON object on the last line\n```"
    )?;
    Ok(s)
}

fn write_matrix(s: &mut String, title: &str, m: &[Vec<f64>], labels: &[String]) -> Result<()> {
    writeln!(s, "{title}:\n")?;
    write!(s, "| |")?;
    for l in labels {
        write!(s, " {l} |")?;
    }
    write!(s, "\n|---|")?;
    for _ in labels {
        write!(s, "---|")?;
    }
    writeln!(s)?;
    for (l, row) in labels.iter().zip(m) {
        write!(s, "| {l} |")?;
        for v in row {
            if v.is_finite() {
                write!(s, " {v:.3} |")?;
            } else {
                write!(s, " – |")?;
            }
        }
        writeln!(s)?;
    }
    writeln!(s)?;
    Ok(())
}

/// Runs the experiment.
pub fn run(args: SamlArgs) -> Result<()> {
    let n_seeds = args.seeds.unwrap_or(if args.quick { 1 } else { 3 });
    anyhow::ensure!(n_seeds >= 1, "--seeds must be at least 1");
    let seeds: Vec<u64> = (1..=n_seeds as u64).collect();
    let mut sets = Vec::new();
    let cache = RunCache::new("saml", args.fresh).verifying(args.verify);
    for ds in datasets(&args)? {
        let r = run_dataset(&ds, &seeds, args.quick, &args.models, &cache)?;
        sets.push((ds, r));
    }
    std::fs::create_dir_all(&args.out)
        .with_context(|| format!("cannot create {}", args.out.display()))?;
    // The quick run writes the same page (it says which mode produced it).
    let suffix = "";
    let mut plots = Vec::new();
    let mut affinity_json = serde_json::Map::new();
    for (ds, r) in &sets {
        let labels = &r.scenario_labels;
        if let Some(c) = mean_matrix(&r.affinity) {
            let masked: Vec<Vec<f64>> = c
                .iter()
                .enumerate()
                .map(|(i, row)| {
                    row.iter()
                        .enumerate()
                        .map(|(j, &v)| if i == j { f64::NAN } else { v })
                        .collect()
                })
                .collect();
            let file = format!("saml-affinity-{}{suffix}.png", ds.key);
            heat_map(
                &args.out.join(&file),
                &format!("{}: learned affinity c (row borrows from column)", ds.key),
                labels,
                labels,
                &masked,
            )?;
            plots.push((format!("{}: learned affinity", ds.key), file));
            let mut entry = json!({ "learned": c, "mean_gates": mean_matrix(&r.gates) });
            if let Some((groups, sim)) = &ds.truth {
                let simf: Vec<Vec<f64>> = sim
                    .iter()
                    .enumerate()
                    .map(|(i, row)| {
                        row.iter()
                            .enumerate()
                            .map(|(j, &v)| if i == j { f64::NAN } else { v as f64 })
                            .collect()
                    })
                    .collect();
                let file = format!("saml-affinity-planted-{}{suffix}.png", ds.key);
                heat_map(
                    &args.out.join(&file),
                    &format!("{}: planted similarity cos(m_s, m_t)", ds.key),
                    labels,
                    labels,
                    &simf,
                )?;
                plots.push((format!("{}: planted similarity", ds.key), file));
                entry["planted"] = json!(sim);
                entry["groups"] = json!(groups);
                entry["pair_auc"] = json!(pair_auc(&c, groups));
                entry["pair_auc_gates"] =
                    json!(mean_matrix(&r.gates).and_then(|g| pair_auc(&g, groups)));
            }
            affinity_json.insert(ds.key.to_string(), entry);
        }
    }
    let all_claims: Vec<Claim> = sets.iter().flat_map(|(ds, r)| claims(ds, r)).collect();
    let page = write_page(
        &args,
        &seeds,
        &sets,
        &all_claims,
        &plots,
        &cache.page_note(),
    )?;
    let path = args.out.join(format!("saml{suffix}.md"));
    rec_trainer::checkpoint::write_atomic(&path, page.as_bytes())?;
    eprintln!("[saml] wrote {}", path.display());
    cache.report_end("[saml] ");
    for c in &all_claims {
        eprintln!(
            "[saml] {} {}: {} ({})",
            c.dataset,
            c.text,
            if c.holds { "holds" } else { "does not hold" },
            c.detail
        );
    }
    if args.json {
        let results: serde_json::Map<String, serde_json::Value> = sets
            .iter()
            .map(|(ds, r)| (ds.key.to_string(), serde_json::to_value(r.results.table())))
            .map(|(k, v)| Ok((k, v?)))
            .collect::<Result<_>>()?;
        let claims_json: Vec<_> = all_claims
            .iter()
            .map(|c| json!({"dataset": c.dataset, "claim": c.text, "holds": c.holds, "detail": c.detail}))
            .collect();
        println!(
            "{}",
            json!({ "results": results, "affinity": affinity_json, "claims": claims_json })
        );
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `--synthetic-seed`: the seeds train on a log of that generator seed while the grid's
    /// units stay the preset's (same keys as the main page's); `--models` keeps the named
    /// models; both refuse to write the main page, and bad labels are errors.
    #[test]
    fn another_synthetic_log_keeps_the_preset_grid_and_models_filter_the_comparison() {
        let args = SamlArgs {
            quick: true,
            only: vec!["synthetic".into()],
            synthetic_seed: Some(77),
            models: vec!["star".into(), "saml".into()],
            out: "target/elsewhere".into(),
            ..SamlArgs::default()
        };
        let ds = &datasets(&args).unwrap()[0];
        assert_eq!(ds.data.options["seed"].as_integer(), Some(77));
        let tune = ds
            .tune_data
            .as_ref()
            .expect("the preset's log for the grid");
        assert!(tune.options.get("seed").is_none());
        let main = SamlArgs {
            quick: true,
            only: vec!["synthetic".into()],
            out: "target/elsewhere".into(),
            ..SamlArgs::default()
        };
        let main_ds = &datasets(&main).unwrap()[0];
        assert_eq!(&main_ds.data, tune);
        assert!(main_ds.tune_data.is_none());
        // The generator seed changes the log.
        let a = rec_trainer::data::load_split(&ds.data).unwrap();
        let b = rec_trainer::data::load_split(tune).unwrap();
        assert_ne!(
            (a.train.len(), a.test.users()),
            (b.train.len(), b.test.users())
        );

        let kept = chosen_specs(specs(true), &args.models).unwrap();
        let labels: Vec<&str> = kept.iter().map(|s| s.label).collect();
        assert_eq!(labels, ["star", "saml"]);
        assert_eq!(chosen_specs(specs(true), &[]).unwrap().len(), 17);
        let err = chosen_specs(specs(true), &["nope".into()]).unwrap_err();
        assert!(err.to_string().contains("unknown model `nope`"), "{err}");
        let err = chosen_specs(specs(true), &["saml-no-mutual".into()]).unwrap_err();
        assert!(err.to_string().contains("add `saml`"), "{err}");
        // STAR's ablations are opt-in, and use STAR's point.
        assert!(
            !chosen_specs(specs(true), &[])
                .unwrap()
                .iter()
                .any(|s| s.opt_in || s.label.starts_with("star-"))
        );
        let err = chosen_specs(specs(true), &["star-no-partitioned-norm".into()]).unwrap_err();
        assert!(err.to_string().contains("add `star`"), "{err}");
        let star_only: Vec<String> = ["star", "star-no-partitioned-norm", "star-no-aux-net"]
            .map(String::from)
            .to_vec();
        let kept = chosen_specs(specs(true), &star_only).unwrap();
        assert_eq!(kept.len(), 3);
        assert!(
            kept.iter()
                .all(|s| s.model == "star" && s.point_of == "star")
        );
        for bad in [
            SamlArgs {
                synthetic_seed: Some(77),
                out: "docs/results".into(),
                ..SamlArgs::default()
            },
            SamlArgs {
                models: vec!["saml".into()],
                out: "docs/results".into(),
                ..SamlArgs::default()
            },
        ] {
            let err = datasets(&bad).err().expect("refused").to_string();
            assert!(err.contains("--out"), "{err}");
        }
    }

    #[test]
    fn a_claim_with_a_missing_or_partial_cell_does_not_hold() {
        let ds = Dataset {
            key: "ml-100k",
            title: "test",
            data: DataConfig::default(),
            epochs: 1,
            batch: 1,
            patience: 1,
            truth: None,
            scenario_labels: vec!["a".into()],
            tune_data: None,
        };
        let result = |skip: Option<&str>, one_seed: Option<&str>| {
            let mut results = Results::new();
            for (m, v) in [
                ("saml", 0.80),
                ("shared", 0.70),
                ("separate", 0.70),
                ("mmoe", 0.70),
                ("star", 0.70),
            ] {
                for seed in 0..3 {
                    if Some(m) == skip || (Some(m) == one_seed && seed > 0) {
                        continue;
                    }
                    for slice in ["all", "scenario_0"] {
                        results.add(m, slice, "auc", v + 0.001 * seed as f64);
                    }
                }
            }
            DatasetResult {
                results,
                ..DatasetResult::new(Vec::new(), vec!["a".into()], vec![[10, 1, 1]])
            }
        };
        let verdicts = |r: &DatasetResult| -> Vec<(bool, String)> {
            claims(&ds, r)
                .into_iter()
                .map(|c| (c.holds, c.detail))
                .collect()
        };
        let full = verdicts(&result(None, None));
        assert_eq!(full.len(), 3);
        assert!(
            full.iter().all(|(h, d)| *h && !d.contains("INCOMPLETE")),
            "{full:?}"
        );
        // STAR missing, or Separate run on one seed only: neither claim may hold.
        for r in [result(Some("star"), None), result(None, Some("separate"))] {
            let v = verdicts(&r);
            assert!(!v[0].0 && v[0].1.contains("INCOMPLETE"), "{v:?}");
        }
        let v = verdicts(&result(None, Some("separate")));
        assert!(!v[1].0 && v[1].1.contains("separate/scenario_0"), "{v:?}");
        // No SAML result at all: one claim that does not hold, not none.
        let v = verdicts(&result(Some("saml"), None));
        assert_eq!(v, [(false, "INCOMPLETE: no SAML result".to_string())]);
    }

    #[test]
    fn a_partial_run_does_not_replace_the_full_page() {
        let args = SamlArgs {
            only: vec!["synthetic".into()],
            out: "docs/results".into(),
            ..SamlArgs::default()
        };
        let Err(e) = datasets(&args) else {
            panic!("a partial run into docs/results was accepted")
        };
        assert!(e.to_string().contains("pass --out DIR"), "{e}");
    }

    /// A synthetic data set of the given scenarios with no data behind it, for the page and
    /// claim logic.
    fn test_dataset(scenarios: &[&str]) -> Dataset {
        Dataset {
            key: "synthetic",
            title: "test",
            data: DataConfig::default(),
            epochs: 1,
            batch: 1,
            patience: 1,
            truth: None,
            scenario_labels: scenarios.iter().map(|s| s.to_string()).collect(),
            tune_data: None,
        }
    }

    #[test]
    fn an_ablation_costs_auc_when_its_paired_difference_is_beyond_its_std() {
        let ds = test_dataset(&["a"]);
        let spec = |label: &'static str| Spec {
            label,
            model: "saml",
            params: toml::Table::new(),
            tuned: false,
            variant: false,
            point_of: "saml",
            opt_in: false,
            about: label,
        };
        // A STAR ablation is no part of SAML's claims, however it compares.
        let star_part = Spec {
            model: "star",
            point_of: "star",
            opt_in: true,
            ..spec("star-part")
        };
        let mut r = DatasetResult::new(
            vec![spec("steady"), spec("noisy"), spec("absent"), star_part],
            vec!["a".into()],
            vec![[10, 1, 1]],
        );
        // Seeds differ a lot (unpaired stds near 0.05) but "steady" is 0.002 below SAML on
        // every seed; "noisy" is below on the mean only.
        for (seed, base) in [(1u64, 0.70), (2, 0.80), (3, 0.75)] {
            for m in ["shared", "separate", "mmoe", "star"] {
                r.results.add_seeded(m, "all", "auc", seed, base - 0.1);
            }
            r.results.add_seeded("saml", "all", "auc", seed, base);
            r.results
                .add_seeded("steady", "all", "auc", seed, base - 0.002);
            let noisy = [0.01, -0.02, 0.005][seed as usize - 1];
            r.results
                .add_seeded("noisy", "all", "auc", seed, base + noisy);
        }
        let c = claims(&ds, &r);
        let find = |label: &str| c.iter().find(|c| c.text.starts_with(label)).unwrap();
        assert!(find("steady").holds, "{}", find("steady").detail);
        assert!(find("steady").detail.ends_with("paired -0.0020 ± 0.0000"));
        assert!(!find("noisy").holds, "{}", find("noisy").detail);
        assert!(!find("absent").holds && find("absent").detail.contains("INCOMPLETE"));
        assert!(!c.iter().any(|c| c.text.contains("star-part")));
    }

    /// The page shows STAR's ablations in their own table (each minus STAR, paired per seed
    /// and scenario), at STAR's point in the cost table, and outside SAML's ablation table.
    #[test]
    fn the_page_shows_star_ablations_against_star() {
        let args = SamlArgs {
            only: vec!["synthetic".into()],
            models: vec!["star".into(), "star-no-partitioned-norm".into()],
            out: "target/elsewhere".into(),
            ..SamlArgs::default()
        };
        let ds = test_dataset(&["a", "b"]);
        let kept = chosen_specs(specs(false), &args.models).unwrap();
        let mut r = DatasetResult::new(kept, ds.scenario_labels.clone(), vec![[10, 1, 1]; 2]);
        for (seed, base) in [(1u64, 0.70), (2, 0.80), (3, 0.75)] {
            for (slice, shift) in [("all", 0.0), ("scenario_0", 0.01), ("scenario_1", -0.02)] {
                r.results
                    .add_seeded("star", slice, "auc", seed, base + shift);
                // Without the norm: 0.01 lower overall on every seed, 0.05 higher on b.
                let d = if slice == "scenario_1" { 0.05 } else { -0.01 };
                r.results.add_seeded(
                    "star-no-partitioned-norm",
                    slice,
                    "auc",
                    seed,
                    base + shift + d,
                );
            }
        }
        let page = write_page(&args, &[1, 2, 3], &[(ds, r)], &[], &[], "").unwrap();
        assert!(page.contains("Ablations of STAR"), "{page}");
        assert!(
            page.contains("| star-no-partitioned-norm | -0.0100 ± 0.0000* | -0.0100 ± 0.0000* | +0.0500 ± 0.0000* |"),
            "{page}"
        );
        assert!(page.contains("(STAR's point)"), "{page}");
        assert!(
            page.contains("the STAR ablations (trained only when `--models` names them) STAR's")
        );
        // Without SAML on the page: no SAML tables, and nothing said about its attention.
        assert!(!page.contains("SAML minus each baseline"), "{page}");
        assert!(!page.contains("Ablations of SAML"), "{page}");
        assert!(!page.contains("No behaviour sequence"), "{page}");
    }

    /// SAML's tables compare it with the baselines the page has, and a page without any says
    /// so in the claim instead of naming a best other model of AUC 0.
    #[test]
    fn saml_tables_compare_only_the_baselines_on_the_page() {
        let page_of = |models: &[&str]| -> String {
            let args = SamlArgs {
                only: vec!["synthetic".into()],
                models: models.iter().map(|m| m.to_string()).collect(),
                out: "target/elsewhere".into(),
                ..SamlArgs::default()
            };
            let ds = test_dataset(&["a"]);
            let kept = chosen_specs(specs(false), &args.models).unwrap();
            let mut r = DatasetResult::new(kept, ds.scenario_labels.clone(), vec![[10, 1, 1]]);
            for (seed, base) in [(1u64, 0.70), (2, 0.80), (3, 0.75)] {
                for slice in ["all", "scenario_0"] {
                    for m in models {
                        let shift = if *m == "saml" { 0.0 } else { -0.01 };
                        r.results.add_seeded(m, slice, "auc", seed, base + shift);
                    }
                }
            }
            let c = claims(&ds, &r);
            write_page(&args, &[1, 2, 3], &[(ds, r)], &c, &[], "").unwrap()
        };
        let alone = page_of(&["saml", "saml-no-mutual"]);
        assert!(!alone.contains("SAML minus each baseline"), "{alone}");
        assert!(!alone.contains("best other"), "{alone}");
        assert!(alone.contains("no baseline to compare"), "{alone}");
        assert!(alone.contains("Ablations of SAML"), "{alone}");
        // The ablation per scenario, paired: 0.01 below SAML on every seed and slice.
        assert!(
            alone.contains("| saml-no-mutual | -0.0100 ± 0.0000* | -0.0100 ± 0.0000* |"),
            "{alone}"
        );
        assert!(
            !alone.contains("The per-scenario branches alone"),
            "{alone}"
        );
        // With the one-branch ablation, its difference to SAML without the mutual unit (0 on
        // every seed: both are 0.01 below SAML).
        let branches = page_of(&["saml", "saml-no-mutual", "saml-one-branch"]);
        let table = branches
            .split("The per-scenario branches alone")
            .nth(1)
            .unwrap_or_else(|| panic!("{branches}"));
        assert!(
            table.contains("| saml-no-mutual | +0.0000 ± 0.0000 | +0.0000 ± 0.0000 |"),
            "{table}"
        );
        let with_star = page_of(&["saml", "star"]);
        assert!(
            with_star.contains("SAML minus each baseline"),
            "{with_star}"
        );
        assert!(
            with_star.contains("| star | +0.0100 ± 0.0000* | +0.0100 ± 0.0000* |"),
            "{with_star}"
        );
        assert!(!with_star.contains("| shared | –"), "{with_star}");
        assert!(with_star.contains("best other star 0.7400"), "{with_star}");
    }

    #[test]
    fn pair_auc_and_spearman() {
        let groups = [0, 0, 1, 1, 2];
        let mut a = vec![vec![0.0; 5]; 5];
        a[0][1] = 1.0;
        a[1][0] = 0.75; // exact in f32 too, so the Spearman check below sees the same ties
        a[2][3] = 0.5;
        assert_eq!(pair_auc(&a, &groups), Some(1.0));
        a[0][4] = 0.875;
        a[4][0] = 0.875;
        // (0,1) = 0.875 ties (0,4) = 0.875; (2,3) = 0.25 loses to (0,4): 14.5 / 16 won.
        assert!((pair_auc(&a, &groups).unwrap() - 14.5 / 16.0).abs() < 1e-12);
        assert_eq!(pair_auc(&a, &[0, 1, 2, 3, 4]), None);
        let b: Vec<Vec<f32>> = a
            .iter()
            .map(|r| r.iter().map(|&x| x as f32).collect())
            .collect();
        assert!((spearman_offdiag(&a, &b) - 1.0).abs() < 1e-12);
    }

    #[test]
    fn every_spec_builds_a_valid_config() {
        let args = SamlArgs {
            quick: true,
            only: vec!["ml-100k".into()],
            ..SamlArgs::default()
        };
        let ds = datasets(&args).unwrap();
        for spec in specs(true) {
            for p in grid(false) {
                let cfg = config(&ds[0], &spec, p, 1).unwrap();
                assert_eq!(cfg.model.name, spec.model);
            }
        }
        assert_eq!(specs(false).len(), 22);
        assert_eq!(specs(true).len(), 23);
        // A tuned spec uses its own point; an untuned one a tuned spec's.
        let all = specs(true);
        for spec in &all {
            assert_eq!(spec.tuned, spec.point_of == spec.label, "{}", spec.label);
            assert!(
                all.iter().any(|t| t.tuned && t.label == spec.point_of),
                "{}",
                spec.label
            );
        }
    }

    /// Each STAR ablation is STAR's configuration with one switch off (the last one: all three),
    /// and the rest at STAR's defaults.
    #[test]
    fn star_ablations_turn_off_one_part_each() {
        let all = specs(false);
        let config_of = |label: &str| -> scenario_saml::StarConfig {
            let spec = all.iter().find(|s| s.label == label).unwrap();
            toml::Value::Table(spec.params.clone()).try_into().unwrap()
        };
        let full = config_of("star");
        assert!(full.partitioned_norm && !full.aux_hidden.is_empty());
        let no_norm = scenario_saml::StarConfig {
            partitioned_norm: false,
            ..full.clone()
        };
        assert_eq!(config_of("star-no-partitioned-norm"), no_norm);
        let no_aux = scenario_saml::StarConfig {
            aux_hidden: Vec::new(),
            ..full.clone()
        };
        assert_eq!(config_of("star-no-aux-net"), no_aux);
        let plain = scenario_saml::StarConfig {
            star_topology: false,
            ..full
        };
        assert_eq!(config_of("star-plain-layers"), plain);
        let none = scenario_saml::StarConfig {
            partitioned_norm: false,
            aux_hidden: Vec::new(),
            ..plain
        };
        assert_eq!(config_of("star-no-scenario-parts"), none);
    }

    /// `saml-one-branch` is SAML with its branches made one and the mutual unit off, nothing
    /// else, at SAML's point, and only on request.
    #[test]
    fn the_one_branch_ablation_is_saml_with_one_branch() {
        let all = specs(false);
        let config_of = |label: &str| -> scenario_saml::SamlConfig {
            let spec = all.iter().find(|s| s.label == label).unwrap();
            toml::Value::Table(spec.params.clone()).try_into().unwrap()
        };
        let want = scenario_saml::SamlConfig {
            scenario_branches: false,
            mutual: false,
            ..config_of("saml")
        };
        assert_eq!(config_of("saml-one-branch"), want);
        let spec = all.iter().find(|s| s.label == "saml-one-branch").unwrap();
        assert!(spec.opt_in && !spec.tuned && spec.point_of == "saml");
    }

    /// The shipped SAML configurations are the experiment's SAML at the point its grid chose on
    /// each data set (ml-100k: lr 0.001, dropout 0.2; synthetic: lr 0.003, dropout 0), so
    /// `cargo xtask train` with them reproduces the page's runs.
    #[test]
    fn the_shipped_saml_configs_are_the_experiments() {
        for (only, file, lr, dropout) in [
            ("ml-100k", "configs/saml-ml100k-ms.toml", 1e-3, 0.2),
            ("synthetic", "configs/saml-synth-countries.toml", 3e-3, 0.0),
        ] {
            let args = SamlArgs {
                only: vec![only.into()],
                ..SamlArgs::default()
            };
            let ds = &datasets(&args).unwrap()[0];
            let spec = specs(ds.truth.is_some())
                .into_iter()
                .find(|s| s.label == "saml")
                .unwrap();
            let want = config(ds, &spec, Point { lr, dropout }, 1).unwrap();
            let path = crate::bench::root().join(file);
            let mut got = Config::from_file(&path).unwrap();
            got.data.seed = 1; // what `--seed 1` does
            assert_eq!(got.data, want.data, "{file}");
            assert_eq!(got.model, want.model, "{file}");
            assert_eq!(got.optimizer, want.optimizer, "{file}");
            assert_eq!(got.train.batch_size, want.train.batch_size, "{file}");
            assert_eq!(got.train.epochs, want.train.epochs, "{file}");
            let es = got.train.early_stopping.expect("early stopping");
            assert_eq!((es.metric.as_str(), es.patience), ("auc", ds.patience));
        }
    }

    #[test]
    fn saml_runs_are_keyed_by_their_configuration_with_defaults_filled_in() {
        let args = SamlArgs {
            quick: true,
            only: vec!["ml-100k".into()],
            ..SamlArgs::default()
        };
        let ds = &datasets(&args).unwrap()[0];
        let all = specs(false);
        let p = grid(true)[0];
        let saml = config(ds, all.iter().find(|s| s.label == "saml").unwrap(), p, 1).unwrap();
        let shared = config(ds, &all[0], p, 1).unwrap();
        // A baseline's key is the configuration as written (earlier entries stay valid).
        let k = key(&shared, 2).unwrap();
        assert!(k.get("saml").is_none());
        assert!(k.get("revision").is_none());
        assert_eq!(k["format"], "saml-fit-2");
        // STAR's key carries its code revision; no other model's does.
        for s in &all {
            let k = key(&config(ds, s, p, 1).unwrap(), 2).unwrap();
            let want = (s.model == "star").then(|| json!(2));
            assert_eq!(k.get("revision"), want.as_ref(), "{}", s.label);
        }
        // SAML's holds its whole configuration, defaults included: a changed default is a
        // changed key, though the written parameters are the same.
        let k = key(&saml, 2).unwrap();
        assert_eq!(k["saml"]["scenario_l2"], 1.0);
        assert_eq!(k["saml"]["aux_in_output"], true);
        let mut explicit = saml.clone();
        explicit
            .model
            .params
            .insert("scenario_l2".into(), 0.5.into());
        assert_ne!(key(&explicit, 2).unwrap(), k);
        assert_eq!(key(&saml, 2).unwrap(), k);
        // SAML's narrow branches are in its key; the full-width variant's key has no
        // `branch_hidden` at all, so it is the key SAML's runs had before the switch existed.
        assert_eq!(k["saml"]["branch_hidden"], json!(BRANCH_HIDDEN));
        let wide = all
            .iter()
            .find(|s| s.label == "saml-full-branches")
            .unwrap();
        assert!(wide.tuned && wide.variant);
        let kw = key(&config(ds, wide, p, 1).unwrap(), 2).unwrap();
        assert!(kw["saml"].get("branch_hidden").is_none());
        assert!(
            kw["config"]["model"]["params"]
                .get("branch_hidden")
                .is_none()
        );
        assert_eq!(kw["saml"]["hidden"], json!(HIDDEN));
        // The factored variant is tuned, and only its key holds the switch (SAML's has none:
        // it is the key SAML's runs had before the switch existed).
        let factored = all
            .iter()
            .find(|s| s.label == "saml-shared-branches")
            .unwrap();
        assert!(factored.tuned && factored.variant);
        let kf = key(&config(ds, factored, p, 1).unwrap(), 2).unwrap();
        assert_eq!(kf["saml"]["shared_branches"], json!(true));
        assert!(k["saml"].get("shared_branches").is_none());
    }

    /// Separate's networks keep their own best epochs: merging network 1 of a later state into
    /// an earlier one gives scenario 1's samples the later scores and every other sample the
    /// earlier ones; and a whole Separate fit runs on the quick synthetic data.
    #[test]
    fn separate_networks_keep_their_own_best_states() {
        let args = SamlArgs {
            quick: true,
            only: vec!["synthetic".into()],
            ..SamlArgs::default()
        };
        let ds = &datasets(&args).unwrap()[0];
        let split = rec_trainer::data::load_split(&DataConfig {
            seed: 1,
            ..ds.data.clone()
        })
        .unwrap();
        let spec = specs(true)
            .into_iter()
            .find(|s| s.label == "separate")
            .unwrap();
        let cfg = config(ds, &spec, grid(true)[0], 1).unwrap();
        let mut model = build_model(&cfg, &split.schema, &split.train, &Device::Cpu).unwrap();
        let mut opt = DenseOptimizer::new(cfg.optimizer.dense, model.dense_vars()).unwrap();
        let mut ctx = Ctx::new(true, 0, ChaCha8Rng::seed_from_u64(1));
        let mut steps = |model: &mut Box<dyn rec_nn::Model>, n: usize| {
            for b in BatchIter::new(&split.train, 256, 1, 0, true).take(n) {
                rec_nn::train_step(model.as_mut(), &mut opt, &b, &mut ctx).unwrap();
            }
        };
        steps(&mut model, 2);
        let early = state_copy(model.as_ref()).unwrap();
        let p_early = rec_nn::predict(model.as_mut(), &split.valid).unwrap()[0].clone();
        steps(&mut model, 6);
        let late = state_copy(model.as_ref()).unwrap();
        let p_late = rec_nn::predict(model.as_mut(), &split.valid).unwrap()[0].clone();
        let mut merged = early.clone();
        take_network(&mut merged, &late, 1).unwrap();
        rec_nn::io::load_model_state(model.as_mut(), &merged.0, &merged.1).unwrap();
        let p = rec_nn::predict(model.as_mut(), &split.valid).unwrap()[0].clone();
        let sc = split.valid.scenarios();
        let (mut ones, mut others) = (0, 0);
        for i in 0..p.len() {
            if sc[i] == 1 {
                assert_eq!(p[i], p_late[i], "sample {i} of scenario 1");
                ones += 1;
            } else {
                assert_eq!(p[i], p_early[i], "sample {i} of scenario {}", sc[i]);
                others += 1;
            }
        }
        assert!(ones > 0 && others > 0);
        // The six steps changed scenario 1's scores, so the check above can fail.
        assert!(
            sc.iter()
                .zip(p_early.iter().zip(&p_late))
                .any(|(&s, (a, b))| s == 1 && a != b)
        );
        let r = fit(&cfg, &split, 1).unwrap();
        assert!(
            (1..=cfg.train.epochs).contains(&r.best_epoch),
            "{}",
            r.best_epoch
        );
        assert!(r.valid_auc > 0.5 && r.valid_auc < 1.0, "{}", r.valid_auc);
    }
}
