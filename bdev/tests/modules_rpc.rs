//! The uring/aio, delay and error modules through their JSON-RPC methods: a config replay
//! creates, updates and deletes bdevs, `save_config` gives back calls that recreate them, and
//! bad calls answer SPDK's error codes.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_rpc::{load_config_value, save_config_value, ConfigError};
use keel_testkit::prelude::*;
use serde_json::{json, Value};

/// Replay `calls` (bdev subsystem) on the main core, registering the methods first.
fn replay(calls: Value) -> Result<(), ConfigError> {
    run(move || async move {
        keel_bdev::rpc::register();
        load_config_value(
            "test",
            &json!({"subsystems": [{"subsystem": "bdev", "config": calls}]}),
        )
        .await
    })
}

/// The error code of the single failing call in `calls`.
fn code_of(calls: Value) -> i32 {
    match replay(calls) {
        Err(ConfigError::Call { error, .. }) => error.code,
        other => panic!("expected a failing call, got {other:?}"),
    }
}

fn saved_calls() -> Vec<Value> {
    let v = run(|| async { save_config_value() });
    v["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .map(|s| s["config"].as_array().cloned().unwrap_or_default())
        .unwrap_or_default()
}

fn saved(method: &str, name_key: &str, name: &str) -> Option<Value> {
    saved_calls()
        .into_iter()
        .find(|c| c["method"] == method && c["params"][name_key] == name)
        .map(|c| c["params"].clone())
}

#[test]
fn create_update_save_and_delete_through_rpc() {
    let f = TempFile::new("rpc-uring", 1 << 20);
    let g = TempFile::new("rpc-aio", 1 << 20);
    replay(json!([
        {"method": "bdev_malloc_create", "params": {"name": "rpc_m0", "num_blocks": 2048, "block_size": 512}},
        {"method": "bdev_delay_create", "params": {
            "base_bdev_name": "rpc_m0", "name": "rpc_d0",
            "avg_read_latency": 1, "p99_read_latency": 2,
            "avg_write_latency": 3, "p99_write_latency": 4}},
        {"method": "bdev_delay_update_latency", "params": {
            "delay_bdev_name": "rpc_d0", "latency_type": "p99_write", "latency_us": 40}},
        {"method": "bdev_malloc_create", "params": {"name": "rpc_m1", "num_blocks": 2048, "block_size": 512}},
        {"method": "bdev_error_create", "params": {"base_name": "rpc_m1"}},
        // Examiners (lvol, raid superblock) read every new bdev; let them finish before arming
        // read failures, or an examine read would use one up.
        {"method": "bdev_wait_for_examine"},
        {"method": "bdev_error_inject_error", "params": {
            "name": "EE_rpc_m1", "io_type": "read", "error_type": "failure", "num": 2}},
        {"method": "bdev_uring_create", "params": {"filename": f.0, "name": "rpc_u0", "block_size": 4096}},
        {"method": "bdev_aio_create", "params": {"filename": g.0, "name": "rpc_a0", "fallocate": true}}
    ]))
    .expect("config replays");
    assert_eq!(
        keel_bdev::modules::error::remaining("EE_rpc_m1", keel_bdev::IoType::Read),
        Some(2)
    );

    let d = saved("bdev_delay_create", "name", "rpc_d0").expect("delay saved");
    assert_eq!(d["base_bdev_name"], "rpc_m0");
    assert_eq!(d["p99_write_latency"], 40);
    assert_eq!(d["avg_read_latency"], 1);
    let e = saved("bdev_error_create", "base_name", "rpc_m1").expect("error saved");
    assert!(e["uuid"].is_string());
    let u = saved("bdev_uring_create", "name", "rpc_u0").expect("uring saved");
    assert_eq!(
        (u["filename"].as_str(), u["block_size"].as_u64()),
        (Some(f.0.as_str()), Some(4096))
    );
    let a = saved("bdev_aio_create", "name", "rpc_a0").expect("aio saved");
    assert_eq!(
        (a["fallocate"].as_bool(), a["readonly"].as_bool()),
        (Some(true), Some(false))
    );
    // Stacked bdevs come after their bases, so the saved config replays in order.
    let calls = saved_calls();
    let pos = |m: &str, k: &str, n: &str| {
        calls
            .iter()
            .position(|c| c["method"] == m && c["params"][k] == n)
            .unwrap()
    };
    assert!(
        pos("bdev_malloc_create", "name", "rpc_m0") < pos("bdev_delay_create", "name", "rpc_d0")
    );

    replay(json!([
        {"method": "bdev_delay_delete", "params": {"name": "rpc_d0"}},
        {"method": "bdev_error_delete", "params": {"name": "EE_rpc_m1"}},
        {"method": "bdev_uring_delete", "params": {"name": "rpc_u0"}},
        {"method": "bdev_aio_delete", "params": {"name": "rpc_a0"}},
        {"method": "bdev_malloc_delete", "params": {"name": "rpc_m0"}},
        {"method": "bdev_malloc_delete", "params": {"name": "rpc_m1"}}
    ]))
    .expect("deletes replay");
    assert!(saved("bdev_delay_create", "name", "rpc_d0").is_none());
    assert!(run(|| async { keel_bdev::get_bdev("rpc_u0").is_none() }));
}

#[test]
fn bad_calls_answer_spdk_codes() {
    let enodev = -libc::ENODEV;
    let delay = |base: &str, avg: u64, p99: u64| {
        json!([{"method": "bdev_delay_create", "params": {
            "base_bdev_name": base, "name": "rpc_bad_d",
            "avg_read_latency": avg, "p99_read_latency": p99,
            "avg_write_latency": 1, "p99_write_latency": 1}}])
    };
    assert_eq!(code_of(delay("rpc_no_base", 1, 1)), enodev);
    assert_eq!(
        code_of(delay("rpc_no_base", 5, 1)),
        -libc::EINVAL,
        "p99 below average"
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_delay_create", "params": {"name": "x"}}])),
        -32602
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_delay_update_latency", "params": {
            "delay_bdev_name": "rpc_nope", "latency_type": "avg_read", "latency_us": 1}}])),
        enodev
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_delay_delete", "params": {"name": "rpc_nope"}}])),
        enodev
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_error_create", "params": {"base_name": "rpc_nope"}}])),
        enodev
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_error_inject_error", "params": {
            "name": "EE_rpc_nope", "io_type": "read", "error_type": "failure"}}])),
        enodev
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_error_inject_error", "params": {
            "name": "EE_rpc_nope", "io_type": "read", "error_type": "nomem"}}])),
        -32602
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_uring_create", "params": {
            "filename": "/tmp/keel-rpc-missing-file", "name": "rpc_bad_u"}}])),
        -libc::ENOENT
    );
    assert_eq!(
        code_of(json!([{"method": "bdev_uring_delete", "params": {"name": "rpc_nope"}}])),
        enodev
    );

    // Name taken: a second uring bdev with the same name.
    let f = TempFile::new("rpc-dup", 1 << 20);
    let create =
        json!([{"method": "bdev_uring_create", "params": {"filename": f.0, "name": "rpc_dup"}}]);
    replay(create.clone()).unwrap();
    assert_eq!(code_of(create), -libc::EEXIST);
    // A uring bdev is not an aio bdev.
    assert_eq!(
        code_of(json!([{"method": "bdev_aio_delete", "params": {"name": "rpc_dup"}}])),
        enodev
    );
    replay(json!([{"method": "bdev_uring_delete", "params": {"name": "rpc_dup"}}])).unwrap();
}
