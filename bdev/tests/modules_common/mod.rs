//! Shared harness of the module integration tests (`modules_*.rs`): one reactor runtime per
//! test binary (two cores, busy polling unless [`use_interrupt_mode`] was called first), running
//! each test body as a local task, and small async helpers to submit I/O and await completions.

#![allow(dead_code)]

use keel_bdev::{BdevDesc, IoCallback, IoChannel, IoStatus, IoVec, SubmitError};
use keel_reactor::pool::DmaBuf;
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{mpsc, OnceLock};
use std::task::{Poll, Waker};
use std::time::Duration;

/// Bound for anything that should happen soon; only reached when a test fails.
const PATIENCE: Duration = Duration::from_secs(30);

static RUNTIME: OnceLock<()> = OnceLock::new();
static INTERRUPT_MODE: AtomicBool = AtomicBool::new(false);

/// Run this binary's reactors in interrupt mode (call before anything else in every test).
pub fn use_interrupt_mode() {
    INTERRUPT_MODE.store(true, Ordering::SeqCst);
}

fn runtime() {
    RUNTIME.get_or_init(|| {
        let opts = RuntimeOptions {
            cpumask: CpuMask::parse("0x3").expect("mask"),
            interrupt_mode: INTERRUPT_MODE.load(Ordering::SeqCst),
            pin_threads: false,
        };
        let rt = Runtime::start(opts, || {}).expect("start the reactor runtime");
        // Lives until the test process exits.
        std::mem::forget(rt);
    });
}

/// The reactor cores (main core first).
pub fn cores() -> Vec<u32> {
    runtime();
    keel_reactor::cores()
}

/// Run the future built by `make` on reactor `core` and return its output.
pub fn run_on<T, F, Fut>(core: u32, make: F) -> T
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = T> + 'static,
{
    runtime();
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(core, move || async move {
        let _ = tx.send(make().await);
    })
    .expect("spawn on reactor");
    rx.recv_timeout(PATIENCE)
        .expect("test task did not finish on the reactor")
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

/// Completions of a group of I/Os submitted with [`Batch::ctx`] and [`batch_cb`].
#[derive(Default)]
pub struct Batch {
    left: Cell<usize>,
    statuses: RefCell<Vec<IoStatus>>,
    waker: Cell<Option<Waker>>,
}

impl Batch {
    /// A new, empty batch.
    pub fn new() -> Rc<Batch> {
        Rc::default()
    }

    /// Submit one I/O with `submit(cb, ctx)`; on a submit error nothing is counted.
    pub fn submit(
        self: &Rc<Self>,
        submit: impl FnOnce(IoCallback, usize) -> Result<(), SubmitError>,
    ) -> Result<(), SubmitError> {
        let ctx = Rc::into_raw(Rc::clone(self)) as usize;
        self.left.set(self.left.get() + 1);
        submit(batch_cb, ctx).inspect_err(|_| {
            self.left.set(self.left.get() - 1);
            // SAFETY: the callback will not run, so the count taken above is ours to drop.
            drop(unsafe { Rc::from_raw(ctx as *const Batch) });
        })
    }

    /// Completions so far, in completion order.
    pub fn statuses(&self) -> Vec<IoStatus> {
        self.statuses.borrow().clone()
    }

    /// I/Os still outstanding.
    pub fn outstanding(&self) -> usize {
        self.left.get()
    }

    /// Wait until every submitted I/O completed; returns their statuses.
    pub async fn wait(self: &Rc<Self>) -> Vec<IoStatus> {
        poll_fn(|cx| {
            if self.left.get() == 0 {
                Poll::Ready(self.statuses())
            } else {
                self.waker.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

fn batch_cb(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the `Rc::into_raw` taken in `Batch::submit` for this I/O.
    let b = unsafe { Rc::from_raw(ctx as *const Batch) };
    b.statuses.borrow_mut().push(status);
    b.left.set(b.left.get() - 1);
    if b.left.get() == 0 {
        if let Some(w) = b.waker.take() {
            w.wake();
        }
    }
}

/// Submit one I/O and wait for it.
pub async fn one(
    submit: impl FnOnce(IoCallback, usize) -> Result<(), SubmitError>,
) -> Result<IoStatus, SubmitError> {
    let b = Batch::new();
    b.submit(submit)?;
    Ok(b.wait().await[0])
}

/// Let the reactor run `n` more iterations (other pollers and tasks run meanwhile).
pub async fn yield_iterations(n: usize) {
    for _ in 0..n {
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
        .await;
    }
}

/// A pool buffer (4 KiB aligned) of `len` bytes filled with `fill`.
pub fn dma(len: usize, fill: u8) -> DmaBuf {
    let mut b = keel_reactor::pool::alloc(len).expect("pool buffer");
    b.as_mut_slice().fill(fill);
    b
}

/// An iovec over a pool buffer.
pub fn iov(b: &mut DmaBuf) -> IoVec {
    // SAFETY: tests keep the buffer alive and untouched until the I/O using it completes.
    unsafe { IoVec::from_raw(b.as_mut_ptr(), b.len()) }
}

/// An iovec over a slice.
pub fn iov_slice(s: &mut [u8]) -> IoVec {
    // SAFETY: as in `iov`.
    unsafe { IoVec::from_raw(s.as_mut_ptr(), s.len()) }
}

/// Open `name` read-write and take a channel on this core.
pub fn open_rw(name: &str) -> (BdevDesc, IoChannel) {
    let desc = keel_bdev::open(name, true, |_| {}).expect("open bdev");
    let ch = desc.get_io_channel().expect("io channel");
    (desc, ch)
}

/// Write `data` at block `lba` and read it back into a fresh pool buffer.
pub async fn write_then_read(
    ch: &IoChannel,
    lba: u64,
    data: &mut DmaBuf,
) -> (IoStatus, IoStatus, DmaBuf) {
    let bs = u64::from(ch.bdev().info().block_size);
    let blocks = data.len() as u64 / bs;
    let w = one(|cb, ctx| ch.write(&[iov(data)], lba, blocks, cb, ctx))
        .await
        .expect("submit write");
    let mut back = dma(data.len(), 0);
    let r = one(|cb, ctx| ch.read(&[iov(&mut back)], lba, blocks, cb, ctx))
        .await
        .expect("submit read");
    (w, r, back)
}

/// A file under /tmp removed on drop.
pub struct TempFile(pub String);

impl TempFile {
    /// Create `/tmp/keel-<tag>-<pid>` of `len` bytes (sparse).
    pub fn new(tag: &str, len: u64) -> TempFile {
        let path = format!("/tmp/keel-{tag}-{}", std::process::id());
        let f = std::fs::File::create(&path).expect("create temp file");
        f.set_len(len).expect("size temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

/// A deterministic byte pattern for block `lba`.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}
