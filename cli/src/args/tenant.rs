//! `ferrofab tenant ...`: the tenant commands and their spec flags.

use clap::{Args, Subcommand};

use super::common::{CommonVerb, LabelArgs};

/// `ferrofab tenant ...`
#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant.
    Create {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        spec: TenantSpecArgs,
    },
    /// Change a tenant's quotas, allowed nodes or labels.
    Update {
        /// Tenant name.
        name: String,
        #[command(flatten)]
        spec: TenantSpecArgs,
    },
    #[command(flatten)]
    Common(CommonVerb),
}

/// Tenant spec flags.
#[derive(Debug, Args, Default, Clone)]
pub struct TenantSpecArgs {
    /// Total size of the tenant's volumes ("none" for unlimited).
    #[arg(long)]
    pub capacity_quota: Option<String>,
    /// Maximum number of volumes (0 for unlimited).
    #[arg(long)]
    pub volume_quota: Option<u32>,
    /// Workstation allowed to attach the tenant's volumes (repeatable; replaces the list).
    #[arg(long = "allowed-node", conflicts_with_all = ["add_nodes", "remove_nodes"])]
    pub allowed_nodes: Vec<String>,
    /// Add a workstation to the allowed list (repeatable; `update` only).
    #[arg(long = "add-node", value_name = "NODE")]
    pub add_nodes: Vec<String>,
    /// Remove a workstation from the allowed list (repeatable; `update` only).
    #[arg(long = "remove-node", value_name = "NODE")]
    pub remove_nodes: Vec<String>,
    #[command(flatten)]
    pub labels: LabelArgs,
}
