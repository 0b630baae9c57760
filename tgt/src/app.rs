//! Start-up and shutdown of the target.

use crate::args::Args;
use crate::signals;
use keel_reactor::pool::{self, PoolConfig};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use keel_tgt::framework::InitPlan;
use std::cell::RefCell;
use std::sync::atomic::{AtomicBool, AtomicI32, Ordering};
use std::sync::Arc;
use std::time::Duration;

thread_local! {
    /// The RPC server, owned by the main core while the target runs.
    static RPC_SERVER: RefCell<Option<keel_rpc::RpcServer>> = const { RefCell::new(None) };
}

/// Shared between the main thread and the main reactor.
struct AppState {
    /// Process exit code.
    exit_code: AtomicI32,
    /// Shutdown has begun (only the first request runs it).
    stopping: AtomicBool,
}

impl AppState {
    /// Start the shutdown sequence on the main core, once.
    fn begin_shutdown(self: &Arc<Self>, exit_code: i32) {
        if self.stopping.swap(true, Ordering::SeqCst) {
            return;
        }
        if exit_code != 0 {
            self.exit_code.store(exit_code, Ordering::SeqCst);
        }
        let main = keel_reactor::main_core().expect("runtime is running");
        if keel_reactor::spawn_on(main, shutdown).is_err() {
            keel_reactor::request_shutdown();
        }
        if keel_reactor::current_core().is_some() {
            // From a reactor (start-up failed): wake the main thread out of its signal wait.
            signals::wake_waiter();
        }
    }
}

/// Run the target until a stop signal; returns the process exit code.
pub fn run(args: Args) -> i32 {
    let cpumask = match CpuMask::parse_and_validate(&args.cpumask) {
        Ok(mask) => mask,
        Err(e) => {
            log::error!("-m {}: {e}", args.cpumask);
            return 1;
        }
    };
    if let Some(path) = &args.config {
        if let Err(e) = std::fs::metadata(path) {
            log::error!("-c {path}: {e}");
            return 1;
        }
    }
    pool::configure(PoolConfig {
        max_pages_per_core: (args.pool_size_mb as usize * 1024 * 1024 / pool::PAGE_SIZE).max(1),
        use_hugepages: true,
    });
    keel_tgt::register_rpcs();
    signals::block_stop_signals();

    let state = Arc::new(AppState {
        exit_code: AtomicI32::new(0),
        stopping: AtomicBool::new(false),
    });
    let opts = RuntimeOptions {
        cpumask: cpumask.clone(),
        interrupt_mode: args.interrupt_mode,
        pin_threads: true,
    };
    let init_state = state.clone();
    let runtime = match Runtime::start(opts, move || {
        keel_reactor::spawn_local(startup(args, init_state))
    }) {
        Ok(rt) => rt,
        Err(e) => {
            log::error!("{e}");
            return 1;
        }
    };

    // Long waits: a shutdown begun elsewhere wakes this one (`signals::wake_waiter`), so an
    // idle target's main thread does not wake several times a second.
    while !state.stopping.load(Ordering::SeqCst) {
        let sig = signals::wait_stop_signal(Duration::from_secs(10));
        if state.stopping.load(Ordering::SeqCst) {
            break;
        }
        if let Some(sig) = sig {
            log::info!("received {}, shutting down", signals::name(sig));
            state.begin_shutdown(0);
        }
    }
    runtime.join();
    let code = state.exit_code.load(Ordering::SeqCst);
    log::info!("keel-tgt stopped (exit code {code})");
    code
}

/// Runs first on the main core. Normally: the init (config file or embedded default), then the
/// RPC server, so a client never sees a half-loaded configuration (replaying it yields while
/// malloc bdevs populate their memory). With `--wait-for-rpc`: the server alone, in SPDK's
/// startup state, until `framework_start_init`.
async fn startup(args: Args, state: Arc<AppState>) {
    let plan = init_plan(&args);
    let mode = if args.interrupt_mode {
        " (interrupt mode)"
    } else {
        ""
    };
    if args.wait_for_rpc {
        let failed = state.clone();
        keel_tgt::framework::defer(plan.clone(), Box::new(move || failed.begin_shutdown(1)));
        if start_rpc_server(&args, &state) {
            log::info!(
                "keel-tgt waiting for framework_start_init (--wait-for-rpc): reactors on cores {:?}{mode}, JSON-RPC on {}",
                keel_reactor::cores(),
                args.rpc_socket
            );
        }
        return;
    }
    if let Err(e) = keel_tgt::framework::init(plan).await {
        if !state.stopping.load(Ordering::SeqCst) {
            log::error!("{e}");
            state.begin_shutdown(1);
        }
        return;
    }
    if state.stopping.load(Ordering::SeqCst) {
        log::info!("start-up interrupted by the shutdown");
        return;
    }
    if !start_rpc_server(&args, &state) {
        return;
    }
    log::info!(
        "keel-tgt ready: reactors on cores {:?}{mode}, JSON-RPC on {}",
        keel_reactor::cores(),
        args.rpc_socket
    );
}

/// Start the JSON-RPC server on `args.rpc_socket`; on failure log it, begin the shutdown
/// (exit code 1) and return false.
fn start_rpc_server(args: &Args, state: &Arc<AppState>) -> bool {
    match keel_rpc::RpcServer::start(&args.rpc_socket) {
        Ok(server) => {
            RPC_SERVER.with(|s| *s.borrow_mut() = Some(server));
            true
        }
        Err(e) => {
            log::error!("{e}");
            state.begin_shutdown(1);
            false
        }
    }
}

/// What the init replays, from the flags.
fn init_plan(args: &Args) -> InitPlan {
    match &args.config {
        Some(path) => InitPlan::ConfigFile(path.clone()),
        None if args.no_default => InitPlan::Nothing,
        None => InitPlan::Default(args.listen.clone()),
    }
}

/// Runs on the main core: close the RPC socket, stop NVMe-oF (hosts disconnected), unregister every bdev (newest first, so stacked
/// bdevs go before their bases; each unregistration waits for in-flight I/O), stop the reactors.
async fn shutdown() {
    RPC_SERVER.with(|s| s.borrow_mut().take());
    // A malloc still populating its memory (e.g. the default config's) registers nothing.
    keel_bdev::modules::malloc::cancel_pending();
    keel_nvmf::shutdown().await;
    for name in keel_bdev::bdev_names().into_iter().rev() {
        if let Err(e) = keel_bdev::unregister(&name).await {
            log::warn!("shutdown: cannot unregister bdev {name}: {e}");
        }
    }
    keel_reactor::request_shutdown();
}
