//! Per-core rate limits for `bdev_set_qos_limit`, enforced without a shared lock.
//!
//! A bdev's limits (per second, 0 = unlimited, as in SPDK) are split statically over the cores
//! of the runtime: each core's channel gets `limit / ncores` per second, handed out in 1 ms
//! timeslices by a timed poller on that core. The split is static: a core with no traffic leaves
//! its share unused rather than lending it to busy cores, so a workload running on one core of
//! two gets half the configured rate. This keeps enforcement free of cross-core traffic.
//!
//! Accounting follows SPDK: an I/O is admitted while every limit that applies to it has budget
//! left in the current timeslice (> 0), and then charged in full, so the budget may go negative
//! (a large I/O is never starved); the debt is paid from the next timeslices. Refills add one
//! timeslice's allowance and cap the budget at one timeslice, so an idle period builds no burst.
//! Budgets are kept in thousandths of an operation or byte so that limits smaller than one unit
//! per core per timeslice still work (e.g. 1000 IO/s over 2 cores = half an I/O per ms).
//!
//! Which limit applies to which I/O: `rw_ios_per_sec` to read, write, write_zeroes and unmap;
//! `rw_mbytes_per_sec` to the data of reads and writes; `r_`/`w_mbytes_per_sec` to reads /
//! writes only. Flush and reset are never held back.

use crate::{Bdev, IoType};
use std::time::Duration;

/// Length of one timeslice: how often each core's budget is refilled.
pub(crate) const TIMESLICE: Duration = Duration::from_millis(1);
/// Timeslices per second.
const SLICES_PER_SEC: i64 = 1000;
/// Budgets are kept in thousandths of a unit.
const SCALE: i64 = 1000;

/// A bdev's configured limits (per second over all cores; 0 = unlimited).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct QosLimits {
    /// Read + write + write_zeroes + unmap operations per second.
    pub rw_ios_per_sec: u64,
    /// Read + write data, MiB per second.
    pub rw_mbytes_per_sec: u64,
    /// Read data, MiB per second.
    pub r_mbytes_per_sec: u64,
    /// Write data, MiB per second.
    pub w_mbytes_per_sec: u64,
}

impl QosLimits {
    /// Whether any limit is set.
    pub fn any(&self) -> bool {
        self.as_array().iter().any(|&l| l != 0)
    }
    fn as_array(&self) -> [u64; 4] {
        [
            self.rw_ios_per_sec,
            self.rw_mbytes_per_sec,
            self.r_mbytes_per_sec,
            self.w_mbytes_per_sec,
        ]
    }
}

const IOPS: usize = 0;
const RW_BPS: usize = 1;
const R_BPS: usize = 2;
const W_BPS: usize = 3;

/// One core's token buckets for one bdev.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct QosBucket {
    /// Budget added per timeslice (scaled), 0 = that limit is off.
    allowance: [i64; 4],
    /// Budget left in the current timeslice (scaled; may be negative).
    remaining: [i64; 4],
}

impl QosBucket {
    /// Buckets for this core's share of `limits` when spread over `ncores` cores, or `None` when
    /// no limit is set. Each bucket starts full.
    pub fn new(limits: &QosLimits, ncores: usize) -> Option<QosBucket> {
        if !limits.any() {
            return None;
        }
        let ncores = i64::try_from(ncores.max(1)).unwrap_or(i64::MAX);
        let per_sec = [
            limits.rw_ios_per_sec,
            limits.rw_mbytes_per_sec.saturating_mul(1 << 20),
            limits.r_mbytes_per_sec.saturating_mul(1 << 20),
            limits.w_mbytes_per_sec.saturating_mul(1 << 20),
        ];
        // allowance per slice, scaled = per_sec / SLICES_PER_SEC * SCALE / ncores; since
        // SCALE == SLICES_PER_SEC this is per_sec / ncores, at least 1 when the limit is on.
        let allowance = per_sec.map(|l| {
            if l == 0 {
                0
            } else {
                let l = i64::try_from(l).unwrap_or(i64::MAX);
                (l.saturating_mul(SCALE) / SLICES_PER_SEC / ncores).max(1)
            }
        });
        Some(QosBucket {
            allowance,
            remaining: allowance,
        })
    }

    /// Try to admit an I/O of `io_type` carrying `bytes` of data: true (and charged) if every
    /// limit that applies has budget left.
    pub fn try_admit(&mut self, io_type: IoType, bytes: u64) -> bool {
        let costs = Self::costs(io_type, bytes);
        let applies = |i: usize| self.allowance[i] != 0 && costs[i] != 0;
        if (0..4).any(|i| applies(i) && self.remaining[i] <= 0) {
            return false;
        }
        for (i, cost) in costs.iter().enumerate() {
            if self.allowance[i] != 0 {
                self.remaining[i] = self.remaining[i].saturating_sub(*cost);
            }
        }
        true
    }

    /// Start a new timeslice.
    pub fn refill(&mut self) {
        for i in 0..4 {
            self.remaining[i] = self.remaining[i]
                .saturating_add(self.allowance[i])
                .min(self.allowance[i]);
        }
    }

    /// Scaled cost of an I/O against each limit (0 where the limit does not apply).
    fn costs(io_type: IoType, bytes: u64) -> [i64; 4] {
        let data = i64::try_from(bytes)
            .unwrap_or(i64::MAX)
            .saturating_mul(SCALE);
        let mut c = [0i64; 4];
        match io_type {
            IoType::Read => {
                c[IOPS] = SCALE;
                c[RW_BPS] = data;
                c[R_BPS] = data;
            }
            IoType::Write => {
                c[IOPS] = SCALE;
                c[RW_BPS] = data;
                c[W_BPS] = data;
            }
            IoType::WriteZeroes | IoType::Unmap => c[IOPS] = SCALE,
            IoType::Flush | IoType::Reset => {}
        }
        c
    }
}

/// Whether an I/O of this type is subject to QoS at all.
#[inline]
pub(crate) fn is_limited(io_type: IoType) -> bool {
    !matches!(io_type, IoType::Flush | IoType::Reset)
}

/// Set `bdev`'s limits and spread them to every core's channel (by message). Cores that have
/// no channel yet pick the limits up when they create one.
pub(crate) fn set_limits(bdev: &Bdev, limits: QosLimits) {
    bdev.store_qos_limits(limits);
    log::info!("bdev {}: QoS limits set to {limits:?}", bdev.name());
    let cores = keel_reactor::cores();
    if cores.is_empty() {
        crate::io_path::apply_qos_here(bdev);
        return;
    }
    for core in cores {
        let b = bdev.clone();
        if let Err(e) = keel_reactor::send_to(core, move || crate::io_path::apply_qos_here(&b)) {
            log::warn!(
                "bdev {}: cannot update QoS on core {core}: {e}",
                bdev.name()
            );
        }
    }
}

/// Number of cores the limits are split over.
pub(crate) fn ncores() -> usize {
    keel_reactor::cores().len().max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(iops: u64, rw: u64, r: u64, w: u64) -> QosLimits {
        QosLimits {
            rw_ios_per_sec: iops,
            rw_mbytes_per_sec: rw,
            r_mbytes_per_sec: r,
            w_mbytes_per_sec: w,
        }
    }

    fn admitted_in_one_slice(b: &mut QosBucket, t: IoType, bytes: u64) -> u64 {
        let mut n = 0;
        while b.try_admit(t, bytes) {
            n += 1;
            assert!(n < 1_000_000, "bucket never runs dry");
        }
        n
    }

    #[test]
    fn no_limit_means_no_bucket() {
        assert!(QosBucket::new(&QosLimits::default(), 1).is_none());
        assert!(!QosLimits::default().any());
    }

    #[test]
    fn iops_limit_admits_share_per_slice() {
        let mut b = QosBucket::new(&limits(10_000, 0, 0, 0), 1).unwrap();
        assert_eq!(admitted_in_one_slice(&mut b, IoType::Read, 4096), 10);
        b.refill();
        assert_eq!(admitted_in_one_slice(&mut b, IoType::Write, 4096), 10);
        // split over two cores: 5 per core per slice
        let mut b = QosBucket::new(&limits(10_000, 0, 0, 0), 2).unwrap();
        assert_eq!(admitted_in_one_slice(&mut b, IoType::Unmap, 0), 5);
    }

    #[test]
    fn fractional_share_spreads_over_slices() {
        // 1000 IO/s over 2 cores = one I/O every 2 ms per core.
        let mut b = QosBucket::new(&limits(1000, 0, 0, 0), 2).unwrap();
        let mut total = 0;
        for _ in 0..100 {
            total += admitted_in_one_slice(&mut b, IoType::Read, 512);
            b.refill();
        }
        assert_eq!(total, 50);
    }

    #[test]
    fn byte_limits_apply_by_direction() {
        // 1 MiB/s of writes: ~1048 bytes per ms; a 4 KiB write goes negative and waits ~3 slices.
        let mut b = QosBucket::new(&limits(0, 0, 0, 1), 1).unwrap();
        assert!(b.try_admit(IoType::Write, 4096));
        assert!(!b.try_admit(IoType::Write, 4096));
        // reads are not limited by a write limit
        assert!(b.try_admit(IoType::Read, 4096));
        let mut slices = 0;
        while !b.try_admit(IoType::Write, 4096) {
            b.refill();
            slices += 1;
        }
        // debt after the first write: 4096 - 1048.576 bytes; each refill pays 1048.576
        let debt = 4096 * SCALE - (1 << 20);
        assert_eq!(
            slices,
            debt / (1 << 20) + 1,
            "refills until the budget is positive again"
        );
    }

    #[test]
    fn refill_caps_at_one_slice() {
        let mut b = QosBucket::new(&limits(10_000, 0, 0, 0), 1).unwrap();
        for _ in 0..50 {
            b.refill();
        }
        assert_eq!(admitted_in_one_slice(&mut b, IoType::Read, 0), 10);
    }

    #[test]
    fn flush_and_reset_pass() {
        let mut b = QosBucket::new(&limits(1000, 1, 1, 1), 1).unwrap();
        admitted_in_one_slice(&mut b, IoType::Read, 4096);
        assert!(b.try_admit(IoType::Flush, 0));
        assert!(b.try_admit(IoType::Reset, 0));
        assert!(!is_limited(IoType::Flush));
        assert!(is_limited(IoType::WriteZeroes));
    }

    #[test]
    fn huge_limits_do_not_overflow() {
        let mut b = QosBucket::new(&limits(u64::MAX, u64::MAX, u64::MAX, u64::MAX), 3).unwrap();
        assert!(b.try_admit(IoType::Write, u64::MAX));
        b.refill();
    }
}
