//! HOT PATH: an error bdev's per-core channel. Each I/O first tries to consume an injected
//! error (one atomic compare-and-swap when one is armed, one load when not); unaffected I/Os
//! go to the base as child I/Os.

use super::inject::{corrupt_iovs, ErrorKind, Injections};
use crate::modules::stack::{forward, submit_error_status, wake_all_cores, IoQueue};
use crate::{BackendChannel, IoChannel, IoCtx, IoRef, IoStatus, IoType, SubmitError};
use keel_reactor::PollStatus;
use std::sync::Arc;

/// An error-bdev I/O's state: its typed context ([`IoRef::ctx`]), all zeroes at submission.
struct ErrorIo {
    /// Byte offset to corrupt.
    offset: u64,
    /// Clear generation when a pending I/O was parked.
    clear_gen: u64,
    /// Reset generation when a pending I/O was parked.
    reset_gen: u64,
    /// Whether a read must be corrupted on completion.
    corrupt: bool,
    /// XOR value.
    value: u8,
}

// SAFETY: all-zero is a valid `ErrorIo` (zero integers, `false`).
unsafe impl IoCtx for ErrorIo {}

/// The error-bdev state of `io`.
#[inline]
fn st(io: &mut IoRef) -> &mut ErrorIo {
    io.ctx::<ErrorIo>()
}

/// One core's channel into an error bdev.
pub(super) struct ErrorChannel {
    base: IoChannel,
    injections: Arc<Injections>,
    base_supports_reset: bool,
    /// I/Os hit by a `pending` injection, in arrival order.
    pending: IoQueue,
    /// I/Os waiting for a base descriptor (`SubmitError::NoDescriptor`).
    retry: IoQueue,
}

impl ErrorChannel {
    /// A channel forwarding to `base` (a channel of the base bdev on this core).
    pub(super) fn new(
        base: IoChannel,
        injections: Arc<Injections>,
        base_supports_reset: bool,
    ) -> ErrorChannel {
        ErrorChannel {
            base,
            injections,
            base_supports_reset,
            pending: IoQueue::new(),
            retry: IoQueue::new(),
        }
    }

    /// Forward to the base, behind I/Os already waiting for a descriptor.
    fn send(&mut self, io: IoRef) {
        if !self.retry.is_empty() {
            self.retry.push_back(io);
            return;
        }
        match forward(&self.base, io, on_base_done) {
            Ok(()) => {}
            Err((io, SubmitError::NoDescriptor)) => self.retry.push_back(io),
            Err((io, e)) => io.complete(submit_error_status(e)),
        }
    }

    fn retry_waiting(&mut self) -> usize {
        let mut sent = 0;
        while let Some(io) = self.retry.pop_front() {
            match forward(&self.base, io, on_base_done) {
                Ok(()) => sent += 1,
                Err((io, SubmitError::NoDescriptor)) => {
                    self.retry.push_front(io);
                    break;
                }
                Err((io, e)) => {
                    io.complete(submit_error_status(e));
                    sent += 1;
                }
            }
        }
        sent
    }

    /// Abort pending I/Os parked before reset generation `reset_gen`; send to the base those
    /// parked before clear generation `clear_gen`. Both are recorded in arrival order, so the
    /// queue is scanned from the front only.
    fn settle_pending(&mut self, clear_gen: u64, reset_gen: u64) -> usize {
        let mut n = 0;
        while let Some((rg, cg)) = self
            .pending
            .with_front_ctx(|x: &mut ErrorIo| (x.reset_gen, x.clear_gen))
        {
            if rg >= reset_gen && cg >= clear_gen {
                break;
            }
            let Some(mut io) = self.pending.pop_front() else {
                break;
            };
            n += 1;
            if rg < reset_gen {
                io.complete(IoStatus::Aborted);
            } else {
                st(&mut io).corrupt = false;
                self.send(io);
            }
        }
        n
    }

    fn reset(&mut self, mut io: IoRef) {
        let reset_gen = self.injections.bump_reset();
        wake_all_cores();
        let (clear_gen, _) = self.injections.generations();
        let settled = self.settle_pending(clear_gen, reset_gen);
        log::debug!("error bdev: reset settled {settled} pending I/O(s) on this core");
        if self.base_supports_reset {
            st(&mut io).corrupt = false;
            self.send(io);
        } else {
            io.complete(IoStatus::Success);
        }
    }
}

impl BackendChannel for ErrorChannel {
    fn submit(&mut self, mut io: IoRef) {
        let io_type = io.io_type();
        if io_type == IoType::Reset {
            self.reset(io);
            return;
        }
        // Generations before `take` (see `Injections::generations`).
        let (clear_gen, reset_gen) = self.injections.generations();
        let Some(hit) = self.injections.take(io_type) else {
            st(&mut io).corrupt = false;
            self.send(io);
            return;
        };
        match hit.kind {
            ErrorKind::Failure => io.complete(IoStatus::IoError),
            ErrorKind::Complete(status) => io.complete(status),
            ErrorKind::Pending => {
                let x = st(&mut io);
                x.clear_gen = clear_gen;
                x.reset_gen = reset_gen;
                self.pending.push_back(io);
            }
            ErrorKind::CorruptData => {
                let len = io.num_blocks().saturating_mul(u64::from(io.block_size()));
                let corrupt_read = match io_type {
                    IoType::Write => {
                        // SAFETY: a write's buffers stay valid (for reads and writes, by the
                        // IoVec contract) and unused by others until the I/O completes.
                        unsafe {
                            corrupt_iovs(io.iovs(), len, hit.corrupt_offset, hit.corrupt_value)
                        };
                        false
                    }
                    IoType::Read => true,
                    _ => false,
                };
                let x = st(&mut io);
                x.corrupt = corrupt_read;
                x.offset = hit.corrupt_offset;
                x.value = hit.corrupt_value;
                self.send(io);
            }
        }
    }

    fn poll(&mut self) -> PollStatus {
        let mut work = 0;
        if !self.pending.is_empty() {
            let (clear_gen, reset_gen) = self.injections.generations();
            work += self.settle_pending(clear_gen, reset_gen);
        }
        if !self.retry.is_empty() {
            work += self.retry_waiting();
        }
        if work > 0 {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn needs_poll(&self) -> bool {
        true
    }
}

impl Drop for ErrorChannel {
    fn drop(&mut self) {
        // The layer drops a channel only once its I/Os completed; never leave one hanging.
        while let Some(io) = self.pending.pop_front().or_else(|| self.retry.pop_front()) {
            io.complete(IoStatus::Aborted);
        }
    }
}

/// Completion of a child I/O: corrupt a read's data when asked, then complete the parent.
fn on_base_done(ctx: usize, status: IoStatus) {
    // SAFETY: `ctx` is the parent's `into_raw`, handed to the base by `forward` on this core;
    // the base calls this callback exactly once.
    let mut io = unsafe { IoRef::from_raw(ctx) };
    let (corrupt, offset, value) = {
        let x = st(&mut io);
        (x.corrupt, x.offset, x.value)
    };
    if status == IoStatus::Success && corrupt {
        let len = io.num_blocks().saturating_mul(u64::from(io.block_size()));
        // SAFETY: the read's buffers belong to this in-flight I/O until it completes below.
        unsafe { corrupt_iovs(io.iovs(), len, offset, value) };
    }
    io.complete(status);
}
