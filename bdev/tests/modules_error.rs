//! End-to-end tests of the error-injection bdev module over malloc bdevs.

use keel_bdev::modules::error::{self, ErrorKind, InjectTarget};
use keel_bdev::modules::malloc;
use keel_bdev::{IoStatus, IoType};
use keel_testkit::prelude::*;

/// Create malloc `base` (1 MiB, 512-byte blocks) and `EE_<base>` on it.
fn setup(base: &'static str) -> String {
    run(move || async move {
        malloc::create(base, 2048, 512, None)?;
        error::create(base, None).map(|b| b.name().to_string())
    })
    .expect("create malloc + error bdev")
}

fn teardown(base: &'static str) {
    run(move || async move {
        error::delete(&format!("EE_{base}")).await?;
        malloc::delete(base).await
    })
    .expect("delete error bdev + malloc");
}

fn inject(name: &str, target: InjectTarget, kind: ErrorKind, num: u32) {
    error::inject_error(name, target, kind, num, 0, 0).expect("inject");
}

#[test]
fn failures_hit_exactly_num_ios_then_clear() {
    let name = setup("m_fail");
    assert_eq!(name, "EE_m_fail");
    inject(
        "EE_m_fail",
        InjectTarget::Io(IoType::Read),
        ErrorKind::Failure,
        3,
    );
    assert_eq!(error::remaining("EE_m_fail", IoType::Read), Some(3));
    let (reads, write) = run(|| async {
        let (_desc, ch) = open_rw("EE_m_fail");
        let mut buf = dma(512, 0);
        let mut reads = Vec::new();
        for _ in 0..5 {
            reads.push(
                one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
                    .await
                    .unwrap(),
            );
        }
        let write = one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 1, cb, ctx))
            .await
            .unwrap();
        (reads, write)
    });
    use IoStatus::{IoError, Success};
    assert_eq!(reads, [IoError, IoError, IoError, Success, Success]);
    assert_eq!(write, Success, "other types unaffected");
    assert_eq!(error::remaining("EE_m_fail", IoType::Read), Some(0));

    inject("EE_m_fail", InjectTarget::All, ErrorKind::Failure, 5);
    inject("EE_m_fail", InjectTarget::Clear, ErrorKind::Failure, 0);
    let after_clear = run(|| async {
        let (_desc, ch) = open_rw("EE_m_fail");
        [
            one(|cb, ctx| ch.flush(cb, ctx)).await.unwrap(),
            one(|cb, ctx| ch.unmap(0, 8, cb, ctx)).await.unwrap(),
            one(|cb, ctx| ch.write_zeroes(0, 8, cb, ctx)).await.unwrap(),
        ]
    });
    assert_eq!(after_clear, [Success; 3]);
    teardown("m_fail");
}

#[test]
fn all_types_fail_with_all() {
    setup("m_all");
    inject("EE_m_all", InjectTarget::All, ErrorKind::Failure, 1);
    let statuses = run(|| async {
        let (_desc, ch) = open_rw("EE_m_all");
        let mut buf = dma(512, 0);
        [
            one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
                .await
                .unwrap(),
            one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 1, cb, ctx))
                .await
                .unwrap(),
            one(|cb, ctx| ch.flush(cb, ctx)).await.unwrap(),
            one(|cb, ctx| ch.unmap(0, 8, cb, ctx)).await.unwrap(),
            one(|cb, ctx| ch.write_zeroes(0, 8, cb, ctx)).await.unwrap(),
            one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
                .await
                .unwrap(),
        ]
    });
    use IoStatus::{IoError, Success};
    assert_eq!(
        statuses,
        [IoError, IoError, IoError, IoError, IoError, Success]
    );
    teardown("m_all");
}

#[test]
fn pending_ios_wait_for_clear_then_reach_the_base() {
    setup("m_pend");
    inject(
        "EE_m_pend",
        InjectTarget::Io(IoType::Write),
        ErrorKind::Pending,
        1,
    );
    let (held, write, data_ok) = run(|| async {
        let (_desc, ch) = open_rw("EE_m_pend");
        let mut buf = dma(512, 0x77);
        let b = Batch::new();
        b.submit(|cb, ctx| ch.write(&[iov(&mut buf)], 3, 1, cb, ctx))
            .unwrap();
        // Other I/O keeps flowing while the write hangs.
        let mut other = dma(512, 0);
        let r = one(|cb, ctx| ch.read(&[iov(&mut other)], 100, 1, cb, ctx))
            .await
            .unwrap();
        yield_iterations(50).await;
        let held = b.outstanding() == 1 && r == IoStatus::Success;
        error::inject_error(
            "EE_m_pend",
            InjectTarget::Clear,
            ErrorKind::Failure,
            0,
            0,
            0,
        )
        .unwrap();
        let write = b.wait().await[0];
        let mut back = dma(512, 0);
        one(|cb, ctx| ch.read(&[iov(&mut back)], 3, 1, cb, ctx))
            .await
            .unwrap();
        (held, write, back.as_slice().iter().all(|&x| x == 0x77))
    });
    assert!(held, "the pending write did not complete before the clear");
    assert_eq!(write, IoStatus::Success);
    assert!(data_ok, "the released write reached the base");
    teardown("m_pend");
}

#[test]
fn reset_aborts_pending_ios() {
    setup("m_prst");
    inject(
        "EE_m_prst",
        InjectTarget::Io(IoType::Read),
        ErrorKind::Pending,
        2,
    );
    let (reads, reset) = run(|| async {
        let (_desc, ch) = open_rw("EE_m_prst");
        let mut a = dma(512, 0);
        let mut b2 = dma(512, 0);
        let b = Batch::new();
        b.submit(|cb, ctx| ch.read(&[iov(&mut a)], 0, 1, cb, ctx))
            .unwrap();
        b.submit(|cb, ctx| ch.read(&[iov(&mut b2)], 1, 1, cb, ctx))
            .unwrap();
        yield_iterations(20).await;
        assert_eq!(b.outstanding(), 2);
        let reset = one(|cb, ctx| ch.reset(cb, ctx)).await.unwrap();
        (b.wait().await, reset)
    });
    assert_eq!(reads, [IoStatus::Aborted, IoStatus::Aborted]);
    assert_eq!(reset, IoStatus::Success);
    teardown("m_prst");
}

#[test]
fn corrupt_data_flips_read_and_write_bytes() {
    setup("m_cor");
    let (clean, read_corrupt, read_again, written) = run(|| async {
        let (_desc, ch) = open_rw("EE_m_cor");
        let mut buf = dma(1024, 0x10);
        one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 2, cb, ctx))
            .await
            .unwrap();
        error::inject_error(
            "EE_m_cor",
            InjectTarget::Io(IoType::Read),
            ErrorKind::CorruptData,
            1,
            700,
            0xff,
        )
        .unwrap();
        let mut r1 = dma(1024, 0);
        one(|cb, ctx| ch.read(&[iov(&mut r1)], 0, 2, cb, ctx))
            .await
            .unwrap();
        let mut r2 = dma(1024, 0);
        one(|cb, ctx| ch.read(&[iov(&mut r2)], 0, 2, cb, ctx))
            .await
            .unwrap();
        let read_corrupt: Vec<usize> = (0..1024).filter(|&i| r1.as_slice()[i] != 0x10).collect();
        let read_again = r2.as_slice().iter().all(|&x| x == 0x10);

        error::inject_error(
            "EE_m_cor",
            InjectTarget::Io(IoType::Write),
            ErrorKind::CorruptData,
            1,
            5,
            0x01,
        )
        .unwrap();
        let mut w = dma(512, 0x20);
        one(|cb, ctx| ch.write(&[iov(&mut w)], 4, 1, cb, ctx))
            .await
            .unwrap();
        let mut r3 = dma(512, 0);
        one(|cb, ctx| ch.read(&[iov(&mut r3)], 4, 1, cb, ctx))
            .await
            .unwrap();
        let written: Vec<(usize, u8)> = (0..512)
            .filter(|&i| r3.as_slice()[i] != 0x20)
            .map(|i| (i, r3.as_slice()[i]))
            .collect();
        (true, read_corrupt, read_again, written)
    });
    assert!(clean);
    assert_eq!(
        read_corrupt,
        [700],
        "exactly byte 700 of the read was flipped"
    );
    assert!(read_again, "only one read corrupted");
    assert_eq!(
        written,
        [(5, 0x21)],
        "byte 5 of the write reached the base flipped"
    );
    let e = error::inject_error(
        "EE_m_cor",
        InjectTarget::All,
        ErrorKind::CorruptData,
        1,
        0,
        0,
    )
    .unwrap_err();
    assert_eq!(e.errno(), -libc::EINVAL);
    teardown("m_cor");
}

#[test]
fn injections_are_shared_by_all_cores() {
    setup("m_mc");
    let cores = cores();
    assert!(cores.len() >= 2, "the harness runs two reactors");
    inject(
        "EE_m_mc",
        InjectTarget::Io(IoType::Read),
        ErrorKind::Failure,
        10,
    );
    let per_core: Vec<Vec<IoStatus>> = std::thread::scope(|s| {
        let hs: Vec<_> = cores
            .iter()
            .map(|&c| {
                s.spawn(move || {
                    run_on(c, || async {
                        let (_desc, ch) = open_rw("EE_m_mc");
                        let mut bufs: Vec<_> = (0..10).map(|_| dma(512, 0)).collect();
                        let b = Batch::new();
                        for (i, buf) in bufs.iter_mut().enumerate() {
                            let v = [iov(buf)];
                            b.submit(|cb, ctx| ch.read(&v, i as u64, 1, cb, ctx))
                                .unwrap();
                        }
                        b.wait().await
                    })
                })
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let failed = per_core
        .iter()
        .flatten()
        .filter(|&&s| s == IoStatus::IoError)
        .count();
    let ok = per_core
        .iter()
        .flatten()
        .filter(|&&s| s == IoStatus::Success)
        .count();
    assert_eq!((failed, ok), (10, 10 * (cores.len() - 1)));
    teardown("m_mc");
}

#[test]
fn create_errors_hot_remove_and_reporting() {
    setup("m_ee");
    let (dup, missing, claimed, specific, call, product) = run(|| async {
        let dup = error::create("m_ee", None).err().map(|e| e.errno());
        let missing = error::create("m_missing", None)
            .err()
            .map(|e| e.to_string());
        let b = keel_bdev::get_bdev("EE_m_ee").unwrap();
        error::inject_error(
            "EE_m_ee",
            InjectTarget::Io(IoType::Write),
            ErrorKind::Pending,
            4,
            0,
            0,
        )
        .unwrap();
        (
            dup,
            missing,
            keel_bdev::get_bdev("m_ee").unwrap().claimed_by(),
            b.backend().driver_specific(),
            b.backend().config_call(b.info()).unwrap(),
            b.backend().product_name(),
        )
    });
    assert_eq!(dup, Some(-libc::EEXIST));
    assert_eq!(missing.as_deref(), Some("bdev m_missing not found"));
    assert_eq!(claimed.as_deref(), Some("error"));
    assert_eq!(product, "Error disk");
    assert_eq!(specific["error_disk"]["base_bdev"], "m_ee");
    assert_eq!(specific["error_disk"]["injections"]["write"]["num"], 4);
    assert_eq!(call.method, "bdev_error_create");
    assert_eq!(call.params["base_name"], "m_ee");
    assert_eq!(
        error::inject_error("EE_nope", InjectTarget::All, ErrorKind::Failure, 1, 0, 0)
            .unwrap_err()
            .errno(),
        -libc::ENODEV
    );
    // Deleting the base takes the error bdev with it.
    let gone = run(|| async {
        malloc::delete("m_ee").await.unwrap();
        keel_bdev::get_bdev("EE_m_ee").is_none()
    });
    assert!(gone);
    assert_eq!(error::remaining("EE_m_ee", IoType::Write), None);
}

#[test]
fn nvme_failure_completes_with_the_mapped_status() {
    setup("m_nvme");
    // 0/0x07 (abort) for every type, 0/0x81 (capacity exceeded) for writes, 2/0x81
    // (unrecovered read error) for reads: the outcomes the NVMe-oF target answers so.
    let abort = ErrorKind::nvme(0, 0x07, InjectTarget::All).unwrap();
    let no_space = ErrorKind::nvme(0, 0x81, InjectTarget::Io(IoType::Write)).unwrap();
    let read_err = ErrorKind::nvme(2, 0x81, InjectTarget::Io(IoType::Read)).unwrap();
    assert_eq!(abort.name(), "nvme_failure");
    inject("EE_m_nvme", InjectTarget::Io(IoType::Flush), abort, 1);
    inject("EE_m_nvme", InjectTarget::Io(IoType::Write), no_space, 1);
    inject("EE_m_nvme", InjectTarget::Io(IoType::Read), read_err, 1);
    let got = run(|| async {
        let (_desc, ch) = open_rw("EE_m_nvme");
        let mut buf = dma(512, 0);
        [
            one(|cb, ctx| ch.flush(cb, ctx)).await.unwrap(),
            one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 1, cb, ctx))
                .await
                .unwrap(),
            one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
                .await
                .unwrap(),
            one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
                .await
                .unwrap(),
        ]
    });
    use IoStatus::{Aborted, IoError, NoSpace, Success};
    assert_eq!(got, [Aborted, NoSpace, IoError, Success]);
    // A status the bdev layer cannot carry (or not for that type) is refused with the list.
    let e = ErrorKind::nvme(0, 0x0b, InjectTarget::Io(IoType::Read)).unwrap_err();
    assert!(
        e.contains("nvme_sct=0 nvme_sc=11") && e.contains("2/0x81"),
        "{e}"
    );
    assert!(
        error::inject_error(
            "EE_m_nvme",
            InjectTarget::All,
            ErrorKind::Complete(Success),
            1,
            0,
            0
        )
        .is_err(),
        "success is no error to inject"
    );
    let e = ErrorKind::nvme(2, 0x81, InjectTarget::All).unwrap_err();
    assert!(!e.contains("2/0x81") && e.contains("0/0x07"), "{e}");
    teardown("m_nvme");
}
