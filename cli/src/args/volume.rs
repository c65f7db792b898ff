//! `ferrofab volume ...`: the volume commands and their spec flags.

use clap::{Args, Subcommand, ValueEnum};

use super::common::{CommonVerb, LabelArgs};
use super::parse::{parse_duration, parse_key_value, parse_size_arg};

/// `ferrofab volume ...`
#[derive(Debug, Subcommand)]
pub enum VolumeCommand {
    /// Create a volume.
    Create {
        /// Volume name.
        name: String,
        #[command(flatten)]
        spec: VolumeSpecArgs,
    },
    /// Change a volume (size may only grow).
    Update {
        /// Volume name.
        name: String,
        #[command(flatten)]
        spec: VolumeSpecArgs,
    },
    /// Grow a volume.
    Resize {
        /// Volume name.
        name: String,
        /// New size, e.g. 200GiB.
        #[arg(value_parser = parse_size_arg)]
        size: String,
    },
    /// Postpone a burst volume's expiry (administrators only; a tenant may
    /// only bring an expiry forward).
    Extend {
        /// Volume name.
        name: String,
        /// How much later it expires, e.g. 7d.
        #[arg(long, value_parser = parse_duration)]
        by: std::time::Duration,
    },
    /// Reassign a volume to another workstation: detach it from its
    /// current node, wait until the storage node has revoked that node's
    /// host and seen it disconnect, then attach it to the new one. Never a
    /// moment with two writers.
    Move {
        /// Volume name.
        name: String,
        /// Workstation node to move it to.
        #[arg(long)]
        to: String,
        /// Proceed although the current node is not ready: the storage
        /// node revokes its host first (that revocation is the fence).
        #[arg(long)]
        force: bool,
        /// Give up waiting after this long (the move itself goes on).
        #[arg(long, default_value = "2m", value_parser = parse_duration)]
        timeout: std::time::Duration,
    },
    #[command(flatten)]
    Common(CommonVerb),
}

/// Volume spec flags.
#[derive(Debug, Args, Default, Clone)]
pub struct VolumeSpecArgs {
    /// Owning tenant.
    #[arg(long)]
    pub tenant: Option<String>,
    /// Size, e.g. 100GiB.
    #[arg(long, value_parser = parse_size_arg)]
    pub size: Option<String>,
    /// Logical block size: 512 or 4096.
    #[arg(long)]
    pub block_size: Option<u32>,
    /// Explicit pool.
    #[arg(long, conflicts_with = "pool_selector")]
    pub pool: Option<String>,
    /// Pool label to match (repeatable): key=value.
    #[arg(long = "pool-selector", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub pool_selector: Vec<(String, String)>,
    /// Expire the volume at this time (RFC 3339); see --expiry-action.
    #[arg(long, conflicts_with = "expires_in")]
    pub expires_at: Option<String>,
    /// Expire the volume after this long, e.g. 8h.
    #[arg(long, value_parser = parse_duration)]
    pub expires_in: Option<std::time::Duration>,
    /// What happens at expiry: retain (the default: detach, keep the data
    /// for the controller's expiry.retain_grace_seconds, then delete) or
    /// delete (detach and delete after expiry.grace_seconds).
    #[arg(long, value_enum)]
    pub expiry_action: Option<ExpiryActionArg>,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// Expiry actions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ExpiryActionArg {
    /// Detach, keep the data for a grace period, then delete.
    Retain,
    /// Detach and delete.
    Delete,
}
