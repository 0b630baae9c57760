//! The NVMe/TCP transport (docs/ARCHITECTURE.md §6.2).
//!
//! - `pdu`: PDU wire formats, header validation, CRC32C digests (`keel_nvme::pdu`).
//! - [`recv`]: the socket-independent receive state machine (headers into a staging buffer,
//!   data straight into pool buffers).
//! - [`sgl`]: the capsule's SGL descriptor and data direction.
//! - `conn`: one connection: request slots, R2T/H2CData, C2HData/CapsuleResp, gathered sends.
//! - `group`: the per-core poll group (one epoll set, one poller, batched I/O).
//! - `listener`: [`TcpTransport`], listeners and the round-robin accept poller.
//!
//! Why epoll and not io_uring for the sockets: measured (`perf/socket-layer.sh`), see
//! `SOCKET_LAYER.md` beside this file.

mod conn;
mod group;
mod listener;
pub mod recv;
pub mod sgl;

/// The PDU codecs, from the wire crate (child modules name them `super::pdu`).
use keel_nvme::pdu;

pub use conn::MAX_R2T_BUFFERED_PER_CONN;
pub use listener::{TcpTransport, MAXH2CDATA};

use crate::transport::{TrType, Transport, TransportError, TransportOpts};
use std::sync::Arc;

fn factory(opts: TransportOpts) -> Result<Arc<dyn Transport>, TransportError> {
    Ok(Arc::new(TcpTransport::new(opts)?))
}

/// Register the TCP transport as the factory for [`TrType::Tcp`] (`nvmf_create_transport`).
pub fn register() {
    crate::target::register_transport_factory(TrType::Tcp, factory);
}

pub use group::{connect_timeout, set_connect_timeout, DEFAULT_CONNECT_TIMEOUT};

/// Live NVMe/TCP connections on the calling core (for tests and stats).
pub fn connections_on_this_core() -> usize {
    group::connection_count()
}

/// NVMe/TCP connections on the calling core that wait for a request slot or pool buffers
/// (for tests and stats).
pub fn stalled_connections_on_this_core() -> usize {
    group::stalled_count()
}
