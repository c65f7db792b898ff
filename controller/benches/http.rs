//! The HTTP/JSON API against the gRPC API in the same run, on the same
//! controller: p50/p99 latency of a list (100 volumes) and of a durable
//! create, one client, each over a kept-alive connection (a gRPC channel,
//! an HTTP/1.1 connection) and, for HTTP, with a client certificate and
//! with an API token, the three taking turns call by call.
//! `cargo bench -p ferrofab-controller --bench http`; prints `bench: NAME
//! VALUE UNIT` lines. FERROFAB_BENCH_HTTP_CALLS overrides the 500 lists,
//! FERROFAB_BENCH_HTTP_CREATES the 300 creates, per caller.

mod support;

use std::time::Instant;

use ferrofab_proto::v1::*;
use ferrofab_testkit::http::{Auth, HttpClient};
use ferrofab_testkit::prelude::*;
use hdrhistogram::Histogram;
use serde_json::json;
use support::{env_count, measuring, report};

const LISTED: usize = 100;

fn hist() -> Histogram<u64> {
    Histogram::new(3).expect("histogram")
}

fn print(name: &str, h: &Histogram<u64>) {
    report(
        &format!("{name}_p50"),
        h.value_at_quantile(0.5) as f64 / 1000.0,
        "ms",
    );
    report(
        &format!("{name}_p99"),
        h.value_at_quantile(0.99) as f64 / 1000.0,
        "ms",
    );
}

/// Pools the creates are spread over (a pool holds at most 256 volumes).
const POOLS: usize = 8;

fn body(name: &str, i: usize) -> serde_json::Value {
    json!({"metadata": {"name": name},
           "spec": {"tenant": "lab", "size": "1MiB", "pool": format!("p{}", 1 + i % POOLS)}})
}

async fn timed<T>(h: &mut Histogram<u64>, f: impl std::future::Future<Output = T>) -> T {
    let t = Instant::now();
    let out = f.await;
    h.record(t.elapsed().as_micros() as u64).expect("record");
    out
}

fn main() {
    if !measuring() {
        return;
    }
    let n = env_count("FERROFAB_BENCH_HTTP_CALLS", 500);
    let creates = env_count("FERROFAB_BENCH_HTTP_CREATES", 300);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (ctl, mut admin) = Controller::with_basic_layout(Options {
            extra_toml: "[http_api]\nlisten = \"127.0.0.1:0\"\n".into(),
            ..Options::default()
        })
        .await;
        for p in 2..=POOLS {
            admin
                .create(pool(&format!("p{p}"), "s1", "100GiB", &[]))
                .await
                .expect("pool");
        }
        for i in 0..LISTED {
            let v: Volume = serde_json::from_value(body(&format!("base-{i}"), i)).expect("volume");
            admin.create(v).await.expect("create");
        }
        let token = admin
            .create_api_token(CreateApiTokenRequest {
                identity: "admin".into(),
                ttl_seconds: 3600,
                description: "bench".into(),
            })
            .await
            .expect("token")
            .into_inner()
            .token;
        let cert = HttpClient::new(
            &ctl.api,
            &ctl.pki.ca_cert,
            Auth::Cert(ctl.pki.client("admin")),
        );
        let tok = HttpClient::new(&ctl.api, &ctl.pki.ca_cert, Auth::Token(token));
        let mut cert_s = cert.session().await;
        let mut tok_s = tok.session().await;

        // Warm-up, then the three callers in turn, call by call, so a
        // slower moment of the machine falls on all of them alike.
        for _ in 0..20 {
            admin
                .list_volumes(ListVolumesRequest::default())
                .await
                .expect("list");
            cert_s.call("GET", "/v1/volumes", None).await;
            tok_s.call("GET", "/v1/volumes", None).await;
        }
        let (mut g, mut c, mut t) = (hist(), hist(), hist());
        for _ in 0..n {
            let r = timed(&mut g, admin.list_volumes(ListVolumesRequest::default())).await;
            assert!(r.expect("list").into_inner().items.len() >= LISTED);
            assert_eq!(
                timed(&mut c, cert_s.call("GET", "/v1/volumes", None))
                    .await
                    .status,
                200
            );
            assert_eq!(
                timed(&mut t, tok_s.call("GET", "/v1/volumes", None))
                    .await
                    .status,
                200
            );
        }
        print("grpc_list_100", &g);
        print("http_list_100_cert", &c);
        print("http_list_100_token", &t);

        // Durable creates (each commits to the store before answering).
        let (mut g, mut c, mut t) = (hist(), hist(), hist());
        for i in 0..creates {
            let v: Volume = serde_json::from_value(body(&format!("g-{i}"), i)).expect("volume");
            timed(&mut g, admin.create(v)).await.expect("grpc create");
            let r = timed(
                &mut c,
                cert_s.call("POST", "/v1/volumes", Some(&body(&format!("c-{i}"), i))),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.body);
            let r = timed(
                &mut t,
                tok_s.call("POST", "/v1/volumes", Some(&body(&format!("t-{i}"), i))),
            )
            .await;
            assert_eq!(r.status, 201, "{}", r.body);
        }
        print("grpc_create", &g);
        print("http_create_cert", &c);
        print("http_create_token", &t);
        drop(ctl);
    });
}
