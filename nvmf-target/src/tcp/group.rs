//! HOT PATH: the per-core poll group: one epoll set and one poller serving every NVMe/TCP
//! connection of this core.
//!
//! Each poll: one `epoll_wait` with a zero timeout (never sleeps: in busy mode the reactor
//! polls, in interrupt mode the reactor sleeps on the epoll fd itself, registered with
//! `register_interrupt_fd`), then every ready connection reads and handles its PDUs, then the
//! connections with queued output flush it (one gathered `sendmsg` per connection), then
//! stalled connections retry and closed ones whose requests all came back are freed.
//!
//! A stalled connection (no free request slot, or the buffer pool empty) retries on every poll.
//! In interrupt mode that retry alone does not count as work, so the reactor can sleep: a
//! timed poller (every [`STALL_RETRY`]) retries instead, registered while connections stall.
//! There, a connection whose receive machine is blocked also drops EPOLLIN from its interest
//! set until it resumes: the bytes it leaves unread would otherwise keep the (level-triggered)
//! socket ready and wake the reactor on every iteration. Busy mode keeps EPOLLIN (no extra
//! `epoll_ctl` per stall).
//!
//! A slow timed poller closes connections that have not connected their queue (ICReq, then
//! Fabrics Connect) within [`connect_timeout`], so idle sockets cannot pile up. It is armed
//! only while some connection has not connected yet: an idle target with connected hosts has
//! no timer here (in interrupt mode it sleeps until a socket or the keep-alive timer wakes it).

use super::conn::{Conn, ConnConfig};
use crate::transport::{ListenAddr, ShutdownWait};
use keel_reactor::{PollStatus, PollerId};
use std::cell::{Cell, RefCell};
use std::net::TcpStream;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::rc::{Rc, Weak};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Most events taken per `epoll_wait`.
const MAX_EVENTS: usize = 128;
/// Interrupt mode: how often stalled connections retry while the reactor sleeps.
const STALL_RETRY: Duration = Duration::from_micros(100);
/// Default time a new connection has to send ICReq and connect its queue.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

static CONNECT_TIMEOUT_MS: AtomicU64 = AtomicU64::new(DEFAULT_CONNECT_TIMEOUT.as_millis() as u64);

/// How long a new connection may take to send ICReq and complete Fabrics Connect.
pub fn connect_timeout() -> Duration {
    Duration::from_millis(CONNECT_TIMEOUT_MS.load(Ordering::Relaxed))
}

/// Change [`connect_timeout`] (at least 1 ms) for connections accepted from now on. A poll
/// group checks at half the timeout (between 10 ms and 1 s) as set when its check is
/// armed (while some connection has not connected yet).
pub fn set_connect_timeout(d: Duration) {
    let ms = d.as_millis().clamp(1, u64::MAX as u128) as u64;
    CONNECT_TIMEOUT_MS.store(ms, Ordering::Relaxed);
}

/// The poll group of one core.
pub struct Group {
    epfd: OwnedFd,
    conns: RefCell<Vec<Option<Rc<Conn>>>>,
    free_tokens: RefCell<Vec<u32>>,
    events: RefCell<Vec<libc::epoll_event>>,
    /// Tokens with queued output (from completions outside the group's own poll).
    dirty: RefCell<Vec<u32>>,
    stalled: RefCell<Vec<u32>>,
    closing: RefCell<Vec<u32>>,
    to_close: RefCell<Vec<u32>>,
    /// Spare list swapped with the ones above while they are processed (no allocation).
    spare: RefCell<Vec<u32>>,
    poller: Cell<Option<PollerId>>,
    timeout_poller: Cell<Option<PollerId>>,
    /// Interrupt mode: the timed poller retrying stalled connections, while there are some.
    stall_poller: Cell<Option<PollerId>>,
    interrupt_mode: bool,
    flush_scheduled: Cell<bool>,
    /// Transport shutdowns waiting for this core's connections of a transport to be freed.
    drains: RefCell<Vec<(u64, Arc<ShutdownWait>)>>,
}

thread_local! {
    static GROUP: RefCell<Option<Rc<Group>>> = const { RefCell::new(None) };
}

fn current() -> Option<Rc<Group>> {
    GROUP.try_with(|g| g.borrow().clone()).ok().flatten()
}

/// This core's group, created (with its poller) on first use.
fn get_or_create() -> std::io::Result<Rc<Group>> {
    if let Some(g) = current() {
        return Ok(g);
    }
    // SAFETY: plain syscall; the result is checked.
    let fd = unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) };
    if fd < 0 {
        return Err(std::io::Error::last_os_error());
    }
    // SAFETY: `fd` is a fresh descriptor we own.
    let epfd = unsafe { OwnedFd::from_raw_fd(fd) };
    let core = keel_reactor::current_core();
    let interrupt_mode = keel_reactor::reactor_stats()
        .iter()
        .any(|s| Some(s.lcore) == core && s.interrupt_mode);
    let g = Rc::new(Group {
        epfd,
        conns: RefCell::new(Vec::with_capacity(64)),
        free_tokens: RefCell::new(Vec::new()),
        events: RefCell::new(vec![libc::epoll_event { events: 0, u64: 0 }; MAX_EVENTS]),
        dirty: RefCell::new(Vec::with_capacity(256)),
        stalled: RefCell::new(Vec::with_capacity(64)),
        closing: RefCell::new(Vec::with_capacity(64)),
        to_close: RefCell::new(Vec::with_capacity(64)),
        spare: RefCell::new(Vec::with_capacity(256)),
        poller: Cell::new(None),
        timeout_poller: Cell::new(None),
        stall_poller: Cell::new(None),
        interrupt_mode,
        flush_scheduled: Cell::new(false),
        drains: RefCell::new(Vec::new()),
    });
    keel_reactor::register_interrupt_fd(g.epfd.as_raw_fd());
    let weak = Rc::downgrade(&g);
    let id = keel_reactor::register_poller("nvmf_tcp_poll_group", None, move || {
        weak.upgrade().map_or(PollStatus::Idle, |g| g.poll())
    });
    g.poller.set(Some(id));
    GROUP.with(|c| *c.borrow_mut() = Some(g.clone()));
    log::info!(
        "nvmf/tcp: poll group started on core {:?} ({})",
        core,
        if interrupt_mode {
            "interrupt mode"
        } else {
            "busy polling"
        }
    );
    Ok(g)
}

/// Take over an accepted connection on this core (runs on the chosen core).
pub fn add_connection(sock: TcpStream, listen: ListenAddr, cfg: ConnConfig, transport_id: u64) {
    let g = match get_or_create() {
        Ok(g) => g,
        Err(e) => {
            log::error!("nvmf/tcp: cannot create the poll group: {e}; dropping a connection");
            return;
        }
    };
    let token = {
        let mut free = g.free_tokens.borrow_mut();
        match free.pop() {
            Some(t) => t,
            None => {
                let mut conns = g.conns.borrow_mut();
                conns.push(None);
                (conns.len() - 1) as u32
            }
        }
    };
    let fd = sock.as_raw_fd();
    let deadline = Instant::now() + connect_timeout();
    let link: Weak<dyn GroupLink> = Rc::downgrade(&g) as Weak<dyn GroupLink>;
    let at = GroupHandle {
        link,
        token,
        park_when_stalled: g.interrupt_mode,
    };
    let conn = Conn::new(sock, at, transport_id, listen, cfg, deadline);
    let mut ev = libc::epoll_event {
        events: libc::EPOLLIN as u32,
        u64: token as u64,
    };
    // SAFETY: valid epoll and socket fds; `ev` is a valid event.
    if unsafe { libc::epoll_ctl(g.epfd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) } < 0 {
        log::error!(
            "nvmf/tcp: cannot watch a new connection: {}",
            std::io::Error::last_os_error()
        );
        g.conns.borrow_mut()[token as usize] = Some(conn.clone());
        conn.close();
        return;
    }
    g.conns.borrow_mut()[token as usize] = Some(conn);
    g.arm_connect_timeout();
}

impl Group {
    fn conn(&self, token: u32) -> Option<Rc<Conn>> {
        self.conns.borrow().get(token as usize).cloned().flatten()
    }

    /// Swap `list` with the spare vector and run `f` on each token taken.
    fn drain(&self, list: &RefCell<Vec<u32>>, mut f: impl FnMut(u32)) -> bool {
        let mut work = std::mem::take(&mut *self.spare.borrow_mut());
        std::mem::swap(&mut *list.borrow_mut(), &mut work);
        let any = !work.is_empty();
        for &t in &work {
            f(t);
        }
        work.clear();
        *self.spare.borrow_mut() = work;
        any
    }

    fn poll(&self) -> PollStatus {
        let mut busy = false;
        let n = {
            let mut events = self.events.borrow_mut();
            // SAFETY: `events` holds MAX_EVENTS valid entries; zero timeout: never sleeps.
            unsafe {
                libc::epoll_wait(
                    self.epfd.as_raw_fd(),
                    events.as_mut_ptr(),
                    MAX_EVENTS as i32,
                    0,
                )
            }
        };
        for k in 0..n.max(0) as usize {
            let (mask, token) = {
                let e = self.events.borrow()[k];
                (e.events, e.u64 as u32)
            };
            let Some(conn) = self.conn(token) else {
                continue;
            };
            busy = true;
            if mask & libc::EPOLLOUT as u32 != 0 {
                conn.flush();
            }
            if mask & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0 {
                conn.on_hangup();
            } else if mask & libc::EPOLLIN as u32 != 0 {
                conn.on_readable();
            }
        }
        // Busy mode: a stalled connection keeps the poller busy (it retries next poll).
        // Interrupt mode: the retry is not work by itself; the stall poller wakes us instead.
        let retried = self.retry_stalled();
        busy |= retried && !self.interrupt_mode;
        busy |= self.flush_dirty();
        busy |= self.drain(&self.to_close, |t| {
            if let Some(c) = self.conn(t) {
                c.close();
            }
        });
        if !self.closing.borrow().is_empty() {
            self.reap();
        }
        if busy {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Let the stalled connections try again; whether there were any.
    fn retry_stalled(&self) -> bool {
        self.drain(&self.stalled, |t| {
            if let Some(c) = self.conn(t) {
                if c.stalled() {
                    c.on_readable();
                }
            }
        })
    }

    /// Interrupt mode: make sure the stall poller runs (the group's poller only runs when
    /// something wakes the reactor).
    fn arm_stall_retry(&self) {
        if !self.interrupt_mode || self.stall_poller.get().is_some() {
            return;
        }
        // The group is this core's (`current`): the poller finds it there.
        let id =
            keel_reactor::register_poller("nvmf_tcp_stall_retry", Some(STALL_RETRY), move || {
                current().map_or(PollStatus::Idle, |g| g.stall_retry_tick())
            });
        self.stall_poller.set(Some(id));
    }

    /// The stall poller: retry the stalled connections; unregister once none is left (so a
    /// connection that stalls again soon finds it still armed).
    fn stall_retry_tick(&self) -> PollStatus {
        if self.stalled.borrow().is_empty() {
            if let Some(id) = self.stall_poller.take() {
                keel_reactor::unregister_poller(id);
            }
            return PollStatus::Idle;
        }
        self.retry_stalled();
        if self.flush_dirty() {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    fn flush_dirty(&self) -> bool {
        self.flush_scheduled.set(false);
        self.drain(&self.dirty, |t| {
            if let Some(c) = self.conn(t) {
                if c.take_dirty() {
                    c.flush();
                }
            }
        })
    }

    /// Free closed connections whose requests all came back.
    fn reap(&self) {
        let mut keep = std::mem::take(&mut *self.spare.borrow_mut());
        let mut closing = std::mem::take(&mut *self.closing.borrow_mut());
        for &t in &closing {
            let reapable = self.conn(t).is_some_and(|c| c.reapable());
            if reapable {
                let conn = self.conns.borrow_mut()[t as usize].take();
                self.free_tokens.borrow_mut().push(t);
                drop(conn);
            } else {
                keep.push(t);
            }
        }
        closing.clear();
        // New closings may have been queued meanwhile: keep them too.
        keep.append(&mut self.closing.borrow_mut());
        *self.closing.borrow_mut() = keep;
        *self.spare.borrow_mut() = closing;
        if !self.drains.borrow().is_empty() {
            self.check_drains();
        }
    }

    /// Whether a connection of `transport_id` is still allocated on this core.
    fn holds(&self, transport_id: u64) -> bool {
        self.conns
            .borrow()
            .iter()
            .flatten()
            .any(|c| c.transport_id() == transport_id)
    }

    /// Tell the transport shutdowns whose connections are all freed here.
    fn check_drains(&self) {
        let mut done = Vec::new();
        self.drains.borrow_mut().retain(|(tid, w)| {
            if self.holds(*tid) {
                true
            } else {
                done.push(w.clone());
                false
            }
        });
        for w in done {
            w.arrive();
        }
    }

    /// Make sure the connect-timeout poller runs (a connection has not connected yet). It
    /// checks at half the timeout (between 10 ms and 1 s) as set when it is armed.
    fn arm_connect_timeout(self: &Rc<Self>) {
        if self.timeout_poller.get().is_some() {
            return;
        }
        let period =
            (connect_timeout() / 2).clamp(Duration::from_millis(10), Duration::from_secs(1));
        let weak = Rc::downgrade(self);
        let id =
            keel_reactor::register_poller("nvmf_tcp_connect_timeout", Some(period), move || {
                weak.upgrade()
                    .map_or(PollStatus::Idle, |g| g.close_unconnected())
            });
        self.timeout_poller.set(Some(id));
    }

    /// Timed: queue for closing the connections that did not connect in time; disarm once
    /// every connection has connected its queue (or is closing).
    fn close_unconnected(&self) -> PollStatus {
        let now = Instant::now();
        let mut any = false;
        let mut waiting = false;
        for c in self.conns.borrow().iter().flatten() {
            if !c.awaiting_connect() {
                continue;
            }
            if !c.connect_expired(now) {
                waiting = true;
            } else {
                log::warn!(
                    "nvmf/tcp: {}: no ICReq and Connect within {:?}; closing the connection",
                    c.peer_addr(),
                    connect_timeout()
                );
                self.to_close.borrow_mut().push(c.token());
                any = true;
            }
        }
        if !waiting {
            if let Some(id) = self.timeout_poller.take() {
                keel_reactor::unregister_poller(id);
            }
        }
        if any {
            PollStatus::Busy
        } else {
            PollStatus::Idle
        }
    }

    /// Close every connection of `transport_id` (transport shutdown); `wait` hears when they
    /// are all freed.
    fn close_all(&self, transport_id: u64, wait: Arc<ShutdownWait>) {
        let conns: Vec<Rc<Conn>> = self
            .conns
            .borrow()
            .iter()
            .flatten()
            .filter(|c| c.transport_id() == transport_id)
            .cloned()
            .collect();
        for c in conns {
            c.close();
        }
        self.drains.borrow_mut().push((transport_id, wait));
        // Connections without requests out go now; the others when their requests are back.
        self.reap();
    }
}

/// A connection's place in its poll group, given to [`Conn::new`].
pub(crate) struct GroupHandle {
    /// The group (weak: the group owns its connections).
    pub link: Weak<dyn GroupLink>,
    /// The connection's token in the group.
    pub token: u32,
    /// Interrupt mode: stop watching for input while the receive machine is blocked.
    pub park_when_stalled: bool,
}

/// What a connection asks of its poll group. The connection holds a handle to its group
/// (given at construction) instead of reaching the core's group through thread-local state,
/// so a connection can run (and be tested) with any implementation.
pub(crate) trait GroupLink {
    /// The connection `token` queued output outside the group's poll: flush it on the next.
    fn mark_dirty(&self, token: u32);
    /// The connection `token` waits for a free slot or buffers: retry it on the next poll
    /// (interrupt mode: within [`STALL_RETRY`]).
    fn mark_stalled(&self, token: u32);
    /// The connection `token` closed: free it once its requests are back.
    fn mark_closing(&self, token: u32);
    /// Close the connection `token` at the next poll (the core asked for it, maybe from
    /// inside a call).
    fn request_close(&self, token: u32);
    /// Set what the connection's socket `fd` is watched for: input (`read`, off while a
    /// stalled connection is parked in interrupt mode) and writability (`write`, while output
    /// is pending). Errors and hang-ups are always reported.
    fn set_interest(&self, fd: i32, token: u32, read: bool, write: bool);
    /// Stop watching the connection's socket `fd` (before it closes).
    fn forget_fd(&self, fd: i32);
}

impl GroupLink for Group {
    fn mark_dirty(&self, token: u32) {
        self.dirty.borrow_mut().push(token);
        if self.interrupt_mode && !self.flush_scheduled.replace(true) {
            // The reactor might go to sleep before the poller runs again: wake it with a
            // message (a capture-less closure: no allocation).
            if let Some(core) = keel_reactor::current_core() {
                let _ = keel_reactor::send_to(core, || {
                    if let Some(g) = current() {
                        g.flush_dirty();
                    }
                });
            }
        }
    }

    fn mark_stalled(&self, token: u32) {
        self.stalled.borrow_mut().push(token);
        self.arm_stall_retry();
    }

    fn mark_closing(&self, token: u32) {
        self.closing.borrow_mut().push(token);
    }

    fn request_close(&self, token: u32) {
        self.to_close.borrow_mut().push(token);
    }

    fn set_interest(&self, fd: i32, token: u32, read: bool, write: bool) {
        let mut events = 0;
        if read {
            events |= libc::EPOLLIN as u32;
        }
        if write {
            events |= libc::EPOLLOUT as u32;
        }
        let mut ev = libc::epoll_event {
            events,
            u64: token as u64,
        };
        // SAFETY: valid fds and event.
        if unsafe { libc::epoll_ctl(self.epfd.as_raw_fd(), libc::EPOLL_CTL_MOD, fd, &mut ev) } < 0 {
            log::error!(
                "nvmf/tcp: cannot change the events watched on a connection: {}",
                std::io::Error::last_os_error()
            );
        }
    }

    fn forget_fd(&self, fd: i32) {
        // SAFETY: valid fds; a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.epfd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }
}

/// Close this core's connections of `transport_id` (runs on each core at shutdown); `wait`
/// hears from this core once they are all freed.
pub fn close_all(transport_id: u64, wait: Arc<ShutdownWait>) {
    match current() {
        Some(g) => g.close_all(transport_id, wait),
        None => wait.arrive(),
    }
}

/// Number of connections on this core waiting for a request slot or pool buffers.
pub fn stalled_count() -> usize {
    current().map_or(0, |g| {
        g.conns
            .borrow()
            .iter()
            .flatten()
            .filter(|c| c.stalled())
            .count()
    })
}

/// Number of live (not yet freed) connections on this core.
pub fn connection_count() -> usize {
    current().map_or(0, |g| g.conns.borrow().iter().flatten().count())
}
