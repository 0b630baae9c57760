//! Control path: the set of bdevs, open descriptors, claims, hot-remove and unregistration.
//!
//! Everything here runs off the I/O path, so plain mutexes are fine. The global table maps
//! names and aliases to bdevs and keeps registration order. Each bdev carries its own small
//! control state (open descriptors, claim, live channel count, QoS limits) behind a mutex; the
//! only fields the I/O path reads are the `removing` flag and the live block count, atomics.
//!
//! A module may change its bdev's size in place ([`Bdev::resize`]): the new block count is
//! published to the I/O path's range check and [`BdevEvent::Resize`] goes to every open
//! descriptor on the core that opened it.
//!
//! Unregistration removes the bdev from the table at once (so its name can be reused), refuses
//! new opens and new I/O, sends [`BdevEvent::Remove`] to every open descriptor on the core that
//! opened it, waits until every descriptor is closed and every channel is gone (which includes
//! in-flight I/O, since a channel lives until its last I/O completes), and only then calls the
//! backend's `destruct`.

use crate::qos::QosLimits;
use crate::{BdevBackend, BdevError, IoChannel, IoType, Uuid};
use std::collections::BTreeMap;
use std::future::poll_fn;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::task::{Poll, Waker};

/// Largest block size accepted by [`register`] (1 MiB).
pub(crate) const MAX_BLOCK_SIZE: u32 = 1 << 20;

/// The static description of a bdev, as given to [`register`].
#[derive(Debug, Clone)]
pub struct BdevInfo {
    /// Unique name.
    pub name: String,
    /// Other unique names it answers to at registration; the live list is [`Bdev::aliases`]
    /// (a module may change it in place with [`Bdev::replace_alias`]).
    pub aliases: Vec<String>,
    /// Its UUID (random when the creator gave none).
    pub uuid: Uuid,
    /// Logical block size, bytes (512, 4096, ...).
    pub block_size: u32,
    /// Number of blocks at registration; the live count is [`Bdev::num_blocks`].
    pub num_blocks: u64,
}

/// Lock a control-path mutex; a panic elsewhere while holding it leaves plain data behind, which
/// stays usable, so poisoning is ignored rather than turned into a second panic.
pub(crate) fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Who holds the exclusive claim.
struct Claim {
    module: String,
    desc_id: u64,
}

/// Mutable control state of one bdev.
struct CtlState {
    claim: Option<Claim>,
    descs: Vec<Arc<DescShared>>,
    /// Live channels (one per core that took one), including ones kept by in-flight I/O.
    channels: usize,
    qos: QosLimits,
    /// Latency histogram options while histograms are enabled.
    histogram: Option<crate::histogram::HistogramOpts>,
    /// Unregistration futures waiting for the last descriptor/channel to go.
    waiters: Vec<Waker>,
}

impl CtlState {
    fn idle(&self) -> bool {
        self.descs.is_empty() && self.channels == 0
    }
}

/// The shared part of a bdev.
pub(crate) struct BdevShared {
    id: u64,
    info: BdevInfo,
    backend: Arc<dyn BdevBackend>,
    supported: [bool; IoType::ALL.len()],
    removing: AtomicBool,
    /// Live block count (changed by [`Bdev::resize`]; read lock-free by the I/O path).
    num_blocks: AtomicU64,
    /// Live aliases (changed by [`Bdev::replace_alias`] under the table lock).
    aliases: Mutex<Vec<String>>,
    state: Mutex<CtlState>,
}

/// A registered bdev (cheap to clone, `Send + Sync`).
#[derive(Clone)]
pub struct Bdev {
    inner: Arc<BdevShared>,
}

impl Bdev {
    /// Its description.
    pub fn info(&self) -> &BdevInfo {
        &self.inner.info
    }
    /// Its current number of blocks (the registration-time count unless the module resized it
    /// since). Lock-free; the I/O path checks ranges against this value.
    #[inline]
    pub fn num_blocks(&self) -> u64 {
        self.inner.num_blocks.load(Ordering::Acquire)
    }
    /// Change the number of blocks in place (for the bdev's module). Call once the new size is
    /// backed: when growing, only after every block up to the new end can be served by every
    /// core; when shrinking, the I/O path refuses blocks beyond the new end from the moment this
    /// returns (I/O already past the check may still reach the module, which must stay safe).
    /// Every open descriptor then gets [`BdevEvent::Resize`] on the core that opened it.
    /// Fails on a zero count, a byte size that overflows 64 bits, or a bdev being removed.
    /// Setting the current size again is a no-op without events.
    pub fn resize(&self, new_num_blocks: u64) -> Result<(), BdevError> {
        let bs = self.info().block_size;
        if new_num_blocks == 0 {
            return Err(BdevError::Invalid(format!(
                "bdev {}: number of blocks must be greater than 0",
                self.name()
            )));
        }
        if new_num_blocks.checked_mul(u64::from(bs)).is_none() {
            return Err(BdevError::Invalid(format!(
                "bdev {}: {new_num_blocks} blocks of {bs} bytes overflow a 64-bit size",
                self.name()
            )));
        }
        let (old, descs) = {
            let st = lock(&self.inner.state);
            if self.is_removing() {
                return Err(BdevError::NotFound(format!(
                    "{} (being removed)",
                    self.name()
                )));
            }
            let old = self.inner.num_blocks.swap(new_num_blocks, Ordering::AcqRel);
            (old, st.descs.clone())
        };
        if old == new_num_blocks {
            return Ok(());
        }
        log::info!(
            "bdev {}: resized from {old} to {new_num_blocks} blocks of {bs} bytes \
             ({} open descriptor(s) notified)",
            self.name(),
            descs.len()
        );
        for d in &descs {
            d.deliver(BdevEvent::Resize);
        }
        Ok(())
    }
    /// Its current aliases (those given at registration unless [`Bdev::replace_alias`] changed
    /// them since).
    pub fn aliases(&self) -> Vec<String> {
        lock(&self.inner.aliases).clone()
    }
    /// Replace alias `old` with `new` in place (for the bdev's module, e.g. a renamed logical
    /// volume): the bdev stays registered, open descriptors and channels are untouched and get
    /// no event, and from the moment this returns [`get_bdev`] and [`open`] find the bdev by
    /// `new` and no longer by `old`. Fails, changing nothing, when `old` is not one of its
    /// aliases, `new` is empty or already a name or alias of any bdev (this one included), or
    /// the bdev is being removed. `old == new` is a no-op.
    pub fn replace_alias(&self, old: &str, new: &str) -> Result<(), BdevError> {
        let mut table = lock(&TABLE);
        let registered = table.by_name.get(old).is_some_and(|b| b.ptr_eq(self));
        let mut aliases = lock(&self.inner.aliases);
        let Some(pos) = aliases.iter().position(|a| a == old) else {
            return Err(BdevError::NotFound(format!(
                "bdev {}: no alias {old}",
                self.name()
            )));
        };
        if !registered || self.is_removing() {
            return Err(BdevError::NotFound(format!(
                "{} (being removed)",
                self.name()
            )));
        }
        if old == new {
            return Ok(());
        }
        if new.is_empty() {
            return Err(BdevError::Invalid(format!(
                "bdev {}: alias must not be empty",
                self.name()
            )));
        }
        if table.by_name.contains_key(new) {
            return Err(BdevError::Exists(new.to_owned()));
        }
        table.by_name.remove(old);
        table.by_name.insert(new.to_owned(), self.clone());
        aliases[pos] = new.to_owned();
        drop((aliases, table));
        log::info!("bdev {}: alias {old} is now {new}", self.name());
        Ok(())
    }
    /// Its name.
    pub fn name(&self) -> &str {
        &self.info().name
    }
    /// The module implementation.
    pub fn backend(&self) -> &Arc<dyn BdevBackend> {
        &self.inner.backend
    }
    /// The module holding an exclusive claim, if any.
    pub fn claimed_by(&self) -> Option<String> {
        lock(&self.inner.state)
            .claim
            .as_ref()
            .map(|c| c.module.clone())
    }
    /// Whether the bdev supports `io_type` (asked of the backend once, at registration).
    pub fn io_type_supported(&self, io_type: IoType) -> bool {
        self.inner.supported[io_type as usize]
    }
    /// Whether blocks read back as zeroes after Unmap and WriteZeroes
    /// (see [`BdevBackend::unmap_reads_zeroes`]).
    pub fn unmap_reads_zeroes(&self) -> bool {
        self.inner.backend.unmap_reads_zeroes()
    }
    /// Whether [`unregister`] has started for this bdev.
    pub fn is_removing(&self) -> bool {
        self.inner.removing.load(Ordering::Relaxed)
    }
    /// Its I/O counters summed over every core (asks each core by message; control path).
    pub async fn io_stats(&self) -> crate::IoStats {
        crate::stats::gather(vec![self.id()])
            .await
            .pop()
            .unwrap_or_default()
    }

    /// Process-unique id (never reused), the key of per-core state.
    pub(crate) fn id(&self) -> u64 {
        self.inner.id
    }
    /// Supported-type table, indexed by `IoType as usize`.
    pub(crate) fn supported_table(&self) -> [bool; IoType::ALL.len()] {
        self.inner.supported
    }
    /// The I/O path's view of the removing flag.
    #[inline]
    pub(crate) fn removing_flag(&self) -> &AtomicBool {
        &self.inner.removing
    }
    /// Current QoS limits.
    pub(crate) fn qos_limits(&self) -> QosLimits {
        lock(&self.inner.state).qos
    }
    /// Store new QoS limits (the caller spreads them to the cores).
    pub(crate) fn store_qos_limits(&self, limits: QosLimits) {
        lock(&self.inner.state).qos = limits;
    }
    /// Whether some core still has a channel on this bdev: an open handle, or I/O in flight
    /// (a channel lives until its last I/O completes). Control path (takes the bdev's lock).
    pub fn has_io_channels(&self) -> bool {
        lock(&self.inner.state).channels > 0
    }
    /// The histogram options while histograms are enabled.
    pub fn histogram_opts(&self) -> Option<crate::histogram::HistogramOpts> {
        lock(&self.inner.state).histogram
    }
    /// Enable latency histograms with `opts` on every core (each core allocates its buckets
    /// now, so the completion path never allocates), or disable them with `None` (dropping
    /// what they counted). Enabling again with the same options keeps the counts. Control
    /// path; errors say which option is unusable.
    pub async fn set_histogram(
        &self,
        opts: Option<crate::histogram::HistogramOpts>,
    ) -> Result<(), BdevError> {
        if opts.is_some() && opts == self.histogram_opts() {
            return Ok(());
        }
        let proto = match &opts {
            Some(o) => Some(
                crate::histogram::Histogram::new(o, keel_reactor::tick_rate())
                    .map_err(BdevError::Invalid)?,
            ),
            None => None,
        };
        crate::stats::set_histograms(self.id(), proto).await;
        lock(&self.inner.state).histogram = opts;
        Ok(())
    }
    /// Every core's latency histogram merged; `None` when histograms are not enabled.
    pub async fn histogram(&self) -> Option<crate::histogram::Histogram> {
        self.histogram_opts()?;
        crate::stats::merged_histogram(self.id()).await
    }
    /// A channel came to life on some core.
    pub(crate) fn channel_opened(&self) {
        lock(&self.inner.state).channels += 1;
    }
    /// A channel is gone (its backend channel already dropped).
    pub(crate) fn channel_closed(&self) {
        let wakers = {
            let mut st = lock(&self.inner.state);
            st.channels = st.channels.saturating_sub(1);
            take_wakers_if_idle(&mut st)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
    fn ptr_eq(&self, other: &Bdev) -> bool {
        Arc::ptr_eq(&self.inner, &other.inner)
    }
}

impl std::fmt::Debug for Bdev {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Bdev")
            .field("name", &self.name())
            .field("id", &self.id())
            .finish()
    }
}

fn take_wakers_if_idle(st: &mut CtlState) -> Vec<Waker> {
    if st.idle() {
        std::mem::take(&mut st.waiters)
    } else {
        Vec::new()
    }
}

/// Events delivered to an open descriptor (on the core that opened it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BdevEvent {
    /// The bdev is going away: stop submitting, drop channels, close the descriptor.
    Remove,
    /// The bdev's number of blocks changed ([`Bdev::num_blocks`] has the new value).
    Resize,
}

type EventFn = Box<dyn Fn(BdevEvent) + Send + Sync>;

/// The shared part of a descriptor (also held by channels taken from it, for the write flag).
pub(crate) struct DescShared {
    id: u64,
    /// Core that opened it (`None`: a non-reactor thread; events then run on the unregistering
    /// thread).
    core: Option<u32>,
    write: AtomicBool,
    open: AtomicBool,
    on_event: EventFn,
}

impl DescShared {
    /// Whether write-type I/O is allowed through this descriptor.
    #[inline]
    pub(crate) fn writable(&self) -> bool {
        self.write.load(Ordering::Relaxed)
    }
    fn deliver(self: &Arc<Self>, event: BdevEvent) {
        let run = move |d: &DescShared| {
            // A descriptor closed before the message arrived gets nothing.
            if d.open.load(Ordering::Acquire) {
                (d.on_event)(event);
            }
        };
        match self.core {
            Some(core) => {
                let d = Arc::clone(self);
                if let Err(e) = keel_reactor::send_to(core, move || run(&d)) {
                    log::warn!("bdev event {event:?} for core {core}: {e}; delivering here");
                    run(self);
                }
            }
            None => run(self),
        }
    }
}

/// An open handle on a bdev: required for channels and claims. `Send + Sync`.
/// Dropping it closes it (and releases its claim).
pub struct BdevDesc {
    bdev: Bdev,
    shared: Arc<DescShared>,
}

impl BdevDesc {
    /// The bdev.
    pub fn bdev(&self) -> &Bdev {
        &self.bdev
    }
    /// Take the exclusive claim for `module` (e.g. "raid", "lvol"); fails if another holds it.
    /// Claiming turns a read-only descriptor into a writable one (as SPDK does). Claiming again
    /// through the same descriptor for the same module succeeds.
    pub fn claim(&self, module: &str) -> Result<(), BdevError> {
        let mut st = lock(&self.bdev.inner.state);
        match &st.claim {
            Some(c) if c.desc_id == self.shared.id && c.module == module => Ok(()),
            Some(c) => Err(BdevError::Claimed {
                name: self.bdev.name().to_owned(),
                by: c.module.clone(),
            }),
            None => {
                st.claim = Some(Claim {
                    module: module.to_owned(),
                    desc_id: self.shared.id,
                });
                self.shared.write.store(true, Ordering::Relaxed);
                log::info!("bdev {} claimed by module {module}", self.bdev.name());
                Ok(())
            }
        }
    }
    /// A channel for submitting I/O on the calling core (a reactor). All descriptors of a bdev
    /// share one channel state per core (one descriptor pool, one backend channel); each call
    /// returns a new handle on it. Fails once the bdev is being removed.
    pub fn get_io_channel(&self) -> Result<IoChannel, BdevError> {
        if self.bdev.is_removing() {
            return Err(BdevError::NotFound(format!(
                "{} (being removed)",
                self.bdev.name()
            )));
        }
        crate::io_path::channel_for(&self.bdev, Arc::clone(&self.shared))
    }
    /// Whether this descriptor allows writes.
    pub fn is_writable(&self) -> bool {
        self.shared.writable()
    }
}

impl Drop for BdevDesc {
    fn drop(&mut self) {
        self.shared.open.store(false, Ordering::Release);
        let wakers = {
            let mut st = lock(&self.bdev.inner.state);
            st.descs.retain(|d| !Arc::ptr_eq(d, &self.shared));
            if st
                .claim
                .as_ref()
                .is_some_and(|c| c.desc_id == self.shared.id)
            {
                let c = st.claim.take();
                log::info!(
                    "bdev {}: claim by {} released (descriptor closed)",
                    self.bdev.name(),
                    c.map(|c| c.module).unwrap_or_default()
                );
            }
            take_wakers_if_idle(&mut st)
        };
        wakers.into_iter().for_each(Waker::wake);
    }
}

impl std::fmt::Debug for BdevDesc {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BdevDesc")
            .field("bdev", &self.bdev.name())
            .field("write", &self.shared.writable())
            .finish()
    }
}

/// Names and aliases → bdevs, plus registration order.
struct Table {
    order: Vec<Bdev>,
    by_name: BTreeMap<String, Bdev>,
}

static TABLE: Mutex<Table> = Mutex::new(Table {
    order: Vec::new(),
    by_name: BTreeMap::new(),
});
static NEXT_BDEV_ID: AtomicU64 = AtomicU64::new(1);
static NEXT_DESC_ID: AtomicU64 = AtomicU64::new(1);

fn validate(info: &BdevInfo) -> Result<(), BdevError> {
    let invalid = |m: String| Err(BdevError::Invalid(m));
    if info.name.is_empty() {
        return invalid("bdev name must not be empty".into());
    }
    for (i, a) in info.aliases.iter().enumerate() {
        if a.is_empty() {
            return invalid(format!("bdev {}: alias must not be empty", info.name));
        }
        if *a == info.name || info.aliases[..i].contains(a) {
            return Err(BdevError::Exists(a.clone()));
        }
    }
    if !info.block_size.is_power_of_two() || info.block_size > MAX_BLOCK_SIZE {
        return invalid(format!(
            "bdev {}: block size {} must be a power of two no larger than {MAX_BLOCK_SIZE}",
            info.name, info.block_size
        ));
    }
    if info.num_blocks == 0 {
        return invalid(format!(
            "bdev {}: number of blocks must be greater than 0",
            info.name
        ));
    }
    if info
        .num_blocks
        .checked_mul(u64::from(info.block_size))
        .is_none()
    {
        return invalid(format!(
            "bdev {}: {} blocks of {} bytes overflow a 64-bit size",
            info.name, info.num_blocks, info.block_size
        ));
    }
    Ok(())
}

/// Add a bdev. Fails if the name or an alias is taken or the geometry is invalid: the name must
/// not be empty, the block size must be a power of two no larger than 1 MiB, the block count
/// non-zero (and the size must fit in 64 bits).
pub fn register(info: BdevInfo, backend: Arc<dyn BdevBackend>) -> Result<Bdev, BdevError> {
    validate(&info)?;
    let mut supported = [false; IoType::ALL.len()];
    for t in IoType::ALL {
        supported[t as usize] = backend.io_type_supported(t);
    }
    let mut table = lock(&TABLE);
    if let Some(taken) = std::iter::once(&info.name)
        .chain(&info.aliases)
        .find(|n| table.by_name.contains_key(n.as_str()))
    {
        return Err(BdevError::Exists(taken.clone()));
    }
    let bdev = Bdev {
        inner: Arc::new(BdevShared {
            id: NEXT_BDEV_ID.fetch_add(1, Ordering::Relaxed),
            num_blocks: AtomicU64::new(info.num_blocks),
            aliases: Mutex::new(info.aliases.clone()),
            info,
            backend,
            supported,
            removing: AtomicBool::new(false),
            state: Mutex::new(CtlState {
                claim: None,
                descs: Vec::new(),
                channels: 0,
                qos: QosLimits::default(),
                histogram: None,
                waiters: Vec::new(),
            }),
        }),
    };
    let info = bdev.info();
    for n in std::iter::once(&info.name).chain(&info.aliases) {
        table.by_name.insert(n.clone(), bdev.clone());
    }
    table.order.push(bdev.clone());
    drop(table);
    EVER_REGISTERED.store(true, Ordering::Release);
    log::info!(
        "bdev {} registered: {} blocks of {} bytes, {}, uuid {}",
        info.name,
        info.num_blocks,
        info.block_size,
        bdev.backend().product_name(),
        info.uuid
    );
    crate::examine::examine_new_bdev(&bdev);
    Ok(bdev)
}

/// Remove a bdev: new opens fail at once, open descriptors get [`BdevEvent::Remove`], and the
/// future resolves once every descriptor is closed and the backend destructed.
///
/// The name (and aliases) leave the table at once, so a new bdev may take them while this one
/// drains. The future also waits for every channel to go (a channel lives until its last
/// in-flight I/O completes), so `destruct` never races I/O.
pub async fn unregister(name: &str) -> Result<(), BdevError> {
    let bdev = {
        let mut table = lock(&TABLE);
        let bdev = table
            .by_name
            .get(name)
            .cloned()
            .ok_or_else(|| BdevError::NotFound(name.into()))?;
        let names: Vec<String> = table
            .by_name
            .iter()
            .filter(|(_, b)| b.ptr_eq(&bdev))
            .map(|(n, _)| n.clone())
            .collect();
        table.by_name.retain(|_, b| !b.ptr_eq(&bdev));
        table.order.retain(|b| !b.ptr_eq(&bdev));
        // As SPDK: a `bdev_examine` name goes with its bdev.
        crate::examine::forget(&names);
        bdev
    };
    let descs = {
        let st = lock(&bdev.inner.state);
        bdev.inner.removing.store(true, Ordering::Release);
        st.descs.clone()
    };
    log::info!(
        "bdev {}: unregistering ({} open descriptor(s) notified)",
        bdev.name(),
        descs.len()
    );
    for d in &descs {
        d.deliver(BdevEvent::Remove);
    }
    poll_fn(|cx| {
        let mut st = lock(&bdev.inner.state);
        if st.idle() {
            Poll::Ready(())
        } else {
            if !st.waiters.iter().any(|w| w.will_wake(cx.waker())) {
                st.waiters.push(cx.waker().clone());
            }
            Poll::Pending
        }
    })
    .await;
    bdev.backend().destruct();
    if let Some(done) = bdev.backend().destruct_done() {
        done.await;
    }
    crate::percore::forget_everywhere(bdev.id());
    log::info!("bdev {} unregistered", bdev.name());
    Ok(())
}

/// Set by the first [`register`]: from then on the bdev layer's start-up options
/// (`bdev_set_options`) are fixed.
static EVER_REGISTERED: AtomicBool = AtomicBool::new(false);

/// Whether a bdev has been registered since the process started.
pub fn any_bdev_registered_yet() -> bool {
    EVER_REGISTERED.load(Ordering::Acquire)
}

/// Find a bdev by name or alias.
pub fn get_bdev(name: &str) -> Option<Bdev> {
    lock(&TABLE).by_name.get(name).cloned()
}

/// Names of all bdevs in registration order (what `bdev_get_bdevs` and `save_config` list).
pub fn bdev_names() -> Vec<String> {
    lock(&TABLE)
        .order
        .iter()
        .map(|b| b.name().to_owned())
        .collect()
}

/// All bdevs in registration order.
pub(crate) fn all_bdevs() -> Vec<Bdev> {
    lock(&TABLE).order.clone()
}

/// Open a bdev by name or alias. `on_event` runs on the calling core (on a non-reactor thread,
/// it runs on the thread that calls [`unregister`]). Opening for writing fails while a module
/// holds a claim (SPDK's `-EPERM`).
pub fn open(
    name: &str,
    write: bool,
    on_event: impl Fn(BdevEvent) + Send + Sync + 'static,
) -> Result<BdevDesc, BdevError> {
    let bdev = get_bdev(name).ok_or_else(|| BdevError::NotFound(name.into()))?;
    let mut st = lock(&bdev.inner.state);
    if bdev.is_removing() {
        return Err(BdevError::NotFound(format!("{name} (being removed)")));
    }
    if write {
        if let Some(c) = &st.claim {
            return Err(BdevError::Claimed {
                name: bdev.name().to_owned(),
                by: c.module.clone(),
            });
        }
    }
    let shared = Arc::new(DescShared {
        id: NEXT_DESC_ID.fetch_add(1, Ordering::Relaxed),
        core: keel_reactor::current_core(),
        write: AtomicBool::new(write),
        open: AtomicBool::new(true),
        on_event: Box::new(on_event),
    });
    st.descs.push(Arc::clone(&shared));
    drop(st);
    log::debug!(
        "bdev {} opened ({})",
        bdev.name(),
        if write { "read-write" } else { "read-only" }
    );
    Ok(BdevDesc { bdev, shared })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::{block_on, info, poll_once, HoldBackend};
    use std::sync::atomic::AtomicUsize;

    fn hold() -> Arc<HoldBackend> {
        Arc::new(HoldBackend::new())
    }

    #[test]
    fn register_validates_geometry_and_names() {
        let bad = |i: BdevInfo| assert!(matches!(register(i, hold()), Err(BdevError::Invalid(_))));
        bad(info("", 512, 8));
        bad(info("reg_v", 0, 8));
        bad(info("reg_v", 3, 8));
        bad(info("reg_v", MAX_BLOCK_SIZE * 2, 8));
        bad(info("reg_v", 512, 0));
        bad(info("reg_v", 4096, u64::MAX / 1024));
        let mut i = info("reg_v", 512, 8);
        i.aliases = vec![String::new()];
        bad(i);
        let mut i = info("reg_v", 512, 8);
        i.aliases = vec!["reg_v".into()];
        assert!(matches!(register(i, hold()), Err(BdevError::Exists(_))));
        let mut i = info("reg_v", 512, 8);
        i.aliases = vec!["a".into(), "a".into()];
        assert!(matches!(register(i, hold()), Err(BdevError::Exists(_))));
        assert!(
            get_bdev("reg_v").is_none(),
            "failed registrations leave nothing behind"
        );
    }

    #[test]
    fn names_and_aliases_are_unique_and_found() {
        let mut i = info("reg_n1", 512, 8);
        i.aliases = vec!["reg_n1_alias".into()];
        let b = register(i, hold()).unwrap();
        assert_eq!(get_bdev("reg_n1_alias").unwrap().name(), "reg_n1");
        assert!(
            matches!(register(info("reg_n1", 512, 8), hold()), Err(BdevError::Exists(n)) if n == "reg_n1")
        );
        assert!(matches!(
            register(info("reg_n1_alias", 512, 8), hold()),
            Err(BdevError::Exists(_))
        ));
        let b2 = register(info("reg_n2", 4096, 8), hold()).unwrap();
        let names = bdev_names();
        let p1 = names.iter().position(|n| n == "reg_n1").unwrap();
        let p2 = names.iter().position(|n| n == "reg_n2").unwrap();
        assert!(p1 < p2, "registration order");
        assert!(
            !names.contains(&"reg_n1_alias".to_string()),
            "aliases are not listed as bdevs"
        );
        assert!(b.io_type_supported(IoType::Read));
        block_on(unregister("reg_n1_alias")).unwrap();
        block_on(unregister(b2.name())).unwrap();
        assert!(get_bdev("reg_n1").is_none() && get_bdev("reg_n1_alias").is_none());
        assert!(matches!(
            block_on(unregister("reg_n1")),
            Err(BdevError::NotFound(_))
        ));
    }

    #[test]
    fn aliases_change_in_place_without_events() {
        let mut i = info("reg_al", 512, 8);
        i.aliases = vec!["reg_al_a".into(), "reg_al_b".into()];
        let b = register(i, hold()).unwrap();
        let other = register(info("reg_al_other", 512, 8), hold()).unwrap();
        let events = Arc::new(AtomicUsize::new(0));
        let ev = Arc::clone(&events);
        let desc = open("reg_al_a", true, move |_| {
            ev.fetch_add(1, Ordering::Relaxed);
        })
        .unwrap();
        b.replace_alias("reg_al_a", "reg_al_c").unwrap();
        assert_eq!(b.aliases(), vec!["reg_al_c".to_string(), "reg_al_b".into()]);
        assert!(get_bdev("reg_al_c").unwrap().ptr_eq(&b));
        assert!(get_bdev("reg_al_a").is_none(), "the old alias is gone");
        assert_eq!(
            b.info().aliases[0],
            "reg_al_a",
            "info keeps the registration-time list"
        );
        assert!(desc.get_io_channel().is_ok() && desc.bdev().ptr_eq(&b));
        assert_eq!(
            events.load(Ordering::Relaxed),
            0,
            "no event for open descriptors"
        );
        // refused, changing nothing
        let taken = |r| matches!(r, Err(BdevError::Exists(_)));
        assert!(taken(b.replace_alias("reg_al_c", "reg_al_other")));
        assert!(taken(b.replace_alias("reg_al_c", "reg_al_b")));
        assert!(taken(b.replace_alias("reg_al_c", "reg_al")));
        assert!(matches!(
            b.replace_alias("reg_al_c", ""),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            b.replace_alias("reg_al_a", "reg_al_d"),
            Err(BdevError::NotFound(_))
        ));
        assert!(matches!(
            other.replace_alias("reg_al_c", "reg_al_d"),
            Err(BdevError::NotFound(_))
        ));
        b.replace_alias("reg_al_b", "reg_al_b").unwrap();
        assert_eq!(b.aliases(), vec!["reg_al_c".to_string(), "reg_al_b".into()]);
        assert!(get_bdev("reg_al_c").is_some() && get_bdev("reg_al_d").is_none());
        drop(desc);
        block_on(unregister("reg_al_c")).unwrap();
        assert!(get_bdev("reg_al_c").is_none() && get_bdev("reg_al_b").is_none());
        assert!(matches!(
            b.replace_alias("reg_al_c", "reg_al_e"),
            Err(BdevError::NotFound(_))
        ));
        block_on(unregister("reg_al_other")).unwrap();
    }

    #[test]
    fn claims_are_exclusive_and_released_on_close() {
        register(info("reg_c", 512, 8), hold()).unwrap();
        let d1 = open("reg_c", false, |_| {}).unwrap();
        let d2 = open("reg_c", true, |_| {}).unwrap();
        assert!(!d1.is_writable());
        d1.claim("raid").unwrap();
        assert!(d1.is_writable(), "claiming upgrades to write");
        d1.claim("raid").unwrap();
        assert_eq!(d1.bdev().claimed_by().as_deref(), Some("raid"));
        assert!(matches!(d2.claim("lvol"), Err(BdevError::Claimed { by, .. }) if by == "raid"));
        assert!(matches!(d2.claim("raid"), Err(BdevError::Claimed { .. })));
        assert!(matches!(
            open("reg_c", true, |_| {}),
            Err(BdevError::Claimed { .. })
        ));
        let ro = open("reg_c", false, |_| {}).unwrap();
        drop(d1);
        assert_eq!(ro.bdev().claimed_by(), None);
        d2.claim("lvol").unwrap();
        drop((d2, ro));
        block_on(unregister("reg_c")).unwrap();
    }

    #[test]
    fn unregister_notifies_and_waits_for_descriptors() {
        let backend = hold();
        let destructed = Arc::clone(&backend.destructed);
        register(info("reg_u", 512, 8), backend).unwrap();
        let events = Arc::new(AtomicUsize::new(0));
        let ev = Arc::clone(&events);
        let desc = open("reg_u", true, move |e| {
            assert_eq!(e, BdevEvent::Remove);
            ev.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let mut fut = Box::pin(unregister("reg_u"));
        assert!(poll_once(&mut fut).is_pending());
        assert_eq!(events.load(Ordering::SeqCst), 1, "remove event delivered");
        assert!(get_bdev("reg_u").is_none(), "gone from lookups at once");
        assert!(matches!(
            open("reg_u", false, |_| {}),
            Err(BdevError::NotFound(_))
        ));
        assert!(
            desc.get_io_channel().is_err(),
            "no new channels while removing"
        );
        // the name is free for a new bdev while the old one drains
        register(info("reg_u", 512, 8), hold()).unwrap();
        assert!(poll_once(&mut fut).is_pending());
        assert_eq!(destructed.load(Ordering::SeqCst), 0);
        drop(desc);
        assert!(poll_once(&mut fut).is_ready());
        assert_eq!(destructed.load(Ordering::SeqCst), 1);
        block_on(unregister("reg_u")).unwrap();
    }

    #[test]
    fn consumer_closing_from_the_event_lets_unregister_finish() {
        register(info("reg_e", 512, 8), hold()).unwrap();
        let slot: Arc<Mutex<Option<BdevDesc>>> = Arc::default();
        let s = Arc::clone(&slot);
        let desc = open("reg_e", false, move |_| drop(lock(&s).take())).unwrap();
        *lock(&slot) = Some(desc);
        block_on(unregister("reg_e")).unwrap();
        assert!(lock(&slot).is_none());
    }

    #[test]
    fn resize_validates_publishes_and_notifies_open_descriptors() {
        let b = register(info("reg_r", 512, 8), hold()).unwrap();
        let events: Arc<Mutex<Vec<BdevEvent>>> = Arc::default();
        let ev = Arc::clone(&events);
        let desc = open("reg_r", false, move |e| lock(&ev).push(e)).unwrap();
        let closed = open("reg_r", false, |_| {
            panic!("closed descriptors get no event")
        })
        .unwrap();
        drop(closed);
        assert!(matches!(b.resize(0), Err(BdevError::Invalid(_))));
        assert!(matches!(
            b.resize(u64::MAX / 256),
            Err(BdevError::Invalid(_))
        ));
        assert_eq!(b.num_blocks(), 8, "a refused resize changes nothing");
        b.resize(8).unwrap();
        assert!(lock(&events).is_empty(), "same size: no event");
        b.resize(32).unwrap();
        assert_eq!((b.num_blocks(), desc.bdev().num_blocks()), (32, 32));
        assert_eq!(b.info().num_blocks, 8, "the registration-time value stays");
        b.resize(4).unwrap();
        assert_eq!(b.num_blocks(), 4);
        assert_eq!(*lock(&events), vec![BdevEvent::Resize, BdevEvent::Resize]);
        let mut fut = Box::pin(unregister("reg_r"));
        assert!(poll_once(&mut fut).is_pending());
        assert!(
            matches!(b.resize(16), Err(BdevError::NotFound(_))),
            "no resize while being removed"
        );
        assert_eq!(b.num_blocks(), 4);
        drop(desc);
        assert!(poll_once(&mut fut).is_ready());
        assert_eq!(
            *lock(&events),
            vec![BdevEvent::Resize, BdevEvent::Resize, BdevEvent::Remove]
        );
    }

    #[test]
    fn event_skipped_for_closed_descriptor() {
        register(info("reg_x", 512, 8), hold()).unwrap();
        let fired = Arc::new(AtomicUsize::new(0));
        let f = Arc::clone(&fired);
        let desc = open("reg_x", false, move |_| {
            f.fetch_add(1, Ordering::SeqCst);
        })
        .unwrap();
        let shared = Arc::clone(&desc.shared);
        drop(desc);
        shared.deliver(BdevEvent::Remove);
        assert_eq!(fired.load(Ordering::SeqCst), 0);
        block_on(unregister("reg_x")).unwrap();
    }
}
