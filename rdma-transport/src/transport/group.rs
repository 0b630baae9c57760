//! HOT PATH: the per-core RDMA poll group: every NVMe/RDMA queue pair of this core, the core's
//! CQs (one per device), and the core's CM event channel.
//!
//! Each poll drains the CQs in batches and routes every completion by its work request id
//! (`wr_id`): receives on the shared receive queue go to the connection owning the QP number,
//! everything else to the connection and slot the id names. A slow timed poller reads the CM
//! channel (disconnects, device removal), closes queue pairs that never send Connect, and frees
//! closed connections once their work requests are all flushed back.

use super::conn::{Conn, ConnSetup};
use super::core_dev::CoreDev;
use super::devices::{self, RdmaDevice};
use super::wr_id::{Kind, WrId};
use super::RdmaConfig;
use crate::nvmf_cm::{encode_reject, CmRequest, RejectStatus};
use crate::verbs::{CmEventChannel, CmEventKind, CmId, WorkCompletion};
use keel_nvmf::transport::{ListenAddr, ShutdownWait};
use keel_reactor::{PollStatus, PollerId};
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Completions taken per CQ poll.
const CQ_BATCH: usize = 32;
/// Busy polling: how often the CM channel and the connection timers are checked.
const SLOW_PERIOD: Duration = Duration::from_millis(1);
/// Interrupt mode: the CM channel's fd wakes the reactor and is read when the reactor saw it
/// readable; only the connection timers run on a period (each run wakes the reactor).
const TIMER_PERIOD_INTERRUPT: Duration = Duration::from_millis(100);
/// Time a new queue pair has to complete Fabrics Connect.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The RDMA READ depths of a connection request, as the CM reports them to the passive side
/// (already from our point of view).
#[derive(Debug, Clone, Copy)]
pub(crate) struct PeerRdma {
    /// RDMA READs we may have in flight towards the host (its responder resources).
    pub initiator_depth: u8,
    /// RDMA READs the host may have in flight towards us (its initiator depth).
    pub responder_resources: u8,
}

/// The poll group of one core.
pub(crate) struct Group {
    devs: RefCell<Vec<Rc<CoreDev>>>,
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    gens: RefCell<Vec<u8>>,
    free_tokens: RefCell<Vec<u16>>,
    by_qp: RefCell<HashMap<u32, u16>>,
    cm: CmEventChannel,
    /// The reactor sleeps when idle: CQs get completion channels and are re-armed.
    interrupt: bool,
    wcs: RefCell<Vec<WorkCompletion>>,
    closing: RefCell<Vec<u16>>,
    /// Connections whose waiting writes found the pool empty (token, generation).
    starved: RefCell<Vec<(u16, u8)>>,
    /// Connections with work requests queued for the end-of-poll post (token, generation).
    tx: RefCell<Vec<(u16, u8)>>,
    /// Interrupt mode: a message will post `tx` (the reactor may sleep before the next poll).
    tx_scheduled: Cell<bool>,
    /// Connections the core asked to close (token, generation).
    to_close: RefCell<Vec<(u16, u8)>>,
    poller: Cell<Option<PollerId>>,
    slow_poller: Cell<Option<PollerId>>,
    timer_poller: Cell<Option<PollerId>>,
    drains: RefCell<Vec<(u64, Arc<ShutdownWait>)>>,
}

thread_local! {
    static GROUP: RefCell<Option<Rc<Group>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<Group>> {
    GROUP.try_with(|g| g.borrow().clone()).ok().flatten()
}

/// Live connections on the calling core.
pub(crate) fn connection_count() -> usize {
    current().map_or(0, |g| g.conns.borrow().iter().flatten().count())
}

/// Whether the calling core's reactor runs in interrupt mode.
pub(crate) fn interrupt_mode() -> bool {
    let core = keel_reactor::current_core();
    keel_reactor::reactor_stats()
        .iter()
        .any(|s| Some(s.lcore) == core && s.interrupt_mode)
}

fn get_or_create() -> Result<Rc<Group>, crate::verbs::Error> {
    if let Some(g) = current() {
        return Ok(g);
    }
    let cm = CmEventChannel::new()?;
    keel_reactor::register_interrupt_fd(cm.fd());
    let interrupt = interrupt_mode();
    let g = Rc::new(Group {
        devs: RefCell::new(Vec::new()),
        conns: RefCell::new(Vec::with_capacity(64)),
        gens: RefCell::new(Vec::with_capacity(64)),
        free_tokens: RefCell::new(Vec::new()),
        by_qp: RefCell::new(HashMap::with_capacity(64)),
        cm,
        interrupt,
        wcs: RefCell::new(vec![WorkCompletion::default(); CQ_BATCH]),
        closing: RefCell::new(Vec::with_capacity(64)),
        starved: RefCell::new(Vec::with_capacity(64)),
        to_close: RefCell::new(Vec::with_capacity(16)),
        tx: RefCell::new(Vec::with_capacity(64)),
        tx_scheduled: Cell::new(false),
        poller: Cell::new(None),
        slow_poller: Cell::new(None),
        timer_poller: Cell::new(None),
        drains: RefCell::new(Vec::new()),
    });
    let weak = Rc::downgrade(&g);
    g.poller.set(Some(keel_reactor::register_poller(
        "nvmf_rdma_poll_group",
        None,
        move || weak.upgrade().map_or(PollStatus::Idle, |g| g.poll()),
    )));
    let weak = Rc::downgrade(&g);
    let period = (!interrupt).then_some(SLOW_PERIOD);
    g.slow_poller.set(Some(keel_reactor::register_poller(
        "nvmf_rdma_cm",
        period,
        move || {
            weak.upgrade()
                .map_or(PollStatus::Idle, |g| g.slow_poll(!interrupt))
        },
    )));
    if interrupt {
        let weak = Rc::downgrade(&g);
        g.timer_poller.set(Some(keel_reactor::register_poller(
            "nvmf_rdma_timers",
            Some(TIMER_PERIOD_INTERRUPT),
            move || {
                weak.upgrade()
                    .map_or(PollStatus::Idle, |g| g.check_timers())
            },
        )));
    }
    GROUP.with(|c| *c.borrow_mut() = Some(g.clone()));
    log::info!(
        "nvmf/rdma: poll group started on core {:?} ({})",
        keel_reactor::current_core(),
        if interrupt {
            "interrupt mode: completion channels wake the reactor"
        } else {
            "busy polling"
        }
    );
    Ok(g)
}

/// Take over a validated connection request on this core: create the QP on the core's CQ (and
/// SRQ), accept, and serve it. Any failure rejects the request with "no resources".
pub(crate) fn add_connection(
    mut id: CmId,
    req: CmRequest,
    peer_rd: PeerRdma,
    listen: ListenAddr,
    cfg: Arc<RdmaConfig>,
    transport_id: u64,
) {
    let reject = |id: &mut CmId, why: &str| {
        log::warn!(
            "nvmf/rdma: connection for queue {} rejected: {why}",
            req.qid
        );
        let _ = id.reject(&encode_reject(RejectStatus::NoResources));
    };
    let g = match get_or_create() {
        Ok(g) => g,
        Err(e) => return reject(&mut id, &format!("cannot start the poll group: {e}")),
    };
    let Some(dev) = devices::find(id.verbs_ptr()) else {
        return reject(&mut id, "the request came through an unknown RDMA device");
    };
    let core_dev = match g.core_dev(&dev, &cfg) {
        Ok(d) => d,
        Err(e) => {
            return reject(
                &mut id,
                &format!("cannot set up the device on this core: {e}"),
            )
        }
    };
    if let Err(e) = id.migrate(&g.cm) {
        return reject(&mut id, &format!("rdma_migrate_id: {e}"));
    }
    let token = {
        let mut free = g.free_tokens.borrow_mut();
        match free.pop() {
            Some(t) => t,
            None => {
                let mut conns = g.conns.borrow_mut();
                if conns.len() > usize::from(u16::MAX) {
                    drop(conns);
                    return reject(&mut id, "too many connections on this core");
                }
                conns.push(None);
                g.gens.borrow_mut().push(0);
                (conns.len() - 1) as u16
            }
        }
    };
    let gen = {
        let mut gens = g.gens.borrow_mut();
        gens[usize::from(token)] = gens[usize::from(token)].wrapping_add(1);
        gens[usize::from(token)]
    };
    let setup = ConnSetup {
        group: Rc::downgrade(&g) as Weak<dyn GroupLink>,
        token,
        gen,
        transport_id,
        req,
        peer_rd,
        listen,
        cfg,
        dev: core_dev,
        connect_deadline: Instant::now() + CONNECT_TIMEOUT,
    };
    match Conn::accept(id, setup) {
        Ok(conn) => {
            g.by_qp.borrow_mut().insert(conn.qp_num(), token);
            g.conns.borrow_mut()[usize::from(token)] = Some(conn);
        }
        Err(e) => {
            log::warn!("nvmf/rdma: connection for queue {} failed: {e}", req.qid);
            g.free_tokens.borrow_mut().push(token);
        }
    }
}

/// What a connection asks of its poll group. The connection holds a handle to its group
/// ([`super::conn::ConnSetup::group`]) instead of reaching the core's group through
/// thread-local state.
pub(crate) trait GroupLink {
    /// Mark `token` as closing: freed by the slow poller once its work requests are back.
    fn mark_closing(&self, token: u16);
    /// Retry connection (`token`, `gen`) on every poll until the pool has buffers for it.
    fn mark_starved(&self, token: u16, gen: u8);
    /// Connection (`token`, `gen`) queued work requests: post them at the end of this poll
    /// (in interrupt mode, from a message, so that the reactor does not sleep first).
    fn mark_tx(&self, token: u16, gen: u8);
    /// Close connection (`token`, `gen`) on the next slow poll (the core asked for it).
    fn request_close(&self, token: u16, gen: u8);
}

impl GroupLink for Group {
    fn mark_closing(&self, token: u16) {
        self.closing.borrow_mut().push(token);
    }

    fn mark_starved(&self, token: u16, gen: u8) {
        self.starved.borrow_mut().push((token, gen));
    }

    fn mark_tx(&self, token: u16, gen: u8) {
        self.tx.borrow_mut().push((token, gen));
        if self.interrupt && !self.tx_scheduled.replace(true) {
            if let Some(core) = keel_reactor::current_core() {
                // A capture-less closure: no allocation.
                let _ = keel_reactor::send_to(core, || {
                    if let Some(g) = current() {
                        g.flush_tx();
                    }
                });
            }
        }
    }

    fn request_close(&self, token: u16, gen: u8) {
        self.to_close.borrow_mut().push((token, gen));
    }
}

/// Transport shutdown: close this transport's connections on every core; `done` runs once all
/// are freed.
pub(crate) fn shutdown_all(transport_id: u64, done: Box<dyn FnOnce() + Send>) {
    let wait = ShutdownWait::new(keel_reactor::cores().len(), done);
    let w = wait.clone();
    if let Err(e) = keel_reactor::for_each_core(move || close_all(transport_id, w.clone()), || {}) {
        log::warn!("nvmf/rdma: shutdown could not reach every core: {e}");
        wait.finish();
    }
}

fn close_all(transport_id: u64, wait: Arc<ShutdownWait>) {
    let Some(g) = current() else {
        wait.arrive();
        return;
    };
    let conns: Vec<Rc<Conn>> = g
        .conns
        .borrow()
        .iter()
        .flatten()
        .filter(|c| c.transport_id() == transport_id)
        .cloned()
        .collect();
    for c in &conns {
        c.close("transport shutdown");
    }
    g.drains.borrow_mut().push((transport_id, wait));
    g.reap();
}

impl Group {
    /// This core's resources on `dev`, set up on first use.
    fn core_dev(
        &self,
        dev: &Arc<RdmaDevice>,
        cfg: &RdmaConfig,
    ) -> Result<Rc<CoreDev>, crate::verbs::Error> {
        if let Some(d) = self.devs.borrow().iter().find(|d| Arc::ptr_eq(&d.dev, dev)) {
            return Ok(d.clone());
        }
        let d = CoreDev::new(dev.clone(), cfg, self.interrupt)?;
        self.devs.borrow_mut().push(d.clone());
        Ok(d)
    }

    fn conn(&self, token: u16, gen: u8) -> Option<Rc<Conn>> {
        if self.gens.borrow().get(usize::from(token)) != Some(&gen) {
            return None;
        }
        self.conns.borrow().get(usize::from(token))?.clone()
    }

    /// HOT PATH: drain every CQ of the core.
    fn poll(&self) -> PollStatus {
        let mut busy = false;
        let ndev = self.devs.borrow().len();
        for d in 0..ndev {
            let dev = self.devs.borrow()[d].clone();
            let mut rearmed = false;
            loop {
                let n = {
                    let mut wcs = self.wcs.borrow_mut();
                    match dev.cq.poll(&mut wcs) {
                        Ok(n) => n,
                        Err(e) => {
                            log::error!("nvmf/rdma: ibv_poll_cq: {e}");
                            0
                        }
                    }
                };
                if n == 0 {
                    // Interrupt mode: arm the CQ, then look once more for completions that
                    // arrived before the arm (they raise no event).
                    if !rearmed && dev.rearm() {
                        rearmed = true;
                        continue;
                    }
                    break;
                }
                busy = true;
                for i in 0..n {
                    let wc = self.wcs.borrow()[i];
                    self.dispatch(&dev, &wc);
                }
                if n < CQ_BATCH {
                    break;
                }
            }
        }
        if !self.starved.borrow().is_empty() {
            self.retry_starved();
        }
        busy |= self.flush_tx();
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Post the work requests every connection queued (one doorbell per connection per poll).
    fn flush_tx(&self) -> bool {
        self.tx_scheduled.set(false);
        let n = self.tx.borrow().len();
        if n == 0 {
            return false;
        }
        // Flushing may queue more (a failed post closes a connection): take them by index.
        let mut k = 0;
        while k < self.tx.borrow().len() {
            let (t, g) = self.tx.borrow()[k];
            k += 1;
            if let Some(c) = self.conn(t, g) {
                c.flush_tx();
            }
        }
        self.tx.borrow_mut().clear();
        true
    }

    /// Let starved connections try the pool again; keep those still starved.
    fn retry_starved(&self) {
        let n = self.starved.borrow().len();
        let mut i = 0;
        for _ in 0..n {
            let (t, g) = self.starved.borrow()[i];
            let still = self.conn(t, g).is_some_and(|c| c.retry_starved());
            if still {
                i += 1;
            } else {
                self.starved.borrow_mut().swap_remove(i);
            }
        }
    }

    /// HOT PATH: one completion to its owner.
    #[inline]
    fn dispatch(&self, dev: &Rc<CoreDev>, wc: &WorkCompletion) {
        let Some(w) = WrId::decode(wc.wr_id()) else {
            log::error!(
                "nvmf/rdma: completion with a foreign wr_id {:#x}",
                wc.wr_id()
            );
            return;
        };
        match w.kind {
            Kind::SrqRecv => {
                let token = self.by_qp.borrow().get(&wc.qp_num()).copied();
                let conn = token.and_then(|t| self.conns.borrow().get(usize::from(t))?.clone());
                match conn {
                    Some(c) => c.on_srq_recv(w.index, wc),
                    // The QP is gone: the buffer goes straight back.
                    None => dev.repost_srq(w.index),
                }
            }
            Kind::QpRecv => {
                if let Some(c) = self.conn(w.token, w.gen) {
                    c.on_own_recv(w.index, wc);
                }
            }
            Kind::Read | Kind::Send | Kind::Unsignaled => {
                if let Some(c) = self.conn(w.token, w.gen) {
                    c.on_send_completion(w.kind, w.index, wc);
                }
            }
        }
    }

    /// CM events, closes the core asked for, freeing closed connections; with `timers`, also
    /// the Connect timeouts (interrupt mode checks those in [`Group::check_timers`]).
    fn slow_poll(&self, timers: bool) -> PollStatus {
        let mut busy = false;
        // Interrupt mode: read the channel only when the reactor saw its fd readable (no
        // poll(2) per iteration); the loop below drains it. Always true in busy-polling mode.
        let mut more = keel_reactor::take_interrupt_fd_ready(self.cm.fd());
        while more {
            match self.cm.poll_event() {
                Ok(Some(ev)) => {
                    busy = true;
                    let token = ev.token() as u16;
                    let gen = (ev.token() >> 16) as u8;
                    let Some(c) = self.conn(token, gen) else {
                        continue;
                    };
                    match ev.kind() {
                        CmEventKind::Established => c.established(),
                        CmEventKind::Disconnected => c.close("the host disconnected"),
                        CmEventKind::DeviceRemoval => c.close("the RDMA device was removed"),
                        CmEventKind::TimewaitExit => {}
                        CmEventKind::ConnectError | CmEventKind::Unreachable => {
                            c.close("the connection could not be established")
                        }
                        other => log::debug!("nvmf/rdma: {}: CM event {other:?}", c.peer_name()),
                    }
                }
                Ok(None) => more = false,
                Err(e) => {
                    log::error!("nvmf/rdma: reading CM events: {e}");
                    more = false;
                }
            }
        }
        let asked: Vec<(u16, u8)> = std::mem::take(&mut *self.to_close.borrow_mut());
        for (t, g) in asked {
            if let Some(c) = self.conn(t, g) {
                c.close("the target disconnected it");
            }
        }
        if timers {
            self.expire_unconnected();
        }
        if !self.closing.borrow().is_empty() || !self.drains.borrow().is_empty() {
            busy |= self.reap();
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Interrupt mode's timed poller: Connect timeouts and flush timeouts.
    fn check_timers(&self) -> PollStatus {
        self.expire_unconnected();
        if !self.closing.borrow().is_empty() || !self.drains.borrow().is_empty() {
            self.reap();
        }
        PollStatus::Idle
    }

    /// Close queue pairs that have not sent Fabrics Connect in time.
    fn expire_unconnected(&self) {
        let now = Instant::now();
        let expired: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .iter()
            .flatten()
            .filter(|c| c.connect_expired(now))
            .cloned()
            .collect();
        for c in expired {
            c.close("no Fabrics Connect within the connect timeout");
        }
    }

    /// Free closed connections whose work requests and requests are all back.
    fn reap(&self) -> bool {
        let now = Instant::now();
        let mut freed = false;
        let tokens: Vec<u16> = std::mem::take(&mut *self.closing.borrow_mut());
        let mut keep = Vec::new();
        for t in tokens {
            let conn = self.conns.borrow().get(usize::from(t)).cloned().flatten();
            let Some(c) = conn else { continue };
            if c.reapable(now) {
                self.by_qp.borrow_mut().remove(&c.qp_num());
                self.conns.borrow_mut()[usize::from(t)] = None;
                self.free_tokens.borrow_mut().push(t);
                log::info!("nvmf/rdma: {}: queue pair freed", c.peer_name());
                drop(c);
                freed = true;
            } else if !keep.contains(&t) {
                keep.push(t);
            }
        }
        self.closing.borrow_mut().extend(keep);
        let conns = self.conns.borrow();
        self.drains.borrow_mut().retain(|(tid, wait)| {
            let left = conns.iter().flatten().any(|c| c.transport_id() == *tid);
            if !left {
                wait.arrive();
            }
            left
        });
        freed
    }
}
