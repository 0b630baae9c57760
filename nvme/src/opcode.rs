//! Command opcodes: [`admin`] (admin queue) and [`nvm`] (I/O queues, NVM command set).
//! The Fabrics opcode is [`crate::cmd::OPC_FABRICS`]. An opcode's low two bits give
//! its data direction ([`crate::cmd::DataXfer::from_opcode`]).

/// Admin command opcodes (NVMe Base 2.0, "Opcodes for Admin Commands").
pub mod admin {
    /// Delete I/O Submission Queue (not used over fabrics).
    pub const DELETE_IO_SQ: u8 = 0x00;
    /// Create I/O Submission Queue (not used over fabrics).
    pub const CREATE_IO_SQ: u8 = 0x01;
    /// Get Log Page.
    pub const GET_LOG_PAGE: u8 = 0x02;
    /// Delete I/O Completion Queue (not used over fabrics).
    pub const DELETE_IO_CQ: u8 = 0x04;
    /// Create I/O Completion Queue (not used over fabrics).
    pub const CREATE_IO_CQ: u8 = 0x05;
    /// Identify.
    pub const IDENTIFY: u8 = 0x06;
    /// Abort.
    pub const ABORT: u8 = 0x08;
    /// Set Features.
    pub const SET_FEATURES: u8 = 0x09;
    /// Get Features.
    pub const GET_FEATURES: u8 = 0x0A;
    /// Asynchronous Event Request.
    pub const ASYNC_EVENT_REQUEST: u8 = 0x0C;
    /// Namespace Management.
    pub const NS_MGMT: u8 = 0x0D;
    /// Firmware Commit.
    pub const FIRMWARE_COMMIT: u8 = 0x10;
    /// Firmware Image Download.
    pub const FIRMWARE_IMAGE_DOWNLOAD: u8 = 0x11;
    /// Device Self-test.
    pub const DEVICE_SELF_TEST: u8 = 0x14;
    /// Namespace Attachment.
    pub const NS_ATTACHMENT: u8 = 0x15;
    /// Keep Alive.
    pub const KEEP_ALIVE: u8 = 0x18;
    /// Directive Send.
    pub const DIRECTIVE_SEND: u8 = 0x19;
    /// Directive Receive.
    pub const DIRECTIVE_RECV: u8 = 0x1A;
    /// Virtualization Management.
    pub const VIRTUALIZATION_MGMT: u8 = 0x1C;
    /// NVMe-MI Send.
    pub const NVME_MI_SEND: u8 = 0x1D;
    /// NVMe-MI Receive.
    pub const NVME_MI_RECV: u8 = 0x1E;
    /// Doorbell Buffer Config (PCIe only).
    pub const DOORBELL_BUFFER_CONFIG: u8 = 0x7C;
    /// Format NVM.
    pub const FORMAT_NVM: u8 = 0x80;
    /// Security Send.
    pub const SECURITY_SEND: u8 = 0x81;
    /// Security Receive.
    pub const SECURITY_RECV: u8 = 0x82;
    /// Sanitize.
    pub const SANITIZE: u8 = 0x84;
    /// Get LBA Status.
    pub const GET_LBA_STATUS: u8 = 0x86;
}

/// NVM command set I/O opcodes (NVM Command Set 1.0, "Opcodes for NVM Commands").
pub mod nvm {
    /// Flush.
    pub const FLUSH: u8 = 0x00;
    /// Write.
    pub const WRITE: u8 = 0x01;
    /// Read.
    pub const READ: u8 = 0x02;
    /// Write Uncorrectable.
    pub const WRITE_UNCORRECTABLE: u8 = 0x04;
    /// Compare.
    pub const COMPARE: u8 = 0x05;
    /// Write Zeroes.
    pub const WRITE_ZEROES: u8 = 0x08;
    /// Dataset Management.
    pub const DATASET_MANAGEMENT: u8 = 0x09;
    /// Verify.
    pub const VERIFY: u8 = 0x0C;
    /// Reservation Register.
    pub const RESERVATION_REGISTER: u8 = 0x0D;
    /// Reservation Report.
    pub const RESERVATION_REPORT: u8 = 0x0E;
    /// Reservation Acquire.
    pub const RESERVATION_ACQUIRE: u8 = 0x11;
    /// Reservation Release.
    pub const RESERVATION_RELEASE: u8 = 0x15;
    /// Copy.
    pub const COPY: u8 = 0x19;
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cmd::DataXfer;

    #[test]
    fn directions_follow_the_low_bits() {
        use DataXfer::*;
        for (opc, dir) in [
            (nvm::WRITE, HostToController),
            (nvm::READ, ControllerToHost),
            (nvm::COMPARE, HostToController),
            (nvm::DATASET_MANAGEMENT, HostToController),
            (nvm::RESERVATION_REGISTER, HostToController),
            (nvm::RESERVATION_REPORT, ControllerToHost),
            (nvm::RESERVATION_ACQUIRE, HostToController),
            (nvm::RESERVATION_RELEASE, HostToController),
            (nvm::FLUSH, None),
            (nvm::WRITE_ZEROES, None),
            (admin::GET_LOG_PAGE, ControllerToHost),
            (admin::IDENTIFY, ControllerToHost),
            (admin::SET_FEATURES, HostToController),
            (admin::GET_FEATURES, ControllerToHost),
            (admin::ASYNC_EVENT_REQUEST, None),
            (admin::KEEP_ALIVE, None),
            (admin::ABORT, None),
        ] {
            assert_eq!(DataXfer::from_opcode(opc), dir, "opcode {opc:#x}");
        }
    }
}
