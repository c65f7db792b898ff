//! AgentService: enrollment, per-node desired state streams, and status
//! reports flowing back into the objects' status.

use std::collections::HashMap;
use std::sync::Arc;

use ferrofab_proto::v1::{agent_service_server::AgentService, *};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, instrument, warn};

use super::{identity, Shared};
use crate::action::Action;
use crate::authz;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::{self, enroll};
use crate::planner;
use crate::resource::{validate_name, validate_nqn, Object};

pub struct Agent {
    pub s: Arc<Shared>,
}

fn require_node(id: &Identity, node: &str, action: Action) -> Result<(), ApiError> {
    match id {
        Identity::Node(n) if n == node => Ok(()),
        Identity::Admin if action == Action::WatchDesiredState => Ok(()),
        _ => Err(authz::deny(
            id,
            &format!("{action} for node {node:?}"),
            "a node may only watch its own desired state and report its own status",
        )),
    }
}

/// Refuses an enrolling node whose host NQN or data address belongs to
/// another node. The other node is named in the controller's log, not to
/// the enrolling machine, which holds only a token for its own node.
fn enroll_clash(s: &Shared, name: &str, spec: &NodeSpec) -> Result<(), ApiError> {
    let Some(c) = crate::validate::node_clash(&s.cache.read(), name, spec) else {
        return Ok(());
    };
    s.metrics.refused("node_identity");
    tracing::warn!(node = %name, other = %c.other, field = %c.field, value = %c.value,
        "enrollment refused: value already belongs to another node");
    let field = c.field.replacen("spec.", "node.", 1);
    Err(ApiError::FailedPrecondition(format!(
        "{field}: {} already belongs to another node (an administrator can see which in the \
         controller log); give this node its own",
        c.value
    )))
}

impl Agent {
    /// Exchanges a bootstrap token and a CSR for a certificate of the
    /// token's node. An empty `node_name` means "the token's node"; a
    /// non-empty one must be it. Everything that can refuse the request is
    /// checked before the token is consumed, so a mistake (a missing
    /// `--roles`) does not burn it.
    async fn enroll_inner(&self, r: EnrollRequest) -> Result<EnrollResponse, ApiError> {
        let s = &self.s;
        if !r.node_name.is_empty() {
            validate_name("node_name", &r.node_name)?;
        }
        let signer = s.signer.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "enrollment is disabled on this controller (pki.enrollment = false in its config)"
                    .into(),
            )
        })?;
        let spec = r.node.unwrap_or_default();
        if !spec.host_nqn.is_empty() {
            validate_nqn("node.host_nqn", &spec.host_nqn)?;
        }
        crate::resource::validate_labels("labels", &r.labels)?;
        let name = enroll::token_node(s, &r.bootstrap_token, &r.node_name)?;
        let spec = self.spec_for(&name, spec)?;
        enroll_clash(s, &name, &spec)?;
        // The same label rules the store's admission applies, checked now
        // so that they cannot refuse the Node after the token is spent.
        crate::validate::validate_labels(&r.labels, &s.limits)?;
        // Signing is pure computation and checks the CSR fully: done before
        // the token is consumed, a bad CSR leaves the token usable, and the
        // certificate is returned only if the token is.
        let cert = signer
            .sign(&r.csr_pem, &name)
            .inspect_err(|_| s.metrics.refused("enroll_csr"))?;
        enroll::consume_token(s, &r.bootstrap_token, &name).await?;
        let node = self.register(&name, spec, r.labels).await?;
        info!(node = %name, "node enrolled");
        Ok(EnrollResponse {
            certificate_pem: cert,
            ca_certificate_pem: signer.ca_pem().to_string(),
            node: Some(node),
        })
    }

    /// The spec to register: roles and data addresses the request leaves
    /// empty are kept from the existing Node (nodes are often declared in a
    /// layout before they enroll). A node that does not exist yet needs
    /// roles from the request.
    fn spec_for(&self, name: &str, mut spec: NodeSpec) -> Result<NodeSpec, ApiError> {
        let current = self
            .s
            .cache
            .read()
            .nodes
            .get(name)
            .and_then(|n| n.spec.clone());
        match current {
            Some(cur) => {
                if spec.roles.is_empty() {
                    spec.roles = cur.roles;
                }
                if spec.data_addresses.is_empty() {
                    spec.data_addresses = cur.data_addresses;
                }
            }
            None if spec.roles.is_empty() => {
                return Err(ApiError::invalid(
                    "node.roles",
                    format!(
                        "node {name:?} is not declared yet, so its roles must be given \
                         (ferrofab-agent enroll --roles storage|workstation)"
                    ),
                ));
            }
            None => {}
        }
        Ok(spec)
    }

    /// A new certificate for the caller's own node identity. Only a node
    /// whose Node object still exists may renew: deleting the Node is how
    /// an operator retires a machine, and its key must not outlive that.
    async fn renew_inner(&self, id: &Identity, r: RenewRequest) -> Result<RenewResponse, ApiError> {
        let s = &self.s;
        let Identity::Node(node) = id else {
            return Err(authz::deny(
                id,
                Action::Renew.as_str(),
                "only node certificates are renewed through the API; use `ferrofab pki issue` for others",
            ));
        };
        let signer = s.signer.as_ref().ok_or_else(|| {
            ApiError::FailedPrecondition(
                "certificate signing is disabled on this controller (pki.enrollment = false)"
                    .into(),
            )
        })?;
        if !s.cache.read().nodes.contains_key(node) {
            return Err(authz::deny(
                id,
                Action::Renew.as_str(),
                "the node no longer exists; enroll it again with a bootstrap token",
            ));
        }
        let cert = signer.sign(&r.csr_pem, node)?;
        let not_after = ferrofab_pki::CertInfo::from_pem(cert.as_bytes())
            .map(|i| ferrofab_pki::validity::unix_seconds(i.not_after))
            .map_err(|e| ApiError::Internal(e.to_string()))?;
        info!(%node, not_after = %crate::clock::rfc3339(not_after), "node certificate renewed");
        Ok(RenewResponse {
            certificate_pem: cert,
            ca_certificate_pem: signer.ca_pem().to_string(),
            not_after: Some(prost_types::Timestamp {
                seconds: not_after,
                nanos: 0,
            }),
        })
    }

    /// Creates the Node or updates its spec (re-enrollment after a rebuild).
    async fn register(
        &self,
        name: &str,
        spec: NodeSpec,
        labels: HashMap<String, String>,
    ) -> Result<Node, ApiError> {
        let s = &self.s;
        // A node write, like the typed ones (see `Shared::capacity_gate`).
        let _gate = s.capacity_gate.read().await;
        let updated = s
            .modify::<Node>(name, |n, _| {
                n.spec = Some(spec.clone());
                n.meta_mut().labels.extend(labels.clone());
                n.meta_mut().generation += 1;
                true
            })
            .await?;
        if let Some(n) = updated {
            return Ok(n);
        }
        let mut meta = super::new_meta(
            Some(&ObjectMeta {
                name: name.into(),
                labels,
                ..Default::default()
            }),
            s.clock.now_ts(),
        )?;
        meta.resource_version = 0;
        s.put(
            Node {
                metadata: Some(meta),
                spec: Some(spec),
                status: None,
            },
            0,
        )
        .await
    }
}

type DesiredStream = ReceiverStream<Result<DesiredState, Status>>;

impl Agent {
    /// The per-node rate limit, before any work: a node over its rate is
    /// still alive (its liveness is recorded), but its report is refused
    /// with the delay after which the next one will pass.
    fn admit_report(&self, id: &Identity, r: &ReportStatusRequest) -> Result<(), Status> {
        let node = &r.node;
        require_node(id, node, Action::ReportStatus)?;
        let s = &self.s;
        s.reports.heard(node, s.clock.now());
        s.reports
            .admit(node, r.desired_revision, std::time::Instant::now())
            .map_err(|t| {
                s.metrics.reports_throttled.inc();
                debug!(%node, retry_ms = t.retry_after.as_millis() as u64, "ReportStatus throttled");
                Status::from(t)
            })
    }
}

/// Snapshot size (encoded bytes) from which a stream pauses the whole
/// `nodes.desired_state_interval_ms` after sending it.
///
/// The pause exists because a snapshot costs O(its size) to compute and
/// send; scaling it with the size bounds every stream to about this many
/// bytes per interval whatever its size, while a small node (a workstation
/// with a few connections: well under 1 KiB) gets a change that follows
/// the previous one within milliseconds, not an interval later. A fixed
/// pause made a detach that closely followed an attach, and an attach
/// that closely followed a detach, wait for the rest of the interval.
pub const FULL_PAUSE_BYTES: usize = 32 * 1024;

/// The pause after sending a snapshot of `len` encoded bytes.
pub fn coalesce_pause(interval: std::time::Duration, len: usize) -> std::time::Duration {
    let fraction = (len as f64 / FULL_PAUSE_BYTES as f64).min(1.0);
    interval.mul_f64(fraction)
}

#[tonic::async_trait]
impl AgentService for Agent {
    #[instrument(skip_all, fields(node = %req.get_ref().node_name))]
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        Ok(Response::new(self.enroll_inner(req.into_inner()).await?))
    }

    type WatchDesiredStateStream = DesiredStream;

    #[instrument(skip_all, fields(node = %req.get_ref().node))]
    async fn watch_desired_state(
        &self,
        req: Request<WatchDesiredStateRequest>,
    ) -> Result<Response<DesiredStream>, Status> {
        let id = identity(&req)?;
        let WatchDesiredStateRequest {
            node,
            after_revision,
        } = req.into_inner();
        require_node(&id, &node, Action::WatchDesiredState)?;
        let s = self.s.clone();
        // Counted with the identity's watches: each stream recomputes the
        // node's desired state on every change, so one certificate must not
        // open them without bound.
        let permit = s.watches.acquire(&id.to_string()).map_err(|e| {
            s.metrics.watches_refused.inc();
            ApiError::Exhausted(e.to_string())
        })?;
        let (tx, rx) = mpsc::channel(16);
        let mut changes = s.cache.subscribe();
        let mut rotations = crate::keys::subscribe(&s);
        // Secrets go only to the node itself, never to an admin watching.
        let with_keys = matches!(&id, Identity::Node(_));
        let mut stopping = s.stopping.clone();
        tokio::spawn(async move {
            let _g = s.metrics.agent_guard();
            let _permit = permit;
            info!(%node, after_revision, "agent connected");
            resume_point(&s, &node, after_revision).await;
            let mut last: Option<DesiredState> = None;
            let mut computed_at = 0;
            while !*stopping.borrow() {
                // Recompute only when a change may have touched this node:
                // most writes concern other nodes.
                let mut ds = {
                    let objs = s.cache.read();
                    objs.index.node_changed_since(&node, computed_at).then(|| {
                        computed_at = objs.revision;
                        planner::desired_state(&objs, &node, &s.defaults)
                    })
                };
                if let (Some(d), true) = (ds.as_mut(), with_keys) {
                    if let Err(e) = crate::keys::fill(&s, &node, d).await {
                        // Without its keys the node would drop authentication:
                        // send nothing and let the next change retry.
                        warn!(%node, error = %e, "desired state not sent: authentication keys unavailable");
                        computed_at = 0;
                        ds = None;
                    }
                }
                if let Some(ds) =
                    ds.filter(|ds| last.as_ref().is_none_or(|l| !planner::same_content(l, ds)))
                {
                    if tx.send(Ok(ds.clone())).await.is_err() {
                        break;
                    }
                    if with_keys && last.is_some() {
                        // The node's answer to a change pushed on a stream
                        // it already holds may pass its report rate limit
                        // (report::ReportGate::admit). Not the first
                        // snapshot of a stream: a node could open, answer
                        // and close watches in a loop and report at will.
                        s.reports
                            .sent(&node, ds.revision, std::time::Instant::now());
                    }
                    let len = prost::Message::encoded_len(&ds);
                    last = Some(ds);
                    // Each snapshot is the node's whole state; during a burst
                    // of writes, sending one per change would cost O(node
                    // size) per write. Pausing lets the burst coalesce into
                    // the next snapshot; the pause grows with the snapshot.
                    tokio::time::sleep(coalesce_pause(s.desired_state_interval, len)).await;
                }
                tokio::select! {
                    r = changes.changed() => if r.is_err() { break },
                    // A rotated key is not in the cache's index: recompute.
                    r = async {
                        match rotations.as_mut() {
                            Some(r) => r.changed().await,
                            None => std::future::pending().await,
                        }
                    } => { if r.is_err() { break } computed_at = 0; }
                    _ = tx.closed() => break,
                    _ = stopping.changed() => break,
                }
            }
            info!(%node, "agent disconnected");
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    #[instrument(skip_all)]
    async fn renew(&self, req: Request<RenewRequest>) -> Result<Response<RenewResponse>, Status> {
        let id = identity(&req)?;
        Ok(Response::new(
            self.renew_inner(&id, req.into_inner()).await?,
        ))
    }

    #[instrument(skip_all, fields(node = %req.get_ref().node))]
    async fn report_status(
        &self,
        req: Request<ReportStatusRequest>,
    ) -> Result<Response<ReportStatusResponse>, Status> {
        let id = identity(&req)?;
        self.admit_report(&id, req.get_ref())?;
        let r = req.into_inner();
        let (node, held) = (r.node.clone(), crate::keys::held(&r.exports));
        let was_capable = crate::keys::reports_capable(&self.s, &node);
        let exports = r.exports.clone();
        let resp = ops::status::report(&self.s, r).await?;
        // Only once the report passed its bounds and was applied.
        crate::keys::note_held(&self.s, &node, held).await;
        if crate::keys::reports_capable(&self.s, &node) != was_capable {
            crate::keys::capability_changed(&self.s, &node);
        }
        // Last: the workstation is handed its connection from here on, and
        // its key is known by now (note_held).
        ops::status::admit_hosts(&self.s, &node, &exports).await?;
        Ok(Response::new(resp))
    }
}

/// Longest wait, when an agent moves to this replica, for the cache to
/// reach the revision the agent already has. Replicas follow the same etcd
/// within milliseconds, so this bounds only pathological lag; a revision
/// this replica never reaches (a store restored from a backup starts its
/// revisions anew) must not keep the agent waiting for ever.
const RESUME_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Waits until the cache holds `after` (the agent's last snapshot), so the
/// first snapshot it gets here is not older than what it applied.
async fn resume_point(s: &Shared, node: &str, after: u64) {
    if after == 0 || s.cache.revision() >= after {
        return;
    }
    if tokio::time::timeout(RESUME_WAIT, s.cache.wait_for(after))
        .await
        .is_err()
    {
        warn!(
            %node,
            after,
            at = s.cache.revision(),
            "agent resumes from a revision this replica has not reached; sending the current state"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn the_pause_grows_with_the_snapshot_up_to_the_interval() {
        let i = Duration::from_millis(100);
        assert_eq!(coalesce_pause(i, 0), Duration::ZERO);
        assert!(coalesce_pause(i, 500) < Duration::from_millis(2));
        assert_eq!(coalesce_pause(i, FULL_PAUSE_BYTES / 2), i / 2);
        assert_eq!(coalesce_pause(i, FULL_PAUSE_BYTES), i);
        assert_eq!(coalesce_pause(i, 10 * FULL_PAUSE_BYTES), i);
    }
}
