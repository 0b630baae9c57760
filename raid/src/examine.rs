//! Control path: the raid examiner — arrays assemble themselves from their members'
//! superblocks as the member bdevs appear (SUPERBLOCK.md, "Assembly at start-up").
//!
//! For every new bdev the examiner reads block 0 (4 KiB) and decodes it:
//! - no magic: not a member, nothing logged above debug;
//! - refused (checksum, version, bad field, or a superblock that does not fit the bdev): an
//!   error naming the bdev and the problem; the bdev is left alone;
//! - a member of a running array: if its slot is missing or failed it is added back as a
//!   rebuild target (hot-add); otherwise it is an old copy and is ignored;
//! - a member of an array not running yet: it is claimed and kept in a pending ("configuring")
//!   array, and the assembly plan is made again with every member found so far.
//!
//! Start rule: an array starts as soon as every slot the newest superblock expects (`Active` or
//! `Rebuilding`) has a member, and enough of them are current for the level. Stale members
//! (older generation) are then rebuilt from block 0; members of slots the newest superblock
//! marks failed/missing are added back as rebuild targets once it runs. An expected member that
//! never appears keeps the array configuring (like SPDK, no silent degraded start); the operator
//! can `bdev_raid_delete` it.

use crate::array::{lock, MemberState};
use crate::bdev::{MODULE, PRODUCT_NAME};
use crate::superblock::{
    plan_assembly, AssemblyPlan, IgnoreReason, RaidSuperblock, Readiness, SlotPlan,
    SuperblockError, SUPERBLOCK_SIZE,
};
use crate::RaidArray;
use keel_bdev::{Bdev, BdevDesc, BdevEvent, IoStatus, Uuid};
use serde_json::{json, Value};
use std::sync::{Arc, Mutex};

/// A member found for an array that is not running yet (claimed).
pub(crate) struct Found {
    bdev: String,
    sb: RaidSuperblock,
    /// Holds the claim while the array assembles.
    _claim: BdevDesc,
}

/// An array being assembled.
struct Pending {
    uuid: Uuid,
    found: Vec<Found>,
}

impl Pending {
    fn members(&self) -> Vec<(String, RaidSuperblock)> {
        self.found
            .iter()
            .map(|f| (f.bdev.clone(), f.sb.clone()))
            .collect()
    }

    /// The newest superblock found (its name is the array's).
    fn newest(&self) -> Option<&RaidSuperblock> {
        self.found
            .iter()
            .map(|f| &f.sb)
            .max_by_key(|sb| sb.generation)
    }
}

static PENDING: Mutex<Vec<Pending>> = Mutex::new(Vec::new());

/// Register the examiner (once, at start-up).
pub(crate) fn register() {
    keel_bdev::register_examiner(MODULE, examine);
}

/// The examiner: look at a new bdev (on the registering core).
fn examine(bdev: &Bdev) {
    if keel_reactor::current_core().is_none() || bdev.backend().product_name() == PRODUCT_NAME {
        return;
    }
    if bdev.claimed_by().as_deref() == Some(MODULE) {
        return; // ours already (an array being created)
    }
    let info = bdev.info();
    let area = crate::sb_io::area_bytes(info.block_size.max(1));
    if info.block_size == 0
        || bdev.num_blocks().saturating_mul(u64::from(info.block_size)) < area as u64
        || area > keel_reactor::pool::MAX_CLASS
    {
        log::debug!(
            "bdev {}: too small or odd block size for a raid superblock",
            info.name
        );
        return;
    }
    let name = bdev.name().to_string();
    let guard = keel_bdev::examine_begin();
    keel_reactor::spawn_local(async move {
        match read_superblock(&name, area).await {
            Ok(None) => log::debug!("bdev {name}: no raid superblock"),
            Err(e) => log::error!("bdev {name}: raid superblock refused: {e}; bdev left alone"),
            Ok(Some(sb)) => found(&name, sb).await,
        }
        drop(guard);
    });
}

/// Read and decode block 0 of `name`: `Ok(None)` when it is not a raid member.
async fn read_superblock(name: &str, area: usize) -> Result<Option<RaidSuperblock>, String> {
    let desc = keel_bdev::open(name, false, |_| {}).map_err(|e| format!("open: {e}"))?;
    let ch = desc.get_io_channel().map_err(|e| format!("channel: {e}"))?;
    let mut buf = keel_reactor::pool::alloc_wait(area)
        .await
        .map_err(|e| format!("buffer: {e}"))?;
    match crate::sb_io::io_once(&ch, false, &mut buf, 0).await {
        IoStatus::Success => {}
        s => return Err(format!("reading block 0 failed ({s:?})")),
    }
    match crate::superblock::decode(&buf.as_slice()[..SUPERBLOCK_SIZE]) {
        Ok(sb) => Ok(Some(sb)),
        Err(SuperblockError::NotRaid) => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Check that a decoded superblock fits the bdev holding it.
fn fits(bdev: &Bdev, sb: &RaidSuperblock) -> Result<(), String> {
    let info = bdev.info();
    if sb.block_size != info.block_size {
        return Err(format!(
            "superblock block size {} but the bdev has {}",
            sb.block_size, info.block_size
        ));
    }
    let end = sb.data_offset_blocks.saturating_add(sb.data_size_blocks);
    if end > bdev.num_blocks() {
        return Err(format!(
            "superblock data area ends at block {end} but the bdev has {} blocks",
            bdev.num_blocks()
        ));
    }
    Ok(())
}

/// A bdev carries a valid superblock of array `sb.array_uuid`.
async fn found(name: &str, sb: RaidSuperblock) {
    let Some(bdev) = keel_bdev::get_bdev(name) else {
        return; // gone meanwhile
    };
    if let Err(e) = fits(&bdev, &sb) {
        log::error!("bdev {name}: raid superblock refused: {e}; bdev left alone");
        return;
    }
    if let Some(array) = crate::bdev::arrays()
        .into_iter()
        .find(|a| a.uuid == sb.array_uuid)
    {
        hot_add(&array, name, &sb).await;
        return;
    }
    let desc = match claim_pending(name) {
        Ok(d) => d,
        Err(e) => {
            log::error!(
                "bdev {name}: member of raid {} but cannot be claimed: {e}",
                sb.name
            );
            return;
        }
    };
    let (array_name, slot, generation) = (sb.name.clone(), sb.this_slot, sb.generation);
    let plan = {
        let mut pending = lock(&PENDING);
        let idx = match pending.iter().position(|p| p.uuid == sb.array_uuid) {
            Some(i) => i,
            None => {
                pending.push(Pending {
                    uuid: sb.array_uuid,
                    found: Vec::new(),
                });
                pending.len() - 1
            }
        };
        let entry = &mut pending[idx];
        entry.found.retain(|f| f.bdev != name);
        entry.found.push(Found {
            bdev: name.to_string(),
            sb,
            _claim: desc,
        });
        match plan_assembly(&entry.members()) {
            Ok(plan) => plan,
            Err(e) => {
                let refused = entry.found.pop();
                if entry.found.is_empty() {
                    pending.remove(idx);
                }
                drop(pending);
                drop(refused);
                log::error!("bdev {name}: not added to raid {array_name}: {e}; bdev left alone");
                return;
            }
        }
    };
    let n = plan.slots.len();
    let have = plan
        .slots
        .iter()
        .filter(|s| !matches!(s, SlotPlan::Absent { .. }))
        .count();
    log::info!(
        "bdev {name}: member of raid {array_name} (slot {slot}, generation {generation}); {have} of {n} members found"
    );
    if !plan.waiting_for.is_empty() {
        log::info!(
            "raid {array_name}: configuring, waiting for slot(s) {:?}",
            plan.waiting_for
        );
        return;
    }
    if plan.readiness == Readiness::Insufficient {
        log::error!(
            "raid {array_name}: cannot start: too few current members for {} ({have} of {n} found, some stale); operator action needed",
            plan.superblock.level
        );
        return;
    }
    start(plan).await;
}

/// Open and claim a member of a pending array (hot-remove drops it from the pending array).
fn claim_pending(name: &str) -> Result<BdevDesc, keel_bdev::BdevError> {
    let n = name.to_string();
    let desc = keel_bdev::open(name, true, move |ev| match ev {
        BdevEvent::Remove => forget(&n),
        BdevEvent::Resize => {}
    })?;
    desc.claim(MODULE)?;
    Ok(desc)
}

/// A pending member bdev went away.
fn forget(bdev: &str) {
    let gone: Vec<Found> = {
        let mut pending = lock(&PENDING);
        let mut gone = Vec::new();
        for p in pending.iter_mut() {
            if let Some(i) = p.found.iter().position(|f| f.bdev == bdev) {
                gone.push(p.found.remove(i));
            }
        }
        pending.retain(|p| !p.found.is_empty());
        gone
    };
    if gone.is_empty() {
        return;
    }
    log::info!("bdev {bdev}: removed while its raid array was configuring");
    // Close the descriptors outside the removal callback.
    if keel_reactor::current_core().is_some() {
        keel_reactor::spawn_local(async move { drop(gone) });
    } else {
        drop(gone);
    }
}

/// Start a pending array whose plan says it can.
async fn start(plan: AssemblyPlan) {
    let name = plan.superblock.name.clone();
    let found = {
        let mut pending = lock(&PENDING);
        match pending
            .iter()
            .position(|p| p.uuid == plan.superblock.array_uuid)
        {
            Some(i) => pending.remove(i).found,
            None => return, // started or cancelled meanwhile
        }
    };
    for ig in &plan.ignored {
        log::info!(
            "raid {name}: bdev {} (slot {}) not used at assembly: {}",
            ig.bdev,
            ig.slot,
            match ig.reason {
                IgnoreReason::MarkedOut => "its slot is marked failed/missing; it will be rebuilt",
                IgnoreReason::Replaced => "its slot now holds another member",
            }
        );
    }
    let marked_out: Vec<(String, RaidSuperblock)> = found
        .iter()
        .filter(|f| {
            plan.ignored
                .iter()
                .any(|ig| ig.bdev == f.bdev && ig.reason == IgnoreReason::MarkedOut)
        })
        .map(|f| (f.bdev.clone(), f.sb.clone()))
        .collect();
    drop(found); // release the claims: assembly takes them again for the array
    let readiness = plan.readiness;
    match crate::bdev::assemble(&plan).await {
        Ok(_) => log::info!(
            "raid {name} ({}) assembled from its members' superblocks: {}, generation {}{}",
            plan.superblock.array_uuid,
            if readiness == Readiness::Optimal {
                "optimal"
            } else {
                "degraded"
            },
            plan.superblock.generation,
            if plan.needs_resync() {
                ", unclean shutdown"
            } else {
                ""
            }
        ),
        Err(e) => {
            log::error!("raid {name}: assembly failed: {e}");
            return;
        }
    }
    if let Some(array) = crate::bdev::find(&name) {
        for (bdev, sb) in marked_out {
            hot_add(&array, &bdev, &sb).await;
        }
    }
}

/// A member of running `array` appeared: rebuild into its slot if that slot is missing or
/// failed; otherwise it is an old copy and is ignored.
async fn hot_add(array: &Arc<RaidArray>, name: &str, sb: &RaidSuperblock) {
    let k = sb.this_slot as usize;
    if k >= array.members.len()
        || sb.slots.len() != array.members.len()
        || sb.level != array.level()
        || sb.block_size != array.block_size
        || sb.data_offset_blocks != array.data_offset
        || sb.data_size_blocks != array.geo.member_blocks
    {
        log::error!(
            "bdev {name}: superblock of raid {} disagrees with the running array's geometry; bdev left alone",
            array.name
        );
        return;
    }
    let m = &array.members[k];
    if m.bdev_name().as_deref() == Some(name) && lock(&m.desc).is_some() {
        log::debug!("bdev {name}: already slot {k} of raid {}", array.name);
        return;
    }
    match m.state() {
        MemberState::Missing | MemberState::Failed => {
            if array.level().redundancy(array.members.len()) == 0 || array.is_offline() {
                log::warn!(
                    "bdev {name}: former member of raid {} (slot {k}) is back, but the array cannot rebuild it ({})",
                    array.name,
                    if array.is_offline() {
                        "offline"
                    } else {
                        "no redundancy"
                    }
                );
                return;
            }
            log::info!(
                "bdev {name}: former member of raid {} (slot {k}, generation {}) is back: not trusted, rebuilding it",
                array.name,
                sb.generation
            );
            if let Err(e) = crate::bdev::attach_for_rebuild(array, k as u32, name).await {
                log::error!("raid {}: adding {name} back failed: {e}", array.name);
            }
        }
        _ => log::info!(
            "bdev {name}: carries an old superblock of raid {} slot {k}, now held by {}: ignored",
            array.name,
            m.bdev_name().unwrap_or_default()
        ),
    }
}

/// Whether an array called `name` is being assembled.
pub(crate) fn is_pending(name: &str) -> bool {
    lock(&PENDING)
        .iter()
        .any(|p| p.newest().is_some_and(|sb| sb.name == name))
}

/// Cancel the assembly of array `name` (`bdev_raid_delete` of a configuring array): its
/// members, still claimed until dropped; None when no such assembly is pending.
pub(crate) fn cancel(name: &str) -> Option<Vec<Found>> {
    let gone = {
        let mut pending = lock(&PENDING);
        let i = pending
            .iter()
            .position(|p| p.newest().is_some_and(|sb| sb.name == name))?;
        pending.remove(i)
    };
    log::info!(
        "raid {name}: assembly cancelled, {} member(s) released",
        gone.found.len()
    );
    Some(gone.found)
}

/// `bdev_raid_delete` with `clear_sb` of a configuring array: zero the superblocks of the
/// members found so far (through their claims), then release them.
pub(crate) async fn wipe_pending(name: &str, found: Vec<Found>) {
    for f in found {
        match f._claim.get_io_channel() {
            Ok(ch) => {
                crate::sb_io::wipe(&ch, name, &f.bdev).await;
            }
            Err(e) => log::error!(
                "raid {name}: clearing the superblock of {}: channel: {e}",
                f.bdev
            ),
        }
    }
}

/// `bdev_raid_get_bdevs` entries of the arrays being assembled (state `configuring`).
pub(crate) fn pending_json() -> Vec<Value> {
    let pending = lock(&PENDING);
    pending
        .iter()
        .filter_map(|p| {
            let plan = plan_assembly(&p.members()).ok()?;
            let sb = &plan.superblock;
            let strip_kb = if sb.level.uses_strips() {
                u64::from(sb.strip_size_blocks) * u64::from(sb.block_size) / 1024
            } else {
                0
            };
            let list: Vec<Value> = plan
                .slots
                .iter()
                .map(|s| {
                    let (name, state) = match s {
                        SlotPlan::Current { bdev } => (Some(bdev.clone()), "found"),
                        SlotPlan::Rebuilding { bdev, .. } => (Some(bdev.clone()), "rebuilding"),
                        SlotPlan::Stale { bdev, .. } => (Some(bdev.clone()), "stale"),
                        SlotPlan::Absent { .. } => (None, "missing"),
                    };
                    json!({
                        "name": name,
                        "is_configured": name.is_some(),
                        "data_offset": sb.data_offset_blocks,
                        "data_size": sb.data_size_blocks,
                        "state": state,
                    })
                })
                .collect();
            let discovered = list
                .iter()
                .filter(|v| v["is_configured"] == json!(true))
                .count();
            Some(json!({
                "name": sb.name,
                "uuid": sb.array_uuid.to_string(),
                "strip_size_kb": strip_kb,
                "state": "configuring",
                "raid_level": sb.level.as_str(),
                "superblock": true,
                "num_base_bdevs": plan.slots.len(),
                "num_base_bdevs_discovered": discovered,
                "num_base_bdevs_operational": 0,
                "base_bdevs_list": list,
                "generation": sb.generation,
                "waiting_for": plan.waiting_for,
            }))
        })
        .collect()
}
