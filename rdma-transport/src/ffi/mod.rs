//! Raw FFI to Debian's rdma-core: hand-written `extern "C"` declarations for libibverbs
//! ([`verbs`]) and librdmacm ([`cm`]), and the C shim ([`shim`]) for the verbs that are
//! `static inline` in the headers. Names follow C; use the safe layer in [`crate::verbs`].
#![allow(non_camel_case_types)]

pub mod cm;
pub mod shim;
pub mod verbs;

#[cfg(test)]
mod layout_tests;
