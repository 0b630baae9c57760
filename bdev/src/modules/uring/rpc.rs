//! JSON-RPC methods of the uring module (`bdev_uring_*`, and SPDK's `bdev_aio_*` served by it),
//! with SPDK's names, params and CLI arguments.

use super::{Flavor, UringConfig};
use crate::rpc::{bdev_error_to_rpc as rpc_error, parse_uuid};
use keel_rpc::{
    params, register_method, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct UringCreateParams {
    filename: String,
    name: String,
    #[serde(default)]
    block_size: Option<u32>,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AioCreateParams {
    filename: String,
    name: String,
    #[serde(default)]
    block_size: Option<u32>,
    #[serde(default)]
    readonly: bool,
    #[serde(default)]
    fallocate: bool,
    /// SPDK's aio "nowait" submission flag: io_uring never blocks the reactor, so Keel
    /// accepts it and has nothing to change.
    #[serde(default)]
    #[allow(dead_code)]
    nowait: bool,
    #[serde(default)]
    uuid: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// `block_size` 0 (what older rpc.py sends when none is given) means "detect".
fn block_size(bs: Option<u32>) -> Option<u32> {
    bs.filter(|&b| b != 0)
}

impl UringCreateParams {
    fn config(self) -> Result<UringConfig, RpcError> {
        Ok(UringConfig {
            uuid: parse_uuid(self.uuid.as_deref())?,
            filename: self.filename,
            name: self.name,
            block_size: block_size(self.block_size),
            flavor: Flavor::Uring,
        })
    }
}

impl AioCreateParams {
    fn config(self) -> Result<UringConfig, RpcError> {
        Ok(UringConfig {
            uuid: parse_uuid(self.uuid.as_deref())?,
            filename: self.filename,
            name: self.name,
            block_size: block_size(self.block_size),
            flavor: Flavor::Aio {
                readonly: self.readonly,
                fallocate: self.fallocate,
            },
        })
    }
}

static URING_CREATE: MethodSpec = MethodSpec {
    name: "bdev_uring_create",
    help: "Create a bdev with io_uring backend on a file or block device.",
    params: &[
        ParamSpec::positional(
            "filename",
            ParamKind::Str,
            true,
            "Path to device or file (ex: /dev/nvme0n1)",
        ),
        ParamSpec::positional("name", ParamKind::Str, true, "bdev name"),
        ParamSpec::positional(
            "block_size",
            ParamKind::Int,
            false,
            "Block size for this bdev",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            None,
            Some('u'),
            "UUID of the bdev",
        ),
    ],
    cli_rewrite: None,
};

static URING_DELETE: MethodSpec = MethodSpec {
    name: "bdev_uring_delete",
    help: "Delete a uring bdev.",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "uring bdev name",
    )],
    cli_rewrite: None,
};

static AIO_CREATE: MethodSpec = MethodSpec {
    name: "bdev_aio_create",
    help: "Add a bdev with aio backend (served by Keel's io_uring module).",
    params: &[
        ParamSpec::positional(
            "filename",
            ParamKind::Str,
            true,
            "Path to device or file (ex: /dev/sda)",
        ),
        ParamSpec::positional("name", ParamKind::Str, true, "Block device name"),
        ParamSpec::positional(
            "block_size",
            ParamKind::Int,
            false,
            "Block size for this bdev",
        ),
        ParamSpec::option(
            "readonly",
            ParamKind::Bool,
            false,
            None,
            Some('r'),
            "Set this bdev as read-only",
        ),
        ParamSpec::option(
            "fallocate",
            ParamKind::Bool,
            false,
            None,
            None,
            "Support unmap/writezeros by fallocate",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            None,
            Some('u'),
            "UUID of the bdev (optional)",
        ),
    ],
    cli_rewrite: None,
};

static AIO_DELETE: MethodSpec = MethodSpec {
    name: "bdev_aio_delete",
    help: "Delete an aio disk.",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "aio bdev name",
    )],
    cli_rewrite: None,
};

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {
    register_method(&URING_CREATE, uring_create_handler);
    register_method(&URING_DELETE, uring_delete_handler);
    register_method(&AIO_CREATE, aio_create_handler);
    register_method(&AIO_DELETE, aio_delete_handler);
}

fn create(cfg: UringConfig) -> Result<Value, RpcError> {
    let bdev = super::create(&cfg).map_err(rpc_error)?;
    Ok(json!(bdev.name()))
}

fn uring_create_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move { create(params::parse::<UringCreateParams>(params)?.config()?) })
}

fn aio_create_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move { create(params::parse::<AioCreateParams>(params)?.config()?) })
}

fn uring_delete_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = params::parse(params)?;
        super::delete(&p.name, false).await.map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn aio_delete_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = params::parse(params)?;
        super::delete(&p.name, true).await.map_err(rpc_error)?;
        Ok(json!(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uring_params_decode() {
        let c = params::parse::<UringCreateParams>(Some(json!({
            "filename": "/dev/nvme0n1", "name": "u0", "block_size": 4096
        })))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(
            (c.filename.as_str(), c.name.as_str()),
            ("/dev/nvme0n1", "u0")
        );
        assert_eq!((c.block_size, c.flavor), (Some(4096), Flavor::Uring));
        let c = params::parse::<UringCreateParams>(Some(json!({
            "filename": "/f", "name": "u0", "block_size": 0
        })))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(c.block_size, None, "0 means detect");
        let e = params::parse::<UringCreateParams>(Some(
            json!({"filename": "/f", "name": "u", "uuid": "x"}),
        ))
        .unwrap()
        .config()
        .unwrap_err();
        assert_eq!(e.code, -32602);
    }

    #[test]
    fn aio_params_decode() {
        let c = params::parse::<AioCreateParams>(Some(json!({
            "filename": "/f", "name": "a0", "readonly": true
        })))
        .unwrap()
        .config()
        .unwrap();
        assert_eq!(
            c.flavor,
            Flavor::Aio {
                readonly: true,
                fallocate: false
            }
        );
        assert!(params::parse::<AioCreateParams>(Some(json!({"filename": "/f"}))).is_err());
        assert!(params::parse::<AioCreateParams>(Some(json!({
            "filename": "/f", "name": "a", "block_size": -1
        })))
        .is_err());
    }

    #[test]
    fn cli_matches_rpc_py() {
        let pos: Vec<_> = AIO_CREATE
            .params
            .iter()
            .filter(|p| p.positional)
            .map(|p| p.name)
            .collect();
        assert_eq!(pos, ["filename", "name", "block_size"]);
        assert!(URING_CREATE
            .params
            .iter()
            .any(|p| p.name == "uuid" && p.short == Some('u')));
    }
}
