//! HOT PATH: raid0 and concat — a host I/O split along strip (or member) boundaries into member
//! I/Os whose iovecs are views of the host's own iovecs; and flush/reset fanned out to every
//! member (all levels).

use crate::array::MemberState;
use crate::caps::Caps;
use crate::channel::{hctx, host_child_cb, Chan, HostRaw};
use crate::dispatch::{host_iovs, set_status, with_io};
use crate::geometry::{Extent, Geometry};
use crate::level::{LevelModule, RaidLevel, Strip};
use keel_bdev::{IoStatus, IoType, IoVec, IovCursor, SubmitError, MAX_IOVS};

/// raid0 in the level table: strips rotate over the members, no redundancy.
pub(crate) static RAID0: LevelModule = LevelModule {
    level: RaidLevel::Raid0,
    name: "raid0",
    aliases: &["0"],
    code: 0,
    min_members: 1,
    redundancy: |_| 0,
    data_members: |n| u64::from(n),
    stripe_unit: true,
    map: Some(Geometry::map_striped),
    strip: Strip::Striped { max_bytes: None },
    caps: Caps::of_plain,
    read: split_striped,
    write: split_striped,
    ops: None,
    resync: None,
};

/// concat in the level table: members one after the other, no redundancy.
pub(crate) static CONCAT: LevelModule = LevelModule {
    level: RaidLevel::Concat,
    name: "concat",
    aliases: &[],
    code: 1,
    min_members: 1,
    redundancy: |_| 0,
    data_members: |n| u64::from(n),
    stripe_unit: false,
    map: Some(Geometry::map_concat),
    strip: Strip::Striped { max_bytes: None },
    caps: Caps::of_plain,
    read: split_concat,
    write: split_concat,
    ops: None,
    resync: None,
};

/// raid0's read and write step: [`split`] along strips.
fn split_striped(chan: &Chan, raw: HostRaw) -> bool {
    split(chan, raw, Geometry::map_striped)
}

/// concat's read and write step: [`split`] along members.
fn split_concat(chan: &Chan, raw: HostRaw) -> bool {
    split(chan, raw, Geometry::map_concat)
}

/// Send each piece of the host I/O that `map` gives to its member (the level's mapping, a fn
/// item: inlined per level). Returns false when a member had no free descriptor (progress
/// saved in `HostCtx::next`; the I/O resumes from the channel's poll).
#[inline(always)]
fn split(chan: &Chan, raw: HostRaw, map: impl Fn(&Geometry, u64, u64) -> Extent) -> bool {
    let (t, start, num, mut done) = with_io(raw, |io| {
        (
            io.io_type(),
            io.offset_blocks(),
            io.num_blocks(),
            hctx(io).next,
        )
    });
    let bs = chan.array.block_size as usize;
    let geo = chan.array.geo;
    let with_data = matches!(t, IoType::Read | IoType::Write);
    let host_iovs: &[IoVec] = if with_data {
        // SAFETY: this step holds the host I/O's dispatch bias until it returns: the I/O
        // stays in flight while the slice is used (member I/Os copy what they take).
        unsafe { host_iovs(raw) }
    } else {
        &[]
    };
    let mut cur = IovCursor::at(host_iovs, done as usize * bs);
    while done < num {
        let e = map(&geo, start + done, num - done);
        let mut iovs = [IoVec::EMPTY; MAX_IOVS];
        let n = if with_data {
            let len = e.blocks as usize * bs;
            // A list shorter than the I/O goes down empty (the member refuses it).
            match cur.split_into(len, &mut iovs) {
                (n, bytes) if bytes == len => n,
                _ => 0,
            }
        } else {
            0
        };
        with_io(raw, |io| hctx(io).pending += 1);
        match chan.submit_member(
            e.member,
            t,
            &iovs[..n],
            e.member_lba,
            e.blocks,
            host_child_cb,
            raw.ctx(),
        ) {
            Ok(()) => {}
            Err(SubmitError::NoDescriptor) => {
                with_io(raw, |io| {
                    let c = hctx(io);
                    c.pending -= 1;
                    c.next = done;
                });
                chan.wait_descriptor(e.member);
                return false;
            }
            Err(_) => {
                with_io(raw, |io| hctx(io).pending -= 1);
                set_status(raw, IoStatus::IoError);
            }
        }
        done += e.blocks;
    }
    with_io(raw, |io| hctx(io).next = done);
    true
}

/// Flush or reset every member that has a channel here. Returns false when a member had no
/// free descriptor (resumes from the next member).
pub(crate) fn fan_out(chan: &Chan, raw: HostRaw) -> bool {
    let (t, mut next) = with_io(raw, |io| (io.io_type(), hctx(io).next));
    let n = chan.array.members.len() as u64;
    while next < n {
        let m = next as u32;
        let usable = matches!(
            chan.array.members[m as usize].state(),
            MemberState::Active | MemberState::Rebuilding
        );
        if usable && chan.has_member(m) {
            with_io(raw, |io| hctx(io).pending += 1);
            match chan.submit_member(m, t, &[], 0, 0, host_child_cb, raw.ctx()) {
                Ok(()) => {}
                Err(SubmitError::NoDescriptor) => {
                    with_io(raw, |io| {
                        let c = hctx(io);
                        c.pending -= 1;
                        c.next = next;
                    });
                    chan.wait_descriptor(m);
                    return false;
                }
                Err(_) => {
                    // A member that takes no flush/reset (or is going away) is skipped.
                    with_io(raw, |io| hctx(io).pending -= 1);
                }
            }
        }
        next += 1;
    }
    true
}
