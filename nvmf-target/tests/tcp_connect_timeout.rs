//! Connections that never send ICReq, or never connect their queue, are closed after the
//! connect timeout; connected ones stay.

mod common;

use common::*;
use std::io::Write;
use std::time::Duration;

#[test]
fn connections_that_never_connect_are_closed() {
    // Before the runtime and its poll groups start: the groups check at half this period.
    keel_nvmf::tcp::set_connect_timeout(Duration::from_millis(300));
    assert_eq!(
        keel_nvmf::tcp::connect_timeout(),
        Duration::from_millis(300)
    );
    let _g = env();
    let sub = subsystem();
    let base = wait_connections(target_connections());

    // Silent, ICReq only, ICReq and a partial capsule, and a connected admin queue.
    let mut silent = Client::open(sub.port);
    let mut icreq_only = Client::connect(sub.port, false, false);
    let mut partial = Client::connect(sub.port, true, false);
    let b = partial.capsule_bytes(&fabrics(FCTYPE_CONNECT), &[]);
    partial.sock.write_all(&b[..30]).expect("send");
    let mut good = Client::connect(sub.port, false, false);
    let cpl = good.fabrics_connect(&sub.nqn, 0, 0xFFFF);
    assert!(cpl.is_success());

    // Each of the three is closed by the target (expect_end fails after 5 s of silence).
    assert_eq!(expect_end(&mut silent), Ending::Closed, "silent connection");
    assert_eq!(
        expect_end(&mut icreq_only.sock),
        Ending::Closed,
        "ICReq only"
    );
    assert_eq!(
        expect_end(&mut partial.sock),
        Ending::Closed,
        "partial capsule"
    );
    // The connected queue outlives the timeout and still answers.
    std::thread::sleep(Duration::from_millis(400));
    let vs = good.prop_get(0x08, false);
    assert!(vs >> 16 >= 1);
    drop(good);
    assert_eq!(wait_connections(base), base);
}
