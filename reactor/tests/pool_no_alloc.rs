//! The pool's hot path (alloc and free on the home thread) never touches the global allocator
//! once warm. A counting `#[global_allocator]` (in its own test binary, so it affects nothing
//! else) counts the allocations made by the measuring thread.

use keel_reactor::pool::{self, DmaBuf};
use keel_testkit::counting::{count_sync, Counting};

/// Counts the measuring thread's allocator calls (the test kit's counting allocator).
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
    let ((), c) = count_sync(|| {
        let mut cycles = 0;
        while cycles < 100_000 {
            round(&mut held);
            cycles += SIZES.len() * DEPTH;
        }
        // Single alloc/free pairs too (a slice goes partial → dirty → partial every time).
        for i in 0..100_000 {
            drop(pool::alloc(SIZES[i % SIZES.len()]).expect("pool has room"));
        }
    });
    assert_eq!(
        c.allocations + c.deallocations,
        0,
        "global allocator calls on the hot path"
    );
    assert_eq!(pool::stats().pages, stats.pages, "no growth once warm");
}

#[test]
fn counting_allocator_counts() {
    // Guards the test above against a counter that cannot count.
    let (v, c) = count_sync(|| std::hint::black_box(vec![1u8; 64]));
    drop(v);
    assert!(c.allocations >= 1);
}
