//! The `ha` suite's history recorder: watches volumes and attachments
//! through whichever controller replica answers, resuming after a replica
//! dies from the last revision it printed, and prints one JSON line per
//! event (`{"type","kind","revision","name","rv","uid"}`;
//! `{"type":"RESUMED","kind","from":N}` at every (re)connect). The suite's checker reads the
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

/// The kinds the recorder follows, each on a stream of its own.
#[derive(Clone, Copy)]
enum Kind {
    Volume,
    Attachment,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Volume => "volume",
            Kind::Attachment => "attachment",
        }
    }
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
    let volumes = tokio::spawn(follow(Kind::Volume, endpoints.clone(), tls.clone()));
    follow(Kind::Attachment, endpoints, tls).await;
    let _ = volumes.await;
}

/// One metadata line of the history.
fn emit(line: serde_json::Value) {
    let out = std::io::stdout();
    let mut o = out.lock();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

/// Watches `kind` forever through whichever endpoint answers, resuming
/// from the last revision it printed.
async fn follow(kind: Kind, endpoints: Vec<String>, tls: TlsPem) {
    let mut last = 0u64;
    loop {
        let mut admin = match ferrofab_proto::client::connect(&endpoints, Some(&tls), None).await {
            Ok(a) => a,
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        let req = WatchRequest {
            from_revision: last,
            ..Default::default()
        };
        let stream = match kind {
            Kind::Volume => admin.watch_volumes(req).await,
            Kind::Attachment => admin.watch_attachments(req).await,
        };
        let mut stream = match stream {
            Ok(s) => s.into_inner(),
            Err(s) if s.code() == tonic::Code::OutOfRange => {
                // History gone: start over with a snapshot (the checker
                // reports the gap this leaves).
                last = 0;
                continue;
            }
            Err(_) => {
                tokio::time::sleep(Duration::from_millis(200)).await;
                continue;
            }
        };
        emit(serde_json::json!({"type": "RESUMED", "kind": kind.name(), "from": last}));
        while let Ok(Some(ev)) = stream.message().await {
            let ev_type = EventType::try_from(ev.r#type).unwrap_or(EventType::Unspecified);
            let m = match ev.object {
                Some(watch_event::Object::Volume(v)) => v.metadata,
                Some(watch_event::Object::Attachment(a)) => a.metadata,
                _ => None,
            };
            if ev_type == EventType::Synced {
                emit(
                    serde_json::json!({"type": ev_type.as_str_name(), "kind": kind.name(),
                                        "revision": ev.revision}),
                );
            } else if let Some(m) = m {
                emit(serde_json::json!({
                    "type": ev_type.as_str_name(),
                    "kind": kind.name(),
                    "revision": ev.revision,
                    "name": m.name,
                    "rv": m.resource_version,
                    "uid": m.uid,
                }));
            }
            last = last.max(ev.revision);
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
