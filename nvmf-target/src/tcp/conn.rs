//! HOT PATH: one NVMe/TCP connection (one queue pair) on its poll group's core.
//!
//! Receive: bytes go through [`Rx`]; each command capsule takes a pre-allocated request slot,
//! gets pool buffers for its data (in-capsule data received into them, larger writes pulled
//! with R2T + H2CData, reads filled by the core) and is executed by the core. Send: completed
//! requests, R2Ts and the ICResp queue up as PDUs and leave in gathered `sendmsg` calls (header
//! bytes from per-slot buffers, data straight from the pool buffers).
//!
//! Borrow discipline: the mutable state sits in one `RefCell`, never borrowed across a call
//! into the core (`execute`, `close`), because the core may call back (`request_complete`)
//! from inside those.

use super::group::{GroupHandle, GroupLink};
use super::pdu::{
    digest, digest_append, encode_data_header, encode_term_req, negotiate, CapsuleRespHeader,
    CommonHeader, DataHeader, DataPdu, IcResp, Negotiated, R2tHeader, RxLimits, TermError, Wire,
    DIGEST_LEN, FES_DATA_OUT_OF_RANGE, FLAG_HDGSTF, IC_HLEN, PDU_C2H_DATA, PDU_CAPSULE_RESP,
    PDU_R2T, SHORT_HLEN, TERM_MAX_PLEN,
};
use super::recv::{HostPdu, Rx, RxEvent};
use super::sgl::{data_desc, is_connect, xfer_of, DataDesc};
use crate::reqcore::{self, start_request, ReqPool, ReqSlots, SqHead};
use crate::request::{NvmfRequest, ReqPtr};
use crate::target::Qpair;
use crate::transport::{ListenAddr, QpairTransport};
use keel_nvme::cmd::{DataXfer, NvmeCmd};
use keel_nvme::status::Status;
use keel_reactor::pool::PoolError;
use std::cell::{Cell, OnceCell, RefCell};
use std::collections::VecDeque;
use std::io;
use std::net::{Shutdown, TcpStream};
use std::os::fd::AsRawFd;
use std::rc::{Rc, Weak};
use std::time::Instant;

/// Most R2Ts in flight per command (the host's MAXR2T+1 is capped to this).
const R2T_SLOTS: usize = 4;
/// Most iovecs in one `sendmsg`.
const IOV_BATCH: usize = 64;
/// Most socket reads per connection per poll (fairness between connections).
const READ_BUDGET: usize = 8;
/// C2HData header room: header, digest and padding up to a PDO of at most 255.
const C2H_HDR_ROOM: usize = 256;
/// Most pool memory one connection may hold for host-to-controller data it asked for with
/// R2T and has not received yet. Without it a host could pin queue depth × max I/O size of
/// the shared pool (16 MiB at 128 × 128 KiB) by sending write capsules and never the data.
/// A write that would go over waits (parsed, holding only its slot) until earlier transfers
/// are in; one transfer is always let through, so a max_io_size above the cap still works.
pub const MAX_R2T_BUFFERED_PER_CONN: usize = 1024 * 1024;

/// Per-connection settings, derived from the transport options.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnConfig {
    /// Request slots (the deepest queue a host may open).
    pub slots: usize,
    /// In-capsule data limit on I/O queues.
    pub icd_io: u32,
    /// In-capsule data limit on the admin queue and before Connect.
    pub icd_admin: u32,
    /// MAXH2CDATA announced in ICResp.
    pub maxh2cdata: u32,
    /// Largest data transfer of one command.
    pub max_io_size: u32,
    /// Size of each pool buffer a command's data is split over.
    pub buf_chunk: usize,
    /// Send C2HData with SUCCESS instead of a response capsule.
    pub c2h_success: bool,
    /// Submission queue size assumed before Connect (for SQHD).
    pub aq_depth: u16,
}

/// TCP request slot states. Legal moves ([`reqcore::SlotState::legal`]): Free → New; New →
/// CapsuleData | AwaitBuf | Executing | Sending (answered early); CapsuleData → Executing |
/// Sending; AwaitBuf → AwaitH2C | Sending; AwaitH2C → Executing | Sending; Executing →
/// Sending; and any state → Free (release, also on close).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SlotState {
    Free,
    /// Taken for a command capsule being parsed.
    New,
    /// Receiving in-capsule data.
    CapsuleData,
    /// A write waiting for its pool buffers (R2T cap or pool empty); no R2T sent yet.
    AwaitBuf,
    /// Waiting for H2CData after R2T(s).
    AwaitH2C,
    /// With the core.
    Executing,
    /// Response queued for sending.
    Sending,
}

impl reqcore::SlotState for SlotState {
    const COUNT: usize = 7;
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
                | (New, CapsuleData | AwaitBuf | Executing | Sending)
                | (CapsuleData | AwaitH2C, Executing | Sending)
                | (AwaitBuf, AwaitH2C | Sending)
                | (Executing, Sending)
                | (_, Free)
        )
    }
}

/// TCP's own data of one request slot (state and buffers are in the request core).
struct Slot {
    /// Answer with this status instead of executing (SGL problem, data digest error).
    early: Option<Status>,
    h2c_done: u32,
    r2t_sent: u32,
    r2t_seq: usize,
    /// Bytes counted in `State::r2t_held` for this slot.
    held: u32,
    r2t_hdr: [[u8; SHORT_HLEN + DIGEST_LEN]; R2T_SLOTS],
    c2h_hdr: [u8; C2H_HDR_ROOM],
    c2h_hdr_len: usize,
    ddgst: [u8; DIGEST_LEN],
    rsp: [u8; SHORT_HLEN + DIGEST_LEN],
    rsp_len: usize,
    send_data: bool,
    send_rsp: bool,
    connect_qid: Option<u16>,
}

impl Slot {
    fn new() -> Slot {
        Slot {
            early: None,
            h2c_done: 0,
            r2t_sent: 0,
            r2t_seq: 0,
            held: 0,
            r2t_hdr: [[0; SHORT_HLEN + DIGEST_LEN]; R2T_SLOTS],
            c2h_hdr: [0; C2H_HDR_ROOM],
            c2h_hdr_len: 0,
            ddgst: [0; DIGEST_LEN],
            rsp: [0; SHORT_HLEN + DIGEST_LEN],
            rsp_len: 0,
            send_data: false,
            send_rsp: false,
            connect_qid: None,
        }
    }
}

/// One queued outgoing PDU (or PDU group).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Tx {
    IcResp,
    Term,
    R2t {
        slot: u16,
        k: u8,
    },
    /// A completed request: C2HData (+ data + digest) and/or the response capsule.
    Done(u16),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Life {
    Open,
    /// Term request queued: flush it, then close.
    Terminating,
    Closed,
}

struct State {
    rx: Rx,
    neg: Option<Negotiated>,
    slots: ReqSlots<SlotState, Slot>,
    txq: VecDeque<Tx>,
    /// Bytes of the head of `txq` already sent.
    tx_off: usize,
    iov: Box<[libc::iovec]>,
    icresp: [u8; IC_HLEN],
    term: [u8; TERM_MAX_PLEN],
    term_len: usize,
    life: Life,
    qid: Option<u16>,
    sq_head: SqHead,
    /// A Connect completed: read qid / sq size from the core before the next capsule.
    refresh_q: bool,
    epollout: bool,
    /// Interrupt mode: EPOLLIN is off while the receive machine is blocked (see
    /// [`Conn::park_reads`]).
    reads_parked: bool,
    /// Blocked on a free slot or pool buffers: retried every poll.
    stalled: bool,
    /// Slot whose data the machine is receiving, and the length of that PDU's data.
    cur_data: Option<(u16, u32)>,
    /// Pool bytes held by slots awaiting H2CData (capped by [`MAX_R2T_BUFFERED_PER_CONN`]).
    r2t_held: usize,
    /// Writes in state `AwaitBuf`, oldest first.
    buf_wait: VecDeque<u16>,
    /// The head of `buf_wait` found the pool empty: retry on the next poll.
    pool_wait: bool,
}

/// What to do after one receive step, outside the state borrow.
enum Action {
    Continue,
    NeedMore,
    Execute(ReqPtr),
    Stall,
    Close,
}

/// One connection.
pub struct Conn {
    sock: TcpStream,
    /// The poll group serving this connection (it owns the connection: a weak handle).
    group: Weak<dyn GroupLink>,
    token: u32,
    transport_id: u64,
    peer: String,
    cfg: ConnConfig,
    qpair: OnceCell<Rc<Qpair>>,
    reqs: OnceCell<ReqPool>,
    st: RefCell<State>,
    dirty: Cell<bool>,
    /// The host must have connected its queue (ICReq, then Fabrics Connect) by then.
    connect_deadline: Instant,
    /// Interrupt mode: stop watching for input while the receive machine is blocked, so
    /// unread bytes do not wake the reactor on every iteration (the group's stall poller
    /// retries instead). Busy mode leaves the interest set alone (no extra syscalls).
    park_when_stalled: bool,
}

fn empty_iov() -> libc::iovec {
    libc::iovec {
        iov_base: std::ptr::null_mut(),
        iov_len: 0,
    }
}

impl Conn {
    /// A connection for `sock` (already non-blocking) accepted on `listen`, served by the
    /// poll group `at` names.
    pub(crate) fn new(
        sock: TcpStream,
        at: GroupHandle,
        transport_id: u64,
        listen: ListenAddr,
        cfg: ConnConfig,
        connect_deadline: Instant,
    ) -> Rc<Conn> {
        let GroupHandle {
            link: group,
            token,
            park_when_stalled,
        } = at;
        let peer = sock
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "?".to_string());
        let conn = Rc::new(Conn {
            sock,
            group,
            token,
            transport_id,
            peer,
            cfg,
            qpair: OnceCell::new(),
            reqs: OnceCell::new(),
            st: RefCell::new(State {
                rx: Rx::new(RxLimits {
                    max_in_capsule: cfg.icd_admin,
                    maxh2cdata: cfg.maxh2cdata,
                }),
                neg: None,
                slots: ReqSlots::new(0, Slot::new),
                txq: VecDeque::new(),
                tx_off: 0,
                iov: vec![empty_iov(); IOV_BATCH].into_boxed_slice(),
                icresp: [0; IC_HLEN],
                term: [0; TERM_MAX_PLEN],
                term_len: 0,
                life: Life::Open,
                qid: None,
                sq_head: SqHead::new(cfg.aq_depth),
                refresh_q: false,
                epollout: false,
                reads_parked: false,
                stalled: false,
                cur_data: None,
                r2t_held: 0,
                buf_wait: VecDeque::new(),
                pool_wait: false,
            }),
            dirty: Cell::new(false),
            connect_deadline,
            park_when_stalled,
        });
        let weak: Weak<dyn QpairTransport> = Rc::downgrade(&conn) as Weak<dyn QpairTransport>;
        let _ = conn.qpair.set(Qpair::new(listen, weak));
        conn
    }

    /// The connection's token in its poll group.
    pub fn token(&self) -> u32 {
        self.token
    }

    /// The transport instance that accepted it.
    pub fn transport_id(&self) -> u64 {
        self.transport_id
    }

    fn qpair(&self) -> &Rc<Qpair> {
        self.qpair.get().expect("qpair set at construction")
    }

    /// Whether the connection is closed and every request came back (it can be freed).
    pub fn reapable(&self) -> bool {
        let st = self.st.borrow();
        st.life == Life::Closed && st.slots.outstanding() == 0
    }

    /// Whether the connection is still open without a connected queue at `now`, past its
    /// deadline (a host that never sends ICReq or Connect).
    pub fn connect_expired(&self, now: Instant) -> bool {
        now >= self.connect_deadline
            && self.qpair().qid().is_none()
            && self.st.borrow().life == Life::Open
    }

    /// Whether the connection is open and has not connected its queue yet (the connect
    /// timeout still watches it).
    pub fn awaiting_connect(&self) -> bool {
        self.qpair().qid().is_none() && self.st.borrow().life == Life::Open
    }

    /// The peer's address.
    pub fn peer_addr(&self) -> &str {
        &self.peer
    }

    /// Whether it waits for a slot or buffers.
    pub fn stalled(&self) -> bool {
        self.st.borrow().stalled
    }

    /// Whether the `dirty` mark is set (queued output to flush).
    pub fn take_dirty(&self) -> bool {
        self.dirty.replace(false)
    }

    /// Tell the poll group something (nothing once the group is gone).
    #[inline]
    fn with_group(&self, f: impl FnOnce(&dyn GroupLink)) {
        if let Some(g) = self.group.upgrade() {
            f(&*g);
        }
    }

    fn mark_dirty(&self) {
        if !self.dirty.replace(true) {
            self.with_group(|g| g.mark_dirty(self.token));
        }
    }

    fn req_ptr(&self, i: u16) -> ReqPtr {
        self.reqs.get().expect("slots exist after ICReq").ptr(i)
    }

    /// The request of slot `i`, for the transport's own use.
    ///
    /// # Safety
    /// The slot must not be with the core (state other than `Executing`), and no other
    /// reference to that request may be live.
    #[allow(clippy::mut_from_ref)]
    unsafe fn req_mut(&self, i: u16) -> &mut NvmfRequest {
        // SAFETY: caller's contract (that of `ReqPool::get_mut`).
        unsafe { self.reqs.get().expect("slots exist after ICReq").get_mut(i) }
    }

    // ----- receive -----

    /// The socket is readable (or a stalled connection retries): read and handle PDUs, then
    /// flush what that produced.
    pub fn on_readable(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            if st.life == Life::Open && st.pool_wait {
                self.start_waiting_writes(&mut st);
            }
        }
        let mut reads = 0;
        loop {
            loop {
                let action = {
                    let mut st = self.st.borrow_mut();
                    if st.life != Life::Open {
                        return;
                    }
                    st.stalled = false;
                    self.step(&mut st)
                };
                match action {
                    Action::Continue => {}
                    Action::NeedMore => break,
                    Action::Execute(req) => self.qpair().execute(req),
                    Action::Stall => {
                        {
                            let mut st = self.st.borrow_mut();
                            st.stalled = true;
                            // The unread bytes stay in the socket until a slot or buffers
                            // free up: stop being woken by them.
                            self.park_reads(&mut st, true);
                        }
                        self.with_group(|g| g.mark_stalled(self.token));
                        self.flush();
                        return;
                    }
                    Action::Close => {
                        self.terminate();
                        return;
                    }
                }
            }
            if reads == READ_BUDGET {
                break;
            }
            reads += 1;
            match self.read_socket() {
                Ok(0) => {
                    log::info!("nvmf/tcp: {} closed the connection", self.peer);
                    self.close();
                    return;
                }
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => {
                    log::info!("nvmf/tcp: {}: receive failed: {e}", self.peer);
                    self.close();
                    return;
                }
            }
        }
        {
            let mut st = self.st.borrow_mut();
            // The receive machine moves again: watch the socket again.
            self.park_reads(&mut st, false);
            if st.pool_wait {
                // Queued writes found the pool empty: retry them next poll. Reading goes on
                // (the data of writes already granted frees buffers), so input stays watched.
                st.stalled = true;
                drop(st);
                self.with_group(|g| g.mark_stalled(self.token));
            }
        }
        self.flush();
    }

    /// The socket reported an error or a hang-up. A connection whose receive machine is
    /// blocked would not read (and so not see the error) until it resumes, and the level-
    /// triggered event would fire on every poll meanwhile: the peer is gone, close it.
    /// Otherwise read as usual (the read reports the error or the end of the stream).
    pub fn on_hangup(self: &Rc<Self>) {
        if self.st.borrow().reads_parked {
            log::info!(
                "nvmf/tcp: {}: socket error or hang-up while stalled; closing the connection",
                self.peer
            );
            self.close();
        } else {
            self.on_readable();
        }
    }

    /// One read from the socket into the staging buffer or straight into the data buffers.
    fn read_socket(&self) -> io::Result<usize> {
        let mut st = self.st.borrow_mut();
        let st = &mut *st;
        let fd = self.sock.as_raw_fd();
        if st.rx.wants_direct() {
            let n = st.rx.direct_iovs(&mut st.iov);
            // SAFETY: the iovecs point into this connection's pool buffers and staging buffer,
            // valid and unaliased for the duration of the call.
            let r = unsafe { libc::readv(fd, st.iov.as_ptr(), n as i32) };
            if r < 0 {
                return Err(io::Error::last_os_error());
            }
            st.rx.direct_advance(r as usize);
            return Ok(r as usize);
        }
        let space = st.rx.stage_space();
        if space.is_empty() {
            return Err(io::ErrorKind::WouldBlock.into());
        }
        // SAFETY: `space` is a valid writable buffer of its length.
        let r = unsafe { libc::recv(fd, space.as_mut_ptr().cast(), space.len(), 0) };
        if r < 0 {
            return Err(io::Error::last_os_error());
        }
        st.rx.staged(r as usize);
        Ok(r as usize)
    }

    fn step(&self, st: &mut State) -> Action {
        if st.refresh_q {
            st.refresh_q = false;
            st.qid = self.qpair().qid();
            st.sq_head.resize(self.qpair().sq_size());
            let icd = match st.qid {
                Some(q) if q > 0 => self.cfg.icd_io,
                _ => self.cfg.icd_admin,
            };
            st.rx.set_limits(RxLimits {
                max_in_capsule: icd,
                maxh2cdata: self.cfg.maxh2cdata,
            });
        }
        match st.rx.step() {
            RxEvent::NeedMore => Action::NeedMore,
            RxEvent::Fatal(e) => {
                log::warn!("nvmf/tcp: {}: {e}; terminating the connection", self.peer);
                let bad = st.rx.bad_header();
                let mut term = [0u8; TERM_MAX_PLEN];
                let n = encode_term_req(&e, bad, &mut term);
                st.term = term;
                st.term_len = n;
                Action::Close
            }
            RxEvent::Pdu(HostPdu::IcReq(req), _) => self.on_icreq(st, &req),
            RxEvent::Pdu(HostPdu::TermReq(t), _) => {
                log::warn!(
                    "nvmf/tcp: {} terminated the connection: FES {:#x}, FEI {}",
                    self.peer,
                    t.fes,
                    t.fei()
                );
                st.term_len = 0;
                Action::Close
            }
            RxEvent::Pdu(HostPdu::Capsule(c), f) => self.on_capsule(st, &c.sqe, f.data_len),
            RxEvent::Pdu(HostPdu::H2CData(h), f) => self.on_h2c_data(st, &h, f.data_len),
            RxEvent::DataDone { digest_ok } => self.on_data_done(st, digest_ok),
        }
    }

    fn fatal(&self, st: &mut State, e: TermError, hdr: &[u8]) -> Action {
        log::warn!("nvmf/tcp: {}: {e}; terminating the connection", self.peer);
        st.rx.kill();
        let mut term = [0u8; TERM_MAX_PLEN];
        st.term_len = encode_term_req(&e, hdr, &mut term);
        st.term = term;
        Action::Close
    }

    fn on_icreq(&self, st: &mut State, req: &super::pdu::IcReq) -> Action {
        let neg = match negotiate(req, self.cfg.maxh2cdata, true) {
            Ok(n) => n,
            Err(e) => return self.fatal(st, e, req.as_bytes()),
        };
        log::debug!(
            "nvmf/tcp: {}: ICReq hpda {} digests h={} d={} maxr2t {}",
            self.peer,
            neg.hpda,
            neg.hdgst,
            neg.ddgst,
            neg.maxr2t
        );
        st.rx.set_negotiated(neg);
        st.neg = Some(neg);
        let resp = IcResp::new(neg.cpda, neg.hdgst, neg.ddgst, neg.maxh2cdata);
        st.icresp.copy_from_slice(resp.as_bytes());
        // The request slots, now that the peer speaks NVMe/TCP.
        let n = self.cfg.slots;
        st.slots = ReqSlots::new(n, Slot::new);
        st.buf_wait = VecDeque::with_capacity(n);
        st.txq = VecDeque::with_capacity(n * (R2T_SLOTS + 1) + 4);
        let _ = self.reqs.set(ReqPool::new(n));
        st.txq.push_back(Tx::IcResp);
        Action::Continue
    }

    fn on_capsule(&self, st: &mut State, cmd: &NvmeCmd, icd_len: u32) -> Action {
        if st.neg.is_none() {
            return Action::Close;
        }
        let Some(i) = st.slots.take(SlotState::New) else {
            st.rx.defer();
            return Action::Stall;
        };
        // SAFETY: slot `i` was free: the core does not hold its request.
        let req = unsafe { self.req_mut(i) };
        start_request(req, i, cmd, xfer_of(cmd));
        let slot = &mut st.slots[i];
        slot.early = None;
        slot.h2c_done = 0;
        slot.r2t_sent = 0;
        slot.r2t_seq = 0;
        slot.connect_qid = is_connect(cmd).then_some((cmd.cdw10 >> 16) as u16);
        // Before Connect only Connect runs (the core answers anything else with Command
        // Sequence Error): take no pool buffers and send no R2T for the rest, so a host that
        // never connects cannot pin memory. In-capsule data is still received (it is in the
        // stream), into buffers no larger than the admin in-capsule limit.
        let unconnected = st.qid.is_none() && slot.connect_qid.is_none();
        if unconnected && icd_len == 0 {
            return self.complete_early(st, i, Status::COMMAND_SEQUENCE_ERROR);
        }
        let desc = data_desc(cmd);

        if icd_len > 0 {
            // In-capsule data: receive all of it, check the SGL once it is in.
            let (len, early) = match (req.xfer, desc) {
                (DataXfer::HostToController, DataDesc::InCapsule { offset: 0, len })
                    if len <= icd_len =>
                {
                    (len, None)
                }
                (DataXfer::HostToController, DataDesc::InCapsule { offset: 0, .. }) => {
                    (0, Some(Status::DATA_SGL_LENGTH_INVALID))
                }
                (DataXfer::HostToController, DataDesc::InCapsule { .. }) => {
                    (0, Some(Status::INVALID_SGL_OFFSET))
                }
                (DataXfer::HostToController, _) => (0, Some(Status::SGL_DESCRIPTOR_TYPE_INVALID)),
                _ => (0, Some(Status::INVALID_FIELD)),
            };
            let early = if unconnected {
                Some(Status::COMMAND_SEQUENCE_ERROR)
            } else {
                early
            };
            if let Err(e) = st.slots.alloc_bufs(i, icd_len, self.cfg.buf_chunk) {
                return self.undo_capsule(st, i, e);
            }
            st.slots.set_iovs(i, req, icd_len);
            // SAFETY: the iovecs describe slot `i`'s pool buffers, owned by the slot until
            // the slot is released, which only happens after the data phase (or on close,
            // when the receive machine is dead).
            if let Err(e) = unsafe { st.rx.expect_data(req.data_iovs(), 0) } {
                return self.fatal(st, e, &[]);
            }
            req.length = len;
            st.slots[i].early = early;
            st.slots
                .set_state(i, SlotState::New, SlotState::CapsuleData);
            st.cur_data = Some((i, icd_len));
            return Action::Continue;
        }

        let len = match desc {
            DataDesc::Transport { len } | DataDesc::InCapsule { len, .. } => len,
            DataDesc::Unsupported(_) => 0,
        };
        let early = match (req.xfer, desc) {
            (DataXfer::None, _) => None,
            (DataXfer::Bidirectional, _) => Some(Status::INVALID_FIELD),
            (_, DataDesc::Unsupported(_)) => Some(Status::SGL_DESCRIPTOR_TYPE_INVALID),
            (_, DataDesc::InCapsule { len, .. }) if len > 0 => {
                Some(Status::DATA_SGL_LENGTH_INVALID)
            }
            (_, _) if len > self.cfg.max_io_size => Some(Status::DATA_SGL_LENGTH_INVALID),
            _ => None,
        };
        if let Some(status) = early {
            return self.complete_early(st, i, status);
        }
        if req.xfer == DataXfer::None || len == 0 {
            st.slots.set_state(i, SlotState::New, SlotState::Executing);
            return Action::Execute(self.req_ptr(i));
        }
        req.length = len;
        if req.xfer == DataXfer::HostToController {
            // Parsed and queued (not deferred): the H2CData of earlier writes may follow it
            // in the stream.
            st.slots.set_state(i, SlotState::New, SlotState::AwaitBuf);
            st.buf_wait.push_back(i);
            self.start_waiting_writes(st);
            return Action::Continue;
        }
        if let Err(e) = st.slots.alloc_bufs(i, len, self.cfg.buf_chunk) {
            return self.undo_capsule(st, i, e);
        }
        st.slots.set_iovs(i, req, len);
        st.slots.set_state(i, SlotState::New, SlotState::Executing);
        Action::Execute(self.req_ptr(i))
    }

    /// Give pool buffers to the queued writes, oldest first, while the connection's R2T
    /// budget allows (one transfer always may), and send their R2Ts. If the pool ran dry,
    /// `pool_wait` is set: [`Conn::on_readable`] stalls the connection to retry next poll.
    fn start_waiting_writes(&self, st: &mut State) {
        st.pool_wait = false;
        while let Some(&i) = st.buf_wait.front() {
            // SAFETY: the slot waits for buffers: not with the core.
            let req = unsafe { self.req_mut(i) };
            let len = req.length;
            if st.r2t_held > 0 && st.r2t_held + len as usize > MAX_R2T_BUFFERED_PER_CONN {
                return;
            }
            if let Err(e) = st.slots.alloc_bufs(i, len, self.cfg.buf_chunk) {
                if let PoolError::BadSize(_) = e {
                    st.buf_wait.pop_front();
                    self.complete_early(st, i, Status::DATA_SGL_LENGTH_INVALID);
                    continue;
                }
                st.pool_wait = true;
                return;
            }
            st.buf_wait.pop_front();
            st.slots.set_iovs(i, req, len);
            st.slots
                .set_state(i, SlotState::AwaitBuf, SlotState::AwaitH2C);
            st.slots[i].held = len;
            st.r2t_held += len as usize;
            self.issue_r2ts(st, i, req.cmd.cid, len);
        }
    }

    /// Buffers could not be had: give the slot back and retry the capsule later (or fail
    /// it if it can never be served).
    fn undo_capsule(&self, st: &mut State, i: u16, e: PoolError) -> Action {
        if let PoolError::BadSize(_) = e {
            return self.complete_early(st, i, Status::DATA_SGL_LENGTH_INVALID);
        }
        st.slots.release(i);
        st.rx.defer();
        Action::Stall
    }

    fn complete_early(&self, st: &mut State, i: u16, status: Status) -> Action {
        // SAFETY: slot `i` is not with the core.
        let req = unsafe { self.req_mut(i) };
        req.rsp.status = status.to_field();
        self.complete_locked(st, i);
        Action::Continue
    }

    fn issue_r2ts(&self, st: &mut State, i: u16, cid: u16, len: u32) {
        let hdgst = st.neg.is_some_and(|n| n.hdgst);
        let max_out = st
            .neg
            .map_or(1, |n| (n.maxr2t as usize).saturating_add(1))
            .min(R2T_SLOTS);
        let chunk = self.cfg.maxh2cdata;
        let slot = &mut st.slots[i];
        while slot.r2t_sent < len
            && ((slot.r2t_sent - slot.h2c_done).div_ceil(chunk) as usize) < max_out
        {
            let off = slot.r2t_sent;
            let l = chunk.min(len - off);
            let k = slot.r2t_seq % R2T_SLOTS;
            slot.r2t_seq += 1;
            let mut common = CommonHeader::new(PDU_R2T, SHORT_HLEN);
            if hdgst {
                common.flags |= FLAG_HDGSTF;
                common.plen += DIGEST_LEN as u32;
            }
            let r2t = R2tHeader {
                common,
                cccid: cid,
                ttag: i,
                r2to: off,
                r2tl: l,
                rsvd: [0; 4],
            };
            let buf = &mut slot.r2t_hdr[k];
            buf[..SHORT_HLEN].copy_from_slice(r2t.as_bytes());
            if hdgst {
                let d = digest(&buf[..SHORT_HLEN]);
                buf[SHORT_HLEN..].copy_from_slice(&d.to_le_bytes());
            }
            slot.r2t_sent += l;
            st.txq.push_back(Tx::R2t {
                slot: i,
                k: k as u8,
            });
        }
    }

    fn on_h2c_data(&self, st: &mut State, h: &DataHeader, data_len: u32) -> Action {
        let i = h.ttag;
        let ok_slot = st.slots.get_state(usize::from(i)) == Some(SlotState::AwaitH2C);
        if !ok_slot {
            return self.fatal(
                st,
                TermError::field(10, "H2CData for an unknown transfer tag"),
                h.as_bytes(),
            );
        }
        // SAFETY: the slot awaits data: not with the core.
        let req = unsafe { self.req_mut(i) };
        if h.cccid != req.cmd.cid {
            return self.fatal(
                st,
                TermError::field(8, "H2CData CCCID does not match the transfer"),
                h.as_bytes(),
            );
        }
        if h.datal != data_len {
            return self.fatal(
                st,
                TermError::field(16, "H2CData DATAL does not match PLEN"),
                h.as_bytes(),
            );
        }
        let slot = &st.slots[i];
        if h.datao != slot.h2c_done || h.datao as u64 + h.datal as u64 > slot.r2t_sent as u64 {
            return self.fatal(
                st,
                TermError::status(FES_DATA_OUT_OF_RANGE, "H2CData outside the requested range"),
                h.as_bytes(),
            );
        }
        // SAFETY: the slot's pool buffers stay owned by the slot during the data phase.
        if let Err(e) = unsafe { st.rx.expect_data(req.data_iovs(), h.datao as usize) } {
            return self.fatal(st, e, h.as_bytes());
        }
        st.cur_data = Some((i, data_len));
        Action::Continue
    }

    fn on_data_done(&self, st: &mut State, digest_ok: bool) -> Action {
        let Some((i, len)) = st.cur_data.take() else {
            return Action::Close;
        };
        // SAFETY: the slot is receiving data: not with the core.
        let req = unsafe { self.req_mut(i) };
        let state = st.slots.state(i);
        let slot = &mut st.slots[i];
        if !digest_ok {
            log::warn!(
                "nvmf/tcp: {}: data digest error on command {}",
                self.peer,
                req.cmd.cid
            );
            slot.early.get_or_insert(Status::TRANSIENT_TRANSPORT_ERROR);
        }
        match state {
            SlotState::CapsuleData => {
                let length = req.length;
                st.slots.set_iovs(i, req, length);
            }
            SlotState::AwaitH2C => {
                slot.h2c_done += len;
                if slot.h2c_done < req.length {
                    let (cid, total) = (req.cmd.cid, req.length);
                    self.issue_r2ts(st, i, cid, total);
                    return Action::Continue;
                }
                st.r2t_held -= std::mem::take(&mut slot.held) as usize;
                self.start_waiting_writes(st);
            }
            _ => return Action::Close,
        }
        if let Some(status) = st.slots[i].early {
            return self.complete_early(st, i, status);
        }
        st.slots.set_state(i, state, SlotState::Executing);
        Action::Execute(self.req_ptr(i))
    }

    // ----- completion and send -----

    /// Queue the answer of slot `i` (its request is back from the core or failed early).
    fn complete_locked(&self, st: &mut State, i: u16) {
        if st.life != Life::Open {
            release_slot(st, i);
            return;
        }
        // SAFETY: the core gave the request back (or never had it).
        let req = unsafe { self.req_mut(i) };
        let neg = st.neg.unwrap_or(Negotiated {
            hdgst: false,
            ddgst: false,
            cpda: 0,
            hpda: 0,
            maxh2cdata: self.cfg.maxh2cdata,
            maxr2t: 0,
        });
        let state = st.slots.state(i);
        let slot = &mut st.slots[i];
        let success = Status::from_field(req.rsp.status).is_success();
        if let Some(qid) = slot.connect_qid {
            if success {
                st.refresh_q = true;
            }
            req.rsp.sqid = qid;
        } else {
            req.rsp.sqid = st.qid.unwrap_or(0);
        }
        // The command's entry is consumed: the head moves past it.
        req.rsp.sqhd = st.sq_head.advance();
        req.rsp.cid = req.cmd.cid;
        slot.send_data = req.xfer == DataXfer::ControllerToHost && req.length > 0 && success;
        slot.send_rsp = !(slot.send_data && self.cfg.c2h_success);
        let hd = if neg.hdgst { DIGEST_LEN } else { 0 };
        if slot.send_data {
            // The one data-PDU framing rule (keel_nvme::pdu), shared with the host's H2CData.
            let pdu = DataPdu {
                pdu_type: PDU_C2H_DATA,
                cccid: req.cmd.cid,
                ttag: 0,
                datao: 0,
                datal: req.length,
                last: true,
                success: !slot.send_rsp,
            };
            slot.c2h_hdr_len = encode_data_header(&mut slot.c2h_hdr, &pdu, &neg);
            if neg.ddgst {
                let mut crc = 0;
                for iov in req.data_iovs() {
                    // SAFETY: the core filled these pool buffers and gave the request back.
                    let b = unsafe { std::slice::from_raw_parts(iov.base(), iov.len()) };
                    crc = digest_append(crc, b);
                }
                slot.ddgst = crc.to_le_bytes();
            }
        }
        if slot.send_rsp {
            let mut common = CommonHeader::new(PDU_CAPSULE_RESP, SHORT_HLEN);
            if neg.hdgst {
                common.flags |= FLAG_HDGSTF;
                common.plen += DIGEST_LEN as u32;
            }
            let r = CapsuleRespHeader {
                common,
                cqe: req.rsp,
            };
            slot.rsp[..SHORT_HLEN].copy_from_slice(r.as_bytes());
            if neg.hdgst {
                let d = digest(&slot.rsp[..SHORT_HLEN]);
                slot.rsp[SHORT_HLEN..].copy_from_slice(&d.to_le_bytes());
            }
            slot.rsp_len = SHORT_HLEN + hd;
        }
        st.slots.set_state(i, state, SlotState::Sending);
        st.txq.push_back(Tx::Done(i));
    }

    /// Gather queued PDUs into `sendmsg` calls until the queue is empty or the socket is full.
    pub fn flush(self: &Rc<Self>) {
        let res = {
            let mut st = self.st.borrow_mut();
            if st.life == Life::Closed {
                return;
            }
            self.flush_locked(&mut st)
        };
        match res {
            Ok(()) => {
                let done_terminating = {
                    let st = self.st.borrow();
                    st.life == Life::Terminating && st.txq.is_empty()
                };
                if done_terminating {
                    self.close();
                }
            }
            Err(e) => {
                log::info!("nvmf/tcp: {}: send failed: {e}", self.peer);
                self.close();
            }
        }
    }

    fn flush_locked(&self, st: &mut State) -> io::Result<()> {
        let fd = self.sock.as_raw_fd();
        let mut lens = [0usize; IOV_BATCH];
        while !st.txq.is_empty() {
            let mut niov = 0;
            let mut items = 0;
            // Taken out for the loop (an empty boxed slice does not allocate).
            let mut iovs = std::mem::take(&mut st.iov);
            for (j, item) in st.txq.iter().enumerate() {
                let (n, bytes) = item_iovs(self, st, *item, &mut iovs[niov..]);
                if n == 0 {
                    break;
                }
                lens[j] = bytes;
                niov += n;
                items += 1;
                if items == IOV_BATCH {
                    break;
                }
            }
            st.iov = iovs;
            if niov == 0 {
                break;
            }
            // Skip what was already sent of the head item.
            let mut skip = st.tx_off;
            lens[0] -= skip;
            let mut first = 0;
            while skip > 0 {
                let v = &mut st.iov[first];
                if v.iov_len <= skip {
                    skip -= v.iov_len;
                    first += 1;
                } else {
                    // SAFETY: skip < iov_len: stays inside the buffer.
                    v.iov_base = unsafe { v.iov_base.cast::<u8>().add(skip) }.cast();
                    v.iov_len -= skip;
                    skip = 0;
                }
            }
            // SAFETY: zeroed msghdr is a valid "no name, no control" header.
            let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
            msg.msg_iov = st.iov[first..].as_mut_ptr();
            msg.msg_iovlen = niov - first;
            // SAFETY: the iovecs point into this connection's header buffers and the pool
            // buffers of slots in state Sending, all alive and unmodified during the call.
            let r = unsafe { libc::sendmsg(fd, &msg, libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT) };
            if r < 0 {
                let e = io::Error::last_os_error();
                return match e.kind() {
                    io::ErrorKind::WouldBlock => {
                        self.want_out(st, true);
                        Ok(())
                    }
                    io::ErrorKind::Interrupted => continue,
                    _ => Err(e),
                };
            }
            let mut left = r as usize;
            let total: usize = lens[..items].iter().sum();
            let mut done = 0;
            while done < items && left >= lens[done] {
                left -= lens[done];
                done += 1;
            }
            let head_prev = st.tx_off;
            for _ in 0..done {
                if let Some(Tx::Done(i)) = st.txq.pop_front() {
                    release_slot(st, i);
                }
            }
            st.tx_off = if done == 0 { head_prev + left } else { left };
            if (r as usize) < total {
                self.want_out(st, true);
                return Ok(());
            }
        }
        self.want_out(st, false);
        Ok(())
    }

    fn want_out(&self, st: &mut State, on: bool) {
        if st.epollout != on {
            st.epollout = on;
            let (fd, read) = (self.sock.as_raw_fd(), !st.reads_parked);
            self.with_group(|g| g.set_interest(fd, self.token, read, on));
        }
    }

    /// Interrupt mode only: drop (`park`) or restore EPOLLIN in the connection's interest set.
    /// A blocked receive machine leaves bytes unread; with EPOLLIN on, the level-triggered
    /// socket would wake the reactor on every iteration while nothing can progress. Errors and
    /// hang-ups are still reported (epoll always does); EPOLLOUT is kept as it is.
    fn park_reads(&self, st: &mut State, park: bool) {
        if self.park_when_stalled && st.reads_parked != park {
            st.reads_parked = park;
            let (fd, write) = (self.sock.as_raw_fd(), st.epollout);
            self.with_group(|g| g.set_interest(fd, self.token, !park, write));
        }
    }

    // ----- teardown -----

    /// Send the queued termination request (if any), then close.
    fn terminate(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            if st.life != Life::Open {
                return;
            }
            st.rx.kill();
            if st.term_len == 0 {
                drop(st);
                self.close();
                return;
            }
            if st.tx_off > 0 {
                // Part of the head PDU left already: a term request now would land in the
                // middle of it and the host would parse garbage. Just close.
                drop(st);
                self.close();
                return;
            }
            st.life = Life::Terminating;
            // Drop everything else queued: the term request goes out alone.
            while let Some(t) = st.txq.pop_front() {
                if let Tx::Done(i) = t {
                    release_slot(&mut st, i);
                }
            }
            st.txq.push_back(Tx::Term);
        }
        self.flush();
    }

    /// Close the connection: stop reading, drop queued output, give the queue pair up; the
    /// connection is freed once every request is back.
    pub fn close(self: &Rc<Self>) {
        {
            let mut st = self.st.borrow_mut();
            if st.life == Life::Closed {
                return;
            }
            st.life = Life::Closed;
            st.rx.kill();
            st.cur_data = None;
            st.txq.clear();
            st.tx_off = 0;
            st.buf_wait.clear();
            for i in 0..st.slots.len() as u16 {
                match st.slots.state(i) {
                    SlotState::Free | SlotState::Executing => {}
                    _ => release_slot(&mut st, i),
                }
            }
        }
        self.with_group(|g| g.forget_fd(self.sock.as_raw_fd()));
        let _ = self.sock.shutdown(Shutdown::Both);
        log::debug!("nvmf/tcp: {}: connection closed", self.peer);
        self.qpair().close();
        self.with_group(|g| g.mark_closing(self.token));
    }
}

/// Give slot `i` back (drops its buffers and its share of the R2T budget).
fn release_slot(st: &mut State, i: u16) {
    if st.slots.state(i) == SlotState::Free {
        return;
    }
    st.r2t_held -= std::mem::take(&mut st.slots[i].held) as usize;
    st.slots.release(i);
}

/// The iovecs of one queued item into `out`; returns (count, bytes), or (0, 0) if it does not
/// fit.
fn item_iovs(conn: &Conn, st: &State, item: Tx, out: &mut [libc::iovec]) -> (usize, usize) {
    fn iov(p: *const u8, len: usize) -> libc::iovec {
        libc::iovec {
            iov_base: p.cast_mut().cast(),
            iov_len: len,
        }
    }
    let hd = st.neg.map_or(0, |n| if n.hdgst { DIGEST_LEN } else { 0 });
    match item {
        Tx::IcResp => {
            if out.is_empty() {
                return (0, 0);
            }
            out[0] = iov(st.icresp.as_ptr(), IC_HLEN);
            (1, IC_HLEN)
        }
        Tx::Term => {
            if out.is_empty() {
                return (0, 0);
            }
            out[0] = iov(st.term.as_ptr(), st.term_len);
            (1, st.term_len)
        }
        Tx::R2t { slot, k } => {
            if out.is_empty() {
                return (0, 0);
            }
            let b = &st.slots[slot].r2t_hdr[k as usize];
            out[0] = iov(b.as_ptr(), SHORT_HLEN + hd);
            (1, SHORT_HLEN + hd)
        }
        Tx::Done(i) => {
            let slot = &st.slots[i];
            let req_ptr = conn.req_ptr(i);
            // SAFETY: the slot is Sending: the core is done with the request and only the
            // transport reads it.
            let req = unsafe { req_ptr.as_ref() };
            let dd = st.neg.is_some_and(|n| n.ddgst);
            let need =
                slot.send_data as usize * (2 + req.iovcnt + dd as usize) + slot.send_rsp as usize;
            if out.len() < need {
                return (0, 0);
            }
            let mut n = 0;
            let mut bytes = 0;
            if slot.send_data {
                out[n] = iov(slot.c2h_hdr.as_ptr(), slot.c2h_hdr_len);
                bytes += slot.c2h_hdr_len;
                n += 1;
                for v in req.data_iovs() {
                    out[n] = iov(v.base(), v.len());
                    bytes += v.len();
                    n += 1;
                }
                if dd {
                    out[n] = iov(slot.ddgst.as_ptr(), DIGEST_LEN);
                    bytes += DIGEST_LEN;
                    n += 1;
                }
            }
            if slot.send_rsp {
                out[n] = iov(slot.rsp.as_ptr(), slot.rsp_len);
                bytes += slot.rsp_len;
                n += 1;
            }
            (n, bytes)
        }
    }
}

impl QpairTransport for Conn {
    fn request_complete(&self, req: ReqPtr) {
        {
            let mut st = self.st.borrow_mut();
            let slot = self
                .reqs
                .get()
                .and_then(|p| p.completed_slot(&st.slots, req));
            let Some(i) = slot else {
                log::error!(
                    "nvmf/tcp: {}: completion for a request not executing",
                    self.peer
                );
                return;
            };
            self.complete_locked(&mut st, i);
        }
        self.mark_dirty();
    }

    fn disconnect(&self) {
        log::info!(
            "nvmf/tcp: {}: disconnect requested by the target",
            self.peer
        );
        self.with_group(|g| g.request_close(self.token));
    }

    fn peer(&self) -> String {
        self.peer.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::SlotState::{self, *};
    use super::*;
    use crate::reqcore::ReqSlots;
    use crate::transport::{AdrFam, TrType};
    use std::io::{Read, Write};
    use std::net::TcpListener;

    /// A poll group that only records what the connection asks of it.
    #[derive(Default)]
    struct Recorder {
        calls: RefCell<Vec<String>>,
    }

    impl GroupLink for Recorder {
        fn mark_dirty(&self, token: u32) {
            self.calls.borrow_mut().push(format!("dirty {token}"));
        }
        fn mark_stalled(&self, token: u32) {
            self.calls.borrow_mut().push(format!("stalled {token}"));
        }
        fn mark_closing(&self, token: u32) {
            self.calls.borrow_mut().push(format!("closing {token}"));
        }
        fn request_close(&self, token: u32) {
            self.calls.borrow_mut().push(format!("close {token}"));
        }
        fn set_interest(&self, _fd: i32, token: u32, read: bool, write: bool) {
            self.calls
                .borrow_mut()
                .push(format!("interest {token} {read} {write}"));
        }
        fn forget_fd(&self, _fd: i32) {
            self.calls.borrow_mut().push("forget".into());
        }
    }

    fn read_exact(c: &mut TcpStream, n: usize) -> Vec<u8> {
        let mut b = vec![0; n];
        c.read_exact(&mut b).unwrap();
        b
    }

    /// A connection driven by hand, with a recording group instead of an epoll poll group
    /// and no reactor: ICReq, a command before Connect (answered early, its slot back on
    /// the free list), then the host hangs up and the group hears of the close.
    #[test]
    fn conn_runs_without_a_poll_group() {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        let mut host = TcpStream::connect(l.local_addr().unwrap()).unwrap();
        host.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let (sock, _) = l.accept().unwrap();
        sock.set_nonblocking(true).unwrap();
        let group = Rc::new(Recorder::default());
        let link: Weak<dyn GroupLink> = Rc::downgrade(&group) as Weak<dyn GroupLink>;
        let cfg = ConnConfig {
            slots: 4,
            icd_io: 4096,
            icd_admin: 4096,
            maxh2cdata: 131072,
            max_io_size: 131072,
            buf_chunk: 131072,
            c2h_success: true,
            aq_depth: 32,
        };
        let listen = ListenAddr {
            trtype: TrType::Tcp,
            adrfam: AdrFam::Ipv4,
            traddr: "127.0.0.1".into(),
            trsvcid: "0".into(),
        };
        let at = GroupHandle {
            link,
            token: 7,
            park_when_stalled: false,
        };
        let far = Instant::now() + std::time::Duration::from_secs(60);
        let conn = Conn::new(sock, at, 1, listen, cfg, far);

        // ICReq: type 0, HLEN = PLEN = 128, PFV 0, no digests.
        let mut icreq = [0u8; 128];
        icreq[2] = 128;
        icreq[4..8].copy_from_slice(&128u32.to_le_bytes());
        host.write_all(&icreq).unwrap();
        conn.on_readable();
        let icresp = read_exact(&mut host, 128);
        assert_eq!(icresp[0], 0x01, "ICResp");
        assert_eq!(conn.st.borrow().slots.len(), 4);

        // Identify (admin opcode 6, CID 0x1234) before Connect: Command Sequence Error.
        let mut cap = [0u8; 72];
        cap[0] = 0x04;
        cap[2] = 72;
        cap[4..8].copy_from_slice(&72u32.to_le_bytes());
        cap[8] = 0x06;
        cap[10..12].copy_from_slice(&0x1234u16.to_le_bytes());
        host.write_all(&cap).unwrap();
        conn.on_readable();
        let rsp = read_exact(&mut host, 24);
        assert_eq!(rsp[0], 0x05, "CapsuleResp");
        let cqe = &rsp[8..];
        assert_eq!(u16::from_le_bytes([cqe[12], cqe[13]]), 0x1234);
        let status = u16::from_le_bytes([cqe[14], cqe[15]]) >> 1;
        assert_eq!(status, Status::COMMAND_SEQUENCE_ERROR.to_field() >> 1);
        {
            let st = conn.st.borrow();
            assert_eq!(st.slots.outstanding(), 0, "the slot is free again");
            assert_eq!(st.slots.count(SlotState::Free), 4);
        }

        drop(host);
        conn.on_readable();
        assert!(conn.reapable());
        let calls = group.calls.borrow();
        assert!(calls.iter().any(|c| c == "forget"), "{calls:?}");
        assert!(calls.iter().any(|c| c == "closing 7"), "{calls:?}");
    }

    /// Walk slots through every path the connection takes; the table allows each step.
    #[test]
    fn slot_paths_are_legal() {
        let paths: &[&[SlotState]] = &[
            // No data, or a read.
            &[New, Executing, Sending],
            // In-capsule data.
            &[New, CapsuleData, Executing, Sending],
            // Write pulled with R2T.
            &[New, AwaitBuf, AwaitH2C, Executing, Sending],
            // Answered early at each stage.
            &[New, Sending],
            &[New, CapsuleData, Sending],
            &[New, AwaitBuf, Sending],
            &[New, AwaitBuf, AwaitH2C, Sending],
        ];
        crate::reqcore::walk_slot_paths(paths);
    }

    #[test]
    #[should_panic(expected = "illegal transition")]
    fn data_cannot_arrive_after_execution() {
        let mut t: ReqSlots<SlotState, ()> = ReqSlots::new(1, || ());
        let i = t.take(New).unwrap();
        t.set_state(i, New, Executing);
        t.set_state(i, Executing, AwaitH2C);
    }
}
