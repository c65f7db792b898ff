//! ferrofab's controller: the single source of truth for nodes, pools,
//! volumes, attachments and tenants. One-way flow: API → store → planner →
//! per-node desired state → agents; agents report status back.

pub mod access;
pub mod api;
pub mod apply;
pub mod authz;
pub mod backup;
pub mod cache;
pub mod check;
pub mod clock;
pub mod cluster_metrics;
pub mod config;
pub mod enroll;
pub mod error;
pub mod expiry;
pub mod heartbeat;
pub mod identity;
pub mod keys;
pub mod listener;
pub mod metrics;
pub mod placement;
pub mod planner;
pub mod report;
pub mod resource;
pub mod server;
pub mod staging;
pub mod store;
pub mod validate;
pub mod watch;
