//! A domain: one thread's pool — its pages, slice table, per-class lists, and the lock-free
//! queue through which other threads send freed buffers home.
//!
//! # Choosing a slice (cheapest first)
//! For an allocation of class `c`:
//! 1. the first **partial** slice of `c` (no state change unless it fills up);
//! 2. a **dirty** slice of `c` (re-carved: its bitmap is reset, its memory already resident);
//! 3. a **dirty** slice of another class, re-purposed for `c` — only when `c` has no dirty slice
//!    of its own. It is preferred over a clean slice because its memory is already faulted in
//!    (and possibly hugepage- or DMA-warm), so reusing it keeps the resident footprint compact,
//!    while clean slices stay untouched and cost nothing;
//! 4. the next **clean** slice (clean slices are carved in address order and never return);
//! 5. a clean slice of a newly mapped page, while the domain holds fewer than its page limit;
//! 6. otherwise the allocation is refused: [`PoolError::Exhausted`].
//!
//! Freed slices go to the front of their list (LIFO: the most recently used memory is reused
//! first, while it is still in cache).
//!
//! # Threads and lifetime
//! The slice table ([`Local`]) is touched only by the owning thread, without lock or atomic RMW.
//! Other threads free by pushing the object's slot id on `remote` (a `SegQueue`, lock-free);
//! the owner drains it on its next `alloc` and in `stats`. Waiting allocations park their
//! wakers in `waiters`; every free (local, or remote via the queue) wakes them when any exist.
//!
//! Buffers hold a raw pointer to their domain, not a counted reference (that would cost two
//! atomic RMWs per buffer). The domain stays alive because its owner thread holds an `Arc`;
//! when the thread exits the domain is *orphaned*: the owner's `Arc` becomes `keepalive` for
//! the objects still out, and from then on whoever pushes a remote free also "reaps" (drains
//! the queue under the `reaping` flag, which gives exclusive access to `Local`). The reap that
//! sees the last object come back releases `keepalive`, and the last `Arc` unmaps the pages.

use super::page::Page;
use super::slice::{Freed, Slice, SliceList, SliceState, OBJ_BITS, SLICES_PER_PAGE};
use super::{PoolConfig, PoolError, PoolStats, MIN_CLASS, NUM_CLASSES, PAGE_SIZE};
use crossbeam_queue::SegQueue;
use std::cell::RefCell;
use std::ptr::NonNull;
use std::sync::atomic::{fence, AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::Waker;
use std::time::{Duration, Instant};

/// Largest page count a domain may hold: slot ids (`slice << OBJ_BITS | object`) are `u32`.
pub(super) const MAX_PAGES_LIMIT: usize = (1 << (32 - OBJ_BITS)) / SLICES_PER_PAGE;

/// Interval between two "pool exhausted" warnings of one domain.
const EXHAUSTED_LOG_INTERVAL: Duration = Duration::from_secs(1);

/// One thread's pool. Shared (via `Arc` and the raw pointers in buffers) with every thread that
/// may free one of its buffers.
pub(super) struct Domain {
    /// Core id reported by `DmaBuf::home`.
    home: u32,
    /// Owner-thread state; see the `Sync` impl for who may touch it when.
    local: RefCell<Local>,
    /// Slot ids of objects freed on other threads, not yet returned to their slices.
    remote: SegQueue<u32>,
    /// Wakers of `alloc_wait` futures waiting for an object.
    waiters: Mutex<Vec<Waker>>,
    /// `waiters.len()`, readable without the lock (the free path checks it).
    n_waiters: AtomicUsize,
    /// The owner thread exited; remote frees reap.
    orphaned: AtomicBool,
    /// Held (true) by the thread reaping an orphaned domain.
    reaping: AtomicBool,
}

// SAFETY: `Domain` is shared between threads, but `local` (the only non-thread-safe part) is
// accessed by exactly one thread at a time: the owner thread while `orphaned` is false
// (enforced by the thread-local `CURRENT` check of every caller), then only the holder of the
// `reaping` flag, whose acquire/release orders successive holders. The owner's non-`Send`
// contents of `local` (page hooks) are dropped on the owner thread before orphaning.
unsafe impl Sync for Domain {}
// SAFETY: see `Sync`: the last reference may drop the domain on any thread; by then `local`
// holds only pages and plain metadata, which may be released anywhere.
unsafe impl Send for Domain {}

/// A page-mapped hook and how many of the domain's pages it was told about.
struct Hook {
    /// Taken out while it runs (no borrow of `Local` is held across user code).
    f: Option<Box<dyn FnMut(*mut u8, usize)>>,
    seen: usize,
}

/// Why the domain could not grow.
enum GrowError {
    Limit,
    Map(std::io::Error),
}

/// The owner-thread state of a domain.
pub(super) struct Local {
    max_pages: usize,
    /// Still try `MAP_HUGETLB` for the next page.
    try_huge: bool,
    pages: Vec<Page>,
    huge_pages: usize,
    /// `pages.len() * SLICES_PER_PAGE` entries, slice `i` of page `i / SLICES_PER_PAGE`.
    slices: Vec<Slice>,
    partial: [SliceList; NUM_CLASSES],
    dirty: [SliceList; NUM_CLASSES],
    /// Total of the `dirty` list lengths.
    n_dirty: usize,
    /// Slices `carved..` are clean.
    carved: usize,
    in_use: usize,
    exhausted_events: u64,
    /// Refusals since the last warning, and when that warning was logged.
    exhausted_unlogged: u64,
    exhausted_logged_at: Option<Instant>,
    hooks: Vec<Hook>,
    /// A hook report loop is running on this thread (nested growth leaves it to that loop).
    reporting: bool,
    /// The owner's reference, kept by an orphaned domain until its last object is back.
    keepalive: Option<Arc<Domain>>,
}

impl Domain {
    /// A new, empty domain reporting `home`, configured by `cfg`.
    pub(super) fn new(home: u32, cfg: &PoolConfig) -> Domain {
        Domain {
            home,
            local: RefCell::new(Local {
                max_pages: cfg.max_pages_per_core.min(MAX_PAGES_LIMIT),
                try_huge: cfg.use_hugepages,
                pages: Vec::new(),
                huge_pages: 0,
                slices: Vec::new(),
                partial: [const { SliceList::new() }; NUM_CLASSES],
                dirty: [const { SliceList::new() }; NUM_CLASSES],
                n_dirty: 0,
                carved: 0,
                in_use: 0,
                exhausted_events: 0,
                exhausted_unlogged: 0,
                exhausted_logged_at: None,
                hooks: Vec::new(),
                reporting: false,
                keepalive: None,
            }),
            remote: SegQueue::new(),
            waiters: Mutex::new(Vec::new()),
            n_waiters: AtomicUsize::new(0),
            orphaned: AtomicBool::new(false),
            reaping: AtomicBool::new(false),
        }
    }

    /// The core id buffers of this domain report as home.
    pub(super) fn home(&self) -> u32 {
        self.home
    }

    /// Take an object of `class`. Owner thread only.
    pub(super) fn alloc(&self, class: usize) -> Result<(NonNull<u8>, u32), PoolError> {
        if !self.remote.is_empty() {
            self.drain_remote();
        }
        let mut l = self.local.borrow_mut();
        if let Some(obj) = l.take(class) {
            return Ok(obj);
        }
        self.alloc_slow(l, class)
    }

    #[cold]
    fn alloc_slow(
        &self,
        mut l: std::cell::RefMut<'_, Local>,
        class: usize,
    ) -> Result<(NonNull<u8>, u32), PoolError> {
        match l.grow() {
            Ok(()) => {
                let obj = l.take(class);
                drop(l);
                self.report_pages();
                obj.ok_or(PoolError::Exhausted)
            }
            Err(e) => {
                let log = l.note_exhausted(Instant::now());
                let (pages, events) = (l.pages.len(), l.exhausted_events);
                drop(l);
                match (e, log) {
                    (GrowError::Limit, Some(n)) => log::warn!(
                        "buffer pool of core {}: exhausted at its limit of {pages} pages, \
                         no free {} B object ({n} allocations refused since the last warning, \
                         {events} in all)",
                        self.home,
                        MIN_CLASS << class
                    ),
                    (GrowError::Map(err), Some(n)) => log::warn!(
                        "buffer pool of core {}: cannot map page {} ({err}); \
                         {n} allocations refused since the last warning, {events} in all",
                        self.home,
                        pages + 1
                    ),
                    (_, None) => {}
                }
                Err(PoolError::Exhausted)
            }
        }
    }

    /// Return object `slot` on the owner thread.
    pub(super) fn free_local(&self, slot: u32) {
        self.local.borrow_mut().put(slot);
        if self.n_waiters.load(Ordering::Relaxed) != 0 {
            self.wake_waiters();
        }
    }

    /// Return object `slot` of the domain at `dom` from a thread that is not its owner.
    ///
    /// # Safety
    /// `dom` must be the domain of a handed-out object `slot` that is freed by this call (so
    /// the domain is alive: held by its owner or by its orphan `keepalive`).
    pub(super) unsafe fn free_remote(dom: NonNull<Domain>, slot: u32) {
        // SAFETY: by the contract the domain is alive and some `Arc` to it exists (the owner's
        // or `keepalive`, which is only released once this object has been reaped); taking our
        // own reference keeps it alive for the rest of this call even if that happens meanwhile.
        let d = unsafe {
            Arc::increment_strong_count(dom.as_ptr());
            Arc::from_raw(dom.as_ptr())
        };
        d.remote.push(slot);
        // Pairs with the fences in `register_waiter` and `orphan`: either they see our push, or
        // we see their waiter / orphaned flag.
        fence(Ordering::SeqCst);
        if d.n_waiters.load(Ordering::Relaxed) != 0 {
            d.wake_waiters();
        }
        if d.orphaned.load(Ordering::Relaxed) {
            d.reap();
        }
    }

    /// Return the remotely freed objects to their slices. Owner thread only.
    fn drain_remote(&self) {
        let mut drained = false;
        {
            let mut l = self.local.borrow_mut();
            while let Some(slot) = self.remote.pop() {
                l.put(slot);
                drained = true;
            }
        }
        if drained && self.n_waiters.load(Ordering::Relaxed) != 0 {
            self.wake_waiters();
        }
    }

    /// Counters, after draining remote frees. Owner thread only.
    pub(super) fn stats(&self) -> PoolStats {
        self.drain_remote();
        let l = self.local.borrow();
        PoolStats {
            pages: l.pages.len(),
            hugepages: !l.pages.is_empty() && l.huge_pages == l.pages.len(),
            objects_in_use: l.in_use,
            exhausted_events: l.exhausted_events,
        }
    }

    /// Register a page hook and report the existing pages to it. Owner thread only.
    pub(super) fn on_page_mapped(&self, f: Box<dyn FnMut(*mut u8, usize)>) {
        self.local.borrow_mut().hooks.push(Hook {
            f: Some(f),
            seen: 0,
        });
        self.report_pages();
    }

    /// Tell every hook about the pages it has not seen, calling it with no borrow held (a hook
    /// may allocate, even grow the pool: the running loop then reports the new page too).
    fn report_pages(&self) {
        {
            let mut l = self.local.borrow_mut();
            if l.reporting {
                return;
            }
            l.reporting = true;
        }
        loop {
            let (i, base, mut f) = {
                let mut l = self.local.borrow_mut();
                let n = l.pages.len();
                let Some(i) = l.hooks.iter().position(|h| h.seen < n && h.f.is_some()) else {
                    l.reporting = false;
                    return;
                };
                let page = l.hooks[i].seen;
                let base = l.pages[page].base();
                let hook = &mut l.hooks[i];
                hook.seen += 1;
                (i, base, hook.f.take().expect("hook present"))
            };
            f(base, PAGE_SIZE);
            self.local.borrow_mut().hooks[i].f = Some(f);
        }
    }

    /// Park `waker` until the next free. Owner thread only. After this, the caller must retry
    /// its allocation (which drains remote frees) before returning `Pending`.
    pub(super) fn register_waiter(&self, waker: &Waker) {
        {
            let mut ws = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            if !ws.iter().any(|w| w.will_wake(waker)) {
                ws.push(waker.clone());
            }
            self.n_waiters.store(ws.len(), Ordering::Relaxed);
        }
        // Pairs with the fence in `free_remote`.
        fence(Ordering::SeqCst);
    }

    /// Wake (and forget) every waiter; they re-poll and re-register if still short.
    fn wake_waiters(&self) {
        let ws = {
            let mut ws = self.waiters.lock().unwrap_or_else(PoisonError::into_inner);
            self.n_waiters.store(0, Ordering::Relaxed);
            std::mem::take(&mut *ws)
        };
        for w in ws {
            w.wake();
        }
    }

    /// The owner thread is exiting: hand its reference to the objects still out (or free the
    /// domain now if none are).
    pub(super) fn orphan(self: Arc<Self>) {
        let me = Arc::clone(&self);
        let hooks = {
            let mut l = me.local.borrow_mut();
            l.keepalive = Some(self);
            std::mem::take(&mut l.hooks)
        };
        // Hooks may hold thread-bound state: drop them here, on the owner thread.
        drop(hooks);
        // Wakers of this thread's executor will never be polled again.
        drop(std::mem::take(
            &mut *me.waiters.lock().unwrap_or_else(PoisonError::into_inner),
        ));
        me.orphaned.store(true, Ordering::SeqCst);
        // Pairs with the fence in `free_remote`.
        fence(Ordering::SeqCst);
        me.reap();
    }

    /// Return queued remote frees of an orphaned domain to its slices; release `keepalive`
    /// once no object is out. The caller holds its own `Arc`, so `self` outlives the release.
    fn reap(&self) {
        let mut released = None;
        loop {
            if self
                .reaping
                .compare_exchange(false, true, Ordering::Acquire, Ordering::Relaxed)
                .is_err()
            {
                // The holder re-checks the queue after letting go, so our push is not lost.
                break;
            }
            {
                let mut l = self.local.borrow_mut();
                while let Some(slot) = self.remote.pop() {
                    l.put(slot);
                }
                if l.in_use == 0 && released.is_none() {
                    released = l.keepalive.take();
                }
            }
            self.reaping.store(false, Ordering::Release);
            // Pairs with a pusher's fence in `free_remote` before its failed compare_exchange.
            fence(Ordering::SeqCst);
            if self.remote.is_empty() {
                break;
            }
        }
        drop(released);
    }

    /// Test view: every slice's (state, class, free objects).
    #[cfg(test)]
    pub(super) fn slice_states(&self) -> Vec<(SliceState, usize, usize)> {
        self.drain_remote();
        let l = self.local.borrow();
        l.slices
            .iter()
            .map(|s| (s.state(), s.class(), s.free_objects()))
            .collect()
    }

    /// Test view: registered waiters.
    #[cfg(test)]
    pub(super) fn waiter_count(&self) -> usize {
        self.n_waiters.load(Ordering::SeqCst)
    }
}

impl Local {
    /// Take an object of `class` from an existing slice, cheapest slice first (module doc).
    /// `None` when the domain must grow.
    fn take(&mut self, class: usize) -> Option<(NonNull<u8>, u32)> {
        let idx = match self.partial[class].first() {
            Some(idx) => idx,
            None => {
                let idx = self.reusable_slice(class)?;
                self.slices[idx as usize].carve(class);
                self.partial[class].push_front(&mut self.slices, idx);
                idx
            }
        };
        let slice = &mut self.slices[idx as usize];
        let obj = slice.take()?;
        let ptr = slice.object_ptr(obj);
        if slice.state() == SliceState::Full {
            self.partial[class].remove(&mut self.slices, idx);
        }
        self.in_use += 1;
        let ptr = NonNull::new(ptr).expect("pool objects lie in mapped pages");
        Some((ptr, idx << OBJ_BITS | u32::from(obj)))
    }

    /// A dirty slice of `class`, else a dirty one of another class, else a clean one; unlisted.
    fn reusable_slice(&mut self, class: usize) -> Option<u32> {
        if self.n_dirty > 0 {
            let from = if self.dirty[class].len() > 0 {
                class
            } else {
                (0..NUM_CLASSES).find(|&c| self.dirty[c].len() > 0)?
            };
            self.n_dirty -= 1;
            return self.dirty[from].pop_front(&mut self.slices);
        }
        if self.carved < self.slices.len() {
            self.carved += 1;
            return Some(self.carved as u32 - 1);
        }
        None
    }

    /// Return object `slot` to its slice, moving the slice between lists as its state changes.
    fn put(&mut self, slot: u32) {
        let idx = slot >> OBJ_BITS;
        let obj = (slot & ((1 << OBJ_BITS) - 1)) as u16;
        let slice = &mut self.slices[idx as usize];
        let class = slice.class();
        match slice.put(obj) {
            Freed::StillPartial => {}
            Freed::FullToPartial => self.partial[class].push_front(&mut self.slices, idx),
            Freed::ToDirty { was_full } => {
                if !was_full {
                    self.partial[class].remove(&mut self.slices, idx);
                }
                self.dirty[class].push_front(&mut self.slices, idx);
                self.n_dirty += 1;
            }
        }
        self.in_use -= 1;
    }

    /// Map one more page, adding its clean slices.
    fn grow(&mut self) -> Result<(), GrowError> {
        if self.pages.len() >= self.max_pages {
            return Err(GrowError::Limit);
        }
        let page = Page::map(&mut self.try_huge).map_err(GrowError::Map)?;
        let base = page.base();
        self.huge_pages += usize::from(page.is_huge());
        self.pages.push(page);
        self.slices.reserve(SLICES_PER_PAGE);
        for i in 0..SLICES_PER_PAGE {
            self.slices
                .push(Slice::new(base.wrapping_add(i * super::slice::SLICE_SIZE)));
        }
        log::debug!("buffer pool: mapped page {} at {base:p}", self.pages.len());
        Ok(())
    }

    /// Count a refusal; `Some(refusals since the last warning)` when one should be logged now
    /// (the first time, then at most once per [`EXHAUSTED_LOG_INTERVAL`]).
    fn note_exhausted(&mut self, now: Instant) -> Option<u64> {
        self.exhausted_events += 1;
        self.exhausted_unlogged += 1;
        let recent = matches!(self.exhausted_logged_at,
            Some(t) if now.duration_since(t) < EXHAUSTED_LOG_INTERVAL);
        if recent {
            return None;
        }
        self.exhausted_logged_at = Some(now);
        Some(std::mem::take(&mut self.exhausted_unlogged))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exhaustion_warnings_are_rate_limited_with_counts() {
        let d = Domain::new(
            7,
            &PoolConfig {
                max_pages_per_core: 0,
                use_hugepages: false,
            },
        );
        let mut l = d.local.borrow_mut();
        let t0 = Instant::now();
        assert_eq!(l.note_exhausted(t0), Some(1), "first refusal is logged");
        assert_eq!(l.note_exhausted(t0 + Duration::from_millis(10)), None);
        assert_eq!(l.note_exhausted(t0 + Duration::from_millis(999)), None);
        assert_eq!(
            l.note_exhausted(t0 + EXHAUSTED_LOG_INTERVAL),
            Some(3),
            "with the count"
        );
        assert_eq!(l.note_exhausted(t0 + EXHAUSTED_LOG_INTERVAL), None);
        assert_eq!(l.exhausted_events, 5);
    }

    #[test]
    fn page_limit_is_capped_to_slot_space() {
        let d = Domain::new(
            0,
            &PoolConfig {
                max_pages_per_core: usize::MAX,
                use_hugepages: false,
            },
        );
        assert_eq!(d.local.borrow().max_pages, MAX_PAGES_LIMIT);
        assert_eq!(
            (MAX_PAGES_LIMIT * SLICES_PER_PAGE) << OBJ_BITS,
            1usize << 32
        );
    }
}
