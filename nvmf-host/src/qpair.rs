//! HOT PATH: one host queue pair (admin or I/O) on one socket, owned by one core and driven
//! by the core's poll group (`group.rs`: one poller for all the core's queue pairs).
//!
//! - Commands take a pre-allocated slot indexed by CID (a free stack, no allocation, no lock).
//! - Send: submissions only queue; each poll gathers the queued PDUs (capsule headers from the
//!   slot, in-capsule and H2CData payloads straight from the caller's iovecs, digests from the
//!   slot) into one `sendmsg`. Writes above the in-capsule size wait for R2T; each R2T is
//!   answered with H2CData PDUs of at most MAXH2CDATA bytes, one in flight per slot, the next
//!   queued as soon as the previous one left.
//! - Receive: one `recvmsg` scatters into the remaining payload of the C2HData PDU being
//!   received (the caller's buffer: no second copy) and then into a staging buffer, where
//!   headers (and any payload that arrived with them, copied once to the caller's buffer) are
//!   parsed, many PDUs per call.
//! - Completions are collected while the state is borrowed and delivered after, so callbacks
//!   may submit again at once; a callback never runs inside `submit`.
//!
//! A slot is released only when its response arrived *and* every PDU referring to the
//! caller's memory has left, so a caller's buffer is never touched after its completion.
//!
//! An I/O queue pair can exist before its connection ([`Qpair::connecting`]): I/O submitted
//! then waits (at most `depth` commands, in order) and goes out once the Fabrics Connect
//! succeeded ([`Qpair::set_ready`]), or completes as aborted if the connection failed.

use super::sock::{self, Xfer};
use keel_bdev::iov::IovCursor;
use keel_bdev::{IoCallback, IoStatus, IoVec, MAX_IOVS};
use keel_nvme::cmd::{NvmeCmd, NvmeCpl};
use keel_nvme::frame::{self, CMD_HDR_ROOM, H2C_HDR_ROOM};
use keel_nvme::pdu::{
    digest_append, CapsuleRespHeader, CommonHeader, DataHeader, Framing, Negotiated, R2tHeader,
    TermError, TermReqHeader, Wire, DIGEST_LEN, FES_DATA_OUT_OF_RANGE, FES_PDU_SEQUENCE,
    FLAG_LAST_PDU, FLAG_SUCCESS, PDU_C2H_DATA, PDU_C2H_TERM_REQ, PDU_CAPSULE_RESP, PDU_R2T,
    SHORT_HLEN,
};
use keel_nvme::sgl::{Sgl, PSDT_SGL_MPTR_CONTIG};
use keel_nvme::status::{Status, SCT_GENERIC, SCT_MEDIA};
use keel_reactor::PollStatus;
use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::net::TcpStream;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::rc::Rc;

/// Staging buffer for received headers (and payload that arrives with them).
const RX_STAGING: usize = 64 * 1024;
/// Staging room offered per `recvmsg` while large C2HData PDUs arrive: enough for the next
/// headers, little of the next payload (which then arrives in place, not copied).
const RX_WINDOW_LARGE_IO: usize = 4096;
/// C2HData PDUs from this size on shrink the staging window to [`RX_WINDOW_LARGE_IO`]: for
/// them one more `recvmsg` per PDU costs less than copying the payload; below it, reading
/// many small PDUs per call and copying each payload once is cheaper (measured: 4 KiB reads).
const LARGE_PDU: u32 = 16 * 1024;
/// Most iovecs in one `sendmsg` / `recvmsg`.
const IOV_BATCH: usize = 128;
/// Most `recvmsg` calls per poll (when each one fills all the room offered).
const RECV_BUDGET: usize = 4;
/// Errors logged per queue pair (the counters are always exact).
const LOGGED_ERRORS: u64 = 8;

/// Why a command was not accepted (its callback will not run).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SubmitError {
    /// Every slot is in use: retry after a completion.
    #[error("queue pair full")]
    Busy,
    /// The connection failed or was closed.
    #[error("queue pair disconnected")]
    Disconnected,
    /// The command can never be carried (the reason says why).
    #[error("{0}")]
    Invalid(&'static str),
}

/// Settings of one queue pair, from the controller bring-up.
#[derive(Debug, Clone)]
pub struct QpairConfig {
    /// Queue id (0 = admin).
    pub qid: u16,
    /// Commands in flight at most (slots, CIDs `0..depth`).
    pub depth: u16,
    /// Largest in-capsule data of a write on this queue.
    pub icd: u32,
    /// Largest data transfer of one command.
    pub max_xfer: u32,
    /// The ICReq/ICResp negotiation.
    pub neg: Negotiated,
    /// Name for logs (address and qid).
    pub name: String,
}

/// Counters of one queue pair (read with [`Qpair::stats`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct QpairStats {
    /// Commands submitted.
    pub submitted: u64,
    /// Commands completed (any status).
    pub completed: u64,
    /// Commands completed with an error status.
    pub errors: u64,
    /// `sendmsg` calls that moved bytes.
    pub sends: u64,
    /// `recvmsg` calls that moved bytes.
    pub recvs: u64,
    /// C2HData payload bytes received straight into the caller's buffers.
    pub rx_direct_bytes: u64,
    /// C2HData payload bytes that arrived in the staging buffer with their header and were
    /// copied once to the caller's buffers.
    pub rx_staged_bytes: u64,
}

/// Someone waiting for a command's full completion entry (control path: admin commands).
#[derive(Default)]
pub(crate) struct Waiter {
    /// The completion, once arrived.
    pub cpl: Cell<Option<NvmeCpl>>,
    /// The queue pair failed before the completion.
    pub aborted: Cell<bool>,
    /// The command's data buffer, kept alive here until the slot lets go.
    pub buf: RefCell<Vec<u8>>,
}

/// What to do when a command completes.
enum Done {
    None,
    Io { cb: IoCallback, ctx: usize },
    Wait(Rc<Waiter>),
}

/// Direction of a command's data.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Dir {
    None,
    /// Host to controller.
    Write,
    /// Controller to host.
    Read,
}

/// One command slot (index = CID).
struct Slot {
    busy: bool,
    dir: Dir,
    /// In-capsule write data (else R2T/H2CData or C2HData).
    in_capsule: bool,
    iovs: [IoVec; MAX_IOVS],
    niov: u8,
    /// Data length in bytes.
    len: u32,
    done: Done,
    /// Queued PDUs that still refer to this slot (its header buffers and the caller's data).
    tx_pending: u8,
    /// The response arrived while PDUs were still queued: complete when they left.
    resp: Option<NvmeCpl>,
    /// C2HData bytes received so far (in order).
    c2h_got: u32,
    /// Current R2T: transfer tag, next offset to queue, end.
    ttag: u16,
    h2c_next: u32,
    h2c_end: u32,
    /// An H2CData PDU of this slot is queued (its header buffer is in use).
    h2c_queued: bool,
    /// Bytes of data requested by R2Ts so far.
    r2t_seen: u32,
    /// A data digest mismatched: the command completes in error.
    bad_data: bool,
    /// Range of the queued H2CData PDU.
    h2c_off: u32,
    h2c_len: u32,
    cmd_hdr: [u8; CMD_HDR_ROOM],
    cmd_hdr_len: u16,
    cmd_ddgst: [u8; DIGEST_LEN],
    h2c_hdr: [u8; H2C_HDR_ROOM],
    h2c_hdr_len: u16,
    h2c_ddgst: [u8; DIGEST_LEN],
}

impl Slot {
    fn new() -> Slot {
        Slot {
            busy: false,
            dir: Dir::None,
            in_capsule: false,
            iovs: [IoVec::EMPTY; MAX_IOVS],
            niov: 0,
            len: 0,
            done: Done::None,
            tx_pending: 0,
            resp: None,
            c2h_got: 0,
            ttag: 0,
            h2c_next: 0,
            h2c_end: 0,
            h2c_queued: false,
            r2t_seen: 0,
            bad_data: false,
            h2c_off: 0,
            h2c_len: 0,
            cmd_hdr: [0; CMD_HDR_ROOM],
            cmd_hdr_len: 0,
            cmd_ddgst: [0; DIGEST_LEN],
            h2c_hdr: [0; H2C_HDR_ROOM],
            h2c_hdr_len: 0,
            h2c_ddgst: [0; DIGEST_LEN],
        }
    }
    #[inline]
    fn iovs(&self) -> &[IoVec] {
        &self.iovs[..self.niov as usize]
    }
}

/// A queued PDU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum TxKind {
    Capsule,
    H2c,
}

#[derive(Debug, Clone, Copy)]
struct TxItem {
    cid: u16,
    kind: TxKind,
    /// Whole PDU length.
    len: u32,
}

/// Receive parser state.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Rx {
    /// Expecting a PDU header in the staging buffer.
    Header,
    /// Receiving C2HData payload for `cid` at data offset `off`, `left` bytes to go.
    Payload {
        cid: u16,
        off: u32,
        left: u32,
        crc: u32,
        ddgst: bool,
        flags: u8,
    },
    /// Expecting the 4-byte data digest of the PDU just received.
    Digest { cid: u16, crc: u32, flags: u8 },
}

/// An I/O command submitted while the queue pair was still connecting.
struct Waiting {
    cmd: NvmeCmd,
    dir: Dir,
    iovs: [IoVec; MAX_IOVS],
    niov: u8,
    len: u32,
    cb: IoCallback,
    ctx: usize,
}

/// The mutable state, borrowed by one call at a time.
struct State {
    cfg: QpairConfig,
    sock: Option<OwnedFd>,
    fd: RawFd,
    slots: Box<[Slot]>,
    free: Vec<u16>,
    txq: VecDeque<TxItem>,
    /// Bytes of `txq.front()` already sent.
    head_sent: usize,
    rx_buf: Box<[u8]>,
    rx_start: usize,
    rx_end: usize,
    rx: Rx,
    /// Staging bytes offered per `recvmsg` (adapts to the C2HData size seen last).
    rx_window: usize,
    iov: Vec<libc::iovec>,
    /// Completions to deliver after the borrow ends.
    done_q: Vec<(IoCallback, usize, IoStatus)>,
    failed: bool,
    /// The connection is being made: I/O waits in `waiting` (control commands may go once
    /// the socket is attached).
    connecting: bool,
    /// I/O submitted while connecting (capacity `depth`, allocated with the queue pair).
    waiting: Vec<Waiting>,
    /// The owner dropped the queue pair (a connect task must not retry).
    dropped: bool,
    stats: QpairStats,
}

/// Shared part of a queue pair (the core's poll group holds a reference).
pub(crate) struct Inner {
    st: RefCell<State>,
    /// The other completion list (swapped with `done_q`; no allocation per poll).
    spare: RefCell<Vec<(IoCallback, usize, IoStatus)>>,
}

/// One queue pair on the calling core: its socket and slots, polled by the core's poll group.
/// `!Send`: it stays on the core that created it. Dropping the owning handle aborts whatever
/// is in flight and closes the connection.
pub struct Qpair {
    inner: Rc<Inner>,
    /// This handle owns the queue pair (a [`Qpair::handle`] does not).
    owner: bool,
}

/// The NVMe status → bdev status mapping a remote bdev reports.
pub fn io_status(s: Status) -> IoStatus {
    if s.is_success() {
        return IoStatus::Success;
    }
    match (s.sct, s.sc) {
        (SCT_GENERIC, 0x07 | 0x08 | 0x21) => IoStatus::Aborted,
        (SCT_GENERIC, 0x81) => IoStatus::NoSpace,
        (SCT_MEDIA, 0x85) => IoStatus::Miscompare,
        _ => IoStatus::IoError,
    }
}

impl Qpair {
    /// Wrap a connected socket (ICReq/ICResp done) and add it to the calling core's poll
    /// group.
    pub(crate) fn start(sock: TcpStream, cfg: QpairConfig) -> Qpair {
        Qpair::new(Some(OwnedFd::from(sock)), cfg, false)
    }

    /// A queue pair whose connection is still to be made (`cfg.neg` is replaced by
    /// [`Qpair::attach`]); I/O submitted meanwhile waits for [`Qpair::set_ready`].
    pub(crate) fn connecting(cfg: QpairConfig) -> Qpair {
        Qpair::new(None, cfg, true)
    }

    fn new(sock: Option<OwnedFd>, cfg: QpairConfig, connecting: bool) -> Qpair {
        let depth = cfg.depth.max(1) as usize;
        let mut st = State::new(sock, cfg);
        st.connecting = connecting;
        if connecting {
            st.waiting = Vec::with_capacity(depth);
        }
        let inner = Rc::new(Inner {
            st: RefCell::new(st),
            spare: RefCell::new(Vec::with_capacity(depth)),
        });
        crate::group::add(Rc::clone(&inner));
        Qpair { inner, owner: true }
    }

    /// Give a [`Qpair::connecting`] queue pair its socket (ICReq/ICResp done with `neg`):
    /// control commands (the Fabrics Connect) may go now, I/O still waits. If the queue pair
    /// failed meanwhile (dropped), the socket is closed.
    pub(crate) fn attach(&self, sock: TcpStream, neg: Negotiated) {
        let mut st = self.inner.st.borrow_mut();
        if st.failed {
            return;
        }
        assert!(
            st.connecting && st.sock.is_none(),
            "attach once, while connecting"
        );
        let fd = OwnedFd::from(sock);
        st.fd = fd.as_raw_fd();
        st.sock = Some(fd);
        st.cfg.neg = neg;
    }

    /// Take the socket back from a connecting queue pair (its Fabrics Connect was refused and
    /// is to be retried on a new connection; the controller may have closed this one, which
    /// failed it). Nothing may be in flight. Returns `false` if the owner dropped the queue
    /// pair meanwhile (no retry then).
    pub(crate) fn detach(&self) -> bool {
        let mut st = self.inner.st.borrow_mut();
        assert!(st.connecting, "detach only while connecting");
        assert_eq!(st.free.len(), st.slots.len(), "nothing in flight");
        if st.dropped {
            return false;
        }
        if let Some(s) = st.sock.take() {
            // SAFETY: shutdown(2) on a socket we own; it is closed when `s` drops.
            unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
        }
        st.fd = -1;
        st.failed = false;
        st.txq.clear();
        st.head_sent = 0;
        st.rx = Rx::Header;
        st.rx_start = 0;
        st.rx_end = 0;
        true
    }

    /// The Fabrics Connect succeeded: submit the I/O that waited, in order. One the queue
    /// pair now refuses (e.g. above the controller's limit) completes in error, later.
    pub(crate) fn set_ready(&self) {
        let mut st = self.inner.st.borrow_mut();
        if st.failed {
            return;
        }
        assert!(st.connecting && st.sock.is_some(), "ready after attach");
        st.connecting = false;
        let waiting = std::mem::take(&mut st.waiting);
        for w in &waiting {
            let done = Done::Io {
                cb: w.cb,
                ctx: w.ctx,
            };
            let iovs = &w.iovs[..w.niov as usize];
            if st.submit(&w.cmd, w.dir, iovs, w.len, done).is_err() {
                st.done_q.push((w.cb, w.ctx, IoStatus::IoError));
            }
        }
    }

    /// Fail a connecting queue pair for good: waiting I/O completes as aborted (at the next
    /// poll).
    pub(crate) fn fail_connect(&self, why: &str) {
        let mut st = self.inner.st.borrow_mut();
        st.fail(None, why);
        st.abort_waiting();
    }

    /// Whether the connection is still being made.
    pub fn is_connecting(&self) -> bool {
        self.inner.st.borrow().connecting
    }

    /// A second handle on this queue pair, for the task that connects it: it submits like
    /// the owner, but dropping it changes nothing.
    pub(crate) fn handle(&self) -> Qpair {
        Qpair {
            inner: Rc::clone(&self.inner),
            owner: false,
        }
    }

    /// Queue id.
    pub fn qid(&self) -> u16 {
        self.inner.st.borrow().cfg.qid
    }
    /// Commands in flight at most.
    pub fn depth(&self) -> u16 {
        self.inner.st.borrow().cfg.depth
    }
    /// Whether the connection failed (every later submission is refused).
    pub fn is_failed(&self) -> bool {
        self.inner.st.borrow().failed
    }
    /// Commands in flight now.
    pub fn outstanding(&self) -> usize {
        let st = self.inner.st.borrow();
        st.slots.len() - st.free.len()
    }
    /// The counters.
    pub fn stats(&self) -> QpairStats {
        self.inner.st.borrow().stats
    }

    /// Submit `cmd` (its CID, PSDT and SGL1 are filled here) moving `len` bytes through
    /// `iovs`, host to controller if `write`. `cb(ctx, status)` runs once, later, on this
    /// core. The memory behind `iovs` must stay valid until then (the promise every
    /// [`IoVec`] carries, made at [`IoVec::from_raw`]).
    #[inline]
    pub fn submit(
        &self,
        cmd: &NvmeCmd,
        write: bool,
        iovs: &[IoVec],
        len: u32,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        let dir = match (len, write) {
            (0, _) => Dir::None,
            (_, true) => Dir::Write,
            (_, false) => Dir::Read,
        };
        let mut st = self.inner.st.borrow_mut();
        if st.connecting {
            return st.wait_for_connect(cmd, dir, iovs, len, cb, ctx);
        }
        st.submit(cmd, dir, iovs, len, Done::Io { cb, ctx })
    }

    /// Submit a command whose completion entry a control-path caller awaits (admin
    /// commands). The data buffer lives in `waiter` until the slot lets go of it.
    pub(crate) fn submit_wait(
        &self,
        cmd: &NvmeCmd,
        write: bool,
        waiter: &Rc<Waiter>,
    ) -> Result<(), SubmitError> {
        let (ptr, len) = {
            let mut b = waiter.buf.borrow_mut();
            (b.as_mut_ptr(), b.len())
        };
        let len32 = u32::try_from(len).map_err(|_| SubmitError::Invalid("data too large"))?;
        // SAFETY: the buffer is owned by the waiter, which the slot keeps alive (Done::Wait)
        // until the command completed and no queued PDU refers to it; nobody borrows the Vec
        // meanwhile (the awaiting caller only looks at it after the completion).
        let iov = unsafe { IoVec::from_raw_parts(ptr, len) };
        let dir = match (len, write) {
            (0, _) => Dir::None,
            (_, true) => Dir::Write,
            (_, false) => Dir::Read,
        };
        self.inner
            .st
            .borrow_mut()
            .submit(cmd, dir, &[iov], len32, Done::Wait(Rc::clone(waiter)))
    }

    /// A weak handle.
    pub(crate) fn downgrade(&self) -> WeakQpair {
        WeakQpair(Rc::downgrade(&self.inner))
    }

    /// Close the connection now: in-flight commands complete as aborted (at the next poll).
    pub fn disconnect(&self) {
        let mut st = self.inner.st.borrow_mut();
        st.fail(None, "disconnected by the host");
    }
}

/// A weak handle on a queue pair (for timers that must not keep it alive).
#[derive(Clone)]
pub(crate) struct WeakQpair(std::rc::Weak<Inner>);

impl WeakQpair {
    /// [`Qpair::submit`] if the queue pair still exists.
    pub(crate) fn submit(
        &self,
        cmd: &NvmeCmd,
        iovs: &[IoVec],
        cb: IoCallback,
        ctx: usize,
    ) -> Option<Result<(), SubmitError>> {
        let q = self.0.upgrade()?;
        let r =
            q.st.borrow_mut()
                .submit(cmd, Dir::None, iovs, 0, Done::Io { cb, ctx });
        Some(r)
    }
}

impl Drop for Qpair {
    fn drop(&mut self) {
        if !self.owner {
            return;
        }
        crate::group::remove(&self.inner);
        let pending = {
            let mut st = self.inner.st.borrow_mut();
            let n = st.slots.len() - st.free.len() + st.waiting.len();
            st.dropped = true;
            st.fail(None, "queue pair dropped");
            st.abort_waiting();
            n
        };
        if pending > 0 {
            log::warn!("nvmf initiator: queue pair dropped with {pending} command(s) in flight");
        }
        self.inner.run_completions();
    }
}

impl Inner {
    /// One reactor iteration: send what was queued, receive and parse, deliver completions
    /// (which may submit more), send again.
    pub(crate) fn poll(&self) -> PollStatus {
        let mut busy = {
            let mut st = self.st.borrow_mut();
            if st.failed && st.done_q.is_empty() {
                return PollStatus::Idle;
            }
            if st.sock.is_none() && !st.failed {
                return PollStatus::Idle; // connecting: no socket yet
            }
            let sent = st.flush();
            let got = st.receive();
            sent || got
        };
        if self.run_completions() {
            busy = true;
            self.st.borrow_mut().flush();
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Deliver the collected completions. Returns whether there were any.
    fn run_completions(&self) -> bool {
        let mut list = std::mem::take(&mut *self.spare.borrow_mut());
        std::mem::swap(&mut list, &mut self.st.borrow_mut().done_q);
        let any = !list.is_empty();
        for (cb, ctx, status) in list.drain(..) {
            cb(ctx, status);
        }
        *self.spare.borrow_mut() = list;
        any
    }
}

/// Whether a command may be submitted (the queue pair has not failed) and a transfer of
/// `len` bytes through `iovs` can be carried at all.
#[inline]
fn check_submit(
    failed: bool,
    cfg: &QpairConfig,
    iovs: &[IoVec],
    len: u32,
) -> Result<(), SubmitError> {
    if failed {
        return Err(SubmitError::Disconnected);
    }
    if len > cfg.max_xfer {
        return Err(SubmitError::Invalid(
            "transfer above the controller's limit",
        ));
    }
    if iovs.len() > MAX_IOVS {
        return Err(SubmitError::Invalid("too many iovecs"));
    }
    let have: usize = iovs.iter().map(|v| v.len()).sum();
    if have < len as usize {
        return Err(SubmitError::Invalid("iovecs shorter than the transfer"));
    }
    Ok(())
}

/// Call `f` on each piece of `iovs` covering `[off, off + len)` (clipped to the iovecs).
#[inline]
fn for_range(iovs: &[IoVec], off: usize, len: usize, mut f: impl FnMut(*mut u8, usize)) {
    for piece in IovCursor::at(iovs, off).pieces(len) {
        f(piece.base(), piece.len());
    }
}

/// CRC32C of `[off, off + len)` of `iovs`, continuing `crc`.
///
/// # Safety
/// The iovecs must be valid for reads.
#[inline]
unsafe fn crc_range(iovs: &[IoVec], off: u32, len: u32, mut crc: u32) -> u32 {
    for_range(iovs, off as usize, len as usize, |p, n| {
        // SAFETY: the caller guarantees the iovecs readable; p..p+n lies inside one.
        crc = digest_append(crc, unsafe { std::slice::from_raw_parts(p, n) });
    });
    crc
}

impl State {
    fn new(sock: Option<OwnedFd>, cfg: QpairConfig) -> State {
        let depth = cfg.depth.max(1) as usize;
        State {
            fd: sock.as_ref().map_or(-1, |s| s.as_raw_fd()),
            sock,
            slots: (0..depth).map(|_| Slot::new()).collect(),
            free: (0..depth as u16).rev().collect(),
            txq: VecDeque::with_capacity(2 * depth + 2),
            head_sent: 0,
            rx_buf: vec![0u8; RX_STAGING].into_boxed_slice(),
            rx_start: 0,
            rx_end: 0,
            rx: Rx::Header,
            rx_window: RX_STAGING,
            iov: Vec::with_capacity(IOV_BATCH),
            done_q: Vec::with_capacity(depth),
            failed: false,
            connecting: false,
            waiting: Vec::new(),
            dropped: false,
            stats: QpairStats::default(),
            cfg,
        }
    }

    /// Keep an I/O submitted while connecting (same checks as [`State::submit`]; `Busy` once
    /// `depth` commands wait).
    #[cold]
    fn wait_for_connect(
        &mut self,
        cmd: &NvmeCmd,
        dir: Dir,
        iovs: &[IoVec],
        len: u32,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        check_submit(self.failed, &self.cfg, iovs, len)?;
        if self.waiting.len() >= self.slots.len() {
            return Err(SubmitError::Busy);
        }
        let mut w = Waiting {
            cmd: *cmd,
            dir,
            iovs: [IoVec::EMPTY; MAX_IOVS],
            niov: iovs.len() as u8,
            len,
            cb,
            ctx,
        };
        w.iovs[..iovs.len()].copy_from_slice(iovs);
        debug_assert!(
            self.waiting.len() < self.waiting.capacity(),
            "no allocation"
        );
        self.waiting.push(w);
        Ok(())
    }

    #[inline]
    fn submit(
        &mut self,
        cmd: &NvmeCmd,
        dir: Dir,
        iovs: &[IoVec],
        len: u32,
        done: Done,
    ) -> Result<(), SubmitError> {
        check_submit(self.failed, &self.cfg, iovs, len)?;
        let Some(cid) = self.free.pop() else {
            return Err(SubmitError::Busy);
        };
        let neg = self.cfg.neg;
        let in_capsule = dir == Dir::Write && len <= self.cfg.icd;
        let slot = &mut self.slots[cid as usize];
        slot.busy = true;
        slot.dir = dir;
        slot.in_capsule = in_capsule;
        slot.iovs[..iovs.len()].copy_from_slice(iovs);
        slot.niov = iovs.len() as u8;
        slot.len = len;
        slot.done = done;
        slot.resp = None;
        slot.c2h_got = 0;
        slot.h2c_queued = false;
        slot.h2c_next = 0;
        slot.h2c_end = 0;
        slot.r2t_seen = 0;
        slot.bad_data = false;
        let mut sqe = *cmd;
        sqe.cid = cid;
        sqe.flags = (sqe.flags & 0x3f) | (PSDT_SGL_MPTR_CONTIG << 6);
        let sgl = if in_capsule {
            Sgl::InCapsule { offset: 0, len }
        } else {
            Sgl::Transport { len }
        };
        sqe.dptr = sgl.encode();
        let icd = if in_capsule { len } else { 0 };
        let hlen = frame::capsule_header(&mut slot.cmd_hdr, &sqe, icd, &neg);
        slot.cmd_hdr_len = hlen as u16;
        let mut pdu_len = hlen;
        if icd > 0 {
            pdu_len += icd as usize;
            if neg.ddgst {
                // SAFETY: submit's contract: the iovecs are valid until the completion.
                let crc = unsafe { crc_range(slot.iovs(), 0, icd, 0) };
                slot.cmd_ddgst = crc.to_le_bytes();
                pdu_len += DIGEST_LEN;
            }
        }
        slot.tx_pending = 1;
        self.txq.push_back(TxItem {
            cid,
            kind: TxKind::Capsule,
            len: pdu_len as u32,
        });
        self.stats.submitted += 1;
        Ok(())
    }

    /// Queue the next H2CData PDU of `cid`'s current R2T.
    fn queue_h2c(&mut self, cid: u16) {
        let neg = self.cfg.neg;
        let slot = &mut self.slots[cid as usize];
        let chunk = (slot.h2c_end - slot.h2c_next).min(neg.maxh2cdata);
        let off = slot.h2c_next;
        let last = off + chunk == slot.h2c_end;
        let hlen = frame::h2c_header(&mut slot.h2c_hdr, cid, slot.ttag, off, chunk, last, &neg);
        slot.h2c_hdr_len = hlen as u16;
        let mut pdu_len = hlen + chunk as usize;
        if neg.ddgst {
            // SAFETY: the slot is busy: its iovecs are valid until its completion.
            let crc = unsafe { crc_range(slot.iovs(), off, chunk, 0) };
            slot.h2c_ddgst = crc.to_le_bytes();
            pdu_len += DIGEST_LEN;
        }
        slot.h2c_off = off;
        slot.h2c_len = chunk;
        slot.h2c_next = off + chunk;
        slot.h2c_queued = true;
        slot.tx_pending += 1;
        self.txq.push_back(TxItem {
            cid,
            kind: TxKind::H2c,
            len: pdu_len as u32,
        });
    }

    /// Append the iovecs of `item` to `self.iov`.
    #[inline]
    fn item_iovs(&mut self, item: TxItem) {
        let ddgst = self.cfg.neg.ddgst;
        let slot = &self.slots[item.cid as usize];
        let out = &mut self.iov;
        let (hdr, hlen, off, len, dg) = match item.kind {
            TxKind::Capsule => (
                slot.cmd_hdr.as_ptr(),
                slot.cmd_hdr_len as usize,
                0,
                if slot.in_capsule { slot.len } else { 0 },
                slot.cmd_ddgst.as_ptr(),
            ),
            TxKind::H2c => (
                slot.h2c_hdr.as_ptr(),
                slot.h2c_hdr_len as usize,
                slot.h2c_off,
                slot.h2c_len,
                slot.h2c_ddgst.as_ptr(),
            ),
        };
        out.push(sock::iovec(hdr, hlen));
        if len > 0 {
            for_range(slot.iovs(), off as usize, len as usize, |p, n| {
                out.push(sock::iovec(p, n))
            });
            if ddgst {
                out.push(sock::iovec(dg, DIGEST_LEN));
            }
        }
    }

    /// Send queued PDUs until the queue is empty or the socket is full. Returns whether
    /// anything was sent.
    fn flush(&mut self) -> bool {
        let mut any = false;
        while !self.failed && !self.txq.is_empty() {
            self.iov.clear();
            let mut total = 0usize;
            let mut i = 0;
            while i < self.txq.len() && self.iov.len() + MAX_IOVS + 2 <= IOV_BATCH {
                let item = self.txq[i];
                let first = self.iov.len();
                self.item_iovs(item);
                total += item.len as usize;
                if i == 0 && self.head_sent > 0 {
                    let mut skip = self.head_sent;
                    total -= skip;
                    let mut k = first;
                    while skip > 0 {
                        let v = &mut self.iov[k];
                        if v.iov_len <= skip {
                            skip -= v.iov_len;
                            v.iov_len = 0;
                            k += 1;
                        } else {
                            v.iov_base = (v.iov_base as *mut u8).wrapping_add(skip).cast();
                            v.iov_len -= skip;
                            skip = 0;
                        }
                    }
                    self.iov.drain(first..k);
                }
                i += 1;
            }
            match sock::send_iov(self.fd, &self.iov) {
                Ok(Xfer::Bytes(n)) => {
                    any = true;
                    self.stats.sends += 1;
                    self.advance_tx(n);
                    if n < total {
                        break;
                    }
                }
                Ok(Xfer::WouldBlock | Xfer::Closed) => break,
                Err(e) => {
                    let why = format!("send failed: {e}");
                    self.fail(None, &why);
                }
            }
        }
        any
    }

    /// `n` more bytes left the socket: retire the PDUs they finished.
    fn advance_tx(&mut self, mut n: usize) {
        while n > 0 {
            let Some(&item) = self.txq.front() else {
                break;
            };
            let left = item.len as usize - self.head_sent;
            if n < left {
                self.head_sent += n;
                return;
            }
            n -= left;
            self.head_sent = 0;
            self.txq.pop_front();
            self.pdu_sent(item);
        }
    }

    /// A PDU of `item.cid` was sent completely.
    fn pdu_sent(&mut self, item: TxItem) {
        let slot = &mut self.slots[item.cid as usize];
        slot.tx_pending -= 1;
        if item.kind == TxKind::H2c {
            slot.h2c_queued = false;
            if slot.h2c_next < slot.h2c_end {
                self.queue_h2c(item.cid);
                return;
            }
        }
        let slot = &mut self.slots[item.cid as usize];
        if slot.tx_pending == 0 {
            if let Some(cpl) = slot.resp.take() {
                self.finish(item.cid, cpl);
            }
        }
    }

    /// Receive and parse. Returns whether any byte arrived.
    fn receive(&mut self) -> bool {
        let mut any = false;
        for _ in 0..RECV_BUDGET {
            if self.failed {
                break;
            }
            // Room: compact what is left of a partial header to the front.
            if self.rx_start == self.rx_end {
                self.rx_start = 0;
                self.rx_end = 0;
            } else if self.rx_start > 0 && self.rx_buf.len() - self.rx_end < 4096 {
                self.rx_buf.copy_within(self.rx_start..self.rx_end, 0);
                self.rx_end -= self.rx_start;
                self.rx_start = 0;
            }
            self.iov.clear();
            let mut direct = 0u32;
            if let Rx::Payload { cid, off, left, .. } = self.rx {
                // The staging buffer is empty here (parsing stops in Payload only when it
                // ran out): the payload goes straight to the caller's buffer.
                let slot = &self.slots[cid as usize];
                let out = &mut self.iov;
                for_range(slot.iovs(), off as usize, left as usize, |p, n| {
                    out.push(sock::iovec(p, n))
                });
                direct = left;
            }
            let room = (self.rx_buf.len() - self.rx_end).min(self.rx_window);
            let staging = self.rx_buf[self.rx_end..].as_mut_ptr();
            self.iov.push(sock::iovec(staging, room));
            let offered = direct as usize + room;
            match sock::recv_iov(self.fd, &self.iov) {
                Ok(Xfer::Bytes(n)) => {
                    any = true;
                    self.stats.recvs += 1;
                    let d = n.min(direct as usize) as u32;
                    if d > 0 {
                        self.payload_direct(d);
                    }
                    self.rx_end += n - d as usize;
                    self.parse();
                    if n < offered {
                        break;
                    }
                }
                Ok(Xfer::WouldBlock) => break,
                Ok(Xfer::Closed) => {
                    self.fail(None, "the controller closed the connection");
                    break;
                }
                Err(e) => {
                    let why = format!("receive failed: {e}");
                    self.fail(None, &why);
                    break;
                }
            }
        }
        any
    }

    /// `d` payload bytes were received straight into the caller's buffer.
    fn payload_direct(&mut self, d: u32) {
        let Rx::Payload {
            cid,
            off,
            left,
            mut crc,
            ddgst,
            flags,
        } = self.rx
        else {
            return;
        };
        if ddgst {
            // SAFETY: the slot is busy; its iovecs are valid and were just written by recvmsg.
            crc = unsafe { crc_range(self.slots[cid as usize].iovs(), off, d, crc) };
        }
        self.stats.rx_direct_bytes += u64::from(d);
        self.rx = Rx::Payload {
            cid,
            off: off + d,
            left: left - d,
            crc,
            ddgst,
            flags,
        };
        self.payload_progress();
    }

    /// After payload bytes: move on when the PDU's payload is complete.
    fn payload_progress(&mut self) {
        if let Rx::Payload {
            cid,
            left: 0,
            crc,
            ddgst,
            flags,
            ..
        } = self.rx
        {
            if ddgst {
                self.rx = Rx::Digest { cid, crc, flags };
            } else {
                self.rx = Rx::Header;
                self.data_pdu_done(cid, flags);
            }
        }
    }

    /// Parse everything the staging buffer holds.
    fn parse(&mut self) {
        while !self.failed {
            let avail = self.rx_end - self.rx_start;
            match self.rx {
                Rx::Header => {
                    if avail < std::mem::size_of::<CommonHeader>() {
                        return;
                    }
                    let buf = &self.rx_buf[self.rx_start..self.rx_end];
                    let Some(ch) = CommonHeader::read_from(buf) else {
                        return;
                    };
                    let f = match frame::validate_c2h(&ch, &self.cfg.neg) {
                        Ok(f) => f,
                        Err(e) => return self.fail(Some(e), e.what),
                    };
                    let need = f.header_bytes();
                    if avail < need {
                        return;
                    }
                    if f.hdgst {
                        if let Err(e) = frame::check_hdgst(&buf[..need], f.hlen) {
                            return self.fail(Some(e), e.what);
                        }
                    }
                    let start = self.rx_start;
                    self.rx_start += need;
                    self.header(start, &f);
                }
                Rx::Payload {
                    cid,
                    off,
                    left,
                    mut crc,
                    ddgst,
                    flags,
                } => {
                    if avail == 0 {
                        return;
                    }
                    let take = avail.min(left as usize);
                    let src = &self.rx_buf[self.rx_start..self.rx_start + take];
                    let slot = &self.slots[cid as usize];
                    let mut pos = 0;
                    for_range(slot.iovs(), off as usize, take, |p, n| {
                        // SAFETY: the slot is busy: its iovecs are valid for writes and not
                        // accessed by the caller until the completion; p..p+n is inside one
                        // and src[pos..pos+n] inside the staging buffer (take bytes in all).
                        unsafe { std::ptr::copy_nonoverlapping(src.as_ptr().add(pos), p, n) };
                        pos += n;
                    });
                    if ddgst {
                        crc = digest_append(crc, src);
                    }
                    self.stats.rx_staged_bytes += take as u64;
                    self.rx_start += take;
                    self.rx = Rx::Payload {
                        cid,
                        off: off + take as u32,
                        left: left - take as u32,
                        crc,
                        ddgst,
                        flags,
                    };
                    self.payload_progress();
                }
                Rx::Digest { cid, crc, flags } => {
                    if avail < DIGEST_LEN {
                        return;
                    }
                    let b = &self.rx_buf[self.rx_start..self.rx_start + DIGEST_LEN];
                    let got = u32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    self.rx_start += DIGEST_LEN;
                    self.rx = Rx::Header;
                    if got != crc {
                        // A data digest error fails the command, not the connection: the
                        // framing is intact (NVMe/TCP: transient transport error).
                        self.log_error(format_args!("data digest mismatch on CID {cid}"));
                        self.slots[cid as usize].bad_data = true;
                    }
                    self.data_pdu_done(cid, flags);
                }
            }
        }
    }

    /// Handle a complete PDU header at `start` in the staging buffer.
    fn header(&mut self, start: usize, f: &Framing) {
        let buf = &self.rx_buf[start..];
        match f.pdu_type {
            PDU_CAPSULE_RESP => {
                let Some(h) = CapsuleRespHeader::read_from(buf) else {
                    return;
                };
                self.response(h.cqe);
            }
            PDU_C2H_DATA => {
                let Some(h) = DataHeader::read_from(buf) else {
                    return;
                };
                let cid = h.cccid;
                let ok = self.slots.get(cid as usize).is_some_and(|s| {
                    s.busy
                        && s.dir == Dir::Read
                        && s.resp.is_none()
                        && h.datao == s.c2h_got
                        && u64::from(h.datao) + u64::from(h.datal) <= u64::from(s.len)
                });
                if !ok || h.datal != f.data_len {
                    let e = TermError::status(FES_DATA_OUT_OF_RANGE, "C2HData out of range");
                    return self.fail(Some(e), "C2HData for no read in flight, or out of range");
                }
                self.slots[cid as usize].c2h_got += h.datal;
                self.rx_window = if h.datal >= LARGE_PDU {
                    RX_WINDOW_LARGE_IO
                } else {
                    RX_STAGING
                };
                self.rx = Rx::Payload {
                    cid,
                    off: h.datao,
                    left: h.datal,
                    crc: 0,
                    ddgst: f.ddgst,
                    flags: h.common.flags,
                };
            }
            PDU_R2T => {
                let Some(h) = R2tHeader::read_from(buf) else {
                    return;
                };
                self.r2t(&h);
            }
            PDU_C2H_TERM_REQ => {
                let h = TermReqHeader::read_from(buf).unwrap_or_default();
                let why = format!(
                    "the controller terminated the connection: FES {:#x} ({}), FEI {}",
                    h.fes,
                    frame::fes_name(h.fes),
                    h.fei()
                );
                self.fail(None, &why);
            }
            _ => {}
        }
    }

    /// An R2T: queue H2CData for the range it asks for.
    fn r2t(&mut self, h: &R2tHeader) {
        let cid = h.cccid;
        let ok = self.slots.get(cid as usize).is_some_and(|s| {
            s.busy
                && s.dir == Dir::Write
                && !s.in_capsule
                && s.resp.is_none()
                && !s.h2c_queued
                && s.h2c_next == s.h2c_end
                && h.r2tl > 0
                && h.r2to == s.r2t_seen
                && u64::from(h.r2to) + u64::from(h.r2tl) <= u64::from(s.len)
        });
        if !ok {
            let e = TermError::status(FES_PDU_SEQUENCE, "unexpected R2T");
            return self.fail(Some(e), "R2T for no write waiting for one, or out of range");
        }
        let slot = &mut self.slots[cid as usize];
        slot.ttag = h.ttag;
        slot.h2c_next = h.r2to;
        slot.h2c_end = h.r2to + h.r2tl;
        slot.r2t_seen = slot.h2c_end;
        self.queue_h2c(cid);
    }

    /// The payload (and digest) of a C2HData PDU for `cid` arrived.
    fn data_pdu_done(&mut self, cid: u16, flags: u8) {
        if flags & FLAG_SUCCESS != 0 && flags & FLAG_LAST_PDU != 0 {
            let mut cpl = NvmeCpl {
                cid,
                sqid: self.cfg.qid,
                ..NvmeCpl::default()
            };
            cpl.set(Status::SUCCESS);
            self.response(cpl);
        }
    }

    /// A completion for `cpl.cid` (CapsuleResp, or C2HData with SUCCESS).
    fn response(&mut self, mut cpl: NvmeCpl) {
        let cid = cpl.cid;
        let Some(slot) = self
            .slots
            .get_mut(cid as usize)
            .filter(|s| s.busy && s.resp.is_none())
        else {
            let e = TermError::status(FES_PDU_SEQUENCE, "response for an unknown CID");
            return self.fail(Some(e), "response for a CID not in flight");
        };
        if cpl.is_success()
            && (slot.bad_data || (slot.dir == Dir::Read && slot.c2h_got != slot.len))
        {
            cpl.set(Status::DATA_TRANSFER_ERROR);
        }
        if slot.tx_pending > 0 {
            slot.resp = Some(cpl);
        } else {
            self.finish(cid, cpl);
        }
    }

    /// Release `cid` and queue its completion.
    fn finish(&mut self, cid: u16, cpl: NvmeCpl) {
        let slot = &mut self.slots[cid as usize];
        let done = std::mem::replace(&mut slot.done, Done::None);
        slot.busy = false;
        slot.niov = 0;
        self.free.push(cid);
        self.stats.completed += 1;
        let status = cpl.get_status();
        if !status.is_success() {
            self.stats.errors += 1;
        }
        match done {
            Done::Io { cb, ctx } => {
                if !status.is_success() && self.stats.errors <= LOGGED_ERRORS {
                    log::warn!(
                        "nvmf initiator: {}: command {cid} failed: {status}",
                        self.cfg.name
                    );
                }
                self.done_q.push((cb, ctx, io_status(status)));
            }
            Done::Wait(w) => w.cpl.set(Some(cpl)),
            Done::None => {}
        }
    }

    fn log_error(&mut self, args: std::fmt::Arguments<'_>) {
        if self.stats.errors < LOGGED_ERRORS {
            log::error!("nvmf initiator: {}: {args}", self.cfg.name);
        }
    }

    /// The connection is unusable: tell the controller (`term`), close, abort everything.
    fn fail(&mut self, term: Option<TermError>, why: &str) {
        if self.failed {
            return;
        }
        self.failed = true;
        if let Some(e) = term {
            log::error!(
                "nvmf initiator: {}: protocol error: {why}; terminating the connection",
                self.cfg.name
            );
            let pdu = frame::h2c_term_req(&e);
            // Best effort: a PDU half sent before makes this one unreadable; the close
            // below tells the controller anyway.
            if self.head_sent == 0 {
                let _ = sock::send_iov(self.fd, &[sock::iovec(pdu.as_ptr(), SHORT_HLEN)]);
            }
        } else if why != "disconnected by the host" && why != "queue pair dropped" {
            log::error!("nvmf initiator: {}: {why}", self.cfg.name);
        } else {
            log::info!("nvmf initiator: {}: {why}", self.cfg.name);
        }
        if let Some(s) = self.sock.take() {
            // SAFETY: shutdown(2) on a socket we own; it is closed when `s` drops.
            unsafe { libc::shutdown(s.as_raw_fd(), libc::SHUT_RDWR) };
        }
        self.fd = -1;
        // Nothing queued refers to callers' memory any more.
        self.txq.clear();
        self.head_sent = 0;
        self.rx = Rx::Header;
        for cid in 0..self.slots.len() {
            let slot = &mut self.slots[cid];
            if !slot.busy {
                continue;
            }
            if let Done::Wait(w) = &slot.done {
                w.aborted.set(true);
            }
            slot.tx_pending = 0;
            slot.resp = None;
            let mut cpl = NvmeCpl {
                cid: cid as u16,
                ..NvmeCpl::default()
            };
            cpl.set(Status::ABORTED_SQ_DELETION);
            self.finish(cid as u16, cpl);
        }
    }

    /// I/O that waited for the connection completes as aborted (as if it had been in flight
    /// when the connection failed). Only for a final failure: a connect that is retried keeps
    /// it waiting.
    fn abort_waiting(&mut self) {
        let waiting = std::mem::take(&mut self.waiting);
        for w in &waiting {
            self.done_q.push((w.cb, w.ctx, IoStatus::Aborted));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_nvme::pdu::{
        validate_common, CapsuleCmdHeader, RxLimits, FLAG_DDGSTF, FLAG_HDGSTF, PDU_H2C_DATA,
        PDU_H2C_TERM_REQ,
    };
    use std::io::{Read, Write};
    use std::os::unix::net::UnixStream;

    thread_local! {
        static DONE: RefCell<Vec<(usize, IoStatus)>> = const { RefCell::new(Vec::new()) };
    }

    fn rec(ctx: usize, status: IoStatus) {
        DONE.with(|d| d.borrow_mut().push((ctx, status)));
    }

    fn neg(digests: bool) -> Negotiated {
        Negotiated {
            hdgst: digests,
            ddgst: digests,
            cpda: 0,
            hpda: 0,
            maxh2cdata: 4096,
            maxr2t: 0,
        }
    }

    /// A queue pair state over one end of a socket pair; the test plays the controller on
    /// the other end.
    fn pair(digests: bool, depth: u16) -> (State, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let cfg = QpairConfig {
            qid: 1,
            depth,
            icd: 4096,
            max_xfer: 131072,
            neg: neg(digests),
            name: "test".into(),
        };
        (State::new(Some(OwnedFd::from(a)), cfg), b)
    }

    /// Receive until `n` completions arrived, then deliver them.
    fn complete(st: &mut State, n: usize) -> Vec<(usize, IoStatus)> {
        for _ in 0..1000 {
            if st.done_q.len() >= n {
                break;
            }
            st.receive();
        }
        for (cb, ctx, status) in st.done_q.drain(..) {
            cb(ctx, status);
        }
        DONE.with(|d| std::mem::take(&mut *d.borrow_mut()))
    }

    fn iov(b: &mut [u8]) -> IoVec {
        // SAFETY: each test keeps its buffers alive until its commands completed.
        unsafe { IoVec::from_raw_parts(b.as_mut_ptr(), b.len()) }
    }

    fn read_cmd(lba: u64) -> NvmeCmd {
        NvmeCmd {
            opc: 0x02,
            nsid: 1,
            cdw10: lba as u32,
            ..NvmeCmd::default()
        }
    }

    /// Submit a read of `len` bytes at `lba` into `iovs`, completing to [`rec`] with `ctx`.
    fn submit_read(
        st: &mut State,
        lba: u64,
        iovs: &[IoVec],
        len: u32,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        st.submit(
            &read_cmd(lba),
            Dir::Read,
            iovs,
            len,
            Done::Io { cb: rec, ctx },
        )
    }

    /// Read one capsule as the target would and check it with the target's validator.
    fn take_capsule(
        peer: &mut UnixStream,
        digests: bool,
        icd: usize,
    ) -> (CapsuleCmdHeader, Vec<u8>) {
        let hl = 72 + if digests { 4 } else { 0 };
        let mut len = hl;
        if icd > 0 {
            len += icd + if digests { 4 } else { 0 };
        }
        let mut b = vec![0u8; len];
        peer.read_exact(&mut b).unwrap();
        let ch = CommonHeader::read_from(&b).unwrap();
        let lim = RxLimits {
            max_in_capsule: 4096,
            maxh2cdata: 4096,
        };
        let f = validate_common(&ch, Some(&neg(digests)), &lim).unwrap();
        assert_eq!(f.data_len as usize, icd);
        if digests {
            keel_nvme::pdu::check_header_digest(&b, 72).unwrap();
        }
        let data = b[f.data_start..f.data_start + icd].to_vec();
        if digests && icd > 0 {
            let d = keel_nvme::pdu::digest(&data);
            assert_eq!(&b[len - 4..], &d.to_le_bytes());
        }
        (CapsuleCmdHeader::read_from(&b).unwrap(), data)
    }

    /// A controller-to-host PDU: `hdr` (24 bytes), optional header digest, `data`, optional
    /// data digest (`bad_ddgst` corrupts it).
    fn pdu(hdr: &mut [u8; 24], data: &[u8], digests: bool, bad_ddgst: bool) -> Vec<u8> {
        let hl = 24 + if digests { 4 } else { 0 };
        let mut plen = hl;
        if !data.is_empty() {
            plen += data.len() + if digests { 4 } else { 0 };
            hdr[3] = hl as u8;
        }
        if digests {
            hdr[1] |= FLAG_HDGSTF;
            if !data.is_empty() {
                hdr[1] |= FLAG_DDGSTF;
            }
        }
        hdr[2] = 24;
        hdr[4..8].copy_from_slice(&(plen as u32).to_le_bytes());
        let mut out = hdr.to_vec();
        if digests {
            out.extend_from_slice(&keel_nvme::pdu::digest(hdr).to_le_bytes());
        }
        out.extend_from_slice(data);
        if digests && !data.is_empty() {
            let d = keel_nvme::pdu::digest(data) ^ u32::from(bad_ddgst);
            out.extend_from_slice(&d.to_le_bytes());
        }
        out
    }

    fn c2h(cid: u16, datao: u32, data: &[u8], flags: u8, digests: bool, bad: bool) -> Vec<u8> {
        let h = DataHeader {
            common: CommonHeader {
                pdu_type: PDU_C2H_DATA,
                flags,
                ..CommonHeader::default()
            },
            cccid: cid,
            datao,
            datal: data.len() as u32,
            ..DataHeader::default()
        };
        let mut b = [0u8; 24];
        b.copy_from_slice(h.as_bytes());
        pdu(&mut b, data, digests, bad)
    }

    fn resp(cid: u16, status: Status, digests: bool) -> Vec<u8> {
        let mut h = CapsuleRespHeader {
            common: CommonHeader {
                pdu_type: PDU_CAPSULE_RESP,
                ..CommonHeader::default()
            },
            ..CapsuleRespHeader::default()
        };
        h.cqe.cid = cid;
        h.cqe.set(status);
        let mut b = [0u8; 24];
        b.copy_from_slice(h.as_bytes());
        pdu(&mut b, &[], digests, false)
    }

    #[test]
    fn read_in_two_c2h_pdus_with_digests_and_success_flag() {
        let (mut st, mut peer) = pair(true, 4);
        let mut buf = vec![0u8; 8192];
        submit_read(&mut st, 5, &[iov(&mut buf)], 8192, 7).unwrap();
        assert!(st.flush());
        let (cap, _) = take_capsule(&mut peer, true, 0);
        assert_eq!(Sgl::decode(&cap.sqe.dptr), Ok(Sgl::Transport { len: 8192 }));
        assert_eq!(cap.sqe.flags >> 6, PSDT_SGL_MPTR_CONTIG);
        let data: Vec<u8> = (0..8192u32).map(|i| (i * 31 % 251) as u8).collect();
        let cid = cap.sqe.cid;
        peer.write_all(&c2h(cid, 0, &data[..4096], 0, true, false))
            .unwrap();
        peer.write_all(&c2h(
            cid,
            4096,
            &data[4096..],
            FLAG_LAST_PDU | FLAG_SUCCESS,
            true,
            false,
        ))
        .unwrap();
        assert_eq!(complete(&mut st, 1), vec![(7, IoStatus::Success)]);
        assert!(buf == data);
        assert_eq!(st.stats.rx_direct_bytes + st.stats.rx_staged_bytes, 8192);
        assert_eq!(st.free.len(), 4, "the slot is free again");
    }

    #[test]
    fn data_digest_error_fails_the_command_not_the_connection() {
        let (mut st, mut peer) = pair(true, 4);
        let mut buf = vec![0u8; 4096];
        submit_read(&mut st, 0, &[iov(&mut buf)], 4096, 1).unwrap();
        st.flush();
        let (cap, _) = take_capsule(&mut peer, true, 0);
        let data = vec![9u8; 4096];
        let flags = FLAG_LAST_PDU | FLAG_SUCCESS;
        peer.write_all(&c2h(cap.sqe.cid, 0, &data, flags, true, true))
            .unwrap();
        assert_eq!(complete(&mut st, 1), vec![(1, IoStatus::IoError)]);
        assert!(!st.failed);
        // The next command works.
        submit_read(&mut st, 0, &[iov(&mut buf)], 4096, 2).unwrap();
        st.flush();
        let (cap, _) = take_capsule(&mut peer, true, 0);
        peer.write_all(&c2h(cap.sqe.cid, 0, &data, flags, true, false))
            .unwrap();
        assert_eq!(complete(&mut st, 1), vec![(2, IoStatus::Success)]);
    }

    #[test]
    fn large_write_goes_by_r2t_in_maxh2cdata_pieces_and_small_one_in_capsule() {
        let (mut st, mut peer) = pair(true, 4);
        let mut big: Vec<u8> = (0..8192u32).map(|i| (i % 253) as u8).collect();
        let want = big.clone();
        let (lo, hi) = big.split_at_mut(3000);
        let cmd = NvmeCmd {
            opc: 0x01,
            nsid: 1,
            ..NvmeCmd::default()
        };
        st.submit(
            &cmd,
            Dir::Write,
            &[iov(lo), iov(hi)],
            8192,
            Done::Io { cb: rec, ctx: 3 },
        )
        .unwrap();
        st.flush();
        let (cap, icd) = take_capsule(&mut peer, true, 0);
        assert!(icd.is_empty());
        let r2t = R2tHeader {
            common: CommonHeader {
                pdu_type: PDU_R2T,
                ..CommonHeader::default()
            },
            cccid: cap.sqe.cid,
            ttag: 5,
            r2to: 0,
            r2tl: 8192,
            ..R2tHeader::default()
        };
        let mut b = [0u8; 24];
        b.copy_from_slice(r2t.as_bytes());
        peer.write_all(&pdu(&mut b, &[], true, false)).unwrap();
        st.receive();
        st.flush();
        let mut got = Vec::new();
        for k in 0..2u32 {
            let mut p = vec![0u8; 28 + 4096 + 4];
            peer.read_exact(&mut p).unwrap();
            let h = DataHeader::read_from(&p).unwrap();
            assert_eq!(h.common.pdu_type, PDU_H2C_DATA);
            assert_eq!(
                (h.cccid, h.ttag, h.datao, h.datal),
                (cap.sqe.cid, 5, 4096 * k, 4096)
            );
            assert_eq!(h.common.flags & FLAG_LAST_PDU != 0, k == 1);
            keel_nvme::pdu::check_header_digest(&p, 24).unwrap();
            let d = keel_nvme::pdu::digest(&p[28..28 + 4096]);
            assert_eq!(&p[28 + 4096..], &d.to_le_bytes());
            got.extend_from_slice(&p[28..28 + 4096]);
        }
        assert!(got == want);
        peer.write_all(&resp(cap.sqe.cid, Status::SUCCESS, true))
            .unwrap();
        assert_eq!(complete(&mut st, 1), vec![(3, IoStatus::Success)]);

        // 512 bytes go in the capsule; an error status reaches the caller.
        let mut small = vec![0xA5u8; 512];
        st.submit(
            &cmd,
            Dir::Write,
            &[iov(&mut small)],
            512,
            Done::Io { cb: rec, ctx: 4 },
        )
        .unwrap();
        st.flush();
        let (cap, icd) = take_capsule(&mut peer, true, 512);
        assert!(icd.iter().all(|&x| x == 0xA5));
        assert_eq!(
            Sgl::decode(&cap.sqe.dptr),
            Ok(Sgl::InCapsule {
                offset: 0,
                len: 512
            })
        );
        peer.write_all(&resp(cap.sqe.cid, Status::LBA_OUT_OF_RANGE, true))
            .unwrap();
        assert_eq!(complete(&mut st, 1), vec![(4, IoStatus::IoError)]);
    }

    #[test]
    fn hostile_controller_data_fails_the_connection_and_aborts_everything() {
        let (mut st, mut peer) = pair(false, 2);
        let mut a = vec![0u8; 4096];
        let mut b = vec![0u8; 4096];
        submit_read(&mut st, 0, &[iov(&mut a)], 4096, 1).unwrap();
        submit_read(&mut st, 1, &[iov(&mut b)], 4096, 2).unwrap();
        let mut c = vec![0u8; 4096];
        let r = submit_read(&mut st, 2, &[iov(&mut c)], 4096, 3);
        assert_eq!(r, Err(SubmitError::Busy));
        st.flush();
        take_capsule(&mut peer, false, 0);
        take_capsule(&mut peer, false, 0);
        // Data for a CID that is not in flight.
        peer.write_all(&c2h(99, 0, &[0u8; 512], 0, false, false))
            .unwrap();
        let mut done = complete(&mut st, 2);
        done.sort_by_key(|d| d.0);
        assert_eq!(done, vec![(1, IoStatus::Aborted), (2, IoStatus::Aborted)]);
        assert!(st.failed);
        let mut term = [0u8; 24];
        peer.read_exact(&mut term).unwrap();
        assert_eq!(term[0], PDU_H2C_TERM_REQ);
        let r = submit_read(&mut st, 0, &[iov(&mut c)], 4096, 4);
        assert_eq!(r, Err(SubmitError::Disconnected));
    }

    #[test]
    fn bad_submissions_are_refused_without_a_callback() {
        let (mut st, _peer) = pair(false, 2);
        let mut a = vec![0u8; 100];
        let r = submit_read(&mut st, 0, &[iov(&mut a)], 4096, 1);
        assert_eq!(
            r,
            Err(SubmitError::Invalid("iovecs shorter than the transfer"))
        );
        let r = submit_read(&mut st, 0, &[iov(&mut a)], 1 << 20, 1);
        assert!(matches!(r, Err(SubmitError::Invalid(_))));
        let many = [iov(&mut a); MAX_IOVS + 1];
        let r = submit_read(&mut st, 0, &many, 100, 1);
        assert!(matches!(r, Err(SubmitError::Invalid(_))));
        assert_eq!(st.free.len(), 2);
        assert!(st.done_q.is_empty());
    }

    #[test]
    fn ranges_over_iovecs() {
        let mut a = [0u8; 10];
        let mut b = [0u8; 6];
        // SAFETY: the arrays outlive the iovecs' use in this test.
        let iovs = unsafe {
            [
                IoVec::from_raw_parts(a.as_mut_ptr(), a.len()),
                IoVec::from_raw_parts(b.as_mut_ptr(), b.len()),
            ]
        };
        let mut pieces = Vec::new();
        for_range(&iovs, 8, 5, |p, n| pieces.push((p as usize, n)));
        assert_eq!(
            pieces,
            vec![(a.as_ptr() as usize + 8, 2), (b.as_ptr() as usize, 3)]
        );
        pieces.clear();
        for_range(&iovs, 0, 100, |p, n| pieces.push((p as usize, n)));
        assert_eq!(pieces.len(), 2);
        assert_eq!(pieces[0].1 + pieces[1].1, 16);
        pieces.clear();
        for_range(&iovs, 16, 4, |p, n| pieces.push((p as usize, n)));
        assert!(pieces.is_empty());

        a.copy_from_slice(b"0123456789");
        b.copy_from_slice(b"abcdef");
        // SAFETY: the arrays are valid for reads.
        let crc = unsafe { crc_range(&iovs, 5, 8, 0) };
        assert_eq!(crc, crc32c::crc32c(b"56789abc"));
    }

    #[test]
    fn status_mapping() {
        assert_eq!(io_status(Status::SUCCESS), IoStatus::Success);
        assert_eq!(io_status(Status::ABORTED_SQ_DELETION), IoStatus::Aborted);
        assert_eq!(io_status(Status::CAPACITY_EXCEEDED), IoStatus::NoSpace);
        assert_eq!(io_status(Status::media(0x85, false)), IoStatus::Miscompare);
        assert_eq!(io_status(Status::LBA_OUT_OF_RANGE), IoStatus::IoError);
        assert_eq!(io_status(Status::DATA_TRANSFER_ERROR), IoStatus::IoError);
    }
}
