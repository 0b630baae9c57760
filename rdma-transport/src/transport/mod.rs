//! The NVMe-oF RDMA transport (docs/ARCHITECTURE.md §6.3, §9): [`RdmaTransport`] implements
//! [`keel_nvmf::transport::Transport`] the same way the TCP transport does — the core sees only
//! requests — with RDMA doing the data movement.
//!
//! - `devices`: the RDMA devices librdmacm knows, each with its protection domain (process-wide).
//! - `listener`: the main core's CM event channel and listening ids; validates CONNECT_REQUEST
//!   private data (REJECT with the right status) and hands each new connection to a core,
//!   round-robin, for its whole life.
//! - `core_dev`: per core and device: the completion queue, the shared receive queue with its
//!   registered receive buffers, and the memory regions of the core's buffer-pool pages
//!   (registered once per page, when the pool maps it).
//! - `recv`: registered receive buffers (capsule + in-capsule data) and their posting.
//! - `group`: the per-core poll group: polls the CQs in batches, routes completions, and polls
//!   the core's CM channel for disconnects.
//! - `conn`: one queue pair: request slots, SGL checks, RDMA READ for host writes, RDMA WRITE +
//!   SEND (with invalidate when asked) for host reads, teardown. HOT PATH.
//! - [`capsule`]: decoding a received command capsule (command, data location or refusal).
//! - `wr_id`: what a work request id encodes.

pub mod capsule;
mod conn;
mod core_dev;
mod devices;
mod group;
mod listener;
mod recv;
mod wr_id;

use keel_nvmf::transport::{ListenAddr, TrType, Transport, TransportError, TransportOpts};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

/// Largest in-capsule data size the RDMA transport takes (bytes per receive buffer).
pub const MAX_IN_CAPSULE_DATA_SIZE: u32 = 64 * 1024;
/// Most scatter/gather entries one RDMA READ/WRITE work request carries.
const MAX_SGE_PER_WR: u32 = 16;

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// Per-connection settings derived from the transport options (shared, read-only).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RdmaConfig {
    /// Deepest I/O queue (entries).
    pub max_queue_depth: u16,
    /// Deepest admin queue (entries).
    pub max_aq_depth: u16,
    /// Highest I/O queue id a host may connect.
    pub max_qid: u16,
    /// In-capsule data bytes after the 64-byte command in a receive buffer.
    pub icd: u32,
    /// Largest data transfer of one command.
    pub max_io_size: u32,
    /// Size of each pool buffer a command's data is split over.
    pub buf_chunk: usize,
    /// Shared receive queue entries per core (0: every QP has its own receive queue).
    pub srq_depth: u32,
    /// Completion queue entries per core, besides the SRQ's.
    pub num_cqe: u32,
}

/// The NVMe/RDMA transport (one per `nvmf_create_transport -t RDMA`).
pub struct RdmaTransport {
    id: u64,
    opts: TransportOpts,
    cfg: Arc<RdmaConfig>,
    listening: Mutex<Vec<ListenAddr>>,
}

impl RdmaTransport {
    /// A transport with `opts`: checks them, loads rdma-core (the error says when it is not
    /// installed) and checks that this machine has an RDMA device.
    pub fn new(opts: TransportOpts) -> Result<RdmaTransport, TransportError> {
        let cfg = config_of(&opts)?;
        let no_device = || {
            TransportError::Unavailable(
                "RDMA transport: this machine has no RDMA device (load a driver, e.g. \
                 `modprobe rdma_rxe && rdma link add rxe0 type rxe netdev eth0` for Soft-RoCE)"
                    .into(),
            )
        };
        let n = match devices::refresh() {
            Ok(n) => n,
            Err(e) if e.rdma_core().is_some() => {
                return Err(TransportError::Unavailable(format!("RDMA transport: {e}")))
            }
            Err(e) if e.errno() == libc::ENODEV => return Err(no_device()),
            Err(e) => {
                return Err(TransportError::Unavailable(format!(
                    "RDMA transport: cannot list RDMA devices: {e}"
                )))
            }
        };
        if n == 0 {
            return Err(no_device());
        }
        log::info!(
            "nvmf/rdma: transport created: {n} device(s), queue depth {}, in-capsule data {} B, \
             max I/O {} B in {} B buffers, {}",
            cfg.max_queue_depth,
            cfg.icd,
            cfg.max_io_size,
            cfg.buf_chunk,
            if cfg.srq_depth > 0 {
                format!("shared receive queue of {} per core", cfg.srq_depth)
            } else {
                "a receive queue per queue pair".to_string()
            }
        );
        Ok(RdmaTransport {
            id: NEXT_ID.fetch_add(1, Ordering::Relaxed),
            opts,
            cfg: Arc::new(cfg),
            listening: Mutex::new(Vec::new()),
        })
    }
}

/// Check `opts` for RDMA and derive the connection settings.
fn config_of(opts: &TransportOpts) -> Result<RdmaConfig, TransportError> {
    let bad = |m: String| Err(TransportError::Unavailable(format!("RDMA transport: {m}")));
    if opts.max_queue_depth < 2 || opts.max_aq_depth < 2 {
        return bad("queue depths must be at least 2".into());
    }
    if opts.in_capsule_data_size > MAX_IN_CAPSULE_DATA_SIZE {
        return bad(format!(
            "in_capsule_data_size {} is above the supported {MAX_IN_CAPSULE_DATA_SIZE}",
            opts.in_capsule_data_size
        ));
    }
    let max_io = (keel_bdev::MAX_IOVS * keel_reactor::pool::MAX_CLASS) as u32;
    if opts.max_io_size == 0 || opts.max_io_size > max_io {
        return bad(format!("max_io_size must be in 1..={max_io}"));
    }
    let chunk = (opts.io_unit_size as usize).clamp(4096, keel_reactor::pool::MAX_CLASS);
    if (opts.max_io_size as usize).div_ceil(chunk) > keel_bdev::MAX_IOVS {
        return bad(format!(
            "io_unit_size {} too small for max_io_size {} (at most {} buffers per I/O)",
            opts.io_unit_size,
            opts.max_io_size,
            keel_bdev::MAX_IOVS
        ));
    }
    if !opts.no_srq && opts.max_srq_depth < 2 {
        return bad("max_srq_depth must be at least 2".into());
    }
    if opts.num_cqe < 16 {
        return bad("num_cqe must be at least 16".into());
    }
    Ok(RdmaConfig {
        max_queue_depth: opts.max_queue_depth,
        max_aq_depth: opts.max_aq_depth,
        max_qid: opts.max_io_qpairs_per_ctrlr,
        icd: opts.in_capsule_data_size,
        max_io_size: opts.max_io_size,
        buf_chunk: chunk,
        srq_depth: if opts.no_srq { 0 } else { opts.max_srq_depth },
        num_cqe: opts.num_cqe,
    })
}

fn factory(opts: TransportOpts) -> Result<Arc<dyn Transport>, TransportError> {
    Ok(Arc::new(RdmaTransport::new(opts)?))
}

/// Register the RDMA transport as the factory for [`TrType::Rdma`] (`nvmf_create_transport`).
pub fn register() {
    keel_nvmf::target::register_transport_factory(TrType::Rdma, factory);
}

/// Live NVMe/RDMA connections on the calling core (for tests and stats).
pub fn connections_on_this_core() -> usize {
    group::connection_count()
}

impl Transport for RdmaTransport {
    fn trtype(&self) -> TrType {
        TrType::Rdma
    }

    fn opts(&self) -> &TransportOpts {
        &self.opts
    }

    fn listen(&self, addr: &ListenAddr) -> Result<(), TransportError> {
        let sa = addr.socket_addr(TrType::Rdma)?;
        let mut listening = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if listening.iter().any(|a| a == addr) {
            return Err(TransportError::AddrInUse(sa.to_string()));
        }
        let backlog = i32::try_from(self.opts.acceptor_backlog).unwrap_or(i32::MAX);
        listener::listen(self.id, addr.clone(), sa, backlog, self.cfg.clone())?;
        listening.push(addr.clone());
        Ok(())
    }

    fn stop_listen(&self, addr: &ListenAddr) -> Result<(), TransportError> {
        let sa = addr.socket_addr(TrType::Rdma)?;
        let mut listening = self
            .listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(pos) = listening.iter().position(|a| a == addr) else {
            return Err(TransportError::NotListening(sa.to_string()));
        };
        listening.remove(pos);
        listener::stop(self.id, Some(sa))
    }

    fn shutdown(&self, done: Box<dyn FnOnce() + Send>) {
        self.listening
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clear();
        if listener::stop(self.id, None).is_err() {
            done();
            return;
        }
        group::shutdown_all(self.id, done);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn options_are_checked() {
        let d = TransportOpts::rdma_defaults();
        let c = config_of(&d).unwrap();
        assert_eq!((c.icd, c.buf_chunk, c.srq_depth), (4096, 8192, 4096));
        let no_srq = TransportOpts {
            no_srq: true,
            ..d.clone()
        };
        assert_eq!(config_of(&no_srq).unwrap().srq_depth, 0);
        for bad in [
            TransportOpts {
                max_queue_depth: 1,
                ..d.clone()
            },
            TransportOpts {
                in_capsule_data_size: MAX_IN_CAPSULE_DATA_SIZE + 16,
                ..d.clone()
            },
            TransportOpts {
                max_io_size: 4 << 20,
                io_unit_size: 4096,
                ..d.clone()
            },
            TransportOpts {
                max_srq_depth: 1,
                ..d.clone()
            },
            TransportOpts {
                num_cqe: 8,
                ..d.clone()
            },
        ] {
            assert!(config_of(&bad).is_err(), "{bad:?}");
        }
    }
}
