//! JSON-RPC methods of the delay module, with SPDK's names, params and CLI flags.

use super::DelayConfig;
use crate::rpc::{bdev_error_to_rpc as rpc_error, parse_uuid};
use keel_rpc::{
    params, register_method, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    base_bdev_name: String,
    name: String,
    avg_read_latency: u64,
    p99_read_latency: u64,
    avg_write_latency: u64,
    p99_write_latency: u64,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UpdateLatencyParams {
    delay_bdev_name: String,
    latency_type: String,
    latency_us: u64,
}

static CREATE: MethodSpec = MethodSpec {
    name: "bdev_delay_create",
    help: "Add a delay bdev on an existing bdev: reads and writes complete after the given \
           extra latency (microseconds); one I/O in a hundred gets the p99 latency.",
    params: &[
        ParamSpec::option(
            "base_bdev_name",
            ParamKind::Str,
            true,
            None,
            Some('b'),
            "Name of the existing bdev",
        ),
        ParamSpec::option(
            "name",
            ParamKind::Str,
            true,
            None,
            Some('d'),
            "Name of the delay bdev",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            None,
            Some('u'),
            "UUID of the bdev (optional)",
        ),
        ParamSpec::option(
            "avg_read_latency",
            ParamKind::Int,
            true,
            None,
            Some('r'),
            "Average latency to apply before completing read ops (in microseconds)",
        ),
        ParamSpec::option(
            "p99_read_latency",
            ParamKind::Int,
            true,
            Some("nine-nine-read-latency"),
            Some('t'),
            "Latency to apply to 1 in 100 read ops (in microseconds)",
        ),
        ParamSpec::option(
            "avg_write_latency",
            ParamKind::Int,
            true,
            None,
            Some('w'),
            "Average latency to apply before completing write ops (in microseconds)",
        ),
        ParamSpec::option(
            "p99_write_latency",
            ParamKind::Int,
            true,
            Some("nine-nine-write-latency"),
            Some('n'),
            "Latency to apply to 1 in 100 write ops (in microseconds)",
        ),
    ],
    cli_rewrite: None,
};

static DELETE: MethodSpec = MethodSpec {
    name: "bdev_delay_delete",
    help: "Delete a delay bdev (its base bdev stays).",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "delay bdev name",
    )],
    cli_rewrite: None,
};

static UPDATE_LATENCY: MethodSpec = MethodSpec {
    name: "bdev_delay_update_latency",
    help: "Update one of the latency values of a delay bdev.",
    params: &[
        ParamSpec::positional(
            "delay_bdev_name",
            ParamKind::Str,
            true,
            "The name of the given delay bdev",
        ),
        ParamSpec::positional(
            "latency_type",
            ParamKind::Str,
            true,
            "one of: avg_read, avg_write, p99_read, p99_write",
        ),
        ParamSpec::positional(
            "latency_us",
            ParamKind::Int,
            true,
            "new latency value in microseconds",
        ),
    ],
    cli_rewrite: None,
};

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {
    register_method(&CREATE, create_handler);
    register_method(&DELETE, delete_handler);
    register_method(&UPDATE_LATENCY, update_latency_handler);
}

fn create_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateParams = params::parse(params)?;
        let cfg = DelayConfig {
            base_bdev_name: p.base_bdev_name,
            name: p.name,
            avg_read_latency: p.avg_read_latency,
            p99_read_latency: p.p99_read_latency,
            avg_write_latency: p.avg_write_latency,
            p99_write_latency: p.p99_write_latency,
            uuid: parse_uuid(p.uuid.as_deref())?,
        };
        let bdev = super::create(&cfg).map_err(rpc_error)?;
        Ok(json!(bdev.name()))
    })
}

fn delete_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = params::parse(params)?;
        super::delete(&p.name).await.map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn update_latency_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: UpdateLatencyParams = params::parse(params)?;
        super::update_latency(&p.delay_bdev_name, &p.latency_type, p.latency_us).map_err(|e| {
            match e {
                crate::BdevError::Invalid(m) => RpcError::invalid_params(m),
                e => rpc_error(e),
            }
        })?;
        Ok(json!(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_params_decode_like_spdk() {
        let p: CreateParams = params::parse(Some(json!({
            "base_bdev_name": "Null0", "name": "delay0",
            "avg_read_latency": 10, "p99_read_latency": 50,
            "avg_write_latency": 30, "p99_write_latency": 90
        })))
        .unwrap();
        assert_eq!(
            (p.base_bdev_name.as_str(), p.name.as_str()),
            ("Null0", "delay0")
        );
        assert_eq!(
            [
                p.avg_read_latency,
                p.p99_read_latency,
                p.avg_write_latency,
                p.p99_write_latency
            ],
            [10, 50, 30, 90]
        );
        assert!(p.uuid.is_none());
    }

    #[test]
    fn bad_params_name_the_field() {
        let e = params::parse::<CreateParams>(Some(json!({"base_bdev_name": "x", "name": "y"})))
            .unwrap_err();
        assert_eq!(e.code, -32602);
        assert!(e.message.contains("avg_read_latency"), "{}", e.message);
        let e = params::parse::<UpdateLatencyParams>(Some(json!({
            "delay_bdev_name": "d", "latency_type": "avg_read", "latency_us": -5
        })))
        .unwrap_err();
        assert_eq!(e.code, -32602);
        let e = params::parse::<DeleteParams>(Some(json!({"name": "d", "bogus": 1}))).unwrap_err();
        assert!(e.message.contains("bogus"), "{}", e.message);
    }

    #[test]
    fn cli_specs_mirror_rpc_py() {
        let long_of = |n: &str| CREATE.params.iter().find(|p| p.name == n).unwrap();
        assert_eq!(
            long_of("p99_read_latency").long,
            Some("nine-nine-read-latency")
        );
        assert_eq!(long_of("p99_write_latency").short, Some('n'));
        assert_eq!(long_of("base_bdev_name").short, Some('b'));
        assert!(CREATE.params.iter().filter(|p| p.required).count() == 6);
        assert!(UPDATE_LATENCY.params.iter().all(|p| p.positional));
    }
}
