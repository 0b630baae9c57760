//! HOT PATH: one job = one core's closed loop. `queue_depth` slots, each with a pool buffer
//! allocated once, are kept in flight: a slot's completion callback records the latency and
//! resubmits the slot at once. A poller (every reactor iteration) handles what completions
//! cannot: slots parked by `--rate` or by a busy target, the end of the ramp, the end of the run.
//!
//! Per I/O: one `ticks()` (a completion's tick is also the resubmission's), one PRNG draw or two, one histogram record, no allocation, no lock,
//! no syscall (beyond what the target does). Single-threaded by construction: the job, its
//! slots and its target live on one reactor, and completions never run inside `submit` (the
//! [`Target`] contract), so the `RefCell` borrows below never nest.

use super::offsets::{Layout, OffsetGen};
use super::rate::TokenBucket;
use super::rng::Rng;
use super::spec::WorkloadSpec;
use super::target::{Direction, SubmitError, Target};
use super::verify::{fresh_run_id, Verifier};
use crate::stats::{JobStats, LiveCounters, TickConverter};
use keel_bdev::{IoStatus, IoVec};
use keel_reactor::pool::{self, DmaBuf};
use keel_reactor::{PollStatus, PollerId};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Where a job runs: its core and its rank among the run's jobs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Placement {
    /// The reactor core.
    pub core: u32,
    /// Index of this job, `0..jobs`.
    pub index: u32,
    /// Number of jobs in the run.
    pub jobs: u32,
}

/// Log at most this many I/O errors per job (the count is always exact).
const LOGGED_ERRORS: u64 = 8;
/// How long in-flight I/O may outlive the end of the run before the job complains (and again
/// every such period), in seconds.
const DRAIN_WARN_SECS: u64 = 5;

/// Phases of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Created, not started.
    Idle,
    /// Running, not yet counting.
    Ramp,
    /// Running and counting.
    Measure,
    /// Past the end: no new I/O, waiting for the in-flight ones.
    Draining,
    /// Every slot retired.
    Done,
}

/// One queue slot: a buffer and the I/O it carries.
struct Slot<T: Target> {
    job: *const Job<T>,
    idx: u32,
    /// Start of `_buf`'s memory (stable: the pool never moves a buffer).
    data: *mut u8,
    /// Keeps the buffer allocated; only reached through `data`.
    _buf: DmaBuf,
    dir: Cell<Direction>,
    offset_blocks: Cell<u64>,
    submit_tick: Cell<u64>,
}

/// Which positions this job wrote in this run (only kept when reads are verified): a bit is
/// set when a write completes successfully and cleared when one fails (the position's contents
/// are then unknown). Reads are judged only where the bit is set (the `--verify` contract in
/// `super::verify`).
struct WrittenMap {
    /// First position the job owns.
    first: u64,
    words: Vec<u64>,
}

impl WrittenMap {
    fn new(first: u64, len: u64) -> WrittenMap {
        WrittenMap {
            first,
            words: vec![0; len.div_ceil(64) as usize],
        }
    }
    #[inline]
    fn bit(&self, pos: u64) -> (usize, u64) {
        let i = pos - self.first;
        ((i / 64) as usize, 1u64 << (i % 64))
    }
    #[inline]
    fn set(&mut self, pos: u64) {
        let (w, m) = self.bit(pos);
        self.words[w] |= m;
    }
    #[inline]
    fn clear(&mut self, pos: u64) {
        let (w, m) = self.bit(pos);
        self.words[w] &= !m;
    }
    #[inline]
    fn get(&self, pos: u64) -> bool {
        let (w, m) = self.bit(pos);
        self.words[w] & m != 0
    }
}

/// Verification state of a job.
struct VerifyState {
    verifier: Verifier,
    /// Check reads (false when the target stores nothing).
    check_reads: bool,
    written: Option<WrittenMap>,
    generation: u32,
}

/// The mutable part of a job.
struct State {
    phase: Phase,
    rng: Rng,
    /// One generator per slot with `--verify` lanes, else one shared.
    gens: Box<[OffsetGen]>,
    layout: Layout,
    bucket: Option<TokenBucket>,
    /// Slots waiting for a rate token or for the target to accept I/O.
    parked: Vec<u32>,
    /// Slots not retired (in flight or parked).
    active: u32,
    ramp_end: u64,
    end: u64,
    measure_start: u64,
    /// Next tick at which a slow drain is reported.
    drain_warn_at: u64,
    verify: Option<VerifyState>,
    stats: JobStats,
    poller: Option<PollerId>,
    waker: Option<Waker>,
}

/// One core's closed-loop workload against `T`.
pub struct Job<T: Target> {
    target: T,
    slots: Box<[Slot<T>]>,
    st: RefCell<State>,
    live: Arc<LiveCounters>,
    conv: TickConverter,
    tick_rate: u64,
    io_bytes: u64,
    /// Reads out of 100.
    read_percent: u64,
    ramp_ticks: u64,
    run_ticks: u64,
}

impl<T: Target + 'static> Job<T> {
    /// Build the job on its core: check the spec against the target, allocate every buffer and
    /// histogram now (nothing is allocated once it runs).
    #[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one check per spec field, then the allocations
    pub fn new(
        target: T,
        spec: &WorkloadSpec,
        place: Placement,
        live: Arc<LiveCounters>,
    ) -> Result<Rc<Job<T>>, String> {
        spec.validate()?;
        let layout = Layout::new(
            spec,
            target.block_size(),
            target.num_blocks(),
            place.index,
            place.jobs,
        )?;
        let qd = spec.queue_depth;
        let gens: Box<[OffsetGen]> = if layout.per_slot_lanes {
            (0..qd).map(|s| layout.generator(spec, s)).collect()
        } else {
            Box::new([layout.generator(spec, 0)])
        };
        let verify = if spec.verify {
            // A run id of this job alone, never derived from the seed: blocks of any earlier run
            // (same seed or not) can never pass for this run's.
            let verifier = Verifier::new(fresh_run_id(), target.block_size())?;
            let check_reads = target.stores_data();
            if !check_reads && spec.read_percent > 0 {
                log::warn!(
                    "{} stores no data: --verify stamps writes but cannot check reads",
                    target.describe()
                );
            }
            let written = check_reads.then(|| {
                let len = layout.lane_len * u64::from(qd);
                WrittenMap::new(u64::from(place.index) * len, len)
            });
            Some(VerifyState {
                verifier,
                check_reads,
                written,
                generation: 0,
            })
        } else {
            None
        };
        let mut bufs = Vec::with_capacity(qd as usize);
        for _ in 0..qd {
            let buf = pool::alloc(spec.io_size as usize).map_err(|e| {
                format!(
                    "cannot allocate {qd} buffers of {} bytes on core {}: {e}",
                    spec.io_size, place.core
                )
            })?;
            bufs.push(buf);
        }
        let tick_rate = keel_reactor::tick_rate();
        let secs_to_ticks = |d: std::time::Duration| {
            u64::try_from(d.as_nanos() * u128::from(tick_rate) / 1_000_000_000)
                .unwrap_or(u64::MAX / 4)
        };
        let mut rng_seed = spec.seed ^ u64::from(place.index).wrapping_mul(0xA076_1D64_78BD_642F);
        let rng = Rng::new(super::rng::splitmix64(&mut rng_seed));
        let state = State {
            phase: Phase::Idle,
            rng,
            gens,
            layout,
            bucket: None,
            parked: Vec::with_capacity(qd as usize),
            active: 0,
            ramp_end: 0,
            end: 0,
            measure_start: 0,
            drain_warn_at: 0,
            verify,
            stats: JobStats::new(place.core),
            poller: None,
            waker: None,
        };
        let rate = spec.rate_iops;
        let job = Rc::new_cyclic(|weak: &Weak<Job<T>>| {
            let job_ptr = weak.as_ptr();
            let slots = bufs
                .into_iter()
                .enumerate()
                .map(|(i, mut buf)| Slot {
                    job: job_ptr,
                    idx: i as u32,
                    data: buf.as_mut_ptr(),
                    _buf: buf,
                    dir: Cell::new(Direction::Read),
                    offset_blocks: Cell::new(0),
                    submit_tick: Cell::new(0),
                })
                .collect();
            Job {
                target,
                slots,
                st: RefCell::new(state),
                live,
                conv: TickConverter::new(tick_rate),
                tick_rate,
                io_bytes: u64::from(spec.io_size),
                read_percent: u64::from(spec.read_percent),
                ramp_ticks: secs_to_ticks(spec.ramp_time),
                run_ticks: secs_to_ticks(spec.run_time),
            }
        });
        if let Some(r) = rate {
            // Bursts of up to 1 ms of tokens (at least one), so a rate cap does not turn into
            // lock-step submissions at high rates.
            let burst = (r / 1000).clamp(1, u64::from(qd));
            job.st.borrow_mut().bucket = Some(TokenBucket::new(r, burst, tick_rate, 0));
        }
        Ok(job)
    }

    /// What the job drives.
    pub fn describe(&self) -> String {
        self.target.describe()
    }

    /// Start the ramp (or the measured phase) at tick `start` (shared by every job of a run):
    /// register the poller and submit every slot.
    pub fn start(self: &Rc<Self>, start: u64) {
        {
            let mut st = self.st.borrow_mut();
            if st.phase != Phase::Idle {
                log::warn!("job on core {} started twice", st.stats.core);
                return;
            }
            st.ramp_end = start.saturating_add(self.ramp_ticks);
            st.end = st.ramp_end.saturating_add(self.run_ticks);
            st.drain_warn_at = st.end.saturating_add(DRAIN_WARN_SECS * self.tick_rate);
            let now = keel_reactor::ticks();
            if let Some(b) = &mut st.bucket {
                b.reset(now);
            }
            if self.ramp_ticks == 0 {
                st.phase = Phase::Measure;
                st.measure_start = start;
            } else {
                st.phase = Phase::Ramp;
            }
            st.active = self.slots.len() as u32;
            let weak = Rc::downgrade(self);
            st.poller = Some(keel_reactor::register_poller(
                "keel-perf-job",
                None,
                move || weak.upgrade().map_or(PollStatus::Idle, |job| job.poll()),
            ));
        }
        for slot in self.slots.iter() {
            self.kick(slot, None);
        }
    }

    /// Wait until every slot retired and return what was measured.
    pub async fn finished(self: &Rc<Self>) -> JobStats {
        poll_fn(|cx| {
            let mut st = self.st.borrow_mut();
            if st.phase == Phase::Done {
                Poll::Ready(())
            } else {
                st.waker = Some(cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        let mut st = self.st.borrow_mut();
        if let Some(id) = st.poller.take() {
            keel_reactor::unregister_poller(id);
        }
        std::mem::replace(&mut st.stats, JobStats::new(0))
    }

    /// Submit the next I/O of `slot`, or park or retire it. `now` is the caller's fresh tick
    /// if it has one (a completion does): reading the TSC is a large share of the per-I/O cost
    /// on virtual machines, so the completion tick doubles as the next submission tick.
    #[inline]
    fn kick(&self, slot: &Slot<T>, now: Option<u64>) {
        let mut st = self.st.borrow_mut();
        let now = now.unwrap_or_else(keel_reactor::ticks);
        if now >= st.end || matches!(st.phase, Phase::Draining | Phase::Done) {
            self.retire(&mut st);
            return;
        }
        if let Some(b) = &mut st.bucket {
            if !b.try_take(now) {
                st.parked.push(slot.idx);
                return;
            }
        }
        let st = &mut *st;
        let is_read = self.read_percent == 100
            || (self.read_percent != 0 && st.rng.below(100) < self.read_percent);
        let g = if st.gens.len() == 1 {
            0
        } else {
            slot.idx as usize
        };
        let offset = st.gens[g].next(&mut st.rng);
        let dir = if is_read {
            Direction::Read
        } else {
            Direction::Write
        };
        let mut submit_tick = now;
        if let Some(v) = &mut st.verify {
            // SAFETY: the slot is idle (its previous I/O completed or it never ran): nothing
            // else reads or writes its buffer of `io_bytes` bytes until it is submitted below.
            let buf = unsafe { std::slice::from_raw_parts_mut(slot.data, self.io_bytes as usize) };
            match dir {
                Direction::Write => {
                    v.generation = v.generation.wrapping_add(1);
                    v.verifier.stamp(buf, offset, v.generation);
                }
                Direction::Read if v.check_reads => v.verifier.poison(buf),
                Direction::Read => {}
            }
            // Stamping and CRC take microseconds: not part of the I/O's latency.
            submit_tick = keel_reactor::ticks();
        }
        slot.dir.set(dir);
        slot.offset_blocks.set(offset);
        let blocks = st.layout.blocks_per_io;
        // The state stays borrowed across `submit`: targets never complete inline, so nothing
        // re-enters the job meanwhile.
        slot.submit_tick.set(submit_tick);
        // SAFETY: `data` points to `io_bytes` bytes owned by the slot's buffer, which lives as
        // long as the job; the job outlives every I/O (it finishes only when all slots retired),
        // and the buffer is not touched until the completion.
        let iov = unsafe { IoVec::from_raw_parts(slot.data, self.io_bytes as usize) };
        let ctx = slot as *const Slot<T> as usize;
        match self
            .target
            .submit(dir, iov, offset, blocks, on_complete::<T>, ctx)
        {
            Ok(()) => {}
            Err(SubmitError::Busy) => st.parked.push(slot.idx),
            Err(SubmitError::Rejected(why)) => {
                st.stats.io_errors += 1;
                if st.stats.io_errors <= LOGGED_ERRORS {
                    log::error!(
                        "core {}: {dir:?} of {blocks} blocks at {offset} refused: {why}; \
                         slot {} stops",
                        st.stats.core,
                        slot.idx
                    );
                }
                self.retire(st);
            }
        }
    }

    /// One slot leaves the loop; the last one ends the job.
    fn retire(&self, st: &mut State) {
        st.active -= 1;
        if st.active == 0 {
            if st.phase == Phase::Measure || st.phase == Phase::Ramp {
                self.end_measure(st, keel_reactor::ticks());
            }
            st.phase = Phase::Done;
            if let Some(w) = st.waker.take() {
                w.wake();
            }
        }
    }

    /// Close the measured phase at `now` (capped at the planned end).
    fn end_measure(&self, st: &mut State, now: u64) {
        if st.phase == Phase::Measure {
            st.stats.runtime_ns = self
                .conv
                .ns(now.min(st.end).saturating_sub(st.measure_start));
        }
        st.phase = Phase::Draining;
    }

    /// A slot's I/O finished.
    #[inline]
    fn complete(&self, slot: &Slot<T>, status: IoStatus) {
        let now = keel_reactor::ticks();
        let lat_ns = self.conv.ns(now.saturating_sub(slot.submit_tick.get()));
        {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            let dir = slot.dir.get();
            let offset = slot.offset_blocks.get();
            if status == IoStatus::Success {
                self.live.add(self.io_bytes, lat_ns);
                if st.phase == Phase::Measure && now < st.end {
                    let d = match dir {
                        Direction::Read => &mut st.stats.read,
                        Direction::Write => &mut st.stats.write,
                    };
                    d.record(lat_ns, self.io_bytes);
                }
                if let Some(v) = &mut st.verify {
                    self.verify_done(v, &mut st.stats, &st.layout, slot, dir, offset);
                }
            } else {
                st.stats.io_errors += 1;
                if dir == Direction::Write {
                    // A failed write may have changed some of its blocks: no longer judged.
                    if let Some(w) = st.verify.as_mut().and_then(|v| v.written.as_mut()) {
                        let pos = (offset - st.layout.start_block) / st.layout.blocks_per_io;
                        w.clear(pos);
                    }
                }
                if st.stats.io_errors <= LOGGED_ERRORS {
                    log::error!(
                        "core {}: {dir:?} at block {offset} failed: {status:?}",
                        st.stats.core
                    );
                }
            }
        }
        self.kick(slot, Some(now));
    }

    /// `--verify` bookkeeping after a successful I/O.
    #[inline]
    fn verify_done(
        &self,
        v: &mut VerifyState,
        stats: &mut JobStats,
        layout: &Layout,
        slot: &Slot<T>,
        dir: Direction,
        offset: u64,
    ) {
        let pos = (offset - layout.start_block) / layout.blocks_per_io;
        match dir {
            Direction::Write => {
                if let Some(w) = &mut v.written {
                    w.set(pos);
                }
            }
            Direction::Read if v.check_reads => {
                let blocks = layout.blocks_per_io;
                if !v.written.as_ref().is_some_and(|w| w.get(pos)) {
                    // Not written by this run (yet): whatever is there is not ours to judge.
                    stats.unjudged_blocks += blocks;
                    return;
                }
                // SAFETY: the read completed: the slot's buffer is idle and only read here.
                let buf = unsafe { std::slice::from_raw_parts(slot.data, self.io_bytes as usize) };
                for (i, block) in buf.chunks_exact(v.verifier.block_size()).enumerate() {
                    let lba = offset + i as u64;
                    match v.verifier.check(block, lba) {
                        Ok(()) => stats.verified_blocks += 1,
                        Err(c) => self.report_corrupt(stats, lba, c),
                    }
                }
            }
            Direction::Read => {}
        }
    }

    fn report_corrupt(&self, stats: &mut JobStats, lba: u64, what: super::verify::Corruption) {
        if stats.verify_errors < LOGGED_ERRORS {
            log::error!(
                "verify: {}: block {lba} is corrupt: {what}",
                self.target.describe()
            );
        }
        stats.corrupt(lba, what);
    }

    /// Every reactor iteration: phase changes and parked slots.
    fn poll(&self) -> PollStatus {
        let now = keel_reactor::ticks();
        let mut work = false;
        {
            let mut st = self.st.borrow_mut();
            let st = &mut *st;
            if st.phase == Phase::Ramp && now >= st.ramp_end {
                st.stats.reset();
                st.measure_start = now;
                st.phase = Phase::Measure;
                work = true;
            }
            if matches!(st.phase, Phase::Ramp | Phase::Measure) && now >= st.end {
                self.end_measure(st, now);
                work = true;
            }
            if st.phase == Phase::Draining && now >= st.drain_warn_at {
                log::warn!(
                    "core {}: {} I/O still in flight {}s after the end of the run",
                    st.stats.core,
                    st.active,
                    self.conv.ns(now - st.end) / 1_000_000_000
                );
                st.drain_warn_at = now.saturating_add(DRAIN_WARN_SECS * self.tick_rate);
            }
        }
        // Resubmit parked slots, oldest last (LIFO is fine: all are equivalent), at most as
        // many as are parked now so a slot parked again waits for the next iteration.
        let parked = self.st.borrow().parked.len();
        for _ in 0..parked {
            let Some(idx) = self.st.borrow_mut().parked.pop() else {
                break;
            };
            work = true;
            self.kick(&self.slots[idx as usize], None);
        }
        if work {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }
}

/// The completion callback of every job I/O.
fn on_complete<T: Target + 'static>(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the address of a slot of a live job, given at submission; the job (and
    // its slot array, which never moves) lives until every slot retired, which happens only
    // after this completion resubmits or retires the slot. Everything runs on the job's core.
    let slot = unsafe { &*(ctx as *const Slot<T>) };
    // SAFETY: as above; `job` was set from the job's `Rc` before any I/O.
    let job = unsafe { &*slot.job };
    job.complete(slot, status);
}
