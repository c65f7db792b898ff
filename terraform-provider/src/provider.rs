//! The tfplugin6 Provider service and go-plugin's GRPCController. Each RPC
//! decodes its DynamicValues with the schema's type, calls the resource
//! module and encodes the answer; nothing is kept between processes.

use std::sync::Arc;

use tokio::sync::{Notify, RwLock};
use tonic::{Request, Response, Status};

use crate::config;
use crate::diag::{attr_path, Diag, Diags};
use crate::pb::{self, provider_server::Provider};
use crate::resources::{self, Ctx};
use crate::schema::Block;
use crate::value::{self, Type, Value};

pub struct FerrofabProvider {
    ctx: RwLock<Option<Ctx>>,
}

impl FerrofabProvider {
    pub fn new() -> FerrofabProvider {
        FerrofabProvider {
            ctx: RwLock::new(None),
        }
    }

    async fn ctx(&self) -> Result<Ctx, Diag> {
        self.ctx.read().await.clone().ok_or_else(|| {
            Diag::new(
                "provider not configured",
                "ConfigureProvider was not called before this request",
            )
        })
    }
}

impl Default for FerrofabProvider {
    fn default() -> Self {
        Self::new()
    }
}

/// Decodes a DynamicValue; an absent one is null.
fn decode(dv: Option<&pb::DynamicValue>, ty: &Type) -> Result<Value, Diag> {
    let Some(dv) = dv else { return Ok(Value::Null) };
    let res = if !dv.msgpack.is_empty() {
        value::from_msgpack(&dv.msgpack, ty)
    } else if !dv.json.is_empty() {
        value::from_json(&dv.json, ty)
    } else {
        return Ok(Value::Null);
    };
    res.map_err(|e| Diag::new("cannot decode the value Terraform sent", e.to_string()))
}

fn encode(v: &Value, ty: &Type) -> Option<pb::DynamicValue> {
    Some(pb::DynamicValue {
        msgpack: value::to_msgpack(v, ty),
        json: vec![],
    })
}

fn resource_type(name: &str) -> Result<(Block, Type), Diag> {
    let b = resources::resource_block(name).ok_or_else(|| {
        Diag::new(
            "unknown resource type",
            format!("{name:?} is not a ferrofab resource"),
        )
    })?;
    let t = b.value_type();
    Ok((b, t))
}

fn id_of(state: &Value) -> String {
    state
        .get("id")
        .as_str()
        .or_else(|| state.get("name").as_str())
        .unwrap_or_default()
        .to_owned()
}

#[tonic::async_trait]
impl Provider for FerrofabProvider {
    async fn get_provider_schema(
        &self,
        _req: Request<pb::get_provider_schema::Request>,
    ) -> Result<Response<pb::get_provider_schema::Response>, Status> {
        let resource_schemas = resources::RESOURCES
            .iter()
            .filter_map(|n| resources::resource_block(n).map(|b| ((*n).to_owned(), b.schema())))
            .collect();
        let data_source_schemas = resources::DATA_SOURCES
            .iter()
            .filter_map(|n| resources::data_block(n).map(|b| ((*n).to_owned(), b.schema())))
            .collect();
        Ok(Response::new(pb::get_provider_schema::Response {
            provider: Some(config::block().schema()),
            resource_schemas,
            data_source_schemas,
            diagnostics: vec![],
            provider_meta: None,
        }))
    }

    async fn validate_provider_config(
        &self,
        req: Request<pb::validate_provider_config::Request>,
    ) -> Result<Response<pb::validate_provider_config::Response>, Status> {
        let mut diags = Diags::default();
        let ty = config::block().value_type();
        let cfg = decode(req.get_ref().config.as_ref(), &ty);
        if let Err(d) = cfg {
            diags.push(d);
        }
        Ok(Response::new(pb::validate_provider_config::Response {
            diagnostics: diags.0,
        }))
    }

    async fn validate_resource_config(
        &self,
        req: Request<pb::validate_resource_config::Request>,
    ) -> Result<Response<pb::validate_resource_config::Response>, Status> {
        let r = req.get_ref();
        let mut diags = Diags::default();
        match resource_type(&r.type_name).and_then(|(_, t)| decode(r.config.as_ref(), &t)) {
            Ok(cfg) => resources::validate(&r.type_name, &cfg, &mut diags),
            Err(d) => diags.push(d),
        }
        Ok(Response::new(pb::validate_resource_config::Response {
            diagnostics: diags.0,
        }))
    }

    async fn validate_data_resource_config(
        &self,
        req: Request<pb::validate_data_resource_config::Request>,
    ) -> Result<Response<pb::validate_data_resource_config::Response>, Status> {
        let r = req.get_ref();
        let mut diags = Diags::default();
        match resources::data_block(&r.type_name) {
            None => diags.error("unknown data source", r.type_name.clone()),
            Some(b) => match decode(r.config.as_ref(), &b.value_type()) {
                Ok(cfg) => resources::data::validate(&r.type_name, &cfg, &mut diags),
                Err(d) => diags.push(d),
            },
        }
        Ok(Response::new(pb::validate_data_resource_config::Response {
            diagnostics: diags.0,
        }))
    }

    async fn upgrade_resource_state(
        &self,
        req: Request<pb::upgrade_resource_state::Request>,
    ) -> Result<Response<pb::upgrade_resource_state::Response>, Status> {
        let r = req.get_ref();
        let mut diags = Diags::default();
        let mut upgraded = None;
        match resource_type(&r.type_name) {
            Err(d) => diags.push(d),
            Ok((_, ty)) => {
                let json = r
                    .raw_state
                    .as_ref()
                    .map(|s| s.json.as_slice())
                    .unwrap_or_default();
                if json.is_empty() {
                    diags.error(
                        "cannot upgrade state",
                        "only JSON state is supported (no flatmap)",
                    );
                } else {
                    // Schema version 0 is the only one so far: re-encode the
                    // JSON with the current type (unknown attributes dropped).
                    match value::from_json(json, &ty) {
                        Ok(v) => upgraded = encode(&v, &ty),
                        Err(e) => diags.error("cannot read the stored state", e.to_string()),
                    }
                }
            }
        }
        Ok(Response::new(pb::upgrade_resource_state::Response {
            upgraded_state: upgraded,
            diagnostics: diags.0,
        }))
    }

    async fn configure_provider(
        &self,
        req: Request<pb::configure_provider::Request>,
    ) -> Result<Response<pb::configure_provider::Response>, Status> {
        let ty = config::block().value_type();
        let res = async {
            let cfg = decode(req.get_ref().config.as_ref(), &ty)?;
            let resolved = config::resolve(&cfg)?;
            config::connect(&resolved).await
        }
        .await;
        let mut diags = Diags::default();
        match res {
            Ok(admin) => *self.ctx.write().await = Some(Ctx::new(admin)),
            Err(d) => diags.push(d),
        }
        Ok(Response::new(pb::configure_provider::Response {
            diagnostics: diags.0,
        }))
    }

    async fn read_resource(
        &self,
        req: Request<pb::read_resource::Request>,
    ) -> Result<Response<pb::read_resource::Response>, Status> {
        let r = req.into_inner();
        let res = async {
            let (_, ty) = resource_type(&r.type_name)?;
            let cur = decode(r.current_state.as_ref(), &ty)?;
            let ctx = self.ctx().await?;
            let new = resources::read(&ctx, &r.type_name, &id_of(&cur), &cur).await?;
            Ok::<_, Diag>(encode(&new.unwrap_or(Value::Null), &ty))
        }
        .await;
        let (new_state, diags) = match res {
            Ok(s) => (s, Diags::default()),
            Err(d) => (r.current_state.clone(), Diags::from(d)),
        };
        Ok(Response::new(pb::read_resource::Response {
            new_state,
            diagnostics: diags.0,
            private: r.private,
        }))
    }

    async fn plan_resource_change(
        &self,
        req: Request<pb::plan_resource_change::Request>,
    ) -> Result<Response<pb::plan_resource_change::Response>, Status> {
        let r = req.into_inner();
        let mut diags = Diags::default();
        let mut requires_replace = vec![];
        let res = async {
            let (_, ty) = resource_type(&r.type_name)?;
            let prior = decode(r.prior_state.as_ref(), &ty)?;
            let mut planned = decode(r.proposed_new_state.as_ref(), &ty)?;
            if planned.is_null() {
                return Ok::<_, Diag>((Value::Null, ty, vec![]));
            }
            let ctx = self.ctx().await?;
            let replace =
                resources::plan(&ctx, &r.type_name, &prior, &mut planned, &mut diags).await;
            Ok((planned, ty, replace))
        }
        .await;
        let planned_state = match res {
            Ok((planned, ty, replace)) => {
                requires_replace = replace.into_iter().map(attr_path).collect();
                encode(&planned, &ty)
            }
            Err(d) => {
                diags.push(d);
                r.proposed_new_state.clone()
            }
        };
        Ok(Response::new(pb::plan_resource_change::Response {
            planned_state,
            requires_replace,
            planned_private: r.prior_private,
            diagnostics: diags.0,
        }))
    }

    async fn apply_resource_change(
        &self,
        req: Request<pb::apply_resource_change::Request>,
    ) -> Result<Response<pb::apply_resource_change::Response>, Status> {
        let r = req.into_inner();
        let mut diags = Diags::default();
        let res = async {
            let (_, ty) = resource_type(&r.type_name)?;
            let prior = decode(r.prior_state.as_ref(), &ty)?;
            let planned = decode(r.planned_state.as_ref(), &ty)?;
            let ctx = self.ctx().await?;
            Ok::<_, Diag>((ctx, ty, prior, planned))
        }
        .await;
        let new_state = match res {
            Err(d) => {
                diags.push(d);
                r.prior_state.clone()
            }
            Ok((ctx, ty, prior, planned)) if planned.is_null() => {
                match resources::delete(&ctx, &r.type_name, &prior).await {
                    Ok(()) => encode(&Value::Null, &ty),
                    Err(d) => {
                        diags.push(d);
                        encode(&prior, &ty)
                    }
                }
            }
            Ok((ctx, ty, prior, planned)) => {
                let (state, err) = resources::apply(&ctx, &r.type_name, &prior, &planned).await;
                if let Some(d) = err {
                    diags.push(d);
                }
                encode(&state.unwrap_or(Value::Null), &ty)
            }
        };
        Ok(Response::new(pb::apply_resource_change::Response {
            new_state,
            private: vec![],
            diagnostics: diags.0,
        }))
    }

    async fn import_resource_state(
        &self,
        req: Request<pb::import_resource_state::Request>,
    ) -> Result<Response<pb::import_resource_state::Response>, Status> {
        let r = req.into_inner();
        let res = async {
            let (_, ty) = resource_type(&r.type_name)?;
            let ctx = self.ctx().await?;
            let state = resources::read(&ctx, &r.type_name, &r.id, &Value::Null).await?.ok_or_else(|| {
                Diag::new(
                    "cannot import: object not found",
                    format!("{} {:?} does not exist on the controller (import takes the object's name)", r.type_name, r.id),
                )
            })?;
            Ok::<_, Diag>(pb::import_resource_state::ImportedResource {
                type_name: r.type_name.clone(),
                state: encode(&state, &ty),
                private: vec![],
            })
        }
        .await;
        let (imported_resources, diags) = match res {
            Ok(i) => (vec![i], Diags::default()),
            Err(d) => (vec![], Diags::from(d)),
        };
        Ok(Response::new(pb::import_resource_state::Response {
            imported_resources,
            diagnostics: diags.0,
        }))
    }

    async fn read_data_source(
        &self,
        req: Request<pb::read_data_source::Request>,
    ) -> Result<Response<pb::read_data_source::Response>, Status> {
        let r = req.into_inner();
        let res = async {
            let b = resources::data_block(&r.type_name)
                .ok_or_else(|| Diag::new("unknown data source", r.type_name.clone()))?;
            let ty = b.value_type();
            let cfg = decode(r.config.as_ref(), &ty)?;
            let ctx = self.ctx().await?;
            let state = resources::data::read(&ctx, &r.type_name, &cfg).await?;
            Ok::<_, Diag>(encode(&state, &ty))
        }
        .await;
        let (state, diags) = match res {
            Ok(s) => (s, Diags::default()),
            Err(d) => (None, Diags::from(d)),
        };
        Ok(Response::new(pb::read_data_source::Response {
            state,
            diagnostics: diags.0,
        }))
    }

    async fn stop_provider(
        &self,
        _req: Request<pb::stop_provider::Request>,
    ) -> Result<Response<pb::stop_provider::Response>, Status> {
        // Nothing long-running outlives its RPC; Terraform cancels those.
        Ok(Response::new(pb::stop_provider::Response {
            error: String::new(),
        }))
    }
}

/// go-plugin's controller: Shutdown ends the process gracefully.
pub struct Controller {
    pub shutdown: Arc<Notify>,
}

#[tonic::async_trait]
impl crate::plugin_pb::grpc_controller_server::GrpcController for Controller {
    async fn shutdown(
        &self,
        _req: Request<crate::plugin_pb::Empty>,
    ) -> Result<Response<crate::plugin_pb::Empty>, Status> {
        tracing::debug!("shutdown requested by Terraform");
        self.shutdown.notify_one();
        Ok(Response::new(crate::plugin_pb::Empty {}))
    }
}
