//! The `[holder]` section: the workstation data-path holder process, its
//! timeouts and their validation.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::AgentError;

/// The workstation data-path holder (`[holder]`, built-in driver only).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HolderConfig {
    /// Run the built-in workstation data path (FUSE mount, initiator) in
    /// a separate long-lived process that outlives agent restarts. Off:
    /// it runs inside the agent and a restart breaks every exposure.
    #[serde(default = "default_true")]
    pub enabled: bool,
    /// The binary started as `BINARY holder run ...`; default: the
    /// running agent's own executable.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binary: Option<PathBuf>,
    /// How long a newly started holder has to answer, e.g. "10s".
    #[serde(default = "default_holder_start_timeout")]
    pub start_timeout: String,
    /// How long one request may take to be answered (an `ensure` includes
    /// connecting to the storage node), e.g. "60s".
    #[serde(default = "default_holder_request_timeout")]
    pub request_timeout: String,
    /// Let the built-in FUSE exposure raise the system-wide sysctl
    /// `fs.fuse.max_pages_limit` to its max_write's pages plus one (1025)
    /// when it is lower (never lowered; root only), so a 1 MiB write from
    /// a buffer not on a page boundary is one request, not two
    /// read-modify-write halves. Off: the sysctl is left alone (a host
    /// whose administrator owns it); exposures stay correct, large
    /// unaligned writes are slower. Applies in the holder and, with
    /// `enabled = false`, in the agent itself.
    #[serde(default = "default_true")]
    pub raise_fuse_max_pages_limit: bool,
}

pub(super) fn default_true() -> bool {
    true
}
/// Default of `holder.start_timeout`: a holder binds its socket within
/// milliseconds; seconds cover a loaded host.
pub const DEFAULT_HOLDER_START_TIMEOUT: &str = "10s";
/// Default of `holder.request_timeout`: longer than the initiator's
/// connect timeout so a slow connect is reported as the holder saw it.
pub const DEFAULT_HOLDER_REQUEST_TIMEOUT: &str = "60s";

pub(super) fn default_holder_start_timeout() -> String {
    DEFAULT_HOLDER_START_TIMEOUT.into()
}
pub(super) fn default_holder_request_timeout() -> String {
    DEFAULT_HOLDER_REQUEST_TIMEOUT.into()
}

impl Default for HolderConfig {
    fn default() -> Self {
        HolderConfig {
            enabled: true,
            binary: None,
            start_timeout: default_holder_start_timeout(),
            request_timeout: default_holder_request_timeout(),
            raise_fuse_max_pages_limit: true,
        }
    }
}

impl HolderConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == Self::default()
    }

    /// (start timeout, request timeout), both more than zero.
    pub fn timeouts(&self) -> Result<(Duration, Duration), AgentError> {
        let parse = |key: &str, v: &str| {
            let d = ferrofab_pki::parse_duration(v).map_err(|e| invalid(key, e.to_string()))?;
            if d.is_zero() {
                return Err(invalid(key, "must be more than 0s"));
            }
            Ok(d)
        };
        Ok((
            parse("holder.start_timeout", &self.start_timeout)?,
            parse("holder.request_timeout", &self.request_timeout)?,
        ))
    }
}
