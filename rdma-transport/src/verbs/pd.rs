//! Protection domains.

use super::{Context, Error};
use crate::ffi::verbs as fv;
use std::ptr::NonNull;
use std::sync::Arc;

/// A protection domain (`ibv_alloc_pd`). Holds its [`Context`] open; MRs, SRQs and QPs on it
/// hold an `Arc<ProtectionDomain>`, so it is freed after all of them.
pub struct ProtectionDomain {
    ptr: NonNull<fv::ibv_pd>,
    ctx: Arc<Context>,
}

// SAFETY: libibverbs PD calls are thread-safe; the handle is freed only in Drop.
unsafe impl Send for ProtectionDomain {}
// SAFETY: as above.
unsafe impl Sync for ProtectionDomain {}

impl ProtectionDomain {
    /// Allocates a protection domain on `ctx`.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Self>, Error> {
        // SAFETY: the context is open (held by the Arc).
        let pd = unsafe { fv::ibv_alloc_pd(ctx.as_ptr()) };
        let ptr = NonNull::new(pd).ok_or_else(|| Error::last("ibv_alloc_pd"))?;
        Ok(Arc::new(Self {
            ptr,
            ctx: ctx.clone(),
        }))
    }

    /// The raw handle.
    pub fn as_ptr(&self) -> *mut fv::ibv_pd {
        self.ptr.as_ptr()
    }

    /// The device context.
    pub fn context(&self) -> &Arc<Context> {
        &self.ctx
    }
}

impl Drop for ProtectionDomain {
    fn drop(&mut self) {
        // SAFETY: allocated by ibv_alloc_pd; no MR/SRQ/QP on it remains (they hold Arcs).
        let rc = unsafe { fv::ibv_dealloc_pd(self.ptr.as_ptr()) };
        if rc != 0 {
            log::error!(
                "rdma: ibv_dealloc_pd failed: {}",
                Error::new("ibv_dealloc_pd", rc)
            );
        }
    }
}
