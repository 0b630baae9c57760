//! HOT PATH: a delay bdev's per-core channel.
//!
//! Each I/O goes to the base as a child I/O. When the child completes, a read or write is
//! parked in its latency class's FIFO with deadline = now + the class latency (as SPDK does:
//! the latency adds to the base's), and the channel's poll completes it once the deadline has
//! passed. Within a class the latency is constant, so each FIFO is in deadline order (until
//! `bdev_delay_update_latency` lowers a latency: newer I/Os then wait behind older ones, which is
//! SPDK's behaviour too). Other I/O types complete as soon as the base completes them.
//!
//! Nothing here allocates: FIFOs are intrusive ([`IoQueue`]), and the child callback finds the
//! channel through an `Rc` strong count stored in the parent's typed context ([`DelayIo`]).

use super::latency::{LatencyClass, P99Picker};
use super::DelayShared;
use crate::modules::stack::{
    forward, interrupt_mode_here, submit_error_status, wake_all_cores, IoQueue,
};
use crate::{BackendChannel, IoChannel, IoCtx, IoRef, IoStatus, IoType, SubmitError};
use keel_reactor::{PollStatus, PollerId};
use std::cell::Cell;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

/// A delay I/O's state: its typed context ([`IoRef::ctx`]), all zeroes at submission.
struct DelayIo {
    /// `Rc<Inner>` raw pointer (one strong count while the child is in flight).
    chan: *const Inner,
    /// Tick at which a held I/O may complete.
    deadline: u64,
    /// The bdev's reset generation when the I/O was submitted.
    reset_gen: u64,
    /// The base's completion status.
    status: IoStatus,
    /// Latency class index, or [`NO_DELAY`].
    class: u8,
}

// SAFETY: all-zero is a valid `DelayIo` (null pointer, zero ticks, `Success`, class 0).
unsafe impl IoCtx for DelayIo {}

/// The delay state of `io`.
#[inline]
fn st(io: &mut IoRef) -> &mut DelayIo {
    io.ctx::<DelayIo>()
}

/// Class value of I/Os that are not delayed.
const NO_DELAY: u8 = u8::MAX;

/// How often held I/Os are checked when the reactor runs in interrupt mode (it then sleeps
/// between events, and a deadline passing is not an event).
const INTERRUPT_MODE_TICK: Duration = Duration::from_micros(100);

/// One core's channel into a delay bdev.
pub(super) struct DelayChannel {
    inner: Rc<Inner>,
    /// Timed poller releasing held I/Os in interrupt mode.
    timer: Option<PollerId>,
}

struct Inner {
    base: IoChannel,
    shared: Arc<DelayShared>,
    /// Completed I/Os waiting for their deadline, one FIFO per [`LatencyClass`].
    held: [Cell<IoQueue>; 4],
    /// I/Os waiting for a base descriptor (`SubmitError::NoDescriptor`), retried by `poll`.
    retry: Cell<IoQueue>,
    picker: Cell<P99Picker>,
    /// The last reset generation this channel acted on.
    seen_reset: Cell<u64>,
}

impl DelayChannel {
    /// A channel forwarding to `base` (a channel of the base bdev on this core).
    pub(super) fn new(base: IoChannel, shared: Arc<DelayShared>, seed: u64) -> DelayChannel {
        let seen = shared.reset_gen.load(Ordering::Acquire);
        let inner = Rc::new(Inner {
            base,
            shared,
            held: Default::default(),
            retry: Cell::new(IoQueue::new()),
            picker: Cell::new(P99Picker::new(seed)),
            seen_reset: Cell::new(seen),
        });
        let timer = interrupt_mode_here().then(|| {
            let weak = Rc::downgrade(&inner);
            keel_reactor::register_poller("delay_deadlines", Some(INTERRUPT_MODE_TICK), move || {
                match weak.upgrade() {
                    Some(inner) if inner.release_due() > 0 => PollStatus::Busy,
                    _ => PollStatus::Idle,
                }
            })
        });
        DelayChannel { inner, timer }
    }
}

impl Drop for DelayChannel {
    fn drop(&mut self) {
        if let Some(id) = self.timer.take() {
            keel_reactor::unregister_poller(id);
        }
    }
}

impl BackendChannel for DelayChannel {
    fn submit(&mut self, mut io: IoRef) {
        let inner = &self.inner;
        let io_type = io.io_type();
        if io_type == IoType::Reset {
            inner.reset(io);
            return;
        }
        let class = match io_type {
            IoType::Read | IoType::Write => {
                let mut picker = inner.picker.get();
                let p99 = picker.next_is_p99();
                inner.picker.set(picker);
                LatencyClass::for_io(io_type, p99)
            }
            _ => None,
        };
        let x = st(&mut io);
        x.class = class.map_or(NO_DELAY, |c| c.index() as u8);
        x.reset_gen = inner.shared.reset_gen.load(Ordering::Acquire);
        x.chan = Rc::into_raw(Rc::clone(inner));
        inner.send(io);
    }

    fn poll(&mut self) -> PollStatus {
        let inner = &*self.inner;
        let work = inner.release_due() + inner.retry_waiting();
        if work > 0 {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn needs_poll(&self) -> bool {
        true
    }
}

impl Inner {
    /// Complete the held I/Os whose deadline has passed (and abort those from before a reset
    /// seen on another core); returns how many completed.
    fn release_due(&self) -> usize {
        let mut done = 0;
        let gen = self.shared.reset_gen.load(Ordering::Acquire);
        if gen != self.seen_reset.get() {
            self.seen_reset.set(gen);
            done += self.abort_held_before(gen);
        }
        let now = keel_reactor::ticks();
        for fifo in &self.held {
            loop {
                let mut q = fifo.get();
                match q.with_front_ctx(|x: &mut DelayIo| x.deadline) {
                    Some(deadline) if deadline <= now => {}
                    _ => break,
                }
                let Some(mut io) = q.pop_front() else { break };
                fifo.set(q);
                let status = st(&mut io).status;
                io.complete(status);
                done += 1;
            }
        }
        done
    }

    /// Forward `io` (whose context's `chan` holds a strong count) to the base, behind any I/O
    /// already waiting for a descriptor.
    fn send(&self, io: IoRef) {
        let mut retry = self.retry.get();
        if !retry.is_empty() {
            retry.push_back(io);
            self.retry.set(retry);
            return;
        }
        match forward(&self.base, io, on_base_done) {
            Ok(()) => {}
            Err((io, SubmitError::NoDescriptor)) => {
                retry.push_back(io);
                self.retry.set(retry);
            }
            Err((io, e)) => fail(io, submit_error_status(e)),
        }
    }

    /// Resubmit I/Os that found no base descriptor; returns how many went out.
    fn retry_waiting(&self) -> usize {
        let mut sent = 0;
        loop {
            let mut retry = self.retry.get();
            let Some(io) = retry.pop_front() else { break };
            self.retry.set(retry);
            match forward(&self.base, io, on_base_done) {
                Ok(()) => sent += 1,
                Err((io, SubmitError::NoDescriptor)) => {
                    let mut retry = self.retry.get();
                    retry.push_front(io);
                    self.retry.set(retry);
                    break;
                }
                Err((io, e)) => {
                    fail(io, submit_error_status(e));
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Park a completed I/O until its deadline.
    fn hold(&self, class: LatencyClass, io: IoRef) {
        let fifo = &self.held[class.index()];
        let mut q = fifo.get();
        q.push_back(io);
        fifo.set(q);
    }

    /// Complete (aborted) every held I/O submitted before reset generation `gen`.
    fn abort_held_before(&self, gen: u64) -> usize {
        let mut aborted = 0;
        for fifo in &self.held {
            let mut old = fifo.take();
            let mut keep = IoQueue::new();
            while let Some(mut io) = old.pop_front() {
                if st(&mut io).reset_gen < gen {
                    io.complete(IoStatus::Aborted);
                    aborted += 1;
                } else {
                    keep.push_back(io);
                }
            }
            // I/Os completed by the base meanwhile cannot have been added: completions are
            // delivered from the reactor loop, never from inside `complete`.
            let mut now = fifo.get();
            while let Some(io) = keep.pop_front() {
                now.push_back(io);
            }
            fifo.set(now);
        }
        aborted
    }

    /// A reset: abort the I/Os held on every channel (others notice the new generation in
    /// their poll), then pass the reset to the base when it supports one.
    fn reset(self: &Rc<Self>, mut io: IoRef) {
        let gen = self.shared.reset_gen.fetch_add(1, Ordering::AcqRel) + 1;
        self.seen_reset.set(gen);
        wake_all_cores();
        let aborted = self.abort_held_before(gen);
        log::debug!("delay: reset aborted {aborted} held I/O(s) on this core");
        if !self.shared.base_supports_reset {
            io.complete(IoStatus::Success);
            return;
        }
        let x = st(&mut io);
        x.class = NO_DELAY;
        x.reset_gen = gen;
        x.chan = Rc::into_raw(Rc::clone(self));
        self.send(io);
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        // The bdev layer drops a channel only once its I/Os completed; anything still held
        // here would otherwise never complete.
        for fifo in &self.held {
            let mut q = fifo.take();
            while let Some(io) = q.pop_front() {
                io.complete(IoStatus::Aborted);
            }
        }
    }
}

/// Complete `io` without a child, releasing the channel count in its context's `chan`.
fn fail(mut io: IoRef, status: IoStatus) {
    let chan = st(&mut io).chan;
    // SAFETY: `chan` holds the strong count taken by `submit`/`reset` for this I/O, and
    // it is released exactly once (here, or in `on_base_done`).
    drop(unsafe { Rc::from_raw(chan) });
    io.complete(status);
}

/// Completion of a child I/O on the base: hold the parent until its deadline, or complete it
/// now when its type is not delayed.
fn on_base_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the parent's `into_raw`, passed to the base by `forward` on this core;
    // the base calls this callback exactly once.
    let mut io = unsafe { IoRef::from_raw(ctx) };
    let x = st(&mut io);
    // SAFETY: `chan` holds the strong count taken for this child; released here once.
    let inner = unsafe { Rc::from_raw(x.chan) };
    let class = LatencyClass::ALL.get(usize::from(x.class)).copied();
    match class {
        None => {
            drop(inner);
            io.complete(status);
        }
        Some(class) => {
            let latency = inner.shared.latencies.ticks(class);
            x.deadline = keel_reactor::ticks().saturating_add(latency);
            x.status = status;
            inner.hold(class, io);
        }
    }
}
