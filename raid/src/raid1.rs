//! HOT PATH: raid1. Reads go to one member, round-robin over the usable ones, straight into the
//! host's buffers; a failed read marks the member failed and is retried on another. Writes go
//! to every usable member (one region operation per region, so a rebuild copying the region
//! never interleaves with them); a member that fails a write is marked failed and the write
//! succeeds while one member took it. Unmap and write-zeroes go to every usable member the same
//! way.

use crate::channel::{
    child_done, Chan, Child, PlanResult, Src, StripeOp, CHAN, MEMBER, PENDING, TRIED,
};
use crate::dispatch::with_io;
use keel_bdev::{IoRef, IoStatus};

/// Start a host read.
pub(crate) fn read(chan: &Chan, mut io: IoRef) {
    io.module_ctx()[PENDING] += 1; // the member read
    let raw = io.into_raw();
    if !send_read(chan, raw) {
        child_done(raw, IoStatus::IoError);
    }
    child_done(raw, IoStatus::Success); // the dispatch bias
}

/// Send the read to the next usable member not tried yet; false when there is none.
fn send_read(chan: &Chan, raw: usize) -> bool {
    let (start, num, tried) = with_io(raw, |io| {
        (io.offset_blocks(), io.num_blocks(), io.module_ctx()[TRIED])
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
            let c = io.module_ctx();
            c[TRIED] |= 1 << m;
            c[MEMBER] = u64::from(m);
        });
        let iovs = with_io(raw, |io| {
            let v = io.iovs();
            // SAFETY: the iovec array lives in the in-flight host descriptor.
            unsafe { std::slice::from_raw_parts(v.as_ptr(), v.len()) }
        });
        match chan.submit_member(m, keel_bdev::IoType::Read, iovs, start, num, read_done, raw) {
            Ok(()) => return true,
            Err(keel_bdev::SubmitError::NoDescriptor) => {
                // Back-pressure: the channel sends it again from its poll.
                with_io(raw, |io| io.module_ctx()[TRIED] &= !(1 << m));
                // SAFETY: `raw` is this in-flight host read; the queue holds it until retried.
                chan.wait_for_member(unsafe { IoRef::from_raw(raw) });
                return true;
            }
            Err(e) => {
                a.fail_member(m, &format!("read submission failed: {e}"));
            }
        }
    }
    false
}

/// Send again a read that waited for a member descriptor ([`Chan::wait_for_member`]).
pub(crate) fn retry_read(chan: &Chan, io: IoRef) {
    let raw = io.into_raw();
    if !send_read(chan, raw) {
        child_done(raw, IoStatus::IoError);
    }
}

/// A member read completed.
fn read_done(raw: usize, status: IoStatus) {
    if status == IoStatus::Success {
        child_done(raw, status);
        return;
    }
    let (chan, m) = with_io(raw, |io| {
        let c = io.module_ctx();
        (c[CHAN] as usize as *const Chan, c[MEMBER] as u32)
    });
    // SAFETY: the channel outlives its in-flight host I/Os.
    let chan = unsafe { &*chan };
    chan.array
        .fail_member(m, &format!("read failed ({status:?})"));
    if !send_read(chan, raw) {
        child_done(raw, IoStatus::IoError);
    }
}

/// Plan a region write (or unmap, or write-zeroes): every usable member gets the host's data
/// (or does the same).
pub(crate) fn plan_write(op: &mut StripeOp) -> PlanResult {
    let chan = op.chan();
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
