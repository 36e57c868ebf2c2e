//! `cargo xtask bench`: the criterion benchmarks of `benches/` (package `rec-benches`), run in
//! the release profile with the thread count pinned, so that a figure comes with its settings.

use std::process::Command;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Options of `cargo xtask bench`.
#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Benchmark targets to run (`metrics`, `embedding`, `cel`, ...); all when none is given.
    pub benches: Vec<String>,
    /// Only benchmarks whose name contains this (criterion's filter).
    #[arg(long)]
    pub filter: Option<String>,
    /// Shorter measurement (criterion `--quick`): rougher figures in a fraction of the time.
    #[arg(long)]
    pub quick: bool,
    /// Threads for candle's element-wise kernels and the matmuls (`CANDLE_NUM_THREADS` and
    /// `RAYON_NUM_THREADS`); the figures in docs/benchmarks.md say which they used.
    #[arg(long, default_value_t = 1)]
    pub threads: usize,
}

/// Runs `cargo bench -p rec-benches` with the chosen targets, filter and thread count.
pub fn run(args: BenchArgs) -> Result<()> {
    if args.threads == 0 {
        bail!("--threads must be at least 1");
    }
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let mut cmd = Command::new(cargo);
    cmd.args(["bench", "-p", "rec-benches"]);
    for b in &args.benches {
        cmd.args(["--bench", b]);
    }
    cmd.arg("--");
    if args.quick {
        cmd.arg("--quick");
    }
    if let Some(f) = &args.filter {
        cmd.arg(f);
    }
    let threads = args.threads.to_string();
    cmd.env("CANDLE_NUM_THREADS", &threads)
        .env("RAYON_NUM_THREADS", &threads);
    eprintln!("bench: {threads} thread(s): {cmd:?}");
    let status = cmd.status().context("cannot start cargo bench")?;
    if !status.success() {
        bail!("cargo bench failed ({status})");
    }
    Ok(())
}
