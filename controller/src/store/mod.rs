//! The persistence boundary. Shaped like etcd's KV API (monotonic revisions,
//! compare-and-swap transactions, prefix listing, watch from a revision) so
//! that an etcd backend can replace the embedded one without touching the
//! API layer.

pub mod etcd;
pub mod redb;
pub mod watch;

use std::sync::Arc;

use tokio::sync::oneshot;

use self::watch::WatchStream;

/// A store-wide, strictly increasing commit counter; every committed write
/// gets the next one. Revision 0 means "before anything was written".
pub type Revision = u64;

/// A stored key with the revisions etcd would report for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyValue {
    pub key: String,
    pub value: Vec<u8>,
    pub create_revision: Revision,
    pub mod_revision: Revision,
}

/// A guard evaluated atomically before a transaction's operations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Compare {
    /// The key's mod_revision equals this one; 0 means the key is absent.
    ModRevision { key: String, equals: Revision },
}

/// A mutation inside a transaction.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

/// The leadership a singleton's write is conditional on: the leader key
/// (an absolute etcd key, outside the object prefix) still exists with
/// the create revision this replica's campaign gave it. A new leader's key
/// has another create revision, so a paused or partitioned old leader's
/// write is refused ([`StoreError::NotLeader`]) instead of acting twice.
/// Single-process backends have no other writer and ignore it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderGuard {
    pub key: String,
    pub create_revision: Revision,
}

/// All-or-nothing: if every compare holds, every op is applied under one
/// new revision; otherwise nothing is written.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Txn {
    pub compares: Vec<Compare>,
    pub ops: Vec<Op>,
    /// Set on writes of the leader's singletons (see [`crate::leader`]).
    pub leader: Option<LeaderGuard>,
}

impl Txn {
    pub fn new() -> Self {
        Self::default()
    }

    /// Requires `key` to be at `rev` (0: absent).
    pub fn when(mut self, key: impl Into<String>, rev: Revision) -> Self {
        self.compares.push(Compare::ModRevision {
            key: key.into(),
            equals: rev,
        });
        self
    }

    pub fn put(mut self, key: impl Into<String>, value: Vec<u8>) -> Self {
        self.ops.push(Op::Put {
            key: key.into(),
            value,
        });
        self
    }

    pub fn delete(mut self, key: impl Into<String>) -> Self {
        self.ops.push(Op::Delete { key: key.into() });
        self
    }

    /// Makes the transaction conditional on `guard`'s leadership.
    pub fn fenced(mut self, guard: Option<LeaderGuard>) -> Self {
        self.leader = guard;
        self
    }
}

/// The outcome of a transaction that reached the backend.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TxnResult {
    /// Durable (fsynced) at this revision.
    Committed { revision: Revision },
    /// A compare did not hold: `key` is at `actual` (0: absent).
    CompareFailed { key: String, actual: Revision },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EventKind {
    Put,
    Delete,
}

/// A committed change. For deletes, `kv.value` is the last value the key had
/// so that watchers can tell what disappeared.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Event {
    pub kind: EventKind,
    pub kv: KeyValue,
    pub revision: Revision,
    /// True on the last event of one committed transaction as delivered
    /// live. A transaction that writes several keys (Apply writes a whole
    /// layout in one) yields one event per key with the same revision; a
    /// follower must not count the revision as applied before the last of
    /// them, or a reader waiting for its own write could miss part of it.
    pub batch_end: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("cannot open store {path}: {reason}")]
    Open { path: String, reason: String },
    #[error(
        "store {path} has format version {found}, newer than the {supported} this controller supports; upgrade the controller"
    )]
    NewerFormat {
        path: String,
        found: u64,
        supported: u64,
    },
    #[error("store {path} is corrupt: {reason}")]
    Corrupt { path: String, reason: String },
    #[error("store I/O failed: {0}")]
    Io(String),
    #[error("store is shut down")]
    Closed,
    /// The store cannot serve a write or a fresh read now (etcd has no
    /// quorum or no member answers): a condition of the cluster, not of
    /// the request, so clients are told to retry (gRPC UNAVAILABLE).
    #[error("store unavailable: {0}; retry")]
    Unavailable(String),
    #[error(
        "this controller is no longer the leader (leader key {key} is gone or belongs to another replica); the write was not made"
    )]
    NotLeader { key: String },
    #[error(
        "revision {requested} is no longer kept (oldest resumable revision is {oldest}); list again and watch from the list's revision"
    )]
    Compacted {
        requested: Revision,
        oldest: Revision,
    },
}

/// A handle resolving once the transaction is durable or refused.
pub type TxnFuture = oneshot::Receiver<Result<TxnResult, StoreError>>;

/// The etcd-shaped store. Implementations must commit transactions in
/// revision order and publish their events to watchers in that same order.
pub trait Store: Send + Sync + 'static {
    /// Reads one key.
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError>;
    /// Every key under `prefix`, with the revision the read was made at.
    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError>;
    /// Queues a transaction; it is acknowledged only once durable.
    fn txn(&self, txn: Txn) -> TxnFuture;
    /// The latest committed revision.
    fn revision(&self) -> Revision;
    /// Every event under `prefix` after `from`, then live ones.
    fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError>;
    /// Starts campaigning for leadership of the singletons (see
    /// [`crate::leader`]). A single-process backend is always the leader.
    fn campaign(&self, _replica: crate::leader::Replica) -> crate::leader::Leadership {
        crate::leader::Leadership::always()
    }
    /// Gives the leadership up at a graceful stop, so another replica
    /// takes over at once instead of after the lease TTL. Blocks for one
    /// round trip at most.
    fn resign(&self) {}
    /// The replicas registered with the store and its health, for
    /// `ferrofab status`; a single-process backend has none to show.
    fn cluster(&self) -> Result<crate::leader::ClusterView, StoreError> {
        Ok(crate::leader::ClusterView::default())
    }
}

/// A shared store handle.
pub type SharedStore = Arc<dyn Store>;

/// Which backend holds the objects (`[store] backend`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// The embedded redb file at `store_path` (one machine, `ferrofab dev`).
    #[default]
    Redb,
    /// An etcd cluster (`[store.etcd]`), see [`etcd`].
    Etcd,
}

impl Backend {
    /// The name GetServerInfo reports, as written in `[store] backend`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Redb => "redb",
            Backend::Etcd => "etcd",
        }
    }
}

/// `[store]` in the controller configuration.
#[derive(Debug, Clone, Default, serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoreConfig {
    #[serde(default)]
    pub backend: Backend,
    #[serde(default)]
    pub etcd: etcd::EtcdConfig,
}

impl StoreConfig {
    /// Checks the section without connecting; the message names the key.
    pub fn validate(&self) -> Result<(), String> {
        match self.backend {
            Backend::Redb => Ok(()),
            Backend::Etcd => self.etcd.validate(),
        }
    }
}

/// Opens the configured backend; `store_path` is the redb file.
pub fn open(cfg: &StoreConfig, store_path: &std::path::Path) -> Result<SharedStore, StoreError> {
    Ok(match cfg.backend {
        Backend::Redb => Arc::new(redb::RedbStore::open(store_path)?),
        Backend::Etcd => Arc::new(etcd::EtcdStore::open(&cfg.etcd)?),
    })
}
