//! `keel-crashcheck`: crash-consistency checker for a Keel target over NVMe/TCP.
//!
//! `write` drives random verifying writes (every block stamped with namespace, LBA, generation
//! and CRC) until the target dies or a duration ends, and journals each acknowledged write;
//! `verify` (after the target restarted) reads every block of the region and checks that each
//! one holds its last acknowledged generation or a newer one that was in flight, and that
//! blocks never written read as zeroes. See scripts/crash-test.sh for the kill/restart loop.
//!
//! Modules: `block` (the stamped block format), `ledger` (what may be read where),
//! `journal` (the record file), `engine_hot` (the I/O loop), `session` (reactor and
//! connection set-up).

#[path = "crashcheck/block.rs"]
mod block;
#[path = "crashcheck/engine_hot.rs"]
mod engine_hot;
#[path = "crashcheck/journal.rs"]
mod journal;
#[path = "crashcheck/ledger.rs"]
mod ledger;
#[path = "crashcheck/session.rs"]
mod session;

use clap::{Args, Parser, Subcommand};
use engine_hot::{End, Mode, Report};

/// Crash-consistency checker: verifying writes over NVMe/TCP, then a check after a restart.
#[derive(Debug, Parser)]
#[command(name = "keel-crashcheck", version)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Random verifying writes until the target dies (connection lost) or --duration ends.
    Write {
        #[command(flatten)]
        common: Common,
        /// Stop after this many seconds if the target is still alive.
        #[arg(long, default_value_t = 3600.0)]
        duration: f64,
        /// Smallest write in KiB (a multiple of 4).
        #[arg(long, default_value_t = 4)]
        min_io_kib: u64,
        /// Largest write in KiB (a multiple of 4).
        #[arg(long, default_value_t = 64)]
        max_io_kib: u64,
        /// New clusters touched per second (first writes into unallocated clusters).
        #[arg(long, default_value_t = 20.0)]
        fresh_per_sec: f64,
        /// Percentage of commands that are verifying reads of touched clusters.
        #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u64).range(0..=100))]
        read_pct: u64,
        /// PRNG seed (default: from the clock).
        #[arg(long)]
        seed: Option<u64>,
    },
    /// Read every block of the region and check it against the journal.
    Verify {
        #[command(flatten)]
        common: Common,
        /// Read size in KiB.
        #[arg(long, default_value_t = 128)]
        io_kib: u64,
    },
}

/// Options of both modes.
#[derive(Debug, Args)]
struct Common {
    /// Target address.
    #[arg(long, default_value = "127.0.0.1")]
    addr: String,
    /// Target TCP port.
    #[arg(long, default_value_t = 4420)]
    port: u16,
    /// Subsystem NQN.
    #[arg(long)]
    nqn: String,
    /// Namespace ids to use (repeat or comma-separate; default: every active namespace).
    #[arg(long, value_delimiter = ',')]
    nsid: Vec<u32>,
    /// The journal file (appended; read first if it exists).
    #[arg(long)]
    journal: String,
    /// Commands in flight, over all namespaces.
    #[arg(long, default_value_t = 32, value_parser = clap::value_parser!(u64).range(1..=1024))]
    qd: u64,
    /// Use only the first MiB of each namespace (default: all of it).
    #[arg(long)]
    region_mib: Option<u64>,
    /// The volumes' cluster size in KiB (first touches are made per cluster).
    #[arg(long, default_value_t = 1024)]
    cluster_kib: u64,
    /// Ask for header digests.
    #[arg(long)]
    hdgst: bool,
    /// Ask for data digests.
    #[arg(long)]
    ddgst: bool,
}

fn main() {
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn")).init();
    let cli = Cli::parse();
    std::process::exit(run(cli));
}

/// Exit codes: 0 clean, 1 violations or I/O errors, 2 usage or set-up errors.
fn run(cli: Cli) -> i32 {
    let (common, mode, what) = match &cli.cmd {
        Cmd::Write { common, .. } => (common, Mode::Write, "write"),
        Cmd::Verify { common, .. } => (common, Mode::Verify, "verify"),
    };
    let plan = match plan(&cli.cmd, common, mode) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("keel-crashcheck {what}: {e}");
            return 2;
        }
    };
    match session::run(plan) {
        Ok(report) => print_report(what, mode, &report),
        Err(e) => {
            eprintln!("keel-crashcheck {what}: {e}");
            2
        }
    }
}

/// Turn the options into a session plan (sizes still in bytes: the block size is not known
/// before connecting).
fn plan(cmd: &Cmd, c: &Common, mode: Mode) -> Result<session::Plan, String> {
    let (min_io, max_io, duration, fresh, read_pct, seed) = match cmd {
        Cmd::Write {
            duration,
            min_io_kib,
            max_io_kib,
            fresh_per_sec,
            read_pct,
            seed,
            ..
        } => {
            if !(duration.is_finite() && *duration > 0.0) {
                return Err("--duration must be a positive number of seconds".into());
            }
            if !(fresh_per_sec.is_finite() && *fresh_per_sec >= 0.0) {
                return Err("--fresh-per-sec must be 0 or more".into());
            }
            let seed = seed.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(1, |d| d.as_nanos() as u64)
            });
            (
                *min_io_kib,
                *max_io_kib,
                *duration,
                *fresh_per_sec,
                *read_pct,
                seed,
            )
        }
        Cmd::Verify { io_kib, .. } => (*io_kib, *io_kib, 0.0, 0.0, 0, 0),
    };
    for (name, v) in [
        ("I/O size", min_io),
        ("I/O size", max_io),
        ("--cluster-kib", c.cluster_kib),
    ] {
        if v == 0 || v % 4 != 0 || v > 1 << 20 {
            return Err(format!(
                "{name} {v} KiB must be a positive multiple of 4 KiB"
            ));
        }
    }
    if min_io > max_io {
        return Err(format!(
            "--min-io-kib {min_io} is above --max-io-kib {max_io}"
        ));
    }
    if c.cluster_kib < max_io && mode == Mode::Write {
        return Err(format!(
            "--max-io-kib {max_io} exceeds --cluster-kib {} (writes stay inside a cluster)",
            c.cluster_kib
        ));
    }
    if c.nqn.is_empty() {
        return Err("--nqn is required".into());
    }
    Ok(session::Plan {
        addr: c.addr.clone(),
        port: c.port,
        nqn: c.nqn.clone(),
        nsids: c.nsid.clone(),
        journal: c.journal.clone(),
        hdgst: c.hdgst,
        ddgst: c.ddgst,
        mode,
        qd: c.qd as usize,
        region_bytes: c.region_mib.map(|m| m << 20),
        cluster_bytes: c.cluster_kib << 10,
        min_io_bytes: min_io << 10,
        max_io_bytes: max_io << 10,
        duration_secs: duration,
        fresh_per_sec: fresh,
        read_pct,
        seed,
    })
}

/// Print what happened; returns the exit code.
fn print_report(what: &str, mode: Mode, r: &Report) -> i32 {
    let c = &r.counters;
    let end = match r.end {
        End::Duration => "duration elapsed",
        End::Complete => "every block read",
        End::TargetLost => "connection to the target lost",
        End::Failed => "stopped by an error",
    };
    for v in &r.violations {
        println!("VIOLATION {v}");
    }
    if c.violations > r.violations.len() as u64 {
        println!(
            "... {} more violations",
            c.violations - r.violations.len() as u64
        );
    }
    for e in &r.errors {
        println!("ERROR {e}");
    }
    for k in &r.clusters {
        println!(
            "keel-crashcheck clusters: ns {} with data {} maybe allocated {}",
            k.nsid, k.with_data, k.maybe_allocated
        );
    }
    println!(
        "keel-crashcheck {what}: {end}; writes {} (acknowledged {} = {} blocks, uncertain {}), \
         new clusters {}, reads {}, blocks checked {} (unwritten {}, acknowledged data {}, \
         landed in-flight data {}, in-flight data not landed {}), I/O errors {}, violations {}",
        c.writes,
        c.writes_acked,
        c.blocks_acked,
        c.writes_uncertain,
        c.fresh_clusters,
        c.reads,
        c.blocks_checked,
        c.unwritten,
        c.acked_ok,
        c.landed,
        c.not_landed,
        c.io_errors,
        c.violations
    );
    let failed = c.violations > 0
        || c.io_errors > 0
        || r.end == End::Failed
        || (mode == Mode::Verify && r.end != End::Complete);
    if failed {
        println!("keel-crashcheck {what}: FAIL");
        1
    } else {
        println!("keel-crashcheck {what}: OK");
        0
    }
}
