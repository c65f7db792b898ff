//! AgentService: enrollment, per-node desired state streams, and status
//! reports flowing back into the objects' status.

use std::collections::HashMap;
use std::sync::Arc;

use ferrofab_proto::v1::{agent_service_server::AgentService, *};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};
use tracing::{debug, info, instrument, warn};

use super::admin::set_condition;
use super::{identity, Shared};
use crate::access;
use crate::authz;
use crate::enroll;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::planner;
use crate::report;
use crate::resource::{validate_name, validate_nqn, Resource};

pub struct Agent {
    pub s: Arc<Shared>,
}

fn require_node(id: &Identity, node: &str, action: &str) -> Result<(), ApiError> {
    match id {
        Identity::Node(n) if n == node => Ok(()),
        Identity::Admin if action == "WatchDesiredState" => Ok(()),
        _ => Err(authz::deny(
            id,
            &format!("{action} for node {node:?}"),
            "a node may only watch its own desired state and report its own status",
        )),
    }
}

fn cond(
    kind: &str,
    ok: bool,
    reason: &str,
    message: String,
    now: prost_types::Timestamp,
) -> Condition {
    Condition {
        r#type: kind.into(),
        status: if ok {
            ConditionStatus::True
        } else {
            ConditionStatus::False
        } as i32,
        reason: reason.into(),
        message,
        last_transition_time: Some(now),
        severity: if ok {
            Severity::Info
        } else {
            Severity::Warning
        } as i32,
        observed_generation: 0,
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
                "Renew",
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
                "Renew",
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

    async fn report_inner(
        &self,
        id: &Identity,
        r: ReportStatusRequest,
    ) -> Result<ReportStatusResponse, ApiError> {
        require_node(id, &r.node, "ReportStatus")?;
        let s = &self.s;
        report::check_bounds(&r, s.reports.max_entries)
            .inspect_err(|_| s.metrics.refused("report_size"))?;
        crate::keys::note_report(s, &r.node, &r.exports);
        let now = s.clock.now_ts();
        let status = r.node_status.clone().unwrap_or_default();
        let agent_conditions = self.sanitized(&status.conditions, report::NODE_CONDITIONS, now);
        if status.agent_version.len() > report::MAX_AGENT_VERSION_BYTES {
            s.metrics.report_fields_truncated.inc();
        }
        let mut written = false;
        s.modify::<Node>(&r.node, |n, _| {
            let generation = n.metadata.as_ref().map_or(0, |m| m.generation);
            let next = report::next_node_status(
                n.status.as_ref(),
                &status,
                agent_conditions.clone(),
                generation,
                now,
                s.reports.persist_every_s,
            );
            n.status = Some(next.status);
            written = next.write;
            next.write
        })
        .await?
        .ok_or_else(|| ApiError::not_found("node", &r.node))?;
        if !written {
            s.metrics.reports_unpersisted.inc();
        }
        self.apply_exports(&r.node, &r.exports, now).await?;
        self.fence_moves(&r.node, &r.exports, r.desired_revision)
            .await?;
        self.release_moves(&r.node, &r.connections, r.desired_revision, now)
            .await?;
        self.apply_connections(&r.node, &r.connections, now).await?;
        Ok(ReportStatusResponse {
            revision: s.cache.revision(),
        })
    }

    /// The reported conditions of known types, bounded; what was dropped
    /// or cut is counted.
    ///
    /// Transition times are `now` (kept from the stored condition when its
    /// status did not change, by `set_condition` or `next_node_status`).
    fn sanitized(
        &self,
        given: &[Condition],
        known: &[&str],
        now: prost_types::Timestamp,
    ) -> Vec<Condition> {
        let mut out = report::sanitize(given, known);
        for c in &mut out.conditions {
            c.last_transition_time = Some(now);
        }
        if out.dropped > 0 {
            self.s.metrics.report_conditions_dropped.inc_by(out.dropped);
            debug!(
                dropped = out.dropped,
                "unknown condition types dropped from a report"
            );
        }
        self.s.metrics.report_fields_truncated.inc_by(out.truncated);
        out.conditions
    }

    /// Export readiness, the generation it was confirmed for and the
    /// agent's conditions into volume status; removal of deleted volumes
    /// whose export is gone; workstations become eligible to connect.
    async fn apply_exports(
        &self,
        node: &str,
        reports: &[ExportStatus],
        now: prost_types::Timestamp,
    ) -> Result<(), ApiError> {
        let s = &self.s;
        let by_volume: HashMap<&str, &ExportStatus> =
            reports.iter().map(|e| (e.volume.as_str(), e)).collect();
        let mine: Vec<(String, bool)> = {
            let objs = s.cache.read();
            objs.volumes_on(node)
                .map(|v| {
                    let deleting = v
                        .metadata
                        .as_ref()
                        .is_some_and(|m| m.deletion_timestamp.is_some());
                    (v.name().to_string(), deleting)
                })
                .collect()
        };
        for (name, deleting) in mine {
            let rep = by_volume.get(name.as_str());
            if deleting {
                if rep.is_none() {
                    let rv = s
                        .get::<Volume>(&name)?
                        .metadata
                        .map_or(0, |m| m.resource_version);
                    s.remove::<Volume>(&name, rv).await?;
                    info!(volume = %name, %node, "export removed; volume deleted");
                }
                continue;
            }
            let rep = rep.map(|e| {
                let conds = self.sanitized(&e.conditions, report::EXPORT_CONDITIONS, now);
                report::ExportReport::new(e, conds)
            });
            self.set_export_status(&name, node, rep.as_ref(), now)
                .await?;
        }
        Ok(())
    }

    /// Writes the volume status a report implies, when it differs from the
    /// stored one (see [`report::next_volume_status`]).
    async fn set_export_status(
        &self,
        name: &str,
        node: &str,
        rep: Option<&report::ExportReport>,
        now: prost_types::Timestamp,
    ) -> Result<(), ApiError> {
        let s = &self.s;
        let mut became_ready = false;
        s.modify::<Volume>(name, |v, _| {
            became_ready = false;
            let generation = v.metadata.as_ref().map_or(0, |m| m.generation);
            let cur = v.status.clone().unwrap_or_default();
            let Some(next) = report::next_volume_status(&cur, generation, node, rep, now) else {
                return false;
            };
            became_ready = next.export_ready && !cur.export_ready;
            if next.observed_generation != cur.observed_generation {
                debug!(volume = %name, generation = next.observed_generation, "spec change observed");
            }
            v.status = Some(next);
            true
        })
        .await?;
        if became_ready {
            let pending: Vec<String> = {
                let objs = s.cache.read();
                objs.attachments_of(name)
                    .filter(|a| {
                        a.status
                            .as_ref()
                            .is_none_or(|st| st.phase == AttachmentPhase::Pending as i32)
                    })
                    .map(|a| a.name().to_string())
                    .collect()
            };
            for a in pending {
                s.modify::<Attachment>(&a, |att, _| {
                    let st = att.status.get_or_insert_with(Default::default);
                    st.phase = AttachmentPhase::Connecting as i32;
                    true
                })
                .await?;
            }
        }
        Ok(())
    }

    /// Completes the fence of moved attachments whose volume this storage
    /// node serves, once its report proves the previous holder's host
    /// revoked and disconnected (see [`crate::access::fence_done`]).
    async fn fence_moves(
        &self,
        node: &str,
        reports: &[ExportStatus],
        desired_revision: u64,
    ) -> Result<(), ApiError> {
        let s = &self.s;
        let done: Vec<(String, String)> = {
            let objs = s.cache.read();
            // Only the storage node serving a volume speaks for its export.
            let serves = |e: &&ExportStatus| {
                objs.volumes
                    .get(&e.volume)
                    .and_then(|v| v.status.as_ref())
                    .is_some_and(|st| st.node == node)
            };
            reports
                .iter()
                .filter(serves)
                .flat_map(|e| objs.attachments_of(&e.volume).map(move |a| (e, a)))
                .filter_map(|(e, a)| {
                    let st = a.status.as_ref()?;
                    if st.moved_from_node.is_empty() || !st.moved_from_released {
                        return None;
                    }
                    let old = access::host_of(&objs, &st.moved_from_node);
                    access::fence_done(
                        desired_revision,
                        st.fence_revision,
                        old,
                        &e.allowed_hosts,
                        &e.connected_hosts,
                    )
                    .then(|| (a.name().to_string(), st.moved_from_node.clone()))
                })
                .collect()
        };
        for (name, from) in done {
            s.modify::<Attachment>(&name, |att, _| {
                let Some(st) = att.status.as_mut() else {
                    return false;
                };
                if st.moved_from_node != from || !st.moved_from_released {
                    return false;
                }
                st.moved_from_node.clear();
                st.moved_from_released = false;
                st.fence_revision = 0;
                st.move_revision = 0;
                true
            })
            .await?;
            info!(attachment = %name, %from, "move fenced: previous host revoked and disconnected");
        }
        Ok(())
    }

    /// Releases the previous holder's host of attachments moved away from
    /// workstation `node` once it no longer lists them, in a report made
    /// against a desired state at least as new as the move. "Listed but not
    /// connected" is not enough: a reconnecting workstation reports that
    /// while a filesystem is still mounted on the device.
    async fn release_moves(
        &self,
        node: &str,
        reports: &[ConnectionStatus],
        desired_revision: u64,
        now: prost_types::Timestamp,
    ) -> Result<(), ApiError> {
        let s = &self.s;
        let gone: Vec<String> = {
            let objs = s.cache.read();
            objs.attachments_moving_from(node)
                .filter(|a| {
                    a.status.as_ref().is_some_and(|st| {
                        !st.moved_from_released
                            && st.move_revision != 0
                            && desired_revision >= st.move_revision
                    })
                })
                .filter(|a| !reports.iter().any(|c| c.attachment == a.name()))
                .map(|a| a.name().to_string())
                .collect()
        };
        for name in gone {
            let released = s.modify::<Attachment>(&name, |att, _| {
                let Some(st) = att.status.as_mut() else {
                    return false;
                };
                if st.moved_from_node != node || st.moved_from_released {
                    return false;
                }
                st.moved_from_released = true;
                let msg = format!("moving from {node}: disconnected there; revoking its host on the storage node");
                set_condition(
                    &mut st.conditions,
                    cond("Connected", false, "Moving", msg, now),
                );
                true
            })
            .await?;
            if let Some(a) = released {
                let rv = a.metadata.as_ref().map_or(0, |m| m.resource_version);
                access::stamp_fence(s, &name, rv).await?;
            }
            info!(attachment = %name, %node, "moved attachment disconnected from its previous node");
        }
        Ok(())
    }

    /// Connection state into attachment status; removal of detaching
    /// attachments once the workstation no longer reports them connected
    /// (which is what finally revokes the host on the export).
    async fn apply_connections(
        &self,
        node: &str,
        reports: &[ConnectionStatus],
        now: prost_types::Timestamp,
    ) -> Result<(), ApiError> {
        let s = &self.s;
        let by_att: HashMap<&str, &ConnectionStatus> =
            reports.iter().map(|c| (c.attachment.as_str(), c)).collect();
        let mine: Vec<Attachment> = {
            let objs = s.cache.read();
            objs.attachments_for(node).cloned().collect()
        };
        for a in mine {
            let name = a.name().to_string();
            let rep = by_att.get(name.as_str());
            let connected = rep.is_some_and(|c| c.connected);
            let deleting = a
                .metadata
                .as_ref()
                .is_some_and(|m| m.deletion_timestamp.is_some());
            // A move's previous holder may still be connected: the object
            // (and with it that host) goes only once it was released.
            let fenced = a
                .status
                .as_ref()
                .is_some_and(|st| !st.moved_from_node.is_empty() && !st.moved_from_released);
            if deleting {
                if !connected && !fenced {
                    let rv = a.metadata.as_ref().map_or(0, |m| m.resource_version);
                    match s.remove::<Attachment>(&name, rv).await {
                        Ok(()) | Err(ApiError::NotFound { .. }) => {}
                        Err(ApiError::Conflict { .. }) => {
                            warn!(attachment = %name, "changed while detaching; retried on next report")
                        }
                        Err(e) => return Err(e),
                    }
                }
                continue;
            }
            let phase = a.status.as_ref().map_or(0, |s| s.phase);
            let want = if connected {
                AttachmentPhase::Attached as i32
            } else if phase == AttachmentPhase::Attached as i32 {
                AttachmentPhase::Connecting as i32
            } else {
                phase
            };
            let device = rep.map(|c| c.device_path.clone()).unwrap_or_default();
            let cur_device = a
                .status
                .as_ref()
                .map(|s| s.device_path.clone())
                .unwrap_or_default();
            // The exposed size follows the workstation's report (0 while
            // not connected: nothing is exposed then).
            let size = rep.filter(|_| connected).map_or(0, |c| c.size_bytes);
            let cur_size = a.status.as_ref().map_or(0, |s| s.size_bytes);
            // Attachment specs are immutable today, so this only matters
            // if that changes: a connection reported for the attachment is
            // the attachment's current generation carried out.
            let generation = a.metadata.as_ref().map_or(0, |m| m.generation);
            let behind = connected
                && a.status
                    .as_ref()
                    .is_none_or(|s| s.observed_generation < generation);
            if want != phase || device != cur_device || size != cur_size || behind {
                let extra = rep
                    .map(|c| self.sanitized(&c.conditions, report::CONNECTION_CONDITIONS, now))
                    .unwrap_or_default();
                s.modify::<Attachment>(&name, |att, _| {
                    let st = att.status.get_or_insert_with(Default::default);
                    st.phase = want;
                    st.device_path = device.clone();
                    st.size_bytes = size;
                    if connected {
                        st.observed_generation = st.observed_generation.max(generation);
                    }
                    let msg = if connected {
                        format!("connected on {node} as {device}")
                    } else {
                        format!("{node} reports no connection")
                    };
                    set_condition(
                        &mut st.conditions,
                        cond(
                            "Connected",
                            connected,
                            if connected {
                                "HostConnected"
                            } else {
                                "HostNotConnected"
                            },
                            msg,
                            now,
                        ),
                    );
                    for c in &extra {
                        set_condition(&mut st.conditions, c.clone());
                    }
                    true
                })
                .await?;
            }
        }
        Ok(())
    }
}

type DesiredStream = ReceiverStream<Result<DesiredState, Status>>;

impl Agent {
    /// The per-node rate limit, before any work: a node over its rate is
    /// still alive (its liveness is recorded), but its report is refused
    /// with the delay after which the next one will pass.
    fn admit_report(&self, id: &Identity, node: &str) -> Result<(), Status> {
        require_node(id, node, "ReportStatus")?;
        let s = &self.s;
        s.reports.heard(node, s.clock.now());
        s.reports
            .admit(node, std::time::Instant::now())
            .map_err(|t| {
                s.metrics.reports_throttled.inc();
                debug!(%node, retry_ms = t.retry_after.as_millis() as u64, "ReportStatus throttled");
                Status::from(t)
            })
    }
}

#[tonic::async_trait]
impl AgentService for Agent {
    #[instrument(skip_all, fields(node = %req.get_ref().node_name))]
    async fn enroll(
        &self,
        req: Request<EnrollRequest>,
    ) -> Result<Response<EnrollResponse>, Status> {
        let _t = self.s.metrics.api_timer("Enroll");
        Ok(Response::new(self.enroll_inner(req.into_inner()).await?))
    }

    type WatchDesiredStateStream = DesiredStream;

    #[instrument(skip_all, fields(node = %req.get_ref().node))]
    async fn watch_desired_state(
        &self,
        req: Request<WatchDesiredStateRequest>,
    ) -> Result<Response<DesiredStream>, Status> {
        let id = identity(&req)?;
        let node = req.into_inner().node;
        require_node(&id, &node, "WatchDesiredState")?;
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
            info!(%node, "agent connected");
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
                    last = Some(ds);
                    // Each snapshot is the node's whole state; during a burst
                    // of writes, sending one per change would cost O(node
                    // size) per write. Pausing lets the burst coalesce into
                    // the next snapshot.
                    tokio::time::sleep(s.desired_state_interval).await;
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
        let _t = self.s.metrics.api_timer("Renew");
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
        let _t = self.s.metrics.api_timer("ReportStatus");
        let id = identity(&req)?;
        self.admit_report(&id, &req.get_ref().node)?;
        Ok(Response::new(
            self.report_inner(&id, req.into_inner()).await?,
        ))
    }
}
