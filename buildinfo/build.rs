//! Records the git commit and the build date for `--version`.
//!
//! The commit is `FERROFAB_BUILD_COMMIT` when set (a package build from a
//! tarball, or inside a packaging repository whose HEAD is not ferrofab's),
//! else `git rev-parse --short HEAD` when the source is a git checkout with
//! git installed, else "unknown". The date is SOURCE_DATE_EPOCH when set, so
//! package builds are reproducible, else the time of this build script run.
//!
//! Cargo reruns this script only when HEAD or the branch it points to moves
//! (and when the two variables change): without `rerun-if-changed` lines it
//! would rerun after every source edit, and a fresh date would then force a
//! rebuild of every dependent crate each time.

use std::path::Path;
use std::process::Command;
use std::time::{SystemTime, UNIX_EPOCH};

fn main() {
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-env-changed=FERROFAB_BUILD_COMMIT");
    println!("cargo:rerun-if-changed=build.rs");
    let commit = std::env::var("FERROFAB_BUILD_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=10", "HEAD"]))
        .unwrap_or_else(|| "unknown".into());
    watch_git_head();
    println!("cargo:rustc-env=FERROFAB_COMMIT={commit}");
    println!("cargo:rustc-env=FERROFAB_BUILD_DATE={}", build_date());
}

/// Output of a git command, trimmed; None if git is missing or fails.
fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    if !out.status.success() {
        return None;
    }
    let s = String::from_utf8(out.stdout).ok()?.trim().to_owned();
    (!s.is_empty()).then_some(s)
}

/// Rerun when HEAD moves: HEAD itself (branch switch, detached checkout),
/// the branch's ref file (a commit) and packed-refs (after `git gc`).
/// `--git-path` resolves worktrees, whose HEAD lives under the main
/// repository's `.git/worktrees/NAME` while refs are shared.
fn watch_git_head() {
    let mut paths = vec!["HEAD".to_owned(), "packed-refs".to_owned()];
    if let Some(r) = git(&["symbolic-ref", "-q", "HEAD"]) {
        paths.push(r);
    }
    for p in paths {
        if let Some(resolved) = git(&["rev-parse", "--git-path", &p]) {
            if Path::new(&resolved).exists() {
                println!("cargo:rerun-if-changed={resolved}");
            }
        }
    }
}

/// `YYYY-MM-DD` (UTC) of SOURCE_DATE_EPOCH or of now.
fn build_date() -> String {
    let secs = std::env::var("SOURCE_DATE_EPOCH")
        .ok()
        .and_then(|s| s.trim().parse::<i64>().ok())
        .unwrap_or_else(|| {
            SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map(|d| d.as_secs() as i64)
                .unwrap_or(0)
        });
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    format!("{y:04}-{m:02}-{d:02}")
}

/// Days since 1970-01-01 to a proleptic Gregorian date (Howard Hinnant's
/// well-known arithmetic, written out here to avoid a date dependency in a
/// build script).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    let y = yoe + era * 400 + i64::from(m <= 2);
    (y, m, d)
}
