//! Memory regions.

use super::{Error, ProtectionDomain, Sge};
use crate::ffi::verbs as fv;
use std::ops::BitOr;
use std::ptr::NonNull;
use std::sync::Arc;

/// Access rights of a memory region (`IBV_ACCESS_*`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Access(u32);

impl Access {
    /// Local read only.
    pub const NONE: Self = Self(0);
    /// The device may write the region (receives, RDMA READ destinations).
    pub const LOCAL_WRITE: Self = Self(fv::IBV_ACCESS_LOCAL_WRITE);
    /// Peers may RDMA WRITE into the region (requires `LOCAL_WRITE`).
    pub const REMOTE_WRITE: Self = Self(fv::IBV_ACCESS_REMOTE_WRITE);
    /// Peers may RDMA READ from the region.
    pub const REMOTE_READ: Self = Self(fv::IBV_ACCESS_REMOTE_READ);

    /// The raw flags.
    pub fn bits(self) -> u32 {
        self.0
    }
}

impl BitOr for Access {
    type Output = Self;
    fn bitor(self, rhs: Self) -> Self {
        Self(self.0 | rhs.0)
    }
}

/// A registered memory region (`ibv_reg_mr`); deregistered on drop. Keeps its
/// [`ProtectionDomain`] alive.
pub struct MemoryRegion {
    ptr: NonNull<fv::ibv_mr>,
    addr: usize,
    len: usize,
    _pd: Arc<ProtectionDomain>,
}

// SAFETY: the MR is immutable after registration; dereg happens only in Drop.
unsafe impl Send for MemoryRegion {}
// SAFETY: as above.
unsafe impl Sync for MemoryRegion {}

impl MemoryRegion {
    /// Registers `len` bytes at `addr` with `access`.
    ///
    /// # Safety
    /// The range must be mapped memory of this process that stays mapped and is not reused for
    /// anything else while the region (or any work request using its keys) lives: the device
    /// reads and writes it behind the compiler's back. Keel registers buffer-pool pages, which
    /// are never unmapped.
    pub unsafe fn register(
        pd: &Arc<ProtectionDomain>,
        addr: *mut u8,
        len: usize,
        access: Access,
    ) -> Result<Self, Error> {
        if addr.is_null() || len == 0 {
            return Err(Error::new("ibv_reg_mr", libc::EINVAL));
        }
        // SAFETY: the PD is alive (Arc); the caller guarantees the range.
        let mr = unsafe { fv::ibv_reg_mr(pd.as_ptr(), addr.cast(), len, access.bits()) };
        let ptr = NonNull::new(mr).ok_or_else(|| Error::last("ibv_reg_mr"))?;
        Ok(Self {
            ptr,
            addr: addr as usize,
            len,
            _pd: pd.clone(),
        })
    }

    /// Local key (for SGEs).
    pub fn lkey(&self) -> u32 {
        // SAFETY: the MR is registered until Drop; lkey is immutable.
        unsafe { self.ptr.as_ref() }.lkey
    }

    /// Remote key (handed to peers for RDMA READ/WRITE).
    pub fn rkey(&self) -> u32 {
        // SAFETY: as above.
        unsafe { self.ptr.as_ref() }.rkey
    }

    /// Start address of the region.
    pub fn addr(&self) -> usize {
        self.addr
    }

    /// Length of the region.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the region is empty (never: registration refuses empty ranges).
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Whether `[addr, addr + len)` lies inside the region.
    pub fn contains(&self, addr: usize, len: usize) -> bool {
        addr >= self.addr
            && addr
                .checked_add(len)
                .is_some_and(|end| end <= self.addr + self.len)
    }

    /// An SGE for `len` bytes at `offset` into the region, or `None` if out of range.
    pub fn sge(&self, offset: usize, len: u32) -> Option<Sge> {
        let addr = self.addr.checked_add(offset)?;
        self.contains(addr, len as usize)
            .then(|| Sge::new(addr as u64, len, self.lkey()))
    }
}

impl Drop for MemoryRegion {
    fn drop(&mut self) {
        // SAFETY: registered by ibv_reg_mr; deregistered only here.
        let rc = unsafe { fv::ibv_dereg_mr(self.ptr.as_ptr()) };
        if rc != 0 {
            log::error!("rdma: {}", Error::new("ibv_dereg_mr", rc));
        }
    }
}
