//! The NVMe/TCP initiator (host side).
//!
//! # Overview
//!
//! ```ignore
//! use ferrofab_nvmeof_host::*;
//! let id = HostIdentity::load_or_create_default()?;
//! let ctrl = Controller::connect(ConnectOptions::new("10.0.0.1:4420", "nqn.2026-11.io.ferrofab:vol", id))?;
//! let ns = ctrl.namespace(1)?;
//! let mut buf = vec![0u8; 4096];
//! ns.read_at(&mut buf, 0)?;                       // BlockIo, blocking
//! let t = ns.submit(IoOp::Read { offset: 0, len: 4096 })?;  // pipelined
//! let data = t.wait()?;
//! ctrl.watch(|ev| println!("{ev:?}"));           // resizes via AEN
//! ctrl.disconnect()?;
//! ```
//!
//! * [`discover`] reads a discovery controller's log page.
//! * [`Controller`] is one association with a subsystem: it owns an admin
//!   queue and N I/O queues, each its own TCP connection with its own
//!   receiver thread; it keeps the association alive (Keep Alive at KATO/2)
//!   and replaces it when it breaks (see `controller` for the reconnect
//!   model).
//! * [`Namespace`] does I/O: [`BlockIo`] for simple blocking use,
//!   [`Namespace::submit`]/[`Ticket`] and [`Pipeline`] for queue depth.
//!
//! # Layout
//!
//! From one connection up to what the layers above use:
//!
//! * `queue` — one NVMe/TCP connection (a submission/completion queue
//!   pair): ICReq/ICResp, command IDs, the receiver thread, polling.
//! * `exec` — one admin command sent and waited for, with the context
//!   (`Ctx`) that names the subsystem and address in errors.
//! * `auth` — the host side of DH-HMAC-CHAP on one queue, on the message
//!   formats and crypto of `ferrofab_nvmeof_wire::auth`.
//! * `assoc` — one association: admin queue, enable, Identify, I/O queues,
//!   shutdown.
//! * `controller` — [`Controller`]: an association kept alive and replaced
//!   after a connection loss; asynchronous events; namespace tracking.
//! * `namespace` — [`Namespace`]: blocking I/O, tickets and pipelines.
//! * `discovery` — [`discover`]; [`cmd`] builds the commands; [`identity`]
//!   keeps the host NQN and ID; `options` is [`ConnectOptions`]; [`error`]
//!   is [`HostError`].
//! * [`BlockIo`] and [`DynBlockIo`] (here) — the byte-addressed device the
//!   FUSE exposure (`ferrofab-nvmeof-expose`), the agent and the benchmark
//!   engine run on; [`Namespace`] implements it.
//!
//! # Latency and batching
//!
//! A thread waiting for a command reads the queue's socket itself (one
//! waiter per queue leads, the others follow; see `queue`): it busy-polls
//! for a budget learned from the queue's recent waits, at most
//! [`ConnectOptions::poll_spin`] (see `spin`), then sleeps in `poll(2)` on the
//! socket, so a response is consumed by the thread that wants it without a
//! hand-off between threads. A [`Pipeline`] defers its submissions until it
//! waits, so a window of commands leaves in one `writev`, and reads every
//! response that has arrived with one `recvfrom`. The per-queue receiver
//! thread only covers queues nobody waits on (asynchronous events,
//! completions collected later). [`Controller::io_stats`] counts the system
//! calls and hand-offs.
//!
//! No async runtime: std threads and non-blocking sockets with `poll(2)`.

mod assoc;
mod auth;
pub mod cmd;
mod controller;
mod discovery;
pub mod error;
mod exec;
pub mod identity;
mod namespace;
mod options;
mod queue;
mod spin;

pub use assoc::NamespaceInfo;
pub use controller::{Controller, ControllerState, NamespaceEvent};
pub use discovery::{discover, discover_with};
pub use error::HostError;
pub use ferrofab_nvmeof_wire::spec::identify::DiscoveryEntry;
pub use ferrofab_nvmeof_wire::wire::Digests;
pub use identity::HostIdentity;
pub use namespace::{Completed, IoOp, Namespace, Pipeline, Ticket};
pub use options::ConnectOptions;
pub use queue::QueueStats;

use std::io;

/// Byte-addressed block storage, the interface the benchmark and the FUSE
/// exposure code against. Implemented by [`Namespace`].
pub trait BlockIo {
    /// Current size in bytes (changes when the namespace is resized).
    fn size(&self) -> u64;
    /// Logical block size in bytes.
    fn block_size(&self) -> u32;
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()>;
    fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()>;
    fn flush(&self) -> io::Result<()>;
    /// A device that refuses every write (a read-only attachment): an
    /// exposure shows it without write permission and refuses to open it
    /// for writing.
    fn read_only(&self) -> bool {
        false
    }
}

/// What the FUSE exposure, the agent and the benchmark engine hold: a
/// [`BlockIo`] shareable across threads. Spelled out as an alias because
/// the trait itself does not carry the `Send + Sync` bounds.
pub type DynBlockIo = dyn BlockIo + Send + Sync;
