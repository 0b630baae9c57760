//! `--verify` block format: every block a job writes starts with a 32-byte header and is filled
//! with a pattern derived from the job's run id, the LBA and a per-write generation; a CRC32C
//! covers the whole block. A read checks each block it got back.
//!
//! Header (little-endian): `magic u32 | crc32c u32 | lba u64 | run_id u64 | generation u32 |
//! block_size u32`. The CRC is computed with its own field taken as zero.
//!
//! **The contract**: a run judges only the blocks it wrote itself. The run id is 64 random bits
//! drawn when a job starts (never derived from `--seed`, so two runs with the same seed never
//! share one): a block from an earlier run, whatever its seed, can never pass for this run's.
//! The job keeps a bitmap of the positions whose write completed in this run and checks a read
//! only there; a read of any other position is counted as not judged. So a report means the
//! target returned something other than what this run wrote there.
//!
//! Before a read the job writes a *poison* magic into each block header of the buffer, so data
//! that never arrived is told apart from stale data of an earlier I/O.

/// Magic of a stamped block ("KPRF").
pub const MAGIC: u32 = 0x4b50_5246;
/// Magic put in read buffers before the read ("KPOI").
pub const POISON: u32 = 0x4b50_4f49;
/// Header bytes at the start of each block.
pub const HEADER_LEN: usize = 32;
/// Smallest block size verify supports (the header must fit).
pub const MIN_BLOCK: usize = HEADER_LEN;

/// What is wrong with a block this run wrote.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Corruption {
    /// Not a stamped block (nor all zeroes).
    BadMagic(u32),
    /// The block carries another LBA (misdirected write or read).
    WrongLba(u64),
    /// The block was stamped by another run (the id it carries): this run's write to it was
    /// lost, or the read returned old data.
    OtherRun(u64),
    /// The header claims another block size.
    WrongBlockSize(u32),
    /// Contents changed after stamping.
    BadCrc {
        /// CRC stored in the header.
        stored: u32,
        /// CRC of the block as read.
        computed: u32,
    },
    /// The read completed successfully but left the poisoned buffer untouched.
    NotTransferred,
    /// Reads back as zeroes (never written), though this run wrote it (a lost write).
    Zeroed,
}

impl std::fmt::Display for Corruption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Corruption::BadMagic(m) => write!(f, "bad magic {m:#010x}"),
            Corruption::WrongLba(l) => write!(f, "block carries LBA {l}"),
            Corruption::OtherRun(r) => write!(
                f,
                "holds another run's data (run id {r:#018x}), not this run's write"
            ),
            Corruption::WrongBlockSize(b) => write!(f, "header says block size {b}"),
            Corruption::BadCrc { stored, computed } => {
                write!(f, "CRC32C {computed:#010x} != stored {stored:#010x}")
            }
            Corruption::NotTransferred => f.write_str("read returned no data"),
            Corruption::Zeroed => f.write_str("reads as zeroes, but this run wrote it"),
        }
    }
}

/// A fresh random run id (never 0): `getrandom(2)`, or the clock and the process id if the
/// kernel has no entropy call. Control path (once per job).
pub fn fresh_run_id() -> u64 {
    static CALLS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut id = 0u64;
    // SAFETY: writes at most 8 bytes into `id`, which is 8 bytes long.
    let n = unsafe { libc::getrandom(std::ptr::addr_of_mut!(id).cast(), 8, libc::GRND_NONBLOCK) };
    if n != 8 {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        let calls = CALLS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let mut s = t ^ (u64::from(std::process::id()) << 32) ^ calls.rotate_left(17);
        id = super::rng::splitmix64(&mut s);
    }
    id.max(1)
}

/// Stamps and checks blocks for one job of one run (cheap to copy).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Verifier {
    run_id: u64,
    block_size: u32,
}

impl Verifier {
    /// A verifier for blocks of `block_size` bytes (≥ [`MIN_BLOCK`]) stamped with `run_id`
    /// (unique to the run: see [`fresh_run_id`]).
    pub fn new(run_id: u64, block_size: u32) -> Result<Verifier, String> {
        if (block_size as usize) < MIN_BLOCK {
            return Err(format!(
                "--verify needs blocks of at least {MIN_BLOCK} bytes, the device has {block_size}"
            ));
        }
        Ok(Verifier { run_id, block_size })
    }

    /// Block size, bytes.
    pub fn block_size(&self) -> usize {
        self.block_size as usize
    }

    /// The run id this verifier stamps and expects.
    pub fn run_id(&self) -> u64 {
        self.run_id
    }

    /// Fill `buf` (a whole number of blocks, starting at `lba`) with stamped blocks of
    /// generation `generation`.
    pub fn stamp(&self, buf: &mut [u8], lba: u64, generation: u32) {
        for (i, block) in buf.chunks_exact_mut(self.block_size()).enumerate() {
            let lba = lba + i as u64;
            let mut mix = lba.wrapping_mul(0x9E37_79B9_7F4A_7C15)
                ^ self.run_id
                ^ u64::from(generation).rotate_left(32);
            fill_pattern(&mut block[HEADER_LEN..], super::rng::splitmix64(&mut mix));
            block[0..4].copy_from_slice(&MAGIC.to_le_bytes());
            block[4..8].copy_from_slice(&0u32.to_le_bytes());
            block[8..16].copy_from_slice(&lba.to_le_bytes());
            block[16..24].copy_from_slice(&self.run_id.to_le_bytes());
            block[24..28].copy_from_slice(&generation.to_le_bytes());
            block[28..32].copy_from_slice(&self.block_size.to_le_bytes());
            let crc = block_crc(block);
            block[4..8].copy_from_slice(&crc.to_le_bytes());
        }
    }

    /// Mark every block header of `buf` as not yet read.
    pub fn poison(&self, buf: &mut [u8]) {
        for block in buf.chunks_exact_mut(self.block_size()) {
            block[0..4].copy_from_slice(&POISON.to_le_bytes());
        }
    }

    /// Check one block read from `lba`, a block whose write this run saw complete (the caller
    /// checks nothing else: see the module doc).
    pub fn check(&self, block: &[u8], lba: u64) -> Result<(), Corruption> {
        match le_u32(block, 0) {
            MAGIC => {}
            POISON => return Err(Corruption::NotTransferred),
            0 if block.iter().all(|&b| b == 0) => return Err(Corruption::Zeroed),
            m => return Err(Corruption::BadMagic(m)),
        }
        let found_lba = le_u64(block, 8);
        if found_lba != lba {
            return Err(Corruption::WrongLba(found_lba));
        }
        let run = le_u64(block, 16);
        if run != self.run_id {
            return Err(Corruption::OtherRun(run));
        }
        let bs = le_u32(block, 28);
        if bs != self.block_size {
            return Err(Corruption::WrongBlockSize(bs));
        }
        let stored = le_u32(block, 4);
        let computed = block_crc(block);
        if stored != computed {
            return Err(Corruption::BadCrc { stored, computed });
        }
        Ok(())
    }
}

fn le_u32(b: &[u8], at: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(a)
}

fn le_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(a)
}

/// CRC32C of the block with the CRC field (bytes 4..8) taken as zero.
fn block_crc(block: &[u8]) -> u32 {
    let c = crc32c::crc32c(&block[0..4]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &block[8..])
}

/// Fill `payload` with a xorshift stream from `seed` (8 bytes at a time; a short tail too).
fn fill_pattern(payload: &mut [u8], seed: u64) {
    let mut x = seed | 1;
    let mut chunks = payload.chunks_exact_mut(8);
    for c in &mut chunks {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        c.copy_from_slice(&x.to_le_bytes());
    }
    let tail = chunks.into_remainder();
    let n = tail.len();
    tail.copy_from_slice(&x.to_le_bytes()[..n]);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamped(v: &Verifier, lba: u64, blocks: usize) -> Vec<u8> {
        let mut buf = vec![0u8; v.block_size() * blocks];
        v.stamp(&mut buf, lba, 7);
        buf
    }

    #[test]
    fn stamped_blocks_check_valid_at_their_lba() {
        let v = Verifier::new(1, 512).unwrap();
        let buf = stamped(&v, 100, 8);
        for (i, b) in buf.chunks(512).enumerate() {
            assert_eq!(v.check(b, 100 + i as u64), Ok(()));
        }
        // Payload is not trivial: the two halves of a block differ, blocks differ.
        assert_ne!(buf[64..128], buf[128..192]);
        assert_ne!(buf[32..512], buf[512 + 32..1024]);
    }

    /// The required test: a deliberately corrupted block is caught, whatever byte is hit.
    #[test]
    fn corrupted_block_is_caught() {
        let v = Verifier::new(99, 4096).unwrap();
        for pos in [0usize, 5, 9, 17, 25, 31, 32, 1000, 4095] {
            let mut buf = stamped(&v, 42, 1);
            buf[pos] ^= 0x01;
            let r = v.check(&buf, 42);
            assert!(r.is_err(), "flip at byte {pos} not caught: {r:?}");
        }
        let mut buf = stamped(&v, 42, 1);
        buf[2000] ^= 0x80;
        assert!(matches!(v.check(&buf, 42), Err(Corruption::BadCrc { .. })));
    }

    #[test]
    fn misplaced_other_run_and_missing_blocks_are_reported() {
        let v = Verifier::new(5, 512).unwrap();
        let buf = stamped(&v, 10, 1);
        assert_eq!(v.check(&buf, 11), Err(Corruption::WrongLba(10)));
        // Another run's block — even one stamped at the same LBA and generation, as a run with
        // the same seed would — is never this run's.
        let other = Verifier::new(6, 512).unwrap();
        assert_eq!(other.check(&buf, 10), Err(Corruption::OtherRun(5)));
        let mut poisoned = buf.clone();
        v.poison(&mut poisoned);
        assert_eq!(v.check(&poisoned, 10), Err(Corruption::NotTransferred));
        assert_eq!(v.check(&[0u8; 512], 3), Err(Corruption::Zeroed));
        let mut junk = vec![0u8; 512];
        junk[0] = 0xAB;
        assert_eq!(v.check(&junk, 3), Err(Corruption::BadMagic(0xAB)));
        // Zero magic with something else non-zero is not "zeroes".
        let mut half = vec![0u8; 512];
        half[300] = 1;
        assert_eq!(v.check(&half, 3), Err(Corruption::BadMagic(0)));
    }

    #[test]
    fn run_ids_are_fresh() {
        let a = fresh_run_id();
        let b = fresh_run_id();
        assert_ne!(a, 0);
        assert_ne!(a, b, "two runs never share an id");
    }

    #[test]
    fn small_blocks_are_refused() {
        assert!(Verifier::new(1, 16).is_err());
        assert!(Verifier::new(1, 32).is_ok());
    }
}
