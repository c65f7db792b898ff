//! Helpers shared by the controller's benchmark targets.
#![allow(dead_code)]

/// The count in variable `name`, or `default`.
pub fn env_count(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// One result line, `bench: NAME VALUE UNIT`, the format the bench suite's
/// scripts parse.
pub fn report(name: &str, value: f64, unit: &str) {
    println!("bench: {name} {value:.2} {unit}");
}

/// VmRSS of process `pid` in MiB (0 when unreadable).
pub fn rss_mb(pid: u32) -> f64 {
    ferrofab_testkit::process::rss_mb_of(pid)
}

/// `cargo test --benches` runs bench targets without `--bench`: they
/// measure only under `cargo bench`.
pub fn measuring() -> bool {
    std::env::args().any(|a| a == "--bench")
}
