//! On-disk format of an lvstore (see `FORMAT.md` beside this file): pure encode/decode of the
//! 4 KiB metadata pages, no I/O. Decoding validates every field and never panics; it is the
//! target of the `lvol_metadata` fuzzer.

use keel_bdev::Uuid;

/// Size of every metadata page, bytes.
pub const PAGE_SIZE: usize = 4096;
/// Format version written and understood.
pub const VERSION: u16 = 1;
/// Magic at the start of every metadata page.
pub const MAGIC: [u8; 8] = *b"KEELLVOL";
/// Longest lvstore or volume name, bytes.
pub const MAX_NAME: usize = 63;
/// Map entry: the cluster was never written (reads fall through to the parent, else zeroes).
pub const UNALLOC: u32 = u32::MAX;
/// Map entry: the cluster reads as zeroes and does not fall through to a parent.
pub const ZERO: u32 = u32::MAX - 1;
/// Largest number of data clusters a store may have (entries below [`ZERO`]).
pub const MAX_CLUSTERS: u64 = ZERO as u64;
/// Largest number of clusters one volume may span (64 Mi: 256 TiB with 4 MiB clusters). A
/// loaded volume's map is held densely in memory (4 bytes per cluster, 256 MiB at this size), so
/// a descriptor — crafted or corrupt — must not make a load allocate more.
pub const MAX_VOLUME_CLUSTERS: u64 = 1 << 26;
/// Offset of the first map entry in a map page.
const ENTRIES_OFF: usize = 56;
/// Offset of the CRC32C (over every byte before it).
const CRC_OFF: usize = PAGE_SIZE - 4;
/// Map entries per map page.
pub const ENTRIES_PER_PAGE: usize = (CRC_OFF - ENTRIES_OFF) / 4;
/// Page index (in 4 KiB pages from the start of the base) of the first metadata pair.
pub const MD_START_PAGE: u64 = 2;

/// Page kinds.
const KIND_SUPER: u16 = 1;
const KIND_DESC: u16 = 2;
const KIND_MAP: u16 = 3;

/// Volume flag: thin provisioned.
pub const FLAG_THIN: u32 = 1;
/// Volume flag: read-only snapshot.
pub const FLAG_SNAPSHOT: u32 = 2;
const KNOWN_FLAGS: u32 = FLAG_THIN | FLAG_SNAPSHOT;

/// Why a metadata page was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FormatError {
    /// The buffer is not one page long.
    #[error("metadata page is {0} bytes, expected 4096")]
    BadLength(usize),
    /// No magic: not an lvstore page (or garbage).
    #[error("bad magic")]
    BadMagic,
    /// A version this code does not understand.
    #[error("unsupported format version {0} (this build understands {VERSION})")]
    UnsupportedVersion(u16),
    /// The checksum does not match the contents.
    #[error("checksum mismatch (stored {stored:#010x}, computed {computed:#010x})")]
    BadChecksum {
        /// CRC32C stored in the page.
        stored: u32,
        /// CRC32C of the contents.
        computed: u32,
    },
    /// Unknown page kind.
    #[error("unknown page kind {0}")]
    BadKind(u16),
    /// A field holds a value that cannot be right.
    #[error("invalid {field}: {why}")]
    Invalid {
        /// Which field.
        field: &'static str,
        /// What is wrong with it.
        why: String,
    },
}

fn invalid(field: &'static str, why: impl Into<String>) -> FormatError {
    FormatError::Invalid {
        field,
        why: why.into(),
    }
}

/// The lvstore superblock (two copies, pages 0 and 1; the valid one with the higher
/// generation wins).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Superblock {
    /// Bumped on every write (store-wide counter shared with all metadata pages).
    pub generation: u64,
    /// The lvstore's UUID (every metadata page carries it).
    pub uuid: Uuid,
    /// The lvstore's name.
    pub name: String,
    /// Cluster size, bytes (a power of two, ≥ 4 KiB).
    pub cluster_size: u32,
    /// Block size of the base bdev when the store was created.
    pub block_size: u32,
    /// Number of blocks of the base bdev when the store was created.
    pub base_blocks: u64,
    /// Number of metadata page pairs after the superblocks.
    pub md_pairs: u64,
    /// Byte offset of data cluster 0 (cluster aligned).
    pub data_start: u64,
    /// Number of data clusters.
    pub total_clusters: u64,
}

/// A volume descriptor page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VolumeDesc {
    /// Store-wide generation of this write.
    pub generation: u64,
    /// The volume's UUID (also its bdev name).
    pub uuid: Uuid,
    /// The volume's name within the store.
    pub name: String,
    /// Logical size in clusters.
    pub num_clusters: u64,
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Parent snapshot (clones), or `None`.
    pub parent: Option<Uuid>,
    /// Id of the cluster map this volume owns.
    pub map_id: u64,
    /// Creation sequence number (volumes come back in creation order).
    pub seq: u64,
    /// Snapshot roll-forward: the volume that handed this snapshot its map and the map id it
    /// moves to (see FORMAT.md, "Snapshots").
    pub pending_child: Option<(Uuid, u64)>,
}

/// One page of a volume's cluster map.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MapPage {
    /// Store-wide generation of this write.
    pub generation: u64,
    /// Which map (a volume's `map_id`).
    pub map_id: u64,
    /// Page index within the map: entries cover logical clusters
    /// `index × ENTRIES_PER_PAGE ..`.
    pub index: u64,
    /// Physical cluster, [`UNALLOC`] or [`ZERO`] for each logical cluster of the page.
    pub entries: Box<[u32; ENTRIES_PER_PAGE]>,
}

impl MapPage {
    /// An all-unallocated page.
    pub fn empty(map_id: u64, index: u64) -> MapPage {
        MapPage {
            generation: 0,
            map_id,
            index,
            entries: Box::new([UNALLOC; ENTRIES_PER_PAGE]),
        }
    }
}

/// A decoded metadata page.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Page {
    /// All zeroes: an unused page.
    Free,
    /// A superblock.
    Super(Superblock),
    /// A volume descriptor (with the store UUID it names).
    Desc(Uuid, VolumeDesc),
    /// A cluster map page (with the store UUID it names).
    Map(Uuid, MapPage),
}

fn put_u16(b: &mut [u8], off: usize, v: u16) {
    b[off..off + 2].copy_from_slice(&v.to_le_bytes());
}
fn put_u32(b: &mut [u8], off: usize, v: u32) {
    b[off..off + 4].copy_from_slice(&v.to_le_bytes());
}
fn put_u64(b: &mut [u8], off: usize, v: u64) {
    b[off..off + 8].copy_from_slice(&v.to_le_bytes());
}
fn get_u16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn get_u32(b: &[u8], off: usize) -> u32 {
    let mut a = [0u8; 4];
    a.copy_from_slice(&b[off..off + 4]);
    u32::from_le_bytes(a)
}
fn get_u64(b: &[u8], off: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[off..off + 8]);
    u64::from_le_bytes(a)
}
fn get_uuid(b: &[u8], off: usize) -> Uuid {
    let mut a = [0u8; 16];
    a.copy_from_slice(&b[off..off + 16]);
    Uuid(a)
}
fn opt_uuid(u: Uuid) -> Option<Uuid> {
    (u.0 != [0; 16]).then_some(u)
}

/// Check a name for the store/volume name rules: 1..=63 bytes of UTF-8, no NUL, no `/`.
pub fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("name must not be empty".into());
    }
    if name.len() > MAX_NAME {
        return Err(format!("name {name:?} is longer than {MAX_NAME} bytes"));
    }
    if name.contains('\0') || name.contains('/') {
        return Err(format!("name {name:?} must not contain NUL or '/'"));
    }
    Ok(())
}

fn put_name(b: &mut [u8], off: usize, name: &str) {
    let n = name.len().min(MAX_NAME);
    b[off..off + n].copy_from_slice(&name.as_bytes()[..n]);
}

fn get_name(b: &[u8], off: usize, field: &'static str) -> Result<String, FormatError> {
    let raw = &b[off..off + MAX_NAME + 1];
    let len = raw
        .iter()
        .position(|&c| c == 0)
        .ok_or_else(|| invalid(field, "not NUL-terminated"))?;
    if raw[len..].iter().any(|&c| c != 0) {
        return Err(invalid(field, "bytes after the terminating NUL"));
    }
    let s = std::str::from_utf8(&raw[..len]).map_err(|_| invalid(field, "not UTF-8"))?;
    check_name(s).map_err(|why| invalid(field, why))?;
    Ok(s.to_string())
}

fn header(b: &mut [u8], kind: u16, generation: u64, lvs: Uuid) {
    b[..8].copy_from_slice(&MAGIC);
    put_u16(b, 8, VERSION);
    put_u16(b, 10, kind);
    put_u64(b, 16, generation);
    b[24..40].copy_from_slice(&lvs.0);
}

/// Recompute the checksum of a page in place (tests and fuzzing build pages with valid
/// checksums over arbitrary fields this way).
pub fn reseal(b: &mut [u8; PAGE_SIZE]) {
    seal(b)
}

fn seal(b: &mut [u8; PAGE_SIZE]) {
    let crc = crc32c::crc32c(&b[..CRC_OFF]);
    put_u32(b, CRC_OFF, crc);
}

/// Encode a superblock page.
pub fn encode_super(sb: &Superblock) -> [u8; PAGE_SIZE] {
    let mut b = [0u8; PAGE_SIZE];
    header(&mut b, KIND_SUPER, sb.generation, sb.uuid);
    put_name(&mut b, 40, &sb.name);
    put_u32(&mut b, 104, sb.cluster_size);
    put_u32(&mut b, 108, sb.block_size);
    put_u64(&mut b, 112, sb.base_blocks);
    put_u64(&mut b, 120, MD_START_PAGE);
    put_u64(&mut b, 128, sb.md_pairs);
    put_u64(&mut b, 136, sb.data_start);
    put_u64(&mut b, 144, sb.total_clusters);
    seal(&mut b);
    b
}

/// Encode a volume descriptor page of store `lvs`.
pub fn encode_desc(lvs: Uuid, d: &VolumeDesc) -> [u8; PAGE_SIZE] {
    let mut b = [0u8; PAGE_SIZE];
    header(&mut b, KIND_DESC, d.generation, lvs);
    b[40..56].copy_from_slice(&d.uuid.0);
    put_name(&mut b, 56, &d.name);
    put_u64(&mut b, 120, d.num_clusters);
    put_u32(&mut b, 128, d.flags);
    b[136..152].copy_from_slice(&d.parent.unwrap_or_default().0);
    let (pc, pm) = d.pending_child.unwrap_or_default();
    b[152..168].copy_from_slice(&pc.0);
    put_u64(&mut b, 168, d.map_id);
    put_u64(&mut b, 176, d.seq);
    put_u64(&mut b, 184, pm);
    seal(&mut b);
    b
}

/// Encode a map page of store `lvs`.
pub fn encode_map(lvs: Uuid, m: &MapPage) -> [u8; PAGE_SIZE] {
    let mut b = [0u8; PAGE_SIZE];
    header(&mut b, KIND_MAP, m.generation, lvs);
    put_u64(&mut b, 40, m.map_id);
    put_u64(&mut b, 48, m.index);
    for (i, e) in m.entries.iter().enumerate() {
        put_u32(&mut b, ENTRIES_OFF + 4 * i, *e);
    }
    seal(&mut b);
    b
}

/// Decode and validate one metadata page (header, checksum, then the fields of its kind).
/// Cross-page checks (entries below the store's cluster count, sizes against the base) are the
/// loader's job.
pub fn decode_page(b: &[u8]) -> Result<Page, FormatError> {
    if b.len() != PAGE_SIZE {
        return Err(FormatError::BadLength(b.len()));
    }
    if b.iter().all(|&x| x == 0) {
        return Ok(Page::Free);
    }
    if b[..8] != MAGIC {
        return Err(FormatError::BadMagic);
    }
    let version = get_u16(b, 8);
    if version != VERSION {
        return Err(FormatError::UnsupportedVersion(version));
    }
    let stored = get_u32(b, CRC_OFF);
    let computed = crc32c::crc32c(&b[..CRC_OFF]);
    if stored != computed {
        return Err(FormatError::BadChecksum { stored, computed });
    }
    if get_u32(b, 12) != 0 {
        return Err(invalid("header reserved field", "not zero"));
    }
    let generation = get_u64(b, 16);
    let lvs = get_uuid(b, 24);
    if lvs.0 == [0; 16] {
        return Err(invalid("lvstore uuid", "all zeroes"));
    }
    match get_u16(b, 10) {
        KIND_SUPER => decode_super(b, generation, lvs).map(Page::Super),
        KIND_DESC => decode_desc(b, generation).map(|d| Page::Desc(lvs, d)),
        KIND_MAP => decode_map(b, generation).map(|m| Page::Map(lvs, m)),
        k => Err(FormatError::BadKind(k)),
    }
}

fn decode_super(b: &[u8], generation: u64, uuid: Uuid) -> Result<Superblock, FormatError> {
    let sb = Superblock {
        generation,
        uuid,
        name: get_name(b, 40, "lvstore name")?,
        cluster_size: get_u32(b, 104),
        block_size: get_u32(b, 108),
        base_blocks: get_u64(b, 112),
        md_pairs: get_u64(b, 128),
        data_start: get_u64(b, 136),
        total_clusters: get_u64(b, 144),
    };
    if get_u64(b, 120) != MD_START_PAGE {
        return Err(invalid(
            "metadata start",
            format!("{} (expected 2)", get_u64(b, 120)),
        ));
    }
    if !sb.cluster_size.is_power_of_two() || (sb.cluster_size as usize) < PAGE_SIZE {
        return Err(invalid(
            "cluster size",
            format!("{} is not a power of two ≥ 4096", sb.cluster_size),
        ));
    }
    if !sb.block_size.is_power_of_two() || sb.block_size as usize > PAGE_SIZE {
        return Err(invalid(
            "block size",
            format!("{} is not a power of two ≤ 4096", sb.block_size),
        ));
    }
    let md_end = MD_START_PAGE
        .checked_add(
            sb.md_pairs
                .checked_mul(2)
                .ok_or_else(|| invalid("metadata pairs", "overflow"))?,
        )
        .and_then(|p| p.checked_mul(PAGE_SIZE as u64))
        .ok_or_else(|| invalid("metadata pairs", "overflow"))?;
    if sb.md_pairs == 0 {
        return Err(invalid("metadata pairs", "zero"));
    }
    if sb.data_start < md_end || !sb.data_start.is_multiple_of(u64::from(sb.cluster_size)) {
        return Err(invalid(
            "data start",
            format!(
                "{} overlaps metadata or is not cluster aligned",
                sb.data_start
            ),
        ));
    }
    if sb.total_clusters == 0 || sb.total_clusters > MAX_CLUSTERS {
        return Err(invalid("cluster count", format!("{}", sb.total_clusters)));
    }
    let end = sb
        .total_clusters
        .checked_mul(u64::from(sb.cluster_size))
        .and_then(|x| x.checked_add(sb.data_start));
    let base_bytes = sb.base_blocks.checked_mul(u64::from(sb.block_size));
    match (end, base_bytes) {
        (Some(e), Some(bb)) if e <= bb => Ok(sb),
        _ => Err(invalid(
            "cluster count",
            format!("{} clusters do not fit on the base", sb.total_clusters),
        )),
    }
}

fn decode_desc(b: &[u8], generation: u64) -> Result<VolumeDesc, FormatError> {
    let uuid = get_uuid(b, 40);
    if uuid.0 == [0; 16] {
        return Err(invalid("volume uuid", "all zeroes"));
    }
    let flags = get_u32(b, 128);
    if flags & !KNOWN_FLAGS != 0 {
        return Err(invalid("volume flags", format!("unknown bits {flags:#x}")));
    }
    let num_clusters = get_u64(b, 120);
    if num_clusters > MAX_VOLUME_CLUSTERS {
        return Err(invalid(
            "volume size",
            format!("{num_clusters} clusters (at most {MAX_VOLUME_CLUSTERS})"),
        ));
    }
    let parent = opt_uuid(get_uuid(b, 136));
    if parent == Some(uuid) {
        return Err(invalid("volume parent", "the volume itself"));
    }
    let pending = opt_uuid(get_uuid(b, 152)).map(|u| (u, get_u64(b, 184)));
    if pending.is_none() && get_u64(b, 184) != 0 {
        return Err(invalid("pending child map", "set without a pending child"));
    }
    Ok(VolumeDesc {
        generation,
        uuid,
        name: get_name(b, 56, "volume name")?,
        num_clusters,
        flags,
        parent,
        map_id: get_u64(b, 168),
        seq: get_u64(b, 176),
        pending_child: pending,
    })
}

fn decode_map(b: &[u8], generation: u64) -> Result<MapPage, FormatError> {
    let map_id = get_u64(b, 40);
    let index = get_u64(b, 48);
    if index > MAX_CLUSTERS / ENTRIES_PER_PAGE as u64 {
        return Err(invalid("map page index", format!("{index}")));
    }
    let mut entries = Box::new([UNALLOC; ENTRIES_PER_PAGE]);
    for (i, e) in entries.iter_mut().enumerate() {
        *e = get_u32(b, ENTRIES_OFF + 4 * i);
    }
    Ok(MapPage {
        generation,
        map_id,
        index,
        entries,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sb() -> Superblock {
        Superblock {
            generation: 3,
            uuid: Uuid::new_random(),
            name: "lvs0".into(),
            cluster_size: 1 << 20,
            block_size: 512,
            base_blocks: 1 << 16,
            md_pairs: 16,
            data_start: 1 << 20,
            total_clusters: 31,
        }
    }

    #[test]
    fn pages_round_trip() {
        let s = sb();
        assert_eq!(
            decode_page(&encode_super(&s)).unwrap(),
            Page::Super(s.clone())
        );
        let d = VolumeDesc {
            generation: 9,
            uuid: Uuid::new_random(),
            name: "vol".into(),
            num_clusters: 12,
            flags: FLAG_THIN,
            parent: Some(Uuid::new_random()),
            map_id: 4,
            seq: 2,
            pending_child: Some((Uuid::new_random(), 7)),
        };
        assert_eq!(
            decode_page(&encode_desc(s.uuid, &d)).unwrap(),
            Page::Desc(s.uuid, d)
        );
        let mut m = MapPage::empty(4, 1);
        m.generation = 11;
        m.entries[0] = 5;
        m.entries[ENTRIES_PER_PAGE - 1] = ZERO;
        assert_eq!(
            decode_page(&encode_map(s.uuid, &m)).unwrap(),
            Page::Map(s.uuid, m)
        );
        assert_eq!(decode_page(&[0u8; PAGE_SIZE]).unwrap(), Page::Free);
    }

    #[test]
    fn corruption_is_named_never_a_panic() {
        let s = sb();
        let good = encode_super(&s);
        let mut b = good;
        b[100] ^= 1;
        assert!(matches!(
            decode_page(&b),
            Err(FormatError::BadChecksum { .. })
        ));
        let mut b = good;
        b[0] = b'X';
        assert_eq!(decode_page(&b), Err(FormatError::BadMagic));
        let mut b = good;
        put_u16(&mut b, 8, 2);
        assert_eq!(decode_page(&b), Err(FormatError::UnsupportedVersion(2)));
        assert_eq!(decode_page(&good[..100]), Err(FormatError::BadLength(100)));
        // valid checksum over bad fields
        let mut bad = s.clone();
        bad.cluster_size = 3000;
        let e = decode_page(&encode_super(&bad)).unwrap_err();
        assert!(e.to_string().contains("cluster size"), "{e}");
        let mut bad = s.clone();
        bad.total_clusters = 10_000;
        assert!(decode_page(&encode_super(&bad))
            .unwrap_err()
            .to_string()
            .contains("fit"));
        let mut b = encode_super(&s);
        b[40..104].fill(b'a');
        seal(&mut b);
        assert!(decode_page(&b)
            .unwrap_err()
            .to_string()
            .contains("lvstore name"));
    }

    #[test]
    fn names_are_checked() {
        assert!(check_name("ok_name-1").is_ok());
        assert!(check_name("").is_err());
        assert!(check_name("a/b").is_err());
        assert!(check_name(&"x".repeat(64)).is_err());
        assert!(check_name(&"x".repeat(63)).is_ok());
    }

    #[test]
    fn fuzz_seeds_decode() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../fuzz/seeds/lvol_metadata");
        let read = |n: &str| std::fs::read(format!("{dir}/{n}")).expect("seed file");
        assert!(matches!(decode_page(&read("superblock")), Ok(Page::Super(s)) if s.name == "lvs0"));
        assert!(
            matches!(decode_page(&read("descriptor")), Ok(Page::Desc(_, d)) if d.name == "vol0")
        );
        match decode_page(&read("map_page")) {
            Ok(Page::Map(_, m)) => assert_eq!(&m.entries[..3], &[5, ZERO, UNALLOC]),
            other => panic!("map seed: {other:?}"),
        }
    }
}
