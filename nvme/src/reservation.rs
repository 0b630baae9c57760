//! Reservations (NVM Command Set 1.0 §3.2.x, NVMe Base 2.0 §8.19): the Register, Acquire,
//! Release and Report commands' fields and data, reservation types, and the Report data
//! structure (standard and extended, the latter with 128-bit host identifiers as fabrics
//! hosts use).

use super::cmd::NvmeCmd;
use super::opcode::nvm;
use super::status::Status;

/// Reservation types (RTYPE).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ReservationType {
    /// Write Exclusive (1).
    WriteExclusive,
    /// Exclusive Access (2).
    ExclusiveAccess,
    /// Write Exclusive – Registrants Only (3).
    WriteExclusiveRegistrantsOnly,
    /// Exclusive Access – Registrants Only (4).
    ExclusiveAccessRegistrantsOnly,
    /// Write Exclusive – All Registrants (5).
    WriteExclusiveAllRegistrants,
    /// Exclusive Access – All Registrants (6).
    ExclusiveAccessAllRegistrants,
}

impl ReservationType {
    /// Decode RTYPE (Invalid Field for 0 and 7..).
    pub fn from_u8(v: u8) -> Result<ReservationType, Status> {
        use ReservationType::*;
        Ok(match v {
            1 => WriteExclusive,
            2 => ExclusiveAccess,
            3 => WriteExclusiveRegistrantsOnly,
            4 => ExclusiveAccessRegistrantsOnly,
            5 => WriteExclusiveAllRegistrants,
            6 => ExclusiveAccessAllRegistrants,
            _ => return Err(Status::INVALID_FIELD),
        })
    }
    /// RTYPE value.
    pub fn value(self) -> u8 {
        use ReservationType::*;
        match self {
            WriteExclusive => 1,
            ExclusiveAccess => 2,
            WriteExclusiveRegistrantsOnly => 3,
            ExclusiveAccessRegistrantsOnly => 4,
            WriteExclusiveAllRegistrants => 5,
            ExclusiveAccessAllRegistrants => 6,
        }
    }
    /// Whether every registrant is a holder (the "All Registrants" types).
    pub fn all_registrants(self) -> bool {
        matches!(
            self,
            ReservationType::WriteExclusiveAllRegistrants
                | ReservationType::ExclusiveAccessAllRegistrants
        )
    }
}

/// Reservation Register action (RREGA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegisterAction {
    /// Register a reservation key (0).
    Register,
    /// Unregister (1).
    Unregister,
    /// Replace the key (2).
    Replace,
}

/// Change Persist Through Power Loss state (CPTPL).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Cptpl {
    /// No change (00b).
    NoChange,
    /// Clear PTPL: reservations are released on power loss (10b).
    Clear,
    /// Set PTPL: reservations persist through power loss (11b).
    Set,
}

/// Reservation Register (opcode 0x0D); its 16-byte data is [`KeyPair`] (CRKEY, NRKEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RegisterCmd {
    /// Action (CDW10 bits 2:0).
    pub action: RegisterAction,
    /// Ignore existing key (CDW10 bit 3).
    pub iekey: bool,
    /// Change PTPL state (CDW10 bits 31:30).
    pub cptpl: Cptpl,
}

impl RegisterCmd {
    /// Decode (Invalid Field for reserved actions or CPTPL 01b).
    pub fn decode(cmd: &NvmeCmd) -> Result<RegisterCmd, Status> {
        if cmd.opc != nvm::RESERVATION_REGISTER {
            return Err(Status::INVALID_OPCODE);
        }
        let action = match cmd.cdw10 & 0x7 {
            0 => RegisterAction::Register,
            1 => RegisterAction::Unregister,
            2 => RegisterAction::Replace,
            _ => return Err(Status::INVALID_FIELD),
        };
        let cptpl = match cmd.cdw10 >> 30 {
            0 => Cptpl::NoChange,
            2 => Cptpl::Clear,
            3 => Cptpl::Set,
            _ => return Err(Status::INVALID_FIELD),
        };
        Ok(RegisterCmd {
            action,
            iekey: cmd.cdw10 & 0x8 != 0,
            cptpl,
        })
    }
}

/// Reservation Acquire action (RACQA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AcquireAction {
    /// Acquire (0).
    Acquire,
    /// Preempt (1).
    Preempt,
    /// Preempt and abort (2).
    PreemptAndAbort,
}

/// Reservation Acquire (opcode 0x11); its 16-byte data is [`KeyPair`] (CRKEY, PRKEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AcquireCmd {
    /// Action (CDW10 bits 2:0).
    pub action: AcquireAction,
    /// Ignore existing key (CDW10 bit 3).
    pub iekey: bool,
    /// Reservation type (CDW10 bits 15:8).
    pub rtype: ReservationType,
}

impl AcquireCmd {
    /// Decode (Invalid Field for reserved actions or types).
    pub fn decode(cmd: &NvmeCmd) -> Result<AcquireCmd, Status> {
        if cmd.opc != nvm::RESERVATION_ACQUIRE {
            return Err(Status::INVALID_OPCODE);
        }
        let action = match cmd.cdw10 & 0x7 {
            0 => AcquireAction::Acquire,
            1 => AcquireAction::Preempt,
            2 => AcquireAction::PreemptAndAbort,
            _ => return Err(Status::INVALID_FIELD),
        };
        Ok(AcquireCmd {
            action,
            iekey: cmd.cdw10 & 0x8 != 0,
            rtype: ReservationType::from_u8((cmd.cdw10 >> 8) as u8)?,
        })
    }
}

/// Reservation Release action (RRELA).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ReleaseAction {
    /// Release (0).
    Release,
    /// Clear: release and unregister everyone (1).
    Clear,
}

/// Reservation Release (opcode 0x15); its 8-byte data is the current key (CRKEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReleaseCmd {
    /// Action (CDW10 bits 2:0).
    pub action: ReleaseAction,
    /// Ignore existing key (CDW10 bit 3).
    pub iekey: bool,
    /// Reservation type as the host gave it (CDW10 bits 15:8); checked against the held
    /// reservation for Release, ignored for Clear.
    pub rtype: u8,
}

impl ReleaseCmd {
    /// Decode (Invalid Field for reserved actions).
    pub fn decode(cmd: &NvmeCmd) -> Result<ReleaseCmd, Status> {
        if cmd.opc != nvm::RESERVATION_RELEASE {
            return Err(Status::INVALID_OPCODE);
        }
        let action = match cmd.cdw10 & 0x7 {
            0 => ReleaseAction::Release,
            1 => ReleaseAction::Clear,
            _ => return Err(Status::INVALID_FIELD),
        };
        Ok(ReleaseCmd {
            action,
            iekey: cmd.cdw10 & 0x8 != 0,
            rtype: (cmd.cdw10 >> 8) as u8,
        })
    }
    /// Parse the 8-byte data: the current reservation key.
    pub fn parse_key(data: &[u8]) -> Result<u64, Status> {
        let b = data.get(..8).ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
        Ok(u64::from_le_bytes([
            b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7],
        ]))
    }
}

/// The 16-byte data of Register (current key, new key) and Acquire (current key, preempt
/// key).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KeyPair {
    /// Current reservation key (bytes 7:0).
    pub crkey: u64,
    /// New key (Register) or preempt key (Acquire) (bytes 15:8).
    pub other: u64,
}

impl KeyPair {
    /// Size on the wire.
    pub const SIZE: usize = 16;
    /// Parse (Data SGL Length Invalid if short).
    pub fn parse(data: &[u8]) -> Result<KeyPair, Status> {
        let b = data.get(..16).ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
        Ok(KeyPair {
            crkey: u64::from_le_bytes([b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7]]),
            other: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        })
    }
    /// Encode.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[..8].copy_from_slice(&self.crkey.to_le_bytes());
        b[8..].copy_from_slice(&self.other.to_le_bytes());
        b
    }
}

/// Reservation Report (opcode 0x0E).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportCmd {
    /// Bytes of data the host takes: (NUMD + 1) dwords (CDW10, 0-based).
    pub len: u64,
    /// Extended data structure (CDW11 bit 0): 64-byte entries with 128-bit host ids.
    pub eds: bool,
}

impl ReportCmd {
    /// Decode.
    pub fn decode(cmd: &NvmeCmd) -> Result<ReportCmd, Status> {
        if cmd.opc != nvm::RESERVATION_REPORT {
            return Err(Status::INVALID_OPCODE);
        }
        Ok(ReportCmd {
            len: (cmd.cdw10 as u64 + 1) * 4,
            eds: cmd.cdw11 & 1 != 0,
        })
    }
}

/// One registrant in a Reservation Report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Registrant {
    /// Controller id (0xFFFF if the registrant has no controller here).
    pub cntlid: u16,
    /// Holds the reservation (RCSTS bit 0).
    pub holder: bool,
    /// Host identifier (128-bit; the standard format carries its first 8 bytes).
    pub hostid: [u8; 16],
    /// Reservation key.
    pub rkey: u64,
}

/// Build Reservation Report data: a header (generation, type, registrant count, PTPL
/// state; 24 bytes, or 64 extended) and one entry per registrant (24 bytes, or 64 extended
/// with the full 128-bit host id). `rtype` 0 means no reservation is held.
pub fn report_data(
    generation: u32,
    rtype: u8,
    ptpl: bool,
    registrants: &[Registrant],
    extended: bool,
) -> Vec<u8> {
    let (hdr, ent) = if extended { (64, 64) } else { (24, 24) };
    let count = registrants.len().min(u16::MAX as usize);
    let mut b = vec![0u8; hdr + ent * count];
    b[0..4].copy_from_slice(&generation.to_le_bytes());
    b[4] = rtype;
    b[5..7].copy_from_slice(&(count as u16).to_le_bytes());
    b[9] = ptpl as u8;
    for (i, r) in registrants.iter().take(count).enumerate() {
        let e = &mut b[hdr + ent * i..hdr + ent * (i + 1)];
        e[0..2].copy_from_slice(&r.cntlid.to_le_bytes());
        e[2] = r.holder as u8;
        if extended {
            e[8..16].copy_from_slice(&r.rkey.to_le_bytes());
            e[16..32].copy_from_slice(&r.hostid);
        } else {
            e[8..16].copy_from_slice(&r.hostid[..8]);
            e[16..24].copy_from_slice(&r.rkey.to_le_bytes());
        }
    }
    b
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(opc: u8, cdw10: u32, cdw11: u32) -> NvmeCmd {
        NvmeCmd {
            opc,
            nsid: 1,
            cdw10,
            cdw11,
            ..NvmeCmd::default()
        }
    }

    #[test]
    fn register() {
        let r = RegisterCmd::decode(&cmd(nvm::RESERVATION_REGISTER, 3 << 30 | 0x8 | 2, 0)).unwrap();
        assert_eq!(r.action, RegisterAction::Replace);
        assert!(r.iekey);
        assert_eq!(r.cptpl, Cptpl::Set);
        assert_eq!(
            RegisterCmd::decode(&cmd(nvm::RESERVATION_REGISTER, 3, 0)),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            RegisterCmd::decode(&cmd(nvm::RESERVATION_REGISTER, 1 << 30, 0)),
            Err(Status::INVALID_FIELD)
        );
        let k = KeyPair {
            crkey: 1,
            other: 0x0102_0304_0506_0708,
        };
        let b = k.encode();
        assert_eq!(b[0], 1);
        assert_eq!(b[8], 8);
        assert_eq!(KeyPair::parse(&b), Ok(k));
        assert_eq!(
            KeyPair::parse(&b[..15]),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
    }

    #[test]
    fn acquire_release_report() {
        let a = AcquireCmd::decode(&cmd(nvm::RESERVATION_ACQUIRE, 5 << 8 | 2, 0)).unwrap();
        assert_eq!(a.action, AcquireAction::PreemptAndAbort);
        assert_eq!(a.rtype, ReservationType::WriteExclusiveAllRegistrants);
        assert!(a.rtype.all_registrants());
        assert_eq!(
            AcquireCmd::decode(&cmd(nvm::RESERVATION_ACQUIRE, 0, 0)),
            Err(Status::INVALID_FIELD),
            "RTYPE 0"
        );
        assert_eq!(
            AcquireCmd::decode(&cmd(nvm::RESERVATION_ACQUIRE, 7 << 8, 0)),
            Err(Status::INVALID_FIELD)
        );
        let r = ReleaseCmd::decode(&cmd(nvm::RESERVATION_RELEASE, 1 << 8 | 1, 0)).unwrap();
        assert_eq!((r.action, r.rtype), (ReleaseAction::Clear, 1));
        assert_eq!(ReleaseCmd::parse_key(&7u64.to_le_bytes()), Ok(7));
        assert!(ReleaseCmd::parse_key(&[0; 7]).is_err());
        let rep = ReportCmd::decode(&cmd(nvm::RESERVATION_REPORT, 15, 1)).unwrap();
        assert_eq!((rep.len, rep.eds), (64, true));
        for t in 1..=6 {
            assert_eq!(ReservationType::from_u8(t).unwrap().value(), t);
        }
    }

    #[test]
    fn report_layouts() {
        let regs = [
            Registrant {
                cntlid: 1,
                holder: true,
                hostid: [0xab; 16],
                rkey: 0x1122,
            },
            Registrant {
                cntlid: 2,
                holder: false,
                hostid: [0xcd; 16],
                rkey: 0x3344,
            },
        ];
        let s = report_data(7, 1, true, &regs, false);
        assert_eq!(s.len(), 24 + 2 * 24);
        assert_eq!(&s[0..4], &[7, 0, 0, 0]);
        assert_eq!(s[4], 1);
        assert_eq!(&s[5..7], &[2, 0]);
        assert_eq!(s[9], 1);
        assert_eq!(&s[24..27], &[1, 0, 1]);
        assert_eq!(&s[32..40], &[0xab; 8]);
        assert_eq!(&s[40..42], &[0x22, 0x11]);
        assert_eq!(&s[48..51], &[2, 0, 0]);
        let x = report_data(7, 0, false, &regs, true);
        assert_eq!(x.len(), 64 + 2 * 64);
        assert_eq!(&x[64..67], &[1, 0, 1]);
        assert_eq!(&x[72..74], &[0x22, 0x11]);
        assert_eq!(&x[80..96], &[0xab; 16]);
        assert_eq!(&x[128..130], &[2, 0]);
        assert_eq!(report_data(0, 0, false, &[], true).len(), 64);
    }
}
