//! Decoding params into typed structs with errors that name the parameter.

use crate::RpcError;
use serde::de::DeserializeOwned;

/// Decode `params` (absent = `{}`) into `T` (a `#[derive(Deserialize)]` struct, usually with
/// `#[serde(deny_unknown_fields)]`); a failure is -32602 with serde's message, which names the
/// missing or mistyped field.
pub fn parse<T: DeserializeOwned>(params: Option<serde_json::Value>) -> Result<T, RpcError> {
    let value = params.unwrap_or_else(|| serde_json::Value::Object(Default::default()));
    serde_json::from_value(value).map_err(|e| RpcError::invalid_params(format!("Invalid parameters: {e}")))
}
