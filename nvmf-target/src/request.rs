//! HOT PATH: one NVMe command in flight, shared between a transport and the core.
//!
//! A transport keeps a pre-allocated pool of [`NvmfRequest`]s per queue pair (no allocation per
//! command). For each command capsule it fills `cmd`, works out `xfer` and `length` from the
//! SGL, provides the data buffers in `iovs` (host-to-controller data already received; for
//! controller-to-host, buffers to be filled), and calls [`crate::target::Qpair::execute`]. The
//! core fills `rsp` (status, `cdw0`, `cid`) and, for controller-to-host commands, the data, then
//! calls [`crate::transport::QpairTransport::request_complete`]; the transport sends the data
//! and the response and recycles the request.

use crate::target::Qpair;
use keel_bdev::{IoType, IoVec, IoWaitEntry, MAX_IOVS};
use keel_nvme::cmd::{DataXfer, NvmeCmd, NvmeCpl};
use keel_reactor::pool::DmaBuf;
use std::ptr::NonNull;
use std::rc::Rc;

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
    /// What the core keeps while the command runs, by kind of command. A transport sets it
    /// to [`CoreCtx::Idle`] for each new command and never reads it otherwise.
    pub core_ctx: CoreCtx,
    /// The core's entry for waiting on a bdev channel's free descriptor (back-pressure without
    /// allocation). Queued only while the command runs; the request's address is stable then.
    pub(crate) io_wait: IoWaitEntry,
}

/// The core's per-command state while a bdev I/O of the command is in flight, by kind of
/// command. Every running kind holds one strong reference to the queue pair, so the queue
/// pair outlives every command it started; completion takes the state back out
/// (`std::mem::take`), which leaves [`CoreCtx::Idle`].
#[derive(Default)]
pub enum CoreCtx {
    /// No bdev I/O in flight (a fresh command, admin and Fabrics commands, finished ones).
    #[default]
    Idle,
    /// One bdev I/O stands for the whole command (Read, Write, Flush, Write Zeroes).
    Io {
        /// The queue pair the command runs on.
        qp: Rc<Qpair>,
        /// The bdev I/O type, for mapping its status to an NVMe status.
        kind: IoType,
    },
    /// Waiting for a free descriptor on the namespace's channel, to run again from the start.
    Waiting {
        /// The queue pair the command runs on.
        qp: Rc<Qpair>,
    },
    /// Dataset Management deallocation: one unmap per range.
    Dsm(DsmCtx),
    /// Compare: a read of the stored blocks into `buf`, compared with the host's data.
    Compare {
        /// The queue pair the command runs on.
        qp: Rc<Qpair>,
        /// The buffer the stored blocks are read into.
        buf: DmaBuf,
    },
}

/// Dataset Management progress ([`CoreCtx::Dsm`]).
pub struct DsmCtx {
    /// The queue pair the command runs on.
    pub qp: Rc<Qpair>,
    /// Unmaps submitted and not yet completed.
    pub inflight: u32,
    /// The first error, as a CQE status field (0: none so far).
    pub status: u16,
    /// The next range to submit.
    pub next: u32,
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
            core_ctx: CoreCtx::Idle,
            io_wait: IoWaitEntry::new(no_wait, 0),
        }
    }
    /// The valid data buffers.
    pub fn data_iovs(&self) -> &[IoVec] {
        &self.iovs[..self.iovcnt]
    }
}

/// The callback of a request's wait entry before the core sets one (never called).
fn no_wait(_: usize) {
    unreachable!("a request's wait entry was queued without a callback");
}

impl Default for NvmfRequest {
    fn default() -> Self {
        Self::new()
    }
}

/// Pointer to a request in a transport's pool; passed to the core and back. The pointee stays
/// valid and is not touched by the transport between `execute` and `request_complete`.
pub type ReqPtr = NonNull<NvmfRequest>;
