//! Remote namespaces through the ferrofab initiator: one pipelined
//! [`IoQueue`] per `--queues`, each keeping `--qd` commands in flight, so
//! queue depth is on the wire rather than in threads.

use std::collections::HashMap;
use std::io;
use std::time::Duration;

use super::engine::Target;
use super::queue::{IoCompletion, IoKind, IoQueue, IoRequest};
use super::{BenchError, PollMode};
use ferrofab_nvmeof_host::{
    BlockIo, ConnectOptions, Controller, HostError, HostIdentity, IoOp, Namespace, Pipeline,
};

/// Where and how to connect.
#[derive(Debug, Clone)]
pub struct RemoteSpec {
    /// `host:port`.
    pub addr: String,
    pub subnqn: String,
    pub nsid: u32,
    /// I/O queues (TCP connections) to ask for.
    pub queues: u32,
    /// Commands each queue must be able to hold.
    pub queue_depth: u32,
    pub poll: PollMode,
    /// Host identity; `None` uses the one `connect` uses (created under
    /// /etc/nvme if missing), so targets that restrict hosts accept us.
    pub identity: Option<HostIdentity>,
    /// DH-HMAC-CHAP secrets, for targets that require authentication.
    pub dhchap: ferrofab_nvmeof_wire::auth::HostSecrets,
}

impl PollMode {
    /// Set how the initiator's waiters spin (`poll_spin`, `poll_adaptive`)
    /// for this mode: `interrupt` sleeps at once, `adaptive` spins a budget
    /// learned from recent waits up to the default cap, `busy` spins a
    /// fixed budget longer than any I/O, so a waiter effectively never
    /// sleeps.
    pub fn apply(self, opts: &mut ConnectOptions) {
        match self {
            PollMode::Interrupt => opts.poll_spin = Duration::ZERO,
            PollMode::Adaptive => opts.poll_adaptive = true,
            PollMode::Busy => {
                opts.poll_spin = Duration::from_secs(1);
                opts.poll_adaptive = false;
            }
        }
    }
}

fn remote_err(e: HostError) -> BenchError {
    BenchError::Remote(Box::new(e))
}

/// A connected controller and the namespace under test.
pub struct Remote {
    ctrl: Controller,
    ns: Namespace,
}

impl Remote {
    pub fn connect(spec: &RemoteSpec) -> Result<Self, BenchError> {
        let identity = match &spec.identity {
            Some(id) => id.clone(),
            None => HostIdentity::load_or_create_default().map_err(remote_err)?,
        };
        let mut opts = ConnectOptions::new(spec.addr.clone(), spec.subnqn.clone(), identity);
        opts.nr_io_queues = u16::try_from(spec.queues.max(1)).unwrap_or(u16::MAX);
        let wanted = spec.queue_depth.saturating_add(1);
        opts.queue_size = opts
            .queue_size
            .max(u16::try_from(wanted).unwrap_or(u16::MAX));
        spec.poll.apply(&mut opts);
        opts.dhchap_secret = spec.dhchap.host.clone();
        opts.dhchap_ctrl_secret = spec.dhchap.ctrl.clone();
        let ctrl = Controller::connect(opts).map_err(remote_err)?;
        let ns = ctrl.namespace(spec.nsid).map_err(remote_err)?;
        tracing::info!(
            addr = %spec.addr, subnqn = %spec.subnqn, nsid = spec.nsid,
            io_queues = ctrl.io_queues(), size = ns.size(), "connected for bench"
        );
        Ok(Self { ctrl, ns })
    }

    /// The namespace, e.g. to expose it or use it as a blocking `BlockIo`.
    pub fn namespace(&self) -> &Namespace {
        &self.ns
    }

    /// `queues` pipelines of depth `depth` over the namespace.
    pub fn target(&self, queues: u32, depth: u32) -> Target {
        let queues = (0..queues.max(1))
            .map(|_| {
                Box::new(PipelineQueue::new(self.ns.pipeline(depth as usize))) as Box<dyn IoQueue>
            })
            .collect();
        Target::Pipelined {
            size: self.ns.size(),
            block_size: self.ns.block_size(),
            queues,
        }
    }

    /// The initiator's data-path counters (system calls and hand-offs),
    /// summed over the I/O queues.
    pub fn io_stats(&self) -> ferrofab_nvmeof_host::QueueStats {
        self.ctrl.io_stats()
    }

    /// Orderly shutdown (CC.SHN) so the target is not left waiting.
    pub fn disconnect(self) -> Result<(), BenchError> {
        self.ctrl.disconnect().map_err(remote_err)
    }
}

/// [`IoQueue`] over the initiator's [`Pipeline`].
pub struct PipelineQueue {
    pipe: Pipeline,
    /// What each in-flight tag was, to rebuild the completion.
    inflight: Inflight,
}

type InflightOp = (IoKind, u64, Vec<u8>);

/// In-flight operations by tag: the engine's tags are its slot numbers
/// (0..depth), kept in a vector indexed by tag (a hash insert and remove
/// per I/O was about a tenth of the initiator's user time at 4 KiB QD32);
/// any other tag goes to a map.
#[derive(Default)]
struct Inflight {
    by_slot: Vec<Option<InflightOp>>,
    other: HashMap<u64, InflightOp>,
}

/// Tags below this are slot numbers (the vector grows to the largest one).
const SLOT_TAGS: u64 = 4096;

impl Inflight {
    fn insert(&mut self, tag: u64, op: InflightOp) {
        if tag < SLOT_TAGS {
            let i = tag as usize;
            if self.by_slot.len() <= i {
                self.by_slot.resize_with(i + 1, || None);
            }
            self.by_slot[i] = Some(op);
        } else {
            self.other.insert(tag, op);
        }
    }

    fn remove(&mut self, tag: u64) -> Option<InflightOp> {
        if tag < SLOT_TAGS {
            self.by_slot.get_mut(tag as usize)?.take()
        } else {
            self.other.remove(&tag)
        }
    }
}

impl PipelineQueue {
    pub fn new(pipe: Pipeline) -> Self {
        Self {
            pipe,
            inflight: Inflight::default(),
        }
    }

    fn completion(&mut self, tag: u64, result: Result<Vec<u8>, HostError>) -> IoCompletion {
        let (kind, offset, kept) =
            self.inflight
                .remove(tag)
                .unwrap_or((IoKind::Flush, 0, Vec::new()));
        let (buf, result) = match (kind, result) {
            (IoKind::Read, Ok(data)) => (data, Ok(())),
            // The pipeline hands a write's buffer back (see `submit`).
            (IoKind::Write, Ok(data)) => (data, Ok(())),
            (_, Ok(_)) => (kept, Ok(())),
            (_, Err(e)) => (kept, Err(io::Error::other(e))),
        };
        IoCompletion {
            req: IoRequest {
                tag,
                kind,
                offset,
                buf,
            },
            result,
        }
    }
}

impl IoQueue for PipelineQueue {
    fn depth(&self) -> usize {
        usize::MAX
    }

    fn submit(&mut self, req: IoRequest) -> io::Result<()> {
        let IoRequest {
            tag,
            kind,
            offset,
            buf,
        } = req;
        let (op, kept) = match kind {
            IoKind::Read => {
                // The read lands in the caller's buffer: no allocation per
                // read.
                self.pipe
                    .submit_read(tag, offset, buf)
                    .map_err(io::Error::other)?;
                self.inflight.insert(tag, (kind, offset, Vec::new()));
                return Ok(());
            }
            // The pipeline takes the write data and hands it back on
            // success (no copy: for 128 KiB writes a copy per I/O costs
            // about half of what the kernel's own copy into the socket
            // does). A failed write gives nothing back, but it also ends
            // the job.
            IoKind::Write => (IoOp::Write { offset, data: buf }, Vec::new()),
            IoKind::Flush => (IoOp::Flush, buf),
        };
        self.pipe.submit(tag, op).map_err(io::Error::other)?;
        self.inflight.insert(tag, (kind, offset, kept));
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<IoCompletion>) -> io::Result<()> {
        let Some(first) = self.pipe.wait_any() else {
            return Ok(());
        };
        out.push(self.completion(first.tag, first.result));
        while let Some(c) = self.pipe.try_complete() {
            out.push(self.completion(c.tag, c.result));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn poll_modes_map_to_spin_budgets() {
        let base = ConnectOptions::new("h:1", "nqn.x", HostIdentity::ephemeral());
        let with = |m: PollMode| {
            let mut o = base.clone();
            m.apply(&mut o);
            (o.poll_spin, o.poll_adaptive)
        };
        assert_eq!(with(PollMode::Interrupt).0, Duration::ZERO);
        assert_eq!(with(PollMode::Adaptive), (base.poll_spin, true));
        let (spin, adaptive) = with(PollMode::Busy);
        assert!(spin >= Duration::from_millis(100) && !adaptive);
    }
}
