//! Shared harness of the raid benches: a one-core reactor runtime, a closed-loop write load on
//! a bdev (sequential or random, fixed I/O size and queue depth), and raid creation.

#![allow(dead_code)]

use keel_bdev::{BdevDesc, IoChannel, IoStatus, IoVec, SubmitError};
use keel_raid::{CreateConfig, RaidLevel};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::Cell;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::{Duration, Instant};

/// Run `body` as a local task on a one-core runtime (core 0) and wait for it.
pub fn run_bench<F, Fut>(body: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let _ = env_logger::builder()
        .filter_level(log::LevelFilter::Warn)
        .try_init();
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").expect("mask"),
        interrupt_mode: false,
        pin_threads: false,
    };
    let rt = Runtime::start(opts, || {}).expect("start the reactor runtime");
    let (tx, rx) = std::sync::mpsc::channel();
    keel_reactor::spawn_on(0, move || async move {
        body().await;
        let _ = tx.send(());
    })
    .expect("spawn the bench task");
    rx.recv_timeout(Duration::from_secs(600))
        .expect("the bench did not finish");
    drop(rt);
}

/// Seconds each measurement runs (`KEEL_BENCH_SECS`, default `default`).
pub fn secs(default: f64) -> f64 {
    std::env::var("KEEL_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// The benches' filter: the first command-line argument that is not a flag (cargo bench passes
/// `--bench`). A case runs when its name contains the filter.
pub fn selected(case: &str) -> bool {
    match std::env::args().skip(1).find(|a| !a.starts_with('-')) {
        Some(f) => case.contains(&f),
        None => true,
    }
}

/// Create a raid bdev without a superblock.
pub async fn make(name: &str, level: RaidLevel, members: &[String], strip_kb: Option<u32>) {
    keel_raid::create(&CreateConfig {
        name: name.into(),
        level,
        base_bdevs: members.to_vec(),
        strip_size_kb: strip_kb,
        uuid: None,
        superblock: false,
    })
    .await
    .expect("create raid");
}

/// A closed-loop write (or read, [`Load::reads`]) load: `qd` I/Os of `io_bytes` in flight,
/// each resubmitted on completion until stopped.
pub struct Load {
    ch: IoChannel,
    _desc: BdevDesc,
    /// One buffer per slot (`Cell`s: member I/Os write into them through raw pointers).
    bufs: Vec<Box<[Cell<u8>]>>,
    reads: Cell<bool>,
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

impl Load {
    /// A load on `name` (opened read-write here), not started.
    pub fn new(name: &str, io_bytes: usize, qd: usize, random: bool) -> Rc<Load> {
        let desc = keel_bdev::open(name, true, |_| {}).expect("open");
        let ch = desc.get_io_channel().expect("channel");
        let bs = ch.bdev().info().block_size as usize;
        let span = ch.bdev().info().num_blocks;
        let bufs = (0..qd)
            .map(|i| vec![Cell::new(0x5a ^ i as u8); io_bytes].into_boxed_slice())
            .collect();
        Rc::new(Load {
            ch,
            _desc: desc,
            bufs,
            reads: Cell::new(false),
            io_blocks: (io_bytes / bs) as u64,
            span,
            random,
            next: Cell::new(0),
            rng: Cell::new(0x9e37_79b9_7f4a_7c15),
            done: Cell::new(0),
            inflight: Cell::new(0),
            stop: Cell::new(false),
            waker: Cell::new(None),
        })
    }

    /// Read instead of write from now on.
    pub fn reads(&self) {
        self.reads.set(true);
    }

    /// Start every slot (again after a stop).
    pub fn start(self: &Rc<Load>) {
        self.stop.set(false);
        for s in 0..self.bufs.len() {
            submit(self, s);
        }
    }

    /// I/Os completed so far.
    pub fn done(&self) -> u64 {
        self.done.get()
    }

    /// Stop resubmitting and wait until nothing is in flight.
    pub async fn stop(&self) {
        self.stop.set(true);
        poll_fn(|cx| {
            if self.inflight.get() == 0 {
                Poll::Ready(())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await;
    }

    /// Run for `secs` seconds and return I/Os per second of the reactor thread's CPU time
    /// (the reactor busy-polls, so this is its rate while it runs; time other processes of a
    /// shared machine take from it does not count).
    pub async fn run_for(self: &Rc<Load>, secs: f64) -> f64 {
        let (c0, d0) = (thread_cpu_secs(), self.done());
        self.start();
        sleep(secs).await;
        self.stop().await;
        (self.done() - d0) as f64 / (thread_cpu_secs() - c0)
    }

    /// Run until `n` more I/Os completed.
    pub async fn run_ios(self: &Rc<Load>, n: u64) {
        let until = self.done() + n;
        self.start();
        poll_fn(|cx| {
            if self.done() >= until {
                Poll::Ready(())
            } else {
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        self.stop().await;
    }
}

/// CPU seconds the calling thread has used.
pub fn thread_cpu_secs() -> f64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec to write; the clock id is a constant Linux knows.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
}

/// Let the reactor run for `secs` seconds (busy: the task re-polls every iteration).
pub async fn sleep(secs: f64) {
    let t0 = Instant::now();
    poll_fn(|cx| {
        if t0.elapsed().as_secs_f64() >= secs {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
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
    // SAFETY: each slot's buffer is used by one I/O at a time and outlives it; its bytes are
    // `Cell`s, so a read may write them through this pointer.
    let v = unsafe { IoVec::from_raw_parts(b.as_ptr() as *mut u8, b.len()) };
    let ctx = (Rc::as_ptr(l) as usize) | slot << 48;
    let me = Rc::into_raw(Rc::clone(l));
    let r = if l.reads.get() {
        l.ch.read(&[v], lba, l.io_blocks, cb, ctx)
    } else {
        l.ch.write(&[v], lba, l.io_blocks, cb, ctx)
    };
    match r {
        Ok(()) => l.inflight.set(l.inflight.get() + 1),
        Err(SubmitError::NoDescriptor) => {
            // SAFETY: not submitted: take the count back.
            drop(unsafe { Rc::from_raw(me) });
            panic!("bench queue depth above the bdev layer's descriptors");
        }
        Err(e) => panic!("submit: {e}"),
    }
}

fn cb(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success);
    let slot = ctx >> 48;
    // SAFETY: the count taken in `submit`.
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
