//! A JSON-RPC client connection over a Unix socket for tests: raw bytes out, complete JSON
//! values in, framed as rpc.py frames them (one value after another, no delimiter), by
//! serde_json rather than by the server's own framing code, so that a test does not trust what
//! it tests.

use serde_json::{json, Value};
use std::io::{ErrorKind, Read, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

/// One client connection; every read waits at most 20 s (a hang fails the test).
#[derive(Debug)]
pub struct JsonConn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl JsonConn {
    /// Connect to the server's socket at `path`.
    pub fn connect(path: &Path) -> JsonConn {
        let stream = UnixStream::connect(path)
            .unwrap_or_else(|e| panic!("connect to the RPC socket {path:?}: {e}"));
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .expect("a read timeout on a connected socket");
        JsonConn {
            stream,
            buf: Vec::new(),
        }
    }

    /// Send `bytes` as they are (any framing, any split).
    pub fn send(&mut self, bytes: &[u8]) {
        self.stream
            .write_all(bytes)
            .unwrap_or_else(|e| panic!("write to the RPC socket: {e}"));
    }

    /// The next complete JSON value, or None when the server closed the connection first
    /// (also when it reset it, closing with unread data, e.g. after an oversized request).
    pub fn recv(&mut self) -> Option<Value> {
        loop {
            let mut it = serde_json::Deserializer::from_slice(&self.buf).into_iter::<Value>();
            if let Some(Ok(v)) = it.next() {
                let used = it.byte_offset();
                self.buf.drain(..used);
                return Some(v);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Err(e) if e.kind() == ErrorKind::ConnectionReset => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read from the RPC socket: {e}"),
            }
        }
    }

    /// Call `method` with request id `id` and return the whole response, checked to be a
    /// JSON-RPC 2.0 response to that id.
    pub fn call(&mut self, method: &str, params: Option<Value>, id: i64) -> Value {
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": id});
        if let Some(p) = params {
            req["params"] = p;
        }
        self.send(req.to_string().as_bytes());
        let resp = self.recv().expect("an answer");
        assert_eq!(resp["id"], id, "{resp}");
        assert_eq!(resp["jsonrpc"], "2.0", "{resp}");
        resp
    }

    /// A second handle on the socket, to write from another thread while this one reads.
    pub fn writer(&self) -> UnixStream {
        self.stream
            .try_clone()
            .unwrap_or_else(|e| panic!("clone the RPC socket: {e}"))
    }

    /// Whether the server closed the connection (the next read sees end of file).
    pub fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }

    /// Nothing has arrived (checked without waiting).
    pub fn nothing_pending(&mut self) -> bool {
        self.stream
            .set_nonblocking(true)
            .expect("non-blocking mode");
        let mut b = [0u8; 1];
        let r = self.stream.read(&mut b);
        self.stream.set_nonblocking(false).expect("blocking mode");
        self.buf.is_empty() && matches!(r, Err(ref e) if e.kind() == ErrorKind::WouldBlock)
    }
}
