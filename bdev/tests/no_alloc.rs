//! Zero heap allocations per I/O in steady state (DESIGN.md §8), shown with a counting global
//! allocator: a closed loop of 128 outstanding 4 KiB reads and writes (each completion callback
//! resubmits) on a 1-core runtime, warmed up, then 200k I/Os with every allocation made on the
//! reactor thread counted — reactor loop, pollers, bdev layer, module and callbacks included.

mod common;

use common::{on_core, runtime};
use keel_bdev::modules::{malloc, null};
use keel_bdev::{IoChannel, IoStatus, IoVec};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Poll, Waker};
use std::time::Duration;

struct Counting;

static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);

thread_local! {
    /// Count allocations made by this thread.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
}

fn note() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        ALLOCATIONS.fetch_add(1, Ordering::Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only an
// atomic and a const-initialised thread-local without destructor (which never allocates).
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

const QD: usize = 128;
const IO_SIZE: usize = 4096;
const WARMUP: u64 = 20_000;
const MEASURED: u64 = 200_000;

/// A closed loop: `QD` slots, each with its own buffer, resubmitting on completion.
struct Loop {
    ch: IoChannel,
    bufs: Box<[u8]>,
    slots: Box<[Slot]>,
    blocks_per_io: u64,
    span: u64,
    to_submit: Cell<u64>,
    outstanding: Cell<usize>,
    submitted: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

struct Slot {
    lp: *const Loop,
    idx: usize,
}

impl Loop {
    fn submit(&self, slot: &Slot) {
        let n = self.submitted.get();
        self.submitted.set(n + 1);
        let off = (n % (self.span / self.blocks_per_io)) * self.blocks_per_io;
        // SAFETY: each slot owns its 4 KiB of `bufs`, which lives as long as the loop, and only
        // one I/O per slot is in flight.
        let v = unsafe {
            IoVec::from_raw(
                self.bufs.as_ptr().add(slot.idx * IO_SIZE).cast_mut(),
                IO_SIZE,
            )
        };
        let ctx = slot as *const Slot as usize;
        let r = if n.is_multiple_of(2) {
            self.ch.read(&[v], off, self.blocks_per_io, on_done, ctx)
        } else {
            self.ch.write(&[v], off, self.blocks_per_io, on_done, ctx)
        };
        r.expect("submit in the closed loop");
    }

    async fn run(&self, ios: u64) {
        assert!(ios >= QD as u64);
        self.to_submit.set(ios - QD as u64);
        self.outstanding.set(QD);
        for slot in self.slots.iter() {
            self.submit(slot);
        }
        poll_fn(|cx| {
            if self.outstanding.get() == 0 {
                Poll::Ready(())
            } else {
                let mut w = self.waker.borrow_mut();
                if w.is_none() {
                    *w = Some(cx.waker().clone());
                }
                Poll::Pending
            }
        })
        .await;
        self.waker.borrow_mut().take();
    }
}

fn on_done(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success);
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

/// Warm up, then count the reactor thread's allocations over `MEASURED` I/Os on `name`.
fn allocations_for(name: &'static str) -> (u64, u64) {
    on_core(0, Duration::from_secs(120), move || async move {
        let desc = keel_bdev::open(name, true, |_| {}).unwrap();
        let bdev = desc.bdev().clone();
        let bs = u64::from(bdev.info().block_size);
        let lp = Box::new(Loop {
            ch: desc.get_io_channel().unwrap(),
            bufs: vec![0u8; QD * IO_SIZE].into_boxed_slice(),
            slots: Box::new([]),
            blocks_per_io: IO_SIZE as u64 / bs,
            span: bdev.info().num_blocks,
            to_submit: Cell::new(0),
            outstanding: Cell::new(0),
            submitted: Cell::new(0),
            waker: RefCell::new(None),
        });
        let lp = Box::into_raw(lp);
        // SAFETY: `lp` was just leaked from a Box; the slots point back at it and it is freed
        // below, after the last run completed.
        unsafe {
            (*lp).slots = (0..QD).map(|idx| Slot { lp, idx }).collect();
        }
        // SAFETY: as above; shared access only from here on.
        let l = unsafe { &*lp };
        l.run(WARMUP).await;
        // The counter sees an allocation made on this thread (so a 0 below means something).
        COUNTING.with(|c| c.set(true));
        drop(std::hint::black_box(Box::new(0u64)));
        COUNTING.with(|c| c.set(false));
        assert_eq!(
            ALLOCATIONS.swap(0, Ordering::SeqCst),
            1,
            "counting allocator self-check"
        );
        ALLOCATIONS.store(0, Ordering::SeqCst);
        COUNTING.with(|c| c.set(true));
        l.run(MEASURED).await;
        COUNTING.with(|c| c.set(false));
        let allocs = ALLOCATIONS.load(Ordering::SeqCst);
        let ios = l.submitted.get();
        // SAFETY: no I/O is in flight; reclaim the loop leaked above.
        drop(unsafe { Box::from_raw(lp) });
        drop(desc);
        (allocs, ios)
    })
}

#[test]
fn steady_state_io_allocates_nothing() {
    runtime("0x1", false);
    null::create("na_null", 1 << 20, 512, None).unwrap();
    malloc::create("na_malloc", 16384, 512, None).unwrap(); // 8 MiB
    for name in ["na_null", "na_malloc"] {
        let (allocs, ios) = allocations_for(name);
        println!("{name}: {allocs} allocations over {MEASURED} I/Os");
        assert_eq!(ios, WARMUP + MEASURED);
        assert_eq!(allocs, 0, "{name}: heap allocations in steady state");
    }
    on_core(0, Duration::from_secs(20), || async {
        keel_bdev::unregister("na_null").await.unwrap();
        keel_bdev::unregister("na_malloc").await.unwrap();
    });
}
