//! Measurements: per-direction latency histograms and counters of one job ([`JobStats`],
//! pre-allocated, recording never allocates), their merge across jobs, the tick → ns
//! conversion, and the lock-free per-core counters the live progress line reads
//! ([`LiveCounters`]).

use hdrhistogram::Histogram;
use std::sync::atomic::{AtomicU64, Ordering};

/// Highest latency the histograms resolve (larger values are clamped): 100 s.
pub const MAX_LATENCY_NS: u64 = 100_000_000_000;
/// Significant decimal digits of the histograms (0.1% resolution).
const SIGFIG: u8 = 3;

/// Converts [`keel_reactor::ticks`] differences to nanoseconds with one multiplication.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TickConverter {
    /// Nanoseconds per tick in 32.32 fixed point.
    mult: u64,
}

impl TickConverter {
    /// For a clock of `tick_rate` ticks per second.
    pub fn new(tick_rate: u64) -> TickConverter {
        let mult = (1_000_000_000u128 << 32) / u128::from(tick_rate.max(1));
        TickConverter {
            mult: u64::try_from(mult).unwrap_or(u64::MAX),
        }
    }
    /// `ticks` as nanoseconds.
    #[inline]
    pub fn ns(&self, ticks: u64) -> u64 {
        u64::try_from((u128::from(ticks) * u128::from(self.mult)) >> 32).unwrap_or(u64::MAX)
    }
}

/// Counters and latency distribution of one direction (read or write).
#[derive(Debug, Clone)]
pub struct DirStats {
    /// Completed I/Os (successful or not).
    pub ios: u64,
    /// Bytes moved by successful I/Os.
    pub bytes: u64,
    /// Exact smallest latency, ns (`u64::MAX` when no I/O).
    pub lat_min_ns: u64,
    /// Exact largest latency, ns.
    pub lat_max_ns: u64,
    /// Sum of latencies, ns (for the exact mean).
    pub lat_sum_ns: u64,
    /// Latency distribution, ns.
    pub hist: Histogram<u64>,
}

impl DirStats {
    /// Empty stats with the histogram allocated up front.
    pub fn new() -> DirStats {
        DirStats {
            ios: 0,
            bytes: 0,
            lat_min_ns: u64::MAX,
            lat_max_ns: 0,
            lat_sum_ns: 0,
            hist: Histogram::new_with_bounds(1, MAX_LATENCY_NS, SIGFIG)
                .expect("static histogram bounds are valid"),
        }
    }

    /// Record one I/O of `bytes` that took `ns` (no allocation).
    #[inline]
    pub fn record(&mut self, ns: u64, bytes: u64) {
        self.ios += 1;
        self.bytes += bytes;
        self.lat_min_ns = self.lat_min_ns.min(ns);
        self.lat_max_ns = self.lat_max_ns.max(ns);
        self.lat_sum_ns = self.lat_sum_ns.saturating_add(ns);
        self.hist.saturating_record(ns);
    }

    /// Forget everything (end of the ramp); keeps the histogram's memory.
    pub fn reset(&mut self) {
        self.ios = 0;
        self.bytes = 0;
        self.lat_min_ns = u64::MAX;
        self.lat_max_ns = 0;
        self.lat_sum_ns = 0;
        self.hist.reset();
    }

    /// Add `other` into `self`.
    pub fn merge(&mut self, other: &DirStats) {
        self.ios += other.ios;
        self.bytes += other.bytes;
        self.lat_min_ns = self.lat_min_ns.min(other.lat_min_ns);
        self.lat_max_ns = self.lat_max_ns.max(other.lat_max_ns);
        self.lat_sum_ns = self.lat_sum_ns.saturating_add(other.lat_sum_ns);
        // Same bounds on both sides: adding cannot fail.
        self.hist
            .add(&other.hist)
            .expect("histograms share their bounds");
    }

    /// Mean latency, ns (0 without I/O).
    pub fn mean_ns(&self) -> f64 {
        if self.ios == 0 {
            0.0
        } else {
            self.lat_sum_ns as f64 / self.ios as f64
        }
    }

    /// Smallest latency, ns (0 without I/O).
    pub fn min_ns(&self) -> u64 {
        if self.ios == 0 {
            0
        } else {
            self.lat_min_ns
        }
    }

    /// Latency at percentile `p` (0..=100), ns (0 without I/O).
    pub fn percentile_ns(&self, p: f64) -> u64 {
        if self.ios == 0 {
            0
        } else {
            self.hist.value_at_percentile(p)
        }
    }
}

impl Default for DirStats {
    fn default() -> Self {
        DirStats::new()
    }
}

/// A corrupted block found by `--verify`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CorruptBlock {
    /// Its LBA.
    pub lba: u64,
    /// What was wrong.
    pub what: crate::workload::verify::Corruption,
}

/// Corrupted blocks kept for the report (the count is always exact).
pub const KEPT_CORRUPTIONS: usize = 16;

/// Everything one job measured in its measured phase.
#[derive(Debug, Clone)]
pub struct JobStats {
    /// The core it ran on.
    pub core: u32,
    /// Reads.
    pub read: DirStats,
    /// Writes.
    pub write: DirStats,
    /// I/Os that completed with an error status, or that the target refused.
    pub io_errors: u64,
    /// Blocks that failed verification.
    pub verify_errors: u64,
    /// Blocks that passed verification.
    pub verified_blocks: u64,
    /// Blocks read with `--verify` before this run had written them: not judged.
    pub unjudged_blocks: u64,
    /// The first corrupted blocks (at most [`KEPT_CORRUPTIONS`]).
    pub corruptions: Vec<CorruptBlock>,
    /// Length of the measured phase, ns.
    pub runtime_ns: u64,
}

impl JobStats {
    /// Empty stats for a job on `core` (allocates the histograms and the corruption list).
    pub fn new(core: u32) -> JobStats {
        JobStats {
            core,
            read: DirStats::new(),
            write: DirStats::new(),
            io_errors: 0,
            verify_errors: 0,
            verified_blocks: 0,
            unjudged_blocks: 0,
            corruptions: Vec::with_capacity(KEPT_CORRUPTIONS),
            runtime_ns: 0,
        }
    }

    /// Forget the ramp phase.
    pub fn reset(&mut self) {
        self.read.reset();
        self.write.reset();
        self.io_errors = 0;
        self.verified_blocks = 0;
        self.unjudged_blocks = 0;
        // Verify errors and corruptions are never forgotten: corruption in the ramp still counts.
    }

    /// Note a corrupted block (keeps the first few, within the reserved capacity).
    pub fn corrupt(&mut self, lba: u64, what: crate::workload::verify::Corruption) {
        self.verify_errors += 1;
        if self.corruptions.len() < KEPT_CORRUPTIONS {
            self.corruptions.push(CorruptBlock { lba, what });
        }
    }

    /// Add another job's stats (for the total; `core` keeps `self`'s, runtime the longest).
    pub fn merge(&mut self, other: &JobStats) {
        self.read.merge(&other.read);
        self.write.merge(&other.write);
        self.io_errors += other.io_errors;
        self.verify_errors += other.verify_errors;
        self.verified_blocks += other.verified_blocks;
        self.unjudged_blocks += other.unjudged_blocks;
        for c in &other.corruptions {
            if self.corruptions.len() < KEPT_CORRUPTIONS {
                self.corruptions.push(*c);
            }
        }
        self.runtime_ns = self.runtime_ns.max(other.runtime_ns);
    }

    /// Reads and writes together.
    pub fn both(&self) -> DirStats {
        let mut d = self.read.clone();
        d.merge(&self.write);
        d
    }
}

/// Monotonic counters one job publishes for the progress line. Written by one core only
/// (relaxed load + store, no read-modify-write), read by the main thread.
#[derive(Debug, Default)]
#[repr(align(64))]
pub struct LiveCounters {
    ios: AtomicU64,
    bytes: AtomicU64,
    lat_ns: AtomicU64,
}

/// One reading of [`LiveCounters`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LiveSnapshot {
    /// I/Os completed since the start (ramp included).
    pub ios: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Sum of latencies, ns.
    pub lat_ns: u64,
}

impl LiveCounters {
    /// Add one completion. Only the owning core may call this.
    #[inline]
    pub fn add(&self, bytes: u64, lat_ns: u64) {
        let bump =
            |a: &AtomicU64, v: u64| a.store(a.load(Ordering::Relaxed) + v, Ordering::Relaxed);
        bump(&self.ios, 1);
        bump(&self.bytes, bytes);
        bump(&self.lat_ns, lat_ns);
    }
    /// Read the counters (any thread).
    pub fn snapshot(&self) -> LiveSnapshot {
        LiveSnapshot {
            ios: self.ios.load(Ordering::Relaxed),
            bytes: self.bytes.load(Ordering::Relaxed),
            lat_ns: self.lat_ns.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tick_conversion_is_exact_enough() {
        let c = TickConverter::new(3_000_000_000);
        assert_eq!(c.ns(3_000_000_000), 999_999_999);
        assert_eq!(c.ns(3000), 999);
        let id = TickConverter::new(1_000_000_000);
        assert_eq!(id.ns(123_456), 123_456);
    }

    #[test]
    fn histogram_merge_adds_counts_and_keeps_extremes() {
        let mut a = DirStats::new();
        let mut b = DirStats::new();
        for ns in 1..=1000u64 {
            a.record(ns, 4096);
        }
        for ns in 1001..=3000u64 {
            b.record(ns, 512);
        }
        a.merge(&b);
        assert_eq!(a.ios, 3000);
        assert_eq!(a.bytes, 1000 * 4096 + 2000 * 512);
        assert_eq!(a.hist.len(), 3000);
        assert_eq!((a.lat_min_ns, a.lat_max_ns), (1, 3000));
        assert!((a.mean_ns() - 1500.5).abs() < 1e-9);
        // Percentiles of 1..=3000 within the histogram's 0.1% resolution.
        let p50 = a.percentile_ns(50.0) as f64;
        let p99 = a.percentile_ns(99.0) as f64;
        assert!((p50 - 1500.0).abs() <= 1500.0 * 0.002, "{p50}");
        assert!((p99 - 2970.0).abs() <= 2970.0 * 0.002, "{p99}");
    }

    #[test]
    fn empty_stats_report_zeroes_and_reset_forgets() {
        let mut d = DirStats::new();
        assert_eq!(
            (d.min_ns(), d.percentile_ns(99.0), d.mean_ns()),
            (0, 0, 0.0)
        );
        d.record(5, 1);
        d.record(MAX_LATENCY_NS * 2, 1); // clamped, not lost
        assert_eq!(d.hist.len(), 2);
        d.reset();
        assert_eq!((d.ios, d.hist.len(), d.min_ns()), (0, 0, 0));
    }

    #[test]
    fn job_merge_keeps_bounded_corruptions() {
        use crate::workload::verify::Corruption;
        let mut a = JobStats::new(0);
        let mut b = JobStats::new(1);
        for lba in 0..20 {
            b.corrupt(lba, Corruption::NotTransferred);
        }
        b.runtime_ns = 7;
        a.merge(&b);
        assert_eq!(a.verify_errors, 20);
        assert_eq!(a.corruptions.len(), KEPT_CORRUPTIONS);
        assert_eq!(a.runtime_ns, 7);
    }

    #[test]
    fn live_counters_accumulate() {
        let c = LiveCounters::default();
        c.add(4096, 100);
        c.add(4096, 300);
        assert_eq!(
            c.snapshot(),
            LiveSnapshot {
                ios: 2,
                bytes: 8192,
                lat_ns: 400
            }
        );
    }
}
