//! The method table and the config subsystems. Registration happens at start-up (before the
//! server runs) from the main thread or main core; lookups happen on the main core.

use crate::RpcResult;
use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::{Mutex, MutexGuard};

/// What a handler returns: a local (`!Send`) future run on the main reactor.
pub type HandlerFuture = Pin<Box<dyn Future<Output = RpcResult>>>;

/// Type of one parameter, for the CLI client's argument parsing and for help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// JSON string.
    Str,
    /// JSON integer.
    Int,
    /// JSON float.
    Float,
    /// JSON boolean (a CLI flag without a value sets it true).
    Bool,
    /// JSON array of strings (CLI: one argument, space- or comma-separated).
    StrList,
    /// Any JSON value (CLI: the argument is parsed as JSON).
    Json,
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// JSON name in `params`.
    pub name: &'static str,
    /// Type.
    pub kind: ParamKind,
    /// Must be present.
    pub required: bool,
    /// CLI: given positionally (in order of appearance) rather than as `--long`/`-s`.
    pub positional: bool,
    /// CLI: long option (without `--`), e.g. "name"; defaults to `name` with `_` → `-`.
    pub long: Option<&'static str>,
    /// CLI: short option, e.g. 'b' for rpc.py's `-b name`.
    pub short: Option<char>,
    /// One line of help.
    pub help: &'static str,
}

impl ParamSpec {
    /// A positional CLI parameter (given in order, without a flag).
    pub const fn positional(
        name: &'static str,
        kind: ParamKind,
        required: bool,
        help: &'static str,
    ) -> ParamSpec {
        ParamSpec {
            name,
            kind,
            required,
            positional: true,
            long: None,
            short: None,
            help,
        }
    }

    /// An option CLI parameter: `--long` (default: `name` with `_` → `-`), optionally `-s`.
    pub const fn option(
        name: &'static str,
        kind: ParamKind,
        required: bool,
        long: Option<&'static str>,
        short: Option<char>,
        help: &'static str,
    ) -> ParamSpec {
        ParamSpec {
            name,
            kind,
            required,
            positional: false,
            long,
            short,
            help,
        }
    }
}

/// Description of a method: name, help, parameters, and an optional client-side rewrite of the
/// params built from the command line (e.g. rpc.py's `bdev_malloc_create` takes a size in MiB
/// and sends `num_blocks`).
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// JSON-RPC method name.
    pub name: &'static str,
    /// One paragraph of help.
    pub help: &'static str,
    /// Parameters.
    pub params: &'static [ParamSpec],
    /// CLI only: turn the parsed arguments into the params object sent.
    pub cli_rewrite: Option<CliRewrite>,
}

/// A [`MethodSpec::cli_rewrite`] function: edits the params built from the command line, or
/// says (for the user) why they are unusable.
pub type CliRewrite = fn(&mut serde_json::Map<String, serde_json::Value>) -> Result<(), String>;

/// A method handler: gets the raw `params` (None when absent), returns the call's future.
pub(crate) type Handler = fn(Option<serde_json::Value>) -> HandlerFuture;

/// A config subsystem's save function.
pub(crate) type SaveFn = fn() -> Vec<serde_json::Value>;

/// The server's state, as SPDK's `spdk_rpc_set_state`: [`RpcState::Startup`] between a
/// `--wait-for-rpc` start and `framework_start_init`, [`RpcState::Runtime`] afterwards (and from
/// the start without `--wait-for-rpc`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RpcState {
    /// Initialisation is deferred: only methods marked [`RpcStates::STARTUP`] may be called.
    Startup,
    /// Initialised: only methods marked [`RpcStates::RUNTIME`] may be called.
    Runtime,
}

/// The states in which a method may be called (SPDK's `SPDK_RPC_STARTUP | SPDK_RPC_RUNTIME`
/// state mask).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RpcStates(u8);

impl RpcStates {
    /// Only before `framework_start_init` (e.g. `framework_start_init` itself).
    pub const STARTUP: RpcStates = RpcStates(1);
    /// Only once initialised: what [`register_method`] gives.
    pub const RUNTIME: RpcStates = RpcStates(2);
    /// At any time (e.g. `rpc_get_methods`, the `log_*` methods).
    pub const ANY: RpcStates = RpcStates(3);

    /// Whether a method with these states may be called in `state`.
    pub fn allows(self, state: RpcState) -> bool {
        let bit = match state {
            RpcState::Startup => Self::STARTUP.0,
            RpcState::Runtime => Self::RUNTIME.0,
        };
        self.0 & bit != 0
    }

    /// SPDK's answer (-1, "invalid state") to a call of a method with these states in `state`,
    /// or Ok when it may be called.
    pub fn check(self, state: RpcState) -> Result<(), crate::RpcError> {
        if self.allows(state) {
            return Ok(());
        }
        let message = match state {
            RpcState::Startup => {
                "Method may only be called after framework is initialized using \
                 framework_start_init RPC."
            }
            RpcState::Runtime => {
                "Method may only be called before framework is initialized. Use --wait-for-rpc \
                 command line parameter and then issue this RPC before the framework_start_init RPC."
            }
        };
        Err(crate::RpcError {
            code: crate::error::INVALID_STATE,
            message: message.to_string(),
        })
    }
}

/// The current [`RpcState`], as a `u8` (0 = runtime, 1 = startup). Runtime by default, so a
/// target without `--wait-for-rpc` (and every unit test) serves every method.
static STATE: AtomicU8 = AtomicU8::new(0);

/// Set the server's state (the target sets [`RpcState::Startup`] before starting the server
/// with `--wait-for-rpc`, and [`RpcState::Runtime`] once `framework_start_init` has run).
pub fn set_rpc_state(state: RpcState) {
    let v = match state {
        RpcState::Runtime => 0,
        RpcState::Startup => 1,
    };
    STATE.store(v, Ordering::SeqCst);
    log::debug!("rpc state: {state:?}");
}

/// The server's current state.
pub fn rpc_state() -> RpcState {
    match STATE.load(Ordering::SeqCst) {
        0 => RpcState::Runtime,
        _ => RpcState::Startup,
    }
}

/// One registered method.
#[derive(Clone, Copy)]
pub(crate) struct Method {
    pub(crate) spec: &'static MethodSpec,
    pub(crate) handler: Handler,
    /// When it may be called.
    pub(crate) states: RpcStates,
}

/// Methods by name. Control path only: the lock is never held across an await or a handler
/// call (lookups copy the entry out).
static METHODS: Mutex<BTreeMap<&'static str, Method>> = Mutex::new(BTreeMap::new());

/// Config subsystems in registration (= save and replay) order.
static SUBSYSTEMS: Mutex<Vec<(&'static str, SaveFn)>> = Mutex::new(Vec::new());

/// Lock a registry table; a panic while holding it (only a duplicate registration panics, and
/// that leaves the table consistent) does not make it unusable.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// Register a method (server side) callable once the target is initialised
/// ([`RpcStates::RUNTIME`], as most SPDK methods). `handler` gets the raw `params` (None when
/// absent). Registering a name twice panics: it is a programming error.
pub fn register_method(
    spec: &'static MethodSpec,
    handler: fn(Option<serde_json::Value>) -> HandlerFuture,
) {
    register_method_in(spec, handler, RpcStates::RUNTIME);
}

/// Register a method callable in `states` (SPDK's state mask: e.g. [`RpcStates::ANY`] for
/// a method that also works before `framework_start_init`). Registering a name twice panics.
pub fn register_method_in(
    spec: &'static MethodSpec,
    handler: fn(Option<serde_json::Value>) -> HandlerFuture,
    states: RpcStates,
) {
    let mut methods = lock(&METHODS);
    if methods.contains_key(spec.name) {
        drop(methods);
        panic!("JSON-RPC method {} registered twice", spec.name);
    }
    methods.insert(
        spec.name,
        Method {
            spec,
            handler,
            states,
        },
    );
    log::trace!("registered JSON-RPC method {}", spec.name);
}

/// Register a config subsystem (e.g. "bdev", later "nvmf"): `save` returns the calls
/// (`{"method":…,"params":…}` objects) that recreate its state, in replay order. Subsystems are
/// saved in registration order, which must follow dependencies.
/// Registering a name twice panics: it is a programming error.
pub fn register_config_subsystem(name: &'static str, save: fn() -> Vec<serde_json::Value>) {
    let mut subsystems = lock(&SUBSYSTEMS);
    if subsystems.iter().any(|(n, _)| *n == name) {
        drop(subsystems);
        panic!("config subsystem {name} registered twice");
    }
    subsystems.push((name, save));
    log::trace!("registered config subsystem {name}");
}

/// The specs of every registered method, sorted by name (for `keel-rpc` and help).
pub fn method_specs() -> Vec<&'static MethodSpec> {
    lock(&METHODS).values().map(|m| m.spec).collect()
}

/// The registered method `name`, copied out of the table.
pub(crate) fn lookup(name: &str) -> Option<Method> {
    lock(&METHODS).get(name).copied()
}

/// Names of every registered method, sorted.
pub(crate) fn method_names() -> Vec<&'static str> {
    lock(&METHODS).keys().copied().collect()
}

/// Names of the registered methods callable in `state`, sorted.
pub(crate) fn method_names_in(state: RpcState) -> Vec<&'static str> {
    lock(&METHODS)
        .iter()
        .filter(|(_, m)| m.states.allows(state))
        .map(|(name, _)| *name)
        .collect()
}

/// The registered config subsystems, in registration order.
pub(crate) fn subsystems() -> Vec<(&'static str, SaveFn)> {
    lock(&SUBSYSTEMS).clone()
}

/// The save function of subsystem `name`.
pub(crate) fn subsystem(name: &str) -> Option<SaveFn> {
    lock(&SUBSYSTEMS)
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, save)| *save)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    static SPEC_A: MethodSpec = MethodSpec {
        name: "test_registry_a",
        help: "A.",
        params: &[],
        cli_rewrite: None,
    };
    static SPEC_B: MethodSpec = MethodSpec {
        name: "test_registry_b",
        help: "B.",
        params: &[],
        cli_rewrite: None,
    };
    static SPEC_DUP: MethodSpec = MethodSpec {
        name: "test_registry_dup",
        help: "Dup.",
        params: &[],
        cli_rewrite: None,
    };

    fn answer_a(_: Option<serde_json::Value>) -> HandlerFuture {
        Box::pin(async { Ok(json!("a")) })
    }
    fn answer_b(params: Option<serde_json::Value>) -> HandlerFuture {
        Box::pin(async move { Ok(params.unwrap_or(json!("none"))) })
    }

    #[test]
    fn methods_are_found_by_name_and_listed_sorted() {
        register_method(&SPEC_B, answer_b);
        register_method(&SPEC_A, answer_a);
        let a = lookup("test_registry_a").expect("registered");
        assert_eq!(a.spec.name, "test_registry_a");
        assert_eq!(crate::testutil::block_on((a.handler)(None)), Ok(json!("a")));
        let b = lookup("test_registry_b").expect("registered");
        assert_eq!(
            crate::testutil::block_on((b.handler)(Some(json!(5)))),
            Ok(json!(5))
        );
        assert!(lookup("test_registry_c").is_none());

        let names = method_names();
        let ia = names.iter().position(|n| *n == "test_registry_a").unwrap();
        let ib = names.iter().position(|n| *n == "test_registry_b").unwrap();
        assert!(ia < ib, "sorted: {names:?}");
        assert!(names.windows(2).all(|w| w[0] < w[1]));
        let specs = method_specs();
        assert!(specs.iter().any(|s| std::ptr::eq(*s, &SPEC_A)));
        assert_eq!(specs.len(), names.len());
    }

    #[test]
    fn registering_a_method_twice_panics_and_leaves_the_table_usable() {
        register_method(&SPEC_DUP, answer_a);
        let again = std::panic::catch_unwind(|| register_method(&SPEC_DUP, answer_b));
        assert!(again.is_err());
        // The first registration is kept and the table still works.
        let m = lookup("test_registry_dup").unwrap();
        assert_eq!(crate::testutil::block_on((m.handler)(None)), Ok(json!("a")));
    }

    #[test]
    fn state_masks_allow_and_refuse_like_spdk() {
        assert!(RpcStates::ANY.allows(RpcState::Startup));
        assert!(RpcStates::ANY.allows(RpcState::Runtime));
        assert!(RpcStates::RUNTIME.check(RpcState::Runtime).is_ok());
        assert!(RpcStates::STARTUP.check(RpcState::Startup).is_ok());
        let early = RpcStates::RUNTIME.check(RpcState::Startup).unwrap_err();
        assert_eq!(early.code, -1);
        assert!(early.message.contains("after framework is initialized"));
        let late = RpcStates::STARTUP.check(RpcState::Runtime).unwrap_err();
        assert_eq!(late.code, -1);
        assert!(late.message.contains("--wait-for-rpc"), "{}", late.message);
        assert_eq!(rpc_state(), RpcState::Runtime, "runtime unless set");
    }

    static SPEC_STARTUP: MethodSpec = MethodSpec {
        name: "test_registry_startup",
        help: "S.",
        params: &[],
        cli_rewrite: None,
    };

    #[test]
    fn methods_are_listed_by_state() {
        register_method_in(&SPEC_STARTUP, answer_a, RpcStates::STARTUP);
        assert_eq!(
            lookup("test_registry_startup").unwrap().states,
            RpcStates::STARTUP
        );
        let startup = method_names_in(RpcState::Startup);
        let runtime = method_names_in(RpcState::Runtime);
        assert!(startup.contains(&"test_registry_startup"));
        assert!(!runtime.contains(&"test_registry_startup"));
    }

    fn save_one() -> Vec<serde_json::Value> {
        vec![json!({"method": "one", "params": {}})]
    }
    fn save_none() -> Vec<serde_json::Value> {
        Vec::new()
    }

    #[test]
    fn subsystems_keep_registration_order() {
        register_config_subsystem("test_registry_z", save_one);
        register_config_subsystem("test_registry_y", save_none);
        let all = subsystems();
        let iz = all
            .iter()
            .position(|(n, _)| *n == "test_registry_z")
            .unwrap();
        let iy = all
            .iter()
            .position(|(n, _)| *n == "test_registry_y")
            .unwrap();
        assert!(iz < iy, "registration order, not name order");
        assert_eq!(subsystem("test_registry_z").unwrap()(), save_one());
        assert!(subsystem("test_registry_nope").is_none());
        assert!(std::panic::catch_unwind(|| register_config_subsystem(
            "test_registry_y",
            save_one
        ))
        .is_err());
    }
}
