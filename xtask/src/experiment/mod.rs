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
        ExperimentCommand::Cel(mut args) => {
            quick_out(args.quick, &mut args.out);
            cel::run(args)
        }
        ExperimentCommand::Saml(mut args) => {
            quick_out(args.quick, &mut args.out);
            saml::run(args)
        }
        ExperimentCommand::Dupn(mut args) => {
            quick_out(args.quick, &mut args.out);
            dupn::run(args)
        }
    }
}

/// Where `--quick` writes when `--out` is left at docs/results.
pub(crate) const QUICK_RESULTS: &str = "target/quick-results";

/// A `--quick` run writes its pages under [`QUICK_RESULTS`] instead of docs/results, whose
/// pages are the full runs the README quotes: a quick look must not replace them.
pub(crate) fn quick_out(quick: bool, out: &mut std::path::PathBuf) {
    if quick && is_default_results_dir(out) {
        *out = QUICK_RESULTS.into();
        eprintln!(
            "[experiment] --quick writes to {QUICK_RESULTS}/ (docs/results keeps the full runs' pages)"
        );
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quick_run_leaves_the_committed_pages_alone() {
        let mut out = std::path::PathBuf::from("docs/results");
        quick_out(true, &mut out);
        assert_eq!(out, std::path::PathBuf::from(QUICK_RESULTS));
        // However docs/results is spelt.
        let mut out = std::path::PathBuf::from("./docs/./results");
        quick_out(true, &mut out);
        assert_eq!(out, std::path::PathBuf::from(QUICK_RESULTS));
        // A full run, and a quick one with its own --out, write where they are told.
        let mut out = std::path::PathBuf::from("docs/results");
        quick_out(false, &mut out);
        assert_eq!(out, std::path::PathBuf::from("docs/results"));
        let mut out = std::path::PathBuf::from("elsewhere");
        quick_out(true, &mut out);
        assert_eq!(out, std::path::PathBuf::from("elsewhere"));
    }
}
