//! JSON-RPC 2.0 request decoding and response encoding, with no I/O: what the server does with
//! the bytes it read, as pure functions (also the entry point of the fuzz target).

use crate::framing::{JsonScanner, Scan};
use crate::RpcError;
use serde::Serialize;
use serde_json::Value;

/// Largest request accepted (bytes of one JSON value, leading whitespace included).
pub const MAX_REQUEST_SIZE: usize = 16 * 1024 * 1024;

/// A valid JSON-RPC 2.0 request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// The request id (string, number or null); `None` for a notification, which gets no
    /// response.
    pub id: Option<Value>,
    /// Method name.
    pub method: String,
    /// Params (an object or an array); `None` when absent or null.
    pub params: Option<Value>,
}

/// What the bytes at the start of a buffer hold.
#[derive(Debug, Clone, PartialEq)]
pub enum Decoded {
    /// No complete value yet: read more (the buffer may be empty or only whitespace).
    Incomplete,
    /// `len` bytes (leading whitespace and one JSON value) form a valid request.
    Request {
        /// Bytes consumed.
        len: usize,
        /// The request.
        request: Request,
    },
    /// `len` bytes form a JSON value that is not a valid request: answer `error` (-32600) with
    /// `id` (null when the request had none usable) and go on after it.
    Invalid {
        /// Bytes consumed.
        len: usize,
        /// The id to answer with.
        id: Value,
        /// The error to answer.
        error: RpcError,
    },
    /// The bytes are not JSON (-32700) or the request is too large (-32600): answer `error`
    /// with a null id and close the connection, as there is no point to resynchronise at.
    Fatal {
        /// The error to answer.
        error: RpcError,
    },
}

/// Decode the first request in `buf` (framing scan, JSON parse, request validation), as the
/// server does; never panics, whatever the bytes.
pub fn decode_request(buf: &[u8]) -> Decoded {
    let mut scanner = JsonScanner::new();
    decode_with(&mut scanner, buf, MAX_REQUEST_SIZE)
}

/// Like [`decode_request`], resuming an incremental scan over a growing buffer: `scanner` must
/// have scanned only earlier versions of `buf`; it is reset when a value was consumed.
/// `max_len` bounds the size of one request.
pub(crate) fn decode_with(scanner: &mut JsonScanner, buf: &[u8], max_len: usize) -> Decoded {
    match scanner.scan(buf) {
        Scan::Incomplete => {
            if buf.len() > max_len && !scanner.is_blank() {
                Decoded::Fatal {
                    error: RpcError::invalid_request(format!(
                        "request too large: more than {max_len} bytes without a complete JSON value"
                    )),
                }
            } else {
                Decoded::Incomplete
            }
        }
        Scan::Invalid(e) => Decoded::Fatal {
            error: RpcError::parse_error(format!("Parse error: {e}")),
        },
        Scan::Complete(len) => {
            scanner.reset();
            if len > max_len {
                return Decoded::Fatal {
                    error: RpcError::invalid_request(format!(
                        "request too large: {len} bytes, limit {max_len}"
                    )),
                };
            }
            match serde_json::from_slice::<Value>(&buf[..len]) {
                Err(e) => Decoded::Fatal {
                    error: RpcError::parse_error(format!("Parse error: {e}")),
                },
                Ok(value) => match parse_request(value) {
                    Ok(request) => Decoded::Request { len, request },
                    Err((id, error)) => Decoded::Invalid { len, id, error },
                },
            }
        }
    }
}

/// Validate a parsed JSON value as a JSON-RPC 2.0 request; on failure, the id to answer with
/// (null when none could be read) and the -32600 error.
pub fn parse_request(value: Value) -> Result<Request, (Value, RpcError)> {
    let Value::Object(mut obj) = value else {
        return Err((
            Value::Null,
            RpcError::invalid_request("Invalid request: batch requests are not supported"),
        ));
    };
    let id = obj.remove("id");
    let reply_id = match &id {
        Some(v @ (Value::Null | Value::String(_) | Value::Number(_))) => v.clone(),
        Some(_) => {
            return Err((
                Value::Null,
                RpcError::invalid_request("Invalid request: id must be a string, a number or null"),
            ))
        }
        None => Value::Null,
    };
    let invalid = |msg: &str| {
        Err((
            reply_id.clone(),
            RpcError::invalid_request(format!("Invalid request: {msg}")),
        ))
    };
    match obj.get("jsonrpc") {
        Some(Value::String(v)) if v == "2.0" => {}
        Some(_) => return invalid("jsonrpc must be \"2.0\""),
        None => return invalid("missing \"jsonrpc\": \"2.0\""),
    }
    let method = match obj.remove("method") {
        Some(Value::String(m)) => m,
        Some(_) => return invalid("method must be a string"),
        None => return invalid("missing method"),
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return invalid("params must be an object or an array"),
    };
    Ok(Request { id, method, params })
}

#[derive(Serialize)]
struct ErrorObject<'a> {
    code: i32,
    message: &'a str,
}

#[derive(Serialize)]
struct Response<'a> {
    jsonrpc: &'static str,
    id: &'a Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    result: Option<&'a Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<ErrorObject<'a>>,
}

/// Append the response to request `id` to `out`: `{"jsonrpc":"2.0","id":…,"result":…}` or
/// `{"jsonrpc":"2.0","id":…,"error":{"code":…,"message":…}}`, then a newline (as SPDK does; a
/// JSON reader skips it as whitespace).
pub fn encode_response(out: &mut Vec<u8>, id: &Value, result: &Result<Value, RpcError>) {
    let response = match result {
        Ok(value) => Response {
            jsonrpc: "2.0",
            id,
            result: Some(value),
            error: None,
        },
        Err(e) => Response {
            jsonrpc: "2.0",
            id,
            result: None,
            error: Some(ErrorObject {
                code: e.code,
                message: &e.message,
            }),
        },
    };
    let start = out.len();
    if serde_json::to_writer(&mut *out, &response).is_err() {
        // Unreachable for values built by serde_json (keys are strings); answer something valid.
        out.truncate(start);
        let fallback = RpcError::internal("cannot encode the response");
        let error = Some(ErrorObject {
            code: fallback.code,
            message: &fallback.message,
        });
        let response = Response {
            jsonrpc: "2.0",
            id: &Value::Null,
            result: None,
            error,
        };
        serde_json::to_writer(&mut *out, &response).expect("a plain error object always encodes");
    }
    out.push(b'\n');
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn decode(s: &str) -> Decoded {
        decode_request(s.as_bytes())
    }

    fn invalid_code(d: &Decoded) -> i32 {
        match d {
            Decoded::Invalid { error, .. } => error.code,
            other => panic!("expected Invalid, got {other:?}"),
        }
    }

    #[test]
    fn valid_request_and_notification() {
        let d = decode(r#" {"jsonrpc":"2.0","method":"m","params":{"a":1},"id":7} {"x"#);
        let Decoded::Request { len, request } = d else {
            panic!("{d:?}")
        };
        assert_eq!(len, 55);
        assert_eq!(
            request,
            Request {
                id: Some(json!(7)),
                method: "m".into(),
                params: Some(json!({"a": 1}))
            }
        );
        let Decoded::Request { request, .. } =
            decode(r#"{"jsonrpc":"2.0","method":"n","params":[1]}"#)
        else {
            panic!()
        };
        assert_eq!(request.id, None, "notification");
        assert_eq!(request.params, Some(json!([1])));
        let Decoded::Request { request, .. } =
            decode(r#"{"jsonrpc":"2.0","method":"n","params":null,"id":"x"}"#)
        else {
            panic!()
        };
        assert_eq!(request.params, None);
        assert_eq!(request.id, Some(json!("x")));
    }

    #[test]
    fn invalid_requests_answer_32600_with_their_id() {
        let d = decode(r#"{"id": 7, "params": {}}"#);
        assert_eq!(invalid_code(&d), -32600);
        let Decoded::Invalid { id, error, len } = d else {
            unreachable!()
        };
        assert_eq!(id, json!(7));
        assert_eq!(len, 23);
        assert!(error.message.contains("jsonrpc"), "{}", error.message);
        for (req, what) in [
            (r#"{"jsonrpc":"2.0","id":1}"#, "missing method"),
            (
                r#"{"jsonrpc":"2.0","method":5,"id":1}"#,
                "method must be a string",
            ),
            (r#"{"jsonrpc":"1.0","method":"m","id":1}"#, "jsonrpc"),
            (
                r#"{"jsonrpc":"2.0","method":"m","params":3,"id":1}"#,
                "params",
            ),
        ] {
            let d = decode(req);
            assert_eq!(invalid_code(&d), -32600, "{req}");
            let Decoded::Invalid { id, error, .. } = d else {
                unreachable!()
            };
            assert_eq!(id, json!(1));
            assert!(error.message.contains(what), "{req}: {}", error.message);
        }
        let d = decode(r#"{"jsonrpc":"2.0","method":"m","id":{"a":1}}"#);
        assert_eq!(invalid_code(&d), -32600);
        let Decoded::Invalid { id, .. } = d else {
            unreachable!()
        };
        assert_eq!(id, Value::Null, "unusable id answers null");
        assert_eq!(
            invalid_code(&decode(r#"[{"jsonrpc":"2.0","method":"m","id":1}]"#)),
            -32600
        );
    }

    #[test]
    fn garbage_and_broken_json_are_fatal_parse_errors() {
        for bad in [
            "hello",
            "{\"jsonrpc\": \"2.0\", \"method\": ]",
            "{\"a\" 1}",
            "{\"\\x\":1}",
        ] {
            match decode(bad) {
                Decoded::Fatal { error } => assert_eq!(error.code, -32700, "{bad}"),
                other => panic!("{bad}: {other:?}"),
            }
        }
        assert_eq!(decode(" {\"jsonrpc\""), Decoded::Incomplete);
        assert_eq!(decode(""), Decoded::Incomplete);
    }

    #[test]
    fn oversized_requests_are_fatal() {
        let mut scanner = JsonScanner::new();
        let big = format!(
            "{{\"jsonrpc\":\"2.0\",\"method\":\"m\",\"params\":\"{}\"",
            "x".repeat(100)
        );
        match decode_with(&mut scanner, big.as_bytes(), 64) {
            Decoded::Fatal { error } => {
                assert!(error.message.contains("too large"), "{}", error.message)
            }
            other => panic!("{other:?}"),
        }
        let mut scanner = JsonScanner::new();
        let complete = format!("{big}}}");
        match decode_with(&mut scanner, complete.as_bytes(), 64) {
            Decoded::Fatal { error } => assert_eq!(error.code, -32600),
            other => panic!("{other:?}"),
        }
        // Whitespace alone never counts as a request in progress.
        let mut scanner = JsonScanner::new();
        assert_eq!(
            decode_with(&mut scanner, &[b' '; 100], 64),
            Decoded::Incomplete
        );
    }

    #[test]
    fn responses_have_spdk_shape() {
        let mut out = Vec::new();
        encode_response(&mut out, &json!(1), &Ok(json!({"a": [1]})));
        encode_response(
            &mut out,
            &Value::Null,
            &Err(RpcError::method_not_found("nope")),
        );
        let text = String::from_utf8(out).unwrap();
        let mut lines = text.lines();
        let ok: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(ok, json!({"jsonrpc": "2.0", "id": 1, "result": {"a": [1]}}));
        let err: Value = serde_json::from_str(lines.next().unwrap()).unwrap();
        assert_eq!(
            err,
            json!({"jsonrpc": "2.0", "id": null, "error": {"code": -32601, "message": RpcError::method_not_found("nope").message}})
        );
        assert!(text.ends_with('\n'));
    }
}
