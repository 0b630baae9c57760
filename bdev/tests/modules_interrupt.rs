//! The uring, delay and error modules on reactors in interrupt mode, where a reactor sleeps
//! between events: completions must wake it (uring's eventfd), deadlines must too (delay's
//! timed poller), and a clear on one core must reach channels on the others (error).

use keel_bdev::modules::error::{self, ErrorKind, InjectTarget};
use keel_bdev::modules::uring::{self, Flavor, UringConfig};
use keel_bdev::modules::{delay, malloc};
use keel_bdev::{IoStatus, IoType};
use keel_testkit::prelude::*;
use std::time::{Duration, Instant};

#[test]
fn uring_completions_wake_the_reactor() {
    use_interrupt_mode();
    let f = TempFile::new("irq-uring", 1 << 20);
    let c = UringConfig {
        filename: f.0.clone(),
        name: "irq_u".into(),
        block_size: None,
        uuid: None,
        flavor: Flavor::Uring,
    };
    run(move || async move { uring::create(&c).map(|_| ()) }).unwrap();
    let ok = run(|| async {
        let (_desc, ch) = open_rw("irq_u");
        let mut all_ok = true;
        for i in 0..20u8 {
            let mut buf = dma(4096, i);
            let (w, r, back) = write_then_read(&ch, u64::from(i) * 8, &mut buf).await;
            all_ok &= w == IoStatus::Success
                && r == IoStatus::Success
                && back.as_slice().iter().all(|&x| x == i);
        }
        all_ok
    });
    assert!(ok);
    run(|| async { uring::delete("irq_u", false).await }).unwrap();
}

#[test]
fn delay_deadlines_fire_while_the_reactor_sleeps() {
    use_interrupt_mode();
    run(|| async {
        malloc::create("irq_m", 2048, 512, None)?;
        delay::create(&delay::DelayConfig {
            base_bdev_name: "irq_m".into(),
            name: "irq_d".into(),
            avg_read_latency: 1_000,
            p99_read_latency: 1_000,
            avg_write_latency: 1_000,
            p99_write_latency: 1_000,
            uuid: None,
        })
        .map(|_| ())
    })
    .unwrap();
    let (statuses, took) = run(|| async {
        let (_desc, ch) = open_rw("irq_d");
        let mut buf = dma(512, 0);
        let t = Instant::now();
        let mut s = Vec::new();
        for _ in 0..5 {
            s.push(
                one(|cb, ctx| ch.read(&[iov(&mut buf)], 0, 1, cb, ctx))
                    .await
                    .unwrap(),
            );
        }
        (s, t.elapsed())
    });
    assert_eq!(statuses, [IoStatus::Success; 5]);
    assert!(
        took >= Duration::from_millis(5),
        "five held reads took {took:?}"
    );
    run(|| async {
        delay::delete("irq_d").await?;
        malloc::delete("irq_m").await
    })
    .unwrap();
}

#[test]
fn error_clear_reaches_other_cores() {
    use_interrupt_mode();
    let cores = cores();
    let other = *cores.last().unwrap();
    run(|| async {
        malloc::create("irq_e", 2048, 512, None)?;
        error::create("irq_e", None).map(|_| ())
    })
    .unwrap();
    error::inject_error(
        "EE_irq_e",
        InjectTarget::Io(IoType::Write),
        ErrorKind::Pending,
        1,
        0,
        0,
    )
    .unwrap();
    // The pending write sits on the last core; the clear comes from this (non-reactor) thread.
    let (tx, rx) = std::sync::mpsc::channel();
    let waiter = std::thread::spawn(move || {
        run_on(other, move || async move {
            let (_desc, ch) = open_rw("EE_irq_e");
            let mut buf = dma(512, 9);
            let b = Batch::new();
            b.submit(|cb, ctx| ch.write(&[iov(&mut buf)], 0, 1, cb, ctx))
                .unwrap();
            yield_iterations(10).await;
            tx.send(b.outstanding()).unwrap();
            b.wait().await
        })
    });
    assert_eq!(rx.recv().unwrap(), 1, "the write is pending");
    error::inject_error("EE_irq_e", InjectTarget::Clear, ErrorKind::Failure, 0, 0, 0).unwrap();
    assert_eq!(waiter.join().unwrap(), [IoStatus::Success]);
    run(|| async {
        error::delete("EE_irq_e").await?;
        malloc::delete("irq_e").await
    })
    .unwrap();
}
