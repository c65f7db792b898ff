//! The resources and data sources, and the dispatch from a Terraform type
//! name to the module that handles it.

pub mod attachment;
pub mod data;
pub mod pool;
pub mod tenant;
pub mod volume;

use ferrofab_proto::client::Admin;

use crate::diag::{Diag, Diags};
use crate::schema::Block;
use crate::value::Value;

/// What every resource call needs: the controller client, and the demand
/// of the volumes planned so far by this provider process.
#[derive(Clone)]
pub struct Ctx {
    admin: Admin,
    pub demand: std::sync::Arc<crate::demand::Demand>,
}

impl Ctx {
    pub fn new(admin: Admin) -> Ctx {
        Ctx {
            admin,
            demand: Default::default(),
        }
    }
    /// A handle for one call (tonic clients are cheap clones of a channel).
    pub fn admin(&self) -> Admin {
        self.admin.clone()
    }
    /// Reads one volume.
    pub async fn admin_get_volume(
        &self,
        name: &str,
    ) -> Result<ferrofab_proto::v1::Volume, tonic::Status> {
        self.admin()
            .get_volume(ferrofab_proto::v1::GetVolumeRequest { name: name.into() })
            .await
            .map(tonic::Response::into_inner)
    }
}

pub const RESOURCES: &[&str] = &[
    "ferrofab_pool",
    "ferrofab_volume",
    "ferrofab_attachment",
    "ferrofab_tenant",
];
pub const DATA_SOURCES: &[&str] = &["ferrofab_nodes", "ferrofab_pool", "ferrofab_volume"];

pub fn resource_block(type_name: &str) -> Option<Block> {
    Some(match type_name {
        "ferrofab_pool" => pool::block(),
        "ferrofab_volume" => volume::block(),
        "ferrofab_attachment" => attachment::block(),
        "ferrofab_tenant" => tenant::block(),
        _ => return None,
    })
}

pub fn data_block(type_name: &str) -> Option<Block> {
    Some(match type_name {
        "ferrofab_nodes" => data::nodes_block(),
        "ferrofab_pool" => data::pool_block(),
        "ferrofab_volume" => data::volume_block(),
        _ => return None,
    })
}

pub fn validate(type_name: &str, cfg: &Value, diags: &mut Diags) {
    match type_name {
        "ferrofab_pool" => pool::validate(cfg, diags),
        "ferrofab_volume" => volume::validate(cfg, diags),
        "ferrofab_attachment" => attachment::validate(cfg, diags),
        "ferrofab_tenant" => tenant::validate(cfg, diags),
        _ => {}
    }
}

/// Reads the object named `id`; `None` when it is gone (Terraform then
/// plans to create it again).
pub async fn read(
    ctx: &Ctx,
    type_name: &str,
    id: &str,
    prior: &Value,
) -> Result<Option<Value>, Diag> {
    match type_name {
        "ferrofab_pool" => pool::read(ctx, id, prior).await,
        "ferrofab_volume" => volume::read(ctx, id, prior).await,
        "ferrofab_attachment" => attachment::read(ctx, id, prior).await,
        "ferrofab_tenant" => tenant::read(ctx, id, prior).await,
        other => Err(Diag::new("unknown resource type", other.to_owned())),
    }
}

/// Plans a create (prior null) or update; returns replacement paths.
pub async fn plan(
    ctx: &Ctx,
    type_name: &str,
    prior: &Value,
    planned: &mut Value,
    diags: &mut Diags,
) -> Vec<&'static str> {
    match type_name {
        "ferrofab_pool" => pool::plan(prior, planned),
        "ferrofab_volume" => volume::plan(ctx, prior, planned, diags).await,
        "ferrofab_attachment" => attachment::plan(ctx, prior, planned, diags).await,
        "ferrofab_tenant" => tenant::plan(prior, planned),
        _ => vec![],
    }
}

/// Creates or updates; the state to record (if any) and an error (if any).
pub async fn apply(
    ctx: &Ctx,
    type_name: &str,
    prior: &Value,
    planned: &Value,
) -> (Option<Value>, Option<Diag>) {
    let creating = prior.is_null();
    match (type_name, creating) {
        ("ferrofab_pool", true) => pool::create(ctx, planned).await,
        ("ferrofab_pool", false) => pool::update(ctx, prior, planned).await,
        ("ferrofab_volume", true) => volume::create(ctx, planned).await,
        ("ferrofab_volume", false) => volume::update(ctx, prior, planned).await,
        ("ferrofab_attachment", true) => attachment::create(ctx, planned).await,
        // A changed node is a move; every other attribute forces
        // replacement.
        ("ferrofab_attachment", false) => attachment::update(ctx, prior, planned).await,
        ("ferrofab_tenant", true) => tenant::create(ctx, planned).await,
        ("ferrofab_tenant", false) => tenant::update(ctx, prior, planned).await,
        (other, _) => (
            None,
            Some(Diag::new("unknown resource type", other.to_owned())),
        ),
    }
}

pub async fn delete(ctx: &Ctx, type_name: &str, prior: &Value) -> Result<(), Diag> {
    match type_name {
        "ferrofab_pool" => pool::delete(ctx, prior).await,
        "ferrofab_volume" => volume::delete(ctx, prior).await,
        "ferrofab_attachment" => attachment::delete(ctx, prior).await,
        "ferrofab_tenant" => tenant::delete(ctx, prior).await,
        other => Err(Diag::new("unknown resource type", other.to_owned())),
    }
}
