//! Loopback tests: a fake transport drives full host bring-up sequences through
//! `Qpair::execute` on a one-core runtime, against malloc bdevs.

use super::state::{self, NamespaceOpts, SubsystemOpts};
use super::Qpair;
use crate::request::{NvmfRequest, ReqPtr};
use crate::transport::{
    AdrFam, ListenAddr, QpairTransport, TrType, Transport, TransportError, TransportOpts,
};
use keel_bdev::IoVec;
use keel_nvme::cmd::{DataXfer, NvmeCmd, NvmeCpl, OPC_FABRICS};
use keel_nvme::status::Status;
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::cell::{Cell, RefCell};
use std::future::Future;
use std::ptr::NonNull;
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::{Duration, Instant};

/// The runtime is process-global: one test at a time.
static SERIAL: Mutex<()> = Mutex::new(());

const HOST: &str = "nqn.2014-08.org.nvmexpress:uuid:11111111-2222-3333-4444-555555555555";

/// Run `f`'s future on a fresh one-core runtime and wait for it.
fn run<F, Fut>(f: F)
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    let _g = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    let rt = Runtime::start(
        RuntimeOptions {
            cpumask: CpuMask::parse("0x1").unwrap(),
            interrupt_mode: false,
            pin_threads: false,
        },
        || {},
    )
    .expect("runtime");
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    keel_reactor::spawn_on(0, move || async move {
        f().await;
        let _ = tx.send(());
    })
    .unwrap();
    let ok = rx.recv_timeout(Duration::from_secs(60)).is_ok();
    keel_reactor::request_shutdown();
    rt.join();
    assert!(ok, "the test body did not finish");
}

/// Yield to the reactor until `cond` holds (fails after a generous deadline).
async fn until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    std::future::poll_fn(|cx| {
        if cond() {
            return Poll::Ready(());
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        cx.waker().wake_by_ref();
        Poll::Pending
    })
    .await
}

struct FakeTransport {
    opts: TransportOpts,
}

impl Transport for FakeTransport {
    fn trtype(&self) -> TrType {
        self.opts.trtype
    }
    fn opts(&self) -> &TransportOpts {
        &self.opts
    }
    fn listen(&self, _addr: &ListenAddr) -> Result<(), TransportError> {
        Ok(())
    }
    fn stop_listen(&self, _addr: &ListenAddr) -> Result<(), TransportError> {
        Ok(())
    }
    fn shutdown(&self, done: Box<dyn FnOnce() + Send>) {
        done()
    }
}

fn fake_factory(opts: TransportOpts) -> Result<Arc<dyn Transport>, TransportError> {
    Ok(Arc::new(FakeTransport { opts }))
}

/// The fake transport is registered for RDMA (nothing else in this crate uses that type).
fn listen_addr(port: &str) -> ListenAddr {
    ListenAddr {
        trtype: TrType::Rdma,
        adrfam: AdrFam::Ipv4,
        traddr: "192.0.2.1".into(),
        trsvcid: port.into(),
    }
}

fn ensure_transport() {
    super::register_transport_factory(TrType::Rdma, fake_factory);
    let opts = TransportOpts {
        trtype: TrType::Rdma,
        ..TransportOpts::tcp_defaults()
    };
    match state::create_transport(opts) {
        Ok(()) | Err(state::NvmfError::Exists(_)) => {}
        Err(e) => panic!("{e}"),
    }
}

/// One fake connection: records completions, notes disconnect requests.
struct Conn {
    done: RefCell<Vec<NvmeCpl>>,
    disconnected: Cell<bool>,
}

impl QpairTransport for Conn {
    fn request_complete(&self, req: ReqPtr) {
        // SAFETY: the test owns the request; the core hands it back here.
        self.done.borrow_mut().push(unsafe { req.as_ref() }.rsp);
    }
    fn disconnect(&self) {
        self.disconnected.set(true);
    }
    fn peer(&self) -> String {
        "198.51.100.7:40000".into()
    }
}

/// A host-side queue: a connection, its queue pair, a command id counter.
struct HostQ {
    conn: Rc<Conn>,
    qp: Rc<Qpair>,
    cid: Cell<u16>,
}

impl HostQ {
    fn new(port: &str) -> HostQ {
        let conn = Rc::new(Conn {
            done: RefCell::new(Vec::new()),
            disconnected: Cell::new(false),
        });
        let weak: std::rc::Weak<dyn QpairTransport> = {
            let rc: Rc<dyn QpairTransport> = conn.clone();
            Rc::downgrade(&rc)
        };
        let qp = Qpair::new(listen_addr(port), weak);
        HostQ {
            conn,
            qp,
            cid: Cell::new(1),
        }
    }

    /// Start a command; returns the request (keep it alive) and its cid.
    fn start(
        &self,
        mut cmd: NvmeCmd,
        xfer: DataXfer,
        data: &mut Vec<u8>,
    ) -> (Box<NvmfRequest>, u16) {
        let cid = self.cid.get();
        self.cid.set(cid.wrapping_add(1));
        cmd.cid = cid;
        let mut req = Box::new(NvmfRequest::new());
        req.cmd = cmd;
        req.xfer = xfer;
        req.length = data.len() as u32;
        if !data.is_empty() {
            // SAFETY: `data` outlives the command (the caller waits for its completion).
            req.iovs[0] = unsafe { IoVec::from_raw_parts(data.as_mut_ptr(), data.len()) };
            req.iovcnt = 1;
        }
        let ptr = NonNull::from(&mut *req);
        self.qp.execute(ptr);
        (req, cid)
    }

    fn take(&self, cid: u16) -> Option<NvmeCpl> {
        let mut d = self.conn.done.borrow_mut();
        let i = d.iter().position(|c| c.cid == cid)?;
        Some(d.remove(i))
    }

    /// Run a command to completion.
    async fn cmd(&self, cmd: NvmeCmd, xfer: DataXfer, data: &mut Vec<u8>) -> NvmeCpl {
        let (_req, cid) = self.start(cmd, xfer, data);
        let mut out = None;
        until("a completion", || {
            out = out.or_else(|| self.take(cid));
            out.is_some()
        })
        .await;
        out.unwrap()
    }

    async fn nodata(&self, cmd: NvmeCmd) -> NvmeCpl {
        self.cmd(cmd, DataXfer::None, &mut Vec::new()).await
    }

    async fn read_data(&self, cmd: NvmeCmd, len: usize) -> (NvmeCpl, Vec<u8>) {
        let mut d = vec![0xAAu8; len];
        let c = self.cmd(cmd, DataXfer::ControllerToHost, &mut d).await;
        (c, d)
    }

    async fn connect(
        &self,
        qid: u16,
        sqsize: u16,
        kato: u32,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
    ) -> NvmeCpl {
        let id = ConnectId { hostid: [0x42; 16] };
        self.connect_as(id, qid, sqsize, kato, cntlid, subnqn, hostnqn)
            .await
    }

    /// Connect with host identifier `id.hostid`.
    #[allow(clippy::too_many_arguments)]
    async fn connect_as(
        &self,
        id: ConnectId,
        qid: u16,
        sqsize: u16,
        kato: u32,
        cntlid: u16,
        subnqn: &str,
        hostnqn: &str,
    ) -> NvmeCpl {
        let mut d = vec![0u8; 1024];
        d[..16].copy_from_slice(&id.hostid);
        d[16..18].copy_from_slice(&cntlid.to_le_bytes());
        d[256..256 + subnqn.len()].copy_from_slice(subnqn.as_bytes());
        d[512..512 + hostnqn.len()].copy_from_slice(hostnqn.as_bytes());
        let cmd = NvmeCmd {
            opc: OPC_FABRICS,
            nsid: 0x01,
            cdw10: u32::from(qid) << 16,
            cdw11: u32::from(sqsize),
            cdw12: kato,
            ..Default::default()
        };
        self.cmd(cmd, DataXfer::HostToController, &mut d).await
    }

    async fn prop_get(&self, ofst: u32, size8: bool) -> (NvmeCpl, u64) {
        let c = self
            .nodata(NvmeCmd {
                opc: OPC_FABRICS,
                nsid: 0x04,
                cdw10: u32::from(size8),
                cdw11: ofst,
                ..Default::default()
            })
            .await;
        (c, u64::from(c.cdw0) | (u64::from(c.cdw1) << 32))
    }

    async fn prop_set(&self, ofst: u32, v: u32) -> NvmeCpl {
        self.nodata(NvmeCmd {
            opc: OPC_FABRICS,
            nsid: 0x00,
            cdw11: ofst,
            cdw12: v,
            ..Default::default()
        })
        .await
    }

    /// Connect the admin queue and enable the controller; returns the cntlid.
    async fn bring_up_admin(&self, subnqn: &str, kato: u32) -> u16 {
        let c = self.connect(0, 31, kato, 0xFFFF, subnqn, HOST).await;
        assert_ok(&c);
        let cntlid = c.cdw0 as u16;
        assert_ok(&self.prop_set(0x14, 0x0046_0001).await);
        let (c, csts) = self.prop_get(0x1C, false).await;
        assert_ok(&c);
        assert_eq!(csts & 1, 1, "CSTS.RDY after CC.EN");
        cntlid
    }

    async fn identify(&self, cns: u8, nsid: u32) -> (NvmeCpl, Vec<u8>) {
        self.read_data(
            NvmeCmd {
                opc: 0x06,
                nsid,
                cdw10: u32::from(cns),
                ..Default::default()
            },
            4096,
        )
        .await
    }

    async fn get_log(&self, lid: u8, len: usize, rae: bool, offset: u64) -> (NvmeCpl, Vec<u8>) {
        let numd = (len / 4 - 1) as u32;
        self.read_data(
            NvmeCmd {
                opc: 0x02,
                nsid: u32::MAX,
                cdw10: u32::from(lid) | (u32::from(rae) << 15) | ((numd & 0xffff) << 16),
                cdw11: numd >> 16,
                cdw12: offset as u32,
                cdw13: (offset >> 32) as u32,
                ..Default::default()
            },
            len,
        )
        .await
    }

    async fn set_feature(&self, fid: u8, v: u32) -> NvmeCpl {
        self.nodata(NvmeCmd {
            opc: 0x09,
            cdw10: u32::from(fid),
            cdw11: v,
            ..Default::default()
        })
        .await
    }

    async fn rw(&self, opc: u8, nsid: u32, slba: u64, nlb: u32, data: &mut Vec<u8>) -> NvmeCpl {
        let xfer = if opc == 0x02 {
            DataXfer::ControllerToHost
        } else {
            DataXfer::HostToController
        };
        let cmd = NvmeCmd {
            opc,
            nsid,
            cdw10: slba as u32,
            cdw11: (slba >> 32) as u32,
            cdw12: nlb - 1,
            ..Default::default()
        };
        self.cmd(cmd, xfer, data).await
    }
}

/// Who a Connect says it comes from (beyond the host NQN).
#[derive(Clone, Copy)]
struct ConnectId {
    hostid: [u8; 16],
}

fn assert_ok(c: &NvmeCpl) {
    assert!(
        c.is_success(),
        "expected success, got {:?}",
        Status::from_field(c.status)
    );
}

fn assert_status(c: &NvmeCpl, s: Status) {
    let got = Status::from_field(c.status);
    assert_eq!(
        (got.sct, got.sc),
        (s.sct, s.sc),
        "got {got:?}, expected {s:?}"
    );
}

fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().unwrap())
}

fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().unwrap())
}

/// A subsystem with one 1024 × 512-byte malloc namespace, host `HOST` allowed, a listener on
/// `port`.
async fn setup(nqn: &str, bdev: &str, port: &str) {
    ensure_transport();
    keel_bdev::modules::malloc::create(bdev, 1024, 512, None).unwrap();
    state::create_subsystem(
        nqn,
        SubsystemOpts {
            serial_number: Some("KEEL0001".into()),
            ..Default::default()
        },
    )
    .unwrap();
    state::add_host(nqn, HOST).unwrap();
    state::add_listener(nqn, listen_addr(port)).unwrap();
    let nsid = state::add_namespace(
        nqn,
        NamespaceOpts {
            bdev_name: bdev.into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    assert_eq!(nsid, 1);
}

#[test]
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one bring-up scenario
fn host_bring_up_admin_io_and_namespace_hot_add() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:bringup";
        setup(nqn, "nvmf_t_m0", "4420").await;

        let admin = HostQ::new("4420");
        // Before Connect, nothing else runs.
        let c = admin
            .nodata(NvmeCmd {
                opc: 0x18,
                ..Default::default()
            })
            .await;
        assert_status(&c, Status::COMMAND_SEQUENCE_ERROR);

        let c = admin.connect(0, 31, 10_000, 0xFFFF, nqn, HOST).await;
        assert_ok(&c);
        let cntlid = c.cdw0 as u16;
        assert!((1..=0xFFEF).contains(&cntlid));
        assert_eq!(admin.qp.qid(), Some(0));
        assert_eq!(admin.qp.sq_size(), 32);
        // A second Connect on the same queue is a sequence error.
        let c = admin.connect(0, 31, 0, 0xFFFF, nqn, HOST).await;
        assert_status(&c, Status::COMMAND_SEQUENCE_ERROR);

        let (c, cap) = admin.prop_get(0x00, true).await;
        assert_ok(&c);
        assert_eq!(cap & 0xffff, 127, "CAP.MQES");
        let (_, vs) = admin.prop_get(0x08, false).await;
        assert_eq!(vs, 0x0001_0300);
        // Admin commands wait for CC.EN.
        let (c, _) = admin.identify(0x01, 0).await;
        assert_status(&c, Status::COMMAND_SEQUENCE_ERROR);
        assert_ok(&admin.prop_set(0x14, 0x0046_0001).await);
        let (_, csts) = admin.prop_get(0x1C, false).await;
        assert_eq!(csts & 1, 1);
        let (c, _) = admin.prop_get(0x44, false).await;
        assert_status(&c, Status::INVALID_FIELD);

        let (c, id) = admin.identify(0x01, 0).await;
        assert_ok(&c);
        assert_eq!(u16::from_le_bytes([id[78], id[79]]), cntlid);
        assert_eq!(&id[4..12], b"KEEL0001");
        assert_eq!(&id[768..768 + nqn.len()], nqn.as_bytes());
        assert_eq!(id[111], 1);
        assert!(u16::from_le_bytes([id[320], id[321]]) > 0, "KAS");

        let c = admin.set_feature(0x07, 3 | (3 << 16)).await;
        assert_ok(&c);
        assert_eq!(c.cdw0, 3 | (3 << 16));
        assert_ok(&admin.set_feature(0x0B, 1 << 8).await);
        let c = admin.set_feature(0x0C, 1).await;
        assert_status(&c, Status::INVALID_FIELD);

        // Post an AER: it stays outstanding.
        let mut none = Vec::new();
        let (_aer, aer_cid) = admin.start(
            NvmeCmd {
                opc: 0x0C,
                ..Default::default()
            },
            DataXfer::None,
            &mut none,
        );
        assert!(admin.take(aer_cid).is_none());

        let (c, list) = admin.identify(0x02, 0).await;
        assert_ok(&c);
        assert_eq!((le32(&list, 0), le32(&list, 4)), (1, 0));
        let (c, ns) = admin.identify(0x00, 1).await;
        assert_ok(&c);
        assert_eq!(le64(&ns, 0), 1024);
        assert_eq!(ns[128 + 2], 9, "LBADS = log2(512)");
        let (c, ns5) = admin.identify(0x00, 5).await;
        assert_ok(&c);
        assert!(
            ns5.iter().all(|&b| b == 0),
            "inactive namespace reads as zeroes"
        );
        let (c, _) = admin.identify(0x00, 0).await;
        assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT);
        let (c, desc) = admin.identify(0x03, 1).await;
        assert_ok(&c);
        assert!(desc
            .chunks(4)
            .next()
            .is_some_and(|d| d[0] == 2 || d[0] == 3));
        let (c, _) = admin.identify(0x55, 0).await;
        assert_status(&c, Status::INVALID_FIELD);
        let (c, _) = admin.get_log(0x02, 512, false, 0).await;
        assert_ok(&c);
        let (c, chg) = admin.get_log(0x04, 4096, false, 0).await;
        assert_ok(&c);
        assert_eq!(le32(&chg, 0), 0);
        let (c, _) = admin.get_log(0x99, 512, false, 0).await;
        assert_status(&c, Status::INVALID_FIELD);

        // I/O queues.
        let ioq = HostQ::new("4420");
        let c = ioq.connect(1, 127, 0, cntlid, nqn, HOST).await;
        assert_ok(&c);
        assert_eq!(ioq.qp.qid(), Some(1));
        let bad = HostQ::new("4420");
        let c = bad.connect(9, 127, 0, cntlid, nqn, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, 42, "IPO points at qid");
        let c = bad.connect(1, 127, 0, cntlid, nqn, HOST).await;
        assert_status(&c, Status::INVALID_QUEUE_IDENTIFIER);
        // Number of Queues is fixed once I/O queues exist.
        let c = admin.set_feature(0x07, 1 | (1 << 16)).await;
        assert_status(&c, Status::COMMAND_SEQUENCE_ERROR);

        let pattern: Vec<u8> = (0..8 * 512).map(|i| (i * 7 % 251) as u8).collect();
        let mut w = pattern.clone();
        assert_ok(&ioq.rw(0x01, 1, 10, 8, &mut w).await);
        let mut r = vec![0u8; 8 * 512];
        assert_ok(&ioq.rw(0x02, 1, 10, 8, &mut r).await);
        assert_eq!(r, pattern);
        let mut same = pattern.clone();
        assert_ok(&ioq.rw(0x05, 1, 10, 8, &mut same).await);
        let mut other = pattern.clone();
        other[100] ^= 1;
        let c = ioq.rw(0x05, 1, 10, 8, &mut other).await;
        assert_status(&c, Status::COMPARE_FAILURE);

        let mut empty = Vec::new();
        assert_ok(&ioq.rw(0x08, 1, 10, 2, &mut empty).await);
        let mut r = vec![0xffu8; 4 * 512];
        assert_ok(&ioq.rw(0x02, 1, 10, 4, &mut r).await);
        assert!(r[..1024].iter().all(|&b| b == 0), "write zeroes");
        assert_eq!(&r[1024..], &pattern[1024..2048]);

        // Dataset Management, deallocate blocks 12..14 and 16..17.
        let mut ranges = vec![0u8; 32];
        ranges[4..8].copy_from_slice(&2u32.to_le_bytes());
        ranges[8..16].copy_from_slice(&12u64.to_le_bytes());
        ranges[20..24].copy_from_slice(&1u32.to_le_bytes());
        ranges[24..32].copy_from_slice(&16u64.to_le_bytes());
        let dsm = NvmeCmd {
            opc: 0x09,
            nsid: 1,
            cdw10: 1,
            cdw11: 1 << 2,
            ..Default::default()
        };
        assert_ok(&ioq.cmd(dsm, DataXfer::HostToController, &mut ranges).await);
        let mut r = vec![0xffu8; 8 * 512];
        assert_ok(&ioq.rw(0x02, 1, 10, 8, &mut r).await);
        assert!(r[1024..2048].iter().all(|&b| b == 0), "deallocated");
        assert_eq!(&r[2048..3072], &pattern[2048..3072]);
        assert!(r[3072..3584].iter().all(|&b| b == 0), "deallocated");
        let mut flush = Vec::new();
        assert_ok(
            &ioq.cmd(
                NvmeCmd {
                    opc: 0x00,
                    nsid: 1,
                    ..Default::default()
                },
                DataXfer::None,
                &mut flush,
            )
            .await,
        );

        // Errors.
        let mut r = vec![0u8; 512];
        assert_status(
            &ioq.rw(0x02, 7, 0, 1, &mut r).await,
            Status::INVALID_NAMESPACE_OR_FORMAT,
        );
        let mut r = vec![0u8; 8 * 512];
        assert_status(
            &ioq.rw(0x02, 1, 1020, 8, &mut r).await,
            Status::LBA_OUT_OF_RANGE,
        );
        let mut r = vec![0u8; 512];
        assert_status(
            &ioq.rw(0x02, 1, 0, 2, &mut r).await,
            Status::DATA_SGL_LENGTH_INVALID,
        );
        let c = ioq
            .nodata(NvmeCmd {
                opc: 0x0C,
                nsid: 1,
                ..Default::default()
            })
            .await;
        assert_status(&c, Status::INVALID_OPCODE);

        // Namespace hot add: AER, changed namespace list, I/O to the new namespace.
        keel_bdev::modules::malloc::create("nvmf_t_m1", 256, 4096, None).unwrap();
        let nsid = state::add_namespace(
            nqn,
            NamespaceOpts {
                bdev_name: "nvmf_t_m1".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        assert_eq!(nsid, 2);
        let mut aer = None;
        until("the namespace AER", || {
            aer = aer.or_else(|| admin.take(aer_cid));
            aer.is_some()
        })
        .await;
        let aer = aer.unwrap();
        assert_ok(&aer);
        assert_eq!(aer.cdw0, 0x0004_0002);
        let (c, chg) = admin.get_log(0x04, 4096, false, 0).await;
        assert_ok(&c);
        assert_eq!((le32(&chg, 0), le32(&chg, 4)), (2, 0));
        let (_, chg) = admin.get_log(0x04, 4096, false, 0).await;
        assert_eq!(le32(&chg, 0), 0, "cleared by the read");
        let mut r = vec![0u8; 4096];
        assert_ok(&ioq.rw(0x02, 2, 255, 1, &mut r).await);

        // Namespace removal: I/O to it fails, the list shrinks.
        state::remove_namespace(nqn, 2).await.unwrap();
        let mut r = vec![0u8; 4096];
        assert_status(
            &ioq.rw(0x02, 2, 0, 1, &mut r).await,
            Status::INVALID_NAMESPACE_OR_FORMAT,
        );
        let (_, list) = admin.identify(0x02, 0).await;
        assert_eq!((le32(&list, 0), le32(&list, 4)), (1, 0));

        // Losing the admin queue destroys the controller and disconnects its I/O queues.
        let s = state::subsystem(nqn).unwrap();
        assert_eq!(s.controllers().len(), 1);
        admin.qp.close();
        until("the I/O queue disconnect", || ioq.conn.disconnected.get()).await;
        assert!(s.controllers().is_empty());
        ioq.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
    });
}

/// Post an Asynchronous Event Request (it stays outstanding): the request, to keep alive
/// until it completes, and its cid.
fn post_aer(admin: &HostQ) -> (Box<NvmfRequest>, u16) {
    let mut none = Vec::new();
    admin.start(
        NvmeCmd {
            opc: 0x0C,
            ..Default::default()
        },
        DataXfer::None,
        &mut none,
    )
}

/// Wait for the completion of command `cid`.
async fn wait_cpl(q: &HostQ, cid: u16, what: &str) -> NvmeCpl {
    let mut cpl = None;
    until(what, || {
        cpl = cpl.or_else(|| q.take(cid));
        cpl.is_some()
    })
    .await;
    cpl.unwrap()
}

#[test]
fn bdev_resize_changes_the_namespace_size_and_raises_the_aen() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:resize";
        ensure_transport();
        // A null bdev: it has no data, so growing it is safe.
        keel_bdev::modules::null::create("nvmf_t_n5", 1024, 512, None).unwrap();
        state::create_subsystem(nqn, SubsystemOpts::default()).unwrap();
        state::add_host(nqn, HOST).unwrap();
        state::add_listener(nqn, listen_addr("4424")).unwrap();
        let ns_opts = NamespaceOpts {
            bdev_name: "nvmf_t_n5".into(),
            ..Default::default()
        };
        assert_eq!(state::add_namespace(nqn, ns_opts).await.unwrap(), 1);
        let admin = HostQ::new("4424");
        let cntlid = admin.bring_up_admin(nqn, 0).await;
        assert_ok(&admin.set_feature(0x0B, 1 << 8).await);
        let ioq = HostQ::new("4424");
        assert_ok(&ioq.connect(1, 127, 0, cntlid, nqn, HOST).await);
        let mut r = vec![0u8; 512];
        assert_status(
            &ioq.rw(0x02, 1, 1024, 1, &mut r).await,
            Status::LBA_OUT_OF_RANGE,
        );
        let bdev = keel_bdev::get_bdev("nvmf_t_n5").unwrap();
        for (blocks, what) in [(4096u64, "the grow AEN"), (512, "the shrink AEN")] {
            let (_req, aer) = post_aer(&admin);
            assert!(admin.take(aer).is_none(), "outstanding");
            bdev.resize(blocks).unwrap();
            let c = wait_cpl(&admin, aer, what).await;
            assert_ok(&c);
            assert_eq!(c.cdw0, 0x0004_0002, "Namespace Attribute Changed");
            let (c, chg) = admin.get_log(0x04, 4096, false, 0).await;
            assert_ok(&c);
            assert_eq!((le32(&chg, 0), le32(&chg, 4)), (1, 0), "nsid 1 changed");
            let (c, id) = admin.identify(0x00, 1).await;
            assert_ok(&c);
            assert_eq!(
                (le64(&id, 0), le64(&id, 8), le64(&id, 16)),
                (blocks, blocks, blocks)
            );
            let mut r = vec![0u8; 512];
            assert_ok(&ioq.rw(0x02, 1, blocks - 1, 1, &mut r).await);
            assert_status(
                &ioq.rw(0x02, 1, blocks, 1, &mut r).await,
                Status::LBA_OUT_OF_RANGE,
            );
        }
        let s = state::subsystem(nqn).unwrap();
        assert_eq!(s.namespaces().len(), 1, "a resize is no hot-remove");
        ioq.qp.close();
        admin.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
        keel_bdev::modules::null::delete("nvmf_t_n5").await.unwrap();
    });
}

#[test]
fn refused_hosts_and_unknown_subsystems() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:refuse";
        setup(nqn, "nvmf_t_m2", "4421").await;
        let q = HostQ::new("4421");
        let c = q
            .connect(0, 31, 0, 0xFFFF, nqn, "nqn.2014-08.org.example:intruder")
            .await;
        assert_status(&c, Status::CONNECT_INVALID_HOST);
        let c = q
            .connect(0, 31, 0, 0xFFFF, "nqn.2016-06.io.keel:nope", HOST)
            .await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, (1 << 16) | 256, "IATTR data, IPO subnqn");
        // Not served at this listener.
        let other = HostQ::new("4499");
        let c = other.connect(0, 31, 0, 0xFFFF, nqn, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_HOST);
        // Admin sqsize beyond the transport's admin depth.
        let c = q.connect(0, 200, 0, 0xFFFF, nqn, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, 44);
        // Allowing any host lets it in.
        state::allow_any_host(nqn, true).unwrap();
        let c = q
            .connect(0, 31, 0, 0xFFFF, nqn, "nqn.2014-08.org.example:intruder")
            .await;
        assert_ok(&c);
        q.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
    });
}

#[test]
fn keep_alive_timeout_tears_the_controller_down() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:kato";
        setup(nqn, "nvmf_t_m3", "4422").await;
        let admin = HostQ::new("4422");
        let cntlid = admin.bring_up_admin(nqn, 100).await;
        assert_ok(&admin.set_feature(0x07, 0).await);
        let ioq = HostQ::new("4422");
        assert_ok(&ioq.connect(1, 31, 0, cntlid, nqn, HOST).await);
        let s = state::subsystem(nqn).unwrap();
        assert_eq!(s.controllers().len(), 1);
        // No keep-alive: after ~100 ms the controller goes and both queues are dropped.
        until("the keep-alive teardown", || {
            admin.conn.disconnected.get() && ioq.conn.disconnected.get()
        })
        .await;
        assert!(s.controllers().is_empty());
        // Commands still come back (aborted) until the transport closes.
        let c = admin
            .nodata(NvmeCmd {
                opc: 0x18,
                ..Default::default()
            })
            .await;
        assert_status(&c, Status::ABORTED_SQ_DELETION);
        admin.qp.close();
        ioq.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
    });
}

#[test]
fn discovery_log_lists_reachable_subsystems() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:disc";
        setup(nqn, "nvmf_t_m4", "4423").await;
        let hidden = "nqn.2016-06.io.keel:disc-hidden";
        state::create_subsystem(hidden, SubsystemOpts::default()).unwrap();
        state::add_listener(hidden, listen_addr("4423")).unwrap();

        let q = HostQ::new("4423");
        q.bring_up_admin(state::DISCOVERY_NQN, 0).await;
        let (c, id) = q.identify(0x01, 0).await;
        assert_ok(&c);
        assert_eq!(id[111], 2, "discovery controller");
        let (c, _) = q.identify(0x00, 1).await;
        assert_status(&c, Status::INVALID_FIELD);

        let (c, hdr) = q.get_log(0x70, 1024, false, 0).await;
        assert_ok(&c);
        let genctr = le64(&hdr, 0);
        let numrec = le64(&hdr, 8) as usize;
        let (c, log) = q.get_log(0x70, 1024 * (numrec + 1), false, 0).await;
        assert_ok(&c);
        assert_eq!(le64(&log, 0), genctr);
        let names: Vec<String> = (1..=numrec)
            .map(|i| {
                let e = &log[i * 1024..(i + 1) * 1024];
                let n = &e[256..512];
                String::from_utf8_lossy(&n[..n.iter().position(|&b| b == 0).unwrap()]).into_owned()
            })
            .collect();
        assert!(names.iter().any(|n| n == nqn), "{names:?}");
        assert!(
            !names.iter().any(|n| n == hidden),
            "host not allowed there: {names:?}"
        );
        let e = &log[1024 * (names.iter().position(|n| n == nqn).unwrap() + 1)..];
        assert_eq!(e[0], TrType::Rdma.wire_value());
        assert_eq!(&e[32..36], b"4423");
        assert_eq!(&e[512..521], b"192.0.2.1");
        // A change bumps the generation counter; offsets are honoured.
        state::add_host(hidden, HOST).unwrap();
        let (_, hdr2) = q.get_log(0x70, 1024, false, 0).await;
        assert!(le64(&hdr2, 0) > genctr);
        let (c, tail) = q.get_log(0x70, 1024, false, 1024).await;
        assert_ok(&c);
        assert_eq!(tail[0], TrType::Rdma.wire_value());
        q.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
        state::delete_subsystem(hidden).await.unwrap();
    });
}

/// SPDK's initiator sends an empty HOSTNQN by default: an anonymous host is admitted where
/// any host is allowed (admin and I/O queues, its identity then being its host identifier),
/// refused by a host list, and sees only open subsystems in the discovery log.
#[test]
fn anonymous_host_is_admitted_only_where_any_host_is() {
    run(|| async {
        let open = "nqn.2016-06.io.keel:anon-open";
        let listed = "nqn.2016-06.io.keel:anon-listed";
        setup(listed, "nvmf_t_m6", "4426").await;
        state::create_subsystem(
            open,
            SubsystemOpts {
                allow_any_host: true,
                ..Default::default()
            },
        )
        .unwrap();
        state::add_listener(open, listen_addr("4426")).unwrap();
        keel_bdev::modules::malloc::create("nvmf_t_m7", 1024, 512, None).unwrap();
        state::add_namespace(
            open,
            NamespaceOpts {
                bdev_name: "nvmf_t_m7".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let me = ConnectId { hostid: [0x17; 16] };

        // A host list never admits an anonymous host.
        let q = HostQ::new("4426");
        let c = q.connect_as(me, 0, 31, 0, 0xFFFF, listed, "").await;
        assert_status(&c, Status::CONNECT_INVALID_HOST);
        assert_eq!(c.cdw0, (1 << 16) | 512, "IATTR data, IPO hostnqn");

        // A subsystem that allows any host admits it: admin queue, enable, I/O queue, I/O.
        let admin = HostQ::new("4426");
        let c = admin.connect_as(me, 0, 31, 0, 0xFFFF, open, "").await;
        assert_ok(&c);
        let cntlid = c.cdw0 as u16;
        assert_ok(&admin.prop_set(0x14, 0x0046_0001).await);
        let s = state::subsystem(open).unwrap();
        let ctrls = s.controllers();
        assert_eq!(ctrls.len(), 1);
        assert_eq!(ctrls[0].hostnqn, "", "listed as the anonymous host");
        let ioq = HostQ::new("4426");
        assert_ok(&ioq.connect_as(me, 1, 31, 0, cntlid, open, "").await);
        let mut data = vec![0x5Au8; 512];
        assert_ok(&ioq.rw(0x01, 1, 0, 1, &mut data).await);
        let mut back = vec![0u8; 512];
        assert_ok(&ioq.rw(0x02, 1, 0, 1, &mut back).await);
        assert_eq!(back, data);

        // Another anonymous host (another host identifier) cannot join that controller, nor
        // can a named host.
        let other = ConnectId { hostid: [0x99; 16] };
        let q2 = HostQ::new("4426");
        let c = q2.connect_as(other, 2, 31, 0, cntlid, open, "").await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, 1 << 16, "IATTR data, IPO hostid");
        let q3 = HostQ::new("4426");
        let c = q3.connect_as(me, 2, 31, 0, cntlid, open, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, (1 << 16) | 512, "IATTR data, IPO hostnqn");

        // Discovery: admitted; the log lists only the subsystems that allow any host.
        let d = HostQ::new("4426");
        assert_ok(
            &d.connect_as(me, 0, 31, 0, 0xFFFF, state::DISCOVERY_NQN, "")
                .await,
        );
        assert_ok(&d.prop_set(0x14, 0x0046_0001).await);
        let (c, hdr) = d.get_log(0x70, 1024, false, 0).await;
        assert_ok(&c);
        let numrec = le64(&hdr, 8) as usize;
        let (c, log) = d.get_log(0x70, 1024 * (numrec + 1), false, 0).await;
        assert_ok(&c);
        let names: Vec<String> = (1..=numrec)
            .map(|i| {
                let n = &log[i * 1024 + 256..i * 1024 + 512];
                String::from_utf8_lossy(&n[..n.iter().position(|&b| b == 0).unwrap()]).into_owned()
            })
            .collect();
        assert!(names.iter().any(|n| n == open), "{names:?}");
        assert!(!names.iter().any(|n| n == listed), "{names:?}");

        for q in [&q, &admin, &ioq, &q2, &q3, &d] {
            q.qp.close();
        }
        state::delete_subsystem(open).await.unwrap();
        state::delete_subsystem(listed).await.unwrap();
    });
}

/// Admin and Connect strictness where SPDK and Linux agree (docs/INTEROP.md).
#[test]
fn admin_and_connect_strictness() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:strict";
        setup(nqn, "nvmf_t_m8", "4427").await;
        let admin = HostQ::new("4427");
        let cntlid = admin.bring_up_admin(nqn, 0).await;
        // Identify Namespace: the broadcast NSID is refused, an inactive NSID in range reads
        // as zeroes, NSID 0 is refused.
        let (c, _) = admin.identify(0x00, u32::MAX).await;
        assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT);
        let (c, _) = admin.identify(0x00, 0).await;
        assert_status(&c, Status::INVALID_NAMESPACE_OR_FORMAT);
        let (c, d) = admin.identify(0x00, 2).await;
        assert_ok(&c);
        assert!(d.iter().all(|&b| b == 0), "inactive namespace: zeroed data");
        // Unknown CNS, log page, feature, admin opcode.
        let (c, _) = admin.identify(0x55, 0).await;
        assert_status(&c, Status::INVALID_FIELD);
        let (c, _) = admin.get_log(0x7F, 512, false, 0).await;
        assert_status(&c, Status::INVALID_FIELD);
        assert_status(&admin.set_feature(0x7E, 0).await, Status::INVALID_FIELD);
        let c = admin
            .nodata(NvmeCmd {
                opc: 0xC5,
                ..Default::default()
            })
            .await;
        assert_status(&c, Status::INVALID_OPCODE);
        // Fused admin commands are not supported.
        let c = admin
            .nodata(NvmeCmd {
                opc: 0x18,
                flags: 0x1,
                ..Default::default()
            })
            .await;
        assert_status(&c, Status::INVALID_FIELD);
        // A second Connect on a connected queue.
        let c = admin.connect(0, 31, 0, 0xFFFF, nqn, HOST).await;
        assert_status(&c, Status::COMMAND_SEQUENCE_ERROR);
        // Admin Connect must ask for a dynamic controller (0xFFFE, "any", is static-model).
        let q = HostQ::new("4427");
        let c = q.connect(0, 31, 0, 0xFFFE, nqn, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, (1 << 16) | 16, "IATTR data, IPO cntlid");
        // I/O queue SQSIZE: 0 and above MQES refused, MQES itself accepted.
        let mqes = u16::try_from(admin.prop_get(0x00, true).await.1 & 0xffff).unwrap();
        let io = HostQ::new("4427");
        let c = io.connect(1, 0, 0, cntlid, nqn, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(c.cdw0, 44, "IATTR SQE, IPO sqsize");
        let io2 = HostQ::new("4427");
        let c = io2.connect(1, mqes + 1, 0, cntlid, nqn, HOST).await;
        assert_status(&c, Status::CONNECT_INVALID_PARAMETERS);
        let io3 = HostQ::new("4427");
        assert_ok(&io3.connect(1, mqes, 0, cntlid, nqn, HOST).await);
        for q in [&admin, &q, &io, &io2, &io3] {
            q.qp.close();
        }
        state::delete_subsystem(nqn).await.unwrap();
    });
}

/// A namespace claims its bdev; removing it waits for its in-flight I/O, so that when the
/// removal returns the bdev is closed and unclaimed and can be used at once.
#[test]
fn removing_a_namespace_releases_its_bdev_after_in_flight_io() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:release";
        setup(nqn, "nvmf_t_m9", "4428").await;
        keel_bdev::modules::malloc::create("nvmf_t_m10", 1024, 512, None).unwrap();
        keel_bdev::modules::delay::create(&keel_bdev::modules::delay::DelayConfig {
            base_bdev_name: "nvmf_t_m10".into(),
            name: "nvmf_t_slow".into(),
            avg_read_latency: 200_000,
            p99_read_latency: 200_000,
            avg_write_latency: 200_000,
            p99_write_latency: 200_000,
            uuid: None,
        })
        .unwrap();
        let nsid = state::add_namespace(
            nqn,
            NamespaceOpts {
                bdev_name: "nvmf_t_slow".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let claimed = keel_bdev::open("nvmf_t_slow", true, |_| {}).unwrap_err();
        assert!(
            claimed
                .to_string()
                .contains(&format!("claimed by NVMe-oF namespace {nsid} of {nqn}")),
            "{claimed}"
        );
        let admin = HostQ::new("4428");
        let cntlid = admin.bring_up_admin(nqn, 0).await;
        let ioq = HostQ::new("4428");
        assert_ok(&ioq.connect(1, 31, 0, cntlid, nqn, HOST).await);
        // A 200 ms write in flight while the namespace goes.
        let mut data = vec![0x33u8; 512];
        let cmd = NvmeCmd {
            opc: 0x01,
            nsid,
            ..Default::default()
        };
        let (_req, cid) = ioq.start(cmd, DataXfer::HostToController, &mut data);
        state::remove_namespace(nqn, nsid).await.unwrap();
        let desc = keel_bdev::open("nvmf_t_slow", true, |_| {});
        assert!(
            desc.is_ok(),
            "released when removal returns: {:?}",
            desc.err()
        );
        drop(desc);
        assert!(
            ioq.take(cid).is_some(),
            "the in-flight write completed first"
        );
        ioq.qp.close();
        admin.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
    });
}
/// Call an nvmf RPC handler and take its result.
async fn rpc_ok(
    f: fn(Option<serde_json::Value>) -> keel_rpc::HandlerFuture,
    params: serde_json::Value,
) -> serde_json::Value {
    match f(Some(params)).await {
        Ok(v) => v,
        Err(e) => panic!("RPC failed: {e}"),
    }
}

#[test]
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one RPC scenario
fn rpcs_show_listeners_controllers_qpairs_and_per_core_stats() {
    use super::rpc::{rpc_get_controllers, rpc_get_listeners, rpc_get_qpairs, rpc_get_stats};
    use serde_json::json;
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:rpcstats";
        setup(nqn, "nvmf_t_stats", "4431").await;
        let by_nqn = json!({"nqn": nqn});
        let listeners = rpc_ok(rpc_get_listeners, by_nqn.clone()).await;
        assert_eq!(
            listeners,
            json!([{"address": {"trtype": "RDMA", "adrfam": "IPv4", "traddr": "192.0.2.1",
                                 "trsvcid": "4431"}}])
        );
        assert!(
            rpc_get_listeners(Some(json!({"nqn": "nqn.2016-06.io.keel:none"})))
                .await
                .is_err()
        );
        let group = |stats: &serde_json::Value| {
            let groups = stats["poll_groups"].as_array().unwrap();
            assert_eq!(groups.len(), 1, "one poll group per core: {stats}");
            groups[0].clone()
        };

        let admin = HostQ::new("4431");
        let g = group(&rpc_ok(rpc_get_stats, json!({})).await);
        assert_eq!(g["current_unassociated_qpairs"], 1, "{g}");
        assert_eq!(g["admin_qpairs"], 0);
        let cntlid = admin.bring_up_admin(nqn, 0).await;
        let ioq = HostQ::new("4431");
        assert_ok(&ioq.connect(1, 127, 0, cntlid, nqn, HOST).await);

        let stats = rpc_ok(rpc_get_stats, json!({})).await;
        assert!(stats["tick_rate"].as_u64().unwrap() > 0);
        let before = group(&stats);
        assert_eq!(before["name"], "reactor_0");
        assert_eq!(
            (
                &before["admin_qpairs"],
                &before["io_qpairs"],
                &before["current_admin_qpairs"],
                &before["current_io_qpairs"],
                &before["current_unassociated_qpairs"],
            ),
            (&json!(1), &json!(1), &json!(1), &json!(1), &json!(0)),
            "{before}"
        );
        assert!(before["transports"]
            .as_array()
            .unwrap()
            .contains(&json!({"trtype": "RDMA"})));
        // Four I/O commands and an admin command: only the I/O counts.
        let mut w = vec![7u8; 4 * 512];
        for slba in [0, 4, 8] {
            assert_ok(&ioq.rw(0x01, 1, slba, 4, &mut w).await);
        }
        let mut r = vec![0u8; 4 * 512];
        assert_ok(&ioq.rw(0x02, 1, 4, 4, &mut r).await);
        assert_ok(&admin.identify(0x01, 0).await.0);
        let after = group(&rpc_ok(rpc_get_stats, json!({"tgt_name": "nvmf_tgt"})).await);
        assert_eq!(
            after["completed_nvme_io"].as_u64().unwrap()
                - before["completed_nvme_io"].as_u64().unwrap(),
            4,
            "{before} -> {after}"
        );
        assert!(rpc_get_stats(Some(json!({"bogus": 1}))).await.is_err());

        let ctrlrs = rpc_ok(rpc_get_controllers, by_nqn.clone()).await;
        assert_eq!(ctrlrs.as_array().unwrap().len(), 1, "{ctrlrs}");
        assert_eq!(ctrlrs[0]["cntlid"], cntlid);
        assert_eq!(ctrlrs[0]["cntrltype"], "io");
        assert_eq!(ctrlrs[0]["hostnqn"], HOST);
        assert_eq!(ctrlrs[0]["num_io_qpairs"], 1);
        assert_eq!(ctrlrs[0]["hostid"], "42424242-4242-4242-4242-424242424242");

        let qpairs = rpc_ok(rpc_get_qpairs, by_nqn.clone()).await;
        let qs = qpairs.as_array().unwrap();
        assert_eq!(qs.len(), 2, "{qpairs}");
        for (q, qid) in qs.iter().zip([0, 1]) {
            assert_eq!(q["cntlid"], cntlid);
            assert_eq!(q["qid"], qid);
            assert_eq!(q["state"], "enabled");
            assert_eq!(q["thread"], "reactor_0");
            assert_eq!(q["hostnqn"], HOST);
            assert_eq!(q["listen_address"]["trsvcid"], "4431");
            assert_eq!(
                q["peer_address"],
                json!({"trtype": "RDMA", "adrfam": "IPv4", "traddr": "198.51.100.7",
                       "trsvcid": "40000"})
            );
        }

        // The I/O queue goes: current counts drop, totals stay.
        ioq.qp.close();
        let g = group(&rpc_ok(rpc_get_stats, json!({})).await);
        assert_eq!(
            (&g["io_qpairs"], &g["current_io_qpairs"]),
            (&json!(1), &json!(0))
        );
        assert_eq!(g["current_admin_qpairs"], 1);
        until("the controller forgets the queue", || {
            s_num_io(nqn) == Some(0)
        })
        .await;
        admin.qp.close();
        let g = group(&rpc_ok(rpc_get_stats, json!({})).await);
        assert_eq!(g["current_admin_qpairs"], 0, "{g}");
        state::delete_subsystem(nqn).await.unwrap();
    });
}

/// The number of I/O queues the first controller of `nqn` has.
fn s_num_io(nqn: &str) -> Option<u32> {
    let s = state::subsystem(nqn)?;
    let c = s.controllers().into_iter().next()?;
    Some(c.num_io_qpairs.load(std::sync::atomic::Ordering::Relaxed))
}

/// The error of an RPC that must fail.
async fn rpc_err(
    f: fn(Option<serde_json::Value>) -> keel_rpc::HandlerFuture,
    params: serde_json::Value,
) -> keel_rpc::RpcError {
    match f(Some(params.clone())).await {
        Ok(v) => panic!("RPC with {params} succeeded: {v}"),
        Err(e) => e,
    }
}

#[test]
fn spdk_cntlid_range_is_honoured() {
    use super::rpc::{rpc_create_subsystem, rpc_get_subsystems};
    use serde_json::json;
    run(|| async {
        ensure_transport();
        let nqn = "nqn.2016-06.io.keel:cntlid";
        let e = rpc_err(
            rpc_create_subsystem,
            json!({"nqn": nqn, "min_cntlid": 10, "max_cntlid": 9}),
        )
        .await;
        assert!(e.message.contains("min_cntlid 10 max_cntlid 9"), "{e}");
        rpc_ok(
            rpc_create_subsystem,
            json!({"nqn": nqn, "allow_any_host": true, "min_cntlid": 100, "max_cntlid": 101}),
        )
        .await;
        let s = rpc_ok(rpc_get_subsystems, json!({"nqn": nqn})).await;
        assert_eq!(
            (&s[0]["min_cntlid"], &s[0]["max_cntlid"]),
            (&json!(100), &json!(101))
        );
        // SPDK's other fields tools read: no passthrough, the keep-alive granularity.
        assert_eq!(s[0]["passthrough"], false);
        let t = rpc_ok(super::rpc::rpc_get_transports, json!({})).await;
        assert_eq!(t[0]["kas"], 1, "{t}");
        state::add_listener(nqn, listen_addr("4447")).unwrap();
        let (a, b, c) = (HostQ::new("4447"), HostQ::new("4447"), HostQ::new("4447"));
        let ca = a.connect(0, 31, 0, 0xFFFF, nqn, HOST).await;
        let cb = b.connect(0, 31, 0, 0xFFFF, nqn, HOST).await;
        assert_ok(&ca);
        assert_ok(&cb);
        let mut ids = [ca.cdw0 as u16, cb.cdw0 as u16];
        ids.sort();
        assert_eq!(ids, [100, 101], "controller ids from the range");
        let cc = c.connect(0, 31, 0, 0xFFFF, nqn, HOST).await;
        assert_status(&cc, Status::CONNECT_CONTROLLER_BUSY);
        for q in [a, b, c] {
            q.qp.close();
        }
        state::delete_subsystem(nqn).await.unwrap();
    });
}

#[test]
fn spdk_parameters_keel_cannot_honour_are_refused_by_name() {
    use super::rpc::{rpc_add_listener, rpc_add_ns, rpc_create_subsystem, rpc_remove_host};
    use serde_json::json;
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:extras";
        setup(nqn, "nvmf_t_extras", "4448").await;
        let listen = json!({"trtype": "rdma", "traddr": "192.0.2.1", "trsvcid": "4449"});
        for (f, params, what) in [
            (
                rpc_add_listener as fn(_) -> _,
                json!({"nqn": nqn, "listen_address": listen, "secure_channel": true}),
                "secure_channel=true",
            ),
            (
                rpc_add_listener,
                json!({"nqn": nqn, "listen_address": listen, "ana_state": "inaccessible"}),
                "ana_state=\"inaccessible\"",
            ),
            (
                rpc_add_listener,
                json!({"nqn": nqn, "listen_address": listen, "sock_impl": "ssl"}),
                "sock_impl=\"ssl\"",
            ),
            (
                rpc_add_ns,
                json!({"nqn": nqn, "namespace": {"bdev_name": "x", "no_auto_visible": true}}),
                "no_auto_visible=true",
            ),
            (
                rpc_add_ns,
                json!({"nqn": nqn, "namespace": {"bdev_name": "x", "ptpl_file": "/tmp/p"}}),
                "ptpl_file=",
            ),
            (
                rpc_create_subsystem,
                json!({"nqn": "nqn.2016-06.io.keel:x2", "passthrough": true}),
                "passthrough=true",
            ),
            (
                rpc_create_subsystem,
                json!({"nqn": "nqn.2016-06.io.keel:x2", "enable_nssr": true}),
                "enable_nssr=true",
            ),
        ] {
            let e = rpc_err(f, params).await;
            assert_eq!(e.code, -libc::EINVAL, "{e}");
            assert!(e.message.contains(what), "{what}: {e}");
        }
        assert!(state::subsystem("nqn.2016-06.io.keel:x2").is_none());
        // A name SPDK does not have is an unknown field, listing the known ones.
        let e = rpc_err(
            rpc_add_listener,
            json!({"nqn": nqn, "listen_address": listen, "colour": 1}),
        )
        .await;
        assert_eq!(e.code, -32602);
        assert!(
            e.message.contains("unknown field `colour`") && e.message.contains("`secure_channel`"),
            "{e}"
        );
        // Defaults (what rpc.py sends without the flags) and hints are accepted.
        rpc_ok(
            rpc_add_listener,
            json!({"nqn": nqn, "listen_address": listen, "secure_channel": false,
                   "ana_state": "optimized", "sock_impl": "posix", "numa_id": -1}),
        )
        .await;
        rpc_ok(
            rpc_remove_host,
            json!({"nqn": nqn, "host": HOST, "timeout_ms": 100}),
        )
        .await;
        state::delete_subsystem(nqn).await.unwrap();
    });
}

#[test]
fn tgt_name_other_than_keels_one_target_is_refused() {
    use super::rpc::{rpc_create_subsystem, rpc_get_subsystems};
    use serde_json::json;
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:tgtname";
        let e = rpc_err(
            rpc_create_subsystem,
            json!({"nqn": nqn, "tgt_name": "other"}),
        )
        .await;
        assert_eq!(e.code, -32602);
        assert!(
            e.message.contains("'other'") && e.message.contains("nvmf_tgt"),
            "{e}"
        );
        assert!(
            state::subsystem(nqn).is_none(),
            "not created in the one target"
        );
        rpc_ok(
            rpc_create_subsystem,
            json!({"nqn": nqn, "tgt_name": "nvmf_tgt"}),
        )
        .await;
        rpc_ok(
            rpc_get_subsystems,
            json!({"nqn": nqn, "tgt_name": "nvmf_tgt"}),
        )
        .await;
        state::delete_subsystem(nqn).await.unwrap();
    });
}

#[test]
fn commands_wait_for_descriptors_without_failing() {
    run(|| async {
        let nqn = "nqn.2016-06.io.keel:backpressure";
        setup(nqn, "nvmf_t_m11", "4432").await;
        keel_bdev::modules::malloc::create("nvmf_t_m12", 1024, 512, None).unwrap();
        keel_bdev::modules::delay::create(&keel_bdev::modules::delay::DelayConfig {
            base_bdev_name: "nvmf_t_m12".into(),
            name: "nvmf_t_bp".into(),
            avg_read_latency: 20_000,
            p99_read_latency: 20_000,
            avg_write_latency: 20_000,
            p99_write_latency: 20_000,
            uuid: None,
        })
        .unwrap();
        let nsid = state::add_namespace(
            nqn,
            NamespaceOpts {
                bdev_name: "nvmf_t_bp".into(),
                ..Default::default()
            },
        )
        .await
        .unwrap();
        let admin = HostQ::new("4432");
        let cntlid = admin.bring_up_admin(nqn, 0).await;
        let ioq = HostQ::new("4432");
        assert_ok(&ioq.connect(1, 31, 0, cntlid, nqn, HOST).await);
        let pending_before = super::stats::snapshot().pending_bdev_io;
        // More writes in flight than a channel has descriptors (512): the rest wait on the
        // request's own wait entry and run when descriptors come back.
        let n = 700;
        let mut bufs: Vec<Vec<u8>> = (0..n).map(|i| vec![i as u8; 512]).collect();
        let mut started = Vec::with_capacity(n);
        for (i, data) in bufs.iter_mut().enumerate() {
            let cmd = NvmeCmd {
                opc: 0x01,
                nsid,
                cdw10: (i % 1024) as u32,
                ..Default::default()
            };
            started.push(ioq.start(cmd, DataXfer::HostToController, data));
        }
        let mut done = 0;
        until("every write completed", || {
            for (_, cid) in &started {
                if let Some(c) = ioq.take(*cid) {
                    assert_ok(&c);
                    done += 1;
                }
            }
            done == n
        })
        .await;
        assert!(
            super::stats::snapshot().pending_bdev_io > pending_before,
            "commands waited for descriptors"
        );
        ioq.qp.close();
        admin.qp.close();
        state::delete_subsystem(nqn).await.unwrap();
    });
}
