//! HOT PATH: one NVMe command in flight, shared between a transport and the core.
//!
//! A transport keeps a pre-allocated pool of [`NvmfRequest`]s per queue pair (no allocation per
//! command). For each command capsule it fills `cmd`, works out `xfer` and `length` from the
//! SGL, provides the data buffers in `iovs` (host-to-controller data already received; for
//! controller-to-host, buffers to be filled), and calls [`crate::target::Qpair::execute`]. The
//! core fills `rsp` (status, `cdw0`, `cid`) and, for controller-to-host commands, the data, then
//! calls [`crate::transport::QpairTransport::request_complete`]; the transport sends the data
//! and the response and recycles the request.

use keel_bdev::{IoVec, MAX_IOVS};
use keel_nvme::cmd::{DataXfer, NvmeCmd, NvmeCpl};
use std::ptr::NonNull;

/// One command in flight. Lives in the transport's per-queue-pair pool; its address is stable
/// while the command runs.
pub struct NvmfRequest {
    /// The submission queue entry as received.
    pub cmd: NvmeCmd,
    /// The completion to send (the core sets `cid`, `status`, `cdw0`; the transport `sqhd`,
    /// `sqid`).
    pub rsp: NvmeCpl,
    /// Data direction.
    pub xfer: DataXfer,
    /// Data length in bytes (from the SGL); 0 without data.
    pub length: u32,
    /// Data buffers: `iovcnt` valid entries covering exactly `length` bytes.
    pub iovs: [IoVec; MAX_IOVS],
    /// Number of valid entries in `iovs`.
    pub iovcnt: usize,
    /// For the transport's own use (e.g. its slot index).
    pub transport_ctx: usize,
    /// For the core's own use while the command runs (e.g. a namespace index, a child count).
    pub core_ctx: [u64; 4],
}

impl NvmfRequest {
    /// An empty request (pool initialisation).
    pub fn new() -> NvmfRequest {
        NvmfRequest {
            cmd: NvmeCmd::default(),
            rsp: NvmeCpl::default(),
            xfer: DataXfer::None,
            length: 0,
            iovs: [IoVec::EMPTY; MAX_IOVS],
            iovcnt: 0,
            transport_ctx: 0,
            core_ctx: [0; 4],
        }
    }
    /// The valid data buffers.
    pub fn data_iovs(&self) -> &[IoVec] {
        &self.iovs[..self.iovcnt]
    }
}

impl Default for NvmfRequest {
    fn default() -> Self {
        Self::new()
    }
}

/// Pointer to a request in a transport's pool; passed to the core and back. The pointee stays
/// valid and is not touched by the transport between `execute` and `request_complete`.
pub type ReqPtr = NonNull<NvmfRequest>;
