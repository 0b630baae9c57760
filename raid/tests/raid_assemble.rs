//! Arrays assembling themselves from their members' superblocks: members unplugged and plugged
//! back (memory disks that keep their bytes across registrations), a stale member rebuilt, a
//! member coming back to a running array, a corrupt superblock refused, and the parity resync
//! after an unclean shutdown; the clean flag on disk throughout.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

mod common;

use common::*;
use keel_bdev::{
    BackendChannel, BdevBackend, BdevError, BdevInfo, ConfigCall, IoChannel, IoRef, IoStatus,
    IoType, Uuid,
};
use keel_raid::superblock::{decode, RaidSuperblock, SUPERBLOCK_SIZE};
use keel_raid::{CreateConfig, RaidLevel};
use std::sync::{Arc, Mutex};

const BS: u32 = 512;
/// 1 MiB of superblock area, then 256 blocks of data.
const DATA_OFFSET: u64 = 2048;
const DATA_BLOCKS: u64 = 256;
const DISK_BLOCKS: u64 = DATA_OFFSET + DATA_BLOCKS;

type Bytes = Arc<Mutex<Vec<u8>>>;

/// A memory disk whose bytes outlive its registration (a disk unplugged and plugged back).
struct MemDisk(Bytes);

struct MemChannel(Bytes);

impl BackendChannel for MemChannel {
    fn submit(&mut self, io: IoRef) {
        let t = io.io_type();
        let mut off = io.offset_blocks() as usize * BS as usize;
        let mut data = self.0.lock().unwrap();
        for v in io.iovs() {
            // SAFETY: the iovec is valid for the I/O's life (bdev layer contract).
            let s = unsafe { std::slice::from_raw_parts_mut(v.base(), v.len()) };
            match t {
                IoType::Read => s.copy_from_slice(&data[off..off + v.len()]),
                IoType::Write => data[off..off + v.len()].copy_from_slice(s),
                _ => {}
            }
            off += v.len();
        }
        drop(data);
        io.complete(IoStatus::Success);
    }
}

impl BdevBackend for MemDisk {
    fn product_name(&self) -> &'static str {
        "Memory disk"
    }
    fn io_type_supported(&self, t: IoType) -> bool {
        matches!(
            t,
            IoType::Read | IoType::Write | IoType::Flush | IoType::Reset
        )
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(MemChannel(Arc::clone(&self.0))))
    }
    fn config_call(&self, _info: &BdevInfo) -> Option<ConfigCall> {
        None
    }
}

/// New blank disks `prefix0..`.
fn disks(prefix: &str, n: usize) -> Vec<(String, Bytes)> {
    (0..n)
        .map(|i| {
            (
                format!("{prefix}{i}"),
                Arc::new(Mutex::new(vec![0u8; (DISK_BLOCKS * BS as u64) as usize])),
            )
        })
        .collect()
}

/// Plug a disk in (register it: the examiners run).
fn plug(d: &(String, Bytes)) {
    keel_bdev::register(
        BdevInfo {
            name: d.0.clone(),
            aliases: Vec::new(),
            uuid: Uuid::new_random(),
            block_size: BS,
            num_blocks: DISK_BLOCKS,
        },
        Arc::new(MemDisk(Arc::clone(&d.1))),
    )
    .expect("register disk");
}

async fn unplug(d: &(String, Bytes)) {
    keel_bdev::unregister(&d.0).await.expect("unregister disk");
}

fn sb_of(d: &(String, Bytes)) -> RaidSuperblock {
    decode(&d.1.lock().unwrap()[..SUPERBLOCK_SIZE]).expect("valid superblock")
}

/// Rewrite a disk's superblock (a valid one: `encode` sets the checksum).
fn edit_sb(d: &(String, Bytes), f: impl FnOnce(&mut RaidSuperblock)) {
    let mut sb = sb_of(d);
    f(&mut sb);
    d.1.lock().unwrap()[..SUPERBLOCK_SIZE].copy_from_slice(&sb.encode());
}

fn data_area(d: &(String, Bytes)) -> Vec<u8> {
    let at = (DATA_OFFSET * BS as u64) as usize;
    d.1.lock().unwrap()[at..].to_vec()
}

async fn create(name: &str, level: RaidLevel, ds: &[(String, Bytes)]) -> Uuid {
    keel_raid::register_rpcs();
    for d in ds {
        plug(d);
    }
    keel_bdev::wait_for_examine().await;
    let cfg = CreateConfig {
        name: name.into(),
        level,
        base_bdevs: ds.iter().map(|d| d.0.clone()).collect(),
        strip_size_kb: (level != RaidLevel::Raid1).then_some(4),
        uuid: None,
        superblock: true,
    };
    keel_raid::create(&cfg).await.expect("create raid");
    keel_raid::bdev::find(name).unwrap().uuid
}

/// Fill the whole array with random data; returns the model.
async fn fill(ch: &IoChannel, seed: u64) -> Vec<u8> {
    let total = ch.bdev().info().num_blocks;
    let mut model = vec![0u8; (total * BS as u64) as usize];
    Rng(seed).fill(&mut model);
    let chunk = 64 * BS as usize;
    for (i, c) in model.chunks(chunk).enumerate() {
        let mut c = c.to_vec();
        let lba = (i * chunk / BS as usize) as u64;
        assert_eq!(write(ch, lba, &mut c, &[]).await, IoStatus::Success);
    }
    model
}

async fn verify(ch: &IoChannel, model: &[u8]) {
    let total = model.len() as u64 / BS as u64;
    let mut lba = 0;
    while lba < total {
        let n = (total - lba).min(64);
        let (s, got) = read(ch, lba, n).await;
        assert_eq!(s, IoStatus::Success);
        let at = (lba * BS as u64) as usize;
        assert!(
            got == model[at..at + got.len()],
            "blocks {lba}+{n} differ from what was written"
        );
        lba += n;
    }
}

/// raid5: the XOR of the members' data areas is zero.
fn parity_consistent(ds: &[(String, Bytes)]) -> bool {
    let mut acc = vec![0u8; (DATA_BLOCKS * BS as u64) as usize];
    for d in ds {
        for (a, b) in acc.iter_mut().zip(data_area(d)) {
            *a ^= b;
        }
    }
    acc.iter().all(|&x| x == 0)
}

/// Wait (yielding to the reactors) until the array has no background process running and
/// every member is active.
async fn wait_optimal(name: &str) {
    for _ in 0..200_000 {
        if let Some(a) = keel_raid::bdev::find(name) {
            if !a.is_rebuilding() && a.active_members() == a.members.len() {
                return;
            }
        }
        yield_now().await;
    }
    panic!("raid {name} did not become optimal");
}

#[test]
fn an_array_comes_back_by_itself_when_its_members_reappear() {
    let ds = disks("asm", 3);
    run(move || async move {
        let uuid = create("r_asm", RaidLevel::Raid5, &ds).await;
        assert!(sb_of(&ds[0]).clean, "a new array is clean");
        let (desc, ch) = open_rw("r_asm");
        let model = fill(&ch, 11).await;
        assert!(
            !sb_of(&ds[1]).clean,
            "the first write marked the members dirty"
        );
        drop((ch, desc));
        keel_raid::delete("r_asm").await.unwrap();
        for d in &ds {
            assert!(sb_of(d).clean, "{}: a clean delete marks clean", d.0);
            unplug(d).await;
        }
        // Two of three: configuring, members held, no bdev yet.
        plug(&ds[2]);
        plug(&ds[0]);
        keel_bdev::wait_for_examine().await;
        assert!(keel_bdev::get_bdev("r_asm").is_none(), "waits for slot 1");
        let claimed = keel_bdev::get_bdev(&ds[0].0).unwrap().claimed_by();
        assert_eq!(claimed.as_deref(), Some("raid"));
        // The third: the array starts, same name and UUID, data intact, optimal.
        plug(&ds[1]);
        keel_bdev::wait_for_examine().await;
        let b = keel_bdev::get_bdev("r_asm").expect("assembled");
        assert_eq!(b.info().uuid, uuid);
        let a = keel_raid::bdev::find("r_asm").unwrap();
        assert_eq!(a.active_members(), 3);
        assert_eq!(a.state_name(), "online");
        assert!(!a.is_rebuilding(), "a clean, current array needs nothing");
        let (desc, ch) = open_rw("r_asm");
        verify(&ch, &model).await;
        assert!(sb_of(&ds[0]).clean, "reads leave it clean");
        drop((ch, desc));
        keel_raid::delete("r_asm").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
    });
}

#[test]
fn a_stale_member_is_not_trusted_and_is_rebuilt() {
    let ds = disks("stl", 3);
    run(move || async move {
        create("r_stl", RaidLevel::Raid5, &ds).await;
        let (desc, ch) = open_rw("r_stl");
        let model = fill(&ch, 22).await;
        drop((ch, desc));
        keel_raid::delete("r_stl").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
        // Member 2 looks one generation behind, and its data is garbage: if it were trusted,
        // reads would return garbage.
        let newest = sb_of(&ds[0]).generation;
        edit_sb(&ds[2], |sb| sb.generation = newest - 1);
        {
            let at = (DATA_OFFSET * BS as u64) as usize;
            ds[2].1.lock().unwrap()[at..].fill(0xee);
        }
        keel_raid::rebuild::set_options(Some(4), None).unwrap();
        for d in &ds {
            plug(d);
        }
        keel_bdev::wait_for_examine().await;
        let a = keel_raid::bdev::find("r_stl").expect("started degraded");
        // Not trusted: rebuilding, or (the rebuild of these small disks may already be over)
        // active with its garbage replaced.
        if a.members[2].state() == keel_raid::array::MemberState::Active {
            assert!(
                data_area(&ds[2]).iter().any(|&b| b != 0xee),
                "the stale member was trusted as it was"
            );
        }
        let (desc, ch) = open_rw("r_stl");
        verify(&ch, &model).await; // while rebuilding: the stale member is not read
        wait_optimal("r_stl").await;
        verify(&ch, &model).await;
        assert!(parity_consistent(&ds), "rebuilt member consistent");
        assert!(sb_of(&ds[2]).generation > newest, "generation moved on");
        drop((ch, desc));
        keel_raid::delete("r_stl").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
    });
}

#[test]
fn a_member_coming_back_to_a_running_array_is_rebuilt() {
    let ds = disks("hot", 2);
    run(move || async move {
        create("r_hot", RaidLevel::Raid1, &ds).await;
        let (desc, ch) = open_rw("r_hot");
        let mut model = fill(&ch, 33).await;
        // Member 1 goes away; writes go on to member 0 only.
        unplug(&ds[1]).await;
        let a = keel_raid::bdev::find("r_hot").unwrap();
        assert_eq!(a.active_members(), 1);
        let mut rng = Rng(34);
        for i in 0..16u64 {
            let mut d = vec![0u8; 8 * BS as usize];
            rng.fill(&mut d);
            let at = (i * 16 * BS as u64) as usize;
            model[at..at + d.len()].copy_from_slice(&d);
            assert_eq!(write(&ch, i * 16, &mut d, &[]).await, IoStatus::Success);
        }
        // It comes back: its superblock is older and its slot is missing: rebuilt, then used.
        plug(&ds[1]);
        keel_bdev::wait_for_examine().await;
        wait_optimal("r_hot").await;
        assert_eq!(data_area(&ds[0]), data_area(&ds[1]), "mirrors equal");
        verify(&ch, &model).await;
        drop((ch, desc));
        keel_raid::delete("r_hot").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
    });
}

#[test]
fn a_corrupt_superblock_is_refused_and_the_array_waits() {
    let ds = disks("bad", 3);
    run(move || async move {
        create("r_bad", RaidLevel::Raid5, &ds).await;
        keel_raid::delete("r_bad").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
        ds[1].1.lock().unwrap()[40] ^= 0x20; // in the array UUID: checksum mismatch
        for d in &ds {
            plug(d);
        }
        keel_bdev::wait_for_examine().await;
        assert!(keel_bdev::get_bdev("r_bad").is_none(), "waits for slot 1");
        let claim = |i: usize| keel_bdev::get_bdev(&ds[i].0).unwrap().claimed_by();
        assert_eq!(claim(1), None, "the corrupt member is left alone");
        assert_eq!(claim(0).as_deref(), Some("raid"));
        // The operator gives up on it: the members are released.
        keel_raid::delete("r_bad").await.unwrap();
        assert_eq!(claim(0), None);
        assert!(keel_raid::delete("r_bad").await.is_err(), "gone");
        for d in &ds {
            unplug(d).await;
        }
    });
}

#[test]
fn an_unclean_shutdown_resyncs_parity() {
    let ds = disks("dty", 3);
    run(move || async move {
        create("r_dty", RaidLevel::Raid5, &ds).await;
        let geo = keel_raid::bdev::find("r_dty").unwrap().geo;
        let (desc, ch) = open_rw("r_dty");
        let model = fill(&ch, 44).await;
        drop((ch, desc));
        keel_raid::delete("r_dty").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
        // A crash in the middle of stripe updates: the members say dirty, and the parity of
        // a few stripes was not written.
        for d in &ds {
            edit_sb(d, |sb| sb.clean = false);
        }
        let strip = (geo.strip_blocks * BS as u64) as usize;
        for stripe in [0u64, 5, 17] {
            let pm = geo.parity_member(stripe) as usize;
            let at = (DATA_OFFSET * BS as u64) as usize + stripe as usize * strip;
            ds[pm].1.lock().unwrap()[at + 100] ^= 0xff;
        }
        assert!(!parity_consistent(&ds));
        keel_raid::rebuild::set_options(Some(4), None).unwrap();
        for d in &ds {
            plug(d);
        }
        keel_bdev::wait_for_examine().await;
        let a = keel_raid::bdev::find("r_dty").expect("assembled");
        assert_eq!(a.active_members(), 3, "all current");
        let (desc, ch) = open_rw("r_dty");
        // Host I/O during the resync: a partial-stripe write to a stripe not yet resynced.
        let mut model = model;
        let mut d = vec![0x5au8; BS as usize];
        let lba = 17 * geo.stripe_data_blocks() + 3;
        let at = (lba * BS as u64) as usize;
        model[at..at + d.len()].copy_from_slice(&d);
        assert_eq!(write(&ch, lba, &mut d, &[]).await, IoStatus::Success);
        wait_optimal("r_dty").await;
        assert!(parity_consistent(&ds), "resync rewrote parity");
        verify(&ch, &model).await;
        assert!(!sb_of(&ds[0]).clean, "dirty while running");
        drop((ch, desc));
        keel_raid::delete("r_dty").await.unwrap();
        assert!(sb_of(&ds[0]).clean, "clean after a clean delete");
        for d in &ds {
            unplug(d).await;
        }
    });
}

/// Whether a disk's superblock area (block 0 on) is all zero.
fn sb_wiped(d: &(String, Bytes)) -> bool {
    d.1.lock().unwrap()[..SUPERBLOCK_SIZE]
        .iter()
        .all(|&b| b == 0)
}

#[test]
fn delete_with_clear_sb_wipes_the_superblocks_and_nothing_reassembles() {
    let ds = disks("clr", 3);
    run(move || async move {
        // A running array: the delete wipes every member's superblock instead of marking it
        // clean; its data stays.
        create("r_clr", RaidLevel::Raid5, &ds).await;
        let (desc, ch) = open_rw("r_clr");
        fill(&ch, 33).await;
        drop((ch, desc));
        let data0 = data_area(&ds[0]);
        keel_raid::delete_opts("r_clr", true).await.unwrap();
        for d in &ds {
            assert!(sb_wiped(d), "{}: superblock cleared", d.0);
            assert_eq!(keel_bdev::get_bdev(&d.0).unwrap().claimed_by(), None);
            unplug(d).await;
        }
        assert_eq!(data_area(&ds[0]), data0, "only the superblock is cleared");
        for d in &ds {
            plug(d);
        }
        keel_bdev::wait_for_examine().await;
        assert!(keel_bdev::get_bdev("r_clr").is_none(), "nothing assembles");
        for d in &ds {
            assert_eq!(keel_bdev::get_bdev(&d.0).unwrap().claimed_by(), None);
            unplug(d).await;
        }
        // A configuring array (two of three members back): the delete wipes the two found.
        create("r_clr", RaidLevel::Raid1, &ds).await;
        keel_raid::delete("r_clr").await.unwrap();
        for d in &ds {
            unplug(d).await;
        }
        plug(&ds[0]);
        plug(&ds[1]);
        keel_bdev::wait_for_examine().await;
        assert_eq!(
            keel_bdev::get_bdev(&ds[0].0)
                .unwrap()
                .claimed_by()
                .as_deref(),
            Some("raid")
        );
        keel_raid::delete_opts("r_clr", true).await.unwrap();
        assert!(
            sb_wiped(&ds[0]) && sb_wiped(&ds[1]),
            "the found members cleared"
        );
        assert!(!sb_wiped(&ds[2]), "the absent member is not touched");
        assert_eq!(keel_bdev::get_bdev(&ds[0].0).unwrap().claimed_by(), None);
        for d in &ds[..2] {
            unplug(d).await;
        }
    });
}
