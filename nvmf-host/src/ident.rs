//! The few Identify fields a host needs, read from the controller's 4096-byte answers at the
//! spec's offsets (the target side builds these structures; the host only reads them).
//! Nothing here trusts the data: short buffers read as zero.

/// Identify Controller data (CNS 01h) as received.
#[derive(Debug, Clone)]
pub struct ControllerData(Vec<u8>);

/// Identify Namespace data (CNS 00h) as received.
#[derive(Debug, Clone)]
pub struct NamespaceData(Vec<u8>);

fn le(b: &[u8], off: usize, n: usize) -> u64 {
    b.get(off..off + n).map_or(0, |s| {
        s.iter().rev().fold(0u64, |v, &x| v << 8 | u64::from(x))
    })
}

impl ControllerData {
    /// Wrap the received bytes.
    pub fn new(bytes: Vec<u8>) -> ControllerData {
        ControllerData(bytes)
    }
    /// MDTS (byte 77): largest transfer, 2^n minimum pages; 0 = no limit.
    pub fn mdts(&self) -> u8 {
        le(&self.0, 77, 1) as u8
    }
    /// MAXCMD (bytes 514-515): most outstanding commands per queue (0 = not reported).
    pub fn maxcmd(&self) -> u16 {
        le(&self.0, 514, 2) as u16
    }
    /// NN (bytes 516-519).
    pub fn nn(&self) -> u32 {
        le(&self.0, 516, 4) as u32
    }
    /// IOCCSZ (bytes 1792-1795): I/O command capsule size in 16-byte units.
    pub fn ioccsz(&self) -> u32 {
        le(&self.0, 1792, 4) as u32
    }
    /// ICDOFF (bytes 1800-1801): in-capsule data offset in 16-byte units.
    pub fn icdoff(&self) -> u16 {
        le(&self.0, 1800, 2) as u16
    }
    /// Largest transfer in bytes for a minimum page size of 2^(12+`mpsmin`), or `None` when
    /// MDTS reports no limit.
    pub fn max_xfer(&self, mpsmin: u8) -> Option<u32> {
        let mdts = self.mdts();
        if mdts == 0 {
            return None;
        }
        let shift = u32::from(mdts) + 12 + u32::from(mpsmin);
        Some(if shift >= 31 { 1 << 30 } else { 1u32 << shift })
    }
    /// In-capsule data bytes on I/O queues: IOCCSZ·16 − 64 (0 when the controller puts the
    /// data at an offset, which this host does not do).
    pub fn in_capsule_data(&self) -> u32 {
        if self.icdoff() != 0 {
            return 0;
        }
        self.ioccsz().saturating_mul(16).saturating_sub(64)
    }
}

impl NamespaceData {
    /// Wrap the received bytes.
    pub fn new(bytes: Vec<u8>) -> NamespaceData {
        NamespaceData(bytes)
    }
    /// NSZE (bytes 0-7), blocks.
    pub fn nsze(&self) -> u64 {
        le(&self.0, 0, 8)
    }
    /// FLBAS (byte 26): the format in use, index bits 3:0 (plus bits 6:5 above 16 formats).
    pub fn format_index(&self) -> usize {
        let f = le(&self.0, 26, 1) as usize;
        (f & 0xf) | ((f >> 5 & 0x3) << 4)
    }
    /// Block size of the format in use (LBAF at 128 + 4·i, LBADS bits 23:16), `None` when it
    /// is not a sane power of two (512 B .. 2 GiB) or carries metadata.
    pub fn block_size(&self) -> Option<u32> {
        let lbaf = le(&self.0, 128 + 4 * self.format_index(), 4) as u32;
        let ms = lbaf & 0xffff;
        let lbads = (lbaf >> 16) & 0xff;
        ((9..=31).contains(&lbads) && ms == 0).then(|| 1u32 << lbads)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use keel_nvme::identify::IdentifyNamespace;

    #[test]
    fn controller_fields() {
        let mut b = vec![0u8; 4096];
        b[77] = 5;
        b[514..516].copy_from_slice(&128u16.to_le_bytes());
        b[1792..1796].copy_from_slice(&((64 + 4096) / 16u32).to_le_bytes());
        let c = ControllerData::new(b.clone());
        assert_eq!(c.max_xfer(0), Some(131072));
        assert_eq!(c.maxcmd(), 128);
        assert_eq!(c.in_capsule_data(), 4096);
        b[1800] = 1;
        assert_eq!(ControllerData::new(b).in_capsule_data(), 0);
        let short = ControllerData::new(vec![1; 10]);
        assert_eq!(
            (short.mdts(), short.ioccsz(), short.max_xfer(0)),
            (0, 0, None)
        );
    }

    #[test]
    fn namespace_fields_match_what_the_target_encodes() {
        let ns = IdentifyNamespace::for_blocks(262144, 4096).unwrap();
        let d = NamespaceData::new(ns.as_bytes().to_vec());
        assert_eq!((d.nsze(), d.block_size()), (262144, Some(4096)));
        let mut b = ns.as_bytes().to_vec();
        b[128] = 8; // metadata
        assert_eq!(NamespaceData::new(b).block_size(), None);
        assert_eq!(NamespaceData::new(vec![]).block_size(), None);
    }
}
