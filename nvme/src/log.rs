//! Get Log Page (admin opcode 0x02, NVMe Base 2.0 §5.16): log identifiers, the command's
//! fields with offset/length checks, the log page structures the target serves — error
//! information, SMART/health, firmware slot, commands supported and effects, discovery,
//! reservation notification (the changed namespace list is [`NsList::changed`]). The target
//! copies the window a command asks for into a request's buffers (`keel_nvmf::iov::copy_log_page`).

use super::bytes::{self, le_fields};
use super::cmd::NvmeCmd;
use super::opcode::admin;
use super::status::Status;

pub use super::identify::NsList;

/// Log page: supported log pages.
pub const LID_SUPPORTED_LOG_PAGES: u8 = 0x00;
/// Log page: error information.
pub const LID_ERROR: u8 = 0x01;
/// Log page: SMART / health information.
pub const LID_SMART: u8 = 0x02;
/// Log page: firmware slot information.
pub const LID_FIRMWARE_SLOT: u8 = 0x03;
/// Log page: changed namespace list.
pub const LID_CHANGED_NS: u8 = 0x04;
/// Log page: commands supported and effects.
pub const LID_CMD_EFFECTS: u8 = 0x05;
/// Log page: device self-test.
pub const LID_DEVICE_SELF_TEST: u8 = 0x06;
/// Log page: telemetry host-initiated.
pub const LID_TELEMETRY_HOST: u8 = 0x07;
/// Log page: telemetry controller-initiated.
pub const LID_TELEMETRY_CTRL: u8 = 0x08;
/// Log page: endurance group information.
pub const LID_ENDURANCE_GROUP: u8 = 0x09;
/// Log page: asymmetric namespace access.
pub const LID_ANA: u8 = 0x0C;
/// Log page: persistent event log.
pub const LID_PERSISTENT_EVENT: u8 = 0x0D;
/// Log page: discovery (discovery controllers).
pub const LID_DISCOVERY: u8 = 0x70;
/// Log page: reservation notification.
pub const LID_RESERVATION: u8 = 0x80;
/// Log page: sanitize status.
pub const LID_SANITIZE: u8 = 0x81;

/// The fields of a Get Log Page command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GetLogPage {
    /// Log page identifier (CDW10 bits 7:0).
    pub lid: u8,
    /// Log specific parameter (CDW10 bits 14:8).
    pub lsp: u8,
    /// Retain asynchronous event (CDW10 bit 15): if clear, reading the page clears the
    /// pending event it reports.
    pub rae: bool,
    /// Bytes requested: (NUMDU:NUMDL + 1) dwords × 4.
    pub len: u64,
    /// Byte offset into the page (LPOU:LPOL).
    pub offset: u64,
    /// Log specific identifier (CDW11 bits 31:16).
    pub lsi: u16,
    /// UUID index (CDW14 bits 6:0).
    pub uuid_index: u8,
    /// Command set identifier (CDW14 bits 31:24).
    pub csi: u8,
}

impl GetLogPage {
    /// A Get Log Page command with these raw dwords (CDW10: NUMDL, RAE, LSP, LID; CDW11:
    /// LSI, NUMDU; CDW12/13: LPOL/LPOU; CDW14: CSI, UUID index) and every other field zero:
    /// what a host puts on the wire and what tests of [`GetLogPage::decode`] and of its users
    /// feed in.
    pub fn command(cdw10: u32, cdw11: u32, cdw12: u32, cdw13: u32, cdw14: u32) -> NvmeCmd {
        NvmeCmd {
            opc: admin::GET_LOG_PAGE,
            cdw10,
            cdw11,
            cdw12,
            cdw13,
            cdw14,
            ..NvmeCmd::default()
        }
    }

    /// Decode a Get Log Page command. Invalid Field if the offset is not dword aligned or
    /// the Offset Type bit asks for an index offset (not supported).
    pub fn decode(cmd: &NvmeCmd) -> Result<GetLogPage, Status> {
        if cmd.opc != admin::GET_LOG_PAGE {
            return Err(Status::INVALID_OPCODE);
        }
        let numdl = (cmd.cdw10 >> 16) as u64;
        let numdu = (cmd.cdw11 & 0xffff) as u64;
        let offset = cmd.cdw12 as u64 | (cmd.cdw13 as u64) << 32;
        if cmd.cdw14 & (1 << 23) != 0 || offset & 0x3 != 0 {
            return Err(Status::INVALID_FIELD);
        }
        Ok(GetLogPage {
            lid: cmd.cdw10 as u8,
            lsp: (cmd.cdw10 >> 8 & 0x7f) as u8,
            rae: cmd.cdw10 & (1 << 15) != 0,
            len: ((numdu << 16 | numdl) + 1) * 4,
            offset,
            lsi: (cmd.cdw11 >> 16) as u16,
            uuid_index: (cmd.cdw14 & 0x7f) as u8,
            csi: (cmd.cdw14 >> 24) as u8,
        })
    }

    /// The part of a `page_len`-byte page this command reads, as (start, bytes to copy);
    /// the rest of the host's buffer (`len` − bytes) reads as zeroes. Invalid Field if the
    /// offset is past the end of the page.
    pub fn window(&self, page_len: usize) -> Result<(usize, usize), Status> {
        if self.offset > page_len as u64 {
            return Err(Status::INVALID_FIELD);
        }
        let start = self.offset as usize;
        let n = (page_len - start).min(usize::try_from(self.len).unwrap_or(usize::MAX));
        Ok((start, n))
    }
}

/// One error information log entry (64 bytes).
#[derive(Clone, PartialEq, Eq)]
pub struct ErrorLogEntry {
    buf: [u8; 64],
}

impl Default for ErrorLogEntry {
    fn default() -> Self {
        ErrorLogEntry { buf: [0; 64] }
    }
}

impl std::fmt::Debug for ErrorLogEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ErrorLogEntry")
            .field("error_count", &self.error_count())
            .field("sqid", &self.sqid())
            .field("cid", &self.cid())
            .field("status", &format_args!("{:#x}", self.status_field()))
            .finish()
    }
}

impl ErrorLogEntry {
    /// Size on the wire.
    pub const SIZE: usize = 64;
    /// All zeroes (an unused entry).
    pub fn new() -> ErrorLogEntry {
        ErrorLogEntry::default()
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.buf
    }
    le_fields! { 64;
        /// Error count: a unique, increasing number for this error (0 = unused entry).
        error_count / set_error_count: u64 = 0;
        /// Submission queue id of the failed command.
        sqid / set_sqid: u16 = 8;
        /// Command id of the failed command.
        cid / set_cid: u16 = 10;
        /// Status field of the completion (bits 15:1; bit 0 is the phase tag).
        status_field / set_status_field: u16 = 12;
        /// Parameter error location: byte (bits 7:0) and bit (bits 10:8) in the command.
        param_error_location / set_param_error_location: u16 = 14;
        /// First LBA that had the error.
        lba / set_lba: u64 = 16;
        /// Namespace of the error.
        nsid / set_nsid: u32 = 24;
        /// Vendor specific information available (log page id).
        vs / set_vs: u8 = 28;
        /// Transport type.
        trtype / set_trtype: u8 = 29;
        /// Command specific information.
        cs / set_cs: u64 = 32;
        /// Transport type specific information.
        ttsi / set_ttsi: u16 = 40;
    }
    /// The parameter error location value for byte `byte`, bit `bit` of the SQE.
    pub fn param_location(byte: u8, bit: u8) -> u16 {
        byte as u16 | ((bit & 0x7) as u16) << 8
    }
}

/// Critical warning bit: available spare below threshold.
pub const CRIT_SPARE: u8 = 1 << 0;
/// Critical warning bit: temperature out of range.
pub const CRIT_TEMPERATURE: u8 = 1 << 1;
/// Critical warning bit: reliability degraded.
pub const CRIT_RELIABILITY: u8 = 1 << 2;
/// Critical warning bit: media placed in read-only mode.
pub const CRIT_READ_ONLY: u8 = 1 << 3;
/// Critical warning bit: volatile memory backup failed.
pub const CRIT_VOLATILE_BACKUP: u8 = 1 << 4;

/// SMART / health information log (02h), 512 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct SmartLog {
    buf: [u8; 512],
}

impl Default for SmartLog {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for SmartLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SmartLog")
            .field("critical_warning", &self.critical_warning())
            .field("data_units_read", &self.data_units_read())
            .field("data_units_written", &self.data_units_written())
            .finish_non_exhaustive()
    }
}

impl SmartLog {
    /// Size on the wire.
    pub const SIZE: usize = 512;
    /// All zeroes.
    pub fn new() -> SmartLog {
        SmartLog { buf: [0; 512] }
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; 512] {
        &self.buf
    }
    /// Data units for `bytes` transferred: thousands of 512-byte units, rounded up.
    pub fn data_units(bytes: u128) -> u128 {
        bytes.div_ceil(512 * 1000)
    }
    le_fields! { 512;
        /// Critical warning bits ([`CRIT_SPARE`], ...).
        critical_warning / set_critical_warning: u8 = 0;
        /// Composite temperature (Kelvin).
        temperature / set_temperature: u16 = 1;
        /// Available spare (percent).
        available_spare / set_available_spare: u8 = 3;
        /// Available spare threshold (percent).
        available_spare_threshold / set_available_spare_threshold: u8 = 4;
        /// Percentage used (of the rated endurance).
        percent_used / set_percent_used: u8 = 5;
        /// Endurance group critical warning summary.
        endurance_group_warning / set_endurance_group_warning: u8 = 6;
        /// Data units read ([`SmartLog::data_units`]).
        data_units_read / set_data_units_read: u128 = 32;
        /// Data units written.
        data_units_written / set_data_units_written: u128 = 48;
        /// Host read commands completed.
        host_read_commands / set_host_read_commands: u128 = 64;
        /// Host write commands completed.
        host_write_commands / set_host_write_commands: u128 = 80;
        /// Controller busy time (minutes).
        controller_busy_time / set_controller_busy_time: u128 = 96;
        /// Power cycles.
        power_cycles / set_power_cycles: u128 = 112;
        /// Power on hours.
        power_on_hours / set_power_on_hours: u128 = 128;
        /// Unsafe shutdowns.
        unsafe_shutdowns / set_unsafe_shutdowns: u128 = 144;
        /// Media and data integrity errors.
        media_errors / set_media_errors: u128 = 160;
        /// Number of error information log entries over the controller's life.
        num_error_log_entries / set_num_error_log_entries: u128 = 176;
        /// Warning composite temperature time (minutes).
        warning_temp_time / set_warning_temp_time: u32 = 192;
        /// Critical composite temperature time (minutes).
        critical_temp_time / set_critical_temp_time: u32 = 196;
    }
}

/// Firmware slot information log (03h), 512 bytes.
#[derive(Clone, PartialEq, Eq)]
pub struct FirmwareSlotLog {
    buf: [u8; 512],
}

impl Default for FirmwareSlotLog {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for FirmwareSlotLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("FirmwareSlotLog")
            .field("afi", &self.afi())
            .finish_non_exhaustive()
    }
}

impl FirmwareSlotLog {
    /// Size on the wire.
    pub const SIZE: usize = 512;
    /// All zeroes.
    pub fn new() -> FirmwareSlotLog {
        FirmwareSlotLog { buf: [0; 512] }
    }
    /// One slot (1), active, holding revision `fr` — what a software target reports.
    pub fn single(fr: &str) -> FirmwareSlotLog {
        let mut l = FirmwareSlotLog::new();
        l.set_afi(1);
        l.set_slot(1, fr);
        l
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; 512] {
        &self.buf
    }
    le_fields! { 512;
        /// Active firmware info: active slot (bits 2:0), slot at next reset (bits 6:4).
        afi / set_afi: u8 = 0;
    }
    /// Firmware revision in slot `slot` (1..=7), 8 ASCII bytes space padded. Returns false
    /// if the slot does not exist or the revision was cut.
    pub fn set_slot(&mut self, slot: usize, fr: &str) -> bool {
        if !(1..=7).contains(&slot) {
            return false;
        }
        let off = 8 * slot;
        bytes::put_str(&mut self.buf[off..off + 8], fr, b' ')
    }
    /// Firmware revision in slot `slot` (1..=7).
    pub fn slot(&self, slot: usize) -> Option<&[u8]> {
        (1..=7)
            .contains(&slot)
            .then(|| &self.buf[8 * slot..8 * slot + 8])
    }
}

/// Commands supported and effects: command supported.
pub const EFFECTS_CSUPP: u32 = 1 << 0;
/// Commands supported and effects: logical block content change.
pub const EFFECTS_LBCC: u32 = 1 << 1;
/// Commands supported and effects: namespace capability change.
pub const EFFECTS_NCC: u32 = 1 << 2;
/// Commands supported and effects: namespace inventory change.
pub const EFFECTS_NIC: u32 = 1 << 3;
/// Commands supported and effects: controller capability change.
pub const EFFECTS_CCC: u32 = 1 << 4;

/// Commands supported and effects log (05h), 4096 bytes: one dword per admin opcode
/// (offset 0) and per I/O opcode (offset 1024).
#[derive(Clone, PartialEq, Eq)]
pub struct CommandEffectsLog {
    buf: [u8; 4096],
}

impl Default for CommandEffectsLog {
    fn default() -> Self {
        Self::new()
    }
}

impl std::fmt::Debug for CommandEffectsLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CommandEffectsLog").finish_non_exhaustive()
    }
}

impl CommandEffectsLog {
    /// Size on the wire.
    pub const SIZE: usize = 4096;
    /// Nothing supported.
    pub fn new() -> CommandEffectsLog {
        CommandEffectsLog { buf: [0; 4096] }
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; 4096] {
        &self.buf
    }
    /// Set the effects of admin opcode `opc`.
    pub fn set_admin(&mut self, opc: u8, effects: u32) {
        bytes::write(&mut self.buf, 4 * opc as usize, effects);
    }
    /// Set the effects of I/O opcode `opc`.
    pub fn set_io(&mut self, opc: u8, effects: u32) {
        bytes::write(&mut self.buf, 1024 + 4 * opc as usize, effects);
    }
    /// Effects of admin opcode `opc`.
    pub fn admin(&self, opc: u8) -> u32 {
        bytes::read(&self.buf, 4 * opc as usize).unwrap_or(0)
    }
    /// Effects of I/O opcode `opc`.
    pub fn io(&self, opc: u8) -> u32 {
        bytes::read(&self.buf, 1024 + 4 * opc as usize).unwrap_or(0)
    }
}

/// Discovery entry SUBTYPE: referral to another discovery service.
pub const SUBTYPE_DISCOVERY_REFERRAL: u8 = 1;
/// Discovery entry SUBTYPE: an NVM subsystem.
pub const SUBTYPE_NVME: u8 = 2;
/// Discovery entry SUBTYPE: the current discovery subsystem.
pub const SUBTYPE_CURRENT_DISCOVERY: u8 = 3;
/// TREQ bits 1:0: secure channel requirement not specified.
pub const TREQ_SECURE_NOT_SPECIFIED: u8 = 0;
/// TREQ bits 1:0: secure channel required.
pub const TREQ_SECURE_REQUIRED: u8 = 1;
/// TREQ bits 1:0: secure channel not required.
pub const TREQ_SECURE_NOT_REQUIRED: u8 = 2;
/// TREQ bit: SQ flow control disable supported.
pub const TREQ_DISABLE_SQFLOW: u8 = 1 << 2;
/// TSAS for TCP: SECTYPE none.
pub const TCP_SECTYPE_NONE: u8 = 0;
/// TSAS for RDMA: RDMA_QPTYPE reliable connected.
pub const RDMA_QPTYPE_CONNECTED: u8 = 1;
/// TSAS for RDMA: RDMA_PRTYPE no provider specified.
pub const RDMA_PRTYPE_NOT_SPECIFIED: u8 = 1;
/// TSAS for RDMA: RDMA_CMS RDMA-CM.
pub const RDMA_CMS_RDMA_CM: u8 = 1;

/// The first TSAS bytes of a discovery log entry for transport type `trtype` (wire value):
/// TCP SECTYPE none; RDMA reliable connected, no provider type, RDMA-CM (as the Linux host
/// and SPDK expect).
pub fn tsas_for(trtype: u8) -> [u8; 4] {
    if trtype == TRTYPE_RDMA {
        [
            RDMA_QPTYPE_CONNECTED,
            RDMA_PRTYPE_NOT_SPECIFIED,
            RDMA_CMS_RDMA_CM,
            0,
        ]
    } else {
        [TCP_SECTYPE_NONE, 0, 0, 0]
    }
}
/// ADRFAM: IPv4.
pub const ADRFAM_IPV4: u8 = 1;
/// ADRFAM: IPv6.
pub const ADRFAM_IPV6: u8 = 2;
/// TRTYPE: RDMA.
pub const TRTYPE_RDMA: u8 = 1;
/// TRTYPE: TCP.
pub const TRTYPE_TCP: u8 = 3;

/// One discovery log page entry (1024 bytes), as the discovery controller reports a
/// subsystem's listener.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct DiscoveryEntry {
    /// Transport type ([`TRTYPE_TCP`], [`TRTYPE_RDMA`]).
    pub trtype: u8,
    /// Address family ([`ADRFAM_IPV4`], [`ADRFAM_IPV6`]).
    pub adrfam: u8,
    /// Subsystem type ([`SUBTYPE_NVME`], ...).
    pub subtype: u8,
    /// Transport requirements ([`TREQ_SECURE_NOT_REQUIRED`], ...).
    pub treq: u8,
    /// Port id.
    pub portid: u16,
    /// Controller id (0xFFFF: dynamic controller model).
    pub cntlid: u16,
    /// Admin max SQ size (entries).
    pub asqsz: u16,
    /// Entry flags.
    pub eflags: u16,
    /// Transport service id (port number), ASCII.
    pub trsvcid: String,
    /// Subsystem NQN.
    pub subnqn: String,
    /// Transport address (IP literal), ASCII.
    pub traddr: String,
    /// Transport specific address subtype: the first bytes of TSAS (for TCP, byte 0 is
    /// SECTYPE; for RDMA QPTYPE, PRTYPE, CMS).
    pub tsas: [u8; 4],
}

impl DiscoveryEntry {
    /// Size on the wire.
    pub const SIZE: usize = 1024;
    /// Encode. TRSVCID and TRADDR are space padded, SUBNQN NUL padded (as SPDK does).
    pub fn encode(&self) -> [u8; 1024] {
        let mut b = [0u8; 1024];
        b[0] = self.trtype;
        b[1] = self.adrfam;
        b[2] = self.subtype;
        b[3] = self.treq;
        bytes::write(&mut b, 4, self.portid);
        bytes::write(&mut b, 6, self.cntlid);
        bytes::write(&mut b, 8, self.asqsz);
        bytes::write(&mut b, 10, self.eflags);
        bytes::put_str(&mut b[32..64], &self.trsvcid, b' ');
        bytes::put_str(&mut b[256..511], &self.subnqn, 0);
        bytes::put_str(&mut b[512..768], &self.traddr, b' ');
        b[768..772].copy_from_slice(&self.tsas);
        b
    }
}

/// The discovery log page: a 1024-byte header (GENCTR, NUMREC, RECFMT) followed by one
/// 1024-byte entry per record.
pub fn discovery_log_page(genctr: u64, entries: &[DiscoveryEntry]) -> Vec<u8> {
    let mut page = vec![0u8; 1024 * (1 + entries.len())];
    bytes::write(&mut page, 0, genctr);
    bytes::write(&mut page, 8, entries.len() as u64);
    bytes::write(&mut page, 16, 0u16); // RECFMT 0
    for (i, e) in entries.iter().enumerate() {
        let at = 1024 * (i + 1);
        page[at..at + 1024].copy_from_slice(&e.encode());
    }
    page
}

/// Reservation notification log page types (RNLPT).
pub mod rnlpt {
    /// Empty log page.
    pub const EMPTY: u8 = 0;
    /// Registration preempted.
    pub const REGISTRATION_PREEMPTED: u8 = 1;
    /// Reservation released.
    pub const RESERVATION_RELEASED: u8 = 2;
    /// Reservation preempted.
    pub const RESERVATION_PREEMPTED: u8 = 3;
}

/// Reservation notification log page (80h), 64 bytes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ReservationNotificationLog {
    buf: [u8; 64],
}

impl Default for ReservationNotificationLog {
    fn default() -> Self {
        ReservationNotificationLog { buf: [0; 64] }
    }
}

impl ReservationNotificationLog {
    /// Size on the wire.
    pub const SIZE: usize = 64;
    /// An empty page.
    pub fn new() -> ReservationNotificationLog {
        ReservationNotificationLog::default()
    }
    /// The wire bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.buf
    }
    le_fields! { 64;
        /// Log page count (increments per notification; 0 = empty).
        log_page_count / set_log_page_count: u64 = 0;
        /// Reservation notification log page type ([`rnlpt`]).
        rnlpt / set_rnlpt: u8 = 8;
        /// Number of available log pages after this one.
        nalp / set_nalp: u8 = 9;
        /// Namespace id.
        nsid / set_nsid: u32 = 12;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn get_log_page_fields() {
        // SMART, RAE, 512 bytes = 128 dwords (NUMDL 127).
        let g = GetLogPage::decode(&GetLogPage::command(
            127 << 16 | 1 << 15 | 0x05 << 8 | 0x02,
            0x0007_0000,
            0,
            0,
            0,
        ))
        .unwrap();
        assert_eq!(g.lid, LID_SMART);
        assert_eq!(g.lsp, 5);
        assert!(g.rae);
        assert_eq!(g.len, 512);
        assert_eq!(g.lsi, 7);
        assert_eq!(g.offset, 0);
        // NUMDU extends the count; LPOU:LPOL the offset.
        let g = GetLogPage::decode(&GetLogPage::command(
            0xffff << 16 | 0x70,
            0x1,
            8,
            1,
            0x0200_0003,
        ))
        .unwrap();
        assert_eq!(g.len, 0x2_0000 * 4);
        assert_eq!(g.offset, 1 << 32 | 8);
        assert_eq!(g.csi, 2);
        assert_eq!(g.uuid_index, 3);
        // The largest request does not overflow.
        let g = GetLogPage::decode(&GetLogPage::command(0xffff_0000, 0xffff, 0, 0, 0)).unwrap();
        assert_eq!(g.len, 1 << 34);
        // Unaligned offset, index offset type, wrong opcode.
        assert_eq!(
            GetLogPage::decode(&GetLogPage::command(1, 0, 2, 0, 0)),
            Err(Status::INVALID_FIELD)
        );
        assert_eq!(
            GetLogPage::decode(&GetLogPage::command(1, 0, 0, 0, 1 << 23)),
            Err(Status::INVALID_FIELD)
        );
        let mut c = GetLogPage::command(1, 0, 0, 0, 0);
        c.opc = admin::IDENTIFY;
        assert_eq!(GetLogPage::decode(&c), Err(Status::INVALID_OPCODE));
    }

    #[test]
    fn window_checks_the_offset() {
        let g = |offset: u64, len: u64| GetLogPage {
            lid: 0,
            lsp: 0,
            rae: false,
            len,
            offset,
            lsi: 0,
            uuid_index: 0,
            csi: 0,
        };
        assert_eq!(g(0, 4096).window(512), Ok((0, 512)));
        assert_eq!(g(256, 64).window(512), Ok((256, 64)));
        assert_eq!(g(512, 64).window(512), Ok((512, 0)));
        assert_eq!(g(516, 64).window(512), Err(Status::INVALID_FIELD));
        assert_eq!(g(!3, 4).window(512), Err(Status::INVALID_FIELD));
    }

    #[test]
    fn error_log_entry_layout() {
        let mut e = ErrorLogEntry::new();
        e.set_error_count(0x0102);
        e.set_sqid(3);
        e.set_cid(0x0405);
        e.set_status_field(Status::INVALID_FIELD.to_field());
        e.set_param_error_location(ErrorLogEntry::param_location(44, 2));
        e.set_lba(0x0a0b);
        e.set_nsid(9);
        e.set_trtype(TRTYPE_TCP);
        e.set_cs(0x77);
        let b = e.as_bytes();
        assert_eq!(&b[0..2], &[2, 1]);
        assert_eq!(&b[8..10], &[3, 0]);
        assert_eq!(&b[10..12], &[5, 4]);
        assert_eq!(u16::from_le_bytes([b[12], b[13]]) >> 1 & 0xff, 0x02);
        assert_eq!(&b[14..16], &[44, 2]);
        assert_eq!(&b[16..18], &[0x0b, 0x0a]);
        assert_eq!(b[24], 9);
        assert_eq!(b[29], 3);
        assert_eq!(b[32], 0x77);
        assert_eq!(e.cid(), 0x0405);
    }

    #[test]
    fn smart_log_layout() {
        let mut s = SmartLog::new();
        s.set_critical_warning(CRIT_READ_ONLY);
        s.set_temperature(0x0143);
        s.set_available_spare(100);
        s.set_available_spare_threshold(10);
        s.set_percent_used(3);
        s.set_data_units_read(SmartLog::data_units(1_024_001));
        s.set_data_units_written(0x0102_0304_0506_0708_090a_0b0c_0d0e_0f10);
        s.set_host_read_commands(5);
        s.set_host_write_commands(6);
        s.set_power_cycles(7);
        s.set_power_on_hours(8);
        s.set_unsafe_shutdowns(9);
        s.set_media_errors(10);
        s.set_num_error_log_entries(11);
        s.set_warning_temp_time(12);
        let b = s.as_bytes();
        assert_eq!(b[0], 8);
        assert_eq!(&b[1..3], &[0x43, 0x01]);
        assert_eq!((b[3], b[4], b[5]), (100, 10, 3));
        assert_eq!(
            b[32], 3,
            "1,024,001 bytes = 2.000002 thousand units, rounded up"
        );
        assert_eq!(b[48], 0x10);
        assert_eq!(b[63], 0x01);
        assert_eq!((b[64], b[80], b[112], b[128]), (5, 6, 7, 8));
        assert_eq!((b[144], b[160], b[176], b[192]), (9, 10, 11, 12));
        assert_eq!(SmartLog::data_units(0), 0);
        assert_eq!(SmartLog::data_units(512_000), 1);
        assert_eq!(SmartLog::data_units(512_001), 2);
    }

    #[test]
    fn firmware_slot_layout() {
        let f = FirmwareSlotLog::single("0.1.0");
        let b = f.as_bytes();
        assert_eq!(b[0], 1);
        assert_eq!(&b[8..16], b"0.1.0   ");
        assert_eq!(&b[16..24], &[0; 8]);
        assert_eq!(f.slot(1), Some(&b"0.1.0   "[..]));
        assert_eq!(f.slot(0), None);
        let mut f = FirmwareSlotLog::new();
        assert!(f.set_slot(7, "x"));
        assert_eq!(f.as_bytes()[56], b'x');
        assert!(!f.set_slot(8, "x"));
        assert!(!f.set_slot(0, "x"));
    }

    #[test]
    fn command_effects_layout() {
        let mut l = CommandEffectsLog::new();
        l.set_admin(admin::IDENTIFY, EFFECTS_CSUPP);
        l.set_io(crate::opcode::nvm::WRITE, EFFECTS_CSUPP | EFFECTS_LBCC);
        assert_eq!(l.as_bytes()[24], 1);
        assert_eq!(l.as_bytes()[1028], 3);
        assert_eq!(l.admin(admin::IDENTIFY), EFFECTS_CSUPP);
        assert_eq!(l.io(0xff), 0);
        l.set_io(0xff, 1);
        assert_eq!(
            l.as_bytes()[2044],
            1,
            "IOCS[255] ends at 2047; 2048.. is reserved"
        );
    }

    #[test]
    fn discovery_page_layout() {
        let e = DiscoveryEntry {
            trtype: TRTYPE_TCP,
            adrfam: ADRFAM_IPV4,
            subtype: SUBTYPE_NVME,
            treq: TREQ_SECURE_NOT_REQUIRED,
            portid: 0x0102,
            cntlid: 0xffff,
            asqsz: 32,
            eflags: 0,
            trsvcid: "4420".into(),
            subnqn: "nqn.2016-06.io.spdk:cnode1".into(),
            traddr: "10.0.0.1".into(),
            tsas: [TCP_SECTYPE_NONE, 0, 0, 0],
        };
        let page = discovery_log_page(5, &[e.clone(), e]);
        assert_eq!(page.len(), 3 * 1024);
        assert_eq!(&page[0..8], &5u64.to_le_bytes());
        assert_eq!(&page[8..16], &2u64.to_le_bytes());
        assert_eq!(&page[16..18], &[0, 0]);
        let r = &page[1024..2048];
        assert_eq!(&r[0..4], &[3, 1, 2, 2]);
        assert_eq!(&r[4..6], &[2, 1]);
        assert_eq!(&r[6..8], &[0xff, 0xff]);
        assert_eq!(&r[8..10], &[32, 0]);
        assert_eq!(&r[32..38], b"4420  ");
        assert_eq!(r[63], b' ');
        assert_eq!(&r[256..282], b"nqn.2016-06.io.spdk:cnode1");
        assert_eq!(r[282], 0);
        assert_eq!(&r[512..522], b"10.0.0.1  ");
        assert_eq!(r[768], TCP_SECTYPE_NONE);
        assert_eq!(
            tsas_for(TRTYPE_RDMA),
            [1, 1, 1, 0],
            "RC, no provider type, RDMA-CM"
        );
        assert_eq!(tsas_for(3), [TCP_SECTYPE_NONE, 0, 0, 0]);
        assert_eq!(&page[2048..2052], &[3, 1, 2, 2]);
        assert_eq!(discovery_log_page(0, &[]).len(), 1024);
    }

    #[test]
    fn reservation_notification_layout() {
        let mut r = ReservationNotificationLog::new();
        r.set_log_page_count(3);
        r.set_rnlpt(rnlpt::RESERVATION_RELEASED);
        r.set_nalp(1);
        r.set_nsid(4);
        let b = r.as_bytes();
        assert_eq!((b[0], b[8], b[9], b[12]), (3, 2, 1, 4));
    }
}
