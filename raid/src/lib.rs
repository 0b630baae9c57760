//! `keel-raid`: RAID bdevs (docs/ARCHITECTURE.md §5) — raid0, concat, raid1 and raid5 over any bdevs of one
//! block size, with a DMA-direct data path (host iovecs go to members as they are; only parity
//! is computed), degraded mode, background rebuild and a superblock on every member.
//!
//! Module map:
//! - `level`: the RAID levels, their names and rules.
//! - `caps`: unmap/write-zeroes support of an array from its members'.
//! - `xor`: SIMD XOR kernels for parity (hot path).
//! - `superblock`: the on-member superblock (encode, validated decode) and array assembly plans.
//! - `geometry`: strip/stripe math, parity rotation, iovec splitting without copies.
//! - `stripe_lock`: HOT PATH, lock-free per-stripe serialization (tokens + wake messages).
//! - `array`: an array's members, their states, degraded/offline.
//! - `channel`: HOT PATH, the per-core channel and the stripe-operation driver.
//! - `dispatch`: HOT PATH, routing host I/O by level and type.
//! - `raid0`, `raid1`, `raid5` (`write`, `read`): HOT PATH, the levels.
//! - `rebuild`: background rebuild with progress and a rate limit.
//! - `bdev`: create/delete, members joining and leaving, the bdev backend.
//! - `sb_io`: writing superblocks to members, the clean flag.
//! - `examine`: assembling arrays from their members' superblocks as members appear.
//! - `rpc`: the `bdev_raid_*` methods.

pub mod array;
pub mod bdev;
pub mod caps;
mod channel;
mod dispatch;
mod examine;
pub mod geometry;
pub mod level;
mod raid0;
mod raid1;
mod raid5;
pub mod rebuild;
pub mod rpc;
mod sb_io;
pub mod stripe_lock;
pub mod superblock;
pub mod xor;

pub use array::RaidArray;
pub use bdev::{add_base_bdev, create, delete, delete_opts, remove_base_bdev, CreateConfig};
pub use level::RaidLevel;

/// Register the `bdev_raid_*` RPC methods and the raid examiner (array assembly from member
/// superblocks). Called once by the binary at start-up; later calls do nothing.
pub fn register_rpcs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        rpc::register_rpcs();
        examine::register();
    });
}
