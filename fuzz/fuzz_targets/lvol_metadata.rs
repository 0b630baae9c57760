//! Fuzz the lvstore metadata decoders with arbitrary bytes: single pages, the superblock pair,
//! and whole metadata regions. Nothing may panic; what decodes must encode back to the same.

#![no_main]

use keel_lvol::format::{
    decode_page, encode_desc, encode_map, encode_super, reseal, Page, Superblock, PAGE_SIZE,
};
use keel_lvol::load::{assemble, pick_super};
use keel_bdev::Uuid;
use libfuzzer_sys::fuzz_target;

/// A page from the input: padded/cut to 4096 bytes unless the first byte asks for the raw
/// length (to exercise the length check).
fn page(data: &[u8]) -> Vec<u8> {
    if data.first() == Some(&0xff) {
        return data.to_vec();
    }
    let mut p = vec![0u8; PAGE_SIZE];
    let n = data.len().min(PAGE_SIZE);
    p[..n].copy_from_slice(&data[..n]);
    p
}

fn check_page(p: &[u8]) {
    if let Ok(decoded) = decode_page(p) {
        let again = match &decoded {
            Page::Free => None,
            Page::Super(s) => Some(encode_super(s)),
            Page::Desc(lvs, d) => Some(encode_desc(*lvs, d)),
            Page::Map(lvs, m) => Some(encode_map(*lvs, m)),
        };
        if let Some(bytes) = again {
            assert_eq!(
                decode_page(&bytes).expect("re-encoded page decodes"),
                decoded
            );
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let p = page(data);
    check_page(&p);
    // The same bytes with a valid checksum, so the field checks behind it are reached too.
    if let Ok(mut sealed) = <[u8; PAGE_SIZE]>::try_from(p.as_slice()) {
        reseal(&mut sealed);
        check_page(&sealed);
    }
    // Superblock pair from the first 8 KiB.
    let half = data.len() / 2;
    let _ = pick_super(&page(&data[..half]), &page(&data[half..]));
    // A whole metadata region of 4 pairs, under the lvstore UUID most inputs start with.
    let mut uuid = [0u8; 16];
    if data.len() >= 40 {
        uuid.copy_from_slice(&data[24..40]);
    }
    if uuid == [0; 16] {
        uuid[0] = 1;
    }
    let sb = Superblock {
        generation: 1,
        uuid: Uuid(uuid),
        name: "fuzz".into(),
        cluster_size: 1 << 20,
        block_size: 512,
        base_blocks: 1 << 16,
        md_pairs: 4,
        data_start: 1 << 20,
        total_clusters: 31,
    };
    let mut region = vec![0u8; 8 * PAGE_SIZE];
    for (i, chunk) in data.chunks(PAGE_SIZE).take(8).enumerate() {
        let mut pg = [0u8; PAGE_SIZE];
        pg[..chunk.len()].copy_from_slice(chunk);
        // odd pages get a valid checksum (reaching the cross-page checks), even ones stay raw
        if i % 2 == 1 || data.first() == Some(&0xfe) {
            reseal(&mut pg);
        }
        region[i * PAGE_SIZE..(i + 1) * PAGE_SIZE].copy_from_slice(&pg);
    }
    if let Ok(l) = assemble(sb, 0, &region) {
        for v in &l.vols {
            assert!(v.entries.iter().all(|&e| e >= u32::MAX - 1 || e < 31));
        }
        assert!(l.clusters.free() <= 31);
    }
});
