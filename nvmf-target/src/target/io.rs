//! HOT PATH: NVM I/O commands (Read, Write, Flush, Write Zeroes, Dataset Management, Compare)
//! on this core's bdev channels. No lock, no allocation in steady state: the namespace comes
//! from the core's table, the data buffers are the request's, completions come back through
//! a plain function pointer with the request's address as context.
//!
//! While a bdev I/O runs, the request's [`CoreCtx`] names the kind of command and holds one
//! strong reference to the queue pair, so the queue pair outlives every command it started:
//! [`CoreCtx::Io`] (with the bdev I/O type its completion maps the status with),
//! [`CoreCtx::Dsm`] (unmaps in flight, first error, next range) and [`CoreCtx::Compare`] (its
//! read buffer).
//! Back-pressure: when a channel has no free descriptor, the command queues the request's own
//! wait entry on the channel (`queue_io_wait`, no allocation; [`CoreCtx::Waiting`] holds the
//! queue pair meanwhile) and runs again; it is never failed for it.

use super::nstable::{CoreSubsys, NsChannel};
use super::qpair::Qpair;
use crate::iov;
use crate::request::{CoreCtx, DsmCtx, NvmfRequest, ReqPtr};
use keel_bdev::{IoStatus, IoType, IoVec, IoWaitEntry, SubmitError};
use keel_nvme::cmd::DataXfer;
use keel_nvme::opcode::nvm as opc;
use keel_nvme::status::Status;
use std::pin::Pin;
use std::ptr::NonNull;
use std::rc::Rc;

/// Bytes of one Dataset Management range.
const DSM_RANGE_LEN: usize = 16;
/// DSM attribute: deallocate.
const DSM_AD: u32 = 1 << 2;

/// Run one I/O command on queue pair `qp` whose namespace table is `tbl`.
#[inline]
pub(crate) fn execute(qp: &Rc<Qpair>, tbl: &CoreSubsys, req: ReqPtr) {
    // SAFETY: the request is ours until completed (request.rs contract).
    let r = unsafe { &mut *req.as_ptr() };
    let Some(ns) = tbl.get(r.cmd.nsid) else {
        return qp.finish(req, Status::INVALID_NAMESPACE_OR_FORMAT, 0);
    };
    if r.cmd.flags & 0x3 != 0 {
        // Fused operations are not advertised (FUSES = 0).
        return qp.finish(req, Status::INVALID_FIELD, 0);
    }
    // Each command below gets `r` (the one reference to the request while it is submitted)
    // and `req` (its address, for the completion context); none uses `r` once the request
    // may have completed.
    let res = match r.cmd.opc {
        opc::READ => read_write(qp, &ns, req, r, IoType::Read),
        opc::WRITE => read_write(qp, &ns, req, r, IoType::Write),
        opc::FLUSH => flush(qp, &ns, req, r),
        opc::WRITE_ZEROES => write_zeroes(qp, &ns, req, r),
        opc::DATASET_MANAGEMENT => dsm_start(qp, &ns, req, r),
        opc::COMPARE => compare(qp, &ns, req, r),
        _ => Err(Status::INVALID_OPCODE),
    };
    if let Err(s) = res {
        qp.finish(req, s, 0);
    }
}

/// Starting LBA and block count (CDW10-11, CDW12 bits 15:0 0-based), range-checked.
#[inline]
fn lba_range(r: &NvmfRequest, ns: &NsChannel) -> Result<(u64, u64), Status> {
    let slba = u64::from(r.cmd.cdw10) | (u64::from(r.cmd.cdw11) << 32);
    let nlb = u64::from(r.cmd.cdw12 & 0xffff) + 1;
    match slba.checked_add(nlb) {
        Some(end) if end <= ns.num_blocks() => Ok((slba, nlb)),
        _ => Err(Status::LBA_OUT_OF_RANGE),
    }
}

/// The data length must be exactly the blocks named.
#[inline]
fn check_len(r: &NvmfRequest, ns: &NsChannel, nlb: u64, dir: DataXfer) -> Result<(), Status> {
    if r.xfer != dir || u64::from(r.length) != nlb * u64::from(ns.block_size) {
        return Err(Status::DATA_SGL_LENGTH_INVALID);
    }
    Ok(())
}

/// Map a refused submission; `NoDescriptor` parks the command on the channel.
#[inline]
fn submit_failed(
    qp: &Rc<Qpair>,
    ns: &NsChannel,
    req: ReqPtr,
    r: &mut NvmfRequest,
    e: SubmitError,
) -> Result<(), Status> {
    match e {
        SubmitError::NoDescriptor => {
            super::stats::bdev_io_pending();
            r.core_ctx = CoreCtx::Waiting { qp: Rc::clone(qp) };
            if !wait_for_descriptor(ns, &r.io_wait, req, retry_execute) {
                // A descriptor is free already: run again now.
                retry_execute(req.as_ptr() as usize);
            }
            Ok(())
        }
        SubmitError::OutOfRange => Err(Status::LBA_OUT_OF_RANGE),
        SubmitError::Unsupported => Err(Status::INVALID_OPCODE),
        SubmitError::BadIovecs => Err(Status::DATA_SGL_LENGTH_INVALID),
        SubmitError::Removed => Err(Status::INVALID_NAMESPACE_OR_FORMAT),
    }
}

/// Queue `entry`, the wait entry of request `req`, on the namespace's channel, to call `cb`
/// with the request's address when a descriptor is freed (no allocation). Returns false,
/// without queueing, when a descriptor is free now.
#[inline]
fn wait_for_descriptor(ns: &NsChannel, entry: &IoWaitEntry, req: ReqPtr, cb: fn(usize)) -> bool {
    entry.set_callback(cb, req.as_ptr() as usize);
    // SAFETY: the request (and so its entry) stays at its address in the transport's pool
    // while the command runs, and the command does not complete while the entry is queued
    // (only the entry's callback moves it on); dropping the entry would unqueue it anyway.
    let entry = unsafe { Pin::new_unchecked(entry) };
    ns.ch.queue_io_wait(entry)
}

/// A command waiting for a descriptor ([`CoreCtx::Waiting`]) runs again from the start.
fn retry_execute(ctx: usize) {
    // SAFETY: `ctx` is the address of the waiting request, still ours (not completed).
    let (req, r) = unsafe { req_of(ctx) };
    let CoreCtx::Waiting { qp } = std::mem::take(&mut r.core_ctx) else {
        unreachable!("a descriptor wait served for a request not waiting");
    };
    qp.execute(req);
}

/// The request behind a completion context.
///
/// # Safety
/// `ctx` must be the address of a live request this module submitted, whose bdev I/O has
/// completed (the request is ours again until it is handed back with `Qpair::complete`).
#[inline]
unsafe fn req_of<'a>(ctx: usize) -> (ReqPtr, &'a mut NvmfRequest) {
    let p = ctx as *mut NvmfRequest;
    // SAFETY: per the contract the address is that of a live request (so non-null), and
    // nothing else references the request while its completion runs.
    unsafe { (NonNull::new_unchecked(p), &mut *p) }
}

/// Submit `f` as the single bdev I/O of the command, with a queue pair reference held in
/// [`CoreCtx::Io`]; on refusal the reference is given back.
#[inline]
fn submit(
    qp: &Rc<Qpair>,
    ns: &NsChannel,
    req: ReqPtr,
    r: &mut NvmfRequest,
    kind: IoType,
    f: impl FnOnce(&[IoVec], usize) -> Result<(), SubmitError>,
) -> Result<(), Status> {
    r.core_ctx = CoreCtx::Io {
        qp: Rc::clone(qp),
        kind,
    };
    // Completions are never delivered inside the submit call (keel_bdev io_path): `r` is not
    // aliased while `f` runs.
    match f(r.data_iovs(), req.as_ptr() as usize) {
        Ok(()) => Ok(()),
        Err(e) => {
            // Not handed to the bdev layer: drop the reference again.
            r.core_ctx = CoreCtx::Idle;
            submit_failed(qp, ns, req, r, e)
        }
    }
}

fn read_write(
    qp: &Rc<Qpair>,
    ns: &NsChannel,
    req: ReqPtr,
    r: &mut NvmfRequest,
    kind: IoType,
) -> Result<(), Status> {
    let (slba, nlb) = lba_range(r, ns)?;
    let dir = if kind == IoType::Read {
        DataXfer::ControllerToHost
    } else {
        DataXfer::HostToController
    };
    check_len(r, ns, nlb, dir)?;
    submit(qp, ns, req, r, kind, |iovs, ctx| {
        if kind == IoType::Read {
            ns.ch.read(iovs, slba, nlb, io_done, ctx)
        } else {
            ns.ch.write(iovs, slba, nlb, io_done, ctx)
        }
    })
}

fn flush(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr, r: &mut NvmfRequest) -> Result<(), Status> {
    if !ns.ch.bdev().io_type_supported(IoType::Flush) {
        // Nothing volatile to flush.
        qp.finish(req, Status::SUCCESS, 0);
        return Ok(());
    }
    submit(qp, ns, req, r, IoType::Flush, |_, ctx| {
        ns.ch.flush(io_done, ctx)
    })
}

fn write_zeroes(
    qp: &Rc<Qpair>,
    ns: &NsChannel,
    req: ReqPtr,
    r: &mut NvmfRequest,
) -> Result<(), Status> {
    let (slba, nlb) = lba_range(r, ns)?;
    submit(qp, ns, req, r, IoType::WriteZeroes, |_, ctx| {
        ns.ch.write_zeroes(slba, nlb, io_done, ctx)
    })
}

/// Completion of a single bdev I/O standing for the whole command.
fn io_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the request submitted by `submit`, whose I/O is now complete.
    let (req, r) = unsafe { req_of(ctx) };
    let CoreCtx::Io { qp, kind } = std::mem::take(&mut r.core_ctx) else {
        unreachable!("an I/O completion for a request without an I/O in flight");
    };
    r.rsp.set(status_from_io(status, kind));
    qp.complete(req);
}

// ---- Dataset Management ----

/// One range: (starting LBA, blocks), from the request's data `iovs`.
fn dsm_range(iovs: &[IoVec], i: usize) -> Option<(u64, u64)> {
    let mut b = [0u8; DSM_RANGE_LEN];
    // SAFETY: a request's data buffers are valid and ours while it runs (request.rs).
    if unsafe { iov::copy_from_iovs(iovs, i * DSM_RANGE_LEN, &mut b) } < DSM_RANGE_LEN {
        return None;
    }
    let nlb = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let slba = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    Some((slba, u64::from(nlb)))
}

/// Number of ranges of a Dataset Management command (CDW10 bits 7:0, 0-based).
#[inline]
fn dsm_ranges(r: &NvmfRequest) -> u32 {
    (r.cmd.cdw10 & 0xff) + 1
}

fn dsm_start(
    qp: &Rc<Qpair>,
    ns: &NsChannel,
    req: ReqPtr,
    r: &mut NvmfRequest,
) -> Result<(), Status> {
    let nr = dsm_ranges(r) as usize;
    if r.xfer != DataXfer::HostToController || (r.length as usize) < nr * DSM_RANGE_LEN {
        return Err(Status::DATA_SGL_LENGTH_INVALID);
    }
    if r.cmd.cdw11 & DSM_AD == 0 || !ns.ns.supports_unmap {
        // Only deallocation does anything here; the other attributes are hints.
        qp.finish(req, Status::SUCCESS, 0);
        return Ok(());
    }
    for i in 0..nr {
        let (slba, nlb) = dsm_range(r.data_iovs(), i).ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
        if nlb > 0 && slba.checked_add(nlb).is_none_or(|e| e > ns.num_blocks()) {
            return Err(Status::LBA_OUT_OF_RANGE);
        }
    }
    r.core_ctx = CoreCtx::Dsm(DsmCtx {
        qp: Rc::clone(qp),
        inflight: 0,
        status: 0,
        next: 0,
    });
    dsm_continue(req);
    Ok(())
}

/// The Dataset Management progress of a request in [`CoreCtx::Dsm`].
#[inline]
fn dsm_ctx(ctx: &mut CoreCtx) -> &mut DsmCtx {
    match ctx {
        CoreCtx::Dsm(d) => d,
        _ => unreachable!("a Dataset Management step for a request not running one"),
    }
}

/// Submit the remaining ranges (until done or the channel runs out of descriptors).
fn dsm_continue(req: ReqPtr) {
    // SAFETY: the request is ours until completed; no other reference to it is live.
    let r = unsafe { &mut *req.as_ptr() };
    let nr = dsm_ranges(r);
    let nsid = r.cmd.nsid;
    let iovs = &r.iovs[..r.iovcnt];
    let entry = &r.io_wait;
    let d = dsm_ctx(&mut r.core_ctx);
    let ns = d.qp.io_ns().and_then(|t| t.get(nsid));
    while d.next < nr {
        let Some(ns) = ns.as_ref() else {
            d.status = Status::INVALID_NAMESPACE_OR_FORMAT.to_field();
            d.next = nr;
            break;
        };
        let Some((slba, nlb)) = dsm_range(iovs, d.next as usize) else {
            d.next = nr;
            break;
        };
        if nlb == 0 {
            d.next += 1;
            continue;
        }
        match ns.ch.unmap(slba, nlb, dsm_done, req.as_ptr() as usize) {
            Ok(()) => {
                d.inflight += 1;
                d.next += 1;
            }
            Err(SubmitError::NoDescriptor) => {
                if wait_for_descriptor(ns, entry, req, dsm_retry) {
                    return;
                }
                // A descriptor is free already: try the range again now.
            }
            Err(e) => {
                let s = match e {
                    SubmitError::OutOfRange => Status::LBA_OUT_OF_RANGE,
                    SubmitError::Unsupported => Status::INVALID_OPCODE,
                    _ => Status::INTERNAL_DEVICE_ERROR,
                };
                d.status = s.to_field();
                d.next = nr;
            }
        }
    }
    if d.inflight == 0 {
        dsm_finish(req, r);
    }
}

/// A Dataset Management command waiting for a descriptor goes on with its ranges.
fn dsm_retry(ctx: usize) {
    // SAFETY: `ctx` is the address of the waiting request, still ours (not completed).
    let (req, _) = unsafe { req_of(ctx) };
    dsm_continue(req);
}

fn dsm_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the DSM request, one of whose unmaps is now complete.
    let (req, r) = unsafe { req_of(ctx) };
    let nr = dsm_ranges(r);
    let d = dsm_ctx(&mut r.core_ctx);
    assert!(d.inflight > 0, "an unmap completion with none in flight");
    d.inflight -= 1;
    if status != IoStatus::Success && d.status == 0 {
        d.status = status_from_io(status, IoType::Unmap).to_field();
    }
    if d.inflight == 0 && d.next >= nr {
        dsm_finish(req, r);
    }
}

fn dsm_finish(req: ReqPtr, r: &mut NvmfRequest) {
    let CoreCtx::Dsm(d) = std::mem::take(&mut r.core_ctx) else {
        unreachable!("Dataset Management finished twice");
    };
    r.rsp.set(Status::from_field(d.status));
    d.qp.complete(req);
}

// ---- Compare (rare: a pool buffer per command is fine) ----

fn compare(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr, r: &mut NvmfRequest) -> Result<(), Status> {
    let (slba, nlb) = lba_range(r, ns)?;
    check_len(r, ns, nlb, DataXfer::HostToController)?;
    let len = r.length as usize;
    if len > keel_reactor::pool::MAX_CLASS {
        return Err(Status::INVALID_FIELD);
    }
    let mut buf = match keel_reactor::pool::alloc(len) {
        Ok(b) => b,
        Err(e) => {
            log::warn!("nvmf: Compare: no buffer: {e}");
            return Err(Status::INTERNAL_DEVICE_ERROR);
        }
    };
    // SAFETY: the pool memory stays put while the `DmaBuf` moves into the command's context,
    // which owns it until `compare_done` (or the refusal below) drops it.
    let v = [unsafe { IoVec::from_raw_parts(buf.as_mut_ptr(), len) }];
    r.core_ctx = CoreCtx::Compare {
        qp: Rc::clone(qp),
        buf,
    };
    match ns
        .ch
        .read(&v, slba, nlb, compare_done, req.as_ptr() as usize)
    {
        Ok(()) => Ok(()),
        Err(e) => {
            // Not handed to the bdev layer: drop the reference and the buffer (a retry
            // takes a new one).
            r.core_ctx = CoreCtx::Idle;
            submit_failed(qp, ns, req, r, e)
        }
    }
}

fn compare_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the Compare request, whose read is now complete.
    let (req, r) = unsafe { req_of(ctx) };
    let CoreCtx::Compare { qp, buf } = std::mem::take(&mut r.core_ctx) else {
        unreachable!("a Compare completion for a request not running one");
    };
    let st = if status != IoStatus::Success {
        status_from_io(status, IoType::Read)
    // SAFETY: a request's data buffers are valid and ours while it runs (request.rs).
    } else if unsafe { iov::iovs_equal(r.data_iovs(), buf.as_slice()) } {
        Status::SUCCESS
    } else {
        Status::COMPARE_FAILURE
    };
    drop(buf);
    r.rsp.set(st);
    qp.complete(req);
}

/// The NVMe status a bdev I/O outcome maps to (the target's rule; `keel_nvme` knows no bdevs). `io_type` says what the bdev was asked to do:
/// a failed read is an Unrecovered Read Error, a failed write a Write Fault, anything else
/// (flush, unmap, write zeroes, reset) an Internal Error.
pub(crate) const fn status_from_io(status: IoStatus, io_type: IoType) -> Status {
    match status {
        IoStatus::Success => Status::SUCCESS,
        IoStatus::IoError => match io_type {
            IoType::Read => Status::UNRECOVERED_READ_ERROR,
            IoType::Write => Status::WRITE_FAULT,
            _ => Status::INTERNAL_DEVICE_ERROR,
        },
        IoStatus::Aborted => Status::ABORTED_BY_REQUEST,
        IoStatus::NoSpace => Status::CAPACITY_EXCEEDED,
        IoStatus::Miscompare => Status::COMPARE_FAILURE,
    }
}

#[cfg(test)]
mod status_tests {
    use super::*;

    #[test]
    fn the_error_bdev_nvme_table_matches_from_io() {
        // bdev_error_inject_error's nvme_failure promises the host these statuses.
        let all = [
            IoType::Read,
            IoType::Write,
            IoType::Unmap,
            IoType::Flush,
            IoType::WriteZeroes,
        ];
        for (sct, sc, what, status, only) in keel_bdev::modules::error::NVME_STATUSES {
            for t in all {
                let applies = match only {
                    None => true,
                    Some(IoType::Flush) => !matches!(t, IoType::Read | IoType::Write),
                    Some(o) => o == t,
                };
                if applies {
                    let s = status_from_io(status, t);
                    assert_eq!((s.sct, s.sc), (sct, sc), "{what} for {t:?}");
                }
            }
        }
    }

    #[test]
    fn io_status_mapping() {
        use IoStatus::*;
        assert_eq!(status_from_io(Success, IoType::Write), Status::SUCCESS);
        assert_eq!(
            status_from_io(IoError, IoType::Read),
            Status::UNRECOVERED_READ_ERROR
        );
        assert_eq!(status_from_io(IoError, IoType::Write), Status::WRITE_FAULT);
        assert_eq!(
            status_from_io(IoError, IoType::Flush),
            Status::INTERNAL_DEVICE_ERROR
        );
        assert_eq!(
            status_from_io(IoError, IoType::Unmap),
            Status::INTERNAL_DEVICE_ERROR
        );
        assert_eq!(
            status_from_io(NoSpace, IoType::Write),
            Status::CAPACITY_EXCEEDED
        );
        assert_eq!(
            status_from_io(Miscompare, IoType::Read),
            Status::COMPARE_FAILURE
        );
        assert_eq!(
            status_from_io(Aborted, IoType::Read),
            Status::ABORTED_BY_REQUEST
        );
    }
}
