//! Thin lvol overhead on one reactor core. Criterion reports elements/s = IOPS.
//! - `randwrite_qd32_4k/raw_malloc` vs `randwrite_qd32_4k/lvol_allocated`: 4 KiB random writes
//!   at QD 32 on a raw malloc bdev and on a thin volume (4 MiB clusters, all allocated) over an
//!   identical malloc bdev. Goal: lvol ≤ 5% slower. `delay_passthrough` (a delay bdev with zero
//!   latency over a third malloc) shows what any stacked bdev costs on this path.
//! - `first_touch/alloc_1mib_cluster`: QD 1 writes that each land in a never-written 1 MiB
//!   cluster (allocation, zero-fill, map page write, publish), i.e. the cost per allocation.
//! - `first_touch_stall` (printed, not a criterion group): on the same core, volume A (fully
//!   allocated) runs 4 KiB random reads at QD 8 for a fixed time while volume B (same store,
//!   thin) takes first-touch writes at a steady rate, each to a new cluster. Prints A's latency
//!   distribution with and without B's allocations, i.e. what allocations cost other I/O. The
//!   stores are created without a clear (every new cluster is zero-filled, in bounded chunks),
//!   except the `_cleared` case (clear by unmap: new clusters are known to read zeroes and
//!   need no fill).
//!
//! Run: `cargo bench -p keel-lvol --bench lvol` (`-- first_touch_stall` for the stall report).
#![expect(missing_docs)] // criterion_group! makes an undocumented `pub fn`

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use hdrhistogram::Histogram;
use keel_bdev::modules::malloc;
use keel_bdev::{IoChannel, IoStatus, IoVec};
use keel_lvol::{self as lvol, ClearMethod};
use keel_reactor::PollStatus;
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use keel_testkit::closed_loop::{ClosedLoop, Op};
use keel_testkit::reactors::on_core;
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const IO_SIZE: usize = 4096;
const MIB: u64 = 1 << 20;

/// Run `iters` writes (at least `qd`) on bdev `name` from core 0, in a closed loop of `qd`
/// 4 KiB writes, and return the time they took there. `stride`: I/Os between consecutive
/// writes (0: random offsets).
fn timed(name: String, iters: u64, qd: usize, stride: u64) -> Duration {
    on_core(0, Duration::from_secs(300), move || async move {
        let desc = keel_bdev::open(&name, true, |_| {}).expect("open");
        let info = desc.bdev().info().clone();
        let blocks_per_io = IO_SIZE as u64 / u64::from(info.block_size);
        let span_ios = info.num_blocks / blocks_per_io;
        let ch = desc.get_io_channel().expect("channel");
        let mut lp = ClosedLoop::new(ch, qd, IO_SIZE, move |seq, random| Op {
            write: true,
            lba: if stride > 0 {
                (seq * stride % span_ios) * blocks_per_io
            } else {
                (random % span_ios) * blocks_per_io
            },
            blocks: blocks_per_io,
        });
        lp.fill(0x5a);
        let elapsed = lp.run(iters.max(qd as u64)).await;
        drop(lp);
        elapsed
    })
}

/// Run a future on core 0 and return its output.
fn on_core0<T: Send + 'static, Fut: Future<Output = T> + 'static>(
    f: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    on_core(0, Duration::from_secs(300), f)
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
        cpumask: CpuMask::parse("0x1").expect("a literal, valid mask"),
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
    if stall_wanted() {
        stall_report();
    }
    keel_reactor::request_shutdown();
    rt.join();
}

/// How long each side of the stall report runs.
const STALL_RUN: Duration = Duration::from_secs(1);
/// Queue depth of volume A's reads in the stall report.
const STALL_QD: usize = 8;
/// Size of volume A in the stall report (fully allocated before measuring).
const STALL_A_MIB: u64 = 256;
/// Size of the stall report's base malloc bdev.
const STALL_BASE_MIB: u64 = 2048;
/// (cluster size in MiB, first-touch writes per second on B, how the store is cleared) for each
/// stall report line.
const STALL_CASES: [(u64, u32, ClearMethod); 4] = [
    (1, 200, ClearMethod::None),
    (1, 1000, ClearMethod::None),
    (4, 200, ClearMethod::None),
    (4, 200, ClearMethod::Unmap),
];

/// Whether the command line's filter (if any) selects `first_touch_stall`.
fn stall_wanted() -> bool {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--list") {
        return false;
    }
    let filters: Vec<&String> = args.iter().filter(|a| !a.starts_with('-')).collect();
    filters.is_empty()
        || filters
            .iter()
            .any(|f| "first_touch_stall".contains(f.as_str()) || f.contains("first_touch_stall"))
}

/// A histogram of latencies in ns, 1 ns .. 100 s, 3 significant digits.
fn latency_histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 100_000_000_000, 3).expect("histogram bounds")
}

/// Wait until `done()`, parking the task's waker in `waker` for the completion callback.
async fn wait_for(waker: &RefCell<Option<Waker>>, done: impl Fn() -> bool) {
    poll_fn(|cx| {
        if done() {
            Poll::Ready(())
        } else {
            *waker.borrow_mut() = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await;
    waker.borrow_mut().take();
}

/// Volume A's side of the stall report: a closed loop of 4 KiB random reads until `deadline`,
/// recording every I/O's latency.
struct ReadLoop {
    ch: IoChannel,
    bufs: Box<[u8]>,
    slots: Box<[ReadSlot]>,
    blocks_per_io: u64,
    span_ios: u64,
    deadline: Cell<Instant>,
    outstanding: Cell<usize>,
    rng: Cell<u64>,
    hist: RefCell<Histogram<u64>>,
    waker: RefCell<Option<Waker>>,
}

struct ReadSlot {
    lp: *const ReadLoop,
    idx: usize,
    started: Cell<Instant>,
}

impl ReadLoop {
    fn submit(&self, slot: &ReadSlot, now: Instant) {
        let mut x = self.rng.get();
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng.set(x);
        let offset = (x.wrapping_mul(0x2545_f491_4f6c_dd1d) % self.span_ios) * self.blocks_per_io;
        // SAFETY: each slot owns its 4 KiB of `bufs` (alive as long as the loop), one I/O each.
        let v = unsafe {
            IoVec::from_raw_parts(
                self.bufs.as_ptr().add(slot.idx * IO_SIZE).cast_mut(),
                IO_SIZE,
            )
        };
        slot.started.set(now);
        self.ch
            .read(
                &[v],
                offset,
                self.blocks_per_io,
                on_read_done,
                slot as *const ReadSlot as usize,
            )
            .expect("submit read");
    }
}

fn on_read_done(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success);
    // SAFETY: ctx is a `ReadSlot` of a loop that lives until all of its I/O completed.
    let slot = unsafe { &*(ctx as *const ReadSlot) };
    // SAFETY: as above.
    let lp = unsafe { &*slot.lp };
    let now = Instant::now();
    let ns = now.duration_since(slot.started.get()).as_nanos() as u64;
    lp.hist.borrow_mut().saturating_record(ns);
    if now < lp.deadline.get() {
        lp.submit(slot, now);
    } else {
        lp.outstanding.set(lp.outstanding.get() - 1);
        if lp.outstanding.get() == 0 {
            if let Some(w) = lp.waker.borrow().as_ref() {
                w.wake_by_ref();
            }
        }
    }
}

/// Volume B's side of the stall report: one 4 KiB write per poller tick, each to the first
/// block of the next never-written cluster, recording each write's latency.
struct FirstTouch {
    ch: IoChannel,
    buf: Box<[u8]>,
    slots: Box<[WriteSlot]>,
    blocks_per_io: u64,
    blocks_per_cluster: u64,
    issued: Cell<usize>,
    inflight: Cell<usize>,
    hist: RefCell<Histogram<u64>>,
    waker: RefCell<Option<Waker>>,
}

/// One per cluster of B (so one per write).
struct WriteSlot {
    ft: *const FirstTouch,
    started: Cell<Instant>,
}

impl FirstTouch {
    /// Issue the next first-touch write; false once every cluster of B was written.
    fn issue(&self) -> bool {
        let n = self.issued.get();
        let Some(slot) = self.slots.get(n) else {
            return false;
        };
        self.issued.set(n + 1);
        self.inflight.set(self.inflight.get() + 1);
        // SAFETY: writes only read `buf` (alive as long as `self`); concurrent writes may share it.
        let v = unsafe { IoVec::from_raw_parts(self.buf.as_ptr().cast_mut(), IO_SIZE) };
        slot.started.set(Instant::now());
        self.ch
            .write(
                &[v],
                n as u64 * self.blocks_per_cluster,
                self.blocks_per_io,
                on_first_touch_done,
                slot as *const WriteSlot as usize,
            )
            .expect("submit write");
        true
    }
}

fn on_first_touch_done(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success);
    // SAFETY: ctx is a `WriteSlot` of a `FirstTouch` that lives until all of its I/O completed.
    let slot = unsafe { &*(ctx as *const WriteSlot) };
    // SAFETY: as above.
    let ft = unsafe { &*slot.ft };
    let ns = slot.started.get().elapsed().as_nanos() as u64;
    ft.hist.borrow_mut().saturating_record(ns);
    ft.inflight.set(ft.inflight.get() - 1);
    if ft.inflight.get() == 0 {
        if let Some(w) = ft.waker.borrow().as_ref() {
            w.wake_by_ref();
        }
    }
}

/// What one side of the stall report measured.
struct StallRun {
    /// A's read latencies (ns).
    reads: Histogram<u64>,
    /// B's first-touch write latencies (ns); empty without B.
    writes: Histogram<u64>,
    elapsed: Duration,
}

/// Run A's reads for [`STALL_RUN`] on core 0; with `b = Some((name, rate))`, B takes `rate`
/// first-touch writes per second meanwhile.
fn stall_measure(a: String, b: Option<(String, u32)>) -> StallRun {
    on_core0(move || async move {
        let desc_a = keel_bdev::open(&a, false, |_| {}).expect("open A");
        let info = desc_a.bdev().info().clone();
        let blocks_per_io = IO_SIZE as u64 / u64::from(info.block_size);
        let lp = Box::into_raw(Box::new(ReadLoop {
            ch: desc_a.get_io_channel().expect("channel A"),
            bufs: vec![0u8; STALL_QD * IO_SIZE].into_boxed_slice(),
            slots: Box::new([]),
            blocks_per_io,
            span_ios: info.num_blocks / blocks_per_io,
            deadline: Cell::new(Instant::now()),
            outstanding: Cell::new(STALL_QD),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            hist: RefCell::new(latency_histogram()),
            waker: RefCell::new(None),
        }));
        let t0 = Instant::now();
        // SAFETY: `lp` was just leaked from a Box; slots point back at it; freed below after
        // the run, when no I/O is in flight.
        unsafe {
            (*lp).slots = (0..STALL_QD)
                .map(|idx| ReadSlot {
                    lp,
                    idx,
                    started: Cell::new(t0),
                })
                .collect();
        }
        // SAFETY: as above.
        let r = unsafe { &*lp };

        let mut writer = None;
        if let Some((name, rate)) = b {
            let desc_b = keel_bdev::open(&name, true, |_| {}).expect("open B");
            let info_b = desc_b.bdev().info().clone();
            let cluster_size = lvol::find_volume(&name)
                .expect("volume B")
                .store
                .cluster_size;
            let blocks_per_cluster = cluster_size / u64::from(info_b.block_size);
            let ft = Box::into_raw(Box::new(FirstTouch {
                ch: desc_b.get_io_channel().expect("channel B"),
                buf: vec![0x5au8; IO_SIZE].into_boxed_slice(),
                slots: Box::new([]),
                blocks_per_io,
                blocks_per_cluster,
                issued: Cell::new(0),
                inflight: Cell::new(0),
                hist: RefCell::new(latency_histogram()),
                waker: RefCell::new(None),
            }));
            let clusters = info_b.num_blocks / blocks_per_cluster;
            // SAFETY: as for `lp`: leaked here, freed below once no write is in flight.
            unsafe {
                (*ft).slots = (0..clusters)
                    .map(|_| WriteSlot {
                        ft,
                        started: Cell::new(t0),
                    })
                    .collect();
            }
            let period = Duration::from_secs(1) / rate;
            let poller = keel_reactor::register_poller("first_touch_stall", Some(period), {
                let ft = ft as *const FirstTouch;
                // SAFETY: the poller is unregistered before `ft` is freed.
                move || match unsafe { &*ft }.issue() {
                    true => PollStatus::Busy,
                    false => PollStatus::Idle,
                }
            });
            writer = Some((desc_b, ft, poller));
        }

        let start = Instant::now();
        r.deadline.set(start + STALL_RUN);
        for slot in r.slots.iter() {
            r.submit(slot, start);
        }
        wait_for(&r.waker, || r.outstanding.get() == 0).await;
        let elapsed = start.elapsed();

        let mut writes = latency_histogram();
        if let Some((desc_b, ft, poller)) = writer {
            keel_reactor::unregister_poller(poller);
            // SAFETY: see where `ft` was leaked.
            let w = unsafe { &*ft };
            wait_for(&w.waker, || w.inflight.get() == 0).await;
            writes = w.hist.replace(latency_histogram());
            // SAFETY: the poller is gone and no write is in flight.
            drop(unsafe { Box::from_raw(ft) });
            drop(desc_b);
        }
        let reads = r.hist.replace(latency_histogram());
        // SAFETY: no read is in flight.
        drop(unsafe { Box::from_raw(lp) });
        drop(desc_a);
        StallRun {
            reads,
            writes,
            elapsed,
        }
    })
}

/// A fresh store with `cluster_mib` MiB clusters on `bench_stall_base` (cleared as `clear`
/// says), holding volume A ([`STALL_A_MIB`]) and a thin volume B over the rest. Returns the
/// names of A and B.
fn stall_volumes(cluster_mib: u64, clear: ClearMethod) -> (String, String) {
    on_core0(move || async move {
        if let Ok(s) = lvol::find_lvstore(None, Some("bench_stall")) {
            lvol::destroy_lvstore(&s).await.expect("destroy");
        }
        let s = lvol::create_lvstore(
            "bench_stall_base",
            "bench_stall",
            Some(cluster_mib * MIB),
            clear,
        )
        .await
        .expect("store");
        let a_clusters = STALL_A_MIB / cluster_mib;
        let a = lvol::create_volume(&s, "a", a_clusters * s.cluster_size, true)
            .await
            .expect("vol A");
        let b_size = (s.total_clusters - a_clusters - 2) * s.cluster_size;
        let b = lvol::create_volume(&s, "b", b_size, true)
            .await
            .expect("vol B");
        (a.uuid.to_string(), b.uuid.to_string())
    })
}

fn fmt_us(ns: u64) -> String {
    format!("{:.1}", ns as f64 / 1000.0)
}

fn latency_line(h: &Histogram<u64>) -> String {
    format!(
        "p50 {} p99 {} p99.9 {} p99.99 {} max {} µs, {} over 100 µs",
        fmt_us(h.value_at_quantile(0.5)),
        fmt_us(h.value_at_quantile(0.99)),
        fmt_us(h.value_at_quantile(0.999)),
        fmt_us(h.value_at_quantile(0.9999)),
        fmt_us(h.max()),
        h.len() - h.count_between(0, 100_000),
    )
}

/// The `first_touch_stall` report: A's read latency with and without B's allocations, for
/// each of [`STALL_CASES`].
fn stall_report() {
    let blocks = STALL_BASE_MIB * MIB / 4096;
    malloc::create("bench_stall_base", blocks, 4096, None).expect("malloc");
    // touch the base's memory so page faults stay out of the zero-fill being measured
    timed("bench_stall_base".into(), blocks, 32, 1);
    for (cluster_mib, rate, clear) in STALL_CASES {
        let (a, b) = stall_volumes(cluster_mib, clear);
        // allocate every cluster of A
        let stride = cluster_mib * MIB / IO_SIZE as u64;
        timed(a.clone(), STALL_A_MIB / cluster_mib, 1, stride);
        // warm up the read path
        stall_measure(a.clone(), None);
        let idle = stall_measure(a.clone(), None);
        let busy = stall_measure(a, Some((b, rate)));
        let cleared = if clear == ClearMethod::None {
            ""
        } else {
            "_cleared"
        };
        let name = format!("first_touch_stall/cluster_{cluster_mib}mib_{rate}hz{cleared}");
        let iops = |r: &StallRun| r.reads.len() as f64 / r.elapsed.as_secs_f64();
        println!(
            "{name}: A = 4 KiB random reads QD {STALL_QD} on a {STALL_A_MIB} MiB allocated \
             volume, {:?} per side; B = first-touch writes to {cluster_mib} MiB clusters of the \
             same store, target {rate}/s",
            STALL_RUN
        );
        println!(
            "  A alone:         {:>8} reads {:>9.0} IOPS  {}",
            idle.reads.len(),
            iops(&idle),
            latency_line(&idle.reads)
        );
        println!(
            "  A + B allocs:    {:>8} reads {:>9.0} IOPS  {}",
            busy.reads.len(),
            iops(&busy),
            latency_line(&busy.reads)
        );
        println!(
            "  B first touches: {:>8} writes ({:.0}/s)     {}",
            busy.writes.len(),
            busy.writes.len() as f64 / busy.elapsed.as_secs_f64(),
            latency_line(&busy.writes)
        );
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
