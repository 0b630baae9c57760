//! Zero heap allocations per I/O in steady state (docs/ARCHITECTURE.md §3.6) for logical volumes, shown with
//! a counting global allocator on a 1-core runtime: closed loops of 128 outstanding random
//! 4 KiB reads and writes (one in eight straddling a cluster boundary, so split into two base
//! I/Os) on a thin volume whose clusters were all allocated first (again with 512 outstanding,
//! more than the base channel's descriptors, so I/Os wait for one) and on a thick volume; reads
//! of a clone whose clusters all fall through to its snapshot; reads of a thin volume with
//! nothing allocated (zero-filled without base I/O). Every allocation of the reactor thread
//! during the counted runs is counted: reactor loop, bdev layer, lvol, malloc, callbacks.

use keel_bdev::modules::malloc;
use keel_lvol::{self as lvol, ClearMethod};
use keel_testkit::closed_loop::{ClosedLoop, Op};
use keel_testkit::counting::{assert_none, count};
use keel_testkit::reactors::{on_core, start as runtime};
use std::time::Duration;

/// Counts the reactor thread's allocations (the test kit's counting allocator).
#[global_allocator]
static GLOBAL: keel_testkit::counting::Counting = keel_testkit::counting::Counting;

/// Outstanding I/Os.
const QD: usize = 128;
/// Outstanding I/Os filling the host channel (512 descriptors): with the split I/Os, more
/// children than the base channel's 512 descriptors (the rest wait in the volume's channel).
const QD_MAX: usize = 512;
const BS: u64 = 512;
/// 4 KiB I/Os.
const IO_BLOCKS: u64 = 8;
const CLUSTER: u64 = 64 << 10;
const BPC: u64 = CLUSTER / BS;
const VOL_BYTES: u64 = 8 << 20;
const SPAN: u64 = VOL_BYTES / BS;
const WARMUP: u64 = 10_000;
const MEASURED: u64 = 50_000;
const LIMIT: Duration = Duration::from_secs(120);

/// A random 4 KiB I/O: aligned inside a cluster, or (one in eight) straddling the boundary
/// between two clusters. `writes`: half are writes, else all reads.
fn random_op(r: u64, writes: bool) -> Op {
    let write = writes && r & 1 == 1;
    let lba = if (r >> 1).is_multiple_of(8) {
        let c = 1 + (r >> 8) % (SPAN / BPC - 1);
        c * BPC - IO_BLOCKS / 2
    } else {
        (r >> 8) % (SPAN / IO_BLOCKS) * IO_BLOCKS
    };
    Op {
        write,
        lba,
        blocks: IO_BLOCKS,
    }
}

/// Open `name`, optionally write it whole once (allocating every cluster: the control path),
/// warm up, then count the reactor thread's allocations over the measured run of `qd`
/// outstanding I/Os.
async fn steady_state(name: &str, qd: usize, fill: bool, writes: bool) {
    let desc = keel_bdev::open(name, true, |_| {}).expect("open volume");
    assert_eq!(desc.bdev().info().num_blocks, SPAN);
    let ch = desc.get_io_channel().expect("channel");
    let mut lp: ClosedLoop = ClosedLoop::new(
        ch,
        qd,
        (IO_BLOCKS * BS) as usize,
        Box::new(|seq, _| Op {
            write: true,
            lba: seq * IO_BLOCKS % SPAN,
            blocks: IO_BLOCKS,
        }),
    );
    if fill {
        lp.run(SPAN / IO_BLOCKS).await;
    }
    lp.set_chooser(Box::new(move |_, r| random_op(r, writes)));
    lp.run(WARMUP).await;
    let before = lp.submitted();
    let (_, c) = count(lp.run(MEASURED)).await;
    assert_eq!(lp.submitted() - before, MEASURED);
    println!(
        "{name} (qd {qd}): {} allocations over {MEASURED} I/Os",
        c.allocations
    );
    assert_none(&format!("{name} (qd {qd})"), &c);
    drop(lp);
    drop(desc);
}

#[test]
fn steady_state_volume_io_allocates_nothing() {
    runtime("0x1", false);
    on_core(0, LIMIT, || async {
        malloc::create("lna_base", 65536, BS as u32, None).unwrap(); // 32 MiB
        let s = lvol::create_lvstore("lna_base", "lna_lvs", Some(CLUSTER), ClearMethod::None)
            .await
            .unwrap();
        let thin = lvol::create_volume(&s, "thin", VOL_BYTES, true)
            .await
            .unwrap();
        let thick = lvol::create_volume(&s, "thick", VOL_BYTES, false)
            .await
            .unwrap();
        let empty = lvol::create_volume(&s, "empty", VOL_BYTES, true)
            .await
            .unwrap();
        let free = s.free_clusters.load(std::sync::atomic::Ordering::Relaxed);
        steady_state("lna_lvs/thin", QD, true, true).await;
        assert_eq!(
            s.free_clusters.load(std::sync::atomic::Ordering::Relaxed),
            free - SPAN / BPC,
            "the fill allocated every cluster of the thin volume"
        );
        steady_state("lna_lvs/thin", QD_MAX, false, true).await;
        steady_state("lna_lvs/thick", QD, false, true).await;
        // The thin volume's clusters move to the snapshot; the clone owns none of them.
        let snap = lvol::snapshot_volume(&thin, "snap").await.unwrap();
        let clone = lvol::clone_volume(&snap, "clone").await.unwrap();
        steady_state("lna_lvs/clone", QD, false, false).await;
        steady_state("lna_lvs/empty", QD, false, false).await;
        assert_eq!(
            s.free_clusters.load(std::sync::atomic::Ordering::Relaxed),
            free - SPAN / BPC,
            "reads allocated no cluster"
        );
        drop((thin, thick, empty, snap, clone));
        lvol::destroy_lvstore(&s).await.unwrap();
        malloc::delete("lna_base").await.unwrap();
    });
}
