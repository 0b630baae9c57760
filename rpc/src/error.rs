//! JSON-RPC errors with SPDK's codes.

/// SPDK's `SPDK_JSONRPC_ERROR_INVALID_STATE`: the method exists but may not be called in the
/// server's current state (before or after `framework_start_init`).
pub const INVALID_STATE: i32 = -1;

/// A JSON-RPC error object: `code` is a JSON-RPC code (-32700 … -32603) or a negative errno.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message} (code {code})")]
pub struct RpcError {
    /// The code sent to the client.
    pub code: i32,
    /// A message saying what was wrong, naming the offending parameter where there is one.
    pub message: String,
}

/// What a method handler returns: the `result` value or an error.
pub type RpcResult = Result<serde_json::Value, RpcError>;

impl RpcError {
    /// -32700: the request is not valid JSON.
    pub fn parse_error(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32700,
            message: msg.into(),
        }
    }
    /// -32600: not a valid JSON-RPC 2.0 request object.
    pub fn invalid_request(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32600,
            message: msg.into(),
        }
    }
    /// -32601: no such method.
    pub fn method_not_found(method: &str) -> Self {
        RpcError {
            code: -32601,
            message: format!("Method not found: {method}"),
        }
    }
    /// -32602: params missing, of the wrong type or out of range.
    pub fn invalid_params(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32602,
            message: msg.into(),
        }
    }
    /// -32603: the server failed.
    pub fn internal(msg: impl Into<String>) -> Self {
        RpcError {
            code: -32603,
            message: msg.into(),
        }
    }
    /// A negative errno, as SPDK answers for operation failures (e.g. -17 EEXIST, -19 ENODEV).
    pub fn errno(errno: i32, msg: impl Into<String>) -> Self {
        RpcError {
            code: -errno.abs(),
            message: msg.into(),
        }
    }
}
