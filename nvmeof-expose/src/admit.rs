//! What a mount lets into the holder at once.
//!
//! * [`Budget`]: bytes and requests in flight to the initiator. With
//!   asynchronous replies a FUSE thread no longer waits per request, so
//!   nothing else would bound them but the initiator's queue slots: many
//!   application threads each writing 4 MiB, or a reconnect during which
//!   commands pile up in the controller's pending list, would each keep
//!   a copy of their data. A request takes its share before it is
//!   submitted (its FUSE thread waits while the budget is spent) and
//!   gives it back when it was answered.
//! * [`Reserve`]: FUSE threads that may block. Requests that can wait
//!   (fsync, byte-granular I/O, and whole-block I/O that may wait for a
//!   range lock, the budget or a queue slot) run on at most all threads
//!   but one; when none is free they are queued and run by the next
//!   thread that finishes one. So during an outage the last thread still
//!   answers getattr, open, release and statfs.

use std::collections::VecDeque;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

fn plock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Bytes and requests in flight of one mount (see the module docs).
#[derive(Debug)]
pub struct Budget {
    max_bytes: usize,
    max_requests: usize,
    state: Mutex<State>,
    freed: Condvar,
}

#[derive(Debug, Default)]
struct State {
    spent: Spent,
    /// Threads waiting for a share: a share given back signals only when
    /// there is one (a notify is a system call, on every request).
    waiting: usize,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Spent {
    pub bytes: usize,
    pub requests: usize,
    /// The most requests seen in flight at once (for tests and logs).
    pub peak_requests: usize,
    /// The most bytes seen in flight at once.
    pub peak_bytes: usize,
}

/// One request's share of a [`Budget`], given back when dropped.
#[derive(Debug)]
pub struct Share {
    budget: Arc<Budget>,
    bytes: usize,
}

impl Budget {
    /// At most `max_bytes` and `max_requests` in flight (each at least 1).
    pub fn new(max_bytes: usize, max_requests: usize) -> Arc<Budget> {
        Arc::new(Budget {
            max_bytes: max_bytes.max(1),
            max_requests: max_requests.max(1),
            state: Mutex::new(State::default()),
            freed: Condvar::new(),
        })
    }

    /// Wait until a request of `bytes` fits, and take its share. A request
    /// larger than the whole budget goes alone, when nothing else is in
    /// flight, rather than never.
    pub fn take(self: &Arc<Self>, bytes: usize) -> Share {
        let mut g = plock(&self.state);
        while g.spent.requests >= self.max_requests
            || (g.spent.requests > 0 && g.spent.bytes + bytes > self.max_bytes)
        {
            g.waiting += 1;
            g = self.freed.wait(g).unwrap_or_else(|p| p.into_inner());
            g.waiting -= 1;
        }
        let s = &mut g.spent;
        s.requests += 1;
        s.bytes += bytes;
        s.peak_requests = s.peak_requests.max(s.requests);
        s.peak_bytes = s.peak_bytes.max(s.bytes);
        Share {
            budget: Arc::clone(self),
            bytes,
        }
    }

    /// What is in flight now, and the peaks.
    pub fn spent(&self) -> Spent {
        plock(&self.state).spent
    }
}

impl Drop for Share {
    fn drop(&mut self) {
        let mut g = plock(&self.budget.state);
        g.spent.requests -= 1;
        g.spent.bytes -= self.bytes;
        let waiting = g.waiting > 0;
        drop(g);
        if waiting {
            self.budget.freed.notify_all();
        }
    }
}

type Job = Box<dyn FnOnce() + Send>;

/// FUSE threads that may block (see the module docs).
pub struct Reserve {
    state: Mutex<ReserveState>,
}

struct ReserveState {
    free: usize,
    queued: VecDeque<Job>,
}

/// A thread's permission to block, given back (after running what was
/// queued meanwhile) when dropped.
pub struct Turn<'a> {
    reserve: &'a Reserve,
}

impl Reserve {
    /// For a mount of `threads` FUSE threads: all but one may block. One
    /// thread cannot keep one back; it may always block.
    pub fn new(threads: usize) -> Reserve {
        Reserve {
            state: Mutex::new(ReserveState {
                free: threads.saturating_sub(1).max(1),
                queued: VecDeque::new(),
            }),
        }
    }

    /// A turn for this thread, with `what` handed back, if one is free;
    /// otherwise `later(what)` makes a job that is queued (to run on the
    /// thread that gives the next turn back) and `None` is returned.
    /// Decided under one lock, so a job is never queued just after the
    /// last turn was given back.
    pub fn turn_or_queue<T>(&self, what: T, later: impl FnOnce(T) -> Job) -> Option<(Turn<'_>, T)> {
        let mut s = plock(&self.state);
        if s.free > 0 {
            s.free -= 1;
            return Some((Turn { reserve: self }, what));
        }
        s.queued.push_back(later(what));
        None
    }

    /// Turns free now (for tests).
    pub fn free(&self) -> usize {
        plock(&self.state).free
    }
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        loop {
            let next = {
                let mut s = plock(&self.reserve.state);
                match s.queued.pop_front() {
                    Some(job) => job,
                    None => {
                        s.free += 1;
                        return;
                    }
                }
            };
            // Runs with this thread's turn still taken.
            next();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    #[test]
    fn the_budget_blocks_when_spent_and_lets_in_when_given_back() {
        let b = Budget::new(8192, 2);
        let a = b.take(4096);
        let c = b.take(4096);
        let waiter = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || drop(b.take(4096)))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!waiter.is_finished(), "a third request got in");
        drop(a);
        waiter.join().expect("join");
        drop(c);
        let s = b.spent();
        assert_eq!((s.requests, s.bytes), (0, 0));
        assert_eq!((s.peak_requests, s.peak_bytes), (2, 8192));
        // Bytes alone block too, and an oversized request goes alone.
        let big = b.take(1 << 20);
        let small = {
            let b = Arc::clone(&b);
            std::thread::spawn(move || drop(b.take(512)))
        };
        std::thread::sleep(Duration::from_millis(30));
        assert!(!small.is_finished(), "got in past the byte limit");
        drop(big);
        small.join().expect("join");
    }

    #[test]
    fn many_threads_never_exceed_the_budget() {
        let b = Budget::new(64 << 10, 4);
        std::thread::scope(|s| {
            for _ in 0..16 {
                s.spawn(|| {
                    for _ in 0..50 {
                        let share = b.take(16 << 10);
                        std::thread::yield_now();
                        drop(share);
                    }
                });
            }
        });
        let s = b.spent();
        assert!(s.peak_requests <= 4 && s.peak_bytes <= 64 << 10, "{s:?}");
        assert_eq!((s.requests, s.bytes), (0, 0));
    }

    #[test]
    fn the_reserve_queues_beyond_all_threads_but_one() {
        let r = Reserve::new(3);
        let ran = Arc::new(AtomicUsize::new(0));
        let job = |ran: Arc<AtomicUsize>| -> Job {
            Box::new(move || {
                ran.fetch_add(1, Ordering::SeqCst);
            })
        };
        let (t1, _) = r.turn_or_queue(Arc::clone(&ran), job).expect("first turn");
        let (t2, _) = r.turn_or_queue(Arc::clone(&ran), job).expect("second turn");
        assert!(
            r.turn_or_queue(Arc::clone(&ran), job).is_none(),
            "a third blocker"
        );
        assert!(
            r.turn_or_queue(Arc::clone(&ran), job).is_none(),
            "a fourth blocker"
        );
        assert_eq!(ran.load(Ordering::SeqCst), 0);
        drop(t1);
        assert_eq!(ran.load(Ordering::SeqCst), 2, "queued jobs ran");
        assert_eq!(r.free(), 1);
        drop(t2);
        assert_eq!(r.free(), 2);
        assert_eq!(Reserve::new(1).free(), 1, "one thread may block");
    }
}
