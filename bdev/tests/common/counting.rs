//! Test support for "zero heap allocations per I/O in steady state" (docs/ARCHITECTURE.md §3.6), shared by
//! the bdev and raid test binaries (include it with `#[path = ...] mod counting;`; it installs
//! the binary's `#[global_allocator]`):
//!
//! - a counting global allocator: counts the allocations of threads that switched counting on,
//!   and keeps a backtrace of the first one counted (to say where an allocation happens);
//! - a closed-loop driver: `qd` slots, each with its own buffer, each completion callback
//!   submitting the slot's next I/O, the I/Os chosen by a caller's function.
#![allow(dead_code)] // each test binary uses its own subset
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::{IoChannel, IoStatus, IoVec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
/// The first counted allocation's backtrace (taken with counting off).
static FIRST: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// Count allocations made by this thread.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Record a backtrace of the next counted allocation of this thread.
    static TRACE: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if !COUNTING.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    if TRACE.try_with(|t| t.replace(false)).unwrap_or(false) {
        // Capturing and rendering a backtrace allocates: not counted, not traced.
        COUNTING.with(|c| c.set(false));
        let bt = Backtrace::force_capture().to_string();
        *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = Some(bt);
        COUNTING.with(|c| c.set(true));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only an
// atomic, const-initialised thread-locals without destructor and, once, a backtrace taken with
// counting off (its own allocations go to the system allocator through this one, uncounted).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// What one counted run saw on the calling thread.
#[derive(Debug)]
pub struct Counted {
    /// Heap allocations made by the thread.
    pub allocations: u64,
    /// Backtrace of the first one (when there was one).
    pub first: Option<String>,
}

/// Count the calling thread's allocations while `fut` runs (on this thread: a reactor task).
/// Checks first that the counter does see an allocation of this thread.
pub async fn count<T>(fut: impl std::future::Future<Output = T>) -> (T, Counted) {
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Box::new(0u64)));
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.swap(0, Ordering::SeqCst),
        1,
        "counting allocator self-check"
    );
    FIRST.lock().unwrap().take();
    TRACE.with(|t| t.set(true));
    COUNTING.with(|c| c.set(true));
    let v = fut.await;
    COUNTING.with(|c| c.set(false));
    TRACE.with(|t| t.set(false));
    let counted = Counted {
        allocations: ALLOCATIONS.swap(0, Ordering::SeqCst),
        first: FIRST.lock().unwrap().take(),
    };
    (v, counted)
}

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

/// Chooses the I/O number `seq` of a run, given a fresh random number.
pub type Chooser = Box<dyn Fn(u64, u64) -> Op>;

/// A closed loop of `qd` I/Os on one channel: each completion submits the slot's next I/O
/// until the run's count is reached. Lives in a stable heap place (slots point back at it).
pub struct ClosedLoop {
    inner: *mut Inner,
}

struct Inner {
    ch: IoChannel,
    bs: u64,
    bufs: Box<[u8]>,
    slot_bytes: usize,
    slots: Box<[Slot]>,
    choose: Chooser,
    rng: Cell<u64>,
    seq: Cell<u64>,
    to_submit: Cell<u64>,
    outstanding: Cell<usize>,
    submitted: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

struct Slot {
    lp: *const Inner,
    idx: usize,
}

impl ClosedLoop {
    /// A loop of `qd` slots of `slot_bytes` each on `ch`, its I/Os chosen by `choose`.
    pub fn new(ch: IoChannel, qd: usize, slot_bytes: usize, choose: Chooser) -> ClosedLoop {
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

    fn inner(&self) -> &Inner {
        // SAFETY: alive until `drop`; only shared access after `new`.
        unsafe { &*self.inner }
    }

    /// I/Os submitted by every run so far.
    pub fn submitted(&self) -> u64 {
        self.inner().submitted.get()
    }

    /// Replace the chooser (between runs only).
    pub fn set_chooser(&mut self, choose: Chooser) {
        // SAFETY: between runs nothing else refers to the inner state.
        unsafe { (*self.inner).choose = choose };
    }

    /// Run `ios` I/Os (at least the queue depth) and wait for the last to complete. Every I/O
    /// must succeed.
    pub async fn run(&self, ios: u64) {
        let l = self.inner();
        let qd = l.slots.len() as u64;
        assert!(ios >= qd, "a run is at least one I/O per slot");
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
        l.waker.borrow_mut().take();
    }
}

impl Drop for ClosedLoop {
    fn drop(&mut self) {
        assert_eq!(self.inner().outstanding.get(), 0, "dropped while running");
        // SAFETY: no I/O is in flight; reclaim the box leaked in `new`.
        drop(unsafe { Box::from_raw(self.inner) });
    }
}

impl Inner {
    fn next_random(&self) -> u64 {
        // xorshift64*
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn submit(&self, slot: &Slot) {
        let seq = self.seq.get();
        self.seq.set(seq + 1);
        self.submitted.set(self.submitted.get() + 1);
        let op = (self.choose)(seq, self.next_random());
        let len = (op.blocks * self.bs) as usize;
        assert!(len <= self.slot_bytes, "{op:?} does not fit a slot");
        // SAFETY: each slot owns its `slot_bytes` of `bufs`, which lives as long as the loop,
        // and only one I/O per slot is in flight.
        let v = unsafe {
            IoVec::from_raw(
                self.bufs
                    .as_ptr()
                    .add(slot.idx * self.slot_bytes)
                    .cast_mut(),
                len,
            )
        };
        let ctx = slot as *const Slot as usize;
        let r = if op.write {
            self.ch.write(&[v], op.lba, op.blocks, on_done, ctx)
        } else {
            self.ch.read(&[v], op.lba, op.blocks, on_done, ctx)
        };
        if let Err(e) = r {
            panic!("submit {op:?} in the closed loop: {e}");
        }
    }
}

fn on_done(ctx: usize, status: IoStatus) {
    assert_eq!(
        status,
        IoStatus::Success,
        "an I/O of the closed loop failed"
    );
    // SAFETY: ctx is a `Slot` of a loop that lives until every I/O of its run completed.
    let slot = unsafe { &*(ctx as *const Slot) };
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

/// Assert a run allocated nothing, printing where the first allocation happened otherwise.
pub fn assert_none(what: &str, c: &Counted) {
    if c.allocations != 0 {
        eprintln!(
            "{what}: {} heap allocations in steady state; the first one at:\n{}",
            c.allocations,
            c.first.as_deref().unwrap_or("(no backtrace)")
        );
    }
    assert_eq!(c.allocations, 0, "{what}: heap allocations in steady state");
}
