//! On a host without RDMA devices or kernel RDMA support (CI, this dev box), the bindings must
//! answer with an empty list or a clear error, never crash. On a host with devices the same
//! tests check the devices are usable. On a host without rdma-core at all, every entry point
//! answers that it is not installed (`tests/rdma_core_missing.rs` forces that case).

use keel_rdma::verbs::{cm_contexts, CmEventChannel, Device, ProtectionDomain};

#[test]
fn device_list_is_empty_or_a_clear_error() {
    match Device::list() {
        Ok(list) => {
            assert_eq!(list.len(), list.iter().count());
            for dev in list.iter() {
                assert!(!dev.name().is_empty());
                let ctx = dev.open().expect("open a listed device");
                let attr = ctx.query().expect("query an open device");
                assert!(attr.0.max_qp > 0 && attr.0.max_cqe > 0);
                ProtectionDomain::new(&ctx).expect("allocate a PD");
            }
        }
        Err(e) if e.rdma_core().is_some() => {
            assert!(
                e.to_string().starts_with("rdma-core is not installed"),
                "{e}"
            )
        }
        Err(e) => {
            assert_eq!(e.op(), "ibv_get_device_list");
            assert!(e.errno() > 0, "{e}");
            assert!(e.to_string().contains("ibv_get_device_list failed"));
        }
    }
}

#[test]
fn cm_devices_and_channel_fail_cleanly() {
    match cm_contexts() {
        Ok(ctxs) => ctxs.iter().for_each(|c| assert!(!c.as_ptr().is_null())),
        Err(e) => assert!(
            e.errno() > 0 && (e.op() == "rdma_get_devices" || e.rdma_core().is_some()),
            "{e}"
        ),
    }
    match CmEventChannel::new() {
        Ok(ch) => {
            assert!(ch.fd() >= 0);
            // Nothing happened yet: polling must not block and must find nothing.
            assert!(ch.poll_event().expect("poll an idle channel").is_none());
            match ch.create_id(7) {
                Ok(id) => assert_eq!(id.token(), 7),
                Err(e) => assert!(e.errno() > 0, "{e}"),
            }
        }
        Err(e) => assert!(
            e.errno() > 0 && (e.op() == "rdma_create_event_channel" || e.rdma_core().is_some()),
            "{e}"
        ),
    }
}
