//! The pool's hot path (alloc and free on the home thread) never touches the global allocator
//! once warm. A counting `#[global_allocator]` (in its own test binary, so it affects nothing
//! else) counts the allocations made by the measuring thread.

use keel_reactor::pool::{self, DmaBuf};
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

struct Counting;

thread_local! {
    /// Whether to count this thread's allocator calls, and how many were counted (const, no
    /// destructor: usable inside the allocator).
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<usize> = const { Cell::new(0) };
}

fn note() {
    if COUNTING.with(Cell::get) {
        CALLS.with(|c| c.set(c.get() + 1));
    }
}

// SAFETY: forwards every call to the system allocator unchanged; only counts.
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
        note();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// Sizes spanning small, page-sized and the largest classes.
const SIZES: [usize; 6] = [512, 1500, 4096, 8192, 65536, 128 * 1024];
/// Buffers held at once per size during the cycles.
const DEPTH: usize = 8;

/// One round: take `DEPTH` buffers of each size into `held`, then free them all.
fn round(held: &mut Vec<DmaBuf>) {
    for &size in &SIZES {
        for _ in 0..DEPTH {
            let mut b = pool::alloc(size).expect("pool has room");
            b.as_mut_slice()[0] = 1;
            held.push(b);
        }
    }
    held.clear();
}

#[test]
fn warm_alloc_and_free_do_not_allocate() {
    let mut held = Vec::with_capacity(SIZES.len() * DEPTH);
    // Warm up: create the domain, map its page(s), carve the slices.
    for _ in 0..4 {
        round(&mut held);
    }
    let stats = pool::stats();
    assert_eq!(stats.objects_in_use, 0);
    COUNTING.with(|c| c.set(true));
    let mut cycles = 0;
    while cycles < 100_000 {
        round(&mut held);
        cycles += SIZES.len() * DEPTH;
    }
    // Single alloc/free pairs too (a slice goes partial → dirty → partial every time).
    for i in 0..100_000 {
        drop(pool::alloc(SIZES[i % SIZES.len()]).expect("pool has room"));
    }
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        CALLS.with(Cell::get),
        0,
        "global allocations on the hot path"
    );
    assert_eq!(pool::stats().pages, stats.pages, "no growth once warm");
}

#[test]
fn counting_allocator_counts() {
    // Guards the test above against a counter that cannot count.
    COUNTING.with(|c| c.set(true));
    let v = std::hint::black_box(vec![1u8; 64]);
    COUNTING.with(|c| c.set(false));
    drop(v);
    assert!(CALLS.with(Cell::get) >= 1);
}
