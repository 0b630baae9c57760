//! What this target reports in Identify data: controller, namespace, namespace
//! identification descriptors, and NVM command-set controller data. The layouts are
//! [`keel_nvme::identify`]'s; this module only chooses the values.

use super::logpage::ERROR_LOG_ENTRIES_0BASED;
use super::subsystem::Namespace;
use keel_nvme::identify::{
    mdts_for, IdentifyController, IdentifyControllerNvm, IdentifyNamespace, NsIdDescList,
    CMIC_MULTI_CTRL, CNTRLTYPE_DISCOVERY, CNTRLTYPE_IO, CTRATT_HOST_ID_128, DLFEAT_READ_ZEROES,
    DLFEAT_WRITE_ZEROES_DEALLOCATES, FCATT_DYNAMIC, LPA_CMD_EFFECTS, LPA_EXTENDED, NMIC_SHARED,
    OAES_DISCOVERY_CHANGE, OAES_NS_ATTR, ONCS_COMPARE, ONCS_DSM, ONCS_WRITE_ZEROES, SGLS_KEYED,
    SGLS_OFFSET, SGLS_SUPPORTED, VWC_NO_FLUSH_BROADCAST, VWC_PRESENT,
};
use keel_nvme::registers::Vs;

/// The NVMe version this target reports (VS property and Identify VER).
pub(crate) const NVME_VERSION: Vs = Vs::V1_3;

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
    /// Advertise Keyed SGL Data Blocks (RDMA controllers; TCP hosts never send them).
    pub keyed_sgls: bool,
}

/// The Identify Controller data structure.
pub(crate) fn controller(id: &CtrlrIdentity) -> IdentifyController {
    let mut c = IdentifyController::new();
    c.set_sn(id.serial);
    c.set_mn(id.model);
    c.set_fr(env!("CARGO_PKG_VERSION"));
    c.set_rab(6);
    if !id.discovery {
        c.set_cmic(CMIC_MULTI_CTRL);
        c.set_mdts(mdts_for(id.max_io_size));
    }
    c.set_cntlid(id.cntlid);
    c.set_ver(NVME_VERSION.encode());
    c.set_oaes(if id.discovery {
        OAES_DISCOVERY_CHANGE
    } else {
        OAES_NS_ATTR
    });
    c.set_ctratt(CTRATT_HOST_ID_128);
    c.set_cntrltype(if id.discovery {
        CNTRLTYPE_DISCOVERY
    } else {
        CNTRLTYPE_IO
    });
    c.set_acl(3); // four concurrent Aborts
    c.set_aerl(id.max_aers.saturating_sub(1));
    c.set_frmw(0x3); // one slot, slot 1 read-only
    c.set_lpa(LPA_CMD_EFFECTS | LPA_EXTENDED);
    c.set_elpe(ERROR_LOG_ENTRIES_0BASED);
    c.set_wctemp(0x0157); // 343 K
    c.set_cctemp(0x0175); // 373 K
    c.set_kas(id.kas);
    c.set_sqes(0x66);
    c.set_cqes(0x44);
    c.set_maxcmd(id.max_queue_depth);
    c.set_sgls(SGLS_SUPPORTED | SGLS_OFFSET | if id.keyed_sgls { SGLS_KEYED } else { 0 });
    if !id.discovery {
        c.set_nn(id.max_namespaces);
        c.set_oncs(ONCS_COMPARE | ONCS_DSM | ONCS_WRITE_ZEROES);
        c.set_vwc(VWC_PRESENT | VWC_NO_FLUSH_BROADCAST);
    }
    c.set_subnqn(id.subnqn);
    // NVMe-oF attributes.
    c.set_ioccsz((64 + id.in_capsule_data_size) / 16);
    c.set_iorcsz(1);
    c.set_icdoff(0);
    c.set_fcatt(FCATT_DYNAMIC);
    c.set_msdbd(1);
    // Power state 0: 25 W max power so tools print something sensible.
    c.set_power_state(0, 2500, 0, 0);
    c
}

/// The Identify Namespace data structure of an active namespace (`None` if its block size
/// is not a power of two of at least 512 bytes; `add_namespace` refuses such bdevs).
pub(crate) fn namespace(ns: &Namespace) -> Option<IdentifyNamespace> {
    let mut d = IdentifyNamespace::for_blocks(ns.num_blocks(), ns.block_size)?;
    d.set_nmic(NMIC_SHARED);
    if ns.reads_zeroes_after_unmap && ns.supports_unmap {
        d.set_dlfeat(DLFEAT_READ_ZEROES | DLFEAT_WRITE_ZEROES_DEALLOCATES);
    }
    d.set_nguid(ns.nguid);
    d.set_eui64(ns.eui64);
    Some(d)
}

/// The namespace identification descriptor list (EUI-64, NGUID, UUID; zero ones omitted).
pub(crate) fn ns_id_descriptors(ns: &Namespace) -> NsIdDescList {
    let mut l = NsIdDescList::new();
    l.push_eui64(ns.eui64);
    l.push_nguid(ns.nguid);
    l.push_uuid(ns.uuid.0);
    l
}

/// NVM command set specific Identify Controller data: no extra limits.
pub(crate) fn nvm_cs_controller() -> IdentifyControllerNvm {
    IdentifyControllerNvm::new()
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_nvme::bytes::read;

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
            keyed_sgls: true,
        }
    }

    #[test]
    fn keyed_sgls_only_for_rdma_controllers() {
        let sgls = |keyed| {
            let c = controller(&CtrlrIdentity {
                keyed_sgls: keyed,
                ..ident()
            });
            read::<u32>(c.as_bytes(), 536).unwrap()
        };
        assert_eq!(sgls(true), SGLS_SUPPORTED | SGLS_OFFSET | SGLS_KEYED);
        assert_eq!(sgls(false), SGLS_SUPPORTED | SGLS_OFFSET);
    }

    #[test]
    fn controller_fields_at_spec_offsets() {
        let c = controller(&ident());
        let b = c.as_bytes();
        assert_eq!(&b[4..24], b"SN1                 ");
        assert_eq!(&b[24..29], b"Model");
        assert_eq!(b[63], b' ');
        assert_eq!(b[76], 2);
        assert_eq!(b[77], 5);
        assert_eq!(read::<u16>(b, 78), Some(7));
        assert_eq!(read::<u32>(b, 80), Some(0x0001_0300));
        assert_eq!(read::<u32>(b, 92), Some(1 << 8));
        assert_eq!(read::<u32>(b, 96), Some(1));
        assert_eq!(b[111], 1);
        assert_eq!(b[259], 3);
        assert_eq!(b[261], 0b110);
        assert_eq!(b[262], 127);
        assert_eq!(read::<u16>(b, 320), Some(1));
        assert_eq!(b[512], 0x66);
        assert_eq!(b[513], 0x44);
        assert_eq!(read::<u16>(b, 514), Some(128));
        assert_eq!(read::<u32>(b, 516), Some(32));
        assert_eq!(read::<u16>(b, 520), Some(0b1101));
        assert_eq!(b[525], 0b101);
        assert_eq!(read::<u32>(b, 536), Some(1 | 1 << 2 | 1 << 20));
        assert_eq!(&b[768..789], b"nqn.2016-06.io.keel:x");
        assert_eq!(b[789], 0);
        assert_eq!(read::<u32>(b, 1792), Some((64 + 4096) / 16));
        assert_eq!(read::<u32>(b, 1796), Some(1));
        assert_eq!(read::<u16>(b, 1800), Some(0));
        assert_eq!(b[1803], 1);
        assert_eq!(read::<u16>(b, 2048), Some(2500));
        let d = controller(&CtrlrIdentity {
            discovery: true,
            ..ident()
        });
        let b = d.as_bytes();
        assert_eq!(b[111], 2);
        assert_eq!((b[76], b[77]), (0, 0));
        assert_eq!(read::<u32>(b, 516), Some(0));
        assert_eq!(read::<u16>(b, 520), Some(0));
        assert_eq!(b[525], 0);
        assert_eq!(read::<u32>(b, 92), Some(1 << 31));
        assert_eq!(read::<u16>(b, 514), Some(128));
    }

    #[test]
    fn small_transfers_never_report_no_limit() {
        // MDTS 0 would mean "no limit": the smallest limit reported is 8 KiB.
        let c = controller(&CtrlrIdentity {
            max_io_size: 4096,
            ..ident()
        });
        assert_eq!(c.mdts(), 1);
    }
}
