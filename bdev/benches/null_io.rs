//! Local bdev path throughput on one reactor core: a closed loop of 128 outstanding 4 KiB reads
//! (each completion callback resubmits), null bdev, malloc bdev, and null bdev with a latency
//! histogram enabled. Criterion reports
//! elements/s = IOPS. Run: `cargo bench -p keel-bdev --bench null_io`.
#![expect(missing_docs)] // criterion_group! makes an undocumented `pub fn`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_bdev::modules::{malloc, null};
use keel_bdev::{IoChannel, IoStatus, IoVec};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::sync::mpsc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const QD: usize = 128;
const IO_SIZE: usize = 4096;

/// A closed loop: `QD` slots with a buffer each, resubmitting on completion.
struct Loop {
    ch: IoChannel,
    bufs: Box<[u8]>,
    slots: Box<[Slot]>,
    blocks_per_io: u64,
    span_ios: u64,
    to_submit: Cell<u64>,
    outstanding: Cell<usize>,
    next: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

struct Slot {
    lp: *const Loop,
    idx: usize,
}

impl Loop {
    fn submit(&self, slot: &Slot) {
        let n = self.next.get();
        self.next.set(n.wrapping_add(1));
        let off = (n % self.span_ios) * self.blocks_per_io;
        // SAFETY: each slot owns its 4 KiB of `bufs` (alive as long as the loop), one I/O each.
        let v = unsafe {
            IoVec::from_raw(
                self.bufs.as_ptr().add(slot.idx * IO_SIZE).cast_mut(),
                IO_SIZE,
            )
        };
        self.ch
            .read(
                &[v],
                off,
                self.blocks_per_io,
                on_done,
                slot as *const Slot as usize,
            )
            .expect("submit");
    }

    /// Run `ios` reads (at least `QD`) and return how long they took.
    async fn run(&self, ios: u64) -> Duration {
        let ios = ios.max(QD as u64);
        let t0 = Instant::now();
        self.to_submit.set(ios - QD as u64);
        self.outstanding.set(QD);
        for slot in self.slots.iter() {
            self.submit(slot);
        }
        poll_fn(|cx| {
            if self.outstanding.get() == 0 {
                Poll::Ready(())
            } else {
                self.waker
                    .borrow_mut()
                    .get_or_insert_with(|| cx.waker().clone());
                Poll::Pending
            }
        })
        .await;
        self.waker.borrow_mut().take();
        t0.elapsed()
    }
}

fn on_done(ctx: usize, status: IoStatus) {
    debug_assert_eq!(status, IoStatus::Success);
    // SAFETY: ctx is a `Slot` of a loop that lives until all of its I/O completed.
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

/// Run `iters` reads on bdev `name` from core 0 and return the time they took there.
fn timed(name: &'static str, iters: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(0, move || async move {
        let desc = keel_bdev::open(name, false, |_| {}).expect("open");
        let info = desc.bdev().info().clone();
        let blocks_per_io = IO_SIZE as u64 / u64::from(info.block_size);
        let lp = Box::into_raw(Box::new(Loop {
            ch: desc.get_io_channel().expect("channel"),
            bufs: vec![0u8; QD * IO_SIZE].into_boxed_slice(),
            slots: Box::new([]),
            blocks_per_io,
            span_ios: info.num_blocks / blocks_per_io,
            to_submit: Cell::new(0),
            outstanding: Cell::new(0),
            next: Cell::new(0),
            waker: RefCell::new(None),
        }));
        // SAFETY: `lp` was just leaked from a Box; slots point back at it; freed below after
        // the run, when no I/O is in flight.
        unsafe { (*lp).slots = (0..QD).map(|idx| Slot { lp, idx }).collect() };
        // SAFETY: as above.
        let elapsed = unsafe { &*lp }.run(iters).await;
        // SAFETY: as above.
        drop(unsafe { Box::from_raw(lp) });
        let _ = tx.send(elapsed);
    })
    .expect("spawn on core 0");
    rx.recv_timeout(Duration::from_secs(300))
        .expect("benchmark run finished")
}

fn bench(c: &mut Criterion) {
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").expect("a literal, valid mask"),
        interrupt_mode: false,
        pin_threads: true,
    };
    let rt = Runtime::start(opts, || {}).expect("runtime");
    null::create("bench_null", 1 << 24, 512, None).expect("null bdev");
    malloc::create("bench_malloc", 65536, 4096, None).expect("malloc bdev"); // 256 MiB
                                                                             // touch the malloc memory once so page faults stay out of the measurement
    timed("bench_malloc", 65536);

    let mut g = c.benchmark_group("bdev_qd128_4k_read");
    g.throughput(Throughput::Elements(1));
    g.bench_function("null", |b| {
        b.iter_custom(|iters| timed("bench_null", iters))
    });
    g.bench_function("malloc", |b| {
        b.iter_custom(|iters| timed("bench_malloc", iters))
    });
    // The same null bdev path with a latency histogram enabled (bdev_enable_histogram).
    null::create("bench_null_hist", 1 << 24, 512, None).expect("null bdev");
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(0, move || async move {
        let b = keel_bdev::get_bdev("bench_null_hist").expect("bdev");
        let on = b
            .set_histogram(Some(keel_bdev::histogram::HistogramOpts::default()))
            .await;
        let _ = tx.send(on.is_ok());
    })
    .expect("spawn on core 0");
    assert!(rx.recv_timeout(Duration::from_secs(10)).expect("enabled"));
    g.bench_function("null_histogram", |b| {
        b.iter_custom(|iters| timed("bench_null_hist", iters))
    });
    g.finish();
    keel_reactor::request_shutdown();
    rt.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
