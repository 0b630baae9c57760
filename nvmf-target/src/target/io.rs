//! HOT PATH: NVM I/O commands (Read, Write, Flush, Write Zeroes, Dataset Management, Compare)
//! on this core's bdev channels. No lock, no allocation in steady state: the namespace comes
//! from the core's table, the data buffers are the request's, completions come back through
//! a plain function pointer with the request's address as context.
//!
//! While a bdev I/O runs, `core_ctx[0]` holds one strong reference to the queue pair (from
//! `Rc::into_raw`), so the queue pair outlives every command it started. Dataset Management
//! also uses `core_ctx[1]` (unmaps in flight), `[2]` (first error, a CQE status field) and
//! `[3]` (next range); Compare keeps its read buffer in `core_ctx[1]`.
//! Back-pressure: when a channel has no free descriptor, the command waits on the channel
//! (`wait_for_descriptor`) and runs again; it is never failed for it.

use super::nstable::{CoreSubsys, NsChannel};
use super::qpair::Qpair;
use crate::request::{NvmfRequest, ReqPtr};
use keel_bdev::{IoStatus, IoType, IoVec, SubmitError};
use keel_nvme::cmd::DataXfer;
use keel_nvme::iov;
use keel_nvme::opcode::nvm as opc;
use keel_nvme::status::Status;
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
    let res = match r.cmd.opc {
        opc::READ => read_write(qp, &ns, req, IoType::Read),
        opc::WRITE => read_write(qp, &ns, req, IoType::Write),
        opc::FLUSH => flush(qp, &ns, req),
        opc::WRITE_ZEROES => write_zeroes(qp, &ns, req),
        opc::DATASET_MANAGEMENT => dsm_start(qp, &ns, req),
        opc::COMPARE => compare(qp, &ns, req),
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
    e: SubmitError,
) -> Result<(), Status> {
    match e {
        SubmitError::NoDescriptor => {
            super::stats::bdev_io_pending();
            let q = Rc::clone(qp);
            ns.ch.wait_for_descriptor(Box::new(move || q.execute(req)));
            Ok(())
        }
        SubmitError::OutOfRange => Err(Status::LBA_OUT_OF_RANGE),
        SubmitError::Unsupported => Err(Status::INVALID_OPCODE),
        SubmitError::BadIovecs => Err(Status::DATA_SGL_LENGTH_INVALID),
        SubmitError::Removed => Err(Status::INVALID_NAMESPACE_OR_FORMAT),
    }
}

/// Take a queue pair reference for an I/O in flight (stored in `core_ctx[0]`).
#[inline]
fn hold_qpair(qp: &Rc<Qpair>, r: &mut NvmfRequest) {
    r.core_ctx[0] = Rc::into_raw(Rc::clone(qp)) as u64;
}

/// Give back the reference taken by [`hold_qpair`].
///
/// # Safety
/// `r.core_ctx[0]` must hold a reference from `hold_qpair` not yet released.
#[inline]
unsafe fn release_qpair(r: &NvmfRequest) -> Rc<Qpair> {
    // SAFETY: per the contract, this pointer came from `Rc::into_raw` and is released once.
    unsafe { Rc::from_raw(r.core_ctx[0] as *const Qpair) }
}

/// The request behind a completion context.
///
/// # Safety
/// `ctx` must be the address of a live request this module submitted.
#[inline]
unsafe fn req_of(ctx: usize) -> ReqPtr {
    // SAFETY: per the contract the address is non-null.
    unsafe { NonNull::new_unchecked(ctx as *mut NvmfRequest) }
}

/// Submit `f` with a queue pair reference held; on refusal the reference is given back.
#[inline]
fn submit(
    qp: &Rc<Qpair>,
    ns: &NsChannel,
    req: ReqPtr,
    f: impl FnOnce(usize) -> Result<(), SubmitError>,
) -> Result<(), Status> {
    // SAFETY: the request is ours until completed.
    let r = unsafe { &mut *req.as_ptr() };
    hold_qpair(qp, r);
    match f(req.as_ptr() as usize) {
        Ok(()) => Ok(()),
        Err(e) => {
            // SAFETY: taken just above and not handed to the bdev layer.
            drop(unsafe { release_qpair(r) });
            submit_failed(qp, ns, req, e)
        }
    }
}

fn read_write(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr, kind: IoType) -> Result<(), Status> {
    // SAFETY: the request is ours until completed.
    let r = unsafe { &*req.as_ptr() };
    let (slba, nlb) = lba_range(r, ns)?;
    let dir = if kind == IoType::Read {
        DataXfer::ControllerToHost
    } else {
        DataXfer::HostToController
    };
    check_len(r, ns, nlb, dir)?;
    let iovs: &[IoVec] = r.data_iovs();
    submit(qp, ns, req, |ctx| {
        if kind == IoType::Read {
            ns.ch.read(iovs, slba, nlb, io_done, ctx)
        } else {
            ns.ch.write(iovs, slba, nlb, io_done, ctx)
        }
    })
}

fn flush(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr) -> Result<(), Status> {
    if !ns.ch.bdev().io_type_supported(IoType::Flush) {
        // Nothing volatile to flush.
        qp.finish(req, Status::SUCCESS, 0);
        return Ok(());
    }
    submit(qp, ns, req, |ctx| ns.ch.flush(io_done, ctx))
}

fn write_zeroes(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr) -> Result<(), Status> {
    // SAFETY: the request is ours until completed.
    let r = unsafe { &*req.as_ptr() };
    let (slba, nlb) = lba_range(r, ns)?;
    submit(qp, ns, req, |ctx| {
        ns.ch.write_zeroes(slba, nlb, io_done, ctx)
    })
}

/// Completion of a single bdev I/O standing for the whole command.
fn io_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the request submitted by `submit`, still ours.
    let req = unsafe { req_of(ctx) };
    // SAFETY: as above.
    let r = unsafe { &mut *req.as_ptr() };
    // SAFETY: `submit` took this reference for the I/O that is now complete.
    let qp = unsafe { release_qpair(r) };
    let kind = match r.cmd.opc {
        opc::READ => IoType::Read,
        opc::WRITE => IoType::Write,
        opc::FLUSH => IoType::Flush,
        _ => IoType::WriteZeroes,
    };
    r.rsp.set(Status::from_io(status, kind));
    qp.complete(req);
}

// ---- Dataset Management ----

/// One range: (starting LBA, blocks).
fn dsm_range(r: &NvmfRequest, i: usize) -> Option<(u64, u64)> {
    let mut b = [0u8; DSM_RANGE_LEN];
    // SAFETY: a request's data buffers are valid and ours while it runs (request.rs).
    if unsafe { iov::copy_from_iovs(r.data_iovs(), i * DSM_RANGE_LEN, &mut b) } < DSM_RANGE_LEN {
        return None;
    }
    let nlb = u32::from_le_bytes([b[4], b[5], b[6], b[7]]);
    let slba = u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]);
    Some((slba, u64::from(nlb)))
}

fn dsm_start(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr) -> Result<(), Status> {
    // SAFETY: the request is ours until completed.
    let r = unsafe { &mut *req.as_ptr() };
    let nr = (r.cmd.cdw10 & 0xff) as usize + 1;
    if r.xfer != DataXfer::HostToController || (r.length as usize) < nr * DSM_RANGE_LEN {
        return Err(Status::DATA_SGL_LENGTH_INVALID);
    }
    if r.cmd.cdw11 & DSM_AD == 0 || !ns.ns.supports_unmap {
        // Only deallocation does anything here; the other attributes are hints.
        qp.finish(req, Status::SUCCESS, 0);
        return Ok(());
    }
    for i in 0..nr {
        let (slba, nlb) = dsm_range(r, i).ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
        if nlb > 0 && slba.checked_add(nlb).is_none_or(|e| e > ns.num_blocks()) {
            return Err(Status::LBA_OUT_OF_RANGE);
        }
    }
    hold_qpair(qp, r);
    r.core_ctx[1] = 0;
    r.core_ctx[2] = 0;
    r.core_ctx[3] = 0;
    dsm_continue(req);
    Ok(())
}

/// Submit the remaining ranges (until done or the channel runs out of descriptors).
fn dsm_continue(req: ReqPtr) {
    // SAFETY: the request is ours until completed; core_ctx[0] holds a queue pair reference.
    let r = unsafe { &mut *req.as_ptr() };
    // SAFETY: the pointer is a live `Rc` (held by this command); borrowing it is fine.
    let qp = unsafe { &*(r.core_ctx[0] as *const Qpair) };
    let nr = (r.cmd.cdw10 & 0xff) as u64 + 1;
    let ns = qp.io_ns().and_then(|t| t.get(r.cmd.nsid));
    while r.core_ctx[3] < nr {
        let Some(ns) = ns.as_ref() else {
            r.core_ctx[2] = u64::from(Status::INVALID_NAMESPACE_OR_FORMAT.to_field());
            r.core_ctx[3] = nr;
            break;
        };
        let i = r.core_ctx[3] as usize;
        let Some((slba, nlb)) = dsm_range(r, i) else {
            r.core_ctx[3] = nr;
            break;
        };
        if nlb == 0 {
            r.core_ctx[3] += 1;
            continue;
        }
        match ns.ch.unmap(slba, nlb, dsm_done, req.as_ptr() as usize) {
            Ok(()) => {
                r.core_ctx[1] += 1;
                r.core_ctx[3] += 1;
            }
            Err(SubmitError::NoDescriptor) => {
                ns.ch
                    .wait_for_descriptor(Box::new(move || dsm_continue(req)));
                return;
            }
            Err(e) => {
                let s = match e {
                    SubmitError::OutOfRange => Status::LBA_OUT_OF_RANGE,
                    SubmitError::Unsupported => Status::INVALID_OPCODE,
                    _ => Status::INTERNAL_DEVICE_ERROR,
                };
                r.core_ctx[2] = u64::from(s.to_field());
                r.core_ctx[3] = nr;
            }
        }
    }
    if r.core_ctx[1] == 0 {
        dsm_finish(req);
    }
}

fn dsm_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the DSM request, still ours.
    let req = unsafe { req_of(ctx) };
    // SAFETY: as above.
    let r = unsafe { &mut *req.as_ptr() };
    r.core_ctx[1] -= 1;
    if status != IoStatus::Success && r.core_ctx[2] == 0 {
        r.core_ctx[2] = u64::from(Status::from_io(status, IoType::Unmap).to_field());
    }
    let nr = (r.cmd.cdw10 & 0xff) as u64 + 1;
    if r.core_ctx[1] == 0 && r.core_ctx[3] >= nr {
        dsm_finish(req);
    }
}

fn dsm_finish(req: ReqPtr) {
    // SAFETY: the request is ours; core_ctx[0] holds the reference taken in `dsm_start`.
    let r = unsafe { &mut *req.as_ptr() };
    // SAFETY: released exactly once, here.
    let qp = unsafe { release_qpair(r) };
    r.rsp.set(Status::from_field(r.core_ctx[2] as u16));
    qp.complete(req);
}

// ---- Compare (rare: a pool buffer per command is fine) ----

fn compare(qp: &Rc<Qpair>, ns: &NsChannel, req: ReqPtr) -> Result<(), Status> {
    // SAFETY: the request is ours until completed.
    let r = unsafe { &mut *req.as_ptr() };
    let (slba, nlb) = lba_range(r, ns)?;
    check_len(r, ns, nlb, DataXfer::HostToController)?;
    let len = r.length as usize;
    if len > keel_reactor::pool::MAX_CLASS {
        return Err(Status::INVALID_FIELD);
    }
    let mut buf = match keel_reactor::pool::alloc(len) {
        Ok(b) => Box::new(b),
        Err(e) => {
            log::warn!("nvmf: Compare: no buffer: {e}");
            return Err(Status::INTERNAL_DEVICE_ERROR);
        }
    };
    // SAFETY: the buffer is owned by the command (core_ctx[1]) until `compare_done`.
    let v = [unsafe { IoVec::from_raw(buf.as_mut_ptr(), len) }];
    let raw = Box::into_raw(buf);
    r.core_ctx[1] = raw as u64;
    hold_qpair(qp, r);
    match ns
        .ch
        .read(&v, slba, nlb, compare_done, req.as_ptr() as usize)
    {
        Ok(()) => Ok(()),
        Err(e) => {
            // SAFETY: both were taken just above and not handed to the bdev layer.
            drop(unsafe { release_qpair(r) });
            // SAFETY: as above (a retry allocates a new buffer).
            drop(unsafe { Box::from_raw(raw) });
            submit_failed(qp, ns, req, e)
        }
    }
}

fn compare_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the Compare request, still ours.
    let req = unsafe { req_of(ctx) };
    // SAFETY: as above.
    let r = unsafe { &mut *req.as_ptr() };
    // SAFETY: `submit` took this reference for the read that is now complete.
    let qp = unsafe { release_qpair(r) };
    // SAFETY: `compare` stored the boxed buffer there; released once, here.
    let buf = unsafe { Box::from_raw(r.core_ctx[1] as *mut keel_reactor::pool::DmaBuf) };
    let st = if status != IoStatus::Success {
        Status::from_io(status, IoType::Read)
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
