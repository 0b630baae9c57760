//! Running a workload on a set of reactor cores: one [`Job`] per core, set up in parallel, all
//! started at one common tick, sampled once per second for the live progress line and the IOPS
//! timeline, collected at the end. Needs a running [`keel_reactor::Runtime`] whose mask holds the
//! cores. Control path only (allocation and channels are fine here).

use crate::stats::{JobStats, LiveCounters, LiveSnapshot};
use crate::workload::{Job, Placement, TargetFactory, WorkloadSpec};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::{Duration, Instant};

/// How long a core may take to connect to the target and allocate its buffers.
const SETUP_TIMEOUT: Duration = Duration::from_secs(30);
/// How long after the planned end the engine waits for in-flight I/O before giving up.
const DRAIN_TIMEOUT: Duration = Duration::from_secs(30);

/// One second of the run, as the progress line shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since the start (end of this sample's interval).
    pub t: f64,
    /// Whether the interval lies in the ramp.
    pub ramp: bool,
    /// IOPS of each job, in core order.
    pub per_core_iops: Vec<f64>,
    /// Total IOPS.
    pub iops: f64,
    /// Total MiB/s.
    pub mib_s: f64,
    /// Mean latency over the interval, µs.
    pub avg_lat_us: f64,
}

/// What a run measured.
#[derive(Debug, Clone)]
pub struct RunResult {
    /// What the jobs drove (from the first job's target).
    pub target: String,
    /// Per-job stats in core order.
    pub jobs: Vec<JobStats>,
    /// One sample per second.
    pub timeline: Vec<Sample>,
}

impl RunResult {
    /// Every job merged.
    pub fn total(&self) -> JobStats {
        let mut t = JobStats::new(self.jobs.first().map_or(0, |j| j.core));
        for j in &self.jobs {
            t.merge(j);
        }
        t
    }
    /// Whether any I/O failed or any block failed verification.
    pub fn has_errors(&self) -> bool {
        self.jobs
            .iter()
            .any(|j| j.io_errors > 0 || j.verify_errors > 0)
    }
}

/// Messages from the jobs to the engine.
enum Msg {
    Ready(Result<String, String>),
    Done(usize, Box<JobStats>),
}

/// Run `spec` with one job per core of `cores` against targets from `factory`, calling
/// `on_sample` once per second from the calling (non-reactor) thread.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): the engine's start, sample and stop sequence
pub fn run<F: TargetFactory>(
    factory: Arc<F>,
    spec: &WorkloadSpec,
    cores: &[u32],
    mut on_sample: impl FnMut(&Sample),
) -> Result<RunResult, String> {
    spec.validate()?;
    if cores.is_empty() {
        return Err("no core to run on".into());
    }
    let jobs = cores.len();
    let live: Vec<Arc<LiveCounters>> = (0..jobs).map(|_| Arc::default()).collect();
    let (tx, rx) = mpsc::channel::<Msg>();
    let mut go = Vec::with_capacity(jobs);
    for (i, &core) in cores.iter().enumerate() {
        let (go_tx, go_rx) = keel_reactor::oneshot::<u64>();
        go.push(go_tx);
        let factory = Arc::clone(&factory);
        let spec = spec.clone();
        let live = Arc::clone(&live[i]);
        let tx = tx.clone();
        let place = Placement {
            core,
            index: i as u32,
            jobs: jobs as u32,
        };
        keel_reactor::spawn_on(core, move || async move {
            let job = match factory.connect(spec.writes()).await {
                Ok(t) => Job::new(t, &spec, place, live),
                Err(e) => Err(e.to_string()),
            };
            let job = match job {
                Ok(job) => {
                    let _ = tx.send(Msg::Ready(Ok(job.describe())));
                    job
                }
                Err(e) => {
                    let _ = tx.send(Msg::Ready(Err(format!("core {core}: {e}"))));
                    return;
                }
            };
            // Dropped sender (setup failed elsewhere): the job ends without running.
            if let Ok(start) = go_rx.await {
                job.start(start);
                let stats = job.finished().await;
                let _ = tx.send(Msg::Done(i, Box::new(stats)));
            }
        })
        .map_err(|e| format!("cannot start a job on core {core}: {e}"))?;
    }
    drop(tx);

    let mut target = String::new();
    let mut failures = Vec::new();
    for _ in 0..jobs {
        match rx.recv_timeout(SETUP_TIMEOUT) {
            Ok(Msg::Ready(Ok(t))) => target = t,
            Ok(Msg::Ready(Err(e))) => failures.push(e),
            Ok(Msg::Done(..)) => unreachable!("no job runs before the start"),
            Err(e) => failures.push(format!("a job did not get ready: {e}")),
        }
    }
    if !failures.is_empty() {
        return Err(failures.join("; "));
    }
    log::info!(
        "running {} on {jobs} core(s) {cores:?} against {target}",
        spec.pattern
    );
    let start = keel_reactor::ticks();
    let t0 = Instant::now();
    for g in go {
        g.send(start);
    }

    let planned = spec.ramp_time + spec.run_time;
    let mut results: Vec<Option<JobStats>> = (0..jobs).map(|_| None).collect();
    let mut done = 0;
    let mut timeline = Vec::new();
    let mut prev: Vec<LiveSnapshot> = vec![LiveSnapshot::default(); jobs];
    let mut prev_t = t0;
    let mut next = t0 + Duration::from_secs(1);
    while done < jobs {
        let now = Instant::now();
        if now > t0 + planned + DRAIN_TIMEOUT {
            return Err(format!(
                "{} job(s) still have I/O in flight {}s after the end of the run",
                jobs - done,
                DRAIN_TIMEOUT.as_secs()
            ));
        }
        match rx.recv_timeout(next.saturating_duration_since(now)) {
            Ok(Msg::Done(i, stats)) => {
                results[i] = Some(*stats);
                done += 1;
            }
            Ok(Msg::Ready(..)) => {}
            Err(mpsc::RecvTimeoutError::Timeout) => {
                let now = Instant::now();
                if now.duration_since(t0) <= planned + Duration::from_millis(500) {
                    let s = sample(&live, &mut prev, now - prev_t, now - t0, spec.ramp_time);
                    on_sample(&s);
                    timeline.push(s);
                }
                prev_t = now;
                next += Duration::from_secs(1);
            }
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                return Err("a job ended without reporting (reactor stopped?)".into());
            }
        }
    }
    Ok(RunResult {
        target,
        jobs: results.into_iter().flatten().collect(),
        timeline,
    })
}

/// Read every job's live counters and turn the deltas since `prev` into a sample.
fn sample(
    live: &[Arc<LiveCounters>],
    prev: &mut [LiveSnapshot],
    dt: Duration,
    since_start: Duration,
    ramp: Duration,
) -> Sample {
    let secs = dt.as_secs_f64().max(1e-9);
    let (mut ios, mut bytes, mut lat) = (0u64, 0u64, 0u64);
    let mut per_core_iops = Vec::with_capacity(live.len());
    for (c, p) in live.iter().zip(prev.iter_mut()) {
        let s = c.snapshot();
        let d_ios = s.ios - p.ios;
        ios += d_ios;
        bytes += s.bytes - p.bytes;
        lat += s.lat_ns - p.lat_ns;
        per_core_iops.push(d_ios as f64 / secs);
        *p = s;
    }
    Sample {
        t: since_start.as_secs_f64(),
        // An interval counts as ramp when most of it lies in the ramp.
        ramp: since_start.saturating_sub(dt / 2) < ramp,
        per_core_iops,
        iops: ios as f64 / secs,
        mib_s: bytes as f64 / secs / (1024.0 * 1024.0),
        avg_lat_us: if ios == 0 {
            0.0
        } else {
            lat as f64 / ios as f64 / 1000.0
        },
    }
}
