//! Fabrics commands: Connect (command fields and data), Property Get/Set.

use super::ctrlr::Controller;
use crate::spec::cmd::NvmeCmd;
use crate::spec::status::Status;

/// Fabrics command types (fctype, SQE byte 4).
pub(crate) const FCTYPE_PROPERTY_SET: u8 = 0x00;
pub(crate) const FCTYPE_CONNECT: u8 = 0x01;
pub(crate) const FCTYPE_PROPERTY_GET: u8 = 0x04;
pub(crate) const FCTYPE_DISCONNECT: u8 = 0x08;

/// The fctype of a Fabrics command (byte 4 of the SQE, the low byte of the nsid field).
#[inline]
pub(crate) fn fctype(cmd: &NvmeCmd) -> u8 {
    (cmd.nsid & 0xff) as u8
}

/// Size of the Connect data.
pub(crate) const CONNECT_DATA_LEN: usize = 1024;
/// Longest NQN (NVMe base spec).
pub(crate) const MAX_NQN_LEN: usize = 223;

/// The Connect command's own fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct ConnectCmd {
    pub recfmt: u16,
    pub qid: u16,
    /// 0-based submission queue size.
    pub sqsize: u16,
    pub cattr: u8,
    /// Keep-alive timeout, ms.
    pub kato: u32,
}

impl ConnectCmd {
    /// Decode from the SQE (recfmt@40, qid@42, sqsize@44, cattr@46, kato@48).
    pub fn parse(cmd: &NvmeCmd) -> ConnectCmd {
        ConnectCmd {
            recfmt: (cmd.cdw10 & 0xffff) as u16,
            qid: (cmd.cdw10 >> 16) as u16,
            sqsize: (cmd.cdw11 & 0xffff) as u16,
            cattr: ((cmd.cdw11 >> 16) & 0xff) as u8,
            kato: cmd.cdw12,
        }
    }
}

/// The Connect data (1024 bytes, host to controller).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ConnectData {
    pub hostid: [u8; 16],
    pub cntlid: u16,
    pub subnqn: String,
    pub hostnqn: String,
}

/// Connect failure statuses and the IATTR/IPO dword 0 that says which field was wrong.
pub(crate) mod connect_error {
    use crate::spec::status::Status;

    /// Byte offsets in the Connect data.
    pub const DATA_CNTLID: u16 = 16;
    pub const DATA_SUBNQN: u16 = 256;
    pub const DATA_HOSTNQN: u16 = 512;
    /// Byte offsets in the SQE.
    pub const SQE_QID: u16 = 42;
    pub const SQE_SQSIZE: u16 = 44;
    pub const SQE_RECFMT: u16 = 40;

    /// A Connect error: its status and dword 0.
    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    pub struct ConnectError {
        pub status: Status,
        pub cdw0: u32,
    }

    impl From<Status> for ConnectError {
        fn from(status: Status) -> Self {
            ConnectError { status, cdw0: 0 }
        }
    }

    /// Invalid parameter in the Connect data at byte `ipo` (dword 0: IATTR bit 0 = 1, IPO).
    pub fn invalid_data(ipo: u16) -> ConnectError {
        ConnectError {
            status: Status::CONNECT_INVALID_PARAMETERS,
            cdw0: (1 << 16) | u32::from(ipo),
        }
    }

    /// Invalid parameter in the SQE at byte `ipo` (dword 0: IATTR bit 0 = 0, IPO).
    pub fn invalid_sqe(ipo: u16) -> ConnectError {
        ConnectError {
            status: Status::CONNECT_INVALID_PARAMETERS,
            cdw0: u32::from(ipo),
        }
    }
}

/// Why Connect data could not be decoded: the byte offset of the bad field.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BadField(pub u16);

/// A NUL-terminated NQN field of 256 bytes: non-empty UTF-8, at most 223 bytes.
fn nqn_field(b: &[u8]) -> Option<String> {
    let len = b.iter().position(|&c| c == 0)?;
    if len == 0 || len > MAX_NQN_LEN {
        return None;
    }
    std::str::from_utf8(&b[..len]).ok().map(str::to_owned)
}

impl ConnectData {
    /// Decode (never trusting the wire): both NQNs must be NUL-terminated UTF-8 of 1..=223
    /// bytes.
    pub fn parse(d: &[u8; CONNECT_DATA_LEN]) -> Result<ConnectData, BadField> {
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&d[..16]);
        let cntlid = u16::from_le_bytes([d[16], d[17]]);
        let subnqn = nqn_field(&d[256..512]).ok_or(BadField(connect_error::DATA_SUBNQN))?;
        let hostnqn = nqn_field(&d[512..768]).ok_or(BadField(connect_error::DATA_HOSTNQN))?;
        Ok(ConnectData {
            hostid,
            cntlid,
            subnqn,
            hostnqn,
        })
    }
}

/// Controller properties (register offsets).
pub(crate) const PROP_CAP: u32 = 0x00;
pub(crate) const PROP_VS: u32 = 0x08;
pub(crate) const PROP_CC: u32 = 0x14;
pub(crate) const PROP_CSTS: u32 = 0x1C;

/// The NVMe version this target reports (1.3.0).
pub(crate) const NVME_VERSION: u32 = 0x0001_0300;

/// CAP: MQES (0-based) from the transport's queue depth, CQR, timeout 7.5 s (15 × 500 ms),
/// NVM command set, MPSMIN = MPSMAX = 4 KiB.
pub(crate) fn cap(max_queue_depth: u16) -> u64 {
    let mqes = u64::from(max_queue_depth.max(2) - 1);
    let cqr = 1u64 << 16;
    let to = 15u64 << 24;
    let css_nvm = 1u64 << 37;
    mqes | cqr | to | css_nvm
}

/// Property Get: `Ok(value)` or the failure status.
pub(crate) fn property_get(ctrlr: &Controller, cmd: &NvmeCmd) -> Result<u64, Status> {
    let size8 = cmd.cdw10 & 0x7 == 1;
    let ofst = cmd.cdw11;
    let (value, is8) = match ofst {
        PROP_CAP => (cap(ctrlr.topts.max_queue_depth), true),
        PROP_VS => (u64::from(NVME_VERSION), false),
        PROP_CC => (u64::from(ctrlr.cc()), false),
        PROP_CSTS => (u64::from(ctrlr.csts()), false),
        _ => {
            log::debug!("nvmf: Property Get of unknown offset {ofst:#x}");
            return Err(Status::INVALID_FIELD);
        }
    };
    match (is8, size8) {
        (true, true) | (false, false) => Ok(value),
        // A 4-byte read of CAP returns its low half, as controllers commonly allow.
        (true, false) => Ok(value & 0xffff_ffff),
        (false, true) => Err(Status::INVALID_FIELD),
    }
}

/// Property Set (only CC is writable).
pub(crate) fn property_set(ctrlr: &Controller, cmd: &NvmeCmd) -> Result<(), Status> {
    let size8 = cmd.cdw10 & 0x7 == 1;
    let ofst = cmd.cdw11;
    let value = u64::from(cmd.cdw12) | (u64::from(cmd.cdw13) << 32);
    match ofst {
        PROP_CC if !size8 => {
            ctrlr.write_cc(value as u32);
            Ok(())
        }
        _ => {
            log::debug!("nvmf: Property Set of offset {ofst:#x} refused");
            Err(Status::INVALID_FIELD)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(subnqn: &[u8], hostnqn: &[u8]) -> [u8; CONNECT_DATA_LEN] {
        let mut d = [0u8; CONNECT_DATA_LEN];
        d[..16].copy_from_slice(&[7; 16]);
        d[16..18].copy_from_slice(&0xffffu16.to_le_bytes());
        d[256..256 + subnqn.len()].copy_from_slice(subnqn);
        d[512..512 + hostnqn.len()].copy_from_slice(hostnqn);
        d
    }

    #[test]
    fn connect_data_parses_and_rejects_bad_nqns() {
        let c = ConnectData::parse(&data(b"nqn.a:s", b"nqn.b:h")).unwrap();
        assert_eq!(c.hostid, [7; 16]);
        assert_eq!(c.cntlid, 0xffff);
        assert_eq!(c.subnqn, "nqn.a:s");
        assert_eq!(c.hostnqn, "nqn.b:h");
        assert_eq!(ConnectData::parse(&data(b"", b"nqn.b")), Err(BadField(256)));
        assert_eq!(ConnectData::parse(&data(b"nqn.a", b"")), Err(BadField(512)));
        assert_eq!(
            ConnectData::parse(&data(&[0xff, 0xfe], b"nqn.b")),
            Err(BadField(256))
        );
        // Not NUL-terminated within its 256 bytes.
        let mut d = data(b"nqn.a", b"nqn.b");
        d[512..768].fill(b'a');
        assert_eq!(ConnectData::parse(&d), Err(BadField(512)));
        // Too long (224 bytes).
        let long = vec![b'n'; 224];
        assert_eq!(
            ConnectData::parse(&data(&long, b"nqn.b")),
            Err(BadField(256))
        );
    }

    #[test]
    fn connect_command_fields() {
        let cmd = NvmeCmd {
            cdw10: 0x0003_0000,
            cdw11: 0x0004_007f,
            cdw12: 15000,
            ..Default::default()
        };
        let c = ConnectCmd::parse(&cmd);
        assert_eq!(
            c,
            ConnectCmd {
                recfmt: 0,
                qid: 3,
                sqsize: 127,
                cattr: 4,
                kato: 15000
            }
        );
    }

    #[test]
    fn cap_fields() {
        let c = cap(128);
        assert_eq!(c & 0xffff, 127);
        assert_eq!((c >> 16) & 1, 1);
        assert_eq!((c >> 24) & 0xff, 15);
        assert_eq!((c >> 37) & 1, 1);
        assert_eq!((c >> 48) & 0xf, 0);
    }

    #[test]
    fn connect_error_dword0() {
        assert_eq!(connect_error::invalid_data(256).cdw0, 0x1_0100);
        assert_eq!(connect_error::invalid_sqe(42).cdw0, 42);
        assert_eq!(
            connect_error::invalid_sqe(42).status,
            Status::CONNECT_INVALID_PARAMETERS
        );
    }
}
