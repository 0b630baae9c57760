//! HOT PATH: a volume's per-core channel.
//!
//! Each I/O is split at cluster boundaries. For each piece the cluster map is read lock-free
//! ([`VolView`](super::map::VolView), `Acquire` loads): an allocated cluster becomes a child
//! I/O on the base at the translated offset (the caller's iovecs, sliced, no copy); a read of
//! a cluster that neither the volume nor its parents hold zero-fills the iovecs without base
//! I/O. A write to a cluster the volume does not own, and unmap/write-zeroes of whole
//! clusters, ask the metadata core by message ([`super::md::request`]); the I/O resumes when
//! every answer is in (the answer comes after the map entry is durable and published).
//!
//! Steady state (every cluster allocated) takes no lock, allocates nothing, sends no message.
//! Per-I/O state lives in the descriptor as a typed context ([`LvolIo`]); queued I/Os are
//! linked through the descriptor ([`IoQueue`]). An I/O the base has no descriptor for is parked
//! and the channel's [`IoWaitEntry`] queued on the base: it resumes the parked I/Os when a base
//! descriptor frees. Each I/O is counted in its core's epoch counter until it completes, which is
//! how the metadata core knows when a freed cluster can be reused and when a frozen volume is
//! quiet.

use super::format::ZERO;
use super::map::ReadTarget;
use super::md::{self, Req, ReqKind};
use super::store::{StoreShared, Volume};
use keel_bdev::iov::IovCursor;
use keel_bdev::modules::stack::{submit_error_status, IoQueue};
use keel_bdev::{
    BackendChannel, IoChannel, IoCtx, IoRef, IoStatus, IoType, IoVec, IoWaitEntry, SubmitError,
    MAX_IOVS,
};
use keel_reactor::pool::DmaBuf;
use keel_reactor::PollStatus;
use std::cell::{Cell, RefCell};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// An lvol I/O's state: its typed context ([`IoRef::ctx`]), all zeroes at submission.
struct LvolIo {
    /// `Rc<Inner>` raw pointer: one strong count while the I/O is ours (set in `submit`).
    chan: *const Inner,
    /// Outstanding children / metadata answers (+1 while dispatching).
    pending: u64,
    /// Block (relative to the I/O) to resume dispatching from after a full base queue (the
    /// dispatch guard is then still held).
    resume: u64,
    /// Number of metadata rounds done.
    phase: u32,
    /// First failure (`Success`: none yet).
    status: IoStatus,
    /// Whether the I/O is counted in an epoch counter, and which ([`Inner::start`]).
    counted: bool,
    bucket: u8,
}

// SAFETY: all-zero is a valid `LvolIo` (null pointer, zero counts, `Success`, `false`).
unsafe impl IoCtx for LvolIo {}

/// The lvol state of `io`.
#[inline]
fn st(io: &mut IoRef) -> &mut LvolIo {
    io.ctx::<LvolIo>()
}

thread_local! {
    /// Zeroes for write-zeroes on bases without WriteZeroes (allocated once per core).
    static ZERO_BUF: RefCell<Option<DmaBuf>> = const { RefCell::new(None) };
}

/// One core's channel into a volume.
pub struct LvolChannel {
    inner: Rc<Inner>,
}

struct Inner {
    base: IoChannel,
    vol: Arc<Volume>,
    slot: usize,
    core: u32,
    /// I/Os waiting: the volume is frozen, or the base had no free descriptor.
    held: Cell<IoQueue>,
    /// Queued on the base while `held` waits for a base descriptor ([`resume_parked`]).
    base_wait: Pin<Box<IoWaitEntry>>,
    bs: u64,
    /// Blocks per cluster (a power of two) and its log2.
    bpc: u64,
    shift: u32,
    data_start: u64,
}

impl LvolChannel {
    /// A channel forwarding to `base` (the base bdev's channel on this core).
    pub fn new(base: IoChannel, vol: Arc<Volume>) -> LvolChannel {
        let s: &StoreShared = &vol.store;
        let inner = Inner {
            slot: s.core_slot(),
            core: keel_reactor::current_core().unwrap_or(0),
            held: Cell::new(IoQueue::new()),
            base_wait: Box::pin(IoWaitEntry::new(resume_parked, 0)),
            bs: u64::from(s.block_size),
            bpc: s.blocks_per_cluster,
            shift: s.blocks_per_cluster.trailing_zeros(),
            data_start: s.data_start_blocks,
            base,
            vol,
        };
        let inner = Rc::new(inner);
        inner
            .base_wait
            .set_callback(resume_parked, Rc::as_ptr(&inner) as usize);
        LvolChannel { inner }
    }
}

impl BackendChannel for LvolChannel {
    fn submit(&mut self, mut io: IoRef) {
        let inner = &self.inner;
        st(&mut io).chan = Rc::into_raw(Rc::clone(inner));
        let mut held = inner.held.get();
        if !held.is_empty() || inner.vol.view.frozen.load(Ordering::Acquire) {
            held.push_back(io);
            inner.held.set(held);
            return;
        }
        inner.start(io);
    }

    fn poll(&mut self) -> PollStatus {
        self.inner.drain_held()
    }

    fn needs_poll(&self) -> bool {
        true
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        let mut q = self.held.take();
        while let Some(io) = q.pop_front() {
            io.complete(IoStatus::Aborted);
        }
    }
}

/// Resume the I/Os parked for lack of a base descriptor (the channel's [`IoWaitEntry`]
/// callback; `ctx` is the `Inner`).
fn resume_parked(ctx: usize) {
    let p = ctx as *const Inner;
    // SAFETY: the entry lives in this `Inner` and unqueues itself when the `Inner` goes, so a
    // served entry means the `Inner` is alive; the count taken keeps it alive while parked I/Os
    // complete (which may release the other counts).
    let inner = unsafe {
        Rc::increment_strong_count(p);
        Rc::from_raw(p)
    };
    inner.drain_held();
}

impl Inner {
    /// Submit the held I/Os (frozen volume thawed, or a base descriptor freed) until the base is
    /// full again. Nothing while frozen or while waiting for a base descriptor.
    fn drain_held(&self) -> PollStatus {
        if self.held.get().is_empty()
            || self.base_wait.is_queued()
            || self.vol.view.frozen.load(Ordering::Acquire)
        {
            return PollStatus::Idle;
        }
        loop {
            let mut q = self.held.get();
            let Some(mut io) = q.pop_front() else { break };
            self.held.set(q);
            let (counted, resume) = (st(&mut io).counted, st(&mut io).resume);
            if !counted {
                self.start(io);
                if self.base_wait.is_queued() {
                    break; // parked again: the base is full
                }
            } else if !self.dispatch_from(io, resume, true) {
                break; // parked again: the base is still full
            }
        }
        PollStatus::Busy
    }

    /// Hold `io` until a base descriptor frees; `resume` is where its dispatch resumes (the
    /// dispatch guard stays counted).
    fn park(&self, mut io: IoRef, resume: u64) {
        st(&mut io).resume = resume;
        let mut q = self.held.get();
        q.push_back(io);
        self.held.set(q);
        // When a descriptor is free already (the failure was not the base's pool: the zero
        // buffer could not be allocated), the poller retries instead.
        if !self.base_wait.is_queued() {
            let _ = self.base.queue_io_wait(self.base_wait.as_ref());
        }
    }
}

impl Inner {
    fn counts(&self) -> &[std::sync::atomic::AtomicU64; 2] {
        &self.vol.store.counts[self.slot].inflight
    }

    /// Count the I/O in the current epoch and dispatch it.
    #[inline]
    fn start(&self, mut io: IoRef) {
        let b = (self.vol.store.epoch.load(Ordering::Acquire) & 1) as usize;
        let c = &self.counts()[b];
        // Only this core writes its counters: a plain load/store pair, no RMW.
        c.store(c.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
        let x = st(&mut io);
        x.counted = true;
        x.bucket = b as u8;
        self.dispatch(io);
    }

    /// Route the I/O (first pass or after a metadata round).
    fn dispatch(&self, io: IoRef) {
        if let Some(io) = self.fast_path(io) {
            self.dispatch_slow(io);
        }
    }

    /// Steady state: a read or write inside one cluster the volume (or, for reads, a parent)
    /// holds goes straight to the base with the caller's iovecs. Gives the I/O back otherwise.
    #[inline]
    fn fast_path(&self, mut io: IoRef) -> Option<IoRef> {
        let t = io.io_type();
        if !matches!(t, IoType::Read | IoType::Write) {
            return Some(io);
        }
        let (off, n) = (io.offset_blocks(), io.num_blocks());
        let (lc, inb) = (off >> self.shift, off & (self.bpc - 1));
        if inb + n > self.bpc {
            return Some(io);
        }
        let p = if t == IoType::Read {
            match self.vol.view.read_target(lc) {
                ReadTarget::Phys(p) => p,
                ReadTarget::Zero => return Some(io),
            }
        } else {
            match self.vol.view.own_entry(lc) {
                e if e < ZERO => e,
                _ => return Some(io),
            }
        };
        let pb = self.data_start + (u64::from(p) << self.shift) + inb;
        st(&mut io).pending = 1;
        let (ptr, cnt) = (io.iovs().as_ptr(), io.iovs().len());
        let raw = io.into_raw();
        // SAFETY: the iovec array lives in the parent's descriptor, valid until the parent
        // completes, which is after this child completes.
        let iovs = unsafe { std::slice::from_raw_parts(ptr, cnt) };
        let r = if t == IoType::Read {
            self.base.read(iovs, pb, n, child_done, raw)
        } else {
            self.base.write(iovs, pb, n, child_done, raw)
        };
        if let Err(e) = r {
            // SAFETY: the callback will not run: `raw` is ours again.
            let io = unsafe { IoRef::from_raw(raw) };
            if e == SubmitError::NoDescriptor {
                // resume later from block 0 with the guard (pending = 1) held
                self.park(io, 0);
            } else {
                finish(io, submit_error_status(e));
            }
        }
        None
    }

    fn dispatch_slow(&self, mut io: IoRef) {
        match io.io_type() {
            IoType::Read => {
                self.dispatch_from(io, 0, false);
            }
            IoType::Write | IoType::WriteZeroes | IoType::Unmap => {
                if let Some(io) = self.ask_md(io) {
                    self.dispatch_from(io, 0, false);
                }
            }
            IoType::Flush | IoType::Reset => {
                let t = io.io_type();
                if !self.vol.store.base_bdev.io_type_supported(t) {
                    finish(io, IoStatus::Success);
                    return;
                }
                st(&mut io).pending = 1;
                let raw = io.into_raw();
                let r = if t == IoType::Flush {
                    self.base.flush(child_done, raw)
                } else {
                    self.base.reset(child_done, raw)
                };
                if let Err(e) = r {
                    // SAFETY: the callback will not run; `raw` is ours again.
                    let io = unsafe { IoRef::from_raw(raw) };
                    finish(io, submit_error_status(e));
                }
            }
        }
    }

    /// Send the metadata requests this write/zeroing needs; gives the I/O back when none are
    /// needed (otherwise the answers resume it, see [`md_reply`]).
    fn ask_md(&self, mut io: IoRef) -> Option<IoRef> {
        let (t, off, n) = (io.io_type(), io.offset_blocks(), io.num_blocks());
        let phase = st(&mut io).phase;
        // First count (PENDING must be final before any answer can arrive), then send.
        let mut need = 0u64;
        self.md_needs(t, off, n, phase, |_, _| need += 1);
        if need == 0 {
            return Some(io);
        }
        let x = st(&mut io);
        x.pending = need;
        x.phase = phase + 1;
        let token = io.into_raw();
        self.md_needs(t, off, n, phase, |lc, kind| {
            md::request(
                &self.vol.store,
                Req {
                    vol: self.vol.uuid,
                    lc,
                    kind,
                    core: self.core,
                    token,
                    reply: md_reply,
                },
            )
        });
        None
    }

    /// Call `f` for every cluster of the range that needs the metadata core.
    fn md_needs(&self, t: IoType, off: u64, n: u64, phase: u32, mut f: impl FnMut(u64, ReqKind)) {
        let view = &self.vol.view;
        let mut rel = 0;
        while rel < n {
            let lba = off + rel;
            let (lc, inb) = (lba / self.bpc, lba % self.bpc);
            let len = (self.bpc - inb).min(n - rel);
            rel += len;
            let own = view.own_entry(lc);
            let kind = match t {
                IoType::Write if own >= ZERO => Some(ReqKind::Alloc),
                IoType::Write => None,
                _ => {
                    let whole = inb == 0 && len == self.bpc;
                    let reads_zero = view.read_target(lc) == ReadTarget::Zero;
                    if whole && phase == 0 && (own < ZERO || !reads_zero) {
                        Some(ReqKind::Dealloc)
                    } else if own >= ZERO && !reads_zero {
                        Some(ReqKind::Alloc)
                    } else {
                        None
                    }
                }
            };
            if let Some(k) = kind {
                f(lc, k);
            }
        }
    }

    /// Submit the children from block `from` on. `guarded`: the dispatch guard is already
    /// counted (a resumed dispatch). Returns false when the I/O was parked for lack of a base
    /// descriptor.
    fn dispatch_from(&self, mut io: IoRef, from: u64, guarded: bool) -> bool {
        let t = io.io_type();
        let (off, n) = (io.offset_blocks(), io.num_blocks());
        if !guarded {
            st(&mut io).pending += 1;
        }
        let raw = io.into_raw();
        // SAFETY: `raw` stays ours until the guard is released below; children only take and
        // give back the same value on this core, after this call returns.
        let mut io = unsafe { IoRef::from_raw(raw) };
        let iovs_ptr = io.iovs().as_ptr();
        let iovs_len = io.iovs().len();
        // SAFETY: the iovec array lives in the descriptor, valid and unchanged while we hold it.
        let iovs: &[IoVec] = unsafe { std::slice::from_raw_parts(iovs_ptr, iovs_len) };
        let mut rel = from;
        let mut sub = [IoVec::EMPTY; MAX_IOVS];
        while rel < n {
            let lba = off + rel;
            let (lc, inb) = (lba / self.bpc, lba % self.bpc);
            let len = (self.bpc - inb).min(n - rel);
            let target = match t {
                IoType::Read => self.vol.view.read_target(lc),
                _ => match self.vol.view.own_entry(lc) {
                    e if e < ZERO => ReadTarget::Phys(e),
                    _ => ReadTarget::Zero,
                },
            };
            let res = match target {
                ReadTarget::Zero => {
                    // A write finding no cluster here lost it to a concurrent unmap of the
                    // same range: either order of two concurrent commands is allowed.
                    if t == IoType::Read {
                        let (skip, bytes) = ((rel * self.bs) as usize, (len * self.bs) as usize);
                        // SAFETY: the iovecs are the I/O's buffers, which the submitter lent
                        // us for a read until completion.
                        unsafe { IovCursor::at(iovs, skip).fill(0, bytes) };
                    }
                    Ok(())
                }
                ReadTarget::Phys(p) => {
                    let pb = self.data_start + u64::from(p) * self.bpc + inb;
                    st(&mut io).pending += 1;
                    let r = match t {
                        IoType::Read | IoType::Write => {
                            let whole = rel == 0 && len == n;
                            let v: &[IoVec] = if whole {
                                iovs
                            } else {
                                let (skip, bytes) =
                                    ((rel * self.bs) as usize, (len * self.bs) as usize);
                                let (k, _) = IovCursor::at(iovs, skip).split_into(bytes, &mut sub);
                                &sub[..k]
                            };
                            if t == IoType::Read {
                                self.base.read(v, pb, len, child_done, raw)
                            } else {
                                self.base.write(v, pb, len, child_done, raw)
                            }
                        }
                        _ => self.zero_child(pb, len, raw),
                    };
                    if r.is_err() {
                        st(&mut io).pending -= 1;
                    }
                    r
                }
            };
            match res {
                Ok(()) => rel += len,
                Err(SubmitError::NoDescriptor) => {
                    self.park(io, rel);
                    return false;
                }
                Err(e) => {
                    record(&mut io, submit_error_status(e));
                    break;
                }
            }
        }
        release(io);
        true
    }

    /// Zero `len` blocks at base block `pb` (write-zeroes, or writes of a zero buffer).
    fn zero_child(&self, pb: u64, len: u64, raw: usize) -> Result<(), SubmitError> {
        if self.vol.store.base_write_zeroes {
            return self.base.write_zeroes(pb, len, child_done, raw);
        }
        let bytes = (len * self.bs) as usize;
        ZERO_BUF.with(|z| {
            let mut z = z.borrow_mut();
            if z.is_none() {
                let mut b = keel_reactor::pool::alloc(keel_reactor::pool::MAX_CLASS)
                    .map_err(|_| SubmitError::NoDescriptor)?;
                b.as_mut_slice().fill(0);
                *z = Some(b);
            }
            let b = z.as_mut().expect("just set");
            let chunk = b.len();
            if bytes > chunk * MAX_IOVS {
                return Err(SubmitError::BadIovecs);
            }
            let mut v = [IoVec::EMPTY; MAX_IOVS];
            let k = bytes.div_ceil(chunk);
            for (i, slot) in v[..k].iter_mut().enumerate() {
                // SAFETY: the buffer lives for the core's lifetime and is only ever read.
                *slot =
                    unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), chunk.min(bytes - i * chunk)) };
            }
            self.base.write(&v[..k], pb, len, child_done, raw)
        })
    }
}

/// Keep the first failure of an I/O.
#[inline]
fn record(io: &mut IoRef, status: IoStatus) {
    let x = st(io);
    if x.status == IoStatus::Success {
        x.status = status;
    }
}

/// Drop one pending count; complete the I/O on the last.
#[inline]
fn release(mut io: IoRef) {
    let x = st(&mut io);
    x.pending -= 1;
    if x.pending == 0 {
        let s = x.status;
        finish(io, s);
    } else {
        let _ = io.into_raw();
    }
}

/// Complete the I/O: uncount it, release the channel count, hand it back.
#[inline]
fn finish(mut io: IoRef, status: IoStatus) {
    let x = st(&mut io);
    let (chan, counted, bucket) = (x.chan, x.counted, x.bucket);
    // SAFETY: `chan` holds the strong count taken in `submit`, released exactly once, here.
    let inner = unsafe { Rc::from_raw(chan) };
    if counted {
        let c = &inner.counts()[usize::from(bucket)];
        c.store(c.load(Ordering::Relaxed) - 1, Ordering::Release);
    }
    drop(inner);
    io.complete(status);
}

fn child_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the parent's raw value given to the base on this core; each child
    // callback runs once and gives the value back (release) or completes it.
    let mut io = unsafe { IoRef::from_raw(ctx) };
    record(&mut io, status);
    release(io);
}

/// An answer from the metadata core (on the submitting core).
fn md_reply(token: usize, status: IoStatus) {
    // SAFETY: `token` is the raw value of an I/O waiting for metadata answers on this core;
    // each answer comes once.
    let mut io = unsafe { IoRef::from_raw(token) };
    record(&mut io, status);
    let x = st(&mut io);
    x.pending -= 1;
    if x.pending != 0 {
        let _ = io.into_raw();
        return;
    }
    if x.status != IoStatus::Success {
        let s = x.status;
        finish(io, s);
        return;
    }
    let (chan, phase) = (x.chan, x.phase);
    // SAFETY: the channel is kept alive by the count in `chan` until `finish`.
    let inner = unsafe { &*chan };
    if phase > 16 {
        log::error!(
            "lvol {}: I/O kept losing its clusters; failing it",
            inner.vol.uuid
        );
        finish(io, IoStatus::IoError);
        return;
    }
    inner.dispatch(io);
}
