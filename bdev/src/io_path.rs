//! HOT PATH: per-core channels, their pre-allocated I/O descriptors, submission and completion.
//!
//! Rules kept here: no lock, no heap allocation, no syscall per I/O in steady state. Completions
//! are always delivered from the reactor loop (never inside the submit call that started them),
//! so a callback may submit again without recursion.
//!
//! Shape:
//! - One [`ChannelState`] per (core, bdev), shared by every [`IoChannel`] handle taken on that
//!   core (like SPDK's per-thread channels): one backend channel, one pool of [`IoDesc`]
//!   descriptors allocated at creation, a FIFO of I/Os held back by QoS, a list of closures
//!   waiting for a free descriptor.
//! - A descriptor is in exactly one place at a time: the channel's free list, the QoS queue,
//!   the module (as an [`IoRef`]), or the core's completion queue. The lists are intrusive
//!   (through `IoDesc::next`), so moving a descriptor never allocates.
//! - [`IoRef::complete`] only records the status and appends the descriptor to the core's
//!   completion queue; one poller per core drains it: counters, descriptor back to its pool,
//!   user callback, then closures waiting for a descriptor.
//! - Stacking (a module forwarding its I/O as a child on a base bdev) costs one extra pass,
//!   kept cheap: a child submitted from inside its parent's `submit` reuses the parent's
//!   submit tick, and a parent completed from its child's callback (outside any `submit`) goes
//!   to a chained queue finished right after that callback returns, in the same poller run
//!   and with the child's completion tick, instead of waiting for the next run.
//! - The channel state lives while a handle or an in-flight I/O needs it: dropping the last
//!   handle with I/O in flight parks an `Rc` to the state in itself (`self_ref`), released when
//!   the last I/O completes.
//!
//! Re-entrancy: nothing here holds a `RefCell` borrow or a `&mut` across a call into a module or
//! a user callback; the backend channel is reached through a guarded `UnsafeCell` (a module that
//! re-entered its own channel would be a bug, caught by the guard).

use crate::io_wait::{IoWaitEntry, WaitList};
use crate::qos::{self, QosBucket};
use crate::registry::DescShared;
use crate::stats::CoreStats;
use crate::{BackendChannel, Bdev, BdevError, IoStatus, IoType, IoVec, SubmitError, MAX_IOVS};
use keel_reactor::{PollStatus, PollerId};
use std::any::TypeId;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::mem::ManuallyDrop;
use std::pin::Pin;
use std::ptr::{self, NonNull};
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Completion callback: `ctx` is the value given at submission. Runs on the submitting core.
pub type IoCallback = fn(ctx: usize, status: IoStatus);

/// Descriptors per channel (per core per bdev). An NVMe-oF poll group serving several queue
/// pairs of depth 128 on one namespace shares one channel, hence more than one queue's worth.
pub(crate) const CHANNEL_DESCRIPTORS: usize = 512;

/// One I/O request. Lives in a channel's pool; reached through raw pointers only (never a
/// long-lived `&mut`), always on the channel's core.
pub(crate) struct IoDesc {
    /// Link in whichever intrusive list holds the descriptor (free list, QoS queue, completion
    /// queue). Unused while the module holds it.
    next: *mut IoDesc,
    /// The owning channel (kept alive while the descriptor is not free).
    chan: *const ChannelState,
    io_type: IoType,
    status: IoStatus,
    iovcnt: u32,
    offset: u64,
    num_blocks: u64,
    cb: IoCallback,
    ctx: usize,
    submit_tick: u64,
    /// The type the module's context area holds ([`IoRef::ctx`]); `None` while the area is
    /// all zeroes (never touched since submission).
    ctx_type: Option<TypeId>,
    ctx_area: [u64; 8],
    iovs: [IoVec; MAX_IOVS],
}

fn no_callback(_ctx: usize, _status: IoStatus) {}

impl IoDesc {
    const EMPTY: IoDesc = IoDesc {
        next: ptr::null_mut(),
        chan: ptr::null(),
        io_type: IoType::Read,
        status: IoStatus::Success,
        iovcnt: 0,
        offset: 0,
        num_blocks: 0,
        cb: no_callback,
        ctx: 0,
        submit_tick: 0,
        ctx_type: None,
        ctx_area: [0; 8],
        iovs: [IoVec::EMPTY; MAX_IOVS],
    };
}

/// An intrusive FIFO of descriptors linked through `IoDesc::next`.
pub(crate) struct DescQueue {
    head: Cell<*mut IoDesc>,
    tail: Cell<*mut IoDesc>,
}

impl DescQueue {
    pub(crate) const fn new() -> DescQueue {
        DescQueue {
            head: Cell::new(ptr::null_mut()),
            tail: Cell::new(ptr::null_mut()),
        }
    }
    #[inline]
    fn is_empty(&self) -> bool {
        self.head.get().is_null()
    }
    /// Append `d`.
    ///
    /// # Safety
    /// `d` must be a valid descriptor of this thread that is in no other list.
    #[inline]
    unsafe fn push_back(&self, d: *mut IoDesc) {
        // SAFETY: per the contract, `d` (and the current tail, which is in this list) are valid
        // descriptors on this thread, touched by no one else right now.
        unsafe {
            (*d).next = ptr::null_mut();
            let tail = self.tail.get();
            if tail.is_null() {
                self.head.set(d);
            } else {
                (*tail).next = d;
            }
        }
        self.tail.set(d);
    }
    /// Remove and return the first descriptor (null when empty).
    #[inline]
    fn pop_front(&self) -> *mut IoDesc {
        let d = self.head.get();
        if !d.is_null() {
            // SAFETY: descriptors in the list are valid (push_back's contract).
            let next = unsafe { (*d).next };
            self.head.set(next);
            if next.is_null() {
                self.tail.set(ptr::null_mut());
            }
        }
        d
    }
    /// Detach the whole list and return its head (null when empty).
    #[inline]
    fn take_all(&self) -> *mut IoDesc {
        self.tail.set(ptr::null_mut());
        self.head.replace(ptr::null_mut())
    }
    /// The first descriptor without removing it (null when empty).
    #[inline]
    fn front(&self) -> *mut IoDesc {
        self.head.get()
    }
}

thread_local! {
    /// This core's completed descriptors, waiting for the completion poller.
    static COMPLETED: DescQueue = const { DescQueue::new() };
    /// Parents completed by a child's completion callback (see [`IoRef::complete`]): finished
    /// by the completion poller right after that callback returns, in the same run.
    static CHAINED: DescQueue = const { DescQueue::new() };
    /// Set while the completion poller runs a user callback (the callback of a child I/O,
    /// for a stacked module).
    static IN_CALLBACK: Cell<bool> = const { Cell::new(false) };
    /// How many `BackendChannel::submit` calls are running on this core (nesting: a stacked
    /// module submitting a child from its own submit).
    static SUBMIT_DEPTH: Cell<u32> = const { Cell::new(0) };
    /// The submit tick of the outermost submission while `SUBMIT_DEPTH > 0`: children submitted
    /// from inside it reuse it instead of reading the clock again.
    static SUBMIT_TICK: Cell<u64> = const { Cell::new(0) };
    /// Whether this core's completion poller is registered.
    static COMPLETION_POLLER: Cell<bool> = const { Cell::new(false) };
}

/// The tick to stamp a new submission with: the enclosing submission's when nested inside a
/// module's `submit` (a child of a stacked bdev starts at the same instant as its parent), else
/// the clock.
#[inline]
fn submit_tick() -> u64 {
    if SUBMIT_DEPTH.with(Cell::get) > 0 {
        SUBMIT_TICK.with(Cell::get)
    } else {
        keel_reactor::ticks()
    }
}

/// Queue a completed descriptor for the completion poller. When the completing code runs in a
/// completion callback and not inside any module `submit` (a stacked module completing a
/// parent from its child's callback), the parent goes to the chained queue, finished in the
/// same poller run right after that callback returns; otherwise it waits for the next run.
/// Either way no callback runs inside the caller's `complete` (or `submit`).
///
/// # Safety
/// `d` is a descriptor of a live channel of this thread whose owner gives it up, in no list.
#[inline]
unsafe fn queue_completed(d: *mut IoDesc) {
    let chain = IN_CALLBACK.with(Cell::get) && SUBMIT_DEPTH.with(Cell::get) == 0;
    // SAFETY: per the contract.
    unsafe {
        if chain {
            CHAINED.with(|q| q.push_back(d));
        } else {
            COMPLETED.with(|q| q.push_back(d));
        }
    }
}

/// Drain this core's completion queue: counters, descriptor back to its pool, user callback,
/// waiters. Parents completed by a callback (stacked bdevs) finish right after it, in this run,
/// with the same completion tick. Completions added by submissions made meanwhile (callbacks
/// that resubmit to modules completing at once) wait for the next run, so a run is bounded.
pub(crate) fn poll_completions() -> PollStatus {
    let mut d = COMPLETED.with(DescQueue::take_all);
    if d.is_null() {
        return PollStatus::Idle;
    }
    while !d.is_null() {
        // SAFETY: every descriptor on the queue was completed on this core and is out of every
        // other list; its channel is alive since the descriptor still counts as in flight.
        unsafe {
            let next = (*d).next;
            let now = keel_reactor::ticks();
            finish(d, now);
            // Each chained parent may chain its own parent (one per stacking level).
            loop {
                let p = CHAINED.with(DescQueue::pop_front);
                if p.is_null() {
                    break;
                }
                finish(p, now);
            }
            d = next;
        }
    }
    PollStatus::Busy
}

/// Complete one descriptor taken from the completion queue; `now` is the completion tick.
///
/// # Safety
/// `d` is a completed descriptor of a live channel of this thread, in no list.
unsafe fn finish(d: *mut IoDesc, now: u64) {
    // SAFETY: per the contract; the fields are copied out before the descriptor is freed.
    let (chan, io_type, status, num_blocks, cb, ctx, t0) = unsafe {
        let x = &*d;
        (
            &*x.chan,
            x.io_type,
            x.status,
            x.num_blocks,
            x.cb,
            x.ctx,
            x.submit_tick,
        )
    };
    let bytes = match io_type {
        IoType::Read | IoType::Write | IoType::Unmap => num_blocks * u64::from(chan.block_size),
        _ => 0,
    };
    chan.stats
        .record(io_type, status, bytes, now.wrapping_sub(t0));
    // SAFETY: `d` belongs to `chan` and is in no list.
    unsafe { chan.put_desc(d) };
    // The descriptor is free (a resubmission may reuse it) but still counts in `inflight`, so
    // the channel outlives the callback even if the callback drops the last handle.
    let outer = IN_CALLBACK.with(|c| c.replace(true));
    cb(ctx, status);
    IN_CALLBACK.with(|c| c.set(outer));
    chan.serve_waiters();
    // `chan` is a local (not a protected argument): dropping the parked Rc may free the channel,
    // and `chan` is not used afterwards.
    drop(chan.io_done());
}

fn ensure_completion_poller() {
    if !COMPLETION_POLLER.with(|p| p.replace(true)) {
        keel_reactor::register_poller("bdev_completions", None, poll_completions);
    }
}

/// One core's channel state for one bdev (see the module doc).
pub(crate) struct ChannelState {
    bdev: Bdev,
    block_size: u32,
    supported: [bool; IoType::ALL.len()],
    /// Dropped by hand in `Drop`, before the bdev is told the channel is gone.
    backend: ManuallyDrop<UnsafeCell<Box<dyn BackendChannel>>>,
    /// Set while the backend channel is borrowed (re-entrancy guard).
    in_backend: Cell<bool>,
    pool: Box<[UnsafeCell<IoDesc>]>,
    /// Free descriptors (LIFO through `next`, for cache warmth).
    free: Cell<*mut IoDesc>,
    /// Descriptors taken and not yet finished (QoS-queued, in the module, completing).
    inflight: Cell<u32>,
    /// Live `IoChannel` handles.
    handles: Cell<u32>,
    /// Keeps the state alive after the last handle went while I/O is in flight.
    self_ref: Cell<Option<Rc<ChannelState>>>,
    /// Caller-owned entries waiting for a free descriptor ([`IoChannel::queue_io_wait`]).
    io_waits: WaitList,
    stats: Rc<CoreStats>,
    qos_on: Cell<bool>,
    qos: RefCell<Option<QosBucket>>,
    qos_queue: DescQueue,
    qos_poller: Cell<Option<PollerId>>,
    /// Backend poller (modules with `needs_poll`).
    poller: Cell<Option<PollerId>>,
    /// Whether the state lives on a reactor (else a unit test drives it by hand).
    on_reactor: bool,
}

impl ChannelState {
    fn new(bdev: &Bdev, depth: usize, on_reactor: bool) -> Result<Rc<ChannelState>, BdevError> {
        let backend = bdev.backend().create_channel()?;
        let needs_poll = backend.needs_poll();
        let pool: Box<[UnsafeCell<IoDesc>]> =
            (0..depth).map(|_| UnsafeCell::new(IoDesc::EMPTY)).collect();
        let st = Rc::new(ChannelState {
            bdev: bdev.clone(),
            block_size: bdev.info().block_size,
            supported: bdev.supported_table(),
            backend: ManuallyDrop::new(UnsafeCell::new(backend)),
            in_backend: Cell::new(false),
            pool,
            free: Cell::new(ptr::null_mut()),
            inflight: Cell::new(0),
            handles: Cell::new(0),
            self_ref: Cell::new(None),
            io_waits: WaitList::new(),
            stats: crate::percore::stats_cell(bdev.id()),
            qos_on: Cell::new(false),
            qos: RefCell::new(None),
            qos_queue: DescQueue::new(),
            qos_poller: Cell::new(None),
            poller: Cell::new(None),
            on_reactor,
        });
        let me = Rc::as_ptr(&st);
        for cell in st.pool.iter().rev() {
            let d = cell.get();
            // SAFETY: the pool was just created; nothing else refers to its descriptors.
            unsafe {
                (*d).chan = me;
                (*d).next = st.free.get();
            }
            st.free.set(d);
        }
        bdev.channel_opened();
        if on_reactor {
            ensure_completion_poller();
            if needs_poll {
                let w = Rc::downgrade(&st);
                let id = keel_reactor::register_poller("bdev_channel", None, move || {
                    w.upgrade().map_or(PollStatus::Idle, |c| c.poll_backend())
                });
                st.poller.set(Some(id));
            }
        }
        st.apply_qos(&bdev.qos_limits());
        log::debug!(
            "bdev {}: channel created on core {:?} ({depth} descriptors)",
            bdev.name(),
            keel_reactor::current_core()
        );
        Ok(st)
    }

    /// Run `f` on the backend channel.
    #[inline]
    fn with_backend<R>(&self, f: impl FnOnce(&mut dyn BackendChannel) -> R) -> R {
        assert!(
            !self.in_backend.replace(true),
            "bdev {}: module re-entered its own channel",
            self.bdev.name()
        );
        // SAFETY: the guard above makes this the only live reference to the backend channel;
        // the state is `!Sync`, so no other thread can reach it.
        let r = f(unsafe { &mut **self.backend.get() });
        self.in_backend.set(false);
        r
    }

    fn poll_backend(&self) -> PollStatus {
        if self.inflight.get() == 0 {
            return PollStatus::Idle;
        }
        self.with_backend(|b| b.poll())
    }

    #[inline]
    fn take_desc(&self) -> Option<*mut IoDesc> {
        let d = self.free.get();
        if d.is_null() {
            return None;
        }
        // SAFETY: `d` heads the free list, so it is a valid descriptor of this channel.
        self.free.set(unsafe { (*d).next });
        Some(d)
    }

    /// Put `d` back on the free list.
    ///
    /// # Safety
    /// `d` belongs to this channel's pool and is in no list.
    #[inline]
    unsafe fn put_desc(&self, d: *mut IoDesc) {
        // SAFETY: per the contract.
        unsafe { (*d).next = self.free.get() };
        self.free.set(d);
    }

    /// Validate an I/O against the bdev (not the iovecs). The range is checked against the
    /// live block count ([`Bdev::num_blocks`], one `Acquire` load), so a resize takes effect
    /// for the next submission on every core.
    #[inline]
    fn check(&self, io_type: IoType, offset: u64, num_blocks: u64) -> Result<(), SubmitError> {
        if self.bdev.removing_flag().load(Ordering::Relaxed) {
            return Err(SubmitError::Removed);
        }
        if !self.supported[io_type as usize] {
            return Err(SubmitError::Unsupported);
        }
        match io_type {
            IoType::Flush | IoType::Reset => Ok(()),
            _ => {
                let end = offset.checked_add(num_blocks);
                if num_blocks == 0 || end.is_none_or(|e| e > self.bdev.num_blocks()) {
                    Err(SubmitError::OutOfRange)
                } else {
                    Ok(())
                }
            }
        }
    }

    /// Account a descriptor as in flight and send it to QoS or the module.
    #[inline]
    fn start(&self, d: *mut IoDesc) {
        self.inflight.set(self.inflight.get() + 1);
        let now = submit_tick();
        // SAFETY: `d` was just taken from this channel's free list and filled; only we hold it.
        let io_type = unsafe {
            (*d).submit_tick = now;
            (*d).io_type
        };
        if self.qos_on.get() && qos::is_limited(io_type) && !self.qos_admit(d) {
            // SAFETY: `d` is ours and in no list.
            unsafe { self.qos_queue.push_back(d) };
            return;
        }
        self.submit_to_backend(d, now);
    }

    /// Whether QoS lets `d` go now (FIFO: never ahead of queued I/O).
    fn qos_admit(&self, d: *mut IoDesc) -> bool {
        if !self.qos_queue.is_empty() {
            return false;
        }
        self.qos_try(d)
    }

    fn qos_try(&self, d: *mut IoDesc) -> bool {
        // SAFETY: `d` is a taken descriptor of this channel, not in the module.
        let (io_type, num) = unsafe { ((*d).io_type, (*d).num_blocks) };
        let bytes = match io_type {
            IoType::Read | IoType::Write => num * u64::from(self.block_size),
            _ => 0,
        };
        self.qos
            .borrow_mut()
            .as_mut()
            .is_none_or(|b| b.try_admit(io_type, bytes))
    }

    /// Hand `d` to the module; `now` is the tick children submitted from inside the module's
    /// `submit` are stamped with.
    #[inline]
    fn submit_to_backend(&self, d: *mut IoDesc, now: u64) {
        // SAFETY: `d` is a filled descriptor of this channel that nobody else holds; it is
        // handed to the module as its one IoRef.
        let io = unsafe { IoRef::new(d) };
        let depth = SUBMIT_DEPTH.with(Cell::get);
        if depth == 0 {
            SUBMIT_TICK.with(|t| t.set(now));
        }
        SUBMIT_DEPTH.with(|c| c.set(depth + 1));
        self.with_backend(|b| b.submit(io));
        SUBMIT_DEPTH.with(|c| c.set(depth));
    }

    /// Call the wait entries while descriptors are free, in FIFO order. Each runs at most once
    /// per call, so one that re-queues itself cannot spin.
    #[inline]
    fn serve_waiters(&self) {
        if self.free.get().is_null() {
            return;
        }
        // Entries first (FIFO), each at most once: a callback may queue its entry again.
        for _ in 0..self.io_waits.len() {
            if self.free.get().is_null() {
                return;
            }
            let Some((cb, ctx)) = self.io_waits.pop_front() else {
                break;
            };
            cb(ctx);
        }
    }

    /// One I/O finished. Returns the parked self-reference when it was the last I/O of a
    /// channel without handles: the caller drops it (which frees the state) after its last use.
    #[inline]
    fn io_done(&self) -> Option<Rc<ChannelState>> {
        let n = self.inflight.get() - 1;
        self.inflight.set(n);
        if n == 0 && self.handles.get() == 0 {
            self.self_ref.take()
        } else {
            None
        }
    }

    /// Apply `limits` (this core's share) to the channel.
    fn apply_qos(self: &Rc<Self>, limits: &qos::QosLimits) {
        match QosBucket::new(limits, qos::ncores()) {
            None => {
                self.qos_on.set(false);
                *self.qos.borrow_mut() = None;
                if let Some(id) = self.qos_poller.take() {
                    keel_reactor::unregister_poller(id);
                }
                loop {
                    let d = self.qos_queue.pop_front();
                    if d.is_null() {
                        break;
                    }
                    self.submit_to_backend(d, keel_reactor::ticks());
                }
            }
            Some(bucket) => {
                *self.qos.borrow_mut() = Some(bucket);
                self.qos_on.set(true);
                if self.on_reactor && self.qos_poller.get().is_none() {
                    let w = Rc::downgrade(self);
                    let id = keel_reactor::register_poller(
                        "bdev_qos",
                        Some(qos::TIMESLICE),
                        move || w.upgrade().map_or(PollStatus::Idle, |c| c.qos_refill()),
                    );
                    self.qos_poller.set(Some(id));
                }
            }
        }
    }

    /// Start a QoS timeslice: refill the budget and submit what it allows from the queue.
    pub(crate) fn qos_refill(&self) -> PollStatus {
        if let Some(b) = self.qos.borrow_mut().as_mut() {
            b.refill();
        }
        let mut status = PollStatus::Idle;
        loop {
            let d = self.qos_queue.front();
            if d.is_null() || !self.qos_try(d) {
                break;
            }
            self.qos_queue.pop_front();
            self.submit_to_backend(d, keel_reactor::ticks());
            status = PollStatus::Busy;
        }
        status
    }

    /// Complete every QoS-held I/O as aborted (for reset).
    fn abort_queued(&self) {
        loop {
            let d = self.qos_queue.pop_front();
            if d.is_null() {
                break;
            }
            // SAFETY: `d` was a queued descriptor of this channel; now only we hold it.
            unsafe { IoRef::new(d) }.complete(IoStatus::Aborted);
        }
    }
}

impl Drop for ChannelState {
    fn drop(&mut self) {
        debug_assert_eq!(self.inflight.get(), 0, "channel freed with I/O in flight");
        for id in [self.poller.take(), self.qos_poller.take()]
            .into_iter()
            .flatten()
        {
            keel_reactor::unregister_poller(id);
        }
        // SAFETY: dropped exactly once, here; nothing uses the backend channel afterwards. It
        // goes before `channel_closed` so the module's `destruct` never races its channel.
        unsafe { ManuallyDrop::drop(&mut self.backend) };
        log::debug!("bdev {}: channel released", self.bdev.name());
        self.bdev.channel_closed();
    }
}

/// Get a handle on this core's channel for `bdev` (creating the channel on first use).
pub(crate) fn channel_for(bdev: &Bdev, desc: Arc<DescShared>) -> Result<IoChannel, BdevError> {
    let core = keel_reactor::current_core();
    if core.is_none() && !cfg!(test) {
        return Err(BdevError::Invalid(format!(
            "bdev {}: I/O channels can only be taken on a reactor core",
            bdev.name()
        )));
    }
    let state = match crate::percore::channel(bdev.id()) {
        Some(st) => {
            // Revive a channel kept only by its in-flight I/O; the parked Rc is not the last.
            drop(st.self_ref.take());
            st
        }
        None => {
            let st = ChannelState::new(bdev, CHANNEL_DESCRIPTORS, core.is_some())?;
            crate::percore::set_channel(bdev.id(), &st);
            st
        }
    };
    state.handles.set(state.handles.get() + 1);
    Ok(IoChannel { state, desc })
}

/// Re-read `bdev`'s QoS limits into this core's channel, if it has one.
pub(crate) fn apply_qos_here(bdev: &Bdev) {
    if let Some(ch) = crate::percore::channel(bdev.id()) {
        ch.apply_qos(&bdev.qos_limits());
    }
}

/// A core's handle for submitting I/O to one bdev (from [`crate::BdevDesc::get_io_channel`]).
/// `!Send`: it belongs to the core that created it. Dropping it with I/O in flight is allowed;
/// the resources go when the last I/O completes.
///
/// Write-type I/O (write, write_zeroes, unmap) through a handle from a read-only descriptor is
/// refused with [`SubmitError::Unsupported`].
pub struct IoChannel {
    state: Rc<ChannelState>,
    desc: Arc<DescShared>,
}

impl IoChannel {
    /// The bdev this channel submits to.
    pub fn bdev(&self) -> &Bdev {
        &self.state.bdev
    }

    #[inline]
    fn submit(
        &self,
        io_type: IoType,
        iovs: &[IoVec],
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        let st = &*self.state;
        st.check(io_type, offset_blocks, num_blocks)?;
        if matches!(io_type, IoType::Write | IoType::WriteZeroes | IoType::Unmap)
            && !self.desc.writable()
        {
            return Err(SubmitError::Unsupported);
        }
        let data_len = match io_type {
            // Cannot overflow: num_blocks ≤ the bdev's blocks, whose byte size fits in u64.
            IoType::Read | IoType::Write => num_blocks * u64::from(st.block_size),
            _ => 0,
        };
        if iovs.len() > MAX_IOVS {
            return Err(SubmitError::BadIovecs);
        }
        let d = st.take_desc().ok_or(SubmitError::NoDescriptor)?;
        // SAFETY: `d` was just taken from the free list: nobody else refers to it.
        let complete = unsafe {
            fill(
                d,
                io_type,
                offset_blocks,
                num_blocks,
                cb,
                ctx,
                iovs,
                data_len,
            )
        };
        if !complete {
            // SAFETY: `d` is ours and in no list.
            unsafe { st.put_desc(d) };
            return Err(SubmitError::BadIovecs);
        }
        st.start(d);
        Ok(())
    }

    /// Read `num_blocks` blocks at `offset_blocks` into `iovs` (total length ≥ the blocks).
    pub fn read(
        &self,
        iovs: &[IoVec],
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        self.submit(IoType::Read, iovs, offset_blocks, num_blocks, cb, ctx)
    }
    /// Write `num_blocks` blocks at `offset_blocks` from `iovs`.
    pub fn write(
        &self,
        iovs: &[IoVec],
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        self.submit(IoType::Write, iovs, offset_blocks, num_blocks, cb, ctx)
    }
    /// Make blocks read back as zeroes.
    pub fn write_zeroes(
        &self,
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        self.submit(IoType::WriteZeroes, &[], offset_blocks, num_blocks, cb, ctx)
    }
    /// Deallocate blocks.
    pub fn unmap(
        &self,
        offset_blocks: u64,
        num_blocks: u64,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        self.submit(IoType::Unmap, &[], offset_blocks, num_blocks, cb, ctx)
    }
    /// Make completed writes durable. The module sees it as covering the whole bdev.
    pub fn flush(&self, cb: IoCallback, ctx: usize) -> Result<(), SubmitError> {
        self.submit(IoType::Flush, &[], 0, self.state.bdev.num_blocks(), cb, ctx)
    }
    /// Reset the bdev (abort what is queued in this channel, pass the reset to the module).
    /// I/Os held back by QoS on this channel complete as [`IoStatus::Aborted`]; the module
    /// completes the reset once it has aborted or finished what it holds.
    pub fn reset(&self, cb: IoCallback, ctx: usize) -> Result<(), SubmitError> {
        let st = &*self.state;
        st.check(IoType::Reset, 0, 0)?;
        let d = st.take_desc().ok_or(SubmitError::NoDescriptor)?;
        // SAFETY: `d` was just taken from the free list: nobody else refers to it.
        unsafe { fill(d, IoType::Reset, 0, 0, cb, ctx, &[], 0) };
        st.abort_queued();
        st.inflight.set(st.inflight.get() + 1);
        let now = submit_tick();
        // SAFETY: as above.
        unsafe { (*d).submit_tick = now };
        st.submit_to_backend(d, now);
        Ok(())
    }
    /// Queue `entry` to be called back (once, on this core, from the completion poller) when a
    /// descriptor is freed on this channel: the allocation-free back-pressure path after
    /// [`SubmitError::NoDescriptor`] (SPDK's `spdk_bdev_queue_io_wait`). Entries are served in
    /// FIFO order while descriptors are free; a callback that fails to submit again may queue
    /// its entry again (it is then served on a later completion, not in the same pass).
    ///
    /// Returns false, without queueing, when a descriptor is free right now: submit again at
    /// once. Panics if `entry` is queued already. Dropping or [cancelling](IoWaitEntry::cancel)
    /// the entry unqueues it.
    #[must_use = "false means a descriptor is free now: the entry was not queued"]
    pub fn queue_io_wait(&self, entry: Pin<&IoWaitEntry>) -> bool {
        if !self.state.free.get().is_null() {
            return false;
        }
        self.state.io_waits.push_back(entry);
        true
    }
}

impl Drop for IoChannel {
    fn drop(&mut self) {
        let st = &self.state;
        st.handles.set(st.handles.get() - 1);
        if st.handles.get() == 0 && st.inflight.get() > 0 {
            st.self_ref.set(Some(Rc::clone(st)));
        }
    }
}

impl std::fmt::Debug for IoChannel {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoChannel")
            .field("bdev", &self.state.bdev.name())
            .field("inflight", &self.state.inflight.get())
            .finish()
    }
}

/// Fill a free descriptor; copies the iovecs trimmed to exactly `data_len` bytes (skipping
/// empty ones). Returns false when the iovecs are shorter than `data_len`.
///
/// # Safety
/// `d` is a descriptor taken from a free list and held by nobody else.
#[allow(clippy::too_many_arguments)]
#[inline]
unsafe fn fill(
    d: *mut IoDesc,
    io_type: IoType,
    offset: u64,
    num_blocks: u64,
    cb: IoCallback,
    ctx: usize,
    iovs: &[IoVec],
    data_len: u64,
) -> bool {
    // SAFETY: per the contract, this is the only reference to the descriptor.
    let d = unsafe { &mut *d };
    d.io_type = io_type;
    d.status = IoStatus::Success;
    d.offset = offset;
    d.num_blocks = num_blocks;
    d.cb = cb;
    d.ctx = ctx;
    // The context area is all zeroes while no type was given to it (see `IoRef::ctx`); only a
    // descriptor whose last module used it pays for the zeroing.
    if d.ctx_type.take().is_some() {
        d.ctx_area = [0; 8];
    }
    debug_assert_eq!(d.ctx_area, [0; 8]);
    let mut left = data_len;
    let mut n = 0;
    for iov in iovs {
        if left == 0 {
            break;
        }
        if iov.len == 0 {
            continue;
        }
        let take = left.min(iov.len as u64);
        d.iovs[n] = IoVec {
            base: iov.base,
            len: take as usize,
        };
        n += 1;
        left -= take;
    }
    d.iovcnt = n as u32;
    left == 0
}

/// Bytes of per-I/O context a module may keep in a descriptor ([`IoRef::ctx`]).
pub const IO_CTX_BYTES: usize = 64;
/// Largest alignment a per-I/O context type may need ([`IoRef::ctx`]).
pub const IO_CTX_ALIGN: usize = 8;
const _: () =
    assert!(size_of::<[u64; 8]>() == IO_CTX_BYTES && align_of::<[u64; 8]>() == IO_CTX_ALIGN);

/// A type a module may keep as its per-I/O context ([`IoRef::ctx`]).
///
/// # Safety
/// The all-zero byte pattern must be a valid value of the type: integers, `bool`, raw pointers,
/// `Option<NonNull<_>>`, `Cell`s and arrays of those, [`IoStatus`] (zero is `Success`), and
/// structs made only of such fields qualify; references, `NonNull`, `fn` pointers and enums
/// without a zero discriminant do not. The type must not need dropping (checked at compile
/// time by [`IoRef::ctx`]: the context is never dropped).
pub unsafe trait IoCtx: Sized + 'static {}

macro_rules! zeroable {
    ($($t:ty),*) => {$(
        // SAFETY: zero is a valid value of this primitive type (integer zero, `false`, or the
        // null pointer), and it has no drop glue.
        unsafe impl IoCtx for $t {}
    )*};
}
zeroable!(
    u8,
    u16,
    u32,
    u64,
    u128,
    usize,
    i8,
    i16,
    i32,
    i64,
    i128,
    isize,
    bool,
    ()
);
// SAFETY: zero is the null pointer, a valid raw pointer value.
unsafe impl<T: 'static> IoCtx for *const T {}
// SAFETY: as above.
unsafe impl<T: 'static> IoCtx for *mut T {}
// SAFETY: `Option<NonNull<T>>` is guaranteed to have the null pointer (zero) as `None`.
unsafe impl<T: 'static> IoCtx for Option<NonNull<T>> {}
// SAFETY: an array of zero-valid elements is zero-valid.
unsafe impl<T: IoCtx, const N: usize> IoCtx for [T; N] {}
// SAFETY: `Cell<T>` has the same in-memory representation as `T`.
unsafe impl<T: IoCtx> IoCtx for Cell<T> {}
// SAFETY: `IoStatus` is `repr(u8)` with `Success = 0`.
unsafe impl IoCtx for IoStatus {}

/// The module's view of one in-flight I/O (a pointer into the channel's descriptor pool).
/// It must be completed exactly once, on the core it was submitted on. Dropping it without
/// completing is a module bug: it is logged and the I/O completes with [`IoStatus::IoError`].
pub struct IoRef {
    desc: NonNull<IoDesc>,
}

impl IoRef {
    /// # Safety
    /// `d` is a valid, filled descriptor that becomes owned by the new `IoRef` alone.
    #[inline]
    unsafe fn new(d: *mut IoDesc) -> IoRef {
        IoRef {
            // SAFETY: descriptors come from a live pool, never null.
            desc: unsafe { NonNull::new_unchecked(d) },
        }
    }
    #[inline]
    fn d(&self) -> *mut IoDesc {
        self.desc.as_ptr()
    }
    /// The I/O type.
    pub fn io_type(&self) -> IoType {
        // SAFETY: the IoRef owns a live descriptor (see `new`).
        unsafe { (*self.d()).io_type }
    }
    /// First block.
    pub fn offset_blocks(&self) -> u64 {
        // SAFETY: as in `io_type`.
        unsafe { (*self.d()).offset }
    }
    /// Number of blocks (the whole bdev for flush, 0 for reset).
    pub fn num_blocks(&self) -> u64 {
        // SAFETY: as in `io_type`.
        unsafe { (*self.d()).num_blocks }
    }
    /// Block size of the bdev, bytes.
    pub fn block_size(&self) -> u32 {
        // SAFETY: as in `io_type`; the channel outlives its in-flight descriptors.
        unsafe { (*(*self.d()).chan).block_size }
    }
    /// The data buffers (empty for write_zeroes, unmap, flush, reset). For read and write their
    /// total length is exactly `num_blocks × block_size` (the layer trims the caller's list and
    /// drops empty iovecs).
    pub fn iovs(&self) -> &[IoVec] {
        // SAFETY: as in `io_type`; the iovecs are not written while the module holds the I/O,
        // and the borrow is tied to `&self`.
        unsafe {
            let d = self.d();
            let iovs: &[IoVec; MAX_IOVS] = &(*d).iovs;
            &iovs[..(*d).iovcnt as usize]
        }
    }
    /// The module's typed per-I/O context (SPDK's `driver_ctx` sized by `get_ctx_size`): a `T`
    /// living in the descriptor's [`IO_CTX_BYTES`]-byte scratch area, all zeroes at submission
    /// (hence [`IoCtx`]: zero must be a valid `T`). Size, alignment and "no drop glue" are
    /// checked at compile time. Nothing here allocates.
    ///
    /// One type per I/O: the first call fixes the area's type until the I/O completes; asking
    /// for another type panics, so bytes written as one type are never read as another.
    #[inline]
    pub fn ctx<T: IoCtx>(&mut self) -> &mut T {
        const {
            assert!(
                size_of::<T>() <= IO_CTX_BYTES,
                "I/O context type larger than the descriptor's scratch area"
            );
            assert!(
                align_of::<T>() <= IO_CTX_ALIGN,
                "I/O context type more aligned than the descriptor's scratch area"
            );
            assert!(
                !std::mem::needs_drop::<T>(),
                "I/O context types are never dropped: no drop glue allowed"
            );
        }
        let want = TypeId::of::<T>();
        let d = self.d();
        // SAFETY: as in `io_type`; `&mut self` makes this the only borrow of the descriptor's
        // context fields while the returned reference lives. The area is either all zeroes
        // (`ctx_type` is `None`: `fill` and `EMPTY` keep that invariant), a valid `T` by
        // `IoCtx`'s contract, or was last written as a `T` through a previous call (the tag
        // says so); size and alignment fit (checked above; the area is a `[u64; 8]`).
        unsafe {
            match (*d).ctx_type {
                None => (*d).ctx_type = Some(want),
                Some(t) => assert!(
                    t == want,
                    "I/O context used as two different types ({})",
                    std::any::type_name::<T>()
                ),
            }
            &mut *(&raw mut (*d).ctx_area).cast::<T>()
        }
    }
    /// The intrusive link [`crate::modules::stack::IoQueue`] threads through held I/Os (the
    /// descriptor's list link, unused while the module holds the I/O).
    #[inline]
    pub(crate) fn queue_link(&self) -> usize {
        // SAFETY: as in `io_type`; the link is free while the module holds the descriptor.
        unsafe { (*self.d()).next as usize }
    }
    /// Set [`IoRef::queue_link`].
    #[inline]
    pub(crate) fn set_queue_link(&mut self, next: usize) {
        // SAFETY: as in `queue_link`.
        unsafe { (*self.d()).next = next as *mut IoDesc };
    }
    /// Finish the I/O. The user callback runs from the reactor loop, not from inside this call
    /// (nor inside the submit call that started the I/O). When called from the completion
    /// callback of a child I/O (a stacked module finishing its parent), the parent's callback
    /// runs as soon as that child callback returns, in the same completion-poller run.
    #[inline]
    pub fn complete(self, status: IoStatus) {
        let d = self.into_raw() as *mut IoDesc;
        // SAFETY: we owned the descriptor; it moves to this core's completion queue. IoRef is
        // `!Send`, so this is the core it was submitted on.
        unsafe {
            (*d).status = status;
            queue_completed(d);
        }
    }
    /// Turn into an integer, e.g. to pass as the `ctx` of a child I/O on a base bdev.
    #[inline]
    pub fn into_raw(self) -> usize {
        let raw = self.d() as usize;
        std::mem::forget(self);
        raw
    }
    /// Rebuild from [`IoRef::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from `into_raw` on this core, and be used exactly once.
    #[inline]
    pub unsafe fn from_raw(raw: usize) -> IoRef {
        // SAFETY: per the contract, `raw` is a live descriptor owned by no other IoRef.
        unsafe { IoRef::new(raw as *mut IoDesc) }
    }
}

impl Drop for IoRef {
    fn drop(&mut self) {
        log::error!(
            "bdev module dropped a {:?} I/O (offset {}, {} blocks) without completing it",
            self.io_type(),
            self.offset_blocks(),
            self.num_blocks()
        );
        let d = self.d();
        // SAFETY: `self` owns the descriptor and is going away: hand it to the completion queue
        // exactly once (complete/into_raw forget `self`, so they never reach here).
        unsafe {
            (*d).status = IoStatus::IoError;
            queue_completed(d);
        }
    }
}

impl std::fmt::Debug for IoRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoRef")
            .field("io_type", &self.io_type())
            .field("offset_blocks", &self.offset_blocks())
            .field("num_blocks", &self.num_blocks())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{block_on, info, take_held, HoldBackend};
    use crate::{modules, open, register, unregister, BdevDesc};
    use std::cell::RefCell;
    use std::sync::atomic::AtomicUsize;

    thread_local! {
        static DONE: RefCell<Vec<(usize, IoStatus)>> = const { RefCell::new(Vec::new()) };
    }

    fn record(ctx: usize, status: IoStatus) {
        DONE.with(|d| d.borrow_mut().push((ctx, status)));
    }

    fn done() -> Vec<(usize, IoStatus)> {
        DONE.with(|d| std::mem::take(&mut *d.borrow_mut()))
    }

    fn iov(buf: &mut [u8]) -> IoVec {
        // SAFETY: the test keeps `buf` alive and untouched until the I/O completes.
        unsafe { IoVec::from_raw_parts(buf.as_mut_ptr(), buf.len()) }
    }

    fn hold_bdev(name: &str) -> (BdevDesc, Arc<AtomicUsize>) {
        let b = HoldBackend::new();
        let submitted = Arc::clone(&b.submitted);
        register(info(name, 512, 1024), Arc::new(b)).unwrap();
        (open(name, true, |_| {}).unwrap(), submitted)
    }

    #[test]
    fn malloc_data_round_trip_unmap_and_write_zeroes() {
        modules::malloc::create("io_malloc", 64, 512, None).unwrap();
        let desc = open("io_malloc", true, |_| {}).unwrap();
        let ch = desc.get_io_channel().unwrap();
        let mut w: Vec<u8> = (0..2048u32).map(|i| (i * 7 + 3) as u8).collect();
        // two iovecs, the second longer than needed: trimmed to exactly 4 blocks
        let (a, b) = w.split_at_mut(1000);
        ch.write(&[iov(a), iov(b)], 8, 4, record, 1).unwrap();
        assert!(done().is_empty(), "completion never runs inside submit");
        poll_completions();
        assert_eq!(done(), vec![(1, IoStatus::Success)]);

        let mut r = vec![0u8; 2048];
        ch.read(&[iov(&mut r)], 8, 4, record, 2).unwrap();
        poll_completions();
        assert_eq!(done(), vec![(2, IoStatus::Success)]);
        assert_eq!(r, w);

        ch.unmap(9, 1, record, 3).unwrap();
        ch.write_zeroes(11, 1, record, 4).unwrap();
        ch.flush(record, 5).unwrap();
        poll_completions();
        assert_eq!(done().len(), 3);
        let mut r = vec![0xffu8; 2048];
        ch.read(&[iov(&mut r)], 8, 4, record, 6).unwrap();
        poll_completions();
        assert_eq!(&r[..512], &w[..512]);
        assert!(
            r[512..1024].iter().all(|&x| x == 0),
            "unmapped block reads zeroes"
        );
        assert_eq!(&r[1024..1536], &w[1024..1536]);
        assert!(r[1536..].iter().all(|&x| x == 0), "write_zeroes");
        done();

        let s = block_on(desc.bdev().io_stats());
        assert_eq!((s.num_write_ops, s.bytes_written), (1, 2048));
        assert_eq!((s.num_read_ops, s.bytes_read), (2, 4096));
        assert_eq!((s.num_unmap_ops, s.bytes_unmapped), (1, 512));
        assert_eq!(s.num_write_zeroes_ops, 1);
        drop(ch);
        drop(desc);
        block_on(unregister("io_malloc")).unwrap();
    }

    /// `bdev_get_histogram`'s answer decoded: (granularity, min_range, buckets).
    fn get_histogram(name: &str) -> Result<(u32, u32, Vec<u64>), keel_rpc::RpcError> {
        let v = block_on(crate::rpc::rpc_get_histogram(Some(
            serde_json::json!({ "name": name }),
        )))?;
        assert!(v["tsc_rate"].as_u64().unwrap() > 0);
        let bytes = crate::histogram::tests::base64_decode(v["histogram"].as_str().unwrap());
        let (g, min, max) = (
            v["granularity"].as_u64().unwrap() as u32,
            v["min_range"].as_u64().unwrap() as u32,
            v["max_range"].as_u64().unwrap() as u32,
        );
        let buckets: Vec<u64> = bytes
            .chunks(8)
            .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        assert_eq!(buckets.len() as u64, u64::from(max - min + 1) << g);
        Ok((g, min, buckets))
    }

    fn enable_histogram(p: serde_json::Value) -> Result<serde_json::Value, keel_rpc::RpcError> {
        block_on(crate::rpc::rpc_enable_histogram(Some(p)))
    }

    #[test]
    fn histogram_counts_completed_io_in_spdk_layout() {
        use serde_json::json;
        let (desc, _) = hold_bdev("io_hist");
        let ch = desc.get_io_channel().unwrap();
        let e = get_histogram("io_hist").unwrap_err();
        assert_eq!(e.code, -libc::EFAULT, "{e}");
        assert!(e.message.contains("bdev_enable_histogram"), "{e}");
        assert_eq!(
            enable_histogram(json!({"name": "io_hist", "enable": true})),
            Ok(json!(true))
        );
        // 5 writes and 3 reads, each held ~2 ms by the backend.
        let mut buf = vec![0u8; 512];
        for i in 0..8 {
            let io = iov(&mut buf);
            if i < 5 {
                ch.write(&[io], i, 1, record, i as usize).unwrap();
            } else {
                ch.read(&[io], i, 1, record, i as usize).unwrap();
            }
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
        for io in take_held() {
            io.complete(IoStatus::Success);
        }
        poll_completions();
        assert_eq!(done().len(), 8);
        let (g, min_range, buckets) = get_histogram("io_hist").unwrap();
        assert_eq!(
            buckets.iter().sum::<u64>(),
            8,
            "every completion counted once"
        );
        // Each sits in a bucket whose upper bound (as SPDK's histogram.py computes it) is at
        // least the 2 ms the I/O was held.
        let two_ms = keel_reactor::tick_rate() / 500;
        for (i, _) in buckets.iter().enumerate().filter(|(_, &c)| c > 0) {
            let (r, j) = ((i >> g) as u32 + min_range, (i as u64) & ((1 << g) - 1));
            let end = if r > 0 {
                (1u64 << (r + g - 1)) + ((j + 1) << (r - 1))
            } else {
                j + 1
            };
            assert!(
                end > two_ms,
                "bucket {i} ends at {end} ticks < 2 ms ({two_ms})"
            );
        }
        // Enabling again with the same options keeps the counts; save_config records it.
        enable_histogram(json!({"name": "io_hist", "enable": true})).unwrap();
        assert_eq!(get_histogram("io_hist").unwrap().2.iter().sum::<u64>(), 8);
        assert!(crate::rpc::save_config().iter().any(|c| c
            == &json!({"method": "bdev_enable_histogram",
                       "params": {"name": "io_hist", "enable": true}})));
        // Only reads: a fresh histogram with the new options.
        enable_histogram(json!({"name": "io_hist", "enable": true, "opc": "read",
                                "granularity": 4, "min_nsec": 0, "max_nsec": 1_000_000_000}))
        .unwrap();
        ch.write(&[iov(&mut buf)], 0, 1, record, 0).unwrap();
        ch.read(&[iov(&mut buf)], 0, 1, record, 1).unwrap();
        for io in take_held() {
            io.complete(IoStatus::IoError);
        }
        poll_completions();
        assert_eq!(done().len(), 2);
        let (g, min_range, buckets) = get_histogram("io_hist").unwrap();
        assert_eq!((g, min_range), (4, 0));
        assert_eq!(
            buckets.iter().sum::<u64>(),
            1,
            "the read only, failed or not"
        );
        // Bad options are refused and change nothing.
        for bad in [
            json!({"name": "io_hist", "enable": true, "opc": "compare"}),
            json!({"name": "io_hist", "enable": true, "opc": "bogus"}),
            json!({"name": "io_hist", "enable": true, "min_nsec": 10, "max_nsec": 10}),
            json!({"name": "io_hist", "enable": true, "granularity": 200}),
        ] {
            let e = enable_histogram(bad.clone()).unwrap_err();
            assert_eq!(e.code, -libc::EINVAL, "{bad}: {e}");
        }
        assert_eq!(
            enable_histogram(json!({"name": "nope", "enable": true}))
                .unwrap_err()
                .code,
            -libc::ENODEV
        );
        assert_eq!(
            enable_histogram(json!({"name": "io_hist"}))
                .unwrap_err()
                .code,
            -32602
        );
        assert_eq!(get_histogram("io_hist").unwrap().2.iter().sum::<u64>(), 1);
        // Disabled: gone, and out of save_config.
        enable_histogram(json!({"name": "io_hist", "enable": false})).unwrap();
        assert_eq!(get_histogram("io_hist").unwrap_err().code, -libc::EFAULT);
        assert!(!crate::rpc::save_config()
            .iter()
            .any(|c| c["method"] == "bdev_enable_histogram" && c["params"]["name"] == "io_hist"));
        drop(ch);
        drop(desc);
        block_on(unregister("io_hist")).unwrap();
    }

    #[test]
    fn bad_submissions_are_refused_without_callback() {
        modules::null::create("io_bad", 100, 512, None).unwrap();
        let desc = open("io_bad", true, |_| {}).unwrap();
        let ch = desc.get_io_channel().unwrap();
        let mut buf = vec![0u8; 4096];
        let one = [iov(&mut buf)];
        use SubmitError::*;
        assert_eq!(ch.read(&one, 100, 1, record, 0), Err(OutOfRange));
        assert_eq!(ch.read(&one, 99, 2, record, 0), Err(OutOfRange));
        assert_eq!(ch.read(&one, 0, 0, record, 0), Err(OutOfRange));
        assert_eq!(ch.read(&one, u64::MAX, 2, record, 0), Err(OutOfRange));
        assert_eq!(ch.unmap(1, u64::MAX, record, 0), Err(OutOfRange));
        assert_eq!(
            ch.read(&one, 0, 9, record, 0),
            Err(BadIovecs),
            "iovecs shorter than the blocks"
        );
        assert_eq!(ch.write(&[], 0, 1, record, 0), Err(BadIovecs));
        let many = [one[0]; MAX_IOVS + 1];
        assert_eq!(ch.read(&many, 0, 1, record, 0), Err(BadIovecs));
        assert_eq!(ch.read(&one, 99, 1, record, 0), Ok(()));
        poll_completions();
        assert_eq!(done(), vec![(0, IoStatus::Success)]);
        // a read-only descriptor cannot write
        let ro = open("io_bad", false, |_| {}).unwrap();
        let rch = ro.get_io_channel().unwrap();
        assert_eq!(rch.write(&one, 0, 1, record, 0), Err(Unsupported));
        assert_eq!(rch.unmap(0, 1, record, 0), Err(Unsupported));
        assert_eq!(rch.read(&one, 0, 1, record, 0), Ok(()));
        assert!(
            Rc::ptr_eq(&rch.state, &ch.state),
            "one channel state per core and bdev"
        );
        poll_completions();
        done();
        drop((rch, ro, ch, desc));
        block_on(unregister("io_bad")).unwrap();
    }

    #[test]
    fn resize_moves_the_range_check_of_existing_channels() {
        modules::null::create("io_resize", 100, 512, None).unwrap();
        let events = Arc::new(AtomicUsize::new(0));
        let ev = Arc::clone(&events);
        let desc = open("io_resize", true, move |e| {
            assert_eq!(e, crate::BdevEvent::Resize);
            ev.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let ch = desc.get_io_channel().unwrap();
        let mut buf = vec![0u8; 512];
        let one = [iov(&mut buf)];
        assert_eq!(
            ch.read(&one, 100, 1, record, 0),
            Err(SubmitError::OutOfRange)
        );
        desc.bdev().resize(150).unwrap();
        assert_eq!(events.load(Ordering::SeqCst), 1);
        assert_eq!(ch.read(&one, 149, 1, record, 1), Ok(()), "last new block");
        assert_eq!(ch.write_zeroes(100, 50, record, 2), Ok(()));
        assert_eq!(
            ch.read(&one, 150, 1, record, 0),
            Err(SubmitError::OutOfRange)
        );
        desc.bdev().resize(10).unwrap();
        assert_eq!(events.load(Ordering::SeqCst), 2);
        assert_eq!(ch.read(&one, 9, 1, record, 3), Ok(()), "last block left");
        assert_eq!(
            ch.read(&one, 10, 1, record, 0),
            Err(SubmitError::OutOfRange)
        );
        assert_eq!(ch.unmap(5, 6, record, 0), Err(SubmitError::OutOfRange));
        poll_completions();
        assert_eq!(
            done(),
            vec![
                (1, IoStatus::Success),
                (2, IoStatus::Success),
                (3, IoStatus::Success)
            ]
        );
        drop((ch, desc));
        block_on(unregister("io_resize")).unwrap();
    }

    #[test]
    fn unsupported_types_and_removed_bdev() {
        let mut b = HoldBackend::new();
        b.supported = vec![IoType::Read];
        register(info("io_unsup", 512, 8), Arc::new(b)).unwrap();
        let desc = open("io_unsup", true, |_| {}).unwrap();
        let ch = desc.get_io_channel().unwrap();
        assert_eq!(ch.unmap(0, 1, record, 0), Err(SubmitError::Unsupported));
        assert_eq!(ch.flush(record, 0), Err(SubmitError::Unsupported));
        assert_eq!(ch.reset(record, 0), Err(SubmitError::Unsupported));
        let mut fut = Box::pin(unregister("io_unsup"));
        assert!(crate::testutil::poll_once(&mut fut).is_pending());
        let mut buf = [0u8; 512];
        assert_eq!(
            ch.read(&[iov(&mut buf)], 0, 1, record, 0),
            Err(SubmitError::Removed)
        );
        drop(ch);
        assert!(
            crate::testutil::poll_once(&mut fut).is_pending(),
            "descriptor still open"
        );
        drop(desc);
        assert!(crate::testutil::poll_once(&mut fut).is_ready());
    }

    thread_local! {
        /// The channel `wait_cb` resubmits to (entries whose ctx is odd resubmit a flush).
        static WAIT_CH: RefCell<Option<Rc<IoChannel>>> = const { RefCell::new(None) };
    }

    fn wait_cb(ctx: usize) {
        record(ctx, IoStatus::Success);
        if ctx % 2 == 1 {
            WAIT_CH.with(|c| {
                c.borrow()
                    .as_ref()
                    .unwrap()
                    .flush(record, 1000 + ctx)
                    .unwrap()
            });
        }
    }

    #[test]
    fn wait_entries_are_called_in_fifo_order_while_descriptors_are_free() {
        let (desc, _) = hold_bdev("io_wait_entry");
        let ch = Rc::new(desc.get_io_channel().unwrap());
        WAIT_CH.with(|c| *c.borrow_mut() = Some(Rc::clone(&ch)));
        let early = Box::pin(IoWaitEntry::new(wait_cb, 0));
        assert!(
            !ch.queue_io_wait(early.as_ref()),
            "descriptors free: not queued"
        );
        assert!(!early.is_queued());
        for i in 0..CHANNEL_DESCRIPTORS {
            ch.flush(record, i).unwrap();
        }
        // 1 and 3 take the freed descriptor again; 2 and 4 only note they ran.
        let e: Vec<_> = (1..=4)
            .map(|i| Box::pin(IoWaitEntry::new(wait_cb, i)))
            .collect();
        let dropped = Box::pin(IoWaitEntry::new(wait_cb, 99));
        let cancelled = Box::pin(IoWaitEntry::new(wait_cb, 98));
        assert!(ch.queue_io_wait(e[0].as_ref()));
        assert!(ch.queue_io_wait(dropped.as_ref()));
        assert!(ch.queue_io_wait(cancelled.as_ref()));
        for x in &e[1..] {
            assert!(ch.queue_io_wait(x.as_ref()));
        }
        drop(dropped);
        assert!(cancelled.as_ref().cancel());
        let mut held = take_held();
        held.pop().unwrap().complete(IoStatus::Success);
        poll_completions();
        assert_eq!(
            done().iter().map(|&(c, _)| c).collect::<Vec<_>>(),
            vec![CHANNEL_DESCRIPTORS - 1, 1],
            "the completion, then entry 1, which took the descriptor: 2..4 wait"
        );
        assert!(e[1].is_queued() && e[2].is_queued() && e[3].is_queued());
        assert!(!e[0].is_queued());
        // two descriptors free: 2 (no resubmit) and 3 (takes one), then 4 runs too
        held.extend(take_held());
        held.pop().unwrap().complete(IoStatus::Success);
        held.pop().unwrap().complete(IoStatus::Success);
        poll_completions();
        let calls: Vec<usize> = done().iter().map(|&(c, _)| c).filter(|&c| c < 10).collect();
        assert_eq!(calls, vec![2, 3, 4], "FIFO, each once");
        assert!(e.iter().all(|x| !x.is_queued()));
        held.extend(take_held());
        for io in held {
            io.complete(IoStatus::Success);
        }
        poll_completions();
        done();
        WAIT_CH.with(|c| c.borrow_mut().take());
        drop((ch, desc));
        block_on(unregister("io_wait_entry")).unwrap();
    }

    #[derive(Debug, PartialEq)]
    struct TestCtx {
        count: u32,
        status: IoStatus,
        link: Option<NonNull<u8>>,
    }

    // SAFETY: zero is a valid `TestCtx` (0, `Success`, `None`).
    unsafe impl IoCtx for TestCtx {}

    const ZERO_CTX: TestCtx = TestCtx {
        count: 0,
        status: IoStatus::Success,
        link: None,
    };

    #[test]
    fn typed_ctx_is_zeroed_at_submission_and_kept_across_raw_round_trips() {
        let (desc, _) = hold_bdev("io_ctx");
        let ch = desc.get_io_channel().unwrap();
        ch.flush(record, 1).unwrap();
        let mut io = take_held().pop().unwrap();
        assert_eq!(*io.ctx::<TestCtx>(), ZERO_CTX);
        io.ctx::<TestCtx>().count = 7;
        io.ctx::<TestCtx>().status = IoStatus::NoSpace;
        // SAFETY: `raw` came from into_raw on this thread and is used once.
        let mut io = unsafe { IoRef::from_raw(io.into_raw()) };
        assert_eq!(
            (io.ctx::<TestCtx>().count, io.ctx::<TestCtx>().status),
            (7, IoStatus::NoSpace)
        );
        io.complete(IoStatus::Success);
        poll_completions();
        // the same descriptor (LIFO free list) comes back zeroed, free for another type
        ch.flush(record, 2).unwrap();
        let mut io = take_held().pop().unwrap();
        assert_eq!(io.ctx::<[u64; 8]>(), &[0; 8]);
        io.complete(IoStatus::Success);
        ch.flush(record, 3).unwrap();
        let mut io = take_held().pop().unwrap();
        assert_eq!(*io.ctx::<TestCtx>(), ZERO_CTX);
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            io.ctx::<[u64; 8]>()[0] = 1;
        }));
        assert!(r.is_err(), "a second type for the same I/O panics");
        io.complete(IoStatus::Success);
        poll_completions();
        assert_eq!(done().len(), 3);
        drop((ch, desc));
        block_on(unregister("io_ctx")).unwrap();
    }

    #[test]
    fn channel_outlives_its_last_handle_while_io_is_in_flight() {
        let (desc, _) = hold_bdev("io_drop");
        let ch = desc.get_io_channel().unwrap();
        ch.flush(record, 1).unwrap();
        let weak = Rc::downgrade(&ch.state);
        drop(ch);
        assert!(weak.upgrade().is_some(), "kept by the in-flight I/O");
        let mut fut = Box::pin(unregister("io_drop"));
        drop(desc);
        assert!(
            crate::testutil::poll_once(&mut fut).is_pending(),
            "waits for the channel"
        );
        take_held().pop().unwrap().complete(IoStatus::Success);
        poll_completions();
        assert_eq!(done(), vec![(1, IoStatus::Success)]);
        assert!(weak.upgrade().is_none(), "freed after the last completion");
        assert!(crate::testutil::poll_once(&mut fut).is_ready());
    }

    #[test]
    fn revived_channel_is_the_same_state() {
        let (desc, _) = hold_bdev("io_revive");
        let ch = desc.get_io_channel().unwrap();
        ch.flush(record, 1).unwrap();
        let p = Rc::as_ptr(&ch.state);
        drop(ch);
        let ch = desc.get_io_channel().unwrap();
        assert_eq!(Rc::as_ptr(&ch.state), p);
        take_held().pop().unwrap().complete(IoStatus::Success);
        poll_completions();
        assert_eq!(done().len(), 1);
        assert_eq!(Rc::strong_count(&ch.state), 1, "parked reference released");
        drop((ch, desc));
        block_on(unregister("io_revive")).unwrap();
    }

    struct Loop {
        ch: IoChannel,
        left: Cell<u32>,
        completed: Cell<u32>,
        buf: UnsafeCell<[u8; 512]>,
    }

    fn loop_cb(ctx: usize, status: IoStatus) {
        // SAFETY: ctx is the address of a `Loop` the test keeps alive until the loop ends.
        let l = unsafe { &*(ctx as *const Loop) };
        assert_eq!(status, IoStatus::Success);
        l.completed.set(l.completed.get() + 1);
        if l.left.get() > 0 {
            l.left.set(l.left.get() - 1);
            // SAFETY: one I/O at a time uses the buffer.
            let v = unsafe { IoVec::from_raw_parts(l.buf.get().cast(), 512) };
            l.ch.read(&[v], 0, 1, loop_cb, ctx).unwrap();
        }
    }

    #[test]
    fn callbacks_may_resubmit() {
        modules::null::create("io_loop", 8, 512, None).unwrap();
        let desc = open("io_loop", false, |_| {}).unwrap();
        let l = Loop {
            ch: desc.get_io_channel().unwrap(),
            left: Cell::new(100),
            completed: Cell::new(0),
            buf: UnsafeCell::new([0; 512]),
        };
        loop_cb(&l as *const Loop as usize, IoStatus::Success);
        let mut rounds = 0;
        while poll_completions() == PollStatus::Busy {
            rounds += 1;
        }
        assert_eq!(l.completed.get(), 101);
        assert_eq!(rounds, 100, "one completion per poller run: no recursion");
        drop(l);
        drop(desc);
        block_on(unregister("io_loop")).unwrap();
    }

    #[test]
    fn qos_holds_io_until_refill_and_reset_aborts_held_io() {
        let (desc, submitted) = hold_bdev("io_qos");
        let ch = desc.get_io_channel().unwrap();
        let limits = qos::QosLimits {
            rw_ios_per_sec: 10_000,
            ..Default::default()
        };
        qos::set_limits(desc.bdev(), limits); // no runtime: one core, 10 I/Os per timeslice
        let mut buf = vec![0u8; 512];
        let v = [iov(&mut buf)];
        for i in 0..35 {
            ch.read(&v, 0, 1, record, i).unwrap();
        }
        ch.flush(record, 100).unwrap();
        assert_eq!(
            submitted.load(Ordering::Relaxed),
            11,
            "10 reads admitted, flush not limited"
        );
        let st = crate::percore::channel(desc.bdev().id()).unwrap();
        st.qos_refill();
        assert_eq!(submitted.load(Ordering::Relaxed), 21);
        st.qos_refill();
        assert_eq!(submitted.load(Ordering::Relaxed), 31);
        // reset aborts the 5 still held, then reaches the module
        ch.reset(record, 200).unwrap();
        assert_eq!(submitted.load(Ordering::Relaxed), 32);
        poll_completions();
        let d = done();
        assert_eq!(d.len(), 5);
        assert!(d
            .iter()
            .all(|&(ctx, s)| s == IoStatus::Aborted && (30..35).contains(&ctx)));
        for io in take_held() {
            io.complete(IoStatus::Success);
        }
        // lifting the limits submits held I/O at once
        st.qos_refill();
        for i in 0..20 {
            ch.read(&v, 0, 1, record, i).unwrap();
        }
        assert_eq!(submitted.load(Ordering::Relaxed), 32 + 10);
        qos::set_limits(desc.bdev(), qos::QosLimits::default());
        assert_eq!(submitted.load(Ordering::Relaxed), 32 + 20);
        for io in take_held() {
            io.complete(IoStatus::Success);
        }
        poll_completions();
        assert_eq!(
            done().len(),
            35 + 1 + 1 + 20 - 5,
            "every I/O but the 5 aborted ones, seen above"
        );
        drop((st, ch, desc));
        block_on(unregister("io_qos")).unwrap();
    }

    #[test]
    fn module_view_and_raw_round_trip() {
        let (desc, _) = hold_bdev("io_ref");
        let ch = desc.get_io_channel().unwrap();
        let mut buf = vec![0u8; 4096];
        let (a, b) = buf.split_at_mut(100);
        ch.write(&[iov(a), IoVec::EMPTY, iov(b)], 3, 2, record, 5)
            .unwrap();
        let mut io = take_held().pop().unwrap();
        assert_eq!(
            (
                io.io_type(),
                io.offset_blocks(),
                io.num_blocks(),
                io.block_size()
            ),
            (IoType::Write, 3, 2, 512)
        );
        let lens: Vec<usize> = io.iovs().iter().map(|v| v.len).collect();
        assert_eq!(
            lens,
            vec![100, 924],
            "empty iovec dropped, last one trimmed"
        );
        assert_eq!(io.ctx::<[u64; 8]>(), &[0; 8]);
        io.ctx::<[u64; 8]>()[0] = 42;
        let raw = io.into_raw();
        // SAFETY: `raw` came from into_raw on this thread and is used once.
        let mut io = unsafe { IoRef::from_raw(raw) };
        assert_eq!(io.ctx::<[u64; 8]>()[0], 42);
        drop(io); // a module bug: completes as an error rather than leaking the descriptor
        poll_completions();
        assert_eq!(done(), vec![(5, IoStatus::IoError)]);
        let s = block_on(desc.bdev().io_stats());
        assert_eq!(s.num_io_errors, 1);
        drop((ch, desc));
        block_on(unregister("io_ref")).unwrap();
    }

    thread_local! {
        /// Callback order seen by the stacking tests: (is_child, offset or ctx).
        static ORDER: RefCell<Vec<(bool, u64)>> = const { RefCell::new(Vec::new()) };
        /// The channel `resubmit_cb` submits to.
        static TOP: RefCell<Option<IoChannel>> = const { RefCell::new(None) };
    }

    /// A passthrough bdev: every I/O goes to `base` as a child through `stack::forward`, and
    /// the child's callback completes the parent.
    struct PassBackend {
        base: std::sync::Mutex<Option<BdevDesc>>,
    }

    struct PassChannel {
        base: IoChannel,
    }

    impl BackendChannel for PassChannel {
        fn submit(&mut self, io: IoRef) {
            assert!(SUBMIT_DEPTH.with(Cell::get) >= 1, "inside a submit");
            if let Err((io, e)) = crate::modules::stack::forward(&self.base, io, pass_done) {
                io.complete(crate::modules::stack::submit_error_status(e));
            }
        }
    }

    fn pass_done(ctx: usize, status: IoStatus) {
        // SAFETY: `ctx` is the parent's into_raw, given to the base by `forward`.
        let io = unsafe { IoRef::from_raw(ctx) };
        let me = (true, io.offset_blocks());
        ORDER.with(|o| o.borrow_mut().push(me));
        io.complete(status);
        assert_eq!(
            ORDER.with(|o| o.borrow().last().copied()),
            Some(me),
            "the parent's callback does not run inside complete"
        );
    }

    impl crate::BdevBackend for PassBackend {
        fn product_name(&self) -> &'static str {
            "Pass disk"
        }
        fn io_type_supported(&self, _io_type: IoType) -> bool {
            true
        }
        fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
            let base = crate::modules::stack::base_channel(&self.base, "base")?;
            Ok(Box::new(PassChannel { base }))
        }
        fn config_call(&self, _info: &crate::BdevInfo) -> Option<crate::ConfigCall> {
            None
        }
        fn destruct(&self) {
            self.base.lock().unwrap().take();
        }
    }

    fn ordered(ctx: usize, status: IoStatus) {
        ORDER.with(|o| o.borrow_mut().push((false, ctx as u64)));
        record(ctx, status);
    }

    /// Stack a passthrough bdev `top` on `base` (which must exist).
    fn stack_on(base: &str, top: &str) -> BdevDesc {
        let base_desc = open(base, true, |_| {}).unwrap();
        let b = desc_info(&base_desc);
        register(
            info(top, b.0, b.1),
            Arc::new(PassBackend {
                base: std::sync::Mutex::new(Some(base_desc)),
            }),
        )
        .unwrap();
        open(top, true, |_| {}).unwrap()
    }

    fn desc_info(d: &BdevDesc) -> (u32, u64) {
        (d.bdev().info().block_size, d.bdev().num_blocks())
    }

    #[test]
    fn stacked_parent_completes_after_its_child_in_the_same_run_never_inside_submit() {
        modules::null::create("io_st_base", 64, 512, None).unwrap();
        let top = stack_on("io_st_base", "io_st_top");
        let base = open("io_st_base", false, |_| {}).unwrap();
        let ch = top.get_io_channel().unwrap();
        let bch = base.get_io_channel().unwrap();
        let mut buf = vec![0u8; 512];
        let v = [iov(&mut buf)];
        // the null base completes inside its submit, itself inside the top's submit
        ch.read(&v, 1, 1, ordered, 1).unwrap();
        ch.read(&v, 2, 1, ordered, 2).unwrap();
        bch.read(&v, 3, 1, ordered, 3).unwrap();
        assert_eq!(SUBMIT_DEPTH.with(Cell::get), 0);
        assert!(done().is_empty(), "no callback inside submit");
        assert!(ORDER.with(|o| o.borrow().is_empty()));
        assert_eq!(poll_completions(), PollStatus::Busy);
        assert_eq!(
            ORDER.with(|o| std::mem::take(&mut *o.borrow_mut())),
            vec![(true, 1), (false, 1), (true, 2), (false, 2), (false, 3)],
            "each parent right after its child, in submission order"
        );
        assert_eq!(
            poll_completions(),
            PollStatus::Idle,
            "parents finished in the same run"
        );
        assert!(!IN_CALLBACK.with(Cell::get));
        assert_eq!(done().len(), 3);
        // both layers count their I/O
        let ts = block_on(top.bdev().io_stats());
        let bs = block_on(base.bdev().io_stats());
        assert_eq!((ts.num_read_ops, ts.bytes_read), (2, 1024));
        assert_eq!((bs.num_read_ops, bs.bytes_read), (3, 1536));
        drop((ch, bch, base, top));
        block_on(unregister("io_st_top")).unwrap();
        block_on(unregister("io_st_base")).unwrap();
    }

    fn resubmit_cb(ctx: usize, status: IoStatus) {
        record(ctx, status);
        if ctx < 3 {
            let before = DONE.with(|d| d.borrow().len());
            let mut b = [0u8; 512];
            TOP.with(|t| {
                let t = t.borrow();
                let ch = t.as_ref().unwrap();
                // null bdevs never touch the buffer
                ch.read(&[iov(&mut b)], 0, 1, resubmit_cb, ctx + 1).unwrap();
            });
            assert_eq!(
                DONE.with(|d| d.borrow().len()),
                before,
                "the resubmitted I/O did not complete inside this callback"
            );
        }
    }

    #[test]
    fn resubmission_from_a_stacked_callback_waits_for_the_next_run() {
        modules::null::create("io_rs_base", 64, 512, None).unwrap();
        let mid = stack_on("io_rs_base", "io_rs_mid");
        let top = stack_on("io_rs_mid", "io_rs_top");
        TOP.with(|t| *t.borrow_mut() = Some(top.get_io_channel().unwrap()));
        resubmit_cb(0, IoStatus::Success);
        done();
        let mut runs = 0;
        while poll_completions() == PollStatus::Busy {
            runs += 1;
            assert_eq!(done().len(), 1, "one I/O (three levels) per run");
        }
        assert_eq!(runs, 3);
        let s = block_on(top.bdev().io_stats());
        assert_eq!(s.num_read_ops, 3);
        TOP.with(|t| t.borrow_mut().take());
        ORDER.with(|o| o.borrow_mut().clear());
        drop((mid, top));
        block_on(unregister("io_rs_top")).unwrap();
        block_on(unregister("io_rs_mid")).unwrap();
        block_on(unregister("io_rs_base")).unwrap();
    }

    #[test]
    fn stacked_child_completed_outside_callbacks_chains_its_parent() {
        let (base, _) = hold_bdev("io_sh_base");
        drop(base);
        let top = stack_on("io_sh_base", "io_sh_top");
        let ch = top.get_io_channel().unwrap();
        ch.flush(ordered, 7).unwrap();
        let child = take_held().pop().unwrap();
        child.complete(IoStatus::IoError); // as a module poller would
        assert!(done().is_empty());
        assert_eq!(poll_completions(), PollStatus::Busy);
        assert_eq!(done(), vec![(7, IoStatus::IoError)]);
        assert_eq!(poll_completions(), PollStatus::Idle);
        ORDER.with(|o| o.borrow_mut().clear());
        drop((ch, top));
        block_on(unregister("io_sh_top")).unwrap();
        block_on(unregister("io_sh_base")).unwrap();
    }
}
