//! Latency classes, their (runtime-updatable) values, and the 1-in-100 p99 draw.

use crate::IoType;
use std::sync::atomic::{AtomicU64, Ordering};

/// The four latencies a delay bdev applies (SPDK's `delay_io_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum LatencyClass {
    /// Typical read.
    AvgRead = 0,
    /// One read in a hundred.
    P99Read = 1,
    /// Typical write.
    AvgWrite = 2,
    /// One write in a hundred.
    P99Write = 3,
}

impl LatencyClass {
    /// Every class, indexed by its discriminant.
    pub(crate) const ALL: [LatencyClass; 4] = [
        LatencyClass::AvgRead,
        LatencyClass::P99Read,
        LatencyClass::AvgWrite,
        LatencyClass::P99Write,
    ];

    /// Index into per-class arrays.
    pub(crate) fn index(self) -> usize {
        self as usize
    }

    /// The `latency_type` name of `bdev_delay_update_latency`.
    pub(crate) fn name(self) -> &'static str {
        match self {
            LatencyClass::AvgRead => "avg_read",
            LatencyClass::P99Read => "p99_read",
            LatencyClass::AvgWrite => "avg_write",
            LatencyClass::P99Write => "p99_write",
        }
    }

    /// Parse a `latency_type`.
    pub(crate) fn parse(s: &str) -> Option<LatencyClass> {
        LatencyClass::ALL.into_iter().find(|c| c.name() == s)
    }

    /// The class an I/O of `io_type` falls in; only reads and writes are delayed.
    pub(crate) fn for_io(io_type: IoType, p99: bool) -> Option<LatencyClass> {
        match (io_type, p99) {
            (IoType::Read, false) => Some(LatencyClass::AvgRead),
            (IoType::Read, true) => Some(LatencyClass::P99Read),
            (IoType::Write, false) => Some(LatencyClass::AvgWrite),
            (IoType::Write, true) => Some(LatencyClass::P99Write),
            _ => None,
        }
    }
}

/// Microseconds to ticks at `tick_rate` ticks per second (saturating).
pub(crate) fn us_to_ticks(us: u64, tick_rate: u64) -> u64 {
    let t = u128::from(us) * u128::from(tick_rate) / 1_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// Check creation latencies (`[avg_read, p99_read, avg_write, p99_write]`, µs): a p99 latency
/// may not be below its average, as SPDK requires.
pub(crate) fn validate(us: [u64; 4]) -> Result<(), String> {
    if us[1] < us[0] || us[3] < us[2] {
        return Err(
            "Unable to create a delay bdev where p99 latency is less than average latency"
                .to_string(),
        );
    }
    Ok(())
}

/// The four latencies of one delay bdev, shared by all its channels: read with a relaxed load
/// on each I/O, written by `bdev_delay_update_latency`.
#[derive(Debug)]
pub(crate) struct Latencies {
    us: [AtomicU64; 4],
    ticks: [AtomicU64; 4],
}

impl Latencies {
    /// Latencies from `[avg_read, p99_read, avg_write, p99_write]` in µs.
    pub(crate) fn new(us: [u64; 4], tick_rate: u64) -> Latencies {
        Latencies {
            us: us.map(AtomicU64::new),
            ticks: us.map(|v| AtomicU64::new(us_to_ticks(v, tick_rate))),
        }
    }

    /// Change one latency.
    pub(crate) fn set(&self, class: LatencyClass, us: u64, tick_rate: u64) {
        self.us[class.index()].store(us, Ordering::Relaxed);
        self.ticks[class.index()].store(us_to_ticks(us, tick_rate), Ordering::Relaxed);
    }

    /// The latency of `class` in µs.
    pub(crate) fn us(&self, class: LatencyClass) -> u64 {
        self.us[class.index()].load(Ordering::Relaxed)
    }

    /// The latency of `class` in ticks (HOT PATH).
    pub(crate) fn ticks(&self, class: LatencyClass) -> u64 {
        self.ticks[class.index()].load(Ordering::Relaxed)
    }
}

/// Per-channel pseudo-random draw of the one-in-a-hundred p99 I/Os (xorshift64*; SPDK uses
/// `rand_r() % 100 == 0`).
#[derive(Debug, Clone, Copy)]
pub(crate) struct P99Picker {
    state: u64,
}

impl P99Picker {
    /// A picker seeded with `seed` (any value; zero is remapped).
    pub(crate) fn new(seed: u64) -> P99Picker {
        P99Picker {
            state: if seed == 0 {
                0x9e37_79b9_7f4a_7c15
            } else {
                seed
            },
        }
    }

    /// Whether the next I/O gets the p99 latency (true about once in 100 calls).
    pub(crate) fn next_is_p99(&mut self) -> bool {
        let mut x = self.state;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.state = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32).is_multiple_of(100)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for c in LatencyClass::ALL {
            assert_eq!(LatencyClass::parse(c.name()), Some(c));
            assert_eq!(LatencyClass::ALL[c.index()], c);
        }
        assert_eq!(LatencyClass::parse("p50_read"), None);
    }

    #[test]
    fn only_reads_and_writes_are_delayed() {
        assert_eq!(
            LatencyClass::for_io(IoType::Read, false),
            Some(LatencyClass::AvgRead)
        );
        assert_eq!(
            LatencyClass::for_io(IoType::Read, true),
            Some(LatencyClass::P99Read)
        );
        assert_eq!(
            LatencyClass::for_io(IoType::Write, false),
            Some(LatencyClass::AvgWrite)
        );
        assert_eq!(
            LatencyClass::for_io(IoType::Write, true),
            Some(LatencyClass::P99Write)
        );
        for t in [
            IoType::Flush,
            IoType::Unmap,
            IoType::WriteZeroes,
            IoType::Reset,
        ] {
            assert_eq!(LatencyClass::for_io(t, false), None);
        }
    }

    #[test]
    fn microseconds_convert_to_ticks() {
        assert_eq!(us_to_ticks(1_000_000, 2_400_000_000), 2_400_000_000);
        assert_eq!(us_to_ticks(150, 1_000_000_000), 150_000);
        assert_eq!(us_to_ticks(1, 999_999), 0, "sub-tick latencies round down");
        assert_eq!(us_to_ticks(0, 3_000_000_000), 0);
        assert_eq!(us_to_ticks(u64::MAX, u64::MAX), u64::MAX, "saturates");
    }

    #[test]
    fn p99_below_average_is_refused() {
        assert!(validate([10, 50, 30, 90]).is_ok());
        assert!(validate([10, 10, 30, 30]).is_ok());
        assert!(validate([10, 9, 30, 90]).unwrap_err().contains("p99"));
        assert!(validate([10, 50, 30, 29]).is_err());
    }

    #[test]
    fn latencies_update_both_units() {
        let l = Latencies::new([10, 50, 30, 90], 1_000_000);
        assert_eq!(l.us(LatencyClass::P99Write), 90);
        assert_eq!(l.ticks(LatencyClass::AvgWrite), 30);
        l.set(LatencyClass::AvgWrite, 2_000, 1_000_000);
        assert_eq!(l.us(LatencyClass::AvgWrite), 2_000);
        assert_eq!(l.ticks(LatencyClass::AvgWrite), 2_000);
        assert_eq!(
            l.ticks(LatencyClass::AvgRead),
            10,
            "other classes untouched"
        );
    }

    #[test]
    fn about_one_in_a_hundred_is_p99() {
        for seed in [0, 1, 0xdead_beef, u64::MAX] {
            let mut p = P99Picker::new(seed);
            let hits = (0..100_000).filter(|_| p.next_is_p99()).count();
            assert!(
                (700..=1300).contains(&hits),
                "seed {seed}: {hits} p99 draws in 100000"
            );
        }
    }
}
