//! Zero heap allocations per I/O in steady state (docs/ARCHITECTURE.md §3.6), shown with a counting global
//! allocator: a closed loop of 128 outstanding 4 KiB reads and writes (each completion callback
//! resubmits) on a 1-core runtime, warmed up, then 200k I/Os with every allocation made on the
//! reactor thread counted — reactor loop, pollers, bdev layer, module and callbacks included.
//! The allocator and the loop are the test kit's (`keel_testkit`), shared with the lvol and raid tests.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::modules::{malloc, null};
use keel_testkit::closed_loop::{ClosedLoop, Op};
use keel_testkit::counting::{assert_none, count};
use keel_testkit::reactors::{on_core, start as runtime};
use std::time::Duration;

/// Counts the reactor thread's allocations (the test kit's counting allocator).
#[global_allocator]
static GLOBAL: keel_testkit::counting::Counting = keel_testkit::counting::Counting;

const QD: usize = 128;
const IO_SIZE: usize = 4096;
const WARMUP: u64 = 20_000;
const MEASURED: u64 = 200_000;

/// Warm up, then count the reactor thread's allocations over `MEASURED` I/Os on `name`:
/// alternating reads and writes walking the bdev 4 KiB at a time.
fn count_steady_state(name: &'static str) {
    on_core(0, Duration::from_secs(120), move || async move {
        let desc = keel_bdev::open(name, true, |_| {}).unwrap();
        let bdev = desc.bdev().clone();
        let blocks = IO_SIZE as u64 / u64::from(bdev.info().block_size);
        let ios_in_span = bdev.info().num_blocks / blocks;
        let lp = ClosedLoop::new(
            desc.get_io_channel().unwrap(),
            QD,
            IO_SIZE,
            Box::new(move |seq, _| Op {
                write: seq % 2 == 1,
                lba: (seq % ios_in_span) * blocks,
                blocks,
            }),
        );
        lp.run(WARMUP).await;
        let (_, c) = count(lp.run(MEASURED)).await;
        println!("{name}: {} allocations over {MEASURED} I/Os", c.allocations);
        assert_eq!(lp.submitted(), WARMUP + MEASURED);
        assert_none(name, &c);
        drop(lp);
        drop(desc);
    })
}

#[test]
fn steady_state_io_allocates_nothing() {
    runtime("0x1", false);
    null::create("na_null", 1 << 20, 512, None).unwrap();
    malloc::create("na_malloc", 16384, 512, None).unwrap(); // 8 MiB
    for name in ["na_null", "na_malloc"] {
        count_steady_state(name);
    }
    on_core(0, Duration::from_secs(20), || async {
        keel_bdev::unregister("na_null").await.unwrap();
        keel_bdev::unregister("na_malloc").await.unwrap();
    });
}
