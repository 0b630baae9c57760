//! Thin-provisioned logical volumes (DESIGN.md §4): lvstores on base bdevs, volumes with a
//! per-volume cluster map whose lookup is a lock-free read on the submitting core.

/// Register the `bdev_lvol_*` RPC methods and the lvstore examiner.
pub fn register_rpcs() {}
