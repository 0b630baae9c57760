//! The `delay` bdev module.

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {}
