//! The method table and the config subsystems. Registration happens at start-up (before the
//! server runs) from the main thread or main core; lookups happen on the main core.

use crate::RpcResult;
use std::future::Future;
use std::pin::Pin;

/// What a handler returns: a local (`!Send`) future run on the main reactor.
pub type HandlerFuture = Pin<Box<dyn Future<Output = RpcResult>>>;

/// Type of one parameter, for the CLI client's argument parsing and for help text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParamKind {
    /// JSON string.
    Str,
    /// JSON integer.
    Int,
    /// JSON float.
    Float,
    /// JSON boolean (a CLI flag without a value sets it true).
    Bool,
    /// JSON array of strings (CLI: one argument, space- or comma-separated).
    StrList,
    /// Any JSON value (CLI: the argument is parsed as JSON).
    Json,
}

/// One parameter of a method.
#[derive(Debug, Clone, Copy)]
pub struct ParamSpec {
    /// JSON name in `params`.
    pub name: &'static str,
    /// Type.
    pub kind: ParamKind,
    /// Must be present.
    pub required: bool,
    /// CLI: given positionally (in order of appearance) rather than as `--long`/`-s`.
    pub positional: bool,
    /// CLI: long option (without `--`), e.g. "name"; defaults to `name` with `_` → `-`.
    pub long: Option<&'static str>,
    /// CLI: short option, e.g. 'b' for rpc.py's `-b name`.
    pub short: Option<char>,
    /// One line of help.
    pub help: &'static str,
}

/// Description of a method: name, help, parameters, and an optional client-side rewrite of the
/// params built from the command line (e.g. rpc.py's `bdev_malloc_create` takes a size in MiB
/// and sends `num_blocks`).
#[derive(Debug, Clone, Copy)]
pub struct MethodSpec {
    /// JSON-RPC method name.
    pub name: &'static str,
    /// One paragraph of help.
    pub help: &'static str,
    /// Parameters.
    pub params: &'static [ParamSpec],
    /// CLI only: turn the parsed arguments into the params object sent.
    pub cli_rewrite: Option<fn(&mut serde_json::Map<String, serde_json::Value>) -> Result<(), String>>,
}

/// Register a method (server side). `handler` gets the raw `params` (None when absent).
/// Registering a name twice panics: it is a programming error.
pub fn register_method(
    _spec: &'static MethodSpec,
    _handler: fn(Option<serde_json::Value>) -> HandlerFuture,
) {
    todo!()
}

/// Register a config subsystem (e.g. "bdev", later "nvmf"): `save` returns the calls
/// (`{"method":…,"params":…}` objects) that recreate its state, in replay order. Subsystems are
/// saved in registration order, which must follow dependencies.
pub fn register_config_subsystem(_name: &'static str, _save: fn() -> Vec<serde_json::Value>) {
    todo!()
}
