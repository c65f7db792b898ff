//! Command-line syntax (clap derive). Only parsing lives here; the
//! commands are in `cmd/`.

use std::path::PathBuf;

use clap::{Parser, Subcommand, ValueEnum};

mod apitoken;
mod attachment;
mod cluster;
mod common;
mod node;
mod parse;
mod pki;
mod pool;
mod tenant;
mod volume;

pub use apitoken::ApiTokenCommand;
pub use attachment::{AttachmentCommand, AttachmentSpecArgs, ModeArg};
pub use cluster::{ApplyArgs, DevArgs, WaitArgs};
pub use common::{CommonVerb, LabelArgs};
pub use node::{NodeCommand, NodeSpecArgs, RoleArg, TokenCommand};
pub use pki::{PkiCommand, PkiInitArgs, PkiIssueArgs};
pub use pool::{BackingArg, PoolCommand, PoolSpecArgs, ReclaimArg};
pub use tenant::{TenantCommand, TenantSpecArgs};
pub use volume::{ExpiryActionArg, VolumeCommand, VolumeSpecArgs};

/// ferrofab: manage a ferrofab NVMe-over-Fabrics storage cluster.
#[derive(Debug, Parser)]
#[command(
    name = "ferrofab",
    version = ferrofab_buildinfo::VERSION_LINE,
    propagate_version = true
)]
pub struct Cli {
    /// Client configuration file (endpoints and TLS files).
    #[arg(long, global = true, env = "FERROFAB_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// Controller endpoint, overriding the configuration (e.g. https://ctl:7443).
    #[arg(long, global = true, env = "FERROFAB_ENDPOINT", value_name = "URL")]
    pub endpoint: Option<String>,

    /// Output format.
    #[arg(short, long, global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,

    /// More logging on stderr (-v info, -vv debug).
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    pub verbose: u8,

    /// What to do.
    #[command(subcommand)]
    pub command: Command,
}

/// Output formats of commands that print objects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Format {
    /// Aligned columns for people.
    Table,
    /// The table with more columns (lists and get).
    Wide,
    /// Only KIND/NAME, one per line (lists, get, create, update, delete).
    Name,
    /// JSON for programs.
    Json,
    /// YAML for people who like to diff.
    Yaml,
}

/// Top-level commands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Local certificate authority: create it, issue client certificates.
    #[command(subcommand)]
    Pki(PkiCommand),
    /// Storage and workstation nodes, and their bootstrap tokens.
    #[command(subcommand)]
    Node(NodeCommand),
    /// Storage pools on nodes.
    #[command(subcommand, visible_alias = "pools")]
    Pool(PoolCommand),
    /// Volumes (NVMe namespaces).
    #[command(subcommand, visible_aliases = ["volumes", "vol"])]
    Volume(VolumeCommand),
    /// Attachments of volumes to workstation nodes.
    #[command(subcommand, visible_aliases = ["attachments", "att"])]
    Attachment(AttachmentCommand),
    /// Tenants and their quotas.
    #[command(subcommand, visible_alias = "tenants")]
    Tenant(TenantCommand),
    /// API tokens for the HTTP/JSON API and the dashboard.
    #[command(subcommand, visible_alias = "tokens")]
    Token(ApiTokenCommand),
    /// Make the cluster match a layout file (shows the diff first).
    Apply(ApplyArgs),
    /// Wait until objects are Ready.
    Wait(WaitArgs),
    /// Run a whole cluster (controller, storage and workstation agents) in
    /// this process on loopback, with a demo layout; Ctrl-C stops it.
    Dev(DevArgs),
    /// The workstation data-path holder that `dev` starts from this
    /// executable (internal; `ferrofab-agent holder` is the user's one).
    #[command(subcommand, hide = true)]
    Holder(ferrofab_agent::holder::cli::HolderCmd),
    /// The cluster on one screen: controller, nodes, pools, what is not
    /// ready and why, expiring bursts, recent warnings.
    Status,
    /// One object in full: every field, conditions with reasons and ages,
    /// expiry, placement and where it is exposed.
    Describe {
        /// Kind: node, pool, volume, attachment or tenant.
        #[arg(value_enum)]
        kind: KindArg,
        /// Object name.
        name: String,
    },
    /// The controller's history of notable transitions (created, placed,
    /// exported, attached, grown, expired, refused, node not ready),
    /// oldest first; of one kind or one object when given.
    Events {
        /// Only events of this kind.
        #[arg(value_enum)]
        kind: Option<KindArg>,
        /// Only events of this object (needs KIND).
        #[arg(requires = "kind")]
        name: Option<String>,
        /// Keep running and print each new or repeated event as it is
        /// recorded (Ctrl-C stops).
        #[arg(short, long)]
        watch: bool,
        /// Only the most recent N (0: every one kept).
        #[arg(long, default_value_t = 0, value_name = "N")]
        limit: u32,
    },
    /// Show this client's version and the controller's.
    Version {
        /// Only this client's version (no controller needed).
        #[arg(long)]
        client: bool,
    },
    /// Object names for the shell completion scripts (internal): the
    /// names that complete the word after WORDS, exit 1 when that word is
    /// not a name.
    #[command(name = "__complete", hide = true)]
    Complete {
        /// The words typed so far, after `--`.
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        words: Vec<String>,
    },
    /// Print a shell completion script (bash, zsh and fish also complete
    /// object names from the controller).
    Completions {
        /// Shell to generate for.
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
}

/// Kinds, as `describe` takes them (singular, plural or short).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KindArg {
    #[value(alias = "nodes")]
    Node,
    #[value(alias = "pools")]
    Pool,
    #[value(aliases = ["volumes", "vol"])]
    Volume,
    #[value(aliases = ["attachments", "att"])]
    Attachment,
    #[value(alias = "tenants")]
    Tenant,
}

#[cfg(test)]
mod tests {
    use super::parse::parse_key_value;
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn clap_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn parses_typical_commands() {
        let c = Cli::try_parse_from([
            "ferrofab",
            "volume",
            "create",
            "scratch-1",
            "--tenant",
            "neuro",
            "--size",
            "4TiB",
            "-o",
            "json",
        ])
        .unwrap();
        assert_eq!(c.output, Format::Json);
        assert!(
            Cli::try_parse_from(["ferrofab", "volume", "create", "x", "--size", "4XB"]).is_err()
        );
        Cli::try_parse_from([
            "ferrofab", "node", "token", "create", "--node", "n1", "--ttl", "2h",
        ])
        .unwrap();
        Cli::try_parse_from(["ferrofab", "vol", "ls", "-l", "a=b"]).unwrap();
        Cli::try_parse_from(["ferrofab", "apply", "-f", "x.toml", "--yes"]).unwrap();
        Cli::try_parse_from(["ferrofab", "wait", "volume/a", "--timeout", "30s"]).unwrap();
        assert!(Cli::try_parse_from(["ferrofab", "wait"]).is_err());
    }

    #[test]
    fn key_value_parsing() {
        assert_eq!(
            parse_key_value("a=b=c").unwrap(),
            ("a".into(), "b=c".into())
        );
        assert!(parse_key_value("=b").is_err());
        assert!(parse_key_value("ab").is_err());
    }
}
