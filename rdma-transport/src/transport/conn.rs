//! HOT PATH: one NVMe/RDMA queue pair.
//!
//! Commands arrive as RECV completions (in a shared receive queue buffer, or one of the
//! connection's own with `no_srq`). Each takes a request slot (as many as the host's queue has
//! entries) and then, by its SGL:
//! - no data, or data in the capsule (Data Block, Offset subtype): the request points straight
//!   into the receive buffer, which is held until the response is sent;
//! - a Keyed Data Block: pool buffers (registered once per page) are taken; a host write is
//!   fetched with RDMA READ(s) before the command runs, a host read is answered with RDMA
//!   WRITE(s) chained ahead of the response SEND (send-with-invalidate when the SGL asks).
//!
//! Only the last work request of a chain is signaled. Send-queue entries and RDMA READ depth
//! (the ORD agreed at connect) are counted; a slot that would exceed them waits in order.
//! Nothing here locks or allocates: slots, queues and work request arrays are sized at accept.
//!
//! Teardown: `close` moves the QP to the error state (rdma_disconnect), hands the queue pair to
//! the core's `Qpair::close`, and frees what waits. The connection is freed (QP and CM id
//! destroyed) once every request is back from the core and every posted work request has
//! completed or been flushed — or after [`FLUSH_TIMEOUT`], when the device does not flush.

use super::capsule::{self, CapsuleData};
use super::core_dev::CoreDev;
use super::group::{GroupLink, PeerRdma};
use super::recv::RecvArena;
use super::wr_id::{Kind, WrId};
use super::{RdmaConfig, MAX_SGE_PER_WR};
use crate::nvmf_cm::{encode_accept, CmRequest};
use crate::verbs::{
    Access, CmId, ConnParam, Error, MemoryRegion, QpInit, SendWr, Sge, WorkCompletion,
};
use keel_bdev::{IoVec, MAX_IOVS};
use keel_nvme::cmd::{DataXfer, NvmeCpl};
use keel_nvme::fabrics::FabricsType;
use keel_nvme::status::Status;
use keel_nvmf::reqcore::{self, start_request, ReqPool, ReqSlots, SqHead};
use keel_nvmf::request::{NvmfRequest, ReqPtr};
use keel_nvmf::target::Qpair;
use keel_nvmf::transport::{ListenAddr, QpairTransport};
use keel_reactor::pool::PoolError;
use std::cell::{OnceCell, RefCell};
use std::collections::VecDeque;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::rc::{Rc, Weak};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a closed connection waits for its work requests to be flushed before it is freed
/// anyway (destroying the QP stops the device from touching its buffers).
const FLUSH_TIMEOUT: Duration = Duration::from_secs(10);

/// What a new connection needs (from the listener and the poll group).
pub(crate) struct ConnSetup {
    /// The poll group serving the connection (weak: the group owns its connections).
    pub group: Weak<dyn GroupLink>,
    pub token: u16,
    pub gen: u8,
    pub transport_id: u64,
    pub req: CmRequest,
    pub peer_rd: PeerRdma,
    pub listen: ListenAddr,
    pub cfg: Arc<RdmaConfig>,
    pub dev: Rc<CoreDev>,
    pub connect_deadline: Instant,
}

/// RDMA request slot states. Legal moves ([`reqcore::SlotState::legal`]): Free → New; New →
/// Ready | AwaitData | AwaitSend (answered early); AwaitData → Ready | Reading | AwaitSend;
/// Reading → Ready; Ready → Executing; Executing → AwaitSend; AwaitSend → Sending; and any
/// state → Free (release, also on close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Taken for a command capsule being parsed.
    New,
    /// Waiting (in `data_wait`) for pool buffers, RDMA READ depth or send-queue entries.
    AwaitData,
    /// RDMA READ(s) in flight.
    Reading,
    /// In `ready`, to be handed to the core.
    Ready,
    /// With the core.
    Executing,
    /// Back from the core, waiting (in `send_wait`) for send-queue entries.
    AwaitSend,
    /// Response chain posted.
    Sending,
}

impl reqcore::SlotState for SlotState {
    const COUNT: usize = 8;
    const FREE: SlotState = SlotState::Free;
    const EXECUTING: SlotState = SlotState::Executing;
    #[inline]
    fn index(self) -> usize {
        self as usize
    }
    #[inline]
    fn legal(from: SlotState, to: SlotState) -> bool {
        use SlotState::*;
        matches!(
            (from, to),
            (Free, New)
                | (New, Ready | AwaitData | AwaitSend)
                | (AwaitData, Ready | Reading | AwaitSend)
                | (Reading, Ready)
                | (Ready, Executing)
                | (Executing, AwaitSend)
                | (AwaitSend, Sending)
                | (_, Free)
        )
    }
}

/// Which receive buffer a slot holds (in-capsule data lives there).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum RecvBuf {
    Srq(u32),
    Own(u32),
}

#[derive(Debug, Clone, Copy)]
struct Keyed {
    addr: u64,
    key: u32,
    invalidate: bool,
}

/// RDMA's own data of one request slot (state and buffers are in the request core).
struct Slot {
    /// The SGEs of the slot's pool buffers (same order and count), for RDMA READ/WRITE.
    sges: [Sge; MAX_IOVS],
    recv: Option<RecvBuf>,
    keyed: Option<Keyed>,
    /// Work requests posted for this slot and not yet completed.
    pending: u32,
    /// Whether the response carries data (RDMA WRITE ahead of the SEND).
    send_data: bool,
    /// The SGE of the response SEND (queued work requests point at it).
    rsp_sge: [Sge; 1],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            sges: [Sge::default(); MAX_IOVS],
            recv: None,
            keyed: None,
            pending: 0,
            send_data: false,
            rsp_sge: [Sge::default()],
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    Closed,
}

struct State {
    slots: ReqSlots<SlotState, Slot>,
    life: Life,
    closed_at: Option<Instant>,
    sq_head: SqHead,
    /// Send-queue entries free.
    sq_free: u32,
    /// RDMA READ work requests in flight, and the most allowed (ORD).
    reads_out: u32,
    ord: u32,
    data_wait: VecDeque<u16>,
    send_wait: VecDeque<u16>,
    ready: VecDeque<u16>,
    /// `no_srq`: own receives posted and not completed.
    recv_posted: u32,
    /// The pool was empty for the head of `data_wait`: retried on the next completion or
    /// poll.
    pool_starved: bool,
    /// Work requests queued for the next post (one doorbell for everything a poll produced).
    /// Their SGE lists live in `slots`, which never moves, and stay untouched until the slot's
    /// work requests complete. Sized for the whole send queue, so it never grows.
    tx: Vec<SendWr<'static>>,
    /// Registered with the poll group for a flush of `tx`.
    tx_dirty: bool,
}

/// A registered array of response capsules, one per slot.
struct RspArena {
    mr: ManuallyDrop<MemoryRegion>,
    cpl: NonNull<NvmeCpl>,
    len: usize,
}

impl RspArena {
    fn new(conn_dev: &CoreDev, n: usize) -> Result<RspArena, Error> {
        let v: Box<[NvmeCpl]> = vec![NvmeCpl::default(); n].into_boxed_slice();
        let len = v.len();
        let cpl = NonNull::from(Box::leak(v)).cast::<NvmeCpl>();
        let bytes = len * std::mem::size_of::<NvmeCpl>();
        // SAFETY: the array is ours (leaked above, freed in Drop after deregistration).
        let mr = unsafe {
            MemoryRegion::register(
                &conn_dev.dev.pd,
                cpl.as_ptr().cast(),
                bytes,
                Access::LOCAL_WRITE,
            )
        };
        match mr {
            Ok(mr) => Ok(RspArena {
                mr: ManuallyDrop::new(mr),
                cpl,
                len,
            }),
            Err(e) => {
                // SAFETY: leaked from a Box<[NvmeCpl]> of `len` above and not registered.
                drop(unsafe {
                    Box::from_raw(std::ptr::slice_from_raw_parts_mut(cpl.as_ptr(), len))
                });
                Err(e)
            }
        }
    }

    /// Write response `i` and return the SGE sending it.
    ///
    /// The caller guarantees entry `i` is not being sent (its slot's previous SEND completed).
    #[inline]
    fn put(&self, i: usize, cpl: NvmeCpl) -> Sge {
        assert!(i < self.len);
        // SAFETY: i < len; the entry is not in use by the device (caller).
        let p = unsafe { self.cpl.as_ptr().add(i) };
        // SAFETY: as above; a plain write of a Copy value.
        unsafe { p.write(cpl) };
        Sge::new(
            p as u64,
            std::mem::size_of::<NvmeCpl>() as u32,
            self.mr.lkey(),
        )
    }
}

impl Drop for RspArena {
    fn drop(&mut self) {
        // SAFETY: dropped once, here.
        unsafe { ManuallyDrop::drop(&mut self.mr) };
        // SAFETY: leaked from a Box<[NvmeCpl]> of `len` in `new`; deregistered above.
        drop(unsafe {
            Box::from_raw(std::ptr::slice_from_raw_parts_mut(
                self.cpl.as_ptr(),
                self.len,
            ))
        });
    }
}

/// One NVMe/RDMA queue pair. Field order is drop order: the CM id (and its QP) go first, so
/// the device is done with every buffer below before they are freed.
pub(crate) struct Conn {
    id: RefCell<Option<CmId>>,
    st: RefCell<State>,
    reqs: ReqPool,
    rsp: RspArena,
    own_recv: Option<RecvArena>,
    dev: Rc<CoreDev>,
    qpair: OnceCell<Rc<Qpair>>,
    cfg: Arc<RdmaConfig>,
    /// The poll group serving this connection.
    group: Weak<dyn GroupLink>,
    token: u16,
    gen: u8,
    transport_id: u64,
    qp_num: u32,
    /// Queue id from the CM request (its entries size `State::sq_head`).
    qid: u16,
    max_sge: u32,
    _cqes: CqeReservation,
    peer: String,
    connect_deadline: Instant,
}

impl Conn {
    /// Create the QP for a validated request, set the connection up, and accept.
    pub fn accept(mut id: CmId, s: ConnSetup) -> Result<Rc<Conn>, Error> {
        let a = s.dev.dev.attr.0;
        let depth = u32::from(s.req.sq_entries() as u16).max(2);
        let max_sge = MAX_SGE_PER_WR.min(u32::try_from(a.max_sge).unwrap_or(1).max(1));
        let chunks = (s.cfg.max_io_size as usize).div_ceil(s.cfg.buf_chunk) as u32;
        let wrs_per_xfer = chunks.div_ceil(max_sge).max(1);
        let max_qp_wr = u32::try_from(a.max_qp_wr).unwrap_or(0);
        let max_send_wr = (depth * (wrs_per_xfer + 1)).min(max_qp_wr);
        if max_send_wr < wrs_per_xfer + 1 || (s.cfg.srq_depth == 0 && depth > max_qp_wr) {
            return Err(Error::new("queue depth above the device's", libc::EINVAL));
        }
        let cqes = max_send_wr + if s.cfg.srq_depth == 0 { depth } else { 0 };
        let Some(reservation) = CqeReservation::take(&s.dev, cqes) else {
            log::warn!(
                "nvmf/rdma: the core's completion queue is full; raise num_cqe \
                 (nvmf_create_transport --num-cqe) to serve more queue pairs"
            );
            let _ = id.reject(&encode_reject_no_resources());
            return Err(Error::new("completion queue entries", libc::ENOSPC));
        };
        let conn = match Self::build(&mut id, &s, depth, max_sge, max_send_wr, reservation) {
            Ok(c) => c,
            Err(e) => {
                let _ = id.reject(&encode_reject_no_resources());
                return Err(e);
            }
        };
        if let Err(e) = conn.post_own_recvs(&id) {
            let _ = id.reject(&encode_reject_no_resources());
            // The QP (and its posted receives) goes before the buffers.
            drop(id);
            conn.qpair().close();
            return Err(e);
        }
        // The CM reports the host's values from our side: its responder resources as the
        // READ depth we may initiate, its initiator depth as what we must serve.
        let ird = s
            .peer_rd
            .responder_resources
            .min(u8::try_from(a.max_qp_rd_atom).unwrap_or(u8::MAX));
        let ord = s
            .peer_rd
            .initiator_depth
            .min(u8::try_from(a.max_qp_init_rd_atom).unwrap_or(u8::MAX))
            .max(1);
        conn.st.borrow_mut().ord = u32::from(ord);
        let private = encode_accept(depth as u16);
        let param = ConnParam {
            private_data: &private,
            responder_resources: ird,
            initiator_depth: ord,
            retry_count: 7,
            rnr_retry_count: 7,
        };
        if let Err(e) = id.accept(&param) {
            drop(id);
            conn.qpair().close();
            return Err(e);
        }
        *conn.id.borrow_mut() = Some(id);
        log::info!(
            "nvmf/rdma: {}: queue {} accepted: depth {depth}, QP {:#x}, RDMA READ depth {ord}, \
             {} send WRs",
            conn.peer,
            conn.qid,
            conn.qp_num,
            max_send_wr
        );
        Ok(conn)
    }

    fn build(
        id: &mut CmId,
        s: &ConnSetup,
        depth: u32,
        max_sge: u32,
        max_send_wr: u32,
        cqes: CqeReservation,
    ) -> Result<Rc<Conn>, Error> {
        let cm_token = u64::from(s.token) | (u64::from(s.gen) << 16);
        id.set_token(cm_token);
        let srq = s.dev.srq.as_ref().map(|(q, _)| q.clone());
        let own_recv = if srq.is_none() {
            Some(RecvArena::new(&s.dev.dev.pd, depth, s.cfg.icd)?)
        } else {
            None
        };
        let init = QpInit {
            send_cq: s.dev.cq.clone(),
            recv_cq: s.dev.cq.clone(),
            srq,
            max_send_wr,
            max_recv_wr: depth,
            max_send_sge: max_sge,
            max_recv_sge: 1,
            max_inline_data: 0,
            sq_sig_all: false,
        };
        let qp = id.create_qp(&s.dev.dev.pd, &init)?;
        let qp_num = qp.qp_num();
        let granted_send_wr = qp.caps().max_send_wr.min(max_send_wr);
        let rsp = RspArena::new(&s.dev, depth as usize)?;
        let peer = peer_name(id);
        let n = depth as usize;
        let conn = Rc::new(Conn {
            id: RefCell::new(None),
            st: RefCell::new(State {
                slots: ReqSlots::new(n, Slot::new),
                life: Life::Open,
                closed_at: None,
                sq_head: SqHead::new(depth as u16),
                sq_free: granted_send_wr,
                reads_out: 0,
                ord: 1,
                data_wait: VecDeque::with_capacity(n),
                send_wait: VecDeque::with_capacity(n),
                ready: VecDeque::with_capacity(n),
                recv_posted: 0,
                pool_starved: false,
                tx: Vec::with_capacity(granted_send_wr as usize),
                tx_dirty: false,
            }),
            reqs: ReqPool::new(n),
            rsp,
            own_recv,
            dev: s.dev.clone(),
            qpair: OnceCell::new(),
            cfg: s.cfg.clone(),
            group: s.group.clone(),
            token: s.token,
            gen: s.gen,
            transport_id: s.transport_id,
            qp_num,
            qid: s.req.qid,
            max_sge,
            _cqes: cqes,
            peer,
            connect_deadline: s.connect_deadline,
        });
        let weak: Weak<dyn QpairTransport> = Rc::downgrade(&conn) as Weak<dyn QpairTransport>;
        let _ = conn.qpair.set(Qpair::new(s.listen.clone(), weak));
        Ok(conn)
    }

    /// `no_srq`: post every buffer of the connection's own receive queue.
    fn post_own_recvs(&self, id: &CmId) -> Result<(), Error> {
        let Some(arena) = &self.own_recv else {
            return Ok(());
        };
        let Some(qp) = id.qp() else {
            return Err(Error::new("rdma_create_qp", libc::EIO));
        };
        for i in 0..arena.count() {
            let wr = self.wr(Kind::QpRecv, i);
            // SAFETY: each buffer of the fresh arena is posted once; arena and QP share the
            // PD; the QP is destroyed before the arena (Conn field order, or the caller drops
            // the id first on failure).
            unsafe { arena.post(i, wr, |w| qp.post_recv(w)) }.map_err(|e| e.error)?;
            self.st.borrow_mut().recv_posted += 1;
        }
        Ok(())
    }

    /// The QP number (completions on the SRQ name it).
    pub fn qp_num(&self) -> u32 {
        self.qp_num
    }

    /// The transport instance this connection belongs to.
    pub fn transport_id(&self) -> u64 {
        self.transport_id
    }

    /// The peer, for logs.
    pub fn peer_name(&self) -> &str {
        &self.peer
    }

    fn qpair(&self) -> &Rc<Qpair> {
        self.qpair.get().expect("set at construction")
    }

    /// Tell the poll group something (nothing once the group is gone).
    #[inline]
    fn with_group(&self, f: impl FnOnce(&dyn GroupLink)) {
        if let Some(g) = self.group.upgrade() {
            f(&*g);
        }
    }

    #[inline]
    fn wr(&self, kind: Kind, index: u32) -> u64 {
        WrId {
            kind,
            gen: self.gen,
            token: self.token,
            index,
        }
        .encode()
    }

    /// The CM reported the connection established.
    pub fn established(&self) {
        log::debug!("nvmf/rdma: {}: queue {} established", self.peer, self.qid);
    }

    /// Whether the queue is still waiting for Fabrics Connect past its deadline.
    pub fn connect_expired(&self, now: Instant) -> bool {
        now >= self.connect_deadline
            && self.qpair().qid().is_none()
            && self.st.borrow().life == Life::Open
    }

    /// Whether the closed connection can be freed.
    pub fn reapable(&self, now: Instant) -> bool {
        let st = self.st.borrow();
        if st.life != Life::Closed {
            return false;
        }
        let drained = st.slots.outstanding() == 0 && st.recv_posted == 0;
        let timed_out = st.closed_at.is_some_and(|t| now >= t + FLUSH_TIMEOUT);
        if timed_out && !drained {
            if st.slots.count(SlotState::Executing) > 0 {
                // The core still holds requests: wait for them whatever the device does.
                return false;
            }
            log::warn!(
                "nvmf/rdma: {}: work requests not flushed after {FLUSH_TIMEOUT:?}; freeing the \
                 queue pair anyway",
                self.peer
            );
        }
        drained || timed_out
    }

    // ----- receive -----

    /// A receive on the shared receive queue completed for this QP.
    #[inline]
    pub fn on_srq_recv(self: &Rc<Self>, idx: u32, wc: &WorkCompletion) {
        self.on_recv(RecvBuf::Srq(idx), wc);
    }

    /// A receive on this connection's own queue completed.
    #[inline]
    pub fn on_own_recv(self: &Rc<Self>, idx: u32, wc: &WorkCompletion) {
        self.st.borrow_mut().recv_posted -= 1;
        self.on_recv(RecvBuf::Own(idx), wc);
    }

    fn recv_ptr(&self, b: RecvBuf) -> Option<(*mut u8, usize)> {
        match b {
            RecvBuf::Srq(i) => {
                let (_, arena) = self.dev.srq.as_ref()?;
                arena.valid(i).then(|| (arena.buf(i), arena.stride()))
            }
            RecvBuf::Own(i) => {
                let arena = self.own_recv.as_ref()?;
                arena.valid(i).then(|| (arena.buf(i), arena.stride()))
            }
        }
    }

    /// Give a receive buffer back: to the SRQ always, to our own queue while open.
    fn repost(&self, st: &mut State, b: RecvBuf) {
        match b {
            RecvBuf::Srq(i) => self.dev.repost_srq(i),
            RecvBuf::Own(i) => {
                if st.life != Life::Open {
                    return;
                }
                let (Some(arena), Ok(id)) = (self.own_recv.as_ref(), self.id.try_borrow()) else {
                    return;
                };
                let Some(qp) = id.as_ref().and_then(|id| id.qp()) else {
                    return;
                };
                if !arena.valid(i) {
                    return;
                }
                let wr = self.wr(Kind::QpRecv, i);
                // SAFETY: the buffer came back from a completion and its slot is done with it.
                match unsafe { arena.post(i, wr, |w| qp.post_recv(w)) } {
                    Ok(()) => st.recv_posted += 1,
                    Err(e) => log::error!("nvmf/rdma: {}: repost receive: {}", self.peer, e.error),
                }
            }
        }
    }

    fn on_recv(self: &Rc<Self>, b: RecvBuf, wc: &WorkCompletion) {
        let mut fatal = None;
        {
            let mut st = self.st.borrow_mut();
            if !wc.is_success() {
                if !wc.is_flush() {
                    fatal = Some(wc.status_str());
                }
                if let RecvBuf::Srq(i) = b {
                    self.dev.repost_srq(i);
                }
            } else if st.life != Life::Open {
                self.repost(&mut st, b);
            } else {
                fatal = self.on_capsule(&mut st, b, wc.byte_len());
            }
        }
        if let Some(why) = fatal {
            self.close(why);
            return;
        }
        self.run_ready();
    }

    /// Take one command capsule. Returns a reason to close the connection on a protocol error.
    fn on_capsule(&self, st: &mut State, b: RecvBuf, len: u32) -> Option<&'static str> {
        let Some((buf, cap)) = self.recv_ptr(b) else {
            return Some("receive completion for an unknown buffer");
        };
        let len = (len as usize).min(cap);
        // SAFETY: the receive completed, so the device wrote `len` bytes at `buf` (inside the
        // buffer: `len ≤ cap`) and is done with it until the buffer is posted again.
        let bytes = unsafe { std::slice::from_raw_parts(buf.cast_const(), len) };
        let Some(capsule) = capsule::parse(bytes, self.cfg.max_io_size) else {
            self.repost(st, b);
            return Some("capsule shorter than a command");
        };
        let cmd = capsule.cmd;
        let Some(i) = st.slots.take(SlotState::New) else {
            self.repost(st, b);
            return Some("the host sent more commands than its queue holds");
        };
        // SAFETY: slot `i` was free: the core does not hold its request.
        let req = unsafe { self.reqs.get_mut(i) };
        start_request(req, i, &cmd, capsule.xfer);
        debug_assert_eq!(st.slots.nbufs(i), 0);
        let slot = &mut st.slots[i];
        slot.keyed = None;
        slot.send_data = false;
        slot.recv = None;

        let connect = FabricsType::decode(&cmd) == Some(FabricsType::Connect);
        if connect && (cmd.cdw10 >> 16) as u16 != self.qid {
            log::warn!(
                "nvmf/rdma: {}: Connect for queue {} on the QP of queue {}",
                self.peer,
                cmd.cdw10 >> 16,
                self.qid
            );
            self.repost(st, b);
            return self.fail(st, i, Status::CONNECT_INVALID_PARAMETERS);
        }
        if self.qpair().qid().is_none() && !connect {
            // Before Connect only Connect runs: no buffers, no RDMA for anything else.
            self.repost(st, b);
            return self.fail(st, i, Status::COMMAND_SEQUENCE_ERROR);
        }
        match capsule.data {
            Err(status) => {
                self.repost(st, b);
                self.fail(st, i, status)
            }
            Ok(CapsuleData::None) => {
                self.repost(st, b);
                self.ready(st, i)
            }
            Ok(CapsuleData::InCapsule { start, len: dlen }) => {
                // SAFETY: `start + dlen ≤ len` (checked by the parser): inside the received
                // bytes; the slot holds the buffer (not reposted) until the slot is freed.
                req.iovs[0] = unsafe { IoVec::from_raw_parts(buf.add(start), dlen as usize) };
                req.iovcnt = 1;
                req.length = dlen;
                st.slots[i].recv = Some(b);
                self.ready(st, i)
            }
            Ok(CapsuleData::Keyed {
                addr,
                len: dlen,
                key,
                invalidate,
            }) => {
                self.repost(st, b);
                st.slots[i].keyed = Some(Keyed {
                    addr,
                    key,
                    invalidate,
                });
                req.length = dlen;
                st.slots.set_state(i, SlotState::New, SlotState::AwaitData);
                st.data_wait.push_back(i);
                self.start_waiting(st);
                None
            }
        }
    }

    /// Queue slot `i` for the core.
    #[inline]
    fn ready(&self, st: &mut State, i: u16) -> Option<&'static str> {
        let from = st.slots.state(i);
        st.slots.set_state(i, from, SlotState::Ready);
        st.ready.push_back(i);
        None
    }

    /// Answer slot `i` with `status` without running it.
    fn fail(&self, st: &mut State, i: u16, status: Status) -> Option<&'static str> {
        // SAFETY: the slot is not with the core.
        let req = unsafe { self.reqs.get_mut(i) };
        req.rsp.status = status.to_field();
        req.length = 0;
        req.iovcnt = 0;
        self.queue_response(st, i);
        None
    }

    /// Hand ready slots to the core, one at a time, with no borrow held (the core may complete
    /// them before `execute` returns).
    fn run_ready(self: &Rc<Self>) {
        loop {
            let next = {
                let mut st = self.st.borrow_mut();
                let Some(i) = st.ready.pop_front() else { break };
                st.slots
                    .set_state(i, SlotState::Ready, SlotState::Executing);
                i
            };
            self.qpair().execute(self.reqs.ptr(next));
        }
    }

    // ----- data -----

    /// Give waiting slots their buffers and RDMA READs, oldest first, while the pool, the
    /// RDMA READ depth and the send queue allow.
    fn start_waiting(&self, st: &mut State) {
        while let Some(&i) = st.data_wait.front() {
            // SAFETY: the slot waits for data: not with the core.
            let req = unsafe { self.reqs.get_mut(i) };
            if st.slots.nbufs(i) == 0 {
                match self.alloc_bufs(st, i, req) {
                    Ok(()) => {}
                    Err(Some(status)) => {
                        st.data_wait.pop_front();
                        self.fail(st, i, status);
                        continue;
                    }
                    Err(None) => {
                        if !st.pool_starved {
                            st.pool_starved = true;
                            self.with_group(|g| g.mark_starved(self.token, self.gen));
                        }
                        return;
                    }
                }
            }
            if req.xfer == DataXfer::ControllerToHost {
                st.data_wait.pop_front();
                self.ready(st, i);
                continue;
            }
            let nwr = (st.slots.nbufs(i) as u32).div_ceil(self.max_sge);
            if (st.reads_out > 0 && st.reads_out + nwr > st.ord) || st.sq_free < nwr {
                return;
            }
            st.data_wait.pop_front();
            if let Err(why) = self.post_reads(st, i, req.length) {
                log::error!("nvmf/rdma: {}: {why}", self.peer);
                self.fail(st, i, Status::DATA_TRANSFER_ERROR);
            }
        }
    }

    /// Take pool buffers for slot `i` and point the request and the SGEs at them. `Err(None)`:
    /// the pool is empty (retry later); `Err(Some(status))`: fail the command.
    fn alloc_bufs(
        &self,
        st: &mut State,
        i: u16,
        req: &mut NvmfRequest,
    ) -> Result<(), Option<Status>> {
        if let Err(e) = st.slots.alloc_bufs(i, req.length, self.cfg.buf_chunk) {
            return Err(match e {
                PoolError::BadSize(_) => Some(Status::DATA_SGL_LENGTH_INVALID),
                _ => None,
            });
        }
        let mut sges = [Sge::default(); MAX_IOVS];
        let mut registered = true;
        for (k, b) in st.slots.bufs(i).enumerate() {
            let Some(lkey) = self.dev.lkey(b.as_ptr(), b.len()) else {
                registered = false;
                break;
            };
            sges[k] = Sge::new(b.as_ptr() as u64, b.len() as u32, lkey);
        }
        if !registered {
            st.slots.free_bufs(i);
            log::error!(
                "nvmf/rdma: {}: a pool buffer is not registered with the device",
                self.peer
            );
            return Err(Some(Status::DATA_TRANSFER_ERROR));
        }
        st.slots[i].sges = sges;
        st.slots.set_iovs(i, req, req.length);
        Ok(())
    }

    /// Queue the RDMA READ(s) fetching slot `i`'s `len` bytes; only the last is signaled.
    fn post_reads(&self, st: &mut State, i: u16, len: u32) -> Result<(), Error> {
        let nbufs = st.slots.nbufs(i);
        let slot = &st.slots[i];
        let Some(k) = slot.keyed else {
            return Err(Error::new("RDMA READ without a keyed SGL", libc::EINVAL));
        };
        let sges = &slot.sges[..nbufs];
        let chunks = sges.chunks(self.max_sge as usize);
        let last = chunks.len().saturating_sub(1);
        let mut n = 0;
        let mut off = 0u64;
        for (c, part) in chunks.enumerate() {
            let kind = if c == last {
                Kind::Read
            } else {
                Kind::Unsignaled
            };
            let mut wr = SendWr::rdma_read(self.wr(kind, u32::from(i)), part, k.addr + off, k.key);
            if c == last {
                wr = wr.signaled();
            }
            // SAFETY: the SGEs live in `st.slots` (boxed slices that never move while the
            // connection lives) and are not changed until this slot's work requests complete
            // or are dropped unposted (`drop_unposted`); `tx` never outlives the connection.
            st.tx.push(unsafe { wr.detach() });
            n += 1;
            off += part.iter().map(|s| u64::from(s.len())).sum::<u64>();
        }
        debug_assert_eq!(off, u64::from(len));
        st.slots[i].pending += n;
        st.slots
            .set_state(i, SlotState::AwaitData, SlotState::Reading);
        st.sq_free -= n;
        st.reads_out += n;
        self.mark_tx(st);
        Ok(())
    }

    /// Ask the poll group to post `tx` at the end of this poll.
    #[inline]
    fn mark_tx(&self, st: &mut State) {
        if !st.tx_dirty {
            st.tx_dirty = true;
            self.with_group(|g| g.mark_tx(self.token, self.gen));
        }
    }

    /// Post every queued work request as one chain (one doorbell). A failed post closes the
    /// connection; what was not posted is given back as if it had completed.
    pub fn flush_tx(self: &Rc<Self>) {
        let failed = {
            let mut st = self.st.borrow_mut();
            st.tx_dirty = false;
            if st.tx.is_empty() {
                return;
            }
            let res = {
                let id = self.id.borrow();
                match id.as_ref().and_then(|id| id.qp()) {
                    // SAFETY: every SGE describes a pool buffer, receive buffer or response
                    // entry owned by its slot and untouched by the CPU until the slot's last
                    // work request completes (slot states), with lkeys of MRs on this QP's PD.
                    Some(qp) => unsafe { qp.post_send(&mut st.tx) }.map_err(|e| (e.index, e.error)),
                    None => Err((0, Error::new("ibv_post_send", libc::ENOTCONN))),
                }
            };
            match res {
                Ok(()) => {
                    st.tx.clear();
                    None
                }
                Err((posted, e)) => {
                    self.drop_unposted(&mut st, posted);
                    Some(e)
                }
            }
        };
        if let Some(e) = failed {
            log::error!("nvmf/rdma: {}: ibv_post_send: {e}", self.peer);
            self.close("posting work requests failed");
        }
    }

    /// Forget the queued work requests from index `from` on (never posted): give back their
    /// send-queue entries and free the slots left with nothing in flight.
    fn drop_unposted(&self, st: &mut State, from: usize) {
        let mut k = from;
        while k < st.tx.len() {
            let id = st.tx[k].wr_id();
            k += 1;
            let Some(w) = WrId::decode(id) else { continue };
            let i = w.index as u16;
            let Some(state) = st.slots.get_state(usize::from(i)) else {
                continue;
            };
            let slot = &mut st.slots[i];
            slot.pending = slot.pending.saturating_sub(1);
            let left = slot.pending;
            st.sq_free += 1;
            if state == SlotState::Reading {
                st.reads_out = st.reads_out.saturating_sub(1);
            }
            if left == 0 && matches!(state, SlotState::Reading | SlotState::Sending) {
                release_slot(self, st, i);
            }
        }
        st.tx.clear();
    }

    /// The pool was empty for a waiting slot: try again (the poll group calls this every
    /// poll while the connection is starved). Returns whether it is still starved.
    pub fn retry_starved(self: &Rc<Self>) -> bool {
        let starved = {
            let mut st = self.st.borrow_mut();
            st.pool_starved = false;
            if st.life == Life::Open {
                self.start_waiting(&mut st);
            }
            st.pool_starved
        };
        self.run_ready();
        starved
    }

    // ----- completion -----

    /// A send-queue completion for slot `index`.
    pub fn on_send_completion(self: &Rc<Self>, kind: Kind, index: u32, wc: &WorkCompletion) {
        let mut fatal = None;
        {
            let mut st = self.st.borrow_mut();
            let i = index as u16;
            if usize::from(i) >= st.slots.len() {
                return;
            }
            let ok = wc.is_success();
            if !ok && !wc.is_flush() {
                log::error!(
                    "nvmf/rdma: {}: {kind:?} failed: {} (vendor error {:#x})",
                    self.peer,
                    wc.status_str(),
                    wc.vendor_err()
                );
                fatal = Some("a work request failed");
            }
            let state = st.slots.state(i);
            match kind {
                Kind::Unsignaled => {
                    let slot = &mut st.slots[i];
                    slot.pending = slot.pending.saturating_sub(1);
                    st.sq_free += 1;
                    if state == SlotState::Reading {
                        st.reads_out = st.reads_out.saturating_sub(1);
                    }
                }
                Kind::Read => {
                    let done = std::mem::take(&mut st.slots[i].pending);
                    st.sq_free += done;
                    st.reads_out = st.reads_out.saturating_sub(done);
                    if state == SlotState::Reading {
                        if ok && st.life == Life::Open {
                            self.ready(&mut st, i);
                        } else {
                            release_slot(self, &mut st, i);
                        }
                    }
                }
                Kind::Send => {
                    let done = std::mem::take(&mut st.slots[i].pending);
                    st.sq_free += done;
                    if state == SlotState::Sending {
                        release_slot(self, &mut st, i);
                    }
                }
                Kind::SrqRecv | Kind::QpRecv => {}
            }
            if st.life == Life::Open {
                self.start_waiting(&mut st);
                self.flush_sends(&mut st);
            }
        }
        if let Some(why) = fatal {
            self.close(why);
            return;
        }
        self.run_ready();
    }

    /// Slot `i` has its answer: queue the response (and data).
    fn queue_response(&self, st: &mut State, i: u16) {
        if st.life != Life::Open {
            release_slot(self, st, i);
            return;
        }
        // SAFETY: the core gave the request back (or never had it).
        let req = unsafe { self.reqs.get_mut(i) };
        let success = Status::from_field(req.rsp.status).is_success();
        st.slots[i].send_data = req.xfer == DataXfer::ControllerToHost
            && req.length > 0
            && success
            && st.slots[i].keyed.is_some()
            && st.slots.nbufs(i) > 0;
        let from = st.slots.state(i);
        st.slots.set_state(i, from, SlotState::AwaitSend);
        st.send_wait.push_back(i);
        self.flush_sends(st);
    }

    /// Post queued responses while the send queue has room.
    fn flush_sends(&self, st: &mut State) {
        while let Some(&i) = st.send_wait.front() {
            let writes = if st.slots[i].send_data {
                (st.slots.nbufs(i) as u32).div_ceil(self.max_sge)
            } else {
                0
            };
            if st.sq_free < writes + 1 {
                return;
            }
            st.send_wait.pop_front();
            if let Err(e) = self.post_response(st, i) {
                log::error!("nvmf/rdma: {}: cannot send a response: {e}", self.peer);
            }
        }
    }

    /// Queue slot `i`'s RDMA WRITE(s) (unsignaled) and response SEND (signaled), in order.
    fn post_response(&self, st: &mut State, i: u16) -> Result<(), Error> {
        // SAFETY: the core gave the request back.
        let req = unsafe { self.reqs.get_mut(i) };
        let mut cpl = req.rsp;
        cpl.sqid = self.qid;
        cpl.sqhd = st.sq_head.advance();
        cpl.cid = req.cmd.cid;
        st.slots[i].rsp_sge = [self.rsp.put(usize::from(i), cpl)];
        let nbufs = st.slots.nbufs(i);
        let slot = &st.slots[i];
        let sges = &slot.sges[..nbufs];
        let rsp_sge = &slot.rsp_sge[..];
        let (send_data, keyed) = (slot.send_data, slot.keyed);
        let mut n = 0;
        if send_data {
            let k = keyed.expect("send_data needs a keyed SGL");
            let mut off = 0u64;
            for part in sges.chunks(self.max_sge as usize) {
                let wr = SendWr::rdma_write(
                    self.wr(Kind::Unsignaled, u32::from(i)),
                    part,
                    k.addr + off,
                    k.key,
                );
                // SAFETY: as in `post_reads`: the SGEs live in the never-moving slot table
                // and stay unchanged until the slot's work requests complete or are dropped
                // unposted.
                st.tx.push(unsafe { wr.detach() });
                n += 1;
                off += part.iter().map(|s| u64::from(s.len())).sum::<u64>();
            }
        }
        let send_id = self.wr(Kind::Send, u32::from(i));
        let wr = match keyed {
            Some(k) if k.invalidate => SendWr::send_with_invalidate(send_id, rsp_sge, k.key),
            _ => SendWr::send(send_id, rsp_sge),
        }
        .signaled();
        // SAFETY: as above (the response SGE is the slot's `rsp_sge`).
        st.tx.push(unsafe { wr.detach() });
        n += 1;
        st.slots[i].pending += n;
        st.slots
            .set_state(i, SlotState::AwaitSend, SlotState::Sending);
        st.sq_free -= n;
        self.mark_tx(st);
        Ok(())
    }

    // ----- teardown -----

    /// Close the connection (idempotent): error the QP so the device flushes, give the queue
    /// pair up to the core, free what only waits; freed once everything is back.
    pub fn close(self: &Rc<Self>, why: &str) {
        {
            let mut st = self.st.borrow_mut();
            if st.life == Life::Closed {
                return;
            }
            st.life = Life::Closed;
            st.closed_at = Some(Instant::now());
            self.drop_unposted(&mut st, 0);
            while let Some(i) = st.data_wait.pop_front() {
                if st.slots[i].pending == 0 {
                    release_slot(self, &mut st, i);
                }
            }
            while let Some(i) = st.send_wait.pop_front() {
                release_slot(self, &mut st, i);
            }
            while let Some(i) = st.ready.pop_front() {
                release_slot(self, &mut st, i);
            }
        }
        if let Some(id) = self.id.borrow_mut().as_mut() {
            if let Err(e) = id.disconnect() {
                log::debug!("nvmf/rdma: {}: rdma_disconnect: {e}", self.peer);
            }
        }
        log::info!(
            "nvmf/rdma: {}: queue {} closing: {why}",
            self.peer,
            self.qid
        );
        self.qpair().close();
        self.with_group(|g| g.mark_closing(self.token));
    }
}

/// Free slot `i`: its pool buffers, its receive buffer (back to its queue), the slot itself.
fn release_slot(conn: &Conn, st: &mut State, i: u16) {
    if st.slots.state(i) == SlotState::Free {
        return;
    }
    let slot = &mut st.slots[i];
    slot.keyed = None;
    let recv = slot.recv.take();
    st.slots.release(i);
    if let Some(b) = recv {
        conn.repost(st, b);
    }
}

/// CQ entries promised to one QP; given back when dropped (with the connection).
pub(crate) struct CqeReservation {
    dev: Rc<CoreDev>,
    n: u32,
}

impl CqeReservation {
    fn take(dev: &Rc<CoreDev>, n: u32) -> Option<CqeReservation> {
        dev.reserve_cqes(n).then(|| CqeReservation {
            dev: dev.clone(),
            n,
        })
    }
}

impl Drop for CqeReservation {
    fn drop(&mut self) {
        self.dev.release_cqes(self.n);
    }
}

fn encode_reject_no_resources() -> [u8; crate::nvmf_cm::CM_REJECT_LEN] {
    crate::nvmf_cm::encode_reject(crate::nvmf_cm::RejectStatus::NoResources)
}

/// "address:port" of the id's peer, for logs.
fn peer_name(id: &CmId) -> String {
    id.peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "?".to_string())
}

impl QpairTransport for Conn {
    fn request_complete(&self, req: ReqPtr) {
        let mut st = self.st.borrow_mut();
        let Some(i) = self.reqs.completed_slot(&st.slots, req) else {
            log::error!(
                "nvmf/rdma: {}: completion for a request not executing",
                self.peer
            );
            return;
        };
        self.queue_response(&mut st, i);
    }

    fn disconnect(&self) {
        log::info!(
            "nvmf/rdma: {}: disconnect requested by the target",
            self.peer
        );
        self.with_group(|g| g.request_close(self.token, self.gen));
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::SlotState::{self, *};
    use keel_nvmf::reqcore::ReqSlots;

    /// Walk slots through every path the connection takes; the table allows each step.
    #[test]
    fn slot_paths_are_legal() {
        let paths: &[&[SlotState]] = &[
            // No data or in-capsule data.
            &[New, Ready, Executing, AwaitSend, Sending],
            // Host read (keyed): buffers, then the core, then RDMA WRITE + SEND.
            &[New, AwaitData, Ready, Executing, AwaitSend, Sending],
            // Host write (keyed): RDMA READ first.
            &[
                New, AwaitData, Reading, Ready, Executing, AwaitSend, Sending,
            ],
            // Failed before running.
            &[New, AwaitSend, Sending],
            &[New, AwaitData, AwaitSend, Sending],
            // Closed while reading.
            &[New, AwaitData, Reading],
        ];
        keel_nvmf::reqcore::walk_slot_paths(paths);
    }

    #[test]
    #[should_panic(expected = "illegal transition")]
    fn executing_cannot_skip_the_response() {
        let mut t: ReqSlots<SlotState, ()> = ReqSlots::new(1, || ());
        let i = t.take(New).unwrap();
        t.set_state(i, New, Ready);
        t.set_state(i, Ready, Executing);
        t.set_state(i, Executing, Sending);
    }
}
