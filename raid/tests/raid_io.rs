//! End-to-end tests of the raid levels over malloc (and recording) bdevs, checked against a
//! reference model: random I/O of every size and alignment, DMA-direct member I/O, concurrent
//! writes to one stripe from two cores, and member failures under a verifying workload.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

mod common;

use common::*;
use keel_bdev::modules::{error, malloc, null};
use keel_bdev::{IoChannel, IoStatus, IoType};
use keel_raid::{CreateConfig, RaidLevel};

const BS: u32 = 512;
const MEMBER_BLOCKS: u64 = 256;

async fn make(name: &str, level: RaidLevel, bases: &[String], strip_kb: Option<u32>) {
    let cfg = CreateConfig {
        name: name.into(),
        level,
        base_bdevs: bases.to_vec(),
        strip_size_kb: strip_kb,
        uuid: None,
        superblock: false,
    };
    keel_raid::create(&cfg).await.expect("create raid");
}

fn mallocs(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            malloc::create(&name, MEMBER_BLOCKS, BS, None).expect("malloc");
            name
        })
        .collect()
}

/// Random writes (random iovec cuts), reads, and — where the bdev offers them — unmaps (when
/// unmapped blocks read back as zeroes) and write-zeroes of up to 4 × `max_blocks` blocks
/// (whole stripes and pieces), against a model.
async fn random_io(ch: &IoChannel, model: &mut [u8], rng: &mut Rng, ops: usize, max_blocks: u64) {
    let bs = BS as u64;
    let total = model.len() as u64 / bs;
    let b = ch.bdev();
    let can_unmap = b.io_type_supported(IoType::Unmap) && b.unmap_reads_zeroes();
    let can_zero = b.io_type_supported(IoType::WriteZeroes);
    for i in 0..ops {
        if (can_unmap || can_zero) && rng.below(6) == 0 {
            let blocks = 1 + rng.below((4 * max_blocks).min(total));
            let lba = rng.below(total - blocks + 1);
            let use_unmap = can_unmap && (!can_zero || rng.below(2) == 0);
            let s = if use_unmap {
                unmap(ch, lba, blocks).await
            } else {
                write_zeroes(ch, lba, blocks).await
            };
            assert_eq!(s, IoStatus::Success, "unmap/zeroes {lba}+{blocks}");
            let at = (lba * bs) as usize;
            model[at..at + (blocks * bs) as usize].fill(0);
            continue;
        }
        let blocks = 1 + rng.below(max_blocks.min(total));
        let lba = rng.below(total - blocks + 1);
        let len = (blocks * bs) as usize;
        if i % 3 == 2 {
            let (s, got) = read(ch, lba, blocks).await;
            assert_eq!(s, IoStatus::Success, "read {lba}+{blocks}");
            let at = (lba * bs) as usize;
            assert!(
                got == model[at..at + len],
                "read {lba}+{blocks} differs from the model"
            );
            continue;
        }
        let mut data = vec![0u8; len];
        rng.fill(&mut data);
        let cuts: Vec<usize> = (0..rng.below(4))
            .map(|_| rng.below(len as u64) as usize)
            .collect();
        let mut cuts = cuts;
        cuts.sort_unstable();
        let s = write(ch, lba, &mut data, &cuts).await;
        assert_eq!(s, IoStatus::Success, "write {lba}+{blocks}");
        let at = (lba * bs) as usize;
        model[at..at + len].copy_from_slice(&data);
    }
}

async fn verify_all(ch: &IoChannel, model: &[u8]) {
    let blocks = model.len() as u64 / BS as u64;
    let mut lba = 0;
    while lba < blocks {
        let n = (blocks - lba).min(128);
        let (s, got) = read(ch, lba, n).await;
        assert_eq!(s, IoStatus::Success);
        let at = (lba * BS as u64) as usize;
        assert!(
            got == model[at..at + got.len()],
            "blocks {lba}+{n} differ from the model"
        );
        lba += n;
    }
}

/// raid5: the XOR of every member's data area is zero (parity is consistent everywhere).
async fn verify_parity(members: &[String]) {
    let mut acc = vec![0u8; (MEMBER_BLOCKS * BS as u64) as usize];
    for m in members {
        let d = keel_bdev::open(m, false, |_| {}).expect("open member");
        let ch = d.get_io_channel().unwrap();
        let (s, got) = read(&ch, 0, MEMBER_BLOCKS).await;
        assert_eq!(s, IoStatus::Success);
        for (a, b) in acc.iter_mut().zip(got) {
            *a ^= b;
        }
    }
    assert!(acc.iter().all(|&x| x == 0), "parity inconsistent");
}

#[test]
fn every_level_matches_the_reference_model_for_random_io() {
    run(|| async {
        for (i, (level, n, strip)) in [
            (RaidLevel::Raid0, 3, Some(4)),
            (RaidLevel::Concat, 3, Some(4)),
            (RaidLevel::Raid1, 2, None),
            (RaidLevel::Raid5, 4, Some(4)),
            (RaidLevel::Raid5, 3, Some(8)),
        ]
        .into_iter()
        .enumerate()
        {
            let bases = mallocs(&format!("lm{i}_"), n);
            let name = format!("r_model{i}");
            make(&name, level, &bases, strip).await;
            let (desc, ch) = open_rw(&name);
            let total = ch.bdev().info().num_blocks;
            let mut model = vec![0u8; (total * BS as u64) as usize];
            let mut rng = Rng(0x1234_5678 + i as u64);
            random_io(&ch, &mut model, &mut rng, 240, 40).await;
            verify_all(&ch, &model).await;
            if level == RaidLevel::Raid5 {
                verify_parity(&bases).await;
            }
            if level == RaidLevel::Raid1 {
                // Both mirrors hold the data.
                for b in &bases {
                    let d = keel_bdev::open(b, false, |_| {}).unwrap();
                    let c = d.get_io_channel().unwrap();
                    let (_, got) = read(&c, 0, total).await;
                    assert!(got == model, "mirror {b} differs");
                }
            }
            drop((ch, desc));
            keel_raid::delete(&name).await.unwrap();
            for b in bases {
                malloc::delete(&b).await.unwrap();
            }
        }
    });
}

#[test]
fn members_see_the_hosts_own_memory() {
    run(|| async {
        let names: Vec<String> = (0..4).map(|i| format!("rec{i}")).collect();
        let seen: Vec<Seen> = names.iter().map(|n| recording_bdev(n, 256, BS)).collect();
        make("r_rec", RaidLevel::Raid5, &names, Some(4)).await;
        let (desc, ch) = open_rw("r_rec");
        // One full stripe (3 × 4 KiB) from two iovecs, then a partial write.
        let mut host = vec![7u8; 3 * 4096];
        let lo = host.as_ptr() as usize;
        let hi = lo + host.len();
        for s in &seen {
            s.lock().unwrap().clear();
        }
        assert_eq!(write(&ch, 0, &mut host, &[5000]).await, IoStatus::Success);
        let mut data_writes = 0;
        let mut parity_writes = 0;
        for s in &seen {
            for &(t, addr, len) in s.lock().unwrap().iter() {
                assert_eq!(t, IoType::Write, "a full-stripe write reads nothing");
                if addr >= lo && addr + len <= hi {
                    data_writes += 1;
                } else {
                    parity_writes += 1;
                }
            }
        }
        assert_eq!(
            data_writes, 4,
            "3 strips, one cut by the iovec boundary, all host memory"
        );
        assert_eq!(parity_writes, 1, "only parity comes from elsewhere");
        // A partial write: data still goes from host memory.
        for s in &seen {
            s.lock().unwrap().clear();
        }
        let mut small = vec![9u8; 1024];
        let (slo, shi) = (small.as_ptr() as usize, small.as_ptr() as usize + 1024);
        assert_eq!(write(&ch, 30, &mut small, &[]).await, IoStatus::Success);
        let writes: Vec<(usize, usize)> = seen
            .iter()
            .flat_map(|s| s.lock().unwrap().clone())
            .filter(|&(t, _, _)| t == IoType::Write)
            .map(|(_, a, l)| (a, l))
            .collect();
        assert!(writes.iter().any(|&(a, l)| a >= slo && a + l <= shi));
        assert_eq!(writes.len(), 2, "data + parity");
        drop((ch, desc));
        keel_raid::delete("r_rec").await.unwrap();
        for n in names {
            keel_bdev::unregister(&n).await.unwrap();
        }
    });
}

#[test]
fn concurrent_writes_to_one_stripe_from_two_cores() {
    let cores = cores();
    let bases = run(|| async {
        let bases = mallocs("cc", 4);
        make("r_cc", RaidLevel::Raid5, &bases, Some(4)).await;
        bases
    });
    // Stripe 0 has 24 data blocks: core A writes blocks 0..12, core B 12..24, each many times
    // with sizes from 1 to 12 blocks, each I/O touching the shared parity rows.
    let workers: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(w, &core)| {
            std::thread::spawn(move || {
                run_on(core, move || async move {
                    let (_d, ch) = open_rw("r_cc");
                    let mut rng = Rng(99 + w as u64);
                    let base = w as u64 * 12;
                    let mut last = vec![0u8; 12 * BS as usize];
                    for _ in 0..300 {
                        let blocks = 1 + rng.below(12);
                        let off = rng.below(12 - blocks + 1);
                        let mut data = vec![0u8; (blocks * BS as u64) as usize];
                        rng.fill(&mut data);
                        let s = write(&ch, base + off, &mut data, &[]).await;
                        assert_eq!(s, IoStatus::Success);
                        let at = (off * BS as u64) as usize;
                        last[at..at + data.len()].copy_from_slice(&data);
                    }
                    last
                })
            })
        })
        .collect();
    let lasts: Vec<Vec<u8>> = workers.into_iter().map(|h| h.join().unwrap()).collect();
    run(move || async move {
        let (_d, ch) = open_rw("r_cc");
        let (s, got) = read(&ch, 0, 24).await;
        assert_eq!(s, IoStatus::Success);
        assert!(got[..6144] == lasts[0][..], "core A's blocks");
        assert!(got[6144..] == lasts[1][..], "core B's blocks");
        verify_parity(&bases).await;
        drop((ch, _d));
        keel_raid::delete("r_cc").await.unwrap();
        for b in bases {
            malloc::delete(&b).await.unwrap();
        }
    });
}

async fn wait_rebuilt(name: &str, ch: &IoChannel, model: &mut [u8], rng: &mut Rng) {
    for _ in 0..100_000 {
        let a = keel_raid::bdev::find(name).unwrap();
        if !a.is_rebuilding() && a.active_members() == a.members.len() {
            return;
        }
        random_io(ch, model, rng, 3, 16).await;
        yield_now().await;
    }
    panic!("rebuild did not finish");
}

#[test]
fn member_failures_under_a_verifying_workload() {
    run(|| async {
        let raw = mallocs("ff", 5);
        let mut ee = Vec::new();
        for r in &raw[..4] {
            ee.push(error::create(r, None).unwrap().name().to_string());
        }
        make("r_ff", RaidLevel::Raid5, &ee, Some(4)).await;
        let (desc, ch) = open_rw("r_ff");
        let total = ch.bdev().info().num_blocks;
        let mut model = vec![0u8; (total * BS as u64) as usize];
        let mut rng = Rng(4242);
        random_io(&ch, &mut model, &mut rng, 60, 40).await;
        // Member 1 starts failing every I/O in the middle of the workload.
        error::inject_error(
            &ee[1],
            error::InjectTarget::All,
            error::ErrorKind::Failure,
            1_000_000,
            0,
            0,
        )
        .unwrap();
        random_io(&ch, &mut model, &mut rng, 120, 40).await;
        verify_all(&ch, &model).await;
        let a = keel_raid::bdev::find("r_ff").unwrap();
        assert_eq!(a.active_members(), 3, "degraded");
        // Replace it: remove, add a spare, rebuild while serving I/O.
        keel_raid::remove_base_bdev(&ee[1]).await.unwrap();
        // Small windows: the rebuild interleaves with the workload.
        keel_raid::rebuild::set_options(Some(8), None).unwrap();
        keel_raid::add_base_bdev("r_ff", &raw[4]).await.unwrap();
        wait_rebuilt("r_ff", &ch, &mut model, &mut rng).await;
        verify_all(&ch, &model).await;
        let members = vec![ee[0].clone(), raw[4].clone(), ee[2].clone(), ee[3].clone()];
        verify_parity(&members).await;
        // A different member is hot-removed: still everything verifies.
        error::delete(&ee[2]).await.unwrap();
        random_io(&ch, &mut model, &mut rng, 120, 40).await;
        verify_all(&ch, &model).await;
        // A second failure takes the array offline cleanly: errors, no crash.
        error::inject_error(
            &ee[3],
            error::InjectTarget::All,
            error::ErrorKind::Failure,
            1_000_000,
            0,
            0,
        )
        .unwrap();
        let (s, _) = read(&ch, 0, 48).await;
        assert_eq!(s, IoStatus::IoError);
        assert!(a.is_offline());
        let mut d = vec![1u8; 512];
        assert_eq!(write(&ch, 0, &mut d, &[]).await, IoStatus::IoError);
        drop((ch, desc));
        keel_raid::delete("r_ff").await.unwrap();
        for e in [&ee[0], &ee[1], &ee[3]] {
            error::delete(e).await.unwrap();
        }
        for r in raw {
            malloc::delete(&r).await.unwrap();
        }
    });
}

/// The member I/O types seen since the last clear, without flush/reset.
fn seen_types(seen: &[Seen]) -> Vec<IoType> {
    seen.iter()
        .flat_map(|s| std::mem::take(&mut *s.lock().unwrap()))
        .map(|(t, _, _)| t)
        .collect()
}

#[test]
fn raid5_unmap_and_write_zeroes_keep_parity_consistent() {
    run(|| async {
        let names: Vec<String> = (0..4).map(|i| format!("rz{i}")).collect();
        let seen: Vec<Seen> = names.iter().map(|n| recording_bdev(n, 256, BS)).collect();
        // 3 data strips of 8 blocks: 24 data blocks per stripe.
        make("r_z", RaidLevel::Raid5, &names, Some(4)).await;
        let (desc, ch) = open_rw("r_z");
        assert!(ch.bdev().io_type_supported(IoType::Unmap));
        assert!(ch.bdev().unmap_reads_zeroes(), "members read back zeroes");
        let mut model = vec![0u8; 96 * BS as usize];
        Rng(5).fill(&mut model);
        assert_eq!(
            write(&ch, 0, &mut model.clone(), &[]).await,
            IoStatus::Success
        );
        seen_types(&seen);
        // Two whole stripes: every member unmaps its strip of each, nothing read or written.
        assert_eq!(unmap(&ch, 24, 48).await, IoStatus::Success);
        assert_eq!(seen_types(&seen), vec![IoType::Unmap; 8]);
        model[24 * 512..72 * 512].fill(0);
        // Part of a stripe: zeroes written through the write path (read-modify-write: the old
        // data and parity read, the data zeroed, the parity written).
        assert_eq!(unmap(&ch, 74, 3).await, IoStatus::Success);
        let t = seen_types(&seen);
        assert_eq!(t.iter().filter(|&&t| t == IoType::WriteZeroes).count(), 1);
        assert_eq!(t.iter().filter(|&&t| t == IoType::Write).count(), 1);
        assert!(!t.contains(&IoType::Unmap));
        model[74 * 512..77 * 512].fill(0);
        // Write-zeroes across a stripe boundary: a partial piece and a whole stripe.
        assert_eq!(write_zeroes(&ch, 10, 38).await, IoStatus::Success);
        let t = seen_types(&seen);
        assert_eq!(
            t.iter().filter(|&&t| t == IoType::WriteZeroes).count(),
            4 + 2
        );
        model[10 * 512..48 * 512].fill(0);
        let (s, got) = read(&ch, 0, 96).await;
        assert_eq!(s, IoStatus::Success);
        assert!(got == model, "reads match the model");
        drop((ch, desc));
        keel_raid::delete("r_z").await.unwrap();
        // Parity: the XOR of the members' blocks is zero everywhere.
        let mut acc = vec![0u8; 256 * BS as usize];
        for n in &names {
            let d = keel_bdev::open(n, false, |_| {}).unwrap();
            let c = d.get_io_channel().unwrap();
            let (s, got) = read(&c, 0, 256).await;
            assert_eq!(s, IoStatus::Success);
            for (a, b) in acc.iter_mut().zip(got) {
                *a ^= b;
            }
        }
        assert!(acc.iter().all(|&x| x == 0), "parity inconsistent");
        for n in names {
            keel_bdev::unregister(&n).await.unwrap();
        }
    });
}

#[test]
fn unmap_is_offered_only_where_it_stays_consistent() {
    run(|| async {
        // Null members unmap, but unmapped blocks do not read back as zeroes: raid5 refuses
        // unmap (its parity would stop matching) and keeps write-zeroes; raid1 passes both on.
        let nulls: Vec<String> = (0..3)
            .map(|i| {
                let n = format!("nu{i}");
                null::create(&n, MEMBER_BLOCKS, BS, None).unwrap();
                n
            })
            .collect();
        make("r_nu5", RaidLevel::Raid5, &nulls[..3], Some(4)).await;
        let (d5, c5) = open_rw("r_nu5");
        assert!(!c5.bdev().io_type_supported(IoType::Unmap));
        assert!(c5.bdev().io_type_supported(IoType::WriteZeroes));
        assert!(!c5.bdev().unmap_reads_zeroes());
        assert_eq!(
            c5.unmap(0, 8, |_, _| {}, 0),
            Err(keel_bdev::SubmitError::Unsupported)
        );
        assert_eq!(write_zeroes(&c5, 0, 30).await, IoStatus::Success);
        drop((c5, d5));
        keel_raid::delete("r_nu5").await.unwrap();
        make("r_nu1", RaidLevel::Raid1, &nulls[..2], None).await;
        let (d1, c1) = open_rw("r_nu1");
        assert!(c1.bdev().io_type_supported(IoType::Unmap));
        assert!(!c1.bdev().unmap_reads_zeroes());
        assert_eq!(unmap(&c1, 3, 200).await, IoStatus::Success);
        drop((c1, d1));
        keel_raid::delete("r_nu1").await.unwrap();
        // A member joining later must offer what the array offers.
        let m = mallocs("um", 4);
        make("r_um", RaidLevel::Raid5, &m[..3], Some(4)).await;
        keel_raid::remove_base_bdev(&m[1]).await.unwrap();
        let e = keel_raid::add_base_bdev("r_um", &nulls[0])
            .await
            .unwrap_err();
        assert!(e.to_string().contains("zeroes after unmap"), "{e}");
        keel_raid::add_base_bdev("r_um", &m[3]).await.unwrap();
        keel_raid::delete("r_um").await.unwrap();
        for n in m {
            malloc::delete(&n).await.unwrap();
        }
        for n in nulls {
            keel_bdev::unregister(&n).await.unwrap();
        }
    });
}

/// Completion counter of a batch of I/Os submitted together.
#[derive(Default)]
struct Many {
    left: std::cell::Cell<usize>,
    failed: std::cell::Cell<usize>,
}

fn many_cb(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the address of the `Many` the test keeps alive until `left` is 0.
    let m = unsafe { &*(ctx as *const Many) };
    m.left.set(m.left.get() - 1);
    if status != IoStatus::Success {
        m.failed.set(m.failed.get() + 1);
    }
}

#[test]
fn raid1_reads_wait_for_member_descriptors() {
    run(|| async {
        // Degraded raid1: every read and write goes to member 0. 8 writes of 1 MiB take every
        // stripe operation (16 regions each, 128 in all, each one member write), then 500
        // reads: more member I/Os than the member channel has descriptors (512), so reads
        // must wait for one and be sent again.
        let m: Vec<String> = (0..2)
            .map(|i| {
                let n = format!("rd{i}");
                malloc::create(&n, 32768, BS, None).unwrap();
                n
            })
            .collect();
        make("r_rd", RaidLevel::Raid1, &m, None).await;
        let a = keel_raid::bdev::find("r_rd").unwrap();
        assert!(a.fail_member(1, "failed by the test"));
        let (desc, ch) = open_rw("r_rd");
        let mut pattern = vec![0u8; 8 << 20];
        Rng(77).fill(&mut pattern);
        assert_eq!(
            write(&ch, 16384, &mut pattern, &[]).await,
            IoStatus::Success
        );
        let mut wbuf = vec![0x33u8; 8 << 20];
        let mut rbufs = vec![0u8; 500 * 4096];
        let many = Box::new(Many::default());
        let ctx = &*many as *const Many as usize;
        for i in 0..8u64 {
            let v = [iov(&mut wbuf[(i as usize) << 20..((i as usize) + 1) << 20])];
            ch.write(&v, i * 2048, 2048, many_cb, ctx).unwrap();
            many.left.set(many.left.get() + 1);
        }
        for (i, chunk) in rbufs.chunks_mut(4096).enumerate() {
            let v = [iov(chunk)];
            ch.read(&v, 16384 + i as u64 * 8, 8, many_cb, ctx).unwrap();
            many.left.set(many.left.get() + 1);
        }
        while many.left.get() > 0 {
            yield_now().await;
        }
        assert_eq!(many.failed.get(), 0);
        assert!(rbufs[..] == pattern[..rbufs.len()], "reads return the data");
        let (s, got) = read(&ch, 0, 16384).await;
        assert_eq!(s, IoStatus::Success);
        assert!(got.iter().all(|&b| b == 0x33), "writes landed");
        drop((ch, desc));
        keel_raid::delete("r_rd").await.unwrap();
        for n in m {
            malloc::delete(&n).await.unwrap();
        }
    });
}

#[test]
fn raid5_reads_go_straight_to_active_members_and_reconstruct_when_degraded() {
    run(|| async {
        let raw = mallocs("dr", 4);
        let ee: Vec<String> = raw
            .iter()
            .map(|r| error::create(r, None).unwrap().name().to_string())
            .collect();
        make("r_dr", RaidLevel::Raid5, &ee, Some(4)).await;
        let (desc, ch) = open_rw("r_dr");
        let total = ch.bdev().info().num_blocks;
        let mut model = vec![0u8; (total * BS as u64) as usize];
        Rng(99).fill(&mut model);
        assert_eq!(write(&ch, 0, &mut model, &[777]).await, IoStatus::Success);
        let ranges = [
            (0, total),
            (3, 1),
            (7, 2),
            (5, 30),
            (40, 100),
            (total - 9, 9),
        ];
        let check = |lba: u64, got: &[u8], model: &[u8]| {
            let at = (lba * BS as u64) as usize;
            assert!(
                got == &model[at..at + got.len()],
                "read at {lba} returns the data"
            );
        };
        // Healthy: every piece goes straight to its member, no stripe operation.
        let before = keel_raid::bdev::stripe_ops_taken("r_dr");
        for &(lba, n) in &ranges {
            let (s, got) = read(&ch, lba, n).await;
            assert_eq!(s, IoStatus::Success);
            check(lba, &got, &model);
        }
        assert_eq!(
            keel_raid::bdev::stripe_ops_taken("r_dr"),
            before,
            "healthy reads take no stripe operation"
        );
        // One failed member read: the read goes again through stripe operations (the member
        // read again succeeds, so it stays active) and returns the data.
        error::inject_error(
            &ee[2],
            error::InjectTarget::Io(IoType::Read),
            error::ErrorKind::Failure,
            1,
            0,
            0,
        )
        .unwrap();
        let (s, got) = read(&ch, 0, total).await;
        assert_eq!(s, IoStatus::Success);
        check(0, &got, &model);
        let a = keel_raid::bdev::find("r_dr").unwrap();
        assert_eq!(a.active_members(), 4);
        let retried = keel_raid::bdev::stripe_ops_taken("r_dr");
        assert!(retried > before, "the retry went through stripe operations");
        // Degraded: the pieces of the failed member are rebuilt from parity.
        assert!(a.fail_member(1, "failed by the test"));
        for &(lba, n) in &ranges {
            let (s, got) = read(&ch, lba, n).await;
            assert_eq!(s, IoStatus::Success);
            check(lba, &got, &model);
        }
        assert!(keel_raid::bdev::stripe_ops_taken("r_dr") > retried);
        drop((ch, desc));
        keel_raid::delete("r_dr").await.unwrap();
        for e in &ee {
            error::delete(e).await.unwrap();
        }
        for r in raw {
            malloc::delete(&r).await.unwrap();
        }
    });
}

#[test]
fn striped_reads_and_writes_wait_for_member_descriptors() {
    run(|| async {
        // More concurrent member I/Os than a member channel has descriptors (512): raid0 and
        // raid5 direct reads must wait for one (the wait entry) and go on.
        for (name, level, members) in [
            ("r_wd0", RaidLevel::Raid0, 2),
            ("r_wd5", RaidLevel::Raid5, 3),
        ] {
            let m: Vec<String> = (0..members)
                .map(|i| {
                    let n = format!("{name}m{i}");
                    malloc::create(&n, 8192, BS, None).unwrap();
                    n
                })
                .collect();
            make(name, level, &m, Some(4)).await;
            let (desc, ch) = open_rw(name);
            let total = ch.bdev().info().num_blocks;
            let mut pattern = vec![0u8; (total * BS as u64) as usize];
            Rng(5).fill(&mut pattern);
            assert_eq!(write(&ch, 0, &mut pattern, &[]).await, IoStatus::Success);
            // 400 reads (under the raid channel's 512 descriptors) of 8 strips each: about
            // 1600 (raid0) or 1070 (raid5) member reads per member.
            let (n, len) = (400usize, 64u64);
            let bytes = len as usize * BS as usize;
            let mut rbufs = vec![0u8; n * bytes];
            let many = Box::new(Many::default());
            let ctx = &*many as *const Many as usize;
            let at = |i: usize| (i as u64 * len) % total;
            for (i, chunk) in rbufs.chunks_mut(bytes).enumerate() {
                let v = [iov(chunk)];
                ch.read(&v, at(i), len, many_cb, ctx).unwrap();
                many.left.set(many.left.get() + 1);
            }
            while many.left.get() > 0 {
                yield_now().await;
            }
            assert_eq!(many.failed.get(), 0);
            for (i, chunk) in rbufs.chunks(bytes).enumerate() {
                let off = (at(i) * BS as u64) as usize;
                assert!(chunk == &pattern[off..off + bytes], "read {i}");
            }
            drop((ch, desc));
            keel_raid::delete(name).await.unwrap();
            for b in m {
                malloc::delete(&b).await.unwrap();
            }
        }
    });
}
