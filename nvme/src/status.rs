//! Status code types (SCT) and status codes (SC) the target returns, as one [`Status`] value
//! (NVMe Base 2.0, "Status Field Definition"; NVMe-oF 1.1, "Fabrics Command Status Values").
//!
//! Every named status carries the Do Not Retry (DNR) bit this target uses by default: set for
//! errors a retry cannot cure (malformed command, out of range, denied), clear for transient
//! ones (aborts, device errors, busy). Callers override it with [`Status::with_dnr`].
//! Command-specific codes overlap between commands (0x80 is "Conflicting Attributes" for
//! Dataset Management and "Incompatible Format" for Connect), so each has its own name.

/// Status code type: generic command status.
pub const SCT_GENERIC: u8 = 0x0;
/// Status code type: command specific status.
pub const SCT_COMMAND_SPECIFIC: u8 = 0x1;
/// Status code type: media and data integrity errors.
pub const SCT_MEDIA: u8 = 0x2;
/// Status code type: path related status.
pub const SCT_PATH: u8 = 0x3;

/// One NVMe completion status: code type, code and the Do Not Retry bit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Status {
    /// Status code type (3 bits).
    pub sct: u8,
    /// Status code.
    pub sc: u8,
    /// Do Not Retry: the host should not resubmit the command.
    pub dnr: bool,
}

impl Status {
    /// A status from its parts (`sct` is masked to 3 bits).
    pub const fn new(sct: u8, sc: u8, dnr: bool) -> Status {
        Status {
            sct: sct & 0x7,
            sc,
            dnr,
        }
    }
    /// A generic command status.
    pub const fn generic(sc: u8, dnr: bool) -> Status {
        Status::new(SCT_GENERIC, sc, dnr)
    }
    /// A command specific status.
    pub const fn command_specific(sc: u8, dnr: bool) -> Status {
        Status::new(SCT_COMMAND_SPECIFIC, sc, dnr)
    }
    /// A media and data integrity status.
    pub const fn media(sc: u8, dnr: bool) -> Status {
        Status::new(SCT_MEDIA, sc, dnr)
    }
    /// A path related status.
    pub const fn path(sc: u8, dnr: bool) -> Status {
        Status::new(SCT_PATH, sc, dnr)
    }
    /// The same status with DNR set or cleared.
    pub const fn with_dnr(self, dnr: bool) -> Status {
        Status { dnr, ..self }
    }
    /// Whether this is the success status.
    pub const fn is_success(self) -> bool {
        self.sct == SCT_GENERIC && self.sc == 0
    }
    /// The CQE status field (bits 15:1 of dword 3's upper half; phase tag bit 0 left clear).
    pub const fn to_field(self) -> u16 {
        ((self.sc as u16) << 1) | (((self.sct & 0x7) as u16) << 9) | ((self.dnr as u16) << 15)
    }
    /// Decode a CQE status field (the phase tag, CRD and More bits are ignored).
    pub const fn from_field(field: u16) -> Status {
        Status {
            sct: ((field >> 9) & 0x7) as u8,
            sc: ((field >> 1) & 0xff) as u8,
            dnr: field & 0x8000 != 0,
        }
    }

    // ---- Generic command status (SCT 0) ----
    /// Successful completion.
    pub const SUCCESS: Status = Status::generic(0x00, false);
    /// Invalid command opcode.
    pub const INVALID_OPCODE: Status = Status::generic(0x01, true);
    /// Invalid field in command.
    pub const INVALID_FIELD: Status = Status::generic(0x02, true);
    /// Command ID conflict (a command with this CID is already outstanding).
    pub const CID_CONFLICT: Status = Status::generic(0x03, true);
    /// Data transfer error.
    pub const DATA_TRANSFER_ERROR: Status = Status::generic(0x04, false);
    /// Commands aborted due to power loss notification.
    pub const ABORTED_POWER_LOSS: Status = Status::generic(0x05, false);
    /// Internal error.
    pub const INTERNAL_DEVICE_ERROR: Status = Status::generic(0x06, false);
    /// Command abort requested (Abort command, reset, hot-remove).
    pub const ABORTED_BY_REQUEST: Status = Status::generic(0x07, false);
    /// Command aborted due to SQ deletion (queue pair going away).
    pub const ABORTED_SQ_DELETION: Status = Status::generic(0x08, false);
    /// Command aborted due to failed fused command.
    pub const ABORTED_FAILED_FUSED: Status = Status::generic(0x09, true);
    /// Command aborted due to missing fused command.
    pub const ABORTED_MISSING_FUSED: Status = Status::generic(0x0A, true);
    /// Invalid namespace or format.
    pub const INVALID_NAMESPACE_OR_FORMAT: Status = Status::generic(0x0B, true);
    /// Command sequence error (e.g. a command before Connect, or I/O on a disabled controller).
    pub const COMMAND_SEQUENCE_ERROR: Status = Status::generic(0x0C, true);
    /// Invalid SGL segment descriptor.
    pub const INVALID_SGL_SEG_DESCRIPTOR: Status = Status::generic(0x0D, true);
    /// Invalid number of SGL descriptors.
    pub const INVALID_NUM_SGL_DESCRIPTORS: Status = Status::generic(0x0E, true);
    /// Data SGL length invalid (SGL length does not match the command's transfer length).
    pub const DATA_SGL_LENGTH_INVALID: Status = Status::generic(0x0F, true);
    /// Metadata SGL length invalid.
    pub const METADATA_SGL_LENGTH_INVALID: Status = Status::generic(0x10, true);
    /// SGL descriptor type invalid.
    pub const SGL_DESCRIPTOR_TYPE_INVALID: Status = Status::generic(0x11, true);
    /// Operation denied.
    pub const OPERATION_DENIED: Status = Status::generic(0x15, true);
    /// SGL offset invalid (in-capsule data offset or length beyond the capsule).
    pub const INVALID_SGL_OFFSET: Status = Status::generic(0x16, true);
    /// Host identifier inconsistent format.
    pub const HOST_ID_INCONSISTENT_FORMAT: Status = Status::generic(0x18, true);
    /// Keep alive timer expired.
    pub const KEEP_ALIVE_EXPIRED: Status = Status::generic(0x19, true);
    /// Keep alive timeout invalid.
    pub const KEEP_ALIVE_INVALID: Status = Status::generic(0x1A, true);
    /// Command aborted due to preempt and abort.
    pub const ABORTED_PREEMPT: Status = Status::generic(0x1B, false);
    /// Namespace is write protected.
    pub const NAMESPACE_WRITE_PROTECTED: Status = Status::generic(0x20, true);
    /// Command interrupted (retry later).
    pub const COMMAND_INTERRUPTED: Status = Status::generic(0x21, false);
    /// Transient transport error.
    pub const TRANSIENT_TRANSPORT_ERROR: Status = Status::generic(0x22, false);
    /// LBA out of range (NVM command set, generic SCT).
    pub const LBA_OUT_OF_RANGE: Status = Status::generic(0x80, true);
    /// Capacity exceeded (thin device out of space).
    pub const CAPACITY_EXCEEDED: Status = Status::generic(0x81, true);
    /// Namespace not ready.
    pub const NAMESPACE_NOT_READY: Status = Status::generic(0x82, false);
    /// Reservation conflict.
    pub const RESERVATION_CONFLICT: Status = Status::generic(0x83, true);
    /// Format in progress.
    pub const FORMAT_IN_PROGRESS: Status = Status::generic(0x84, false);

    // ---- Command specific status (SCT 1) ----
    /// Completion queue invalid.
    pub const COMPLETION_QUEUE_INVALID: Status = Status::command_specific(0x00, true);
    /// Invalid queue identifier.
    pub const INVALID_QUEUE_IDENTIFIER: Status = Status::command_specific(0x01, true);
    /// Invalid queue size.
    pub const INVALID_QUEUE_SIZE: Status = Status::command_specific(0x02, true);
    /// Abort command limit exceeded.
    pub const ABORT_COMMAND_LIMIT_EXCEEDED: Status = Status::command_specific(0x03, true);
    /// Asynchronous event request limit exceeded.
    pub const ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED: Status = Status::command_specific(0x05, true);
    /// Invalid firmware slot.
    pub const INVALID_FIRMWARE_SLOT: Status = Status::command_specific(0x06, true);
    /// Invalid firmware image.
    pub const INVALID_FIRMWARE_IMAGE: Status = Status::command_specific(0x07, true);
    /// Invalid log page.
    pub const INVALID_LOG_PAGE: Status = Status::command_specific(0x09, true);
    /// Invalid format.
    pub const INVALID_FORMAT: Status = Status::command_specific(0x0A, true);
    /// Invalid queue deletion.
    pub const INVALID_QUEUE_DELETION: Status = Status::command_specific(0x0C, true);
    /// Feature identifier not saveable.
    pub const FEATURE_ID_NOT_SAVEABLE: Status = Status::command_specific(0x0D, true);
    /// Feature not changeable.
    pub const FEATURE_NOT_CHANGEABLE: Status = Status::command_specific(0x0E, true);
    /// Feature not namespace specific.
    pub const FEATURE_NOT_NAMESPACE_SPECIFIC: Status = Status::command_specific(0x0F, true);
    /// Namespace insufficient capacity (namespace management).
    pub const NAMESPACE_INSUFFICIENT_CAPACITY: Status = Status::command_specific(0x15, true);
    /// Namespace is private.
    pub const NAMESPACE_IS_PRIVATE: Status = Status::command_specific(0x19, true);
    /// Conflicting attributes (Dataset Management, Read, Write).
    pub const CONFLICTING_ATTRIBUTES: Status = Status::command_specific(0x80, true);
    /// Invalid protection information.
    pub const INVALID_PROTECTION_INFO: Status = Status::command_specific(0x81, true);
    /// Attempted write to read only range.
    pub const WRITE_TO_READ_ONLY_RANGE: Status = Status::command_specific(0x82, true);
    /// Fabrics Connect: incompatible format (RECFMT not supported).
    pub const CONNECT_INCOMPATIBLE_FORMAT: Status = Status::command_specific(0x80, true);
    /// Fabrics Connect: controller busy (e.g. the queue is already connected).
    pub const CONNECT_CONTROLLER_BUSY: Status = Status::command_specific(0x81, false);
    /// Fabrics Connect: invalid parameters; CQE dword 0 carries IATTR/IPO
    /// ([`crate::fabrics::ConnectError`]).
    pub const CONNECT_INVALID_PARAMETERS: Status = Status::command_specific(0x82, true);
    /// Fabrics Connect: restart discovery.
    pub const CONNECT_RESTART_DISCOVERY: Status = Status::command_specific(0x83, true);
    /// Fabrics Connect: invalid host (the host is not allowed on this subsystem).
    pub const CONNECT_INVALID_HOST: Status = Status::command_specific(0x84, true);
    /// Fabrics Connect: invalid queue type (e.g. an I/O queue on a discovery controller).
    pub const CONNECT_INVALID_QUEUE_TYPE: Status = Status::command_specific(0x85, true);
    /// Fabrics: discover restart.
    pub const DISCOVER_RESTART: Status = Status::command_specific(0x90, false);
    /// Fabrics: authentication required.
    pub const AUTH_REQUIRED: Status = Status::command_specific(0x91, true);

    // ---- Media and data integrity errors (SCT 2) ----
    /// Write fault.
    pub const WRITE_FAULT: Status = Status::media(0x80, false);
    /// Unrecovered read error.
    pub const UNRECOVERED_READ_ERROR: Status = Status::media(0x81, false);
    /// End-to-end guard check error.
    pub const GUARD_CHECK_ERROR: Status = Status::media(0x82, true);
    /// End-to-end application tag check error.
    pub const APPTAG_CHECK_ERROR: Status = Status::media(0x83, true);
    /// End-to-end reference tag check error.
    pub const REFTAG_CHECK_ERROR: Status = Status::media(0x84, true);
    /// Compare failure.
    pub const COMPARE_FAILURE: Status = Status::media(0x85, true);
    /// Access denied.
    pub const ACCESS_DENIED: Status = Status::media(0x86, true);
    /// Deallocated or unwritten logical block.
    pub const DEALLOCATED_OR_UNWRITTEN: Status = Status::media(0x87, true);

    // ---- Path related status (SCT 3) ----
    /// Internal path error.
    pub const INTERNAL_PATH_ERROR: Status = Status::path(0x00, false);
    /// Asymmetric access persistent loss.
    pub const ANA_PERSISTENT_LOSS: Status = Status::path(0x01, false);
    /// Asymmetric access inaccessible.
    pub const ANA_INACCESSIBLE: Status = Status::path(0x02, false);
    /// Asymmetric access transition.
    pub const ANA_TRANSITION: Status = Status::path(0x03, false);
}

impl Default for Status {
    fn default() -> Self {
        Status::SUCCESS
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "sct {:#x} sc {:#04x}{}",
            self.sct,
            self.sc,
            if self.dnr { " dnr" } else { "" }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Linux `NVME_SC_*` values are `(sct << 8) | sc`.
    fn linux(s: Status) -> u16 {
        ((s.sct as u16) << 8) | s.sc as u16
    }

    #[test]
    fn codes_match_the_spec() {
        assert_eq!(linux(Status::INVALID_OPCODE), 0x001);
        assert_eq!(linux(Status::INVALID_FIELD), 0x002);
        assert_eq!(linux(Status::CID_CONFLICT), 0x003);
        assert_eq!(linux(Status::DATA_TRANSFER_ERROR), 0x004);
        assert_eq!(linux(Status::ABORTED_POWER_LOSS), 0x005);
        assert_eq!(linux(Status::INTERNAL_DEVICE_ERROR), 0x006);
        assert_eq!(linux(Status::ABORTED_BY_REQUEST), 0x007);
        assert_eq!(linux(Status::ABORTED_SQ_DELETION), 0x008);
        assert_eq!(linux(Status::INVALID_NAMESPACE_OR_FORMAT), 0x00b);
        assert_eq!(linux(Status::COMMAND_SEQUENCE_ERROR), 0x00c);
        assert_eq!(linux(Status::INVALID_SGL_SEG_DESCRIPTOR), 0x00d);
        assert_eq!(linux(Status::DATA_SGL_LENGTH_INVALID), 0x00f);
        assert_eq!(linux(Status::SGL_DESCRIPTOR_TYPE_INVALID), 0x011);
        assert_eq!(linux(Status::INVALID_SGL_OFFSET), 0x016);
        assert_eq!(linux(Status::LBA_OUT_OF_RANGE), 0x080);
        assert_eq!(linux(Status::CAPACITY_EXCEEDED), 0x081);
        assert_eq!(linux(Status::NAMESPACE_NOT_READY), 0x082);
        assert_eq!(linux(Status::RESERVATION_CONFLICT), 0x083);
        assert_eq!(linux(Status::INVALID_QUEUE_IDENTIFIER), 0x101);
        assert_eq!(linux(Status::INVALID_QUEUE_SIZE), 0x102);
        assert_eq!(linux(Status::ABORT_COMMAND_LIMIT_EXCEEDED), 0x103);
        assert_eq!(linux(Status::ASYNC_EVENT_REQUEST_LIMIT_EXCEEDED), 0x105);
        assert_eq!(linux(Status::INVALID_LOG_PAGE), 0x109);
        assert_eq!(linux(Status::FEATURE_ID_NOT_SAVEABLE), 0x10d);
        assert_eq!(linux(Status::FEATURE_NOT_CHANGEABLE), 0x10e);
        assert_eq!(linux(Status::CONFLICTING_ATTRIBUTES), 0x180);
        assert_eq!(linux(Status::CONNECT_INCOMPATIBLE_FORMAT), 0x180);
        assert_eq!(linux(Status::CONNECT_CONTROLLER_BUSY), 0x181);
        assert_eq!(linux(Status::CONNECT_INVALID_PARAMETERS), 0x182);
        assert_eq!(linux(Status::CONNECT_RESTART_DISCOVERY), 0x183);
        assert_eq!(linux(Status::CONNECT_INVALID_HOST), 0x184);
        assert_eq!(linux(Status::AUTH_REQUIRED), 0x191);
        assert_eq!(linux(Status::WRITE_FAULT), 0x280);
        assert_eq!(linux(Status::UNRECOVERED_READ_ERROR), 0x281);
        assert_eq!(linux(Status::COMPARE_FAILURE), 0x285);
        assert_eq!(linux(Status::ACCESS_DENIED), 0x286);
        assert_eq!(linux(Status::ANA_INACCESSIBLE), 0x302);
    }

    #[test]
    fn field_round_trips_and_places_bits() {
        let s = Status::CONNECT_INVALID_HOST;
        let f = s.to_field();
        assert_eq!(f & 1, 0, "phase bit left clear");
        assert_eq!((f >> 1) & 0xff, 0x84);
        assert_eq!((f >> 9) & 0x7, 1);
        assert_ne!(f & 0x8000, 0, "DNR is bit 15");
        assert_eq!(Status::from_field(f), s);
        assert_eq!(Status::from_field(f | 1), s, "phase bit ignored");
        assert_eq!(Status::SUCCESS.to_field(), 0);
        assert!(Status::from_field(0).is_success());
        assert!(!Status::INVALID_FIELD.is_success());
        assert!(!Status::new(SCT_MEDIA, 0, false).is_success());
    }

    #[test]
    fn dnr_override() {
        let s = Status::INVALID_FIELD.with_dnr(false);
        assert!(!s.dnr);
        assert_eq!(s.sc, 0x02);
        assert!(Status::ABORTED_BY_REQUEST.with_dnr(true).dnr);
        assert_eq!(Status::new(0xff, 1, false).sct, 7);
    }

    #[test]
    fn display_names_the_parts() {
        assert_eq!(Status::INVALID_LOG_PAGE.to_string(), "sct 0x1 sc 0x09 dnr");
        assert_eq!(Status::ABORTED_BY_REQUEST.to_string(), "sct 0x0 sc 0x07");
    }
}
