//! The HTTP/JSON API against the gRPC API in the same run, on the same
//! controller: p50/p99 latency of a list (100 volumes) and of a durable
//! create, one client, each over a kept-alive connection (a gRPC channel,
//! an HTTP/1.1 connection) and, for HTTP, with a client certificate and
//! with an API token. `cargo bench -p ferrofab-controller --bench http`;
//! prints `bench: NAME VALUE UNIT` lines. FERROFAB_BENCH_HTTP_CALLS
//! overrides the 500 calls per measurement.

mod support;

use std::time::Instant;

use ferrofab_proto::v1::*;
use ferrofab_testkit::http::{Auth, HttpClient, Session};
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

async fn http_list(s: &mut Session, n: usize) -> Histogram<u64> {
    let mut h = hist();
    for _ in 0..n {
        let t = Instant::now();
        let r = s.call("GET", "/v1/volumes", None).await;
        h.record(t.elapsed().as_micros() as u64).expect("record");
        assert_eq!(r.status, 200);
    }
    h
}

async fn http_create(s: &mut Session, n: usize, prefix: &str) -> Histogram<u64> {
    let mut h = hist();
    for i in 0..n {
        let body = json!({"metadata": {"name": format!("{prefix}-{i}")},
                          "spec": {"tenant": "lab", "size": "1MiB", "pool": "p1"}});
        let t = Instant::now();
        let r = s.call("POST", "/v1/volumes", Some(&body)).await;
        h.record(t.elapsed().as_micros() as u64).expect("record");
        assert_eq!(r.status, 201, "{}", r.body);
    }
    h
}

fn main() {
    if !measuring() {
        return;
    }
    let n = env_count("FERROFAB_BENCH_HTTP_CALLS", 500);
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(async {
        let (ctl, mut admin) = Controller::with_basic_layout(Options {
            extra_toml: "[http_api]\nlisten = \"127.0.0.1:0\"\n".into(),
            ..Options::default()
        })
        .await;
        for i in 0..LISTED {
            admin
                .create(volume(&format!("base-{i}"), "lab", "1MiB", "p1"))
                .await
                .expect("create");
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

        // Warm-up, then list: gRPC, HTTP (certificate), HTTP (token).
        let mut g = hist();
        for _ in 0..20 {
            admin
                .list_volumes(ListVolumesRequest::default())
                .await
                .expect("list");
            cert_s.call("GET", "/v1/volumes", None).await;
            tok_s.call("GET", "/v1/volumes", None).await;
        }
        for _ in 0..n {
            let t = Instant::now();
            let r = admin
                .list_volumes(ListVolumesRequest::default())
                .await
                .expect("list")
                .into_inner();
            g.record(t.elapsed().as_micros() as u64).expect("record");
            assert!(r.items.len() >= LISTED);
        }
        print("grpc_list_100", &g);
        print("http_list_100_cert", &http_list(&mut cert_s, n).await);
        print("http_list_100_token", &http_list(&mut tok_s, n).await);

        // Durable creates (each commits to the store before answering).
        let mut g = hist();
        for i in 0..n {
            let t = Instant::now();
            admin
                .create(volume(&format!("g-{i}"), "lab", "1MiB", "p1"))
                .await
                .expect("create");
            g.record(t.elapsed().as_micros() as u64).expect("record");
        }
        print("grpc_create", &g);
        print("http_create_cert", &http_create(&mut cert_s, n, "hc").await);
        print("http_create_token", &http_create(&mut tok_s, n, "ht").await);
        drop(ctl);
    });
}
