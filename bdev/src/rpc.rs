//! The `bdev_*` JSON-RPC methods and the `bdev` config subsystem.
//!
//! Generic methods live here (`bdev_get_bdevs`, `bdev_get_iostat`, `bdev_set_qos_limit`,
//! `bdev_wait_for_examine`, `bdev_set_options`, `bdev_examine`); each module registers its own create/delete methods. Handlers run
//! on the main core. Helpers for module writers: [`bdev_error_to_rpc`] (a [`BdevError`] as
//! SPDK's negative-errno error), [`parse_uuid`], [`delete_of_module`] and
//! [`total_size_to_num_blocks`] (rpc.py's MiB → `num_blocks` client-side rewrite).

use crate::histogram::{Histogram, HistogramOpts};
use crate::qos::QosLimits;
use crate::{Bdev, BdevError, IoType, Uuid};
use keel_reactor::PollerId;
use keel_rpc::{HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError, RpcStates};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use std::cell::Cell;
use std::future::poll_fn;
use std::rc::Rc;
use std::task::{Poll, Waker};
use std::time::Duration;

/// Register every bdev RPC method (generic ones here, each module's own) and the `bdev` config
/// subsystem. Called once by the binary at start-up; later calls do nothing.
pub fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        keel_rpc::register_method(&GET_BDEVS_SPEC, rpc_get_bdevs);
        keel_rpc::register_method(&GET_IOSTAT_SPEC, rpc_get_iostat);
        keel_rpc::register_method(&SET_QOS_SPEC, rpc_set_qos_limit);
        keel_rpc::register_method(&WAIT_EXAMINE_SPEC, rpc_wait_for_examine);
        // SPDK_RPC_STARTUP: before framework_start_init (and in a config, before any bdev).
        keel_rpc::register_method_in(&SET_OPTIONS_SPEC, rpc_set_options, RpcStates::STARTUP);
        keel_rpc::register_method(&EXAMINE_SPEC, rpc_examine);
        keel_rpc::register_method(&ENABLE_HISTOGRAM_SPEC, rpc_enable_histogram);
        keel_rpc::register_method(&GET_HISTOGRAM_SPEC, rpc_get_histogram);
        crate::modules::malloc::register_rpcs();
        crate::modules::null::register_rpcs();
        crate::modules::uring::register_rpcs();
        crate::modules::delay::register_rpcs();
        crate::modules::error::register_rpcs();
        keel_rpc::register_config_subsystem("bdev", save_config);
    });
}

/// A [`BdevError`] as the JSON-RPC error SPDK answers: its negative errno and its message.
pub fn bdev_error_to_rpc(e: BdevError) -> RpcError {
    RpcError::errno(e.errno(), e.to_string())
}

/// Parse an optional `uuid` parameter (-32602 when malformed).
pub(crate) fn parse_uuid(s: Option<&str>) -> Result<Option<Uuid>, RpcError> {
    match s {
        None => Ok(None),
        Some(s) => Uuid::parse(s).map(Some).ok_or_else(|| {
            RpcError::invalid_params(format!("Invalid parameters: uuid {s:?} is not a UUID"))
        }),
    }
}

/// Unregister `name` if it is a bdev of the module whose product name is `product` (else
/// [`BdevError::NotFound`], as SPDK's module-specific deletes answer -ENODEV).
pub(crate) async fn delete_of_module(name: &str, product: &str) -> Result<(), BdevError> {
    match crate::get_bdev(name) {
        Some(b) if b.backend().product_name() == product => crate::unregister(b.name()).await,
        _ => Err(BdevError::NotFound(name.to_owned())),
    }
}

/// CLI rewrite shared by `bdev_malloc_create` and `bdev_null_create`: rpc.py takes
/// `total_size` in MiB and sends `num_blocks = total_size × 2^20 / block_size`.
pub(crate) fn total_size_to_num_blocks(p: &mut Map<String, Value>) -> Result<(), String> {
    let Some(total) = p.remove("total_size") else {
        return if p.contains_key("num_blocks") {
            Ok(())
        } else {
            Err("total_size is required".into())
        };
    };
    let mib = total
        .as_f64()
        .filter(|m| m.is_finite() && *m > 0.0)
        .ok_or("total_size must be a positive number of MiB")?;
    let bs = p
        .get("block_size")
        .and_then(Value::as_u64)
        .filter(|&b| b > 0)
        .ok_or("block_size must be a positive integer")?;
    let bytes = mib * (1u64 << 20) as f64;
    if bytes >= u64::MAX as f64 {
        return Err("total_size is too large".into());
    }
    let num_blocks = bytes as u64 / bs;
    if num_blocks == 0 {
        return Err(format!(
            "total_size {mib} MiB is smaller than one block of {bs} bytes"
        ));
    }
    p.insert("num_blocks".into(), num_blocks.into());
    Ok(())
}

/// SPDK's `supported_io_types` object (types Keel has no notion of are reported false).
fn supported_io_types(b: &Bdev) -> Value {
    let mut m = Map::new();
    for t in IoType::ALL {
        m.insert(t.name().into(), b.io_type_supported(t).into());
    }
    for other in [
        "compare",
        "compare_and_write",
        "abort",
        "seek_hole",
        "seek_data",
        "copy",
        "nvme_admin",
        "nvme_io",
        "nvme_io_md",
        "zcopy",
        "get_zone_info",
        "zone_management",
        "zone_append",
        "nvme_iov_md",
        "nvme_nssr",
        "write_uncorrectable",
    ] {
        m.insert(other.into(), false.into());
    }
    Value::Object(m)
}

fn rate_limits_json(q: &QosLimits) -> Value {
    json!({
        "rw_ios_per_sec": q.rw_ios_per_sec,
        "rw_mbytes_per_sec": q.rw_mbytes_per_sec,
        "r_mbytes_per_sec": q.r_mbytes_per_sec,
        "w_mbytes_per_sec": q.w_mbytes_per_sec,
    })
}

/// One entry of `bdev_get_bdevs`.
pub(crate) fn bdev_json(b: &Bdev) -> Value {
    let info = b.info();
    let claimed_by = b.claimed_by();
    let driver_specific = match b.backend().driver_specific() {
        Value::Null => json!({}),
        v => v,
    };
    let mut v = json!({
        "name": info.name,
        "aliases": b.aliases(),
        "product_name": b.backend().product_name(),
        "block_size": info.block_size,
        "num_blocks": b.num_blocks(),
        // SPDK's I/O-size hints: Keel advertises none (0, as SPDK for a bdev without them).
        "preferred_write_alignment": 0,
        "preferred_write_granularity": 0,
        "optimal_write_size": 0,
        "preferred_unmap_alignment": 0,
        "preferred_unmap_granularity": 0,
        "uuid": info.uuid.to_string(),
        "assigned_rate_limits": rate_limits_json(&b.qos_limits()),
        "claimed": claimed_by.is_some(),
        "zoned": false,
        "supported_io_types": supported_io_types(b),
        "driver_specific": driver_specific,
    });
    if let Some(module) = claimed_by {
        v["claim_type"] = "exclusive_write".into();
        v["claimed_by"] = module.into();
    }
    v
}

fn no_such_device() -> RpcError {
    RpcError::errno(libc::ENODEV, "No such device")
}

/// A future that resolves after `d`, driven by a one-shot timed poller on this reactor.
async fn sleep(d: Duration) {
    struct State {
        fired: Cell<bool>,
        waker: Cell<Option<Waker>>,
        id: Cell<Option<PollerId>>,
    }
    let st = Rc::new(State {
        fired: Cell::new(false),
        waker: Cell::new(None),
        id: Cell::new(None),
    });
    let s = Rc::clone(&st);
    let id = keel_reactor::register_poller("bdev_rpc_sleep", Some(d), move || {
        if !s.fired.replace(true) {
            if let Some(id) = s.id.take() {
                keel_reactor::unregister_poller(id);
            }
            if let Some(w) = s.waker.take() {
                w.wake();
            }
        }
        keel_reactor::PollStatus::Busy
    });
    st.id.set(Some(id));
    poll_fn(|cx| {
        if st.fired.get() {
            Poll::Ready(())
        } else {
            st.waker.set(Some(cx.waker().clone()));
            Poll::Pending
        }
    })
    .await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetBdevsParams {
    #[serde(default)]
    name: Option<String>,
    /// Milliseconds to wait for `name` to appear (SPDK's `-t`).
    #[serde(default)]
    timeout: u64,
}

static GET_BDEVS_SPEC: MethodSpec = MethodSpec {
    name: "bdev_get_bdevs",
    help: "List bdevs (or one, by name or alias), with geometry, claims, supported I/O types and rate limits",
    params: &[
        ParamSpec::option("name", ParamKind::Str, false, Some("name"), Some('b'), "Name or alias of one bdev"),
        ParamSpec::option("timeout", ParamKind::Int, false, Some("timeout"), Some('t'), "Milliseconds to wait for the named bdev to appear"),
    ],
    cli_rewrite: None,
};

fn rpc_get_bdevs(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: GetBdevsParams = keel_rpc::params::parse(params)?;
        let Some(name) = p.name else {
            let all: Vec<Value> = crate::registry::all_bdevs().iter().map(bdev_json).collect();
            return Ok(Value::Array(all));
        };
        let step = Duration::from_millis(10);
        let mut waited = Duration::ZERO;
        loop {
            if let Some(b) = crate::get_bdev(&name) {
                return Ok(Value::Array(vec![bdev_json(&b)]));
            }
            if waited >= Duration::from_millis(p.timeout) {
                return Err(no_such_device());
            }
            sleep(step).await;
            waited += step;
        }
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GetIostatParams {
    #[serde(default)]
    name: Option<String>,
    /// Several bdevs (rpc.py v25+ `--names`, SPDK's newer form of `name`).
    #[serde(default)]
    names: Option<Vec<String>>,
    /// rpc.py sends `per_channel: false` by default; per-channel output is not supported.
    #[serde(default)]
    per_channel: bool,
    /// SPDK's reset after reading (`all`, `maxmin`, `error`, `none`): Keel's counters are
    /// never reset, so only `none` is accepted.
    #[serde(default)]
    reset_mode: Option<String>,
}

static GET_IOSTAT_SPEC: MethodSpec = MethodSpec {
    name: "bdev_get_iostat",
    help: "I/O statistics of every bdev (or one), summed over all cores; latencies in ticks",
    params: &[
        ParamSpec::option(
            "name",
            ParamKind::Str,
            false,
            Some("name"),
            Some('b'),
            "Name or alias of one bdev",
        ),
        ParamSpec::option(
            "names",
            ParamKind::StrList,
            false,
            Some("names"),
            None,
            "Names or aliases of several bdevs (comma-separated)",
        ),
    ],
    cli_rewrite: None,
};

fn rpc_get_iostat(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: GetIostatParams = keel_rpc::params::parse(params)?;
        if p.per_channel {
            return Err(RpcError::errno(
                libc::ENOTSUP,
                "per_channel statistics are not supported; omit per_channel for per-bdev totals",
            ));
        }
        match p.reset_mode.as_deref() {
            None | Some("none") => {}
            Some(m @ ("all" | "maxmin" | "error")) => {
                return Err(RpcError::errno(
                    libc::ENOTSUP,
                    format!(
                        "reset_mode {m}: Keel does not reset I/O statistics; read them without \
                         reset_mode and subtract"
                    ),
                ))
            }
            Some(m) => {
                return Err(RpcError::invalid_params(format!(
                    "Invalid parameters: reset_mode {m:?}: one of all, maxmin, error, none"
                )))
            }
        }
        let bdevs = match (p.name, p.names) {
            (Some(_), Some(_)) => {
                return Err(RpcError::invalid_params(
                    "Invalid parameters: give name or names, not both",
                ))
            }
            (Some(n), None) => vec![crate::get_bdev(&n).ok_or_else(no_such_device)?],
            (None, Some(names)) => names
                .iter()
                .map(|n| {
                    crate::get_bdev(n)
                        .ok_or_else(|| RpcError::errno(libc::ENODEV, format!("No such bdev: {n}")))
                })
                .collect::<Result<Vec<_>, _>>()?,
            (None, None) => crate::registry::all_bdevs(),
        };
        let stats = crate::stats::gather(bdevs.iter().map(Bdev::id).collect()).await;
        let list: Vec<Value> = bdevs
            .iter()
            .zip(stats)
            .map(|(b, s)| {
                json!({
                    "name": b.name(),
                    "bytes_read": s.bytes_read,
                    "num_read_ops": s.num_read_ops,
                    "bytes_written": s.bytes_written,
                    "num_write_ops": s.num_write_ops,
                    "bytes_unmapped": s.bytes_unmapped,
                    "num_unmap_ops": s.num_unmap_ops,
                    "num_write_zeroes_ops": s.num_write_zeroes_ops,
                    "read_latency_ticks": s.read_latency_ticks,
                    "write_latency_ticks": s.write_latency_ticks,
                    "unmap_latency_ticks": s.unmap_latency_ticks,
                    "num_io_errors": s.num_io_errors,
                })
            })
            .collect();
        Ok(json!({
            "tick_rate": keel_reactor::tick_rate(),
            "ticks": keel_reactor::ticks(),
            "bdevs": list,
        }))
    })
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct SetQosParams {
    name: String,
    #[serde(default)]
    rw_ios_per_sec: Option<u64>,
    #[serde(default)]
    rw_mbytes_per_sec: Option<u64>,
    #[serde(default)]
    r_mbytes_per_sec: Option<u64>,
    #[serde(default)]
    w_mbytes_per_sec: Option<u64>,
}

/// Lowest non-zero IOPS limit (SPDK's `SPDK_BDEV_QOS_MIN_IOS_PER_SEC`).
const MIN_IOS_PER_SEC: u64 = 1000;

/// A QoS limit option: `--rw-ios-per-sec` etc., as rpc.py spells them.
const fn qos_param(name: &'static str, help: &'static str) -> ParamSpec {
    ParamSpec::option(name, ParamKind::Int, false, None, None, help)
}

static SET_QOS_SPEC: MethodSpec = MethodSpec {
    name: "bdev_set_qos_limit",
    help: "Set a bdev's rate limits (0 = unlimited; limits not given keep their value). \
           Each core enforces an equal share",
    params: &[
        ParamSpec::positional("name", ParamKind::Str, true, "Name of the bdev"),
        qos_param(
            "rw_ios_per_sec",
            "Read/write I/Os per second (0 or at least 1000)",
        ),
        qos_param("rw_mbytes_per_sec", "Read/write MiB per second"),
        qos_param("r_mbytes_per_sec", "Read MiB per second"),
        qos_param("w_mbytes_per_sec", "Write MiB per second"),
    ],
    cli_rewrite: None,
};

fn rpc_set_qos_limit(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: SetQosParams = keel_rpc::params::parse(params)?;
        let given = [
            p.rw_ios_per_sec,
            p.rw_mbytes_per_sec,
            p.r_mbytes_per_sec,
            p.w_mbytes_per_sec,
        ];
        if given.iter().all(Option::is_none) {
            return Err(RpcError::invalid_params("No rate limits specified"));
        }
        if p.rw_ios_per_sec
            .is_some_and(|l| l != 0 && l < MIN_IOS_PER_SEC)
        {
            return Err(RpcError::errno(
                libc::EINVAL,
                format!("rw_ios_per_sec must be 0 or at least {MIN_IOS_PER_SEC}"),
            ));
        }
        let bdev = crate::get_bdev(&p.name)
            .ok_or_else(|| bdev_error_to_rpc(BdevError::NotFound(p.name.clone())))?;
        let old = bdev.qos_limits();
        let limits = QosLimits {
            rw_ios_per_sec: p.rw_ios_per_sec.unwrap_or(old.rw_ios_per_sec),
            rw_mbytes_per_sec: p.rw_mbytes_per_sec.unwrap_or(old.rw_mbytes_per_sec),
            r_mbytes_per_sec: p.r_mbytes_per_sec.unwrap_or(old.r_mbytes_per_sec),
            w_mbytes_per_sec: p.w_mbytes_per_sec.unwrap_or(old.w_mbytes_per_sec),
        };
        crate::qos::set_limits(&bdev, limits);
        Ok(Value::Bool(true))
    })
}

static WAIT_EXAMINE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_wait_for_examine",
    help: "Wait until bdev modules (lvol, raid) have examined every registered bdev",
    params: &[],
    cli_rewrite: None,
};

fn rpc_wait_for_examine(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct NoParams {}
        let _: NoParams = keel_rpc::params::parse(params)?;
        crate::wait_for_examine().await;
        Ok(Value::Bool(true))
    })
}

// ---- examine control: bdev_set_options, bdev_examine ----

static SET_OPTIONS_SPEC: MethodSpec = MethodSpec {
    name: "bdev_set_options",
    help: "Set bdev layer options before any bdev exists (with --wait-for-rpc before \
           framework_start_init, or first in a config file's bdev section). \
           --disable-auto-examine (or --no-auto-examine): lvol and raid examine only the bdevs \
           named by bdev_examine. The pool and cache sizes are SPDK tuning Keel accepts and \
           ignores (it has no bdev_io pool or iobuf caches).",
    params: &[
        ParamSpec::option(
            "bdev_io_pool_size",
            ParamKind::Int,
            false,
            None,
            Some('p'),
            "SPDK's bdev_io pool size: accepted, no effect in Keel",
        ),
        ParamSpec::option(
            "bdev_io_cache_size",
            ParamKind::Int,
            false,
            None,
            Some('c'),
            "SPDK's per-thread bdev_io cache: accepted, no effect in Keel",
        ),
        ParamSpec::option(
            "bdev_auto_examine",
            ParamKind::Bool,
            false,
            Some("auto-examine"),
            None,
            "Examine every new bdev (the default)",
        ),
        ParamSpec::option(
            "disable_auto_examine",
            ParamKind::Bool,
            false,
            Some("disable-auto-examine"),
            None,
            "Examine only the bdevs named by bdev_examine (sends bdev_auto_examine=false)",
        ),
        ParamSpec::option(
            "no_auto_examine",
            ParamKind::Bool,
            false,
            Some("no-auto-examine"),
            None,
            "Same as --disable-auto-examine",
        ),
        ParamSpec::option(
            "iobuf_small_cache_size",
            ParamKind::Int,
            false,
            None,
            None,
            "SPDK's small iobuf cache: accepted, no effect in Keel",
        ),
        ParamSpec::option(
            "iobuf_large_cache_size",
            ParamKind::Int,
            false,
            None,
            None,
            "SPDK's large iobuf cache: accepted, no effect in Keel",
        ),
    ],
    cli_rewrite: Some(auto_examine_flag),
};

/// rpc.py's `--disable-auto-examine` (older) and `--no-auto-examine` (newer) send
/// `bdev_auto_examine: false`.
fn auto_examine_flag(m: &mut Map<String, Value>) -> Result<(), String> {
    let disable = m.remove("disable_auto_examine") == Some(Value::Bool(true));
    let no = m.remove("no_auto_examine") == Some(Value::Bool(true));
    if disable || no {
        if m.get("bdev_auto_examine") == Some(&Value::Bool(true)) {
            return Err("--auto-examine contradicts --disable-auto-examine".into());
        }
        m.insert("bdev_auto_examine".into(), Value::Bool(false));
    }
    Ok(())
}

/// `bdev_set_options`'s params (SPDK's names; the sizes are u32 there).
#[derive(Debug, Default, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
struct SetOptions {
    bdev_io_pool_size: Option<u32>,
    bdev_io_cache_size: Option<u32>,
    bdev_auto_examine: Option<bool>,
    iobuf_small_cache_size: Option<u32>,
    iobuf_large_cache_size: Option<u32>,
}

/// Apply `bdev_set_options` (refused once a bdev has registered: the options decide how bdevs
/// are set up, and SPDK takes them only before its bdev layer starts).
fn set_options(params: Option<Value>) -> Result<(), RpcError> {
    let o: SetOptions = keel_rpc::params::parse(params)?;
    if crate::any_bdev_registered_yet() {
        return Err(RpcError {
            code: -1, // SPDK_JSONRPC_ERROR_INVALID_STATE, as the server answers out of state
            message: "bdev_set_options must come before the first bdev is created: start \
                      keel-tgt with --wait-for-rpc and call it before framework_start_init, or \
                      put it first in the config file's bdev section"
                .into(),
        });
    }
    for (k, v) in [
        ("bdev_io_pool_size", o.bdev_io_pool_size),
        ("bdev_io_cache_size", o.bdev_io_cache_size),
        ("iobuf_small_cache_size", o.iobuf_small_cache_size),
        ("iobuf_large_cache_size", o.iobuf_large_cache_size),
    ] {
        if let Some(v) = v {
            log::info!(
                "bdev_set_options: parameter {k}={v} is accepted but has no effect in Keel (it \
                 has no bdev_io pool or iobuf caches)"
            );
        }
    }
    if let Some(on) = o.bdev_auto_examine {
        crate::set_auto_examine(on);
    }
    Ok(())
}

fn rpc_set_options(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        set_options(params)?;
        Ok(Value::Bool(true))
    })
}

static EXAMINE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_examine",
    help: "With auto examine off (bdev_set_options --disable-auto-examine): let lvol and raid \
           examine this bdev now if it exists, else when it is created (bdev_wait_for_examine \
           waits for the result)",
    params: &[ParamSpec::option(
        "name",
        ParamKind::Str,
        true,
        None,
        Some('b'),
        "Name or alias of the bdev",
    )],
    cli_rewrite: None,
};

fn rpc_examine(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        #[derive(Deserialize)]
        #[serde(deny_unknown_fields)]
        struct P {
            name: String,
        }
        let p: P = keel_rpc::params::parse(params)?;
        crate::examine_bdev(&p.name).map_err(|e| match e {
            crate::ExamineRefusal::AutoExamineOn => RpcError::errno(
                libc::EINVAL,
                format!(
                    "bdev_examine {}: auto examine is on, every bdev is examined when it is \
                     created (bdev_set_options --disable-auto-examine turns it off)",
                    p.name
                ),
            ),
            crate::ExamineRefusal::Duplicate => RpcError::errno(
                libc::EEXIST,
                format!("bdev_examine {}: this name was given before", p.name),
            ),
            crate::ExamineRefusal::Claimed(holder) => RpcError::errno(
                libc::EBUSY,
                format!(
                    "bdev_examine {}: the bdev is claimed by {holder}; release it first",
                    p.name
                ),
            ),
        })?;
        Ok(Value::Bool(true))
    })
}

// ---- latency histograms ----

static ENABLE_HISTOGRAM_SPEC: MethodSpec = MethodSpec {
    name: "bdev_enable_histogram",
    help: "Enable (--histogram) or disable (--no-histogram) a bdev's I/O latency histogram \
           (SPDK's layout; read it with bdev_get_histogram)",
    params: &[
        ParamSpec::positional("name", ParamKind::Str, true, "Name of the bdev"),
        ParamSpec::option(
            "enable",
            ParamKind::Bool,
            false,
            Some("histogram"),
            None,
            "Enable the histogram",
        ),
        ParamSpec::option(
            "no_histogram",
            ParamKind::Bool,
            false,
            Some("no-histogram"),
            None,
            "Disable the histogram (dropping its counts)",
        ),
        ParamSpec::option(
            "opc",
            ParamKind::Str,
            false,
            None,
            Some('o'),
            "Only this I/O type: read, write, write_zeroes, unmap, flush, reset (default: all)",
        ),
        ParamSpec::option(
            "granularity",
            ParamKind::Int,
            false,
            None,
            None,
            "log2 of the buckets per power of two (default 7)",
        ),
        ParamSpec::option(
            "min_nsec",
            ParamKind::Int,
            false,
            None,
            None,
            "Lowest latency tracked, ns (default 1000)",
        ),
        ParamSpec::option(
            "max_nsec",
            ParamKind::Int,
            false,
            None,
            None,
            "Highest latency tracked, ns (default 120 s)",
        ),
    ],
    cli_rewrite: Some(histogram_flag),
};

/// rpc.py's `--histogram` / `--no-histogram` (one of them required) become `enable`.
fn histogram_flag(m: &mut Map<String, Value>) -> Result<(), String> {
    let off = m.remove("no_histogram") == Some(Value::Bool(true));
    let on = m.get("enable") == Some(&Value::Bool(true));
    match (on, off) {
        (true, true) => Err("give one of --histogram and --no-histogram".into()),
        (false, false) => Err("--histogram or --no-histogram is required".into()),
        _ => {
            m.insert("enable".into(), Value::Bool(on));
            Ok(())
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnableHistogramParams {
    name: String,
    enable: bool,
    #[serde(default)]
    opc: Option<String>,
    #[serde(default)]
    granularity: Option<u8>,
    #[serde(default)]
    min_nsec: Option<u64>,
    #[serde(default)]
    max_nsec: Option<u64>,
}

/// SPDK's I/O type name `opc` as a Keel I/O type; SPDK's other types are named as such.
fn histogram_io_type(opc: &str) -> Result<IoType, RpcError> {
    if let Some(t) = IoType::ALL.iter().find(|t| t.name() == opc) {
        return Ok(*t);
    }
    let keel: Vec<&str> = IoType::ALL.iter().map(|t| t.name()).collect();
    const SPDK_ONLY: &[&str] = &[
        "nvme_admin",
        "nvme_io",
        "nvme_io_md",
        "zcopy",
        "get_zone_info",
        "zone_management",
        "zone_append",
        "compare",
        "compare_and_write",
        "abort",
        "seek_hole",
        "seek_data",
        "copy",
        "nvme_iov_md",
        "nvme_nssr",
        "write_uncorrectable",
    ];
    let what = if SPDK_ONLY.contains(&opc) {
        "is an SPDK I/O type Keel bdevs do not have"
    } else {
        "is not an I/O type"
    };
    Err(RpcError::errno(
        libc::EINVAL,
        format!(
            "Invalid Io type: opc '{opc}' {what} (one of {})",
            keel.join(", ")
        ),
    ))
}

pub(crate) fn rpc_enable_histogram(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: EnableHistogramParams = keel_rpc::params::parse(params)?;
        let bdev = crate::get_bdev(&p.name).ok_or_else(no_such_device)?;
        let opts = if p.enable {
            let d = HistogramOpts::default();
            Some(HistogramOpts {
                io_type: p.opc.as_deref().map(histogram_io_type).transpose()?,
                granularity: p.granularity.map_or(d.granularity, u32::from),
                min_nsec: p.min_nsec.unwrap_or(d.min_nsec),
                max_nsec: p.max_nsec.unwrap_or(d.max_nsec),
            })
        } else {
            None
        };
        bdev.set_histogram(opts).await.map_err(bdev_error_to_rpc)?;
        log::info!(
            "bdev {}: latency histogram {}",
            bdev.name(),
            if p.enable { "enabled" } else { "disabled" }
        );
        Ok(Value::Bool(true))
    })
}

static GET_HISTOGRAM_SPEC: MethodSpec = MethodSpec {
    name: "bdev_get_histogram",
    help: "Show a bdev's latency histogram: base64 little-endian u64 buckets in SPDK's layout \
           (granularity, min_range, max_range; latencies in ticks of tsc_rate per second)",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "Name of the bdev",
    )],
    cli_rewrite: None,
};

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

/// `bdev_get_histogram`'s answer for `h` (SPDK's fields).
fn histogram_json(h: &Histogram) -> Value {
    json!({
        "histogram": h.encode_base64(),
        "granularity": h.granularity(),
        "min_range": h.min_range(),
        "max_range": h.max_range(),
        "tsc_rate": keel_reactor::tick_rate(),
    })
}

pub(crate) fn rpc_get_histogram(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: NameParams = keel_rpc::params::parse(params)?;
        let bdev = crate::get_bdev(&p.name).ok_or_else(no_such_device)?;
        let h = bdev.histogram().await.ok_or_else(|| {
            RpcError::errno(
                libc::EFAULT,
                format!(
                    "bdev {}: no latency histogram: enable it first \
                     (bdev_enable_histogram {} --histogram)",
                    bdev.name(),
                    bdev.name()
                ),
            )
        })?;
        Ok(histogram_json(&h))
    })
}

/// The `bdev_enable_histogram` call that re-creates `opts` on bdev `name` (SPDK writes name,
/// enable and opc; Keel adds the ranges it was given when they are not the defaults).
fn histogram_config(name: &str, opts: &HistogramOpts) -> Value {
    let d = HistogramOpts::default();
    let mut params = json!({"name": name, "enable": true});
    if let Some(t) = opts.io_type {
        params["opc"] = t.name().into();
    }
    if opts.granularity != d.granularity {
        params["granularity"] = opts.granularity.into();
    }
    if opts.min_nsec != d.min_nsec {
        params["min_nsec"] = opts.min_nsec.into();
    }
    if opts.max_nsec != d.max_nsec {
        params["max_nsec"] = opts.max_nsec.into();
    }
    json!({"method": "bdev_enable_histogram", "params": params})
}

/// The start of the `bdev` section with auto examine off (nothing otherwise, so that saved
/// configs stay as they were): `bdev_set_options` first, then a `bdev_examine` per allowlisted
/// name (as SPDK writes them), so that a replay examines the same bdevs as they are created.
fn examine_config() -> Vec<Value> {
    if crate::auto_examine() {
        return Vec::new();
    }
    let mut calls = vec![json!({
        "method": "bdev_set_options",
        "params": { "bdev_auto_examine": false }
    })];
    calls.extend(
        crate::examine_allowlist()
            .into_iter()
            .map(|name| json!({ "method": "bdev_examine", "params": { "name": name } })),
    );
    calls
}

/// The `bdev` config subsystem: (with auto examine off: `bdev_set_options` and the
/// `bdev_examine` names,) every bdev's creation call in registration order, then the
/// `bdev_set_qos_limit` calls for bdevs with limits, then `bdev_wait_for_examine` (as SPDK
/// writes it) so that a replay finds the bdevs examine brings back (lvols, assembled arrays)
/// before later subsystems name them; then `bdev_enable_histogram` for bdevs with histograms.
pub(crate) fn save_config() -> Vec<Value> {
    let bdevs = crate::registry::all_bdevs();
    let mut calls = examine_config();
    calls.extend(
        bdevs
            .iter()
            .filter_map(|b| b.backend().config_call(b.info()))
            .map(|c| json!({ "method": c.method, "params": c.params })),
    );
    for b in &bdevs {
        let q = b.qos_limits();
        if q.any() {
            let mut params = rate_limits_json(&q);
            params["name"] = b.name().into();
            calls.push(json!({ "method": "bdev_set_qos_limit", "params": params }));
        }
    }
    calls.push(json!({ "method": "bdev_wait_for_examine" }));
    // After the examine wait: a histogram may be on a bdev examine brings back (an lvol).
    for b in &bdevs {
        if let Some(h) = b.histogram_opts() {
            calls.push(histogram_config(b.name(), &h));
        }
    }
    calls
}

#[cfg(test)]
mod tests {
    use super::*;

    fn map(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn rpc_py_auto_examine_flags_send_false() {
        for flag in ["disable_auto_examine", "no_auto_examine"] {
            let mut p = map(json!({ flag: true }));
            auto_examine_flag(&mut p).unwrap();
            assert_eq!(p, map(json!({"bdev_auto_examine": false})), "{flag}");
        }
        let mut p = map(json!({"bdev_auto_examine": true}));
        auto_examine_flag(&mut p).unwrap();
        assert_eq!(p, map(json!({"bdev_auto_examine": true})));
        let mut p = map(json!({"bdev_auto_examine": true, "no_auto_examine": true}));
        assert!(auto_examine_flag(&mut p).is_err());
    }

    #[test]
    fn set_options_takes_spdk_names_only() {
        let o: SetOptions = keel_rpc::params::parse(Some(json!({
            "bdev_io_pool_size": 65535, "bdev_io_cache_size": 256, "bdev_auto_examine": false,
            "iobuf_small_cache_size": 128, "iobuf_large_cache_size": 16
        })))
        .unwrap();
        assert_eq!(o.bdev_auto_examine, Some(false));
        let e = keel_rpc::params::parse::<SetOptions>(Some(json!({"auto_examine": false})))
            .unwrap_err();
        assert!(e.message.contains("unknown field `auto_examine`"), "{e:?}");
        let e = keel_rpc::params::parse::<SetOptions>(Some(json!({"bdev_io_pool_size": -1})))
            .unwrap_err();
        assert!(e.message.contains("bdev_io_pool_size"), "{e:?}");
    }

    #[test]
    fn total_size_becomes_num_blocks() {
        let mut p = map(json!({"total_size": 64, "block_size": 512}));
        total_size_to_num_blocks(&mut p).unwrap();
        assert_eq!(p.get("num_blocks"), Some(&json!(64 * 2048)));
        assert!(!p.contains_key("total_size"));
        let mut p = map(json!({"total_size": 0.5, "block_size": 4096}));
        total_size_to_num_blocks(&mut p).unwrap();
        assert_eq!(p["num_blocks"], json!(128));
    }

    #[test]
    fn total_size_errors_are_clear() {
        for bad in [
            json!({"total_size": 0, "block_size": 512}),
            json!({"total_size": -1, "block_size": 512}),
            json!({"total_size": "x", "block_size": 512}),
            json!({"total_size": 1, "block_size": 0}),
            json!({"total_size": 1}),
            json!({"total_size": 1e30, "block_size": 512}),
            json!({"total_size": 0.0001, "block_size": 4096}),
            json!({"block_size": 512}),
        ] {
            assert!(
                total_size_to_num_blocks(&mut map(bad.clone())).is_err(),
                "{bad}"
            );
        }
        let mut p = map(json!({"num_blocks": 8, "block_size": 512}));
        assert!(total_size_to_num_blocks(&mut p).is_ok());
    }

    #[test]
    fn errors_map_to_negative_errno() {
        let e = bdev_error_to_rpc(BdevError::NotFound("x".into()));
        assert_eq!(e.code, -libc::ENODEV);
        assert!(e.message.contains('x'));
        assert_eq!(
            bdev_error_to_rpc(BdevError::Exists("x".into())).code,
            -libc::EEXIST
        );
        assert_eq!(no_such_device().code, -19);
    }

    #[test]
    fn uuid_param() {
        assert_eq!(parse_uuid(None).unwrap(), None);
        let u = Uuid::new_random();
        assert_eq!(parse_uuid(Some(&u.to_string())).unwrap(), Some(u));
        assert_eq!(parse_uuid(Some("nope")).unwrap_err().code, -32602);
    }
}
