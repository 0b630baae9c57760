//! HOT PATH: where a host I/O goes — by type, to the entry point the level table gives
//! ([`crate::level::LevelModule`]) — and how a host I/O that had to wait (for a free stripe
//! operation or a member descriptor) resumes where it stopped.

use crate::channel::{child_done, hctx, host_start, run, Chan, HostIo, HostRaw, OpKind, Phase};
use keel_bdev::{IoRef, IoStatus, IoType, IoVec};
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
    resume(chan, io);
}

/// Dispatch what is left of a host I/O (from its `HostCtx::next`); queue it again if it has
/// to wait. Drops the dispatch bias once everything is out.
pub(crate) fn resume(chan: &Chan, io: IoRef) {
    let level = chan.level;
    let raw = HostRaw::park(io);
    let step = match io_type(raw) {
        IoType::Flush | IoType::Reset => crate::raid0::fan_out,
        IoType::Read => level.read,
        // Unmap and write-zeroes take the write path (stripe/region tokens, degraded and
        // rebuild rules): they only reach here when the bdev offers them (`crate::caps`).
        IoType::Write | IoType::Unmap | IoType::WriteZeroes => level.write,
    };
    let finished = step(chan, raw);
    if finished {
        child_done(raw, IoStatus::Success); // the dispatch bias
    } else {
        // SAFETY: `raw` is the in-flight host I/O parked above (the step did not finish, so
        // the dispatch bias still holds it); taken back once, to queue it.
        chan.wait_for_op(unsafe { raw.unpark() });
    }
}

/// The iovecs of parked host I/O `raw`.
///
/// # Safety
/// `raw` is an in-flight host I/O of this core, and it stays in flight (its descriptor and
/// iovec array alive and unchanged) for as long as the caller uses the slice (`'a`, which the
/// caller picks): e.g. while a step holds the dispatch bias, or while a child of it is out.
pub(crate) unsafe fn host_iovs<'a>(raw: HostRaw) -> &'a [IoVec] {
    let (p, n) = with_io(raw, |io| {
        let v = io.iovs();
        (v.as_ptr(), v.len())
    });
    // SAFETY: the array lives in the host I/O's descriptor, in flight as long as the caller
    // uses the slice (contract above).
    unsafe { std::slice::from_raw_parts(p, n) }
}

/// Run `f` on parked host I/O `raw`, keeping it in flight (parked again after `f`).
#[inline]
pub(crate) fn with_io<R>(raw: HostRaw, f: impl FnOnce(&mut IoRef) -> R) -> R {
    // SAFETY: `raw` is a parked in-flight host I/O of this core (a `HostRaw` comes only from
    // `park` or from a member-I/O context, and its holder's count keeps it in flight); it is
    // parked again right away, so the copies of `raw` stay valid.
    let mut io = unsafe { raw.unpark() };
    let r = f(&mut io);
    let _ = io.into_raw(); // parked again: the same value as `raw`
    r
}

#[inline]
fn io_type(raw: HostRaw) -> IoType {
    with_io(raw, |io| io.io_type())
}

/// Record an error on a host I/O without counting a child.
pub(crate) fn set_status(raw: HostRaw, status: IoStatus) {
    with_io(raw, |io| {
        let c = hctx(io);
        c.pending += 1;
    });
    child_done(raw, status);
}

/// The write step of levels that write through stripe/region operations (raid1, raid5).
pub(crate) fn write_ops(chan: &Chan, raw: HostRaw) -> bool {
    ops(chan, raw, OpKind::Write)
}

/// Split a host I/O into stripe (raid5) or region (raid1) operations. Returns false when it
/// must wait for a free operation (progress saved in `HostCtx::next`).
pub(crate) fn ops(chan: &Chan, raw: HostRaw, kind: OpKind) -> bool {
    let (start, num, mut done, t) = with_io(raw, |io| {
        (
            io.offset_blocks(),
            io.num_blocks(),
            hctx(io).next,
            io.io_type(),
        )
    });
    let no_data = matches!(t, IoType::Unmap | IoType::WriteZeroes).then_some(t);
    if !chan.array.write_ready() && kind != OpKind::Read {
        // First write since the array was clean: `clean = false` goes to every member first
        // (write hole, SUPERBLOCK.md); this I/O waits for it.
        crate::sb_io::mark_dirty(&chan.array);
        chan.wait_blind();
        return false;
    }
    let unit_blocks = chan.array.geo.stripe_data_blocks();
    assert!(unit_blocks > 0);
    let bs = chan.array.block_size as u64;
    while done < num {
        let Some(p) = chan.take_op(kind) else {
            // Progress is only ever made forward, and saved for the resume.
            with_io(raw, |io| hctx(io).next = done);
            return false;
        };
        let lba = start + done;
        let seg0 = lba % unit_blocks;
        let len = (unit_blocks - seg0).min(num - done);
        // SAFETY: `p` was just taken from the free list: nobody else refers to it.
        let op = unsafe { &mut *p };
        // SAFETY: `raw` is the in-flight host I/O; it stays in flight until every operation
        // holding it finished (its `HostCtx::pending` counts them, incremented below).
        op.host = unsafe { HostIo::new(raw) };
        op.unit = lba / unit_blocks;
        op.seg0 = seg0;
        op.seg1 = seg0 + len;
        op.host_off = (done * bs) as usize;
        op.no_data = no_data;
        if kind != OpKind::Read {
            op.set_phase(Phase::Token); // reads take the token only to reconstruct
        }
        with_io(raw, |io| hctx(io).pending += 1);
        done += len;
        run(p);
    }
    with_io(raw, |io| hctx(io).next = done);
    true
}
