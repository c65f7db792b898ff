//! Human-readable tables for benchmark results. JSON output is the serde
//! form of the same structs; its field names are part of the interface.

use std::fmt::Write as _;

use super::baseline::BaselineReport;
use super::engine::JobReport;
use super::stats::OpSummary;

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
    use crate::bench::baseline::{BaselineParams, BaselineResult};
    use crate::bench::engine::{BadBlock, VerifyReport};
    use crate::bench::stats::CpuSummary;
    use crate::bench::verify::Mismatch;
    use crate::bench::workload::JobParams;

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
            }],
        };
        let t = baseline_table(&r);
        assert!(t.contains("stream_128k"), "{t}");
        let v = serde_json::to_value(&r).expect("json");
        assert_eq!(v["results"][0]["name"], "stream_128k");
        assert_eq!(v["params"]["duration"], 1.0);
    }
}
