//! Starting and stopping the set of reactors, and the process-wide table used to reach them.
//!
//! The running runtime is published in a process-wide registry. Reactor threads reach it
//! through their thread-local reactor (no lock); other threads take a read lock on the
//! registry (control path only).

use crate::reactor::{self, with_local, Shared};
use crate::ring::Msg;
use crate::{CpuMask, ReactorStats, SendError};
use std::any::Any;
use std::sync::{mpsc, Arc, Mutex, PoisonError, RwLock};
use std::thread::JoinHandle;

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
    Os {
        /// The core whose reactor could not start.
        core: u32,
        /// The OS error.
        source: std::io::Error,
    },
}

/// The reactors of one runtime, shared by every thread that reaches them.
pub(crate) struct RuntimeInner {
    /// In mask order: the first is the main core.
    reactors: Vec<Arc<Shared>>,
    /// Core id → index in `reactors`.
    by_core: Vec<Option<usize>>,
}

impl RuntimeInner {
    fn new(reactors: Vec<Arc<Shared>>) -> RuntimeInner {
        let len = reactors
            .iter()
            .map(|r| r.core() as usize + 1)
            .max()
            .unwrap_or(0);
        let mut by_core = vec![None; len];
        for (i, r) in reactors.iter().enumerate() {
            by_core[r.core() as usize] = Some(i);
        }
        RuntimeInner { reactors, by_core }
    }

    fn reactor(&self, core: u32) -> Option<&Arc<Shared>> {
        let i = (*self.by_core.get(core as usize)?)?;
        Some(&self.reactors[i])
    }

    /// Queue `msg` on `core`.
    pub(crate) fn send(&self, core: u32, msg: Msg) -> Result<(), SendError> {
        self.reactor(core)
            .ok_or(SendError::NoSuchCore(core))?
            .send(msg)
    }

    fn main_core(&self) -> u32 {
        self.reactors[0].core()
    }

    /// Ask every reactor to stop (and wake the sleeping ones).
    pub(crate) fn request_stop(&self) {
        for r in &self.reactors {
            r.request_stop();
        }
    }
}

/// The running runtime, if any.
static REGISTRY: RwLock<Option<Arc<RuntimeInner>>> = RwLock::new(None);
/// Serializes `Runtime::start` calls.
static START: Mutex<()> = Mutex::new(());

fn registered() -> Option<Arc<RuntimeInner>> {
    REGISTRY
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .clone()
}

fn set_registered(value: Option<Arc<RuntimeInner>>) {
    *REGISTRY.write().unwrap_or_else(PoisonError::into_inner) = value;
}

/// Call `f` with the running runtime (the calling reactor's, else the registry's).
fn with_runtime<R>(f: impl FnOnce(&RuntimeInner) -> R) -> Option<R> {
    let mut f = Some(f);
    if let Some(r) = with_local(|l| f.take().map(|f| f(l.runtime()))).flatten() {
        return Some(r);
    }
    let f = f?;
    registered().map(|rt| f(&rt))
}

/// The running set of reactors. Dropping it without [`Runtime::join`] requests shutdown and joins.
pub struct Runtime {
    inner: Arc<RuntimeInner>,
    threads: Vec<JoinHandle<()>>,
}

impl Runtime {
    /// Start one reactor thread per core and return once all of them run. `init` runs first on
    /// the main core (e.g. to start the RPC server and load a config).
    ///
    /// A runtime may be started again once the previous one was joined.
    pub fn start(
        opts: RuntimeOptions,
        init: impl FnOnce() + Send + 'static,
    ) -> Result<Runtime, RuntimeError> {
        let _serial = START.lock().unwrap_or_else(PoisonError::into_inner);
        if registered().is_some() {
            return Err(RuntimeError::AlreadyRunning);
        }
        // Calibrate the tick counter before any reactor converts a poller period.
        crate::ticks::tick_rate();
        let cores = opts.cpumask.cores();
        let mut reactors = Vec::with_capacity(cores.len());
        for &core in cores {
            let shared = Shared::new(core, opts.interrupt_mode)
                .map_err(|source| RuntimeError::Os { core, source })?;
            reactors.push(Arc::new(shared));
        }
        let inner = Arc::new(RuntimeInner::new(reactors));
        let mut runtime = Runtime {
            inner: inner.clone(),
            threads: Vec::with_capacity(cores.len()),
        };

        let (ready_tx, ready_rx) = mpsc::channel();
        for shared in &inner.reactors {
            let core = shared.core();
            let (shared, rt, ready) = (shared.clone(), inner.clone(), ready_tx.clone());
            let pin = opts.pin_threads;
            let spawned = std::thread::Builder::new()
                .name(format!("reactor_{core}"))
                .spawn(move || reactor::run_thread(shared, rt, pin, ready));
            match spawned {
                Ok(handle) => runtime.threads.push(handle),
                // Dropping `runtime` stops and joins the threads already started.
                Err(source) => return Err(RuntimeError::Os { core, source }),
            }
        }
        drop(ready_tx);
        for _ in 0..inner.reactors.len() {
            match ready_rx.recv() {
                Ok(Ok(())) => {}
                Ok(Err(err)) => return Err(err),
                Err(_) => {
                    let source = std::io::Error::other("a reactor thread died while starting");
                    return Err(RuntimeError::Os {
                        core: inner.main_core(),
                        source,
                    });
                }
            }
        }

        set_registered(Some(inner.clone()));
        let main = inner.main_core();
        // Cannot fail: the main reactor runs and nothing has stopped it yet.
        if inner.send(main, Msg::call(init)).is_err() {
            log::error!("reactor {main} stopped before init could run");
        }
        let mode = if opts.interrupt_mode {
            "interrupt mode"
        } else {
            "busy polling"
        };
        log::info!("reactor runtime started on cores {} ({mode})", opts.cpumask);
        Ok(runtime)
    }

    /// Wait until every reactor has stopped (after [`crate::request_shutdown`]). Before a reactor
    /// thread exits it runs its remaining messages and ready tasks, then drops its pollers and
    /// tasks on its own thread. If a reactor panicked, the panic is resumed here.
    pub fn join(mut self) {
        if let Some(panic) = self.join_threads() {
            std::panic::resume_unwind(panic);
        }
    }

    /// Join every thread and unpublish the runtime; returns the first panic payload, if any.
    fn join_threads(&mut self) -> Option<Box<dyn Any + Send>> {
        let mut first_panic = None;
        for handle in self.threads.drain(..) {
            if let Err(panic) = handle.join() {
                first_panic.get_or_insert(panic);
            }
        }
        let mut registry = REGISTRY.write().unwrap_or_else(PoisonError::into_inner);
        if registry
            .as_ref()
            .is_some_and(|rt| Arc::ptr_eq(rt, &self.inner))
        {
            *registry = None;
            log::info!("reactor runtime stopped");
        }
        first_panic
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        if self.threads.is_empty() {
            return;
        }
        self.inner.request_stop();
        if self.join_threads().is_some() {
            log::error!("a reactor thread panicked");
        }
    }
}

pub(crate) fn cores() -> Vec<u32> {
    with_runtime(|rt| rt.reactors.iter().map(|r| r.core()).collect()).unwrap_or_default()
}

pub(crate) fn main_core() -> Option<u32> {
    with_runtime(|rt| rt.main_core())
}

pub(crate) fn send_to(core: u32, msg: Msg) -> Result<(), SendError> {
    with_runtime(|rt| rt.send(core, msg)).unwrap_or(Err(SendError::NotRunning))
}

/// The reactors are visited in mask order, one after the other (each hop is a message), then
/// `done` is sent to the origin.
pub(crate) fn for_each_core(
    f: Arc<dyn Fn() + Send + Sync>,
    done: Box<dyn FnOnce() + Send>,
) -> Result<(), SendError> {
    let origin = reactor::current_core()
        .or_else(main_core)
        .ok_or(SendError::NotRunning)?;
    for_each_step(0, origin, f, done)
}

fn for_each_step(
    index: usize,
    origin: u32,
    f: Arc<dyn Fn() + Send + Sync>,
    done: Box<dyn FnOnce() + Send>,
) -> Result<(), SendError> {
    let next =
        with_runtime(|rt| rt.reactors.get(index).map(|r| r.core())).ok_or(SendError::NotRunning)?;
    let Some(core) = next else {
        return send_to(origin, Msg::call(done));
    };
    send_to(
        core,
        Msg::call(move || {
            f();
            if let Err(err) = for_each_step(index + 1, origin, f, done) {
                log::warn!("for_each_core stopped after core {core}: {err}");
            }
        }),
    )
}

pub(crate) fn reactor_stats() -> Vec<ReactorStats> {
    with_runtime(|rt| rt.reactors.iter().map(|r| r.stats()).collect()).unwrap_or_default()
}

pub(crate) fn request_shutdown() {
    if with_runtime(|rt| rt.request_stop()).is_some() {
        log::info!("reactor runtime shutdown requested");
    }
}

#[cfg(test)]
pub(crate) mod tests;
