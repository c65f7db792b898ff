//! The OpenAPI 3.1 document of the HTTP/JSON API, served at
//! `/v1/openapi.json`. Generated from the code: the object schemas are
//! utoipa's derives on the protobuf messages themselves (see
//! `ferrofab-proto`'s `json` feature), the paths come from the same kind
//! table ([`HttpKind`]) the router is built from, so the document cannot
//! describe a route or a field the server does not have.

use std::sync::OnceLock;

use axum::Json;
use ferrofab_proto::v1::{Attachment, Node, Pool, Tenant, Volume};
use serde_json::{json, Map, Value};
use utoipa::openapi::{RefOr, Schema};

use super::actions::{ExtendRequest, MoveRequest, ResizeRequest};
use super::kinds::HttpKind;

/// `GET /v1/openapi.json` (no authentication: it describes, holds nothing).
pub async fn serve_document() -> Json<Value> {
    Json(document().clone())
}

/// The document, built once.
pub fn document() -> &'static Value {
    static DOC: OnceLock<Value> = OnceLock::new();
    DOC.get_or_init(build)
}

fn schema_ref(name: &str) -> Value {
    json!({ "$ref": format!("#/components/schemas/{name}") })
}

fn json_content(schema: Value) -> Value {
    json!({ "application/json": { "schema": schema } })
}

fn ok(description: &str, schema: Value) -> Value {
    json!({ "description": description, "content": json_content(schema) })
}

/// Every operation's refusals: the error body, with the status codes the
/// API uses.
fn responses(success: (&str, Value)) -> Value {
    let mut r = Map::new();
    r.insert(success.0.into(), success.1);
    for (code, why) in [
        ("400", "Invalid request; `error.field` names the field"),
        ("401", "No valid client certificate or API token"),
        ("403", "The identity may not do this"),
        ("404", "No such object (or one the caller may not read)"),
        (
            "409",
            "Already exists, or modified since `resource_version`",
        ),
        ("413", "Body larger than http_api.max_body_bytes"),
        (
            "422",
            "Refused by a precondition (in use, not attached, ...)",
        ),
        (
            "429",
            "A quota, capacity or concurrency limit (RESOURCE_EXHAUSTED)",
        ),
    ] {
        r.insert(code.into(), ok(why, schema_ref("Error")));
    }
    Value::Object(r)
}

fn query(name: &str, ty: &str, description: &str) -> Value {
    json!({
        "name": name, "in": "query", "required": false,
        "description": description, "schema": { "type": ty },
    })
}

fn name_param(title: &str) -> Value {
    json!({
        "name": "name", "in": "path", "required": true,
        "description": format!("The {title}'s metadata.name"),
        "schema": { "type": "string" },
    })
}

fn kind_paths<K: HttpKind>(paths: &mut Map<String, Value>) {
    let t = <K as ferrofab_proto::object::Object>::TITLE;
    let list_schema = json!({
        "type": "object",
        "properties": {
            "items": { "type": "array", "items": schema_ref(t) },
            "revision": { "type": "integer", "format": "int64", "minimum": 0 },
            "continue": { "type": "string" },
        },
        "required": ["items", "revision", "continue"],
    });
    paths.insert(
        format!("/v1/{}", K::PLURAL),
        json!({
            "get": {
                "operationId": format!("list{t}s"),
                "summary": format!("List {}, or watch them (watch=true) as server-sent events", K::PLURAL),
                "tags": [t],
                "parameters": [
                    query("labelSelector", "string", "key=value,key!=value,key"),
                    query("limit", "integer", "Most items in the page (at most http_api.max_page_size)"),
                    query("continue", "string", "The previous page's `continue`"),
                    query("watch", "boolean", "Stream changes as text/event-stream"),
                    query("resourceVersion", "integer", "With watch: resume after this revision"),
                ],
                "responses": responses(("200", json!({
                    "description": "One page (or, with watch=true, an event stream)",
                    "content": {
                        "application/json": { "schema": list_schema },
                        "text/event-stream": { "schema": { "type": "string" } },
                    },
                }))),
            },
            "post": {
                "operationId": format!("create{t}"),
                "summary": format!("Create a {}", t.to_lowercase()),
                "tags": [t],
                "requestBody": { "required": true, "content": json_content(schema_ref(t)) },
                "responses": responses(("201", ok("Created", schema_ref(t)))),
            },
        }),
    );
    paths.insert(
        format!("/v1/{}/{{name}}", K::PLURAL),
        json!({
            "parameters": [name_param(t)],
            "get": {
                "operationId": format!("get{t}"),
                "tags": [t],
                "responses": responses(("200", ok("The object", schema_ref(t)))),
            },
            "patch": {
                "operationId": format!("patch{t}"),
                "summary": "JSON merge patch; metadata.resource_version in it is a precondition (409 if stale)",
                "tags": [t],
                "requestBody": { "required": true, "content": {
                    "application/merge-patch+json": { "schema": { "type": "object" } },
                    "application/json": { "schema": { "type": "object" } },
                } },
                "responses": responses(("200", ok("Updated", schema_ref(t)))),
            },
            "delete": {
                "operationId": format!("delete{t}"),
                "tags": [t],
                "parameters": [query("resourceVersion", "integer", "Delete only at this revision (409 if not)")],
                "responses": responses(("200", ok("Deleted (or marked for deletion)", schema_ref(t)))),
            },
        }),
    );
}

fn action(op: &str, summary: &str, body: &str, answer: &str) -> Value {
    json!({
        "parameters": [name_param("Volume")],
        "post": {
            "operationId": op,
            "summary": summary,
            "tags": ["Volume"],
            "requestBody": { "required": true, "content": json_content(schema_ref(body)) },
            "responses": responses(("200", ok("Done", schema_ref(answer)))),
        },
    })
}

/// Adds `T`'s schema and those it refers to.
fn add_schema<T: utoipa::ToSchema>(schemas: &mut Map<String, Value>) {
    let mut all: Vec<(String, RefOr<Schema>)> = vec![(T::name().into_owned(), T::schema())];
    T::schemas(&mut all);
    for (name, s) in all {
        if let Ok(v) = serde_json::to_value(&s) {
            schemas.insert(name, v);
        }
    }
}

fn build() -> Value {
    let mut paths = Map::new();
    kind_paths::<Node>(&mut paths);
    kind_paths::<Pool>(&mut paths);
    kind_paths::<Tenant>(&mut paths);
    kind_paths::<Volume>(&mut paths);
    kind_paths::<Attachment>(&mut paths);
    paths.insert(
        "/v1/volumes/{name}/resize".into(),
        action("resizeVolume", "Grow a volume", "ResizeRequest", "Volume"),
    );
    paths.insert(
        "/v1/volumes/{name}/extend".into(),
        action(
            "extendVolume",
            "Postpone a burst volume's expiry",
            "ExtendRequest",
            "Volume",
        ),
    );
    paths.insert(
        "/v1/volumes/{name}/move".into(),
        action(
            "moveVolume",
            "Move the volume's attachment to another workstation (fenced)",
            "MoveRequest",
            "Attachment",
        ),
    );
    paths.insert(
        "/v1/whoami".into(),
        json!({ "get": {
            "operationId": "whoami",
            "summary": "The identity this request authenticated as",
            "tags": ["Session"],
            "responses": responses(("200", ok("The caller", json!({
                "type": "object",
                "properties": { "identity": { "type": "string" } },
                "required": ["identity"],
            })))),
        } }),
    );
    paths.insert(
        "/v1/events".into(),
        json!({ "get": {
            "operationId": "listEvents",
            "summary": "The controller's events, oldest first (501 until this build serves them)",
            "tags": ["Event"],
            "parameters": [
                query("since", "integer", "Only events after this one (0: the oldest kept)"),
                query("limit", "integer", "Most events (at most http_api.max_page_size)"),
            ],
            "responses": responses(("200", ok("Events", json!({
                "type": "object",
                "properties": { "items": { "type": "array", "items": { "type": "object" } } },
                "required": ["items"],
            })))),
        } }),
    );
    let mut schemas = Map::new();
    add_schema::<Node>(&mut schemas);
    add_schema::<Pool>(&mut schemas);
    add_schema::<Tenant>(&mut schemas);
    add_schema::<Volume>(&mut schemas);
    add_schema::<Attachment>(&mut schemas);
    add_schema::<ResizeRequest>(&mut schemas);
    add_schema::<ExtendRequest>(&mut schemas);
    add_schema::<MoveRequest>(&mut schemas);
    schemas.insert(
        "Error".into(),
        json!({
            "type": "object",
            "properties": { "error": {
                "type": "object",
                "properties": {
                    "code": { "type": "string", "description": "The gRPC code's name" },
                    "status": { "type": "integer" },
                    "message": { "type": "string", "description": "The gRPC status message" },
                    "field": { "type": "string", "description": "The invalid field, when one is" },
                },
                "required": ["code", "status", "message"],
            } },
            "required": ["error"],
        }),
    );
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "ferrofab HTTP/JSON API",
            "version": ferrofab_buildinfo::VERSION,
            "description": "The controller's resources over HTTPS. Same operations, validation, authorization and errors as the gRPC AdminService.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": { "type": "http", "scheme": "bearer", "description": "An API token (ferrofab token create)" },
                "certificate": { "type": "mutualTLS", "description": "A ferrofab client certificate" },
            },
        },
        "security": [ { "bearer": [] }, { "certificate": [] } ],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn document_names_every_route_and_resolves_every_reference() {
        let doc = document();
        for p in [
            "/v1/volumes",
            "/v1/volumes/{name}",
            "/v1/attachments/{name}",
            "/v1/volumes/{name}/move",
        ] {
            assert!(doc["paths"].get(p).is_some(), "{p} missing");
        }
        let text = doc.to_string();
        let schemas = doc["components"]["schemas"].as_object().expect("schemas");
        for piece in text.split("#/components/schemas/").skip(1) {
            let name: String = piece.chars().take_while(|c| *c != '"').collect();
            assert!(schemas.contains_key(&name), "unresolved $ref {name}");
        }
        // Times and enums are described as the JSON carries them.
        assert_eq!(
            schemas["VolumeStatus"]["properties"]["phase"]["type"],
            "string"
        );
    }
}
