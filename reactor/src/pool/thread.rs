//! The calling thread's domain: created lazily on first use, orphaned when the thread exits.
//!
//! A domain's home id is the reactor core id when the thread is a reactor
//! ([`crate::current_core`]); any other thread (a test, a control thread) gets a process-unique
//! id from `1 << 16` upward, which no core id reaches.

use super::domain::Domain;
use super::PoolConfig;
use std::cell::Cell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;

/// First home id handed to non-reactor threads.
pub(super) const FOREIGN_HOME_BASE: u32 = 1 << 16;
static NEXT_FOREIGN_HOME: AtomicU32 = AtomicU32::new(FOREIGN_HOME_BASE);

thread_local! {
    /// The calling thread's domain: null until first use and again once the thread exits.
    /// Const-initialised and without destructor, so reading it is a plain TLS load.
    static CURRENT: Cell<*const Domain> = const { Cell::new(std::ptr::null()) };
    /// Owns the calling thread's domain; orphans it when the thread exits.
    static OWNER: Owner = const { Owner(Cell::new(None)) };
}

struct Owner(Cell<Option<Arc<Domain>>>);

impl Drop for Owner {
    fn drop(&mut self) {
        if let Some(d) = self.0.take() {
            // `CURRENT` has no destructor, so it is still accessible here.
            CURRENT.with(|c| c.set(std::ptr::null()));
            d.orphan();
        }
    }
}

/// The calling thread's domain, created with the process configuration on first use.
/// `None` only while the thread is exiting (its domain is gone and no new one can be kept).
#[inline]
pub(super) fn current() -> Option<NonNull<Domain>> {
    match NonNull::new(CURRENT.with(Cell::get).cast_mut()) {
        Some(d) => Some(d),
        None => install(&super::config()),
    }
}

/// Whether `d` is the calling thread's domain.
#[inline]
pub(super) fn is_current(d: NonNull<Domain>) -> bool {
    std::ptr::eq(CURRENT.with(Cell::get), d.as_ptr())
}

/// Create the calling thread's domain with `cfg`. `None` if the thread is exiting.
#[cold]
pub(super) fn install(cfg: &PoolConfig) -> Option<NonNull<Domain>> {
    let home =
        crate::current_core().unwrap_or_else(|| NEXT_FOREIGN_HOME.fetch_add(1, Ordering::Relaxed));
    let d = Arc::new(Domain::new(home, cfg));
    let ptr = NonNull::from(&*d);
    OWNER.try_with(|o| o.0.set(Some(d))).ok()?;
    CURRENT.with(|c| c.set(ptr.as_ptr()));
    log::debug!(
        "buffer pool: domain of home {home} created (limit {} pages, hugepages {})",
        cfg.max_pages_per_core,
        cfg.use_hugepages
    );
    Some(ptr)
}

/// Give the calling thread a domain with `cfg` (tests: independent of the global config).
/// Panics if the thread already has one.
#[cfg(test)]
pub(super) fn install_for_test(cfg: PoolConfig) {
    assert!(
        CURRENT.with(Cell::get).is_null(),
        "thread already has a pool domain"
    );
    install(&cfg).expect("thread is alive");
}

/// A weak handle on the calling thread's domain (tests: observe when it is freed).
#[cfg(test)]
pub(super) fn current_weak() -> std::sync::Weak<Domain> {
    OWNER.with(|o| {
        let d = o.0.take().expect("thread has a domain");
        let w = Arc::downgrade(&d);
        o.0.set(Some(d));
        w
    })
}
