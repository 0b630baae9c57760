//! The engine end to end on one reactor: short runs (~0.3 s) against null and malloc bdevs with
//! `--verify`; data corrupted by the target (an error bdev) is reported with its LBA, and blocks
//! left by earlier runs are never reported.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::modules::error::{self, ErrorKind, InjectTarget};
use keel_bdev::modules::{malloc, null};
use keel_bdev::IoType;
use keel_perf::engine::{self, RunResult};
use keel_perf::workload::verify::Corruption;
use keel_perf::workload::{BdevTargetFactory, Distribution, Pattern, WorkloadSpec};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

const CORE: u32 = 0;

fn runtime() {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let opts = RuntimeOptions {
            cpumask: CpuMask::parse("0x1").unwrap(),
            interrupt_mode: false,
            pin_threads: false,
        };
        std::mem::forget(Runtime::start(opts, || {}).expect("runtime starts"));
    });
}

/// Run `make()`'s future on the reactor and wait for its output.
fn on_core<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    make: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    keel_testkit::reactors::on_core(CORE, Duration::from_secs(30), make)
}

fn spec(pattern: Pattern) -> WorkloadSpec {
    let mut s = WorkloadSpec::new(pattern);
    s.queue_depth = 8;
    s.run_time = Duration::from_millis(300);
    s.verify = true;
    s
}

fn run(bdev: &str, spec: &WorkloadSpec) -> RunResult {
    let mut samples = 0;
    let r = engine::run(
        Arc::new(BdevTargetFactory { name: bdev.into() }),
        spec,
        &[CORE],
        |_| samples += 1,
    )
    .expect("run succeeds");
    assert_eq!(r.jobs.len(), 1);
    r
}

#[test]
fn null_bdev_with_verify_runs_clean() {
    runtime();
    on_core(|| async { null::create("PerfNull", 1 << 18, 4096, None).map(|_| ()) }).unwrap();
    let res = run("PerfNull", &spec(Pattern::RandRw));
    let t = res.total();
    assert!(t.read.ios > 0 && t.write.ios > 0, "both directions ran");
    assert_eq!((t.io_errors, t.verify_errors), (0, 0));
    assert_eq!(t.verified_blocks, 0, "a null bdev returns no data to check");
    assert!(
        t.runtime_ns >= 250_000_000 && t.runtime_ns <= 400_000_000,
        "{}",
        t.runtime_ns
    );
    assert!(!res.has_errors());
    assert!(res.target.contains("PerfNull"));
}

#[test]
fn malloc_bdev_with_verify_checks_reads() {
    runtime();
    on_core(|| async { malloc::create("PerfMalloc", 2048, 512, None).map(|_| ()) }).unwrap();
    let mut s = spec(Pattern::RandRw);
    s.distribution = Distribution::Zipf(0.9);
    let res = run("PerfMalloc", &s);
    let t = res.total();
    assert!(t.read.ios > 0 && t.write.ios > 0);
    assert_eq!(
        (t.io_errors, t.verify_errors),
        (0, 0),
        "{:?}",
        t.corruptions
    );
    assert!(
        t.verified_blocks > 0,
        "reads of written blocks were checked"
    );
    // Latency was recorded for every counted I/O.
    assert_eq!(t.read.hist.len(), t.read.ios);
}

/// The `--verify` acceptance test: data the target corrupts — on the way back (a read) or on
/// the way in (a write) — is reported with its LBA and makes the run fail; a clean run of the
/// same stack first reports nothing. The target is an error bdev (`corrupt_data`) over a
/// malloc bdev, the same injection SPDK's vbdev_error offers.
#[test]
fn verify_catches_data_the_target_corrupts() {
    runtime();
    on_core(|| async {
        malloc::create("PerfCorrupt", 256, 4096, None)?;
        error::create("PerfCorrupt", None).map(|_| ())
    })
    .unwrap();
    let mut s = spec(Pattern::RandRw);
    s.queue_depth = 4;
    let clean = run("EE_PerfCorrupt", &s);
    let t = clean.total();
    assert_eq!(
        (t.io_errors, t.verify_errors),
        (0, 0),
        "{:?}",
        t.corruptions
    );
    assert!(t.verified_blocks > 0);
    assert!(!clean.has_errors());

    for io_type in [IoType::Read, IoType::Write] {
        on_core(move || async move {
            error::inject_error(
                "EE_PerfCorrupt",
                InjectTarget::Io(io_type),
                ErrorKind::CorruptData,
                u32::MAX,
                1000,
                0x40,
            )
        })
        .unwrap();
        let res = run("EE_PerfCorrupt", &s);
        on_core(|| async {
            error::inject_error(
                "EE_PerfCorrupt",
                InjectTarget::Clear,
                ErrorKind::Failure,
                0,
                0,
                0,
            )
        })
        .unwrap();
        let t = res.total();
        assert!(res.has_errors(), "{io_type:?}");
        assert!(t.verify_errors >= 1, "{io_type:?}");
        assert_eq!(
            t.verified_blocks, 0,
            "{io_type:?}: every judged block is corrupt"
        );
        assert!(!t.corruptions.is_empty());
        assert!(
            t.corruptions
                .iter()
                .all(|c| c.lba < 256 && matches!(c.what, Corruption::BadCrc { .. })),
            "{io_type:?}: {:?}",
            t.corruptions
        );
    }
}

/// Issue 11 item 4: blocks left by earlier runs — a verified run, a plain run (which writes
/// whatever its buffers last held, e.g. another LBA's stamped block), runs with the same seed —
/// are not this run's: a verifying run must not report them. Only the target can make a
/// report.
#[test]
fn verify_after_other_runs_reports_nothing_it_did_not_write() {
    runtime();
    on_core(|| async { malloc::create("PerfReuse", 4096, 4096, None).map(|_| ()) }).unwrap();
    for seed in [spec(Pattern::RandRw).seed, 42] {
        let mut s = spec(Pattern::RandRw);
        s.seed = seed;
        // A verified run leaves stamped blocks everywhere.
        let first = run("PerfReuse", &s).total();
        assert_eq!(first.verify_errors, 0, "{:?}", first.corruptions);
        // A plain run with another queue depth writes buffers that last held other LBAs'
        // blocks (and, with the same seed, the same stamps) to new places.
        let mut plain = s.clone();
        plain.verify = false;
        plain.queue_depth = 3;
        let p = run("PerfReuse", &plain).total();
        assert!(p.read.ios > 0 && p.write.ios > 0);
        // A verified run with another layout, then the same one again: zero reported.
        for qd in [5, 8] {
            let mut v = s.clone();
            v.queue_depth = qd;
            let t = run("PerfReuse", &v).total();
            assert!(t.read.ios > 0 && t.write.ios > 0);
            assert_eq!(
                (t.io_errors, t.verify_errors),
                (0, 0),
                "seed {seed} qd {qd}: {:?}",
                t.corruptions
            );
            assert!(
                t.verified_blocks > 0,
                "reads of this run's writes were checked"
            );
        }
    }
}
