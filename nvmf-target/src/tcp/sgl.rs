//! HOT PATH: SGL descriptor 1 of a capsule, as NVMe/TCP uses it: a thin view over
//! [`keel_nvme::sgl`] that keeps only the two descriptors a TCP host may send — a Data
//! Block with the Offset subtype (data in the capsule) and a Transport Data Block (data in
//! H2CData after R2T, or in C2HData PDUs). Every other descriptor is `Unsupported`.

use keel_nvme::cmd::{DataXfer, NvmeCmd};
use keel_nvme::fabrics::FabricsType;
use keel_nvme::sgl::{sgl1, Sgl};

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
    /// Any other descriptor (not supported over TCP): its SGL identifier byte.
    Unsupported(u8),
}

/// Decode SGL1 of `cmd`.
#[inline]
pub fn data_desc(cmd: &NvmeCmd) -> DataDesc {
    match sgl1(cmd) {
        Ok(Sgl::InCapsule { offset, len }) => DataDesc::InCapsule { offset, len },
        Ok(Sgl::Transport { len }) => DataDesc::Transport { len },
        _ => DataDesc::Unsupported(cmd.dptr[15]),
    }
}

/// Data direction of `cmd` ([`NvmeCmd::data_xfer`]).
#[inline]
pub fn xfer_of(cmd: &NvmeCmd) -> DataXfer {
    cmd.data_xfer()
}

/// Whether `cmd` is a Fabrics Connect.
#[inline]
pub fn is_connect(cmd: &NvmeCmd) -> bool {
    FabricsType::decode(cmd) == Some(FabricsType::Connect)
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_nvme::cmd::OPC_FABRICS;
    use keel_nvme::fabrics::FCTYPE_CONNECT;

    fn with_sgl(s: Sgl) -> NvmeCmd {
        NvmeCmd {
            dptr: s.encode(),
            ..Default::default()
        }
    }

    #[test]
    fn keeps_only_the_tcp_descriptors() {
        assert_eq!(
            data_desc(&with_sgl(Sgl::InCapsule {
                offset: 0,
                len: 1024
            })),
            DataDesc::InCapsule {
                offset: 0,
                len: 1024
            }
        );
        assert_eq!(
            data_desc(&with_sgl(Sgl::Transport { len: 65536 })),
            DataDesc::Transport { len: 65536 }
        );
        let keyed = Sgl::Keyed {
            addr: 1,
            len: 2,
            key: 3,
            invalidate: false,
        };
        assert_eq!(data_desc(&with_sgl(keyed)), DataDesc::Unsupported(0x40));
        assert_eq!(
            data_desc(&with_sgl(Sgl::Address { addr: 0, len: 1 })),
            DataDesc::Unsupported(0x00)
        );
        let mut c = NvmeCmd::default();
        c.dptr[15] = 0x60;
        assert_eq!(data_desc(&c), DataDesc::Unsupported(0x60));
    }

    #[test]
    fn connect_and_direction() {
        let mut c = NvmeCmd {
            opc: OPC_FABRICS,
            nsid: u32::from(FCTYPE_CONNECT),
            ..Default::default()
        };
        assert!(is_connect(&c));
        assert_eq!(xfer_of(&c), DataXfer::HostToController);
        c.nsid = 0x04;
        assert!(!is_connect(&c));
        c.opc = 0x01;
        c.nsid = u32::from(FCTYPE_CONNECT);
        assert!(!is_connect(&c), "byte 4 is NSID outside Fabrics commands");
    }
}
