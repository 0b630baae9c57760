//! Per-core, per-bdev state: the core's channel (weakly held, so it goes when unused) and the
//! core's I/O counters for the bdev (kept after the channel goes). Control path only: the I/O
//! path reaches both through the channel, never through this table.

use crate::io_path::ChannelState;
use crate::stats::{CoreStats, IoStats};
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::{Rc, Weak};

/// What one core keeps for one bdev.
struct CoreBdev {
    stats: Rc<CoreStats>,
    channel: Weak<ChannelState>,
}

thread_local! {
    static CORE_BDEVS: RefCell<HashMap<u64, CoreBdev>> = RefCell::new(HashMap::new());
}

/// This core's live channel for bdev `id`, if any.
pub(crate) fn channel(id: u64) -> Option<Rc<ChannelState>> {
    CORE_BDEVS.with(|m| m.borrow().get(&id).and_then(|e| e.channel.upgrade()))
}

/// This core's counters for bdev `id` (created on first use).
pub(crate) fn stats_cell(id: u64) -> Rc<CoreStats> {
    CORE_BDEVS.with(|m| {
        let mut m = m.borrow_mut();
        let e = m.entry(id).or_insert_with(|| CoreBdev {
            stats: Rc::default(),
            channel: Weak::new(),
        });
        Rc::clone(&e.stats)
    })
}

/// Record `chan` as this core's channel for bdev `id`.
pub(crate) fn set_channel(id: u64, chan: &Rc<ChannelState>) {
    CORE_BDEVS.with(|m| {
        let mut m = m.borrow_mut();
        let e = m.entry(id).or_insert_with(|| CoreBdev {
            stats: Rc::default(),
            channel: Weak::new(),
        });
        e.channel = Rc::downgrade(chan);
    })
}

/// A copy of this core's counters for bdev `id` (zeroes when it never did I/O here).
pub(crate) fn stats_of(id: u64) -> IoStats {
    CORE_BDEVS.with(|m| {
        m.borrow()
            .get(&id)
            .map(|e| e.stats.snapshot())
            .unwrap_or_default()
    })
}

/// Drop this core's state for bdev `id`.
fn forget(id: u64) {
    CORE_BDEVS.with(|m| m.borrow_mut().remove(&id));
}

/// Drop every core's state for an unregistered bdev (best effort, by message).
pub(crate) fn forget_everywhere(id: u64) {
    if keel_reactor::cores().is_empty() {
        forget(id);
        return;
    }
    if let Err(e) = keel_reactor::for_each_core(move || forget(id), || {}) {
        log::debug!("bdev per-core state of bdev id {id} not released: {e}");
    }
}
