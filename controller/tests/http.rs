//! The HTTP/JSON API against a real controller process: every route, API
//! tokens and what they may see, resourceVersion preconditions, watch
//! resume, and parity with the gRPC API (same objects, same errors).

use std::time::Duration;

use ferrofab_proto::v1::*;
use ferrofab_testkit::http::{Auth, HttpClient, Reply};
use ferrofab_testkit::prelude::*;
use serde_json::{json, Value};

const API_TOML: &str = "[http_api]\nlisten = \"127.0.0.1:0\"\nmax_body_bytes = 65536\nmax_page_size = 50\nmax_watches = 4\n";

async fn setup() -> (Controller, Admin, HttpClient) {
    let (ctl, admin) = Controller::with_basic_layout(Options {
        extra_toml: API_TOML.into(),
        ..Options::default()
    })
    .await;
    assert!(!ctl.api.is_empty(), "ready line has no api= address");
    let http = client(&ctl, Auth::Cert(ctl.pki.client("admin")));
    (ctl, admin, http)
}

fn client(ctl: &Controller, auth: Auth) -> HttpClient {
    HttpClient::new(&ctl.api, &ctl.pki.ca_cert, auth)
}

async fn token(admin: &mut Admin, identity: &str, ttl: u32) -> (String, String) {
    let r = admin
        .create_api_token(CreateApiTokenRequest {
            identity: identity.into(),
            ttl_seconds: ttl,
            description: "test".into(),
        })
        .await
        .expect("token")
        .into_inner();
    (r.token, r.info.expect("info").id)
}

fn expect(r: &Reply, status: u16) {
    assert_eq!(r.status, status, "{:#}", r.body);
}

fn rv_of(v: &Value) -> u64 {
    v["metadata"]["resource_version"]
        .as_u64()
        .expect("resource_version")
}

#[tokio::test]
async fn every_route_with_a_client_certificate() {
    let (ctl, _admin, h) = setup().await;

    // Lists of every kind.
    for (kind, n) in [
        ("nodes", 2),
        ("pools", 1),
        ("tenants", 1),
        ("volumes", 0),
        ("attachments", 0),
    ] {
        let r = h.get(&format!("/v1/{kind}")).await;
        expect(&r, 200);
        assert_eq!(
            r.body["items"].as_array().expect("items").len(),
            n,
            "{kind}"
        );
        assert!(r.body["revision"].as_u64().expect("revision") > 0);
    }
    // Gets.
    expect(&h.get("/v1/nodes/s1").await, 200);
    let p = h.get("/v1/pools/p1").await;
    expect(&p, 200);
    assert_eq!(p.body["status"]["capacity_bytes"], json!(100u64 << 30));
    expect(&h.get("/v1/tenants/lab").await, 200);

    // Create a node, a volume and an attachment.
    let ws2 = json!({"metadata": {"name": "ws2"}, "spec": {"roles": ["NODE_ROLE_WORKSTATION"], "host_nqn": host_nqn("ws2")}});
    let r = h.post("/v1/nodes", &ws2).await;
    expect(&r, 201);
    assert_eq!(r.body["spec"]["roles"], json!(["NODE_ROLE_WORKSTATION"]));
    let r = h
        .patch(
            "/v1/tenants/lab",
            &json!({"spec": {"allowed_nodes": ["ws1", "ws2"]}}),
        )
        .await;
    expect(&r, 200);
    let vol = json!({"metadata": {"name": "v1", "labels": {"team": "vision"}},
                     "spec": {"tenant": "lab", "size": "4GiB", "pool": "p1"}});
    let r = h.post("/v1/volumes", &vol).await;
    expect(&r, 201);
    assert_eq!(r.body["status"]["pool"], "p1");
    assert_eq!(r.body["status"]["size_bytes"], json!(4u64 << 30));
    let r = h.post("/v1/volumes", &vol).await;
    expect(&r, 409);
    assert_eq!(r.body["error"]["code"], "ALREADY_EXISTS");
    let r = h
        .post(
            "/v1/attachments",
            &json!({"metadata": {"name": "a1"}, "spec": {"volume": "v1", "node": "ws1"}}),
        )
        .await;
    expect(&r, 201);
    expect(&h.get("/v1/attachments/a1").await, 200);

    // Label selectors and paging.
    h.post(
        "/v1/volumes",
        &json!({"metadata": {"name": "v2"}, "spec": {"tenant": "lab", "size": "1GiB", "pool": "p1"}}),
    )
    .await;
    let r = h.get("/v1/volumes?labelSelector=team%3Dvision").await;
    expect(&r, 200);
    assert_eq!(r.body["items"].as_array().expect("items").len(), 1);
    let page1 = h.get("/v1/volumes?limit=1").await;
    expect(&page1, 200);
    let token = page1.body["continue"]
        .as_str()
        .expect("continue")
        .to_string();
    assert!(!token.is_empty());
    let page2 = h
        .get(&format!("/v1/volumes?limit=1&continue={token}"))
        .await;
    expect(&page2, 200);
    assert_ne!(
        page1.body["items"][0]["metadata"]["name"],
        page2.body["items"][0]["metadata"]["name"]
    );
    let r = h.get("/v1/volumes?limit=51").await;
    expect(&r, 400);
    assert_eq!(r.body["error"]["field"], "limit");
    let r = h.get("/v1/volumes?bogus=1").await;
    expect(&r, 400);

    // PATCH with and without a precondition.
    let cur = h.get("/v1/volumes/v1").await.body;
    let r = h
        .patch(
            "/v1/volumes/v1",
            &json!({"metadata": {"labels": {"team": "x"}, "resource_version": rv_of(&cur)}}),
        )
        .await;
    expect(&r, 200);
    let r = h
        .patch(
            "/v1/volumes/v1",
            &json!({"metadata": {"labels": {"team": "y"}, "resource_version": rv_of(&cur)}}),
        )
        .await;
    expect(&r, 409);
    assert_eq!(r.body["error"]["code"], "ABORTED");
    assert!(
        r.message().contains("modified concurrently"),
        "{}",
        r.message()
    );
    let r = h
        .patch("/v1/volumes/v1", &json!({"spec": {"size": "nonsense"}}))
        .await;
    expect(&r, 400);
    assert_eq!(r.body["error"]["field"], "spec.size");
    let r = h
        .patch("/v1/volumes/v1", &json!({"status": {"phase": "NOPE"}}))
        .await;
    expect(&r, 400);
    assert_eq!(r.body["error"]["field"], "status.phase");

    // Sub-resources.
    let r = h
        .post("/v1/volumes/v1/resize", &json!({"size": "8GiB"}))
        .await;
    expect(&r, 200);
    assert_eq!(r.body["status"]["size_bytes"], json!(8u64 << 30));
    let r = h
        .post("/v1/volumes/v1/resize", &json!({"size": "1GiB"}))
        .await;
    expect(&r, 422);
    assert!(r.message().contains("only grow"), "{}", r.message());
    let r = h.post("/v1/volumes/v1/extend", &json!({"by": "7d"})).await;
    expect(&r, 422);
    assert!(r.message().contains("no expiry"), "{}", r.message());
    let r = h
        .patch(
            "/v1/volumes/v2",
            &json!({"spec": {"expires_at": "2099-01-01T00:00:00Z"}}),
        )
        .await;
    expect(&r, 200);
    let r = h.post("/v1/volumes/v2/extend", &json!({"by": "1d"})).await;
    expect(&r, 200);
    assert_eq!(r.body["spec"]["expires_at"], "2099-01-02T00:00:00Z");
    let r = h.post("/v1/volumes/v1/move", &json!({"to": "ws2"})).await;
    expect(&r, 200);
    assert_eq!(r.body["spec"]["node"], "ws2");
    let r = h.post("/v1/volumes/v2/move", &json!({"to": "ws2"})).await;
    expect(&r, 422);

    // Deletes, with a stale precondition first.
    let r = h.delete("/v1/volumes/v2?resourceVersion=1").await;
    expect(&r, 409);
    expect(&h.delete("/v1/volumes/v2").await, 200);
    let r = h.get("/v1/volumes/v2").await;
    expect(&r, 404);
    assert_eq!(r.body["error"]["code"], "NOT_FOUND");

    // Limits and odds.
    let big = json!({"metadata": {"name": "big", "annotations": {"x": "y".repeat(70_000)}}});
    // The server answers 413 without reading the rest, and may close the
    // connection before the client has written it all: retry until the
    // answer is read.
    let mut too_large = None;
    for _ in 0..20 {
        if let Ok(r) = h.try_call("POST", "/v1/volumes", Some(&big)).await {
            too_large = Some(r);
            break;
        }
    }
    expect(&too_large.expect("an answer to the oversized body"), 413);
    // A body must be declared JSON (no cross-site form can send one).
    let form = h
        .raw(
            "POST",
            "/v1/volumes",
            "text/plain",
            r#"{"metadata":{"name":"csrf"},"spec":{"tenant":"lab","size":"1GiB","pool":"p1"}}"#,
        )
        .await;
    expect(&form, 415);
    expect(&h.get("/v1/volumes/csrf").await, 404);
    let r = h.get("/v1/nope").await;
    expect(&r, 404);
    let anon = client(&ctl, Auth::None);
    let r = anon.get("/v1/volumes").await;
    expect(&r, 401);
    assert_eq!(r.body["error"]["code"], "UNAUTHENTICATED");
    // Events: the store's history (what `ferrofab events` shows), recorded
    // by the controller's deriver shortly after each change.
    let mut items = Vec::new();
    for _ in 0..100 {
        let r = h.get("/v1/events?limit=3").await;
        expect(&r, 200);
        items = r.body["items"].as_array().cloned().unwrap_or_default();
        if !items.is_empty() {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(!items.is_empty() && items.len() <= 3, "{items:?}");
    assert!(
        items
            .iter()
            .all(|e| e["object"]["kind"].is_string() && e["reason"].is_string()),
        "{items:?}"
    );
    assert_eq!(h.get("/v1/whoami").await.body["features"]["events"], true);
    let ui = anon.call("GET", "/ui", None).await;
    expect(&ui, 200);
    let doc = anon.get("/v1/openapi.json").await;
    expect(&doc, 200);
    assert_eq!(doc.body["openapi"], "3.1.0");
}

#[tokio::test]
async fn tokens_bind_an_identity_and_a_tenant_sees_only_its_own() {
    let (ctl, mut admin, h) = setup().await;
    admin
        .create(tenant("other", "", 0, &["ws1"]))
        .await
        .expect("other");
    admin
        .create(volume("mine", "lab", "1GiB", "p1"))
        .await
        .expect("mine");
    admin
        .create(volume("theirs", "other", "1GiB", "p1"))
        .await
        .expect("theirs");

    let (lab_token, lab_id) = token(&mut admin, "tenant:lab", 0).await;
    let lab = client(&ctl, Auth::Token(lab_token.clone()));
    assert_eq!(lab.get("/v1/whoami").await.body["identity"], "tenant:lab");
    let r = lab.get("/v1/volumes").await;
    expect(&r, 200);
    let names: Vec<&str> = r.body["items"]
        .as_array()
        .expect("items")
        .iter()
        .filter_map(|v| v["metadata"]["name"].as_str())
        .collect();
    assert_eq!(names, vec!["mine"]);
    // Another tenant's object is missing, whatever the verb.
    let hidden = lab.get("/v1/volumes/theirs").await;
    expect(&hidden, 404);
    let missing = lab.get("/v1/volumes/no-such").await;
    assert_eq!(
        hidden.message().replace("theirs", "X"),
        missing.message().replace("no-such", "X"),
        "a hidden object reads as a missing one"
    );
    expect(
        &lab.patch(
            "/v1/volumes/theirs",
            &json!({"metadata": {"labels": {"a": "b"}}}),
        )
        .await,
        404,
    );
    expect(&lab.delete("/v1/volumes/theirs").await, 404);
    expect(
        &lab.post("/v1/volumes/theirs/resize", &json!({"size": "2GiB"}))
            .await,
        404,
    );
    expect(&lab.get("/v1/tenants/other").await, 404);
    let r = lab
        .post(
            "/v1/volumes",
            &json!({"metadata": {"name": "sneaky"}, "spec": {"tenant": "other", "size": "1GiB", "pool": "p1"}}),
        )
        .await;
    expect(&r, 403);
    assert_eq!(r.body["error"]["code"], "PERMISSION_DENIED");
    // Pools are admins' only.
    expect(&lab.get("/v1/pools").await, 403);
    // Its own volume it may change.
    expect(
        &lab.post("/v1/volumes/mine/resize", &json!({"size": "2GiB"}))
            .await,
        200,
    );

    // The admin token sees everything; the list of tokens holds no secret.
    let (admin_token, _) = token(&mut admin, "admin", 0).await;
    let r = client(&ctl, Auth::Token(admin_token))
        .get("/v1/volumes")
        .await;
    assert_eq!(r.body["items"].as_array().expect("items").len(), 2);
    let list = admin
        .list_api_tokens(ListApiTokensRequest {})
        .await
        .expect("list")
        .into_inner();
    assert_eq!(list.items.len(), 2);
    let secret = lab_token.rsplit('.').next().expect("secret");
    assert!(!format!("{list:?}").contains(secret));
    let store = std::fs::read(ctl.dir.join("store.redb")).expect("store");
    assert!(
        !store.windows(secret.len()).any(|w| w == secret.as_bytes()),
        "the store holds the token itself"
    );

    // Revoked: 401 from the next request on.
    admin
        .revoke_api_token(RevokeApiTokenRequest { id: lab_id })
        .await
        .expect("revoke");
    let r = lab.get("/v1/volumes").await;
    expect(&r, 401);
    assert!(r.message().contains("not valid"), "{}", r.message());
    // Expired: 401.
    let (short, _) = token(&mut admin, "tenant:lab", 1).await;
    tokio::time::sleep(Duration::from_millis(2100)).await;
    expect(
        &client(&ctl, Auth::Token(short)).get("/v1/volumes").await,
        401,
    );
    // Garbage: 401.
    expect(
        &client(&ctl, Auth::Token("ffapi1.x.y".into()))
            .get("/v1/volumes")
            .await,
        401,
    );
    // Only admin and existing tenants may be bound; only admins mint.
    let e = admin
        .create_api_token(CreateApiTokenRequest {
            identity: "node:ws1".into(),
            ..Default::default()
        })
        .await
        .expect_err("node");
    assert_eq!(e.code(), tonic::Code::InvalidArgument);
    let e = admin
        .create_api_token(CreateApiTokenRequest {
            identity: "tenant:ghost".into(),
            ..Default::default()
        })
        .await
        .expect_err("ghost");
    assert!(e.message().contains("ghost"), "{}", e.message());
    let mut t = ctl.admin_as("tenant:lab").await;
    let e = t
        .create_api_token(CreateApiTokenRequest {
            identity: "tenant:lab".into(),
            ..Default::default()
        })
        .await
        .expect_err("tenant mints");
    assert_eq!(e.code(), tonic::Code::PermissionDenied);
    drop(h);
}

#[tokio::test]
async fn watch_streams_changes_and_resumes_from_a_revision() {
    let (_ctl, mut admin, h) = setup().await;
    admin
        .create(volume("w1", "lab", "1GiB", "p1"))
        .await
        .expect("w1");
    let limit = Duration::from_secs(10);
    let (status, evs) = h
        .watch("/v1/volumes?watch=true", &[], limit, |e| {
            e.iter().any(|e| e.event == "SYNCED")
        })
        .await;
    assert_eq!(status, 200);
    assert_eq!(evs[0].event, "ADDED");
    assert_eq!(evs[0].data["object"]["metadata"]["name"], "w1");
    let synced = evs.last().expect("synced").id.clone();

    // Changes made while nobody watched come on resume, with Last-Event-ID
    // (what a browser's EventSource sends) or resourceVersion.
    admin
        .create(volume("w2", "lab", "1GiB", "p1"))
        .await
        .expect("w2");
    admin.delete::<Volume>("w1").await.expect("delete w1");
    let done = |e: &[ferrofab_testkit::http::SseEvent]| e.len() >= 2;
    let (_, evs) = h
        .watch(
            "/v1/volumes?watch=true",
            &[("last-event-id", &synced)],
            limit,
            done,
        )
        .await;
    assert_eq!(evs[0].event, "ADDED");
    assert_eq!(evs[0].data["object"]["metadata"]["name"], "w2");
    assert_eq!(evs[1].event, "DELETED");
    assert_eq!(evs[1].data["object"]["metadata"]["name"], "w1");
    let (_, again) = h
        .watch(
            &format!("/v1/volumes?watch=true&resourceVersion={synced}"),
            &[],
            limit,
            done,
        )
        .await;
    assert_eq!(again[0].data, evs[0].data);
    // Resuming from an event's id sends that event again (at least once).
    let (_, from_w2) = h
        .watch(
            "/v1/volumes?watch=true",
            &[("last-event-id", &evs[0].id)],
            limit,
            done,
        )
        .await;
    assert_eq!(from_w2[0].data, evs[0].data);
    let r = h.get("/v1/volumes?watch=true&resourceVersion=x").await;
    expect(&r, 400);
}

#[tokio::test]
async fn grpc_and_http_give_the_same_objects_and_errors() {
    let (ctl, mut admin, h) = setup().await;
    let mut lab = admin.get::<Tenant>("lab").await.expect("lab");
    lab.spec.as_mut().expect("spec").capacity_quota = "10GiB".into();
    admin.update(lab).await.expect("quota");

    // The same create both ways: the objects differ only in what the
    // controller mints (uid, NVMe identity, times).
    let g = admin
        .create(volume("g", "lab", "2GiB", "p1"))
        .await
        .expect("grpc create");
    let r = h
        .post("/v1/volumes", &json!({"metadata": {"name": "j"}, "spec": {"tenant": "lab", "size": "2GiB", "pool": "p1"}}))
        .await;
    expect(&r, 201);
    let j: Volume = serde_json::from_value(r.body).expect("decode");
    assert_eq!(g.spec, j.spec);
    let (gs, js) = (g.status.clone().expect("g"), j.status.clone().expect("j"));
    assert_eq!(
        (gs.pool, gs.node, gs.size_bytes, gs.phase),
        (js.pool, js.node, js.size_bytes, js.phase)
    );
    // A get through HTTP is the gRPC object, field for field.
    let via_http: Volume =
        serde_json::from_value(h.get("/v1/volumes/g").await.body).expect("decode");
    assert_eq!(via_http, admin.get::<Volume>("g").await.expect("get"));
    let via_http: Pool = serde_json::from_value(h.get("/v1/pools/p1").await.body).expect("decode");
    assert_eq!(via_http, admin.get::<Pool>("p1").await.expect("get"));

    // The same refusals: message, code and field.
    let cases: Vec<(Volume, u16, &str)> = vec![
        (volume("bad", "lab", "lots", "p1"), 400, "INVALID_ARGUMENT"),
        (
            volume("big", "lab", "9GiB", "p1"),
            429,
            "RESOURCE_EXHAUSTED",
        ),
        (volume("g", "lab", "1GiB", "p1"), 409, "ALREADY_EXISTS"),
        (volume("nopool", "lab", "1GiB", "p9"), 0, ""),
        (volume("ghost", "nobody", "1GiB", "p1"), 0, ""),
    ];
    for (v, status, code) in cases {
        let e = admin.create(v.clone()).await.expect_err("grpc refuses");
        let r = h
            .post("/v1/volumes", &serde_json::to_value(&v).expect("json"))
            .await;
        assert_eq!(r.message(), e.message(), "same message");
        assert_eq!(
            r.body["error"]["code"],
            ferrofab_controller::api::grpc_code_name_of(e.code())
        );
        if status != 0 {
            assert_eq!(r.status, status, "{:#}", r.body);
            assert_eq!(r.body["error"]["code"], code);
        }
    }
    let e = admin
        .create(volume("bad", "lab", "lots", "p1"))
        .await
        .expect_err("bad");
    assert!(e.message().contains("spec.size"), "{}", e.message());
    let r = h
        .post(
            "/v1/volumes",
            &serde_json::to_value(volume("bad", "lab", "lots", "p1")).expect("json"),
        )
        .await;
    assert_eq!(r.body["error"]["field"], "spec.size");

    // A tenant's view: the same hidden-object answer both ways.
    admin
        .create(tenant("other", "", 0, &[]))
        .await
        .expect("other");
    admin
        .create(volume("o", "other", "1GiB", "p1"))
        .await
        .expect("o");
    let (t, _) = token(&mut admin, "tenant:lab", 0).await;
    let r = client(&ctl, Auth::Token(t)).get("/v1/volumes/o").await;
    let e = ctl
        .admin_as("tenant:lab")
        .await
        .get_volume(GetVolumeRequest { name: "o".into() })
        .await
        .expect_err("hidden");
    assert_eq!(r.status, 404);
    assert_eq!(r.message(), e.message());
}
