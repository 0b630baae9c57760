//! `librdmacm` declarations (rdma-core 44, `<rdma/rdma_cma.h>`): the connection manager types
//! and calls Keel uses (a table filled when rdma-core is loaded, [`super::rdma_core`]). Checked
//! against the C header by `layout_tests.rs`.

use super::verbs::{
    ibv_ah_attr, ibv_comp_channel, ibv_context, ibv_cq, ibv_gid, ibv_pd, ibv_qp, ibv_qp_init_attr,
    ibv_qp_type, ibv_sa_path_rec, ibv_srq,
};
use libc::{c_char, c_int, c_void, sockaddr, sockaddr_in, sockaddr_in6, sockaddr_storage};

/// `enum rdma_cm_event_type` values.
pub type rdma_cm_event_type = u32;
/// Active side: address resolved.
pub const RDMA_CM_EVENT_ADDR_RESOLVED: rdma_cm_event_type = 0;
/// Active side: address resolution failed.
pub const RDMA_CM_EVENT_ADDR_ERROR: rdma_cm_event_type = 1;
/// Active side: route resolved.
pub const RDMA_CM_EVENT_ROUTE_RESOLVED: rdma_cm_event_type = 2;
/// Active side: route resolution failed.
pub const RDMA_CM_EVENT_ROUTE_ERROR: rdma_cm_event_type = 3;
/// Passive side: a host asks to connect; the event carries a new id.
pub const RDMA_CM_EVENT_CONNECT_REQUEST: rdma_cm_event_type = 4;
/// Active side without a QP: the peer accepted.
pub const RDMA_CM_EVENT_CONNECT_RESPONSE: rdma_cm_event_type = 5;
/// Connection establishment failed.
pub const RDMA_CM_EVENT_CONNECT_ERROR: rdma_cm_event_type = 6;
/// The peer is unreachable.
pub const RDMA_CM_EVENT_UNREACHABLE: rdma_cm_event_type = 7;
/// The peer rejected the connection (private data may say why).
pub const RDMA_CM_EVENT_REJECTED: rdma_cm_event_type = 8;
/// The connection is established.
pub const RDMA_CM_EVENT_ESTABLISHED: rdma_cm_event_type = 9;
/// The connection was disconnected.
pub const RDMA_CM_EVENT_DISCONNECTED: rdma_cm_event_type = 10;
/// The device of the id is being removed.
pub const RDMA_CM_EVENT_DEVICE_REMOVAL: rdma_cm_event_type = 11;
/// The local address changed.
pub const RDMA_CM_EVENT_ADDR_CHANGE: rdma_cm_event_type = 14;
/// The QP left time-wait.
pub const RDMA_CM_EVENT_TIMEWAIT_EXIT: rdma_cm_event_type = 15;

/// `enum rdma_port_space` values.
pub type rdma_port_space = u32;
/// TCP port space (reliable connected).
pub const RDMA_PS_TCP: rdma_port_space = 0x0106;

/// `struct rdma_event_channel`.
#[repr(C)]
pub struct rdma_event_channel {
    /// The channel's file descriptor (readable when an event is pending).
    pub fd: c_int,
}

/// `struct rdma_ib_addr`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct rdma_ib_addr {
    pub sgid: ibv_gid,
    pub dgid: ibv_gid,
    pub pkey: u16,
}

/// The source/destination address unions of `struct rdma_addr`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union rdma_sockaddr {
    pub addr: sockaddr,
    pub sin: sockaddr_in,
    pub sin6: sockaddr_in6,
    pub storage: sockaddr_storage,
}

/// The `addr` union of `struct rdma_addr`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union rdma_addr_addr {
    pub ibaddr: rdma_ib_addr,
}

/// `struct rdma_addr`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct rdma_addr {
    pub src: rdma_sockaddr,
    pub dst: rdma_sockaddr,
    pub addr: rdma_addr_addr,
}

/// `struct rdma_route`.
#[repr(C)]
#[allow(missing_docs)]
pub struct rdma_route {
    pub addr: rdma_addr,
    pub path_rec: *mut ibv_sa_path_rec,
    pub num_paths: c_int,
}

/// `struct rdma_cm_id`: a connection manager id (like a socket).
#[repr(C)]
pub struct rdma_cm_id {
    /// The device the id is bound to (owned by librdmacm), or null before binding.
    pub verbs: *mut ibv_context,
    /// The event channel its events are reported on.
    pub channel: *mut rdma_event_channel,
    /// Caller's context.
    pub context: *mut c_void,
    /// The QP created by `rdma_create_qp`, or null.
    pub qp: *mut ibv_qp,
    /// Addresses and path.
    pub route: rdma_route,
    /// Port space.
    pub ps: rdma_port_space,
    /// Device port.
    pub port_num: u8,
    /// Synchronous-mode event (unused by Keel).
    pub event: *mut rdma_cm_event,
    /// `rdma_create_ep` resources (unused by Keel).
    pub send_cq_channel: *mut ibv_comp_channel,
    #[allow(missing_docs)]
    pub send_cq: *mut ibv_cq,
    #[allow(missing_docs)]
    pub recv_cq_channel: *mut ibv_comp_channel,
    #[allow(missing_docs)]
    pub recv_cq: *mut ibv_cq,
    #[allow(missing_docs)]
    pub srq: *mut ibv_srq,
    #[allow(missing_docs)]
    pub pd: *mut ibv_pd,
    #[allow(missing_docs)]
    pub qp_type: ibv_qp_type,
}

/// `struct rdma_conn_param`: connect/accept parameters.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct rdma_conn_param {
    /// Private data sent with the request/reply.
    pub private_data: *const c_void,
    /// Its length.
    pub private_data_len: u8,
    /// Outstanding RDMA READs the local side accepts as target (IRD).
    pub responder_resources: u8,
    /// Outstanding RDMA READs the local side issues (ORD).
    pub initiator_depth: u8,
    /// Hardware flow control.
    pub flow_control: u8,
    /// Transport retries (ignored when accepting).
    pub retry_count: u8,
    /// Receiver-not-ready retries (7: infinite).
    pub rnr_retry_count: u8,
    /// The peer uses an SRQ (only without a QP on the id).
    pub srq: u8,
    /// QP number (only without a QP on the id).
    pub qp_num: u32,
}

/// `struct rdma_ud_param`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub struct rdma_ud_param {
    pub private_data: *const c_void,
    pub private_data_len: u8,
    pub ah_attr: ibv_ah_attr,
    pub qp_num: u32,
    pub qkey: u32,
}

/// `rdma_cm_event.param`.
#[repr(C)]
#[derive(Clone, Copy)]
#[allow(missing_docs)]
pub union rdma_cm_event_param {
    pub conn: rdma_conn_param,
    pub ud: rdma_ud_param,
}

/// `struct rdma_cm_event`.
#[repr(C)]
pub struct rdma_cm_event {
    /// The id the event is for (the new id for CONNECT_REQUEST).
    pub id: *mut rdma_cm_id,
    /// The listening id (CONNECT_REQUEST only).
    pub listen_id: *mut rdma_cm_id,
    /// `RDMA_CM_EVENT_*`.
    pub event: rdma_cm_event_type,
    /// Status or errno-style reason (REJECTED: the CM reject reason).
    pub status: c_int,
    /// Connection parameters of the peer, with its private data.
    pub param: rdma_cm_event_param,
}

super::rdma_core::rdma_core_fns! {
    /// librdmacm's exported functions Keel calls (filled by [`super::rdma_core::load`]).
    CmFns, cm;

    /// Opens an event channel.
    fn rdma_create_event_channel() -> *mut rdma_event_channel;
    /// Closes an event channel (all ids destroyed and events acked first).
    fn rdma_destroy_event_channel(channel: *mut rdma_event_channel);
    /// Creates an id reporting on `channel`.
    fn rdma_create_id(
        channel: *mut rdma_event_channel,
        id: *mut *mut rdma_cm_id,
        context: *mut c_void,
        ps: rdma_port_space,
    ) -> c_int;
    /// Destroys an id (blocks until its delivered events are acked).
    fn rdma_destroy_id(id: *mut rdma_cm_id) -> c_int;
    /// Binds an id to a local address.
    fn rdma_bind_addr(id: *mut rdma_cm_id, addr: *mut sockaddr) -> c_int;
    /// Resolves a destination address (active side).
    fn rdma_resolve_addr(
        id: *mut rdma_cm_id,
        src_addr: *mut sockaddr,
        dst_addr: *mut sockaddr,
        timeout_ms: c_int,
    ) -> c_int;
    /// Resolves the route (active side).
    fn rdma_resolve_route(id: *mut rdma_cm_id, timeout_ms: c_int) -> c_int;
    /// Creates the id's QP (the id then moves it through its states).
    fn rdma_create_qp(
        id: *mut rdma_cm_id,
        pd: *mut ibv_pd,
        qp_init_attr: *mut ibv_qp_init_attr,
    ) -> c_int;
    /// Destroys the id's QP.
    fn rdma_destroy_qp(id: *mut rdma_cm_id);
    /// Connects (active side).
    fn rdma_connect(id: *mut rdma_cm_id, conn_param: *mut rdma_conn_param) -> c_int;
    /// Listens for connection requests.
    fn rdma_listen(id: *mut rdma_cm_id, backlog: c_int) -> c_int;
    /// Accepts a connection request.
    fn rdma_accept(id: *mut rdma_cm_id, conn_param: *mut rdma_conn_param) -> c_int;
    /// Rejects a connection request with private data.
    fn rdma_reject(
        id: *mut rdma_cm_id,
        private_data: *const c_void,
        private_data_len: u8,
    ) -> c_int;
    /// Disconnects.
    fn rdma_disconnect(id: *mut rdma_cm_id) -> c_int;
    /// Reads the next event (EAGAIN on a non-blocking channel with none pending).
    fn rdma_get_cm_event(
        channel: *mut rdma_event_channel,
        event: *mut *mut rdma_cm_event,
    ) -> c_int;
    /// Acknowledges and frees an event.
    fn rdma_ack_cm_event(event: *mut rdma_cm_event) -> c_int;
    /// Moves an id to another event channel.
    fn rdma_migrate_id(id: *mut rdma_cm_id, channel: *mut rdma_event_channel) -> c_int;
    /// The devices librdmacm keeps open (null-terminated); free with `rdma_free_devices`.
    fn rdma_get_devices(num_devices: *mut c_int) -> *mut *mut ibv_context;
    /// Releases the list of `rdma_get_devices`.
    fn rdma_free_devices(list: *mut *mut ibv_context);
    /// Name of an event type.
    fn rdma_event_str(event: rdma_cm_event_type) -> *const c_char;
}
