//! Control path: writing the array's superblock to its members (at creation, and with the
//! generation bumped after every membership or state change) and reading one from a bdev.
//! Writes of one array are serialized: one writer task at a time, rerun while changes came in.
//!
//! The `clean` flag (write-hole guard, SUPERBLOCK.md): an array starts clean; the first host
//! write after creation or assembly waits while [`mark_dirty`] writes `clean = false` to every
//! member (same generation); a clean shutdown ([`shutdown`]) writes `clean = true` once no
//! write can be in flight and no resync is pending.

use crate::array::{lock, MemberState, RaidArray, DIRTY_CLEAN, DIRTY_MARKING, DIRTY_ON_DISK};
use crate::superblock::{MemberSlot, RaidSuperblock, SlotState, SUPERBLOCK_SIZE, VERSION};
use keel_bdev::{BdevError, IoChannel, IoStatus, IoVec};
use std::cell::Cell;
use std::collections::HashSet;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Arrays (by id) with a writer task running, and whether another pass is due.
static WRITERS: Mutex<Option<HashSet<u64>>> = Mutex::new(None);
static DIRTY: Mutex<Option<HashSet<u64>>> = Mutex::new(None);

/// The superblock of `array` as stored on member `slot`.
pub(crate) fn build(array: &RaidArray, slot: u32) -> RaidSuperblock {
    RaidSuperblock {
        version: VERSION,
        array_uuid: array.uuid,
        name: array.name.clone(),
        level: array.level(),
        strip_size_blocks: array.geo.strip_blocks as u32,
        block_size: array.block_size,
        data_offset_blocks: array.data_offset,
        data_size_blocks: array.geo.member_blocks,
        generation: array.generation.load(Ordering::Acquire),
        this_slot: slot,
        slots: array
            .members
            .iter()
            .map(|m| MemberSlot {
                member_uuid: *lock(&m.uuid),
                state: match m.state() {
                    MemberState::Active => SlotState::Active,
                    MemberState::Failed => SlotState::Failed,
                    MemberState::Missing => SlotState::Missing,
                    MemberState::Rebuilding => SlotState::Rebuilding {
                        rebuilt_blocks: m.rebuilt_blocks(),
                    },
                },
            })
            .collect(),
        clean: array.clean.load(Ordering::Acquire),
    }
}

/// One I/O's completion, awaited.
#[derive(Default)]
struct Once {
    status: Cell<Option<IoStatus>>,
    waker: Cell<Option<Waker>>,
}

fn once_cb(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is `Rc::into_raw` of the `Once` the submitter awaits.
    let o = unsafe { Rc::from_raw(ctx as *const Once) };
    o.status.set(Some(status));
    if let Some(w) = o.waker.take() {
        w.wake();
    }
}

/// Read or write `buf` at block `lba` of `ch` and wait.
pub(crate) async fn io_once(
    ch: &IoChannel,
    write: bool,
    buf: &mut keel_reactor::pool::DmaBuf,
    lba: u64,
) -> IoStatus {
    let o = Rc::new(Once::default());
    let bs = ch.bdev().info().block_size as usize;
    let blocks = (buf.len() / bs) as u64;
    // SAFETY: `buf` outlives the I/O: this function waits for its completion.
    let iov = unsafe { IoVec::from_raw_parts(buf.as_mut_ptr(), buf.len()) };
    let ctx = Rc::into_raw(Rc::clone(&o)) as usize;
    let r = if write {
        ch.write(&[iov], lba, blocks, once_cb, ctx)
    } else {
        ch.read(&[iov], lba, blocks, once_cb, ctx)
    };
    if r.is_err() {
        // SAFETY: the callback will not run; reclaim the count given to it.
        drop(unsafe { Rc::from_raw(ctx as *const Once) });
        return IoStatus::IoError;
    }
    poll_fn(|cx| match o.status.get() {
        Some(s) => Poll::Ready(s),
        None => {
            o.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    })
    .await
}

/// Bytes of the superblock area: the superblock rounded up to whole blocks.
pub(crate) fn area_bytes(block_size: u32) -> usize {
    SUPERBLOCK_SIZE.div_ceil(block_size as usize) * block_size as usize
}

/// Write the current superblock to every present member; fails if none took it.
pub(crate) async fn write_all(array: &Arc<RaidArray>) -> Result<(), BdevError> {
    let mut written = 0;
    let mut tried = 0;
    for m in &array.members {
        if !matches!(m.state(), MemberState::Active | MemberState::Rebuilding) {
            continue;
        }
        let ch = match lock(&m.desc).as_ref().map(|d| d.get_io_channel()) {
            Some(Ok(ch)) => ch,
            _ => continue,
        };
        tried += 1;
        let sb = build(array, m.slot).encode();
        let mut buf = keel_reactor::pool::alloc_wait(area_bytes(array.block_size))
            .await
            .map_err(|e| BdevError::NoMem(format!("superblock buffer: {e}")))?;
        buf.as_mut_slice().fill(0);
        buf.as_mut_slice()[..sb.len()].copy_from_slice(&sb);
        match io_once(&ch, true, &mut buf, 0).await {
            IoStatus::Success => written += 1,
            s => log::error!(
                "raid {}: superblock write to slot {} failed ({s:?})",
                array.name,
                m.slot
            ),
        }
    }
    if tried > 0 && written == 0 {
        return Err(BdevError::Os {
            context: format!("raid {}: writing superblocks", array.name),
            message: "no member took the superblock".into(),
            errno: libc::EIO,
        });
    }
    log::debug!(
        "raid {}: superblock generation {} written to {written} member(s)",
        array.name,
        array.generation.load(Ordering::Acquire)
    );
    Ok(())
}

/// Persist a state change soon (from any core that is a reactor).
pub(crate) fn schedule_write(array: &Arc<RaidArray>) {
    if keel_reactor::current_core().is_none() {
        return;
    }
    lock(&DIRTY)
        .get_or_insert_with(HashSet::new)
        .insert(array.id);
    if !lock(&WRITERS)
        .get_or_insert_with(HashSet::new)
        .insert(array.id)
    {
        return; // the running writer will see the dirty mark
    }
    let array = Arc::clone(array);
    keel_reactor::spawn_local(async move {
        loop {
            let dirty = lock(&DIRTY)
                .get_or_insert_with(HashSet::new)
                .remove(&array.id);
            if !dirty || array.stopping.load(Ordering::Acquire) {
                break;
            }
            // A pass that starts while marking writes `clean = false` (set before marking).
            let marking = array.dirty.load(Ordering::Acquire) == DIRTY_MARKING;
            if let Err(e) = write_all(&array).await {
                log::error!("raid {}: {e}", array.name);
            }
            if marking {
                array.dirty.store(DIRTY_ON_DISK, Ordering::Release);
                log::info!("raid {}: marked dirty (writes in progress)", array.name);
            }
        }
        if array.dirty.load(Ordering::Acquire) == DIRTY_MARKING {
            // Stopped before the mark went out: let waiting writes go (the array is going).
            array.dirty.store(DIRTY_ON_DISK, Ordering::Release);
        }
        lock(&WRITERS)
            .get_or_insert_with(HashSet::new)
            .remove(&array.id);
    });
}

/// Start writing `clean = false` to every member before the first write (from the data path,
/// on a reactor core; cheap when already under way). Writes wait until
/// [`RaidArray::write_ready`].
pub(crate) fn mark_dirty(array: &Arc<RaidArray>) {
    if array
        .dirty
        .compare_exchange(
            DIRTY_CLEAN,
            DIRTY_MARKING,
            Ordering::AcqRel,
            Ordering::Acquire,
        )
        .is_ok()
    {
        array.clean.store(false, Ordering::Release);
        schedule_write(array);
    }
}

/// Whether no superblock writer task of array `id` is running.
fn writer_idle(id: u64) -> bool {
    !lock(&WRITERS)
        .get_or_insert_with(HashSet::new)
        .contains(&id)
}

/// Yield to the reactor until `done()` (control path: waits of a few milliseconds at most).
pub(crate) async fn yield_until(mut done: impl FnMut() -> bool) {
    poll_fn(|cx| {
        if done() {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Zero the superblock area (block 0 on) of the bdev behind `ch`; whether it took it.
pub(crate) async fn wipe(ch: &IoChannel, array: &str, member: &str) -> bool {
    let bs = ch.bdev().info().block_size;
    let mut buf = match keel_reactor::pool::alloc_wait(area_bytes(bs)).await {
        Ok(b) => b,
        Err(e) => {
            log::error!("raid {array}: clearing the superblock of {member}: buffer: {e}");
            return false;
        }
    };
    buf.as_mut_slice().fill(0);
    match io_once(ch, true, &mut buf, 0).await {
        IoStatus::Success => {
            log::info!("raid {array}: superblock of {member} cleared");
            true
        }
        s => {
            log::error!("raid {array}: clearing the superblock of {member} failed ({s:?})");
            false
        }
    }
}

/// `bdev_raid_delete` with `clear_sb`: zero the superblock of every member still open (also
/// failed ones: their superblock names the array too).
pub(crate) async fn wipe_all(array: &Arc<RaidArray>) {
    // A superblock write still in flight would land after the wipe.
    let id = array.id;
    yield_until(|| writer_idle(id)).await;
    for m in &array.members {
        let ch = match lock(&m.desc).as_ref().map(|d| d.get_io_channel()) {
            Some(Ok(ch)) => ch,
            Some(Err(e)) => {
                log::error!(
                    "raid {}: clearing the superblock of slot {}: channel: {e}",
                    array.name,
                    m.slot
                );
                continue;
            }
            None => continue,
        };
        let name = ch.bdev().name().to_string();
        wipe(&ch, &array.name, &name).await;
    }
}

/// Clean shutdown of a destructed array (no host I/O is left): wait for the background process
/// and the superblock writer to stop, write `clean = true` (unless a resync is still due) or,
/// when the delete asked for `clear_sb`, wipe the superblocks; then release the members.
pub(crate) async fn shutdown(array: &Arc<RaidArray>) {
    let id = array.id;
    yield_until(|| lock(&array.process).is_none() && writer_idle(id)).await;
    if array.superblock && array.clear_sb.load(Ordering::Acquire) {
        wipe_all(array).await;
    } else if array.superblock && !array.is_offline() {
        let clean = !array.resync_pending.load(Ordering::Acquire);
        array.clean.store(clean, Ordering::Release);
        match write_all(array).await {
            Ok(()) if clean => log::info!("raid {}: marked clean", array.name),
            Ok(()) => log::warn!(
                "raid {}: stopped with its resync unfinished: left dirty, the resync restarts at the next assembly",
                array.name
            ),
            Err(e) => log::error!("raid {}: clean shutdown: {e}", array.name),
        }
    }
    for m in &array.members {
        drop(lock(&m.desc).take());
    }
}
