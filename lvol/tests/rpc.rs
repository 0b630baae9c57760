//! The `bdev_lvol_*` JSON-RPC methods end to end: rpc.py-style command lines parsed by the
//! `keel-rpc` client, sent over the Unix socket to a server on a 1-core runtime.

#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_rpc::cli::CliError;
use serde_json::{json, Value};

/// Start the runtime and the RPC server (bdev and lvol methods) once; return the socket path.
fn server() -> &'static str {
    keel_testkit::rpc::server("lvol", || {
        keel_bdev::rpc::register();
        keel_lvol::register_rpcs();
    })
}

/// Run an rpc.py-style command line against the server.
fn rpc(args: &[&str]) -> Result<Value, CliError> {
    keel_testkit::rpc::call(server(), args)
}

fn rpc_err(args: &[&str]) -> (i64, String) {
    keel_testkit::rpc::call_err(server(), args)
}

#[test]
fn lvol_getters_have_spdk_fields_and_layout_params_are_checked() {
    rpc(&["bdev_malloc_create", "-b", "r_lm", "16", "512"]).unwrap();
    rpc(&["bdev_wait_for_examine"]).unwrap();
    // md_page_size: Keel's 4096-byte pages only.
    let (code, msg) = rpc_err(&[
        "bdev_lvol_create_lvstore",
        "r_lm",
        "r_lvs",
        "-c",
        "1048576",
        "-s",
        "8192",
    ]);
    assert_eq!(code, -i64::from(libc::EINVAL), "{msg}");
    assert!(msg.contains("md_page_size 8192"), "{msg}");
    rpc(&[
        "bdev_lvol_create_lvstore",
        "r_lm",
        "r_lvs",
        "-c",
        "1048576",
        "-s",
        "4096",
    ])
    .unwrap();
    let s = &rpc(&["bdev_lvol_get_lvstores", "-l", "r_lvs"]).unwrap()[0];
    let clusters = s["total_data_clusters"].as_u64().unwrap();
    assert_eq!(s["max_growable_size"], clusters * 1048576, "{s}");
    rpc(&["bdev_lvol_create", "v", "2", "-t", "-l", "r_lvs"]).unwrap();
    rpc(&["bdev_lvol_snapshot", "r_lvs/v", "snap"]).unwrap();
    rpc(&["bdev_lvol_clone", "r_lvs/snap", "cl"]).unwrap();
    let ds = |name: &str| {
        rpc(&["bdev_get_bdevs", "-b", name]).unwrap()[0]["driver_specific"]["lvol"].clone()
    };
    let snap = ds("r_lvs/snap");
    assert_eq!(snap["snapshot"], true);
    assert_eq!(snap["esnap_clone"], false);
    let mut clones: Vec<String> = serde_json::from_value(snap["clones"].clone()).unwrap();
    clones.sort();
    assert_eq!(clones, ["cl", "v"], "a snapshot lists its clones by name");
    let cl = ds("r_lvs/cl");
    assert_eq!(
        (&cl["clone"], &cl["base_snapshot"]),
        (&json!(true), &json!("snap"))
    );
    assert!(ds("r_lvs/snap").get("base_snapshot").is_none());
    rpc(&["bdev_lvol_delete_lvstore", "-l", "r_lvs"]).unwrap();
    rpc(&["bdev_malloc_delete", "r_lm"]).unwrap();
}
