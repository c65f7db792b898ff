//! `ferrofab attachment ...`: the attachment commands and their spec flags.

use clap::{Args, Subcommand, ValueEnum};

use super::common::{CommonVerb, LabelArgs};

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
