//! Control state of one array: its members and their states, degraded/offline, and the
//! rebuild watermark the hot path reads. Members are fixed slots; the hot path only loads
//! atomics here (member state, rebuild watermark, offline flag).

use crate::caps::Caps;
use crate::geometry::Geometry;
use crate::level::RaidLevel;
use crate::stripe_lock::StripeLocks;
use keel_bdev::{Bdev, BdevDesc, Uuid};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicU8, Ordering};

/// [`RaidArray::dirty`]: the members' superblocks say clean; the next write must mark them
/// dirty first.
pub(crate) const DIRTY_CLEAN: u8 = 0;
/// [`RaidArray::dirty`]: `clean = false` is being written; writes wait.
pub(crate) const DIRTY_MARKING: u8 = 1;
/// [`RaidArray::dirty`]: the members' superblocks say dirty (or the level has no parity or
/// mirror to keep consistent): writes go ahead.
pub(crate) const DIRTY_ON_DISK: u8 = 2;
use std::sync::{Arc, Mutex, MutexGuard, OnceLock, PoisonError};

/// Most members an array may have (the superblock's slot limit).
pub const MAX_MEMBERS: usize = crate::superblock::MAX_SLOTS;

/// Lock a control-path mutex, ignoring poisoning (the data stays consistent).
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// What a member slot is doing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum MemberState {
    /// Up to date, read and written.
    Active = 0,
    /// Failed an I/O: no longer read or written.
    Failed = 1,
    /// No bdev in the slot (removed, or never found).
    Missing = 2,
    /// Being rebuilt: trusted below the rebuild watermark only.
    Rebuilding = 3,
}

impl MemberState {
    fn from_u8(v: u8) -> MemberState {
        match v {
            0 => MemberState::Active,
            1 => MemberState::Failed,
            3 => MemberState::Rebuilding,
            _ => MemberState::Missing,
        }
    }

    /// The name `bdev_raid_get_bdevs` shows.
    pub fn name(self) -> &'static str {
        match self {
            MemberState::Active => "active",
            MemberState::Failed => "failed",
            MemberState::Missing => "missing",
            MemberState::Rebuilding => "rebuilding",
        }
    }
}

/// One member slot.
pub struct Member {
    /// Slot number.
    pub slot: u32,
    state: AtomicU8,
    /// Rebuilding: member data blocks below this are up to date.
    rebuilt: AtomicU64,
    /// Control path: the member's bdev name (kept after a failure for reporting).
    pub(crate) name: Mutex<Option<String>>,
    /// Control path: the member's identity in the superblock.
    pub(crate) uuid: Mutex<Uuid>,
    /// Control path: the open, claimed member (None when missing).
    pub(crate) desc: Mutex<Option<BdevDesc>>,
}

impl Member {
    fn new(slot: u32) -> Member {
        Member {
            slot,
            state: AtomicU8::new(MemberState::Missing as u8),
            rebuilt: AtomicU64::new(0),
            name: Mutex::new(None),
            uuid: Mutex::new(Uuid::default()),
            desc: Mutex::new(None),
        }
    }

    /// Current state.
    #[inline]
    pub fn state(&self) -> MemberState {
        MemberState::from_u8(self.state.load(Ordering::Acquire))
    }

    pub(crate) fn set_state(&self, s: MemberState) {
        self.state.store(s as u8, Ordering::Release);
    }

    /// Rebuild watermark (member data blocks known good).
    #[inline]
    pub fn rebuilt_blocks(&self) -> u64 {
        self.rebuilt.load(Ordering::Acquire)
    }

    pub(crate) fn set_rebuilt(&self, blocks: u64) {
        self.rebuilt.store(blocks, Ordering::Release);
    }

    /// Whether the member's blocks `..end` (member data blocks) can be read and must be written.
    #[inline]
    pub fn usable_below(&self, end: u64) -> bool {
        match self.state() {
            MemberState::Active => true,
            MemberState::Rebuilding => end <= self.rebuilt_blocks(),
            _ => false,
        }
    }

    /// The member's bdev name, if any.
    pub fn bdev_name(&self) -> Option<String> {
        lock(&self.name).clone()
    }
}

/// Progress of the background process (rebuild) of an array.
#[derive(Debug, Clone, Default)]
pub struct ProcessInfo {
    /// Slot being rebuilt.
    pub target_slot: u32,
    /// Member blocks rebuilt so far.
    pub done_blocks: u64,
    /// Member blocks to rebuild in all.
    pub total_blocks: u64,
    /// Blocks per second over the process so far.
    pub rate_blocks_per_sec: f64,
    /// A resync (parity/mirrors after an unclean shutdown; `target_slot` is the raid1 source)
    /// rather than a rebuild.
    pub resync: bool,
}

/// One array.
pub struct RaidArray {
    /// Process-unique id (keys per-core channel registries).
    pub id: u64,
    /// Array (bdev) name.
    pub name: String,
    /// Array UUID (also the raid bdev's UUID).
    pub uuid: Uuid,
    /// Geometry.
    pub geo: Geometry,
    /// Block size of every member.
    pub block_size: u32,
    /// First block of array data on each member.
    pub data_offset: u64,
    /// Whether members carry a superblock.
    pub superblock: bool,
    /// Member slots.
    pub members: Vec<Member>,
    /// Stripe tokens.
    pub locks: StripeLocks,
    /// Bumped on every membership change; channels re-sync their member channels.
    pub epoch: AtomicU64,
    offline: AtomicBool,
    /// Superblock generation.
    pub(crate) generation: AtomicU64,
    /// Whether the raid bdev is registered.
    pub(crate) registered: AtomicBool,
    /// Rebuild progress (None when idle).
    pub(crate) process: Mutex<Option<ProcessInfo>>,
    /// Set to stop a running rebuild (array deleted).
    pub(crate) stopping: AtomicBool,
    /// `bdev_raid_delete` with `clear_sb`: the stop wipes the members' superblocks instead of
    /// marking them clean.
    pub(crate) clear_sb: AtomicBool,
    /// The `clean` flag the next superblock write stores.
    pub(crate) clean: AtomicBool,
    /// Whether writes may go ahead (`DIRTY_*`): the write-hole guard (SUPERBLOCK.md).
    pub(crate) dirty: AtomicU8,
    /// Parity/mirrors may disagree (unclean shutdown): a resync is due or running; the array is
    /// not clean until it finishes.
    pub(crate) resync_pending: AtomicBool,
    /// raid5 resync: stripes below this have consistent parity (`u64::MAX` when no resync is
    /// pending). Writes to stripes at or above it must not use read-modify-write.
    pub(crate) resynced_stripes: AtomicU64,
    /// Resolves once the raid bdev was destructed and its members written clean and released.
    pub(crate) released: Mutex<Option<keel_reactor::OneshotReceiver<()>>>,
    /// What the raid bdev offers beyond read/write/flush/reset, fixed when it registers.
    pub(crate) caps: OnceLock<Caps>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

impl RaidArray {
    /// A new array with every slot missing.
    pub(crate) fn new(
        name: &str,
        uuid: Uuid,
        geo: Geometry,
        block_size: u32,
        data_offset: u64,
        superblock: bool,
    ) -> RaidArray {
        let mut cores = keel_reactor::cores();
        if cores.is_empty() {
            cores.push(keel_reactor::current_core().unwrap_or(0));
        }
        RaidArray {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            name: name.to_string(),
            uuid,
            geo,
            block_size,
            data_offset,
            superblock,
            members: (0..geo.members).map(Member::new).collect(),
            locks: StripeLocks::new(cores),
            epoch: AtomicU64::new(0),
            offline: AtomicBool::new(false),
            generation: AtomicU64::new(1),
            registered: AtomicBool::new(false),
            process: Mutex::new(None),
            stopping: AtomicBool::new(false),
            clear_sb: AtomicBool::new(false),
            clean: AtomicBool::new(true),
            dirty: AtomicU8::new(if geo.level.redundancy(geo.members as usize) > 0 {
                DIRTY_CLEAN
            } else {
                DIRTY_ON_DISK
            }),
            resync_pending: AtomicBool::new(false),
            resynced_stripes: AtomicU64::new(u64::MAX),
            released: Mutex::new(None),
            caps: OnceLock::new(),
        }
    }

    /// What the raid bdev offers beyond read/write/flush/reset (nothing before it registers).
    pub fn caps(&self) -> Caps {
        self.caps.get().copied().unwrap_or_default()
    }

    /// Whether host writes may go ahead: the members' superblocks already say `clean = false`
    /// (always true without a superblock or without redundancy).
    #[inline]
    pub(crate) fn write_ready(&self) -> bool {
        !self.superblock || self.dirty.load(Ordering::Acquire) == DIRTY_ON_DISK
    }

    /// raid5: whether stripe `stripe`'s parity may be stale (a resync has not reached it).
    #[inline]
    pub(crate) fn parity_unsynced(&self, stripe: u64) -> bool {
        stripe >= self.resynced_stripes.load(Ordering::Acquire)
    }

    /// The level.
    pub fn level(&self) -> RaidLevel {
        self.geo.level
    }

    /// Whether too many members are gone to serve I/O.
    #[inline]
    pub fn is_offline(&self) -> bool {
        self.offline.load(Ordering::Acquire)
    }

    /// Whether a rebuild is running.
    pub fn is_rebuilding(&self) -> bool {
        lock(&self.process).is_some()
    }

    /// Members in the `Active` state.
    pub fn active_members(&self) -> usize {
        self.members
            .iter()
            .filter(|m| m.state() == MemberState::Active)
            .count()
    }

    /// Members with a bdev (any state but missing).
    pub fn discovered_members(&self) -> usize {
        self.members
            .iter()
            .filter(|m| lock(&m.desc).is_some())
            .count()
    }

    /// Recompute the offline flag from member states; returns it.
    pub(crate) fn update_offline(&self) -> bool {
        let n = self.members.len();
        let bad = n - self.active_members();
        let off = bad > self.level().redundancy(n) || self.active_members() == 0;
        let was = self.offline.swap(off, Ordering::AcqRel);
        if off && !was {
            log::error!(
                "raid {}: {bad} of {n} members unavailable, more than {} can tolerate: array offline, I/O fails",
                self.name,
                self.level()
            );
        } else if !off && was {
            log::info!("raid {}: back online", self.name);
        }
        off
    }

    /// Mark `slot` failed after an I/O error (any core; idempotent). Returns whether this call
    /// changed its state.
    pub fn fail_member(self: &Arc<Self>, slot: u32, why: &str) -> bool {
        let m = &self.members[slot as usize];
        let mut cur = m.state.load(Ordering::Acquire);
        loop {
            let s = MemberState::from_u8(cur);
            if !matches!(s, MemberState::Active | MemberState::Rebuilding) {
                return false;
            }
            match m.state.compare_exchange(
                cur,
                MemberState::Failed as u8,
                Ordering::AcqRel,
                Ordering::Acquire,
            ) {
                Ok(_) => break,
                Err(x) => cur = x,
            }
        }
        let offline = self.update_offline();
        log::warn!(
            "raid {}: member slot {slot} ({}) failed: {why}; array {}",
            self.name,
            m.bdev_name().unwrap_or_default(),
            if offline { "offline" } else { "degraded" }
        );
        self.epoch.fetch_add(1, Ordering::AcqRel);
        self.state_changed();
        true
    }

    /// Membership or a slot state changed: persist it (superblock, generation + 1).
    pub(crate) fn state_changed(self: &Arc<Self>) {
        self.generation.fetch_add(1, Ordering::AcqRel);
        if self.superblock {
            crate::sb_io::schedule_write(self);
        }
    }

    /// `online`, `configuring` or `offline`, as `bdev_raid_get_bdevs` reports.
    pub fn state_name(&self) -> &'static str {
        if !self.registered.load(Ordering::Acquire) {
            "configuring"
        } else if self.is_offline() {
            "offline"
        } else {
            "online"
        }
    }

    /// Find the slot holding bdev `name`.
    pub fn slot_of(&self, name: &str) -> Option<u32> {
        let canonical = keel_bdev::get_bdev(name).map(|b| b.name().to_string());
        self.members
            .iter()
            .find(|m| {
                let n = m.bdev_name();
                n.as_deref() == Some(name) || (canonical.is_some() && n == canonical)
            })
            .map(|m| m.slot)
    }

    /// The member bdevs currently open (for channel creation), by slot.
    pub(crate) fn member_bdevs(&self) -> Vec<Option<Bdev>> {
        self.members
            .iter()
            .map(|m| lock(&m.desc).as_ref().map(|d| d.bdev().clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn array(level: RaidLevel, n: u32) -> Arc<RaidArray> {
        let geo = Geometry {
            level,
            members: n,
            strip_blocks: 8,
            member_blocks: 64,
        };
        let a = Arc::new(RaidArray::new("t", Uuid::default(), geo, 512, 0, false));
        for m in &a.members {
            m.set_state(MemberState::Active);
        }
        a
    }

    #[test]
    fn raid5_survives_one_failure_not_two() {
        let a = array(RaidLevel::Raid5, 4);
        assert!(!a.update_offline());
        assert!(a.fail_member(1, "test"));
        assert!(!a.fail_member(1, "again"), "idempotent");
        assert!(!a.is_offline());
        assert!(a.fail_member(2, "test"));
        assert!(a.is_offline());
    }

    #[test]
    fn raid1_survives_all_but_one() {
        let a = array(RaidLevel::Raid1, 3);
        a.fail_member(0, "t");
        a.fail_member(1, "t");
        assert!(!a.is_offline());
        a.fail_member(2, "t");
        assert!(a.is_offline());
    }

    #[test]
    fn rebuilding_member_is_usable_below_the_watermark_only() {
        let a = array(RaidLevel::Raid1, 2);
        let m = &a.members[1];
        m.set_state(MemberState::Rebuilding);
        m.set_rebuilt(16);
        assert!(m.usable_below(16));
        assert!(!m.usable_below(17));
        m.set_state(MemberState::Failed);
        assert!(!m.usable_below(1));
    }
}
