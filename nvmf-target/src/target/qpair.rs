//! Queue pairs: the core's side of one transport connection, on that connection's core.
//! Before Fabrics Connect a queue pair belongs to no controller and accepts only Connect;
//! after it, it is either an admin queue (owning its [`Controller`]) or an I/O queue (holding
//! its core's namespace table of the subsystem).

use super::ctrlr::{self, Controller, CtrlrShared, IoQpairRef};
use super::nstable::{self, CoreSubsys};
use super::stats::{self, Counted};
use super::{admin, io, state};
use crate::iov;
use crate::request::ReqPtr;
use crate::transport::{ListenAddr, QpairTransport, TransportOpts};
use keel_nvme::cmd::{DataXfer, NvmeCpl, OPC_FABRICS};
use keel_nvme::fabrics::{
    self, connect_data, connect_sqe, ConnectCmd, ConnectData, ConnectError, FabricsType,
    CNTLID_DYNAMIC,
};
use keel_nvme::status::Status;
use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

/// Life cycle of a queue pair.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum QpState {
    /// Waiting for Fabrics Connect.
    AwaitingConnect,
    /// An I/O queue Connect is being checked by the controller's core.
    Connecting,
    /// Connected.
    Active,
    /// The connection is gone.
    Closed,
}

/// An I/O queue's link to its controller and namespaces.
struct IoRole {
    ctrlr: Arc<CtrlrShared>,
    ns: Rc<CoreSubsys>,
}

/// The core's side of one queue pair (admin or I/O), on the transport connection's core.
/// Before Fabrics Connect it belongs to no controller.
pub struct Qpair {
    id: u64,
    listen: ListenAddr,
    transport: Weak<dyn QpairTransport>,
    state: Cell<QpState>,
    qid: Cell<Option<u16>>,
    sq_size: Cell<u16>,
    admin: RefCell<Option<Rc<Controller>>>,
    io: RefCell<Option<IoRole>>,
    /// Keeps the queue pair alive while an I/O Connect waits for the controller's core.
    pending: RefCell<Option<Rc<Qpair>>>,
    /// How this core's `nvmf_get_stats` counters see the queue pair.
    counted: Cell<Counted>,
}

static NEXT_QPAIR_ID: AtomicU64 = AtomicU64::new(1);

thread_local! {
    /// This core's queue pairs by id (for requests that arrive by message).
    static QPAIRS: RefCell<HashMap<u64, Weak<Qpair>>> = RefCell::new(HashMap::new());
}

fn lookup(id: u64) -> Option<Rc<Qpair>> {
    QPAIRS.with(|m| m.borrow().get(&id).and_then(Weak::upgrade))
}

/// Ask queue pair `qpair_id` on `core` to disconnect (through its transport). Any thread.
pub(crate) fn disconnect_remote(core: u32, qpair_id: u64) {
    let run = move || {
        if let Some(q) = lookup(qpair_id) {
            q.request_disconnect();
        }
    };
    if keel_reactor::current_core().is_none() {
        run();
        return;
    }
    if let Err(e) = keel_reactor::send_to(core, run) {
        log::warn!("nvmf: cannot ask queue pair {qpair_id} on core {core} to disconnect: {e}");
    }
}

impl Qpair {
    /// A new queue pair for a connection accepted on `listen` (the listener's address, as
    /// given to `nvmf_subsystem_add_listener`: it is matched against subsystems' listeners).
    pub fn new(listen: ListenAddr, transport: Weak<dyn QpairTransport>) -> Rc<Qpair> {
        let q = Rc::new(Qpair {
            id: NEXT_QPAIR_ID.fetch_add(1, Ordering::Relaxed),
            listen,
            transport,
            state: Cell::new(QpState::AwaitingConnect),
            qid: Cell::new(None),
            sq_size: Cell::new(1),
            admin: RefCell::new(None),
            io: RefCell::new(None),
            pending: RefCell::new(None),
            counted: Cell::new(Counted::Nothing.enter(Counted::Unassociated)),
        });
        QPAIRS.with(|m| m.borrow_mut().insert(q.id, Rc::downgrade(&q)));
        q
    }

    /// Run one command (the transport has its data, or buffers for it). Completes through
    /// `QpairTransport::request_complete`, possibly before returning.
    #[inline]
    pub fn execute(self: &Rc<Self>, req: ReqPtr) {
        // SAFETY: the transport hands us exclusive use of the request until we give it back
        // through `request_complete` (request.rs); nothing else references it meanwhile.
        let r = unsafe { &mut *req.as_ptr() };
        r.rsp = NvmeCpl {
            cid: r.cmd.cid,
            ..NvmeCpl::default()
        };
        if self.state.get() == QpState::Active {
            if let Some(ns) = self.io_ns() {
                if r.cmd.opc != OPC_FABRICS {
                    return io::execute(self, &ns, req);
                }
                return self.fabrics_on_io_queue(req);
            }
            let ctrlr = self.admin.borrow().clone();
            if let Some(c) = ctrlr {
                return admin::execute(self, &c, req);
            }
        }
        let is_connect = FabricsType::decode(&r.cmd) == Some(FabricsType::Connect);
        match self.state.get() {
            QpState::AwaitingConnect if is_connect => self.connect(req),
            QpState::Closed => self.finish(req, Status::ABORTED_SQ_DELETION, 0),
            _ => {
                log::debug!(
                    "nvmf: queue pair {}: opcode {:#x} before Connect completed",
                    self.id,
                    r.cmd.opc
                );
                self.finish(req, Status::COMMAND_SEQUENCE_ERROR, 0)
            }
        }
    }

    /// The connection is gone: outstanding commands still complete through the transport;
    /// the controller forgets this queue (an admin queue's loss destroys the controller).
    pub fn close(self: &Rc<Self>) {
        if self.state.replace(QpState::Closed) == QpState::Closed {
            return;
        }
        self.count_as(Counted::Nothing);
        // The registry entry stays until drop: a pending I/O Connect answer must find us.
        let admin = self.admin.borrow_mut().take();
        if let Some(c) = admin {
            c.destroy("admin queue disconnected");
        }
        let io = self.io.borrow_mut().take();
        if let (Some(role), Some(qid)) = (io, self.qid.get()) {
            let (sid, cntlid, id) = (role.ctrlr.subsys.id, role.ctrlr.cntlid, self.id);
            io_qpair_gone(role.ctrlr.core, sid, cntlid, qid, id);
        }
    }

    /// Move this queue pair to `to` in the core's `nvmf_get_stats` counters.
    fn count_as(&self, to: Counted) {
        self.counted.set(self.counted.get().enter(to));
    }

    /// Queue id after Connect (None before).
    pub fn qid(&self) -> Option<u16> {
        self.qid.get()
    }

    /// Submission queue size (entries, Connect's SQSIZE + 1) after Connect, for `sqhd`
    /// wrap-around; 1 before.
    pub fn sq_size(&self) -> u16 {
        self.sq_size.get()
    }

    /// Process-unique id of this queue pair.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// The listen address the connection came through.
    pub fn listen_addr(&self) -> &ListenAddr {
        &self.listen
    }

    /// The peer's address, from the transport ("" once the transport is gone).
    pub fn peer(&self) -> String {
        self.transport
            .upgrade()
            .map(|t| t.peer())
            .unwrap_or_default()
    }

    /// Whether [`Qpair::close`] ran.
    pub fn is_closed(&self) -> bool {
        self.state.get() == QpState::Closed
    }

    /// HOT PATH: hand a finished request back to the transport.
    #[inline]
    pub(crate) fn complete(&self, req: ReqPtr) {
        if matches!(self.qid.get(), Some(q) if q != 0) {
            stats::nvme_io_completed();
        }
        match self.transport.upgrade() {
            Some(t) => t.request_complete(req),
            None => log::error!(
                "nvmf: queue pair {}: transport gone, a completion is lost",
                self.id
            ),
        }
    }

    /// Set status and dword 0 and complete.
    pub(crate) fn finish(&self, req: ReqPtr, status: Status, cdw0: u32) {
        // SAFETY: see `execute`: the request is ours until `complete`.
        let r = unsafe { &mut *req.as_ptr() };
        r.rsp.cdw0 = cdw0;
        r.rsp.set(status);
        self.complete(req);
    }

    /// HOT PATH: this I/O queue's namespace table (reference-count bump).
    #[inline]
    pub(crate) fn io_ns(&self) -> Option<Rc<CoreSubsys>> {
        self.io.borrow().as_ref().map(|r| Rc::clone(&r.ns))
    }

    /// Ask the transport to drop the connection (it then calls [`Qpair::close`]).
    pub(crate) fn request_disconnect(&self) {
        if self.is_closed() {
            return;
        }
        if let Some(t) = self.transport.upgrade() {
            t.disconnect();
        }
    }

    fn fabrics_on_io_queue(self: &Rc<Self>, req: ReqPtr) {
        // SAFETY: see `execute`.
        let fct = fabrics::fctype(&unsafe { req.as_ref() }.cmd);
        match fct {
            fabrics::FCTYPE_DISCONNECT => {
                self.finish(req, Status::SUCCESS, 0);
                let (core, id) = (keel_reactor::current_core().unwrap_or(0), self.id);
                disconnect_remote(core, id);
            }
            fabrics::FCTYPE_CONNECT => self.finish(req, Status::COMMAND_SEQUENCE_ERROR, 0),
            _ => self.finish(req, Status::INVALID_OPCODE, 0),
        }
    }

    fn fail_connect(&self, req: ReqPtr, e: ConnectError) {
        self.finish(req, e.status, e.cdw0);
    }

    /// Fabrics Connect on a fresh queue pair.
    fn connect(self: &Rc<Self>, req: ReqPtr) {
        // SAFETY: see `execute`.
        let r = unsafe { &mut *req.as_ptr() };
        let cmd = match ConnectCmd::decode(&r.cmd) {
            Ok(c) => c,
            Err(e) => {
                log::warn!(
                    "nvmf: Connect refused (record format {}, sqsize {})",
                    r.cmd.cdw10 as u16,
                    r.cmd.cdw11 as u16
                );
                return self.fail_connect(req, e);
            }
        };
        let mut buf = [0u8; ConnectData::SIZE];
        if r.xfer != DataXfer::HostToController
            || (r.length as usize) < ConnectData::SIZE
            // SAFETY: a request's data buffers are valid and ours while it runs (request.rs).
            || unsafe { iov::copy_from_iovs(r.data_iovs(), 0, &mut buf) } < ConnectData::SIZE
        {
            log::warn!(
                "nvmf: Connect without its {} bytes of data",
                ConnectData::SIZE
            );
            return self.finish(req, Status::DATA_SGL_LENGTH_INVALID, 0);
        }
        let data = match ConnectData::parse(&buf) {
            Ok(d) => d,
            Err(e) => {
                log::warn!(
                    "nvmf: Connect data field at byte {} is malformed",
                    e.cdw0 & 0xffff
                );
                return self.fail_connect(req, e);
            }
        };
        let Some(subsys) = state::subsystem(&data.subnqn) else {
            log::warn!(
                "nvmf: Connect from {} to unknown subsystem {}",
                data.hostnqn,
                data.subnqn
            );
            return self.fail_connect(req, ConnectError::data(connect_data::SUBNQN));
        };
        if !subsys.listener_allowed(&self.listen) {
            log::warn!(
                "nvmf: subsystem {} is not served at {}:{} (host {})",
                subsys.nqn,
                self.listen.traddr,
                self.listen.trsvcid,
                data.hostnqn
            );
            return self.finish(req, Status::CONNECT_INVALID_HOST, 0);
        }
        let allowed = subsys.host_allowed(&data.hostnqn);
        if data.is_anonymous() {
            // Once per connection: each queue pair runs Connect once.
            log::info!(
                "nvmf: host at {} sent no host NQN (queue {} of {}): {} as an anonymous host{}",
                self.peer(),
                cmd.qid,
                subsys.nqn,
                if allowed { "admitted" } else { "refused" },
                if allowed {
                    " (the subsystem allows any host)"
                } else {
                    " (the subsystem admits only listed hosts)"
                }
            );
        }
        if !allowed {
            if !data.is_anonymous() {
                log::warn!(
                    "nvmf: host {} is not allowed to connect to {}",
                    data.hostnqn,
                    subsys.nqn
                );
            }
            return self.fail_connect(req, ConnectError::invalid_host());
        }
        let topts = state::transport_opts(self.listen.trtype).unwrap_or_else(|| TransportOpts {
            trtype: self.listen.trtype,
            ..TransportOpts::tcp_defaults()
        });
        if cmd.qid == 0 {
            self.connect_admin(req, cmd, data, subsys, topts)
        } else {
            self.connect_io(req, cmd, data, subsys)
        }
    }

    fn connect_admin(
        self: &Rc<Self>,
        req: ReqPtr,
        cmd: ConnectCmd,
        data: ConnectData,
        subsys: Arc<super::subsystem::Subsystem>,
        topts: TransportOpts,
    ) {
        if data.cntlid != CNTLID_DYNAMIC {
            log::warn!(
                "nvmf: admin Connect asks for static controller {}",
                data.cntlid
            );
            return self.fail_connect(req, ConnectError::data(connect_data::CNTLID));
        }
        if cmd.sqsize == 0 || cmd.sqsize >= topts.max_aq_depth {
            log::warn!(
                "nvmf: admin Connect with sqsize {} (max {})",
                cmd.sqsize,
                topts.max_aq_depth
            );
            return self.fail_connect(req, ConnectError::sqe(connect_sqe::SQSIZE));
        }
        let Some(c) = Controller::create(&subsys, data.hostnqn, data.hostid, cmd.kato, self, topts)
        else {
            log::warn!("nvmf: no controller can be created in {}", subsys.nqn);
            return self.finish(req, Status::CONNECT_CONTROLLER_BUSY, 0);
        };
        let cntlid = c.cntlid();
        *self.admin.borrow_mut() = Some(c);
        self.qid.set(Some(0));
        self.sq_size.set(cmd.sqsize + 1);
        self.state.set(QpState::Active);
        self.count_as(Counted::Admin);
        self.finish(req, Status::SUCCESS, u32::from(cntlid));
    }

    fn connect_io(
        self: &Rc<Self>,
        req: ReqPtr,
        cmd: ConnectCmd,
        data: ConnectData,
        subsys: Arc<super::subsystem::Subsystem>,
    ) {
        if subsys.is_discovery() {
            log::warn!("nvmf: I/O queue Connect to the discovery subsystem");
            return self.fail_connect(req, ConnectError::sqe(connect_sqe::QID));
        }
        let Some(shared) = subsys.controller(data.cntlid) else {
            log::warn!(
                "nvmf: I/O queue Connect to unknown controller {} of {}",
                data.cntlid,
                subsys.nqn
            );
            return self.fail_connect(req, ConnectError::data(connect_data::CNTLID));
        };
        let Some(here) = keel_reactor::current_core() else {
            return self.finish(req, Status::INTERNAL_DEVICE_ERROR, 0);
        };
        self.state.set(QpState::Connecting);
        *self.pending.borrow_mut() = Some(Rc::clone(self));
        let qref = IoQpairRef {
            core: here,
            qpair_id: self.id,
            listen: self.listen.clone(),
            peer: self.peer(),
        };
        let (sid, cntlid, hostnqn, hostid, qid, sqsize) = (
            subsys.id,
            data.cntlid,
            data.hostnqn,
            data.hostid,
            cmd.qid,
            cmd.sqsize,
        );
        let (qpair_id, req_addr) = (self.id, req.as_ptr() as usize);
        let reply_shared = Arc::clone(&shared);
        let sent = keel_reactor::send_to(shared.core, move || {
            let res = match ctrlr::lookup(sid, cntlid) {
                Some(c) => c.connect_io(&hostnqn, &hostid, qid, sqsize, qref),
                None => Err(ConnectError::data(connect_data::CNTLID)),
            };
            let back = keel_reactor::send_to(here, move || {
                finish_io_connect(qpair_id, req_addr, qid, sqsize, reply_shared, res)
            });
            if let Err(e) = back {
                log::error!("nvmf: I/O Connect answer cannot reach core {here}: {e}");
            }
        });
        if let Err(e) = sent {
            log::error!("nvmf: controller core {} unreachable: {e}", shared.core);
            self.state.set(QpState::AwaitingConnect);
            let me = self.pending.borrow_mut().take();
            self.finish(req, Status::INTERNAL_DEVICE_ERROR, 0);
            drop(me);
        }
    }
}

/// On the I/O queue's core: the controller's answer to an I/O queue Connect.
fn finish_io_connect(
    qpair_id: u64,
    req_addr: usize,
    qid: u16,
    sqsize: u16,
    shared: Arc<CtrlrShared>,
    res: Result<(), ConnectError>,
) {
    let Some(req) = std::ptr::NonNull::new(req_addr as *mut crate::request::NvmfRequest) else {
        return;
    };
    let Some(q) = lookup(qpair_id) else {
        // `pending` keeps the queue pair alive until this answer: not reached in practice.
        log::error!("nvmf: I/O Connect answer for vanished queue pair {qpair_id}");
        if res.is_ok() {
            io_qpair_gone(shared.core, shared.subsys.id, shared.cntlid, qid, qpair_id);
        }
        return;
    };
    let me = q.pending.borrow_mut().take();
    match (q.state.get(), res) {
        (QpState::Connecting, Ok(())) => {
            let ns = nstable::attach(&shared.subsys);
            let cntlid = shared.cntlid;
            *q.io.borrow_mut() = Some(IoRole { ctrlr: shared, ns });
            q.qid.set(Some(qid));
            q.sq_size.set(sqsize + 1);
            q.state.set(QpState::Active);
            q.count_as(Counted::Io);
            log::debug!("nvmf: I/O queue {qid} of controller {cntlid} connected");
            q.finish(req, Status::SUCCESS, u32::from(cntlid));
        }
        (QpState::Connecting, Err(e)) => {
            q.state.set(QpState::AwaitingConnect);
            q.finish(req, e.status, e.cdw0);
        }
        (_, res) => {
            if res.is_ok() {
                io_qpair_gone(shared.core, shared.subsys.id, shared.cntlid, qid, qpair_id);
            }
            q.finish(req, Status::ABORTED_SQ_DELETION, 0);
        }
    }
    drop(me);
}

/// Tell controller (`sid`, `cntlid`) on `core` that its I/O queue `qid` is gone.
fn io_qpair_gone(core: u32, sid: u64, cntlid: u16, qid: u16, qpair_id: u64) {
    let run = move || {
        if let Some(c) = ctrlr::lookup(sid, cntlid) {
            c.io_qpair_gone(qid, qpair_id);
        }
    };
    if keel_reactor::current_core().is_none() {
        run();
    } else if let Err(e) = keel_reactor::send_to(core, run) {
        log::warn!("nvmf: controller {cntlid} on core {core} unreachable: {e}");
    }
}

impl Drop for Qpair {
    fn drop(&mut self) {
        let id = self.id;
        let _ = QPAIRS.try_with(|m| m.borrow_mut().remove(&id));
        self.count_as(Counted::Nothing);
    }
}

impl std::fmt::Debug for Qpair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Qpair")
            .field("id", &self.id)
            .field("qid", &self.qid.get())
            .field("state", &self.state.get())
            .finish()
    }
}
