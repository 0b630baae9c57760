//! Zero heap allocations per I/O in steady state (docs/ARCHITECTURE.md §3.6) for the raid bdevs, shown with
//! a counting global allocator on a 1-core runtime: closed loops of 128 outstanding I/Os over
//! malloc members — random 4 KiB reads and writes (raid5: partial-stripe read-modify-write),
//! one in eight straddling a strip boundary, one in eight a full-stripe write, one in eight a
//! write of all strips of a stripe but one (raid5: reconstruct-write) — for raid0,
//! concat, raid1 and raid5; raid5 again with 512 outstanding (more than the channel's stripe
//! operations); raid1 and raid5 again with a failed member (raid5: degraded reads rebuilt from
//! parity, degraded writes). Warmed up, then every allocation of the reactor thread is
//! counted: reactor loop, bdev layer, raid, members, callbacks. Parity buffers come from the
//! reactor's DMA buffer pool, not the heap.

use keel_bdev::modules::malloc;
use keel_raid::{CreateConfig, RaidLevel};
use keel_testkit::closed_loop::{ClosedLoop, Op};
use keel_testkit::counting::{assert_none, count};
use keel_testkit::reactors::{on_core, start as runtime};
use std::time::Duration;

/// Counts the reactor thread's allocations (the test kit's counting allocator).
#[global_allocator]
static GLOBAL: keel_testkit::counting::Counting = keel_testkit::counting::Counting;

/// Outstanding I/Os.
const QD: usize = 128;
/// Outstanding I/Os filling the host channel (512 descriptors): far more stripe operations
/// than a channel has (128), so host I/Os wait for one.
const QD_MAX: usize = 512;
const BS: u32 = 512;
/// 4 KiB I/Os.
const IO_BLOCKS: u64 = 8;
const MEMBER_BLOCKS: u64 = 8192; // 4 MiB
const STRIP_KB: u32 = 4;
const WARMUP: u64 = 10_000;
const MEASURED: u64 = 50_000;
const LIMIT: Duration = Duration::from_secs(120);

/// The I/O mix of an array of `span` blocks whose stripes hold `stripe` data blocks in strips
/// of `strip` blocks.
#[derive(Clone, Copy)]
struct Mix {
    span: u64,
    strip: u64,
    stripe: u64,
}

impl Mix {
    /// Half reads, half writes: aligned 4 KiB; one in eight across a strip boundary; one in
    /// eight writes a whole stripe, one in eight all of a stripe but one strip (raid5: the
    /// read-modify-write of the 4 KiB writes, reconstruct-write with and without reads).
    fn op(self, r: u64) -> Op {
        let write = r & 1 == 1;
        let pick = r >> 8;
        let stripe_aligned = pick % (self.span / self.stripe) * self.stripe;
        match (r >> 1) % 8 {
            0 if write => Op {
                write,
                lba: stripe_aligned,
                blocks: self.stripe,
            },
            2 if write && self.stripe > self.strip => Op {
                write,
                lba: stripe_aligned,
                blocks: self.stripe - self.strip,
            },
            1 => Op {
                write,
                lba: (1 + pick % (self.span / self.strip - 1)) * self.strip - IO_BLOCKS / 2,
                blocks: IO_BLOCKS,
            },
            _ => Op {
                write,
                lba: pick % (self.span / IO_BLOCKS) * IO_BLOCKS,
                blocks: IO_BLOCKS,
            },
        }
    }
}

fn mallocs(prefix: &str, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            let name = format!("{prefix}{i}");
            malloc::create(&name, MEMBER_BLOCKS, BS, None).expect("malloc member");
            name
        })
        .collect()
}

/// Warm up, then count the reactor thread's allocations over the measured run of `qd`
/// outstanding I/Os on `name` (`state`: how the array is, for the messages).
async fn steady_state(name: &str, state: &str, qd: usize, strip: u64, stripe: u64) {
    let desc = keel_bdev::open(name, true, |_| {}).expect("open array");
    let span = desc.bdev().info().num_blocks;
    let ch = desc.get_io_channel().expect("channel");
    let mix = Mix {
        span,
        strip,
        stripe,
    };
    let slot_bytes = (stripe.max(IO_BLOCKS) * u64::from(BS)) as usize;
    let lp = ClosedLoop::new(ch, qd, slot_bytes, Box::new(move |_, r| mix.op(r)));
    lp.run(WARMUP).await;
    let before = lp.submitted();
    let (_, c) = count(lp.run(MEASURED)).await;
    assert_eq!(lp.submitted() - before, MEASURED);
    let what = format!("{name} ({state}, qd {qd})");
    println!("{what}: {} allocations over {MEASURED} I/Os", c.allocations);
    assert_none(&what, &c);
    drop(lp);
    drop(desc);
}

async fn create(name: &str, level: RaidLevel, members: &[String], strip_kb: Option<u32>) {
    let cfg = CreateConfig {
        name: name.into(),
        level,
        base_bdevs: members.to_vec(),
        strip_size_kb: strip_kb,
        uuid: None,
        superblock: level == RaidLevel::Raid5,
    };
    keel_raid::create(&cfg).await.expect("create raid");
}

async fn destroy(name: &str, members: &[String]) {
    keel_raid::delete(name).await.expect("delete raid");
    for m in members {
        malloc::delete(m).await.expect("delete member");
    }
}

#[test]
fn steady_state_raid_io_allocates_nothing() {
    runtime("0x1", false);
    let strip = u64::from(STRIP_KB) * 1024 / u64::from(BS);
    on_core(0, LIMIT, move || async move {
        for (name, level, n, strip_kb) in [
            ("na_raid0", RaidLevel::Raid0, 3, Some(STRIP_KB)),
            ("na_concat", RaidLevel::Concat, 3, Some(STRIP_KB)),
            ("na_raid1", RaidLevel::Raid1, 2, None),
        ] {
            let members = mallocs(&format!("{name}_m"), n);
            create(name, level, &members, strip_kb).await;
            let data = if level == RaidLevel::Raid1 {
                1
            } else {
                n as u64
            };
            steady_state(name, "optimal", QD, strip, strip * data).await;
            if level == RaidLevel::Raid1 {
                // Degraded: every I/O goes to the surviving member.
                let a = keel_raid::bdev::find(name).expect("array");
                assert!(a.fail_member(0, "failed by the test"));
                assert_eq!(a.active_members(), 1, "degraded");
                steady_state(name, "degraded", QD, strip, strip).await;
            }
            destroy(name, &members).await;
        }

        // raid5 over 5 members: 4 data strips per stripe, so that a one-strip write reads
        // less with read-modify-write (old data and parity) than with reconstruct-write.
        let members = mallocs("na_raid5_m", 5);
        create("na_raid5", RaidLevel::Raid5, &members, Some(STRIP_KB)).await;
        steady_state("na_raid5", "optimal", QD, strip, 4 * strip).await;
        steady_state("na_raid5", "optimal", QD_MAX, strip, 4 * strip).await;
        // Degraded: reads of the failed member's strips are rebuilt from parity; writes
        // plan around it.
        let a = keel_raid::bdev::find("na_raid5").expect("array");
        assert!(a.fail_member(1, "failed by the test"));
        assert_eq!(a.active_members(), members.len() - 1, "degraded");
        assert!(!a.is_offline());
        steady_state("na_raid5", "degraded", QD, strip, 4 * strip).await;
        drop(a);
        destroy("na_raid5", &members).await;
    });
}
