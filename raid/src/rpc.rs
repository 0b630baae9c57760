//! The `bdev_raid_*` JSON-RPC methods, with SPDK's names and params (SPDK's `rpc.py` works
//! against them), and the JSON description of an array.

use crate::array::{lock, RaidArray};
use crate::bdev::CreateConfig;
use crate::level::RaidLevel;
use keel_bdev::{BdevError, Uuid};
use keel_rpc::{
    params, register_method, HandlerFuture, MethodSpec, ParamKind, ParamSpec, RpcError,
};
use serde::Deserialize;
use serde_json::{json, Value};
use std::sync::atomic::Ordering;

/// `base_bdevs`: older rpc.py sends one space-separated string, newer ones a list.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum BaseBdevs {
    Text(String),
    List(Vec<String>),
}

impl BaseBdevs {
    fn names(self) -> Vec<String> {
        match self {
            BaseBdevs::Text(s) => s.split_whitespace().map(str::to_string).collect(),
            BaseBdevs::List(v) => v,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CreateParams {
    name: String,
    raid_level: String,
    base_bdevs: BaseBdevs,
    #[serde(default)]
    strip_size_kb: Option<u32>,
    /// Deprecated SPDK spelling of `strip_size_kb`.
    #[serde(default)]
    strip_size: Option<u32>,
    #[serde(default)]
    uuid: Option<String>,
    #[serde(default)]
    superblock: Option<bool>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct NameParams {
    name: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteParams {
    name: String,
    /// Wipe the members' superblocks.
    #[serde(default)]
    clear_sb: bool,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GetParams {
    #[serde(default)]
    category: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct AddParams {
    raid_bdev: String,
    base_bdev: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct OptionsParams {
    #[serde(default)]
    process_window_size_kb: Option<u64>,
    #[serde(default)]
    process_max_bandwidth_mb_sec: Option<u64>,
}

static CREATE: MethodSpec = MethodSpec {
    name: "bdev_raid_create",
    help: "Create a raid bdev (raid0, raid1, concat, raid5; raid5f is an alias of raid5) over \
           existing bdevs of one block size.",
    params: &[
        ParamSpec::option(
            "name",
            ParamKind::Str,
            true,
            None,
            Some('n'),
            "raid bdev name",
        ),
        ParamSpec::option(
            "strip_size_kb",
            ParamKind::Int,
            false,
            None,
            Some('z'),
            "strip size in KB",
        ),
        ParamSpec::option(
            "raid_level",
            ParamKind::Str,
            true,
            None,
            Some('r'),
            "raid level: raid0, raid1, concat, raid5 (raid5f)",
        ),
        ParamSpec::option(
            "base_bdevs",
            ParamKind::StrList,
            true,
            None,
            Some('b'),
            "base bdev names, whitespace separated list in quotes",
        ),
        ParamSpec::option(
            "uuid",
            ParamKind::Str,
            false,
            None,
            Some('u'),
            "UUID for this raid bdev",
        ),
        ParamSpec::option(
            "superblock",
            ParamKind::Bool,
            false,
            None,
            Some('s'),
            "store the array's description in a superblock on each base bdev",
        ),
    ],
    cli_rewrite: None,
};

static DELETE: MethodSpec = MethodSpec {
    name: "bdev_raid_delete",
    help: "Delete a raid bdev (its members stay; with clear_sb their superblocks are wiped, so \
           the array is not assembled from them again).",
    params: &[
        ParamSpec::positional("name", ParamKind::Str, true, "raid bdev name"),
        ParamSpec::option(
            "clear_sb",
            ParamKind::Bool,
            false,
            None,
            Some('c'),
            "wipe the members' superblocks",
        ),
    ],
    cli_rewrite: None,
};

static GET: MethodSpec = MethodSpec {
    name: "bdev_raid_get_bdevs",
    help: "List raid bdevs: all, online, configuring or offline.",
    params: &[ParamSpec::positional(
        "category",
        ParamKind::Str,
        true,
        "all, online, configuring or offline",
    )],
    cli_rewrite: None,
};

static ADD: MethodSpec = MethodSpec {
    name: "bdev_raid_add_base_bdev",
    help: "Add a base bdev to a raid bdev's missing or failed slot and rebuild it.",
    params: &[
        ParamSpec::positional("raid_bdev", ParamKind::Str, true, "raid bdev name"),
        ParamSpec::positional("base_bdev", ParamKind::Str, true, "base bdev name"),
    ],
    cli_rewrite: None,
};

static REMOVE: MethodSpec = MethodSpec {
    name: "bdev_raid_remove_base_bdev",
    help: "Remove a base bdev from its raid bdev (the array goes on degraded).",
    params: &[ParamSpec::positional(
        "name",
        ParamKind::Str,
        true,
        "base bdev name",
    )],
    cli_rewrite: None,
};

static SET_OPTIONS: MethodSpec = MethodSpec {
    name: "bdev_raid_set_options",
    help: "Set options of raid background processes (rebuild).",
    params: &[
        ParamSpec::option(
            "process_window_size_kb",
            ParamKind::Int,
            false,
            None,
            Some('w'),
            "background process (rebuild) window size in KiB",
        ),
        ParamSpec::option(
            "process_max_bandwidth_mb_sec",
            ParamKind::Int,
            false,
            None,
            Some('b'),
            "background process bandwidth limit in MiB/s (0: none)",
        ),
    ],
    cli_rewrite: None,
};

/// Register the methods.
pub fn register_rpcs() {
    register_method(&CREATE, create_handler);
    register_method(&DELETE, delete_handler);
    register_method(&GET, get_handler);
    register_method(&ADD, add_handler);
    register_method(&REMOVE, remove_handler);
    // As SPDK: callable before framework_start_init too (keel-tgt --wait-for-rpc).
    keel_rpc::register_method_in(&SET_OPTIONS, set_options_handler, keel_rpc::RpcStates::ANY);
}

fn rpc_error(e: BdevError) -> RpcError {
    match e {
        BdevError::Invalid(m) => RpcError::invalid_params(m),
        e => RpcError::errno(e.errno(), e.to_string()),
    }
}

fn create_config(p: CreateParams) -> Result<CreateConfig, RpcError> {
    let level = RaidLevel::parse(&p.raid_level).ok_or_else(|| {
        RpcError::invalid_params(format!(
            "invalid raid_level {:?}: expected raid0/0, raid1/1, concat, raid5 or raid5f",
            p.raid_level
        ))
    })?;
    let uuid = match p.uuid.as_deref() {
        None => None,
        Some(s) => Some(
            Uuid::parse(s)
                .ok_or_else(|| RpcError::invalid_params(format!("uuid {s:?} is not a UUID")))?,
        ),
    };
    let base_bdevs = p.base_bdevs.names();
    if base_bdevs.is_empty() {
        return Err(RpcError::invalid_params("base_bdevs is empty"));
    }
    Ok(CreateConfig {
        name: p.name,
        level,
        base_bdevs,
        strip_size_kb: p.strip_size_kb.or(p.strip_size),
        uuid,
        superblock: p.superblock.unwrap_or(false),
    })
}

fn create_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let cfg = create_config(params::parse(params)?)?;
        crate::bdev::create(&cfg).await.map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn delete_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: DeleteParams = params::parse(params)?;
        crate::bdev::delete_opts(&p.name, p.clear_sb)
            .await
            .map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn get_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: GetParams = params::parse(params)?;
        let cat = p.category.unwrap_or_else(|| "all".into());
        if !matches!(cat.as_str(), "all" | "online" | "configuring" | "offline") {
            return Err(RpcError::invalid_params(format!(
                "invalid category {cat:?}: expected all, online, configuring or offline"
            )));
        }
        let mut list: Vec<Value> = crate::bdev::arrays()
            .iter()
            .filter(|a| cat == "all" || a.state_name() == cat)
            .map(|a| array_json(a))
            .collect();
        if matches!(cat.as_str(), "all" | "configuring") {
            list.extend(crate::examine::pending_json());
        }
        Ok(Value::Array(list))
    })
}

fn add_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: AddParams = params::parse(params)?;
        crate::bdev::add_base_bdev(&p.raid_bdev, &p.base_bdev)
            .await
            .map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn remove_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: NameParams = params::parse(params)?;
        crate::bdev::remove_base_bdev(&p.name)
            .await
            .map_err(rpc_error)?;
        Ok(json!(true))
    })
}

fn set_options_handler(params: Option<Value>) -> HandlerFuture {
    Box::pin(async move {
        let p: OptionsParams = params::parse(params)?;
        crate::rebuild::set_options(p.process_window_size_kb, p.process_max_bandwidth_mb_sec)
            .map_err(RpcError::invalid_params)?;
        Ok(json!(true))
    })
}

/// The `bdev_raid_get_bdevs` entry of an array (SPDK's fields plus member states and the
/// rebuild progress).
pub fn array_json(a: &RaidArray) -> Value {
    let bs = u64::from(a.block_size);
    let strip_kb = if a.level().uses_strips() {
        a.geo.strip_blocks * bs / 1024
    } else {
        0
    };
    let members: Vec<Value> = a
        .members
        .iter()
        .map(|m| {
            let desc = lock(&m.desc);
            json!({
                "name": m.bdev_name(),
                "uuid": desc.as_ref().map(|d| d.bdev().info().uuid.to_string()),
                "is_configured": desc.is_some(),
                "data_offset": a.data_offset,
                "data_size": a.geo.member_blocks,
                "state": m.state().name(),
            })
        })
        .collect();
    let mut v = json!({
        "name": a.name,
        "uuid": a.uuid.to_string(),
        "strip_size_kb": strip_kb,
        "state": a.state_name(),
        "raid_level": a.level().as_str(),
        "superblock": a.superblock,
        "num_base_bdevs": a.members.len(),
        "num_base_bdevs_discovered": a.discovered_members(),
        "num_base_bdevs_operational": a.active_members(),
        "base_bdevs_list": members,
    });
    if let Some(p) = lock(&a.process).as_ref() {
        let pct = p.done_blocks as f64 * 100.0 / p.total_blocks.max(1) as f64;
        let eta = if p.rate_blocks_per_sec > 0.0 {
            (p.total_blocks - p.done_blocks) as f64 / p.rate_blocks_per_sec
        } else {
            0.0
        };
        v["process"] = json!({
            "type": if p.resync { "resync" } else { "rebuild" },
            "target": a.members[p.target_slot as usize].bdev_name(),
            "target_slot": p.target_slot,
            "progress": {
                "blocks": p.done_blocks,
                "total_blocks": p.total_blocks,
                "percent": (pct * 10.0).round() / 10.0,
                "rate_mb_sec": p.rate_blocks_per_sec * a.block_size as f64 / 1048576.0,
                "eta_sec": eta,
            }
        });
    }
    let _ = a.registered.load(Ordering::Relaxed);
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_bdevs_accept_string_and_list() {
        let p: CreateParams = params::parse(Some(json!({
            "name": "r0", "raid_level": "raid0", "base_bdevs": "Malloc0 Malloc1", "strip_size_kb": 64
        })))
        .unwrap();
        let c = create_config(p).unwrap();
        assert_eq!(c.base_bdevs, vec!["Malloc0", "Malloc1"]);
        assert_eq!(c.strip_size_kb, Some(64));
        assert!(!c.superblock);
        let p: CreateParams = params::parse(Some(json!({
            "name": "r5", "raid_level": "raid5f", "base_bdevs": ["A", "B", "C"], "superblock": true
        })))
        .unwrap();
        let c = create_config(p).unwrap();
        assert_eq!(c.level, RaidLevel::Raid5);
        assert_eq!(c.base_bdevs.len(), 3);
        assert!(c.superblock);
    }

    #[test]
    fn delete_takes_spdk_clear_sb() {
        // rpc.py (SPDK 24.09 on) always sends clear_sb, false unless -c is given.
        let p: DeleteParams =
            params::parse(Some(json!({"name": "r0", "clear_sb": false}))).unwrap();
        assert!(!p.clear_sb);
        let p: DeleteParams = params::parse(Some(json!({"name": "r0", "clear_sb": true}))).unwrap();
        assert!(p.clear_sb);
        let p: DeleteParams = params::parse(Some(json!({"name": "r0"}))).unwrap();
        assert!(!p.clear_sb);
        let e =
            params::parse::<DeleteParams>(Some(json!({"name": "r0", "clear": true}))).unwrap_err();
        assert!(e.message.contains("clear"), "{}", e.message);
    }

    #[test]
    fn bad_params_are_refused_clearly() {
        let p: CreateParams = params::parse(Some(json!({
            "name": "r", "raid_level": "raid6", "base_bdevs": "A B"
        })))
        .unwrap();
        let e = create_config(p).unwrap_err();
        assert_eq!(e.code, -32602);
        assert!(e.message.contains("raid6"), "{}", e.message);
        let e = params::parse::<CreateParams>(Some(json!({"name": "r", "raid_level": "0"})))
            .unwrap_err();
        assert!(e.message.contains("base_bdevs"), "{}", e.message);
        let p: CreateParams = params::parse(Some(json!({
            "name": "r", "raid_level": "0", "base_bdevs": "A", "uuid": "nope"
        })))
        .unwrap();
        assert!(create_config(p).unwrap_err().message.contains("uuid"));
    }
}
