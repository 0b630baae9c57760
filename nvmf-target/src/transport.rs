//! The contract between the target core and a transport (TCP here, RDMA in `keel-rdma`).
//!
//! The transport owns sockets/queue pairs, the receive path and data movement; the core owns
//! commands. A transport:
//! 1. is created by `nvmf_create_transport` through the factory registered for its `trtype`
//!    ([`crate::target::register_transport_factory`]);
//! 2. listens on the addresses `nvmf_subsystem_add_listener` asks for ([`Transport::listen`]);
//! 3. hands each new connection to one core (round-robin) for its whole life, and there creates
//!    the core's queue pair object with [`crate::target::Qpair::new`], giving it a
//!    [`QpairTransport`] to call back;
//! 4. for each command: fills an [`crate::request::NvmfRequest`], calls
//!    [`crate::target::Qpair::execute`], and sends what `request_complete` gives back;
//! 5. on connection loss calls [`crate::target::Qpair::close`] and frees its request pool only
//!    after every outstanding request has come back through `request_complete`.

use crate::request::ReqPtr;
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Transport types (NVMe-oF TRTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TrType {
    /// NVMe/TCP (TRTYPE 3).
    #[serde(rename = "TCP")]
    Tcp,
    /// NVMe/RDMA (TRTYPE 1).
    #[serde(rename = "RDMA")]
    Rdma,
}

impl TrType {
    /// Parse SPDK's spelling (case-insensitive: "TCP", "tcp", "RDMA").
    pub fn parse(s: &str) -> Option<TrType> {
        match s.to_ascii_uppercase().as_str() {
            "TCP" => Some(TrType::Tcp),
            "RDMA" => Some(TrType::Rdma),
            _ => None,
        }
    }
    /// SPDK's name ("TCP", "RDMA").
    pub fn name(self) -> &'static str {
        match self {
            TrType::Tcp => "TCP",
            TrType::Rdma => "RDMA",
        }
    }
    /// The TRTYPE value in discovery log entries.
    pub fn wire_value(self) -> u8 {
        match self {
            TrType::Rdma => 1,
            TrType::Tcp => 3,
        }
    }
}

/// Address family (NVMe-oF ADRFAM).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum AdrFam {
    /// IPv4 (ADRFAM 1).
    #[serde(rename = "IPv4")]
    Ipv4,
    /// IPv6 (ADRFAM 2).
    #[serde(rename = "IPv6")]
    Ipv6,
}

/// A listen address, as `nvmf_subsystem_add_listener` gives it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ListenAddr {
    /// Transport type.
    pub trtype: TrType,
    /// Address family.
    pub adrfam: AdrFam,
    /// Address (IP literal).
    pub traddr: String,
    /// Service (port number as a string, as in NVMe-oF).
    pub trsvcid: String,
}

impl ListenAddr {
    /// The IP socket address this listen address names, checked for transport `trtype`: the
    /// transport type matches, `traddr` is an IP literal of the family `adrfam` says, and
    /// `trsvcid` is a port number.
    pub fn socket_addr(&self, trtype: TrType) -> Result<std::net::SocketAddr, TransportError> {
        use std::net::{IpAddr, SocketAddr};
        let bad =
            |m: String| TransportError::BadAddress(format!("{}:{}", self.traddr, self.trsvcid), m);
        if self.trtype != trtype {
            return Err(bad(format!("not a {} address", trtype.name())));
        }
        let ip: IpAddr = self
            .traddr
            .parse()
            .map_err(|_| bad("not an IP address".into()))?;
        match (self.adrfam, ip) {
            (AdrFam::Ipv4, IpAddr::V4(_)) | (AdrFam::Ipv6, IpAddr::V6(_)) => {}
            _ => return Err(bad("address family does not match the address".into())),
        }
        let port: u16 = self
            .trsvcid
            .parse()
            .map_err(|_| bad("trsvcid is not a port number".into()))?;
        Ok(SocketAddr::new(ip, port))
    }
}

/// Options of a transport (`nvmf_create_transport`), SPDK's names and per-transport defaults
/// ([`TransportOpts::defaults_for`]). Options of the other transport type are kept but unused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TransportOpts {
    /// Transport type.
    pub trtype: TrType,
    /// Maximum I/O queue depth (entries).
    pub max_queue_depth: u16,
    /// Maximum I/O queue pairs per controller.
    pub max_io_qpairs_per_ctrlr: u16,
    /// In-capsule data size in bytes.
    pub in_capsule_data_size: u32,
    /// Maximum I/O size in bytes.
    pub max_io_size: u32,
    /// I/O unit size in bytes (buffer granularity).
    pub io_unit_size: u32,
    /// Maximum admin queue depth.
    pub max_aq_depth: u16,
    /// Shared data buffers (informational in Keel: buffers come from per-core pools).
    pub num_shared_buffers: u32,
    /// Per-poll-group buffer cache (informational in Keel).
    pub buf_cache_size: u32,
    /// TCP: send C2HData with the SUCCESS flag instead of a response capsule.
    pub c2h_success: bool,
    /// TCP: socket priority (SO_PRIORITY).
    pub sock_priority: u32,
    /// Seconds before an aborted request is answered.
    pub abort_timeout_sec: u32,
    /// RDMA: receive entries of each core's shared receive queue.
    pub max_srq_depth: u32,
    /// RDMA: give every queue pair its own receive queue instead of the core's SRQ.
    pub no_srq: bool,
    /// RDMA: completion queue entries of each core's CQ (besides the SRQ's).
    pub num_cqe: u32,
    /// RDMA: backlog of the listening CM ids.
    pub acceptor_backlog: u32,
}

impl TransportOpts {
    /// SPDK's TCP defaults.
    pub fn tcp_defaults() -> TransportOpts {
        TransportOpts {
            trtype: TrType::Tcp,
            max_queue_depth: 128,
            max_io_qpairs_per_ctrlr: 127,
            in_capsule_data_size: 4096,
            max_io_size: 131072,
            io_unit_size: 131072,
            max_aq_depth: 128,
            num_shared_buffers: 511,
            buf_cache_size: 32,
            c2h_success: true,
            sock_priority: 0,
            abort_timeout_sec: 1,
            max_srq_depth: 4096,
            no_srq: false,
            num_cqe: 4096,
            acceptor_backlog: 100,
        }
    }

    /// SPDK's RDMA defaults.
    pub fn rdma_defaults() -> TransportOpts {
        TransportOpts {
            trtype: TrType::Rdma,
            io_unit_size: 8192,
            num_shared_buffers: 4095,
            ..TransportOpts::tcp_defaults()
        }
    }

    /// SPDK's defaults for `trtype`.
    pub fn defaults_for(trtype: TrType) -> TransportOpts {
        match trtype {
            TrType::Tcp => TransportOpts::tcp_defaults(),
            TrType::Rdma => TransportOpts::rdma_defaults(),
        }
    }
}

/// Errors a transport reports on the control path.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TransportError {
    /// The address is already served, or the port is taken by someone else.
    #[error("address {0} is in use")]
    AddrInUse(String),
    /// The address cannot be parsed or bound.
    #[error("invalid listen address {0}: {1}")]
    BadAddress(String, String),
    /// Not listening on that address.
    #[error("not listening on {0}")]
    NotListening(String),
    /// The transport cannot run here (e.g. no RDMA device).
    #[error("{0}")]
    Unavailable(String),
}

/// A transport instance (one per `nvmf_create_transport`). Called on the main core.
pub trait Transport: Send + Sync + 'static {
    /// Its type.
    fn trtype(&self) -> TrType;
    /// Its options.
    fn opts(&self) -> &TransportOpts;
    /// Start accepting connections on `addr`.
    fn listen(&self, addr: &ListenAddr) -> Result<(), TransportError>;
    /// Stop accepting on `addr` (existing connections stay).
    fn stop_listen(&self, addr: &ListenAddr) -> Result<(), TransportError>;
    /// Close every connection and listener (target shutdown); `done` runs once all are gone.
    fn shutdown(&self, done: Box<dyn FnOnce() + Send>);
}

/// What the core calls on a queue pair's transport side. Lives on the queue pair's core.
pub trait QpairTransport {
    /// `req` is finished: send its data (controller-to-host) and response, recycle it. May be
    /// called from inside [`crate::target::Qpair::execute`]; never hold a borrow across
    /// `execute`.
    fn request_complete(&self, req: ReqPtr);
    /// The core wants this connection gone (keep-alive timeout, controller or subsystem
    /// deleted, host removed). The transport closes it and then calls `Qpair::close`.
    fn disconnect(&self);
    /// The peer's address ("traddr:trsvcid") for logs and `nvmf_subsystem_get_qpairs`.
    fn peer(&self) -> String;
}

/// Transport shutdown: counts the cores still closing connections; the last one calls `done`.
/// Shared by the transports' [`Transport::shutdown`].
pub struct ShutdownWait {
    left: AtomicUsize,
    done: Mutex<Option<Box<dyn FnOnce() + Send>>>,
}

impl ShutdownWait {
    /// A wait for `cores` cores that calls `done` when all of them arrived.
    pub fn new(cores: usize, done: Box<dyn FnOnce() + Send>) -> Arc<ShutdownWait> {
        let w = Arc::new(ShutdownWait {
            left: AtomicUsize::new(cores),
            done: Mutex::new(Some(done)),
        });
        if cores == 0 {
            w.finish();
        }
        w
    }

    /// One core has freed every connection of the transport.
    pub fn arrive(&self) {
        if self.left.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.finish();
        }
    }

    /// Call `done` now (once), whatever is left.
    pub fn finish(&self) {
        let done = self
            .done
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(f) = done {
            f();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(trtype: TrType, adrfam: AdrFam, traddr: &str, trsvcid: &str) -> ListenAddr {
        ListenAddr {
            trtype,
            adrfam,
            traddr: traddr.into(),
            trsvcid: trsvcid.into(),
        }
    }

    #[test]
    fn socket_addr_checks_type_family_and_port() {
        let ok = addr(TrType::Rdma, AdrFam::Ipv4, "10.0.2.15", "4420");
        assert_eq!(
            ok.socket_addr(TrType::Rdma).unwrap().to_string(),
            "10.0.2.15:4420"
        );
        let v6 = addr(TrType::Tcp, AdrFam::Ipv6, "::1", "4421");
        assert_eq!(
            v6.socket_addr(TrType::Tcp).unwrap().to_string(),
            "[::1]:4421"
        );
        for (a, want) in [
            (ok.clone(), TrType::Tcp),
            (addr(TrType::Tcp, AdrFam::Ipv4, "host", "1"), TrType::Tcp),
            (addr(TrType::Tcp, AdrFam::Ipv6, "1.2.3.4", "1"), TrType::Tcp),
            (addr(TrType::Tcp, AdrFam::Ipv4, "1.2.3.4", "x"), TrType::Tcp),
            (
                addr(TrType::Tcp, AdrFam::Ipv4, "1.2.3.4", "70000"),
                TrType::Tcp,
            ),
        ] {
            assert!(
                matches!(a.socket_addr(want), Err(TransportError::BadAddress(..))),
                "{a:?}"
            );
        }
    }
}
