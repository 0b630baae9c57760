//! The cluster map every core reads without a lock (docs/ARCHITECTURE.md §4.3).
//!
//! A volume's [`MapCell`] points at its current [`MapTable`] (entries as `AtomicU32`, plus the
//! parent for clones). Submitting cores load the pointer and the entries with `Acquire`; only
//! the metadata core stores entries (after the map page is durable) and replaces the table
//! (resize, snapshot, inflate, decouple). A replaced table is freed only after every core has
//! finished the reactor iteration it was in ([`keel_reactor::for_each_core`]): a lookup never
//! spans iterations, so no core can still hold it.

use super::format::{UNALLOC, ZERO};
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU32, Ordering};
use std::sync::Arc;

/// One version of a volume's map.
pub struct MapTable {
    entries: Box<[AtomicU32]>,
    parent: Option<Arc<VolView>>,
}

impl MapTable {
    /// A table holding `entries`, falling through to `parent` for unallocated clusters.
    pub fn new(entries: &[u32], parent: Option<Arc<VolView>>) -> MapTable {
        MapTable {
            entries: entries.iter().map(|&e| AtomicU32::new(e)).collect(),
            parent,
        }
    }
    /// The entry of logical cluster `lc` (unallocated beyond the end).
    #[inline]
    pub fn entry(&self, lc: u64) -> u32 {
        self.entries
            .get(lc as usize)
            .map_or(UNALLOC, |e| e.load(Ordering::Acquire))
    }
    /// The parent volume (clones).
    pub fn parent(&self) -> Option<&Arc<VolView>> {
        self.parent.as_ref()
    }
}

/// Where a read of one cluster goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReadTarget {
    /// This physical cluster (of the volume or an ancestor).
    Phys(u32),
    /// Nowhere: the cluster reads as zeroes.
    Zero,
}

/// The part of a volume every core reads on the hot path.
pub struct VolView {
    map: AtomicPtr<MapTable>,
    /// While set, new I/O waits in the channel (snapshot, delete).
    pub frozen: AtomicBool,
}

impl VolView {
    /// A view over `table`.
    pub fn new(table: MapTable) -> VolView {
        VolView {
            map: AtomicPtr::new(Box::into_raw(Box::new(table))),
            frozen: AtomicBool::new(false),
        }
    }

    /// The current table.
    ///
    /// # Safety
    /// The reference must not be kept past the current reactor iteration (tables are freed one
    /// `for_each_core` round after they are replaced).
    #[inline]
    pub unsafe fn table(&self) -> &MapTable {
        // SAFETY: the pointer always holds a live table (replaced tables are retired after a
        // grace period the caller stays within, per the contract).
        unsafe { &*self.map.load(Ordering::Acquire) }
    }

    /// The volume's own entry for `lc` (no parent fall-through): what a write sees.
    #[inline]
    pub fn own_entry(&self, lc: u64) -> u32 {
        // SAFETY: used within this call only.
        unsafe { self.table() }.entry(lc)
    }

    /// Where a read of logical cluster `lc` goes, following the parent chain.
    #[inline]
    pub fn read_target(&self, lc: u64) -> ReadTarget {
        let mut view = self;
        loop {
            // SAFETY: the tables are only used within this call.
            let t = unsafe { view.table() };
            match t.entry(lc) {
                ZERO => return ReadTarget::Zero,
                UNALLOC => match t.parent() {
                    Some(p) => view = p,
                    None => return ReadTarget::Zero,
                },
                p => return ReadTarget::Phys(p),
            }
        }
    }

    /// Store entry `lc` in the current table (metadata core, after the page is durable).
    pub fn publish(&self, lc: u64, value: u32) {
        // SAFETY: used within this call only.
        if let Some(e) = unsafe { self.table() }.entries.get(lc as usize) {
            e.store(value, Ordering::Release);
        }
    }

    /// Replace the table (metadata core); the old one is freed after a grace period.
    pub fn replace(&self, table: MapTable) {
        let old = self
            .map
            .swap(Box::into_raw(Box::new(table)), Ordering::AcqRel);
        // SAFETY: `old` came from Box::into_raw and is no longer reachable through `map`.
        let old = RetiredTable(unsafe { Box::from_raw(old) });
        retire(old);
    }
}

impl Drop for VolView {
    fn drop(&mut self) {
        // SAFETY: the pointer came from Box::into_raw; nobody holds the view any more.
        drop(unsafe { Box::from_raw(*self.map.get_mut()) });
    }
}

/// A replaced table waiting for its grace period.
struct RetiredTable(#[allow(dead_code)] Box<MapTable>);

/// Free `old` once every core has passed the end of its current iteration.
fn retire(old: RetiredTable) {
    if keel_reactor::cores().is_empty() {
        return; // no reactors: no concurrent reader
    }
    let slot = std::sync::Mutex::new(Some(old));
    let slot = Arc::new(slot);
    let s2 = Arc::clone(&slot);
    if keel_reactor::for_each_core(|| {}, move || drop(s2)).is_err() {
        log::debug!("lvol: runtime stopping; map table leaked until exit");
        std::mem::forget(slot);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_fall_through_parents_and_stop_at_zero() {
        let grand = Arc::new(VolView::new(MapTable::new(&[7, 8, UNALLOC], None)));
        let parent = Arc::new(VolView::new(MapTable::new(
            &[UNALLOC, ZERO, 9],
            Some(Arc::clone(&grand)),
        )));
        let child = VolView::new(MapTable::new(&[3, UNALLOC, UNALLOC, UNALLOC], Some(parent)));
        assert_eq!(child.read_target(0), ReadTarget::Phys(3));
        assert_eq!(
            child.read_target(1),
            ReadTarget::Zero,
            "ZERO stops the walk"
        );
        assert_eq!(child.read_target(2), ReadTarget::Phys(9));
        assert_eq!(child.read_target(3), ReadTarget::Zero, "beyond every map");
        assert_eq!(child.own_entry(2), UNALLOC);
        child.publish(2, 11);
        assert_eq!(child.read_target(2), ReadTarget::Phys(11));
        child.replace(MapTable::new(&[1], None));
        assert_eq!(child.read_target(0), ReadTarget::Phys(1));
        assert_eq!(grand.read_target(0), ReadTarget::Phys(7));
    }
}
