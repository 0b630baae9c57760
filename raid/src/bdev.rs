//! Control path: creating, deleting and registering raid bdevs; members joining (add), leaving
//! (remove, hot-remove); the bdev layer's backend of a raid bdev.

use crate::array::{lock, MemberState, RaidArray, MAX_MEMBERS};
use crate::caps::{Caps, MemberCaps};
use crate::channel::{Chan, RaidChannel};
use crate::geometry::Geometry;
use crate::level::{RaidLevel, Resync, Strip};
use crate::superblock::{AssemblyPlan, SlotPlan, SlotState};
use keel_bdev::{
    BackendChannel, Bdev, BdevBackend, BdevDesc, BdevError, BdevEvent, BdevInfo, ConfigCall,
    IoType, Uuid,
};
use serde_json::{json, Value};
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, Weak};

/// Product name reported by `bdev_get_bdevs` (SPDK's).
pub const PRODUCT_NAME: &str = "Raid Volume";
/// Module name used for claims.
pub const MODULE: &str = "raid";

/// Every array known (registered or still assembling).
static ARRAYS: Mutex<Vec<Arc<RaidArray>>> = Mutex::new(Vec::new());

/// All arrays (control path).
pub fn arrays() -> Vec<Arc<RaidArray>> {
    lock(&ARRAYS).clone()
}

/// The array called `name`.
pub fn find(name: &str) -> Option<Arc<RaidArray>> {
    lock(&ARRAYS).iter().find(|a| a.name == name).cloned()
}

/// Stripe operations taken so far by the calling core's channels of raid bdev `name` (0 when
/// there is none). A probe for tests and diagnostics: host reads of a raid5 whose members are
/// all active take none (they go straight to the members).
pub fn stripe_ops_taken(name: &str) -> u64 {
    find(name).map_or(0, |a| Chan::ops_taken_local(a.id))
}

/// The `bdev_raid_create` parameters.
#[derive(Debug, Clone)]
pub struct CreateConfig {
    /// Array (bdev) name.
    pub name: String,
    /// Level.
    pub level: RaidLevel,
    /// Member bdev names, in slot order.
    pub base_bdevs: Vec<String>,
    /// Strip size in KiB (default 64 for striped levels; must be absent or 0 for raid1).
    pub strip_size_kb: Option<u32>,
    /// UUID of the array (random when `None`).
    pub uuid: Option<Uuid>,
    /// Write a superblock on every member.
    pub superblock: bool,
}

/// The bdev layer's backend of one raid bdev.
pub(crate) struct RaidBdev {
    pub array: Arc<RaidArray>,
}

impl BdevBackend for RaidBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn io_type_supported(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Read | IoType::Write | IoType::Flush | IoType::Reset => true,
            IoType::Unmap => self.array.caps().unmap,
            IoType::WriteZeroes => self.array.caps().write_zeroes,
        }
    }

    fn unmap_reads_zeroes(&self) -> bool {
        self.array.caps().zeroes
    }

    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(RaidChannel {
            chan: Chan::new(Arc::clone(&self.array)),
        }))
    }

    fn driver_specific(&self) -> Value {
        json!({ "raid": crate::rpc::array_json(&self.array) })
    }

    fn config_call(&self, _info: &BdevInfo) -> Option<ConfigCall> {
        let a = &self.array;
        if a.superblock {
            return None; // comes back from the members' superblocks
        }
        let names: Vec<String> = a.members.iter().filter_map(|m| m.bdev_name()).collect();
        let mut p = json!({
            "name": a.name,
            "raid_level": a.level().as_str(),
            "base_bdevs": names,
            "uuid": a.uuid.to_string(),
            "superblock": false,
        });
        if a.level().uses_strips() {
            p["strip_size_kb"] = json!(a.geo.strip_blocks * u64::from(a.block_size) / 1024);
        }
        Some(ConfigCall {
            method: "bdev_raid_create".into(),
            params: p,
        })
    }

    fn destruct(&self) {
        let a = Arc::clone(&self.array);
        a.stopping.store(true, Ordering::Release);
        a.registered.store(false, Ordering::Release);
        lock(&ARRAYS).retain(|x| !Arc::ptr_eq(x, &a));
        if keel_reactor::current_core().is_none() {
            for m in &a.members {
                drop(lock(&m.desc).take());
            }
            log::info!("raid bdev {} destroyed, members released", a.name);
            return;
        }
        let (tx, rx) = keel_reactor::oneshot();
        *lock(&a.released) = Some(rx);
        keel_reactor::spawn_local(async move {
            crate::sb_io::shutdown(&a).await;
            log::info!("raid bdev {} destroyed, members released", a.name);
            tx.send(());
        });
    }

    fn destruct_done(&self) -> Option<Pin<Box<dyn Future<Output = ()>>>> {
        let rx = lock(&self.array.released).take()?;
        Some(Box::pin(async move {
            // An error only means the sender is gone: the members are released either way.
            let _ = rx.await;
        }))
    }
}

/// Open and claim member `name` for slot `slot` of `array` (hot-remove goes to
/// [`member_removed`]).
fn open_member(array: &Arc<RaidArray>, slot: u32, name: &str) -> Result<BdevDesc, BdevError> {
    let weak: Weak<RaidArray> = Arc::downgrade(array);
    let desc = keel_bdev::open(name, true, move |ev| match ev {
        BdevEvent::Remove => {
            if let Some(a) = weak.upgrade() {
                member_removed(&a, slot, "hot-removed");
            }
        }
        // Members are used up to the size fixed at assembly; growing one changes nothing.
        BdevEvent::Resize => {}
    })?;
    desc.claim(MODULE)?;
    Ok(desc)
}

/// Check a strip size and give it in blocks.
fn strip_blocks(cfg: &CreateConfig, bs: u32) -> Result<u64, BdevError> {
    let bs = u64::from(bs);
    let max_bytes = match cfg.level.module().strip {
        Strip::Region { bytes } => {
            if cfg.strip_size_kb.is_some_and(|s| s != 0) {
                return Err(BdevError::Invalid(format!(
                    "strip size not supported for {} (omit strip_size_kb or give 0)",
                    cfg.level
                )));
            }
            return Ok((bytes / bs).max(1));
        }
        Strip::Striped { max_bytes } => max_bytes,
    };
    let kb = u64::from(cfg.strip_size_kb.unwrap_or(64));
    let bytes = kb * 1024;
    if kb == 0 || !kb.is_power_of_two() || bytes % bs != 0 {
        return Err(BdevError::Invalid(format!(
            "strip_size_kb {kb} must be a power of two and a multiple of the block size {bs}"
        )));
    }
    if let Some(max) = max_bytes.filter(|&max| bytes > max) {
        return Err(BdevError::Invalid(format!(
            "strip_size_kb {kb} too large for {} (at most {} KiB)",
            cfg.level,
            max / 1024
        )));
    }
    Ok(bytes / bs)
}

/// Create and register a raid bdev from existing member bdevs. Call on a reactor.
pub async fn create(cfg: &CreateConfig) -> Result<Bdev, BdevError> {
    if cfg.name.is_empty() {
        return Err(BdevError::Invalid(
            "raid bdev name must not be empty".into(),
        ));
    }
    if keel_bdev::get_bdev(&cfg.name).is_some()
        || find(&cfg.name).is_some()
        || crate::examine::is_pending(&cfg.name)
    {
        return Err(BdevError::Exists(cfg.name.clone()));
    }
    let n = cfg.base_bdevs.len();
    if n < cfg.level.min_members() || n > MAX_MEMBERS {
        return Err(BdevError::Invalid(format!(
            "{} needs {} to {MAX_MEMBERS} base bdevs, got {n}",
            cfg.level,
            cfg.level.min_members()
        )));
    }
    for (i, b) in cfg.base_bdevs.iter().enumerate() {
        if cfg.base_bdevs[..i].contains(b) {
            return Err(BdevError::Invalid(format!("base bdev {b} given twice")));
        }
    }
    let bases: Vec<Bdev> = cfg
        .base_bdevs
        .iter()
        .map(|b| keel_bdev::get_bdev(b).ok_or_else(|| BdevError::NotFound(b.clone())))
        .collect::<Result<_, _>>()?;
    let bs = bases[0].info().block_size;
    if let Some(b) = bases.iter().find(|b| b.info().block_size != bs) {
        return Err(BdevError::Invalid(format!(
            "base bdev {} has block size {}, {} has {bs}: all must match",
            b.name(),
            b.info().block_size,
            bases[0].name()
        )));
    }
    let strip = strip_blocks(cfg, bs)?;
    let data_offset = if cfg.superblock {
        crate::superblock::default_data_offset_blocks(bs)
    } else {
        0
    };
    let smallest = bases.iter().map(|b| b.num_blocks()).min().unwrap_or(0);
    let member_blocks = smallest.saturating_sub(data_offset) / strip * strip;
    if member_blocks == 0 {
        return Err(BdevError::Invalid(format!(
            "base bdevs too small: {smallest} blocks leave no full strip after the {data_offset}-block data offset"
        )));
    }
    let geo = Geometry {
        level: cfg.level,
        members: n as u32,
        strip_blocks: strip,
        member_blocks,
    };
    let uuid = cfg.uuid.unwrap_or_else(Uuid::new_random);
    let array = Arc::new(RaidArray::new(
        &cfg.name,
        uuid,
        geo,
        bs,
        data_offset,
        cfg.superblock,
    ));
    for (slot, name) in cfg.base_bdevs.iter().enumerate() {
        let desc = open_member(&array, slot as u32, name)?; // earlier descs drop with `array`
        let m = &array.members[slot];
        *lock(&m.name) = Some(desc.bdev().name().to_string());
        *lock(&m.uuid) = Uuid::new_random();
        *lock(&m.desc) = Some(desc);
        m.set_state(MemberState::Active);
    }
    array.update_offline();
    if cfg.superblock {
        crate::sb_io::write_all(&array).await?;
    }
    register(&array).inspect_err(|_| {
        for m in &array.members {
            drop(lock(&m.desc).take());
        }
    })
}

/// Register an assembled array as a bdev.
pub(crate) fn register(array: &Arc<RaidArray>) -> Result<Bdev, BdevError> {
    let members: Vec<MemberCaps> = array
        .member_bdevs()
        .iter()
        .flatten()
        .map(MemberCaps::of)
        .collect();
    // Fixed for the bdev's life (the bdev layer asks once); members joining later must match.
    let _ = array.caps.set(Caps::of(array.level(), &members));
    let info = BdevInfo {
        name: array.name.clone(),
        aliases: Vec::new(),
        uuid: array.uuid,
        block_size: array.block_size,
        num_blocks: array.geo.num_blocks(),
    };
    let backend = Arc::new(RaidBdev {
        array: Arc::clone(array),
    });
    lock(&ARRAYS).push(Arc::clone(array));
    match keel_bdev::register(info, backend) {
        Ok(b) => {
            array.registered.store(true, Ordering::Release);
            log::info!(
                "raid bdev {} created: {}, {} members, strip {} blocks, {} blocks of {} bytes, superblock {}",
                array.name,
                array.level(),
                array.members.len(),
                array.geo.strip_blocks,
                array.geo.num_blocks(),
                array.block_size,
                array.superblock
            );
            Ok(b)
        }
        Err(e) => {
            lock(&ARRAYS).retain(|x| !Arc::ptr_eq(x, array));
            Err(e)
        }
    }
}

/// Delete the raid bdev `name`; resolves once it is gone and its members released.
pub async fn delete(name: &str) -> Result<(), BdevError> {
    delete_opts(name, false).await
}

/// Delete the raid bdev `name` (SPDK's `bdev_raid_delete`); with `clear_sb` the superblocks of
/// its members are wiped (zeroed) instead of marked clean, so the members are plain bdevs again
/// and no examine assembles the array from them. Resolves once it is gone and its members
/// released.
pub async fn delete_opts(name: &str, clear_sb: bool) -> Result<(), BdevError> {
    let Some(a) = find(name) else {
        return match crate::examine::cancel(name) {
            Some(members) => {
                if clear_sb {
                    crate::examine::wipe_pending(name, members).await;
                }
                Ok(())
            }
            None => Err(BdevError::NotFound(name.to_string())),
        };
    };
    if clear_sb {
        a.clear_sb.store(true, Ordering::Release);
    }
    if a.registered.load(Ordering::Acquire) {
        keel_bdev::unregister(&a.name).await?;
        let released = lock(&a.released).take();
        if let Some(rx) = released {
            let _ = rx.await;
        }
        Ok(())
    } else {
        a.stopping.store(true, Ordering::Release);
        lock(&ARRAYS).retain(|x| !Arc::ptr_eq(x, &a));
        if clear_sb && a.superblock {
            crate::sb_io::wipe_all(&a).await;
        }
        for m in &a.members {
            drop(lock(&m.desc).take());
        }
        Ok(())
    }
}

/// Every core drops (or takes) its channels to members that left (or joined); then `done`.
fn refresh_everywhere(array: &Arc<RaidArray>, done: impl FnOnce() + Send + 'static) {
    array.epoch.fetch_add(1, Ordering::AcqRel);
    let id = array.id;
    if let Err(e) = keel_reactor::for_each_core(move || Chan::refresh_local(id), done) {
        log::warn!("raid {}: refreshing member channels: {e}", array.name);
    }
}

/// A member is gone (hot-removed, or removed by RPC): the slot becomes missing, every core drops
/// its channel to it, then the member is closed (and its claim released).
pub(crate) fn member_removed(array: &Arc<RaidArray>, slot: u32, why: &str) {
    let m = &array.members[slot as usize];
    let Some(desc) = lock(&m.desc).take() else {
        return;
    };
    if array.stopping.load(Ordering::Acquire) {
        // The array is being destructed: not a failure, and no superblock change to record.
        log::info!(
            "raid {}: member slot {slot} ({}) released while the array stops",
            array.name,
            desc.bdev().name()
        );
        refresh_everywhere(array, move || drop(desc));
        return;
    }
    m.set_state(MemberState::Missing);
    let off = array.update_offline();
    log::warn!(
        "raid {}: member slot {slot} ({}) {why}; array {}",
        array.name,
        desc.bdev().name(),
        if off { "offline" } else { "degraded" }
    );
    array.state_changed();
    refresh_everywhere(array, move || drop(desc));
}

/// Remove member bdev `name` from its array (`bdev_raid_remove_base_bdev`).
pub async fn remove_base_bdev(name: &str) -> Result<(), BdevError> {
    let (array, slot) = arrays()
        .into_iter()
        .find_map(|a| a.slot_of(name).map(|s| (a, s)))
        .ok_or_else(|| BdevError::NotFound(format!("{name} is not a raid member")))?;
    if lock(&array.members[slot as usize].desc).is_none() {
        return Err(BdevError::NotFound(format!(
            "{name} is not open in raid {}",
            array.name
        )));
    }
    let (tx, rx) = keel_reactor::oneshot();
    let m = &array.members[slot as usize];
    let desc = lock(&m.desc).take();
    m.set_state(MemberState::Missing);
    let off = array.update_offline();
    log::info!(
        "raid {}: member slot {slot} ({name}) removed by request; array {}",
        array.name,
        if off { "offline" } else { "degraded" }
    );
    array.state_changed();
    refresh_everywhere(&array, move || {
        drop(desc);
        tx.send(());
    });
    let _ = rx.await;
    Ok(())
}

/// Add bdev `base` to array `raid` in its first missing or failed slot and rebuild it
/// (`bdev_raid_add_base_bdev`).
pub async fn add_base_bdev(raid: &str, base: &str) -> Result<(), BdevError> {
    let array = find(raid).ok_or_else(|| BdevError::NotFound(raid.to_string()))?;
    if array.level().redundancy(array.members.len()) == 0 {
        return Err(BdevError::Invalid(format!(
            "raid {raid} ({}) has no redundancy: a member cannot be rebuilt",
            array.level()
        )));
    }
    if array.is_offline() {
        return Err(BdevError::Invalid(format!(
            "raid {raid} is offline: too many members lost to rebuild"
        )));
    }
    if crate::array::lock(&array.process).is_some() {
        return Err(BdevError::Invalid(format!(
            "raid {raid} is already rebuilding"
        )));
    }
    let slot = array
        .members
        .iter()
        .find(|m| m.state() == MemberState::Missing)
        .or_else(|| {
            array
                .members
                .iter()
                .find(|m| m.state() == MemberState::Failed)
        })
        .map(|m| m.slot)
        .ok_or_else(|| {
            BdevError::Invalid(format!("raid {raid} has no missing or failed member"))
        })?;
    let b = keel_bdev::get_bdev(base).ok_or_else(|| BdevError::NotFound(base.to_string()))?;
    if b.info().block_size != array.block_size {
        return Err(BdevError::Invalid(format!(
            "{base} has block size {}, raid {raid} needs {}",
            b.info().block_size,
            array.block_size
        )));
    }
    if b.num_blocks() < array.data_offset + array.geo.member_blocks {
        return Err(BdevError::Invalid(format!(
            "{base} has {} blocks, raid {raid} needs {}",
            b.num_blocks(),
            array.data_offset + array.geo.member_blocks
        )));
    }
    attach_for_rebuild(&array, slot, base).await
}

/// Put bdev `base` into missing or failed `slot` of `array` as a rebuild target (a new member
/// UUID, rebuilt from block 0) and start the rebuild when none is running (else it follows the
/// running one).
pub(crate) async fn attach_for_rebuild(
    array: &Arc<RaidArray>,
    slot: u32,
    base: &str,
) -> Result<(), BdevError> {
    let b = keel_bdev::get_bdev(base).ok_or_else(|| BdevError::NotFound(base.to_string()))?;
    if let Err(why) = array.caps().admits(array.level(), MemberCaps::of(&b)) {
        return Err(BdevError::Invalid(format!(
            "{base} cannot join raid {}: {why}",
            array.name
        )));
    }
    // Close the failed member that held the slot, everywhere, first.
    let old = lock(&array.members[slot as usize].desc).take();
    if old.is_some() {
        let (tx, rx) = keel_reactor::oneshot();
        refresh_everywhere(array, move || {
            drop(old);
            tx.send(());
        });
        let _ = rx.await;
    }
    let desc = open_member(array, slot, base)?;
    let m = &array.members[slot as usize];
    *lock(&m.name) = Some(desc.bdev().name().to_string());
    *lock(&m.uuid) = Uuid::new_random();
    *lock(&m.desc) = Some(desc);
    m.set_rebuilt(0);
    m.set_state(MemberState::Rebuilding);
    let (tx, rx) = keel_reactor::oneshot();
    refresh_everywhere(array, move || tx.send(()));
    let _ = rx.await;
    log::info!(
        "raid {}: {base} added in slot {slot}, to be rebuilt",
        array.name
    );
    array.state_changed();
    crate::rebuild::kick(array);
    Ok(())
}

/// Start an array from an assembly plan (the examiner decided it can start): open and claim
/// its members, trust current ones, rebuild stale ones from block 0, resume interrupted
/// rebuilds, resync after an unclean shutdown, and register the raid bdev with its old name and
/// UUID.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): the assembly sequence, step by step
pub(crate) async fn assemble(plan: &AssemblyPlan) -> Result<Bdev, BdevError> {
    let sb = &plan.superblock;
    if keel_bdev::get_bdev(&sb.name).is_some() || find(&sb.name).is_some() {
        return Err(BdevError::Exists(sb.name.clone()));
    }
    let bs = sb.block_size;
    let strip = match (u64::from(sb.strip_size_blocks), sb.level.module().strip) {
        (0, Strip::Region { bytes }) => (bytes / u64::from(bs)).max(1),
        (s, _) => s,
    };
    let geo = Geometry {
        level: sb.level,
        members: sb.slots.len() as u32,
        strip_blocks: strip,
        member_blocks: sb.data_size_blocks,
    };
    let array = Arc::new(RaidArray::new(
        &sb.name,
        sb.array_uuid,
        geo,
        bs,
        sb.data_offset_blocks,
        true,
    ));
    array.generation.store(sb.generation, Ordering::Release);
    let mut changed = false;
    for (k, sp) in plan.slots.iter().enumerate() {
        let m = &array.members[k];
        *lock(&m.uuid) = sb.slots[k].member_uuid;
        let (bdev, state, rebuilt) = match sp {
            SlotPlan::Current { bdev } => (bdev, MemberState::Active, 0),
            SlotPlan::Rebuilding {
                bdev,
                rebuilt_blocks,
            } => (bdev, MemberState::Rebuilding, *rebuilt_blocks),
            SlotPlan::Stale { bdev, generation } => {
                log::warn!(
                    "raid {}: member {bdev} (slot {k}) is stale (generation {generation}, array at {}): not trusted, it will be rebuilt",
                    sb.name,
                    sb.generation
                );
                changed = true;
                (bdev, MemberState::Rebuilding, 0)
            }
            SlotPlan::Absent { marked } => {
                m.set_state(if *marked == SlotState::Failed {
                    MemberState::Failed
                } else {
                    MemberState::Missing
                });
                changed |= matches!(marked, SlotState::Active | SlotState::Rebuilding { .. });
                continue;
            }
        };
        match open_member(&array, k as u32, bdev) {
            Ok(desc) => {
                *lock(&m.name) = Some(desc.bdev().name().to_string());
                *lock(&m.desc) = Some(desc);
                m.set_rebuilt(rebuilt);
                m.set_state(state);
            }
            Err(e) => {
                log::error!(
                    "raid {}: cannot open member {bdev} (slot {k}): {e}",
                    sb.name
                );
                m.set_state(MemberState::Missing);
                changed = true;
            }
        }
    }
    let release = |array: &RaidArray| {
        for m in &array.members {
            drop(lock(&m.desc).take());
        }
    };
    if array.update_offline() {
        release(&array);
        return Err(BdevError::Invalid(format!(
            "raid {}: too few usable members to start",
            sb.name
        )));
    }
    let resync = array.level().module().resync;
    let redundant = array.level().redundancy(array.members.len()) > 0;
    if let Some(resync) = resync.filter(|_| plan.needs_resync() && redundant) {
        array.clean.store(false, Ordering::Release);
        array
            .dirty
            .store(crate::array::DIRTY_ON_DISK, Ordering::Release);
        let degraded = array.active_members() < array.members.len();
        if resync == Resync::Parity && degraded {
            log::error!(
                "raid {}: unclean shutdown of a degraded raid5 (write hole): parity of the stripes being written at the crash cannot be checked; data of those stripes on the missing member may be wrong",
                sb.name
            );
        } else {
            log::warn!(
                "raid {}: unclean shutdown: {} resync of the whole array follows",
                sb.name,
                resync.name()
            );
            array.resync_pending.store(true, Ordering::Release);
            if resync == Resync::Parity {
                array.resynced_stripes.store(0, Ordering::Release);
            }
        }
    }
    let bdev = register(&array).inspect_err(|_| release(&array))?;
    if changed {
        array.state_changed();
    }
    crate::rebuild::kick(&array);
    Ok(bdev)
}
