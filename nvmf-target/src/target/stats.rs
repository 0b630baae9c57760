//! Per-core poll group counters for `nvmf_get_stats` (SPDK's `spdk_nvmf_poll_group_stat`).
//!
//! Each core counts in plain thread-local cells, touched only by that core: no lock, no atomic
//! read-modify-write, no allocation on the I/O path (one `Cell` increment per completion). The
//! RPC reads them by sending a message to each core ([`snapshot`] runs there).
//!
//! What is counted, as SPDK does:
//! - `admin_qpairs` / `io_qpairs`: queue pairs that completed a Fabrics Connect on this core;
//! - `current_admin_qpairs` / `current_io_qpairs`: those of them still connected;
//! - `current_unassociated_qpairs`: connections not (yet) past Connect;
//! - `pending_bdev_io`: commands that had to wait for a free bdev descriptor (SPDK: queued on
//!   `-ENOMEM` from the bdev layer), a running total;
//! - `completed_nvme_io`: commands completed on I/O queues.

use std::cell::Cell;

/// One core's counters.
struct PgStats {
    admin_qpairs: Cell<u64>,
    io_qpairs: Cell<u64>,
    current_admin_qpairs: Cell<u64>,
    current_io_qpairs: Cell<u64>,
    current_unassociated_qpairs: Cell<u64>,
    pending_bdev_io: Cell<u64>,
    completed_nvme_io: Cell<u64>,
}

thread_local! {
    static PG: PgStats = const {
        PgStats {
            admin_qpairs: Cell::new(0),
            io_qpairs: Cell::new(0),
            current_admin_qpairs: Cell::new(0),
            current_io_qpairs: Cell::new(0),
            current_unassociated_qpairs: Cell::new(0),
            pending_bdev_io: Cell::new(0),
            completed_nvme_io: Cell::new(0),
        }
    };
}

/// A copy of one core's counters (Send: gathered by message).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct PgSnapshot {
    pub admin_qpairs: u64,
    pub io_qpairs: u64,
    pub current_admin_qpairs: u64,
    pub current_io_qpairs: u64,
    pub current_unassociated_qpairs: u64,
    pub pending_bdev_io: u64,
    pub completed_nvme_io: u64,
}

/// What a queue pair is counted as on its core (see [`Counted::enter`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Counted {
    /// Not counted (closed, or not yet created).
    Nothing,
    /// A connection before Connect.
    Unassociated,
    /// A connected admin queue.
    Admin,
    /// A connected I/O queue.
    Io,
}

fn inc(c: &Cell<u64>) {
    c.set(c.get().wrapping_add(1));
}

fn dec(c: &Cell<u64>) {
    debug_assert!(c.get() > 0, "a current count below zero");
    c.set(c.get().saturating_sub(1));
}

impl Counted {
    /// Move a queue pair from `self` to `to` in this core's counters (on the queue pair's
    /// core; control path: connection set-up and tear-down).
    pub(crate) fn enter(self, to: Counted) -> Counted {
        if self == to {
            return to;
        }
        let _ = PG.try_with(|s| {
            match self {
                Counted::Nothing => {}
                Counted::Unassociated => dec(&s.current_unassociated_qpairs),
                Counted::Admin => dec(&s.current_admin_qpairs),
                Counted::Io => dec(&s.current_io_qpairs),
            }
            match to {
                Counted::Nothing => {}
                Counted::Unassociated => inc(&s.current_unassociated_qpairs),
                Counted::Admin => {
                    inc(&s.admin_qpairs);
                    inc(&s.current_admin_qpairs);
                }
                Counted::Io => {
                    inc(&s.io_qpairs);
                    inc(&s.current_io_qpairs);
                }
            }
        });
        to
    }
}

/// HOT PATH: a command completed on an I/O queue of this core.
#[inline]
pub(crate) fn nvme_io_completed() {
    PG.with(|s| inc(&s.completed_nvme_io));
}

/// A command waits for a free bdev descriptor on this core.
#[inline]
pub(crate) fn bdev_io_pending() {
    PG.with(|s| inc(&s.pending_bdev_io));
}

/// This core's counters (run it on the core, e.g. through `keel_reactor::call_on`).
pub(crate) fn snapshot() -> PgSnapshot {
    PG.with(|s| PgSnapshot {
        admin_qpairs: s.admin_qpairs.get(),
        io_qpairs: s.io_qpairs.get(),
        current_admin_qpairs: s.current_admin_qpairs.get(),
        current_io_qpairs: s.current_io_qpairs.get(),
        current_unassociated_qpairs: s.current_unassociated_qpairs.get(),
        pending_bdev_io: s.pending_bdev_io.get(),
        completed_nvme_io: s.completed_nvme_io.get(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_queue_pairs_life_moves_the_counters() {
        // A fresh thread: its own counters.
        std::thread::spawn(|| {
            let c = Counted::Nothing.enter(Counted::Unassociated);
            assert_eq!(snapshot().current_unassociated_qpairs, 1);
            let c = c.enter(Counted::Io);
            nvme_io_completed();
            nvme_io_completed();
            bdev_io_pending();
            let s = snapshot();
            assert_eq!(
                s,
                PgSnapshot {
                    io_qpairs: 1,
                    current_io_qpairs: 1,
                    completed_nvme_io: 2,
                    pending_bdev_io: 1,
                    ..Default::default()
                }
            );
            let c = c.enter(Counted::Nothing);
            assert_eq!(c.enter(Counted::Nothing), Counted::Nothing, "idempotent");
            let a = Counted::Nothing
                .enter(Counted::Unassociated)
                .enter(Counted::Admin);
            let s = snapshot();
            assert_eq!((s.io_qpairs, s.current_io_qpairs), (1, 0), "totals stay");
            assert_eq!((s.admin_qpairs, s.current_admin_qpairs), (1, 1));
            a.enter(Counted::Nothing);
            assert_eq!(snapshot().current_admin_qpairs, 0);
        })
        .join()
        .unwrap();
    }
}
