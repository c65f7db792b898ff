//! Process metrics read from `/proc/self` at scrape time: CPU seconds,
//! resident memory, open file descriptors and their limit, and the start
//! time, under the names Prometheus client libraries use (`process_*`), so
//! existing dashboards work. No dependency and no timer: each scrape
//! reads four small files. Off Linux (no `/proc`) the series are absent.

use std::fmt::Write as _;

/// Clock ticks per second of `/proc/PID/stat` times. A named constant:
/// Linux reports these in USER_HZ, which is 100 on every architecture it
/// supports, whatever the kernel's internal HZ.
const USER_HZ: f64 = 100.0;

/// What the series report.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ProcessStats {
    pub cpu_seconds: f64,
    pub resident_bytes: u64,
    pub open_fds: u64,
    pub max_fds: Option<u64>,
    pub start_time_seconds: f64,
}

/// Reads this process's figures, or `None` without a readable `/proc`.
pub fn read() -> Option<ProcessStats> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let boot = std::fs::read_to_string("/proc/stat").ok()?;
    let limits = std::fs::read_to_string("/proc/self/limits").unwrap_or_default();
    let open_fds = std::fs::read_dir("/proc/self/fd").ok()?.count() as u64;
    parse(&stat, &status, &boot, &limits, open_fds)
}

/// The figures from the files' texts (separate for tests).
pub fn parse(
    stat: &str,
    status: &str,
    boot: &str,
    limits: &str,
    open_fds: u64,
) -> Option<ProcessStats> {
    // The command name (field 2) is in parentheses and may hold spaces:
    // fields are counted after its closing parenthesis, from field 3.
    let rest = &stat[stat.rfind(')')? + 1..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks = |i: usize| f.get(i - 3).and_then(|v| v.parse::<f64>().ok());
    let cpu = ticks(14)? + ticks(15)?;
    let started = ticks(22)?;
    let btime: f64 = boot
        .lines()
        .find_map(|l| l.strip_prefix("btime "))?
        .trim()
        .parse()
        .ok()?;
    let rss_kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0);
    let max_fds = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(3)?.parse().ok());
    Some(ProcessStats {
        cpu_seconds: cpu / USER_HZ,
        resident_bytes: rss_kib * 1024,
        open_fds,
        max_fds,
        start_time_seconds: btime + started / USER_HZ,
    })
}

/// The series as exposition text. `openmetrics`: OpenMetrics (a
/// counter's family is named without `_total`), else the Prometheus text
/// format 0.0.4.
pub fn render(s: &ProcessStats, openmetrics: bool, out: &mut String) {
    let cpu_family = if openmetrics {
        "process_cpu_seconds"
    } else {
        "process_cpu_seconds_total"
    };
    let _ = writeln!(
        out,
        "# HELP {cpu_family} Total user and system CPU time spent in seconds.\n# TYPE {cpu_family} counter\nprocess_cpu_seconds_total {}",
        s.cpu_seconds
    );
    let mut gauge = |name: &str, help: &str, v: String| {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} gauge\n{name} {v}");
    };
    gauge(
        "process_resident_memory_bytes",
        "Resident memory size in bytes.",
        s.resident_bytes.to_string(),
    );
    gauge(
        "process_open_fds",
        "Number of open file descriptors.",
        s.open_fds.to_string(),
    );
    if let Some(m) = s.max_fds {
        gauge(
            "process_max_fds",
            "Maximum number of open file descriptors.",
            m.to_string(),
        );
    }
    gauge(
        "process_start_time_seconds",
        "Start time of the process since the Unix epoch in seconds.",
        s.start_time_seconds.to_string(),
    );
}

/// [`read`] and [`render`]; nothing when `/proc` cannot be read.
pub fn render_self(openmetrics: bool, out: &mut String) {
    if let Some(s) = read() {
        render(&s, openmetrics, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_files() {
        let stat = "4242 (ferro fab) S 1 4242 4242 0 -1 4194560 100 0 0 0 250 50 0 0 20 0 9 0 12345 1000 200 18446744073709551615";
        let status = "Name:\tx\nVmRSS:\t   20480 kB\n";
        let boot = "cpu 1 2 3\nbtime 1700000000\n";
        let limits = "Limit                     Soft Limit           Hard Limit           Units\nMax open files            1024                 524288               files\n";
        let s = parse(stat, status, boot, limits, 7).expect("parsed");
        assert_eq!(s.cpu_seconds, 3.0);
        assert_eq!(s.resident_bytes, 20 * 1024 * 1024);
        assert_eq!(s.open_fds, 7);
        assert_eq!(s.max_fds, Some(1024));
        assert_eq!(s.start_time_seconds, 1_700_000_123.45);
        let mut text = String::new();
        render(&s, false, &mut text);
        assert!(
            text.contains(
                "# TYPE process_cpu_seconds_total counter\nprocess_cpu_seconds_total 3\n"
            ),
            "{text}"
        );
        assert!(text.contains("process_open_fds 7\n"), "{text}");
        let mut om = String::new();
        render(&s, true, &mut om);
        assert!(
            om.contains("# TYPE process_cpu_seconds counter\nprocess_cpu_seconds_total 3\n"),
            "{om}"
        );
        assert!(read().is_some(), "this test runs on Linux");
    }
}
