//! Helpers shared by the integration tests: a reactor runtime per test process, running work on
//! a core and getting its result back, and small futures for waiting inside reactor tasks.
#![allow(dead_code)] // each test file uses its own subset

use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::future::{poll_fn, Future};
use std::sync::mpsc;
use std::sync::OnceLock;
use std::task::Poll;
use std::time::Duration;

/// Start the process's runtime on `mask` once (later calls reuse it). It is never joined: the
/// reactors end with the test process.
pub fn runtime(mask: &str, interrupt_mode: bool) {
    static STARTED: OnceLock<()> = OnceLock::new();
    STARTED.get_or_init(|| {
        let opts = RuntimeOptions {
            cpumask: CpuMask::parse(mask).expect("cpumask"),
            interrupt_mode,
            pin_threads: false,
        };
        let rt = Runtime::start(opts, || {}).expect("runtime starts");
        std::mem::forget(rt);
    });
}

/// Run the future built by `make` as a task on `core` and return its output (panics after
/// `limit` so that a hang fails the test instead of blocking it).
pub fn on_core<T, F, Fut>(core: u32, limit: Duration, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(core, move || async move {
        let v = make().await;
        let _ = tx.send(v);
    })
    .expect("spawn on reactor");
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("task on core {core} did not finish within {limit:?}: {e}"))
}

/// Run a plain closure on `core` and return its result.
pub fn run_on<T: Send + 'static>(core: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    on_core(core, Duration::from_secs(20), move || async move { f() })
}

/// Resolve once `cond` holds, re-checking every reactor iteration (for short waits in tests).
pub async fn until(mut cond: impl FnMut() -> bool) {
    poll_fn(|cx| {
        if cond() {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}
