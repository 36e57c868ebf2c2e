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

fn cargo() -> Command {
    Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
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
