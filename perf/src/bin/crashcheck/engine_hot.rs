//! HOT PATH: the checker's I/O loop on one reactor core. A poller keeps `qd` commands in
//! flight over the namespaces' queue pairs; completions update the ledger and the journal and
//! check what reads return. Slots and their buffers are allocated once; a block never has two
//! commands in flight (so the order of two writes to it is always known).
//!
//! Write mode: random writes (and optionally reads) inside clusters already touched, plus
//! first touches of new clusters at a steady rate, until the duration ends or a connection
//! fails (the target died). Verify mode: read the whole region of every namespace once.

use crate::block::{self, Found};
use crate::journal::Journal;
use crate::ledger::{Ledger, Verdict, Violation};
use keel_bdev::{IoStatus, IoVec};
use keel_nvmf_host::{Controller, IoQpair, SubmitError};
use keel_perf::workload::rng::Rng;
use keel_reactor::PollerId;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::mpsc::Sender;

/// Violations kept with their details (all are counted).
const KEPT_VIOLATIONS: usize = 64;
/// How long outstanding commands may take once the run stops, in seconds.
const DRAIN_SECS: u64 = 10;
/// Tries to find a free extent before giving up for this poll.
const PICK_TRIES: usize = 8;

/// What the run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Random verifying writes until the duration ends or the target dies.
    Write,
    /// Read and check every block of the region once.
    Verify,
}

/// The workload's settings (sizes in logical blocks).
#[derive(Debug, Clone)]
pub struct Settings {
    /// Write or verify.
    pub mode: Mode,
    /// Commands in flight (over all namespaces).
    pub qd: usize,
    /// Alignment and size step of every I/O.
    pub align_blocks: u64,
    /// Smallest I/O.
    pub min_io_blocks: u64,
    /// Largest I/O.
    pub max_io_blocks: u64,
    /// The volume's cluster size (first touches are counted in clusters).
    pub cluster_blocks: u64,
    /// New clusters touched per second (write mode).
    pub fresh_per_sec: f64,
    /// Percentage of reads among the commands (write mode).
    pub read_pct: u64,
    /// Run time limit in ticks from the start.
    pub duration_ticks: u64,
    /// PRNG seed.
    pub seed: u64,
}

/// Why the run ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// The duration elapsed.
    Duration,
    /// Every block was read (verify mode).
    Complete,
    /// A connection to the target failed.
    TargetLost,
    /// An error stopped the run (journal not writable, command refused).
    Failed,
}

/// Counters of a run.
#[derive(Debug, Clone, Default)]
pub struct Counters {
    /// Writes submitted.
    pub writes: u64,
    /// Writes acknowledged.
    pub writes_acked: u64,
    /// Blocks acknowledged.
    pub blocks_acked: u64,
    /// Writes that failed or were in flight when the connection died (may have landed).
    pub writes_uncertain: u64,
    /// Reads completed successfully.
    pub reads: u64,
    /// Blocks checked by reads.
    pub blocks_checked: u64,
    /// Checked blocks never written, reading as zeroes.
    pub unwritten: u64,
    /// Checked blocks reading as their last acknowledged generation.
    pub acked_ok: u64,
    /// Checked blocks where an unacknowledged write had landed.
    pub landed: u64,
    /// Checked blocks where an unacknowledged write had not landed.
    pub not_landed: u64,
    /// Clusters touched for the first time.
    pub fresh_clusters: u64,
    /// Commands that failed while the connection was up.
    pub io_errors: u64,
    /// Blocks that broke the rules.
    pub violations: u64,
}

/// The outcome of a run.
#[derive(Debug)]
pub struct Report {
    /// Why it ended.
    pub end: End,
    /// Counters.
    pub counters: Counters,
    /// The first violations.
    pub violations: Vec<Violation>,
    /// Errors worth reporting (I/O errors while connected, journal failures).
    pub errors: Vec<String>,
    /// Per namespace (verify mode): its clusters as the reads found them.
    pub clusters: Vec<ClusterCount>,
}

/// What a full read of a namespace found, per cluster (for the allocation check).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ClusterCount {
    /// Namespace id.
    pub nsid: u32,
    /// Clusters holding data (at least one block not zeroes): these must be allocated.
    pub with_data: u64,
    /// Clusters with no data but a write of unknown outcome: these may be allocated.
    pub maybe_allocated: u64,
}

/// One namespace being driven.
pub struct NsRun {
    /// Its queue pair (on this core).
    pub qp: IoQpair,
    /// Namespace id.
    pub nsid: u32,
    /// Index of its ledger in [`Ledger::namespaces`].
    pub ledger: usize,
    /// Blocks of the region (from LBA 0).
    pub region_blocks: u64,
    /// Per block of the region: a command is in flight on it.
    busy: Vec<bool>,
    /// Clusters written before (write mode picks inside them).
    touched: Vec<u64>,
    /// Clusters never written.
    untouched: Vec<u64>,
    /// Next LBA to read (verify mode).
    next_lba: u64,
    /// Per cluster: a read found data in it.
    has_data: Vec<bool>,
}

impl NsRun {
    /// Set up a namespace of `region_blocks`, knowing from `ledger` which clusters were
    /// touched before.
    pub fn new(qp: IoQpair, ledger: &mut Ledger, region_blocks: u64, cluster_blocks: u64) -> NsRun {
        let nsid = qp.namespace().nsid;
        let ns = ledger.ns_mut(nsid);
        ns.reserve(region_blocks);
        let clusters = region_blocks.div_ceil(cluster_blocks);
        let (mut touched, mut untouched) = (Vec::new(), Vec::new());
        for c in 0..clusters {
            let end = ((c + 1) * cluster_blocks).min(region_blocks);
            if (c * cluster_blocks..end).any(|l| ns.touched(l)) {
                touched.push(c);
            } else {
                untouched.push(c);
            }
        }
        touched.reserve(untouched.len());
        let idx = ledger
            .namespaces
            .iter()
            .position(|n| n.nsid == nsid)
            .unwrap_or(0);
        NsRun {
            qp,
            nsid,
            ledger: idx,
            region_blocks,
            busy: vec![false; region_blocks as usize],
            touched,
            untouched,
            next_lba: 0,
            has_data: vec![false; clusters as usize],
        }
    }
}

/// One command slot and its buffer.
struct Slot {
    ns: usize,
    lba: u64,
    blocks: u64,
    /// Generation written (0: a read).
    generation: u64,
    buf: Vec<u8>,
}

/// The whole run's state, owned by the reactor core (thread-local).
pub struct Engine {
    cfg: Settings,
    block_size: usize,
    ledger: Ledger,
    journal: Journal,
    ns: Vec<NsRun>,
    slots: Vec<Slot>,
    free: Vec<usize>,
    rng: Rng,
    counters: Counters,
    violations: Vec<Violation>,
    errors: Vec<String>,
    deadline: u64,
    next_fresh: u64,
    fresh_period: u64,
    next_ns: usize,
    stop: Option<(End, u64)>,
    ctrlr: Option<Controller>,
    done: Option<Sender<Report>>,
}

thread_local! {
    static ENGINE: RefCell<Option<Engine>> = const { RefCell::new(None) };
}

impl Engine {
    /// Build the engine; `ctrlr` is kept (and shut down or dropped at the end).
    pub fn new(
        cfg: Settings,
        block_size: u32,
        ledger: Ledger,
        journal: Journal,
        ns: Vec<NsRun>,
        ctrlr: Controller,
        done: Sender<Report>,
    ) -> Engine {
        let bytes = (cfg.max_io_blocks * u64::from(block_size)) as usize;
        let slots = (0..cfg.qd)
            .map(|_| Slot {
                ns: 0,
                lba: 0,
                blocks: 0,
                generation: 0,
                buf: vec![0u8; bytes],
            })
            .collect();
        let now = keel_reactor::ticks();
        let rate = keel_reactor::tick_rate();
        let fresh_period = if cfg.fresh_per_sec > 0.0 {
            (rate as f64 / cfg.fresh_per_sec) as u64
        } else {
            u64::MAX
        };
        Engine {
            block_size: block_size as usize,
            ledger,
            journal,
            ns,
            free: (0..cfg.qd).rev().collect(),
            slots,
            rng: Rng::new(cfg.seed),
            counters: Counters::default(),
            violations: Vec::new(),
            errors: Vec::new(),
            deadline: now.saturating_add(cfg.duration_ticks),
            next_fresh: now,
            fresh_period,
            next_ns: 0,
            stop: None,
            ctrlr: Some(ctrlr),
            done: Some(done),
            cfg,
        }
    }

    /// Install the engine on this core and start its poller.
    pub fn start(self) {
        ENGINE.with(|e| *e.borrow_mut() = Some(self));
        let me: Rc<Cell<Option<PollerId>>> = Rc::new(Cell::new(None));
        let id = Rc::clone(&me);
        let pid = keel_reactor::register_poller("crashcheck", None, move || {
            let finished = ENGINE.with(|e| match e.try_borrow_mut() {
                Ok(mut g) => g.as_mut().is_none_or(Engine::poll),
                Err(_) => false,
            });
            if finished {
                if let Some(id) = id.take() {
                    keel_reactor::unregister_poller(id);
                }
                if let Some(eng) = ENGINE.with(|e| e.borrow_mut().take()) {
                    keel_reactor::spawn_local(eng.finish());
                }
            }
            keel_reactor::PollStatus::Busy
        });
        // The poller first runs from the reactor loop, after this returns.
        me.set(Some(pid));
    }

    fn stop(&mut self, why: End) {
        if self.stop.is_none() {
            let grace = DRAIN_SECS * keel_reactor::tick_rate();
            self.stop = Some((why, keel_reactor::ticks().saturating_add(grace)));
            if why == End::TargetLost {
                let _ = self.journal.flush();
            }
        }
    }

    /// One round: stop conditions, then top up the queue. Returns whether the run is over.
    fn poll(&mut self) -> bool {
        let now = keel_reactor::ticks();
        if self.ns.iter().any(|n| n.qp.is_failed()) {
            self.stop(End::TargetLost);
        } else if self.cfg.mode == Mode::Write && now > self.deadline {
            self.stop(End::Duration);
        }
        if let Some((_, drain_end)) = self.stop {
            if self.free.len() == self.slots.len() {
                return true;
            }
            if now > drain_end {
                self.abandon_outstanding();
                return true;
            }
            return false;
        }
        while let Some(&slot) = self.free.last() {
            let picked = match self.cfg.mode {
                Mode::Write => self.pick_random(slot),
                Mode::Verify => self.pick_next(slot),
            };
            if !picked {
                break;
            }
            self.free.pop();
            if !self.submit(slot) {
                break;
            }
        }
        if self.cfg.mode == Mode::Verify
            && self.free.len() == self.slots.len()
            && self.ns.iter().all(|n| n.next_lba >= n.region_blocks)
        {
            self.stop(End::Complete);
        }
        false
    }

    /// Commands that never completed after the run stopped: their writes may have landed;
    /// the queue pairs (dropped next) abort them.
    fn abandon_outstanding(&mut self) {
        let mut free = vec![false; self.slots.len()];
        for &f in &self.free {
            free[f] = true;
        }
        let mut n = 0;
        for (i, s) in self.slots.iter().enumerate() {
            if free[i] {
                continue;
            }
            n += 1;
            if s.generation != 0 {
                let (nsid, li) = (self.ns[s.ns].nsid, self.ns[s.ns].ledger);
                self.counters.writes_uncertain += 1;
                self.ledger.namespaces[li].maybe(s.lba, s.blocks, s.generation);
                if let Err(e) = self.journal.maybe(nsid, s.lba, s.blocks, s.generation) {
                    self.errors.push(e);
                }
            }
        }
        self.errors.push(format!(
            "{n} commands did not complete within {DRAIN_SECS} s of the stop"
        ));
        self.free = (0..self.slots.len()).collect();
    }

    /// A random extent (block count) inside one cluster of namespace `ns`.
    fn extent_in(&mut self, ns: usize, cluster: u64) -> (u64, u64) {
        let c = &self.cfg;
        let start = cluster * c.cluster_blocks;
        let end = ((cluster + 1) * c.cluster_blocks).min(self.ns[ns].region_blocks);
        let steps = ((end - start) / c.align_blocks).max(1);
        let lba = start + self.rng.below(steps) * c.align_blocks;
        let sizes = (c.max_io_blocks - c.min_io_blocks) / c.align_blocks + 1;
        let blocks = c.min_io_blocks + self.rng.below(sizes) * c.align_blocks;
        (lba, blocks.min(end - lba))
    }

    /// Write mode: choose the next command for `slot`. False if none fits now.
    fn pick_random(&mut self, slot: usize) -> bool {
        let now = keel_reactor::ticks();
        for _ in 0..PICK_TRIES {
            let ns = self.rng.below(self.ns.len() as u64) as usize;
            let n = &self.ns[ns];
            let fresh = !n.untouched.is_empty() && (n.touched.is_empty() || now >= self.next_fresh);
            let read = !fresh && self.rng.below(100) < self.cfg.read_pct;
            let fresh_i = self.rng.below(n.untouched.len().max(1) as u64) as usize;
            let cluster = if fresh {
                n.untouched[fresh_i]
            } else if n.touched.is_empty() {
                continue;
            } else {
                n.touched[self.rng.below(n.touched.len() as u64) as usize]
            };
            let (lba, blocks) = self.extent_in(ns, cluster);
            let n = &mut self.ns[ns];
            if n.busy[lba as usize..(lba + blocks) as usize]
                .iter()
                .any(|&b| b)
            {
                continue;
            }
            if fresh {
                n.untouched.swap_remove(fresh_i);
                n.touched.push(cluster);
                self.next_fresh = now.max(self.next_fresh).saturating_add(self.fresh_period);
                self.counters.fresh_clusters += 1;
            }
            let generation = if read {
                0
            } else {
                self.ledger.max_generation += 1;
                self.ledger.max_generation
            };
            self.prepare(slot, ns, lba, blocks, generation);
            return true;
        }
        false
    }

    /// Verify mode: the next extent to read, namespaces in turn.
    fn pick_next(&mut self, slot: usize) -> bool {
        for _ in 0..self.ns.len() {
            let ns = self.next_ns;
            self.next_ns = (self.next_ns + 1) % self.ns.len();
            let n = &self.ns[ns];
            if n.next_lba < n.region_blocks {
                let lba = n.next_lba;
                let blocks = self.cfg.max_io_blocks.min(n.region_blocks - lba);
                self.ns[ns].next_lba += blocks;
                self.prepare(slot, ns, lba, blocks, 0);
                return true;
            }
        }
        false
    }

    /// Fill the slot (stamp the blocks of a write) and mark its blocks busy.
    fn prepare(&mut self, slot: usize, ns: usize, lba: u64, blocks: u64, generation: u64) {
        let bs = self.block_size;
        let n = &mut self.ns[ns];
        if lba < n.region_blocks {
            let end = (lba + blocks).min(n.region_blocks);
            n.busy[lba as usize..end as usize].fill(true);
        }
        let nsid = n.nsid;
        let s = &mut self.slots[slot];
        (s.ns, s.lba, s.blocks, s.generation) = (ns, lba, blocks, generation);
        if generation != 0 {
            for (i, b) in s.buf[..blocks as usize * bs]
                .chunks_exact_mut(bs)
                .enumerate()
            {
                block::stamp(b, nsid, lba + i as u64, generation);
            }
        }
    }

    fn release(&mut self, slot: usize) {
        let s = &self.slots[slot];
        let n = &mut self.ns[s.ns];
        if s.lba < n.region_blocks {
            let end = (s.lba + s.blocks).min(n.region_blocks);
            n.busy[s.lba as usize..end as usize].fill(false);
        }
        self.free.push(slot);
    }

    /// Submit the prepared slot; false if the queue pair took nothing more this round.
    fn submit(&mut self, slot: usize) -> bool {
        let s = &mut self.slots[slot];
        let len = s.blocks as usize * self.block_size;
        // SAFETY: the slot's buffer is owned by the engine, which outlives every command (the
        // run ends only when all slots are free again, and the queue pairs are dropped before
        // the slots); nothing reads or writes the buffer until the command's completion.
        let iov = unsafe { IoVec::from_raw_parts(s.buf.as_mut_ptr(), len) };
        let qp = &self.ns[s.ns].qp;
        let r = if s.generation != 0 {
            qp.write(&[iov], s.lba, s.blocks as u32, on_done, slot)
        } else {
            qp.read(&[iov], s.lba, s.blocks as u32, on_done, slot)
        };
        let (generation, ns) = (s.generation, s.ns);
        match r {
            Ok(()) => {
                if generation != 0 {
                    self.counters.writes += 1;
                }
                true
            }
            Err(e) => {
                if generation != 0 && generation == self.ledger.max_generation {
                    // Not sent: the generation is free again.
                    self.ledger.max_generation -= 1;
                }
                self.release(slot);
                match e {
                    SubmitError::Busy => {}
                    SubmitError::Disconnected => self.stop(End::TargetLost),
                    SubmitError::Invalid(why) => {
                        self.errors.push(format!(
                            "namespace {}: command refused by the initiator: {why}",
                            self.ns[ns].nsid
                        ));
                        self.stop(End::Failed);
                    }
                }
                false
            }
        }
    }

    /// A command of `slot` completed.
    fn complete(&mut self, slot: usize, status: IoStatus) {
        let (ns, lba, blocks, generation) = {
            let s = &self.slots[slot];
            (s.ns, s.lba, s.blocks, s.generation)
        };
        let nsid = self.ns[ns].nsid;
        let li = self.ns[ns].ledger;
        let ok = status == IoStatus::Success;
        if !ok && !self.ns[ns].qp.is_failed() {
            self.counters.io_errors += 1;
            if self.errors.len() < KEPT_VIOLATIONS {
                let what = if generation != 0 { "write" } else { "read" };
                self.errors.push(format!(
                    "namespace {nsid}: {what} of {blocks} blocks at LBA {lba} failed: {status:?}"
                ));
            }
        }
        let journaled = if generation != 0 {
            if ok {
                self.counters.writes_acked += 1;
                self.counters.blocks_acked += blocks;
                self.ledger.namespaces[li].ack(lba, blocks, generation);
                self.journal.acked(nsid, lba, blocks, generation)
            } else {
                self.counters.writes_uncertain += 1;
                self.ledger.namespaces[li].maybe(lba, blocks, generation);
                self.journal.maybe(nsid, lba, blocks, generation)
            }
        } else if ok {
            self.counters.reads += 1;
            self.check(slot)
        } else {
            Ok(())
        };
        if let Err(e) = journaled {
            self.errors.push(e);
            self.stop(End::Failed);
        }
        self.release(slot);
    }

    /// Check every block a read returned.
    fn check(&mut self, slot: usize) -> Result<(), String> {
        let bs = self.block_size;
        let s = &self.slots[slot];
        let nsr = &mut self.ns[s.ns];
        let led = &mut self.ledger.namespaces[nsr.ledger];
        for (i, b) in s.buf[..s.blocks as usize * bs].chunks_exact(bs).enumerate() {
            let lba = s.lba + i as u64;
            let found = block::inspect(b, nsr.nsid, lba);
            self.counters.blocks_checked += 1;
            if found != Found::Zeroes {
                if let Some(d) = nsr
                    .has_data
                    .get_mut((lba / self.cfg.cluster_blocks) as usize)
                {
                    *d = true;
                }
            }
            match led.judge(lba, found) {
                Ok(v) => {
                    match v {
                        Verdict::Unwritten => self.counters.unwritten += 1,
                        Verdict::Acked => self.counters.acked_ok += 1,
                        Verdict::Landed => self.counters.landed += 1,
                        Verdict::NotLanded => self.counters.not_landed += 1,
                    }
                    if led.is_uncertain(lba) {
                        // Read after the restart: this is what the block holds from now on.
                        let g = match found {
                            Found::Stamped(g) => g,
                            _ => 0,
                        };
                        led.settle(lba, g);
                        self.journal.settled(nsr.nsid, lba, g)?;
                    }
                }
                Err(v) => {
                    self.counters.violations += 1;
                    if self.violations.len() < KEPT_VIOLATIONS {
                        self.violations.push(v);
                    }
                }
            }
        }
        Ok(())
    }

    /// The clusters of a namespace read in full: with data, and empty but maybe allocated.
    fn count_clusters(&self, n: &NsRun) -> ClusterCount {
        let with_data = n.has_data.iter().filter(|&&d| d).count() as u64;
        let mut maybe: Vec<u64> = self.ledger.namespaces[n.ledger]
            .ever_uncertain()
            .map(|l| l / self.cfg.cluster_blocks)
            .filter(|&c| !n.has_data.get(c as usize).copied().unwrap_or(false))
            .collect();
        maybe.sort_unstable();
        maybe.dedup();
        ClusterCount {
            nsid: n.nsid,
            with_data,
            maybe_allocated: maybe.len() as u64,
        }
    }

    /// After the last completion: flush the journal, close the controller, report.
    async fn finish(mut self) {
        let end = self.stop.map_or(End::Complete, |(e, _)| e);
        if let Err(e) = self.journal.flush() {
            self.errors.push(e);
        }
        let clusters = if end == End::Complete {
            self.ns.iter().map(|n| self.count_clusters(n)).collect()
        } else {
            Vec::new()
        };
        self.ns.clear(); // the queue pairs first
        if let Some(ctrlr) = self.ctrlr.take() {
            if end != End::TargetLost && !ctrlr.is_failed() {
                if let Err(e) = ctrlr.shutdown().await {
                    log::warn!("controller shutdown not acknowledged: {e}");
                }
            }
        }
        if let Some(tx) = self.done.take() {
            let _ = tx.send(Report {
                end,
                counters: self.counters.clone(),
                violations: std::mem::take(&mut self.violations),
                errors: std::mem::take(&mut self.errors),
                clusters,
            });
        }
    }
}

/// Completion callback of every command (`ctx` is the slot).
fn on_done(ctx: usize, status: IoStatus) {
    ENGINE.with(|e| match e.try_borrow_mut() {
        Ok(mut g) => {
            if let Some(eng) = g.as_mut() {
                eng.complete(ctx, status);
            }
        }
        Err(_) => log::error!("completion of slot {ctx} while the engine is busy; dropped"),
    });
}
