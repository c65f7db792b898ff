//! An in-memory stand-in for the controller's AdminService, served over
//! real mutual TLS with certificates from `ferrofab-pki`, so the CLI is
//! exercised end to end (config, TLS, identity, RPCs, output) before the
//! real controller exists. Only what the tests need is implemented:
//! tenants, volumes, Apply and bootstrap tokens.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};

use ferrofab_pki::Identity;
use ferrofab_proto::v1::admin_service_server::AdminService;
use ferrofab_proto::v1::*;
use ferrofab_types::size::parse_size;
use tonic::{Request, Response, Status};

type Stream =
    Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<WatchEvent, Status>> + Send>>;
type EventStream =
    Pin<Box<dyn tonic::codegen::tokio_stream::Stream<Item = Result<ObjectEvent, Status>> + Send>>;

/// The quota every fake tenant has left, in bytes: 3.9TiB-ish of 4TiB.
const QUOTA_LEFT: u64 = (4u64 << 40) - (100 << 30);

#[derive(Default)]
struct State {
    revision: u64,
    tenants: BTreeMap<String, Tenant>,
    volumes: BTreeMap<String, Volume>,
    /// Applies performed for real (not dry runs).
    applies: u32,
}

/// The fake service; cheap to clone, state shared.
#[derive(Clone, Default)]
pub struct Fake {
    state: Arc<Mutex<State>>,
}

impl Fake {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Number of non-dry-run applies so far.
    pub fn applies(&self) -> u32 {
        self.lock().applies
    }
}

/// Only `admin` may use the fake API; tenants get PERMISSION_DENIED, which
/// proves the client certificate's identity arrives intact.
fn require_admin<T>(req: &Request<T>) -> Result<(), Status> {
    let certs = req
        .peer_certs()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let first = certs
        .first()
        .ok_or_else(|| Status::unauthenticated("no client certificate"))?;
    let id = Identity::from_cert_der(first).map_err(|e| Status::unauthenticated(e.to_string()))?;
    if id == Identity::Admin {
        Ok(())
    } else {
        Err(Status::permission_denied(format!("{id} may not do this")))
    }
}

fn meta(name: &str, rev: u64) -> ObjectMeta {
    ObjectMeta {
        name: name.to_owned(),
        uid: format!("uid-{name}"),
        generation: 1,
        resource_version: rev,
        ..Default::default()
    }
}

fn ready() -> Condition {
    Condition {
        r#type: "Ready".into(),
        status: ConditionStatus::True as i32,
        reason: "ExportReady".into(),
        ..Default::default()
    }
}

fn size_of(v: &Volume) -> u64 {
    v.spec
        .as_ref()
        .and_then(|s| parse_size(&s.size).ok())
        .unwrap_or(0)
}

fn spec_size(v: &Volume) -> String {
    v.spec.as_ref().map(|s| s.size.clone()).unwrap_or_default()
}

fn name_of(m: &Option<ObjectMeta>) -> String {
    m.as_ref().map(|m| m.name.clone()).unwrap_or_default()
}

impl State {
    fn next_rev(&mut self) -> u64 {
        self.revision += 1;
        self.revision
    }

    fn insert_volume(&mut self, mut v: Volume, phase: VolumePhase) -> Result<Volume, Status> {
        let name = name_of(&v.metadata);
        let tenant = v
            .spec
            .as_ref()
            .map(|s| s.tenant.clone())
            .unwrap_or_default();
        if size_of(&v) > QUOTA_LEFT {
            return Err(Status::resource_exhausted(format!(
                "over quota: tenant {tenant:?} has 3.9TiB of 4TiB left"
            )));
        }
        let rev = self.next_rev();
        v.metadata = Some(meta(&name, rev));
        v.status = Some(VolumeStatus {
            observed_generation: 1,
            phase: phase as i32,
            size_bytes: size_of(&v),
            conditions: if phase == VolumePhase::Ready {
                vec![ready()]
            } else {
                vec![]
            },
            ..Default::default()
        });
        self.volumes.insert(name, v.clone());
        Ok(v)
    }

    /// Each read moves a volume one phase on, so `wait` has to poll.
    fn advance(&mut self, name: &str) -> Option<Volume> {
        let v = self.volumes.get_mut(name)?;
        let st = v.status.get_or_insert_with(Default::default);
        let next = match st.phase() {
            VolumePhase::Pending => VolumePhase::Placed,
            _ => VolumePhase::Ready,
        };
        st.phase = next as i32;
        if next == VolumePhase::Ready {
            st.conditions = vec![ready()];
        }
        Some(v.clone())
    }

    fn plan(&self, layout: &Layout) -> Vec<ObjectDiff> {
        let mut diffs = Vec::new();
        for t in &layout.tenants {
            let name = name_of(&t.metadata);
            let action = if self.tenants.contains_key(&name) {
                DiffAction::Unchanged
            } else {
                DiffAction::Created
            };
            diffs.push(diff(Kind::Tenant, &name, action, vec![]));
        }
        for v in &layout.volumes {
            let name = name_of(&v.metadata);
            match self.volumes.get(&name) {
                None => diffs.push(diff(Kind::Volume, &name, DiffAction::Created, vec![])),
                Some(cur) if spec_size(cur) != spec_size(v) => diffs.push(diff(
                    Kind::Volume,
                    &name,
                    DiffAction::Updated,
                    vec![FieldChange {
                        path: "spec.size".into(),
                        old_value: spec_size(cur),
                        new_value: spec_size(v),
                    }],
                )),
                Some(_) => diffs.push(diff(Kind::Volume, &name, DiffAction::Unchanged, vec![])),
            }
        }
        diffs
    }
}

fn diff(kind: Kind, name: &str, action: DiffAction, changes: Vec<FieldChange>) -> ObjectDiff {
    ObjectDiff {
        kind: kind as i32,
        name: name.to_owned(),
        action: action as i32,
        changes,
    }
}

/// Emits the service impl: the implemented methods given verbatim plus an
/// UNIMPLEMENTED stub for each listed one. One macro for the whole impl,
/// because `async_trait` must see the stubs already expanded.
macro_rules! admin_impl {
    (stubs { $($method:ident($req:ty) -> $resp:ty;)* } $($implemented:tt)*) => {
        #[tonic::async_trait]
        impl AdminService for Fake {
            type WatchNodesStream = Stream;
            type WatchPoolsStream = Stream;
            type WatchVolumesStream = Stream;
            type WatchAttachmentsStream = Stream;
            type WatchTenantsStream = Stream;
            type WatchEventsStream = EventStream;
            $(
                async fn $method(&self, _r: Request<$req>) -> Result<Response<$resp>, Status> {
                    Err(Status::unimplemented(concat!(stringify!($method), " is not in the fake")))
                }
            )*
            $($implemented)*
        }
    };
}

admin_impl! {
    stubs {
        get_server_info(GetServerInfoRequest) -> ServerInfo;
        create_node(CreateNodeRequest) -> Node;
        get_node(GetNodeRequest) -> Node;
        list_nodes(ListNodesRequest) -> ListNodesResponse;
        update_node(UpdateNodeRequest) -> Node;
        delete_node(DeleteNodeRequest) -> Node;
        watch_nodes(WatchRequest) -> Stream;
        create_pool(CreatePoolRequest) -> Pool;
        get_pool(GetPoolRequest) -> Pool;
        list_pools(ListPoolsRequest) -> ListPoolsResponse;
        update_pool(UpdatePoolRequest) -> Pool;
        delete_pool(DeletePoolRequest) -> Pool;
        watch_pools(WatchRequest) -> Stream;
        watch_volumes(WatchRequest) -> Stream;
        create_attachment(CreateAttachmentRequest) -> Attachment;
        get_attachment(GetAttachmentRequest) -> Attachment;
        update_attachment(UpdateAttachmentRequest) -> Attachment;
        delete_attachment(DeleteAttachmentRequest) -> Attachment;
        watch_attachments(WatchRequest) -> Stream;
        update_tenant(UpdateTenantRequest) -> Tenant;
        delete_tenant(DeleteTenantRequest) -> Tenant;
        watch_tenants(WatchRequest) -> Stream;
        get_desired_state(GetDesiredStateRequest) -> DesiredState;
        rotate_node_key(RotateNodeKeyRequest) -> RotateNodeKeyResponse;
        list_events(ListEventsRequest) -> ListEventsResponse;
        watch_events(WatchEventsRequest) -> EventStream;
        create_api_token(CreateApiTokenRequest) -> CreateApiTokenResponse;
        list_api_tokens(ListApiTokensRequest) -> ListApiTokensResponse;
        revoke_api_token(RevokeApiTokenRequest) -> RevokeApiTokenResponse;
    }

    async fn create_tenant(
        &self,
        r: Request<CreateTenantRequest>,
    ) -> Result<Response<Tenant>, Status> {
        require_admin(&r)?;
        let mut t = r.into_inner().tenant.unwrap_or_default();
        let name = name_of(&t.metadata);
        let mut st = self.lock();
        if st.tenants.contains_key(&name) {
            return Err(Status::already_exists(format!(
                "tenant {name:?} already exists"
            )));
        }
        let rev = st.next_rev();
        t.metadata = Some(meta(&name, rev));
        st.tenants.insert(name, t.clone());
        Ok(Response::new(t))
    }

    async fn get_tenant(&self, r: Request<GetTenantRequest>) -> Result<Response<Tenant>, Status> {
        require_admin(&r)?;
        let name = r.into_inner().name;
        self.lock()
            .tenants
            .get(&name)
            .cloned()
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("tenant {name:?} not found")))
    }

    async fn list_tenants(
        &self,
        r: Request<ListTenantsRequest>,
    ) -> Result<Response<ListTenantsResponse>, Status> {
        require_admin(&r)?;
        let st = self.lock();
        Ok(Response::new(ListTenantsResponse {
            items: st.tenants.values().cloned().collect(),
            revision: st.revision,
            ..Default::default()
        }))
    }

    async fn create_volume(
        &self,
        r: Request<CreateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        require_admin(&r)?;
        let v = r.into_inner().volume.unwrap_or_default();
        let name = name_of(&v.metadata);
        let mut st = self.lock();
        if st.volumes.contains_key(&name) {
            return Err(Status::already_exists(format!(
                "volume {name:?} already exists"
            )));
        }
        st.insert_volume(v, VolumePhase::Pending).map(Response::new)
    }

    async fn get_volume(&self, r: Request<GetVolumeRequest>) -> Result<Response<Volume>, Status> {
        require_admin(&r)?;
        let name = r.into_inner().name;
        self.lock()
            .advance(&name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("volume {name:?} not found")))
    }

    /// The fake holds no attachments; `wait volume/X` lists them to see
    /// whether a grow has reached the workstations.
    async fn list_attachments(
        &self,
        r: Request<ListAttachmentsRequest>,
    ) -> Result<Response<ListAttachmentsResponse>, Status> {
        require_admin(&r)?;
        let st = self.lock();
        Ok(Response::new(ListAttachmentsResponse {
            items: vec![],
            revision: st.revision,
            ..Default::default()
        }))
    }

    async fn list_volumes(
        &self,
        r: Request<ListVolumesRequest>,
    ) -> Result<Response<ListVolumesResponse>, Status> {
        require_admin(&r)?;
        let st = self.lock();
        Ok(Response::new(ListVolumesResponse {
            items: st.volumes.values().cloned().collect(),
            revision: st.revision,
            ..Default::default()
        }))
    }

    async fn update_volume(
        &self,
        r: Request<UpdateVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        require_admin(&r)?;
        let v = r.into_inner().volume.unwrap_or_default();
        let name = name_of(&v.metadata);
        let mut st = self.lock();
        let rev = st.next_rev();
        let cur = st
            .volumes
            .get_mut(&name)
            .ok_or_else(|| Status::not_found(format!("volume {name:?} not found")))?;
        let sent_rv = v.metadata.as_ref().map_or(0, |m| m.resource_version);
        let cur_meta = cur.metadata.get_or_insert_with(Default::default);
        if sent_rv != 0 && sent_rv != cur_meta.resource_version {
            return Err(Status::aborted(format!(
                "volume {name:?} changed: current resource_version is {}",
                cur_meta.resource_version
            )));
        }
        cur_meta.generation += 1;
        cur_meta.resource_version = rev;
        cur.spec = v.spec;
        Ok(Response::new(cur.clone()))
    }

    async fn delete_volume(
        &self,
        r: Request<DeleteVolumeRequest>,
    ) -> Result<Response<Volume>, Status> {
        require_admin(&r)?;
        let name = r.into_inner().name;
        self.lock()
            .volumes
            .remove(&name)
            .map(Response::new)
            .ok_or_else(|| Status::not_found(format!("volume {name:?} not found")))
    }

    async fn apply(&self, r: Request<ApplyRequest>) -> Result<Response<ApplyResponse>, Status> {
        require_admin(&r)?;
        let req = r.into_inner();
        let layout = req.layout.unwrap_or_default();
        let mut st = self.lock();
        let diffs = st.plan(&layout);
        if req.dry_run {
            return Ok(Response::new(ApplyResponse {
                diffs,
                revision: 0,
                dry_run: true,
            }));
        }
        st.applies += 1;
        for t in layout.tenants {
            let name = name_of(&t.metadata);
            let rev = st.next_rev();
            st.tenants.entry(name.clone()).or_insert(Tenant {
                metadata: Some(meta(&name, rev)),
                ..t
            });
        }
        for v in layout.volumes {
            st.insert_volume(v, VolumePhase::Ready)?;
        }
        Ok(Response::new(ApplyResponse {
            diffs,
            revision: st.revision,
            dry_run: false,
        }))
    }

    async fn create_bootstrap_token(
        &self,
        r: Request<CreateBootstrapTokenRequest>,
    ) -> Result<Response<CreateBootstrapTokenResponse>, Status> {
        require_admin(&r)?;
        let req = r.into_inner();
        let ttl = if req.ttl_seconds == 0 {
            3600
        } else {
            req.ttl_seconds
        };
        let (token, _record) =
            ferrofab_pki::Token::generate(&req.node, std::time::Duration::from_secs(ttl.into()))
                .map_err(|e| Status::invalid_argument(e.to_string()))?;
        Ok(Response::new(CreateBootstrapTokenResponse {
            token: token.to_string(),
            expires_at: Some(prost_types::Timestamp {
                seconds: 2_000_000_000,
                nanos: 0,
            }),
        }))
    }
}
