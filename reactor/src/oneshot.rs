//! A single-value channel from any thread to a future (control path only: it allocates).
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};

/// Sending half of [`oneshot`].
pub struct OneshotSender<T> {
    _p: std::marker::PhantomData<T>,
}
/// Receiving half of [`oneshot`]: a future resolving to the value, or `Err(())` if the sender
/// was dropped without sending.
pub struct OneshotReceiver<T> {
    _p: std::marker::PhantomData<T>,
}

/// Create a one-shot channel.
pub fn oneshot<T: Send>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    todo!()
}

impl<T> OneshotSender<T> {
    /// Deliver the value and wake the receiver.
    pub fn send(self, _value: T) {
        todo!()
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Result<T, ()>;
    fn poll(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Self::Output> {
        todo!()
    }
}
