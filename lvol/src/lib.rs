//! Thin-provisioned logical volumes (docs/ARCHITECTURE.md §4.3): lvstores on base bdevs, volumes with a
//! per-volume cluster map whose lookup is a lock-free read on the submitting core. The on-disk
//! format and the crash-consistency rules are in `FORMAT.md` beside this file.
//!
//! - `format`: encode/decode of the 4 KiB metadata pages (pure; fuzzed).
//! - `load`: assembling a store from its metadata region (pure).
//! - `alloc`: allocation bitmaps. `map`: the lock-free cluster map.
//! - `store`: the store and volume state every core shares; the list of stores.
//! - `md`: the metadata core: page writes, batched allocation, grace periods.
//! - `fill`: preparing clusters (zero-fill, copy on write, unmap of freed ones) in bounded
//!   chunks, so allocation never stalls the core's other I/O.
//! - `mdio`: awaiting base I/O on the metadata core.
//! - `volume`: volume bdevs and volume operations (create, delete, resize, snapshot, ...).
//! - `lifecycle`: create / load (examine) / rename / destroy / unload of stores.
//! - `io_path`: HOT PATH, a volume's per-core channel.
//! - `rpc`: the `bdev_lvol_*` methods.

mod alloc;
mod fill;
pub mod format;
mod io_path;
mod lifecycle;
pub mod load;
mod map;
mod md;
mod mdio;
mod rpc;
mod store;
mod volume;

pub use lifecycle::{
    create as create_lvstore, destroy as destroy_lvstore, load as load_lvstore,
    rename as rename_lvstore, unload as unload_lvstore, ClearMethod,
};
pub use store::all as lvstores;
pub use store::{find as find_lvstore, find_volume, StoreShared as Lvstore, Volume};
pub use volume::{
    clone as clone_volume, create as create_volume, delete as delete_volume, detach_parent,
    rename as rename_volume, resize as resize_volume, snapshot as snapshot_volume, PRODUCT_NAME,
};

/// Register the `bdev_lvol_*` RPC methods and the lvstore examiner.
pub fn register_rpcs() {
    rpc::register();
    keel_bdev::register_examiner(store::MODULE, lifecycle::examine);
}

/// Register only the examiner (for embedders and tests that do not serve RPCs).
pub fn register_examiner() {
    keel_bdev::register_examiner(store::MODULE, lifecycle::examine);
}
