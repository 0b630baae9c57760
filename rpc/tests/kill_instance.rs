//! `spdk_kill_instance` answers, then raises the signal on the process. The signal is blocked
//! in every thread (as keel-tgt does) and taken with `sigtimedwait`, so the test survives it.
//! Runs without the libtest harness (`harness = false`) so no thread leaves SIGTERM unblocked.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use keel_reactor::{CpuMask, Runtime, RuntimeOptions};
use keel_rpc::RpcServer;
use serde_json::{json, Value};
use std::cell::RefCell;
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::sync::mpsc;
use std::time::Duration;

thread_local! {
    static SERVER: RefCell<Option<RpcServer>> = const { RefCell::new(None) };
}

fn sigterm_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a sigset_t we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGTERM);
        set
    }
}

fn call(path: &std::path::Path, req: Value) -> Value {
    let mut s = UnixStream::connect(path).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
    s.write_all(req.to_string().as_bytes()).unwrap();
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let keel_rpc::framing::Scan::Complete(n) = keel_rpc::framing::find_value_end(&buf) {
            return serde_json::from_slice(&buf[..n]).unwrap();
        }
        let n = s.read(&mut chunk).unwrap();
        assert!(n > 0, "connection closed before the answer");
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let set = sigterm_set();
    assert_eq!(
        // SAFETY: valid set, null old-set pointer; done before any other thread starts.
        unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) },
        0
    );

    keel_rpc::register_builtin_methods();
    let dir = std::env::temp_dir().join(format!("keel-rpc-kill-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("keel.sock");

    let opts = RuntimeOptions {
        cpumask: CpuMask::parse("0x1").unwrap(),
        interrupt_mode: true,
        pin_threads: false,
    };
    let rt = Runtime::start(opts, || {}).unwrap();
    let (tx, rx) = mpsc::channel();
    let p = path.to_str().unwrap().to_string();
    keel_reactor::send_to(keel_reactor::main_core().unwrap(), move || {
        let started = RpcServer::start(&p).map(|s| SERVER.with(|c| *c.borrow_mut() = Some(s)));
        tx.send(started.map_err(|e| e.to_string())).unwrap();
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(20)).unwrap().unwrap();

    let bad = call(
        &path,
        json!({"jsonrpc": "2.0", "method": "spdk_kill_instance", "params": {"sig_name": "SIGHUP"}, "id": 1}),
    );
    assert_eq!(bad["error"]["code"], -32602, "{bad}");

    let ok = call(
        &path,
        json!({"jsonrpc": "2.0", "method": "spdk_kill_instance", "params": {"sig_name": "SIGTERM"}, "id": 2}),
    );
    assert_eq!(ok["result"], true, "{ok}");
    let ts = libc::timespec {
        tv_sec: 20,
        tv_nsec: 0,
    };
    // SAFETY: valid set and timespec; a null siginfo pointer is allowed.
    let sig = unsafe { libc::sigtimedwait(&set, std::ptr::null_mut(), &ts) };
    assert_eq!(sig, libc::SIGTERM, "SIGTERM raised after the answer");

    let (tx, rx) = mpsc::channel();
    keel_reactor::send_to(keel_reactor::main_core().unwrap(), move || {
        SERVER.with(|c| drop(c.borrow_mut().take()));
        tx.send(()).unwrap();
    })
    .unwrap();
    rx.recv_timeout(Duration::from_secs(20)).unwrap();
    keel_reactor::request_shutdown();
    rt.join();
    std::fs::remove_dir_all(&dir).unwrap();
    println!("kill_instance: ok");
}
