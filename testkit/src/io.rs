//! Submit I/O from a reactor task and await the completions: one I/O, or a batch of them;
//! iovecs over test buffers.

use crate::reactors::yield_now;
use keel_bdev::{IoCallback, IoStatus, IoVec, SubmitError};
use keel_reactor::pool::DmaBuf;
use std::cell::{Cell, RefCell};
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};

/// Completions of a group of I/Os submitted with [`Batch::submit`].
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

/// Submit one I/O and wait for it, retrying (after a reactor iteration) while the channel has
/// no free descriptor; panics on any other submit error.
pub async fn one_retrying(
    submit: impl Fn(IoCallback, usize) -> Result<(), SubmitError>,
) -> IoStatus {
    let b = Batch::new();
    loop {
        match b.submit(&submit) {
            Ok(()) => break,
            Err(SubmitError::NoDescriptor) => yield_now().await,
            Err(e) => panic!("submit failed: {e}"),
        }
    }
    b.wait().await[0]
}

/// An iovec over a slice.
pub fn iov(s: &mut [u8]) -> IoVec {
    // SAFETY: tests keep the buffer alive and untouched until the I/O using it completes.
    unsafe { IoVec::from_raw_parts(s.as_mut_ptr(), s.len()) }
}

/// An iovec over a pool buffer.
pub fn iov_dma(b: &mut DmaBuf) -> IoVec {
    // SAFETY: as in `iov`.
    unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), b.len()) }
}
