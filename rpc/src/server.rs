//! The JSON-RPC server: a poller on the main reactor serving a Unix stream socket.

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum RpcServerError {
    /// Another process listens on the socket path.
    #[error("RPC socket {path} is in use by another process (is another keel-tgt running?)")]
    InUse { path: String },
    /// Could not bind/listen.
    #[error("cannot listen on RPC socket {path}: {source}")]
    Io { path: String, source: std::io::Error },
}

/// The running server. Dropping it stops serving and removes the socket file.
pub struct RpcServer {
    _p: (),
}

impl RpcServer {
    /// Bind `path` and start serving from a poller on the calling reactor (the main core).
    /// A stale socket file (nobody listening) is replaced; a live one is [`RpcServerError::InUse`].
    pub fn start(_path: &str) -> Result<RpcServer, RpcServerError> {
        todo!()
    }
}
