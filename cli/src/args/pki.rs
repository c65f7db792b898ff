//! `ferrofab pki ...`: the pki commands (init, issue) and their flags.

use std::path::PathBuf;

use clap::{Args, Subcommand};

use super::parse::{parse_duration, parse_identity};

/// `ferrofab pki ...`
#[derive(Debug, Subcommand)]
pub enum PkiCommand {
    /// Create a CA and the controller's server certificate.
    Init(PkiInitArgs),
    /// Issue a client certificate (admin, tenant:NAME or node:NAME).
    Issue(PkiIssueArgs),
    /// Show a certificate's identity, validity and renewal time.
    Show {
        /// PEM certificate file.
        file: PathBuf,
    },
}

/// `ferrofab pki init`
#[derive(Debug, Args)]
pub struct PkiInitArgs {
    /// Directory for ca.crt, ca.key, server.crt and server.key.
    #[arg(long, default_value = "/etc/ferrofab/pki")]
    pub dir: PathBuf,
    /// Server certificate DNS name or IP (repeatable; default localhost, 127.0.0.1, ::1).
    #[arg(long = "san", value_name = "NAME|IP")]
    pub sans: Vec<String>,
    /// Lifetime of the CA certificate.
    #[arg(long, default_value = "3650d", value_parser = parse_duration)]
    pub ca_validity: std::time::Duration,
    /// Lifetime of the server certificate.
    #[arg(long, default_value = "365d", value_parser = parse_duration)]
    pub server_validity: std::time::Duration,
    /// Overwrite existing files (invalidates every certificate of the old CA).
    #[arg(long)]
    pub force: bool,
}

/// `ferrofab pki issue`
#[derive(Debug, Args)]
pub struct PkiIssueArgs {
    /// Directory holding ca.crt and ca.key.
    #[arg(long, default_value = "/etc/ferrofab/pki")]
    pub dir: PathBuf,
    /// Identity: admin, tenant:NAME or node:NAME.
    #[arg(long, value_parser = parse_identity)]
    pub identity: ferrofab_pki::Identity,
    /// Where to write NAME.crt and NAME.key (default: --dir).
    #[arg(long)]
    pub out: Option<PathBuf>,
    /// Certificate lifetime (default 365d, 90d for nodes).
    #[arg(long, value_parser = parse_duration)]
    pub validity: Option<std::time::Duration>,
    /// Overwrite existing files.
    #[arg(long)]
    pub force: bool,
}
