//! The public reactor API: free functions acting on the calling thread's reactor or on a named
//! core. Every function here may be called from any reactor thread; the ones documented so may
//! also be called from non-reactor threads (e.g. a signal thread or a test's main thread).

use std::future::Future;
use std::time::Duration;

/// What a poller reports after one run, for busy/idle accounting and the idle policy:
/// `Busy` means it did work (a completion, a received PDU), `Idle` that it found nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PollStatus {
    /// The poller did useful work this iteration.
    Busy,
    /// The poller found nothing to do.
    Idle,
}

/// Handle of a registered poller, used to unregister it. Only valid on the core that registered it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct PollerId(pub(crate) u64);

/// Error returned when a message cannot be delivered to a core.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum SendError {
    /// The core is not part of the running runtime's core mask.
    #[error("core {0} is not a reactor core")]
    NoSuchCore(u32),
    /// The runtime is shutting down (or was never started).
    #[error("the reactor runtime is not running")]
    NotRunning,
}

/// Per-reactor counters, as `framework_get_reactors` reports them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReactorStats {
    /// The logical CPU this reactor is pinned to.
    pub lcore: u32,
    /// Ticks spent in iterations where some poller, message or task did work.
    pub busy_ticks: u64,
    /// Ticks spent in iterations where nothing did work (including sleeping in interrupt mode).
    pub idle_ticks: u64,
    /// Number of active (untimed + timed) pollers registered on this reactor.
    pub pollers: u32,
    /// How many of `pollers` are timed pollers (run at a period rather than every iteration).
    pub timed_pollers: u32,
    /// Whether this reactor runs in interrupt mode.
    pub interrupt_mode: bool,
    /// Interrupt mode: how many times the reactor went to sleep in `epoll_wait` (each sleep
    /// ends in one wake-up: a message, a timer, a registered fd). 0 in busy-polling mode.
    pub sleeps: u64,
    /// Loop iterations so far.
    pub iterations: u64,
}
pub use crate::reactor::{tick_rate, ticks};

/// The core id of the calling thread's reactor, or `None` on a non-reactor thread.
pub fn current_core() -> Option<u32> {
    crate::reactor::current_core()
}

/// The cores of the running runtime, in mask order (empty when none runs). Any thread.
pub fn cores() -> Vec<u32> {
    crate::runtime::cores()
}

/// The first core of the mask: it also serves the control plane (RPC). Any thread.
pub fn main_core() -> Option<u32> {
    crate::runtime::main_core()
}

/// Run `f` on reactor `core` at its next iteration (lock-free ring; FIFO per sender).
/// Callable from any thread. A closure capturing at most 24 bytes (8-byte aligned) is stored in
/// the ring itself; a bigger one is boxed (one allocation, freed on the receiving core).
pub fn send_to(core: u32, f: impl FnOnce() + Send + 'static) -> Result<(), SendError> {
    crate::runtime::send_to(core, crate::ring::Msg::call(f))
}

/// Run `f` on `core` and get its result back as a future (for use in local tasks, e.g. RPC
/// handlers). If the message cannot be sent, the future resolves to `Err`.
pub fn call_on<R: Send + 'static>(
    core: u32,
    f: impl FnOnce() -> R + Send + 'static,
) -> impl Future<Output = Result<R, SendError>> {
    let (tx, rx) = crate::oneshot::oneshot();
    let sent = send_to(core, move || tx.send(f()));
    async move {
        sent?;
        rx.await.map_err(|_| SendError::NotRunning)
    }
}

/// Spawn a local (`!Send`) future on the calling reactor. Panics on a non-reactor thread.
pub fn spawn_local(fut: impl Future<Output = ()> + 'static) {
    crate::task::spawn_local(fut)
}

/// Spawn on `core` the future that `make` builds there (the closure crosses cores, the future
/// need not be `Send`). Any thread.
pub fn spawn_on<F, Fut>(core: u32, make: F) -> Result<(), SendError>
where
    F: FnOnce() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + 'static,
{
    send_to(core, move || spawn_local(make()))
}

/// Run `f` once on every core (as a message) and then `done` once, on the calling core if it is
/// a reactor, else on the main core. Any thread.
pub fn for_each_core(
    f: impl Fn() + Send + Sync + 'static,
    done: impl FnOnce() + Send + 'static,
) -> Result<(), SendError> {
    crate::runtime::for_each_core(std::sync::Arc::new(f), Box::new(done))
}

/// Register a poller on the calling reactor. With `period == None` it runs every iteration;
/// with `Some(p)` it runs when at least `p` has passed since its last run. Panics on a
/// non-reactor thread.
pub fn register_poller(
    name: &'static str,
    period: Option<Duration>,
    f: impl FnMut() -> PollStatus + 'static,
) -> PollerId {
    crate::reactor::register_poller(name, period, Box::new(f))
}

/// Unregister a poller of the calling reactor. Safe to call from inside that poller (it is
/// removed after its current run) and harmless for an id already removed.
pub fn unregister_poller(id: PollerId) {
    crate::reactor::unregister_poller(id)
}

/// Tell the calling reactor to also wake from interrupt-mode sleep when `fd` becomes readable
/// (e.g. a listening socket). Has no effect in busy-polling mode beyond bookkeeping.
pub fn register_interrupt_fd(fd: std::os::fd::RawFd) {
    crate::reactor::register_interrupt_fd(fd)
}

/// Undo [`register_interrupt_fd`] before closing the fd.
pub fn unregister_interrupt_fd(fd: std::os::fd::RawFd) {
    crate::reactor::unregister_interrupt_fd(fd)
}

/// Whether `fd` may be readable, for a poller that should touch its fd only then (e.g. an
/// accept poller): in interrupt mode, `true` once after the reactor saw the registered `fd`
/// readable (in its sleep, or while busy at most every millisecond), then `false` until it sees
/// it again — a caller that leaves data unread must retry by itself; the fd stays readable
/// (level-triggered), so it is reported again at the next sleep anyway. Always `true` in
/// busy-polling mode, for an fd not registered with [`register_interrupt_fd`] and on a
/// non-reactor thread (nothing watches the fd there).
pub fn take_interrupt_fd_ready(fd: std::os::fd::RawFd) -> bool {
    crate::reactor::take_interrupt_fd_ready(fd)
}

/// Change the period of a timed poller of the calling reactor: its next run is `period` from
/// now (from the end of the current run when called by the poller itself), and every `period`
/// after that. Lets a timer follow a deadline (e.g. a keep-alive timeout) instead of checking
/// it often. Returns `false` (and changes nothing) for an untimed or unknown poller.
pub fn set_poller_period(id: PollerId, period: Duration) -> bool {
    crate::reactor::set_poller_period(id, period)
}

/// Counters of every reactor (any thread; read from atomics, no message needed).
pub fn reactor_stats() -> Vec<ReactorStats> {
    crate::runtime::reactor_stats()
}

/// Ask every reactor to stop after its current iteration. Any thread (signal-safe enough to be
/// called from a signal-handling thread, not from a signal handler itself).
pub fn request_shutdown() {
    crate::runtime::request_shutdown()
}
