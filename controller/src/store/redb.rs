//! The default, embedded backend: one redb file. Each acknowledged write is
//! part of a fsynced (`Durability::Immediate`) redb transaction. A single
//! writer thread batches the transactions queued while the previous fsync
//! ran (group commit), so durable throughput scales with concurrent clients
//! instead of being capped at one fsync per write.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc as std_mpsc, Arc};
use std::thread;

use redb::{Database, Durability, ReadableTable, TableDefinition};
use tokio::sync::oneshot;
use tracing::{debug, error, info};

use super::watch::{Hub, WatchStream};
use super::{
    Compare, Event, EventKind, KeyValue, Op, Revision, Store, StoreError, Txn, TxnFuture, TxnResult,
};

const KV: TableDefinition<&str, &[u8]> = TableDefinition::new("kv");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const EVENTS: TableDefinition<u64, &[u8]> = TableDefinition::new("events");

/// On-disk layout version written by this code. Bump on incompatible
/// changes; older controllers then refuse to open the file. Version 2
/// keeps all the events of one revision in one `events` record (version 1
/// kept one event per revision, so a multi-key transaction lost all but
/// its last event from the resume history); opening a version-1 store
/// upgrades it, its records stay readable.
pub const FORMAT_VERSION: u64 = 2;
/// First byte of a version-2 `events` record (version-1 records start
/// with the event kind, 1 or 2).
const EVENTS_RECORD: u8 = 3;
const KEY_FORMAT: &str = "format_version";
const KEY_REVISION: &str = "revision";
/// How many events are kept for watch resume, on disk and in memory.
const HISTORY: u64 = 50_000;
/// Most transactions folded into one fsync.
const MAX_BATCH: usize = 1024;

type Request = (Txn, oneshot::Sender<Result<TxnResult, StoreError>>);

/// See the module docs.
pub struct RedbStore {
    db: Arc<Database>,
    path: PathBuf,
    hub: Arc<Hub>,
    revision: Arc<AtomicU64>,
    tx: Option<std_mpsc::Sender<Request>>,
    writer: Option<thread::JoinHandle<()>>,
}

impl Drop for RedbStore {
    /// Lets the writer finish queued transactions and release the file lock,
    /// so the same process can reopen the store (tests, restarts).
    fn drop(&mut self) {
        self.tx.take();
        if let Some(w) = self.writer.take() {
            let _ = w.join();
        }
    }
}

impl RedbStore {
    /// Opens (creating if absent) the store file and starts its writer.
    pub fn open(path: &Path) -> Result<Self, StoreError> {
        let shown = path.display().to_string();
        private_file(path, &shown)?;
        let db = Database::create(path).map_err(|e| classify_open_error(&shown, e))?;
        let revision = init_meta(&db, &shown)?;
        let history = load_history(&db, &shown)?;
        info!(path = %shown, revision, history = history.len(), "store opened");
        let hub = Arc::new(Hub::new(history, revision, HISTORY as usize));
        let db = Arc::new(db);
        let rev = Arc::new(AtomicU64::new(revision));
        let (tx, rx) = std_mpsc::channel();
        let writer = Writer {
            db: db.clone(),
            hub: hub.clone(),
            revision: rev.clone(),
            commits: 0,
        };
        let handle = thread::Builder::new()
            .name("store-writer".into())
            .spawn(move || writer.run(rx))
            .map_err(|e| StoreError::Io(e.to_string()))?;
        Ok(Self {
            db,
            path: path.to_path_buf(),
            hub,
            revision: rev,
            tx: Some(tx),
            writer: Some(handle),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    pub fn hub(&self) -> Arc<Hub> {
        self.hub.clone()
    }
}

/// The records under `prefix` of the store file at `path`, read without
/// starting a store (no writer, nothing created, the mode left alone):
/// for `--check-config`. `Ok(None)` when the file does not exist; an
/// error when it cannot be opened (a running controller holds its lock).
pub fn peek(path: &Path, prefix: &str) -> Result<Option<Vec<KeyValue>>, StoreError> {
    if !path.exists() {
        return Ok(None);
    }
    let shown = path.display().to_string();
    let db = Database::open(path).map_err(|e| classify_open_error(&shown, e))?;
    let rtx = db.begin_read().map_err(io)?;
    let table = match rtx.open_table(KV) {
        Ok(t) => t,
        Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Some(Vec::new())),
        Err(e) => return Err(io(e)),
    };
    records_under(&table, prefix).map(Some)
}

/// The decoded records of `table` whose keys start with `prefix`.
fn records_under(
    table: &redb::ReadOnlyTable<&str, &[u8]>,
    prefix: &str,
) -> Result<Vec<KeyValue>, StoreError> {
    let mut out = Vec::new();
    for item in table.range(prefix..).map_err(io)? {
        let (k, v) = item.map_err(io)?;
        let key = k.value();
        if !key.starts_with(prefix) {
            break;
        }
        if let Some(kv) = decode_value(key, v.value()) {
            out.push(kv);
        }
    }
    Ok(out)
}

/// Mode of the store file: it holds every object, bootstrap token hashes
/// included, so only the controller's user may read it.
pub const STORE_MODE: u32 = 0o600;

/// Creates the store file 0600 before redb opens it (redb would create it
/// with the umask's mode, typically 0644), and narrows the mode of a file
/// left readable to others by an older controller.
fn private_file(path: &Path, shown: &str) -> Result<(), StoreError> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let fail = |what: &str, e: std::io::Error| StoreError::Open {
        path: shown.into(),
        reason: format!("{what}: {e}"),
    };
    let file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(STORE_MODE)
        .open(path)
        .map_err(|e| fail("cannot create it with mode 0600", e))?;
    let mode = file
        .metadata()
        .map_err(|e| fail("cannot read its mode", e))?
        .permissions()
        .mode()
        & 0o777;
    if mode != STORE_MODE {
        file.set_permissions(std::fs::Permissions::from_mode(STORE_MODE))
            .map_err(|e| fail(&format!("cannot narrow its mode {mode:o} to 0600"), e))?;
        info!(path = %shown, old_mode = format!("{mode:o}"), "store file mode narrowed to 0600");
    }
    Ok(())
}

fn classify_open_error(path: &str, e: redb::DatabaseError) -> StoreError {
    match e {
        redb::DatabaseError::Storage(redb::StorageError::Corrupted(reason)) => {
            StoreError::Corrupt {
                path: path.into(),
                reason,
            }
        }
        redb::DatabaseError::UpgradeRequired(v) => StoreError::NewerFormat {
            path: path.into(),
            found: u64::from(v),
            supported: FORMAT_VERSION,
        },
        redb::DatabaseError::DatabaseAlreadyOpen => StoreError::Open {
            path: path.into(),
            reason: "it is locked by another process (is another controller running?)".into(),
        },
        other => StoreError::Open {
            path: path.into(),
            reason: format!("{other} (is it a ferrofab store file?)"),
        },
    }
}

fn io<E: std::fmt::Display>(e: E) -> StoreError {
    StoreError::Io(e.to_string())
}

/// Checks the format version (writing it into a new store) and returns the
/// current revision.
fn init_meta(db: &Database, path: &str) -> Result<Revision, StoreError> {
    let wtx = db.begin_write().map_err(io)?;
    let revision = {
        let mut meta = wtx.open_table(META).map_err(io)?;
        let found = meta.get(KEY_FORMAT).map_err(io)?.map(|v| v.value());
        match found {
            Some(v) if v > FORMAT_VERSION => {
                return Err(StoreError::NewerFormat {
                    path: path.into(),
                    found: v,
                    supported: FORMAT_VERSION,
                })
            }
            Some(v) if v == FORMAT_VERSION => {}
            Some(_) | None => {
                meta.insert(KEY_FORMAT, FORMAT_VERSION).map_err(io)?;
            }
        }
        let rev = meta.get(KEY_REVISION).map_err(io)?.map(|v| v.value());
        rev.unwrap_or(0)
    };
    wtx.open_table(KV).map_err(io)?;
    wtx.open_table(EVENTS).map_err(io)?;
    wtx.commit().map_err(io)?;
    Ok(revision)
}

fn load_history(db: &Database, path: &str) -> Result<Vec<Event>, StoreError> {
    let rtx = db.begin_read().map_err(io)?;
    let table = rtx.open_table(EVENTS).map_err(io)?;
    let mut out = Vec::new();
    for item in table.iter().map_err(io)? {
        let (_, v) = item.map_err(io)?;
        let events = decode_record(v.value()).ok_or_else(|| StoreError::Corrupt {
            path: path.into(),
            reason: "undecodable event record".into(),
        })?;
        out.extend(events);
    }
    Ok(out)
}

/// One `events` record: every event of one revision, in order.
fn encode_record(events: &[Event]) -> Vec<u8> {
    let mut v = vec![EVENTS_RECORD];
    v.extend_from_slice(&(events.len() as u32).to_le_bytes());
    for ev in events {
        let e = encode_event(ev);
        v.extend_from_slice(&(e.len() as u32).to_le_bytes());
        v.extend_from_slice(&e);
    }
    v
}

/// Reads a version-2 record, or a version-1 record of a single event.
fn decode_record(raw: &[u8]) -> Option<Vec<Event>> {
    if raw.first() != Some(&EVENTS_RECORD) {
        return decode_event(raw).map(|e| vec![e]);
    }
    let count = u32::from_le_bytes(raw.get(1..5)?.try_into().ok()?) as usize;
    let mut at = 5;
    // Bounded by the record: every event takes at least its length word.
    let mut out = Vec::with_capacity(count.min(raw.len() / 4));
    for _ in 0..count {
        let len = u32::from_le_bytes(raw.get(at..at + 4)?.try_into().ok()?) as usize;
        at += 4;
        out.push(decode_event(raw.get(at..at.checked_add(len)?)?)?);
        at += len;
    }
    (at == raw.len()).then_some(out)
}

fn encode_value(create: Revision, modr: Revision, data: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(16 + data.len());
    v.extend_from_slice(&create.to_le_bytes());
    v.extend_from_slice(&modr.to_le_bytes());
    v.extend_from_slice(data);
    v
}

fn decode_value(key: &str, raw: &[u8]) -> Option<KeyValue> {
    let create = u64::from_le_bytes(raw.get(0..8)?.try_into().ok()?);
    let modr = u64::from_le_bytes(raw.get(8..16)?.try_into().ok()?);
    Some(KeyValue {
        key: key.to_string(),
        value: raw.get(16..)?.to_vec(),
        create_revision: create,
        mod_revision: modr,
    })
}

fn encode_event(ev: &Event) -> Vec<u8> {
    let kind = match ev.kind {
        EventKind::Put => 1u8,
        EventKind::Delete => 2u8,
    };
    let key = ev.kv.key.as_bytes();
    let mut v = Vec::with_capacity(29 + key.len() + ev.kv.value.len());
    v.push(kind);
    v.extend_from_slice(&ev.revision.to_le_bytes());
    v.extend_from_slice(&(key.len() as u32).to_le_bytes());
    v.extend_from_slice(key);
    v.extend_from_slice(&encode_value(
        ev.kv.create_revision,
        ev.kv.mod_revision,
        &ev.kv.value,
    ));
    v
}

fn decode_event(raw: &[u8]) -> Option<Event> {
    let kind = match raw.first()? {
        1 => EventKind::Put,
        2 => EventKind::Delete,
        _ => return None,
    };
    let revision = u64::from_le_bytes(raw.get(1..9)?.try_into().ok()?);
    let klen = u32::from_le_bytes(raw.get(9..13)?.try_into().ok()?) as usize;
    let key = std::str::from_utf8(raw.get(13..13 + klen)?).ok()?;
    let kv = decode_value(key, raw.get(13 + klen..)?)?;
    Some(Event {
        kind,
        kv,
        revision,
        batch_end: false,
    })
}

impl Store for RedbStore {
    fn get(&self, key: &str) -> Result<Option<KeyValue>, StoreError> {
        let rtx = self.db.begin_read().map_err(io)?;
        let table = rtx.open_table(KV).map_err(io)?;
        let got = table.get(key).map_err(io)?;
        Ok(got.and_then(|v| decode_value(key, v.value())))
    }

    fn list(&self, prefix: &str) -> Result<(Vec<KeyValue>, Revision), StoreError> {
        let rtx = self.db.begin_read().map_err(io)?;
        let meta = rtx.open_table(META).map_err(io)?;
        let rev = meta.get(KEY_REVISION).map_err(io)?.map_or(0, |v| v.value());
        let table = rtx.open_table(KV).map_err(io)?;
        Ok((records_under(&table, prefix)?, rev))
    }

    fn txn(&self, txn: Txn) -> TxnFuture {
        let (tx, rx) = oneshot::channel();
        let Some(sender) = &self.tx else {
            let _ = tx.send(Err(StoreError::Closed));
            return rx;
        };
        if let Err(std_mpsc::SendError((_, tx))) = sender.send((txn, tx)) {
            let _ = tx.send(Err(StoreError::Closed));
        }
        rx
    }

    fn revision(&self) -> Revision {
        self.revision.load(Ordering::SeqCst)
    }

    fn watch(&self, prefix: &str, from: Revision) -> Result<WatchStream, StoreError> {
        self.hub.subscribe(prefix, from)
    }
}

/// The single writer: owns revision assignment so commits are totally
/// ordered and published in that order.
struct Writer {
    db: Arc<Database>,
    hub: Arc<Hub>,
    revision: Arc<AtomicU64>,
    commits: u64,
}

/// One transaction's fate inside a batch, before the batch is durable.
enum Staged {
    Ok(Revision, Vec<Event>),
    Failed(TxnResult),
}

impl Writer {
    fn run(mut self, rx: std_mpsc::Receiver<Request>) {
        while let Ok(first) = rx.recv() {
            let mut batch = vec![first];
            while batch.len() < MAX_BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            self.commit_batch(batch);
        }
        debug!("store writer stopped");
    }

    fn commit_batch(&mut self, batch: Vec<Request>) {
        let (txns, replies): (Vec<Txn>, Vec<_>) = batch.into_iter().unzip();
        match self.write(&txns) {
            Ok(staged) => {
                let mut events = Vec::new();
                let mut results = Vec::with_capacity(staged.len());
                for s in staged {
                    match s {
                        Staged::Ok(rev, evs) => {
                            events.extend(evs);
                            results.push(TxnResult::Committed { revision: rev });
                        }
                        Staged::Failed(r) => results.push(r),
                    }
                }
                // Publish before acknowledging: a client that saw its write
                // acknowledged must find it in any watch opened afterwards.
                self.hub.publish(events);
                for (reply, r) in replies.into_iter().zip(results) {
                    let _ = reply.send(Ok(r));
                }
            }
            Err(e) => {
                error!(error = %e, "store commit failed");
                for reply in replies {
                    let _ = reply.send(Err(StoreError::Io(e.to_string())));
                }
            }
        }
    }

    fn write(&mut self, txns: &[Txn]) -> Result<Vec<Staged>, StoreError> {
        let mut wtx = self.db.begin_write().map_err(io)?;
        wtx.set_durability(Durability::Immediate);
        let mut rev = self.revision.load(Ordering::SeqCst);
        let start = rev;
        let mut staged = Vec::with_capacity(txns.len());
        {
            let mut kv = wtx.open_table(KV).map_err(io)?;
            let mut evt = wtx.open_table(EVENTS).map_err(io)?;
            for txn in txns {
                if let Some(failed) = check(&kv, txn)? {
                    staged.push(Staged::Failed(failed));
                    continue;
                }
                rev += 1;
                let events = apply(&mut kv, txn, rev)?;
                if !events.is_empty() {
                    evt.insert(rev, encode_record(&events).as_slice())
                        .map_err(io)?;
                }
                staged.push(Staged::Ok(rev, events));
            }
            self.commits += 1;
            if rev > HISTORY && self.commits.is_multiple_of(256) {
                evt.retain_in(..rev - HISTORY, |_, _| false).map_err(io)?;
            }
            if rev != start {
                let mut meta = wtx.open_table(META).map_err(io)?;
                meta.insert(KEY_REVISION, rev).map_err(io)?;
            }
        }
        wtx.commit().map_err(io)?;
        self.revision.store(rev, Ordering::SeqCst);
        Ok(staged)
    }
}

fn current_mod_revision(kv: &redb::Table<&str, &[u8]>, key: &str) -> Result<Revision, StoreError> {
    let got = kv.get(key).map_err(io)?;
    Ok(got
        .and_then(|v| decode_value(key, v.value()))
        .map_or(0, |kv| kv.mod_revision))
}

fn check(kv: &redb::Table<&str, &[u8]>, txn: &Txn) -> Result<Option<TxnResult>, StoreError> {
    for c in &txn.compares {
        let Compare::ModRevision { key, equals } = c;
        let actual = current_mod_revision(kv, key)?;
        if actual != *equals {
            return Ok(Some(TxnResult::CompareFailed {
                key: key.clone(),
                actual,
            }));
        }
    }
    Ok(None)
}

fn apply(
    kv: &mut redb::Table<&str, &[u8]>,
    txn: &Txn,
    rev: Revision,
) -> Result<Vec<Event>, StoreError> {
    let mut events = Vec::with_capacity(txn.ops.len());
    for op in &txn.ops {
        match op {
            Op::Put { key, value } => {
                let prev = kv
                    .get(key.as_str())
                    .map_err(io)?
                    .and_then(|v| decode_value(key, v.value()));
                let create = prev.map_or(rev, |p| p.create_revision);
                kv.insert(key.as_str(), encode_value(create, rev, value).as_slice())
                    .map_err(io)?;
                events.push(Event {
                    kind: EventKind::Put,
                    kv: KeyValue {
                        key: key.clone(),
                        value: value.clone(),
                        create_revision: create,
                        mod_revision: rev,
                    },
                    revision: rev,
                    batch_end: false,
                });
            }
            Op::Delete { key } => {
                let prev = kv
                    .remove(key.as_str())
                    .map_err(io)?
                    .and_then(|v| decode_value(key, v.value()));
                if let Some(prev) = prev {
                    events.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            mod_revision: rev,
                            ..prev
                        },
                        revision: rev,
                        batch_end: false,
                    });
                }
            }
        }
    }
    Ok(events)
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn commit(s: &RedbStore, t: Txn) -> TxnResult {
        s.txn(t).await.expect("reply").expect("commit")
    }

    #[tokio::test]
    async fn cas_and_revisions_survive_reopen() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        {
            let s = RedbStore::open(&path).expect("open");
            let r = commit(&s, Txn::new().when("a", 0).put("a", b"1".to_vec())).await;
            assert_eq!(r, TxnResult::Committed { revision: 1 });
            let r = commit(&s, Txn::new().when("a", 0).put("a", b"2".to_vec())).await;
            assert_eq!(
                r,
                TxnResult::CompareFailed {
                    key: "a".into(),
                    actual: 1
                }
            );
            let r = commit(&s, Txn::new().when("a", 1).put("a", b"3".to_vec())).await;
            assert_eq!(r, TxnResult::Committed { revision: 2 });
        }
        let s = RedbStore::open(&path).expect("reopen");
        assert_eq!(s.revision(), 2);
        let kv = s.get("a").expect("get").expect("present");
        assert_eq!(kv.value, b"3");
        assert_eq!((kv.create_revision, kv.mod_revision), (1, 2));
        let w = s.watch("", 0).expect("watch");
        assert_eq!(w.backlog.len(), 2, "history survives restart");
    }

    #[test]
    fn newer_format_is_refused() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        {
            let db = Database::create(&path).expect("create");
            let w = db.begin_write().expect("write");
            w.open_table(META)
                .expect("meta")
                .insert(KEY_FORMAT, FORMAT_VERSION + 1)
                .expect("insert");
            w.commit().expect("commit");
        }
        let err = RedbStore::open(&path).err().expect("must fail");
        assert!(matches!(err, StoreError::NewerFormat { .. }), "{err}");
        assert!(err.to_string().contains("upgrade the controller"));
    }

    #[test]
    fn garbage_file_is_refused_clearly() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("store.redb");
        std::fs::write(&path, vec![0x5a; 8192]).expect("write");
        let err = RedbStore::open(&path).err().expect("must fail");
        assert!(err.to_string().contains("store.redb"), "{err}");
    }

    fn mode(path: &Path) -> u32 {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(path).expect("stat").permissions().mode() & 0o777
    }

    #[test]
    fn store_file_is_private_new_or_existing() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("controller.redb");
        drop(RedbStore::open(&path).expect("create"));
        assert_eq!(mode(&path), 0o600, "new store file mode {:o}", mode(&path));
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).expect("chmod");
        drop(RedbStore::open(&path).expect("reopen"));
        assert_eq!(mode(&path), 0o600, "existing 0644 store file narrowed");
    }

    #[test]
    fn event_encoding_round_trips() {
        let ev = Event {
            kind: EventKind::Delete,
            kv: KeyValue {
                key: "volumes/x".into(),
                value: vec![1, 2, 3],
                create_revision: 4,
                mod_revision: 9,
            },
            revision: 9,
            batch_end: false,
        };
        assert_eq!(decode_event(&encode_event(&ev)), Some(ev));
    }

    #[test]
    fn event_records_hold_every_event_of_a_revision() {
        let ev = |key: &str, kind| Event {
            kind,
            kv: KeyValue {
                key: key.into(),
                value: vec![7],
                create_revision: 3,
                mod_revision: 9,
            },
            revision: 9,
            batch_end: false,
        };
        let events = vec![
            ev("volumes/a", EventKind::Put),
            ev("volumes/b", EventKind::Put),
            ev("pools/p", EventKind::Delete),
        ];
        assert_eq!(decode_record(&encode_record(&events)), Some(events.clone()));
        // A version-1 record (one event) still reads.
        assert_eq!(
            decode_record(&encode_event(&events[0])),
            Some(vec![events[0].clone()])
        );
        // A cut or padded record is refused, not misread.
        let raw = encode_record(&events);
        assert_eq!(decode_record(&raw[..raw.len() - 1]), None);
        assert_eq!(decode_record(&[raw.as_slice(), &[0]].concat()), None);
    }

    /// A transaction that writes several keys (Apply writes a layout in
    /// one) is resumable whole after a restart.
    #[tokio::test]
    async fn a_multi_key_transaction_survives_a_restart_in_the_history() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("s.redb");
        {
            let store = RedbStore::open(&path).expect("open");
            let txn = Txn::new()
                .put("volumes/a".to_string(), vec![1])
                .put("volumes/b".to_string(), vec![2])
                .put("pools/p".to_string(), vec![3]);
            store.txn(txn).await.expect("writer").expect("txn");
        }
        let store = RedbStore::open(&path).expect("reopen");
        let keys: Vec<String> = store
            .watch("", 0)
            .expect("watch")
            .backlog
            .iter()
            .map(|e| e.kv.key.clone())
            .collect();
        assert_eq!(keys, ["volumes/a", "volumes/b", "pools/p"]);
    }
}
