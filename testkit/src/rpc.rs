//! A keel-rpc server inside the test process, for end-to-end tests of JSON-RPC methods
//! (feature `rpc`): rpc.py-style command lines parsed by the `keel-rpc` client (with the
//! methods' specs and rewrites) and sent over the Unix socket to a server on a 1-core runtime.

use keel_rpc::cli::{self, CliError};
use keel_rpc::RpcServer;
use serde_json::Value;
use std::cell::RefCell;
use std::sync::OnceLock;

thread_local! {
    /// The server, kept alive on the core it runs on.
    static SERVER: RefCell<Option<RpcServer>> = const { RefCell::new(None) };
}

/// Start, once per test process, the runtime on core 0 alone in interrupt mode (see
/// [`crate::reactors::start`]) and on it an RPC server with keel-rpc's built-in methods and
/// those `register` adds (run on core 0 first), on a socket named after `tag` and the process.
/// Returns the socket path; later calls return the same path and do not run their `register`.
pub fn server(tag: &str, register: impl FnOnce() + Send + 'static) -> &'static str {
    static SOCK: OnceLock<String> = OnceLock::new();
    SOCK.get_or_init(|| {
        crate::reactors::start("0x1", true);
        let path = format!(
            "{}/keel-{tag}-rpc-test-{}.sock",
            std::env::temp_dir().display(),
            std::process::id()
        );
        let p = path.clone();
        crate::reactors::call_on(0, move || {
            keel_rpc::register_builtin_methods();
            register();
            let s = RpcServer::start(&p).expect("rpc server starts");
            SERVER.with(|c| *c.borrow_mut() = Some(s));
        });
        path
    })
}

/// Run an rpc.py-style command line (what follows `rpc.py -s <sock>`) against the server at
/// `sock`.
pub fn call(sock: &str, args: &[&str]) -> Result<Value, CliError> {
    let mut argv = vec!["keel-rpc".to_string(), "-s".into(), sock.to_string()];
    argv.extend(args.iter().map(|a| a.to_string()));
    let specs = keel_rpc::method_specs();
    let inv = cli::parse_command(argv, &specs)?;
    cli::call(&inv)
}

/// [`call`] a command line that must fail with a JSON-RPC error: its code and message.
pub fn call_err(sock: &str, args: &[&str]) -> (i64, String) {
    match call(sock, args) {
        Err(CliError::Rpc { error, .. }) => (
            error["code"]
                .as_i64()
                .expect("a JSON-RPC error has an integer code"),
            error["message"].as_str().unwrap_or_default().to_string(),
        ),
        other => panic!("{args:?}: expected an RPC error, got {other:?}"),
    }
}
