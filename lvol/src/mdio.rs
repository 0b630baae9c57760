//! Control-path helpers of the metadata core: awaiting base I/O, a local async lock that
//! serializes metadata transactions, and yielding to the reactor.

use keel_bdev::{IoChannel, IoStatus, IoVec, SubmitError};
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
    unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), b.len()) }
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

/// One waiter of a [`LocalSemaphore`]: set `granted` when a permit is handed to it.
struct PermitWait {
    granted: Cell<bool>,
    waker: RefCell<Option<Waker>>,
}

/// A FIFO counting semaphore for one core: bounds how much work of one kind runs at once
/// (cluster fills). Released permits go straight to the oldest waiter, so no waiter starves.
pub struct LocalSemaphore {
    permits: Cell<usize>,
    waiters: RefCell<VecDeque<Rc<PermitWait>>>,
}

/// A held permit of a [`LocalSemaphore`]; released on drop.
pub struct Permit<'a>(&'a LocalSemaphore);

impl LocalSemaphore {
    /// A semaphore with `permits` permits.
    pub fn new(permits: usize) -> LocalSemaphore {
        LocalSemaphore {
            permits: Cell::new(permits),
            waiters: RefCell::new(VecDeque::new()),
        }
    }

    /// Permits free right now.
    #[cfg(test)]
    pub fn available(&self) -> usize {
        self.permits.get()
    }

    /// Wait for a permit.
    pub async fn acquire(&self) -> Permit<'_> {
        let mut wait = Acquire {
            sem: self,
            slot: None,
        };
        poll_fn(|cx| wait.poll(cx.waker())).await
    }

    fn release(&self) {
        let next = self.waiters.borrow_mut().pop_front();
        match next {
            Some(w) => {
                // hand the permit over directly
                w.granted.set(true);
                if let Some(waker) = w.waker.borrow_mut().take() {
                    waker.wake();
                }
            }
            None => self.permits.set(self.permits.get() + 1),
        }
    }
}

/// The state of one `acquire` call (cancel-safe: dropping it gives back a permit handed to it,
/// or leaves the queue).
struct Acquire<'a> {
    sem: &'a LocalSemaphore,
    slot: Option<Rc<PermitWait>>,
}

impl<'a> Acquire<'a> {
    fn poll(&mut self, waker: &Waker) -> Poll<Permit<'a>> {
        match &self.slot {
            None => {
                let free = self.sem.permits.get();
                if free > 0 && self.sem.waiters.borrow().is_empty() {
                    self.sem.permits.set(free - 1);
                    return Poll::Ready(Permit(self.sem));
                }
                let slot = Rc::new(PermitWait {
                    granted: Cell::new(false),
                    waker: RefCell::new(Some(waker.clone())),
                });
                self.sem.waiters.borrow_mut().push_back(Rc::clone(&slot));
                self.slot = Some(slot);
                Poll::Pending
            }
            Some(slot) if slot.granted.get() => {
                self.slot = None;
                Poll::Ready(Permit(self.sem))
            }
            Some(slot) => {
                *slot.waker.borrow_mut() = Some(waker.clone());
                Poll::Pending
            }
        }
    }
}

impl Drop for Acquire<'_> {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            if slot.granted.get() {
                self.sem.release();
            } else {
                self.sem
                    .waiters
                    .borrow_mut()
                    .retain(|w| !Rc::ptr_eq(w, &slot));
            }
        }
    }
}

impl Drop for Permit<'_> {
    fn drop(&mut self) {
        self.0.release();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::pin::pin;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct CountWake(std::sync::atomic::AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
    }

    #[test]
    fn semaphore_bounds_holders_hands_permits_over_in_order_and_is_cancel_safe() {
        let counter = Arc::new(CountWake(Default::default()));
        let waker = Waker::from(Arc::clone(&counter));
        let mut cx = Context::from_waker(&waker);
        let sem = LocalSemaphore::new(2);
        let mut a = pin!(sem.acquire());
        let mut b = pin!(sem.acquire());
        let Poll::Ready(pa) = a.as_mut().poll(&mut cx) else {
            panic!("first permit is free")
        };
        let Poll::Ready(pb) = b.as_mut().poll(&mut cx) else {
            panic!("second permit is free")
        };
        assert_eq!(sem.available(), 0);
        let mut c = pin!(sem.acquire());
        let mut d = Box::pin(sem.acquire());
        let mut e = Box::pin(sem.acquire());
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert!(d.as_mut().poll(&mut cx).is_pending());
        assert!(e.as_mut().poll(&mut cx).is_pending());
        // polling again does not queue twice
        assert!(c.as_mut().poll(&mut cx).is_pending());
        assert_eq!(sem.waiters.borrow().len(), 3);
        drop(d); // cancelled while waiting: leaves the queue
        assert_eq!(sem.waiters.borrow().len(), 2);
        drop(pa);
        assert_eq!(counter.0.load(std::sync::atomic::Ordering::Relaxed), 1);
        assert_eq!(sem.available(), 0, "handed to the oldest waiter, not freed");
        let Poll::Ready(pc) = c.as_mut().poll(&mut cx) else {
            panic!("c was granted the permit")
        };
        drop(pb); // granted to e
        assert_eq!(sem.available(), 0);
        drop(pc);
        assert_eq!(sem.available(), 1);
        drop(e); // cancelled after the grant: the permit comes back
        assert_eq!(sem.available(), 2);
    }
}
