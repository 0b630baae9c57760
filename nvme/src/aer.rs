//! Asynchronous events (NVMe Base 2.0 §5.2): what the completion of an Asynchronous Event
//! Request carries in dword 0 — event type (bits 2:0), event information (bits 15:8) and
//! the log page to read (bits 23:16) — and which Asynchronous Event Configuration bit
//! enables each event.

use super::features::{AEC_ANA_CHANGE, AEC_DISCOVERY_CHANGE, AEC_FW_ACTIVATION, AEC_NS_ATTR};
use super::log::{
    LID_ANA, LID_CHANGED_NS, LID_DISCOVERY, LID_ERROR, LID_FIRMWARE_SLOT, LID_RESERVATION,
};

/// Event type: error status.
pub const TYPE_ERROR: u8 = 0;
/// Event type: SMART / health status.
pub const TYPE_SMART: u8 = 1;
/// Event type: notice.
pub const TYPE_NOTICE: u8 = 2;
/// Event type: I/O command set specific status.
pub const TYPE_IO_COMMAND_SET: u8 = 6;
/// Event type: vendor specific.
pub const TYPE_VENDOR: u8 = 7;

/// One kind of asynchronous event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AsyncEvent {
    /// Event type (bits 2:0 of dword 0).
    pub event_type: u8,
    /// Event information (bits 15:8).
    pub info: u8,
    /// Log page the host reads (with RAE clear) to clear the event (bits 23:16).
    pub log_page: u8,
}

impl AsyncEvent {
    /// Notice: namespace attributes changed (read the Changed Namespace List).
    pub const NS_ATTR_CHANGED: AsyncEvent = AsyncEvent::new(TYPE_NOTICE, 0x00, LID_CHANGED_NS);
    /// Notice: firmware activation starting.
    pub const FW_ACTIVATION_STARTING: AsyncEvent =
        AsyncEvent::new(TYPE_NOTICE, 0x01, LID_FIRMWARE_SLOT);
    /// Notice: asymmetric namespace access change (read the ANA log).
    pub const ANA_CHANGE: AsyncEvent = AsyncEvent::new(TYPE_NOTICE, 0x03, LID_ANA);
    /// Notice: discovery log page change (discovery controllers).
    pub const DISCOVERY_CHANGE: AsyncEvent = AsyncEvent::new(TYPE_NOTICE, 0xF0, LID_DISCOVERY);
    /// I/O command set: reservation log page available.
    pub const RESERVATION_LOG_AVAILABLE: AsyncEvent =
        AsyncEvent::new(TYPE_IO_COMMAND_SET, 0x00, LID_RESERVATION);
    /// Error: persistent internal error.
    pub const PERSISTENT_INTERNAL_ERROR: AsyncEvent = AsyncEvent::new(TYPE_ERROR, 0x03, LID_ERROR);

    /// An event.
    pub const fn new(event_type: u8, info: u8, log_page: u8) -> AsyncEvent {
        AsyncEvent {
            event_type,
            info,
            log_page,
        }
    }
    /// The AER completion's dword 0.
    pub const fn cdw0(&self) -> u32 {
        (self.event_type & 0x7) as u32 | (self.info as u32) << 8 | (self.log_page as u32) << 16
    }
    /// Decode an AER completion's dword 0.
    pub const fn from_cdw0(v: u32) -> AsyncEvent {
        AsyncEvent::new((v & 0x7) as u8, (v >> 8) as u8, (v >> 16) as u8)
    }
    /// The Asynchronous Event Configuration bit that must be set for this event to be
    /// reported, or `None` if it cannot be masked (errors, I/O command set events).
    pub const fn aec_bit(&self) -> Option<u32> {
        match (self.event_type, self.info) {
            (TYPE_NOTICE, 0x00) => Some(AEC_NS_ATTR),
            (TYPE_NOTICE, 0x01) => Some(AEC_FW_ACTIVATION),
            (TYPE_NOTICE, 0x03) => Some(AEC_ANA_CHANGE),
            (TYPE_NOTICE, 0xF0) => Some(AEC_DISCOVERY_CHANGE),
            _ => None,
        }
    }
    /// Whether the host's Asynchronous Event Configuration `aec` lets this event through.
    pub const fn enabled_by(&self, aec: u32) -> bool {
        match self.aec_bit() {
            Some(bit) => aec & bit != 0,
            None => true,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn completion_dword() {
        assert_eq!(AsyncEvent::NS_ATTR_CHANGED.cdw0(), 0x0004_0002);
        assert_eq!(AsyncEvent::ANA_CHANGE.cdw0(), 0x000c_0302);
        assert_eq!(AsyncEvent::DISCOVERY_CHANGE.cdw0(), 0x0070_f002);
        assert_eq!(AsyncEvent::RESERVATION_LOG_AVAILABLE.cdw0(), 0x0080_0006);
        let e = AsyncEvent::from_cdw0(AsyncEvent::ANA_CHANGE.cdw0());
        assert_eq!(e, AsyncEvent::ANA_CHANGE);
    }

    #[test]
    fn configuration_masks() {
        assert!(AsyncEvent::NS_ATTR_CHANGED.enabled_by(AEC_NS_ATTR));
        assert!(!AsyncEvent::NS_ATTR_CHANGED.enabled_by(AEC_ANA_CHANGE));
        assert!(AsyncEvent::DISCOVERY_CHANGE.enabled_by(1 << 31));
        assert!(!AsyncEvent::DISCOVERY_CHANGE.enabled_by(0));
        assert!(AsyncEvent::RESERVATION_LOG_AVAILABLE.enabled_by(0));
        assert!(AsyncEvent::PERSISTENT_INTERNAL_ERROR.enabled_by(0));
    }
}
