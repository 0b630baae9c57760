//! I/O latency histograms per bdev (`bdev_enable_histogram`, `bdev_get_histogram`), in SPDK's
//! layout (`include/spdk/histogram_data.h`), so that SPDK's tools (`scripts/histogram.py`)
//! decode what `bdev_get_histogram` answers.
//!
//! The layout: latencies in TSC ticks fall in *ranges* by their highest set bit; each range is
//! split in `2^granularity` equal buckets. For a value `v` with `clz` leading zeros, its range is
//! `64 - granularity - clz` (0 when negative) and its index in the range the `granularity`
//! bits below the top (`v >> (range - 1)`, masked; `v` itself in range 0). Only the ranges
//! `min_range..=max_range` are kept (from the `min_nsec` / `max_nsec` options); values below or
//! above land in the first or the last bucket. The buckets are stored range after range, and
//! `bdev_get_histogram` sends them as little-endian `u64`s in standard base64, with
//! `granularity`, `min_range`, `max_range` and `tsc_rate`.
//!
//! Each core has its own histogram per bdev, allocated when enabled (a control-path message to
//! every core) and bumped by the completion path with no lock and no allocation; a read merges
//! copies of every core's buckets.

use crate::IoType;

/// SPDK's default granularity (`SPDK_HISTOGRAM_GRANULARITY_DEFAULT`): 128 buckets per range.
pub const DEFAULT_GRANULARITY: u32 = 7;
/// SPDK's RPC default lowest latency tracked: 1 µs.
pub const DEFAULT_MIN_NSEC: u64 = 1_000;
/// SPDK's RPC default highest latency tracked: 120 s.
pub const DEFAULT_MAX_NSEC: u64 = 120_000_000_000;
/// Most buckets one histogram may have (8 MiB per core and bdev).
pub const MAX_BUCKETS: u64 = 1 << 20;

/// How a bdev's histograms are set up (kept for `save_config` and new reads).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HistogramOpts {
    /// Only this I/O type is tallied (`None`: every type).
    pub io_type: Option<IoType>,
    /// Buckets per range: `2^granularity`.
    pub granularity: u32,
    /// Lowest latency tracked, ns (as given).
    pub min_nsec: u64,
    /// Highest latency tracked, ns (as given; `u64::MAX`: no limit).
    pub max_nsec: u64,
}

impl Default for HistogramOpts {
    fn default() -> Self {
        HistogramOpts {
            io_type: None,
            granularity: DEFAULT_GRANULARITY,
            min_nsec: DEFAULT_MIN_NSEC,
            max_nsec: DEFAULT_MAX_NSEC,
        }
    }
}

/// Nanoseconds to ticks at `tick_rate` per second (saturating; `u64::MAX` stays unlimited).
fn ns_to_ticks(ns: u64, tick_rate: u64) -> u64 {
    if ns == u64::MAX {
        return u64::MAX;
    }
    let t = u128::from(ns) * u128::from(tick_rate) / 1_000_000_000;
    u64::try_from(t).unwrap_or(u64::MAX)
}

/// The range of value `v` (see the module doc).
#[inline]
fn range_of(granularity: u32, v: u64) -> u32 {
    let clz = v.leading_zeros();
    let lsb = 64 - granularity;
    lsb.saturating_sub(clz)
}

/// One latency histogram in SPDK's layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Histogram {
    io_type: Option<IoType>,
    granularity: u32,
    min_range: u32,
    max_range: u32,
    buckets: Box<[u64]>,
}

impl Histogram {
    /// An empty histogram for `opts` at `tick_rate` ticks per second (this allocates its
    /// buckets). Errors say which option is unusable.
    pub fn new(opts: &HistogramOpts, tick_rate: u64) -> Result<Histogram, String> {
        if opts.granularity > 63 {
            return Err(format!(
                "granularity {} is too large (at most 63)",
                opts.granularity
            ));
        }
        if opts.min_nsec >= opts.max_nsec {
            return Err(format!(
                "min_nsec {} must be below max_nsec {}",
                opts.min_nsec, opts.max_nsec
            ));
        }
        let (min_val, max_val) = (
            ns_to_ticks(opts.min_nsec, tick_rate),
            ns_to_ticks(opts.max_nsec, tick_rate),
        );
        if min_val >= max_val {
            return Err(format!(
                "min_nsec {} and max_nsec {} are the same tick at {tick_rate} ticks/s",
                opts.min_nsec, opts.max_nsec
            ));
        }
        let g = opts.granularity;
        let (min_range, max_range) = (range_of(g, min_val), range_of(g, max_val - 1));
        let n = (u64::from(max_range - min_range) + 1) << g;
        if n > MAX_BUCKETS {
            return Err(format!(
                "granularity {g} over {}..{} ns needs {n} buckets (at most {MAX_BUCKETS})",
                opts.min_nsec, opts.max_nsec
            ));
        }
        Ok(Histogram {
            io_type: opts.io_type,
            granularity: g,
            min_range,
            max_range,
            buckets: vec![0; n as usize].into_boxed_slice(),
        })
    }

    /// HOT PATH: count one I/O of type `io_type` that took `ticks` (if it is the type tallied).
    #[inline]
    pub fn tally(&mut self, io_type: IoType, ticks: u64) {
        if self.io_type.is_some_and(|t| t != io_type) {
            return;
        }
        let g = self.granularity;
        let per_range = 1u64 << g;
        let range = range_of(g, ticks);
        let (range, index) = if range < self.min_range {
            (self.min_range, 0)
        } else if range > self.max_range {
            (self.max_range, per_range - 1)
        } else {
            let shift = range.saturating_sub(1);
            (range, (ticks >> shift) & (per_range - 1))
        };
        let i = ((u64::from(range - self.min_range)) << g) + index;
        debug_assert!((i as usize) < self.buckets.len());
        if let Some(b) = self.buckets.get_mut(i as usize) {
            *b = b.wrapping_add(1);
        }
    }

    /// Add `other`'s counts (same layout) into `self`; false (nothing added) if the layouts
    /// differ.
    pub fn merge(&mut self, other: &Histogram) -> bool {
        if (self.granularity, self.min_range, self.max_range)
            != (other.granularity, other.min_range, other.max_range)
        {
            return false;
        }
        for (a, b) in self.buckets.iter_mut().zip(other.buckets.iter()) {
            *a = a.wrapping_add(*b);
        }
        true
    }

    /// Buckets per range, log2.
    pub fn granularity(&self) -> u32 {
        self.granularity
    }
    /// First range kept.
    pub fn min_range(&self) -> u32 {
        self.min_range
    }
    /// Last range kept.
    pub fn max_range(&self) -> u32 {
        self.max_range
    }
    /// The buckets, range after range.
    pub fn buckets(&self) -> &[u64] {
        &self.buckets
    }
    /// Total count.
    pub fn total(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.wrapping_add(*b))
    }

    /// The buckets as SPDK sends them: little-endian `u64`s in standard base64 (with padding).
    pub fn encode_base64(&self) -> String {
        let bytes: Vec<u8> = self.buckets.iter().flat_map(|b| b.to_le_bytes()).collect();
        base64_encode(&bytes)
    }
}

/// Standard base64 (RFC 4648 alphabet, `=` padding), as SPDK's `spdk_base64_encode`.
fn base64_encode(data: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for (i, shift) in [18u32, 12, 6, 0].into_iter().enumerate() {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[((n >> shift) & 63) as usize]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// Test-only base64 decoder (standard alphabet, padded).
    pub(crate) fn base64_decode(s: &str) -> Vec<u8> {
        let val = |c: u8| -> u32 {
            match c {
                b'A'..=b'Z' => u32::from(c - b'A'),
                b'a'..=b'z' => u32::from(c - b'a') + 26,
                b'0'..=b'9' => u32::from(c - b'0') + 52,
                b'+' => 62,
                b'/' => 63,
                _ => panic!("not base64: {c}"),
            }
        };
        let mut out = Vec::new();
        for q in s.as_bytes().chunks(4) {
            assert_eq!(q.len(), 4, "padded");
            let pad = q.iter().filter(|&&c| c == b'=').count();
            let n = q
                .iter()
                .map(|&c| if c == b'=' { 0 } else { val(c) })
                .fold(0u32, |a, v| (a << 6) | v);
            let bytes = [(n >> 16) as u8, (n >> 8) as u8, n as u8];
            out.extend_from_slice(&bytes[..3 - pad]);
        }
        out
    }

    /// Where SPDK's `scripts/histogram.py` puts bucket `(i, j)` (i counted from `min_range`):
    /// its upper bound in ticks, as that script computes it.
    fn spdk_py_bucket_end(g: u32, min_range: u32, i: u32, j: u64) -> u64 {
        if i > 0 {
            (1u64 << (i + g + min_range - 1)) + ((j + 1) << (i + min_range - 1))
        } else {
            (j + 1) << min_range
        }
    }

    #[test]
    fn base64_matches_rfc4648_vectors() {
        for (plain, enc) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(base64_encode(plain.as_bytes()), enc);
            assert_eq!(base64_decode(enc), plain.as_bytes());
        }
        let all: Vec<u8> = (0..=255).collect();
        assert_eq!(base64_decode(&base64_encode(&all)), all);
    }

    #[test]
    fn layout_follows_spdk_histogram_data() {
        // 1 GHz ticks: 1 µs = 1000 ticks (10 bits: range 64-7-54 = 3), 120 s = 1.2e11 ticks.
        let h = Histogram::new(&HistogramOpts::default(), 1_000_000_000).unwrap();
        assert_eq!((h.granularity(), h.min_range(), h.max_range()), (7, 3, 30));
        assert_eq!(h.buckets().len(), 28 * 128);
        // The defaults of spdk_histogram_data_alloc (0..u64::MAX): ranges 0..=57.
        let full = HistogramOpts {
            min_nsec: 0,
            max_nsec: u64::MAX,
            ..Default::default()
        };
        let h = Histogram::new(&full, 1_000_000_000).unwrap();
        assert_eq!((h.min_range(), h.max_range()), (0, 57));
    }

    #[test]
    fn tally_puts_values_where_spdk_does() {
        let full = HistogramOpts {
            min_nsec: 0,
            max_nsec: u64::MAX,
            ..Default::default()
        };
        let mut h = Histogram::new(&full, 1_000_000_000).unwrap();
        // Values below 2^7 land in range 0 at their own index.
        h.tally(IoType::Read, 5);
        assert_eq!(h.buckets()[5], 1);
        // 1000 = 0b1111101000: range 3 (clz 54, lsb 57), index (1000 >> 2) & 127 = 122.
        h.tally(IoType::Write, 1000);
        assert_eq!(h.buckets()[(3 << 7) + 122], 1);
        // Every value lies below the bound SPDK's histogram.py gives its bucket and at or above
        // the bound of the bucket before it.
        let mut h = Histogram::new(&full, 1_000_000_000).unwrap();
        for v in [
            1u64,
            127,
            128,
            129,
            255,
            256,
            1000,
            4095,
            4096,
            123_456_789,
            1 << 40,
        ] {
            h.tally(IoType::Read, v);
            let i = h.buckets().iter().position(|&c| c == 1).unwrap();
            let (r, j) = ((i >> 7) as u32, (i & 127) as u64);
            let end = spdk_py_bucket_end(7, 0, r, j);
            let start = if i == 0 {
                0
            } else {
                let (pr, pj) = (((i - 1) >> 7) as u32, ((i - 1) & 127) as u64);
                spdk_py_bucket_end(7, 0, pr, pj)
            };
            assert!(start <= v && v < end, "{v} in bucket {i}: [{start}, {end})");
            h.buckets = vec![0; h.buckets.len()].into_boxed_slice();
        }
    }

    #[test]
    fn out_of_range_values_go_to_the_end_buckets_and_types_filter() {
        let opts = HistogramOpts {
            io_type: Some(IoType::Read),
            ..Default::default()
        };
        let mut h = Histogram::new(&opts, 1_000_000_000).unwrap();
        h.tally(IoType::Read, 1);
        h.tally(IoType::Read, u64::MAX);
        h.tally(IoType::Write, 5000);
        assert_eq!(h.buckets()[0], 1, "below min: first bucket");
        assert_eq!(*h.buckets().last().unwrap(), 1, "above max: last bucket");
        assert_eq!(h.total(), 2, "writes not tallied");
        let mut m = h.clone();
        assert!(m.merge(&h));
        assert_eq!(m.total(), 4);
        let other = Histogram::new(&HistogramOpts::default(), 3_000_000_000).unwrap();
        assert!(!m.merge(&other), "different layouts do not merge");
        // The encoding is the buckets in order, 8 bytes each, little-endian.
        let bytes = base64_decode(&h.encode_base64());
        assert_eq!(bytes.len(), h.buckets().len() * 8);
        assert_eq!(&bytes[..8], &1u64.to_le_bytes());
    }

    #[test]
    fn unusable_options_are_refused() {
        let bad = |o: HistogramOpts| Histogram::new(&o, 2_500_000_000).unwrap_err();
        let d = HistogramOpts::default();
        assert!(bad(HistogramOpts {
            granularity: 64,
            ..d
        })
        .contains("granularity"));
        assert!(bad(HistogramOpts {
            min_nsec: 5,
            max_nsec: 5,
            ..d
        })
        .contains("min_nsec"));
        assert!(bad(HistogramOpts {
            granularity: 30,
            ..d
        })
        .contains("buckets"));
        let e = Histogram::new(
            &HistogramOpts {
                min_nsec: 1,
                max_nsec: 100,
                ..d
            },
            1,
        )
        .unwrap_err();
        assert!(e.contains("same tick"), "{e}");
    }
}
