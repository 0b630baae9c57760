//! Controllers. A controller is created by a Fabrics Connect on an admin queue and lives on
//! that queue's core for its whole life ([`Controller`], `!Send`); the part other cores and
//! the RPCs need is [`CtrlrShared`]. I/O queues on other cores reach the controller by message
//! (Connect, queue loss); the controller reaches them by message too (disconnect).
//!
//! The controller holds: the controller registers (CC, CSTS), the feature values, outstanding
//! Asynchronous Event Requests and pending events, the changed-namespace list, the table of its
//! I/O queues, and the keep-alive timer (a timed poller on its core).

use super::identify::NVME_VERSION;
use super::qpair::{self, Qpair};
use super::subsystem::Subsystem;
use crate::request::ReqPtr;
use crate::transport::{ListenAddr, TransportOpts};
use keel_nvme::fabrics::{connect_data, connect_sqe, ConnectError};
use keel_nvme::registers::{Cap, PropSize, Registers};
use keel_nvme::status::Status;
use keel_reactor::{PollStatus, PollerId};
use std::cell::{Cell, RefCell};
use std::collections::{BTreeMap, HashMap, VecDeque};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// Most outstanding AERs a controller accepts (Identify AERL is this minus one).
pub(crate) const MAX_AERS: usize = 4;
/// Keep-alive granularity (Identify KAS, in 100 ms units).
pub(crate) const KAS_100MS: u16 = 1;
/// Keep-alive timeout of a discovery controller whose host asked for none (NVMe-oF: a
/// transport may fix a discovery activity timeout, e.g. two minutes).
pub(crate) const DISCOVERY_KATO_MS: u32 = 120_000;
/// Most entries of the Changed Namespace List log page.
pub(crate) const CHANGED_NS_MAX: usize = 1024;

/// AEN: notice / namespace attribute changed / log page 0x04.
pub(crate) const AEN_NS_ATTR_CHANGED: u32 = 0x02 | (0x04 << 16);
/// AEN: notice / discovery log page change / log page 0x70.
pub(crate) const AEN_DISCOVERY_CHANGE: u32 = 0x02 | (0xF0 << 8) | (0x70 << 16);
/// Async Event Configuration bit enabling namespace attribute notices.
pub(crate) const AEC_NS_ATTR: u32 = 1 << 8;
/// Async Event Configuration bit enabling discovery log change notices.
pub(crate) const AEC_DISCOVERY: u32 = 1 << 31;

/// CAP.TO: how long the host waits for CSTS.RDY, in 500 ms units (7.5 s).
pub(crate) const CAP_TIMEOUT_500MS: u8 = 15;

/// What every core may know about a controller.
#[derive(Debug)]
pub(crate) struct CtrlrShared {
    /// Controller id (unique in its subsystem).
    pub cntlid: u16,
    /// Its subsystem.
    pub subsys: Arc<Subsystem>,
    /// The host's NQN (from Connect).
    pub hostnqn: String,
    /// The host identifier (from Connect).
    pub hostid: [u8; 16],
    /// The core the controller (and its admin queue) lives on.
    pub core: u32,
    /// Connected I/O queues (for `nvmf_subsystem_get_controllers`).
    pub num_io_qpairs: AtomicU32,
}

/// Feature values (Get/Set Features).
#[derive(Debug, Clone)]
pub(crate) struct Features {
    pub arbitration: u32,
    pub power_mgmt: u32,
    pub temp_threshold: u32,
    pub error_recovery: u32,
    pub volatile_write_cache: bool,
    /// Granted queues: NSQA (15:0) | NCQA (31:16), both 0-based.
    pub num_queues: u32,
    pub int_coalescing: u32,
    pub write_atomicity: u32,
    pub async_event_config: u32,
    pub kato_ms: u32,
    /// Whether the host set Number of Queues already.
    pub num_queues_set: bool,
}

impl Features {
    /// Power-on defaults for a controller allowed `max_io_qpairs` I/O queues.
    pub fn defaults(max_io_qpairs: u16, kato_ms: u32) -> Features {
        let n = u32::from(max_io_qpairs.max(1) - 1);
        Features {
            arbitration: 0,
            power_mgmt: 0,
            // 85 °C in kelvins: a common default over-temperature threshold.
            temp_threshold: 358,
            error_recovery: 0,
            volatile_write_cache: true,
            num_queues: n | (n << 16),
            int_coalescing: 0,
            write_atomicity: 0,
            async_event_config: 0,
            kato_ms,
            num_queues_set: false,
        }
    }
}

/// One I/O queue of a controller, as the controller sees it.
#[derive(Debug, Clone)]
pub(crate) struct IoQpairRef {
    /// Core of the queue.
    pub core: u32,
    /// Queue pair id (per-core registry key).
    pub qpair_id: u64,
    /// Where the connection was accepted.
    pub listen: ListenAddr,
    /// The peer's address.
    pub peer: String,
}

/// One row of `nvmf_subsystem_get_qpairs` (Send: gathered by message).
#[derive(Debug, Clone)]
pub(crate) struct QpairInfo {
    pub cntlid: u16,
    pub qid: u16,
    /// The core (reactor thread) the queue pair runs on.
    pub core: u32,
    pub hostnqn: String,
    pub listen: ListenAddr,
    pub peer: String,
}

/// A controller, on its admin queue's core.
pub(crate) struct Controller {
    pub shared: Arc<CtrlrShared>,
    admin: Weak<Qpair>,
    admin_listen: ListenAddr,
    admin_peer: String,
    /// The options of the transport the admin queue came through.
    pub topts: TransportOpts,
    regs: RefCell<Registers>,
    pub feat: RefCell<Features>,
    aers: RefCell<Vec<ReqPtr>>,
    events: RefCell<VecDeque<u32>>,
    ns_notice_masked: Cell<bool>,
    disc_notice_masked: Cell<bool>,
    changed_ns: RefCell<Vec<u32>>,
    changed_overflow: Cell<bool>,
    io_qpairs: RefCell<BTreeMap<u16, IoQpairRef>>,
    last_activity: Cell<u64>,
    kato_ticks: Cell<u64>,
    poller: Cell<Option<PollerId>>,
    destroyed: Cell<bool>,
}

thread_local! {
    /// This core's controllers by (subsystem id, cntlid).
    static CTRLRS: RefCell<HashMap<(u64, u16), Rc<Controller>>> = RefCell::new(HashMap::new());
}

/// This core's controller `cntlid` of subsystem `subsys_id`.
pub(crate) fn lookup(subsys_id: u64, cntlid: u16) -> Option<Rc<Controller>> {
    CTRLRS.with(|m| m.borrow().get(&(subsys_id, cntlid)).cloned())
}

/// A host NQN for logs: an anonymous host (empty NQN) reads "(anonymous host)".
pub(crate) fn host_label(hostnqn: &str) -> &str {
    if hostnqn.is_empty() {
        "(anonymous host)"
    } else {
        hostnqn
    }
}

/// Round a KATO up to the keep-alive granularity.
pub(crate) fn round_kato(ms: u32) -> u32 {
    let unit = u32::from(KAS_100MS) * 100;
    ms.div_ceil(unit).saturating_mul(unit)
}

impl Controller {
    /// Create a controller for a Connect accepted on admin queue `admin`, register it in its
    /// subsystem and on this core, and start its keep-alive timer. `None` when the subsystem
    /// is being deleted or has no free cntlid.
    pub fn create(
        subsys: &Arc<Subsystem>,
        hostnqn: String,
        hostid: [u8; 16],
        kato_ms: u32,
        admin: &Rc<Qpair>,
        topts: TransportOpts,
    ) -> Option<Rc<Controller>> {
        let core = keel_reactor::current_core().unwrap_or(0);
        let shared = subsys.add_controller(|cntlid| {
            Arc::new(CtrlrShared {
                cntlid,
                subsys: Arc::clone(subsys),
                hostnqn,
                hostid,
                core,
                num_io_qpairs: AtomicU32::new(0),
            })
        })?;
        let kato_ms = match (kato_ms, subsys.is_discovery()) {
            (0, true) => DISCOVERY_KATO_MS,
            (k, _) => round_kato(k),
        };
        let regs = Registers::new(
            Cap::fabrics(u32::from(topts.max_queue_depth), CAP_TIMEOUT_500MS),
            NVME_VERSION,
            !subsys.is_discovery(),
        );
        let ctrlr = Rc::new(Controller {
            feat: RefCell::new(Features::defaults(topts.max_io_qpairs_per_ctrlr, kato_ms)),
            topts,
            admin: Rc::downgrade(admin),
            admin_listen: admin.listen_addr().clone(),
            admin_peer: admin.peer(),
            shared,
            regs: RefCell::new(regs),
            aers: RefCell::new(Vec::with_capacity(MAX_AERS)),
            events: RefCell::new(VecDeque::new()),
            ns_notice_masked: Cell::new(false),
            disc_notice_masked: Cell::new(false),
            changed_ns: RefCell::new(Vec::new()),
            changed_overflow: Cell::new(false),
            io_qpairs: RefCell::new(BTreeMap::new()),
            last_activity: Cell::new(keel_reactor::ticks()),
            kato_ticks: Cell::new(0),
            poller: Cell::new(None),
            destroyed: Cell::new(false),
        });
        let key = (ctrlr.shared.subsys.id, ctrlr.shared.cntlid);
        CTRLRS.with(|m| m.borrow_mut().insert(key, Rc::clone(&ctrlr)));
        ctrlr.set_kato(kato_ms);
        log::info!(
            "nvmf: controller {} of {} created for host {} (kato {} ms)",
            ctrlr.shared.cntlid,
            ctrlr.shared.subsys.nqn,
            host_label(&ctrlr.shared.hostnqn),
            kato_ms
        );
        Some(ctrlr)
    }

    /// Controller id.
    pub fn cntlid(&self) -> u16 {
        self.shared.cntlid
    }
    /// Its subsystem.
    pub fn subsys(&self) -> &Arc<Subsystem> {
        &self.shared.subsys
    }
    /// Whether the controller is gone (destroyed).
    pub fn is_destroyed(&self) -> bool {
        self.destroyed.get()
    }

    /// (Re)arm the keep-alive timer for `kato_ms` (0: none).
    pub fn set_kato(self: &Rc<Self>, kato_ms: u32) {
        if let Some(id) = self.poller.take() {
            keel_reactor::unregister_poller(id);
        }
        self.feat.borrow_mut().kato_ms = kato_ms;
        let rate = keel_reactor::tick_rate();
        self.kato_ticks
            .set(u64::from(kato_ms).saturating_mul(rate) / 1000);
        self.touch();
        if kato_ms == 0 || keel_reactor::current_core().is_none() {
            return;
        }
        // A deadline, not a frequent check: the timer runs when the KATO would expire after
        // the last command, finds the later activity and moves itself to the new deadline
        // (`check_keep_alive`). An idle host sending Keep Alive every KATO/2 thus wakes the
        // target's timer about once per KATO/2, and an expiry is seen within ~1 ms of it.
        let period = Duration::from_millis(u64::from(kato_ms));
        let weak = Rc::downgrade(self);
        let id = keel_reactor::register_poller("nvmf_keep_alive", Some(period), move || match weak
            .upgrade()
        {
            Some(c) => c.check_keep_alive(),
            None => PollStatus::Idle,
        });
        self.poller.set(Some(id));
    }

    /// A command or Keep Alive arrived: restart the keep-alive timer.
    #[inline]
    pub fn touch(&self) {
        self.last_activity.set(keel_reactor::ticks());
    }

    fn check_keep_alive(self: &Rc<Self>) -> PollStatus {
        let limit = self.kato_ticks.get();
        if limit == 0 || self.destroyed.get() {
            return PollStatus::Idle;
        }
        let idle = keel_reactor::ticks().saturating_sub(self.last_activity.get());
        if idle <= limit {
            // Not expired: run again at the deadline the last activity sets (+1 ms, so that
            // the check then finds it strictly passed when nothing came meanwhile).
            let rate = u128::from(keel_reactor::tick_rate().max(1));
            let left_us = (u128::from(limit - idle) * 1_000_000 / rate) as u64;
            if let Some(id) = self.poller.get() {
                let next = Duration::from_micros(left_us) + Duration::from_millis(1);
                keel_reactor::set_poller_period(id, next);
            }
            return PollStatus::Idle;
        }
        log::warn!(
            "nvmf: controller {} of {} (host {}): keep-alive timeout ({} ms) expired, disconnecting",
            self.cntlid(),
            self.subsys().nqn,
            host_label(&self.shared.hostnqn),
            self.feat.borrow().kato_ms
        );
        self.destroy("keep-alive timeout");
        PollStatus::Busy
    }

    // ---- registers ----

    /// Property Get: the value of property `ofst` read with width `size`.
    pub fn property_get(&self, ofst: u32, size: PropSize) -> Result<u64, Status> {
        self.regs.borrow().get(ofst, size)
    }
    /// Whether CC.EN = 1 and CSTS.RDY = 1.
    pub fn is_enabled(&self) -> bool {
        self.regs.borrow().is_ready()
    }
    /// Property Set (only CC is writable): enable → CSTS.RDY (or CSTS.CFS for a
    /// configuration this controller cannot run); disable → reset (I/O queues
    /// disconnected); shutdown notification → CSTS.SHST complete (I/O queues disconnected).
    pub fn property_set(&self, ofst: u32, size: PropSize, value: u64) -> Result<(), Status> {
        let change = self.regs.borrow_mut().set(ofst, size, value)?;
        if change.enabled {
            log::debug!("nvmf: controller {} enabled", self.cntlid());
        }
        if change.enable_failed {
            log::warn!(
                "nvmf: controller {}: enable with unsupported CC {value:#x}: fatal status",
                self.cntlid()
            );
        }
        if change.disabled {
            log::info!("nvmf: controller {} reset by the host", self.cntlid());
            self.disconnect_io_qpairs();
        }
        if change.shutdown.is_some() {
            log::info!("nvmf: controller {} shut down by the host", self.cntlid());
            self.disconnect_io_qpairs();
        }
        Ok(())
    }

    // ---- I/O queues ----

    /// Number of I/O queues the host may connect.
    pub fn io_queues_granted(&self) -> u16 {
        ((self.feat.borrow().num_queues & 0xffff) as u16).saturating_add(1)
    }
    /// Number of connected I/O queues.
    pub fn io_qpair_count(&self) -> usize {
        self.io_qpairs.borrow().len()
    }

    /// Admit an I/O queue (Connect with qid > 0), on this controller's core. The host NQN
    /// must be the one that created the controller (as Linux checks); an anonymous host (empty
    /// NQN) must also present the same host identifier, which is then its only identity.
    pub fn connect_io(
        &self,
        hostnqn: &str,
        hostid: &[u8; 16],
        qid: u16,
        sqsize: u16,
        q: IoQpairRef,
    ) -> Result<(), ConnectError> {
        if self.destroyed.get() {
            return Err(ConnectError::data(connect_data::CNTLID));
        }
        if hostnqn != self.shared.hostnqn {
            log::warn!(
                "nvmf: I/O queue connect to controller {} from host {}, created by {}",
                self.cntlid(),
                host_label(hostnqn),
                host_label(&self.shared.hostnqn)
            );
            return Err(ConnectError::data(connect_data::HOSTNQN));
        }
        if hostnqn.is_empty() && *hostid != self.shared.hostid {
            log::warn!(
                "nvmf: I/O queue connect to controller {} from an anonymous host whose host \
                 identifier differs from the one that created it",
                self.cntlid()
            );
            return Err(ConnectError::data(connect_data::HOSTID));
        }
        if !self.is_enabled() {
            log::warn!(
                "nvmf: I/O queue connect before controller {} was enabled",
                self.cntlid()
            );
            return Err(Status::COMMAND_SEQUENCE_ERROR.into());
        }
        if qid > self.io_queues_granted() {
            log::warn!(
                "nvmf: I/O queue connect with qid {qid} > {} granted queues",
                self.io_queues_granted()
            );
            return Err(ConnectError::sqe(connect_sqe::QID));
        }
        if sqsize == 0 || u32::from(sqsize) >= u32::from(self.topts.max_queue_depth) {
            log::warn!(
                "nvmf: I/O queue connect with sqsize {sqsize} (max {})",
                self.topts.max_queue_depth
            );
            return Err(ConnectError::sqe(connect_sqe::SQSIZE));
        }
        let mut qs = self.io_qpairs.borrow_mut();
        if qs.contains_key(&qid) {
            log::warn!(
                "nvmf: controller {}: qid {qid} is already connected",
                self.cntlid()
            );
            return Err(Status::INVALID_QUEUE_IDENTIFIER.into());
        }
        qs.insert(qid, q);
        self.shared
            .num_io_qpairs
            .store(qs.len() as u32, Ordering::Relaxed);
        Ok(())
    }

    /// I/O queue `qid` (queue pair `qpair_id`) is gone.
    pub fn io_qpair_gone(&self, qid: u16, qpair_id: u64) {
        let mut qs = self.io_qpairs.borrow_mut();
        if qs.get(&qid).is_some_and(|q| q.qpair_id == qpair_id) {
            qs.remove(&qid);
            self.shared
                .num_io_qpairs
                .store(qs.len() as u32, Ordering::Relaxed);
        }
    }

    /// Every queue of this controller (for `nvmf_subsystem_get_qpairs`).
    pub fn qpair_infos(&self) -> Vec<QpairInfo> {
        let mut v = vec![QpairInfo {
            cntlid: self.cntlid(),
            qid: 0,
            core: self.shared.core,
            hostnqn: self.shared.hostnqn.clone(),
            listen: self.admin_listen.clone(),
            peer: self.admin_peer.clone(),
        }];
        v.extend(self.io_qpairs.borrow().iter().map(|(&qid, q)| QpairInfo {
            cntlid: self.cntlid(),
            qid,
            core: q.core,
            hostnqn: self.shared.hostnqn.clone(),
            listen: q.listen.clone(),
            peer: q.peer.clone(),
        }));
        v
    }

    fn disconnect_io_qpairs(&self) {
        let qs: Vec<IoQpairRef> = self.io_qpairs.borrow().values().cloned().collect();
        for q in qs {
            qpair::disconnect_remote(q.core, q.qpair_id);
        }
    }

    // ---- asynchronous events ----

    /// Hold an Asynchronous Event Request (or answer it at once with a pending event).
    /// `Err` when the limit is exceeded; the caller completes the request then.
    pub fn submit_aer(&self, req: ReqPtr) -> Result<(), Status> {
        if self.aers.borrow().len() >= MAX_AERS {
            return Err(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED);
        }
        self.aers.borrow_mut().push(req);
        self.deliver_events();
        Ok(())
    }

    /// Complete an outstanding AER with command id `cid` as aborted; whether one was found.
    pub fn abort_aer(&self, cid: u16) -> bool {
        let found = {
            let mut aers = self.aers.borrow_mut();
            // SAFETY: held AERs are live requests of the admin queue (see `submit_aer`).
            let pos = aers
                .iter()
                .position(|r| unsafe { r.as_ref() }.cmd.cid == cid);
            pos.map(|i| aers.remove(i))
        };
        match found {
            Some(req) => {
                self.complete_admin(req, Status::ABORTED_BY_REQUEST, 0);
                true
            }
            None => false,
        }
    }

    fn complete_admin(&self, req: ReqPtr, status: Status, cdw0: u32) {
        // SAFETY: the request belongs to the admin queue's transport and stays valid until
        // it is handed back through `request_complete` below.
        let r = unsafe { &mut *req.as_ptr() };
        r.rsp.cdw0 = cdw0;
        r.rsp.set(status);
        match self.admin.upgrade() {
            Some(q) => q.complete(req),
            None => log::error!(
                "nvmf: controller {}: admin queue gone, AER cannot be returned",
                self.cntlid()
            ),
        }
    }

    fn deliver_events(&self) {
        loop {
            let (req, ev) = {
                let mut aers = self.aers.borrow_mut();
                let mut evs = self.events.borrow_mut();
                if aers.is_empty() || evs.is_empty() {
                    return;
                }
                (aers.remove(0), evs.pop_front().unwrap_or_default())
            };
            self.complete_admin(req, Status::SUCCESS, ev);
        }
    }

    /// Namespace `nsid` was added, removed or changed.
    pub fn notify_ns_changed(&self, nsid: u32) {
        if self.destroyed.get() {
            return;
        }
        {
            let mut list = self.changed_ns.borrow_mut();
            if !list.contains(&nsid) {
                if list.len() >= CHANGED_NS_MAX {
                    self.changed_overflow.set(true);
                } else {
                    list.push(nsid);
                    list.sort_unstable();
                }
            }
        }
        if self.feat.borrow().async_event_config & AEC_NS_ATTR != 0
            && !self.ns_notice_masked.replace(true)
        {
            self.events.borrow_mut().push_back(AEN_NS_ATTR_CHANGED);
            self.deliver_events();
        }
    }

    /// The discovery log changed (discovery controllers only).
    pub fn notify_discovery_change(&self) {
        if self.destroyed.get() || !self.subsys().is_discovery() {
            return;
        }
        if self.feat.borrow().async_event_config & AEC_DISCOVERY != 0
            && !self.disc_notice_masked.replace(true)
        {
            self.events.borrow_mut().push_back(AEN_DISCOVERY_CHANGE);
            self.deliver_events();
        }
    }

    /// The Changed Namespace List log (4096 bytes); cleared (and the notice unmasked) unless
    /// `retain`.
    pub fn changed_ns_log(&self, retain: bool) -> Vec<u8> {
        let mut out = vec![0u8; CHANGED_NS_MAX * 4];
        if self.changed_overflow.get() {
            out[..4].copy_from_slice(&u32::MAX.to_le_bytes());
        } else {
            for (i, nsid) in self.changed_ns.borrow().iter().enumerate() {
                out[i * 4..i * 4 + 4].copy_from_slice(&nsid.to_le_bytes());
            }
        }
        if !retain {
            self.changed_ns.borrow_mut().clear();
            self.changed_overflow.set(false);
            self.ns_notice_masked.set(false);
        }
        out
    }

    /// The host read the discovery log: unmask its change notice.
    pub fn discovery_log_read(&self, retain: bool) {
        if !retain {
            self.disc_notice_masked.set(false);
        }
    }

    // ---- teardown ----

    /// Destroy the controller: disconnect every queue, return held AERs, forget it.
    /// Idempotent.
    pub fn destroy(&self, reason: &str) {
        if self.destroyed.replace(true) {
            return;
        }
        log::info!(
            "nvmf: controller {} of {} (host {}) destroyed: {reason}",
            self.cntlid(),
            self.subsys().nqn,
            host_label(&self.shared.hostnqn)
        );
        if let Some(id) = self.poller.take() {
            keel_reactor::unregister_poller(id);
        }
        self.subsys().remove_controller(self.cntlid());
        self.disconnect_io_qpairs();
        self.io_qpairs.borrow_mut().clear();
        self.shared.num_io_qpairs.store(0, Ordering::Relaxed);
        let aers: Vec<ReqPtr> = self.aers.borrow_mut().drain(..).collect();
        for req in aers {
            self.complete_admin(req, Status::ABORTED_SQ_DELETION, 0);
        }
        if let Some(q) = self.admin.upgrade() {
            if !q.is_closed() {
                qpair::disconnect_remote(self.shared.core, q.id());
            }
        }
        // Callers reach the controller through their own `Rc`, so this is never the last one.
        let key = (self.subsys().id, self.cntlid());
        let me = CTRLRS.with(|m| m.borrow_mut().remove(&key));
        drop(me);
    }
}

/// Ask controller (`subsys_id`, `cntlid`) on `core` to destroy itself; `done` runs after.
pub(crate) fn destroy_remote(core: u32, subsys_id: u64, cntlid: u16, reason: &'static str) {
    let sent = keel_reactor::send_to(core, move || {
        if let Some(c) = lookup(subsys_id, cntlid) {
            c.destroy(reason);
        }
    });
    if let Err(e) = sent {
        log::warn!("nvmf: cannot reach controller {cntlid} on core {core}: {e}");
    }
}

/// Tell controller (`subsys_id`, `cntlid`) on `core` that namespace `nsid` changed.
pub(crate) fn notify_ns_changed_remote(core: u32, subsys_id: u64, cntlid: u16, nsid: u32) {
    let sent = keel_reactor::send_to(core, move || {
        if let Some(c) = lookup(subsys_id, cntlid) {
            c.notify_ns_changed(nsid);
        }
    });
    if let Err(e) = sent {
        log::warn!("nvmf: cannot notify controller {cntlid} on core {core}: {e}");
    }
}

/// Tell discovery controller (`subsys_id`, `cntlid`) on `core` that the log changed.
pub(crate) fn notify_discovery_remote(core: u32, subsys_id: u64, cntlid: u16) {
    let _ = keel_reactor::send_to(core, move || {
        if let Some(c) = lookup(subsys_id, cntlid) {
            c.notify_discovery_change();
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn anonymous_host_is_named_in_logs() {
        assert_eq!(host_label(""), "(anonymous host)");
        assert_eq!(host_label("nqn.2014-08.org.x:h"), "nqn.2014-08.org.x:h");
    }

    #[test]
    fn kato_rounds_up_to_the_granularity() {
        assert_eq!(round_kato(0), 0);
        assert_eq!(round_kato(1), 100);
        assert_eq!(round_kato(100), 100);
        assert_eq!(round_kato(5001), 5100);
        assert_eq!(round_kato(u32::MAX), u32::MAX);
    }

    #[test]
    fn default_features_grant_every_queue() {
        let f = Features::defaults(127, 0);
        assert_eq!(f.num_queues, 126 | (126 << 16));
        let f = Features::defaults(0, 0);
        assert_eq!(f.num_queues, 0);
    }

    #[test]
    fn aen_values_match_the_spec_layout() {
        // type 2 (notice) in bits 2:0, info in 15:8, log page in 23:16.
        assert_eq!(AEN_NS_ATTR_CHANGED, 0x0004_0002);
        assert_eq!(AEN_DISCOVERY_CHANGE, 0x0070_F002);
    }
}
