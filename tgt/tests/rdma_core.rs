//! keel-tgt without rdma-core: the binary does not link libibverbs or librdmacm (it loads them
//! when RDMA is first asked for), and on a host without them `nvmf_create_transport -t RDMA`
//! answers that rdma-core is not installed while the target keeps serving.
#![allow(clippy::unwrap_used)] // test code: a failed unwrap fails the test

use serde_json::{json, Value};
use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The NEEDED entries of an ELF file's dynamic section, as `readelf -d` prints them. readelf is
/// part of binutils, which the linker that built the binary comes from.
fn needed(path: &str) -> Vec<String> {
    let out = Command::new("readelf")
        .args(["-d", "--wide", path])
        .output()
        .expect("run readelf (binutils) on keel-tgt");
    assert!(out.status.success(), "readelf -d {path} failed: {out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let libs: Vec<String> = text
        .lines()
        .filter(|l| l.contains("(NEEDED)"))
        .filter_map(|l| {
            let start = l.find('[')? + 1;
            let end = l.rfind(']')?;
            Some(l[start..end].to_string())
        })
        .collect();
    assert!(
        libs.iter().any(|l| l.starts_with("libc.so")),
        "no NEEDED libc in {path}: is this a dynamic section? {text}"
    );
    libs
}

#[test]
fn keel_tgt_does_not_link_rdma_core() {
    for bin in [
        env!("CARGO_BIN_EXE_keel-tgt"),
        env!("CARGO_BIN_EXE_keel-rpc"),
    ] {
        let libs = needed(bin);
        let rdma: Vec<_> = libs
            .iter()
            .filter(|l| l.starts_with("libibverbs") || l.starts_with("librdmacm"))
            .collect();
        assert!(
            rdma.is_empty(),
            "{bin} needs {rdma:?} at start-up: it would not start without rdma-core"
        );
    }
}

struct Target {
    child: Child,
    socket: PathBuf,
}

impl Target {
    fn start(tag: &str, env: &[(&str, &str)]) -> Target {
        let socket =
            std::env::temp_dir().join(format!("keel-rdma-core-{tag}-{}.sock", std::process::id()));
        let _ = std::fs::remove_file(&socket);
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_keel-tgt"));
        cmd.args(["-m", "0x1", "--interrupt-mode", "--no-default", "-r"])
            .arg(&socket)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut t = Target {
            child: cmd.spawn().expect("spawn keel-tgt"),
            socket,
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        while UnixStream::connect(&t.socket).is_err() {
            assert!(
                t.child.try_wait().unwrap().is_none(),
                "keel-tgt exited early"
            );
            assert!(Instant::now() < deadline, "keel-tgt did not start");
            std::thread::sleep(Duration::from_millis(50));
        }
        t
    }

    fn call(&self, method: &str, params: Value) -> Value {
        let mut s = UnixStream::connect(&self.socket).expect("connect");
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let req = json!({"jsonrpc": "2.0", "method": method, "id": 1, "params": params});
        s.write_all(req.to_string().as_bytes()).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 4096];
        loop {
            if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                return v;
            }
            let n = s.read(&mut chunk).expect("read the answer");
            assert!(
                n > 0,
                "keel-tgt closed the connection without answering {method}"
            );
            buf.extend_from_slice(&chunk[..n]);
        }
    }
}

impl Drop for Target {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_file(&self.socket);
    }
}

#[test]
fn rdma_transport_without_rdma_core_is_a_clear_error_and_tcp_keeps_serving() {
    // KEEL_RDMA_CORE_LIBDIR: load rdma-core from this directory (here: one without it).
    let t = Target::start(
        "missing",
        &[("KEEL_RDMA_CORE_LIBDIR", "/nonexistent/rdma-core")],
    );
    let r = t.call("nvmf_create_transport", json!({"trtype": "RDMA"}));
    let msg = r["error"]["message"]
        .as_str()
        .unwrap_or_else(|| panic!("{r}"));
    assert_eq!(
        msg,
        "RDMA transport: rdma-core is not installed (/nonexistent/rdma-core/libibverbs.so.1 \
         not found: install rdma-core / ibverbs-providers librdmacm1)",
        "{r}"
    );
    // Asked again: the same answer (the failed load is remembered, not retried per call).
    let again = t.call("nvmf_create_transport", json!({"trtype": "RDMA"}));
    assert_eq!(again["error"]["message"], r["error"]["message"]);
    // The target still serves: TCP transport, a bdev, a subsystem.
    let tcp = t.call("nvmf_create_transport", json!({"trtype": "TCP"}));
    assert!(tcp.get("error").is_none(), "{tcp}");
    let m = t.call(
        "bdev_malloc_create",
        json!({"name": "M0", "num_blocks": 2048, "block_size": 512}),
    );
    assert_eq!(m["result"], "M0", "{m}");
    let v = t.call("spdk_get_version", json!(null));
    assert!(v.get("result").is_some(), "{v}");
}

#[test]
fn rdma_transport_with_rdma_core_loads_it() {
    // This host's rdma-core (if any): the answer is never "not installed" when the library
    // is there; without a device it is today's "no RDMA device" message.
    let t = Target::start("system", &[]);
    let r = t.call("nvmf_create_transport", json!({"trtype": "RDMA"}));
    let have_verbs = [
        "/usr/lib/x86_64-linux-gnu",
        "/usr/lib/aarch64-linux-gnu",
        "/usr/lib64",
        "/usr/lib",
    ]
    .iter()
    .any(|d| std::path::Path::new(d).join("libibverbs.so.1").exists());
    match r["error"]["message"].as_str() {
        None => assert!(have_verbs, "an RDMA transport without libibverbs: {r}"),
        Some(m) if have_verbs => assert!(
            m.starts_with("RDMA transport: this machine has no RDMA device")
                || m.starts_with("RDMA transport: cannot list RDMA devices"),
            "{m}"
        ),
        Some(m) => assert!(m.contains("rdma-core is not installed"), "{m}"),
    }
}
