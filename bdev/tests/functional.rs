//! Behaviour of the bdev layer on a running 2-core runtime: hot-remove events on the opening
//! core, unregistration waiting for in-flight I/O, per-core channels, statistics summed over
//! cores, and back-pressure.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

mod common;

use common::{on_core, run_on, runtime, until};
use keel_bdev::modules::{malloc, null};
use keel_bdev::{
    BackendChannel, BdevBackend, BdevDesc, BdevError, BdevEvent, BdevInfo, ConfigCall, IoChannel,
    IoRef, IoStatus, IoType, IoVec, IoWaitEntry, SubmitError, Uuid,
};
use keel_reactor::PollStatus;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

const LIMIT: Duration = Duration::from_secs(20);

fn start() {
    runtime("0x3", true);
}

/// A backend whose channels complete each I/O after `delay_polls` calls of `poll` (so it uses
/// the layer's channel poller), counting channels and destructs.
struct SlowBackend {
    delay_polls: u32,
    channels: Arc<AtomicUsize>,
    destructed: Arc<AtomicUsize>,
}

struct SlowChannel {
    delay_polls: u32,
    queue: VecDeque<(u32, IoRef)>,
}

impl BackendChannel for SlowChannel {
    fn submit(&mut self, io: IoRef) {
        self.queue.push_back((self.delay_polls, io));
    }
    fn poll(&mut self) -> PollStatus {
        // Counting down is work: report Busy so an interrupt-mode reactor keeps polling.
        let status = if self.queue.is_empty() {
            PollStatus::Idle
        } else {
            PollStatus::Busy
        };
        for entry in self.queue.iter_mut() {
            entry.0 = entry.0.saturating_sub(1);
        }
        while self.queue.front().is_some_and(|e| e.0 == 0) {
            let (_, io) = self.queue.pop_front().unwrap();
            io.complete(IoStatus::Success);
        }
        status
    }
    fn needs_poll(&self) -> bool {
        true
    }
}

impl BdevBackend for SlowBackend {
    fn product_name(&self) -> &'static str {
        "Slow disk"
    }
    fn io_type_supported(&self, _io_type: IoType) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        self.channels.fetch_add(1, Ordering::SeqCst);
        Ok(Box::new(SlowChannel {
            delay_polls: self.delay_polls,
            queue: VecDeque::new(),
        }))
    }
    fn config_call(&self, _info: &BdevInfo) -> Option<ConfigCall> {
        None
    }
    fn destruct(&self) {
        self.destructed.fetch_add(1, Ordering::SeqCst);
    }
}

fn slow_bdev(name: &str, delay_polls: u32) -> (Arc<AtomicUsize>, Arc<AtomicUsize>) {
    let channels = Arc::new(AtomicUsize::new(0));
    let destructed = Arc::new(AtomicUsize::new(0));
    let b = SlowBackend {
        delay_polls,
        channels: Arc::clone(&channels),
        destructed: Arc::clone(&destructed),
    };
    let info = BdevInfo {
        name: name.into(),
        aliases: vec![],
        uuid: Uuid::new_random(),
        block_size: 512,
        num_blocks: 64,
    };
    keel_bdev::register(info, Arc::new(b)).unwrap();
    (channels, destructed)
}

thread_local! {
    static CHANNEL: RefCell<Option<IoChannel>> = const { RefCell::new(None) };
}

/// A completion counter for one test (tests share the reactors, so each counts its own I/O).
fn counter() -> &'static AtomicU64 {
    Box::leak(Box::new(AtomicU64::new(0)))
}

fn ctx(c: &'static AtomicU64) -> usize {
    c as *const AtomicU64 as usize
}

fn count_cb(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success);
    // SAFETY: every ctx given with count_cb comes from `ctx()`, a leaked (immortal) counter.
    unsafe { &*(ctx as *const AtomicU64) }.fetch_add(1, Ordering::SeqCst);
}

static FLAG_CB: AtomicBool = AtomicBool::new(false);
fn flag_cb(_ctx: usize, _status: IoStatus) {
    FLAG_CB.store(true, Ordering::SeqCst);
}

#[test]
fn hot_remove_event_runs_on_the_opening_core_and_unregister_waits_for_close() {
    start();
    null::create("f_hot", 64, 512, None).unwrap();
    let slot: Arc<Mutex<Option<BdevDesc>>> = Arc::default();
    let event_core = Arc::new(AtomicI64::new(-1));
    let (s, ec) = (Arc::clone(&slot), Arc::clone(&event_core));
    run_on(1, move || {
        let s2 = Arc::clone(&s);
        let desc = keel_bdev::open("f_hot", true, move |e| {
            assert_eq!(e, BdevEvent::Remove);
            ec.store(
                i64::from(keel_reactor::current_core().unwrap()),
                Ordering::SeqCst,
            );
            // a well-behaved consumer: drop its channel, then close
            CHANNEL.with(|c| c.borrow_mut().take());
            s2.lock().unwrap().take();
        })
        .unwrap();
        CHANNEL.with(|c| *c.borrow_mut() = Some(desc.get_io_channel().unwrap()));
        *s.lock().unwrap() = Some(desc);
    });
    on_core(0, LIMIT, || async {
        keel_bdev::unregister("f_hot").await.unwrap()
    });
    assert_eq!(
        event_core.load(Ordering::SeqCst),
        1,
        "event ran on the core that opened"
    );
    assert!(slot.lock().unwrap().is_none());
    assert!(keel_bdev::get_bdev("f_hot").is_none());
}

#[test]
fn unregister_waits_for_in_flight_io_on_another_core() {
    start();
    let (channels, destructed) = slow_bdev("f_slow", 2000);
    run_on(1, || {
        let desc = keel_bdev::open("f_slow", false, |_| {}).unwrap();
        let ch = desc.get_io_channel().unwrap();
        ch.flush(flag_cb, 0).unwrap();
        // channel and descriptor dropped with the flush in flight
    });
    on_core(0, LIMIT, || async {
        keel_bdev::unregister("f_slow").await.unwrap()
    });
    assert!(
        FLAG_CB.load(Ordering::SeqCst),
        "the in-flight I/O completed before unregister finished"
    );
    assert_eq!(destructed.load(Ordering::SeqCst), 1);
    assert_eq!(channels.load(Ordering::SeqCst), 1);
}

#[test]
fn one_backend_channel_per_core() {
    start();
    let (channels, _) = slow_bdev("f_chan", 1);
    let desc = Arc::new(keel_bdev::open("f_chan", true, |_| {}).unwrap());
    for core in [0, 1] {
        let d = Arc::clone(&desc);
        on_core(core, LIMIT, move || async move {
            let a = d.get_io_channel().unwrap();
            let b = d.get_io_channel().unwrap();
            let c = counter();
            a.flush(count_cb, ctx(c)).unwrap();
            b.flush(count_cb, ctx(c)).unwrap();
            until(|| c.load(Ordering::SeqCst) == 2).await;
        });
    }
    assert_eq!(channels.load(Ordering::SeqCst), 2);
    drop(desc);
    on_core(0, LIMIT, || async {
        keel_bdev::unregister("f_chan").await.unwrap()
    });
}

fn submit_rw(ch: &IoChannel, write: bool, buf: *mut u8, n: usize, c: &'static AtomicU64) {
    for i in 0..n {
        // SAFETY: `buf` points at a 4 KiB buffer leaked by the test; concurrent I/Os sharing
        // it are fine for a null/malloc bdev test that does not check the data.
        let v = unsafe { IoVec::from_raw_parts(buf, 4096) };
        let r = if write {
            ch.write(&[v], i as u64 * 8, 8, count_cb, ctx(c))
        } else {
            ch.read(&[v], i as u64 * 8, 8, count_cb, ctx(c))
        };
        r.unwrap();
    }
}

#[test]
fn io_stats_are_summed_over_cores_and_survive_channels() {
    start();
    malloc::create("f_stats", 1024, 512, None).unwrap();
    let desc = Arc::new(keel_bdev::open("f_stats", true, |_| {}).unwrap());
    for (core, write, n) in [(0u32, true, 10usize), (1, false, 5)] {
        let d = Arc::clone(&desc);
        on_core(core, LIMIT, move || async move {
            let buf = Box::leak(vec![0u8; 4096].into_boxed_slice()).as_mut_ptr();
            let ch = d.get_io_channel().unwrap();
            let c = counter();
            submit_rw(&ch, write, buf, n, c);
            until(|| c.load(Ordering::SeqCst) == n as u64).await;
        });
    }
    let d = Arc::clone(&desc);
    let s = on_core(0, LIMIT, move || async move { d.bdev().io_stats().await });
    assert_eq!((s.num_write_ops, s.bytes_written), (10, 10 * 4096));
    assert_eq!((s.num_read_ops, s.bytes_read), (5, 5 * 4096));
    assert_eq!(s.num_io_errors, 0);
    drop(desc);
    on_core(0, LIMIT, || async {
        keel_bdev::unregister("f_stats").await.unwrap()
    });
}

/// What `retry_flush` needs: the channel, the counter's context, whether it ran.
struct Retry {
    ch: Rc<IoChannel>,
    counter_ctx: usize,
    retried: Cell<bool>,
}

/// The wait entry's callback: resubmit the flush that found no descriptor.
fn retry_flush(p: usize) {
    // SAFETY: `p` is the address of the `Retry` the test keeps alive (on its task's stack)
    // until the entry has been served.
    let r = unsafe { &*(p as *const Retry) };
    r.ch.flush(count_cb, r.counter_ctx).unwrap();
    r.retried.set(true);
}

#[test]
fn back_pressure_with_an_io_wait_entry() {
    start();
    null::create("f_bp", 1 << 20, 512, None).unwrap();
    let desc = Arc::new(keel_bdev::open("f_bp", false, |_| {}).unwrap());
    let d = Arc::clone(&desc);
    let (taken, retried) = on_core(1, LIMIT, move || async move {
        let ch = Rc::new(d.get_io_channel().unwrap());
        let c = counter();
        let mut taken = 0u64;
        while ch.flush(count_cb, ctx(c)).is_ok() {
            taken += 1;
        }
        assert_eq!(ch.flush(count_cb, ctx(c)), Err(SubmitError::NoDescriptor));
        let retry = Retry {
            ch: Rc::clone(&ch),
            counter_ctx: ctx(c),
            retried: Cell::new(false),
        };
        let entry = std::pin::pin!(IoWaitEntry::new(
            retry_flush,
            std::ptr::from_ref(&retry) as usize
        ));
        assert!(
            ch.queue_io_wait(entry.as_ref()),
            "no descriptor free: the entry waits"
        );
        until(|| c.load(Ordering::SeqCst) == taken + 1).await;
        (taken, retry.retried.get())
    });
    assert!(
        taken >= 128,
        "a channel holds at least a queue's worth of descriptors ({taken})"
    );
    assert!(retried);
    drop(desc);
    on_core(0, LIMIT, || async {
        keel_bdev::unregister("f_bp").await.unwrap()
    });
}

#[test]
fn data_written_on_one_core_reads_back_on_the_other() {
    start();
    malloc::create("f_data", 256, 4096, None).unwrap();
    let desc = Arc::new(keel_bdev::open("f_data", true, |_| {}).unwrap());
    let pattern: Vec<u8> = (0..8192u32).map(|i| (i % 251) as u8).collect();
    let (d, p) = (Arc::clone(&desc), pattern.clone());
    on_core(0, LIMIT, move || async move {
        let buf = Box::leak(p.into_boxed_slice());
        let ch = d.get_io_channel().unwrap();
        let c = counter();
        // SAFETY: the leaked buffer outlives the I/O.
        let v = unsafe { IoVec::from_raw_parts(buf.as_mut_ptr(), buf.len()) };
        ch.write(&[v], 10, 2, count_cb, ctx(c)).unwrap();
        until(|| c.load(Ordering::SeqCst) == 1).await;
    });
    let d = Arc::clone(&desc);
    let read = on_core(1, LIMIT, move || async move {
        let buf = Box::leak(vec![0u8; 8192].into_boxed_slice());
        let ch = d.get_io_channel().unwrap();
        let c = counter();
        // SAFETY: the leaked buffer outlives the I/O.
        let v = unsafe { IoVec::from_raw_parts(buf.as_mut_ptr(), buf.len()) };
        ch.read(&[v], 10, 2, count_cb, ctx(c)).unwrap();
        until(|| c.load(Ordering::SeqCst) == 1).await;
        buf.to_vec()
    });
    assert_eq!(read, pattern);
    drop(desc);
    assert!(
        matches!(
            on_core(0, LIMIT, || async { null::delete("f_data").await }),
            Err(BdevError::NotFound(_))
        ),
        "a module deletes only its own bdevs"
    );
    on_core(0, LIMIT, || async {
        malloc::delete("f_data").await.unwrap()
    });
}
