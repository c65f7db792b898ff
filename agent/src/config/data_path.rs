//! The data-path sections: `data_path` (which driver), `[builtin_target]`
//! (connection limits of the built-in target) and `[kernel]` (where the
//! kernel driver finds configfs, sysfs and /dev).

use std::path::PathBuf;

use ferrofab_nvmeof_target::TargetOptions;
use serde::{Deserialize, Serialize};

/// Which data path serves and consumes namespaces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DriverKind {
    /// The target and initiator of `ferrofab-nvmeof`, inside this process.
    #[default]
    Builtin,
    /// Linux nvmet / nvme-fabrics through configfs, sysfs and
    /// `/dev/nvme-fabrics`.
    Kernel,
}

/// Connection limits of the built-in target (`data_path = "builtin"`):
/// the keys of the same name in `ferrofab-nvmeof serve`'s `[target]`
/// (docs/nvmeof-target.md). They protect the storage node from peers that
/// open connections and never set them up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct BuiltinTargetConfig {
    pub max_connections: u32,
    pub max_connections_per_peer: u32,
    pub icreq_timeout_ms: u32,
    pub connect_timeout_ms: u32,
}

impl Default for BuiltinTargetConfig {
    fn default() -> Self {
        let d = TargetOptions::default();
        BuiltinTargetConfig {
            max_connections: d.max_connections,
            max_connections_per_peer: d.max_connections_per_peer,
            icreq_timeout_ms: d.icreq_timeout_ms,
            connect_timeout_ms: d.connect_timeout_ms,
        }
    }
}

impl BuiltinTargetConfig {
    /// The target's options: these limits, everything else default.
    pub fn target_options(&self) -> TargetOptions {
        TargetOptions {
            max_connections: self.max_connections,
            max_connections_per_peer: self.max_connections_per_peer,
            icreq_timeout_ms: self.icreq_timeout_ms,
            connect_timeout_ms: self.connect_timeout_ms,
            ..TargetOptions::default()
        }
    }

    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }
}

/// Where the `kernel` driver finds the kernel's interfaces. Only tests
/// and unusual mounts change these.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KernelConfig {
    #[serde(default = "default_configfs")]
    pub configfs: PathBuf,
    #[serde(default = "default_sysfs")]
    pub sysfs: PathBuf,
    #[serde(default = "default_dev")]
    pub dev: PathBuf,
}

impl Default for KernelConfig {
    fn default() -> Self {
        KernelConfig {
            configfs: default_configfs(),
            sysfs: default_sysfs(),
            dev: default_dev(),
        }
    }
}

impl KernelConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == KernelConfig::default()
    }
}

pub(super) fn default_configfs() -> PathBuf {
    PathBuf::from("/sys/kernel/config")
}
pub(super) fn default_sysfs() -> PathBuf {
    PathBuf::from("/sys")
}
pub(super) fn default_dev() -> PathBuf {
    PathBuf::from("/dev")
}
