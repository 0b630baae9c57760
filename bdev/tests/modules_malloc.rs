//! Issue 11 item 3: a malloc bdev's memory is populated when it is created — off the reactor,
//! which keeps polling meanwhile — so its first I/Os never wait for page faults. One test per
//! binary step (the RSS figures must not be disturbed by other tests of this binary).
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::modules::malloc;
use keel_reactor::PollStatus;
use keel_testkit::prelude::*;
use serde_json::json;
use std::cell::Cell;
use std::rc::Rc;
use std::time::{Duration, Instant};

/// Anonymous resident memory of this process, bytes (`RssAnon` of /proc/self/status).
fn rss_anon() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let kib: u64 = status
        .lines()
        .find_map(|l| l.strip_prefix("RssAnon:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .expect("RssAnon in /proc/self/status");
    kib * 1024
}

const MIB: u64 = 1 << 20;

/// Wait (bounded) until the anonymous RSS is at most `limit`: a deleted malloc's memory is
/// unmapped by a helper thread, shortly after the delete returned.
fn wait_rss_at_most(limit: u64) {
    let start = Instant::now();
    while rss_anon() > limit {
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "RssAnon {} MiB stays above {} MiB after a delete",
            rss_anon() / MIB,
            limit / MIB
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn malloc_is_populated_at_creation_while_the_reactor_keeps_polling() {
    // 1. The Rust API the RPC uses: 512 MiB, with a poller on the same reactor measuring the
    //    longest gap between two of its runs while the memory is populated.
    let size = 512 * MIB;
    let before = rss_anon();
    let (took, max_gap, runs) = run(move || async move {
        let last = Rc::new(Cell::new(Instant::now()));
        let max_gap = Rc::new(Cell::new(Duration::ZERO));
        let runs = Rc::new(Cell::new(0u64));
        let (l, m, r) = (last.clone(), max_gap.clone(), runs.clone());
        let poller = keel_reactor::register_poller("gap-probe", None, move || {
            let now = Instant::now();
            m.set(m.get().max(now - l.get()));
            l.set(now);
            r.set(r.get() + 1);
            PollStatus::Busy
        });
        let start = Instant::now();
        last.set(start);
        let bdev = malloc::create_async("pop_big", size / 4096, 4096, None).await;
        let took = start.elapsed();
        // A poller that never ran again after some point stalled until now.
        max_gap.set(max_gap.get().max(last.get().elapsed()));
        keel_reactor::unregister_poller(poller);
        assert_eq!(bdev.expect("created").name(), "pop_big");
        (took, max_gap.get(), runs.get())
    });
    let grown = rss_anon().saturating_sub(before);
    eprintln!(
        "populated {} MiB in {took:?}; reactor poller ran {runs} times, longest gap {max_gap:?}; RssAnon +{} MiB",
        size / MIB,
        grown / MIB
    );
    // Resident when the create returned (before the fix: ~0; a page fault per first touch).
    assert!(
        grown >= size * 9 / 10,
        "only {} of {} MiB resident after create",
        grown / MIB,
        size / MIB
    );
    // Had the population run on the reactor, its poller would have stopped for `took`.
    assert!(
        max_gap < took / 2,
        "the reactor stalled {max_gap:?} during a {took:?} population"
    );
    assert!(runs >= 100, "poller ran {runs} times in {took:?}");
    let resident = rss_anon();
    run(|| async { malloc::delete("pop_big").await }).unwrap();
    wait_rss_at_most(resident - size * 9 / 10);

    // 2. The path of `bdev_malloc_create` and of keel-tgt's embedded default config: the config
    //    replay waits for the population and the bdev is there, resident, when it returns.
    let before = rss_anon();
    let size = 128 * MIB;
    let loaded = run(move || async move {
        keel_bdev::rpc::register();
        let config = json!({ "subsystems": [{ "subsystem": "bdev", "config": [
            { "method": "bdev_malloc_create",
              "params": { "name": "pop_cfg", "num_blocks": size / 4096, "block_size": 4096 } }
        ]}]});
        keel_rpc::load_config_value("test config", &config)
            .await
            .map_err(|e| e.to_string())?;
        Ok::<bool, String>(keel_bdev::get_bdev("pop_cfg").is_some())
    });
    assert_eq!(loaded, Ok(true));
    let grown = rss_anon().saturating_sub(before);
    assert!(grown >= size * 9 / 10, "{} MiB resident", grown / MIB);
    let resident = rss_anon();
    run(|| async { malloc::delete("pop_cfg").await }).unwrap();
    wait_rss_at_most(resident - size * 9 / 10);

    // 3. A size the host cannot hold: a clear ENOMEM through the RPC, nothing registered.
    let err = run(|| async {
        let config = json!({ "subsystems": [{ "subsystem": "bdev", "config": [
            { "method": "bdev_malloc_create",
              "params": { "name": "pop_huge", "num_blocks": 1u64 << 40, "block_size": 4096 } }
        ]}]});
        keel_rpc::load_config_value("test config", &config)
            .await
            .map_err(|e| e.to_string())
    })
    .unwrap_err();
    assert!(err.contains("larger than this host's memory"), "{err}");
    assert!(run(|| async { keel_bdev::get_bdev("pop_huge").is_none() }));
}
