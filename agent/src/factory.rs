//! Chooses the data-path drivers from the config, once, at start: the
//! only place that knows which driver serves which role.
//!
//! | `data_path` | storage                            | workstation                                              |
//! |-------------|------------------------------------|----------------------------------------------------------|
//! | `builtin`   | [`BuiltinTarget`] (in process)     | the holder ([`HolderWorkstation`]); with `holder.enabled = false`, [`BuiltinInitiator`] in process |
//! | `kernel`    | [`KernelTarget`] (nvmet, configfs) | [`KernelWorkstation`] (nvme-fabrics)                     |

use std::path::PathBuf;
use std::sync::Arc;

use ferrofab_nvmeof_host::HostIdentity;

use crate::config::{AgentConfig, DriverKind};
use crate::driver::builtin::BuiltinTarget;
use crate::driver::initiator::BuiltinInitiator;
use crate::driver::kernel::{configfs::KernelTarget, host::KernelWorkstation, KernelPaths};
use crate::driver::{TargetDriver, WorkstationDriver};
use crate::error::AgentError;
use crate::holder::driver::HolderWorkstation;
use crate::metrics::HolderCounters;

/// The storage role's target driver.
pub fn target(cfg: &AgentConfig) -> Result<Arc<dyn TargetDriver>, AgentError> {
    Ok(match cfg.data_path {
        DriverKind::Builtin => Arc::new(BuiltinTarget::new(cfg.builtin_target.target_options())?),
        DriverKind::Kernel => Arc::new(KernelTarget::new(
            KernelPaths::from_config(&cfg.kernel),
            &cfg.state_dir,
        )),
    })
}

/// The workstation role's driver, connecting as `identity`; the holder
/// client counts its starts and failed requests into `counters`.
pub fn workstation(
    cfg: &AgentConfig,
    identity: HostIdentity,
    counters: Arc<HolderCounters>,
) -> Result<Box<dyn WorkstationDriver>, AgentError> {
    Ok(match cfg.data_path {
        DriverKind::Builtin if cfg.holder.enabled => {
            let (start, request) = cfg.holder.timeouts()?;
            Box::new(
                HolderWorkstation::new(holder_spawn_spec(cfg)?, identity.hostnqn, start, request)
                    .with_counters(counters),
            )
        }
        DriverKind::Builtin => Box::new(
            BuiltinInitiator::new(cfg.expose_dir.clone(), identity)
                .raising_fuse_max_pages_limit(cfg.holder.raise_fuse_max_pages_limit),
        ),
        DriverKind::Kernel => Box::new(KernelWorkstation::new(
            cfg,
            KernelPaths::from_config(&cfg.kernel),
            identity,
        )),
    })
}

/// How this agent starts its data-path holder: the configured binary, or
/// its own executable (which has the `holder run` subcommand).
pub(crate) fn holder_spawn_spec(cfg: &AgentConfig) -> Result<crate::holder::SpawnSpec, AgentError> {
    let binary = match &cfg.holder.binary {
        Some(b) => b.clone(),
        None => live_exe_path(std::env::current_exe().map_err(|e| AgentError::Io {
            what: "locating the agent executable for the data-path holder".into(),
            source: e,
        })?),
    };
    Ok(crate::holder::SpawnSpec {
        binary,
        state_dir: cfg.state_dir.clone(),
        expose_dir: cfg.expose_dir.clone(),
        log_level: cfg.log_level.clone(),
        raise_fuse_max_pages_limit: cfg.holder.raise_fuse_max_pages_limit,
    })
}

/// After a package upgrade replaced the running binary, Linux reports it
/// as `PATH (deleted)`; the new binary at `PATH` is the one to start.
fn live_exe_path(p: PathBuf) -> PathBuf {
    match p.to_str().and_then(|s| s.strip_suffix(" (deleted)")) {
        Some(live) => PathBuf::from(live),
        None => p,
    }
}
#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replaced_binary_is_started_from_its_live_path() {
        assert_eq!(
            live_exe_path("/usr/bin/ferrofab-agent (deleted)".into()),
            PathBuf::from("/usr/bin/ferrofab-agent")
        );
        assert_eq!(
            live_exe_path("/usr/bin/ferrofab-agent".into()),
            PathBuf::from("/usr/bin/ferrofab-agent")
        );
    }
}
