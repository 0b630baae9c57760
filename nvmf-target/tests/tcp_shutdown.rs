//! Transport shutdown waits until every connection is freed, including those whose requests
//! were still running in the bdev layer when it began.

mod common;

use common::*;
use keel_testkit::probe::wait_for;
use std::io::Write;
use std::time::Duration;

/// Reads completed by bdev `name` so far (summed over the cores).
fn reads_done(name: &str) -> u64 {
    let name = name.to_string();
    block_on_core(0, move || async move {
        let bdev = keel_bdev::get_bdev(&name).expect("the test's bdev");
        bdev.io_stats().await.num_read_ops
    })
}

#[test]
fn shutdown_returns_after_connections_with_running_requests_are_freed() {
    let _g = env();
    // Every I/O takes 300 ms in the bdev layer.
    let sub = subsystem_with_delay(Some(300_000));
    let mut h = bring_up(&sub, false, false);
    let mut all = Vec::new();
    for k in 0..16u64 {
        let mut sqe = rw(opc::READ, 1, k * 8, 8);
        sqe.cid = h.io.cid();
        sqe.flags = 0x40;
        sqe.dptr[8..12].copy_from_slice(&4096u32.to_le_bytes());
        sqe.dptr[15] = 0x5A;
        all.extend(h.io.capsule_bytes(&sqe, &[]));
    }
    let (base_before, ns_before) = (reads_done(&sub.base_bdev), reads_done(&sub.bdev));
    h.io.sock.write_all(&all).expect("send reads");
    // Every read reached the bdev layer: the delay bdev's base completed all 16, and the delay
    // bdev holds each for 300 ms before completing it upward.
    wait_for(
        "the 16 reads to reach the bdev layer",
        Duration::from_secs(10),
        || reads_done(&sub.base_bdev) >= base_before + 16,
    );
    assert_eq!(
        reads_done(&sub.bdev),
        ns_before,
        "the reads are still running in the bdev layer when shutdown begins"
    );
    assert!(target_connections() >= 2);
    block_on_core(0, keel_nvmf::shutdown);
    // Shutdown came back: nothing of the transport is left on any core.
    assert_eq!(target_connections(), 0, "connections left after shutdown");
    assert_eq!(expect_end(&mut h.io.sock), Ending::Closed);
    // No listener any more.
    assert!(std::net::TcpStream::connect(("127.0.0.1", sub.port)).is_err());
}
