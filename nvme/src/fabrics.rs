//! Fabrics commands (opcode 0x7F, NVMe-oF 1.1 §3 / NVMe Base 2.0 §6): command types, typed
//! views of Connect, Property Get/Set and Disconnect decoded from an [`NvmeCmd`], the
//! 1024-byte Connect data, and the Connect response encodings (controller id on success;
//! IATTR/IPO naming the offending field on "Connect Invalid Parameters").

use super::bytes;
use super::cmd::{NvmeCmd, NvmeCpl, OPC_FABRICS};
use super::registers::PropSize;
use super::status::Status;

/// Fabrics command type: Property Set.
pub const FCTYPE_PROPERTY_SET: u8 = 0x00;
/// Fabrics command type: Connect.
pub const FCTYPE_CONNECT: u8 = 0x01;
/// Fabrics command type: Property Get.
pub const FCTYPE_PROPERTY_GET: u8 = 0x04;
/// Fabrics command type: Authentication Send.
pub const FCTYPE_AUTH_SEND: u8 = 0x05;
/// Fabrics command type: Authentication Receive.
pub const FCTYPE_AUTH_RECV: u8 = 0x06;
/// Fabrics command type: Disconnect.
pub const FCTYPE_DISCONNECT: u8 = 0x08;

/// Controller id a host puts in Connect data to ask for a new controller (dynamic model).
pub const CNTLID_DYNAMIC: u16 = 0xFFFF;
/// Lowest valid controller id.
pub const CNTLID_MIN: u16 = 0x0001;
/// Highest valid controller id.
pub const CNTLID_MAX: u16 = 0xFFEF;
/// Longest NQN, in bytes (without the terminating NUL).
pub const NQN_MAX_LEN: usize = 223;
/// Size of an NQN field in Connect data and log pages.
pub const NQN_FIELD_LEN: usize = 256;
/// The well-known discovery subsystem NQN.
pub const DISCOVERY_NQN: &str = "nqn.2014-08.org.nvmexpress.discovery";

/// Which Fabrics command a capsule holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FabricsType {
    /// Property Set.
    PropertySet,
    /// Connect.
    Connect,
    /// Property Get.
    PropertyGet,
    /// Authentication Send.
    AuthSend,
    /// Authentication Receive.
    AuthRecv,
    /// Disconnect.
    Disconnect,
    /// Any other FCTYPE (answer Invalid Opcode, as Linux and SPDK targets do).
    Unknown(u8),
}

impl FabricsType {
    /// The Fabrics command type of `cmd` (FCTYPE at byte 4), or `None` if `cmd` is not a
    /// Fabrics command (opcode ≠ 0x7F).
    pub fn decode(cmd: &NvmeCmd) -> Option<FabricsType> {
        if cmd.opc != OPC_FABRICS {
            return None;
        }
        Some(match fctype(cmd) {
            FCTYPE_PROPERTY_SET => FabricsType::PropertySet,
            FCTYPE_CONNECT => FabricsType::Connect,
            FCTYPE_PROPERTY_GET => FabricsType::PropertyGet,
            FCTYPE_AUTH_SEND => FabricsType::AuthSend,
            FCTYPE_AUTH_RECV => FabricsType::AuthRecv,
            FCTYPE_DISCONNECT => FabricsType::Disconnect,
            other => FabricsType::Unknown(other),
        })
    }
    /// Whether the command may be sent on an I/O queue (Connect, Authentication, Disconnect);
    /// Property Get/Set are admin queue only.
    pub fn allowed_on_io_queue(self) -> bool {
        matches!(
            self,
            FabricsType::Connect
                | FabricsType::AuthSend
                | FabricsType::AuthRecv
                | FabricsType::Disconnect
        )
    }
}

/// FCTYPE (byte 4 of a Fabrics SQE, which overlays the low byte of NSID).
pub fn fctype(cmd: &NvmeCmd) -> u8 {
    cmd.nsid as u8
}

/// SQE byte offsets of the Connect fields, as IPO values for [`ConnectError::sqe`].
pub mod connect_sqe {
    /// RECFMT (u16).
    pub const RECFMT: u16 = 40;
    /// QID (u16).
    pub const QID: u16 = 42;
    /// SQSIZE (u16, 0-based).
    pub const SQSIZE: u16 = 44;
    /// CATTR (u8).
    pub const CATTR: u16 = 46;
    /// KATO (u32, milliseconds).
    pub const KATO: u16 = 48;
}

/// Connect data byte offsets, as IPO values for [`ConnectError::data`].
pub mod connect_data {
    /// HOSTID (16 bytes).
    pub const HOSTID: u16 = 0;
    /// CNTLID (u16).
    pub const CNTLID: u16 = 16;
    /// SUBNQN (256 bytes).
    pub const SUBNQN: u16 = 256;
    /// HOSTNQN (256 bytes).
    pub const HOSTNQN: u16 = 512;
}

/// A failed Connect: the status and the CQE dword 0 that goes with it (for "Connect Invalid
/// Parameters", IATTR in bit 16 — 0 = the SQE, 1 = the Connect data — and IPO, the byte
/// offset of the offending field, in bits 15:0; Linux hosts log the field by name).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectError {
    /// The status.
    pub status: Status,
    /// CQE dword 0.
    pub cdw0: u32,
}

impl ConnectError {
    /// A status with no parameter information.
    pub const fn status(status: Status) -> ConnectError {
        ConnectError { status, cdw0: 0 }
    }
    /// "Connect Invalid Parameters" for the SQE field at byte `offset` ([`connect_sqe`]).
    pub const fn sqe(offset: u16) -> ConnectError {
        ConnectError {
            status: Status::CONNECT_INVALID_PARAMETERS,
            cdw0: offset as u32,
        }
    }
    /// "Connect Invalid Parameters" for the Connect data field at byte `offset`
    /// ([`connect_data`]).
    pub const fn data(offset: u16) -> ConnectError {
        ConnectError {
            status: Status::CONNECT_INVALID_PARAMETERS,
            cdw0: 1 << 16 | offset as u32,
        }
    }
    /// "Connect Invalid Host" naming the host NQN (as the Linux target does).
    pub const fn invalid_host() -> ConnectError {
        ConnectError {
            status: Status::CONNECT_INVALID_HOST,
            cdw0: 1 << 16 | connect_data::HOSTNQN as u32,
        }
    }
    /// Put the error into a completion.
    pub fn apply(&self, cpl: &mut NvmeCpl) {
        cpl.set(self.status);
        cpl.cdw0 = self.cdw0;
        cpl.cdw1 = 0;
    }
}

impl From<Status> for ConnectError {
    fn from(status: Status) -> Self {
        ConnectError::status(status)
    }
}

/// Fill a successful Connect completion: controller id in dword 0 bits 15:0, no
/// authentication required (AUTHREQ bits 31:16 clear).
pub fn connect_success(cpl: &mut NvmeCpl, cntlid: u16) {
    cpl.set(Status::SUCCESS);
    cpl.cdw0 = cntlid as u32;
    cpl.cdw1 = 0;
}

/// The Connect command's SQE fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnectCmd {
    /// Record format (0 is the only one defined).
    pub recfmt: u16,
    /// Queue id: 0 = admin queue.
    pub qid: u16,
    /// Submission queue size, 0-based (so entries = sqsize + 1).
    pub sqsize: u16,
    /// Connect attributes: priority class (bits 1:0), disable SQ flow control (bit 2).
    pub cattr: u8,
    /// Keep alive timeout in milliseconds (admin queue; 0 = disabled).
    pub kato: u32,
}

impl ConnectCmd {
    /// Decode and check what needs no target state: a Fabrics Connect, RECFMT 0, SQSIZE ≠ 0.
    /// Queue limits and controller ids are the caller's to check.
    pub fn decode(cmd: &NvmeCmd) -> Result<ConnectCmd, ConnectError> {
        if cmd.opc != OPC_FABRICS || fctype(cmd) != FCTYPE_CONNECT {
            return Err(Status::INVALID_OPCODE.into());
        }
        let c = ConnectCmd {
            recfmt: cmd.cdw10 as u16,
            qid: (cmd.cdw10 >> 16) as u16,
            sqsize: cmd.cdw11 as u16,
            cattr: (cmd.cdw11 >> 16) as u8,
            kato: cmd.cdw12,
        };
        if c.recfmt != 0 {
            return Err(ConnectError::status(Status::CONNECT_INCOMPATIBLE_FORMAT));
        }
        if c.sqsize == 0 {
            return Err(ConnectError::sqe(connect_sqe::SQSIZE));
        }
        Ok(c)
    }
    /// Submission queue entries (SQSIZE + 1).
    pub fn queue_entries(&self) -> u32 {
        self.sqsize as u32 + 1
    }
    /// Whether the host asks to disable SQ flow control (CATTR bit 2): the target then
    /// reports SQHD as 0xFFFF.
    pub fn sq_flow_control_disabled(&self) -> bool {
        self.cattr & 0x4 != 0
    }
    /// Whether this connects the admin queue.
    pub fn is_admin(&self) -> bool {
        self.qid == 0
    }
}

/// The 1024-byte data of a Connect command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConnectData {
    /// Host identifier (128-bit).
    pub hostid: [u8; 16],
    /// Controller id: [`CNTLID_DYNAMIC`] on the admin queue, the id from the admin
    /// Connect on I/O queues.
    pub cntlid: u16,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Host NQN.
    pub hostnqn: String,
}

impl ConnectData {
    /// Size on the wire.
    pub const SIZE: usize = 1024;

    /// Parse untrusted Connect data. It must be exactly [`Self::SIZE`] bytes (else Data SGL
    /// Length Invalid); each NQN must be NUL-terminated within its first 224 bytes, at most
    /// [`NQN_MAX_LEN`] bytes long and UTF-8 (else Connect Invalid Parameters naming it). The
    /// subsystem NQN must not be empty; the host NQN may be: SPDK's initiator sends an empty
    /// one unless told otherwise, and SPDK's and Linux's targets admit it as an anonymous host
    /// (see [`ConnectData::is_anonymous`]).
    pub fn parse(data: &[u8]) -> Result<ConnectData, ConnectError> {
        if data.len() != Self::SIZE {
            return Err(Status::DATA_SGL_LENGTH_INVALID.into());
        }
        let mut hostid = [0u8; 16];
        hostid.copy_from_slice(&data[0..16]);
        let cntlid = bytes::read::<u16>(data, 16).unwrap_or(0);
        let subnqn = parse_nqn(data, connect_data::SUBNQN)?;
        if subnqn.is_empty() {
            return Err(ConnectError::data(connect_data::SUBNQN));
        }
        let hostnqn = parse_nqn(data, connect_data::HOSTNQN)?;
        Ok(ConnectData {
            hostid,
            cntlid,
            subnqn,
            hostnqn,
        })
    }

    /// Encode (what a host sends; used by tests, fuzz seeds and tools). NQNs longer than
    /// the field are cut.
    pub fn encode(&self) -> [u8; 1024] {
        let mut b = [0u8; 1024];
        b[0..16].copy_from_slice(&self.hostid);
        bytes::write(&mut b, 16, self.cntlid);
        let s = connect_data::SUBNQN as usize;
        let h = connect_data::HOSTNQN as usize;
        // Keep one NUL at the end of each field.
        bytes::put_str(&mut b[s..s + NQN_FIELD_LEN - 1], &self.subnqn, 0);
        bytes::put_str(&mut b[h..h + NQN_FIELD_LEN - 1], &self.hostnqn, 0);
        b
    }

    /// Whether the host sent no host NQN (an empty HOSTNQN field): an anonymous host. It is
    /// admitted only where the subsystem allows any host, never through a host list.
    pub fn is_anonymous(&self) -> bool {
        self.hostnqn.is_empty()
    }
}

/// Parse one NQN field: NUL-terminated within its first `NQN_MAX_LEN + 1` bytes, UTF-8.
/// An empty string is returned as such (the caller decides whether that is allowed).
fn parse_nqn(data: &[u8], off: u16) -> Result<String, ConnectError> {
    let start = off as usize;
    let field = data
        .get(start..start + NQN_FIELD_LEN)
        .ok_or(ConnectError::data(off))?;
    let len = field
        .iter()
        .position(|&c| c == 0)
        .ok_or(ConnectError::data(off))?;
    if len > NQN_MAX_LEN {
        return Err(ConnectError::data(off));
    }
    std::str::from_utf8(&field[..len])
        .map(str::to_owned)
        .map_err(|_| ConnectError::data(off))
}

/// Check an NQN's form (for configuration: subsystem and host NQNs given over RPC):
/// 1 to 223 bytes, and either `nqn.yyyy-mm.<reverse domain>[:<anything>]` or the
/// UUID form `nqn.2014-08.org.nvmexpress:uuid:<36-char uuid>`.
pub fn validate_nqn(nqn: &str) -> Result<(), &'static str> {
    if nqn.is_empty() || nqn.len() > NQN_MAX_LEN {
        return Err("NQN must be 1 to 223 bytes");
    }
    if nqn == DISCOVERY_NQN {
        return Ok(());
    }
    if let Some(uuid) = nqn.strip_prefix("nqn.2014-08.org.nvmexpress:uuid:") {
        let ok = uuid.len() == 36
            && uuid.char_indices().all(|(i, c)| match i {
                8 | 13 | 18 | 23 => c == '-',
                _ => c.is_ascii_hexdigit(),
            });
        return if ok {
            Ok(())
        } else {
            Err("malformed UUID in NQN")
        };
    }
    let rest = nqn
        .strip_prefix("nqn.")
        .ok_or("NQN must start with \"nqn.\"")?;
    let date = rest.get(..7).ok_or("NQN must have a yyyy-mm date")?;
    let db = date.as_bytes();
    if !(db[..4].iter().all(u8::is_ascii_digit)
        && db[4] == b'-'
        && db[5..].iter().all(u8::is_ascii_digit))
    {
        return Err("NQN must have a yyyy-mm date");
    }
    let after = &rest[7..];
    let domain = after
        .strip_prefix('.')
        .ok_or("NQN date must be followed by '.' and a reverse domain name")?;
    let domain = domain.split(':').next().unwrap_or("");
    if domain.is_empty() || domain.starts_with('.') || domain.ends_with('.') {
        return Err("NQN has an empty reverse domain name");
    }
    Ok(())
}

/// Property Get: ATTRIB at byte 40, OFST at byte 44; the value goes back in CQE dwords 0-1.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertyGet {
    /// Access width.
    pub size: PropSize,
    /// Property offset.
    pub ofst: u32,
}

impl PropertyGet {
    /// Decode (Invalid Field for a reserved size).
    pub fn decode(cmd: &NvmeCmd) -> Result<PropertyGet, Status> {
        check_fctype(cmd, FCTYPE_PROPERTY_GET)?;
        Ok(PropertyGet {
            size: PropSize::from_attrib(cmd.cdw10 as u8)?,
            ofst: cmd.cdw11,
        })
    }
    /// Fill a successful completion with `value` (4-byte properties use dword 0 only).
    pub fn complete(&self, cpl: &mut NvmeCpl, value: u64) {
        cpl.set(Status::SUCCESS);
        cpl.cdw0 = value as u32;
        cpl.cdw1 = match self.size {
            PropSize::Four => 0,
            PropSize::Eight => (value >> 32) as u32,
        };
    }
}

/// Property Set: ATTRIB at byte 40, OFST at byte 44, VALUE (u64) at byte 48.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PropertySet {
    /// Access width.
    pub size: PropSize,
    /// Property offset.
    pub ofst: u32,
    /// Value (the upper half is ignored for 4-byte properties).
    pub value: u64,
}

impl PropertySet {
    /// Decode (Invalid Field for a reserved size).
    pub fn decode(cmd: &NvmeCmd) -> Result<PropertySet, Status> {
        check_fctype(cmd, FCTYPE_PROPERTY_SET)?;
        let size = PropSize::from_attrib(cmd.cdw10 as u8)?;
        let value = match size {
            PropSize::Four => cmd.cdw12 as u64,
            PropSize::Eight => cmd.cdw12 as u64 | (cmd.cdw13 as u64) << 32,
        };
        Ok(PropertySet {
            size,
            ofst: cmd.cdw11,
            value,
        })
    }
}

/// Disconnect (I/O queues only): RECFMT at byte 40.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DisconnectCmd {
    /// Record format (0).
    pub recfmt: u16,
}

impl DisconnectCmd {
    /// Decode (Incompatible Format for RECFMT ≠ 0).
    pub fn decode(cmd: &NvmeCmd) -> Result<DisconnectCmd, Status> {
        check_fctype(cmd, FCTYPE_DISCONNECT)?;
        let recfmt = cmd.cdw10 as u16;
        if recfmt != 0 {
            return Err(Status::CONNECT_INCOMPATIBLE_FORMAT);
        }
        Ok(DisconnectCmd { recfmt })
    }
}

fn check_fctype(cmd: &NvmeCmd, want: u8) -> Result<(), Status> {
    if cmd.opc != OPC_FABRICS || fctype(cmd) != want {
        return Err(Status::INVALID_OPCODE);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::registers::{PROP_CAP, PROP_CC};

    fn fabrics(fctype: u8) -> NvmeCmd {
        NvmeCmd {
            opc: OPC_FABRICS,
            nsid: fctype as u32,
            ..NvmeCmd::default()
        }
    }

    /// Write `v` little-endian at SQE byte `off` (to check field offsets against the spec).
    fn put(cmd: &mut NvmeCmd, off: usize, v: &[u8]) {
        let mut raw = [0u8; 64];
        raw[0] = cmd.opc;
        raw[1] = cmd.flags;
        raw[2..4].copy_from_slice(&cmd.cid.to_le_bytes());
        raw[4..8].copy_from_slice(&cmd.nsid.to_le_bytes());
        for (i, w) in [cmd.cdw10, cmd.cdw11, cmd.cdw12, cmd.cdw13]
            .iter()
            .enumerate()
        {
            raw[40 + 4 * i..44 + 4 * i].copy_from_slice(&w.to_le_bytes());
        }
        raw[off..off + v.len()].copy_from_slice(v);
        let dw = |o: usize| u32::from_le_bytes(raw[o..o + 4].try_into().unwrap());
        cmd.nsid = dw(4);
        cmd.cdw10 = dw(40);
        cmd.cdw11 = dw(44);
        cmd.cdw12 = dw(48);
        cmd.cdw13 = dw(52);
    }

    #[test]
    fn fabrics_types() {
        assert_eq!(
            FabricsType::decode(&fabrics(0x01)),
            Some(FabricsType::Connect)
        );
        assert_eq!(
            FabricsType::decode(&fabrics(0x00)),
            Some(FabricsType::PropertySet)
        );
        assert_eq!(
            FabricsType::decode(&fabrics(0x04)),
            Some(FabricsType::PropertyGet)
        );
        assert_eq!(
            FabricsType::decode(&fabrics(0x05)),
            Some(FabricsType::AuthSend)
        );
        assert_eq!(
            FabricsType::decode(&fabrics(0x06)),
            Some(FabricsType::AuthRecv)
        );
        assert_eq!(
            FabricsType::decode(&fabrics(0x08)),
            Some(FabricsType::Disconnect)
        );
        assert_eq!(
            FabricsType::decode(&fabrics(0x7)),
            Some(FabricsType::Unknown(7))
        );
        let mut not = fabrics(1);
        not.opc = 0x06;
        assert_eq!(FabricsType::decode(&not), None);
        assert!(!FabricsType::PropertyGet.allowed_on_io_queue());
        assert!(FabricsType::Connect.allowed_on_io_queue());
    }

    #[test]
    fn connect_fields_at_spec_offsets() {
        let mut c = fabrics(FCTYPE_CONNECT);
        put(&mut c, 42, &3u16.to_le_bytes()); // qid
        put(&mut c, 44, &127u16.to_le_bytes()); // sqsize
        put(&mut c, 46, &[0x4]); // cattr
        put(&mut c, 48, &15000u32.to_le_bytes()); // kato
        let d = ConnectCmd::decode(&c).unwrap();
        assert_eq!(d.qid, 3);
        assert_eq!(d.sqsize, 127);
        assert_eq!(d.queue_entries(), 128);
        assert!(d.sq_flow_control_disabled());
        assert_eq!(d.kato, 15000);
        assert!(!d.is_admin());
    }

    #[test]
    fn connect_rejects() {
        let mut c = fabrics(FCTYPE_CONNECT);
        put(&mut c, 44, &31u16.to_le_bytes());
        put(&mut c, 40, &1u16.to_le_bytes()); // recfmt 1
        assert_eq!(
            ConnectCmd::decode(&c).unwrap_err().status,
            Status::CONNECT_INCOMPATIBLE_FORMAT
        );
        let mut c = fabrics(FCTYPE_CONNECT);
        let e = ConnectCmd::decode(&c).unwrap_err(); // sqsize 0
        assert_eq!(e.status, Status::CONNECT_INVALID_PARAMETERS);
        assert_eq!(e.cdw0, 44, "IATTR 0 (SQE), IPO = offset of SQSIZE");
        c.nsid = FCTYPE_PROPERTY_GET as u32;
        assert_eq!(
            ConnectCmd::decode(&c).unwrap_err().status,
            Status::INVALID_OPCODE
        );
    }

    #[test]
    fn connect_error_encodings() {
        assert_eq!(ConnectError::data(connect_data::CNTLID).cdw0, 0x1_0010);
        assert_eq!(ConnectError::data(connect_data::SUBNQN).cdw0, 0x1_0100);
        assert_eq!(ConnectError::invalid_host().cdw0, 0x1_0200);
        assert_eq!(
            ConnectError::invalid_host().status,
            Status::CONNECT_INVALID_HOST
        );
        let mut cpl = NvmeCpl {
            cdw1: 7,
            ..NvmeCpl::default()
        };
        ConnectError::sqe(connect_sqe::QID).apply(&mut cpl);
        assert_eq!(cpl.cdw0, 42);
        assert_eq!(cpl.cdw1, 0);
        assert_eq!(cpl.get_status(), Status::CONNECT_INVALID_PARAMETERS);
        connect_success(&mut cpl, 0x12);
        assert!(cpl.is_success());
        assert_eq!(cpl.cdw0, 0x12);
    }

    fn sample() -> ConnectData {
        ConnectData {
            hostid: [0xab; 16],
            cntlid: CNTLID_DYNAMIC,
            subnqn: "nqn.2016-06.io.spdk:cnode1".into(),
            hostnqn: "nqn.2014-08.org.nvmexpress:uuid:4b1b0e5c-1a7e-4c3f-9a7b-0123456789ab".into(),
        }
    }

    #[test]
    fn connect_data_layout() {
        let b = sample().encode();
        assert_eq!(b[0], 0xab);
        assert_eq!(b[15], 0xab);
        assert_eq!(&b[16..18], &[0xff, 0xff]);
        assert_eq!(&b[256..260], b"nqn.");
        assert_eq!(&b[512..516], b"nqn.");
        assert_eq!(ConnectData::parse(&b).unwrap(), sample());
    }

    #[test]
    fn connect_data_rejects() {
        let good = sample().encode();
        assert_eq!(
            ConnectData::parse(&good[..1023]).unwrap_err().status,
            Status::DATA_SGL_LENGTH_INVALID
        );
        // No NUL in the subsystem NQN field.
        let mut b = good;
        b[256..512].fill(b'a');
        assert_eq!(ConnectData::parse(&b).unwrap_err(), ConnectError::data(256));
        // 224 bytes: one too long.
        let mut b = good;
        b[512..512 + 224].fill(b'a');
        b[512 + 224..768].fill(0);
        assert_eq!(ConnectData::parse(&b).unwrap_err(), ConnectError::data(512));
        // 223 bytes: fine.
        b[512 + 223] = 0;
        assert_eq!(ConnectData::parse(&b).unwrap().hostnqn.len(), 223);
        // An empty host NQN is an anonymous host (SPDK's initiator sends one by default).
        let mut b = good;
        b[512..768].fill(0);
        let d = ConnectData::parse(&b).unwrap();
        assert_eq!(d.hostnqn, "");
        assert!(d.is_anonymous());
        assert!(!sample().is_anonymous());
        // An empty subsystem NQN names no subsystem.
        let mut b = good;
        b[256..512].fill(0);
        assert_eq!(ConnectData::parse(&b).unwrap_err(), ConnectError::data(256));
        // Not UTF-8.
        let mut b = good;
        b[256] = 0xff;
        assert_eq!(ConnectData::parse(&b).unwrap_err(), ConnectError::data(256));
    }

    #[test]
    fn property_get_and_set() {
        let mut g = fabrics(FCTYPE_PROPERTY_GET);
        put(&mut g, 40, &[1]);
        put(&mut g, 44, &PROP_CAP.to_le_bytes());
        let pg = PropertyGet::decode(&g).unwrap();
        assert_eq!(pg.size, PropSize::Eight);
        assert_eq!(pg.ofst, PROP_CAP);
        let mut cpl = NvmeCpl::default();
        pg.complete(&mut cpl, 0x1122_3344_5566_7788);
        assert_eq!((cpl.cdw0, cpl.cdw1), (0x5566_7788, 0x1122_3344));
        put(&mut g, 40, &[3]);
        assert_eq!(PropertyGet::decode(&g), Err(Status::INVALID_FIELD));

        let mut s = fabrics(FCTYPE_PROPERTY_SET);
        put(&mut s, 44, &PROP_CC.to_le_bytes());
        put(&mut s, 48, &0xdead_beef_0046_0001u64.to_le_bytes());
        let ps = PropertySet::decode(&s).unwrap();
        assert_eq!(ps.size, PropSize::Four);
        assert_eq!(ps.ofst, PROP_CC);
        assert_eq!(ps.value, 0x0046_0001, "upper half ignored for 4 bytes");
        put(&mut s, 40, &[1]);
        assert_eq!(
            PropertySet::decode(&s).unwrap().value,
            0xdead_beef_0046_0001
        );
        assert_eq!(PropertySet::decode(&g), Err(Status::INVALID_OPCODE));
    }

    #[test]
    fn disconnect() {
        let mut d = fabrics(FCTYPE_DISCONNECT);
        assert_eq!(DisconnectCmd::decode(&d), Ok(DisconnectCmd { recfmt: 0 }));
        put(&mut d, 40, &[1]);
        assert_eq!(
            DisconnectCmd::decode(&d),
            Err(Status::CONNECT_INCOMPATIBLE_FORMAT)
        );
    }

    #[test]
    fn nqn_validation() {
        assert!(validate_nqn("nqn.2016-06.io.spdk:cnode1").is_ok());
        assert!(validate_nqn(DISCOVERY_NQN).is_ok());
        assert!(validate_nqn(
            "nqn.2014-08.org.nvmexpress:uuid:4b1b0e5c-1a7e-4c3f-9a7b-0123456789ab"
        )
        .is_ok());
        assert!(validate_nqn("nqn.2014-08.org.nvmexpress:uuid:nope").is_err());
        assert!(validate_nqn("").is_err());
        assert!(validate_nqn("iqn.2016-06.io.spdk:x").is_err());
        assert!(validate_nqn("nqn.16-06.io.spdk:x").is_err());
        assert!(validate_nqn("nqn.2016-06:x").is_err());
        assert!(validate_nqn("nqn.2016-06.:x").is_err());
        assert!(validate_nqn("nqn.2016").is_err());
        let long = format!("nqn.2016-06.io.spdk:{}", "a".repeat(204));
        assert_eq!(long.len(), 224);
        assert!(validate_nqn(&long).is_err());
        assert!(validate_nqn(&long[..223]).is_ok());
    }
}
