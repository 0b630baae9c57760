//! HOT PATH: one core's io_uring channel into a uring/aio bdev.
//!
//! `submit` only fills submission-queue entries; `poll` makes one `io_uring_enter` for all of
//! them (batching), then reaps completions without waiting. An I/O that finds the SQ full (or
//! would overrun the CQ) waits in an intrusive FIFO ([`IoQueue`]) until space frees. Short
//! reads/writes continue from where the kernel stopped, on the buffered descriptor. Nothing
//! here allocates; each I/O keeps its progress in its typed context ([`UringIo`]).

use super::file::{BackingFile, FileKind};
use super::plan::{dio_eligible, next_step, Step};
use super::UringCounters;
use crate::modules::stack::{interrupt_mode_here, IoQueue};
use crate::{BackendChannel, BdevError, IoCtx, IoRef, IoStatus, IoType, IoVec};
use io_uring::{cqueue, opcode, squeue, types, IoUring};
use keel_reactor::PollStatus;
use std::mem::MaybeUninit;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;

/// Submission-queue entries per ring (one ring per core and bdev).
pub(crate) const RING_ENTRIES: u32 = 512;
/// Completions reaped per batch.
const REAP_BATCH: usize = 32;

/// A uring I/O's progress: its typed context ([`IoRef::ctx`]), all zeroes at submission.
struct UringIo {
    /// Bytes of a read/write already transferred.
    done: u64,
    /// [`FLAG_DECIDED`], [`FLAG_DIRECT`], [`FLAG_PUNCH`].
    flags: u64,
}

// SAFETY: all-zero is a valid `UringIo` (two integers).
unsafe impl IoCtx for UringIo {}

/// The uring state of `io`.
#[inline]
fn st(io: &mut IoRef) -> &mut UringIo {
    io.ctx::<UringIo>()
}

/// The descriptor (direct or buffered) has been chosen.
const FLAG_DECIDED: u64 = 1;
/// Use the `O_DIRECT` descriptor.
const FLAG_DIRECT: u64 = 2;
/// write_zeroes is done with PUNCH_HOLE (ZERO_RANGE unsupported).
const FLAG_PUNCH: u64 = 4;

// `IoVec` goes to the kernel as `struct iovec`.
const _: () = assert!(std::mem::size_of::<IoVec>() == std::mem::size_of::<libc::iovec>());
const _: () = assert!(std::mem::align_of::<IoVec>() == std::mem::align_of::<libc::iovec>());

/// How SQEs name a descriptor: a registered (fixed) file index, or the raw fd.
#[derive(Debug, Clone, Copy)]
enum FdRef {
    Fixed(u32),
    Raw(RawFd),
}

/// Build an SQE for `$fd` (an [`FdRef`]): `$f` is bound to the matching io_uring fd type.
macro_rules! sqe {
    ($fd:expr, $f:ident => $build:expr) => {
        match $fd {
            FdRef::Fixed(i) => {
                let $f = types::Fixed(i);
                $build
            }
            FdRef::Raw(r) => {
                let $f = types::Fd(r);
                $build
            }
        }
    };
}

/// Per-channel counters, published to the bdev's shared [`UringCounters`] once per poll.
#[derive(Debug, Default)]
struct LocalCounters {
    enters: u64,
    sqes: u64,
    direct: u64,
    buffered: u64,
    resubmits: u64,
}

/// One core's channel: its own ring, no sharing.
pub(super) struct UringChannel {
    ring: IoUring,
    file: Arc<BackingFile>,
    buffered: FdRef,
    direct: Option<FdRef>,
    /// Completions the CQ can hold: SQEs in flight are kept below it.
    cq_capacity: u32,
    /// SQEs pushed whose completion is not reaped yet.
    in_ring: u32,
    /// I/Os waiting for ring space, and short transfers waiting to continue.
    overflow: IoQueue,
    /// Resets waiting for the channel's I/Os to drain.
    resets: IoQueue,
    /// Whether FALLOC_FL_ZERO_RANGE works (cleared on the first EOPNOTSUPP).
    zero_range_ok: bool,
    shared: Arc<UringCounters>,
    local: LocalCounters,
    /// Interrupt mode only: eventfd the kernel signals on completions, watched by the reactor.
    completion_fd: Option<OwnedFd>,
}

impl UringChannel {
    /// Create the ring (and register the descriptors with it when the kernel allows).
    pub(super) fn new(
        file: Arc<BackingFile>,
        shared: Arc<UringCounters>,
    ) -> Result<UringChannel, BdevError> {
        let ring = IoUring::new(RING_ENTRIES).map_err(|e| BdevError::Os {
            context: format!("io_uring setup for {}", file.path),
            message: e.to_string(),
            errno: e.raw_os_error().unwrap_or(libc::ENOMEM),
        })?;
        let mut fds = vec![file.buffered_fd()];
        fds.extend(file.direct_fd());
        let (buffered, direct) = match ring.submitter().register_files(&fds) {
            Ok(()) => (FdRef::Fixed(0), file.direct_fd().map(|_| FdRef::Fixed(1))),
            Err(e) => {
                log::debug!("{}: io_uring file registration refused ({e})", file.path);
                (
                    FdRef::Raw(file.buffered_fd()),
                    file.direct_fd().map(FdRef::Raw),
                )
            }
        };
        let cq_capacity = ring.params().cq_entries();
        let completion_fd = if interrupt_mode_here() {
            completion_eventfd(&ring, &file.path)
        } else {
            None
        };
        Ok(UringChannel {
            ring,
            file,
            buffered,
            direct,
            cq_capacity,
            in_ring: 0,
            overflow: IoQueue::new(),
            resets: IoQueue::new(),
            zero_range_ok: true,
            shared,
            local: LocalCounters::default(),
            completion_fd,
        })
    }

    /// Build the SQE for the next step of `io` (its context holds the progress).
    fn prep(&mut self, io: &mut IoRef) -> Result<squeue::Entry, IoStatus> {
        let io_type = io.io_type();
        let bs = u64::from(io.block_size());
        let offset = io
            .offset_blocks()
            .checked_mul(bs)
            .ok_or(IoStatus::IoError)?;
        let len = io.num_blocks().checked_mul(bs).ok_or(IoStatus::IoError)?;
        let UringIo { done, mut flags } = *st(io);
        let entry = match io_type {
            IoType::Read | IoType::Write => {
                let iovs = io.iovs();
                if flags & FLAG_DECIDED == 0 {
                    flags |= FLAG_DECIDED;
                    if self.direct.is_some() && dio_eligible(iovs, offset, len, self.file.dio) {
                        flags |= FLAG_DIRECT;
                        self.local.direct += 1;
                    } else {
                        self.local.buffered += 1;
                    }
                }
                let fd = match (flags & FLAG_DIRECT != 0, self.direct) {
                    (true, Some(d)) => d,
                    _ => self.buffered,
                };
                let pos = offset + done;
                match (
                    io_type,
                    next_step(iovs, done, len).ok_or(IoStatus::IoError)?,
                ) {
                    (IoType::Read, Step::Vectored { first, count }) => {
                        let v = iovs[first..].as_ptr().cast::<libc::iovec>();
                        sqe!(fd, f => opcode::Readv::new(f, v, count as u32).offset(pos).build())
                    }
                    (IoType::Read, Step::Single { base, len }) => {
                        let n = u32::try_from(len).unwrap_or(u32::MAX);
                        sqe!(fd, f => opcode::Read::new(f, base, n).offset(pos).build())
                    }
                    (_, Step::Vectored { first, count }) => {
                        let v = iovs[first..].as_ptr().cast::<libc::iovec>();
                        sqe!(fd, f => opcode::Writev::new(f, v, count as u32).offset(pos).build())
                    }
                    (_, Step::Single { base, len }) => {
                        let n = u32::try_from(len).unwrap_or(u32::MAX);
                        sqe!(fd, f => opcode::Write::new(f, base.cast_const(), n).offset(pos).build())
                    }
                }
            }
            IoType::Flush => sqe!(self.buffered, f => opcode::Fsync::new(f).build()),
            IoType::WriteZeroes => {
                if !self.zero_range_ok && self.file.punch_hole {
                    flags |= FLAG_PUNCH;
                }
                let mode = if flags & FLAG_PUNCH != 0 {
                    libc::FALLOC_FL_PUNCH_HOLE
                } else {
                    libc::FALLOC_FL_ZERO_RANGE
                } | libc::FALLOC_FL_KEEP_SIZE;
                sqe!(self.buffered, f => opcode::Fallocate::new(f, len).offset(offset).mode(mode).build())
            }
            IoType::Unmap => {
                let mode = libc::FALLOC_FL_PUNCH_HOLE | libc::FALLOC_FL_KEEP_SIZE;
                sqe!(self.buffered, f => opcode::Fallocate::new(f, len).offset(offset).mode(mode).build())
            }
            IoType::Reset => return Err(IoStatus::IoError),
        };
        st(io).flags = flags;
        Ok(entry)
    }

    /// Put `io`'s next step in the SQ; gives it back when the ring has no room. An I/O that
    /// cannot be expressed is completed with an error here.
    fn push(&mut self, mut io: IoRef) -> Result<(), IoRef> {
        if self.in_ring >= self.cq_capacity || self.ring.submission().is_full() {
            return Err(io);
        }
        let entry = match self.prep(&mut io) {
            Ok(e) => e,
            Err(status) => {
                io.complete(status);
                return Ok(());
            }
        };
        let raw = io.into_raw();
        let entry = entry.user_data(raw as u64);
        // SAFETY: the SQE points at the I/O's iovec array and data buffers (inside / owned by
        // its descriptor) and at descriptors kept open by `self.file`; all stay valid until the
        // CQE is reaped, because the I/O is completed only after that and the channel (ring)
        // outlives its in-flight I/Os.
        if unsafe { self.ring.submission().push(&entry) }.is_err() {
            // SAFETY: the SQE was not queued, so `raw` was not handed to the kernel.
            return Err(unsafe { IoRef::from_raw(raw) });
        }
        self.in_ring += 1;
        Ok(())
    }

    /// Move waiting I/Os into free SQ slots, in order.
    fn drain_overflow(&mut self) {
        while let Some(io) = self.overflow.pop_front() {
            if let Err(io) = self.push(io) {
                self.overflow.push_front(io);
                break;
            }
        }
    }

    /// One `io_uring_enter` for everything queued (never waits).
    fn submit_queued(&mut self) {
        if self.ring.submission().is_empty() {
            return;
        }
        self.local.enters += 1;
        match self.ring.submit() {
            Ok(n) => self.local.sqes += n as u64,
            Err(e) => match e.raw_os_error() {
                // Out of kernel resources or interrupted: the SQEs stay queued; next poll.
                Some(libc::EAGAIN | libc::EBUSY | libc::EINTR) => {}
                _ => log::error!("{}: io_uring_enter failed: {e}", self.file.path),
            },
        }
    }

    /// Reap every available completion; returns how many.
    fn reap(&mut self) -> usize {
        let mut total = 0;
        loop {
            let mut buf = [const { MaybeUninit::<cqueue::Entry>::uninit() }; REAP_BATCH];
            let mut cqes = [(0u64, 0i32); REAP_BATCH];
            let n = {
                let mut cq = self.ring.completion();
                let got = cq.fill(&mut buf);
                for (dst, c) in cqes.iter_mut().zip(got.iter()) {
                    *dst = (c.user_data(), c.result());
                }
                got.len()
            };
            for &(user_data, res) in &cqes[..n] {
                self.in_ring -= 1;
                // SAFETY: every SQE's user_data is the `into_raw` of its I/O, and each SQE
                // yields exactly one CQE.
                let io = unsafe { IoRef::from_raw(user_data as usize) };
                self.complete_step(io, res);
            }
            total += n;
            if n < REAP_BATCH {
                return total;
            }
        }
    }

    /// Act on one CQE: finish the I/O, or queue its next step.
    fn complete_step(&mut self, mut io: IoRef, res: i32) {
        let io_type = io.io_type();
        match io_type {
            IoType::Read | IoType::Write => {
                if res <= 0 {
                    log::debug!(
                        "{}: {} at block {} failed: {}",
                        self.file.path,
                        io_type.name(),
                        io.offset_blocks(),
                        if res == 0 {
                            "unexpected end of file".to_string()
                        } else {
                            errno_text(-res)
                        }
                    );
                    io.complete(if res == 0 {
                        IoStatus::IoError
                    } else {
                        errno_status(-res)
                    });
                    return;
                }
                let len = io.num_blocks() * u64::from(io.block_size());
                let x = st(&mut io);
                let done = x.done + res as u64;
                if done >= len {
                    io.complete(IoStatus::Success);
                    return;
                }
                // Short transfer: continue on the buffered descriptor, which takes any
                // alignment.
                x.done = done;
                x.flags &= !FLAG_DIRECT;
                self.local.resubmits += 1;
                self.overflow.push_front(io);
            }
            IoType::WriteZeroes
                if res == -libc::EOPNOTSUPP
                    && st(&mut io).flags & FLAG_PUNCH == 0
                    && self.file.kind == FileKind::Regular
                    && self.file.punch_hole =>
            {
                // ZERO_RANGE unsupported here: holes read back as zeroes too.
                if self.zero_range_ok {
                    log::info!(
                        "{}: no FALLOC_FL_ZERO_RANGE, write_zeroes punches holes",
                        self.file.path
                    );
                    self.zero_range_ok = false;
                }
                st(&mut io).flags |= FLAG_PUNCH;
                self.local.resubmits += 1;
                self.overflow.push_front(io);
            }
            // Unmap is advisory: a device that cannot deallocate still satisfies it.
            IoType::Unmap if res == -libc::EOPNOTSUPP => io.complete(IoStatus::Success),
            _ => io.complete(if res >= 0 {
                IoStatus::Success
            } else {
                errno_status(-res)
            }),
        }
    }

    fn publish_counters(&mut self) {
        let l = std::mem::take(&mut self.local);
        let s = &self.shared;
        for (v, a) in [
            (l.enters, &s.enters),
            (l.sqes, &s.sqes),
            (l.direct, &s.direct_ios),
            (l.buffered, &s.buffered_ios),
            (l.resubmits, &s.resubmits),
        ] {
            if v != 0 {
                a.fetch_add(v, Ordering::Relaxed);
            }
        }
    }
}

/// Interrupt mode: an eventfd registered with the ring (signalled on each completion) and with
/// the reactor (so a completion wakes it). `None`, with a warning, when either refuses.
fn completion_eventfd(ring: &IoUring, path: &str) -> Option<OwnedFd> {
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
    if fd < 0 {
        let e = std::io::Error::last_os_error();
        log::warn!("{path}: no completion eventfd ({e}); completions wait for other wake-ups");
        return None;
    }
    // SAFETY: `fd` is a new descriptor that nothing else owns.
    let owned = unsafe { OwnedFd::from_raw_fd(fd) };
    if let Err(e) = ring.submitter().register_eventfd(fd) {
        log::warn!("{path}: io_uring refused the completion eventfd ({e})");
        return None;
    }
    keel_reactor::register_interrupt_fd(fd);
    Some(owned)
}

/// Reset an eventfd's counter (non-blocking; nothing to read is fine).
fn drain_eventfd(fd: RawFd) {
    let mut v = 0u64;
    // SAFETY: reads at most 8 bytes into the local `v`.
    let _ = unsafe { libc::read(fd, (&mut v as *mut u64).cast(), std::mem::size_of::<u64>()) };
}

fn errno_status(errno: i32) -> IoStatus {
    match errno {
        libc::ENOSPC | libc::EDQUOT => IoStatus::NoSpace,
        libc::ECANCELED => IoStatus::Aborted,
        _ => IoStatus::IoError,
    }
}

fn errno_text(errno: i32) -> String {
    std::io::Error::from_raw_os_error(errno).to_string()
}

impl BackendChannel for UringChannel {
    fn submit(&mut self, mut io: IoRef) {
        if io.io_type() == IoType::Reset {
            // Nothing to abort in the kernel: the reset completes once this channel's I/Os have.
            if self.in_ring == 0 && self.overflow.is_empty() {
                io.complete(IoStatus::Success);
            } else {
                self.resets.push_back(io);
            }
            return;
        }
        *st(&mut io) = UringIo { done: 0, flags: 0 };
        if !self.overflow.is_empty() {
            self.overflow.push_back(io);
        } else if let Err(io) = self.push(io) {
            self.overflow.push_back(io);
        }
    }

    fn poll(&mut self) -> PollStatus {
        self.drain_overflow();
        self.submit_queued();
        if let Some(fd) = &self.completion_fd {
            // Reset the eventfd before reaping: a completion posted after this read rings it
            // again, so the reactor cannot sleep on an unreaped completion.
            drain_eventfd(fd.as_raw_fd());
        }
        let reaped = self.reap();
        if !self.resets.is_empty() && self.in_ring == 0 && self.overflow.is_empty() {
            while let Some(r) = self.resets.pop_front() {
                r.complete(IoStatus::Success);
            }
        }
        if reaped > 0 || self.local.enters > 0 {
            self.publish_counters();
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn needs_poll(&self) -> bool {
        true
    }
}

impl Drop for UringChannel {
    fn drop(&mut self) {
        if let Some(fd) = &self.completion_fd {
            keel_reactor::unregister_interrupt_fd(fd.as_raw_fd());
        }
        // The bdev layer drops a channel only after its I/Os completed. Should some still be
        // in the kernel, wait for them: their buffers must not be reused while it writes.
        while self.in_ring > 0 {
            if let Err(e) = self.ring.submit_and_wait(1) {
                log::error!(
                    "{}: waiting for in-flight I/O at teardown: {e}",
                    self.file.path
                );
                break;
            }
            self.reap();
        }
        while let Some(io) = self.overflow.pop_front() {
            io.complete(IoStatus::Aborted);
        }
        while let Some(r) = self.resets.pop_front() {
            r.complete(IoStatus::Success);
        }
        self.publish_counters();
    }
}
