//! Command-line options (`clap`) and their conversion into a validated [`Options`]: the
//! workload, the target to build and the outputs. Bad input gives an error message, never a
//! panic.

use crate::workload::spec::{Distribution, Pattern, Range, WorkloadSpec, DEFAULT_SEED};
use clap::Parser;
use std::time::Duration;

/// keel-perf: closed-loop block I/O benchmark on Keel's reactors.
///
/// Example: keel-perf -q 128 -o 4096 -w randread -t 10 -c 0x1 --bdev null
#[derive(Debug, Clone, Parser)]
#[command(name = "keel-perf", version, about, long_about = None)]
pub struct Args {
    /// I/Os in flight per core.
    #[arg(short = 'q', long = "queue-depth", default_value_t = 32)]
    pub queue_depth: u32,
    /// I/O size in bytes (suffixes k, m: powers of 1024), at most 128k.
    #[arg(short = 'o', long = "io-size", default_value = "4096")]
    pub io_size: String,
    /// Pattern: read, write, randread, randwrite, rw, randrw.
    #[arg(short = 'w', long = "workload", default_value = "randread")]
    pub workload: String,
    /// Percentage of reads for rw/randrw (default 50).
    #[arg(short = 'M', long = "rwmixread")]
    pub rwmixread: Option<u8>,
    /// Measured run time, seconds (fractions allowed).
    #[arg(short = 't', long = "time", default_value_t = 10.0)]
    pub time: f64,
    /// Warm-up seconds before measuring (not counted).
    #[arg(long = "ramp", default_value_t = 0.0)]
    pub ramp: f64,
    /// Cores, one job each: hex mask (0x3) or list ([0,2-3]).
    #[arg(
        short = 'c',
        visible_short_alias = 'm',
        long = "cpumask",
        default_value = "0x1"
    )]
    pub cpumask: String,
    /// IOPS cap per core.
    #[arg(long = "rate")]
    pub rate: Option<u64>,
    /// First byte of the range to use.
    #[arg(long = "range-start", default_value = "0")]
    pub range_start: String,
    /// Bytes of the range (default: to the end of the device).
    #[arg(long = "range-size")]
    pub range_size: Option<String>,
    /// Zipf skew θ for random offsets (e.g. 0.9 or 1.2; default uniform).
    #[arg(long = "zipf")]
    pub zipf: Option<f64>,
    /// Stamp every written block (LBA, run id, CRC32C) and check reads of the blocks this run
    /// wrote (blocks of earlier runs are not judged); needs both reads and writes.
    #[arg(long = "verify")]
    pub verify: bool,
    /// Seed of offsets and read/write choices.
    #[arg(long = "seed", default_value_t = DEFAULT_SEED)]
    pub seed: u64,
    /// Quick local bdev: null, malloc or uring:FILE.
    #[arg(long = "bdev", conflicts_with_all = ["config", "remote"])]
    pub bdev: Option<String>,
    /// Size of a null/malloc bdev (default 1g for null, 256m for malloc).
    #[arg(long = "bdev-size")]
    pub bdev_size: Option<String>,
    /// Block size of the quick bdev (default 4096 for null/malloc, the file's for uring).
    #[arg(long = "block-size")]
    pub block_size: Option<u32>,
    /// JSON config file in keel-tgt's (SPDK's) format, e.g. save_config output: its bdev
    /// subsystem (malloc, null, uring, aio, delay, error, lvol, raid) is replayed, the others
    /// (nvmf) are skipped.
    #[arg(long = "config", requires = "bdev_name", conflicts_with = "remote")]
    pub config: Option<String>,
    /// The bdev of --config to benchmark.
    #[arg(long = "bdev-name", requires = "config")]
    pub bdev_name: Option<String>,
    /// Remote NVMe/TCP namespace: 'trtype:tcp traddr:ADDR trsvcid:PORT subnqn:NQN'.
    #[arg(short = 'r', long = "transport")]
    pub remote: Option<String>,
    /// Ask for NVMe/TCP header digests (with -r).
    #[arg(short = 'H', long = "hdgst", requires = "remote")]
    pub header_digest: bool,
    /// Ask for NVMe/TCP data digests (with -r).
    #[arg(short = 'D', long = "ddgst", requires = "remote")]
    pub data_digest: bool,
    /// Print fio-compatible JSON on stdout instead of the text report.
    #[arg(long = "json")]
    pub json: bool,
    /// Write an SVG with the latency percentiles and IOPS over time.
    #[arg(long = "plot", value_name = "FILE.svg")]
    pub plot: Option<String>,
    /// No live progress line.
    #[arg(long = "no-progress")]
    pub no_progress: bool,
    /// Buffer pool limit per core, MiB.
    #[arg(long = "pool-size-mb", default_value_t = 256)]
    pub pool_size_mb: u32,
}

/// Kinds of quick bdevs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuickBdev {
    /// Stores nothing.
    Null,
    /// RAM.
    Malloc,
    /// A file or block device through io_uring.
    Uring(String),
}

/// A remote NVMe/TCP namespace (`-r`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TransportId {
    /// Transport type (only `tcp`).
    pub trtype: String,
    /// Address.
    pub traddr: String,
    /// Port (default 4420).
    pub trsvcid: String,
    /// Subsystem NQN (default the discovery NQN).
    pub subnqn: String,
}

impl TransportId {
    /// Parse SPDK's transport ID syntax: blank-separated `key:value` (or `key=value`) pairs.
    pub fn parse(s: &str) -> Result<TransportId, String> {
        let mut t = TransportId {
            trtype: String::new(),
            traddr: String::new(),
            trsvcid: "4420".into(),
            subnqn: "nqn.2014-08.org.nvmexpress.discovery".into(),
        };
        for item in s.split_whitespace() {
            let (k, v) = item
                .split_once([':', '='])
                .ok_or_else(|| format!("-r: {item:?} is not key:value"))?;
            if v.is_empty() {
                return Err(format!("-r: {k} has no value"));
            }
            match k.to_ascii_lowercase().as_str() {
                "trtype" => t.trtype = v.to_ascii_lowercase(),
                "traddr" => t.traddr = v.into(),
                "trsvcid" => t.trsvcid = v.into(),
                "subnqn" => t.subnqn = v.into(),
                "adrfam" => {}
                other => return Err(format!("-r: unknown key {other:?}")),
            }
        }
        if t.trtype != "tcp" {
            return Err(format!(
                "-r: trtype must be tcp (got {:?})",
                if t.trtype.is_empty() {
                    "nothing"
                } else {
                    &t.trtype
                }
            ));
        }
        if t.traddr.is_empty() {
            return Err("-r: traddr is missing".into());
        }
        if t.trsvcid.parse::<u16>().is_err() {
            return Err(format!("-r: trsvcid {:?} is not a port number", t.trsvcid));
        }
        Ok(t)
    }
}

/// What to benchmark.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetSpec {
    /// A bdev made from flags.
    Quick {
        /// Its kind.
        kind: QuickBdev,
        /// Size in bytes (null and malloc).
        size: u64,
        /// Block size (`None`: the module's default).
        block_size: Option<u32>,
    },
    /// A bdev from a JSON config.
    Config {
        /// The config file.
        file: String,
        /// The bdev to use.
        bdev: String,
    },
    /// A remote namespace over NVMe/TCP (its first active namespace).
    Remote {
        /// Where.
        trid: TransportId,
        /// Header digest asked for.
        header_digest: bool,
        /// Data digest asked for.
        data_digest: bool,
    },
}

/// Everything the binary needs, validated.
#[derive(Debug, Clone)]
pub struct Options {
    /// The workload.
    pub spec: WorkloadSpec,
    /// What it runs against.
    pub target: TargetSpec,
    /// Core mask, as given.
    pub cpumask: String,
    /// JSON on stdout.
    pub json: bool,
    /// SVG output path.
    pub plot: Option<String>,
    /// Live progress line.
    pub progress: bool,
    /// Pool limit per core, MiB.
    pub pool_size_mb: u32,
}

/// Parse a byte count: digits with an optional k/m/g/t suffix (powers of 1024, `i`/`b` allowed:
/// `4k`, `4KiB`, `1M`).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let digits = t.chars().take_while(char::is_ascii_digit).count();
    let (num, unit) = t.split_at(digits);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("{s:?} is not a size (e.g. 4096, 4k, 1M)"))?;
    let unit = unit.to_ascii_lowercase();
    let shift = match unit.trim_end_matches('b').trim_end_matches('i') {
        "" => 0,
        "k" => 10,
        "m" => 20,
        "g" => 30,
        "t" => 40,
        _ => return Err(format!("{s:?}: unknown size unit {unit:?}")),
    };
    n.checked_mul(1u64 << shift)
        .ok_or_else(|| format!("{s:?} is too large"))
}

fn seconds(what: &str, v: f64) -> Result<Duration, String> {
    if !v.is_finite() || !(0.0..=1e9).contains(&v) {
        return Err(format!("{what} {v} is not a number of seconds"));
    }
    Ok(Duration::from_secs_f64(v))
}

impl Args {
    /// Validate and convert.
    pub fn to_options(&self) -> Result<Options, String> {
        let pattern: Pattern = self.workload.parse()?;
        if self.rwmixread.is_some() && !pattern.is_mixed() {
            return Err(format!("-M applies to rw and randrw, not {pattern}"));
        }
        if let Some(m) = self.rwmixread {
            if m > 100 {
                return Err(format!("-M {m} is above 100"));
            }
        }
        let io_size = parse_size(&self.io_size).map_err(|e| format!("-o: {e}"))?;
        let spec = WorkloadSpec {
            io_size: u32::try_from(io_size).map_err(|_| format!("-o {io_size} is too large"))?,
            queue_depth: self.queue_depth,
            pattern,
            read_percent: pattern.read_percent(self.rwmixread),
            run_time: seconds("-t", self.time)?,
            ramp_time: seconds("--ramp", self.ramp)?,
            rate_iops: self.rate,
            range: Range {
                start: parse_size(&self.range_start).map_err(|e| format!("--range-start: {e}"))?,
                size: self
                    .range_size
                    .as_deref()
                    .map(parse_size)
                    .transpose()
                    .map_err(|e| format!("--range-size: {e}"))?,
            },
            distribution: self.zipf.map_or(Distribution::Uniform, Distribution::Zipf),
            verify: self.verify,
            seed: self.seed,
        };
        spec.validate()?;
        let target = self.target_spec()?;
        if self.pool_size_mb == 0 {
            return Err("--pool-size-mb must be above 0".into());
        }
        Ok(Options {
            spec,
            target,
            cpumask: self.cpumask.clone(),
            json: self.json,
            plot: self.plot.clone(),
            progress: !self.no_progress,
            pool_size_mb: self.pool_size_mb,
        })
    }

    fn target_spec(&self) -> Result<TargetSpec, String> {
        if let Some(r) = &self.remote {
            return Ok(TargetSpec::Remote {
                trid: TransportId::parse(r)?,
                header_digest: self.header_digest,
                data_digest: self.data_digest,
            });
        }
        if let (Some(file), Some(bdev)) = (&self.config, &self.bdev_name) {
            if self.bdev_size.is_some() || self.block_size.is_some() {
                return Err("--bdev-size and --block-size go with --bdev, not --config".into());
            }
            return Ok(TargetSpec::Config {
                file: file.clone(),
                bdev: bdev.clone(),
            });
        }
        let Some(b) = &self.bdev else {
            return Err(
                "nothing to benchmark: give --bdev null|malloc|uring:FILE, --config FILE \
                 --bdev-name NAME, or -r 'trtype:tcp …'"
                    .into(),
            );
        };
        let kind = match b.as_str() {
            "null" => QuickBdev::Null,
            "malloc" => QuickBdev::Malloc,
            other => match other.strip_prefix("uring:") {
                Some(path) if !path.is_empty() => QuickBdev::Uring(path.to_string()),
                _ => {
                    return Err(format!(
                        "--bdev {other:?}: expected null, malloc or uring:FILE"
                    ))
                }
            },
        };
        let size = match (&kind, &self.bdev_size) {
            (QuickBdev::Uring(_), Some(_)) => {
                return Err("--bdev-size does not apply to uring (the file sets the size)".into())
            }
            (_, Some(s)) => parse_size(s).map_err(|e| format!("--bdev-size: {e}"))?,
            (QuickBdev::Malloc, None) => 256 << 20,
            _ => 1 << 30,
        };
        let block_size = match (&kind, self.block_size) {
            (QuickBdev::Uring(_), bs) => bs,
            (_, bs) => Some(bs.unwrap_or(4096)),
        };
        if let Some(bs) = block_size {
            if bs < 512 || !bs.is_power_of_two() {
                return Err(format!(
                    "--block-size {bs} must be a power of two of at least 512"
                ));
            }
            if !size.is_multiple_of(u64::from(bs)) {
                return Err(format!(
                    "--bdev-size {size} is not a multiple of the block size {bs}"
                ));
            }
        }
        Ok(TargetSpec::Quick {
            kind,
            size,
            block_size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        let mut v = vec!["keel-perf"];
        v.extend_from_slice(args);
        Args::try_parse_from(v)
            .map_err(|e| e.to_string())?
            .to_options()
    }

    #[test]
    fn sizes_parse_with_binary_units() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("4k"), Ok(4096));
        assert_eq!(parse_size("4KiB"), Ok(4096));
        assert_eq!(parse_size("128K"), Ok(128 << 10));
        assert_eq!(parse_size("1g"), Ok(1 << 30));
        assert!(parse_size("").is_err());
        assert!(parse_size("4x").is_err());
        assert!(parse_size("k").is_err());
        assert!(parse_size("99999999999t").is_err());
    }

    #[test]
    fn the_example_command_line_works() {
        let o = parse(&[
            "-q", "128", "-o", "4096", "-w", "randread", "-t", "10", "-c", "0x1", "--bdev", "null",
        ])
        .unwrap();
        assert_eq!(o.spec.queue_depth, 128);
        assert_eq!(o.spec.read_percent, 100);
        assert_eq!(o.cpumask, "0x1");
        assert_eq!(
            o.target,
            TargetSpec::Quick {
                kind: QuickBdev::Null,
                size: 1 << 30,
                block_size: Some(4096)
            }
        );
        let o = parse(&[
            "-m",
            "[0,1]",
            "-w",
            "randrw",
            "-M",
            "70",
            "--bdev",
            "uring:/tmp/f",
        ])
        .unwrap();
        assert_eq!(o.cpumask, "[0,1]");
        assert_eq!(o.spec.read_percent, 70);
        assert!(matches!(
            o.target,
            TargetSpec::Quick {
                kind: QuickBdev::Uring(_),
                block_size: None,
                ..
            }
        ));
    }

    #[test]
    fn bad_command_lines_are_explained() {
        let err = |a: &[&str]| parse(a).unwrap_err();
        assert!(err(&["--bdev", "null", "-w", "randread", "-M", "50"]).contains("-M"));
        assert!(err(&["--bdev", "null", "-w", "sideways"]).contains("unknown workload"));
        assert!(err(&["--bdev", "null", "-o", "1m"]).contains("I/O size"));
        assert!(err(&["--bdev", "null", "-t", "0"]).contains("run time"));
        assert!(err(&["--bdev", "null", "--ramp=-1"]).contains("--ramp"));
        assert!(err(&["--bdev", "floppy"]).contains("expected null"));
        assert!(err(&["--bdev", "uring:"]).contains("expected null"));
        assert!(err(&["--bdev", "null", "--block-size", "1000"]).contains("power of two"));
        assert!(err(&["-w", "read"]).contains("nothing to benchmark"));
        assert!(err(&["--config", "x.json"]).contains("bdev-name"));
        assert!(err(&["--bdev", "null", "-w", "read", "--zipf", "0.9"]).contains("random"));
    }

    #[test]
    fn transport_ids_parse_or_explain() {
        let t =
            TransportId::parse("trtype:tcp traddr:127.0.0.1 trsvcid:4421 subnqn:nqn.x").unwrap();
        assert_eq!(
            t,
            TransportId {
                trtype: "tcp".into(),
                traddr: "127.0.0.1".into(),
                trsvcid: "4421".into(),
                subnqn: "nqn.x".into()
            }
        );
        assert_eq!(
            TransportId::parse("trtype=TCP traddr=::1").unwrap().trsvcid,
            "4420"
        );
        assert!(TransportId::parse("trtype:rdma traddr:x").is_err());
        assert!(TransportId::parse("traddr:x").is_err());
        assert!(TransportId::parse("trtype:tcp").is_err());
        assert!(TransportId::parse("trtype:tcp traddr:x trsvcid:http").is_err());
        assert!(TransportId::parse("trtype:tcp traddr:x bogus:1").is_err());
        let o = parse(&["-r", "trtype:tcp traddr:127.0.0.1 trsvcid:4420", "-H"]).unwrap();
        assert!(matches!(
            o.target,
            TargetSpec::Remote {
                header_digest: true,
                data_digest: false,
                ..
            }
        ));
    }
}
