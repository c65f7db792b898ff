//! Workload description: what to issue, how much of it, and where.

use std::time::Duration;

use serde::Serialize;

use super::verify::splitmix;
use super::BenchError;

/// Access pattern, named as fio names them so numbers are easy to compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Pattern {
    /// Random reads.
    Randread,
    /// Random writes.
    Randwrite,
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads and writes; the read share is `rwmixread`.
    Mixed,
}

impl Pattern {
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Pattern::Randread | Pattern::Randwrite | Pattern::Mixed
        )
    }

    /// Whether the pattern ever writes (verify needs a prefill otherwise).
    pub fn writes(self) -> bool {
        !matches!(self, Pattern::Randread | Pattern::Read)
    }
}

/// When a job stops.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Limit {
    /// Run for this long.
    Time(#[serde(serialize_with = "ser_secs")] Duration),
    /// Transfer this many bytes in total, over all queues.
    Bytes(u64),
}

fn ser_secs<S: serde::Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_f64(d.as_secs_f64())
}

/// Everything that defines a job. Serialised into the JSON report so a
/// result always carries the parameters that produced it.
#[derive(Debug, Clone, Serialize)]
pub struct JobParams {
    pub pattern: Pattern,
    /// Bytes per I/O; also the alignment of random offsets.
    pub block_size: u32,
    /// In-flight I/Os per queue.
    pub queue_depth: u32,
    /// Independent queues (connections or threads).
    pub queues: u32,
    pub limit: Limit,
    /// Read percentage for `Mixed`.
    pub rwmixread: u8,
    /// Start of the region I/O is confined to.
    pub region_offset: u64,
    /// Length of the region; `None` means to the end of the device.
    pub region_len: Option<u64>,
    pub verify: bool,
    /// Seeds offsets and verify stamps; recorded so a run can be repeated.
    pub seed: u64,
}

impl Default for JobParams {
    fn default() -> Self {
        Self {
            pattern: Pattern::Randread,
            block_size: 4096,
            queue_depth: 1,
            queues: 1,
            limit: Limit::Time(Duration::from_secs(10)),
            rwmixread: 50,
            region_offset: 0,
            region_len: None,
            verify: false,
            seed: 0x5eed,
        }
    }
}

/// The region resolved against a device, in units of `block_size`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Region {
    pub first_unit: u64,
    pub units: u64,
    pub unit: u64,
}

impl JobParams {
    /// Check the parameters against a device and resolve the region.
    pub fn region(&self, dev_size: u64, dev_block: u32) -> Result<Region, BenchError> {
        let bs = u64::from(self.block_size);
        let invalid = |why: String| Err(BenchError::InvalidParams(why));
        if bs == 0 || bs % u64::from(dev_block.max(1)) != 0 {
            return invalid(format!(
                "block size {bs} is not a multiple of the device block size {dev_block}"
            ));
        }
        if self.verify && (bs as usize) < super::verify::MIN_UNIT {
            return invalid(format!(
                "--verify needs a block size of at least {}",
                super::verify::MIN_UNIT
            ));
        }
        if self.queue_depth == 0 || self.queues == 0 {
            return invalid("queue depth and queues must be at least 1".into());
        }
        if self.rwmixread > 100 {
            return invalid("rwmixread is a percentage (0-100)".into());
        }
        if !self.region_offset.is_multiple_of(bs) {
            return invalid(format!(
                "region offset {} is not block aligned",
                self.region_offset
            ));
        }
        let avail = dev_size.saturating_sub(self.region_offset);
        let len = self.region_len.unwrap_or(avail).min(avail);
        let units = len / bs;
        let workers = u64::from(self.queues) * u64::from(self.queue_depth);
        if units < workers.max(1) {
            return invalid(format!(
                "region of {len} bytes holds {units} blocks of {bs}; need at least one per worker ({workers})"
            ));
        }
        Ok(Region {
            first_unit: self.region_offset / bs,
            units,
            unit: bs,
        })
    }
}

/// A worker's share of the region: a contiguous run of units it alone
/// touches. Owning disjoint slices is what lets verify mode know the last
/// acknowledged generation of every unit without any cross-thread state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    pub first_unit: u64,
    pub units: u64,
}

/// Split `region` into `n` slices of near-equal size.
pub fn split(region: Region, n: u64) -> Vec<Slice> {
    let n = n.max(1);
    let base = region.units / n;
    let extra = region.units % n;
    let mut next = region.first_unit;
    (0..n)
        .map(|i| {
            let units = base + u64::from(i < extra);
            let s = Slice {
                first_unit: next,
                units,
            };
            next += units;
            s
        })
        .collect()
}

/// Picks the next unit (index within the slice) and whether it is a read.
#[derive(Debug, Clone)]
pub struct Picker {
    pattern: Pattern,
    rwmixread: u8,
    units: u64,
    cursor: u64,
    rng: u64,
}

impl Picker {
    pub fn new(params: &JobParams, slice: Slice, worker: u64) -> Self {
        Self {
            pattern: params.pattern,
            rwmixread: params.rwmixread,
            units: slice.units.max(1),
            cursor: 0,
            rng: params.seed ^ worker.wrapping_mul(0xA24B_AED4_963E_E407),
        }
    }

    /// Next (unit index within the slice, is_read).
    pub fn pick(&mut self) -> (u64, bool) {
        let unit = if self.pattern.is_random() {
            splitmix(&mut self.rng) % self.units
        } else {
            let u = self.cursor;
            self.cursor = (self.cursor + 1) % self.units;
            u
        };
        let is_read = match self.pattern {
            Pattern::Randread | Pattern::Read => true,
            Pattern::Randwrite | Pattern::Write => false,
            Pattern::Mixed => splitmix(&mut self.rng) % 100 < u64::from(self.rwmixread),
        };
        (unit, is_read)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_covers_region_exactly() {
        let r = Region {
            first_unit: 10,
            units: 103,
            unit: 4096,
        };
        let s = split(r, 4);
        assert_eq!(s.len(), 4);
        assert_eq!(s[0].first_unit, 10);
        assert_eq!(s.iter().map(|x| x.units).sum::<u64>(), 103);
        for w in s.windows(2) {
            assert_eq!(w[0].first_unit + w[0].units, w[1].first_unit);
        }
    }

    #[test]
    fn region_validation() {
        let p = JobParams {
            block_size: 4096,
            queue_depth: 2,
            queues: 2,
            ..Default::default()
        };
        let r = p.region(1 << 20, 512).expect("valid");
        assert_eq!(r.units, 256);
        assert!(
            p.region(4096 * 3, 512).is_err(),
            "fewer blocks than workers"
        );
        let odd = JobParams {
            block_size: 1000,
            ..Default::default()
        };
        assert!(odd.region(1 << 20, 512).is_err());
        let mix = JobParams {
            rwmixread: 101,
            ..Default::default()
        };
        assert!(mix.region(1 << 20, 512).is_err());
    }

    #[test]
    fn sequential_picker_wraps_and_random_stays_in_range() {
        let slice = Slice {
            first_unit: 0,
            units: 3,
        };
        let seq = JobParams {
            pattern: Pattern::Write,
            ..Default::default()
        };
        let mut p = Picker::new(&seq, slice, 0);
        let got: Vec<_> = (0..4).map(|_| p.pick()).collect();
        assert_eq!(got, vec![(0, false), (1, false), (2, false), (0, false)]);

        let mixed = JobParams {
            pattern: Pattern::Mixed,
            rwmixread: 70,
            ..Default::default()
        };
        let mut p = Picker::new(&mixed, slice, 1);
        let mut reads = 0;
        for _ in 0..10_000 {
            let (u, r) = p.pick();
            assert!(u < 3);
            reads += u32::from(r);
        }
        assert!((6500..7500).contains(&reads), "reads={reads}");
    }
}
