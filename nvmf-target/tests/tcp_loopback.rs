//! The NVMe/TCP transport over real loopback sockets: a raw host brings controllers up, moves
//! data every way the transport offers (in-capsule, R2T + H2CData, C2HData with SUCCESS),
//! with and without digests; hostile connections get C2HTermReq or are closed while a
//! well-behaved connection keeps doing verified I/O; admin and I/O queues on different cores.

mod common;

use common::*;
use keel_nvme::cmd::{NvmeCmd, NvmeCpl};
use keel_nvme::pdu::{
    CapsuleCmdHeader, CapsuleRespHeader, CommonHeader, R2tHeader, Wire, CAPSULE_CMD_HLEN,
    FES_DATA_LIMIT_EXCEEDED, FES_DATA_OUT_OF_RANGE, FES_HEADER_DIGEST, FES_INVALID_HEADER_FIELD,
    FES_PDU_SEQUENCE, PDU_CAPSULE_CMD, PDU_CAPSULE_RESP, PDU_R2T, SHORT_HLEN,
};
use keel_nvme::status::Status;
use keel_nvmf::tcp::{MAXH2CDATA, MAX_R2T_BUFFERED_PER_CONN};
use std::io::Write;
use std::net::Shutdown;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

fn status(cpl: &NvmeCpl) -> Status {
    cpl.get_status().with_dnr(false)
}

fn assert_status(cpl: &NvmeCpl, want: Status, what: &str) {
    assert_eq!(status(cpl), want.with_dnr(false), "{what}");
}

fn identify(c: &mut Client, cns: u32, nsid: u32) -> (NvmeCpl, Vec<u8>) {
    let sqe = NvmeCmd {
        opc: opc::IDENTIFY,
        nsid,
        cdw10: cns,
        ..Default::default()
    };
    c.exec(sqe, &[], 4096).expect("Identify exchange")
}

fn u32_at(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4 bytes"))
}

fn u64_at(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8 bytes"))
}

/// Write `data` at `slba`, read it back, compare.
fn write_read_verify(io: &mut Client, slba: u64, data: &[u8]) {
    let cpl = io.write(slba, data).expect("write exchange");
    assert!(
        cpl.is_success(),
        "write {} B: {:?}",
        data.len(),
        cpl.get_status()
    );
    let nlb = (data.len() / BLOCK as usize) as u32;
    let (cpl, back) = io.read(slba, nlb).expect("read exchange");
    assert!(
        cpl.is_success(),
        "read {} B: {:?}",
        data.len(),
        cpl.get_status()
    );
    assert!(
        back == data,
        "data of {} B at LBA {slba} did not round-trip",
        data.len()
    );
}

/// The whole host bring-up and every data path on one controller.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one scenario over every data path
fn exchange(hd: bool, dd: bool) {
    let _g = env();
    let sub = subsystem();
    let base = wait_connections(target_connections());
    let mut h = bring_up(&sub, hd, dd);

    // Registers.
    let cap = h.admin.prop_get(0x00, true);
    assert!(cap & 0xFFFF >= 1, "CAP.MQES {cap:#x}");
    let vs = h.admin.prop_get(0x08, false);
    assert!(vs >> 16 >= 1, "VS {vs:#x}");
    let cc = h.admin.prop_get(0x14, false);
    assert_eq!(cc & 1, 1, "CC.EN after Property Set");

    // Identify controller and namespace.
    let (cpl, idc) = identify(&mut h.admin, 0x01, 0);
    assert!(
        cpl.is_success(),
        "Identify controller: {:?}",
        cpl.get_status()
    );
    let subnqn = &idc[768..768 + sub.nqn.len()];
    assert_eq!(subnqn, sub.nqn.as_bytes(), "Identify SUBNQN");
    assert_eq!(idc[768 + sub.nqn.len()], 0);
    assert_eq!(u16::from_le_bytes([idc[78], idc[79]]), h.cntlid, "CNTLID");
    assert_eq!(idc[77], 5, "MDTS: 128 KiB in 4 KiB pages");
    let ioccsz = u32_at(&idc, 1792);
    assert!(ioccsz >= 4, "IOCCSZ {ioccsz}");
    h.io.icd = ioccsz * 16 - 64;
    assert_eq!(
        h.io.icd, 4096,
        "in-capsule data on I/O queues (transport default)"
    );
    let (cpl, idns) = identify(&mut h.admin, 0x00, 1);
    assert!(
        cpl.is_success(),
        "Identify namespace: {:?}",
        cpl.get_status()
    );
    assert_eq!(u64_at(&idns, 0), NUM_BLOCKS, "NSZE");
    let flbas = idns[26] & 0xF;
    let lbaf = u32_at(&idns, 128 + 4 * flbas as usize);
    assert_eq!((lbaf >> 16) & 0xFF, 9, "LBADS of the 512-byte format");

    // Number of Queues was set by the bring-up; once an I/O queue exists it is fixed.
    let sqe = NvmeCmd {
        opc: opc::SET_FEATURES,
        cdw10: 0x07,
        cdw11: (3 << 16) | 3,
        ..Default::default()
    };
    let (cpl, _) = h.admin.exec(sqe, &[], 0).expect("exchange");
    assert_status(
        &cpl,
        Status::COMMAND_SEQUENCE_ERROR,
        "Number of Queues after Connect",
    );

    // In-capsule write (4 KiB), then R2T writes (64 KiB, 128 KiB = max_io_size), the 64 KiB
    // one split into four H2CData PDUs per R2T.
    write_read_verify(&mut h.io, 0, &pattern(1, 4096));
    h.io.h2c_chunk = 16 * 1024;
    write_read_verify(&mut h.io, 100, &pattern(2, 64 * 1024));
    h.io.h2c_chunk = h.io.maxh2cdata;
    write_read_verify(&mut h.io, 1000, &pattern(3, 128 * 1024));
    // Small odd sizes both ways (one block, in-capsule and not).
    write_read_verify(&mut h.io, 20, &pattern(4, 512));
    h.io.icd = 0;
    write_read_verify(&mut h.io, 30, &pattern(5, 1536));
    h.io.icd = 4096;

    // 1 MiB is above max_io_size (128 KiB): refused before any data moves.
    let big = pattern(6, 1024 * 1024);
    let cpl = h.io.write(2000, &big).expect("1 MiB write exchange");
    assert_status(&cpl, Status::DATA_SGL_LENGTH_INVALID, "1 MiB write");
    let (cpl, _) = h.io.read(2000, 2048).expect("1 MiB read exchange");
    assert_status(&cpl, Status::DATA_SGL_LENGTH_INVALID, "1 MiB read");
    // ...and the queue still works.
    write_read_verify(&mut h.io, 2000, &pattern(7, 8192));

    // LBA out of range, invalid namespace.
    let cpl =
        h.io.write(NUM_BLOCKS - 4, &pattern(8, 4096))
            .expect("exchange");
    assert_status(&cpl, Status::LBA_OUT_OF_RANGE, "write past the end");
    let (cpl, _) = h.io.read(NUM_BLOCKS - 1, 2).expect("exchange");
    assert_status(&cpl, Status::LBA_OUT_OF_RANGE, "read past the end");
    let (cpl, _) =
        h.io.exec(rw(opc::READ, 2, 0, 1), &[], 512)
            .expect("exchange");
    assert_status(&cpl, Status::INVALID_NAMESPACE_OR_FORMAT, "read nsid 2");
    let (cpl, _) =
        h.io.exec(rw(opc::WRITE, 0xFFFF_FFFF, 0, 1), &pattern(9, 512), 0)
            .expect("exchange");
    assert_status(
        &cpl,
        Status::INVALID_NAMESPACE_OR_FORMAT,
        "write broadcast nsid",
    );

    // Dataset Management deallocate of the 64 KiB range (the malloc bdev zeroes on unmap).
    let mut range = [0u8; 16];
    range[4..8].copy_from_slice(&128u32.to_le_bytes());
    range[8..16].copy_from_slice(&100u64.to_le_bytes());
    let dsm = NvmeCmd {
        opc: opc::DSM,
        nsid: 1,
        cdw10: 0,      // one range
        cdw11: 1 << 2, // deallocate
        ..Default::default()
    };
    h.io.ok(dsm, &range, 0);
    let (_, back) = h.io.read(100, 128).expect("read after DSM");
    assert!(
        back.iter().all(|&b| b == 0),
        "deallocated range reads back zeroes"
    );

    // Write Zeroes over the 128 KiB one, then Flush.
    h.io.ok(rw(opc::WRITE_ZEROES, 1, 1000, 256), &[], 0);
    let (cpl, back) = h.io.read(1000, 256).expect("read after write zeroes");
    assert!(cpl.is_success());
    assert!(back.iter().all(|&b| b == 0), "write zeroes");
    h.io.ok(rw(opc::FLUSH, 1, 0, 0), &[], 0);
    // The untouched 4 KiB is still there.
    let (_, back) = h.io.read(0, 8).expect("read");
    assert!(back == pattern(1, 4096));

    drop(h);
    assert_eq!(
        wait_connections(base),
        base,
        "connections freed after the host left"
    );
}

#[test]
fn host_exchange_without_digests() {
    exchange(false, false);
}

#[test]
fn host_exchange_with_header_and_data_digests() {
    exchange(true, true);
}

#[test]
fn host_exchange_with_header_digest_only() {
    exchange(true, false);
}

/// SPDK's initiator connects with an empty HOSTNQN unless told otherwise: over TCP, a
/// subsystem that allows any host takes its admin and I/O queues and serves its I/O.
#[test]
fn anonymous_host_connects_and_does_io() {
    let _g = env();
    let sub = subsystem();
    let mut h = bring_up_as(&sub, "");
    write_read_verify(&mut h.io, 8, &pattern(11, 4096));
}

#[test]
fn ipv6_listener_serves_a_host() {
    let _g = env();
    let sub = subsystem();
    let port6 = {
        let l = std::net::TcpListener::bind("[::1]:0").expect("IPv6 loopback");
        l.local_addr().expect("local addr").port()
    };
    let nqn = sub.nqn.clone();
    on_main(move || {
        keel_nvmf::target::add_listener(
            &nqn,
            keel_nvmf::transport::ListenAddr {
                trtype: keel_nvmf::transport::TrType::Tcp,
                adrfam: keel_nvmf::transport::AdrFam::Ipv6,
                traddr: "::1".into(),
                trsvcid: port6.to_string(),
            },
        )
    })
    .expect("IPv6 listener");
    let addr = format!("[::1]:{port6}");
    let mut admin = Client::connect_addr(&addr, false, false);
    let cpl = admin.fabrics_connect(&sub.nqn, 0, 0xFFFF);
    assert!(
        cpl.is_success(),
        "admin Connect over IPv6: {:?}",
        cpl.get_status()
    );
    let cntlid = cpl.cdw0 as u16;
    admin.prop_set(0x14, 1 | (6 << 16) | (4 << 20));
    assert_eq!(admin.prop_get(0x08, false), 0x0001_0300, "VS 1.3 over IPv6");
    let mut io = Client::connect_addr(&addr, true, true);
    let cpl = io.fabrics_connect(&sub.nqn, 1, cntlid);
    assert!(
        cpl.is_success(),
        "I/O Connect over IPv6: {:?}",
        cpl.get_status()
    );
    write_read_verify(&mut io, 8, &pattern(6, 16 * 1024));
}

// ----- hostile inputs -----

/// A well-behaved host doing verified I/O until told to stop (bounded).
fn good_worker(mut h: Host, stop: Arc<AtomicBool>) -> Result<usize, String> {
    let mut ops = 0;
    for i in 0..100_000u64 {
        if stop.load(Ordering::Relaxed) && i > 0 {
            break;
        }
        let len = if i % 2 == 0 { 4096 } else { 32 * 1024 };
        let data = pattern(1000 + i, len);
        let slba = (i % 32) * 64;
        match h.io.write(slba, &data) {
            Ok(c) if c.is_success() => {}
            Ok(c) => return Err(format!("write {i}: {:?}", c.get_status())),
            Err(e) => return Err(format!("write {i}: {e:?}")),
        }
        match h.io.read(slba, (len / 512) as u32) {
            Ok((c, d)) if c.is_success() && d == data => {}
            Ok((c, _)) => return Err(format!("read {i}: {:?} or data mismatch", c.get_status())),
            Err(e) => return Err(format!("read {i}: {e:?}")),
        }
        ops += 2;
    }
    // The admin queue too.
    let (cpl, _) = identify(&mut h.admin, 0x01, 0);
    if !cpl.is_success() {
        return Err("Identify failed after the hostile run".into());
    }
    Ok(ops)
}

fn send(c: &mut std::net::TcpStream, bytes: &[u8]) {
    // The target may already have closed: a failed write is fine, the ending tells.
    let _ = c.write_all(bytes);
}

fn raw_capsule_header(flags: u8, pdo: u8, plen: u32) -> Vec<u8> {
    let mut h = CapsuleCmdHeader {
        common: CommonHeader::new(PDU_CAPSULE_CMD, CAPSULE_CMD_HLEN),
        sqe: rw(opc::READ, 1, 0, 1),
    };
    h.common.flags = flags;
    h.common.pdo = pdo;
    h.common.plen = plen;
    h.as_bytes().to_vec()
}

fn term(fes: u16, fei: u32) -> Ending {
    Ending::Term { fes, fei }
}

/// A connection whose queue is connected (an admin queue of a new controller), ready for
/// data transfers.
fn connected(sub: &Subsys, hd: bool, dd: bool) -> Client {
    let mut c = Client::connect(sub.port, hd, dd);
    let cpl = c.fabrics_connect(&sub.nqn, 0, 0xFFFF);
    assert!(cpl.is_success(), "admin Connect: {:?}", cpl.get_status());
    c
}

/// Send a 64 KiB write capsule (transport SGL) and take the R2T (the transport moves the
/// data before the core looks at the command).
fn start_r2t_write(c: &mut Client) -> (u16, R2tHeader) {
    let cid = c.cid();
    let mut sqe = rw(opc::WRITE, 1, 0, 128);
    sqe.cid = cid;
    sqe.flags = 0x40;
    sqe.dptr[8..12].copy_from_slice(&(64u32 * 1024).to_le_bytes());
    sqe.dptr[15] = 0x5A;
    let b = c.capsule_bytes(&sqe, &[]);
    c.sock.write_all(&b).expect("send capsule");
    let p = c.recv_pdu().expect("R2T");
    assert_eq!(p.ch.pdu_type, PDU_R2T);
    let r = R2tHeader::read_from(&p.hdr).expect("R2T header");
    assert_eq!((r.cccid, r.r2to, r.r2tl), (cid, 0, 64 * 1024));
    (cid, r)
}

/// Each hostile case on its own connection; returns how it ended.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one hostile case per block
fn hostile_cases(sub: &Subsys) {
    // Random garbage before ICReq (the first byte is not an ICReq type).
    let mut s = Client::open(sub.port);
    let mut g = pattern(77, 4096);
    g[0] = 0x04;
    send(&mut s, &g);
    assert_eq!(
        expect_end(&mut s),
        term(FES_PDU_SEQUENCE, 0),
        "garbage before ICReq"
    );

    // Random garbage after ICReq: some termination or a close, never a hang.
    for seed in 0..8 {
        let mut c = Client::connect(sub.port, seed % 2 == 0, false);
        send(&mut c.sock, &pattern(500 + seed as u64, 1024));
        let end = expect_end(&mut c.sock);
        assert!(matches!(end, Ending::Term { .. } | Ending::Closed));
    }

    // A truncated PDU, then close: the target sees EOF and closes.
    let mut c = Client::connect(sub.port, false, false);
    let b = c.capsule_bytes(&rw(opc::READ, 1, 0, 1), &[]);
    send(&mut c.sock, &b[..40]);
    c.sock.shutdown(Shutdown::Write).expect("half-close");
    assert_eq!(expect_end(&mut c.sock), Ending::Closed, "truncated capsule");

    // plen smaller than the header.
    let mut c = Client::connect(sub.port, false, false);
    send(&mut c.sock, &raw_capsule_header(0, 0, 16));
    assert_eq!(
        expect_end(&mut c.sock),
        term(FES_INVALID_HEADER_FIELD, 4),
        "plen < hlen"
    );

    // An enormous plen without data offset, and with one (above the in-capsule limit).
    let mut c = Client::connect(sub.port, false, false);
    send(&mut c.sock, &raw_capsule_header(0, 0, 0xFFFF_FFF0));
    assert_eq!(
        expect_end(&mut c.sock),
        term(FES_INVALID_HEADER_FIELD, 4),
        "huge plen"
    );
    let mut c = Client::connect(sub.port, false, false);
    send(&mut c.sock, &raw_capsule_header(0, 72, 0xFFFF_FFF0));
    match expect_end(&mut c.sock) {
        Ending::Term { fes, .. } => assert_eq!(fes, FES_DATA_LIMIT_EXCEEDED, "huge capsule data"),
        e => panic!("huge capsule data: {e:?}"),
    }

    // Bad header digest.
    let mut c = Client::connect(sub.port, true, true);
    let mut b = c.capsule_bytes(&rw(opc::READ, 1, 0, 1), &[]);
    b[CAPSULE_CMD_HLEN] ^= 0x55;
    send(&mut c.sock, &b);
    match expect_end(&mut c.sock) {
        Ending::Term { fes, .. } => assert_eq!(fes, FES_HEADER_DIGEST, "bad header digest"),
        e => panic!("bad header digest: {e:?}"),
    }

    // H2CData: offset not where the transfer stands.
    let mut c = connected(sub, false, false);
    let (cid, r) = start_r2t_write(&mut c);
    let b = c.h2c_bytes(cid, r.ttag, 4096, &[1; 4096], false);
    send(&mut c.sock, &b);
    assert_eq!(
        expect_end(&mut c.sock),
        term(FES_DATA_OUT_OF_RANGE, 0),
        "H2CData out of range offset"
    );
    // H2CData past the R2T's end.
    let mut c = connected(sub, false, false);
    let (cid, r) = start_r2t_write(&mut c);
    let b = c.h2c_bytes(cid, r.ttag, 0, &pattern(3, 65 * 1024), true);
    send(&mut c.sock, &b);
    assert_eq!(
        expect_end(&mut c.sock),
        term(FES_DATA_OUT_OF_RANGE, 0),
        "H2CData beyond the R2T"
    );
    // H2CData above MAXH2CDATA.
    let mut c = connected(sub, false, false);
    let (cid, r) = start_r2t_write(&mut c);
    let b = c.h2c_bytes(cid, r.ttag, 0, &pattern(3, c.maxh2cdata as usize + 4), true);
    send(&mut c.sock, &b);
    match expect_end(&mut c.sock) {
        Ending::Term { fes, .. } => {
            assert_eq!(fes, FES_DATA_LIMIT_EXCEEDED, "H2CData > MAXH2CDATA")
        }
        e => panic!("H2CData > MAXH2CDATA: {e:?}"),
    }
    // Unknown transfer tag, and a tag with no transfer at all.
    for ttag in [1u16, 0xFFFF] {
        let mut c = connected(sub, false, false);
        let (cid, r) = start_r2t_write(&mut c);
        let b = c.h2c_bytes(cid, r.ttag.wrapping_add(ttag), 0, &[1; 512], false);
        send(&mut c.sock, &b);
        assert_eq!(
            expect_end(&mut c.sock),
            term(FES_INVALID_HEADER_FIELD, 10),
            "H2CData with unknown ttag"
        );
    }
    // H2CData with no command at all.
    let mut c = Client::connect(sub.port, false, false);
    let b = c.h2c_bytes(1, 0, 0, &[1; 512], true);
    send(&mut c.sock, &b);
    assert_eq!(expect_end(&mut c.sock), term(FES_INVALID_HEADER_FIELD, 10));

    // CapsuleCmd before ICReq.
    let mut s = Client::open(sub.port);
    send(&mut s, &raw_capsule_header(0, 0, 72));
    assert_eq!(
        expect_end(&mut s),
        term(FES_PDU_SEQUENCE, 0),
        "capsule before ICReq"
    );

    // A second ICReq.
    let mut c = Client::connect(sub.port, false, false);
    send(&mut c.sock, &icreq_bytes(false, false));
    assert_eq!(
        expect_end(&mut c.sock),
        term(FES_PDU_SEQUENCE, 0),
        "second ICReq"
    );

    // H2C PDU types the target must refuse (controller-to-host types from a host).
    for t in [0x01u8, 0x03, 0x05, 0x07, 0x09, 0x0F] {
        let mut c = Client::connect(sub.port, false, false);
        let mut h = CommonHeader::new(t, SHORT_HLEN);
        h.plen = SHORT_HLEN as u32;
        let mut b = h.as_bytes().to_vec();
        b.resize(SHORT_HLEN, 0);
        send(&mut c.sock, &b);
        assert_eq!(
            expect_end(&mut c.sock),
            term(FES_INVALID_HEADER_FIELD, 0),
            "type {t:#x}"
        );
    }

    // The host terminates: the target closes without answering.
    for plen in [SHORT_HLEN as u32, 0xFFFF_0000] {
        let mut c = Client::connect(sub.port, false, false);
        let mut h = CommonHeader::new(0x02, SHORT_HLEN);
        h.plen = plen;
        let mut b = h.as_bytes().to_vec();
        b.resize(SHORT_HLEN, 0);
        send(&mut c.sock, &b);
        let end = expect_end(&mut c.sock);
        if plen == SHORT_HLEN as u32 {
            assert_eq!(end, Ending::Closed, "H2CTermReq");
        } else {
            assert_eq!(
                end,
                term(FES_INVALID_HEADER_FIELD, 4),
                "H2CTermReq with huge plen"
            );
        }
    }

    // R2T-requiring write, then disconnect in the middle of the data.
    let mut c = connected(sub, true, true);
    let (cid, r) = start_r2t_write(&mut c);
    let b = c.h2c_bytes(cid, r.ttag, 0, &pattern(5, 64 * 1024), true);
    send(&mut c.sock, &b[..b.len() / 2]);
    drop(c);

    // A connected queue that pipelines reads and writes, then vanishes without reading.
    let mut h = bring_up(sub, false, false);
    for i in 0..32u64 {
        let mut sqe = rw(
            if i % 2 == 0 { opc::READ } else { opc::WRITE },
            1,
            i * 256,
            256,
        );
        sqe.cid = h.io.cid();
        sqe.flags = 0x40;
        sqe.dptr[8..12].copy_from_slice(&(128u32 * 1024).to_le_bytes());
        sqe.dptr[15] = 0x5A;
        let b = h.io.capsule_bytes(&sqe, &[]);
        send(&mut h.io.sock, &b);
    }
    std::thread::sleep(Duration::from_millis(20));
    drop(h);
}

#[test]
fn hostile_connections_do_not_disturb_a_good_one() {
    let _g = env();
    let sub = subsystem();
    let base = wait_connections(target_connections());
    let good = bring_up(&sub, true, true);
    let stop = Arc::new(AtomicBool::new(false));
    let stop2 = stop.clone();
    let worker = std::thread::spawn(move || good_worker(good, stop2));

    hostile_cases(&sub);

    // A flood of connections that send nothing (bounded), then close.
    let flood: Vec<_> = (0..200).map(|_| Client::open(sub.port)).collect();
    let seen = wait_connections(base + 2 + 200);
    assert_eq!(seen, base + 2 + 200, "every flood connection was accepted");
    // The target still serves new hosts meanwhile.
    let mut c = Client::connect(sub.port, false, false);
    let cpl = c.fabrics_connect(&sub.nqn, 0, 0xFFFF);
    assert!(cpl.is_success());
    drop(c);
    drop(flood);

    stop.store(true, Ordering::Relaxed);
    let ops = worker
        .join()
        .expect("good worker did not panic")
        .expect("the good connection's I/O stayed correct");
    assert!(ops > 0);

    // After all that the target accepts and serves new connections, and every hostile
    // connection was freed.
    let mut h = bring_up(&sub, false, false);
    write_read_verify(&mut h.io, 0, &pattern(42, 16 * 1024));
    drop(h);
    assert_eq!(
        wait_connections(base),
        base,
        "hostile connections all freed"
    );
}

/// A host that sends many 128 KiB write capsules and never their data gets R2Ts (and pool
/// buffers) only up to the per-connection cap; the rest wait without failing, start as
/// earlier transfers complete, and a good connection keeps doing I/O meanwhile.
#[test]
fn r2t_buffering_is_capped_per_connection() {
    const LEN: u32 = 128 * 1024;
    // One R2T per write, and the cap lets some writes through.
    const _: () = assert!(LEN <= MAXH2CDATA && MAX_R2T_BUFFERED_PER_CONN >= LEN as usize);
    let cap = MAX_R2T_BUFFERED_PER_CONN / LEN as usize;
    let _g = env();
    let sub = subsystem();
    let mut good = bring_up(&sub, false, false);
    let mut bad = bring_up(&sub, false, false);
    let n = cap + 4;
    let mut cids = Vec::with_capacity(n);
    for k in 0..n {
        let cid = bad.io.cid();
        let mut sqe = rw(opc::WRITE, 1, k as u64 * 256, LEN / BLOCK);
        sqe.cid = cid;
        sqe.flags = 0x40;
        sqe.dptr[8..12].copy_from_slice(&LEN.to_le_bytes());
        sqe.dptr[15] = 0x5A;
        let b = bad.io.capsule_bytes(&sqe, &[]);
        bad.io.sock.write_all(&b).expect("send write capsule");
        cids.push(cid);
    }
    // A Flush after them: its response comes after every capsule before it was parsed and
    // after the R2Ts those produced.
    let flush_cid = bad.io.cid();
    let mut fl = rw(opc::FLUSH, 1, 0, 1);
    fl.cdw10 = 0;
    fl.cdw12 = 0;
    fl.cid = flush_cid;
    let b = bad.io.capsule_bytes(&fl, &[]);
    bad.io.sock.write_all(&b).expect("send flush");
    let mut r2ts = Vec::new();
    loop {
        let p = bad.io.recv_pdu().expect("PDU before the Flush response");
        match p.ch.pdu_type {
            PDU_R2T => r2ts.push(R2tHeader::read_from(&p.hdr).expect("R2T header")),
            PDU_CAPSULE_RESP => {
                let r = CapsuleRespHeader::read_from(&p.hdr).expect("response header");
                assert_eq!(r.cqe.cid, flush_cid, "only the Flush completes");
                assert!(r.cqe.is_success(), "Flush: {:?}", r.cqe.get_status());
                break;
            }
            t => panic!("unexpected PDU type {t:#x}"),
        }
    }
    let got: Vec<u16> = r2ts.iter().map(|r| r.cccid).collect();
    assert_eq!(got, cids[..cap], "R2Ts only up to the cap, oldest first");

    // The good connection is served meanwhile.
    write_read_verify(&mut good.io, 4096, &pattern(77, 64 * 1024));

    // Completing the oldest transfer lets exactly the next queued write start.
    let first = r2ts[0];
    let data = pattern(78, LEN as usize);
    let b = bad.io.h2c_bytes(first.cccid, first.ttag, 0, &data, true);
    bad.io.sock.write_all(&b).expect("send H2CData");
    let (mut done, mut next) = (false, None);
    while !done || next.is_none() {
        let p = bad.io.recv_pdu().expect("PDU after the data");
        match p.ch.pdu_type {
            PDU_R2T => {
                let r = R2tHeader::read_from(&p.hdr).expect("R2T header");
                assert!(next.is_none(), "one more R2T only");
                next = Some(r.cccid);
            }
            PDU_CAPSULE_RESP => {
                let r = CapsuleRespHeader::read_from(&p.hdr).expect("response header");
                assert_eq!(r.cqe.cid, first.cccid);
                assert!(r.cqe.is_success(), "write: {:?}", r.cqe.get_status());
                done = true;
            }
            t => panic!("unexpected PDU type {t:#x}"),
        }
    }
    assert_eq!(
        next,
        Some(cids[cap]),
        "the oldest waiting write got its R2T"
    );
    write_read_verify(&mut good.io, 8192, &pattern(79, 128 * 1024));
}

// ----- cross-core -----

#[test]
fn admin_and_io_queues_on_different_cores() {
    let _g = env();
    let sub = subsystem();
    assert_eq!(keel_reactor::cores().len(), 2);
    let base = wait_connections(target_connections());
    let per_core = || -> Vec<usize> {
        keel_reactor::cores()
            .into_iter()
            .map(|c| block_on_core(c, || async { keel_nvmf::tcp::connections_on_this_core() }))
            .collect()
    };
    let before = per_core();
    let mut h = bring_up(&sub, false, true);
    let after = per_core();
    // Round-robin: the admin and I/O connections landed one on each core.
    assert_eq!(
        (after[0] - before[0], after[1] - before[1]),
        (1, 1),
        "connections per core before {before:?} after {after:?}"
    );
    write_read_verify(&mut h.io, 0, &pattern(10, 4096));
    write_read_verify(&mut h.io, 64, &pattern(11, 128 * 1024));

    // A second I/O queue lands on the admin queue's core; both queues work.
    let mut io2 = Client::connect(sub.port, false, true);
    let cpl = io2.fabrics_connect(&sub.nqn, 2, h.cntlid);
    assert!(cpl.is_success(), "qid 2 Connect: {:?}", cpl.get_status());
    write_read_verify(&mut io2, 512, &pattern(12, 32 * 1024));
    let (_, back) = io2.read(0, 8).expect("read on qid 2");
    assert!(back == pattern(10, 4096), "qid 2 sees qid 1's write");
    // The same qid twice is refused.
    let mut dup = Client::connect(sub.port, false, true);
    let cpl = dup.fabrics_connect(&sub.nqn, 1, h.cntlid);
    assert!(!cpl.is_success(), "a second qid 1 was accepted");
    drop(dup);

    // The admin queue goes away: the controller is torn down and its I/O queues (on both
    // cores) are disconnected by the target.
    drop(h.admin);
    assert_eq!(
        expect_end(&mut h.io.sock),
        Ending::Closed,
        "qid 1 disconnected"
    );
    assert_eq!(
        expect_end(&mut io2.sock),
        Ending::Closed,
        "qid 2 disconnected"
    );
    drop(h.io);
    drop(io2);
    assert_eq!(wait_connections(base), base);
}

#[test]
fn data_pdus_before_connect_and_bad_sgl_get_statuses() {
    let _g = env();
    let sub = subsystem();
    let base = wait_connections(target_connections());
    // Commands before Connect: a sequence error, the connection stays.
    let mut c = Client::connect(sub.port, false, false);
    let (cpl, _) = c.exec(rw(opc::READ, 1, 0, 8), &[], 4096).expect("exchange");
    assert_status(&cpl, Status::COMMAND_SEQUENCE_ERROR, "read before Connect");
    let cpl = c.write(0, &pattern(1, 1024)).expect("exchange");
    assert_status(&cpl, Status::COMMAND_SEQUENCE_ERROR, "write before Connect");
    // A write that would need R2T: refused at once, no R2T, no buffers.
    let mut sqe = rw(opc::WRITE, 1, 0, 128);
    sqe.cid = c.cid();
    sqe.flags = 0x40;
    sqe.dptr[8..12].copy_from_slice(&(64u32 * 1024).to_le_bytes());
    sqe.dptr[15] = 0x5A;
    let b = c.capsule_bytes(&sqe, &[]);
    c.sock.write_all(&b).expect("send");
    let p = c.recv_pdu().expect("response");
    assert_eq!(
        p.ch.pdu_type,
        keel_nvme::pdu::PDU_CAPSULE_RESP,
        "no R2T before Connect"
    );
    let cqe = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr)
        .expect("resp")
        .cqe;
    assert_status(
        &cqe,
        Status::COMMAND_SEQUENCE_ERROR,
        "R2T write before Connect",
    );

    let mut h = bring_up(&sub, false, false);
    // In-capsule data longer than the SGL says, and an in-capsule SGL with an offset.
    let mut sqe = rw(opc::WRITE, 1, 0, 1);
    sqe.cid = h.io.cid();
    sqe.flags = 0x40;
    sqe.dptr[8..12].copy_from_slice(&512u32.to_le_bytes());
    sqe.dptr[0] = 8; // offset 8
    sqe.dptr[15] = 0x01;
    let b = h.io.capsule_bytes(&sqe, &[0; 520]);
    h.io.sock.write_all(&b).expect("send");
    let p = h.io.recv_pdu().expect("response");
    let cqe = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr)
        .expect("resp")
        .cqe;
    assert_status(&cqe, Status::INVALID_SGL_OFFSET, "in-capsule SGL offset");
    // An unsupported SGL descriptor type.
    let mut sqe = rw(opc::READ, 1, 0, 1);
    sqe.cid = h.io.cid();
    sqe.flags = 0x40;
    sqe.dptr[8..12].copy_from_slice(&512u32.to_le_bytes());
    sqe.dptr[15] = 0x20;
    let b = h.io.capsule_bytes(&sqe, &[]);
    h.io.sock.write_all(&b).expect("send");
    let p = h.io.recv_pdu().expect("response");
    let cqe = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr)
        .expect("resp")
        .cqe;
    assert_status(&cqe, Status::SGL_DESCRIPTOR_TYPE_INVALID, "SGL type 0x2");
    // Data digest error on in-capsule data: the command fails, the connection stays.
    let mut dd = Client::connect(sub.port, false, true);
    let cpl = dd.fabrics_connect(&sub.nqn, 2, h.cntlid);
    assert!(cpl.is_success());
    let mut sqe = rw(opc::WRITE, 1, 0, 8);
    sqe.cid = dd.cid();
    sqe.flags = 0x40;
    sqe.dptr[8..12].copy_from_slice(&4096u32.to_le_bytes());
    sqe.dptr[15] = 0x01;
    let mut b = dd.capsule_bytes(&sqe, &pattern(3, 4096));
    let n = b.len();
    b[n - 1] ^= 1;
    dd.sock.write_all(&b).expect("send");
    let p = dd.recv_pdu().expect("response");
    let cqe = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr)
        .expect("resp")
        .cqe;
    assert_status(&cqe, Status::TRANSIENT_TRANSPORT_ERROR, "data digest error");
    write_read_verify(&mut dd, 0, &pattern(4, 4096));
    // H2CData with a bad data digest.
    let (cid, r) = start_r2t_write(&mut dd);
    let mut b = dd.h2c_bytes(cid, r.ttag, 0, &pattern(5, 64 * 1024), true);
    let n = b.len();
    b[n - 2] ^= 1;
    dd.sock.write_all(&b).expect("send");
    let p = dd.recv_pdu().expect("response");
    let cqe = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr)
        .expect("resp")
        .cqe;
    assert_eq!(cqe.cid, cid);
    assert_status(
        &cqe,
        Status::TRANSIENT_TRANSPORT_ERROR,
        "H2C data digest error",
    );
    write_read_verify(&mut dd, 0, &pattern(6, 64 * 1024));
    drop((c, h, dd));
    assert_eq!(wait_connections(base), base);
}

// ----- pipelining -----

/// Many commands in flight on one queue: R2Ts for all writes first, their data in reverse
/// order, then pipelined reads whose C2HData may come in any order.
#[test]
fn pipelined_commands_with_out_of_order_data() {
    let _g = env();
    let sub = subsystem();
    let base = wait_connections(target_connections());
    for (hd, dd) in [(false, false), (true, true)] {
        let mut h = bring_up(&sub, hd, dd);
        let c = &mut h.io;
        const N: usize = 24;
        let len = 32 * 1024;
        let mut cids = Vec::new();
        let mut all = Vec::new();
        for k in 0..N {
            let cid = c.cid();
            let mut sqe = rw(opc::WRITE, 1, (k * 64) as u64, 64);
            sqe.cid = cid;
            sqe.flags = 0x40;
            sqe.dptr[8..12].copy_from_slice(&(len as u32).to_le_bytes());
            sqe.dptr[15] = 0x5A;
            all.extend(c.capsule_bytes(&sqe, &[]));
            cids.push(cid);
        }
        c.sock.write_all(&all).expect("send capsules");
        let mut r2ts = Vec::new();
        for _ in 0..N {
            let p = c.recv_pdu().expect("R2T");
            assert_eq!(p.ch.pdu_type, PDU_R2T);
            let r = R2tHeader::read_from(&p.hdr).expect("R2T");
            assert_eq!((r.r2to, r.r2tl), (0, len as u32));
            r2ts.push(r);
        }
        // Data in reverse order, each in two H2CData PDUs.
        let mut data = Vec::new();
        for r in r2ts.iter().rev() {
            let k = cids.iter().position(|&x| x == r.cccid).expect("known cid");
            let d = pattern(7000 + k as u64, len);
            data.extend(c.h2c_bytes(r.cccid, r.ttag, 0, &d[..len / 2], false));
            data.extend(c.h2c_bytes(r.cccid, r.ttag, (len / 2) as u32, &d[len / 2..], true));
        }
        c.sock.write_all(&data).expect("send data");
        let mut done = [false; N];
        for _ in 0..N {
            let p = c.recv_pdu().expect("response");
            let r = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr).expect("resp");
            assert!(r.cqe.is_success(), "{:?}", r.cqe.get_status());
            let k = cids
                .iter()
                .position(|&x| x == r.cqe.cid)
                .expect("known cid");
            assert!(!done[k], "two responses for cid {}", r.cqe.cid);
            done[k] = true;
        }
        // Pipelined reads.
        let mut all = Vec::new();
        let mut rcids = Vec::new();
        for k in 0..N {
            let cid = c.cid();
            let mut sqe = rw(opc::READ, 1, (k * 64) as u64, 64);
            sqe.cid = cid;
            sqe.flags = 0x40;
            sqe.dptr[8..12].copy_from_slice(&(len as u32).to_le_bytes());
            sqe.dptr[15] = 0x5A;
            all.extend(c.capsule_bytes(&sqe, &[]));
            rcids.push(cid);
        }
        c.sock.write_all(&all).expect("send reads");
        let mut got = vec![None; N];
        let mut finished = 0;
        while finished < N {
            let p = c.recv_pdu().expect("C2HData");
            assert_eq!(p.ch.pdu_type, keel_nvme::pdu::PDU_C2H_DATA);
            let hdr = keel_nvme::pdu::DataHeader::read_from(&p.hdr).expect("hdr");
            let k = rcids
                .iter()
                .position(|&x| x == hdr.cccid)
                .expect("known cid");
            assert_eq!((hdr.datao, hdr.datal as usize), (0, len));
            assert!(hdr.common.flags & keel_nvme::pdu::FLAG_SUCCESS != 0);
            assert!(got[k].is_none());
            got[k] = Some(p.data);
            finished += 1;
        }
        for (k, g) in got.into_iter().enumerate() {
            assert!(
                g.expect("read") == pattern(7000 + k as u64, len),
                "read {k}"
            );
        }
        drop(h);
    }
    assert_eq!(wait_connections(base), base);
}

/// More commands than the connection has request slots, sent in one go: the target stops
/// reading while it is full and catches up as responses leave.
#[test]
fn more_commands_than_slots() {
    let _g = env();
    let sub = subsystem();
    let base = wait_connections(target_connections());
    let mut h = bring_up(&sub, false, true);
    const N: usize = 400;
    let mut all = Vec::new();
    for k in 0..N {
        let mut sqe = if k % 2 == 0 {
            rw(opc::WRITE, 1, (k * 8) as u64, 8)
        } else {
            rw(opc::READ, 1, ((k - 1) * 8) as u64, 8)
        };
        sqe.cid = k as u16;
        sqe.flags = 0x40;
        sqe.dptr[8..12].copy_from_slice(&4096u32.to_le_bytes());
        if k % 2 == 0 {
            sqe.dptr[15] = 0x01;
            all.extend(h.io.capsule_bytes(&sqe, &pattern(k as u64, 4096)));
        } else {
            sqe.dptr[15] = 0x5A;
            all.extend(h.io.capsule_bytes(&sqe, &[]));
        }
    }
    let mut w = h.io.sock.try_clone().expect("clone");
    let writer = std::thread::spawn(move || w.write_all(&all).map_err(|e| e.to_string()));
    let mut seen = vec![false; N];
    for _ in 0..N {
        let p = h.io.recv_pdu().expect("answer");
        let (cid, ok) = match p.ch.pdu_type {
            keel_nvme::pdu::PDU_C2H_DATA => {
                let d = keel_nvme::pdu::DataHeader::read_from(&p.hdr).expect("hdr");
                // The read follows its write on the same queue: commands of one queue may
                // run in any order, so only check the length here.
                (d.cccid, p.data.len() == 4096)
            }
            _ => {
                let r = keel_nvme::pdu::CapsuleRespHeader::read_from(&p.hdr).expect("r");
                (r.cqe.cid, r.cqe.is_success())
            }
        };
        assert!(ok, "command {cid}");
        assert!(!seen[cid as usize], "two answers for {cid}");
        seen[cid as usize] = true;
    }
    writer.join().expect("writer").expect("all capsules sent");
    // Every write landed.
    for k in (0..N).step_by(2) {
        let (_, d) = h.io.read((k * 8) as u64, 8).expect("read");
        assert!(d == pattern(k as u64, 4096), "write {k}");
    }
    drop(h);
    assert_eq!(wait_connections(base), base);
}
