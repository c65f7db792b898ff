//! Builders of API objects and one call to create, get or delete any kind,
//! so a test states the objects that matter to it and not their plumbing.

use std::path::Path;

use ferrofab_proto::v1::admin_service_client::AdminServiceClient;
use ferrofab_proto::v1::*;
use tonic::transport::Channel;
use tonic::Status;

/// The admin client every suite uses.
pub type Admin = AdminServiceClient<Channel>;

/// An agent's client (a node identity's view of the controller).
pub type Agent = ferrofab_proto::v1::agent_service_client::AgentServiceClient<Channel>;

pub fn meta(name: &str) -> Option<ObjectMeta> {
    Some(ObjectMeta {
        name: name.into(),
        ..Default::default()
    })
}

pub fn meta_labels(name: &str, labels: &[(&str, &str)]) -> Option<ObjectMeta> {
    let mut m = ObjectMeta {
        name: name.into(),
        ..Default::default()
    };
    for (k, v) in labels {
        m.labels.insert((*k).into(), (*v).into());
    }
    Some(m)
}

/// The host NQN the suites give node `name`.
pub fn host_nqn(name: &str) -> String {
    format!("nqn.2014-08.org.nvmexpress:uuid:{name}")
}

pub fn tenant(name: &str, quota: &str, volumes: u32, nodes: &[&str]) -> Tenant {
    Tenant {
        metadata: meta(name),
        spec: Some(TenantSpec {
            capacity_quota: quota.into(),
            volume_quota: volumes,
            allowed_nodes: nodes.iter().map(|s| s.to_string()).collect(),
        }),
        status: None,
    }
}

pub fn storage_node(name: &str, port: u32) -> Node {
    Node {
        metadata: meta(name),
        spec: Some(NodeSpec {
            roles: vec![NodeRole::Storage as i32],
            data_addresses: vec![DataAddress {
                address: "127.0.0.1".into(),
                port,
                transport: "tcp".into(),
            }],
            host_nqn: host_nqn(name),
        }),
        status: None,
    }
}

pub fn workstation(name: &str) -> Node {
    Node {
        metadata: meta(name),
        spec: Some(NodeSpec {
            roles: vec![NodeRole::Workstation as i32],
            data_addresses: vec![],
            host_nqn: host_nqn(name),
        }),
        status: None,
    }
}

/// A directory pool at `/srv/ferrofab/<name>`.
pub fn pool(name: &str, node: &str, capacity: &str, labels: &[(&str, &str)]) -> Pool {
    pool_at(
        name,
        node,
        Path::new("/srv/ferrofab").join(name).as_path(),
        capacity,
        labels,
    )
}

/// A directory pool at `path`.
pub fn pool_at(
    name: &str,
    node: &str,
    path: &Path,
    capacity: &str,
    labels: &[(&str, &str)],
) -> Pool {
    Pool {
        metadata: meta_labels(name, labels),
        spec: Some(PoolSpec {
            node: node.into(),
            backing: Some(PoolBacking {
                kind: BackingKind::Directory as i32,
                path: path.display().to_string(),
            }),
            capacity: capacity.into(),
            overcommit_ratio: 0.0,
            namespace_limit: 0,
            reclaim_policy: ReclaimPolicy::Delete as i32,
        }),
        status: None,
    }
}

pub fn volume(name: &str, tenant: &str, size: &str, pool: &str) -> Volume {
    Volume {
        metadata: meta(name),
        spec: Some(VolumeSpec {
            tenant: tenant.into(),
            size: size.into(),
            pool: pool.into(),
            ..Default::default()
        }),
        status: None,
    }
}

pub fn volume_sel(name: &str, tenant: &str, size: &str, sel: &[(&str, &str)]) -> Volume {
    let mut v = volume(name, tenant, size, "");
    let mut s = LabelSelector::default();
    for (k, val) in sel {
        s.match_labels.insert((*k).into(), (*val).into());
    }
    v.spec.as_mut().expect("spec").pool_selector = Some(s);
    v
}

pub fn attachment(name: &str, volume: &str, node: &str) -> Attachment {
    attachment_mode(name, volume, node, AccessMode::ReadWrite)
}

pub fn attachment_mode(name: &str, volume: &str, node: &str, mode: AccessMode) -> Attachment {
    Attachment {
        metadata: meta(name),
        spec: Some(AttachmentSpec {
            volume: volume.into(),
            node: node.into(),
            mode: mode as i32,
        }),
        status: None,
    }
}

/// A storage node's status for an export that is ready at generation 1.
pub fn export_ready(volume: &str, nqn: &str) -> ExportStatus {
    ExportStatus {
        volume: volume.into(),
        subsystem_nqn: nqn.into(),
        ready: true,
        conditions: vec![],
        generation: 1,
        ..Default::default()
    }
}

/// Creates tenant "lab" (allowing ws1), storage node s1, workstation ws1
/// and pool p1 (100GiB, tier=fast) on s1.
pub async fn basic_layout(c: &mut Admin) {
    c.create(tenant("lab", "", 0, &["ws1"]))
        .await
        .expect("tenant");
    c.create(storage_node("s1", 4420)).await.expect("s1");
    c.create(workstation("ws1")).await.expect("ws1");
    c.create(pool("p1", "s1", "100GiB", &[("tier", "fast")]))
        .await
        .expect("p1");
}

/// The resource version of `o`.
pub fn rv<T: Object>(o: &T) -> u64 {
    o.meta().resource_version
}

/// An API object: its metadata and its typed create/get/delete calls.
#[tonic::async_trait]
pub trait Object: Sized + Send + 'static {
    fn meta(&self) -> &ObjectMeta;
    /// The typed create RPC.
    async fn create(self, c: &mut Admin) -> Result<Self, Status>;
    /// The typed update RPC (not a dry run, no forced move).
    async fn update(self, c: &mut Admin) -> Result<Self, Status>;
    /// The typed get RPC.
    async fn get(c: &mut Admin, name: &str) -> Result<Self, Status>;
    /// The typed delete RPC.
    async fn delete(c: &mut Admin, name: &str) -> Result<Self, Status>;
}

macro_rules! object {
    ($($t:ident: $field:ident, $create:ident($creq:ident), $update:ident($ureq:ident), $get:ident($greq:ident), $delete:ident($dreq:ident);)*) => {$(
        #[tonic::async_trait]
        #[allow(clippy::needless_update)] // some requests have no other field
        impl Object for $t {
            fn meta(&self) -> &ObjectMeta {
                self.metadata.as_ref().expect("metadata")
            }
            async fn create(self, c: &mut Admin) -> Result<Self, Status> {
                let req = $creq { $field: Some(self), ..Default::default() };
                c.$create(req).await.map(tonic::Response::into_inner)
            }
            async fn update(self, c: &mut Admin) -> Result<Self, Status> {
                let req = $ureq { $field: Some(self), ..Default::default() };
                c.$update(req).await.map(tonic::Response::into_inner)
            }
            async fn get(c: &mut Admin, name: &str) -> Result<Self, Status> {
                let req = $greq { name: name.into() };
                c.$get(req).await.map(tonic::Response::into_inner)
            }
            async fn delete(c: &mut Admin, name: &str) -> Result<Self, Status> {
                let req = $dreq { name: name.into(), ..Default::default() };
                c.$delete(req).await.map(tonic::Response::into_inner)
            }
        }
    )*};
}

object! {
    Tenant: tenant, create_tenant(CreateTenantRequest), update_tenant(UpdateTenantRequest), get_tenant(GetTenantRequest), delete_tenant(DeleteTenantRequest);
    Node: node, create_node(CreateNodeRequest), update_node(UpdateNodeRequest), get_node(GetNodeRequest), delete_node(DeleteNodeRequest);
    Pool: pool, create_pool(CreatePoolRequest), update_pool(UpdatePoolRequest), get_pool(GetPoolRequest), delete_pool(DeletePoolRequest);
    Volume: volume, create_volume(CreateVolumeRequest), update_volume(UpdateVolumeRequest), get_volume(GetVolumeRequest), delete_volume(DeleteVolumeRequest);
    Attachment: attachment, create_attachment(CreateAttachmentRequest), update_attachment(UpdateAttachmentRequest), get_attachment(GetAttachmentRequest), delete_attachment(DeleteAttachmentRequest);
}

/// The typed create, get and delete RPCs of every kind as one call each
/// on the admin client: `admin.create(volume(..))`,
/// `admin.get::<Volume>("data")`, `admin.delete::<Attachment>("a")`.
#[allow(async_fn_in_trait)] // used only in tests, never across threads generically
pub trait AdminExt {
    /// Creates `o` (not a dry run).
    async fn create<T: Object>(&mut self, o: T) -> Result<T, Status>;
    /// Reads object `name` of kind `T`.
    async fn get<T: Object>(&mut self, name: impl AsRef<str>) -> Result<T, Status>;
    /// Deletes object `name` of kind `T` (any resource version).
    async fn delete<T: Object>(&mut self, name: impl AsRef<str>) -> Result<T, Status>;
    /// Replaces `o`'s spec and metadata (its resource version, if set,
    /// must be current).
    async fn update<T: Object>(&mut self, o: T) -> Result<T, Status>;
    /// Node `node`'s desired state, as its agent would get it.
    async fn desired_state(&mut self, node: impl AsRef<str>) -> Result<DesiredState, Status>;
    /// Creates volume `v`, or with `dry_run` only checks that it could be.
    async fn create_volume_with(&mut self, v: Volume, dry_run: bool) -> Result<Volume, Status>;
    /// Updates volume `v`, or with `dry_run` only checks that it could be.
    async fn update_volume_with(&mut self, v: Volume, dry_run: bool) -> Result<Volume, Status>;
    /// Applies `layout` (a dry run or for real), pruning nothing.
    async fn apply_layout(
        &mut self,
        layout: Layout,
        dry_run: bool,
    ) -> Result<ApplyResponse, Status>;
    /// A bootstrap token for `node`, valid for ten minutes.
    async fn bootstrap_token(&mut self, node: impl AsRef<str>) -> String;
}

impl AdminExt for Admin {
    async fn create<T: Object>(&mut self, o: T) -> Result<T, Status> {
        o.create(self).await
    }
    async fn get<T: Object>(&mut self, name: impl AsRef<str>) -> Result<T, Status> {
        T::get(self, name.as_ref()).await
    }
    async fn delete<T: Object>(&mut self, name: impl AsRef<str>) -> Result<T, Status> {
        T::delete(self, name.as_ref()).await
    }
    async fn update<T: Object>(&mut self, o: T) -> Result<T, Status> {
        o.update(self).await
    }
    async fn desired_state(&mut self, node: impl AsRef<str>) -> Result<DesiredState, Status> {
        let req = GetDesiredStateRequest {
            node: node.as_ref().into(),
        };
        self.get_desired_state(req)
            .await
            .map(tonic::Response::into_inner)
    }
    async fn create_volume_with(&mut self, v: Volume, dry_run: bool) -> Result<Volume, Status> {
        let volume = Some(v);
        let r = self.create_volume(CreateVolumeRequest { volume, dry_run });
        Ok(r.await?.into_inner())
    }
    async fn update_volume_with(&mut self, v: Volume, dry_run: bool) -> Result<Volume, Status> {
        let volume = Some(v);
        let r = self.update_volume(UpdateVolumeRequest { volume, dry_run });
        Ok(r.await?.into_inner())
    }
    async fn apply_layout(
        &mut self,
        layout: Layout,
        dry_run: bool,
    ) -> Result<ApplyResponse, Status> {
        let req = ApplyRequest {
            layout: Some(layout),
            dry_run,
            prune: false,
            prune_nodes: false,
        };
        self.apply(req).await.map(tonic::Response::into_inner)
    }
    async fn bootstrap_token(&mut self, node: impl AsRef<str>) -> String {
        let req = CreateBootstrapTokenRequest {
            node: node.as_ref().into(),
            ttl_seconds: 600,
        };
        let resp = self.create_bootstrap_token(req).await.expect("token");
        resp.into_inner().token
    }
}

/// The agent service calls the suites repeat, on an agent's client.
#[allow(async_fn_in_trait)] // used only in tests, never across threads generically
pub trait AgentExt {
    /// Opens node `node`'s desired-state stream.
    async fn watch_desired(&mut self, node: impl AsRef<str>) -> tonic::Streaming<DesiredState>;
}

impl AgentExt for Agent {
    async fn watch_desired(&mut self, node: impl AsRef<str>) -> tonic::Streaming<DesiredState> {
        let req = WatchDesiredStateRequest {
            node: node.as_ref().into(),
            ..Default::default()
        };
        let resp = self
            .watch_desired_state(req)
            .await
            .expect("watch desired state");
        resp.into_inner()
    }
}
