//! End-to-end tests of the uring (and aio) bdev module on temp files in /tmp.

use keel_bdev::modules::uring::{self, Flavor, UringConfig};
use keel_bdev::{BdevError, IoStatus, IoType, SubmitError};
use keel_testkit::prelude::*;
use std::os::unix::fs::FileExt;

const MIB: u64 = 1 << 20;

fn cfg(file: &TempFile, name: &str, block_size: Option<u32>, flavor: Flavor) -> UringConfig {
    UringConfig {
        filename: file.0.clone(),
        name: name.into(),
        block_size,
        uuid: None,
        flavor,
    }
}

fn create(file: &TempFile, name: &str) {
    let c = cfg(file, name, None, Flavor::Uring);
    run(move || async move { uring::create(&c).map(|_| ()) }).expect("create uring bdev");
}

fn delete(name: &'static str, aio: bool) {
    run(move || async move { uring::delete(name, aio).await }).expect("delete");
}

#[test]
fn aligned_round_trip_uses_o_direct_and_lands_in_the_file() {
    let f = TempFile::new("uring-aligned", 4 * MIB);
    create(&f, "u_aligned");
    let o_direct = uring::uses_o_direct("u_aligned").unwrap();
    let before = uring::uring_stats("u_aligned").unwrap();
    let (w, r, same) = run(|| async {
        let (_desc, ch) = open_rw("u_aligned");
        let data = pattern(16384, 7);
        let mut buf = dma(16384, 0);
        buf.as_mut_slice().copy_from_slice(&data);
        let (w, r, back) = write_then_read(&ch, 8, &mut buf).await;
        (w, r, back.as_slice() == data.as_slice())
    });
    assert_eq!((w, r), (IoStatus::Success, IoStatus::Success));
    assert!(same, "read back what was written");
    let after = uring::uring_stats("u_aligned").unwrap();
    if o_direct {
        assert_eq!(
            after.direct_ios - before.direct_ios,
            2,
            "aligned I/O went O_DIRECT"
        );
    } else {
        assert_eq!(after.buffered_ios - before.buffered_ios, 2);
    }
    // Block 8 of 512 bytes is byte 4096 of the file.
    let mut onfile = vec![0u8; 16384];
    std::fs::File::open(&f.0)
        .unwrap()
        .read_exact_at(&mut onfile, 4096)
        .unwrap();
    assert_eq!(onfile, pattern(16384, 7));
    delete("u_aligned", false);
}

#[test]
fn unaligned_buffers_take_the_buffered_path() {
    let f = TempFile::new("uring-unaligned", 2 * MIB);
    create(&f, "u_unaligned");
    let before = uring::uring_stats("u_unaligned").unwrap();
    let ok = run(|| async {
        let (_desc, ch) = open_rw("u_unaligned");
        // Three iovecs at odd addresses, 1536 bytes = 3 blocks.
        let mut src = vec![0u8; 4000];
        let data = pattern(1536, 42);
        src[1..513].copy_from_slice(&data[..512]);
        src[1001..1769].copy_from_slice(&data[512..1280]);
        src[2003..2259].copy_from_slice(&data[1280..]);
        let iovs = [
            iov_slice(&mut src[1..513]),
            iov_slice(&mut src[1001..1769]),
            iov_slice(&mut src[2003..2259]),
        ];
        let w = one(|cb, ctx| ch.write(&iovs, 100, 3, cb, ctx))
            .await
            .unwrap();
        let mut dst = vec![0u8; 1537];
        let r = one(|cb, ctx| ch.read(&[iov_slice(&mut dst[1..])], 100, 3, cb, ctx))
            .await
            .unwrap();
        // And through the aligned path: the page cache and direct I/O agree.
        let mut aligned = dma(4096, 0);
        let r2 = one(|cb, ctx| ch.read(&[iov(&mut aligned)], 96, 8, cb, ctx))
            .await
            .unwrap();
        (w, r, r2) == (IoStatus::Success, IoStatus::Success, IoStatus::Success)
            && dst[1..] == data[..]
            && aligned.as_slice()[2048..3584] == data[..]
    });
    assert!(ok, "unaligned write/read round trip");
    let after = uring::uring_stats("u_unaligned").unwrap();
    assert!(after.buffered_ios - before.buffered_ios >= 2);
    delete("u_unaligned", false);
}

#[test]
fn flush_write_zeroes_and_unmap() {
    let f = TempFile::new("uring-zeroes", MIB);
    create(&f, "u_zeroes");
    let (supported, statuses, zeroed, kept) = run(|| async {
        let (desc, ch) = open_rw("u_zeroes");
        let b = desc.bdev();
        let supported = [
            IoType::Flush,
            IoType::WriteZeroes,
            IoType::Unmap,
            IoType::Reset,
        ]
        .map(|t| b.io_type_supported(t));
        let mut buf = dma(8192, 0xab);
        let w = one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 16, cb, ctx))
            .await
            .unwrap();
        let z = one(|cb, ctx| ch.write_zeroes(4, 4, cb, ctx)).await.unwrap();
        let fl = one(|cb, ctx| ch.flush(cb, ctx)).await.unwrap();
        let u = one(|cb, ctx| ch.unmap(12, 4, cb, ctx)).await.unwrap();
        let rs = one(|cb, ctx| ch.reset(cb, ctx)).await.unwrap();
        let mut back = dma(8192, 0x11);
        let r = one(|cb, ctx| ch.read(&[iov(&mut back)], 0, 16, cb, ctx))
            .await
            .unwrap();
        let s = back.as_slice();
        (
            supported,
            [w, z, fl, u, rs, r],
            s[2048..4096].iter().all(|&x| x == 0),
            s[..2048].iter().chain(&s[4096..6144]).all(|&x| x == 0xab),
        )
    });
    assert_eq!(supported, [true; 4]);
    assert_eq!(statuses, [IoStatus::Success; 6]);
    assert!(zeroed, "write_zeroes range reads as zeroes");
    assert!(kept, "data around it is intact");
    delete("u_zeroes", false);
}

#[test]
fn many_ios_share_few_ring_enters() {
    let f = TempFile::new("uring-batch", 4 * MIB);
    create(&f, "u_batch");
    let before = uring::uring_stats("u_batch").unwrap();
    const N: usize = 64;
    let statuses = run(|| async {
        let (_desc, ch) = open_rw("u_batch");
        let mut bufs: Vec<_> = (0..N).map(|i| dma(4096, i as u8)).collect();
        let b = Batch::new();
        for (i, buf) in bufs.iter_mut().enumerate() {
            let v = [iov(buf)];
            b.submit(|cb, ctx| ch.write(&v, i as u64 * 8, 8, cb, ctx))
                .unwrap();
        }
        let w = b.wait().await;
        let r = Batch::new();
        for (i, buf) in bufs.iter_mut().enumerate() {
            let v = [iov(buf)];
            r.submit(|cb, ctx| ch.read(&v, i as u64 * 8, 8, cb, ctx))
                .unwrap();
        }
        let mut all = w;
        all.extend(r.wait().await);
        all
    });
    assert_eq!(statuses.len(), 2 * N);
    assert!(statuses.iter().all(|&s| s == IoStatus::Success));
    let after = uring::uring_stats("u_batch").unwrap();
    eprintln!(
        "batch stats: {after:?}, o_direct {:?}",
        uring::uses_o_direct("u_batch")
    );
    let enters = after.enters - before.enters;
    let sqes = after.sqes - before.sqes;
    assert!(sqes >= 2 * N as u64, "{sqes} SQEs for {} I/Os", 2 * N);
    assert!(
        enters <= 8,
        "{enters} io_uring_enter calls for {} I/Os submitted in two bursts",
        2 * N
    );
    delete("u_batch", false);
}

#[test]
fn bad_files_and_parameters_are_refused() {
    let small = TempFile::new("uring-small", 100);
    let c = cfg(&small, "u_small", None, Flavor::Uring);
    let e = run(move || async move { uring::create(&c).map(|_| ()) }).unwrap_err();
    assert!(
        matches!(&e, BdevError::Invalid(m) if m.contains("too small")),
        "{e}"
    );

    let f = TempFile::new("uring-params", MIB);
    let c = cfg(&f, "u_params", Some(1000), Flavor::Uring);
    let e = run(move || async move { uring::create(&c).map(|_| ()) }).unwrap_err();
    assert!(e.to_string().contains("power of two"), "{e}");

    let missing = UringConfig {
        filename: "/tmp/keel-does-not-exist".into(),
        name: "u_missing".into(),
        block_size: None,
        uuid: None,
        flavor: Flavor::Uring,
    };
    let e = run(move || async move { uring::create(&missing).map(|_| ()) }).unwrap_err();
    assert_eq!(e.errno(), -libc::ENOENT, "{e}");

    create(&f, "u_params");
    let c = cfg(&f, "u_params", None, Flavor::Uring);
    let e = run(move || async move { uring::create(&c).map(|_| ()) }).unwrap_err();
    assert_eq!(e.errno(), -libc::EEXIST);
    // The aio delete does not remove a uring bdev.
    let e = run(|| async { uring::delete("u_params", true).await }).unwrap_err();
    assert_eq!(e.errno(), -libc::ENODEV);
    delete("u_params", false);
    let e = run(|| async { uring::delete("u_params", false).await }).unwrap_err();
    assert_eq!(e.errno(), -libc::ENODEV);
}

#[test]
fn readonly_aio_refuses_writes_and_reports_config() {
    let f = TempFile::new("aio-ro", MIB);
    std::fs::File::options()
        .write(true)
        .open(&f.0)
        .unwrap()
        .write_all_at(&[0x5a; 4096], 0)
        .unwrap();
    let c = cfg(
        &f,
        "a_ro",
        Some(4096),
        Flavor::Aio {
            readonly: true,
            fallocate: false,
        },
    );
    run(move || async move { uring::create(&c).map(|_| ()) }).expect("create aio");
    let (write, read, data, product, call, specific) = run(|| async {
        let desc = keel_bdev::open("a_ro", false, |_| {}).unwrap();
        let ch = desc.get_io_channel().unwrap();
        let mut buf = dma(4096, 0);
        let write = one(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 1, cb, ctx))
            .await
            .err();
        let read = one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
            .await
            .unwrap();
        let b = desc.bdev();
        let call = b.backend().config_call(b.info()).unwrap();
        (
            write,
            read,
            buf.as_slice().iter().all(|&x| x == 0x5a),
            b.backend().product_name(),
            call,
            b.backend().driver_specific(),
        )
    });
    assert_eq!(write, Some(SubmitError::Unsupported));
    assert_eq!(read, IoStatus::Success);
    assert!(data);
    assert_eq!(product, "AIO disk");
    assert_eq!(call.method, "bdev_aio_create");
    assert_eq!(call.params["readonly"], true);
    assert_eq!(call.params["block_size"], 4096);
    assert_eq!(call.params["filename"], f.0.as_str());
    assert_eq!(specific["aio"]["readonly"], true);
    delete("a_ro", true);
}

#[test]
fn uring_config_call_recreates_the_bdev() {
    let f = TempFile::new("uring-config", MIB);
    create(&f, "u_config");
    let (call, specific, product) = run(|| async {
        let b = keel_bdev::get_bdev("u_config").unwrap();
        (
            b.backend().config_call(b.info()).unwrap(),
            b.backend().driver_specific(),
            b.backend().product_name(),
        )
    });
    assert_eq!(product, "URING bdev");
    assert_eq!(call.method, "bdev_uring_create");
    assert_eq!(call.params["name"], "u_config");
    assert_eq!(call.params["block_size"], 512);
    assert_eq!(specific["uring"]["filename"], f.0.as_str());
    assert!(specific["uring"]["o_direct"].is_boolean());
    delete("u_config", false);
}

#[test]
fn a_read_cut_short_by_the_file_end_continues_then_fails() {
    let f = TempFile::new("uring-short", MIB);
    create(&f, "u_short");
    // Shrink the file under the bdev: its last two blocks now end 256 bytes early.
    std::fs::File::options()
        .write(true)
        .open(&f.0)
        .unwrap()
        .set_len(MIB - 256)
        .unwrap();
    let before = uring::uring_stats("u_short").unwrap();
    let (tail, head) = run(|| async {
        let (_desc, ch) = open_rw("u_short");
        let mut buf = dma(1024, 0);
        let last = MIB / 512 - 2;
        let tail = one(|cb, ctx| ch.read(&[iov(&mut buf)], last, 2, cb, ctx))
            .await
            .unwrap();
        let head = one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 2, cb, ctx))
            .await
            .unwrap();
        (tail, head)
    });
    assert_eq!(
        tail,
        IoStatus::IoError,
        "the missing bytes are an error, not zeroes"
    );
    assert_eq!(head, IoStatus::Success);
    let after = uring::uring_stats("u_short").unwrap();
    assert!(
        after.resubmits > before.resubmits,
        "the short read was continued"
    );
    delete("u_short", false);
}
