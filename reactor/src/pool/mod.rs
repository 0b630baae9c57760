//! Per-core pools of DMA-able I/O buffers: the slab allocator of docs/ARCHITECTURE.md §3.5.
//!
//! Hierarchy: domain (one per core) → page (2 MiB, `MAP_HUGETLB` when the system has
//! hugepages, else ordinary pages, logged once) → slice (a run of objects of one size class,
//! 512 B … 128 KiB) → object. A slice is clean (never used), partial, full or dirty (used
//! before, now empty); allocation takes the cheapest first: partial, then dirty, then clean.
//! Buffers are 4 KiB-aligned (classes below 4 KiB are aligned to their size). A buffer freed on
//! a foreign core goes back to its home core (lock-free). Growth is bounded by
//! [`PoolConfig::max_pages_per_core`]; exhausting it is back-pressure: [`alloc`] returns
//! [`PoolError::Exhausted`] and [`alloc_wait`] waits, never a crash.
//!
//! Hot path: `alloc`/free on the home core take no lock, make no syscall and do not touch the
//! global allocator once the pool is warm.
//!
//! Layout of the module: `page` (mapping 2 MiB pages), `slice` (slice state machine and free
//! bitmap), `domain` (one thread's pool: slice choice, growth, remote frees, waiters, lifetime),
//! `thread` (the calling thread's domain), `wait` (the [`alloc_wait`] future).
//!
//! Pages are 2 MiB-aligned and slices 256 KiB-aligned, so in fact every buffer is aligned to
//! its class size. The slice rules (size, re-purposing of dirty slices) are in `slice` and
//! `domain`.
//!
//! Every thread that allocates gets its own domain (reactors are threads); see `thread` for the
//! home id of non-reactor threads (`1 << 16` and up). A buffer that outlives its home thread
//! stays valid; the home's pages are unmapped when its last buffer is freed.

mod domain;
mod page;
mod slice;
mod thread;
mod wait;

use domain::{Domain, MAX_PAGES_LIMIT};
use std::ptr::NonNull;
use std::sync::{Mutex, PoisonError};

/// Smallest buffer size class, bytes.
pub const MIN_CLASS: usize = 512;
/// Largest buffer size class, bytes.
pub const MAX_CLASS: usize = 128 * 1024;
/// Number of size classes (powers of two from [`MIN_CLASS`] to [`MAX_CLASS`]).
const NUM_CLASSES: usize = (MAX_CLASS / MIN_CLASS).trailing_zeros() as usize + 1;
/// Size of one pool page (the unit of growth and of RDMA memory registration).
pub const PAGE_SIZE: usize = 2 * 1024 * 1024;

/// Process-wide pool settings, set once before the runtime starts.
#[derive(Debug, Clone)]
pub struct PoolConfig {
    /// Upper bound on pages a core's pool may hold (its memory is at most this × 2 MiB).
    pub max_pages_per_core: usize,
    /// Try `MAP_HUGETLB` first.
    pub use_hugepages: bool,
}

impl Default for PoolConfig {
    fn default() -> Self {
        PoolConfig {
            max_pages_per_core: 256,
            use_hugepages: true,
        }
    }
}

/// Why a buffer could not be had.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PoolError {
    /// Requested size is 0 or above [`MAX_CLASS`].
    #[error("buffer size {0} is outside 1..={MAX_CLASS}")]
    BadSize(usize),
    /// The pool reached its page limit and has no free object of that class: wait and retry.
    #[error("buffer pool exhausted")]
    Exhausted,
}

/// A DMA-able buffer from a per-core pool. Freed (returned home) on drop, from any thread.
pub struct DmaBuf {
    ptr: NonNull<u8>,
    /// The home domain, kept alive by its owner thread or, once that exited, by the objects
    /// still out (see `domain`).
    domain: NonNull<Domain>,
    /// Object id inside the domain (`slice << OBJ_BITS | object`).
    slot: u32,
    len: u32,
    class: u8,
}

// SAFETY: DmaBuf is handed across cores (e.g. returned home); it owns its memory exclusively,
// and its drop on a foreign thread goes through the domain's thread-safe remote-free queue.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// Usable length requested at allocation.
    pub fn len(&self) -> usize {
        self.len as usize
    }
    /// Whether the length is zero (never true for a pool buffer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size of the class the buffer came from (≥ `len`).
    pub fn capacity(&self) -> usize {
        class_size(usize::from(self.class))
    }
    /// Start address (4 KiB-aligned for classes ≥ 4 KiB).
    pub fn as_ptr(&self) -> *const u8 {
        self.ptr.as_ptr()
    }
    /// Mutable start address.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        self.ptr.as_ptr()
    }
    /// The first `len` bytes.
    pub fn as_slice(&self) -> &[u8] {
        // SAFETY: the buffer exclusively owns `capacity() ≥ len` bytes of mapped read/write
        // memory at `ptr` until it is dropped; `&self` forbids concurrent mutation.
        unsafe { std::slice::from_raw_parts(self.ptr.as_ptr(), self.len()) }
    }
    /// The first `len` bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`, and `&mut self` makes the access exclusive.
        unsafe { std::slice::from_raw_parts_mut(self.ptr.as_ptr(), self.len()) }
    }
    /// The core (pool) the buffer belongs to.
    pub fn home(&self) -> u32 {
        // SAFETY: the domain outlives its outstanding buffers (see the `domain` field).
        unsafe { self.domain.as_ref() }.home()
    }
}

impl Drop for DmaBuf {
    fn drop(&mut self) {
        if thread::is_current(self.domain) {
            // SAFETY: the domain is the calling thread's, alive while the thread runs.
            unsafe { self.domain.as_ref() }.free_local(self.slot);
        } else {
            // SAFETY: `slot` is this buffer's object, handed out by `domain` and freed exactly
            // once, here.
            unsafe { Domain::free_remote(self.domain, self.slot) };
        }
    }
}

impl std::fmt::Debug for DmaBuf {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DmaBuf")
            .field("ptr", &self.ptr)
            .field("len", &self.len)
            .field("capacity", &self.capacity())
            .field("home", &self.home())
            .finish()
    }
}

/// Counters of one core's pool.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PoolStats {
    /// Pages currently mapped.
    pub pages: usize,
    /// Whether pages are hugepage-backed.
    pub hugepages: bool,
    /// Objects currently handed out.
    pub objects_in_use: usize,
    /// Allocations refused because the page limit was reached.
    pub exhausted_events: u64,
}

/// The configuration new domains take (see [`configure`]).
static CONFIG: Mutex<PoolConfig> = Mutex::new(PoolConfig {
    max_pages_per_core: 256,
    use_hugepages: true,
});

fn config() -> PoolConfig {
    CONFIG
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

/// Set the process-wide pool configuration. Call before the first allocation: a thread's pool
/// takes the configuration current when the thread first uses it. A page limit above what slot
/// ids can address (2 TiB per core) is lowered to it, with a warning.
pub fn configure(cfg: PoolConfig) {
    let mut cfg = cfg;
    if cfg.max_pages_per_core > MAX_PAGES_LIMIT {
        log::warn!(
            "buffer pool: max_pages_per_core {} lowered to the limit {MAX_PAGES_LIMIT}",
            cfg.max_pages_per_core
        );
        cfg.max_pages_per_core = MAX_PAGES_LIMIT;
    }
    if cfg.max_pages_per_core == 0 {
        log::warn!("buffer pool: max_pages_per_core is 0, every allocation will be refused");
    }
    log::info!(
        "buffer pool: up to {} pages of {} MiB per core, hugepages {}",
        cfg.max_pages_per_core,
        PAGE_SIZE >> 20,
        if cfg.use_hugepages { "wanted" } else { "off" }
    );
    *CONFIG.lock().unwrap_or_else(PoisonError::into_inner) = cfg;
}

/// Class index of a `size`-byte request.
fn class_of(size: usize) -> Result<usize, PoolError> {
    if size == 0 || size > MAX_CLASS {
        return Err(PoolError::BadSize(size));
    }
    Ok(
        size.max(MIN_CLASS).next_power_of_two().trailing_zeros() as usize
            - MIN_CLASS.trailing_zeros() as usize,
    )
}

/// Object size of class `class`.
fn class_size(class: usize) -> usize {
    MIN_CLASS << class
}

/// Take a buffer of at least `size` bytes from the calling thread's pool.
pub fn alloc(size: usize) -> Result<DmaBuf, PoolError> {
    alloc_class(class_of(size)?, size)
}

/// Take an object of `class` for a `len`-byte buffer from the calling thread's pool.
fn alloc_class(class: usize, len: usize) -> Result<DmaBuf, PoolError> {
    let domain = thread::current().ok_or(PoolError::Exhausted)?;
    // SAFETY: the calling thread's domain is alive while the thread runs.
    let (ptr, slot) = unsafe { domain.as_ref() }.alloc(class)?;
    Ok(DmaBuf {
        ptr,
        domain,
        slot,
        len: len as u32,
        class: class as u8,
    })
}

/// Take a buffer, waiting (as a future on the calling reactor) while the pool is exhausted.
///
/// Poll it on the thread whose pool it should draw from (any executor will do): it is woken by
/// frees on that thread and by buffers sent home from others. Fails only with
/// [`PoolError::BadSize`], or [`PoolError::Exhausted`] on a thread that is exiting.
pub async fn alloc_wait(size: usize) -> Result<DmaBuf, PoolError> {
    let class = class_of(size)?;
    wait::AllocWait::new(class, size).await
}

/// Stats of the calling thread's pool.
pub fn stats() -> PoolStats {
    match thread::current() {
        // SAFETY: the calling thread's domain is alive while the thread runs.
        Some(d) => unsafe { d.as_ref() }.stats(),
        None => PoolStats::default(),
    }
}

/// Call `f(addr, len)` for every page of the calling thread's pool now and for every page it
/// maps later (RDMA registers each page once). Returns after reporting existing pages.
/// (Registered from inside such a callback, `f` hears of the existing pages right after the
/// callback returns.) The hooks are dropped when the thread exits.
pub fn on_page_mapped(f: impl FnMut(*mut u8, usize) + 'static) {
    if let Some(d) = thread::current() {
        // SAFETY: the calling thread's domain is alive while the thread runs.
        unsafe { d.as_ref() }.on_page_mapped(Box::new(f));
    }
}

#[cfg(test)]
mod tests;
