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
