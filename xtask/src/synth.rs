//! `cargo xtask data synth`: writes a synthetic e-commerce dataset (Parquet + ground truth JSON).
//!
//! ```text
//! cargo xtask data synth --preset small --out data/synth-small
//! cargo xtask data synth --preset large --users 1000000 --out data/synth-1m --threads 2
//! ```
//! Prints the generation speed (events per second) and the peak resident memory of the process.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use rec_data::synth::{Generator, SynthConfig, World, write_dataset};

/// Options of `cargo xtask data synth`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Preset to start from: tiny, small (model tests; the default) or large (scale
    /// benchmarks).
    #[arg(long)]
    pub preset: Option<String>,
    /// TOML configuration file instead of --preset (keys it leaves out are the small preset's;
    /// the flags below still apply).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Number of users.
    #[arg(long)]
    pub users: Option<u64>,
    /// Number of items.
    #[arg(long)]
    pub items: Option<u32>,
    /// Number of days (the last is the test day).
    #[arg(long)]
    pub days: Option<u32>,
    /// Seed.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Users per chunk (one events file per chunk; bounds the memory).
    #[arg(long)]
    pub chunk_users: Option<u32>,
    /// Generator threads (default: all cores). The output does not depend on it.
    #[arg(long, value_parser = clap::builder::RangedU64ValueParser::<usize>::new().range(1..))]
    pub threads: Option<usize>,
    /// Output directory (must not exist unless --overwrite); needed unless --print-config or
    /// --dry-run.
    #[arg(long, required_unless_present_any = ["print_config", "dry_run"])]
    pub out: Option<PathBuf>,
    /// Replace the output directory if it holds an earlier generated data set (or nothing).
    #[arg(long)]
    pub overwrite: bool,
    /// Print the configuration that would be used and exit.
    #[arg(long)]
    pub print_config: bool,
    /// Generate without writing anything (measures the generator alone).
    #[arg(long)]
    pub dry_run: bool,
    /// Print the resident memory after every chunk (shows that it does not grow with users).
    #[arg(long)]
    pub trace_memory: bool,
}

/// The configuration `args` describe.
pub fn config(args: &Args) -> Result<SynthConfig> {
    let mut cfg = match (&args.config, &args.preset) {
        (Some(_), Some(_)) => anyhow::bail!(
            "give --config or --preset, not both (a configuration file starts from the small \
             preset for the keys it leaves out)"
        ),
        (Some(p), None) => SynthConfig::from_toml_file(p)?,
        (None, p) => SynthConfig::preset(p.as_deref().unwrap_or("small"))?,
    };
    if let Some(v) = args.users {
        cfg.users = v;
    }
    if let Some(v) = args.items {
        cfg.items = v;
    }
    if let Some(v) = args.days {
        cfg.days = v;
    }
    if let Some(v) = args.seed {
        cfg.seed = v;
    }
    if let Some(v) = args.chunk_users {
        cfg.chunk_users = v;
    }
    cfg.validate()?;
    Ok(cfg)
}

/// A `/proc/self/status` field in KiB (Linux; `None` elsewhere).
fn status_kb(field: &str) -> Option<u64> {
    proc_kb("/proc/self/status", field)
}

/// A `name: value kB` field of a `/proc` file (Linux; `None` elsewhere).
fn proc_kb(file: &str, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(file).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// Peak resident set size of this process in bytes (Linux; `None` elsewhere).
fn peak_rss() -> Option<u64> {
    status_kb("VmHWM:").map(|kb| kb * 1024)
}

fn dir_bytes(dir: &std::path::Path) -> u64 {
    let mut total = 0;
    if let Ok(entries) = std::fs::read_dir(dir) {
        for e in entries.flatten() {
            let p = e.path();
            total += if p.is_dir() {
                dir_bytes(&p)
            } else {
                e.metadata().map(|m| m.len()).unwrap_or(0)
            };
        }
    }
    total
}

/// Bytes the generator's world holds per catalogue item (measured with `--dry-run`: peak RSS
/// 122 MiB at 10^6 items, 484 MiB at 4 x 10^6).
const WORLD_BYTES_PER_ITEM: u64 = 127;

/// `MemAvailable` of `/proc/meminfo` in bytes (Linux; `None` elsewhere).
fn available_memory() -> Option<u64> {
    proc_kb("/proc/meminfo", "MemAvailable:").map(|kb| kb * 1024)
}

/// Refuses a catalogue whose world would not fit the memory available now, before minutes of
/// building it end in the kernel's out-of-memory kill. Unknown memory is not checked.
fn check_world_memory(items: u32, available: Option<u64>) -> Result<()> {
    let need = items as u64 * WORLD_BYTES_PER_ITEM;
    if let Some(avail) = available
        && need > avail
    {
        let gib = |b: u64| b as f64 / (1u64 << 30) as f64;
        anyhow::bail!(
            "`items` = {items} needs about {:.1} GiB for the generator's world ({} bytes an \
             item, every item is held in memory), but {:.1} GiB are available: use fewer items",
            gib(need),
            WORLD_BYTES_PER_ITEM,
            gib(avail)
        );
    }
    Ok(())
}

/// Runs the command.
pub fn run(args: Args) -> Result<()> {
    let cfg = config(&args)?;
    if args.print_config {
        print!("{}", cfg.to_toml_string());
        return Ok(());
    }
    check_world_memory(cfg.items, available_memory())?;
    let threads = args.threads.unwrap_or_else(|| {
        std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1)
    });
    let t0 = Instant::now();
    let world = Arc::new(World::new(&cfg).context("building the synthetic world")?);
    let t_world = t0.elapsed().as_secs_f64();
    eprintln!(
        "world: {} items, {} clusters, {} scenarios, built and calibrated in {t_world:.2} s",
        cfg.items,
        cfg.latent.item_clusters,
        cfg.num_scenarios()
    );
    let bar = indicatif::ProgressBar::new(cfg.users);
    bar.set_style(
        indicatif::ProgressStyle::with_template(
            "{elapsed_precise} [{bar:40}] {pos}/{len} users {msg}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let t1 = Instant::now();
    let mut chunk = 0u64;
    if args.dry_run {
        let (mut users, mut events) = (0u64, 0u64);
        for chunk in Generator::new(world).threads(threads) {
            users += chunk.users.len() as u64;
            events += chunk.events.len() as u64;
            bar.set_position(users);
        }
        bar.finish_and_clear();
        let secs = t1.elapsed().as_secs_f64();
        println!(
            "dry run: {users} users, {events} events generated in {secs:.2} s on {threads} threads \
             = {:.0} events/s",
            events as f64 / secs
        );
        if let Some(rss) = peak_rss() {
            println!("peak RSS: {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
        }
        return Ok(());
    }
    let out = args
        .out
        .clone()
        .context("--out names the directory to write the data set into")?;
    let summary = write_dataset(
        world,
        &out,
        threads,
        cfg.chunk_users as u64,
        args.overwrite,
        |users, events| {
            if args.trace_memory {
                chunk += 1;
                bar.suspend(|| {
                    eprintln!(
                        "chunk {chunk}: {users} users, {events} events, RSS {:.1} MiB, peak {:.1} MiB",
                        status_kb("VmRSS:").unwrap_or(0) as f64 / 1024.0,
                        status_kb("VmHWM:").unwrap_or(0) as f64 / 1024.0
                    )
                });
            }
            bar.set_position(users);
            bar.set_message(format!("{events} events"));
        },
    )
    .with_context(|| format!("writing {}", out.display()))?;
    bar.finish_and_clear();
    let secs = t1.elapsed().as_secs_f64();
    let b = summary.behaviours;
    println!("wrote {}", out.display());
    println!(
        "users {}  items {}  events (impressions) {}  clicks {}  favs {}  carts {}  purchases {}",
        summary.users, summary.items, summary.events, b[0], b[1], b[2], b[3]
    );
    println!(
        "{} chunks of {} users, {:.1} MiB on disk",
        summary.chunks,
        summary.chunk_users,
        dir_bytes(&out) as f64 / (1024.0 * 1024.0)
    );
    println!(
        "generation + writing: {secs:.2} s on {threads} threads = {:.0} events/s ({:.0} users/s); \
         world: {t_world:.2} s",
        summary.events as f64 / secs,
        summary.users as f64 / secs
    );
    if let Some(rss) = peak_rss() {
        println!("peak RSS: {:.1} MiB", rss as f64 / (1024.0 * 1024.0));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cmd {
        #[command(flatten)]
        args: Args,
    }

    fn parse(argv: &[&str]) -> Result<Args, clap::Error> {
        Cmd::try_parse_from(std::iter::once("synth").chain(argv.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn a_preset_and_a_configuration_file_together_are_refused_and_zero_threads_too() {
        let both = parse(&["--config", "my.toml", "--preset", "tiny", "--out", "x"]).unwrap();
        let e = config(&both).unwrap_err().to_string();
        assert!(e.contains("--config or --preset, not both"), "{e}");
        // Neither: the small preset.
        let none = parse(&["--out", "x"]).unwrap();
        assert_eq!(config(&none).unwrap().items, SynthConfig::small().items);
        let tiny = parse(&["--preset", "tiny", "--out", "x"]).unwrap();
        assert_eq!(config(&tiny).unwrap().items, SynthConfig::tiny().items);
        assert!(parse(&["--threads", "0", "--out", "x"]).is_err());
        assert!(parse(&["--threads", "2", "--out", "x"]).is_ok());
        // --out only where something is written.
        assert!(parse(&["--preset", "tiny"]).is_err());
        assert!(parse(&["--print-config"]).is_ok());
        assert!(parse(&["--dry-run"]).is_ok());
    }

    #[test]
    fn a_catalogue_beyond_the_available_memory_is_refused_with_the_numbers() {
        let gib = 1u64 << 30;
        // The large preset's 10^6 items fit in 1 GiB; 10^8 do not (about 11.8 GiB).
        check_world_memory(1_000_000, Some(gib)).unwrap();
        let e = check_world_memory(100_000_000, Some(gib))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("`items` = 100000000") && e.contains("11.8 GiB") && e.contains("1.0 GiB"),
            "{e}"
        );
        // Where the available memory cannot be read, nothing is refused.
        check_world_memory(u32::MAX, None).unwrap();
    }
}
