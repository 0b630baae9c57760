//! The future behind [`alloc_wait`](super::alloc_wait): retry, else park the waker on the
//! domain and retry once more (so a free racing with the registration is never missed).

use super::{alloc_class, thread, DmaBuf, PoolError};
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Waits for an object of `class` in the polling thread's pool.
pub(super) struct AllocWait {
    class: usize,
    len: usize,
}

impl AllocWait {
    pub(super) fn new(class: usize, len: usize) -> AllocWait {
        AllocWait { class, len }
    }
}

impl Future for AllocWait {
    type Output = Result<DmaBuf, PoolError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match alloc_class(self.class, self.len) {
            Err(PoolError::Exhausted) => {}
            done => return Poll::Ready(done),
        }
        let Some(domain) = thread::current() else {
            // The thread is exiting: there is no pool to wait on.
            return Poll::Ready(Err(PoolError::Exhausted));
        };
        // SAFETY: the calling thread's domain is alive while the thread runs.
        unsafe { domain.as_ref() }.register_waiter(cx.waker());
        // The retry drains frees that raced with the registration.
        match alloc_class(self.class, self.len) {
            Err(PoolError::Exhausted) => Poll::Pending,
            done => Poll::Ready(done),
        }
    }
}
