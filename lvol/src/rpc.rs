//! The `bdev_lvol_*` JSON-RPC methods, with SPDK's names and params (rpc.py works unchanged).

use super::format;
use super::lifecycle::{self, ClearMethod};
use super::store::{self, find, find_volume, lock, Volume};
use super::volume;
use keel_bdev::rpc::bdev_error_to_rpc as rpc_error;
use keel_bdev::BdevError;
use keel_rpc::{
    params, register_method, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;
use std::sync::Arc;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLvstore {
    bdev_name: String,
    lvs_name: String,
    #[serde(default)]
    cluster_sz: Option<u64>,
    #[serde(default)]
    clear_method: Option<String>,
    #[serde(default)]
    num_md_pages_per_cluster_ratio: Option<u64>,
    #[serde(default)]
    md_page_size: Option<u64>,
}

impl CreateLvstore {
    /// SPDK's metadata-layout parameters, which Keel's lvstore format fixes (FORMAT: 4096-byte
    /// metadata pages, the metadata area sized from the bdev): their defaults are accepted,
    /// anything else refused rather than ignored (it would change the on-disk layout).
    fn check_layout(&self) -> Result<(), RpcError> {
        if let Some(n) = self.md_page_size.filter(|&n| n != format::PAGE_SIZE as u64) {
            return Err(RpcError::errno(
                libc::EINVAL,
                format!(
                    "md_page_size {n} is not supported: Keel's lvstore format has 4096-byte \
                     metadata pages (md_page_size 4096 or none)"
                ),
            ));
        }
        if let Some(n) = self.num_md_pages_per_cluster_ratio.filter(|&n| n != 100) {
            return Err(RpcError::errno(
                libc::EINVAL,
                format!(
                    "num_md_pages_per_cluster_ratio {n} is not supported: Keel sizes the \
                     lvstore's metadata area itself (SPDK's default 100, or none, is accepted)"
                ),
            ));
        }
        Ok(())
    }
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct LvsRef {
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    lvs_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Rename {
    old_name: String,
    new_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateLvol {
    lvol_name: String,
    #[serde(default)]
    size_in_mib: Option<u64>,
    /// SPDK's older form, in bytes.
    #[serde(default)]
    size: Option<u64>,
    #[serde(default)]
    thin_provision: Option<bool>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    lvs_name: Option<String>,
    #[serde(default)]
    clear_method: Option<String>,
}

#[derive(Debug, Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct GetLvols {
    #[serde(default)]
    lvs_uuid: Option<String>,
    #[serde(default)]
    lvs_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Name {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Resize {
    name: String,
    #[serde(default)]
    size_in_mib: Option<u64>,
    #[serde(default)]
    size: Option<u64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Snapshot {
    lvol_name: String,
    snapshot_name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Clone {
    snapshot_name: String,
    clone_name: String,
}

const fn opt(name: &'static str, kind: ParamKind, short: char, help: &'static str) -> ParamSpec {
    ParamSpec::option(name, kind, false, None, Some(short), help)
}
const fn pos(name: &'static str, kind: ParamKind, help: &'static str) -> ParamSpec {
    ParamSpec::positional(name, kind, true, help)
}

static CREATE_LVSTORE: MethodSpec = MethodSpec {
    name: "bdev_lvol_create_lvstore",
    help: "Create a logical volume store on a bdev (claims it); returns its UUID.",
    params: &[
        pos("bdev_name", ParamKind::Str, "base bdev name"),
        pos("lvs_name", ParamKind::Str, "name for the lvstore"),
        opt(
            "cluster_sz",
            ParamKind::Int,
            'c',
            "cluster size in bytes (default 4 MiB)",
        ),
        ParamSpec::option(
            "clear_method",
            ParamKind::Str,
            false,
            None,
            None,
            "data region clear method: none, unmap (default), write_zeroes",
        ),
        opt(
            "num_md_pages_per_cluster_ratio",
            ParamKind::Int,
            'm',
            "SPDK's metadata reservation; Keel sizes its metadata itself: only 100 (SPDK's \
             default) is accepted",
        ),
        opt(
            "md_page_size",
            ParamKind::Int,
            's',
            "metadata page size: Keel's format has 4096-byte pages, only 4096 is accepted",
        ),
    ],
    cli_rewrite: None,
};
static DELETE_LVSTORE: MethodSpec = MethodSpec {
    name: "bdev_lvol_delete_lvstore",
    help: "Destroy a logical volume store and all its volumes.",
    params: &[
        opt("uuid", ParamKind::Str, 'u', "lvstore UUID"),
        opt("lvs_name", ParamKind::Str, 'l', "lvstore name"),
    ],
    cli_rewrite: None,
};
static RENAME_LVSTORE: MethodSpec = MethodSpec {
    name: "bdev_lvol_rename_lvstore",
    help: "Rename a logical volume store.",
    params: &[
        pos("old_name", ParamKind::Str, "current name"),
        pos("new_name", ParamKind::Str, "new name"),
    ],
    cli_rewrite: None,
};
static GET_LVSTORES: MethodSpec = MethodSpec {
    name: "bdev_lvol_get_lvstores",
    help: "List logical volume stores.",
    params: &[
        opt("uuid", ParamKind::Str, 'u', "lvstore UUID"),
        opt("lvs_name", ParamKind::Str, 'l', "lvstore name"),
    ],
    cli_rewrite: None,
};
static CREATE: MethodSpec = MethodSpec {
    name: "bdev_lvol_create",
    help: "Create a logical volume; returns its bdev name.",
    params: &[
        pos("lvol_name", ParamKind::Str, "volume name"),
        pos(
            "size_in_mib",
            ParamKind::Int,
            "size in MiB (rounded up to clusters)",
        ),
        ParamSpec::option(
            "thin_provision",
            ParamKind::Bool,
            false,
            None,
            Some('t'),
            "thin provisioned",
        ),
        opt("uuid", ParamKind::Str, 'u', "lvstore UUID"),
        opt("lvs_name", ParamKind::Str, 'l', "lvstore name"),
        opt(
            "clear_method",
            ParamKind::Str,
            'c',
            "accepted for compatibility",
        ),
    ],
    cli_rewrite: None,
};
static GET_LVOLS: MethodSpec = MethodSpec {
    name: "bdev_lvol_get_lvols",
    help: "List logical volumes.",
    params: &[
        opt("lvs_uuid", ParamKind::Str, 'u', "lvstore UUID"),
        opt("lvs_name", ParamKind::Str, 'l', "lvstore name"),
    ],
    cli_rewrite: None,
};
static DELETE: MethodSpec = MethodSpec {
    name: "bdev_lvol_delete",
    help: "Delete a logical volume.",
    params: &[pos("name", ParamKind::Str, "volume bdev name or alias")],
    cli_rewrite: None,
};
static RESIZE: MethodSpec = MethodSpec {
    name: "bdev_lvol_resize",
    help: "Resize a logical volume.",
    params: &[
        pos("name", ParamKind::Str, "volume bdev name or alias"),
        pos("size_in_mib", ParamKind::Int, "new size in MiB"),
    ],
    cli_rewrite: None,
};
static RENAME: MethodSpec = MethodSpec {
    name: "bdev_lvol_rename",
    help: "Rename a logical volume.",
    params: &[
        pos("old_name", ParamKind::Str, "volume bdev name or alias"),
        pos("new_name", ParamKind::Str, "new volume name"),
    ],
    cli_rewrite: None,
};
static SNAPSHOT: MethodSpec = MethodSpec {
    name: "bdev_lvol_snapshot",
    help: "Take a read-only snapshot of a volume; returns its bdev name.",
    params: &[
        pos("lvol_name", ParamKind::Str, "volume bdev name or alias"),
        pos("snapshot_name", ParamKind::Str, "snapshot name"),
    ],
    cli_rewrite: None,
};
static CLONE: MethodSpec = MethodSpec {
    name: "bdev_lvol_clone",
    help: "Create a thin clone of a snapshot; returns its bdev name.",
    params: &[
        pos(
            "snapshot_name",
            ParamKind::Str,
            "snapshot bdev name or alias",
        ),
        pos("clone_name", ParamKind::Str, "clone name"),
    ],
    cli_rewrite: None,
};
static INFLATE: MethodSpec = MethodSpec {
    name: "bdev_lvol_inflate",
    help: "Allocate every cluster of a clone (copying from its parents) and detach it.",
    params: &[pos("name", ParamKind::Str, "volume bdev name or alias")],
    cli_rewrite: None,
};
static DECOUPLE: MethodSpec = MethodSpec {
    name: "bdev_lvol_decouple_parent",
    help: "Copy the clusters a clone reads from its parents and detach it.",
    params: &[pos("name", ParamKind::Str, "volume bdev name or alias")],
    cli_rewrite: None,
};

/// Register the methods.
pub fn register() {
    register_method(&CREATE_LVSTORE, create_lvstore);
    register_method(&DELETE_LVSTORE, delete_lvstore);
    register_method(&RENAME_LVSTORE, rename_lvstore);
    register_method(&GET_LVSTORES, get_lvstores);
    register_method(&CREATE, create);
    register_method(&GET_LVOLS, get_lvols);
    register_method(&DELETE, delete);
    register_method(&RESIZE, resize);
    register_method(&RENAME, rename);
    register_method(&SNAPSHOT, snapshot);
    register_method(&CLONE, clone);
    register_method(&INFLATE, inflate);
    register_method(&DECOUPLE, decouple);
}

fn err(e: BdevError) -> RpcError {
    match e {
        BdevError::Invalid(m) => RpcError::invalid_params(m),
        e => rpc_error(e),
    }
}

fn parse_clear(s: Option<&str>) -> Result<ClearMethod, RpcError> {
    match s {
        None => Ok(ClearMethod::Unmap),
        Some(s) => ClearMethod::parse(s).ok_or_else(|| {
            RpcError::invalid_params(format!(
                "clear_method {s:?}: expected none, unmap or write_zeroes"
            ))
        }),
    }
}

fn size_bytes(mib: Option<u64>, bytes: Option<u64>) -> Result<u64, RpcError> {
    match (mib, bytes) {
        (Some(m), _) => m
            .checked_mul(1 << 20)
            .ok_or_else(|| RpcError::invalid_params("size_in_mib is too large")),
        (None, Some(b)) => Ok(b),
        (None, None) => Err(RpcError::invalid_params("size_in_mib is required")),
    }
}

fn exactly_one(uuid: &Option<String>, name: &Option<String>) -> Result<(), RpcError> {
    if uuid.is_some() == name.is_some() {
        return Err(RpcError::invalid_params(
            "exactly one of uuid or lvs_name must be given",
        ));
    }
    Ok(())
}

fn create_lvstore(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateLvstore = params::parse(p)?;
        p.check_layout()?;
        let clear = parse_clear(p.clear_method.as_deref())?;
        let s = lifecycle::create(&p.bdev_name, &p.lvs_name, p.cluster_sz, clear)
            .await
            .map_err(err)?;
        Ok(json!(s.uuid.to_string()))
    })
}

fn delete_lvstore(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: LvsRef = params::parse(p)?;
        exactly_one(&p.uuid, &p.lvs_name)?;
        let s = find(p.uuid.as_deref(), p.lvs_name.as_deref()).map_err(err)?;
        lifecycle::destroy(&s).await.map_err(err)?;
        Ok(json!(true))
    })
}

fn rename_lvstore(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Rename = params::parse(p)?;
        let s = find(None, Some(&p.old_name)).map_err(err)?;
        lifecycle::rename(&s, &p.new_name).await.map_err(err)?;
        Ok(json!(true))
    })
}

fn get_lvstores(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: LvsRef = params::parse::<Option<LvsRef>>(p)?.unwrap_or_default();
        let stores = if p.uuid.is_some() || p.lvs_name.is_some() {
            vec![find(p.uuid.as_deref(), p.lvs_name.as_deref()).map_err(err)?]
        } else {
            store::all()
        };
        let out: Vec<Value> = stores
            .iter()
            .map(|s| {
                json!({
                    "uuid": s.uuid.to_string(),
                    "name": s.name(),
                    "base_bdev": s.base_bdev.name(),
                    "total_data_clusters": s.total_clusters,
                    "free_clusters": s.free_clusters.load(Ordering::Relaxed),
                    "block_size": s.block_size,
                    "cluster_size": s.cluster_size,
                    // Keel's lvstores do not grow (no bdev_lvol_grow_lvstore): the most
                    // they hold is what they hold now.
                    "max_growable_size": s.total_clusters * s.cluster_size,
                    "nospace_errors": s.nospace_errors.load(Ordering::Relaxed),
                })
            })
            .collect();
        Ok(Value::Array(out))
    })
}

fn create(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: CreateLvol = params::parse(p)?;
        exactly_one(&p.uuid, &p.lvs_name)?;
        if let Some(c) = p.clear_method.as_deref() {
            parse_clear(Some(c))?;
        }
        let bytes = size_bytes(p.size_in_mib, p.size)?;
        let s = find(p.uuid.as_deref(), p.lvs_name.as_deref()).map_err(err)?;
        let v = volume::create(&s, &p.lvol_name, bytes, p.thin_provision.unwrap_or(false))
            .await
            .map_err(err)?;
        Ok(json!(v.uuid.to_string()))
    })
}

fn lvol_json(v: &Arc<Volume>) -> Value {
    let i = v.info();
    let s = &v.store;
    let mut o = json!({
        "alias": v.alias(),
        "uuid": v.uuid.to_string(),
        "name": i.name,
        "is_thin_provisioned": i.thin,
        "is_snapshot": i.snapshot,
        "is_clone": i.parent.is_some(),
        "is_esnap_clone": false,
        "is_degraded": false,
        "num_allocated_clusters": i.allocated,
        "num_clusters": i.num_clusters,
        "nospace_errors": v.nospace_errors.load(Ordering::Relaxed),
        "lvs": { "name": s.name(), "uuid": s.uuid.to_string() },
    });
    if let Some(p) = i.parent {
        o["base_snapshot"] = json!(p.to_string());
    }
    o
}

fn get_lvols(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: GetLvols = params::parse::<Option<GetLvols>>(p)?.unwrap_or_default();
        let stores = if p.lvs_uuid.is_some() || p.lvs_name.is_some() {
            vec![find(p.lvs_uuid.as_deref(), p.lvs_name.as_deref()).map_err(err)?]
        } else {
            store::all()
        };
        let out: Vec<Value> = stores
            .iter()
            .flat_map(|s| lock(&s.volumes).clone())
            .map(|v| lvol_json(&v))
            .collect();
        Ok(Value::Array(out))
    })
}

fn delete(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Name = params::parse(p)?;
        let v = find_volume(&p.name).map_err(err)?;
        volume::delete(&v).await.map_err(err)?;
        Ok(json!(true))
    })
}

fn resize(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Resize = params::parse(p)?;
        let bytes = size_bytes(p.size_in_mib, p.size)?;
        let v = find_volume(&p.name).map_err(err)?;
        volume::resize(&v, bytes).await.map_err(err)?;
        Ok(json!(true))
    })
}

fn rename(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Rename = params::parse(p)?;
        let v = find_volume(&p.old_name).map_err(err)?;
        volume::rename(&v, &p.new_name).await.map_err(err)?;
        Ok(json!(true))
    })
}

fn snapshot(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Snapshot = params::parse(p)?;
        let v = find_volume(&p.lvol_name).map_err(err)?;
        let s = volume::snapshot(&v, &p.snapshot_name).await.map_err(err)?;
        Ok(json!(s.uuid.to_string()))
    })
}

fn clone(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Clone = params::parse(p)?;
        let s = find_volume(&p.snapshot_name).map_err(err)?;
        let c = volume::clone(&s, &p.clone_name).await.map_err(err)?;
        Ok(json!(c.uuid.to_string()))
    })
}

fn inflate(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Name = params::parse(p)?;
        let v = find_volume(&p.name).map_err(err)?;
        volume::detach_parent(&v, true).await.map_err(err)?;
        Ok(json!(true))
    })
}

fn decouple(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: Name = params::parse(p)?;
        let v = find_volume(&p.name).map_err(err)?;
        volume::detach_parent(&v, false).await.map_err(err)?;
        Ok(json!(true))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn params_decode_like_spdk() {
        let p: CreateLvol = params::parse(Some(json!({
            "lvol_name": "v", "size_in_mib": 8, "thin_provision": true, "lvs_name": "lvs"
        })))
        .unwrap();
        assert_eq!(size_bytes(p.size_in_mib, p.size).unwrap(), 8 << 20);
        let p: CreateLvol = params::parse(Some(json!({
            "lvol_name": "v", "size": 4096, "uuid": "x"
        })))
        .unwrap();
        assert_eq!(size_bytes(p.size_in_mib, p.size).unwrap(), 4096);
        assert!(exactly_one(&p.uuid, &p.lvs_name).is_ok());
        assert!(exactly_one(&None, &None).is_err());
        assert!(size_bytes(None, None).is_err());
        assert!(size_bytes(Some(u64::MAX), None).is_err());
        assert!(parse_clear(Some("bogus")).is_err());
        assert_eq!(parse_clear(None).unwrap(), ClearMethod::Unmap);
        let e = params::parse::<CreateLvstore>(Some(json!({"bdev_name": "m"}))).unwrap_err();
        assert!(e.message.contains("lvs_name"), "{}", e.message);
    }

    #[test]
    fn lvstore_layout_params_of_spdk() {
        let lvs = |extra: Value| {
            let mut v = json!({"bdev_name": "m", "lvs_name": "l"});
            v.as_object_mut()
                .unwrap()
                .extend(extra.as_object().unwrap().clone());
            params::parse::<CreateLvstore>(Some(v)).and_then(|p| p.check_layout())
        };
        assert!(lvs(json!({})).is_ok());
        assert!(lvs(json!({"md_page_size": null, "num_md_pages_per_cluster_ratio": null})).is_ok());
        assert!(lvs(json!({"md_page_size": 4096, "num_md_pages_per_cluster_ratio": 100})).is_ok());
        let e = lvs(json!({"md_page_size": 8192})).unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        assert!(e.message.contains("md_page_size 8192"), "{}", e.message);
        let e = lvs(json!({"num_md_pages_per_cluster_ratio": 200})).unwrap_err();
        assert_eq!(e.code, -libc::EINVAL);
        assert!(
            e.message.contains("num_md_pages_per_cluster_ratio 200"),
            "{}",
            e.message
        );
    }
}
