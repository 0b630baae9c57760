//! Lvstore state shared by every core ([`StoreShared`], [`Volume`]) and the process-wide list
//! of loaded stores (control path).

use super::map::VolView;
use keel_bdev::{Bdev, BdevDesc, BdevError, Uuid};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Name under which lvstores claim their base bdevs.
pub const MODULE: &str = "lvol";

pub(super) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// One core's in-flight I/O counters (two epochs), written only by that core.
#[repr(align(64))]
#[derive(Default)]
pub struct CoreCount {
    /// I/Os started in an even / odd epoch and not finished.
    pub inflight: [AtomicU64; 2],
}

/// An lvstore as every core sees it.
pub struct StoreShared {
    /// Process-unique id (key of the metadata core's state).
    pub id: u64,
    /// The store's UUID.
    pub uuid: Uuid,
    /// Its name (changed by rename).
    pub name: Mutex<String>,
    /// The base bdev.
    pub base_bdev: Bdev,
    /// The open, claimed base (taken on destroy / unload).
    pub base: Mutex<Option<BdevDesc>>,
    /// The core that owns the metadata and serializes allocation.
    pub md_core: u32,
    /// Cluster size, bytes.
    pub cluster_size: u64,
    /// Base (and volume) block size, bytes.
    pub block_size: u32,
    /// Blocks per cluster.
    pub blocks_per_cluster: u64,
    /// First block of data cluster 0 on the base.
    pub data_start_blocks: u64,
    /// Number of data clusters.
    pub total_clusters: u64,
    /// Free clusters (kept by the metadata core, for reporting).
    pub free_clusters: AtomicU64,
    /// Whether the base takes Flush / WriteZeroes.
    pub base_flush: bool,
    /// See `base_flush`.
    pub base_write_zeroes: bool,
    /// Whether the base takes Unmap (freed clusters are unmapped).
    pub base_unmap: bool,
    /// Whether the base's unmapped (and write-zeroed) blocks read zeroes, so an unmapped free
    /// cluster needs no zero-fill.
    pub base_unmap_zeroes: bool,
    /// I/O epoch (its low bit picks the counter an I/O is counted in).
    pub epoch: AtomicU64,
    /// Per-core in-flight counters, indexed by the core's position in the core list.
    pub counts: Box<[CoreCount]>,
    /// Writes failed for lack of space, all volumes.
    pub nospace_errors: AtomicU64,
    /// Volumes, in creation order.
    pub volumes: Mutex<Vec<Arc<Volume>>>,
    /// Set once the store is being destroyed or unloaded.
    pub closing: AtomicBool,
}

impl StoreShared {
    /// The store's current name.
    pub fn name(&self) -> String {
        lock(&self.name).clone()
    }
    /// Index of the calling core in [`StoreShared::counts`].
    pub fn core_slot(&self) -> usize {
        let cores = keel_reactor::cores();
        keel_reactor::current_core()
            .and_then(|c| cores.iter().position(|&x| x == c))
            .unwrap_or(0)
            .min(self.counts.len() - 1)
    }
    /// Sum of the in-flight counters of epoch parity `bucket` over every core.
    pub fn inflight_in(&self, bucket: usize) -> u64 {
        self.counts
            .iter()
            .map(|c| c.inflight[bucket].load(Ordering::Acquire))
            .sum()
    }
}

/// Reporting state of a volume (control path).
#[derive(Debug, Clone)]
pub struct VolInfo {
    /// Name within the store.
    pub name: String,
    /// Thin provisioned.
    pub thin: bool,
    /// Read-only snapshot.
    pub snapshot: bool,
    /// Parent snapshot.
    pub parent: Option<Uuid>,
    /// Size in clusters.
    pub num_clusters: u64,
    /// Clusters this volume owns.
    pub allocated: u64,
}

/// A volume as every core sees it.
pub struct Volume {
    /// Its UUID (also its bdev name).
    pub uuid: Uuid,
    /// The store.
    pub store: Arc<StoreShared>,
    /// The hot-path view (cluster map).
    pub view: Arc<VolView>,
    /// Reporting state.
    pub info: Mutex<VolInfo>,
    /// Writes refused for lack of space.
    pub nospace_errors: AtomicU64,
    /// Whether the current out-of-space episode was logged.
    pub nospace_logged: AtomicBool,
}

impl Volume {
    /// A copy of its reporting state.
    pub fn info(&self) -> VolInfo {
        lock(&self.info).clone()
    }
    /// `lvs_name/lvol_name`.
    pub fn alias(&self) -> String {
        format!("{}/{}", self.store.name(), self.info().name)
    }
    /// Count (and log once per episode) a write refused for lack of space.
    pub fn note_nospace(&self) {
        self.nospace_errors.fetch_add(1, Ordering::Relaxed);
        self.store.nospace_errors.fetch_add(1, Ordering::Relaxed);
        if !self.nospace_logged.swap(true, Ordering::Relaxed) {
            log::error!(
                "lvol {} ({}): lvstore {} is out of space; writes needing a new cluster fail \
                 with capacity exceeded until space is freed",
                self.alias(),
                self.uuid,
                self.store.name()
            );
        }
    }
}

static STORES: Mutex<Vec<Arc<StoreShared>>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A fresh process-unique store id.
pub fn next_id() -> u64 {
    NEXT_ID.fetch_add(1, Ordering::Relaxed)
}

/// Add a loaded/created store to the list.
pub fn add(s: Arc<StoreShared>) {
    lock(&STORES).push(s);
}

/// Remove a store from the list.
pub fn remove(s: &StoreShared) {
    lock(&STORES).retain(|x| x.id != s.id);
}

/// Every store.
pub fn all() -> Vec<Arc<StoreShared>> {
    lock(&STORES).clone()
}

/// The store with this UUID or name (both given: both must match).
pub fn find(uuid: Option<&str>, name: Option<&str>) -> Result<Arc<StoreShared>, BdevError> {
    if uuid.is_none() && name.is_none() {
        return Err(BdevError::Invalid("give uuid or lvs_name".into()));
    }
    all()
        .into_iter()
        .find(|s| {
            uuid.is_none_or(|u| Uuid::parse(u) == Some(s.uuid))
                && name.is_none_or(|n| s.name() == n)
        })
        .ok_or_else(|| {
            BdevError::NotFound(format!("lvstore {}", name.or(uuid).unwrap_or_default()))
        })
}

/// The volume called `name`: its UUID (bdev name), alias `lvs/lvol`, or bdev alias.
pub fn find_volume(name: &str) -> Result<Arc<Volume>, BdevError> {
    let canonical = keel_bdev::get_bdev(name).map(|b| b.name().to_string());
    for s in all() {
        for v in lock(&s.volumes).iter() {
            let u = v.uuid.to_string();
            if u == name || canonical.as_deref() == Some(u.as_str()) || v.alias() == name {
                return Ok(Arc::clone(v));
            }
        }
    }
    Err(BdevError::NotFound(format!("lvol {name}")))
}

impl std::fmt::Debug for StoreShared {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Lvstore")
            .field("name", &self.name())
            .field("uuid", &self.uuid)
            .field("base", &self.base_bdev.name())
            .finish()
    }
}

impl std::fmt::Debug for Volume {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Volume")
            .field("uuid", &self.uuid)
            .field("info", &self.info())
            .finish()
    }
}
