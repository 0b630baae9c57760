//! `keel-reactor`: Keel's runtime.
//!
//! One pinned OS thread per core of the core mask, each running a run-to-completion loop
//! (docs/ARCHITECTURE.md §3): drain the core's lock-free message ring, run every active poller, run the
//! timed pollers that are due, poll the ready local tasks. Nothing on a reactor ever blocks.
//!
//! The API is free functions that act on "the current reactor" (the calling thread's), plus
//! [`Runtime`] to start and stop the whole set. Pools of DMA-able I/O buffers live in [`pool`].
//!
//! Module map (each file has one job):
//! - `cpumask`: parsing and validating `-m/--cpumask`.
//! - `runtime`: starting/stopping the reactor threads, the global registry of reactors.
//! - `reactor`: the per-core loop, message ring, pollers, timers, idle/interrupt policy, stats.
//!   Private helpers: `ring` (the per-reactor mailbox), `poller` (poller bookkeeping),
//!   `interrupt` (eventfd/epoll), `ticks` (the TSC tick counter).
//! - `task`: local (`!Send`) futures on a reactor (`async-task`).
//! - `oneshot`: a small completion channel used by `call_on` and the control plane.
//! - `pool`: per-core slab allocator of DMA-able buffers.

mod api;
pub mod cpumask;
mod interrupt;
mod oneshot;
mod poller;
pub mod pool;
mod reactor;
mod ring;
mod runtime;
mod task;
mod ticks;

pub use api::*;
pub use cpumask::{CpuMask, CpuMaskError};
pub use oneshot::{oneshot, OneshotReceiver, OneshotSender};
pub use runtime::{Runtime, RuntimeError, RuntimeOptions};
