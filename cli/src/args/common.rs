//! Arguments every kind shares: the common verbs (get, list, delete, ...)
//! and labels.

use clap::{Args, Subcommand};

use super::parse::parse_key_value;

/// Verbs every kind has.
#[derive(Debug, Subcommand)]
pub enum CommonVerb {
    /// Show one object.
    Get {
        /// Object name.
        name: String,
    },
    /// List objects.
    #[command(visible_alias = "ls")]
    List {
        /// Label selector: key=value,key2!=value2,key3.
        #[arg(short = 'l', long)]
        selector: Option<String>,
    },
    /// Delete an object.
    #[command(visible_alias = "rm")]
    Delete {
        /// Object name.
        name: String,
        /// Only delete if the object is still at this resource version.
        #[arg(long)]
        resource_version: Option<u64>,
    },
}

/// Labels given on the command line.
#[derive(Debug, Args, Default, Clone)]
pub struct LabelArgs {
    /// Set a label (repeatable): key=value.
    #[arg(long = "label", value_name = "KEY=VALUE", value_parser = parse_key_value)]
    pub labels: Vec<(String, String)>,
    /// Remove a label (update only; repeatable).
    #[arg(long = "remove-label", value_name = "KEY")]
    pub remove_labels: Vec<String>,
}
