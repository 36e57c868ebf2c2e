//! Crash safety of `cargo xtask train`, end to end on the real binary: a run killed with SIGKILL
//! in the middle of writing a checkpoint resumes with `--resume` and ends with exactly the
//! metrics of an uninterrupted run; a corrupted checkpoint is refused with a clear message; a
//! file-size limit (standing in for a full disk) stops the run with the file named.
//!
//! The kill is deterministic: the checkpoint writer's test hook
//! (`rec_trainer::checkpoint::PAUSE_ENV`) pauses after the tensors file of a chosen checkpoint
//! is written and before its state, manifest and rename, and signals the pause with a marker
//! file; the test kills the process then.

#![cfg(unix)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const EVERY: u64 = 3;

/// A tiny synthetic run: about two seconds of training per run on one core.
fn write_config(dir: &Path, extra: &str) -> PathBuf {
    let text = format!(
        r#"
[data]
dataset = "synthetic"
protocol = "ctr"
seed = 3
options = {{ preset = "tiny", users = 150, days = 3 }}

[model]
name = "fm"
{extra}

[optimizer]
dense = {{ kind = "adam", lr = 0.01 }}
sparse = {{ kind = "adam", lr = 0.02 }}

[train]
epochs = 3
batch_size = 128
checkpoint_every_steps = {EVERY}
keep_checkpoints = 2
progress = false
early_stopping = {{ metric = "auc", patience = 5 }}
"#
    );
    let p = dir.join("run.toml");
    std::fs::write(&p, text).unwrap();
    p
}

fn xtask() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_xtask"));
    c.env("RUST_LOG", "warn")
        .env_remove(rec_trainer::checkpoint::PAUSE_ENV)
        .stdin(Stdio::null());
    c
}

fn train(config: &Path, out: &Path, resume: bool) -> Output {
    let mut c = xtask();
    c.arg("train")
        .arg("--config")
        .arg(config)
        .arg("--out")
        .arg(out);
    if resume {
        c.arg("--resume");
    }
    c.output().unwrap()
}

fn ok(o: &Output) {
    assert!(
        o.status.success(),
        "xtask failed ({}):\n{}",
        o.status,
        String::from_utf8_lossy(&o.stderr)
    );
}

/// results.json without the wall-clock figures (which differ between any two runs).
fn results(run: &Path) -> Value {
    let text = std::fs::read_to_string(run.join("results.json")).unwrap();
    let mut v: Value = serde_json::from_str(&text).unwrap();
    let o = v.as_object_mut().unwrap();
    for k in ["run_dir", "train_seconds", "samples_per_sec"] {
        o.remove(k);
    }
    for h in o["history"].as_array_mut().unwrap() {
        h.as_object_mut().unwrap().remove("samples_per_sec");
    }
    v
}

fn log_lines(run: &Path) -> Vec<Value> {
    std::fs::read_to_string(run.join("log.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: Value = serde_json::from_str(l).unwrap();
            v.as_object_mut().unwrap().remove("samples_per_sec");
            v
        })
        .collect()
}

fn flip_last_byte(path: &Path) -> Vec<u8> {
    let orig = std::fs::read(path).unwrap();
    let mut bad = orig.clone();
    *bad.last_mut().unwrap() ^= 0x55;
    std::fs::write(path, bad).unwrap();
    orig
}

#[test]
fn sigkill_mid_checkpoint_then_resume_gives_the_uninterrupted_results() {
    let tmp = tempfile::tempdir().unwrap();
    let config = write_config(tmp.path(), "");

    // The uninterrupted run.
    let full = tmp.path().join("full");
    ok(&train(&config, &full, false));
    let want = results(&full);
    let history = want["history"].as_array().unwrap();
    assert_eq!(history.len(), 3, "{want}");
    let end1 = history[0]["step"].as_u64().unwrap();
    let end2 = history[1]["step"].as_u64().unwrap();
    // A periodic checkpoint inside epoch 2, after the epoch-1 checkpoint.
    let kill_at = (end1 / EVERY + 1) * EVERY;
    assert!(kill_at < end2, "epoch 2 is too short: {end1}..{end2}");
    let name = rec_trainer::checkpoint::step_name(kill_at);

    // The interrupted run: killed while writing checkpoint `name`.
    let run = tmp.path().join("killed");
    let ckpts = run.join("checkpoints");
    let mut child = xtask()
        .env(rec_trainer::checkpoint::PAUSE_ENV, &name)
        .arg("train")
        .arg("--config")
        .arg(&config)
        .arg("--out")
        .arg(&run)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let marker = ckpts.join(format!(".tmp-{name}")).join("PAUSED");
    let t0 = Instant::now();
    while !marker.exists() {
        if let Some(status) = child.try_wait().unwrap() {
            panic!("the run ended ({status}) before pausing in checkpoint {name}");
        }
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "no pause within two minutes"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();

    // What the crash left: a partial temporary directory, `latest` on the previous checkpoint,
    // which verifies; no results.
    let partial = ckpts.join(format!(".tmp-{name}"));
    assert!(partial.join("tensors.safetensors").exists());
    assert!(!partial.join("manifest.json").exists());
    assert!(!ckpts.join(&name).exists());
    let latest = rec_trainer::checkpoint::resolve_pointer(&ckpts, "latest")
        .unwrap()
        .unwrap();
    // The previous checkpoint: the periodic one before `kill_at`, or the end of epoch 1 if
    // that came later.
    assert_eq!(
        latest.file_name().unwrap().to_string_lossy(),
        rec_trainer::checkpoint::step_name((kill_at - EVERY).max(end1))
    );
    rec_trainer::checkpoint::read(&latest, &candle_core::Device::Cpu).unwrap();
    assert!(!run.join("results.json").exists());

    // A corrupted checkpoint is refused with the file named; nothing is trained from it.
    let tensors = latest.join("tensors.safetensors");
    let orig = flip_last_byte(&tensors);
    let o = train(&config, &run, true);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("tensors.safetensors") && err.contains("refusing to load"),
        "{err}"
    );
    // So is a partial one (its manifest is missing).
    std::fs::write(&tensors, &orig).unwrap();
    let manifest = latest.join("manifest.json");
    let m = std::fs::read(&manifest).unwrap();
    std::fs::remove_file(&manifest).unwrap();
    let o = train(&config, &run, true);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("not a complete checkpoint"), "{err}");
    std::fs::write(&manifest, m).unwrap();

    // Resumed: the same metrics, bit for bit, and the same log.
    ok(&train(&config, &run, true));
    assert_eq!(results(&run), want);
    assert_eq!(log_lines(&run), log_lines(&full));
    assert!(
        !partial.exists(),
        "the stale temporary directory was replaced"
    );
}

#[test]
fn a_file_size_limit_stops_the_run_with_the_file_named() {
    let tmp = tempfile::tempdir().unwrap();
    // dim 256: a checkpoint (parameters and Adam state) of a few MB.
    let config = write_config(tmp.path(), "[model.params]\ndim = 256");
    let run_with_limit = |kib: u64, out: &Path| -> Output {
        // RLIMIT_FSIZE through the shell; SIGXFSZ ignored so that the write fails with EFBIG
        // instead of killing the process (ignored signals stay ignored across exec).
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "trap '' XFSZ; ulimit -f {}; exec \"$0\" \"$@\"",
                kib * 2 // POSIX sh counts 512-byte blocks; bash counts KiB (then 2x the limit)
            ))
            .arg(env!("CARGO_BIN_EXE_xtask"))
            .args(["train", "--config"])
            .arg(&config)
            .arg("--out")
            .arg(out)
            .env("RUST_LOG", "warn")
            .env_remove(rec_trainer::checkpoint::PAUSE_ENV)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    };

    // Below the 1 MiB probe write: refused before training starts.
    let out = tmp.path().join("tiny-limit");
    let o = run_with_limit(256, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("not writable or the disk is full") && err.contains("tiny-limit"),
        "{err}"
    );
    assert!(!out.join("checkpoints").exists());

    // Above the probe but below a checkpoint: the first checkpoint write fails, naming the
    // file; no checkpoint is marked latest, and no results are written.
    let out = tmp.path().join("mid-limit");
    let o = run_with_limit(1100, &out);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("tensors.safetensors"), "{err}");
    assert!(!out.join("checkpoints/latest").exists());
    assert!(!out.join("results.json").exists());
    // The failed write removed its partial directory (as large as a checkpoint).
    let left: Vec<_> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert!(left.is_empty(), "{left:?}");
}
