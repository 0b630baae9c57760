//! `keel-rdma`: the NVMe-oF RDMA transport (docs/ARCHITECTURE.md §6.3, §9): hand-written bindings to
//! rdma-core (libibverbs + librdmacm), loaded at run time on first use, with the header's
//! inline per-I/O verbs in Rust ([`ffi`]), a safe layer that owns every verbs object ([`verbs`]), the NVMe-oF RDMA CM
//! private data formats ([`nvmf_cm`]), and the transport itself ([`transport`]).

pub mod ffi;
pub mod nvmf_cm;
pub mod transport;
pub mod verbs;
