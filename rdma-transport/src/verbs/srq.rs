//! Shared receive queues (posting is in [`super::data_path`]).

use super::{Error, ProtectionDomain};
use crate::ffi::verbs as fv;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// A shared receive queue (`ibv_create_srq`). Holds its PD; QPs using it hold an
/// `Arc<SharedReceiveQueue>`, so it is destroyed after them.
pub struct SharedReceiveQueue {
    ptr: NonNull<fv::ibv_srq>,
    max_wr: u32,
    max_sge: u32,
    _pd: Arc<ProtectionDomain>,
}

// SAFETY: libibverbs SRQ calls are thread-safe; the handle is freed only in Drop.
unsafe impl Send for SharedReceiveQueue {}
// SAFETY: as above.
unsafe impl Sync for SharedReceiveQueue {}

impl SharedReceiveQueue {
    /// Creates an SRQ of `max_wr` receives with up to `max_sge` SGEs each.
    pub fn new(pd: &Arc<ProtectionDomain>, max_wr: u32, max_sge: u32) -> Result<Arc<Self>, Error> {
        let mut attr = fv::ibv_srq_init_attr {
            srq_context: ptr::null_mut(),
            attr: fv::ibv_srq_attr {
                max_wr,
                max_sge,
                srq_limit: 0,
            },
        };
        // SAFETY: the PD is alive; `attr` is a valid in/out struct.
        let srq = unsafe { fv::ibv_create_srq(pd.as_ptr(), &mut attr) };
        let ptr = NonNull::new(srq).ok_or_else(|| Error::last("ibv_create_srq"))?;
        Ok(Arc::new(Self {
            ptr,
            max_wr: attr.attr.max_wr,
            max_sge: attr.attr.max_sge,
            _pd: pd.clone(),
        }))
    }

    /// The raw handle.
    pub fn as_ptr(&self) -> *mut fv::ibv_srq {
        self.ptr.as_ptr()
    }

    /// Receive capacity granted by the device.
    pub fn max_wr(&self) -> u32 {
        self.max_wr
    }

    /// SGEs per receive granted by the device.
    pub fn max_sge(&self) -> u32 {
        self.max_sge
    }
}

impl Drop for SharedReceiveQueue {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_srq; QPs using it hold Arcs, so none is left.
        let rc = unsafe { fv::ibv_destroy_srq(self.ptr.as_ptr()) };
        if rc != 0 {
            log::error!("rdma: {}", Error::new("ibv_destroy_srq", rc));
        }
    }
}
