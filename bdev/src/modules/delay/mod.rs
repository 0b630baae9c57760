//! The `delay` bdev module: a bdev stacked on a base bdev that adds a configured latency to
//! each read and write (SPDK's vbdev_delay), for testing how the stack above copes with slow
//! devices and timeouts.
//!
//! - `latency`: latency classes, values and the p99 draw (pure logic).
//! - `channel`: HOT PATH, the per-core channel holding completed I/Os until their deadline.
//! - `rpc`: `bdev_delay_create`, `bdev_delay_delete`, `bdev_delay_update_latency`.
//! - `stack`: helpers shared with the `error` and `uring` modules.

mod channel;
mod latency;
mod rpc;

use self::latency::{Latencies, LatencyClass};
use crate::modules::stack::{base_channel, open_base, ModuleTable};
use crate::BackendChannel;
use crate::{Bdev, BdevBackend, BdevDesc, BdevError, BdevInfo, ConfigCall, IoType, Uuid};
use serde_json::json;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

pub use self::rpc::register_rpcs;

/// Product name reported by `bdev_get_bdevs`.
pub const PRODUCT_NAME: &str = "delay";
/// Name under which the module claims its base bdevs.
const MODULE: &str = "delay";

/// Everything needed to create a delay bdev (the `bdev_delay_create` params).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DelayConfig {
    /// The bdev to stack on.
    pub base_bdev_name: String,
    /// Name of the new delay bdev.
    pub name: String,
    /// Latency of a typical read, µs.
    pub avg_read_latency: u64,
    /// Latency of one read in a hundred, µs (≥ `avg_read_latency`).
    pub p99_read_latency: u64,
    /// Latency of a typical write, µs.
    pub avg_write_latency: u64,
    /// Latency of one write in a hundred, µs (≥ `avg_write_latency`).
    pub p99_write_latency: u64,
    /// UUID of the new bdev (random when `None`).
    pub uuid: Option<Uuid>,
}

impl DelayConfig {
    fn latencies_us(&self) -> [u64; 4] {
        [
            self.avg_read_latency,
            self.p99_read_latency,
            self.avg_write_latency,
            self.p99_write_latency,
        ]
    }
}

/// State shared by a delay bdev and all its channels.
pub(crate) struct DelayShared {
    latencies: Latencies,
    /// Bumped by each reset; channels abort the I/Os they hold from before it.
    reset_gen: AtomicU64,
    base_supports_reset: bool,
}

/// One delay bdev (the backend registered with the bdev layer).
struct DelayBdev {
    name: String,
    base_name: String,
    base_bdev: Bdev,
    /// The open, claimed base; taken (closed) by `destruct`.
    base: Mutex<Option<BdevDesc>>,
    shared: Arc<DelayShared>,
    /// Whether a base hot-remove should unregister this bdev (false after `destruct`).
    live: Arc<AtomicBool>,
}

static DELAY_BDEVS: ModuleTable<DelayBdev> = ModuleTable::new();

impl DelayBdev {
    fn params_json(&self) -> serde_json::Map<String, serde_json::Value> {
        let l = &self.shared.latencies;
        let mut m = serde_json::Map::new();
        m.insert("name".into(), json!(self.name));
        m.insert("base_bdev_name".into(), json!(self.base_name));
        for (key, class) in [
            ("avg_read_latency", LatencyClass::AvgRead),
            ("p99_read_latency", LatencyClass::P99Read),
            ("avg_write_latency", LatencyClass::AvgWrite),
            ("p99_write_latency", LatencyClass::P99Write),
        ] {
            m.insert(key.into(), json!(l.us(class)));
        }
        m
    }
}

impl BdevBackend for DelayBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }

    fn io_type_supported(&self, io_type: IoType) -> bool {
        // A reset is always served (it aborts held I/Os), passed on only if the base takes it.
        io_type == IoType::Reset || self.base_bdev.backend().io_type_supported(io_type)
    }

    fn unmap_reads_zeroes(&self) -> bool {
        self.base_bdev.unmap_reads_zeroes()
    }

    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        let base_ch = base_channel(&self.base, &self.base_name)?;
        let seed =
            keel_reactor::ticks() ^ (u64::from(keel_reactor::current_core().unwrap_or(0)) << 48);
        Ok(Box::new(channel::DelayChannel::new(
            base_ch,
            Arc::clone(&self.shared),
            seed,
        )))
    }

    fn driver_specific(&self) -> serde_json::Value {
        json!({ "delay": self.params_json() })
    }

    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall> {
        let mut params = self.params_json();
        params.insert("uuid".into(), json!(info.uuid.to_string()));
        Some(ConfigCall {
            method: "bdev_delay_create".into(),
            params: params.into(),
        })
    }

    fn destruct(&self) {
        self.live.store(false, Ordering::Release);
        DELAY_BDEVS.remove_if_same(&self.name, self);
        let base = self.base.lock().unwrap_or_else(|p| p.into_inner()).take();
        drop(base);
        log::info!(
            "delay bdev {} destroyed, base {} released",
            self.name,
            self.base_name
        );
    }
}

/// Create a delay bdev on top of `cfg.base_bdev_name` (which it opens and claims). Call on a
/// reactor: base hot-remove events are delivered to the calling core.
pub fn create(cfg: &DelayConfig) -> Result<Bdev, BdevError> {
    if cfg.name.is_empty() {
        return Err(BdevError::Invalid(
            "delay bdev name must not be empty".into(),
        ));
    }
    latency::validate(cfg.latencies_us()).map_err(BdevError::Invalid)?;
    if crate::get_bdev(&cfg.name).is_some() {
        return Err(BdevError::Exists(cfg.name.clone()));
    }
    let live = Arc::new(AtomicBool::new(false));
    let desc = open_base(&cfg.base_bdev_name, MODULE, &cfg.name, Arc::clone(&live))?;
    let base_bdev = desc.bdev().clone();
    let base_info = base_bdev.info().clone();
    let shared = Arc::new(DelayShared {
        latencies: Latencies::new(cfg.latencies_us(), keel_reactor::tick_rate()),
        reset_gen: AtomicU64::new(0),
        base_supports_reset: base_bdev.backend().io_type_supported(IoType::Reset),
    });
    let disk = Arc::new(DelayBdev {
        name: cfg.name.clone(),
        base_name: base_info.name.clone(),
        base_bdev,
        base: Mutex::new(Some(desc)),
        shared,
        live: Arc::clone(&live),
    });
    let info = BdevInfo {
        name: cfg.name.clone(),
        aliases: Vec::new(),
        uuid: cfg.uuid.unwrap_or_else(Uuid::new_random),
        block_size: base_info.block_size,
        num_blocks: base_info.num_blocks,
    };
    match crate::register(info, Arc::clone(&disk) as Arc<dyn BdevBackend>) {
        Ok(bdev) => {
            DELAY_BDEVS.insert(&cfg.name, disk);
            live.store(true, Ordering::Release);
            log::info!(
                "delay bdev {} created on {} (read {}/{} us, write {}/{} us avg/p99)",
                cfg.name,
                base_info.name,
                cfg.avg_read_latency,
                cfg.p99_read_latency,
                cfg.avg_write_latency,
                cfg.p99_write_latency
            );
            Ok(bdev)
        }
        Err(e) => {
            // Close the base (and release the claim) right away.
            drop(disk.base.lock().unwrap_or_else(|p| p.into_inner()).take());
            Err(e)
        }
    }
}

/// Delete the delay bdev `name`; resolves once it is gone and its base released.
pub async fn delete(name: &str) -> Result<(), BdevError> {
    let disk = DELAY_BDEVS
        .get(name)
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    crate::unregister(&disk.name).await
}

/// Change one latency (`latency_type`: `avg_read`, `p99_read`, `avg_write`, `p99_write`) of
/// the delay bdev `name`; applies to I/Os completed by the base from now on.
pub fn update_latency(name: &str, latency_type: &str, latency_us: u64) -> Result<(), BdevError> {
    let class = LatencyClass::parse(latency_type).ok_or_else(|| {
        BdevError::Invalid(format!(
            "invalid latency_type {latency_type:?}: expected avg_read, p99_read, avg_write or p99_write"
        ))
    })?;
    let disk = DELAY_BDEVS
        .get(name)
        .ok_or_else(|| BdevError::NotFound(name.to_string()))?;
    disk.shared
        .latencies
        .set(class, latency_us, keel_reactor::tick_rate());
    log::info!(
        "delay bdev {}: {} latency set to {latency_us} us",
        disk.name,
        class.name()
    );
    Ok(())
}
