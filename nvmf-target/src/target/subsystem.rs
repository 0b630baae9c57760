//! Subsystems (NVM and discovery) and their namespaces. Control path: the mutable part sits
//! behind a mutex that the I/O path never takes.

use super::ctrlr::CtrlrShared;
use crate::transport::ListenAddr;
use keel_bdev::{BdevDesc, Uuid};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

/// Highest dynamic controller id (NVMe-oF: 0xFFF0..0xFFFE are reserved, 0xFFFF means dynamic).
pub(crate) const MAX_CNTLID: u16 = 0xFFEF;

/// Kind of subsystem.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum SubsysKind {
    /// The discovery subsystem (serves log page 0x70, no namespaces, no I/O queues).
    Discovery,
    /// An NVM subsystem.
    Nvm,
}

/// One namespace: a bdev opened for writing, with its identifiers.
pub(crate) struct Namespace {
    /// Process-unique instance id (distinguishes a namespace re-added under the same nsid).
    pub instance: u64,
    /// Namespace id (1-based).
    pub nsid: u32,
    /// Name of the backing bdev as given.
    pub bdev_name: String,
    /// Namespace UUID.
    pub uuid: Uuid,
    /// Namespace globally unique identifier (defaults to the UUID bytes).
    pub nguid: [u8; 16],
    /// IEEE EUI-64 (zero when not set).
    pub eui64: [u8; 8],
    /// Logical block size (bytes).
    pub block_size: u32,
    /// Whether deallocated blocks read back as zeroes.
    pub reads_zeroes_after_unmap: bool,
    /// Whether the bdev supports unmap (Dataset Management deallocate).
    pub supports_unmap: bool,
    /// The open descriptor (closed when the last holder drops the namespace).
    pub desc: BdevDesc,
}

impl Namespace {
    /// Current number of logical blocks (the bdev's live size: it follows a resize).
    #[inline]
    pub fn num_blocks(&self) -> u64 {
        self.desc.bdev().num_blocks()
    }
}

impl std::fmt::Debug for Namespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Namespace")
            .field("nsid", &self.nsid)
            .field("bdev", &self.bdev_name)
            .finish()
    }
}

static NEXT_INSTANCE: AtomicU64 = AtomicU64::new(1);

/// A fresh namespace instance id.
pub(crate) fn next_instance() -> u64 {
    NEXT_INSTANCE.fetch_add(1, Ordering::Relaxed)
}

/// The mutable configuration and runtime membership of a subsystem.
#[derive(Debug)]
pub(crate) struct SubsysInner {
    /// Serial number (Identify SN, ≤ 20 ASCII characters).
    pub serial: String,
    /// Model number (Identify MN, ≤ 40 ASCII characters).
    pub model: String,
    /// Highest nsid allowed (Identify NN).
    pub max_namespaces: u32,
    /// Whether any host may connect.
    pub allow_any_host: bool,
    /// Accepted for SPDK compatibility (ANA is not reported).
    pub ana_reporting: bool,
    /// Allowed host NQNs (when `allow_any_host` is false).
    pub hosts: Vec<String>,
    /// Addresses this subsystem may be reached at.
    pub listeners: Vec<ListenAddr>,
    /// Namespaces by nsid.
    pub namespaces: BTreeMap<u32, Arc<Namespace>>,
    /// Live controllers by cntlid.
    pub controllers: BTreeMap<u16, Arc<CtrlrShared>>,
    /// Next cntlid to try.
    next_cntlid: u16,
    /// The controller ids this subsystem hands out (`min_cntlid..=max_cntlid`; SPDK lets
    /// targets that export one subsystem over several paths use disjoint ranges).
    pub cntlid_range: (u16, u16),
    /// Set once the subsystem is being deleted: no new controllers.
    pub deleted: bool,
}

/// A subsystem (shared by all cores).
#[derive(Debug)]
pub(crate) struct Subsystem {
    /// Process-unique id (key of per-core tables).
    pub id: u64,
    /// Its NQN.
    pub nqn: String,
    /// NVM or discovery.
    pub kind: SubsysKind,
    inner: Mutex<SubsysInner>,
}

static NEXT_SUBSYS_ID: AtomicU64 = AtomicU64::new(1);

impl Subsystem {
    /// A new, empty subsystem.
    pub fn new(
        nqn: &str,
        kind: SubsysKind,
        serial: String,
        model: String,
        max_namespaces: u32,
        allow_any_host: bool,
    ) -> Subsystem {
        Subsystem {
            id: NEXT_SUBSYS_ID.fetch_add(1, Ordering::Relaxed),
            nqn: nqn.to_owned(),
            kind,
            inner: Mutex::new(SubsysInner {
                serial,
                model,
                max_namespaces,
                allow_any_host,
                ana_reporting: false,
                hosts: Vec::new(),
                listeners: Vec::new(),
                namespaces: BTreeMap::new(),
                controllers: BTreeMap::new(),
                next_cntlid: 1,
                cntlid_range: (1, MAX_CNTLID),
                deleted: false,
            }),
        }
    }

    /// Lock the mutable part (control path only).
    pub fn lock(&self) -> MutexGuard<'_, SubsysInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether this is the discovery subsystem.
    pub fn is_discovery(&self) -> bool {
        self.kind == SubsysKind::Discovery
    }

    /// Whether `hostnqn` may connect. An anonymous host (empty NQN) is admitted only when any
    /// host is allowed: it never matches a host list, whatever the list holds.
    pub fn host_allowed(&self, hostnqn: &str) -> bool {
        let g = self.lock();
        if g.allow_any_host {
            return true;
        }
        !hostnqn.is_empty() && g.hosts.iter().any(|h| h == hostnqn)
    }

    /// Whether connections accepted on `addr` may reach this subsystem (the discovery
    /// subsystem is reachable through every listener).
    pub fn listener_allowed(&self, addr: &ListenAddr) -> bool {
        self.is_discovery() || self.lock().listeners.iter().any(|l| l == addr)
    }

    /// The namespace `nsid`, if active.
    pub fn namespace(&self, nsid: u32) -> Option<Arc<Namespace>> {
        self.lock().namespaces.get(&nsid).cloned()
    }

    /// Every active namespace, in nsid order.
    pub fn namespaces(&self) -> Vec<Arc<Namespace>> {
        self.lock().namespaces.values().cloned().collect()
    }

    /// Register a new controller under a fresh cntlid (1..=0xFFEF, unique in the subsystem);
    /// `make` builds it from the id. `None` when the subsystem is being deleted or all ids
    /// are taken.
    pub fn add_controller(
        &self,
        make: impl FnOnce(u16) -> Arc<CtrlrShared>,
    ) -> Option<Arc<CtrlrShared>> {
        let mut g = self.lock();
        let (min, max) = g.cntlid_range;
        debug_assert!(1 <= min && min <= max && max <= MAX_CNTLID);
        if g.deleted || g.controllers.len() > usize::from(max - min) {
            return None;
        }
        let next = |id: u16| if id >= max { min } else { id + 1 };
        let mut id = g.next_cntlid.clamp(min, max);
        while g.controllers.contains_key(&id) {
            id = next(id);
        }
        g.next_cntlid = next(id);
        let c = make(id);
        g.controllers.insert(id, Arc::clone(&c));
        Some(c)
    }

    /// Forget controller `cntlid`.
    pub fn remove_controller(&self, cntlid: u16) {
        self.lock().controllers.remove(&cntlid);
    }

    /// Controller `cntlid`, if live.
    pub fn controller(&self, cntlid: u16) -> Option<Arc<CtrlrShared>> {
        self.lock().controllers.get(&cntlid).cloned()
    }

    /// Every live controller.
    pub fn controllers(&self) -> Vec<Arc<CtrlrShared>> {
        self.lock().controllers.values().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::{AdrFam, TrType};

    fn addr(port: &str) -> ListenAddr {
        ListenAddr {
            trtype: TrType::Tcp,
            adrfam: AdrFam::Ipv4,
            traddr: "127.0.0.1".into(),
            trsvcid: port.into(),
        }
    }

    #[test]
    fn hosts_and_listeners_are_checked() {
        let s = Subsystem::new(
            "nqn.x:a",
            SubsysKind::Nvm,
            "SN".into(),
            "MN".into(),
            4,
            false,
        );
        assert!(!s.host_allowed("nqn.h:1"));
        s.lock().hosts.push("nqn.h:1".into());
        assert!(s.host_allowed("nqn.h:1"));
        assert!(!s.host_allowed("nqn.h:2"));
        // An anonymous host never matches a list, even one that somehow holds "".
        assert!(!s.host_allowed(""));
        s.lock().hosts.push(String::new());
        assert!(!s.host_allowed(""));
        s.lock().allow_any_host = true;
        assert!(s.host_allowed("nqn.h:2"));
        assert!(s.host_allowed(""));
        assert!(!s.listener_allowed(&addr("4420")));
        s.lock().listeners.push(addr("4420"));
        assert!(s.listener_allowed(&addr("4420")));
        assert!(!s.listener_allowed(&addr("4421")));
        let d = Subsystem::new(
            "nqn.d",
            SubsysKind::Discovery,
            "".into(),
            "".into(),
            0,
            true,
        );
        assert!(d.listener_allowed(&addr("9")));
    }
}
