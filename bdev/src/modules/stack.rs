//! Helpers shared by the stacked modules (`delay`, `error`, `lvol`, the `keel-raid` crate) and by
//! `uring`'s overflow queue.
//!
//! - [`IoQueue`]: an intrusive FIFO of in-flight I/Os, linked through their descriptors, so
//!   holding or queueing an I/O never allocates.
//! - [`forward`]: resubmit an I/O as a child I/O on a base channel (HOT PATH).
//! - [`ModuleTable`]: a module's own table of the bdevs it created (control path).
//! - [`open_base`]: open and claim a base bdev, unregistering the stacked bdev on hot-remove.
//! - [`interrupt_mode_here`] / [`wake_all_cores`]: what channels need to work when reactors
//!   sleep between events (`--interrupt-mode`).

use crate::SubmitError;
use crate::{
    BdevDesc, BdevError, BdevEvent, IoCallback, IoChannel, IoCtx, IoRef, IoStatus, IoType,
};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// An intrusive FIFO of in-flight I/Os, linked through the descriptor's own list link (free
/// while the module holds the I/O), so the module's whole context ([`IoRef::ctx`]) stays its
/// own. `Copy` so it can live in a `Cell`.
///
/// Relies on `IoRef::into_raw` giving the same non-zero value (the descriptor's address) every
/// time it is called for the same in-flight I/O, which is how the bdev layer implements it.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct IoQueue {
    head: usize,
    tail: usize,
    len: usize,
}

impl IoQueue {
    /// An empty queue.
    pub const fn new() -> IoQueue {
        IoQueue {
            head: 0,
            tail: 0,
            len: 0,
        }
    }

    /// Whether the queue holds no I/O.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// How many I/Os the queue holds.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Append `io`.
    pub fn push_back(&mut self, mut io: IoRef) {
        io.set_queue_link(0);
        let raw = io.into_raw();
        debug_assert_ne!(raw, 0, "IoRef::into_raw returned 0");
        if self.tail == 0 {
            self.head = raw;
        } else {
            // SAFETY: `tail` came from `into_raw` of an I/O that is still queued (so not
            // completed) on this core; we turn it back into a raw value right away.
            let mut last = unsafe { IoRef::from_raw(self.tail) };
            last.set_queue_link(raw);
            let _ = last.into_raw();
        }
        self.tail = raw;
        self.len += 1;
    }

    /// Put `io` at the front (e.g. a retry that failed again keeps its place).
    pub fn push_front(&mut self, mut io: IoRef) {
        io.set_queue_link(self.head);
        let raw = io.into_raw();
        debug_assert_ne!(raw, 0, "IoRef::into_raw returned 0");
        if self.tail == 0 {
            self.tail = raw;
        }
        self.head = raw;
        self.len += 1;
    }

    /// Take the oldest I/O.
    pub fn pop_front(&mut self) -> Option<IoRef> {
        if self.head == 0 {
            assert_eq!(self.len, 0, "IoQueue: empty list with a length");
            return None;
        }
        // SAFETY: `head` came from `into_raw` of a queued, not yet completed I/O on this core;
        // it leaves the queue here, so it is rebuilt exactly once.
        let io = unsafe { IoRef::from_raw(self.head) };
        self.head = io.queue_link();
        if self.head == 0 {
            self.tail = 0;
        }
        self.len -= 1;
        Some(io)
    }

    /// Run `f` on the typed context ([`IoRef::ctx`]) of the oldest I/O without dequeuing it.
    pub fn with_front_ctx<T: IoCtx, R>(&self, f: impl FnOnce(&mut T) -> R) -> Option<R> {
        if self.head == 0 {
            return None;
        }
        // SAFETY: as in `pop_front`; the I/O stays queued and is turned back into its raw
        // value right after `f` (which sees only its context, not the `IoRef`).
        let mut io = unsafe { IoRef::from_raw(self.head) };
        let r = f(io.ctx::<T>());
        let _ = io.into_raw();
        Some(r)
    }
}

/// Submit `io` to `base` as a child I/O with the same type and range: `cb` later receives
/// `io.into_raw()` as its context. On failure the callback will not run and the I/O comes back.
pub fn forward(base: &IoChannel, io: IoRef, cb: IoCallback) -> Result<(), (IoRef, SubmitError)> {
    let io_type = io.io_type();
    let offset = io.offset_blocks();
    let num = io.num_blocks();
    let (iov_ptr, iov_cnt) = {
        let iovs = io.iovs();
        (iovs.as_ptr(), iovs.len())
    };
    let ctx = io.into_raw();
    // SAFETY: the iovec array lives in the parent's descriptor, which stays valid until the
    // parent completes; the parent completes only after this child does (or right below when
    // the submission fails).
    let iovs = unsafe { std::slice::from_raw_parts(iov_ptr, iov_cnt) };
    let res = match io_type {
        IoType::Read => base.read(iovs, offset, num, cb, ctx),
        IoType::Write => base.write(iovs, offset, num, cb, ctx),
        IoType::WriteZeroes => base.write_zeroes(offset, num, cb, ctx),
        IoType::Unmap => base.unmap(offset, num, cb, ctx),
        IoType::Flush => base.flush(cb, ctx),
        IoType::Reset => base.reset(cb, ctx),
    };
    // SAFETY: on error the callback is not called, so `ctx` was not consumed: rebuild it once.
    res.map_err(|e| (unsafe { IoRef::from_raw(ctx) }, e))
}

/// The status a parent I/O gets when its child cannot be submitted (other than for lack of a
/// descriptor, which is retried).
pub fn submit_error_status(e: SubmitError) -> IoStatus {
    match e {
        SubmitError::Removed => IoStatus::Aborted,
        _ => IoStatus::IoError,
    }
}

/// A module's table of the bdevs it created, by bdev name (control path only).
pub struct ModuleTable<T> {
    map: Mutex<BTreeMap<String, Arc<T>>>,
}

impl<T> Default for ModuleTable<T> {
    fn default() -> Self {
        Self::new()
    }
}

impl<T> ModuleTable<T> {
    /// An empty table (usable in a `static`).
    pub const fn new() -> Self {
        ModuleTable {
            map: Mutex::new(BTreeMap::new()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, Arc<T>>> {
        // A panic while holding this lock cannot leave the map inconsistent: keep going.
        self.map.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Add (or replace) `name`.
    pub fn insert(&self, name: &str, v: Arc<T>) {
        self.lock().insert(name.to_string(), v);
    }

    /// The entry for the bdev called (or aliased) `name`.
    pub fn get(&self, name: &str) -> Option<Arc<T>> {
        let canonical = crate::get_bdev(name).map(|b| b.name().to_string());
        let map = self.lock();
        canonical
            .and_then(|n| map.get(&n).cloned())
            .or_else(|| map.get(name).cloned())
    }

    /// Remove `name` if it still maps to `this` (a newer bdev may have reused the name).
    pub fn remove_if_same(&self, name: &str, this: *const T) {
        let mut map = self.lock();
        if map
            .get(name)
            .is_some_and(|v| std::ptr::eq(Arc::as_ptr(v), this))
        {
            map.remove(name);
        }
    }
}

/// This core's channel to a stacked bdev's base, through the descriptor `open_base` gave it
/// (NotFound once the base is gone).
pub fn base_channel(
    base: &Mutex<Option<BdevDesc>>,
    base_name: &str,
) -> Result<IoChannel, BdevError> {
    let base = base.lock().unwrap_or_else(|p| p.into_inner());
    let desc = base
        .as_ref()
        .ok_or_else(|| BdevError::NotFound(base_name.to_string()))?;
    desc.get_io_channel()
}

/// Open `base` for writing and claim it for `module` on behalf of the stacked bdev `name`.
/// When the base is hot-removed, `name` is unregistered, but only while `live` is true (set it
/// once `name` is registered, clear it in `destruct`), so a stale event never removes a newer
/// bdev that reuses the name.
pub fn open_base(
    base: &str,
    module: &'static str,
    name: &str,
    live: Arc<AtomicBool>,
) -> Result<BdevDesc, BdevError> {
    let stacked = name.to_string();
    let desc = crate::open(base, true, move |event| match event {
        BdevEvent::Remove => {
            if !live.load(Ordering::Acquire) {
                return;
            }
            log::info!("{module} bdev {stacked}: base bdev removed, unregistering");
            if keel_reactor::current_core().is_none() {
                log::warn!(
                    "{module} bdev {stacked}: base removed off the reactors; not unregistered"
                );
                return;
            }
            let n = stacked.clone();
            keel_reactor::spawn_local(async move {
                if let Err(e) = crate::unregister(&n).await {
                    log::debug!("{module} bdev {n}: unregister after base removal: {e}");
                }
            });
        }
        // The stacked bdev keeps its size; I/O beyond a shrunk base fails there.
        BdevEvent::Resize => log::info!("{module} bdev {stacked}: base bdev resized (size kept)"),
    })?;
    desc.claim(module)?;
    Ok(desc)
}

/// Whether the calling reactor runs in interrupt mode (its untimed pollers, hence bdev channel
/// polls, only run when something wakes it). Control path: reads the reactors' stats.
pub fn interrupt_mode_here() -> bool {
    let Some(core) = keel_reactor::current_core() else {
        return false;
    };
    keel_reactor::reactor_stats()
        .iter()
        .any(|s| s.lcore == core && s.interrupt_mode)
}

/// Wake every reactor once (a no-op message) when some run in interrupt mode, so channels that
/// must notice a shared state change (an injection cleared, a reset) poll soon. Off the
/// steady-state path: used for clears and resets only.
pub fn wake_all_cores() {
    if keel_reactor::reactor_stats()
        .iter()
        .any(|s| s.interrupt_mode)
    {
        if let Err(e) = keel_reactor::for_each_core(|| {}, || {}) {
            log::debug!("waking reactors: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn submit_errors_map_to_statuses() {
        assert_eq!(submit_error_status(SubmitError::Removed), IoStatus::Aborted);
        assert_eq!(
            submit_error_status(SubmitError::OutOfRange),
            IoStatus::IoError
        );
        assert_eq!(
            submit_error_status(SubmitError::BadIovecs),
            IoStatus::IoError
        );
    }

    #[test]
    fn empty_queue_behaves() {
        let mut q = IoQueue::new();
        assert!(q.is_empty());
        assert!(q.pop_front().is_none());
        assert_eq!(q.with_front_ctx(|x: &mut u64| *x), None);
        assert_eq!(q, IoQueue::default());
    }
}
