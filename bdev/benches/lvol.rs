//! Thin lvol overhead on one reactor core. Criterion reports elements/s = IOPS.
//! - `randwrite_qd32_4k/raw_malloc` vs `randwrite_qd32_4k/lvol_allocated`: 4 KiB random writes
//!   at QD 32 on a raw malloc bdev and on a thin volume (4 MiB clusters, all allocated) over an
//!   identical malloc bdev. Goal: lvol ≤ 5% slower. `delay_passthrough` (a delay bdev with zero
//!   latency over a third malloc) shows what any stacked bdev costs on this path.
//! - `first_touch/alloc_1mib_cluster`: QD 1 writes that each land in a never-written 1 MiB
//!   cluster (allocation, zero-fill, map page write, publish), i.e. the cost per allocation.
//!
//! Run: `cargo bench -p keel-bdev --bench lvol`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use keel_bdev::lvol::{self, ClearMethod};
use keel_bdev::modules::malloc;
use keel_bdev::{IoChannel, IoStatus, IoVec};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::sync::mpsc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const IO_SIZE: usize = 4096;
const MIB: u64 = 1 << 20;

/// A closed loop of `qd` slots writing 4 KiB at random (or sequential-cluster) offsets.
struct Loop {
    ch: IoChannel,
    bufs: Box<[u8]>,
    slots: Box<[Slot]>,
    blocks_per_io: u64,
    span_ios: u64,
    /// Stride in I/Os between consecutive writes (0: random).
    stride: u64,
    to_submit: Cell<u64>,
    outstanding: Cell<usize>,
    rng: Cell<u64>,
    next: Cell<u64>,
    waker: RefCell<Option<Waker>>,
}

struct Slot {
    lp: *const Loop,
    idx: usize,
}

impl Loop {
    fn offset(&self) -> u64 {
        if self.stride > 0 {
            let n = self.next.get();
            self.next.set(n + 1);
            return (n * self.stride % self.span_ios) * self.blocks_per_io;
        }
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.span_ios) * self.blocks_per_io
    }

    fn submit(&self, slot: &Slot) {
        // SAFETY: each slot owns its 4 KiB of `bufs` (alive as long as the loop), one I/O each.
        let v = unsafe {
            IoVec::from_raw(
                self.bufs.as_ptr().add(slot.idx * IO_SIZE).cast_mut(),
                IO_SIZE,
            )
        };
        self.ch
            .write(
                &[v],
                self.offset(),
                self.blocks_per_io,
                on_done,
                slot as *const Slot as usize,
            )
            .expect("submit");
    }

    async fn run(&self, ios: u64) -> Duration {
        let qd = self.slots.len() as u64;
        let ios = ios.max(qd);
        let t0 = Instant::now();
        self.to_submit.set(ios - qd);
        self.outstanding.set(self.slots.len());
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
    assert_eq!(status, IoStatus::Success);
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

/// Run `iters` writes on bdev `name` from core 0 (QD `qd`, `stride` as in [`Loop`]).
fn timed(name: String, iters: u64, qd: usize, stride: u64) -> Duration {
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(0, move || async move {
        let desc = keel_bdev::open(&name, true, |_| {}).expect("open");
        let info = desc.bdev().info().clone();
        let blocks_per_io = IO_SIZE as u64 / u64::from(info.block_size);
        let lp = Box::into_raw(Box::new(Loop {
            ch: desc.get_io_channel().expect("channel"),
            bufs: vec![0x5au8; qd * IO_SIZE].into_boxed_slice(),
            slots: Box::new([]),
            blocks_per_io,
            span_ios: info.num_blocks / blocks_per_io,
            stride,
            to_submit: Cell::new(0),
            outstanding: Cell::new(0),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            next: Cell::new(0),
            waker: RefCell::new(None),
        }));
        // SAFETY: `lp` was just leaked from a Box; slots point back at it; freed below after
        // the run, when no I/O is in flight.
        unsafe { (*lp).slots = (0..qd).map(|idx| Slot { lp, idx }).collect() };
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

/// Run a future on core 0 and return its output.
fn on_core0<T: Send + 'static, Fut: Future<Output = T> + 'static>(
    f: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(0, move || async move {
        let _ = tx.send(f().await);
    })
    .expect("spawn");
    rx.recv_timeout(Duration::from_secs(300)).expect("done")
}

/// A fresh thin volume of `mib` MiB on a fresh 1 MiB-cluster store (for first-touch runs).
fn fresh_first_touch_volume(round: u32, mib: u64) -> String {
    on_core0(move || async move {
        if let Ok(s) = lvol::find_lvstore(None, Some("bench_ft")) {
            lvol::destroy_lvstore(&s).await.expect("destroy");
        }
        let _ = round;
        let s = lvol::create_lvstore("bench_ft_base", "bench_ft", Some(MIB), ClearMethod::None)
            .await
            .expect("store");
        let v = lvol::create_volume(&s, "ft", mib * MIB, true)
            .await
            .expect("vol");
        v.uuid.to_string()
    })
}

fn bench(c: &mut Criterion) {
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").unwrap(),
        interrupt_mode: false,
        pin_threads: true,
    };
    let rt = Runtime::start(opts, || {}).expect("runtime");
    // 256 MiB each, 4 KiB blocks
    malloc::create("bench_raw", 65536, 4096, None).expect("malloc");
    malloc::create("bench_lvs_base", 65536, 4096, None).expect("malloc");
    malloc::create("bench_ft_base", 65536, 4096, None).expect("malloc");
    malloc::create("bench_delay_base", 65536, 4096, None).expect("malloc");
    on_core0(|| async {
        keel_bdev::modules::delay::create(&keel_bdev::modules::delay::DelayConfig {
            base_bdev_name: "bench_delay_base".into(),
            name: "bench_delay".into(),
            avg_read_latency: 0,
            p99_read_latency: 0,
            avg_write_latency: 0,
            p99_write_latency: 0,
            uuid: None,
        })
        .map(|_| ())
    })
    .expect("delay bdev");
    let vol = on_core0(|| async {
        let s = lvol::create_lvstore("bench_lvs_base", "bench_lvs", None, ClearMethod::None)
            .await
            .expect("store");
        let size = (s.total_clusters - 1) * s.cluster_size;
        let v = lvol::create_volume(&s, "thin", size, true)
            .await
            .expect("vol");
        v.uuid.to_string()
    });
    // allocate every cluster of the volume, and touch the raw bdev's memory: page faults and
    // allocations stay out of the steady-state measurement
    timed(vol.clone(), 65536, 1, 1024);
    timed("bench_raw".into(), 65536, 1, 1);
    timed("bench_delay".into(), 65536, 1, 1);
    timed(vol.clone(), 65536, 1, 1);

    let mut g = c.benchmark_group("randwrite_qd32_4k");
    g.throughput(Throughput::Elements(1));
    g.bench_function("raw_malloc", |b| {
        b.iter_custom(|iters| timed("bench_raw".into(), iters, 32, 0))
    });
    g.bench_function("delay_passthrough", |b| {
        b.iter_custom(|iters| timed("bench_delay".into(), iters, 32, 0))
    });
    let v2 = vol.clone();
    g.bench_function("lvol_allocated", |b| {
        b.iter_custom(|iters| timed(v2.clone(), iters, 32, 0))
    });
    g.finish();

    let mut g = c.benchmark_group("first_touch");
    g.throughput(Throughput::Elements(1));
    g.sample_size(10);
    let round = Cell::new(0u32);
    g.bench_function("alloc_1mib_cluster", |b| {
        b.iter_custom(|iters| {
            // each write lands in its own never-written cluster (stride = one cluster)
            let mut total = Duration::ZERO;
            let mut left = iters;
            while left > 0 {
                let n = left.min(200);
                round.set(round.get() + 1);
                let v = fresh_first_touch_volume(round.get(), 200);
                total += timed(v, n, 1, MIB / IO_SIZE as u64);
                left -= n;
            }
            total
        })
    });
    g.finish();
    keel_reactor::request_shutdown();
    rt.join();
}

criterion_group!(benches, bench);
criterion_main!(benches);
