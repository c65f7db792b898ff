//! Measurement primitives shared by the baseline and the workload engine:
//! latency histograms, CPU time and the serialisable summaries built from
//! them. Keeping one summary type means baseline and NVMe numbers print
//! and serialise identically, so ratios can be taken field by field.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde::Serialize;

/// Highest latency the histograms track (60 s); anything slower is clamped,
/// which only matters for a run that is broken anyway.
const MAX_TRACKED_NS: u64 = 60_000_000_000;

/// A latency histogram in nanoseconds with 3 significant digits.
#[derive(Debug, Clone)]
pub struct LatencyHist(Histogram<u64>);

impl Default for LatencyHist {
    fn default() -> Self {
        Self::new()
    }
}

impl LatencyHist {
    pub fn new() -> Self {
        // Constant bounds, not external input: this cannot fail.
        let h = Histogram::new_with_bounds(1, MAX_TRACKED_NS, 3)
            .expect("constant histogram bounds are valid");
        Self(h)
    }

    pub fn record(&mut self, d: Duration) {
        let ns = u64::try_from(d.as_nanos()).unwrap_or(u64::MAX);
        self.0.saturating_record(ns.clamp(1, MAX_TRACKED_NS));
    }

    pub fn merge(&mut self, other: &LatencyHist) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.0.add(&other.0);
    }

    pub fn count(&self) -> u64 {
        self.0.len()
    }

    pub fn summary(&self) -> LatencySummary {
        let us = |ns: u64| ns as f64 / 1000.0;
        if self.0.is_empty() {
            return LatencySummary::default();
        }
        LatencySummary {
            min_us: us(self.0.min()),
            mean_us: self.0.mean() / 1000.0,
            p50_us: us(self.0.value_at_quantile(0.50)),
            p99_us: us(self.0.value_at_quantile(0.99)),
            p999_us: us(self.0.value_at_quantile(0.999)),
            max_us: us(self.0.max()),
        }
    }
}

/// Latency percentiles in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct LatencySummary {
    pub min_us: f64,
    pub mean_us: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub max_us: f64,
}

/// User and system CPU time.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CpuTimes {
    pub user: Duration,
    pub sys: Duration,
}

impl CpuTimes {
    /// CPU time of the whole process (all threads).
    pub fn process() -> Self {
        rusage(libc::RUSAGE_SELF)
    }

    /// CPU time of the calling thread only; lets the baseline split the
    /// cost between its client and server ends.
    pub fn thread() -> Self {
        rusage(libc::RUSAGE_THREAD)
    }

    pub fn since(self, start: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user.saturating_sub(start.user),
            sys: self.sys.saturating_sub(start.sys),
        }
    }

    pub fn plus(self, other: CpuTimes) -> CpuTimes {
        CpuTimes {
            user: self.user + other.user,
            sys: self.sys + other.sys,
        }
    }

    pub fn total(self) -> Duration {
        self.user + self.sys
    }
}

fn rusage(who: libc::c_int) -> CpuTimes {
    // SAFETY: getrusage only writes into the zeroed struct we pass.
    let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::getrusage(who, &mut ru) };
    if rc != 0 {
        return CpuTimes::default();
    }
    let tv = |t: libc::timeval| {
        Duration::from_secs(t.tv_sec.max(0) as u64) + Duration::from_micros(t.tv_usec.max(0) as u64)
    };
    CpuTimes {
        user: tv(ru.ru_utime),
        sys: tv(ru.ru_stime),
    }
}

/// CPU time spent for a measured run, and per operation.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CpuSummary {
    pub user_s: f64,
    pub sys_s: f64,
    /// (user + sys) / operations, in microseconds.
    pub per_op_us: f64,
}

impl CpuSummary {
    pub fn new(cpu: CpuTimes, ops: u64) -> Self {
        let total = cpu.total().as_secs_f64();
        Self {
            user_s: cpu.user.as_secs_f64(),
            sys_s: cpu.sys.as_secs_f64(),
            per_op_us: if ops == 0 {
                0.0
            } else {
                total * 1e6 / ops as f64
            },
        }
    }
}

/// Throughput and latency of one class of operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct OpSummary {
    pub ops: u64,
    pub bytes: u64,
    pub ops_per_s: f64,
    /// Decimal megabytes (10^6 bytes) per second.
    pub mb_per_s: f64,
    pub latency: LatencySummary,
}

impl OpSummary {
    pub fn new(ops: u64, bytes: u64, elapsed: Duration, hist: &LatencyHist) -> Self {
        let secs = elapsed.as_secs_f64();
        let rate = |x: u64| if secs > 0.0 { x as f64 / secs } else { 0.0 };
        Self {
            ops,
            bytes,
            ops_per_s: rate(ops),
            mb_per_s: rate(bytes) / 1e6,
            latency: hist.summary(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_percentiles() {
        let mut h = LatencyHist::new();
        for us in 1..=1000u64 {
            h.record(Duration::from_micros(us));
        }
        let s = h.summary();
        assert!((s.p50_us - 500.0).abs() < 2.0, "{s:?}");
        assert!((s.p99_us - 990.0).abs() < 2.0, "{s:?}");
        assert!((s.max_us - 1000.0).abs() < 2.0, "{s:?}");
        let mut m = LatencyHist::new();
        m.merge(&h);
        assert_eq!(m.count(), 1000);
    }

    #[test]
    fn empty_histogram_is_zero() {
        assert_eq!(LatencyHist::new().summary(), LatencySummary::default());
    }

    #[test]
    fn cpu_time_advances() {
        let start = CpuTimes::thread();
        let mut x = 0u64;
        for i in 0..5_000_000u64 {
            x = x.wrapping_mul(31).wrapping_add(i);
        }
        std::hint::black_box(x);
        let used = CpuTimes::thread().since(start);
        assert!(used.total() > Duration::ZERO);
        assert!(CpuSummary::new(used, 10).per_op_us > 0.0);
    }

    #[test]
    fn summary_rates() {
        let h = LatencyHist::new();
        let s = OpSummary::new(1000, 4_096_000, Duration::from_secs(2), &h);
        assert_eq!(s.ops_per_s, 500.0);
        assert!((s.mb_per_s - 2.048).abs() < 1e-9);
    }
}
