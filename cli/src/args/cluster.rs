//! Commands over the whole cluster rather than one kind: `apply`,
//! `wait` and `dev`.

use std::path::PathBuf;

use clap::Args;

use super::parse::parse_duration;

/// `ferrofab apply`
#[derive(Debug, Args)]
pub struct ApplyArgs {
    /// Layout file (TOML with [[tenant]], [[node]], [[pool]], [[volume]], [[attachment]]).
    #[arg(short = 'f', long = "file")]
    pub file: PathBuf,
    /// Only show what would change.
    #[arg(long)]
    pub dry_run: bool,
    /// Apply without asking for confirmation (required when stdin is not a terminal).
    #[arg(short = 'y', long)]
    pub yes: bool,
    /// Also delete stored objects the file does not list, only of the kinds
    /// the file has at least one object of (never nodes without --prune-nodes).
    #[arg(long)]
    pub prune: bool,
    /// With --prune, also delete nodes the file does not list.
    #[arg(long, requires = "prune")]
    pub prune_nodes: bool,
    /// After applying, wait until the layout's objects are Ready.
    #[arg(long)]
    pub wait: bool,
    /// Limit for --wait.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

/// `ferrofab wait`
#[derive(Debug, Args)]
pub struct WaitArgs {
    /// Objects as KIND/NAME, e.g. volume/scratch-1.
    #[arg(value_name = "KIND/NAME", required_unless_present = "file")]
    pub objects: Vec<String>,
    /// Wait for every object in this layout file.
    #[arg(short = 'f', long = "file")]
    pub file: Option<PathBuf>,
    /// Give up after this long.
    #[arg(long, default_value = "5m", value_parser = parse_duration)]
    pub timeout: std::time::Duration,
}

// ------------------------------------------------------------------ dev

/// `ferrofab dev`
#[derive(Debug, Args)]
pub struct DevArgs {
    /// State directory (PKI, store, pools, volumes, client.toml); created
    /// if missing, resumed if it exists.
    #[arg(long, default_value = "ferrofab-dev")]
    pub dir: PathBuf,
}
