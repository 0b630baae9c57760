//! Controller properties (NVMe Base 2.0 §3.1.4) as a fabrics controller exposes them through
//! Property Get/Set: CAP (0x00, 8 bytes), VS (0x08), CC (0x14) and CSTS (0x1C), their field
//! encodings, and [`Registers`], which answers property reads and applies CC writes the way
//! a host bring-up expects (CC.EN 0→1 sets CSTS.RDY; CC.SHN sets CSTS.SHST to "complete").

use super::status::Status;

/// Property offset of CAP (Controller Capabilities, 8 bytes).
pub const PROP_CAP: u32 = 0x00;
/// Property offset of VS (Version, 4 bytes).
pub const PROP_VS: u32 = 0x08;
/// Property offset of INTMS (reserved for fabrics).
pub const PROP_INTMS: u32 = 0x0C;
/// Property offset of INTMC (reserved for fabrics).
pub const PROP_INTMC: u32 = 0x10;
/// Property offset of CC (Controller Configuration, 4 bytes).
pub const PROP_CC: u32 = 0x14;
/// Property offset of CSTS (Controller Status, 4 bytes).
pub const PROP_CSTS: u32 = 0x1C;
/// Property offset of NSSR (NVM Subsystem Reset; not supported here).
pub const PROP_NSSR: u32 = 0x20;

/// Width of a property access (Property Get/Set ATTRIB.SIZE).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PropSize {
    /// 4 bytes (ATTRIB bits 2:0 = 0).
    Four,
    /// 8 bytes (ATTRIB bits 2:0 = 1).
    Eight,
}

impl PropSize {
    /// Decode ATTRIB (bits 2:0; other values are reserved → Invalid Field).
    pub fn from_attrib(attrib: u8) -> Result<PropSize, Status> {
        match attrib & 0x7 {
            0 => Ok(PropSize::Four),
            1 => Ok(PropSize::Eight),
            _ => Err(Status::INVALID_FIELD),
        }
    }
    /// Bytes.
    pub fn bytes(self) -> u32 {
        match self {
            PropSize::Four => 4,
            PropSize::Eight => 8,
        }
    }
}

/// CAP.CSS bit: NVM command set.
pub const CAP_CSS_NVM: u8 = 1 << 0;
/// CAP.CSS bit: I/O command sets (CSI) supported.
pub const CAP_CSS_IOCS: u8 = 1 << 6;
/// CAP.CSS bit: no I/O command set (admin-only or discovery controller).
pub const CAP_CSS_NO_IO: u8 = 1 << 7;

/// CAP, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cap {
    /// Maximum queue entries supported, 0-based (bits 15:0).
    pub mqes: u16,
    /// Contiguous queues required (bit 16); 1 for message-based controllers.
    pub cqr: bool,
    /// Arbitration mechanisms supported (bits 18:17).
    pub ams: u8,
    /// Timeout for CSTS.RDY transitions, in 500 ms units (bits 31:24).
    pub to: u8,
    /// Doorbell stride (bits 35:32); 0 for fabrics.
    pub dstrd: u8,
    /// NVM subsystem reset supported (bit 36).
    pub nssrs: bool,
    /// Command sets supported (bits 44:37): [`CAP_CSS_NVM`], [`CAP_CSS_IOCS`], [`CAP_CSS_NO_IO`].
    pub css: u8,
    /// Boot partition support (bit 45).
    pub bps: bool,
    /// Memory page size minimum, 2^(12+MPSMIN) (bits 51:48).
    pub mpsmin: u8,
    /// Memory page size maximum, 2^(12+MPSMAX) (bits 55:52).
    pub mpsmax: u8,
    /// Persistent memory region supported (bit 56).
    pub pmrs: bool,
    /// Controller memory buffer supported (bit 57).
    pub cmbs: bool,
}

impl Cap {
    /// CAP of a fabrics controller: `queue_entries` (1-based, at least 2) per I/O queue,
    /// CQR set, NVM command set, 4 KiB pages, ready timeout `timeout_500ms`.
    pub fn fabrics(queue_entries: u32, timeout_500ms: u8) -> Cap {
        Cap {
            mqes: queue_entries.clamp(2, 0x1_0000).saturating_sub(1) as u16,
            cqr: true,
            to: timeout_500ms,
            css: CAP_CSS_NVM,
            ..Cap::default()
        }
    }
    /// Encode.
    pub fn encode(&self) -> u64 {
        self.mqes as u64
            | (self.cqr as u64) << 16
            | ((self.ams & 0x3) as u64) << 17
            | (self.to as u64) << 24
            | ((self.dstrd & 0xf) as u64) << 32
            | (self.nssrs as u64) << 36
            | (self.css as u64) << 37
            | (self.bps as u64) << 45
            | ((self.mpsmin & 0xf) as u64) << 48
            | ((self.mpsmax & 0xf) as u64) << 52
            | (self.pmrs as u64) << 56
            | (self.cmbs as u64) << 57
    }
    /// Decode.
    pub fn decode(v: u64) -> Cap {
        Cap {
            mqes: v as u16,
            cqr: v >> 16 & 1 != 0,
            ams: (v >> 17 & 0x3) as u8,
            to: (v >> 24) as u8,
            dstrd: (v >> 32 & 0xf) as u8,
            nssrs: v >> 36 & 1 != 0,
            css: (v >> 37) as u8,
            bps: v >> 45 & 1 != 0,
            mpsmin: (v >> 48 & 0xf) as u8,
            mpsmax: (v >> 52 & 0xf) as u8,
            pmrs: v >> 56 & 1 != 0,
            cmbs: v >> 57 & 1 != 0,
        }
    }
}

/// VS (version), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Vs {
    /// Major version (bits 31:16).
    pub major: u16,
    /// Minor version (bits 15:8).
    pub minor: u8,
    /// Tertiary version (bits 7:0).
    pub tertiary: u8,
}

impl Vs {
    /// NVMe 1.3 (what SPDK's target reports).
    pub const V1_3: Vs = Vs::new(1, 3, 0);
    /// NVMe 1.4.
    pub const V1_4: Vs = Vs::new(1, 4, 0);
    /// NVMe 2.0.
    pub const V2_0: Vs = Vs::new(2, 0, 0);
    /// A version.
    pub const fn new(major: u16, minor: u8, tertiary: u8) -> Vs {
        Vs {
            major,
            minor,
            tertiary,
        }
    }
    /// Encode (also the Identify Controller VER field).
    pub const fn encode(&self) -> u32 {
        (self.major as u32) << 16 | (self.minor as u32) << 8 | self.tertiary as u32
    }
    /// Decode.
    pub const fn decode(v: u32) -> Vs {
        Vs::new((v >> 16) as u16, (v >> 8) as u8, v as u8)
    }
}

/// CC.SHN / shutdown notification values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shn {
    /// No notification (00b).
    None,
    /// Normal shutdown (01b).
    Normal,
    /// Abrupt shutdown (10b).
    Abrupt,
    /// Reserved (11b).
    Reserved,
}

impl Shn {
    fn from_bits(v: u32) -> Shn {
        match v & 0x3 {
            0 => Shn::None,
            1 => Shn::Normal,
            2 => Shn::Abrupt,
            _ => Shn::Reserved,
        }
    }
    fn bits(self) -> u32 {
        match self {
            Shn::None => 0,
            Shn::Normal => 1,
            Shn::Abrupt => 2,
            Shn::Reserved => 3,
        }
    }
}

/// CC.CSS value: NVM command set.
pub const CC_CSS_NVM: u8 = 0;
/// CC.CSS value: all supported I/O command sets.
pub const CC_CSS_CSI: u8 = 6;
/// CC.CSS value: admin command set only.
pub const CC_CSS_ADMIN_ONLY: u8 = 7;

/// CC (controller configuration), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cc {
    /// Enable (bit 0).
    pub en: bool,
    /// I/O command set selected (bits 6:4).
    pub css: u8,
    /// Memory page size, 2^(12+MPS) (bits 10:7).
    pub mps: u8,
    /// Arbitration mechanism selected (bits 13:11).
    pub ams: u8,
    /// Shutdown notification (bits 15:14).
    pub shn: Shn,
    /// I/O submission queue entry size, 2^n bytes (bits 19:16).
    pub iosqes: u8,
    /// I/O completion queue entry size, 2^n bytes (bits 23:20).
    pub iocqes: u8,
    /// Controller ready independent of media enable (bit 24).
    pub crime: bool,
}

impl Cc {
    /// Encode.
    pub fn encode(&self) -> u32 {
        self.en as u32
            | ((self.css & 0x7) as u32) << 4
            | ((self.mps & 0xf) as u32) << 7
            | ((self.ams & 0x7) as u32) << 11
            | self.shn.bits() << 14
            | ((self.iosqes & 0xf) as u32) << 16
            | ((self.iocqes & 0xf) as u32) << 20
            | (self.crime as u32) << 24
    }
    /// Decode.
    pub fn decode(v: u32) -> Cc {
        Cc {
            en: v & 1 != 0,
            css: (v >> 4 & 0x7) as u8,
            mps: (v >> 7 & 0xf) as u8,
            ams: (v >> 11 & 0x7) as u8,
            shn: Shn::from_bits(v >> 14),
            iosqes: (v >> 16 & 0xf) as u8,
            iocqes: (v >> 20 & 0xf) as u8,
            crime: v >> 24 & 1 != 0,
        }
    }
}

/// CSTS.SHST values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shst {
    /// Normal operation, no shutdown requested (00b).
    Normal,
    /// Shutdown processing occurring (01b).
    Occurring,
    /// Shutdown processing complete (10b).
    Complete,
}

/// CSTS (controller status), decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Csts {
    /// Ready (bit 0).
    pub rdy: bool,
    /// Controller fatal status (bit 1).
    pub cfs: bool,
    /// Shutdown status (bits 3:2).
    pub shst: Shst,
    /// NVM subsystem reset occurred (bit 4).
    pub nssro: bool,
    /// Processing paused (bit 5).
    pub pp: bool,
}

impl Csts {
    /// Encode.
    pub fn encode(&self) -> u32 {
        let shst = match self.shst {
            Shst::Normal => 0,
            Shst::Occurring => 1,
            Shst::Complete => 2,
        };
        self.rdy as u32
            | (self.cfs as u32) << 1
            | shst << 2
            | (self.nssro as u32) << 4
            | (self.pp as u32) << 5
    }
    /// Decode (the reserved SHST value 11b reads as `Complete`).
    pub fn decode(v: u32) -> Csts {
        Csts {
            rdy: v & 1 != 0,
            cfs: v >> 1 & 1 != 0,
            shst: match v >> 2 & 0x3 {
                0 => Shst::Normal,
                1 => Shst::Occurring,
                _ => Shst::Complete,
            },
            nssro: v >> 4 & 1 != 0,
            pp: v >> 5 & 1 != 0,
        }
    }
}

/// What a CC write changed, for the controller to act on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct CcChange {
    /// CC.EN went 0→1 and the configuration is valid: CSTS.RDY is now 1 (start keep-alive,
    /// accept commands).
    pub enabled: bool,
    /// CC.EN went 0→1 with an invalid configuration: CSTS.CFS is now 1, RDY stays 0.
    pub enable_failed: bool,
    /// CC.EN went 1→0: controller reset (abort outstanding commands, delete I/O queues).
    pub disabled: bool,
    /// A shutdown notification (CC.SHN 00b → non-zero) arrived: CSTS.SHST is now
    /// "complete" and RDY is 0. The controller stops I/O and expects the host to go away.
    pub shutdown: Option<Shn>,
}

/// The properties of one controller.
#[derive(Debug, Clone)]
pub struct Registers {
    cap: u64,
    vs: u32,
    cc: u32,
    csts: u32,
    io_queues: bool,
}

impl Registers {
    /// Properties for a controller with capabilities `cap` and version `vs`. `io_queues` is
    /// false for a discovery controller: its CC.IOSQES/IOCQES are then not checked.
    pub fn new(cap: Cap, vs: Vs, io_queues: bool) -> Registers {
        Registers {
            cap: cap.encode(),
            vs: vs.encode(),
            cc: 0,
            csts: 0,
            io_queues,
        }
    }
    /// CAP.
    pub fn cap(&self) -> Cap {
        Cap::decode(self.cap)
    }
    /// VS.
    pub fn vs(&self) -> Vs {
        Vs::decode(self.vs)
    }
    /// CC.
    pub fn cc(&self) -> Cc {
        Cc::decode(self.cc)
    }
    /// CSTS.
    pub fn csts(&self) -> Csts {
        Csts::decode(self.csts)
    }
    /// Whether the controller is enabled and ready (CC.EN = 1 and CSTS.RDY = 1): I/O
    /// queues may connect and admin commands other than Fabrics ones may run.
    pub fn is_ready(&self) -> bool {
        self.cc & 1 != 0 && self.csts & 1 != 0
    }
    /// Report a controller fatal status (CSTS.CFS = 1), e.g. on an internal failure.
    pub fn set_fatal(&mut self) {
        self.csts |= 1 << 1;
    }

    /// Property Get: the value at `ofst` of width `size`. CAP is 8 bytes, VS/CC/CSTS 4;
    /// anything else is Invalid Field.
    pub fn get(&self, ofst: u32, size: PropSize) -> Result<u64, Status> {
        match (ofst, size) {
            (PROP_CAP, PropSize::Eight) => Ok(self.cap),
            (PROP_VS, PropSize::Four) => Ok(self.vs as u64),
            (PROP_CC, PropSize::Four) => Ok(self.cc as u64),
            (PROP_CSTS, PropSize::Four) => Ok(self.csts as u64),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// Property Set: only CC (4 bytes) is writable; everything else is Invalid Field.
    pub fn set(&mut self, ofst: u32, size: PropSize, value: u64) -> Result<CcChange, Status> {
        match (ofst, size) {
            (PROP_CC, PropSize::Four) => Ok(self.write_cc(value as u32)),
            _ => Err(Status::INVALID_FIELD),
        }
    }

    /// Apply a CC write: enable (with configuration checks), disable (reset) and shutdown
    /// notifications, as the spec's state machine has them.
    pub fn write_cc(&mut self, new: u32) -> CcChange {
        let old = Cc::decode(self.cc);
        let cc = Cc::decode(new);
        self.cc = new;
        let mut change = CcChange::default();
        if cc.en && !old.en {
            if self.cc_is_valid(&cc) {
                self.csts = 1; // RDY, clearing CFS and SHST
                change.enabled = true;
            } else {
                log::warn!("controller enable with unsupported CC {new:#x}: fatal status");
                self.csts = 1 << 1; // CFS
                change.enable_failed = true;
            }
        }
        if !cc.en && old.en {
            self.csts &= !1;
            change.disabled = true;
        }
        if cc.shn != Shn::None && old.shn == Shn::None {
            // Nothing is cached or buffered at this layer: shutdown completes at once.
            self.csts = (self.csts & !(0x3 << 2 | 1)) | 2 << 2;
            change.shutdown = Some(cc.shn);
        }
        if cc.shn == Shn::None && old.shn != Shn::None {
            self.csts &= !(0x3 << 2);
        }
        change
    }

    fn cc_is_valid(&self, cc: &Cc) -> bool {
        let cap = self.cap();
        let css_ok = match cc.css {
            CC_CSS_NVM => cap.css & CAP_CSS_NVM != 0,
            CC_CSS_CSI => cap.css & CAP_CSS_IOCS != 0,
            CC_CSS_ADMIN_ONLY => cap.css & CAP_CSS_NO_IO != 0,
            _ => false,
        };
        let mps_ok = cc.mps >= cap.mpsmin && cc.mps <= cap.mpsmax;
        let queues_ok = !self.io_queues || (cc.iosqes == 6 && cc.iocqes == 4);
        css_ok && mps_ok && queues_ok && cc.ams == 0 && cc.shn == Shn::None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// CC as the Linux host writes it to enable: EN, CSS=NVM, MPS=0, AMS=RR, IOSQES=6,
    /// IOCQES=4.
    const LINUX_CC_ENABLE: u32 = 1 | 6 << 16 | 4 << 20;

    fn regs() -> Registers {
        Registers::new(Cap::fabrics(128, 15), Vs::V1_3, true)
    }

    #[test]
    fn cap_bits_are_where_the_spec_puts_them() {
        let cap = Cap::fabrics(128, 15).encode();
        assert_eq!(cap & 0xffff, 127, "MQES 0-based");
        assert_eq!(cap >> 16 & 1, 1, "CQR");
        assert_eq!(cap >> 24 & 0xff, 15, "TO");
        assert_eq!(cap >> 37 & 0xff, 1, "CSS: NVM");
        assert_eq!(cap >> 48 & 0xf, 0, "MPSMIN");
        let all = Cap {
            mqes: 0x1234,
            cqr: true,
            ams: 3,
            to: 0xab,
            dstrd: 0xf,
            nssrs: true,
            css: 0xc1,
            bps: true,
            mpsmin: 1,
            mpsmax: 5,
            pmrs: true,
            cmbs: true,
        };
        assert_eq!(Cap::decode(all.encode()), all);
        assert_eq!(all.encode() >> 52 & 0xf, 5);
        assert_eq!(Cap::fabrics(1, 1).mqes, 1);
        assert_eq!(Cap::fabrics(1 << 20, 1).mqes, 0xffff);
    }

    #[test]
    fn vs_encoding() {
        assert_eq!(Vs::V1_3.encode(), 0x0001_0300);
        assert_eq!(Vs::V2_0.encode(), 0x0002_0000);
        assert_eq!(Vs::decode(0x0001_0401), Vs::new(1, 4, 1));
    }

    #[test]
    fn cc_and_csts_round_trip() {
        let cc = Cc::decode(LINUX_CC_ENABLE | 1 << 14);
        assert!(cc.en);
        assert_eq!((cc.iosqes, cc.iocqes, cc.css, cc.mps), (6, 4, 0, 0));
        assert_eq!(cc.shn, Shn::Normal);
        assert_eq!(cc.encode(), LINUX_CC_ENABLE | 1 << 14);
        let c = Csts {
            rdy: true,
            cfs: false,
            shst: Shst::Complete,
            nssro: true,
            pp: false,
        };
        assert_eq!(c.encode(), 0b1_1001);
        assert_eq!(Csts::decode(c.encode()), c);
    }

    #[test]
    fn property_get_sizes_and_offsets() {
        let r = regs();
        assert_eq!(
            r.get(PROP_CAP, PropSize::Eight),
            Ok(Cap::fabrics(128, 15).encode())
        );
        assert_eq!(r.get(PROP_VS, PropSize::Four), Ok(0x0001_0300));
        assert_eq!(r.get(PROP_CC, PropSize::Four), Ok(0));
        assert_eq!(r.get(PROP_CSTS, PropSize::Four), Ok(0));
        assert_eq!(r.get(PROP_CAP, PropSize::Four), Err(Status::INVALID_FIELD));
        assert_eq!(r.get(PROP_VS, PropSize::Eight), Err(Status::INVALID_FIELD));
        assert_eq!(r.get(0x04, PropSize::Four), Err(Status::INVALID_FIELD));
        assert_eq!(r.get(PROP_NSSR, PropSize::Four), Err(Status::INVALID_FIELD));
        assert_eq!(r.get(u32::MAX, PropSize::Eight), Err(Status::INVALID_FIELD));
    }

    #[test]
    fn property_set_only_cc() {
        let mut r = regs();
        assert_eq!(
            r.set(PROP_CAP, PropSize::Eight, 0),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            r.set(PROP_CSTS, PropSize::Four, 1),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            r.set(PROP_CC, PropSize::Eight, 1),
            Err(Status::INVALID_FIELD)
        );
        assert!(!r.is_ready());
    }

    #[test]
    fn enable_then_shutdown_like_a_linux_host() {
        let mut r = regs();
        let ch = r
            .set(PROP_CC, PropSize::Four, LINUX_CC_ENABLE as u64)
            .unwrap();
        assert!(ch.enabled && !ch.enable_failed && !ch.disabled && ch.shutdown.is_none());
        assert!(r.csts().rdy);
        assert!(r.is_ready());
        assert_eq!(r.get(PROP_CC, PropSize::Four), Ok(LINUX_CC_ENABLE as u64));
        // Writing the same value again changes nothing.
        assert_eq!(r.write_cc(LINUX_CC_ENABLE), CcChange::default());

        let ch = r.write_cc(LINUX_CC_ENABLE | 1 << 14);
        assert_eq!(ch.shutdown, Some(Shn::Normal));
        let csts = r.csts();
        assert_eq!(csts.shst, Shst::Complete);
        assert!(!csts.rdy);
        // Clearing SHN clears SHST.
        r.write_cc(LINUX_CC_ENABLE);
        assert_eq!(r.csts().shst, Shst::Normal);
    }

    #[test]
    fn disable_is_a_reset() {
        let mut r = regs();
        r.write_cc(LINUX_CC_ENABLE);
        let ch = r.write_cc(LINUX_CC_ENABLE & !1);
        assert!(ch.disabled);
        assert!(!r.csts().rdy);
        // Re-enable works.
        assert!(r.write_cc(LINUX_CC_ENABLE).enabled);
        assert!(r.csts().rdy);
    }

    #[test]
    fn bad_configuration_sets_fatal_status() {
        for bad in [
            1 | 5 << 16 | 4 << 20,           // IOSQES 32 bytes
            1 | 6 << 16 | 3 << 20,           // IOCQES 8 bytes
            1 | 6 << 16 | 4 << 20 | 1 << 7,  // MPS 8 KiB
            1 | 6 << 16 | 4 << 20 | 6 << 4,  // CSS=CSI not advertised
            1 | 6 << 16 | 4 << 20 | 1 << 11, // AMS WRR
        ] {
            let mut r = regs();
            let ch = r.write_cc(bad);
            assert!(ch.enable_failed && !ch.enabled, "{bad:#x}");
            assert!(r.csts().cfs && !r.csts().rdy, "{bad:#x}");
            assert!(!r.is_ready());
        }
    }

    #[test]
    fn discovery_controller_ignores_queue_entry_sizes() {
        let mut r = Registers::new(Cap::fabrics(32, 15), Vs::V1_3, false);
        assert!(r.write_cc(1).enabled);
        assert!(r.is_ready());
    }

    #[test]
    fn fatal_status_is_reported() {
        let mut r = regs();
        r.write_cc(LINUX_CC_ENABLE);
        r.set_fatal();
        assert!(r.csts().cfs);
        assert_eq!(r.get(PROP_CSTS, PropSize::Four), Ok(0b11));
    }

    #[test]
    fn attrib_decoding() {
        assert_eq!(PropSize::from_attrib(0), Ok(PropSize::Four));
        assert_eq!(PropSize::from_attrib(1), Ok(PropSize::Eight));
        assert_eq!(
            PropSize::from_attrib(0xf8),
            Ok(PropSize::Four),
            "bits 7:3 reserved"
        );
        assert_eq!(PropSize::from_attrib(2), Err(Status::INVALID_FIELD));
        assert_eq!(PropSize::Eight.bytes(), 8);
    }
}
