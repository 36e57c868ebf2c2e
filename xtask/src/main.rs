//! `cargo xtask`: project automation (data, training, experiments, benchmarks, CI).
fn main() {
    eprintln!("cargo xtask: no command is implemented yet");
    std::process::exit(2);
}
