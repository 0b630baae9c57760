//! `keel-bdev`: Keel's block-device layer (docs/ARCHITECTURE.md §4).
//!
//! Consumers (the NVMe-oF target, keel-perf, lvol, raid) [`open`] a bdev by name, get a
//! [`BdevDesc`] (which receives hot-remove events and can claim the bdev), then take an
//! [`IoChannel`] on each core they submit from. I/O completes on the submitting core through a
//! plain function-pointer callback with an opaque context, so nothing is allocated per I/O: the
//! descriptor comes from the channel's pre-allocated pool.
//!
//! Module writers implement [`BdevBackend`] + [`BackendChannel`] and call [`register`].
//!
//! Module map:
//! - `types`: I/O types, statuses, iovecs, errors.
//! - `backend`: the traits a bdev module implements.
//! - `registry`: names/aliases → bdevs, open descriptors, claims, hot-remove, unregister.
//! - `examine`: modules that look at every new bdev (lvol, raid) and waiting for them.
//! - `io_path`: HOT PATH — channels, descriptor pools, submission, deferred completion, typed
//!   per-I/O module contexts.
//! - `io_wait`: caller-owned entries waiting for a free descriptor (no allocation).
//! - `iov`: [`IovCursor`], the one way to walk an iovec list by bytes.
//! - `stats`: per-core I/O counters and their aggregation.
//! - `histogram`: latency histograms in SPDK's layout (`bdev_enable_histogram`).
//! - `percore`: each core's per-bdev state (its channel, its counters).
//! - `qos`: per-core rate limits (`bdev_set_qos_limit`).
//! - `modules/`: `malloc`, `null`, `uring`, `delay`, `error`, and `stack`, the helpers every
//!   module that stacks on other bdevs uses (also the `keel-raid` crate).
//! - `lvol/`: thin-provisioned logical volumes (lvstores, volumes, snapshots, clones).
//! - `rpc`: the `bdev_*` JSON-RPC methods and the `bdev` config subsystem.

mod backend;
mod examine;
pub mod histogram;
mod io_path;
mod io_wait;
pub mod iov;
pub mod lvol;
pub mod modules;
mod percore;
mod qos;
mod registry;
pub mod rpc;
mod stats;
#[cfg(test)]
mod testutil;
mod types;

pub use backend::{BackendChannel, BdevBackend, ConfigCall};
pub use examine::{
    auto_examine, examine_allowlist, examine_bdev, examine_begin, examine_pending,
    register_examiner, set_auto_examine, wait_for_examine, ExamineGuard, ExamineRefusal, Examiner,
};
pub use io_path::{IoCallback, IoChannel, IoCtx, IoRef, IO_CTX_ALIGN, IO_CTX_BYTES};
pub use io_wait::{IoWaitCallback, IoWaitEntry};
pub use iov::IovCursor;
pub use registry::{
    any_bdev_registered_yet, bdev_names, get_bdev, open, register, unregister, Bdev, BdevDesc,
    BdevEvent, BdevInfo,
};
pub use stats::IoStats;
pub use types::{BdevError, IoStatus, IoType, IoVec, SubmitError, Uuid, MAX_IOVS};
