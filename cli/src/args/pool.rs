//! `ferrofab pool ...`: the pool commands and their spec flags.

use clap::{Args, Subcommand, ValueEnum};

use super::common::{CommonVerb, LabelArgs};
use super::parse::parse_size_arg;

/// `ferrofab pool ...`
#[derive(Debug, Subcommand)]
pub enum PoolCommand {
    /// Create a pool.
    Create {
        /// Pool name.
        name: String,
        #[command(flatten)]
        spec: PoolSpecArgs,
    },
    /// Change a pool.
    Update {
        /// Pool name.
        name: String,
        #[command(flatten)]
        spec: PoolSpecArgs,
    },
    #[command(flatten)]
    Common(CommonVerb),
}

/// Pool spec flags.
#[derive(Debug, Args, Default, Clone)]
pub struct PoolSpecArgs {
    /// Storage node the pool lives on.
    #[arg(long)]
    pub node: Option<String>,
    /// Backing kind.
    #[arg(long, value_enum)]
    pub backing: Option<BackingArg>,
    /// Directory or block device path on the node.
    #[arg(long)]
    pub path: Option<String>,
    /// Physical capacity, e.g. 4TiB.
    #[arg(long, value_parser = parse_size_arg)]
    pub capacity: Option<String>,
    /// Thin-provisioning ratio (1.0 = none).
    #[arg(long)]
    pub overcommit: Option<f64>,
    /// Maximum number of volumes.
    #[arg(long)]
    pub namespace_limit: Option<u32>,
    /// What happens to data of deleted volumes.
    #[arg(long, value_enum)]
    pub reclaim: Option<ReclaimArg>,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// Pool backing kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum BackingArg {
    /// Sparse files in a directory.
    Directory,
    /// Extents of a block device.
    BlockDevice,
}

/// Reclaim policies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ReclaimArg {
    /// Remove backing data.
    Delete,
    /// Keep backing data.
    Retain,
}
