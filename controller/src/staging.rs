//! A private, in-memory copy of the store that Apply runs a whole plan
//! against, so that a layout is all or nothing.
//!
//! Every step of a layout goes through the typed RPCs' own operations, and
//! those read the cache and write the store one object at a time. Running
//! them against a fork (a snapshot of the store plus its own cache) lets
//! each step see what the earlier steps did, exactly as they would be
//! stored, without anything becoming visible. The fork then yields one
//! transaction: the final value of every key the plan touched, guarded by
//! the revision each key had in the snapshot. It commits atomically or,
//! when something changed meanwhile, not at all.
//!
//! A dry run is the same fork, discarded: it runs the very same checks.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::{mpsc, oneshot};

use crate::store::watch::WatchStream;
use crate::store::{
    Compare, Event, EventKind, KeyValue, Op, Revision, SharedStore, Store, StoreError, Txn,
    TxnFuture, TxnResult,
};

/// Events the fork's cache may have queued. Every write of a step waits
/// until the fork's cache has applied it (read-your-writes), so at most
/// one transaction's events (one or two) are ever queued; the bound is
/// far above that.
const FORK_EVENT_BUFFER: usize = 1024;

struct Inner {
    kvs: BTreeMap<String, KeyValue>,
    revision: Revision,
    /// Keys written by the plan, with their mod_revision in the snapshot
    /// (0: absent).
    touched: BTreeMap<String, Revision>,
    follower: Option<mpsc::Sender<Arc<Event>>>,
}

/// See the module docs.
pub struct Fork {
    inner: Mutex<Inner>,
}

impl Fork {
    /// Copies every key of `store`.
    pub fn snapshot(store: &SharedStore) -> Result<Arc<Self>, StoreError> {
        let (kvs, revision) = store.list("")?;
        let revision = kvs
            .iter()
            .map(|kv| kv.mod_revision)
            .max()
            .unwrap_or(0)
            .max(revision);
        Ok(Arc::new(Self {
            inner: Mutex::new(Inner {
                kvs: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
                revision,
                touched: BTreeMap::new(),
                follower: None,
            }),
        }))
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The plan's net effect as one guarded transaction (empty when the
    /// plan changed nothing).
    pub fn net_txn(&self) -> Txn {
        let inner = self.lock();
        let mut txn = Txn::new();
        for (key, base) in &inner.touched {
            match inner.kvs.get(key) {
                Some(kv) => {
                    txn = txn
                        .when(key.clone(), *base)
                        .put(key.clone(), kv.value.clone())
                }
                None if *base != 0 => txn = txn.when(key.clone(), *base).delete(key.clone()),
                // Created and deleted again by the plan: nothing to write.
                None => {}
            }
        }
        txn
    }

    /// Ends the fork's cache follower (it would otherwise wait forever).
    pub fn close(&self) {
        self.lock().follower = None;
    }

    fn commit(&self, txn: Txn) -> TxnResult {
        let mut inner = self.lock();
        for c in &txn.compares {
            let Compare::ModRevision { key, equals } = c;
            let actual = inner.kvs.get(key).map_or(0, |kv| kv.mod_revision);
            if actual != *equals {
                return TxnResult::CompareFailed {
                    key: key.clone(),
                    actual,
                };
            }
        }
        inner.revision += 1;
        let revision = inner.revision;
        let mut events = Vec::with_capacity(txn.ops.len());
        for op in txn.ops {
            let key = match &op {
                Op::Put { key, .. } | Op::Delete { key } => key.clone(),
            };
            if !inner.touched.contains_key(&key) {
                let base = inner.kvs.get(&key).map_or(0, |kv| kv.mod_revision);
                inner.touched.insert(key.clone(), base);
            }
            match op {
                Op::Put { key, value } => {
                    let create_revision = inner
                        .kvs
                        .get(&key)
                        .map_or(revision, |kv| kv.create_revision);
                    let kv = KeyValue {
                        key: key.clone(),
                        value,
                        create_revision,
                        mod_revision: revision,
                    };
                    inner.kvs.insert(key, kv.clone());
                    events.push(Event {
                        kind: EventKind::Put,
                        kv,
                        revision,
                        batch_end: false,
                    });
                }
                Op::Delete { key } => {
                    if let Some(kv) = inner.kvs.remove(&key) {
                        events.push(Event {
                            kind: EventKind::Delete,
                            kv,
                            revision,
                            batch_end: false,
                        });
                    }
                }
            }
        }
        if let Some(last) = events.last_mut() {
            last.batch_end = true;
        }
        if let Some(tx) = &inner.follower {
            for ev in events {
                // Cannot be full, see FORK_EVENT_BUFFER; closed only once
                // the rehearsal is over.
                let _ = tx.try_send(Arc::new(ev));
            }
        }
        TxnResult::Committed { revision }
    }
}

impl Store for Fork {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        Ok(self.lock().kvs.get(key).cloned())
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let inner = self.lock();
        let kvs = inner
            .kvs
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .map(|(_, kv)| kv.clone())
            .collect();
        Ok((kvs, inner.revision))
    }

    fn txn(&self, txn: Txn) -> TxnFuture {
        let (tx, rx) = oneshot::channel();
        let _ = tx.send(Ok(self.commit(txn)));
        rx
    }

    fn revision(&self) -> Revision {
        self.lock().revision
    }

    /// Only the fork's own cache watches it, from the snapshot on.
    fn watch(&self, _prefix: &str, _from: Revision) -> Result<WatchStream, StoreError> {
        let (tx, live) = mpsc::channel(FORK_EVENT_BUFFER);
        self.lock().follower = Some(tx);
        Ok(WatchStream {
            backlog: Vec::new(),
            live,
            lagged: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kv(key: &str, rev: Revision) -> KeyValue {
        KeyValue {
            key: key.into(),
            value: vec![1],
            create_revision: rev,
            mod_revision: rev,
        }
    }

    fn fork(kvs: Vec<KeyValue>) -> Fork {
        Fork {
            inner: Mutex::new(Inner {
                revision: 10,
                kvs: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
                touched: BTreeMap::new(),
                follower: None,
            }),
        }
    }

    #[test]
    fn net_transaction_is_guarded_by_the_snapshot_revisions() {
        let f = fork(vec![kv("a", 3), kv("b", 5)]);
        let put = |k: &str| Txn::new().put(k, vec![2]);
        assert!(matches!(f.commit(put("a")), TxnResult::Committed { .. }));
        assert!(matches!(f.commit(put("a")), TxnResult::Committed { .. }));
        f.commit(Txn::new().delete("b"));
        f.commit(put("c"));
        f.commit(put("d"));
        f.commit(Txn::new().delete("d"));
        let t = f.net_txn();
        assert_eq!(
            t.compares,
            vec![
                Compare::ModRevision {
                    key: "a".into(),
                    equals: 3
                },
                Compare::ModRevision {
                    key: "b".into(),
                    equals: 5
                },
                Compare::ModRevision {
                    key: "c".into(),
                    equals: 0
                },
            ]
        );
        assert_eq!(
            t.ops,
            vec![
                Op::Put {
                    key: "a".into(),
                    value: vec![2]
                },
                Op::Delete { key: "b".into() },
                Op::Put {
                    key: "c".into(),
                    value: vec![2]
                },
            ]
        );
    }

    #[test]
    fn compares_hold_inside_the_fork() {
        let f = fork(vec![kv("a", 3)]);
        assert!(matches!(
            f.commit(Txn::new().when("a", 2).put("a", vec![])),
            TxnResult::CompareFailed { actual: 3, .. }
        ));
        assert!(f.net_txn().ops.is_empty());
    }
}
