//! End-to-end: start the real `keel-tgt` binary, drive it over its JSON-RPC socket like a user
//! (and like SPDK's rpc.py would), stop it with a signal, and check what it left behind.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_testkit::json_rpc::JsonConn as Conn;
use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A keel-tgt process on its own socket in its own temp dir; killed if the test fails.
struct Target {
    child: Option<Child>,
    dir: PathBuf,
    socket: PathBuf,
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-e2e-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

impl Target {
    /// Start with the embedded default configuration (no -c, no --no-default).
    fn start_with_default(tag: &str) -> Target {
        Target::spawn(tag, &[], true)
    }

    /// Start with `extra` flags; without a `-c` the target starts empty (`--no-default`).
    fn start(tag: &str, extra: &[&str]) -> Target {
        Target::spawn(tag, extra, false)
    }

    fn spawn(tag: &str, extra: &[&str], with_default: bool) -> Target {
        let dir = temp_dir(tag);
        let socket = dir.join("keel.sock");
        let child = Command::new(env!("CARGO_BIN_EXE_keel-tgt"))
            .args([
                "-m",
                "0x1",
                "--interrupt-mode",
                "-r",
                socket.to_str().unwrap(),
            ])
            .args(if with_default || extra.contains(&"-c") {
                &[][..]
            } else {
                &["--no-default"][..]
            })
            .args(extra)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn keel-tgt");
        let mut t = Target {
            child: Some(child),
            dir,
            socket,
        };
        t.wait_ready();
        t
    }

    fn wait_ready(&mut self) {
        // The RPC socket opens once the config is loaded: the default's 1 GiB malloc is
        // populated first (seconds on a loaded VM).
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if UnixStream::connect(&self.socket).is_ok() {
                // The socket accepts once the server runs; make sure a call is answered.
                if self.call("spdk_get_version", None).get("result").is_some() {
                    return;
                }
            }
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                let out = self.child.take().unwrap().wait_with_output().unwrap();
                panic!(
                    "keel-tgt exited early ({status}): {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        panic!("keel-tgt did not answer on {:?}", self.socket);
    }

    /// One request on a fresh connection; returns the whole response object.
    fn call(&self, method: &str, params: Option<Value>) -> Value {
        let mut conn = Conn::connect(&self.socket);
        let mut req = json!({"jsonrpc": "2.0", "method": method, "id": 1});
        if let Some(p) = params {
            req["params"] = p;
        }
        conn.send(req.to_string().as_bytes());
        conn.recv().expect("a response")
    }

    fn result(&self, method: &str, params: Option<Value>) -> Value {
        let resp = self.call(method, params);
        assert!(resp.get("error").is_none(), "{method} failed: {resp}");
        resp["result"].clone()
    }

    /// SIGTERM, then wait; returns the exit output.
    fn stop(mut self) -> Output {
        let child = self.child.take().unwrap();
        // SAFETY: plain kill(2) on our own child's pid.
        unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
        wait_with_timeout(child, Duration::from_secs(20))
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn wait_with_timeout(mut child: Child, limit: Duration) -> Output {
    let deadline = Instant::now() + limit;
    while child.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("process did not exit within {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().unwrap()
}

fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {resp}"))
}

#[test]
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one end-to-end scenario
fn bdevs_iostat_errors_and_clean_shutdown() {
    let t = Target::start("main", &[]);

    let methods = t.result("rpc_get_methods", None);
    for m in [
        "bdev_malloc_create",
        "bdev_get_bdevs",
        "bdev_get_iostat",
        "save_config",
        "framework_get_reactors",
    ] {
        assert!(
            methods.as_array().unwrap().iter().any(|v| v == m),
            "{m} missing from {methods}"
        );
    }
    let reactors = t.result("framework_get_reactors", None);
    assert!(reactors["tick_rate"].as_u64().unwrap() > 0);
    assert_eq!(reactors["reactors"].as_array().unwrap().len(), 1);

    // Exactly what SPDK's rpc.py sends for `bdev_malloc_create -b M0 64 4096`.
    let name = t.result(
        "bdev_malloc_create",
        Some(
            json!({"num_blocks": 16384, "block_size": 4096, "name": "M0",
                    "md_interleave": false, "dif_is_head_of_md": false}),
        ),
    );
    assert_eq!(name, "M0");
    assert_eq!(
        t.result(
            "bdev_null_create",
            Some(json!({"name": "N0", "num_blocks": 1024, "block_size": 512}))
        ),
        "N0"
    );
    let dup = t.call(
        "bdev_malloc_create",
        Some(json!({"name": "M0", "num_blocks": 8, "block_size": 512})),
    );
    assert_eq!(error_code(&dup), -17, "duplicate name is EEXIST: {dup}");

    let bdevs = t.result("bdev_get_bdevs", None);
    let m0 = bdevs
        .as_array()
        .unwrap()
        .iter()
        .find(|b| b["name"] == "M0")
        .expect("M0 listed");
    assert_eq!(m0["block_size"], 4096);
    assert_eq!(m0["num_blocks"], 16384);
    assert_eq!(m0["product_name"], "Malloc disk");
    assert_eq!(m0["supported_io_types"]["write"], true);
    assert_eq!(m0["uuid"].as_str().unwrap().len(), 36);
    let one = t.result("bdev_get_bdevs", Some(json!({"name": "N0"})));
    assert_eq!(one.as_array().unwrap().len(), 1);
    assert_eq!(
        error_code(&t.call("bdev_get_bdevs", Some(json!({"name": "nope"})))),
        -19
    );

    let iostat = t.result("bdev_get_iostat", None);
    assert!(iostat["tick_rate"].as_u64().unwrap() > 0);
    assert!(iostat["bdevs"]
        .as_array()
        .unwrap()
        .iter()
        .any(|b| b["name"] == "M0"));

    // Protocol errors get the right codes and the server keeps serving.
    assert_eq!(error_code(&t.call("no_such_method", None)), -32601);
    assert_eq!(
        error_code(&t.call("bdev_malloc_create", Some(json!({"block_size": "big"})))),
        -32602
    );
    let mut bad = Conn::connect(&t.socket);
    bad.send(b"{\"jsonrpc\": \"2.0\", \"method\": ]");
    assert_eq!(error_code(&bad.recv().expect("parse error answer")), -32700);
    assert!(
        bad.closed_by_server(),
        "connection is closed after a parse error"
    );
    let mut not_rpc = Conn::connect(&t.socket);
    not_rpc.send(br#"{"id": 7, "params": {}}"#);
    assert_eq!(error_code(&not_rpc.recv().unwrap()), -32600);

    // Two requests back to back on one connection, the second split in two writes.
    let mut c = Conn::connect(&t.socket);
    c.send(br#"{"jsonrpc":"2.0","method":"spdk_get_version","id":1}{"jsonrpc":"2.0","me"#);
    // The first answer comes before the rest of the second request is sent: the server read the
    // first write alone, so the second request does reach it split across two reads.
    assert_eq!(c.recv().unwrap()["id"], 1);
    c.send(br#"thod":"bdev_get_bdevs","params":{"name":"M0"},"id":2}"#);
    let second = c.recv().unwrap();
    assert_eq!(second["id"], 2);
    assert_eq!(second["result"][0]["name"], "M0");

    assert_eq!(
        t.result("bdev_malloc_delete", Some(json!({"name": "M0"}))),
        true
    );
    assert_eq!(
        error_code(&t.call("bdev_malloc_delete", Some(json!({"name": "M0"})))),
        -19
    );

    let socket = t.socket.clone();
    let out = t.stop();
    assert!(
        out.status.success(),
        "clean exit on SIGTERM: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!socket.exists(), "socket removed on shutdown");
}

#[test]
fn save_config_loads_back_identically() {
    let t = Target::start("save", &[]);
    t.result(
        "bdev_malloc_create",
        Some(json!({"name": "Mal", "num_blocks": 256, "block_size": 512})),
    );
    t.result(
        "bdev_null_create",
        Some(json!({"name": "Nul", "num_blocks": 1024, "block_size": 4096})),
    );
    let saved = t.result("save_config", None);
    assert!(saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .any(|s| s["subsystem"] == "bdev"));
    let path = t.dir.join("saved.json");
    std::fs::write(&path, serde_json::to_string_pretty(&saved).unwrap()).unwrap();

    let again = Target::start("load", &["-c", path.to_str().unwrap()]);
    assert_eq!(
        again.result("save_config", None),
        saved,
        "config round trip"
    );
    let bdevs = again.result("bdev_get_bdevs", Some(json!({"name": "Mal"})));
    assert_eq!(
        bdevs[0]["uuid"],
        t.result("bdev_get_bdevs", Some(json!({"name": "Mal"})))[0]["uuid"]
    );
    drop(t);
    assert!(again.stop().status.success());
}

#[test]
fn start_up_errors_are_clear() {
    let dir = temp_dir("errors");
    let bin = env!("CARGO_BIN_EXE_keel-tgt");
    let run = |args: &[&str]| -> (bool, String) {
        let child = Command::new(bin)
            .args(args)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let out = wait_with_timeout(child, Duration::from_secs(20));
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).to_string(),
        )
    };
    let sock = dir.join("s.sock");
    let sock = sock.to_str().unwrap();

    let (ok, err) = run(&["-m", "0x80000000", "-r", sock]);
    assert!(!ok && err.contains("does not exist"), "bad core: {err}");

    let bad_cfg = dir.join("bad.json");
    std::fs::write(
        &bad_cfg,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"A","num_blocks":8,"block_size":512}},
            {"method":"bdev_malloc_create","params":{"name":"B","num_blocks":8,"block_size":1000}}]}]}"#,
    )
    .unwrap();
    let (ok, err) = run(&["-m", "0x1", "-r", sock, "-c", bad_cfg.to_str().unwrap()]);
    assert!(!ok, "invalid config entry fails start-up");
    assert!(
        err.contains("entry 1") && err.contains("bdev_malloc_create"),
        "names the entry: {err}"
    );
    assert!(
        !Path::new(sock).exists(),
        "socket removed after a failed start-up"
    );

    // A socket path served by another target is refused, and that target keeps serving.
    let t = Target::start("taken", &[]);
    let (ok, err) = run(&[
        "-m",
        "0x1",
        "--no-default",
        "-r",
        t.socket.to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("in use"), "taken socket: {err}");
    assert!(t.call("spdk_get_version", None).get("result").is_some());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn keel_rpc_cli_speaks_rpc_py_arguments() {
    let t = Target::start("cli", &[]);
    let cli = |args: &[&str]| -> Output {
        Command::new(env!("CARGO_BIN_EXE_keel-rpc"))
            .args(["-s", t.socket.to_str().unwrap()])
            .args(args)
            .output()
            .unwrap()
    };
    let out = cli(&["bdev_malloc_create", "-b", "Malloc0", "64", "4096"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "Malloc0");
    let bdevs = t.result("bdev_get_bdevs", Some(json!({"name": "Malloc0"})));
    assert_eq!(bdevs[0]["num_blocks"], 64 * 1024 * 1024 / 4096);

    let out = cli(&["bdev_get_bdevs", "-b", "Malloc0"]);
    let listed: Value = serde_json::from_slice(&out.stdout).expect("JSON output");
    assert_eq!(listed[0]["name"], "Malloc0");

    let out = cli(&["bdev_malloc_delete", "nope"]);
    assert!(!out.status.success(), "errors exit non-zero");
    assert!(String::from_utf8_lossy(&out.stderr).contains("-19"));

    let help = Command::new(env!("CARGO_BIN_EXE_keel-rpc"))
        .args(["bdev_malloc_create", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&help.stdout);
    assert!(
        help.contains("block_size") || help.contains("block-size"),
        "{help}"
    );

    // rpc.py's key arguments reach the target, which refuses them by name (README "Not yet").
    let nqn = "nqn.2016-06.io.keel:cli";
    assert!(cli(&["nvmf_create_subsystem", nqn]).status.success());
    for key in ["--psk", "--dhchap-key", "--dhchap-ctrlr-key"] {
        let out = cli(&[
            "nvmf_subsystem_add_host",
            nqn,
            "nqn.2014-08.org.x:h1",
            key,
            "key0",
        ]);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            !out.status.success() && err.contains("not supported by Keel"),
            "{key}: {err}"
        );
    }
}

#[test]
fn embedded_default_serves_a_namespace_on_4420() {
    // Started without -c: the embedded default config (a 1 GiB malloc namespace on TCP 4420).
    let t = Target::start_with_default("default");
    let subsystems = t.result("nvmf_get_subsystems", None);
    let default = subsystems
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == "nqn.2016-06.io.keel:default")
        .unwrap_or_else(|| panic!("default subsystem missing: {subsystems}"));
    assert_eq!(default["listen_addresses"][0]["trsvcid"], "4420");
    assert_eq!(default["namespaces"][0]["bdev_name"], "Malloc0");
    let m = t.result("bdev_get_bdevs", Some(json!({"name": "Malloc0"})));
    assert_eq!(
        m[0]["num_blocks"].as_u64().unwrap() * m[0]["block_size"].as_u64().unwrap(),
        1 << 30
    );
    assert!(t.stop().status.success());
}

/// A namespace claims its bdev (as SPDK's target does): nothing else may write the host's data
/// while it is exported, and every refusal names the subsystem and namespace holding it. The
/// reverse holds too (a bdev an lvstore or raid claimed cannot be exported), and removing the
/// namespace releases the bdev.
#[test]
#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one end-to-end scenario
fn exported_namespace_claims_its_bdev() {
    let t = Target::start("claim", &[]);
    for (name, blocks) in [("M0", 65536), ("M1", 65536), ("M2", 65536)] {
        t.result(
            "bdev_malloc_create",
            Some(json!({"name": name, "num_blocks": blocks, "block_size": 512})),
        );
    }
    let disk1 = "nqn.2016-06.io.keel:disk1";
    let disk2 = "nqn.2016-06.io.keel:disk2";
    for nqn in [disk1, disk2] {
        t.result(
            "nvmf_create_subsystem",
            Some(json!({"nqn": nqn, "allow_any_host": true})),
        );
    }
    let add_ns = |nqn: &str, bdev: &str| {
        t.call(
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": nqn, "namespace": {"bdev_name": bdev}})),
        )
    };
    let r = add_ns(disk1, "M0");
    assert_eq!(r["result"], 1, "{r}");
    let holder = format!("NVMe-oF namespace 1 of {disk1}");
    let refused = |what: &str, resp: Value| {
        let msg = resp["error"]["message"]
            .as_str()
            .unwrap_or_else(|| panic!("{what} must be refused: {resp}"))
            .to_owned();
        assert!(
            msg.contains("M0") && msg.contains(&holder),
            "{what}: the error must name the bdev and {holder}: {msg}"
        );
    };
    refused(
        "a second namespace in the same subsystem",
        add_ns(disk1, "M0"),
    );
    refused("a namespace in another subsystem", add_ns(disk2, "M0"));
    refused(
        "a raid member",
        t.call(
            "bdev_raid_create",
            Some(json!({"name": "R0", "raid_level": "raid1", "base_bdevs": ["M0", "M1"]})),
        ),
    );
    refused(
        "an lvstore",
        t.call(
            "bdev_lvol_create_lvstore",
            Some(json!({"bdev_name": "M0", "lvs_name": "lvs0"})),
        ),
    );
    refused(
        "a delay bdev",
        t.call(
            "bdev_delay_create",
            Some(
                json!({"base_bdev_name": "M0", "name": "D0", "avg_read_latency": 1,
                        "p99_read_latency": 1, "avg_write_latency": 1, "p99_write_latency": 1}),
            ),
        ),
    );
    refused(
        "an error bdev",
        t.call("bdev_error_create", Some(json!({"base_name": "M0"}))),
    );
    // bdev_get_bdevs says who holds it.
    let m0 = t.result("bdev_get_bdevs", Some(json!({"name": "M0"})));
    assert_eq!(m0[0]["claimed"], true, "{m0}");
    assert_eq!(m0[0]["claimed_by"], holder.as_str(), "{m0}");

    // The reverse: a bdev an lvstore or a raid claimed cannot be exported; the error names
    // the claimer.
    t.result(
        "bdev_lvol_create_lvstore",
        Some(json!({"bdev_name": "M1", "lvs_name": "lvs1"})),
    );
    let r = add_ns(disk2, "M1");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("M1") && msg.contains("lvol"), "{r}");
    t.result(
        "bdev_raid_create",
        Some(
            json!({"name": "R2", "raid_level": "raid0", "strip_size_kb": 4,
                    "base_bdevs": ["M2"]}),
        ),
    );
    let r = add_ns(disk2, "M2");
    let msg = r["error"]["message"].as_str().unwrap_or_default();
    assert!(msg.contains("M2") && msg.contains("raid"), "{r}");

    // Removing the namespace releases the bdev: it can then be exported elsewhere, or used.
    t.result(
        "nvmf_subsystem_remove_ns",
        Some(json!({"nqn": disk1, "nsid": 1})),
    );
    let m0 = t.result("bdev_get_bdevs", Some(json!({"name": "M0"})));
    assert_eq!(m0[0]["claimed"], false, "{m0}");
    let r = add_ns(disk2, "M0");
    assert_eq!(r["result"], 1, "{r}");
    // Deleting the subsystem releases it too; then an lvstore may take it.
    t.result("nvmf_delete_subsystem", Some(json!({"nqn": disk2})));
    t.result(
        "bdev_lvol_create_lvstore",
        Some(json!({"bdev_name": "M0", "lvs_name": "lvs0"})),
    );
    let out = t.stop();
    assert!(
        out.status.success(),
        "clean exit: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// stderr of a stopped target, as text.
fn stderr_of(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).to_string()
}

#[test]
fn unknown_log_flag_is_refused_at_start_up() {
    let dir = temp_dir("logflag");
    let sock = dir.join("s.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_keel-tgt"))
        .args(["-m", "0x1", "--no-default", "-r", sock.to_str().unwrap()])
        .args(["-L", "nvmf", "-L", "nvmf2"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(20));
    let err = stderr_of(&out);
    assert!(
        !out.status.success(),
        "an unknown flag stops start-up: {err}"
    );
    assert!(err.contains("nvmf2"), "names the flag: {err}");
    for known in ["nvmf_tcp", "bdev_raid", "rdma", "lvol", "all"] {
        assert!(err.contains(known), "lists {known}: {err}");
    }
    assert!(!sock.exists(), "nothing was started");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Create a malloc bdev and wait for the examine (the raid module logs at debug whether it
/// found a superblock: a `bdev_raid` debug line per bdev).
fn malloc_examined(t: &Target, name: &str) {
    t.result(
        "bdev_malloc_create",
        Some(json!({"name": name, "num_blocks": 8192, "block_size": 512})),
    );
    t.result("bdev_wait_for_examine", None);
}

#[test]
fn log_flags_change_at_run_time_and_show_that_components_debug_lines() {
    let t = Target::start("logrt", &[]);
    let flags = t.result("log_get_flags", None);
    for f in ["nvmf", "nvmf_tcp", "bdev_raid", "lvol", "rdma", "bdev"] {
        assert_eq!(flags[f], false, "{f} listed and off: {flags}");
    }
    assert_eq!(t.result("log_get_level", None), "INFO");
    assert_eq!(t.result("log_get_print_level", None), "INFO");

    malloc_examined(&t, "Before");
    assert_eq!(
        t.result("log_set_flag", Some(json!({"flag": "bdev_raid"}))),
        true
    );
    assert_eq!(t.result("log_get_flags", None)["bdev_raid"], true);
    malloc_examined(&t, "During");
    assert_eq!(
        t.result("log_clear_flag", Some(json!({"flag": "bdev_raid"}))),
        true
    );
    assert_eq!(t.result("log_get_flags", None)["bdev_raid"], false);
    malloc_examined(&t, "After");

    let bad = t.call("log_set_flag", Some(json!({"flag": "nvmf2"})));
    assert_eq!(error_code(&bad), -32602, "{bad}");
    assert!(bad["error"]["message"]
        .as_str()
        .unwrap()
        .contains("nvmf_tcp"));

    // The level: WARNING hides the info lines (the flag's debug lines still show).
    assert_eq!(
        t.result("log_set_level", Some(json!({"level": "warning"}))),
        true
    );
    assert_eq!(t.result("log_get_level", None), "WARNING");
    t.result(
        "bdev_malloc_create",
        Some(json!({"name": "Quiet", "num_blocks": 64, "block_size": 512})),
    );
    assert_eq!(
        error_code(&t.call("log_set_level", Some(json!({"level": "TRACE"})))),
        -32602
    );
    t.result("log_set_print_level", Some(json!({"level": "INFO"})));
    assert_eq!(t.result("log_get_level", None), "INFO");

    let out = t.stop();
    let err = stderr_of(&out);
    assert!(
        err.contains("bdev During: no raid superblock"),
        "debug line while the flag is on: {err}"
    );
    assert!(!err.contains("bdev Before: no raid superblock"), "{err}");
    assert!(!err.contains("bdev After: no raid superblock"), "{err}");
    assert!(err.contains("bdev Before registered"), "{err}");
    assert!(
        !err.contains("bdev Quiet registered"),
        "no info line at WARNING: {err}"
    );
}

#[test]
fn log_flag_all_turns_on_every_flag_including_raid() {
    let t = Target::start("logall", &["-L", "all"]);
    let flags = t.result("log_get_flags", None);
    assert!(
        flags.as_object().unwrap().values().all(|v| v == true),
        "{flags}"
    );
    malloc_examined(&t, "AllM0");
    let err = stderr_of(&t.stop());
    assert!(err.contains("bdev AllM0: no raid superblock"), "{err}");
}

/// `--listen` replaces the default 127.0.0.1:4420 listener; the start-up log says where.
fn default_listeners(t: &Target) -> Vec<(String, String, String)> {
    assert_eq!(t.result("framework_wait_init", None), true);
    let subsystems = t.result("nvmf_get_subsystems", None);
    let default = subsystems
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["nqn"] == "nqn.2016-06.io.keel:default")
        .unwrap_or_else(|| panic!("default subsystem missing: {subsystems}"))
        .clone();
    default["listen_addresses"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            (
                l["adrfam"].as_str().unwrap().to_string(),
                l["traddr"].as_str().unwrap().to_string(),
                l["trsvcid"].as_str().unwrap().to_string(),
            )
        })
        .collect()
}

#[test]
fn listen_flag_moves_the_default_listener() {
    let t = Target::spawn("listen4", &["--listen", "127.0.0.1:5401"], true);
    assert_eq!(
        default_listeners(&t),
        [("IPv4".into(), "127.0.0.1".into(), "5401".into())]
    );
    let err = stderr_of(&t.stop());
    assert!(
        err.contains("on 127.0.0.1:5401: nvme connect -t tcp -a 127.0.0.1 -s 5401"),
        "{err}"
    );
    assert!(!err.contains("4420"), "{err}");

    // --print-default-config shows the same listeners, as a config keel-tgt -c accepts.
    let printed = Command::new(env!("CARGO_BIN_EXE_keel-tgt"))
        .args(["--print-default-config", "--listen", "127.0.0.1:5401"])
        .args(["--listen", "[::1]:5402"])
        .output()
        .unwrap();
    assert!(printed.status.success());
    let cfg: Value = serde_json::from_slice(&printed.stdout).expect("a JSON config");
    let text = cfg.to_string();
    assert!(
        text.contains(r#""traddr":"127.0.0.1","trsvcid":"5401""#)
            && text.contains(r#""traddr":"::1","trsvcid":"5402""#)
            && !text.contains("4420"),
        "{text}"
    );

    // An address that is not this host's is a start-up error naming it.
    let dir = temp_dir("listenbad");
    let sock = dir.join("s.sock");
    let child = Command::new(env!("CARGO_BIN_EXE_keel-tgt"))
        .args(["-m", "0x1", "-r", sock.to_str().unwrap()])
        .args(["--listen", "192.0.2.1:5404"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let out = wait_with_timeout(child, Duration::from_secs(30));
    let err = stderr_of(&out);
    assert!(!out.status.success(), "{err}");
    assert!(err.contains("192.0.2.1"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn listen_flag_takes_ipv6_in_brackets() {
    if std::net::TcpListener::bind("[::1]:0").is_err() {
        eprintln!("SKIPPED listen_flag_takes_ipv6_in_brackets: this host has no IPv6 loopback");
        return;
    }
    let t = Target::spawn(
        "listen6",
        &["--listen", "[::1]:5402", "--listen", "127.0.0.1:5405"],
        true,
    );
    assert_eq!(
        default_listeners(&t),
        [
            ("IPv6".into(), "::1".into(), "5402".into()),
            ("IPv4".into(), "127.0.0.1".into(), "5405".into())
        ]
    );
    // A host reaches it over IPv6.
    assert!(std::net::TcpStream::connect("[::1]:5402").is_ok());
    assert!(t.stop().status.success());
}

#[test]
fn wait_for_rpc_defers_init_until_framework_start_init() {
    let t = Target::spawn(
        "waitrpc",
        &["--wait-for-rpc", "--listen", "127.0.0.1:5403"],
        true,
    );
    // Startup state: only startup methods.
    let current = t.result("rpc_get_methods", Some(json!({"current": true})));
    let current: Vec<&str> = current
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap())
        .collect();
    for m in [
        "framework_start_init",
        "framework_wait_init",
        "log_set_flag",
        "rpc_get_methods",
        "bdev_raid_set_options",
    ] {
        assert!(
            current.contains(&m),
            "{m} callable before init: {current:?}"
        );
    }
    assert!(!current.contains(&"bdev_malloc_create"), "{current:?}");
    let early = t.call("bdev_get_bdevs", None);
    assert_eq!(error_code(&early), -1, "{early}");
    assert!(early["error"]["message"]
        .as_str()
        .unwrap()
        .contains("after framework is initialized"));
    assert_eq!(
        t.result("log_set_flag", Some(json!({"flag": "nvmf"}))),
        true
    );

    // framework_wait_init waits for the init.
    let mut waiting = UnixStream::connect(&t.socket).unwrap();
    waiting
        .write_all(br#"{"jsonrpc":"2.0","method":"framework_wait_init","id":9}"#)
        .unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let mut b = [0u8; 1];
    assert!(
        waiting.read(&mut b).is_err(),
        "framework_wait_init answered before framework_start_init"
    );

    assert_eq!(t.result("framework_start_init", None), true);
    waiting
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let mut answer = Vec::new();
    let mut chunk = [0u8; 256];
    loop {
        let n = waiting.read(&mut chunk).unwrap();
        assert!(n > 0, "closed before answering");
        answer.extend_from_slice(&chunk[..n]);
        if let Ok(v) = serde_json::from_slice::<Value>(&answer) {
            assert_eq!(v["result"], true, "{v}");
            assert_eq!(v["id"], 9);
            break;
        }
    }
    // Initialised: the default export on the --listen address, every method served.
    assert_eq!(
        default_listeners(&t),
        [("IPv4".into(), "127.0.0.1".into(), "5403".into())]
    );
    assert_eq!(
        t.result("bdev_get_bdevs", Some(json!({"name": "Malloc0"})))[0]["name"],
        "Malloc0"
    );
    let again = t.call("framework_start_init", None);
    assert_eq!(error_code(&again), -1, "{again}");
    assert!(again["error"]["message"]
        .as_str()
        .unwrap()
        .contains("--wait-for-rpc"));
    let all = t.result("rpc_get_methods", Some(json!({"current": true})));
    assert!(all
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "bdev_malloc_create"));
    assert!(!all
        .as_array()
        .unwrap()
        .iter()
        .any(|m| m == "framework_start_init"));
    let err = stderr_of(&t.stop());
    assert!(err.contains("waiting for framework_start_init"), "{err}");
}

#[test]
fn without_wait_for_rpc_start_init_is_refused_and_wait_init_answers() {
    let t = Target::start("nowait", &[]);
    assert_eq!(t.result("framework_wait_init", None), true);
    let late = t.call("framework_start_init", None);
    assert_eq!(error_code(&late), -1, "{late}");
    assert!(t.stop().status.success());
}

#[test]
fn failed_deferred_init_answers_the_error_and_stops() {
    let dir = temp_dir("waitbadcfg");
    let cfg = dir.join("bad.json");
    std::fs::write(
        &cfg,
        r#"{"subsystems":[{"subsystem":"bdev","config":[
            {"method":"bdev_malloc_create","params":{"name":"B","num_blocks":8,"block_size":1000}}]}]}"#,
    )
    .unwrap();
    let t = Target::start("waitbad", &["--wait-for-rpc", "-c", cfg.to_str().unwrap()]);
    let resp = t.call("framework_start_init", None);
    assert_eq!(error_code(&resp), -32603, "{resp}");
    assert!(
        resp["error"]["message"]
            .as_str()
            .unwrap()
            .contains("framework_initialization failed"),
        "{resp}"
    );
    let out = t.stop();
    assert!(!out.status.success(), "exit code says start-up failed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 11 item 3: a SIGTERM while the config's malloc populates its memory cancels the
/// population, registers nothing and exits 0 at once (the RPC socket never opened).
#[test]
fn sigterm_while_a_malloc_populates_exits_cleanly() {
    let dir = temp_dir("populate");
    let cfg = dir.join("big.json");
    // 4 GiB (half the host's memory if that is less): seconds to populate.
    let mem_total: u64 = std::fs::read_to_string("/proc/meminfo")
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .expect("MemTotal")
        * 1024;
    let blocks = (4u64 << 30).min(mem_total / 2) / 4096;
    std::fs::write(
        &cfg,
        json!({ "subsystems": [{ "subsystem": "bdev", "config": [
            { "method": "bdev_malloc_create",
              "params": { "name": "Big0", "num_blocks": blocks, "block_size": 4096 } }
        ]}]})
        .to_string(),
    )
    .unwrap();
    let socket = dir.join("keel.sock");
    let mut child = Command::new(env!("CARGO_BIN_EXE_keel-tgt"))
        .args(["-m", "0x1", "--interrupt-mode", "-r"])
        .arg(&socket)
        .arg("-c")
        .arg(&cfg)
        .env("RUST_LOG", "info")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("spawn keel-tgt");
    // Stop it while it populates: once it says it does (the creation is pending by then).
    let stderr = child.stderr.take().expect("piped stderr");
    let (populating, seen) = std::sync::mpsc::channel();
    let reader = std::thread::spawn(move || {
        let mut all = String::new();
        for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)) {
            let Ok(line) = line else { break };
            if line.contains("malloc Big0: populating") {
                let _ = populating.send(());
            }
            all.push_str(&line);
            all.push('\n');
        }
        all
    });
    seen.recv_timeout(Duration::from_secs(30))
        .expect("keel-tgt logs that it populates Big0");
    // SAFETY: plain kill(2) on our own child's pid.
    unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGTERM) };
    let start = Instant::now();
    let out = wait_with_timeout(child, Duration::from_secs(20));
    let err = reader.join().expect("stderr reader");
    assert!(out.status.success(), "{err}");
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "{:?}",
        start.elapsed()
    );
    assert!(err.contains("malloc Big0: creation cancelled"), "{err}");
    assert!(!err.contains("populated"), "{err}");
    assert!(!socket.exists(), "the RPC socket never opened");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Voluntary context switches (sleeps that ended) of every thread of process `pid`.
fn voluntary_switches(pid: u32) -> u64 {
    let mut total = 0;
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let status =
            std::fs::read_to_string(task.unwrap().path().join("status")).unwrap_or_default();
        for line in status.lines() {
            if let Some(v) = line.strip_prefix("voluntary_ctxt_switches:") {
                total += v.trim().parse::<u64>().unwrap();
            }
        }
    }
    total
}

#[test]
fn idle_target_in_interrupt_mode_sleeps() {
    // The embedded default (a malloc namespace, an NVMe/TCP listener), on a free port, in
    // interrupt mode: every thread sleeps until a timer it needs. It used to wake ~2,000 times
    // a second (a 0.5 ms accept poller) and its main thread 5 times a second (signal wait).
    let dir = temp_dir("idle-cfg");
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let out = Command::new(env!("CARGO_BIN_EXE_keel-tgt"))
        .arg("--print-default-config")
        .output()
        .unwrap();
    let cfg = String::from_utf8(out.stdout)
        .unwrap()
        .replace("\"4420\"", &format!("\"{port}\""));
    let path = dir.join("default.json");
    std::fs::write(&path, cfg).unwrap();
    let t = Target::start("idle", &["-c", path.to_str().unwrap()]);
    let pid = t.child.as_ref().unwrap().id();
    std::thread::sleep(Duration::from_millis(500));
    let window = Duration::from_secs(3);
    let before = voluntary_switches(pid);
    std::thread::sleep(window);
    let woke = voluntary_switches(pid) - before;
    eprintln!("{woke} wake-ups of keel-tgt in {window:?}");
    // The reactor's safety net (one sleep ends every second without a timer) and slack.
    assert!(
        woke <= 3 + 3,
        "{woke} wake-ups in {window:?} of an idle target"
    );
    assert!(t.stop().status.success());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The `bdev` section of a saved config.
fn bdev_section(saved: &Value) -> Vec<Value> {
    saved["subsystems"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["subsystem"] == "bdev")
        .expect("a bdev section")["config"]
        .as_array()
        .unwrap()
        .clone()
}

/// SPDK's `bdev_auto_examine`: with it off (`bdev_set_options` first in the config), a disk
/// whose host wrote an lvstore into it is not taken by lvol examine at start-up and can be
/// exported; `bdev_examine` loads the lvstore on request; a saved config keeps both.
#[test]
fn auto_examine_off_leaves_a_disk_holding_an_lvstore_to_the_config() {
    let dir = temp_dir("examine");
    let img = dir.join("disk.img");
    std::fs::File::create(&img)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
    let uring = json!({"filename": img.to_str().unwrap(), "name": "U0", "block_size": 4096});

    // A first run writes an lvstore and a volume into the file (as a guest's own SPDK would).
    let t = Target::start("examine1", &[]);
    t.result("bdev_uring_create", Some(uring.clone()));
    t.result(
        "bdev_lvol_create_lvstore",
        Some(json!({"bdev_name": "U0", "lvs_name": "lvs0"})),
    );
    t.result(
        "bdev_lvol_create",
        Some(json!({"lvol_name": "v0", "size_in_mib": 4, "lvs_name": "lvs0"})),
    );
    // Auto examine is on: bdev_examine is SPDK's -EINVAL; bdev_set_options is a startup method.
    let r = t.call("bdev_examine", Some(json!({"name": "U0"})));
    assert_eq!(error_code(&r), -libc::EINVAL as i64, "{r}");
    let r = t.call(
        "bdev_set_options",
        Some(json!({"bdev_auto_examine": false})),
    );
    assert_eq!(error_code(&r), -1, "{r}");
    assert!(t.stop().status.success());

    // Restart with auto examine off: U0 registers unclaimed, no lvstore is loaded.
    let cfg = dir.join("off.json");
    std::fs::write(
        &cfg,
        json!({"subsystems": [{"subsystem": "bdev", "config": [
            {"method": "bdev_set_options", "params": {"bdev_auto_examine": false}},
            {"method": "bdev_uring_create", "params": uring},
            {"method": "bdev_wait_for_examine"}]}]})
        .to_string(),
    )
    .unwrap();
    let t = Target::start("examine2", &["-c", cfg.to_str().unwrap()]);
    let u0 = &t.result("bdev_get_bdevs", Some(json!({"name": "U0"})))[0];
    assert_eq!(u0["claimed"], false, "{u0}");
    assert_eq!(t.result("bdev_lvol_get_lvstores", None), json!([]));
    // So the config can export it as a namespace (the host's own lvstore stays the host's).
    let nqn = "nqn.2016-06.io.keel:examine";
    t.result(
        "nvmf_create_subsystem",
        Some(json!({"nqn": nqn, "allow_any_host": true})),
    );
    let add_ns = || {
        t.call(
            "nvmf_subsystem_add_ns",
            Some(json!({"nqn": nqn, "namespace": {"bdev_name": "U0"}})),
        )
    };
    assert_eq!(add_ns()["result"], 1);
    // A claimed bdev is not examined behind its holder's back.
    let r = t.call("bdev_examine", Some(json!({"name": "U0"})));
    assert_eq!(error_code(&r), -libc::EBUSY as i64, "{r}");
    t.result(
        "nvmf_subsystem_remove_ns",
        Some(json!({"nqn": nqn, "nsid": 1})),
    );
    // bdev_examine loads it now.
    assert_eq!(t.result("bdev_examine", Some(json!({"name": "U0"}))), true);
    t.result("bdev_wait_for_examine", None);
    let stores = t.result("bdev_lvol_get_lvstores", None);
    assert_eq!(stores[0]["name"], "lvs0", "{stores}");
    assert_eq!(
        t.result("bdev_get_bdevs", Some(json!({"name": "lvs0/v0"})))[0]["claimed"],
        false
    );
    let u0 = &t.result("bdev_get_bdevs", Some(json!({"name": "U0"})))[0];
    assert_eq!(u0["claimed"], true, "{u0}");
    let r = t.call("bdev_examine", Some(json!({"name": "U0"})));
    assert_eq!(error_code(&r), -libc::EEXIST as i64, "{r}");
    // save_config starts the bdev section with the option and the examined name.
    let saved = t.result("save_config", None);
    let bdev = bdev_section(&saved);
    assert_eq!(
        bdev[..2],
        [
            json!({"method": "bdev_set_options", "params": {"bdev_auto_examine": false}}),
            json!({"method": "bdev_examine", "params": {"name": "U0"}}),
        ],
        "{saved}"
    );
    let saved_path = dir.join("saved.json");
    std::fs::write(&saved_path, saved.to_string()).unwrap();
    assert!(t.stop().status.success());

    // The saved config reloads with the same behaviour: U0 examined (named), lvs0 back.
    let t = Target::start("examine3", &["-c", saved_path.to_str().unwrap()]);
    assert_eq!(t.result("bdev_lvol_get_lvstores", None)[0]["name"], "lvs0");
    assert_eq!(bdev_section(&t.result("save_config", None)), bdev);
    assert!(t.stop().status.success());
    let _ = std::fs::remove_dir_all(&dir);
}
