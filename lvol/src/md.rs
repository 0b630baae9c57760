//! The metadata core of an lvstore: the authoritative maps and allocation bitmaps, page writes
//! (A/B slots), the batched cluster allocation engine and grace periods.
//!
//! Everything here runs on the store's metadata core. Transactions (an allocation batch, a
//! volume create, a resize, ...) hold [`Md::lock`] so they run one at a time; requests from
//! other cores arrive as messages ([`request`]) and wait in a queue, so all requests that
//! arrived while a transaction was running become the next batch: one map page write per
//! touched page, one flush.

use super::alloc::Bitmap;
use super::fill::{self, Fill};
use super::format::{
    self, MapPage, Superblock, VolumeDesc, ENTRIES_PER_PAGE, MD_START_PAGE, PAGE_SIZE, UNALLOC,
    ZERO,
};
use super::map::ReadTarget;
use super::mdio::{self, buf_iov, LocalLock, MdIo};
use super::store::{StoreShared, Volume};
use keel_bdev::{BdevError, IoChannel, IoStatus, Uuid};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, HashSet};
use std::future::{poll_fn, Future};
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::task::{Poll, Waker};

/// Where a logical metadata page lives: its pair, and which slot holds its newest copy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Loc {
    /// Pair index in the metadata region.
    pub pair: u64,
    /// Slot (0/1) of the newest valid copy; `None` before the first write.
    pub cur: Option<u8>,
}

/// The metadata core's state of one volume.
pub struct VolMd {
    /// Its descriptor as last written.
    pub desc: VolumeDesc,
    /// Where the descriptor lives.
    pub desc_loc: Loc,
    /// Authoritative entries (length = size in clusters).
    pub entries: Vec<u32>,
    /// Map pages written so far, by page index.
    pub pages: BTreeMap<u64, Loc>,
    /// The shared volume.
    pub vol: Arc<Volume>,
}

impl VolMd {
    /// Clusters this volume owns.
    pub fn allocated(&self) -> u64 {
        self.entries.iter().filter(|&&e| e < ZERO).count() as u64
    }
}

/// The metadata core's mutable state.
pub struct MdState {
    /// The superblock as last written.
    pub sb: Superblock,
    /// Slot of the newest superblock copy.
    pub sb_slot: u8,
    /// Last generation used.
    pub gen: u64,
    /// Next map id.
    pub next_map_id: u64,
    /// Next creation sequence number.
    pub next_seq: u64,
    /// Data clusters in use.
    pub clusters: Bitmap,
    /// Free clusters known to read zeroes (a store created with a clear that guarantees zeroes,
    /// and clusters unmapped on such a base when freed): a new allocation of one skips the
    /// zero-fill. Memory only and empty after a load, so a cluster that may hold old data after
    /// a crash is never taken for zeroes.
    pub clean: Bitmap,
    /// Metadata pairs in use.
    pub pairs: Bitmap,
    /// Volumes by UUID.
    pub vols: HashMap<Uuid, VolMd>,
}

impl MdState {
    /// A fresh generation number.
    pub fn next_gen(&mut self) -> u64 {
        self.gen += 1;
        self.gen
    }

    /// Take a free cluster for a new allocation (`source`: the parent's cluster to copy) and say
    /// how to prepare it; `None` when none is free.
    pub fn take_cluster(&mut self, source: Option<u32>) -> Option<(u32, Fill)> {
        let phys = self.clusters.alloc()?;
        // whatever happens next, the cluster may be written: it is not clean any more
        let clean = self.clean.clear(phys);
        let fill = match source {
            Some(q) => Fill::Copy(q),
            None if clean => Fill::Clean,
            None => Fill::Zero,
        };
        Some((phys as u32, fill))
    }

    /// Give back a cluster from [`MdState::take_cluster`] before anything was written to it.
    pub fn untake_cluster(&mut self, phys: u32, fill: Fill) {
        self.clusters.clear(u64::from(phys));
        if fill == Fill::Clean {
            self.clean.set(u64::from(phys));
        }
    }
}

/// What a request from a submitting core asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReqKind {
    /// Give the cluster a physical cluster (zeroed, or copied from the parent chain).
    Alloc,
    /// Give the cluster's physical cluster back (it then reads as zeroes).
    Dealloc,
}

/// One request: which cluster, and where the answer goes.
pub struct Req {
    /// Volume.
    pub vol: Uuid,
    /// Logical cluster.
    pub lc: u64,
    /// What to do.
    pub kind: ReqKind,
    /// Core to answer on.
    pub core: u32,
    /// Opaque token handed back to `reply`.
    pub token: usize,
    /// Called on `core` with the token and the outcome.
    pub reply: fn(usize, IoStatus),
}

impl Req {
    fn answer(&self, status: IoStatus) {
        let (token, f) = (self.token, self.reply);
        if keel_reactor::current_core() == Some(self.core) {
            // Not inside the submitter's call: requests always arrive by message.
            f(token, status);
        } else if let Err(e) = keel_reactor::send_to(self.core, move || f(token, status)) {
            log::error!("lvol: cannot answer core {}: {e}", self.core);
        }
    }
}

/// A store's metadata core state.
pub struct Md {
    /// The shared store.
    pub shared: Arc<StoreShared>,
    /// Mutable state; never borrowed across an await.
    pub st: RefCell<MdState>,
    /// Serializes metadata transactions.
    pub lock: LocalLock,
    drain_lock: LocalLock,
    /// The metadata core's channel to the base.
    pub ch: IoChannel,
    reqs: RefCell<Vec<Req>>,
    engine_scheduled: Cell<bool>,
}

thread_local! {
    static MDS: RefCell<HashMap<u64, Rc<Md>>> = RefCell::new(HashMap::new());
}

/// The metadata state of store `id` (on its metadata core).
pub fn get(id: u64) -> Option<Rc<Md>> {
    MDS.with(|m| m.borrow().get(&id).cloned())
}

/// Forget store `id` on this core.
pub fn forget(id: u64) {
    let md = MDS.with(|m| m.borrow_mut().remove(&id));
    drop(md);
}

/// Send `req` to the metadata core of `store` (any core).
pub fn request(store: &Arc<StoreShared>, req: Req) {
    let id = store.id;
    let core = store.md_core;
    let run = move || match get(id) {
        Some(md) => md.enqueue(req),
        None => req.answer(IoStatus::Aborted),
    };
    if let Err(e) = keel_reactor::send_to(core, run) {
        log::error!("lvol: cannot reach metadata core {core}: {e}");
    }
}

/// A boxed metadata step.
pub type MdFut<'a> = Pin<Box<dyn Future<Output = Result<(), BdevError>> + 'a>>;

/// Run futures concurrently on this core; resolves when all are done.
pub async fn join_all<T>(futs: Vec<Pin<Box<dyn Future<Output = T> + '_>>>) -> Vec<T> {
    let mut futs: Vec<Option<Pin<Box<dyn Future<Output = T> + '_>>>> =
        futs.into_iter().map(Some).collect();
    let mut out: Vec<Option<T>> = futs.iter().map(|_| None).collect();
    poll_fn(|cx| {
        let mut pending = false;
        for (f, o) in futs.iter_mut().zip(out.iter_mut()) {
            if let Some(fut) = f {
                match fut.as_mut().poll(cx) {
                    Poll::Ready(v) => {
                        *o = Some(v);
                        *f = None;
                    }
                    Poll::Pending => pending = true,
                }
            }
        }
        if pending {
            Poll::Pending
        } else {
            Poll::Ready(())
        }
    })
    .await;
    out.into_iter().flatten().collect()
}

/// Wait until every reactor has run one iteration past now.
async fn core_round() {
    if keel_reactor::cores().is_empty() {
        return;
    }
    type Shared = Arc<Mutex<(bool, Option<Waker>)>>;
    let state: Shared = Arc::default();
    let s2 = Arc::clone(&state);
    let sent = keel_reactor::for_each_core(
        || {},
        move || {
            let mut g = super::store::lock(&s2);
            g.0 = true;
            if let Some(w) = g.1.take() {
                w.wake();
            }
        },
    );
    if sent.is_err() {
        return;
    }
    poll_fn(|cx| {
        let mut g = super::store::lock(&state);
        if g.0 {
            Poll::Ready(())
        } else {
            g.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    })
    .await
}

fn md_err(what: &str, status: IoStatus) -> BdevError {
    BdevError::Os {
        context: format!("lvstore metadata {what}"),
        message: format!("base I/O failed ({status:?})"),
        errno: libc::EIO,
    }
}

impl Md {
    /// Wrap loaded state; registers it on this core.
    pub fn install(shared: Arc<StoreShared>, st: MdState, ch: IoChannel) -> Rc<Md> {
        let md = Rc::new(Md {
            shared,
            st: RefCell::new(st),
            lock: LocalLock::default(),
            drain_lock: LocalLock::default(),
            ch,
            reqs: RefCell::new(Vec::new()),
            engine_scheduled: Cell::new(false),
        });
        MDS.with(|m| m.borrow_mut().insert(md.shared.id, Rc::clone(&md)));
        md
    }

    fn blocks_per_page(&self) -> u64 {
        PAGE_SIZE as u64 / u64::from(self.shared.block_size)
    }

    /// Write one raw page (4 KiB) at metadata page index `page`.
    pub async fn write_raw(&self, page: u64, bytes: &[u8; PAGE_SIZE]) -> Result<(), BdevError> {
        let mut buf = keel_reactor::pool::alloc(PAGE_SIZE)
            .map_err(|e| BdevError::NoMem(format!("lvol metadata buffer: {e}")))?;
        buf.as_mut_slice().copy_from_slice(bytes);
        let bpp = self.blocks_per_page();
        let s = mdio::io(&self.ch, MdIo::Write, &[buf_iov(&mut buf)], page * bpp, bpp).await;
        if s == IoStatus::Success {
            Ok(())
        } else {
            Err(md_err("write", s))
        }
    }

    /// Zero metadata page `page`.
    pub async fn zero_raw(&self, page: u64) -> Result<(), BdevError> {
        self.write_raw(page, &[0u8; PAGE_SIZE]).await
    }

    /// Write a logical page to the other slot of `loc`; returns the new location.
    pub async fn write_page(&self, loc: Loc, bytes: &[u8; PAGE_SIZE]) -> Result<Loc, BdevError> {
        let slot = match loc.cur {
            Some(s) => 1 - s,
            None => 0,
        };
        self.write_raw(MD_START_PAGE + 2 * loc.pair + u64::from(slot), bytes)
            .await?;
        Ok(Loc {
            pair: loc.pair,
            cur: Some(slot),
        })
    }

    /// Zero both slots of `pair` (one after the other, so a torn write leaves at most one bad
    /// slot) and free it.
    pub async fn free_pair(&self, pair: u64) -> Result<(), BdevError> {
        self.zero_raw(MD_START_PAGE + 2 * pair).await?;
        self.zero_raw(MD_START_PAGE + 2 * pair + 1).await?;
        self.st.borrow_mut().pairs.clear(pair);
        Ok(())
    }

    /// Flush the base (when it takes flushes).
    pub async fn flush(&self) -> Result<(), BdevError> {
        if !self.shared.base_flush {
            return Ok(());
        }
        match mdio::io(&self.ch, MdIo::Flush, &[], 0, 0).await {
            IoStatus::Success => Ok(()),
            s => Err(md_err("flush", s)),
        }
    }

    /// Write the superblock (with a new generation) to the other slot.
    pub async fn write_super(&self) -> Result<(), BdevError> {
        let (bytes, slot) = {
            let mut st = self.st.borrow_mut();
            st.sb.generation = st.next_gen();
            (format::encode_super(&st.sb), 1 - st.sb_slot)
        };
        self.write_raw(u64::from(slot), &bytes).await?;
        self.st.borrow_mut().sb_slot = slot;
        Ok(())
    }

    /// Write volume `uuid`'s descriptor (as in `st.vols`) with a new generation.
    pub async fn write_desc(&self, uuid: Uuid) -> Result<(), BdevError> {
        let (bytes, loc) = {
            let mut st = self.st.borrow_mut();
            let gen = st.next_gen();
            let lvs = st.sb.uuid;
            let v = st
                .vols
                .get_mut(&uuid)
                .ok_or_else(|| BdevError::NotFound(format!("lvol {uuid}")))?;
            v.desc.generation = gen;
            (format::encode_desc(lvs, &v.desc), v.desc_loc)
        };
        let loc = self.write_page(loc, &bytes).await?;
        if let Some(v) = self.st.borrow_mut().vols.get_mut(&uuid) {
            v.desc_loc = loc;
        }
        Ok(())
    }

    /// Write map page `index` of volume `uuid` from its authoritative entries. The page must
    /// have a pair (see [`Md::ensure_page`]).
    pub async fn write_map_page(&self, uuid: Uuid, index: u64) -> Result<(), BdevError> {
        let (bytes, loc) = {
            let mut st = self.st.borrow_mut();
            let gen = st.next_gen();
            let lvs = st.sb.uuid;
            let v = st
                .vols
                .get(&uuid)
                .ok_or_else(|| BdevError::NotFound(format!("lvol {uuid}")))?;
            let loc = *v.pages.get(&index).ok_or_else(|| {
                BdevError::Invalid(format!("lvol {uuid}: map page {index} has no pair"))
            })?;
            let mut page = MapPage::empty(v.desc.map_id, index);
            page.generation = gen;
            let first = index as usize * ENTRIES_PER_PAGE;
            let n = v.entries.len().saturating_sub(first).min(ENTRIES_PER_PAGE);
            page.entries[..n].copy_from_slice(&v.entries[first..first + n]);
            (format::encode_map(lvs, &page), loc)
        };
        let loc = self.write_page(loc, &bytes).await?;
        if let Some(v) = self.st.borrow_mut().vols.get_mut(&uuid) {
            v.pages.insert(index, loc);
        }
        Ok(())
    }

    /// Give map page `index` of `uuid` a pair if it has none; false when none is free.
    pub fn ensure_page(st: &mut MdState, uuid: Uuid, index: u64) -> bool {
        let has = st
            .vols
            .get(&uuid)
            .is_some_and(|v| v.pages.contains_key(&index));
        if has {
            return true;
        }
        let Some(pair) = st.pairs.alloc() else {
            return false;
        };
        if let Some(v) = st.vols.get_mut(&uuid) {
            v.pages.insert(index, Loc { pair, cur: None });
        }
        true
    }

    /// Prepare physical cluster `phys` as `fill` says (in bounded chunks, see `fill.rs`).
    pub async fn prepare_cluster(&self, phys: u32, fill: Fill) -> Result<(), BdevError> {
        fill::prepare(&self.shared, &self.ch, phys, fill).await
    }

    /// Wait until every I/O started before now on any core has finished (new I/O may start
    /// meanwhile; it is counted in the other epoch).
    pub async fn drain(&self) {
        let _g = self.drain_lock.lock().await;
        let old = (self.shared.epoch.fetch_add(1, Ordering::AcqRel) & 1) as usize;
        core_round().await;
        while self.shared.inflight_in(old) != 0 {
            mdio::yield_now().await;
        }
    }

    /// Refresh the shared reporting state of volume `uuid` and the store's free count.
    pub fn report(&self, uuid: Uuid) {
        let st = self.st.borrow();
        if let Some(v) = st.vols.get(&uuid) {
            let mut info = super::store::lock(&v.vol.info);
            info.allocated = v.allocated();
            info.num_clusters = v.entries.len() as u64;
        }
        self.shared
            .free_clusters
            .store(st.clusters.free(), Ordering::Relaxed);
    }

    /// Free physical clusters once no I/O that may still use them is in flight (in the
    /// background).
    pub fn free_later(self: &Rc<Self>, phys: Vec<u32>) {
        if phys.is_empty() {
            return;
        }
        let md = Rc::clone(self);
        keel_reactor::spawn_local(async move { md.free_after_drain(phys).await });
    }

    /// Free physical clusters once no I/O that may still use them is in flight, and wait for
    /// it. Must not be awaited while holding [`Md::lock`] (draining I/O may wait for it).
    pub async fn free_after_drain(&self, phys: Vec<u32>) {
        if phys.is_empty() {
            return;
        }
        self.drain().await;
        // Pass the unmap down: thin bases get the space back, and on a base whose unmapped
        // blocks read zeroes the cluster needs no zero-fill when it is allocated again. Nothing
        // on disk records that; after a crash the cluster is simply zero-filled again.
        let mut clean = Vec::new();
        if self.shared.base_unmap {
            for &p in &phys {
                if self.shared.closing.load(Ordering::Acquire) {
                    break;
                }
                match fill::unmap(&self.shared, &self.ch, p).await {
                    Ok(()) if self.shared.base_unmap_zeroes => clean.push(p),
                    Ok(()) => {}
                    Err(e) => log::warn!(
                        "lvstore {}: freed cluster {p} not unmapped: {e}",
                        self.shared.name()
                    ),
                }
            }
        }
        let vols: Vec<Arc<Volume>> = {
            let mut st = self.st.borrow_mut();
            for p in &phys {
                st.clusters.clear(u64::from(*p));
            }
            for p in clean {
                st.clean.set(u64::from(p));
            }
            self.shared
                .free_clusters
                .store(st.clusters.free(), Ordering::Relaxed);
            st.vols.values().map(|v| Arc::clone(&v.vol)).collect()
        };
        // space came back: a new out-of-space episode gets logged again
        for v in vols {
            v.nospace_logged.store(false, Ordering::Relaxed);
        }
    }

    fn enqueue(self: &Rc<Self>, req: Req) {
        self.reqs.borrow_mut().push(req);
        if !self.engine_scheduled.replace(true) {
            let md = Rc::clone(self);
            keel_reactor::spawn_local(async move { md.engine().await });
        }
    }

    async fn engine(self: Rc<Self>) {
        let guard = self.lock.lock().await;
        loop {
            let batch = std::mem::take(&mut *self.reqs.borrow_mut());
            if batch.is_empty() {
                break;
            }
            self.process(batch).await;
        }
        self.engine_scheduled.set(false);
        drop(guard);
    }

    /// One allocation transaction over every request that arrived.
    #[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one allocation transaction, read top to bottom
    async fn process(self: &Rc<Self>, batch: Vec<Req>) {
        // (vol, lc) → (new entry, old entry, how to prepare the new cluster)
        let mut changes: HashMap<(Uuid, u64), (u32, u32, Fill)> = HashMap::new();
        let mut waiting: Vec<Req> = Vec::new();
        let mut freed: Vec<u32> = Vec::new();
        {
            let mut st = self.st.borrow_mut();
            for req in batch {
                let Some(v) = st.vols.get(&req.vol) else {
                    req.answer(IoStatus::Aborted);
                    continue;
                };
                let Some(&cur) = v.entries.get(req.lc as usize) else {
                    req.answer(IoStatus::IoError);
                    continue;
                };
                let key = (req.vol, req.lc);
                if changes.contains_key(&key) {
                    waiting.push(req); // shares the allocation already planned
                    continue;
                }
                let vol = Arc::clone(&v.vol);
                let has_parent = v.desc.parent.is_some();
                let snapshot = v.desc.flags & format::FLAG_SNAPSHOT != 0;
                match req.kind {
                    ReqKind::Alloc if cur < ZERO => req.answer(IoStatus::Success),
                    ReqKind::Alloc if snapshot => req.answer(IoStatus::IoError),
                    ReqKind::Alloc => {
                        let source = match (cur, vol.view.read_target(req.lc)) {
                            (UNALLOC, ReadTarget::Phys(q)) => Some(q),
                            _ => None,
                        };
                        let Some((phys, fill)) = st.take_cluster(source) else {
                            vol.note_nospace();
                            req.answer(IoStatus::NoSpace);
                            continue;
                        };
                        if !Md::ensure_page(&mut st, req.vol, req.lc / ENTRIES_PER_PAGE as u64) {
                            st.untake_cluster(phys, fill);
                            log::error!(
                                "lvstore {}: no free metadata page for a new map page",
                                self.shared.name()
                            );
                            vol.note_nospace();
                            req.answer(IoStatus::NoSpace);
                            continue;
                        }
                        changes.insert(key, (phys, cur, fill));
                        waiting.push(req);
                    }
                    ReqKind::Dealloc => {
                        let target = if has_parent { ZERO } else { UNALLOC };
                        if cur == target {
                            req.answer(IoStatus::Success);
                            continue;
                        }
                        if !Md::ensure_page(&mut st, req.vol, req.lc / ENTRIES_PER_PAGE as u64) {
                            req.answer(IoStatus::NoSpace);
                            continue;
                        }
                        changes.insert(key, (target, cur, Fill::Clean));
                        waiting.push(req);
                    }
                }
            }
            for (&(u, lc), &(new, _, _)) in &changes {
                if let Some(v) = st.vols.get_mut(&u) {
                    v.entries[lc as usize] = new;
                }
            }
        }
        if changes.is_empty() {
            return;
        }
        // 1. prepare the new clusters (zero-fill or copy from the parent)
        let mut preps: Vec<MdFut<'_>> = Vec::new();
        for &(new, old, fill) in changes.values() {
            if new < ZERO && old >= ZERO && fill != Fill::Clean {
                preps.push(Box::pin(self.prepare_cluster(new, fill)));
            }
        }
        let mut result: Result<(), BdevError> =
            join_all(preps).await.into_iter().collect::<Result<(), _>>();
        // 2. one write per touched map page, then one flush
        if result.is_ok() {
            let pages: HashSet<(Uuid, u64)> = changes
                .keys()
                .map(|&(u, lc)| (u, lc / ENTRIES_PER_PAGE as u64))
                .collect();
            let writes: Vec<MdFut<'_>> = pages
                .iter()
                .map(|&(u, i)| Box::pin(self.write_map_page(u, i)) as MdFut<'_>)
                .collect();
            result = join_all(writes).await.into_iter().collect();
        }
        if result.is_ok() {
            result = self.flush().await;
        }
        let status = match &result {
            Ok(()) => IoStatus::Success,
            Err(e) => {
                log::error!(
                    "lvstore {}: cluster map update failed: {e}",
                    self.shared.name()
                );
                IoStatus::IoError
            }
        };
        // 3. publish (or roll back the in-memory change; clusters stay used until reload)
        {
            let mut st = self.st.borrow_mut();
            for (&(u, lc), &(new, old, _)) in &changes {
                let Some(v) = st.vols.get_mut(&u) else {
                    continue;
                };
                if status == IoStatus::Success {
                    v.vol.view.publish(lc, new);
                    if old < ZERO {
                        freed.push(old);
                    }
                } else {
                    v.entries[lc as usize] = old;
                }
            }
        }
        let touched: HashSet<Uuid> = changes.keys().map(|&(u, _)| u).collect();
        for u in touched {
            self.report(u);
        }
        for req in waiting {
            req.answer(status);
        }
        self.free_later(freed);
    }
}
