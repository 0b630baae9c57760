//! The host against an in-process Keel target (TCP, one malloc namespace, ephemeral loopback
//! port), for the three limits the host used to have: I/O queue ids are reused once freed
//! (bounded by what the controller granted), one poller per core drives all of that core's
//! queue pairs, and an I/O queue pair can be created synchronously (as a bdev's channel
//! creation must) with I/O waiting for its connection.
//!
//! The tests share one reactor core and count its queue pairs and pollers, so they run one
//! at a time (`SERIAL`).

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::{IoStatus, IoVec};
use keel_nvmf_host::{ConnectOpts, Controller, InitiatorError, IoQpair};
// Tasks on the main core, CORE (bounded by the kit's patience, 60 s).
use keel_testkit::reactors::run as on_core;
use std::cell::Cell;
use std::net::SocketAddr;
use std::sync::{Mutex, OnceLock};

const CORE: u32 = 0;
const NQN: &str = "nqn.2016-06.io.keel:host-test";
const BLOCKS: u64 = 4096; // 16 MiB of 4 KiB blocks

static SERIAL: Mutex<()> = Mutex::new(());

/// Start one reactor and a target on it, once per test binary; returns the target's address.
fn target() -> SocketAddr {
    static ADDR: OnceLock<SocketAddr> = OnceLock::new();
    *ADDR.get_or_init(|| keel_testkit::nvmf::tcp_target(NQN, &[("HostTestMalloc", BLOCKS)]))
}

fn opts(io_queues: u16) -> ConnectOpts {
    let mut o = ConnectOpts::new(target(), NQN);
    o.io_queues = io_queues;
    o.io_queue_depth = 8;
    o
}

thread_local! {
    static DONE: Cell<Option<IoStatus>> = const { Cell::new(None) };
    static COUNT: Cell<usize> = const { Cell::new(0) };
}

fn record(_ctx: usize, status: IoStatus) {
    DONE.with(|d| d.set(Some(status)));
}

fn count(ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Success, "I/O {ctx}");
    COUNT.with(|c| c.set(c.get() + 1));
}

fn aborted(_ctx: usize, status: IoStatus) {
    assert_eq!(status, IoStatus::Aborted);
    COUNT.with(|c| c.set(c.get() + 1));
}

async fn yield_now() {
    let mut first = true;
    std::future::poll_fn(|cx| {
        if first {
            first = false;
            cx.waker().wake_by_ref();
            std::task::Poll::Pending
        } else {
            std::task::Poll::Ready(())
        }
    })
    .await
}

/// Yield until `cond` holds (bounded).
async fn until(mut cond: impl FnMut() -> bool) {
    for _ in 0..1_000_000 {
        if cond() {
            return;
        }
        yield_now().await;
    }
    panic!("condition not reached");
}

/// Read one block at `lba` through `q` and wait for it.
async fn read_one(q: &IoQpair, lba: u64) -> IoStatus {
    let mut b = vec![0u8; 4096];
    DONE.with(|d| d.set(None));
    q.read(&[iov(&mut b)], lba, 1, record, 0)
        .expect("submitted");
    let mut st = None;
    until(|| {
        st = DONE.with(|d| d.take());
        st.is_some()
    })
    .await;
    st.unwrap()
}

fn iov(b: &mut [u8]) -> IoVec {
    // SAFETY: the test keeps every buffer alive and untouched until its I/O completed.
    unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), b.len()) }
}

/// Untimed pollers of the test core.
fn untimed_pollers() -> u32 {
    let s = &keel_reactor::reactor_stats()[CORE as usize];
    s.pollers - s.timed_pollers
}

/// Used to fail: qids came from a counter that only went up, so a controller that granted
/// N queues could be connected N times in its life. Now a dropped queue pair gives its qid
/// back (and the qids in use stay bounded by the grant).
#[test]
fn freed_io_queue_ids_are_reused_within_the_grant() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let copts = opts(2);
    on_core(move || async move {
        let ctrlr = Controller::connect(&copts).await.expect("controller");
        let info = std::sync::Arc::clone(ctrlr.info());
        assert_eq!(info.io_queues, 2);
        let q1 = IoQpair::connect(&info, 1).await.expect("qid 1");
        let q2 = IoQpair::connect(&info, 1).await.expect("qid 2");
        assert_eq!((q1.qid(), q2.qid()), (1, 2));
        assert!(matches!(
            IoQpair::start(&info, 1),
            Err(InitiatorError::Invalid(_))
        ));
        assert_eq!(info.io_queues_in_use(), 2);
        drop(q1);
        assert_eq!(info.io_queues_in_use(), 1);
        for round in 0..5u64 {
            let q = IoQpair::connect(&info, 1)
                .await
                .unwrap_or_else(|e| panic!("round {round}: the freed qid is taken again: {e}"));
            assert_eq!(q.qid(), 1);
            assert_eq!(read_one(&q, round).await, IoStatus::Success);
            assert!(
                IoQpair::start(&info, 1).is_err(),
                "still bounded by the grant"
            );
        }
        assert_eq!(read_one(&q2, 9).await, IoStatus::Success);
        drop(q2);
        assert_eq!(info.io_queues_in_use(), 0);
        ctrlr.shutdown().await.expect("shutdown");
    });
}

/// Used to fail: every queue pair registered its own poller. Now the core's queue pairs
/// (admin and I/O) share one, which goes away with the last of them.
#[test]
fn one_poller_drives_every_queue_pair_of_a_core() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let copts = opts(4);
    on_core(move || async move {
        let before = untimed_pollers();
        assert_eq!(keel_nvmf_host::qpairs_on_this_core(), 0);
        let ctrlr = Controller::connect(&copts).await.expect("controller");
        let info = std::sync::Arc::clone(ctrlr.info());
        yield_now().await;
        let with_admin = untimed_pollers();
        let mut qs = Vec::new();
        for _ in 0..3 {
            qs.push(IoQpair::connect(&info, 1).await.expect("I/O queue"));
        }
        assert_eq!(keel_nvmf_host::qpairs_on_this_core(), 4);
        yield_now().await;
        assert_eq!(untimed_pollers(), with_admin, "no poller per queue pair");
        for (i, q) in qs.iter().enumerate() {
            assert_eq!(read_one(q, i as u64).await, IoStatus::Success);
        }
        drop(qs);
        ctrlr.shutdown().await.expect("shutdown");
        assert_eq!(keel_nvmf_host::qpairs_on_this_core(), 0);
        yield_now().await;
        assert_eq!(
            untimed_pollers(),
            before,
            "the group's poller left with its last queue pair"
        );
    });
}

/// Used to be impossible: an I/O queue pair could only be had by awaiting its connection,
/// so a bdev's (synchronous) channel creation could not make one. Now `IoQpair::start`
/// returns at once; I/O submitted before the connection is up waits for it and completes,
/// and I/O still waiting when the queue pair is dropped completes as aborted.
#[test]
fn io_queue_pair_starts_synchronously_and_io_waits_for_the_connection() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let copts = opts(2);
    on_core(move || async move {
        let ctrlr = Controller::connect(&copts).await.expect("controller");
        let info = std::sync::Arc::clone(ctrlr.info());
        // No await between start and the submissions: as from a synchronous callback.
        let q = IoQpair::start(&info, 1).expect("started");
        assert!(q.is_connecting());
        COUNT.with(|c| c.set(0));
        let mut bufs: Vec<Vec<u8>> = (0..8).map(|_| vec![0u8; 4096]).collect();
        for (i, b) in bufs.iter_mut().enumerate() {
            q.read(&[iov(b)], i as u64, 1, count, i)
                .expect("waits for the connection");
        }
        let mut extra = vec![0u8; 4096];
        assert_eq!(
            q.read(&[iov(&mut extra)], 0, 1, count, 99),
            Err(keel_nvmf_host::SubmitError::Busy),
            "at most depth commands wait"
        );
        q.connected().await.expect("connected");
        until(|| COUNT.with(|c| c.get()) == 8).await;
        assert!(!q.is_connecting());
        assert_eq!(read_one(&q, 3).await, IoStatus::Success);
        drop(q);
        // Dropped while connecting: the waiting I/O is aborted, the qid given back.
        let q = IoQpair::start(&info, 1).expect("started");
        COUNT.with(|c| c.set(0));
        q.read(&[iov(&mut bufs[0])], 0, 1, aborted, 0)
            .expect("waits");
        drop(q);
        assert_eq!(COUNT.with(|c| c.get()), 1, "aborted at the drop");
        assert_eq!(info.io_queues_in_use(), 0);
        drop(bufs);
        ctrlr.shutdown().await.expect("shutdown");
    });
}
