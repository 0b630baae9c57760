//! The C shim (`csrc/shim.c`): exported wrappers for verbs that are `static inline` or macros in
//! `<infiniband/verbs.h>`, and (`csrc/layout.c`) the C side of the layout test.

use super::verbs::{
    ibv_context, ibv_cq, ibv_mr, ibv_pd, ibv_qp, ibv_recv_wr, ibv_send_wr, ibv_srq, ibv_wc,
};
use libc::{c_char, c_int, c_uint, c_void, size_t};

/// One `{name, value}` row of the C layout table.
#[repr(C)]
pub struct keel_layout_entry {
    /// `type` (size), `type@align`, `type.field` (offset) or `type.field@size`.
    pub name: *const c_char,
    /// The value the C compiler computed.
    pub value: size_t,
}

extern "C" {
    /// `ibv_post_send`.
    pub fn keel_ibv_post_send(
        qp: *mut ibv_qp,
        wr: *mut ibv_send_wr,
        bad_wr: *mut *mut ibv_send_wr,
    ) -> c_int;
    /// `ibv_post_recv`.
    pub fn keel_ibv_post_recv(
        qp: *mut ibv_qp,
        wr: *mut ibv_recv_wr,
        bad_wr: *mut *mut ibv_recv_wr,
    ) -> c_int;
    /// `ibv_post_srq_recv`.
    pub fn keel_ibv_post_srq_recv(
        srq: *mut ibv_srq,
        wr: *mut ibv_recv_wr,
        bad_wr: *mut *mut ibv_recv_wr,
    ) -> c_int;
    /// `ibv_poll_cq`: completions written, or negative on error.
    pub fn keel_ibv_poll_cq(cq: *mut ibv_cq, num_entries: c_int, wc: *mut ibv_wc) -> c_int;
    /// `ibv_req_notify_cq`.
    pub fn keel_ibv_req_notify_cq(cq: *mut ibv_cq, solicited_only: c_int) -> c_int;
    /// `ibv_reg_mr` (a macro in the header).
    pub fn keel_ibv_reg_mr(
        pd: *mut ibv_pd,
        addr: *mut c_void,
        length: size_t,
        access: c_uint,
    ) -> *mut ibv_mr;
    /// `qp->qp_num`.
    pub fn keel_ibv_qp_num(qp: *const ibv_qp) -> u32;
    /// `qp->context`.
    pub fn keel_ibv_qp_context(qp: *const ibv_qp) -> *mut ibv_context;
    /// The C layout table: `*count` rows.
    pub fn keel_layout_table(count: *mut size_t) -> *const keel_layout_entry;
}
