//! rec-rs benchmarks: the criterion targets live in `benches/benches/`; this library holds the
//! seeded synthetic workloads they share with `cargo xtask bench --compare`.

pub mod workloads;
