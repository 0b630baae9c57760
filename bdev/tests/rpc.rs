//! The bdev JSON-RPC methods end to end: rpc.py-style command lines parsed by the `keel-rpc`
//! client (with the methods' specs and rewrites), sent over the Unix socket to a server on a
//! 1-core runtime; plus QoS measured on that core.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

mod common;

use common::{on_core, until};
use keel_rpc::cli::CliError;
use serde_json::{json, Value};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

/// Start the runtime and the RPC server (bdev methods) once; return the socket path.
fn server() -> &'static str {
    keel_testkit::rpc::server("bdev", || {
        keel_bdev::rpc::register();
        keel_bdev::rpc::register(); // idempotent
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
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one CLI scenario
fn malloc_and_null_lifecycle_through_the_cli() {
    assert_eq!(
        rpc(&["bdev_malloc_create", "-b", "r_m0", "8", "512"]).unwrap(),
        json!("r_m0")
    );
    let auto = rpc(&["bdev_malloc_create", "1", "4096"]).unwrap();
    let auto = auto.as_str().unwrap().to_string();
    assert!(auto.starts_with("Malloc"), "{auto}");
    let uuid = "0b2c7a9e-55d1-4bb4-9f43-5c0d2e1c1d01";
    assert_eq!(
        rpc(&["bdev_null_create", "r_n0", "16", "4096", "-u", uuid]).unwrap(),
        json!("r_n0")
    );

    let m = rpc(&["bdev_get_bdevs", "-b", "r_m0"]).unwrap();
    let m = &m[0];
    assert_eq!(m["name"], "r_m0");
    assert_eq!(m["product_name"], "Malloc disk");
    assert_eq!(m["block_size"], 512);
    assert_eq!(m["num_blocks"], 8 * 2048, "8 MiB of 512-byte blocks");
    assert_eq!(m["claimed"], false);
    assert_eq!(m["zoned"], false);
    assert_eq!(m["aliases"], json!([]));
    assert_eq!(m["driver_specific"], json!({}));
    for t in ["read", "write", "unmap", "write_zeroes", "flush", "reset"] {
        assert_eq!(m["supported_io_types"][t], true, "{t}");
    }
    assert_eq!(m["supported_io_types"]["compare"], false);
    // Every field SPDK's bdev_get_bdevs writes for a bdev without metadata or zones.
    for k in [
        "name",
        "aliases",
        "product_name",
        "block_size",
        "num_blocks",
        "preferred_write_alignment",
        "preferred_write_granularity",
        "optimal_write_size",
        "preferred_unmap_alignment",
        "preferred_unmap_granularity",
        "uuid",
        "assigned_rate_limits",
        "claimed",
        "zoned",
        "supported_io_types",
        "driver_specific",
    ] {
        assert!(m.get(k).is_some(), "bdev_get_bdevs lacks {k}: {m}");
    }
    assert_eq!(
        m["supported_io_types"].as_object().unwrap().len(),
        22,
        "every SPDK I/O type named"
    );
    assert_eq!(m["assigned_rate_limits"]["rw_ios_per_sec"], 0);
    let n = rpc(&["bdev_get_bdevs", "-b", "r_n0"]).unwrap();
    assert_eq!(n[0]["uuid"], uuid);
    assert_eq!(n[0]["num_blocks"], 16 * 256);
    assert_eq!(n[0]["product_name"], "Null disk");

    let all = rpc(&["bdev_get_bdevs"]).unwrap();
    let names: Vec<&str> = all
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b["name"].as_str().unwrap())
        .collect();
    let pos = |n: &str| names.iter().position(|x| *x == n).unwrap();
    assert!(
        pos("r_m0") < pos(&auto) && pos(&auto) < pos("r_n0"),
        "registration order: {names:?}"
    );

    // errors, with SPDK's codes
    assert_eq!(
        rpc_err(&["bdev_get_bdevs", "-b", "r_none"]),
        (-19, "No such device".into())
    );
    assert_eq!(
        rpc_err(&["bdev_get_bdevs", "-b", "r_none", "-t", "30"]).0,
        -19,
        "waited, then failed"
    );
    assert_eq!(
        rpc_err(&["bdev_malloc_create", "-b", "r_m0", "8", "512"]).0,
        -17
    );
    assert_eq!(
        rpc_err(&["bdev_malloc_create", "-b", "r_bad", "8", "1000"]).0,
        -22
    );
    assert_eq!(
        rpc_err(&["bdev_null_create", "r_bad", "1", "512", "-u", "zzz"]).0,
        -32602
    );
    assert_eq!(
        rpc_err(&["bdev_null_delete", "r_m0"]).0,
        -19,
        "not a null bdev"
    );
    assert_eq!(
        rpc_err(&["call", "bdev_malloc_create", r#"{"num_blocks": 8}"#]).0,
        -32602
    );
    assert_eq!(
        rpc_err(&[
            "call",
            "bdev_malloc_create",
            r#"{"num_blocks": 0, "block_size": 512}"#
        ])
        .0,
        -22
    );
    assert_eq!(
        rpc_err(&[
            "call",
            "bdev_malloc_create",
            r#"{"num_blocks": 8, "block_size": 512, "bogus": 1}"#
        ])
        .0,
        -32602
    );
    assert!(
        matches!(
            rpc(&["bdev_malloc_create", "0", "512"]),
            Err(CliError::Usage(_))
        ),
        "rewrite refuses 0 MiB"
    );

    assert_eq!(rpc(&["bdev_malloc_delete", "r_m0"]).unwrap(), json!(true));
    assert_eq!(rpc(&["bdev_malloc_delete", &auto]).unwrap(), json!(true));
    assert_eq!(rpc(&["bdev_null_delete", "r_n0"]).unwrap(), json!(true));
    assert_eq!(rpc_err(&["bdev_malloc_delete", "r_m0"]).0, -19);
}

#[test]
fn save_config_lists_creations_then_qos_and_replays() {
    rpc(&["bdev_malloc_create", "-b", "r_cfg_m", "2", "512"]).unwrap();
    rpc(&["bdev_null_create", "r_cfg_n", "4", "512"]).unwrap();
    assert_eq!(
        rpc(&["bdev_set_qos_limit", "r_cfg_m", "--rw_ios_per_sec", "20000"]).unwrap(),
        json!(true)
    );
    rpc(&["bdev_set_qos_limit", "r_cfg_m", "--w_mbytes_per_sec", "5"]).unwrap();
    let m = rpc(&["bdev_get_bdevs", "-b", "r_cfg_m"]).unwrap();
    let limits = &m[0]["assigned_rate_limits"];
    assert_eq!(
        (
            limits["rw_ios_per_sec"].as_u64(),
            limits["w_mbytes_per_sec"].as_u64()
        ),
        (Some(20000), Some(5))
    );
    assert_eq!(
        rpc_err(&["bdev_set_qos_limit", "r_cfg_m"]).0,
        -32602,
        "no limit given"
    );
    assert_eq!(
        rpc_err(&["bdev_set_qos_limit", "r_cfg_m", "--rw_ios_per_sec", "10"]).0,
        -22
    );
    assert_eq!(
        rpc_err(&["bdev_set_qos_limit", "r_none", "--rw_ios_per_sec", "0"]).0,
        -19
    );

    let cfg = rpc(&["save_config"]).unwrap();
    let bdev = cfg["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .unwrap();
    let calls = bdev["config"].as_array().unwrap();
    let idx = |method: &str, name: &str| {
        calls
            .iter()
            .position(|c| c["method"] == method && c["params"]["name"] == name)
            .unwrap_or_else(|| panic!("{method} {name}"))
    };
    let (cm, cn, cq) = (
        idx("bdev_malloc_create", "r_cfg_m"),
        idx("bdev_null_create", "r_cfg_n"),
        idx("bdev_set_qos_limit", "r_cfg_m"),
    );
    assert!(
        cm < cn && cn < cq,
        "creations in registration order, then QoS"
    );
    assert_eq!(calls[cm]["params"]["num_blocks"], 4096);
    assert_eq!(calls[cq]["params"]["rw_ios_per_sec"], 20000);
    assert_eq!(calls[cq]["params"]["w_mbytes_per_sec"], 5);
    let uuid = calls[cm]["params"]["uuid"].clone();

    // delete, then replay only our calls: same bdevs, same UUID, same limits
    rpc(&["bdev_malloc_delete", "r_cfg_m"]).unwrap();
    rpc(&["bdev_null_delete", "r_cfg_n"]).unwrap();
    let ours =
        json!({"subsystems": [{"subsystem": "bdev", "config": [calls[cm], calls[cn], calls[cq]]}]});
    on_core(0, Duration::from_secs(20), move || async move {
        keel_rpc::load_config_value("test", &ours).await.unwrap()
    });
    let m = rpc(&["bdev_get_bdevs", "-b", "r_cfg_m"]).unwrap();
    assert_eq!(m[0]["uuid"], uuid);
    assert_eq!(m[0]["assigned_rate_limits"]["rw_ios_per_sec"], 20000);
    rpc(&["bdev_malloc_delete", "r_cfg_m"]).unwrap();
    rpc(&["bdev_null_delete", "r_cfg_n"]).unwrap();
}

fn count_cb(ctx: usize, status: keel_bdev::IoStatus) {
    assert_eq!(status, keel_bdev::IoStatus::Success);
    // SAFETY: ctx is the address of a leaked (immortal) counter.
    unsafe { &*(ctx as *const AtomicU64) }.fetch_add(1, Ordering::SeqCst);
}

/// Submit `total` 4 KiB reads at queue depth `qd` on core 0 and return the ticks it took.
fn timed_reads(name: &'static str, total: u64, qd: u64) -> u64 {
    on_core(0, Duration::from_secs(20), move || async move {
        let desc = keel_bdev::open(name, false, |_| {}).unwrap();
        let ch = desc.get_io_channel().unwrap();
        let buf = Box::leak(vec![0u8; 4096].into_boxed_slice());
        let done: &'static AtomicU64 = Box::leak(Box::new(AtomicU64::new(0)));
        let ctx = done as *const AtomicU64 as usize;
        let t0 = keel_reactor::ticks();
        let mut sent = 0;
        while sent < total {
            let d = done.load(Ordering::SeqCst);
            while sent < total && sent - d < qd {
                // SAFETY: the leaked buffer outlives the reads (their data is not checked).
                let v = unsafe { keel_bdev::IoVec::from_raw_parts(buf.as_mut_ptr(), 4096) };
                ch.read(&[v], sent % 64, 1, count_cb, ctx).unwrap();
                sent += 1;
            }
            let target = (d + 1).min(total);
            until(|| done.load(Ordering::SeqCst) >= target).await;
        }
        until(|| done.load(Ordering::SeqCst) == total).await;
        keel_reactor::ticks() - t0
    })
}

#[test]
fn qos_iops_limit_paces_a_workload() {
    rpc(&["bdev_malloc_create", "-b", "r_qos", "1", "4096"]).unwrap();
    rpc(&["bdev_set_qos_limit", "r_qos", "--rw_ios_per_sec", "10000"]).unwrap();
    // Examiners (lvol) read the new bdev's first pages; count from after them.
    rpc(&["bdev_wait_for_examine"]).unwrap();
    let before = rpc(&["bdev_get_iostat", "-b", "r_qos"]).unwrap()["bdevs"][0].clone();
    let (reads0, bytes0) = (
        before["num_read_ops"].as_u64().unwrap(),
        before["bytes_read"].as_u64().unwrap(),
    );
    // One core: 10 I/Os per 1 ms timeslice. 300 reads need at least 29 refills after the first
    // slice, and refills are at least 1 ms apart: a lower bound, whatever the machine's speed.
    let total = 300;
    let ticks = timed_reads("r_qos", total, 16);
    let ms = ticks as f64 * 1000.0 / keel_reactor::tick_rate() as f64;
    assert!(
        ms >= (total / 10 - 1) as f64,
        "{total} I/Os at 10 per ms took only {ms:.1} ms"
    );
    let st = rpc(&["bdev_get_iostat", "-b", "r_qos"]).unwrap();
    assert!(st["tick_rate"].as_u64().unwrap() > 0);
    assert!(st["ticks"].as_u64().unwrap() > 0);
    let b = &st["bdevs"][0];
    assert_eq!(b["name"], "r_qos");
    assert_eq!(b["num_read_ops"].as_u64().unwrap() - reads0, total);
    assert_eq!(b["bytes_read"].as_u64().unwrap() - bytes0, total * 4096);
    assert!(b["read_latency_ticks"].as_u64().unwrap() > 0);
    // lifting the limit: the same workload is no longer held back (no timing asserted)
    rpc(&["bdev_set_qos_limit", "r_qos", "--rw_ios_per_sec", "0"]).unwrap();
    timed_reads("r_qos", total, 16);
    let st = rpc(&["bdev_get_iostat", "-b", "r_qos"]).unwrap();
    assert_eq!(
        st["bdevs"][0]["num_read_ops"].as_u64().unwrap() - reads0,
        2 * total
    );
    let all = rpc(&["bdev_get_iostat"]).unwrap();
    assert!(all["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == "r_qos"));
    assert_eq!(rpc_err(&["bdev_get_iostat", "-b", "r_none"]).0, -19);
    // rpc.py v25+ sends `names` (a list).
    let some = rpc(&["bdev_get_iostat", "--names", "r_qos"]).unwrap();
    assert_eq!(some["bdevs"].as_array().unwrap().len(), 1);
    assert_eq!(
        some["bdevs"][0]["num_read_ops"].as_u64().unwrap() - reads0,
        2 * total
    );
    let (code, msg) = rpc_err(&[
        "call",
        "bdev_get_iostat",
        r#"{"names": ["r_qos"], "reset_mode": "all"}"#,
    ]);
    assert_eq!(code, -i64::from(libc::ENOTSUP), "{msg}");
    assert!(msg.contains("does not reset"), "{msg}");
    let none = rpc(&[
        "call",
        "bdev_get_iostat",
        r#"{"names": ["r_qos"], "reset_mode": "none"}"#,
    ])
    .unwrap();
    assert_eq!(none["bdevs"][0]["name"], "r_qos");
    let (code, msg) = rpc_err(&["bdev_get_iostat", "--names", "r_qos,r_none"]);
    assert_eq!(code, -19);
    assert!(msg.contains("r_none"), "{msg}");
    rpc(&["bdev_malloc_delete", "r_qos"]).unwrap();
}

#[test]
fn latency_histogram_through_the_cli() {
    rpc(&["bdev_malloc_create", "-b", "r_hist", "1", "4096"]).unwrap();
    rpc(&["bdev_wait_for_examine"]).unwrap();
    let (code, msg) = rpc_err(&["bdev_get_histogram", "r_hist"]);
    assert_eq!(code, -14, "{msg}");
    assert!(
        rpc(&["bdev_enable_histogram", "r_hist"]).is_err(),
        "a flag is required"
    );
    assert_eq!(
        rpc(&[
            "bdev_enable_histogram",
            "r_hist",
            "--histogram",
            "-o",
            "read"
        ])
        .unwrap(),
        json!(true)
    );
    timed_reads("r_hist", 100, 8);
    let h = rpc(&["bdev_get_histogram", "r_hist"]).unwrap();
    assert_eq!(h["granularity"], 7);
    assert!(h["tsc_rate"].as_u64().unwrap() > 0);
    let b64 = h["histogram"].as_str().unwrap();
    let total: u64 = decode_base64(b64)
        .chunks(8)
        .map(|c| u64::from_le_bytes(c.try_into().unwrap()))
        .sum();
    assert_eq!(total, 100, "every read counted once");
    rpc(&["bdev_enable_histogram", "r_hist", "--no-histogram"]).unwrap();
    assert_eq!(rpc_err(&["bdev_get_histogram", "r_hist"]).0, -14);
    rpc(&["bdev_malloc_delete", "r_hist"]).unwrap();
}

/// Standard padded base64 (test helper; the target's encoder is tested in the crate).
fn decode_base64(s: &str) -> Vec<u8> {
    let val = |c: u8| match c {
        b'A'..=b'Z' => u32::from(c - b'A'),
        b'a'..=b'z' => u32::from(c - b'a') + 26,
        b'0'..=b'9' => u32::from(c - b'0') + 52,
        b'+' => 62,
        b'/' => 63,
        _ => 0,
    };
    let mut out = Vec::new();
    for q in s.as_bytes().chunks(4) {
        let pad = q.iter().filter(|&&c| c == b'=').count();
        let n = q.iter().fold(0u32, |a, &c| (a << 6) | val(c));
        out.extend_from_slice(&[(n >> 16) as u8, (n >> 8) as u8, n as u8][..3 - pad]);
    }
    out
}
