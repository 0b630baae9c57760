//! RC ping-pong over the safe verbs layer, for a Soft-RoCE guest (see the kernel-initiator
//! README): one process, two CM ids connecting to each other on `ADDR` (default
//! 10.0.2.15:7471). It checks, in order: a request with bad NVMe-oF private data is REJECTed
//! with the right status; a good one is ACCEPTed with CRQSIZE; SEND/RECV (server receives from
//! an SRQ, woken through a completion channel); RDMA WRITE and RDMA READ against the client's
//! buffer; disconnect. Prints `RC-PINGPONG-OK` at the end.
//!
//! Run in the guest: `modprobe rdma_rxe; modprobe rdma_ucm;
//! rdma link add rxe0 type rxe netdev eth0; ./rc_pingpong`.

use keel_rdma::nvmf_cm::{self, CmLimits, CmRequest};
use keel_rdma::verbs::*;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

const BUF: usize = 4096;
const CLIENT: u64 = 1;
const LISTENER: u64 = 2;
const BAD_CLIENT: u64 = 3;
const LIMITS: CmLimits = CmLimits {
    max_qid: 4,
    max_queue_depth: 32,
    max_aq_depth: 32,
};

type R<T> = Result<T, Box<dyn std::error::Error>>;

fn leak_buf() -> *mut u8 {
    Box::leak(vec![0u8; BUF].into_boxed_slice()).as_mut_ptr()
}

fn wait<T>(what: &str, mut f: impl FnMut() -> R<Option<T>>) -> R<T> {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f()? {
            return Ok(v);
        }
        if Instant::now() > deadline {
            return Err(format!("timed out waiting for {what}").into());
        }
        std::thread::yield_now();
    }
}

fn next_event(ch: &CmEventChannel, what: &str) -> R<CmEvent> {
    wait(what, || Ok(ch.poll_event()?))
}

fn poll_one(cq: &CompletionQueue, what: &str) -> R<WorkCompletion> {
    let mut batch = [WorkCompletion::default(); 4];
    let wc = wait(what, || Ok((cq.poll(&mut batch)? > 0).then_some(batch[0])))?;
    if !wc.is_success() {
        return Err(format!("{what}: completion error {}", wc.status_str()).into());
    }
    Ok(wc)
}

fn qp_init(cq: &Arc<CompletionQueue>, srq: Option<Arc<SharedReceiveQueue>>) -> QpInit {
    QpInit {
        send_cq: cq.clone(),
        recv_cq: cq.clone(),
        srq,
        max_send_wr: 16,
        max_recv_wr: 16,
        max_send_sge: 2,
        max_recv_sge: 1,
        max_inline_data: 0,
        sq_sig_all: false,
    }
}

fn param(data: &[u8]) -> ConnParam<'_> {
    ConnParam {
        private_data: data,
        responder_resources: 4,
        initiator_depth: 4,
        retry_count: 7,
        rnr_retry_count: 7,
    }
}

/// Resolves address and route for `id`, expecting its events on `ch`.
fn resolve(ch: &CmEventChannel, id: &mut CmId, addr: SocketAddr) -> R<()> {
    id.resolve_addr(None, addr, 2000)?;
    let ev = next_event(ch, "ADDR_RESOLVED")?;
    assert_eq!(
        (ev.kind(), ev.id()),
        (CmEventKind::AddrResolved, id.handle())
    );
    id.resolve_route(2000)?;
    let ev = next_event(ch, "ROUTE_RESOLVED")?;
    assert_eq!(
        (ev.kind(), ev.id()),
        (CmEventKind::RouteResolved, id.handle())
    );
    Ok(())
}

#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one scripted exchange
fn main() -> R<()> {
    let addr: SocketAddr = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "10.0.2.15:7471".into())
        .parse()?;
    let list = Device::list()?;
    for d in list.iter() {
        println!("device {} guid {:#x}", d.name(), d.guid());
    }
    let ctxs = cm_contexts()?;
    let ch = CmEventChannel::new()?;
    let mut listener = ch.create_id(LISTENER)?;
    listener.bind(addr)?;
    listener.listen(8)?;
    let ctx = listener
        .device_context(&ctxs)
        .ok_or("listener not bound to an RDMA device")?
        .clone();
    let attr = ctx.query()?;
    println!(
        "fw {} max_qp_wr {} max_sge {}",
        attr.fw_ver(),
        attr.0.max_qp_wr,
        attr.0.max_sge
    );
    let pd = ProtectionDomain::new(&ctx)?;

    // 1. A request with a bad record format is rejected with status 2.
    let mut bad = ch.create_id(BAD_CLIENT)?;
    resolve(&ch, &mut bad, addr)?;
    let bad_cq = CompletionQueue::new(&ctx, 16, None, 0)?;
    bad.create_qp(&pd, &qp_init(&bad_cq, None))?;
    let mut bad_req = CmRequest {
        qid: 1,
        hrqsize: 16,
        hsqsize: 15,
        cntlid: 1,
    }
    .encode();
    bad_req[0] = 1;
    bad.connect(&param(&bad_req))?;
    let mut ev = next_event(&ch, "CONNECT_REQUEST (bad)")?;
    assert_eq!(ev.kind(), CmEventKind::ConnectRequest);
    let status = nvmf_cm::parse_request(ev.private_data(), &LIMITS)
        .expect_err("the doctored request is refused");
    let mut id = ev.take_id().ok_or("no id in CONNECT_REQUEST")?;
    id.reject(&nvmf_cm::encode_reject(status))?;
    let ev = next_event(&ch, "REJECTED")?;
    assert_eq!((ev.kind(), ev.id()), (CmEventKind::Rejected, bad.handle()));
    let sts = nvmf_cm::parse_reject(ev.private_data())?;
    println!("bad request rejected: sts {sts} ({status})");
    assert_eq!(sts, 2);
    drop(id);
    drop(bad);

    // 2. A good request is accepted; the server receives from an SRQ.
    let client_cq = CompletionQueue::new(&ctx, 32, None, 0)?;
    let comp = CompChannel::new(&ctx)?;
    let server_cq = CompletionQueue::new(&ctx, 32, Some(&comp), 0x5e)?;
    server_cq.req_notify(false)?;
    let srq = SharedReceiveQueue::new(&pd, 16, 1)?;

    let (cbuf, sbuf) = (leak_buf(), leak_buf());
    let rw = Access::LOCAL_WRITE | Access::REMOTE_WRITE | Access::REMOTE_READ;
    // SAFETY: both buffers are leaked, so they stay mapped and unused by anything else.
    let cmr = unsafe { MemoryRegion::register(&pd, cbuf, BUF, rw)? };
    // SAFETY: as above.
    let smr = unsafe { MemoryRegion::register(&pd, sbuf, BUF, Access::LOCAL_WRITE)? };

    // Server receive buffers: SRQ slot i at sbuf + i*256.
    let srq_sges: Vec<Sge> = (0..4)
        .map(|i| smr.sge(i * 256, 256).expect("inside the registered region"))
        .collect();
    let mut rwrs: Vec<RecvWr> = srq_sges
        .iter()
        .enumerate()
        .map(|(i, s)| RecvWr::new(i as u64, std::slice::from_ref(s)))
        .collect();
    // SAFETY: the slots are leaked memory the CPU does not touch until their completion.
    unsafe { srq.post_recv(&mut rwrs) }?;

    let mut client = ch.create_id(CLIENT)?;
    resolve(&ch, &mut client, addr)?;
    client.create_qp(&pd, &qp_init(&client_cq, None))?;
    let crecv = [cmr.sge(3072, 256).expect("inside the registered region")];
    // SAFETY: the client's receive slot is untouched until its completion.
    unsafe {
        client
            .qp()
            .expect("connected, so it has a queue pair")
            .post_recv(&mut [RecvWr::new(100, &crecv)])
    }?;
    let req = CmRequest {
        qid: 1,
        hrqsize: 16,
        hsqsize: 15,
        cntlid: 1,
    };
    client.connect(&param(&req.encode()))?;

    let mut ev = next_event(&ch, "CONNECT_REQUEST")?;
    assert_eq!(ev.kind(), CmEventKind::ConnectRequest);
    assert_eq!(ev.listen_id(), Some(listener.handle()));
    let got = nvmf_cm::parse_request(ev.private_data(), &LIMITS).map_err(|s| s.to_string())?;
    assert_eq!(got, req);
    let mut server = ev.take_id().ok_or("no id in CONNECT_REQUEST")?;
    server.create_qp(&pd, &qp_init(&server_cq, Some(srq.clone())))?;
    let accept = nvmf_cm::encode_accept(16);
    let mut ap = param(&accept);
    ap.responder_resources = ev.initiator_depth().min(4);
    ap.initiator_depth = ev.responder_resources().min(4);
    server.accept(&ap)?;
    let mut established = 0;
    let mut crqsize = None;
    while established < 2 {
        let ev = next_event(&ch, "ESTABLISHED")?;
        assert_eq!(
            ev.kind(),
            CmEventKind::Established,
            "status {}",
            ev.status()
        );
        if ev.id() == client.handle() {
            crqsize = Some(nvmf_cm::parse_accept(ev.private_data())?);
        }
        established += 1;
    }
    println!("connected: crqsize {crqsize:?}");
    assert_eq!(crqsize, Some(16));

    // 3. Client SENDs a ping naming its buffer; the server RDMA WRITEs, RDMA READs, SENDs pong.
    // SAFETY: cbuf is leaked memory of BUF bytes; nothing is posted on [0, 2048) yet.
    unsafe {
        let msg = format!("ping {:#x} {:#x}", cmr.addr() + 1024, cmr.rkey());
        std::ptr::copy_nonoverlapping(msg.as_ptr(), cbuf, msg.len());
        std::ptr::write_bytes(cbuf.add(msg.len()), 0, 64 - msg.len());
        std::ptr::copy_nonoverlapping(b"read-me".as_ptr(), cbuf.add(2048), 7);
    }
    let ping = [cmr.sge(0, 64).expect("inside the registered region")];
    // SAFETY: the ping bytes are not written again until the send completes (polled below).
    unsafe {
        client
            .qp()
            .expect("connected, so it has a queue pair")
            .post_send(&mut [SendWr::send(7, &ping).signaled()])
    }?;
    assert_eq!(poll_one(&client_cq, "ping send")?.wr_id(), 7);

    let token = wait("comp channel event", || Ok(comp.poll_event()?))?;
    assert_eq!(token, 0x5e);
    let wc = poll_one(&server_cq, "ping recv")?;
    assert_eq!(wc.opcode(), WcOpcode::Recv);
    let slot = wc.wr_id() as usize;
    // SAFETY: the receive completed, so the slot holds byte_len received bytes.
    let text = unsafe { std::slice::from_raw_parts(sbuf.add(slot * 256), wc.byte_len() as usize) };
    let text = String::from_utf8_lossy(text)
        .trim_end_matches('\0')
        .to_string();
    println!("server got {text:?}");
    let mut it = text.split_whitespace().skip(1);
    let raddr = u64::from_str_radix(it.next().ok_or("addr")?.trim_start_matches("0x"), 16)?;
    let rkey = u32::from_str_radix(it.next().ok_or("rkey")?.trim_start_matches("0x"), 16)?;

    // SAFETY: sbuf[1024..) is outside the SRQ slots; written once before the post.
    unsafe { std::ptr::copy_nonoverlapping(b"written-by-server".as_ptr(), sbuf.add(1024), 17) };
    let wsrc = [smr.sge(1024, 17).expect("inside the registered region")];
    let rdst = [smr.sge(2048, 7).expect("inside the registered region")];
    let pong_src = [smr.sge(1024, 17).expect("inside the registered region")];
    let sqp = server.qp().expect("accepted, so it has a queue pair");
    let mut chain = [
        SendWr::rdma_write(20, &wsrc, raddr, rkey),
        SendWr::rdma_read(21, &rdst, raddr + 1024, rkey).signaled(),
        SendWr::send(22, &pong_src).fenced().signaled(),
    ];
    // SAFETY: source/destination ranges are not touched by the CPU until completion.
    unsafe { sqp.post_send(&mut chain) }?;
    let mut batch = [WorkCompletion::default(); 8];
    let mut seen = Vec::new();
    wait("server completions", || {
        let n = server_cq.poll(&mut batch)?;
        for wc in &batch[..n] {
            if !wc.is_success() {
                return Err(format!("server wr {} failed: {}", wc.wr_id(), wc.status_str()).into());
            }
            seen.push(wc.wr_id());
        }
        Ok((seen.len() >= 2).then_some(()))
    })?;
    assert_eq!(seen, vec![21, 22]);
    // SAFETY: the RDMA READ completed.
    let read = unsafe { std::slice::from_raw_parts(sbuf.add(2048), 7) };
    assert_eq!(read, b"read-me");
    let wc = poll_one(&client_cq, "pong recv")?;
    assert_eq!((wc.wr_id(), wc.byte_len()), (100, 17));
    // SAFETY: the pong receive completed; the RDMA WRITE preceded it on the same QP.
    let (pong, written) = unsafe {
        (
            std::slice::from_raw_parts(cbuf.add(3072), 17),
            std::slice::from_raw_parts(cbuf.add(1024), 17),
        )
    };
    assert_eq!(pong, b"written-by-server");
    assert_eq!(written, b"written-by-server");
    println!("rdma write, rdma read, send/recv verified");

    // 4. Disconnect: both sides see DISCONNECTED.
    client.disconnect()?;
    let mut disc = Vec::new();
    while disc.len() < 2 {
        let ev = next_event(&ch, "DISCONNECTED")?;
        println!(
            "event {:?} on {}",
            ev.kind(),
            if ev.id() == client.handle() {
                "client"
            } else {
                "server"
            }
        );
        if ev.kind() == CmEventKind::Disconnected {
            disc.push(ev.id());
            // The passive side answers the host's DREQ with its own disconnect (DREP); only
            // then does the active side see DISCONNECTED.
            if ev.id() == server.handle() {
                server.disconnect()?;
            }
        }
    }
    drop(server);
    drop(client);
    drop(listener);
    println!("RC-PINGPONG-OK");
    Ok(())
}
