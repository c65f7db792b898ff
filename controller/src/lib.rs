//! ferrofab's controller: the single source of truth for nodes, pools,
//! volumes, attachments and tenants. One-way flow: API → store → planner →
//! per-node desired state → agents; agents report status back.

pub mod store;
pub mod watch;
