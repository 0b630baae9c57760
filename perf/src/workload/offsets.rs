//! Where each I/O goes: the job's slice of the device ([`Layout`], computed once from the
//! workload and the target's geometry) and the per-I/O offset choice ([`OffsetGen`]: sequential,
//! uniform or Zipf, always aligned to the I/O size, never allocating).
//!
//! The range is cut into `positions` aligned I/O slots. Without `--verify` every job covers the
//! whole range (sequential jobs start at staggered points). With `--verify` the positions are
//! split into one contiguous *lane* per queue slot of every job, so no two I/Os in flight ever
//! overlap (a read racing a write to the same block would otherwise see torn data and report a
//! false corruption).

use super::rng::{Rng, Zipf};
use super::spec::{Distribution, WorkloadSpec};

/// The job's view of the device, derived from the spec and the target geometry.
#[derive(Debug, Clone, PartialEq)]
pub struct Layout {
    /// Device block size, bytes.
    pub block_size: u32,
    /// Blocks per I/O.
    pub blocks_per_io: u64,
    /// First block of the range.
    pub start_block: u64,
    /// Aligned I/O positions in the whole range.
    pub positions: u64,
    /// Positions per lane (`positions` when there are no lanes).
    pub lane_len: u64,
    /// Whether each slot has its own lane (`--verify`).
    pub per_slot_lanes: bool,
    /// First lane of this job.
    first_lane: u64,
    /// Sequential start point of this job (lane-less layouts).
    seq_start: u64,
    /// The Zipf sampler over one lane, for `--zipf`.
    zipf: Option<Zipf>,
}

impl Layout {
    /// Check the spec against a device of `num_blocks` × `block_size` and place job
    /// `job` of `jobs`.
    pub fn new(
        spec: &WorkloadSpec,
        block_size: u32,
        num_blocks: u64,
        job: u32,
        jobs: u32,
    ) -> Result<Layout, String> {
        let bs = u64::from(block_size);
        if block_size == 0 || num_blocks == 0 {
            return Err("the target reports an empty device".into());
        }
        let io = u64::from(spec.io_size);
        if !io.is_multiple_of(bs) {
            return Err(format!(
                "I/O size {io} is not a multiple of the block size {bs}"
            ));
        }
        let dev_bytes = num_blocks
            .checked_mul(bs)
            .ok_or("device size overflows 64 bits")?;
        let start = spec.range.start;
        if !start.is_multiple_of(bs) {
            return Err(format!(
                "--range-start {start} is not a multiple of the block size {bs}"
            ));
        }
        if start >= dev_bytes {
            return Err(format!(
                "--range-start {start} is beyond the device ({dev_bytes} bytes)"
            ));
        }
        let size = spec.range.size.unwrap_or(dev_bytes - start);
        if size > dev_bytes - start {
            return Err(format!(
                "range {start}+{size} goes beyond the device ({dev_bytes} bytes)"
            ));
        }
        let positions = size / io;
        if positions == 0 {
            return Err(format!("range of {size} bytes holds no {io}-byte I/O"));
        }
        let (lane_len, first_lane) = if spec.verify {
            let lanes = u64::from(jobs) * u64::from(spec.queue_depth);
            let lane_len = positions / lanes;
            if lane_len == 0 {
                return Err(format!(
                    "--verify gives each of the {lanes} queue slots (cores × depth) its own part \
                     of the range, but the range holds only {positions} I/Os: lower -q or \
                     enlarge the range"
                ));
            }
            (lane_len, u64::from(job) * u64::from(spec.queue_depth))
        } else {
            (positions, 0)
        };
        let zipf = match spec.distribution {
            Distribution::Zipf(theta) if spec.pattern.is_random() => {
                if lane_len < 2 {
                    return Err("--zipf needs at least 2 I/O positions per lane".into());
                }
                Some(Zipf::new(lane_len, theta).map_err(|e| e.to_string())?)
            }
            _ => None,
        };
        Ok(Layout {
            block_size,
            blocks_per_io: io / bs,
            start_block: start / bs,
            positions,
            lane_len,
            per_slot_lanes: spec.verify,
            first_lane,
            seq_start: u64::from(job) * (positions / u64::from(jobs.max(1))),
            zipf,
        })
    }

    /// The offset generator for queue slot `slot` (with per-slot lanes), or the job's only one.
    pub fn generator(&self, spec: &WorkloadSpec, slot: u32) -> OffsetGen {
        let (base, cursor) = if self.per_slot_lanes {
            ((self.first_lane + u64::from(slot)) * self.lane_len, 0)
        } else {
            (0, self.seq_start % self.lane_len)
        };
        let access = match (spec.pattern.is_random(), self.zipf) {
            (false, _) => Access::Sequential,
            (true, None) => Access::Uniform,
            (true, Some(z)) => Access::Zipf(z, coprime_multiplier(self.lane_len)),
        };
        OffsetGen {
            start_block: self.start_block,
            blocks_per_io: self.blocks_per_io,
            base,
            len: self.lane_len,
            cursor,
            access,
        }
    }
}

/// How a generator picks the next position.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Access {
    Sequential,
    Uniform,
    /// Zipf ranks, scattered over the lane by `rank × multiplier mod len` (a bijection, since
    /// the multiplier is coprime with `len`), so hot positions are spread as with fio.
    Zipf(Zipf, u64),
}

/// Produces aligned block offsets inside one lane. Allocation-free.
#[derive(Debug, Clone, PartialEq)]
pub struct OffsetGen {
    start_block: u64,
    blocks_per_io: u64,
    /// First position of the lane.
    base: u64,
    /// Positions in the lane.
    len: u64,
    /// Next sequential position, relative to `base`.
    cursor: u64,
    access: Access,
}

impl OffsetGen {
    /// The block offset of the next I/O.
    #[inline]
    pub fn next(&mut self, rng: &mut Rng) -> u64 {
        let k = match self.access {
            Access::Sequential => {
                let k = self.cursor;
                self.cursor = if k + 1 == self.len { 0 } else { k + 1 };
                k
            }
            Access::Uniform => rng.below(self.len),
            Access::Zipf(z, mult) => {
                let rank = z.sample(rng);
                ((u128::from(rank) * u128::from(mult)) % u128::from(self.len)) as u64
            }
        };
        self.start_block + (self.base + k) * self.blocks_per_io
    }

    /// The first block of the lane and how many blocks it spans (for tests and diagnostics).
    pub fn lane_blocks(&self) -> (u64, u64) {
        (
            self.start_block + self.base * self.blocks_per_io,
            self.len * self.blocks_per_io,
        )
    }
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// A multiplier near `len × 0.618…` coprime with `len` (1 for tiny lanes).
fn coprime_multiplier(len: u64) -> u64 {
    if len <= 2 {
        return 1;
    }
    let mut m = ((len as f64 * 0.618_033_988_75) as u64).max(1);
    while gcd(m, len) != 1 {
        m += 1;
    }
    m
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::workload::spec::{Pattern, Range};

    fn spec(p: Pattern) -> WorkloadSpec {
        WorkloadSpec::new(p)
    }

    #[test]
    fn random_offsets_stay_aligned_inside_the_range() {
        let mut s = spec(Pattern::RandRead);
        s.io_size = 8192;
        s.range = Range {
            start: 1 << 20,
            size: Some(4 << 20),
        };
        let l = Layout::new(&s, 512, 1 << 20, 0, 1).unwrap();
        assert_eq!(l.blocks_per_io, 16);
        assert_eq!(l.positions, 512);
        let mut g = l.generator(&s, 0);
        let mut rng = Rng::new(3);
        let (first, last) = (2048u64, 2048 + 8192 - 16);
        let mut seen = std::collections::HashSet::new();
        for _ in 0..20_000 {
            let off = g.next(&mut rng);
            assert!((first..=last).contains(&off), "{off}");
            assert_eq!((off - first) % 16, 0);
            seen.insert(off);
        }
        assert_eq!(seen.len(), 512, "uniform reaches every position");
    }

    #[test]
    fn sequential_wraps_and_jobs_start_staggered() {
        let mut s = spec(Pattern::Read);
        s.range.size = Some(4 * 4096);
        let l0 = Layout::new(&s, 4096, 100, 0, 2).unwrap();
        let l1 = Layout::new(&s, 4096, 100, 1, 2).unwrap();
        let mut rng = Rng::new(0);
        let mut g0 = l0.generator(&s, 0);
        let mut g1 = l1.generator(&s, 0);
        let a: Vec<u64> = (0..6).map(|_| g0.next(&mut rng)).collect();
        let b: Vec<u64> = (0..6).map(|_| g1.next(&mut rng)).collect();
        assert_eq!(a, [0, 1, 2, 3, 0, 1]);
        assert_eq!(b, [2, 3, 0, 1, 2, 3]);
    }

    #[test]
    fn verify_lanes_are_disjoint_and_cover_distinct_slots() {
        let mut s = spec(Pattern::RandWrite);
        s.verify = true;
        s.queue_depth = 4;
        // 64 positions, 2 jobs × 4 slots = 8 lanes of 8 positions.
        let l = Layout::new(&s, 4096, 64, 1, 2).unwrap();
        assert_eq!(l.lane_len, 8);
        let mut rng = Rng::new(11);
        let mut lanes = Vec::new();
        for slot in 0..4 {
            let mut g = l.generator(&s, slot);
            let (lo, n) = g.lane_blocks();
            for _ in 0..200 {
                let off = g.next(&mut rng);
                assert!(off >= lo && off < lo + n);
            }
            lanes.push((lo, n));
        }
        // Job 1 owns lanes 4..8: blocks 32..64, in slot order, without overlap.
        assert_eq!(lanes, [(32, 8), (40, 8), (48, 8), (56, 8)]);
    }

    #[test]
    fn zipf_offsets_are_skewed_and_in_range() {
        let mut s = spec(Pattern::RandRead);
        s.distribution = Distribution::Zipf(1.2);
        let l = Layout::new(&s, 4096, 1000, 0, 1).unwrap();
        let mut g = l.generator(&s, 0);
        let mut rng = Rng::new(8);
        let mut counts = vec![0u32; 1000];
        for _ in 0..50_000 {
            let off = g.next(&mut rng);
            counts[off as usize] += 1;
        }
        counts.sort_unstable_by(|a, b| b.cmp(a));
        // The hottest position gets ~1/ζ(1000, 1.2) ≈ 22% of the draws, uniform would give 0.1%.
        assert!(counts[0] > 50_000 / 10, "{}", counts[0]);
        assert!(counts[0] > counts[10] * 10);
    }

    #[test]
    fn bad_geometry_is_refused_with_a_reason() {
        let mut s = spec(Pattern::RandRead);
        s.io_size = 1000;
        assert!(Layout::new(&s, 512, 100, 0, 1)
            .unwrap_err()
            .contains("multiple of the block size"));
        s.io_size = 4096;
        s.range.start = 100;
        assert!(Layout::new(&s, 512, 100, 0, 1)
            .unwrap_err()
            .contains("--range-start"));
        s.range = Range {
            start: 0,
            size: Some(1 << 30),
        };
        assert!(Layout::new(&s, 512, 100, 0, 1)
            .unwrap_err()
            .contains("beyond the device"));
        s.range = Range::default();
        assert!(Layout::new(&s, 512, 4, 0, 1)
            .unwrap_err()
            .contains("holds no"));
        s.verify = true;
        s.queue_depth = 128;
        assert!(Layout::new(&s, 4096, 64, 0, 1)
            .unwrap_err()
            .contains("--verify"));
        assert!(Layout::new(&s, 0, 64, 0, 1).is_err());
    }

    #[test]
    fn multiplier_is_coprime() {
        for len in [3u64, 4, 10, 1000, 1 << 20, 999_983] {
            let m = coprime_multiplier(len);
            assert_eq!(gcd(m, len), 1, "len {len} m {m}");
        }
    }
}
