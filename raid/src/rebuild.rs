//! Background rebuild of one member, stripe by stripe (raid5) or region by region (raid1),
//! while host I/O goes on.
//!
//! Each unit is a stripe operation ([`crate::channel::StripeOp`], kind `Rebuild`) holding the
//! unit's stripe token: it reads the unit from the other members, XORs (raid5) or copies
//! (raid1), writes the target, and moves the target's watermark past the unit before giving
//! the token back. Host writes take the same token and write the target only below the
//! watermark, so a unit is never rebuilt from data a host write is changing.
//!
//! The task runs on the core that started it, `process_window_size_kb` worth of units at a
//! time, and sleeps between windows to stay under `process_max_bandwidth_mb_sec`.

use crate::array::{MemberState, ProcessInfo, RaidArray};
use crate::channel::{
    run, split_bufs, Chan, Child, OpKind, Phase, PlanResult, Src, StripeOp, PBUF,
};
use crate::level::Resync;
use crate::xor::xor_gen;
use keel_bdev::IoStatus;
use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Poll, Waker};

/// Bytes of member data rebuilt per window (`bdev_raid_set_options process_window_size_kb`).
static WINDOW_KB: AtomicU64 = AtomicU64::new(1024);
/// Rebuild bandwidth limit in MiB/s, 0 = none (`process_max_bandwidth_mb_sec`).
static MAX_MB_SEC: AtomicU64 = AtomicU64::new(0);

/// Set the rebuild options (each `None` keeps its value). Errors on a zero window.
pub fn set_options(window_kb: Option<u64>, max_mb_sec: Option<u64>) -> Result<(), String> {
    if window_kb == Some(0) {
        return Err("process_window_size_kb must be greater than 0".into());
    }
    if let Some(w) = window_kb {
        WINDOW_KB.store(w, Ordering::Relaxed);
    }
    if let Some(b) = max_mb_sec {
        MAX_MB_SEC.store(b, Ordering::Relaxed);
    }
    log::info!(
        "raid: process window {} KiB, max bandwidth {} MiB/s (0 = unlimited)",
        WINDOW_KB.load(Ordering::Relaxed),
        MAX_MB_SEC.load(Ordering::Relaxed)
    );
    Ok(())
}

/// Current `(process_window_size_kb, process_max_bandwidth_mb_sec)`.
pub fn options() -> (u64, u64) {
    (
        WINDOW_KB.load(Ordering::Relaxed),
        MAX_MB_SEC.load(Ordering::Relaxed),
    )
}

/// Checks common to both rebuild plans; the unit's end (member blocks) and its bytes.
fn unit_of(chan: &Chan, op: &StripeOp) -> Result<(u64, usize), PlanResult> {
    let a = &chan.array;
    let s = a.geo.strip_blocks;
    if a.is_offline() || !chan.has_member(op.target) {
        return Err(PlanResult::Fail(IoStatus::IoError));
    }
    Ok(((op.unit + 1) * s, s as usize * a.block_size as usize))
}

/// Plan one rebuild unit of a parity level (raid5): read the stripe's strip from every other
/// member; the target's is their XOR ([`compute_parity`]).
pub(crate) fn plan_parity(chan: &Chan, op: &mut StripeOp) -> PlanResult {
    let (end, bytes) = match unit_of(chan, op) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let a = &chan.array;
    let s = a.geo.strip_blocks;
    let t = op.target;
    for m in &a.members {
        if m.slot == t {
            continue;
        }
        if !m.usable_below(end) || !chan.has_member(m.slot) {
            return PlanResult::Fail(IoStatus::IoError);
        }
        if !op.alloc_buf(m.slot as usize, bytes) {
            return PlanResult::NoBuffer;
        }
        op.push_read(Child {
            member: m.slot,
            lba: op.unit * s,
            blocks: s,
            src: Src::Buf(m.slot as usize, 0),
        });
    }
    if !op.alloc_buf(PBUF, bytes) {
        return PlanResult::NoBuffer;
    }
    op.push_write(Child {
        member: t,
        lba: op.unit * s,
        blocks: s,
        src: Src::Buf(PBUF, 0),
    });
    PlanResult::Ready
}

/// Plan one rebuild unit of a mirror level (raid1): copy the region from one usable member.
pub(crate) fn plan_copy(chan: &Chan, op: &mut StripeOp) -> PlanResult {
    let (end, bytes) = match unit_of(chan, op) {
        Ok(u) => u,
        Err(r) => return r,
    };
    let a = &chan.array;
    let s = a.geo.strip_blocks;
    let t = op.target;
    let Some(m) = a
        .members
        .iter()
        .find(|m| m.slot != t && m.usable_below(end) && chan.has_member(m.slot))
    else {
        return PlanResult::Fail(IoStatus::IoError);
    };
    if !op.alloc_buf(m.slot as usize, bytes) {
        return PlanResult::NoBuffer;
    }
    op.push_read(Child {
        member: m.slot,
        lba: op.unit * s,
        blocks: s,
        src: Src::Buf(m.slot as usize, 0),
    });
    op.push_write(Child {
        member: t,
        lba: op.unit * s,
        blocks: s,
        src: Src::Buf(m.slot as usize, 0),
    });
    PlanResult::Ready
}

/// raid5: the target's strip is the XOR of the others.
pub(crate) fn compute_parity(chan: &Chan, op: &mut StripeOp) {
    let members = chan.array.geo.members;
    let target = op.target as usize;
    let (out, bufs) = split_bufs(&mut op.bufs, PBUF);
    let mut srcs: [&[u8]; crate::array::MAX_MEMBERS] = [&[]; crate::array::MAX_MEMBERS];
    let mut n = 0;
    for m in 0..members as usize {
        if m != target {
            srcs[n] = &bufs[m];
            n += 1;
        }
    }
    xor_gen(out, &srcs[..n]);
}

/// The unit is on the target: move its watermark (the token is still held).
pub(crate) fn written(chan: &Chan, op: &mut StripeOp) {
    let a = &chan.array;
    let m = &a.members[op.target as usize];
    m.set_rebuilt((op.unit + 1) * a.geo.strip_blocks);
}

/// Completions of one window of units.
#[derive(Default)]
struct Window {
    left: Cell<u32>,
    failed: Cell<bool>,
    waker: Cell<Option<Waker>>,
}

fn unit_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the address of the task's `Window`, alive until its units are done.
    let w = unsafe { &*(ctx as *const Window) };
    if status != IoStatus::Success {
        w.failed.set(true);
    }
    w.left.set(w.left.get() - 1);
    if let Some(k) = w.waker.take() {
        k.wake();
    }
}

/// A background process over the whole array.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Job {
    /// Rebuild this slot (`Rebuilding`, from its watermark).
    Rebuild(u32),
    /// Resync parity (raid5) or mirrors (raid1: copy `source` over the other active members).
    Resync { source: u32 },
}

/// Start the next background process of `array` on the calling core, if none is running: a
/// member waiting in `Rebuilding` (lowest slot first), else a pending resync once every member
/// that can be is active.
pub(crate) fn kick(array: &Arc<RaidArray>) {
    if array.stopping.load(Ordering::Acquire) || array.is_offline() {
        return;
    }
    let mut process = crate::array::lock(&array.process);
    if process.is_some() {
        return;
    }
    let job = if let Some(m) = array
        .members
        .iter()
        .find(|m| m.state() == MemberState::Rebuilding)
    {
        Job::Rebuild(m.slot)
    } else if array.resync_pending.load(Ordering::Acquire) {
        let ok = array
            .level()
            .module()
            .resync
            .is_some_and(|r| r.can_run(array.active_members(), array.members.len()));
        let source = array
            .members
            .iter()
            .find(|m| m.state() == MemberState::Active);
        match (ok, source) {
            (true, Some(m)) => Job::Resync { source: m.slot },
            _ => return, // waits for members to come back (or stays pending)
        }
    } else {
        return;
    };
    let target = match job {
        Job::Rebuild(t) => t,
        Job::Resync { source } => source,
    };
    *process = Some(ProcessInfo {
        target_slot: target,
        done_blocks: array.members[target as usize].rebuilt_blocks(),
        total_blocks: array.geo.member_blocks,
        rate_blocks_per_sec: 0.0,
        resync: matches!(job, Job::Resync { .. }),
    });
    drop(process);
    if let Job::Resync { .. } = job {
        array.members[target as usize].set_rebuilt(0);
    }
    let array = Arc::clone(array);
    keel_reactor::spawn_local(async move {
        let ok = run_job(&array, job).await;
        *crate::array::lock(&array.process) = None;
        let stopping = array.stopping.load(Ordering::Acquire);
        match job {
            Job::Rebuild(target) => {
                let m = &array.members[target as usize];
                if ok && m.state() == MemberState::Rebuilding {
                    m.set_state(MemberState::Active);
                    array.update_offline();
                    array.epoch.fetch_add(1, Ordering::AcqRel);
                    array.state_changed();
                    log::info!(
                        "raid {}: rebuild of slot {target} ({}) complete",
                        array.name,
                        m.bdev_name().unwrap_or_default()
                    );
                } else if !stopping {
                    log::error!(
                        "raid {}: rebuild of slot {target} stopped at {} of {} blocks",
                        array.name,
                        m.rebuilt_blocks(),
                        array.geo.member_blocks
                    );
                }
            }
            Job::Resync { .. } if ok => {
                array.resync_pending.store(false, Ordering::Release);
                array.resynced_stripes.store(u64::MAX, Ordering::Release);
                log::info!(
                    "raid {}: resync complete, parity/mirrors consistent",
                    array.name
                );
            }
            Job::Resync { .. } => {
                if !stopping {
                    log::error!(
                        "raid {}: resync stopped (a member failed); parity/mirrors not yet consistent",
                        array.name
                    );
                }
            }
        }
        if ok && !stopping {
            kick(&array);
        }
    });
}

/// The stripe operations of unit `unit`: `(kind, target)` pairs.
fn unit_ops(array: &RaidArray, job: Job, unit: u64, out: &mut Vec<(OpKind, u32)>) {
    out.clear();
    match job {
        Job::Rebuild(t) => out.push((OpKind::Rebuild, t)),
        Job::Resync { source } => match array.level().module().resync {
            Some(Resync::Parity) => out.push((OpKind::Resync, array.geo.parity_member(unit))),
            Some(Resync::Mirror) | None => out.extend(
                array
                    .members
                    .iter()
                    .filter(|m| m.slot != source && m.state() == MemberState::Active)
                    .map(|m| (OpKind::Resync, m.slot)),
            ),
        },
    }
}

#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): the rebuild job's loop and its exits
async fn run_job(array: &Arc<RaidArray>, job: Job) -> bool {
    let chan = Chan::new(Arc::clone(array));
    let s = array.geo.strip_blocks;
    let total = array.geo.member_blocks;
    let unit_bytes = s * u64::from(array.block_size);
    let (what, start_blocks) = match job {
        Job::Rebuild(t) => (
            format!("rebuild of slot {t}"),
            array.members[t as usize].rebuilt_blocks(),
        ),
        Job::Resync { .. } => ("resync".to_string(), 0),
    };
    let rate = keel_reactor::tick_rate().max(1);
    let t0 = keel_reactor::ticks();
    let mut unit = start_blocks / s;
    let units = total / s;
    let mut last_log = 0u64;
    log::info!(
        "raid {}: {what} started at block {start_blocks} of {total}",
        array.name
    );
    let win = Rc::new(Window::default());
    let mut per_unit = Vec::with_capacity(crate::array::MAX_MEMBERS);
    while unit < units {
        if array.stopping.load(Ordering::Acquire) {
            return false;
        }
        if let Job::Rebuild(t) = job {
            if array.members[t as usize].state() != MemberState::Rebuilding {
                return false;
            }
        }
        chan.check_epoch();
        let (window_kb, max_mb) = options();
        unit_ops(array, job, unit, &mut per_unit);
        let ops_per_unit = per_unit.len().max(1) as u64;
        let per_window = (window_kb * 1024 / unit_bytes).clamp(
            1,
            (crate::channel::OPS_PER_CHANNEL as u64 / 2 / ops_per_unit).max(1),
        );
        let n = per_window.min(units - unit);
        let mut issued = 0u32;
        win.left.set(u32::MAX);
        for u in unit..unit + n {
            unit_ops(array, job, u, &mut per_unit);
            for &(kind, target) in &per_unit {
                let Some(p) = chan.take_op(kind) else {
                    win.failed.set(true);
                    break;
                };
                // SAFETY: just taken from the free list; nobody else refers to it.
                let op = unsafe { &mut *p };
                op.unit = u;
                op.target = target;
                op.set_phase(Phase::Token);
                op.done_cb = Some(unit_done);
                op.done_ctx = Rc::as_ptr(&win) as usize;
                issued += 1;
                run(p);
            }
        }
        // Every op is out: completions count down from here.
        win.left
            .set(issued - (u32::MAX - win.left.get()).min(issued));
        // Wait for the window, driving parked/stalled units ourselves.
        poll_fn(|cx| {
            chan.poll_work();
            if win.left.get() == 0 {
                Poll::Ready(())
            } else {
                win.waker.set(Some(cx.waker().clone()));
                cx.waker().wake_by_ref();
                Poll::Pending
            }
        })
        .await;
        if win.failed.replace(false) {
            return false;
        }
        unit += n;
        if let Job::Resync { .. } = job {
            if array.level().module().resync == Some(Resync::Parity) {
                array.resynced_stripes.store(unit, Ordering::Release);
            }
        }
        let done = unit * s;
        let elapsed = keel_reactor::ticks().wrapping_sub(t0).max(1);
        let bytes = (done - start_blocks) * u64::from(array.block_size);
        let secs = elapsed as f64 / rate as f64;
        let bps = bytes as f64 / secs;
        if let Some(p) = crate::array::lock(&array.process).as_mut() {
            p.done_blocks = done;
            p.rate_blocks_per_sec = bps / f64::from(array.block_size);
        }
        let pct = done * 100 / total.max(1);
        if pct >= last_log + 10 {
            last_log = pct - pct % 10;
            let eta = (total - done) as f64 * f64::from(array.block_size) / bps.max(1.0);
            log::info!(
                "raid {}: {what}: {pct}% ({:.1} MiB/s, ETA {eta:.1} s)",
                array.name,
                bps / 1048576.0
            );
        }
        if max_mb > 0 {
            // Sleep until the average rate is back under the limit.
            let allowed_secs = bytes as f64 / (max_mb as f64 * 1048576.0);
            let until = t0.wrapping_add((allowed_secs * rate as f64) as u64);
            poll_fn(|cx| {
                chan.poll_work();
                if keel_reactor::ticks() >= until || array.stopping.load(Ordering::Acquire) {
                    Poll::Ready(())
                } else {
                    cx.waker().wake_by_ref();
                    Poll::Pending
                }
            })
            .await;
        }
    }
    true
}
