//! Test support: a tiny executor and test backends. Unit tests run without a reactor runtime:
//! channels then register no pollers and tests drain completions with
//! [`crate::io_path::poll_completions`] by hand.

use crate::{BackendChannel, BdevBackend, BdevError, BdevInfo, ConfigCall, IoRef, IoType};
use std::cell::RefCell;
use std::future::Future;
use std::pin::pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

struct ThreadWaker(std::thread::Thread);
impl Wake for ThreadWaker {
    fn wake(self: Arc<Self>) {
        self.0.unpark();
    }
}

/// Run a future to completion on this thread.
pub(crate) fn block_on<F: Future>(f: F) -> F::Output {
    let waker = Waker::from(Arc::new(ThreadWaker(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = pin!(f);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        std::thread::park();
    }
}

/// Poll a future once with a no-op waker.
pub(crate) fn poll_once<F: Future + Unpin>(f: &mut F) -> Poll<F::Output> {
    struct Noop;
    impl Wake for Noop {
        fn wake(self: Arc<Self>) {}
    }
    let waker = Waker::from(Arc::new(Noop));
    let mut cx = Context::from_waker(&waker);
    std::pin::Pin::new(f).poll(&mut cx)
}

thread_local! {
    /// I/Os held by [`HoldBackend`] channels of this thread, in submission order.
    pub(crate) static HELD: RefCell<Vec<IoRef>> = const { RefCell::new(Vec::new()) };
}

/// Take the I/Os held so far on this thread.
pub(crate) fn take_held() -> Vec<IoRef> {
    HELD.with(|h| std::mem::take(&mut *h.borrow_mut()))
}

/// A backend whose channels keep every I/O until the test completes it; counts submissions,
/// destructs and supports the types it is told.
pub(crate) struct HoldBackend {
    pub supported: Vec<IoType>,
    pub submitted: Arc<AtomicUsize>,
    pub destructed: Arc<AtomicUsize>,
}

impl HoldBackend {
    pub(crate) fn new() -> HoldBackend {
        HoldBackend {
            supported: IoType::ALL.to_vec(),
            submitted: Arc::default(),
            destructed: Arc::default(),
        }
    }
}

struct HoldChannel {
    submitted: Arc<AtomicUsize>,
}

impl BackendChannel for HoldChannel {
    fn submit(&mut self, io: IoRef) {
        self.submitted.fetch_add(1, Ordering::Relaxed);
        HELD.with(|h| h.borrow_mut().push(io));
    }
}

impl BdevBackend for HoldBackend {
    fn product_name(&self) -> &'static str {
        "Hold disk"
    }
    fn io_type_supported(&self, io_type: IoType) -> bool {
        self.supported.contains(&io_type)
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(HoldChannel {
            submitted: Arc::clone(&self.submitted),
        }))
    }
    fn config_call(&self, _info: &BdevInfo) -> Option<ConfigCall> {
        None
    }
    fn destruct(&self) {
        self.destructed.fetch_add(1, Ordering::Relaxed);
    }
}

/// A `BdevInfo` with a random UUID.
pub(crate) fn info(name: &str, block_size: u32, num_blocks: u64) -> BdevInfo {
    BdevInfo {
        name: name.into(),
        aliases: Vec::new(),
        uuid: crate::Uuid::new_random(),
        block_size,
        num_blocks,
    }
}
