//! raid write bandwidth/IOPS on one reactor, over malloc members (a write is a memcpy into the
//! member) and over null members (a write moves no data): raid5 full-stripe write bandwidth vs
//! raid0 on the same members (4 members with 32 KiB strips, 8 with 16 KiB: `full-NxSk`), and
//! 4 KiB random write IOPS of raid5 (partial stripe, RMW) vs raid1, and 4 KiB random read IOPS
//! of raid5 vs raid0. Rates are per CPU second
//! of the reactor thread (see `common::Load::run_for`). README.md explains the results.
//!
//! Run: `cargo bench -p keel-raid --bench raid [FILTER]` (cases whose name contains FILTER;
//! `KEEL_BENCH_SECS` sets the seconds per case, default 2). Bandwidth is host data per second.

mod common;

use common::{make, run_bench, secs, selected, Load};
use keel_bdev::modules::{malloc, null};
use keel_raid::RaidLevel;

const MEMBER_BLOCKS: u64 = 64 * 2048; // 64 MiB of 512-byte blocks
const QD: usize = 16;
const STRIP_KB: u32 = 32;

/// Median of `v` (not empty).
fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// raid0 and raid5 full-stripe sequential write bandwidth over the same `members` members of
/// `kind` (`make_member(name)` creates one): the two levels take turns on them in short
/// slices (the array is deleted and made again each time, a superblock-less create costs
/// nothing), so both see the same memory and the same machine (these VMs are shared and
/// noisy); prints the median bandwidth of each and the median of the per-round ratios.
async fn full_stripe(kind: &str, members: usize, strip_kb: u32, make_member: fn(&str), secs: f64) {
    let case = format!("{kind}/full-{members}x{strip_kb}k");
    if !selected(&case) {
        return;
    }
    let strip = strip_kb as usize * 1024;
    let set: Vec<String> = (0..members)
        .map(|i| {
            let n = format!("bf{i}");
            make_member(&n);
            n
        })
        .collect();
    let levels = [(RaidLevel::Raid0, members), (RaidLevel::Raid5, members - 1)];
    // One raid0 pass over every member first: malloc members fault their pages in on first
    // write.
    make("b_full", RaidLevel::Raid0, &set, Some(strip_kb)).await;
    let l = Load::new("b_full", members * strip, QD, false);
    l.run_ios(MEMBER_BLOCKS * 512 / strip as u64).await;
    drop(l);
    keel_raid::delete("b_full").await.expect("delete the raid");
    let rounds = 10;
    let slice = secs / rounds as f64 / 2.0;
    let (mut b0, mut b5, mut ratio) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..rounds {
        let mut bw = [0.0; 2];
        for (j, &(level, data)) in levels.iter().enumerate() {
            make("b_full", level, &set, Some(strip_kb)).await;
            let l = Load::new("b_full", data * strip, QD, false);
            // Settle first: what the other level left in caches and buffers is not counted.
            l.run_for(slice / 4.0).await;
            bw[j] = l.run_for(slice).await * (data * strip) as f64 / 1048576.0;
            drop(l);
            keel_raid::delete("b_full").await.expect("delete the raid");
        }
        b0.push(bw[0]);
        b5.push(bw[1]);
        ratio.push(bw[1] / bw[0]);
    }
    for m in &set {
        keel_bdev::unregister(m).await.expect("delete a member");
    }
    let (b0, b5, ratio) = (median(b0), median(b5), median(ratio));
    // raid5 writes members/(members-1) bytes to the members per host byte: where member
    // bandwidth is the limit, the ratio cannot pass (members-1)/members.
    let bound = (members - 1) as f64 / members as f64;
    println!(
        "{case:<18} raid0 {b0:7.0} MiB/s  raid5 {b5:7.0} MiB/s  raid5/raid0 {:.0}% (bound {:.1}%, \
         {:.0}% of it; median of {rounds} alternating rounds)",
        ratio * 100.0,
        bound * 100.0,
        ratio / bound * 100.0
    );
}

/// 4 KiB random read IOPS of raid5 (straight from the member holding the data when every
/// member is active) and raid0 over the same `members`.
async fn random_read_4k(kind: &str, members: &[String], secs: f64) {
    for (level, n) in [(RaidLevel::Raid5, "raid5"), (RaidLevel::Raid0, "raid0")] {
        let name = format!("{kind}/{n}-read-4k");
        if selected(&name) {
            make("b_rr", level, members, Some(STRIP_KB)).await;
            let load = Load::new("b_rr", 4096, QD, true);
            load.reads();
            let iops = load.run_for(secs).await;
            drop(load);
            keel_raid::delete("b_rr").await.expect("delete the raid");
            println!("{name:<22} 4 KiB random read: {iops:8.0} IOPS");
        }
    }
}

/// 4 KiB random write IOPS of raid5 (partial stripes) and raid1 over `members`.
async fn random_4k(kind: &str, members: &[String], secs: f64) {
    let r5_name = format!("{kind}/raid5-4k");
    let r1_name = format!("{kind}/raid1-4k");
    if selected(&r5_name) {
        make("b_r5", RaidLevel::Raid5, members, Some(STRIP_KB)).await;
        let iops = Load::new("b_r5", 4096, QD, true).run_for(secs).await;
        keel_raid::delete("b_r5").await.expect("delete the raid");
        println!("{r5_name:<17} 4 KiB random write (RMW):       {iops:8.0} IOPS");
    }
    if selected(&r1_name) {
        make("b_r1", RaidLevel::Raid1, &members[..2], None).await;
        let iops = Load::new("b_r1", 4096, QD, true).run_for(secs).await;
        keel_raid::delete("b_r1").await.expect("delete the raid");
        println!("{r1_name:<17} 4 KiB random write (2 mirrors): {iops:8.0} IOPS");
    }
}

fn malloc_member(name: &str) {
    malloc::create(name, MEMBER_BLOCKS, 512, None).expect("create a member");
}

fn null_member(name: &str) {
    null::create(name, MEMBER_BLOCKS, 512, None).expect("create a member");
}

fn main() {
    run_bench(|| async {
        let secs = secs(2.0);
        // raid5 writes n/(n-1) bytes to members per host byte: 4 members bound the ratio
        // at 75% where member bandwidth is the limit, 8 members at 87.5%.
        // 3 members, 64 KiB strips: 128 KiB full-stripe writes, the raid5f anchor (docs/ARCHITECTURE.md §8.4).
        full_stripe("malloc", 3, 2 * STRIP_KB, malloc_member, secs).await;
        full_stripe("malloc", 4, STRIP_KB, malloc_member, secs).await;
        full_stripe("malloc", 8, STRIP_KB / 2, malloc_member, secs).await;
        full_stripe("null", 4, STRIP_KB, null_member, secs).await;
        full_stripe("null", 8, STRIP_KB / 2, null_member, secs).await;
        let mallocs: Vec<String> = (0..4).map(|i| format!("bm{i}")).collect();
        for m in &mallocs {
            malloc_member(m);
        }
        let nulls: Vec<String> = (0..4).map(|i| format!("bn{i}")).collect();
        for m in &nulls {
            null_member(m);
        }
        random_4k("malloc", &mallocs, secs).await;
        random_4k("null", &nulls, secs).await;
        random_read_4k("malloc", &mallocs, secs).await;
        random_read_4k("null", &nulls, secs).await;
    });
}
