//! Start-up and shutdown of the target.

use crate::args::Args;
use crate::signals;
use keel_reactor::pool::{self, PoolConfig};
use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
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

/// Runs first on the main core: RPC server, then the config file.
async fn startup(args: Args, state: Arc<AppState>) {
    match keel_rpc::RpcServer::start(&args.rpc_socket) {
        Ok(server) => RPC_SERVER.with(|s| *s.borrow_mut() = Some(server)),
        Err(e) => {
            log::error!("{e}");
            state.begin_shutdown(1);
            return;
        }
    }
    if let Some(path) = &args.config {
        log::info!("loading config {path}");
        if let Err(e) = keel_rpc::load_config_file(path).await {
            log::error!("{e}");
            state.begin_shutdown(1);
            return;
        }
    } else if !args.no_default {
        if let Err(e) = load_default_config().await {
            log::error!("{e} (start with -c FILE or --no-default to run without the default)");
            state.begin_shutdown(1);
            return;
        }
    }
    log::info!(
        "keel-tgt ready: reactors on cores {:?}{}, JSON-RPC on {}",
        keel_reactor::cores(),
        if args.interrupt_mode {
            " (interrupt mode)"
        } else {
            ""
        },
        args.rpc_socket
    );
}

/// Replay the embedded default config and tell the user how to reach it.
async fn load_default_config() -> Result<(), keel_rpc::ConfigError> {
    let config: serde_json::Value =
        serde_json::from_str(keel_tgt::DEFAULT_CONFIG).expect("embedded default config is JSON");
    keel_rpc::load_config_value("the embedded default config", &config).await?;
    log::info!(
        "serving the default namespace (1 GiB malloc): nvme connect -t tcp -a 127.0.0.1 -s 4420 -n {}",
        keel_tgt::DEFAULT_NQN
    );
    Ok(())
}

/// Runs on the main core: close the RPC socket, stop NVMe-oF (hosts disconnected), unregister every bdev (newest first, so stacked
/// bdevs go before their bases; each unregistration waits for in-flight I/O), stop the reactors.
async fn shutdown() {
    RPC_SERVER.with(|s| s.borrow_mut().take());
    keel_nvmf::shutdown().await;
    for name in keel_bdev::bdev_names().into_iter().rev() {
        if let Err(e) = keel_bdev::unregister(&name).await {
            log::warn!("shutdown: cannot unregister bdev {name}: {e}");
        }
    }
    keel_reactor::request_shutdown();
}
