//! Hostile client for an NVMe-oF RDMA listener (keel-tgt's, in the in-guest CI test).
//!
//! Usage: `cm_probe <ip> <port> [subnqn]` (subnqn defaults to `nqn.2016-06.io.keel:rdma`).
//! Prints one line per check, `ok <name>` or `FAIL <name>: why`, and exits 1 if any failed
//! (2 on bad usage). Each check uses its own event channel and CM id and has 5 s.
//!
//! 1. Malformed RDMA_CM_REQUESTs must be REJECTed with the NVMe-oF status (figure 11) in the
//!    reject's private data; a REJECTED without it, an accept or a timeout fails:
//!    `short-private-data` (8 bytes: sts 1; the InfiniBand/RoCE CM pads a request to 56
//!    bytes, so there the target sees the padded record, whose HSQSIZE is 0: sts 4),
//!    `bad-recfmt` (RECFMT 1: sts 2), `bad-qid` (QID 60000: sts 3), `zero-hsqsize` (sts 4),
//!    `zero-hrqsize` (sts 5).
//! 2. `qp-vanishes-mid-io`: a child process (this binary re-executed, so it shares no verbs
//!    or CM file with us) connects an admin queue, posts a receive and SENDs a Fabrics Connect
//!    whose data the target must RDMA READ, and `_exit`s without waiting for the response:
//!    the kernel destroys its QP and CM id while the target is mid-command. Two children run:
//!    one exits right after posting, one once the SEND is acknowledged (the target then surely
//!    holds the command). Passes if both got that far and check 3 then succeeds.
//! 3. `connect-after`: a fresh admin queue and Fabrics Connect; a 16-byte response capsule
//!    must arrive (success, or a Connect status if the host is not allowed: printed either
//!    way), then `rdma_disconnect` must bring DISCONNECTED.
//!
//! Checks 4 to 6 send malformed command capsules on an admin queue whose Fabrics Connect
//! succeeded (so they need a subsystem that admits this host); checks 4 and 5 first enable
//! the controller (Property Set CC.EN, Property Get CSTS until RDY), as a host does before
//! any admin command other than Fabrics:
//! 4. `bad-sgl-type`: Identify Controller with a Transport Data Block, then with an Address
//!    Data Block as SGL1, must each be answered SGL Descriptor Type Invalid (SCT 0, SC 0x11);
//!    then Identify Controller with a keyed SGL of 4096 bytes (region open to REMOTE_WRITE)
//!    must succeed on the same queue with a printable, non-blank serial number (bytes 4..24).
//! 5. `keyed-too-long`: Identify Controller with a keyed SGL of 16 MiB − 1 bytes (the longest
//!    a keyed descriptor holds, above any max I/O size) must be answered Data SGL Length
//!    Invalid (SC 0x0F) by the transport, before any RDMA.
//! 6. `short-capsule-drops-only-this-qp`: a 32-byte SEND (shorter than a command) must make
//!    the target drop this connection (DISCONNECTED, or a failed completion, and no response);
//!    a fresh admin queue and Fabrics Connect (as in check 3) must then still work.
//! 7. `still-listening`: one more malformed request is rejected after all of the above.

use keel_nvme::cmd::{NvmeCpl, OPC_FABRICS};
use keel_nvme::fabrics::{
    connect_sqe, ConnectData, CNTLID_DYNAMIC, FCTYPE_CONNECT, FCTYPE_PROPERTY_GET,
    FCTYPE_PROPERTY_SET,
};
use keel_nvme::identify::CNS_CONTROLLER;
use keel_nvme::opcode::admin::IDENTIFY;
use keel_nvme::registers::{PROP_CC, PROP_CSTS};
use keel_nvme::sgl::{Sgl, PSDT_SGL_MPTR_CONTIG};
use keel_rdma::nvmf_cm::{self, CmRequest, RejectStatus};
use keel_rdma::verbs::*;
use std::net::{IpAddr, SocketAddr};
use std::process::{Command, ExitCode, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Time allowed for each check.
const CHECK_TIMEOUT: Duration = Duration::from_secs(5);
/// Set in the environment of the re-executed children of check 2: when to vanish.
const CHILD_ENV: &str = "CM_PROBE_CHILD";
/// Vanish right after posting.
const VANISH_NOW: &str = "now";
/// Vanish once the SEND of the Connect is acknowledged.
const VANISH_ACKED: &str = "acked";
/// Subsystem connected to when none is given.
const DEFAULT_SUBNQN: &str = "nqn.2016-06.io.keel:rdma";
/// Host NQN of every Connect.
const HOSTNQN: &str = "nqn.2016-06.io.keel:cm-probe";
/// Host identifier (a random UUID); its last byte is replaced by the check number.
const HOSTID: [u8; 16] = [
    0x5f, 0x0c, 0x6a, 0x1e, 0x2b, 0x7d, 0x4c, 0x39, 0x9a, 0x51, 0x0e, 0x8d, 0x3f, 0x7b, 0x2c, 0x00,
];
/// Admin queue: 32 entries (SQSIZE 31, 0's based) and 32 host receives.
const ADMIN_HSQSIZE: u16 = 31;
const ADMIN_HRQSIZE: u16 = 32;
/// Keep-alive timeout asked for in the Connect (ms).
const KATO_MS: u32 = 5000;
/// Command id of the Connect.
const CONNECT_CID: u16 = 0x4b31;
/// Capsule buffer: the 64-byte SQE, then the receive slot for the response.
const SQE_LEN: usize = 64;
const RECV_OFF: usize = SQE_LEN;
const RECV_LEN: u32 = 64;
const CQE_LEN: usize = 16;
/// Work request ids.
const SEND_WR: u64 = 1;
const RECV_WR: u64 = 2;
/// Identify data (and the host buffer the target RDMA WRITEs it to).
const IDENTIFY_LEN: u32 = 4096;
/// Serial number in the Identify Controller data.
const SERIAL: std::ops::Range<usize> = 4..24;
/// The longest keyed SGL (24-bit length): above any max I/O size the transport accepts.
const KEYED_MAX: u32 = (1 << 24) - 1;
/// Bytes SENT by check 6: shorter than a command.
const SHORT_CAPSULE: u32 = 32;
/// CC as the Linux host writes it to enable the controller: EN, CSS NVM, MPS 0, IOSQES 6,
/// IOCQES 4.
const CC_ENABLE: u32 = 1 | 6 << 16 | 4 << 20;
/// CSTS.RDY.
const CSTS_RDY: u32 = 1;
/// Prepared commands ahead of a check's own: Property Set CC (enable), Property Get CSTS.
const ENABLE_CMDS: usize = 2;
/// NVMe generic statuses (SCT 0) the transport must answer with.
const SC_DATA_SGL_LENGTH_INVALID: u8 = 0x0f;
const SC_SGL_DESCRIPTOR_TYPE_INVALID: u8 = 0x11;

type R<T> = Result<T, String>;

/// Where to connect and which subsystem to name.
struct Target {
    addr: SocketAddr,
    subnqn: String,
}

/// Polls `f` until it yields a value or `deadline` passes.
fn wait_until<T>(deadline: Instant, what: &str, mut f: impl FnMut() -> R<Option<T>>) -> R<T> {
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() >= deadline {
            return Err(format!("timed out waiting for {what}"));
        }
        // The target busy-polls, maybe on the CPU we run on: do not spin.
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// One active-side connection: its own event channel, id, PD, CQ and buffers. Fields drop in
/// order: the id (and its QP) first, then the MRs, and the buffers they cover last.
struct Conn {
    id: CmId,
    capsule_mr: Option<MemoryRegion>,
    data_mr: Option<MemoryRegion>,
    cmds_mr: Option<MemoryRegion>,
    host_mr: Option<MemoryRegion>,
    cq: Arc<CompletionQueue>,
    pd: Arc<ProtectionDomain>,
    ch: CmEventChannel,
    /// SQE at 0, response receive slot at `RECV_OFF`.
    capsule: Vec<u8>,
    /// The Connect data the target RDMA READs.
    data: Vec<u8>,
    /// Commands sent after the Connect, `SQE_LEN` bytes each (see [`Conn::prepare`]).
    cmds: Vec<u8>,
    /// Controller-to-host data: the target RDMA WRITEs it.
    host: Vec<u8>,
}

impl Conn {
    /// Resolves address and route and creates the QP.
    fn open(t: &Target, ctxs: &[Arc<Context>], deadline: Instant) -> R<Self> {
        let e = fail_in;
        let ch = CmEventChannel::new().map_err(e("event channel"))?;
        let mut id = ch.create_id(1).map_err(e("rdma_create_id"))?;
        id.resolve_addr(None, t.addr, 2000)
            .map_err(e("rdma_resolve_addr"))?;
        expect_event(&ch, deadline, CmEventKind::AddrResolved)?;
        id.resolve_route(2000).map_err(e("rdma_resolve_route"))?;
        expect_event(&ch, deadline, CmEventKind::RouteResolved)?;
        let ctx = id
            .device_context(ctxs)
            .ok_or("the route is not on an RDMA device")?;
        let pd = ProtectionDomain::new(ctx).map_err(e("ibv_alloc_pd"))?;
        let cq = CompletionQueue::new(ctx, 16, None, 0).map_err(e("ibv_create_cq"))?;
        let init = QpInit {
            send_cq: cq.clone(),
            recv_cq: cq.clone(),
            srq: None,
            max_send_wr: 4,
            max_recv_wr: 4,
            max_send_sge: 1,
            max_recv_sge: 1,
            max_inline_data: 0,
            sq_sig_all: false,
        };
        id.create_qp(&pd, &init).map_err(e("rdma_create_qp"))?;
        Ok(Self {
            id,
            capsule_mr: None,
            data_mr: None,
            cmds_mr: None,
            host_mr: None,
            cq,
            pd,
            ch,
            capsule: Vec::new(),
            data: Vec::new(),
            cmds: Vec::new(),
            host: Vec::new(),
        })
    }

    /// Sends `private_data` in a connect request; returns the event that answers it.
    fn connect(&mut self, private_data: &[u8], deadline: Instant) -> R<CmEvent> {
        // As the Linux host: the target may RDMA READ from us, we never read from it.
        let param = ConnParam {
            private_data,
            responder_resources: 16,
            initiator_depth: 0,
            retry_count: 7,
            rnr_retry_count: 7,
        };
        self.id
            .connect(&param)
            .map_err(|e| format!("rdma_connect: {e}"))?;
        wait_until(deadline, "the answer to the connect request", || {
            let ev = self.ch.poll_event().map_err(|e| e.to_string())?;
            Ok(ev.filter(|ev| ev.id() == self.id.handle()))
        })
    }

    /// Connects an admin queue and prepares the Fabrics Connect: the data (REMOTE_READ) and the
    /// SQE naming it are written before their regions are registered, so the CPU never
    /// touches memory the device may use.
    fn admin(t: &Target, ctxs: &[Arc<Context>], tag: u8, deadline: Instant) -> R<(Self, u16)> {
        let mut c = Self::open(t, ctxs, deadline)?;
        let mut hostid = HOSTID;
        hostid[15] = tag;
        c.data = ConnectData {
            hostid,
            cntlid: CNTLID_DYNAMIC,
            subnqn: t.subnqn.clone(),
            hostnqn: HOSTNQN.into(),
        }
        .encode()
        .to_vec();
        // SAFETY: `data` is owned by `c` and dropped after the MR and the QP (field order);
        // it is never written again.
        let data_mr = unsafe {
            MemoryRegion::register(
                &c.pd,
                c.data.as_mut_ptr(),
                c.data.len(),
                Access::REMOTE_READ,
            )
        }
        .map_err(|e| format!("ibv_reg_mr: {e}"))?;
        let sgl = Sgl::Keyed {
            addr: data_mr.addr() as u64,
            len: ConnectData::SIZE as u32,
            key: data_mr.rkey(),
            invalidate: false,
        };
        c.data_mr = Some(data_mr);
        c.capsule = vec![0u8; RECV_OFF + RECV_LEN as usize];
        c.capsule[..SQE_LEN].copy_from_slice(&connect_sqe_bytes(sgl));
        // SAFETY: `capsule` is owned by `c` and dropped after the MR and the QP; the CPU
        // reads the receive slot only after its completion and never writes the buffer again.
        let capsule_mr = unsafe {
            MemoryRegion::register(
                &c.pd,
                c.capsule.as_mut_ptr(),
                c.capsule.len(),
                Access::LOCAL_WRITE,
            )
        }
        .map_err(|e| format!("ibv_reg_mr: {e}"))?;
        c.capsule_mr = Some(capsule_mr);

        let req = CmRequest {
            qid: 0,
            hrqsize: ADMIN_HRQSIZE,
            hsqsize: ADMIN_HSQSIZE,
            cntlid: 0,
        };
        let ev = c.connect(&req.encode(), deadline)?;
        if ev.kind() != CmEventKind::Established {
            return Err(describe_unexpected(&ev, "ESTABLISHED"));
        }
        let crqsize = nvmf_cm::parse_accept(ev.private_data())
            .map_err(|e| format!("accept private data: {e}"))?;
        Ok((c, crqsize))
    }

    /// Posts the receive for the response, then SENDs the Connect capsule (signaled).
    fn post_connect(&self) -> R<()> {
        let (qp, mr) = match (self.id.qp(), &self.capsule_mr) {
            (Some(qp), Some(mr)) => (qp, mr),
            _ => return Err("no QP or capsule region".into()),
        };
        let recv = [mr
            .sge(RECV_OFF, RECV_LEN)
            .ok_or("receive slot out of range")?];
        let sqe = [mr.sge(0, SQE_LEN as u32).ok_or("SQE out of range")?];
        // SAFETY: the slot lies in `capsule`, which outlives the QP (see Conn) and which the
        // CPU reads only after the receive completes.
        unsafe { qp.post_recv(&mut [RecvWr::new(RECV_WR, &recv)]) }
            .map_err(|e| format!("post receive: {e}"))?;
        // SAFETY: the SQE and the Connect data are never written again and outlive the QP.
        unsafe { qp.post_send(&mut [SendWr::send(SEND_WR, &sqe).signaled()]) }
            .map_err(|e| format!("post send: {e}"))
    }

    /// Polls the CQ until `want` completes (successfully) or `deadline`; returns it.
    fn wait_completion(&self, want: u64, deadline: Instant) -> R<WorkCompletion> {
        let mut batch = [WorkCompletion::default(); 4];
        let mut found = None;
        wait_until(deadline, "a completion", || {
            let n = self.cq.poll(&mut batch).map_err(|e| e.to_string())?;
            for wc in &batch[..n] {
                if !wc.is_success() {
                    return Err(format!(
                        "work request {} failed: {} (vendor error {:#x})",
                        wc.wr_id(),
                        wc.status_str(),
                        wc.vendor_err()
                    ));
                }
                if wc.wr_id() == want {
                    found = Some(*wc);
                }
            }
            Ok(found)
        })
    }

    /// The response capsule in the receive slot, once its receive has completed.
    fn response(&self, wc: &WorkCompletion) -> R<NvmeCpl> {
        let len = wc.byte_len() as usize;
        if len != CQE_LEN {
            return Err(format!("response capsule of {len} bytes, not {CQE_LEN}"));
        }
        // The receive completed, so the device is done with the slot. No Rust reference to
        // the buffer existed while it was posted (only the raw address escaped to the
        // provider), so reading it through the Vec now is sound.
        let b = &self.capsule[RECV_OFF..RECV_OFF + CQE_LEN];
        let le16 = |o: usize| u16::from_le_bytes([b[o], b[o + 1]]);
        let le32 = |o: usize| u32::from_le_bytes([b[o], b[o + 1], b[o + 2], b[o + 3]]);
        Ok(NvmeCpl {
            cdw0: le32(0),
            cdw1: le32(4),
            sqhd: le16(8),
            sqid: le16(10),
            cid: le16(12),
            status: le16(14),
        })
    }

    /// `rdma_disconnect`, then waits for DISCONNECTED.
    fn disconnect(&mut self, deadline: Instant) -> R<()> {
        self.id
            .disconnect()
            .map_err(|e| format!("rdma_disconnect: {e}"))?;
        expect_event(&self.ch, deadline, CmEventKind::Disconnected)
    }

    /// An admin queue (see [`Conn::admin`]) whose Fabrics Connect succeeded.
    fn connected(t: &Target, ctxs: &[Arc<Context>], tag: u8, deadline: Instant) -> R<Self> {
        let (mut c, _) = Self::admin(t, ctxs, tag, deadline)?;
        let cpl = c
            .post_connect()
            .and_then(|()| c.wait_completion(RECV_WR, deadline))
            .and_then(|wc| c.response(&wc));
        match cpl {
            Ok(cpl) if cpl.cid == CONNECT_CID && cpl.status >> 1 == 0 => Ok(c),
            res => {
                // Best effort: leave the target with nothing half-open.
                let _ = c.disconnect(Instant::now() + Duration::from_secs(1));
                Err(format!(
                    "Fabrics Connect: {}",
                    res.map_or_else(|e| e, |cpl| describe_cpl(&cpl))
                ))
            }
        }
    }

    /// Registers the host buffer ([`IDENTIFY_LEN`] bytes, which the target may RDMA WRITE),
    /// then the commands `build` makes for it (they may name its key), after the
    /// [`ENABLE_CMDS`] of [`Conn::enable`]. As in [`Conn::admin`], each is written before its
    /// region is registered and never written again.
    fn prepare(&mut self, build: impl FnOnce(&MemoryRegion) -> Vec<[u8; SQE_LEN]>) -> R<()> {
        if self.host_mr.is_some() || self.cmds_mr.is_some() {
            return Err("commands prepared twice".into());
        }
        self.host = vec![0u8; IDENTIFY_LEN as usize];
        // SAFETY: `host` is owned by `self` and dropped after the MR and the QP (field order);
        // the CPU reads it only once the response that follows the target's RDMA WRITE has
        // arrived, and never writes it.
        let host_mr = unsafe {
            MemoryRegion::register(
                &self.pd,
                self.host.as_mut_ptr(),
                self.host.len(),
                Access::LOCAL_WRITE | Access::REMOTE_WRITE,
            )
        }
        .map_err(fail_in("ibv_reg_mr"))?;
        let mut cmds = vec![
            property_sqe(0x4c01, FCTYPE_PROPERTY_SET, PROP_CC, CC_ENABLE),
            property_sqe(0x4c02, FCTYPE_PROPERTY_GET, PROP_CSTS, 0),
        ];
        cmds.extend(build(&host_mr));
        self.cmds = cmds.concat();
        self.host_mr = Some(host_mr);
        // SAFETY: `cmds` is owned by `self`, dropped after the MR and the QP, never written
        // again; the device only reads it (SEND source).
        let cmds_mr = unsafe {
            MemoryRegion::register(
                &self.pd,
                self.cmds.as_mut_ptr(),
                self.cmds.len(),
                Access::NONE,
            )
        }
        .map_err(fail_in("ibv_reg_mr"))?;
        self.cmds_mr = Some(cmds_mr);
        Ok(())
    }

    /// Posts the receive for a response, then SENDs the first `len` bytes of command `k` of
    /// those `build` prepared (signaled). The previous response must have been read.
    fn send_cmd(&self, k: usize, len: u32) -> R<()> {
        self.send_raw(ENABLE_CMDS + k, len)
    }

    /// [`Conn::send_cmd`] by index among all prepared commands.
    fn send_raw(&self, k: usize, len: u32) -> R<()> {
        let (qp, cap, cmds) = match (self.id.qp(), &self.capsule_mr, &self.cmds_mr) {
            (Some(qp), Some(cap), Some(cmds)) => (qp, cap, cmds),
            _ => return Err("no QP, capsule region or prepared commands".into()),
        };
        let recv = [cap
            .sge(RECV_OFF, RECV_LEN)
            .ok_or("receive slot out of range")?];
        let sqe = [cmds
            .sge(k * SQE_LEN, len)
            .ok_or("no such prepared command")?];
        // SAFETY: the slot lies in `capsule`, which outlives the QP; the CPU is done with the
        // previous response and reads the slot again only after this receive completes.
        unsafe { qp.post_recv(&mut [RecvWr::new(RECV_WR, &recv)]) }
            .map_err(|e| format!("post receive: {e}"))?;
        // SAFETY: prepared commands are never written again and outlive the QP.
        unsafe { qp.post_send(&mut [SendWr::send(SEND_WR, &sqe).signaled()]) }
            .map_err(|e| format!("post send: {e}"))
    }

    /// Sends command `k` of those `build` prepared; returns its response, which must name its
    /// cid.
    fn command(&self, k: usize, deadline: Instant) -> R<NvmeCpl> {
        self.command_raw(ENABLE_CMDS + k, deadline)
    }

    /// [`Conn::command`] by index among all prepared commands.
    fn command_raw(&self, k: usize, deadline: Instant) -> R<NvmeCpl> {
        self.send_raw(k, SQE_LEN as u32)?;
        let wc = self.wait_completion(RECV_WR, deadline)?;
        let cpl = self.response(&wc)?;
        let at = k * SQE_LEN;
        let cid = u16::from_le_bytes([self.cmds[at + 2], self.cmds[at + 3]]);
        if cpl.cid != cid {
            return Err(format!("response for command {:#x}, not {cid:#x}", cpl.cid));
        }
        Ok(cpl)
    }

    /// Enables the controller: Property Set CC.EN, then Property Get CSTS until RDY.
    fn enable(&self, deadline: Instant) -> R<()> {
        let cpl = self.command_raw(0, deadline)?;
        if cpl.status >> 1 != 0 {
            return Err(format!("Property Set CC: {}", describe_cpl(&cpl)));
        }
        loop {
            let cpl = self.command_raw(1, deadline)?;
            if cpl.status >> 1 != 0 {
                return Err(format!("Property Get CSTS: {}", describe_cpl(&cpl)));
            }
            if cpl.cdw0 & CSTS_RDY != 0 {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(format!("CSTS {:#x}: not ready in time", cpl.cdw0));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Waits until the target drops the connection: DISCONNECTED, or failing that by
    /// `deadline`, a failed (flushed) completion. A response capsule fails.
    fn wait_dropped(&self, deadline: Instant) -> R<String> {
        let mut batch = [WorkCompletion::default(); 4];
        let mut failed = None;
        loop {
            let n = self.cq.poll(&mut batch).map_err(|e| e.to_string())?;
            for wc in &batch[..n] {
                if !wc.is_success() {
                    failed.get_or_insert_with(|| {
                        format!("work request {} {}", wc.wr_id(), wc.status_str())
                    });
                } else if wc.wr_id() == RECV_WR {
                    let answer = self.response(wc).map(|cpl| describe_cpl(&cpl));
                    return Err(format!(
                        "the target answered instead of dropping: {}",
                        answer.unwrap_or_else(|e| e)
                    ));
                }
            }
            match self.ch.poll_event().map_err(|e| e.to_string())? {
                Some(ev) if ev.kind() == CmEventKind::Disconnected => {
                    return Ok(match failed {
                        Some(f) => format!("DISCONNECTED ({f})"),
                        None => "DISCONNECTED".into(),
                    });
                }
                Some(ev) => return Err(describe_unexpected(&ev, "DISCONNECTED")),
                None => {}
            }
            if Instant::now() >= deadline {
                return failed
                    .map(|f| format!("no DISCONNECTED in time, but {f}"))
                    .ok_or_else(|| "neither DISCONNECTED nor a failed completion in time".into());
            }
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// Maps a verbs error to a message naming the failed call.
fn fail_in(op: &'static str) -> impl Fn(Error) -> String {
    move |err| format!("{op}: {err}")
}

/// Waits for the next event on `ch` and checks its kind.
fn expect_event(ch: &CmEventChannel, deadline: Instant, want: CmEventKind) -> R<()> {
    let ev = wait_until(deadline, &format!("{want:?}"), || {
        ch.poll_event().map_err(|e| e.to_string())
    })?;
    if ev.kind() == want {
        Ok(())
    } else {
        Err(describe_unexpected(&ev, &format!("{want:?}")))
    }
}

fn describe_unexpected(ev: &CmEvent, want: &str) -> String {
    let data = ev.private_data();
    let head = &data[..data.len().min(8)];
    format!(
        "got {:?} (status {}, {} bytes of private data starting {head:02x?}) instead of {want}",
        ev.kind(),
        ev.status(),
        data.len()
    )
}

/// A Fabrics Connect SQE for the admin queue whose data is described by `data`.
fn connect_sqe_bytes(data: Sgl) -> [u8; SQE_LEN] {
    let mut b = [0u8; SQE_LEN];
    b[0] = OPC_FABRICS;
    b[1] = PSDT_SGL_MPTR_CONTIG << 6;
    b[2..4].copy_from_slice(&CONNECT_CID.to_le_bytes());
    b[4] = FCTYPE_CONNECT;
    b[24..40].copy_from_slice(&data.encode());
    // RECFMT 0 and QID 0 (admin) stay zero.
    let at = |o: u16| usize::from(o);
    b[at(connect_sqe::QID)..at(connect_sqe::QID) + 2].copy_from_slice(&0u16.to_le_bytes());
    b[at(connect_sqe::SQSIZE)..at(connect_sqe::SQSIZE) + 2]
        .copy_from_slice(&ADMIN_HSQSIZE.to_le_bytes());
    b[at(connect_sqe::KATO)..at(connect_sqe::KATO) + 4].copy_from_slice(&KATO_MS.to_le_bytes());
    b
}

/// Check 1 (and 7): a request with `private_data` must be rejected with one of `expect`.
fn check_reject(
    t: &Target,
    ctxs: &[Arc<Context>],
    private_data: &[u8],
    expect: &[RejectStatus],
) -> R<String> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut c = Conn::open(t, ctxs, deadline)?;
    let ev = c.connect(private_data, deadline)?;
    match ev.kind() {
        CmEventKind::Rejected => {}
        CmEventKind::Established => {
            // Best effort: leave the target with nothing half-open.
            let _ = c.disconnect(Instant::now() + Duration::from_secs(1));
            return Err("the request was accepted".into());
        }
        _ => return Err(describe_unexpected(&ev, "REJECTED")),
    }
    let data = ev.private_data();
    let sts = nvmf_cm::parse_reject(data).map_err(|e| {
        format!(
            "REJECTED (reason {}) without NVMe-oF private data: {e}",
            ev.status()
        )
    })?;
    let got = RejectStatus::from_code(sts);
    match got {
        Some(s) if expect.contains(&s) => Ok(format!(
            "sts {sts} ({s}), {} bytes of reject data",
            data.len()
        )),
        _ => Err(format!(
            "sts {sts} ({}), want {}",
            got.map_or("undefined".to_string(), |s| s.to_string()),
            expect
                .iter()
                .map(|s| s.code().to_string())
                .collect::<Vec<_>>()
                .join(" or ")
        )),
    }
}

/// The malformed requests of check 1: name, private data, accepted statuses.
fn malformed_requests() -> Vec<(&'static str, Vec<u8>, Vec<RejectStatus>)> {
    let admin = |qid: u16, hrqsize: u16, hsqsize: u16| {
        CmRequest {
            qid,
            hrqsize,
            hsqsize,
            cntlid: 0,
        }
        .encode()
    };
    let mut recfmt = admin(0, ADMIN_HRQSIZE, ADMIN_HSQSIZE);
    recfmt[0..2].copy_from_slice(&1u16.to_le_bytes());
    vec![
        (
            "short-private-data",
            admin(0, ADMIN_HRQSIZE, 0)[..8].to_vec(),
            vec![RejectStatus::InvalidLength, RejectStatus::InvalidHsqsize],
        ),
        (
            "bad-recfmt",
            recfmt.to_vec(),
            vec![RejectStatus::InvalidRecfmt],
        ),
        (
            "bad-qid",
            admin(60000, ADMIN_HRQSIZE, ADMIN_HSQSIZE).to_vec(),
            vec![RejectStatus::InvalidQid],
        ),
        (
            "zero-hsqsize",
            admin(0, ADMIN_HRQSIZE, 0).to_vec(),
            vec![RejectStatus::InvalidHsqsize],
        ),
        (
            "zero-hrqsize",
            admin(0, 0, ADMIN_HSQSIZE).to_vec(),
            vec![RejectStatus::InvalidHrqsize],
        ),
    ]
}

/// Check 2's child: connect and post the Connect; with `when` = [`VANISH_ACKED`] also wait
/// for the SEND's acknowledgement (not the response). The caller then `_exit`s.
fn vanish(t: &Target, when: &str) -> R<String> {
    let ctxs = cm_contexts().map_err(|e| e.to_string())?;
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let (c, _) = Conn::admin(t, &ctxs, 2, deadline)?;
    c.post_connect()?;
    let note = if when == VANISH_ACKED {
        c.wait_completion(SEND_WR, deadline)
            .map_err(|e| format!("SEND not acknowledged: {e}"))?;
        "after the SEND was acknowledged"
    } else {
        "right after posting"
    };
    // The CM id, QP, MRs and the buffers the target is reading stay as they are: `_exit`
    // leaves them to the kernel.
    std::mem::forget(c);
    Ok(note.into())
}

/// Check 2: runs [`vanish`] in a re-executed child (a forked one would share librdmacm's
/// device files with us, so its QP would outlive it).
fn check_vanish(t: &Target, when: &str) -> R<()> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut child = Command::new(exe)
        .env(CHILD_ENV, when)
        .arg(t.addr.ip().to_string())
        .arg(t.addr.port().to_string())
        .arg(&t.subnqn)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| format!("spawning the child: {e}"))?;
    let deadline = Instant::now() + CHECK_TIMEOUT + Duration::from_secs(2);
    let waited = wait_until(deadline, "the child", || {
        child
            .try_wait()
            .map_err(|e| format!("waiting for the child: {e}"))
    });
    match waited {
        Ok(status) if status.success() => Ok(()),
        Ok(status) => Err(format!("the child ({when}) failed ({status})")),
        Err(e) => {
            let _ = child.kill();
            let _ = child.wait();
            Err(format!("the child ({when}): {e}"))
        }
    }
}

/// Check 3: a clean admin connect, Fabrics Connect with its response, disconnect.
fn check_connect(t: &Target, ctxs: &[Arc<Context>]) -> R<String> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let (mut c, crqsize) = Conn::admin(t, ctxs, 3, deadline)?;
    c.post_connect()?;
    let wc = c.wait_completion(RECV_WR, deadline)?;
    let cpl = c.response(&wc)?;
    if cpl.cid != CONNECT_CID {
        return Err(format!(
            "response for command {:#x}, not {CONNECT_CID:#x}",
            cpl.cid
        ));
    }
    let status = if cpl.status >> 1 == 0 {
        format!("success, cntlid {}", cpl.cdw0 as u16)
    } else {
        format!(
            "Connect status sct {} sc {:#04x}{} (cdw0 {:#x})",
            cpl.sct(),
            cpl.sc(),
            if cpl.status & 0x8000 != 0 { " dnr" } else { "" },
            cpl.cdw0
        )
    };
    c.disconnect(Instant::now() + CHECK_TIMEOUT)?;
    Ok(format!(
        "crqsize {crqsize}, {status}, sqhd {}; disconnected",
        cpl.sqhd
    ))
}

/// Status fields of a response, for messages.
fn describe_cpl(cpl: &NvmeCpl) -> String {
    format!(
        "cid {:#x} sct {} sc {:#04x}{}",
        cpl.cid,
        cpl.sct(),
        cpl.sc(),
        if cpl.status & 0x8000 != 0 { " dnr" } else { "" }
    )
}

/// `cpl` must carry generic status `sc`.
fn expect_sc(cpl: &NvmeCpl, sc: u8) -> R<()> {
    if cpl.sct() == 0 && cpl.sc() == sc {
        Ok(())
    } else {
        Err(format!("{}, want sct 0 sc {sc:#04x}", describe_cpl(cpl)))
    }
}

/// A 4-byte Property Set (`value` at `ofst`) or Get (`value` unused) with command id `cid`.
fn property_sqe(cid: u16, fctype: u8, ofst: u32, value: u32) -> [u8; SQE_LEN] {
    let mut b = [0u8; SQE_LEN];
    b[0] = OPC_FABRICS;
    b[1] = PSDT_SGL_MPTR_CONTIG << 6;
    b[2..4].copy_from_slice(&cid.to_le_bytes());
    b[4] = fctype;
    // ATTRIB (byte 40) 0: 4 bytes.
    b[44..48].copy_from_slice(&ofst.to_le_bytes());
    b[48..52].copy_from_slice(&value.to_le_bytes());
    b
}

/// Identify Controller (CNS 1, NSID 0) with command id `cid` and SGL1 `sgl`.
fn identify_sqe(cid: u16, sgl: Sgl) -> [u8; SQE_LEN] {
    let mut b = [0u8; SQE_LEN];
    b[0] = IDENTIFY;
    b[1] = PSDT_SGL_MPTR_CONTIG << 6;
    b[2..4].copy_from_slice(&cid.to_le_bytes());
    b[24..40].copy_from_slice(&sgl.encode());
    b[40] = CNS_CONTROLLER; // CDW10 bits 7:0
    b
}

/// A keyed SGL of `len` bytes at the start of `host`.
fn keyed(host: &MemoryRegion, len: u32) -> Sgl {
    Sgl::Keyed {
        addr: host.addr() as u64,
        len,
        key: host.rkey(),
        invalidate: false,
    }
}

/// Identify Controller with a keyed SGL of [`IDENTIFY_LEN`] bytes (prepared command `k`)
/// must succeed; returns the serial number, which must be printable and not blank.
fn identify_ok(c: &Conn, k: usize, deadline: Instant) -> R<String> {
    let cpl = c.command(k, deadline)?;
    if cpl.status >> 1 != 0 {
        return Err(format!("keyed Identify: {}", describe_cpl(&cpl)));
    }
    // The response followed the target's RDMA WRITE on the same QP, so the data is in place
    // and the device is done with the buffer (and no Rust reference existed meanwhile).
    let sn = &c.host[SERIAL];
    if !sn.iter().all(|b| (0x20..0x7f).contains(b)) || sn.iter().all(|&b| b == b' ') {
        return Err(format!("keyed Identify: serial number {sn:02x?}"));
    }
    Ok(String::from_utf8_lossy(sn).trim_end().to_string())
}

/// Runs `body` on a fresh admin queue whose Fabrics Connect succeeded and whose controller
/// is enabled, with the commands `build` prepares (check tag `tag`), then disconnects.
fn on_connected(
    t: &Target,
    ctxs: &[Arc<Context>],
    tag: u8,
    build: impl FnOnce(&MemoryRegion) -> Vec<[u8; SQE_LEN]>,
    body: impl FnOnce(&Conn, Instant) -> R<String>,
) -> R<String> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut c = Conn::connected(t, ctxs, tag, deadline)?;
    let res = c
        .prepare(build)
        .and_then(|()| c.enable(deadline))
        .and_then(|()| body(&c, deadline));
    let bye = c.disconnect(Instant::now() + CHECK_TIMEOUT);
    match (res, bye) {
        (Ok(detail), Ok(())) => Ok(format!("{detail}; disconnected")),
        (Ok(_), Err(e)) => Err(e),
        (Err(e), _) => Err(e),
    }
}

/// Check 4: bad SGL types answered with NVMe status, then a good Identify on the same queue.
fn check_bad_sgl_type(t: &Target, ctxs: &[Arc<Context>]) -> R<String> {
    let build = |host: &MemoryRegion| {
        vec![
            identify_sqe(0x4c41, Sgl::Transport { len: IDENTIFY_LEN }),
            identify_sqe(
                0x4c42,
                Sgl::Address {
                    addr: host.addr() as u64,
                    len: IDENTIFY_LEN,
                },
            ),
            identify_sqe(0x4c43, keyed(host, IDENTIFY_LEN)),
        ]
    };
    on_connected(t, ctxs, 4, build, |c, deadline| {
        let mut got = Vec::new();
        for (k, what) in [(0, "Transport Data Block"), (1, "Address Data Block")] {
            let cpl = c.command(k, deadline)?;
            expect_sc(&cpl, SC_SGL_DESCRIPTOR_TYPE_INVALID).map_err(|e| format!("{what}: {e}"))?;
            got.push(format!("{what}: {}", describe_cpl(&cpl)));
        }
        let sn = identify_ok(c, 2, deadline)?;
        Ok(format!(
            "{}; keyed Identify: success, serial {sn:?}",
            got.join(", ")
        ))
    })
}

/// Check 5: a keyed SGL above the max I/O size, then a good Identify on the same queue.
fn check_keyed_too_long(t: &Target, ctxs: &[Arc<Context>]) -> R<String> {
    let build = |host: &MemoryRegion| {
        vec![
            identify_sqe(0x4c51, keyed(host, KEYED_MAX)),
            identify_sqe(0x4c52, keyed(host, IDENTIFY_LEN)),
        ]
    };
    on_connected(t, ctxs, 5, build, |c, deadline| {
        let cpl = c.command(0, deadline)?;
        expect_sc(&cpl, SC_DATA_SGL_LENGTH_INVALID)?;
        let sn = identify_ok(c, 1, deadline)?;
        Ok(format!(
            "keyed SGL of {KEYED_MAX} bytes: {}; keyed Identify after it: success, serial {sn:?}",
            describe_cpl(&cpl)
        ))
    })
}

/// Check 6: a SEND shorter than a command drops this connection, and only it.
fn check_short_capsule(t: &Target, ctxs: &[Arc<Context>]) -> R<String> {
    let deadline = Instant::now() + CHECK_TIMEOUT;
    let mut c = Conn::connected(t, ctxs, 6, deadline)?;
    let dropped = c
        .prepare(|host| vec![identify_sqe(0x4c61, keyed(host, IDENTIFY_LEN))])
        .and_then(|()| c.send_cmd(0, SHORT_CAPSULE))
        .and_then(|()| c.wait_dropped(deadline));
    let dropped = match dropped {
        Ok(d) => d,
        Err(e) => {
            // Best effort: leave the target with nothing half-open.
            let _ = c.disconnect(Instant::now() + Duration::from_secs(1));
            return Err(e);
        }
    };
    // The target has disconnected: destroying the QP and CM id is all that is left.
    drop(c);
    let after = check_connect(t, ctxs)
        .map_err(|e| format!("dropped ({dropped}), but the next connection failed: {e}"))?;
    Ok(format!(
        "{SHORT_CAPSULE}-byte SEND: {dropped}; next connection: {after}"
    ))
}

fn parse_args(args: &[String]) -> R<Target> {
    let (ip, port) = match args {
        [ip, port] | [ip, port, _] => (ip, port),
        _ => return Err("usage: cm_probe <ip> <port> [subnqn]".into()),
    };
    let ip: IpAddr = ip.parse().map_err(|e| format!("bad ip {ip:?}: {e}"))?;
    let port: u16 = port
        .parse()
        .map_err(|e| format!("bad port {port:?}: {e}"))?;
    Ok(Target {
        addr: SocketAddr::new(ip, port),
        subnqn: args.get(2).map_or(DEFAULT_SUBNQN.into(), Clone::clone),
    })
}

fn report(name: &str, res: &R<String>) -> bool {
    match res {
        Ok(detail) => println!("ok {name}: {detail}"),
        Err(why) => println!("FAIL {name}: {why}"),
    }
    res.is_ok()
}

/// What check 2 reports when it passes.
const VANISHED: &str = "two children vanished mid-Connect (at once, and after the SEND's ack); \
                        the next connection worked";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let t = match parse_args(&args) {
        Ok(t) => t,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    if let Ok(when) = std::env::var(CHILD_ENV) {
        match vanish(&t, &when) {
            Ok(note) => eprintln!("cm_probe child: Connect posted; vanishing {note}"),
            Err(e) => {
                eprintln!("cm_probe child: {e}");
                return ExitCode::from(2);
            }
        }
        // SAFETY: ends the process at once, running no destructor or exit handler, so the
        // kernel (not librdmacm) tears down the connection; nothing of ours needs to run.
        unsafe { libc::_exit(0) };
    }
    let ctxs = match cm_contexts() {
        Ok(c) => c,
        Err(e) => {
            println!("FAIL setup: rdma_get_devices: {e}");
            return ExitCode::FAILURE;
        }
    };
    let mut ok = true;
    for (name, data, expect) in malformed_requests() {
        ok &= report(name, &check_reject(&t, &ctxs, &data, &expect));
    }
    let vanished = check_vanish(&t, VANISH_NOW).and_then(|()| check_vanish(&t, VANISH_ACKED));
    let after = check_connect(&t, &ctxs);
    let vanished = match (vanished, &after) {
        (Ok(()), Ok(_)) => Ok(VANISHED.to_string()),
        (Ok(_), Err(_)) => Err("the connection after it failed (see connect-after)".into()),
        (Err(e), _) => Err(e),
    };
    ok &= report("qp-vanishes-mid-io", &vanished);
    ok &= report("connect-after", &after);
    ok &= report("bad-sgl-type", &check_bad_sgl_type(&t, &ctxs));
    ok &= report("keyed-too-long", &check_keyed_too_long(&t, &ctxs));
    ok &= report(
        "short-capsule-drops-only-this-qp",
        &check_short_capsule(&t, &ctxs),
    );
    let mut recfmt = CmRequest {
        qid: 0,
        hrqsize: ADMIN_HRQSIZE,
        hsqsize: ADMIN_HSQSIZE,
        cntlid: 0,
    }
    .encode();
    recfmt[0] = 1;
    ok &= report(
        "still-listening",
        &check_reject(&t, &ctxs, &recfmt, &[RejectStatus::InvalidRecfmt]),
    );
    if ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}
