//! Allocation-free waiting for a free I/O descriptor (SPDK's `spdk_bdev_io_wait_entry`).
//!
//! A submitter whose `read`/`write`/... failed with [`crate::SubmitError::NoDescriptor`] queues
//! an [`IoWaitEntry`] it owns on the channel ([`crate::IoChannel::queue_io_wait`]); when one of
//! the channel's descriptors is freed, the entries are called back in FIFO order, once each,
//! while descriptors are free. The entry is intrusive (the links live in it), so queueing never
//! allocates; it is pinned while queued, and dropping it unqueues it, so no dangling entry can
//! stay on a channel. The channel unqueues what is left when it goes away.
//!
//! Everything is single-core (`!Send`): entries and channels belong to one reactor.

use std::cell::Cell;
use std::marker::PhantomPinned;
use std::pin::Pin;
use std::ptr;

/// Callback of an [`IoWaitEntry`]: `ctx` is the entry's context value.
pub type IoWaitCallback = fn(ctx: usize);

/// A caller-owned entry waiting for a free descriptor on one channel (see the module doc).
/// Create it once (e.g. per channel or per request slot, `Box::pin` or `std::pin::pin!`) and
/// queue it as often as needed; it is on at most one channel at a time.
pub struct IoWaitEntry {
    cb: Cell<IoWaitCallback>,
    ctx: Cell<usize>,
    /// The list the entry is queued on (null when not queued).
    list: Cell<*const WaitList>,
    prev: Cell<*const IoWaitEntry>,
    next: Cell<*const IoWaitEntry>,
    _pinned: PhantomPinned,
}

impl IoWaitEntry {
    /// An entry that calls `cb(ctx)` when it is served.
    pub const fn new(cb: IoWaitCallback, ctx: usize) -> IoWaitEntry {
        IoWaitEntry {
            cb: Cell::new(cb),
            ctx: Cell::new(ctx),
            list: Cell::new(ptr::null()),
            prev: Cell::new(ptr::null()),
            next: Cell::new(ptr::null()),
            _pinned: PhantomPinned,
        }
    }

    /// Change the callback and its context. Panics while the entry is queued.
    pub fn set_callback(&self, cb: IoWaitCallback, ctx: usize) {
        assert!(
            !self.is_queued(),
            "IoWaitEntry: callback changed while queued"
        );
        self.cb.set(cb);
        self.ctx.set(ctx);
    }

    /// Whether the entry waits on a channel.
    pub fn is_queued(&self) -> bool {
        !self.list.get().is_null()
    }

    /// Take the entry off its channel without calling it. Returns whether it was queued.
    pub fn cancel(self: Pin<&Self>) -> bool {
        self.get_ref().unlink()
    }

    fn unlink(&self) -> bool {
        let list = self.list.get();
        if list.is_null() {
            return false;
        }
        // SAFETY: a queued entry's list is alive: the list unqueues every entry before it goes
        // away (`WaitList::drop`), and both live on this core.
        unsafe { (*list).remove(self) };
        true
    }
}

impl Drop for IoWaitEntry {
    fn drop(&mut self) {
        self.unlink();
    }
}

impl std::fmt::Debug for IoWaitEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IoWaitEntry")
            .field("ctx", &self.ctx.get())
            .field("queued", &self.is_queued())
            .finish()
    }
}

/// A channel's FIFO of waiting entries (doubly linked through the entries). It must not move
/// while entries are queued (it lives inside the channel's `Rc`).
pub(crate) struct WaitList {
    head: Cell<*const IoWaitEntry>,
    tail: Cell<*const IoWaitEntry>,
    len: Cell<usize>,
}

impl WaitList {
    pub(crate) const fn new() -> WaitList {
        WaitList {
            head: Cell::new(ptr::null()),
            tail: Cell::new(ptr::null()),
            len: Cell::new(0),
        }
    }

    /// How many entries wait.
    #[inline]
    pub(crate) fn len(&self) -> usize {
        self.len.get()
    }

    /// Append `e`. Panics if it is queued already (here or elsewhere).
    pub(crate) fn push_back(&self, e: Pin<&IoWaitEntry>) {
        let e = e.get_ref();
        assert!(!e.is_queued(), "IoWaitEntry queued twice");
        let p: *const IoWaitEntry = e;
        e.list.set(self);
        e.prev.set(self.tail.get());
        e.next.set(ptr::null());
        let tail = self.tail.get();
        if tail.is_null() {
            self.head.set(p);
        } else {
            // SAFETY: queued entries are alive (they unqueue themselves when dropped) and
            // pinned, and only this core touches them.
            unsafe { (*tail).next.set(p) };
        }
        self.tail.set(p);
        self.len.set(self.len.get() + 1);
    }

    /// Unqueue `e`, which is on this list.
    fn remove(&self, e: &IoWaitEntry) {
        assert!(
            ptr::eq(e.list.get(), self),
            "WaitList: entry is not on this list"
        );
        let (prev, next) = (e.prev.get(), e.next.get());
        // SAFETY: neighbours of a queued entry are queued entries of this list (alive and
        // pinned, see `push_back`).
        unsafe {
            if prev.is_null() {
                self.head.set(next);
            } else {
                (*prev).next.set(next);
            }
            if next.is_null() {
                self.tail.set(prev);
            } else {
                (*next).prev.set(prev);
            }
        }
        e.list.set(ptr::null());
        e.prev.set(ptr::null());
        e.next.set(ptr::null());
        let n = self.len.get();
        assert!(n > 0, "WaitList: length underflow");
        self.len.set(n - 1);
    }

    /// Unqueue the first entry and return its callback and context (to call after this
    /// returns: the callback may queue the entry again or drop it).
    #[inline]
    pub(crate) fn pop_front(&self) -> Option<(IoWaitCallback, usize)> {
        let h = self.head.get();
        if h.is_null() {
            assert_eq!(self.len.get(), 0, "WaitList: empty with a nonzero length");
            return None;
        }
        // SAFETY: the head is a queued entry (alive and pinned, see `push_back`).
        let e = unsafe { &*h };
        self.remove(e);
        Some((e.cb.get(), e.ctx.get()))
    }
}

impl Drop for WaitList {
    fn drop(&mut self) {
        while self.pop_front().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;
    use std::pin::pin;

    thread_local! {
        static CALLED: RefCell<Vec<usize>> = const { RefCell::new(Vec::new()) };
    }

    fn note(ctx: usize) {
        CALLED.with(|c| c.borrow_mut().push(ctx));
    }

    fn serve(l: &WaitList) -> Vec<usize> {
        while let Some((cb, ctx)) = l.pop_front() {
            cb(ctx);
        }
        CALLED.with(|c| std::mem::take(&mut *c.borrow_mut()))
    }

    #[test]
    fn fifo_cancel_and_drop_unqueue() {
        let l = WaitList::new();
        let a = pin!(IoWaitEntry::new(note, 1));
        let b = pin!(IoWaitEntry::new(note, 2));
        let c = Box::pin(IoWaitEntry::new(note, 3));
        l.push_back(a.as_ref());
        l.push_back(b.as_ref());
        l.push_back(c.as_ref());
        assert_eq!(l.len(), 3);
        assert!(b.is_queued());
        assert!(b.as_ref().cancel(), "middle entry cancelled");
        assert!(!b.as_ref().cancel(), "not queued any more");
        drop(c); // the tail unqueues itself
        assert_eq!(l.len(), 1);
        b.set_callback(note, 20);
        l.push_back(b.as_ref());
        assert_eq!(serve(&l), vec![1, 20], "FIFO");
        assert_eq!(l.len(), 0);
        assert!(!a.is_queued());
        // requeue works after serving
        l.push_back(a.as_ref());
        assert_eq!(serve(&l), vec![1]);
    }

    #[test]
    #[should_panic(expected = "changed while queued")]
    fn changing_a_queued_entry_panics() {
        let l = WaitList::new();
        let a = pin!(IoWaitEntry::new(note, 1));
        l.push_back(a.as_ref());
        a.set_callback(note, 2);
    }

    #[test]
    #[should_panic(expected = "queued twice")]
    fn queueing_twice_panics() {
        let l = WaitList::new();
        let a = pin!(IoWaitEntry::new(note, 1));
        l.push_back(a.as_ref());
        l.push_back(a.as_ref());
    }

    #[test]
    fn dropping_the_list_unqueues_its_entries() {
        let a = Box::pin(IoWaitEntry::new(note, 1));
        {
            let l = WaitList::new();
            l.push_back(a.as_ref());
        }
        assert!(!a.is_queued());
        assert!(!a.as_ref().cancel());
    }
}
