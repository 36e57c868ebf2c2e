//! `cargo xtask`: project automation (data, training, experiments, benchmarks, CI).
//!
//! Minimal entry point for the `data synth` command; the full command tree lives on the data
//! branch and takes `synth::Args` / `synth::run` as its `data synth` subcommand.

use clap::{Parser, Subcommand};

mod synth;

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Project automation")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Data sets.
    Data {
        #[command(subcommand)]
        cmd: DataCmd,
    },
}

#[derive(Subcommand)]
enum DataCmd {
    /// Generate synthetic e-commerce logs (Parquet + ground truth JSON).
    Synth(synth::Args),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().cmd {
        Cmd::Data {
            cmd: DataCmd::Synth(args),
        } => synth::run(args),
    }
}
