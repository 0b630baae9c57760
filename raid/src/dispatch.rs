//! HOT PATH: where a host I/O goes — by level and type — and how a host I/O that had to wait
//! (for a free stripe operation or a member descriptor) resumes where it stopped.

use crate::channel::{child_done, host_start, run, Chan, OpKind, Phase, NEXT, PENDING};
use crate::level::RaidLevel;
use keel_bdev::{IoRef, IoStatus, IoType};
use std::rc::Rc;

/// A host I/O arrives on the channel.
pub(crate) fn submit(chan: &Rc<Chan>, mut io: IoRef) {
    let chan: &Chan = chan;
    chan.check_epoch();
    if chan.array.is_offline() {
        io.complete(IoStatus::IoError);
        return;
    }
    host_start(chan, &mut io);
    if chan.array.level() == RaidLevel::Raid1 && io.io_type() == IoType::Read {
        crate::raid1::read(chan, io);
        return;
    }
    resume(chan, io);
}

/// Dispatch what is left of a host I/O (from `module_ctx()[NEXT]`); queue it again if it has
/// to wait. Drops the dispatch bias once everything is out.
pub(crate) fn resume(chan: &Chan, io: IoRef) {
    let level = chan.array.level();
    let raw = io.into_raw();
    let finished = match (level, io_type(raw)) {
        (_, IoType::Flush | IoType::Reset) => crate::raid0::fan_out(chan, raw),
        (RaidLevel::Raid0 | RaidLevel::Concat, _) => crate::raid0::split(chan, raw),
        (RaidLevel::Raid5, IoType::Read) => ops(chan, raw, OpKind::R5Read),
        // Unmap and write-zeroes take the write path (stripe/region tokens, degraded and
        // rebuild rules): they only reach here when the bdev offers them (`crate::caps`).
        (RaidLevel::Raid5, IoType::Write | IoType::Unmap | IoType::WriteZeroes) => {
            ops(chan, raw, OpKind::R5Write)
        }
        (RaidLevel::Raid1, IoType::Write | IoType::Unmap | IoType::WriteZeroes) => {
            ops(chan, raw, OpKind::R1Write)
        }
        _ => {
            set_status(raw, IoStatus::IoError);
            true
        }
    };
    if finished {
        child_done(raw, IoStatus::Success); // the dispatch bias
    } else {
        // SAFETY: `raw` is the in-flight host I/O taken apart above; rebuilt once to queue it.
        chan.wait_for_op(unsafe { IoRef::from_raw(raw) });
    }
}

/// Run `f` on the host I/O given in raw form, keeping it in flight.
#[inline]
pub(crate) fn with_io<R>(raw: usize, f: impl FnOnce(&mut IoRef) -> R) -> R {
    // SAFETY: `raw` is an in-flight host I/O of this core; it goes back to raw form right away.
    let mut io = unsafe { IoRef::from_raw(raw) };
    let r = f(&mut io);
    let _ = io.into_raw();
    r
}

fn io_type(raw: usize) -> IoType {
    with_io(raw, |io| io.io_type())
}

/// Record an error on a host I/O without counting a child.
pub(crate) fn set_status(raw: usize, status: IoStatus) {
    with_io(raw, |io| {
        let c = io.module_ctx();
        c[PENDING] += 1;
    });
    child_done(raw, status);
}

/// Split a host I/O into stripe (raid5) or region (raid1) operations. Returns false when it
/// must wait for a free operation (progress saved in `NEXT`).
fn ops(chan: &Chan, raw: usize, kind: OpKind) -> bool {
    let (start, num, mut done, t) = with_io(raw, |io| {
        (
            io.offset_blocks(),
            io.num_blocks(),
            io.module_ctx()[NEXT],
            io.io_type(),
        )
    });
    let no_data = matches!(t, IoType::Unmap | IoType::WriteZeroes).then_some(t);
    if !chan.array.write_ready() && kind != OpKind::R5Read {
        // First write since the array was clean: `clean = false` goes to every member first
        // (write hole, SUPERBLOCK.md); this I/O waits for it.
        crate::sb_io::mark_dirty(&chan.array);
        return false;
    }
    let unit_blocks = chan.array.geo.stripe_data_blocks();
    let bs = chan.array.block_size as u64;
    while done < num {
        let Some(p) = chan.take_op(kind) else {
            with_io(raw, |io| io.module_ctx()[NEXT] = done);
            return false;
        };
        let lba = start + done;
        let seg0 = lba % unit_blocks;
        let len = (unit_blocks - seg0).min(num - done);
        // SAFETY: `p` was just taken from the free list: nobody else refers to it.
        let op = unsafe { &mut *p };
        op.host = raw;
        op.unit = lba / unit_blocks;
        op.seg0 = seg0;
        op.seg1 = seg0 + len;
        op.host_off = (done * bs) as usize;
        op.no_data = no_data;
        op.phase = match kind {
            OpKind::R5Read => Phase::Plan,
            _ => Phase::Token,
        };
        with_io(raw, |io| io.module_ctx()[PENDING] += 1);
        done += len;
        run(p);
    }
    with_io(raw, |io| io.module_ctx()[NEXT] = done);
    true
}
