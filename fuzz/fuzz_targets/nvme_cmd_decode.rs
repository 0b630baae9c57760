//! Fuzz every typed decoder of keel-nvmf's spec module with arbitrary submission queue
//! entries: Fabrics (Connect, Property Get/Set, Disconnect) and the registers they drive,
//! Get Log Page (with the copy into split buffers), Identify, Get/Set Features, the NVM I/O
//! commands and their range checks, Dataset Management ranges, reservations and SGL
//! descriptors. Input: 64 bytes of SQE, then optional trailing data used as command data.
//! Nothing may panic, and what decodes must be self-consistent.

#![no_main]

use keel_bdev::IoVec;
use keel_nvme::aer::AsyncEvent;
use keel_nvme::cmd::{NvmeCmd, NvmeCpl, OPC_FABRICS};
use keel_nvme::fabrics::{ConnectCmd, DisconnectCmd, FabricsType, PropertyGet, PropertySet};
use keel_nvme::features::{GetFeatures, NumberOfQueues, SetFeatures};
use keel_nvme::identify::{IdentifyCmd, NsList};
use keel_nvme::io::{DsmCmd, DsmRange, RwCmd, WriteZeroesCmd};
use keel_nvme::log::GetLogPage;
use keel_nvmf::iov::copy_log_page;
use keel_nvme::registers::{Cap, Registers, Vs};
use keel_nvme::reservation::{AcquireCmd, KeyPair, RegisterCmd, ReleaseCmd, ReportCmd};
use keel_nvme::sgl::{check_flags, check_in_capsule, sgl1, Sgl};
use keel_nvme::status::Status;
use libfuzzer_sys::fuzz_target;

fn dw(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes([b[off], b[off + 1], b[off + 2], b[off + 3]])
}

fn sqe(b: &[u8]) -> NvmeCmd {
    let mut dptr = [0u8; 16];
    dptr.copy_from_slice(&b[24..40]);
    NvmeCmd {
        opc: b[0],
        flags: b[1],
        cid: u16::from_le_bytes([b[2], b[3]]),
        nsid: dw(b, 4),
        cdw2: dw(b, 8),
        cdw3: dw(b, 12),
        mptr: dw(b, 16) as u64 | (dw(b, 20) as u64) << 32,
        dptr,
        cdw10: dw(b, 40),
        cdw11: dw(b, 44),
        cdw12: dw(b, 48),
        cdw13: dw(b, 52),
        cdw14: dw(b, 56),
        cdw15: dw(b, 60),
    }
}

fn check_status(s: Status) {
    assert!(s.sct <= 7);
    assert!(!s.is_success(), "errors are never Success");
    assert_eq!(Status::from_field(s.to_field()), s);
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 64 {
        return;
    }
    let (raw, extra) = data.split_at(64);
    let cmd = sqe(raw);

    // Status field round trip (CRD and More bits are not modelled).
    let field = u16::from_le_bytes([raw[2], raw[3]]) & !1;
    assert_eq!(Status::from_field(field).to_field(), field & 0x8ffe);
    let ev = AsyncEvent::from_cdw0(cmd.cdw10);
    assert_eq!(ev.cdw0(), cmd.cdw10 & 0x00ff_ff07);

    // Fabrics.
    let ft = FabricsType::decode(&cmd);
    assert_eq!(ft.is_some(), cmd.opc == OPC_FABRICS);
    let mut cpl = NvmeCpl::default();
    match ConnectCmd::decode(&cmd) {
        Ok(c) => {
            assert_eq!(ft, Some(FabricsType::Connect));
            assert_eq!(c.recfmt, 0);
            assert!(c.sqsize >= 1 && c.queue_entries() >= 2);
        }
        Err(e) => {
            check_status(e.status);
            e.apply(&mut cpl);
            assert_eq!(cpl.get_status(), e.status);
        }
    }
    let mut regs = Registers::new(Cap::fabrics(128, 15), Vs::V1_3, raw[8] & 1 == 0);
    match PropertyGet::decode(&cmd) {
        Ok(pg) => match regs.get(pg.ofst, pg.size) {
            Ok(v) => {
                pg.complete(&mut cpl, v);
                assert_eq!(cpl.cdw0, v as u32);
            }
            Err(e) => check_status(e),
        },
        Err(e) => check_status(e),
    }
    match PropertySet::decode(&cmd) {
        Ok(ps) => match regs.set(ps.ofst, ps.size, ps.value) {
            Ok(change) => {
                assert!(!(change.enabled && change.enable_failed));
                assert!(!regs.csts().rdy || regs.cc().en, "RDY only while enabled");
            }
            Err(e) => check_status(e),
        },
        Err(e) => check_status(e),
    }
    // A sequence of CC writes from the input keeps CSTS consistent.
    for c in extra.chunks_exact(4).take(8) {
        let change = regs.write_cc(dw(c, 0));
        assert!(!(change.enabled && change.disabled));
        assert!(!regs.csts().rdy || regs.cc().en);
        assert_eq!(regs.is_ready(), regs.csts().rdy && regs.cc().en);
    }
    if let Err(e) = DisconnectCmd::decode(&cmd) {
        check_status(e);
    }

    // Get Log Page, and its copy into two buffers split where the input says.
    match GetLogPage::decode(&cmd) {
        Ok(g) => {
            assert_eq!(g.offset % 4, 0);
            assert!(g.len >= 4 && g.len % 4 == 0 && g.len <= 1 << 34);
            let page: Vec<u8> = (0..(raw[9] as usize * 7)).map(|i| i as u8).collect();
            let mut mem = [0xa5u8; 1024];
            let cut = raw[10] as usize * 4;
            let (a, b) = mem.split_at_mut(cut.min(1024));
            // SAFETY: both iovecs cover parts of `mem`, which outlives them and is not
            // touched otherwise while they are in use.
            let iovs = unsafe {
                [
                    IoVec::from_raw_parts(a.as_mut_ptr(), a.len()),
                    IoVec::from_raw_parts(b.as_mut_ptr(), b.len()),
                ]
            };
            // SAFETY: as above.
            match unsafe { copy_log_page(&page, &g, &iovs) } {
                Ok(n) => {
                    assert_eq!(n as u64, g.len.min(1024));
                    let (start, k) = g
                        .window(page.len())
                        .expect("the copy succeeded, so its window is valid");
                    assert_eq!(&mem[..k.min(1024)], &page[start..start + k.min(1024)]);
                    assert!(mem[k.min(1024)..n].iter().all(|&x| x == 0));
                }
                Err(e) => {
                    check_status(e);
                    assert!(g.offset > page.len() as u64);
                }
            }
        }
        Err(e) => check_status(e),
    }

    // Identify and the namespace list it may ask for.
    match IdentifyCmd::decode(&cmd) {
        Ok(id) => match NsList::active(extra.chunks_exact(4).map(|c| dw(c, 0)), id.nsid) {
            Ok(l) => {
                let v: Vec<u32> = l.iter().collect();
                assert!(v.len() <= NsList::CAPACITY);
                assert!(v.windows(2).all(|w| w[0] < w[1]));
                assert!(v.iter().all(|&n| n > id.nsid));
            }
            Err(e) => check_status(e),
        },
        Err(e) => check_status(e),
    }

    // Features.
    if let Err(e) = GetFeatures::decode(&cmd) {
        check_status(e);
    }
    if let Ok(s) = SetFeatures::decode(&cmd) {
        if let Ok(q) = NumberOfQueues::decode_request(s.cdw11) {
            assert_eq!(q.encode(), s.cdw11);
            assert!(q.sq_count() <= 65535 && q.cq_count() <= 65535);
        }
    }

    // NVM I/O.
    let nsze = u64::from_le_bytes([
        raw[16], raw[17], raw[18], raw[19], raw[20], raw[21], raw[22], raw[23],
    ]);
    if let Ok(rw) = RwCmd::decode(&cmd) {
        assert!((1..=65536).contains(&rw.nlb));
        if rw.check_range(nsze).is_ok() {
            assert!(rw.slba + rw.nlb as u64 <= nsze);
        }
        let _ = rw.data_len(raw[11] as u32 * 512);
    }
    if let Ok(wz) = WriteZeroesCmd::decode(&cmd) {
        if wz.check_range(nsze).is_ok() {
            assert!(wz.slba + wz.nlb as u64 <= nsze);
        }
    }
    if let Ok(d) = DsmCmd::decode(&cmd) {
        assert!((1..=256).contains(&d.nr));
        match DsmRange::parse(extra, d.nr as usize) {
            Ok(ranges) => {
                assert!(extra.len() >= d.data_len() as usize);
                for r in ranges {
                    if r.check_range(nsze).is_ok() {
                        assert!(r.slba.checked_add(r.nlb as u64).is_some_and(|e| e <= nsze));
                    }
                }
            }
            Err(e) => check_status(e),
        }
    }

    // Reservations.
    if let Err(e) = RegisterCmd::decode(&cmd) {
        check_status(e);
    }
    if let Err(e) = AcquireCmd::decode(&cmd) {
        check_status(e);
    }
    if let Err(e) = ReleaseCmd::decode(&cmd) {
        check_status(e);
    }
    if let Ok(r) = ReportCmd::decode(&cmd) {
        assert!(r.len >= 4);
    }
    if let Ok(k) = KeyPair::parse(extra) {
        assert_eq!(&k.encode()[..], &extra[..16]);
    }

    // SGL.
    if let Err(e) = check_flags(&cmd) {
        check_status(e);
    }
    match sgl1(&cmd) {
        Ok(s) => {
            assert_eq!(Sgl::decode(&s.encode()), Ok(s));
            if let Sgl::InCapsule { offset, len } = s {
                if check_in_capsule(offset, len, dw(raw, 8)).is_ok() {
                    assert!(offset + len as u64 <= dw(raw, 8) as u64);
                }
            }
        }
        Err(e) => check_status(e),
    }
});
