//! Completion channels and completion queues (polling is in [`super::data_path`]).

use super::{Context, Error};
use crate::ffi::verbs as fv;
use std::os::fd::RawFd;
use std::ptr::{self, NonNull};
use std::sync::Arc;

/// A completion event channel (`ibv_create_comp_channel`) with a non-blocking fd, for waking a
/// reactor in interrupt mode. CQs bound to it hold an `Arc<CompChannel>`.
pub struct CompChannel {
    ptr: NonNull<fv::ibv_comp_channel>,
    _ctx: Arc<Context>,
}

// SAFETY: libibverbs channel calls are thread-safe; the handle is freed only in Drop.
unsafe impl Send for CompChannel {}
// SAFETY: as above.
unsafe impl Sync for CompChannel {}

impl CompChannel {
    /// Creates a channel on `ctx` and makes its fd non-blocking.
    pub fn new(ctx: &Arc<Context>) -> Result<Arc<Self>, Error> {
        // SAFETY: the context is open.
        let ch = unsafe { fv::ibv_create_comp_channel(ctx.as_ptr()) };
        let ptr = NonNull::new(ch).ok_or_else(|| Error::last("ibv_create_comp_channel"))?;
        let this = Arc::new(Self {
            ptr,
            _ctx: ctx.clone(),
        });
        set_nonblocking(this.fd(), "fcntl(comp channel)")?;
        Ok(this)
    }

    /// The fd that becomes readable when a CQ event is pending.
    pub fn fd(&self) -> RawFd {
        // SAFETY: the channel lives until Drop; fd is immutable.
        unsafe { self.ptr.as_ref() }.fd
    }

    /// Reads one pending CQ event without blocking and acknowledges it at once. Returns the
    /// token of the CQ that fired, or `None` if none is pending. Re-arm that CQ with
    /// [`CompletionQueue::req_notify`] and poll it.
    pub fn poll_event(&self) -> Result<Option<u64>, Error> {
        let mut cq: *mut fv::ibv_cq = ptr::null_mut();
        let mut token: *mut libc::c_void = ptr::null_mut();
        // SAFETY: the channel is alive; out-pointers are valid; the fd is non-blocking.
        let rc = unsafe { fv::ibv_get_cq_event(self.ptr.as_ptr(), &mut cq, &mut token) };
        if rc != 0 {
            let e = Error::last("ibv_get_cq_event");
            return if e.errno() == libc::EAGAIN {
                Ok(None)
            } else {
                Err(e)
            };
        }
        // SAFETY: the CQ just reported an event, so it is alive (destroying it waits for this
        // ack); acking at once keeps `ibv_destroy_cq` from ever blocking.
        unsafe { fv::ibv_ack_cq_events(cq, 1) };
        Ok(Some(token as u64))
    }
}

impl Drop for CompChannel {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_comp_channel; CQs on it hold Arcs, so none is left.
        let rc = unsafe { fv::ibv_destroy_comp_channel(self.ptr.as_ptr()) };
        if rc != 0 {
            log::error!("rdma: {}", Error::new("ibv_destroy_comp_channel", rc));
        }
    }
}

/// A completion queue (`ibv_create_cq`). Holds its context and channel; QPs using it hold an
/// `Arc<CompletionQueue>`, so it is destroyed after them.
pub struct CompletionQueue {
    ptr: NonNull<fv::ibv_cq>,
    cqe: u32,
    _channel: Option<Arc<CompChannel>>,
    _ctx: Arc<Context>,
}

// SAFETY: libibverbs CQ calls are thread-safe (providers lock polling); freed only in Drop.
unsafe impl Send for CompletionQueue {}
// SAFETY: as above.
unsafe impl Sync for CompletionQueue {}

impl CompletionQueue {
    /// Creates a CQ of at least `cqe` entries; `token` comes back from
    /// [`CompChannel::poll_event`] when `channel` is given.
    pub fn new(
        ctx: &Arc<Context>,
        cqe: u32,
        channel: Option<&Arc<CompChannel>>,
        token: u64,
    ) -> Result<Arc<Self>, Error> {
        let n =
            libc::c_int::try_from(cqe).map_err(|_| Error::new("ibv_create_cq", libc::EINVAL))?;
        let ch = channel.map_or(ptr::null_mut(), |c| c.ptr.as_ptr());
        // SAFETY: context and channel are alive (Arcs kept below); the token is an opaque
        // value libibverbs hands back, never dereferenced.
        let cq = unsafe { fv::ibv_create_cq(ctx.as_ptr(), n, token as *mut libc::c_void, ch, 0) };
        let ptr = NonNull::new(cq).ok_or_else(|| Error::last("ibv_create_cq"))?;
        Ok(Arc::new(Self {
            ptr,
            cqe,
            _channel: channel.cloned(),
            _ctx: ctx.clone(),
        }))
    }

    /// The raw handle.
    pub fn as_ptr(&self) -> *mut fv::ibv_cq {
        self.ptr.as_ptr()
    }

    /// Entries requested at creation.
    pub fn cqe(&self) -> u32 {
        self.cqe
    }

    /// Arms the CQ: the next completion (or next solicited one) raises a channel event.
    pub fn req_notify(&self, solicited_only: bool) -> Result<(), Error> {
        // SAFETY: the CQ is alive.
        let rc = unsafe { fv::ibv_req_notify_cq(self.as_ptr(), solicited_only.into()) };
        Error::check("ibv_req_notify_cq", rc)
    }
}

impl Drop for CompletionQueue {
    fn drop(&mut self) {
        // SAFETY: created by ibv_create_cq; QPs using it hold Arcs, so none is left; channel
        // events are acked as they are read, so this does not block.
        let rc = unsafe { fv::ibv_destroy_cq(self.ptr.as_ptr()) };
        if rc != 0 {
            log::error!("rdma: {}", Error::new("ibv_destroy_cq", rc));
        }
    }
}

/// Sets `O_NONBLOCK` on `fd`.
pub(super) fn set_nonblocking(fd: RawFd, op: &'static str) -> Result<(), Error> {
    // SAFETY: fcntl on an fd we own; no memory is passed.
    let flags = unsafe { libc::fcntl(fd, libc::F_GETFL) };
    if flags < 0 {
        return Err(Error::last(op));
    }
    // SAFETY: as above.
    let rc = unsafe { libc::fcntl(fd, libc::F_SETFL, flags | libc::O_NONBLOCK) };
    if rc < 0 {
        return Err(Error::last(op));
    }
    Ok(())
}
