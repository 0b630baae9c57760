//! Local bdev path throughput on one reactor core: a closed loop of 128 outstanding 4 KiB reads
//! (each completion callback resubmits), null bdev, malloc bdev, and null bdev with a latency
//! histogram enabled. Criterion reports
//! elements/s = IOPS. Run: `cargo bench -p keel-bdev --bench null_io`.
#![expect(missing_docs)] // criterion_group! makes an undocumented `pub fn`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_bdev::modules::{malloc, null};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use keel_testkit::closed_loop::{ClosedLoop, Op};
use keel_testkit::reactors::on_core;
use std::sync::mpsc;
use std::time::Duration;

const QD: usize = 128;
const IO_SIZE: usize = 4096;

/// Run `iters` reads (at least `QD`) on bdev `name` from core 0, in a closed loop of `QD` 4 KiB
/// reads walking the bdev, and return the time they took there.
fn timed(name: &'static str, iters: u64) -> Duration {
    on_core(0, Duration::from_secs(300), move || async move {
        let desc = keel_bdev::open(name, false, |_| {}).expect("open");
        let info = desc.bdev().info().clone();
        let blocks_per_io = IO_SIZE as u64 / u64::from(info.block_size);
        let span_ios = info.num_blocks / blocks_per_io;
        let ch = desc.get_io_channel().expect("channel");
        let lp = ClosedLoop::new(ch, QD, IO_SIZE, move |seq, _| Op {
            write: false,
            lba: (seq % span_ios) * blocks_per_io,
            blocks: blocks_per_io,
        });
        let elapsed = lp.run(iters.max(QD as u64)).await;
        drop(lp);
        elapsed
    })
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
