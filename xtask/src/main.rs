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

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_is_well_formed_and_parses_the_data_commands() {
        Cli::command().debug_assert();
        let cli =
            Cli::try_parse_from(["xtask", "data", "stats", "ml-100k", "--json", "--seed", "7"])
                .unwrap();
        assert!(matches!(
            cli.command,
            Command::Data(data::DataCommand::Stats {
                seed: 7,
                json: true,
                ..
            })
        ));
        assert!(Cli::try_parse_from(["xtask", "data", "fetch", "ml-1m"]).is_err());
        assert!(Cli::try_parse_from(["xtask"]).is_err());
    }
}
