//! Identify (admin opcode 0x06, NVMe Base 2.0 §5.17): the command's fields, CNS values, and
//! the 4096-byte data structures a Linux or SPDK host reads while bringing a controller up —
//! Identify Controller, Identify Namespace (NVM command set), the active namespace list and
//! the namespace identification descriptor list. The structures are byte buffers with
//! accessors at the spec's offsets; their tests check each offset against the spec's figure.

use super::bytes::{self, le_fields};
use super::cmd::NvmeCmd;
use super::opcode::admin;
use super::status::Status;

/// Size of every Identify data structure.
pub const IDENTIFY_DATA_SIZE: usize = 4096;

/// CNS: Identify Namespace (NVM command set) for NSID.
pub const CNS_NAMESPACE: u8 = 0x00;
/// CNS: Identify Controller.
pub const CNS_CONTROLLER: u8 = 0x01;
/// CNS: active namespace ID list (NSIDs greater than NSID).
pub const CNS_ACTIVE_NS_LIST: u8 = 0x02;
/// CNS: namespace identification descriptor list for NSID.
pub const CNS_NS_ID_DESCRIPTORS: u8 = 0x03;
/// CNS: NVM set list.
pub const CNS_NVM_SET_LIST: u8 = 0x04;
/// CNS: I/O command set specific Identify Namespace.
pub const CNS_IOCS_NAMESPACE: u8 = 0x05;
/// CNS: I/O command set specific Identify Controller.
pub const CNS_IOCS_CONTROLLER: u8 = 0x06;
/// CNS: I/O command set specific active namespace list.
pub const CNS_IOCS_ACTIVE_NS_LIST: u8 = 0x07;
/// CNS: I/O command set independent Identify Namespace.
pub const CNS_NS_INDEPENDENT: u8 = 0x08;
/// CNS: allocated namespace ID list.
pub const CNS_ALLOCATED_NS_LIST: u8 = 0x10;
/// CNS: controller list attached to NSID.
pub const CNS_NS_CONTROLLER_LIST: u8 = 0x12;
/// CNS: controller list in the NVM subsystem.
pub const CNS_CONTROLLER_LIST: u8 = 0x13;
/// CNS: UUID list.
pub const CNS_UUID_LIST: u8 = 0x17;
/// CNS: I/O command set data structure (command set combinations).
pub const CNS_IO_COMMAND_SETS: u8 = 0x1C;

/// NSID meaning "all namespaces" (broadcast).
pub const NSID_ALL: u32 = 0xFFFF_FFFF;

/// The fields of an Identify command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IdentifyCmd {
    /// Controller or namespace structure (CDW10 bits 7:0).
    pub cns: u8,
    /// Controller identifier (CDW10 bits 31:16).
    pub cntid: u16,
    /// Namespace identifier.
    pub nsid: u32,
    /// CNS specific identifier (CDW11 bits 15:0).
    pub cns_specific_id: u16,
    /// Command set identifier (CDW11 bits 31:24).
    pub csi: u8,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
}

impl IdentifyCmd {
    /// Decode an Identify command (Invalid Opcode if `cmd` is something else). Whether the
    /// CNS is supported and the NSID valid for it is the caller's to check.
    pub fn decode(cmd: &NvmeCmd) -> Result<IdentifyCmd, Status> {
        if cmd.opc != admin::IDENTIFY {
            return Err(Status::INVALID_OPCODE);
        }
        Ok(IdentifyCmd {
            cns: cmd.cdw10 as u8,
            cntid: (cmd.cdw10 >> 16) as u16,
            nsid: cmd.nsid,
            cns_specific_id: cmd.cdw11 as u16,
            csi: (cmd.cdw11 >> 24) as u8,
            uuid_index: (cmd.cdw14 & 0x7f) as u8,
        })
    }
}

/// CMIC bit: the subsystem may have more than one port.
pub const CMIC_MULTI_PORT: u8 = 1 << 0;
/// CMIC bit: the subsystem may have more than one controller (enables host multipath).
pub const CMIC_MULTI_CTRL: u8 = 1 << 1;
/// CMIC bit: asymmetric namespace access reporting.
pub const CMIC_ANA: u8 = 1 << 3;
/// OAES bit: namespace attribute notices.
pub const OAES_NS_ATTR: u32 = 1 << 8;
/// OAES bit: firmware activation notices.
pub const OAES_FW_ACTIVATION: u32 = 1 << 9;
/// OAES bit: ANA change notices.
pub const OAES_ANA_CHANGE: u32 = 1 << 11;
/// OAES bit: discovery log page change notices (discovery controllers).
pub const OAES_DISCOVERY_CHANGE: u32 = 1 << 31;
/// CTRATT bit: 128-bit host identifier supported.
pub const CTRATT_HOST_ID_128: u32 = 1 << 0;
/// CNTRLTYPE: I/O controller.
pub const CNTRLTYPE_IO: u8 = 1;
/// CNTRLTYPE: discovery controller.
pub const CNTRLTYPE_DISCOVERY: u8 = 2;
/// CNTRLTYPE: administrative controller.
pub const CNTRLTYPE_ADMIN: u8 = 3;
/// LPA bit: SMART/health log per namespace.
pub const LPA_SMART_PER_NS: u8 = 1 << 0;
/// LPA bit: commands supported and effects log page.
pub const LPA_CMD_EFFECTS: u8 = 1 << 1;
/// LPA bit: extended data for Get Log Page (NUMDU, LPOL/LPOU).
pub const LPA_EXTENDED: u8 = 1 << 2;
/// ONCS bit: Compare.
pub const ONCS_COMPARE: u16 = 1 << 0;
/// ONCS bit: Write Uncorrectable.
pub const ONCS_WRITE_UNCORRECTABLE: u16 = 1 << 1;
/// ONCS bit: Dataset Management.
pub const ONCS_DSM: u16 = 1 << 2;
/// ONCS bit: Write Zeroes.
pub const ONCS_WRITE_ZEROES: u16 = 1 << 3;
/// ONCS bit: Save field in Set Features / Select field in Get Features.
pub const ONCS_SAVE_SELECT: u16 = 1 << 4;
/// ONCS bit: Reservations.
pub const ONCS_RESERVATIONS: u16 = 1 << 5;
/// ONCS bit: Timestamp feature.
pub const ONCS_TIMESTAMP: u16 = 1 << 6;
/// ONCS bit: Verify.
pub const ONCS_VERIFY: u16 = 1 << 7;
/// FUSES bit: Compare and Write.
pub const FUSES_COMPARE_AND_WRITE: u16 = 1 << 0;
/// VWC bit: a volatile write cache is present.
pub const VWC_PRESENT: u8 = 1 << 0;
/// VWC bits 2:1 = 11b: Flush with NSID FFFFFFFFh is supported.
pub const VWC_FLUSH_BROADCAST: u8 = 0b11 << 1;
/// VWC bits 2:1 = 10b: Flush with NSID FFFFFFFFh is not supported.
pub const VWC_NO_FLUSH_BROADCAST: u8 = 0b10 << 1;
/// SGLS bits 1:0 = 01b: SGLs supported, no alignment requirement.
pub const SGLS_SUPPORTED: u32 = 0b01;
/// SGLS bits 1:0 = 10b: SGLs supported, dword aligned.
pub const SGLS_SUPPORTED_DWORD_ALIGNED: u32 = 0b10;
/// SGLS bit: Keyed SGL Data Block descriptors (RDMA).
pub const SGLS_KEYED: u32 = 1 << 2;
/// SGLS bit: SGL Bit Bucket descriptors.
pub const SGLS_BIT_BUCKET: u32 = 1 << 16;
/// SGLS bit: the address of a Data Block may be an offset (in-capsule data).
pub const SGLS_OFFSET: u32 = 1 << 20;
/// SGLS bit: Transport SGL Data Block descriptors (TCP).
pub const SGLS_TRANSPORT_DATA_BLOCK: u32 = 1 << 21;
/// OFCS bit: Disconnect command supported.
pub const OFCS_DISCONNECT: u16 = 1 << 0;
/// FCATT bit 0 clear: dynamic controller model.
pub const FCATT_DYNAMIC: u8 = 0;

/// MDTS for a maximum transfer of `max_io_bytes`, in units of the minimum memory page size
/// (4 KiB for CAP.MPSMIN = 0): the largest n ≥ 1 with 2^n pages ≤ `max_io_bytes`. MDTS 0
/// means "no limit", so the smallest limit it can express is 8 KiB; smaller sizes report
/// that (configure at least 8 KiB).
pub fn mdts_for(max_io_bytes: u32) -> u8 {
    let pages = max_io_bytes / 4096;
    if pages < 2 {
        1
    } else {
        (31 - pages.leading_zeros()) as u8
    }
}

/// Identify Controller data (CNS 01h), 4096 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentifyController {
    buf: [u8; IDENTIFY_DATA_SIZE],
}

impl Default for IdentifyController {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IdentifyController {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyController")
            .field("cntlid", &self.cntlid())
            .field("ver", &format_args!("{:#x}", self.ver()))
            .field("nn", &self.nn())
            .finish_non_exhaustive()
    }
}

impl IdentifyController {
    /// All zeroes.
    pub fn new() -> IdentifyController {
        IdentifyController {
            buf: [0; IDENTIFY_DATA_SIZE],
        }
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTIFY_DATA_SIZE] {
        &self.buf
    }

    le_fields! { IDENTIFY_DATA_SIZE;
        /// PCI vendor id.
        vid / set_vid: u16 = 0;
        /// PCI subsystem vendor id.
        ssvid / set_ssvid: u16 = 2;
        /// Recommended arbitration burst.
        rab / set_rab: u8 = 72;
        /// Multi-path I/O and namespace sharing capabilities ([`CMIC_MULTI_CTRL`], ...).
        cmic / set_cmic: u8 = 76;
        /// Maximum data transfer size, 2^n minimum pages; 0 = no limit ([`mdts_for`]).
        mdts / set_mdts: u8 = 77;
        /// Controller id.
        cntlid / set_cntlid: u16 = 78;
        /// Version (same encoding as the VS property).
        ver / set_ver: u32 = 80;
        /// RTD3 resume latency (µs).
        rtd3r / set_rtd3r: u32 = 84;
        /// RTD3 entry latency (µs).
        rtd3e / set_rtd3e: u32 = 88;
        /// Optional asynchronous events supported ([`OAES_NS_ATTR`], ...).
        oaes / set_oaes: u32 = 92;
        /// Controller attributes ([`CTRATT_HOST_ID_128`], ...).
        ctratt / set_ctratt: u32 = 96;
        /// Read recovery levels supported.
        rrls / set_rrls: u16 = 100;
        /// Controller type ([`CNTRLTYPE_IO`], [`CNTRLTYPE_DISCOVERY`]).
        cntrltype / set_cntrltype: u8 = 111;
        /// Command retry delay time 1 (100 ms units).
        crdt1 / set_crdt1: u16 = 128;
        /// Command retry delay time 2.
        crdt2 / set_crdt2: u16 = 130;
        /// Command retry delay time 3.
        crdt3 / set_crdt3: u16 = 132;
        /// Optional admin command support.
        oacs / set_oacs: u16 = 256;
        /// Abort command limit, 0-based.
        acl / set_acl: u8 = 258;
        /// Asynchronous event request limit, 0-based.
        aerl / set_aerl: u8 = 259;
        /// Firmware updates (slot 1 read-only bit 0, number of slots bits 3:1).
        frmw / set_frmw: u8 = 260;
        /// Log page attributes ([`LPA_EXTENDED`], ...).
        lpa / set_lpa: u8 = 261;
        /// Error log page entries, 0-based.
        elpe / set_elpe: u8 = 262;
        /// Number of power states supported, 0-based.
        npss / set_npss: u8 = 263;
        /// Admin vendor specific command configuration.
        avscc / set_avscc: u8 = 264;
        /// Autonomous power state transition attributes.
        apsta / set_apsta: u8 = 265;
        /// Warning composite temperature threshold (K).
        wctemp / set_wctemp: u16 = 266;
        /// Critical composite temperature threshold (K).
        cctemp / set_cctemp: u16 = 268;
        /// Maximum time for firmware activation (100 ms units).
        mtfa / set_mtfa: u16 = 270;
        /// Host memory buffer preferred size (4 KiB units).
        hmpre / set_hmpre: u32 = 272;
        /// Host memory buffer minimum size.
        hmmin / set_hmmin: u32 = 276;
        /// Total NVM capacity (bytes).
        tnvmcap / set_tnvmcap: u128 = 280;
        /// Unallocated NVM capacity (bytes).
        unvmcap / set_unvmcap: u128 = 296;
        /// Replay protected memory block support.
        rpmbs / set_rpmbs: u32 = 312;
        /// Extended device self-test time (minutes).
        edstt / set_edstt: u16 = 316;
        /// Device self-test options.
        dsto / set_dsto: u8 = 318;
        /// Firmware update granularity (4 KiB units).
        fwug / set_fwug: u8 = 319;
        /// Keep alive support: granularity of the keep alive timer in 100 ms units (0 = no
        /// keep alive).
        kas / set_kas: u16 = 320;
        /// Host controlled thermal management attributes.
        hctma / set_hctma: u16 = 322;
        /// Minimum thermal management temperature.
        mntmt / set_mntmt: u16 = 324;
        /// Maximum thermal management temperature.
        mxtmt / set_mxtmt: u16 = 326;
        /// Sanitize capabilities.
        sanicap / set_sanicap: u32 = 328;
        /// Host memory buffer minimum descriptor entry size.
        hmminds / set_hmminds: u32 = 332;
        /// Host memory maximum descriptor entries.
        hmmaxd / set_hmmaxd: u16 = 336;
        /// NVM set identifier maximum.
        nsetidmax / set_nsetidmax: u16 = 338;
        /// Endurance group identifier maximum.
        endgidmax / set_endgidmax: u16 = 340;
        /// ANA transition time (seconds).
        anatt / set_anatt: u8 = 342;
        /// ANA capabilities.
        anacap / set_anacap: u8 = 343;
        /// ANA group identifier maximum.
        anagrpmax / set_anagrpmax: u32 = 344;
        /// Number of ANA group identifiers.
        nanagrpid / set_nanagrpid: u32 = 348;
        /// Persistent event log size (64 KiB units).
        pels / set_pels: u32 = 352;
        /// Domain identifier.
        domainid / set_domainid: u16 = 356;
        /// Submission queue entry size: required (bits 3:0) and maximum (bits 7:4), 2^n.
        sqes / set_sqes: u8 = 512;
        /// Completion queue entry size: required (bits 3:0) and maximum (bits 7:4), 2^n.
        cqes / set_cqes: u8 = 513;
        /// Maximum outstanding commands (fabrics).
        maxcmd / set_maxcmd: u16 = 514;
        /// Number of namespaces (the largest valid NSID).
        nn / set_nn: u32 = 516;
        /// Optional NVM command support ([`ONCS_COMPARE`], [`ONCS_DSM`], ...).
        oncs / set_oncs: u16 = 520;
        /// Fused operation support.
        fuses / set_fuses: u16 = 522;
        /// Format NVM attributes.
        fna / set_fna: u8 = 524;
        /// Volatile write cache ([`VWC_PRESENT`], [`VWC_FLUSH_BROADCAST`]).
        vwc / set_vwc: u8 = 525;
        /// Atomic write unit normal, 0-based blocks.
        awun / set_awun: u16 = 526;
        /// Atomic write unit power fail, 0-based blocks.
        awupf / set_awupf: u16 = 528;
        /// I/O command set vendor specific command configuration.
        nvscc / set_nvscc: u8 = 530;
        /// Namespace write protection capabilities.
        nwpc / set_nwpc: u8 = 531;
        /// Atomic compare and write unit, 0-based blocks.
        acwu / set_acwu: u16 = 532;
        /// Copy formats supported.
        ocfs / set_ocfs: u16 = 534;
        /// SGL support ([`SGLS_SUPPORTED`], [`SGLS_KEYED`], [`SGLS_OFFSET`], ...).
        sgls / set_sgls: u32 = 536;
        /// Maximum number of allowed namespaces.
        mnan / set_mnan: u32 = 540;
        /// Maximum domain namespace attachments.
        maxdna / set_maxdna: u128 = 544;
        /// Maximum I/O controller namespace attachments.
        maxcna / set_maxcna: u32 = 560;
        /// I/O queue command capsule supported size, in 16-byte units (SQE + in-capsule data).
        ioccsz / set_ioccsz: u32 = 1792;
        /// I/O queue response capsule supported size, in 16-byte units.
        iorcsz / set_iorcsz: u32 = 1796;
        /// In-capsule data offset, in 16-byte units (0: data right after the SQE).
        icdoff / set_icdoff: u16 = 1800;
        /// Fabrics controller attributes (bit 0: static controller model).
        fcatt / set_fcatt: u8 = 1802;
        /// Maximum SGL data block descriptors per command (0 = no limit).
        msdbd / set_msdbd: u8 = 1803;
        /// Optional fabric commands supported ([`OFCS_DISCONNECT`]).
        ofcs / set_ofcs: u16 = 1804;
        /// Discovery controller type (1 direct, 2 central).
        dctype / set_dctype: u8 = 1806;
    }

    /// Serial number (20 bytes, ASCII, space padded). Returns false if cut.
    pub fn set_sn(&mut self, sn: &str) -> bool {
        bytes::put_str(&mut self.buf[4..24], sn, b' ')
    }
    /// Serial number field.
    pub fn sn(&self) -> &[u8; 20] {
        self.buf[4..24].try_into().expect("20-byte field")
    }
    /// Model number (40 bytes, ASCII, space padded). Returns false if cut.
    pub fn set_mn(&mut self, mn: &str) -> bool {
        bytes::put_str(&mut self.buf[24..64], mn, b' ')
    }
    /// Model number field.
    pub fn mn(&self) -> &[u8; 40] {
        self.buf[24..64].try_into().expect("40-byte field")
    }
    /// Firmware revision (8 bytes, ASCII, space padded). Returns false if cut.
    pub fn set_fr(&mut self, fr: &str) -> bool {
        bytes::put_str(&mut self.buf[64..72], fr, b' ')
    }
    /// Firmware revision field.
    pub fn fr(&self) -> &[u8; 8] {
        self.buf[64..72].try_into().expect("8-byte field")
    }
    /// IEEE OUI identifier (3 bytes, least significant byte first).
    pub fn set_ieee(&mut self, oui: [u8; 3]) {
        self.buf[73..76].copy_from_slice(&oui);
    }
    /// IEEE OUI identifier.
    pub fn ieee(&self) -> [u8; 3] {
        [self.buf[73], self.buf[74], self.buf[75]]
    }
    /// FRU globally unique identifier (16 bytes).
    pub fn set_fguid(&mut self, g: [u8; 16]) {
        self.buf[112..128].copy_from_slice(&g);
    }
    /// NVM subsystem NQN (256 bytes, UTF-8, NUL padded; at most 223 bytes fit with the NUL).
    /// Returns false if cut.
    pub fn set_subnqn(&mut self, nqn: &str) -> bool {
        // Byte 1023 is never written: the field stays NUL-terminated.
        bytes::put_str(&mut self.buf[768..768 + 255], nqn, 0)
    }
    /// Subsystem NQN field.
    pub fn subnqn(&self) -> &[u8; 256] {
        self.buf[768..1024].try_into().expect("256-byte field")
    }
    /// Power state descriptor `i` (0..32): maximum power in centiwatts, and entry/exit
    /// latencies in µs. Other descriptor fields stay zero. Returns false if `i` ≥ 32.
    pub fn set_power_state(&mut self, i: usize, max_power_cw: u16, enlat: u32, exlat: u32) -> bool {
        if i >= 32 {
            return false;
        }
        let base = 2048 + 32 * i;
        bytes::write(&mut self.buf, base, max_power_cw);
        bytes::write(&mut self.buf, base + 4, enlat);
        bytes::write(&mut self.buf, base + 8, exlat)
    }
}

/// NVM command set specific Identify Controller data (CNS 06h, CSI 00h; NVM Command Set
/// 1.0 §4.1.5.3), 4096 bytes: the size limits of Verify, Write Zeroes, Write
/// Uncorrectable and Dataset Management. All zeroes means "no limit beyond MDTS".
#[derive(Clone, PartialEq, Eq)]
pub struct IdentifyControllerNvm {
    buf: [u8; IDENTIFY_DATA_SIZE],
}

impl Default for IdentifyControllerNvm {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IdentifyControllerNvm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyControllerNvm")
            .field("wzsl", &self.wzsl())
            .field("dmrl", &self.dmrl())
            .finish_non_exhaustive()
    }
}

impl IdentifyControllerNvm {
    /// All zeroes: no extra limits.
    pub fn new() -> IdentifyControllerNvm {
        IdentifyControllerNvm {
            buf: [0; IDENTIFY_DATA_SIZE],
        }
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTIFY_DATA_SIZE] {
        &self.buf
    }

    le_fields! { IDENTIFY_DATA_SIZE;
        /// Verify size limit, 2^n minimum pages (0 = no limit).
        vsl / set_vsl: u8 = 0;
        /// Write Zeroes size limit, 2^n minimum pages (0 = no limit).
        wzsl / set_wzsl: u8 = 1;
        /// Write Uncorrectable size limit, 2^n minimum pages (0 = no limit).
        wusl / set_wusl: u8 = 2;
        /// Dataset Management ranges limit (0 = no limit beyond the command's 256).
        dmrl / set_dmrl: u8 = 3;
        /// Dataset Management range size limit, logical blocks (0 = no limit).
        dmrsl / set_dmrsl: u32 = 4;
        /// Dataset Management size limit, logical blocks (0 = no limit).
        dmsl / set_dmsl: u64 = 8;
    }
}

/// NSFEAT bit: thin provisioning (NUSE may be less than NCAP).
pub const NSFEAT_THIN: u8 = 1 << 0;
/// NSFEAT bit: NAWUN/NAWUPF/NACWU are valid.
pub const NSFEAT_ATOMICS: u8 = 1 << 1;
/// NSFEAT bit: deallocated or unwritten logical block error support.
pub const NSFEAT_DAE: u8 = 1 << 2;
/// NSFEAT bit: NPWG/NPWA/NPDG/NPDA/NOWS are valid.
pub const NSFEAT_OPTPERF: u8 = 1 << 4;
/// NMIC bit: the namespace may be attached to more than one controller.
pub const NMIC_SHARED: u8 = 1 << 0;
/// DLFEAT bits 2:0 = 001b: deallocated blocks read back as zeroes.
pub const DLFEAT_READ_ZEROES: u8 = 0b001;
/// DLFEAT bit: Write Zeroes with DEAC deallocates.
pub const DLFEAT_WRITE_ZEROES_DEALLOCATES: u8 = 1 << 3;
/// RESCAP bit: persist through power loss.
pub const RESCAP_PTPL: u8 = 1 << 0;
/// RESCAP bits 6:1: all six reservation types (write exclusive, exclusive access, and their
/// registrants-only and all-registrants variants).
pub const RESCAP_ALL_TYPES: u8 = 0b0111_1110;
/// RESCAP bit: Ignore Existing Key semantics as in NVMe 1.3 and later.
pub const RESCAP_IEKEY: u8 = 1 << 7;

/// Identify Namespace data for the NVM command set (CNS 00h), 4096 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct IdentifyNamespace {
    buf: [u8; IDENTIFY_DATA_SIZE],
}

impl Default for IdentifyNamespace {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for IdentifyNamespace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IdentifyNamespace")
            .field("nsze", &self.nsze())
            .field("flbas", &self.flbas())
            .finish_non_exhaustive()
    }
}

impl IdentifyNamespace {
    /// All zeroes (also the answer for an allocated but inactive NSID).
    pub fn new() -> IdentifyNamespace {
        IdentifyNamespace {
            buf: [0; IDENTIFY_DATA_SIZE],
        }
    }
    /// A namespace of `num_blocks` blocks of `block_size` bytes, one LBA format (index 0,
    /// no metadata), fully allocated: NSZE = NCAP = NUSE = `num_blocks`. `None` if the block
    /// size is not a power of two from 512 bytes up.
    pub fn for_blocks(num_blocks: u64, block_size: u32) -> Option<IdentifyNamespace> {
        let mut ns = IdentifyNamespace::new();
        if !ns.set_lba_format(0, block_size, 0) {
            return None;
        }
        ns.set_nsze(num_blocks);
        ns.set_ncap(num_blocks);
        ns.set_nuse(num_blocks);
        ns.set_nlbaf(0);
        ns.set_flbas(0);
        Some(ns)
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTIFY_DATA_SIZE] {
        &self.buf
    }

    le_fields! { IDENTIFY_DATA_SIZE;
        /// Namespace size (blocks).
        nsze / set_nsze: u64 = 0;
        /// Namespace capacity (blocks that may be allocated).
        ncap / set_ncap: u64 = 8;
        /// Namespace utilization (blocks allocated).
        nuse / set_nuse: u64 = 16;
        /// Namespace features ([`NSFEAT_THIN`], ...).
        nsfeat / set_nsfeat: u8 = 24;
        /// Number of LBA formats, 0-based.
        nlbaf / set_nlbaf: u8 = 25;
        /// Formatted LBA size: format index (bits 3:0), metadata at end of LBA (bit 4).
        flbas / set_flbas: u8 = 26;
        /// Metadata capabilities.
        mc / set_mc: u8 = 27;
        /// End-to-end data protection capabilities.
        dpc / set_dpc: u8 = 28;
        /// End-to-end data protection type settings.
        dps / set_dps: u8 = 29;
        /// Multi-path I/O and namespace sharing ([`NMIC_SHARED`]).
        nmic / set_nmic: u8 = 30;
        /// Reservation capabilities ([`RESCAP_ALL_TYPES`], ...).
        rescap / set_rescap: u8 = 31;
        /// Format progress indicator.
        fpi / set_fpi: u8 = 32;
        /// Deallocate logical block features ([`DLFEAT_READ_ZEROES`], ...).
        dlfeat / set_dlfeat: u8 = 33;
        /// Namespace atomic write unit normal, 0-based blocks.
        nawun / set_nawun: u16 = 34;
        /// Namespace atomic write unit power fail, 0-based blocks.
        nawupf / set_nawupf: u16 = 36;
        /// Namespace atomic compare and write unit, 0-based blocks.
        nacwu / set_nacwu: u16 = 38;
        /// Namespace atomic boundary size normal.
        nabsn / set_nabsn: u16 = 40;
        /// Namespace atomic boundary offset.
        nabo / set_nabo: u16 = 42;
        /// Namespace atomic boundary size power fail.
        nabspf / set_nabspf: u16 = 44;
        /// Namespace optimal I/O boundary (blocks).
        noiob / set_noiob: u16 = 46;
        /// NVM capacity (bytes).
        nvmcap / set_nvmcap: u128 = 48;
        /// Namespace preferred write granularity, 0-based blocks.
        npwg / set_npwg: u16 = 64;
        /// Namespace preferred write alignment, 0-based blocks.
        npwa / set_npwa: u16 = 66;
        /// Namespace preferred deallocate granularity, 0-based blocks.
        npdg / set_npdg: u16 = 68;
        /// Namespace preferred deallocate alignment, 0-based blocks.
        npda / set_npda: u16 = 70;
        /// Namespace optimal write size, 0-based blocks.
        nows / set_nows: u16 = 72;
        /// Maximum single source range length (Copy).
        mssrl / set_mssrl: u16 = 74;
        /// Maximum copy length (Copy).
        mcl / set_mcl: u32 = 76;
        /// Maximum source range count, 0-based (Copy).
        msrc / set_msrc: u8 = 80;
        /// ANA group identifier.
        anagrpid / set_anagrpid: u32 = 92;
        /// Namespace attributes (bit 0: write protected).
        nsattr / set_nsattr: u8 = 99;
        /// NVM set identifier.
        nvmsetid / set_nvmsetid: u16 = 100;
        /// Endurance group identifier.
        endgid / set_endgid: u16 = 102;
    }

    /// Namespace globally unique identifier (16 bytes).
    pub fn set_nguid(&mut self, nguid: [u8; 16]) {
        self.buf[104..120].copy_from_slice(&nguid);
    }
    /// NGUID.
    pub fn nguid(&self) -> [u8; 16] {
        let mut g = [0u8; 16];
        g.copy_from_slice(&self.buf[104..120]);
        g
    }
    /// IEEE extended unique identifier (8 bytes).
    pub fn set_eui64(&mut self, eui: [u8; 8]) {
        self.buf[120..128].copy_from_slice(&eui);
    }
    /// EUI64.
    pub fn eui64(&self) -> [u8; 8] {
        let mut e = [0u8; 8];
        e.copy_from_slice(&self.buf[120..128]);
        e
    }
    /// LBA format `i` (0..64): `block_size` (power of two ≥ 512) bytes of data and
    /// `metadata_size` bytes of metadata, relative performance "best". Returns false if `i`
    /// or `block_size` is out of range.
    pub fn set_lba_format(&mut self, i: usize, block_size: u32, metadata_size: u16) -> bool {
        if i >= 64 || !block_size.is_power_of_two() || block_size < 512 {
            return false;
        }
        let lbads = block_size.trailing_zeros();
        bytes::write(
            &mut self.buf,
            128 + 4 * i,
            metadata_size as u32 | lbads << 16,
        )
    }
    /// LBA format `i` as (metadata size, LBA data size as a power of two, relative
    /// performance), or `None` past the 64 formats.
    pub fn lba_format(&self, i: usize) -> Option<(u16, u8, u8)> {
        if i >= 64 {
            return None;
        }
        let v: u32 = bytes::read(&self.buf, 128 + 4 * i)?;
        Some((v as u16, (v >> 16) as u8, (v >> 24 & 0x3) as u8))
    }
}

/// A list of up to 1024 NSIDs (4096 bytes): the Identify active namespace list (CNS 02h)
/// and the Changed Namespace List log page (04h).
#[derive(Clone, PartialEq, Eq)]
pub struct NsList {
    buf: [u8; IDENTIFY_DATA_SIZE],
}

impl std::fmt::Debug for NsList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl NsList {
    /// Entries a list holds.
    pub const CAPACITY: usize = 1024;

    /// The active namespace list for Identify CNS 02h: the NSIDs in `nsids` greater than
    /// `after`, ascending, at most 1024. `after` of FFFFFFFEh or FFFFFFFFh is Invalid
    /// Namespace or Format (spec).
    pub fn active(nsids: impl IntoIterator<Item = u32>, after: u32) -> Result<NsList, Status> {
        if after >= 0xFFFF_FFFE {
            return Err(Status::INVALID_NAMESPACE_OR_FORMAT);
        }
        let mut ids: Vec<u32> = nsids.into_iter().filter(|&n| n > after && n != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut l = NsList {
            buf: [0; IDENTIFY_DATA_SIZE],
        };
        for (i, id) in ids.iter().take(Self::CAPACITY).enumerate() {
            bytes::write(&mut l.buf, 4 * i, *id);
        }
        Ok(l)
    }
    /// The Changed Namespace List log page: the NSIDs in `nsids` (ascending, deduplicated);
    /// more than 1024 are reported as a single FFFFFFFFh entry, as the spec asks.
    pub fn changed(nsids: impl IntoIterator<Item = u32>) -> NsList {
        let mut ids: Vec<u32> = nsids.into_iter().filter(|&n| n != 0).collect();
        ids.sort_unstable();
        ids.dedup();
        let mut l = NsList {
            buf: [0; IDENTIFY_DATA_SIZE],
        };
        if ids.len() > Self::CAPACITY {
            bytes::write(&mut l.buf, 0, NSID_ALL);
        } else {
            for (i, id) in ids.iter().enumerate() {
                bytes::write(&mut l.buf, 4 * i, *id);
            }
        }
        l
    }
    /// The listed NSIDs (up to the first zero entry).
    pub fn iter(&self) -> impl Iterator<Item = u32> + '_ {
        self.buf
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .take_while(|&n| n != 0)
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; IDENTIFY_DATA_SIZE] {
        &self.buf
    }
}

/// Namespace identifier type: IEEE EUI-64 (8 bytes).
pub const NIDT_EUI64: u8 = 0x01;
/// Namespace identifier type: NGUID (16 bytes).
pub const NIDT_NGUID: u8 = 0x02;
/// Namespace identifier type: UUID (16 bytes).
pub const NIDT_UUID: u8 = 0x03;
/// Namespace identifier type: command set identifier (1 byte).
pub const NIDT_CSI: u8 = 0x04;
/// Command set identifier of the NVM command set.
pub const CSI_NVM: u8 = 0x00;

/// The namespace identification descriptor list (CNS 03h): descriptors of a 4-byte header
/// (NIDT, NIDL, 2 reserved) followed by NIDL bytes of identifier, ended by a zero header.
#[derive(Clone, PartialEq, Eq)]
pub struct NsIdDescList {
    buf: [u8; IDENTIFY_DATA_SIZE],
    len: usize,
}

impl Default for NsIdDescList {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for NsIdDescList {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NsIdDescList")
            .field("len", &self.len)
            .finish()
    }
}

impl NsIdDescList {
    /// An empty list.
    pub fn new() -> NsIdDescList {
        NsIdDescList {
            buf: [0; IDENTIFY_DATA_SIZE],
            len: 0,
        }
    }
    /// Append a descriptor of type `nidt`. Returns false (appending nothing) if the
    /// identifier is empty or all zeroes (not a valid identifier), or does not fit (a zero
    /// header must remain after it).
    pub fn push(&mut self, nidt: u8, id: &[u8]) -> bool {
        if nidt == 0 || id.is_empty() || id.len() > 255 {
            return false;
        }
        if nidt != NIDT_CSI && id.iter().all(|&b| b == 0) {
            return false;
        }
        let end = self.len + 4 + id.len();
        if end + 4 > IDENTIFY_DATA_SIZE {
            return false;
        }
        self.buf[self.len] = nidt;
        self.buf[self.len + 1] = id.len() as u8;
        self.buf[self.len + 4..end].copy_from_slice(id);
        self.len = end;
        true
    }
    /// Append an EUI-64 descriptor (skipped if all zeroes).
    pub fn push_eui64(&mut self, eui: [u8; 8]) -> bool {
        self.push(NIDT_EUI64, &eui)
    }
    /// Append an NGUID descriptor (skipped if all zeroes).
    pub fn push_nguid(&mut self, nguid: [u8; 16]) -> bool {
        self.push(NIDT_NGUID, &nguid)
    }
    /// Append a UUID descriptor (skipped if all zeroes).
    pub fn push_uuid(&mut self, uuid: [u8; 16]) -> bool {
        self.push(NIDT_UUID, &uuid)
    }
    /// Append a command set identifier descriptor.
    pub fn push_csi(&mut self, csi: u8) -> bool {
        self.push(NIDT_CSI, &[csi])
    }
    /// The descriptors as (NIDT, identifier) pairs.
    pub fn iter(&self) -> impl Iterator<Item = (u8, &[u8])> + '_ {
        let mut off = 0;
        std::iter::from_fn(move || {
            let nidt = *self.buf.get(off)?;
            let nidl = *self.buf.get(off + 1)? as usize;
            if nidt == 0 || nidl == 0 {
                return None;
            }
            let id = self.buf.get(off + 4..off + 4 + nidl)?;
            off += 4 + nidl;
            Some((nidt, id))
        })
    }
    /// The wire bytes (always 4096).
    pub fn as_bytes(&self) -> &[u8; IDENTIFY_DATA_SIZE] {
        &self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identify_command_fields() {
        let cmd = NvmeCmd {
            opc: admin::IDENTIFY,
            nsid: 7,
            cdw10: 0x0012_0001,
            cdw11: 0x0200_0005,
            cdw14: 0xff,
            ..NvmeCmd::default()
        };
        let id = IdentifyCmd::decode(&cmd).unwrap();
        assert_eq!(id.cns, CNS_CONTROLLER);
        assert_eq!(id.cntid, 0x12);
        assert_eq!(id.nsid, 7);
        assert_eq!(id.cns_specific_id, 5);
        assert_eq!(id.csi, 2);
        assert_eq!(id.uuid_index, 0x7f);
        let other = NvmeCmd {
            opc: admin::GET_LOG_PAGE,
            ..cmd
        };
        assert_eq!(IdentifyCmd::decode(&other), Err(Status::INVALID_OPCODE));
    }

    /// Set each field to a distinctive value and find it at the spec's offset.
    #[test]
    #[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one line per Identify field
    fn controller_offsets_match_the_spec() {
        let mut c = IdentifyController::new();
        let b =
            |c: &IdentifyController, off: usize, len: usize| c.as_bytes()[off..off + len].to_vec();
        c.set_vid(0x1b36);
        assert_eq!(b(&c, 0, 2), [0x36, 0x1b]);
        c.set_ssvid(0xa1a2);
        assert_eq!(b(&c, 2, 2), [0xa2, 0xa1]);
        assert!(c.set_sn("SPDK0001"));
        assert_eq!(&b(&c, 4, 20), b"SPDK0001            ");
        assert!(c.set_mn("Keel bdev controller"));
        assert_eq!(&b(&c, 24, 40)[..20], b"Keel bdev controller");
        assert_eq!(b(&c, 63, 1), b" ");
        assert!(c.set_fr("0.1"));
        assert_eq!(&b(&c, 64, 8), b"0.1     ");
        assert!(!c.set_fr("123456789"));
        assert_eq!(&b(&c, 64, 8), b"12345678");
        c.set_rab(6);
        assert_eq!(b(&c, 72, 1), [6]);
        c.set_ieee([0x38, 0x25, 0x00]);
        assert_eq!(b(&c, 73, 3), [0x38, 0x25, 0x00]);
        c.set_cmic(CMIC_MULTI_CTRL);
        assert_eq!(b(&c, 76, 1), [2]);
        c.set_mdts(5);
        assert_eq!(b(&c, 77, 1), [5]);
        c.set_cntlid(0x0102);
        assert_eq!(b(&c, 78, 2), [2, 1]);
        c.set_ver(0x0001_0300);
        assert_eq!(b(&c, 80, 4), [0, 3, 1, 0]);
        c.set_rtd3r(0x11);
        assert_eq!(b(&c, 84, 1), [0x11]);
        c.set_rtd3e(0x12);
        assert_eq!(b(&c, 88, 1), [0x12]);
        c.set_oaes(OAES_NS_ATTR);
        assert_eq!(b(&c, 92, 4), [0, 1, 0, 0]);
        c.set_ctratt(CTRATT_HOST_ID_128);
        assert_eq!(b(&c, 96, 4), [1, 0, 0, 0]);
        c.set_cntrltype(CNTRLTYPE_IO);
        assert_eq!(b(&c, 111, 1), [1]);
        c.set_oacs(0x0304);
        assert_eq!(b(&c, 256, 2), [4, 3]);
        c.set_acl(3);
        assert_eq!(b(&c, 258, 1), [3]);
        c.set_aerl(4);
        assert_eq!(b(&c, 259, 1), [4]);
        c.set_frmw(0x3);
        assert_eq!(b(&c, 260, 1), [3]);
        c.set_lpa(LPA_EXTENDED);
        assert_eq!(b(&c, 261, 1), [4]);
        c.set_elpe(127);
        assert_eq!(b(&c, 262, 1), [127]);
        c.set_npss(0x21);
        assert_eq!(b(&c, 263, 1), [0x21]);
        c.set_kas(10);
        assert_eq!(b(&c, 320, 2), [10, 0]);
        c.set_anagrpmax(0x44);
        assert_eq!(b(&c, 344, 1), [0x44]);
        c.set_sqes(0x66);
        assert_eq!(b(&c, 512, 1), [0x66]);
        c.set_cqes(0x44);
        assert_eq!(b(&c, 513, 1), [0x44]);
        c.set_maxcmd(128);
        assert_eq!(b(&c, 514, 2), [128, 0]);
        c.set_nn(0x0102_0304);
        assert_eq!(b(&c, 516, 4), [4, 3, 2, 1]);
        c.set_oncs(ONCS_COMPARE | ONCS_DSM | ONCS_WRITE_ZEROES);
        assert_eq!(b(&c, 520, 2), [0b1101, 0]);
        c.set_fuses(FUSES_COMPARE_AND_WRITE);
        assert_eq!(b(&c, 522, 2), [1, 0]);
        c.set_fna(0x5);
        assert_eq!(b(&c, 524, 1), [5]);
        c.set_vwc(VWC_PRESENT | VWC_FLUSH_BROADCAST);
        assert_eq!(b(&c, 525, 1), [7]);
        c.set_awun(0x0a0b);
        assert_eq!(b(&c, 526, 2), [0x0b, 0x0a]);
        c.set_awupf(0x0c0d);
        assert_eq!(b(&c, 528, 2), [0x0d, 0x0c]);
        c.set_nvscc(1);
        assert_eq!(b(&c, 530, 1), [1]);
        c.set_acwu(0x0e0f);
        assert_eq!(b(&c, 532, 2), [0x0f, 0x0e]);
        c.set_sgls(SGLS_SUPPORTED | SGLS_KEYED | SGLS_OFFSET);
        assert_eq!(b(&c, 536, 4), [0b101, 0, 0x10, 0]);
        assert!(c.set_subnqn("nqn.2016-06.io.spdk:cnode1"));
        assert_eq!(&b(&c, 768, 26), b"nqn.2016-06.io.spdk:cnode1");
        assert_eq!(b(&c, 768 + 26, 1), [0]);
        assert!(!c.set_subnqn(&"x".repeat(256)));
        assert_eq!(b(&c, 768 + 255, 1), [0], "NQN stays NUL-terminated");
        c.set_ioccsz(0x0104);
        assert_eq!(b(&c, 1792, 4), [4, 1, 0, 0]);
        c.set_iorcsz(1);
        assert_eq!(b(&c, 1796, 4), [1, 0, 0, 0]);
        c.set_icdoff(0x0203);
        assert_eq!(b(&c, 1800, 2), [3, 2]);
        c.set_fcatt(1);
        assert_eq!(b(&c, 1802, 1), [1]);
        c.set_msdbd(0x10);
        assert_eq!(b(&c, 1803, 1), [0x10]);
        c.set_ofcs(OFCS_DISCONNECT);
        assert_eq!(b(&c, 1804, 2), [1, 0]);
        c.set_dctype(2);
        assert_eq!(b(&c, 1806, 1), [2]);
        assert!(c.set_power_state(0, 2500, 16, 4));
        assert_eq!(b(&c, 2048, 12), [0xc4, 0x09, 0, 0, 16, 0, 0, 0, 4, 0, 0, 0]);
        assert!(!c.set_power_state(32, 1, 1, 1));
        // Getters read back what was set.
        assert_eq!(c.nn(), 0x0102_0304);
        assert_eq!(c.sgls(), SGLS_SUPPORTED | SGLS_KEYED | SGLS_OFFSET);
        assert_eq!(&c.sn()[..8], b"SPDK0001");
        assert_eq!(c.ieee(), [0x38, 0x25, 0]);
        assert_eq!(c.as_bytes().len(), 4096);
    }

    #[test]
    fn nvm_controller_offsets_match_the_spec() {
        let mut c = IdentifyControllerNvm::new();
        assert_eq!(c.as_bytes(), &[0; IDENTIFY_DATA_SIZE]);
        c.set_vsl(1);
        c.set_wzsl(2);
        c.set_wusl(3);
        c.set_dmrl(4);
        c.set_dmrsl(0x0807_0605);
        c.set_dmsl(0x100f_0e0d_0c0b_0a09);
        assert_eq!(&c.as_bytes()[..16], &(1..=16).collect::<Vec<u8>>()[..]);
        assert_eq!(c.as_bytes()[16..], [0; IDENTIFY_DATA_SIZE - 16]);
        assert_eq!(
            (c.wzsl(), c.dmrl(), c.dmsl()),
            (2, 4, 0x100f_0e0d_0c0b_0a09)
        );
    }

    #[test]
    fn mdts_values() {
        assert_eq!(mdts_for(128 * 1024), 5);
        assert_eq!(mdts_for(131072 + 4096), 5);
        assert_eq!(mdts_for(4 * 1024 * 1024), 10);
        assert_eq!(mdts_for(8192), 1);
        assert_eq!(mdts_for(4096), 1);
        assert_eq!(mdts_for(0), 1);
    }

    #[test]
    fn namespace_offsets_match_the_spec() {
        let mut n = IdentifyNamespace::for_blocks(0x0102_0304_0506_0708, 4096).unwrap();
        let b =
            |n: &IdentifyNamespace, off: usize, len: usize| n.as_bytes()[off..off + len].to_vec();
        assert_eq!(b(&n, 0, 8), [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(b(&n, 8, 8), [8, 7, 6, 5, 4, 3, 2, 1]);
        assert_eq!(b(&n, 16, 8), [8, 7, 6, 5, 4, 3, 2, 1]);
        n.set_nsfeat(NSFEAT_THIN | NSFEAT_OPTPERF);
        assert_eq!(b(&n, 24, 1), [0x11]);
        n.set_nlbaf(1);
        assert_eq!(b(&n, 25, 1), [1]);
        n.set_flbas(1);
        assert_eq!(b(&n, 26, 1), [1]);
        n.set_nmic(NMIC_SHARED);
        assert_eq!(b(&n, 30, 1), [1]);
        n.set_rescap(RESCAP_ALL_TYPES | RESCAP_IEKEY);
        assert_eq!(b(&n, 31, 1), [0xfe]);
        n.set_dlfeat(DLFEAT_READ_ZEROES | DLFEAT_WRITE_ZEROES_DEALLOCATES);
        assert_eq!(b(&n, 33, 1), [0x9]);
        n.set_nawupf(7);
        assert_eq!(b(&n, 36, 2), [7, 0]);
        n.set_noiob(0x20);
        assert_eq!(b(&n, 46, 2), [0x20, 0]);
        n.set_npwg(3);
        assert_eq!(b(&n, 64, 2), [3, 0]);
        n.set_nows(0x0f);
        assert_eq!(b(&n, 72, 2), [0x0f, 0]);
        n.set_anagrpid(9);
        assert_eq!(b(&n, 92, 4), [9, 0, 0, 0]);
        n.set_nguid([0x11; 16]);
        assert_eq!(b(&n, 104, 16), [0x11; 16]);
        n.set_eui64([0x22; 8]);
        assert_eq!(b(&n, 120, 8), [0x22; 8]);
        assert_eq!(b(&n, 103, 1), [0]);
        assert_eq!(b(&n, 128, 4), [0, 0, 12, 0], "LBAF0: ms 0, lbads 12");
        assert!(n.set_lba_format(1, 512, 8));
        assert_eq!(b(&n, 132, 4), [8, 0, 9, 0]);
        assert_eq!(n.lba_format(1), Some((8, 9, 0)));
        assert!(n.set_lba_format(63, 512, 0));
        assert!(!n.set_lba_format(64, 512, 0));
        assert_eq!(n.lba_format(64), None);
        assert!(!n.set_lba_format(2, 520, 0));
        assert!(!n.set_lba_format(2, 256, 0));
        assert!(IdentifyNamespace::for_blocks(1, 1000).is_none());
        assert_eq!(n.nguid(), [0x11; 16]);
        assert_eq!(n.eui64(), [0x22; 8]);
    }

    #[test]
    fn active_namespace_list() {
        let l = NsList::active([5, 1, 3, 3, 0, 9], 1).unwrap();
        assert_eq!(l.iter().collect::<Vec<_>>(), [3, 5, 9]);
        assert_eq!(&l.as_bytes()[..12], &[3, 0, 0, 0, 5, 0, 0, 0, 9, 0, 0, 0]);
        assert_eq!(l.as_bytes()[12..16], [0; 4]);
        assert_eq!(
            NsList::active([1], 0xFFFF_FFFE),
            Err(Status::INVALID_NAMESPACE_OR_FORMAT)
        );
        assert_eq!(
            NsList::active([1], NSID_ALL),
            Err(Status::INVALID_NAMESPACE_OR_FORMAT)
        );
        let many = NsList::active(1..=2000, 0).unwrap();
        assert_eq!(many.iter().count(), 1024);
        assert_eq!(many.iter().last(), Some(1024));
    }

    #[test]
    fn changed_namespace_list() {
        let l = NsList::changed([4, 2, 4]);
        assert_eq!(l.iter().collect::<Vec<_>>(), [2, 4]);
        let over = NsList::changed(1..=1025);
        assert_eq!(over.iter().collect::<Vec<_>>(), [NSID_ALL]);
        let exact = NsList::changed(1..=1024);
        assert_eq!(exact.iter().count(), 1024);
    }

    #[test]
    fn ns_id_descriptors() {
        let mut d = NsIdDescList::new();
        assert!(d.push_eui64([1, 2, 3, 4, 5, 6, 7, 8]));
        assert!(d.push_nguid([0xaa; 16]));
        assert!(d.push_uuid([0xbb; 16]));
        assert!(d.push_csi(CSI_NVM));
        assert!(!d.push_uuid([0; 16]), "all-zero ids are not reported");
        let b = d.as_bytes();
        assert_eq!(&b[0..4], &[NIDT_EUI64, 8, 0, 0]);
        assert_eq!(&b[4..12], &[1, 2, 3, 4, 5, 6, 7, 8]);
        assert_eq!(&b[12..16], &[NIDT_NGUID, 16, 0, 0]);
        assert_eq!(&b[16..32], &[0xaa; 16]);
        assert_eq!(&b[32..36], &[NIDT_UUID, 16, 0, 0]);
        assert_eq!(&b[52..56], &[NIDT_CSI, 1, 0, 0]);
        assert_eq!(b[56], 0);
        assert_eq!(&b[57..61], &[0; 4], "terminated by a zero header");
        let got: Vec<_> = d.iter().map(|(t, id)| (t, id.len())).collect();
        assert_eq!(got, [(1, 8), (2, 16), (3, 16), (4, 1)]);
        // Fill to the end: a zero header always remains.
        let mut full = NsIdDescList::new();
        while full.push_uuid([1; 16]) {}
        assert!(full.len + 4 <= IDENTIFY_DATA_SIZE);
        assert_eq!(full.iter().count(), (IDENTIFY_DATA_SIZE - 4) / 20);
        assert!(!full.push(0, &[1]));
        assert!(!full.push(NIDT_UUID, &[]));
    }
}
