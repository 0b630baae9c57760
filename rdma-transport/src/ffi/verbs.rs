//! `libibverbs` declarations (rdma-core 44, `<infiniband/verbs.h>`): the structures Keel reads or
//! fills, the constants it uses, the exported functions it calls (a table filled when rdma-core
//! is loaded, [`super::rdma_core`]) and, in Rust, the per-I/O verbs that are `static inline` in
//! the header (they call the provider through `ibv_context->ops`, whose layout rdma-core keeps
//! stable for compatibility). Structures whose fields Keel never touches are opaque. Every
//! `repr(C)` type here is checked field by field against the C header by `layout_tests.rs`
//! (when the headers are installed). C enums are `u32` with named constants, so an unknown
//! value from the library is never undefined behaviour.

use libc::{c_char, c_int, c_uint, c_void, size_t};

macro_rules! opaque {
    ($($(#[$m:meta])* $name:ident),* $(,)?) => {$(
        $(#[$m])*
        #[repr(C)]
        pub struct $name {
            _private: [u8; 0],
            _not_send_sync: core::marker::PhantomData<(*mut u8, core::marker::PhantomPinned)>,
        }
    )*};
}

opaque!(
    /// `struct ibv_device`: a device entry of `ibv_get_device_list`.
    ibv_device,
    /// `struct ibv_ah`: an address handle (UD only; appears in `ibv_send_wr`).
    ibv_ah,
    /// `struct ibv_mw`: a memory window (appears in `ibv_send_wr`).
    ibv_mw,
    /// `struct ibv_sa_path_rec`: an InfiniBand path record (appears in `rdma_route`).
    ibv_sa_path_rec,
);

/// `enum ibv_wr_opcode` values.
pub type ibv_wr_opcode = c_uint;
/// RDMA WRITE.
pub const IBV_WR_RDMA_WRITE: ibv_wr_opcode = 0;
/// RDMA WRITE with immediate data.
pub const IBV_WR_RDMA_WRITE_WITH_IMM: ibv_wr_opcode = 1;
/// SEND.
pub const IBV_WR_SEND: ibv_wr_opcode = 2;
/// SEND with immediate data.
pub const IBV_WR_SEND_WITH_IMM: ibv_wr_opcode = 3;
/// RDMA READ.
pub const IBV_WR_RDMA_READ: ibv_wr_opcode = 4;
/// Local invalidate of an rkey.
pub const IBV_WR_LOCAL_INV: ibv_wr_opcode = 7;
/// SEND that also invalidates the peer's rkey (`invalidate_rkey`).
pub const IBV_WR_SEND_WITH_INV: ibv_wr_opcode = 9;

/// `enum ibv_send_flags`: fence after previous RDMA READs.
pub const IBV_SEND_FENCE: c_uint = 1 << 0;
/// Generate a completion for this work request.
pub const IBV_SEND_SIGNALED: c_uint = 1 << 1;
/// Set the solicited event bit on the peer.
pub const IBV_SEND_SOLICITED: c_uint = 1 << 2;
/// Copy the payload into the WQE (small sends; no lkey needed).
pub const IBV_SEND_INLINE: c_uint = 1 << 3;

/// `enum ibv_wc_status` values.
pub type ibv_wc_status = c_uint;
/// The work request completed.
pub const IBV_WC_SUCCESS: ibv_wc_status = 0;
/// The work request was flushed (QP in error state).
pub const IBV_WC_WR_FLUSH_ERR: ibv_wc_status = 5;

/// `enum ibv_wc_opcode` values.
pub type ibv_wc_opcode = c_uint;
/// A SEND completed.
pub const IBV_WC_SEND: ibv_wc_opcode = 0;
/// An RDMA WRITE completed.
pub const IBV_WC_RDMA_WRITE: ibv_wc_opcode = 1;
/// An RDMA READ completed.
pub const IBV_WC_RDMA_READ: ibv_wc_opcode = 2;
/// A local invalidate completed.
pub const IBV_WC_LOCAL_INV: ibv_wc_opcode = 6;
/// A receive completed (any value with this bit set is a receive).
pub const IBV_WC_RECV: ibv_wc_opcode = 1 << 7;
/// A receive of an RDMA WRITE with immediate completed.
pub const IBV_WC_RECV_RDMA_WITH_IMM: ibv_wc_opcode = (1 << 7) + 1;

/// `enum ibv_wc_flags`: `imm_data` is valid.
pub const IBV_WC_WITH_IMM: c_uint = 1 << 1;
/// `invalidated_rkey` is valid (the peer sent SEND_WITH_INV).
pub const IBV_WC_WITH_INV: c_uint = 1 << 3;

/// `enum ibv_access_flags`: local write (needed by any receive or RDMA READ target).
pub const IBV_ACCESS_LOCAL_WRITE: c_uint = 1;
/// Remote peers may RDMA WRITE into the region.
pub const IBV_ACCESS_REMOTE_WRITE: c_uint = 1 << 1;
/// Remote peers may RDMA READ from the region.
pub const IBV_ACCESS_REMOTE_READ: c_uint = 1 << 2;
/// Remote atomics.
pub const IBV_ACCESS_REMOTE_ATOMIC: c_uint = 1 << 3;

/// `enum ibv_qp_type` values.
pub type ibv_qp_type = c_uint;
/// Reliable connected.
pub const IBV_QPT_RC: ibv_qp_type = 2;

/// `union ibv_gid`.
#[repr(C)]
#[derive(Clone, Copy)]
pub union ibv_gid {
    /// The 16 raw bytes.
    pub raw: [u8; 16],
    /// Subnet prefix and interface id (big-endian).
    pub global: ibv_gid_global,
}

/// `union ibv_gid`'s `global` member.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibv_gid_global {
    /// Subnet prefix, big-endian.
    pub subnet_prefix: u64,
    /// Interface id, big-endian.
    pub interface_id: u64,
}

/// `struct ibv_device_attr` (`ibv_query_device`).
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_device_attr {
    pub fw_ver: [c_char; 64],
    pub node_guid: u64,
    pub sys_image_guid: u64,
    pub max_mr_size: u64,
    pub page_size_cap: u64,
    pub vendor_id: u32,
    pub vendor_part_id: u32,
    pub hw_ver: u32,
    pub max_qp: c_int,
    pub max_qp_wr: c_int,
    pub device_cap_flags: c_uint,
    pub max_sge: c_int,
    pub max_sge_rd: c_int,
    pub max_cq: c_int,
    pub max_cqe: c_int,
    pub max_mr: c_int,
    pub max_pd: c_int,
    pub max_qp_rd_atom: c_int,
    pub max_ee_rd_atom: c_int,
    pub max_res_rd_atom: c_int,
    pub max_qp_init_rd_atom: c_int,
    pub max_ee_init_rd_atom: c_int,
    pub atomic_cap: c_uint,
    pub max_ee: c_int,
    pub max_rdd: c_int,
    pub max_mw: c_int,
    pub max_raw_ipv6_qp: c_int,
    pub max_raw_ethy_qp: c_int,
    pub max_mcast_grp: c_int,
    pub max_mcast_qp_attach: c_int,
    pub max_total_mcast_qp_attach: c_int,
    pub max_ah: c_int,
    pub max_fmr: c_int,
    pub max_map_per_fmr: c_int,
    pub max_srq: c_int,
    pub max_srq_wr: c_int,
    pub max_srq_sge: c_int,
    pub max_pkeys: u16,
    pub local_ca_ack_delay: u8,
    pub phys_port_cnt: u8,
}

/// `struct ibv_pd`: a protection domain.
#[repr(C)]
pub struct ibv_pd {
    /// The device context the PD belongs to.
    pub context: *mut ibv_context,
    /// Kernel handle.
    pub handle: u32,
}

/// `struct ibv_mr`: a registered memory region.
#[repr(C)]
pub struct ibv_mr {
    /// Device context.
    pub context: *mut ibv_context,
    /// Protection domain.
    pub pd: *mut ibv_pd,
    /// Start of the registered range.
    pub addr: *mut c_void,
    /// Length of the registered range.
    pub length: size_t,
    /// Kernel handle.
    pub handle: u32,
    /// Local key (for SGEs).
    pub lkey: u32,
    /// Remote key (for peers' RDMA READ/WRITE).
    pub rkey: u32,
}

/// `struct ibv_comp_channel`: completion event channel.
#[repr(C)]
pub struct ibv_comp_channel {
    /// Device context.
    pub context: *mut ibv_context,
    /// File descriptor that becomes readable when a CQ event is pending.
    pub fd: c_int,
    /// Number of CQs using the channel.
    pub refcnt: c_int,
}

/// `struct ibv_sge`: one scatter/gather element.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ibv_sge {
    /// Local virtual address.
    pub addr: u64,
    /// Length in bytes.
    pub length: u32,
    /// Local key of the memory region covering the range.
    pub lkey: u32,
}

/// `ibv_send_wr.wr.rdma`: RDMA READ/WRITE target.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibv_send_wr_rdma {
    /// Remote virtual address.
    pub remote_addr: u64,
    /// Remote key.
    pub rkey: u32,
}

/// `ibv_send_wr.wr.atomic`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_send_wr_atomic {
    pub remote_addr: u64,
    pub compare_add: u64,
    pub swap: u64,
    pub rkey: u32,
}

/// `ibv_send_wr.wr.ud`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_send_wr_ud {
    pub ah: *mut ibv_ah,
    pub remote_qpn: u32,
    pub remote_qkey: u32,
}

/// `ibv_send_wr.wr`: per-opcode parameters.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union ibv_send_wr_wr {
    pub rdma: ibv_send_wr_rdma,
    pub atomic: ibv_send_wr_atomic,
    pub ud: ibv_send_wr_ud,
}

/// `ibv_send_wr.qp_type.xrc`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_send_wr_xrc {
    pub remote_srqn: u32,
}

/// `ibv_send_wr.qp_type`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union ibv_send_wr_qp_type {
    pub xrc: ibv_send_wr_xrc,
}

/// `struct ibv_mw_bind_info`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_mw_bind_info {
    pub mr: *mut ibv_mr,
    pub addr: u64,
    pub length: u64,
    pub mw_access_flags: c_uint,
}

/// `ibv_send_wr.bind_mw`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_send_wr_bind_mw {
    pub mw: *mut ibv_mw,
    pub rkey: u32,
    pub bind_info: ibv_mw_bind_info,
}

/// `ibv_send_wr.tso`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_send_wr_tso {
    pub hdr: *mut c_void,
    pub hdr_sz: u16,
    pub mss: u16,
}

/// The trailing anonymous union of `ibv_send_wr` (`bind_mw` / `tso`).
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union ibv_send_wr_tail {
    pub bind_mw: ibv_send_wr_bind_mw,
    pub tso: ibv_send_wr_tso,
}

/// `struct ibv_send_wr`: a send-queue work request.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibv_send_wr {
    /// Caller's id, returned in the completion.
    pub wr_id: u64,
    /// Next work request of the chain, or null.
    pub next: *mut ibv_send_wr,
    /// Scatter/gather list.
    pub sg_list: *mut ibv_sge,
    /// Entries in `sg_list`.
    pub num_sge: c_int,
    /// `IBV_WR_*`.
    pub opcode: ibv_wr_opcode,
    /// `IBV_SEND_*`.
    pub send_flags: c_uint,
    /// `imm_data` (big-endian) for `*_WITH_IMM`, `invalidate_rkey` for `*_INV`: one union.
    pub imm_data_invalidate_rkey: u32,
    /// Per-opcode parameters.
    pub wr: ibv_send_wr_wr,
    /// XRC parameters.
    pub qp_type: ibv_send_wr_qp_type,
    /// Memory-window bind / TSO parameters.
    pub tail: ibv_send_wr_tail,
}

/// `struct ibv_recv_wr`: a receive work request.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct ibv_recv_wr {
    /// Caller's id, returned in the completion.
    pub wr_id: u64,
    /// Next work request of the chain, or null.
    pub next: *mut ibv_recv_wr,
    /// Scatter list.
    pub sg_list: *mut ibv_sge,
    /// Entries in `sg_list`.
    pub num_sge: c_int,
}

/// `struct ibv_wc`: a work completion.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_wc {
    /// The `wr_id` of the completed work request.
    pub wr_id: u64,
    /// `IBV_WC_*` status.
    pub status: ibv_wc_status,
    /// `IBV_WC_*` opcode (valid only on success).
    pub opcode: ibv_wc_opcode,
    /// Vendor error syndrome.
    pub vendor_err: u32,
    /// Bytes received (receives) or transferred (RDMA READ).
    pub byte_len: u32,
    /// `imm_data` (big-endian, `IBV_WC_WITH_IMM`) or `invalidated_rkey` (`IBV_WC_WITH_INV`).
    pub imm_data_invalidated_rkey: u32,
    /// Local QP number.
    pub qp_num: u32,
    /// Remote QP number (UD).
    pub src_qp: u32,
    /// `IBV_WC_*` flags.
    pub wc_flags: c_uint,
    /// P_Key index (UD).
    pub pkey_index: u16,
    /// Source LID (UD).
    pub slid: u16,
    /// Service level (UD).
    pub sl: u8,
    /// DLID path bits (UD).
    pub dlid_path_bits: u8,
}

/// `struct ibv_srq_attr`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_srq_attr {
    /// Maximum outstanding receive work requests.
    pub max_wr: u32,
    /// Maximum SGEs per receive work request.
    pub max_sge: u32,
    /// Limit event threshold (0: off).
    pub srq_limit: u32,
}

/// `struct ibv_srq_init_attr`.
#[repr(C)]
pub struct ibv_srq_init_attr {
    /// Caller's context for async events.
    pub srq_context: *mut c_void,
    /// Requested (in) and granted (out) sizes.
    pub attr: ibv_srq_attr,
}

/// `struct ibv_qp_cap`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct ibv_qp_cap {
    /// Send queue depth.
    pub max_send_wr: u32,
    /// Receive queue depth (ignored with an SRQ).
    pub max_recv_wr: u32,
    /// SGEs per send work request.
    pub max_send_sge: u32,
    /// SGEs per receive work request.
    pub max_recv_sge: u32,
    /// Largest inline payload.
    pub max_inline_data: u32,
}

/// `struct ibv_qp_init_attr`.
#[repr(C)]
pub struct ibv_qp_init_attr {
    /// Caller's context for async events.
    pub qp_context: *mut c_void,
    /// CQ for send completions.
    pub send_cq: *mut ibv_cq,
    /// CQ for receive completions.
    pub recv_cq: *mut ibv_cq,
    /// Shared receive queue, or null.
    pub srq: *mut ibv_srq,
    /// Requested (in) and granted (out) capacities.
    pub cap: ibv_qp_cap,
    /// `IBV_QPT_*`.
    pub qp_type: ibv_qp_type,
    /// Nonzero: every send work request generates a completion.
    pub sq_sig_all: c_int,
}

/// `struct ibv_global_route`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_global_route {
    pub dgid: ibv_gid,
    pub flow_label: u32,
    pub sgid_index: u8,
    pub hop_limit: u8,
    pub traffic_class: u8,
}

/// `struct ibv_ah_attr`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct ibv_ah_attr {
    pub grh: ibv_global_route,
    pub dlid: u16,
    pub sl: u8,
    pub src_path_bits: u8,
    pub static_rate: u8,
    pub is_global: u8,
    pub port_num: u8,
}

/// `struct ibv_context_ops`: the provider's entry points. Only the data-path ones Keel calls
/// are typed; the others (mostly `_compat_*` slots kept for the ABI) are plain pointers.
#[repr(C)]
#[allow(missing_docs)]
pub struct ibv_context_ops {
    pub _compat_query_device: *mut c_void,
    pub _compat_query_port: *mut c_void,
    pub _compat_alloc_pd: *mut c_void,
    pub _compat_dealloc_pd: *mut c_void,
    pub _compat_reg_mr: *mut c_void,
    pub _compat_rereg_mr: *mut c_void,
    pub _compat_dereg_mr: *mut c_void,
    pub alloc_mw: *mut c_void,
    pub bind_mw: *mut c_void,
    pub dealloc_mw: *mut c_void,
    pub _compat_create_cq: *mut c_void,
    /// `ibv_poll_cq`.
    pub poll_cq: Option<unsafe extern "C" fn(*mut ibv_cq, c_int, *mut ibv_wc) -> c_int>,
    /// `ibv_req_notify_cq`.
    pub req_notify_cq: Option<unsafe extern "C" fn(*mut ibv_cq, c_int) -> c_int>,
    pub _compat_cq_event: *mut c_void,
    pub _compat_resize_cq: *mut c_void,
    pub _compat_destroy_cq: *mut c_void,
    pub _compat_create_srq: *mut c_void,
    pub _compat_modify_srq: *mut c_void,
    pub _compat_query_srq: *mut c_void,
    pub _compat_destroy_srq: *mut c_void,
    /// `ibv_post_srq_recv`.
    pub post_srq_recv: Option<
        unsafe extern "C" fn(*mut ibv_srq, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int,
    >,
    pub _compat_create_qp: *mut c_void,
    pub _compat_query_qp: *mut c_void,
    pub _compat_modify_qp: *mut c_void,
    pub _compat_destroy_qp: *mut c_void,
    /// `ibv_post_send`.
    pub post_send:
        Option<unsafe extern "C" fn(*mut ibv_qp, *mut ibv_send_wr, *mut *mut ibv_send_wr) -> c_int>,
    /// `ibv_post_recv`.
    pub post_recv:
        Option<unsafe extern "C" fn(*mut ibv_qp, *mut ibv_recv_wr, *mut *mut ibv_recv_wr) -> c_int>,
    pub _compat_create_ah: *mut c_void,
    pub _compat_destroy_ah: *mut c_void,
    pub _compat_attach_mcast: *mut c_void,
    pub _compat_detach_mcast: *mut c_void,
    pub _compat_async_event: *mut c_void,
}

/// `struct ibv_context`: an open device (the start of the provider's larger context; Keel
/// only reads `ops`, behind a pointer from libibverbs).
#[repr(C)]
pub struct ibv_context {
    /// The device.
    pub device: *mut ibv_device,
    /// The provider's entry points.
    pub ops: ibv_context_ops,
    /// Command fd.
    pub cmd_fd: c_int,
    /// Async event fd.
    pub async_fd: c_int,
    /// Completion vectors.
    pub num_comp_vectors: c_int,
    /// Library-internal lock.
    pub mutex: libc::pthread_mutex_t,
    /// Library-internal.
    pub abi_compat: *mut c_void,
}

/// `struct ibv_cq`: a completion queue (the start of the provider's; Keel reads `context`).
#[repr(C)]
#[allow(missing_docs)]
pub struct ibv_cq {
    /// The device context (its `ops` poll and arm the CQ).
    pub context: *mut ibv_context,
    pub channel: *mut ibv_comp_channel,
    pub cq_context: *mut c_void,
    pub handle: u32,
    pub cqe: c_int,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub comp_events_completed: u32,
    pub async_events_completed: u32,
}

/// `struct ibv_srq`: a shared receive queue (Keel reads `context`).
#[repr(C)]
#[allow(missing_docs)]
pub struct ibv_srq {
    /// The device context (its `ops` post receives).
    pub context: *mut ibv_context,
    pub srq_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub handle: u32,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub events_completed: u32,
}

/// `struct ibv_qp`: a queue pair (Keel reads `context` and `qp_num`).
#[repr(C)]
#[allow(missing_docs)]
pub struct ibv_qp {
    /// The device context (its `ops` post work requests).
    pub context: *mut ibv_context,
    pub qp_context: *mut c_void,
    pub pd: *mut ibv_pd,
    pub send_cq: *mut ibv_cq,
    pub recv_cq: *mut ibv_cq,
    pub srq: *mut ibv_srq,
    pub handle: u32,
    /// The QP number (appears in work completions).
    pub qp_num: u32,
    pub state: c_uint,
    pub qp_type: ibv_qp_type,
    pub mutex: libc::pthread_mutex_t,
    pub cond: libc::pthread_cond_t,
    pub events_completed: u32,
}

// The per-I/O verbs, `static inline` in <infiniband/verbs.h>: one load of the object's context,
// one of the provider's function, one indirect call — what the C inline function compiles to.
// A provider always fills these slots; an empty one answers EOPNOTSUPP instead of jumping to 0.

/// `ibv_post_send`: 0, or an errno with `*bad_wr` at the first work request not posted.
///
/// # Safety
/// `qp` is a live QP; the chain and its SGE lists are valid for the call.
#[inline]
pub unsafe fn ibv_post_send(
    qp: *mut ibv_qp,
    wr: *mut ibv_send_wr,
    bad_wr: *mut *mut ibv_send_wr,
) -> c_int {
    // SAFETY: a live QP points at its live context; the provider's function has this type.
    unsafe {
        match (*(*qp).context).ops.post_send {
            Some(f) => f(qp, wr, bad_wr),
            None => libc::EOPNOTSUPP,
        }
    }
}

/// `ibv_post_recv` (a QP without an SRQ).
///
/// # Safety
/// `qp` is a live QP; the chain and its SGE lists are valid for the call.
#[inline]
pub unsafe fn ibv_post_recv(
    qp: *mut ibv_qp,
    wr: *mut ibv_recv_wr,
    bad_wr: *mut *mut ibv_recv_wr,
) -> c_int {
    // SAFETY: as for ibv_post_send.
    unsafe {
        match (*(*qp).context).ops.post_recv {
            Some(f) => f(qp, wr, bad_wr),
            None => libc::EOPNOTSUPP,
        }
    }
}

/// `ibv_post_srq_recv`.
///
/// # Safety
/// `srq` is a live SRQ; the chain and its SGE lists are valid for the call.
#[inline]
pub unsafe fn ibv_post_srq_recv(
    srq: *mut ibv_srq,
    wr: *mut ibv_recv_wr,
    bad_wr: *mut *mut ibv_recv_wr,
) -> c_int {
    // SAFETY: a live SRQ points at its live context; the provider's function has this type.
    unsafe {
        match (*(*srq).context).ops.post_srq_recv {
            Some(f) => f(srq, wr, bad_wr),
            None => libc::EOPNOTSUPP,
        }
    }
}

/// `ibv_poll_cq`: completions written (at most `num_entries`), or negative on error.
///
/// # Safety
/// `cq` is a live CQ; `wc` has room for `num_entries` completions.
#[inline]
pub unsafe fn ibv_poll_cq(cq: *mut ibv_cq, num_entries: c_int, wc: *mut ibv_wc) -> c_int {
    // SAFETY: a live CQ points at its live context; the provider's function has this type.
    unsafe {
        match (*(*cq).context).ops.poll_cq {
            Some(f) => f(cq, num_entries, wc),
            None => -libc::EOPNOTSUPP,
        }
    }
}

/// `ibv_req_notify_cq`.
///
/// # Safety
/// `cq` is a live CQ.
#[inline]
pub unsafe fn ibv_req_notify_cq(cq: *mut ibv_cq, solicited_only: c_int) -> c_int {
    // SAFETY: as for ibv_poll_cq.
    unsafe {
        match (*(*cq).context).ops.req_notify_cq {
            Some(f) => f(cq, solicited_only),
            None => libc::EOPNOTSUPP,
        }
    }
}

/// `ibv_reg_mr` as the header's macro compiles it for access flags known only at run time:
/// `ibv_reg_mr_iova2` with the address as the I/O virtual address.
///
/// # Safety
/// As for `ibv_reg_mr`.
#[inline]
pub unsafe fn ibv_reg_mr(
    pd: *mut ibv_pd,
    addr: *mut c_void,
    length: size_t,
    access: c_uint,
) -> *mut ibv_mr {
    // SAFETY: forwarded contract.
    unsafe { ibv_reg_mr_iova2(pd, addr, length, addr as u64, access) }
}

super::rdma_core::rdma_core_fns! {
    /// libibverbs' exported functions Keel calls (filled by [`super::rdma_core::load`]).
    VerbsFns, verbs;

    /// Lists the RDMA devices; the array is null-terminated. Free with `ibv_free_device_list`.
    fn ibv_get_device_list(num_devices: *mut c_int) -> *mut *mut ibv_device;
    /// Frees a device list (opened contexts stay valid).
    fn ibv_free_device_list(list: *mut *mut ibv_device);
    /// The device's kernel name (e.g. `rxe0`).
    fn ibv_get_device_name(device: *mut ibv_device) -> *const c_char;
    /// The device's node GUID, big-endian.
    fn ibv_get_device_guid(device: *mut ibv_device) -> u64;
    /// Opens a device.
    fn ibv_open_device(device: *mut ibv_device) -> *mut ibv_context;
    /// Closes a device opened with `ibv_open_device`.
    fn ibv_close_device(context: *mut ibv_context) -> c_int;
    /// Queries device limits.
    fn ibv_query_device(context: *mut ibv_context, attr: *mut ibv_device_attr) -> c_int;
    /// Allocates a protection domain.
    fn ibv_alloc_pd(context: *mut ibv_context) -> *mut ibv_pd;
    /// Frees a protection domain (fails while objects use it).
    fn ibv_dealloc_pd(pd: *mut ibv_pd) -> c_int;
    /// Registers a memory region with an I/O virtual address (behind `ibv_reg_mr`).
    fn ibv_reg_mr_iova2(
        pd: *mut ibv_pd,
        addr: *mut c_void,
        length: size_t,
        iova: u64,
        access: c_uint,
    ) -> *mut ibv_mr;
    /// Deregisters a memory region.
    fn ibv_dereg_mr(mr: *mut ibv_mr) -> c_int;
    /// Creates a completion event channel.
    fn ibv_create_comp_channel(context: *mut ibv_context) -> *mut ibv_comp_channel;
    /// Destroys a completion event channel (fails while CQs use it).
    fn ibv_destroy_comp_channel(channel: *mut ibv_comp_channel) -> c_int;
    /// Creates a completion queue.
    fn ibv_create_cq(
        context: *mut ibv_context,
        cqe: c_int,
        cq_context: *mut c_void,
        channel: *mut ibv_comp_channel,
        comp_vector: c_int,
    ) -> *mut ibv_cq;
    /// Destroys a completion queue (blocks until its channel events are acked).
    fn ibv_destroy_cq(cq: *mut ibv_cq) -> c_int;
    /// Reads one completion event from a channel (fails with EAGAIN on a non-blocking fd).
    fn ibv_get_cq_event(
        channel: *mut ibv_comp_channel,
        cq: *mut *mut ibv_cq,
        cq_context: *mut *mut c_void,
    ) -> c_int;
    /// Acknowledges completion events.
    fn ibv_ack_cq_events(cq: *mut ibv_cq, nevents: c_uint);
    /// Creates a shared receive queue.
    fn ibv_create_srq(pd: *mut ibv_pd, attr: *mut ibv_srq_init_attr) -> *mut ibv_srq;
    /// Destroys a shared receive queue (fails while QPs use it).
    fn ibv_destroy_srq(srq: *mut ibv_srq) -> c_int;
    /// Text for a completion status.
    fn ibv_wc_status_str(status: ibv_wc_status) -> *const c_char;
}
