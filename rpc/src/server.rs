//! The JSON-RPC server: a poller on the main reactor serving a Unix stream socket.
//!
//! Everything is non-blocking: the poller accepts connections, reads what is available,
//! decodes complete requests ([`crate::protocol`]) and starts each call as a local task; the
//! task writes the response into the connection's output buffer and sends what the socket
//! takes. A slow client only grows its own buffer (and stops having its next requests decoded
//! past a high-water mark); it never blocks the reactor.
//!
//! Requests on one connection run one at a time and are answered in order (a call's effects
//! are complete before the next call on the same connection starts); connections are served
//! concurrently.
//!
//! Polling cost: in busy-polling mode the poller is timed ([`BUSY_POLL_PERIOD`]), so the main
//! core, which also serves I/O, does not pay socket syscalls on every iteration; in interrupt
//! mode it is untimed and the listener and every connection are registered as interrupt fds,
//! so the reactor wakes when a client connects or sends. Output that the socket did not take
//! at once is retried by a timed poller that exists only while some output is pending.

use crate::framing::JsonScanner;
use crate::protocol::{self, Decoded, MAX_REQUEST_SIZE};
use crate::registry;
use crate::RpcResult;
use keel_reactor::{PollStatus, PollerId};
use serde_json::Value;
use std::cell::RefCell;
use std::io::{ErrorKind, Read};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::PathBuf;
use std::rc::{Rc, Weak};
use std::time::Duration;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RpcServerError {
    /// Another process listens on the socket path.
    #[error("RPC socket {path} is in use by another process (is another keel-tgt running?)")]
    InUse {
        /// The socket path.
        path: String,
    },
    /// Could not bind/listen.
    #[error("cannot listen on RPC socket {path}: {source}")]
    Io {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
}

/// Period of the server poller when the reactor busy-polls (SPDK polls its RPC sockets every
/// 4 ms). 1 ms is well below what a human or a script notices and costs the main core, which
/// also serves I/O, about a thousand `accept4` rounds a second (measured under strace during an
/// NVMe/TCP run at 100 µs: 10K/s, more syscalls than the data path's `epoll_wait`).
pub const BUSY_POLL_PERIOD: Duration = Duration::from_millis(1);

/// Period of the retry poller for output the socket did not take at once.
const FLUSH_RETRY_PERIOD: Duration = Duration::from_millis(1);

/// Bytes read from a connection per `read` call.
const READ_CHUNK: usize = 64 * 1024;

/// A connection stops having requests decoded while this much output waits for the client.
const OUTPUT_HIGH_WATER: usize = 1024 * 1024;

/// Connections served at once; more are accepted and closed at once (with a warning).
const MAX_CONNECTIONS: usize = 128;

/// The running server. Dropping it stops serving, closes every connection and removes the
/// socket file (if it is still the one this server created). It must be dropped on the reactor
/// that started it.
pub struct RpcServer {
    inner: Rc<RefCell<Inner>>,
    poller: PollerId,
}

impl RpcServer {
    /// Bind `path` and start serving from a poller on the calling reactor (the main core).
    /// A stale socket file (nobody listening) is replaced; a live one is [`RpcServerError::InUse`].
    pub fn start(path: &str) -> Result<RpcServer, RpcServerError> {
        let io_err = |source| RpcServerError::Io {
            path: path.to_string(),
            source,
        };
        let Some(core) = keel_reactor::current_core() else {
            return Err(io_err(std::io::Error::other(
                "the RPC server must be started on a reactor thread",
            )));
        };
        remove_stale_socket(path)?;
        let listener = UnixListener::bind(path).map_err(io_err)?;
        listener.set_nonblocking(true).map_err(io_err)?;
        let meta = std::fs::metadata(path).map_err(|e| {
            let _ = std::fs::remove_file(path);
            io_err(e)
        })?;
        let fd = listener.as_raw_fd();
        let inner = Rc::new(RefCell::new(Inner {
            path: PathBuf::from(path),
            file_id: (meta.dev(), meta.ino()),
            listener,
            conns: Vec::new(),
            next_conn_id: 1,
            flush_poller: None,
            accept_error_logged: false,
        }));
        keel_reactor::register_interrupt_fd(fd);
        let interrupt_mode = keel_reactor::reactor_stats()
            .iter()
            .any(|s| s.lcore == core && s.interrupt_mode);
        let period = if interrupt_mode {
            None
        } else {
            Some(BUSY_POLL_PERIOD)
        };
        let weak = Rc::downgrade(&inner);
        let poller =
            keel_reactor::register_poller("rpc_server", period, move || match weak.upgrade() {
                Some(inner) => poll(&inner),
                None => PollStatus::Idle,
            });
        log::info!("JSON-RPC server listening on {path}");
        Ok(RpcServer { inner, poller })
    }
}

impl Drop for RpcServer {
    fn drop(&mut self) {
        keel_reactor::unregister_poller(self.poller);
        let mut inner = self.inner.borrow_mut();
        if let Some(id) = inner.flush_poller.take() {
            keel_reactor::unregister_poller(id);
        }
        for mut conn in inner.conns.drain(..) {
            conn.unwatch();
        }
        keel_reactor::unregister_interrupt_fd(inner.listener.as_raw_fd());
        // Remove the socket file only if it is still ours (not replaced by another process).
        match std::fs::metadata(&inner.path) {
            Ok(meta) if (meta.dev(), meta.ino()) == inner.file_id => {
                if let Err(e) = std::fs::remove_file(&inner.path) {
                    log::warn!("cannot remove RPC socket {}: {e}", inner.path.display());
                }
            }
            _ => {}
        }
        log::info!("JSON-RPC server on {} stopped", inner.path.display());
    }
}

/// Check `path` before binding: absent is fine, a socket nobody listens on is removed, a live
/// socket is [`RpcServerError::InUse`], anything else is an error.
fn remove_stale_socket(path: &str) -> Result<(), RpcServerError> {
    let io_err = |source| RpcServerError::Io {
        path: path.to_string(),
        source,
    };
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io_err(e)),
        Ok(meta) if !meta.file_type().is_socket() => {
            return Err(io_err(std::io::Error::new(
                ErrorKind::AlreadyExists,
                "the path exists and is not a socket",
            )))
        }
        Ok(_) => {}
    }
    match UnixStream::connect(path) {
        Ok(_) => Err(RpcServerError::InUse {
            path: path.to_string(),
        }),
        Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
            log::info!("removing stale RPC socket {path} (nobody listens on it)");
            std::fs::remove_file(path).map_err(io_err)
        }
        Err(e) => Err(io_err(e)),
    }
}

/// The server's state, owned by the main reactor.
struct Inner {
    path: PathBuf,
    /// (device, inode) of the socket file this server created.
    file_id: (u64, u64),
    listener: UnixListener,
    conns: Vec<Conn>,
    next_conn_id: u64,
    /// The retry poller for pending output, while there is some.
    flush_poller: Option<PollerId>,
    /// An accept error was logged since the last successful accept (avoids a log flood).
    accept_error_logged: bool,
}

/// A call to run as a local task.
struct Job {
    conn: u64,
    id: Option<Value>,
    method: &'static str,
    handler: fn(Option<Value>) -> crate::HandlerFuture,
    params: Option<Value>,
}

impl Inner {
    /// Accept every pending connection; true if any arrived.
    fn accept(&mut self) -> bool {
        let mut progress = false;
        loop {
            match self.listener.accept() {
                Ok((stream, _)) => {
                    progress = true;
                    self.accept_error_logged = false;
                    let id = self.next_conn_id;
                    self.next_conn_id += 1;
                    if self.conns.len() >= MAX_CONNECTIONS {
                        log::warn!(
                            "rpc: {MAX_CONNECTIONS} connections open, refusing connection {id}"
                        );
                        continue;
                    }
                    if let Err(e) = stream.set_nonblocking(true) {
                        log::warn!(
                            "rpc conn {id}: cannot make the socket non-blocking, closing it: {e}"
                        );
                        continue;
                    }
                    keel_reactor::register_interrupt_fd(stream.as_raw_fd());
                    log::debug!("rpc conn {id}: accepted");
                    let mut conn = Conn::new(id, stream);
                    conn.watched = true;
                    self.conns.push(conn);
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => return progress,
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(e) => {
                    if !self.accept_error_logged {
                        log::warn!("rpc: accept on {} failed: {e}", self.path.display());
                        self.accept_error_logged = true;
                    }
                    return progress;
                }
            }
        }
    }

    /// Close and forget the connections that are done.
    fn reap(&mut self) {
        self.conns.retain_mut(|c| {
            if c.dead {
                c.unwatch();
                log::debug!("rpc conn {}: closed", c.id);
            }
            !c.dead
        });
    }

    fn output_pending(&self) -> bool {
        self.conns.iter().any(|c| c.pending_output() > 0)
    }
}

/// One run of the server poller (also of the flush retry poller).
fn poll(rc: &Rc<RefCell<Inner>>) -> PollStatus {
    let mut jobs = Vec::new();
    let progress = {
        let mut inner = rc.borrow_mut();
        // Interrupt mode: accept only when the reactor saw the listening socket readable
        // (`accept` takes every waiting connection), not on every wake-up.
        let listening = keel_reactor::take_interrupt_fd_ready(inner.listener.as_raw_fd());
        let mut progress = listening && inner.accept();
        for conn in &mut inner.conns {
            progress |= conn.service(&mut jobs);
        }
        inner.reap();
        progress
    };
    after_service(rc, jobs);
    if progress {
        PollStatus::Busy
    } else {
        PollStatus::Idle
    }
}

/// With no borrow of the state held: start the calls decoded, and make sure pending output is
/// retried (or stop retrying when none is left).
fn after_service(rc: &Rc<RefCell<Inner>>, jobs: Vec<Job>) {
    for job in jobs {
        let weak = Rc::downgrade(rc);
        keel_reactor::spawn_local(run_job(weak, job));
    }
    let (pending, poller) = {
        let inner = rc.borrow();
        (inner.output_pending(), inner.flush_poller)
    };
    match (pending, poller) {
        (true, None) => {
            let weak = Rc::downgrade(rc);
            let id = keel_reactor::register_poller(
                "rpc_server_flush",
                Some(FLUSH_RETRY_PERIOD),
                move || match weak.upgrade() {
                    Some(inner) => poll(&inner),
                    None => PollStatus::Idle,
                },
            );
            rc.borrow_mut().flush_poller = Some(id);
        }
        (false, Some(id)) => {
            keel_reactor::unregister_poller(id);
            rc.borrow_mut().flush_poller = None;
        }
        _ => {}
    }
}

/// Run one call, then answer it and go on with the connection's next request.
async fn run_job(server: Weak<RefCell<Inner>>, job: Job) {
    let result = (job.handler)(job.params).await;
    let Some(rc) = server.upgrade() else {
        log::debug!(
            "rpc: {} finished after the server stopped; answer dropped",
            job.method
        );
        return;
    };
    let mut jobs = Vec::new();
    {
        let mut inner = rc.borrow_mut();
        match inner.conns.iter_mut().find(|c| c.id == job.conn) {
            Some(conn) => {
                conn.finish_call(job.method, job.id.as_ref(), &result);
                conn.service(&mut jobs);
            }
            None => log::debug!(
                "rpc conn {}: closed before {} finished; answer dropped",
                job.conn,
                job.method
            ),
        }
        inner.reap();
    }
    after_service(&rc, jobs);
}

/// One client connection.
struct Conn {
    id: u64,
    stream: UnixStream,
    /// Bytes received and not yet consumed (the start of the next request).
    input: Vec<u8>,
    /// Scan state over `input`.
    scanner: JsonScanner,
    /// Encoded responses; `output[written..]` is still to send.
    output: Vec<u8>,
    written: usize,
    /// A call of this connection is running.
    in_flight: bool,
    /// No more requests: send the pending output, then close (after a fatal protocol error).
    closing: bool,
    /// The client shut down its sending side.
    peer_eof: bool,
    /// Done: close at the next reap.
    dead: bool,
    /// Registered as an interrupt fd of the reactor.
    watched: bool,
}

impl Conn {
    fn new(id: u64, stream: UnixStream) -> Conn {
        Conn {
            id,
            stream,
            input: Vec::new(),
            scanner: JsonScanner::new(),
            output: Vec::new(),
            written: 0,
            in_flight: false,
            closing: false,
            peer_eof: false,
            dead: false,
            watched: false,
        }
    }

    fn fd(&self) -> RawFd {
        self.stream.as_raw_fd()
    }

    /// Stop waking an interrupt-mode reactor when this connection is readable (once nothing
    /// more will be read; pending output is retried by the flush poller).
    fn unwatch(&mut self) {
        if std::mem::take(&mut self.watched) {
            keel_reactor::unregister_interrupt_fd(self.fd());
        }
    }

    fn pending_output(&self) -> usize {
        if self.dead {
            0
        } else {
            self.output.len() - self.written
        }
    }

    /// Queue the response to a request (nothing for a notification).
    fn respond(&mut self, id: Option<&Value>, result: &RpcResult) {
        if let Some(id) = id {
            protocol::encode_response(&mut self.output, id, result);
        }
    }

    /// A call finished: queue its answer.
    fn finish_call(&mut self, method: &str, id: Option<&Value>, result: &RpcResult) {
        self.in_flight = false;
        if let Err(e) = result {
            log::debug!("rpc conn {}: {method} failed: {e}", self.id);
        }
        self.respond(id, result);
    }

    /// Make all the progress possible without blocking: send output, decode and dispatch the
    /// next request (into `jobs`), read more. Returns whether anything happened.
    fn service(&mut self, jobs: &mut Vec<Job>) -> bool {
        let mut progress = false;
        while !self.dead {
            match self.flush() {
                Ok(sent) => progress |= sent,
                Err(e) => {
                    log::debug!("rpc conn {}: send failed: {e}", self.id);
                    self.dead = true;
                    break;
                }
            }
            if self.closing {
                self.dead |= self.pending_output() == 0;
                break;
            }
            if !self.in_flight && self.pending_output() < OUTPUT_HIGH_WATER && self.decode_one(jobs)
            {
                progress = true;
                continue;
            }
            if self.peer_eof {
                if !self.in_flight && self.pending_output() == 0 {
                    if !self.scanner.is_blank() {
                        log::warn!(
                            "rpc conn {}: client closed the connection in the middle of a request",
                            self.id
                        );
                    }
                    self.dead = true;
                }
                break;
            }
            if self.input.len() > MAX_REQUEST_SIZE {
                break; // Complete requests are waiting; read more once they are consumed.
            }
            match self.read() {
                Ok(true) => progress = true,
                Ok(false) => break,
                Err(e) => {
                    log::debug!("rpc conn {}: receive failed: {e}", self.id);
                    self.dead = true;
                }
            }
        }
        progress
    }

    /// Decode the next request in `input`; true if something was consumed (or the connection
    /// must close).
    fn decode_one(&mut self, jobs: &mut Vec<Job>) -> bool {
        match protocol::decode_with(&mut self.scanner, &self.input, MAX_REQUEST_SIZE) {
            Decoded::Incomplete => {
                if self.scanner.is_blank() && !self.input.is_empty() {
                    // Only whitespace so far: nothing to keep.
                    self.input.clear();
                    self.scanner.reset();
                }
                false
            }
            Decoded::Fatal { error } => {
                log::warn!("rpc conn {}: {error}; closing the connection", self.id);
                self.respond(Some(&Value::Null), &Err(error));
                self.input = Vec::new();
                self.closing = true;
                // Nothing more is read: stop waking the reactor for what the client sends.
                self.unwatch();
                true
            }
            Decoded::Invalid { len, id, error } => {
                self.input.drain(..len);
                log::warn!("rpc conn {}: {error}", self.id);
                self.respond(Some(&id), &Err(error));
                true
            }
            Decoded::Request { len, request } => {
                self.input.drain(..len);
                let found = registry::lookup(&request.method);
                let refused = found.and_then(|m| m.states.check(registry::rpc_state()).err());
                if let Some(error) = refused {
                    log::warn!(
                        "rpc conn {}: {} refused in the current state",
                        self.id,
                        request.method
                    );
                    self.respond(request.id.as_ref(), &Err(error));
                    return true;
                }
                match found {
                    Some(m) => {
                        log::debug!("rpc conn {}: {}", self.id, request.method);
                        self.in_flight = true;
                        jobs.push(Job {
                            conn: self.id,
                            id: request.id,
                            method: m.spec.name,
                            handler: m.handler,
                            params: request.params,
                        });
                    }
                    None => {
                        log::warn!("rpc conn {}: unknown method {:?}", self.id, request.method);
                        let error = crate::RpcError::method_not_found(&request.method);
                        self.respond(request.id.as_ref(), &Err(error));
                    }
                }
                true
            }
        }
    }

    /// Send pending output; Ok(true) if some bytes left.
    fn flush(&mut self) -> std::io::Result<bool> {
        let mut sent_any = false;
        while self.written < self.output.len() {
            let rest = &self.output[self.written..];
            // SAFETY: `rest` is a live, initialised buffer of `rest.len()` bytes and the fd is
            // the connection's open socket. MSG_NOSIGNAL turns a closed peer into EPIPE instead
            // of SIGPIPE; the socket is non-blocking.
            let n = unsafe {
                libc::send(
                    self.fd(),
                    rest.as_ptr().cast(),
                    rest.len(),
                    libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT,
                )
            };
            if n < 0 {
                let e = std::io::Error::last_os_error();
                match e.kind() {
                    ErrorKind::WouldBlock => break,
                    ErrorKind::Interrupted => continue,
                    _ => return Err(e),
                }
            }
            self.written += n as usize;
            sent_any |= n > 0;
        }
        if self.written == self.output.len() && self.written > 0 {
            self.output.clear();
            self.written = 0;
        }
        Ok(sent_any)
    }

    /// Read what is available; Ok(true) if bytes (or EOF) arrived, Ok(false) if nothing.
    fn read(&mut self) -> std::io::Result<bool> {
        let old = self.input.len();
        self.input.resize(old + READ_CHUNK, 0);
        let res = loop {
            match self.stream.read(&mut self.input[old..]) {
                Err(e) if e.kind() == ErrorKind::Interrupted => continue,
                other => break other,
            }
        };
        match res {
            Ok(0) => {
                self.input.truncate(old);
                self.peer_eof = true;
                // EOF stays readable: stop waking the reactor for this connection.
                self.unwatch();
                Ok(true)
            }
            Ok(n) => {
                self.input.truncate(old + n);
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                self.input.truncate(old);
                Ok(false)
            }
            Err(e) => {
                self.input.truncate(old);
                Err(e)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::io::Write;

    /// A connection over a socket pair, with the client end.
    fn pair() -> (Conn, UnixStream) {
        let (a, b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        (Conn::new(1, a), b)
    }

    fn read_values(client: &mut UnixStream, n: usize) -> Vec<Value> {
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        while out.len() < n {
            let mut scanner = JsonScanner::new();
            if let crate::framing::Scan::Complete(len) = scanner.scan(&buf) {
                out.push(serde_json::from_slice(&buf[..len]).unwrap());
                buf.drain(..len);
                continue;
            }
            let mut chunk = [0u8; 4096];
            let got = client.read(&mut chunk).unwrap();
            assert!(got > 0, "connection closed after {} values", out.len());
            buf.extend_from_slice(&chunk[..got]);
        }
        out
    }

    static ECHO: crate::MethodSpec = crate::MethodSpec {
        name: "test_server_echo",
        help: "",
        params: &[],
        cli_rewrite: None,
    };
    fn echo(p: Option<Value>) -> crate::HandlerFuture {
        Box::pin(async move { Ok(p.unwrap_or(Value::Null)) })
    }
    fn register_echo() {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| crate::register_method(&ECHO, echo));
    }

    #[test]
    fn requests_are_dispatched_one_at_a_time_in_order() {
        register_echo();
        let (mut conn, mut client) = pair();
        client
            .write_all(br#"{"jsonrpc":"2.0","method":"test_server_echo","params":[1],"id":1} {"jsonrpc":"2.0","method":"test_server_echo","params":[2],"id":2}"#)
            .unwrap();
        let mut jobs = Vec::new();
        assert!(conn.service(&mut jobs));
        assert_eq!(jobs.len(), 1, "the second request waits for the first");
        let job = jobs.pop().unwrap();
        assert_eq!(
            (job.id.clone(), job.params.clone()),
            (Some(json!(1)), Some(json!([1])))
        );
        let result = crate::testutil::block_on((job.handler)(job.params));
        conn.finish_call(job.method, job.id.as_ref(), &result);
        conn.service(&mut jobs);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id, Some(json!(2)));
        let answers = read_values(&mut client, 1);
        assert_eq!(
            answers[0],
            json!({"jsonrpc": "2.0", "id": 1, "result": [1]})
        );
    }

    #[test]
    fn protocol_errors_are_answered_and_garbage_closes() {
        register_echo();
        let (mut conn, mut client) = pair();
        client
            .write_all(br#"{"jsonrpc":"2.0","method":"test_server_nope","id":1}{"id":2}{"jsonrpc":"2.0","method":"test_server_nope"} nonsense"#)
            .unwrap();
        let mut jobs = Vec::new();
        conn.service(&mut jobs);
        assert!(jobs.is_empty());
        let answers = read_values(&mut client, 3);
        assert_eq!(answers[0]["error"]["code"], -32601);
        assert_eq!(answers[0]["id"], 1);
        assert_eq!(answers[1]["error"]["code"], -32600);
        assert_eq!(answers[1]["id"], 2);
        // The notification to an unknown method gets no answer; the garbage gets -32700.
        assert_eq!(answers[2]["error"]["code"], -32700);
        assert_eq!(answers[2]["id"], Value::Null);
        assert!(conn.dead, "closed after a parse error");
    }

    #[test]
    fn partial_request_waits_and_eof_closes() {
        register_echo();
        let (mut conn, mut client) = pair();
        client.write_all(br#"  {"jsonrpc":"2.0","me"#).unwrap();
        let mut jobs = Vec::new();
        conn.service(&mut jobs);
        assert!(jobs.is_empty() && !conn.dead);
        client
            .write_all(br#"thod":"test_server_echo","id":"x"}"#)
            .unwrap();
        conn.service(&mut jobs);
        assert_eq!(jobs.len(), 1);
        assert_eq!(jobs[0].id, Some(json!("x")));
        client.shutdown(std::net::Shutdown::Write).unwrap();
        conn.service(&mut jobs);
        assert!(!conn.dead, "an answer is still due");
        let job = jobs.pop().unwrap();
        conn.finish_call(job.method, job.id.as_ref(), &Ok(json!("done")));
        conn.service(&mut jobs);
        assert!(conn.dead, "closed once the answer is sent");
        assert_eq!(read_values(&mut client, 1)[0]["result"], "done");
    }
}
