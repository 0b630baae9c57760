//! Finding one complete JSON value in a byte stream (JSON-RPC without framing).
