//! Built-in framework methods: `rpc_get_methods`, `spdk_get_version`, `framework_get_reactors`,
//! `thread_get_stats`, `framework_get_subsystems`, `framework_get_config`, `save_config`,
//! `load_config`, `spdk_kill_instance`, with SPDK's parameter names and result shapes.

use crate::registry::{self, register_method, register_method_in};
use crate::{params, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError, RpcStates};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::rc::Rc;
use std::time::Duration;

/// Register the built-in methods. Idempotent: later calls do nothing.
pub fn register_builtin_methods() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        // States as SPDK registers them (load_config is rpc.py's client-side replay in SPDK;
        // Keel's server-side one runs runtime methods, so it waits for the runtime state).
        register_method_in(&RPC_GET_METHODS, rpc_get_methods, RpcStates::ANY);
        register_method_in(&SPDK_GET_VERSION, spdk_get_version, RpcStates::ANY);
        register_method(&FRAMEWORK_GET_REACTORS, framework_get_reactors);
        register_method(&THREAD_GET_STATS, thread_get_stats);
        register_method_in(
            &FRAMEWORK_GET_SUBSYSTEMS,
            framework_get_subsystems,
            RpcStates::ANY,
        );
        register_method_in(&FRAMEWORK_GET_CONFIG, framework_get_config, RpcStates::ANY);
        register_method_in(&SAVE_CONFIG, save_config, RpcStates::ANY);
        register_method(&LOAD_CONFIG, load_config);
        register_method_in(&SPDK_KILL_INSTANCE, spdk_kill_instance, RpcStates::ANY);
    });
}

/// A boolean option of the CLI.
const fn flag(name: &'static str, help: &'static str) -> ParamSpec {
    ParamSpec {
        name,
        kind: ParamKind::Bool,
        required: false,
        positional: false,
        long: None,
        short: None,
        help,
    }
}

static RPC_GET_METHODS: MethodSpec = MethodSpec {
    name: "rpc_get_methods",
    help: "List the names of every JSON-RPC method the target serves, sorted.",
    params: &[
        flag(
            "current",
            "Only the methods callable in the current state (before or after \
             framework_start_init).",
        ),
        flag(
            "include_aliases",
            "Accepted for SPDK compatibility (Keel has no aliases): ignored.",
        ),
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetMethods {
    #[serde(default)]
    current: Option<bool>,
    #[serde(default)]
    #[allow(dead_code)]
    include_aliases: Option<bool>,
}

fn rpc_get_methods(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let req = params::parse::<GetMethods>(p)?;
        if req.current == Some(true) {
            return Ok(json!(registry::method_names_in(registry::rpc_state())));
        }
        Ok(json!(registry::method_names()))
    })
}

static SPDK_GET_VERSION: MethodSpec = MethodSpec {
    name: "spdk_get_version",
    help: "Show the target's version, in SPDK's shape: {\"version\", \"fields\": {major, minor, patch, suffix}}.",
    params: &[],
    cli_rewrite: None,
};

/// The version answer, from the crate version.
fn version() -> Value {
    let field = |s: &str| s.parse::<u64>().unwrap_or(0);
    json!({
        "version": format!("Keel v{}", env!("CARGO_PKG_VERSION")),
        "fields": {
            "major": field(env!("CARGO_PKG_VERSION_MAJOR")),
            "minor": field(env!("CARGO_PKG_VERSION_MINOR")),
            "patch": field(env!("CARGO_PKG_VERSION_PATCH")),
            "suffix": env!("CARGO_PKG_VERSION_PRE"),
        }
    })
}

/// Reject any params for methods that take none (an empty object or array is fine).
fn no_params(p: &Option<Value>) -> Result<(), RpcError> {
    match p {
        None => Ok(()),
        Some(Value::Object(m)) if m.is_empty() => Ok(()),
        Some(Value::Array(a)) if a.is_empty() => Ok(()),
        Some(_) => Err(RpcError::invalid_params(
            "Invalid parameters: this method takes no parameters",
        )),
    }
}

fn spdk_get_version(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params(&p)?;
        Ok(version())
    })
}

static FRAMEWORK_GET_REACTORS: MethodSpec = MethodSpec {
    name: "framework_get_reactors",
    help: "Show every reactor's busy and idle tick counters and whether it runs in interrupt mode.",
    params: &[],
    cli_rewrite: None,
};

fn framework_get_reactors(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params(&p)?;
        let reactors: Vec<Value> = keel_reactor::reactor_stats()
            .into_iter()
            .map(|r| {
                json!({
                    "lcore": r.lcore,
                    "busy": r.busy_ticks,
                    "idle": r.idle_ticks,
                    "in_interrupt": r.interrupt_mode,
                    // Keel's one thread per reactor, as thread_get_stats lists it; it has run
                    // on this reactor since start-up (busy + idle).
                    "lw_threads": [{
                        "name": thread_name(r.lcore),
                        "id": thread_id(r.lcore),
                        "cpumask": core_mask_hex(r.lcore),
                        "elapsed": r.busy_ticks.wrapping_add(r.idle_ticks),
                    }],
                })
            })
            .collect();
        Ok(json!({
            "tick_rate": keel_reactor::tick_rate(),
            "pid": std::process::id(),
            "reactors": reactors,
        }))
    })
}

static THREAD_GET_STATS: MethodSpec = MethodSpec {
    name: "thread_get_stats",
    help: "Show every thread's busy and idle ticks and poller counts (SPDK's shape). Keel runs \
           one thread per reactor, named reactor_<core>, with id <core> + 1.",
    params: &[],
    cli_rewrite: None,
};

/// The name of the thread of the reactor on `core` (Keel runs one thread per reactor).
fn thread_name(core: u32) -> String {
    format!("reactor_{core}")
}

/// The id of the thread of the reactor on `core` (SPDK's thread ids start at 1).
fn thread_id(core: u32) -> u64 {
    u64::from(core) + 1
}

/// SPDK's cpuset format: the mask in hex, without `0x` (`spdk_cpuset_fmt`), for one core.
fn core_mask_hex(core: u32) -> String {
    let digit = char::from_digit(1 << (core % 4), 16).unwrap_or('1');
    let mut s = String::with_capacity(1 + core as usize / 4);
    s.push(digit);
    s.extend(std::iter::repeat_n('0', core as usize / 4));
    s
}

/// One `thread_get_stats` entry per reactor (Keel's threads are its reactors).
fn thread_stats_json(stats: &[keel_reactor::ReactorStats]) -> Value {
    let threads: Vec<Value> = stats
        .iter()
        .map(|r| {
            debug_assert!(r.timed_pollers <= r.pollers);
            json!({
                "name": thread_name(r.lcore),
                "id": thread_id(r.lcore),
                "cpumask": core_mask_hex(r.lcore),
                "busy": r.busy_ticks,
                "idle": r.idle_ticks,
                "in_interrupt": r.interrupt_mode,
                "active_pollers_count": r.pollers.saturating_sub(r.timed_pollers),
                "timed_pollers_count": r.timed_pollers,
                // Keel has no paused pollers.
                "paused_pollers_count": 0,
            })
        })
        .collect();
    json!({"tick_rate": keel_reactor::tick_rate(), "threads": threads})
}

fn thread_get_stats(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params(&p)?;
        Ok(thread_stats_json(&keel_reactor::reactor_stats()))
    })
}

static FRAMEWORK_GET_SUBSYSTEMS: MethodSpec = MethodSpec {
    name: "framework_get_subsystems",
    help: "List the config subsystems in initialisation (and config replay) order.",
    params: &[],
    cli_rewrite: None,
};

fn framework_get_subsystems(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params(&p)?;
        let list: Vec<Value> = registry::subsystems()
            .into_iter()
            .map(|(name, _)| json!({"subsystem": name, "depends_on": []}))
            .collect();
        Ok(Value::Array(list))
    })
}

static FRAMEWORK_GET_CONFIG: MethodSpec = MethodSpec {
    name: "framework_get_config",
    help: "Show the config calls of one subsystem (its part of save_config).",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "Subsystem name, e.g. bdev.",
    )],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetConfig {
    name: String,
    /// rpc.py sends it; Keel never batches, so both values give the same answer.
    #[serde(default)]
    #[allow(dead_code)]
    with_batches: bool,
}

fn framework_get_config(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let req = params::parse::<GetConfig>(p)?;
        match registry::subsystem(&req.name) {
            Some(save) => Ok(Value::Array(save())),
            None => Err(RpcError::errno(
                libc::ENODEV,
                format!("Subsystem not found: {}", req.name),
            )),
        }
    })
}

static SAVE_CONFIG: MethodSpec = MethodSpec {
    name: "save_config",
    help: "Show the whole configuration as a config file (load it with keel-tgt -c FILE or load_config).",
    params: &[],
    cli_rewrite: None,
};

fn save_config(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params(&p)?;
        Ok(crate::save_config_value())
    })
}

static LOAD_CONFIG: MethodSpec = MethodSpec {
    name: "load_config",
    help: "Replay a config (as save_config writes it) on the running target. The params are the \
           config itself; the CLI reads it from a file or standard input.",
    params: &[ParamSpec::option(
        "json_conf",
        ParamKind::Str,
        false,
        None,
        Some('j'),
        "Config file to load (default: standard input).",
    )],
    cli_rewrite: Some(read_config_for_cli),
};

/// CLI side of `load_config`: replace the arguments with the config read from `json_conf` or
/// standard input.
fn read_config_for_cli(args: &mut Map<String, Value>) -> Result<(), String> {
    let text = match args.remove("json_conf") {
        Some(Value::String(path)) => {
            std::fs::read_to_string(&path).map_err(|e| format!("cannot read {path}: {e}"))?
        }
        _ => std::io::read_to_string(std::io::stdin())
            .map_err(|e| format!("cannot read standard input: {e}"))?,
    };
    match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(cfg)) => {
            *args = cfg;
            Ok(())
        }
        Ok(_) => Err("the config must be a JSON object {\"subsystems\": [...]}".into()),
        Err(e) => Err(format!("the config is not valid JSON: {e}")),
    }
}

fn load_config(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let cfg = p.ok_or_else(|| {
            RpcError::invalid_params(
                "Invalid parameters: expected a config {\"subsystems\": [...]}",
            )
        })?;
        crate::load_config_value("load_config", &cfg)
            .await
            .map_err(|e| match &e {
                crate::ConfigError::Call { error, .. } => RpcError {
                    code: error.code,
                    message: e.to_string(),
                },
                _ => RpcError::invalid_params(e.to_string()),
            })?;
        Ok(Value::Bool(true))
    })
}

static SPDK_KILL_INSTANCE: MethodSpec = MethodSpec {
    name: "spdk_kill_instance",
    help: "Send a signal to the target process (SIGINT or SIGTERM: clean shutdown; SIGKILL: \
           immediate). The answer is sent first.",
    params: &[ParamSpec::positional(
        "sig_name",
        ParamKind::Str,
        true,
        "SIGINT, SIGTERM or SIGKILL (the SIG prefix may be left out).",
    )],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct KillInstance {
    sig_name: String,
}

/// The signal named `name` (with or without the `SIG` prefix) among those SPDK accepts here.
fn signal_number(name: &str) -> Option<libc::c_int> {
    match name.strip_prefix("SIG").unwrap_or(name) {
        "INT" => Some(libc::SIGINT),
        "TERM" => Some(libc::SIGTERM),
        "KILL" => Some(libc::SIGKILL),
        _ => None,
    }
}

/// How long after answering `spdk_kill_instance` the signal is sent: the answer is written as
/// soon as the handler completes, so one timed poller run later it has left the process.
const KILL_DELAY: Duration = Duration::from_millis(10);

fn spdk_kill_instance(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let req = params::parse::<KillInstance>(p)?;
        let sig = signal_number(&req.sig_name).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "sig_name: unsupported signal {:?} (SIGINT, SIGTERM, SIGKILL)",
                req.sig_name
            ))
        })?;
        send_signal_later(req.sig_name, sig)?;
        Ok(Value::Bool(true))
    })
}

/// Raise `sig` on this process from a one-shot timed poller, after the answer is sent.
fn send_signal_later(name: String, sig: libc::c_int) -> Result<(), RpcError> {
    if keel_reactor::current_core().is_none() {
        return Err(RpcError::internal(
            "spdk_kill_instance must run on a reactor",
        ));
    }
    let id: Rc<Cell<Option<keel_reactor::PollerId>>> = Rc::new(Cell::new(None));
    let own = id.clone();
    let poller = keel_reactor::register_poller("rpc_kill_instance", Some(KILL_DELAY), move || {
        if let Some(me) = own.take() {
            log::warn!("spdk_kill_instance: sending {name} to this process");
            // SAFETY: kill(2) on our own pid with a valid signal number has no memory effects.
            let rc = unsafe { libc::kill(libc::getpid(), sig) };
            if rc != 0 {
                log::error!(
                    "spdk_kill_instance: kill({name}) failed: {}",
                    std::io::Error::last_os_error()
                );
            }
            keel_reactor::unregister_poller(me);
        }
        keel_reactor::PollStatus::Busy
    });
    id.set(Some(poller));
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::block_on;
    use crate::RpcResult;

    fn call(method: &str, p: Option<Value>) -> RpcResult {
        register_builtin_methods();
        let m = registry::lookup(method).expect("registered");
        block_on((m.handler)(p))
    }

    #[test]
    fn registration_is_idempotent_and_lists_itself() {
        register_builtin_methods();
        register_builtin_methods();
        let names = call("rpc_get_methods", None).unwrap();
        for m in [
            "rpc_get_methods",
            "spdk_get_version",
            "framework_get_reactors",
            "thread_get_stats",
            "framework_get_subsystems",
            "framework_get_config",
            "save_config",
            "load_config",
            "spdk_kill_instance",
        ] {
            assert!(
                names.as_array().unwrap().iter().any(|n| n == m),
                "{m} in {names}"
            );
        }
        assert!(
            call("rpc_get_methods", Some(json!({"current": true}))).is_ok(),
            "SPDK's param accepted"
        );
        assert_eq!(
            call("rpc_get_methods", Some(json!({"bogus": 1})))
                .unwrap_err()
                .code,
            -32602
        );
    }

    #[test]
    fn thread_stats_have_spdk_shape() {
        assert_eq!(core_mask_hex(0), "1");
        assert_eq!(core_mask_hex(1), "2");
        assert_eq!(core_mask_hex(5), "20");
        assert_eq!(core_mask_hex(67), "80000000000000000");
        let r = keel_reactor::ReactorStats {
            lcore: 3,
            busy_ticks: 10,
            idle_ticks: 20,
            pollers: 5,
            timed_pollers: 2,
            interrupt_mode: true,
            sleeps: 7,
            iterations: 100,
        };
        let v = thread_stats_json(&[r]);
        assert_eq!(
            v["threads"][0],
            json!({"name": "reactor_3", "id": 4, "cpumask": "8", "busy": 10, "idle": 20,
                   "in_interrupt": true, "active_pollers_count": 3, "timed_pollers_count": 2,
                   "paused_pollers_count": 0})
        );
        assert!(v["tick_rate"].is_u64());
        assert_eq!(
            call("thread_get_stats", None).unwrap()["threads"],
            json!([])
        );
        assert_eq!(
            call("thread_get_stats", Some(json!({"a": 1})))
                .unwrap_err()
                .code,
            -32602
        );
    }

    #[test]
    fn version_has_spdk_shape_from_the_crate_version() {
        let v = call("spdk_get_version", None).unwrap();
        assert_eq!(v["version"], format!("Keel v{}", env!("CARGO_PKG_VERSION")));
        let f = &v["fields"];
        let joined = format!("{}.{}.{}", f["major"], f["minor"], f["patch"]);
        assert!(env!("CARGO_PKG_VERSION").starts_with(&joined), "{joined}");
        assert!(f["suffix"].is_string());
        assert_eq!(
            call("spdk_get_version", Some(json!({"x": 1})))
                .unwrap_err()
                .code,
            -32602
        );
    }

    fn save_test() -> Vec<Value> {
        vec![json!({"method": "spdk_get_version"})]
    }

    #[test]
    fn subsystems_and_their_config() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| crate::register_config_subsystem("test_builtin_sub", save_test));
        let subs = call("framework_get_subsystems", None).unwrap();
        assert!(subs
            .as_array()
            .unwrap()
            .contains(&json!({"subsystem": "test_builtin_sub", "depends_on": []})));
        let cfg = call(
            "framework_get_config",
            Some(json!({"name": "test_builtin_sub"})),
        )
        .unwrap();
        assert_eq!(cfg, json!(save_test()));
        let err = call(
            "framework_get_config",
            Some(json!({"name": "test_builtin_none"})),
        )
        .unwrap_err();
        assert_eq!(err.code, -19);
        assert!(err.message.contains("test_builtin_none"));
        let err = call("framework_get_config", None).unwrap_err();
        assert!(err.message.contains("name"), "{}", err.message);
        let saved = call("save_config", None).unwrap();
        assert!(saved["subsystems"]
            .as_array()
            .unwrap()
            .iter()
            .any(|s| s["subsystem"] == "test_builtin_sub"));
    }

    #[test]
    fn load_config_replays_and_reports_failures() {
        let ok =
            json!({"subsystems": [{"subsystem": "s", "config": [{"method": "spdk_get_version"}]}]});
        assert_eq!(call("load_config", Some(ok)).unwrap(), json!(true));
        let bad = json!({"subsystems": [{"subsystem": "s", "config": [
            {"method": "spdk_get_version"}, {"method": "framework_get_config", "params": {"name": "none"}}]}]});
        let err = call("load_config", Some(bad)).unwrap_err();
        assert_eq!(err.code, -19);
        assert!(
            err.message.contains("entry 1") && err.message.contains("framework_get_config"),
            "{}",
            err.message
        );
        assert_eq!(call("load_config", None).unwrap_err().code, -32602);
        assert_eq!(
            call("load_config", Some(json!({"subsystems": 1})))
                .unwrap_err()
                .code,
            -32602
        );
    }

    #[test]
    fn kill_instance_validates_the_signal_name() {
        assert_eq!(signal_number("SIGINT"), Some(libc::SIGINT));
        assert_eq!(signal_number("TERM"), Some(libc::SIGTERM));
        assert_eq!(signal_number("SIGKILL"), Some(libc::SIGKILL));
        assert_eq!(signal_number("SIGUSR1"), None);
        assert_eq!(signal_number(""), None);
        let err = call("spdk_kill_instance", Some(json!({"sig_name": "SIGHUP"}))).unwrap_err();
        assert_eq!(err.code, -32602);
        assert!(err.message.contains("SIGHUP"));
        assert_eq!(call("spdk_kill_instance", None).unwrap_err().code, -32602);
    }

    #[test]
    fn load_config_cli_rewrite_reads_a_file() {
        let path = std::env::temp_dir().join(format!("keel-rpc-load-{}.json", std::process::id()));
        std::fs::write(&path, r#"{"subsystems": []}"#).unwrap();
        let mut args = Map::new();
        args.insert("json_conf".into(), json!(path.to_str().unwrap()));
        read_config_for_cli(&mut args).unwrap();
        assert_eq!(Value::Object(args.clone()), json!({"subsystems": []}));
        std::fs::write(&path, "[1]").unwrap();
        args.insert("json_conf".into(), json!(path.to_str().unwrap()));
        assert!(read_config_for_cli(&mut args)
            .unwrap_err()
            .contains("object"));
        std::fs::remove_file(&path).unwrap();
        args.insert("json_conf".into(), json!(path.to_str().unwrap()));
        assert!(read_config_for_cli(&mut args)
            .unwrap_err()
            .contains("cannot read"));
    }
}
