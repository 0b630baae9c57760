//! Volumes: the bdev each volume registers, and the metadata operations on volumes (create,
//! delete, resize, rename, snapshot, clone, inflate, decouple). Every operation runs on the
//! store's metadata core and holds its transaction lock while it changes metadata.

use super::fill::Fill;
use super::format::{
    self, check_name, VolumeDesc, ENTRIES_PER_PAGE, FLAG_SNAPSHOT, FLAG_THIN, UNALLOC, ZERO,
};
use super::map::{MapTable, ReadTarget, VolView};
use super::md::{join_all, Loc, Md, VolMd};
use super::store::{lock, StoreShared, VolInfo, Volume};
use keel_bdev::{BackendChannel, Bdev, BdevBackend, BdevError, BdevInfo, ConfigCall, IoType, Uuid};
use serde_json::json;
use std::collections::BTreeSet;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

/// Product name of volume bdevs (SPDK's).
pub const PRODUCT_NAME: &str = "Logical Volume";

/// The bdev backend of one volume.
struct LvolBdev {
    vol: Arc<Volume>,
    read_only: bool,
}

impl BdevBackend for LvolBdev {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }
    fn io_type_supported(&self, io_type: IoType) -> bool {
        match io_type {
            IoType::Read | IoType::Reset | IoType::Flush => true,
            IoType::Write | IoType::WriteZeroes | IoType::Unmap => !self.read_only,
        }
    }
    fn unmap_reads_zeroes(&self) -> bool {
        true
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        let base = keel_bdev::modules::stack::base_channel(
            &self.vol.store.base,
            self.vol.store.base_bdev.name(),
        )?;
        Ok(Box::new(super::io_path::LvolChannel::new(
            base,
            Arc::clone(&self.vol),
        )))
    }
    fn driver_specific(&self) -> serde_json::Value {
        let i = self.vol.info();
        let s = &self.vol.store;
        let mut o = json!({
            "lvol_store_uuid": s.uuid.to_string(),
            "base_bdev": s.base_bdev.name(),
            "thin_provision": i.thin,
            "num_allocated_clusters": i.allocated,
            "snapshot": i.snapshot,
            "clone": i.parent.is_some(),
            // Keel has no external-snapshot (esnap) clones.
            "esnap_clone": false,
        });
        // As SPDK: a clone names its snapshot, a snapshot lists its clones (by name).
        let vols: Vec<(Uuid, VolInfo)> = super::store::lock(&s.volumes)
            .iter()
            .map(|v| (v.uuid, v.info()))
            .collect();
        if let Some(p) = i.parent {
            let name = vols
                .iter()
                .find(|(u, _)| *u == p)
                .map(|(_, vi)| vi.name.clone());
            o["base_snapshot"] = json!(name.unwrap_or_else(|| p.to_string()));
        }
        if i.snapshot {
            let clones: Vec<&str> = vols
                .iter()
                .filter(|(_, vi)| vi.parent == Some(self.vol.uuid))
                .map(|(_, vi)| vi.name.as_str())
                .collect();
            o["clones"] = json!(clones);
        }
        json!({ "lvol": o })
    }
    fn config_call(&self, _info: &BdevInfo) -> Option<ConfigCall> {
        // Volumes come back from disk when their base is examined, never from the config.
        None
    }
}

/// Build the shared volume for a descriptor and its entries.
pub fn make_volume(
    store: &Arc<StoreShared>,
    desc: &VolumeDesc,
    entries: &[u32],
    parent: Option<Arc<VolView>>,
) -> Arc<Volume> {
    Arc::new(Volume {
        uuid: desc.uuid,
        store: Arc::clone(store),
        view: Arc::new(VolView::new(MapTable::new(entries, parent))),
        info: std::sync::Mutex::new(VolInfo {
            name: desc.name.clone(),
            thin: desc.flags & FLAG_THIN != 0,
            snapshot: desc.flags & FLAG_SNAPSHOT != 0,
            parent: desc.parent,
            num_clusters: desc.num_clusters,
            allocated: entries.iter().filter(|&&e| e < ZERO).count() as u64,
        }),
        nospace_errors: AtomicU64::new(0),
        nospace_logged: AtomicBool::new(false),
    })
}

/// Register the bdev of `vol` (named by its UUID, aliased `lvs/lvol`).
pub fn register_bdev(vol: &Arc<Volume>) -> Result<Bdev, BdevError> {
    let i = vol.info();
    let info = BdevInfo {
        name: vol.uuid.to_string(),
        aliases: vec![vol.alias()],
        uuid: vol.uuid,
        block_size: vol.store.block_size,
        num_blocks: i.num_clusters * vol.store.blocks_per_cluster,
    };
    let backend = Arc::new(LvolBdev {
        vol: Arc::clone(vol),
        read_only: i.snapshot,
    });
    keel_bdev::register(info, backend)
}

/// Unregister the bdev of `vol` if it is registered.
pub async fn unregister_bdev(vol: &Volume) {
    let name = vol.uuid.to_string();
    if keel_bdev::get_bdev(&name).is_some() {
        if let Err(e) = keel_bdev::unregister(&name).await {
            log::warn!("lvol {name}: unregister: {e}");
        }
    }
}

/// The registered bdev of `vol`, if any.
fn bdev_of(vol: &Volume) -> Option<Bdev> {
    keel_bdev::get_bdev(&vol.uuid.to_string())
}

/// Fail with `Exists` when `alias` names a bdev other than the one of `vol`.
pub fn check_alias_free(vol: &Volume, alias: &str) -> Result<(), BdevError> {
    match keel_bdev::get_bdev(alias) {
        Some(b) if b.name() != vol.uuid.to_string() => Err(BdevError::Exists(format!(
            "{alias} (the name of bdev {})",
            b.name()
        ))),
        _ => Ok(()),
    }
}

/// Move the bdev of `vol` from alias `old` to its current alias, in place (the bdev stays
/// registered; open descriptors are untouched).
pub fn update_alias(vol: &Volume, old: &str) -> Result<(), BdevError> {
    let Some(bdev) = bdev_of(vol) else {
        return Ok(()); // not registered (e.g. registration failed): nothing to follow
    };
    let new = vol.alias();
    bdev.replace_alias(old, &new).map_err(|e| {
        log::error!(
            "lvol {}: renamed on disk, but its bdev keeps alias {old}: {e}",
            vol.uuid
        );
        e
    })
}

/// The metadata state of the store of `vol`, when called on its metadata core.
pub fn md_of(store: &StoreShared) -> Result<Rc<Md>, BdevError> {
    if keel_reactor::current_core() != Some(store.md_core) {
        return Err(BdevError::Invalid(format!(
            "lvstore {} is managed from core {}; call from there",
            store.name(),
            store.md_core
        )));
    }
    super::md::get(store.id)
        .ok_or_else(|| BdevError::NotFound(format!("lvstore {} (unloaded)", store.name())))
}

fn nospace(what: &str) -> BdevError {
    BdevError::Os {
        context: what.to_string(),
        message: "not enough free clusters".into(),
        errno: libc::ENOSPC,
    }
}

fn clusters_for(store: &StoreShared, size_bytes: u64) -> Result<u64, BdevError> {
    let n = size_bytes.div_ceil(store.cluster_size);
    if n == 0 || n > format::MAX_VOLUME_CLUSTERS {
        return Err(BdevError::Invalid(format!(
            "size {size_bytes} bytes is not a usable volume size (1 byte to {} clusters of {} \
             bytes)",
            format::MAX_VOLUME_CLUSTERS,
            store.cluster_size
        )));
    }
    Ok(n)
}

use super::md::MdFut as BoxFut;

/// Allocate (zero-filled or copied from the parent chain) the clusters `lcs` of `uuid` and
/// persist their map pages; the entries are published when durable. Holds the lock.
async fn allocate_clusters(md: &Md, uuid: Uuid, lcs: &[u64]) -> Result<(), BdevError> {
    for chunk in lcs.chunks(32) {
        let mut plan: Vec<(u64, u32, Fill)> = Vec::new();
        {
            let mut st = md.st.borrow_mut();
            for &lc in chunk {
                let view = Arc::clone(&st.vols[&uuid].vol.view);
                let cur = st.vols[&uuid].entries[lc as usize];
                let source = match (cur, view.read_target(lc)) {
                    (UNALLOC, ReadTarget::Phys(q)) => Some(q),
                    _ => None,
                };
                let taken = st.take_cluster(source);
                let paged =
                    taken.is_some() && Md::ensure_page(&mut st, uuid, lc / ENTRIES_PER_PAGE as u64);
                if !paged {
                    if let Some((p, f)) = taken {
                        st.untake_cluster(p, f);
                    }
                    for &(_, p, f) in &plan {
                        st.untake_cluster(p, f);
                    }
                    return Err(nospace(if taken.is_none() {
                        "allocating volume clusters"
                    } else {
                        "allocating metadata pages"
                    }));
                }
                let (phys, fill) = taken.expect("checked above");
                plan.push((lc, phys, fill));
            }
        }
        let preps: Vec<BoxFut<'_>> = plan
            .iter()
            .filter(|&&(_, _, f)| f != Fill::Clean)
            .map(|&(_, p, f)| Box::pin(md.prepare_cluster(p, f)) as BoxFut<'_>)
            .collect();
        join_all(preps)
            .await
            .into_iter()
            .collect::<Result<(), _>>()?;
        {
            let mut st = md.st.borrow_mut();
            let v = st
                .vols
                .get_mut(&uuid)
                .expect("volume present under the lock");
            for &(lc, p, _) in &plan {
                v.entries[lc as usize] = p;
            }
        }
        let pages: BTreeSet<u64> = plan
            .iter()
            .map(|&(lc, _, _)| lc / ENTRIES_PER_PAGE as u64)
            .collect();
        for p in pages {
            md.write_map_page(uuid, p).await?;
        }
        md.flush().await?;
        let view = Arc::clone(&md.st.borrow().vols[&uuid].vol.view);
        for &(lc, p, _) in &plan {
            view.publish(lc, p);
        }
        md.report(uuid);
    }
    Ok(())
}

/// Create a volume of `size_bytes` (rounded up to clusters) named `name`.
pub async fn create(
    store: &Arc<StoreShared>,
    name: &str,
    size_bytes: u64,
    thin: bool,
) -> Result<Arc<Volume>, BdevError> {
    check_name(name).map_err(BdevError::Invalid)?;
    let md = md_of(store)?;
    let n = clusters_for(store, size_bytes)?;
    let _g = md.lock.lock().await;
    let uuid = Uuid::new_random();
    let vol = {
        let mut st = md.st.borrow_mut();
        if st.vols.values().any(|v| v.desc.name == name) {
            return Err(BdevError::Exists(format!("{}/{name}", store.name())));
        }
        if !thin && st.clusters.free() < n {
            return Err(nospace(&format!("thick volume {name} of {n} clusters")));
        }
        let pair = st
            .pairs
            .alloc()
            .ok_or_else(|| nospace("volume descriptor page"))?;
        let desc = VolumeDesc {
            generation: 0,
            uuid,
            name: name.to_string(),
            num_clusters: n,
            flags: if thin { FLAG_THIN } else { 0 },
            parent: None,
            map_id: st.next_map_id,
            seq: st.next_seq,
            pending_child: None,
        };
        st.next_map_id += 1;
        st.next_seq += 1;
        let entries = vec![UNALLOC; n as usize];
        let vol = make_volume(store, &desc, &entries, None);
        st.vols.insert(
            uuid,
            VolMd {
                desc,
                desc_loc: Loc { pair, cur: None },
                entries,
                pages: Default::default(),
                vol: Arc::clone(&vol),
            },
        );
        vol
    };
    let res = async {
        if !thin {
            let all: Vec<u64> = (0..n).collect();
            allocate_clusters(&md, uuid, &all).await?;
        }
        // The descriptor is the commit point: without it the map pages are orphans.
        md.write_desc(uuid).await?;
        md.flush().await
    }
    .await;
    if let Err(e) = res {
        forget_volume(&md, uuid);
        return Err(e);
    }
    md.report(uuid);
    lock(&store.volumes).push(Arc::clone(&vol));
    if let Err(e) = register_bdev(&vol) {
        log::error!("lvol {}: bdev registration failed: {e}", vol.alias());
    }
    log::info!(
        "lvol {} created: uuid {uuid}, {n} clusters, {}",
        vol.alias(),
        if thin { "thin" } else { "thick" }
    );
    Ok(vol)
}

/// Drop volume `uuid` from memory (its pairs and clusters are freed without disk writes;
/// use after a failed create only).
fn forget_volume(md: &Md, uuid: Uuid) {
    let mut st = md.st.borrow_mut();
    if let Some(v) = st.vols.remove(&uuid) {
        st.pairs.clear(v.desc_loc.pair);
        for l in v.pages.values() {
            st.pairs.clear(l.pair);
        }
        for e in v.entries {
            if e < ZERO {
                st.clusters.clear(u64::from(e));
            }
        }
    }
}

/// Delete a volume (refused while clones depend on it).
pub async fn delete(vol: &Arc<Volume>) -> Result<(), BdevError> {
    let md = md_of(&vol.store)?;
    let uuid = vol.uuid;
    {
        let st = md.st.borrow();
        if let Some(c) = st.vols.values().find(|v| v.desc.parent == Some(uuid)) {
            return Err(BdevError::Os {
                context: format!("lvol {}", vol.alias()),
                message: format!("clone {} depends on it", c.desc.name),
                errno: libc::EBUSY,
            });
        }
    }
    unregister_bdev(vol).await;
    let _g = md.lock.lock().await;
    let Some(v) = md.st.borrow_mut().vols.remove(&uuid) else {
        return Err(BdevError::NotFound(format!("lvol {uuid}")));
    };
    lock(&vol.store.volumes).retain(|x| x.uuid != uuid);
    // Descriptor first (older copy, then newest: an old copy never outlives the newest).
    let base = super::format::MD_START_PAGE + 2 * v.desc_loc.pair;
    let order = match v.desc_loc.cur {
        Some(1) => [base, base + 1],
        _ => [base + 1, base],
    };
    for p in order {
        md.zero_raw(p).await?;
    }
    md.flush().await?;
    md.st.borrow_mut().pairs.clear(v.desc_loc.pair);
    for l in v.pages.values() {
        md.free_pair(l.pair).await?;
    }
    {
        let mut st = md.st.borrow_mut();
        for e in &v.entries {
            if *e < ZERO {
                st.clusters.clear(u64::from(*e));
            }
        }
        md.shared
            .free_clusters
            .store(st.clusters.free(), Ordering::Relaxed);
        // space came back: a new out-of-space episode gets logged again
        for other in st.vols.values() {
            other.vol.nospace_logged.store(false, Ordering::Relaxed);
        }
    }
    log::info!("lvol {} ({uuid}) deleted", vol.alias());
    Ok(())
}

/// Grow or shrink a volume to `size_bytes` (rounded up to clusters), in place: the volume's
/// bdev stays registered and its open descriptors get [`crate::BdevEvent::Resize`].
///
/// Growing publishes the new bdev size only once the larger map is installed (every core reads
/// the one shared table) and the new descriptor is durable, so no I/O reaches the new blocks
/// before they exist. Shrinking publishes the smaller size at the commit point (the durable
/// descriptor), before the map shrinks: from then on the bdev layer refuses I/O beyond the new
/// end, I/O already past that check finds no cluster there (reads see zeroes, writes fail),
/// and the clusters beyond the end are freed only after every I/O that may still use them has
/// drained.
pub async fn resize(vol: &Arc<Volume>, size_bytes: u64) -> Result<(), BdevError> {
    let md = md_of(&vol.store)?;
    let n = clusters_for(&vol.store, size_bytes)?;
    if vol.info().snapshot {
        return Err(BdevError::Invalid("a snapshot cannot be resized".into()));
    }
    let freed = resize_locked(&md, vol, n).await?;
    // Outside the lock: draining I/O may be waiting for an allocation, which takes it.
    md.free_after_drain(freed).await;
    md.report(vol.uuid);
    Ok(())
}

/// Publish the size of `vol` (`n` clusters) to its bdev, if registered.
fn publish_size(vol: &Volume, n: u64) {
    let Some(bdev) = keel_bdev::get_bdev(&vol.uuid.to_string()) else {
        return;
    };
    let blocks = n.saturating_mul(vol.store.blocks_per_cluster);
    if let Err(e) = bdev.resize(blocks) {
        log::error!(
            "lvol {}: publishing the size of {n} clusters: {e}",
            vol.alias()
        );
    }
}

/// The metadata part of [`resize`]; returns the physical clusters to free once I/O drained.
async fn resize_locked(md: &Md, vol: &Arc<Volume>, n: u64) -> Result<Vec<u32>, BdevError> {
    let _g = md.lock.lock().await;
    let uuid = vol.uuid;
    let (old, thin) = {
        let st = md.st.borrow();
        let v = &st.vols[&uuid];
        (v.entries.len() as u64, v.desc.flags & FLAG_THIN != 0)
    };
    let mut freed_clusters = Vec::new();
    if n > old {
        {
            let mut st = md.st.borrow_mut();
            if !thin && st.clusters.free() < n - old {
                return Err(nospace("growing a thick volume"));
            }
            let v = st.vols.get_mut(&uuid).expect("present");
            v.entries.resize(n as usize, UNALLOC);
            let parent = unsafe_parent(&v.vol.view);
            v.vol.view.replace(MapTable::new(&v.entries, parent));
        }
        if !thin {
            let lcs: Vec<u64> = (old..n).collect();
            allocate_clusters(md, uuid, &lcs).await?;
        }
        md.st
            .borrow_mut()
            .vols
            .get_mut(&uuid)
            .expect("present")
            .desc
            .num_clusters = n;
        md.write_desc(uuid).await?;
        md.flush().await?;
        publish_size(vol, n);
    } else if n < old {
        // The smaller size is the commit point; entries beyond it are ignored from then on.
        md.st
            .borrow_mut()
            .vols
            .get_mut(&uuid)
            .expect("present")
            .desc
            .num_clusters = n;
        md.write_desc(uuid).await?;
        md.flush().await?;
        // New I/O beyond the end is refused from here on, before the map loses those clusters.
        publish_size(vol, n);
        let (freed, drop_pages, keep_last) = {
            let mut st = md.st.borrow_mut();
            let v = st.vols.get_mut(&uuid).expect("present");
            let freed: Vec<u32> = v.entries[n as usize..]
                .iter()
                .copied()
                .filter(|&e| e < ZERO)
                .collect();
            v.entries.truncate(n as usize);
            let parent = unsafe_parent(&v.vol.view);
            v.vol.view.replace(MapTable::new(&v.entries, parent));
            let epp = ENTRIES_PER_PAGE as u64;
            let last = (n - 1) / epp;
            let drop_pages: Vec<(u64, Loc)> = v
                .pages
                .iter()
                .filter(|(&i, _)| i > last)
                .map(|(&i, &l)| (i, l))
                .collect();
            for (i, _) in &drop_pages {
                v.pages.remove(i);
            }
            let keep_last = v.pages.contains_key(&last).then_some(last);
            (freed, drop_pages, keep_last)
        };
        if let Some(last) = keep_last {
            md.write_map_page(uuid, last).await?;
        }
        for (_, l) in drop_pages {
            md.free_pair(l.pair).await?;
        }
        md.flush().await?;
        freed_clusters = freed;
    }
    lock(&vol.info).num_clusters = n;
    md.report(uuid);
    log::info!("lvol {} resized to {n} clusters", vol.alias());
    Ok(freed_clusters)
}

/// The parent of a view's current table.
fn unsafe_parent(view: &VolView) -> Option<Arc<VolView>> {
    // SAFETY: the table is used within this call only.
    unsafe { view.table() }.parent().cloned()
}

/// Rename a volume within its store. Its bdev stays registered and only changes its alias
/// (`lvs_name/lvol_name`) in place, so open descriptors (an NVMe-oF namespace) keep working.
pub async fn rename(vol: &Arc<Volume>, new_name: &str) -> Result<(), BdevError> {
    check_name(new_name).map_err(BdevError::Invalid)?;
    let md = md_of(&vol.store)?;
    let _g = md.lock.lock().await;
    let old_alias = vol.alias();
    check_alias_free(vol, &format!("{}/{new_name}", vol.store.name()))?;
    let old_name = {
        let mut st = md.st.borrow_mut();
        if st.vols.values().any(|v| v.desc.name == new_name) {
            return Err(BdevError::Exists(format!(
                "{}/{new_name}",
                vol.store.name()
            )));
        }
        let v = st
            .vols
            .get_mut(&vol.uuid)
            .ok_or_else(|| BdevError::NotFound(format!("lvol {}", vol.uuid)))?;
        std::mem::replace(&mut v.desc.name, new_name.to_string())
    };
    if let Err(e) = async {
        md.write_desc(vol.uuid).await?;
        md.flush().await
    }
    .await
    {
        // the name on disk is either one; keep answering to the old one until a reload
        if let Some(v) = md.st.borrow_mut().vols.get_mut(&vol.uuid) {
            v.desc.name = old_name;
        }
        return Err(e);
    }
    lock(&vol.info).name = new_name.to_string();
    update_alias(vol, &old_alias)?;
    log::info!("lvol {old_alias} ({}) renamed to {}", vol.uuid, vol.alias());
    Ok(())
}

/// Take a read-only snapshot of `vol` named `name`: the snapshot takes over the volume's
/// clusters, and the volume becomes its clone (writes then copy on write).
pub async fn snapshot(vol: &Arc<Volume>, name: &str) -> Result<Arc<Volume>, BdevError> {
    check_name(name).map_err(BdevError::Invalid)?;
    let md = md_of(&vol.store)?;
    if vol.info().snapshot {
        return Err(BdevError::Invalid("cannot snapshot a snapshot".into()));
    }
    // Quiesce the volume: new I/O waits in the channels, the rest drains.
    vol.view.frozen.store(true, Ordering::Release);
    md.drain().await;
    let res = snapshot_locked(&md, vol, name).await;
    vol.view.frozen.store(false, Ordering::Release);
    keel_bdev::modules::stack::wake_all_cores();
    let snap = res?;
    lock(&vol.store.volumes).push(Arc::clone(&snap));
    if let Err(e) = register_bdev(&snap) {
        log::error!("snapshot {}: bdev registration failed: {e}", snap.alias());
    }
    log::info!("lvol {}: snapshot {} taken", vol.alias(), snap.alias());
    Ok(snap)
}

async fn snapshot_locked(md: &Md, vol: &Arc<Volume>, name: &str) -> Result<Arc<Volume>, BdevError> {
    let _g = md.lock.lock().await;
    let store = &vol.store;
    let suuid = Uuid::new_random();
    let origin = vol.uuid;
    let new_map;
    {
        let mut st = md.st.borrow_mut();
        if st.vols.values().any(|v| v.desc.name == name) {
            return Err(BdevError::Exists(format!("{}/{name}", store.name())));
        }
        let pair = st
            .pairs
            .alloc()
            .ok_or_else(|| nospace("snapshot descriptor"))?;
        new_map = st.next_map_id;
        st.next_map_id += 1;
        let seq = st.next_seq;
        st.next_seq += 1;
        let o = &st.vols[&origin];
        let desc = VolumeDesc {
            generation: 0,
            uuid: suuid,
            name: name.to_string(),
            num_clusters: o.desc.num_clusters,
            flags: FLAG_SNAPSHOT | (o.desc.flags & FLAG_THIN),
            parent: o.desc.parent,
            map_id: o.desc.map_id,
            seq,
            pending_child: Some((origin, new_map)),
        };
        let parent_view = unsafe_parent(&o.vol.view);
        let snap = make_volume(store, &desc, &o.entries, parent_view);
        let sm = VolMd {
            desc,
            desc_loc: Loc { pair, cur: None },
            entries: o.entries.clone(),
            pages: o.pages.clone(),
            vol: snap,
        };
        st.vols.insert(suuid, sm);
    }
    // Commit point: the snapshot descriptor (it names the origin's pending move).
    if let Err(e) = async {
        md.write_desc(suuid).await?;
        md.flush().await
    }
    .await
    {
        let mut st = md.st.borrow_mut();
        if let Some(s) = st.vols.remove(&suuid) {
            st.pairs.clear(s.desc_loc.pair);
        }
        return Err(e);
    }
    let snap_vol = {
        let mut st = md.st.borrow_mut();
        let snap_view = Arc::clone(&st.vols[&suuid].vol.view);
        let snap_vol = Arc::clone(&st.vols[&suuid].vol);
        let o = st.vols.get_mut(&origin).expect("present");
        let n = o.entries.len();
        o.entries = vec![UNALLOC; n];
        o.pages.clear();
        o.desc.map_id = new_map;
        o.desc.parent = Some(suuid);
        o.vol
            .view
            .replace(MapTable::new(&o.entries, Some(snap_view)));
        let mut info = lock(&o.vol.info);
        info.parent = Some(suuid);
        info.allocated = 0;
        snap_vol
    };
    md.write_desc(origin).await?;
    md.flush().await?;
    md.report(suuid);
    md.report(origin);
    Ok(snap_vol)
}

/// Create a thin clone named `name` of the snapshot `snap`.
pub async fn clone(snap: &Arc<Volume>, name: &str) -> Result<Arc<Volume>, BdevError> {
    check_name(name).map_err(BdevError::Invalid)?;
    let md = md_of(&snap.store)?;
    if !snap.info().snapshot {
        return Err(BdevError::Invalid(format!(
            "{} is not a snapshot",
            snap.alias()
        )));
    }
    let store = &snap.store;
    let _g = md.lock.lock().await;
    let uuid = Uuid::new_random();
    let vol = {
        let mut st = md.st.borrow_mut();
        if st.vols.values().any(|v| v.desc.name == name) {
            return Err(BdevError::Exists(format!("{}/{name}", store.name())));
        }
        let pair = st
            .pairs
            .alloc()
            .ok_or_else(|| nospace("clone descriptor"))?;
        let n = st.vols[&snap.uuid].entries.len();
        let desc = VolumeDesc {
            generation: 0,
            uuid,
            name: name.to_string(),
            num_clusters: n as u64,
            flags: FLAG_THIN,
            parent: Some(snap.uuid),
            map_id: st.next_map_id,
            seq: st.next_seq,
            pending_child: None,
        };
        st.next_map_id += 1;
        st.next_seq += 1;
        let entries = vec![UNALLOC; n];
        let vol = make_volume(store, &desc, &entries, Some(Arc::clone(&snap.view)));
        st.vols.insert(
            uuid,
            VolMd {
                desc,
                desc_loc: Loc { pair, cur: None },
                entries,
                pages: Default::default(),
                vol: Arc::clone(&vol),
            },
        );
        vol
    };
    if let Err(e) = async {
        md.write_desc(uuid).await?;
        md.flush().await
    }
    .await
    {
        forget_volume(&md, uuid);
        return Err(e);
    }
    lock(&store.volumes).push(Arc::clone(&vol));
    if let Err(e) = register_bdev(&vol) {
        log::error!("clone {}: bdev registration failed: {e}", vol.alias());
    }
    log::info!("lvol {} cloned from {}", vol.alias(), snap.alias());
    Ok(vol)
}

/// Copy what the volume reads from its parents into its own clusters and detach it from
/// them. `all`: also allocate (zeroed) every other cluster (SPDK's inflate); otherwise only
/// the clusters the parents hold (decouple).
pub async fn detach_parent(vol: &Arc<Volume>, all: bool) -> Result<(), BdevError> {
    let md = md_of(&vol.store)?;
    let _g = md.lock.lock().await;
    let uuid = vol.uuid;
    let lcs: Vec<u64> = {
        let st = md.st.borrow();
        let v = &st.vols[&uuid];
        if v.desc.parent.is_none() && !all {
            return Err(BdevError::Invalid(format!("{} has no parent", vol.alias())));
        }
        (0..v.entries.len() as u64)
            .filter(|&lc| {
                let e = v.entries[lc as usize];
                e >= ZERO
                    && (all
                        || (e == UNALLOC
                            && matches!(v.vol.view.read_target(lc), ReadTarget::Phys(_))))
            })
            .collect()
    };
    allocate_clusters(&md, uuid, &lcs).await?;
    let zero_pages: Vec<u64> = {
        let mut st = md.st.borrow_mut();
        let v = st.vols.get_mut(&uuid).expect("present");
        let mut pages = BTreeSet::new();
        for (lc, e) in v.entries.iter_mut().enumerate() {
            if *e == ZERO {
                *e = UNALLOC;
                pages.insert(lc as u64 / ENTRIES_PER_PAGE as u64);
            }
        }
        v.desc.parent = None;
        if all {
            v.desc.flags &= !FLAG_THIN;
        }
        pages.into_iter().collect()
    };
    for p in zero_pages {
        md.write_map_page(uuid, p).await?;
    }
    md.write_desc(uuid).await?;
    md.flush().await?;
    {
        let st = md.st.borrow();
        let v = &st.vols[&uuid];
        v.vol.view.replace(MapTable::new(&v.entries, None));
    }
    {
        let mut info = lock(&vol.info);
        info.parent = None;
        if all {
            info.thin = false;
        }
    }
    md.report(uuid);
    log::info!(
        "lvol {}: {} from its parent",
        vol.alias(),
        if all { "inflated" } else { "decoupled" }
    );
    Ok(())
}
