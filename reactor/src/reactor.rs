//! The per-core loop: message ring, pollers, timed pollers, local tasks, idle policy, counters.
//!
//! Each reactor has a [`Shared`] half (its mailbox, flags and counters, reachable from any
//! thread through the runtime's registry) and a [`Local`] half that only its own thread
//! touches (pollers, the ready-task queue, the epoll set), found through a thread-local.
//!
//! Idle policy: busy polling never sleeps. In interrupt mode an iteration in which no message,
//! poller or task did work is followed by a sleep in `epoll_wait` on the reactor's eventfd
//! (rung by senders that see its `sleeping` flag) and the registered fds, until the next timed
//! poller is due. Untimed pollers therefore only run when something wakes the reactor: a poller
//! that waits on an fd should register it with `register_interrupt_fd`, and may ask
//! `take_interrupt_fd_ready` whether the reactor saw the fd readable (recorded in each sleep,
//! and every [`FD_CHECK_WHILE_BUSY`] while the reactor is too busy to sleep) instead of making
//! a system call on every iteration, e.g. an `accept` that would fail with EAGAIN.

use crate::interrupt::{Epoll, Token};
use crate::poller::{self, Pollers};
use crate::ring::{Mailbox, Msg};
use crate::runtime::{RuntimeError, RuntimeInner};
use crate::ticks::{duration_to_ticks, ticks_to_duration};
use crate::{PollStatus, PollerId, ReactorStats, SendError};
use async_task::Runnable;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::time::Duration;

pub use crate::ticks::{tick_rate, ticks};

/// Messages run per iteration at most, so pollers are not starved by a flood.
const MSG_BATCH: usize = 128;
/// Longest interrupt-mode sleep without any timer (a safety net: no wake-up should be lost).
/// Tests make it long so that a lost wake-up shows as a test failure, not as a 1 s delay.
const MAX_SLEEP: Duration = if cfg!(test) {
    Duration::from_secs(3600)
} else {
    Duration::from_secs(1)
};
/// Rounds of "run queued messages and ready tasks" at shutdown before the rest is dropped.
const SHUTDOWN_ROUNDS: usize = 100;
/// Messages run per shutdown round at most.
const SHUTDOWN_BATCH: usize = 4096;
/// The epoll token of the reactor's own eventfd (registered fds use their fd number).
const EVENTFD_TOKEN: Token = u64::MAX;
/// Interrupt mode: while the reactor is too busy to sleep (its sleeps are what collect the
/// readiness of registered fds), look at them without sleeping at most this often, so an
/// fd-driven poller (e.g. the accept poller) is not starved under load.
const FD_CHECK_WHILE_BUSY: Duration = Duration::from_millis(1);

/// Keeps owner-written counters off the cache line senders read.
#[repr(align(128))]
struct CacheAligned<T>(T);

struct Counters {
    busy_ticks: AtomicU64,
    idle_ticks: AtomicU64,
    pollers: AtomicU32,
    timed_pollers: AtomicU32,
    /// Interrupt-mode sleeps (epoll_wait calls).
    sleeps: AtomicU64,
    /// Loop iterations.
    iterations: AtomicU64,
}

/// The part of a reactor any thread may reach.
pub(crate) struct Shared {
    core: u32,
    interrupt_mode: bool,
    mailbox: Mailbox,
    /// Set by `request_stop`: leave the loop after the current iteration.
    stop: AtomicBool,
    /// Set once the reactor no longer drains its mailbox: sends fail with `NotRunning`.
    exited: AtomicBool,
    counters: CacheAligned<Counters>,
}

impl Shared {
    pub(crate) fn new(core: u32, interrupt_mode: bool) -> io::Result<Shared> {
        Ok(Shared {
            core,
            interrupt_mode,
            mailbox: Mailbox::new(interrupt_mode)?,
            stop: AtomicBool::new(false),
            exited: AtomicBool::new(false),
            counters: CacheAligned(Counters {
                busy_ticks: AtomicU64::new(0),
                idle_ticks: AtomicU64::new(0),
                pollers: AtomicU32::new(0),
                timed_pollers: AtomicU32::new(0),
                sleeps: AtomicU64::new(0),
                iterations: AtomicU64::new(0),
            }),
        })
    }

    /// The core this reactor runs on.
    pub(crate) fn core(&self) -> u32 {
        self.core
    }

    /// Queue a message (any thread).
    pub(crate) fn send(&self, msg: Msg) -> Result<(), SendError> {
        if self.exited.load(Ordering::Acquire) {
            return Err(SendError::NotRunning);
        }
        self.mailbox.push(msg);
        Ok(())
    }

    /// Ask the loop to stop after its current iteration, waking it if it sleeps.
    pub(crate) fn request_stop(&self) {
        self.stop.store(true, Ordering::SeqCst);
        self.mailbox.notify();
    }

    /// How many times the reactor went to sleep (interrupt mode).
    #[cfg(test)]
    pub(crate) fn sleeps(&self) -> u64 {
        self.counters.0.sleeps.load(Ordering::Relaxed)
    }

    /// Current counters.
    pub(crate) fn stats(&self) -> ReactorStats {
        let c = &self.counters.0;
        ReactorStats {
            lcore: self.core,
            busy_ticks: c.busy_ticks.load(Ordering::Relaxed),
            idle_ticks: c.idle_ticks.load(Ordering::Relaxed),
            pollers: c.pollers.load(Ordering::Relaxed),
            timed_pollers: c.timed_pollers.load(Ordering::Relaxed),
            interrupt_mode: self.interrupt_mode,
            sleeps: c.sleeps.load(Ordering::Relaxed),
            iterations: c.iterations.load(Ordering::Relaxed),
        }
    }
}

/// The part of a reactor only its own thread touches.
pub(crate) struct Local {
    shared: Arc<Shared>,
    runtime: Arc<RuntimeInner>,
    pollers: RefCell<Pollers>,
    ready: RefCell<VecDeque<Runnable>>,
    /// Interrupt mode only: the eventfd plus the registered fds.
    epoll: Option<Epoll>,
    /// The registered fds, each with whether epoll reported it readable since the last
    /// [`take_interrupt_fd_ready`] (always `true` in busy-polling mode, where nothing watches).
    interrupt_fds: RefCell<Vec<(RawFd, bool)>>,
}

thread_local! {
    static CURRENT: RefCell<Option<Rc<Local>>> = const { RefCell::new(None) };
}

/// Call `f` with the calling thread's reactor; `None` on a non-reactor thread.
pub(crate) fn with_local<R>(f: impl FnOnce(&Local) -> R) -> Option<R> {
    CURRENT
        .try_with(|c| c.borrow().as_deref().map(f))
        .ok()
        .flatten()
}

impl Local {
    pub(crate) fn runtime(&self) -> &RuntimeInner {
        &self.runtime
    }

    pub(crate) fn shared(&self) -> &Arc<Shared> {
        &self.shared
    }

    /// Queue a task of this reactor to be polled (on this thread).
    pub(crate) fn push_ready(&self, runnable: Runnable) {
        self.ready.borrow_mut().push_back(runnable);
    }

    fn update_poller_count(&self) {
        let (n, timed) = {
            let p = self.pollers.borrow();
            (p.active(), p.active_timed())
        };
        let c = &self.shared.counters.0;
        c.pollers.store(n as u32, Ordering::Relaxed);
        c.timed_pollers.store(timed as u32, Ordering::Relaxed);
    }

    /// Run up to `budget` messages; returns how many ran.
    fn drain_messages(&self, budget: usize) -> usize {
        let mut n = 0;
        while n < budget {
            match self.shared.mailbox.pop() {
                Some(msg) => msg.run(),
                None => break,
            }
            n += 1;
        }
        n
    }

    /// Poll the tasks that were ready when called (not those they wake). Returns how many.
    fn run_tasks(&self) -> usize {
        let n = self.ready.borrow().len();
        for _ in 0..n {
            let Some(runnable) = self.pop_ready() else {
                break;
            };
            runnable.run();
        }
        n
    }

    /// The loop, until a stop request.
    fn run(&self) {
        let shared = &*self.shared;
        let counters = &shared.counters.0;
        let (mut busy_ticks, mut idle_ticks) = (0u64, 0u64);
        let mut last = ticks();
        let fd_check_ticks = duration_to_ticks(FD_CHECK_WHILE_BUSY);
        let mut fds_checked = last;
        let mut iterations = 0u64;
        // Acquire: whatever was queued before a stop request is drained by `shutdown`.
        while !shared.stop.load(Ordering::Acquire) {
            iterations += 1;
            counters.iterations.store(iterations, Ordering::Relaxed);
            let mut busy = self.drain_messages(MSG_BATCH) > 0;
            busy |= poller::run_untimed(&self.pollers);
            busy |= poller::run_timed(&self.pollers, last);
            busy |= self.run_tasks() > 0;
            let mut now = ticks();
            if let Some(epoll) = &self.epoll {
                if !busy {
                    self.sleep(now);
                    now = ticks();
                    fds_checked = now;
                } else if now.saturating_sub(fds_checked) >= fd_check_ticks {
                    self.check_fds(epoll);
                    fds_checked = now;
                }
            }
            let spent = now.saturating_sub(last);
            if busy {
                busy_ticks += spent;
                counters.busy_ticks.store(busy_ticks, Ordering::Relaxed);
            } else {
                idle_ticks += spent;
                counters.idle_ticks.store(idle_ticks, Ordering::Relaxed);
            }
            last = now;
        }
    }

    /// Interrupt mode, after an iteration without work: sleep until a message, the next timed
    /// poller, a registered fd or a stop request.
    fn sleep(&self, now: u64) {
        let Some(epoll) = &self.epoll else { return };
        let timeout = match self.pollers.borrow().next_due() {
            Some(due) if due <= now => return,
            Some(due) => ticks_to_duration(due - now).min(MAX_SLEEP),
            None => MAX_SLEEP,
        };
        if !self.ready.borrow().is_empty() || !self.shared.mailbox.prepare_sleep() {
            return;
        }
        if !self.shared.stop.load(Ordering::SeqCst) {
            let sleeps = &self.shared.counters.0.sleeps;
            sleeps.store(sleeps.load(Ordering::Relaxed) + 1, Ordering::Relaxed);
            let mailbox = &self.shared.mailbox;
            let woke = epoll.wait(timeout, |token| {
                if token == EVENTFD_TOKEN {
                    if let Some(efd) = mailbox.eventfd() {
                        efd.clear();
                    }
                } else {
                    self.mark_fd_ready(token);
                }
            });
            if let Err(err) = woke {
                log::error!("reactor {}: epoll_wait failed: {err}", self.shared.core);
            }
        }
        self.shared.mailbox.end_sleep();
    }

    /// Record that epoll reported the registered fd of `token` readable.
    fn mark_fd_ready(&self, token: Token) {
        let mut fds = self.interrupt_fds.borrow_mut();
        if let Some(entry) = fds.iter_mut().find(|(fd, _)| *fd as Token == token) {
            entry.1 = true;
        }
    }

    /// Interrupt mode, busy: collect the readiness of the registered fds without sleeping
    /// (the eventfd is left alone: nobody rings it while the reactor is awake).
    fn check_fds(&self, epoll: &Epoll) {
        if self.interrupt_fds.borrow().is_empty() {
            return;
        }
        let checked = epoll.wait(Duration::ZERO, |token| {
            if token != EVENTFD_TOKEN {
                self.mark_fd_ready(token);
            }
        });
        if let Err(err) = checked {
            log::error!("reactor {}: epoll_wait failed: {err}", self.shared.core);
        }
    }

    /// After the loop: run what is queued; then refuse new messages, run what raced with that
    /// and drop pollers and pending tasks on this thread (which may queue more), until quiet.
    /// Bounded, so a message that keeps re-sending itself cannot hold the shutdown.
    fn shutdown(&self) {
        let core = self.shared.core;
        let mut rounds = 0;
        while rounds < SHUTDOWN_ROUNDS && self.drain_messages(SHUTDOWN_BATCH) + self.run_tasks() > 0
        {
            rounds += 1;
        }
        self.shared.exited.store(true, Ordering::SeqCst);
        loop {
            let mut work = self.drain_messages(SHUTDOWN_BATCH) + self.run_tasks();
            let closures = self.pollers.borrow_mut().take_all();
            work += closures.len();
            drop(closures);
            while let Some(runnable) = self.pop_ready() {
                drop(runnable);
                work += 1;
            }
            if work == 0 {
                break;
            }
            rounds += 1;
            if rounds >= 2 * SHUTDOWN_ROUNDS {
                log::warn!("reactor {core}: still busy after {rounds} shutdown rounds; leaving");
                break;
            }
        }
        self.update_poller_count();
    }

    fn pop_ready(&self) -> Option<Runnable> {
        self.ready.borrow_mut().pop_front()
    }
}

/// Sets `exited` when the reactor thread ends, and stops the whole runtime if it panicked.
struct ExitGuard {
    shared: Arc<Shared>,
    runtime: Arc<RuntimeInner>,
}

impl Drop for ExitGuard {
    fn drop(&mut self) {
        self.shared.exited.store(true, Ordering::SeqCst);
        if std::thread::panicking() {
            log::error!(
                "reactor {} panicked; stopping the runtime",
                self.shared.core
            );
            self.runtime.request_stop();
        }
    }
}

/// Body of a reactor thread: pin, set up, report to `ready`, loop until stopped, clean up.
pub(crate) fn run_thread(
    shared: Arc<Shared>,
    runtime: Arc<RuntimeInner>,
    pin: bool,
    ready: mpsc::Sender<Result<(), RuntimeError>>,
) {
    let core = shared.core;
    let _guard = ExitGuard {
        shared: shared.clone(),
        runtime: runtime.clone(),
    };
    let fail = |source: io::Error| {
        let _ = ready.send(Err(RuntimeError::Os { core, source }));
    };
    if pin && !core_affinity::set_for_current(core_affinity::CoreId { id: core as usize }) {
        return fail(io::Error::other(format!(
            "cannot pin the thread to core {core}"
        )));
    }
    let epoll = if shared.interrupt_mode {
        match make_epoll(&shared) {
            Ok(epoll) => Some(epoll),
            Err(err) => return fail(err),
        }
    } else {
        None
    };
    let local = Rc::new(Local {
        shared,
        runtime,
        pollers: RefCell::new(Pollers::default()),
        ready: RefCell::new(VecDeque::new()),
        epoll,
        interrupt_fds: RefCell::new(Vec::new()),
    });
    CURRENT.with(|c| *c.borrow_mut() = Some(local.clone()));
    let mode = if local.epoll.is_some() {
        "interrupt mode"
    } else {
        "busy polling"
    };
    log::info!("reactor started on core {core} ({mode}, pinned: {pin})");
    let _ = ready.send(Ok(()));
    drop(ready);

    local.run();
    local.shutdown();

    let current = CURRENT.with(|c| c.borrow_mut().take());
    drop(current);
    drop(local);
    log::info!("reactor on core {core} stopped");
}

fn make_epoll(shared: &Shared) -> io::Result<Epoll> {
    let epoll = Epoll::new()?;
    if let Some(efd) = shared.mailbox.eventfd() {
        epoll.add(efd.as_raw_fd(), EVENTFD_TOKEN)?;
    }
    Ok(epoll)
}

pub(crate) fn current_core() -> Option<u32> {
    with_local(|l| l.shared.core)
}

pub(crate) fn register_poller(
    name: &'static str,
    period: Option<Duration>,
    f: Box<dyn FnMut() -> PollStatus>,
) -> PollerId {
    with_local(|l| {
        let period_ticks = period.map(duration_to_ticks);
        let id = l
            .pollers
            .borrow_mut()
            .register(name, period_ticks, ticks(), f);
        l.update_poller_count();
        log::debug!(
            "reactor {}: registered poller {name:?} (id {id}, period {period:?})",
            l.shared.core
        );
        PollerId(id)
    })
    .unwrap_or_else(|| panic!("register_poller({name:?}) called outside a reactor thread"))
}

pub(crate) fn unregister_poller(id: PollerId) {
    let done = with_local(|l| {
        let removed = l.pollers.borrow_mut().unregister(id.0);
        if let Some((name, closure)) = removed {
            l.update_poller_count();
            log::debug!(
                "reactor {}: unregistered poller {name:?} (id {})",
                l.shared.core,
                id.0
            );
            // Dropped here, with no borrow held: its destructor may use the reactor API.
            drop(closure);
        }
    });
    if done.is_none() {
        log::error!(
            "unregister_poller({}) called outside a reactor thread; ignored",
            id.0
        );
    }
}

pub(crate) fn register_interrupt_fd(fd: RawFd) {
    let done = with_local(|l| {
        let mut fds = l.interrupt_fds.borrow_mut();
        if fds.iter().any(|(f, _)| *f == fd) {
            return;
        }
        if let Some(epoll) = &l.epoll {
            // fds are non-negative, so the token never collides with EVENTFD_TOKEN.
            if let Err(err) = epoll.add(fd, fd as Token) {
                log::error!("reactor {}: cannot watch fd {fd}: {err}", l.shared.core);
                return;
            }
        }
        // Ready at first: whatever arrived before the registration is looked at once.
        fds.push((fd, true));
        log::debug!("reactor {}: interrupt fd {fd} registered", l.shared.core);
    });
    if done.is_none() {
        log::error!("register_interrupt_fd({fd}) called outside a reactor thread; ignored");
    }
}

pub(crate) fn unregister_interrupt_fd(fd: RawFd) {
    let done = with_local(|l| {
        let mut fds = l.interrupt_fds.borrow_mut();
        let Some(pos) = fds.iter().position(|(f, _)| *f == fd) else {
            return;
        };
        fds.swap_remove(pos);
        if let Some(epoll) = &l.epoll {
            if let Err(err) = epoll.remove(fd) {
                log::warn!("reactor {}: cannot unwatch fd {fd}: {err}", l.shared.core);
            }
        }
        log::debug!("reactor {}: interrupt fd {fd} unregistered", l.shared.core);
    });
    if done.is_none() {
        log::error!("unregister_interrupt_fd({fd}) called outside a reactor thread; ignored");
    }
}

pub(crate) fn take_interrupt_fd_ready(fd: RawFd) -> bool {
    with_local(|l| {
        if l.epoll.is_none() {
            return true;
        }
        let mut fds = l.interrupt_fds.borrow_mut();
        match fds.iter_mut().find(|(f, _)| *f == fd) {
            Some(entry) => std::mem::replace(&mut entry.1, false),
            // Not registered: nothing watches it, so it may be ready any time.
            None => true,
        }
    })
    .unwrap_or(true)
}

pub(crate) fn set_poller_period(id: PollerId, period: Duration) -> bool {
    with_local(|l| {
        l.pollers
            .borrow_mut()
            .set_period(id.0, duration_to_ticks(period), ticks())
    })
    .unwrap_or(false)
}
