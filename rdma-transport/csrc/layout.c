/*
 * keel-rdma layout table: sizes, alignments and field offsets of every rdma-core structure the
 * Rust bindings declare, as this C compiler sees them in the installed headers. The Rust test
 * (src/ffi/layout_tests.rs) computes the same rows with size_of/align_of/offset_of! and demands
 * that both tables are identical, so a binding that drifts from the headers fails the build's
 * tests instead of corrupting memory. Built only where the headers are installed (build.rs; CI
 * installs libibverbs-dev and librdmacm-dev); Keel itself needs neither the headers nor the
 * libraries to build.
 *
 * Row names: "T" = sizeof, "T@align" = alignment, "T.path" = offsetof, "T.path@size" = member
 * size, where T is the C type name.
 */
#include <stddef.h>
#include <infiniband/verbs.h>
#include <rdma/rdma_cma.h>

struct keel_layout_entry {
	const char *name;
	size_t value;
};

#define SIZE(kind, T) { #T, sizeof(kind T) }, { #T "@align", _Alignof(kind T) }
#define OFF(kind, T, path) { #T "." #path, offsetof(kind T, path) }
#define MSIZE(kind, T, path) { #T "." #path "@size", sizeof(((kind T *)0)->path) }
#define S struct
#define U union

static const struct keel_layout_entry table[] = {
	SIZE(S, keel_layout_entry), OFF(S, keel_layout_entry, name), OFF(S, keel_layout_entry, value),

	SIZE(U, ibv_gid), OFF(U, ibv_gid, raw), OFF(U, ibv_gid, global),
	OFF(U, ibv_gid, global.subnet_prefix), OFF(U, ibv_gid, global.interface_id),
	MSIZE(U, ibv_gid, global),

	SIZE(S, ibv_device_attr), OFF(S, ibv_device_attr, fw_ver), OFF(S, ibv_device_attr, node_guid),
	OFF(S, ibv_device_attr, sys_image_guid), OFF(S, ibv_device_attr, max_mr_size),
	OFF(S, ibv_device_attr, page_size_cap), OFF(S, ibv_device_attr, vendor_id),
	OFF(S, ibv_device_attr, vendor_part_id), OFF(S, ibv_device_attr, hw_ver),
	OFF(S, ibv_device_attr, max_qp), OFF(S, ibv_device_attr, max_qp_wr),
	OFF(S, ibv_device_attr, device_cap_flags), OFF(S, ibv_device_attr, max_sge),
	OFF(S, ibv_device_attr, max_sge_rd), OFF(S, ibv_device_attr, max_cq),
	OFF(S, ibv_device_attr, max_cqe), OFF(S, ibv_device_attr, max_mr),
	OFF(S, ibv_device_attr, max_pd), OFF(S, ibv_device_attr, max_qp_rd_atom),
	OFF(S, ibv_device_attr, max_ee_rd_atom), OFF(S, ibv_device_attr, max_res_rd_atom),
	OFF(S, ibv_device_attr, max_qp_init_rd_atom), OFF(S, ibv_device_attr, max_ee_init_rd_atom),
	OFF(S, ibv_device_attr, atomic_cap), OFF(S, ibv_device_attr, max_ee),
	OFF(S, ibv_device_attr, max_rdd), OFF(S, ibv_device_attr, max_mw),
	OFF(S, ibv_device_attr, max_raw_ipv6_qp), OFF(S, ibv_device_attr, max_raw_ethy_qp),
	OFF(S, ibv_device_attr, max_mcast_grp), OFF(S, ibv_device_attr, max_mcast_qp_attach),
	OFF(S, ibv_device_attr, max_total_mcast_qp_attach), OFF(S, ibv_device_attr, max_ah),
	OFF(S, ibv_device_attr, max_fmr), OFF(S, ibv_device_attr, max_map_per_fmr),
	OFF(S, ibv_device_attr, max_srq), OFF(S, ibv_device_attr, max_srq_wr),
	OFF(S, ibv_device_attr, max_srq_sge), OFF(S, ibv_device_attr, max_pkeys),
	OFF(S, ibv_device_attr, local_ca_ack_delay), OFF(S, ibv_device_attr, phys_port_cnt),

	SIZE(S, ibv_context_ops), OFF(S, ibv_context_ops, _compat_query_device),
	OFF(S, ibv_context_ops, _compat_query_port), OFF(S, ibv_context_ops, _compat_alloc_pd),
	OFF(S, ibv_context_ops, _compat_dealloc_pd), OFF(S, ibv_context_ops, _compat_reg_mr),
	OFF(S, ibv_context_ops, _compat_rereg_mr), OFF(S, ibv_context_ops, _compat_dereg_mr),
	OFF(S, ibv_context_ops, alloc_mw), OFF(S, ibv_context_ops, bind_mw),
	OFF(S, ibv_context_ops, dealloc_mw), OFF(S, ibv_context_ops, _compat_create_cq),
	OFF(S, ibv_context_ops, poll_cq), OFF(S, ibv_context_ops, req_notify_cq),
	OFF(S, ibv_context_ops, _compat_cq_event), OFF(S, ibv_context_ops, _compat_resize_cq),
	OFF(S, ibv_context_ops, _compat_destroy_cq), OFF(S, ibv_context_ops, _compat_create_srq),
	OFF(S, ibv_context_ops, _compat_modify_srq), OFF(S, ibv_context_ops, _compat_query_srq),
	OFF(S, ibv_context_ops, _compat_destroy_srq), OFF(S, ibv_context_ops, post_srq_recv),
	OFF(S, ibv_context_ops, _compat_create_qp), OFF(S, ibv_context_ops, _compat_query_qp),
	OFF(S, ibv_context_ops, _compat_modify_qp), OFF(S, ibv_context_ops, _compat_destroy_qp),
	OFF(S, ibv_context_ops, post_send), OFF(S, ibv_context_ops, post_recv),
	OFF(S, ibv_context_ops, _compat_create_ah), OFF(S, ibv_context_ops, _compat_destroy_ah),
	OFF(S, ibv_context_ops, _compat_attach_mcast),
	OFF(S, ibv_context_ops, _compat_detach_mcast),
	OFF(S, ibv_context_ops, _compat_async_event),

	SIZE(S, ibv_context), OFF(S, ibv_context, device), OFF(S, ibv_context, ops),
	OFF(S, ibv_context, cmd_fd), OFF(S, ibv_context, async_fd),
	OFF(S, ibv_context, num_comp_vectors), OFF(S, ibv_context, mutex),
	OFF(S, ibv_context, abi_compat),

	SIZE(S, ibv_cq), OFF(S, ibv_cq, context), OFF(S, ibv_cq, channel),
	OFF(S, ibv_cq, cq_context), OFF(S, ibv_cq, handle), OFF(S, ibv_cq, cqe),
	OFF(S, ibv_cq, mutex), OFF(S, ibv_cq, cond), OFF(S, ibv_cq, comp_events_completed),
	OFF(S, ibv_cq, async_events_completed),

	SIZE(S, ibv_srq), OFF(S, ibv_srq, context), OFF(S, ibv_srq, srq_context),
	OFF(S, ibv_srq, pd), OFF(S, ibv_srq, handle), OFF(S, ibv_srq, mutex),
	OFF(S, ibv_srq, cond), OFF(S, ibv_srq, events_completed),

	SIZE(S, ibv_qp), OFF(S, ibv_qp, context), OFF(S, ibv_qp, qp_context), OFF(S, ibv_qp, pd),
	OFF(S, ibv_qp, send_cq), OFF(S, ibv_qp, recv_cq), OFF(S, ibv_qp, srq),
	OFF(S, ibv_qp, handle), OFF(S, ibv_qp, qp_num), OFF(S, ibv_qp, state),
	OFF(S, ibv_qp, qp_type), OFF(S, ibv_qp, mutex), OFF(S, ibv_qp, cond),
	OFF(S, ibv_qp, events_completed),

	SIZE(S, ibv_pd), OFF(S, ibv_pd, context), OFF(S, ibv_pd, handle),

	SIZE(S, ibv_mr), OFF(S, ibv_mr, context), OFF(S, ibv_mr, pd), OFF(S, ibv_mr, addr),
	OFF(S, ibv_mr, length), OFF(S, ibv_mr, handle), OFF(S, ibv_mr, lkey), OFF(S, ibv_mr, rkey),

	SIZE(S, ibv_comp_channel), OFF(S, ibv_comp_channel, context), OFF(S, ibv_comp_channel, fd),
	OFF(S, ibv_comp_channel, refcnt),

	SIZE(S, ibv_sge), OFF(S, ibv_sge, addr), OFF(S, ibv_sge, length), OFF(S, ibv_sge, lkey),

	SIZE(S, ibv_send_wr), OFF(S, ibv_send_wr, wr_id), OFF(S, ibv_send_wr, next),
	OFF(S, ibv_send_wr, sg_list), OFF(S, ibv_send_wr, num_sge), OFF(S, ibv_send_wr, opcode),
	OFF(S, ibv_send_wr, send_flags), OFF(S, ibv_send_wr, imm_data),
	OFF(S, ibv_send_wr, invalidate_rkey),
	OFF(S, ibv_send_wr, wr), MSIZE(S, ibv_send_wr, wr),
	MSIZE(S, ibv_send_wr, wr.rdma), OFF(S, ibv_send_wr, wr.rdma.remote_addr),
	OFF(S, ibv_send_wr, wr.rdma.rkey),
	MSIZE(S, ibv_send_wr, wr.atomic), OFF(S, ibv_send_wr, wr.atomic.remote_addr),
	OFF(S, ibv_send_wr, wr.atomic.compare_add), OFF(S, ibv_send_wr, wr.atomic.swap),
	OFF(S, ibv_send_wr, wr.atomic.rkey),
	MSIZE(S, ibv_send_wr, wr.ud), OFF(S, ibv_send_wr, wr.ud.ah),
	OFF(S, ibv_send_wr, wr.ud.remote_qpn), OFF(S, ibv_send_wr, wr.ud.remote_qkey),
	OFF(S, ibv_send_wr, qp_type), MSIZE(S, ibv_send_wr, qp_type),
	OFF(S, ibv_send_wr, qp_type.xrc.remote_srqn),
	OFF(S, ibv_send_wr, bind_mw), MSIZE(S, ibv_send_wr, bind_mw),
	OFF(S, ibv_send_wr, bind_mw.mw), OFF(S, ibv_send_wr, bind_mw.rkey),
	OFF(S, ibv_send_wr, bind_mw.bind_info),
	OFF(S, ibv_send_wr, tso), MSIZE(S, ibv_send_wr, tso), OFF(S, ibv_send_wr, tso.hdr),
	OFF(S, ibv_send_wr, tso.hdr_sz), OFF(S, ibv_send_wr, tso.mss),

	SIZE(S, ibv_mw_bind_info), OFF(S, ibv_mw_bind_info, mr), OFF(S, ibv_mw_bind_info, addr),
	OFF(S, ibv_mw_bind_info, length), OFF(S, ibv_mw_bind_info, mw_access_flags),

	SIZE(S, ibv_recv_wr), OFF(S, ibv_recv_wr, wr_id), OFF(S, ibv_recv_wr, next),
	OFF(S, ibv_recv_wr, sg_list), OFF(S, ibv_recv_wr, num_sge),

	SIZE(S, ibv_wc), OFF(S, ibv_wc, wr_id), OFF(S, ibv_wc, status), OFF(S, ibv_wc, opcode),
	OFF(S, ibv_wc, vendor_err), OFF(S, ibv_wc, byte_len), OFF(S, ibv_wc, imm_data),
	OFF(S, ibv_wc, invalidated_rkey), OFF(S, ibv_wc, qp_num), OFF(S, ibv_wc, src_qp),
	OFF(S, ibv_wc, wc_flags), OFF(S, ibv_wc, pkey_index), OFF(S, ibv_wc, slid),
	OFF(S, ibv_wc, sl), OFF(S, ibv_wc, dlid_path_bits),

	SIZE(S, ibv_srq_attr), OFF(S, ibv_srq_attr, max_wr), OFF(S, ibv_srq_attr, max_sge),
	OFF(S, ibv_srq_attr, srq_limit),
	SIZE(S, ibv_srq_init_attr), OFF(S, ibv_srq_init_attr, srq_context),
	OFF(S, ibv_srq_init_attr, attr),

	SIZE(S, ibv_qp_cap), OFF(S, ibv_qp_cap, max_send_wr), OFF(S, ibv_qp_cap, max_recv_wr),
	OFF(S, ibv_qp_cap, max_send_sge), OFF(S, ibv_qp_cap, max_recv_sge),
	OFF(S, ibv_qp_cap, max_inline_data),
	SIZE(S, ibv_qp_init_attr), OFF(S, ibv_qp_init_attr, qp_context),
	OFF(S, ibv_qp_init_attr, send_cq), OFF(S, ibv_qp_init_attr, recv_cq),
	OFF(S, ibv_qp_init_attr, srq), OFF(S, ibv_qp_init_attr, cap),
	OFF(S, ibv_qp_init_attr, qp_type), OFF(S, ibv_qp_init_attr, sq_sig_all),

	SIZE(S, ibv_global_route), OFF(S, ibv_global_route, dgid),
	OFF(S, ibv_global_route, flow_label), OFF(S, ibv_global_route, sgid_index),
	OFF(S, ibv_global_route, hop_limit), OFF(S, ibv_global_route, traffic_class),
	SIZE(S, ibv_ah_attr), OFF(S, ibv_ah_attr, grh), OFF(S, ibv_ah_attr, dlid),
	OFF(S, ibv_ah_attr, sl), OFF(S, ibv_ah_attr, src_path_bits),
	OFF(S, ibv_ah_attr, static_rate), OFF(S, ibv_ah_attr, is_global),
	OFF(S, ibv_ah_attr, port_num),

	SIZE(S, rdma_event_channel), OFF(S, rdma_event_channel, fd),

	SIZE(S, rdma_ib_addr), OFF(S, rdma_ib_addr, sgid), OFF(S, rdma_ib_addr, dgid),
	OFF(S, rdma_ib_addr, pkey),

	SIZE(S, rdma_addr), OFF(S, rdma_addr, src_addr), OFF(S, rdma_addr, src_sin),
	OFF(S, rdma_addr, src_sin6), OFF(S, rdma_addr, src_storage),
	MSIZE(S, rdma_addr, src_storage),
	OFF(S, rdma_addr, dst_addr), OFF(S, rdma_addr, dst_sin), OFF(S, rdma_addr, dst_sin6),
	OFF(S, rdma_addr, dst_storage), OFF(S, rdma_addr, addr), MSIZE(S, rdma_addr, addr),
	OFF(S, rdma_addr, addr.ibaddr),

	SIZE(S, rdma_route), OFF(S, rdma_route, addr), OFF(S, rdma_route, path_rec),
	OFF(S, rdma_route, num_paths),

	SIZE(S, rdma_cm_id), OFF(S, rdma_cm_id, verbs), OFF(S, rdma_cm_id, channel),
	OFF(S, rdma_cm_id, context), OFF(S, rdma_cm_id, qp), OFF(S, rdma_cm_id, route),
	OFF(S, rdma_cm_id, ps), OFF(S, rdma_cm_id, port_num), OFF(S, rdma_cm_id, event),
	OFF(S, rdma_cm_id, send_cq_channel), OFF(S, rdma_cm_id, send_cq),
	OFF(S, rdma_cm_id, recv_cq_channel), OFF(S, rdma_cm_id, recv_cq),
	OFF(S, rdma_cm_id, srq), OFF(S, rdma_cm_id, pd), OFF(S, rdma_cm_id, qp_type),

	SIZE(S, rdma_conn_param), OFF(S, rdma_conn_param, private_data),
	OFF(S, rdma_conn_param, private_data_len), OFF(S, rdma_conn_param, responder_resources),
	OFF(S, rdma_conn_param, initiator_depth), OFF(S, rdma_conn_param, flow_control),
	OFF(S, rdma_conn_param, retry_count), OFF(S, rdma_conn_param, rnr_retry_count),
	OFF(S, rdma_conn_param, srq), OFF(S, rdma_conn_param, qp_num),

	SIZE(S, rdma_ud_param), OFF(S, rdma_ud_param, private_data),
	OFF(S, rdma_ud_param, private_data_len), OFF(S, rdma_ud_param, ah_attr),
	OFF(S, rdma_ud_param, qp_num), OFF(S, rdma_ud_param, qkey),

	SIZE(S, rdma_cm_event), OFF(S, rdma_cm_event, id), OFF(S, rdma_cm_event, listen_id),
	OFF(S, rdma_cm_event, event), OFF(S, rdma_cm_event, status),
	OFF(S, rdma_cm_event, param), MSIZE(S, rdma_cm_event, param),
	OFF(S, rdma_cm_event, param.conn), OFF(S, rdma_cm_event, param.ud),
};

const struct keel_layout_entry *keel_layout_table(size_t *count)
{
	*count = sizeof(table) / sizeof(table[0]);
	return table;
}
