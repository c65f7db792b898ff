//! Completion callbacks: [`Namespace::submit_then`].
//!
//! A server that answers many clients (the FUSE holder) does not want a
//! thread per operation in flight, each sleeping until its command
//! completes and then woken to pass the result on: that is two thread
//! hand-offs per operation. With a callback the thread that receives the
//! response (the queue's receiver, or whichever waiter is reading the
//! socket) runs the continuation itself.
//!
//! A child module of `namespace`, so it reaches the ticket's parts without
//! widening their visibility.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use super::{IoOp, Namespace, Ticket};
use crate::queue::plock;
use crate::HostError;

/// One operation's state between its commands' completions: the last one
/// to complete finishes the ticket and calls `f`.
struct Pending<F> {
    left: AtomicUsize,
    ticket: Mutex<Option<Ticket>>,
    f: Mutex<Option<F>>,
}

impl Namespace {
    /// Start `op` and call `f` with its result once every command of it
    /// completed (the data of a read; empty for other operations), like
    /// [`super::Ticket::wait`] but without a waiting thread.
    ///
    /// `f` runs on the thread that completes the last command: usually the
    /// queue's receiver, or a thread waiting on the same queue that was
    /// reading the socket, or the caller itself if it completed at once
    /// (e.g. the controller has failed). So `f` must be short and must not
    /// block on this controller's I/O (no [`super::Ticket::wait`], no
    /// blocking calls): the receiver is what would complete it. Answering
    /// a client, releasing a lock or sending on a channel is what it is for.
    ///
    /// A data digest error is retried as [`super::Ticket::wait`] does, on a
    /// thread of its own (the retry waits); errors here are argument
    /// errors, and `f` is then not called.
    pub fn submit_then<F>(&self, op: IoOp, f: F) -> Result<(), HostError>
    where
        F: FnOnce(Result<Vec<u8>, HostError>) + Send + 'static,
    {
        let ticket = self.submit_to(op, None)?;
        let parts = ticket.parts.clone();
        if parts.is_empty() {
            f(ticket.finish(false));
            return Ok(());
        }
        let pending = Arc::new(Pending {
            left: AtomicUsize::new(parts.len()),
            ticket: Mutex::new(Some(ticket)),
            f: Mutex::new(Some(f)),
        });
        for r in parts {
            let p = Arc::clone(&pending);
            r.then(Box::new(move || {
                if p.left.fetch_sub(1, Ordering::AcqRel) == 1 {
                    finish(&p);
                }
            }));
        }
        Ok(())
    }
}

/// Every command completed: collect the result and hand it to the
/// callback, or to a retry thread if a command needs re-sending.
fn finish<F>(p: &Pending<F>)
where
    F: FnOnce(Result<Vec<u8>, HostError>) + Send + 'static,
{
    let (Some(ticket), Some(f)) = (plock(&p.ticket).take(), plock(&p.f).take()) else {
        return;
    };
    if !ticket.parts.iter().any(|r| r.is_digest_error()) {
        // Every part is done, so this does not wait.
        f(ticket.finish(false));
        return;
    }
    // The retry re-sends and waits, which the receiver must not do.
    let job = Arc::new(Mutex::new(Some((ticket, f))));
    let theirs = Arc::clone(&job);
    let spawned = std::thread::Builder::new()
        .name("nvmeof-retry".into())
        .spawn(move || {
            if let Some((ticket, f)) = plock(&theirs).take() {
                f(ticket.finish(false));
            }
        });
    if let Err(e) = spawned {
        tracing::warn!(error = %e, "no thread for a data digest retry; reporting the digest error");
        if let Some((ticket, f)) = plock(&job).take() {
            let err = ticket
                .parts
                .iter()
                .find(|r| r.is_digest_error())
                .map(|r| r.take_result());
            match err {
                Some(Err(e)) => f(Err(e)),
                _ => f(ticket.finish(false)),
            }
        }
    }
}
