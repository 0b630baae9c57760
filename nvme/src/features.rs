//! Get Features / Set Features (admin opcodes 0x0A / 0x09, NVMe Base 2.0 §5.21 and §5.27):
//! feature identifiers, the commands' fields, and the encodings of the features a fabrics
//! host uses — Number of Queues, Keep Alive Timer, Asynchronous Event Configuration,
//! Volatile Write Cache, Host Identifier — plus the simple ones hosts may read back.

use super::cmd::NvmeCmd;
use super::opcode::admin;
use super::status::Status;

/// Feature: arbitration.
pub const FID_ARBITRATION: u8 = 0x01;
/// Feature: power management.
pub const FID_POWER_MGMT: u8 = 0x02;
/// Feature: LBA range type.
pub const FID_LBA_RANGE_TYPE: u8 = 0x03;
/// Feature: temperature threshold.
pub const FID_TEMP_THRESHOLD: u8 = 0x04;
/// Feature: error recovery.
pub const FID_ERROR_RECOVERY: u8 = 0x05;
/// Feature: volatile write cache.
pub const FID_VOLATILE_WRITE_CACHE: u8 = 0x06;
/// Feature: number of queues.
pub const FID_NUMBER_OF_QUEUES: u8 = 0x07;
/// Feature: interrupt coalescing.
pub const FID_INTERRUPT_COALESCING: u8 = 0x08;
/// Feature: interrupt vector configuration.
pub const FID_INTERRUPT_VECTOR_CONFIG: u8 = 0x09;
/// Feature: write atomicity normal.
pub const FID_WRITE_ATOMICITY: u8 = 0x0A;
/// Feature: asynchronous event configuration.
pub const FID_ASYNC_EVENT_CONFIG: u8 = 0x0B;
/// Feature: autonomous power state transition.
pub const FID_AUTONOMOUS_POWER_STATE: u8 = 0x0C;
/// Feature: host memory buffer.
pub const FID_HOST_MEMORY_BUFFER: u8 = 0x0D;
/// Feature: timestamp.
pub const FID_TIMESTAMP: u8 = 0x0E;
/// Feature: keep alive timer.
pub const FID_KEEP_ALIVE_TIMER: u8 = 0x0F;
/// Feature: host controlled thermal management.
pub const FID_HOST_THERMAL_MGMT: u8 = 0x10;
/// Feature: non-operational power state config.
pub const FID_NON_OP_POWER_STATE: u8 = 0x11;
/// Feature: host behavior support.
pub const FID_HOST_BEHAVIOR: u8 = 0x16;
/// Feature: sanitize config.
pub const FID_SANITIZE_CONFIG: u8 = 0x17;
/// Feature: software progress marker.
pub const FID_SOFTWARE_PROGRESS_MARKER: u8 = 0x80;
/// Feature: host identifier.
pub const FID_HOST_IDENTIFIER: u8 = 0x81;
/// Feature: reservation notification mask (namespace specific).
pub const FID_RESERVATION_NOTIFICATION_MASK: u8 = 0x82;
/// Feature: reservation persistence (namespace specific).
pub const FID_RESERVATION_PERSISTENCE: u8 = 0x83;
/// Feature: namespace write protection config.
pub const FID_NS_WRITE_PROTECTION: u8 = 0x84;

/// Supported capabilities (Get Features with SEL = 3) bit: saveable.
pub const CAPS_SAVEABLE: u32 = 1 << 0;
/// Supported capabilities bit: namespace specific.
pub const CAPS_NS_SPECIFIC: u32 = 1 << 1;
/// Supported capabilities bit: changeable.
pub const CAPS_CHANGEABLE: u32 = 1 << 2;

/// Get Features SEL: which value to return.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// The current value (000b).
    Current,
    /// The default value (001b).
    Default,
    /// The saved value (010b).
    Saved,
    /// The supported capabilities (011b): [`CAPS_SAVEABLE`] etc. in dword 0.
    SupportedCapabilities,
}

/// The fields of a Get Features command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetFeatures {
    /// Feature identifier (CDW10 bits 7:0).
    pub fid: u8,
    /// Select (CDW10 bits 10:8).
    pub sel: Select,
    /// Namespace identifier (namespace specific features).
    pub nsid: u32,
    /// Feature specific CDW11 (e.g. EXHID for Host Identifier).
    pub cdw11: u32,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
}

impl GetFeatures {
    /// Decode (Invalid Field for a reserved SEL).
    pub fn decode(cmd: &NvmeCmd) -> Result<GetFeatures, Status> {
        if cmd.opc != admin::GET_FEATURES {
            return Err(Status::INVALID_OPCODE);
        }
        let sel = match cmd.cdw10 >> 8 & 0x7 {
            0 => Select::Current,
            1 => Select::Default,
            2 => Select::Saved,
            3 => Select::SupportedCapabilities,
            _ => return Err(Status::INVALID_FIELD),
        };
        Ok(GetFeatures {
            fid: cmd.cdw10 as u8,
            sel,
            nsid: cmd.nsid,
            cdw11: cmd.cdw11,
            uuid_index: (cmd.cdw14 & 0x7f) as u8,
        })
    }
}

/// The fields of a Set Features command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SetFeatures {
    /// Feature identifier (CDW10 bits 7:0).
    pub fid: u8,
    /// Save (CDW10 bit 31): make the value persist across resets. A target without
    /// saveable features answers [`Status::FEATURE_ID_NOT_SAVEABLE`].
    pub save: bool,
    /// Namespace identifier (namespace specific features).
    pub nsid: u32,
    /// Feature specific CDW11.
    pub cdw11: u32,
    /// Feature specific CDW12.
    pub cdw12: u32,
    /// Feature specific CDW13.
    pub cdw13: u32,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
}

impl SetFeatures {
    /// Decode.
    pub fn decode(cmd: &NvmeCmd) -> Result<SetFeatures, Status> {
        if cmd.opc != admin::SET_FEATURES {
            return Err(Status::INVALID_OPCODE);
        }
        Ok(SetFeatures {
            fid: cmd.cdw10 as u8,
            save: cmd.cdw10 & (1 << 31) != 0,
            nsid: cmd.nsid,
            cdw11: cmd.cdw11,
            cdw12: cmd.cdw12,
            cdw13: cmd.cdw13,
            uuid_index: (cmd.cdw14 & 0x7f) as u8,
        })
    }
}

/// Number of Queues (07h): I/O submission and completion queues requested, 0-based, in
/// Set Features CDW11; allocated, 0-based, in the completion's dword 0.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NumberOfQueues {
    /// Submission queues, 0-based (NSQR / NSQA, bits 15:0).
    pub nsq: u16,
    /// Completion queues, 0-based (NCQR / NCQA, bits 31:16).
    pub ncq: u16,
}

impl NumberOfQueues {
    /// Decode a request (Set Features CDW11). 65535 (65536 queues) is Invalid Field.
    pub fn decode_request(cdw11: u32) -> Result<NumberOfQueues, Status> {
        let q = NumberOfQueues {
            nsq: cdw11 as u16,
            ncq: (cdw11 >> 16) as u16,
        };
        if q.nsq == u16::MAX || q.ncq == u16::MAX {
            return Err(Status::INVALID_FIELD);
        }
        Ok(q)
    }
    /// The allocation for `count` (1-based, at least 1) I/O queues of each kind.
    pub fn allocated(count: u16) -> NumberOfQueues {
        let n = count.max(1) - 1;
        NumberOfQueues { nsq: n, ncq: n }
    }
    /// Encode as CDW11 / completion dword 0.
    pub fn encode(&self) -> u32 {
        self.nsq as u32 | (self.ncq as u32) << 16
    }
    /// Submission queues (1-based).
    pub fn sq_count(&self) -> u32 {
        self.nsq as u32 + 1
    }
    /// Completion queues (1-based).
    pub fn cq_count(&self) -> u32 {
        self.ncq as u32 + 1
    }
}

/// Keep Alive Timer (0Fh): KATO in milliseconds is CDW11 (Set) / dword 0 (Get).
pub fn keep_alive_timeout_ms(cdw11: u32) -> u32 {
    cdw11
}

/// Round a requested keep alive timeout up to the controller's granularity (KAS, in
/// 100 ms units), as the spec asks; 0 (disabled) stays 0.
pub fn round_kato(kato_ms: u32, kas_100ms: u16) -> u32 {
    let g = (kas_100ms.max(1) as u32) * 100;
    kato_ms.div_ceil(g).saturating_mul(g)
}

/// Asynchronous Event Configuration bits 7:0: SMART / health critical warnings to report.
pub const AEC_SMART_MASK: u32 = 0xff;
/// Asynchronous Event Configuration: namespace attribute notices.
pub const AEC_NS_ATTR: u32 = 1 << 8;
/// Asynchronous Event Configuration: firmware activation notices.
pub const AEC_FW_ACTIVATION: u32 = 1 << 9;
/// Asynchronous Event Configuration: telemetry log notices.
pub const AEC_TELEMETRY: u32 = 1 << 10;
/// Asynchronous Event Configuration: ANA change notices.
pub const AEC_ANA_CHANGE: u32 = 1 << 11;
/// Asynchronous Event Configuration: discovery log page change notices.
pub const AEC_DISCOVERY_CHANGE: u32 = 1 << 31;

/// Volatile Write Cache (06h): whether CDW11 / dword 0 has the cache enabled (WCE, bit 0).
pub fn write_cache_enabled(cdw11: u32) -> bool {
    cdw11 & 1 != 0
}

/// Host Identifier (81h) CDW11 bit 0 (EXHID): the host asks for the 128-bit identifier.
/// Over fabrics the identifier comes from Connect: Get Features with EXHID clear is Host
/// Identifier Inconsistent Format, and Set Features is Command Sequence Error.
pub fn host_id_extended(cdw11: u32) -> bool {
    cdw11 & 1 != 0
}

/// Arbitration (01h) CDW11 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Arbitration {
    /// Arbitration burst, 2^n commands (bits 2:0; 111b = no limit).
    pub burst: u8,
    /// Low priority weight, 0-based (bits 15:8).
    pub lpw: u8,
    /// Medium priority weight (bits 23:16).
    pub mpw: u8,
    /// High priority weight (bits 31:24).
    pub hpw: u8,
}

impl Arbitration {
    /// Decode.
    pub fn decode(v: u32) -> Arbitration {
        Arbitration {
            burst: (v & 0x7) as u8,
            lpw: (v >> 8) as u8,
            mpw: (v >> 16) as u8,
            hpw: (v >> 24) as u8,
        }
    }
    /// Encode.
    pub fn encode(&self) -> u32 {
        (self.burst & 0x7) as u32
            | (self.lpw as u32) << 8
            | (self.mpw as u32) << 16
            | (self.hpw as u32) << 24
    }
}

/// Temperature Threshold (04h) CDW11 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TempThreshold {
    /// Threshold in Kelvin (bits 15:0).
    pub tmpth: u16,
    /// Sensor: 0 composite, 1-8 sensors, 15 all (bits 19:16).
    pub tmpsel: u8,
    /// 0 over-temperature, 1 under-temperature threshold (bits 21:20).
    pub thsel: u8,
}

impl TempThreshold {
    /// Decode.
    pub fn decode(v: u32) -> TempThreshold {
        TempThreshold {
            tmpth: v as u16,
            tmpsel: (v >> 16 & 0xf) as u8,
            thsel: (v >> 20 & 0x3) as u8,
        }
    }
    /// Encode.
    pub fn encode(&self) -> u32 {
        self.tmpth as u32 | ((self.tmpsel & 0xf) as u32) << 16 | ((self.thsel & 0x3) as u32) << 20
    }
}

/// Error Recovery (05h) CDW11 fields.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorRecovery {
    /// Time limited error recovery, 100 ms units (bits 15:0).
    pub tler: u16,
    /// Deallocated or unwritten logical block error enable (bit 16).
    pub dulbe: bool,
}

impl ErrorRecovery {
    /// Decode.
    pub fn decode(v: u32) -> ErrorRecovery {
        ErrorRecovery {
            tler: v as u16,
            dulbe: v >> 16 & 1 != 0,
        }
    }
    /// Encode.
    pub fn encode(&self) -> u32 {
        self.tler as u32 | (self.dulbe as u32) << 16
    }
}

/// Power Management (02h): power state (bits 4:0) and workload hint (bits 7:5).
pub fn power_state(cdw11: u32) -> (u8, u8) {
    ((cdw11 & 0x1f) as u8, (cdw11 >> 5 & 0x7) as u8)
}

/// Interrupt Coalescing (08h): aggregation threshold (bits 7:0) and time (bits 15:8).
pub fn interrupt_coalescing(cdw11: u32) -> (u8, u8) {
    (cdw11 as u8, (cdw11 >> 8) as u8)
}

/// Timestamp (0Eh) data, 8 bytes: milliseconds since the epoch (bytes 5:0) and attributes
/// (byte 6: bit 0 Synch clear — the count never stopped; bits 3:1 origin, 001b = set by a
/// host with Set Features, 000b = counting since reset).
pub fn timestamp_data(ms: u64, set_by_host: bool) -> [u8; 8] {
    let mut b = [0u8; 8];
    b[..6].copy_from_slice(&ms.to_le_bytes()[..6]);
    b[6] = (set_by_host as u8) << 1;
    b
}

/// Parse Timestamp data: the 48-bit millisecond value.
pub fn parse_timestamp(data: &[u8]) -> Result<u64, Status> {
    let b = data.get(..6).ok_or(Status::DATA_SGL_LENGTH_INVALID)?;
    Ok(u64::from_le_bytes([
        b[0], b[1], b[2], b[3], b[4], b[5], 0, 0,
    ]))
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
    fn get_features_fields() {
        let g = GetFeatures::decode(&cmd(admin::GET_FEATURES, 3 << 8 | 0x07, 0)).unwrap();
        assert_eq!(g.fid, FID_NUMBER_OF_QUEUES);
        assert_eq!(g.sel, Select::SupportedCapabilities);
        assert_eq!(g.nsid, 1);
        let g = GetFeatures::decode(&cmd(admin::GET_FEATURES, 0x81, 1)).unwrap();
        assert_eq!((g.fid, g.sel), (FID_HOST_IDENTIFIER, Select::Current));
        assert!(host_id_extended(g.cdw11));
        assert_eq!(
            GetFeatures::decode(&cmd(admin::GET_FEATURES, 4 << 8 | 0x07, 0)),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            GetFeatures::decode(&cmd(admin::SET_FEATURES, 0x07, 0)),
            Err(Status::INVALID_OPCODE)
        );
    }

    #[test]
    fn set_features_fields() {
        let s = SetFeatures::decode(&cmd(admin::SET_FEATURES, 1 << 31 | 0x0f, 15000)).unwrap();
        assert_eq!(s.fid, FID_KEEP_ALIVE_TIMER);
        assert!(s.save);
        assert_eq!(keep_alive_timeout_ms(s.cdw11), 15000);
        let s = SetFeatures::decode(&cmd(admin::SET_FEATURES, 0x0b, AEC_NS_ATTR)).unwrap();
        assert!(!s.save);
        assert_eq!(s.cdw11 & AEC_NS_ATTR, 1 << 8);
    }

    #[test]
    fn number_of_queues() {
        // Linux asks for (n-1) | (n-1) << 16.
        let q = NumberOfQueues::decode_request(3 | 3 << 16).unwrap();
        assert_eq!((q.sq_count(), q.cq_count()), (4, 4));
        assert_eq!(q.encode(), 0x0003_0003);
        assert_eq!(
            NumberOfQueues::decode_request(0xffff),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            NumberOfQueues::decode_request(0xffff_0000),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(NumberOfQueues::allocated(127).encode(), 126 | 126 << 16);
        assert_eq!(NumberOfQueues::allocated(0).encode(), 0);
    }

    #[test]
    fn kato_rounding() {
        assert_eq!(round_kato(15000, 10), 15000);
        assert_eq!(round_kato(15001, 10), 16000);
        assert_eq!(round_kato(0, 10), 0);
        assert_eq!(round_kato(50, 0), 100, "KAS 0 treated as 100 ms");
        assert_eq!(round_kato(u32::MAX, 10), u32::MAX);
    }

    #[test]
    fn simple_feature_encodings() {
        let a = Arbitration {
            burst: 7,
            lpw: 1,
            mpw: 2,
            hpw: 3,
        };
        assert_eq!(a.encode(), 0x0302_0107);
        assert_eq!(Arbitration::decode(a.encode()), a);
        let t = TempThreshold {
            tmpth: 350,
            tmpsel: 15,
            thsel: 1,
        };
        assert_eq!(t.encode(), 350 | 15 << 16 | 1 << 20);
        assert_eq!(TempThreshold::decode(t.encode()), t);
        let e = ErrorRecovery {
            tler: 5,
            dulbe: true,
        };
        assert_eq!(e.encode(), 0x1_0005);
        assert_eq!(ErrorRecovery::decode(e.encode()), e);
        assert_eq!(power_state(0b101_00011), (3, 5));
        assert_eq!(interrupt_coalescing(0x0a05), (5, 10));
        assert!(write_cache_enabled(1));
        assert!(!write_cache_enabled(2));
    }

    #[test]
    fn timestamp() {
        let d = timestamp_data(0x0000_0102_0304_0506, true);
        assert_eq!(d, [6, 5, 4, 3, 2, 1, 2, 0]);
        assert_eq!(timestamp_data(1, false)[6], 0);
        assert_eq!(parse_timestamp(&d), Ok(0x0102_0304_0506));
        assert_eq!(
            parse_timestamp(&d[..5]),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
    }
}
