//! What a run does, independent of where it runs: the validated workload description shared by
//! every job (read-only, `Send + Sync`).

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

/// The `-w` access pattern.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Pattern {
    /// Sequential reads.
    Read,
    /// Sequential writes.
    Write,
    /// Random reads.
    RandRead,
    /// Random writes.
    RandWrite,
    /// Sequential mixed reads and writes (`-M` percent reads).
    Rw,
    /// Random mixed reads and writes (`-M` percent reads).
    RandRw,
}

impl Pattern {
    /// Every pattern, in `-w` spelling order.
    pub const ALL: [Pattern; 6] = [
        Pattern::Read,
        Pattern::Write,
        Pattern::RandRead,
        Pattern::RandWrite,
        Pattern::Rw,
        Pattern::RandRw,
    ];

    /// The `-w` (and fio `--rw`) spelling.
    pub fn name(self) -> &'static str {
        match self {
            Pattern::Read => "read",
            Pattern::Write => "write",
            Pattern::RandRead => "randread",
            Pattern::RandWrite => "randwrite",
            Pattern::Rw => "rw",
            Pattern::RandRw => "randrw",
        }
    }

    /// Random offsets (else sequential).
    pub fn is_random(self) -> bool {
        matches!(
            self,
            Pattern::RandRead | Pattern::RandWrite | Pattern::RandRw
        )
    }

    /// Mixed reads and writes (the only patterns `-M` applies to).
    pub fn is_mixed(self) -> bool {
        matches!(self, Pattern::Rw | Pattern::RandRw)
    }

    /// Percentage of reads this pattern implies, `mix` being `-M` (default 50) for mixed ones.
    pub fn read_percent(self, mix: Option<u8>) -> u8 {
        match self {
            Pattern::Read | Pattern::RandRead => 100,
            Pattern::Write | Pattern::RandWrite => 0,
            Pattern::Rw | Pattern::RandRw => mix.unwrap_or(50),
        }
    }
}

impl fmt::Display for Pattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Pattern {
    type Err = String;
    fn from_str(s: &str) -> Result<Pattern, String> {
        Pattern::ALL
            .into_iter()
            .find(|p| p.name() == s)
            .ok_or_else(|| {
                format!("unknown workload {s:?}: expected read, write, randread, randwrite, rw or randrw")
            })
    }
}

/// How random offsets are chosen.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Distribution {
    /// Every aligned position equally likely.
    Uniform,
    /// Zipf with skew θ (positions scattered so hot ones are not all at the start).
    Zipf(f64),
}

/// The part of the device a run touches, in bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Range {
    /// First byte (a multiple of the block size).
    pub start: u64,
    /// Length; `None` = to the end of the device.
    pub size: Option<u64>,
}

/// The workload, validated as far as it can be without knowing the device (the rest is checked
/// by [`crate::workload::Layout::new`] once the target's geometry is known).
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadSpec {
    /// Bytes per I/O (`-o`).
    pub io_size: u32,
    /// I/Os in flight per job (`-q`).
    pub queue_depth: u32,
    /// Access pattern (`-w`).
    pub pattern: Pattern,
    /// Percentage of reads, 0..=100 (`-M`, or implied by the pattern).
    pub read_percent: u8,
    /// Measured time (`-t`), after the ramp.
    pub run_time: Duration,
    /// Warm-up time whose I/O is not counted (`--ramp`).
    pub ramp_time: Duration,
    /// IOPS cap per job (`--rate`).
    pub rate_iops: Option<u64>,
    /// Byte range (`--range-start`, `--range-size`).
    pub range: Range,
    /// Offset distribution of random patterns (`--zipf`).
    pub distribution: Distribution,
    /// Stamp written blocks and check reads of the blocks this run wrote (`--verify`; needs
    /// both reads and writes).
    pub verify: bool,
    /// Seed of every random choice (`--seed`); verify stamps carry a per-run random id instead.
    pub seed: u64,
}

/// Largest I/O size: the pool's biggest buffer class (one buffer per slot, one iovec).
pub const MAX_IO_SIZE: u32 = keel_reactor::pool::MAX_CLASS as u32;
/// Largest queue depth per job.
pub const MAX_QUEUE_DEPTH: u32 = 65_536;

impl WorkloadSpec {
    /// A spec with the defaults of the CLI (4 KiB randread, QD 32, 10 s, whole device).
    pub fn new(pattern: Pattern) -> WorkloadSpec {
        WorkloadSpec {
            io_size: 4096,
            queue_depth: 32,
            pattern,
            read_percent: pattern.read_percent(None),
            run_time: Duration::from_secs(10),
            ramp_time: Duration::ZERO,
            rate_iops: None,
            range: Range::default(),
            distribution: Distribution::Uniform,
            verify: false,
            seed: DEFAULT_SEED,
        }
    }

    /// Check what does not depend on the device.
    pub fn validate(&self) -> Result<(), String> {
        if self.io_size == 0 || self.io_size > MAX_IO_SIZE {
            return Err(format!(
                "I/O size {} must be between 1 and {MAX_IO_SIZE} bytes",
                self.io_size
            ));
        }
        if self.queue_depth == 0 || self.queue_depth > MAX_QUEUE_DEPTH {
            return Err(format!(
                "queue depth {} must be between 1 and {MAX_QUEUE_DEPTH}",
                self.queue_depth
            ));
        }
        if self.read_percent > 100 {
            return Err(format!(
                "read percentage {} is above 100",
                self.read_percent
            ));
        }
        if self.run_time.is_zero() {
            return Err("run time must be above 0".into());
        }
        if self.rate_iops == Some(0) {
            return Err("--rate must be above 0 IOPS".into());
        }
        if self.verify && (self.read_percent == 0 || self.read_percent == 100) {
            return Err(format!(
                "--verify checks reads of the blocks the same run wrote (blocks of earlier runs \
                 are never judged), so it needs both reads and writes: -w {} {}; use rw or \
                 randrw with -M between 1 and 99",
                self.pattern,
                if self.read_percent == 100 {
                    "writes nothing to check"
                } else {
                    "reads nothing back"
                }
            ));
        }
        if self.range.size == Some(0) {
            return Err("--range-size must be above 0".into());
        }
        if let Distribution::Zipf(theta) = self.distribution {
            if !self.pattern.is_random() {
                return Err(format!(
                    "--zipf applies to random patterns, not {}",
                    self.pattern
                ));
            }
            if !theta.is_finite() || theta <= 0.0 || (theta - 1.0).abs() < 1e-9 {
                return Err(format!("zipf theta {theta} must be > 0 and != 1"));
            }
        }
        Ok(())
    }

    /// Whether the workload writes.
    pub fn writes(&self) -> bool {
        self.read_percent < 100
    }
}

/// The seed used when none is given (so runs repeat, as fio's `randrepeat=1`).
pub const DEFAULT_SEED: u64 = 0x4b45_454c; // "KEEL"

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn patterns_parse_and_print() {
        for p in Pattern::ALL {
            assert_eq!(p.name().parse::<Pattern>(), Ok(p));
        }
        assert!("randomread".parse::<Pattern>().is_err());
        assert_eq!(Pattern::RandRw.read_percent(Some(70)), 70);
        assert_eq!(Pattern::RandRead.read_percent(Some(70)), 100);
        assert_eq!(Pattern::Write.read_percent(None), 0);
        assert!(Pattern::RandWrite.is_random() && !Pattern::Rw.is_random());
    }

    #[test]
    fn validation_catches_bad_values() {
        let ok = WorkloadSpec::new(Pattern::RandRead);
        assert_eq!(ok.validate(), Ok(()));
        let bad = |f: fn(&mut WorkloadSpec)| {
            let mut s = ok.clone();
            f(&mut s);
            s.validate().unwrap_err()
        };
        assert!(bad(|s| s.io_size = 0).contains("I/O size"));
        assert!(bad(|s| s.io_size = MAX_IO_SIZE + 1).contains("I/O size"));
        assert!(bad(|s| s.queue_depth = 0).contains("queue depth"));
        assert!(bad(|s| s.run_time = Duration::ZERO).contains("run time"));
        assert!(bad(|s| s.rate_iops = Some(0)).contains("--rate"));
        assert!(bad(|s| s.distribution = Distribution::Zipf(1.0)).contains("theta"));
        assert!(bad(|s| s.verify = true).contains("needs both reads and writes"));
        assert!(bad(|s| {
            s.pattern = Pattern::RandWrite;
            s.read_percent = 0;
            s.verify = true
        })
        .contains("reads nothing back"));
        let mut mixed = WorkloadSpec::new(Pattern::RandRw);
        mixed.verify = true;
        assert_eq!(mixed.validate(), Ok(()));
        assert!(bad(|s| {
            s.pattern = Pattern::Read;
            s.distribution = Distribution::Zipf(0.8)
        })
        .contains("random patterns"));
    }
}
