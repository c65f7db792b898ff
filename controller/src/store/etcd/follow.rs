//! The etcd follower: one watch on the prefix, feeding the in-process hub
//! in revision order; after a compaction it lists again and publishes the
//! difference, so watchers see every change once.

use super::*;

/// Follows the prefix and feeds the hub.
pub(super) struct Follower {
    pub(super) client: Client,
    pub(super) prefix: String,
    pub(super) page: usize,
    pub(super) hub: Arc<Hub>,
    pub(super) published: watch::Sender<Revision>,
    pub(super) mirror: Mutex<Mirror>,
    pub(super) relists: Arc<AtomicU64>,
    /// See [`EtcdStore::stalled`]: a watch served by a member that was
    /// cut off (link down, blackholed) stays open and silent, so its
    /// silence is only noticed by a write that does not come through.
    pub(super) stalled: Arc<tokio::sync::Notify>,
}

/// Pause before re-opening a broken etcd watch; doubled while the watch
/// keeps breaking at once (etcd without a quorum refuses every watch with
/// "no leader"), up to [`REWATCH_BACKOFF_MAX`].
const REWATCH_BACKOFF: Duration = Duration::from_millis(200);
/// The longest pause between two attempts to re-open the watch: how late,
/// at most, a replica follows again once etcd has its quorum back.
const REWATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

enum WatchEnd {
    /// The stream broke (etcd unreachable, member restarted).
    Broken(String),
    /// etcd no longer has the revisions the watch needed.
    Compacted(Revision),
}

impl Follower {
    fn mirror(&self) -> std::sync::MutexGuard<'_, Mirror> {
        self.mirror.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) async fn run(self) {
        let mut pause = REWATCH_BACKOFF;
        loop {
            let from = self.mirror().revision;
            let opened = tokio::time::Instant::now();
            match self.follow(from).await {
                WatchEnd::Broken(e) => {
                    if opened.elapsed() > REWATCH_BACKOFF_MAX {
                        pause = REWATCH_BACKOFF;
                    }
                    warn!(error = %e, from, retry_in_ms = u64::try_from(pause.as_millis()).unwrap_or(u64::MAX), "etcd watch broke; re-opening");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(REWATCH_BACKOFF_MAX);
                }
                WatchEnd::Compacted(at) => {
                    warn!(
                        from,
                        compacted = at,
                        "etcd compacted past the watch; listing again"
                    );
                    while let Err(e) = self.relist().await {
                        warn!(error = %e, "re-list after compaction failed; retrying");
                        tokio::time::sleep(REWATCH_BACKOFF).await;
                    }
                }
            }
        }
    }

    /// Watches from `from + 1` until the stream ends.
    async fn follow(&self, from: Revision) -> WatchEnd {
        let opts = WatchOptions::new()
            .with_range(prefix_end(self.prefix.as_bytes()))
            .with_start_revision(i64::try_from(from + 1).unwrap_or(i64::MAX));
        let mut stream = match self
            .client
            .watch_client()
            .watch(self.prefix.clone(), Some(opts))
            .await
        {
            Ok(s) => s,
            Err(e) => return WatchEnd::Broken(e.to_string()),
        };
        loop {
            let msg = tokio::select! {
                m = stream.message() => m,
                () = self.stalled.notified() => {
                    WATCH_STALLS.inc();
                    return WatchEnd::Broken(
                        "a committed write did not come through the watch within store.etcd.timeout_ms (its member may be cut off)".into(),
                    );
                }
            };
            let resp = match msg {
                Ok(Some(r)) => r,
                Ok(None) => return WatchEnd::Broken("stream ended".into()),
                Err(e) => return WatchEnd::Broken(e.to_string()),
            };
            if resp.canceled() {
                if resp.compact_revision() > 0 {
                    return WatchEnd::Compacted(rev(resp.compact_revision()));
                }
                return WatchEnd::Broken(format!("canceled: {}", resp.cancel_reason()));
            }
            self.apply(resp.events());
        }
    }

    /// Publishes one watch response: etcd never splits a revision across
    /// responses, so each revision's events form one batch.
    fn apply(&self, events: &[etcd_client::Event]) {
        let mut batch: Vec<Event> = Vec::new();
        let mut last = None;
        {
            let mut m = self.mirror();
            for e in events {
                let Some(kv) = e.kv() else { continue };
                let Some(kv) = to_kv(kv, &self.prefix) else {
                    continue;
                };
                let revision = kv.mod_revision;
                if revision <= m.revision {
                    continue; // already seen (re-opened watch overlap)
                }
                if last.is_some_and(|l| l != revision) {
                    self.hub.publish(std::mem::take(&mut batch));
                }
                last = Some(revision);
                let ev = match e.event_type() {
                    EventType::Put => {
                        m.keys.insert(kv.key.clone(), kv.clone());
                        Event {
                            kind: EventKind::Put,
                            kv,
                            revision,
                            batch_end: false,
                        }
                    }
                    EventType::Delete => {
                        let prev = m.keys.remove(&kv.key);
                        let Some(prev) = prev else { continue };
                        Event {
                            kind: EventKind::Delete,
                            kv: KeyValue {
                                mod_revision: revision,
                                ..prev
                            },
                            revision,
                            batch_end: false,
                        }
                    }
                };
                batch.push(ev);
            }
            if let Some(l) = last {
                m.revision = l;
            }
        }
        if !batch.is_empty() {
            self.hub.publish(batch);
        }
        if let Some(l) = last {
            self.published.send_replace(l);
        }
    }

    /// Lists the prefix and publishes the difference to the mirror as one
    /// batch at the list's revision.
    async fn relist(&self) -> Result<(), StoreError> {
        let (kvs, at) = list_paged(self.client.clone(), &self.prefix, "", self.page).await?;
        let mut batch = Vec::new();
        {
            let mut m = self.mirror();
            let mut fresh: HashMap<String, KeyValue> =
                kvs.into_iter().map(|kv| (kv.key.clone(), kv)).collect();
            for (key, old) in &m.keys {
                if !fresh.contains_key(key) {
                    batch.push(Event {
                        kind: EventKind::Delete,
                        kv: KeyValue {
                            mod_revision: at,
                            ..old.clone()
                        },
                        revision: at,
                        batch_end: false,
                    });
                }
            }
            for (key, kv) in &fresh {
                if m.keys.get(key) != Some(kv) {
                    batch.push(Event {
                        kind: EventKind::Put,
                        kv: kv.clone(),
                        revision: at,
                        batch_end: false,
                    });
                }
            }
            std::mem::swap(&mut m.keys, &mut fresh);
            m.revision = at.max(m.revision);
        }
        self.relists.fetch_add(1, Ordering::SeqCst);
        RELISTS.inc();
        info!(
            revision = at,
            changes = batch.len(),
            "re-listed after compaction"
        );
        if !batch.is_empty() {
            self.hub.publish(batch);
        }
        self.published.send_replace(at);
        Ok(())
    }
}
