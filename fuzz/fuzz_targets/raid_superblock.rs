//! Fuzz the RAID superblock decoder and the assembly planner.
//!
//! Input: a mode byte, then a superblock block, then assembly edits.
//! - Mode bit 0 clear: the rest is decoded as it is (exercises length, magic, version and
//!   checksum checks). Mode bit 0 set: the first 4096 bytes of the rest (zero-padded) get the
//!   magic, version 1 and a correct checksum first, so the field checks are exercised.
//! - What decodes must encode back to the same bytes and decode to the same superblock.
//! - Bytes after the block, 6 at a time, each make a variant of the decoded superblock (another
//!   member's view: slot, generation, a slot state, the clean flag, a member UUID, the array
//!   UUID); up to 8 go to `plan_assembly`, which must not panic and whose plans must hold.

#![no_main]

use keel_bdev::Uuid;
use keel_raid::superblock::{
    plan_assembly, store_checksum, RaidSuperblock, Readiness, SlotPlan, SlotState, MAGIC,
    SUPERBLOCK_SIZE, VERSION,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, body)) = data.split_first() else {
        return;
    };
    let mut block = vec![0u8; SUPERBLOCK_SIZE];
    let decoded = if mode & 1 == 0 {
        RaidSuperblock::decode(body)
    } else {
        let n = body.len().min(SUPERBLOCK_SIZE);
        block[..n].copy_from_slice(&body[..n]);
        block[..8].copy_from_slice(&MAGIC);
        block[8..12].copy_from_slice(&VERSION.to_le_bytes());
        store_checksum(&mut block);
        RaidSuperblock::decode(&block)
    };
    let Ok(sb) = decoded else {
        return;
    };
    let raw = if mode & 1 == 0 { body } else { &block[..] };
    let enc = sb.encode();
    assert_eq!(enc.len(), SUPERBLOCK_SIZE);
    assert_eq!(&enc[..], &raw[..SUPERBLOCK_SIZE], "encoding is canonical");
    assert_eq!(RaidSuperblock::decode(&enc).as_ref(), Ok(&sb));
    assert_eq!(sb.validate(), Ok(()));

    let edits = body.get(SUPERBLOCK_SIZE..).unwrap_or(&[]);
    let mut found = vec![("b0".to_string(), sb.clone())];
    for (i, e) in edits.chunks_exact(6).take(7).enumerate() {
        let mut v = sb.clone();
        let n = v.slots.len() as u32;
        v.this_slot = if e[0] & 0x80 != 0 {
            u32::from(e[0])
        } else {
            u32::from(e[0]) % n
        };
        v.generation = v.generation.wrapping_add(u64::from(e[1])).wrapping_sub(128);
        let k = usize::from(e[2] >> 2) % v.slots.len();
        v.slots[k].state = match e[2] & 3 {
            0 => SlotState::Active,
            1 => SlotState::Failed,
            2 => SlotState::Missing,
            _ => SlotState::Rebuilding {
                rebuilt_blocks: u64::from(e[3]) * v.data_size_blocks / 255,
            },
        };
        v.clean = e[3] & 1 == 0;
        if e[4] != 0 {
            let k = usize::from(e[4]) % v.slots.len();
            v.slots[k].member_uuid = Uuid([e[4]; 16]);
        }
        if e[5] == 0xff {
            v.array_uuid = Uuid([0x5a; 16]);
        } else if e[5] == 0xfe {
            v.strip_size_blocks = v.strip_size_blocks.wrapping_mul(2);
        }
        found.push((format!("b{}", i + 1), v));
    }
    let Ok(plan) = plan_assembly(&found) else {
        return;
    };
    let max_gen = found
        .iter()
        .map(|(_, s)| s.generation)
        .max()
        .expect("an assembled plan has members");
    assert_eq!(plan.superblock.generation, max_gen);
    assert_eq!(plan.slots.len(), plan.superblock.slots.len());
    let current = plan
        .slots
        .iter()
        .filter(|p| matches!(p, SlotPlan::Current { .. }))
        .count();
    assert_eq!(
        plan.readiness == Readiness::Optimal,
        current == plan.slots.len()
    );
    for &k in &plan.waiting_for {
        assert!(matches!(
            plan.slots[k as usize],
            SlotPlan::Absent {
                marked: SlotState::Active | SlotState::Rebuilding { .. }
            }
        ));
    }
    // Every bdev is placed in exactly one slot or ignored.
    let mut names: Vec<&str> = plan
        .slots
        .iter()
        .filter_map(|p| match p {
            SlotPlan::Current { bdev }
            | SlotPlan::Rebuilding { bdev, .. }
            | SlotPlan::Stale { bdev, .. } => Some(bdev.as_str()),
            SlotPlan::Absent { .. } => None,
        })
        .chain(plan.ignored.iter().map(|m| m.bdev.as_str()))
        .collect();
    names.sort_unstable();
    let mut want: Vec<&str> = found.iter().map(|(b, _)| b.as_str()).collect();
    want.sort_unstable();
    assert_eq!(names, want);
});
