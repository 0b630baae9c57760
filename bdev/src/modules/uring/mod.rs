//! The `uring` bdev module: a bdev on a file or block device, driven by one io_uring per core.
//! It also serves SPDK's `bdev_aio_*` methods (product "AIO disk"), so configs written for
//! SPDK's aio bdevs work unchanged.
//!
//! Aligned I/O goes through an `O_DIRECT` descriptor when the filesystem accepts direct I/O;
//! other I/O (e.g. from unaligned caller buffers) through a buffered one. write_zeroes and
//! unmap use fallocate (ZERO_RANGE / PUNCH_HOLE, `KEEP_SIZE`); flush is fsync.
//!
//! - `file`: opening, O_DIRECT probe, geometry (control path).
//! - `plan`: direct-I/O eligibility and short-transfer continuation (pure, hot path).
//! - `channel`: HOT PATH, the per-core ring.
//! - `rpc`: `bdev_uring_create/delete`, `bdev_aio_create/delete`.

mod channel;
mod file;
mod plan;
mod rpc;

pub use self::rpc::register_rpcs;

use self::file::{BackingFile, FileKind};
use crate::modules::stack::ModuleTable;
use crate::{BackendChannel, Bdev, BdevBackend, BdevError, BdevInfo, ConfigCall, IoType, Uuid};
use serde_json::json;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Product name of bdevs created by `bdev_uring_create`.
pub const URING_PRODUCT_NAME: &str = "URING bdev";
/// Product name of bdevs created by `bdev_aio_create`.
pub const AIO_PRODUCT_NAME: &str = "AIO disk";

/// Which RPC family created the bdev (they differ in options and in how they are reported).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Flavor {
    /// `bdev_uring_create`.
    Uring,
    /// `bdev_aio_create`: optionally read-only; write_zeroes/unmap only with `fallocate`.
    Aio {
        /// Open the file read-only (writes unsupported).
        readonly: bool,
        /// Serve write_zeroes and unmap with fallocate.
        fallocate: bool,
    },
}

/// Everything needed to create a uring/aio bdev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UringConfig {
    /// Path of the file or block device.
    pub filename: String,
    /// Bdev name.
    pub name: String,
    /// Block size; `None` = the device's logical block size, or 512 for regular files.
    pub block_size: Option<u32>,
    /// UUID (random when `None`).
    pub uuid: Option<Uuid>,
    /// uring or aio.
    pub flavor: Flavor,
}

/// Channel activity of one uring bdev, summed over its channels (for tests and diagnostics).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct UringStats {
    /// `io_uring_enter` calls made to submit.
    pub enters: u64,
    /// Submission-queue entries those calls submitted.
    pub sqes: u64,
    /// Reads/writes that used the `O_DIRECT` descriptor.
    pub direct_ios: u64,
    /// Reads/writes that used the buffered descriptor.
    pub buffered_ios: u64,
    /// Extra SQEs for short transfers and fallbacks.
    pub resubmits: u64,
}

/// Shared counters behind [`UringStats`] (each channel adds to them once per poll).
#[derive(Debug, Default)]
pub(crate) struct UringCounters {
    enters: AtomicU64,
    sqes: AtomicU64,
    direct_ios: AtomicU64,
    buffered_ios: AtomicU64,
    resubmits: AtomicU64,
}

/// One uring/aio bdev.
struct UringDisk {
    name: String,
    flavor: Flavor,
    file: Arc<BackingFile>,
    counters: Arc<UringCounters>,
}

static URING_BDEVS: ModuleTable<UringDisk> = ModuleTable::new();

impl BdevBackend for UringDisk {
    fn product_name(&self) -> &'static str {
        match self.flavor {
            Flavor::Uring => URING_PRODUCT_NAME,
            Flavor::Aio { .. } => AIO_PRODUCT_NAME,
        }
    }

    fn io_type_supported(&self, io_type: IoType) -> bool {
        let writable = !self.file.readonly;
        let fallocate = match self.flavor {
            Flavor::Uring => true,
            Flavor::Aio { fallocate, .. } => fallocate,
        };
        match io_type {
            IoType::Read | IoType::Flush | IoType::Reset => true,
            IoType::Write => writable,
            IoType::WriteZeroes | IoType::Unmap => {
                writable
                    && fallocate
                    && (self.file.kind == FileKind::BlockDevice || self.file.punch_hole)
            }
        }
    }

    fn unmap_reads_zeroes(&self) -> bool {
        // Unmap always punches a hole, and WriteZeroes zeroes a range or punches one: on a
        // regular file where hole punching was seen to work both read back as zeroes. On a
        // block device the kernel may refuse (EOPNOTSUPP, which Unmap reports as success
        // without deallocating), so no promise there.
        self.file.kind == FileKind::Regular
            && self.file.punch_hole
            && self.io_type_supported(IoType::Unmap)
    }

    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        let ch = channel::UringChannel::new(Arc::clone(&self.file), Arc::clone(&self.counters))?;
        Ok(Box::new(ch))
    }

    fn driver_specific(&self) -> serde_json::Value {
        let f = &self.file;
        match self.flavor {
            Flavor::Uring => json!({
                "uring": { "filename": f.path, "o_direct": f.direct.is_some() }
            }),
            Flavor::Aio {
                readonly,
                fallocate,
            } => json!({
                "aio": {
                    "filename": f.path,
                    "block_size_override": f.block_size_given,
                    "readonly": readonly,
                    "fallocate": fallocate,
                    "o_direct": f.direct.is_some(),
                }
            }),
        }
    }

    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall> {
        let f = &self.file;
        Some(match self.flavor {
            Flavor::Uring => ConfigCall {
                method: "bdev_uring_create".into(),
                params: json!({
                    "name": info.name,
                    "filename": f.path,
                    "block_size": info.block_size,
                    "uuid": info.uuid.to_string(),
                }),
            },
            Flavor::Aio {
                readonly,
                fallocate,
            } => ConfigCall {
                method: "bdev_aio_create".into(),
                params: json!({
                    "name": info.name,
                    "filename": f.path,
                    "block_size": info.block_size,
                    "readonly": readonly,
                    "fallocate": fallocate,
                    "uuid": info.uuid.to_string(),
                }),
            },
        })
    }

    fn destruct(&self) {
        URING_BDEVS.remove_if_same(&self.name, self);
        // The descriptors close when the last `Arc<BackingFile>` (channels hold clones) goes.
        log::info!(
            "{} bdev {} on {} destroyed",
            self.product_name(),
            self.name,
            self.file.path
        );
    }
}

/// Create a uring (or aio) bdev on `cfg.filename`.
pub fn create(cfg: &UringConfig) -> Result<Bdev, BdevError> {
    if cfg.name.is_empty() {
        return Err(BdevError::Invalid("bdev name must not be empty".into()));
    }
    if crate::get_bdev(&cfg.name).is_some() {
        return Err(BdevError::Exists(cfg.name.clone()));
    }
    let readonly = matches!(cfg.flavor, Flavor::Aio { readonly: true, .. });
    let file = Arc::new(file::open(&cfg.filename, cfg.block_size, readonly)?);
    let info = BdevInfo {
        name: cfg.name.clone(),
        aliases: Vec::new(),
        uuid: cfg.uuid.unwrap_or_else(Uuid::new_random),
        block_size: file.block_size,
        num_blocks: file.num_blocks,
    };
    let disk = Arc::new(UringDisk {
        name: cfg.name.clone(),
        flavor: cfg.flavor,
        file: Arc::clone(&file),
        counters: Arc::default(),
    });
    let bdev = crate::register(info, Arc::clone(&disk) as Arc<dyn BdevBackend>)?;
    URING_BDEVS.insert(&cfg.name, disk);
    log::info!(
        "{} {} created on {} ({} blocks of {} bytes{})",
        bdev.backend().product_name(),
        cfg.name,
        cfg.filename,
        file.num_blocks,
        file.block_size,
        if file.readonly { ", read-only" } else { "" }
    );
    Ok(bdev)
}

/// Delete the uring bdev `name` (`aio` selects bdevs made by `bdev_aio_create` instead);
/// a bdev of another kind reads as not found, as in SPDK.
pub async fn delete(name: &str, aio: bool) -> Result<(), BdevError> {
    let disk = URING_BDEVS
        .get(name)
        .filter(|d| matches!(d.flavor, Flavor::Aio { .. }) == aio)
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    crate::unregister(&disk.name).await
}

/// Channel activity of the uring/aio bdev `name`, summed over its channels.
pub fn uring_stats(name: &str) -> Option<UringStats> {
    URING_BDEVS.get(name).map(|d| {
        let c = &d.counters;
        UringStats {
            enters: c.enters.load(Ordering::Relaxed),
            sqes: c.sqes.load(Ordering::Relaxed),
            direct_ios: c.direct_ios.load(Ordering::Relaxed),
            buffered_ios: c.buffered_ios.load(Ordering::Relaxed),
            resubmits: c.resubmits.load(Ordering::Relaxed),
        }
    })
}

/// Whether the uring/aio bdev `name` uses `O_DIRECT` for aligned I/O.
pub fn uses_o_direct(name: &str) -> Option<bool> {
    URING_BDEVS.get(name).map(|d| d.file.direct.is_some())
}
