//! Turning a [`RunResult`] into what people read: a text table ([`text`]), fio-compatible JSON
//! ([`json`]) and an SVG plot ([`svg`]). [`DirSummary`] holds the derived figures they share.
//!
//! [`RunResult`]: crate::engine::RunResult

pub mod json;
pub mod svg;
pub mod text;

use crate::stats::DirStats;

/// The percentiles every report shows.
pub const PERCENTILES: [f64; 5] = [50.0, 90.0, 99.0, 99.9, 99.99];

/// Figures of one direction over a runtime.
#[derive(Debug, Clone, PartialEq)]
pub struct DirSummary {
    /// I/Os.
    pub ios: u64,
    /// Bytes.
    pub bytes: u64,
    /// I/Os per second.
    pub iops: f64,
    /// MiB per second.
    pub mib_s: f64,
    /// Latency mean, ns.
    pub mean_ns: f64,
    /// Latency minimum, ns.
    pub min_ns: u64,
    /// Latency maximum, ns.
    pub max_ns: u64,
    /// Latency standard deviation, ns (from the histogram).
    pub stddev_ns: f64,
    /// Latency at each of [`PERCENTILES`], ns.
    pub pct_ns: [u64; PERCENTILES.len()],
}

impl DirSummary {
    /// Summarize `d` over `runtime_ns`.
    pub fn new(d: &DirStats, runtime_ns: u64) -> DirSummary {
        let secs = runtime_ns as f64 / 1e9;
        let per_sec = |v: f64| if secs > 0.0 { v / secs } else { 0.0 };
        DirSummary {
            ios: d.ios,
            bytes: d.bytes,
            iops: per_sec(d.ios as f64),
            mib_s: per_sec(d.bytes as f64) / (1024.0 * 1024.0),
            mean_ns: d.mean_ns(),
            min_ns: d.min_ns(),
            max_ns: d.lat_max_ns,
            stddev_ns: if d.ios == 0 { 0.0 } else { d.hist.stdev() },
            pct_ns: PERCENTILES.map(|p| d.percentile_ns(p)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_rates_follow_runtime() {
        let mut d = DirStats::new();
        for i in 0..1000 {
            d.record(1000 + i, 4096);
        }
        let s = DirSummary::new(&d, 500_000_000);
        assert!((s.iops - 2000.0).abs() < 1e-6);
        assert!((s.mib_s - 2000.0 * 4096.0 / 1048576.0).abs() < 1e-9);
        assert_eq!((s.min_ns, s.max_ns), (1000, 1999));
        assert!(s.pct_ns.windows(2).all(|w| w[0] <= w[1]));
        let empty = DirSummary::new(&DirStats::new(), 0);
        assert_eq!((empty.iops, empty.min_ns, empty.pct_ns[4]), (0.0, 0, 0));
    }
}
