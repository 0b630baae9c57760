//! Per-core pools of DMA-able I/O buffers: the slab allocator of DESIGN.md §3.
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

/// Smallest buffer size class, bytes.
pub const MIN_CLASS: usize = 512;
/// Largest buffer size class, bytes.
pub const MAX_CLASS: usize = 128 * 1024;
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
        PoolConfig { max_pages_per_core: 256, use_hugepages: true }
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
    _p: (),
}

// DmaBuf is handed across cores (e.g. returned home); it owns its memory exclusively.
unsafe impl Send for DmaBuf {}

impl DmaBuf {
    /// Usable length requested at allocation.
    pub fn len(&self) -> usize {
        todo!()
    }
    /// Whether the length is zero (never true for a pool buffer).
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Size of the class the buffer came from (≥ `len`).
    pub fn capacity(&self) -> usize {
        todo!()
    }
    /// Start address (4 KiB-aligned for classes ≥ 4 KiB).
    pub fn as_ptr(&self) -> *const u8 {
        todo!()
    }
    /// Mutable start address.
    pub fn as_mut_ptr(&mut self) -> *mut u8 {
        todo!()
    }
    /// The first `len` bytes.
    pub fn as_slice(&self) -> &[u8] {
        todo!()
    }
    /// The first `len` bytes, mutable.
    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        todo!()
    }
    /// The core (pool) the buffer belongs to.
    pub fn home(&self) -> u32 {
        todo!()
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

/// Set the process-wide pool configuration. Call before the first allocation.
pub fn configure(_cfg: PoolConfig) {
    todo!()
}

/// Take a buffer of at least `size` bytes from the calling thread's pool.
pub fn alloc(_size: usize) -> Result<DmaBuf, PoolError> {
    todo!()
}

/// Take a buffer, waiting (as a future on the calling reactor) while the pool is exhausted.
pub async fn alloc_wait(_size: usize) -> Result<DmaBuf, PoolError> {
    todo!()
}

/// Stats of the calling thread's pool.
pub fn stats() -> PoolStats {
    todo!()
}

/// Call `f(addr, len)` for every page of the calling thread's pool now and for every page it
/// maps later (RDMA registers each page once). Returns after reporting existing pages.
pub fn on_page_mapped(_f: impl FnMut(*mut u8, usize) + 'static) {
    todo!()
}
