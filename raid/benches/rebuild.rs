//! raid5 rebuild rate with and without host I/O, and the host I/O rate during rebuild, on one
//! reactor over malloc members.
//!
//! One member of a 4-member raid5 is removed and added back (a full rebuild of its data area);
//! each case is timed in CPU seconds of the reactor thread, which runs the rebuild, the load
//! and the members (one core: they share it):
//! - `idle`: rebuild alone;
//! - `load`: rebuild while a closed loop of random 4 KiB writes (QD 32, partial-stripe
//!   read-modify-writes) runs on the array; the load's IOPS during the rebuild beside its IOPS
//!   on the optimal and on the degraded array;
//! - `limited`: the same with `process_max_bandwidth_mb_sec` set.
//!
//! Run: `cargo bench -p keel-raid --bench rebuild [FILTER]` (`KEEL_BENCH_SECS`: seconds of each
//! reference load measurement, default 1).

mod common;

use common::{make, run_bench, secs, selected, sleep, thread_cpu_secs, Load};
use keel_bdev::modules::malloc;
use keel_raid::RaidLevel;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::Poll;
use std::time::Instant;

const MEMBER_BLOCKS: u64 = 256 * 2048; // 256 MiB of 512-byte blocks
const STRIP_KB: u32 = 64;
const QD: usize = 32;
const RAID: &str = "b_rb";
/// Rate limit of the `limited` case, MiB/s.
const LIMIT_MB: u64 = 500;

/// Remove `member` and add it back; wait for the rebuild (running `load` meanwhile if any).
/// Returns (rebuild MiB/s per reactor CPU second, rebuild MiB/s of wall time, load IOPS
/// during it per reactor CPU second).
async fn rebuild(member: &str, load: Option<&Rc<Load>>) -> (f64, f64, f64) {
    keel_raid::remove_base_bdev(member)
        .await
        .expect("remove a member");
    if let Some(l) = load {
        l.start();
    }
    let d0 = load.map_or(0, |l| l.done());
    let (t0, w0) = (thread_cpu_secs(), Instant::now());
    keel_raid::add_base_bdev(RAID, member)
        .await
        .expect("add the member back");
    let a = keel_raid::bdev::find(RAID).expect("the bench's raid exists");
    poll_fn(|cx| {
        if !a.is_rebuilding() && a.active_members() == a.members.len() {
            Poll::Ready(())
        } else {
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await;
    let (t, w) = (thread_cpu_secs() - t0, w0.elapsed().as_secs_f64());
    let ios = load.map_or(0, |l| l.done() - d0);
    if let Some(l) = load {
        l.stop().await;
    }
    let mb = MEMBER_BLOCKS as f64 * 512.0 / 1048576.0;
    (mb / t, mb / w, ios as f64 / t)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn main() {
    run_bench(|| async {
        let secs = secs(1.0);
        let members: Vec<String> = (0..4).map(|i| format!("brb{i}")).collect();
        for m in &members {
            malloc::create(m, MEMBER_BLOCKS, 512, None).expect("create a member");
        }
        make(RAID, RaidLevel::Raid5, &members, Some(STRIP_KB)).await;
        // Touch every page of every member once (malloc pages fault in on first write).
        let fill = Load::new(RAID, 3 * STRIP_KB as usize * 1024, 16, false);
        fill.run_ios(MEMBER_BLOCKS * 512 / (STRIP_KB as u64 * 1024))
            .await;
        drop(fill);
        let victim = &members[3];
        let runs = 3;
        if selected("idle") {
            let (mut cpu, mut wall) = (Vec::new(), Vec::new());
            for _ in 0..runs {
                let (c, w, _) = rebuild(victim, None).await;
                cpu.push(c);
                wall.push(w);
            }
            println!(
                "idle     rebuild {:7.0} MiB/s per CPU s, {:7.0} MiB/s wall, {} MiB member \
                 (median of {runs})",
                median(cpu),
                median(wall),
                MEMBER_BLOCKS / 2048,
            );
        }
        if selected("load") || selected("limited") {
            let load = Load::new(RAID, 4096, QD, true);
            let optimal = load.run_for(secs).await;
            keel_raid::remove_base_bdev(victim)
                .await
                .expect("remove a member");
            let degraded = load.run_for(secs).await;
            keel_raid::add_base_bdev(RAID, victim)
                .await
                .expect("add the member back");
            let a = keel_raid::bdev::find(RAID).expect("the bench's raid exists");
            while a.is_rebuilding() {
                sleep(0.01).await;
            }
            println!(
                "reference 4 KiB random writes QD {QD}: optimal {optimal:8.0} IOPS, degraded \
                 {degraded:8.0} IOPS"
            );
            for (case, limit) in [("load", 0), ("limited", LIMIT_MB)] {
                if !selected(case) {
                    continue;
                }
                keel_raid::rebuild::set_options(None, Some(limit)).expect("a valid rebuild limit");
                let (mut cpu, mut wall, mut iops) = (Vec::new(), Vec::new(), Vec::new());
                for _ in 0..runs {
                    let (c, w, i) = rebuild(victim, Some(&load)).await;
                    cpu.push(c);
                    wall.push(w);
                    iops.push(i);
                }
                keel_raid::rebuild::set_options(None, Some(0)).expect("no rebuild limit");
                let iops = median(iops);
                println!(
                    "{case:<8} rebuild {:7.0} MiB/s per CPU s, {:7.0} MiB/s wall{} while the load \
                     ran at {iops:8.0} IOPS ({:.0}% of optimal; median of {runs})",
                    median(cpu),
                    median(wall),
                    if limit > 0 {
                        format!(" (limit {limit} MiB/s)")
                    } else {
                        String::new()
                    },
                    iops / optimal * 100.0
                );
            }
        }
        keel_raid::delete(RAID).await.expect("delete the raid");
        for m in &members {
            malloc::delete(m).await.expect("delete a member");
        }
    });
}
