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
//! Per-I/O state lives in the descriptor's `module_ctx` slots; queued I/Os are linked through
//! [`LINK_SLOT`]. Each I/O is counted in its core's epoch counter until it completes, which is
//! how the metadata core knows when a freed cluster can be reused and when a frozen volume is
//! quiet.

use super::format::ZERO;
use super::map::ReadTarget;
use super::md::{self, Req, ReqKind};
use super::store::{StoreShared, Volume};
use crate::modules::stack::{
    status_from_u64, status_to_u64, submit_error_status, IoQueue, LINK_SLOT,
};
use crate::{BackendChannel, IoChannel, IoRef, IoStatus, IoType, IoVec, SubmitError, MAX_IOVS};
use keel_reactor::pool::DmaBuf;
use keel_reactor::PollStatus;
use std::cell::{Cell, RefCell};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// `module_ctx` slot: `Rc<Inner>` raw pointer (one strong count while the I/O is ours).
const CHAN_SLOT: usize = 0;
/// Outstanding children / metadata answers (+1 while dispatching).
const PENDING_SLOT: usize = 1;
/// First failure (encoded status; 0 = success).
const STATUS_SLOT: usize = 2;
/// Epoch counter the I/O is counted in, or [`NOT_COUNTED`].
const BUCKET_SLOT: usize = 3;
/// Number of metadata rounds done.
const PHASE_SLOT: usize = 4;
/// Block (relative to the I/O) to resume dispatching from after a full base queue; with
/// [`RESUMING`] set when the dispatch guard is still held.
const RESUME_SLOT: usize = 5;
const NOT_COUNTED: u64 = u64::MAX;
const RESUMING: u64 = 1 << 63;
const _: () = assert!(LINK_SLOT > RESUME_SLOT);

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
            bs: u64::from(s.block_size),
            bpc: s.blocks_per_cluster,
            shift: s.blocks_per_cluster.trailing_zeros(),
            data_start: s.data_start_blocks,
            base,
            vol,
        };
        LvolChannel {
            inner: Rc::new(inner),
        }
    }
}

impl BackendChannel for LvolChannel {
    fn submit(&mut self, mut io: IoRef) {
        let inner = &self.inner;
        let ctx = io.module_ctx();
        ctx[CHAN_SLOT] = Rc::into_raw(Rc::clone(inner)) as usize as u64;
        ctx[BUCKET_SLOT] = NOT_COUNTED;
        let mut held = inner.held.get();
        if !held.is_empty() || inner.vol.view.frozen.load(Ordering::Acquire) {
            held.push_back(io);
            inner.held.set(held);
            return;
        }
        inner.start(io);
    }

    fn poll(&mut self) -> PollStatus {
        let inner = &self.inner;
        if inner.held.get().is_empty() || inner.vol.view.frozen.load(Ordering::Acquire) {
            return PollStatus::Idle;
        }
        loop {
            let mut q = inner.held.get();
            let Some(mut io) = q.pop_front() else { break };
            inner.held.set(q);
            let resume = io.module_ctx()[RESUME_SLOT];
            if io.module_ctx()[BUCKET_SLOT] == NOT_COUNTED {
                inner.start(io);
            } else if !inner.dispatch_from(io, resume & !RESUMING, true) {
                break; // parked again: the base is still full
            }
        }
        PollStatus::Busy
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

/// Slice `len` bytes starting `skip` bytes into `iovs` into `out`; returns how many.
#[inline]
fn slice_iovs(
    iovs: &[IoVec],
    mut skip: usize,
    mut len: usize,
    out: &mut [IoVec; MAX_IOVS],
) -> usize {
    let mut n = 0;
    for v in iovs {
        if len == 0 {
            break;
        }
        if skip >= v.len {
            skip -= v.len;
            continue;
        }
        let take = (v.len - skip).min(len);
        out[n] = IoVec {
            // SAFETY: `skip < v.len`, so the pointer stays inside the caller's buffer.
            base: unsafe { v.base.add(skip) },
            len: take,
        };
        n += 1;
        skip = 0;
        len -= take;
    }
    n
}

/// Zero `len` bytes starting `skip` bytes into `iovs`.
#[inline]
fn zero_iovs(iovs: &[IoVec], skip: usize, len: usize) {
    let mut out = [IoVec::EMPTY; MAX_IOVS];
    let n = slice_iovs(iovs, skip, len, &mut out);
    for v in &out[..n] {
        // SAFETY: the iovec lies within the I/O's buffers, which the submitter lent us for a
        // read until completion.
        unsafe { std::ptr::write_bytes(v.base, 0, v.len) };
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
        io.module_ctx()[BUCKET_SLOT] = b as u64;
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
        io.module_ctx()[PENDING_SLOT] = 1;
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
            let mut io = unsafe { IoRef::from_raw(raw) };
            if e == SubmitError::NoDescriptor {
                // resume later from block 0 with the guard (PENDING = 1) held
                io.module_ctx()[RESUME_SLOT] = RESUMING;
                let mut q = self.held.get();
                q.push_back(io);
                self.held.set(q);
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
                io.module_ctx()[PENDING_SLOT] = 1;
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
        let phase = io.module_ctx()[PHASE_SLOT];
        // First count (PENDING must be final before any answer can arrive), then send.
        let mut need = 0u64;
        self.md_needs(t, off, n, phase, |_, _| need += 1);
        if need == 0 {
            return Some(io);
        }
        let ctx = io.module_ctx();
        ctx[PENDING_SLOT] = need;
        ctx[PHASE_SLOT] = phase + 1;
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
    fn md_needs(&self, t: IoType, off: u64, n: u64, phase: u64, mut f: impl FnMut(u64, ReqKind)) {
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
            io.module_ctx()[PENDING_SLOT] += 1;
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
                        zero_iovs(iovs, (rel * self.bs) as usize, (len * self.bs) as usize);
                    }
                    Ok(())
                }
                ReadTarget::Phys(p) => {
                    let pb = self.data_start + u64::from(p) * self.bpc + inb;
                    io.module_ctx()[PENDING_SLOT] += 1;
                    let r = match t {
                        IoType::Read | IoType::Write => {
                            let whole = rel == 0 && len == n;
                            let v: &[IoVec] = if whole {
                                iovs
                            } else {
                                let k = slice_iovs(
                                    iovs,
                                    (rel * self.bs) as usize,
                                    (len * self.bs) as usize,
                                    &mut sub,
                                );
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
                        io.module_ctx()[PENDING_SLOT] -= 1;
                    }
                    r
                }
            };
            match res {
                Ok(()) => rel += len,
                Err(SubmitError::NoDescriptor) => {
                    io.module_ctx()[RESUME_SLOT] = rel | RESUMING;
                    let mut q = self.held.get();
                    q.push_back(io);
                    self.held.set(q);
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
                *slot = unsafe { IoVec::from_raw(b.as_mut_ptr(), chunk.min(bytes - i * chunk)) };
            }
            self.base.write(&v[..k], pb, len, child_done, raw)
        })
    }
}

/// Keep the first failure of an I/O.
#[inline]
fn record(io: &mut IoRef, status: IoStatus) {
    if status != IoStatus::Success && io.module_ctx()[STATUS_SLOT] == 0 {
        io.module_ctx()[STATUS_SLOT] = status_to_u64(status);
    }
}

/// Drop one pending count; complete the I/O on the last.
#[inline]
fn release(mut io: IoRef) {
    let ctx = io.module_ctx();
    ctx[PENDING_SLOT] -= 1;
    if ctx[PENDING_SLOT] == 0 {
        let s = status_from_u64(ctx[STATUS_SLOT]);
        finish(io, s);
    } else {
        let _ = io.into_raw();
    }
}

/// Complete the I/O: uncount it, release the channel count, hand it back.
#[inline]
fn finish(mut io: IoRef, status: IoStatus) {
    let ctx = io.module_ctx();
    let chan = ctx[CHAN_SLOT] as usize as *const Inner;
    let bucket = ctx[BUCKET_SLOT];
    // SAFETY: `CHAN_SLOT` holds the strong count taken in `submit`, released exactly once,
    // here.
    let inner = unsafe { Rc::from_raw(chan) };
    if bucket != NOT_COUNTED {
        let c = &inner.counts()[bucket as usize];
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
    let ctx = io.module_ctx();
    ctx[PENDING_SLOT] -= 1;
    if ctx[PENDING_SLOT] != 0 {
        let _ = io.into_raw();
        return;
    }
    if ctx[STATUS_SLOT] != 0 {
        let s = status_from_u64(ctx[STATUS_SLOT]);
        finish(io, s);
        return;
    }
    let chan = ctx[CHAN_SLOT] as usize as *const Inner;
    // SAFETY: the channel is kept alive by the count in `CHAN_SLOT` until `finish`.
    let inner = unsafe { &*chan };
    if ctx[PHASE_SLOT] > 16 {
        log::error!(
            "lvol {}: I/O kept losing its clusters; failing it",
            inner.vol.uuid
        );
        finish(io, IoStatus::IoError);
        return;
    }
    inner.dispatch(io);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn iovecs_slice_and_zero_across_boundaries() {
        let mut a = [1u8; 100];
        let mut b = [2u8; 50];
        // SAFETY: the arrays outlive the iovecs, used only in this test.
        let iovs = unsafe {
            [
                IoVec::from_raw(a.as_mut_ptr(), 100),
                IoVec::from_raw(b.as_mut_ptr(), 50),
            ]
        };
        let mut out = [IoVec::EMPTY; MAX_IOVS];
        let n = slice_iovs(&iovs, 90, 30, &mut out);
        assert_eq!(n, 2);
        assert_eq!((out[0].len, out[1].len), (10, 20));
        assert_eq!(out[1].base, b.as_mut_ptr());
        assert_eq!(slice_iovs(&iovs, 120, 30, &mut out), 1);
        assert_eq!(slice_iovs(&iovs, 0, 0, &mut out), 0);
        zero_iovs(&iovs, 95, 10);
        assert!(a[95..].iter().all(|&x| x == 0) && a[94] == 1);
        assert!(b[..5].iter().all(|&x| x == 0) && b[5] == 2);
    }
}
