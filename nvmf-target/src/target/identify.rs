//! Identify data (4096 bytes each): controller, namespace, active namespace list, namespace
//! identification descriptors, NVM command-set controller data. Built as little-endian byte
//! buffers at the spec's offsets (NVMe Base 1.4, "Identify Controller Data Structure" and
//! "Identify Namespace Data Structure"; NVMe-oF 1.1 for the fabrics fields).

use super::subsystem::Namespace;
use crate::spec::bytes::{put_str, write};

/// Size of every Identify data structure.
pub(crate) const IDENTIFY_LEN: usize = 4096;

/// CNS values served.
pub(crate) const CNS_NAMESPACE: u8 = 0x00;
pub(crate) const CNS_CONTROLLER: u8 = 0x01;
pub(crate) const CNS_ACTIVE_NS_LIST: u8 = 0x02;
pub(crate) const CNS_NS_ID_DESCRIPTORS: u8 = 0x03;
pub(crate) const CNS_CS_CONTROLLER: u8 = 0x06;

/// What the Identify Controller data is built from.
#[derive(Debug, Clone)]
pub(crate) struct CtrlrIdentity<'a> {
    pub cntlid: u16,
    pub discovery: bool,
    pub subnqn: &'a str,
    pub serial: &'a str,
    pub model: &'a str,
    /// Highest nsid (NN).
    pub max_namespaces: u32,
    /// Largest transfer, bytes.
    pub max_io_size: u32,
    /// In-capsule data size, bytes.
    pub in_capsule_data_size: u32,
    /// Queue depth (MAXCMD).
    pub max_queue_depth: u16,
    /// Outstanding AERs accepted.
    pub max_aers: u8,
    /// Keep-alive granularity, 100 ms units.
    pub kas: u16,
}

/// MDTS: log2 of the largest transfer in 4 KiB units (0 = unlimited is never used).
pub(crate) fn mdts(max_io_size: u32) -> u8 {
    let pages = (max_io_size / 4096).max(1);
    (31 - pages.leading_zeros()) as u8
}

/// The Identify Controller data structure.
pub(crate) fn controller(id: &CtrlrIdentity) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    put_str(&mut b[4..24], id.serial, b' ');
    put_str(&mut b[24..64], id.model, b' ');
    put_str(&mut b[64..72], env!("CARGO_PKG_VERSION"), b' ');
    b[72] = 6; // RAB: recommended arbitration burst
    if !id.discovery {
        b[76] = 1 << 1; // CMIC: may have more than one controller
        b[77] = mdts(id.max_io_size);
    }
    write(&mut b, 78, id.cntlid);
    write(&mut b, 80, super::fabrics::NVME_VERSION);
    // OAES: namespace attribute notices (I/O), discovery log change notices (discovery).
    let oaes: u32 = if id.discovery { 1 << 31 } else { 1 << 8 };
    write(&mut b, 92, oaes);
    write(&mut b, 96, 1u32); // CTRATT: 128-bit host identifier
    b[111] = if id.discovery { 2 } else { 1 }; // CNTRLTYPE
    b[258] = 3; // ACL (0-based): four concurrent Aborts
    b[259] = id.max_aers.saturating_sub(1); // AERL (0-based)
    b[260] = 0x3; // FRMW: one slot, slot 1 read-only
                  // LPA: SMART per namespace no, commands effects yes, extended data for Get Log Page.
    b[261] = (1 << 1) | (1 << 2);
    b[262] = 127; // ELPE (0-based)
    write(&mut b, 266, 0x0157u16); // WCTEMP: 343 K
    write(&mut b, 268, 0x0175u16); // CCTEMP: 373 K
    write(&mut b, 320, id.kas);
    if !id.discovery {
        b[512] = 0x66; // SQES
        b[513] = 0x44; // CQES
        write(&mut b, 514, id.max_queue_depth); // MAXCMD
        write(&mut b, 516, id.max_namespaces); // NN
                                               // ONCS: Compare, Dataset Management, Write Zeroes.
        write(&mut b, 520, (1u16 << 0) | (1 << 2) | (1 << 3));
        // VWC: present; flush with the broadcast nsid not supported (bits 2:1 = 10b).
        b[525] = 1 | (2 << 1);
        // SGLS: supported (no alignment), keyed data block, offsets in SGLs.
        write(&mut b, 536, 1u32 | (1 << 2) | (1 << 20));
    } else {
        b[512] = 0x66;
        b[513] = 0x44;
        write(&mut b, 514, id.max_queue_depth);
        write(&mut b, 536, 1u32 | (1 << 2) | (1 << 20));
    }
    put_str(&mut b[768..1024], id.subnqn, 0);
    // NVMe-oF attributes.
    write(&mut b, 1792, (64 + id.in_capsule_data_size) / 16); // IOCCSZ
    write(&mut b, 1796, 1u32); // IORCSZ
    write(&mut b, 1800, 0u16); // ICDOFF
    b[1802] = 0; // FCATT: dynamic controller model
    b[1803] = 1; // MSDBD
                 // Power state 0: 25 W max power (centiwatts) so tools print something sensible.
    write(&mut b, 2048, 2500u16);
    b
}

/// The Identify Namespace data structure of an active namespace.
pub(crate) fn namespace(ns: &Namespace) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    write(&mut b, 0, ns.num_blocks); // NSZE
    write(&mut b, 8, ns.num_blocks); // NCAP
    write(&mut b, 16, ns.num_blocks); // NUSE
    b[24] = 0; // NSFEAT
    b[25] = 0; // NLBAF (0-based): one format
    b[26] = 0; // FLBAS: format 0, no metadata
    b[30] = 1; // NMIC: may be attached to several controllers
               // DLFEAT: deallocated blocks read as zeroes (001b) when the bdev does so; Write Zeroes
               // with DEAC supported (bit 3).
    if ns.reads_zeroes_after_unmap && ns.supports_unmap {
        b[33] = 0x1 | (1 << 3);
    }
    b[104..120].copy_from_slice(&ns.nguid);
    b[120..128].copy_from_slice(&ns.eui64);
    // LBAF0: no metadata, LBADS = log2(block size), relative performance best.
    let lbads = ns.block_size.trailing_zeros();
    write(&mut b, 128, lbads << 16);
    b
}

/// The active namespace id list: ids greater than `after`, ascending, at most 1024.
pub(crate) fn active_ns_list(nsids: impl IntoIterator<Item = u32>, after: u32) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    for (i, nsid) in nsids
        .into_iter()
        .filter(|&n| n > after)
        .take(IDENTIFY_LEN / 4)
        .enumerate()
    {
        write(&mut b, i * 4, nsid);
    }
    b
}

/// The namespace identification descriptor list (EUI-64, NGUID, UUID; zero ones omitted).
pub(crate) fn ns_id_descriptors(ns: &Namespace) -> Vec<u8> {
    let mut b = vec![0u8; IDENTIFY_LEN];
    let mut off = 0;
    let mut put = |nidt: u8, id: &[u8]| {
        if id.iter().all(|&x| x == 0) {
            return;
        }
        b[off] = nidt;
        b[off + 1] = id.len() as u8;
        b[off + 4..off + 4 + id.len()].copy_from_slice(id);
        off += 4 + id.len();
    };
    put(1, &ns.eui64);
    put(2, &ns.nguid);
    put(3, &ns.uuid.0);
    b
}

/// NVM command set specific Identify Controller data: no extra limits.
pub(crate) fn nvm_cs_controller() -> Vec<u8> {
    vec![0u8; IDENTIFY_LEN]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::bytes::read;

    fn ident() -> CtrlrIdentity<'static> {
        CtrlrIdentity {
            cntlid: 7,
            discovery: false,
            subnqn: "nqn.2016-06.io.keel:x",
            serial: "SN1",
            model: "Model",
            max_namespaces: 32,
            max_io_size: 131072,
            in_capsule_data_size: 4096,
            max_queue_depth: 128,
            max_aers: 4,
            kas: 1,
        }
    }

    #[test]
    fn mdts_is_log2_of_4k_pages() {
        assert_eq!(mdts(131072), 5);
        assert_eq!(mdts(4096), 0);
        assert_eq!(mdts(1 << 20), 8);
        assert_eq!(mdts(100_000), 4); // rounded down to a power of two
        assert_eq!(mdts(512), 0);
    }

    #[test]
    fn controller_fields_at_spec_offsets() {
        let b = controller(&ident());
        assert_eq!(&b[4..24], b"SN1                 ");
        assert_eq!(&b[24..29], b"Model");
        assert_eq!(b[63], b' ');
        assert_eq!(b[77], 5);
        assert_eq!(read::<u16>(&b, 78), Some(7));
        assert_eq!(read::<u32>(&b, 80), Some(0x0001_0300));
        assert_eq!(read::<u32>(&b, 92), Some(1 << 8));
        assert_eq!(b[111], 1);
        assert_eq!(b[259], 3);
        assert_eq!(read::<u16>(&b, 320), Some(1));
        assert_eq!(b[512], 0x66);
        assert_eq!(b[513], 0x44);
        assert_eq!(read::<u16>(&b, 514), Some(128));
        assert_eq!(read::<u32>(&b, 516), Some(32));
        assert_eq!(read::<u16>(&b, 520), Some(0b1101));
        assert_eq!(b[525] & 1, 1);
        assert_eq!(read::<u32>(&b, 536).map(|s| s & 3), Some(1));
        assert_eq!(&b[768..789], b"nqn.2016-06.io.keel:x");
        assert_eq!(b[789], 0);
        assert_eq!(read::<u32>(&b, 1792), Some((64 + 4096) / 16));
        assert_eq!(read::<u32>(&b, 1796), Some(1));
        assert_eq!(read::<u16>(&b, 1800), Some(0));
        assert_eq!(b[1803], 1);
        let d = controller(&CtrlrIdentity {
            discovery: true,
            ..ident()
        });
        assert_eq!(d[111], 2);
        assert_eq!(read::<u32>(&d, 516), Some(0));
        assert_eq!(read::<u32>(&d, 92), Some(1 << 31));
    }

    #[test]
    fn ns_list_is_filtered_and_bounded() {
        let b = active_ns_list([1, 2, 5, 9], 2);
        assert_eq!(read::<u32>(&b, 0), Some(5));
        assert_eq!(read::<u32>(&b, 4), Some(9));
        assert_eq!(read::<u32>(&b, 8), Some(0));
        let b = active_ns_list(1..=5000, 0);
        assert_eq!(read::<u32>(&b, 4092), Some(1024));
    }
}
