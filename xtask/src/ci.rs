//! `cargo xtask ci`: exactly what CI runs (`.ci/run` calls it).

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use clap::Args;

/// Options of `cargo xtask ci`.
#[derive(Args, Debug)]
pub struct CiArgs {
    /// Skip formatting, clippy and docs; only fetch the data and run the tests.
    #[arg(long)]
    pub tests_only: bool,
}

/// Cargo, with the environment `cargo xtask` was started in. Incremental compilation is off
/// unless CARGO_INCREMENTAL says otherwise (`build.incremental` in .cargo/config.toml): a CI
/// checkout is built once, the caches would be about a third of its target directory (enough
/// to fill a small CI disk), and the steps must build with the same setting as the xtask
/// binary that runs them, or they compile every workspace crate again.
fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
}

/// The space a CI run's target directory needs on a fresh checkout: a 2.07 GB peak measured,
/// and 1.5 GB at the end of a run since the tests step reuses the xtask build
/// (docs/ARCHITECTURE.md, section xtask), with a margin.
const CI_DISK_BYTES: u64 = 3_000_000_000;

/// Says up front, with the numbers, when the disk looks too small for the build, instead of
/// letting a compiler step fail half-way with "No space left on device".
fn check_disk() {
    let dir = std::env::var_os("CARGO_TARGET_DIR")
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::path::PathBuf::from("."));
    let probe = if dir.exists() {
        dir
    } else {
        std::path::PathBuf::from(".")
    };
    match rec_trainer::train::free_bytes(&probe) {
        Some(free) if free < CI_DISK_BYTES => eprintln!(
            "== warning: {} MB free on the disk of {}; a CI build from a fresh checkout needs about {} MB",
            free / 1_000_000,
            probe.display(),
            CI_DISK_BYTES / 1_000_000
        ),
        Some(free) => eprintln!("== disk: {} MB free", free / 1_000_000),
        None => {}
    }
}

fn step(name: &str, mut cmd: Command) -> Result<()> {
    eprintln!("== {name}: {cmd:?}");
    let t = Instant::now();
    let status = cmd
        .status()
        .with_context(|| format!("cannot start `{name}`"))?;
    eprintln!(
        "== {name}: {} in {:.0} s",
        if status.success() { "ok" } else { "FAILED" },
        t.elapsed().as_secs_f64()
    );
    if !status.success() {
        bail!("`{name}` failed ({status})");
    }
    Ok(())
}

/// Runs the CI steps in order, stopping at the first failure: fetch MovieLens-100k (the tests
/// that use real data need it), rustfmt check, clippy with warnings denied, the whole test
/// suite, and the docs with warnings denied.
pub fn run(args: CiArgs) -> Result<()> {
    let t = Instant::now();
    check_disk();
    eprintln!("== data: fetching MovieLens-100k if needed");
    crate::data::fetch_ml100k()?;
    if !args.tests_only {
        let mut fmt = cargo();
        fmt.args(["fmt", "--all", "--", "--check"]);
        step("rustfmt", fmt)?;
        let mut clippy = cargo();
        clippy.args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]);
        step("clippy", clippy)?;
    }
    let mut test = cargo();
    test.args(["test", "--workspace"]);
    // The property tests draw new cases on every `cargo test`; CI draws the same ones every time
    // (seed 0 unless PROPTEST_RNG_SEED is set), so a red CI run can be rerun and a green one
    // stays green. The fuzz properties already default to seed 0 (REC_FUZZ_SEED).
    let seed = std::env::var("PROPTEST_RNG_SEED").unwrap_or_else(|_| "0".into());
    eprintln!("== tests: property tests from PROPTEST_RNG_SEED={seed}");
    test.env("PROPTEST_RNG_SEED", seed);
    step("tests", test)?;
    if !args.tests_only {
        let mut doc = cargo();
        doc.args(["doc", "--workspace", "--no-deps"]);
        doc.env("RUSTDOCFLAGS", "-D warnings");
        step("docs", doc)?;
    }
    eprintln!("== ci passed in {:.0} s", t.elapsed().as_secs_f64());
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    /// Every package of a dependency graph with the feature sets it is built with, from `cargo
    /// tree` (a package built for a procedural macro or a build script has its own).
    fn features(args: &[&str]) -> BTreeMap<String, BTreeSet<String>> {
        let out = super::cargo()
            .arg("tree")
            .args(args)
            .args(["--locked", "--prefix", "none", "-f", "{p}|{f}"])
            .output()
            .expect("cargo tree runs");
        assert!(
            out.status.success(),
            "cargo tree failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let mut all: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
        for line in String::from_utf8(out.stdout)
            .expect("cargo tree prints UTF-8")
            .lines()
        {
            if let Some((package, features)) = line.trim_end_matches(" (*)").split_once('|') {
                all.entry(package.to_string())
                    .or_default()
                    .insert(features.to_string());
            }
        }
        all
    }

    /// `cargo xtask` builds xtask and its dependencies; `cargo test --workspace` then builds the
    /// same crates with the dev-dependencies' features added. Where a feature differs, every
    /// crate above it (candle, all workspace crates) is compiled a second time, about three
    /// minutes of a CI run. The remedy is the `getrandom` entry in the workspace Cargo.toml:
    /// turn the missing features on in a normal dependency of xtask.
    #[test]
    fn the_test_build_reuses_what_cargo_xtask_built() {
        let xtask = features(&["-p", "xtask", "-e", "normal,build"]);
        let tests = features(&["--workspace", "-e", "normal,build,dev"]);
        assert!(
            xtask.len() > 100 && xtask.keys().any(|p| p.starts_with("candle-core ")),
            "unexpected cargo tree output: {xtask:?}"
        );
        let differ: Vec<String> = xtask
            .iter()
            .filter(|(package, f)| tests.get(*package) != Some(*f))
            .map(|(package, f)| {
                format!(
                    "{package}: {f:?} for cargo xtask, {:?} for the tests",
                    tests.get(package)
                )
            })
            .collect();
        assert!(
            differ.is_empty(),
            "features differ between `cargo xtask` and `cargo test --workspace`:\n{}",
            differ.join("\n")
        );
    }
}
