//! Control-plane scale: 1,000 volumes, each attached to one of 50
//! simulated workstations, placed on 5 simulated storage nodes, all
//! created by ONE Apply. `cargo bench -p ferrofab-controller --bench scale`
//! prints `bench: NAME value unit` lines (tests/suites/bench_agent.sh puts
//! them in docs/benchmarks.md).
//!
//! The simulated agents are tasks in this process speaking the real agent
//! protocol to the built controller binary over mTLS (WatchDesiredState,
//! ReportStatus, with their own `node:` certificates) and no data path: a
//! storage node reports every desired export ready, a workstation every
//! desired connection connected, each right after the snapshot arrives
//! (and again every 5 s, like a real agent's heartbeat).
//!
//! * baseline, same run: the same Apply on a controller nobody watches
//!   (the store and planner cost alone);
//! * converge: from the Apply call until the API shows every attachment
//!   Attached, with the simulated agents in the loop.
//!
//! FERROFAB_BENCH_SCALE_VOLUMES overrides the 1,000 volumes (quick runs),
//! FERROFAB_BENCH_SCALE_ROUNDS the 3 rounds (medians are reported).

mod support;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use ferrofab_proto::v1::agent_service_client::AgentServiceClient;
use ferrofab_proto::v1::*;
use ferrofab_testkit::prelude::*;
use futures::FutureExt;
use support::{env_count, measuring, observe, report, rss_mb};
use tokio_stream::StreamExt;
use tonic::transport::Channel;

const STORAGE_NODES: usize = 5;
const WORKSTATIONS: usize = 50;
const HEARTBEAT: Duration = Duration::from_secs(5);

fn storage_name(i: usize) -> String {
    format!("s{i}")
}

fn ws_name(i: usize) -> String {
    format!("ws{i}")
}

/// Tenant, nodes and one pool per storage node (typed RPCs, not timed).
async fn setup(ctl: &Controller) {
    let mut c = ctl.admin().await;
    let ws: Vec<String> = (0..WORKSTATIONS).map(ws_name).collect();
    let ws_refs: Vec<&str> = ws.iter().map(String::as_str).collect();
    c.create(tenant("lab", "", 0, &ws_refs))
        .await
        .expect("tenant");
    for i in 0..STORAGE_NODES {
        let s = storage_name(i);
        c.create(storage_node(&s, 4420 + i as u32))
            .await
            .expect("storage node");
        let mut p = pool(&format!("p{i}"), &s, "1PiB", &[]);
        p.spec.as_mut().expect("spec").namespace_limit = 100_000;
        c.create(p).await.expect("pool");
    }
    for w in &ws {
        c.create(workstation(w)).await.expect("workstation");
    }
}

/// The layout of the Apply: volume i in pool i % 5, attached to ws i % 50.
fn layout(n: usize) -> Layout {
    Layout {
        volumes: (0..n)
            .map(|i| {
                volume(
                    &format!("v{i}"),
                    "lab",
                    "1GiB",
                    &format!("p{}", i % STORAGE_NODES),
                )
            })
            .collect(),
        attachments: (0..n)
            .map(|i| {
                attachment(
                    &format!("a{i}"),
                    &format!("v{i}"),
                    &ws_name(i % WORKSTATIONS),
                )
            })
            .collect(),
        ..Default::default()
    }
}

async fn apply(ctl: &Controller, n: usize) -> Duration {
    let t0 = Instant::now();
    ctl.admin()
        .await
        .apply(ApplyRequest {
            layout: Some(layout(n)),
            dry_run: false,
            prune: false,
            prune_nodes: false,
        })
        .await
        .expect("apply");
    t0.elapsed()
}

/// One simulated agent: watch, report what it "applied", heartbeat.
/// Snapshots that queued up while it was reporting are coalesced into the
/// newest (level-triggered, as the real agent).
async fn simulated_agent(ctl: &Controller, node: String) -> tokio::task::JoinHandle<u64> {
    let mut client: AgentServiceClient<Channel> = ctl.agent_as(&format!("node:{node}")).await;
    let mut stream = client
        .watch_desired_state(WatchDesiredStateRequest {
            node: node.clone(),
            ..Default::default()
        })
        .await
        .expect("watch desired state")
        .into_inner();
    tokio::spawn(async move {
        let mut reports = 0u64;
        let mut last = DesiredState::default();
        loop {
            let next = tokio::time::timeout(HEARTBEAT, stream.next()).await;
            match next {
                Ok(Some(Ok(mut ds))) => {
                    while let Some(Some(Ok(newer))) = stream.next().now_or_never() {
                        ds = newer;
                    }
                    last = ds;
                }
                Ok(_) => return reports,
                Err(_) => {} // heartbeat
            }
            if client.report_status(observe(&node, &last)).await.is_err() {
                return reports;
            }
            reports += 1;
        }
    })
}

/// Waits until `n` attachments are Attached; returns when, and when every
/// volume was Ready on the way.
async fn wait_converged(ctl: &Controller, n: usize, t0: Instant) -> (Duration, Duration) {
    let mut c = ctl.admin().await;
    let mut attachments = c
        .watch_attachments(WatchRequest::default())
        .await
        .expect("watch attachments")
        .into_inner();
    let mut vols = c
        .watch_volumes(WatchRequest::default())
        .await
        .expect("watch volumes")
        .into_inner();
    let mut attached: HashMap<String, bool> = HashMap::new();
    let mut ready: HashMap<String, bool> = HashMap::new();
    let mut volumes_ready_at = None;
    loop {
        tokio::select! {
            ev = attachments.next() => {
                let ev = ev.expect("attachment watch open").expect("attachment event");
                if let Some(watch_event::Object::Attachment(a)) = ev.object {
                    let ok = a.status.as_ref().is_some_and(|s| s.phase == AttachmentPhase::Attached as i32);
                    attached.insert(a.metadata.unwrap_or_default().name, ok);
                }
            }
            ev = vols.next(), if volumes_ready_at.is_none() => {
                let ev = ev.expect("volume watch open").expect("volume event");
                if let Some(watch_event::Object::Volume(v)) = ev.object {
                    let ok = v.status.as_ref().is_some_and(|s| s.phase == VolumePhase::Ready as i32);
                    ready.insert(v.metadata.unwrap_or_default().name, ok);
                }
                if ready.values().filter(|r| **r).count() == n {
                    volumes_ready_at = Some(t0.elapsed());
                }
            }
        }
        if attached.values().filter(|a| **a).count() == n {
            let all = t0.elapsed();
            return (volumes_ready_at.unwrap_or(all), all);
        }
    }
}

/// One round: the baseline Apply on a fresh controller nobody watches,
/// then the converge run on another fresh controller with the simulated
/// agents. Returns (baseline, apply with agents, volumes ready, converged,
/// controller RSS MB, reports sent).
async fn round(n: usize) -> [f64; 6] {
    let base = {
        let ctl = Controller::start();
        setup(&ctl).await;
        apply(&ctl, n).await
    };
    let ctl = Controller::start();
    setup(&ctl).await;
    let mut agents = Vec::new();
    for i in 0..STORAGE_NODES {
        agents.push(simulated_agent(&ctl, storage_name(i)).await);
    }
    for i in 0..WORKSTATIONS {
        agents.push(simulated_agent(&ctl, ws_name(i)).await);
    }
    let t0 = Instant::now();
    let (applied, (volumes_ready, converged)) =
        tokio::join!(apply(&ctl, n), wait_converged(&ctl, n, t0));
    let rss = ctl.pid().map_or(0.0, rss_mb);
    drop(ctl);
    let mut reports = 0;
    for a in agents {
        reports += a.await.unwrap_or(0);
    }
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    [
        ms(base),
        ms(applied),
        ms(volumes_ready),
        ms(converged),
        rss,
        reports as f64,
    ]
}

fn median(mut xs: Vec<f64>) -> f64 {
    xs.sort_by(f64::total_cmp);
    xs[xs.len() / 2]
}

/// Rounds alternate baseline and converge runs (the VMs' speed drifts);
/// medians are reported.
async fn run() {
    let n = env_count("FERROFAB_BENCH_SCALE_VOLUMES", 1000);
    let rounds = env_count("FERROFAB_BENCH_SCALE_ROUNDS", 3).max(1);
    let mut results = Vec::new();
    for r in 0..rounds {
        let x = round(n).await;
        eprintln!(
            "scale round {}: apply alone {:.0} ms, converged {:.0} ms",
            r + 1,
            x[0],
            x[3]
        );
        results.push(x);
    }
    let col = |i: usize| median(results.iter().map(|x| x[i]).collect());
    report("scale_apply_no_agents", col(0), "ms");
    report("scale_apply_with_agents", col(1), "ms");
    report("scale_volumes_ready", col(2), "ms");
    report("scale_converged", col(3), "ms");
    report(
        "scale_converged_vs_apply_no_agents",
        col(3) / col(0).max(1e-9),
        "x",
    );
    report("scale_controller_rss", col(4), "MB");
    report("scale_agent_reports", col(5), "count");
}

fn main() {
    if !measuring() {
        return;
    }
    let rt = tokio::runtime::Runtime::new().expect("runtime");
    rt.block_on(run());
}
