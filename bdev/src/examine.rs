//! Control path: "examine" — modules that look at every new bdev (lvol finds its lvstores, raid
//! assembles arrays from superblocks), and a way to wait until they are all done.
//!
//! A module registers an [`Examiner`] once at start-up with [`register_examiner`]. Every later
//! [`crate::register`] calls each examiner, in registration order, on the registering thread,
//! after the bdev is in the table. An examiner that needs I/O (reading a superblock) takes an
//! [`ExamineGuard`] with [`examine_begin`] and drops it when it has finished (claimed the bdev
//! and registered what it found, or decided the bdev is not its own).
//! [`wait_for_examine`] resolves once no guard is alive; config replay and the
//! `bdev_wait_for_examine` RPC use it so that a later call naming an lvol or a raid bdev finds it.

use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::task::{Poll, Waker};

use crate::Bdev;

/// Called for every bdev registered after the examiner: look at it, and if it is yours, claim
/// it (usually from a task started here, holding an [`ExamineGuard`]).
pub type Examiner = fn(&Bdev);

struct ExamineState {
    examiners: Vec<(&'static str, Examiner)>,
    waiters: Vec<Waker>,
}

static STATE: Mutex<ExamineState> = Mutex::new(ExamineState {
    examiners: Vec::new(),
    waiters: Vec::new(),
});

/// Number of examinations in progress (live [`ExamineGuard`]s).
static PENDING: AtomicUsize = AtomicUsize::new(0);

fn state() -> std::sync::MutexGuard<'static, ExamineState> {
    STATE.lock().unwrap_or_else(|p| p.into_inner())
}

/// Add `examiner` (named `module` in logs) to the list run for every new bdev. Registering the
/// same module name twice keeps the first.
pub fn register_examiner(module: &'static str, examiner: Examiner) {
    let mut st = state();
    if !st.examiners.iter().any(|(m, _)| *m == module) {
        st.examiners.push((module, examiner));
    }
}

/// Run every examiner on a freshly registered bdev (called by [`crate::register`]).
pub(crate) fn examine_new_bdev(bdev: &Bdev) {
    let examiners: Vec<(&'static str, Examiner)> = state().examiners.clone();
    for (module, examine) in examiners {
        log::trace!("bdev {}: examined by {module}", bdev.name());
        examine(bdev);
    }
}

/// Proof that an examination is in progress; [`wait_for_examine`] waits for every guard to drop.
#[derive(Debug)]
#[must_use = "the examination counts as finished when the guard drops"]
pub struct ExamineGuard(());

/// Start an examination that finishes when the returned guard drops.
pub fn examine_begin() -> ExamineGuard {
    PENDING.fetch_add(1, Ordering::AcqRel);
    ExamineGuard(())
}

impl Drop for ExamineGuard {
    fn drop(&mut self) {
        if PENDING.fetch_sub(1, Ordering::AcqRel) == 1 {
            let waiters = std::mem::take(&mut state().waiters);
            for w in waiters {
                w.wake();
            }
        }
    }
}

/// Number of examinations in progress.
pub fn examine_pending() -> usize {
    PENDING.load(Ordering::Acquire)
}

/// Resolve once no examination is in progress.
pub async fn wait_for_examine() {
    poll_fn(|cx| {
        if PENDING.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        let mut st = state();
        // Re-check under the lock: a guard dropping between the load and the push wakes no one.
        if PENDING.load(Ordering::Acquire) == 0 {
            return Poll::Ready(());
        }
        if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
            st.waiters.push(cx.waker().clone());
        }
        Poll::Pending
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::future::Future;
    use std::sync::Arc;
    use std::task::{Context, Wake};

    struct Flag(std::sync::atomic::AtomicBool);
    impl Wake for Flag {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::SeqCst);
        }
    }

    #[test]
    fn wait_resolves_when_the_last_guard_drops() {
        let g1 = examine_begin();
        let g2 = examine_begin();
        let flag = Arc::new(Flag(false.into()));
        let waker = Waker::from(Arc::clone(&flag));
        let mut cx = Context::from_waker(&waker);
        let mut fut = std::pin::pin!(wait_for_examine());
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        drop(g1);
        assert!(fut.as_mut().poll(&mut cx).is_pending());
        drop(g2);
        assert!(flag.0.load(Ordering::SeqCst), "last drop wakes the waiter");
        assert!(fut.as_mut().poll(&mut cx).is_ready());
    }
}
