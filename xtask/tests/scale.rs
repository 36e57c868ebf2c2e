//! `xtask bench --scale` end to end: every point runs in its own child process (the hidden
//! `--scale-point`), and the parent collects the children's records into `scale.json`.

use std::process::Command;

#[test]
fn scale_runs_each_point_in_a_child_and_collects_the_records() {
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--scale", "--threads", "1"])
        .args(["--scale-min", "3", "--scale-max", "3"])
        .args([
            "--scale-steps",
            "3",
            "--scale-warmup",
            "1",
            "--scale-dim",
            "4",
        ])
        .args(["--scale-kinds", "full,cel-lite", "--scale-out"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.path().join("scale.json")).unwrap())
            .unwrap();
    let points = doc["points"].as_array().unwrap();
    assert_eq!(points.len(), 2);
    assert_eq!(points[0]["kind"], "full");
    assert_eq!(points[1]["kind"], "cel-lite");
    for p in points {
        assert_eq!(p["rows"], 1000);
        assert_eq!(p["steps"], 3);
        assert_eq!(p["threads"], 1);
        if cfg!(target_os = "linux") {
            // The child's own peak resident set: at least what it held after building.
            let peak = p["peak_rss_bytes"].as_u64().unwrap();
            assert!(peak >= p["rss_built_bytes"].as_u64().unwrap() && peak > 1 << 20);
        }
    }
    // The Markdown table goes to stdout.
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("| full | 1000 |"), "{stdout}");
    // A bad point is an error from the child, reported by the parent.
    let bad = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(["bench", "--scale-point", "dense:1000"])
        .output()
        .unwrap();
    assert!(!bad.status.success());
    assert!(String::from_utf8_lossy(&bad.stderr).contains("unknown table kind"));
}
