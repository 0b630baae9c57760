//! A single-value channel from any thread to a future (control path only: it allocates and
//! takes a short mutex).

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Context, Poll, Waker};

struct State<T> {
    value: Option<T>,
    /// The sender is gone (after sending or dropped).
    closed: bool,
    waker: Option<Waker>,
}

struct Inner<T> {
    state: Mutex<State<T>>,
}

impl<T> Inner<T> {
    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // No code panics while holding the lock; tolerate poison anyway.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Close the channel, optionally with a value, and wake the receiver (outside the lock).
    fn close(&self, value: Option<T>) {
        let waker = {
            let mut state = self.lock();
            if value.is_some() {
                state.value = value;
            }
            state.closed = true;
            state.waker.take()
        };
        if let Some(w) = waker {
            w.wake();
        }
    }
}

/// Sending half of [`oneshot`].
pub struct OneshotSender<T> {
    inner: Option<Arc<Inner<T>>>,
}

/// Receiving half of [`oneshot`]: a future resolving to the value, or `Err(())` if the sender
/// was dropped without sending.
pub struct OneshotReceiver<T> {
    inner: Arc<Inner<T>>,
}

/// Create a one-shot channel.
pub fn oneshot<T: Send>() -> (OneshotSender<T>, OneshotReceiver<T>) {
    let inner = Arc::new(Inner {
        state: Mutex::new(State {
            value: None,
            closed: false,
            waker: None,
        }),
    });
    (
        OneshotSender {
            inner: Some(inner.clone()),
        },
        OneshotReceiver { inner },
    )
}

impl<T> OneshotSender<T> {
    /// Deliver the value and wake the receiver.
    pub fn send(mut self, value: T) {
        if let Some(inner) = self.inner.take() {
            inner.close(Some(value));
        }
    }
}

impl<T> Drop for OneshotSender<T> {
    fn drop(&mut self) {
        if let Some(inner) = self.inner.take() {
            inner.close(None);
        }
    }
}

impl<T> Future for OneshotReceiver<T> {
    type Output = Result<T, ()>;
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let mut state = self.inner.lock();
        if let Some(value) = state.value.take() {
            return Poll::Ready(Ok(value));
        }
        if state.closed {
            return Poll::Ready(Err(()));
        }
        match &mut state.waker {
            Some(w) if w.will_wake(cx.waker()) => {}
            slot => *slot = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::task::Wake;

    struct CountWake(AtomicUsize);
    impl Wake for CountWake {
        fn wake(self: Arc<Self>) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    fn poll<T>(rx: &mut OneshotReceiver<T>, waker: &Waker) -> Poll<Result<T, ()>> {
        Pin::new(rx).poll(&mut Context::from_waker(waker))
    }

    #[test]
    fn send_from_another_thread_wakes_receiver() {
        let wakes = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let (tx, mut rx) = oneshot::<String>();
        assert!(poll(&mut rx, &waker).is_pending());
        std::thread::spawn(move || tx.send("hello".into()))
            .join()
            .unwrap();
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Ok("hello".to_string())));
    }

    #[test]
    fn value_sent_before_first_poll_is_ready() {
        let waker = Waker::from(Arc::new(CountWake(AtomicUsize::new(0))));
        let (tx, mut rx) = oneshot();
        tx.send(5u32);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Ok(5)));
    }

    #[test]
    fn dropped_sender_resolves_err_and_wakes() {
        let wakes = Arc::new(CountWake(AtomicUsize::new(0)));
        let waker = Waker::from(wakes.clone());
        let (tx, mut rx) = oneshot::<u8>();
        assert!(poll(&mut rx, &waker).is_pending());
        drop(tx);
        assert_eq!(wakes.0.load(Ordering::SeqCst), 1);
        assert_eq!(poll(&mut rx, &waker), Poll::Ready(Err(())));
    }

    #[test]
    fn dropped_receiver_does_not_break_send() {
        let (tx, rx) = oneshot::<Vec<u8>>();
        drop(rx);
        tx.send(vec![1, 2, 3]);
    }
}
