//! End-to-end: start the real `keel-tgt` binary, drive it over its JSON-RPC socket like a user
//! (and like SPDK's rpc.py would), stop it with a signal, and check what it left behind.

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
        let deadline = Instant::now() + Duration::from_secs(20);
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
        let mut conn = Conn::open(&self.socket);
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

/// A raw client connection that reads complete JSON values like rpc.py does.
struct Conn {
    stream: UnixStream,
    buf: Vec<u8>,
}

impl Conn {
    fn open(path: &Path) -> Conn {
        let stream = UnixStream::connect(path).expect("connect to keel-tgt");
        stream
            .set_read_timeout(Some(Duration::from_secs(20)))
            .unwrap();
        Conn {
            stream,
            buf: Vec::new(),
        }
    }
    fn send(&mut self, bytes: &[u8]) {
        self.stream.write_all(bytes).unwrap();
    }
    /// Next complete JSON value, or None when the server closed the connection first.
    fn recv(&mut self) -> Option<Value> {
        loop {
            let text = String::from_utf8_lossy(&self.buf).to_string();
            let mut it = serde_json::Deserializer::from_str(&text).into_iter::<Value>();
            if let Some(Ok(v)) = it.next() {
                let used = it.byte_offset();
                self.buf.drain(..used);
                return Some(v);
            }
            let mut chunk = [0u8; 4096];
            match self.stream.read(&mut chunk) {
                Ok(0) => return None,
                Ok(n) => self.buf.extend_from_slice(&chunk[..n]),
                Err(e) => panic!("read from keel-tgt: {e}"),
            }
        }
    }
    /// Whether the server closed the connection (EOF).
    fn closed_by_server(&mut self) -> bool {
        let mut b = [0u8; 1];
        matches!(self.stream.read(&mut b), Ok(0))
    }
}

fn error_code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {resp}"))
}

#[test]
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
    let mut bad = Conn::open(&t.socket);
    bad.send(b"{\"jsonrpc\": \"2.0\", \"method\": ]");
    assert_eq!(error_code(&bad.recv().expect("parse error answer")), -32700);
    assert!(
        bad.closed_by_server(),
        "connection is closed after a parse error"
    );
    let mut not_rpc = Conn::open(&t.socket);
    not_rpc.send(br#"{"id": 7, "params": {}}"#);
    assert_eq!(error_code(&not_rpc.recv().unwrap()), -32600);

    // Two requests back to back on one connection, the second split in two writes.
    let mut c = Conn::open(&t.socket);
    c.send(br#"{"jsonrpc":"2.0","method":"spdk_get_version","id":1}{"jsonrpc":"2.0","me"#);
    std::thread::sleep(Duration::from_millis(50));
    c.send(br#"thod":"bdev_get_bdevs","params":{"name":"M0"},"id":2}"#);
    assert_eq!(c.recv().unwrap()["id"], 1);
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
