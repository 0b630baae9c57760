//! `keel-rdma`: the NVMe-oF RDMA transport (DESIGN.md §6, §9): hand-written bindings to
//! Debian's rdma-core (libibverbs + librdmacm) with a small C shim for the inline verbs, a safe
//! layer that owns every verbs object, and (later) the transport itself.
