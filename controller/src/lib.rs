//! `ferrofab-controller`: the single source of truth for nodes, pools,
//! volumes, attachments and tenants. One-way flow: API → store → planner →
//! per-node desired state → agents; agents report status back.
//!
//! # Layout
//!
//! The modules form layers; each uses only the layers below it (there are
//! no import cycles, `tests/tools/module-cycles.py` checks):
//!
//! 1. Leaves: [`clock`] (injectable time), [`identity`] (who a certificate
//!    names), [`action`] (the RPC names, for refusals and metrics).
//! 2. [`store`]: the etcd-shaped persistence boundary (revisions, CAS
//!    transactions, watch from a revision) with its [`store::redb`] and
//!    [`store::etcd`] backends and the [`store::watch`] hub they publish
//!    to; [`error`] is the operations' typed error; [`backup`] works on a
//!    store offline.
//! 3. [`resource`] (keys, kinds, names, sizes), [`staging`] (Apply's
//!    private fork of the store) and [`cache`] (the in-memory mirror every
//!    read comes from, with usage aggregates and indexes).
//! 4. The rules, pure functions of cached objects: [`validate`] (object
//!    limits, unique node identities), [`authz`] (who may do what),
//!    [`access`] (access modes, the fence of a move), [`domain`] (typed
//!    views of the messages, converted once), [`placement`] and
//!    [`planner`] (a node's desired state), which decide on those views
//!    rather than on the messages, [`expiry`] and [`heartbeat`]
//!    (when a burst volume expires, when a node is NotReady),
//!    [`conditions`], [`report`] (what an agent's report may say, its
//!    rate limit), [`config`], [`metrics`] and [`cluster_metrics`].
//! 5. [`ops`]: every write, one module per kind ([`ops::volume`],
//!    [`ops::attachment`], [`ops::node`], [`ops::pool`], [`ops::tenant`],
//!    [`ops::enroll`] for tokens, [`ops::status`] for agents' reports,
//!    [`ops::apitoken`] for the HTTP API's bearer tokens), and the reads
//!    every API shares ([`ops::read`]),
//!    over [`ops::Shared`]. Operations take typed inputs and return
//!    [`error::ApiError`]; they know no wire format.
//! 6. Callers of the operations, side by side: [`api`] (the gRPC adapters:
//!    decode, call an operation, encode; latency recorded by one tower
//!    layer, [`api::timing`]), [`http`] (the HTTP/JSON API and dashboard:
//!    the same operations behind JSON routes, API tokens or client
//!    certificates; it reuses [`api::watch`]), [`apply`] (a whole layout, rehearsed on a
//!    fork through [`ops::any`]) and [`loops`] (the expiry and heartbeat
//!    passes).
//! 7. [`server`] wires them together behind [`listener`] (connection caps,
//!    TLS); [`check`] is `--check-config`.
//!
//! A `CreateVolume` thus goes `api::admin` → `ops::volume::create` (authz,
//! placement) → `ops::Shared::put` (admission, CAS) → store → watch hub →
//! cache → `planner::desired_state` for the storage node's agent stream.
#![forbid(unsafe_code)]

pub mod access;
pub mod action;
pub mod api;
pub mod apply;
pub mod authz;
pub mod backup;
pub mod cache;
pub mod check;
pub mod clock;
pub mod cluster_metrics;
pub mod conditions;
pub mod config;
pub mod domain;
pub use ops::enroll;
pub mod error;
pub mod expiry;
pub mod heartbeat;
pub mod http;
pub mod identity;
pub mod keyring;
pub mod keys;
pub mod leader;
pub mod listener;
pub mod loops;
pub mod metrics;
pub mod ops;
pub mod placement;
pub mod planner;
pub mod report;
pub mod resource;
pub mod server;
pub mod staging;
pub mod store;
pub mod validate;
