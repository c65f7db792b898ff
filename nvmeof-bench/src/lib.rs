//! Benchmarks: the engine behind `ferrofab-nvmeof bench` and
//! `./tests/run bench`.
//!
//! # Layout
//!
//! * [`baseline`] measures raw loopback TCP with the same message sizes as
//!   NVMe/TCP, the physical limit our NVMe numbers are quoted against.
//! * [`engine`] runs fio-like workloads ([`workload::JobParams`]) through an
//!   [`queue::IoQueue`]: any [`io::BlockIo`] (queue depth through threads),
//!   the initiator's pipelined queues, or a local file (the local ceiling).
//! * [`verify`] stamps blocks so lost, torn and misplaced writes are caught.
//! * [`io`] — the devices a job runs on: the initiator's [`io::BlockIo`]
//!   (from `ferrofab-nvmeof-host`), RAM ([`io::MemBlockIo`]) and the
//!   target's backends ([`io::BackendBlockIo`]); [`remote`] opens remote
//!   namespaces with pipelined queues.
//! * [`stats`] (latency histograms, CPU time), [`workload`] (job
//!   parameters) and [`progress`] (live progress on a terminal).
//! * [`report`] prints results as a table or stable JSON.
//!
//! Production code (the FUSE exposure, the agent) never depends on this
//! crate; the block-I/O interface it measures lives in the initiator.
//!
//! Numbers on the 2-vCPU development VMs swing 2-3x between runs, so a
//! result is only meaningful next to a baseline measured in the same run.

pub mod baseline;
pub mod engine;
pub mod io;
pub mod progress;
pub mod queue;
pub mod remote;
pub mod report;
pub mod stats;
pub mod verify;
pub mod workload;

use serde::Serialize;
use thiserror::Error;

/// How the initiator waits for completions; `bench --poll-mode`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PollMode {
    /// Sleep in `poll(2)` as soon as the socket has nothing to read.
    Interrupt,
    /// Spin for a budget learned from the queue's recent waits (about twice
    /// the typical wait, at most 50 µs, none while most responses take
    /// longer), then sleep: the initiator's default.
    Adaptive,
    /// Spin until the command completes.
    Busy,
}

/// Everything that can go wrong in a benchmark.
#[derive(Debug, Error)]
pub enum BenchError {
    #[error("invalid benchmark parameters: {0}")]
    InvalidParams(String),
    #[error("{op:?} at offset {offset} failed: {source}")]
    Io {
        offset: u64,
        op: queue::IoKind,
        #[source]
        source: std::io::Error,
    },
    #[error("I/O queue failed: {0}")]
    Queue(#[source] std::io::Error),
    #[error("loopback baseline failed: {0}")]
    Baseline(#[source] std::io::Error),
    #[error("remote namespace: {0}")]
    Remote(#[source] Box<dyn std::error::Error + Send + Sync>),
    #[error("a benchmark worker thread panicked")]
    WorkerPanicked,
    #[error("internal error: {0}")]
    Internal(&'static str),
}
