//! AdminService, a thin adapter: each RPC names the caller, takes its
//! request apart, calls the operation of its kind ([`crate::ops`]) and
//! returns the answer or the refusal as a status. Latency is recorded by
//! the router's layer ([`super::timing`]).

use std::future::Future;
use std::sync::Arc;

use ferrofab_proto::v1::{admin_service_server::AdminService, *};
use tokio_stream::StreamExt as _;
use tonic::{Request, Response, Status};
use tracing::instrument;

use super::watch::{watch, WatchStream};
use super::{identity, Shared};
use crate::action::Action;
use crate::authz;
use crate::error::ApiError;
use crate::identity::Identity;
use crate::ops::enroll;
use crate::ops::read::{self, Readable};
use crate::ops::{self, Delete};
use crate::resource::{validate_name, Object as _};
use crate::{apply, planner};

/// The stream WatchEvents returns.
pub type EventStream = std::pin::Pin<
    Box<dyn tokio_stream::Stream<Item = Result<ObjectEvent, Status>> + Send + 'static>,
>;

pub struct Admin {
    pub s: Arc<Shared>,
}

/// Runs one RPC: names the caller, takes the request body, runs `op` and
/// logs a refusal at debug level (the caller gets it as its status).
async fn serve<B, T, F, Fut>(rpc: Action, req: Request<B>, op: F) -> Result<Response<T>, Status>
where
    F: FnOnce(Identity, B) -> Fut,
    Fut: Future<Output = Result<T, ApiError>>,
{
    let id = identity(&req)?;
    let r = op(id.clone(), req.into_inner()).await;
    if let Err(e) = &r {
        tracing::debug!(rpc = %rpc, identity = %id, error = %e, "request refused");
    }
    Ok(Response::new(r?))
}

fn req_obj<T>(o: Option<T>, field: &str) -> Result<T, ApiError> {
    o.ok_or_else(|| ApiError::invalid(field, "is required"))
}

fn delete(name: String, resource_version: u64) -> Delete {
    Delete {
        name,
        resource_version,
    }
}

impl Admin {
    /// One page of the objects of kind R the caller may read: the items,
    /// the revision they were read at and the next page's token.
    fn list<R: Readable>(
        &self,
        id: &Identity,
        selector: &str,
        page_size: u32,
        token: &str,
    ) -> Result<(Vec<R>, u64, String), ApiError> {
        read::list(&self.s, id, selector, page_size, token)
    }
}

#[tonic::async_trait]
impl AdminService for Admin {
    // ---------------- nodes
    #[instrument(skip_all, fields(rpc = "CreateNode"))]
    async fn create_node(&self, req: Request<CreateNodeRequest>) -> Result<Response<Node>, Status> {
        serve(Action::CreateNode, req, |id, b| async move {
            ops::node::create(&self.s, &id, req_obj(b.node, "node")?, false).await
        })
        .await
    }
    async fn get_node(&self, req: Request<GetNodeRequest>) -> Result<Response<Node>, Status> {
        serve(Action::GetNode, req, |id, b| async move {
            read::get::<Node>(&self.s, &id, &b.name)
        })
        .await
    }
    async fn list_nodes(
        &self,
        req: Request<ListNodesRequest>,
    ) -> Result<Response<ListNodesResponse>, Status> {
        serve(Action::ListNodes, req, |id, b| async move {
            let (items, revision, next_page_token) =
                self.list(&id, &b.label_selector, b.page_size, &b.page_token)?;
            Ok(ListNodesResponse {
                items,
                revision,
                next_page_token,
            })
        })
        .await
    }
    async fn update_node(&self, req: Request<UpdateNodeRequest>) -> Result<Response<Node>, Status> {
        serve(Action::UpdateNode, req, |id, b| async move {
            ops::node::update(&self.s, &id, req_obj(b.node, "node")?, false).await
        })
        .await
    }
    async fn delete_node(&self, req: Request<DeleteNodeRequest>) -> Result<Response<Node>, Status> {
        serve(Action::DeleteNode, req, |id, b| async move {
            ops::node::delete(&self.s, &id, &delete(b.name, b.resource_version), false).await
        })
        .await
    }
    type WatchNodesStream = WatchStream;
    async fn watch_nodes(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        serve(Action::WatchNodes, req, |id, b| async move {
            watch::<Node>(&self.s, id, b)
        })
        .await
    }

    // ---------------- pools
    async fn create_pool(&self, req: Request<CreatePoolRequest>) -> Result<Response<Pool>, Status> {
        serve(Action::CreatePool, req, |id, b| async move {
            ops::pool::create(&self.s, &id, req_obj(b.pool, "pool")?, false).await
        })
        .await
    }
    async fn get_pool(&self, req: Request<GetPoolRequest>) -> Result<Response<Pool>, Status> {
        serve(Action::GetPool, req, |id, b| async move {
            read::get::<Pool>(&self.s, &id, &b.name)
        })
        .await
    }
    async fn list_pools(
        &self,
        req: Request<ListPoolsRequest>,
    ) -> Result<Response<ListPoolsResponse>, Status> {
        serve(Action::ListPools, req, |id, b| async move {
            let (items, revision, next_page_token) =
                self.list::<Pool>(&id, &b.label_selector, b.page_size, &b.page_token)?;
            Ok(ListPoolsResponse {
                items,
                revision,
                next_page_token,
            })
        })
        .await
    }
    async fn update_pool(&self, req: Request<UpdatePoolRequest>) -> Result<Response<Pool>, Status> {
        serve(Action::UpdatePool, req, |id, b| async move {
            ops::pool::update(&self.s, &id, req_obj(b.pool, "pool")?, false).await
        })
        .await
    }
    async fn delete_pool(&self, req: Request<DeletePoolRequest>) -> Result<Response<Pool>, Status> {
        serve(Action::DeletePool, req, |id, b| async move {
            ops::pool::delete(&self.s, &id, &delete(b.name, b.resource_version), false).await
        })
        .await
    }
    type WatchPoolsStream = WatchStream;
    async fn watch_pools(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        serve(Action::WatchPools, req, |id, b| async move {
            watch::<Pool>(&self.s, id, b)
        })
        .await
    }

    // ---------------- volumes
    #[instrument(skip_all, fields(rpc = "CreateVolume"))]
    async fn create_volume(
        &self,
        req: Request<CreateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        serve(Action::CreateVolume, req, |id, b| async move {
            let v = req_obj(b.volume, "volume")?;
            let name = v.name().to_owned();
            let r = ops::volume::create(&self.s, &id, v, b.dry_run).await;
            if !b.dry_run {
                ops::events::refused(&self.s, Kind::Volume, &name, &r).await;
            }
            r
        })
        .await
    }
    async fn get_volume(&self, req: Request<GetVolumeRequest>) -> Result<Response<Volume>, Status> {
        serve(Action::GetVolume, req, |id, b| async move {
            read::get::<Volume>(&self.s, &id, &b.name)
        })
        .await
    }
    async fn list_volumes(
        &self,
        req: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        serve(Action::ListVolumes, req, |id, b| async move {
            let (items, revision, next_page_token) =
                self.list(&id, &b.label_selector, b.page_size, &b.page_token)?;
            Ok(ListVolumesResponse {
                items,
                revision,
                next_page_token,
            })
        })
        .await
    }
    async fn update_volume(
        &self,
        req: Request<UpdateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        serve(Action::UpdateVolume, req, |id, b| async move {
            let v = req_obj(b.volume, "volume")?;
            let name = v.name().to_owned();
            let r = ops::volume::update(&self.s, &id, v, b.dry_run).await;
            if !b.dry_run {
                ops::events::refused(&self.s, Kind::Volume, &name, &r).await;
            }
            r
        })
        .await
    }
    async fn delete_volume(
        &self,
        req: Request<DeleteVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        serve(Action::DeleteVolume, req, |id, b| async move {
            ops::volume::delete(&self.s, &id, &delete(b.name, b.resource_version)).await
        })
        .await
    }
    type WatchVolumesStream = WatchStream;
    async fn watch_volumes(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        serve(Action::WatchVolumes, req, |id, b| async move {
            watch::<Volume>(&self.s, id, b)
        })
        .await
    }

    // ---------------- attachments
    async fn create_attachment(
        &self,
        req: Request<CreateAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        serve(Action::CreateAttachment, req, |id, b| async move {
            let a = req_obj(b.attachment, "attachment")?;
            let name = a.name().to_owned();
            let r = ops::attachment::create(&self.s, &id, a, false).await;
            ops::events::refused(&self.s, Kind::Attachment, &name, &r).await;
            r
        })
        .await
    }
    async fn get_attachment(
        &self,
        req: Request<GetAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        serve(Action::GetAttachment, req, |id, b| async move {
            read::get::<Attachment>(&self.s, &id, &b.name)
        })
        .await
    }
    async fn list_attachments(
        &self,
        req: Request<ListAttachmentsRequest>,
    ) -> Result<Response<ListAttachmentsResponse>, Status> {
        serve(Action::ListAttachments, req, |id, b| async move {
            let (items, revision, next_page_token) =
                self.list(&id, &b.label_selector, b.page_size, &b.page_token)?;
            Ok(ListAttachmentsResponse {
                items,
                revision,
                next_page_token,
            })
        })
        .await
    }
    async fn update_attachment(
        &self,
        req: Request<UpdateAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        serve(Action::UpdateAttachment, req, |id, b| async move {
            let a = req_obj(b.attachment, "attachment")?;
            ops::attachment::update(&self.s, &id, a, false, b.force).await
        })
        .await
    }
    async fn delete_attachment(
        &self,
        req: Request<DeleteAttachmentRequest>,
    ) -> Result<Response<Attachment>, Status> {
        serve(Action::DeleteAttachment, req, |id, b| async move {
            ops::attachment::delete(&self.s, &id, &delete(b.name, b.resource_version)).await
        })
        .await
    }
    type WatchAttachmentsStream = WatchStream;
    async fn watch_attachments(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        serve(Action::WatchAttachments, req, |id, b| async move {
            watch::<Attachment>(&self.s, id, b)
        })
        .await
    }

    // ---------------- tenants
    async fn create_tenant(
        &self,
        req: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        serve(Action::CreateTenant, req, |id, b| async move {
            ops::tenant::create(&self.s, &id, req_obj(b.tenant, "tenant")?, false).await
        })
        .await
    }
    async fn get_tenant(&self, req: Request<GetTenantRequest>) -> Result<Response<Tenant>, Status> {
        serve(Action::GetTenant, req, |id, b| async move {
            read::get::<Tenant>(&self.s, &id, &b.name)
        })
        .await
    }
    async fn list_tenants(
        &self,
        req: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        serve(Action::ListTenants, req, |id, b| async move {
            let (items, revision, next_page_token) =
                self.list::<Tenant>(&id, &b.label_selector, b.page_size, &b.page_token)?;
            Ok(ListTenantsResponse {
                items,
                revision,
                next_page_token,
            })
        })
        .await
    }
    async fn update_tenant(
        &self,
        req: Request<UpdateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        serve(Action::UpdateTenant, req, |id, b| async move {
            ops::tenant::update(&self.s, &id, req_obj(b.tenant, "tenant")?, false).await
        })
        .await
    }
    async fn delete_tenant(
        &self,
        req: Request<DeleteTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        serve(Action::DeleteTenant, req, |id, b| async move {
            ops::tenant::delete(&self.s, &id, &delete(b.name, b.resource_version), false).await
        })
        .await
    }
    type WatchTenantsStream = WatchStream;
    async fn watch_tenants(
        &self,
        req: Request<WatchRequest>,
    ) -> Result<Response<WatchStream>, Status> {
        serve(Action::WatchTenants, req, |id, b| async move {
            watch::<Tenant>(&self.s, id, b)
        })
        .await
    }

    // ---------------- the rest
    async fn apply(&self, req: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        serve(Action::Apply, req, |id, b| async move {
            authz::admin_only(&id, Action::Apply)?;
            apply::apply(&self.s, &id, b).await
        })
        .await
    }
    async fn create_bootstrap_token(
        &self,
        req: Request<CreateBootstrapTokenRequest>,
    ) -> Result<Response<CreateBootstrapTokenResponse>, Status> {
        serve(Action::CreateBootstrapToken, req, |id, b| async move {
            authz::admin_only(&id, Action::CreateBootstrapToken)?;
            validate_name("node", &b.node)?;
            enroll::create_token(&self.s, &b.node, b.ttl_seconds).await
        })
        .await
    }
    async fn get_desired_state(
        &self,
        req: Request<GetDesiredStateRequest>,
    ) -> Result<Response<DesiredState>, Status> {
        serve(Action::GetDesiredState, req, |id, b| async move {
            if id != Identity::Admin && id != Identity::Node(b.node.clone()) {
                return Err(authz::deny(
                    &id,
                    &format!("GetDesiredState of node {:?}", b.node),
                    "a node may read only its own desired state",
                ));
            }
            Ok(planner::desired_state(
                &self.s.cache.read(),
                &b.node,
                &self.s.defaults,
            ))
        })
        .await
    }
    async fn rotate_node_key(
        &self,
        req: Request<RotateNodeKeyRequest>,
    ) -> Result<Response<RotateNodeKeyResponse>, Status> {
        serve(Action::RotateNodeKey, req, |id, b| async move {
            authz::admin_only(&id, Action::RotateNodeKey)?;
            crate::keys::rotate_node_key(&self.s, &b.node).await
        })
        .await
    }
    async fn list_events(
        &self,
        req: Request<ListEventsRequest>,
    ) -> Result<Response<ListEventsResponse>, Status> {
        serve(Action::ListEvents, req, |id, b| async move {
            authz::admin_only(&id, Action::ListEvents)?;
            let (events, revision) = ops::events::list(&self.s, b.kind(), &b.name, b.limit)?;
            Ok(ListEventsResponse { events, revision })
        })
        .await
    }
    type WatchEventsStream = EventStream;
    async fn watch_events(
        &self,
        req: Request<WatchEventsRequest>,
    ) -> Result<Response<EventStream>, Status> {
        serve(Action::WatchEvents, req, |id, b| async move {
            authz::admin_only(&id, Action::WatchEvents)?;
            let permit = self.s.watches.acquire(&id.to_string()).map_err(|e| {
                self.s.metrics.watches_refused.inc();
                ApiError::Exhausted(e.to_string())
            })?;
            let rx = ops::events::watch(&self.s, b.kind(), &b.name, b.from_revision)?;
            self.s.metrics.watchers.inc();
            let guard = (permit, self.s.metrics.watch_guard());
            Ok(Box::pin(
                tokio_stream::wrappers::ReceiverStream::new(rx).map(move |r| {
                    let _held = &guard;
                    r.map_err(Status::from)
                }),
            ) as EventStream)
        })
        .await
    }
    async fn create_api_token(
        &self,
        req: Request<CreateApiTokenRequest>,
    ) -> Result<Response<CreateApiTokenResponse>, Status> {
        serve(Action::CreateApiToken, req, |id, b| async move {
            authz::admin_only(&id, Action::CreateApiToken)?;
            ops::apitoken::create(&self.s, &b.identity, b.ttl_seconds, &b.description).await
        })
        .await
    }
    async fn list_api_tokens(
        &self,
        req: Request<ListApiTokensRequest>,
    ) -> Result<Response<ListApiTokensResponse>, Status> {
        serve(Action::ListApiTokens, req, |id, _b| async move {
            authz::admin_only(&id, Action::ListApiTokens)?;
            Ok(ListApiTokensResponse {
                items: ops::apitoken::list(&self.s)?,
            })
        })
        .await
    }
    async fn revoke_api_token(
        &self,
        req: Request<RevokeApiTokenRequest>,
    ) -> Result<Response<RevokeApiTokenResponse>, Status> {
        serve(Action::RevokeApiToken, req, |id, b| async move {
            authz::admin_only(&id, Action::RevokeApiToken)?;
            Ok(RevokeApiTokenResponse {
                info: Some(ops::apitoken::revoke(&self.s, &b.id).await?),
            })
        })
        .await
    }
    async fn get_server_info(
        &self,
        req: Request<GetServerInfoRequest>,
    ) -> Result<Response<ServerInfo>, Status> {
        serve(Action::GetServerInfo, req, |id, _b| async move {
            let mut info = server_info(self.s.cache.read().revision, self.s.store_backend);
            if id == Identity::Admin {
                info.control_plane = control_plane(&self.s).await;
            }
            if let Some(k) = &self.s.keys {
                info.auth_required = k.require();
                info.auth_required_source = k.require_source().into();
            }
            Ok(info)
        })
        .await
    }
}

/// The replicas, the leader and the etcd members, as the store reports
/// them (`None` with redb). Asked off the async workers: the etcd backend
/// blocks for its round trips, one per member bounded by its timeout.
async fn control_plane(s: &Arc<Shared>) -> Option<ControlPlane> {
    if s.store_backend != crate::store::Backend::Etcd {
        return None;
    }
    let store = s.store.clone();
    let view = tokio::task::spawn_blocking(move || store.cluster()).await;
    let mut cp = ControlPlane {
        replica: s.leadership.name().to_string(),
        ..Default::default()
    };
    match view {
        Ok(Ok(v)) => {
            cp.leader = v.leader.unwrap_or_default();
            cp.replicas = v
                .replicas
                .into_iter()
                .map(|r| ControlReplica {
                    name: r.name,
                    endpoint: r.endpoint,
                    leader: r.leader,
                })
                .collect();
            cp.store_members = v
                .members
                .into_iter()
                .map(|m| StoreMember {
                    endpoint: m.endpoint,
                    health: m.health,
                    leader: m.leader,
                })
                .collect();
        }
        Ok(Err(e)) => cp.error = e.to_string(),
        Err(e) => cp.error = format!("store query failed: {e}"),
    }
    Some(cp)
}

/// Build facts of this binary and the store revision: nothing a tenant
/// could not learn from its own list responses (they carry the revision).
fn server_info(revision: u64, backend: crate::store::Backend) -> ServerInfo {
    ServerInfo {
        version: ferrofab_buildinfo::VERSION.into(),
        commit: ferrofab_buildinfo::COMMIT.into(),
        build_date: ferrofab_buildinfo::BUILD_DATE.into(),
        store: backend.name().into(),
        revision,
        ..Default::default()
    }
}
