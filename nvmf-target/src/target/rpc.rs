//! The `nvmf_*` JSON-RPC methods (SPDK's names, parameters and answers) and the `nvmf`
//! config subsystem. Handlers run on the main core.

use super::ctrlr::{self, QpairInfo};
use super::state::{self, hex_upper, parse_hex, NamespaceOpts, NvmfError, SubsystemOpts};
use crate::transport::{AdrFam, ListenAddr, TrType, TransportOpts};
use keel_bdev::Uuid;
use keel_rpc::{HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError};
use serde::Deserialize;
use serde_json::{json, Map, Value};

/// Register every `nvmf_*` method and the `nvmf` config subsystem (after `bdev`, whose
/// bdevs the namespaces need). Called once at start-up; later calls do nothing.
pub fn register_rpcs() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        keel_rpc::register_method(&CREATE_TRANSPORT, rpc_create_transport);
        keel_rpc::register_method(&GET_TRANSPORTS, rpc_get_transports);
        keel_rpc::register_method(&CREATE_SUBSYSTEM, rpc_create_subsystem);
        keel_rpc::register_method(&DELETE_SUBSYSTEM, rpc_delete_subsystem);
        keel_rpc::register_method(&GET_SUBSYSTEMS, rpc_get_subsystems);
        keel_rpc::register_method(&ADD_LISTENER, rpc_add_listener);
        keel_rpc::register_method(&REMOVE_LISTENER, rpc_remove_listener);
        keel_rpc::register_method(&ADD_NS, rpc_add_ns);
        keel_rpc::register_method(&REMOVE_NS, rpc_remove_ns);
        keel_rpc::register_method(&ADD_HOST, rpc_add_host);
        keel_rpc::register_method(&REMOVE_HOST, rpc_remove_host);
        keel_rpc::register_method(&ALLOW_ANY_HOST, rpc_allow_any_host);
        keel_rpc::register_method(&GET_CONTROLLERS, rpc_get_controllers);
        keel_rpc::register_method(&GET_QPAIRS, rpc_get_qpairs);
        keel_rpc::register_method(&GET_LISTENERS, rpc_get_listeners);
        keel_rpc::register_method(&GET_STATS, rpc_get_stats);
        keel_rpc::register_config_subsystem("nvmf", save_config);
    });
}

fn to_rpc(e: NvmfError) -> RpcError {
    RpcError::errno(e.errno(), e.to_string())
}

/// A parameter of an nvmf method (rpc.py's flags have no long spelling of their own here).
const fn p(
    name: &'static str,
    kind: ParamKind,
    required: bool,
    positional: bool,
    short: Option<char>,
    help: &'static str,
) -> ParamSpec {
    if positional {
        ParamSpec::positional(name, kind, required, help)
    } else {
        ParamSpec::option(name, kind, required, None, short, help)
    }
}

const TGT_NAME: ParamSpec = p(
    "tgt_name",
    ParamKind::Str,
    false,
    false,
    None,
    "Parent NVMe-oF target name: Keel has one, nvmf_tgt (another name is refused)",
);
const NQN: ParamSpec = p("nqn", ParamKind::Str, true, true, None, "Subsystem NQN");

/// The name of Keel's one NVMe-oF target (SPDK's default target's name).
const TGT: &str = "nvmf_tgt";

/// `tgt_name`: absent or SPDK's default target's name; another name is refused (as SPDK
/// refuses a target it does not have) rather than applied to the one target Keel has.
fn check_tgt(tgt_name: Option<&str>) -> Result<(), RpcError> {
    match tgt_name {
        None => Ok(()),
        Some(n) if n == TGT => Ok(()),
        Some(n) => Err(RpcError::invalid_params(format!(
            "Unable to find a target named '{n}': Keel has one NVMe-oF target, {TGT}"
        ))),
    }
}

/// How Keel treats an SPDK parameter of a method that it does not act on.
#[derive(Debug, Clone, Copy)]
enum Extra {
    /// A hint (tuning, sizing, a label): accepted, logged when not its default.
    Hint,
    /// Accepted only where the check says so (JSON null, i.e. absent, always): anything else
    /// asks for a behaviour Keel does not have (the reason says which) and is refused.
    Only(fn(&Value) -> bool, &'static str),
}

/// `false` (a flag left off).
fn is_false(v: &Value) -> bool {
    v == &Value::Bool(false)
}

/// An empty list.
fn is_empty_list(v: &Value) -> bool {
    v.as_array().is_some_and(|a| a.is_empty())
}

/// Check the parameters a method's struct did not name (`extra`) against its `table`: hints
/// are logged, a value Keel cannot honour is -EINVAL naming the parameter and why, a name
/// SPDK does not have is -32602 like any unknown field (listing `known` and the table).
fn check_extras(
    method: &str,
    extra: &Map<String, Value>,
    known: &[&str],
    table: &[(&str, Extra)],
) -> Result<(), RpcError> {
    for (k, v) in extra {
        let Some((_, how)) = table.iter().find(|(n, _)| n == k) else {
            let expected: Vec<String> = known
                .iter()
                .chain(table.iter().map(|(n, _)| n))
                .map(|n| format!("`{n}`"))
                .collect();
            return Err(RpcError::invalid_params(format!(
                "Invalid parameters: unknown field `{k}`, expected one of {}",
                expected.join(", ")
            )));
        };
        match how {
            Extra::Hint => {
                if !matches!(v, Value::Null | Value::Bool(false)) {
                    log::info!("{method}: parameter {k}={v} is accepted but has no effect in Keel");
                }
            }
            Extra::Only(ok, why) => {
                if !v.is_null() && !ok(v) {
                    return Err(RpcError::errno(
                        libc::EINVAL,
                        format!("{method}: {k}={v} is not supported: {why}"),
                    ));
                }
            }
        }
    }
    Ok(())
}

// ---- transports ----

static CREATE_TRANSPORT: MethodSpec = MethodSpec {
    name: "nvmf_create_transport",
    help: "Create an NVMe-oF transport: TCP, or RDMA (needs rdma-core and an RDMA device)",
    params: &[
        p(
            "trtype",
            ParamKind::Str,
            true,
            false,
            Some('t'),
            "Transport type (TCP, RDMA)",
        ),
        TGT_NAME,
        p(
            "max_queue_depth",
            ParamKind::Int,
            false,
            false,
            Some('q'),
            "Max number of outstanding I/O per queue",
        ),
        p(
            "max_io_qpairs_per_ctrlr",
            ParamKind::Int,
            false,
            false,
            Some('m'),
            "Max number of I/O queue pairs per controller",
        ),
        p(
            "in_capsule_data_size",
            ParamKind::Int,
            false,
            false,
            Some('c'),
            "In-capsule data size (bytes)",
        ),
        p(
            "max_io_size",
            ParamKind::Int,
            false,
            false,
            Some('i'),
            "Max I/O size (bytes)",
        ),
        p(
            "io_unit_size",
            ParamKind::Int,
            false,
            false,
            Some('u'),
            "I/O unit size (bytes)",
        ),
        p(
            "max_aq_depth",
            ParamKind::Int,
            false,
            false,
            Some('a'),
            "Max number of admin commands per admin queue",
        ),
        p(
            "num_shared_buffers",
            ParamKind::Int,
            false,
            false,
            Some('n'),
            "Number of shared buffers (informational)",
        ),
        p(
            "buf_cache_size",
            ParamKind::Int,
            false,
            false,
            Some('b'),
            "Per poll group buffer cache (informational)",
        ),
        p(
            "c2h_success",
            ParamKind::Bool,
            false,
            false,
            None,
            "TCP: C2H success optimization (default true)",
        ),
        p(
            "sock_priority",
            ParamKind::Int,
            false,
            false,
            Some('y'),
            "TCP: socket priority",
        ),
        p(
            "max_srq_depth",
            ParamKind::Int,
            false,
            false,
            Some('s'),
            "RDMA: max number of outstanding receives in each core's SRQ",
        ),
        p(
            "no_srq",
            ParamKind::Bool,
            false,
            false,
            Some('r'),
            "RDMA: disable the shared receive queue",
        ),
        p(
            "num_cqe",
            ParamKind::Int,
            false,
            false,
            Some('d'),
            "RDMA: completion queue entries per core (besides the SRQ's)",
        ),
        p(
            "acceptor_backlog",
            ParamKind::Int,
            false,
            false,
            Some('l'),
            "RDMA: listen backlog",
        ),
        p(
            "abort_timeout_sec",
            ParamKind::Int,
            false,
            false,
            Some('x'),
            "Abort execution timeout, seconds",
        ),
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
struct CreateTransportParams {
    trtype: String,
    #[serde(default)]
    tgt_name: Option<String>,
    max_queue_depth: Option<u16>,
    max_io_qpairs_per_ctrlr: Option<u16>,
    in_capsule_data_size: Option<u32>,
    max_io_size: Option<u32>,
    io_unit_size: Option<u32>,
    max_aq_depth: Option<u16>,
    num_shared_buffers: Option<u32>,
    buf_cache_size: Option<u32>,
    c2h_success: Option<bool>,
    sock_priority: Option<u32>,
    abort_timeout_sec: Option<u32>,
    max_srq_depth: Option<u32>,
    no_srq: Option<bool>,
    num_cqe: Option<u32>,
    acceptor_backlog: Option<u32>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// `nvmf_create_transport` parameters [`CreateTransportParams`] names.
const TRANSPORT_FIELDS: &[&str] = &[
    "trtype",
    "tgt_name",
    "max_queue_depth",
    "max_io_qpairs_per_ctrlr",
    "in_capsule_data_size",
    "max_io_size",
    "io_unit_size",
    "max_aq_depth",
    "num_shared_buffers",
    "buf_cache_size",
    "c2h_success",
    "sock_priority",
    "abort_timeout_sec",
    "max_srq_depth",
    "no_srq",
    "num_cqe",
    "acceptor_backlog",
];

/// SPDK's other `nvmf_create_transport` parameters (its schema and rpc.py).
const TRANSPORT_EXTRAS: &[(&str, Extra)] = &[
    ("acceptor_poll_rate", Extra::Hint),
    ("ack_timeout", Extra::Hint),
    ("control_msg_num", Extra::Hint),
    ("data_wr_pool_size", Extra::Hint),
    (
        "dif_insert_or_strip",
        Extra::Only(is_false, "Keel does not insert or strip DIF"),
    ),
    // vfio-user only (Keel has no vfio-user transport).
    ("disable_adaptive_irq", Extra::Hint),
    ("disable_command_passthru", Extra::Hint),
    ("disable_mappable_bar0", Extra::Hint),
    ("disable_shadow_doorbells", Extra::Hint),
    ("iobuf_large_cache_size", Extra::Hint),
    ("iobuf_small_cache_size", Extra::Hint),
    ("kas", Extra::Hint),
    (
        "masked_oncs",
        Extra::Only(
            is_empty_list,
            "Keel does not mask the optional NVM commands it advertises",
        ),
    ),
    (
        "masked_fuses",
        Extra::Only(
            is_empty_list,
            "Keel does not mask the fused operations it advertises",
        ),
    ),
    ("min_kato", Extra::Hint),
    ("no_wr_batching", Extra::Hint),
    ("zcopy", Extra::Hint),
];

/// Build and check transport options (SPDK's defaults for the type for what is not given).
fn transport_opts(p: CreateTransportParams) -> Result<TransportOpts, RpcError> {
    let trtype = TrType::parse(&p.trtype).ok_or_else(|| {
        RpcError::errno(
            libc::EINVAL,
            format!(
                "Invalid transport type '{}': Keel supports TCP and RDMA",
                p.trtype
            ),
        )
    })?;
    check_extras(
        "nvmf_create_transport",
        &p.extra,
        TRANSPORT_FIELDS,
        TRANSPORT_EXTRAS,
    )?;
    let d = TransportOpts::defaults_for(trtype);
    let o = TransportOpts {
        trtype,
        max_queue_depth: p.max_queue_depth.unwrap_or(d.max_queue_depth),
        max_io_qpairs_per_ctrlr: p
            .max_io_qpairs_per_ctrlr
            .unwrap_or(d.max_io_qpairs_per_ctrlr),
        in_capsule_data_size: p.in_capsule_data_size.unwrap_or(d.in_capsule_data_size),
        max_io_size: p.max_io_size.unwrap_or(d.max_io_size),
        io_unit_size: p.io_unit_size.unwrap_or(d.io_unit_size),
        max_aq_depth: p.max_aq_depth.unwrap_or(d.max_aq_depth),
        num_shared_buffers: p.num_shared_buffers.unwrap_or(d.num_shared_buffers),
        buf_cache_size: p.buf_cache_size.unwrap_or(d.buf_cache_size),
        c2h_success: p.c2h_success.unwrap_or(d.c2h_success),
        sock_priority: p.sock_priority.unwrap_or(d.sock_priority),
        abort_timeout_sec: p.abort_timeout_sec.unwrap_or(d.abort_timeout_sec),
        max_srq_depth: p.max_srq_depth.unwrap_or(d.max_srq_depth),
        no_srq: p.no_srq.unwrap_or(d.no_srq),
        num_cqe: p.num_cqe.unwrap_or(d.num_cqe),
        acceptor_backlog: p.acceptor_backlog.unwrap_or(d.acceptor_backlog),
    };
    let bad = |m: String| Err(RpcError::errno(libc::EINVAL, m));
    if o.max_queue_depth < 2 {
        return bad(format!(
            "max_queue_depth {} must be at least 2",
            o.max_queue_depth
        ));
    }
    if o.max_aq_depth < 2 {
        return bad(format!(
            "max_aq_depth {} must be at least 2",
            o.max_aq_depth
        ));
    }
    if o.max_io_qpairs_per_ctrlr == 0 {
        return bad("max_io_qpairs_per_ctrlr must be at least 1".into());
    }
    if !o.in_capsule_data_size.is_multiple_of(16) {
        return bad(format!(
            "in_capsule_data_size {} must be a multiple of 16",
            o.in_capsule_data_size
        ));
    }
    if o.in_capsule_data_size > MAX_IN_CAPSULE_DATA_SIZE {
        return bad(format!(
            "in_capsule_data_size {} is above the supported {MAX_IN_CAPSULE_DATA_SIZE}",
            o.in_capsule_data_size
        ));
    }
    // Identify's MDTS is a power of two of 4 KiB pages, 0 meaning "no limit": 8 KiB is the
    // smallest limit a controller can report, so a smaller max_io_size would be advertised
    // as 8 KiB and hosts' 8 KiB I/O would fail.
    if o.max_io_size < 8192 || !o.max_io_size.is_multiple_of(4096) {
        return bad(format!(
            "max_io_size {} must be a multiple of 4096 and at least 8192 \
             (MDTS cannot express a smaller limit)",
            o.max_io_size
        ));
    }
    if o.io_unit_size == 0 || !o.io_unit_size.is_multiple_of(4096) {
        return bad(format!(
            "io_unit_size {} must be a non-zero multiple of 4096",
            o.io_unit_size
        ));
    }
    Ok(o)
}

/// Largest in-capsule data size the TCP transport supports (bytes).
const MAX_IN_CAPSULE_DATA_SIZE: u32 = 128 * 1024;

pub(super) fn rpc_create_transport(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateTransportParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let opts = transport_opts(p)?;
        state::create_transport(opts).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

static GET_TRANSPORTS: MethodSpec = MethodSpec {
    name: "nvmf_get_transports",
    help: "List NVMe-oF transports and their options",
    params: &[
        ParamSpec {
            long: Some("trtype"),
            ..p(
                "trtype",
                ParamKind::Str,
                false,
                false,
                None,
                "Transport type",
            )
        },
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetTransportsParams {
    #[serde(default)]
    trtype: Option<String>,
    #[serde(default)]
    tgt_name: Option<String>,
}

fn transport_json(o: &TransportOpts) -> Value {
    let mut v = json!({
        "trtype": o.trtype.name(),
        "max_queue_depth": o.max_queue_depth,
        "max_io_qpairs_per_ctrlr": o.max_io_qpairs_per_ctrlr,
        "in_capsule_data_size": o.in_capsule_data_size,
        "max_io_size": o.max_io_size,
        "io_unit_size": o.io_unit_size,
        "max_aq_depth": o.max_aq_depth,
        "num_shared_buffers": o.num_shared_buffers,
        "buf_cache_size": o.buf_cache_size,
        "dif_insert_or_strip": false,
        "zcopy": false,
        "abort_timeout_sec": o.abort_timeout_sec,
        // Keep-alive granularity in 100 ms units, as Identify Controller reports it.
        "kas": super::ctrlr::KAS_100MS,
    });
    let extra = match o.trtype {
        TrType::Tcp => json!({
            "c2h_success": o.c2h_success,
            "sock_priority": o.sock_priority,
        }),
        TrType::Rdma => json!({
            "max_srq_depth": o.max_srq_depth,
            "no_srq": o.no_srq,
            "num_cqe": o.num_cqe,
            "acceptor_backlog": o.acceptor_backlog,
        }),
    };
    if let (Some(m), Value::Object(e)) = (v.as_object_mut(), extra) {
        m.extend(e);
    }
    v
}

pub(super) fn rpc_get_transports(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: GetTransportsParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let want = match p.trtype.as_deref() {
            None => None,
            Some(t) => Some(TrType::parse(t).ok_or_else(|| {
                RpcError::errno(libc::EINVAL, format!("Invalid transport type '{t}'"))
            })?),
        };
        let list: Vec<Value> = state::transports()
            .iter()
            .filter(|t| want.is_none_or(|w| w == t.trtype()))
            .map(|t| transport_json(t.opts()))
            .collect();
        if want.is_some() && list.is_empty() {
            return Err(RpcError::errno(libc::ENODEV, "No such device"));
        }
        Ok(Value::Array(list))
    })
}

// ---- subsystems ----

static CREATE_SUBSYSTEM: MethodSpec = MethodSpec {
    name: "nvmf_create_subsystem",
    help: "Create an NVMe-oF NVM subsystem",
    params: &[
        NQN,
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
        p(
            "serial_number",
            ParamKind::Str,
            false,
            false,
            Some('s'),
            "Serial number of the virtual NVMe controller",
        ),
        p(
            "model_number",
            ParamKind::Str,
            false,
            false,
            Some('d'),
            "Model number of the virtual NVMe controller",
        ),
        p(
            "allow_any_host",
            ParamKind::Bool,
            false,
            false,
            Some('a'),
            "Allow any host to connect",
        ),
        p(
            "max_namespaces",
            ParamKind::Int,
            false,
            false,
            Some('m'),
            "Maximum number of namespaces",
        ),
        p(
            "ana_reporting",
            ParamKind::Bool,
            false,
            false,
            Some('r'),
            "Enable ANA reporting (accepted, not reported)",
        ),
        p(
            "min_cntlid",
            ParamKind::Int,
            false,
            false,
            Some('i'),
            "Lowest controller ID to hand out (default 1)",
        ),
        p(
            "max_cntlid",
            ParamKind::Int,
            false,
            false,
            Some('I'),
            "Highest controller ID to hand out (default 0xFFEF)",
        ),
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
struct CreateSubsystemParams {
    nqn: String,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(default)]
    serial_number: Option<String>,
    #[serde(default)]
    model_number: Option<String>,
    #[serde(default)]
    allow_any_host: bool,
    #[serde(default)]
    max_namespaces: Option<u32>,
    #[serde(default)]
    ana_reporting: bool,
    #[serde(default)]
    min_cntlid: Option<u16>,
    #[serde(default)]
    max_cntlid: Option<u16>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// `nvmf_create_subsystem` parameters [`CreateSubsystemParams`] names.
const SUBSYSTEM_FIELDS: &[&str] = &[
    "nqn",
    "tgt_name",
    "serial_number",
    "model_number",
    "allow_any_host",
    "max_namespaces",
    "ana_reporting",
    "min_cntlid",
    "max_cntlid",
];

/// SPDK's other `nvmf_create_subsystem` parameters.
const SUBSYSTEM_EXTRAS: &[(&str, Extra)] = &[
    // A label for SPDK's extended discovery log entries (Keel's discovery log has none).
    ("admin_label", Extra::Hint),
    // Size limits SPDK advertises; Keel serves any size a command can describe.
    ("dmrsl", Extra::Hint),
    ("wzsl", Extra::Hint),
    (
        "enable_nssr",
        Extra::Only(is_false, "Keel does not support NVM Subsystem Reset"),
    ),
    (
        "passthrough",
        Extra::Only(
            is_false,
            "Keel has no NVMe passthrough (no local NVMe bdev)",
        ),
    ),
];

pub(super) fn rpc_create_subsystem(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateSubsystemParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        check_extras(
            "nvmf_create_subsystem",
            &p.extra,
            SUBSYSTEM_FIELDS,
            SUBSYSTEM_EXTRAS,
        )?;
        let opts = SubsystemOpts {
            serial_number: p.serial_number,
            model_number: p.model_number,
            max_namespaces: p.max_namespaces,
            allow_any_host: p.allow_any_host,
            ana_reporting: p.ana_reporting,
            min_cntlid: p.min_cntlid,
            max_cntlid: p.max_cntlid,
        };
        state::create_subsystem(&p.nqn, opts).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

static DELETE_SUBSYSTEM: MethodSpec = MethodSpec {
    name: "nvmf_delete_subsystem",
    help: "Delete an NVMe-oF subsystem (its controllers are disconnected)",
    params: &[
        NQN,
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NqnParams {
    nqn: String,
    #[serde(default)]
    tgt_name: Option<String>,
}

fn rpc_delete_subsystem(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: NqnParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        state::delete_subsystem(&p.nqn).await.map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

static GET_SUBSYSTEMS: MethodSpec = MethodSpec {
    name: "nvmf_get_subsystems",
    help: "List NVMe-oF subsystems (or one)",
    params: &[
        ParamSpec {
            required: false,
            ..NQN
        },
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct OptNqnParams {
    #[serde(default)]
    nqn: Option<String>,
    #[serde(default)]
    tgt_name: Option<String>,
}

fn adrfam_name(a: AdrFam) -> &'static str {
    match a {
        AdrFam::Ipv4 => "IPv4",
        AdrFam::Ipv6 => "IPv6",
    }
}

fn listen_json(l: &ListenAddr) -> Value {
    json!({
        "trtype": l.trtype.name(),
        "adrfam": adrfam_name(l.adrfam),
        "traddr": l.traddr,
        "trsvcid": l.trsvcid,
    })
}

fn subsystem_json(s: &super::subsystem::Subsystem) -> Value {
    let g = s.lock();
    let mut v = json!({
        "nqn": s.nqn,
        "subtype": if s.is_discovery() { "Discovery" } else { "NVMe" },
        "listen_addresses": g.listeners.iter().map(listen_json).collect::<Vec<_>>(),
        "allow_any_host": g.allow_any_host,
        "hosts": g.hosts.iter().map(|h| json!({"nqn": h})).collect::<Vec<_>>(),
    });
    if !s.is_discovery() {
        v["serial_number"] = g.serial.clone().into();
        v["model_number"] = g.model.clone().into();
        v["max_namespaces"] = g.max_namespaces.into();
        v["passthrough"] = false.into();
        v["min_cntlid"] = g.cntlid_range.0.into();
        v["max_cntlid"] = g.cntlid_range.1.into();
        v["namespaces"] = g
            .namespaces
            .values()
            .map(|n| {
                let mut j = json!({
                    "nsid": n.nsid,
                    "bdev_name": n.bdev_name,
                    "name": n.bdev_name,
                    "nguid": hex_upper(&n.nguid),
                    "uuid": n.uuid.to_string(),
                });
                if n.eui64 != [0; 8] {
                    j["eui64"] = hex_upper(&n.eui64).into();
                }
                j
            })
            .collect::<Vec<_>>()
            .into();
    }
    v
}

pub(super) fn rpc_get_subsystems(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: OptNqnParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let all = state::subsystems();
        let list: Vec<Value> = all
            .iter()
            .filter(|s| p.nqn.as_deref().is_none_or(|n| n == s.nqn))
            .map(|s| subsystem_json(s))
            .collect();
        if p.nqn.is_some() && list.is_empty() {
            return Err(RpcError::errno(libc::ENODEV, "No such device"));
        }
        Ok(Value::Array(list))
    })
}

// ---- listeners ----

/// rpc.py's `group_as(params, 'listen_address', [trtype, traddr, trsvcid, adrfam])` and its
/// `discovery` shortcut for the discovery NQN.
fn group_listen_address(m: &mut Map<String, Value>) -> Result<(), String> {
    let mut g = Map::new();
    for k in ["trtype", "traddr", "trsvcid", "adrfam"] {
        if let Some(v) = m.remove(k) {
            g.insert(k.into(), v);
        }
    }
    if !g.is_empty() {
        m.insert("listen_address".into(), Value::Object(g));
    }
    if m.get("nqn").and_then(Value::as_str) == Some("discovery") {
        m.insert("nqn".into(), state::DISCOVERY_NQN.into());
    }
    Ok(())
}

const LISTENER_PARAMS: &[ParamSpec] = &[
    NQN,
    p(
        "trtype",
        ParamKind::Str,
        true,
        false,
        Some('t'),
        "Transport type: e.g. tcp",
    ),
    p(
        "traddr",
        ParamKind::Str,
        true,
        false,
        Some('a'),
        "Transport address: an IP address",
    ),
    ParamSpec {
        short: Some('p'),
        ..TGT_NAME
    },
    p(
        "adrfam",
        ParamKind::Str,
        false,
        false,
        Some('f'),
        "Address family: ipv4, ipv6",
    ),
    p(
        "trsvcid",
        ParamKind::Str,
        false,
        false,
        Some('s'),
        "Service id: the port number",
    ),
];

static ADD_LISTENER: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_add_listener",
    help: "Add a listener to an NVMe-oF subsystem ('discovery' names the discovery subsystem)",
    params: LISTENER_PARAMS,
    cli_rewrite: Some(group_listen_address),
};

static REMOVE_LISTENER: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_remove_listener",
    help: "Remove a listener from an NVMe-oF subsystem",
    params: LISTENER_PARAMS,
    cli_rewrite: Some(group_listen_address),
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListenAddressJson {
    trtype: String,
    traddr: String,
    #[serde(default)]
    adrfam: Option<String>,
    #[serde(default)]
    trsvcid: Option<String>,
}

#[derive(Deserialize)]
struct ListenerParams {
    nqn: String,
    listen_address: ListenAddressJson,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

fn listen_addr(j: ListenAddressJson) -> Result<ListenAddr, RpcError> {
    let inval = |m: String| RpcError::errno(libc::EINVAL, m);
    let trtype =
        TrType::parse(&j.trtype).ok_or_else(|| inval(format!("Invalid trtype '{}'", j.trtype)))?;
    let adrfam = match j.adrfam.as_deref().map(str::to_ascii_lowercase).as_deref() {
        Some("ipv4") => AdrFam::Ipv4,
        Some("ipv6") => AdrFam::Ipv6,
        None if j.traddr.contains(':') => AdrFam::Ipv6,
        None => AdrFam::Ipv4,
        Some(other) => return Err(inval(format!("Invalid adrfam '{other}': ipv4 or ipv6"))),
    };
    let trsvcid = j
        .trsvcid
        .ok_or_else(|| inval("trsvcid (the port) is required for TCP and RDMA".into()))?;
    if trsvcid.parse::<u16>().is_err() {
        return Err(inval(format!(
            "Invalid trsvcid '{trsvcid}': not a port number"
        )));
    }
    let ip_ok = match adrfam {
        AdrFam::Ipv4 => j.traddr.parse::<std::net::Ipv4Addr>().is_ok(),
        AdrFam::Ipv6 => j.traddr.parse::<std::net::Ipv6Addr>().is_ok(),
    };
    if !ip_ok {
        return Err(inval(format!(
            "Invalid traddr '{}' for {}",
            j.traddr,
            adrfam_name(adrfam)
        )));
    }
    Ok(ListenAddr {
        trtype,
        adrfam,
        traddr: j.traddr,
        trsvcid,
    })
}

/// [`ListenerParams`] names.
const LISTENER_FIELDS: &[&str] = &["nqn", "listen_address", "tgt_name"];

/// SPDK's other `nvmf_subsystem_add_listener` parameters.
const LISTENER_EXTRAS: &[(&str, Extra)] = &[
    (
        "secure_channel",
        Extra::Only(is_false, "Keel has no TLS (NVMe/TCP secure channel)"),
    ),
    (
        "ana_state",
        Extra::Only(
            |v| v == "optimized",
            "Keel reports no ANA states: every listener is optimized",
        ),
    ),
    (
        "sock_impl",
        Extra::Only(
            |v| v == "posix" || v == "uring",
            "Keel's listeners are plain TCP sockets (posix or uring accepted as hints; no ssl)",
        ),
    ),
    // vfio-user only in SPDK.
    ("numa_id", Extra::Hint),
];

pub(super) fn rpc_add_listener(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: ListenerParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        check_extras(
            "nvmf_subsystem_add_listener",
            &p.extra,
            LISTENER_FIELDS,
            LISTENER_EXTRAS,
        )?;
        let addr = listen_addr(p.listen_address)?;
        state::add_listener(&p.nqn, addr).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

fn rpc_remove_listener(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: ListenerParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        check_extras(
            "nvmf_subsystem_remove_listener",
            &p.extra,
            LISTENER_FIELDS,
            &[],
        )?;
        let addr = listen_addr(p.listen_address)?;
        state::remove_listener(&p.nqn, &addr).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

// ---- namespaces ----

fn group_namespace(m: &mut Map<String, Value>) -> Result<(), String> {
    let mut g = Map::new();
    for k in [
        "bdev_name",
        "ptpl_file",
        "nsid",
        "nguid",
        "eui64",
        "uuid",
        "anagrpid",
        "no_auto_visible",
    ] {
        if let Some(v) = m.remove(k) {
            g.insert(k.into(), v);
        }
    }
    if !g.is_empty() {
        m.insert("namespace".into(), Value::Object(g));
    }
    Ok(())
}

static ADD_NS: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_add_ns",
    help: "Add a namespace (a bdev) to an NVMe-oF subsystem; answers its nsid",
    params: &[
        NQN,
        p(
            "bdev_name",
            ParamKind::Str,
            true,
            true,
            None,
            "Name of the bdev to expose as a namespace",
        ),
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
        p(
            "nsid",
            ParamKind::Int,
            false,
            false,
            Some('n'),
            "Namespace ID",
        ),
        p(
            "nguid",
            ParamKind::Str,
            false,
            false,
            Some('g'),
            "16-byte NGUID in hexadecimal",
        ),
        p(
            "eui64",
            ParamKind::Str,
            false,
            false,
            Some('e'),
            "8-byte EUI-64 in hexadecimal",
        ),
        p(
            "uuid",
            ParamKind::Str,
            false,
            false,
            Some('u'),
            "RFC 4122 UUID",
        ),
    ],
    cli_rewrite: Some(group_namespace),
};

#[derive(Deserialize)]
struct NamespaceJson {
    bdev_name: String,
    #[serde(default)]
    nsid: Option<u32>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    nguid: Option<String>,
    #[serde(default)]
    eui64: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AddNsParams {
    nqn: String,
    namespace: NamespaceJson,
    #[serde(default)]
    tgt_name: Option<String>,
}

/// SPDK's other `namespace` fields of `nvmf_subsystem_add_ns`.
const NAMESPACE_EXTRAS: &[(&str, Extra)] = &[
    // ANA is not reported (see nvmf_create_subsystem ana_reporting).
    ("anagrpid", Extra::Hint),
    // Keel's bdevs have no separate metadata, so a namespace never shows any: hidden or not
    // is the same namespace.
    ("hide_metadata", Extra::Hint),
    (
        "ptpl_file",
        Extra::Only(
            |_| false,
            "Keel does not persist reservations across restarts (persist through power loss)",
        ),
    ),
    (
        "no_auto_visible",
        Extra::Only(
            is_false,
            "Keel has no per-host namespace visibility: every allowed host would see it",
        ),
    ),
];

fn namespace_opts(n: NamespaceJson) -> Result<NamespaceOpts, RpcError> {
    let inval = |m: String| RpcError::invalid_params(m);
    check_extras(
        "nvmf_subsystem_add_ns",
        &n.extra,
        &["bdev_name", "nsid", "uuid", "nguid", "eui64"],
        NAMESPACE_EXTRAS,
    )?;
    let uuid = match n.uuid.as_deref() {
        None => None,
        Some(s) => Some(Uuid::parse(s).ok_or_else(|| inval(format!("Invalid UUID '{s}'")))?),
    };
    let nguid = match n.nguid.as_deref() {
        None => None,
        Some(s) => Some(parse_hex::<16>(s).ok_or_else(|| inval(format!("Invalid NGUID '{s}'")))?),
    };
    let eui64 = match n.eui64.as_deref() {
        None => None,
        Some(s) => Some(parse_hex::<8>(s).ok_or_else(|| inval(format!("Invalid EUI-64 '{s}'")))?),
    };
    Ok(NamespaceOpts {
        bdev_name: n.bdev_name,
        nsid: n.nsid,
        uuid,
        nguid,
        eui64,
    })
}

pub(super) fn rpc_add_ns(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: AddNsParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let opts = namespace_opts(p.namespace)?;
        let nsid = state::add_namespace(&p.nqn, opts).await.map_err(to_rpc)?;
        Ok(Value::from(nsid))
    })
}

static REMOVE_NS: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_remove_ns",
    help: "Remove a namespace from an NVMe-oF subsystem",
    params: &[
        NQN,
        p("nsid", ParamKind::Int, true, true, None, "Namespace ID"),
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoveNsParams {
    nqn: String,
    nsid: u32,
    #[serde(default)]
    tgt_name: Option<String>,
}

fn rpc_remove_ns(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: RemoveNsParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        state::remove_namespace(&p.nqn, p.nsid)
            .await
            .map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

// ---- hosts ----

const HOST_PARAMS: &[ParamSpec] = &[
    NQN,
    p("host", ParamKind::Str, true, true, None, "Host NQN"),
    ParamSpec {
        short: Some('t'),
        ..TGT_NAME
    },
];

/// rpc.py's `nvmf_subsystem_add_host` arguments: the host, and the keys Keel refuses (taken so
/// that `--psk`/`--dhchap-key` get Keel's answer rather than an argument error of the client).
const ADD_HOST_PARAMS: &[ParamSpec] = &[
    NQN,
    p("host", ParamKind::Str, true, true, None, "Host NQN"),
    ParamSpec {
        short: Some('t'),
        ..TGT_NAME
    },
    p(
        "psk",
        ParamKind::Str,
        false,
        false,
        None,
        "TLS PSK: refused (Keel has no NVMe/TCP TLS)",
    ),
    p(
        "dhchap_key",
        ParamKind::Str,
        false,
        false,
        None,
        "DH-HMAC-CHAP key: refused (Keel has no in-band authentication)",
    ),
    p(
        "dhchap_ctrlr_key",
        ParamKind::Str,
        false,
        false,
        None,
        "DH-HMAC-CHAP controller key: refused (Keel has no in-band authentication)",
    ),
];

static ADD_HOST: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_add_host",
    help: "Allow a host to connect to an NVMe-oF subsystem",
    params: ADD_HOST_PARAMS,
    cli_rewrite: None,
};

static REMOVE_HOST: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_remove_host",
    help: "Remove a host from a subsystem's allowed list (its controllers are disconnected)",
    params: HOST_PARAMS,
    cli_rewrite: None,
};

#[derive(Deserialize)]
struct HostParams {
    nqn: String,
    host: String,
    #[serde(default)]
    tgt_name: Option<String>,
    #[serde(default)]
    psk: Option<String>,
    #[serde(default)]
    dhchap_key: Option<String>,
    #[serde(default)]
    dhchap_ctrlr_key: Option<String>,
    #[serde(flatten)]
    extra: Map<String, Value>,
}

/// [`HostParams`] names.
const HOST_FIELDS: &[&str] = &[
    "nqn",
    "host",
    "tgt_name",
    "psk",
    "dhchap_key",
    "dhchap_ctrlr_key",
];

fn rpc_add_host(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: HostParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        if p.psk.is_some() || p.dhchap_key.is_some() || p.dhchap_ctrlr_key.is_some() {
            return Err(RpcError::errno(
                libc::EOPNOTSUPP,
                "TLS PSKs and DH-HMAC-CHAP keys are not supported by Keel",
            ));
        }
        check_extras("nvmf_subsystem_add_host", &p.extra, HOST_FIELDS, &[])?;
        state::add_host(&p.nqn, &p.host).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

pub(super) fn rpc_remove_host(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: HostParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        // How long SPDK waits for the host's controllers to go: Keel disconnects them at once.
        check_extras(
            "nvmf_subsystem_remove_host",
            &p.extra,
            HOST_FIELDS,
            &[("timeout_ms", Extra::Hint)],
        )?;
        state::remove_host(&p.nqn, &p.host).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

static ALLOW_ANY_HOST: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_allow_any_host",
    help: "Allow any host to connect (true) or enforce the allowed host list (false)",
    params: &[
        NQN,
        p(
            "allow_any_host",
            ParamKind::Bool,
            true,
            false,
            None,
            "Allow any host",
        ),
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AllowAnyHostParams {
    nqn: String,
    allow_any_host: bool,
    #[serde(default)]
    tgt_name: Option<String>,
}

fn rpc_allow_any_host(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: AllowAnyHostParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        state::allow_any_host(&p.nqn, p.allow_any_host).map_err(to_rpc)?;
        Ok(Value::Bool(true))
    })
}

// ---- controllers and queue pairs ----

static GET_CONTROLLERS: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_get_controllers",
    help: "List the controllers of an NVMe-oF subsystem",
    params: &[
        NQN,
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

fn need_subsys(nqn: &str) -> Result<std::sync::Arc<super::subsystem::Subsystem>, RpcError> {
    state::need_subsystem(nqn).map_err(to_rpc)
}

pub(super) fn rpc_get_controllers(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: NqnParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let s = need_subsys(&p.nqn)?;
        let list: Vec<Value> = s
            .controllers()
            .iter()
            .map(|c| {
                json!({
                    "cntlid": c.cntlid,
                    "cntrltype": if s.is_discovery() { "discovery" } else { "io" },
                    "hostnqn": c.hostnqn,
                    "hostid": Uuid(c.hostid).to_string(),
                    "num_io_qpairs": c.num_io_qpairs.load(std::sync::atomic::Ordering::Relaxed),
                })
            })
            .collect();
        Ok(Value::Array(list))
    })
}

static GET_QPAIRS: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_get_qpairs",
    help: "List the queue pairs of an NVMe-oF subsystem",
    params: &[
        NQN,
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

/// A peer address "traddr:trsvcid" (IPv6 literals may be bracketed) as SPDK's object.
fn peer_json(l: &ListenAddr, peer: &str) -> Value {
    let (addr, port) = match peer.rsplit_once(':') {
        Some((a, p)) => (a.trim_start_matches('[').trim_end_matches(']'), p),
        None => (peer, ""),
    };
    json!({
        "trtype": l.trtype.name(),
        "adrfam": adrfam_name(l.adrfam),
        "traddr": addr,
        "trsvcid": port,
    })
}

/// The name of the thread (reactor) of `core`, as `thread_get_stats` shows it.
fn thread_name(core: u32) -> String {
    format!("reactor_{core}")
}

fn qpair_json(q: &QpairInfo) -> Value {
    json!({
        "cntlid": q.cntlid,
        "qid": q.qid,
        // A controller lists only queues past Connect.
        "state": "enabled",
        "thread": thread_name(q.core),
        "hostnqn": q.hostnqn,
        "listen_address": listen_json(&q.listen),
        "peer_address": peer_json(&q.listen, &q.peer),
    })
}

pub(super) fn rpc_get_qpairs(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: NqnParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let s = need_subsys(&p.nqn)?;
        let mut out = Vec::new();
        for c in s.controllers() {
            let (sid, cntlid) = (s.id, c.cntlid);
            let infos = keel_reactor::call_on(c.core, move || {
                ctrlr::lookup(sid, cntlid)
                    .map(|c| c.qpair_infos())
                    .unwrap_or_default()
            })
            .await
            .unwrap_or_default();
            out.extend(infos.iter().map(qpair_json));
        }
        Ok(Value::Array(out))
    })
}

// ---- listeners and statistics ----

static GET_LISTENERS: MethodSpec = MethodSpec {
    name: "nvmf_subsystem_get_listeners",
    help: "List the listeners of an NVMe-oF subsystem (no ana_states: Keel does not report ANA)",
    params: &[
        NQN,
        ParamSpec {
            short: Some('t'),
            ..TGT_NAME
        },
    ],
    cli_rewrite: None,
};

pub(super) fn rpc_get_listeners(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: NqnParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let s = need_subsys(&p.nqn)?;
        let g = s.lock();
        // SPDK adds "ana_states" only for a subsystem with ANA reporting; Keel reports no ANA
        // to hosts (the flag is accepted, not acted on), so a listener has no ANA state.
        let list: Vec<Value> = g
            .listeners
            .iter()
            .map(|l| json!({"address": listen_json(l)}))
            .collect();
        Ok(Value::Array(list))
    })
}

static GET_STATS: MethodSpec = MethodSpec {
    name: "nvmf_get_stats",
    help: "Show each core's NVMe-oF poll group counters (queue pairs, completed I/O)",
    params: &[TGT_NAME],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TgtParams {
    #[serde(default)]
    tgt_name: Option<String>,
}

/// One poll group of `nvmf_get_stats`: core `core`'s counters, one entry per transport.
fn poll_group_json(core: u32, s: &super::stats::PgSnapshot, trtypes: &[&str]) -> Value {
    json!({
        "name": thread_name(core),
        "admin_qpairs": s.admin_qpairs,
        "io_qpairs": s.io_qpairs,
        "current_admin_qpairs": s.current_admin_qpairs,
        "current_io_qpairs": s.current_io_qpairs,
        "current_unassociated_qpairs": s.current_unassociated_qpairs,
        "pending_bdev_io": s.pending_bdev_io,
        "completed_nvme_io": s.completed_nvme_io,
        "transports": trtypes.iter().map(|t| json!({"trtype": t})).collect::<Vec<_>>(),
    })
}

pub(super) fn rpc_get_stats(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: TgtParams = keel_rpc::params::parse(params)?;
        check_tgt(p.tgt_name.as_deref())?;
        let trtypes: Vec<&str> = state::transports()
            .iter()
            .map(|t| t.trtype().name())
            .collect();
        let mut groups = Vec::new();
        // Each core's counters are read on that core, one message at a time.
        for core in keel_reactor::cores() {
            let snap = keel_reactor::call_on(core, super::stats::snapshot)
                .await
                .map_err(|e| RpcError::internal(format!("core {core}: {e}")))?;
            groups.push(poll_group_json(core, &snap, &trtypes));
        }
        Ok(json!({"tick_rate": keel_reactor::tick_rate(), "poll_groups": groups}))
    })
}

// ---- save_config ----

/// The calls that recreate the target: transports, then subsystems with their listeners,
/// hosts and namespaces (the discovery subsystem's listeners too).
fn save_config() -> Vec<Value> {
    let mut calls = Vec::new();
    for t in state::transports() {
        let mut params = transport_json(t.opts());
        if let Some(o) = params.as_object_mut() {
            o.remove("dif_insert_or_strip");
            o.remove("zcopy");
            o.remove("kas");
        }
        calls.push(json!({"method": "nvmf_create_transport", "params": params}));
    }
    for s in state::subsystems() {
        let g = s.lock();
        if !s.is_discovery() {
            calls.push(json!({"method": "nvmf_create_subsystem", "params": {
                "nqn": s.nqn,
                "serial_number": g.serial,
                "model_number": g.model,
                "max_namespaces": g.max_namespaces,
                "allow_any_host": g.allow_any_host,
                "ana_reporting": g.ana_reporting,
                "min_cntlid": g.cntlid_range.0,
                "max_cntlid": g.cntlid_range.1,
            }}));
        }
        for l in &g.listeners {
            calls.push(json!({"method": "nvmf_subsystem_add_listener", "params": {
                "nqn": s.nqn,
                "listen_address": listen_json(l),
            }}));
        }
        for h in &g.hosts {
            calls.push(json!({"method": "nvmf_subsystem_add_host", "params": {
                "nqn": s.nqn, "host": h,
            }}));
        }
        for n in g.namespaces.values() {
            let mut ns = json!({
                "nsid": n.nsid,
                "bdev_name": n.bdev_name,
                "uuid": n.uuid.to_string(),
                "nguid": hex_upper(&n.nguid),
            });
            if n.eui64 != [0; 8] {
                ns["eui64"] = hex_upper(&n.eui64).into();
            }
            calls.push(json!({"method": "nvmf_subsystem_add_ns", "params": {
                "nqn": s.nqn, "namespace": ns,
            }}));
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn listen_address_parsing() {
        let j = |v: Value| serde_json::from_value::<ListenAddressJson>(v).unwrap();
        let a = listen_addr(j(
            json!({"trtype":"tcp","traddr":"127.0.0.1","trsvcid":"4420"}),
        ))
        .unwrap();
        assert_eq!(a.trtype, TrType::Tcp);
        assert_eq!(a.adrfam, AdrFam::Ipv4);
        let a = listen_addr(j(json!({"trtype":"TCP","traddr":"::1","trsvcid":"4420"}))).unwrap();
        assert_eq!(a.adrfam, AdrFam::Ipv6);
        for bad in [
            json!({"trtype":"fc","traddr":"1.2.3.4","trsvcid":"1"}),
            json!({"trtype":"tcp","traddr":"1.2.3.4"}),
            json!({"trtype":"tcp","traddr":"1.2.3.4","trsvcid":"x"}),
            json!({"trtype":"tcp","traddr":"::1","trsvcid":"1","adrfam":"ipv4"}),
            json!({"trtype":"tcp","traddr":"1.2.3.4","trsvcid":"1","adrfam":"ib"}),
        ] {
            assert!(listen_addr(j(bad.clone())).is_err(), "{bad}");
        }
    }

    #[test]
    fn cli_grouping_matches_rpc_py() {
        let mut m = json!({"nqn":"discovery","trtype":"tcp","traddr":"1.2.3.4","trsvcid":"4420"})
            .as_object()
            .cloned()
            .unwrap();
        group_listen_address(&mut m).unwrap();
        assert_eq!(m["nqn"], state::DISCOVERY_NQN);
        assert_eq!(m["listen_address"]["traddr"], "1.2.3.4");
        assert!(!m.contains_key("trtype"));
        let mut m = json!({"nqn":"n","bdev_name":"M0","nsid":3})
            .as_object()
            .cloned()
            .unwrap();
        group_namespace(&mut m).unwrap();
        assert_eq!(m["namespace"], json!({"bdev_name":"M0","nsid":3}));
    }

    #[test]
    fn rdma_options_default_like_spdk_and_round_trip_through_save_config() {
        let parse = |v: Value| transport_opts(serde_json::from_value(v).unwrap());
        let d = parse(json!({"trtype":"RDMA"})).unwrap();
        assert_eq!(
            (
                d.io_unit_size,
                d.max_srq_depth,
                d.no_srq,
                d.num_cqe,
                d.acceptor_backlog
            ),
            (8192, 4096, false, 4096, 100)
        );
        let o = parse(
            json!({"trtype":"rdma","max_srq_depth":512,"no_srq":true,"num_cqe":1024,
            "acceptor_backlog":64}),
        )
        .unwrap();
        let saved = transport_json(&o);
        assert_eq!(saved["max_srq_depth"], 512);
        assert!(
            saved.get("c2h_success").is_none(),
            "TCP-only options stay out of RDMA"
        );
        let replayed = parse(saved).unwrap();
        assert_eq!(replayed, o);
        let tcp = transport_json(&TransportOpts::tcp_defaults());
        assert!(tcp.get("max_srq_depth").is_none() && tcp.get("c2h_success").is_some());
    }

    #[test]
    fn transport_options_are_validated() {
        let parse = |v: Value| transport_opts(serde_json::from_value(v).unwrap());
        let o = parse(json!({"trtype":"tcp","max_queue_depth":64,"zcopy":false,"no_srq":false}))
            .unwrap();
        assert_eq!(o.max_queue_depth, 64);
        assert_eq!(o.in_capsule_data_size, 4096);
        assert_eq!(
            parse(json!({"trtype":"fc"})).unwrap_err().code,
            -libc::EINVAL
        );
        assert!(parse(json!({"trtype":"tcp","max_queue_depth":1})).is_err());
        assert!(parse(json!({"trtype":"tcp","in_capsule_data_size":10})).is_err());
    }

    #[test]
    fn transport_sizes_are_validated() {
        let parse = |v: Value| transport_opts(serde_json::from_value(v).unwrap());
        let einval = |v: Value| {
            let e = parse(v).unwrap_err();
            assert_eq!(e.code, -libc::EINVAL);
            e.message
        };
        // max_io_size: at least 8 KiB (the smallest MDTS), in 4 KiB pages.
        let m = einval(json!({"trtype":"tcp","max_io_size":4096}));
        assert!(m.contains("max_io_size 4096"), "{m}");
        einval(json!({"trtype":"tcp","max_io_size":0}));
        einval(json!({"trtype":"tcp","max_io_size":12288 + 512}));
        assert_eq!(
            parse(json!({"trtype":"tcp","max_io_size":8192}))
                .unwrap()
                .max_io_size,
            8192
        );
        assert!(parse(json!({"trtype":"tcp","max_io_size":12288})).is_ok());
        // in_capsule_data_size: up to 128 KiB.
        assert!(parse(json!({"trtype":"tcp","in_capsule_data_size":0})).is_ok());
        assert!(parse(json!({"trtype":"tcp","in_capsule_data_size":131072})).is_ok());
        let m = einval(json!({"trtype":"tcp","in_capsule_data_size":131072 + 16}));
        assert!(m.contains("in_capsule_data_size"), "{m}");
        // io_unit_size: whole 4 KiB pages.
        einval(json!({"trtype":"tcp","io_unit_size":0}));
        let m = einval(json!({"trtype":"tcp","io_unit_size":6000}));
        assert!(m.contains("io_unit_size 6000"), "{m}");
        assert!(parse(json!({"trtype":"tcp","io_unit_size":8192})).is_ok());
    }

    #[test]
    fn namespace_ids_are_parsed() {
        let n: NamespaceJson = serde_json::from_value(json!({
            "bdev_name": "M0",
            "nguid": "00112233445566778899AABBCCDDEEFF",
            "eui64": "0011223344556677",
            "uuid": "11111111-2222-3333-4444-555555555555",
            "no_auto_visible": false,
        }))
        .unwrap();
        let o = namespace_opts(n).unwrap();
        assert_eq!(o.nguid.unwrap()[15], 0xff);
        assert_eq!(o.eui64.unwrap()[0], 0);
        assert!(o.uuid.is_some());
        let bad: NamespaceJson =
            serde_json::from_value(json!({"bdev_name":"M0","nguid":"12"})).unwrap();
        assert_eq!(namespace_opts(bad).unwrap_err().code, -32602);
    }
}
