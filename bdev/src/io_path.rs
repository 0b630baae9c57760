//! HOT PATH: per-core channels, their pre-allocated I/O descriptors, submission and completion.
//!
//! Rules kept here: no lock, no heap allocation, no syscall per I/O in steady state. Completions
//! are always delivered from the reactor loop (never inside the submit call that started them),
//! so a callback may submit again without recursion.

use crate::{Bdev, IoStatus, IoType, IoVec, SubmitError};

/// Completion callback: `ctx` is the value given at submission. Runs on the submitting core.
pub type IoCallback = fn(ctx: usize, status: IoStatus);

/// A core's handle for submitting I/O to one bdev (from [`crate::BdevDesc::get_io_channel`]).
/// `!Send`: it belongs to the core that created it. Dropping it with I/O in flight is allowed;
/// the resources go when the last I/O completes.
pub struct IoChannel {
    _p: std::marker::PhantomData<*const ()>,
}

impl IoChannel {
    /// The bdev this channel submits to.
    pub fn bdev(&self) -> &Bdev {
        todo!()
    }
    /// Read `num_blocks` blocks at `offset_blocks` into `iovs` (total length ≥ the blocks).
    pub fn read(
        &self,
        _iovs: &[IoVec],
        _offset_blocks: u64,
        _num_blocks: u64,
        _cb: IoCallback,
        _ctx: usize,
    ) -> Result<(), SubmitError> {
        todo!()
    }
    /// Write `num_blocks` blocks at `offset_blocks` from `iovs`.
    pub fn write(
        &self,
        _iovs: &[IoVec],
        _offset_blocks: u64,
        _num_blocks: u64,
        _cb: IoCallback,
        _ctx: usize,
    ) -> Result<(), SubmitError> {
        todo!()
    }
    /// Make blocks read back as zeroes.
    pub fn write_zeroes(
        &self,
        _offset_blocks: u64,
        _num_blocks: u64,
        _cb: IoCallback,
        _ctx: usize,
    ) -> Result<(), SubmitError> {
        todo!()
    }
    /// Deallocate blocks.
    pub fn unmap(
        &self,
        _offset_blocks: u64,
        _num_blocks: u64,
        _cb: IoCallback,
        _ctx: usize,
    ) -> Result<(), SubmitError> {
        todo!()
    }
    /// Make completed writes durable.
    pub fn flush(&self, _cb: IoCallback, _ctx: usize) -> Result<(), SubmitError> {
        todo!()
    }
    /// Reset the bdev (abort what is queued in this channel, pass the reset to the module).
    pub fn reset(&self, _cb: IoCallback, _ctx: usize) -> Result<(), SubmitError> {
        todo!()
    }
    /// Run `f` (once, on this core) when a descriptor is next freed on this channel: the
    /// back-pressure path after [`SubmitError::NoDescriptor`]. Allocates; not steady state.
    pub fn wait_for_descriptor(&self, _f: Box<dyn FnOnce()>) {
        todo!()
    }
}

/// The module's view of one in-flight I/O (a pointer into the channel's descriptor pool).
/// It must be completed exactly once, on the core it was submitted on.
pub struct IoRef {
    _p: std::marker::PhantomData<*const ()>,
}

impl IoRef {
    /// The I/O type.
    pub fn io_type(&self) -> IoType {
        todo!()
    }
    /// First block.
    pub fn offset_blocks(&self) -> u64 {
        todo!()
    }
    /// Number of blocks.
    pub fn num_blocks(&self) -> u64 {
        todo!()
    }
    /// Block size of the bdev, bytes.
    pub fn block_size(&self) -> u32 {
        todo!()
    }
    /// The data buffers (empty for write_zeroes, unmap, flush, reset).
    pub fn iovs(&self) -> &[IoVec] {
        todo!()
    }
    /// 64 bytes of per-I/O scratch space for the module (e.g. a child I/O count, a deadline).
    pub fn module_ctx(&mut self) -> &mut [u64; 8] {
        todo!()
    }
    /// Finish the I/O. The user callback runs from the reactor loop, not from inside this call.
    pub fn complete(self, _status: IoStatus) {
        todo!()
    }
    /// Turn into an integer, e.g. to pass as the `ctx` of a child I/O on a base bdev.
    pub fn into_raw(self) -> usize {
        todo!()
    }
    /// Rebuild from [`IoRef::into_raw`].
    ///
    /// # Safety
    /// `raw` must come from `into_raw` on this core, and be used exactly once.
    pub unsafe fn from_raw(_raw: usize) -> IoRef {
        todo!()
    }
}
