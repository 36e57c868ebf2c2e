//! `cargo xtask`: project automation (data, training, experiments, benchmarks, CI).
//!
//! Each command group lives in its own module and exposes a clap `Subcommand` enum plus a `run`
//! function; `main` only dispatches. `cargo xtask` with no argument prints this help.

use clap::{Parser, Subcommand};

mod data;

/// Project automation for rec-rs.
#[derive(Parser)]
#[command(
    name = "cargo xtask",
    bin_name = "cargo xtask",
    version,
    arg_required_else_help = true
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Data sets: fetch them, print their statistics and protocol sizes.
    #[command(subcommand)]
    Data(data::DataCommand),
}

fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Data(cmd) => data::run(cmd),
    }
}
