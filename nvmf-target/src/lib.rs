//! `keel-nvmf`: Keel's NVMe-over-Fabrics target (docs/ARCHITECTURE.md §6).
//!
//! The wire structures (SQE, CQE, status codes, Identify data, log pages, Fabrics commands,
//! NVMe/TCP PDUs) live in `keel-nvme`; the NVMe/TCP host in `keel-nvmf-host`.
//!
//! Layers, bottom up:
//! - [`request`]: one command in flight ([`request::NvmfRequest`]), the object a transport
//!   hands to the core and gets back completed. HOT PATH.
//! - [`reqcore`]: the request slot table, buffers and checked slot states both transports
//!   build on. HOT PATH.
//! - [`target`]: subsystems (NVM and discovery), namespaces, allowed hosts, listeners,
//!   controllers, queue pairs, admin/fabrics/I/O command execution, keep-alive, AERs, the
//!   `nvmf_*` RPCs.
//! - [`transport`]: the [`transport::Transport`] trait that TCP and RDMA implement, and the
//!   per-queue-pair [`transport::QpairTransport`] callbacks.
//! - [`tcp`]: the NVMe/TCP transport (PDUs, listener, per-core poll groups, connections).
//!
//! Threading: each queue pair lives on one reactor for its whole life; a controller's admin
//! queue and its I/O queues may live on different cores and talk by message. Nothing on the I/O
//! path locks or allocates.

pub mod iov;
pub mod reqcore;
pub mod request;
pub mod target;
pub mod tcp;
pub mod transport;

/// Register the `nvmf_*` JSON-RPC methods and the `nvmf` config subsystem.
pub use target::{register_rpcs, shutdown};
