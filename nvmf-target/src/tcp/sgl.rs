//! HOT PATH: the SGL descriptor 1 of a capsule, as NVMe/TCP uses it.
//!
//! A TCP host describes a command's data with one of two descriptors: a Data Block with the
//! Offset subtype (type 0x0, subtype 0x1) when the data is in the capsule, or a Transport Data
//! Block with the transport-specific subtype (type 0x5, subtype 0xA) when it travels in
//! H2CData (after R2T) or C2HData PDUs.

use crate::spec::cmd::{DataXfer, NvmeCmd, OPC_FABRICS};

/// SGL identifier byte: Data Block, Offset subtype (in-capsule data).
pub const SGL_IN_CAPSULE: u8 = 0x01;
/// SGL identifier byte: Transport Data Block, transport subtype.
pub const SGL_TRANSPORT: u8 = 0x5A;

/// Where a command's data is, according to its SGL.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DataDesc {
    /// In the capsule at `offset`, `len` bytes.
    InCapsule {
        /// Offset into the in-capsule data.
        offset: u64,
        /// Length in bytes.
        len: u32,
    },
    /// Moved by transport PDUs, `len` bytes.
    Transport {
        /// Length in bytes.
        len: u32,
    },
    /// Any other descriptor (not supported over TCP).
    Unsupported(u8),
}

/// Decode SGL1 of `cmd`.
pub fn data_desc(cmd: &NvmeCmd) -> DataDesc {
    let d = &cmd.dptr;
    let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
    let len = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
    match d[15] {
        SGL_IN_CAPSULE => DataDesc::InCapsule { offset: addr, len },
        SGL_TRANSPORT => DataDesc::Transport { len },
        other => DataDesc::Unsupported(other),
    }
}

/// Data direction of `cmd`: from the opcode, or for Fabrics commands from `fctype` (byte 4).
pub fn xfer_of(cmd: &NvmeCmd) -> DataXfer {
    if cmd.opc == OPC_FABRICS {
        DataXfer::from_opcode(cmd.nsid as u8)
    } else {
        DataXfer::from_opcode(cmd.opc)
    }
}

/// Fabrics command type Connect.
pub const FCTYPE_CONNECT: u8 = 0x01;

/// Whether `cmd` is a Fabrics Connect.
pub fn is_connect(cmd: &NvmeCmd) -> bool {
    cmd.opc == OPC_FABRICS && cmd.nsid as u8 == FCTYPE_CONNECT
}

#[cfg(test)]
mod tests {
    use super::*;

    fn with_sgl(id: u8, addr: u64, len: u32) -> NvmeCmd {
        let mut c = NvmeCmd::default();
        c.dptr[..8].copy_from_slice(&addr.to_le_bytes());
        c.dptr[8..12].copy_from_slice(&len.to_le_bytes());
        c.dptr[15] = id;
        c
    }

    #[test]
    fn decodes_both_tcp_descriptors() {
        assert_eq!(
            data_desc(&with_sgl(0x01, 0, 1024)),
            DataDesc::InCapsule {
                offset: 0,
                len: 1024
            }
        );
        assert_eq!(
            data_desc(&with_sgl(0x5A, 0, 65536)),
            DataDesc::Transport { len: 65536 }
        );
        assert_eq!(
            data_desc(&with_sgl(0x60, 0, 1)),
            DataDesc::Unsupported(0x60)
        );
    }

    #[test]
    fn direction_uses_fctype_for_fabrics() {
        let mut c = NvmeCmd {
            opc: OPC_FABRICS,
            nsid: 0x01, // Connect: host to controller
            ..Default::default()
        };
        assert_eq!(xfer_of(&c), DataXfer::HostToController);
        assert!(is_connect(&c));
        c.nsid = 0x04; // Property Get: no data
        assert_eq!(xfer_of(&c), DataXfer::None);
        assert!(!is_connect(&c));
        c.opc = 0x02;
        assert_eq!(xfer_of(&c), DataXfer::ControllerToHost);
    }
}
