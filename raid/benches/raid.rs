//! raid bandwidth/IOPS over malloc members on one reactor: raid5 full-stripe write bandwidth vs
//! raid0 on the same members, and 4 KiB random write IOPS of raid5 (partial stripe) vs raid1.
//! Run: `cargo bench -p keel-raid --bench raid`.

use keel_bdev::modules::malloc;
use keel_bdev::{IoChannel, IoStatus, IoVec};
use keel_raid::{CreateConfig, RaidLevel};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

const MEMBER_BLOCKS: u64 = 64 * 2048; // 64 MiB of 512-byte blocks
const QD: usize = 16;

struct Load {
    ch: IoChannel,
    bufs: Vec<keel_reactor::pool::DmaBuf>,
    io_blocks: u64,
    span: u64,
    random: bool,
    next: Cell<u64>,
    rng: Cell<u64>,
    done: Cell<u64>,
    inflight: Cell<usize>,
    stop: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

fn submit(l: &Rc<Load>, slot: usize) {
    let lba = if l.random {
        let mut x = l.rng.get();
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        l.rng.set(x);
        (x % (l.span / l.io_blocks)) * l.io_blocks
    } else {
        let n = l.next.get();
        l.next
            .set((n + l.io_blocks) % (l.span / l.io_blocks * l.io_blocks));
        n
    };
    let b = &l.bufs[slot];
    // SAFETY: each slot's buffer is used by one I/O at a time and outlives it.
    let v = unsafe { IoVec::from_raw(b.as_ptr() as *mut u8, b.len()) };
    let ctx = (Rc::as_ptr(l) as usize) | slot << 48;
    std::mem::forget(Rc::clone(l));
    l.ch.write(&[v], lba, l.io_blocks, cb, ctx).expect("submit");
    l.inflight.set(l.inflight.get() + 1);
}

fn cb(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success);
    let slot = ctx >> 48;
    // SAFETY: the count forgotten in `submit`.
    let l = unsafe { Rc::from_raw((ctx & ((1 << 48) - 1)) as *const Load) };
    l.inflight.set(l.inflight.get() - 1);
    l.done.set(l.done.get() + 1);
    if !l.stop.get() {
        submit(&l, slot);
    } else if l.inflight.get() == 0 {
        if let Some(w) = l.waker.take() {
            w.wake();
        }
    }
}

async fn measure(name: &str, io_bytes: usize, random: bool, secs: f64) -> f64 {
    let desc = keel_bdev::open(name, true, |_| {}).unwrap();
    let ch = desc.get_io_channel().unwrap();
    let span = ch.bdev().info().num_blocks;
    let bufs = (0..QD)
        .map(|_| {
            let mut b = keel_reactor::pool::alloc(io_bytes).unwrap();
            b.as_mut_slice().fill(0x5a);
            b
        })
        .collect();
    let l = Rc::new(Load {
        ch,
        bufs,
        io_blocks: (io_bytes / 512) as u64,
        span,
        random,
        next: Cell::new(0),
        rng: Cell::new(0x9e3779b97f4a7c15),
        done: Cell::new(0),
        inflight: Cell::new(0),
        stop: Cell::new(false),
        waker: Cell::new(None),
    });
    let t0 = Instant::now();
    for s in 0..QD {
        submit(&l, s);
    }
    poll_fn(|cx| {
        if t0.elapsed().as_secs_f64() >= secs {
            l.stop.set(true);
        }
        if l.stop.get() && l.inflight.get() == 0 {
            Poll::Ready(())
        } else {
            l.waker.set(Some(cx.waker().clone()));
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
    let el = t0.elapsed().as_secs_f64();
    l.done.get() as f64 / el
}

async fn make(name: &str, level: RaidLevel, members: &[&str], strip_kb: Option<u32>) {
    keel_raid::create(&CreateConfig {
        name: name.into(),
        level,
        base_bdevs: members.iter().map(|s| s.to_string()).collect(),
        strip_size_kb: strip_kb,
        uuid: None,
        superblock: false,
    })
    .await
    .unwrap();
}

fn main() {
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").unwrap(),
        interrupt_mode: false,
        pin_threads: false,
    };
    let rt = Runtime::start(opts, || {}).unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    keel_reactor::spawn_on(0, move || async move {
        let m = ["bm0", "bm1", "bm2", "bm3"];
        for n in m {
            malloc::create(n, MEMBER_BLOCKS, 512, None).unwrap();
        }
        let secs = 2.0;
        make("b_r0", RaidLevel::Raid0, &m, Some(32)).await;
        let r0 = measure("b_r0", 4 * 32 * 1024, false, secs).await * 4.0 * 32.0 / 1024.0;
        keel_raid::delete("b_r0").await.unwrap();
        make("b_r5", RaidLevel::Raid5, &m, Some(32)).await;
        let r5 = measure("b_r5", 3 * 32 * 1024, false, secs).await * 3.0 * 32.0 / 1024.0;
        let r5_4k = measure("b_r5", 4096, true, secs).await;
        keel_raid::delete("b_r5").await.unwrap();
        make("b_r1", RaidLevel::Raid1, &m[..2], None).await;
        let r1_4k = measure("b_r1", 4096, true, secs).await;
        keel_raid::delete("b_r1").await.unwrap();
        println!("raid0 full-stripe write (4 x 32 KiB):        {r0:8.0} MiB/s");
        println!(
            "raid5 full-stripe write (3+1 x 32 KiB):      {r5:8.0} MiB/s  ({:.0}% of raid0)",
            r5 / r0 * 100.0
        );
        println!("raid5 4 KiB random write (partial, RMW):     {r5_4k:8.0} IOPS");
        println!(
            "raid1 4 KiB random write (2 mirrors):        {r1_4k:8.0} IOPS  (raid5/raid1 = {:.2})",
            r5_4k / r1_4k
        );
        let _ = tx.send(());
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(120)).unwrap();
    drop(rt);
}
