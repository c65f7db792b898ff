//! `ferrofab-nvmeof`: the command line over ferrofab's embedded NVMe/TCP
//! data path. The data path itself lives in focused crates; this one only
//! parses arguments and wires them together.
//!
//! # Layout
//!
//! * [`cli`] — the `ferrofab-nvmeof` subcommands: `serve`
//!   ([`cli::serve`], a target from a TOML file, reloaded on change),
//!   `discover`/`connect`/`disconnect` ([`cli::host`], the initiator with
//!   namespaces exposed as files) and `bench` ([`cli::bench`]).
//!
//! The crates it runs on, lowest first (each testable without the ones
//! above it):
//!
//! * `ferrofab-nvmeof-wire` — PDUs, queue entries, digests, spec
//!   structures, DH-HMAC-CHAP messages and crypto, human sizes. No I/O.
//! * `ferrofab-nvmeof-target` — the target with its block backends:
//!   subsystem registry, controller and queue state machines, discovery,
//!   listeners.
//! * `ferrofab-nvmeof-host` — the initiator: discovery, controllers,
//!   queues, reconnect; and `BlockIo`, the byte-addressed device interface
//!   the layers above run on.
//! * `ferrofab-nvmeof-expose` — connected namespaces as regular files
//!   through FUSE.
//! * `ferrofab-nvmeof-bench` — loopback baseline and workload engine.

pub mod cli;
