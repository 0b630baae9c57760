//! The stamped block format: every logical block the checker writes carries who it is and
//! which write put it there, so a read tells a valid block of that LBA (and its generation)
//! from stale, misdirected, torn or garbage data.
//!
//! Header (little-endian, 32 bytes): `magic u32 | crc32c u32 | nsid u32 | block_size u32 |
//! lba u64 | generation u64`; the rest of the block is a pattern derived from the generation
//! and the LBA. The CRC32C covers the whole block with its own field taken as zero.

/// Magic of a stamped block ("KCC1").
pub const MAGIC: u32 = 0x4b43_4331;
/// Header bytes at the start of each block.
pub const HEADER_LEN: usize = 32;
/// Smallest block size the format supports.
pub const MIN_BLOCK: usize = 64;

/// What a block read back contains.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Found {
    /// Entirely zero: never written (thin volume, sparse file).
    Zeroes,
    /// A valid block of this namespace and LBA, written with this generation.
    Stamped(u64),
    /// Not a stamped block and not zeroes.
    Garbage,
    /// A stamped block whose CRC does not match (torn or corrupted).
    BadCrc,
    /// A valid stamped block of another LBA or namespace (misdirected write or read).
    Misplaced {
        /// The namespace the block claims.
        nsid: u32,
        /// The LBA the block claims.
        lba: u64,
    },
}

impl std::fmt::Display for Found {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Found::Zeroes => f.write_str("zeroes"),
            Found::Stamped(g) => write!(f, "generation {g}"),
            Found::Garbage => f.write_str("garbage (neither a stamped block nor zeroes)"),
            Found::BadCrc => f.write_str("a stamped block with a bad CRC (torn or corrupt)"),
            Found::Misplaced { nsid, lba } => {
                write!(f, "the block of namespace {nsid} LBA {lba}")
            }
        }
    }
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn get64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// CRC32C of `block` with the CRC field (bytes 4..8) taken as zero.
fn block_crc(block: &[u8]) -> u32 {
    let c = crc32c::crc32c(&block[..4]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &block[8..])
}

/// Fill `block` (one logical block, at least [`MIN_BLOCK`] bytes) as the block of `nsid`/`lba`
/// written with `generation`.
pub fn stamp(block: &mut [u8], nsid: u32, lba: u64, generation: u64) {
    debug_assert!(block.len() >= MIN_BLOCK);
    put32(block, 0, MAGIC);
    put32(block, 4, 0);
    put32(block, 8, nsid);
    put32(block, 12, block.len() as u32);
    put64(block, 16, lba);
    put64(block, 24, generation);
    let mut x = generation ^ lba.rotate_left(32) ^ u64::from(nsid).rotate_left(17);
    for w in block[HEADER_LEN..].chunks_exact_mut(8) {
        // xorshift64*: cheap, and different for every (generation, LBA, namespace).
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        w.copy_from_slice(&x.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let crc = block_crc(block);
    put32(block, 4, crc);
}

/// What `block`, read back from `nsid`/`lba`, contains.
pub fn inspect(block: &[u8], nsid: u32, lba: u64) -> Found {
    if block.len() < MIN_BLOCK {
        return Found::Garbage;
    }
    if get32(block, 0) != MAGIC || get32(block, 12) as usize != block.len() {
        return if block.iter().all(|&b| b == 0) {
            Found::Zeroes
        } else {
            Found::Garbage
        };
    }
    if get32(block, 4) != block_crc(block) {
        return Found::BadCrc;
    }
    let (bn, bl) = (get32(block, 8), get64(block, 16));
    if bn != nsid || bl != lba {
        return Found::Misplaced { nsid: bn, lba: bl };
    }
    Found::Stamped(get64(block, 24))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stamped_blocks_read_back_with_their_generation() {
        for bs in [512usize, 4096] {
            let mut b = vec![0u8; bs];
            stamp(&mut b, 3, 77, 12345);
            assert_eq!(inspect(&b, 3, 77), Found::Stamped(12345));
        }
    }

    #[test]
    fn zeroes_garbage_torn_and_misplaced_blocks_are_told_apart() {
        let zero = vec![0u8; 4096];
        assert_eq!(inspect(&zero, 1, 0), Found::Zeroes);
        let mut g = vec![0u8; 4096];
        g[100] = 1;
        assert_eq!(inspect(&g, 1, 0), Found::Garbage);
        let mut b = vec![0u8; 4096];
        stamp(&mut b, 1, 5, 9);
        assert_eq!(inspect(&b, 1, 6), Found::Misplaced { nsid: 1, lba: 5 });
        assert_eq!(inspect(&b, 2, 5), Found::Misplaced { nsid: 1, lba: 5 });
        // A block torn between two generations: the second half of another write.
        let mut other = vec![0u8; 4096];
        stamp(&mut other, 1, 5, 10);
        b[2048..].copy_from_slice(&other[2048..]);
        assert_eq!(inspect(&b, 1, 5), Found::BadCrc);
        // The size in the header must be the size read.
        let mut small = vec![0u8; 512];
        stamp(&mut small, 1, 5, 9);
        let mut big = vec![0u8; 4096];
        big[..512].copy_from_slice(&small);
        assert_eq!(inspect(&big, 1, 5), Found::Garbage);
    }

    #[test]
    fn patterns_differ_by_generation_and_lba() {
        let mut a = vec![0u8; 512];
        let mut b = vec![0u8; 512];
        stamp(&mut a, 1, 5, 9);
        stamp(&mut b, 1, 5, 10);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
        stamp(&mut b, 1, 6, 9);
        assert_ne!(a[HEADER_LEN..], b[HEADER_LEN..]);
    }
}
