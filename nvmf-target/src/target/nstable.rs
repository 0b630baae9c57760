//! Per-core namespace tables. Each core that serves I/O queues of a subsystem keeps one
//! [`CoreSubsys`]: nsid → this core's bdev channel. The I/O path reads it without locks; the
//! control path changes it by message on the core itself (namespace add/remove fan-out).

use super::subsystem::{Namespace, Subsystem};
use keel_bdev::IoChannel;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;

/// One namespace as one core sees it.
pub(crate) struct NsChannel {
    /// The namespace (keeps its descriptor open while the channel exists).
    pub ns: Arc<Namespace>,
    /// This core's channel into the bdev.
    pub ch: IoChannel,
    /// Logical block size, bytes.
    pub block_size: u32,
}

impl NsChannel {
    /// HOT PATH: the namespace's current number of blocks (the bdev's live size, one atomic
    /// load), so range checks follow a resize at once.
    #[inline]
    pub fn num_blocks(&self) -> u64 {
        self.ns.num_blocks()
    }
}

/// A subsystem's namespaces on one core.
pub(crate) struct CoreSubsys {
    subsys_id: u64,
    /// Indexed by nsid - 1.
    table: RefCell<Vec<Option<Rc<NsChannel>>>>,
}

thread_local! {
    static CORE_SUBSYS: RefCell<HashMap<u64, Weak<CoreSubsys>>> = RefCell::new(HashMap::new());
}

impl CoreSubsys {
    /// HOT PATH: this core's channel for `nsid` (a reference-count bump, no lock).
    #[inline]
    pub fn get(&self, nsid: u32) -> Option<Rc<NsChannel>> {
        let i = (nsid as usize).checked_sub(1)?;
        self.table.borrow().get(i)?.clone()
    }

    fn insert(&self, ns: &Arc<Namespace>) {
        let Some(i) = (ns.nsid as usize).checked_sub(1) else {
            return;
        };
        if self
            .get(ns.nsid)
            .is_some_and(|c| c.ns.instance == ns.instance)
        {
            return;
        }
        let ch = match ns.desc.get_io_channel() {
            Ok(ch) => ch,
            Err(e) => {
                log::warn!(
                    "nvmf: no channel for namespace {} (bdev {}): {e}",
                    ns.nsid,
                    ns.bdev_name
                );
                return;
            }
        };
        let entry = Rc::new(NsChannel {
            ns: Arc::clone(ns),
            ch,
            block_size: ns.block_size,
        });
        let mut t = self.table.borrow_mut();
        if t.len() <= i {
            t.resize(i + 1, None);
        }
        t[i] = Some(entry);
    }

    fn remove(&self, nsid: u32, instance: u64) {
        let Some(i) = (nsid as usize).checked_sub(1) else {
            return;
        };
        let old = {
            let mut t = self.table.borrow_mut();
            match t.get_mut(i) {
                Some(slot) if slot.as_ref().is_some_and(|c| c.ns.instance == instance) => {
                    slot.take()
                }
                _ => None,
            }
        };
        // The channel (and the namespace reference) go outside the borrow.
        drop(old);
    }
}

impl Drop for CoreSubsys {
    fn drop(&mut self) {
        let id = self.subsys_id;
        let _ = CORE_SUBSYS.try_with(|m| {
            let mut m = m.borrow_mut();
            if m.get(&id).is_some_and(|w| w.strong_count() == 0) {
                m.remove(&id);
            }
        });
    }
}

/// This core's table for `subsys` (created and filled on first use).
pub(crate) fn attach(subsys: &Subsystem) -> Rc<CoreSubsys> {
    if let Some(t) = CORE_SUBSYS.with(|m| m.borrow().get(&subsys.id).and_then(Weak::upgrade)) {
        return t;
    }
    let t = Rc::new(CoreSubsys {
        subsys_id: subsys.id,
        table: RefCell::new(Vec::new()),
    });
    for ns in subsys.namespaces() {
        t.insert(&ns);
    }
    CORE_SUBSYS.with(|m| m.borrow_mut().insert(subsys.id, Rc::downgrade(&t)));
    t
}

/// On this core: add `ns` to subsystem `subsys_id`'s table if this core has one.
pub(crate) fn add_local(subsys_id: u64, ns: &Arc<Namespace>) {
    if let Some(t) = CORE_SUBSYS.with(|m| m.borrow().get(&subsys_id).and_then(Weak::upgrade)) {
        t.insert(ns);
    }
}

/// On this core: remove namespace (`nsid`, `instance`) from subsystem `subsys_id`'s table.
pub(crate) fn remove_local(subsys_id: u64, nsid: u32, instance: u64) {
    if let Some(t) = CORE_SUBSYS.with(|m| m.borrow().get(&subsys_id).and_then(Weak::upgrade)) {
        t.remove(nsid, instance);
    }
}

/// Run `f` on every core and wait for all of them (control path). Without a runtime (unit
/// tests) `f` runs here.
pub(crate) async fn on_every_core(f: impl Fn() + Send + Sync + 'static) {
    if keel_reactor::cores().is_empty() {
        f();
        return;
    }
    let (tx, rx) = keel_reactor::oneshot::<()>();
    if let Err(e) = keel_reactor::for_each_core(f, move || tx.send(())) {
        log::error!("nvmf: namespace update could not reach every core: {e}");
        return;
    }
    let _ = rx.await;
}
