//! HOT PATH: a raid bdev's per-core channel — member channels, the host I/O bookkeeping, the
//! pre-allocated stripe operations (raid5 and raid1 writes, degraded reads, rebuild) and the
//! generic driver that runs them phase by phase.
//!
//! A stripe operation ([`StripeOp`]) covers one stripe (raid5) or one region (raid1). Its
//! level-specific code (found through the level table, [`crate::level::LevelModule`]: for
//! raid5 [`crate::raid5::write`], [`crate::raid5::read`], for raid1 [`crate::raid1`], and the
//! rebuild plans in [`crate::rebuild`]) plans it — which member reads, which member writes,
//! which pool buffers — and computes parity once the reads are in; this file takes the stripe
//! token when the plan needs it, issues the member I/Os (reads; then the writes from the host's
//! buffers, the compute step, the writes from computed buffers), retries what found no
//! descriptor or buffer, replans after a member failure, and finishes.
//!
//! Nothing here allocates in steady state: the operations live in a slab made with the channel,
//! the queues are intrusive or pre-sized, and member I/O contexts are the operation's address
//! with the member slot in its low bits (operations are 64-byte aligned).
//!
//! Lifetimes: the bdev layer drops a channel only after every I/O submitted on it has finished
//! (completions are deferred to the reactor loop), so a raw pointer to the channel's [`Chan`]
//! stored in an I/O or an operation stays valid while that I/O is in flight.

use crate::array::{RaidArray, MAX_MEMBERS};
use crate::level::{LevelModule, OpFns, NO_OP_FNS};
use crate::stripe_lock::{core_bit, StripeLocks};
use keel_bdev::modules::stack::IoQueue;
use keel_bdev::IoWaitEntry;
use keel_bdev::{
    BackendChannel, IoChannel, IoCtx, IoRef, IoStatus, IoType, IoVec, IovCursor, SubmitError,
    MAX_IOVS,
};
use keel_reactor::pool::DmaBuf;
use keel_reactor::PollStatus;
use std::cell::{Cell, RefCell, UnsafeCell};
use std::collections::VecDeque;
use std::num::NonZeroUsize;
use std::pin::Pin;
use std::rc::{Rc, Weak};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Stripe operations per channel.
pub const OPS_PER_CHANNEL: usize = 128;

/// How a raid5 host read goes ([`HostCtx::read_path`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub(crate) enum ReadPath {
    /// Pieces go straight to their members (zero: the state of a fresh context).
    Direct = 0,
    /// The rest of the read goes through stripe operations.
    ViaOps = 1,
    /// A direct piece failed: once every piece is in, the whole read goes again through
    /// stripe operations (see [`child_done`]).
    Retry = 2,
}

/// A host I/O's raid context, in its descriptor ([`IoRef::ctx`]): all zeroes at submission.
pub(crate) struct HostCtx {
    /// Children/operations outstanding (+1 while dispatching).
    pub pending: u64,
    /// Blocks already dispatched (resumes after waiting for an op or a descriptor).
    pub next: u64,
    /// The channel the I/O was submitted on.
    pub chan: *const Chan,
    /// raid1 reads: members tried (bit mask by slot).
    pub tried: u64,
    /// raid1 reads: the member read now.
    pub member: u32,
    /// The worst status so far.
    pub status: IoStatus,
    /// raid5 reads: direct, through operations, or to be retried through operations.
    pub read_path: ReadPath,
}

// SAFETY: every field is valid as all zeroes (integers, a null raw pointer, `IoStatus::Success`
// and `ReadPath::Direct` are 0), and none needs dropping.
unsafe impl IoCtx for HostCtx {}

/// The raid context of host I/O `io`.
#[inline]
pub(crate) fn hctx(io: &mut IoRef) -> &mut HostCtx {
    io.ctx::<HostCtx>()
}

// Raid1 reads keep the members tried in a bit mask ([`HostCtx::tried`]).
const _: () = assert!(MAX_MEMBERS <= u64::BITS as usize);

/// What a stripe operation does (the level's code for it is in its [`LevelModule::op_fns`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpKind {
    /// Write (or unmap, or write-zeroes) of part of one stripe (raid5) or region (raid1).
    Write,
    /// raid5 read of part of one stripe that cannot go straight to its members (a member
    /// not active: read through parity, or after a member failed a read).
    Read,
    /// Rebuild one stripe/region of a member.
    Rebuild,
    /// Resync one stripe's parity (raid5) or one region of a mirror (raid1) from the data
    /// (after an unclean shutdown): planned like a rebuild of `target`, no watermark.
    Resync,
}

/// Where the operation is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Phase {
    /// Needs its stripe token.
    Token,
    /// To be planned (or replanned after a member failure).
    Plan,
    /// Member reads in flight.
    Read,
    /// Member writes in flight.
    Write,
}

/// Where a member I/O's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Src {
    /// In the host's iovecs, from this byte offset (DMA-direct).
    Host(usize),
    /// In the operation's buffer for member `slot` (or [`PBUF`]), from this byte offset.
    Buf(usize, usize),
    /// None: the member unmaps the blocks.
    Unmap,
    /// None: the member writes zeroes.
    Zeroes,
}

impl Src {
    /// The source for the data of a host I/O of type `no_data` (see [`StripeOp::no_data`]) at
    /// byte `off` of its iovecs: the iovecs for a write, else the member does the same.
    #[inline]
    pub fn host(no_data: Option<IoType>, off: usize) -> Src {
        match no_data {
            None => Src::Host(off),
            Some(IoType::Unmap) => Src::Unmap,
            Some(_) => Src::Zeroes,
        }
    }
}

/// `Src::Buf` index of the operation's parity/output buffer.
pub(crate) const PBUF: usize = MAX_MEMBERS;

/// One member I/O of a phase.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Child {
    /// Member slot.
    pub member: u32,
    /// First block, relative to the member's data area.
    pub lba: u64,
    /// Blocks.
    pub blocks: u64,
    /// Data.
    pub src: Src,
}

impl Child {
    const EMPTY: Child = Child {
        member: 0,
        lba: 0,
        blocks: 0,
        src: Src::Host(0),
    };
}

/// Most member I/Os in one phase.
pub(crate) const MAX_CHILDREN: usize = 2 * MAX_MEMBERS;

/// How a raid5 write (or read) was planned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Plan {
    /// Nothing planned yet.
    None,
    /// Read old data and parity, parity ^= old ^ new.
    Rmw,
    /// Read the untouched data, parity = XOR of all data.
    Rcw,
    /// A data member is gone and partly written: rebuild its old rows from parity, then Rcw.
    ReconRcw,
    /// The parity member is gone: write data only.
    DataOnly,
    /// Reads straight into the host's buffers.
    DirectRead,
    /// Reads with one piece rebuilt from parity.
    ReconRead,
    /// Unmap or write-zeroes of whole stripes: every member, parity included, unmaps or zeroes
    /// (zero parity is the parity of zero data); nothing read, nothing computed.
    NoData,
}

/// Bits of a member I/O context that carry the member slot (the rest is the operation's
/// address, [`StripeOp`] being aligned to `1 << MEMBER_BITS`).
const MEMBER_BITS: u32 = 6;
/// Mask of the member slot in a member I/O context.
const MEMBER_MASK: usize = (1 << MEMBER_BITS) - 1;

// The member slot fits the low bits that the operation's alignment leaves free.
const _: () = assert!(std::mem::align_of::<StripeOp>() == 1 << MEMBER_BITS);
const _: () = assert!(MAX_MEMBERS <= 1 << MEMBER_BITS);

/// The member I/O context of member `member` of operation `p`.
#[inline]
fn member_ctx(p: *const StripeOp, member: u32) -> usize {
    assert!((member as usize) < MAX_MEMBERS);
    let addr = p as usize;
    debug_assert_eq!(addr & MEMBER_MASK, 0);
    addr | member as usize
}

/// A host I/O parked in raw form ([`IoRef::into_raw`]) while its children are out: what the
/// host-I/O helpers ([`child_done`], [`crate::dispatch::with_io`], ...) take instead of a bare
/// `usize`, so that crate code cannot hand them an arbitrary integer.
///
/// It is made only by [`HostRaw::park`] (from an owned [`IoRef`]) or, in a member-I/O
/// callback, by the `unsafe` [`HostRaw::from_ctx`] from the context that went into the member
/// submission ([`HostRaw::ctx`]). It is `Copy` like the integer it replaces: the type says
/// where the value came from; that the I/O is still in flight when a copy is used is the
/// `HostCtx::pending` protocol (every child and the dispatch bias count, [`child_done`]
/// completes it exactly once). A non-zero newtype: same size and code as the `usize`, and
/// `Option<HostRaw>` is one word.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(transparent)]
pub(crate) struct HostRaw(NonZeroUsize);

impl HostRaw {
    /// Park an owned host I/O (it stays in flight, owned by its `HostCtx::pending` count).
    #[inline]
    pub fn park(io: IoRef) -> HostRaw {
        HostRaw(NonZeroUsize::new(io.into_raw()).expect("IoRef::into_raw is a descriptor address"))
    }

    /// The host I/O a member-I/O callback got back as its context.
    ///
    /// # Safety
    /// `ctx` is [`HostRaw::ctx`] of a host I/O of this core that is still in flight (the
    /// member I/O that carried it is one of its counted children, not yet counted down).
    #[inline]
    pub unsafe fn from_ctx(ctx: usize) -> HostRaw {
        HostRaw(NonZeroUsize::new(ctx).expect("a host I/O context is a descriptor address"))
    }

    /// The context to give a member I/O submission whose callback calls
    /// [`HostRaw::from_ctx`].
    #[inline]
    pub fn ctx(self) -> usize {
        self.0.get()
    }

    /// Take the host I/O back as an [`IoRef`] (to queue or complete it).
    ///
    /// # Safety
    /// The host I/O is in flight, and no copy of `self` is used after this (the `IoRef` owns
    /// it now).
    #[inline]
    pub unsafe fn unpark(self) -> IoRef {
        // SAFETY: `self.0` is `IoRef::into_raw` of an in-flight host I/O of this core (only
        // `park` and `from_ctx` make one), used once per the contract above.
        unsafe { IoRef::from_raw(self.0.get()) }
    }
}

// The newtype costs nothing: `Option<HostRaw>` (in every `StripeOp`) is one word, like the
// `usize` with 0 for none it replaces.
const _: () = assert!(std::mem::size_of::<Option<HostRaw>>() == std::mem::size_of::<usize>());

/// The host I/O of an operation (or none, for an internal operation). Not `Clone`: the
/// operation holds it until it finishes.
pub(crate) struct HostIo(Option<HostRaw>);

impl HostIo {
    /// No host I/O (an internal operation).
    pub const NONE: HostIo = HostIo(None);

    /// Hold host I/O `raw`.
    ///
    /// # Safety
    /// `raw` stays in flight (its descriptor, its iovec array and its buffers alive and
    /// unchanged) as long as this `HostIo` holds it.
    #[inline]
    pub unsafe fn new(raw: HostRaw) -> HostIo {
        HostIo(Some(raw))
    }

    /// Whether there is one.
    #[inline]
    pub fn is_some(&self) -> bool {
        self.0.is_some()
    }

    /// Give it up (the operation is over).
    #[inline]
    pub fn take(&mut self) -> Option<HostRaw> {
        self.0.take()
    }

    /// The host's iovecs (empty for none), borrowed from this handle.
    #[inline]
    pub fn iovs(&self) -> &[IoVec] {
        let Some(raw) = self.0 else {
            return &[];
        };
        // SAFETY: `raw` is an in-flight host I/O as long as `self` holds it (contract of
        // `new`); the slice borrows `self`, so it cannot outlive the hold.
        unsafe { crate::dispatch::host_iovs(raw) }
    }
}

/// An operation's buffers by slot: old data by member slot, then the parity/output buffer at
/// [`PBUF`].
pub(crate) type Bufs = [Option<DmaBuf>; MAX_MEMBERS + 1];

/// Buffer `out` of `bufs` to write, and every other buffer to read ([`Srcs`]): split
/// borrows, so one computation reads several buffers and writes one. Nothing is copied.
pub(crate) fn split_bufs(bufs: &mut Bufs, out: usize) -> (&mut [u8], Srcs<'_>) {
    let (lo, rest) = bufs.split_at_mut(out);
    let (dst, hi) = rest.split_first_mut().expect("`out` is a buffer slot");
    let dst = dst.as_mut().map_or(&mut [][..], DmaBuf::as_mut_slice);
    (dst, Srcs { lo, hi })
}

/// The buffers of an operation other than the one being written ([`split_bufs`]), by slot:
/// `srcs[i]` is buffer `i`'s bytes (empty for the written slot and for slots without one).
pub(crate) struct Srcs<'a> {
    lo: &'a [Option<DmaBuf>],
    hi: &'a [Option<DmaBuf>],
}

impl std::ops::Index<usize> for Srcs<'_> {
    type Output = [u8];

    #[inline]
    fn index(&self, i: usize) -> &[u8] {
        let out = self.lo.len();
        let b = match i.cmp(&out) {
            std::cmp::Ordering::Less => &self.lo[i],
            std::cmp::Ordering::Equal => return &[],
            std::cmp::Ordering::Greater => &self.hi[i - out - 1],
        };
        b.as_ref().map_or(&[], DmaBuf::as_slice)
    }
}

/// One stripe (raid5) or region (raid1) operation. Aligned to `1 << MEMBER_BITS`: the low
/// bits of its address carry the member slot in member I/O contexts.
#[repr(align(64))]
pub(crate) struct StripeOp {
    /// Its channel (which owns it: valid while the operation is taken).
    chan: *const Chan,
    pub idx: u32,
    /// The host I/O, or none for an internal operation.
    pub host: HostIo,
    /// Internal operations: called when done with `(done_ctx, status)`.
    pub done_cb: Option<fn(usize, IoStatus)>,
    pub done_ctx: usize,
    pub kind: OpKind,
    /// The level's code for `kind` (set when taken).
    fns: &'static OpFns,
    pub phase: Phase,
    pub plan: Plan,
    /// Stripe (raid5) or region (raid1).
    pub unit: u64,
    /// Part of the unit: raid5 data blocks `seg0..seg1` of the stripe; raid1 blocks of the
    /// region.
    pub seg0: u64,
    pub seg1: u64,
    /// Byte offset of `seg0` in the host's iovecs.
    pub host_off: usize,
    /// `Some(Unmap)` or `Some(WriteZeroes)` when the host I/O carries no data: its blocks
    /// become unmapped or zeroes.
    pub no_data: Option<IoType>,
    /// raid5: rows (in-strip blocks) the parity/buffers cover.
    pub p0: u64,
    pub p1: u64,
    /// The member planned around (gone), or `u32::MAX`.
    pub missing: u32,
    /// Rebuild target slot.
    pub target: u32,
    pub holds_token: bool,
    /// Set when a member I/O of the current phase failed.
    pub failed: bool,
    /// The write phase ran the level's compute step (parity, rebuilt data). It runs once the
    /// writes from the host's buffers are out, right before the first write from a buffer:
    /// members write the data while parity is computed.
    pub computed: bool,
    /// Member I/Os of the current phase not yet completed (+1 while issuing).
    pub pending: u32,
    /// Member I/Os of the current phase issued so far.
    pub issued: u32,
    pub reads: [Child; MAX_CHILDREN],
    pub nreads: u32,
    pub writes: [Child; MAX_CHILDREN],
    pub nwrites: u32,
    /// Old-data buffers by member slot, then the parity/output buffer at [`PBUF`]. Only
    /// [`StripeOp::alloc_buf`] fills a slot.
    pub bufs: Bufs,
    /// Bit `i`: `bufs[i]` may hold a buffer (so dropping them visits only those).
    bufs_used: u64,
}

// One bit per buffer slot in `StripeOp::bufs_used`.
const _: () = assert!(MAX_MEMBERS < u64::BITS as usize);

impl StripeOp {
    fn new(chan: *const Chan, idx: u32) -> StripeOp {
        StripeOp {
            chan,
            idx,
            host: HostIo::NONE,
            done_cb: None,
            done_ctx: 0,
            kind: OpKind::Write,
            fns: &NO_OP_FNS,
            phase: Phase::Plan,
            plan: Plan::None,
            unit: 0,
            seg0: 0,
            seg1: 0,
            host_off: 0,
            no_data: None,
            p0: 0,
            p1: 0,
            missing: u32::MAX,
            target: u32::MAX,
            holds_token: false,
            failed: false,
            computed: false,
            pending: 0,
            issued: 0,
            reads: [Child::EMPTY; MAX_CHILDREN],
            nreads: 0,
            writes: [Child::EMPTY; MAX_CHILDREN],
            nwrites: 0,
            bufs: std::array::from_fn(|_| None),
            bufs_used: 0,
        }
    }

    /// The host's iovecs (empty for internal operations).
    #[inline]
    pub fn host_iovs(&self) -> &[IoVec] {
        self.host.iovs()
    }

    /// Drop every buffer (back to the pool).
    pub fn drop_bufs(&mut self) {
        let mut used = std::mem::take(&mut self.bufs_used);
        while used != 0 {
            let i = used.trailing_zeros() as usize;
            used &= used - 1;
            self.bufs[i] = None;
        }
        debug_assert!(self.bufs.iter().all(Option::is_none));
    }

    /// The bytes of buffer `i`.
    pub fn buf(&mut self, i: usize) -> &mut [u8] {
        self.bufs[i].as_mut().map_or(&mut [], |b| b.as_mut_slice())
    }

    /// Take a pool buffer of `len` bytes into slot `i` (false: pool exhausted).
    pub fn alloc_buf(&mut self, i: usize, len: usize) -> bool {
        match keel_reactor::pool::alloc(len) {
            Ok(b) => {
                self.bufs[i] = Some(b);
                self.bufs_used |= 1 << i;
                true
            }
            Err(_) => false,
        }
    }

    /// Move to phase `to`, checking the transition (TIGER_STYLE: a state machine asserts its
    /// edges). A free operation starts in `Plan` ([`Chan::take_op`]) and leaves `Write` only
    /// by finishing.
    #[inline]
    pub fn set_phase(&mut self, to: Phase) {
        use Phase::*;
        let legal = matches!(
            (self.phase, to),
            // Token taken; a plan that needs the token; a plan ready to issue; a read phase
            // that failed (replan, with the token for a raid5 read); reads done.
            (Token, Plan) | (Plan, Token) | (Plan, Read) | (Read, Token | Plan | Write)
        );
        assert!(legal, "stripe op phase {:?} -> {to:?}", self.phase);
        self.phase = to;
    }

    /// Add a member read to the plan.
    pub fn push_read(&mut self, c: Child) {
        assert!((self.nreads as usize) < MAX_CHILDREN);
        assert!((c.member as usize) < MAX_MEMBERS);
        self.reads[self.nreads as usize] = c;
        self.nreads += 1;
    }

    /// Add a member write to the plan.
    pub fn push_write(&mut self, c: Child) {
        assert!((self.nwrites as usize) < MAX_CHILDREN);
        assert!((c.member as usize) < MAX_MEMBERS);
        self.writes[self.nwrites as usize] = c;
        self.nwrites += 1;
    }
}

/// A channel's wait for one member's descriptors: an [`IoWaitEntry`] whose callback marks the
/// channel to retry its waiters.
pub(crate) struct MemberWait {
    entry: IoWaitEntry,
    chan: *const Chan,
}

impl MemberWait {
    fn new(chan: *const Chan) -> MemberWait {
        MemberWait {
            entry: IoWaitEntry::new(MemberWait::freed, 0),
            chan,
        }
    }

    /// The member freed a descriptor (called by its channel with this wait's address).
    fn freed(ctx: usize) {
        // SAFETY: `ctx` is the address of a `MemberWait` in a channel's `desc_waits`, set right
        // before it was queued (`Chan::wait_descriptor`); a queued entry is alive (dropping it
        // unqueues it), and so is the channel that owns it.
        let w = unsafe { &*(ctx as *const MemberWait) };
        // SAFETY: as above: the channel owns the entry and outlives it.
        let chan = unsafe { &*w.chan };
        chan.kick.set(true);
    }

    /// Take the entry off its member channel; whether it was queued.
    fn cancel(&self) -> bool {
        // SAFETY: as in `Chan::wait_descriptor`: the entry never moves.
        unsafe { Pin::new_unchecked(&self.entry) }.cancel()
    }
}

/// The result of planning.
pub(crate) enum PlanResult {
    /// Reads (maybe none) then writes (maybe none) as filled in.
    Ready,
    /// Needs the stripe token first (a read found a member gone).
    NeedToken,
    /// No buffer in the pool right now: retry later.
    NoBuffer,
    /// Cannot be done (array offline): finish with this status.
    Fail(IoStatus),
}

/// One core's state for one array (shared by the bdev channel and, on the rebuild core, the
/// rebuild).
pub(crate) struct Chan {
    pub array: Arc<RaidArray>,
    /// The array's level in the level table.
    pub level: &'static LevelModule,
    /// Member channels by slot (None: no bdev, or removed).
    members: RefCell<Vec<Option<IoChannel>>>,
    epoch: Cell<u64>,
    ops: Box<[UnsafeCell<StripeOp>]>,
    free_ops: RefCell<Vec<u32>>,
    /// Host I/Os waiting for a free operation or a member descriptor (or for the array's
    /// dirty mark, before its first write).
    host_wait: Cell<IoQueue>,
    host_waiting: Cell<usize>,
    /// Operations waiting for their stripe token.
    parked: RefCell<VecDeque<u32>>,
    /// Operations waiting for a member descriptor or a pool buffer.
    stalled: RefCell<VecDeque<u32>>,
    /// A token we may be waiting for was released.
    token_retry: Cell<bool>,
    /// By member slot: the entry queued on the member's channel while something here waits
    /// for one of its descriptors (allocation-free, [`IoChannel::queue_io_wait`]).
    desc_waits: Box<[MemberWait]>,
    /// Something host I/Os and stalled operations may wait for came free (a descriptor, an
    /// operation) or changed (member channels): retry them at the next poll.
    kick: Cell<bool>,
    /// Something waits for what sends no event (a pool buffer, the dirty mark): retry at
    /// every poll while it does.
    blind: Cell<bool>,
    /// raid1 read balancing.
    pub rr: Cell<u32>,
    /// Stripe operations taken so far (a probe: healthy raid5 reads take none).
    ops_taken: Cell<u64>,
    my_bit: u64,
}

thread_local! {
    /// This core's channels, by array id (for wake-ups and member refreshes).
    static REGISTRY: RefCell<Vec<(u64, Weak<Chan>)>> = const { RefCell::new(Vec::new()) };
}

impl Chan {
    /// A channel on the calling core with channels to every present member.
    pub fn new(array: Arc<RaidArray>) -> Rc<Chan> {
        let core = keel_reactor::current_core().unwrap_or(0);
        let chan = Rc::new_cyclic(|w: &Weak<Chan>| {
            let me = w.as_ptr();
            Chan {
                members: RefCell::new(Vec::new()),
                epoch: Cell::new(u64::MAX),
                ops: (0..OPS_PER_CHANNEL)
                    .map(|i| UnsafeCell::new(StripeOp::new(me, i as u32)))
                    .collect(),
                free_ops: RefCell::new((0..OPS_PER_CHANNEL as u32).rev().collect()),
                host_wait: Cell::new(IoQueue::new()),
                host_waiting: Cell::new(0),
                desc_waits: (0..MAX_MEMBERS).map(|_| MemberWait::new(me)).collect(),
                kick: Cell::new(false),
                blind: Cell::new(false),
                parked: RefCell::new(VecDeque::with_capacity(OPS_PER_CHANNEL)),
                stalled: RefCell::new(VecDeque::with_capacity(OPS_PER_CHANNEL)),
                token_retry: Cell::new(false),
                rr: Cell::new(0),
                ops_taken: Cell::new(0),
                my_bit: core_bit(core),
                level: array.level().module(),
                array,
            }
        });
        chan.refresh_members();
        let id = chan.array.id;
        REGISTRY.with(|r| {
            let mut r = r.borrow_mut();
            r.retain(|(_, w)| w.strong_count() > 0);
            r.push((id, Rc::downgrade(&chan)));
        });
        chan
    }

    /// Re-sync member channels with the array when its membership changed.
    #[inline]
    pub fn check_epoch(&self) {
        if self.epoch.get() != self.array.epoch.load(Ordering::Acquire) {
            self.refresh_members();
        }
    }

    /// Take channels to members that have a bdev, drop those of members that lost it.
    pub fn refresh_members(&self) {
        let epoch = self.array.epoch.load(Ordering::Acquire);
        let mut members = self.members.borrow_mut();
        members.resize_with(self.array.members.len(), || None);
        for (slot, m) in self.array.members.iter().enumerate() {
            let desc = crate::array::lock(&m.desc);
            match desc.as_ref() {
                None => members[slot] = None,
                Some(d) => {
                    let same = members[slot]
                        .as_ref()
                        .is_some_and(|c| c.bdev().name() == d.bdev().name());
                    if !same {
                        members[slot] = d.get_io_channel().ok();
                        self.desc_waits[slot].cancel();
                        self.kick.set(true);
                    }
                }
            }
            if members[slot].is_none() {
                // What waited for this member's descriptors retries (and finds it gone).
                if self.desc_waits[slot].cancel() {
                    self.kick.set(true);
                }
            }
        }
        self.epoch.set(epoch);
    }

    /// Something here found no free descriptor on `member`: have its channel tell us when
    /// one is freed ([`Chan::poll_work`] then retries what waits).
    pub fn wait_descriptor(&self, member: u32) {
        let members = self.members.borrow();
        let w = &self.desc_waits[member as usize];
        match members.get(member as usize).and_then(Option::as_ref) {
            Some(ch) if !w.entry.is_queued() => {
                // The wait's final address (the slice is in place now).
                w.entry
                    .set_callback(MemberWait::freed, w as *const MemberWait as usize);
                // SAFETY: `desc_waits` is a boxed slice owned by this channel: the entry never
                // moves, and it is dropped (hence unqueued) only with the channel.
                let entry = unsafe { Pin::new_unchecked(&w.entry) };
                if !ch.queue_io_wait(entry) {
                    self.kick.set(true); // one is free already
                }
            }
            Some(_) => {} // queued already: one event serves every waiter
            None => self.kick.set(true), // gone: the retry finds out
        }
    }

    /// Submit one member I/O. `Err(NoDescriptor)` is retried later; other errors mean the
    /// member cannot take I/O.
    #[inline]
    #[allow(clippy::too_many_arguments)]
    pub fn submit_member(
        &self,
        member: u32,
        io_type: IoType,
        iovs: &[IoVec],
        lba: u64,
        blocks: u64,
        cb: keel_bdev::IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        let members = self.members.borrow();
        let Some(ch) = members.get(member as usize).and_then(Option::as_ref) else {
            return Err(SubmitError::Removed);
        };
        let lba = lba + self.array.data_offset;
        match io_type {
            IoType::Read => ch.read(iovs, lba, blocks, cb, ctx),
            IoType::Write => ch.write(iovs, lba, blocks, cb, ctx),
            IoType::Flush => ch.flush(cb, ctx),
            IoType::Reset => ch.reset(cb, ctx),
            IoType::Unmap => ch.unmap(lba, blocks, cb, ctx),
            IoType::WriteZeroes => ch.write_zeroes(lba, blocks, cb, ctx),
        }
    }

    /// Whether the member has a channel here.
    pub fn has_member(&self, member: u32) -> bool {
        self.members
            .borrow()
            .get(member as usize)
            .is_some_and(Option::is_some)
    }

    #[inline]
    fn op(&self, idx: u32) -> *mut StripeOp {
        self.ops[idx as usize].get()
    }

    /// A free operation, set up for `kind`.
    #[inline]
    pub fn take_op(&self, kind: OpKind) -> Option<*mut StripeOp> {
        let idx = self.free_ops.borrow_mut().pop()?;
        let p = self.op(idx);
        // SAFETY: a free operation is referenced by nobody.
        let op = unsafe { &mut *p };
        // Postconditions of `finish`: a free operation holds nothing.
        assert!(!op.host.is_some() && !op.holds_token && op.idx == idx);
        debug_assert!(op.bufs.iter().all(Option::is_none));
        self.ops_taken.set(self.ops_taken.get() + 1);
        op.done_cb = None;
        op.no_data = None;
        op.kind = kind;
        op.fns = self.level.op_fns(kind);
        op.phase = Phase::Plan;
        op.plan = Plan::None;
        op.missing = u32::MAX;
        op.target = u32::MAX;
        op.holds_token = false;
        op.failed = false;
        op.computed = false;
        op.pending = 0;
        op.issued = 0;
        op.nreads = 0;
        op.nwrites = 0;
        Some(p)
    }

    /// Stripe operations taken on this core's channels of array `id` so far.
    pub fn ops_taken_local(id: u64) -> u64 {
        REGISTRY.with(|r| {
            r.borrow()
                .iter()
                .filter(|(aid, _)| *aid == id)
                .filter_map(|(_, w)| w.upgrade())
                .map(|c| c.ops_taken.get())
                .sum()
        })
    }

    /// Wake this core's channels of array `id` (a released token may be ours).
    pub fn wake_local(id: u64) {
        REGISTRY.with(|r| {
            for (aid, w) in r.borrow().iter() {
                if *aid == id {
                    if let Some(c) = w.upgrade() {
                        c.token_retry.set(true);
                    }
                }
            }
        });
    }

    /// Re-sync member channels of array `id` on this core (after a hot-remove or add).
    pub fn refresh_local(id: u64) {
        let chans: Vec<Rc<Chan>> = REGISTRY.with(|r| {
            r.borrow()
                .iter()
                .filter(|(aid, _)| *aid == id)
                .filter_map(|(_, w)| w.upgrade())
                .collect()
        });
        for c in chans {
            c.refresh_members();
        }
    }

    /// Queue a host I/O that found no free operation or member descriptor (the step that
    /// returned false asked for the event it waits for: [`Chan::wait_descriptor`], a freed
    /// operation, or [`Chan::wait_blind`]).
    pub fn wait_for_op(&self, io: IoRef) {
        let mut q = self.host_wait.get();
        q.push_back(io);
        self.host_wait.set(q);
        self.host_waiting.set(self.host_waiting.get() + 1);
    }

    /// Something waits for what sends no event (a pool buffer, the dirty mark): retry
    /// stalled operations and waiting host I/Os at every poll until nothing does.
    pub fn wait_blind(&self) {
        self.blind.set(true);
    }

    /// Retry what waits: parked operations whose token was released; stalled operations and
    /// host I/Os waiting for an operation or a descriptor once one came free (or at every poll
    /// while one waits for a pool buffer or the dirty mark). Returns whether anything moved.
    pub fn poll_work(&self) -> bool {
        let mut moved = false;
        if self.token_retry.replace(false) {
            let n = self.parked.borrow().len();
            for _ in 0..n {
                let Some(idx) = self.parked.borrow_mut().pop_front() else {
                    break;
                };
                moved = true;
                run(self.op(idx));
            }
        }
        // Both flags are taken now: a retry that must wait again sets them again.
        let retry = self.kick.replace(false) | self.blind.replace(false);
        if !retry {
            return moved;
        }
        let n = self.stalled.borrow().len();
        for _ in 0..n {
            let Some(idx) = self.stalled.borrow_mut().pop_front() else {
                break;
            };
            moved = true;
            run(self.op(idx));
        }
        // Each waiting host I/O gets one try per poll (one that must wait again goes to the
        // back), so this never spins.
        for _ in 0..self.host_waiting.get() {
            let mut q = self.host_wait.get();
            let Some(io) = q.pop_front() else { break };
            self.host_wait.set(q);
            self.host_waiting.set(self.host_waiting.get() - 1);
            moved = true;
            crate::dispatch::resume(self, io);
        }
        moved
    }
}

/// Drive an operation as far as it goes now.
pub(crate) fn run(p: *mut StripeOp) {
    // SAFETY: the operation is taken (not free) and only this core touches it; no other
    // reference to it is live while `run` holds this one (member I/O completions re-enter
    // through `member_done` only from the reactor loop).
    let op = unsafe { &mut *p };
    // SAFETY: an operation only runs while its channel lives (module doc: the channel outlives
    // the I/Os in flight on it, and the rebuild task holds its own); the operation lives in
    // the channel's slab behind an `UnsafeCell`, so `&Chan` and `&mut StripeOp` do not alias.
    let chan = unsafe { &*op.chan };
    loop {
        match op.phase {
            Phase::Token => {
                let bucket = StripeLocks::bucket(op.unit);
                if !chan.array.locks.try_acquire(bucket, chan.my_bit) {
                    chan.parked.borrow_mut().push_back(op.idx);
                    return;
                }
                op.holds_token = true;
                op.set_phase(Phase::Plan);
            }
            Phase::Plan => {
                op.drop_bufs();
                op.nreads = 0;
                op.nwrites = 0;
                op.failed = false;
                match (op.fns.plan)(chan, op) {
                    PlanResult::Ready => {
                        op.set_phase(Phase::Read);
                        op.issued = 0;
                        op.pending = 0;
                    }
                    PlanResult::NeedToken => {
                        op.set_phase(Phase::Token);
                    }
                    PlanResult::NoBuffer => {
                        op.drop_bufs();
                        chan.stalled.borrow_mut().push_back(op.idx);
                        chan.wait_blind();
                        return;
                    }
                    PlanResult::Fail(s) => {
                        finish(chan, op, s);
                        return;
                    }
                }
            }
            Phase::Read | Phase::Write => {
                if !issue(chan, op) {
                    return; // stalled or in flight
                }
                // Every member I/O of the phase is done.
                if !phase_done(chan, op) {
                    return;
                }
            }
        }
    }
}

/// Issue the member I/Os of the current phase not yet issued; in the write phase, run the
/// compute step before the first write whose data is in a buffer (or at the end). Returns true
/// when the phase is complete (nothing left in flight), false when waiting for completions or
/// a descriptor.
fn issue(chan: &Chan, op: &mut StripeOp) -> bool {
    assert!(matches!(op.phase, Phase::Read | Phase::Write));
    let write = op.phase == Phase::Write;
    let count = if write { op.nwrites } else { op.nreads };
    let bs = chan.array.block_size as usize;
    op.pending += 1; // issuing
    while op.issued < count {
        let c = if write {
            op.writes[op.issued as usize]
        } else {
            op.reads[op.issued as usize]
        };
        if write && !op.computed && matches!(c.src, Src::Buf(..)) {
            compute(chan, op);
        }
        let len = c.blocks as usize * bs;
        let mut iovs = [IoVec::EMPTY; MAX_IOVS];
        let n = match c.src {
            Src::Host(off) => match IovCursor::at(op.host_iovs(), off).split_into(len, &mut iovs) {
                (n, bytes) if bytes == len => n,
                _ => 0, // a list shorter than the I/O goes down empty (the member refuses it)
            },
            Src::Buf(i, off) => {
                let b = op.buf(i);
                // SAFETY: the stripe operation owns its buffers until every member I/O it
                // issued has completed, and nobody else touches them meanwhile.
                iovs[0] = unsafe { IoVec::from_raw_parts(b.as_mut_ptr().wrapping_add(off), len) };
                1
            }
            Src::Unmap | Src::Zeroes => 0,
        };
        let ctx = member_ctx(op, c.member);
        let t = match c.src {
            Src::Unmap => IoType::Unmap,
            Src::Zeroes => IoType::WriteZeroes,
            _ if write => IoType::Write,
            _ => IoType::Read,
        };
        match chan.submit_member(c.member, t, &iovs[..n], c.lba, c.blocks, member_done, ctx) {
            Ok(()) => op.pending += 1,
            Err(SubmitError::NoDescriptor) => {
                assert!(op.pending > 0);
                op.pending -= 1;
                if op.pending == 0 {
                    chan.stalled.borrow_mut().push_back(op.idx);
                    chan.wait_descriptor(c.member);
                }
                // else: the last completion of what is in flight re-runs `issue`.
                return false;
            }
            Err(e) => {
                op.failed = true;
                note_member_failure(chan, c.member, &e);
            }
        }
        op.issued += 1;
    }
    if write && !op.computed {
        compute(chan, op);
    }
    assert!(op.pending > 0 && op.issued == count);
    op.pending -= 1;
    op.pending == 0
}

/// The level's compute step, once per write phase: the reads are in, the writes from the
/// host's buffers are out (they never depend on it).
fn compute(chan: &Chan, op: &mut StripeOp) {
    assert!(op.phase == Phase::Write && !op.computed);
    op.computed = true;
    if let Some(f) = op.fns.compute {
        f(chan, op);
    }
}

fn note_member_failure(chan: &Chan, member: u32, why: &dyn std::fmt::Display) {
    chan.array.fail_member(member, &why.to_string());
}

/// A member I/O of an operation completed.
fn member_done(ctx: usize, status: IoStatus) {
    let p = (ctx & !MEMBER_MASK) as *mut StripeOp;
    let member = (ctx & MEMBER_MASK) as u32;
    // SAFETY: `p` is an operation in flight on this core (its member I/O carried it).
    let op = unsafe { &mut *p };
    // SAFETY: the channel outlives its operations in flight (see `run`).
    let chan = unsafe { &*op.chan };
    if status != IoStatus::Success {
        op.failed = true;
        chan.array
            .fail_member(member, &format!("{:?} on a member I/O", status));
    }
    assert!(op.pending > 0, "a member I/O completed twice");
    op.pending -= 1;
    if op.pending > 0 {
        return;
    }
    let count = if op.phase == Phase::Write {
        op.nwrites
    } else {
        op.nreads
    };
    if op.issued < count {
        // Issuing stopped for lack of a descriptor: go on now that one is free.
        run(p);
        return;
    }
    if phase_done(chan, op) {
        run(p);
    }
}

/// The current phase finished. Returns true when `run` should continue with the next phase.
fn phase_done(chan: &Chan, op: &mut StripeOp) -> bool {
    assert_eq!(op.pending, 0);
    match op.phase {
        Phase::Read => {
            if op.failed {
                if chan.array.is_offline() {
                    finish(chan, op, IoStatus::IoError);
                    return false;
                }
                op.set_phase(if op.kind == OpKind::Read && !op.holds_token {
                    Phase::Token
                } else {
                    Phase::Plan
                });
                return true;
            }
            op.set_phase(Phase::Write);
            op.computed = false;
            op.issued = 0;
            op.pending = 0;
            true
        }
        Phase::Write => {
            let status = if matches!(op.kind, OpKind::Rebuild | OpKind::Resync) {
                if op.failed {
                    IoStatus::IoError
                } else {
                    if op.kind == OpKind::Rebuild {
                        crate::rebuild::written(chan, op);
                    }
                    IoStatus::Success
                }
            } else if op.failed && chan.array.is_offline() {
                IoStatus::IoError
            } else {
                IoStatus::Success
            };
            finish(chan, op, status);
            false
        }
        Phase::Token | Phase::Plan => unreachable!("a phase with member I/Os ended"),
    }
}

/// The operation is over: give the token back, free buffers, tell the host I/O or the owner,
/// free the operation.
fn finish(chan: &Chan, op: &mut StripeOp, status: IoStatus) {
    if op.holds_token {
        op.holds_token = false;
        let id = chan.array.id;
        let me = keel_reactor::current_core();
        chan.array
            .locks
            .release(StripeLocks::bucket(op.unit), |core| {
                if Some(core) == me || me.is_none() {
                    Chan::wake_local(id);
                } else if keel_reactor::send_to(core, move || Chan::wake_local(id)).is_err() {
                    log::warn!("raid: could not wake core {core} for a stripe token");
                }
            });
    }
    op.drop_bufs();
    let host = op.host.take();
    let cb = op.done_cb.take();
    let ctx = op.done_ctx;
    let mut free = chan.free_ops.borrow_mut();
    assert!(free.len() < OPS_PER_CHANNEL, "an operation freed twice");
    free.push(op.idx);
    drop(free);
    chan.kick.set(true); // a host I/O may wait for an operation
    if let Some(host) = host {
        child_done(host, status);
    } else if let Some(cb) = cb {
        cb(ctx, status);
    }
}

/// Start a host I/O's bookkeeping (the dispatch bias included).
#[inline]
pub(crate) fn host_start(chan: &Chan, io: &mut IoRef) {
    let c = hctx(io);
    c.pending = 1;
    c.status = IoStatus::Success;
    c.next = 0;
    c.chan = chan;
    c.read_path = ReadPath::Direct;
}

/// Record a child's completion on a host I/O; completes it when it was the last. Also used to
/// drop the dispatch bias.
#[inline]
pub(crate) fn child_done(host: HostRaw, status: IoStatus) {
    // SAFETY: `host` is a parked in-flight host I/O of this core (the child counted in its
    // `pending` holds it); it is parked again unless it completes here (exactly once: the
    // count reaches 0 once).
    let mut io = unsafe { host.unpark() };
    let c = hctx(&mut io);
    if status != IoStatus::Success && c.status == IoStatus::Success {
        c.status = status;
    }
    assert!(c.pending > 0, "a host I/O child completed twice");
    c.pending -= 1;
    if c.pending == 0 {
        if c.read_path == ReadPath::Retry {
            // A direct raid5 piece failed: every piece is in, the read goes again through
            // stripe operations (they fail the member and rebuild from parity).
            c.pending = 1;
            c.status = IoStatus::Success;
            c.next = 0;
            c.read_path = ReadPath::ViaOps;
            let chan = c.chan;
            // SAFETY: the channel outlives the I/Os in flight on it (module doc).
            crate::dispatch::resume(unsafe { &*chan }, io);
            return;
        }
        let s = c.status;
        io.complete(s);
    } else {
        let _ = io.into_raw(); // parked again: the same value as `host`
    }
}

/// The callback of member I/Os that belong directly to a host I/O (raid0/concat, flush, reset).
pub(crate) fn host_child_cb(ctx: usize, status: IoStatus) {
    // SAFETY: this callback is only given with `HostRaw::ctx` of the host I/O the member I/O
    // is a counted child of (`raid0::split`, `raid0::fan_out`), not counted down yet.
    let host = unsafe { HostRaw::from_ctx(ctx) };
    child_done(host, status);
}

/// The bdev layer's channel for a raid bdev.
pub(crate) struct RaidChannel {
    pub chan: Rc<Chan>,
}

impl BackendChannel for RaidChannel {
    fn submit(&mut self, io: IoRef) {
        crate::dispatch::submit(&self.chan, io);
    }

    fn poll(&mut self) -> PollStatus {
        if self.chan.poll_work() {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn needs_poll(&self) -> bool {
        true // waiting host I/Os and parked operations are retried from `poll`
    }
}
