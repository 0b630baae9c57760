//! The `keel-rpc` command-line client: rpc.py-style arguments or raw JSON.
//!
//! ```text
//! keel-rpc [-s SOCK] [-t SECS] [-v] METHOD [ARGS…]     arguments mapped by the method's spec
//! keel-rpc [-s SOCK] call METHOD ['{"param": …}']       any method, params as raw JSON
//! keel-rpc [-s SOCK] raw '{"method": …, "params": …}'   a raw request (id and jsonrpc added)
//! keel-rpc METHOD --help                                a method's help and parameters
//! ```
//!
//! A method that is not among the compiled-in specs is still callable: `keel-rpc NAME` sends it
//! without params, `keel-rpc NAME '{…}'` with those params. The result is printed like rpc.py
//! does: a string as is, anything else as pretty JSON; an error answer is printed to stderr
//! (with the request) and the exit code is 1.

use crate::framing::{JsonScanner, Scan};
use crate::{MethodSpec, ParamKind, ParamSpec};
use clap::{Arg, ArgAction, ArgMatches, Command};
use serde_json::{json, Map, Value};
use std::collections::HashSet;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

/// Default socket, as keel-tgt's `-r` default.
pub const DEFAULT_SOCKET: &str = "/var/tmp/keel.sock";

/// Default time to wait for an answer (rpc.py's default).
pub const DEFAULT_TIMEOUT_SECS: f64 = 60.0;

/// What the command line asks for: one call.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// Socket path.
    pub socket: String,
    /// How long to wait for the answer.
    pub timeout: Duration,
    /// Print the request and the raw response on stderr.
    pub verbose: bool,
    /// Method name.
    pub method: String,
    /// Params to send (`None`: no `params` member, as rpc.py does for no arguments).
    pub params: Option<Value>,
}

impl Invocation {
    /// The JSON-RPC request sent (id 1).
    pub fn request(&self) -> Value {
        let mut req = json!({"jsonrpc": "2.0", "method": self.method, "id": 1});
        if let Some(p) = &self.params {
            req["params"] = p.clone();
        }
        req
    }
}

/// Why the client did not print a result.
#[derive(Debug, thiserror::Error)]
pub enum CliError {
    /// `--help` was asked for: the text to print on stdout (exit code 0).
    #[error("{0}")]
    Help(String),
    /// Bad command line: the message, with usage (exit code 2).
    #[error("{0}")]
    Usage(String),
    /// Nobody listens on the socket.
    #[error("cannot connect to {path}: is keel-tgt running? ({source})")]
    Connect {
        /// The socket path.
        path: String,
        /// The OS error.
        source: std::io::Error,
    },
    /// Sending, receiving or understanding the answer failed.
    #[error("{0}")]
    Io(String),
    /// The server answered with an error object.
    #[error("request failed: {error}")]
    Rpc {
        /// The request sent.
        request: Value,
        /// The `error` member of the answer.
        error: Value,
    },
}

/// Run the client: `args` as from `std::env::args()` (program name first), `specs` the
/// methods whose arguments it knows. Prints the result or the error; returns the exit code.
pub fn main_with(specs: &[&'static MethodSpec]) -> i32 {
    let args: Vec<String> = std::env::args().collect();
    match run(args, specs) {
        Ok(result) => {
            print_result(&result);
            0
        }
        Err(CliError::Help(text)) => {
            print!("{text}");
            0
        }
        Err(CliError::Usage(text)) => {
            eprint!("{text}");
            if !text.ends_with('\n') {
                eprintln!();
            }
            2
        }
        Err(CliError::Rpc { request, error }) => {
            eprintln!("request:\n{}", pretty(&request));
            eprintln!("Got JSON-RPC error response\nresponse:\n{}", pretty(&error));
            1
        }
        Err(e) => {
            eprintln!("keel-rpc: {e}");
            1
        }
    }
}

/// Parse the command line and make the call; the result, or why there is none.
pub fn run(args: Vec<String>, specs: &[&'static MethodSpec]) -> Result<Value, CliError> {
    let inv = parse_command(args, specs)?;
    call(&inv)
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_else(|_| v.to_string())
}

/// Print a result like rpc.py: a string raw, null not at all, anything else as pretty JSON.
/// A closed stdout (`keel-rpc save_config | head`) ends the output quietly instead of panicking.
fn print_result(result: &Value) {
    use std::io::Write;
    let text = match result {
        Value::Null => return,
        Value::String(s) => s.clone(),
        other => pretty(other),
    };
    let mut out = std::io::stdout().lock();
    if let Err(e) = writeln!(out, "{text}").and_then(|()| out.flush()) {
        if e.kind() != std::io::ErrorKind::BrokenPipe {
            eprintln!("keel-rpc: writing the result: {e}");
        }
    }
}

/// Turn the command line (program name first) into the call to make.
pub fn parse_command(
    args: Vec<String>,
    specs: &[&'static MethodSpec],
) -> Result<Invocation, CliError> {
    let matches = command(specs)
        .try_get_matches_from(args)
        .map_err(|e| match e.kind() {
            clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion => {
                CliError::Help(e.render().to_string())
            }
            _ => CliError::Usage(e.render().to_string()),
        })?;
    let socket = matches
        .get_one::<String>("server")
        .cloned()
        .unwrap_or_else(|| DEFAULT_SOCKET.into());
    let secs = *matches
        .get_one::<f64>("timeout")
        .unwrap_or(&DEFAULT_TIMEOUT_SECS);
    if !(secs.is_finite() && secs > 0.0 && secs < 1e9) {
        return Err(CliError::Usage(format!(
            "error: --timeout: expected a positive number of seconds, got {secs}"
        )));
    }
    let timeout = Duration::from_secs_f64(secs);
    let verbose = matches.get_flag("verbose");
    let (method, params) = match matches.subcommand() {
        Some(("raw", m)) => raw_request(
            m.get_one::<String>("request")
                .map(String::as_str)
                .unwrap_or(""),
        )?,
        Some(("call", m)) => {
            let method = m.get_one::<String>("method").cloned().unwrap_or_default();
            let params = m
                .get_one::<String>("params")
                .map(|p| json_params(&method, p))
                .transpose()?;
            (method, params)
        }
        Some((name, m)) => match specs
            .iter()
            .find(|s| s.name == name && !RESERVED.contains(&s.name))
        {
            Some(spec) => (name.to_string(), spec_params(spec, m)?),
            None => external(name, m)?,
        },
        None => return Err(CliError::Usage(command(specs).render_help().to_string())),
    };
    Ok(Invocation {
        socket,
        timeout,
        verbose,
        method,
        params,
    })
}

/// Subcommands of the client itself; specs with these names are not reachable by name.
const RESERVED: [&str; 2] = ["raw", "call"];

/// The clap command for all of `specs`.
fn command(specs: &[&'static MethodSpec]) -> Command {
    let mut cmd = Command::new("keel-rpc")
        .about("Call a JSON-RPC method of keel-tgt (rpc.py-compatible arguments)")
        .after_help("Methods not listed take raw JSON params: keel-rpc METHOD '{\"param\": ...}'.")
        .version(env!("CARGO_PKG_VERSION"))
        .disable_help_subcommand(true)
        .allow_external_subcommands(true)
        .subcommand_value_name("METHOD")
        .subcommand_help_heading("Methods")
        .arg(
            Arg::new("server")
                .short('s')
                .long("server")
                .value_name("SOCK")
                .default_value(DEFAULT_SOCKET)
                .help("JSON-RPC socket of keel-tgt"),
        )
        .arg(
            Arg::new("timeout")
                .short('t')
                .long("timeout")
                .value_name("SECS")
                .value_parser(clap::value_parser!(f64))
                .default_value("60")
                .help("Seconds to wait for the answer"),
        )
        .arg(
            Arg::new("verbose")
                .short('v')
                .long("verbose")
                .action(ArgAction::SetTrue)
                .help("Print the request and the raw response on stderr"),
        )
        .subcommand(
            Command::new("raw")
                .about("Send a raw request: '{\"method\": ..., \"params\": ...}'")
                .arg(
                    Arg::new("request")
                        .required(true)
                        .value_name("JSON")
                        .help("The request object"),
                ),
        )
        .subcommand(
            Command::new("call")
                .about("Call any method with raw JSON params")
                .arg(
                    Arg::new("method")
                        .required(true)
                        .value_name("METHOD")
                        .help("Method name"),
                )
                .arg(
                    Arg::new("params")
                        .value_name("JSON")
                        .help("Params: a JSON object or array"),
                ),
        );
    let mut seen = HashSet::new();
    for spec in specs {
        if RESERVED.contains(&spec.name) || !seen.insert(spec.name) {
            continue;
        }
        cmd = cmd.subcommand(method_command(spec));
    }
    cmd
}

/// The first sentence (or line) of a help paragraph, for the method list.
/// A sentence ends at ". " followed by a capital letter (so "e.g. x" and "... y" do not end one).
fn summary(help: &str) -> String {
    let line = help.lines().next().unwrap_or("").trim();
    let end = line
        .match_indices(". ")
        .map(|(i, _)| i)
        .find(|&i| line[i + 2..].chars().next().is_some_and(char::is_uppercase));
    match end {
        Some(i) => line[..=i].to_string(),
        None => line.to_string(),
    }
}

/// The long option of a parameter: its `long`, else its name with `_` → `-`.
fn long_name(p: &ParamSpec) -> String {
    p.long
        .map(str::to_string)
        .unwrap_or_else(|| p.name.replace('_', "-"))
}

/// The subcommand of one method. Conflicting parameter definitions (a repeated name, long or
/// short, `-h`) are dropped rather than passed to clap, which would panic on them.
fn method_command(spec: &'static MethodSpec) -> Command {
    let mut cmd = Command::new(spec.name)
        .about(summary(spec.help))
        .long_about(spec.help);
    let mut names = HashSet::new();
    let mut longs: HashSet<String> = HashSet::from(["help".to_string()]);
    let mut shorts = HashSet::from(['h']);
    // clap wants no optional positional before a required one: such ones become required.
    let last_required = spec.params.iter().rposition(|p| p.positional && p.required);
    let mut index = 0;
    for (i, p) in spec.params.iter().enumerate() {
        if !names.insert(p.name) {
            continue;
        }
        let mut arg = Arg::new(p.name).help(p.help);
        if matches!(p.kind, ParamKind::Int | ParamKind::Float) {
            arg = arg.allow_negative_numbers(true);
        }
        if p.positional {
            index += 1;
            let required = p.required || last_required.is_some_and(|last| i < last);
            arg = arg.index(index).required(required).value_name(p.name);
        } else {
            let long = long_name(p);
            if !longs.insert(long.clone()) {
                continue;
            }
            arg = arg.long(long);
            if p.name.contains('_') && longs.insert(p.name.to_string()) {
                arg = arg.alias(p.name); // rpc.py users also type --block_size
            }
            if let Some(s) = p.short.filter(|s| shorts.insert(*s)) {
                arg = arg.short(s);
            }
            arg = match p.kind {
                ParamKind::Bool => arg.action(ArgAction::SetTrue),
                _ => arg
                    .action(ArgAction::Set)
                    .required(p.required)
                    .value_name(p.name.to_uppercase()),
            };
        }
        cmd = cmd.arg(arg);
    }
    cmd
}

/// Build a method's params from its arguments (then its `cli_rewrite`).
fn spec_params(spec: &MethodSpec, m: &ArgMatches) -> Result<Option<Value>, CliError> {
    let usage = |msg: String| CliError::Usage(format!("error: {}: {msg}", spec.name));
    let mut map = Map::new();
    for p in spec.params {
        let label = if p.positional {
            p.name.to_string()
        } else {
            format!("--{}", long_name(p))
        };
        if !p.positional && p.kind == ParamKind::Bool {
            if m.try_get_one::<bool>(p.name).ok().flatten() == Some(&true) {
                map.insert(p.name.to_string(), Value::Bool(true));
            }
            continue;
        }
        if let Some(raw) = m.try_get_one::<String>(p.name).ok().flatten() {
            let value = convert(p.kind, raw).map_err(|e| usage(format!("{label}: {e}")))?;
            map.insert(p.name.to_string(), value);
        }
    }
    if let Some(rewrite) = spec.cli_rewrite {
        rewrite(&mut map).map_err(usage)?;
    }
    Ok(if map.is_empty() {
        None
    } else {
        Some(Value::Object(map))
    })
}

/// Convert one argument by the parameter's kind.
fn convert(kind: ParamKind, raw: &str) -> Result<Value, String> {
    match kind {
        ParamKind::Str => Ok(Value::String(raw.to_string())),
        ParamKind::Int => parse_int(raw).ok_or_else(|| format!("expected an integer, got {raw:?}")),
        ParamKind::Float => raw
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("expected a number, got {raw:?}")),
        ParamKind::Bool => match raw.to_ascii_lowercase().as_str() {
            "true" | "yes" | "1" => Ok(Value::Bool(true)),
            "false" | "no" | "0" => Ok(Value::Bool(false)),
            _ => Err(format!("expected true or false, got {raw:?}")),
        },
        ParamKind::StrList => Ok(Value::Array(
            raw.split(|c: char| c == ',' || c.is_whitespace())
                .filter(|s| !s.is_empty())
                .map(|s| Value::String(s.to_string()))
                .collect(),
        )),
        ParamKind::Json => serde_json::from_str(raw).map_err(|e| format!("not valid JSON: {e}")),
    }
}

/// An integer in decimal (signed or up to u64::MAX) or hex with `0x`.
fn parse_int(raw: &str) -> Option<Value> {
    if let Some(hex) = raw.strip_prefix("0x").or_else(|| raw.strip_prefix("0X")) {
        return u64::from_str_radix(hex, 16).ok().map(Value::from);
    }
    raw.parse::<i64>()
        .map(Value::from)
        .ok()
        .or_else(|| raw.parse::<u64>().ok().map(Value::from))
}

/// Params given as raw JSON: an object or an array.
fn json_params(method: &str, raw: &str) -> Result<Value, CliError> {
    match serde_json::from_str::<Value>(raw) {
        Ok(v @ (Value::Object(_) | Value::Array(_))) => Ok(v),
        Ok(_) => Err(CliError::Usage(format!(
            "error: {method}: params must be a JSON object or array"
        ))),
        Err(e) => Err(CliError::Usage(format!(
            "error: {method}: params are not valid JSON: {e}"
        ))),
    }
}

/// `raw '{"method": …, "params": …}'`.
fn raw_request(raw: &str) -> Result<(String, Option<Value>), CliError> {
    let usage = |msg: &str| CliError::Usage(format!("error: raw: {msg}"));
    let v: Value = serde_json::from_str(raw).map_err(|e| usage(&format!("not valid JSON: {e}")))?;
    let Value::Object(mut obj) = v else {
        return Err(usage("expected a JSON object with \"method\""));
    };
    let Some(Value::String(method)) = obj.remove("method") else {
        return Err(usage("expected a \"method\" string"));
    };
    let params = match obj.remove("params") {
        None | Some(Value::Null) => None,
        Some(p @ (Value::Object(_) | Value::Array(_))) => Some(p),
        Some(_) => return Err(usage("\"params\" must be an object or an array")),
    };
    Ok((method, params))
}

/// A method without a spec: no arguments, or one argument of raw JSON params.
fn external(name: &str, m: &ArgMatches) -> Result<(String, Option<Value>), CliError> {
    let args: Vec<String> = m
        .get_many::<std::ffi::OsString>("")
        .map(|vals| vals.map(|v| v.to_string_lossy().into_owned()).collect())
        .unwrap_or_default();
    let unsupported = || {
        CliError::Usage(format!(
            "error: Keel does not support the SPDK method {name} yet \
             (keel-rpc --help lists the methods Keel has)"
        ))
    };
    let spdk = crate::spdk_methods::SPDK_METHODS
        .binary_search(&name)
        .is_ok();
    match args.as_slice() {
        [] => Ok((name.to_string(), None)),
        [p] => match json_params(name, p) {
            Ok(params) => Ok((name.to_string(), Some(params))),
            // rpc.py-style arguments rather than JSON.
            Err(_) if spdk => Err(unsupported()),
            Err(e) => Err(e),
        },
        _ if spdk => Err(unsupported()),
        _ => Err(CliError::Usage(format!(
            "error: {name} is not a known method: give its params as one JSON argument, e.g. keel-rpc {name} '{{\"name\": \"x\"}}'"
        ))),
    }
}

/// Send the call and wait for its answer (one complete JSON value).
pub fn call(inv: &Invocation) -> Result<Value, CliError> {
    let request = inv.request();
    let mut stream = UnixStream::connect(&inv.socket).map_err(|source| CliError::Connect {
        path: inv.socket.clone(),
        source,
    })?;
    let io = |what: &str, e: std::io::Error| CliError::Io(format!("{what} {}: {e}", inv.socket));
    if inv.verbose {
        eprintln!("request:\n{}", pretty(&request));
    }
    stream
        .set_write_timeout(Some(inv.timeout))
        .map_err(|e| io("cannot configure", e))?;
    stream
        .write_all(request.to_string().as_bytes())
        .map_err(|e| io("cannot send to", e))?;

    let deadline = Instant::now() + inv.timeout;
    let mut buf = Vec::new();
    let mut scanner = JsonScanner::new();
    let mut chunk = vec![0u8; 64 * 1024];
    let len = loop {
        match scanner.scan(&buf) {
            Scan::Complete(len) => break len,
            Scan::Invalid(e) => {
                return Err(CliError::Io(format!(
                    "invalid response from {}: {e}",
                    inv.socket
                )))
            }
            Scan::Incomplete => {}
        }
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(CliError::Io(format!(
                "no answer from {} within {:?}",
                inv.socket, inv.timeout
            )));
        }
        stream
            .set_read_timeout(Some(left))
            .map_err(|e| io("cannot configure", e))?;
        match stream.read(&mut chunk) {
            Ok(0) => {
                return Err(CliError::Io(format!(
                    "{} closed the connection before a complete answer",
                    inv.socket
                )))
            }
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                return Err(CliError::Io(format!(
                    "no answer from {} within {:?}",
                    inv.socket, inv.timeout
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(io("cannot receive from", e)),
        }
    };
    let mut response: Value = serde_json::from_slice(&buf[..len])
        .map_err(|e| CliError::Io(format!("invalid response from {}: {e}", inv.socket)))?;
    if inv.verbose {
        eprintln!("response:\n{}", pretty(&response));
    }
    if let Some(error) = response.get_mut("error") {
        return Err(CliError::Rpc {
            request,
            error: error.take(),
        });
    }
    match response.get_mut("result") {
        Some(result) => Ok(result.take()),
        None => Err(CliError::Io(format!(
            "invalid response from {}: no result and no error",
            inv.socket
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;

    /// MiB → blocks, like rpc.py's bdev_malloc_create.
    fn size_to_blocks(args: &mut Map<String, Value>) -> Result<(), String> {
        let mib = args
            .remove("total_size")
            .and_then(|v| v.as_u64())
            .ok_or("total_size missing")?;
        let bs = args
            .get("block_size")
            .and_then(Value::as_u64)
            .ok_or("block_size missing")?;
        if bs == 0 {
            return Err("block_size must not be 0".into());
        }
        args.insert("num_blocks".into(), json!(mib * 1024 * 1024 / bs));
        Ok(())
    }

    static SAMPLE_PARAMS: [ParamSpec; 7] = [
        ParamSpec {
            name: "name",
            kind: ParamKind::Str,
            required: false,
            positional: false,
            long: None,
            short: Some('b'),
            help: "Bdev name",
        },
        ParamSpec {
            name: "total_size",
            kind: ParamKind::Int,
            required: true,
            positional: true,
            long: None,
            short: None,
            help: "Size in MiB",
        },
        ParamSpec {
            name: "block_size",
            kind: ParamKind::Int,
            required: true,
            positional: true,
            long: None,
            short: None,
            help: "Block size in bytes",
        },
        ParamSpec {
            name: "thin_provision",
            kind: ParamKind::Bool,
            short: Some('t'),
            ..DUMMY
        },
        ParamSpec {
            name: "base_bdevs",
            kind: ParamKind::StrList,
            long: Some("base-bdevs"),
            short: Some('r'),
            ..DUMMY
        },
        ParamSpec {
            name: "ratio",
            kind: ParamKind::Float,
            ..DUMMY
        },
        ParamSpec {
            name: "extra",
            kind: ParamKind::Json,
            short: Some('h'),
            ..DUMMY
        },
    ];
    const DUMMY: ParamSpec = ParamSpec {
        name: "",
        kind: ParamKind::Str,
        required: false,
        positional: false,
        long: None,
        short: None,
        help: "",
    };

    static SAMPLE: MethodSpec = MethodSpec {
        name: "sample_create",
        help: "Create a sample. Longer text follows.",
        params: &SAMPLE_PARAMS,
        cli_rewrite: Some(size_to_blocks),
    };
    static PLAIN: MethodSpec = MethodSpec {
        name: "plain_get",
        help: "Get.",
        params: &[],
        cli_rewrite: None,
    };

    fn specs() -> Vec<&'static MethodSpec> {
        vec![&SAMPLE, &PLAIN]
    }

    fn parse(args: &[&str]) -> Result<Invocation, CliError> {
        let mut v = vec!["keel-rpc".to_string()];
        v.extend(args.iter().map(|s| s.to_string()));
        parse_command(v, &specs())
    }

    fn usage(r: Result<Invocation, CliError>) -> String {
        match r {
            Err(CliError::Usage(m)) => m,
            other => panic!("expected a usage error, got {other:?}"),
        }
    }

    #[test]
    fn maps_positionals_shorts_bools_lists_and_rewrites() {
        let inv = parse(&[
            "-s",
            "/tmp/x.sock",
            "sample_create",
            "-b",
            "Malloc0",
            "64",
            "4096",
            "-t",
            "-r",
            "a, b,c",
        ])
        .unwrap();
        assert_eq!(inv.socket, "/tmp/x.sock");
        assert_eq!(inv.method, "sample_create");
        assert_eq!(
            inv.params,
            Some(
                json!({"name": "Malloc0", "block_size": 4096, "num_blocks": 64 * 256,
                        "thin_provision": true, "base_bdevs": ["a", "b", "c"]})
            )
        );
        assert_eq!(inv.timeout, Duration::from_secs(60));
        assert!(!inv.verbose);
        // Long forms, the underscore alias, floats, JSON and negative numbers.
        let inv = parse(&[
            "-t",
            "2.5",
            "-v",
            "sample_create",
            "--name",
            "M",
            "--base-bdevs",
            "x y",
            "--ratio",
            "-0.5",
            "--extra",
            r#"{"k":[1]}"#,
            "--thin_provision",
            "1",
            "512",
        ])
        .unwrap();
        assert_eq!(inv.timeout, Duration::from_millis(2500));
        assert!(inv.verbose);
        let p = inv.params.unwrap();
        assert_eq!(p["base_bdevs"], json!(["x", "y"]));
        assert_eq!(p["ratio"], json!(-0.5));
        assert_eq!(p["extra"], json!({"k": [1]}));
        assert_eq!(p["thin_provision"], json!(true));
        assert_eq!(p["num_blocks"], json!(1024 * 1024 / 512));
        assert_eq!(inv.socket, DEFAULT_SOCKET);
    }

    #[test]
    fn bad_arguments_are_usage_errors_naming_the_argument() {
        let m = usage(parse(&["sample_create", "64", "big"]));
        assert!(m.contains("block_size") && m.contains("big"), "{m}");
        let m = usage(parse(&["sample_create", "64"]));
        assert!(m.contains("block_size"), "missing positional named: {m}");
        let m = usage(parse(&["sample_create", "1", "0"]));
        assert!(
            m.contains("block_size must not be 0"),
            "rewrite error shown: {m}"
        );
        let m = usage(parse(&["sample_create", "1", "512", "--extra", "{nope"]));
        assert!(m.contains("--extra") && m.contains("JSON"), "{m}");
        let m = usage(parse(&["sample_create", "1", "512", "--ratio", "x"]));
        assert!(m.contains("--ratio"), "{m}");
        let m = usage(parse(&["sample_create", "1", "512", "--bogus"]));
        assert!(m.contains("--bogus"), "{m}");
        let m = usage(parse(&["-t", "0", "plain_get"]));
        assert!(m.contains("timeout"), "{m}");
        assert!(matches!(parse(&[]), Err(CliError::Usage(_))));
    }

    #[test]
    fn summary_is_the_first_sentence() {
        assert_eq!(summary("Create one. Then more."), "Create one.");
        assert_eq!(
            summary("Name (A, B, ... when absent). More."),
            "Name (A, B, ... when absent)."
        );
        assert_eq!(summary("Use e.g. x. Then"), "Use e.g. x.");
        assert_eq!(summary("One line\nsecond line"), "One line");
        assert_eq!(summary(""), "");
    }

    #[test]
    fn conversions() {
        assert_eq!(convert(ParamKind::Int, "0x10"), Ok(json!(16)));
        assert_eq!(
            convert(ParamKind::Int, "18446744073709551615"),
            Ok(json!(u64::MAX))
        );
        assert_eq!(convert(ParamKind::Int, "-3"), Ok(json!(-3)));
        assert!(convert(ParamKind::Int, "1.5").is_err());
        assert!(convert(ParamKind::Float, "NaN").is_err());
        assert_eq!(convert(ParamKind::Bool, "FALSE"), Ok(json!(false)));
        assert!(convert(ParamKind::Bool, "maybe").is_err());
        assert_eq!(convert(ParamKind::StrList, " ,"), Ok(json!([])));
    }

    #[test]
    fn help_lists_methods_and_method_help_lists_params() {
        let Err(CliError::Help(top)) = parse(&["--help"]) else {
            panic!("help expected")
        };
        assert!(
            top.contains("sample_create")
                && top.contains("Create a sample.")
                && top.contains("plain_get"),
            "{top}"
        );
        assert!(!top.contains("Longer text"), "one-line summaries: {top}");
        let Err(CliError::Help(h)) = parse(&["sample_create", "--help"]) else {
            panic!("help expected")
        };
        for word in [
            "Longer text",
            "block_size",
            "--base-bdevs",
            "-b",
            "--thin-provision",
            "Size in MiB",
        ] {
            assert!(h.contains(word), "{word} in {h}");
        }
        // `-h` was taken by clap's help: the param keeps its long option only.
        assert!(h.contains("--extra"));
    }

    #[test]
    fn raw_call_and_unknown_methods() {
        let inv = parse(&["raw", r#"{"method":"x_y","params":{"a":1},"id":9}"#]).unwrap();
        assert_eq!(
            (inv.method.as_str(), inv.params.clone()),
            ("x_y", Some(json!({"a": 1})))
        );
        assert_eq!(
            inv.request(),
            json!({"jsonrpc": "2.0", "method": "x_y", "id": 1, "params": {"a": 1}})
        );
        assert!(usage(parse(&["raw", "[1]"])).contains("method"));
        assert!(usage(parse(&["raw", r#"{"method":"m","params":5}"#])).contains("params"));
        let inv = parse(&["call", "sample_create", r#"{"num_blocks":1}"#]).unwrap();
        assert_eq!(
            (inv.method.as_str(), inv.params.clone()),
            ("sample_create", Some(json!({"num_blocks": 1})))
        );
        let inv = parse(&["call", "m"]).unwrap();
        assert_eq!((inv.method.as_str(), inv.params.clone()), ("m", None));
        let inv = parse(&["not_compiled_in", r#"{"a":[1]}"#]).unwrap();
        assert_eq!(
            (inv.method.as_str(), inv.params.clone()),
            ("not_compiled_in", Some(json!({"a": [1]})))
        );
        let inv = parse(&["plain_get"]).unwrap();
        assert_eq!(
            (inv.method.as_str(), inv.params.clone()),
            ("plain_get", None)
        );
        assert_eq!(
            inv.request(),
            json!({"jsonrpc": "2.0", "method": "plain_get", "id": 1})
        );
        assert!(usage(parse(&["not_compiled_in", "a", "b"])).contains("JSON"));
        // rpc.py-style flags for an SPDK method Keel lacks: said so, not "give JSON".
        let m = usage(parse(&["bdev_nvme_attach_controller", "-b", "N0"]));
        assert!(
            m.contains("Keel does not support the SPDK method bdev_nvme_attach_controller yet"),
            "{m}"
        );
        let m = usage(parse(&["bdev_nvme_get_controllers", "Nvme0"]));
        assert!(m.contains("Keel does not support the SPDK method"), "{m}");
        assert!(usage(parse(&["not_compiled_in", "3"])).contains("object or array"));
    }

    #[test]
    fn missing_socket_says_so() {
        let path = std::env::temp_dir().join(format!("keel-rpc-none-{}.sock", std::process::id()));
        let err = run(
            vec![
                "keel-rpc".into(),
                "-s".into(),
                path.to_str().unwrap().into(),
                "plain_get".into(),
            ],
            &specs(),
        )
        .unwrap_err();
        let text = err.to_string();
        assert!(matches!(err, CliError::Connect { .. }));
        assert!(
            text.contains(path.to_str().unwrap()) && text.contains("is keel-tgt running?"),
            "{text}"
        );
    }

    /// A one-shot server thread that answers the first request with `answer(request)`, sent
    /// in two pieces to exercise the client's framing.
    fn serve_once(tag: &str, answer: fn(Value) -> Value) -> (String, std::thread::JoinHandle<()>) {
        let path =
            std::env::temp_dir().join(format!("keel-rpc-cli-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&path);
        let listener = UnixListener::bind(&path).unwrap();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            let mut buf = Vec::new();
            let mut scanner = JsonScanner::new();
            let len = loop {
                if let Scan::Complete(n) = scanner.scan(&buf) {
                    break n;
                }
                let mut chunk = [0u8; 1024];
                let n = s.read(&mut chunk).unwrap();
                assert!(n > 0);
                buf.extend_from_slice(&chunk[..n]);
            };
            let req: Value = serde_json::from_slice(&buf[..len]).unwrap();
            let out = answer(req).to_string();
            let (a, b) = out.as_bytes().split_at(out.len() / 2);
            s.write_all(a).unwrap();
            s.flush().unwrap();
            s.write_all(b).unwrap();
        });
        (path.to_str().unwrap().to_string(), handle)
    }

    #[test]
    fn call_returns_the_result_or_the_error() {
        let (path, h) = serve_once(
            "ok",
            |req| json!({"jsonrpc": "2.0", "id": req["id"], "result": req}),
        );
        let args = vec![
            "keel-rpc",
            "-s",
            &path,
            "sample_create",
            "-b",
            "N",
            "1",
            "512",
        ];
        let echoed = run(args.into_iter().map(String::from).collect(), &specs()).unwrap();
        h.join().unwrap();
        assert_eq!(
            echoed,
            json!({"jsonrpc": "2.0", "id": 1, "method": "sample_create",
                   "params": {"name": "N", "block_size": 512, "num_blocks": 2048}})
        );

        let (path, h) = serve_once(
            "err",
            |req| json!({"jsonrpc": "2.0", "id": req["id"], "error": {"code": -19, "message": "No such device"}}),
        );
        let err = run(
            vec![
                "keel-rpc".into(),
                "-s".into(),
                path.clone(),
                "plain_get".into(),
            ],
            &specs(),
        )
        .unwrap_err();
        h.join().unwrap();
        match err {
            CliError::Rpc { request, error } => {
                assert_eq!(request["method"], "plain_get");
                assert_eq!(error["code"], -19);
            }
            other => panic!("{other:?}"),
        }
        let _ = std::fs::remove_file(&path);
    }

    #[test]
    fn every_builtin_spec_builds_a_valid_command() {
        crate::register_builtin_methods();
        let specs = crate::method_specs();
        command(&specs).debug_assert();
        command(&[&SAMPLE, &PLAIN]).debug_assert();
    }
}
