//! HOT PATH: one received NVMe/RDMA command capsule, decoded without trusting it: the command,
//! and where its data is — none, in the capsule (Data Block, Offset subtype; host-to-controller
//! only), or in host memory (Keyed Data Block) — or the NVMe status that refuses it. Pure, so it
//! is unit-tested and fuzzed (`fuzz/fuzz_targets/rdma_capsule.rs`).

use super::recv::SQE_LEN;
use keel_nvme::cmd::{DataXfer, NvmeCmd};
use keel_nvme::sgl::{check_in_capsule, sgl1, Sgl};
use keel_nvme::status::Status;

/// Where a command's data is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapsuleData {
    /// No data (or a zero-length transfer).
    None,
    /// `len` bytes at byte `start` of the capsule (after the command).
    InCapsule {
        /// Offset from the start of the capsule (≥ 64).
        start: usize,
        /// Length in bytes.
        len: u32,
    },
    /// `len` bytes of host memory at `addr` under `key`, moved by RDMA READ/WRITE.
    Keyed {
        /// Remote address.
        addr: u64,
        /// Length in bytes (1 ..= the transport's max I/O size).
        len: u32,
        /// Remote key.
        key: u32,
        /// The host asks for the key to be invalidated with the response.
        invalidate: bool,
    },
}

/// A decoded capsule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Capsule {
    /// The command.
    pub cmd: NvmeCmd,
    /// Its data direction.
    pub xfer: DataXfer,
    /// Its data, or the status to answer it with instead of running it.
    pub data: Result<CapsuleData, Status>,
}

/// Decode a capsule of `bytes` (what the receive completed); `None` when shorter than a
/// command. Keyed transfers above `max_io_size` bytes are refused (Data SGL Length Invalid).
#[inline]
pub fn parse(bytes: &[u8], max_io_size: u32) -> Option<Capsule> {
    let sqe = bytes.get(..SQE_LEN)?;
    // SAFETY: 64 readable bytes; NvmeCmd is 64 bytes of plain integers (repr(C), no padding,
    // checked in keel_nvme::cmd), so any bytes form a valid value.
    let cmd: NvmeCmd = unsafe { std::ptr::read_unaligned(sqe.as_ptr().cast::<NvmeCmd>()) };
    let xfer = cmd.data_xfer();
    let icd = (bytes.len() - SQE_LEN).min(u32::MAX as usize) as u32;
    let data = match xfer {
        DataXfer::None => Ok(CapsuleData::None),
        DataXfer::Bidirectional => Err(Status::INVALID_FIELD),
        _ => match sgl1(&cmd) {
            Ok(Sgl::InCapsule { offset, len }) if xfer == DataXfer::HostToController => {
                check_in_capsule(offset, len, icd).map(|()| {
                    if len == 0 {
                        CapsuleData::None
                    } else {
                        CapsuleData::InCapsule {
                            start: SQE_LEN + offset as usize,
                            len,
                        }
                    }
                })
            }
            Ok(Sgl::Keyed {
                addr,
                len,
                key,
                invalidate,
            }) => {
                if len > max_io_size {
                    Err(Status::DATA_SGL_LENGTH_INVALID)
                } else if len == 0 {
                    Ok(CapsuleData::None)
                } else {
                    Ok(CapsuleData::Keyed {
                        addr,
                        len,
                        key,
                        invalidate,
                    })
                }
            }
            _ => Err(Status::SGL_DESCRIPTOR_TYPE_INVALID),
        },
    };
    Some(Capsule { cmd, xfer, data })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn capsule(opc: u8, sgl: Sgl, icd: usize) -> Vec<u8> {
        let cmd = NvmeCmd {
            opc,
            dptr: sgl.encode(),
            ..Default::default()
        };
        // SAFETY: NvmeCmd is 64 bytes of plain integers.
        let raw: [u8; 64] = unsafe { std::mem::transmute(cmd) };
        let mut v = raw.to_vec();
        v.resize(64 + icd, 0xab);
        v
    }

    #[test]
    fn data_locations_and_refusals() {
        let keyed = |len, invalidate| Sgl::Keyed {
            addr: 0x1000,
            len,
            key: 7,
            invalidate,
        };
        // Write (0x01) with in-capsule data, read (0x02) with a keyed SGL.
        let c = parse(
            &capsule(
                0x01,
                Sgl::InCapsule {
                    offset: 16,
                    len: 512,
                },
                1024,
            ),
            8192,
        )
        .unwrap();
        assert_eq!(
            c.data,
            Ok(CapsuleData::InCapsule {
                start: 80,
                len: 512
            })
        );
        let c = parse(&capsule(0x02, keyed(4096, true), 0), 8192).unwrap();
        assert_eq!(
            c.data,
            Ok(CapsuleData::Keyed {
                addr: 0x1000,
                len: 4096,
                key: 7,
                invalidate: true
            })
        );
        assert_eq!(c.xfer, DataXfer::ControllerToHost);
        let refused = [
            (
                capsule(
                    0x01,
                    Sgl::InCapsule {
                        offset: 600,
                        len: 512,
                    },
                    1024,
                ),
                Status::INVALID_SGL_OFFSET,
            ),
            (
                capsule(
                    0x02,
                    Sgl::InCapsule {
                        offset: 0,
                        len: 512,
                    },
                    1024,
                ),
                Status::SGL_DESCRIPTOR_TYPE_INVALID,
            ),
            (
                capsule(0x02, keyed(8193, false), 0),
                Status::DATA_SGL_LENGTH_INVALID,
            ),
            (
                capsule(0x02, Sgl::Transport { len: 512 }, 0),
                Status::SGL_DESCRIPTOR_TYPE_INVALID,
            ),
            (capsule(0x03, keyed(512, false), 0), Status::INVALID_FIELD),
        ];
        for (bytes, status) in refused {
            assert_eq!(parse(&bytes, 8192).unwrap().data, Err(status));
        }
        assert_eq!(
            parse(&capsule(0x00, keyed(0, false), 0), 8192)
                .unwrap()
                .data,
            Ok(CapsuleData::None)
        );
        assert!(parse(&[0u8; 63], 8192).is_none());
    }
}
