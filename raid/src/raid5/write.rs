//! HOT PATH: raid5 writes of any size and alignment, one stripe operation per stripe touched,
//! each holding its stripe token.
//!
//! The data goes to the members straight from the host's iovecs; only parity is computed, by
//! SIMD XOR over the host's buffers (and old data read into pool buffers) into a pool buffer.
//! Parity covers the rows (in-strip blocks) `p0..p1` that the write touches in any strip.
//!
//! - Full stripe / reconstruct-write (RCW): read the untouched data rows, parity = XOR of all.
//! - Read-modify-write (RMW): read the touched old data and old parity,
//!   parity ^= old ^ new. The plan takes whichever reads fewer blocks.
//! - Unmap and write-zeroes (when the bdev offers them, `crate::caps`): whole stripes unmap or
//!   zero every member, parity included (`Plan::NoData`); partial stripes are planned as above
//!   with zero data, written by the members' write-zeroes, parity updated.
//! - Order: the data writes (straight from the host's buffers, needing nothing computed) go
//!   out first, then parity is computed while the members write them, then the parity write.
//! - Degraded: parity member gone → write data only; a gone data member not written → RMW; a gone
//!   member written in full over the rows → RCW; written in part → rebuild its old rows from
//!   parity first (ReconRcw).

use crate::channel::{split_bufs, Chan, Child, Plan, PlanResult, Src, StripeOp, PBUF};
use crate::xor::{xor_gen, xor_into};
use keel_bdev::{IoStatus, IoVec, IovCursor};

/// The shape of one stripe operation's segment (a copy: it borrows nothing).
pub(crate) struct Seg {
    /// The stripe.
    pub unit: u64,
    /// Data blocks `seg0..seg1` of the stripe.
    pub seg0: u64,
    pub seg1: u64,
    /// Byte offset of `seg0` in the host's iovecs.
    pub host_off: usize,
    /// Strip size in blocks.
    pub s: u64,
    /// Data strips per stripe.
    pub k: u64,
    /// First and last data strip touched.
    pub first: u64,
    pub last: u64,
    /// Parity member.
    pub pm: u32,
    /// Member blocks `..member_end` hold this stripe and every stripe before it.
    pub member_end: u64,
    /// Block size, bytes.
    pub bs: usize,
}

impl Seg {
    /// The segment of `op`.
    pub fn of(chan: &Chan, op: &StripeOp) -> Seg {
        let a = &chan.array;
        let g = &a.geo;
        let s = g.strip_blocks;
        assert!(op.seg0 < op.seg1 && op.seg1 <= g.data_members() * s);
        Seg {
            unit: op.unit,
            seg0: op.seg0,
            seg1: op.seg1,
            host_off: op.host_off,
            s,
            k: g.data_members(),
            first: op.seg0 / s,
            last: (op.seg1 - 1) / s,
            pm: g.parity_member(op.unit),
            member_end: (op.unit + 1) * s,
            bs: a.block_size as usize,
        }
    }

    /// Rows of data strip `i` the segment touches (empty when `i` is not touched).
    pub fn touched(&self, i: u64) -> (u64, u64) {
        if i < self.first || i > self.last {
            return (0, 0);
        }
        let lo = self.seg0.max(i * self.s) - i * self.s;
        let hi = self.seg1.min((i + 1) * self.s) - i * self.s;
        (lo, hi)
    }

    /// Byte offset in the host's iovecs of row `row` of data strip `i`.
    pub fn host_off(&self, i: u64, row: u64) -> usize {
        self.host_off + ((i * self.s + row - self.seg0) as usize) * self.bs
    }

    /// Member block of row `row` in this stripe.
    pub fn lba(&self, row: u64) -> u64 {
        self.unit * self.s + row
    }
}

/// Find the member of this stripe that cannot be used, failing members that have no channel.
/// `Err` when more than one is gone.
pub(crate) fn gone_member(chan: &Chan, seg: &Seg) -> Result<Option<u32>, ()> {
    let a = &chan.array;
    let mut gone = None;
    for m in &a.members {
        let mut ok = m.usable_below(seg.member_end);
        if ok && !chan.has_member(m.slot) {
            a.fail_member(m.slot, "no channel to the member");
            ok = false;
        }
        if !ok {
            if gone.is_some() {
                return Err(());
            }
            gone = Some(m.slot);
        }
    }
    Ok(gone)
}

/// Plan a stripe write.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): the stripe-write planner's cases
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
    let (mut p0, mut p1, mut touched) = (u64::MAX, 0, 0);
    for i in seg.first..=seg.last {
        let (lo, hi) = seg.touched(i);
        p0 = p0.min(lo);
        p1 = p1.max(hi);
        touched += hi - lo;
    }
    let rows = p1 - p0;
    op.p0 = p0;
    op.p1 = p1;
    let rbytes = rows as usize * seg.bs;
    let stripe = op.unit;
    if op.no_data.is_some() && op.seg0 == 0 && op.seg1 == seg.k * seg.s {
        // Unmap/write-zeroes of the whole stripe: zero data, zero parity, on every member
        // there is (a gone member's blocks are then zero by parity too).
        op.plan = Plan::NoData;
        op.missing = gone.unwrap_or(u32::MAX);
        let src = Src::host(op.no_data, 0);
        for m in 0..g.members {
            if m != op.missing {
                op.push_write(Child {
                    member: m,
                    lba: seg.lba(0),
                    blocks: seg.s,
                    src,
                });
            }
        }
        return PlanResult::Ready;
    }
    op.plan = match gone {
        Some(m) if m == seg.pm => Plan::DataOnly,
        Some(m) => {
            let i = g.data_index(stripe, m).unwrap_or(0);
            if i < seg.first || i > seg.last {
                Plan::Rmw
            } else if seg.touched(i) == (p0, p1) {
                Plan::Rcw
            } else {
                Plan::ReconRcw
            }
        }
        None => {
            let rmw = touched + rows;
            let rcw = seg.k * rows - touched;
            // Old parity of a stripe the resync has not reached is not trusted: RCW makes the
            // stripe consistent, RMW would carry a wrong parity forward.
            if rcw <= rmw || a.parity_unsynced(stripe) {
                Plan::Rcw
            } else {
                Plan::Rmw
            }
        }
    };
    op.missing = gone.unwrap_or(u32::MAX);
    let parity_src = match op.plan {
        Plan::Rmw => {
            for i in seg.first..=seg.last {
                let m = g.data_member(stripe, i) as usize;
                let (lo, hi) = seg.touched(i);
                if !op.alloc_buf(m, rbytes) {
                    return PlanResult::NoBuffer;
                }
                op.push_read(Child {
                    member: m as u32,
                    lba: seg.lba(lo),
                    blocks: hi - lo,
                    src: Src::Buf(m, (lo - p0) as usize * seg.bs),
                });
            }
            let pm = seg.pm as usize;
            if !op.alloc_buf(pm, rbytes) {
                return PlanResult::NoBuffer;
            }
            op.push_read(Child {
                member: seg.pm,
                lba: seg.lba(p0),
                blocks: rows,
                src: Src::Buf(pm, 0),
            });
            Src::Buf(pm, 0)
        }
        Plan::Rcw | Plan::ReconRcw => {
            let recon = op.plan == Plan::ReconRcw;
            if !op.alloc_buf(PBUF, rbytes) {
                return PlanResult::NoBuffer;
            }
            for i in 0..seg.k {
                let m = g.data_member(stripe, i);
                let mu = m as usize;
                if m == op.missing {
                    if recon && !op.alloc_buf(mu, rbytes) {
                        return PlanResult::NoBuffer;
                    }
                    continue;
                }
                let (lo, hi) = seg.touched(i);
                let ranges = if recon || lo == hi {
                    [(p0, p1), (0, 0)]
                } else {
                    [(p0, lo.max(p0)), (hi.min(p1), p1)]
                };
                for (r0, r1) in ranges {
                    if r1 <= r0 {
                        continue;
                    }
                    if op.bufs[mu].is_none() && !op.alloc_buf(mu, rbytes) {
                        return PlanResult::NoBuffer;
                    }
                    op.push_read(Child {
                        member: m,
                        lba: seg.lba(r0),
                        blocks: r1 - r0,
                        src: Src::Buf(mu, (r0 - p0) as usize * seg.bs),
                    });
                }
            }
            if recon {
                let pm = seg.pm as usize;
                if !op.alloc_buf(pm, rbytes) {
                    return PlanResult::NoBuffer;
                }
                op.push_read(Child {
                    member: seg.pm,
                    lba: seg.lba(p0),
                    blocks: rows,
                    src: Src::Buf(pm, 0),
                });
            }
            Src::Buf(PBUF, 0)
        }
        _ => Src::Host(0),
    };
    for i in seg.first..=seg.last {
        let m = g.data_member(stripe, i);
        if m == op.missing {
            continue;
        }
        let (lo, hi) = seg.touched(i);
        // Partial-stripe unmap is written as zeroes too: the parity must cover what the
        // blocks will read back.
        let src = match op.no_data {
            None => Src::Host(seg.host_off(i, lo)),
            Some(_) => Src::Zeroes,
        };
        op.push_write(Child {
            member: m,
            lba: seg.lba(lo),
            blocks: hi - lo,
            src,
        });
    }
    if op.plan != Plan::DataOnly {
        op.push_write(Child {
            member: seg.pm,
            lba: seg.lba(p0),
            blocks: rows,
            src: parity_src,
        });
    }
    PlanResult::Ready
}

/// XOR host bytes `off..off + dst.len()` of `iovs` into `dst`.
pub(crate) fn xor_host(iovs: &[IoVec], off: usize, dst: &mut [u8]) {
    let mut at = 0;
    for p in IovCursor::at(iovs, off).pieces(dst.len()) {
        // SAFETY: `p` lies in a host iovec, valid and not written by anyone while the host's
        // write is in flight.
        let src = unsafe { std::slice::from_raw_parts(p.base(), p.len()) };
        xor_into(&mut dst[at..at + p.len()], src);
        at += p.len();
    }
}

/// Compute parity once the reads are in.
pub(crate) fn compute(chan: &Chan, op: &mut StripeOp) {
    let seg = Seg::of(chan, op);
    let g = chan.array.geo;
    let (p0, p1) = (op.p0, op.p1);
    let bs = seg.bs;
    let rbytes = (p1 - p0) as usize * bs;
    let stripe = op.unit;
    let no_data = op.no_data;
    let missing = op.missing;
    let host = op.host.iovs();
    match op.plan {
        Plan::Rmw => {
            let (parity, old) = split_bufs(&mut op.bufs, seg.pm as usize);
            for i in seg.first..=seg.last {
                let m = g.data_member(stripe, i) as usize;
                let (lo, hi) = seg.touched(i);
                let r = (lo - p0) as usize * bs..(hi - p0) as usize * bs;
                xor_into(&mut parity[r.clone()], &old[m][r.clone()]);
                if no_data.is_none() {
                    xor_host(host, seg.host_off(i, lo), &mut parity[r]);
                }
            }
        }
        Plan::Rcw | Plan::ReconRcw => {
            if op.plan == Plan::ReconRcw {
                let (gone, bufs) = split_bufs(&mut op.bufs, missing as usize);
                let mut srcs: [&[u8]; crate::array::MAX_MEMBERS] = [&[]; crate::array::MAX_MEMBERS];
                let mut n = 0;
                for m in 0..g.members {
                    if m != missing {
                        srcs[n] = &bufs[m as usize][..rbytes];
                        n += 1;
                    }
                }
                xor_gen(&mut gone[..rbytes], &srcs[..n]);
            }
            let (parity, old_bufs) = split_bufs(&mut op.bufs, PBUF);
            let parity = &mut parity[..rbytes];
            // Fast path: every strip written over all the rows from one contiguous host piece.
            let mut srcs: [&[u8]; crate::array::MAX_MEMBERS] = [&[]; crate::array::MAX_MEMBERS];
            // Zero data (unmap/write-zeroes) adds nothing to the parity: the slow path.
            let mut fast = no_data.is_none();
            for i in 0..seg.k {
                if !fast {
                    break;
                }
                let (lo, hi) = seg.touched(i);
                let piece = ((lo, hi) == (p0, p1))
                    .then(|| IovCursor::at(host, seg.host_off(i, lo)).contiguous(rbytes))
                    .flatten();
                match piece {
                    // SAFETY: a host iovec range, valid while the write is in flight.
                    Some(p) => srcs[i as usize] = unsafe { std::slice::from_raw_parts(p, rbytes) },
                    None => {
                        fast = false;
                        break;
                    }
                }
            }
            if fast {
                xor_gen(parity, &srcs[..seg.k as usize]);
                return;
            }
            parity.fill(0);
            for i in 0..seg.k {
                let m = g.data_member(stripe, i) as usize;
                let (lo, hi) = seg.touched(i);
                let old = &old_bufs[m];
                if lo < hi && no_data.is_none() {
                    let r = (lo - p0) as usize * bs..(hi - p0) as usize * bs;
                    xor_host(host, seg.host_off(i, lo), &mut parity[r]);
                }
                for (r0, r1) in [(p0, lo.max(p0)), (hi.min(p1).max(p0), p1)] {
                    if lo == hi {
                        // Untouched strip: all rows are old data.
                        xor_into(parity, &old[..rbytes]);
                        break;
                    }
                    if r1 > r0 {
                        let r = (r0 - p0) as usize * bs..(r1 - p0) as usize * bs;
                        xor_into(&mut parity[r.clone()], &old[r]);
                    }
                }
            }
        }
        Plan::None | Plan::DataOnly | Plan::NoData | Plan::DirectRead | Plan::ReconRead => {}
    }
}
