//! Shared by the `keel-tgt` and `keel-rpc` binaries: the list of crates whose RPC methods and
//! config subsystems the target serves.

/// Register every crate's RPC methods and config subsystems, in config replay order
/// (subsystems a later one depends on come first).
pub fn register_rpcs() {
    keel_rpc::register_builtin_methods();
    keel_bdev::rpc::register();
}
