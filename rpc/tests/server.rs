//! End-to-end tests of the JSON-RPC server on a real reactor runtime, with std `UnixStream`
//! clients. The runtime is process-global: the tests take `SERIAL` and each starts and joins
//! its own runtime.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use keel_rpc::{HandlerFuture, MethodSpec, RpcServer};
use keel_testkit::json_rpc::JsonConn as Client;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::future::Future;
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::UnixListener;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{mpsc, Mutex};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

static SERIAL: Mutex<()> = Mutex::new(());

thread_local! {
    /// The server, owned by the main reactor.
    static SERVER: RefCell<Option<RpcServer>> = const { RefCell::new(None) };
}

/// A gate a handler waits on until the test opens it (woken from the test thread).
static GATE: Mutex<(bool, Option<Waker>)> = Mutex::new((false, None));

struct GateFuture;

impl Future for GateFuture {
    type Output = ();
    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut gate = GATE.lock().unwrap();
        if gate.0 {
            Poll::Ready(())
        } else {
            gate.1 = Some(cx.waker().clone());
            Poll::Pending
        }
    }
}

fn set_gate(open: bool) {
    let mut gate = GATE.lock().unwrap();
    gate.0 = open;
    if let Some(w) = gate.1.take().filter(|_| open) {
        w.wake();
    }
}

static GATED: MethodSpec = MethodSpec {
    name: "test_gated",
    help: "",
    params: &[],
    cli_rewrite: None,
};
static ECHO: MethodSpec = MethodSpec {
    name: "test_echo",
    help: "",
    params: &[],
    cli_rewrite: None,
};

fn gated(_: Option<Value>) -> HandlerFuture {
    Box::pin(async {
        GateFuture.await;
        Ok(json!("released"))
    })
}

fn echo(p: Option<Value>) -> HandlerFuture {
    Box::pin(async move { Ok(p.unwrap_or(Value::Null)) })
}

fn register() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        keel_rpc::register_builtin_methods();
        keel_rpc::register_method(&GATED, gated);
        keel_rpc::register_method(&ECHO, echo);
    });
}

/// Run `f` on the main reactor and wait for its result.
fn on_main<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> R {
    let (tx, rx) = mpsc::channel();
    let main = keel_reactor::main_core().expect("runtime running");
    keel_reactor::send_to(main, move || {
        let _ = tx.send(f());
    })
    .expect("main reactor reachable");
    rx.recv_timeout(Duration::from_secs(20))
        .expect("main reactor answers")
}

fn start_server(path: &Path) -> Result<(), String> {
    let path = path.to_str().unwrap().to_string();
    on_main(move || match RpcServer::start(&path) {
        Ok(server) => {
            SERVER.with(|s| *s.borrow_mut() = Some(server));
            Ok(())
        }
        Err(e) => Err(e.to_string()),
    })
}

fn stop_server() {
    on_main(|| SERVER.with(|s| drop(s.borrow_mut().take())));
}

fn code(resp: &Value) -> i64 {
    resp["error"]["code"]
        .as_i64()
        .unwrap_or_else(|| panic!("expected an error, got {resp}"))
}

fn temp_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("keel-rpc-server-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

#[allow(clippy::too_many_lines)] // ratchet (ARCHITECTURE.md): one scenario
fn scenario(interrupt_mode: bool) {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    register();
    set_gate(false);
    let dir = temp_dir(if interrupt_mode { "intr" } else { "busy" });
    let path = dir.join("keel.sock");

    // A stale socket file: bound once, nobody listens any more.
    drop(UnixListener::bind(&path).unwrap());
    assert!(path.exists());

    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").unwrap(),
        interrupt_mode,
        pin_threads: false,
    };
    let rt = Runtime::start(opts, || {}).expect("runtime starts");

    // Starting outside a reactor is an error, not a panic.
    assert!(RpcServer::start(path.to_str().unwrap()).is_err());

    start_server(&path).expect("stale socket replaced");
    assert!(std::fs::metadata(&path).unwrap().file_type().is_socket());
    let err = start_server(&path).expect_err("live socket refused");
    assert!(err.contains("in use"), "{err}");

    // A valid call, and the built-in framework methods.
    let mut c = Client::connect(&path);
    let v = c.call("spdk_get_version", None, 1);
    assert_eq!(
        v["result"]["version"],
        format!("Keel v{}", env!("CARGO_PKG_VERSION"))
    );
    let r = c.call("framework_get_reactors", None, 2);
    let reactors = r["result"]["reactors"].as_array().unwrap();
    assert_eq!(reactors.len(), 1);
    assert_eq!(reactors[0]["in_interrupt"], interrupt_mode);
    let lw = &reactors[0]["lw_threads"][0];
    assert_eq!(
        (&lw["name"], &lw["id"], &lw["cpumask"]),
        (&json!("reactor_0"), &json!(1), &json!("1"))
    );
    assert!(r["result"]["tick_rate"].as_u64().unwrap() > 0);
    assert_eq!(r["result"]["pid"], std::process::id());
    // thread_get_stats: one thread per reactor, SPDK's fields; the RPC server's own poller
    // counts as an active (interrupt mode: timed) poller.
    let t = c.call("thread_get_stats", None, 20);
    let threads = t["result"]["threads"].as_array().unwrap();
    assert_eq!(threads.len(), 1, "{t}");
    assert_eq!(threads[0]["name"], "reactor_0");
    assert_eq!(threads[0]["cpumask"], "1");
    assert_eq!(threads[0]["in_interrupt"], interrupt_mode);
    let pollers = threads[0]["active_pollers_count"].as_u64().unwrap()
        + threads[0]["timed_pollers_count"].as_u64().unwrap();
    assert!(pollers >= 1, "{t}");
    assert!(t["result"]["tick_rate"].as_u64().unwrap() > 0);
    assert!(threads[0]["busy"].as_u64().unwrap() + threads[0]["idle"].as_u64().unwrap() > 0);
    let bad = c.call("thread_get_stats", Some(json!({"x": 1})), 21);
    assert_eq!(bad["error"]["code"], -32602);
    let missing = c.call("bdev_nvme_attach_controller", None, 22);
    assert_eq!(missing["error"]["code"], -32601);
    assert!(
        missing["error"]["message"]
            .as_str()
            .unwrap()
            .contains("Keel does not support the SPDK method bdev_nvme_attach_controller yet"),
        "{missing}"
    );

    // A request split into several writes.
    let req = br#" {"jsonrpc":"2.0","method":"test_echo","params":{"s":"}\"]"},"id":3}"#;
    for part in [&req[..5], &req[5..30], &req[30..]] {
        c.send(part);
        std::thread::sleep(Duration::from_millis(5));
    }
    let r = c.recv().unwrap();
    assert_eq!(
        (r["id"].clone(), r["result"].clone()),
        (json!(3), json!({"s": "}\"]"}))
    );

    // Two requests and a notification back to back in one write: answered in order, the
    // notification not at all.
    c.send(
        br#"{"jsonrpc":"2.0","method":"test_echo","params":[4],"id":4}
            {"jsonrpc":"2.0","method":"test_echo","params":["n"]}{"jsonrpc":"2.0","method":"test_echo","params":[5],"id":5}"#,
    );
    assert_eq!(c.recv().unwrap()["result"], json!([4]));
    assert_eq!(c.recv().unwrap()["result"], json!([5]));

    // Protocol errors keep the connection.
    assert_eq!(code(&c.call("no_such_method", None, 6)), -32601);
    c.send(br#"{"id": 7, "params": {}}"#);
    let r = c.recv().unwrap();
    assert_eq!((code(&r), r["id"].clone()), (-32600, json!(7)));
    let r = c.call("framework_get_config", Some(json!({"nope": 1})), 8);
    assert_eq!(code(&r), -32602);
    assert_eq!(
        c.call("test_echo", Some(json!([9])), 9)["result"],
        json!([9])
    );

    // Calls on one connection are answered in order; connections are served concurrently.
    let mut a = Client::connect(&path);
    let mut b = Client::connect(&path);
    a.send(br#"{"jsonrpc":"2.0","method":"test_gated","id":10}{"jsonrpc":"2.0","method":"test_echo","params":[11],"id":11}"#);
    assert_eq!(
        b.call("test_echo", Some(json!([20])), 20)["result"],
        json!([20])
    );
    assert!(a.nothing_pending(), "gated call and the one after it wait");
    set_gate(true);
    assert_eq!(a.recv().unwrap()["result"], "released");
    assert_eq!(a.recv().unwrap()["result"], json!([11]));

    // Garbage: -32700 and the connection is closed, while another one keeps working.
    let mut bad = Client::connect(&path);
    bad.send(b"{\"jsonrpc\": \"2.0\", \"method\": ]");
    let r = bad.recv().unwrap();
    assert_eq!((code(&r), r["id"].clone()), (-32700, Value::Null));
    assert!(bad.recv().is_none(), "closed after a parse error");
    let mut bad = Client::connect(&path);
    bad.send(b"hello");
    assert_eq!(code(&bad.recv().unwrap()), -32700);
    assert!(bad.recv().is_none());
    assert_eq!(
        b.call("test_echo", Some(json!([21])), 21)["result"],
        json!([21])
    );

    // A request larger than the limit is refused and the connection closed.
    let mut big = Client::connect(&path);
    let mut writer = big.writer();
    let feeder = std::thread::spawn(move || {
        let _ = writer.write_all(br#"{"jsonrpc":"2.0","method":"test_echo","params":[""#);
        let chunk = vec![b'x'; 1024 * 1024];
        for _ in 0..17 {
            if writer.write_all(&chunk).is_err() {
                break; // the server closed the connection
            }
        }
    });
    let r = big.recv().unwrap();
    assert_eq!(code(&r), -32600);
    assert!(
        r["error"]["message"]
            .as_str()
            .unwrap()
            .contains("too large"),
        "{r}"
    );
    feeder.join().unwrap();
    assert!(big.recv().is_none());

    // A client that leaves in the middle of a request does not disturb the others.
    let mut gone = Client::connect(&path);
    gone.send(br#"{"jsonrpc":"2.0","me"#);
    drop(gone);
    // Connections are accepted in order: once a later one is served, `gone` was accepted.
    let mut later = Client::connect(&path);
    assert_eq!(
        later.call("test_echo", Some(json!([22])), 22)["result"],
        json!([22])
    );
    assert_eq!(
        b.call("test_echo", Some(json!([23])), 23)["result"],
        json!([23])
    );

    // Stopping the server closes the connections and removes the socket file.
    stop_server();
    assert!(!path.exists(), "socket removed");
    assert!(b.recv().is_none(), "connection closed by the server");

    keel_reactor::request_shutdown();
    rt.join();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn server_end_to_end_busy_polling() {
    scenario(false);
}

#[test]
fn server_end_to_end_interrupt_mode() {
    scenario(true);
}

#[test]
fn socket_path_that_is_not_a_socket_is_left_alone() {
    let _serial = SERIAL.lock().unwrap_or_else(|e| e.into_inner());
    register();
    let dir = temp_dir("file");
    let path = dir.join("not-a-socket");
    std::fs::write(&path, b"data").unwrap();
    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").unwrap(),
        interrupt_mode: false,
        pin_threads: false,
    };
    let rt = Runtime::start(opts, || {}).expect("runtime starts");
    let err = start_server(&path).expect_err("a regular file is not replaced");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), b"data");
    keel_reactor::request_shutdown();
    rt.join();
    std::fs::remove_dir_all(&dir).unwrap();
}
