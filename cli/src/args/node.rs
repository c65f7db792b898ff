//! `ferrofab node ...`: the node commands and their spec flags.

use clap::{Args, Subcommand, ValueEnum};

use super::common::{CommonVerb, LabelArgs};
use super::parse::parse_duration;

/// `ferrofab node ...`
#[derive(Debug, Subcommand)]
pub enum NodeCommand {
    /// Bootstrap tokens for enrolling nodes.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Register a node by hand (agents normally register when they enroll).
    Create {
        /// Node name.
        name: String,
        #[command(flatten)]
        spec: NodeSpecArgs,
    },
    /// Change a node's roles, addresses, host NQN or labels.
    Update {
        /// Node name.
        name: String,
        #[command(flatten)]
        spec: NodeSpecArgs,
    },
    /// Issue a new data-path (DH-HMAC-CHAP) host key for a workstation and
    /// roll it out without dropping its connections. Admin only; prints
    /// the new generation and fingerprint, never the key.
    RotateKey {
        /// Node name.
        name: String,
    },
    #[command(flatten)]
    Common(CommonVerb),
}

/// `ferrofab node token ...`
#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Mint a single-use enrollment token bound to a node name.
    Create {
        /// The node the token may enroll.
        #[arg(long)]
        node: String,
        /// How long the token stays valid.
        #[arg(long, default_value = "1h", value_parser = parse_duration)]
        ttl: std::time::Duration,
    },
}

/// Node spec flags.
#[derive(Debug, Args, Default, Clone)]
pub struct NodeSpecArgs {
    /// Role: storage or workstation (repeatable; replaces the list).
    #[arg(long = "role", value_enum)]
    pub roles: Vec<RoleArg>,
    /// Data address HOST[:PORT] (repeatable; replaces the list).
    #[arg(long = "address", value_name = "HOST[:PORT]")]
    pub addresses: Vec<String>,
    /// The node's NVMe host NQN.
    #[arg(long)]
    pub host_nqn: Option<String>,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// Node roles.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RoleArg {
    /// Serves pools.
    Storage,
    /// Connects to volumes.
    Workstation,
}
