//! Starting and stopping the set of reactors, and the process-wide table used to reach them.

use crate::{CpuMask, ReactorStats, SendError};
use std::sync::Arc;

/// How to start the reactors.
#[derive(Debug, Clone)]
pub struct RuntimeOptions {
    /// Cores to run a reactor on (one pinned thread each); the first is the main core.
    pub cpumask: CpuMask,
    /// Idle reactors sleep on epoll (eventfd, timers, registered fds) instead of busy polling.
    pub interrupt_mode: bool,
    /// Pin threads to their cores (tests may turn this off).
    pub pin_threads: bool,
}

/// Why the runtime could not start.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// A runtime is already running in this process.
    #[error("a reactor runtime is already running in this process")]
    AlreadyRunning,
    /// An OS resource (thread, eventfd, epoll) could not be created.
    #[error("cannot start reactor on core {core}: {source}")]
    Os { core: u32, source: std::io::Error },
}

/// The running set of reactors. Dropping it without [`Runtime::join`] requests shutdown and joins.
pub struct Runtime {
    _p: (),
}

impl Runtime {
    /// Start one reactor thread per core and return once all of them run. `init` runs first on
    /// the main core (e.g. to start the RPC server and load a config).
    pub fn start(
        _opts: RuntimeOptions,
        _init: impl FnOnce() + Send + 'static,
    ) -> Result<Runtime, RuntimeError> {
        todo!()
    }

    /// Wait until every reactor has stopped (after [`crate::request_shutdown`]). Before a reactor
    /// thread exits it runs its remaining messages and the shutdown hooks registered on it.
    pub fn join(self) {
        todo!()
    }
}

pub(crate) fn cores() -> Vec<u32> {
    todo!()
}
pub(crate) fn main_core() -> Option<u32> {
    todo!()
}
pub(crate) fn send_to(_core: u32, _f: Box<dyn FnOnce() + Send>) -> Result<(), SendError> {
    todo!()
}
pub(crate) fn for_each_core(
    _f: Arc<dyn Fn() + Send + Sync>,
    _done: Box<dyn FnOnce() + Send>,
) -> Result<(), SendError> {
    todo!()
}
pub(crate) fn reactor_stats() -> Vec<ReactorStats> {
    todo!()
}
pub(crate) fn request_shutdown() {
    todo!()
}
