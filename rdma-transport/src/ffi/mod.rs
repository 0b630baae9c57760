//! Raw FFI to rdma-core: hand-written declarations for libibverbs ([`verbs`]) and librdmacm
//! ([`cm`]), loaded at run time ([`rdma_core`]: nothing links against rdma-core), and the
//! header's `static inline` per-I/O verbs written in Rust over `ibv_context->ops`. Names
//! follow C; use the safe layer in [`crate::verbs`].
#![allow(non_camel_case_types)]

pub mod cm;
pub mod rdma_core;
pub mod verbs;

#[cfg(test)]
mod layout_tests;
