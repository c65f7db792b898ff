//! How a thread waiting for a completion spends the time before it sleeps:
//! a fixed busy-poll budget, or one learned from the queue's recent waits
//! (adaptive hybrid polling, the default).
//!
//! # Why learn it
//!
//! Sleeping in `poll(2)` costs a wake-up per I/O: the completing core
//! signals ours, and on a virtual machine whose idle vCPU halts, that is an
//! exit to the hypervisor and an inter-processor interrupt, 10–20 µs on the
//! machines the benchmarks ran on, more than a whole NVMe/TCP round trip
//! on loopback (≈9 µs). And a thread that sleeps gives its core away, so a
//! pipeline at depth 32 waits for the scheduler after every batch. Spinning
//! avoids both but burns the core; spinning a *fixed* time either wastes
//! the whole budget on every I/O of a slow target, or is too short to help.
//!
//! So, like Linux's hybrid block polling, the leader of a queue measures
//! how long it waited for the next data to arrive (from the moment it
//! found the socket empty), keeps a moving average per queue, and spins
//! about twice that long, never longer than the configured cap
//! ([`crate::ConnectOptions::poll_spin`]); when the typical wait is longer
//! than the cap, spinning would mostly be wasted and it sleeps at once.
//! Spinning happens only while a thread waits for an outstanding command:
//! an idle initiator sleeps, so it costs no CPU.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Weight of a new sample in the moving average: 1/2^SHIFT (1/8, so a
/// single outlier moves it by an eighth and about 16 samples replace it).
const EWMA_SHIFT: u32 = 3;

/// Spin up to this many times the typical wait: covers most of the spread
/// around the average (a wait twice as long as usual is rare when responses
/// come from a polling target) without spinning far into the tail.
const SPIN_FACTOR: u64 = 2;

/// How a waiting thread spins before it sleeps in `poll(2)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SpinPolicy {
    /// Busy-poll this long after the last data arrived, then sleep. Zero
    /// sleeps at once (interrupt mode); a very long one never sleeps (busy
    /// mode).
    Fixed(Duration),
    /// Busy-poll for the budget the queue learned ([`SpinLearner`]), at
    /// most `max`.
    Adaptive { max: Duration },
}

impl SpinPolicy {
    /// The policy [`crate::ConnectOptions`] asks for.
    pub fn from_opts(spin: Duration, adaptive: bool) -> SpinPolicy {
        if adaptive && !spin.is_zero() {
            SpinPolicy::Adaptive { max: spin }
        } else {
            SpinPolicy::Fixed(spin)
        }
    }
}

/// The moving average of one queue's waits for data, in nanoseconds (0:
/// nothing learned yet). Written by the queue's leader (one at a time),
/// read by the next one: relaxed atomics suffice, a stale value only
/// shifts one budget.
#[derive(Debug, Default)]
pub(crate) struct SpinLearner {
    avg_ns: AtomicU64,
}

impl SpinLearner {
    /// Record that the leader waited `gap` for the next data.
    pub fn record(&self, gap: Duration, policy: SpinPolicy) {
        let SpinPolicy::Adaptive { max } = policy else {
            return;
        };
        let old = self.avg_ns.load(Ordering::Relaxed);
        self.avg_ns
            .store(ewma_step(old, clamp_sample(gap, max)), Ordering::Relaxed);
    }

    /// How long to spin before sleeping under `policy`.
    pub fn budget(&self, policy: SpinPolicy) -> Duration {
        match policy {
            SpinPolicy::Fixed(d) => d,
            SpinPolicy::Adaptive { max } => budget_for(self.avg_ns.load(Ordering::Relaxed), max),
        }
    }

    /// The current average, for statistics.
    pub fn average(&self) -> Duration {
        Duration::from_nanos(self.avg_ns.load(Ordering::Relaxed))
    }
}

/// A sample, clamped to twice the cap: a wait of seconds (an idle target, a
/// reconnect) says only "longer than worth spinning", and must not keep
/// the average up for hundreds of I/Os after.
fn clamp_sample(gap: Duration, max: Duration) -> u64 {
    let cap = max.saturating_mul(2).as_nanos();
    gap.as_nanos().min(cap).max(1) as u64
}

/// One step of the moving average; the first sample is taken as is.
fn ewma_step(old: u64, sample: u64) -> u64 {
    if old == 0 {
        return sample;
    }
    let old = old as i128;
    let new = old + ((sample as i128 - old) >> EWMA_SHIFT);
    new.max(1) as u64
}

/// The spin budget for an average wait of `avg_ns`: the whole cap until
/// something is learned, nothing when the typical wait is longer than the
/// cap (sleep at once), else twice the average up to the cap.
fn budget_for(avg_ns: u64, max: Duration) -> Duration {
    let max_ns = max.as_nanos().min(u128::from(u64::MAX)) as u64;
    if avg_ns == 0 {
        return max;
    }
    if avg_ns > max_ns {
        return Duration::ZERO;
    }
    Duration::from_nanos(avg_ns.saturating_mul(SPIN_FACTOR).min(max_ns))
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAX: Duration = Duration::from_micros(50);
    const ADAPTIVE: SpinPolicy = SpinPolicy::Adaptive { max: MAX };

    fn us(n: u64) -> Duration {
        Duration::from_micros(n)
    }

    #[test]
    fn options_map_to_policies() {
        assert_eq!(
            SpinPolicy::from_opts(Duration::ZERO, true),
            SpinPolicy::Fixed(Duration::ZERO)
        );
        assert_eq!(SpinPolicy::from_opts(MAX, true), ADAPTIVE);
        assert_eq!(SpinPolicy::from_opts(MAX, false), SpinPolicy::Fixed(MAX));
    }

    #[test]
    fn unlearned_spins_the_cap() {
        assert_eq!(SpinLearner::default().budget(ADAPTIVE), MAX);
    }

    #[test]
    fn fast_responses_spin_twice_the_typical_wait() {
        let l = SpinLearner::default();
        for _ in 0..64 {
            l.record(us(8), ADAPTIVE);
        }
        assert_eq!(l.budget(ADAPTIVE), us(16));
        // Never beyond the cap.
        for _ in 0..64 {
            l.record(us(40), ADAPTIVE);
        }
        assert_eq!(l.budget(ADAPTIVE), MAX);
    }

    #[test]
    fn slow_responses_sleep_at_once_and_recover() {
        let l = SpinLearner::default();
        for _ in 0..64 {
            l.record(Duration::from_millis(2), ADAPTIVE);
        }
        assert_eq!(l.budget(ADAPTIVE), Duration::ZERO);
        // Samples are clamped, so a fast target is learned again within a
        // few dozen I/Os rather than thousands.
        assert!(l.average() <= MAX * 2);
        let mut n = 0;
        while l.budget(ADAPTIVE).is_zero() {
            l.record(us(10), ADAPTIVE);
            n += 1;
            assert!(n < 32, "still sleeping after {n} fast responses");
        }
    }

    #[test]
    fn one_outlier_does_not_stop_spinning() {
        let l = SpinLearner::default();
        for _ in 0..64 {
            l.record(us(8), ADAPTIVE);
        }
        l.record(Duration::from_secs(1), ADAPTIVE);
        let b = l.budget(ADAPTIVE);
        assert!(b > us(16) && b <= MAX, "{b:?}");
    }

    #[test]
    fn fixed_policies_ignore_what_is_learned() {
        let l = SpinLearner::default();
        l.record(us(8), SpinPolicy::Fixed(us(3)));
        assert_eq!(l.average(), Duration::ZERO);
        assert_eq!(l.budget(SpinPolicy::Fixed(us(3))), us(3));
        assert_eq!(l.budget(SpinPolicy::Fixed(Duration::ZERO)), Duration::ZERO);
    }
}
