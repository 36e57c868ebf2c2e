//! `cargo xtask experiment ...`: the experiments behind docs/results/, one file per method.
//! Each writes its results page with tables and PNG plots, and with `--json` prints the
//! result table (model -> slice -> metric -> mean and std over seeds) as one JSON object on
//! the last line.

use anyhow::Result;
use clap::Subcommand;

pub mod cache;
pub mod cel;
pub mod dupn;
pub mod probe;
pub mod saml;

/// The experiment commands.
#[derive(Subcommand, Debug)]
pub enum ExperimentCommand {
    /// Clustered Embedding Learning: memory vs metric, cold slices, identifiability,
    /// CEL-Lite (writes docs/results/cel.md).
    Cel(cel::CelArgs),
    /// Multi-scenario: SAML against Shared, Separate, MMoE and STAR on ml-100k P-MS and the
    /// synthetic countries, ablations, learned affinity (writes docs/results/saml.md).
    Saml(saml::SamlArgs),
    /// Deep User Perception Network: the task table on P-ECOM and P-SEQ, ablations,
    /// single- vs multi-task, transfer to SPP, attention analysis (writes docs/results/dupn.md).
    Dupn(dupn::DupnArgs),
}

/// Runs an experiment command.
pub fn run(cmd: ExperimentCommand) -> Result<()> {
    match cmd {
        ExperimentCommand::Cel(args) => cel::run(args),
        ExperimentCommand::Saml(args) => saml::run(args),
        ExperimentCommand::Dupn(args) => dupn::run(args),
    }
}
