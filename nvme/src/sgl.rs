//! HOT PATH: SGL descriptors (NVMe Base 2.0 §4.3.2), as fabrics commands carry them in
//! SGL1 (SQE bytes 24..40): 16 bytes, with the SGL identifier in byte 15 (descriptor type in
//! bits 7:4, subtype in bits 3:0). Fabrics uses three kinds: a Data Block with the Offset
//! subtype (in-capsule data, TCP and RDMA), a Transport Data Block (TCP: data moved by
//! R2T/H2CData or C2HData) and a Keyed Data Block (RDMA: remote address + key).
//! Decoding is a few shifts on the already-received SQE: no allocation, no copies.

use super::cmd::NvmeCmd;
use super::status::Status;

/// Descriptor type: Data Block.
pub const TYPE_DATA_BLOCK: u8 = 0x0;
/// Descriptor type: Bit Bucket.
pub const TYPE_BIT_BUCKET: u8 = 0x1;
/// Descriptor type: Segment.
pub const TYPE_SEGMENT: u8 = 0x2;
/// Descriptor type: Last Segment.
pub const TYPE_LAST_SEGMENT: u8 = 0x3;
/// Descriptor type: Keyed Data Block.
pub const TYPE_KEYED_DATA_BLOCK: u8 = 0x4;
/// Descriptor type: Transport Data Block.
pub const TYPE_TRANSPORT_DATA_BLOCK: u8 = 0x5;
/// Subtype: the address field is an address.
pub const SUBTYPE_ADDRESS: u8 = 0x0;
/// Subtype: the address field is an offset (into the in-capsule data).
pub const SUBTYPE_OFFSET: u8 = 0x1;
/// Subtype: transport specific (NVMe/TCP Transport Data Block).
pub const SUBTYPE_TRANSPORT: u8 = 0xA;
/// Subtype: invalidate the key after the transfer (RDMA Send with Invalidate).
pub const SUBTYPE_INVALIDATE_KEY: u8 = 0xF;

/// SGL identifier of an in-capsule Data Block (type 0, subtype Offset).
pub const ID_IN_CAPSULE: u8 = TYPE_DATA_BLOCK << 4 | SUBTYPE_OFFSET;
/// SGL identifier of a TCP Transport Data Block (type 5, subtype 0xA).
pub const ID_TCP_TRANSPORT: u8 = TYPE_TRANSPORT_DATA_BLOCK << 4 | SUBTYPE_TRANSPORT;
/// SGL identifier of an RDMA Keyed Data Block (type 4, subtype Address).
pub const ID_KEYED: u8 = TYPE_KEYED_DATA_BLOCK << 4 | SUBTYPE_ADDRESS;
/// SGL identifier of an RDMA Keyed Data Block asking for invalidation.
pub const ID_KEYED_INVALIDATE: u8 = TYPE_KEYED_DATA_BLOCK << 4 | SUBTYPE_INVALIDATE_KEY;

/// PSDT (CDW0 bits 15:14, byte 1 bits 7:6): SGL, metadata pointer to a contiguous buffer.
pub const PSDT_SGL_MPTR_CONTIG: u8 = 0b01;
/// PSDT: SGL, metadata pointer to an SGL segment.
pub const PSDT_SGL_MPTR_SGL: u8 = 0b10;

/// A decoded SGL descriptor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sgl {
    /// Data Block, Address subtype: `len` bytes at host address `addr` (not meaningful over
    /// fabrics without a key).
    Address {
        /// Address.
        addr: u64,
        /// Length in bytes.
        len: u32,
    },
    /// Data Block, Offset subtype: `len` bytes of in-capsule data at `offset`.
    InCapsule {
        /// Offset into the in-capsule data.
        offset: u64,
        /// Length in bytes.
        len: u32,
    },
    /// Transport Data Block (TCP subtype): `len` bytes moved by the transport.
    Transport {
        /// Length in bytes.
        len: u32,
    },
    /// Keyed Data Block (RDMA): `len` bytes (24-bit) at remote `addr` under `key`.
    Keyed {
        /// Remote address.
        addr: u64,
        /// Length in bytes (at most 2^24 − 1).
        len: u32,
        /// Remote key.
        key: u32,
        /// Invalidate the key with the response (subtype 0xF).
        invalidate: bool,
    },
    /// Segment or Last Segment: a list of further descriptors, `len` bytes at `addr`
    /// (an offset into in-capsule data if `offset`).
    Segment {
        /// Address or offset of the descriptor list.
        addr: u64,
        /// Length of the list in bytes (a multiple of 16).
        len: u32,
        /// Last Segment (no further segment follows).
        last: bool,
        /// The address is an in-capsule offset.
        offset: bool,
    },
    /// Bit Bucket: `len` bytes the host discards (reads only).
    BitBucket {
        /// Length in bytes.
        len: u32,
    },
}

impl Sgl {
    /// Decode a 16-byte descriptor. Unknown types and subtypes are SGL Descriptor Type
    /// Invalid.
    #[inline]
    pub fn decode(d: &[u8; 16]) -> Result<Sgl, Status> {
        let addr = u64::from_le_bytes([d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]);
        let len = u32::from_le_bytes([d[8], d[9], d[10], d[11]]);
        let ty = d[15] >> 4;
        let sub = d[15] & 0xf;
        match (ty, sub) {
            (TYPE_DATA_BLOCK, SUBTYPE_ADDRESS) => Ok(Sgl::Address { addr, len }),
            (TYPE_DATA_BLOCK, SUBTYPE_OFFSET) => Ok(Sgl::InCapsule { offset: addr, len }),
            (TYPE_TRANSPORT_DATA_BLOCK, SUBTYPE_TRANSPORT) => Ok(Sgl::Transport { len }),
            (TYPE_KEYED_DATA_BLOCK, SUBTYPE_ADDRESS | SUBTYPE_INVALIDATE_KEY) => Ok(Sgl::Keyed {
                addr,
                len: u32::from_le_bytes([d[8], d[9], d[10], 0]),
                key: u32::from_le_bytes([d[11], d[12], d[13], d[14]]),
                invalidate: sub == SUBTYPE_INVALIDATE_KEY,
            }),
            (TYPE_SEGMENT | TYPE_LAST_SEGMENT, SUBTYPE_ADDRESS | SUBTYPE_OFFSET) => {
                Ok(Sgl::Segment {
                    addr,
                    len,
                    last: ty == TYPE_LAST_SEGMENT,
                    offset: sub == SUBTYPE_OFFSET,
                })
            }
            (TYPE_BIT_BUCKET, SUBTYPE_ADDRESS) => Ok(Sgl::BitBucket { len }),
            _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
        }
    }

    /// Encode (hosts, tests and tools).
    pub fn encode(&self) -> [u8; 16] {
        let plain = |addr: u64, len: u32, id: u8| {
            let mut d = [0u8; 16];
            d[0..8].copy_from_slice(&addr.to_le_bytes());
            d[8..12].copy_from_slice(&len.to_le_bytes());
            d[15] = id;
            d
        };
        match *self {
            Sgl::Address { addr, len } => plain(addr, len, TYPE_DATA_BLOCK << 4 | SUBTYPE_ADDRESS),
            Sgl::InCapsule { offset, len } => plain(offset, len, ID_IN_CAPSULE),
            Sgl::Transport { len } => plain(0, len, ID_TCP_TRANSPORT),
            Sgl::Segment {
                addr,
                len,
                last,
                offset,
            } => {
                let ty = if last {
                    TYPE_LAST_SEGMENT
                } else {
                    TYPE_SEGMENT
                };
                let sub = if offset {
                    SUBTYPE_OFFSET
                } else {
                    SUBTYPE_ADDRESS
                };
                plain(addr, len, ty << 4 | sub)
            }
            Sgl::BitBucket { len } => plain(0, len, TYPE_BIT_BUCKET << 4),
            Sgl::Keyed {
                addr,
                len,
                key,
                invalidate,
            } => {
                let mut d = [0u8; 16];
                d[0..8].copy_from_slice(&addr.to_le_bytes());
                d[8..11].copy_from_slice(&len.to_le_bytes()[..3]);
                d[11..15].copy_from_slice(&key.to_le_bytes());
                d[15] = if invalidate {
                    ID_KEYED_INVALIDATE
                } else {
                    ID_KEYED
                };
                d
            }
        }
    }

    /// The data length the descriptor describes (for segments, the list's length).
    #[inline]
    pub fn len(&self) -> u32 {
        match *self {
            Sgl::Address { len, .. }
            | Sgl::InCapsule { len, .. }
            | Sgl::Transport { len }
            | Sgl::Keyed { len, .. }
            | Sgl::Segment { len, .. }
            | Sgl::BitBucket { len } => len,
        }
    }

    /// Whether the descriptor describes no data.
    #[inline]
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Check a command's flags byte for a fabrics target: no fused operation (bits 1:0) and
/// PSDT selecting SGLs (bits 7:6 = 01b or 10b), else Invalid Field.
#[inline]
pub fn check_flags(cmd: &NvmeCmd) -> Result<(), Status> {
    let psdt = cmd.flags >> 6;
    if cmd.flags & 0x3 != 0 || !(psdt == PSDT_SGL_MPTR_CONTIG || psdt == PSDT_SGL_MPTR_SGL) {
        return Err(Status::INVALID_FIELD);
    }
    Ok(())
}

/// Decode SGL1 of `cmd`.
#[inline]
pub fn sgl1(cmd: &NvmeCmd) -> Result<Sgl, Status> {
    Sgl::decode(&cmd.dptr)
}

/// Check in-capsule data: `offset + len` must lie within the `icd_len` bytes the capsule
/// carried (else SGL Offset Invalid, as Linux and SPDK targets answer).
#[inline]
pub fn check_in_capsule(offset: u64, len: u32, icd_len: u32) -> Result<(), Status> {
    match offset.checked_add(len as u64) {
        Some(end) if end <= icd_len as u64 => Ok(()),
        _ => Err(Status::INVALID_SGL_OFFSET),
    }
}

/// Check that the SGL describes exactly the data the command transfers (Data SGL Length
/// Invalid otherwise: this target does not accept longer SGLs, SGLS bit 18 clear).
#[inline]
pub fn check_transfer_len(sgl_len: u64, expected: u64) -> Result<(), Status> {
    if sgl_len == expected {
        Ok(())
    } else {
        Err(Status::DATA_SGL_LENGTH_INVALID)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_descriptors() {
        // What a Linux TCP host sends for a 4 KiB in-capsule write.
        let mut d = [0u8; 16];
        d[8..12].copy_from_slice(&4096u32.to_le_bytes());
        d[15] = 0x01;
        assert_eq!(
            Sgl::decode(&d),
            Ok(Sgl::InCapsule {
                offset: 0,
                len: 4096
            })
        );
        // ... and for a 128 KiB read.
        d[8..12].copy_from_slice(&131072u32.to_le_bytes());
        d[15] = 0x5A;
        assert_eq!(Sgl::decode(&d), Ok(Sgl::Transport { len: 131072 }));
        assert_eq!(Sgl::decode(&d).unwrap().len(), 131072);
    }

    #[test]
    fn keyed_layout() {
        // addr @0, 24-bit length @8, key @11, identifier @15.
        let d = [
            1, 2, 3, 4, 5, 6, 7, 8, 0x00, 0x10, 0x02, 0xaa, 0xbb, 0xcc, 0xdd, 0x4F,
        ];
        let s = Sgl::decode(&d).unwrap();
        assert_eq!(
            s,
            Sgl::Keyed {
                addr: 0x0807_0605_0403_0201,
                len: 0x02_1000,
                key: 0xddcc_bbaa,
                invalidate: true,
            }
        );
        assert_eq!(s.encode(), d);
    }

    #[test]
    fn round_trips() {
        for s in [
            Sgl::Address { addr: 9, len: 10 },
            Sgl::InCapsule {
                offset: 16,
                len: 512,
            },
            Sgl::Transport { len: 1 << 20 },
            Sgl::Keyed {
                addr: u64::MAX,
                len: 0xff_ffff,
                key: 1,
                invalidate: false,
            },
            Sgl::Segment {
                addr: 0,
                len: 32,
                last: true,
                offset: true,
            },
            Sgl::Segment {
                addr: 64,
                len: 16,
                last: false,
                offset: false,
            },
            Sgl::BitBucket { len: 4 },
        ] {
            assert_eq!(Sgl::decode(&s.encode()), Ok(s), "{s:?}");
        }
        assert!(Sgl::Transport { len: 0 }.is_empty());
    }

    #[test]
    fn invalid_descriptors() {
        for id in [0x02, 0x0A, 0x11, 0x42, 0x50, 0x5F, 0x60, 0xF0, 0x24, 0x3A] {
            let mut d = [0u8; 16];
            d[15] = id;
            assert_eq!(
                Sgl::decode(&d),
                Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
                "{id:#x}"
            );
        }
    }

    #[test]
    fn flags() {
        let mut c = NvmeCmd {
            flags: 0x40,
            ..NvmeCmd::default()
        };
        assert_eq!(check_flags(&c), Ok(()));
        c.flags = 0x80;
        assert_eq!(check_flags(&c), Ok(()));
        for bad in [0x00, 0xC0, 0x41, 0x42] {
            c.flags = bad;
            assert_eq!(check_flags(&c), Err(Status::INVALID_FIELD), "{bad:#x}");
        }
        c.dptr = Sgl::Transport { len: 8 }.encode();
        assert_eq!(sgl1(&c), Ok(Sgl::Transport { len: 8 }));
    }

    #[test]
    fn in_capsule_and_length_checks() {
        assert_eq!(check_in_capsule(0, 4096, 4096), Ok(()));
        assert_eq!(check_in_capsule(16, 4080, 4096), Ok(()));
        assert_eq!(
            check_in_capsule(16, 4096, 4096),
            Err(Status::INVALID_SGL_OFFSET)
        );
        assert_eq!(
            check_in_capsule(u64::MAX, 1, 4096),
            Err(Status::INVALID_SGL_OFFSET)
        );
        assert_eq!(check_transfer_len(4096, 4096), Ok(()));
        assert_eq!(
            check_transfer_len(4095, 4096),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
        assert_eq!(
            check_transfer_len(8192, 4096),
            Err(Status::DATA_SGL_LENGTH_INVALID)
        );
    }
}
