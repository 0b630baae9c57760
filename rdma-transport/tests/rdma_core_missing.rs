//! Without rdma-core, every entry point of the bindings answers "rdma-core is not installed"
//! (never a crash, never a link failure at start-up). Forced with `KEEL_RDMA_CORE_LIBDIR`
//! naming a directory without the libraries; one test in this file, so the variable is set
//! before anything loads rdma-core in this process.

use keel_nvmf::transport::{TransportError, TransportOpts};
use keel_rdma::ffi::rdma_core::{LoadError, LIBDIR_ENV};
use keel_rdma::transport::RdmaTransport;
use keel_rdma::verbs::{cm_contexts, CmEventChannel, Device};

#[test]
fn every_entry_point_says_rdma_core_is_not_installed() {
    let dir = "/nonexistent-keel-test/lib";
    std::env::set_var(LIBDIR_ENV, dir);
    let want = format!(
        "rdma-core is not installed ({dir}/libibverbs.so.1 not found: install rdma-core / \
         ibverbs-providers librdmacm1)"
    );

    let e = Device::list()
        .err()
        .expect("no device list without rdma-core");
    assert_eq!(e.to_string(), want);
    assert_eq!((e.op(), e.errno()), ("load rdma-core", libc::ENOENT));
    assert!(matches!(e.rdma_core(), Some(LoadError::NotFound { .. })));

    let e = cm_contexts()
        .err()
        .expect("no CM devices without rdma-core");
    assert_eq!(e.to_string(), want);
    let e = CmEventChannel::new()
        .err()
        .expect("no CM channel without rdma-core");
    assert_eq!(e.to_string(), want);

    match RdmaTransport::new(TransportOpts::rdma_defaults()) {
        Err(TransportError::Unavailable(m)) => assert_eq!(m, format!("RDMA transport: {want}")),
        Err(e) => panic!("unexpected error: {e}"),
        Ok(_) => panic!("an RDMA transport without rdma-core"),
    }
}
