//! The binary's run: validate options, start the reactors, build the bdev (flags or JSON
//! config) or connect the NVMe/TCP controller (`-r`), run the engine with a live progress line, tear down, report. Returns the exit code:
//! 0 on success, 1 when the run failed or saw I/O or verify errors, 2 for bad usage.

use crate::cli::{Args, Options, QuickBdev, TargetSpec, TransportId};
use crate::engine::{self, RunResult, Sample};
use crate::report;
use crate::workload::{nvmf_tcp, BdevTargetFactory, NvmfTcpTargetFactory, TargetFactory};
use keel_bdev::modules::{malloc, null, uring};
use keel_nvmf_host::{ConnectOpts, CtrlrInfo};
use keel_reactor::pool::{self, PoolConfig};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use std::io::Write;
use std::net::{SocketAddr, ToSocketAddrs};
use std::sync::{mpsc, Arc};
use std::time::Duration;

/// Run keel-perf with parsed arguments; returns the process exit code.
pub fn run(args: Args) -> i32 {
    let opts = match args.to_options() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("keel-perf: {e}");
            return 2;
        }
    };
    let mask = match CpuMask::parse_and_validate(&opts.cpumask) {
        Ok(m) => m,
        Err(e) => {
            eprintln!("keel-perf: -c {}: {e}", opts.cpumask);
            return 2;
        }
    };
    match run_with_reactors(&opts, &mask) {
        Ok(res) => {
            if let Err(e) = output(&opts, &res) {
                eprintln!("keel-perf: {e}");
                return 1;
            }
            i32::from(res.has_errors())
        }
        Err(e) => {
            eprintln!("keel-perf: {e}");
            1
        }
    }
}

/// Start the reactors, set up the target (a bdev, or a controller over NVMe/TCP), run, tear
/// down.
fn run_with_reactors(opts: &Options, mask: &CpuMask) -> Result<RunResult, String> {
    pool::configure(PoolConfig {
        max_pages_per_core: (opts.pool_size_mb as usize * 1024 * 1024 / pool::PAGE_SIZE).max(1),
        use_hugepages: true,
    });
    keel_rpc::register_builtin_methods();
    keel_bdev::rpc::register();
    keel_lvol::register_rpcs();
    if matches!(opts.target, TargetSpec::Config { .. }) {
        // A config may build raid bdevs (bdev_raid_create); quick bdevs are never examined
        // for raid superblocks, so a former member file is benchmarked as it is.
        keel_raid::register_rpcs();
    }
    let runtime = Runtime::start(
        RuntimeOptions {
            cpumask: mask.clone(),
            interrupt_mode: false,
            pin_threads: true,
        },
        || {},
    )
    .map_err(|e| format!("cannot start reactors: {e}"))?;
    let main = mask.cores()[0];
    let result = match &opts.target {
        TargetSpec::Remote {
            trid,
            header_digest,
            data_digest,
        } => run_remote(opts, mask, trid, *header_digest, *data_digest),
        _ => run_local(opts, mask),
    };
    let _ = on_main(main, teardown);
    keel_reactor::request_shutdown();
    runtime.join();
    result
}

/// Build the bdev and run against it.
fn run_local(opts: &Options, mask: &CpuMask) -> Result<RunResult, String> {
    let main = mask.cores()[0];
    let name = on_main(main, {
        let target = opts.target.clone();
        move || setup_bdev(target)
    })?;
    run_engine(opts, mask, Arc::new(BdevTargetFactory { name }))
}

/// Connect the controller (admin queue on the main core), run with one I/O queue pair per
/// core, disconnect.
fn run_remote(
    opts: &Options,
    mask: &CpuMask,
    trid: &TransportId,
    hdgst: bool,
    ddgst: bool,
) -> Result<RunResult, String> {
    let main = mask.cores()[0];
    let addr = resolve(trid)?;
    let mut copts = ConnectOpts::new(addr, &trid.subnqn);
    copts.hdgst = hdgst;
    copts.ddgst = ddgst;
    copts.io_queues = mask.cores().len() as u16;
    copts.io_queue_depth = opts.spec.queue_depth.clamp(2, u32::from(u16::MAX)) as u16;
    let info = on_main(main, move || nvmf_tcp::connect_controller(copts))?;
    let disconnect = |info: Arc<CtrlrInfo>| {
        let _ = on_main(main, move || async move {
            nvmf_tcp::disconnect_controller(&info).await;
            Ok(())
        });
    };
    let Some(ns) = info.namespaces.first().copied() else {
        disconnect(info);
        return Err(format!("{} has no active namespace", trid.subnqn));
    };
    let r = run_engine(
        opts,
        mask,
        Arc::new(NvmfTcpTargetFactory {
            info: Arc::clone(&info),
            nsid: ns.nsid,
        }),
    );
    disconnect(info);
    r
}

/// `traddr:trsvcid` as a socket address (IP literals or host names).
fn resolve(trid: &TransportId) -> Result<SocketAddr, String> {
    let port: u16 = trid
        .trsvcid
        .parse()
        .map_err(|_| format!("-r: trsvcid {:?} is not a port number", trid.trsvcid))?;
    (trid.traddr.as_str(), port)
        .to_socket_addrs()
        .map_err(|e| format!("-r: cannot resolve {}: {e}", trid.traddr))?
        .next()
        .ok_or_else(|| format!("-r: {} has no address", trid.traddr))
}

/// Run the engine with the live progress line.
fn run_engine<F: TargetFactory>(
    opts: &Options,
    mask: &CpuMask,
    factory: Arc<F>,
) -> Result<RunResult, String> {
    let mut progress = Progress::new(opts.progress);
    let r = engine::run(factory, &opts.spec, mask.cores(), |s| progress.show(s));
    progress.finish();
    r
}

/// Run `fut` on the main reactor and wait for its result.
fn on_main<T, F, Fut>(core: u32, make: F) -> Result<T, String>
where
    T: Send + 'static,
    F: FnOnce() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = Result<T, String>> + 'static,
{
    let (tx, rx) = mpsc::channel();
    keel_reactor::spawn_on(core, move || async move {
        let _ = tx.send(make().await);
    })
    .map_err(|e| format!("main reactor: {e}"))?;
    rx.recv_timeout(Duration::from_secs(120))
        .map_err(|e| format!("main reactor did not answer: {e}"))?
}

/// Create the quick bdev or load the config; returns the bdev name to benchmark.
async fn setup_bdev(target: TargetSpec) -> Result<String, String> {
    match target {
        TargetSpec::Quick {
            kind,
            size,
            block_size,
        } => {
            let bdev = match &kind {
                QuickBdev::Null | QuickBdev::Malloc => {
                    let bs = block_size.unwrap_or(4096);
                    let blocks = size / u64::from(bs);
                    if matches!(kind, QuickBdev::Null) {
                        null::create("Null0", blocks, bs, None)
                    } else {
                        malloc::create("Malloc0", blocks, bs, None)
                    }
                }
                QuickBdev::Uring(path) => uring::create(&uring::UringConfig {
                    filename: path.clone(),
                    name: "Uring0".into(),
                    block_size,
                    uuid: None,
                    flavor: uring::Flavor::Uring,
                }),
            }
            .map_err(|e| format!("cannot create the bdev: {e}"))?;
            Ok(bdev.name().to_string())
        }
        TargetSpec::Config { file, bdev } => {
            let config = bdev_part_of_config(&file)?;
            keel_rpc::load_config_value(&file, &config)
                .await
                .map_err(|e| e.to_string())?;
            if keel_bdev::get_bdev(&bdev).is_none() {
                return Err(format!(
                    "config {file} has no bdev {bdev:?} (it has: {})",
                    keel_bdev::bdev_names().join(", ")
                ));
            }
            Ok(bdev)
        }
        TargetSpec::Remote { .. } => Err("a remote target has no local bdev".into()),
    }
}

/// The config subsystems keel-perf replays from a `--config` file: the bdevs (with raid and
/// lvol calls, which SPDK and keel-tgt save under `bdev`). The others of a keel-tgt config
/// (`nvmf`: transports, subsystems, listeners) export bdevs rather than create them; keel-perf
/// skips them, so `save_config` output loads as it is.
pub const CONFIG_SUBSYSTEMS: &[&str] = &["bdev"];

/// Read `file` (keel-tgt's / SPDK's JSON config) and keep its [`CONFIG_SUBSYSTEMS`], saying
/// which subsystems are skipped.
fn bdev_part_of_config(file: &str) -> Result<serde_json::Value, String> {
    let text = std::fs::read(file).map_err(|e| format!("cannot read config {file}: {e}"))?;
    let mut config: serde_json::Value =
        serde_json::from_slice(&text).map_err(|e| format!("config {file}: not valid JSON: {e}"))?;
    if let Some(subs) = config.get_mut("subsystems").and_then(|s| s.as_array_mut()) {
        subs.retain(|sub| {
            let name = sub.get("subsystem").and_then(|n| n.as_str());
            let keep = name.is_none_or(|n| CONFIG_SUBSYSTEMS.contains(&n));
            let has_calls = sub
                .get("config")
                .and_then(|c| c.as_array())
                .is_some_and(|c| !c.is_empty());
            if !keep && has_calls {
                log::warn!(
                    "config {file}: subsystem {:?} skipped (keel-perf creates bdevs only)",
                    name.unwrap_or_default()
                );
            }
            keep
        });
    }
    Ok(config)
}

/// Unregister every bdev, newest first (stacked ones before their bases).
async fn teardown() -> Result<(), String> {
    for name in keel_bdev::bdev_names().into_iter().rev() {
        if let Err(e) = keel_bdev::unregister(&name).await {
            log::warn!("cannot unregister bdev {name}: {e}");
        }
    }
    // Unregistering releases per-core state by a message round over the cores; one more round
    // behind it (messages are FIFO per sender) makes sure it is done before the reactors stop.
    let (tx, rx) = keel_reactor::oneshot();
    if keel_reactor::for_each_core(|| {}, move || tx.send(())).is_ok() {
        let _ = rx.await;
    }
    Ok(())
}

/// Print the report, the JSON and the plot as asked.
fn output(opts: &Options, res: &RunResult) -> Result<(), String> {
    if opts.json {
        let v = report::json::render(&opts.spec, res);
        let text = serde_json::to_string_pretty(&v).map_err(|e| e.to_string())?;
        println!("{text}");
    } else {
        print!("{}", report::text::render(&opts.spec, res));
    }
    if let Some(path) = &opts.plot {
        std::fs::write(path, report::svg::render(&opts.spec, res))
            .map_err(|e| format!("cannot write {path}: {e}"))?;
        log::info!("plot written to {path}");
    }
    Ok(())
}

/// The live line on stderr: rewritten in place on a terminal, one line per second otherwise.
struct Progress {
    on: bool,
    tty: bool,
    shown: bool,
}

impl Progress {
    fn new(on: bool) -> Progress {
        // SAFETY: isatty only inspects the file descriptor.
        let tty = unsafe { libc::isatty(libc::STDERR_FILENO) } == 1;
        Progress {
            on,
            tty,
            shown: false,
        }
    }
    fn show(&mut self, s: &Sample) {
        if !self.on {
            return;
        }
        let line = format!(
            "[{:>5.1}s{}] {:>12.0} IOPS {:>10.1} MiB/s {:>9.2} us avg",
            s.t,
            if s.ramp { " ramp" } else { "" },
            s.iops,
            s.mib_s,
            s.avg_lat_us
        );
        let mut err = std::io::stderr().lock();
        let _ = if self.tty {
            write!(err, "\r{line}\x1b[K")
        } else {
            writeln!(err, "{line}")
        };
        let _ = err.flush();
        self.shown = true;
    }
    fn finish(&mut self) {
        if self.on && self.tty && self.shown {
            eprintln!();
        }
    }
}
