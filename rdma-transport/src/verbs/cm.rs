//! RDMA connection manager: event channel, events and ids.
//!
//! Events are copied out and acknowledged inside [`CmEventChannel::poll_event`]:
//! `rdma_destroy_id` blocks until every event delivered for the id is acked, so an event held
//! across the drop of its id would hang the reactor. The copy (at most 255 bytes of private
//! data, inline) keeps everything a handler needs.

use super::cq::set_nonblocking;
use super::{Context, Error, ProtectionDomain, QpInit, QueuePair};
use crate::ffi::{cm as fcm, verbs as fv};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::Arc;

struct ChannelInner(NonNull<fcm::rdma_event_channel>);

// SAFETY: librdmacm channel calls are thread-safe; the channel is destroyed only in Drop.
unsafe impl Send for ChannelInner {}
// SAFETY: as above.
unsafe impl Sync for ChannelInner {}

impl Drop for ChannelInner {
    fn drop(&mut self) {
        // SAFETY: every CmId on the channel holds an Arc to it, so none is left, and events
        // are acked as they are read.
        unsafe { fcm::rdma_destroy_event_channel(self.0.as_ptr()) };
    }
}

/// An RDMA CM event channel with a non-blocking fd, polled by a reactor poller. Cloning shares
/// the channel; it is destroyed after the last clone and the last id reporting on it.
#[derive(Clone)]
pub struct CmEventChannel(Arc<ChannelInner>);

impl CmEventChannel {
    /// Creates a channel (loading rdma-core on first use) and makes its fd non-blocking.
    pub fn new() -> Result<Self, Error> {
        Error::load_rdma_core()?;
        // SAFETY: no preconditions.
        let ch = unsafe { fcm::rdma_create_event_channel() };
        let ptr = NonNull::new(ch).ok_or_else(|| Error::last("rdma_create_event_channel"))?;
        let this = Self(Arc::new(ChannelInner(ptr)));
        set_nonblocking(this.fd(), "fcntl(cm channel)")?;
        Ok(this)
    }

    fn as_ptr(&self) -> *mut fcm::rdma_event_channel {
        self.0 .0.as_ptr()
    }

    /// The channel's fd (readable when an event is pending).
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel is alive; fd is immutable.
        unsafe { (*self.as_ptr()).fd }
    }

    /// Creates an RC (TCP port space) id reporting on this channel; `token` comes back in its
    /// events.
    pub fn create_id(&self, token: u64) -> Result<CmId, Error> {
        let mut id: *mut fcm::rdma_cm_id = ptr::null_mut();
        // SAFETY: the channel is alive; `id` is a valid out-pointer; the token is opaque.
        let rc = unsafe {
            fcm::rdma_create_id(
                self.as_ptr(),
                &mut id,
                token as *mut libc::c_void,
                fcm::RDMA_PS_TCP,
            )
        };
        Error::check_errno("rdma_create_id", rc)?;
        let ptr = NonNull::new(id).ok_or_else(|| Error::new("rdma_create_id", libc::EIO))?;
        Ok(CmId {
            ptr,
            qp: None,
            channel: self.clone(),
        })
    }

    /// Reads the next event without blocking (`None` if none is pending), copies it and acks
    /// it. A CONNECT_REQUEST carries the new connection's id ([`CmEvent::take_id`]).
    ///
    /// The channel's fd is checked first (`poll(2)`, zero timeout): librdmacm allocates an
    /// event on every `rdma_get_cm_event`, even one that finds nothing, so an idle channel must
    /// not be read (pollers call this every millisecond).
    pub fn poll_event(&self) -> Result<Option<CmEvent>, Error> {
        let mut pfd = libc::pollfd {
            fd: self.fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd, zero timeout (never blocks).
        let ready = unsafe { libc::poll(&mut pfd, 1, 0) };
        if ready < 0 {
            let e = Error::last("poll(cm channel)");
            return if e.errno() == libc::EINTR {
                Ok(None)
            } else {
                Err(e)
            };
        }
        if ready == 0 {
            return Ok(None);
        }
        let mut ev: *mut fcm::rdma_cm_event = ptr::null_mut();
        // SAFETY: the channel is alive; `ev` is a valid out-pointer; the fd is non-blocking.
        let rc = unsafe { fcm::rdma_get_cm_event(self.as_ptr(), &mut ev) };
        if rc != 0 {
            let e = Error::last("rdma_get_cm_event");
            return if e.errno() == libc::EAGAIN {
                Ok(None)
            } else {
                Err(e)
            };
        }
        let Some(ev) = NonNull::new(ev) else {
            return Err(Error::new("rdma_get_cm_event", libc::EIO));
        };
        // SAFETY: the event is valid until acked below; we only read it.
        let out = unsafe { self.copy_event(ev.as_ref()) };
        // SAFETY: delivered by rdma_get_cm_event, acked exactly once, not used afterwards.
        let rc = unsafe { fcm::rdma_ack_cm_event(ev.as_ptr()) };
        if rc != 0 {
            log::error!("rdma: {}", Error::last("rdma_ack_cm_event"));
        }
        log::debug!(
            "rdma: cm event {:?} status {} on id {:?}",
            out.kind,
            out.status,
            out.id
        );
        Ok(Some(out))
    }

    /// # Safety
    /// `e` is a delivered, not yet acked event of this channel.
    unsafe fn copy_event(&self, e: &fcm::rdma_cm_event) -> CmEvent {
        let kind = CmEventKind::from_raw(e.event);
        // SAFETY: RC events carry `conn` parameters (librdmacm fills it for every RC event).
        let conn = unsafe { e.param.conn };
        let mut private_data = [0u8; 255];
        let mut private_len = 0u8;
        let has_data = matches!(
            kind,
            CmEventKind::ConnectRequest
                | CmEventKind::ConnectResponse
                | CmEventKind::Rejected
                | CmEventKind::Established
        );
        if has_data && !conn.private_data.is_null() {
            private_len = conn.private_data_len;
            // SAFETY: librdmacm guarantees `private_data_len` readable bytes until the ack.
            let src = unsafe {
                std::slice::from_raw_parts(conn.private_data.cast::<u8>(), usize::from(private_len))
            };
            private_data[..src.len()].copy_from_slice(src);
        }
        let token = if e.id.is_null() {
            0
        } else {
            // SAFETY: the event's id is alive until the event is acked.
            unsafe { (*e.id).context as u64 }
        };
        let new_id = match (kind, NonNull::new(e.id)) {
            (CmEventKind::ConnectRequest, Some(ptr)) => Some(CmId {
                ptr,
                qp: None,
                channel: self.clone(),
            }),
            _ => None,
        };
        CmEvent {
            kind,
            status: e.status,
            id: CmIdHandle(e.id as usize),
            listen_id: NonNull::new(e.listen_id).map(|p| CmIdHandle(p.as_ptr() as usize)),
            token,
            new_id,
            private_data,
            private_len,
            responder_resources: conn.responder_resources,
            initiator_depth: conn.initiator_depth,
            rnr_retry_count: conn.rnr_retry_count,
            srq: conn.srq != 0,
        }
    }
}

/// The type of a CM event.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[allow(missing_docs)]
pub enum CmEventKind {
    AddrResolved,
    AddrError,
    RouteResolved,
    RouteError,
    ConnectRequest,
    ConnectResponse,
    ConnectError,
    Unreachable,
    Rejected,
    Established,
    Disconnected,
    DeviceRemoval,
    AddrChange,
    TimewaitExit,
    /// Any other (multicast) event, raw value.
    Other(u32),
}

impl CmEventKind {
    fn from_raw(v: u32) -> Self {
        match v {
            fcm::RDMA_CM_EVENT_ADDR_RESOLVED => Self::AddrResolved,
            fcm::RDMA_CM_EVENT_ADDR_ERROR => Self::AddrError,
            fcm::RDMA_CM_EVENT_ROUTE_RESOLVED => Self::RouteResolved,
            fcm::RDMA_CM_EVENT_ROUTE_ERROR => Self::RouteError,
            fcm::RDMA_CM_EVENT_CONNECT_REQUEST => Self::ConnectRequest,
            fcm::RDMA_CM_EVENT_CONNECT_RESPONSE => Self::ConnectResponse,
            fcm::RDMA_CM_EVENT_CONNECT_ERROR => Self::ConnectError,
            fcm::RDMA_CM_EVENT_UNREACHABLE => Self::Unreachable,
            fcm::RDMA_CM_EVENT_REJECTED => Self::Rejected,
            fcm::RDMA_CM_EVENT_ESTABLISHED => Self::Established,
            fcm::RDMA_CM_EVENT_DISCONNECTED => Self::Disconnected,
            fcm::RDMA_CM_EVENT_DEVICE_REMOVAL => Self::DeviceRemoval,
            fcm::RDMA_CM_EVENT_ADDR_CHANGE => Self::AddrChange,
            fcm::RDMA_CM_EVENT_TIMEWAIT_EXIT => Self::TimewaitExit,
            other => Self::Other(other),
        }
    }
}

/// Identifies a CM id in events (compare with [`CmId::handle`]); never dereferenced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CmIdHandle(usize);

/// A CM event, already acknowledged (see the module doc).
pub struct CmEvent {
    kind: CmEventKind,
    status: i32,
    id: CmIdHandle,
    listen_id: Option<CmIdHandle>,
    token: u64,
    new_id: Option<CmId>,
    private_data: [u8; 255],
    private_len: u8,
    responder_resources: u8,
    initiator_depth: u8,
    rnr_retry_count: u8,
    srq: bool,
}

impl CmEvent {
    /// The event type.
    pub fn kind(&self) -> CmEventKind {
        self.kind
    }

    /// Status (0, a negative errno, or for REJECTED the CM reject reason).
    pub fn status(&self) -> i32 {
        self.status
    }

    /// The id the event is for (the new id for CONNECT_REQUEST).
    pub fn id(&self) -> CmIdHandle {
        self.id
    }

    /// The listening id of a CONNECT_REQUEST.
    pub fn listen_id(&self) -> Option<CmIdHandle> {
        self.listen_id
    }

    /// The token of the event's id (a new id inherits its listener's).
    pub fn token(&self) -> u64 {
        self.token
    }

    /// The peer's private data (CONNECT_REQUEST, CONNECT_RESPONSE, REJECTED, ESTABLISHED).
    /// The transport may pad it (InfiniBand/RoCE CM requests carry 56 bytes).
    pub fn private_data(&self) -> &[u8] {
        &self.private_data[..usize::from(self.private_len)]
    }

    /// The peer's responder resources (its IRD) from a CONNECT_REQUEST.
    pub fn responder_resources(&self) -> u8 {
        self.responder_resources
    }

    /// The peer's initiator depth (its ORD) from a CONNECT_REQUEST.
    pub fn initiator_depth(&self) -> u8 {
        self.initiator_depth
    }

    /// The peer's RNR retry count.
    pub fn rnr_retry_count(&self) -> u8 {
        self.rnr_retry_count
    }

    /// Whether the peer uses an SRQ.
    pub fn peer_uses_srq(&self) -> bool {
        self.srq
    }

    /// Takes the new connection's id out of a CONNECT_REQUEST (once). Accept or reject it;
    /// dropping it untouched destroys it, which the host sees as a reject.
    pub fn take_id(&mut self) -> Option<CmId> {
        self.new_id.take()
    }
}

/// Parameters of `rdma_connect` / `rdma_accept`.
#[derive(Clone, Copy, Debug)]
pub struct ConnParam<'a> {
    /// Private data (≤ 255 bytes; NVMe-oF: 32).
    pub private_data: &'a [u8],
    /// RDMA READs we accept as target at once (IRD).
    pub responder_resources: u8,
    /// RDMA READs we issue at once (ORD).
    pub initiator_depth: u8,
    /// Transport retries (connect only).
    pub retry_count: u8,
    /// Receiver-not-ready retries (7: infinite).
    pub rnr_retry_count: u8,
}

impl ConnParam<'_> {
    fn to_raw(self, op: &'static str) -> Result<fcm::rdma_conn_param, Error> {
        let len =
            u8::try_from(self.private_data.len()).map_err(|_| Error::new(op, libc::EINVAL))?;
        Ok(fcm::rdma_conn_param {
            private_data: if len == 0 {
                ptr::null()
            } else {
                self.private_data.as_ptr().cast()
            },
            private_data_len: len,
            responder_resources: self.responder_resources,
            initiator_depth: self.initiator_depth,
            flow_control: 1,
            retry_count: self.retry_count,
            rnr_retry_count: self.rnr_retry_count,
            srq: 0,
            qp_num: 0,
        })
    }
}

/// An RDMA CM id (like a socket): listens, connects, or is one accepted connection. Owns its
/// QP: on drop the QP is destroyed first, then the id; the event channel outlives both.
pub struct CmId {
    ptr: NonNull<fcm::rdma_cm_id>,
    qp: Option<QueuePair>,
    channel: CmEventChannel,
}

// SAFETY: an id may move between threads (librdmacm has no thread affinity); it is not Sync,
// so calls on one id never run concurrently.
unsafe impl Send for CmId {}

/// A `sockaddr` for `addr` (IPv4 or IPv6).
fn sockaddr_of(addr: SocketAddr) -> fcm::rdma_sockaddr {
    match addr {
        SocketAddr::V4(a) => fcm::rdma_sockaddr {
            sin: libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from_ne_bytes(a.ip().octets()),
                },
                sin_zero: [0; 8],
            },
        },
        SocketAddr::V6(a) => fcm::rdma_sockaddr {
            sin6: libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo().to_be(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            },
        },
    }
}

impl CmId {
    fn raw(&self) -> *mut fcm::rdma_cm_id {
        self.ptr.as_ptr()
    }

    /// The handle events use for this id.
    pub fn handle(&self) -> CmIdHandle {
        CmIdHandle(self.ptr.as_ptr() as usize)
    }

    /// The token reported in this id's events.
    pub fn token(&self) -> u64 {
        // SAFETY: the id is alive; `context` is the user field.
        unsafe { (*self.raw()).context as u64 }
    }

    /// Sets the token reported in this id's events.
    pub fn set_token(&mut self, token: u64) {
        // SAFETY: the id is alive and not shared (&mut); `context` is the user field.
        unsafe { (*self.raw()).context = token as *mut libc::c_void };
    }

    /// The raw device context the id is bound to (null before bind/resolve).
    pub fn verbs_ptr(&self) -> *mut fv::ibv_context {
        // SAFETY: the id is alive.
        unsafe { (*self.raw()).verbs }
    }

    /// The context among `contexts` (from [`super::cm_contexts`]) this id is bound to.
    pub fn device_context<'c>(&self, contexts: &'c [Arc<Context>]) -> Option<&'c Arc<Context>> {
        let v = self.verbs_ptr();
        contexts.iter().find(|c| !v.is_null() && c.as_ptr() == v)
    }

    /// The peer's address (for an accepted or connected id), if it is IPv4 or IPv6.
    pub fn peer_addr(&self) -> Option<SocketAddr> {
        // SAFETY: the id is alive; librdmacm fills `route.addr.dst` for connection ids and
        // leaves it zeroed otherwise; the family field is read first and decides the member.
        let dst = unsafe { (*self.raw()).route.addr.dst };
        // SAFETY: every member starts with the family field.
        let family = i32::from(unsafe { dst.addr.sa_family });
        match family {
            libc::AF_INET => {
                // SAFETY: the family says sockaddr_in.
                let a = unsafe { dst.sin };
                let ip = std::net::Ipv4Addr::from(u32::from_be(a.sin_addr.s_addr));
                Some(SocketAddr::new(ip.into(), u16::from_be(a.sin_port)))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says sockaddr_in6.
                let a = unsafe { dst.sin6 };
                let ip = std::net::Ipv6Addr::from(a.sin6_addr.s6_addr);
                Some(SocketAddr::new(ip.into(), u16::from_be(a.sin6_port)))
            }
            _ => None,
        }
    }

    /// Binds to a local address (port 0: any).
    pub fn bind(&mut self, addr: SocketAddr) -> Result<(), Error> {
        let mut sa = sockaddr_of(addr);
        // SAFETY: the id is alive; `sa` is a valid sockaddr of its family for the call.
        let rc = unsafe { fcm::rdma_bind_addr(self.raw(), ptr::addr_of_mut!(sa).cast()) };
        Error::check_errno("rdma_bind_addr", rc)
    }

    /// Listens for connection requests (after [`Self::bind`]).
    pub fn listen(&mut self, backlog: i32) -> Result<(), Error> {
        // SAFETY: the id is alive.
        let rc = unsafe { fcm::rdma_listen(self.raw(), backlog) };
        Error::check_errno("rdma_listen", rc)
    }

    /// Starts resolving `dst` (active side); completes with ADDR_RESOLVED / ADDR_ERROR.
    pub fn resolve_addr(
        &mut self,
        src: Option<SocketAddr>,
        dst: SocketAddr,
        timeout_ms: i32,
    ) -> Result<(), Error> {
        let mut s = src.map(sockaddr_of);
        let mut d = sockaddr_of(dst);
        let sp = s
            .as_mut()
            .map_or(ptr::null_mut(), |s| ptr::addr_of_mut!(*s).cast());
        // SAFETY: the id is alive; the sockaddrs are valid for the call.
        let rc = unsafe {
            fcm::rdma_resolve_addr(self.raw(), sp, ptr::addr_of_mut!(d).cast(), timeout_ms)
        };
        Error::check_errno("rdma_resolve_addr", rc)
    }

    /// Starts resolving the route (active side); completes with ROUTE_RESOLVED / ROUTE_ERROR.
    pub fn resolve_route(&mut self, timeout_ms: i32) -> Result<(), Error> {
        // SAFETY: the id is alive.
        let rc = unsafe { fcm::rdma_resolve_route(self.raw(), timeout_ms) };
        Error::check_errno("rdma_resolve_route", rc)
    }

    /// Creates this id's RC QP on `pd`, which must be on the id's device.
    pub fn create_qp(
        &mut self,
        pd: &Arc<ProtectionDomain>,
        init: &QpInit,
    ) -> Result<&QueuePair, Error> {
        if self.qp.is_some() || pd.context().as_ptr() != self.verbs_ptr() {
            return Err(Error::new("rdma_create_qp", libc::EINVAL));
        }
        let mut attr = fv::ibv_qp_init_attr {
            qp_context: ptr::null_mut(),
            send_cq: init.send_cq.as_ptr(),
            recv_cq: init.recv_cq.as_ptr(),
            srq: init.srq.as_ref().map_or(ptr::null_mut(), |s| s.as_ptr()),
            cap: fv::ibv_qp_cap {
                max_send_wr: init.max_send_wr,
                max_recv_wr: if init.srq.is_some() {
                    0
                } else {
                    init.max_recv_wr
                },
                max_send_sge: init.max_send_sge,
                max_recv_sge: if init.srq.is_some() {
                    0
                } else {
                    init.max_recv_sge
                },
                max_inline_data: init.max_inline_data,
            },
            qp_type: fv::IBV_QPT_RC,
            sq_sig_all: init.sq_sig_all.into(),
        };
        // SAFETY: id, PD, CQs and SRQ are alive (the QueuePair keeps Arcs to them).
        let rc = unsafe { fcm::rdma_create_qp(self.raw(), pd.as_ptr(), &mut attr) };
        Error::check_errno("rdma_create_qp", rc)?;
        // SAFETY: the id is alive; rdma_create_qp succeeded, so `qp` is set.
        let qp = unsafe { (*self.raw()).qp };
        let ptr = NonNull::new(qp).ok_or_else(|| Error::new("rdma_create_qp", libc::EIO))?;
        // SAFETY: the QP is alive.
        let qp_num = unsafe { (*ptr.as_ptr()).qp_num };
        Ok(self.qp.insert(QueuePair {
            ptr,
            qp_num,
            caps: attr.cap,
            _pd: pd.clone(),
            _send_cq: init.send_cq.clone(),
            _recv_cq: init.recv_cq.clone(),
            srq: init.srq.clone(),
        }))
    }

    /// The id's QP, once created.
    pub fn qp(&self) -> Option<&QueuePair> {
        self.qp.as_ref()
    }

    /// Connects (active side, after ROUTE_RESOLVED and [`Self::create_qp`]).
    pub fn connect(&mut self, param: &ConnParam<'_>) -> Result<(), Error> {
        let mut p = param.to_raw("rdma_connect")?;
        // SAFETY: the id is alive; `p` and its private data are valid for the call.
        let rc = unsafe { fcm::rdma_connect(self.raw(), &mut p) };
        Error::check_errno("rdma_connect", rc)
    }

    /// Accepts a connection request (passive side, after [`Self::create_qp`]); the QP is
    /// moved to RTS by librdmacm.
    pub fn accept(&mut self, param: &ConnParam<'_>) -> Result<(), Error> {
        let mut p = param.to_raw("rdma_accept")?;
        // SAFETY: the id is alive; `p` and its private data are valid for the call.
        let rc = unsafe { fcm::rdma_accept(self.raw(), &mut p) };
        Error::check_errno("rdma_accept", rc)
    }

    /// Rejects a connection request with `private_data` (≤ 255 bytes).
    pub fn reject(&mut self, private_data: &[u8]) -> Result<(), Error> {
        let len = u8::try_from(private_data.len())
            .map_err(|_| Error::new("rdma_reject", libc::EINVAL))?;
        let p = if len == 0 {
            ptr::null()
        } else {
            private_data.as_ptr().cast()
        };
        // SAFETY: the id is alive; the data is valid for the call.
        let rc = unsafe { fcm::rdma_reject(self.raw(), p, len) };
        Error::check_errno("rdma_reject", rc)
    }

    /// Disconnects; the QP's outstanding work requests are flushed. The passive side must
    /// also call this when it sees DISCONNECTED: on InfiniBand/RoCE that sends the DREP
    /// without which the initiator never sees its own DISCONNECTED.
    pub fn disconnect(&mut self) -> Result<(), Error> {
        // SAFETY: the id is alive.
        let rc = unsafe { fcm::rdma_disconnect(self.raw()) };
        Error::check_errno("rdma_disconnect", rc)
    }

    /// Moves the id to `channel` (e.g. a connection's poll group's channel).
    pub fn migrate(&mut self, channel: &CmEventChannel) -> Result<(), Error> {
        // SAFETY: both are alive; events of this id already delivered were acked at read.
        let rc = unsafe { fcm::rdma_migrate_id(self.raw(), channel.as_ptr()) };
        Error::check_errno("rdma_migrate_id", rc)?;
        self.channel = channel.clone();
        Ok(())
    }
}

impl Drop for CmId {
    fn drop(&mut self) {
        if let Some(qp) = self.qp.take() {
            // SAFETY: the QP was created by rdma_create_qp on this id and is destroyed only
            // here; the PD/CQs/SRQ it uses are released (Arcs in `qp`) only afterwards.
            unsafe { fcm::rdma_destroy_qp(self.raw()) };
            drop(qp);
        }
        // SAFETY: created by rdma_create_id or delivered by CONNECT_REQUEST, destroyed only
        // here; its delivered events were acked when read, so this does not block.
        let rc = unsafe { fcm::rdma_destroy_id(self.raw()) };
        if rc != 0 {
            log::error!("rdma: {}", Error::last("rdma_destroy_id"));
        }
    }
}
