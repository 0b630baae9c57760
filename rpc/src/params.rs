//! Decoding params into typed structs with errors that name the parameter.

use crate::RpcError;
use serde::de::DeserializeOwned;
use serde_json::{Map, Value};

/// Decode `params` (absent = `{}`) into `T` (a `#[derive(Deserialize)]` struct, usually with
/// `#[serde(deny_unknown_fields)]`); a failure is -32602 with serde's message, which names the
/// missing or unknown field; for a mistyped field (where serde's message only says what was
/// found and expected) the field's name is put in front.
pub fn parse<T: DeserializeOwned>(params: Option<serde_json::Value>) -> Result<T, RpcError> {
    let value = params.unwrap_or_else(|| Value::Object(Map::new()));
    T::deserialize(&value).map_err(|e| {
        let message = e.to_string();
        match culprit::<T>(&value, &message) {
            Some(field) => {
                RpcError::invalid_params(format!("Invalid parameters: {field}: {message}"))
            }
            None => RpcError::invalid_params(format!("Invalid parameters: {message}")),
        }
    })
}

/// The top-level field whose value `T` rejects, when serde's `message` does not name it
/// (error path only). A derived `Deserialize` visits an object's entries in order and fails at
/// the first bad value, before it checks for missing fields, so the first prefix of the
/// entries that fails with anything but a missing field ends with the culprit.
fn culprit<T: DeserializeOwned>(value: &Value, message: &str) -> Option<String> {
    if message.starts_with("missing field") || message.starts_with("unknown field") {
        return None;
    }
    let Value::Object(obj) = value else {
        return None;
    };
    let mut prefix = Map::new();
    for (key, v) in obj {
        prefix.insert(key.clone(), v.clone());
        if let Err(e) = T::deserialize(&Value::Object(prefix.clone())) {
            if !e.to_string().starts_with("missing field") {
                return Some(key.clone());
            }
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;
    use serde_json::json;

    #[derive(Debug, Deserialize, PartialEq)]
    #[serde(deny_unknown_fields)]
    struct Create {
        name: String,
        num_blocks: u64,
        #[serde(default)]
        uuid: Option<String>,
    }

    #[derive(Debug, Deserialize, PartialEq, Default)]
    #[serde(deny_unknown_fields)]
    struct AllOptional {
        #[serde(default)]
        name: Option<String>,
    }

    fn message(r: Result<Create, RpcError>) -> String {
        let e = r.expect_err("must fail");
        assert_eq!(e.code, -32602);
        e.message
    }

    #[test]
    fn decodes_valid_params() {
        let c: Create = parse(Some(json!({"name": "M0", "num_blocks": 8}))).unwrap();
        assert_eq!(
            c,
            Create {
                name: "M0".into(),
                num_blocks: 8,
                uuid: None
            }
        );
    }

    #[test]
    fn absent_params_are_an_empty_object() {
        let a: AllOptional = parse(None).unwrap();
        assert_eq!(a, AllOptional::default());
        assert!(message(parse(None)).contains("name"));
    }

    #[test]
    fn errors_name_the_offending_field() {
        let m = message(parse(Some(json!({"name": "M0"}))));
        assert!(m.contains("num_blocks"), "missing field named: {m}");
        let m = message(parse(Some(json!({"name": "M0", "num_blocks": "big"}))));
        assert!(
            m.contains("num_blocks: invalid type"),
            "mistyped field named: {m}"
        );
        assert!(
            m.contains("\"big\"") && m.contains("u64"),
            "wrong type described: {m}"
        );
        let m = message(parse(Some(
            json!({"name": "M0", "num_blocks": 1, "colour": 2}),
        )));
        assert!(m.contains("colour"), "unknown field named: {m}");
        let m = message(parse(Some(json!({"name": "M0", "num_blocks": -1}))));
        assert!(
            m.contains("num_blocks") && m.contains("-1"),
            "out of range value named: {m}"
        );
        let m = message(parse(Some(json!({"name": 5, "num_blocks": 1}))));
        assert!(m.contains("name: invalid type"), "first field named: {m}");
        let m = message(parse(Some(json!([1, 2]))));
        assert!(m.starts_with("Invalid parameters"), "{m}");
    }
}
