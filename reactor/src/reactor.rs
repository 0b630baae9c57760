//! The per-core loop: message ring, pollers, timed pollers, local tasks, idle policy, counters.
use crate::{PollStatus, PollerId};
use std::time::Duration;

/// Ticks per second of the busy/idle counters (as `framework_get_reactors` reports `tick_rate`).
pub fn tick_rate() -> u64 {
    todo!()
}
/// A fast monotonic tick counter (e.g. TSC), readable on the hot path (no syscall), for I/O
/// latency accounting. Convert with [`tick_rate`].
pub fn ticks() -> u64 {
    todo!()
}
pub(crate) fn current_core() -> Option<u32> {
    todo!()
}
pub(crate) fn register_poller(
    _name: &'static str,
    _period: Option<Duration>,
    _f: Box<dyn FnMut() -> PollStatus>,
) -> PollerId {
    todo!()
}
pub(crate) fn unregister_poller(_id: PollerId) {
    todo!()
}
pub(crate) fn register_interrupt_fd(_fd: std::os::fd::RawFd) {
    todo!()
}
pub(crate) fn unregister_interrupt_fd(_fd: std::os::fd::RawFd) {
    todo!()
}
