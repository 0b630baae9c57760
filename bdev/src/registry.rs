//! Control path: the set of bdevs, open descriptors, claims, hot-remove and unregistration.

use crate::{BdevBackend, BdevError, IoChannel, Uuid};
use std::sync::Arc;

/// The static description of a bdev, as given to [`register`].
#[derive(Debug, Clone)]
pub struct BdevInfo {
    /// Unique name.
    pub name: String,
    /// Other unique names it answers to.
    pub aliases: Vec<String>,
    /// Its UUID (random when the creator gave none).
    pub uuid: Uuid,
    /// Logical block size, bytes (512, 4096, ...).
    pub block_size: u32,
    /// Number of blocks.
    pub num_blocks: u64,
}

/// A registered bdev (cheap to clone, `Send + Sync`).
#[derive(Clone)]
pub struct Bdev {
    _p: Arc<()>,
}

impl Bdev {
    /// Its description.
    pub fn info(&self) -> &BdevInfo {
        todo!()
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.info().name
    }
    /// The module implementation.
    pub fn backend(&self) -> &Arc<dyn BdevBackend> {
        todo!()
    }
    /// The module holding an exclusive claim, if any.
    pub fn claimed_by(&self) -> Option<String> {
        todo!()
    }
}

/// Events delivered to an open descriptor (on the core that opened it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev is going away: stop submitting, drop channels, close the descriptor.
    Remove,
}

/// An open handle on a bdev: required for channels and claims. `Send + Sync`.
/// Dropping it closes it (and releases its claim).
pub struct BdevDesc {
    _p: (),
}

impl BdevDesc {
    /// The bdev.
    pub fn bdev(&self) -> &Bdev {
        todo!()
    }
    /// Take the exclusive claim for `module` (e.g. "raid", "lvol"); fails if another holds it.
    pub fn claim(&self, _module: &str) -> Result<(), BdevError> {
        todo!()
    }
    /// A channel for submitting I/O on the calling core (a reactor).
    pub fn get_io_channel(&self) -> Result<IoChannel, BdevError> {
        todo!()
    }
}

/// Add a bdev. Fails if the name or an alias is taken or the geometry is invalid.
pub fn register(_info: BdevInfo, _backend: Arc<dyn BdevBackend>) -> Result<Bdev, BdevError> {
    todo!()
}

/// Remove a bdev: new opens fail at once, open descriptors get [`BdevEvent::Remove`], and the
/// future resolves once every descriptor is closed and the backend destructed.
pub async fn unregister(_name: &str) -> Result<(), BdevError> {
    todo!()
}

/// Find a bdev by name or alias.
pub fn get_bdev(_name: &str) -> Option<Bdev> {
    todo!()
}

/// Names of all bdevs in registration order (what `bdev_get_bdevs` and `save_config` list).
pub fn bdev_names() -> Vec<String> {
    todo!()
}

/// Open a bdev by name or alias. `on_event` runs on the calling core.
pub fn open(
    _name: &str,
    _write: bool,
    _on_event: impl Fn(BdevEvent) + Send + Sync + 'static,
) -> Result<BdevDesc, BdevError> {
    todo!()
}
