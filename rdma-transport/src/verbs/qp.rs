//! Queue pairs. A QP is created on a CM id ([`super::CmId::create_qp`]) and destroyed by the
//! id before the id itself; it holds the PD, CQs and SRQ it uses so they outlive it.

use super::{CompletionQueue, ProtectionDomain, SharedReceiveQueue};
use crate::ffi::verbs as fv;
use std::ptr::NonNull;
use std::sync::Arc;

/// What a new RC QP uses and how big it is.
#[derive(Clone)]
pub struct QpInit {
    /// CQ for send-queue completions.
    pub send_cq: Arc<CompletionQueue>,
    /// CQ for receive completions.
    pub recv_cq: Arc<CompletionQueue>,
    /// Shared receive queue (then `max_recv_wr`/`max_recv_sge` are ignored).
    pub srq: Option<Arc<SharedReceiveQueue>>,
    /// Send queue depth.
    pub max_send_wr: u32,
    /// Receive queue depth (without an SRQ).
    pub max_recv_wr: u32,
    /// SGEs per send.
    pub max_send_sge: u32,
    /// SGEs per receive (without an SRQ).
    pub max_recv_sge: u32,
    /// Largest inline send payload.
    pub max_inline_data: u32,
    /// Every send generates a completion (otherwise only `SendWr::signaled` ones).
    pub sq_sig_all: bool,
}

/// A reliable-connected queue pair owned by a [`super::CmId`].
pub struct QueuePair {
    pub(super) ptr: NonNull<fv::ibv_qp>,
    pub(super) qp_num: u32,
    pub(super) caps: fv::ibv_qp_cap,
    pub(super) _pd: Arc<ProtectionDomain>,
    pub(super) _send_cq: Arc<CompletionQueue>,
    pub(super) _recv_cq: Arc<CompletionQueue>,
    pub(super) srq: Option<Arc<SharedReceiveQueue>>,
}

// SAFETY: libibverbs QP calls are thread-safe (providers lock the queues); the QP is destroyed
// only by its owning CmId.
unsafe impl Send for QueuePair {}
// SAFETY: as above.
unsafe impl Sync for QueuePair {}

impl QueuePair {
    /// The raw handle.
    pub fn as_ptr(&self) -> *mut fv::ibv_qp {
        self.ptr.as_ptr()
    }

    /// The QP number (appears in work completions).
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// Capacities granted by the device (send/recv depth, SGEs, inline size).
    pub fn caps(&self) -> fv::ibv_qp_cap {
        self.caps
    }

    /// Whether receives come from a shared receive queue.
    pub fn uses_srq(&self) -> bool {
        self.srq.is_some()
    }
}
