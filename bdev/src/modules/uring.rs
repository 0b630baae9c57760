//! The `uring` bdev module.

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {}
