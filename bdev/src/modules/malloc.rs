//! The `malloc` bdev module: a RAM disk.
//!
//! The memory is one anonymous mapping made at creation (zero-filled by the kernel), shared by
//! the channels of every core, and unmapped when the bdev and its last channel are gone. It does
//! not come from the per-core I/O buffer pools.
//!
//! Population: the whole mapping is faulted in (writable, in transparent huge pages where the
//! system gives them) *before* the bdev is registered, so no I/O ever waits for a page fault —
//! left to the I/O path, the first seconds of 4 KiB writes to a fresh 1 GiB malloc ran at a few
//! hundred IOPS. `madvise(MADV_POPULATE_WRITE)` (Linux ≥ 5.14; it faults through the normal
//! path, so a `MADV_HUGEPAGE` range gets 2 MiB pages) or, on older kernels, a write of one byte
//! per page. [`create_async`] (what `bdev_malloc_create` and config replay use) does it on a
//! helper thread, away from the reactor cores when they are pinned and another CPU is allowed,
//! so the reactors keep serving I/O meanwhile; the create completes when the memory is resident.
//! It can be cancelled ([`delete`] of the name, [`cancel_pending`] at shutdown). [`create`] does
//! the same on the calling thread (for tools and tests).
//!
//! Data races: like a disk, the device makes no promise about concurrent overlapping I/O. Two
//! cores writing (or one writing, one reading) the same blocks at the same time get
//! unspecified bytes. The mapping is only ever reached through raw pointers with
//! `ptr::copy_nonoverlapping` / `ptr::write_bytes` (never through a `&`/`&mut` slice that could
//! let the compiler assume exclusive or immutable access), exactly as memory shared with a
//! device or another process is; consumers that need ordering (a filesystem, RAID) order their
//! own I/O as they must for any disk.

use crate::rpc::{bdev_error_to_rpc, delete_of_module, parse_uuid};
use crate::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevInfo, ConfigCall, IoRef, IoStatus, IoType,
    IoVec, Uuid,
};
use keel_rpc::{HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::ptr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Instant;

/// SPDK's product name for this module.
pub const PRODUCT_NAME: &str = "Malloc disk";

/// The bdev's memory: an anonymous private mapping.
struct Region {
    base: *mut u8,
    len: usize,
}

// SAFETY: the mapping is plain memory owned by this value; it is reached only through raw
// pointers under the data-race rule in the module doc, and unmapped once, in Drop.
unsafe impl Send for Region {}
// SAFETY: as above.
unsafe impl Sync for Region {}

impl Region {
    fn new(len: usize) -> Result<Region, BdevError> {
        // SAFETY: anonymous private mapping of `len` (> 0) bytes; no existing memory is touched.
        let p = unsafe {
            libc::mmap(
                ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if p == libc::MAP_FAILED {
            let err = std::io::Error::last_os_error();
            return Err(BdevError::NoMem(format!(
                "cannot map {len} bytes for a malloc bdev: {err}"
            )));
        }
        // Transparent huge pages where the system offers them on request (THP "madvise"
        // mode, Debian's default): fewer TLB misses for the copies every I/O makes (a 4 KiB
        // memcpy stream measured ~14 GB/s into 4 KiB pages vs ~21 GB/s into huge pages here).
        // SAFETY: advice on the mapping just made; it changes no contents.
        if unsafe { libc::madvise(p, len, libc::MADV_HUGEPAGE) } != 0 {
            log::debug!(
                "malloc bdev: no transparent huge pages: {}",
                std::io::Error::last_os_error()
            );
        }
        Ok(Region {
            base: p.cast(),
            len,
        })
    }
}

/// Bytes populated per `madvise` call: one huge page. The call holds the process's memory-map
/// lock (shared) while it faults the step in, and a thread that maps or unmaps memory queues
/// behind it — then so does any page fault, a reactor's too; a small step keeps that wait
/// short (64 MiB steps gave a reactor a 950 ms stall on this VM, where faulting 1 GiB in takes
/// seconds). The cancel flag is checked between steps.
const POPULATE_STEP: usize = 2 << 20;

/// The OS page size.
fn page_size() -> usize {
    // SAFETY: sysconf reads a constant of the system.
    let p = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    usize::try_from(p).ok().filter(|&p| p > 0).unwrap_or(4096)
}

impl Region {
    /// Fault in the whole mapping, writable, so no I/O waits for a page fault. Blocking (about
    /// 1–5 s per GiB): call it where no I/O is served. Stops with `ECANCELED` when `cancel` is
    /// set (checked every [`POPULATE_STEP`]), with `ENOMEM` when the kernel cannot give the
    /// memory (e.g. a cgroup limit).
    fn populate(&self, cancel: &AtomicBool) -> Result<(), BdevError> {
        let mut off = 0;
        let mut madvise = true;
        while off < self.len {
            if cancel.load(Ordering::Relaxed) {
                return Err(cancelled());
            }
            let n = POPULATE_STEP.min(self.len - off);
            if !madvise {
                self.touch(off, n);
                off += n;
                continue;
            }
            // SAFETY: `off..off+n` lies inside the mapping, `off` is page aligned (a multiple
            // of the step); populating changes no contents.
            let r =
                unsafe { libc::madvise(self.base.add(off).cast(), n, libc::MADV_POPULATE_WRITE) };
            if r == 0 {
                off += n;
                continue;
            }
            let err = std::io::Error::last_os_error();
            match err.raw_os_error() {
                Some(libc::EINTR | libc::EAGAIN) => {}
                Some(libc::EINVAL) if off == 0 => {
                    log::debug!(
                        "malloc bdev: no MADV_POPULATE_WRITE (Linux < 5.14): touching pages"
                    );
                    madvise = false;
                }
                Some(libc::ENOMEM) => {
                    return Err(BdevError::NoMem(format!(
                        "the system has no memory for it ({} of {} MiB populated)",
                        off >> 20,
                        self.len >> 20
                    )))
                }
                e => {
                    return Err(BdevError::Os {
                        context: "cannot populate its memory".into(),
                        message: err.to_string(),
                        errno: e.unwrap_or(libc::EIO),
                    })
                }
            }
        }
        Ok(())
    }

    /// Write one zero byte per page of `off..off+n` (the mapping is still private to its
    /// creator: nothing reads or writes it concurrently).
    fn touch(&self, off: usize, n: usize) {
        for p in (off..off + n).step_by(page_size()) {
            // SAFETY: `p` lies inside the mapping; the memory is zero already and not shared
            // yet, so writing a zero changes nothing but makes the page resident.
            unsafe { ptr::write_volatile(self.base.add(p), 0) };
        }
    }

    /// Bytes of the mapping resident in memory (`mincore(2)`).
    #[cfg(test)]
    fn resident_bytes(&self) -> usize {
        let page = page_size();
        let pages = self.len.div_ceil(page);
        let mut vec = vec![0u8; pages];
        // SAFETY: the mapping is `len` bytes from the page-aligned `base`; `vec` has one byte
        // per page of it.
        if unsafe { libc::mincore(self.base.cast(), self.len, vec.as_mut_ptr()) } != 0 {
            return 0;
        }
        vec.iter().filter(|&&v| v & 1 != 0).count() * page
    }

    /// Bytes of the mapping's VMAs in transparent huge pages (`AnonHugePages` of
    /// `/proc/self/smaps`; a VMA the kernel merged with a neighbour counts whole).
    fn huge_bytes(&self) -> Option<u64> {
        let smaps = std::fs::read_to_string("/proc/self/smaps").ok()?;
        let (lo, hi) = (self.base as u64, self.base as u64 + self.len as u64);
        let mut inside = false;
        let mut total = 0;
        for line in smaps.lines() {
            let mut words = line.split_whitespace();
            let first = words.next().unwrap_or("");
            if let Some((a, b)) = first.split_once('-') {
                if let (Ok(a), Ok(b)) = (u64::from_str_radix(a, 16), u64::from_str_radix(b, 16)) {
                    inside = a < hi && b > lo;
                    continue;
                }
            }
            if inside && first == "AnonHugePages:" {
                total += words.next()?.parse::<u64>().ok()? * 1024;
            }
        }
        Some(total)
    }
}

/// The error of a creation cancelled by [`delete`] or [`cancel_pending`].
fn cancelled() -> BdevError {
    BdevError::Os {
        context: "creation cancelled".into(),
        message: "the bdev was deleted (or the target stopped) while its memory was being \
                  populated"
            .into(),
        errno: libc::ECANCELED,
    }
}

/// Map and populate `len` bytes for the bdev `name`, logging how long it took. Blocking.
fn make_region(name: &str, len: usize, cancel: &AtomicBool) -> Result<Region, BdevError> {
    let start = Instant::now();
    let region = Region::new(len)?;
    if len >= 256 << 20 {
        // Seconds per GiB on a loaded VM: say why the create (or start-up) waits.
        log::info!("malloc {name}: populating {} MiB", len >> 20);
    }
    region.populate(cancel).map_err(|e| match e {
        BdevError::NoMem(m) => BdevError::NoMem(format!(
            "cannot allocate {} MiB for malloc bdev {name}: {m}",
            len >> 20
        )),
        BdevError::Os {
            context,
            message,
            errno,
        } => BdevError::Os {
            context: format!("malloc bdev {name}: {context}"),
            message,
            errno,
        },
        e => e,
    })?;
    let took = start.elapsed();
    let huge = region
        .huge_bytes()
        .map(|h| format!(" ({} MiB in 2 MiB pages)", h.min(len as u64) >> 20))
        .unwrap_or_default();
    let size = if len >= 1 << 20 {
        format!("{} MiB", len >> 20)
    } else {
        format!("{} KiB", len.div_ceil(1024))
    };
    log::info!(
        "malloc {name}: populated {size} in {:.1} s{huge}",
        took.as_secs_f64()
    );
    Ok(region)
}

/// Mappings of at least this size are unmapped on a helper thread (freeing a populated GiB
/// takes tens of milliseconds: not on a reactor).
const UNMAP_OFF_THREAD: usize = 64 << 20;

impl Drop for Region {
    fn drop(&mut self) {
        let (base, len) = (self.base as usize, self.len);
        if len >= UNMAP_OFF_THREAD && keel_reactor::current_core().is_some() {
            let spawned = std::thread::Builder::new()
                .name("malloc-unmap".into())
                .spawn(move || unmap(base, len));
            if spawned.is_ok() {
                return;
            }
        }
        unmap(base, len);
    }
}

/// Unmap a region's mapping (from its `Drop`, exactly once).
fn unmap(base: usize, len: usize) {
    // SAFETY: `base..base+len` is a mapping made by `Region::new`, unmapped only here, once,
    // when its region is dropped (nothing refers to it any more).
    if unsafe { libc::munmap(base as *mut libc::c_void, len) } != 0 {
        log::warn!(
            "malloc bdev: munmap failed: {}",
            std::io::Error::last_os_error()
        );
    }
}

struct MallocBackend {
    region: Arc<Region>,
}

impl BdevBackend for MallocBackend {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }
    fn io_type_supported(&self, io_type: IoType) -> bool {
        matches!(
            io_type,
            IoType::Read
                | IoType::Write
                | IoType::WriteZeroes
                | IoType::Unmap
                | IoType::Flush
                | IoType::Reset
        )
    }
    fn unmap_reads_zeroes(&self) -> bool {
        // Unmap and WriteZeroes both zero the memory.
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(MallocChannel {
            region: Arc::clone(&self.region),
        }))
    }
    fn driver_specific(&self) -> Value {
        json!({})
    }
    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_malloc_create".into(),
            params: json!({
                "name": info.name,
                "num_blocks": info.num_blocks,
                "block_size": info.block_size,
                "uuid": info.uuid.to_string(),
            }),
        })
    }
}

struct MallocChannel {
    region: Arc<Region>,
}

impl MallocChannel {
    /// Copy between the region at byte `off` and the iovecs (`to_iovs`: a read).
    ///
    /// # Safety
    /// `off + total iovec length ≤ region.len`, and the iovecs are valid buffers (the layer
    /// guarantees both: range checked, iovecs trimmed to the I/O's length, validity promised
    /// by whoever built the iovecs).
    #[inline]
    unsafe fn copy(&self, mut off: usize, iovs: &[IoVec], to_iovs: bool) {
        for iov in iovs {
            // SAFETY: per the contract, `off..off+iov.len` lies inside the mapping and the iovec
            // is valid; the two never overlap (pool/user buffers vs our private mapping).
            unsafe {
                let dev = self.region.base.add(off);
                if to_iovs {
                    ptr::copy_nonoverlapping(dev, iov.base, iov.len);
                } else {
                    ptr::copy_nonoverlapping(iov.base, dev, iov.len);
                }
            }
            off += iov.len;
        }
    }
}

impl BackendChannel for MallocChannel {
    fn submit(&mut self, io: IoRef) {
        let bs = io.block_size() as usize;
        // Cannot overflow: the layer checked offset + num ≤ num_blocks, whose size is `len`.
        let off = io.offset_blocks() as usize * bs;
        let len = io.num_blocks() as usize * bs;
        debug_assert!(
            off.checked_add(len).is_some_and(|e| e <= self.region.len)
                || io.io_type() == IoType::Flush
        );
        match io.io_type() {
            // SAFETY: range and iovecs checked by the layer (see `copy`).
            IoType::Read => unsafe { self.copy(off, io.iovs(), true) },
            // SAFETY: as above.
            IoType::Write => unsafe { self.copy(off, io.iovs(), false) },
            IoType::WriteZeroes | IoType::Unmap => {
                // SAFETY: `off..off+len` lies inside the mapping (range checked by the layer).
                unsafe { ptr::write_bytes(self.region.base.add(off), 0, len) }
            }
            IoType::Flush | IoType::Reset => {}
        }
        io.complete(IoStatus::Success);
    }
}

/// Check a malloc bdev's geometry and name; returns its size in bytes.
fn check_new(name: &str, num_blocks: u64, block_size: u32) -> Result<usize, BdevError> {
    if block_size < 512 || !block_size.is_multiple_of(512) {
        return Err(BdevError::Invalid(format!(
            "Data block size {block_size} is not a multiple of 512"
        )));
    }
    if num_blocks == 0 {
        return Err(BdevError::Invalid(
            "Disk num_blocks must be greater than 0".into(),
        ));
    }
    let len = num_blocks
        .checked_mul(u64::from(block_size))
        .and_then(|l| usize::try_from(l).ok())
        .filter(|&l| l <= isize::MAX as usize)
        .ok_or_else(|| {
            BdevError::Invalid(format!(
                "{num_blocks} blocks of {block_size} bytes is too large"
            ))
        })?;
    if let Some(host) = host_memory() {
        if len as u64 > host {
            return Err(BdevError::NoMem(format!(
                "malloc bdev {name} of {} MiB is larger than this host's memory ({} MiB of \
                 RAM and swap)",
                len >> 20,
                host >> 20
            )));
        }
    }
    if crate::get_bdev(name).is_some() || is_pending(name) {
        return Err(BdevError::Exists(name.to_owned()));
    }
    Ok(len)
}

/// RAM plus swap of the host, bytes (`sysinfo(2)`).
fn host_memory() -> Option<u64> {
    // SAFETY: an all-zero `sysinfo` is a valid value; the call fills it.
    let mut si: libc::sysinfo = unsafe { std::mem::zeroed() };
    // SAFETY: `si` is a valid, writable `sysinfo`.
    if unsafe { libc::sysinfo(&mut si) } != 0 {
        return None;
    }
    let unit = u64::from(si.mem_unit.max(1));
    (si.totalram as u64)
        .checked_add(si.totalswap as u64)?
        .checked_mul(unit)
}

/// Register a populated region as the bdev `name`.
fn register_region(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
    region: Region,
) -> Result<Bdev, BdevError> {
    let info = BdevInfo {
        name: name.to_owned(),
        aliases: Vec::new(),
        uuid: uuid.unwrap_or_else(Uuid::new_random),
        block_size,
        num_blocks,
    };
    crate::register(
        info,
        Arc::new(MallocBackend {
            region: Arc::new(region),
        }),
    )
}

/// Create and register a malloc bdev of `num_blocks` × `block_size` bytes (a multiple of 512,
/// power of two). A random UUID is made when `uuid` is `None`. The memory is populated on the
/// calling thread before the bdev is registered: this blocks for about 1–5 s per GiB, so on a
/// reactor that serves I/O use [`create_async`] (as `bdev_malloc_create` does).
pub fn create(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
) -> Result<Bdev, BdevError> {
    let len = check_new(name, num_blocks, block_size)?;
    let region = make_region(name, len, &AtomicBool::new(false))?;
    register_region(name, num_blocks, block_size, uuid, region)
}

/// Like [`create`], but the memory is mapped and populated on a helper thread while the
/// caller (a reactor) goes on polling; the bdev is registered, and the future resolves, once
/// every page is resident. The name is reserved meanwhile ([`BdevError::Exists`] for a second
/// create). [`delete`] of the name or [`cancel_pending`] cancels it (`ECANCELED`), and so
/// does dropping the future.
pub async fn create_async(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
) -> Result<Bdev, BdevError> {
    let len = check_new(name, num_blocks, block_size)?;
    let pending = Pending::reserve(name)?;
    let (tx, rx) = keel_reactor::oneshot();
    let cancel = Arc::clone(&pending.cancel);
    let thread_name = name.to_owned();
    let cpus = helper_cpus();
    std::thread::Builder::new()
        .name("malloc-populate".into())
        .spawn(move || {
            if let Some(set) = cpus {
                // SAFETY: `set` is a valid CPU set; 0 is the calling thread.
                unsafe { libc::sched_setaffinity(0, std::mem::size_of_val(&set), &set) };
            }
            let r = make_region(&thread_name, len, &cancel);
            // Cancelled at the last moment: free the memory here, not on the reactor.
            tx.send(r.and_then(|region| {
                if cancel.load(Ordering::Relaxed) {
                    Err(cancelled())
                } else {
                    Ok(region)
                }
            }));
        })
        .map_err(|e| {
            BdevError::NoMem(format!(
                "cannot start a thread to populate malloc bdev {name}: {e}"
            ))
        })?;
    let region = rx.await.map_err(|()| BdevError::Os {
        context: format!("malloc bdev {name}"),
        message: "the thread populating its memory died".into(),
        errno: libc::EIO,
    })??;
    if pending.cancel.load(Ordering::Relaxed) {
        return Err(cancelled());
    }
    let r = register_region(name, num_blocks, block_size, uuid, region);
    drop(pending);
    r
}

/// CPUs for the populating thread when the calling thread is a reactor pinned to one CPU: the
/// process's CPUs without the reactor cores, if that leaves any (else `None`: inherit).
fn helper_cpus() -> Option<libc::cpu_set_t> {
    keel_reactor::current_core()?;
    let size = std::mem::size_of::<libc::cpu_set_t>();
    // SAFETY: an all-zero cpu_set_t is the empty set; `sched_getaffinity` writes at most
    // `size` bytes into it (0 = this thread, the process id = the main, non-reactor thread);
    // the CPU_* helpers only read or write inside the sets and CPU_CLR ignores CPU numbers
    // beyond the set.
    unsafe {
        let mut mine: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(0, size, &mut mine) != 0 || libc::CPU_COUNT(&mine) != 1 {
            return None;
        }
        let mut all: libc::cpu_set_t = std::mem::zeroed();
        if libc::sched_getaffinity(libc::getpid(), size, &mut all) != 0 {
            return None;
        }
        for core in keel_reactor::cores() {
            libc::CPU_CLR(core as usize, &mut all);
        }
        (libc::CPU_COUNT(&all) > 0).then_some(all)
    }
}

/// A creation in progress (its name is reserved).
struct PendingEntry {
    name: String,
    cancel: Arc<AtomicBool>,
    /// Told when the creation ends (deletes waiting for it).
    waiters: Vec<keel_reactor::OneshotSender<()>>,
}

/// Creations in progress (control path only: a short mutex).
static PENDING: Mutex<Vec<PendingEntry>> = Mutex::new(Vec::new());

fn pending_table() -> std::sync::MutexGuard<'static, Vec<PendingEntry>> {
    PENDING.lock().unwrap_or_else(PoisonError::into_inner)
}

fn is_pending(name: &str) -> bool {
    pending_table().iter().any(|p| p.name == name)
}

/// The reservation of a name while its creation runs; released (and the creation cancelled
/// if it is still running) when dropped.
struct Pending {
    name: String,
    cancel: Arc<AtomicBool>,
}

impl Pending {
    /// Reserve `name`, unless another creation holds it.
    fn reserve(name: &str) -> Result<Pending, BdevError> {
        let cancel = Arc::new(AtomicBool::new(false));
        let mut t = pending_table();
        if t.iter().any(|p| p.name == name) {
            return Err(BdevError::Exists(name.to_owned()));
        }
        t.push(PendingEntry {
            name: name.to_owned(),
            cancel: Arc::clone(&cancel),
            waiters: Vec::new(),
        });
        Ok(Pending {
            name: name.to_owned(),
            cancel,
        })
    }
}

impl Drop for Pending {
    fn drop(&mut self) {
        self.cancel.store(true, Ordering::Relaxed);
        let entry = {
            let mut t = pending_table();
            let i = t.iter().position(|p| Arc::ptr_eq(&p.cancel, &self.cancel));
            i.map(|i| t.swap_remove(i))
        };
        debug_assert!(entry.is_some(), "pending create of {} not found", self.name);
        for w in entry.into_iter().flat_map(|e| e.waiters) {
            w.send(());
        }
    }
}

/// Cancel every malloc creation still populating its memory (at shutdown): each fails with
/// `ECANCELED` and registers nothing.
pub fn cancel_pending() {
    for p in pending_table().iter() {
        log::info!("malloc {}: creation cancelled", p.name);
        p.cancel.store(true, Ordering::Relaxed);
    }
}

/// The first free name of the form `MallocN`.
pub fn next_free_name() -> String {
    (0u64..)
        .map(|i| format!("Malloc{i}"))
        .find(|n| crate::get_bdev(n).is_none() && !is_pending(n))
        .unwrap_or_default()
}

/// Unregister a malloc bdev (fails with [`BdevError::NotFound`] for bdevs of other modules).
/// A malloc bdev still being created ([`create_async`]) is cancelled: this resolves once its
/// creation has ended (and its name is free).
pub async fn delete(name: &str) -> Result<(), BdevError> {
    let wait = {
        let mut t = pending_table();
        t.iter_mut().find(|p| p.name == name).map(|p| {
            p.cancel.store(true, Ordering::Relaxed);
            let (tx, rx) = keel_reactor::oneshot();
            p.waiters.push(tx);
            rx
        })
    };
    if let Some(rx) = wait {
        log::info!("malloc {name}: deleted while being created; creation cancelled");
        let _ = rx.await;
        return Ok(());
    }
    delete_of_module(name, PRODUCT_NAME).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    #[serde(default)]
    name: Option<String>,
    num_blocks: u64,
    block_size: u32,
    #[serde(default)]
    uuid: Option<String>,
    /// SPDK options accepted for config compatibility when they ask for nothing special.
    #[serde(default)]
    physical_block_size: Option<u32>,
    #[serde(default)]
    optimal_io_boundary: u32,
    #[serde(default)]
    md_size: u32,
    #[serde(default)]
    md_interleave: bool,
    #[serde(default)]
    dif_type: u32,
    #[serde(default)]
    dif_is_head_of_md: bool,
    #[serde(default)]
    dif_pi_format: u32,
    /// A placement hint (SPDK: -1 = any node).
    #[serde(default)]
    numa_id: Option<i32>,
}

impl CreateParams {
    /// SPDK's metadata, DIF and NUMA options: refused where Keel cannot honour them (they would
    /// change the data layout), `numa_id` accepted as a hint.
    fn check_spdk_options(&self) -> Result<(), RpcError> {
        if self.md_size != 0 || self.md_interleave || self.dif_type != 0 || self.dif_is_head_of_md {
            return Err(RpcError::errno(
                libc::EINVAL,
                "md_size, md_interleave, dif_type, dif_is_head_of_md: metadata and DIF are not \
                 supported by Keel's malloc bdev",
            ));
        }
        super::refuse_dif_pi_format("malloc", self.dif_pi_format)?;
        check_numa_id(self.numa_id)?;
        Ok(())
    }
}

/// Whether NUMA node `id` exists on this host.
fn numa_node_exists(id: i32) -> bool {
    id >= 0 && std::path::Path::new(&format!("/sys/devices/system/node/node{id}")).exists()
        || id == 0 && !std::path::Path::new("/sys/devices/system/node").exists()
}

/// Check SPDK's `numa_id` (-1: any node): a node that exists is accepted as the hint it is
/// (the memory is placed where the kernel puts the populating thread's pages), one that does
/// not is refused.
fn check_numa_id(numa_id: Option<i32>) -> Result<(), RpcError> {
    match numa_id {
        None | Some(-1) => Ok(()),
        Some(id) if numa_node_exists(id) => {
            log::info!(
                "bdev_malloc_create: numa_id {id} is a hint Keel does not act on (the memory \
                 goes where the kernel places it)"
            );
            Ok(())
        }
        Some(id) => Err(RpcError::errno(
            libc::EINVAL,
            format!("numa_id {id}: this host has no NUMA node {id} (-1 means any)"),
        )),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// rpc.py: `bdev_malloc_create [-b NAME] [-u UUID] total_size block_size` (size in MiB).
static CREATE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_malloc_create",
    help: "Create a RAM-backed bdev; prints its name (Malloc0, Malloc1, ... when not given)",
    params: &[
        ParamSpec::positional(
            "total_size",
            ParamKind::Float,
            false,
            "Size of the bdev in MiB (the client sends num_blocks)",
        ),
        ParamSpec::positional(
            "block_size",
            ParamKind::Int,
            true,
            "Block size in bytes (a multiple of 512)",
        ),
        ParamSpec::option(
            "name",
            ParamKind::Str,
            false,
            Some("name"),
            Some('b'),
            "Name of the bdev (default: the first free MallocN)",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            Some("uuid"),
            Some('u'),
            "UUID of the bdev (random when absent)",
        ),
        ParamSpec::option(
            "num_blocks",
            ParamKind::Int,
            false,
            Some("num-blocks"),
            None,
            "Number of blocks (instead of total_size)",
        ),
        ParamSpec::option(
            "numa_id",
            ParamKind::Int,
            false,
            None,
            Some('n'),
            "NUMA node for the memory: a hint Keel accepts (for a node that exists) but does \
             not act on; -1 (any) is the default",
        ),
        ParamSpec::option(
            "dif_pi_format",
            ParamKind::Int,
            false,
            None,
            Some('f'),
            "Protection information format: Keel has no DIF, only 0 is accepted",
        ),
    ],
    cli_rewrite: Some(crate::rpc::total_size_to_num_blocks),
};

/// rpc.py: `bdev_malloc_delete NAME`.
static DELETE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_malloc_delete",
    help: "Delete a malloc bdev",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "Name of the malloc bdev",
    )],
    cli_rewrite: None,
};

fn rpc_create(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateParams = keel_rpc::params::parse(params)?;
        p.check_spdk_options()?;
        if p.physical_block_size
            .is_some_and(|pbs| pbs != 0 && pbs % p.block_size.max(1) != 0)
        {
            return Err(RpcError::invalid_params(
                "physical_block_size must be a multiple of block_size",
            ));
        }
        if p.optimal_io_boundary != 0 {
            log::info!(
                "bdev_malloc_create: optimal_io_boundary {} ignored",
                p.optimal_io_boundary
            );
        }
        let uuid = parse_uuid(p.uuid.as_deref())?;
        let name = p
            .name
            .filter(|n| !n.is_empty())
            .unwrap_or_else(next_free_name);
        let bdev = create_async(&name, p.num_blocks, p.block_size, uuid)
            .await
            .map_err(bdev_error_to_rpc)?;
        Ok(Value::String(bdev.name().to_owned()))
    })
}

fn rpc_delete(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = keel_rpc::params::parse(params)?;
        delete(&p.name).await.map_err(bdev_error_to_rpc)?;
        Ok(Value::Bool(true))
    })
}

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {
    keel_rpc::register_method(&CREATE_SPEC, rpc_create);
    keel_rpc::register_method(&DELETE_SPEC, rpc_delete);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_numa_id_and_dif_pi_format() {
        let parse = |v: Value| keel_rpc::params::parse::<CreateParams>(Some(v)).unwrap();
        let p = parse(serde_json::json!({
            "num_blocks": 8, "block_size": 512, "numa_id": -1, "dif_pi_format": 0
        }));
        assert_eq!((p.numa_id, p.dif_pi_format), (Some(-1), 0));
        assert!(check_numa_id(p.numa_id).is_ok());
        assert!(check_numa_id(None).is_ok());
        assert!(check_numa_id(Some(0)).is_ok(), "every host has node 0");
        let e = check_numa_id(Some(4095)).unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        assert!(e.message.contains("numa_id 4095"), "{}", e.message);
        let e = parse(serde_json::json!({"num_blocks": 8, "block_size": 512, "dif_pi_format": 2}))
            .check_spdk_options()
            .unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        assert!(e.message.contains("dif_pi_format 2"), "{}", e.message);
        let e = parse(serde_json::json!({"num_blocks": 8, "block_size": 512, "numa_id": 4095}))
            .check_spdk_options()
            .unwrap_err();
        assert!(e.message.contains("numa_id"), "{}", e.message);
        assert!(
            parse(serde_json::json!({"num_blocks": 8, "block_size": 512, "numa_id": 0}))
                .check_spdk_options()
                .is_ok()
        );
    }

    #[test]
    fn create_validates_geometry() {
        assert!(matches!(
            create("malloc_t_geo", 8, 1000, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            create("malloc_t_geo", 0, 512, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            create("malloc_t_geo", u64::MAX / 2, 4096, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(crate::get_bdev("malloc_t_geo").is_none());
    }

    #[test]
    fn unmapped_blocks_read_as_zeroes() {
        let backend = MallocBackend {
            region: Arc::new(Region::new(4096).unwrap()),
        };
        assert!(backend.unmap_reads_zeroes());
    }

    #[test]
    fn population_makes_every_page_resident() {
        // Not a multiple of the page size nor of the step; 5 steps and a bit.
        let len = 5 * POPULATE_STEP + 3 * 512;
        let r = Region::new(len).unwrap();
        assert!(
            r.resident_bytes() < len / 4,
            "a fresh mapping is not resident yet: {}",
            r.resident_bytes()
        );
        r.populate(&AtomicBool::new(false)).unwrap();
        assert_eq!(r.resident_bytes(), len.div_ceil(page_size()) * page_size());
    }

    #[test]
    fn touching_fallback_makes_every_page_resident() {
        let len = 8 << 20;
        let r = Region::new(len).unwrap();
        r.touch(0, len);
        assert_eq!(r.resident_bytes(), len);
    }

    #[test]
    fn cancelled_population_stops_with_ecanceled() {
        let r = Region::new(4 * POPULATE_STEP).unwrap();
        let e = r.populate(&AtomicBool::new(true)).unwrap_err();
        assert_eq!(e.errno(), -libc::ECANCELED, "{e}");
        assert!(r.resident_bytes() < POPULATE_STEP);
    }

    #[test]
    fn make_region_populates() {
        let len = 16 << 20;
        let r = make_region("malloc_t_make", len, &AtomicBool::new(false)).unwrap();
        assert_eq!(r.resident_bytes(), len);
        // THP where the system has it in "always" or "madvise" mode: populated in huge pages.
        let thp = std::fs::read_to_string("/sys/kernel/mm/transparent_hugepage/enabled")
            .unwrap_or_default();
        if thp.contains("[always]") || thp.contains("[madvise]") {
            assert!(r.huge_bytes().is_some());
        }
    }

    #[test]
    fn larger_than_the_host_is_refused_with_enomem() {
        let e = create("malloc_t_huge", 1 << 40, 4096, None).unwrap_err();
        assert_eq!(e.errno(), -libc::ENOMEM);
        assert!(
            e.to_string().contains("larger than this host's memory"),
            "{e}"
        );
        assert!(crate::get_bdev("malloc_t_huge").is_none());
    }

    #[test]
    fn create_async_registers_when_populated_and_reserves_the_name() {
        use crate::testutil::{block_on, poll_once};
        let mut first = Box::pin(create_async("malloc_t_async", 4096, 4096, None));
        // The first poll starts the population and reserves the name.
        if poll_once(&mut first).is_pending() {
            let e = block_on(create_async("malloc_t_async", 8, 512, None)).unwrap_err();
            assert!(matches!(e, BdevError::Exists(_)), "{e}");
            assert!(is_pending("malloc_t_async"));
            assert_ne!(next_free_name(), "malloc_t_async");
        }
        let bdev = block_on(first).unwrap();
        assert_eq!(bdev.name(), "malloc_t_async");
        assert!(!is_pending("malloc_t_async"));
        block_on(delete("malloc_t_async")).unwrap();
        assert!(crate::get_bdev("malloc_t_async").is_none());
    }

    #[test]
    fn delete_during_population_cancels_the_create() {
        use crate::testutil::{block_on, poll_once};
        // 1 GiB: long enough to still be populating when the delete comes.
        let mut creating = Box::pin(create_async("malloc_t_cancel", 1 << 18, 4096, None));
        assert!(poll_once(&mut creating).is_pending());
        let mut del = Box::pin(delete("malloc_t_cancel"));
        let deleted = std::thread::scope(|s| {
            let c = s.spawn(|| block_on(&mut creating).unwrap_err());
            let d = block_on(&mut del);
            (d, c.join().unwrap())
        });
        assert!(deleted.0.is_ok());
        assert_eq!(deleted.1.errno(), -libc::ECANCELED, "{}", deleted.1);
        assert!(crate::get_bdev("malloc_t_cancel").is_none());
        assert!(!is_pending("malloc_t_cancel"));
        // The name is free again.
        create("malloc_t_cancel", 8, 512, None).unwrap();
        block_on(delete("malloc_t_cancel")).unwrap();
    }

    #[test]
    fn region_is_zeroed_and_writable() {
        let r = Region::new(8192).unwrap();
        // SAFETY: in-bounds reads/writes of the fresh private mapping, no other user.
        unsafe {
            assert_eq!(*r.base.add(8191), 0);
            r.base.add(100).write(7);
            assert_eq!(*r.base.add(100), 7);
        }
    }
}
