//! A reactor's pollers: untimed ones run every iteration, timed ones when due (kept sorted by
//! deadline). Pollers may register and unregister pollers, themselves included, while they
//! run: a poller's closure is taken out of its slot for the call (no `RefCell` borrow is held
//! across user code) and removals only mark slots, which are compacted after each pass.

use crate::PollStatus;
use std::cell::RefCell;
use std::sync::atomic::{AtomicU64, Ordering};

/// Poller ids are unique in the process, so an id used on the wrong core matches nothing.
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

/// A poller's body.
pub(crate) type PollFn = Box<dyn FnMut() -> PollStatus>;

struct Slot {
    id: u64,
    name: &'static str,
    /// Period in ticks (timed pollers).
    period: u64,
    /// Next deadline in ticks (timed pollers).
    due: u64,
    /// `None` while the closure runs, or once removed.
    f: Option<PollFn>,
    removed: bool,
}

/// All pollers of one reactor. Used through `&RefCell<Pollers>` by the free functions below.
#[derive(Default)]
pub(crate) struct Pollers {
    untimed: Vec<Slot>,
    /// Sorted by `due`, ascending.
    timed: Vec<Slot>,
    /// Timed pollers taken out of `timed` for the current timed pass.
    running: Vec<Slot>,
    active: usize,
    /// How many of `active` are timed pollers.
    active_timed: usize,
    has_removed: bool,
}

impl Pollers {
    /// Number of registered (not removed) pollers.
    pub(crate) fn active(&self) -> usize {
        self.active
    }

    /// Number of registered (not removed) timed pollers.
    pub(crate) fn active_timed(&self) -> usize {
        self.active_timed
    }

    /// Deadline of the earliest timed poller, if any.
    pub(crate) fn next_due(&self) -> Option<u64> {
        self.timed.first().map(|s| s.due)
    }

    /// Add a poller: untimed when `period` is `None`, else due `period` ticks after `now`.
    pub(crate) fn register(
        &mut self,
        name: &'static str,
        period: Option<u64>,
        now: u64,
        f: PollFn,
    ) -> u64 {
        let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
        self.active += 1;
        match period {
            None => self.untimed.push(Slot {
                id,
                name,
                period: 0,
                due: 0,
                f: Some(f),
                removed: false,
            }),
            Some(period) => {
                self.active_timed += 1;
                let due = now.saturating_add(period);
                self.insert_timed(Slot {
                    id,
                    name,
                    period,
                    due,
                    f: Some(f),
                    removed: false,
                });
            }
        }
        id
    }

    /// Mark poller `id` removed and hand back its closure (to drop outside the borrow; `None`
    /// when it is running right now) and its name. `None` if there is no such poller.
    pub(crate) fn unregister(&mut self, id: u64) -> Option<(&'static str, Option<PollFn>)> {
        let (untimed, timed) = (self.untimed.len(), self.timed.len() + self.running.len());
        let (i, slot) = self
            .untimed
            .iter_mut()
            .chain(self.timed.iter_mut())
            .chain(self.running.iter_mut())
            .enumerate()
            .find(|(_, s)| s.id == id && !s.removed)?;
        debug_assert!(i < untimed + timed);
        slot.removed = true;
        self.active -= 1;
        if i >= untimed {
            self.active_timed -= 1;
        }
        self.has_removed = true;
        Some((slot.name, slot.f.take()))
    }

    /// Give timed poller `id` a new period; its next run is `period` after `now` (after the end
    /// of the current pass when it is running). `false` for an untimed or unknown poller.
    pub(crate) fn set_period(&mut self, id: u64, period: u64, now: u64) -> bool {
        if let Some(slot) = self.running.iter_mut().find(|s| s.id == id && !s.removed) {
            // `run_timed` re-arms it `period` after the pass's time.
            slot.period = period;
            return true;
        }
        let Some(pos) = self.timed.iter().position(|s| s.id == id && !s.removed) else {
            return false;
        };
        let mut slot = self.timed.remove(pos);
        slot.period = period;
        slot.due = now.saturating_add(period);
        self.insert_timed(slot);
        true
    }

    /// Remove every poller, returning the closures (to drop outside the borrow).
    pub(crate) fn take_all(&mut self) -> Vec<PollFn> {
        self.active = 0;
        self.active_timed = 0;
        self.untimed
            .drain(..)
            .chain(self.timed.drain(..))
            .chain(self.running.drain(..))
            .filter_map(|s| s.f)
            .collect()
    }

    fn insert_timed(&mut self, slot: Slot) {
        let pos = self.timed.partition_point(|s| s.due <= slot.due);
        self.timed.insert(pos, slot);
    }

    /// Put a closure back after its run; hands it back if the poller was removed meanwhile.
    fn put_back(slot: &mut Slot, f: PollFn) -> Option<PollFn> {
        if slot.removed {
            Some(f)
        } else {
            slot.f = Some(f);
            None
        }
    }

    fn compact(&mut self) {
        if self.has_removed {
            self.untimed.retain(|s| !s.removed);
            self.timed.retain(|s| !s.removed);
            self.has_removed = false;
        }
    }
}

/// Run every untimed poller once. Returns whether any reported [`PollStatus::Busy`].
pub(crate) fn run_untimed(cell: &RefCell<Pollers>) -> bool {
    let mut busy = false;
    let mut i = 0;
    loop {
        let f = {
            let mut p = cell.borrow_mut();
            match p.untimed.get_mut(i) {
                None => break,
                Some(slot) => slot.f.take(),
            }
        };
        if let Some(mut f) = f {
            busy |= f() == PollStatus::Busy;
            // Slots are never removed during the pass, so index `i` still names this poller.
            let orphan = Pollers::put_back(&mut cell.borrow_mut().untimed[i], f);
            drop(orphan);
        }
        i += 1;
    }
    cell.borrow_mut().compact();
    busy
}

/// Run the timed pollers due at `now` and re-arm them `period` after `now`. Returns whether
/// any reported [`PollStatus::Busy`]; `false` without work when none is due.
pub(crate) fn run_timed(cell: &RefCell<Pollers>, now: u64) -> bool {
    {
        let mut guard = cell.borrow_mut();
        let p = &mut *guard;
        let n = p.timed.partition_point(|s| s.due <= now);
        if n == 0 {
            return false;
        }
        p.running.extend(p.timed.drain(..n));
    }
    let mut busy = false;
    let mut i = 0;
    loop {
        let f = {
            let mut p = cell.borrow_mut();
            match p.running.get_mut(i) {
                None => break,
                Some(slot) => slot.f.take(),
            }
        };
        if let Some(mut f) = f {
            busy |= f() == PollStatus::Busy;
            let orphan = Pollers::put_back(&mut cell.borrow_mut().running[i], f);
            drop(orphan);
        }
        i += 1;
    }
    let mut guard = cell.borrow_mut();
    let p = &mut *guard;
    let mut running = std::mem::take(&mut p.running);
    for mut slot in running.drain(..).filter(|s| !s.removed) {
        slot.due = now.saturating_add(slot.period);
        p.insert_timed(slot);
    }
    // Keep the (now empty) vector's capacity for the next pass.
    p.running = running;
    p.compact();
    busy
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    fn counter(c: &Rc<RefCell<Vec<&'static str>>>, tag: &'static str, s: PollStatus) -> PollFn {
        let c = c.clone();
        Box::new(move || {
            c.borrow_mut().push(tag);
            s
        })
    }

    #[test]
    fn untimed_run_every_pass_and_report_busy() {
        let log = Rc::new(RefCell::new(vec![]));
        let cell = RefCell::new(Pollers::default());
        cell.borrow_mut()
            .register("a", None, 0, counter(&log, "a", PollStatus::Idle));
        assert!(!run_untimed(&cell));
        cell.borrow_mut()
            .register("b", None, 0, counter(&log, "b", PollStatus::Busy));
        assert!(run_untimed(&cell));
        assert_eq!(*log.borrow(), ["a", "a", "b"]);
        assert_eq!(cell.borrow().active(), 2);
    }

    #[test]
    fn timed_pollers_are_counted_apart() {
        let log = Rc::new(RefCell::new(vec![]));
        let cell = RefCell::new(Pollers::default());
        let u = cell
            .borrow_mut()
            .register("u", None, 0, counter(&log, "u", PollStatus::Idle));
        let t1 =
            cell.borrow_mut()
                .register("t1", Some(10), 0, counter(&log, "t1", PollStatus::Idle));
        cell.borrow_mut()
            .register("t2", Some(20), 0, counter(&log, "t2", PollStatus::Idle));
        assert_eq!(
            (cell.borrow().active(), cell.borrow().active_timed()),
            (3, 2)
        );
        run_timed(&cell, 15);
        assert!(cell.borrow_mut().unregister(t1).is_some());
        assert_eq!(
            (cell.borrow().active(), cell.borrow().active_timed()),
            (2, 1)
        );
        assert!(cell.borrow_mut().unregister(t1).is_none(), "only once");
        assert!(cell.borrow_mut().unregister(u).is_some());
        assert_eq!(
            (cell.borrow().active(), cell.borrow().active_timed()),
            (1, 1)
        );
        drop(cell.borrow_mut().take_all());
        assert_eq!(
            (cell.borrow().active(), cell.borrow().active_timed()),
            (0, 0)
        );
    }

    #[test]
    fn ids_are_unique_across_reactors() {
        let mut a = Pollers::default();
        let mut b = Pollers::default();
        let id_a = a.register("a", None, 0, Box::new(|| PollStatus::Idle));
        let id_b = b.register("b", None, 0, Box::new(|| PollStatus::Idle));
        assert_ne!(id_a, id_b);
        assert!(
            b.unregister(id_a).is_none(),
            "another reactor's id matches nothing"
        );
        assert_eq!(b.active(), 1);
        assert!(a.unregister(id_a).is_some());
    }

    #[test]
    fn timed_run_in_deadline_order_when_due() {
        let log = Rc::new(RefCell::new(vec![]));
        let cell = RefCell::new(Pollers::default());
        cell.borrow_mut().register(
            "slow",
            Some(100),
            0,
            counter(&log, "slow", PollStatus::Busy),
        );
        cell.borrow_mut()
            .register("fast", Some(10), 0, counter(&log, "fast", PollStatus::Idle));
        assert_eq!(cell.borrow().next_due(), Some(10));
        assert!(!run_timed(&cell, 9));
        assert!(!run_timed(&cell, 10), "fast is due but idle");
        assert_eq!(cell.borrow().next_due(), Some(20));
        assert!(run_timed(&cell, 150));
        assert_eq!(*log.borrow(), ["fast", "fast", "slow"]);
        assert_eq!(cell.borrow().next_due(), Some(160));
    }

    #[test]
    fn set_period_moves_the_deadline() {
        let log = Rc::new(RefCell::new(vec![]));
        let cell = Rc::new(RefCell::new(Pollers::default()));
        let t = cell
            .borrow_mut()
            .register("t", Some(10), 0, counter(&log, "t", PollStatus::Idle));
        let u = cell
            .borrow_mut()
            .register("u", None, 0, counter(&log, "u", PollStatus::Idle));
        assert!(!cell.borrow_mut().set_period(u, 5, 0), "untimed");
        assert!(!cell.borrow_mut().set_period(999_999_999, 5, 0), "unknown");
        // From outside a run: due `period` after `now`.
        assert!(cell.borrow_mut().set_period(t, 100, 3));
        assert_eq!(cell.borrow().next_due(), Some(103));
        assert!(!run_timed(&cell, 102), "not due yet");
        assert!(!run_timed(&cell, 103));
        assert_eq!(*log.borrow(), ["t"]);
        assert_eq!(
            cell.borrow().next_due(),
            Some(203),
            "every period after that"
        );
        assert!(cell.borrow_mut().unregister(t).is_some());
        // From inside its own run: re-armed `period` after the pass's time.
        let me = Rc::new(std::cell::Cell::new(0));
        let (cell2, me2) = (cell.clone(), me.clone());
        let id = cell.borrow_mut().register(
            "self",
            Some(10),
            0,
            Box::new(move || {
                assert!(cell2.borrow_mut().set_period(me2.get(), 500, 12));
                PollStatus::Idle
            }),
        );
        me.set(id);
        assert!(!run_timed(&cell, 10));
        assert_eq!(cell.borrow().next_due(), Some(510));
    }

    #[test]
    fn pollers_unregister_themselves_and_others_while_running() {
        let cell = Rc::new(RefCell::new(Pollers::default()));
        let runs = Rc::new(RefCell::new(vec![]));
        let ids = Rc::new(RefCell::new(vec![]));
        for (tag, period) in [("u1", None), ("u2", None), ("t1", Some(1)), ("t2", Some(1))] {
            let (cell2, runs2, ids2) = (cell.clone(), runs.clone(), ids.clone());
            let id = cell.borrow_mut().register(
                tag,
                period,
                0,
                Box::new(move || {
                    runs2.borrow_mut().push(tag);
                    // u1 removes itself and u2; t1 removes itself and t2 and adds a poller.
                    let targets: Vec<u64> = match tag {
                        "u1" => ids2.borrow()[0..2].to_vec(),
                        "t1" => ids2.borrow()[2..4].to_vec(),
                        _ => vec![],
                    };
                    for id in targets {
                        let removed = cell2.borrow_mut().unregister(id);
                        drop(removed);
                    }
                    if tag == "t1" {
                        cell2
                            .borrow_mut()
                            .register("new", None, 0, Box::new(|| PollStatus::Idle));
                    }
                    PollStatus::Idle
                }),
            );
            ids.borrow_mut().push(id);
        }
        run_untimed(&cell);
        run_untimed(&cell);
        run_timed(&cell, 5);
        run_timed(&cell, 50);
        assert_eq!(*runs.borrow(), ["u1", "t1"]);
        assert_eq!(cell.borrow().active(), 1);
        assert_eq!(cell.borrow().next_due(), None);
        // Unregistering twice is harmless.
        assert!(cell.borrow_mut().unregister(ids.borrow()[0]).is_none());
        assert_eq!(cell.borrow_mut().take_all().len(), 1);
        assert_eq!(cell.borrow().active(), 0);
    }
}
