//! The Watch RPCs of every kind: a snapshot, then every committed change,
//! each filtered by the label selector and what the caller may read.

use std::sync::Arc;

use ferrofab_proto::v1::{EventType, WatchEvent, WatchRequest};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::Status;

use super::Shared;
use crate::authz::{self, Owned, Verb};
use crate::cache::{decode, Stored};
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::read::Readable;
use crate::resource::{prefix, Selector};
use crate::store::{Event, EventKind};

/// The stream every Watch RPC returns.
pub type WatchStream = ReceiverStream<Result<WatchEvent, Status>>;

fn event_type(ev: &Event) -> EventType {
    match ev.kind {
        EventKind::Delete => EventType::Deleted,
        EventKind::Put if ev.kv.create_revision == ev.kv.mod_revision => EventType::Added,
        EventKind::Put => EventType::Modified,
    }
}

/// Streams events of kind R: a snapshot first when from_revision is 0,
/// then every committed change in revision order.
pub(crate) fn watch<R: Readable>(
    s: &Arc<Shared>,
    id: Identity,
    req: WatchRequest,
) -> Result<WatchStream, ApiError> {
    crate::ops::read::may_watch::<R>(&id)?;
    let sel = Selector::parse(&req.label_selector)?;
    let (tx, rx) = mpsc::channel(256);
    let mut snapshot = Vec::new();
    let from = if req.from_revision == 0 {
        let objs = s.cache.read();
        for o in R::map(&objs).values() {
            if sel.matches_meta(o.meta()) && authz::allowed(&id, Verb::Read, &o.owners(&objs)) {
                snapshot.push(WatchEvent {
                    r#type: EventType::Added as i32,
                    revision: o.meta().map_or(0, |m| m.resource_version),
                    object: Some(o.clone().into_event_object()),
                });
            }
        }
        snapshot.push(WatchEvent {
            r#type: EventType::Synced as i32,
            revision: objs.revision,
            object: None,
        });
        objs.revision
    } else {
        req.from_revision
    };
    let permit = s.watches.acquire(&id.to_string()).map_err(|e| {
        s.metrics.watches_refused.inc();
        ApiError::Exhausted(e.to_string())
    })?;
    let mut stream = s.store.watch(prefix(R::KIND), from)?;
    let shared = s.clone();
    shared.metrics.watchers.inc();
    tokio::spawn(async move {
        let _guard = shared.metrics.watch_guard();
        let _permit = permit;
        for ev in snapshot {
            if tx.send(Ok(ev)).await.is_err() {
                return;
            }
        }
        let backlog = std::mem::take(&mut stream.backlog);
        for ev in backlog {
            if !forward::<R>(&shared, &id, &sel, &ev, &tx).await {
                return;
            }
        }
        // The last revision delivered whole: a watcher cut off in the
        // middle of a multi-key transaction must resume before it.
        let mut last = from;
        let mut stopping = shared.stopping.clone();
        while let Some(ev) =
            crate::store::watch::next_live(&mut stream.live, &tx, &mut stopping).await
        {
            last = if ev.batch_end {
                ev.revision
            } else {
                ev.revision.saturating_sub(1)
            };
            if !forward::<R>(&shared, &id, &sel, &ev, &tx).await {
                return;
            }
        }
        if stream.lagged.load(std::sync::atomic::Ordering::SeqCst) {
            let _ = tx
                .send(Err(Status::resource_exhausted(format!(
                    "watch fell behind; resume with from_revision={last}"
                ))))
                .await;
        }
    });
    Ok(ReceiverStream::new(rx))
}

async fn forward<R: Stored + Owned>(
    s: &Shared,
    id: &Identity,
    sel: &Selector,
    ev: &Event,
    tx: &mpsc::Sender<Result<WatchEvent, Status>>,
) -> bool {
    let Some(obj) = decode::<R>(&ev.kv) else {
        return true;
    };
    let visible = sel.matches_meta(obj.meta())
        && authz::allowed(id, Verb::Read, &obj.owners(&s.cache.read()));
    if !visible {
        return true;
    }
    s.metrics.observe_watch_lag(ev.revision, s.store.revision());
    let out = WatchEvent {
        r#type: event_type(ev) as i32,
        revision: ev.revision,
        object: Some(obj.into_event_object()),
    };
    tx.send(Ok(out)).await.is_ok()
}
