//! HOT PATH: raid5 reads.
//!
//! Direct ([`submit`]): each strip piece whose member is active goes straight from that member
//! into the host's buffers — no stripe operation, no token, nothing planned (a data block is
//! written by exactly one member I/O, so the read sees what that member holds, old or new;
//! never a mix within a block). Reads and overlapping writes need no order between them.
//!
//! Through stripe operations ([`plan`], [`compute`]), one per stripe touched, from the first
//! piece whose member is not active (gone, failed, rebuilding) to the end of the read — or for
//! the whole read again once a direct piece failed (the operations fail the member if it fails
//! again, and rebuild its pieces from parity). The operation reads the pieces of usable members
//! straight into the host's buffers; when the member holding a piece is gone (or fails the
//! read), the operation takes the stripe token — so no write of the stripe is half done —
//! reads the same rows from every other member and rebuilds the piece by XOR into the host's
//! buffers.

use crate::array::MemberState;
use crate::channel::{
    child_done, hctx, split_bufs, Chan, Child, HostRaw, OpKind, Plan, PlanResult, ReadPath, Src,
    StripeOp, PBUF,
};
use crate::dispatch::{host_iovs, ops, with_io};
use crate::raid5::write::{gone_member, Seg};
use crate::xor::xor_gen;
use keel_bdev::{IoStatus, IoType, IoVec, IovCursor, SubmitError, MAX_IOVS};

/// The read step of raid5 (a host read in raw form, progress in `HostCtx::next`): direct
/// pieces while their members are active, then stripe operations. False when it must wait (a
/// member descriptor or a free operation).
pub(crate) fn submit(chan: &Chan, raw: HostRaw) -> bool {
    let (start, num, mut done, path) = with_io(raw, |io| {
        let (start, num) = (io.offset_blocks(), io.num_blocks());
        let c = hctx(io);
        (start, num, c.next, c.read_path)
    });
    match path {
        ReadPath::Direct => {}
        ReadPath::ViaOps => return ops(chan, raw, OpKind::Read),
        // A direct piece failed while the rest waited: nothing more goes out, the whole read
        // goes again once what is out is in.
        ReadPath::Retry => return true,
    }
    let a = &chan.array;
    let geo = a.geo;
    let bs = a.block_size as usize;
    // SAFETY: this step holds the host I/O's dispatch bias until it returns: the I/O stays in
    // flight while the slice is used (member I/Os copy what they take).
    let host_iovs: &[IoVec] = unsafe { host_iovs(raw) };
    let mut cur = IovCursor::at(host_iovs, done as usize * bs);
    while done < num {
        let e = geo.map_parity_striped(start + done, num - done);
        let active = a.members[e.member as usize].state() == MemberState::Active;
        if !active || !chan.has_member(e.member) {
            // Degraded, rebuilding or going away: the current path from here on.
            with_io(raw, |io| {
                let c = hctx(io);
                c.next = done;
                c.read_path = ReadPath::ViaOps;
            });
            return ops(chan, raw, OpKind::Read);
        }
        let mut iovs = [IoVec::EMPTY; MAX_IOVS];
        let len = e.blocks as usize * bs;
        // A list shorter than the I/O goes down empty (the member refuses it).
        let n = match cur.split_into(len, &mut iovs) {
            (n, bytes) if bytes == len => n,
            _ => 0,
        };
        with_io(raw, |io| hctx(io).pending += 1);
        let r = chan.submit_member(
            e.member,
            IoType::Read,
            &iovs[..n],
            e.member_lba,
            e.blocks,
            direct_done,
            raw.ctx(),
        );
        match r {
            Ok(()) => {}
            Err(err) => {
                with_io(raw, |io| {
                    let c = hctx(io);
                    assert!(c.pending > 1);
                    c.pending -= 1;
                    c.next = done;
                    if err != SubmitError::NoDescriptor {
                        // The operations fail the member and rebuild the piece.
                        c.read_path = ReadPath::ViaOps;
                    }
                });
                if err == SubmitError::NoDescriptor {
                    chan.wait_descriptor(e.member);
                    return false;
                }
                return ops(chan, raw, OpKind::Read);
            }
        }
        done += e.blocks;
    }
    with_io(raw, |io| hctx(io).next = done);
    true
}

/// A direct piece completed. A failed piece does not fail the host read: the read goes again
/// through stripe operations once every piece is in.
fn direct_done(ctx: usize, status: IoStatus) {
    // SAFETY: `direct_done` is only given (by `submit`) with `HostRaw::ctx` of the host read
    // whose counted direct piece this is; it stays in flight until that count goes down.
    let raw = unsafe { HostRaw::from_ctx(ctx) };
    if status != IoStatus::Success {
        with_io(raw, |io| hctx(io).read_path = ReadPath::Retry);
    }
    child_done(raw, IoStatus::Success);
}

/// Plan a stripe read.
pub(crate) fn plan(chan: &Chan, op: &mut StripeOp) -> PlanResult {
    let seg = Seg::of(chan, op);
    let a = &chan.array;
    let g = a.geo;
    if a.is_offline() {
        return PlanResult::Fail(IoStatus::IoError);
    }
    let Ok(gone) = gone_member(chan, &seg) else {
        return PlanResult::Fail(IoStatus::IoError);
    };
    let stripe = op.unit;
    let gone_index = gone.and_then(|m| g.data_index(stripe, m));
    let needs_recon = gone_index.is_some_and(|i| (seg.first..=seg.last).contains(&i));
    if needs_recon && !op.holds_token {
        return PlanResult::NeedToken;
    }
    op.missing = gone.unwrap_or(u32::MAX);
    op.plan = if needs_recon {
        Plan::ReconRead
    } else {
        Plan::DirectRead
    };
    for i in seg.first..=seg.last {
        let m = g.data_member(stripe, i);
        let (lo, hi) = seg.touched(i);
        if m == op.missing {
            // Rebuild rows lo..hi from every other member.
            op.p0 = lo;
            op.p1 = hi;
            let bytes = (hi - lo) as usize * seg.bs;
            if !op.alloc_buf(PBUF, bytes) {
                return PlanResult::NoBuffer;
            }
            for other in 0..g.members {
                if other == m {
                    continue;
                }
                if !op.alloc_buf(other as usize, bytes) {
                    return PlanResult::NoBuffer;
                }
                op.push_read(Child {
                    member: other,
                    lba: seg.lba(lo),
                    blocks: hi - lo,
                    src: Src::Buf(other as usize, 0),
                });
            }
            continue;
        }
        op.push_read(Child {
            member: m,
            lba: seg.lba(lo),
            blocks: hi - lo,
            src: Src::Host(seg.host_off(i, lo)),
        });
    }
    PlanResult::Ready
}

/// Rebuild the gone piece into the host's buffers.
pub(crate) fn compute(chan: &Chan, op: &mut StripeOp) {
    if op.plan != Plan::ReconRead {
        return;
    }
    let seg = Seg::of(chan, op);
    let g = chan.array.geo;
    let bytes = (op.p1 - op.p0) as usize * seg.bs;
    let missing = op.missing;
    let (out, bufs) = split_bufs(&mut op.bufs, PBUF);
    let out = &mut out[..bytes];
    let mut srcs: [&[u8]; crate::array::MAX_MEMBERS] = [&[]; crate::array::MAX_MEMBERS];
    let mut n = 0;
    for m in 0..g.members {
        if m != missing {
            srcs[n] = &bufs[m as usize][..bytes];
            n += 1;
        }
    }
    xor_gen(out, &srcs[..n]);
    let i = g.data_index(op.unit, missing).unwrap_or(0);
    let mut cur = IovCursor::at(op.host.iovs(), seg.host_off(i, op.p0));
    // SAFETY: the host's read buffers are valid for writes and owned by this read until it
    // completes (nobody else touches them meanwhile); the source is a pool buffer, so the two
    // never overlap.
    let copied = unsafe { cur.copy_from_slice(out) };
    debug_assert_eq!(copied, bytes);
}
