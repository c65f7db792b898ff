//! The `[local_api]` section: bounds of the local API socket and their
//! validation.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::invalid;
use crate::error::AgentError;

/// Bounds of the local API socket (`[local_api]`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LocalApiConfig {
    /// A connection must send its whole request line within this (and
    /// take its answer within it too), e.g. "10s".
    #[serde(default = "default_request_timeout")]
    pub request_timeout: String,
    /// Connections served at once; more are answered `busy` and closed.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
}

/// Default of `local_api.request_timeout`: clients send their one line at
/// once; ten seconds covers a stalled scheduler, not an idle peer.
pub const DEFAULT_LOCAL_API_REQUEST_TIMEOUT: &str = "10s";
/// Default of `local_api.max_connections`: Puppet and scripts use one or a
/// few at a time; an attach may hold one for its whole wait.
pub const DEFAULT_LOCAL_API_MAX_CONNECTIONS: usize = 64;

pub(super) fn default_request_timeout() -> String {
    DEFAULT_LOCAL_API_REQUEST_TIMEOUT.into()
}
pub(super) fn default_max_connections() -> usize {
    DEFAULT_LOCAL_API_MAX_CONNECTIONS
}

impl Default for LocalApiConfig {
    fn default() -> Self {
        LocalApiConfig {
            request_timeout: default_request_timeout(),
            max_connections: default_max_connections(),
        }
    }
}

impl LocalApiConfig {
    pub(super) fn is_default(&self) -> bool {
        *self == LocalApiConfig::default()
    }

    /// `request_timeout` as a duration (validated at load; the default
    /// if it somehow does not parse).
    pub fn request_timeout(&self) -> Duration {
        self.parse_request_timeout()
            .unwrap_or(Duration::from_secs(10))
    }

    pub(super) fn parse_request_timeout(&self) -> Result<Duration, AgentError> {
        let key = "local_api.request_timeout";
        let d = ferrofab_pki::parse_duration(&self.request_timeout)
            .map_err(|e| invalid(key, e.to_string()))?;
        if d.is_zero() || d > Duration::from_secs(3600) {
            return Err(invalid(key, "must be between 1ms and 1h"));
        }
        Ok(d)
    }

    pub(super) fn validate(&self) -> Result<(), AgentError> {
        self.parse_request_timeout()?;
        if self.max_connections == 0 || self.max_connections > 65_536 {
            return Err(invalid(
                "local_api.max_connections",
                "must be between 1 and 65536",
            ));
        }
        Ok(())
    }
}
