//! Local (`!Send`) futures on a reactor, driven by `async-task`.
//!
//! Each task belongs to the reactor that spawned it and is only ever polled or dropped there
//! (`async_task::spawn_local` checks it). Its schedule function puts it on that reactor's
//! ready queue when woken on the reactor itself, and sends it through the reactor's mailbox
//! (waking the reactor if it sleeps) when woken from any other thread.

use crate::reactor::{with_local, Shared};
use crate::ring::Msg;
use async_task::Runnable;
use std::future::Future;
use std::sync::Arc;

pub(crate) fn spawn_local(fut: impl Future<Output = ()> + 'static) {
    let shared = with_local(|l| l.shared().clone())
        .unwrap_or_else(|| panic!("spawn_local called outside a reactor thread"));
    let (runnable, task) = async_task::spawn_local(fut, move |r| schedule(&shared, r));
    task.detach();
    runnable.schedule();
}

/// Queue `runnable`, a task of the reactor `owner`, to be polled there.
fn schedule(owner: &Arc<Shared>, runnable: Runnable) {
    let mut runnable = Some(runnable);
    with_local(|l| {
        if Arc::ptr_eq(l.shared(), owner) {
            if let Some(r) = runnable.take() {
                l.push_ready(r);
            }
        }
    });
    let Some(runnable) = runnable else { return };
    // Woken from another thread. A local task must not be dropped here: if its reactor has
    // exited (only possible at shutdown), the task is leaked rather than dropped off-core.
    if owner.send(Msg::wake(runnable)).is_err() {
        log::debug!("task of stopped reactor {} woken; leaked", owner.core());
    }
}
