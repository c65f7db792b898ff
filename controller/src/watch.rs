//! The watch hub: fans committed events out to subscribers in revision
//! order. It keeps a bounded in-memory history so that a watcher can resume
//! from a recent revision (for example after a reconnect) without a relist.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::mpsc;

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
    subscribers: Vec<Subscriber>,
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
        Self {
            inner: Mutex::new(Inner {
                history: h,
                capacity,
                revision,
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
        for ev in events {
            let ev = Arc::new(ev);
            inner.revision = inner.revision.max(ev.revision);
            inner.history.push_back(ev.clone());
            if inner.history.len() > inner.capacity {
                inner.history.pop_front();
            }
            inner.subscribers.retain(|s| deliver(s, &ev));
        }
    }

    /// Subscribes to events under `prefix` with revision > `from`.
    pub fn subscribe(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        let mut inner = self.lock();
        let oldest_kept = inner.history.front().map(|e| e.revision);
        if from < inner.revision {
            // The backlog must be contiguous: every revision after `from`.
            let ok = matches!(oldest_kept, Some(o) if o <= from + 1);
            if !ok {
                return Err(StoreError::Compacted {
                    requested: from,
                    oldest: oldest_kept.map_or(inner.revision, |o| o.saturating_sub(1)),
                });
            }
        }
        let backlog: Vec<Arc<Event>> = inner
            .history
            .iter()
            .filter(|e| e.revision > from && e.kv.key.starts_with(prefix))
            .cloned()
            .collect();
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
    fn resume_from_compacted_revision_is_refused() {
        let hub = Hub::new(vec![ev(5, "a"), ev(6, "a")], 6, 2);
        assert!(matches!(
            hub.subscribe("", 2),
            Err(StoreError::Compacted { requested: 2, .. })
        ));
        assert!(hub.subscribe("", 4).is_ok());
        assert!(hub.subscribe("", 6).is_ok());
    }
}
