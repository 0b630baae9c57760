//! What this target reports in the log pages it serves (Get Log Page). The page layouts are
//! [`keel_nvme::log`]'s; this module only chooses the values: SMART / health counters,
//! the firmware slot, the commands supported and their effects, the error log's size, and
//! the discovery entries' fixed fields. The Changed Namespace List lives with the controller
//! (it is per-controller state).

use keel_nvme::fabrics::CNTLID_DYNAMIC;
use keel_nvme::log::{
    CommandEffectsLog, DiscoveryEntry, ErrorLogEntry, FirmwareSlotLog, SmartLog, EFFECTS_CSUPP,
    EFFECTS_LBCC, SUBTYPE_NVME, TREQ_SECURE_NOT_REQUIRED,
};
use keel_nvme::opcode::{admin, nvm};

/// Error log entries, 0-based (Identify Controller ELPE). No error is ever logged: the page
/// reads as zeroes.
pub(crate) const ERROR_LOG_ENTRIES_0BASED: u8 = 127;

/// The Error Information page: ELPE + 1 unused (zeroed) entries.
pub(crate) fn error_log() -> Vec<u8> {
    vec![0u8; ErrorLogEntry::SIZE * (usize::from(ERROR_LOG_ENTRIES_0BASED) + 1)]
}

/// I/O counters for the SMART page.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct SmartCounters {
    pub bytes_read: u64,
    pub bytes_written: u64,
    pub read_ops: u64,
    pub write_ops: u64,
}

/// The SMART / Health Information page: a healthy device at 38 °C, with the I/O counters.
pub(crate) fn smart(c: &SmartCounters) -> SmartLog {
    let mut l = SmartLog::new();
    l.set_temperature(273 + 38);
    l.set_available_spare(100);
    l.set_available_spare_threshold(10);
    l.set_data_units_read(SmartLog::data_units(c.bytes_read.into()));
    l.set_data_units_written(SmartLog::data_units(c.bytes_written.into()));
    l.set_host_read_commands(c.read_ops.into());
    l.set_host_write_commands(c.write_ops.into());
    l
}

/// The Firmware Slot Information page: slot 1 active, holding this build's version.
pub(crate) fn firmware_slot() -> FirmwareSlotLog {
    FirmwareSlotLog::single(env!("CARGO_PKG_VERSION"))
}

/// The Commands Supported and Effects page for the commands this target runs.
pub(crate) fn command_effects() -> CommandEffectsLog {
    let mut l = CommandEffectsLog::new();
    for opc in [
        admin::GET_LOG_PAGE,
        admin::IDENTIFY,
        admin::ABORT,
        admin::SET_FEATURES,
        admin::GET_FEATURES,
        admin::ASYNC_EVENT_REQUEST,
        admin::KEEP_ALIVE,
    ] {
        l.set_admin(opc, EFFECTS_CSUPP);
    }
    for (opc, e) in [
        (nvm::FLUSH, EFFECTS_CSUPP),
        (nvm::WRITE, EFFECTS_CSUPP | EFFECTS_LBCC),
        (nvm::READ, EFFECTS_CSUPP),
        (nvm::COMPARE, EFFECTS_CSUPP),
        (nvm::WRITE_ZEROES, EFFECTS_CSUPP | EFFECTS_LBCC),
        (nvm::DATASET_MANAGEMENT, EFFECTS_CSUPP | EFFECTS_LBCC),
    ] {
        l.set_io(opc, e);
    }
    l
}

/// The fields every discovery log entry of this target shares: an NVM subsystem, dynamic
/// controller model, no secure channel required, no transport-specific settings (TCP
/// SECTYPE none). The caller fills in the listener and the subsystem.
pub(crate) fn discovery_entry_base() -> DiscoveryEntry {
    DiscoveryEntry {
        subtype: SUBTYPE_NVME,
        treq: TREQ_SECURE_NOT_REQUIRED,
        cntlid: CNTLID_DYNAMIC,
        ..DiscoveryEntry::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_nvme::bytes::read;
    use keel_nvme::log::discovery_log_page;

    #[test]
    fn smart_counts_data_units_rounded_up() {
        let l = smart(&SmartCounters {
            bytes_read: 512 * 1000,
            bytes_written: 1,
            read_ops: 3,
            write_ops: 4,
        });
        let b = l.as_bytes();
        assert_eq!(read::<u16>(b, 1), Some(311));
        assert_eq!((b[3], b[4]), (100, 10));
        assert_eq!(read::<u128>(b, 32), Some(1));
        assert_eq!(read::<u128>(b, 48), Some(1));
        assert_eq!(read::<u128>(b, 64), Some(3));
        assert_eq!(read::<u128>(b, 80), Some(4));
        let l = smart(&SmartCounters {
            bytes_read: 512 * 1000 + 1,
            ..SmartCounters::default()
        });
        assert_eq!(l.data_units_read(), 2);
        assert_eq!(smart(&SmartCounters::default()).data_units_read(), 0);
    }

    #[test]
    fn discovery_entry_fields() {
        let e = DiscoveryEntry {
            trtype: 3,
            adrfam: 1,
            portid: 5,
            asqsz: 128,
            trsvcid: "4420".into(),
            subnqn: "nqn.2016-06.io.keel:a".into(),
            traddr: "127.0.0.1".into(),
            ..discovery_entry_base()
        };
        let b = discovery_log_page(9, &[e.clone(), e]);
        assert_eq!(b.len(), 3072);
        assert_eq!(read::<u64>(&b, 0), Some(9));
        assert_eq!(read::<u64>(&b, 8), Some(2));
        let ent = &b[1024..2048];
        assert_eq!((ent[0], ent[1], ent[2], ent[3]), (3, 1, 2, 2));
        assert_eq!(read::<u16>(ent, 4), Some(5));
        assert_eq!(read::<u16>(ent, 6), Some(0xffff));
        assert_eq!(read::<u16>(ent, 8), Some(128));
        assert_eq!(&ent[32..37], b"4420 ");
        assert_eq!(&ent[256..277], b"nqn.2016-06.io.keel:a");
        assert_eq!(ent[277], 0);
        assert_eq!(&ent[512..522], b"127.0.0.1 ");
        assert_eq!(ent[768], 0, "TCP SECTYPE: none");
    }

    #[test]
    fn effects_mark_supported_commands() {
        let l = command_effects();
        assert_eq!(l.admin(admin::IDENTIFY), EFFECTS_CSUPP);
        assert_eq!(
            l.admin(0x00),
            0,
            "Delete I/O SQ does not exist over fabrics"
        );
        assert_eq!(l.io(nvm::WRITE), EFFECTS_CSUPP | EFFECTS_LBCC);
        assert_eq!(l.io(0x0D), 0, "Reservation Register is not served");
        assert_eq!(firmware_slot().afi(), 1);
        assert_eq!(error_log().len(), 64 * 128);
    }
}
