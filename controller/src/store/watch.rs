//! The watch hub: fans committed events out to subscribers in revision
//! order. It keeps a bounded in-memory history so that a watcher can resume
//! from a recent revision (for example after a reconnect) without a relist.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, watch};

use crate::store::{Event, Revision, StoreError};

/// Events a subscriber may have queued before it is considered too slow and
/// cut off (it can resume from its last revision).
const SUBSCRIBER_BUFFER: usize = 4096;

/// What a watcher receives: the history it asked for, then live events.
pub struct WatchStream {
    pub backlog: Vec<Arc<Event>>,
    pub live: mpsc::Receiver<Arc<Event>>,
    /// Set when the hub dropped this subscriber for falling behind.
    pub lagged: Arc<AtomicBool>,
}

struct Subscriber {
    prefix: String,
    tx: mpsc::Sender<Arc<Event>>,
    lagged: Arc<AtomicBool>,
}

struct Inner {
    history: VecDeque<Arc<Event>>,
    capacity: usize,
    revision: Revision,
    /// The history holds every event with a revision above this one.
    /// Kept explicitly rather than derived from the oldest event because
    /// revisions need not be dense: an etcd-backed store skips the
    /// revisions of writes outside its prefix, so "oldest kept is
    /// `from + 1`" would refuse sound resumes.
    complete_after: Revision,
    subscribers: Vec<Subscriber>,
}

impl Inner {
    /// Trims the history to `capacity` events by dropping whole revisions
    /// from the front: a backlog is promised to hold every event after its
    /// start, so the oldest kept revision must be complete. The newest
    /// revision is kept even when it alone is over capacity.
    fn evict_whole_revisions(&mut self) {
        let newest = self.history.back().map(|e| e.revision);
        while self.history.len() > self.capacity {
            let Some(oldest) = self.history.front().map(|e| e.revision) else {
                break;
            };
            if Some(oldest) == newest {
                break;
            }
            while self.history.front().is_some_and(|e| e.revision == oldest) {
                self.history.pop_front();
            }
            self.complete_after = oldest;
        }
    }
}

/// See the module docs.
pub struct Hub {
    inner: Mutex<Inner>,
}

impl Hub {
    /// `history` holds the most recent events (oldest first) and `revision`
    /// the latest committed revision.
    pub fn new(history: Vec<Event>, revision: Revision, capacity: usize) -> Self {
        let mut h: VecDeque<Arc<Event>> = history.into_iter().map(Arc::new).collect();
        while h.len() > capacity {
            h.pop_front();
        }
        // Dense revisions (redb): complete from just before the oldest kept
        // event, or from `revision` when nothing is kept.
        let complete_after = h.front().map_or(revision, |e| e.revision.saturating_sub(1));
        Self::with_floor(h, revision, capacity, complete_after)
    }

    /// A hub whose `history` (oldest first) holds every event above
    /// `complete_after`, for stores whose revisions are not dense (see the
    /// etcd backend). Trimmed to `capacity` by whole revisions.
    pub fn sparse(
        history: Vec<Event>,
        revision: Revision,
        capacity: usize,
        complete_after: Revision,
    ) -> Self {
        let h = history.into_iter().map(Arc::new).collect();
        let hub = Self::with_floor(h, revision, capacity, complete_after);
        hub.lock().evict_whole_revisions();
        hub
    }

    fn with_floor(
        history: VecDeque<Arc<Event>>,
        revision: Revision,
        capacity: usize,
        complete_after: Revision,
    ) -> Self {
        Self {
            inner: Mutex::new(Inner {
                history,
                capacity,
                revision,
                complete_after,
                subscribers: Vec::new(),
            }),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Number of live subscribers (for metrics).
    pub fn subscribers(&self) -> usize {
        self.lock().subscribers.len()
    }

    /// Publishes events committed in one batch, already in revision order.
    pub fn publish(&self, events: Vec<Event>) {
        let mut inner = self.lock();
        let last = events.len().saturating_sub(1);
        for (i, mut ev) in events.into_iter().enumerate() {
            ev.batch_end = i == last;
            let ev = Arc::new(ev);
            inner.revision = inner.revision.max(ev.revision);
            inner.history.push_back(ev.clone());
            inner.subscribers.retain(|s| deliver(s, &ev));
        }
        inner.evict_whole_revisions();
    }

    /// Subscribes to events under `prefix` with revision > `from`.
    pub fn subscribe(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let mut inner = self.lock();
        // The backlog must be contiguous: every event after `from`.
        if from < inner.revision && from < inner.complete_after {
            return Err(StoreError::Compacted {
                requested: from,
                oldest: inner.complete_after,
            });
        }
        let backlog: Vec<Arc<Event>> = inner
            .history
            .iter()
            .filter(|e| e.revision > from && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
        // Watchers that ended since the last publish still sit here; drop
        // them now so a quiet store does not accumulate them.
        inner.subscribers.retain(|s| !s.tx.is_closed());
        let (tx, live) = mpsc::channel(SUBSCRIBER_BUFFER);
        let lagged = Arc::new(AtomicBool::new(false));
        inner.subscribers.push(Subscriber {
            prefix: prefix.to_string(),
            tx,
            lagged: lagged.clone(),
        });
        Ok(WatchStream {
            backlog,
            live,
            lagged,
        })
    }
}

/// The next live event for a watch task, or `None` once the client has
/// gone (its response stream was dropped), the server is stopping, or the
/// hub dropped the subscriber. A task that only noticed a departed client
/// when sending would live forever when its identity may see none of the
/// events (a node watching volumes of other nodes): it must wake on the
/// client's departure itself.
pub async fn next_live<T>(
    live: &mut mpsc::Receiver<Arc<Event>>,
    client: &mpsc::Sender<T>,
    stopping: &mut watch::Receiver<bool>,
) -> Option<Arc<Event>> {
    if *stopping.borrow() {
        return None;
    }
    tokio::select! {
        ev = live.recv() => ev,
        _ = client.closed() => None,
        _ = stopping.changed() => None,
    }
}

/// Why a watch was refused.
#[derive(Debug, thiserror::Error)]
#[error(
    "{identity} already has {open} watch streams open, the most one identity may have \
     (server.max_watches_per_identity = {max}); close some before opening another"
)]
pub struct WatchLimitError {
    pub identity: String,
    pub open: usize,
    pub max: usize,
}

/// Caps the watch streams one identity may hold open at once. Each stream
/// costs a task, two channels and a hub subscriber; without a cap one
/// certificate could open them until the controller runs out of memory.
#[derive(Debug)]
pub struct WatchLimiter {
    max: usize,
    open: Mutex<HashMap<String, usize>>,
}

/// One open watch stream of an identity; frees its slot when dropped
/// (when the watch task ends).
#[derive(Debug)]
pub struct WatchPermit {
    limiter: Arc<WatchLimiter>,
    identity: String,
}

impl WatchLimiter {
    pub fn new(max: usize) -> Arc<Self> {
        Arc::new(Self {
            max,
            open: Mutex::new(HashMap::new()),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, usize>> {
        self.open.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A slot for one more stream of `identity`, or why there is none.
    pub fn acquire(self: &Arc<Self>, identity: &str) -> Result<WatchPermit, WatchLimitError> {
        let mut open = self.lock();
        let n = open.entry(identity.to_string()).or_insert(0);
        if *n >= self.max {
            return Err(WatchLimitError {
                identity: identity.to_string(),
                open: *n,
                max: self.max,
            });
        }
        *n += 1;
        Ok(WatchPermit {
            limiter: self.clone(),
            identity: identity.to_string(),
        })
    }

    /// Streams `identity` holds open now.
    pub fn open(&self, identity: &str) -> usize {
        self.lock().get(identity).copied().unwrap_or(0)
    }
}

impl Drop for WatchPermit {
    fn drop(&mut self) {
        let mut open = self.limiter.lock();
        if let Some(n) = open.get_mut(&self.identity) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                open.remove(&self.identity);
            }
        }
    }
}

/// Returns false when the subscriber must be dropped (gone or too slow).
fn deliver(sub: &Subscriber, ev: &Arc<Event>) -> bool {
    if !ev.kv.key.starts_with(&sub.prefix) {
        return !sub.tx.is_closed();
    }
    match sub.tx.try_send(ev.clone()) {
        Ok(()) => true,
        Err(mpsc::error::TrySendError::Full(_)) => {
            sub.lagged.store(true, Ordering::SeqCst);
            false
        }
        Err(mpsc::error::TrySendError::Closed(_)) => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{EventKind, KeyValue};

    fn ev(rev: Revision, key: &str) -> Event {
        Event {
            kind: EventKind::Put,
            kv: KeyValue {
                key: key.into(),
                value: vec![],
                create_revision: rev,
                mod_revision: rev,
            },
            revision: rev,
            batch_end: false,
        }
    }

    #[test]
    fn resume_replays_history_then_live_in_order() {
        let hub = Hub::new(vec![ev(1, "a/1"), ev(2, "b/1"), ev(3, "a/2")], 3, 10);
        let mut w = hub.subscribe("a/", 1).expect("subscribe");
        assert_eq!(w.backlog.len(), 1);
        assert_eq!(w.backlog[0].revision, 3);
        hub.publish(vec![ev(4, "a/3"), ev(5, "b/2")]);
        let got = w.live.try_recv().expect("live event");
        assert_eq!(got.revision, 4);
        assert!(w.live.try_recv().is_err());
    }

    #[test]
    fn watch_limiter_caps_per_identity_and_frees_on_drop() {
        let l = WatchLimiter::new(2);
        let a = l.acquire("node:a").expect("1st");
        let _b = l.acquire("node:a").expect("2nd");
        let e = l.acquire("node:a").expect_err("3rd refused");
        assert!(
            e.to_string().contains("max_watches_per_identity = 2"),
            "{e}"
        );
        l.acquire("node:b").expect("other identities are separate");
        drop(a);
        assert_eq!(l.open("node:a"), 1);
        l.acquire("node:a").expect("slot freed");
    }

    #[tokio::test]
    async fn next_live_ends_when_the_client_goes_without_any_event() {
        let hub = Hub::new(vec![], 0, 10);
        let mut w = hub.subscribe("a/", 0).expect("subscribe");
        let (tx, rx) = mpsc::channel::<()>(1);
        let (_stop_tx, mut stopping) = watch::channel(false);
        drop(rx);
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            next_live(&mut w.live, &tx, &mut stopping),
        )
        .await
        .expect("ends at once");
        assert!(got.is_none());
    }

    #[test]
    fn subscribe_prunes_departed_subscribers() {
        let hub = Hub::new(vec![], 0, 10);
        for _ in 0..100 {
            drop(hub.subscribe("a/", 0).expect("subscribe"));
        }
        assert_eq!(hub.subscribers(), 1);
    }

    #[test]
    fn resume_from_compacted_revision_is_refused() {
        let hub = Hub::new(vec![ev(5, "a"), ev(6, "a")], 6, 2);
        assert!(matches!(
            hub.subscribe("", 2),
            Err(StoreError::Compacted { requested: 2, .. })
        ));
        assert!(hub.subscribe("", 4).is_ok());
        assert!(hub.subscribe("", 6).is_ok());
    }

    #[test]
    fn publish_marks_the_last_event_of_each_batch() {
        let hub = Hub::new(Vec::new(), 0, 16);
        let mut sub = hub.subscribe("", 0).expect("subscribe");
        hub.publish(vec![ev(1, "a"), ev(1, "b"), ev(1, "c")]);
        hub.publish(vec![ev(2, "d")]);
        let flags: Vec<(Revision, bool)> = std::iter::from_fn(|| sub.live.try_recv().ok())
            .map(|e| (e.revision, e.batch_end))
            .collect();
        assert_eq!(flags, [(1, false), (1, false), (1, true), (2, true)]);
    }

    #[test]
    fn history_drops_whole_revisions() {
        let hub = Hub::new(Vec::new(), 0, 3);
        hub.publish(vec![ev(1, "a"), ev(1, "b")]);
        hub.publish(vec![ev(2, "c"), ev(2, "d")]);
        // Four events over a capacity of 3: revision 1 goes whole, never
        // half of it, so a backlog from revision 1 is complete.
        let revs: Vec<Revision> = hub.lock().history.iter().map(|e| e.revision).collect();
        assert_eq!(revs, [2, 2]);
        assert!(hub.subscribe("", 0).is_err(), "revision 1 is gone");
        assert_eq!(hub.subscribe("", 1).expect("from 1").backlog.len(), 2);
        // A revision larger than the capacity is kept whole.
        hub.publish(vec![ev(3, "e"), ev(3, "f"), ev(3, "g"), ev(3, "h")]);
        assert_eq!(hub.lock().history.len(), 4);
    }
}
