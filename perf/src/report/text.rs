//! The human-readable report: one line per core and direction, then the total.

use super::{DirSummary, PERCENTILES};
use crate::engine::RunResult;
use crate::stats::JobStats;
use crate::workload::WorkloadSpec;
use std::fmt::Write;

/// Render the report.
pub fn render(spec: &WorkloadSpec, res: &RunResult) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "keel-perf: {} {} B, QD {} per core, {} core(s), {} ({:.2} s measured{})",
        spec.pattern,
        spec.io_size,
        spec.queue_depth,
        res.jobs.len(),
        res.target,
        spec.run_time.as_secs_f64(),
        if spec.ramp_time.is_zero() {
            String::new()
        } else {
            format!(" after {:.2} s ramp", spec.ramp_time.as_secs_f64())
        }
    );
    let _ = write!(
        out,
        "{:>6} {:>5} {:>12} {:>10} {:>9} {:>9} {:>10}",
        "core", "dir", "IOPS", "MiB/s", "avg(us)", "min(us)", "max(us)"
    );
    for p in PERCENTILES {
        let _ = write!(out, " {:>9}", format!("p{p}"));
    }
    out.push('\n');
    for j in &res.jobs {
        rows(&mut out, &j.core.to_string(), j);
    }
    let total = res.total();
    if res.jobs.len() > 1 {
        rows(&mut out, "total", &total);
    }
    if spec.verify {
        let _ = writeln!(
            out,
            "verify: {} blocks checked, {} corrupt, {} read before this run wrote them (not judged)",
            total.verified_blocks, total.verify_errors, total.unjudged_blocks
        );
        for c in &total.corruptions {
            let _ = writeln!(out, "  corrupt block at LBA {}: {}", c.lba, c.what);
        }
    }
    if total.io_errors > 0 {
        let _ = writeln!(out, "I/O errors: {}", total.io_errors);
    }
    out
}

fn rows(out: &mut String, who: &str, j: &JobStats) {
    let mut dirs = Vec::new();
    if j.read.ios > 0 || j.write.ios == 0 {
        dirs.push(("read", DirSummary::new(&j.read, j.runtime_ns)));
    }
    if j.write.ios > 0 {
        dirs.push(("write", DirSummary::new(&j.write, j.runtime_ns)));
    }
    if j.read.ios > 0 && j.write.ios > 0 {
        dirs.push(("all", DirSummary::new(&j.both(), j.runtime_ns)));
    }
    for (dir, s) in dirs {
        let us = |ns: f64| ns / 1000.0;
        let _ = write!(
            out,
            "{who:>6} {dir:>5} {:>12.0} {:>10.1} {:>9.2} {:>9.2} {:>10.2}",
            s.iops,
            s.mib_s,
            us(s.mean_ns),
            us(s.min_ns as f64),
            us(s.max_ns as f64)
        );
        for v in s.pct_ns {
            let _ = write!(out, " {:>9.2}", us(v as f64));
        }
        out.push('\n');
    }
}
