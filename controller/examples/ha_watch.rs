//! The `ha` suite's history recorder: watches volumes through whichever
//! controller replica answers, resuming after a replica dies from the last
//! revision it printed, and prints one JSON line per event
//! (`{"type","revision","name","rv","uid"}`; `{"type":"RESUMED","from":N,
//! "endpoint":...}` at every (re)connect). The suite's checker reads the
//! lines afterwards (tests/suites/ha_checks.py).
//!
//! `cargo run --example ha_watch -- CA CERT KEY ENDPOINT...`

use std::io::Write;
use std::time::Duration;

use ferrofab_proto::client::TlsPem;
use ferrofab_proto::v1::{watch_event, EventType, WatchRequest};

fn read(p: &str) -> Vec<u8> {
    std::fs::read(p).unwrap_or_else(|e| {
        eprintln!("ha_watch: cannot read {p}: {e}");
        std::process::exit(2)
    })
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.len() < 4 {
        eprintln!("usage: ha_watch CA CERT KEY ENDPOINT...");
        std::process::exit(2);
    }
    let tls = TlsPem {
        ca: read(&args[0]),
        cert: read(&args[1]),
        key: read(&args[2]),
        server_name: None,
    };
    let endpoints: Vec<String> = args[3..].to_vec();
    let mut last = 0u64;
    let out = std::io::stdout();
    loop {
        let mut admin = match ferrofab_proto::client::connect(&endpoints, Some(&tls), None).await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let stream = admin
            .watch_volumes(WatchRequest {
                from_revision: last,
                ..Default::default()
            })
            .await;
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::OutOfRange => {
                // History gone: start over with a snapshot.
                last = 0;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let _ = writeln!(
            out.lock(),
            "{}",
            serde_json::json!({"type": "RESUMED", "from": last})
        );
        while let Ok(Some(ev)) = stream.message().await {
            let kind = EventType::try_from(ev.r#type).unwrap_or(EventType::Unspecified);
            let Some(watch_event::Object::Volume(v)) = ev.object else {
                continue;
            };
            let m = v.metadata.unwrap_or_default();
            let line = serde_json::json!({
                "type": kind.as_str_name(),
                "revision": ev.revision,
                "name": m.name,
                "rv": m.resource_version,
                "uid": m.uid,
            });
            let mut o = out.lock();
            let _ = writeln!(o, "{line}");
            let _ = o.flush();
            last = last.max(ev.revision);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
