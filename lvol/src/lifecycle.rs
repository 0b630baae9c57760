//! Lvstore lifecycle: create on a bdev, load when its base appears (examine), rename,
//! destroy, and unload when the base goes away.

use super::format::{self, Superblock, MD_START_PAGE, PAGE_SIZE};
use super::load::{self, Loaded};
use super::md::{Md, MdState, VolMd};
use super::mdio::{self, buf_iov, MdIo};
use super::store::{self, lock, CoreCount, StoreShared, MODULE};
use super::volume;
use keel_bdev::{Bdev, BdevDesc, BdevError, BdevEvent, IoStatus, IoType, Uuid};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// SPDK's default cluster size.
pub const DEFAULT_CLUSTER_SIZE: u64 = 4 << 20;

/// What to do with the data region when creating a store (SPDK's `clear_method`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClearMethod {
    /// Leave it.
    None,
    /// Unmap it (when the base supports unmap).
    Unmap,
    /// Write zeroes over it.
    WriteZeroes,
}

impl ClearMethod {
    /// Parse SPDK's names (`none`, `unmap`, `write_zeroes`).
    pub fn parse(s: &str) -> Option<ClearMethod> {
        match s {
            "none" => Some(ClearMethod::None),
            "unmap" => Some(ClearMethod::Unmap),
            "write_zeroes" => Some(ClearMethod::WriteZeroes),
            _ => None,
        }
    }
}

fn io_err(what: &str, s: IoStatus) -> BdevError {
    BdevError::Os {
        context: what.to_string(),
        message: format!("base I/O failed ({s:?})"),
        errno: libc::EIO,
    }
}

/// Open `bdev` for the store: unload the store when the base is hot-removed.
fn open_base(bdev: &str, id_cell: Arc<AtomicU64>) -> Result<BdevDesc, BdevError> {
    keel_bdev::open(bdev, true, move |event| {
        if event == BdevEvent::Remove {
            let id = id_cell.load(Ordering::Acquire);
            if let Some(s) = store::all().into_iter().find(|s| s.id == id) {
                log::info!(
                    "lvstore {}: base bdev {} removed, unloading",
                    s.name(),
                    s.base_bdev.name()
                );
                keel_reactor::spawn_local(async move { unload(&s).await });
            }
        }
    })
}

fn shared_for(id: u64, sb: &Superblock, desc: BdevDesc, md_core: u32) -> Arc<StoreShared> {
    let base_bdev = desc.bdev().clone();
    let bs = base_bdev.info().block_size;
    let ncores = keel_reactor::cores().len().max(1);
    Arc::new(StoreShared {
        id,
        uuid: sb.uuid,
        name: Mutex::new(sb.name.clone()),
        base_flush: base_bdev.io_type_supported(IoType::Flush),
        base_write_zeroes: base_bdev.io_type_supported(IoType::WriteZeroes),
        base_unmap: base_bdev.io_type_supported(IoType::Unmap),
        base_unmap_zeroes: base_bdev.unmap_reads_zeroes(),
        base_bdev,
        base: Mutex::new(Some(desc)),
        md_core,
        cluster_size: u64::from(sb.cluster_size),
        block_size: bs,
        blocks_per_cluster: u64::from(sb.cluster_size) / u64::from(bs),
        data_start_blocks: sb.data_start / u64::from(bs),
        total_clusters: sb.total_clusters,
        free_clusters: AtomicU64::new(sb.total_clusters),
        epoch: AtomicU64::new(0),
        counts: (0..ncores).map(|_| CoreCount::default()).collect(),
        nospace_errors: AtomicU64::new(0),
        volumes: Mutex::new(Vec::new()),
        closing: AtomicBool::new(false),
    })
}

fn check_base(bdev: &Bdev) -> Result<(), BdevError> {
    let bs = bdev.info().block_size as usize;
    if bs > PAGE_SIZE || !PAGE_SIZE.is_multiple_of(bs) {
        return Err(BdevError::Invalid(format!(
            "bdev {}: block size {bs} must divide 4096",
            bdev.name()
        )));
    }
    Ok(())
}

/// Create an lvstore named `name` on bdev `bdev_name` (claimed). Runs on the calling core,
/// which becomes the store's metadata core.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): lvstore creation: every step and its undo, in order
pub async fn create(
    bdev_name: &str,
    name: &str,
    cluster_size: Option<u64>,
    clear: ClearMethod,
) -> Result<Arc<StoreShared>, BdevError> {
    format::check_name(name).map_err(BdevError::Invalid)?;
    let core = keel_reactor::current_core()
        .ok_or_else(|| BdevError::Invalid("lvstores are created on a reactor core".into()))?;
    if store::all().iter().any(|s| s.name() == name) {
        return Err(BdevError::Exists(format!("lvstore {name}")));
    }
    let cs = cluster_size.unwrap_or(DEFAULT_CLUSTER_SIZE);
    if !cs.is_power_of_two() || cs < PAGE_SIZE as u64 || cs > 1 << 30 {
        return Err(BdevError::Invalid(format!(
            "cluster_sz {cs} must be a power of two between 4096 and 1 GiB"
        )));
    }
    let id_cell = Arc::new(AtomicU64::new(0));
    let desc = open_base(bdev_name, Arc::clone(&id_cell))?;
    let bdev = desc.bdev().clone();
    check_base(&bdev)?;
    desc.claim(MODULE)?;
    let bs = u64::from(bdev.info().block_size);
    let base_bytes = bdev.num_blocks() * bs;
    let guess = base_bytes / cs;
    let md_pairs = guess / 16 + 64;
    let md_end = (MD_START_PAGE + 2 * md_pairs) * PAGE_SIZE as u64;
    let data_start = md_end.div_ceil(cs) * cs;
    let total = base_bytes.saturating_sub(data_start) / cs;
    if total == 0 {
        return Err(BdevError::Invalid(format!(
            "bdev {bdev_name} ({base_bytes} bytes) is too small for an lvstore with {cs}-byte clusters"
        )));
    }
    let total = total.min(format::MAX_CLUSTERS);
    let sb = Superblock {
        generation: 1,
        uuid: Uuid::new_random(),
        name: name.to_string(),
        cluster_size: cs as u32,
        block_size: bs as u32,
        base_blocks: bdev.num_blocks(),
        md_pairs,
        data_start,
        total_clusters: total,
    };
    let id = store::next_id();
    let shared = shared_for(id, &sb, desc, core);
    let ch = keel_bdev::modules::stack::base_channel(&shared.base, bdev_name)?;
    // Clear the old superblock copy and the metadata region, then the data region as asked.
    let wz = shared.base_write_zeroes;
    let md_blocks = md_end / bs;
    let st = if wz {
        mdio::io(&ch, MdIo::WriteZeroes, &[], 0, md_blocks).await
    } else {
        let mut z = keel_reactor::pool::alloc(PAGE_SIZE)
            .map_err(|e| BdevError::NoMem(format!("lvol: {e}")))?;
        z.as_mut_slice().fill(0);
        let bpp = PAGE_SIZE as u64 / bs;
        mdio::io(&ch, MdIo::Write, &[buf_iov(&mut z)], 0, 2 * bpp).await
    };
    if st != IoStatus::Success {
        return Err(io_err("clearing lvstore metadata", st));
    }
    let data_blocks = total * cs / bs;
    let clear_st = match clear {
        ClearMethod::Unmap if bdev.io_type_supported(IoType::Unmap) => {
            // in 1 GiB pieces
            let step = (1u64 << 30) / bs;
            let (mut off, mut s) = (0, IoStatus::Success);
            while off < data_blocks && s == IoStatus::Success {
                let n = step.min(data_blocks - off);
                s = mdio::io(&ch, MdIo::Unmap, &[], data_start / bs + off, n).await;
                off += n;
            }
            s
        }
        ClearMethod::WriteZeroes if wz => {
            mdio::io(&ch, MdIo::WriteZeroes, &[], data_start / bs, data_blocks).await
        }
        _ => IoStatus::Success,
    };
    if clear_st != IoStatus::Success {
        log::warn!("lvstore {name}: clearing the data region failed ({clear_st:?}); continuing");
    }
    // Whether every data cluster now reads zeroes: then first writes skip the zero-fill.
    let cleared = clear_st == IoStatus::Success
        && match clear {
            ClearMethod::Unmap => bdev.io_type_supported(IoType::Unmap) && shared.base_unmap_zeroes,
            ClearMethod::WriteZeroes => wz,
            ClearMethod::None => false,
        };
    let state = MdState {
        sb: sb.clone(),
        sb_slot: 1,
        gen: 1,
        next_map_id: 1,
        next_seq: 1,
        clusters: super::alloc::Bitmap::new(total),
        clean: if cleared {
            super::alloc::Bitmap::new_full(total)
        } else {
            super::alloc::Bitmap::new(total)
        },
        pairs: super::alloc::Bitmap::new(md_pairs),
        vols: Default::default(),
    };
    let md = Md::install(Arc::clone(&shared), state, ch);
    let res = async {
        md.write_super().await?;
        md.flush().await
    }
    .await;
    if let Err(e) = res {
        super::md::forget(id);
        return Err(e);
    }
    id_cell.store(id, Ordering::Release);
    store::add(Arc::clone(&shared));
    log::info!(
        "lvstore {name} created on {bdev_name}: uuid {}, {total} clusters of {cs} bytes",
        sb.uuid
    );
    Ok(shared)
}

/// Look at a new bdev: if it holds an lvstore, load it and register its volumes.
pub fn examine(bdev: &Bdev) {
    if keel_reactor::current_core().is_none() || check_base(bdev).is_err() {
        return;
    }
    if bdev.backend().product_name() == volume::PRODUCT_NAME {
        return; // no lvstores inside volumes
    }
    let name = bdev.name().to_string();
    let guard = keel_bdev::examine_begin();
    keel_reactor::spawn_local(async move {
        match load(&name).await {
            Ok(Some(s)) => log::info!(
                "lvstore {} ({}) loaded from {name}: {} volume(s)",
                s.name(),
                s.uuid,
                lock(&s.volumes).len()
            ),
            Ok(None) => {}
            Err(e) => log::error!("bdev {name}: lvstore refused: {e}"),
        }
        drop(guard);
    });
}

async fn read_pages(
    ch: &keel_bdev::IoChannel,
    bs: u64,
    first_page: u64,
    pages: u64,
    out: &mut Vec<u8>,
) -> Result<(), BdevError> {
    let chunk_pages = (keel_reactor::pool::MAX_CLASS / PAGE_SIZE) as u64;
    let mut buf = keel_reactor::pool::alloc(keel_reactor::pool::MAX_CLASS)
        .map_err(|e| BdevError::NoMem(format!("lvol load buffer: {e}")))?;
    let mut p = 0;
    while p < pages {
        let n = chunk_pages.min(pages - p);
        let len = (n as usize) * PAGE_SIZE;
        // SAFETY: `buf` is at least `len` bytes and outlives the awaited read.
        let iov = unsafe { keel_bdev::IoVec::from_raw_parts(buf.as_mut_ptr(), len) };
        let bpp = PAGE_SIZE as u64 / bs;
        let s = mdio::io(ch, MdIo::Read, &[iov], (first_page + p) * bpp, n * bpp).await;
        if s != IoStatus::Success {
            return Err(io_err("reading lvstore metadata", s));
        }
        out.extend_from_slice(&buf.as_slice()[..len]);
        p += n;
    }
    Ok(())
}

/// Load the lvstore on bdev `name`, if there is one.
pub async fn load(name: &str) -> Result<Option<Arc<StoreShared>>, BdevError> {
    let core = keel_reactor::current_core()
        .ok_or_else(|| BdevError::Invalid("lvstores load on a reactor core".into()))?;
    let probe = keel_bdev::open(name, false, |_| {})?;
    let bdev = probe.bdev().clone();
    let bs = u64::from(bdev.info().block_size);
    if bdev.num_blocks() * bs < 2 * PAGE_SIZE as u64 {
        return Ok(None);
    }
    let ch = probe.get_io_channel()?;
    let mut head = Vec::new();
    if let Err(e) = read_pages(&ch, bs, 0, 2, &mut head).await {
        log::debug!("bdev {name}: not examined for an lvstore: {e}");
        return Ok(None);
    }
    let picked = load::pick_super(&head[..PAGE_SIZE], &head[PAGE_SIZE..])
        .map_err(|e| BdevError::Invalid(format!("bdev {name}: corrupt lvstore: {e}")))?;
    let Some((sb, slot)) = picked else {
        return Ok(None);
    };
    if u64::from(sb.block_size) != bs || sb.base_blocks > bdev.num_blocks() {
        return Err(BdevError::Invalid(format!(
            "bdev {name}: lvstore {} was made on a base of {} blocks of {} bytes; this one has \
             {} blocks of {bs}",
            sb.name,
            sb.base_blocks,
            sb.block_size,
            bdev.num_blocks()
        )));
    }
    if store::all()
        .iter()
        .any(|s| s.uuid == sb.uuid || s.name() == sb.name)
    {
        return Err(BdevError::Exists(format!(
            "bdev {name}: lvstore {} ({}) is already loaded",
            sb.name, sb.uuid
        )));
    }
    let mut region = Vec::new();
    read_pages(&ch, bs, MD_START_PAGE, 2 * sb.md_pairs, &mut region).await?;
    drop(ch);
    drop(probe);
    let loaded = load::assemble(sb, slot, &region)
        .map_err(|e| BdevError::Invalid(format!("bdev {name}: corrupt lvstore: {e}")))?;
    install(name, loaded, core).await.map(Some)
}

async fn install(name: &str, l: Loaded, core: u32) -> Result<Arc<StoreShared>, BdevError> {
    let id_cell = Arc::new(AtomicU64::new(0));
    let desc = open_base(name, Arc::clone(&id_cell))?;
    desc.claim(MODULE)?;
    let id = store::next_id();
    let shared = shared_for(id, &l.sb, desc, core);
    let ch = keel_bdev::modules::stack::base_channel(&shared.base, name)?;
    let mut vols = std::collections::HashMap::new();
    let mut fixups = Vec::new();
    let mut order = Vec::new();
    for lv in l.vols {
        let parent_view = lv.desc.parent.map(|p: Uuid| {
            let pv: &VolMd = &vols[&p];
            Arc::clone(&pv.vol.view)
        });
        let vol = volume::make_volume(&shared, &lv.desc, &lv.entries, parent_view);
        if lv.rewrite_desc || !lv.rewrite_pages.is_empty() {
            fixups.push((lv.desc.uuid, lv.rewrite_desc, lv.rewrite_pages.clone()));
        }
        order.push(Arc::clone(&vol));
        vols.insert(
            lv.desc.uuid,
            VolMd {
                desc: lv.desc,
                desc_loc: lv.desc_loc,
                entries: lv.entries,
                pages: lv.pages,
                vol,
            },
        );
    }
    let state = MdState {
        sb_slot: l.sb_slot,
        sb: l.sb,
        gen: l.gen,
        next_map_id: l.next_map_id,
        next_seq: l.next_seq,
        // nothing is known to read zeroes after a load (the data of clusters freed before a
        // crash is still there)
        clean: super::alloc::Bitmap::new(l.clusters.len()),
        clusters: l.clusters,
        pairs: l.pairs,
        vols,
    };
    shared
        .free_clusters
        .store(state.clusters.free(), Ordering::Relaxed);
    let md = Md::install(Arc::clone(&shared), state, ch);
    for (uuid, desc, pages) in fixups {
        log::info!("lvol {uuid}: repairing metadata left by an interrupted operation");
        let r = async {
            if desc {
                md.write_desc(uuid).await?;
            }
            for p in pages {
                md.write_map_page(uuid, p).await?;
            }
            md.flush().await
        }
        .await;
        if let Err(e) = r {
            super::md::forget(id);
            return Err(e);
        }
    }
    id_cell.store(id, Ordering::Release);
    *lock(&shared.volumes) = order.clone();
    store::add(Arc::clone(&shared));
    let mut by_seq = order;
    by_seq.sort_by_key(|v| md.st.borrow().vols[&v.uuid].desc.seq);
    for v in &by_seq {
        md.report(v.uuid);
        if let Err(e) = volume::register_bdev(v) {
            log::error!("lvol {}: bdev registration failed: {e}", v.alias());
        }
    }
    Ok(shared)
}

/// Unregister every volume, forget the store and release its base (base removed, or
/// destroy).
pub async fn unload(s: &Arc<StoreShared>) {
    if s.closing.swap(true, Ordering::AcqRel) {
        return;
    }
    let vols: Vec<_> = lock(&s.volumes).clone();
    for v in vols.iter().rev() {
        volume::unregister_bdev(v).await;
    }
    lock(&s.volumes).clear();
    store::remove(s);
    if keel_reactor::current_core() == Some(s.md_core) {
        super::md::forget(s.id);
    } else {
        let id = s.id;
        let _ = keel_reactor::send_to(s.md_core, move || super::md::forget(id));
    }
    drop(lock(&s.base).take());
    log::info!("lvstore {} unloaded", s.name());
}

/// Destroy a store: delete its volumes, erase its superblocks, release the base.
pub async fn destroy(s: &Arc<StoreShared>) -> Result<(), BdevError> {
    let md = volume::md_of(s)?;
    loop {
        // children before parents
        let next = {
            let st = md.st.borrow();
            st.vols
                .values()
                .find(|v| !st.vols.values().any(|c| c.desc.parent == Some(v.desc.uuid)))
                .map(|v| Arc::clone(&v.vol))
        };
        let Some(v) = next else { break };
        volume::delete(&v).await?;
    }
    {
        let _g = md.lock.lock().await;
        md.zero_raw(0).await?;
        md.zero_raw(1).await?;
        md.flush().await?;
    }
    drop(md);
    unload(s).await;
    log::info!("lvstore {} ({}) destroyed", s.name(), s.uuid);
    Ok(())
}

/// Rename a store. Every volume's alias (`lvs_name/lvol_name`) follows in place: the volume
/// bdevs stay registered and their open descriptors are untouched.
pub async fn rename(s: &Arc<StoreShared>, new_name: &str) -> Result<(), BdevError> {
    format::check_name(new_name).map_err(BdevError::Invalid)?;
    if store::all().iter().any(|x| x.name() == new_name) {
        return Err(BdevError::Exists(format!("lvstore {new_name}")));
    }
    let md = volume::md_of(s)?;
    let _g = md.lock.lock().await;
    // (volume, its alias before the rename); the volume list only changes under the lock
    let vols: Vec<_> = lock(&s.volumes)
        .iter()
        .map(|v| (Arc::clone(v), v.alias()))
        .collect();
    for (v, _) in &vols {
        volume::check_alias_free(v, &format!("{new_name}/{}", v.info().name))?;
    }
    md.st.borrow_mut().sb.name = new_name.to_string();
    if let Err(e) = async {
        md.write_super().await?;
        md.flush().await
    }
    .await
    {
        // the name on disk is either one; keep answering to the old one until a reload
        md.st.borrow_mut().sb.name = s.name();
        return Err(e);
    }
    let old = std::mem::replace(&mut *lock(&s.name), new_name.to_string());
    let mut first_err = None;
    for (v, old_alias) in &vols {
        if let Err(e) = volume::update_alias(v, old_alias) {
            first_err.get_or_insert(e);
        }
    }
    log::info!(
        "lvstore {old} renamed to {new_name} ({} volume alias(es) updated in place)",
        vols.len()
    );
    first_err.map_or(Ok(()), Err)
}
