//! Loading an lvstore from its metadata region (pure: bytes in, state or a clear error out).
//!
//! Rules (FORMAT.md, "Loading"): in each pair the valid copy with the higher generation wins
//! (a torn write leaves at most one bad copy; both copies bad is corruption); pages of another
//! lvstore UUID count as free; map pages whose map no volume owns are orphans (freed);
//! interrupted snapshots are rolled forward; the cluster bitmap is rebuilt from the maps
//! (which reclaims clusters leaked by interrupted allocations), and a cluster owned twice
//! refuses the store.

use super::alloc::Bitmap;
use super::format::{
    decode_page, FormatError, MapPage, Page, Superblock, VolumeDesc, ENTRIES_PER_PAGE,
    FLAG_SNAPSHOT, PAGE_SIZE, UNALLOC, ZERO,
};
use super::md::Loc;
use keel_bdev::Uuid;
use std::collections::{BTreeMap, HashMap};

/// A volume as found on disk.
#[derive(Debug)]
pub struct LoadedVol {
    /// Its descriptor.
    pub desc: VolumeDesc,
    /// Where it lives.
    pub desc_loc: Loc,
    /// Its entries (length = size in clusters).
    pub entries: Vec<u32>,
    /// Its map pages.
    pub pages: BTreeMap<u64, Loc>,
    /// The descriptor must be rewritten (snapshot roll-forward).
    pub rewrite_desc: bool,
    /// Map pages to rewrite (entries beyond the volume's size were dropped).
    pub rewrite_pages: Vec<u64>,
}

/// A whole store as found on disk.
#[derive(Debug)]
pub struct Loaded {
    /// The superblock.
    pub sb: Superblock,
    /// Its slot.
    pub sb_slot: u8,
    /// Highest generation seen.
    pub gen: u64,
    /// Next unused map id.
    pub next_map_id: u64,
    /// Next creation sequence number.
    pub next_seq: u64,
    /// Clusters in use.
    pub clusters: Bitmap,
    /// Pairs in use.
    pub pairs: Bitmap,
    /// Volumes, parents before children.
    pub vols: Vec<LoadedVol>,
}

/// Pick the superblock from slots 0 and 1. `Ok(None)`: not an lvstore.
pub fn pick_super(a: &[u8], b: &[u8]) -> Result<Option<(Superblock, u8)>, String> {
    let da = decode_page(a);
    let db = decode_page(b);
    let sb = |r: &Result<Page, FormatError>| match r {
        Ok(Page::Super(s)) => Some(s.clone()),
        _ => None,
    };
    match (sb(&da), sb(&db)) {
        (Some(x), Some(y)) if y.uuid == x.uuid && y.generation > x.generation => Ok(Some((y, 1))),
        (Some(x), _) => Ok(Some((x, 0))),
        (None, Some(y)) => Ok(Some((y, 1))),
        (None, None) => {
            let ours = |p: &[u8]| p.len() >= 8 && p[..8] == super::format::MAGIC;
            if ours(a) || ours(b) {
                let why = |r: Result<Page, FormatError>| match r {
                    Ok(_) => "not a superblock".to_string(),
                    Err(e) => e.to_string(),
                };
                Err(format!(
                    "both superblock copies are invalid (copy A: {}; copy B: {})",
                    why(da),
                    why(db)
                ))
            } else {
                Ok(None)
            }
        }
    }
}

enum Winner {
    Free,
    Desc(VolumeDesc),
    Map(MapPage),
}

/// Decode one pair: the newest valid copy of this store, or free.
fn pick_pair(
    lvs: Uuid,
    pair: u64,
    a: &[u8],
    b: &[u8],
) -> Result<(Winner, Option<u8>, u64), String> {
    let mut best: Option<(u64, u8, Winner)> = None;
    let mut errors = Vec::new();
    let mut max_gen = 0;
    for (slot, bytes) in [(0u8, a), (1u8, b)] {
        let (gen, w) = match decode_page(bytes) {
            Ok(Page::Free) => continue,
            Ok(Page::Desc(u, d)) if u == lvs => (d.generation, Winner::Desc(d)),
            Ok(Page::Map(u, m)) if u == lvs => (m.generation, Winner::Map(m)),
            Ok(Page::Super(_)) => {
                errors.push(format!(
                    "slot {slot}: a superblock inside the metadata region"
                ));
                continue;
            }
            Ok(_) => continue, // another store's leftover: free
            Err(e) => {
                errors.push(format!("slot {slot}: {e}"));
                continue;
            }
        };
        max_gen = max_gen.max(gen);
        if best.as_ref().is_none_or(|(g, _, _)| gen > *g) {
            best = Some((gen, slot, w));
        }
    }
    match best {
        Some((_, slot, w)) => Ok((w, Some(slot), max_gen)),
        None if errors.len() == 2 => Err(format!(
            "metadata pair {pair}: both copies are invalid ({})",
            errors.join("; ")
        )),
        None => Ok((Winner::Free, None, 0)),
    }
}

/// Assemble the store from its metadata region (`2 × md_pairs` pages after the superblocks).
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one pass over the metadata region with its checks
pub fn assemble(sb: Superblock, sb_slot: u8, region: &[u8]) -> Result<Loaded, String> {
    let pairs_n = sb.md_pairs;
    if region.len() as u64 != pairs_n * 2 * PAGE_SIZE as u64 {
        return Err(format!(
            "metadata region is {} bytes, expected {}",
            region.len(),
            pairs_n * 2 * PAGE_SIZE as u64
        ));
    }
    let mut gen = sb.generation;
    let mut descs: HashMap<Uuid, (VolumeDesc, Loc)> = HashMap::new();
    let mut maps: HashMap<(u64, u64), (MapPage, Loc)> = HashMap::new();
    let mut max_map_id = 0;
    for pair in 0..pairs_n {
        let off = (pair * 2) as usize * PAGE_SIZE;
        let a = &region[off..off + PAGE_SIZE];
        let b = &region[off + PAGE_SIZE..off + 2 * PAGE_SIZE];
        let (w, slot, g) = pick_pair(sb.uuid, pair, a, b)?;
        gen = gen.max(g);
        let loc = Loc { pair, cur: slot };
        match w {
            Winner::Free => {}
            Winner::Desc(d) => {
                max_map_id = max_map_id.max(d.map_id);
                if let Some((_, l)) = descs.insert(d.uuid, (d.clone(), loc)) {
                    return Err(format!(
                        "volume {} described twice (metadata pairs {} and {pair})",
                        d.uuid, l.pair
                    ));
                }
            }
            Winner::Map(m) => {
                max_map_id = max_map_id.max(m.map_id);
                if let Some((_, l)) = maps.insert((m.map_id, m.index), (m.clone(), loc)) {
                    return Err(format!(
                        "map {} page {} present twice (metadata pairs {} and {pair})",
                        m.map_id, m.index, l.pair
                    ));
                }
            }
        }
    }
    // Snapshot roll-forward: the snapshot took the map, the origin had not moved yet.
    let mut rewrite: Vec<Uuid> = Vec::new();
    let pending: Vec<(Uuid, u64, Uuid, u64)> = descs
        .values()
        .filter_map(|(d, _)| d.pending_child.map(|(c, m)| (d.uuid, d.map_id, c, m)))
        .collect();
    for (snap, snap_map, child, new_map) in pending {
        if let Some((c, _)) = descs.get_mut(&child) {
            if c.map_id == snap_map {
                c.map_id = new_map;
                c.parent = Some(snap);
                rewrite.push(child);
            }
        }
    }
    let mut by_map: HashMap<u64, Uuid> = HashMap::new();
    for (d, _) in descs.values() {
        if let Some(other) = by_map.insert(d.map_id, d.uuid) {
            return Err(format!(
                "volumes {} and {other} both own map {}",
                d.uuid, d.map_id
            ));
        }
    }
    for (d, _) in descs.values() {
        if let Some(p) = d.parent {
            match descs.get(&p) {
                None => return Err(format!("volume {}: parent {p} is missing", d.uuid)),
                Some((pd, _)) if pd.flags & FLAG_SNAPSHOT == 0 => {
                    return Err(format!("volume {}: parent {p} is not a snapshot", d.uuid))
                }
                _ => {}
            }
        }
    }
    // Entries, ownership, pairs in use.
    let mut clusters = Bitmap::new(sb.total_clusters);
    let mut pairs = Bitmap::new(pairs_n);
    let mut owner: HashMap<u32, Uuid> = HashMap::new();
    let mut vols: Vec<LoadedVol> = Vec::new();
    for (d, loc) in descs.values() {
        pairs.set(loc.pair);
        let n = d.num_clusters as usize;
        let mut entries = Vec::new();
        entries.try_reserve_exact(n).map_err(|_| {
            format!(
                "volume {}: cannot allocate the map of {n} clusters ({} bytes)",
                d.uuid,
                n * 4
            )
        })?;
        entries.resize(n, UNALLOC);
        let mut lv = LoadedVol {
            desc: d.clone(),
            desc_loc: *loc,
            entries,
            pages: BTreeMap::new(),
            rewrite_desc: rewrite.contains(&d.uuid),
            rewrite_pages: Vec::new(),
        };
        let mut mine: Vec<&(MapPage, Loc)> = maps
            .iter()
            .filter(|((m, _), _)| *m == d.map_id)
            .map(|(_, v)| v)
            .collect();
        mine.sort_by_key(|(m, _)| m.index);
        for (m, ploc) in mine {
            pairs.set(ploc.pair);
            lv.pages.insert(m.index, *ploc);
            let first = m.index as usize * ENTRIES_PER_PAGE;
            for (i, &e) in m.entries.iter().enumerate() {
                let lc = first + i;
                if e == UNALLOC {
                    continue;
                }
                if lc >= n {
                    if !lv.rewrite_pages.contains(&m.index) {
                        lv.rewrite_pages.push(m.index);
                    }
                    continue;
                }
                if e != ZERO {
                    if u64::from(e) >= sb.total_clusters {
                        return Err(format!(
                            "volume {}: cluster {lc} maps to {e}, beyond the {} clusters",
                            d.uuid, sb.total_clusters
                        ));
                    }
                    if let Some(o) = owner.insert(e, d.uuid) {
                        return Err(format!(
                            "cluster {e} is owned twice (volumes {o} and {})",
                            d.uuid
                        ));
                    }
                    clusters.set(u64::from(e));
                }
                lv.entries[lc] = e;
            }
        }
        vols.push(lv);
    }
    // Parents first (snapshots can be newer than their clones' creation).
    let mut ordered: Vec<LoadedVol> = Vec::new();
    vols.sort_by_key(|v| v.desc.seq);
    while !vols.is_empty() {
        let before = vols.len();
        let mut i = 0;
        while i < vols.len() {
            let ready = vols[i]
                .desc
                .parent
                .is_none_or(|p| ordered.iter().any(|o| o.desc.uuid == p));
            if ready {
                ordered.push(vols.remove(i));
            } else {
                i += 1;
            }
        }
        if vols.len() == before {
            return Err("volumes form a parent cycle".into());
        }
    }
    let next_seq = ordered
        .iter()
        .map(|v| v.desc.seq)
        .max()
        .unwrap_or(0)
        .checked_add(1)
        .ok_or("a volume's creation sequence number is at its maximum")?;
    let next_map_id = max_map_id
        .checked_add(1)
        .ok_or("a map id is at its maximum")?;
    Ok(Loaded {
        sb,
        sb_slot,
        gen,
        next_map_id,
        next_seq,
        clusters,
        pairs,
        vols: ordered,
    })
}

#[cfg(test)]
mod tests {
    use super::super::format::{encode_desc, encode_map, encode_super};
    use super::*;

    fn sb() -> Superblock {
        Superblock {
            generation: 1,
            uuid: Uuid::new_random(),
            name: "lvs".into(),
            cluster_size: 1 << 20,
            block_size: 512,
            base_blocks: 1 << 16,
            md_pairs: 4,
            data_start: 1 << 20,
            total_clusters: 16,
        }
    }

    fn desc(uuid: Uuid, map_id: u64, gen: u64) -> VolumeDesc {
        VolumeDesc {
            generation: gen,
            uuid,
            name: "v".into(),
            num_clusters: 4,
            flags: 0,
            parent: None,
            map_id,
            seq: 1,
            pending_child: None,
        }
    }

    fn put(region: &mut [u8], pair: usize, slot: usize, page: &[u8; PAGE_SIZE]) {
        let off = (pair * 2 + slot) * PAGE_SIZE;
        region[off..off + PAGE_SIZE].copy_from_slice(page);
    }

    #[test]
    fn newest_copy_wins_and_ownership_is_rebuilt() {
        let s = sb();
        let mut region = vec![0u8; 8 * PAGE_SIZE];
        let v = Uuid::new_random();
        put(&mut region, 0, 0, &encode_desc(s.uuid, &desc(v, 1, 2)));
        let mut m = MapPage::empty(1, 0);
        m.generation = 3;
        m.entries[0] = 5;
        put(&mut region, 1, 0, &encode_map(s.uuid, &m));
        m.generation = 4;
        m.entries[1] = 6;
        m.entries[9] = 7; // beyond the volume: dropped, page rewritten
        put(&mut region, 1, 1, &encode_map(s.uuid, &m));
        // an orphan map page (no volume owns map 9) and a torn copy
        let mut o = MapPage::empty(9, 0);
        o.generation = 5;
        o.entries[0] = 8;
        put(&mut region, 2, 0, &encode_map(s.uuid, &o));
        let mut torn = encode_map(s.uuid, &o);
        torn[100] ^= 0xff;
        put(&mut region, 2, 1, &torn);
        let l = assemble(s, 0, &region).unwrap();
        assert_eq!(l.vols.len(), 1);
        assert_eq!(l.vols[0].entries, vec![5, 6, UNALLOC, UNALLOC]);
        assert_eq!(l.vols[0].rewrite_pages, vec![0]);
        assert_eq!(l.clusters.free(), 14, "orphan's cluster 8 reclaimed");
        assert!(l.pairs.is_used(0) && l.pairs.is_used(1) && !l.pairs.is_used(2));
        assert_eq!((l.gen, l.next_map_id), (5, 10));
    }

    #[test]
    fn corruption_and_double_ownership_are_refused() {
        let s = sb();
        let mut region = vec![0u8; 8 * PAGE_SIZE];
        let (a, b) = (Uuid::new_random(), Uuid::new_random());
        put(&mut region, 0, 0, &encode_desc(s.uuid, &desc(a, 1, 2)));
        put(&mut region, 1, 0, &encode_desc(s.uuid, &desc(b, 2, 2)));
        for (pair, map) in [(2, 1), (3, 2)] {
            let mut m = MapPage::empty(map, 0);
            m.entries[0] = 3;
            put(&mut region, pair, 0, &encode_map(s.uuid, &m));
        }
        let e = assemble(s.clone(), 0, &region).unwrap_err();
        assert!(e.contains("cluster 3 is owned twice"), "{e}");
        let mut bad = region.clone();
        bad[3 * 2 * PAGE_SIZE + 10] ^= 1;
        bad[(3 * 2 + 1) * PAGE_SIZE..(3 * 2 + 2) * PAGE_SIZE].fill(0xaa);
        let e = assemble(s.clone(), 0, &bad).unwrap_err();
        assert!(
            e.contains("metadata pair 3: both copies are invalid"),
            "{e}"
        );
        assert!(assemble(s, 0, &region[..100]).is_err());
    }

    #[test]
    fn superblock_choice() {
        let mut s = sb();
        let a = encode_super(&s);
        s.generation = 7;
        s.name = "renamed".into();
        let b = encode_super(&s);
        assert_eq!(pick_super(&a, &b).unwrap().unwrap().0.name, "renamed");
        let mut torn = b;
        torn[50] ^= 1;
        assert_eq!(pick_super(&a, &torn).unwrap().unwrap().1, 0);
        assert!(pick_super(&torn, &torn)
            .unwrap_err()
            .contains("both superblock copies"));
        assert_eq!(pick_super(&[0; PAGE_SIZE], &[7; PAGE_SIZE]).unwrap(), None);
    }

    #[test]
    fn interrupted_snapshot_rolls_forward() {
        let s = sb();
        let mut region = vec![0u8; 8 * PAGE_SIZE];
        let (origin, snap) = (Uuid::new_random(), Uuid::new_random());
        put(&mut region, 0, 0, &encode_desc(s.uuid, &desc(origin, 1, 2)));
        let mut sd = desc(snap, 1, 3);
        sd.flags = FLAG_SNAPSHOT;
        sd.seq = 2;
        sd.pending_child = Some((origin, 2));
        put(&mut region, 1, 0, &encode_desc(s.uuid, &sd));
        let l = assemble(s, 0, &region).unwrap();
        assert_eq!(l.vols[0].desc.uuid, snap, "parent first");
        assert_eq!(l.vols[1].desc.map_id, 2);
        assert_eq!(l.vols[1].desc.parent, Some(snap));
        assert!(l.vols[1].rewrite_desc);
    }
}
