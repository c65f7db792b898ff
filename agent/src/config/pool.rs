//! The `[pools.NAME]` sections: where a pool's backing files live and how
//! new ones are allocated.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// How a pool allocates a new backing file.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Provisioning {
    /// Sparse files: space is used as hosts write.
    #[default]
    Thin,
    /// Fully allocated up front, so a write can never fail with ENOSPC.
    Thick,
}

/// One local pool: where the controller's `backing_path`s may live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolConfig {
    /// Backing directory (or block device) of the pool.
    pub path: PathBuf,
    #[serde(default)]
    pub provisioning: Provisioning,
}
