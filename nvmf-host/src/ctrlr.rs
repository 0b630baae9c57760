//! Control path: connecting a controller the way Linux and SPDK hosts do (the bring-up
//! sequence below) and connecting I/O queue pairs to it.
//!
//! Admin: TCP connect, ICReq/ICResp, Fabrics Connect on qid 0, Property Get CAP/VS, Property Set
//! CC.EN=1, wait for CSTS.RDY, Identify Controller, Set Features Number of Queues, Identify
//! active namespaces and each namespace, keep-alive. I/O: on the core that will use it, a
//! free qid from the controller's [`QidPool`], then in a local task a socket, ICReq/ICResp
//! and Fabrics Connect; the queue pair exists (and takes I/O, which waits) from the start.
//!
//! Every step is non-blocking: the futures run on a reactor and never sleep in the kernel.

use super::ident::{ControllerData, NamespaceData};
use super::qpair::{Qpair, QpairConfig, QpairStats, SubmitError, Waiter};
use super::{sock, ConnectOpts, InitiatorError};
use keel_bdev::{IoCallback, IoStatus, IoVec};
use keel_nvme::cmd::{NvmeCmd, NvmeCpl, OPC_FABRICS};
use keel_nvme::fabrics::{
    ConnectData, CNTLID_DYNAMIC, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET, FCTYPE_PROPERTY_SET,
};
use keel_nvme::features::{NumberOfQueues, FID_NUMBER_OF_QUEUES};
use keel_nvme::frame;
use keel_nvme::identify::{CNS_ACTIVE_NS_LIST, CNS_CONTROLLER, CNS_NAMESPACE, IDENTIFY_DATA_SIZE};
use keel_nvme::opcode::{admin, nvm};
use keel_nvme::pdu::{IcResp, Negotiated, Wire, IC_HLEN};
use keel_nvme::registers::{Cap, Cc, Csts, Shn, Shst, Vs, PROP_CAP, PROP_CC, PROP_CSTS, PROP_VS};
use keel_nvme::status::Status;
use keel_reactor::PollerId;
use std::future::Future;
use std::net::{SocketAddr, TcpStream};
use std::os::fd::AsRawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::atomic::{AtomicU16, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

/// Admin queue entries.
const ADMIN_DEPTH: u16 = 32;
/// In-capsule data the NVMe/TCP binding guarantees on the admin queue.
const ADMIN_ICD: u32 = 8192;
/// Largest admin data transfer we ask for.
const ADMIN_MAX_XFER: u32 = 64 * 1024;
/// Largest transfer when the controller reports no limit (MDTS 0).
const DEFAULT_MAX_XFER: u32 = 1024 * 1024;
/// Identify active namespace lists we read at most (1024 namespaces each).
const MAX_NS_LISTS: usize = 4;

/// One namespace of the controller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NsInfo {
    /// Namespace id.
    pub nsid: u32,
    /// Logical block size in bytes.
    pub block_size: u32,
    /// Size in blocks (NSZE).
    pub num_blocks: u64,
}

/// What the admin bring-up learned; shared (`Send + Sync`) with the cores that connect I/O
/// queue pairs.
#[derive(Debug)]
pub struct CtrlrInfo {
    /// Where the controller is.
    pub addr: SocketAddr,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Our host NQN.
    pub hostnqn: String,
    /// Our host identifier.
    pub hostid: [u8; 16],
    /// Controller id from the admin Connect.
    pub cntlid: u16,
    /// Header digests asked for.
    pub hdgst: bool,
    /// Data digests asked for.
    pub ddgst: bool,
    /// CAP.
    pub cap: Cap,
    /// VS.
    pub vs: Vs,
    /// Largest transfer of one command (from MDTS), bytes.
    pub max_xfer: u32,
    /// In-capsule data size on I/O queues (from IOCCSZ), bytes.
    pub io_icd: u32,
    /// Entries of each I/O queue (commands in flight at most).
    pub io_queue_depth: u16,
    /// I/O queues granted (Set Features Number of Queues).
    pub io_queues: u16,
    /// Active namespaces.
    pub namespaces: Vec<NsInfo>,
    /// Connect timeout for I/O queues.
    pub timeout: Duration,
    qids: QidPool,
}

/// The I/O queue ids of one controller, `1..=max` (what it granted): taken by a queue pair
/// when it starts, given back when it is dropped. Lock-free (a bitmap of atomic words; any
/// core), control path only. The search starts after the last qid taken, so a qid just given
/// back is taken again last: the controller may still be tearing its old queue down.
#[derive(Debug)]
pub(crate) struct QidPool {
    /// Bit `i` set: qid `i + 1` in use.
    used: Box<[AtomicU64]>,
    max: u16,
    /// Bit index where the next search starts.
    cursor: AtomicU16,
}

impl QidPool {
    /// Qids `1..=max`, all free.
    pub(crate) fn new(max: u16) -> QidPool {
        QidPool {
            used: (0..usize::from(max).div_ceil(64))
                .map(|_| AtomicU64::new(0))
                .collect(),
            max,
            cursor: AtomicU16::new(0),
        }
    }

    /// A free qid, or `None` when all `max` are in use.
    pub(crate) fn take(&self) -> Option<u16> {
        let n = usize::from(self.max);
        let start = usize::from(self.cursor.load(Ordering::Relaxed));
        for k in 0..n {
            let i = (start + k) % n;
            let bit = 1u64 << (i % 64);
            if self.used[i / 64].fetch_or(bit, Ordering::AcqRel) & bit == 0 {
                self.cursor.store(((i + 1) % n) as u16, Ordering::Relaxed);
                let qid = i as u16 + 1;
                debug_assert!(qid >= 1 && qid <= self.max);
                return Some(qid);
            }
        }
        None
    }

    /// Give `qid` back (it must have been taken).
    pub(crate) fn give_back(&self, qid: u16) {
        assert!(
            qid >= 1 && qid <= self.max,
            "qid {qid} outside 1..={}",
            self.max
        );
        let i = usize::from(qid - 1);
        let bit = 1u64 << (i % 64);
        let was = self.used[i / 64].fetch_and(!bit, Ordering::AcqRel);
        assert!(was & bit != 0, "qid {qid} given back but not taken");
    }

    /// Qids in use now.
    pub(crate) fn in_use(&self) -> usize {
        self.used
            .iter()
            .map(|w| w.load(Ordering::Relaxed).count_ones() as usize)
            .sum()
    }
}

impl CtrlrInfo {
    /// The namespace `nsid`, if active.
    pub fn namespace(&self, nsid: u32) -> Option<&NsInfo> {
        self.namespaces.iter().find(|n| n.nsid == nsid)
    }
    /// I/O queue ids held by live queue pairs now (at most [`CtrlrInfo::io_queues`]).
    pub fn io_queues_in_use(&self) -> usize {
        self.qids.in_use()
    }
}

/// A connected controller: its admin queue on the calling core (and the keep-alive timer).
/// Dropping it closes the admin connection (the controller then goes away with its queues).
pub struct Controller {
    admin: Qpair,
    info: Arc<CtrlrInfo>,
    keep_alive: Option<PollerId>,
}

/// An I/O queue pair bound to one namespace, on the core that connected it. HOT PATH for
/// [`IoQpair::read`] and [`IoQpair::write`]: no allocation, no lock, no syscall (the core's
/// poller sends and receives in batches). Its qid goes back to the controller's pool when it
/// is dropped.
pub struct IoQpair {
    qp: Qpair,
    ns: NsInfo,
    info: Arc<CtrlrInfo>,
    /// How the background connection ended (`None` while it runs).
    connected: Rc<std::cell::RefCell<Option<Result<(), InitiatorError>>>>,
}

/// A future that is ready the second time it is polled (lets the reactor run a round).
struct YieldNow(bool);

impl Future for YieldNow {
    type Output = ();
    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            self.0 = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    }
}

/// Ticks after now for `d`.
fn deadline(d: Duration) -> u64 {
    let rate = u128::from(keel_reactor::tick_rate());
    let t = u64::try_from(d.as_nanos() * rate / 1_000_000_000).unwrap_or(u64::MAX / 2);
    keel_reactor::ticks().saturating_add(t)
}

/// Connect a socket and run ICReq/ICResp (the reactor keeps running meanwhile).
async fn connect_socket(
    addr: &SocketAddr,
    hdgst: bool,
    ddgst: bool,
    timeout: Duration,
) -> Result<(TcpStream, Negotiated), InitiatorError> {
    let end = deadline(timeout);
    let timed_out = || keel_reactor::ticks() > end;
    let s = sock::connect_start(addr).map_err(|e| InitiatorError::Connect(addr.to_string(), e))?;
    loop {
        match sock::connect_done(&s) {
            Ok(true) => break,
            Ok(false) if timed_out() => return Err(InitiatorError::Timeout("TCP connect")),
            Ok(false) => YieldNow(false).await,
            Err(e) => return Err(InitiatorError::Connect(addr.to_string(), e)),
        }
    }
    let req = frame::icreq(0, hdgst, ddgst, 0);
    let out = req.as_bytes();
    let mut sent = 0;
    while sent < out.len() {
        let iov = [sock::iovec(out[sent..].as_ptr(), out.len() - sent)];
        match sock::send_iov(s.as_raw_fd(), &iov) {
            Ok(sock::Xfer::Bytes(n)) => sent += n,
            Ok(_) if timed_out() => return Err(InitiatorError::Timeout("ICReq")),
            Ok(_) => YieldNow(false).await,
            Err(e) => return Err(InitiatorError::Connect(addr.to_string(), e)),
        }
    }
    let mut buf = [0u8; IC_HLEN];
    let mut got = 0;
    while got < IC_HLEN {
        let iov = [sock::iovec(buf[got..].as_mut_ptr(), IC_HLEN - got)];
        match sock::recv_iov(s.as_raw_fd(), &iov) {
            Ok(sock::Xfer::Bytes(n)) => got += n,
            Ok(sock::Xfer::Closed) => {
                return Err(InitiatorError::Protocol(
                    "the controller closed the connection instead of answering the ICReq".into(),
                ))
            }
            Ok(sock::Xfer::WouldBlock) if timed_out() => {
                return Err(InitiatorError::Timeout("ICResp"))
            }
            Ok(sock::Xfer::WouldBlock) => YieldNow(false).await,
            Err(e) => return Err(InitiatorError::Connect(addr.to_string(), e)),
        }
    }
    let resp =
        IcResp::read_from(&buf).ok_or_else(|| InitiatorError::Protocol("short ICResp".into()))?;
    let neg = frame::check_icresp(&resp, &req)
        .map_err(|e| InitiatorError::Protocol(format!("bad ICResp: {}", e.what)))?;
    if neg.hdgst != hdgst || neg.ddgst != ddgst {
        log::warn!(
            "nvmf initiator: {addr}: digests asked header={hdgst} data={ddgst}, granted \
             header={} data={}",
            neg.hdgst,
            neg.ddgst
        );
    }
    log::debug!(
        "nvmf initiator: {addr}: ICResp cpda {} maxh2cdata {} digests h={} d={}",
        neg.cpda,
        neg.maxh2cdata,
        neg.hdgst,
        neg.ddgst
    );
    Ok((s, neg))
}

/// Run one control-path command on `qp` and wait for its completion entry. `data` is sent
/// (write) or filled (read) and returned.
async fn exec(
    qp: &Qpair,
    cmd: NvmeCmd,
    write: bool,
    data: Vec<u8>,
    what: &'static str,
    timeout: Duration,
) -> Result<(NvmeCpl, Vec<u8>), InitiatorError> {
    let waiter = Rc::new(Waiter {
        buf: std::cell::RefCell::new(data),
        ..Waiter::default()
    });
    qp.submit_wait(&cmd, write, &waiter).map_err(|e| match e {
        SubmitError::Disconnected => InitiatorError::Disconnected,
        other => InitiatorError::Invalid(format!("{what}: {other}")),
    })?;
    let end = deadline(timeout);
    loop {
        if let Some(cpl) = waiter.cpl.get() {
            let data = std::mem::take(&mut *waiter.buf.borrow_mut());
            let status = cpl.get_status();
            if !status.is_success() {
                return Err(InitiatorError::Status(what, status));
            }
            return Ok((cpl, data));
        }
        if waiter.aborted.get() {
            return Err(InitiatorError::Disconnected);
        }
        if keel_reactor::ticks() > end {
            return Err(InitiatorError::Timeout(what));
        }
        YieldNow(false).await;
    }
}

fn fabrics(fctype: u8) -> NvmeCmd {
    NvmeCmd {
        opc: OPC_FABRICS,
        nsid: u32::from(fctype),
        ..NvmeCmd::default()
    }
}

/// Fabrics Connect for `qid` with `sqsize` entries (0-based) and `cntlid`; returns the
/// controller id the target answered.
#[allow(clippy::too_many_arguments)]
async fn fabrics_connect(
    qp: &Qpair,
    qid: u16,
    entries: u16,
    kato_ms: u32,
    cntlid: u16,
    hostid: [u8; 16],
    subnqn: &str,
    hostnqn: &str,
    timeout: Duration,
) -> Result<u16, InitiatorError> {
    let mut cmd = fabrics(FCTYPE_CONNECT);
    cmd.cdw10 = u32::from(qid) << 16; // RECFMT 0
    cmd.cdw11 = u32::from(entries - 1); // SQSIZE, CATTR 0
    cmd.cdw12 = kato_ms;
    let data = ConnectData {
        hostid,
        cntlid,
        subnqn: subnqn.into(),
        hostnqn: hostnqn.into(),
    }
    .encode()
    .to_vec();
    let (cpl, _) = exec(qp, cmd, true, data, "Fabrics Connect", timeout).await?;
    Ok(cpl.cdw0 as u16)
}

async fn prop_get(qp: &Qpair, ofst: u32, eight: bool, t: Duration) -> Result<u64, InitiatorError> {
    let mut cmd = fabrics(FCTYPE_PROPERTY_GET);
    cmd.cdw10 = u32::from(eight);
    cmd.cdw11 = ofst;
    let (cpl, _) = exec(qp, cmd, false, Vec::new(), "Property Get", t).await?;
    Ok(u64::from(cpl.cdw0) | u64::from(cpl.cdw1) << 32)
}

async fn prop_set(qp: &Qpair, ofst: u32, value: u32, t: Duration) -> Result<(), InitiatorError> {
    let mut cmd = fabrics(FCTYPE_PROPERTY_SET);
    cmd.cdw10 = 0; // 4 bytes
    cmd.cdw11 = ofst;
    cmd.cdw12 = value;
    exec(qp, cmd, false, Vec::new(), "Property Set", t).await?;
    Ok(())
}

async fn identify(
    qp: &Qpair,
    cns: u8,
    nsid: u32,
    what: &'static str,
    t: Duration,
) -> Result<Vec<u8>, InitiatorError> {
    let cmd = NvmeCmd {
        opc: admin::IDENTIFY,
        nsid,
        cdw10: u32::from(cns),
        ..NvmeCmd::default()
    };
    let (_, data) = exec(qp, cmd, false, vec![0u8; IDENTIFY_DATA_SIZE], what, t).await?;
    Ok(data)
}

fn noop(_ctx: usize, _status: IoStatus) {}

impl Controller {
    /// Connect and bring up the controller at `opts.addr` (on the calling reactor, which
    /// keeps the admin queue).
    #[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): the controller bring-up sequence, step by step
    pub async fn connect(opts: &ConnectOpts) -> Result<Controller, InitiatorError> {
        opts.validate()?;
        let t = opts.timeout;
        let (sock, neg) = connect_socket(&opts.addr, opts.hdgst, opts.ddgst, t).await?;
        let admin = Qpair::start(
            sock,
            QpairConfig {
                qid: 0,
                depth: ADMIN_DEPTH,
                icd: ADMIN_ICD,
                max_xfer: ADMIN_MAX_XFER,
                neg,
                name: format!("{} {} admin", opts.addr, opts.subnqn),
            },
        );
        let cntlid = fabrics_connect(
            &admin,
            0,
            ADMIN_DEPTH,
            opts.kato_ms,
            CNTLID_DYNAMIC,
            opts.hostid,
            &opts.subnqn,
            &opts.hostnqn,
            t,
        )
        .await?;
        let cap = Cap::decode(prop_get(&admin, PROP_CAP, true, t).await?);
        let vs = Vs::decode(prop_get(&admin, PROP_VS, false, t).await? as u32);
        let cc = Cc {
            en: true,
            css: 0,
            mps: 0,
            ams: 0,
            shn: Shn::None,
            iosqes: 6,
            iocqes: 4,
            crime: false,
        };
        prop_set(&admin, PROP_CC, cc.encode(), t).await?;
        // CAP.TO is in 500 ms units; wait at most that (and at least our timeout).
        let rdy_wait = t.max(Duration::from_millis(500 * u64::from(cap.to)));
        let end = deadline(rdy_wait);
        loop {
            let csts = Csts::decode(prop_get(&admin, PROP_CSTS, false, t).await? as u32);
            if csts.cfs {
                return Err(InitiatorError::Protocol(
                    "controller fatal status (CSTS.CFS)".into(),
                ));
            }
            if csts.rdy {
                break;
            }
            if keel_reactor::ticks() > end {
                return Err(InitiatorError::Timeout("CSTS.RDY"));
            }
            YieldNow(false).await;
        }
        let cdata = ControllerData::new(
            identify(&admin, CNS_CONTROLLER, 0, "Identify Controller", t).await?,
        );
        let max_xfer = cdata.max_xfer(cap.mpsmin).unwrap_or(DEFAULT_MAX_XFER);
        let io_icd = cdata.in_capsule_data();
        let mut depth = opts.io_queue_depth.min(cap.mqes.saturating_add(1)).max(2);
        if cdata.maxcmd() > 0 {
            depth = depth.min(cdata.maxcmd().max(2));
        }
        let want = NumberOfQueues::allocated(opts.io_queues);
        let cmd = NvmeCmd {
            opc: admin::SET_FEATURES,
            cdw10: u32::from(FID_NUMBER_OF_QUEUES),
            cdw11: want.encode(),
            ..NvmeCmd::default()
        };
        let (cpl, _) = exec(
            &admin,
            cmd,
            false,
            Vec::new(),
            "Set Features Number of Queues",
            t,
        )
        .await?;
        let got = NumberOfQueues {
            nsq: cpl.cdw0 as u16,
            ncq: (cpl.cdw0 >> 16) as u16,
        };
        let io_queues = got
            .sq_count()
            .min(got.cq_count())
            .min(u32::from(opts.io_queues)) as u16;
        let mut namespaces = Vec::new();
        let mut after = 0u32;
        for _ in 0..MAX_NS_LISTS {
            let list = identify(
                &admin,
                CNS_ACTIVE_NS_LIST,
                after,
                "Identify Active NS List",
                t,
            )
            .await?;
            let ids: Vec<u32> = list
                .chunks_exact(4)
                .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .take_while(|&n| n != 0)
                .collect();
            for &nsid in &ids {
                let d = NamespaceData::new(
                    identify(&admin, CNS_NAMESPACE, nsid, "Identify Namespace", t).await?,
                );
                match d.block_size() {
                    Some(block_size) if d.nsze() > 0 => namespaces.push(NsInfo {
                        nsid,
                        block_size,
                        num_blocks: d.nsze(),
                    }),
                    _ => log::warn!(
                        "nvmf initiator: {}: namespace {nsid} has no usable LBA format or is empty; skipped",
                        opts.addr
                    ),
                }
            }
            match ids.last() {
                Some(&last) if ids.len() == IDENTIFY_DATA_SIZE / 4 => after = last,
                _ => break,
            }
        }
        log::info!(
            "nvmf initiator: connected to {} at {} (cntlid {cntlid}, NVMe {}.{}, {} namespace(s), \
             {io_queues} I/O queue(s) of {depth}, in-capsule {io_icd} B, max transfer {max_xfer} B, \
             digests h={} d={})",
            opts.subnqn,
            opts.addr,
            vs.major,
            vs.minor,
            namespaces.len(),
            neg.hdgst,
            neg.ddgst
        );
        let info = Arc::new(CtrlrInfo {
            addr: opts.addr,
            subnqn: opts.subnqn.clone(),
            hostnqn: opts.hostnqn.clone(),
            hostid: opts.hostid,
            cntlid,
            hdgst: opts.hdgst,
            ddgst: opts.ddgst,
            cap,
            vs,
            max_xfer,
            io_icd,
            io_queue_depth: depth,
            io_queues,
            namespaces,
            timeout: t,
            qids: QidPool::new(io_queues),
        });
        let mut ctrlr = Controller {
            admin,
            info,
            keep_alive: None,
        };
        if opts.kato_ms > 0 {
            ctrlr.start_keep_alive(opts.kato_ms);
        }
        Ok(ctrlr)
    }

    /// Send Keep Alive every half KATO from a timed poller.
    fn start_keep_alive(&mut self, kato_ms: u32) {
        let period = Duration::from_millis(u64::from(kato_ms / 2).max(1));
        let weak = self.admin.downgrade();
        self.keep_alive = Some(keel_reactor::register_poller(
            "nvmf-initiator-keep-alive",
            Some(period),
            move || {
                let cmd = NvmeCmd {
                    opc: admin::KEEP_ALIVE,
                    ..NvmeCmd::default()
                };
                if let Some(Err(e)) = weak.submit(&cmd, &[], noop, 0) {
                    log::warn!("nvmf initiator: keep alive not sent: {e}");
                }
                keel_reactor::PollStatus::Idle
            },
        ));
    }

    /// Orderly shutdown (what Linux does on disconnect): CC.SHN = normal, wait for
    /// CSTS.SHST = complete (at most the bring-up timeout), then close the admin queue.
    /// Dropping the controller instead just closes the connection.
    pub async fn shutdown(self) -> Result<(), InitiatorError> {
        let t = self.info.timeout;
        let cc = Cc::decode(prop_get(&self.admin, PROP_CC, false, t).await? as u32);
        let cc = Cc {
            shn: Shn::Normal,
            ..cc
        };
        prop_set(&self.admin, PROP_CC, cc.encode(), t).await?;
        let end = deadline(t);
        loop {
            let csts = Csts::decode(prop_get(&self.admin, PROP_CSTS, false, t).await? as u32);
            if csts.shst == Shst::Complete {
                return Ok(());
            }
            if keel_reactor::ticks() > end {
                return Err(InitiatorError::Timeout("CSTS.SHST complete"));
            }
            YieldNow(false).await;
        }
    }

    /// What the bring-up learned (share it with the cores that connect I/O queues).
    pub fn info(&self) -> &Arc<CtrlrInfo> {
        &self.info
    }

    /// Whether the admin connection failed.
    pub fn is_failed(&self) -> bool {
        self.admin.is_failed()
    }
}

impl Drop for Controller {
    fn drop(&mut self) {
        if let Some(id) = self.keep_alive.take() {
            keel_reactor::unregister_poller(id);
        }
        log::info!(
            "nvmf initiator: disconnecting from {} at {}",
            self.info.subnqn,
            self.info.addr
        );
    }
}

impl IoQpair {
    /// Connect the next free I/O queue of `info`'s controller on the calling core, for
    /// namespace `nsid`, and wait until it is connected: [`IoQpair::start`], then
    /// [`IoQpair::connected`].
    pub async fn connect(info: &Arc<CtrlrInfo>, nsid: u32) -> Result<IoQpair, InitiatorError> {
        let q = IoQpair::start(info, nsid)?;
        q.connected().await?;
        Ok(q)
    }

    /// Start connecting the next free I/O queue of `info`'s controller on the calling core
    /// (a reactor), for namespace `nsid`, without waiting: for synchronous callers such as a
    /// bdev's per-core channel creation. The queue pair is usable at once: I/O submitted
    /// before the connection is up waits for it (at most `depth` commands, then
    /// [`SubmitError::Busy`]) and completes as aborted if the connection fails. Fails at once
    /// only for an inactive namespace or when every granted queue is in use.
    pub fn start(info: &Arc<CtrlrInfo>, nsid: u32) -> Result<IoQpair, InitiatorError> {
        let ns = *info
            .namespace(nsid)
            .ok_or_else(|| InitiatorError::Invalid(format!("namespace {nsid} is not active")))?;
        let qid = info.qids.take().ok_or_else(|| {
            InitiatorError::Invalid(format!(
                "all {} I/O queues the controller granted are in use",
                info.io_queues
            ))
        })?;
        let qp = Qpair::connecting(QpairConfig {
            qid,
            depth: info.io_queue_depth,
            icd: info.io_icd,
            max_xfer: info.max_xfer,
            neg: Negotiated {
                hdgst: false,
                ddgst: false,
                cpda: 0,
                hpda: 0,
                maxh2cdata: 0,
                maxr2t: 0,
            }, // replaced by the ICResp's at attach
            name: format!("{} {} qid {qid}", info.addr, info.subnqn),
        });
        let connected = Rc::new(std::cell::RefCell::new(None));
        let (task_qp, task_info, done) = (qp.handle(), Arc::clone(info), Rc::clone(&connected));
        keel_reactor::spawn_local(async move {
            let r = connect_io_queue(&task_qp, &task_info, nsid).await;
            match &r {
                Ok(()) => task_qp.set_ready(),
                Err(e) => task_qp.fail_connect(&format!("I/O queue connect failed: {e}")),
            }
            *done.borrow_mut() = Some(r);
        });
        Ok(IoQpair {
            qp,
            ns,
            info: Arc::clone(info),
            connected,
        })
    }

    /// Wait until the connection started by [`IoQpair::start`] is up (or failed: its error,
    /// once; later calls say [`InitiatorError::Disconnected`]).
    pub async fn connected(&self) -> Result<(), InitiatorError> {
        loop {
            if let Some(r) = self.connected.borrow_mut().as_mut() {
                return std::mem::replace(r, Err(InitiatorError::Disconnected));
            }
            YieldNow(false).await;
        }
    }

    /// Whether the connection is still being made (I/O submitted now waits for it).
    pub fn is_connecting(&self) -> bool {
        self.qp.is_connecting()
    }

    /// The namespace this queue pair serves.
    pub fn namespace(&self) -> &NsInfo {
        &self.ns
    }
    /// The controller's bring-up facts.
    pub fn info(&self) -> &Arc<CtrlrInfo> {
        &self.info
    }
    /// Queue id.
    pub fn qid(&self) -> u16 {
        self.qp.qid()
    }
    /// Commands in flight at most.
    pub fn depth(&self) -> u16 {
        self.qp.depth()
    }
    /// Whether the connection failed.
    pub fn is_failed(&self) -> bool {
        self.qp.is_failed()
    }
    /// The counters.
    pub fn stats(&self) -> QpairStats {
        self.qp.stats()
    }

    #[inline]
    fn rw(
        &self,
        opc: u8,
        iovs: &[IoVec],
        lba: u64,
        blocks: u32,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        if blocks == 0 || blocks > 65536 {
            return Err(SubmitError::Invalid("block count must be 1 to 65536"));
        }
        if lba
            .checked_add(u64::from(blocks))
            .is_none_or(|end| end > self.ns.num_blocks)
        {
            return Err(SubmitError::Invalid("I/O beyond the end of the namespace"));
        }
        let len = u64::from(blocks) * u64::from(self.ns.block_size);
        let len = u32::try_from(len).map_err(|_| SubmitError::Invalid("transfer too large"))?;
        let cmd = NvmeCmd {
            opc,
            nsid: self.ns.nsid,
            cdw10: lba as u32,
            cdw11: (lba >> 32) as u32,
            cdw12: blocks - 1,
            ..NvmeCmd::default()
        };
        self.qp.submit(&cmd, opc == nvm::WRITE, iovs, len, cb, ctx)
    }

    /// Read `blocks` blocks at `lba` into `iovs`; `cb(ctx, status)` runs later on this core.
    #[inline]
    pub fn read(
        &self,
        iovs: &[IoVec],
        lba: u64,
        blocks: u32,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        self.rw(nvm::READ, iovs, lba, blocks, cb, ctx)
    }

    /// Write `blocks` blocks at `lba` from `iovs`; `cb(ctx, status)` runs later on this core.
    #[inline]
    pub fn write(
        &self,
        iovs: &[IoVec],
        lba: u64,
        blocks: u32,
        cb: IoCallback,
        ctx: usize,
    ) -> Result<(), SubmitError> {
        self.rw(nvm::WRITE, iovs, lba, blocks, cb, ctx)
    }

    /// Flush the namespace's volatile cache.
    pub fn flush(&self, cb: IoCallback, ctx: usize) -> Result<(), SubmitError> {
        let cmd = NvmeCmd {
            opc: nvm::FLUSH,
            nsid: self.ns.nsid,
            ..NvmeCmd::default()
        };
        self.qp.submit(&cmd, false, &[], 0, cb, ctx)
    }
}

impl Drop for IoQpair {
    fn drop(&mut self) {
        // The queue pair closes right after (field drop); the qid is free for the next one.
        self.info.qids.give_back(self.qp.qid());
    }
}

/// The background half of [`IoQpair::start`]: socket, ICReq/ICResp, Fabrics Connect. A
/// Connect refused with Invalid Queue Identifier (the controller has not finished tearing
/// down the queue that used this qid before) is retried on a new connection until the
/// timeout.
async fn connect_io_queue(
    qp: &Qpair,
    info: &Arc<CtrlrInfo>,
    nsid: u32,
) -> Result<(), InitiatorError> {
    let t = info.timeout;
    let end = deadline(t);
    let qid = qp.qid();
    loop {
        let (sock, neg) = connect_socket(&info.addr, info.hdgst, info.ddgst, t).await?;
        qp.attach(sock, neg);
        let r = fabrics_connect(
            qp,
            qid,
            info.io_queue_depth,
            0,
            info.cntlid,
            info.hostid,
            &info.subnqn,
            &info.hostnqn,
            t,
        )
        .await;
        match r {
            Ok(_) => break,
            Err(InitiatorError::Status(_, s))
                if s == Status::INVALID_QUEUE_IDENTIFIER && keel_reactor::ticks() < end =>
            {
                log::debug!(
                    "nvmf initiator: {}: qid {qid} still in use at the controller; retrying",
                    info.addr
                );
                if !qp.detach() {
                    return Err(InitiatorError::Disconnected);
                }
                let pause = deadline(Duration::from_millis(1));
                while keel_reactor::ticks() < pause {
                    YieldNow(false).await;
                }
            }
            Err(e) => return Err(e),
        }
    }
    log::info!(
        "nvmf initiator: I/O queue {qid} to {} connected on core {:?} (namespace {nsid}, depth {})",
        info.addr,
        keel_reactor::current_core(),
        info.io_queue_depth
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::QidPool;

    #[test]
    fn qid_pool_is_bounded_reuses_and_takes_a_freed_qid_last() {
        let p = QidPool::new(3);
        assert_eq!((p.take(), p.take(), p.take()), (Some(1), Some(2), Some(3)));
        assert_eq!(p.take(), None, "bounded by the grant");
        p.give_back(2);
        assert_eq!(p.in_use(), 2);
        assert_eq!(p.take(), Some(2));
        p.give_back(1);
        p.give_back(3);
        // The search goes on after the last qid taken (2): 3 before 1.
        assert_eq!((p.take(), p.take()), (Some(3), Some(1)));
        // Across a word boundary.
        let big = QidPool::new(130);
        for q in 1..=130 {
            assert_eq!(big.take(), Some(q));
        }
        assert_eq!(big.take(), None);
        big.give_back(129);
        assert_eq!(big.take(), Some(129));
        assert_eq!(big.in_use(), 130);
    }

    #[test]
    #[should_panic(expected = "given back but not taken")]
    fn qid_given_back_twice_is_a_bug() {
        let p = QidPool::new(2);
        let q = p.take().unwrap();
        p.give_back(q);
        p.give_back(q);
    }
}
