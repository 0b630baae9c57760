//! `keel-rpc`: Keel's control plane (docs/ARCHITECTURE.md §7).
//!
//! A JSON-RPC 2.0 server on a Unix stream socket, compatible with SPDK's `rpc.py`: no framing
//! (a request is one complete JSON value), SPDK's method names, parameter names and error codes.
//! The server is a poller on the main reactor: it never blocks (non-blocking accept/read/write),
//! and each request runs as a local task so a handler may await work on other cores.
//!
//! Each crate registers its own methods ([`register_method`]) and its config subsystem
//! ([`register_config_subsystem`]); `save_config` asks every subsystem for the calls that
//! recreate its state, and `-c FILE` / `load_config` replay such calls in order.
//!
//! Methods also carry a [`MethodSpec`] (parameters, help) shared by server-side docs and the
//! `keel-rpc` command-line client ([`cli`]), which maps rpc.py-style arguments to params.
//!
//! Module map:
//! - `error`: [`RpcError`] and the JSON-RPC / errno codes; -32601 says whether an unknown
//!   method is an SPDK method Keel does not have yet (`spdk_methods`: SPDK's method names).
//! - `registry`: methods and config subsystems.
//! - `framing`: finding one complete JSON value in a byte stream.
//! - `protocol`: request decoding and response encoding, without I/O (also fuzzed).
//! - `server`: the socket poller and request dispatch.
//! - `config`: config file load (replay) and `save_config`.
//! - `builtin`: `rpc_get_methods`, `spdk_get_version`, `framework_*`, `thread_get_stats`,
//!   `save_config`, `load_config`, `spdk_kill_instance`.
//! - `cli`: the `keel-rpc` client.
//! - `params`: helpers to decode params into typed structs with clear errors.

mod builtin;
pub mod cli;
mod config;
mod error;
pub mod framing;
pub mod params;
pub mod protocol;
mod registry;
mod server;
mod spdk_methods;
#[cfg(test)]
mod testutil;

pub use builtin::register_builtin_methods;
pub use config::{load_config_file, load_config_value, save_config_value, ConfigError};
pub use error::{RpcError, RpcResult};
pub use protocol::decode_request;
pub use registry::{
    method_specs, register_config_subsystem, register_method, register_method_in, rpc_state,
    set_rpc_state, CliRewrite, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcState,
    RpcStates,
};
pub use server::{RpcServer, RpcServerError, BUSY_POLL_PERIOD};
