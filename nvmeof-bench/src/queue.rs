//! Submission/completion queues: the one interface the workload engine
//! drives, so a blocking `BlockIo` (queue depth through threads) and the
//! initiator's pipelined API (queue depth on one connection) are measured
//! by the same loop and their numbers are comparable.

use std::collections::VecDeque;
use std::io;
use std::sync::Arc;

use super::io::DynBlockIo;

/// What an I/O does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IoKind {
    Read,
    Write,
    Flush,
}

/// One submitted I/O. The buffer travels with the request and comes back
/// in the completion, so a pipelined implementation can own it while the
/// I/O is in flight without any borrowing across calls.
#[derive(Debug)]
pub struct IoRequest {
    /// Caller's identifier, returned unchanged in the completion.
    pub tag: u64,
    pub kind: IoKind,
    pub offset: u64,
    /// Data to write, or space to read into (its length is the I/O size).
    pub buf: Vec<u8>,
}

/// A finished I/O: the request as submitted plus its outcome.
#[derive(Debug)]
pub struct IoCompletion {
    pub req: IoRequest,
    pub result: io::Result<()>,
}

/// A queue of in-flight I/Os against one namespace.
///
/// Implementations: [`BlockingQueue`] for any `BlockIo`; the initiator's
/// pipelined queue pair once it is merged.
pub trait IoQueue: Send {
    /// Most I/Os that may be in flight at once.
    fn depth(&self) -> usize;
    /// Start an I/O. Callers never exceed `depth()` outstanding requests.
    fn submit(&mut self, req: IoRequest) -> io::Result<()>;
    /// Block until at least one in-flight I/O completes (returns at once if
    /// none is in flight) and append every available completion to `out`.
    fn reap(&mut self, out: &mut Vec<IoCompletion>) -> io::Result<()>;
}

/// Adapts a blocking `BlockIo` to [`IoQueue`]: requests run one after the
/// other, at reap time, on the calling thread. With depth 1 this is exactly
/// one synchronous call per I/O, which is how queue depth over a blocking
/// API is built: one such queue per thread.
pub struct BlockingQueue {
    dev: Arc<DynBlockIo>,
    depth: usize,
    pending: VecDeque<IoRequest>,
}

impl BlockingQueue {
    pub fn new(dev: Arc<DynBlockIo>, depth: usize) -> Self {
        Self {
            dev,
            depth: depth.max(1),
            pending: VecDeque::new(),
        }
    }

    fn execute(&self, req: &mut IoRequest) -> io::Result<()> {
        match req.kind {
            IoKind::Read => self.dev.read_at(&mut req.buf, req.offset),
            IoKind::Write => self.dev.write_at(&req.buf, req.offset),
            IoKind::Flush => self.dev.flush(),
        }
    }
}

impl IoQueue for BlockingQueue {
    fn depth(&self) -> usize {
        self.depth
    }

    fn submit(&mut self, req: IoRequest) -> io::Result<()> {
        if self.pending.len() >= self.depth {
            return Err(io::Error::other("queue full"));
        }
        self.pending.push_back(req);
        Ok(())
    }

    fn reap(&mut self, out: &mut Vec<IoCompletion>) -> io::Result<()> {
        if let Some(mut req) = self.pending.pop_front() {
            let result = self.execute(&mut req);
            out.push(IoCompletion { req, result });
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::MemBlockIo;

    #[test]
    fn blocking_queue_runs_in_order_and_returns_buffers() {
        let dev = Arc::new(MemBlockIo::new(1 << 16, 512));
        let mut q = BlockingQueue::new(dev, 2);
        q.submit(IoRequest {
            tag: 1,
            kind: IoKind::Write,
            offset: 512,
            buf: vec![5; 512],
        })
        .expect("submit write");
        q.submit(IoRequest {
            tag: 2,
            kind: IoKind::Read,
            offset: 512,
            buf: vec![0; 512],
        })
        .expect("submit read");
        assert!(q
            .submit(IoRequest {
                tag: 3,
                kind: IoKind::Flush,
                offset: 0,
                buf: Vec::new(),
            })
            .is_err());
        let mut out = Vec::new();
        q.reap(&mut out).expect("reap");
        q.reap(&mut out).expect("reap");
        q.reap(&mut out).expect("reap on empty");
        assert_eq!(out.len(), 2);
        assert_eq!(out[0].req.tag, 1);
        assert!(out[1].req.buf.iter().all(|&b| b == 5));
    }
}
