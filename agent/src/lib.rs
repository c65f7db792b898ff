//! ferrofab node agent.
//!
//! Runs on every node and converges the local data path to the desired
//! state the controller computes for the node: exports on storage nodes
//! (the built-in NVMe/TCP target, in this process), connections and their
//! file exposures on workstations. Level-triggered and idempotent; the last
//! applied desired state is cached on disk so the node keeps (and after a
//! restart, rebuilds) its data path while the controller is unreachable.
//!
//! ```no_run
//! # async fn f() -> Result<(), ferrofab_agent::AgentError> {
//! let cfg = ferrofab_agent::AgentConfig::load("/etc/ferrofab/agent.toml".as_ref())?;
//! let agent = ferrofab_agent::Agent::start(cfg).await?;
//! // ...
//! agent.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! Modules import only downward (no cycles; `tests/tools/module-cycles.py`):
//!
//! * Wiring: `agent` (start, the main loop, [`AgentHandle`]) over `api`
//!   (the local API handler) and `reload` (the config-file watcher), which
//!   all share `shared::Shared` (config, cache, reconcilers, last report;
//!   one blocking pass and one observation).
//! * [`factory`]: chooses the drivers from the config, once: `data_path`
//!   (`builtin` or `kernel`) per role, and `holder.enabled` for the
//!   built-in workstation.
//! * [`holder`]: the data-path holder process (it runs the workstation
//!   reconciler over the built-in initiator) and the agent's driver that
//!   reaches it through its socket.
//! * [`reconcile`]: *when* to act. One reconciler per role, level-triggered
//!   and idempotent: [`reconcile::storage`] over a
//!   [`driver::TargetDriver`], [`reconcile::workstation`] over a
//!   [`driver::WorkstationDriver`].
//! * [`driver`]: *how* to act. The built-in target
//!   ([`driver::builtin`]) and initiator ([`driver::initiator`]), Linux
//!   nvmet and nvme-fabrics ([`driver::kernel`]).
//! * [`backing`]: backing files: created with an ownership marker, grown,
//!   deleted only when marked ours.
//! * Vocabulary at the bottom: [`problem`] (reasons, pass outcomes,
//!   conditions), [`names`] (names that become paths), [`status`] (what is
//!   reported and shown), [`config`], [`cache`], [`metrics`], [`expiry`].
//! * Edges: [`client`] (the controller stream), [`local_api`] (the socket
//!   server), [`enroll`] and [`bootstrap`], [`check`].

mod agent;
mod api;
pub mod backing;
pub mod bootstrap;
pub mod cache;
pub mod check;
pub mod client;
pub mod config;
pub mod driver;
pub mod enroll;
mod error;
pub mod expiry;
pub mod factory;
pub mod holder;
pub mod local_api;
pub mod metrics;
pub mod names;
pub mod problem;
pub mod reconcile;
mod reload;
mod shared;
pub mod status;

pub use agent::{Agent, AgentHandle, StartOptions};
pub use api::attachment_name;
pub use config::{AgentConfig, DriverKind, HolderConfig, PoolConfig, Provisioning, Role, TlsFiles};
pub use error::AgentError;
pub use reload::LogReload;
