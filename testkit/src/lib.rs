//! Shared fixtures of ferrofab's integration tests, so each crate's
//! `tests/` holds the test and not another copy of its scaffolding.
//!
//! A dev-dependency only: no shipped binary links it.
//!
//! # Layout
//! - [`pki`]: a CA and client certificates from `ferrofab-pki`, issued the
//!   way `ferrofab pki init` / `pki issue` make them in production.
//! - [`process`]: spawning a built binary and waiting for its ready line,
//!   building another package's binary, free ports, resident memory.
//! - [`controller`]: a real `ferrofab-controller` process over mTLS on
//!   loopback, with typed clients (used by the controller, agent and CLI
//!   suites).
//! - [`objects`]: builders of API objects (tenants, nodes, pools, volumes,
//!   attachments) and [`objects::Create`], one call to create any of them.
//! - [`wait`]: one polling helper, [`wait::wait_until`].
//! - [`data`]: deterministic test data and checksums.
//! - [`client`]: the CLI's `client.toml` for a controller.
//! - `agent` (feature `agent`, off by default): the agent's process
//!   harness, `ferrofab-agent` processes enrolled through a real controller
//!   (`AgentProc`), the usual layouts, and a write stream in another
//!   process.
//! - `fake_controller` (feature `fake-controller`, off by default): the
//!   CLI's fake controller, an in-memory admin service over mTLS, and a
//!   helper that runs the `ferrofab` binary.
//! - `http` (feature `http`, off by default): an HTTPS client of the
//!   controller's HTTP/JSON API, with certificates or API tokens, and a
//!   reader of its server-sent events.
//! - `nvme` (feature `nvme`, off by default): the data-path fixtures, a
//!   loopback target with a byte-level host (`nvme::mini_host`) and a
//!   scripted fake target (`nvme::fake_target`); only the data-path suites
//!   turn it on, so no other suite builds the data-path crates.
//!
//! Everything that needs gRPC or certificates sits behind the default
//! feature `control-plane`; without it (the data-path suite) the kit is
//! [`wait`], [`data`] and [`process`] only.
#![forbid(unsafe_code)]

#[cfg(feature = "agent")]
pub mod agent;
#[cfg(feature = "control-plane")]
pub mod client;
#[cfg(feature = "control-plane")]
pub mod controller;
pub mod data;
#[cfg(feature = "fake-controller")]
pub mod fake_controller;
#[cfg(feature = "http")]
pub mod http;
#[cfg(feature = "nvme")]
pub mod nvme;
#[cfg(feature = "control-plane")]
pub mod objects;
#[cfg(feature = "control-plane")]
pub mod pki;
pub mod process;
pub mod wait;

/// One mebibyte, the unit test sizes are written in.
pub const MIB: usize = 1 << 20;

/// What most tests use: `use ferrofab_testkit::prelude::*;`.
#[cfg(feature = "control-plane")]
pub mod prelude {
    pub use crate::controller::{controller_bin, Controller, Options};
    pub use crate::objects::*;
    pub use crate::pki::{Cred, TestPki};
    pub use crate::process::free_port;
    pub use crate::wait::{assert_process_series, http_get, next, next_within, wait_until};
    pub use crate::MIB;
}
