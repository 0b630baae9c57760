//! The RDMA devices librdmacm knows, each opened once per process with one protection domain
//! shared by every core (a QP and the memory regions it uses must share a PD). Control path.

use crate::verbs::{cm_contexts, Context, DeviceAttr, Error, ProtectionDomain};
use std::sync::{Arc, Mutex, PoisonError};

/// One RDMA device as the transport uses it.
pub(crate) struct RdmaDevice {
    /// The device context (librdmacm's: CM ids bound to this device point at it).
    pub ctx: Arc<Context>,
    /// The protection domain every QP and memory region on this device uses.
    pub pd: Arc<ProtectionDomain>,
    /// Device limits.
    pub attr: DeviceAttr,
}

static DEVICES: Mutex<Vec<Arc<RdmaDevice>>> = Mutex::new(Vec::new());

/// Re-read librdmacm's device list, opening a PD on devices not seen before; returns how many
/// devices there are.
pub(crate) fn refresh() -> Result<usize, Error> {
    let contexts = cm_contexts()?;
    let mut devs = DEVICES.lock().unwrap_or_else(PoisonError::into_inner);
    for ctx in contexts {
        if devs.iter().any(|d| d.ctx.as_ptr() == ctx.as_ptr()) {
            continue;
        }
        let attr = ctx.query()?;
        let pd = ProtectionDomain::new(&ctx)?;
        log::info!(
            "nvmf/rdma: device {:p}: max QP WRs {}, max SGEs {}, max CQEs {}, max SRQ WRs {}, \
             RDMA READ depth {}/{}",
            ctx.as_ptr(),
            attr.0.max_qp_wr,
            attr.0.max_sge,
            attr.0.max_cqe,
            attr.0.max_srq_wr,
            attr.0.max_qp_rd_atom,
            attr.0.max_qp_init_rd_atom,
        );
        devs.push(Arc::new(RdmaDevice { ctx, pd, attr }));
    }
    Ok(devs.len())
}

/// The device whose context is `verbs` (a CM id's), refreshing the list once if unknown.
pub(crate) fn find(verbs: *mut crate::ffi::verbs::ibv_context) -> Option<Arc<RdmaDevice>> {
    let lookup = || {
        DEVICES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .iter()
            .find(|d| !verbs.is_null() && d.ctx.as_ptr() == verbs)
            .cloned()
    };
    if let Some(d) = lookup() {
        return Some(d);
    }
    if let Err(e) = refresh() {
        log::warn!("nvmf/rdma: cannot refresh the device list: {e}");
    }
    lookup()
}
