//! JSON-RPC methods of the error module, with SPDK's names, params and CLI flags.

use super::{ErrorKind, InjectTarget};
use crate::rpc::{bdev_error_to_rpc as rpc_error, parse_uuid};
use keel_rpc::{
    params, register_method, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError,
};
use serde::Deserialize;
use serde_json::{json, Value};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    base_name: String,
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
struct InjectParams {
    name: String,
    io_type: String,
    #[serde(default)]
    error_type: Option<String>,
    #[serde(default)]
    nvme_sct: Option<u8>,
    #[serde(default)]
    nvme_sc: Option<u8>,
    #[serde(default)]
    num: Option<u32>,
    #[serde(default)]
    queue_depth: Option<u64>,
    #[serde(default)]
    corrupt_offset: Option<u64>,
    #[serde(default)]
    corrupt_value: Option<u64>,
}

/// A validated `bdev_error_inject_error` request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Injection {
    target: InjectTarget,
    kind: ErrorKind,
    num: u32,
    corrupt_offset: u64,
    corrupt_value: u8,
}

impl InjectParams {
    fn validate(&self) -> Result<Injection, RpcError> {
        let target = InjectTarget::parse(&self.io_type).map_err(RpcError::invalid_params)?;
        let nvme = (self.nvme_sct.unwrap_or(0), self.nvme_sc.unwrap_or(0));
        let kind = match (&self.error_type, target) {
            (Some(t), _) if t == "nvme_failure" => ErrorKind::nvme(nvme.0, nvme.1, target)
                .map_err(|m| RpcError::errno(libc::EINVAL, m))?,
            (Some(t), _) => ErrorKind::parse(t).map_err(RpcError::invalid_params)?,
            // `clear` needs no error type.
            (None, InjectTarget::Clear) => ErrorKind::Failure,
            (None, _) => {
                return Err(RpcError::invalid_params(
                    "Invalid parameters: missing field `error_type`",
                ))
            }
        };
        if !matches!(kind, ErrorKind::Complete(_)) && nvme != (0, 0) {
            return Err(RpcError::invalid_params(
                "nvme_sct and nvme_sc apply only to error_type nvme_failure",
            ));
        }
        if self.queue_depth.is_some_and(|q| q > 0) {
            return Err(RpcError::invalid_params(
                "queue_depth is not supported by Keel",
            ));
        }
        let corrupt_value = u8::try_from(self.corrupt_value.unwrap_or(0))
            .map_err(|_| RpcError::invalid_params("corrupt_value must be between 1 and 255"))?;
        if kind == ErrorKind::CorruptData && corrupt_value == 0 && target != InjectTarget::Clear {
            return Err(RpcError::errno(
                libc::EINVAL,
                "corrupt_value should be non-zero (XOR with 0 corrupts nothing)",
            ));
        }
        Ok(Injection {
            target,
            kind,
            num: self.num.unwrap_or(1),
            corrupt_offset: self.corrupt_offset.unwrap_or(0),
            corrupt_value,
        })
    }
}

static CREATE: MethodSpec = MethodSpec {
    name: "bdev_error_create",
    help: "Add an error-injection bdev EE_<base_name> on an existing bdev.",
    params: &[
        ParamSpec::positional("base_name", ParamKind::Str, true, "base bdev name"),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            None,
            None,
            "UUID for this bdev",
        ),
    ],
    cli_rewrite: None,
};

static DELETE: MethodSpec = MethodSpec {
    name: "bdev_error_delete",
    help: "Delete an error bdev (its base bdev stays).",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "error bdev name",
    )],
    cli_rewrite: None,
};

static INJECT: MethodSpec = MethodSpec {
    name: "bdev_error_inject_error",
    help: "Make the next I/Os of a type fail (with an NVMe status: nvme_failure), hang \
           (pending) or return corrupted data; \
           io_type 'clear' removes every injection and releases pending I/Os.",
    params: &[
        ParamSpec::positional(
            "name",
            ParamKind::Str,
            true,
            "the name of the error injection bdev",
        ),
        ParamSpec::positional(
            "io_type",
            ParamKind::Str,
            true,
            "io_type: 'clear' 'read' 'write' 'unmap' 'flush' 'write_zeroes' 'all'",
        ),
        ParamSpec::positional(
            "error_type",
            ParamKind::Str,
            true,
            "error_type: 'failure' 'nvme_failure' 'pending' 'corrupt_data'",
        ),
        ParamSpec::option(
            "nvme_sct",
            ParamKind::Int,
            false,
            None,
            None,
            "nvme_failure: NVMe status code type; Keel gives 0/0x07 (abort), 0/0x81 (capacity \
             exceeded), 2/0x85 (compare failure), and per io_type 2/0x81 (read), 2/0x80 (write), \
             0/0x06 (unmap, flush, write_zeroes); others are refused",
        ),
        ParamSpec::option(
            "nvme_sc",
            ParamKind::Int,
            false,
            None,
            None,
            "nvme_failure: NVMe status code (see nvme_sct)",
        ),
        ParamSpec::option(
            "num",
            ParamKind::Int,
            false,
            None,
            Some('n'),
            "the number of commands you want to fail (default 1)",
        ),
        ParamSpec::option(
            "queue_depth",
            ParamKind::Int,
            false,
            None,
            Some('q'),
            "the queue depth at which to trigger the error (not supported)",
        ),
        ParamSpec::option(
            "corrupt_offset",
            ParamKind::Int,
            false,
            None,
            Some('o'),
            "the offset in bytes to xor with corrupt_value",
        ),
        ParamSpec::option(
            "corrupt_value",
            ParamKind::Int,
            false,
            None,
            Some('v'),
            "the value for xor (1-255, 0 is invalid)",
        ),
    ],
    cli_rewrite: None,
};

/// Register this module's JSON-RPC methods.
pub fn register_rpcs() {
    register_method(&CREATE, create_handler);
    register_method(&DELETE, delete_handler);
    register_method(&INJECT, inject_handler);
}

fn create_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateParams = params::parse(params)?;
        let uuid = parse_uuid(p.uuid.as_deref())?;
        super::create(&p.base_name, uuid).map_err(rpc_error)?;
        // SPDK answers `true` here (the name is always `EE_<base_name>`).
        Ok(json!(true))
    })
}

fn delete_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = params::parse(params)?;
        super::delete(&p.name).await.map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn inject_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: InjectParams = params::parse(params)?;
        let i = p.validate()?;
        super::inject_error(
            &p.name,
            i.target,
            i.kind,
            i.num,
            i.corrupt_offset,
            i.corrupt_value,
        )
        .map_err(rpc_error)?;
        Ok(json!(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::IoType;

    fn inject(v: Value) -> Result<Injection, RpcError> {
        params::parse::<InjectParams>(Some(v))?.validate()
    }

    #[test]
    fn inject_defaults_like_spdk() {
        let i =
            inject(json!({"name": "EE_M0", "io_type": "write", "error_type": "failure"})).unwrap();
        assert_eq!(i.target, InjectTarget::Io(IoType::Write));
        assert_eq!(
            (i.kind, i.num, i.corrupt_offset, i.corrupt_value),
            (ErrorKind::Failure, 1, 0, 0)
        );
        let i = inject(json!({
            "name": "EE_M0", "io_type": "read", "error_type": "corrupt_data",
            "num": 5, "corrupt_offset": 100, "corrupt_value": 255
        }))
        .unwrap();
        assert_eq!((i.num, i.corrupt_offset, i.corrupt_value), (5, 100, 255));
        let i = inject(json!({"name": "EE_M0", "io_type": "clear"})).unwrap();
        assert_eq!(i.target, InjectTarget::Clear);
    }

    #[test]
    fn inject_rejects_bad_input() {
        let e = inject(json!({"name": "E", "io_type": "read"})).unwrap_err();
        assert!(e.message.contains("error_type"), "{}", e.message);
        let e =
            inject(json!({"name": "E", "io_type": "bogus", "error_type": "failure"})).unwrap_err();
        assert_eq!(e.code, -32602);
        let e = inject(json!({"name": "E", "io_type": "read", "error_type": "nomem"})).unwrap_err();
        assert!(e.message.contains("nomem"));
        let e = inject(json!({"name": "E", "io_type": "read", "error_type": "corrupt_data"}))
            .unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        let e = inject(json!({
            "name": "E", "io_type": "read", "error_type": "corrupt_data", "corrupt_value": 256
        }))
        .unwrap_err();
        assert!(e.message.contains("corrupt_value"));
        let e = inject(json!({
            "name": "E", "io_type": "read", "error_type": "failure", "queue_depth": 4
        }))
        .unwrap_err();
        assert!(e.message.contains("queue_depth"));
        let e = params::parse::<InjectParams>(Some(json!({
            "name": "E", "io_type": "read", "error_type": "failure", "num": -1
        })))
        .unwrap_err();
        assert_eq!(e.code, -32602);
    }

    #[test]
    fn inject_takes_spdk_nvme_status() {
        let i = inject(json!({
            "name": "E", "io_type": "write", "error_type": "nvme_failure",
            "nvme_sct": 2, "nvme_sc": 0x80
        }))
        .unwrap();
        assert_eq!(i.kind, ErrorKind::Complete(crate::IoStatus::IoError));
        let i = inject(json!({
            "name": "E", "io_type": "all", "error_type": "nvme_failure",
            "nvme_sct": 0, "nvme_sc": 7
        }))
        .unwrap();
        assert_eq!(i.kind, ErrorKind::Complete(crate::IoStatus::Aborted));
        // SPDK's default 0/0 is success, not an error: refused, naming the parameters.
        let e = inject(json!({"name": "E", "io_type": "read", "error_type": "nvme_failure"}))
            .unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        assert!(e.message.contains("nvme_sct=0 nvme_sc=0"), "{}", e.message);
        let e = inject(json!({
            "name": "E", "io_type": "read", "error_type": "failure", "nvme_sc": 4
        }))
        .unwrap_err();
        assert!(e.message.contains("nvme_failure"), "{}", e.message);
        // rpc.py sends them as null when not given.
        let i = inject(json!({
            "name": "E", "io_type": "read", "error_type": "failure",
            "nvme_sct": null, "nvme_sc": null
        }))
        .unwrap();
        assert_eq!(i.kind, ErrorKind::Failure);
    }

    #[test]
    fn create_params_decode() {
        let p: CreateParams = params::parse(Some(json!({"base_name": "Malloc0"}))).unwrap();
        assert_eq!(p.base_name, "Malloc0");
        assert!(params::parse::<CreateParams>(Some(json!({}))).is_err());
        assert_eq!(INJECT.params.iter().filter(|p| p.positional).count(), 3);
    }
}
