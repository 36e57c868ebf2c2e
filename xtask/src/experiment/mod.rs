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

/// Whether `out` is the default results directory `docs/results` (however it is spelt: a
/// relative, `./` or absolute path to it), where a partial run (`--only`) must not write.
pub(crate) fn is_default_results_dir(out: &std::path::Path) -> bool {
    let default = std::path::Path::new("docs/results");
    match (out.canonicalize(), default.canonicalize()) {
        (Ok(a), Ok(b)) => a == b,
        // Not created yet: compare the spelling, `.` components left out.
        _ => {
            fn plain(p: &std::path::Path) -> Vec<std::path::Component<'_>> {
                p.components()
                    .filter(|c| *c != std::path::Component::CurDir)
                    .collect()
            }
            plain(out) == plain(default)
        }
    }
}
