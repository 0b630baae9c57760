//! The `bdev_*` JSON-RPC methods and the `bdev` config subsystem.

/// Register every bdev RPC method (generic ones here, each module's own) and the `bdev` config
/// subsystem. Called once by the binary at start-up.
pub fn register() {
    crate::modules::malloc::register_rpcs();
    crate::modules::null::register_rpcs();
    crate::modules::uring::register_rpcs();
    crate::modules::delay::register_rpcs();
    crate::modules::error::register_rpcs();
}
