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
    /// In particular `f` must not submit I/O: it may run under the queue's
    /// receive lock, and a submission that waits for a free slot would
    /// wait for completions only that lock's holder can read (a deadlock).
    /// Hand further I/O to another thread instead.
    ///
    /// A panic in `f` is caught and logged: it runs inside the queue's
    /// receive loop, whose bookkeeping must go on for the other commands.
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
            call(f, ticket.finish(false));
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
        call(f, ticket.finish(false));
        return;
    }
    // The retry re-sends and waits, which the receiver must not do.
    let job = Arc::new(Mutex::new(Some((ticket, f))));
    let theirs = Arc::clone(&job);
    let spawned = std::thread::Builder::new()
        .name("nvmeof-retry".into())
        .spawn(move || {
            if let Some((ticket, f)) = plock(&theirs).take() {
                call(f, ticket.finish(false));
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
                Some(Err(e)) => call(f, Err(e)),
                _ => call(f, ticket.finish(false)),
            }
        }
    }
}

/// Run the callback, catching a panic: it runs inside a queue's receive
/// loop, and unwinding out of it would skip that loop's bookkeeping (the
/// receive buffer's position, handing the socket to the next reader),
/// hanging every later command of the queue.
fn call<F>(f: F, r: Result<Vec<u8>, HostError>)
where
    F: FnOnce(Result<Vec<u8>, HostError>),
{
    let run = std::panic::AssertUnwindSafe(move || f(r));
    if let Err(panic) = std::panic::catch_unwind(run) {
        let what = panic
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| panic.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "a non-string payload".into());
        tracing::error!(panic = %what, "a completion callback panicked; the queue goes on");
    }
}
