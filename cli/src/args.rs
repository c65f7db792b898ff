//! Command-line syntax (clap derive). Only parsing lives here; the
//! commands are in `cmd/`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand, ValueEnum};

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
    /// Show this client's version and the controller's.
    Version {
        /// Only this client's version (no controller needed).
        #[arg(long)]
        client: bool,
    },
    /// Print a shell completion script.
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

// ------------------------------------------------------------------ pki

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

// ------------------------------------------------------------------ shared

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

// ------------------------------------------------------------------ node

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

// ------------------------------------------------------------------ pool

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

// ------------------------------------------------------------------ volume

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

// ------------------------------------------------------------------ attachment

/// `ferrofab attachment ...`
#[derive(Debug, Subcommand)]
pub enum AttachmentCommand {
    /// Attach a volume to a workstation.
    Create {
        /// Attachment name.
        name: String,
        #[command(flatten)]
        spec: AttachmentSpecArgs,
    },
    /// Change an attachment.
    Update {
        /// Attachment name.
        name: String,
        #[command(flatten)]
        spec: AttachmentSpecArgs,
    },
    #[command(flatten)]
    Common(CommonVerb),
}

/// Attachment spec flags.
#[derive(Debug, Args, Default, Clone)]
pub struct AttachmentSpecArgs {
    /// Volume to attach.
    #[arg(long)]
    pub volume: Option<String>,
    /// Workstation node.
    #[arg(long)]
    pub node: Option<String>,
    /// Access mode: rw (read-write by this node only; the default), ro
    /// (read-only, any number of nodes) or rwx (read-write by several nodes:
    /// only for clustered filesystems). Immutable once created.
    #[arg(long, visible_alias = "access-mode", value_enum)]
    pub mode: Option<ModeArg>,
    #[command(flatten)]
    pub labels: LabelArgs,
}

/// Access modes (the value names are the words users type).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
#[allow(clippy::enum_variant_names)]
pub enum ModeArg {
    /// Read and write.
    #[value(alias = "rw")]
    ReadWrite,
    /// Read only.
    #[value(alias = "ro")]
    ReadOnly,
    /// Read and write from several nodes at once (clustered filesystems).
    #[value(alias = "rwx")]
    ReadWriteMany,
}

// ------------------------------------------------------------------ tenant

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

// ------------------------------------------------------------------ apply, wait

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

// ------------------------------------------------------------------ value parsers

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    ferrofab_pki::parse_duration(s).map_err(|e| e.to_string())
}

fn parse_identity(s: &str) -> Result<ferrofab_pki::Identity, String> {
    s.parse().map_err(|e: ferrofab_pki::PkiError| e.to_string())
}

/// Validates a size but keeps the user's spelling, so diffs and stored
/// specs read the way they were written.
fn parse_size_arg(s: &str) -> Result<String, String> {
    ferrofab_types::size::parse_size(s)
        .map(|_| s.trim().to_owned())
        .map_err(|e| e.to_string())
}

/// `key=value`, with a non-empty key.
pub fn parse_key_value(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_owned(), v.to_owned())),
        _ => Err(format!("expected KEY=VALUE, got {s:?}")),
    }
}

#[cfg(test)]
mod tests {
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
