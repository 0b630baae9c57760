//! A counting global allocator: counts, per thread, the allocations (and frees) of threads
//! that switched counting on (so that tests running in parallel do not count each other's), and keeps a backtrace of the first allocation counted (to say where it
//! happens). A test binary installs it itself, so that it affects that binary only:
//!
//! ```ignore
//! #[global_allocator]
//! static GLOBAL: keel_testkit::counting::Counting = keel_testkit::counting::Counting;
//! ```
//!
//! Without it installed, [`count`] and [`count_sync`] fail their self-check.

use std::alloc::{GlobalAlloc, Layout, System};
use std::backtrace::Backtrace;
use std::cell::Cell;
use std::future::Future;
use std::sync::Mutex;

/// The counting allocator: forwards every call to the system allocator.
#[derive(Debug)]
pub struct Counting;

/// The first counted allocation's backtrace (taken with counting off).
static FIRST: Mutex<Option<String>> = Mutex::new(None);

thread_local! {
    /// Count allocations made by this thread.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    /// Record a backtrace of the next counted allocation of this thread.
    static TRACE: Cell<bool> = const { Cell::new(false) };
    /// Allocations (alloc, alloc_zeroed, realloc) this thread made while counting.
    static ALLOCATIONS: Cell<u64> = const { Cell::new(0) };
    /// Frees this thread made while counting.
    static DEALLOCATIONS: Cell<u64> = const { Cell::new(0) };
}

fn note_alloc() {
    if !COUNTING.try_with(Cell::get).unwrap_or(false) {
        return;
    }
    ALLOCATIONS.with(|n| n.set(n.get() + 1));
    if TRACE.try_with(|t| t.replace(false)).unwrap_or(false) {
        // Capturing and rendering a backtrace allocates: not counted, not traced.
        COUNTING.with(|c| c.set(false));
        let bt = Backtrace::force_capture().to_string();
        *FIRST.lock().unwrap_or_else(|e| e.into_inner()) = Some(bt);
        COUNTING.with(|c| c.set(true));
    }
}

fn note_free() {
    if COUNTING.try_with(Cell::get).unwrap_or(false) {
        DEALLOCATIONS.with(|n| n.set(n.get() + 1));
    }
}

// SAFETY: every call is forwarded unchanged to the system allocator; counting touches only
// const-initialised thread-locals without destructor and, once, a backtrace taken with
// counting off (its own allocations go to the system allocator through this one, uncounted).
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc(layout) }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.alloc_zeroed(layout) }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note_alloc();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        note_free();
        // SAFETY: forwarded with the caller's guarantees.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// What one counted run saw on the calling thread.
#[derive(Debug)]
pub struct Counted {
    /// Heap allocations (alloc, alloc_zeroed, realloc) made by the thread.
    pub allocations: u64,
    /// Heap frees made by the thread.
    pub deallocations: u64,
    /// Backtrace of the first allocation (when there was one).
    pub first: Option<String>,
}

/// Check that the counter sees an allocation of this thread (else the allocator is not the
/// binary's `#[global_allocator]` and every count would be a vacuous zero), then reset it.
fn self_check() {
    COUNTING.with(|c| c.set(true));
    drop(std::hint::black_box(Box::new(0u64)));
    COUNTING.with(|c| c.set(false));
    assert_eq!(
        ALLOCATIONS.with(|n| n.replace(0)),
        1,
        "counting allocator self-check (is keel_testkit::counting::Counting the binary's \
         #[global_allocator]?)"
    );
    DEALLOCATIONS.with(|n| n.set(0));
    FIRST.lock().unwrap_or_else(|e| e.into_inner()).take();
}

fn begin() {
    self_check();
    TRACE.with(|t| t.set(true));
    COUNTING.with(|c| c.set(true));
}

fn end() -> Counted {
    COUNTING.with(|c| c.set(false));
    TRACE.with(|t| t.set(false));
    Counted {
        allocations: ALLOCATIONS.with(|n| n.replace(0)),
        deallocations: DEALLOCATIONS.with(|n| n.replace(0)),
        first: FIRST.lock().unwrap_or_else(|e| e.into_inner()).take(),
    }
}

/// Count the calling thread's allocations while `fut` runs (on this thread: a reactor task).
/// Checks first that the counter does see an allocation of this thread.
pub async fn count<T>(fut: impl Future<Output = T>) -> (T, Counted) {
    begin();
    let v = fut.await;
    (v, end())
}

/// Count the calling thread's allocations while `f` runs. Checks the counter first, as
/// [`count`] does.
pub fn count_sync<T>(f: impl FnOnce() -> T) -> (T, Counted) {
    begin();
    let v = f();
    (v, end())
}

/// Assert a run allocated nothing, printing where the first allocation happened otherwise.
pub fn assert_none(what: &str, c: &Counted) {
    if c.allocations != 0 {
        eprintln!(
            "{what}: {} heap allocations in steady state; the first one at:\n{}",
            c.allocations,
            c.first.as_deref().unwrap_or("(no backtrace)")
        );
    }
    assert_eq!(c.allocations, 0, "{what}: heap allocations in steady state");
}
