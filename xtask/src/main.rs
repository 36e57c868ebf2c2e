//! `cargo xtask`: project automation (data, training, experiments, benchmarks, CI).
//!
//! Each command group lives in its own module and exposes a clap `Subcommand` enum plus a `run`
//! function; `main` only dispatches. `cargo xtask` with no argument prints this help.

use clap::{Parser, Subcommand};

mod bench;
mod bench_compare;
mod bench_scale;
mod ci;
mod data;
#[cfg(test)]
mod doc_links;
mod experiment;
mod synth;
mod train;

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
    /// Train a model (with no argument: the quickstart on MovieLens-100k).
    Train(train::TrainArgs),
    /// Evaluate a checkpoint on the validation and test splits of its configuration.
    Eval(train::EvalArgs),
    /// Score the rows of a CSV file with a model trained on your own CSV data.
    Predict(train::PredictArgs),
    /// Run what CI runs: fetch the data, rustfmt, clippy, the tests and the docs.
    Ci(ci::CiArgs),
    /// Run the criterion benchmarks (release profile, pinned thread count).
    Bench(bench::BenchArgs),
    /// Experiments behind docs/results/ (`experiment cel|saml|dupn`; `--quick`, minutes
    /// instead of hours, writes to target/quick-results/ unless --out says otherwise).
    #[command(subcommand)]
    Experiment(experiment::ExperimentCommand),
}

fn main() -> anyhow::Result<()> {
    // Keep freed step tensors in the process instead of returning them to the OS every step
    // (about 10x faster small training steps with glibc; see rec_nn::sys).
    rec_nn::sys::tune_malloc();
    // One matmul thread on machines of at most two cores unless RAYON_NUM_THREADS is set
    // (1.2-1.3x faster training there; see rec_nn::sys::thread_policy).
    // SAFETY: nothing has started a thread yet; logging starts below.
    unsafe { rec_nn::sys::thread_policy() };
    init_logging();
    match Cli::parse().command {
        Command::Data(cmd) => data::run(cmd),
        Command::Train(args) => train::run(args),
        Command::Eval(args) => train::eval(args),
        Command::Predict(args) => train::predict(args),
        Command::Ci(args) => ci::run(args),
        Command::Experiment(cmd) => experiment::run(cmd),
        Command::Bench(args) => bench::run(args),
    }
}

/// Logs go to stderr; `RUST_LOG` overrides the default level (`info` for this project).
fn init_logging() {
    use tracing_subscriber::EnvFilter;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| {
        EnvFilter::new("warn,rec_trainer=info,rec_data=info,rec_nn=info,embedding_cel=info,scenario_saml=info,user_dupn=info")
    });
    use std::io::IsTerminal;
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
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
        let cli = Cli::try_parse_from(["xtask", "train", "--resume"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Train(train::TrainArgs {
                resume: Some(None),
                ..
            })
        ));
        // --verify is a percentage.
        let verify = |args: &[&str]| match Cli::try_parse_from(args).map(|c| c.command) {
            Ok(Command::Experiment(experiment::ExperimentCommand::Saml(a))) => Some(a.verify),
            Ok(Command::Experiment(experiment::ExperimentCommand::Dupn(a))) => Some(a.verify),
            _ => None,
        };
        assert_eq!(verify(&["xtask", "experiment", "saml"]), Some(0));
        assert_eq!(
            verify(&["xtask", "experiment", "dupn", "--verify", "10"]),
            Some(10)
        );
        assert_eq!(
            verify(&["xtask", "experiment", "saml", "--verify", "100"]),
            Some(100)
        );
        assert_eq!(
            verify(&["xtask", "experiment", "saml", "--verify", "101"]),
            None
        );
        assert_eq!(
            verify(&["xtask", "experiment", "dupn", "--verify", "-1"]),
            None
        );
        // P-SCALE's flags, each alone, select P-SCALE rather than the criterion benchmarks.
        let bench = |args: &[&str]| match Cli::try_parse_from(args).unwrap().command {
            Command::Bench(b) => bench::wants_scale(&b),
            _ => panic!("not a bench command"),
        };
        assert!(bench(&["xtask", "bench", "--scale-replot"]));
        assert!(bench(&["xtask", "bench", "--scale"]));
        assert!(!bench(&["xtask", "bench", "--quick"]));
        let cli =
            Cli::try_parse_from(["xtask", "train", "--resume", "runs/x", "--model", "fm"]).unwrap();
        assert!(matches!(
            cli.command,
            Command::Train(train::TrainArgs {
                resume: Some(Some(_)),
                ..
            })
        ));
    }
}
