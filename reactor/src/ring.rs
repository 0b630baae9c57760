//! A reactor's mailbox: the lock-free multi-producer ring other threads send closures and task
//! wake-ups through, and (in interrupt mode) the doorbell that wakes the reactor when it sleeps.

use crate::interrupt::EventFd;
use async_task::Runnable;
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::io;
use std::mem::{self, ManuallyDrop, MaybeUninit};
use std::ptr;
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// Slots of the bounded ring. Past that, messages go to an unbounded overflow queue so a send
/// never fails or blocks while the reactor runs.
pub(crate) const RING_CAPACITY: usize = 65536;

/// Words of closure state a message holds inline; bigger closures are boxed.
const INLINE_WORDS: usize = 3;
type InlineData = [MaybeUninit<usize>; INLINE_WORDS];

/// One item of a mailbox: a closure to run on the reactor, stored inline when it captures at
/// most 24 bytes (most messages: no allocation, no cross-thread free), else boxed.
pub(crate) struct Msg {
    /// Holds a value of the closure type `vtable` was instantiated for.
    data: InlineData,
    /// `call_or_drop::<F>` for the closure type `F` stored in `data`.
    vtable: unsafe fn(*mut InlineData, bool),
}

// SAFETY: a `Msg` is only built (in `Msg::inline`) from a closure that is `Send`.
unsafe impl Send for Msg {}

/// Runs (`run == true`) or drops the `F` stored at `data`, consuming it.
///
/// # Safety
/// `data` must hold a valid `F` that is not used again afterwards.
unsafe fn call_or_drop<F: FnOnce()>(data: *mut InlineData, run: bool) {
    // SAFETY: per the contract, `data` holds a valid `F` (suitably aligned, see `Msg::inline`)
    // that we now own.
    let f = unsafe { ptr::read(data.cast::<F>()) };
    if run {
        f();
    }
}

impl Msg {
    /// A message running `f`.
    pub(crate) fn call<F: FnOnce() + Send + 'static>(f: F) -> Msg {
        if Self::fits::<F>() {
            Msg::inline(f)
        } else {
            // A `Box<F>` is itself a one-word `FnOnce`.
            Msg::inline(Box::new(f))
        }
    }

    /// A message polling `runnable`, a task of the receiving reactor woken from another
    /// thread. A local task must not be dropped on another thread: if the message is dropped
    /// unrun (its reactor is gone), the task is leaked instead.
    pub(crate) fn wake(runnable: Runnable) -> Msg {
        let runnable = ManuallyDrop::new(runnable);
        Msg::inline(move || {
            ManuallyDrop::into_inner(runnable).run();
        })
    }

    const fn fits<F>() -> bool {
        mem::size_of::<F>() <= mem::size_of::<InlineData>()
            && mem::align_of::<F>() <= mem::align_of::<InlineData>()
    }

    fn inline<F: FnOnce() + Send + 'static>(f: F) -> Msg {
        assert!(Self::fits::<F>(), "closure too big for a message");
        let mut data: InlineData = [MaybeUninit::uninit(); INLINE_WORDS];
        // SAFETY: `data` is large and aligned enough for `F` (checked above); writing moves `f`
        // in, and `vtable` now owns it.
        unsafe { ptr::write(data.as_mut_ptr().cast::<F>(), f) };
        Msg {
            data,
            vtable: call_or_drop::<F>,
        }
    }

    /// Run the message (on the owning reactor's thread).
    pub(crate) fn run(self) {
        let mut this = ManuallyDrop::new(self);
        // SAFETY: `data` holds the closure `vtable` expects; `ManuallyDrop` keeps `Drop` from
        // touching it again.
        unsafe { (this.vtable)(&mut this.data, true) }
    }
}

impl Drop for Msg {
    fn drop(&mut self) {
        // SAFETY: `data` holds the closure `vtable` expects and is not used after this.
        unsafe { (self.vtable)(&mut self.data, false) }
    }
}

/// Interrupt-mode wake-up: the reactor raises `sleeping` before it sleeps on `eventfd`.
struct Doorbell {
    sleeping: AtomicBool,
    eventfd: EventFd,
}

/// Many producers (any thread), one consumer (the owning reactor). FIFO per producer.
pub(crate) struct Mailbox {
    ring: ArrayQueue<Msg>,
    /// Used only while the ring is full. Producers keep using it while it is non-empty and the
    /// consumer pops it only when the ring is empty, which keeps each producer's order.
    overflow: SegQueue<Msg>,
    doorbell: Option<Doorbell>,
}

impl Mailbox {
    /// A mailbox; with `interrupt_mode` it also has an eventfd to wake a sleeping consumer.
    pub(crate) fn new(interrupt_mode: bool) -> io::Result<Mailbox> {
        let doorbell = if interrupt_mode {
            Some(Doorbell {
                sleeping: AtomicBool::new(false),
                eventfd: EventFd::new()?,
            })
        } else {
            None
        };
        Ok(Mailbox {
            ring: ArrayQueue::new(RING_CAPACITY),
            overflow: SegQueue::new(),
            doorbell,
        })
    }

    /// Enqueue `msg` (any thread; never blocks, never fails) and wake the consumer if it sleeps.
    pub(crate) fn push(&self, msg: Msg) {
        if !self.overflow.is_empty() {
            self.overflow.push(msg);
        } else if let Err(msg) = self.ring.push(msg) {
            self.overflow.push(msg);
        }
        if let Some(bell) = &self.doorbell {
            // Pairs with the fence in `prepare_sleep`: either the consumer sees our message
            // before sleeping or we see its `sleeping` flag and ring.
            fence(Ordering::SeqCst);
            if bell.sleeping.load(Ordering::Relaxed) && bell.sleeping.swap(false, Ordering::AcqRel)
            {
                bell.eventfd.notify();
            }
        }
    }

    /// Dequeue the oldest message (consumer only).
    #[inline]
    pub(crate) fn pop(&self) -> Option<Msg> {
        self.ring.pop().or_else(|| self.overflow.pop())
    }

    /// Whether nothing is queued.
    pub(crate) fn is_empty(&self) -> bool {
        self.ring.is_empty() && self.overflow.is_empty()
    }

    /// The eventfd a sleeping consumer waits on (interrupt mode only).
    pub(crate) fn eventfd(&self) -> Option<&EventFd> {
        self.doorbell.as_ref().map(|b| &b.eventfd)
    }

    /// Consumer, before sleeping: raise the flag, then re-check the queue. `true` means it is
    /// safe to sleep (a later push will ring the eventfd); `false` that messages arrived.
    pub(crate) fn prepare_sleep(&self) -> bool {
        let Some(bell) = &self.doorbell else {
            return false;
        };
        bell.sleeping.store(true, Ordering::SeqCst);
        fence(Ordering::SeqCst);
        if self.is_empty() {
            true
        } else {
            bell.sleeping.store(false, Ordering::Relaxed);
            false
        }
    }

    /// Consumer, after waking: lower the flag.
    pub(crate) fn end_sleep(&self) {
        if let Some(bell) = &self.doorbell {
            bell.sleeping.store(false, Ordering::Relaxed);
        }
    }

    /// Wake the consumer unconditionally (e.g. to make it see a shutdown request).
    pub(crate) fn notify(&self) {
        if let Some(bell) = &self.doorbell {
            bell.eventfd.notify();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    fn record(log: &Arc<Mutex<Vec<u32>>>, v: u32) -> Msg {
        let log = log.clone();
        Msg::call(move || log.lock().unwrap().push(v))
    }

    #[test]
    fn small_closures_inline_big_ones_boxed_all_run_or_drop_once() {
        assert!(Msg::fits::<(u64, u64, u64)>());
        assert!(!Msg::fits::<[u64; 4]>());
        assert!(!Msg::fits::<u128>() || std::mem::align_of::<u128>() <= 8);
        let token = Arc::new(());
        let out = Arc::new(Mutex::new(Vec::new()));
        let (t, o) = (token.clone(), out.clone());
        let small = Msg::call(move || o.lock().unwrap().push(Arc::strong_count(&t) as u64));
        let (t, o, big) = (token.clone(), out.clone(), [7u64; 8]);
        let large = Msg::call(move || {
            let _t = &t;
            o.lock().unwrap().push(big.iter().sum());
        });
        let (t, o, wide) = (token.clone(), out.clone(), 5u128);
        let aligned = Msg::call(move || {
            let _t = &t;
            o.lock().unwrap().push(wide as u64);
        });
        assert_eq!(Arc::strong_count(&token), 4);
        small.run();
        large.run();
        aligned.run();
        assert_eq!(*out.lock().unwrap(), [4, 56, 5]);
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "captures dropped after running"
        );
        let t = token.clone();
        let unrun = Msg::call(move || panic!("never run {t:?}"));
        let t = token.clone();
        let unrun_big = Msg::call(move || panic!("never run {t:?} {:?}", [0u64; 8]));
        assert_eq!(Arc::strong_count(&token), 3);
        drop((unrun, unrun_big));
        assert_eq!(
            Arc::strong_count(&token),
            1,
            "captures dropped with the message"
        );
    }

    #[test]
    fn overflow_keeps_fifo_and_never_fails() {
        let mb = Mailbox::new(false).unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let total = RING_CAPACITY as u32 + 10;
        for v in 0..total {
            mb.push(record(&log, v));
        }
        // Drain half, push more: they must queue behind the overflow.
        for _ in 0..RING_CAPACITY / 2 {
            mb.pop().unwrap().run();
        }
        for v in total..total + 5 {
            mb.push(record(&log, v));
        }
        while let Some(m) = mb.pop() {
            m.run();
        }
        assert!(mb.is_empty());
        let got = log.lock().unwrap().clone();
        assert_eq!(got, (0..total + 5).collect::<Vec<_>>());
    }

    #[test]
    fn doorbell_rings_only_when_sleeping() {
        let mb = Mailbox::new(true).unwrap();
        let efd = mb.eventfd().unwrap();
        let ep = crate::interrupt::Epoll::new().unwrap();
        use std::os::fd::AsRawFd;
        ep.add(efd.as_raw_fd(), 1).unwrap();
        let ready = || ep.wait(std::time::Duration::ZERO, |_| {}).unwrap();

        mb.push(Msg::call(|| {}));
        assert_eq!(ready(), 0, "not sleeping: no eventfd write");
        assert!(!mb.prepare_sleep(), "a queued message forbids sleeping");
        mb.pop().unwrap().run();
        assert!(mb.prepare_sleep());
        mb.push(Msg::call(|| {}));
        assert_eq!(ready(), 1, "sleeping consumer is woken");
        mb.end_sleep();

        let busy = Mailbox::new(false).unwrap();
        assert!(busy.eventfd().is_none());
        assert!(!busy.prepare_sleep());
    }
}
