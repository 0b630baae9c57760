//! Hot path: work-request builders, posting and completion polling. Nothing here allocates:
//! work requests and SGEs live in caller-owned arrays, a chain is linked in place just before
//! the post, and completions are polled into a caller-provided batch.

use super::{CompletionQueue, Error, QueuePair, SharedReceiveQueue};
use crate::ffi::verbs as fv;
use std::marker::PhantomData;
use std::ptr;

/// One scatter/gather element: `len` bytes at `addr`, covered by the MR with key `lkey`.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Sge(fv::ibv_sge);

impl Sge {
    /// An SGE (see also [`super::MemoryRegion::sge`], which checks the range).
    pub const fn new(addr: u64, length: u32, lkey: u32) -> Self {
        Self(fv::ibv_sge { addr, length, lkey })
    }

    /// Start address.
    pub fn addr(&self) -> u64 {
        self.0.addr
    }

    /// Length in bytes.
    pub fn len(&self) -> u32 {
        self.0.length
    }

    /// Whether the SGE is empty.
    pub fn is_empty(&self) -> bool {
        self.0.length == 0
    }

    /// Local key.
    pub fn lkey(&self) -> u32 {
        self.0.lkey
    }
}

fn num_sge(sges: &[Sge]) -> libc::c_int {
    // More SGEs than c_int::MAX cannot be posted; the device rejects the clamped count.
    libc::c_int::try_from(sges.len()).unwrap_or(libc::c_int::MAX)
}

/// A send-queue work request that borrows its SGE list. Build them in a caller-owned array and
/// pass the slice to [`QueuePair::post_send`], which chains them in order.
#[repr(transparent)]
pub struct SendWr<'a> {
    raw: fv::ibv_send_wr,
    _sges: PhantomData<&'a [Sge]>,
}

impl<'a> SendWr<'a> {
    fn new(wr_id: u64, opcode: fv::ibv_wr_opcode, sges: &'a [Sge]) -> Self {
        Self {
            raw: fv::ibv_send_wr {
                wr_id,
                next: ptr::null_mut(),
                // The provider only reads the list; the cast to *mut follows the C signature.
                sg_list: sges.as_ptr().cast::<fv::ibv_sge>().cast_mut(),
                num_sge: num_sge(sges),
                opcode,
                send_flags: 0,
                imm_data_invalidate_rkey: 0,
                wr: fv::ibv_send_wr_wr {
                    atomic: fv::ibv_send_wr_atomic {
                        remote_addr: 0,
                        compare_add: 0,
                        swap: 0,
                        rkey: 0,
                    },
                },
                qp_type: fv::ibv_send_wr_qp_type {
                    xrc: fv::ibv_send_wr_xrc { remote_srqn: 0 },
                },
                tail: fv::ibv_send_wr_tail {
                    bind_mw: fv::ibv_send_wr_bind_mw {
                        mw: ptr::null_mut(),
                        rkey: 0,
                        bind_info: fv::ibv_mw_bind_info {
                            mr: ptr::null_mut(),
                            addr: 0,
                            length: 0,
                            mw_access_flags: 0,
                        },
                    },
                },
            },
            _sges: PhantomData,
        }
    }

    fn with_rdma(mut self, remote_addr: u64, rkey: u32) -> Self {
        self.raw.wr = fv::ibv_send_wr_wr {
            rdma: fv::ibv_send_wr_rdma { remote_addr, rkey },
        };
        self
    }

    /// SEND of the bytes in `sges` (a capsule).
    pub fn send(wr_id: u64, sges: &'a [Sge]) -> Self {
        Self::new(wr_id, fv::IBV_WR_SEND, sges)
    }

    /// SEND that also invalidates the peer's `rkey` (NVMe-oF SGL subtype 0xF).
    pub fn send_with_invalidate(wr_id: u64, sges: &'a [Sge], rkey: u32) -> Self {
        let mut wr = Self::new(wr_id, fv::IBV_WR_SEND_WITH_INV, sges);
        wr.raw.imm_data_invalidate_rkey = rkey;
        wr
    }

    /// RDMA WRITE of the local `sges` to the peer's `remote_addr`/`rkey`.
    pub fn rdma_write(wr_id: u64, sges: &'a [Sge], remote_addr: u64, rkey: u32) -> Self {
        Self::new(wr_id, fv::IBV_WR_RDMA_WRITE, sges).with_rdma(remote_addr, rkey)
    }

    /// RDMA READ from the peer's `remote_addr`/`rkey` into the local `sges`.
    pub fn rdma_read(wr_id: u64, sges: &'a [Sge], remote_addr: u64, rkey: u32) -> Self {
        Self::new(wr_id, fv::IBV_WR_RDMA_READ, sges).with_rdma(remote_addr, rkey)
    }

    /// Ask for a completion of this work request.
    pub fn signaled(mut self) -> Self {
        self.raw.send_flags |= fv::IBV_SEND_SIGNALED;
        self
    }

    /// Wait for earlier RDMA READs on the QP to finish first.
    pub fn fenced(mut self) -> Self {
        self.raw.send_flags |= fv::IBV_SEND_FENCE;
        self
    }

    /// Copy the payload into the work queue entry (≤ the QP's `max_inline_data`; no lkey).
    pub fn inline(mut self) -> Self {
        self.raw.send_flags |= fv::IBV_SEND_INLINE;
        self
    }

    /// Set the solicited-event bit on the peer.
    pub fn solicited(mut self) -> Self {
        self.raw.send_flags |= fv::IBV_SEND_SOLICITED;
        self
    }

    /// Forget the borrow of the SGE list, to queue the work request for a later post (e.g. one
    /// doorbell for everything a poll produced) in storage that outlives the borrow.
    ///
    /// # Safety
    /// The SGE list this work request was built from must stay valid, in place and unchanged
    /// until the work request is posted (the provider copies the list at the post) or dropped
    /// unposted. The data the SGEs describe is covered by [`QueuePair::post_send`]'s contract.
    pub unsafe fn detach(self) -> SendWr<'static> {
        SendWr {
            raw: self.raw,
            _sges: PhantomData,
        }
    }

    /// The caller's id.
    pub fn wr_id(&self) -> u64 {
        self.raw.wr_id
    }

    /// The raw work request (for inspection).
    pub fn raw(&self) -> &fv::ibv_send_wr {
        &self.raw
    }
}

/// A receive work request that borrows its SGE list.
#[repr(transparent)]
pub struct RecvWr<'a> {
    raw: fv::ibv_recv_wr,
    _sges: PhantomData<&'a [Sge]>,
}

impl<'a> RecvWr<'a> {
    /// A receive into `sges`.
    pub fn new(wr_id: u64, sges: &'a [Sge]) -> Self {
        Self {
            raw: fv::ibv_recv_wr {
                wr_id,
                next: ptr::null_mut(),
                sg_list: sges.as_ptr().cast::<fv::ibv_sge>().cast_mut(),
                num_sge: num_sge(sges),
            },
            _sges: PhantomData,
        }
    }

    /// The caller's id.
    pub fn wr_id(&self) -> u64 {
        self.raw.wr_id
    }

    /// The raw work request (for inspection).
    pub fn raw(&self) -> &fv::ibv_recv_wr {
        &self.raw
    }
}

/// A post failed at work request `index` of the slice (those before it were posted).
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("post failed at work request {index}: {error}")]
pub struct PostError {
    /// Index in the posted slice of the first work request not posted.
    pub index: usize,
    /// The provider's error.
    pub error: Error,
}

/// Links `wrs` into a chain through their `next` fields, in place.
///
/// # Safety
/// `base` points to `n` initialised, exclusively borrowed `T`s; `next` projects a `T` to its
/// `next` field.
unsafe fn link<T>(base: *mut T, n: usize, next: impl Fn(*mut T) -> *mut *mut T) {
    for i in 0..n {
        // SAFETY: i < n, so base.add(i) and (i+1 < n) base.add(i+1) are in the slice.
        unsafe {
            *next(base.add(i)) = if i + 1 < n {
                base.add(i + 1)
            } else {
                ptr::null_mut()
            }
        };
    }
}

fn bad_index<T>(base: *mut T, bad: *mut T, n: usize) -> usize {
    let off = (bad as usize).wrapping_sub(base as usize) / std::mem::size_of::<T>().max(1);
    off.min(n)
}

impl QueuePair {
    /// Posts `wrs` to the send queue as one chain, in order.
    ///
    /// # Safety
    /// The memory each SGE describes must stay valid until the work request completes (or the
    /// QP is flushed), and must not be written (for SEND/RDMA WRITE sources) or accessed at
    /// all (for RDMA READ destinations) by the CPU in the meantime. Every lkey must belong to
    /// a live MR of this QP's PD covering the range.
    pub unsafe fn post_send(&self, wrs: &mut [SendWr<'_>]) -> Result<(), PostError> {
        let n = wrs.len();
        if n == 0 {
            return Ok(());
        }
        let base = wrs.as_mut_ptr().cast::<fv::ibv_send_wr>();
        // SAFETY: SendWr is repr(transparent) over ibv_send_wr; the slice is exclusively ours.
        unsafe { link(base, n, |w| ptr::addr_of_mut!((*w).next)) };
        let mut bad: *mut fv::ibv_send_wr = ptr::null_mut();
        // SAFETY: the QP is alive; the chain and its SGE lists are valid for the call (the
        // provider copies them); the caller upholds the data-buffer contract.
        let rc = unsafe { fv::ibv_post_send(self.as_ptr(), base, &mut bad) };
        if rc == 0 {
            return Ok(());
        }
        Err(PostError {
            index: bad_index(base, bad, n),
            error: Error::new("ibv_post_send", rc.abs()),
        })
    }

    /// Posts receives to this QP's own receive queue (not when it uses an SRQ).
    ///
    /// # Safety
    /// The receive buffers must stay valid and untouched by the CPU until their completion,
    /// with lkeys of live MRs of this QP's PD (`LOCAL_WRITE` access).
    pub unsafe fn post_recv(&self, wrs: &mut [RecvWr<'_>]) -> Result<(), PostError> {
        // SAFETY: forwarded contract.
        unsafe { post_recv_chain(wrs, |w, bad| fv::ibv_post_recv(self.as_ptr(), w, bad)) }
    }
}

impl SharedReceiveQueue {
    /// Posts receives to the shared receive queue.
    ///
    /// # Safety
    /// As for [`QueuePair::post_recv`].
    pub unsafe fn post_recv(&self, wrs: &mut [RecvWr<'_>]) -> Result<(), PostError> {
        // SAFETY: forwarded contract.
        unsafe { post_recv_chain(wrs, |w, bad| fv::ibv_post_srq_recv(self.as_ptr(), w, bad)) }
    }
}

/// # Safety
/// `post` must be a receive post on a live queue; the caller upholds the buffer contract.
unsafe fn post_recv_chain(
    wrs: &mut [RecvWr<'_>],
    post: impl FnOnce(*mut fv::ibv_recv_wr, *mut *mut fv::ibv_recv_wr) -> libc::c_int,
) -> Result<(), PostError> {
    let n = wrs.len();
    if n == 0 {
        return Ok(());
    }
    let base = wrs.as_mut_ptr().cast::<fv::ibv_recv_wr>();
    // SAFETY: RecvWr is repr(transparent) over ibv_recv_wr; the slice is exclusively ours.
    unsafe { link(base, n, |w| ptr::addr_of_mut!((*w).next)) };
    let mut bad: *mut fv::ibv_recv_wr = ptr::null_mut();
    let rc = post(base, &mut bad);
    if rc == 0 {
        return Ok(());
    }
    Err(PostError {
        index: bad_index(base, bad, n),
        error: Error::new("ibv_post_recv", rc.abs()),
    })
}

/// What a completed work request was.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WcOpcode {
    /// SEND (also SEND_WITH_INV).
    Send,
    /// RDMA WRITE.
    RdmaWrite,
    /// RDMA READ.
    RdmaRead,
    /// Local invalidate.
    LocalInv,
    /// A receive.
    Recv,
    /// A receive of RDMA WRITE with immediate.
    RecvRdmaWithImm,
    /// Anything else (raw value).
    Other(u32),
}

/// A work completion (`struct ibv_wc`). `Default` gives an empty slot for a poll batch.
#[repr(transparent)]
#[derive(Clone, Copy, Debug, Default)]
pub struct WorkCompletion(fv::ibv_wc);

impl WorkCompletion {
    /// The completed work request's id.
    pub fn wr_id(&self) -> u64 {
        self.0.wr_id
    }

    /// Whether it succeeded.
    pub fn is_success(&self) -> bool {
        self.0.status == fv::IBV_WC_SUCCESS
    }

    /// Whether it was flushed because the QP went to the error state (normal at teardown).
    pub fn is_flush(&self) -> bool {
        self.0.status == fv::IBV_WC_WR_FLUSH_ERR
    }

    /// Raw `IBV_WC_*` status.
    pub fn status(&self) -> u32 {
        self.0.status
    }

    /// Text of the status.
    pub fn status_str(&self) -> &'static str {
        // A completion can be built without rdma-core (tests); then there is no text for it.
        if Error::load_rdma_core().is_err() {
            return "unknown";
        }
        // SAFETY: rdma-core is loaded; returns a static string for any value (or null).
        let p = unsafe { fv::ibv_wc_status_str(self.0.status) };
        if p.is_null() {
            return "unknown";
        }
        // SAFETY: non-null static NUL-terminated string owned by libibverbs.
        unsafe { std::ffi::CStr::from_ptr(p) }
            .to_str()
            .unwrap_or("unknown")
    }

    /// The opcode (only meaningful on success, except that receives are always receives).
    pub fn opcode(&self) -> WcOpcode {
        match self.0.opcode {
            fv::IBV_WC_SEND => WcOpcode::Send,
            fv::IBV_WC_RDMA_WRITE => WcOpcode::RdmaWrite,
            fv::IBV_WC_RDMA_READ => WcOpcode::RdmaRead,
            fv::IBV_WC_LOCAL_INV => WcOpcode::LocalInv,
            fv::IBV_WC_RECV => WcOpcode::Recv,
            fv::IBV_WC_RECV_RDMA_WITH_IMM => WcOpcode::RecvRdmaWithImm,
            other => WcOpcode::Other(other),
        }
    }

    /// Bytes received (receives) or read (RDMA READ).
    pub fn byte_len(&self) -> u32 {
        self.0.byte_len
    }

    /// The local QP number.
    pub fn qp_num(&self) -> u32 {
        self.0.qp_num
    }

    /// The rkey the peer invalidated with SEND_WITH_INV, if it did.
    pub fn invalidated_rkey(&self) -> Option<u32> {
        (self.0.wc_flags & fv::IBV_WC_WITH_INV != 0).then_some(self.0.imm_data_invalidated_rkey)
    }

    /// Immediate data (host order), if present.
    pub fn imm_data(&self) -> Option<u32> {
        (self.0.wc_flags & fv::IBV_WC_WITH_IMM != 0)
            .then_some(u32::from_be(self.0.imm_data_invalidated_rkey))
    }

    /// Vendor error syndrome.
    pub fn vendor_err(&self) -> u32 {
        self.0.vendor_err
    }
}

impl CompletionQueue {
    /// Polls up to `batch.len()` completions into `batch`; returns how many were written.
    pub fn poll(&self, batch: &mut [WorkCompletion]) -> Result<usize, Error> {
        let n = libc::c_int::try_from(batch.len()).unwrap_or(libc::c_int::MAX);
        // SAFETY: the CQ is alive; `batch` has room for `n` ibv_wc (WorkCompletion is
        // repr(transparent) over ibv_wc).
        let rc = unsafe { fv::ibv_poll_cq(self.as_ptr(), n, batch.as_mut_ptr().cast()) };
        usize::try_from(rc)
            .map_err(|_| Error::new("ibv_poll_cq", rc.checked_abs().unwrap_or(libc::EIO)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_fill_the_c_fields() {
        let sges = [Sge::new(0x1000, 64, 7), Sge::new(0x2000, 16, 8)];
        let w = SendWr::rdma_write(11, &sges, 0xdead_0000, 0x55).signaled();
        let r = w.raw();
        assert_eq!(r.wr_id, 11);
        assert_eq!(r.opcode, fv::IBV_WR_RDMA_WRITE);
        assert_eq!(r.num_sge, 2);
        assert_eq!(r.sg_list.cast_const(), sges.as_ptr().cast());
        assert_eq!(r.send_flags, fv::IBV_SEND_SIGNALED);
        // SAFETY: the builder wrote the rdma member.
        let rdma = unsafe { r.wr.rdma };
        assert_eq!((rdma.remote_addr, rdma.rkey), (0xdead_0000, 0x55));

        let w = SendWr::send_with_invalidate(3, &sges[..1], 0x99)
            .inline()
            .fenced();
        assert_eq!(w.raw().opcode, fv::IBV_WR_SEND_WITH_INV);
        assert_eq!(w.raw().imm_data_invalidate_rkey, 0x99);
        assert_eq!(w.raw().send_flags, fv::IBV_SEND_INLINE | fv::IBV_SEND_FENCE);
        assert_eq!(
            SendWr::rdma_read(1, &sges, 1, 2).raw().opcode,
            fv::IBV_WR_RDMA_READ
        );
        assert_eq!(SendWr::send(1, &[]).raw().num_sge, 0);
    }

    #[test]
    fn link_chains_in_order_and_terminates() {
        let sges = [Sge::new(1, 2, 3)];
        let mut wrs = [
            RecvWr::new(1, &sges),
            RecvWr::new(2, &sges),
            RecvWr::new(3, &sges),
        ];
        let base = wrs.as_mut_ptr().cast::<fv::ibv_recv_wr>();
        // SAFETY: base points to 3 exclusively borrowed RecvWr (repr(transparent)).
        unsafe { link(base, 3, |w| ptr::addr_of_mut!((*w).next)) };
        // SAFETY: still in bounds of `wrs`.
        unsafe {
            assert_eq!((*base).next, base.add(1));
            assert_eq!((*base.add(1)).next, base.add(2));
            assert!((*base.add(2)).next.is_null());
            assert_eq!(bad_index(base, base.add(2), 3), 2);
        }
        assert_eq!(bad_index(base, ptr::null_mut(), 3), 3);
    }

    #[test]
    fn work_completion_accessors() {
        let mut wc = WorkCompletion::default();
        assert!(wc.is_success());
        assert_eq!(wc.opcode(), WcOpcode::Send);
        assert_eq!(wc.invalidated_rkey(), None);
        wc.0.opcode = fv::IBV_WC_RECV;
        wc.0.wc_flags = fv::IBV_WC_WITH_INV;
        wc.0.imm_data_invalidated_rkey = 0x1234;
        wc.0.status = fv::IBV_WC_WR_FLUSH_ERR;
        assert_eq!(wc.opcode(), WcOpcode::Recv);
        assert_eq!(wc.invalidated_rkey(), Some(0x1234));
        assert!(wc.is_flush() && !wc.is_success());
        let text = if Error::load_rdma_core().is_ok() {
            "Work Request Flushed Error"
        } else {
            "unknown"
        };
        assert_eq!(wc.status_str(), text);
    }
}
