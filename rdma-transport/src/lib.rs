//! `keel-rdma`: the NVMe-oF RDMA transport (docs/ARCHITECTURE.md §6.3, §9): hand-written bindings to
//! Debian's rdma-core (libibverbs + librdmacm) with a small C shim for the inline verbs
//! ([`ffi`]), a safe layer that owns every verbs object ([`verbs`]), the NVMe-oF RDMA CM
//! private data formats ([`nvmf_cm`]), and the transport itself ([`transport`]).

pub mod ffi;
pub mod nvmf_cm;
pub mod transport;
pub mod verbs;
