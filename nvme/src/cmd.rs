//! The NVMe submission queue entry (SQE, 64 bytes) and completion queue entry (CQE, 16 bytes).

use super::status::Status;

/// A submission queue entry as it travels in a command capsule (NVMe base spec, figure "Common
/// Command Format"). Fields are raw; accessors decode them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NvmeCmd {
    /// Opcode (CDW0 bits 7:0).
    pub opc: u8,
    /// Fused operation (bits 1:0) and PRP/SGL selection PSDT (bits 7:6).
    pub flags: u8,
    /// Command identifier.
    pub cid: u16,
    /// Namespace identifier.
    pub nsid: u32,
    /// CDW2.
    pub cdw2: u32,
    /// CDW3.
    pub cdw3: u32,
    /// Metadata pointer.
    pub mptr: u64,
    /// Data pointer: for fabrics, SGL descriptor 1 (16 bytes).
    pub dptr: [u8; 16],
    /// CDW10.
    pub cdw10: u32,
    /// CDW11.
    pub cdw11: u32,
    /// CDW12.
    pub cdw12: u32,
    /// CDW13.
    pub cdw13: u32,
    /// CDW14.
    pub cdw14: u32,
    /// CDW15.
    pub cdw15: u32,
}

impl NvmeCmd {
    /// Direction of the command's data: from the opcode's low bits, or for a Fabrics
    /// command (opcode 0x7F) from FCTYPE's (byte 4, the low byte of NSID).
    #[inline]
    pub fn data_xfer(&self) -> DataXfer {
        if self.opc == OPC_FABRICS {
            DataXfer::from_opcode(self.nsid as u8)
        } else {
            DataXfer::from_opcode(self.opc)
        }
    }
}

/// A completion queue entry (NVMe base spec, "Common Completion Queue Entry").
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[repr(C)]
pub struct NvmeCpl {
    /// Command-specific dword 0.
    pub cdw0: u32,
    /// Command-specific dword 1.
    pub cdw1: u32,
    /// Submission queue head pointer.
    pub sqhd: u16,
    /// Submission queue identifier.
    pub sqid: u16,
    /// Command identifier of the completed command.
    pub cid: u16,
    /// Phase tag (bit 0) and status field (bits 15:1: SC 8 bits, SCT 3 bits, CRD, More, DNR).
    pub status: u16,
}

impl NvmeCpl {
    /// Set the status field from a status code type and code (phase bit left 0; DNR set for
    /// errors that will not succeed on retry is the caller's choice via `dnr`).
    pub fn set_status(&mut self, sct: u8, sc: u8, dnr: bool) {
        self.status = ((sc as u16) << 1) | (((sct & 0x7) as u16) << 9) | ((dnr as u16) << 15);
    }
    /// Set the status field from a [`Status`] (phase bit left 0).
    pub fn set(&mut self, status: Status) {
        self.status = status.to_field();
    }
    /// The status field as a [`Status`].
    pub fn get_status(&self) -> Status {
        Status::from_field(self.status)
    }
    /// Status code type.
    pub fn sct(&self) -> u8 {
        ((self.status >> 9) & 0x7) as u8
    }
    /// Status code.
    pub fn sc(&self) -> u8 {
        ((self.status >> 1) & 0xff) as u8
    }
    /// Whether the command succeeded.
    pub fn is_success(&self) -> bool {
        self.sct() == 0 && self.sc() == 0
    }
}

/// Direction of a command's data, from the opcode's low two bits (NVMe: 01b host to
/// controller, 10b controller to host; Fabrics commands use `fctype`'s low bits the same way).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataXfer {
    /// No data.
    None,
    /// Host to controller (writes, Connect data, Set Features with data).
    HostToController,
    /// Controller to host (reads, Identify, Get Log Page).
    ControllerToHost,
    /// Both (bidirectional): not supported over fabrics.
    Bidirectional,
}

impl DataXfer {
    /// Direction encoded in an opcode (or a Fabrics fctype).
    pub fn from_opcode(opc: u8) -> DataXfer {
        match opc & 0x3 {
            0 => DataXfer::None,
            1 => DataXfer::HostToController,
            2 => DataXfer::ControllerToHost,
            _ => DataXfer::Bidirectional,
        }
    }
}

/// The Fabrics command opcode (capsule's opc; `fctype` at byte 4 says which one).
pub const OPC_FABRICS: u8 = 0x7f;

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    #[test]
    fn sizes_and_offsets_match_the_spec() {
        assert_eq!(size_of::<NvmeCmd>(), 64);
        assert_eq!(offset_of!(NvmeCmd, cid), 2);
        assert_eq!(offset_of!(NvmeCmd, nsid), 4);
        assert_eq!(offset_of!(NvmeCmd, mptr), 16);
        assert_eq!(offset_of!(NvmeCmd, dptr), 24);
        assert_eq!(offset_of!(NvmeCmd, cdw10), 40);
        assert_eq!(offset_of!(NvmeCmd, cdw15), 60);
        assert_eq!(size_of::<NvmeCpl>(), 16);
        assert_eq!(offset_of!(NvmeCpl, sqhd), 8);
        assert_eq!(offset_of!(NvmeCpl, cid), 12);
        assert_eq!(offset_of!(NvmeCpl, status), 14);
    }

    #[test]
    fn status_encoding() {
        let mut c = NvmeCpl::default();
        c.set_status(0x1, 0x82, true);
        assert_eq!(c.sct(), 1);
        assert_eq!(c.sc(), 0x82);
        assert!(c.status & 0x8000 != 0);
        assert!(!c.is_success());
        c.set_status(0, 0, false);
        assert!(c.is_success());
        c.set(Status::LBA_OUT_OF_RANGE);
        assert_eq!((c.sct(), c.sc()), (0, 0x80));
        assert_eq!(c.get_status(), Status::LBA_OUT_OF_RANGE);
        c.set(Status::SUCCESS);
        assert!(c.is_success());
    }

    #[test]
    fn direction_from_opcode() {
        assert_eq!(DataXfer::from_opcode(0x01), DataXfer::HostToController); // write
        assert_eq!(DataXfer::from_opcode(0x02), DataXfer::ControllerToHost); // read
        assert_eq!(DataXfer::from_opcode(0x00), DataXfer::None); // flush
        assert_eq!(DataXfer::from_opcode(0x06), DataXfer::ControllerToHost); // identify
    }

    #[test]
    fn direction_uses_fctype_for_fabrics() {
        let mut c = NvmeCmd {
            opc: OPC_FABRICS,
            nsid: 0x01, // Connect: host to controller
            ..Default::default()
        };
        assert_eq!(c.data_xfer(), DataXfer::HostToController);
        c.nsid = 0x04; // Property Get: no data
        assert_eq!(c.data_xfer(), DataXfer::None);
        c.nsid = 0x06; // Authentication Receive: controller to host
        assert_eq!(c.data_xfer(), DataXfer::ControllerToHost);
        c.opc = 0x01; // Write: the opcode decides, not byte 4
        assert_eq!(c.data_xfer(), DataXfer::HostToController);
    }
}
