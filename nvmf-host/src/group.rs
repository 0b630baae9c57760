//! HOT PATH: the per-core poll group — one reactor poller drives every host queue pair
//! (admin and I/O, of every controller) that lives on the core, as the target's TCP poll
//! group does for its connections. The poller exists while the core has a queue pair: the
//! first one registers it, the last one to go unregisters it.
//!
//! Each poll walks the list by index and clones one `Rc` at a time (no allocation, no
//! borrow held across a queue pair's poll), so completion callbacks may create or drop queue
//! pairs on this core: one dropped meanwhile may be skipped or polled once more this round,
//! which is harmless (a dropped queue pair is failed and polls idle).

use crate::qpair::Inner;
use keel_reactor::{PollStatus, PollerId};
use std::cell::RefCell;
use std::rc::Rc;

/// The queue pairs of this core and the poller that drives them.
struct Group {
    poller: PollerId,
    qpairs: Rc<RefCell<Vec<Rc<Inner>>>>,
}

thread_local! {
    static GROUP: RefCell<Option<Group>> = const { RefCell::new(None) };
}

/// Add a queue pair to the calling core's group (starting the group's poller if it is the
/// first). Must run on a reactor.
pub(crate) fn add(q: Rc<Inner>) {
    GROUP.with(|g| {
        let mut g = g.borrow_mut();
        let group = g.get_or_insert_with(|| {
            let qpairs = Rc::new(RefCell::new(Vec::new()));
            let list = Rc::clone(&qpairs);
            let poller =
                keel_reactor::register_poller("nvmf-host-group", None, move || poll_all(&list));
            Group { poller, qpairs }
        });
        let mut list = group.qpairs.borrow_mut();
        debug_assert!(!list.iter().any(|x| Rc::ptr_eq(x, &q)));
        list.push(q);
    });
}

/// Remove a queue pair from the calling core's group (stopping the poller with the last one).
/// Harmless for one not in it and during thread teardown.
pub(crate) fn remove(q: &Rc<Inner>) {
    let _ = GROUP.try_with(|g| {
        let mut g = g.borrow_mut();
        let Some(group) = g.as_mut() else {
            return;
        };
        let empty = {
            let mut list = group.qpairs.borrow_mut();
            if let Some(i) = list.iter().position(|x| Rc::ptr_eq(x, q)) {
                list.swap_remove(i);
            }
            list.is_empty()
        };
        if empty {
            keel_reactor::unregister_poller(group.poller);
            *g = None;
        }
    });
}

/// Queue pairs in the calling core's group.
pub(crate) fn len() -> usize {
    GROUP.with(|g| g.borrow().as_ref().map_or(0, |g| g.qpairs.borrow().len()))
}

/// One reactor iteration for every queue pair of the core.
fn poll_all(list: &RefCell<Vec<Rc<Inner>>>) -> PollStatus {
    let mut busy = false;
    let mut i = 0;
    loop {
        // The borrow ends before the poll: callbacks may add or remove queue pairs.
        let next = list.borrow().get(i).cloned();
        let Some(q) = next else {
            break;
        };
        busy |= q.poll() == PollStatus::Busy;
        i += 1;
    }
    if busy {
        PollStatus::Busy
    } else {
        PollStatus::Idle
    }
}
