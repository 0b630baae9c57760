//! Registered receive buffers: one per posted receive, each holding a command capsule (the
//! 64-byte command, then up to the in-capsule data size). One allocation and one memory region
//! per arena, made at set-up; posting a buffer back is allocation-free (HOT PATH).

use crate::verbs::{Access, Error, MemoryRegion, PostError, ProtectionDomain, RecvWr, Sge};
use std::alloc::Layout;
use std::mem::ManuallyDrop;
use std::ptr::NonNull;
use std::sync::Arc;

/// Bytes of the command in a capsule.
pub(crate) const SQE_LEN: usize = 64;

/// A set of equally sized receive buffers in one registered allocation.
pub(crate) struct RecvArena {
    /// Deregistered in `Drop` before the memory is freed.
    mr: ManuallyDrop<MemoryRegion>,
    mem: NonNull<u8>,
    layout: Layout,
    stride: usize,
    count: u32,
}

impl RecvArena {
    /// `count` buffers of 64 bytes plus `icd` bytes of in-capsule data, registered on `pd`.
    pub fn new(pd: &Arc<ProtectionDomain>, count: u32, icd: u32) -> Result<RecvArena, Error> {
        let stride = (SQE_LEN + icd as usize).next_multiple_of(64);
        let size = stride
            .checked_mul(count as usize)
            .filter(|&s| s > 0)
            .ok_or_else(|| Error::new("receive buffers", libc::EINVAL))?;
        let layout = Layout::from_size_align(size, 4096)
            .map_err(|_| Error::new("receive buffers", libc::EINVAL))?;
        // SAFETY: the layout has a non-zero size.
        let mem = NonNull::new(unsafe { std::alloc::alloc_zeroed(layout) })
            .ok_or_else(|| Error::new("receive buffers", libc::ENOMEM))?;
        // SAFETY: the allocation is ours, mapped, and freed only in Drop after the MR.
        let mr = unsafe { MemoryRegion::register(pd, mem.as_ptr(), size, Access::LOCAL_WRITE) };
        let mr = match mr {
            Ok(mr) => mr,
            Err(e) => {
                // SAFETY: allocated above with this layout, not registered.
                unsafe { std::alloc::dealloc(mem.as_ptr(), layout) };
                return Err(e);
            }
        };
        Ok(RecvArena {
            mr: ManuallyDrop::new(mr),
            mem,
            layout,
            stride,
            count,
        })
    }

    /// Number of buffers.
    pub fn count(&self) -> u32 {
        self.count
    }

    /// Start of buffer `idx` (`idx < count`).
    #[inline]
    pub fn buf(&self, idx: u32) -> *mut u8 {
        debug_assert!(idx < self.count);
        // SAFETY: idx < count, so the offset is inside the allocation.
        unsafe { self.mem.as_ptr().add(idx as usize * self.stride) }
    }

    /// Bytes one buffer holds.
    #[inline]
    pub fn stride(&self) -> usize {
        self.stride
    }

    /// Whether `idx` names a buffer of this arena.
    #[inline]
    pub fn valid(&self, idx: u32) -> bool {
        idx < self.count
    }

    /// Post buffer `idx` with `wr_id` through `post` (an SRQ's or a QP's receive post).
    ///
    /// # Safety
    /// Buffer `idx` must not be posted already, and nothing may read or write it until its
    /// receive completes; `post` must post to a queue of this arena's PD.
    #[inline]
    pub unsafe fn post(
        &self,
        idx: u32,
        wr_id: u64,
        post: impl FnOnce(&mut [RecvWr<'_>]) -> Result<(), PostError>,
    ) -> Result<(), PostError> {
        let sge = [Sge::new(
            self.buf(idx) as u64,
            self.stride as u32,
            self.mr.lkey(),
        )];
        let mut wr = [RecvWr::new(wr_id, &sge)];
        post(&mut wr)
    }
}

impl Drop for RecvArena {
    fn drop(&mut self) {
        // SAFETY: dropped exactly once, here; the field is not used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.mr) };
        // SAFETY: allocated in `new` with `layout`; deregistered above, and no work request
        // uses the buffers any more (their queue is gone before the arena).
        unsafe { std::alloc::dealloc(self.mem.as_ptr(), self.layout) };
    }
}
