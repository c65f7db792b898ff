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
//! found the socket empty) and learns two things per queue: how often the
//! data came within the cap ([`crate::ConnectOptions::poll_spin`]), and how
//! long those waits typically were. While most waits end within the cap it
//! spins about twice their typical length; when most do not (a slow
//! target), spinning would mostly be wasted and it sleeps at once. Waits
//! longer than the cap (a target that was descheduled, an idle moment)
//! count only as misses, so a few of them do not stop the spinning for the
//! rest, as they would if they entered an average. Spinning happens only
//! while a thread waits for an outstanding command: an idle initiator
//! sleeps, so it costs no CPU.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

/// Weight of a new sample in the moving averages: 1/2^SHIFT (1/8, so about
/// 16 samples replace what was learned).
const EWMA_SHIFT: u32 = 3;

/// The share of waits within the cap is kept in 1/1024ths.
const RATE_ONE: u32 = 1024;

/// Spin only while at least this share of waits ended within the cap: a
/// miss wastes the budget (≈ twice a typical wait), a hit saves a wake-up
/// (more CPU than a typical wait, and 10–20 µs of latency).
const MIN_HIT_RATE: u32 = RATE_ONE / 2;

/// Spin up to this many times the typical wait: covers most of the spread
/// around it (a wait twice as long as usual is rare when responses come
/// from a polling target) without spinning far into the tail.
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

/// What one queue learned about its waits for data. Written by the
/// queue's leader (one at a time), read by the next one: relaxed atomics
/// suffice, a stale value only shifts one budget.
#[derive(Debug)]
pub(crate) struct SpinLearner {
    /// Moving average of the waits that ended within the cap, in
    /// nanoseconds (0: nothing learned yet).
    hit_avg_ns: AtomicU64,
    /// Moving average of whether a wait ended within the cap, in
    /// 1/[`RATE_ONE`]ths.
    hit_rate: AtomicU32,
}

impl Default for SpinLearner {
    /// Nothing learned: the rate starts at the threshold, so the first wait
    /// decides whether the next one spins.
    fn default() -> Self {
        SpinLearner {
            hit_avg_ns: AtomicU64::new(0),
            hit_rate: AtomicU32::new(MIN_HIT_RATE),
        }
    }
}

impl SpinLearner {
    /// Record that the leader waited `gap` for the next data.
    pub fn record(&self, gap: Duration, policy: SpinPolicy) {
        let SpinPolicy::Adaptive { max } = policy else {
            return;
        };
        let hit = gap <= max;
        let rate = self.hit_rate.load(Ordering::Relaxed);
        self.hit_rate.store(rate_step(rate, hit), Ordering::Relaxed);
        if hit {
            let old = self.hit_avg_ns.load(Ordering::Relaxed);
            let sample = gap.as_nanos().max(1) as u64;
            self.hit_avg_ns
                .store(ewma_step(old, sample), Ordering::Relaxed);
        }
    }

    /// How long to spin before sleeping under `policy`.
    pub fn budget(&self, policy: SpinPolicy) -> Duration {
        match policy {
            SpinPolicy::Fixed(d) => d,
            SpinPolicy::Adaptive { max } => budget_for(
                self.hit_avg_ns.load(Ordering::Relaxed),
                self.hit_rate.load(Ordering::Relaxed),
                max,
            ),
        }
    }

    /// The typical wait among those that ended within the cap, for
    /// statistics.
    pub fn average(&self) -> Duration {
        Duration::from_nanos(self.hit_avg_ns.load(Ordering::Relaxed))
    }
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

/// One step of the share of waits within the cap.
fn rate_step(rate: u32, hit: bool) -> u32 {
    let target = if hit { RATE_ONE as i32 } else { 0 };
    let rate = rate as i32;
    (rate + ((target - rate) >> EWMA_SHIFT)).clamp(0, RATE_ONE as i32) as u32
}

/// The spin budget: nothing while most waits outlast the cap (sleep at
/// once), the whole cap until a wait has been measured, else twice the
/// typical wait up to the cap.
fn budget_for(hit_avg_ns: u64, hit_rate: u32, max: Duration) -> Duration {
    if hit_rate < MIN_HIT_RATE {
        return Duration::ZERO;
    }
    if hit_avg_ns == 0 {
        return max;
    }
    Duration::from_nanos(hit_avg_ns.saturating_mul(SPIN_FACTOR)).min(max)
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
        // A fast target is learned again within a few responses.
        let mut n = 0;
        while l.budget(ADAPTIVE).is_zero() {
            l.record(us(10), ADAPTIVE);
            n += 1;
            assert!(n < 16, "still sleeping after {n} fast responses");
        }
        assert_eq!(l.budget(ADAPTIVE), us(20));
    }

    #[test]
    fn outliers_do_not_stop_spinning() {
        let l = SpinLearner::default();
        for _ in 0..64 {
            l.record(us(8), ADAPTIVE);
        }
        l.record(Duration::from_secs(1), ADAPTIVE);
        assert_eq!(l.budget(ADAPTIVE), us(16));
        // One wait in five descheduled for a millisecond: still worth it.
        for i in 0..200 {
            let gap = if i % 5 == 4 { us(1000) } else { us(8) };
            l.record(gap, ADAPTIVE);
        }
        assert_eq!(l.budget(ADAPTIVE), us(16));
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
