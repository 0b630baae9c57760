//! A closed loop of `qd` I/Os on one bdev channel: `qd` slots, each with its own buffer, each
//! completion submitting the slot's next I/O until the run's count is reached; the I/Os are
//! chosen by the caller's function. Used by the no-allocation proofs (counted runs) and the
//! bdev benches (timed runs). Allocation-free once built: the chooser is called in place
//! (statically dispatched unless it is the boxed [`Chooser`]).

use keel_bdev::{IoChannel, IoStatus, IoVec};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// One I/O of a closed loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Op {
    /// Write (else read).
    pub write: bool,
    /// First block.
    pub lba: u64,
    /// Blocks.
    pub blocks: u64,
}

/// A boxed chooser, for loops whose chooser changes between runs ([`ClosedLoop::set_chooser`]).
pub type Chooser = Box<dyn Fn(u64, u64) -> Op>;

/// A closed loop of `qd` I/Os on one channel; `C` chooses I/O number `seq` of the loop given a
/// fresh random number (`choose(seq, random)`). Lives in a stable heap place (slots point back
/// at it).
pub struct ClosedLoop<C: Fn(u64, u64) -> Op = Chooser> {
    inner: *mut Inner<C>,
}

struct Inner<C> {
    ch: IoChannel,
    bs: u64,
    bufs: Box<[u8]>,
    slot_bytes: usize,
    slots: Box<[Slot<C>]>,
    choose: C,
    rng: Cell<u64>,
    seq: Cell<u64>,
    to_submit: Cell<u64>,
    outstanding: Cell<usize>,
    submitted: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

struct Slot<C> {
    lp: *const Inner<C>,
    idx: usize,
}

impl<C: Fn(u64, u64) -> Op> ClosedLoop<C> {
    /// A loop of `qd` slots of `slot_bytes` each on `ch`, its I/Os chosen by `choose`.
    pub fn new(ch: IoChannel, qd: usize, slot_bytes: usize, choose: C) -> ClosedLoop<C> {
        assert!(qd > 0, "a closed loop has at least one slot");
        let bs = u64::from(ch.bdev().info().block_size);
        let inner = Box::into_raw(Box::new(Inner {
            ch,
            bs,
            bufs: vec![0u8; qd * slot_bytes].into_boxed_slice(),
            slot_bytes,
            slots: Box::new([]),
            choose,
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            seq: Cell::new(0),
            to_submit: Cell::new(0),
            outstanding: Cell::new(0),
            submitted: Cell::new(0),
            waker: RefCell::new(None),
        }));
        // SAFETY: `inner` was just leaked from a Box and nobody else refers to it yet; the
        // slots point back at it, it is freed in `drop`, after the last run completed.
        unsafe {
            (*inner).slots = (0..qd).map(|idx| Slot { lp: inner, idx }).collect();
        }
        ClosedLoop { inner }
    }

    fn inner(&self) -> &Inner<C> {
        // SAFETY: alive until `drop`; only shared access after `new`.
        unsafe { &*self.inner }
    }

    /// Fill every slot's buffer with `byte` (between runs only).
    pub fn fill(&mut self, byte: u8) {
        // SAFETY: between runs no I/O refers to the buffers and nothing else to the inner state.
        unsafe { (*self.inner).bufs.fill(byte) };
    }

    /// I/Os submitted by every run so far.
    pub fn submitted(&self) -> u64 {
        self.inner().submitted.get()
    }

    /// Replace the chooser (between runs only).
    pub fn set_chooser(&mut self, choose: C) {
        assert_eq!(
            self.inner().outstanding.get(),
            0,
            "chooser replaced in a run"
        );
        // SAFETY: between runs nothing else refers to the inner state.
        unsafe { (*self.inner).choose = choose };
    }

    /// Run `ios` I/Os (at least the queue depth) and wait for the last to complete; returns how
    /// long the run took. Every I/O must succeed.
    pub async fn run(&self, ios: u64) -> Duration {
        let l = self.inner();
        let qd = l.slots.len() as u64;
        assert!(ios >= qd, "a run is at least one I/O per slot");
        assert_eq!(l.outstanding.get(), 0, "one run at a time");
        let t0 = Instant::now();
        l.to_submit.set(ios - qd);
        l.outstanding.set(l.slots.len());
        for slot in l.slots.iter() {
            l.submit(slot);
        }
        poll_fn(|cx| {
            if l.outstanding.get() == 0 {
                Poll::Ready(())
            } else {
                let mut w = l.waker.borrow_mut();
                if w.is_none() {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await;
        let elapsed = t0.elapsed();
        l.waker.borrow_mut().take();
        elapsed
    }
}

impl<C: Fn(u64, u64) -> Op> Drop for ClosedLoop<C> {
    fn drop(&mut self) {
        assert_eq!(self.inner().outstanding.get(), 0, "dropped while running");
        // SAFETY: no I/O is in flight; reclaim the box leaked in `new`.
        drop(unsafe { Box::from_raw(self.inner) });
    }
}

impl<C: Fn(u64, u64) -> Op> Inner<C> {
    fn next_random(&self) -> u64 {
        // xorshift64*
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn submit(&self, slot: &Slot<C>) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.submitted.set(self.submitted.get() + 1);
        let op = (self.choose)(seq, self.next_random());
        let len = (op.blocks * self.bs) as usize;
        assert!(len <= self.slot_bytes, "{op:?} does not fit a slot");
        // SAFETY: each slot owns its `slot_bytes` of `bufs`, which lives as long as the loop,
        // and only one I/O per slot is in flight.
        let v = unsafe {
            IoVec::from_raw_parts(
                self.bufs
                    .as_ptr()
                    .add(slot.idx * self.slot_bytes)
                    .cast_mut(),
                len,
            )
        };
        let ctx = slot as *const Slot<C> as usize;
        let r = if op.write {
            self.ch.write(&[v], op.lba, op.blocks, on_done::<C>, ctx)
        } else {
            self.ch.read(&[v], op.lba, op.blocks, on_done::<C>, ctx)
        };
        if let Err(e) = r {
            panic!("submit {op:?} in the closed loop: {e}");
        }
    }
}

fn on_done<C: Fn(u64, u64) -> Op>(ctx: usize, status: IoStatus) {
    assert_eq!(
        status,
        IoStatus::Success,
        "an I/O of the closed loop failed"
    );
    // SAFETY: ctx is a `Slot` of a loop that lives until every I/O of its run completed.
    let slot = unsafe { &*(ctx as *const Slot<C>) };
    // SAFETY: as above.
    let lp = unsafe { &*slot.lp };
    let left = lp.to_submit.get();
    if left > 0 {
        lp.to_submit.set(left - 1);
        lp.submit(slot);
    } else {
        lp.outstanding.set(lp.outstanding.get() - 1);
        if lp.outstanding.get() == 0 {
            if let Some(w) = lp.waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }
}
