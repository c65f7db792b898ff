//! The workload engine: runs a [`JobParams`] against a target and reports.
//!
//! Each worker thread drives one [`IoQueue`] over its own slice of the
//! region. A blocking `BlockIo` becomes `queues × queue_depth` workers with
//! depth-1 queues (depth through threads); a pipelined initiator becomes
//! `queues` workers at full depth (depth on the wire). Both go through the
//! same loop, so their numbers differ only by what is being measured.
//!
//! Time and CPU are sampled between two barriers that every worker passes,
//! so verify prefill and the final read-back pass are never counted.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier, OnceLock};
use std::time::{Duration, Instant};

use serde::Serialize;

use super::io::DynBlockIo;
use super::progress::{Counters, Progress};
use super::queue::{BlockingQueue, IoCompletion, IoKind, IoQueue, IoRequest};
use super::stats::{CpuSummary, CpuTimes, LatencyHist, OpSummary};
use super::verify::{self, Mismatch};
use super::workload::{split, JobParams, Limit, Picker, Slice};
use super::BenchError;

/// What a job runs against.
pub enum Target {
    /// Any blocking `BlockIo`: queue depth through threads.
    Blocking(Arc<DynBlockIo>),
    /// Pipelined queues (one per connection): queue depth on the wire.
    Pipelined {
        size: u64,
        block_size: u32,
        queues: Vec<Box<dyn IoQueue>>,
    },
}

/// Knobs that do not change what is measured.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// Draw a progress line on stderr (only if it is a terminal).
    pub progress: bool,
    /// Set from outside (Ctrl-C) to end the job early but cleanly.
    pub stop: Option<Arc<AtomicBool>>,
    /// Label for the progress line and the report.
    pub target_name: String,
}

/// First bad block found by verify.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct BadBlock {
    pub offset: u64,
    pub mismatch: Mismatch,
}

/// Outcome of verify mode.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct VerifyReport {
    /// Reads checked against their expected stamp (during the run and in
    /// the final pass).
    pub blocks_checked: u64,
    pub failures: u64,
    /// The lowest bad offset seen.
    pub first_bad: Option<BadBlock>,
}

/// Result of one job. Field names are stable: scripts parse `--json`.
#[derive(Debug, Clone, Serialize)]
pub struct JobReport {
    pub target: String,
    pub params: JobParams,
    /// Worker threads used (queues, or queues × depth for blocking targets).
    pub workers: u32,
    pub elapsed_s: f64,
    pub read: OpSummary,
    pub write: OpSummary,
    pub total: OpSummary,
    /// Process CPU time over the measured phase, per I/O.
    pub cpu: CpuSummary,
    pub verify: Option<VerifyReport>,
}

/// State every worker shares.
struct Shared {
    params: JobParams,
    unit: u64,
    stop: Arc<AtomicBool>,
    counters: Arc<Counters>,
    start_gate: Barrier,
    end_gate: Barrier,
    /// When the main phase began: set by the first thread past the start
    /// gate, so the workers' deadline and the reported elapsed time start
    /// at the same instant even if one thread is scheduled late.
    began: OnceLock<Instant>,
}

impl Shared {
    fn began(&self) -> Instant {
        *self.began.get_or_init(Instant::now)
    }
}

/// Split a byte limit into per-worker I/O counts in proportion to the
/// slices, as fio gives each job its own size. A shared budget would let
/// fast workers take the I/Os of slow ones, so `--size` equal to the
/// region would leave parts of it unwritten (and a later read test would
/// read holes).
fn split_budget(limit: Limit, unit: u64, slices: &[Slice]) -> Vec<u64> {
    let Limit::Bytes(bytes) = limit else {
        return vec![u64::MAX; slices.len()];
    };
    let total_ios = bytes / unit.max(1);
    let units: u64 = slices.iter().map(|s| s.units).sum::<u64>().max(1);
    let mut shares: Vec<u64> = slices
        .iter()
        .map(|s| (u128::from(total_ios) * u128::from(s.units) / u128::from(units)) as u64)
        .collect();
    let mut left = total_ios - shares.iter().sum::<u64>();
    for share in shares.iter_mut() {
        if left == 0 {
            break;
        }
        *share += 1;
        left -= 1;
    }
    shares
}

/// Run `params` against `target` to completion.
pub fn run(target: Target, params: &JobParams, opts: &RunOptions) -> Result<JobReport, BenchError> {
    let (size, dev_block, queues) = match target {
        Target::Blocking(dev) => {
            let n = params.queues as usize * params.queue_depth as usize;
            let queues: Vec<Box<dyn IoQueue>> = (0..n)
                .map(|_| Box::new(BlockingQueue::new(Arc::clone(&dev), 1)) as Box<dyn IoQueue>)
                .collect();
            (dev.size(), dev.block_size(), queues)
        }
        Target::Pipelined {
            size,
            block_size,
            queues,
        } => (size, block_size, queues),
    };
    let region = params.region(size, dev_block)?;
    let slices = split(region, queues.len() as u64);
    let budgets = split_budget(params.limit, region.unit, &slices);
    let counters = Arc::new(Counters::default());
    let shared = Shared {
        params: params.clone(),
        unit: region.unit,
        stop: opts.stop.clone().unwrap_or_default(),
        counters: Arc::clone(&counters),
        start_gate: Barrier::new(queues.len() + 1),
        end_gate: Barrier::new(queues.len() + 1),
        began: OnceLock::new(),
    };
    let workers = queues.len() as u32;
    tracing::debug!(workers, units = region.units, "starting job");
    let progress_label = format!("{} {:?}", opts.target_name, params.pattern).to_lowercase();

    let (results, elapsed, cpu) = std::thread::scope(|scope| {
        let handles: Vec<_> = queues
            .into_iter()
            .zip(slices.into_iter().zip(budgets))
            .enumerate()
            .map(|(i, (q, (slice, budget)))| {
                let shared = &shared;
                scope.spawn(move || Worker::new(i as u64, q, slice, shared).run(budget))
            })
            .collect();
        shared.start_gate.wait();
        let (t0, c0) = (shared.began(), CpuTimes::process());
        let progress = Progress::start(progress_label, Arc::clone(&counters), opts.progress);
        shared.end_gate.wait();
        let (elapsed, cpu) = (t0.elapsed(), CpuTimes::process().since(c0));
        progress.finish();
        let results: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().unwrap_or(Err(BenchError::WorkerPanicked)))
            .collect();
        (results, elapsed, cpu)
    });
    summarize(params, opts, workers, results, elapsed, cpu)
}

fn summarize(
    params: &JobParams,
    opts: &RunOptions,
    workers: u32,
    results: Vec<Result<WorkerResult, BenchError>>,
    elapsed: Duration,
    cpu: CpuTimes,
) -> Result<JobReport, BenchError> {
    let mut agg = WorkerResult::default();
    for r in results {
        agg.merge(r?);
    }
    let mut all = agg.read_hist.clone();
    all.merge(&agg.write_hist);
    let read = OpSummary::new(
        agg.reads,
        agg.reads * u64::from(params.block_size),
        elapsed,
        &agg.read_hist,
    );
    let write = OpSummary::new(
        agg.writes,
        agg.writes * u64::from(params.block_size),
        elapsed,
        &agg.write_hist,
    );
    let total_ops = agg.reads + agg.writes;
    let total = OpSummary::new(total_ops, read.bytes + write.bytes, elapsed, &all);
    Ok(JobReport {
        target: opts.target_name.clone(),
        params: params.clone(),
        workers,
        elapsed_s: elapsed.as_secs_f64(),
        read,
        write,
        total,
        cpu: CpuSummary::new(cpu, total_ops),
        verify: params.verify.then_some(agg.verify),
    })
}

/// What one worker measured.
#[derive(Default)]
struct WorkerResult {
    reads: u64,
    writes: u64,
    read_hist: LatencyHist,
    write_hist: LatencyHist,
    verify: VerifyReport,
}

impl WorkerResult {
    fn merge(&mut self, o: WorkerResult) {
        self.reads += o.reads;
        self.writes += o.writes;
        self.read_hist.merge(&o.read_hist);
        self.write_hist.merge(&o.write_hist);
        self.verify.blocks_checked += o.verify.blocks_checked;
        self.verify.failures += o.verify.failures;
        if let Some(b) = o.verify.first_bad {
            note_bad(&mut self.verify, b);
        }
    }
}

fn note_bad(v: &mut VerifyReport, b: BadBlock) {
    match &v.first_bad {
        Some(cur) if cur.offset <= b.offset => {}
        _ => v.first_bad = Some(b),
    }
}

/// Which part of a job a worker is in; decides the next I/O.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Verify with a read-only pattern: stamp every unit once first.
    Prefill,
    /// The measured workload.
    Main,
    /// Verify: read back every unit written.
    Final,
}

struct Slot {
    buf: Vec<u8>,
    started: Instant,
    unit: u64,
    generation: u64,
}

struct Worker<'a> {
    id: u64,
    queue: Box<dyn IoQueue>,
    slice: Slice,
    shared: &'a Shared,
    picker: Picker,
    slots: Vec<Slot>,
    free: Vec<usize>,
    /// Verify: last acknowledged generation per unit of the slice (0 = none).
    gens: Vec<u64>,
    /// Verify: units with an I/O in flight; another one would be ambiguous.
    busy: Vec<bool>,
    cursor: u64,
    /// I/Os this worker may still issue in the main phase.
    budget: u64,
    out: Vec<IoCompletion>,
    res: WorkerResult,
}

impl<'a> Worker<'a> {
    fn new(id: u64, queue: Box<dyn IoQueue>, slice: Slice, shared: &'a Shared) -> Self {
        let depth = queue.depth().min(shared.params.queue_depth as usize).max(1);
        let unit = shared.unit as usize;
        let mut fill = shared.params.seed ^ id;
        let slots = (0..depth)
            .map(|_| {
                let mut buf = vec![0u8; unit];
                // Non-zero data so no layer can shortcut zeroes.
                for c in buf.chunks_mut(8) {
                    let w = verify::splitmix(&mut fill).to_le_bytes();
                    c.copy_from_slice(&w[..c.len()]);
                }
                Slot {
                    buf,
                    started: Instant::now(),
                    unit: 0,
                    generation: 0,
                }
            })
            .collect();
        let verify = shared.params.verify;
        let n = if verify { slice.units as usize } else { 0 };
        Self {
            id,
            picker: Picker::new(&shared.params, slice, id),
            queue,
            slice,
            shared,
            slots,
            free: (0..depth).rev().collect(),
            gens: vec![0; n],
            busy: vec![false; n],
            cursor: 0,
            budget: 0,
            out: Vec::with_capacity(depth),
            res: WorkerResult::default(),
        }
    }

    /// Prefill, start gate, main phase, end gate, final check. Gates are
    /// always passed, even after an error, or the other threads would hang.
    fn run(mut self, budget: u64) -> Result<WorkerResult, BenchError> {
        self.budget = budget;
        let p = &self.shared.params;
        let mut status = Ok(());
        if p.verify && !p.pattern.writes() {
            status = self.drive(Phase::Prefill, Instant::now());
        }
        self.shared.start_gate.wait();
        if status.is_ok() {
            let began = self.shared.began();
            let deadline = match p.limit {
                Limit::Time(d) => began + d,
                Limit::Bytes(_) => began,
            };
            status = self.drive(Phase::Main, deadline);
        }
        if status.is_err() {
            self.shared.stop.store(true, Ordering::Relaxed);
        }
        self.shared.end_gate.wait();
        status?;
        if p.verify {
            self.cursor = 0;
            self.drive(Phase::Final, Instant::now())?;
        }
        Ok(self.res)
    }

    /// Keep the queue full with the phase's I/Os until it has no more,
    /// then drain.
    fn drive(&mut self, phase: Phase, deadline: Instant) -> Result<(), BenchError> {
        self.cursor = 0;
        let mut more = true;
        let mut inflight = 0usize;
        loop {
            while more && !self.free.is_empty() {
                match self.next_op(phase, deadline) {
                    NextOp::Io(unit, is_read) => {
                        self.submit(unit, is_read)?;
                        inflight += 1;
                    }
                    NextOp::Wait => break,
                    NextOp::Done => more = false,
                }
            }
            if inflight == 0 {
                return Ok(());
            }
            self.out.clear();
            self.queue.reap(&mut self.out).map_err(BenchError::Queue)?;
            let mut done = std::mem::take(&mut self.out);
            inflight -= done.len();
            let r = done.drain(..).try_for_each(|c| self.complete(c, phase));
            self.out = done;
            r?;
        }
    }

    fn next_op(&mut self, phase: Phase, deadline: Instant) -> NextOp {
        match phase {
            Phase::Prefill => self.next_sequential(false),
            Phase::Final => {
                while self.cursor < self.slice.units && self.gens[self.cursor as usize] == 0 {
                    self.cursor += 1;
                }
                self.next_sequential(true)
            }
            Phase::Main => {
                if !self.may_continue(deadline) {
                    return NextOp::Done;
                }
                // In verify mode, skip units with an I/O in flight; give up
                // for this round (and wait for completions) if all tries hit.
                for _ in 0..64 {
                    let (unit, is_read) = self.picker.pick();
                    if self.busy.is_empty() || !self.busy[unit as usize] {
                        self.budget -= 1;
                        return NextOp::Io(unit, is_read);
                    }
                }
                NextOp::Wait
            }
        }
    }

    /// Whether the main phase may issue another I/O.
    fn may_continue(&self, deadline: Instant) -> bool {
        if self.budget == 0 || self.shared.stop.load(Ordering::Relaxed) {
            return false;
        }
        match self.shared.params.limit {
            Limit::Time(_) => Instant::now() < deadline,
            Limit::Bytes(_) => true,
        }
    }

    fn next_sequential(&mut self, is_read: bool) -> NextOp {
        if self.cursor >= self.slice.units {
            return NextOp::Done;
        }
        self.cursor += 1;
        NextOp::Io(self.cursor - 1, is_read)
    }

    fn offset(&self, unit: u64) -> u64 {
        (self.slice.first_unit + unit) * self.shared.unit
    }

    fn submit(&mut self, unit: u64, is_read: bool) -> Result<(), BenchError> {
        let Some(slot_idx) = self.free.pop() else {
            return Err(BenchError::Internal("no free slot"));
        };
        let offset = self.offset(unit);
        let (seed, verify) = (self.shared.params.seed, self.shared.params.verify);
        let slot = &mut self.slots[slot_idx];
        slot.unit = unit;
        if verify {
            self.busy[unit as usize] = true;
            if !is_read {
                slot.generation = self.gens[unit as usize] + 1;
                verify::stamp(&mut slot.buf, seed, offset, slot.generation);
            }
        }
        let req = IoRequest {
            tag: slot_idx as u64,
            kind: if is_read { IoKind::Read } else { IoKind::Write },
            offset,
            buf: std::mem::take(&mut slot.buf),
        };
        slot.started = Instant::now();
        self.queue.submit(req).map_err(BenchError::Queue)
    }

    fn complete(&mut self, c: IoCompletion, phase: Phase) -> Result<(), BenchError> {
        let now = Instant::now();
        let idx = usize::try_from(c.req.tag)
            .ok()
            .filter(|&i| i < self.slots.len())
            .ok_or(BenchError::Internal("completion for an unknown tag"))?;
        let IoCompletion { req, result } = c;
        if let Err(source) = result {
            return Err(BenchError::Io {
                offset: req.offset,
                op: req.kind,
                source,
            });
        }
        let latency = now.duration_since(self.slots[idx].started);
        let unit = self.slots[idx].unit;
        let is_read = req.kind == IoKind::Read;
        if self.shared.params.verify {
            self.busy[unit as usize] = false;
            if is_read {
                self.check(&req.buf, req.offset, unit);
            } else {
                self.gens[unit as usize] = self.slots[idx].generation;
            }
        }
        if phase == Phase::Main {
            let (hist, count) = if is_read {
                (&mut self.res.read_hist, &mut self.res.reads)
            } else {
                (&mut self.res.write_hist, &mut self.res.writes)
            };
            hist.record(latency);
            *count += 1;
            self.shared.counters.add(1, req.buf.len() as u64);
        }
        self.slots[idx].buf = req.buf;
        self.free.push(idx);
        Ok(())
    }

    fn check(&mut self, buf: &[u8], offset: u64, unit: u64) {
        let expected = self.gens[unit as usize];
        if expected == 0 {
            // Never written in this run: nothing to compare against.
            return;
        }
        self.res.verify.blocks_checked += 1;
        if let Err(mismatch) = verify::check(buf, self.shared.params.seed, offset, expected) {
            tracing::warn!(offset, worker = self.id, %mismatch, "verify failure");
            self.res.verify.failures += 1;
            note_bad(&mut self.res.verify, BadBlock { offset, mismatch });
        }
    }
}

enum NextOp {
    Io(u64, bool),
    Wait,
    Done,
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{BlockIo, MemBlockIo};
    use crate::workload::Pattern;
    use std::io;

    fn params(pattern: Pattern, verify: bool) -> JobParams {
        JobParams {
            pattern,
            block_size: 4096,
            queue_depth: 4,
            queues: 2,
            limit: Limit::Bytes(4 << 20),
            verify,
            ..Default::default()
        }
    }

    fn opts() -> RunOptions {
        RunOptions {
            target_name: "mem".into(),
            ..Default::default()
        }
    }

    #[test]
    fn byte_limit_is_exact_for_each_pattern() {
        for pattern in [
            Pattern::Randread,
            Pattern::Randwrite,
            Pattern::Read,
            Pattern::Write,
            Pattern::Mixed,
        ] {
            let dev = Arc::new(MemBlockIo::new(1 << 20, 512));
            let r = run(Target::Blocking(dev), &params(pattern, false), &opts()).expect("run");
            assert_eq!(r.total.bytes, 4 << 20, "{pattern:?}");
            assert_eq!(r.total.ops, 1024);
            assert_eq!(r.workers, 8);
            assert!(r.total.latency.p50_us > 0.0);
            assert!(r.verify.is_none());
        }
    }

    #[test]
    fn byte_limit_is_split_in_proportion_to_slices() {
        let slices = [
            Slice {
                first_unit: 0,
                units: 3,
            },
            Slice {
                first_unit: 3,
                units: 3,
            },
            Slice {
                first_unit: 6,
                units: 2,
            },
        ];
        assert_eq!(
            split_budget(Limit::Bytes(8 * 512), 512, &slices),
            vec![3, 3, 2]
        );
        assert_eq!(
            split_budget(Limit::Bytes(16 * 512 + 7), 512, &slices),
            vec![6, 6, 4]
        );
        let t = split_budget(Limit::Time(Duration::from_secs(1)), 512, &slices);
        assert!(t.iter().all(|&b| b == u64::MAX));
    }

    #[test]
    fn sequential_fill_of_the_region_writes_every_block() {
        // The prefill case: --size equal to the region must cover it all,
        // however unevenly the workers progress.
        let dev = Arc::new(MemBlockIo::new(1 << 20, 512));
        let mut p = params(Pattern::Write, false);
        p.limit = Limit::Bytes(1 << 20);
        run(Target::Blocking(dev.clone()), &p, &opts()).expect("fill");
        let mut all = vec![0u8; 1 << 20];
        dev.read_at(&mut all, 0).expect("read");
        for (i, block) in all.chunks(4096).enumerate() {
            assert!(block.iter().any(|&b| b != 0), "block {i} never written");
        }
    }

    #[test]
    fn time_limit_stops() {
        let dev = Arc::new(MemBlockIo::new(1 << 20, 512));
        let mut p = params(Pattern::Randwrite, false);
        p.limit = Limit::Time(Duration::from_millis(200));
        let t = Instant::now();
        let r = run(Target::Blocking(dev), &p, &opts()).expect("run");
        assert!(t.elapsed() < Duration::from_secs(5));
        assert!(r.elapsed_s >= 0.19, "{}", r.elapsed_s);
        assert!(r.total.ops > 0);
    }

    #[test]
    fn pipelined_queues_use_full_depth() {
        let dev: Arc<DynBlockIo> = Arc::new(MemBlockIo::new(1 << 20, 512));
        let queues: Vec<Box<dyn IoQueue>> = (0..2)
            .map(|_| Box::new(BlockingQueue::new(Arc::clone(&dev), 8)) as Box<dyn IoQueue>)
            .collect();
        let mut p = params(Pattern::Mixed, true);
        p.queue_depth = 8;
        let t = Target::Pipelined {
            size: dev.size(),
            block_size: dev.block_size(),
            queues,
        };
        let r = run(t, &p, &opts()).expect("run");
        assert_eq!(r.workers, 2);
        let v = r.verify.expect("verify report");
        assert_eq!(v.failures, 0, "{v:?}");
        assert!(v.blocks_checked > 0);
    }

    #[test]
    fn verify_passes_on_a_correct_device() {
        for pattern in [
            Pattern::Randwrite,
            Pattern::Mixed,
            Pattern::Randread,
            Pattern::Write,
        ] {
            let dev = Arc::new(MemBlockIo::new(1 << 20, 512));
            let r = run(Target::Blocking(dev), &params(pattern, true), &opts()).expect("run");
            let v = r.verify.expect("verify report");
            assert_eq!(v.failures, 0, "{pattern:?} {v:?}");
            assert!(v.blocks_checked > 0, "{pattern:?}");
        }
    }

    /// A device that misbehaves on one chosen offset.
    struct Faulty {
        inner: MemBlockIo,
        bad_offset: u64,
        fault: Fault,
    }

    #[derive(Clone, Copy, Debug)]
    enum Fault {
        /// Acknowledge writes to the bad offset after the first without storing them.
        Lose,
        /// Store only the first 512 bytes of writes after the first.
        Tear,
        /// Store writes to the bad offset one block earlier.
        Misplace,
    }

    impl BlockIo for Faulty {
        fn size(&self) -> u64 {
            self.inner.size()
        }
        fn block_size(&self) -> u32 {
            self.inner.block_size()
        }
        fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
            self.inner.read_at(buf, offset)
        }
        fn write_at(&self, buf: &[u8], offset: u64) -> io::Result<()> {
            if offset != self.bad_offset {
                return self.inner.write_at(buf, offset);
            }
            let mut cur = vec![0u8; buf.len()];
            self.inner.read_at(&mut cur, offset)?;
            let first = cur[..8] != *b"FFBNCHv1";
            match self.fault {
                _ if first => self.inner.write_at(buf, offset),
                Fault::Lose => Ok(()),
                Fault::Tear => self.inner.write_at(&buf[..512], offset),
                Fault::Misplace => self.inner.write_at(buf, offset - buf.len() as u64),
            }
        }
        fn flush(&self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn verify_detects_lost_torn_and_misplaced_writes() {
        let bad = 40 * 4096;
        for fault in [Fault::Lose, Fault::Tear, Fault::Misplace] {
            let dev = Arc::new(Faulty {
                inner: MemBlockIo::new(64 * 4096, 512),
                bad_offset: bad,
                fault,
            });
            // Sequential writes over the whole region, twice: the second
            // pass is what the fault corrupts.
            let mut p = params(Pattern::Write, true);
            p.queues = 1;
            p.queue_depth = 1;
            p.limit = Limit::Bytes(2 * 64 * 4096);
            let r = run(Target::Blocking(dev), &p, &opts()).expect("run");
            let v = r.verify.expect("verify report");
            let first = v.first_bad.clone().expect("a failure");
            match fault {
                Fault::Lose => {
                    assert_eq!(first.offset, bad);
                    assert_eq!(
                        first.mismatch,
                        Mismatch::StaleGeneration {
                            expected: 2,
                            found: 1
                        }
                    );
                }
                Fault::Tear => {
                    assert_eq!(first.offset, bad);
                    assert_eq!(first.mismatch, Mismatch::Torn);
                }
                Fault::Misplace => {
                    // The block before holds the misplaced unit; the bad
                    // offset itself still has the old generation.
                    assert_eq!(first.offset, bad - 4096, "{v:?}");
                    assert_eq!(first.mismatch, Mismatch::Misplaced { found_offset: bad });
                    assert_eq!(v.failures, 2, "{v:?}");
                }
            }
        }
    }

    #[test]
    fn block_size_must_match_the_device() {
        let dev = Arc::new(MemBlockIo::new(1 << 20, 4096));
        let mut p = params(Pattern::Randread, false);
        p.block_size = 512; // not a multiple of the device block size
        assert!(matches!(
            run(Target::Blocking(dev), &p, &opts()),
            Err(BenchError::InvalidParams(_))
        ));
    }
}
