//! Initialisation of the target and SPDK's `framework_start_init` / `framework_wait_init`.
//!
//! Initialising means replaying the start-up configuration ([`InitPlan`]: the `-c` file, the
//! embedded default, or nothing). Normally it runs right after the JSON-RPC server starts. With
//! `--wait-for-rpc` the server starts in SPDK's startup state, where only methods registered
//! for it ([`keel_rpc::RpcStates::STARTUP`]: `log_*`, `rpc_get_methods`, `framework_*`, ...)
//! may be called, and the init runs when `framework_start_init` is called; the server then
//! switches to the runtime state. `framework_wait_init` answers `true` once the init is done,
//! waiting for it if needed. Both run on the main core.

use keel_rpc::{register_method_in, HandlerFuture, MethodSpec, RpcError, RpcState, RpcStates};
use serde_json::Value;
use std::cell::{Cell, RefCell};
use std::net::SocketAddr;

/// What initialising the target replays.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum InitPlan {
    /// The `-c` config file.
    ConfigFile(String),
    /// The embedded default, listening on these addresses (none: the default listener).
    Default(Vec<SocketAddr>),
    /// Nothing (`--no-default`).
    Nothing,
}

/// Where the init is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum InitState {
    /// Not started (waiting for `framework_start_init`).
    Pending,
    /// The configuration is being replayed.
    Running,
    /// Done: the target serves its configuration.
    Done,
    /// The replay failed (the target is shutting down).
    Failed,
}

thread_local! {
    /// The plan kept for `framework_start_init` (main core).
    static DEFERRED: RefCell<Option<InitPlan>> = const { RefCell::new(None) };
    /// Where the init is (main core).
    static STATE: Cell<InitState> = const { Cell::new(InitState::Pending) };
    /// `framework_wait_init` calls waiting for the init (main core).
    static WAITERS: RefCell<Vec<keel_reactor::OneshotSender<bool>>> = const { RefCell::new(Vec::new()) };
    /// Called when a deferred init fails (the application shuts down).
    static ON_FAILURE: RefCell<Option<Box<dyn Fn()>>> = const { RefCell::new(None) };
}

/// Where the init is (on the main core).
pub fn init_state() -> InitState {
    STATE.with(Cell::get)
}

/// Keep `plan` for `framework_start_init` and put the server in the startup state; `on_failure`
/// runs if that init fails. Call on the main core before the RPC server serves.
pub fn defer(plan: InitPlan, on_failure: Box<dyn Fn()>) {
    DEFERRED.with(|d| *d.borrow_mut() = Some(plan));
    ON_FAILURE.with(|f| *f.borrow_mut() = Some(on_failure));
    keel_rpc::set_rpc_state(RpcState::Startup);
}

/// Run the init now (on the main core): replay `plan`, then switch the server to the runtime
/// state and wake `framework_wait_init` callers. The error says what failed.
pub async fn init(plan: InitPlan) -> Result<(), String> {
    match init_state() {
        InitState::Pending => {}
        other => return Err(format!("the target is already initialised ({other:?})")),
    }
    STATE.with(|s| s.set(InitState::Running));
    let result = replay(&plan).await;
    let done = result.is_ok();
    STATE.with(|s| {
        s.set(if done {
            InitState::Done
        } else {
            InitState::Failed
        })
    });
    if done {
        keel_rpc::set_rpc_state(RpcState::Runtime);
    }
    for waiter in WAITERS.with(|w| std::mem::take(&mut *w.borrow_mut())) {
        waiter.send(done);
    }
    result
}

/// Replay what `plan` names and log how to reach it.
async fn replay(plan: &InitPlan) -> Result<(), String> {
    match plan {
        InitPlan::ConfigFile(path) => {
            log::info!("loading config {path}");
            keel_rpc::load_config_file(path)
                .await
                .map_err(|e| e.to_string())
        }
        InitPlan::Default(listen) => {
            let config = crate::default_config(listen);
            keel_rpc::load_config_value("the embedded default config", &config)
                .await
                .map_err(|e| {
                    format!("{e} (start with -c FILE or --no-default to run without the default)")
                })?;
            let default_listen: SocketAddr = crate::DEFAULT_LISTEN
                .parse()
                .expect("valid default listener");
            let addrs = if listen.is_empty() {
                std::slice::from_ref(&default_listen)
            } else {
                &listen[..]
            };
            for addr in addrs {
                log::info!(
                    "serving the default namespace (1 GiB malloc) on {addr}: {}",
                    crate::default_connect_hint(addr)
                );
            }
            Ok(())
        }
        InitPlan::Nothing => Ok(()),
    }
}

/// Register `framework_start_init` and `framework_wait_init`. Idempotent.
pub(crate) fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        register_method_in(
            &FRAMEWORK_START_INIT,
            framework_start_init,
            RpcStates::STARTUP,
        );
        register_method_in(&FRAMEWORK_WAIT_INIT, framework_wait_init, RpcStates::ANY);
    });
}

static FRAMEWORK_START_INIT: MethodSpec = MethodSpec {
    name: "framework_start_init",
    help: "Initialise a target started with --wait-for-rpc: replay its -c config, or the \
           embedded default (unless --no-default), then serve every method. Callable once, \
           before initialisation only.",
    params: &[],
    cli_rewrite: None,
};

static FRAMEWORK_WAIT_INIT: MethodSpec = MethodSpec {
    name: "framework_wait_init",
    help: "Answer true once the target is initialised (at once if it is; otherwise when \
           framework_start_init has finished).",
    params: &[],
    cli_rewrite: None,
};

/// SPDK refuses any params to these methods; an empty object is accepted.
fn no_params(method: &str, p: &Option<Value>) -> Result<(), RpcError> {
    match p {
        None => Ok(()),
        Some(Value::Object(m)) if m.is_empty() => Ok(()),
        Some(_) => Err(RpcError::invalid_params(format!(
            "{method} requires no parameters"
        ))),
    }
}

fn framework_start_init(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params("framework_start_init", &p)?;
        let Some(plan) = DEFERRED.with(|d| d.borrow_mut().take()) else {
            return Err(RpcError {
                code: -1,
                message: "framework_start_init was already called".into(),
            });
        };
        log::info!("framework_start_init: initialising");
        match init(plan).await {
            Ok(()) => {
                log::info!("framework_start_init: initialised, every method is served");
                Ok(Value::Bool(true))
            }
            Err(e) => {
                log::error!("framework_start_init: {e}; shutting down");
                if let Some(f) = ON_FAILURE.with(|f| f.borrow_mut().take()) {
                    f();
                }
                Err(RpcError::internal(format!(
                    "framework_initialization failed: {e}"
                )))
            }
        }
    })
}

fn framework_wait_init(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params("framework_wait_init", &p)?;
        let done = match init_state() {
            InitState::Done => true,
            InitState::Failed => false,
            InitState::Pending | InitState::Running => {
                let (tx, rx) = keel_reactor::oneshot();
                WAITERS.with(|w| w.borrow_mut().push(tx));
                rx.await.unwrap_or(false)
            }
        };
        if done {
            Ok(Value::Bool(true))
        } else {
            Err(RpcError::internal("framework_initialization failed"))
        }
    })
}
