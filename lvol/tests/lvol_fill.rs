//! How new clusters are prepared: zero-filled in bounded chunks (so an allocation never holds
//! the core for a whole cluster), skipped for clusters known to read zeroes (a store cleared by
//! unmap, a cluster unmapped on the base when freed), and never skipped after a reload.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_bdev::modules::malloc;
use keel_bdev::{IoChannel, IoStats, IoStatus};
use keel_lvol::{self as lvol, ClearMethod};
use keel_testkit::prelude::*;
use std::sync::atomic::Ordering;

const MIB: u64 = 1 << 20;
const BPC: u64 = MIB / 512;
/// Chunks per 1 MiB cluster (`fill.rs`: 128 KiB chunks).
const CHUNKS: u64 = 8;
/// 8 MiB of 512-byte blocks: 1 MiB of metadata, then 7 clusters of 1 MiB.
const BASE_BLOCKS: u64 = 16384;

async fn write(ch: &IoChannel, lba: u64, data: &[u8]) -> IoStatus {
    let mut b = dma(data.len(), 0);
    b.as_mut_slice().copy_from_slice(data);
    one(|cb, ctx| ch.write(&[iov(&mut b)], lba, data.len() as u64 / 512, cb, ctx))
        .await
        .expect("submit write")
}

/// Whether the whole cluster `lc` of the volume reads `first` in its first block and zeroes in
/// every other.
async fn cluster_is(ch: &IoChannel, lc: u64, first: &[u8]) -> bool {
    let mut ok = true;
    for part in 0..8 {
        let mut b = dma(128 * 1024, 0xee);
        let s = one(|cb, ctx| ch.read(&[iov(&mut b)], lc * BPC + part * 256, 256, cb, ctx))
            .await
            .expect("submit read");
        assert_eq!(s, IoStatus::Success);
        let bytes = b.as_slice();
        let (head, rest) = if part == 0 {
            bytes.split_at(512)
        } else {
            bytes.split_at(0)
        };
        ok &= part != 0 || head == first;
        ok &= rest.iter().all(|&x| x == 0);
    }
    ok
}

/// A malloc base full of garbage (so a cluster that was not zeroed shows it).
async fn dirty_base(name: &str) {
    malloc::create(name, BASE_BLOCKS, 512, None).unwrap();
    let (_d, ch) = open_rw(name);
    let junk = vec![0xa5u8; 128 * 1024];
    for lba in (0..BASE_BLOCKS).step_by(256) {
        assert_eq!(write(&ch, lba, &junk).await, IoStatus::Success);
    }
}

async fn stats(base: &str) -> IoStats {
    keel_bdev::get_bdev(base).unwrap().io_stats().await
}

/// Base WriteZeroes and Unmap operations that `f` caused.
async fn counting<F: std::future::Future<Output = ()>>(base: &str, f: F) -> (u64, u64) {
    let before = stats(base).await;
    f.await;
    let after = stats(base).await;
    (
        after.num_write_zeroes_ops - before.num_write_zeroes_ops,
        after.num_unmap_ops - before.num_unmap_ops,
    )
}

/// Wait until the store has `n` free clusters (freed clusters return after I/O drained).
async fn free_becomes(s: &lvol::Lvstore, n: u64) {
    for _ in 0..100_000 {
        if s.free_clusters.load(Ordering::Relaxed) == n {
            return;
        }
        yield_iterations(1).await;
    }
    panic!(
        "free clusters stuck at {}",
        s.free_clusters.load(Ordering::Relaxed)
    );
}

#[test]
fn dirty_clusters_are_zeroed_in_chunks_and_unmapped_ones_are_reused_without_a_fill() {
    run(|| async {
        let base = "lv_fill_dirty";
        dirty_base(base).await;
        let mut s = lvol::create_lvstore(base, "lvs_fill_dirty", Some(MIB), ClearMethod::None)
            .await
            .unwrap();
        assert_eq!(s.total_clusters, 7);
        let v = lvol::create_volume(&s, "v", 7 * MIB, true).await.unwrap();
        let name = v.uuid.to_string();
        let (d, ch) = open_rw(&name);
        let blk = pattern(512, 1);
        // first touch of a dirty cluster: zero-filled in 128 KiB chunks
        let (wz, un) = counting(base, async {
            assert_eq!(write(&ch, 0, &blk).await, IoStatus::Success);
        })
        .await;
        assert_eq!((wz, un), (CHUNKS, 0));
        assert!(
            cluster_is(&ch, 0, &blk).await,
            "the rest of the cluster is zeroed"
        );
        for lc in 1..7 {
            assert_eq!(write(&ch, lc * BPC, &blk).await, IoStatus::Success);
        }
        assert_eq!(s.free_clusters.load(Ordering::Relaxed), 0);

        // unmapping a whole cluster frees it, and the unmap reaches the base
        let (wz, un) = counting(base, async {
            let st = one(|cb, ctx| ch.unmap(3 * BPC, BPC, cb, ctx))
                .await
                .unwrap();
            assert_eq!(st, IoStatus::Success);
            free_becomes(&s, 1).await;
        })
        .await;
        assert_eq!((wz, un), (0, CHUNKS));
        // the only free cluster is that one: known to read zeroes, it needs no fill
        let (wz, _) = counting(base, async {
            assert_eq!(write(&ch, 3 * BPC, &blk).await, IoStatus::Success);
        })
        .await;
        assert_eq!(wz, 0, "no zero-fill of an unmapped cluster");
        assert!(cluster_is(&ch, 3, &blk).await);

        // after a reload nothing is known to read zeroes: a freed cluster is filled again
        let st = one(|cb, ctx| ch.unmap(5 * BPC, BPC, cb, ctx))
            .await
            .unwrap();
        assert_eq!(st, IoStatus::Success);
        free_becomes(&s, 1).await;
        drop((ch, d));
        lvol::unload_lvstore(&s).await;
        s = lvol::load_lvstore(base).await.unwrap().unwrap();
        let (d, ch) = open_rw(&name);
        let (wz, _) = counting(base, async {
            assert_eq!(write(&ch, 5 * BPC, &blk).await, IoStatus::Success);
        })
        .await;
        assert_eq!(wz, CHUNKS, "zero-filled after the reload");
        assert!(cluster_is(&ch, 5, &blk).await);
        drop((ch, d));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete(base).await.unwrap();
    });
}

#[test]
fn a_store_cleared_by_unmap_skips_the_zero_fill_until_it_is_reloaded() {
    run(|| async {
        let base = "lv_fill_clean";
        dirty_base(base).await;
        let s = lvol::create_lvstore(base, "lvs_fill_clean", Some(MIB), ClearMethod::Unmap)
            .await
            .unwrap();
        let v = lvol::create_volume(&s, "v", 7 * MIB, true).await.unwrap();
        let thick = lvol::create_volume(&s, "t", MIB, false);
        let (wz, _) = counting(base, async {
            thick.await.unwrap();
        })
        .await;
        assert_eq!(wz, 0, "a thick volume on a cleared store needs no fill");
        let name = v.uuid.to_string();
        let (d, ch) = open_rw(&name);
        let blk = pattern(512, 2);
        let (wz, _) = counting(base, async {
            assert_eq!(write(&ch, 0, &blk).await, IoStatus::Success);
            assert_eq!(write(&ch, BPC, &blk).await, IoStatus::Success);
        })
        .await;
        assert_eq!(wz, 0, "first touches of a cleared store need no fill");
        assert!(cluster_is(&ch, 0, &blk).await);
        assert!(cluster_is(&ch, 1, &blk).await);
        drop((ch, d));
        lvol::unload_lvstore(&s).await;
        let s = lvol::load_lvstore(base).await.unwrap().unwrap();
        let (d, ch) = open_rw(&name);
        let (wz, _) = counting(base, async {
            assert_eq!(write(&ch, 2 * BPC, &blk).await, IoStatus::Success);
        })
        .await;
        assert_eq!(
            wz, CHUNKS,
            "after a reload the store is no longer known clean"
        );
        assert!(cluster_is(&ch, 2, &blk).await);
        drop((ch, d));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete(base).await.unwrap();
    });
}
