//! One reactor runtime per test process and the ways a test reaches it: run a task on a core
//! and get its result back (bounded, so that a hang fails the test instead of blocking it),
//! and small futures to wait inside reactor tasks.
//!
//! The runtime starts on first use ([`cores`], [`run_on`], [`run`], [`call_on`]) with the
//! options of [`configure`] (default: cores 0 and 1, busy polling), or explicitly with
//! [`start`]. It is never joined: the reactors end with the
//! test process.

use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::future::{poll_fn, Future};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, Mutex, OnceLock};
use std::task::Poll;
use std::time::Duration;

/// Bound for anything that should happen soon; only reached when a test fails.
pub const PATIENCE: Duration = Duration::from_secs(60);

static STARTED: OnceLock<()> = OnceLock::new();
static MASK: Mutex<&'static str> = Mutex::new("0x3");
static INTERRUPT_MODE: AtomicBool = AtomicBool::new(false);

/// Set the options the runtime will start with on first use: its core mask and interrupt mode
/// (call before anything else in every test of the binary; no effect once it runs).
pub fn configure(mask: &'static str, interrupt_mode: bool) {
    *MASK.lock().unwrap_or_else(|e| e.into_inner()) = mask;
    INTERRUPT_MODE.store(interrupt_mode, Ordering::SeqCst);
}

/// Start the process's runtime on `mask` once (later calls reuse it, whatever their options).
pub fn start(mask: &str, interrupt_mode: bool) {
    STARTED.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let opts = RuntimeOptions {
            cpumask: CpuMask::parse(mask).expect("the test's core mask parses"),
            interrupt_mode,
            pin_threads: false,
        };
        let rt = Runtime::start(opts, || {}).expect("start the reactor runtime");
        // Lives until the test process exits.
        std::mem::forget(rt);
    });
}

/// Start the runtime with the [`configure`]d options unless it runs already.
pub fn ensure_started() {
    if STARTED.get().is_none() {
        let mask = *MASK.lock().unwrap_or_else(|e| e.into_inner());
        start(mask, INTERRUPT_MODE.load(Ordering::SeqCst));
    }
}

/// The reactor cores (main core first).
pub fn cores() -> Vec<u32> {
    ensure_started();
    keel_reactor::cores()
}

/// Run the future built by `make` as a task on `core` and return its output; panics after
/// `limit`. The runtime must run already ([`start`], [`ensure_started`] or the caller's own
/// `Runtime::start`, as the benches do).
pub fn on_core<T, F, Fut>(core: u32, limit: Duration, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(core, move || async move {
        let _ = tx.send(make().await);
    })
    .expect("spawn on reactor");
    rx.recv_timeout(limit)
        .unwrap_or_else(|e| panic!("task on core {core} did not finish within {limit:?}: {e}"))
}

/// Run the future built by `make` on reactor `core` and return its output (bounded by
/// [`PATIENCE`]).
pub fn run_on<T, F, Fut>(core: u32, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    ensure_started();
    on_core(core, PATIENCE, make)
}

/// [`run_on`] the main core.
pub fn run<T, F, Fut>(make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    let main = cores()[0];
    run_on(main, make)
}

/// Run a plain closure on `core` and return its result (bounded by [`PATIENCE`]).
pub fn call_on<T: Send + 'static>(core: u32, f: impl FnOnce() -> T + Send + 'static) -> T {
    ensure_started();
    on_core(core, PATIENCE, move || async move { f() })
}

/// Let the reactor run one more iteration (other pollers and tasks run meanwhile).
pub async fn yield_now() {
    let mut yielded = false;
    poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Let the reactor run `n` more iterations.
pub async fn yield_iterations(n: usize) {
    for _ in 0..n {
        yield_now().await;
    }
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
