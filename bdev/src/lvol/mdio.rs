//! Control-path helpers of the metadata core: awaiting base I/O, a local async lock that
//! serializes metadata transactions, and yielding to the reactor.

use crate::{IoChannel, IoStatus, IoVec, SubmitError};
use keel_reactor::pool::DmaBuf;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::future::{poll_fn, Future};
use std::rc::Rc;
use std::task::{Poll, Waker};

/// One awaited I/O: its status once done, and who to wake.
#[derive(Default)]
struct Slot {
    status: Cell<Option<IoStatus>>,
    waker: Cell<Option<Waker>>,
}

fn slot_cb(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the `Rc::into_raw` taken by `submit_wait` for this I/O; the callback runs
    // once.
    let s = unsafe { Rc::from_raw(ctx as *const Slot) };
    s.status.set(Some(status));
    if let Some(w) = s.waker.take() {
        w.wake();
    }
}

/// Base I/O kinds the metadata core issues.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdIo {
    /// Read into the iovecs.
    Read,
    /// Write from the iovecs.
    Write,
    /// Zero the range.
    WriteZeroes,
    /// Unmap the range.
    Unmap,
    /// Flush the base.
    Flush,
}

/// Submit one base I/O and wait for it; a full descriptor pool is waited out.
pub async fn io(
    ch: &IoChannel,
    kind: MdIo,
    iovs: &[IoVec],
    offset_blocks: u64,
    num_blocks: u64,
) -> IoStatus {
    loop {
        let slot = Rc::new(Slot::default());
        let ctx = Rc::into_raw(Rc::clone(&slot)) as usize;
        let res = match kind {
            MdIo::Read => ch.read(iovs, offset_blocks, num_blocks, slot_cb, ctx),
            MdIo::Write => ch.write(iovs, offset_blocks, num_blocks, slot_cb, ctx),
            MdIo::WriteZeroes => ch.write_zeroes(offset_blocks, num_blocks, slot_cb, ctx),
            MdIo::Unmap => ch.unmap(offset_blocks, num_blocks, slot_cb, ctx),
            MdIo::Flush => ch.flush(slot_cb, ctx),
        };
        match res {
            Ok(()) => {
                return poll_fn(|cx| match slot.status.get() {
                    Some(s) => Poll::Ready(s),
                    None => {
                        slot.waker.set(Some(cx.waker().clone()));
                        Poll::Pending
                    }
                })
                .await
            }
            Err(e) => {
                // SAFETY: the callback will not run: release the count taken above.
                drop(unsafe { Rc::from_raw(ctx as *const Slot) });
                if e != SubmitError::NoDescriptor {
                    log::error!("lvol: metadata {kind:?} at block {offset_blocks} refused: {e}");
                    return IoStatus::IoError;
                }
                yield_now().await;
            }
        }
    }
}

/// An iovec over a whole pool buffer.
pub fn buf_iov(b: &mut DmaBuf) -> IoVec {
    // SAFETY: the caller keeps `b` alive and untouched until the I/O using it completes (the
    // awaiting helpers above hold it across the await).
    unsafe { IoVec::from_raw(b.as_mut_ptr(), b.len()) }
}

/// Let the reactor run one iteration.
pub fn yield_now() -> impl Future<Output = ()> {
    let mut yielded = false;
    poll_fn(move |cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
}

/// A FIFO async lock for one core (metadata transactions run one at a time).
#[derive(Default)]
pub struct LocalLock {
    locked: Cell<bool>,
    waiters: RefCell<VecDeque<Waker>>,
}

/// Held [`LocalLock`]; releases on drop.
pub struct LocalGuard<'a>(&'a LocalLock);

impl LocalLock {
    /// Wait for the lock.
    pub async fn lock(&self) -> LocalGuard<'_> {
        poll_fn(|cx| {
            if !self.locked.get() {
                self.locked.set(true);
                Poll::Ready(LocalGuard(self))
            } else {
                self.waiters.borrow_mut().push_back(cx.waker().clone());
                Poll::Pending
            }
        })
        .await
    }
}

impl Drop for LocalGuard<'_> {
    fn drop(&mut self) {
        self.0.locked.set(false);
        let w = self.0.waiters.borrow_mut().pop_front();
        if let Some(w) = w {
            w.wake();
        }
    }
}
