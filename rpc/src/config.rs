//! Config files in SPDK's JSON format: load (replay calls in order) and save.
//!
//! The format is `{"subsystems":[{"subsystem":NAME,"config":[{"method":…,"params":…},…]},…]}`:
//! loading calls each method in order through the registered handlers, exactly as if a client
//! had sent the calls; saving asks every registered subsystem for the calls that recreate it.

use crate::registry;
use serde_json::{json, Map, Value};

/// Why a config could not be loaded; names the entry and why.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Not JSON, or not the `{"subsystems":[…]}` shape.
    #[error("config {path}: {message}")]
    Format {
        /// The file (or origin of the value).
        path: String,
        /// What is wrong, and where.
        message: String,
    },
    /// A call failed: which subsystem, which entry (0-based), which method, and the error.
    #[error("config {path}: subsystem {subsystem:?} entry {index} ({method}): {error}")]
    Call {
        /// The file (or origin of the value).
        path: String,
        /// The subsystem the entry belongs to.
        subsystem: String,
        /// The entry's index in the subsystem's `config` list.
        index: usize,
        /// The method called.
        method: String,
        /// Its error (-32601 for an unknown method).
        error: crate::RpcError,
    },
}

/// Load and replay a config file (async: runs on the main reactor).
pub async fn load_config_file(path: &str) -> Result<(), ConfigError> {
    let text = std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_string(),
        source,
    })?;
    let value: Value = serde_json::from_slice(&text).map_err(|e| ConfigError::Format {
        path: path.to_string(),
        message: format!("not valid JSON: {e}"),
    })?;
    load_config_value(path, &value).await
}

/// One call of a config, validated.
struct Call<'a> {
    subsystem: &'a str,
    index: usize,
    method: &'a str,
    params: Option<&'a Value>,
}

/// Check the shape of the whole config and list its calls in replay order, so that a malformed
/// entry anywhere is reported before any call runs.
fn calls<'a>(origin: &str, config: &'a Value) -> Result<Vec<Call<'a>>, ConfigError> {
    let format = |message: String| ConfigError::Format {
        path: origin.to_string(),
        message,
    };
    let subsystems = config
        .get("subsystems")
        .ok_or_else(|| format("expected an object with a \"subsystems\" list".into()))?
        .as_array()
        .ok_or_else(|| format("\"subsystems\" must be a list".into()))?;
    let mut calls = Vec::new();
    for (si, sub) in subsystems.iter().enumerate() {
        let name = sub
            .get("subsystem")
            .and_then(Value::as_str)
            .ok_or_else(|| {
                format(format!(
                    "subsystems[{si}]: expected {{\"subsystem\": NAME, \"config\": [...]}}"
                ))
            })?;
        let entries = match sub.get("config") {
            None | Some(Value::Null) => continue,
            Some(Value::Array(entries)) => entries,
            Some(_) => {
                return Err(format(format!(
                    "subsystem {name:?}: \"config\" must be a list or null"
                )))
            }
        };
        for (index, entry) in entries.iter().enumerate() {
            let method = entry.get("method").and_then(Value::as_str).ok_or_else(|| {
                format(format!("subsystem {name:?} entry {index}: expected {{\"method\": NAME, \"params\": {{...}}}}"))
            })?;
            let params = match entry.get("params") {
                None | Some(Value::Null) => None,
                Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
                Some(_) => {
                    return Err(format(format!(
                        "subsystem {name:?} entry {index} ({method}): \"params\" must be an object"
                    )))
                }
            };
            calls.push(Call {
                subsystem: name,
                index,
                method,
                params,
            });
        }
    }
    Ok(calls)
}

/// Replay an already-parsed config value; `origin` names it in errors.
///
/// The calls run in order, each awaited before the next; the first unknown method or failing
/// call stops the replay with [`ConfigError::Call`] (the calls before it stay applied, as in
/// SPDK). A subsystem with `"config": null` has nothing to replay.
pub async fn load_config_value(origin: &str, config: &Value) -> Result<(), ConfigError> {
    let calls = calls(origin, config)?;
    log::info!("config {origin}: replaying {} calls", calls.len());
    for call in calls {
        let fail = |error| ConfigError::Call {
            path: origin.to_string(),
            subsystem: call.subsystem.to_string(),
            index: call.index,
            method: call.method.to_string(),
            error,
        };
        let method = registry::lookup(call.method)
            .ok_or_else(|| fail(crate::RpcError::method_not_found(call.method)))?;
        log::debug!(
            "config {origin}: {} entry {}: {}",
            call.subsystem,
            call.index,
            call.method
        );
        (method.handler)(call.params.cloned()).await.map_err(fail)?;
    }
    Ok(())
}

/// The current state as a config value (what `save_config` answers): every registered
/// subsystem, in registration order, with the calls its save function returns.
pub fn save_config_value() -> Value {
    let subsystems: Vec<Value> = registry::subsystems()
        .into_iter()
        .map(|(name, save)| json!({"subsystem": name, "config": save()}))
        .collect();
    let mut obj = Map::new();
    obj.insert("subsystems".into(), Value::Array(subsystems));
    Value::Object(obj)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testutil::block_on;
    use crate::{register_config_subsystem, register_method, HandlerFuture, MethodSpec, RpcError};
    use std::sync::Mutex;

    /// Calls made by the test handlers, in order.
    static LOG: Mutex<Vec<String>> = Mutex::new(Vec::new());
    /// Tests here share LOG: run them one at a time.
    static SERIAL: Mutex<()> = Mutex::new(());

    fn record(params: Option<Value>) -> HandlerFuture {
        Box::pin(async move {
            let tag = params
                .as_ref()
                .and_then(|p| p.get("tag"))
                .and_then(Value::as_str)
                .unwrap_or("-")
                .to_string();
            LOG.lock().unwrap().push(tag);
            Ok(Value::Bool(true))
        })
    }
    fn fail(_: Option<Value>) -> HandlerFuture {
        Box::pin(async { Err(RpcError::errno(libc::EEXIST, "already exists")) })
    }
    static RECORD: MethodSpec = MethodSpec {
        name: "test_config_record",
        help: "",
        params: &[],
        cli_rewrite: None,
    };
    static FAIL: MethodSpec = MethodSpec {
        name: "test_config_fail",
        help: "",
        params: &[],
        cli_rewrite: None,
    };

    fn setup() -> std::sync::MutexGuard<'static, ()> {
        let guard = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            register_method(&RECORD, record);
            register_method(&FAIL, fail);
            register_config_subsystem("test_config_first", || {
                vec![json!({"method": "test_config_record", "params": {"tag": "f1"}})]
            });
            register_config_subsystem("test_config_second", Vec::new);
        });
        LOG.lock().unwrap().clear();
        guard
    }

    fn taken_log() -> Vec<String> {
        std::mem::take(&mut *LOG.lock().unwrap())
    }

    #[test]
    fn replays_in_order_across_subsystems() {
        let _g = setup();
        let cfg = json!({"subsystems": [
            {"subsystem": "a", "config": [
                {"method": "test_config_record", "params": {"tag": "1"}},
                {"method": "test_config_record", "params": {"tag": "2"}}]},
            {"subsystem": "empty", "config": null},
            {"subsystem": "nothing"},
            {"subsystem": "b", "config": [
                {"method": "test_config_record"},
                {"method": "test_config_record", "params": {"tag": "3"}}]}]});
        block_on(load_config_value("t.json", &cfg)).unwrap();
        assert_eq!(taken_log(), ["1", "2", "-", "3"]);
    }

    #[test]
    fn failing_call_stops_and_names_subsystem_entry_and_method() {
        let _g = setup();
        let cfg = json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "test_config_record", "params": {"tag": "1"}},
            {"method": "test_config_fail", "params": {}},
            {"method": "test_config_record", "params": {"tag": "never"}}]}]});
        let err = block_on(load_config_value("c.json", &cfg)).unwrap_err();
        match &err {
            ConfigError::Call {
                path,
                subsystem,
                index,
                method,
                error,
            } => {
                assert_eq!(
                    (path.as_str(), subsystem.as_str(), *index, method.as_str()),
                    ("c.json", "bdev", 1, "test_config_fail")
                );
                assert_eq!(error.code, -17);
            }
            other => panic!("{other:?}"),
        }
        let text = err.to_string();
        assert!(
            text.contains("entry 1")
                && text.contains("test_config_fail")
                && text.contains("\"bdev\""),
            "{text}"
        );
        assert_eq!(taken_log(), ["1"], "calls after the failure do not run");
    }

    #[test]
    fn unknown_method_is_a_call_error() {
        let _g = setup();
        let cfg =
            json!({"subsystems": [{"subsystem": "x", "config": [{"method": "test_config_nope"}]}]});
        match block_on(load_config_value("u", &cfg)).unwrap_err() {
            ConfigError::Call {
                index: 0,
                method,
                error,
                ..
            } => {
                assert_eq!(method, "test_config_nope");
                assert_eq!(error.code, -32601);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn malformed_shapes_are_format_errors_before_any_call() {
        let _g = setup();
        for (cfg, what) in [
            (json!([]), "subsystems"),
            (json!({"subsystems": {}}), "list"),
            (json!({"subsystems": [{"config": []}]}), "subsystems[0]"),
            (
                json!({"subsystems": [{"subsystem": "s", "config": 5}]}),
                "\"s\"",
            ),
            (
                json!({"subsystems": [{"subsystem": "s", "config": [
                {"method": "test_config_record", "params": {"tag": "1"}}, {"params": {}}]}]}),
                "entry 1",
            ),
            (
                json!({"subsystems": [{"subsystem": "s", "config": [{"method": "m", "params": 3}]}]}),
                "params",
            ),
        ] {
            match block_on(load_config_value("f", &cfg)) {
                Err(ConfigError::Format { path, message }) => {
                    assert_eq!(path, "f");
                    assert!(message.contains(what), "{cfg}: {message}");
                }
                other => panic!("{cfg}: {other:?}"),
            }
        }
        assert!(taken_log().is_empty(), "nothing ran");
    }

    #[test]
    fn file_errors_name_the_file() {
        let _g = setup();
        let dir = std::env::temp_dir().join(format!("keel-rpc-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let missing = dir.join("missing.json");
        let err = block_on(load_config_file(missing.to_str().unwrap())).unwrap_err();
        assert!(
            matches!(err, ConfigError::Read { .. }) && err.to_string().contains("missing.json"),
            "{err}"
        );
        let bad = dir.join("bad.json");
        std::fs::write(&bad, "{\"subsystems\": [").unwrap();
        let err = block_on(load_config_file(bad.to_str().unwrap())).unwrap_err();
        assert!(
            matches!(err, ConfigError::Format { .. }) && err.to_string().contains("bad.json"),
            "{err}"
        );
        let good = dir.join("good.json");
        std::fs::write(&good, r#"{"subsystems":[{"subsystem":"s","config":[{"method":"test_config_record","params":{"tag":"file"}}]}]}"#).unwrap();
        block_on(load_config_file(good.to_str().unwrap())).unwrap();
        assert_eq!(taken_log(), ["file"]);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn save_lists_subsystems_in_registration_order_and_loads_back() {
        let _g = setup();
        let saved = save_config_value();
        let subs = saved["subsystems"].as_array().unwrap();
        let first = subs
            .iter()
            .position(|s| s["subsystem"] == "test_config_first")
            .unwrap();
        let second = subs
            .iter()
            .position(|s| s["subsystem"] == "test_config_second")
            .unwrap();
        assert!(first < second);
        assert_eq!(
            subs[first]["config"],
            json!([{"method": "test_config_record", "params": {"tag": "f1"}}])
        );
        assert_eq!(subs[second]["config"], json!([]));
        // Only the test subsystems' calls are replayed (others may be registered by other tests).
        let mine = json!({"subsystems": [subs[first].clone(), subs[second].clone()]});
        block_on(load_config_value("saved", &mine)).unwrap();
        assert_eq!(taken_log(), ["f1"]);
    }
}
