//! The run report: `report.md` with the configuration, the learning curves (PNG) and the test
//! metrics of the kept checkpoint.

use std::fmt::Write as _;
use std::path::Path;

use anyhow::Result;

use crate::checkpoint::write_atomic;
use crate::config::Config;
use crate::plot::{LineChart, Series, line_chart};
use crate::train::Outcome;

/// The thread settings the speed above was measured with (candle's element-wise pool and the
/// matmuls), as the process saw them.
fn thread_note() -> String {
    let var = |name: &str| match std::env::var(name) {
        Ok(v) => format!("{name}={v}"),
        Err(_) => format!("{name} unset"),
    };
    format!(
        "Threads: {} (element-wise; unset follows the matmuls), {} (matmuls; unset means candle's default, the machine's cores).",
        var("CANDLE_NUM_THREADS"),
        var("RAYON_NUM_THREADS")
    )
}

/// Writes `report.md`, `loss.png` and `valid.png` into `run_dir`.
pub fn write(run_dir: &Path, cfg: &Config, outcome: &Outcome) -> Result<()> {
    let mut md = String::new();
    writeln!(
        md,
        "# Run report: {} on {} ({})\n",
        cfg.model.name, cfg.data.dataset, cfg.data.protocol
    )?;
    writeln!(
        md,
        "Seed {}; {} steps; kept {}{}; {} ({:.1} s in training steps).\n",
        cfg.data.seed,
        outcome.steps,
        outcome.kept(),
        if outcome.stopped_early {
            " (early stopping)"
        } else {
            ""
        },
        outcome.speed(),
        outcome.train_seconds
    )?;
    if let Some(from) = &outcome.warm_start {
        writeln!(md, "Warm-started from the checkpoint {}.\n", from.display())?;
    }
    writeln!(md, "{}\n", thread_note())?;
    writeln!(
        md,
        "## Test metrics (kept checkpoint)\n\n```text\n{}```\n",
        outcome.test
    )?;
    writeln!(
        md,
        "## Validation metrics (kept checkpoint)\n\n```text\n{}```\n",
        outcome.valid
    )?;
    if let Some(size) = &outcome.size {
        writeln!(
            md,
            "## Model size (kept checkpoint)\n\nBytes to serve: parameters and any ID-to-row map, no optimizer state; a full table holds one `f32` row per ID.\n\n{}",
            size.markdown()
        )?;
    }

    let epochs: Vec<f64> = outcome.history.iter().map(|r| r.epoch as f64).collect();
    if !epochs.is_empty() {
        let loss = Series::new(
            "train loss",
            epochs
                .iter()
                .zip(&outcome.history)
                .map(|(&e, r)| (e, r.train_loss))
                .collect(),
        );
        line_chart(
            &run_dir.join("loss.png"),
            &LineChart {
                title: "Training loss",
                x_label: "epoch",
                y_label: "mean loss",
                log_x: false,
            },
            &[loss],
        )?;
        // One curve per (task, metric) of the "all" slice.
        let mut curves: std::collections::BTreeMap<String, Vec<(f64, f64)>> = Default::default();
        for r in &outcome.history {
            for (task, report) in &r.valid.tasks {
                for (metric, &v) in report
                    .slices
                    .get("all")
                    .map(|s| &s.metrics)
                    .into_iter()
                    .flatten()
                {
                    curves
                        .entry(format!("{task}/{metric}"))
                        .or_default()
                        .push((r.epoch as f64, v));
                }
            }
        }
        let series: Vec<Series> = curves.into_iter().map(|(n, p)| Series::new(n, p)).collect();
        if !series.is_empty() {
            line_chart(
                &run_dir.join("valid.png"),
                &LineChart {
                    title: "Validation metrics",
                    x_label: "epoch",
                    y_label: "value",
                    log_x: false,
                },
                &series,
            )?;
        }
        writeln!(
            md,
            "## Learning curves\n\n![training loss](loss.png)\n\n![validation metrics](valid.png)\n"
        )?;
        writeln!(
            md,
            "| epoch | step | train loss | watched | samples/s |\n|---|---|---|---|---|"
        )?;
        for r in &outcome.history {
            writeln!(
                md,
                "| {} | {} | {:.5} | {} | {:.0} |",
                r.epoch,
                r.step,
                r.train_loss,
                r.watched
                    .map(|w| format!("{w:.5}"))
                    .unwrap_or_else(|| "-".into()),
                r.samples_per_sec
            )?;
        }
    }
    writeln!(md, "\n## Configuration\n\n```toml\n{}```", cfg.to_toml()?)?;
    write_atomic(&run_dir.join("report.md"), md.as_bytes())
}
