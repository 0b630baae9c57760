//! The engine end to end on one reactor: short runs (~0.3 s) against null and malloc bdevs with
//! `--verify`, and a deliberately corrupted block that a verifying read run must report with
//! its LBA.

use keel_bdev::modules::{malloc, null};
use keel_bdev::{IoStatus, IoVec};
use keel_perf::engine::{self, RunResult};
use keel_perf::workload::verify::Corruption;
use keel_perf::workload::{BdevTargetFactory, Distribution, Pattern, WorkloadSpec};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::Cell;
use std::future::poll_fn;
use std::sync::{mpsc, Arc, OnceLock};
use std::task::Poll;
use std::time::Duration;

const CORE: u32 = 0;

fn runtime() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let opts = RuntimeOptions {
            cpumask: CpuMask::parse("0x1").unwrap(),
            interrupt_mode: false,
            pin_threads: false,
        };
        std::mem::forget(Runtime::start(opts, || {}).expect("runtime starts"));
    });
}

/// Run `make()`'s future on the reactor and wait for its output.
fn on_core<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    make: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(CORE, move || async move {
        let _ = tx.send(make().await);
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(30))
        .expect("reactor answers")
}

fn spec(pattern: Pattern) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(pattern);
    s.queue_depth = 8;
    s.run_time = Duration::from_millis(300);
    s.verify = true;
    s
}

fn run(bdev: &str, spec: &WorkloadSpec) -> RunResult {
    let mut samples = 0;
    let r = engine::run(
        Arc::new(BdevTargetFactory { name: bdev.into() }),
        spec,
        &[CORE],
        |_| samples += 1,
    )
    .expect("run succeeds");
    assert_eq!(r.jobs.len(), 1);
    r
}

#[test]
fn null_bdev_with_verify_runs_clean() {
    runtime();
    on_core(|| async { null::create("PerfNull", 1 << 18, 4096, None).map(|_| ()) }).unwrap();
    let res = run("PerfNull", &spec(Pattern::RandRw));
    let t = res.total();
    assert!(t.read.ios > 0 && t.write.ios > 0, "both directions ran");
    assert_eq!((t.io_errors, t.verify_errors), (0, 0));
    assert_eq!(t.verified_blocks, 0, "a null bdev returns no data to check");
    assert!(
        t.runtime_ns >= 250_000_000 && t.runtime_ns <= 400_000_000,
        "{}",
        t.runtime_ns
    );
    assert!(!res.has_errors());
    assert!(res.target.contains("PerfNull"));
}

#[test]
fn malloc_bdev_with_verify_checks_reads() {
    runtime();
    on_core(|| async { malloc::create("PerfMalloc", 2048, 512, None).map(|_| ()) }).unwrap();
    let mut s = spec(Pattern::RandRw);
    s.distribution = Distribution::Zipf(0.9);
    let res = run("PerfMalloc", &s);
    let t = res.total();
    assert!(t.read.ios > 0 && t.write.ios > 0);
    assert_eq!(
        (t.io_errors, t.verify_errors),
        (0, 0),
        "{:?}",
        t.corruptions
    );
    assert!(
        t.verified_blocks > 0,
        "reads of written blocks were checked"
    );
    // Latency was recorded for every counted I/O.
    assert_eq!(t.read.hist.len(), t.read.ios);
}

/// Read `lba`'s block, flip one byte, write it back, through a channel on the reactor.
async fn corrupt_block(bdev: &str, lba: u64, block: usize) {
    let desc = keel_bdev::open(bdev, true, |_| {}).unwrap();
    let ch = desc.get_io_channel().unwrap();
    let mut buf = keel_reactor::pool::alloc(block).unwrap();
    let done: Cell<Option<IoStatus>> = Cell::new(None);
    fn cb(ctx: usize, st: IoStatus) {
        // SAFETY: ctx is the address of `done`, alive until the wait below returns.
        unsafe { &*(ctx as *const Cell<Option<IoStatus>>) }.set(Some(st));
    }
    let wait = || {
        poll_fn(|cx| match done.take() {
            Some(st) => Poll::Ready(st),
            None => {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
    };
    let ctx = &done as *const _ as usize;
    // SAFETY: `buf` outlives both I/Os, each awaited before the buffer is touched.
    let iov = unsafe { IoVec::from_raw(buf.as_mut_ptr(), block) };
    ch.read(&[iov], lba, 1, cb, ctx).unwrap();
    assert_eq!(wait().await, IoStatus::Success);
    buf.as_mut_slice()[1000] ^= 0x40;
    ch.write(&[iov], lba, 1, cb, ctx).unwrap();
    assert_eq!(wait().await, IoStatus::Success);
}

/// The `--verify` acceptance test: a block corrupted behind keel-perf's back is reported, with
/// its LBA, and makes the run fail.
#[test]
fn verify_catches_a_deliberately_corrupted_block() {
    runtime();
    on_core(|| async { malloc::create("PerfCorrupt", 256, 4096, None).map(|_| ()) }).unwrap();
    // Fill the device: sequential writes, 4 lanes of 64 blocks, many passes in 0.3 s.
    let mut w = spec(Pattern::Write);
    w.queue_depth = 4;
    let res = run("PerfCorrupt", &w);
    assert!(
        res.total().write.ios >= 256,
        "every block written at least once"
    );
    assert!(!res.has_errors());

    // A clean verifying read pass first: no false alarm.
    let mut r = spec(Pattern::Read);
    r.queue_depth = 4;
    let clean = run("PerfCorrupt", &r).total();
    assert_eq!(clean.verify_errors, 0, "{:?}", clean.corruptions);
    assert!(clean.verified_blocks >= 256);

    on_core(|| corrupt_block("PerfCorrupt", 77, 4096));
    let res = run("PerfCorrupt", &r);
    let t = res.total();
    assert!(res.has_errors());
    assert!(t.verify_errors >= 1);
    assert!(
        t.corruptions
            .iter()
            .all(|c| c.lba == 77 && matches!(c.what, Corruption::BadCrc { .. })),
        "{:?}",
        t.corruptions
    );
    assert!(!t.corruptions.is_empty());
}
