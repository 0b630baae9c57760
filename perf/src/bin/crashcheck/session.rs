//! One run of the checker: read the journal, start a one-core reactor runtime, connect the
//! controller and one I/O queue pair per namespace there, run the engine, wait for its report.

use crate::engine_hot::{Engine, Mode, NsRun, Report, Settings};
use crate::journal::{self, Journal};
use crate::ledger::Ledger;
use keel_nvmf_host::{ConnectOpts, Controller, IoQpair};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::mpsc::{self, Sender};
use std::sync::Arc;
use std::time::Duration;

/// Largest logical block the checker drives (an I/O step is 4 KiB).
const MAX_BLOCK: u32 = 4096;
/// Time allowed for connecting.
const SETUP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run, from the command line (sizes in bytes).
#[derive(Debug, Clone)]
pub struct Plan {
    /// Target address (IP or host name).
    pub addr: String,
    /// Target port.
    pub port: u16,
    /// Subsystem NQN.
    pub nqn: String,
    /// Namespaces (empty: every active one).
    pub nsids: Vec<u32>,
    /// Journal path.
    pub journal: String,
    /// Header digests.
    pub hdgst: bool,
    /// Data digests.
    pub ddgst: bool,
    /// Write or verify.
    pub mode: Mode,
    /// Commands in flight.
    pub qd: usize,
    /// Region of each namespace used (None: all).
    pub region_bytes: Option<u64>,
    /// Cluster size of the volumes.
    pub cluster_bytes: u64,
    /// Smallest I/O.
    pub min_io_bytes: u64,
    /// Largest I/O.
    pub max_io_bytes: u64,
    /// Write mode's time limit.
    pub duration_secs: f64,
    /// New clusters per second.
    pub fresh_per_sec: f64,
    /// Percentage of reads (write mode).
    pub read_pct: u64,
    /// PRNG seed.
    pub seed: u64,
}

/// Run the plan to its end on a one-core runtime started for it; returns the engine's report.
pub fn run(plan: Plan) -> Result<Report, String> {
    let cpumask = CpuMask::parse("0x1").map_err(|e| format!("cpumask: {e}"))?;
    let runtime = Runtime::start(
        RuntimeOptions {
            cpumask,
            interrupt_mode: false,
            pin_threads: false,
        },
        || {},
    )
    .map_err(|e| format!("cannot start the reactor: {e}"))?;
    let result = run_on(0, plan, |desc, mode| {
        let verb = if mode == Mode::Write {
            "writing"
        } else {
            "verifying"
        };
        println!("keel-crashcheck: {verb}: {desc}");
        use std::io::Write as _;
        let _ = std::io::stdout().flush();
    });
    keel_reactor::request_shutdown();
    runtime.join();
    result
}

/// Run the plan on reactor `core` of a running runtime; `started` hears what runs once the
/// connections are up.
pub fn run_on(core: u32, plan: Plan, started: impl FnOnce(&str, Mode)) -> Result<Report, String> {
    let ledger = journal::load(&plan.journal)?;
    let addr = resolve(&plan.addr, plan.port)?;
    let (started_tx, started_rx) = mpsc::channel();
    let (done_tx, done_rx) = mpsc::channel();
    let mode = plan.mode;
    let limit = if mode == Mode::Write {
        Duration::from_secs_f64(plan.duration_secs) + Duration::from_secs(60)
    } else {
        Duration::from_secs(24 * 3600)
    };
    keel_reactor::spawn_on(core, move || async move {
        let r = setup(plan, addr, ledger, done_tx).await;
        let _ = started_tx.send(r);
    })
    .map_err(|e| format!("reactor: {e}"))?;
    match started_rx.recv_timeout(SETUP_TIMEOUT) {
        Err(_) => Err("connecting took too long".into()),
        Ok(Err(e)) => Err(e),
        Ok(Ok(desc)) => {
            started(&desc, mode);
            done_rx
                .recv_timeout(limit)
                .map_err(|_| "the run did not end in time".to_string())
        }
    }
}

fn resolve(addr: &str, port: u16) -> Result<SocketAddr, String> {
    (addr, port)
        .to_socket_addrs()
        .map_err(|e| format!("cannot resolve {addr}: {e}"))?
        .next()
        .ok_or_else(|| format!("{addr} has no address"))
}

/// On the reactor: connect, check the namespaces against the journal, start the engine.
/// Returns a description of what runs.
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): the session bring-up sequence, step by step
async fn setup(
    plan: Plan,
    addr: SocketAddr,
    mut ledger: Ledger,
    done: Sender<Report>,
) -> Result<String, String> {
    let mut opts = ConnectOpts::new(addr, &plan.nqn);
    opts.hdgst = plan.hdgst;
    opts.ddgst = plan.ddgst;
    opts.io_queue_depth = (plan.qd + 1).clamp(2, 1024) as u16;
    opts.io_queues = 64; // one per namespace is used; the controller may grant fewer
    let ctrlr = Controller::connect(&opts)
        .await
        .map_err(|e| format!("cannot connect to {} at {addr}: {e}", plan.nqn))?;
    let info = Arc::clone(ctrlr.info());
    let nsids: Vec<u32> = if plan.nsids.is_empty() {
        info.namespaces.iter().map(|n| n.nsid).collect()
    } else {
        plan.nsids.clone()
    };
    if nsids.is_empty() {
        return Err(format!("{} has no active namespace", plan.nqn));
    }
    if nsids.len() > usize::from(info.io_queues) {
        return Err(format!(
            "{} namespaces but only {} I/O queues granted",
            nsids.len(),
            info.io_queues
        ));
    }
    let mut bs = 0;
    for &nsid in &nsids {
        let ns = info
            .namespace(nsid)
            .ok_or_else(|| format!("namespace {nsid} is not active on {}", plan.nqn))?;
        if bs != 0 && ns.block_size != bs {
            return Err("the namespaces have different block sizes".into());
        }
        bs = ns.block_size;
    }
    if !bs.is_power_of_two() || !(crate::block::MIN_BLOCK as u32..=MAX_BLOCK).contains(&bs) {
        return Err(format!(
            "block size {bs} is not supported (64 to 4096, a power of two)"
        ));
    }
    if plan.mode == Mode::Verify {
        if let Some(n) = ledger.namespaces.iter().find(|n| !nsids.contains(&n.nsid)) {
            return Err(format!(
                "the journal has writes to namespace {}, which is not being verified",
                n.nsid
            ));
        }
    }
    let journal = Journal::open(&plan.journal, bs, ledger.block_size)?;
    let bs64 = u64::from(bs);
    let align = 4096 / bs64;
    let cap = (u64::from(info.max_xfer) / 4096).max(1) * align;
    let max_io = (plan.max_io_bytes / bs64).min(cap);
    let min_io = (plan.min_io_bytes / bs64).min(max_io);
    let cluster_blocks = plan.cluster_bytes / bs64;
    let mut runs = Vec::new();
    let mut desc = Vec::new();
    for &nsid in &nsids {
        let ns = *info.namespace(nsid).ok_or("namespace vanished")?;
        let mut region = plan.region_bytes.map_or(ns.num_blocks, |b| b / bs64);
        if plan.mode == Mode::Verify {
            region = region.max(ledger.ns(nsid).map_or(0, |n| n.end()));
        }
        if region > ns.num_blocks {
            return Err(format!(
                "namespace {nsid} has {} blocks; the journal or --region-mib needs {region}",
                ns.num_blocks
            ));
        }
        if region < align {
            return Err(format!(
                "namespace {nsid} region of {region} blocks is too small"
            ));
        }
        let qp = IoQpair::connect(&info, nsid)
            .await
            .map_err(|e| format!("cannot connect an I/O queue for namespace {nsid}: {e}"))?;
        desc.push(format!("ns {nsid} ({region} of {} blocks)", ns.num_blocks));
        runs.push(NsRun::new(qp, &mut ledger, region, cluster_blocks));
    }
    let duration_ticks = if plan.mode == Mode::Write {
        (plan.duration_secs * keel_reactor::tick_rate() as f64) as u64
    } else {
        u64::MAX / 4
    };
    let settings = Settings {
        mode: plan.mode,
        qd: plan.qd,
        align_blocks: align,
        min_io_blocks: min_io,
        max_io_blocks: max_io,
        cluster_blocks,
        fresh_per_sec: plan.fresh_per_sec,
        read_pct: plan.read_pct,
        duration_ticks,
        seed: plan.seed,
    };
    let text = format!(
        "{} at {addr}, {}-byte blocks, QD {}, I/O {}-{} KiB, cluster {} KiB, {} (journal {}, \
         next generation {}, seed {})",
        plan.nqn,
        bs,
        plan.qd,
        min_io * bs64 / 1024,
        max_io * bs64 / 1024,
        plan.cluster_bytes / 1024,
        desc.join(", "),
        plan.journal,
        ledger.max_generation + 1,
        plan.seed
    );
    Engine::new(settings, bs, ledger, journal, runs, ctrlr, done).start();
    Ok(text)
}

#[cfg(test)]
mod tests {
    //! The checker end to end in one process: a Keel target (TCP, two malloc namespaces) on an
    //! ephemeral loopback port, a short write run, verify runs — clean, with a write of unknown
    //! outcome, and against a doctored journal that claims writes the target never saw.
    use super::*;
    use crate::block::Found;
    use crate::engine_hot::End;
    use std::io::Write as _;

    const NQN: &str = "nqn.2016-06.io.keel:crashcheck-test";
    const BLOCKS: u64 = 8192; // 32 MiB of 4 KiB blocks per namespace
    const REGION: u64 = 16 << 20;
    const CLUSTER: u64 = 1 << 20;

    fn start_target() -> u16 {
        let namespaces = [("CcMalloc0", BLOCKS), ("CcMalloc1", BLOCKS)];
        keel_testkit::nvmf::tcp_target(NQN, &namespaces).port()
    }

    fn plan(port: u16, mode: Mode, journal: &str) -> Plan {
        Plan {
            addr: "127.0.0.1".into(),
            port,
            nqn: NQN.into(),
            nsids: Vec::new(),
            journal: journal.into(),
            hdgst: false,
            ddgst: false,
            mode,
            qd: 16,
            region_bytes: Some(REGION),
            cluster_bytes: CLUSTER,
            min_io_bytes: 4096,
            max_io_bytes: 64 << 10,
            duration_secs: 0.3,
            fresh_per_sec: 20.0,
            read_pct: 20,
            seed: 7,
        }
    }

    fn append(path: &str, line: &str) {
        let mut f = std::fs::OpenOptions::new().append(true).open(path).unwrap();
        writeln!(f, "{line}").unwrap();
    }

    #[test]
    fn writes_verify_and_lost_writes_are_reported() {
        let port = start_target();
        let jp = std::env::temp_dir().join(format!("keel-crashcheck-e2e-{}", std::process::id()));
        let _ = std::fs::remove_file(&jp);
        let journal = jp.to_string_lossy().into_owned();

        let w = run_on(0, plan(port, Mode::Write, &journal), |_, _| {}).unwrap();
        assert_eq!(w.end, End::Duration);
        let c = &w.counters;
        assert!(
            c.writes_acked > 0 && c.fresh_clusters > 0 && c.reads > 0,
            "{c:?}"
        );
        assert_eq!(
            (c.violations, c.io_errors, c.writes_uncertain),
            (0, 0, 0),
            "{c:?}"
        );
        assert_eq!(c.writes, c.writes_acked);

        // A write of unknown outcome into a cluster never written: it did not land.
        let led = journal::load(&journal).unwrap();
        let ns1 = led.ns(1).unwrap();
        let per = CLUSTER / 4096;
        let empty = (0..REGION / CLUSTER)
            .find(|&k| (k * per..(k + 1) * per).all(|l| !ns1.touched(l)))
            .expect("a cluster the short run did not touch");
        let g = led.max_generation;
        append(&journal, &format!("M 1 {} 2 {}", empty * per, g + 1));
        let v = run_on(0, plan(port, Mode::Verify, &journal), |_, _| {}).unwrap();
        assert_eq!(v.end, End::Complete);
        let c = &v.counters;
        assert_eq!((c.violations, c.io_errors), (0, 0), "{:?}", v.violations);
        assert_eq!(c.blocks_checked, 2 * REGION / 4096);
        assert_eq!(c.not_landed, 2);
        assert!(c.acked_ok > 0 && c.unwritten > 0, "{c:?}");
        assert_eq!(v.clusters.len(), 2);
        let k1 = v.clusters.iter().find(|k| k.nsid == 1).unwrap();
        assert!(
            k1.with_data > 0 && k1.with_data < REGION / CLUSTER,
            "{k1:?}"
        );
        assert_eq!(k1.maybe_allocated, 1);

        // The journal now claims a newer write over acknowledged data and one into zeroes.
        let led = journal::load(&journal).unwrap();
        let ns1 = led.ns(1).unwrap();
        assert!(
            !ns1.is_uncertain(empty * per),
            "verify settled the uncertain block"
        );
        let acked = (0..REGION / 4096).find(|&l| ns1.acked(l) != 0).unwrap();
        let old = ns1.acked(acked);
        let zero = (0..REGION / 4096).find(|&l| !ns1.touched(l)).unwrap();
        let g = led.max_generation;
        append(&journal, &format!("A 1 {acked} 1 {}", g + 1));
        append(&journal, &format!("A 1 {zero} 1 {}", g + 2));
        let v = run_on(0, plan(port, Mode::Verify, &journal), |_, _| {}).unwrap();
        assert_eq!(v.counters.violations, 2, "{:?}", v.violations);
        let lost = |lba: u64| v.violations.iter().find(|x| x.lba == lba).unwrap();
        assert_eq!(lost(acked).found, Found::Stamped(old));
        assert_eq!(lost(acked).acked, g + 1);
        assert_eq!(lost(zero).found, Found::Zeroes);
        let _ = std::fs::remove_file(&jp);
    }
}
