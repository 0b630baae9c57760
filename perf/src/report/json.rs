//! fio-compatible JSON (`--json`): the layout of `fio --output-format=json` for the fields
//! keel-perf has — one entry of `jobs` per core, each with `read`, `write` and `trim`
//! (`io_bytes`, `io_kbytes`, `bw_bytes`, `bw` in KiB/s, `iops`, `runtime` in ms, `total_ios`,
//! `lat_ns` and `clat_ns` with fio's percentile keys) — so fio's tooling reads it. Latency is
//! measured from submission to completion, which is fio's `lat`; `clat_ns` carries the same
//! figures (keel-perf has no separate submission latency). keel-perf's own extras live under
//! the key `keel` (fio tools ignore unknown keys).

use crate::engine::RunResult;
use crate::stats::{DirStats, JobStats};
use crate::workload::WorkloadSpec;
use serde_json::{json, Map, Value};

/// The percentiles fio prints by default, with fio's key spelling.
pub const FIO_PERCENTILES: [f64; 17] = [
    1.0, 5.0, 10.0, 20.0, 30.0, 40.0, 50.0, 60.0, 70.0, 80.0, 90.0, 95.0, 99.0, 99.5, 99.9, 99.95,
    99.99,
];

/// Build the JSON document.
pub fn render(spec: &WorkloadSpec, res: &RunResult) -> Value {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let jobs: Vec<Value> = res.jobs.iter().map(|j| job(spec, j)).collect();
    json!({
        "fio version": format!("keel-perf-{}", env!("CARGO_PKG_VERSION")),
        "timestamp": now.as_secs(),
        "timestamp_ms": now.as_millis() as u64,
        "time": format!("{}", now.as_secs()),
        "jobs": jobs,
        "keel": {
            "target": res.target,
            "timeline": res.timeline.iter().map(|s| json!({
                "t": s.t,
                "ramp": s.ramp,
                "iops": s.iops,
                "per_core_iops": s.per_core_iops,
            })).collect::<Vec<_>>(),
        },
    })
}

fn job(spec: &WorkloadSpec, j: &JobStats) -> Value {
    let runtime_ms = j.runtime_ns / 1_000_000;
    let mut options = Map::new();
    for (k, v) in [
        ("rw", spec.pattern.name().to_string()),
        ("bs", spec.io_size.to_string()),
        ("iodepth", spec.queue_depth.to_string()),
        ("rwmixread", spec.read_percent.to_string()),
        ("runtime", format!("{}", spec.run_time.as_secs_f64())),
        ("ramp_time", format!("{}", spec.ramp_time.as_secs_f64())),
        ("cpus_allowed", j.core.to_string()),
        ("randseed", spec.seed.to_string()),
    ] {
        options.insert(k.into(), Value::String(v));
    }
    json!({
        "jobname": format!("core{}", j.core),
        "groupid": 0,
        "error": i32::from(j.io_errors > 0 || j.verify_errors > 0),
        "eta": 0,
        "elapsed": (j.runtime_ns as f64 / 1e9).round() as u64,
        "job options": options,
        "read": dir(&j.read, j.runtime_ns),
        "write": dir(&j.write, j.runtime_ns),
        "trim": dir(&DirStats::new(), j.runtime_ns),
        "job_runtime": runtime_ms,
        "keel": {
            "io_errors": j.io_errors,
            "verify_errors": j.verify_errors,
            "verified_blocks": j.verified_blocks,
            "unjudged_blocks": j.unjudged_blocks,
            "corruptions": j.corruptions.iter().map(|c| json!({
                "lba": c.lba,
                "what": c.what.to_string(),
            })).collect::<Vec<_>>(),
        },
    })
}

/// fio's per-direction object.
fn dir(d: &DirStats, runtime_ns: u64) -> Value {
    let secs = runtime_ns as f64 / 1e9;
    let (iops, bw_bytes) = if secs > 0.0 {
        (d.ios as f64 / secs, (d.bytes as f64 / secs) as u64)
    } else {
        (0.0, 0)
    };
    let stddev = if d.ios == 0 { 0.0 } else { d.hist.stdev() };
    let lat = json!({
        "min": d.min_ns(),
        "max": d.lat_max_ns,
        "mean": d.mean_ns(),
        "stddev": stddev,
        "N": d.ios,
    });
    let mut clat = lat.clone();
    if d.ios > 0 {
        let pct: Map<String, Value> = FIO_PERCENTILES
            .iter()
            .map(|&p| (format!("{p:.6}"), Value::from(d.percentile_ns(p))))
            .collect();
        clat["percentile"] = Value::Object(pct);
    }
    json!({
        "io_bytes": d.bytes,
        "io_kbytes": d.bytes / 1024,
        "bw_bytes": bw_bytes,
        "bw": bw_bytes / 1024,
        "iops": iops,
        "runtime": runtime_ns / 1_000_000,
        "total_ios": d.ios,
        "short_ios": 0,
        "drop_ios": 0,
        "clat_ns": clat,
        "lat_ns": lat,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::{RunResult, Sample};
    use crate::workload::Pattern;

    fn result() -> RunResult {
        let mut j = JobStats::new(3);
        for i in 0..10_000u64 {
            j.read.record(2_000 + i % 1000, 4096);
        }
        j.runtime_ns = 2_000_000_000;
        RunResult {
            target: "bdev Null0 (Null disk)".into(),
            jobs: vec![j],
            timeline: vec![Sample {
                t: 1.0,
                ramp: false,
                per_core_iops: vec![5000.0],
                iops: 5000.0,
                mib_s: 19.5,
                avg_lat_us: 2.5,
            }],
        }
    }

    /// The output parses as JSON and carries fio's keys, names and units.
    #[test]
    fn output_parses_with_fio_keys_and_units() {
        let spec = WorkloadSpec::new(Pattern::RandRead);
        let text = serde_json::to_string_pretty(&render(&spec, &result())).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert!(v["fio version"].as_str().unwrap().starts_with("keel-perf"));
        let job = &v["jobs"][0];
        assert_eq!(job["jobname"], "core3");
        assert_eq!(job["job options"]["rw"], "randread");
        let r = &job["read"];
        for key in [
            "io_bytes",
            "io_kbytes",
            "bw_bytes",
            "bw",
            "iops",
            "runtime",
            "total_ios",
            "lat_ns",
            "clat_ns",
        ] {
            assert!(r.get(key).is_some(), "read.{key} missing");
        }
        assert_eq!(r["io_bytes"], 10_000 * 4096);
        assert_eq!(r["runtime"], 2000, "runtime is in ms");
        assert_eq!(r["bw"], 10_000 * 4096 / 2 / 1024, "bw is in KiB/s");
        assert_eq!(r["iops"].as_f64(), Some(5000.0));
        for key in ["min", "max", "mean", "stddev", "N"] {
            assert!(r["lat_ns"].get(key).is_some(), "lat_ns.{key} missing");
        }
        assert_eq!(r["lat_ns"]["min"], 2000);
        assert_eq!(r["lat_ns"]["max"], 2999);
        let pct = &r["clat_ns"]["percentile"];
        for key in [
            "50.000000",
            "90.000000",
            "99.000000",
            "99.900000",
            "99.990000",
        ] {
            let ns = pct[key]
                .as_u64()
                .unwrap_or_else(|| panic!("percentile {key}"));
            assert!((2000..=3003).contains(&ns), "{key}: {ns}");
        }
        // No writes: fio's shape with zeroes and no percentile table.
        assert_eq!(job["write"]["iops"].as_f64(), Some(0.0));
        assert!(job["write"]["clat_ns"].get("percentile").is_none());
        assert_eq!(job["trim"]["total_ios"], 0);
    }

    /// The same check fio's own output passes, if fio is installed: our key set per direction
    /// is a subset of fio's.
    #[test]
    fn keys_are_a_subset_of_real_fio_output() {
        let out = std::process::Command::new("fio")
            .args([
                "--name=k",
                "--ioengine=null",
                "--rw=randread",
                "--size=1m",
                "--io_size=64k",
                "--output-format=json",
            ])
            .output();
        let Ok(out) = out else {
            eprintln!("fio not installed: comparing against the documented layout only");
            return;
        };
        let fio: Value = serde_json::from_slice(&out.stdout).expect("fio JSON parses");
        let ours = render(&WorkloadSpec::new(Pattern::RandRead), &result());
        let keys = |v: &Value| -> Vec<String> { v.as_object().unwrap().keys().cloned().collect() };
        for k in keys(&ours["jobs"][0]["read"]) {
            assert!(
                fio["jobs"][0]["read"].get(&k).is_some(),
                "fio has no read.{k}"
            );
        }
        for k in keys(&ours["jobs"][0]) {
            if k != "keel" {
                assert!(fio["jobs"][0].get(&k).is_some(), "fio has no job key {k}");
            }
        }
        for k in keys(&ours["jobs"][0]["read"]["clat_ns"]["percentile"]) {
            assert!(
                fio["jobs"][0]["read"]["clat_ns"]["percentile"]
                    .get(&k)
                    .is_some(),
                "fio has no percentile {k}"
            );
        }
    }
}
