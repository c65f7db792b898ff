//! Events: a bounded history of notable transitions of objects (created,
//! placed, exported, attached, grown, expired, refused, node not ready),
//! for `ferrofab events`, `describe` and `status`.
//!
//! They live in the store under `events/KIND/NAME/REASON`, not in a
//! replica's memory: the history then survives a restart, every
//! controller replica sharing the store (etcd) answers the same list, and
//! a watch is the store's own watch on the prefix. One key per object and
//! reason folds repeats into one entry whose `count` goes up, so a flapping
//! node costs one entry, not thousands. The number of entries is bounded by
//! `[events] max_events`; past it the least recently updated entries are
//! deleted and counted in `ferrofab_controller_events_dropped_total`.
//!
//! Recording never fails the operation that caused it: a store error is
//! logged and the event is lost (counted as dropped).
//!
//! Both the gRPC adapter and any other front end (HTTP) call [`list`] and
//! [`watch`]; neither knows the key layout.

use ferrofab_proto::v1::{Kind, ObjectEvent, Severity};
use prost::Message as _;
use serde::Deserialize;
use tokio::sync::mpsc;

use super::Shared;
use crate::error::ApiError;
use crate::store::{EventKind, KeyValue, Revision, Txn, TxnResult};

/// Store prefix of every event.
pub const PREFIX: &str = "events/";

/// Longest message kept, in bytes; longer ones are cut at a character
/// boundary. A named constant: messages come from conditions and errors
/// that are already bounded, this only keeps one entry small.
const MAX_MESSAGE_BYTES: usize = 1024;

/// Highest `max_events` accepted: each new entry lists the whole prefix to
/// enforce the bound, so the bound must stay cheap to list.
pub const MAX_EVENTS_CEILING: usize = 100_000;

/// Compare-and-swap retries of one record before it is given up (another
/// replica or a burst of repeats kept changing the same entry).
const RECORD_RETRIES: usize = 4;

/// `[events]` in the controller's configuration.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsConfig {
    /// Most event entries kept (one per object and reason); the least
    /// recently updated are dropped first.
    #[serde(default = "default_max_events")]
    pub max_events: usize,
}

fn default_max_events() -> usize {
    1000
}

impl Default for EventsConfig {
    fn default() -> Self {
        Self {
            max_events: default_max_events(),
        }
    }
}

impl EventsConfig {
    /// The configuration error, if any, naming the key.
    pub fn check(&self) -> Result<(), String> {
        if self.max_events == 0 || self.max_events > MAX_EVENTS_CEILING {
            return Err(format!(
                "events.max_events must be between 1 and {MAX_EVENTS_CEILING} (got {})",
                self.max_events
            ));
        }
        Ok(())
    }
}

/// What happened to one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    pub kind: Kind,
    pub name: String,
    pub reason: String,
    pub message: String,
    pub severity: Severity,
}

impl Record {
    pub fn info(kind: Kind, name: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            kind,
            name: name.to_owned(),
            reason: reason.to_owned(),
            message: message.into(),
            severity: Severity::Info,
        }
    }

    pub fn warning(kind: Kind, name: &str, reason: &str, message: impl Into<String>) -> Self {
        Self {
            severity: Severity::Warning,
            ..Self::info(kind, name, reason, message)
        }
    }
}

fn key(r: &Record) -> String {
    format!("{PREFIX}{}/{}/{}", r.kind.noun(), r.name, r.reason)
}

/// The prefix a filter lists: all events, one kind's, or one object's.
fn filter_prefix(kind: Kind, name: &str) -> Result<String, ApiError> {
    match (kind, name.is_empty()) {
        (Kind::Unspecified, true) => Ok(PREFIX.to_owned()),
        (Kind::Unspecified, false) => Err(ApiError::invalid(
            "kind",
            "is required when a name is given",
        )),
        (k, true) => Ok(format!("{PREFIX}{}/", k.noun())),
        (k, false) => Ok(format!("{PREFIX}{}/{name}/", k.noun())),
    }
}

fn cut(mut s: String) -> String {
    if s.len() > MAX_MESSAGE_BYTES {
        let mut end = MAX_MESSAGE_BYTES;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
    }
    s
}

fn decode(kv: &KeyValue) -> Option<ObjectEvent> {
    let mut e = ObjectEvent::decode(kv.value.as_slice()).ok()?;
    e.revision = kv.mod_revision;
    Some(e)
}

/// Records `r`, folding it into the entry of the same object and reason
/// if there is one. Logs instead of failing: see the module docs.
pub async fn record(s: &Shared, r: Record) {
    tracing::debug!(kind = r.kind.noun(), name = %r.name, reason = %r.reason, "event");
    match try_record(s, &r).await {
        Ok(true) => prune(s).await,
        Ok(false) => {}
        Err(e) => {
            s.metrics.events_dropped.inc();
            tracing::warn!(kind = r.kind.noun(), name = %r.name, reason = %r.reason, error = %e, "event not recorded");
        }
    }
}

/// Records a refused create or update of `kind`/`name` when the refusal
/// is about the cluster (quota, capacity, a precondition) rather than
/// the request (invalid, not found, denied): those are the refusals an
/// operator looks for later. Names that are not valid object names are
/// not recorded (they would not make a key).
pub async fn refused<T>(s: &Shared, kind: Kind, name: &str, result: &Result<T, ApiError>) {
    let Err(e) = result else { return };
    let cluster = matches!(e, ApiError::Exhausted(_) | ApiError::FailedPrecondition(_));
    if cluster && crate::resource::validate_name("metadata.name", name).is_ok() {
        let reason = ferrofab_types::EventReason::Refused.as_str();
        record(s, Record::warning(kind, name, reason, e.to_string())).await;
    }
}

/// Writes the entry; true when it is a new one (the bound may be passed).
async fn try_record(s: &Shared, r: &Record) -> Result<bool, ApiError> {
    let k = key(r);
    for _ in 0..RECORD_RETRIES {
        let now = s.clock.now_ts();
        let current = s.store.get(&k)?;
        let rev = current.as_ref().map_or(0, |kv| kv.mod_revision);
        let previous = current.as_ref().and_then(decode);
        let ev = ObjectEvent {
            kind: r.kind as i32,
            name: r.name.clone(),
            reason: r.reason.clone(),
            message: cut(r.message.clone()),
            severity: r.severity as i32,
            first_time: previous.as_ref().and_then(|p| p.first_time).or(Some(now)),
            last_time: Some(now),
            count: previous.as_ref().map_or(1, |p| p.count.saturating_add(1)),
            revision: 0,
        };
        let txn = Txn::new()
            .when(k.clone(), rev)
            .put(k.clone(), ev.encode_to_vec());
        let result = s
            .store
            .txn(txn)
            .await
            .map_err(|_| ApiError::Internal("store writer stopped".into()))??;
        if let TxnResult::Committed { .. } = result {
            s.metrics.events_recorded.inc();
            return Ok(previous.is_none());
        }
    }
    Err(ApiError::Internal(format!(
        "event entry {k} kept changing; gave up after {RECORD_RETRIES} tries"
    )))
}

/// Deletes the least recently updated entries past `max_events`.
async fn prune(s: &Shared) {
    let max = s.events.max_events;
    let Ok((kvs, _)) = s.store.list(PREFIX) else {
        return;
    };
    if kvs.len() <= max {
        return;
    }
    let mut dated: Vec<(i64, Revision, String)> = kvs
        .iter()
        .map(|kv| {
            let at = decode(kv)
                .and_then(|e| e.last_time)
                .map_or(i64::MIN, |t| t.seconds);
            (at, kv.mod_revision, kv.key.clone())
        })
        .collect();
    dated.sort();
    let excess = kvs.len() - max;
    let mut txn = Txn::new();
    for (_, _, k) in dated.into_iter().take(excess) {
        txn = txn.delete(k);
    }
    match s.store.txn(txn).await {
        Ok(Ok(_)) => {
            s.metrics.events_dropped.inc_by(excess as u64);
        }
        _ => tracing::warn!("could not drop old events past events.max_events"),
    }
}

/// Events of one kind or object (or all), oldest first, at most `limit`
/// of the most recent (0: all), and the revision they were read at.
pub fn list(
    s: &Shared,
    kind: Kind,
    name: &str,
    limit: u32,
) -> Result<(Vec<ObjectEvent>, Revision), ApiError> {
    let prefix = filter_prefix(kind, name)?;
    let (kvs, revision) = s.store.list(&prefix)?;
    let mut events: Vec<ObjectEvent> = kvs.iter().filter_map(decode).collect();
    sort(&mut events);
    let limit = limit as usize;
    if limit > 0 && events.len() > limit {
        events.drain(..events.len() - limit);
    }
    Ok((events, revision))
}

/// Oldest first by last time, then by revision.
pub fn sort(events: &mut [ObjectEvent]) {
    events.sort_by_key(|e| (e.last_time.map_or(i64::MIN, |t| t.seconds), e.revision));
}

/// Streams every event written after `from` (0: now) under the filter,
/// until the client goes away or the controller stops. The caller holds
/// the identity's watch permit for as long as the receiver lives.
pub fn watch(
    s: &std::sync::Arc<Shared>,
    kind: Kind,
    name: &str,
    from: Revision,
) -> Result<mpsc::Receiver<Result<ObjectEvent, ApiError>>, ApiError> {
    let prefix = filter_prefix(kind, name)?;
    let from = if from == 0 { s.store.revision() } else { from };
    let mut stream = s.store.watch(&prefix, from)?;
    let (tx, rx) = mpsc::channel(64);
    let shared = s.clone();
    tokio::spawn(async move {
        let backlog = std::mem::take(&mut stream.backlog);
        for ev in backlog {
            if !forward(&ev, &tx).await {
                return;
            }
        }
        let mut stopping = shared.stopping.clone();
        let mut last = from;
        while let Some(ev) =
            crate::store::watch::next_live(&mut stream.live, &tx, &mut stopping).await
        {
            last = ev.revision;
            if !forward(&ev, &tx).await {
                return;
            }
        }
        if stream.lagged.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tx
                .send(Err(ApiError::Exhausted(format!(
                    "event watch fell behind; resume with from_revision={last}"
                ))))
                .await;
        }
    });
    Ok(rx)
}

async fn forward(
    ev: &crate::store::Event,
    tx: &mpsc::Sender<Result<ObjectEvent, ApiError>>,
) -> bool {
    if ev.kind != EventKind::Put {
        return true; // pruned entries are not news
    }
    match decode(&ev.kv) {
        Some(e) => tx.send(Ok(e)).await.is_ok(),
        None => true,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_and_bounds() {
        assert_eq!(filter_prefix(Kind::Unspecified, "").unwrap(), "events/");
        assert_eq!(filter_prefix(Kind::Volume, "").unwrap(), "events/volume/");
        assert_eq!(
            filter_prefix(Kind::Volume, "a").unwrap(),
            "events/volume/a/"
        );
        assert!(filter_prefix(Kind::Unspecified, "a").is_err());
        assert!(EventsConfig { max_events: 0 }.check().is_err());
        assert!(EventsConfig::default().check().is_ok());
        let long = "é".repeat(MAX_MESSAGE_BYTES);
        assert!(cut(long).len() <= MAX_MESSAGE_BYTES);
    }
}
