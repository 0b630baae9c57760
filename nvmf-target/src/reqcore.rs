//! HOT PATH: the request core both transports (TCP here, RDMA in `keel-rdma`) build on.
//!
//! A connection has one request slot per entry of the host's queue. The core keeps what is the
//! same for every transport: the slot table with its free list, each slot's state with
//! checked transitions and per-state counts (SPDK's `nvmf_tcp_req_set_state` /
//! `nvmf_rdma_request_set_state`), the pool buffers holding a command's data, and the pool of
//! [`NvmfRequest`]s handed to the target core. A transport keeps only its own part: its state
//! enum (a [`SlotState`], with its table of legal transitions) and its per-slot data (PDU
//! headers for TCP, work-request bookkeeping for RDMA), reached by indexing the
//! [`ReqSlots`] with the slot number.
//!
//! Invariants (asserted in release builds, each check a compare or two):
//! - a slot's state changes only through [`ReqSlots::set_state`] (or [`ReqSlots::take`] /
//!   [`ReqSlots::release`]), from the state the caller names, along a transition the
//!   transport's table allows;
//! - `counts[s]` is the number of slots in state `s`, and the free list holds exactly the
//!   slots in the free state (so `outstanding() == len() - count(FREE)`);
//! - a slot's buffers are taken once per use and dropped when it is released.
//!
//! Nothing here allocates after [`ReqSlots::new`] / [`ReqPool::new`].

use crate::request::{CoreCtx, NvmfRequest, ReqPtr};
use keel_bdev::{IoVec, MAX_IOVS};
use keel_nvme::cmd::{DataXfer, NvmeCmd, NvmeCpl};
use keel_reactor::pool::{self, DmaBuf, PoolError};
use std::cell::UnsafeCell;
use std::fmt::Debug;
use std::ops::{Index, IndexMut};
use std::ptr::NonNull;

/// Most states a transport's slot state enum may have (size of the per-state count array).
pub const MAX_STATES: usize = 12;

/// A transport's request slot states. `index` numbers them densely from 0; `FREE` and
/// `EXECUTING` are the two states every transport has (unused slot, with the target core).
pub trait SlotState: Copy + Eq + Debug + 'static {
    /// Number of states (at most [`MAX_STATES`]).
    const COUNT: usize;
    /// The state of an unused slot (on the free list).
    const FREE: Self;
    /// The state of a slot whose request is with the target core.
    const EXECUTING: Self;
    /// Dense number of the state, below `COUNT`.
    fn index(self) -> usize;
    /// Whether a slot may go from `from` to `to` (never called with `from == to`).
    fn legal(from: Self, to: Self) -> bool;
}

/// One slot: its state, the pool buffers of its command's data, and the transport's data.
struct Slot<S, X> {
    state: S,
    bufs: [Option<DmaBuf>; MAX_IOVS],
    nbufs: usize,
    ext: X,
}

/// The request slot table of one connection (see the module documentation).
pub struct ReqSlots<S: SlotState, X> {
    slots: Box<[Slot<S, X>]>,
    /// Free slots; the next taken is the last pushed.
    free: Vec<u16>,
    /// Slots per state, by [`SlotState::index`].
    counts: [u32; MAX_STATES],
}

impl<S: SlotState, X> ReqSlots<S, X> {
    /// `n` free slots, the transport data of each made by `ext`. Slot 0 is taken first.
    pub fn new(n: usize, ext: impl FnMut() -> X) -> Self {
        const { assert!(S::COUNT <= MAX_STATES, "too many slot states") };
        assert!(n <= usize::from(u16::MAX), "slot numbers are u16");
        let mut ext = ext;
        let slots: Box<[Slot<S, X>]> = (0..n)
            .map(|_| Slot {
                state: S::FREE,
                bufs: std::array::from_fn(|_| None),
                nbufs: 0,
                ext: ext(),
            })
            .collect();
        let mut counts = [0; MAX_STATES];
        counts[S::FREE.index()] = n as u32;
        ReqSlots {
            slots,
            free: (0..n as u16).rev().collect(),
            counts,
        }
    }

    /// Number of slots.
    #[inline]
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether there are no slots at all.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// Slots not free.
    #[inline]
    pub fn outstanding(&self) -> usize {
        self.slots.len() - self.free.len()
    }

    /// Slots in state `s`.
    #[inline]
    pub fn count(&self, s: S) -> u32 {
        self.counts[s.index()]
    }

    /// The state of slot `i`, or `None` for a slot number out of range (from the wire).
    #[inline]
    pub fn get_state(&self, i: usize) -> Option<S> {
        self.slots.get(i).map(|s| s.state)
    }

    /// The state of slot `i`.
    #[inline]
    pub fn state(&self, i: u16) -> S {
        self.slots[usize::from(i)].state
    }

    /// Take a free slot and move it to `to`; `None` when every slot is in use.
    #[inline]
    pub fn take(&mut self, to: S) -> Option<u16> {
        let i = self.free.pop()?;
        self.set_state(i, S::FREE, to);
        Some(i)
    }

    /// Move slot `i` from `from` (which it must be in) to `to` (which the transport's table
    /// must allow). Use [`ReqSlots::release`] to free a slot.
    #[inline]
    pub fn set_state(&mut self, i: u16, from: S, to: S) {
        assert!(to != S::FREE, "slot {i}: freed by set_state, not release");
        self.transition(i, from, to);
    }

    #[inline]
    fn transition(&mut self, i: u16, from: S, to: S) {
        let slot = &mut self.slots[usize::from(i)];
        assert!(
            slot.state == from,
            "slot {i}: in state {:?}, not {from:?}",
            slot.state
        );
        assert!(
            from != to && S::legal(from, to),
            "slot {i}: illegal transition {from:?} -> {to:?}"
        );
        slot.state = to;
        self.counts[from.index()] -= 1;
        self.counts[to.index()] += 1;
    }

    /// Free slot `i`: drop its buffers and put it on the free list. Returns `false` (and does
    /// nothing) if it was free already.
    pub fn release(&mut self, i: u16) -> bool {
        let from = self.state(i);
        if from == S::FREE {
            return false;
        }
        self.free_bufs(i);
        self.transition(i, from, S::FREE);
        assert!(self.free.len() < self.slots.len(), "free list overflow");
        self.free.push(i);
        true
    }

    /// Take pool buffers of `chunk` bytes (the last one shorter) for `len` bytes of slot
    /// `i`, which must hold none. On failure the slot holds none again; a length needing
    /// more than [`MAX_IOVS`] buffers is [`PoolError::BadSize`].
    pub fn alloc_bufs(&mut self, i: u16, len: u32, chunk: usize) -> Result<(), PoolError> {
        let slot = &mut self.slots[usize::from(i)];
        assert_eq!(slot.nbufs, 0, "slot {i}: buffers taken twice");
        assert!(chunk > 0);
        let n = (len as usize).div_ceil(chunk);
        if n > MAX_IOVS {
            return Err(PoolError::BadSize(len as usize));
        }
        let mut left = len as usize;
        for k in 0..n {
            let this = left.min(chunk);
            match pool::alloc(this) {
                Ok(b) => slot.bufs[k] = Some(b),
                Err(e) => {
                    for b in &mut slot.bufs[..k] {
                        *b = None;
                    }
                    return Err(e);
                }
            }
            left -= this;
        }
        slot.nbufs = n;
        Ok(())
    }

    /// Drop slot `i`'s buffers (if any).
    pub fn free_bufs(&mut self, i: u16) {
        let slot = &mut self.slots[usize::from(i)];
        for b in &mut slot.bufs[..slot.nbufs] {
            *b = None;
        }
        slot.nbufs = 0;
    }

    /// Number of buffers slot `i` holds.
    #[inline]
    pub fn nbufs(&self, i: u16) -> usize {
        self.slots[usize::from(i)].nbufs
    }

    /// The buffers slot `i` holds.
    #[inline]
    pub fn bufs(&self, i: u16) -> impl Iterator<Item = &DmaBuf> {
        let slot = &self.slots[usize::from(i)];
        slot.bufs[..slot.nbufs].iter().flatten()
    }

    /// Point `req.iovs` at slot `i`'s buffers, covering exactly `len` bytes (at most what the
    /// buffers hold).
    pub fn set_iovs(&self, i: u16, req: &mut NvmfRequest, len: u32) {
        let mut left = len as usize;
        let mut n = 0;
        for b in self.bufs(i) {
            if left == 0 {
                break;
            }
            let l = b.len().min(left);
            // SAFETY: the buffer belongs to the slot until the slot is released, which its
            // transport does only after the request is finished with; the pointer is valid
            // for `l ≤ b.len()` bytes.
            req.iovs[n] = unsafe { IoVec::from_raw_parts(b.as_ptr().cast_mut(), l) };
            left -= l;
            n += 1;
        }
        assert_eq!(left, 0, "slot {i}: buffers shorter than the data");
        req.iovcnt = n;
    }

    /// The state of every slot, for assertions in tests.
    #[cfg(test)]
    fn check_counts(&self) {
        let mut c = [0u32; MAX_STATES];
        for s in self.slots.iter() {
            c[s.state.index()] += 1;
        }
        assert_eq!(c, self.counts);
        assert_eq!(self.free.len() as u32, self.counts[S::FREE.index()]);
    }
}

impl<S: SlotState, X> Index<u16> for ReqSlots<S, X> {
    type Output = X;
    /// The transport's data of slot `i`.
    #[inline]
    fn index(&self, i: u16) -> &X {
        &self.slots[usize::from(i)].ext
    }
}

impl<S: SlotState, X> IndexMut<u16> for ReqSlots<S, X> {
    /// The transport's data of slot `i`.
    #[inline]
    fn index_mut(&mut self, i: u16) -> &mut X {
        &mut self.slots[usize::from(i)].ext
    }
}

/// The [`NvmfRequest`]s of one connection's slots, at stable addresses (the target core holds
/// pointers to them while commands run). Kept outside the transport's `RefCell`ed state: the
/// core may call back into the transport while it uses a request.
pub struct ReqPool {
    reqs: Box<[UnsafeCell<NvmfRequest>]>,
}

impl ReqPool {
    /// `n` requests (slot `i` uses request `i`).
    pub fn new(n: usize) -> ReqPool {
        ReqPool {
            reqs: (0..n)
                .map(|_| UnsafeCell::new(NvmfRequest::new()))
                .collect(),
        }
    }

    /// The request of slot `i`, to hand to the target core.
    #[inline]
    pub fn ptr(&self, i: u16) -> ReqPtr {
        // SAFETY: UnsafeCell::get never returns null.
        unsafe { NonNull::new_unchecked(self.reqs[usize::from(i)].get()) }
    }

    /// The request of slot `i`, for the transport's own use.
    ///
    /// # Safety
    /// The slot's request must not be with the target core (slot state other than
    /// [`SlotState::EXECUTING`]), and no other reference to it may be live while the returned
    /// one is.
    #[allow(clippy::mut_from_ref)]
    #[inline]
    pub unsafe fn get_mut(&self, i: u16) -> &mut NvmfRequest {
        // SAFETY: caller's contract: nobody else looks at this request meanwhile.
        unsafe { &mut *self.ptr(i).as_ptr() }
    }

    /// The slot a completed request came from: the request must be one of this pool's
    /// (checked) and its slot in [`SlotState::EXECUTING`]; `None` otherwise.
    #[inline]
    pub fn completed_slot<S: SlotState, X>(
        &self,
        slots: &ReqSlots<S, X>,
        req: ReqPtr,
    ) -> Option<u16> {
        let base = self.reqs.as_ptr() as usize;
        let off = (req.as_ptr() as usize).wrapping_sub(base);
        let size = std::mem::size_of::<UnsafeCell<NvmfRequest>>();
        if !off.is_multiple_of(size) || off / size >= self.reqs.len() {
            return None;
        }
        let i = (off / size) as u16;
        (slots.get_state(usize::from(i)) == Some(S::EXECUTING)).then_some(i)
    }
}

/// Prepare slot `i`'s request for a new command `cmd` moving data `xfer`: the response
/// carries the command id, no data yet, no core state.
#[inline]
pub fn start_request(req: &mut NvmfRequest, i: u16, cmd: &NvmeCmd, xfer: DataXfer) {
    req.cmd = *cmd;
    req.rsp = NvmeCpl {
        cid: cmd.cid,
        ..NvmeCpl::default()
    };
    req.xfer = xfer;
    req.length = 0;
    req.iovcnt = 0;
    req.transport_ctx = usize::from(i);
    debug_assert!(matches!(req.core_ctx, CoreCtx::Idle));
    req.core_ctx = CoreCtx::Idle;
}

/// The submission queue head a transport reports in each completion's SQHD: the host's queue
/// of `size` entries, one entry consumed per command the transport completes (fabrics queues
/// are in-order consumers, so the head moves by one per completion, wrapping at the size).
///
/// Invariant (asserted in release builds): `head < size`, and `size` is at least 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SqHead {
    head: u16,
    size: u16,
}

impl SqHead {
    /// A queue of `size` entries (0 is taken as 1: a queue whose size is not known yet, as
    /// before Connect) with its head at entry 0.
    pub fn new(size: u16) -> SqHead {
        SqHead {
            head: 0,
            size: size.max(1),
        }
    }
    /// The queue's size changed (Connect set it): the head wraps at the new size from now on.
    pub fn resize(&mut self, size: u16) {
        self.size = size.max(1);
        self.head %= self.size;
        assert!(self.head < self.size);
    }
    /// Consume one entry (a command completes); returns the new head, the completion's SQHD.
    #[inline]
    pub fn advance(&mut self) -> u16 {
        assert!(
            self.head < self.size,
            "SQ head {} out of a {}-entry queue",
            self.head,
            self.size
        );
        self.head = (self.head + 1) % self.size;
        self.head
    }
    /// The current head.
    pub fn head(&self) -> u16 {
        self.head
    }
}

/// Test support for transports (not used on any I/O path): walk a fresh two-slot table along
/// each of `paths`, a transport's list of every path its connection takes a slot through.
/// Each path's first state is taken from the free list, every step goes through
/// [`ReqSlots::set_state`] (which panics on a step the transport's table does not allow), the
/// last state must count the slot, and releasing it must leave nothing outstanding.
pub fn walk_slot_paths<S: SlotState>(paths: &[&[S]]) {
    let mut t: ReqSlots<S, ()> = ReqSlots::new(2, || ());
    for path in paths {
        let (&first, _) = path.split_first().expect("a path has a first state");
        let i = t
            .take(first)
            .expect("a two-slot table holding none has a free slot");
        for w in path.windows(2) {
            t.set_state(i, w[0], w[1]);
        }
        let last = *path.last().expect("a path has a last state");
        assert_eq!(t.count(last), 1, "path {path:?}: one slot in {last:?}");
        assert!(t.release(i), "path {path:?}: the slot was in use");
    }
    assert_eq!(t.outstanding(), 0);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small state machine: Free → New → Executing → Sending → Free, and New → Sending.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    enum St {
        Free,
        New,
        Executing,
        Sending,
    }

    impl SlotState for St {
        const COUNT: usize = 4;
        const FREE: St = St::Free;
        const EXECUTING: St = St::Executing;
        fn index(self) -> usize {
            self as usize
        }
        fn legal(from: St, to: St) -> bool {
            matches!(
                (from, to),
                (St::Free, St::New)
                    | (St::New, St::Executing | St::Sending)
                    | (St::Executing, St::Sending)
                    | (_, St::Free)
            )
        }
    }

    fn table(n: usize) -> ReqSlots<St, u32> {
        let mut k = 0;
        ReqSlots::new(n, || {
            k += 1;
            k
        })
    }

    #[test]
    fn legal_transitions_keep_counts() {
        let mut t = table(3);
        assert_eq!((t.len(), t.outstanding(), t.count(St::Free)), (3, 0, 3));
        let a = t.take(St::New).unwrap();
        let b = t.take(St::New).unwrap();
        assert_eq!((a, b), (0, 1));
        assert_eq!(t[a], 1);
        t[b] = 42;
        assert_eq!(t[b], 42);
        t.set_state(a, St::New, St::Executing);
        t.set_state(b, St::New, St::Sending);
        assert_eq!(t.count(St::Executing), 1);
        assert_eq!(t.count(St::Sending), 1);
        assert_eq!(t.count(St::Free), 1);
        assert_eq!(t.outstanding(), 2);
        t.check_counts();
        assert!(t.release(b));
        assert!(!t.release(b), "a second release does nothing");
        assert_eq!(t.state(b), St::Free);
        assert_eq!(t.outstanding(), 1);
        t.check_counts();
    }

    #[test]
    fn slots_are_reused_and_exhaust() {
        let mut t = table(2);
        let a = t.take(St::New).unwrap();
        let b = t.take(St::New).unwrap();
        assert_eq!(t.take(St::New), None, "every slot in use");
        t.release(a);
        assert_eq!(t.take(St::New), Some(a), "the freed slot comes back");
        t.release(a);
        t.release(b);
        assert_eq!(t.outstanding(), 0);
        t.check_counts();
    }

    #[test]
    #[should_panic(expected = "illegal transition")]
    fn illegal_transition_panics() {
        let mut t = table(1);
        let a = t.take(St::New).unwrap();
        t.set_state(a, St::New, St::Executing);
        t.set_state(a, St::Executing, St::New);
    }

    #[test]
    #[should_panic(expected = "not New")]
    fn wrong_from_state_panics() {
        let mut t = table(1);
        let a = t.take(St::New).unwrap();
        t.set_state(a, St::New, St::Executing);
        t.set_state(a, St::New, St::Sending);
    }

    #[test]
    #[should_panic(expected = "freed by set_state")]
    fn freeing_goes_through_release() {
        let mut t = table(1);
        let a = t.take(St::New).unwrap();
        t.set_state(a, St::New, St::Free);
    }

    #[test]
    fn buffers_cover_the_data_and_go_with_the_slot() {
        let mut t = table(1);
        let a = t.take(St::New).unwrap();
        t.alloc_bufs(a, 10_000, 4096).unwrap();
        assert_eq!(t.nbufs(a), 3);
        let lens: Vec<usize> = t.bufs(a).map(|b| b.len()).collect();
        assert_eq!(lens, [4096, 4096, 1808]);
        let mut req = NvmfRequest::new();
        t.set_iovs(a, &mut req, 9000);
        let iov_lens: Vec<usize> = req.data_iovs().iter().map(|v| v.len()).collect();
        assert_eq!(iov_lens, [4096, 4096, 808]);
        t.release(a);
        assert_eq!(t.nbufs(a), 0);
        // Reused: buffers can be taken again.
        let a = t.take(St::New).unwrap();
        t.alloc_bufs(a, 512, 4096).unwrap();
        assert_eq!(t.nbufs(a), 1);
        t.free_bufs(a);
        assert_eq!(t.nbufs(a), 0);
    }

    #[test]
    fn too_many_buffers_is_bad_size() {
        let mut t = table(1);
        let a = t.take(St::New).unwrap();
        let len = (MAX_IOVS as u32 + 1) * 512;
        assert_eq!(
            t.alloc_bufs(a, len, 512),
            Err(PoolError::BadSize(len as usize))
        );
        assert_eq!(t.nbufs(a), 0);
    }

    #[test]
    fn completed_slot_checks_pool_and_state() {
        let pool = ReqPool::new(2);
        let mut t = table(2);
        let a = t.take(St::New).unwrap();
        assert_eq!(pool.completed_slot(&t, pool.ptr(a)), None, "not executing");
        t.set_state(a, St::New, St::Executing);
        assert_eq!(pool.completed_slot(&t, pool.ptr(a)), Some(a));
        let mut other = NvmfRequest::new();
        assert_eq!(pool.completed_slot(&t, NonNull::from(&mut other)), None);
        // SAFETY: slot 1 is not with any core and nothing else references its request.
        let r = unsafe { pool.get_mut(1) };
        start_request(r, 1, &NvmeCmd::default(), DataXfer::None);
        assert_eq!(r.transport_ctx, 1);
    }

    #[test]
    fn sq_head_wraps_at_the_queue_size() {
        let mut q = SqHead::new(3);
        assert_eq!(
            [q.advance(), q.advance(), q.advance(), q.advance()],
            [1, 2, 0, 1]
        );
        q.resize(2);
        assert_eq!(q.head(), 1);
        assert_eq!(q.advance(), 0);
        let mut unknown = SqHead::new(0);
        assert_eq!([unknown.advance(), unknown.advance()], [0, 0]);
    }
}
