//! End-to-end tests of thin-provisioned logical volumes over malloc and uring bdevs: data
//! paths, examine at registration, out of space, concurrent first writes, and a model-based
//! test of random operations (with reloads) against an in-memory model.

use keel_bdev::modules::{malloc, uring};
use keel_bdev::{IoChannel, IoStatus};
use keel_lvol::{self as lvol, ClearMethod};
use keel_testkit::prelude::*;

const MIB: u64 = 1 << 20;

async fn write(ch: &IoChannel, lba: u64, data: &[u8]) -> IoStatus {
    let mut b = dma(data.len(), 0);
    b.as_mut_slice().copy_from_slice(data);
    let bs = u64::from(ch.bdev().info().block_size);
    one(|cb, ctx| ch.write(&[iov(&mut b)], lba, data.len() as u64 / bs, cb, ctx))
        .await
        .expect("submit write")
}

async fn read(ch: &IoChannel, lba: u64, blocks: u64) -> (IoStatus, Vec<u8>) {
    let bs = u64::from(ch.bdev().info().block_size);
    let mut b = dma((blocks * bs) as usize, 0xee);
    let s = one(|cb, ctx| ch.read(&[iov(&mut b)], lba, blocks, cb, ctx))
        .await
        .expect("submit read");
    (s, b.as_slice().to_vec())
}

async fn unmap(ch: &IoChannel, lba: u64, blocks: u64) -> IoStatus {
    one(|cb, ctx| ch.unmap(lba, blocks, cb, ctx))
        .await
        .expect("submit unmap")
}

fn store_named(name: &str) -> std::sync::Arc<lvol::Lvstore> {
    lvol::find_lvstore(None, Some(name)).expect("lvstore")
}

fn free_clusters(name: &str) -> u64 {
    store_named(name)
        .free_clusters
        .load(std::sync::atomic::Ordering::Relaxed)
}

#[test]
fn thin_volume_reads_zeroes_allocates_on_write_and_returns_after_hot_remove() {
    lvol::register_examiner();
    let f = TempFile::new("lvol-examine", 64 * MIB);
    let cfg = uring::UringConfig {
        filename: f.0.clone(),
        name: "lv_u".into(),
        block_size: Some(512),
        uuid: None,
        flavor: uring::Flavor::Uring,
    };
    let c2 = cfg.clone();
    let (uuid, total) = run(move || async move {
        uring::create(&c2).unwrap();
        let s = lvol::create_lvstore("lv_u", "lvs_u", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "v1", 8 * MIB, true).await.unwrap();
        (v.uuid.to_string(), s.total_clusters)
    });
    assert!(
        keel_bdev::get_bdev("lvs_u/v1").is_some(),
        "alias registered"
    );
    assert_eq!(free_clusters("lvs_u"), total, "thin: nothing allocated yet");
    let data = pattern(4096, 9);
    let d2 = data.clone();
    let u2 = uuid.clone();
    run(move || async move {
        let (_d, ch) = open_rw(&u2);
        let (s, r) = read(&ch, 0, 8).await;
        assert_eq!(s, IoStatus::Success);
        assert!(r.iter().all(|&b| b == 0), "unallocated reads zeroes");
        assert_eq!(write(&ch, 3000, &d2).await, IoStatus::Success);
        let (_, r) = read(&ch, 3000, 8).await;
        assert_eq!(r, d2);
        let (_, r) = read(&ch, 2048, 8).await;
        assert!(
            r.iter().all(|&b| b == 0),
            "rest of the new cluster is zero-filled"
        );
    });
    assert_eq!(free_clusters("lvs_u"), total - 1);
    // Hot-remove the base: the store unloads; register it again: examine brings it back.
    run(|| async { uring::delete("lv_u", false).await.unwrap() });
    for _ in 0..1000 {
        if lvol::find_lvstore(None, Some("lvs_u")).is_err() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(2));
    }
    assert!(lvol::find_lvstore(None, Some("lvs_u")).is_err(), "unloaded");
    assert!(keel_bdev::get_bdev(&uuid).is_none());
    let c3 = cfg.clone();
    run(move || async move {
        uring::create(&c3).unwrap();
        keel_bdev::wait_for_examine().await;
    });
    assert!(
        keel_bdev::get_bdev("lvs_u/v1").is_some(),
        "found again by examine"
    );
    assert_eq!(free_clusters("lvs_u"), total - 1);
    let u3 = uuid.clone();
    run(move || async move {
        let (d, ch) = open_rw(&u3);
        let (_, r) = read(&ch, 3000, 8).await;
        assert_eq!(r, data, "acknowledged write survives");
        drop((ch, d));
        let s = lvol::find_lvstore(None, Some("lvs_u")).unwrap();
        lvol::destroy_lvstore(&s).await.unwrap();
        uring::delete("lv_u", false).await.unwrap();
    });
}

#[test]
fn out_of_space_fails_only_writes_needing_clusters_and_recovers() {
    run(|| async {
        malloc::create("lv_m_full", 16384, 512, None).unwrap();
        let s = lvol::create_lvstore("lv_m_full", "lvs_full", Some(MIB), ClearMethod::Unmap)
            .await
            .unwrap();
        let total = s.total_clusters;
        let a = lvol::create_volume(&s, "a", 16 * MIB, true).await.unwrap();
        let b = lvol::create_volume(&s, "b", 16 * MIB, true).await.unwrap();
        let (_da, cha) = open_rw(&a.uuid.to_string());
        let (_db, chb) = open_rw(&b.uuid.to_string());
        let blk = pattern(512, 1);
        assert_eq!(write(&chb, 0, &blk).await, IoStatus::Success);
        let bpc = MIB / 512;
        for c in 0..total - 1 {
            assert_eq!(
                write(&cha, c * bpc, &blk).await,
                IoStatus::Success,
                "cluster {c}"
            );
        }
        assert_eq!(
            write(&cha, (total - 1) * bpc, &blk).await,
            IoStatus::NoSpace,
            "capacity exceeded"
        );
        assert_eq!(
            write(&cha, (total - 1) * bpc, &blk).await,
            IoStatus::NoSpace
        );
        assert_eq!(
            a.nospace_errors.load(std::sync::atomic::Ordering::Relaxed),
            2
        );
        assert_eq!(
            write(&chb, 5, &blk).await,
            IoStatus::Success,
            "b still writes"
        );
        assert_eq!(
            write(&cha, 7, &blk).await,
            IoStatus::Success,
            "allocated still writes"
        );
        // give a whole cluster back; writes succeed again once it is reusable
        assert_eq!(unmap(&cha, 0, bpc).await, IoStatus::Success);
        let (_, r) = read(&cha, 0, 8).await;
        assert!(r.iter().all(|&x| x == 0), "unmapped cluster reads zeroes");
        let mut st = IoStatus::NoSpace;
        for _ in 0..10_000 {
            yield_iterations(1).await;
            if s.free_clusters.load(std::sync::atomic::Ordering::Relaxed) > 0 {
                st = write(&cha, (total - 1) * bpc, &blk).await;
                break;
            }
        }
        assert_eq!(st, IoStatus::Success, "freed space is usable again");
        drop((_da, cha, _db, chb));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete("lv_m_full").await.unwrap();
    });
}

#[test]
fn concurrent_first_writes_to_one_cluster_share_one_allocation() {
    let uuid = run(|| async {
        malloc::create("lv_m_conc", 65536, 512, None).unwrap();
        let s = lvol::create_lvstore("lv_m_conc", "lvs_conc", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "c", 8 * MIB, true).await.unwrap();
        v.uuid.to_string()
    });
    let cores = cores();
    let writers: Vec<_> = cores
        .iter()
        .enumerate()
        .map(|(i, &core)| {
            let u = uuid.clone();
            std::thread::spawn(move || {
                run_on(core, move || async move {
                    let (_d, ch) = open_rw(&u);
                    let batch = Batch::new();
                    let mut bufs = Vec::new();
                    for k in 0..16u64 {
                        let mut b = dma(512, (i * 16 + k as usize) as u8 + 1);
                        let lba = 2048 + i as u64 * 16 + k;
                        let v = iov(&mut b);
                        bufs.push(b);
                        batch
                            .submit(|cb, ctx| ch.write(&[v], lba, 1, cb, ctx))
                            .unwrap();
                    }
                    let st = batch.wait().await;
                    drop(bufs);
                    st
                })
            })
        })
        .collect();
    for w in writers {
        assert!(w.join().unwrap().iter().all(|&s| s == IoStatus::Success));
    }
    let (allocated, ok) = run(move || async move {
        let (_d, ch) = open_rw(&uuid);
        let (_, r) = read(&ch, 2048, 64).await;
        let mut ok = true;
        for i in 0..2usize {
            for k in 0..16usize {
                let blk = &r[(i * 16 + k) * 512..(i * 16 + k + 1) * 512];
                ok &= blk.iter().all(|&b| b == (i * 16 + k) as u8 + 1);
            }
        }
        let v = lvol::find_volume(&uuid).unwrap();
        (v.info().allocated, ok)
    });
    assert!(ok, "every write landed");
    assert_eq!(allocated, 1, "one cluster for all of them");
    run(|| async {
        let s = store_named("lvs_conc");
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete("lv_m_conc").await.unwrap();
    });
}

/// xorshift64*: a tiny deterministic PRNG.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The model: per volume, a tag per block (0 = zeroes).
struct ModelVol {
    name: String,
    uuid: String,
    blocks: Vec<u32>,
    snapshot: bool,
    parent: Option<String>,
}

fn block_bytes(tag: u32) -> Vec<u8> {
    if tag == 0 {
        return vec![0; 512];
    }
    (0..128)
        .flat_map(|i| (tag ^ (i * 0x9e37)).to_le_bytes())
        .collect()
}

async fn verify(v: &ModelVol, rng: &mut Rng, full: bool) {
    let (_d, ch) = open_rw(&v.uuid);
    let n = v.blocks.len() as u64;
    let ranges: Vec<(u64, u64)> = if full {
        (0..n).step_by(256).map(|s| (s, 256.min(n - s))).collect()
    } else {
        let s = rng.below(n);
        vec![(s, (1 + rng.below(256)).min(n - s))]
    };
    for (s, len) in ranges {
        let (st, r) = read(&ch, s, len).await;
        assert_eq!(st, IoStatus::Success);
        for i in 0..len {
            let want = block_bytes(v.blocks[(s + i) as usize]);
            assert!(
                r[(i * 512) as usize..((i + 1) * 512) as usize] == want[..],
                "volume {} block {} differs from the model",
                v.name,
                s + i
            );
        }
    }
}

#[test]
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one model-based scenario
fn model_based_random_operations_with_reloads() {
    run(|| async {
        // 128 MiB base, 256 KiB clusters: ~400 clusters; volumes of 1..4 MiB.
        malloc::create("lv_m_model", 262_144, 512, None).unwrap();
        let cs = 256 * 1024;
        let bpc = cs / 512;
        let mut s = lvol::create_lvstore("lv_m_model", "lvs_model", Some(cs), ClearMethod::None)
            .await
            .unwrap();
        let mut rng = Rng(0x1234_5678_9abc_def1);
        let mut vols: Vec<ModelVol> = Vec::new();
        let mut next_tag = 1u32;
        let mut names = 0;
        // how often each kind of operation ran: [write, zero, snapshot, clone, detach,
        // resize, delete, reload, nospace]
        let mut seen = [0u32; 9];
        for step in 0..400 {
            let op = rng.below(100);
            let writable: Vec<usize> = (0..vols.len()).filter(|&i| !vols[i].snapshot).collect();
            if vols.len() < 2 || (op < 5 && vols.len() < 8) {
                names += 1;
                let mib = 1 + rng.below(4);
                let thin = rng.below(3) != 0;
                let name = format!("m{names}");
                let v = lvol::create_volume(&s, &name, mib * MIB, thin)
                    .await
                    .unwrap();
                vols.push(ModelVol {
                    name,
                    uuid: v.uuid.to_string(),
                    blocks: vec![0; (mib * MIB / 512) as usize],
                    snapshot: false,
                    parent: None,
                });
            } else if op < 50 && !writable.is_empty() {
                let v = &mut vols[writable[rng.below(writable.len() as u64) as usize]];
                let n = v.blocks.len() as u64;
                let lba = rng.below(n);
                let len = (1 + rng.below(256)).min(n - lba);
                let tags: Vec<u32> = (0..len).map(|i| next_tag + i as u32).collect();
                next_tag += len as u32;
                let data: Vec<u8> = tags.iter().flat_map(|&t| block_bytes(t)).collect();
                let (_d, ch) = open_rw(&v.uuid);
                let st = write(&ch, lba, &data).await;
                match st {
                    IoStatus::Success => {
                        seen[0] += 1;
                        v.blocks[lba as usize..(lba + len) as usize].copy_from_slice(&tags)
                    }
                    IoStatus::NoSpace => seen[8] += 1,
                    other => panic!("step {step}: write failed: {other:?}"),
                }
            } else if op < 60 && !writable.is_empty() {
                let v = &mut vols[writable[rng.below(writable.len() as u64) as usize]];
                let n = v.blocks.len() as u64;
                // often whole clusters, sometimes partial
                let (lba, len) = if rng.below(2) == 0 {
                    let c = rng.below(n / bpc);
                    (c * bpc, bpc * (1 + rng.below(2)).min(n / bpc - c))
                } else {
                    let l = rng.below(n);
                    (l, (1 + rng.below(600)).min(n - l))
                };
                let (_d, ch) = open_rw(&v.uuid);
                let st = if rng.below(2) == 0 {
                    unmap(&ch, lba, len).await
                } else {
                    one(|cb, ctx| ch.write_zeroes(lba, len, cb, ctx))
                        .await
                        .unwrap()
                };
                match st {
                    IoStatus::Success => {
                        seen[1] += 1;
                        v.blocks[lba as usize..(lba + len) as usize].fill(0)
                    }
                    IoStatus::NoSpace => {}
                    other => panic!("step {step}: zeroing failed: {other:?}"),
                }
            } else if op < 75 && !vols.is_empty() {
                let i = rng.below(vols.len() as u64) as usize;
                verify(&vols[i], &mut rng, false).await;
            } else if op < 79 && !writable.is_empty() && vols.len() < 10 {
                let i = writable[rng.below(writable.len() as u64) as usize];
                names += 1;
                let name = format!("s{names}");
                let v = lvol::find_volume(&vols[i].uuid).unwrap();
                let snap = lvol::snapshot_volume(&v, &name).await.unwrap();
                let m = ModelVol {
                    name,
                    uuid: snap.uuid.to_string(),
                    blocks: vols[i].blocks.clone(),
                    snapshot: true,
                    parent: vols[i].parent.clone(),
                };
                vols[i].parent = Some(m.uuid.clone());
                vols.push(m);
                seen[2] += 1;
            } else if op < 83 && vols.len() < 10 {
                let snaps: Vec<usize> = (0..vols.len()).filter(|&i| vols[i].snapshot).collect();
                if snaps.is_empty() {
                    continue;
                }
                let i = snaps[rng.below(snaps.len() as u64) as usize];
                names += 1;
                let name = format!("c{names}");
                let sv = lvol::find_volume(&vols[i].uuid).unwrap();
                let c = lvol::clone_volume(&sv, &name).await.unwrap();
                vols.push(ModelVol {
                    name,
                    uuid: c.uuid.to_string(),
                    blocks: vols[i].blocks.clone(),
                    snapshot: false,
                    parent: Some(vols[i].uuid.clone()),
                });
                seen[3] += 1;
            } else if op < 86 {
                let clones: Vec<usize> = (0..vols.len())
                    .filter(|&i| vols[i].parent.is_some())
                    .collect();
                if clones.is_empty() {
                    continue;
                }
                let i = clones[rng.below(clones.len() as u64) as usize];
                let v = lvol::find_volume(&vols[i].uuid).unwrap();
                let all = rng.below(2) == 0;
                match lvol::detach_parent(&v, all).await {
                    Ok(()) => {
                        seen[4] += 1;
                        vols[i].parent = None
                    }
                    Err(e) => assert!(e.errno() == -libc::ENOSPC, "detach: {e}"),
                }
            } else if op < 90 && !writable.is_empty() {
                let i = writable[rng.below(writable.len() as u64) as usize];
                let mib = 1 + rng.below(4);
                let v = lvol::find_volume(&vols[i].uuid).unwrap();
                match lvol::resize_volume(&v, mib * MIB).await {
                    Ok(()) => {
                        seen[5] += 1;
                        vols[i].blocks.resize((mib * MIB / 512) as usize, 0)
                    }
                    Err(e) => assert!(e.errno() == -libc::ENOSPC, "resize: {e}"),
                }
            } else if op < 93 && !vols.is_empty() {
                let i = rng.below(vols.len() as u64) as usize;
                let u = vols[i].uuid.clone();
                if vols.iter().any(|c| c.parent.as_deref() == Some(u.as_str())) {
                    continue;
                }
                let v = lvol::find_volume(&u).unwrap();
                lvol::delete_volume(&v).await.unwrap();
                vols.remove(i);
                seen[6] += 1;
            } else {
                // reload: unload the store and load it again from disk
                seen[7] += 1;
                lvol::unload_lvstore(&s).await;
                assert!(keel_bdev::get_bdev(&format!("lvs_model/{}", vols[0].name)).is_none());
                s = lvol::load_lvstore("lv_m_model")
                    .await
                    .unwrap()
                    .expect("store found");
                for v in &vols {
                    let lv = lvol::find_volume(&v.uuid).unwrap();
                    assert_eq!(lv.info().snapshot, v.snapshot, "{}", v.name);
                    assert_eq!(lv.info().parent.map(|p| p.to_string()), v.parent);
                    verify(v, &mut rng, true).await;
                }
                assert_eq!(
                    lvol::lvstores()
                        .iter()
                        .filter(|x| x.name() == "lvs_model")
                        .count(),
                    1
                );
            }
        }
        for v in &vols {
            verify(v, &mut rng, true).await;
        }
        assert!(
            seen[..8].iter().all(|&n| n > 0),
            "every operation ran: {seen:?}"
        );
        // ownership is consistent: allocated clusters + free = total after a reload
        lvol::unload_lvstore(&s).await;
        let s = lvol::load_lvstore("lv_m_model").await.unwrap().unwrap();
        let owned: u64 = vols
            .iter()
            .map(|v| lvol::find_volume(&v.uuid).unwrap().info().allocated)
            .sum();
        assert_eq!(
            owned + s.free_clusters.load(std::sync::atomic::Ordering::Relaxed),
            s.total_clusters,
            "no cluster leaked or owned twice"
        );
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete("lv_m_model").await.unwrap();
    });
}

#[test]
fn torn_copies_are_tolerated_and_corrupt_stores_refused() {
    run(|| async {
        malloc::create("lv_m_corrupt", 32768, 512, None).unwrap();
        let s = lvol::create_lvstore("lv_m_corrupt", "lvs_corrupt", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "v", 4 * MIB, true).await.unwrap();
        let data = pattern(4096, 5);
        {
            let (_d, ch) = open_rw(&v.uuid.to_string());
            assert_eq!(write(&ch, 8, &data).await, IoStatus::Success);
        }
        lvol::unload_lvstore(&s).await;
        drop((s, v));
        let garbage = vec![0xa5u8; 4096];
        let (d, ch) = open_rw("lv_m_corrupt");
        // Pair 0 holds the volume descriptor, written once to slot 0: tear slot 1 only.
        assert_eq!(write(&ch, 3 * 8, &garbage).await, IoStatus::Success);
        drop((ch, d));
        let s = lvol::load_lvstore("lv_m_corrupt")
            .await
            .unwrap()
            .expect("loads");
        let v = lvol::find_volume("lvs_corrupt/v").unwrap();
        {
            let (_d, ch) = open_rw(&v.uuid.to_string());
            assert_eq!(read(&ch, 8, 8).await.1, data, "data intact");
        }
        lvol::unload_lvstore(&s).await;
        // Both copies bad: refused, and the error names the pair.
        let (d, ch) = open_rw("lv_m_corrupt");
        assert_eq!(write(&ch, 2 * 8, &garbage).await, IoStatus::Success);
        drop((ch, d));
        let e = lvol::load_lvstore("lv_m_corrupt").await.unwrap_err();
        assert!(
            e.to_string()
                .contains("metadata pair 0: both copies are invalid"),
            "{e}"
        );
        assert!(lvol::find_lvstore(None, Some("lvs_corrupt")).is_err());
        // Both superblocks bad: refused too.
        let (d, ch) = open_rw("lv_m_corrupt");
        assert_eq!(write(&ch, 0, &garbage).await, IoStatus::Success);
        let mut sb1 = garbage.clone();
        sb1[..8].copy_from_slice(b"KEELLVOL");
        assert_eq!(write(&ch, 8, &sb1).await, IoStatus::Success);
        drop((ch, d));
        let e = lvol::load_lvstore("lv_m_corrupt").await.unwrap_err();
        assert!(e.to_string().contains("both superblock copies"), "{e}");
        malloc::delete("lv_m_corrupt").await.unwrap();
    });
}

#[test]
fn first_writes_arriving_together_share_one_map_page_write() {
    run(|| async {
        malloc::create("lv_m_batch", 262_144, 512, None).unwrap();
        let s = lvol::create_lvstore("lv_m_batch", "lvs_batch", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "v", 100 * MIB, true).await.unwrap();
        let base = keel_bdev::get_bdev("lv_m_batch").unwrap();
        let before = base.io_stats().await;
        let (_d, ch) = open_rw(&v.uuid.to_string());
        let batch = Batch::new();
        let mut bufs = Vec::new();
        for c in 0..64u64 {
            let mut b = dma(512, c as u8 + 1);
            let vio = iov(&mut b);
            bufs.push(b);
            batch
                .submit(|cb, ctx| ch.write(&[vio], c * (MIB / 512), 1, cb, ctx))
                .unwrap();
        }
        assert!(batch.wait().await.iter().all(|&s| s == IoStatus::Success));
        let after = base.io_stats().await;
        let writes = after.num_write_ops - before.num_write_ops;
        // 64 data writes plus the map page(s): one transaction, one write per touched page
        assert!(
            (65..=66).contains(&writes),
            "{writes} base writes for 64 first writes in one batch"
        );
        assert_eq!(v.info().allocated, 64);
        drop((_d, ch, bufs));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete("lv_m_batch").await.unwrap();
    });
}
