//! The etcd backend (`[store] backend = "etcd"`), for a control plane that
//! outlives one machine.
//!
//! **Key layout.** A store key `K` (e.g. `volumes/db1`) lives at
//! `PREFIX + K` in etcd, `PREFIX` defaulting to `/ferrofab/v1/objects/`.
//! Values are the bytes the redb backend stores (the encoded object); etcd
//! keeps the create and mod revisions itself.
//!
//! **Revisions.** The store revision *is* etcd's cluster revision: a key's
//! `mod_revision`, a transaction's commit revision and a list's revision are
//! etcd's. They are strictly increasing but **not dense**: writes outside
//! the prefix (another application, a future leader key) use revisions too,
//! so a watcher must never assume the next revision is `last + 1`; the hub
//! is told where its history is complete ([`Hub::sparse`]).
//!
//! **Writes.** Every [`Txn`] is one etcd transaction whose compares are
//! `mod_revision(PREFIX + key) == rev` (0: absent) and whose success branch
//! is the ops. When a compare fails nothing is written and the failure
//! branch reads the compared keys, so the caller gets
//! [`TxnResult::CompareFailed`] with the key's actual revision, exactly as
//! from redb. The backend never retries a failed compare: the API layer
//! turns it into a conflict (ABORTED) or re-reads and retries where it
//! already does so; retrying blindly here would defeat the guard.
//!
//! **Watch.** One etcd watch on the prefix feeds an in-process [`Hub`]; the
//! cache and every API watch subscribe to the hub, as with redb. The etcd
//! watch starts at the revision of the initial list, so the hub's history is
//! complete from there (and before it, as far as the replayed history
//! goes). If etcd compacted past the revision the watch must
//! resume from (after a partition or a slow restart), etcd cancels it with
//! a `compact_revision`; the backend then lists the prefix again and
//! publishes the difference to what it had seen as one synthetic batch at
//! the list's revision (puts for new or changed keys, deletes for vanished
//! ones), then watches on from there. Followers stay correct without
//! knowing that a compaction happened.
//!
//! **History across restarts.** At open, what etcd still keeps of the
//! prefix's history (up to `history` events) is replayed into the hub, so
//! a watcher resumes across a controller restart; see [`load_history`].
//!
//! **Acknowledgement.** A committed transaction is acknowledged once its
//! revision went through the hub, so that (as with redb) a watch opened
//! after the acknowledgement sees the write.
//!
//! The [`Store`] trait is synchronous for reads; the etcd client runs on a
//! runtime of its own and `get`/`list` block the calling thread for one
//! round trip (bounded by `timeout_ms`).

use std::collections::HashMap;
use std::future::Future;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, PoisonError};
use std::time::Duration;

use etcd_client::{
    Certificate, Client, Compare as EtcdCompare, CompareOp, ConnectOptions, EventType, GetOptions,
    Identity, TlsOptions, Txn as EtcdTxn, TxnOp, TxnOpResponse, WatchOptions,
};
use prometheus_client::metrics::counter::Counter;
use serde::Deserialize;
use tokio::runtime::Runtime;
use tokio::sync::{oneshot, watch};
use tracing::{info, warn};

use super::watch::{Hub, WatchStream};

use super::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, TxnFuture, TxnResult,
};

mod cluster;
mod config;
mod elect;
mod follow;
use config::connect_options;
pub use config::EtcdConfig;
use follow::Follower;

/// Re-lists after a compaction, process-wide, for `/metrics`
/// (`ferrofab_controller_store_etcd_relists_total`).
pub static RELISTS: LazyLock<Counter> = LazyLock::new(Counter::default);
/// etcd requests that failed or timed out, process-wide, for `/metrics`
/// (`ferrofab_controller_store_etcd_errors_total`).
pub static ERRORS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Watches re-opened because a committed write did not come through the
/// watch in time (`ferrofab_controller_store_etcd_watch_stalls_total`):
/// the member serving the watch was cut off.
pub static WATCH_STALLS: LazyLock<Counter> = LazyLock::new(Counter::default);

/// Singleton writes refused because this replica's leadership was gone
/// (`ferrofab_controller_store_etcd_not_leader_total`).
pub static NOT_LEADER: LazyLock<Counter> = LazyLock::new(Counter::default);

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    ERRORS.inc();
    StoreError::Io(format!("etcd: {e}"))
}

/// The cause [`StoreError::Unavailable`] names for every way etcd fails to
/// answer: without a quorum a member either refuses (`etcdserver: no
/// leader`, `request timed out`) or holds the request past our timeout,
/// and an unreachable member looks the same from here.
const NO_QUORUM: &str = "etcd has no quorum or cannot be reached";

/// An etcd client error of a request: the cluster not answering becomes
/// [`StoreError::Unavailable`] (the API's UNAVAILABLE, so clients retry,
/// perhaps on another replica), anything else an I/O error naming etcd.
/// The client's own request timeout (`store.etcd.timeout_ms`, a member
/// that holds the request without a quorum) arrives as CANCELLED
/// "Timeout expired"; nothing else cancels our requests.
fn etcd_err(e: etcd_client::Error) -> StoreError {
    let cause = match &e {
        etcd_client::Error::GRpcStatus(s)
            if matches!(
                s.code(),
                tonic::Code::Unavailable | tonic::Code::DeadlineExceeded | tonic::Code::Cancelled
            ) =>
        {
            s.message().to_string()
        }
        etcd_client::Error::TransportError(_) | etcd_client::Error::IoError(_) => e.to_string(),
        _ => return io(e),
    };
    ERRORS.inc();
    StoreError::Unavailable(format!("{NO_QUORUM} ({cause})"))
}

/// What the follower has seen: every key under the prefix at `revision`.
/// Needed for the values of deletes and for the diff after a compaction.
struct Mirror {
    keys: HashMap<String, KeyValue>,
    revision: Revision,
}

/// See the module docs.
pub struct EtcdStore {
    runtime: Option<Runtime>,
    client: Client,
    prefix: String,
    hub: Arc<Hub>,
    published: watch::Receiver<Revision>,
    timeout: Duration,
    page: usize,
    relists: Arc<AtomicU64>,
    lease_ttl: Duration,
    endpoints: Vec<String>,
    connect: ConnectOptions,
    term: Arc<elect::Term>,
    /// Poked when a committed write is not seen by the watch within the
    /// timeout: the follower then re-opens its watch ([`Follower`]).
    stalled: Arc<tokio::sync::Notify>,
}

impl Drop for EtcdStore {
    /// The runtime may be dropped from async code (tests, shutdown): let
    /// its tasks end in the background instead of blocking.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

impl EtcdStore {
    /// Connects, lists the prefix and starts following it.
    pub fn open(cfg: &EtcdConfig) -> Result<Self, StoreError> {
        cfg.validate().map_err(|reason| StoreError::Open {
            path: cfg.endpoints.join(","),
            reason,
        })?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("etcd-client")
            .enable_all()
            .build()
            .map_err(io)?;
        // Until `Self` owns it, an early return must not drop the runtime
        // the blocking way (it may be called from async code).
        let runtime = BackgroundDrop(Some(runtime));
        let timeout = Duration::from_millis(cfg.timeout_ms);
        let opts = connect_options(cfg, timeout)?;
        let connect = opts.clone();
        let endpoints = cfg.endpoints.clone();
        let client = block_on(runtime.get()?, timeout, async move {
            Client::connect(endpoints, Some(opts)).await.map_err(io)
        })
        .map_err(|e| StoreError::Open {
            path: cfg.endpoints.join(","),
            reason: e.to_string(),
        })?;
        let prefix = cfg.prefix.clone();
        let page = cfg.list_page_size;
        let (kvs, revision) = {
            let c = client.clone();
            let p = prefix.clone();
            block_on(runtime.get()?, timeout, async move {
                list_paged(c, &p, "", page).await
            })
            .map_err(|e| StoreError::Open {
                path: cfg.endpoints.join(","),
                reason: format!("{e} (is etcd up and reachable at store.etcd.endpoints?)"),
            })?
        };
        info!(endpoints = %cfg.endpoints.join(","), prefix = %prefix, revision, keys = kvs.len(), "etcd store opened");
        // The resume history survives restarts as far as etcd still has
        // it; failing to load it only makes older resumes re-list.
        let (history, floor) = {
            let c = client.clone();
            let p = prefix.clone();
            let cap = cfg.history;
            match block_on(runtime.get()?, timeout, async move {
                load_history(c, &p, revision, cap).await
            }) {
                Ok(h) => h,
                Err(e) => {
                    warn!(error = %e, "cannot load the watch history from etcd; resumes from before this start will list again");
                    (Vec::new(), revision)
                }
            }
        };
        info!(
            events = history.len(),
            complete_after = floor,
            "watch history loaded from etcd"
        );
        let hub = Arc::new(Hub::sparse(history, revision, cfg.history, floor));
        let (published_tx, published) = watch::channel(revision);
        let relists = Arc::new(AtomicU64::new(0));
        let stalled = Arc::new(tokio::sync::Notify::new());
        let follower = Follower {
            client: client.clone(),
            prefix: prefix.clone(),
            page,
            hub: hub.clone(),
            published: published_tx,
            mirror: Mutex::new(Mirror {
                keys: kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect(),
                revision,
            }),
            relists: relists.clone(),
            stalled: stalled.clone(),
        };
        runtime.get()?.spawn(follower.run());
        Ok(Self {
            runtime: runtime.take(),
            client,
            prefix,
            hub,
            published,
            timeout,
            page,
            relists,
            lease_ttl: Duration::from_secs(cfg.lease_ttl_seconds),
            endpoints: cfg.endpoints.clone(),
            connect,
            term: Arc::default(),
            stalled,
        })
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }

    /// How many times the follower re-listed after a compaction.
    pub fn relists(&self) -> u64 {
        self.relists.load(Ordering::SeqCst)
    }

    fn block<T: Send + 'static>(
        &self,
        fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
    ) -> Result<T, StoreError> {
        let rt = self.runtime.as_ref().ok_or(StoreError::Closed)?;
        block_on(rt, self.timeout, fut)
    }
}

/// A request etcd did not answer within `store.etcd.timeout_ms`: what a
/// cluster without quorum does with writes.
fn timed_out(msg: String) -> StoreError {
    ERRORS.inc();
    StoreError::Unavailable(format!("{NO_QUORUM}: {msg}"))
}

/// A runtime that shuts down in the background when dropped.
struct BackgroundDrop(Option<Runtime>);

impl BackgroundDrop {
    fn get(&self) -> Result<&Runtime, StoreError> {
        self.0.as_ref().ok_or(StoreError::Closed)
    }

    fn take(mut self) -> Option<Runtime> {
        self.0.take()
    }
}

impl Drop for BackgroundDrop {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// Runs `fut` on the client runtime and waits for it from this thread
/// (which may be a worker of another runtime: it only blocks, it never
/// enters the client runtime).
fn block_on<T: Send + 'static>(
    rt: &Runtime,
    timeout: Duration,
    fut: impl Future<Output = Result<T, StoreError>> + Send + 'static,
) -> Result<T, StoreError> {
    let (tx, rx) = std::sync::mpsc::sync_channel(1);
    rt.spawn(async move {
        let r = match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(timed_out(format!(
                "etcd did not answer within {} ms (store.etcd.timeout_ms)",
                timeout.as_millis()
            ))),
        };
        let _ = tx.send(r);
    });
    rx.recv().map_err(|_| StoreError::Closed)?
}

fn rev(r: i64) -> Revision {
    u64::try_from(r).unwrap_or(0)
}

/// The end of the range holding every key that starts with `prefix`.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last + 1);
            return end;
        }
    }
    vec![0]
}

fn to_kv(kv: &etcd_client::KeyValue, prefix: &str) -> Option<KeyValue> {
    let key = std::str::from_utf8(kv.key()).ok()?.strip_prefix(prefix)?;
    Some(KeyValue {
        key: key.to_string(),
        value: kv.value().to_vec(),
        create_revision: rev(kv.create_revision()),
        mod_revision: rev(kv.mod_revision()),
    })
}

/// Every key under `prefix + sub` at one revision, `page` keys per request.
async fn list_paged(
    client: Client,
    prefix: &str,
    sub: &str,
    page: usize,
) -> Result<(Vec<KeyValue>, Revision), StoreError> {
    let mut kv = client.kv_client();
    let full = format!("{prefix}{sub}");
    let end = prefix_end(full.as_bytes());
    let mut from = full.clone().into_bytes();
    let mut at: i64 = 0;
    let mut out = Vec::new();
    loop {
        let mut opts = GetOptions::new()
            .with_range(end.clone())
            .with_limit(i64::try_from(page).unwrap_or(i64::MAX));
        if at > 0 {
            opts = opts.with_revision(at);
        }
        let resp = kv.get(from.clone(), Some(opts)).await.map_err(etcd_err)?;
        if at == 0 {
            at = resp.header().map_or(0, |h| h.revision());
        }
        let kvs = resp.kvs();
        for k in kvs {
            if let Some(kv) = to_kv(k, prefix) {
                out.push(kv);
            }
        }
        match kvs.last() {
            Some(last) if resp.more() => {
                from = last.key().to_vec();
                from.push(0);
            }
            _ => break,
        }
    }
    Ok((out, rev(at)))
}

impl Store for EtcdStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let full = format!("{prefix}{key}");
        self.block(async move {
            let resp = client.kv_client().get(full, None).await.map_err(etcd_err)?;
            Ok(resp.kvs().first().and_then(|k| to_kv(k, &prefix)))
        })
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let client = self.client.clone();
        let base = self.prefix.clone();
        let sub = prefix.to_string();
        let page = self.page;
        self.block(async move { list_paged(client, &base, &sub, page).await })
    }

    fn txn(&self, txn: Txn) -> TxnFuture {
        let (tx, rx) = oneshot::channel();
        let Some(rt) = &self.runtime else {
            let _ = tx.send(Err(StoreError::Closed));
            return rx;
        };
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let mut published = self.published.clone();
        let stalled = self.stalled.clone();
        let timeout = self.timeout;
        rt.spawn(async move {
            let r = match tokio::time::timeout(timeout, commit(client, &prefix, txn)).await {
                Ok(Ok((r, wrote))) => {
                    if let (TxnResult::Committed { revision }, true) = (&r, wrote) {
                        let want = *revision;
                        let seen = published.wait_for(|p| *p >= want);
                        if tokio::time::timeout(timeout, seen).await.is_err() {
                            warn!(revision = want, "committed write not yet seen by the etcd watch; re-opening the watch");
                            stalled.notify_one();
                            let seen = published.wait_for(|p| *p >= want);
                            if tokio::time::timeout(timeout, seen).await.is_err() {
                                warn!(revision = want, "committed write still not seen by the etcd watch");
                            }
                        }
                    }
                    Ok(r)
                }
                Ok(Err(e)) => Err(e),
                Err(_) => Err(timed_out(format!(
                    "etcd transaction not answered within {} ms (store.etcd.timeout_ms); it may or may not have committed",
                    timeout.as_millis()
                ))),
            };
            let _ = tx.send(r);
        });
        rx
    }

    fn revision(&self) -> Revision {
        self.hub.revision()
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.hub.subscribe(prefix, from)
    }

    fn campaign(&self, replica: crate::leader::Replica) -> crate::leader::Leadership {
        let (tx, rx) = watch::channel(crate::leader::Role::Follower { leader: None });
        let name = replica.name.clone();
        if let Some(rt) = &self.runtime {
            let (leader_key, replicas) = elect::control_keys(&self.prefix);
            rt.spawn(
                elect::Campaign {
                    term: self.term.clone(),
                    client: self.client.clone(),
                    leader_key,
                    replicas,
                    replica,
                    ttl: self.lease_ttl,
                    tx,
                }
                .run(),
            );
        }
        crate::leader::Leadership::from_channel(rx, name)
    }

    /// Ends the campaign and revokes the term's lease: the leader key and
    /// the replica's registration go at once.
    fn resign(&self) {
        self.term.resigned.store(true, Ordering::SeqCst);
        let lease = self.term.lease.load(Ordering::SeqCst);
        if lease == 0 {
            return;
        }
        let client = self.client.clone();
        let r = self.block(async move {
            client.lease_client().revoke(lease).await.map_err(io)?;
            Ok(())
        });
        match r {
            Ok(()) => info!("leader lease revoked: another replica may take over now"),
            Err(e) => warn!(error = %e, "cannot revoke the leader lease; it expires by itself"),
        }
        crate::leader::IS_LEADER.set(0);
    }

    fn cluster(&self) -> Result<crate::leader::ClusterView, StoreError> {
        let client = self.client.clone();
        let prefix = self.prefix.clone();
        let endpoints = self.endpoints.clone();
        let connect = self.connect.clone();
        let timeout = self.timeout;
        self.block(async move { cluster::view(client, &prefix, endpoints, connect, timeout).await })
    }
}

/// The key the history load writes to know when etcd has replayed
/// everything: `PREFIX` without its last `/`, plus `-history-mark`. It
/// sorts just before `PREFIX`, so one watch range covers it and the
/// objects, and it is outside the objects themselves. (etcd 3.4 answers a
/// progress request at once, even from a watch still replaying history, so
/// progress reports cannot mark the end of the replay.)
fn history_mark(prefix: &str) -> String {
    format!("{}-history-mark", prefix.trim_end_matches('/'))
}

/// Replays what etcd still keeps of the prefix's history up to `upto`
/// (the revision of the initial list), keeping at most about `capacity`
/// events by whole revisions. Returns the events and the revision above
/// which they are complete. A delete whose previous value etcd no longer
/// has restarts the history after it (a delete event carries the value).
async fn load_history(
    client: Client,
    prefix: &str,
    upto: Revision,
    capacity: usize,
) -> Result<(Vec<Event>, Revision), StoreError> {
    let mark = history_mark(prefix);
    let mut start: i64 = 1;
    'watch: loop {
        let opts = WatchOptions::new()
            .with_range(prefix_end(prefix.as_bytes()))
            .with_start_revision(start)
            .with_prev_key();
        let mut stream = client
            .watch_client()
            .watch(mark.clone(), Some(opts))
            .await
            .map_err(io)?;
        let mut marked = false;
        let mut events: std::collections::VecDeque<Event> = std::collections::VecDeque::new();
        let mut floor = rev(start).saturating_sub(1);
        loop {
            let Some(resp) = stream.message().await.map_err(io)? else {
                return Err(io("the history watch ended"));
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    start = resp.compact_revision();
                    continue 'watch;
                }
                return Err(io(format!(
                    "history watch canceled: {}",
                    resp.cancel_reason()
                )));
            }
            if resp.created() && !marked {
                // Written once the watch exists: its event ends the replay.
                client
                    .kv_client()
                    .put(mark.clone(), upto.to_string(), None)
                    .await
                    .map_err(io)?;
                marked = true;
            }
            for e in resp.events() {
                let Some(raw) = e.kv() else { continue };
                if raw.key() == mark.as_bytes() && rev(raw.mod_revision()) > upto {
                    break 'watch Ok((events.into(), floor));
                }
                let Some(kv) = to_kv(raw, prefix) else {
                    continue;
                };
                let revision = kv.mod_revision;
                if revision > upto {
                    continue; // the follower delivers these
                }
                let ev = match e.event_type() {
                    EventType::Put => Event {
                        kind: EventKind::Put,
                        kv,
                        revision,
                        batch_end: false,
                    },
                    EventType::Delete => match e.prev_kv().and_then(|k| to_kv(k, prefix)) {
                        Some(prev) => Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                mod_revision: revision,
                                ..prev
                            },
                            revision,
                            batch_end: false,
                        },
                        None => {
                            events.clear();
                            floor = revision;
                            continue;
                        }
                    },
                };
                events.push_back(ev);
                while events.len() > capacity {
                    let Some(oldest) = events.front().map(|e| e.revision) else {
                        break;
                    };
                    if oldest == revision {
                        break;
                    }
                    while events.front().is_some_and(|e| e.revision == oldest) {
                        events.pop_front();
                    }
                    floor = oldest;
                }
            }
        }
    }
}

/// One etcd transaction for `txn` (see the module docs).
/// Also says whether the transaction changed a key (and so will be seen by
/// the watch).
async fn commit(client: Client, prefix: &str, txn: Txn) -> Result<(TxnResult, bool), StoreError> {
    let full = |k: &str| format!("{prefix}{k}");
    let compares: Vec<EtcdCompare> = txn
        .compares
        .iter()
        .map(|Compare::ModRevision { key, equals }| {
            EtcdCompare::mod_revision(
                full(key),
                CompareOp::Equal,
                i64::try_from(*equals).unwrap_or(i64::MAX),
            )
        })
        .collect();
    let reads: Vec<TxnOp> = txn
        .compares
        .iter()
        .map(|Compare::ModRevision { key, .. }| TxnOp::get(full(key), None))
        .collect();
    let ops: Vec<TxnOp> = txn
        .ops
        .iter()
        .map(|op| match op {
            Op::Put { key, value } => TxnOp::put(full(key), value.clone(), None),
            Op::Delete { key } => TxnOp::delete(full(key), None),
        })
        .collect();
    let mut compares = compares;
    let mut reads = reads;
    if let Some(g) = &txn.leader {
        compares.push(EtcdCompare::create_revision(
            g.key.clone(),
            CompareOp::Equal,
            i64::try_from(g.create_revision).unwrap_or(i64::MAX),
        ));
        reads.push(TxnOp::get(g.key.clone(), None));
    }
    let t = EtcdTxn::new().when(compares).and_then(ops).or_else(reads);
    let resp = client.kv_client().txn(t).await.map_err(etcd_err)?;
    if resp.succeeded() {
        let revision = rev(resp.header().map_or(0, |h| h.revision()));
        let wrote = resp.op_responses().iter().any(|r| match r {
            TxnOpResponse::Put(_) => true,
            TxnOpResponse::Delete(d) => d.deleted() > 0,
            _ => false,
        });
        return Ok((TxnResult::Committed { revision }, wrote));
    }
    for (c, r) in txn.compares.iter().zip(resp.op_responses()) {
        let Compare::ModRevision { key, equals } = c;
        let actual = match r {
            TxnOpResponse::Get(g) => g.kvs().first().map_or(0, |k| rev(k.mod_revision())),
            _ => 0,
        };
        if actual != *equals {
            return Ok((
                TxnResult::CompareFailed {
                    key: key.clone(),
                    actual,
                },
                false,
            ));
        }
    }
    if let Some(g) = &txn.leader {
        let held = resp
            .op_responses()
            .get(txn.compares.len())
            .and_then(|r| match r {
                TxnOpResponse::Get(g) => g.kvs().first().map(|k| rev(k.create_revision())),
                _ => None,
            });
        if held != Some(g.create_revision) {
            NOT_LEADER.inc();
            return Err(StoreError::NotLeader { key: g.key.clone() });
        }
    }
    // The keys changed back between the compare and the reads: report the
    // first one as conflicting, the caller re-reads anyway.
    let key = txn
        .compares
        .first()
        .map(|Compare::ModRevision { key, .. }| key.clone())
        .unwrap_or_default();
    Ok((TxnResult::CompareFailed { key, actual: 0 }, false))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(endpoints: &[&str]) -> EtcdConfig {
        EtcdConfig {
            endpoints: endpoints.iter().map(|e| e.to_string()).collect(),
            ..EtcdConfig::default()
        }
    }

    #[test]
    fn config_errors_name_the_key() {
        let err = |c: EtcdConfig| c.validate().expect_err("invalid");
        assert!(err(cfg(&[])).contains("store.etcd.endpoints is empty"));
        assert!(err(cfg(&["http://10.0.0.1:2379"])).contains("non-loopback"));
        assert!(err(cfg(&["https://10.0.0.1:2379"])).contains("store.etcd.ca_file"));
        assert!(err(cfg(&["tcp://127.0.0.1:2379"])).contains("https:// or http://"));
        let mut c = cfg(&["http://127.0.0.1:2379"]);
        assert!(c.validate().is_ok(), "plain http to loopback is allowed");
        c.cert_file = Some("/c".into());
        assert!(err(c.clone()).contains("go together"));
        c.cert_file = None;
        c.prefix = "ferrofab".into();
        assert!(err(c.clone()).contains("store.etcd.prefix"));
        c.prefix = "/p/".into();
        c.lease_ttl_seconds = 1;
        assert!(err(c.clone()).contains("store.etcd.lease_ttl_seconds 1"));
        c.lease_ttl_seconds = 10;
        c.replica_name = Some("a/b".into());
        assert!(err(c.clone()).contains("store.etcd.replica_name"));
        c.replica_name = Some("ctl1".into());
        assert!(c.validate().is_ok());
        c.timeout_ms = 0;
        assert!(err(c).contains("timeout_ms"));
    }

    #[test]
    fn etcd_not_answering_is_unavailable_and_names_the_cause() {
        let no_leader = etcd_err(etcd_client::Error::GRpcStatus(tonic::Status::unavailable(
            "etcdserver: no leader",
        )));
        assert_eq!(
            no_leader.to_string(),
            "store unavailable: etcd has no quorum or cannot be reached (etcdserver: no leader); retry"
        );
        let held = etcd_err(etcd_client::Error::GRpcStatus(tonic::Status::cancelled(
            "Timeout expired",
        )));
        assert!(matches!(held, StoreError::Unavailable(_)), "{held:?}");
        let slow = timed_out("etcd did not answer within 2000 ms (store.etcd.timeout_ms)".into());
        assert!(matches!(slow, StoreError::Unavailable(_)), "{slow:?}");
        assert!(slow.to_string().contains("no quorum"), "{slow}");
        let refused = etcd_err(etcd_client::Error::GRpcStatus(
            tonic::Status::invalid_argument("etcdserver: too many operations in txn request"),
        ));
        assert!(matches!(refused, StoreError::Io(_)), "{refused:?}");
    }

    #[test]
    fn prefix_end_covers_exactly_the_prefix() {
        assert_eq!(prefix_end(b"/a/"), b"/a0".to_vec());
        assert_eq!(prefix_end(&[b'a', 0xff]), b"b".to_vec());
        assert_eq!(prefix_end(&[0xff]), vec![0]);
    }

    #[test]
    fn config_section_parses_with_defaults() {
        let c: crate::store::StoreConfig =
            toml::from_str("backend = \"etcd\"\n[etcd]\nendpoints = [\"http://127.0.0.1:1\"]\n")
                .expect("parse");
        assert_eq!(c.backend, crate::store::Backend::Etcd);
        assert_eq!(c.etcd.prefix, "/ferrofab/v1/objects/");
        assert_eq!((c.etcd.timeout_ms, c.etcd.list_page_size), (5_000, 1_000));
        assert!(toml::from_str::<crate::store::StoreConfig>("backend = \"zk\"").is_err());
    }
}
