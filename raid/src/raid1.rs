//! HOT PATH: raid1. Reads go to one member, round-robin over the usable ones, straight into the
//! host's buffers; a failed read marks the member failed and is retried on another. Writes go
//! to every usable member (one region operation per region, so a rebuild copying the region
//! never interleaves with them); a member that fails a write is marked failed and the write
//! succeeds while one member took it. Unmap and write-zeroes go to every usable member the same
//! way.

use crate::caps::Caps;
use crate::channel::{child_done, hctx, Chan, Child, HostRaw, PlanResult, Src, StripeOp};
use crate::dispatch::{host_iovs, with_io, write_ops};
use crate::level::{LevelModule, OpFns, RaidLevel, Resync, Strip, StripeOpFns};
use keel_bdev::IoStatus;

/// raid1 region (serialization and rebuild unit), bytes.
pub(crate) const REGION_BYTES: u64 = 64 * 1024;

/// raid1 in the level table: every member holds every block; reads go to one member, writes
/// to all through region operations.
pub(crate) static RAID1: LevelModule = LevelModule {
    level: RaidLevel::Raid1,
    name: "raid1",
    aliases: &["1"],
    code: 2,
    min_members: 2,
    redundancy: |n| n.saturating_sub(1),
    data_members: |_| 1,
    stripe_unit: false,
    map: None,
    strip: Strip::Region {
        bytes: REGION_BYTES,
    },
    caps: Caps::of_plain,
    read,
    write: write_ops,
    ops: Some(StripeOpFns {
        write: OpFns {
            plan: plan_write,
            compute: None,
        },
        read: None,
        rebuild: OpFns {
            plan: crate::rebuild::plan_copy,
            compute: None,
        },
    }),
    resync: Some(Resync::Mirror),
};

/// What became of a read sent to a member.
enum Sent {
    /// It is on its way.
    Yes,
    /// The member had no free descriptor: wait for one ([`Chan::wait_descriptor`] asked).
    Wait,
    /// No usable member is left to try.
    NoMember,
}

/// The read step (a host read in raw form): false when it waits for a member descriptor.
fn read(chan: &Chan, raw: HostRaw) -> bool {
    with_io(raw, |io| hctx(io).pending += 1); // the member read
    match send_read(chan, raw) {
        Sent::Yes => {}
        Sent::Wait => {
            with_io(raw, |io| hctx(io).pending -= 1);
            return false;
        }
        Sent::NoMember => child_done(raw, IoStatus::IoError),
    }
    true
}

/// Send the read to the next usable member not tried yet; false when there is none.
fn send_read(chan: &Chan, raw: HostRaw) -> Sent {
    let (start, num, tried) = with_io(raw, |io| {
        (io.offset_blocks(), io.num_blocks(), hctx(io).tried)
    });
    let a = &chan.array;
    let n = a.members.len() as u32;
    let end = start + num;
    let first = chan.rr.get();
    chan.rr.set(first.wrapping_add(1));
    for k in 0..n {
        let m = (first + k) % n;
        if tried & (1 << m) != 0 || !a.members[m as usize].usable_below(end) {
            continue;
        }
        with_io(raw, |io| {
            let c = hctx(io);
            c.tried |= 1 << m;
            c.member = m;
        });
        // SAFETY: the read is in flight (the dispatch bias, or the failed member read not yet
        // counted down, holds it) for this call; the member I/O copies the iovecs.
        let iovs = unsafe { host_iovs(raw) };
        match chan.submit_member(
            m,
            keel_bdev::IoType::Read,
            iovs,
            start,
            num,
            read_done,
            raw.ctx(),
        ) {
            Ok(()) => return Sent::Yes,
            Err(keel_bdev::SubmitError::NoDescriptor) => {
                // Back-pressure: the channel sends it again once the member frees one.
                with_io(raw, |io| hctx(io).tried &= !(1 << m));
                chan.wait_descriptor(m);
                return Sent::Wait;
            }
            Err(e) => {
                a.fail_member(m, &format!("read submission failed: {e}"));
            }
        }
    }
    Sent::NoMember
}

/// A member read completed.
fn read_done(ctx: usize, status: IoStatus) {
    // SAFETY: `read_done` is only given (by `send_read`) with `HostRaw::ctx` of the host read
    // whose counted member read this is; it stays in flight until that count goes down.
    let raw = unsafe { HostRaw::from_ctx(ctx) };
    if status == IoStatus::Success {
        child_done(raw, status);
        return;
    }
    let (chan, m) = with_io(raw, |io| {
        let c = hctx(io);
        (c.chan, c.member)
    });
    // SAFETY: the channel outlives its in-flight host I/Os.
    let chan = unsafe { &*chan };
    chan.array
        .fail_member(m, &format!("read failed ({status:?})"));
    match send_read(chan, raw) {
        Sent::Yes => {}
        // The failed read's count stays: it is the bias of the step that resumes the read.
        // SAFETY: `raw` is this in-flight host read; the queue holds it until it resumes, and
        // no copy of `raw` is used after this.
        Sent::Wait => chan.wait_for_op(unsafe { raw.unpark() }),
        Sent::NoMember => child_done(raw, IoStatus::IoError),
    }
}

/// Plan a region write (or unmap, or write-zeroes): every usable member gets the host's data
/// (or does the same).
pub(crate) fn plan_write(chan: &Chan, op: &mut StripeOp) -> PlanResult {
    let a = &chan.array;
    if a.is_offline() {
        return PlanResult::Fail(IoStatus::IoError);
    }
    let region = a.geo.strip_blocks;
    let base = op.unit * region;
    let end = base + region;
    for m in &a.members {
        if !m.usable_below(end) {
            continue;
        }
        if !chan.has_member(m.slot) {
            a.fail_member(m.slot, "no channel to the member");
            continue;
        }
        op.push_write(Child {
            member: m.slot,
            lba: base + op.seg0,
            blocks: op.seg1 - op.seg0,
            src: Src::host(op.no_data, op.host_off),
        });
    }
    if op.nwrites == 0 {
        return PlanResult::Fail(IoStatus::IoError);
    }
    PlanResult::Ready
}
