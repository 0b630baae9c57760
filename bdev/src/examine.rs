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
//!
//! As SPDK's `bdev_auto_examine` option, examine can be limited ([`set_auto_examine`]`(false)`,
//! the `bdev_set_options` RPC) to the bdevs named by [`examine_bdev`] (`bdev_examine`), so that a
//! disk whose host wrote an lvstore or a raid superblock into it is not taken at start-up.

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
    policy: ExaminePolicy,
}

static STATE: Mutex<ExamineState> = Mutex::new(ExamineState {
    examiners: Vec::new(),
    waiters: Vec::new(),
    policy: ExaminePolicy::new(),
});

/// Which bdevs are examined when they register (SPDK's `bdev_auto_examine` and its allowlist of
/// `bdev_examine` names).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ExaminePolicy {
    /// Examine every bdev (the default).
    auto: bool,
    /// With `auto` off: the names (or aliases) examined, in the order they were given.
    allowlist: Vec<String>,
}

/// Why [`examine_bdev`] refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExamineRefusal {
    /// Auto examine is on: every bdev is examined already (SPDK: -EINVAL).
    AutoExamineOn,
    /// The name was given before (SPDK: -EEXIST).
    Duplicate,
    /// The bdev is claimed (by a namespace, an lvstore, a raid): it was examined when it
    /// registered or is in use; naming the holder (-EBUSY).
    Claimed(String),
}

impl ExaminePolicy {
    /// Auto examine on, nothing listed.
    pub(crate) const fn new() -> ExaminePolicy {
        ExaminePolicy {
            auto: true,
            allowlist: Vec::new(),
        }
    }

    /// Whether a bdev known by `names` (its name and aliases) is examined.
    pub(crate) fn allows<'a>(&self, mut names: impl Iterator<Item = &'a str>) -> bool {
        self.auto || names.any(|n| self.allowlist.iter().any(|a| a == n))
    }

    /// Whether `name` may be added to the allowlist.
    pub(crate) fn check(&self, name: &str) -> Result<(), ExamineRefusal> {
        if self.auto {
            return Err(ExamineRefusal::AutoExamineOn);
        }
        if self.allowlist.iter().any(|a| a == name) {
            return Err(ExamineRefusal::Duplicate);
        }
        Ok(())
    }

    /// Add `name` to the allowlist.
    pub(crate) fn add(&mut self, name: &str) -> Result<(), ExamineRefusal> {
        self.check(name)?;
        self.allowlist.push(name.to_string());
        Ok(())
    }

    /// Drop `name` from the allowlist (its bdev was unregistered, as SPDK does).
    pub(crate) fn remove(&mut self, name: &str) {
        self.allowlist.retain(|a| a != name);
    }
}

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

/// Run every examiner on a freshly registered bdev (called by [`crate::register`]), unless auto
/// examine is off and the bdev is not on the [`examine_bdev`] list.
pub(crate) fn examine_new_bdev(bdev: &Bdev) {
    let examiners: Vec<(&'static str, Examiner)> = {
        let st = state();
        let info = bdev.info();
        let names =
            std::iter::once(info.name.as_str()).chain(info.aliases.iter().map(String::as_str));
        if !st.policy.allows(names) {
            log::info!(
                "bdev {}: not examined (auto examine is off; `bdev_examine -b {}` examines it)",
                bdev.name(),
                bdev.name()
            );
            return;
        }
        st.examiners.clone()
    };
    run_examiners(bdev, &examiners);
}

fn run_examiners(bdev: &Bdev, examiners: &[(&'static str, Examiner)]) {
    for (module, examine) in examiners {
        log::trace!("bdev {}: examined by {module}", bdev.name());
        examine(bdev);
    }
}

/// Turn auto examine on (the default: every bdev is examined when it registers) or off (only
/// the bdevs named by [`examine_bdev`]). Applies to bdevs registered afterwards.
pub fn set_auto_examine(on: bool) {
    let mut st = state();
    if st.policy.auto != on {
        log::info!("bdev auto examine {}", if on { "on" } else { "off" });
    }
    st.policy.auto = on;
}

/// Whether auto examine is on.
pub fn auto_examine() -> bool {
    state().policy.auto
}

/// The names given to [`examine_bdev`] (still registered or not yet), in order.
pub fn examine_allowlist() -> Vec<String> {
    state().policy.allowlist.clone()
}

/// SPDK's `spdk_bdev_examine`, with auto examine off: examine bdev `name` (a name or an
/// alias) now if it is registered, and whenever it registers later (until it is unregistered).
/// A claimed bdev is refused rather than silently passed over.
pub fn examine_bdev(name: &str) -> Result<(), ExamineRefusal> {
    let bdev = crate::registry::get_bdev(name);
    // Read before taking the examine lock (no bdev lock is taken under it).
    let holder = bdev.as_ref().and_then(Bdev::claimed_by);
    let examiners = {
        let mut st = state();
        // SPDK's order: auto examine on, then a duplicate name; then (Keel) a claimed bdev.
        st.policy.check(name)?;
        if let Some(holder) = holder {
            return Err(ExamineRefusal::Claimed(holder));
        }
        st.policy.add(name)?;
        st.examiners.clone()
    };
    log::info!(
        "bdev {name}: examine requested ({})",
        if bdev.is_some() {
            "examining it now"
        } else {
            "when it registers"
        }
    );
    if let Some(b) = bdev {
        run_examiners(&b, &examiners);
    }
    Ok(())
}

/// Forget the [`examine_bdev`] entries of an unregistered bdev's names.
pub(crate) fn forget(names: &[String]) {
    let mut st = state();
    for n in names {
        st.policy.remove(n);
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
    fn the_allowlist_decides_only_with_auto_examine_off() {
        let mut p = ExaminePolicy::new();
        assert!(p.allows(["A"].into_iter()), "auto examine: every bdev");
        assert_eq!(p.add("A"), Err(ExamineRefusal::AutoExamineOn));
        p.auto = false;
        assert!(!p.allows(["A", "alias"].into_iter()));
        assert_eq!(p.add("alias"), Ok(()));
        assert_eq!(p.add("alias"), Err(ExamineRefusal::Duplicate));
        assert!(p.allows(["A", "alias"].into_iter()), "an alias counts");
        assert!(!p.allows(["B"].into_iter()));
        p.remove("alias");
        assert!(!p.allows(["A", "alias"].into_iter()));
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
