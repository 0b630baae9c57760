//! HOT PATH: raid5 reads, one operation per stripe touched. With every member of the stripe
//! usable, each strip piece is read straight into the host's buffers (no token: a data block is
//! written by exactly one member I/O, so the read sees what that member holds, old or new).
//! When the member holding a piece is gone (or fails the read), the operation takes the stripe
//! token — so no write of the stripe is half done — reads the same rows from every other member
//! and rebuilds the piece by XOR into the host's buffers.

use crate::channel::{Child, Plan, PlanResult, Src, StripeOp, PBUF};
use crate::raid5::write::{gone_member, view, Seg};
use crate::xor::xor_gen;
use keel_bdev::IoStatus;

/// Plan a stripe read.
pub(crate) fn plan(op: &mut StripeOp) -> PlanResult {
    let seg = Seg::of(op);
    let a = &op.chan().array;
    let g = a.geo;
    if a.is_offline() {
        return PlanResult::Fail(IoStatus::IoError);
    }
    let Ok(gone) = gone_member(op, &seg) else {
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
        let (lo, hi) = seg.touched(op, i);
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
                    lba: seg.lba(op, lo),
                    blocks: hi - lo,
                    src: Src::Buf(other as usize, 0),
                });
            }
            continue;
        }
        op.push_read(Child {
            member: m,
            lba: seg.lba(op, lo),
            blocks: hi - lo,
            src: Src::Host(seg.host_off(op, i, lo)),
        });
    }
    PlanResult::Ready
}

/// Rebuild the gone piece into the host's buffers.
pub(crate) fn compute(op: &mut StripeOp) {
    if op.plan != Plan::ReconRead {
        return;
    }
    let seg = Seg::of(op);
    let g = op.chan().array.geo;
    let bytes = (op.p1 - op.p0) as usize * seg.bs;
    let out = &mut view(op, PBUF)[..bytes];
    let mut srcs: [&[u8]; crate::array::MAX_MEMBERS] = [&[]; crate::array::MAX_MEMBERS];
    let mut n = 0;
    for m in 0..g.members {
        if m != op.missing {
            srcs[n] = &view(op, m as usize)[..bytes];
            n += 1;
        }
    }
    xor_gen(out, &srcs[..n]);
    let i = g.data_index(op.unit, op.missing).unwrap_or(0);
    let mut at = 0;
    crate::geometry::for_each_piece(op.host_iovs(), seg.host_off(op, i, op.p0), bytes, |p, l| {
        // SAFETY: `p..p+l` lies in the host's read buffer, which this read owns until it
        // completes; the source is a pool buffer, so the two never overlap.
        unsafe { std::ptr::copy_nonoverlapping(out[at..].as_ptr(), p, l) };
        at += l;
    });
}
