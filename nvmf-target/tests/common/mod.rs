//! Shared pieces of the socket-level tests: a process-wide 2-core target runtime with the TCP
//! transport, per-test subsystems on ephemeral loopback ports, and a minimal raw NVMe/TCP host
//! (blocking `std::net::TcpStream`) that speaks ICReq, command capsules, R2T/H2CData,
//! C2HData and CapsuleResp, with or without header and data digests.
//!
//! The host is deliberately simple (one command at a time per connection) and checks
//! everything the target sends: PDU framing, digests, CID echo and data offsets.

#![allow(dead_code)] // Each test binary uses a different subset.

use keel_nvme::cmd::{NvmeCmd, NvmeCpl, OPC_FABRICS};
use keel_nvme::pdu::{
    align_up, digest, CapsuleCmdHeader, CapsuleRespHeader, CommonHeader, DataHeader, IcReq, IcResp,
    R2tHeader, TermReqHeader, Wire, CAPSULE_CMD_HLEN, DIGEST_LEN, FLAG_DDGSTF, FLAG_HDGSTF,
    FLAG_LAST_PDU, FLAG_SUCCESS, IC_HLEN, PDU_C2H_DATA, PDU_C2H_TERM_REQ, PDU_CAPSULE_CMD,
    PDU_CAPSULE_RESP, PDU_H2C_DATA, PDU_ICREQ, PDU_ICRESP, PDU_R2T, SHORT_HLEN,
};
use keel_nvmf::transport::TransportOpts;
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::io::{self, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock, PoisonError};
use std::time::Duration;

/// Host NQN the test hosts use.
pub const HOSTNQN: &str = "nqn.2014-08.org.nvmexpress:uuid:7e57c0de-0000-4000-8000-000000000001";
/// Block size of the test namespaces.
pub const BLOCK: u32 = 512;
/// Blocks of the test namespaces (32 MiB).
pub const NUM_BLOCKS: u64 = 65536;
/// How long the host waits for any answer before calling the target stuck.
pub const IO_TIMEOUT: Duration = Duration::from_secs(5);

/// NVMe opcodes used here.
pub mod opc {
    /// Admin: Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Admin: Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Admin: Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// I/O: Flush.
    pub const FLUSH: u8 = 0x00;
    /// I/O: Write.
    pub const WRITE: u8 = 0x01;
    /// I/O: Read.
    pub const READ: u8 = 0x02;
    /// I/O: Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// I/O: Dataset Management.
    pub const DSM: u8 = 0x09;
}

/// Fabrics command types.
pub const FCTYPE_PROPERTY_SET: u8 = 0x00;
/// Fabrics Connect.
pub const FCTYPE_CONNECT: u8 = 0x01;
/// Fabrics Property Get.
pub const FCTYPE_PROPERTY_GET: u8 = 0x04;

struct Env {
    /// The runtime runs for the whole test process (it is process-global).
    _rt: Runtime,
}

static ENV: OnceLock<Env> = OnceLock::new();
/// Tests touching the target run one at a time (round-robin placement is then predictable).
static SERIAL: Mutex<()> = Mutex::new(());
static NEXT_SUBSYS: AtomicU32 = AtomicU32::new(1);

/// Run `f` on the main reactor and wait for its result.
pub fn on_main<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = std::sync::mpsc::channel();
    keel_reactor::send_to(0, move || {
        let _ = tx.send(f());
    })
    .expect("main reactor reachable");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("main reactor answered")
}

/// Run the future `make` builds on `core` and wait for its output.
pub fn block_on_core<R, F, Fut>(core: u32, make: F) -> R
where
    R: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = R> + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    keel_reactor::spawn_on(core, move || async move {
        let _ = tx.send(make().await);
    })
    .expect("reactor reachable");
    rx.recv_timeout(Duration::from_secs(10))
        .expect("reactor task finished")
}

/// Start a runtime on `mask` (interrupt mode or busy polling) with the TCP transport created
/// from `opts`: the start every test binary of this crate shares.
pub fn start_tcp_runtime(mask: &str, interrupt_mode: bool, opts: TransportOpts) -> Runtime {
    let _ = env_logger::builder().is_test(true).try_init();
    let rt = Runtime::start(
        RuntimeOptions {
            cpumask: CpuMask::parse(mask).expect("mask"),
            interrupt_mode,
            pin_threads: false,
        },
        || {},
    )
    .expect("runtime starts");
    on_main(move || {
        keel_nvmf::tcp::register();
        keel_nvmf::target::create_transport(opts).expect("TCP transport");
    });
    rt
}

/// Start the 2-core runtime and the TCP transport once; serialise the calling test.
pub fn env() -> MutexGuard<'static, ()> {
    let guard = SERIAL.lock().unwrap_or_else(PoisonError::into_inner);
    ENV.get_or_init(|| Env {
        _rt: start_tcp_runtime("0x3", false, TransportOpts::tcp_defaults()),
    });
    guard
}

/// A free loopback port: bind port 0, read it back, release it.
pub use keel_testkit::nvmf::free_port;

/// A subsystem of its own: a malloc bdev, one namespace (nsid 1), any host, a listener on a
/// fresh loopback port.
pub struct Subsys {
    /// Subsystem NQN.
    pub nqn: String,
    /// TCP port it listens on (127.0.0.1).
    pub port: u16,
    /// The namespace's bdev (a delay bdev over `base_bdev`, or `base_bdev` itself).
    pub bdev: String,
    /// The malloc bdev at the bottom.
    pub base_bdev: String,
}

/// Create a [`Subsys`] (call inside [`env`]).
pub fn subsystem() -> Subsys {
    subsystem_with_delay(None)
}

/// Create a [`Subsys`] whose namespace sits on a delay bdev adding `delay_us` to every I/O
/// (when given) over the malloc bdev.
pub fn subsystem_with_delay(delay_us: Option<u64>) -> Subsys {
    let n = NEXT_SUBSYS.fetch_add(1, Ordering::Relaxed);
    let nqn = format!("nqn.2016-06.io.keel:tcptest{n}");
    let malloc = format!("tcptest_malloc{n}");
    let port = free_port();
    let nqn2 = nqn.clone();
    let base_bdev = malloc.clone();
    let bdev = match delay_us {
        None => malloc.clone(),
        Some(_) => format!("{malloc}_delay"),
    };
    block_on_core(0, move || async move {
        keel_bdev::modules::malloc::create(&malloc, NUM_BLOCKS, BLOCK, None).expect("malloc");
        let bdev2 = match delay_us {
            None => malloc,
            Some(us) => {
                let name = format!("{malloc}_delay");
                keel_bdev::modules::delay::create(&keel_bdev::modules::delay::DelayConfig {
                    base_bdev_name: malloc,
                    name: name.clone(),
                    avg_read_latency: us,
                    p99_read_latency: us,
                    avg_write_latency: us,
                    p99_write_latency: us,
                    uuid: None,
                })
                .expect("delay bdev");
                name
            }
        };
        keel_testkit::nvmf::serve_subsystem(&nqn2, &[&bdev2], port)
            .await
            .expect("subsystem, namespace 1 and listener");
    });
    Subsys {
        nqn,
        port,
        bdev,
        base_bdev,
    }
}

/// Live NVMe/TCP connections on every core of the target.
pub fn target_connections() -> usize {
    keel_reactor::cores()
        .into_iter()
        .map(|c| block_on_core(c, || async { keel_nvmf::tcp::connections_on_this_core() }))
        .sum()
}

/// Wait (bounded) until the target holds `n` connections; returns the last count seen.
pub fn wait_connections(n: usize) -> usize {
    let mut seen = usize::MAX;
    for _ in 0..200 {
        seen = target_connections();
        if seen == n {
            break;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    seen
}

/// A PDU received from the target.
#[derive(Debug, Clone)]
pub struct Pdu {
    /// Common header.
    pub ch: CommonHeader,
    /// The header (`hlen` bytes, without digest).
    pub hdr: Vec<u8>,
    /// Data bytes (between PDO and the data digest).
    pub data: Vec<u8>,
}

/// How a hostile exchange ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ending {
    /// A C2HTermReq with this FES and FEI came (then the connection closed).
    Term {
        /// Fatal error status.
        fes: u16,
        /// Fatal error information.
        fei: u32,
    },
    /// The target closed without a termination request.
    Closed,
}

/// What went wrong in a command exchange.
#[derive(Debug)]
pub enum HostError {
    /// Socket error or timeout.
    Io(io::Error),
    /// The target sent a C2HTermReq.
    Term(u16, u32),
    /// The target broke the protocol.
    Protocol(String),
}

impl From<io::Error> for HostError {
    fn from(e: io::Error) -> Self {
        HostError::Io(e)
    }
}

fn proto<T>(msg: impl Into<String>) -> Result<T, HostError> {
    Err(HostError::Protocol(msg.into()))
}

/// A raw NVMe/TCP host connection.
pub struct Client {
    /// The socket (public for hostile tests).
    pub sock: TcpStream,
    /// Header digests negotiated.
    pub hd: bool,
    /// Data digests negotiated.
    pub dd: bool,
    /// MAXH2CDATA from the ICResp.
    pub maxh2cdata: u32,
    /// CPDA from the ICResp.
    pub cpda: u8,
    /// In-capsule data limit used for writes (the target's announced IOCCSZ, or a guess).
    pub icd: u32,
    /// Size of the H2CData PDUs the host sends (≤ MAXH2CDATA).
    pub h2c_chunk: u32,
    next_cid: u16,
}

impl Client {
    /// Open a TCP connection to the target (no ICReq yet).
    pub fn open(port: u16) -> TcpStream {
        Client::open_addr(&format!("127.0.0.1:{port}"))
    }

    /// Open a TCP connection to `addr` (e.g. `[::1]:4420`; no ICReq yet).
    pub fn open_addr(addr: &str) -> TcpStream {
        let s = TcpStream::connect(addr).expect("connect to the target");
        s.set_read_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_write_timeout(Some(IO_TIMEOUT)).expect("timeout");
        s.set_nodelay(true).expect("nodelay");
        s
    }

    /// Connect and negotiate with ICReq (digests as asked); checks the ICResp.
    pub fn connect(port: u16, hd: bool, dd: bool) -> Client {
        Client::connect_addr(&format!("127.0.0.1:{port}"), hd, dd)
    }

    /// [`Client::connect`] to any address, e.g. `[::1]:4420`.
    pub fn connect_addr(addr: &str, hd: bool, dd: bool) -> Client {
        let mut sock = Client::open_addr(addr);
        sock.write_all(icreq_bytes(hd, dd).as_slice())
            .expect("send ICReq");
        let mut b = [0u8; IC_HLEN];
        sock.read_exact(&mut b).expect("ICResp");
        let r = IcResp::read_from(&b).expect("ICResp size");
        assert_eq!(r.common.pdu_type, PDU_ICRESP);
        assert_eq!(r.common.hlen as usize, IC_HLEN);
        assert_eq!(r.common.plen as usize, IC_HLEN);
        assert_eq!(r.pfv, 0);
        assert_eq!(r.dgst, (hd as u8) | ((dd as u8) << 1), "digests granted");
        assert!(r.maxh2cdata >= 4096, "MAXH2CDATA {}", r.maxh2cdata);
        assert!(r.cpda <= 31);
        Client {
            sock,
            hd,
            dd,
            maxh2cdata: r.maxh2cdata,
            cpda: r.cpda,
            icd: 4096,
            h2c_chunk: r.maxh2cdata,
            next_cid: 1,
        }
    }

    /// A fresh command identifier.
    pub fn cid(&mut self) -> u16 {
        let c = self.next_cid;
        self.next_cid = self.next_cid.wrapping_add(1);
        c
    }

    fn hd_len(&self) -> usize {
        if self.hd {
            DIGEST_LEN
        } else {
            0
        }
    }

    /// The bytes of a command capsule for `sqe` carrying `icd` in-capsule (SGL left as is).
    pub fn capsule_bytes(&self, sqe: &NvmeCmd, icd: &[u8]) -> Vec<u8> {
        let mut h = CapsuleCmdHeader {
            common: CommonHeader::new(PDU_CAPSULE_CMD, CAPSULE_CMD_HLEN),
            sqe: *sqe,
        };
        let hdr_total = CAPSULE_CMD_HLEN + self.hd_len();
        let mut plen = hdr_total;
        let mut pdo = 0;
        if self.hd {
            h.common.flags |= FLAG_HDGSTF;
        }
        if !icd.is_empty() {
            pdo = align_up(hdr_total, (self.cpda as usize + 1) * 4);
            h.common.pdo = pdo as u8;
            plen = pdo + icd.len();
            if self.dd {
                h.common.flags |= FLAG_DDGSTF;
                plen += DIGEST_LEN;
            }
        }
        h.common.plen = plen as u32;
        let mut v = Vec::with_capacity(plen);
        v.extend_from_slice(h.as_bytes());
        if self.hd {
            v.extend_from_slice(&digest(h.as_bytes()).to_le_bytes());
        }
        if !icd.is_empty() {
            v.resize(pdo, 0);
            v.extend_from_slice(icd);
            if self.dd {
                v.extend_from_slice(&digest(icd).to_le_bytes());
            }
        }
        v
    }

    /// The bytes of one H2CData PDU.
    pub fn h2c_bytes(&self, cccid: u16, ttag: u16, datao: u32, data: &[u8], last: bool) -> Vec<u8> {
        let hdr_total = SHORT_HLEN + self.hd_len();
        let pdo = align_up(hdr_total, (self.cpda as usize + 1) * 4);
        let mut common = CommonHeader::new(PDU_H2C_DATA, SHORT_HLEN);
        if self.hd {
            common.flags |= FLAG_HDGSTF;
        }
        if self.dd {
            common.flags |= FLAG_DDGSTF;
        }
        if last {
            common.flags |= FLAG_LAST_PDU;
        }
        common.pdo = pdo as u8;
        common.plen = (pdo + data.len() + if self.dd { DIGEST_LEN } else { 0 }) as u32;
        let h = DataHeader {
            common,
            cccid,
            ttag,
            datao,
            datal: data.len() as u32,
            rsvd: [0; 4],
        };
        let mut v = Vec::with_capacity(common.plen as usize);
        v.extend_from_slice(h.as_bytes());
        if self.hd {
            v.extend_from_slice(&digest(h.as_bytes()).to_le_bytes());
        }
        v.resize(pdo, 0);
        v.extend_from_slice(data);
        if self.dd {
            v.extend_from_slice(&digest(data).to_le_bytes());
        }
        v
    }

    /// Receive one PDU, checking its framing and digests.
    pub fn recv_pdu(&mut self) -> Result<Pdu, HostError> {
        let mut chb = [0u8; 8];
        self.sock.read_exact(&mut chb)?;
        let ch = CommonHeader::read_from(&chb).expect("8 bytes");
        let plen = ch.plen as usize;
        let hlen = ch.hlen as usize;
        if !(8..=4 * 1024 * 1024).contains(&plen) || hlen < 8 || hlen > plen {
            return proto(format!("bad framing from the target: {ch:?}"));
        }
        let mut rest = vec![0u8; plen - 8];
        self.sock.read_exact(&mut rest)?;
        let mut all = chb.to_vec();
        all.extend_from_slice(&rest);
        if ch.pdu_type == PDU_C2H_TERM_REQ {
            let t = TermReqHeader::read_from(&all)
                .ok_or_else(|| HostError::Protocol("short C2HTermReq".into()))?;
            return Err(HostError::Term(t.fes, t.fei()));
        }
        let hd = ch.flags & FLAG_HDGSTF != 0;
        if hd != self.hd {
            return proto(format!("HDGSTF {hd} but negotiated {}", self.hd));
        }
        let hdr = all[..hlen].to_vec();
        if hd {
            let d = all
                .get(hlen..hlen + 4)
                .ok_or_else(|| HostError::Protocol("header digest missing".into()))?;
            if u32::from_le_bytes([d[0], d[1], d[2], d[3]]) != digest(&hdr) {
                return proto("header digest mismatch from the target");
            }
        }
        let mut data = Vec::new();
        if ch.pdo != 0 {
            let dd = ch.flags & FLAG_DDGSTF != 0;
            if dd != self.dd {
                return proto(format!("DDGSTF {dd} but negotiated {}", self.dd));
            }
            let pdo = ch.pdo as usize;
            let end = plen - if dd { DIGEST_LEN } else { 0 };
            if pdo < hlen + if hd { 4 } else { 0 } || pdo > end {
                return proto(format!("bad PDO {pdo} (plen {plen})"));
            }
            if !pdo.is_multiple_of((self.cpda as usize + 1) * 4) {
                // HPDA 0 was asked: any dword alignment is fine; just check dword alignment.
                return proto(format!("PDO {pdo} not aligned"));
            }
            data = all[pdo..end].to_vec();
            if dd {
                let d = &all[end..plen];
                if u32::from_le_bytes([d[0], d[1], d[2], d[3]]) != digest(&data) {
                    return proto("data digest mismatch from the target");
                }
            }
        } else if plen != hlen + if hd { 4 } else { 0 } {
            return proto(format!("PDU without data has plen {plen}"));
        }
        Ok(Pdu { ch, hdr, data })
    }

    /// Run one command: `write` data goes in-capsule when it fits `self.icd`, else by R2T; a
    /// read of `read_len` bytes is collected from C2HData. Returns the completion and the data
    /// read.
    pub fn exec(
        &mut self,
        mut sqe: NvmeCmd,
        write: &[u8],
        read_len: usize,
    ) -> Result<(NvmeCpl, Vec<u8>), HostError> {
        let cid = self.cid();
        sqe.cid = cid;
        sqe.flags |= 0x40; // PSDT: SGL
        let in_capsule = !write.is_empty() && write.len() <= self.icd as usize;
        let len = write.len().max(read_len) as u32;
        sqe.dptr = [0; 16];
        sqe.dptr[8..12].copy_from_slice(&len.to_le_bytes());
        sqe.dptr[15] = if in_capsule { 0x01 } else { 0x5A };
        let bytes = self.capsule_bytes(&sqe, if in_capsule { write } else { &[] });
        self.sock.write_all(&bytes)?;
        let mut rbuf = vec![0u8; read_len];
        let mut got = 0usize;
        loop {
            let p = self.recv_pdu()?;
            match p.ch.pdu_type {
                PDU_R2T => {
                    let r = R2tHeader::read_from(&p.hdr).expect("24 bytes");
                    if r.cccid != cid {
                        return proto(format!("R2T for cid {} (want {cid})", r.cccid));
                    }
                    let (off, l) = (r.r2to as usize, r.r2tl as usize);
                    if in_capsule || off + l > write.len() || l == 0 {
                        return proto(format!(
                            "R2T {off}+{l} outside a {}-byte write",
                            write.len()
                        ));
                    }
                    let mut o = off;
                    while o < off + l {
                        let n = (off + l - o).min(self.h2c_chunk as usize);
                        let last = o + n == off + l;
                        let pdu = self.h2c_bytes(cid, r.ttag, o as u32, &write[o..o + n], last);
                        self.sock.write_all(&pdu)?;
                        o += n;
                    }
                }
                PDU_C2H_DATA => {
                    let h = DataHeader::read_from(&p.hdr).expect("24 bytes");
                    if h.cccid != cid {
                        return proto(format!("C2HData for cid {} (want {cid})", h.cccid));
                    }
                    let (o, l) = (h.datao as usize, h.datal as usize);
                    if l != p.data.len() || o != got || o + l > read_len {
                        return proto(format!("C2HData {o}+{l} (have {got} of {read_len})"));
                    }
                    rbuf[o..o + l].copy_from_slice(&p.data);
                    got += l;
                    if h.common.flags & FLAG_SUCCESS != 0 {
                        if h.common.flags & FLAG_LAST_PDU == 0 || got != read_len {
                            return proto("SUCCESS on a C2HData that is not the last");
                        }
                        let cpl = NvmeCpl {
                            cid,
                            ..NvmeCpl::default()
                        };
                        return Ok((cpl, rbuf));
                    }
                }
                PDU_CAPSULE_RESP => {
                    let r = CapsuleRespHeader::read_from(&p.hdr).expect("24 bytes");
                    if r.cqe.cid != cid {
                        return proto(format!("response for cid {} (want {cid})", r.cqe.cid));
                    }
                    if r.cqe.is_success() && got != read_len {
                        return proto(format!("success after {got} of {read_len} bytes"));
                    }
                    return Ok((r.cqe, rbuf));
                }
                t => return proto(format!("unexpected PDU type {t:#x}")),
            }
        }
    }

    /// [`Client::exec`] that expects success.
    pub fn ok(&mut self, sqe: NvmeCmd, write: &[u8], read_len: usize) -> (NvmeCpl, Vec<u8>) {
        let (cpl, data) = self.exec(sqe, write, read_len).expect("command exchange");
        assert!(
            cpl.is_success(),
            "command {:#x} failed: sct {:#x} sc {:#x}",
            sqe.opc,
            cpl.sct(),
            cpl.sc()
        );
        (cpl, data)
    }

    /// Fabrics Connect for queue `qid` (no keep-alive timeout); returns the completion.
    pub fn fabrics_connect(&mut self, nqn: &str, qid: u16, cntlid: u16) -> NvmeCpl {
        self.fabrics_connect_with(nqn, qid, cntlid, HOSTNQN, 0)
    }

    /// Fabrics Connect for queue `qid` as host `hostnqn` (empty: an anonymous host, as SPDK's
    /// initiator connects by default); returns the completion.
    pub fn fabrics_connect_as(
        &mut self,
        nqn: &str,
        qid: u16,
        cntlid: u16,
        hostnqn: &str,
    ) -> NvmeCpl {
        self.fabrics_connect_with(nqn, qid, cntlid, hostnqn, 0)
    }

    /// Fabrics Connect for queue `qid` asking for a keep-alive timeout of `kato_ms` (admin
    /// queue; 0: none); returns the completion.
    pub fn fabrics_connect_kato(
        &mut self,
        nqn: &str,
        qid: u16,
        cntlid: u16,
        kato_ms: u32,
    ) -> NvmeCpl {
        self.fabrics_connect_with(nqn, qid, cntlid, HOSTNQN, kato_ms)
    }

    /// Fabrics Connect for queue `qid` as host `hostnqn` with a keep-alive timeout of `kato_ms`.
    pub fn fabrics_connect_with(
        &mut self,
        nqn: &str,
        qid: u16,
        cntlid: u16,
        hostnqn: &str,
        kato_ms: u32,
    ) -> NvmeCpl {
        let mut sqe = fabrics(FCTYPE_CONNECT);
        sqe.cdw10 = u32::from(qid) << 16;
        sqe.cdw11 = 31; // sqsize 32 (0-based)
        sqe.cdw12 = kato_ms;
        let data = keel_nvme::fabrics::ConnectData {
            hostid: [0x5a; 16],
            cntlid,
            subnqn: nqn.to_string(),
            hostnqn: hostnqn.to_string(),
        }
        .encode();
        let icd = self.icd;
        self.icd = 8192; // Connect data always travels in the capsule.
        let r = self.exec(sqe, &data, 0);
        self.icd = icd;
        r.expect("Connect exchange").0
    }

    /// Property Get of `size8` (8-byte) or 4-byte register at `ofst`.
    pub fn prop_get(&mut self, ofst: u32, size8: bool) -> u64 {
        let mut sqe = fabrics(FCTYPE_PROPERTY_GET);
        sqe.cdw10 = size8 as u32;
        sqe.cdw11 = ofst;
        let (cpl, _) = self.ok(sqe, &[], 0);
        u64::from(cpl.cdw0) | (u64::from(cpl.cdw1) << 32)
    }

    /// Property Set of a 4-byte register.
    pub fn prop_set(&mut self, ofst: u32, value: u32) {
        let mut sqe = fabrics(FCTYPE_PROPERTY_SET);
        sqe.cdw10 = 0;
        sqe.cdw11 = ofst;
        sqe.cdw12 = value;
        self.ok(sqe, &[], 0);
    }

    /// Read `nlb` blocks at `slba` from nsid 1.
    pub fn read(&mut self, slba: u64, nlb: u32) -> Result<(NvmeCpl, Vec<u8>), HostError> {
        self.exec(rw(opc::READ, 1, slba, nlb), &[], (nlb * BLOCK) as usize)
    }

    /// Write `data` at `slba` of nsid 1.
    pub fn write(&mut self, slba: u64, data: &[u8]) -> Result<NvmeCpl, HostError> {
        let nlb = (data.len() / BLOCK as usize) as u32;
        Ok(self.exec(rw(opc::WRITE, 1, slba, nlb), data, 0)?.0)
    }
}

/// An ICReq's bytes.
pub fn icreq_bytes(hd: bool, dd: bool) -> Vec<u8> {
    IcReq {
        common: CommonHeader::new(PDU_ICREQ, IC_HLEN),
        pfv: 0,
        hpda: 0,
        dgst: (hd as u8) | ((dd as u8) << 1),
        maxr2t: 3,
        rsvd: [0; 112],
    }
    .as_bytes()
    .to_vec()
}

/// A Fabrics command of type `fctype`.
pub fn fabrics(fctype: u8) -> NvmeCmd {
    NvmeCmd {
        opc: OPC_FABRICS,
        nsid: u32::from(fctype),
        ..Default::default()
    }
}

/// A read/write-style command (`slba`, `nlb` blocks, 1-based count).
pub fn rw(opcode: u8, nsid: u32, slba: u64, nlb: u32) -> NvmeCmd {
    NvmeCmd {
        opc: opcode,
        nsid,
        cdw10: slba as u32,
        cdw11: (slba >> 32) as u32,
        cdw12: nlb.saturating_sub(1),
        ..Default::default()
    }
}

/// Deterministic test data: `len` bytes from a seed (xorshift).
pub fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

/// An admin and an I/O queue of one controller, brought up like a Linux host does.
pub struct Host {
    /// Admin queue.
    pub admin: Client,
    /// I/O queue 1.
    pub io: Client,
    /// Controller id.
    pub cntlid: u16,
}

/// Bring a controller up on `sub` (digests as given) and connect I/O queue 1.
pub fn bring_up(sub: &Subsys, hd: bool, dd: bool) -> Host {
    bring_up_addr(&format!("127.0.0.1:{}", sub.port), &sub.nqn, hd, dd, 0)
}

/// Bring a controller of `sub` up as host `hostnqn` (empty: an anonymous host, as SPDK's
/// initiator connects by default), no digests, and connect I/O queue 1.
pub fn bring_up_as(sub: &Subsys, hostnqn: &str) -> Host {
    bring_up_with(
        &format!("127.0.0.1:{}", sub.port),
        &sub.nqn,
        hostnqn,
        false,
        false,
        0,
    )
}

/// Bring a controller of subsystem `nqn` at `addr` up (digests as given, a keep-alive timeout
/// of `kato_ms`, 0: none) and connect I/O queue 1.
pub fn bring_up_addr(addr: &str, nqn: &str, hd: bool, dd: bool, kato_ms: u32) -> Host {
    bring_up_with(addr, nqn, HOSTNQN, hd, dd, kato_ms)
}

/// [`bring_up_addr`] as host `hostnqn`.
fn bring_up_with(addr: &str, nqn: &str, hostnqn: &str, hd: bool, dd: bool, kato_ms: u32) -> Host {
    let mut admin = Client::connect_addr(addr, hd, dd);
    let cpl = admin.fabrics_connect_with(nqn, 0, 0xFFFF, hostnqn, kato_ms);
    assert!(cpl.is_success(), "admin Connect: {:?}", cpl.get_status());
    let cntlid = cpl.cdw0 as u16;
    admin.prop_set(0x14, 1 | (6 << 16) | (4 << 20));
    let mut ready = false;
    for _ in 0..100 {
        if admin.prop_get(0x1C, false) & 1 == 1 {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    assert!(ready, "CSTS.RDY never came up");
    // Number of Queues (before any I/O queue, as a Linux host does): ask for 4.
    let sqe = NvmeCmd {
        opc: opc::SET_FEATURES,
        cdw10: 0x07,
        cdw11: (3 << 16) | 3,
        ..Default::default()
    };
    let (cpl, _) = admin.ok(sqe, &[], 0);
    assert!(
        cpl.cdw0 & 0xFFFF >= 1 && cpl.cdw0 >> 16 >= 1,
        "queues granted {:#x}",
        cpl.cdw0
    );
    let mut io = Client::connect_addr(addr, hd, dd);
    let cpl = io.fabrics_connect_as(nqn, 1, cntlid, hostnqn);
    assert!(cpl.is_success(), "I/O Connect: {:?}", cpl.get_status());
    Host { admin, io, cntlid }
}

/// Read what the target sends after a hostile input: a C2HTermReq (then the close) or a plain
/// close. Fails if neither comes within the I/O timeout. PDUs before the end are skipped.
pub fn expect_end(sock: &mut TcpStream) -> Ending {
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let mut term: Option<(u16, u32)> = None;
    for _ in 0..10_000 {
        match sock.read(&mut tmp) {
            Ok(0) => break,
            Ok(n) => buf.extend_from_slice(&tmp[..n]),
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => break,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => panic!("target neither terminated nor closed the connection: {e}"),
        }
        // Parse complete PDUs; note the first termination request.
        let mut off = 0;
        while buf.len() - off >= 8 {
            let ch = CommonHeader::read_from(&buf[off..]).expect("8 bytes");
            let plen = ch.plen as usize;
            assert!(plen >= 8, "target sent plen {plen}");
            if buf.len() - off < plen {
                break;
            }
            if ch.pdu_type == PDU_C2H_TERM_REQ && term.is_none() {
                assert!((24..=152).contains(&plen), "C2HTermReq plen {plen}");
                let t = TermReqHeader::read_from(&buf[off..]).expect("24 bytes");
                term = Some((t.fes, t.fei()));
            }
            off += plen;
        }
        buf.drain(..off);
    }
    let _ = sock.shutdown(Shutdown::Both);
    match term {
        Some((fes, fei)) => Ending::Term { fes, fei },
        None => Ending::Closed,
    }
}
