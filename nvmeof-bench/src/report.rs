//! Human-readable tables for benchmark results. JSON output is the serde
//! form of the same structs; its field names are part of the interface.

use std::fmt::Write as _;

use serde::Serialize;

use super::baseline::BaselineReport;
use super::engine::JobReport;
use super::stats::OpSummary;
use super::workload::Pattern;

/// A job next to the loopback test that bounds it, from the same run.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Comparison {
    /// The baseline test compared against (median over its rounds).
    pub baseline_test: String,
    /// Job ops/s divided by baseline ops/s (for 128 KiB and up: MB/s).
    pub throughput_ratio: f64,
    /// Job p50 latency divided by baseline p50 (0 when either is missing).
    pub p50_ratio: f64,
}

/// Pick the loopback test that is the physical limit for `job`: the same
/// direction and size class, QD1 against the sleeping-ends round trip
/// (what a kernel host sees), deeper queues against the pipelined QD32 on
/// one connection, 128 KiB and up against the pipelined 128 KiB QD8 echo
/// (the one-way stream when a report has no such test).
pub fn compare(job: &JobReport, base: &BaselineReport) -> Option<Comparison> {
    let p = &job.params;
    let reads = match p.pattern {
        Pattern::Randread | Pattern::Read => true,
        Pattern::Randwrite | Pattern::Write => false,
        Pattern::Mixed => p.rwmixread >= 50,
    };
    let rw = if reads { "read" } else { "write" };
    let large = format!("qd8_{rw}_128k");
    let (name, by_bytes) = if p.block_size >= 128 * 1024 {
        if base.results.iter().any(|r| r.name == large) {
            (large, true)
        } else {
            ("stream_128k".to_string(), true)
        }
    } else if p.queue_depth * p.queues <= 1 {
        (format!("qd1_{rw}_blocking"), false)
    } else {
        (format!("qd32_{rw}"), false)
    };
    let rows: Vec<&OpSummary> = base
        .results
        .iter()
        .filter(|r| r.name == name)
        .map(|r| &r.result)
        .collect();
    if rows.is_empty() {
        return None;
    }
    let median = |f: &dyn Fn(&OpSummary) -> f64| {
        let mut v: Vec<f64> = rows.iter().map(|r| f(r)).collect();
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let ratio = |a: f64, b: f64| if a > 0.0 && b > 0.0 { a / b } else { 0.0 };
    let throughput_ratio = if by_bytes {
        ratio(job.total.mb_per_s, median(&|r| r.mb_per_s))
    } else {
        ratio(job.total.ops_per_s, median(&|r| r.ops_per_s))
    };
    Some(Comparison {
        baseline_test: name,
        throughput_ratio,
        p50_ratio: ratio(job.total.latency.p50_us, median(&|r| r.latency.p50_us)),
    })
}

/// One line for the human output.
pub fn comparison_line(c: &Comparison) -> String {
    let p50 = if c.p50_ratio > 0.0 {
        format!(", p50 {:.2}x", c.p50_ratio)
    } else {
        String::new()
    };
    format!(
        "vs loopback {}: {:.0}% of its throughput{p50}\n",
        c.baseline_test,
        c.throughput_ratio * 100.0
    )
}

const LAT_HEADER: &str = "p50(us)   p99(us) p99.9(us)   max(us)";

fn lat_cols(s: &OpSummary) -> String {
    let l = &s.latency;
    format!(
        "{:>9.1} {:>9.1} {:>9.1} {:>9.1}",
        l.p50_us, l.p99_us, l.p999_us, l.max_us
    )
}

/// Table for a workload run.
pub fn job_table(r: &JobReport) -> String {
    let p = &r.params;
    let mut out = String::new();
    let limit = match p.limit {
        super::workload::Limit::Time(d) => format!("{:.1}s", d.as_secs_f64()),
        super::workload::Limit::Bytes(b) => format!("{b} bytes"),
    };
    let _ = writeln!(
        out,
        "target {}  pattern {}  bs {}  qd {}  queues {}  workers {}  limit {}  elapsed {:.2}s",
        r.target,
        format!("{:?}", p.pattern).to_lowercase(),
        p.block_size,
        p.queue_depth,
        p.queues,
        r.workers,
        limit,
        r.elapsed_s
    );
    let _ = writeln!(
        out,
        "{:<6} {:>10} {:>12} {:>10} {LAT_HEADER}",
        "op", "ops", "IOPS", "MB/s"
    );
    for (name, s) in [("read", &r.read), ("write", &r.write), ("total", &r.total)] {
        if s.ops == 0 && name != "total" {
            continue;
        }
        let _ = writeln!(
            out,
            "{name:<6} {:>10} {:>12.0} {:>10.1} {}",
            s.ops,
            s.ops_per_s,
            s.mb_per_s,
            lat_cols(s)
        );
    }
    let _ = writeln!(
        out,
        "cpu: user {:.2}s sys {:.2}s, {:.2} us per I/O",
        r.cpu.user_s, r.cpu.sys_s, r.cpu.per_op_us
    );
    if let Some(v) = &r.verify {
        match &v.first_bad {
            None => {
                let _ = writeln!(out, "verify: OK, {} blocks checked", v.blocks_checked);
            }
            Some(b) => {
                let _ = writeln!(
                    out,
                    "verify: FAILED, {} of {} blocks bad; first bad offset {}: {}",
                    v.failures, v.blocks_checked, b.offset, b.mismatch
                );
            }
        }
    }
    out
}

/// Table for the loopback baseline.
pub fn baseline_table(r: &BaselineReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "loopback TCP baseline: {:.1}s per test, {} round(s), ends {}",
        r.params.duration.as_secs_f64(),
        r.params.rounds,
        if r.pinned {
            "pinned to different CPUs"
        } else {
            "not pinned"
        }
    );
    let _ = writeln!(
        out,
        "{:<22} {:>5} {:>12} {:>10} {LAT_HEADER} {:>11}",
        "test", "round", "ops/s", "MB/s", "cpu us/op"
    );
    for x in &r.results {
        let lat = if x.result.latency.max_us > 0.0 {
            lat_cols(&x.result)
        } else {
            format!("{:>39}", "-")
        };
        let _ = writeln!(
            out,
            "{:<22} {:>5} {:>12.0} {:>10.1} {lat} {:>11.2}",
            x.name, x.round, x.result.ops_per_s, x.result.mb_per_s, x.cpu.per_op_us
        );
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::baseline::{BaselineParams, BaselineResult};
    use crate::engine::{BadBlock, VerifyReport};
    use crate::stats::CpuSummary;
    use crate::verify::Mismatch;
    use crate::workload::JobParams;

    fn job() -> JobReport {
        JobReport {
            target: "mem".into(),
            params: JobParams::default(),
            workers: 1,
            elapsed_s: 1.0,
            read: OpSummary {
                ops: 10,
                ..Default::default()
            },
            write: OpSummary::default(),
            total: OpSummary {
                ops: 10,
                ..Default::default()
            },
            cpu: CpuSummary::default(),
            verify: Some(VerifyReport {
                blocks_checked: 5,
                failures: 1,
                first_bad: Some(BadBlock {
                    offset: 8192,
                    mismatch: Mismatch::Torn,
                }),
            }),
        }
    }

    #[test]
    fn job_table_shows_verify_failure() {
        let t = job_table(&job());
        assert!(t.contains("first bad offset 8192"), "{t}");
        assert!(t.contains("read "), "{t}");
        assert!(!t.contains("\nwrite "), "{t}");
    }

    #[test]
    fn job_json_field_names_are_stable() {
        let v = serde_json::to_value(job()).expect("json");
        for k in [
            "target",
            "params",
            "workers",
            "elapsed_s",
            "read",
            "write",
            "total",
            "cpu",
            "verify",
        ] {
            assert!(v.get(k).is_some(), "missing {k}");
        }
        assert_eq!(v["params"]["pattern"], "randread");
        assert_eq!(v["params"]["limit"]["time"], 10.0);
        assert!(v["total"]["latency"]["p999_us"].is_number());
        assert_eq!(v["verify"]["first_bad"]["offset"], 8192);
        assert_eq!(v["verify"]["first_bad"]["mismatch"]["kind"], "torn");
    }

    #[test]
    fn compares_against_the_matching_baseline_test() {
        let mut j = job();
        j.total.ops_per_s = 500.0;
        j.total.latency.p50_us = 40.0;
        let row = |name: &str, ops: f64, p50: f64| BaselineResult {
            name: name.into(),
            round: 0,
            queue_depth: 1,
            request_bytes: 72,
            response_bytes: 4120,
            elapsed_s: 1.0,
            result: OpSummary {
                ops_per_s: ops,
                latency: crate::stats::LatencySummary {
                    p50_us: p50,
                    ..Default::default()
                },
                ..Default::default()
            },
            cpu: CpuSummary::default(),
            client_cpu_s: 0.0,
            server_cpu_s: 0.0,
            send_buffer_bytes: 0,
            receive_buffer_bytes: 0,
        };
        let base = BaselineReport {
            params: BaselineParams::default(),
            pinned: false,
            results: vec![
                row("qd1_read_blocking", 1000.0, 20.0),
                row("qd1_read_blocking", 900.0, 25.0),
                row("qd1_read_blocking", 2000.0, 10.0),
                row("qd32_read", 5000.0, 100.0),
            ],
        };
        let c = compare(&j, &base).expect("comparison");
        assert_eq!(c.baseline_test, "qd1_read_blocking");
        assert!((c.throughput_ratio - 0.5).abs() < 1e-9, "{c:?}");
        assert!((c.p50_ratio - 2.0).abs() < 1e-9, "{c:?}");
        assert!(comparison_line(&c).contains("50%"));
        j.params.queue_depth = 32;
        assert_eq!(compare(&j, &base).expect("qd32").baseline_test, "qd32_read");
        j.params.pattern = Pattern::Randwrite;
        assert!(
            compare(&j, &base).is_none(),
            "no write rows in this baseline"
        );
    }

    #[test]
    fn baseline_table_lists_tests() {
        let r = BaselineReport {
            params: BaselineParams::default(),
            pinned: true,
            results: vec![BaselineResult {
                name: "stream_128k".into(),
                round: 0,
                queue_depth: 1,
                request_bytes: 131072,
                response_bytes: 0,
                elapsed_s: 1.0,
                result: OpSummary::default(),
                cpu: CpuSummary::default(),
                client_cpu_s: 0.0,
                server_cpu_s: 0.0,
                send_buffer_bytes: 0,
                receive_buffer_bytes: 0,
            }],
        };
        let t = baseline_table(&r);
        assert!(t.contains("stream_128k"), "{t}");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["results"][0]["name"], "stream_128k");
        assert_eq!(v["params"]["duration"], 1.0);
    }
}
