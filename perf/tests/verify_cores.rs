//! `--verify` with several jobs (one per core) on one bdev: each job judges only what it wrote
//! in this run, so runs before it — verified or plain, with other layouts, with the same seed —
//! leave nothing it reports; data the target corrupts is still reported, by whichever job wrote
//! the block.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::modules::error::{self, ErrorKind, InjectTarget};
use keel_bdev::modules::malloc;
use keel_bdev::IoType;
use keel_perf::engine::{self, RunResult};
use keel_perf::workload::verify::Corruption;
use keel_perf::workload::{BdevTargetFactory, Pattern, WorkloadSpec};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::sync::Arc;
use std::time::Duration;

const CORES: [u32; 2] = [0, 1];

fn on_core<T: Send + 'static, Fut: std::future::Future<Output = T> + 'static>(
    make: impl FnOnce() -> Fut + Send + 'static,
) -> T {
    keel_testkit::reactors::on_core(CORES[0], Duration::from_secs(30), make)
}

fn run(bdev: &str, spec: &WorkloadSpec, cores: &[u32]) -> RunResult {
    let r = engine::run(
        Arc::new(BdevTargetFactory { name: bdev.into() }),
        spec,
        cores,
        |_| {},
    )
    .expect("run succeeds");
    assert_eq!(r.jobs.len(), cores.len());
    r
}

#[test]
fn verify_on_two_cores_after_other_runs_reports_only_target_corruption() {
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x3").unwrap(),
        interrupt_mode: false,
        pin_threads: false,
    };
    let _rt = Runtime::start(opts, || {}).expect("runtime starts");
    on_core(|| async {
        malloc::create("VcMalloc", 4096, 4096, None)?;
        error::create("VcMalloc", None).map(|_| ())
    })
    .unwrap();
    let mut s = WorkloadSpec::new(Pattern::RandRw);
    s.run_time = Duration::from_millis(300);
    s.seed = 42;
    s.queue_depth = 4;
    s.verify = true;
    // Earlier runs: verified on one core, plain on two (its writes carry other LBAs' blocks).
    let first = run("EE_VcMalloc", &s, &CORES[..1]).total();
    assert_eq!(first.verify_errors, 0, "{:?}", first.corruptions);
    let mut plain = s.clone();
    plain.verify = false;
    plain.queue_depth = 7;
    run("EE_VcMalloc", &plain, &CORES);
    // This run: two jobs, same seed, another depth: nothing reported, each job checked reads.
    let mut v = s.clone();
    v.queue_depth = 6;
    let res = run("EE_VcMalloc", &v, &CORES);
    for j in &res.jobs {
        assert_eq!(
            (j.io_errors, j.verify_errors),
            (0, 0),
            "{:?}",
            j.corruptions
        );
        assert!(
            j.verified_blocks > 0,
            "core {} checked its own writes",
            j.core
        );
    }
    // The target corrupts what it returns: reported (BadCrc), by both jobs.
    on_core(|| async {
        error::inject_error(
            "EE_VcMalloc",
            InjectTarget::Io(IoType::Read),
            ErrorKind::CorruptData,
            u32::MAX,
            100,
            0x01,
        )
    })
    .unwrap();
    let bad = run("EE_VcMalloc", &v, &CORES);
    assert!(bad.has_errors());
    for j in &bad.jobs {
        assert!(j.verify_errors > 0, "core {}", j.core);
        assert!(
            j.corruptions
                .iter()
                .all(|c| matches!(c.what, Corruption::BadCrc { .. })),
            "{:?}",
            j.corruptions
        );
    }
}
