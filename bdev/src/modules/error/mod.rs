//! The `error` bdev module: `EE_<base>`, a bdev stacked on a base bdev that fails, hangs or
//! corrupts chosen I/Os on demand (SPDK's vbdev_error). RAID and lvol tests use it to fail
//! members.
//!
//! Implemented error types: `failure`, `pending` (released to the base by `clear`, aborted by
//! a reset) and `corrupt_data` (reads and writes). SPDK's `nomem` and `queue_depth` are refused
//! with a clear message: Keel has no NOMEM status, and the trigger depth is not implemented.
//!
//! - `inject`: the lock-free injection state (pure logic).
//! - `channel`: HOT PATH, the per-core channel.
//! - `rpc`: `bdev_error_create`, `bdev_error_delete`, `bdev_error_inject_error`.

mod channel;
mod inject;
mod rpc;

pub use self::inject::{ErrorKind, InjectTarget, NVME_STATUSES};
pub use self::rpc::register_rpcs;

use self::inject::{Injections, INJECT_TYPES};
use crate::modules::stack::{base_channel, open_base, wake_all_cores, ModuleTable};
use crate::{BackendChannel, Bdev, BdevBackend, BdevDesc, BdevError, BdevInfo, ConfigCall};
use crate::{IoType, Uuid};
use serde_json::json;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

/// Product name reported by `bdev_get_bdevs`.
pub const PRODUCT_NAME: &str = "Error disk";
/// Name under which the module claims its base bdevs.
const MODULE: &str = "error";
/// Prefix of error bdev names.
const NAME_PREFIX: &str = "EE_";

/// One error bdev (the backend registered with the bdev layer).
struct ErrorBdev {
    name: String,
    base_name: String,
    base_bdev: Bdev,
    /// The open, claimed base; taken (closed) by `destruct`.
    base: Mutex<Option<BdevDesc>>,
    injections: Arc<Injections>,
    base_supports_reset: bool,
    /// Whether a base hot-remove should unregister this bdev (false after `destruct`).
    live: Arc<AtomicBool>,
}

static ERROR_BDEVS: ModuleTable<ErrorBdev> = ModuleTable::new();

impl BdevBackend for ErrorBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn io_type_supported(&self, io_type: IoType) -> bool {
        // A reset is always served (it aborts pending I/Os), passed on only if the base takes it.
        io_type == IoType::Reset || self.base_bdev.backend().io_type_supported(io_type)
    }

    fn unmap_reads_zeroes(&self) -> bool {
        self.base_bdev.unmap_reads_zeroes()
    }

    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(channel::ErrorChannel::new(
            base_channel(&self.base, &self.base_name)?,
            Arc::clone(&self.injections),
            self.base_supports_reset,
        )))
    }

    fn driver_specific(&self) -> serde_json::Value {
        let mut armed = serde_json::Map::new();
        for t in INJECT_TYPES {
            if let (Some(kind), n @ 1..) = self.injections.remaining(t) {
                armed.insert(
                    t.name().into(),
                    json!({ "error_type": kind.name(), "num": n }),
                );
            }
        }
        json!({ "error_disk": { "base_bdev": self.base_name, "injections": armed } })
    }

    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_error_create".into(),
            params: json!({ "base_name": self.base_name, "uuid": info.uuid.to_string() }),
        })
    }

    fn destruct(&self) {
        self.live.store(false, Ordering::Release);
        ERROR_BDEVS.remove_if_same(&self.name, self);
        // Nothing may stay parked forever once the bdev is gone.
        self.injections.clear();
        drop(self.base.lock().unwrap_or_else(|p| p.into_inner()).take());
        log::info!(
            "error bdev {} destroyed, base {} released",
            self.name,
            self.base_name
        );
    }
}

/// Create `EE_<base_name>` on top of `base_name` (which it opens and claims). Call on a
/// reactor: base hot-remove events are delivered to the calling core.
pub fn create(base_name: &str, uuid: Option<Uuid>) -> Result<Bdev, BdevError> {
    let name = format!("{NAME_PREFIX}{base_name}");
    if crate::get_bdev(&name).is_some() {
        return Err(BdevError::Exists(name));
    }
    let live = Arc::new(AtomicBool::new(false));
    let desc = open_base(base_name, MODULE, &name, Arc::clone(&live))?;
    let base_bdev = desc.bdev().clone();
    let base_info = base_bdev.info().clone();
    let disk = Arc::new(ErrorBdev {
        name: name.clone(),
        base_name: base_info.name.clone(),
        base_supports_reset: base_bdev.backend().io_type_supported(IoType::Reset),
        base_bdev,
        base: Mutex::new(Some(desc)),
        injections: Arc::new(Injections::default()),
        live: Arc::clone(&live),
    });
    let info = BdevInfo {
        name: name.clone(),
        aliases: Vec::new(),
        uuid: uuid.unwrap_or_else(Uuid::new_random),
        block_size: base_info.block_size,
        num_blocks: base_info.num_blocks,
    };
    match crate::register(info, Arc::clone(&disk) as Arc<dyn BdevBackend>) {
        Ok(bdev) => {
            ERROR_BDEVS.insert(&name, disk);
            live.store(true, Ordering::Release);
            log::info!("error bdev {name} created on {}", base_info.name);
            Ok(bdev)
        }
        Err(e) => {
            drop(disk.base.lock().unwrap_or_else(|p| p.into_inner()).take());
            Err(e)
        }
    }
}

/// Delete the error bdev `name`; resolves once it is gone and its base released.
pub async fn delete(name: &str) -> Result<(), BdevError> {
    let disk = ERROR_BDEVS
        .get(name)
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    crate::unregister(&disk.name).await
}

/// Arm an error on the error bdev `name`: the next `num` I/Os of `target` get `kind`
/// (`corrupt_value`, non-zero, is XORed into byte `corrupt_offset` for `CorruptData`).
/// `InjectTarget::Clear` removes every injection and releases pending I/Os.
pub fn inject_error(
    name: &str,
    target: InjectTarget,
    kind: ErrorKind,
    num: u32,
    corrupt_offset: u64,
    corrupt_value: u8,
) -> Result<(), BdevError> {
    if kind == ErrorKind::CorruptData && corrupt_value == 0 && target != InjectTarget::Clear {
        return Err(BdevError::Invalid(
            "corrupt_value must be non-zero (XOR with 0 corrupts nothing)".into(),
        ));
    }
    if kind == ErrorKind::Complete(crate::IoStatus::Success) {
        return Err(BdevError::Invalid(
            "an injected completion must be a failure, not success".into(),
        ));
    }
    let disk = ERROR_BDEVS
        .get(name)
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    disk.injections
        .inject(target, kind, num, corrupt_offset, corrupt_value);
    match target {
        InjectTarget::Clear => {
            // Channels release their pending I/Os when they next poll.
            wake_all_cores();
            log::info!("error bdev {}: injections cleared", disk.name)
        }
        _ => log::info!(
            "error bdev {}: {} x{num} armed for {target:?}",
            disk.name,
            kind.name()
        ),
    }
    Ok(())
}

/// How many more I/Os of `io_type` the error armed on `name` will hit (0 when none), or
/// `None` when `name` is not an error bdev.
pub fn remaining(name: &str, io_type: IoType) -> Option<u32> {
    ERROR_BDEVS
        .get(name)
        .map(|d| d.injections.remaining(io_type).1)
}
