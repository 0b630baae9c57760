//! The RAID superblock (control path): its on-disk encoding, its validation, and the pure
//! decision of how to assemble an array from the superblocks found on its members.
//!
//! Every member holds a [`SUPERBLOCK_SIZE`]-byte superblock at byte 0; the array's data on the
//! member starts at `data_offset_blocks`. The layout, the generation rules and the write-hole
//! behaviour are documented in `raid/SUPERBLOCK.md`. Decoding never panics: bad bytes give a
//! [`SuperblockError`] that says what is wrong, and [`SuperblockError::NotRaid`] (no magic) lets
//! the examiner stay quiet on ordinary bdevs.

use crate::level::RaidLevel;
use keel_bdev::Uuid;
use thiserror::Error;

/// Bytes of the superblock at the start of every member.
pub const SUPERBLOCK_SIZE: usize = 4096;
/// The magic at byte 0: "KEELRAID".
pub const MAGIC: [u8; 8] = *b"KEELRAID";
/// The superblock version this code writes and reads.
pub const VERSION: u32 = 1;
/// Most members (slots) an array may have.
pub const MAX_SLOTS: usize = 32;
/// Longest array name in bytes (the name field is 64 bytes, NUL-padded, at least one NUL).
pub const MAX_NAME_LEN: usize = 63;
/// Largest block size a member may have (the bdev registry's limit).
pub const MAX_BLOCK_SIZE: u32 = 1 << 20;
/// Bytes reserved at the start of every member for the superblock and future metadata.
pub const DEFAULT_DATA_OFFSET_BYTES: u64 = 1 << 20;

// Byte offsets of the fields (see SUPERBLOCK.md).
const OFF_MAGIC: usize = 0;
const OFF_VERSION: usize = 8;
const OFF_CRC: usize = 12;
const OFF_ARRAY_UUID: usize = 16;
const OFF_NAME: usize = 32;
const NAME_FIELD: usize = 64;
const OFF_LEVEL: usize = 96;
const OFF_FLAGS: usize = 97;
const OFF_STRIP: usize = 100;
const OFF_BLOCK_SIZE: usize = 104;
const OFF_THIS_SLOT: usize = 108;
const OFF_DATA_OFFSET: usize = 112;
const OFF_DATA_SIZE: usize = 120;
const OFF_GENERATION: usize = 128;
const OFF_SLOT_COUNT: usize = 136;
const HEADER_END: usize = 140;
const OFF_SLOTS: usize = 256;
const SLOT_SIZE: usize = 32;
const SLOTS_END: usize = OFF_SLOTS + MAX_SLOTS * SLOT_SIZE;
// Within a slot entry.
const SLOT_UUID: usize = 0;
const SLOT_STATE: usize = 16;
const SLOT_RESERVED: std::ops::Range<usize> = 17..24;
const SLOT_PROGRESS: usize = 24;

/// Flag bit: the array was shut down cleanly (no write could be in flight).
const FLAG_CLEAN: u8 = 1;

const STATE_ACTIVE: u8 = 0;
const STATE_FAILED: u8 = 1;
const STATE_MISSING: u8 = 2;
const STATE_REBUILDING: u8 = 3;

/// Blocks reserved at the start of each member by default: 1 MiB worth (at least one block, and
/// always enough to hold the superblock).
pub fn default_data_offset_blocks(block_size: u32) -> u64 {
    let bs = u64::from(block_size.max(1));
    DEFAULT_DATA_OFFSET_BYTES
        .div_ceil(bs)
        .max((SUPERBLOCK_SIZE as u64).div_ceil(bs))
}

/// The state of one member slot, as the array last recorded it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SlotState {
    /// In the array and up to date.
    Active,
    /// Failed: no longer written; its data is not trusted.
    Failed,
    /// No member in this slot (removed, or never found).
    Missing,
    /// Being rebuilt: blocks below `rebuilt_blocks` (per member) are up to date.
    Rebuilding {
        /// Blocks of the member's data area rebuilt so far, from its start.
        rebuilt_blocks: u64,
    },
}

/// One member slot of the array.
#[derive(Debug, Clone, PartialEq)]
pub struct MemberSlot {
    /// The member's identity, chosen when it joins the array (nil only for a slot that never had
    /// a member, which must then be `Failed` or `Missing`).
    pub member_uuid: Uuid,
    /// What the array last recorded about the member.
    pub state: SlotState,
}

/// A decoded superblock: the array's identity, geometry and membership as one member saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct RaidSuperblock {
    /// Format version ([`VERSION`]).
    pub version: u32,
    /// The array's identity, shared by all its members.
    pub array_uuid: Uuid,
    /// The array bdev's name (1 to [`MAX_NAME_LEN`] bytes of UTF-8, no NUL).
    pub name: String,
    /// RAID level.
    pub level: RaidLevel,
    /// Strip size in blocks: a non-zero power of two for striped levels; 0 or a power of two
    /// (ignored) for raid1.
    pub strip_size_blocks: u32,
    /// Block size of every member (a power of two, at most [`MAX_BLOCK_SIZE`]).
    pub block_size: u32,
    /// First block of the array's data on each member (data never overlaps the superblock).
    pub data_offset_blocks: u64,
    /// Blocks of array data on each member, from `data_offset_blocks`.
    pub data_size_blocks: u64,
    /// Bumped on every change of membership or slot state (not of `clean` or rebuild progress);
    /// the newest generation wins at assembly.
    pub generation: u64,
    /// The slot of the member this superblock is stored on.
    pub this_slot: u32,
    /// Every member slot, in order (1 to [`MAX_SLOTS`], at least the level's minimum).
    pub slots: Vec<MemberSlot>,
    /// `false` while writes may be in flight: a superblock found with `clean == false` means the
    /// array stopped without a clean shutdown and parity/mirrors must be resynced (write hole).
    pub clean: bool,
}

/// Why a superblock was refused.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum SuperblockError {
    /// No superblock here (no magic): an ordinary bdev, not a RAID member.
    #[error("no RAID superblock (magic not found)")]
    NotRaid,
    /// Fewer bytes than a superblock.
    #[error("superblock truncated: {len} bytes, need {SUPERBLOCK_SIZE}")]
    Truncated {
        /// Bytes given.
        len: usize,
    },
    /// A version this code does not read.
    #[error("unsupported superblock version {version} (this build reads version {VERSION})")]
    UnsupportedVersion {
        /// The version found.
        version: u32,
    },
    /// The stored checksum does not match the block's contents.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    ChecksumMismatch {
        /// The CRC32C stored in the block.
        stored: u32,
        /// The CRC32C of the block as read.
        computed: u32,
    },
    /// An unknown level code.
    #[error("unknown RAID level code {code}")]
    UnknownLevel {
        /// The code found.
        code: u8,
    },
    /// Flag bits this version does not define.
    #[error("unknown flag bits {flags:#04x}")]
    UnknownFlags {
        /// The flags byte.
        flags: u8,
    },
    /// The array name is empty, too long, not UTF-8, contains NUL or is badly padded.
    #[error("bad array name: {0}")]
    BadName(&'static str),
    /// Block size not a power of two or too large.
    #[error("bad block size {block_size}: must be a power of two no larger than {MAX_BLOCK_SIZE}")]
    BadBlockSize {
        /// The block size found.
        block_size: u32,
    },
    /// Strip size not valid for the level.
    #[error(
        "bad strip size {strip_size_blocks} blocks for {level}: must be a non-zero power of two"
    )]
    BadStripSize {
        /// The level.
        level: RaidLevel,
        /// The strip size found.
        strip_size_blocks: u32,
    },
    /// Slot count out of range.
    #[error("bad slot count {count} for {level}: must be {min} to {MAX_SLOTS}")]
    BadSlotCount {
        /// The level.
        level: RaidLevel,
        /// The count found.
        count: usize,
        /// The level's minimum.
        min: usize,
    },
    /// `this_slot` is not one of the slots.
    #[error("this_slot {this_slot} out of range: the array has {slots} slots")]
    BadThisSlot {
        /// The slot found.
        this_slot: u32,
        /// The number of slots.
        slots: usize,
    },
    /// Data offset or size impossible (overlap with the superblock, zero size, overflow).
    #[error("bad data area: {0}")]
    BadDataArea(&'static str),
    /// An unknown slot state code.
    #[error("slot {slot}: unknown state code {code}")]
    UnknownSlotState {
        /// The slot.
        slot: usize,
        /// The code found.
        code: u8,
    },
    /// A slot's content is inconsistent.
    #[error("slot {slot}: {reason}")]
    BadSlot {
        /// The slot.
        slot: usize,
        /// What is wrong.
        reason: &'static str,
    },
    /// Two slots name the same member.
    #[error("slots {first} and {second} both hold member {uuid}")]
    DuplicateMember {
        /// The first slot.
        first: usize,
        /// The second slot.
        second: usize,
        /// The member UUID.
        uuid: Uuid,
    },
    /// A byte that must be zero is not (written by a newer or broken writer).
    #[error("reserved byte at offset {offset:#x} is {value:#04x}, expected 0")]
    NonZeroReserved {
        /// Byte offset in the superblock.
        offset: usize,
        /// The byte found.
        value: u8,
    },
}

impl RaidSuperblock {
    /// Check every rule [`RaidSuperblock::decode`] enforces on the fields (not the encoding).
    /// Write paths call this before persisting a superblock.
    pub fn validate(&self) -> Result<(), SuperblockError> {
        if self.version != VERSION {
            return Err(SuperblockError::UnsupportedVersion {
                version: self.version,
            });
        }
        validate_name(&self.name)?;
        if !self.block_size.is_power_of_two() || self.block_size > MAX_BLOCK_SIZE {
            return Err(SuperblockError::BadBlockSize {
                block_size: self.block_size,
            });
        }
        let strip = self.strip_size_blocks;
        let strip_ok = if self.level.uses_strips() {
            strip.is_power_of_two()
        } else {
            strip == 0 || strip.is_power_of_two()
        };
        if !strip_ok {
            return Err(SuperblockError::BadStripSize {
                level: self.level,
                strip_size_blocks: strip,
            });
        }
        let min = self.level.min_members();
        if self.slots.len() < min || self.slots.len() > MAX_SLOTS {
            return Err(SuperblockError::BadSlotCount {
                level: self.level,
                count: self.slots.len(),
                min,
            });
        }
        if self.this_slot as usize >= self.slots.len() {
            return Err(SuperblockError::BadThisSlot {
                this_slot: self.this_slot,
                slots: self.slots.len(),
            });
        }
        self.validate_data_area()?;
        self.validate_slots()
    }

    fn validate_data_area(&self) -> Result<(), SuperblockError> {
        let bs = u64::from(self.block_size);
        let offset_bytes = self
            .data_offset_blocks
            .checked_mul(bs)
            .ok_or(SuperblockError::BadDataArea("data offset overflows"))?;
        if offset_bytes < SUPERBLOCK_SIZE as u64 {
            return Err(SuperblockError::BadDataArea(
                "data offset overlaps the superblock",
            ));
        }
        if self.data_size_blocks == 0 {
            return Err(SuperblockError::BadDataArea("data size is zero"));
        }
        self.data_offset_blocks
            .checked_add(self.data_size_blocks)
            .and_then(|end| end.checked_mul(bs))
            .ok_or(SuperblockError::BadDataArea("data end overflows"))?;
        Ok(())
    }

    fn validate_slots(&self) -> Result<(), SuperblockError> {
        for (i, s) in self.slots.iter().enumerate() {
            let nil = s.member_uuid == Uuid::default();
            match s.state {
                SlotState::Active | SlotState::Rebuilding { .. } if nil => {
                    return Err(SuperblockError::BadSlot {
                        slot: i,
                        reason: "an active or rebuilding slot has a nil member UUID",
                    })
                }
                SlotState::Rebuilding { rebuilt_blocks }
                    if rebuilt_blocks > self.data_size_blocks =>
                {
                    return Err(SuperblockError::BadSlot {
                        slot: i,
                        reason: "rebuild progress beyond the data size",
                    })
                }
                _ => {}
            }
            if i == self.this_slot as usize && nil {
                return Err(SuperblockError::BadSlot {
                    slot: i,
                    reason: "the member holding this superblock has a nil UUID",
                });
            }
            if !nil {
                if let Some(j) = self.slots[..i]
                    .iter()
                    .position(|o| o.member_uuid == s.member_uuid)
                {
                    return Err(SuperblockError::DuplicateMember {
                        first: j,
                        second: i,
                        uuid: s.member_uuid,
                    });
                }
            }
        }
        Ok(())
    }

    /// The UUID of the member this superblock is stored on.
    ///
    /// # Panics
    /// If `this_slot` is out of range (never for a decoded or validated superblock).
    pub fn this_member(&self) -> Uuid {
        self.slots[self.this_slot as usize].member_uuid
    }

    /// Encode into exactly [`SUPERBLOCK_SIZE`] bytes, little-endian, checksum included (layout
    /// in SUPERBLOCK.md). Never panics: a superblock that fails [`RaidSuperblock::validate`]
    /// encodes to bytes that [`RaidSuperblock::decode`] refuses (a name over 63 bytes fills the
    /// whole name field with no NUL; more than 32 slots store their true count and only the
    /// first 32 entries).
    pub fn encode(&self) -> Vec<u8> {
        let mut b = vec![0u8; SUPERBLOCK_SIZE];
        b[OFF_MAGIC..OFF_MAGIC + 8].copy_from_slice(&MAGIC);
        put_u32(&mut b, OFF_VERSION, self.version);
        b[OFF_ARRAY_UUID..OFF_ARRAY_UUID + 16].copy_from_slice(&self.array_uuid.0);
        let name = self.name.as_bytes();
        let n = name.len().min(NAME_FIELD);
        b[OFF_NAME..OFF_NAME + n].copy_from_slice(&name[..n]);
        b[OFF_LEVEL] = self.level.code();
        b[OFF_FLAGS] = if self.clean { FLAG_CLEAN } else { 0 };
        put_u32(&mut b, OFF_STRIP, self.strip_size_blocks);
        put_u32(&mut b, OFF_BLOCK_SIZE, self.block_size);
        put_u32(&mut b, OFF_THIS_SLOT, self.this_slot);
        put_u64(&mut b, OFF_DATA_OFFSET, self.data_offset_blocks);
        put_u64(&mut b, OFF_DATA_SIZE, self.data_size_blocks);
        put_u64(&mut b, OFF_GENERATION, self.generation);
        let count = u32::try_from(self.slots.len()).unwrap_or(u32::MAX);
        put_u32(&mut b, OFF_SLOT_COUNT, count);
        for (i, s) in self.slots.iter().take(MAX_SLOTS).enumerate() {
            let at = OFF_SLOTS + i * SLOT_SIZE;
            b[at + SLOT_UUID..at + SLOT_UUID + 16].copy_from_slice(&s.member_uuid.0);
            let (code, progress) = match s.state {
                SlotState::Active => (STATE_ACTIVE, 0),
                SlotState::Failed => (STATE_FAILED, 0),
                SlotState::Missing => (STATE_MISSING, 0),
                SlotState::Rebuilding { rebuilt_blocks } => (STATE_REBUILDING, rebuilt_blocks),
            };
            b[at + SLOT_STATE] = code;
            put_u64(&mut b, at + SLOT_PROGRESS, progress);
        }
        store_checksum(&mut b);
        b
    }

    /// Decode and validate a superblock from the first [`SUPERBLOCK_SIZE`] bytes of `buf`
    /// (later bytes are ignored, so a caller may pass a whole block of a larger size).
    /// Checks, in order: length, magic ([`SuperblockError::NotRaid`]), version, checksum, then
    /// every field and that all reserved bytes are zero.
    pub fn decode(buf: &[u8]) -> Result<RaidSuperblock, SuperblockError> {
        if buf.len() >= MAGIC.len() && buf[..MAGIC.len()] != MAGIC {
            return Err(SuperblockError::NotRaid);
        }
        let b: &[u8; SUPERBLOCK_SIZE] = buf
            .get(..SUPERBLOCK_SIZE)
            .and_then(|s| s.try_into().ok())
            .ok_or(SuperblockError::Truncated { len: buf.len() })?;
        let version = get_u32(b, OFF_VERSION);
        if version != VERSION {
            return Err(SuperblockError::UnsupportedVersion { version });
        }
        let stored = get_u32(b, OFF_CRC);
        let computed = checksum(b);
        if stored != computed {
            return Err(SuperblockError::ChecksumMismatch { stored, computed });
        }
        let level = RaidLevel::from_code(b[OFF_LEVEL])
            .ok_or(SuperblockError::UnknownLevel { code: b[OFF_LEVEL] })?;
        let flags = b[OFF_FLAGS];
        if flags & !FLAG_CLEAN != 0 {
            return Err(SuperblockError::UnknownFlags { flags });
        }
        let name = decode_name(&b[OFF_NAME..OFF_NAME + NAME_FIELD])?;
        let count = get_u32(b, OFF_SLOT_COUNT) as usize;
        if count > MAX_SLOTS {
            return Err(SuperblockError::BadSlotCount {
                level,
                count,
                min: level.min_members(),
            });
        }
        check_zero(b, OFF_FLAGS + 1..OFF_STRIP)?;
        check_zero(b, HEADER_END..OFF_SLOTS)?;
        let mut slots = Vec::with_capacity(count);
        for i in 0..count {
            let at = OFF_SLOTS + i * SLOT_SIZE;
            check_zero(b, at + SLOT_RESERVED.start..at + SLOT_RESERVED.end)?;
            let progress = get_u64(b, at + SLOT_PROGRESS);
            let code = b[at + SLOT_STATE];
            let state = match code {
                STATE_ACTIVE => SlotState::Active,
                STATE_FAILED => SlotState::Failed,
                STATE_MISSING => SlotState::Missing,
                STATE_REBUILDING => SlotState::Rebuilding {
                    rebuilt_blocks: progress,
                },
                _ => return Err(SuperblockError::UnknownSlotState { slot: i, code }),
            };
            if code != STATE_REBUILDING && progress != 0 {
                return Err(SuperblockError::BadSlot {
                    slot: i,
                    reason: "rebuild progress set on a slot that is not rebuilding",
                });
            }
            let mut uuid = [0u8; 16];
            uuid.copy_from_slice(&b[at + SLOT_UUID..at + SLOT_UUID + 16]);
            slots.push(MemberSlot {
                member_uuid: Uuid(uuid),
                state,
            });
        }
        check_zero(b, OFF_SLOTS + count * SLOT_SIZE..SUPERBLOCK_SIZE)?;
        let mut array_uuid = [0u8; 16];
        array_uuid.copy_from_slice(&b[OFF_ARRAY_UUID..OFF_ARRAY_UUID + 16]);
        let sb = RaidSuperblock {
            version,
            array_uuid: Uuid(array_uuid),
            name,
            level,
            strip_size_blocks: get_u32(b, OFF_STRIP),
            block_size: get_u32(b, OFF_BLOCK_SIZE),
            data_offset_blocks: get_u64(b, OFF_DATA_OFFSET),
            data_size_blocks: get_u64(b, OFF_DATA_SIZE),
            generation: get_u64(b, OFF_GENERATION),
            this_slot: get_u32(b, OFF_THIS_SLOT),
            slots,
            clean: flags & FLAG_CLEAN != 0,
        };
        sb.validate()?;
        Ok(sb)
    }

    /// Whether two superblocks describe the same array state: everything equal except what each
    /// member records for itself (`this_slot`) and what is updated without a generation bump
    /// (`clean` and rebuild progress).
    fn same_state(&self, other: &RaidSuperblock) -> bool {
        let strip = |sb: &RaidSuperblock| -> Vec<(Uuid, u8)> {
            sb.slots
                .iter()
                .map(|s| (s.member_uuid, state_code(s.state)))
                .collect()
        };
        self.version == other.version
            && self.array_uuid == other.array_uuid
            && self.name == other.name
            && self.generation == other.generation
            && self.same_geometry(other)
            && strip(self) == strip(other)
    }

    /// Whether two superblocks agree on what never changes in an array's life.
    fn same_geometry(&self, other: &RaidSuperblock) -> bool {
        self.level == other.level
            && self.strip_size_blocks == other.strip_size_blocks
            && self.block_size == other.block_size
            && self.data_offset_blocks == other.data_offset_blocks
            && self.data_size_blocks == other.data_size_blocks
            && self.slots.len() == other.slots.len()
    }
}

/// [`RaidSuperblock::decode`] as a free function.
pub fn decode(buf: &[u8]) -> Result<RaidSuperblock, SuperblockError> {
    RaidSuperblock::decode(buf)
}

fn state_code(s: SlotState) -> u8 {
    match s {
        SlotState::Active => STATE_ACTIVE,
        SlotState::Failed => STATE_FAILED,
        SlotState::Missing => STATE_MISSING,
        SlotState::Rebuilding { .. } => STATE_REBUILDING,
    }
}

fn validate_name(name: &str) -> Result<(), SuperblockError> {
    if name.is_empty() {
        return Err(SuperblockError::BadName("empty"));
    }
    if name.len() > MAX_NAME_LEN {
        return Err(SuperblockError::BadName("longer than 63 bytes"));
    }
    if name.contains('\0') {
        return Err(SuperblockError::BadName("contains NUL"));
    }
    Ok(())
}

fn decode_name(field: &[u8]) -> Result<String, SuperblockError> {
    let len = field
        .iter()
        .position(|&c| c == 0)
        .ok_or(SuperblockError::BadName("not NUL-terminated"))?;
    if field[len..].iter().any(|&c| c != 0) {
        return Err(SuperblockError::BadName("bytes after the terminating NUL"));
    }
    let name = std::str::from_utf8(&field[..len])
        .map_err(|_| SuperblockError::BadName("not UTF-8"))?
        .to_owned();
    validate_name(&name)?;
    Ok(name)
}

fn check_zero(b: &[u8], range: std::ops::Range<usize>) -> Result<(), SuperblockError> {
    let start = range.start;
    match b[range].iter().position(|&c| c != 0) {
        Some(i) => Err(SuperblockError::NonZeroReserved {
            offset: start + i,
            value: b[start + i],
        }),
        None => Ok(()),
    }
}

/// The CRC32C of a superblock block with its checksum field taken as zero.
fn checksum(b: &[u8; SUPERBLOCK_SIZE]) -> u32 {
    let c = crc32c::crc32c(&b[..OFF_CRC]);
    let c = crc32c::crc32c_append(c, &[0u8; 4]);
    crc32c::crc32c_append(c, &b[OFF_CRC + 4..])
}

/// Recompute and store the checksum of an encoded superblock in `block` (its first
/// [`SUPERBLOCK_SIZE`] bytes; shorter blocks are left alone). For tools and the fuzz target,
/// which edit encoded superblocks and want the edit, not the checksum, to be judged.
pub fn store_checksum(block: &mut [u8]) {
    if let Some(b) = block
        .get_mut(..SUPERBLOCK_SIZE)
        .and_then(|s| <&mut [u8; SUPERBLOCK_SIZE]>::try_from(s).ok())
    {
        let c = checksum(b);
        put_u32(b, OFF_CRC, c);
    }
}

fn put_u32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put_u64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn get_u32(b: &[u8; SUPERBLOCK_SIZE], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn get_u64(b: &[u8; SUPERBLOCK_SIZE], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

const _: () = assert!(SLOTS_END <= SUPERBLOCK_SIZE && HEADER_END <= OFF_SLOTS);

/// What assembly decided for one slot of the newest superblock.
#[derive(Debug, Clone, PartialEq)]
pub enum SlotPlan {
    /// A member with the newest generation in an `Active` slot: trusted.
    Current {
        /// The member's bdev.
        bdev: String,
    },
    /// A member with the newest generation in a `Rebuilding` slot: trusted below
    /// `rebuilt_blocks` (the least progress any newest superblock records); the rebuild resumes
    /// there.
    Rebuilding {
        /// The member's bdev.
        bdev: String,
        /// Blocks already rebuilt.
        rebuilt_blocks: u64,
    },
    /// A member whose superblock is older than the newest, in a slot that still expects it
    /// (`Active` or `Rebuilding`): not trusted; it must be rebuilt from block 0.
    Stale {
        /// The member's bdev.
        bdev: String,
        /// The generation of its superblock.
        generation: u64,
    },
    /// No usable member: none found (yet), or the slot is marked `Failed`/`Missing`.
    Absent {
        /// The slot's state in the newest superblock (`Active`/`Rebuilding`: its member may
        /// still appear; `Failed`/`Missing`: it will not be used even if it does).
        marked: SlotState,
    },
}

/// Why a member found on a bdev is not used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IgnoreReason {
    /// The newest superblock marks its slot `Failed` or `Missing`.
    MarkedOut,
    /// Its member UUID is no longer in the slot it claims (the slot was given to a new member).
    Replaced,
}

/// A bdev that carries a superblock of this array but is not used.
#[derive(Debug, Clone, PartialEq)]
pub struct IgnoredMember {
    /// The bdev.
    pub bdev: String,
    /// The slot its superblock claims.
    pub slot: u32,
    /// Why it is not used.
    pub reason: IgnoreReason,
}

/// Whether the array can start.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Readiness {
    /// Every slot has a current member: start, fully redundant.
    Optimal,
    /// Enough current members for the level: start now, degraded (rebuild what is stale,
    /// rebuilding or absent once a member is there). If `waiting_for` is not empty the caller
    /// may first wait a while for those members.
    Degraded,
    /// Too few current members for the level: do not start. Wait if `waiting_for` is not empty;
    /// otherwise the array cannot start without operator action.
    Insufficient,
}

/// The assembly decision for one array, from the superblocks found on its members.
#[derive(Debug, Clone, PartialEq)]
pub struct AssemblyPlan {
    /// The newest superblock (the highest generation), to run the array with: `clean` is true
    /// only if every newest-generation superblock found says clean (a crash while the flags
    /// were being updated counts as unclean), and each `Rebuilding` slot holds the least
    /// progress any of them records. `this_slot` is that of one of those members and means
    /// nothing here; writers set it per member.
    pub superblock: RaidSuperblock,
    /// One entry per slot of `superblock.slots`, in slot order.
    pub slots: Vec<SlotPlan>,
    /// Whether the array can start.
    pub readiness: Readiness,
    /// Slots whose member is expected (`Active`/`Rebuilding`) but was not found: it may still
    /// appear.
    pub waiting_for: Vec<u32>,
    /// Bdevs with a superblock of this array that are not used, and why.
    pub ignored: Vec<IgnoredMember>,
}

impl AssemblyPlan {
    /// Whether the array needs a parity/mirror resync before parity or mirror copies are trusted
    /// (the newest superblock is not clean: writes may have been in flight at a crash).
    pub fn needs_resync(&self) -> bool {
        !self.superblock.clean
    }
}

/// Why a set of superblocks cannot be assembled.
#[derive(Debug, Clone, PartialEq, Error)]
pub enum AssemblyError {
    /// Nothing to assemble.
    #[error("no superblocks given")]
    NoMembers,
    /// A superblock breaks the format's rules.
    #[error("bdev {bdev}: invalid superblock: {error}")]
    Invalid {
        /// The bdev.
        bdev: String,
        /// What is wrong.
        error: SuperblockError,
    },
    /// Superblocks of different arrays were grouped together.
    #[error("bdev {bdev} belongs to array {found}, not {expected}")]
    MixedArrays {
        /// The bdev.
        bdev: String,
        /// The array of the first superblock.
        expected: Uuid,
        /// The array of this bdev's superblock.
        found: Uuid,
    },
    /// Geometry differs between members (it never changes in an array's life).
    #[error("bdevs {a} and {b} disagree on the array geometry (level, strip size, block size, data area or slot count)")]
    GeometryMismatch {
        /// One bdev.
        a: String,
        /// The other.
        b: String,
    },
    /// Same generation, different array state: a writer bug or a forged copy.
    #[error("bdevs {a} and {b} have generation {generation} but different superblock contents")]
    Conflict {
        /// One bdev.
        a: String,
        /// The other.
        b: String,
        /// The shared generation.
        generation: u64,
    },
    /// Two bdevs carry the same member: a copied disk or one disk seen twice.
    #[error("bdevs {a} and {b} both carry member {member} (slot {slot}): a copied disk or a disk seen twice")]
    DuplicateMember {
        /// One bdev.
        a: String,
        /// The other.
        b: String,
        /// The member UUID.
        member: Uuid,
        /// The slot the first claims.
        slot: u32,
    },
}

/// Decide how to assemble one array from the superblocks found on its members (bdev name,
/// decoded superblock), all of one `array_uuid` (the caller groups them).
///
/// The newest generation wins. For each of its slots: a member with that generation is current
/// (or rebuilding, as the slot says); a member with an older superblock is stale and must be
/// rebuilt; slots marked `Failed`/`Missing` use no member. See [`AssemblyPlan`] and
/// SUPERBLOCK.md for the rules and [`AssemblyError`] for what is refused.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one assembly rule per block
pub fn plan_assembly(found: &[(String, RaidSuperblock)]) -> Result<AssemblyPlan, AssemblyError> {
    let (first_bdev, first) = found.first().ok_or(AssemblyError::NoMembers)?;
    for (bdev, sb) in found {
        sb.validate().map_err(|error| AssemblyError::Invalid {
            bdev: bdev.clone(),
            error,
        })?;
        if sb.array_uuid != first.array_uuid {
            return Err(AssemblyError::MixedArrays {
                bdev: bdev.clone(),
                expected: first.array_uuid,
                found: sb.array_uuid,
            });
        }
        if !sb.same_geometry(first) {
            return Err(AssemblyError::GeometryMismatch {
                a: first_bdev.clone(),
                b: bdev.clone(),
            });
        }
    }
    for (i, (a, sa)) in found.iter().enumerate() {
        for (b, sb) in &found[..i] {
            if sa.this_member() == sb.this_member() {
                return Err(AssemblyError::DuplicateMember {
                    a: b.clone(),
                    b: a.clone(),
                    member: sa.this_member(),
                    slot: sb.this_slot,
                });
            }
            if sa.generation == sb.generation && !sa.same_state(sb) {
                return Err(AssemblyError::Conflict {
                    a: b.clone(),
                    b: a.clone(),
                    generation: sa.generation,
                });
            }
        }
    }
    let newest_gen = found.iter().map(|(_, sb)| sb.generation).max().unwrap_or(0);
    let newest: Vec<&RaidSuperblock> = found
        .iter()
        .map(|(_, sb)| sb)
        .filter(|sb| sb.generation == newest_gen)
        .collect();
    let mut superblock = newest[0].clone();
    superblock.clean = newest.iter().all(|sb| sb.clean);
    for (k, slot) in superblock.slots.iter_mut().enumerate() {
        if let SlotState::Rebuilding { rebuilt_blocks } = &mut slot.state {
            for sb in &newest {
                if let SlotState::Rebuilding { rebuilt_blocks: r } = sb.slots[k].state {
                    *rebuilt_blocks = (*rebuilt_blocks).min(r);
                }
            }
        }
    }

    let mut slots: Vec<SlotPlan> = superblock
        .slots
        .iter()
        .map(|s| SlotPlan::Absent { marked: s.state })
        .collect();
    let mut ignored = Vec::new();
    for (bdev, sb) in found {
        let k = sb.this_slot as usize;
        let expected = &superblock.slots[k];
        if expected.member_uuid != sb.this_member() {
            ignored.push(IgnoredMember {
                bdev: bdev.clone(),
                slot: sb.this_slot,
                reason: IgnoreReason::Replaced,
            });
            continue;
        }
        slots[k] = match expected.state {
            SlotState::Failed | SlotState::Missing => {
                ignored.push(IgnoredMember {
                    bdev: bdev.clone(),
                    slot: sb.this_slot,
                    reason: IgnoreReason::MarkedOut,
                });
                continue;
            }
            _ if sb.generation < newest_gen => SlotPlan::Stale {
                bdev: bdev.clone(),
                generation: sb.generation,
            },
            SlotState::Active => SlotPlan::Current { bdev: bdev.clone() },
            SlotState::Rebuilding { rebuilt_blocks } => SlotPlan::Rebuilding {
                bdev: bdev.clone(),
                rebuilt_blocks,
            },
        };
    }

    let n = slots.len();
    let current = slots
        .iter()
        .filter(|p| matches!(p, SlotPlan::Current { .. }))
        .count();
    let readiness = if current == n {
        Readiness::Optimal
    } else if n - current <= superblock.level.redundancy(n) {
        Readiness::Degraded
    } else {
        Readiness::Insufficient
    };
    let waiting_for = slots
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            matches!(
                p,
                SlotPlan::Absent {
                    marked: SlotState::Active | SlotState::Rebuilding { .. }
                }
            )
        })
        .map(|(k, _)| k as u32)
        .collect();
    Ok(AssemblyPlan {
        superblock,
        slots,
        readiness,
        waiting_for,
        ignored,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uuid(n: u8) -> Uuid {
        Uuid([n; 16])
    }

    fn sb(level: RaidLevel, members: usize) -> RaidSuperblock {
        RaidSuperblock {
            version: VERSION,
            array_uuid: uuid(0xaa),
            name: "raid-test".into(),
            level,
            strip_size_blocks: if level.uses_strips() { 128 } else { 0 },
            block_size: 512,
            data_offset_blocks: default_data_offset_blocks(512),
            data_size_blocks: 1 << 20,
            generation: 7,
            this_slot: 0,
            slots: (0..members)
                .map(|i| MemberSlot {
                    member_uuid: uuid(i as u8 + 1),
                    state: SlotState::Active,
                })
                .collect(),
            clean: true,
        }
    }

    /// An edit of encoded superblock bytes.
    type Edit = dyn FnOnce(&mut [u8]);

    /// Encode `s`, apply `edit` to the bytes, fix the checksum, decode.
    fn mutate(
        s: &RaidSuperblock,
        edit: impl FnOnce(&mut [u8]),
    ) -> Result<RaidSuperblock, SuperblockError> {
        let mut b = s.encode();
        edit(&mut b);
        store_checksum(&mut b);
        RaidSuperblock::decode(&b)
    }

    #[test]
    fn default_data_offset_is_one_mib() {
        assert_eq!(default_data_offset_blocks(512), 2048);
        assert_eq!(default_data_offset_blocks(4096), 256);
        assert_eq!(default_data_offset_blocks(1 << 20), 1);
        assert_eq!(default_data_offset_blocks(0), 1 << 20);
    }

    #[test]
    fn every_level_and_slot_state_round_trips() {
        for level in RaidLevel::ALL {
            let mut s = sb(level, 4);
            s.this_slot = 2;
            s.clean = false;
            s.generation = u64::MAX;
            s.slots[1].state = SlotState::Failed;
            s.slots[3].state = SlotState::Missing;
            s.slots[3].member_uuid = Uuid::default();
            s.slots[0].state = SlotState::Rebuilding {
                rebuilt_blocks: 4242,
            };
            let b = s.encode();
            assert_eq!(b.len(), SUPERBLOCK_SIZE);
            assert_eq!(&b[..8], b"KEELRAID");
            assert_eq!(RaidSuperblock::decode(&b), Ok(s.clone()), "{level}");
            // Bytes past the superblock are ignored.
            let mut longer = b.clone();
            longer.extend_from_slice(&[0xff; 512]);
            assert_eq!(decode(&longer), Ok(s));
        }
        let mut max = sb(RaidLevel::Raid5, MAX_SLOTS);
        max.name = "n".repeat(MAX_NAME_LEN);
        max.this_slot = MAX_SLOTS as u32 - 1;
        assert_eq!(RaidSuperblock::decode(&max.encode()), Ok(max));
    }

    #[test]
    fn layout_is_little_endian_at_documented_offsets() {
        let s = sb(RaidLevel::Raid5, 3);
        let b = s.encode();
        assert_eq!(b[OFF_VERSION..OFF_VERSION + 4], 1u32.to_le_bytes());
        assert_eq!(b[96], 5);
        assert_eq!(b[97], 1);
        assert_eq!(b[100..104], 128u32.to_le_bytes());
        assert_eq!(b[104..108], 512u32.to_le_bytes());
        assert_eq!(b[128..136], 7u64.to_le_bytes());
        assert_eq!(b[136..140], 3u32.to_le_bytes());
        assert_eq!(b[256..272], [1u8; 16]);
        assert_eq!(b[288..304], [2u8; 16]);
        let stored = u32::from_le_bytes(b[12..16].try_into().unwrap());
        let mut zeroed = b.clone();
        zeroed[12..16].fill(0);
        assert_eq!(stored, crc32c::crc32c(&zeroed));
    }

    #[test]
    fn no_magic_is_not_raid_and_short_buffers_are_truncated() {
        assert_eq!(
            decode(&[0u8; SUPERBLOCK_SIZE]),
            Err(SuperblockError::NotRaid)
        );
        assert_eq!(decode(&[0xffu8; 100]), Err(SuperblockError::NotRaid));
        assert_eq!(decode(&[]), Err(SuperblockError::Truncated { len: 0 }));
        let b = sb(RaidLevel::Raid1, 2).encode();
        assert_eq!(
            decode(&b[..4095]),
            Err(SuperblockError::Truncated { len: 4095 })
        );
    }

    #[test]
    fn version_is_checked_before_the_checksum() {
        let mut b = sb(RaidLevel::Raid0, 2).encode();
        b[OFF_VERSION] = 2;
        assert_eq!(
            decode(&b),
            Err(SuperblockError::UnsupportedVersion { version: 2 })
        );
    }

    #[test]
    fn a_flipped_bit_is_a_checksum_mismatch_naming_both_values() {
        let mut b = sb(RaidLevel::Raid5, 3).encode();
        b[3000] ^= 0x10;
        let e = decode(&b).unwrap_err();
        let SuperblockError::ChecksumMismatch { stored, computed } = e else {
            panic!("{e:?}");
        };
        assert_ne!(stored, computed);
        let msg = e.to_string();
        assert!(msg.starts_with("checksum mismatch: stored 0x"), "{msg}");
        assert!(msg.contains(&format!("computed {computed:#010x}")), "{msg}");
    }

    #[test]
    #[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one refused header field per block
    fn bad_header_fields_are_refused_with_what_is_wrong() {
        let s = sb(RaidLevel::Raid5, 3);
        let cases: Vec<(Box<Edit>, SuperblockError)> = vec![
            (
                Box::new(|b| b[OFF_LEVEL] = 3),
                SuperblockError::UnknownLevel { code: 3 },
            ),
            (
                Box::new(|b| b[OFF_FLAGS] = 0x81),
                SuperblockError::UnknownFlags { flags: 0x81 },
            ),
            (
                Box::new(|b| b[98] = 1),
                SuperblockError::NonZeroReserved {
                    offset: 98,
                    value: 1,
                },
            ),
            (
                Box::new(|b| b[200] = 9),
                SuperblockError::NonZeroReserved {
                    offset: 200,
                    value: 9,
                },
            ),
            (
                Box::new(|b| b[4095] = 1),
                SuperblockError::NonZeroReserved {
                    offset: 4095,
                    value: 1,
                },
            ),
            (
                Box::new(|b| b[OFF_SLOTS + 3 * SLOT_SIZE] = 1),
                SuperblockError::NonZeroReserved {
                    offset: OFF_SLOTS + 96,
                    value: 1,
                },
            ),
            (
                Box::new(|b| b[OFF_NAME..OFF_NAME + 64].fill(b'x')),
                SuperblockError::BadName("not NUL-terminated"),
            ),
            (
                Box::new(|b| b[OFF_NAME + 62] = b'x'),
                SuperblockError::BadName("bytes after the terminating NUL"),
            ),
            (
                Box::new(|b| b[OFF_NAME] = 0xff),
                SuperblockError::BadName("not UTF-8"),
            ),
            (
                Box::new(|b| b[OFF_NAME..OFF_NAME + 64].fill(0)),
                SuperblockError::BadName("empty"),
            ),
            (
                Box::new(|b| put_u32(b, OFF_BLOCK_SIZE, 768)),
                SuperblockError::BadBlockSize { block_size: 768 },
            ),
            (
                Box::new(|b| put_u32(b, OFF_BLOCK_SIZE, 0)),
                SuperblockError::BadBlockSize { block_size: 0 },
            ),
            (
                Box::new(|b| put_u32(b, OFF_BLOCK_SIZE, 2 << 20)),
                SuperblockError::BadBlockSize {
                    block_size: 2 << 20,
                },
            ),
            (
                Box::new(|b| put_u32(b, OFF_STRIP, 0)),
                SuperblockError::BadStripSize {
                    level: RaidLevel::Raid5,
                    strip_size_blocks: 0,
                },
            ),
            (
                Box::new(|b| put_u32(b, OFF_STRIP, 96)),
                SuperblockError::BadStripSize {
                    level: RaidLevel::Raid5,
                    strip_size_blocks: 96,
                },
            ),
            (
                Box::new(|b| put_u32(b, OFF_SLOT_COUNT, 2)),
                SuperblockError::NonZeroReserved {
                    offset: OFF_SLOTS + 64,
                    value: 3,
                },
            ),
            (
                Box::new(|b| put_u32(b, OFF_SLOT_COUNT, 33)),
                SuperblockError::BadSlotCount {
                    level: RaidLevel::Raid5,
                    count: 33,
                    min: 3,
                },
            ),
            (
                Box::new(|b| put_u32(b, OFF_THIS_SLOT, 3)),
                SuperblockError::BadThisSlot {
                    this_slot: 3,
                    slots: 3,
                },
            ),
            (
                Box::new(|b| put_u64(b, OFF_DATA_OFFSET, 7)),
                SuperblockError::BadDataArea("data offset overlaps the superblock"),
            ),
            (
                Box::new(|b| put_u64(b, OFF_DATA_OFFSET, u64::MAX / 256)),
                SuperblockError::BadDataArea("data offset overflows"),
            ),
            (
                Box::new(|b| put_u64(b, OFF_DATA_SIZE, 0)),
                SuperblockError::BadDataArea("data size is zero"),
            ),
            (
                Box::new(|b| put_u64(b, OFF_DATA_SIZE, u64::MAX - 100)),
                SuperblockError::BadDataArea("data end overflows"),
            ),
        ];
        for (i, (edit, want)) in cases.into_iter().enumerate() {
            assert_eq!(mutate(&s, edit), Err(want), "case {i}");
        }
    }

    #[test]
    fn bad_slots_are_refused() {
        let s = sb(RaidLevel::Raid1, 3);
        let slot1 = OFF_SLOTS + SLOT_SIZE;
        assert_eq!(
            mutate(&s, |b| b[slot1 + SLOT_STATE] = 9),
            Err(SuperblockError::UnknownSlotState { slot: 1, code: 9 })
        );
        assert_eq!(
            mutate(&s, |b| b[slot1 + 20] = 1),
            Err(SuperblockError::NonZeroReserved {
                offset: slot1 + 20,
                value: 1
            })
        );
        assert!(matches!(
            mutate(&s, |b| put_u64(b, slot1 + SLOT_PROGRESS, 5)),
            Err(SuperblockError::BadSlot { slot: 1, .. })
        ));
        let mut r = s.clone();
        r.slots[1].state = SlotState::Rebuilding {
            rebuilt_blocks: r.data_size_blocks + 1,
        };
        assert!(matches!(
            decode(&r.encode()),
            Err(SuperblockError::BadSlot { slot: 1, .. })
        ));
        assert!(matches!(
            r.validate(),
            Err(SuperblockError::BadSlot { slot: 1, .. })
        ));
        let mut nil = s.clone();
        nil.slots[2].member_uuid = Uuid::default();
        assert!(matches!(
            decode(&nil.encode()),
            Err(SuperblockError::BadSlot { slot: 2, .. })
        ));
        nil.slots[2].state = SlotState::Missing;
        assert_eq!(decode(&nil.encode()), Ok(nil.clone()));
        nil.this_slot = 2;
        assert!(matches!(
            decode(&nil.encode()),
            Err(SuperblockError::BadSlot { slot: 2, .. })
        ));
        let mut dup = s.clone();
        dup.slots[2].member_uuid = dup.slots[0].member_uuid;
        let e = decode(&dup.encode()).unwrap_err();
        assert_eq!(
            e,
            SuperblockError::DuplicateMember {
                first: 0,
                second: 2,
                uuid: uuid(1)
            }
        );
        assert!(e.to_string().contains("01010101-0101"), "{e}");
    }

    #[test]
    fn level_rules_apply_to_strip_size_and_slot_count() {
        let mut r1 = sb(RaidLevel::Raid1, 2);
        assert_eq!(decode(&r1.encode()), Ok(r1.clone()));
        r1.strip_size_blocks = 64;
        assert_eq!(decode(&r1.encode()), Ok(r1.clone()));
        r1.strip_size_blocks = 3;
        assert!(matches!(
            decode(&r1.encode()),
            Err(SuperblockError::BadStripSize { .. })
        ));
        let mut r0 = sb(RaidLevel::Raid0, 1);
        assert_eq!(decode(&r0.encode()), Ok(r0.clone()));
        r0.strip_size_blocks = 0;
        assert!(matches!(
            decode(&r0.encode()),
            Err(SuperblockError::BadStripSize { .. })
        ));
        let r5 = sb(RaidLevel::Raid5, 2);
        assert_eq!(
            decode(&r5.encode()),
            Err(SuperblockError::BadSlotCount {
                level: RaidLevel::Raid5,
                count: 2,
                min: 3
            })
        );
        let r1 = sb(RaidLevel::Raid1, 1);
        assert!(matches!(
            decode(&r1.encode()),
            Err(SuperblockError::BadSlotCount { .. })
        ));
    }

    #[test]
    fn invalid_superblocks_encode_to_bytes_decode_refuses() {
        let mut long = sb(RaidLevel::Raid0, 2);
        long.name = "x".repeat(64);
        assert_eq!(
            long.validate(),
            Err(SuperblockError::BadName("longer than 63 bytes"))
        );
        assert_eq!(
            decode(&long.encode()),
            Err(SuperblockError::BadName("not NUL-terminated"))
        );
        long.name = "é".repeat(40);
        assert!(decode(&long.encode()).is_err());
        long.name = "a\0b".into();
        assert!(decode(&long.encode()).is_err());
        let many = sb(RaidLevel::Raid0, 40);
        assert!(matches!(
            decode(&many.encode()),
            Err(SuperblockError::BadSlotCount { count: 40, .. })
        ));
        let mut v = sb(RaidLevel::Raid0, 2);
        v.version = 9;
        assert_eq!(
            decode(&v.encode()),
            Err(SuperblockError::UnsupportedVersion { version: 9 })
        );
    }

    // ---- assembly ----

    /// One superblock per member of `s`, on bdevs "m0", "m1", …
    fn members(s: &RaidSuperblock) -> Vec<(String, RaidSuperblock)> {
        (0..s.slots.len())
            .map(|k| {
                let mut m = s.clone();
                m.this_slot = k as u32;
                (format!("m{k}"), m)
            })
            .collect()
    }

    fn current(k: usize) -> SlotPlan {
        SlotPlan::Current {
            bdev: format!("m{k}"),
        }
    }

    #[test]
    fn all_members_current_is_optimal() {
        let s = sb(RaidLevel::Raid5, 4);
        let mut found = members(&s);
        found.reverse();
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.readiness, Readiness::Optimal);
        assert_eq!(p.slots, (0..4).map(current).collect::<Vec<_>>());
        assert!(p.waiting_for.is_empty() && p.ignored.is_empty());
        assert!(!p.needs_resync());
        assert_eq!(p.superblock.generation, 7);
    }

    #[test]
    fn one_unclean_member_means_the_array_needs_resync() {
        let mut found = members(&sb(RaidLevel::Raid1, 2));
        found[1].1.clean = false;
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.readiness, Readiness::Optimal);
        assert!(p.needs_resync());
        assert!(!p.superblock.clean);
    }

    #[test]
    fn a_member_not_found_leaves_raid5_degraded_and_waiting() {
        let mut found = members(&sb(RaidLevel::Raid5, 3));
        found.remove(1);
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.readiness, Readiness::Degraded);
        assert_eq!(
            p.slots[1],
            SlotPlan::Absent {
                marked: SlotState::Active
            }
        );
        assert_eq!(p.waiting_for, vec![1]);
        found.remove(1);
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.readiness, Readiness::Insufficient);
        assert_eq!(p.waiting_for, vec![1, 2]);
    }

    #[test]
    fn an_older_generation_member_is_stale_and_the_newest_superblock_wins() {
        let s = sb(RaidLevel::Raid5, 4);
        let mut found = members(&s);
        for (_, m) in &mut found[..3] {
            m.generation = 8;
            m.name = "renamed".into();
        }
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.readiness, Readiness::Degraded);
        assert_eq!(
            p.slots[3],
            SlotPlan::Stale {
                bdev: "m3".into(),
                generation: 7
            }
        );
        assert_eq!(&p.slots[..3], &(0..3).map(current).collect::<Vec<_>>()[..]);
        assert_eq!(p.superblock.generation, 8);
        assert_eq!(p.superblock.name, "renamed");
        assert!(p.waiting_for.is_empty());
    }

    #[test]
    fn a_member_marked_failed_is_ignored_and_not_waited_for() {
        let s = sb(RaidLevel::Raid5, 3);
        let mut found = members(&s);
        for (_, m) in &mut found[..2] {
            m.generation = 8;
            m.slots[2].state = SlotState::Failed;
        }
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.readiness, Readiness::Degraded);
        assert_eq!(
            p.slots[2],
            SlotPlan::Absent {
                marked: SlotState::Failed
            }
        );
        assert!(p.waiting_for.is_empty());
        assert_eq!(
            p.ignored,
            vec![IgnoredMember {
                bdev: "m2".into(),
                slot: 2,
                reason: IgnoreReason::MarkedOut
            }]
        );
    }

    #[test]
    fn a_replaced_member_is_ignored_and_its_replacement_resumes_rebuilding() {
        let s = sb(RaidLevel::Raid1, 2);
        let mut found = members(&s);
        // Slot 1 was given to a new member (uuid 9) that is rebuilding; the old m1 is back.
        let mut newer = s.clone();
        newer.generation = 9;
        newer.slots[1] = MemberSlot {
            member_uuid: uuid(9),
            state: SlotState::Rebuilding {
                rebuilt_blocks: 5000,
            },
        };
        found[0].1 = newer.clone();
        let mut replacement = newer.clone();
        replacement.this_slot = 1;
        replacement.slots[1].state = SlotState::Rebuilding {
            rebuilt_blocks: 3000,
        };
        found.push(("new1".into(), replacement));
        let p = plan_assembly(&found).unwrap();
        assert_eq!(p.slots[0], current(0));
        assert_eq!(
            p.slots[1],
            SlotPlan::Rebuilding {
                bdev: "new1".into(),
                rebuilt_blocks: 3000
            }
        );
        assert_eq!(
            p.superblock.slots[1].state,
            SlotState::Rebuilding {
                rebuilt_blocks: 3000
            }
        );
        assert_eq!(p.readiness, Readiness::Degraded);
        assert_eq!(
            p.ignored,
            vec![IgnoredMember {
                bdev: "m1".into(),
                slot: 1,
                reason: IgnoreReason::Replaced
            }]
        );
    }

    #[test]
    fn redundancy_decides_per_level() {
        let mut r0 = members(&sb(RaidLevel::Raid0, 2));
        r0.pop();
        assert_eq!(
            plan_assembly(&r0).unwrap().readiness,
            Readiness::Insufficient
        );
        let mut c = members(&sb(RaidLevel::Concat, 3));
        c.remove(0);
        assert_eq!(
            plan_assembly(&c).unwrap().readiness,
            Readiness::Insufficient
        );
        let mut r1 = members(&sb(RaidLevel::Raid1, 3));
        r1.truncate(1);
        let p = plan_assembly(&r1).unwrap();
        assert_eq!(p.readiness, Readiness::Degraded);
        assert_eq!(p.waiting_for, vec![1, 2]);
    }

    #[test]
    fn refusals_name_the_bdevs() {
        assert_eq!(plan_assembly(&[]), Err(AssemblyError::NoMembers));
        let s = sb(RaidLevel::Raid5, 3);

        let mut f = members(&s);
        f[1].1.slots[2].state = SlotState::Failed;
        let e = plan_assembly(&f).unwrap_err();
        assert_eq!(
            e,
            AssemblyError::Conflict {
                a: "m0".into(),
                b: "m1".into(),
                generation: 7
            }
        );
        assert!(e.to_string().contains("m0 and m1 have generation 7"), "{e}");

        let mut f = members(&s);
        f[2].1.strip_size_blocks = 64;
        f[2].1.generation = 3;
        assert_eq!(
            plan_assembly(&f),
            Err(AssemblyError::GeometryMismatch {
                a: "m0".into(),
                b: "m2".into()
            })
        );

        let mut f = members(&s);
        f[2].1.array_uuid = uuid(0xbb);
        assert!(matches!(
            plan_assembly(&f),
            Err(AssemblyError::MixedArrays { .. })
        ));

        let mut f = members(&s);
        let copy = f[1].1.clone();
        f.push(("copy".into(), copy));
        assert_eq!(
            plan_assembly(&f),
            Err(AssemblyError::DuplicateMember {
                a: "m1".into(),
                b: "copy".into(),
                member: uuid(2),
                slot: 1
            })
        );

        let mut f = members(&s);
        f[0].1.this_slot = 5;
        assert!(matches!(
            plan_assembly(&f),
            Err(AssemblyError::Invalid {
                error: SuperblockError::BadThisSlot { .. },
                ..
            })
        ));
    }
}
