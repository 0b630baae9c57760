//! HOT PATH: NVM command set I/O commands (NVM Command Set 1.0 §3): Read, Write and
//! Compare (SLBA in CDW10-11, NLB 0-based in CDW12 bits 15:0, FUA bit 30), Write Zeroes
//! (plus DEAC bit 25), Dataset Management (NR 0-based in CDW10 bits 7:0, attributes in
//! CDW11, 16-byte ranges as data), and the LBA range check every one of them needs.
//! Decoding reads the SQE's dwords only: no allocation, no copies.

use super::cmd::NvmeCmd;
use super::opcode::nvm;
use super::status::Status;

/// Read, Write or Compare.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RwCmd {
    /// Starting LBA (CDW11:CDW10).
    pub slba: u64,
    /// Number of logical blocks, 1-based (CDW12 bits 15:0 + 1).
    pub nlb: u32,
    /// Force unit access (CDW12 bit 30).
    pub fua: bool,
    /// Limited retry (CDW12 bit 31).
    pub lr: bool,
    /// Protection information field (CDW12 bits 29:26).
    pub prinfo: u8,
    /// Directive type (CDW12 bits 23:20).
    pub dtype: u8,
    /// Dataset management hints (CDW13 bits 7:0).
    pub dsm: u8,
    /// Directive specific (CDW13 bits 31:16).
    pub dspec: u16,
}

impl RwCmd {
    /// Decode a Read, Write or Compare (Invalid Opcode for anything else).
    #[inline]
    pub fn decode(cmd: &NvmeCmd) -> Result<RwCmd, Status> {
        match cmd.opc {
            nvm::READ | nvm::WRITE | nvm::COMPARE => Ok(RwCmd {
                slba: slba(cmd),
                nlb: nlb(cmd),
                fua: cmd.cdw12 & (1 << 30) != 0,
                lr: cmd.cdw12 & (1 << 31) != 0,
                prinfo: (cmd.cdw12 >> 26 & 0xf) as u8,
                dtype: (cmd.cdw12 >> 20 & 0xf) as u8,
                dsm: cmd.cdw13 as u8,
                dspec: (cmd.cdw13 >> 16) as u16,
            }),
            _ => Err(Status::INVALID_OPCODE),
        }
    }
    /// Bytes of data for `block_size`-byte blocks.
    #[inline]
    pub fn data_len(&self, block_size: u32) -> u64 {
        self.nlb as u64 * block_size as u64
    }
    /// Check the range against a namespace of `nsze` blocks (LBA Out of Range).
    #[inline]
    pub fn check_range(&self, nsze: u64) -> Result<(), Status> {
        check_lba_range(self.slba, self.nlb, nsze)
    }
}

/// Write Zeroes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WriteZeroesCmd {
    /// Starting LBA.
    pub slba: u64,
    /// Number of logical blocks, 1-based.
    pub nlb: u32,
    /// Deallocate (CDW12 bit 25): the blocks may be deallocated instead of written.
    pub deac: bool,
    /// Force unit access (CDW12 bit 30).
    pub fua: bool,
    /// Protection information field (CDW12 bits 29:26).
    pub prinfo: u8,
}

impl WriteZeroesCmd {
    /// Decode (Invalid Opcode for anything but Write Zeroes).
    #[inline]
    pub fn decode(cmd: &NvmeCmd) -> Result<WriteZeroesCmd, Status> {
        if cmd.opc != nvm::WRITE_ZEROES {
            return Err(Status::INVALID_OPCODE);
        }
        Ok(WriteZeroesCmd {
            slba: slba(cmd),
            nlb: nlb(cmd),
            deac: cmd.cdw12 & (1 << 25) != 0,
            fua: cmd.cdw12 & (1 << 30) != 0,
            prinfo: (cmd.cdw12 >> 26 & 0xf) as u8,
        })
    }
    /// Check the range against a namespace of `nsze` blocks (LBA Out of Range).
    #[inline]
    pub fn check_range(&self, nsze: u64) -> Result<(), Status> {
        check_lba_range(self.slba, self.nlb, nsze)
    }
}

/// Largest number of Dataset Management ranges (NR is 8 bits, 0-based).
pub const DSM_MAX_RANGES: usize = 256;

/// Dataset Management.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DsmCmd {
    /// Number of ranges, 1-based (CDW10 bits 7:0 + 1).
    pub nr: u16,
    /// Integral dataset for read (CDW11 bit 0).
    pub idr: bool,
    /// Integral dataset for write (CDW11 bit 1).
    pub idw: bool,
    /// Deallocate (CDW11 bit 2).
    pub ad: bool,
}

impl DsmCmd {
    /// Decode (Invalid Opcode for anything but Dataset Management).
    #[inline]
    pub fn decode(cmd: &NvmeCmd) -> Result<DsmCmd, Status> {
        if cmd.opc != nvm::DATASET_MANAGEMENT {
            return Err(Status::INVALID_OPCODE);
        }
        Ok(DsmCmd {
            nr: (cmd.cdw10 & 0xff) as u16 + 1,
            idr: cmd.cdw11 & 1 != 0,
            idw: cmd.cdw11 & 2 != 0,
            ad: cmd.cdw11 & 4 != 0,
        })
    }
    /// Bytes of range data the command carries (16 per range).
    #[inline]
    pub fn data_len(&self) -> u32 {
        self.nr as u32 * DsmRange::SIZE as u32
    }
}

/// One Dataset Management range (16 bytes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DsmRange {
    /// Context attributes (bytes 3:0).
    pub context_attrs: u32,
    /// Length in logical blocks (bytes 7:4); 0 is an empty range.
    pub nlb: u32,
    /// Starting LBA (bytes 15:8).
    pub slba: u64,
}

impl DsmRange {
    /// Size on the wire.
    pub const SIZE: usize = 16;
    /// Decode one range.
    #[inline]
    pub fn decode(b: &[u8; 16]) -> DsmRange {
        DsmRange {
            context_attrs: u32::from_le_bytes([b[0], b[1], b[2], b[3]]),
            nlb: u32::from_le_bytes([b[4], b[5], b[6], b[7]]),
            slba: u64::from_le_bytes([b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]]),
        }
    }
    /// Encode one range.
    pub fn encode(&self) -> [u8; 16] {
        let mut b = [0u8; 16];
        b[0..4].copy_from_slice(&self.context_attrs.to_le_bytes());
        b[4..8].copy_from_slice(&self.nlb.to_le_bytes());
        b[8..16].copy_from_slice(&self.slba.to_le_bytes());
        b
    }
    /// The first `nr` ranges of `data`. Data SGL Length Invalid if `data` holds fewer than
    /// `nr` ranges or `nr` exceeds [`DSM_MAX_RANGES`].
    pub fn parse(data: &[u8], nr: usize) -> Result<impl Iterator<Item = DsmRange> + '_, Status> {
        if nr > DSM_MAX_RANGES || data.len() < nr * Self::SIZE {
            return Err(Status::DATA_SGL_LENGTH_INVALID);
        }
        Ok(data[..nr * Self::SIZE].chunks_exact(Self::SIZE).map(|c| {
            let mut b = [0u8; 16];
            b.copy_from_slice(c);
            DsmRange::decode(&b)
        }))
    }
    /// Check the range against a namespace of `nsze` blocks (LBA Out of Range). Empty
    /// ranges are valid anywhere within the namespace.
    #[inline]
    pub fn check_range(&self, nsze: u64) -> Result<(), Status> {
        match self.slba.checked_add(self.nlb as u64) {
            Some(end) if end <= nsze => Ok(()),
            _ => Err(Status::LBA_OUT_OF_RANGE),
        }
    }
}

/// Check that `nlb` (≥ 1) blocks from `slba` lie within a namespace of `nsze` blocks, without
/// overflow (LBA Out of Range otherwise).
#[inline]
pub fn check_lba_range(slba: u64, nlb: u32, nsze: u64) -> Result<(), Status> {
    match slba.checked_add(nlb as u64) {
        Some(end) if end <= nsze => Ok(()),
        _ => Err(Status::LBA_OUT_OF_RANGE),
    }
}

#[inline]
fn slba(cmd: &NvmeCmd) -> u64 {
    cmd.cdw10 as u64 | (cmd.cdw11 as u64) << 32
}

#[inline]
fn nlb(cmd: &NvmeCmd) -> u32 {
    (cmd.cdw12 & 0xffff) + 1
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cmd(opc: u8, cdw10: u32, cdw11: u32, cdw12: u32, cdw13: u32) -> NvmeCmd {
        NvmeCmd {
            opc,
            nsid: 1,
            cdw10,
            cdw11,
            cdw12,
            cdw13,
            ..NvmeCmd::default()
        }
    }

    #[test]
    fn read_write_compare() {
        let c = cmd(nvm::WRITE, 0x8000_0001, 0x2, 1 << 30 | 7, 0x0005_0003);
        let rw = RwCmd::decode(&c).unwrap();
        assert_eq!(rw.slba, 0x2_8000_0001);
        assert_eq!(rw.nlb, 8);
        assert!(rw.fua && !rw.lr);
        assert_eq!(rw.dsm, 3);
        assert_eq!(rw.dspec, 5);
        assert_eq!(rw.data_len(4096), 32768);
        let max = RwCmd::decode(&cmd(nvm::READ, 0, 0, 1 << 31 | 0xffff, 0)).unwrap();
        assert_eq!(max.nlb, 65536);
        assert!(max.lr && !max.fua);
        assert_eq!(max.data_len(4096), 256 << 20);
        let pi = RwCmd::decode(&cmd(nvm::COMPARE, 0, 0, 0b1011 << 26 | 0x3 << 20, 0)).unwrap();
        assert_eq!((pi.prinfo, pi.dtype), (0b1011, 3));
        assert_eq!(
            RwCmd::decode(&cmd(nvm::FLUSH, 0, 0, 0, 0)),
            Err(Status::INVALID_OPCODE)
        );
    }

    #[test]
    fn lba_range_checks() {
        let rw = RwCmd::decode(&cmd(nvm::READ, 92, 0, 7, 0)).unwrap();
        assert_eq!(rw.check_range(100), Ok(()));
        assert_eq!(rw.check_range(99), Err(Status::LBA_OUT_OF_RANGE));
        assert_eq!(
            check_lba_range(u64::MAX, 1, u64::MAX),
            Err(Status::LBA_OUT_OF_RANGE)
        );
        assert_eq!(check_lba_range(u64::MAX - 1, 1, u64::MAX), Ok(()));
        assert_eq!(check_lba_range(100, 1, 100), Err(Status::LBA_OUT_OF_RANGE));
    }

    #[test]
    fn write_zeroes() {
        let wz = WriteZeroesCmd::decode(&cmd(nvm::WRITE_ZEROES, 5, 0, 1 << 25 | 15, 0)).unwrap();
        assert_eq!((wz.slba, wz.nlb, wz.deac, wz.fua), (5, 16, true, false));
        assert_eq!(wz.check_range(21), Ok(()));
        assert_eq!(wz.check_range(20), Err(Status::LBA_OUT_OF_RANGE));
        assert_eq!(
            WriteZeroesCmd::decode(&cmd(nvm::WRITE, 0, 0, 0, 0)),
            Err(Status::INVALID_OPCODE)
        );
    }

    #[test]
    fn dataset_management() {
        let d = DsmCmd::decode(&cmd(nvm::DATASET_MANAGEMENT, 0xffff_ff02, 0x4, 0, 0)).unwrap();
        assert_eq!(d.nr, 3);
        assert!(d.ad && !d.idr && !d.idw);
        assert_eq!(d.data_len(), 48);
        let all = DsmCmd::decode(&cmd(nvm::DATASET_MANAGEMENT, 0xff, 0x3, 0, 0)).unwrap();
        assert_eq!(all.nr, 256);
        assert!(all.idr && all.idw && !all.ad);
        assert_eq!(
            DsmCmd::decode(&cmd(nvm::READ, 0, 0, 0, 0)),
            Err(Status::INVALID_OPCODE)
        );
    }

    #[test]
    fn dsm_ranges() {
        let r = DsmRange {
            context_attrs: 0x0102_0304,
            nlb: 8,
            slba: 0x0a0b_0c0d_0e0f_1011,
        };
        let b = r.encode();
        assert_eq!(&b[0..4], &[4, 3, 2, 1]);
        assert_eq!(&b[4..8], &[8, 0, 0, 0]);
        assert_eq!(&b[8..16], &[0x11, 0x10, 0x0f, 0x0e, 0x0d, 0x0c, 0x0b, 0x0a]);
        assert_eq!(DsmRange::decode(&b), r);
        let mut data = Vec::new();
        for i in 0..3u64 {
            data.extend_from_slice(
                &DsmRange {
                    context_attrs: 0,
                    nlb: i as u32,
                    slba: i * 100,
                }
                .encode(),
            );
        }
        let got: Vec<_> = DsmRange::parse(&data, 2).unwrap().map(|r| r.slba).collect();
        assert_eq!(got, [0, 100]);
        assert!(DsmRange::parse(&data, 4).is_err());
        assert!(DsmRange::parse(&data, 257).is_err());
        assert_eq!(DsmRange::parse(&data, 0).unwrap().count(), 0);
        let empty = DsmRange {
            context_attrs: 0,
            nlb: 0,
            slba: 10,
        };
        assert_eq!(empty.check_range(10), Ok(()));
        assert_eq!(empty.check_range(9), Err(Status::LBA_OUT_OF_RANGE));
        let wrap = DsmRange {
            context_attrs: 0,
            nlb: 2,
            slba: u64::MAX,
        };
        assert_eq!(wrap.check_range(u64::MAX), Err(Status::LBA_OUT_OF_RANGE));
    }
}
