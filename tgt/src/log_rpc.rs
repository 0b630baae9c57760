//! SPDK's log methods: `log_set_flag`, `log_clear_flag`, `log_get_flags`, `log_set_level`,
//! `log_get_level`, `log_set_print_level`, `log_get_print_level`, with SPDK's parameters and
//! result shapes, callable before and after `framework_start_init` (as in SPDK).

use crate::logging::{self, SpdkLevel};
use keel_rpc::{
    register_method_in, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError, RpcStates,
};
use serde::Deserialize;
use serde_json::{Map, Value};

/// Register the log methods. Idempotent.
pub(crate) fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        register_method_in(&LOG_SET_FLAG, log_set_flag, RpcStates::ANY);
        register_method_in(&LOG_CLEAR_FLAG, log_clear_flag, RpcStates::ANY);
        register_method_in(&LOG_GET_FLAGS, log_get_flags, RpcStates::ANY);
        register_method_in(&LOG_SET_LEVEL, log_set_level, RpcStates::ANY);
        register_method_in(&LOG_GET_LEVEL, log_get_level, RpcStates::ANY);
        register_method_in(&LOG_SET_PRINT_LEVEL, log_set_level, RpcStates::ANY);
        register_method_in(&LOG_GET_PRINT_LEVEL, log_get_level, RpcStates::ANY);
    });
}

const FLAG_PARAM: &[ParamSpec] = &[ParamSpec::positional(
    "flag",
    ParamKind::Str,
    true,
    "Log flag (log_get_flags lists them; keel-tgt --help describes them), or all.",
)];

const LEVEL_PARAM: &[ParamSpec] = &[ParamSpec::positional(
    "level",
    ParamKind::Str,
    true,
    "ERROR, WARNING, NOTICE, INFO or DEBUG (any case).",
)];

static LOG_SET_FLAG: MethodSpec = MethodSpec {
    name: "log_set_flag",
    help: "Turn on a log flag: the debug messages of one component (SPDK's flag names: nvmf, \
           nvmf_tcp, bdev_raid, lvol, ...; all for every one).",
    params: FLAG_PARAM,
    cli_rewrite: None,
};

static LOG_CLEAR_FLAG: MethodSpec = MethodSpec {
    name: "log_clear_flag",
    help: "Turn off a log flag (all: every one).",
    params: FLAG_PARAM,
    cli_rewrite: None,
};

static LOG_GET_FLAGS: MethodSpec = MethodSpec {
    name: "log_get_flags",
    help: "Show every log flag and whether it is on: {\"flag\": true|false, ...}.",
    params: &[],
    cli_rewrite: None,
};

static LOG_SET_LEVEL: MethodSpec = MethodSpec {
    name: "log_set_level",
    help: "Set the log level (what is printed besides the flags' debug messages). Keel prints \
           to standard error only, so this and log_set_print_level set the same level. \
           NOTICE and INFO are both Rust's info level.",
    params: LEVEL_PARAM,
    cli_rewrite: None,
};

static LOG_GET_LEVEL: MethodSpec = MethodSpec {
    name: "log_get_level",
    help: "Show the log level (ERROR, WARNING, NOTICE, INFO or DEBUG).",
    params: &[],
    cli_rewrite: None,
};

static LOG_SET_PRINT_LEVEL: MethodSpec = MethodSpec {
    name: "log_set_print_level",
    help: "Set the level of messages printed to standard error: the same level as \
           log_set_level (Keel has no syslog output).",
    params: LEVEL_PARAM,
    cli_rewrite: None,
};

static LOG_GET_PRINT_LEVEL: MethodSpec = MethodSpec {
    name: "log_get_print_level",
    help: "Show the level of messages printed to standard error (the log level).",
    params: &[],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct FlagParams {
    flag: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LevelParams {
    level: String,
}

/// SPDK answers -32602 "... requires no parameters" to any params of a getter; an empty
/// object (what some clients send) is accepted.
fn no_params(method: &str, p: &Option<Value>) -> Result<(), RpcError> {
    match p {
        None => Ok(()),
        Some(Value::Object(m)) if m.is_empty() => Ok(()),
        Some(_) => Err(RpcError::invalid_params(format!(
            "{method} requires no parameters"
        ))),
    }
}

fn flag_error(e: logging::UnknownFlag) -> RpcError {
    RpcError::invalid_params(format!("Invalid parameters: {e}"))
}

fn log_set_flag(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let req: FlagParams = keel_rpc::params::parse(p)?;
        logging::set_flag(&req.flag).map_err(flag_error)?;
        log::info!("log flag {} on", req.flag);
        Ok(Value::Bool(true))
    })
}

fn log_clear_flag(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let req: FlagParams = keel_rpc::params::parse(p)?;
        logging::clear_flag(&req.flag).map_err(flag_error)?;
        log::info!("log flag {} off", req.flag);
        Ok(Value::Bool(true))
    })
}

fn log_get_flags(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params("log_get_flags", &p)?;
        let flags: Map<String, Value> = logging::flags()
            .into_iter()
            .map(|(name, on)| (name.to_string(), Value::Bool(on)))
            .collect();
        Ok(Value::Object(flags))
    })
}

fn log_set_level(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let req: LevelParams = keel_rpc::params::parse(p)?;
        let level = SpdkLevel::parse(&req.level).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "Invalid parameters: invalid log level {:?} (ERROR, WARNING, NOTICE, INFO or DEBUG)",
                req.level
            ))
        })?;
        logging::set_level(level);
        log::info!("log level {}", level.name());
        Ok(Value::Bool(true))
    })
}

fn log_get_level(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        no_params("log_get_level", &p)?;
        Ok(Value::String(logging::level().name().to_string()))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Run a handler's future to completion (the log handlers never wait).
    fn run(f: HandlerFuture) -> keel_rpc::RpcResult {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        let mut f = f;
        match f.as_mut().poll(&mut cx) {
            std::task::Poll::Ready(r) => r,
            std::task::Poll::Pending => panic!("log handlers complete at once"),
        }
    }

    // Only parameter validation here: the global flag and level state belongs to
    // `logging::tests::flags_and_level_drive_the_filter_and_max_level`, and the methods'
    // effects are checked end to end (tgt/tests/e2e.rs).
    #[test]
    fn parameters_are_validated_like_spdk() {
        let err = run(log_set_flag(Some(json!({"flag": "nope"})))).unwrap_err();
        assert_eq!(err.code, -32602);
        assert!(err.message.contains("nvmf_tcp"), "lists the known flags");
        assert_eq!(run(log_set_flag(None)).unwrap_err().code, -32602);
        assert_eq!(
            run(log_clear_flag(Some(json!({"flag": 3}))))
                .unwrap_err()
                .code,
            -32602
        );
        let err = run(log_set_level(Some(json!({"level": "TRACE"})))).unwrap_err();
        assert_eq!(err.code, -32602);
        assert!(err.message.contains("NOTICE"));
        let err = run(log_get_level(Some(json!({"x": 1})))).unwrap_err();
        assert_eq!(err.message, "log_get_level requires no parameters");
        let flags = run(log_get_flags(Some(json!({})))).unwrap();
        assert_eq!(
            flags.as_object().unwrap().len(),
            logging::FLAGS.len(),
            "{flags}"
        );
        assert!(flags["nvmf"].is_boolean());
        let level = run(log_get_level(None)).unwrap();
        assert!(SpdkLevel::parse(level.as_str().unwrap()).is_some());
    }
}
