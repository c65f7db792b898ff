//! Build information every ferrofab binary prints with `--version` and
//! exports as `ferrofab_build_info`: the workspace version, the git commit
//! the binary was built from and the build date (see `build.rs`).

/// The workspace version, e.g. `0.1.0`.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Short git commit, or `unknown` when built outside a git checkout.
pub const COMMIT: &str = env!("FERROFAB_COMMIT");

/// Build date, `YYYY-MM-DD` (UTC; SOURCE_DATE_EPOCH when set).
pub const BUILD_DATE: &str = env!("FERROFAB_BUILD_DATE");

/// What follows the program name in `--version`:
/// `0.1.0 (commit 1a2b3c4d5e, built 2026-12-04)`.
pub const VERSION_LINE: &str = concat!(
    env!("CARGO_PKG_VERSION"),
    " (commit ",
    env!("FERROFAB_COMMIT"),
    ", built ",
    env!("FERROFAB_BUILD_DATE"),
    ")"
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn version_line_names_all_three() {
        assert!(VERSION_LINE.starts_with(VERSION));
        assert!(VERSION_LINE.contains(COMMIT));
        assert!(VERSION_LINE.contains(BUILD_DATE));
        // YYYY-MM-DD
        assert_eq!(BUILD_DATE.len(), 10, "{BUILD_DATE}");
        assert_eq!(&BUILD_DATE[4..5], "-");
    }
}
