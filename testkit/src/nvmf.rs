//! An in-process Keel NVMe/TCP target for tests that drive a host against one (feature
//! `nvmf`): subsystems open to any host, malloc namespaces, listeners on free loopback ports.

use keel_bdev::modules::malloc;
use keel_nvmf::target::{self, NamespaceOpts, SubsystemOpts};
use keel_nvmf::transport::{AdrFam, ListenAddr, TrType, TransportOpts};
use std::net::{SocketAddr, TcpListener};

/// A free loopback TCP port: bind port 0, read it back, release it (the target binds it again
/// at once).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind an ephemeral loopback port")
        .port()
}

/// On a reactor (the TCP transport exists already): subsystem `nqn`, open to any host, with
/// one namespace per bdev of `bdevs` (nsids 1, 2, … in order) and a TCP listener on
/// 127.0.0.1:`port`.
pub async fn serve_subsystem(nqn: &str, bdevs: &[&str], port: u16) -> Result<(), String> {
    let opts = SubsystemOpts {
        allow_any_host: true,
        ..SubsystemOpts::default()
    };
    target::create_subsystem(nqn, opts).map_err(|e| e.to_string())?;
    for (nsid, bdev) in (1..).zip(bdevs) {
        let ns = NamespaceOpts {
            bdev_name: (*bdev).into(),
            nsid: Some(nsid),
            ..NamespaceOpts::default()
        };
        target::add_namespace(nqn, ns)
            .await
            .map_err(|e| e.to_string())?;
    }
    let addr = ListenAddr {
        trtype: TrType::Tcp,
        adrfam: AdrFam::Ipv4,
        traddr: "127.0.0.1".into(),
        trsvcid: port.to_string(),
    };
    target::add_listener(nqn, addr).map_err(|e| e.to_string())
}

/// Start the test process's runtime on core 0 alone (busy polling; see
/// [`crate::reactors::start`]) and a target on it: the TCP transport and subsystem `nqn` with
/// one malloc namespace of `blocks` 4 KiB blocks per `(bdev name, blocks)` of `namespaces`,
/// listening on a free loopback port. Returns the target's address. Call once per process
/// (e.g. behind a `OnceLock`): the transport and the names exist only once.
pub fn tcp_target(nqn: &str, namespaces: &[(&str, u64)]) -> SocketAddr {
    crate::reactors::start("0x1", false);
    let port = free_port();
    let nqn = nqn.to_string();
    let namespaces: Vec<(String, u64)> = namespaces
        .iter()
        .map(|&(name, blocks)| (name.to_string(), blocks))
        .collect();
    crate::reactors::run_on(0, move || async move {
        keel_nvmf::tcp::register();
        target::create_transport(TransportOpts::tcp_defaults()).map_err(|e| e.to_string())?;
        for (name, blocks) in &namespaces {
            malloc::create(name, *blocks, 4096, None).map_err(|e| e.to_string())?;
        }
        let bdevs: Vec<&str> = namespaces.iter().map(|(n, _)| n.as_str()).collect();
        serve_subsystem(&nqn, &bdevs, port).await
    })
    .expect("target set up");
    SocketAddr::from(([127, 0, 0, 1], port))
}
