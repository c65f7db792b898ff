//! `ferrofab-nvmeof`: the embedded NVMe/TCP data path of ferrofab.
//!
//! The crate is layered so that each layer can be tested without the ones
//! above it:
//!
//! * [`wire`] — byte-exact encoding of NVMe/TCP PDUs, submission and
//!   completion queue entries, and the CRC-32C digests. No I/O.
//! * [`spec`] — constants and data structures from the NVMe Base and
//!   NVMe-oF specifications (opcodes, status codes, Identify pages).
//! * [`backend`] — block backends (regular files and block devices) that
//!   namespaces are stored on.
//! * [`target`] — the target: subsystem registry, controller and queue
//!   state machines, discovery, listeners.
//! * [`host`] — the initiator: discovery, controllers, queues, reconnect.
//! * [`bench`] — loopback baseline and workload engine behind `bench`.
//! * [`expose`] — connected namespaces as regular files through FUSE.
//! * [`units`] — human sizes such as `4TiB`.

pub mod auth;
pub mod backend;
pub mod bench;
pub mod cli;
pub mod expose;
pub mod host;
pub mod spec;
pub mod target;
pub mod units;
pub mod wire;
