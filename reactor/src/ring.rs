//! A reactor's mailbox: the lock-free multi-producer ring other threads send closures and task
//! wake-ups through, and (in interrupt mode) the doorbell that wakes the reactor when it sleeps.

use crate::interrupt::EventFd;
use async_task::Runnable;
use crossbeam_queue::{ArrayQueue, SegQueue};
use std::io;
use std::mem::ManuallyDrop;
use std::sync::atomic::{fence, AtomicBool, Ordering};

/// Slots of the bounded ring. Past that, messages go to an unbounded overflow queue so a send
/// never fails or blocks while the reactor runs.
pub(crate) const RING_CAPACITY: usize = 65536;

/// One item of a mailbox.
pub(crate) enum Msg {
    /// Run a closure on the reactor.
    Call(Box<dyn FnOnce() + Send>),
    /// Poll a local task of this reactor that was woken from another thread. `ManuallyDrop`
    /// because a `Runnable` of a local task must not be dropped on another thread: if the
    /// message is ever dropped unrun (the reactor is gone), the task is leaked instead.
    Wake(ManuallyDrop<Runnable>),
}

impl Msg {
    /// Run the message. Only on the owning reactor's thread.
    pub(crate) fn run(self) {
        match self {
            Msg::Call(f) => f(),
            Msg::Wake(r) => {
                ManuallyDrop::into_inner(r).run();
            }
        }
    }

    /// Drop the message without running it, releasing a task's future properly. Only on the
    /// owning reactor's thread.
    pub(crate) fn discard(self) {
        match self {
            Msg::Call(f) => drop(f),
            Msg::Wake(r) => drop(ManuallyDrop::into_inner(r)),
        }
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
        Msg::Call(Box::new(move || log.lock().unwrap().push(v)))
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

        mb.push(Msg::Call(Box::new(|| {})));
        assert_eq!(ready(), 0, "not sleeping: no eventfd write");
        assert!(!mb.prepare_sleep(), "a queued message forbids sleeping");
        mb.pop().unwrap().run();
        assert!(mb.prepare_sleep());
        mb.push(Msg::Call(Box::new(|| {})));
        assert_eq!(ready(), 1, "sleeping consumer is woken");
        mb.end_sleep();

        let busy = Mailbox::new(false).unwrap();
        assert!(busy.eventfd().is_none());
        assert!(!busy.prepare_sleep());
    }
}
