//! The `null` bdev module: a device that stores nothing. Writes are discarded and reads
//! complete without touching the buffers (SPDK's null bdev); every I/O type is accepted.
//! Useful to measure the bdev layer and the transports without a medium.

use crate::rpc::{bdev_error_to_rpc, delete_of_module, parse_uuid};
use crate::{
    BackendChannel, Bdev, BdevBackend, BdevError, BdevInfo, ConfigCall, IoRef, IoStatus, IoType,
    Uuid,
};
use keel_rpc::{HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::Arc;

/// SPDK's product name for this module.
pub const PRODUCT_NAME: &str = "Null disk";

struct NullBackend;

impl BdevBackend for NullBackend {
    fn product_name(&self) -> &'static str {
        PRODUCT_NAME
    }
    fn io_type_supported(&self, _io_type: IoType) -> bool {
        true
    }
    fn unmap_reads_zeroes(&self) -> bool {
        // Reads do not touch the buffers: nothing reads back as zeroes.
        false
    }
    fn create_channel(&self) -> Result<Box<dyn BackendChannel>, BdevError> {
        Ok(Box::new(NullChannel))
    }
    fn config_call(&self, info: &BdevInfo) -> Option<ConfigCall> {
        Some(ConfigCall {
            method: "bdev_null_create".into(),
            params: json!({
                "name": info.name,
                "num_blocks": info.num_blocks,
                "block_size": info.block_size,
                "uuid": info.uuid.to_string(),
            }),
        })
    }
}

struct NullChannel;

impl BackendChannel for NullChannel {
    #[inline]
    fn submit(&mut self, io: IoRef) {
        io.complete(IoStatus::Success);
    }
}

/// Create and register a null bdev. The block size must be a multiple of 512 (and a power of
/// two); a random UUID is made when `uuid` is `None`.
pub fn create(
    name: &str,
    num_blocks: u64,
    block_size: u32,
    uuid: Option<Uuid>,
) -> Result<Bdev, BdevError> {
    if block_size < 512 || !block_size.is_multiple_of(512) {
        return Err(BdevError::Invalid(format!(
            "Block size {block_size} is not a multiple of 512"
        )));
    }
    let info = BdevInfo {
        name: name.to_owned(),
        aliases: Vec::new(),
        uuid: uuid.unwrap_or_else(Uuid::new_random),
        block_size,
        num_blocks,
    };
    crate::register(info, Arc::new(NullBackend))
}

/// Unregister a null bdev (fails with [`BdevError::NotFound`] for bdevs of other modules).
pub async fn delete(name: &str) -> Result<(), BdevError> {
    delete_of_module(name, PRODUCT_NAME).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    num_blocks: u64,
    block_size: u32,
    #[serde(default)]
    uuid: Option<String>,
    /// SPDK options accepted for config compatibility when they ask for nothing special.
    #[serde(default)]
    md_size: u32,
    #[serde(default)]
    dif_type: u32,
    #[serde(default)]
    dif_is_head_of_md: bool,
    #[serde(default)]
    physical_block_size: Option<u32>,
    #[serde(default)]
    dif_pi_format: u32,
    /// SPDK's I/O-size hints (advertised to hosts by SPDK; Keel reports none of them).
    #[serde(default)]
    preferred_write_alignment: u32,
    #[serde(default)]
    preferred_write_granularity: u32,
    #[serde(default)]
    optimal_write_size: u32,
    #[serde(default)]
    preferred_unmap_alignment: u32,
    #[serde(default)]
    preferred_unmap_granularity: u32,
}

impl CreateParams {
    /// SPDK's metadata and DIF options are refused (Keel has neither); its write/unmap size
    /// hints are accepted and logged as not acted on (a null bdev keeps no data, and Keel does
    /// not advertise such hints to hosts).
    fn check_spdk_options(&self) -> Result<(), RpcError> {
        if self.md_size != 0 || self.dif_type != 0 || self.dif_is_head_of_md {
            return Err(RpcError::errno(
                libc::EINVAL,
                "md_size, dif_type, dif_is_head_of_md: metadata and DIF are not supported by \
                 Keel's null bdev",
            ));
        }
        super::refuse_dif_pi_format("null", self.dif_pi_format)?;
        for (name, v) in [
            ("preferred_write_alignment", self.preferred_write_alignment),
            (
                "preferred_write_granularity",
                self.preferred_write_granularity,
            ),
            ("optimal_write_size", self.optimal_write_size),
            ("preferred_unmap_alignment", self.preferred_unmap_alignment),
            (
                "preferred_unmap_granularity",
                self.preferred_unmap_granularity,
            ),
        ] {
            if v != 0 {
                log::info!(
                    "bdev_null_create {}: {name} {v} is a hint Keel accepts but does not \
                     advertise to hosts",
                    self.name
                );
            }
        }
        Ok(())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
}

/// rpc.py: `bdev_null_create NAME total_size block_size [-u UUID]` (size in MiB).
static CREATE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_null_create",
    help: "Create a null bdev (discards writes, reads leave buffers untouched); prints its name",
    params: &[
        ParamSpec::positional("name", ParamKind::Str, true, "Name of the bdev"),
        ParamSpec::positional(
            "total_size",
            ParamKind::Float,
            false,
            "Size of the bdev in MiB (the client sends num_blocks)",
        ),
        ParamSpec::positional(
            "block_size",
            ParamKind::Int,
            true,
            "Block size in bytes (a multiple of 512)",
        ),
        ParamSpec::option(
            "num_blocks",
            ParamKind::Int,
            false,
            Some("num-blocks"),
            None,
            "Number of blocks (instead of total_size)",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            Some("uuid"),
            Some('u'),
            "UUID of the bdev (random when absent)",
        ),
        ParamSpec::option(
            "dif_pi_format",
            ParamKind::Int,
            false,
            None,
            Some('f'),
            "Protection information format: Keel has no DIF, only 0 is accepted",
        ),
        ParamSpec::option(
            "preferred_write_alignment",
            ParamKind::Int,
            false,
            None,
            Some('a'),
            "Hint (blocks): accepted, not advertised to hosts by Keel",
        ),
        ParamSpec::option(
            "preferred_write_granularity",
            ParamKind::Int,
            false,
            None,
            Some('g'),
            "Hint (blocks): accepted, not advertised to hosts by Keel",
        ),
        ParamSpec::option(
            "optimal_write_size",
            ParamKind::Int,
            false,
            None,
            Some('s'),
            "Hint (blocks): accepted, not advertised to hosts by Keel",
        ),
        ParamSpec::option(
            "preferred_unmap_alignment",
            ParamKind::Int,
            false,
            None,
            Some('c'),
            "Hint (blocks): accepted, not advertised to hosts by Keel",
        ),
        ParamSpec::option(
            "preferred_unmap_granularity",
            ParamKind::Int,
            false,
            None,
            Some('r'),
            "Hint (blocks): accepted, not advertised to hosts by Keel",
        ),
    ],
    cli_rewrite: Some(crate::rpc::total_size_to_num_blocks),
};

/// rpc.py: `bdev_null_delete NAME`.
static DELETE_SPEC: MethodSpec = MethodSpec {
    name: "bdev_null_delete",
    help: "Delete a null bdev",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "Name of the null bdev",
    )],
    cli_rewrite: None,
};

fn rpc_create(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateParams = keel_rpc::params::parse(params)?;
        p.check_spdk_options()?;
        if p.physical_block_size
            .is_some_and(|pbs| pbs != 0 && pbs % p.block_size != 0)
        {
            return Err(RpcError::invalid_params(
                "physical_block_size must be a multiple of block_size",
            ));
        }
        let uuid = parse_uuid(p.uuid.as_deref())?;
        let bdev = create(&p.name, p.num_blocks, p.block_size, uuid).map_err(bdev_error_to_rpc)?;
        Ok(Value::String(bdev.name().to_owned()))
    })
}

fn rpc_delete(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = keel_rpc::params::parse(params)?;
        delete(&p.name).await.map_err(bdev_error_to_rpc)?;
        Ok(Value::Bool(true))
    })
}

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {
    keel_rpc::register_method(&CREATE_SPEC, rpc_create);
    keel_rpc::register_method(&DELETE_SPEC, rpc_delete);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spdk_dif_pi_format_and_size_hints() {
        let parse = |v: Value| keel_rpc::params::parse::<CreateParams>(Some(v)).unwrap();
        let p = parse(serde_json::json!({
            "name": "N", "num_blocks": 8, "block_size": 512, "dif_pi_format": 0,
            "preferred_write_alignment": 8, "preferred_write_granularity": 8,
            "optimal_write_size": 64, "preferred_unmap_alignment": 8,
            "preferred_unmap_granularity": 8
        }));
        assert!(p.check_spdk_options().is_ok());
        let e = parse(serde_json::json!({
            "name": "N", "num_blocks": 8, "block_size": 512, "dif_pi_format": 1
        }))
        .check_spdk_options()
        .unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        assert!(e.message.contains("dif_pi_format 1"), "{}", e.message);
    }

    #[test]
    fn create_validates_block_size() {
        assert!(matches!(
            create("null_t_bs", 8, 100, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            create("null_t_bs", 8, 0, None),
            Err(BdevError::Invalid(_))
        ));
        assert!(matches!(
            create("null_t_bs", 0, 512, None),
            Err(BdevError::Invalid(_))
        ));
    }

    #[test]
    fn promises_no_zeroes_after_unmap() {
        assert!(!NullBackend.unmap_reads_zeroes());
    }

    #[test]
    fn config_call_recreates() {
        let info = BdevInfo {
            name: "n".into(),
            aliases: vec![],
            uuid: Uuid::new_random(),
            block_size: 4096,
            num_blocks: 10,
        };
        let c = NullBackend.config_call(&info).unwrap();
        assert_eq!(c.method, "bdev_null_create");
        assert_eq!(c.params["num_blocks"], 10);
        assert_eq!(c.params["block_size"], 4096);
        assert_eq!(c.params["uuid"], info.uuid.to_string());
    }
}
