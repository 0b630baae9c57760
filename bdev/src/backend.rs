//! What a bdev module implements.

use crate::io_path::IoRef;
use crate::{BdevError, BdevInfo, IoType};
use keel_reactor::PollStatus;

/// A `save_config` entry: the RPC call that recreates a bdev.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfigCall {
    /// JSON-RPC method name, e.g. `bdev_malloc_create`.
    pub method: String,
    /// Its params object.
    pub params: serde_json::Value,
}

/// A block device implementation (one per bdev). Shared by all cores.
pub trait BdevBackend: Send + Sync + 'static {
    /// SPDK-style product name, e.g. "Malloc disk", "Null disk", "URING bdev".
    fn product_name(&self) -> &'static str;
    /// Whether the bdev accepts this I/O type (the layer refuses the others before `submit`).
    fn io_type_supported(&self, io_type: IoType) -> bool;
    /// Create this core's channel; called on the core that will use it.
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError>;
    /// Whether blocks read back as zeroes after a successful Unmap and after a successful
    /// WriteZeroes (the NVMe DLFEAT "deallocated blocks read as 0s" promise). Say `true` only
    /// when it always holds; the default `false` makes no promise.
    fn unmap_reads_zeroes(&self) -> bool {
        false
    }
    /// `driver_specific` object for `bdev_get_bdevs` (null when nothing to say).
    fn driver_specific(&self) -> serde_json::Value {
        serde_json::Value::Null
    }
    /// The call that recreates this bdev for `save_config`, or `None` for bdevs created by other
    /// modules (e.g. an lvol, recreated by its store).
    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall>;
    /// Called once after the bdev is unregistered and its last descriptor closed: release
    /// resources (close files, release claims on base bdevs).
    fn destruct(&self) {}
    /// Work `destruct` started that must finish before [`crate::unregister`] resolves (raid
    /// writes its members' superblocks clean before releasing them, so a shutdown that then
    /// unregisters the members does not race those writes). Called once, right after
    /// `destruct`, on the unregistering core; `None` when there is nothing to wait for.
    fn destruct_done(&self) -> Option<std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>> {
        None
    }
}

/// One core's channel into a bdev. Lives on that core only.
pub trait BackendChannel {
    /// Start the I/O; complete it later (or right away) with [`IoRef::complete`] on this core.
    /// The layer has already checked range, type and iovecs.
    fn submit(&mut self, io: IoRef);
    /// Reap completions / move queued work. The layer calls it from the channel's poller every
    /// reactor iteration while the channel has I/O in flight and
    /// [`BackendChannel::needs_poll`] is true.
    fn poll(&mut self) -> PollStatus {
        PollStatus::Idle
    }
    /// Whether `poll` must be called (uring, delay: yes; malloc, null: no).
    fn needs_poll(&self) -> bool {
        false
    }
}
