//! Layout test: every `repr(C)` type of the bindings against the C compiler's view of the
//! installed rdma-core headers (`csrc/layout.c`, built by build.rs only where the headers are:
//! elsewhere the build says so with a warning and only the ABI anchors below run). Both tables
//! must be identical, row for row, so a field added on one side only also fails.

#[cfg(keel_rdma_layout)]
use super::cm::*;
use super::verbs::*;
#[cfg(keel_rdma_layout)]
use libc::{c_char, size_t};
#[cfg(keel_rdma_layout)]
use std::collections::BTreeMap;
#[cfg(keel_rdma_layout)]
use std::ffi::CStr;
#[cfg(keel_rdma_layout)]
use std::mem::align_of;
use std::mem::{offset_of, size_of};

/// One `{name, value}` row of the C layout table.
#[cfg(keel_rdma_layout)]
#[repr(C)]
struct keel_layout_entry {
    /// `type` (size), `type@align`, `type.field` (offset) or `type.field@size`.
    name: *const c_char,
    /// The value the C compiler computed.
    value: size_t,
}

#[cfg(keel_rdma_layout)]
extern "C" {
    /// The C layout table (csrc/layout.c): `*count` rows.
    fn keel_layout_table(count: *mut size_t) -> *const keel_layout_entry;
}

#[cfg(keel_rdma_layout)]
fn c_table() -> BTreeMap<String, usize> {
    let mut n = 0usize;
    // SAFETY: returns a static array of `n` rows.
    let rows = unsafe { keel_layout_table(&mut n) };
    // SAFETY: `rows` points to `n` initialised rows that live for the program.
    let rows = unsafe { std::slice::from_raw_parts(rows, n) };
    rows.iter()
        .map(|r| {
            // SAFETY: each name is a static NUL-terminated literal.
            let name = unsafe { CStr::from_ptr(r.name) }
                .to_str()
                .unwrap()
                .to_owned();
            (name, r.value)
        })
        .collect()
}

#[cfg(keel_rdma_layout)]
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one line per C struct field
fn rust_table() -> BTreeMap<String, usize> {
    let mut t = BTreeMap::new();
    macro_rules! size {
        ($ty:ty, $name:literal) => {
            t.insert($name.to_string(), size_of::<$ty>());
            t.insert(concat!($name, "@align").to_string(), align_of::<$ty>());
        };
    }
    macro_rules! off {
        ($ty:ty, $name:literal: $($f:ident),+) => {
            $( t.insert(format!("{}.{}", $name, stringify!($f)), offset_of!($ty, $f)); )+
        };
    }
    macro_rules! row {
        ($name:literal, $v:expr) => {
            t.insert($name.to_string(), $v);
        };
    }

    size!(keel_layout_entry, "keel_layout_entry");
    off!(keel_layout_entry, "keel_layout_entry": name, value);

    size!(ibv_gid, "ibv_gid");
    off!(ibv_gid, "ibv_gid": raw, global);
    row!("ibv_gid.global@size", size_of::<ibv_gid_global>());
    row!(
        "ibv_gid.global.subnet_prefix",
        offset_of!(ibv_gid_global, subnet_prefix)
    );
    row!(
        "ibv_gid.global.interface_id",
        offset_of!(ibv_gid_global, interface_id)
    );

    size!(ibv_device_attr, "ibv_device_attr");
    off!(ibv_device_attr, "ibv_device_attr": fw_ver, node_guid, sys_image_guid, max_mr_size,
        page_size_cap, vendor_id, vendor_part_id, hw_ver, max_qp, max_qp_wr, device_cap_flags,
        max_sge, max_sge_rd, max_cq, max_cqe, max_mr, max_pd, max_qp_rd_atom, max_ee_rd_atom,
        max_res_rd_atom, max_qp_init_rd_atom, max_ee_init_rd_atom, atomic_cap, max_ee, max_rdd,
        max_mw, max_raw_ipv6_qp, max_raw_ethy_qp, max_mcast_grp, max_mcast_qp_attach,
        max_total_mcast_qp_attach, max_ah, max_fmr, max_map_per_fmr, max_srq, max_srq_wr,
        max_srq_sge, max_pkeys, local_ca_ack_delay, phys_port_cnt);

    size!(ibv_context_ops, "ibv_context_ops");
    off!(ibv_context_ops, "ibv_context_ops": _compat_query_device, _compat_query_port,
        _compat_alloc_pd, _compat_dealloc_pd, _compat_reg_mr, _compat_rereg_mr, _compat_dereg_mr,
        alloc_mw, bind_mw, dealloc_mw, _compat_create_cq, poll_cq, req_notify_cq,
        _compat_cq_event, _compat_resize_cq, _compat_destroy_cq, _compat_create_srq,
        _compat_modify_srq, _compat_query_srq, _compat_destroy_srq, post_srq_recv,
        _compat_create_qp, _compat_query_qp, _compat_modify_qp, _compat_destroy_qp, post_send,
        post_recv, _compat_create_ah, _compat_destroy_ah, _compat_attach_mcast,
        _compat_detach_mcast, _compat_async_event);
    size!(ibv_context, "ibv_context");
    off!(ibv_context, "ibv_context": device, ops, cmd_fd, async_fd, num_comp_vectors, mutex,
        abi_compat);
    size!(ibv_cq, "ibv_cq");
    off!(ibv_cq, "ibv_cq": context, channel, cq_context, handle, cqe, mutex, cond,
        comp_events_completed, async_events_completed);
    size!(ibv_srq, "ibv_srq");
    off!(ibv_srq, "ibv_srq": context, srq_context, pd, handle, mutex, cond, events_completed);
    size!(ibv_qp, "ibv_qp");
    off!(ibv_qp, "ibv_qp": context, qp_context, pd, send_cq, recv_cq, srq, handle, qp_num,
        state, qp_type, mutex, cond, events_completed);

    size!(ibv_pd, "ibv_pd");
    off!(ibv_pd, "ibv_pd": context, handle);
    size!(ibv_mr, "ibv_mr");
    off!(ibv_mr, "ibv_mr": context, pd, addr, length, handle, lkey, rkey);
    size!(ibv_comp_channel, "ibv_comp_channel");
    off!(ibv_comp_channel, "ibv_comp_channel": context, fd, refcnt);
    size!(ibv_sge, "ibv_sge");
    off!(ibv_sge, "ibv_sge": addr, length, lkey);

    size!(ibv_send_wr, "ibv_send_wr");
    off!(ibv_send_wr, "ibv_send_wr": wr_id, next, sg_list, num_sge, opcode, send_flags, wr,
        qp_type);
    let imm = offset_of!(ibv_send_wr, imm_data_invalidate_rkey);
    row!("ibv_send_wr.imm_data", imm);
    row!("ibv_send_wr.invalidate_rkey", imm);
    let wr = offset_of!(ibv_send_wr, wr);
    row!("ibv_send_wr.wr@size", size_of::<ibv_send_wr_wr>());
    row!("ibv_send_wr.wr.rdma@size", size_of::<ibv_send_wr_rdma>());
    row!(
        "ibv_send_wr.wr.rdma.remote_addr",
        wr + offset_of!(ibv_send_wr_rdma, remote_addr)
    );
    row!(
        "ibv_send_wr.wr.rdma.rkey",
        wr + offset_of!(ibv_send_wr_rdma, rkey)
    );
    row!(
        "ibv_send_wr.wr.atomic@size",
        size_of::<ibv_send_wr_atomic>()
    );
    row!(
        "ibv_send_wr.wr.atomic.remote_addr",
        wr + offset_of!(ibv_send_wr_atomic, remote_addr)
    );
    row!(
        "ibv_send_wr.wr.atomic.compare_add",
        wr + offset_of!(ibv_send_wr_atomic, compare_add)
    );
    row!(
        "ibv_send_wr.wr.atomic.swap",
        wr + offset_of!(ibv_send_wr_atomic, swap)
    );
    row!(
        "ibv_send_wr.wr.atomic.rkey",
        wr + offset_of!(ibv_send_wr_atomic, rkey)
    );
    row!("ibv_send_wr.wr.ud@size", size_of::<ibv_send_wr_ud>());
    row!("ibv_send_wr.wr.ud.ah", wr + offset_of!(ibv_send_wr_ud, ah));
    row!(
        "ibv_send_wr.wr.ud.remote_qpn",
        wr + offset_of!(ibv_send_wr_ud, remote_qpn)
    );
    row!(
        "ibv_send_wr.wr.ud.remote_qkey",
        wr + offset_of!(ibv_send_wr_ud, remote_qkey)
    );
    let qpt = offset_of!(ibv_send_wr, qp_type);
    row!("ibv_send_wr.qp_type@size", size_of::<ibv_send_wr_qp_type>());
    row!(
        "ibv_send_wr.qp_type.xrc.remote_srqn",
        qpt + offset_of!(ibv_send_wr_xrc, remote_srqn)
    );
    let tail = offset_of!(ibv_send_wr, tail);
    row!("ibv_send_wr.bind_mw", tail);
    row!("ibv_send_wr.bind_mw@size", size_of::<ibv_send_wr_bind_mw>());
    row!(
        "ibv_send_wr.bind_mw.mw",
        tail + offset_of!(ibv_send_wr_bind_mw, mw)
    );
    row!(
        "ibv_send_wr.bind_mw.rkey",
        tail + offset_of!(ibv_send_wr_bind_mw, rkey)
    );
    row!(
        "ibv_send_wr.bind_mw.bind_info",
        tail + offset_of!(ibv_send_wr_bind_mw, bind_info)
    );
    row!("ibv_send_wr.tso", tail);
    row!("ibv_send_wr.tso@size", size_of::<ibv_send_wr_tso>());
    row!(
        "ibv_send_wr.tso.hdr",
        tail + offset_of!(ibv_send_wr_tso, hdr)
    );
    row!(
        "ibv_send_wr.tso.hdr_sz",
        tail + offset_of!(ibv_send_wr_tso, hdr_sz)
    );
    row!(
        "ibv_send_wr.tso.mss",
        tail + offset_of!(ibv_send_wr_tso, mss)
    );
    // The tail union is as large as its largest member and ends the struct.
    assert_eq!(
        size_of::<ibv_send_wr_tail>(),
        size_of::<ibv_send_wr_bind_mw>()
    );

    size!(ibv_mw_bind_info, "ibv_mw_bind_info");
    off!(ibv_mw_bind_info, "ibv_mw_bind_info": mr, addr, length, mw_access_flags);
    size!(ibv_recv_wr, "ibv_recv_wr");
    off!(ibv_recv_wr, "ibv_recv_wr": wr_id, next, sg_list, num_sge);

    size!(ibv_wc, "ibv_wc");
    off!(ibv_wc, "ibv_wc": wr_id, status, opcode, vendor_err, byte_len, qp_num, src_qp,
        wc_flags, pkey_index, slid, sl, dlid_path_bits);
    let imm = offset_of!(ibv_wc, imm_data_invalidated_rkey);
    row!("ibv_wc.imm_data", imm);
    row!("ibv_wc.invalidated_rkey", imm);

    size!(ibv_srq_attr, "ibv_srq_attr");
    off!(ibv_srq_attr, "ibv_srq_attr": max_wr, max_sge, srq_limit);
    size!(ibv_srq_init_attr, "ibv_srq_init_attr");
    off!(ibv_srq_init_attr, "ibv_srq_init_attr": srq_context, attr);
    size!(ibv_qp_cap, "ibv_qp_cap");
    off!(ibv_qp_cap, "ibv_qp_cap": max_send_wr, max_recv_wr, max_send_sge, max_recv_sge,
        max_inline_data);
    size!(ibv_qp_init_attr, "ibv_qp_init_attr");
    off!(ibv_qp_init_attr, "ibv_qp_init_attr": qp_context, send_cq, recv_cq, srq, cap, qp_type,
        sq_sig_all);
    size!(ibv_global_route, "ibv_global_route");
    off!(ibv_global_route, "ibv_global_route": dgid, flow_label, sgid_index, hop_limit,
        traffic_class);
    size!(ibv_ah_attr, "ibv_ah_attr");
    off!(ibv_ah_attr, "ibv_ah_attr": grh, dlid, sl, src_path_bits, static_rate, is_global,
        port_num);

    size!(rdma_event_channel, "rdma_event_channel");
    off!(rdma_event_channel, "rdma_event_channel": fd);
    size!(rdma_ib_addr, "rdma_ib_addr");
    off!(rdma_ib_addr, "rdma_ib_addr": sgid, dgid, pkey);

    size!(rdma_addr, "rdma_addr");
    let src = offset_of!(rdma_addr, src);
    let dst = offset_of!(rdma_addr, dst);
    for (name, v) in [
        ("rdma_addr.src_addr", src),
        ("rdma_addr.src_sin", src),
        ("rdma_addr.src_sin6", src),
        ("rdma_addr.src_storage", src),
        ("rdma_addr.dst_addr", dst),
        ("rdma_addr.dst_sin", dst),
        ("rdma_addr.dst_sin6", dst),
        ("rdma_addr.dst_storage", dst),
    ] {
        t.insert(name.to_string(), v);
    }
    row!("rdma_addr.src_storage@size", size_of::<rdma_sockaddr>());
    off!(rdma_addr, "rdma_addr": addr);
    row!("rdma_addr.addr@size", size_of::<rdma_addr_addr>());
    row!("rdma_addr.addr.ibaddr", offset_of!(rdma_addr, addr));

    size!(rdma_route, "rdma_route");
    off!(rdma_route, "rdma_route": addr, path_rec, num_paths);
    size!(rdma_cm_id, "rdma_cm_id");
    off!(rdma_cm_id, "rdma_cm_id": verbs, channel, context, qp, route, ps, port_num, event,
        send_cq_channel, send_cq, recv_cq_channel, recv_cq, srq, pd, qp_type);
    size!(rdma_conn_param, "rdma_conn_param");
    off!(rdma_conn_param, "rdma_conn_param": private_data, private_data_len, responder_resources,
        initiator_depth, flow_control, retry_count, rnr_retry_count, srq, qp_num);
    size!(rdma_ud_param, "rdma_ud_param");
    off!(rdma_ud_param, "rdma_ud_param": private_data, private_data_len, ah_attr, qp_num, qkey);
    size!(rdma_cm_event, "rdma_cm_event");
    off!(rdma_cm_event, "rdma_cm_event": id, listen_id, event, status, param);
    row!("rdma_cm_event.param@size", size_of::<rdma_cm_event_param>());
    row!("rdma_cm_event.param.conn", offset_of!(rdma_cm_event, param));
    row!("rdma_cm_event.param.ud", offset_of!(rdma_cm_event, param));
    t
}

#[cfg(keel_rdma_layout)]
#[test]
fn every_binding_matches_the_c_headers() {
    let c = c_table();
    let rust = rust_table();
    let mut diffs = Vec::new();
    for (k, v) in &rust {
        match c.get(k) {
            Some(cv) if cv == v => {}
            Some(cv) => diffs.push(format!("{k}: Rust {v}, C {cv}")),
            None => diffs.push(format!("{k}: only in Rust")),
        }
    }
    for k in c.keys().filter(|k| !rust.contains_key(*k)) {
        diffs.push(format!("{k}: only in C"));
    }
    assert!(diffs.is_empty(), "layout mismatches:\n{}", diffs.join("\n"));
    assert!(c.len() > 320, "the C table lost rows: {}", c.len());
}

#[test]
fn sizes_known_from_the_abi() {
    // Independent anchors on x86-64 / aarch64 LP64 (rdma-core's ABI has been stable).
    assert_eq!(size_of::<ibv_sge>(), 16);
    assert_eq!(size_of::<ibv_wc>(), 48);
    assert_eq!(size_of::<ibv_send_wr>(), 128);
    assert_eq!(size_of::<ibv_recv_wr>(), 32);
    assert_eq!(size_of::<ibv_device_attr>(), 232);
    // The provider entry points the per-I/O verbs call through (rdma-core keeps
    // `struct ibv_context_ops` unchanged for binary compatibility).
    assert_eq!(offset_of!(ibv_context, ops), 8);
    assert_eq!(offset_of!(ibv_context_ops, poll_cq), 88);
    assert_eq!(offset_of!(ibv_context_ops, req_notify_cq), 96);
    assert_eq!(offset_of!(ibv_context_ops, post_srq_recv), 160);
    assert_eq!(offset_of!(ibv_context_ops, post_send), 200);
    assert_eq!(offset_of!(ibv_context_ops, post_recv), 208);
    assert_eq!(size_of::<ibv_context_ops>(), 256);
    assert_eq!(offset_of!(ibv_cq, context), 0);
    assert_eq!(offset_of!(ibv_srq, context), 0);
    assert_eq!(offset_of!(ibv_qp, context), 0);
    assert_eq!(offset_of!(ibv_qp, qp_num), 52);
}
