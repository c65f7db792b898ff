//! Live progress on stderr, only when stderr is a terminal: a redirected
//! log or CI output must not fill up with carriage-return noise.

use std::io::Write;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

/// How often the line is redrawn (about 4 times a second).
const TICK: Duration = Duration::from_millis(250);

/// Counters workers bump as I/Os complete; read by the progress line.
#[derive(Debug, Default)]
pub struct Counters {
    pub ops: AtomicU64,
    pub bytes: AtomicU64,
}

impl Counters {
    pub fn add(&self, ops: u64, bytes: u64) {
        self.ops.fetch_add(ops, Ordering::Relaxed);
        self.bytes.fetch_add(bytes, Ordering::Relaxed);
    }
}

/// Whether stderr is a terminal.
pub fn stderr_is_tty() -> bool {
    // SAFETY: isatty only inspects the descriptor.
    unsafe { libc::isatty(libc::STDERR_FILENO) == 1 }
}

/// A running progress line; `finish` (or drop) stops it and clears the line.
pub struct Progress {
    done: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Progress {
    /// Start redrawing if stderr is a terminal and `enabled`; otherwise a no-op.
    pub fn start(label: String, counters: Arc<Counters>, enabled: bool) -> Self {
        let done = Arc::new(AtomicBool::new(false));
        let thread = if enabled && stderr_is_tty() {
            let done2 = Arc::clone(&done);
            std::thread::Builder::new()
                .name("bench-progress".into())
                .spawn(move || draw_loop(&label, &counters, &done2))
                .ok()
        } else {
            None
        };
        Self { done, thread }
    }

    pub fn finish(mut self) {
        self.stop();
    }

    fn stop(&mut self) {
        self.done.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
            let mut err = std::io::stderr().lock();
            let _ = write!(err, "\r\x1b[2K");
            let _ = err.flush();
        }
    }
}

impl Drop for Progress {
    fn drop(&mut self) {
        self.stop();
    }
}

fn draw_loop(label: &str, counters: &Counters, done: &AtomicBool) {
    let start = Instant::now();
    let mut last = (start, 0u64, 0u64);
    while !done.load(Ordering::Relaxed) {
        std::thread::sleep(TICK);
        let now = Instant::now();
        let ops = counters.ops.load(Ordering::Relaxed);
        let bytes = counters.bytes.load(Ordering::Relaxed);
        let dt = now.duration_since(last.0).as_secs_f64().max(1e-9);
        let line = format_line(
            label,
            now.duration_since(start),
            (ops - last.1) as f64 / dt,
            (bytes - last.2) as f64 / dt,
            ops,
        );
        last = (now, ops, bytes);
        let mut err = std::io::stderr().lock();
        let _ = write!(err, "\r\x1b[2K{line}");
        let _ = err.flush();
    }
}

fn format_line(label: &str, elapsed: Duration, iops: f64, bps: f64, total_ops: u64) -> String {
    format!(
        "{label}: {:>6.1}s  {:>10.0} IOPS  {:>9.1} MB/s  {:>12} ops",
        elapsed.as_secs_f64(),
        iops,
        bps / 1e6,
        total_ops
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_format() {
        let l = format_line("randread", Duration::from_millis(1500), 1234.4, 5e6, 99);
        assert!(l.starts_with("randread:"));
        assert!(l.contains("1234 IOPS"));
        assert!(l.contains("5.0 MB/s"));
    }

    #[test]
    fn disabled_progress_is_silent_noop() {
        let c = Arc::new(Counters::default());
        c.add(2, 8192);
        let p = Progress::start("x".into(), Arc::clone(&c), false);
        assert!(p.thread.is_none());
        p.finish();
        assert_eq!(c.ops.load(Ordering::Relaxed), 2);
    }
}
