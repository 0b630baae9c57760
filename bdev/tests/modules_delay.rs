//! End-to-end tests of the delay bdev module over malloc bdevs.

use keel_bdev::modules::{delay, malloc, null};
use keel_bdev::{BdevError, IoStatus, IoType};
use keel_testkit::prelude::*;
use std::time::{Duration, Instant};

fn config(base: &str, name: &str, read_us: u64, write_us: u64) -> delay::DelayConfig {
    delay::DelayConfig {
        base_bdev_name: base.into(),
        name: name.into(),
        avg_read_latency: read_us,
        p99_read_latency: read_us,
        avg_write_latency: write_us,
        p99_write_latency: write_us,
        uuid: None,
    }
}

/// Create malloc `base` (1 MiB, 512-byte blocks) and delay `name` on it.
fn setup(base: &'static str, name: &'static str, read_us: u64, write_us: u64) {
    run(move || async move {
        malloc::create(base, 2048, 512, None)?;
        delay::create(&config(base, name, read_us, write_us)).map(|_| ())
    })
    .expect("create malloc + delay");
}

fn teardown(base: &'static str, name: &'static str) {
    run(move || async move {
        delay::delete(name).await?;
        malloc::delete(base).await
    })
    .expect("delete delay + malloc");
}

#[test]
fn ios_complete_no_sooner_than_the_latency() {
    setup("m_lat", "d_lat", 2_000, 3_000);
    let (w, r, same, wt, rt) = run(|| async {
        let (_desc, ch) = open_rw("d_lat");
        let data = pattern(4096, 3);
        let mut buf = dma(4096, 0);
        buf.as_mut_slice().copy_from_slice(&data);
        let t = Instant::now();
        let w = one(|cb, ctx| ch.write(&[iov(&mut buf)], 16, 8, cb, ctx))
            .await
            .unwrap();
        let wt = t.elapsed();
        let mut back = dma(4096, 0);
        let t = Instant::now();
        let r = one(|cb, ctx| ch.read(&[iov(&mut back)], 16, 8, cb, ctx))
            .await
            .unwrap();
        let rt = t.elapsed();
        (w, r, back.as_slice() == data.as_slice(), wt, rt)
    });
    assert_eq!((w, r), (IoStatus::Success, IoStatus::Success));
    assert!(same, "data passes through");
    assert!(wt >= Duration::from_micros(3_000), "write took {wt:?}");
    assert!(rt >= Duration::from_micros(2_000), "read took {rt:?}");
    teardown("m_lat", "d_lat");
}

#[test]
fn unmap_reads_zeroes_is_the_base_answer() {
    setup("m_dlfeat", "d_dlfeat", 10, 10);
    let over_null = run(|| async {
        null::create("n_dlfeat", 64, 512, None)?;
        let d = delay::create(&config("n_dlfeat", "dn_dlfeat", 10, 10))?;
        let answer = d.unmap_reads_zeroes();
        delay::delete("dn_dlfeat").await?;
        null::delete("n_dlfeat").await?;
        Ok::<_, BdevError>(answer)
    })
    .expect("delay over null");
    let over_malloc = keel_bdev::get_bdev("d_dlfeat")
        .unwrap()
        .unmap_reads_zeroes();
    teardown("m_dlfeat", "d_dlfeat");
    assert!(over_malloc, "malloc zeroes unmapped blocks");
    assert!(!over_null, "null promises nothing");
}

#[test]
fn latency_updates_apply_and_show_in_driver_specific() {
    setup("m_upd", "d_upd", 10, 10);
    delay::update_latency("d_upd", "avg_read", 4_000).unwrap();
    delay::update_latency("d_upd", "p99_read", 4_000).unwrap();
    let (r, rt, flush, specific, call) = run(|| async {
        let (desc, ch) = open_rw("d_upd");
        let mut buf = dma(512, 0);
        let t = Instant::now();
        let r = one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
            .await
            .unwrap();
        let rt = t.elapsed();
        let flush = one(|cb, ctx| ch.flush(cb, ctx)).await.unwrap();
        let b = desc.bdev();
        (
            r,
            rt,
            flush,
            b.backend().driver_specific(),
            b.backend().config_call(b.info()).unwrap(),
        )
    });
    assert_eq!((r, flush), (IoStatus::Success, IoStatus::Success));
    assert!(rt >= Duration::from_micros(4_000), "read took {rt:?}");
    let d = &specific["delay"];
    assert_eq!(d["base_bdev_name"], "m_upd");
    assert_eq!(d["avg_read_latency"], 4_000);
    assert_eq!(d["p99_read_latency"], 4_000);
    assert_eq!(d["avg_write_latency"], 10);
    assert_eq!(call.method, "bdev_delay_create");
    assert_eq!(call.params["name"], "d_upd");
    assert_eq!(call.params["p99_write_latency"], 10);

    let e = delay::update_latency("d_upd", "p50_read", 1).unwrap_err();
    assert!(matches!(e, BdevError::Invalid(_)), "{e}");
    let e = delay::update_latency("nope", "avg_read", 1).unwrap_err();
    assert_eq!(e.errno(), -libc::ENODEV);
    teardown("m_upd", "d_upd");
}

#[test]
fn base_is_claimed_and_creation_errors_are_clear() {
    setup("m_claim", "d_claim", 0, 0);
    let (claimed_by, open_err, dup, missing, p99, supported) = run(|| async {
        let b = keel_bdev::get_bdev("m_claim").unwrap();
        let open_err = keel_bdev::open("m_claim", true, |_| {})
            .err()
            .map(|e| e.errno());
        let dup = delay::create(&config("m_claim", "d_claim", 0, 0))
            .err()
            .map(|e| e.errno());
        let missing = delay::create(&config("no_such_base", "d_x", 0, 0))
            .err()
            .map(|e| e.to_string());
        let mut bad = config("m_claim", "d_y", 10, 10);
        bad.p99_read_latency = 5;
        let p99 = delay::create(&bad).err().map(|e| e.errno());
        let d = keel_bdev::get_bdev("d_claim").unwrap();
        let supported = IoType::ALL
            .map(|t| d.io_type_supported(t) == b.io_type_supported(t) || t == IoType::Reset);
        (b.claimed_by(), open_err, dup, missing, p99, supported)
    });
    assert_eq!(claimed_by.as_deref(), Some("delay"));
    assert_eq!(open_err, Some(-libc::EPERM));
    assert_eq!(dup, Some(-libc::EEXIST));
    assert_eq!(missing.as_deref(), Some("bdev no_such_base not found"));
    assert_eq!(p99, Some(-libc::EINVAL));
    assert!(
        supported.iter().all(|&s| s),
        "io types pass through the base's support"
    );
    teardown("m_claim", "d_claim");
    let claimed = run(|| async { keel_bdev::get_bdev("m_claim").map(|b| b.claimed_by()) });
    assert!(claimed.is_none(), "base deleted too");
}

#[test]
fn delete_releases_the_base_claim() {
    setup("m_rel", "d_rel", 0, 0);
    let claim = run(|| async {
        delay::delete("d_rel").await.unwrap();
        keel_bdev::get_bdev("m_rel").unwrap().claimed_by()
    });
    assert_eq!(claim, None);
    let e = run(|| async { delay::delete("d_rel").await }).unwrap_err();
    assert_eq!(e.errno(), -libc::ENODEV);
    run(|| async { malloc::delete("m_rel").await }).unwrap();
}

#[test]
fn removing_the_base_removes_the_delay_bdev() {
    setup("m_hot", "d_hot", 100, 100);
    let gone = run(|| async {
        // A consumer of the delay bdev that closes its descriptor when told the bdev goes.
        let slot = std::sync::Arc::new(std::sync::Mutex::new(None));
        let on_remove = std::sync::Arc::clone(&slot);
        let desc = keel_bdev::open("d_hot", true, move |_| {
            drop(on_remove.lock().unwrap().take())
        })
        .unwrap();
        let ch = desc.get_io_channel().unwrap();
        let mut buf = dma(512, 1);
        let w = one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 1, cb, ctx))
            .await
            .unwrap();
        drop(ch);
        *slot.lock().unwrap() = Some(desc);
        malloc::delete("m_hot").await.unwrap();
        let closed = slot.lock().unwrap().is_none();
        (
            w,
            closed,
            keel_bdev::get_bdev("d_hot").is_none(),
            keel_bdev::get_bdev("m_hot").is_none(),
        )
    });
    assert_eq!(gone, (IoStatus::Success, true, true, true));
    let e = run(|| async { delay::delete("d_hot").await }).unwrap_err();
    assert_eq!(e.errno(), -libc::ENODEV);
}

#[test]
fn reset_aborts_held_ios() {
    // Reads are held ten seconds: only the reset can finish them within the test.
    setup("m_rst", "d_rst", 10_000_000, 0);
    let (read, reset) = run(|| async {
        let (_desc, ch) = open_rw("d_rst");
        let mut buf = dma(512, 0);
        let b = Batch::new();
        b.submit(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
            .unwrap();
        // Let the base complete the read, so the delay channel holds it.
        yield_iterations(50).await;
        assert_eq!(b.outstanding(), 1, "the read is held");
        let reset = one(|cb, ctx| ch.reset(cb, ctx)).await.unwrap();
        (b.wait().await[0], reset)
    });
    assert_eq!((read, reset), (IoStatus::Aborted, IoStatus::Success));
    teardown("m_rst", "d_rst");
}
